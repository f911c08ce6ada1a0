//! Attribute type codes and the address encodings they share.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{TransactionId, MAGIC_COOKIE};

/// STUN attribute type codes that burrow reads or writes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AttributeType(pub u16);

impl AttributeType {
    /// MAPPED-ADDRESS (RFC 8489): the reflexive address, not XORed (classic STUN).
    pub const MAPPED_ADDRESS: Self = Self(0x0001);
    /// CHANGE-REQUEST (RFC 5780): answer from the other IP and/or port.
    pub const CHANGE_REQUEST: Self = Self(0x0003);
    /// USERNAME (RFC 8489).
    pub const USERNAME: Self = Self(0x0006);
    /// MESSAGE-INTEGRITY (RFC 8489): HMAC-SHA1 over the message.
    pub const MESSAGE_INTEGRITY: Self = Self(0x0008);
    /// ERROR-CODE (RFC 8489).
    pub const ERROR_CODE: Self = Self(0x0009);
    /// UNKNOWN-ATTRIBUTES (RFC 8489): the comprehension-required ones not understood.
    pub const UNKNOWN_ATTRIBUTES: Self = Self(0x000a);
    /// CHANNEL-NUMBER (RFC 8656): a channel number and two reserved bytes.
    pub const CHANNEL_NUMBER: Self = Self(0x000c);
    /// LIFETIME (RFC 8656): seconds until an allocation expires.
    pub const LIFETIME: Self = Self(0x000d);
    /// XOR-PEER-ADDRESS (RFC 8656): a peer's address, as XOR-MAPPED-ADDRESS is encoded; a
    /// CreatePermission may carry several.
    pub const XOR_PEER_ADDRESS: Self = Self(0x0012);
    /// DATA (RFC 8656): the application data of a Send or Data indication.
    pub const DATA: Self = Self(0x0013);
    /// REALM (RFC 8489).
    pub const REALM: Self = Self(0x0014);
    /// NONCE (RFC 8489).
    pub const NONCE: Self = Self(0x0015);
    /// XOR-RELAYED-ADDRESS (RFC 8656): the relayed transport address of an allocation.
    pub const XOR_RELAYED_ADDRESS: Self = Self(0x0016);
    /// REQUESTED-ADDRESS-FAMILY (RFC 8656): 0x01 IPv4, 0x02 IPv6, then three reserved bytes.
    pub const REQUESTED_ADDRESS_FAMILY: Self = Self(0x0017);
    /// EVEN-PORT (RFC 8656): an even relayed port; its top bit (R) asks to reserve the next.
    pub const EVEN_PORT: Self = Self(0x0018);
    /// REQUESTED-TRANSPORT (RFC 8656): the IP protocol number to relay (17, UDP), then three
    /// reserved bytes.
    pub const REQUESTED_TRANSPORT: Self = Self(0x0019);
    /// DONT-FRAGMENT (RFC 8656): set the DF bit towards the peer (no value).
    pub const DONT_FRAGMENT: Self = Self(0x001a);
    /// MESSAGE-INTEGRITY-SHA256 (RFC 8489).
    pub const MESSAGE_INTEGRITY_SHA256: Self = Self(0x001c);
    /// PASSWORD-ALGORITHM (RFC 8489).
    pub const PASSWORD_ALGORITHM: Self = Self(0x001d);
    /// USERHASH (RFC 8489).
    pub const USERHASH: Self = Self(0x001e);
    /// XOR-MAPPED-ADDRESS (RFC 8489): the reflexive address, XORed with the magic cookie.
    pub const XOR_MAPPED_ADDRESS: Self = Self(0x0020);
    /// RESERVATION-TOKEN (RFC 8656): 8 bytes naming a relayed port the server holds back.
    pub const RESERVATION_TOKEN: Self = Self(0x0022);
    /// PADDING (RFC 5780): makes a response longer, to test fragmentation.
    pub const PADDING: Self = Self(0x0026);
    /// RESPONSE-PORT (RFC 5780): answer to this port.
    pub const RESPONSE_PORT: Self = Self(0x0027);
    /// SOFTWARE (RFC 8489): the agent's name and version.
    pub const SOFTWARE: Self = Self(0x8022);
    /// FINGERPRINT (RFC 8489): CRC-32 of the message, to tell STUN from other traffic.
    pub const FINGERPRINT: Self = Self(0x8028);
    /// RESPONSE-ORIGIN (RFC 5780): the address the response was sent from.
    pub const RESPONSE_ORIGIN: Self = Self(0x802b);
    /// OTHER-ADDRESS (RFC 5780): the server's alternate IP and port.
    pub const OTHER_ADDRESS: Self = Self(0x802c);
    /// burrow's own, comprehension-optional (ignored by other clients): the server's second
    /// port on the IP the request reached. A server with one IP address may not send
    /// OTHER-ADDRESS (RFC 5780), but a second port still shows a mapping that depends on
    /// the destination port, and filtering that depends on the source port. The value is the
    /// port and two zero bytes, like RESPONSE-PORT.
    pub const ALTERNATE_PORT: Self = Self(0xc0b7);

