//! Writing STUN messages into a reusable buffer.

use std::net::SocketAddr;

use crate::text::truncate;

use super::attribute::{address_len, encode_address, AttributeType};
use super::integrity;
use super::{
    message_type, Class, Method, TransactionId, FINGERPRINT_XOR, HEADER_LEN, MAGIC_COOKIE,
};

/// Builds one STUN message in a caller-owned buffer, so a server reuses one allocation.
pub struct MessageWriter<'b> {
    buf: &'b mut Vec<u8>,
    transaction_id: TransactionId,
}

impl<'b> MessageWriter<'b> {
    /// Clears `buf` and writes the header of a new message.
    pub fn new(
        buf: &'b mut Vec<u8>,
        class: Class,
        method: Method,
        transaction_id: TransactionId,
    ) -> Self {
        buf.clear();
        buf.extend_from_slice(&message_type(class, method).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&transaction_id.0);
        MessageWriter {
            buf,
            transaction_id,
        }
    }

    fn header(&mut self, attr: AttributeType, len: usize) {
        debug_assert!(len <= usize::from(u16::MAX));
        self.buf.extend_from_slice(&attr.0.to_be_bytes());
        self.buf.extend_from_slice(&(len as u16).to_be_bytes());
    }

    fn pad(&mut self) {
        let padded = self.buf.len().div_ceil(4) * 4;
        self.buf.resize(padded, 0);
    }

    fn address(&mut self, attr: AttributeType, addr: SocketAddr, xor: bool) -> &mut Self {
        self.header(attr, address_len(addr));
        let tid = self.transaction_id;
        encode_address(self.buf, addr, xor.then_some(&tid));
        self
    }

    /// Adds XOR-MAPPED-ADDRESS.
    pub fn xor_mapped_address(&mut self, addr: SocketAddr) -> &mut Self {
        self.address(AttributeType::XOR_MAPPED_ADDRESS, addr, true)
    }

    /// Adds MAPPED-ADDRESS, for RFC 3489-era clients.
    pub fn mapped_address(&mut self, addr: SocketAddr) -> &mut Self {
        self.address(AttributeType::MAPPED_ADDRESS, addr, false)
    }

    /// Adds RESPONSE-ORIGIN (RFC 5780).
    pub fn response_origin(&mut self, addr: SocketAddr) -> &mut Self {
        self.address(AttributeType::RESPONSE_ORIGIN, addr, false)
    }

    /// Adds OTHER-ADDRESS (RFC 5780).
    pub fn other_address(&mut self, addr: SocketAddr) -> &mut Self {
        self.address(AttributeType::OTHER_ADDRESS, addr, false)
    }

    /// Adds CHANGE-REQUEST (RFC 5780).
    pub fn change_request(&mut self, ip: bool, port: bool) -> &mut Self {
        self.header(AttributeType::CHANGE_REQUEST, 4);
        let flags = (u32::from(ip) << 2) | (u32::from(port) << 1);
        self.buf.extend_from_slice(&flags.to_be_bytes());
        self
    }

    /// A 16-bit port and 2 bytes of padding.
    fn port(&mut self, attr: AttributeType, port: u16) -> &mut Self {
        self.header(attr, 4);
        self.buf.extend_from_slice(&port.to_be_bytes());
        self.buf.extend_from_slice(&[0, 0]);
        self
    }

    /// Adds RESPONSE-PORT (RFC 5780).
    pub fn response_port(&mut self, port: u16) -> &mut Self {
        self.port(AttributeType::RESPONSE_PORT, port)
    }

    /// Adds burrow's ALTERNATE-PORT ([`AttributeType::ALTERNATE_PORT`]).
    pub fn alternate_port(&mut self, port: u16) -> &mut Self {
        self.port(AttributeType::ALTERNATE_PORT, port)
    }

    /// Adds PADDING of `len` zero bytes (RFC 5780), capped at what one message can carry.
    pub fn padding(&mut self, len: usize) -> &mut Self {
        // Leave room for this attribute's header and a FINGERPRINT within the 16-bit length.
        let room = 65_532usize.saturating_sub(self.buf.len() - HEADER_LEN + 4 + 8);
        let len = len.min(room);
        let len = len - len % 4;
        self.header(AttributeType::PADDING, len);
        self.buf.resize(self.buf.len() + len, 0);
        self
    }

    /// Adds SOFTWARE, truncated at a character boundary to the 763 bytes RFC 8489 allows.
    pub fn software(&mut self, text: &str) -> &mut Self {
        self.bytes(AttributeType::SOFTWARE, truncate(text, 763).as_bytes())
    }

    /// Adds ERROR-CODE. `code` must be 300..=699.
    pub fn error_code(&mut self, code: u16, reason: &str) -> &mut Self {
        let reason = truncate(reason, 763);
        self.header(AttributeType::ERROR_CODE, 4 + reason.len());
        self.buf
            .extend_from_slice(&[0, 0, (code / 100) as u8 & 0x07, (code % 100) as u8]);
        self.buf.extend_from_slice(reason.as_bytes());
        self.pad();
        self
    }

    /// Adds XOR-RELAYED-ADDRESS (RFC 8656).
    pub fn xor_relayed_address(&mut self, addr: SocketAddr) -> &mut Self {
        self.address(AttributeType::XOR_RELAYED_ADDRESS, addr, true)
    }

