//! STUN (RFC 8489) with the NAT behaviour discovery attributes of RFC 5780 and the TURN
//! methods and attributes of RFC 8656 (served by [`crate::turn`]).
//!
//! Written by hand rather than taken from `stun-rs` or `stun_codec` because burrow needs a
//! parser that borrows from the datagram and allocates nothing on the hot path (the STUN
//! server answers at line rate), that reports every failure as a distinct typed error (tests and
//! logs depend on telling a bad fingerprint from a bad length), and that never panics on any input
//! (fuzzed: `fuzz/fuzz_targets/stun_message.rs`). The protocol surface needed is small.

mod attribute;
mod encode;
pub mod integrity;
mod message;
pub mod server;

pub use attribute::AttributeType;
pub use encode::MessageWriter;
pub use message::{ChangeRequest, ErrorCode, Integrity, Message, StunError};

/// Length of the fixed STUN header.
pub const HEADER_LEN: usize = 20;
/// The magic cookie that every RFC 5389/8489 message carries in bytes 4..8.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// XORed into the CRC-32 of a FINGERPRINT attribute (the ASCII of "STUN").
pub const FINGERPRINT_XOR: u32 = 0x5354_554e;
/// The largest message the codec accepts or writes; anything bigger is not a STUN datagram.
pub const MAX_MESSAGE_LEN: usize = 65_535 + HEADER_LEN;

/// The 96-bit transaction ID that matches a response to its request.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TransactionId(pub [u8; 12]);

/// The class bits of a STUN message type.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Class {
    /// A request, which expects a response.
    Request,
    /// An indication, which expects nothing back.
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

/// A STUN method (12 bits).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Method(pub u16);

impl Method {
    /// The Binding method (RFC 8489).
    pub const BINDING: Method = Method(0x001);
    /// Allocate (RFC 8656): a relayed transport address for the client's 5-tuple.
    pub const ALLOCATE: Method = Method(0x003);
    /// Refresh (RFC 8656): a new lifetime for an allocation, or 0 to delete it.
    pub const REFRESH: Method = Method(0x004);
    /// Send (RFC 8656, indication): data from the client for a peer.
    pub const SEND: Method = Method(0x006);
    /// Data (RFC 8656, indication): data from a peer for the client.
    pub const DATA: Method = Method(0x007);
    /// CreatePermission (RFC 8656): let peers at these IP addresses send to the allocation.
    pub const CREATE_PERMISSION: Method = Method(0x008);
    /// ChannelBind (RFC 8656): a channel number for one peer address.
    pub const CHANNEL_BIND: Method = Method(0x009);
}

/// Packs class and method into the 14-bit message type of RFC 8489 section 5.
pub fn message_type(class: Class, method: Method) -> u16 {
    let m = method.0 & 0x0fff;
    let c: u16 = match class {
        Class::Request => 0b00,
        Class::Indication => 0b01,
        Class::Success => 0b10,
        Class::Error => 0b11,
    };
    (m & 0x000f) | ((m & 0x0070) << 1) | ((m & 0x0f80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
}

/// Splits a 14-bit message type into class and method.
pub fn split_message_type(t: u16) -> (Class, Method) {
    let m = (t & 0x000f) | ((t & 0x00e0) >> 1) | ((t & 0x3e00) >> 2);
    let class = match ((t >> 4) & 1) | ((t >> 7) & 2) {
        0b00 => Class::Request,
        0b01 => Class::Indication,
        0b10 => Class::Success,
        _ => Class::Error,
    };
    (class, Method(m))
}

/// Cheap test of whether a datagram may be STUN, for demultiplexing a shared socket
/// (RFC 7983: the first two bits are zero and the magic cookie is present).
pub fn looks_like_stun(packet: &[u8]) -> bool {
    packet.len() >= HEADER_LEN
        && packet[0] & 0xc0 == 0
        && packet[4..8] == MAGIC_COOKIE.to_be_bytes()
}

#[cfg(test)]
mod tests;