    /// Types below 0x8000 must be understood; an unknown one makes the message unusable.
    pub fn is_comprehension_required(self) -> bool {
        self.0 < 0x8000
    }
}

const FAMILY_V4: u8 = 0x01;
const FAMILY_V6: u8 = 0x02;

/// Decodes a (XOR-)MAPPED-ADDRESS style value. `xor` carries the transaction ID for the XOR form.
pub(crate) fn decode_address(
    value: &[u8],
    xor: Option<&TransactionId>,
) -> Result<SocketAddr, &'static str> {
    if value.len() < 4 {
        return Err("address shorter than 4 bytes");
    }
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let mut port = u16::from_be_bytes([value[2], value[3]]);
    if xor.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let ip = match (value[1], value.len()) {
        (FAMILY_V4, 8) => {
            let mut octets = [value[4], value[5], value[6], value[7]];
            if xor.is_some() {
                octets.iter_mut().zip(cookie).for_each(|(o, k)| *o ^= k);
            }
            IpAddr::V4(Ipv4Addr::from(octets))
        }
        (FAMILY_V6, 20) => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&value[4..20]);
            if let Some(tid) = xor {
                let key = cookie.iter().chain(tid.0.iter());
                octets.iter_mut().zip(key).for_each(|(o, k)| *o ^= k);
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        (FAMILY_V4, _) | (FAMILY_V6, _) => return Err("address length does not match its family"),
        _ => return Err("unknown address family"),
    };
    Ok(SocketAddr::new(ip, port))
}

/// Appends the encoded (XOR-)MAPPED-ADDRESS value of `addr` to `out`.
pub(crate) fn encode_address(out: &mut Vec<u8>, addr: SocketAddr, xor: Option<&TransactionId>) {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let mut port = addr.port();
    if xor.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.extend_from_slice(&[0, FAMILY_V4]);
            out.extend_from_slice(&port.to_be_bytes());
            let mut octets = ip.octets();
            if xor.is_some() {
                octets.iter_mut().zip(cookie).for_each(|(o, k)| *o ^= k);
            }
            out.extend_from_slice(&octets);
        }
        IpAddr::V6(ip) => {
            out.extend_from_slice(&[0, FAMILY_V6]);
            out.extend_from_slice(&port.to_be_bytes());
            let mut octets = ip.octets();
            if let Some(tid) = xor {
                let key = cookie.iter().chain(tid.0.iter());
                octets.iter_mut().zip(key).for_each(|(o, k)| *o ^= k);
            }
            out.extend_from_slice(&octets);
        }
    }
}

/// Length of an encoded address value.
pub(crate) fn address_len(addr: SocketAddr) -> usize {
    if addr.is_ipv4() {
        8
    } else {
        20
    }
}
