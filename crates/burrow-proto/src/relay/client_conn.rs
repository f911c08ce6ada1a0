//! The client side of one relay connection, without I/O.
//!
//! [`ClientConnection`] follows the crate's calling convention: the driver feeds
//! [`Input::Start`] when the WebSocket is open, then every binary message from the relay and
//! every timeout, sends the control frames [`ClientConnection::poll_output`] hands out as
//! WebSocket binary messages, and acts on its events. Datagrams to send are encoded with
//! [`encode_send`] straight into the WebSocket, without passing through this state machine: it
//! has no say in them once connected. Received ones come out as [`Event::Recv`], a slice of the
//! message they came in (no copy).
//!
//! The machine does the handshake (ServerHello → ClientAuth, signed for the relay URL it was
//! made for → AuthOk), keeps the connection alive with pings at a fraction of the relay's idle
//! timeout, measures the round-trip time from them, and declares the connection dead when
//! nothing at all arrives for too long. It
//! needs no randomness (the ping data is a counter, the signature deterministic), so it takes
//! no seed.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::auth::client_auth;
use super::{Frame, FrameError, PeerGoneReason, RelayUrl, MAX_PAYLOAD, PROTOCOL_VERSION};
use crate::identity::{NodeId, SecretKey};

/// Pings outstanding at once; older ones are forgotten (their pongs then give no RTT).
const MAX_OUTSTANDING_PINGS: usize = 8;

/// Timing parameters.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// From the start of the connection to AuthOk.
    pub handshake_timeout: Duration,
    /// Pings go out every `idle_timeout / keepalive_divisor` of the relay's announced idle
    /// timeout, clamped to `[min_ping_interval, max_ping_interval]`.
    pub keepalive_divisor: u32,
    /// Lower clamp of the ping interval (a relay announcing a tiny idle timeout cannot make the
    /// client busy-loop).
    pub min_ping_interval: Duration,
    /// Upper clamp of the ping interval; also the interval when the relay announces no timeout.
    pub max_ping_interval: Duration,
    /// The connection is dead when nothing arrives for a ping interval plus this long.
    pub pong_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            handshake_timeout: Duration::from_secs(10),
            keepalive_divisor: 3,
            min_ping_interval: Duration::from_millis(200),
            max_ping_interval: Duration::from_secs(15),
            pong_timeout: Duration::from_secs(5),
        }
    }
}

/// What happens to the connection (see the crate's calling convention).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The WebSocket is open: the handshake deadline starts. (The first input of any kind
    /// starts it too.)
    Start,
    /// One WebSocket binary message from the relay.
    Message(Bytes),
    /// Time passes: pings that are due go out, and silence ends the connection.
    Timeout,
}

/// What the connection reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The relay accepted our key; datagrams may be sent.
    Connected {
        /// The relay's idle timeout (zero if it announced none).
        idle_timeout: Duration,
    },
    /// A datagram from `src`.
    Recv {
        /// The sender, as authenticated by the relay.
        src: NodeId,
        /// The datagram: a slice of the message it came in.
        payload: Bytes,
    },
    /// The relay says `node` is not reachable through it.
    PeerGone {
        /// The peer.
        node: NodeId,
        /// Why.
        reason: PeerGoneReason,
    },
    /// The relay is about to restart: reconnect after `reconnect_in`, keep trying for `try_for`.
    Restarting {
        /// Wait about this long.
        reconnect_in: Duration,
        /// Then keep trying for about this long before giving up on this relay for a while.
        try_for: Duration,
    },
    /// A new round-trip time measurement.
    Rtt {
        /// This ping's RTT.
        latest: Duration,
        /// The smoothed RTT (exponentially weighted, 1/8 per sample as in TCP).
        smoothed: Duration,
    },
    /// The connection must be dropped, for this reason; nothing follows (later inputs are
    /// ignored, and the timeout is `None`).
    Failed(ConnError),
}

/// What [`ClientConnection::poll_output`] hands out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// A control frame (ClientAuth, Ping, Pong) to send, as one WebSocket binary message.
    Transmit(Vec<u8>),
    /// Something happened.
    Event(Event),
    /// Nothing more to do until then (`None`: until the next input).
    Timeout(Option<Instant>),
}

