//! Parsing a datagram into a [`Message`] that borrows from it.

use std::net::SocketAddr;

use super::attribute::{decode_address, AttributeType};
use super::{
    split_message_type, Class, Method, TransactionId, FINGERPRINT_XOR, HEADER_LEN, MAGIC_COOKIE,
};

/// Most unknown comprehension-required types reported back in one 420 response.
const MAX_UNKNOWN_REPORTED: usize = 16;
/// RFC 8489: SOFTWARE and ERROR-CODE reason phrases (and REALM and NONCE) are at most 763
/// bytes.
const MAX_TEXT_LEN: usize = 763;
/// RFC 8489 14.3: USERNAME is under 513 bytes.
const MAX_USERNAME_LEN: usize = 512;

/// Why a datagram is not an acceptable STUN message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    /// Fewer bytes than the 20-byte header.
    #[error("{len} bytes is shorter than the 20-byte STUN header")]
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// The two most significant bits are not zero, so this is some other protocol.
    #[error("first two bits are not zero: not a STUN message")]
    NotStun,
    /// The magic cookie is wrong (RFC 3489 messages land here too).
    #[error("wrong magic cookie {found:#010x}, expected 0x2112a442")]
    BadMagicCookie {
        /// The 32 bits found where the cookie belongs.
        found: u32,
    },
    /// The header's length is not a multiple of four.
    #[error("message length {declared} is not a multiple of 4")]
    UnalignedLength {
        /// The length the header declares.
        declared: u16,
    },
    /// The header's length disagrees with the datagram's size.
    #[error("header declares {declared} bytes of attributes but the datagram carries {actual}")]
    LengthMismatch {
        /// The length the header declares.
        declared: u16,
        /// The bytes actually present after the header.
        actual: usize,
    },
    /// An attribute's length runs past the end of the message.
    #[error("attribute {attr_type:#06x} at offset {offset} runs past the end of the message")]
    AttributeOverrun {
        /// The attribute's type.
        attr_type: u16,
        /// Offset of the attribute's header in the datagram.
        offset: usize,
    },
    /// A known attribute has an impossible value.
    #[error("attribute {attr_type:#06x} is malformed: {reason}")]
    BadAttribute {
        /// The attribute's type.
        attr_type: u16,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The FINGERPRINT does not match the CRC-32 of the message.
    #[error("FINGERPRINT {found:#010x} does not match the computed {expected:#010x}")]
    BadFingerprint {
        /// The value computed over the message.
        expected: u32,
        /// The value the message carries.
        found: u32,
    },
    /// FINGERPRINT must be the last attribute.
    #[error("attribute after FINGERPRINT")]
    AttributeAfterFingerprint,
    /// The message is well formed but carries comprehension-required attributes that burrow
    /// does not know; a server answers a request like this with error 420.
    #[error("unknown comprehension-required attributes {types:04x?}")]
    UnknownComprehensionRequired {
        /// The class of the offending message.
        class: Class,
        /// The method of the offending message.
        method: Method,
        /// The transaction to answer.
        transaction_id: TransactionId,
        /// The unknown types, at most 16 of them.
        types: Vec<u16>,
    },
}

/// An ERROR-CODE attribute.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ErrorCode<'a> {
    /// The code, 300 to 699.
    pub code: u16,
    /// The reason phrase.
    pub reason: &'a str,
}

/// A CHANGE-REQUEST attribute (RFC 5780): send the response from the other IP and/or port.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ChangeRequest {
    /// Answer from the alternate IP address.
    pub ip: bool,
    /// Answer from the alternate port.
    pub port: bool,
}

/// Where a MESSAGE-INTEGRITY attribute sits and what it says, for [`super::integrity`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Integrity {
    /// Offset of the attribute's header in the datagram: the HMAC covers what precedes it.
    pub offset: usize,
    /// The HMAC-SHA1 it carries.
    pub mac: [u8; 20],
}

