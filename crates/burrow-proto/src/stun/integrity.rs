//! MESSAGE-INTEGRITY (RFC 8489 14.5): HMAC-SHA1 over the message up to the attribute, with
//! the header's length counting up to the attribute's end, keyed with the long-term key
//! (`MD5(username ":" realm ":" password)`, see [`long_term_key`]).

use ring::hmac;

use super::message::Message;
use super::HEADER_LEN;

/// Length of a MESSAGE-INTEGRITY attribute, header included.
pub(crate) const ATTRIBUTE_LEN: usize = 24;

/// The long-term credential key of RFC 8489 9.2.2: MD5 of `username:realm:password`. (The
/// password's OpaqueString preparation is the identity for the ASCII passwords that TURN REST
/// credentials and configured users have.)
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    use md5::Digest;
    let mut md5 = md5::Md5::new();
    for (i, part) in [username, realm, password].into_iter().enumerate() {
        if i > 0 {
            md5.update(b":");
        }
        md5.update(part.as_bytes());
    }
    md5.finalize().into()
}

/// The HMAC over `packet[..offset]` as if the header's length ended the message with a
/// MESSAGE-INTEGRITY attribute at `offset`.
pub(crate) fn compute(packet: &[u8], offset: usize, key: &[u8]) -> [u8; 20] {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let mut ctx = hmac::Context::with_key(&key);
    let len = (offset + ATTRIBUTE_LEN - HEADER_LEN) as u16;
    ctx.update(&packet[..2]);
    ctx.update(&len.to_be_bytes());
    ctx.update(&packet[4..offset]);
    let mut mac = [0u8; 20];
    mac.copy_from_slice(ctx.sign().as_ref());
    mac
}

/// Whether `msg` (parsed from `packet`) carries a MESSAGE-INTEGRITY that `key` produced.
/// Compared in constant time, so a forger learns nothing from how long a guess took.
pub fn verify(packet: &[u8], msg: &Message<'_>, key: &[u8]) -> bool {
    let Some(integrity) = msg.integrity else {
        return false;
    };
    if integrity.offset > packet.len() || integrity.offset < HEADER_LEN {
        return false;
    }
    let mac = compute(packet, integrity.offset, key);
    mac.iter()
        .zip(integrity.mac)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}