/// Why the connection must be dropped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnError {
    /// The relay sent bytes that are not a frame.
    #[error("malformed frame from the relay")]
    Frame(#[from] FrameError),
    /// The relay speaks another protocol version.
    #[error("the relay speaks protocol version {0}, this client speaks {PROTOCOL_VERSION}")]
    Version(u8),
    /// A valid frame at the wrong point of the protocol or in the wrong direction.
    #[error("the relay sent {frame} {when}")]
    Unexpected {
        /// The frame's name.
        frame: &'static str,
        /// Where in the protocol.
        when: &'static str,
    },
    /// No AuthOk in time.
    #[error("the relay did not complete the handshake within {0:?}")]
    HandshakeTimeout(Duration),
    /// Nothing arrived for too long.
    #[error("nothing received from the relay for {0:?}")]
    Dead(Duration),
}

/// Why a datagram cannot be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("datagram of {0} bytes exceeds the relay's {MAX_PAYLOAD}-byte limit")]
pub struct PayloadTooLarge(pub usize);

/// The Send frame for a datagram, as one WebSocket message.
pub fn encode_send(dst: &NodeId, payload: &[u8]) -> Result<Vec<u8>, PayloadTooLarge> {
    if payload.len() > MAX_PAYLOAD {
        return Err(PayloadTooLarge(payload.len()));
    }
    Ok(Frame::Send { dst: *dst, payload }.to_vec())
}