/// A parsed STUN message. Only the first occurrence of each attribute counts (RFC 8489 14),
/// except XOR-PEER-ADDRESS, which a CreatePermission repeats ([`Message::peer_addresses`]).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Message<'a> {
    /// Request, indication, success or error.
    pub class: Class,
    /// The method.
    pub method: Method,
    /// The transaction ID.
    pub transaction_id: TransactionId,
    /// MAPPED-ADDRESS.
    pub mapped_address: Option<SocketAddr>,
    /// XOR-MAPPED-ADDRESS.
    pub xor_mapped_address: Option<SocketAddr>,
    /// SOFTWARE.
    pub software: Option<&'a str>,
    /// ERROR-CODE.
    pub error_code: Option<ErrorCode<'a>>,
    /// UNKNOWN-ATTRIBUTES, as listed by the peer.
    pub unknown_attributes: Option<&'a [u8]>,
    /// CHANGE-REQUEST (RFC 5780).
    pub change_request: Option<ChangeRequest>,
    /// RESPONSE-ORIGIN (RFC 5780).
    pub response_origin: Option<SocketAddr>,
    /// OTHER-ADDRESS (RFC 5780).
    pub other_address: Option<SocketAddr>,
    /// RESPONSE-PORT (RFC 5780).
    pub response_port: Option<u16>,
    /// The server's second port on the same IP ([`AttributeType::ALTERNATE_PORT`]).
    pub alternate_port: Option<u16>,
    /// Length of the PADDING attribute's value, if present (RFC 5780).
    pub padding_len: Option<usize>,
    /// Whether a valid FINGERPRINT was present.
    pub fingerprint: bool,
    /// USERNAME (RFC 8489).
    pub username: Option<&'a str>,
    /// REALM (RFC 8489).
    pub realm: Option<&'a str>,
    /// NONCE (RFC 8489).
    pub nonce: Option<&'a str>,
    /// MESSAGE-INTEGRITY (RFC 8489), checked with [`super::integrity::verify`].
    pub integrity: Option<Integrity>,
    /// LIFETIME (RFC 8656), seconds.
    pub lifetime: Option<u32>,
    /// CHANNEL-NUMBER (RFC 8656).
    pub channel_number: Option<u16>,
    /// The first XOR-PEER-ADDRESS (RFC 8656).
    pub xor_peer_address: Option<SocketAddr>,
    /// XOR-RELAYED-ADDRESS (RFC 8656).
    pub xor_relayed_address: Option<SocketAddr>,
    /// DATA (RFC 8656).
    pub data: Option<&'a [u8]>,
    /// REQUESTED-TRANSPORT's protocol number (RFC 8656).
    pub requested_transport: Option<u8>,
    /// REQUESTED-ADDRESS-FAMILY's family byte (RFC 8656): 0x01 IPv4, 0x02 IPv6.
    pub requested_address_family: Option<u8>,
    /// EVEN-PORT (RFC 8656): whether its R bit (reserve the next port) is set.
    pub even_port: Option<bool>,
    /// Whether DONT-FRAGMENT (RFC 8656) was present.
    pub dont_fragment: bool,
    /// RESERVATION-TOKEN (RFC 8656).
    pub reservation_token: Option<[u8; 8]>,
    /// The attributes that count (up to MESSAGE-INTEGRITY), for [`Message::peer_addresses`].
    attributes: &'a [u8],
}

impl<'a> Message<'a> {
    /// The mapped address, preferring the XOR form as RFC 8489 asks.
    pub fn mapped(&self) -> Option<SocketAddr> {
        self.xor_mapped_address.or(self.mapped_address)
    }

