//! Encoding and decoding relay frames. Never panics on any input.

use crate::identity::NodeId;
use crate::record::MAX_RELAY_URL_LEN;

/// The protocol version spoken in the handshake. Version 2 signs the relay's URL into the
/// ClientAuth ([`crate::relay::auth`]); a version 1 client is refused with a clear reason.
pub const PROTOCOL_VERSION: u8 = 2;
/// The largest datagram a Send or Recv frame carries.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Bytes a Send or Recv frame adds to its payload (type and key).
pub const FRAME_OVERHEAD: usize = 1 + 32;

const T_SERVER_HELLO: u8 = 0x01;
const T_CLIENT_AUTH: u8 = 0x02;
const T_AUTH_OK: u8 = 0x03;
const T_SEND: u8 = 0x10;
const T_RECV: u8 = 0x11;
const T_PING: u8 = 0x20;
const T_PONG: u8 = 0x21;
const T_PEER_GONE: u8 = 0x30;
const T_RESTARTING: u8 = 0x31;

/// Why the relay says a peer is not reachable through it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PeerGoneReason {
    /// No client with that key is connected to this relay.
    NotConnected,
    /// The peer was connected and has disconnected.
    Disconnected,
}

/// One relay frame; payloads borrow from the message they were decoded from.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Frame<'a> {
    /// Server's greeting: protocol version and the challenge to sign.
    ServerHello {
        /// Protocol version.
        version: u8,
        /// Random bytes, fresh for each connection.
        challenge: [u8; 32],
    },
    /// Client's proof of its key, for the relay it dialled.
    ClientAuth {
        /// Protocol version.
        version: u8,
        /// The key the client claims.
        node_id: NodeId,
        /// Ed25519 signature over [`crate::relay::auth::signed_message`].
        signature: [u8; 64],
        /// The URL the client dialled, as [`crate::relay::RelayUrl`] displays it: the rest of
        /// the message, at most 255 bytes (empty in a version 1 ClientAuth).
        relay_url: &'a str,
    },
    /// The server accepted the key.
    AuthOk {
        /// The server closes a connection silent for this long; clients ping well within it.
        idle_timeout_ms: u32,
    },
    /// Client → server: deliver `payload` to `dst`.
    Send {
        /// Destination key.
        dst: NodeId,
        /// Opaque datagram, at most [`MAX_PAYLOAD`] bytes.
        payload: &'a [u8],
    },
    /// Server → client: `payload` from `src`.
    Recv {
        /// Source key, as authenticated by the server.
        src: NodeId,
        /// Opaque datagram.
        payload: &'a [u8],
    },
    /// Keepalive request; the other side answers with [`Frame::Pong`] and the same data.
    Ping {
        /// Opaque data to echo.
        data: [u8; 8],
    },
    /// Keepalive answer.
    Pong {
        /// The ping's data.
        data: [u8; 8],
    },
    /// Server → client: `node` is not reachable through this relay.
    PeerGone {
        /// The peer.
        node: NodeId,
        /// Why.
        reason: PeerGoneReason,
    },
    /// Server → client: the server is about to restart; reconnect after a pause.
    Restarting {
        /// Wait about this long before reconnecting.
        reconnect_in_ms: u32,
        /// Keep trying for about this long before trying another relay.
        try_for_ms: u32,
    },
}

/// Why a message is not a valid frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// An empty message.
    #[error("empty frame")]
    Empty,
    /// A type byte this version does not know.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// The message is shorter or longer than its type allows.
    #[error("frame type {frame_type:#04x} has length {len}, expected {expected}")]
    BadLength {
        /// The frame type.
        frame_type: u8,
        /// The message length.
        len: usize,
        /// What the type requires.
        expected: &'static str,
    },
    /// A payload over [`MAX_PAYLOAD`].
    #[error("payload of {0} bytes exceeds the 65536-byte limit")]
    PayloadTooLarge(usize),
    /// A valid frame of a type not allowed at this point of the protocol or in this direction.
    #[error("frame type {0:#04x} is not allowed here")]
    Unexpected(u8),
    /// A PeerGone reason this version does not know.
    #[error("unknown peer-gone reason {0}")]
    BadReason(u8),
    /// Text (a ClientAuth's relay URL) that is not UTF-8.
    #[error("frame type {0:#04x} carries text that is not UTF-8")]
    NotUtf8(u8),
}

fn array<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}

fn u32_at(b: &[u8]) -> u32 {
    u32::from_be_bytes(array(b))
}

