//! The relay server's side of one client connection, sans IO.
//!
//! [`ServerConnection`] takes the WebSocket messages a client sends and the current time, and
//! answers with an [`Action`]: reply with a frame, forward the (rewritten) message to a key,
//! drop it, or close the connection with a [`CloseReason`]. It enforces the handshake order,
//! the frame directions, the handshake and idle timeouts, the per-client byte rate and the
//! maximum message size. The driver owns the socket, the clock and the other clients.
//!
//! This core is one of the two documented exceptions to the crate's calling convention (see
//! the [crate docs](crate)): it runs once per forwarded datagram, so each message gets its
//! [`Action`] straight back from [`ServerConnection::handle_input`] rather than through an
//! output queue, its only timers (handshake and idle) are read with
//! [`ServerConnection::poll_timeout`] and fired with [`ServerConnection::handle_timeout`], and
//! its one random value, the challenge, comes in at construction from the driver, with the
//! relay's own URLs ([`OwnUrls`]) that a client's signature must name.
//!
//! Rate limiting shapes rather than polices: a client over its byte rate is not dropped;
//! instead [`ServerConnection::read_resume_at`] tells the driver to stop reading from it until
//! its token bucket has refilled, so TCP pushes back on the sender and nothing is lost.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::auth::{self, AuthError, OwnUrls};
use super::{Frame, FrameError, PeerGoneReason, FRAME_OVERHEAD, MAX_PAYLOAD, PROTOCOL_VERSION};
use crate::identity::NodeId;
use crate::rate::TokenBucket;

/// WebSocket close code: normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// WebSocket close code: going away (idle timeout).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// WebSocket close code: protocol error (bad or misplaced frame).
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// WebSocket close code: unsupported data (a text message).
pub const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
/// WebSocket close code: policy violation (authentication failed, handshake too slow).
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;
/// WebSocket close code: message too big.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// WebSocket close code: internal error.
pub const CLOSE_INTERNAL_ERROR: u16 = 1011;
/// WebSocket close code: service restart (graceful shutdown; reconnect soon).
pub const CLOSE_SERVICE_RESTART: u16 = 1012;
/// Application close code: another connection authenticated the same key. A client that
/// receives it should not reconnect at once, or two instances of one key would take turns.
pub const CLOSE_REPLACED: u16 = 4001;

/// The largest WebSocket message a client may send: a full Send frame.
pub const MAX_MESSAGE: usize = MAX_PAYLOAD + FRAME_OVERHEAD;

/// The per-connection limits the core enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    /// Time from connection start to a valid ClientAuth.
    pub handshake_timeout: Duration,
    /// Time without any message from the client after which it is closed.
    pub idle_timeout: Duration,
    /// Sustained bytes per second the client may send; 0 = unlimited.
    pub rate_bytes_per_sec: u64,
    /// Bytes the client may send in a burst above the rate.
    pub burst_bytes: u64,
    /// Largest message accepted; larger ones close the connection (WebSocket code 1009).
    pub max_message_bytes: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            rate_bytes_per_sec: 100_000_000 / 8,
            burst_bytes: 2 * 1024 * 1024,
            max_message_bytes: MAX_MESSAGE,
        }
    }
}

/// One WebSocket message from the client, as the core sees it.
#[derive(Debug)]
pub enum Input<'a> {
    /// A binary message; a Send frame is rewritten in place into the Recv frame to forward.
    Binary(&'a mut [u8]),
    /// A text message (never valid in this protocol) of this many bytes.
    Text(usize),
    /// A WebSocket-level ping or pong: proof of life, nothing else.
    Control,
}

/// Why the server closes a connection. Each has a WebSocket close code and a short reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// No valid ClientAuth within the handshake timeout.
    HandshakeTimeout,
    /// Nothing received within the idle timeout.
    IdleTimeout,
    /// The message is not a valid frame.
    BadFrame(FrameError),
    /// A valid frame that the client may not send in this state.
    Unexpected {
        /// The frame type.
        frame_type: u8,
        /// Whether the client had authenticated.
        authenticated: bool,
    },
    /// The ClientAuth did not prove the key.
    AuthFailed(AuthError),
    /// A text message.
    Text,
    /// A message over the size limit.
    TooLarge(usize),
    /// Another connection authenticated the same key.
    Replaced,
    /// The server is shutting down.
    ShuttingDown,
    /// The WebSocket layer failed (invalid WebSocket framing, I/O error).
    Transport(String),
}

impl CloseReason {
    /// The WebSocket close code to send.
    pub fn code(&self) -> u16 {
        match self {
            CloseReason::HandshakeTimeout => CLOSE_POLICY_VIOLATION,
            CloseReason::IdleTimeout => CLOSE_GOING_AWAY,
            CloseReason::BadFrame(FrameError::PayloadTooLarge(_)) => CLOSE_TOO_BIG,
            CloseReason::BadFrame(_) | CloseReason::Unexpected { .. } => CLOSE_PROTOCOL_ERROR,
            CloseReason::AuthFailed(_) => CLOSE_POLICY_VIOLATION,
            CloseReason::Text => CLOSE_UNSUPPORTED_DATA,
            CloseReason::TooLarge(_) => CLOSE_TOO_BIG,
            CloseReason::Replaced => CLOSE_REPLACED,
            CloseReason::ShuttingDown => CLOSE_SERVICE_RESTART,
            CloseReason::Transport(_) => CLOSE_PROTOCOL_ERROR,
        }
    }

