//! A TURN server (RFC 8656), sans-IO: relayed UDP addresses for clients that cannot reach
//! their peers directly (browsers and ICE agents behind symmetric NATs), served beside STUN on
//! the same port.
//!
//! [`TurnServer`] follows the crate's calling convention (`new(config, seed)`,
//! `handle_input`, `poll_output`). The driver feeds it every TURN message and ChannelData
//! from clients ([`Input::Client`], with the client's 5-tuple), and every datagram a peer
//! sends to a relayed socket ([`Input::Peer`]). The core never opens a socket: for each
//! Allocate it asks for one ([`Event::OpenRelay`], with the port parity EVEN-PORT wants) and
//! is told its address ([`Input::RelayOpened`]) or that none could be had
//! ([`Input::RelayFailed`]); when an allocation or a port reservation ends it says which
//! socket to close ([`Event::CloseRelay`]). Lifetimes (allocations 600 s by default and 3600 s
//! at most, permissions 300 s, channels 600 s, reservations 30 s) are timers, as
//! [`Output::Timeout`].
//!
//! Every request is authenticated with the long-term mechanism (RFC 8489 9.2): long-term
//! users, or coturn-compatible ephemeral credentials ([`ephemeral_password`]). Nonces are
//! stateless (a MAC under a key from the seed, with an expiry), so unauthenticated traffic
//! costs no state. Limits: allocations in all, per user and per client IP; bytes per second
//! per allocation; permissions and channels per allocation; and peers in private and reserved
//! ranges refused ([`PeerFilter`]).

mod allocation;
pub mod channel_data;
mod config;
mod credentials;
mod nonce;
pub mod peer_filter;
mod server;

use std::net::SocketAddr;
use std::time::Duration;

pub use channel_data::{ChannelData, ChannelDataError, Framing};
pub use config::{TurnConfig, TurnLimits, TurnStats};
pub use credentials::{ephemeral_password, Key};
pub use peer_filter::{Cidr, CidrError, PeerFilter};
pub use server::{Event, Family, Input, Output, PortRequest, Transmit, TurnServer};

/// How long a permission lasts after its CreatePermission or ChannelBind (RFC 8656 9).
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// How long a channel binding lasts after its ChannelBind (RFC 8656 12).
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// How long a port reserved by EVEN-PORT is held for its RESERVATION-TOKEN (RFC 8656 7.2).
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);
/// REQUESTED-TRANSPORT's value for UDP, the only relayed transport served.
pub const PROTOCOL_UDP: u8 = 17;

/// The transport between a client and the server.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP (or TLS over TCP): messages are framed on a stream.
    Tcp,
}

impl Transport {
    /// How ChannelData is delimited on it.
    pub fn framing(self) -> Framing {
        match self {
            Transport::Udp => Framing::Datagram,
            Transport::Tcp => Framing::Stream,
        }
    }
}

/// A client's 5-tuple, which an allocation belongs to: the client's address, the server's
/// address it reached, and the transport.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct FiveTuple {
    /// The client's address, as the server sees it (its NAT's, usually).
    pub client: SocketAddr,
    /// The server's address the client sent to.
    pub server: SocketAddr,
    /// UDP or TCP.
    pub transport: Transport,
}

/// A relayed socket the core asked the driver for: an allocation's, or one reserved by
/// EVEN-PORT.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct RelayId(pub u64);

/// Whether a message received on a port shared with a STUN Binding server is the TURN
/// server's: ChannelData, or a STUN message of another method than Binding.
pub fn is_turn(packet: &[u8]) -> bool {
    match packet.first() {
        Some(&first) if channel_data::is_channel_data(first) => true,
        _ => {
            crate::stun::looks_like_stun(packet)
                && crate::stun::split_message_type(u16::from_be_bytes([packet[0], packet[1]])).1
                    != crate::stun::Method::BINDING
        }
    }
}

#[cfg(test)]
mod tests;