impl<'a> Frame<'a> {
    /// Decodes one WebSocket message.
    pub fn decode(msg: &'a [u8]) -> Result<Frame<'a>, FrameError> {
        let (&t, body) = msg.split_first().ok_or(FrameError::Empty)?;
        let exact = |n: usize, expected: &'static str| {
            if body.len() == n {
                Ok(())
            } else {
                Err(FrameError::BadLength {
                    frame_type: t,
                    len: msg.len(),
                    expected,
                })
            }
        };
        let keyed = |expected: &'static str| {
            if body.len() < 32 {
                return Err(FrameError::BadLength {
                    frame_type: t,
                    len: msg.len(),
                    expected,
                });
            }
            let payload = &body[32..];
            if payload.len() > MAX_PAYLOAD {
                return Err(FrameError::PayloadTooLarge(payload.len()));
            }
            Ok((NodeId(array(body)), payload))
        };
        Ok(match t {
            T_SERVER_HELLO => {
                exact(33, "34")?;
                Frame::ServerHello {
                    version: body[0],
                    challenge: array(&body[1..]),
                }
            }
            T_CLIENT_AUTH => {
                if !(97..=97 + MAX_RELAY_URL_LEN).contains(&body.len()) {
                    return Err(FrameError::BadLength {
                        frame_type: t,
                        len: msg.len(),
                        expected: "98 to 353",
                    });
                }
                Frame::ClientAuth {
                    version: body[0],
                    node_id: NodeId(array(&body[1..])),
                    signature: array(&body[33..]),
                    relay_url: std::str::from_utf8(&body[97..])
                        .map_err(|_| FrameError::NotUtf8(t))?,
                }
            }
            T_AUTH_OK => {
                exact(4, "5")?;
                Frame::AuthOk {
                    idle_timeout_ms: u32_at(body),
                }
            }
            T_SEND => {
                let (dst, payload) = keyed("at least 33")?;
                Frame::Send { dst, payload }
            }
            T_RECV => {
                let (src, payload) = keyed("at least 33")?;
                Frame::Recv { src, payload }
            }
            T_PING => {
                exact(8, "9")?;
                Frame::Ping { data: array(body) }
            }
            T_PONG => {
                exact(8, "9")?;
                Frame::Pong { data: array(body) }
            }
            T_PEER_GONE => {
                exact(33, "34")?;
                let reason = match body[32] {
                    0 => PeerGoneReason::NotConnected,
                    1 => PeerGoneReason::Disconnected,
                    r => return Err(FrameError::BadReason(r)),
                };
                Frame::PeerGone {
                    node: NodeId(array(body)),
                    reason,
                }
            }
            T_RESTARTING => {
                exact(8, "9")?;
                Frame::Restarting {
                    reconnect_in_ms: u32_at(body),
                    try_for_ms: u32_at(&body[4..]),
                }
            }
            other => return Err(FrameError::UnknownType(other)),
        })
    }

    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Frame::ServerHello { version, challenge } => {
                out.extend_from_slice(&[T_SERVER_HELLO, *version]);
                out.extend_from_slice(challenge);
            }
            Frame::ClientAuth {
                version,
                node_id,
                signature,
                relay_url,
            } => {
                out.extend_from_slice(&[T_CLIENT_AUTH, *version]);
                out.extend_from_slice(node_id.as_bytes());
                out.extend_from_slice(signature);
                out.extend_from_slice(relay_url.as_bytes());
            }
            Frame::AuthOk { idle_timeout_ms } => {
                out.push(T_AUTH_OK);
                out.extend_from_slice(&idle_timeout_ms.to_be_bytes());
            }
            Frame::Send { dst: key, payload } | Frame::Recv { src: key, payload } => {
                out.reserve(FRAME_OVERHEAD + payload.len());
                out.push(if matches!(self, Frame::Send { .. }) {
                    T_SEND
                } else {
                    T_RECV
                });
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(payload);
            }
            Frame::Ping { data } => {
                out.push(T_PING);
                out.extend_from_slice(data);
            }
            Frame::Pong { data } => {
                out.push(T_PONG);
                out.extend_from_slice(data);
            }
            Frame::PeerGone { node, reason } => {
                out.push(T_PEER_GONE);
                out.extend_from_slice(node.as_bytes());
                out.push(match reason {
                    PeerGoneReason::NotConnected => 0,
                    PeerGoneReason::Disconnected => 1,
                });
            }
            Frame::Restarting {
                reconnect_in_ms,
                try_for_ms,
            } => {
                out.push(T_RESTARTING);
                out.extend_from_slice(&reconnect_in_ms.to_be_bytes());
                out.extend_from_slice(&try_for_ms.to_be_bytes());
            }
        }
    }

    /// The encoded frame as a new buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// Turns a Send frame's bytes into the Recv frame for its destination in place, without
/// copying the payload: the relay's forwarding fast path. Returns the destination.
pub fn send_to_recv_in_place(msg: &mut [u8], src: &NodeId) -> Result<NodeId, FrameError> {
    let dst = match Frame::decode(msg)? {
        Frame::Send { dst, .. } => dst,
        _ => return Err(FrameError::Unexpected(msg[0])),
    };
    msg[0] = T_RECV;
    msg[1..33].copy_from_slice(src.as_bytes());
    Ok(dst)
}