    /// Adds XOR-PEER-ADDRESS (RFC 8656).
    pub fn xor_peer_address(&mut self, addr: SocketAddr) -> &mut Self {
        self.address(AttributeType::XOR_PEER_ADDRESS, addr, true)
    }

    fn bytes(&mut self, attr: AttributeType, value: &[u8]) -> &mut Self {
        self.header(attr, value.len());
        self.buf.extend_from_slice(value);
        self.pad();
        self
    }

    /// Adds USERNAME, truncated at a character boundary to the 512 bytes RFC 8489 allows.
    pub fn username(&mut self, name: &str) -> &mut Self {
        self.bytes(AttributeType::USERNAME, truncate(name, 512).as_bytes())
    }

    /// Adds REALM, truncated as SOFTWARE is.
    pub fn realm(&mut self, realm: &str) -> &mut Self {
        self.bytes(AttributeType::REALM, truncate(realm, 763).as_bytes())
    }

    /// Adds NONCE, truncated as SOFTWARE is.
    pub fn nonce(&mut self, nonce: &str) -> &mut Self {
        self.bytes(AttributeType::NONCE, truncate(nonce, 763).as_bytes())
    }

    /// Adds DATA (RFC 8656), at most what one message can carry.
    pub fn data(&mut self, data: &[u8]) -> &mut Self {
        let room = 65_532usize.saturating_sub(self.buf.len() - HEADER_LEN + 4);
        self.bytes(AttributeType::DATA, &data[..data.len().min(room)])
    }

    /// Adds LIFETIME (RFC 8656), seconds.
    pub fn lifetime(&mut self, secs: u32) -> &mut Self {
        self.bytes(AttributeType::LIFETIME, &secs.to_be_bytes())
    }

    /// Adds CHANNEL-NUMBER (RFC 8656).
    pub fn channel_number(&mut self, channel: u16) -> &mut Self {
        let [a, b] = channel.to_be_bytes();
        self.bytes(AttributeType::CHANNEL_NUMBER, &[a, b, 0, 0])
    }

    /// Adds REQUESTED-TRANSPORT (RFC 8656) for IP protocol `protocol` (17 is UDP).
    pub fn requested_transport(&mut self, protocol: u8) -> &mut Self {
        self.bytes(AttributeType::REQUESTED_TRANSPORT, &[protocol, 0, 0, 0])
    }

    /// Adds REQUESTED-ADDRESS-FAMILY (RFC 8656): 0x01 IPv4, 0x02 IPv6.
    pub fn requested_address_family(&mut self, family: u8) -> &mut Self {
        self.bytes(AttributeType::REQUESTED_ADDRESS_FAMILY, &[family, 0, 0, 0])
    }

    /// Adds EVEN-PORT (RFC 8656), asking to reserve the next port too if `reserve`.
    pub fn even_port(&mut self, reserve: bool) -> &mut Self {
        self.bytes(AttributeType::EVEN_PORT, &[u8::from(reserve) << 7])
    }

    /// Adds DONT-FRAGMENT (RFC 8656).
    pub fn dont_fragment(&mut self) -> &mut Self {
        self.bytes(AttributeType::DONT_FRAGMENT, &[])
    }

    /// Adds RESERVATION-TOKEN (RFC 8656).
    pub fn reservation_token(&mut self, token: [u8; 8]) -> &mut Self {
        self.bytes(AttributeType::RESERVATION_TOKEN, &token)
    }

    /// Adds UNKNOWN-ATTRIBUTES listing `types`.
    pub fn unknown_attributes(&mut self, types: &[u16]) -> &mut Self {
        self.header(AttributeType::UNKNOWN_ATTRIBUTES, types.len() * 2);
        for t in types {
            self.buf.extend_from_slice(&t.to_be_bytes());
        }
        self.pad();
        self
    }

    fn set_length(&mut self, attrs_len: usize) {
        let len = (attrs_len as u16).to_be_bytes();
        self.buf[2..4].copy_from_slice(&len);
    }

    /// Writes the final length into the header.
    pub fn finish(mut self) {
        let len = self.buf.len() - HEADER_LEN;
        self.set_length(len);
    }

    /// Appends MESSAGE-INTEGRITY made with `key` (RFC 8489 14.5), then FINGERPRINT if
    /// `fingerprint`, and writes the final length.
    pub fn finish_with_integrity(mut self, key: &[u8], fingerprint: bool) {
        let offset = self.buf.len();
        let mac = integrity::compute(self.buf, offset, key);
        self.header(AttributeType::MESSAGE_INTEGRITY, mac.len());
        self.buf.extend_from_slice(&mac);
        if fingerprint {
            self.finish_with_fingerprint();
        } else {
            self.finish();
        }
    }

    /// Appends FINGERPRINT and writes the final length.
    pub fn finish_with_fingerprint(mut self) {
        let len = self.buf.len() - HEADER_LEN + 8;
        self.set_length(len);
        let crc = crc32fast::hash(self.buf) ^ FINGERPRINT_XOR;
        self.header(AttributeType::FINGERPRINT, 4);
        self.buf.extend_from_slice(&crc.to_be_bytes());
    }
}
