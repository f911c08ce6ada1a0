//! The client side of one relay connection, without I/O.
//!
//! The driver feeds every WebSocket binary message from the relay to
//! [`ClientConnection::handle_message`], sends whatever [`ClientConnection::poll_transmit`]
//! yields, and calls [`ClientConnection::handle_timeout`] when [`ClientConnection::poll_timeout`]
//! says. Datagrams to send are encoded with [`encode_send`] straight into the WebSocket,
//! without passing through this state machine: it has no say in them once connected.
//!
//! The machine does the handshake (ServerHello → ClientAuth → AuthOk), keeps the connection
//! alive with pings at a fraction of the relay's idle timeout, measures the round-trip time
//! from them, and declares the connection dead when nothing at all arrives for too long.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::auth::client_auth;
use super::{Frame, FrameError, PeerGoneReason, MAX_PAYLOAD, PROTOCOL_VERSION};
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

/// What the connection reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// The relay accepted our key; datagrams may be sent.
    Connected {
        /// The relay's idle timeout (zero if it announced none).
        idle_timeout: Duration,
    },
    /// A datagram from `src`, borrowed from the message it came in.
    Recv {
        /// The sender, as authenticated by the relay.
        src: NodeId,
        /// The datagram.
        payload: &'a [u8],
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
}

/// Why the connection must be dropped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnError {
    /// The relay sent bytes that are not a frame.
    #[error("malformed frame from the relay: {0}")]
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
    AwaitHello,
    AwaitAuthOk,
    Connected,
}

impl State {
    fn when(self) -> &'static str {
        match self {
            State::AwaitHello => "before its ServerHello",
            State::AwaitAuthOk => "before AuthOk",
            State::Connected => "after the handshake",
        }
    }
}

/// One relay connection, from the WebSocket upgrade until it is dropped.
#[derive(Debug)]
pub struct ClientConnection {
    key: SecretKey,
    config: ClientConfig,
    state: State,
    handshake_deadline: Instant,
    /// Control frames to send (ClientAuth, Ping, Pong).
    transmits: VecDeque<Vec<u8>>,
    last_rx: Instant,
    ping_interval: Duration,
    next_ping: Instant,
    ping_counter: u64,
    outstanding: VecDeque<([u8; 8], Instant)>,
    srtt: Option<Duration>,
}

impl ClientConnection {
    /// A connection whose WebSocket has just been opened at `now`.
    pub fn new(key: SecretKey, config: ClientConfig, now: Instant) -> Self {
        ClientConnection {
            key,
            handshake_deadline: now + config.handshake_timeout,
            ping_interval: config.max_ping_interval,
            config,
            state: State::AwaitHello,
            transmits: VecDeque::new(),
            last_rx: now,
            next_ping: now,
            ping_counter: 0,
            outstanding: VecDeque::new(),
            srtt: None,
        }
    }

    /// Whether the handshake has completed.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// The smoothed round-trip time, once measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// How often pings go out (known after AuthOk).
    pub fn ping_interval(&self) -> Duration {
        self.ping_interval
    }

