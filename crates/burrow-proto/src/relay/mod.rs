//! The relay protocol: opaque datagrams forwarded between keys over a WebSocket.
//!
//! Each WebSocket binary message carries exactly one [`Frame`]. WebSocket gives message
//! boundaries and passes HTTP proxies, load balancers and browsers; TLS, when configured, is
//! the `wss://` layer below it. The relay only ever sees payloads that the peers have already
//! encrypted end to end.
//!
//! A connection:
//!
//! 1. server → client: [`Frame::ServerHello`] with a random 32-byte challenge;
//! 2. client → server: [`Frame::ClientAuth`], its NodeId, the relay URL it dialled and an
//!    Ed25519 signature over the challenge and that URL ([`auth`]), so nobody can register for
//!    a key it does not hold, nor pass a client's signature on to another relay;
//! 3. server → client: [`Frame::AuthOk`], or a WebSocket close with the reason;
//! 4. then [`Frame::Send`] / [`Frame::Recv`] datagrams, [`Frame::Ping`] / [`Frame::Pong`]
//!    keepalives (application-level, since browsers cannot send WebSocket pings),
//!    [`Frame::PeerGone`] and [`Frame::Restarting`] notices.

pub mod auth;
mod frame;
pub mod server_conn;

pub mod backoff;
pub mod client_conn;
pub mod home;
mod url;

pub use frame::{
    send_to_recv_in_place, Frame, FrameError, PeerGoneReason, FRAME_OVERHEAD, MAX_PAYLOAD,
    PROTOCOL_VERSION,
};
pub use url::{RelayUrl, RelayUrlError, RELAY_PATH};

#[cfg(test)]
mod tests;