fn frame_name(f: &Frame<'_>) -> &'static str {
    match f {
        Frame::ServerHello { .. } => "ServerHello",
        Frame::ClientAuth { .. } => "ClientAuth",
        Frame::AuthOk { .. } => "AuthOk",
        Frame::Send { .. } => "Send",
        Frame::Recv { .. } => "Recv",
        Frame::Ping { .. } => "Ping",
        Frame::Pong { .. } => "Pong",
        Frame::PeerGone { .. } => "PeerGone",
        Frame::Restarting { .. } => "Restarting",
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// No input yet.
    New,
    /// The handshake, which must be over by `deadline`: waiting for ServerHello...
    AwaitHello { deadline: Instant },
    /// ...then for AuthOk.
    AwaitAuthOk { deadline: Instant },
    /// Authenticated. Anything at all last arrived at `last_rx`.
    Connected {
        last_rx: Instant,
        next_ping: Instant,
    },
    /// Failed: nothing more happens.
    Over,
}

impl State {
    fn when(self) -> &'static str {
        match self {
            State::New | State::AwaitHello { .. } => "before its ServerHello",
            State::AwaitAuthOk { .. } => "before AuthOk",
            State::Connected { .. } | State::Over => "after the handshake",
        }
    }
}

/// One relay connection, from the WebSocket upgrade until it is dropped.
#[derive(Debug)]
pub struct ClientConnection {
    key: SecretKey,
    /// The relay's URL as dialled, in its display form: what the ClientAuth signs.
    relay_url: String,
    config: ClientConfig,
    state: State,
    /// Control frames to send (ClientAuth, Ping, Pong).
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    ping_interval: Duration,
    ping_counter: u64,
    outstanding: VecDeque<([u8; 8], Instant)>,
    srtt: Option<Duration>,
}

impl ClientConnection {
    /// A connection to the relay at `relay` whose handshake starts with the first input.
    pub fn new(key: SecretKey, relay: &RelayUrl, config: ClientConfig) -> Self {
        ClientConnection {
            key,
            relay_url: relay.to_string(),
            ping_interval: config.max_ping_interval,
            config,
            state: State::New,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            ping_counter: 0,
            outstanding: VecDeque::new(),
            srtt: None,
        }
    }

    /// Whether the handshake has completed (and the connection has not failed since).
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected { .. })
    }

    /// The smoothed round-trip time, once measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// How often pings go out (known after AuthOk).
    pub fn ping_interval(&self) -> Duration {
        self.ping_interval
    }

    /// Feeds one input (see the crate's calling convention). Nothing the relay sends can make
    /// this panic; what breaks the protocol ends the connection with [`Event::Failed`].
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        match self.state {
            State::Over => return,
            State::New => {
                self.state = State::AwaitHello {
                    deadline: now + self.config.handshake_timeout,
                }
            }
            _ => {}
        }
        let result = match input {
            Input::Start => Ok(()),
            Input::Message(msg) => self.handle_message(now, msg),
            Input::Timeout => self.handle_timeout(now),
        };
        if let Err(e) = result {
            self.state = State::Over;
            self.events.push_back(Event::Failed(e));
        }
    }

    /// The next thing to do: transmits first, then events, then the next timeout.
    pub fn poll_output(&mut self) -> Output {
        if let Some(t) = self.transmits.pop_front() {
            return Output::Transmit(t);
        }
        if let Some(e) = self.events.pop_front() {
            return Output::Event(e);
        }
        Output::Timeout(match self.state {
            State::New | State::Over => None,
            State::AwaitHello { deadline } | State::AwaitAuthOk { deadline } => Some(deadline),
            State::Connected { last_rx, next_ping } => Some(next_ping.min(self.dead_at(last_rx))),
        })
    }

    /// When silence since `last_rx` means the connection is dead.
    fn dead_at(&self, last_rx: Instant) -> Instant {
        last_rx + self.ping_interval + self.config.pong_timeout
    }

    /// Sends pings that are due; fails when the handshake or the connection timed out.
    fn handle_timeout(&mut self, now: Instant) -> Result<(), ConnError> {
        match self.state {
            State::AwaitHello { deadline } | State::AwaitAuthOk { deadline } if now >= deadline => {
                Err(ConnError::HandshakeTimeout(self.config.handshake_timeout))
            }
            State::Connected { last_rx, .. } if now >= self.dead_at(last_rx) => {
                Err(ConnError::Dead(now.saturating_duration_since(last_rx)))
            }
            State::Connected { next_ping, .. } if now >= next_ping => {
                self.send_ping(now);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn send_ping(&mut self, now: Instant) {
        self.ping_counter = self.ping_counter.wrapping_add(1);
        let data = self.ping_counter.to_be_bytes();
        if self.outstanding.len() == MAX_OUTSTANDING_PINGS {
            self.outstanding.pop_front();
        }
        self.outstanding.push_back((data, now));
        self.transmits.push_back(Frame::Ping { data }.to_vec());
        if let State::Connected { next_ping, .. } = &mut self.state {
            *next_ping = now + self.ping_interval;
        }
    }

    /// One WebSocket binary message from the relay; an error means the connection must be
    /// closed (the error says why).
    fn handle_message(&mut self, now: Instant, msg: Bytes) -> Result<(), ConnError> {
        let frame = Frame::decode(&msg)?;
        if let State::Connected { last_rx, .. } = &mut self.state {
            *last_rx = now;
        }
        let event = match (self.state, frame) {
            (State::AwaitHello { deadline }, Frame::ServerHello { version, challenge }) => {
                if version != PROTOCOL_VERSION {
                    return Err(ConnError::Version(version));
                }
                self.transmits
                    .push_back(client_auth(&self.key, &challenge, &self.relay_url).to_vec());
                self.state = State::AwaitAuthOk { deadline };
                None
            }
            (State::AwaitAuthOk { .. }, Frame::AuthOk { idle_timeout_ms }) => {
                let idle_timeout = Duration::from_millis(u64::from(idle_timeout_ms));
                self.ping_interval = if idle_timeout.is_zero() {
                    self.config.max_ping_interval
                } else {
                    (idle_timeout / self.config.keepalive_divisor.max(1))
                        .clamp(self.config.min_ping_interval, self.config.max_ping_interval)
                };
                self.state = State::Connected {
                    last_rx: now,
                    next_ping: now,
                };
                // Ping at once: the first RTT decides the home relay.
                self.send_ping(now);
                Some(Event::Connected { idle_timeout })
            }
            (State::Connected { .. }, Frame::Recv { src, payload }) => Some(Event::Recv {
                src,
                payload: msg.slice_ref(payload),
            }),
            (State::Connected { .. }, Frame::Ping { data }) => {
                self.transmits.push_back(Frame::Pong { data }.to_vec());
                None
            }
            (State::Connected { .. }, Frame::Pong { data }) => self.on_pong(data, now),
            (State::Connected { .. }, Frame::PeerGone { node, reason }) => {
                Some(Event::PeerGone { node, reason })
            }
            // A restart notice is welcome at any point, even mid-handshake.
            (
                _,
                Frame::Restarting {
                    reconnect_in_ms,
                    try_for_ms,
                },
            ) => Some(Event::Restarting {
                reconnect_in: Duration::from_millis(u64::from(reconnect_in_ms)),
                try_for: Duration::from_millis(u64::from(try_for_ms)),
            }),
            (state, f) => {
                return Err(ConnError::Unexpected {
                    frame: frame_name(&f),
                    when: state.when(),
                })
            }
        };
        self.events.extend(event);
        Ok(())
    }

    fn on_pong(&mut self, data: [u8; 8], now: Instant) -> Option<Event> {
        // Unknown data (a stale or invented pong) proves only liveness.
        let i = self.outstanding.iter().position(|(d, _)| *d == data)?;
        let sent = self.outstanding[i].1;
        // Pongs come in order: anything older than this one is lost.
        self.outstanding.drain(..=i);
        let latest = now.saturating_duration_since(sent);
        let smoothed = match self.srtt {
            None => latest,
            Some(s) => (s * 7 + latest) / 8,
        };
        self.srtt = Some(smoothed);
        Some(Event::Rtt { latest, smoothed })
    }
}

#[cfg(test)]
mod tests {
    use super::super::auth::verify;
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn node(n: u8) -> NodeId {
        SecretKey::from_bytes([n; 32]).node_id()
    }

    const CHALLENGE: [u8; 32] = [9; 32];

    fn relay() -> RelayUrl {
        "https://relay.example.org".parse().unwrap()
    }

    /// What the core hands out after an input, up to its timeout.
    #[derive(Debug, Default, PartialEq)]
    struct Out {
        sent: Vec<Vec<u8>>,
        events: Vec<Event>,
        timeout: Option<Instant>,
    }

    fn drain(c: &mut ClientConnection) -> Out {
        let mut out = Out::default();
        loop {
            match c.poll_output() {
                Output::Transmit(t) => out.sent.push(t),
                Output::Event(e) => out.events.push(e),
                Output::Timeout(t) => {
                    out.timeout = t;
                    return out;
                }
            }
        }
    }

    /// Feeds one message from the relay at `now`.
    fn message(c: &mut ClientConnection, now: Instant, msg: Vec<u8>) -> Out {
        c.handle_input(now, Input::Message(Bytes::from(msg)));
        drain(c)
    }

    /// The one event a message gives (None for none).
    fn event(c: &mut ClientConnection, now: Instant, msg: Vec<u8>) -> Option<Event> {
        let mut out = message(c, now, msg);
        assert!(out.events.len() <= 1, "{:?}", out.events);
        out.events.pop()
    }

    fn timeout(c: &mut ClientConnection, now: Instant) -> Out {
        c.handle_input(now, Input::Timeout);
        drain(c)
    }

    fn hello(version: u8) -> Vec<u8> {
        Frame::ServerHello {
            version,
            challenge: CHALLENGE,
        }
        .to_vec()
    }

    fn auth_ok(idle_timeout_ms: u32) -> Vec<u8> {
        Frame::AuthOk { idle_timeout_ms }.to_vec()
    }

    /// A connection started at `t0`.
    fn started(t0: Instant, config: ClientConfig) -> ClientConnection {
        let mut c = ClientConnection::new(SecretKey::from_bytes([1; 32]), &relay(), config);
        c.handle_input(t0, Input::Start);
        c
    }

    /// A connection through the handshake, with the relay's idle timeout of 30 s, and the
    /// first ping it sent.
    fn connected(t0: Instant) -> (ClientConnection, Vec<u8>) {
        let mut c = started(t0, Default::default());
        assert_eq!(message(&mut c, t0, hello(PROTOCOL_VERSION)).sent.len(), 1);
        let mut out = message(&mut c, t0, auth_ok(30_000));
        assert_eq!(
            out.events,
            [Event::Connected {
                idle_timeout: ms(30_000)
            }]
        );
        assert_eq!(out.sent.len(), 1);
        (c, out.sent.remove(0))
    }

    fn pong_for(ping: &[u8]) -> Vec<u8> {
        match Frame::decode(ping) {
            Ok(Frame::Ping { data }) => Frame::Pong { data }.to_vec(),
            other => panic!("not a ping: {other:?}"),
        }
    }

    fn failed(out: Out) -> ConnError {
        match &out.events[..] {
            [Event::Failed(e)] if out.sent.is_empty() && out.timeout.is_none() => e.clone(),
            _ => panic!("{out:?}"),
        }
    }

    #[test]
    fn handshake_signs_the_challenge() {
        let t0 = Instant::now();
        let key = SecretKey::from_bytes([1; 32]);
        let mut c = ClientConnection::new(key.clone(), &relay(), Default::default());
        // Nothing happens before the first input.
        assert_eq!(drain(&mut c), Out::default());
        c.handle_input(t0, Input::Start);
        assert!(!c.is_connected());
        assert_eq!(
            drain(&mut c),
            Out {
                timeout: Some(t0 + Duration::from_secs(10)),
                ..Out::default()
            }
        );
        let out = message(&mut c, t0, hello(PROTOCOL_VERSION));
        assert!(out.events.is_empty());
        match Frame::decode(&out.sent[0]).unwrap() {
            Frame::ClientAuth {
                version,
                node_id,
                signature,
                relay_url,
            } => {
                assert_eq!(node_id, key.node_id());
                // Signed for the relay it dialled, in its one display form.
                assert_eq!(relay_url, "https://relay.example.org:443");
                assert_eq!(
                    verify(
                        &CHALLENGE,
                        version,
                        &node_id,
                        &signature,
                        relay_url,
                        &relay()
                    ),
                    Ok(())
                );
            }
            f => panic!("{f:?}"),
        }
        let out = message(&mut c, t0 + ms(1), auth_ok(30_000));
        assert!(matches!(out.events[..], [Event::Connected { .. }]));
        assert!(c.is_connected());
        assert_eq!(c.ping_interval(), ms(10_000));
        // The first ping goes out at once, for the RTT.
        assert!(matches!(
            Frame::decode(&out.sent[0]),
            Ok(Frame::Ping { .. })
        ));
    }

    #[test]
    fn the_first_input_starts_the_handshake_clock() {
        let t0 = Instant::now();
        let mut c =
            ClientConnection::new(SecretKey::from_bytes([1; 32]), &relay(), Default::default());
        assert_eq!(
            message(&mut c, t0, hello(PROTOCOL_VERSION)).timeout,
            Some(t0 + ms(10_000))
        );
        // A later start changes nothing.
        c.handle_input(t0 + ms(5), Input::Start);
        assert_eq!(drain(&mut c).timeout, Some(t0 + ms(10_000)));
    }

    #[test]
    fn handshake_errors_are_clear() {
        let t0 = Instant::now();
        let fresh = || started(t0, Default::default());
        // Wrong version.
        assert_eq!(
            failed(message(&mut fresh(), t0, hello(1))),
            ConnError::Version(1)
        );
        // AuthOk before ServerHello.
        let err = failed(message(&mut fresh(), t0, auth_ok(1)));
        assert_eq!(
            err,
            ConnError::Unexpected {
                frame: "AuthOk",
                when: "before its ServerHello"
            }
        );
        assert_eq!(
            err.to_string(),
            "the relay sent AuthOk before its ServerHello"
        );
        // A datagram before AuthOk.
        let mut c = fresh();
        message(&mut c, t0, hello(PROTOCOL_VERSION));
        let recv = Frame::Recv {
            src: node(2),
            payload: b"x",
        }
        .to_vec();
        assert_eq!(
            failed(message(&mut c, t0, recv)),
            ConnError::Unexpected {
                frame: "Recv",
                when: "before AuthOk"
            }
        );
        // A second ServerHello.
        let mut c = fresh();
        message(&mut c, t0, hello(PROTOCOL_VERSION));
        failed(message(&mut c, t0, hello(PROTOCOL_VERSION)));
        // Garbage.
        assert_eq!(
            failed(message(&mut fresh(), t0, vec![])),
            ConnError::Frame(FrameError::Empty)
        );
        assert_eq!(
            failed(message(&mut fresh(), t0, vec![0xee, 1, 2])),
            ConnError::Frame(FrameError::UnknownType(0xee))
        );
        // Silence.
        let mut c = fresh();
        assert!(timeout(&mut c, t0 + ms(9_999)).events.is_empty());
        assert_eq!(
            failed(timeout(&mut c, t0 + ms(10_000))),
            ConnError::HandshakeTimeout(ms(10_000))
        );
    }

    #[test]
    fn nothing_follows_a_failure() {
        let t0 = Instant::now();
        let mut c = started(t0, Default::default());
        failed(message(&mut c, t0, hello(1)));
        assert_eq!(message(&mut c, t0, hello(PROTOCOL_VERSION)), Out::default());
        assert_eq!(timeout(&mut c, t0 + ms(20_000)), Out::default());
        assert!(!c.is_connected());
    }

    #[test]
    fn frames_a_client_must_never_receive_are_errors() {
        let t0 = Instant::now();
        let auth = client_auth(&SecretKey::from_bytes([3; 32]), &CHALLENGE, "http://a:1").to_vec();
        let send = Frame::Send {
            dst: node(2),
            payload: b"",
        }
        .to_vec();
        for msg in [auth, send, auth_ok(5)] {
            let (mut c, _) = connected(t0);
            assert!(matches!(
                failed(message(&mut c, t0, msg)),
                ConnError::Unexpected {
                    when: "after the handshake",
                    ..
                }
            ));
            assert!(!c.is_connected());
        }
    }

    #[test]
    fn datagrams_and_notices_become_events() {
        let t0 = Instant::now();
        let (mut c, _) = connected(t0);
        let recv = Bytes::from(
            Frame::Recv {
                src: node(2),
                payload: b"hello",
            }
            .to_vec(),
        );
        c.handle_input(t0, Input::Message(recv.clone()));
        let Output::Event(Event::Recv { src, payload }) = c.poll_output() else {
            panic!("no datagram");
        };
        assert_eq!((src, &payload[..]), (node(2), &b"hello"[..]));
        // A slice of the message, not a copy.
        assert_eq!(payload.as_ptr(), recv[recv.len() - 5..].as_ptr());
        let gone = Frame::PeerGone {
            node: node(4),
            reason: PeerGoneReason::NotConnected,
        }
        .to_vec();
        assert_eq!(
            event(&mut c, t0, gone),
            Some(Event::PeerGone {
                node: node(4),
                reason: PeerGoneReason::NotConnected
            })
        );
        let restart = Frame::Restarting {
            reconnect_in_ms: 500,
            try_for_ms: 10_000,
        }
        .to_vec();
        assert_eq!(
            event(&mut c, t0, restart),
            Some(Event::Restarting {
                reconnect_in: ms(500),
                try_for: ms(10_000)
            })
        );
        // The relay may ping too; the client answers with the same data.
        let out = message(&mut c, t0, Frame::Ping { data: [5; 8] }.to_vec());
        assert_eq!(out.sent, [Frame::Pong { data: [5; 8] }.to_vec()]);
        assert!(out.events.is_empty());
    }

    #[test]
    fn send_frames_are_size_checked() {
        let payload = vec![1u8; MAX_PAYLOAD];
        let msg = encode_send(&node(2), &payload).unwrap();
        assert_eq!(
            Frame::decode(&msg),
            Ok(Frame::Send {
                dst: node(2),
                payload: &payload
            })
        );
        assert_eq!(
            encode_send(&node(2), &vec![0; MAX_PAYLOAD + 1]),
            Err(PayloadTooLarge(MAX_PAYLOAD + 1))
        );
    }

    #[test]
    fn pings_measure_rtt_and_keep_the_connection_alive() {
        let t0 = Instant::now();
        let (mut c, first) = connected(t0);
        assert_eq!(c.rtt(), None);
        assert_eq!(
            event(&mut c, t0 + ms(40), pong_for(&first)),
            Some(Event::Rtt {
                latest: ms(40),
                smoothed: ms(40)
            })
        );
        // The same pong again, or an invented one, gives no RTT.
        assert_eq!(event(&mut c, t0 + ms(50), pong_for(&first)), None);
        let bogus = Frame::Pong { data: [0xff; 8] }.to_vec();
        let out = message(&mut c, t0 + ms(50), bogus);
        assert!(out.events.is_empty());
        // Next ping at a third of the idle timeout.
        assert_eq!(out.timeout, Some(t0 + ms(10_000)));
        assert!(timeout(&mut c, t0 + ms(9_999)).sent.is_empty());
        let second = timeout(&mut c, t0 + ms(10_000)).sent.remove(0);
        assert_eq!(
            event(&mut c, t0 + ms(10_120), pong_for(&second)),
            Some(Event::Rtt {
                latest: ms(120),
                smoothed: ms(50)
            })
        );
        assert_eq!(c.rtt(), Some(ms(50)));
        // Pings keep going for as long as answers come.
        for i in 2..10u64 {
            let t = t0 + ms(10_000 * i);
            assert_eq!(drain(&mut c).timeout, Some(t));
            let p = timeout(&mut c, t).sent.remove(0);
            assert!(matches!(
                event(&mut c, t + ms(50), pong_for(&p)),
                Some(Event::Rtt { .. })
            ));
        }
    }

    #[test]
    fn silence_kills_the_connection() {
        let t0 = Instant::now();
        let (mut c, _) = connected(t0);
        // Pings go out but nothing comes back.
        let out = timeout(&mut c, t0 + ms(10_000));
        assert_eq!(out.sent.len(), 1);
        assert_eq!(out.timeout, Some(t0 + ms(15_000)));
        assert_eq!(
            failed(timeout(&mut c, t0 + ms(15_000))),
            ConnError::Dead(ms(15_000))
        );
        // Any frame at all (here a datagram) counts as life.
        let (mut c, _) = connected(t0);
        let recv = Frame::Recv {
            src: node(2),
            payload: b"",
        }
        .to_vec();
        message(&mut c, t0 + ms(14_000), recv);
        let out = timeout(&mut c, t0 + ms(15_000));
        assert!(out.events.is_empty());
        // The ping due at 10 s went out late, at 15 s; the next is due at 25 s.
        assert_eq!(out.timeout, Some(t0 + ms(25_000)));
    }

    #[test]
    fn unanswered_pings_are_bounded_and_late_pongs_still_count() {
        let t0 = Instant::now();
        let mut c = started(
            t0,
            ClientConfig {
                pong_timeout: Duration::from_secs(3600),
                ..Default::default()
            },
        );
        message(&mut c, t0, hello(PROTOCOL_VERSION));
        let mut pings = message(&mut c, t0, auth_ok(0)).sent;
        assert_eq!(c.ping_interval(), ms(15_000));
        for i in 1..100u64 {
            pings.extend(timeout(&mut c, t0 + ms(15_000 * i)).sent);
        }
        assert_eq!(pings.len(), 100);
        assert!(c.outstanding.len() <= MAX_OUTSTANDING_PINGS);
        let now = t0 + ms(15_000 * 99 + 10);
        assert!(matches!(
            event(&mut c, now, pong_for(&pings[99])),
            Some(Event::Rtt { .. })
        ));
        assert_eq!(event(&mut c, now, pong_for(&pings[0])), None);
    }

    #[test]
    fn idle_timeouts_are_clamped() {
        let t0 = Instant::now();
        for (idle_ms, want) in [(1, 200), (600, 200), (3_000, 1_000), (u32::MAX, 15_000)] {
            let mut c = started(t0, Default::default());
            message(&mut c, t0, hello(PROTOCOL_VERSION));
            message(&mut c, t0, auth_ok(idle_ms));
            assert_eq!(c.ping_interval(), ms(want), "{idle_ms}");
        }
    }

    #[test]
    fn restart_notice_is_accepted_mid_handshake() {
        let t0 = Instant::now();
        let mut c = started(t0, Default::default());
        let restart = Frame::Restarting {
            reconnect_in_ms: 100,
            try_for_ms: 200,
        }
        .to_vec();
        assert!(matches!(
            event(&mut c, t0, restart),
            Some(Event::Restarting { .. })
        ));
        assert!(!c.is_connected());
    }
}