    /// Every XOR-PEER-ADDRESS that counts, in order.
    pub fn peer_addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        let mut rest = self.attributes;
        std::iter::from_fn(move || loop {
            let [t0, t1, l0, l1, tail @ ..] = rest else {
                return None;
            };
            let len = usize::from(u16::from_be_bytes([*l0, *l1]));
            let value = tail.get(..len)?;
            rest = tail.get(len.div_ceil(4) * 4..).unwrap_or(&[]);
            if u16::from_be_bytes([*t0, *t1]) == AttributeType::XOR_PEER_ADDRESS.0 {
                if let Ok(addr) = decode_address(value, Some(&self.transaction_id)) {
                    return Some(addr);
                }
            }
        })
    }

    /// Parses one datagram. Never panics; every failure is a [`StunError`].
    pub fn parse(buf: &'a [u8]) -> Result<Self, StunError> {
        if buf.len() < HEADER_LEN {
            return Err(StunError::TooShort { len: buf.len() });
        }
        let msg_type = u16::from_be_bytes([buf[0], buf[1]]);
        if msg_type & 0xc000 != 0 {
            return Err(StunError::NotStun);
        }
        let declared = u16::from_be_bytes([buf[2], buf[3]]);
        let cookie = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        if cookie != MAGIC_COOKIE {
            return Err(StunError::BadMagicCookie { found: cookie });
        }
        if !declared.is_multiple_of(4) {
            return Err(StunError::UnalignedLength { declared });
        }
        let actual = buf.len() - HEADER_LEN;
        if usize::from(declared) != actual {
            return Err(StunError::LengthMismatch { declared, actual });
        }
        let (class, method) = split_message_type(msg_type);
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&buf[8..20]);
        let transaction_id = TransactionId(tid);

        let mut msg = Message {
            class,
            method,
            transaction_id,
            mapped_address: None,
            xor_mapped_address: None,
            software: None,
            error_code: None,
            unknown_attributes: None,
            change_request: None,
            response_origin: None,
            other_address: None,
            response_port: None,
            alternate_port: None,
            padding_len: None,
            fingerprint: false,
            username: None,
            realm: None,
            nonce: None,
            integrity: None,
            lifetime: None,
            channel_number: None,
            xor_peer_address: None,
            xor_relayed_address: None,
            data: None,
            requested_transport: None,
            requested_address_family: None,
            even_port: None,
            dont_fragment: false,
            reservation_token: None,
            attributes: &buf[HEADER_LEN..],
        };
        let mut unknown: Vec<u16> = Vec::new();
        let mut after_integrity = false;
        let mut offset = HEADER_LEN;
        while offset < buf.len() {
            if buf.len() - offset < 4 {
                // Unreachable while the length checks above hold; kept so no input can panic.
                return Err(StunError::AttributeOverrun {
                    attr_type: 0,
                    offset,
                });
            }
            let attr_type = u16::from_be_bytes([buf[offset], buf[offset + 1]]);
            let len = usize::from(u16::from_be_bytes([buf[offset + 2], buf[offset + 3]]));
            let start = offset + 4;
            let end = start + len;
            if end > buf.len() {
                return Err(StunError::AttributeOverrun { attr_type, offset });
            }
            let value = &buf[start..end];
            let bad = |reason| StunError::BadAttribute { attr_type, reason };
            let t = AttributeType(attr_type);
            // RFC 8489 14.5: attributes after MESSAGE-INTEGRITY are ignored, except FINGERPRINT.
            if !after_integrity || t == AttributeType::FINGERPRINT {
                match t {
                    AttributeType::MAPPED_ADDRESS => {
                        let addr = decode_address(value, None).map_err(bad)?;
                        msg.mapped_address.get_or_insert(addr);
                    }
                    AttributeType::XOR_MAPPED_ADDRESS => {
                        let addr = decode_address(value, Some(&transaction_id)).map_err(bad)?;
                        msg.xor_mapped_address.get_or_insert(addr);
                    }
                    AttributeType::RESPONSE_ORIGIN => {
                        let addr = decode_address(value, None).map_err(bad)?;
                        msg.response_origin.get_or_insert(addr);
                    }
                    AttributeType::OTHER_ADDRESS => {
                        let addr = decode_address(value, None).map_err(bad)?;
                        msg.other_address.get_or_insert(addr);
                    }
                    AttributeType::SOFTWARE => {
                        let text = parse_text(value).map_err(bad)?;
                        msg.software.get_or_insert(text);
                    }
                    AttributeType::ERROR_CODE => {
                        let code = parse_error_code(value).map_err(bad)?;
                        msg.error_code.get_or_insert(code);
                    }
                    AttributeType::UNKNOWN_ATTRIBUTES => {
                        if !value.len().is_multiple_of(2) {
                            return Err(bad("odd length"));
                        }
                        msg.unknown_attributes.get_or_insert(value);
                    }
                    AttributeType::CHANGE_REQUEST => {
                        let [a, b, c, d] =
                            <[u8; 4]>::try_from(value).map_err(|_| bad("length is not 4"))?;
                        let flags = u32::from_be_bytes([a, b, c, d]);
                        msg.change_request.get_or_insert(ChangeRequest {
                            ip: flags & 0x4 != 0,
                            port: flags & 0x2 != 0,
                        });
                    }
                    AttributeType::RESPONSE_PORT => {
                        // A 16-bit port followed by 2 bytes of padding; senders disagree on
                        // whether the length counts the padding, so both are accepted.
                        if value.len() != 2 && value.len() != 4 {
                            return Err(bad("length is not 2 or 4"));
                        }
                        let port = u16::from_be_bytes([value[0], value[1]]);
                        msg.response_port.get_or_insert(port);
                    }
                    AttributeType::ALTERNATE_PORT => {
                        let [a, b, _, _] =
                            <[u8; 4]>::try_from(value).map_err(|_| bad("length is not 4"))?;
                        msg.alternate_port.get_or_insert(u16::from_be_bytes([a, b]));
                    }
                    AttributeType::PADDING => {
                        msg.padding_len.get_or_insert(value.len());
                    }
                    AttributeType::FINGERPRINT => {
                        if end != buf.len() {
                            return Err(StunError::AttributeAfterFingerprint);
                        }
                        let found = <[u8; 4]>::try_from(value)
                            .map(u32::from_be_bytes)
                            .map_err(|_| bad("length is not 4"))?;
                        let expected = crc32fast::hash(&buf[..offset]) ^ FINGERPRINT_XOR;
                        if found != expected {
                            return Err(StunError::BadFingerprint { expected, found });
                        }
                        msg.fingerprint = true;
                    }
                    AttributeType::MESSAGE_INTEGRITY => {
                        let mac =
                            <[u8; 20]>::try_from(value).map_err(|_| bad("length is not 20"))?;
                        msg.integrity = Some(Integrity { offset, mac });
                        msg.attributes = &buf[HEADER_LEN..offset];
                        after_integrity = true;
                    }
                    // Understood and not checked (burrow's keys are the MD5 ones of RFC
                    // 5389): a request with only this one is answered as unauthenticated.
                    AttributeType::MESSAGE_INTEGRITY_SHA256 => {
                        msg.attributes = &buf[HEADER_LEN..offset];
                        after_integrity = true;
                    }
                    AttributeType::USERNAME => {
                        if value.len() > MAX_USERNAME_LEN {
                            return Err(bad("longer than 512 bytes"));
                        }
                        let text = std::str::from_utf8(value).map_err(|_| bad("not UTF-8"))?;
                        msg.username.get_or_insert(text);
                    }
                    AttributeType::REALM => {
                        let text = parse_text(value).map_err(bad)?;
                        msg.realm.get_or_insert(text);
                    }
                    AttributeType::NONCE => {
                        let text = parse_text(value).map_err(bad)?;
                        msg.nonce.get_or_insert(text);
                    }
                    AttributeType::LIFETIME => {
                        let v = <[u8; 4]>::try_from(value).map_err(|_| bad("length is not 4"))?;
                        msg.lifetime.get_or_insert(u32::from_be_bytes(v));
                    }
                    AttributeType::CHANNEL_NUMBER => {
                        let [a, b, _, _] =
                            <[u8; 4]>::try_from(value).map_err(|_| bad("length is not 4"))?;
                        msg.channel_number.get_or_insert(u16::from_be_bytes([a, b]));
                    }
                    AttributeType::XOR_PEER_ADDRESS => {
                        // Every occurrence is checked here, so peer_addresses() cannot fail.
                        let addr = decode_address(value, Some(&transaction_id)).map_err(bad)?;
                        msg.xor_peer_address.get_or_insert(addr);
                    }
                    AttributeType::XOR_RELAYED_ADDRESS => {
                        let addr = decode_address(value, Some(&transaction_id)).map_err(bad)?;
                        msg.xor_relayed_address.get_or_insert(addr);
                    }
                    AttributeType::DATA => {
                        msg.data.get_or_insert(value);
                    }
                    AttributeType::REQUESTED_TRANSPORT => {
                        let [p, _, _, _] =
                            <[u8; 4]>::try_from(value).map_err(|_| bad("length is not 4"))?;
                        msg.requested_transport.get_or_insert(p);
                    }
                    AttributeType::REQUESTED_ADDRESS_FAMILY => {
                        let [f, _, _, _] =
                            <[u8; 4]>::try_from(value).map_err(|_| bad("length is not 4"))?;
                        msg.requested_address_family.get_or_insert(f);
                    }
                    AttributeType::EVEN_PORT => {
                        // One byte, though some senders pad the length to 4.
                        let Some(&flags) = value.first() else {
                            return Err(bad("empty"));
                        };
                        msg.even_port.get_or_insert(flags & 0x80 != 0);
                    }
                    AttributeType::DONT_FRAGMENT => msg.dont_fragment = true,
                    AttributeType::RESERVATION_TOKEN => {
                        let token =
                            <[u8; 8]>::try_from(value).map_err(|_| bad("length is not 8"))?;
                        msg.reservation_token.get_or_insert(token);
                    }
                    // Understood, and unused: burrow's keys are MD5 only (RFC 8489 9).
                    AttributeType::PASSWORD_ALGORITHM | AttributeType::USERHASH => {}
                    t if t.is_comprehension_required()
                        && unknown.len() < MAX_UNKNOWN_REPORTED
                        && !unknown.contains(&attr_type) =>
                    {
                        unknown.push(attr_type);
                    }
                    _ => {}
                }
            }
            // Values are padded to 4 bytes; the header length is a multiple of 4, so the
            // padded end never passes the end of the buffer once `end` does not.
            offset = start + len.div_ceil(4) * 4;
        }
        if !unknown.is_empty() {
            return Err(StunError::UnknownComprehensionRequired {
                class,
                method,
                transaction_id,
                types: unknown,
            });
        }
        Ok(msg)
    }
}

fn parse_text(value: &[u8]) -> Result<&str, &'static str> {
    if value.len() > MAX_TEXT_LEN {
        return Err("text longer than 763 bytes");
    }
    std::str::from_utf8(value).map_err(|_| "text is not UTF-8")
}

fn parse_error_code(value: &[u8]) -> Result<ErrorCode<'_>, &'static str> {
    if value.len() < 4 {
        return Err("shorter than 4 bytes");
    }
    let class = u16::from(value[2] & 0x07);
    let number = u16::from(value[3]);
    if !(3..=6).contains(&class) || number > 99 {
        return Err("code outside 300..=699");
    }
    Ok(ErrorCode {
        code: class * 100 + number,
        reason: parse_text(&value[4..])?,
    })
}