    /// A stable snake_case name, for metrics labels and logs.
    pub fn label(&self) -> &'static str {
        match self {
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::BadFrame(FrameError::PayloadTooLarge(_)) => "too_large",
            CloseReason::BadFrame(_) => "bad_frame",
            CloseReason::Unexpected { .. } => "unexpected_frame",
            CloseReason::AuthFailed(_) => "auth_failed",
            CloseReason::Text => "text_message",
            CloseReason::TooLarge(_) => "too_large",
            CloseReason::Replaced => "replaced",
            CloseReason::ShuttingDown => "shutting_down",
            CloseReason::Transport(_) => "transport_error",
        }
    }
}

/// The longest close reason a WebSocket close frame carries, in bytes.
pub const MAX_CLOSE_REASON: usize = 123;

impl fmt::Display for CloseReason {
    /// The close frame's reason text: clear, and cut to [`MAX_CLOSE_REASON`] bytes (at a
    /// character boundary), since a reason may quote a long relay URL or transport error.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            CloseReason::HandshakeTimeout => "handshake timeout".to_string(),
            CloseReason::IdleTimeout => "idle timeout".to_string(),
            CloseReason::BadFrame(e) => format!("bad frame: {e}"),
            CloseReason::Unexpected {
                frame_type,
                authenticated: false,
            } => format!("frame type {frame_type:#04x} not allowed before ClientAuth"),
            CloseReason::Unexpected {
                frame_type,
                authenticated: true,
            } => format!("frame type {frame_type:#04x} not allowed from a client"),
            CloseReason::AuthFailed(e) => format!("auth failed: {e}"),
            CloseReason::Text => "text messages are not part of the protocol".to_string(),
            CloseReason::TooLarge(n) => format!("message of {n} bytes is too large"),
            CloseReason::Replaced => "replaced by a newer connection for this key".to_string(),
            CloseReason::ShuttingDown => "relay restarting".to_string(),
            CloseReason::Transport(e) => format!("websocket error: {e}"),
        };
        f.write_str(crate::text::truncate(&s, MAX_CLOSE_REASON))
    }
}

/// What the driver does with one input.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do.
    None,
    /// Send this frame back to the client.
    Reply(Frame<'static>),
    /// The client proved `node_id`: register it, then send `reply` (AuthOk).
    Authenticated {
        /// The key.
        node_id: NodeId,
        /// The AuthOk frame.
        reply: Frame<'static>,
    },
    /// The input buffer now holds a Recv frame from this client: deliver it to `dst`.
    Forward {
        /// The destination key.
        dst: NodeId,
    },
    /// Close the connection.
    Close(CloseReason),
}

/// PeerGone{NotConnected} notices a client may receive: this many per second, bursting to
/// [`NOTICE_BURST`], so a client sending to a gone peer cannot make the relay amplify.
pub const NOTICES_PER_SEC: u64 = 10;
/// Burst of PeerGone{NotConnected} notices.
pub const NOTICE_BURST: u64 = 20;

#[derive(Clone, Debug)]
enum State {
    AwaitingAuth {
        challenge: [u8; 32],
        own: Arc<dyn OwnUrls>,
    },
    Authenticated {
        node_id: NodeId,
    },
    Closed,
}

/// The server's state machine for one client connection.
#[derive(Clone, Debug)]
pub struct ServerConnection {
    state: State,
    limits: ConnLimits,
    handshake_deadline: Instant,
    last_rx: Instant,
    resume_at: Option<Instant>,
    bucket: Option<TokenBucket>,
    notices: TokenBucket,
}

impl ServerConnection {
    /// A new connection at `now`, with a fresh random `challenge` from the driver, to a relay
    /// that answers to `own`.
    pub fn new(
        now: Instant,
        challenge: [u8; 32],
        own: Arc<dyn OwnUrls>,
        limits: ConnLimits,
    ) -> Self {
        ServerConnection {
            state: State::AwaitingAuth { challenge, own },
            limits,
            handshake_deadline: now
                .checked_add(limits.handshake_timeout)
                .unwrap_or(now + Duration::from_secs(86_400)),
            last_rx: now,
            resume_at: None,
            bucket: (limits.rate_bytes_per_sec > 0).then(|| {
                TokenBucket::new(
                    limits.rate_bytes_per_sec as f64,
                    limits.burst_bytes.max(1) as f64,
                )
            }),
            notices: TokenBucket::new(NOTICES_PER_SEC as f64, NOTICE_BURST as f64),
        }
    }