    /// The next control frame to send, as one WebSocket binary message.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// When [`ClientConnection::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Instant {
        match self.state {
            State::AwaitHello | State::AwaitAuthOk => self.handshake_deadline,
            State::Connected => self.next_ping.min(self.dead_at()),
        }
    }

    fn silence_limit(&self) -> Duration {
        self.ping_interval + self.config.pong_timeout
    }

    fn dead_at(&self) -> Instant {
        self.last_rx + self.silence_limit()
    }

    /// Sends pings that are due; fails when the handshake or the connection timed out.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ConnError> {
        match self.state {
            State::AwaitHello | State::AwaitAuthOk => {
                if now >= self.handshake_deadline {
                    return Err(ConnError::HandshakeTimeout(self.config.handshake_timeout));
                }
            }
            State::Connected => {
                if now >= self.dead_at() {
                    return Err(ConnError::Dead(now.saturating_duration_since(self.last_rx)));
                }
                if now >= self.next_ping {
                    self.send_ping(now);
                }
            }
        }
        Ok(())
    }

    fn send_ping(&mut self, now: Instant) {
        self.ping_counter = self.ping_counter.wrapping_add(1);
        let data = self.ping_counter.to_be_bytes();
        if self.outstanding.len() == MAX_OUTSTANDING_PINGS {
            self.outstanding.pop_front();
        }
        self.outstanding.push_back((data, now));
        self.transmits.push_back(Frame::Ping { data }.to_vec());
        self.next_ping = now + self.ping_interval;
    }

    /// Handles one WebSocket binary message from the relay. An error means the connection
    /// must be closed (the error says why); nothing the relay sends can make this panic.
    pub fn handle_message<'a>(
        &mut self,
        msg: &'a [u8],
        now: Instant,
    ) -> Result<Option<Event<'a>>, ConnError> {
        let frame = Frame::decode(msg)?;
        self.last_rx = now;
        let unexpected = |state: State, f: &Frame<'_>| ConnError::Unexpected {
            frame: frame_name(f),
            when: state.when(),
        };
        match (self.state, frame) {
            (State::AwaitHello, Frame::ServerHello { version, challenge }) => {
                if version != PROTOCOL_VERSION {
                    return Err(ConnError::Version(version));
                }
                self.transmits
                    .push_back(client_auth(&self.key, &challenge).to_vec());
                self.state = State::AwaitAuthOk;
                Ok(None)
            }
            (State::AwaitAuthOk, Frame::AuthOk { idle_timeout_ms }) => {
                let idle_timeout = Duration::from_millis(u64::from(idle_timeout_ms));
                self.ping_interval = if idle_timeout.is_zero() {
                    self.config.max_ping_interval
                } else {
                    (idle_timeout / self.config.keepalive_divisor.max(1))
                        .clamp(self.config.min_ping_interval, self.config.max_ping_interval)
                };
                self.state = State::Connected;
                // Ping at once: the first RTT decides the home relay.
                self.send_ping(now);
                Ok(Some(Event::Connected { idle_timeout }))
            }
            (State::Connected, Frame::Recv { src, payload }) => {
                Ok(Some(Event::Recv { src, payload }))
            }
            (State::Connected, Frame::Ping { data }) => {
                self.transmits.push_back(Frame::Pong { data }.to_vec());
                Ok(None)
            }
            (State::Connected, Frame::Pong { data }) => Ok(self.on_pong(data, now)),
            (State::Connected, Frame::PeerGone { node, reason }) => {
                Ok(Some(Event::PeerGone { node, reason }))
            }
            // A restart notice is welcome at any point, even mid-handshake.
            (
                _,
                Frame::Restarting {
                    reconnect_in_ms,
                    try_for_ms,
                },
            ) => Ok(Some(Event::Restarting {
                reconnect_in: Duration::from_millis(u64::from(reconnect_in_ms)),
                try_for: Duration::from_millis(u64::from(try_for_ms)),
            })),
            (state, f) => Err(unexpected(state, &f)),
        }
    }

    fn on_pong(&mut self, data: [u8; 8], now: Instant) -> Option<Event<'static>> {
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

    /// A connection through the handshake, with the relay's idle timeout of 30 s.
    fn connected(t0: Instant) -> ClientConnection {
        let mut c = ClientConnection::new(SecretKey::from_bytes([1; 32]), Default::default(), t0);
        let hello = Frame::ServerHello {
            version: PROTOCOL_VERSION,
            challenge: CHALLENGE,
        }
        .to_vec();
        assert_eq!(c.handle_message(&hello, t0), Ok(None));
        let _auth = c.poll_transmit().unwrap();
        let ok = Frame::AuthOk {
            idle_timeout_ms: 30_000,
        }
        .to_vec();
        assert_eq!(
            c.handle_message(&ok, t0),
            Ok(Some(Event::Connected {
                idle_timeout: ms(30_000)
            }))
        );
        c
    }

    fn pong_for(ping: &[u8]) -> Vec<u8> {
        match Frame::decode(ping) {
            Ok(Frame::Ping { data }) => Frame::Pong { data }.to_vec(),
            other => panic!("not a ping: {other:?}"),
        }
    }

    #[test]
    fn handshake_signs_the_challenge() {
        let t0 = Instant::now();
        let key = SecretKey::from_bytes([1; 32]);
        let mut c = ClientConnection::new(key.clone(), Default::default(), t0);
        assert!(!c.is_connected());
        assert_eq!(c.poll_transmit(), None);
        assert_eq!(c.poll_timeout(), t0 + Duration::from_secs(10));
        let hello = Frame::ServerHello {
            version: PROTOCOL_VERSION,
            challenge: CHALLENGE,
        }
        .to_vec();
        assert_eq!(c.handle_message(&hello, t0), Ok(None));
        let auth = c.poll_transmit().unwrap();
        match Frame::decode(&auth).unwrap() {
            Frame::ClientAuth {
                version,
                node_id,
                signature,
            } => {
                assert_eq!(node_id, key.node_id());
                assert_eq!(verify(&CHALLENGE, version, &node_id, &signature), Ok(()));
            }
            f => panic!("{f:?}"),
        }
        let ok = Frame::AuthOk {
            idle_timeout_ms: 30_000,
        }
        .to_vec();
        assert!(matches!(
            c.handle_message(&ok, t0 + ms(1)),
            Ok(Some(Event::Connected { .. }))
        ));
        assert!(c.is_connected());
        assert_eq!(c.ping_interval(), ms(10_000));
        // The first ping goes out at once, for the RTT.
        assert!(matches!(
            Frame::decode(&c.poll_transmit().unwrap()),
            Ok(Frame::Ping { .. })
        ));
    }

    #[test]
    fn handshake_errors_are_clear() {
        let t0 = Instant::now();
        let fresh =
            || ClientConnection::new(SecretKey::from_bytes([1; 32]), Default::default(), t0);
        let hello = |version| {
            Frame::ServerHello {
                version,
                challenge: CHALLENGE,
            }
            .to_vec()
        };
        // Wrong version.
        assert_eq!(
            fresh().handle_message(&hello(2), t0),
            Err(ConnError::Version(2))
        );
        // AuthOk before ServerHello.
        let ok = Frame::AuthOk { idle_timeout_ms: 1 }.to_vec();
        let err = fresh().handle_message(&ok, t0).unwrap_err();
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
        c.handle_message(&hello(1), t0).unwrap();
        let recv = Frame::Recv {
            src: node(2),
            payload: b"x",
        }
        .to_vec();
        assert!(matches!(
            c.handle_message(&recv, t0),
            Err(ConnError::Unexpected {
                frame: "Recv",
                when: "before AuthOk"
            })
        ));
        // A second ServerHello.
        let mut c = fresh();
        c.handle_message(&hello(1), t0).unwrap();
        assert!(c.handle_message(&hello(1), t0).is_err());
        // Garbage.
        assert_eq!(
            fresh().handle_message(&[], t0),
            Err(ConnError::Frame(FrameError::Empty))
        );
        assert_eq!(
            fresh().handle_message(&[0xee, 1, 2], t0),
            Err(ConnError::Frame(FrameError::UnknownType(0xee)))
        );
        // Silence.
        let mut c = fresh();
        assert_eq!(c.handle_timeout(t0 + ms(9_999)), Ok(()));
        assert_eq!(
            c.handle_timeout(t0 + ms(10_000)),
            Err(ConnError::HandshakeTimeout(ms(10_000)))
        );
    }

    #[test]
    fn frames_a_client_must_never_receive_are_errors() {
        let t0 = Instant::now();
        let mut c = connected(t0);
        let auth = client_auth(&SecretKey::from_bytes([3; 32]), &CHALLENGE).to_vec();
        let send = Frame::Send {
            dst: node(2),
            payload: b"",
        }
        .to_vec();
        let ok = Frame::AuthOk { idle_timeout_ms: 5 }.to_vec();
        for msg in [auth, send, ok] {
            assert!(matches!(
                c.handle_message(&msg, t0),
                Err(ConnError::Unexpected {
                    when: "after the handshake",
                    ..
                })
            ));
        }
    }

    #[test]
    fn datagrams_and_notices_become_events() {
        let t0 = Instant::now();
        let mut c = connected(t0);
        let recv = Frame::Recv {
            src: node(2),
            payload: b"hello",
        }
        .to_vec();
        assert_eq!(
            c.handle_message(&recv, t0),
            Ok(Some(Event::Recv {
                src: node(2),
                payload: b"hello"
            }))
        );
        let gone = Frame::PeerGone {
            node: node(4),
            reason: PeerGoneReason::NotConnected,
        }
        .to_vec();
        assert_eq!(
            c.handle_message(&gone, t0),
            Ok(Some(Event::PeerGone {
                node: node(4),
                reason: PeerGoneReason::NotConnected
            }))
        );
        let restart = Frame::Restarting {
            reconnect_in_ms: 500,
            try_for_ms: 10_000,
        }
        .to_vec();
        assert_eq!(
            c.handle_message(&restart, t0),
            Ok(Some(Event::Restarting {
                reconnect_in: ms(500),
                try_for: ms(10_000)
            }))
        );
        // The relay may ping too; the client answers with the same data.
        c.poll_transmit(); // the first ping
        let ping = Frame::Ping { data: [5; 8] }.to_vec();
        assert_eq!(c.handle_message(&ping, t0), Ok(None));
        assert_eq!(
            c.poll_transmit(),
            Some(Frame::Pong { data: [5; 8] }.to_vec())
        );
        assert_eq!(c.poll_transmit(), None);
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
        let mut c = connected(t0);
        let first = c.poll_transmit().unwrap();
        assert_eq!(c.rtt(), None);
        assert_eq!(
            c.handle_message(&pong_for(&first), t0 + ms(40)),
            Ok(Some(Event::Rtt {
                latest: ms(40),
                smoothed: ms(40)
            }))
        );
        // The same pong again, or an invented one, gives no RTT.
        assert_eq!(c.handle_message(&pong_for(&first), t0 + ms(50)), Ok(None));
        let bogus = Frame::Pong { data: [0xff; 8] }.to_vec();
        assert_eq!(c.handle_message(&bogus, t0 + ms(50)), Ok(None));
        // Next ping at a third of the idle timeout.
        assert_eq!(c.poll_timeout(), t0 + ms(10_000));
        c.handle_timeout(t0 + ms(9_999)).unwrap();
        assert_eq!(c.poll_transmit(), None);
        c.handle_timeout(t0 + ms(10_000)).unwrap();
        let second = c.poll_transmit().unwrap();
        assert_eq!(
            c.handle_message(&pong_for(&second), t0 + ms(10_120)),
            Ok(Some(Event::Rtt {
                latest: ms(120),
                smoothed: ms(50)
            }))
        );
        assert_eq!(c.rtt(), Some(ms(50)));
        // Pings keep going for as long as answers come.
        for i in 2..10u64 {
            let t = t0 + ms(10_000 * i);
            assert_eq!(c.poll_timeout(), t);
            c.handle_timeout(t).unwrap();
            let p = c.poll_transmit().unwrap();
            c.handle_message(&pong_for(&p), t + ms(50)).unwrap();
        }
    }

    #[test]
    fn silence_kills_the_connection() {
        let t0 = Instant::now();
        let mut c = connected(t0);
        c.poll_transmit();
        // Pings go out but nothing comes back.
        c.handle_timeout(t0 + ms(10_000)).unwrap();
        assert!(c.poll_transmit().is_some());
        assert_eq!(c.poll_timeout(), t0 + ms(15_000));
        assert_eq!(
            c.handle_timeout(t0 + ms(15_000)),
            Err(ConnError::Dead(ms(15_000)))
        );
        // Any frame at all (here a datagram) counts as life.
        let mut c = connected(t0);
        let recv = Frame::Recv {
            src: node(2),
            payload: b"",
        }
        .to_vec();
        c.handle_message(&recv, t0 + ms(14_000)).unwrap();
        c.handle_timeout(t0 + ms(15_000)).unwrap();
        // The ping due at 10 s went out late, at 15 s; the next is due at 25 s.
        assert_eq!(c.poll_timeout(), t0 + ms(25_000));
    }

    #[test]
    fn unanswered_pings_are_bounded_and_late_pongs_still_count() {
        let t0 = Instant::now();
        let mut c = ClientConnection::new(
            SecretKey::from_bytes([1; 32]),
            ClientConfig {
                pong_timeout: Duration::from_secs(3600),
                ..Default::default()
            },
            t0,
        );
        let hello = Frame::ServerHello {
            version: PROTOCOL_VERSION,
            challenge: CHALLENGE,
        }
        .to_vec();
        c.handle_message(&hello, t0).unwrap();
        c.poll_transmit(); // ClientAuth
        c.handle_message(&Frame::AuthOk { idle_timeout_ms: 0 }.to_vec(), t0)
            .unwrap();
        assert_eq!(c.ping_interval(), ms(15_000));
        let mut pings = Vec::new();
        for i in 0..100u64 {
            c.handle_timeout(t0 + ms(15_000 * i)).unwrap();
            while let Some(p) = c.poll_transmit() {
                pings.push(p);
            }
        }
        assert_eq!(pings.len(), 100);
        assert!(c.outstanding.len() <= MAX_OUTSTANDING_PINGS);
        let now = t0 + ms(15_000 * 99 + 10);
        assert!(matches!(
            c.handle_message(&pong_for(&pings[99]), now),
            Ok(Some(Event::Rtt { .. }))
        ));
        assert_eq!(c.handle_message(&pong_for(&pings[0]), now), Ok(None));
    }

    #[test]
    fn idle_timeouts_are_clamped() {
        let t0 = Instant::now();
        for (idle_ms, want) in [(1, 200), (600, 200), (3_000, 1_000), (u32::MAX, 15_000)] {
            let mut c =
                ClientConnection::new(SecretKey::from_bytes([1; 32]), Default::default(), t0);
            let hello = Frame::ServerHello {
                version: PROTOCOL_VERSION,
                challenge: CHALLENGE,
            }
            .to_vec();
            c.handle_message(&hello, t0).unwrap();
            c.handle_message(
                &Frame::AuthOk {
                    idle_timeout_ms: idle_ms,
                }
                .to_vec(),
                t0,
            )
            .unwrap();
            assert_eq!(c.ping_interval(), ms(want), "{idle_ms}");
        }
    }

    #[test]
    fn restart_notice_is_accepted_mid_handshake() {
        let t0 = Instant::now();
        let mut c = ClientConnection::new(SecretKey::from_bytes([1; 32]), Default::default(), t0);
        let restart = Frame::Restarting {
            reconnect_in_ms: 100,
            try_for_ms: 200,
        }
        .to_vec();
        assert!(matches!(
            c.handle_message(&restart, t0),
            Ok(Some(Event::Restarting { .. }))
        ));
    }
}