    /// The ServerHello to send first.
    pub fn hello(&self) -> Frame<'static> {
        let challenge = match &self.state {
            State::AwaitingAuth { challenge, .. } => *challenge,
            _ => [0; 32],
        };
        Frame::ServerHello {
            version: PROTOCOL_VERSION,
            challenge,
        }
    }

    /// The authenticated key, once there is one.
    pub fn node_id(&self) -> Option<NodeId> {
        match self.state {
            State::Authenticated { node_id } => Some(node_id),
            _ => None,
        }
    }

    /// Whether a close has been decided.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Marks the connection closed for a reason decided outside the core (shutdown,
    /// replacement, transport error); later inputs are ignored.
    pub fn close(&mut self) {
        self.state = State::Closed;
    }

    fn fail(&mut self, reason: CloseReason) -> Action {
        self.state = State::Closed;
        Action::Close(reason)
    }

    /// Handles one message received at `now`.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Action {
        if self.is_closed() {
            return Action::None;
        }
        self.last_rx = self.last_rx.max(now);
        let msg = match input {
            Input::Control => return Action::None,
            Input::Text(_) => return self.fail(CloseReason::Text),
            Input::Binary(msg) => msg,
        };
        if msg.len() > self.limits.max_message_bytes {
            return self.fail(CloseReason::TooLarge(msg.len()));
        }
        let authenticated = self.node_id();
        if let (Some(bucket), Some(_)) = (&mut self.bucket, authenticated) {
            // Debt is bounded by one message, so the wait is at most max_message / rate.
            self.resume_at = bucket.take_on_credit(now, msg.len() as f64).map(|wait| {
                now.checked_add(wait)
                    .unwrap_or(now + Duration::from_secs(86_400))
            });
        }
        match (&self.state, authenticated) {
            (State::AwaitingAuth { challenge, own }, _) => {
                let verified = match Frame::decode(msg) {
                    Ok(Frame::ClientAuth {
                        version,
                        node_id,
                        signature,
                        relay_url,
                    }) => auth::verify(
                        challenge,
                        version,
                        &node_id,
                        &signature,
                        relay_url,
                        own.as_ref(),
                    )
                    .map(|()| node_id),
                    Ok(_) => {
                        return self.fail(CloseReason::Unexpected {
                            frame_type: msg[0],
                            authenticated: false,
                        })
                    }
                    Err(e) => return self.fail(CloseReason::BadFrame(e)),
                };
                match verified {
                    Ok(node_id) => {
                        self.state = State::Authenticated { node_id };
                        Action::Authenticated {
                            node_id,
                            reply: Frame::AuthOk {
                                idle_timeout_ms: self.idle_timeout_ms(),
                            },
                        }
                    }
                    Err(e) => self.fail(CloseReason::AuthFailed(e)),
                }
            }
            (_, Some(src)) => {
                // The fast path first: a Send is rewritten in place, no decode into a copy.
                if msg.first() == Some(&0x10) {
                    return match super::send_to_recv_in_place(msg, &src) {
                        Ok(dst) => Action::Forward { dst },
                        Err(e) => self.fail(CloseReason::BadFrame(e)),
                    };
                }
                match Frame::decode(msg) {
                    Ok(Frame::Ping { data }) => Action::Reply(Frame::Pong { data }),
                    Ok(Frame::Pong { .. }) => Action::None,
                    Ok(_) => self.fail(CloseReason::Unexpected {
                        frame_type: msg[0],
                        authenticated: true,
                    }),
                    Err(e) => self.fail(CloseReason::BadFrame(e)),
                }
            }
            _ => Action::None,
        }
    }

    fn idle_timeout_ms(&self) -> u32 {
        u32::try_from(self.limits.idle_timeout.as_millis()).unwrap_or(u32::MAX)
    }

    /// When rate limited: do not read the next message before this instant.
    pub fn read_resume_at(&self, now: Instant) -> Option<Instant> {
        self.resume_at.filter(|&t| t > now)
    }

    /// The next instant at which [`ServerConnection::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::AwaitingAuth { .. } => Some(self.handshake_deadline),
            State::Authenticated { .. } => {
                // Time the driver spent not reading (rate limiting) is not the client's silence.
                let since = match self.resume_at {
                    Some(r) => r.max(self.last_rx),
                    None => self.last_rx,
                };
                since.checked_add(self.limits.idle_timeout)
            }
            State::Closed => None,
        }
    }

    /// Advances time; returns the reason to close if a timeout has expired.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<CloseReason> {
        let deadline = self.poll_timeout()?;
        if now < deadline {
            return None;
        }
        let reason = match self.state {
            State::AwaitingAuth { .. } => CloseReason::HandshakeTimeout,
            _ => CloseReason::IdleTimeout,
        };
        self.state = State::Closed;
        Some(reason)
    }

    /// A PeerGone{NotConnected} notice for a Send to `node`, unless this client has had too
    /// many lately.
    pub fn not_connected_notice(&mut self, now: Instant, node: NodeId) -> Option<Frame<'static>> {
        self.notices.take(now, 1.0).then_some(Frame::PeerGone {
            node,
            reason: PeerGoneReason::NotConnected,
        })
    }
}

#[cfg(test)]
mod tests;
