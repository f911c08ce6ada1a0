//! Node records: a node's signed statement of how to reach it, for discovery.
//!
//! A node publishes a [`NodeRecord`] (its relays, direct addresses, an optional name and
//! capabilities) to bootstrap registries and the DHT. Whoever reads one checks the signature
//! against the key it names, so registries and DHT nodes are never trusted: they can withhold a
//! record or serve an old one, but not forge one. A higher `seq` replaces a lower one.
//!
//! The payload is a compact, versioned binary body (all integers big-endian):
//!
//! ```text
//! version      u8 = 1
//! node key     32 bytes (Ed25519 public key)
//! seq          u64: higher replaces lower
//! expires      u64: unix seconds after which the record is dead
//! relay count  u8 (at most MAX_RELAYS), then per relay:
//!              u8 length + the URL exactly as RelayUrl displays it
//! addr count   u8 (at most MAX_ADDRS), then per address:
//!              u8 family (4 or 6) + 4 or 16 IP bytes + u16 port
//! name         u8 length (0 = no name) + UTF-8, at most MAX_NAME_LEN bytes
//! cap count    u8 (at most MAX_CAPABILITIES), then per capability:
//!              u8 length + printable ASCII, at most MAX_CAPABILITY_LEN bytes
//! ```
//!
//! The signed form ([`SignedRecord`]) is the payload followed by a 64-byte Ed25519 signature
//! over [`SIGNATURE_DOMAIN`] followed by the payload, and is at most [`MAX_SIGNED_LEN`]
//! (1000) bytes. The payload alone ([`NodeRecord::encode_payload`]) is for the DHT, whose BEP 44
//! mutable items are signed by the same key with BEP 44's own scheme; at most
//! [`MAX_PAYLOAD_LEN`] bytes, it stays under BEP 44's 1000-byte value limit once bencoded.
//!
//! Decoding accepts only the canonical form, so `encode(decode(b)) == b` for every accepted
//! `b`: one record has one encoding, and a signature covers exactly what is shown.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ed25519_dalek::{Signature, Signer};

use crate::identity::{NodeId, NodeIdError, SecretKey};
use crate::relay::{RelayUrl, RelayUrlError};

/// Most relays a record carries.
pub const MAX_RELAYS: usize = 4;
/// Most direct addresses a record carries.
pub const MAX_ADDRS: usize = 16;
/// Longest name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 64;
/// Most capabilities a record carries.
pub const MAX_CAPABILITIES: usize = 16;
/// Longest capability, in bytes.
pub const MAX_CAPABILITY_LEN: usize = 32;
/// Longest relay URL, in bytes (its length is one byte).
pub const MAX_RELAY_URL_LEN: usize = u8::MAX as usize;
/// Length of the Ed25519 signature that ends a signed record.
pub const SIGNATURE_LEN: usize = 64;
/// Longest signed record, signature included: fits a BEP 44 mutable item's value.
pub const MAX_SIGNED_LEN: usize = 1000;
/// Longest payload: a signed record without its signature.
pub const MAX_PAYLOAD_LEN: usize = MAX_SIGNED_LEN - SIGNATURE_LEN;
/// What a record signature covers before the payload, so that no other message signed by a
/// node key can pass as a record.
pub const SIGNATURE_DOMAIN: &[u8] = b"burrow record v1";
/// What a delete signature covers before its fields (see [`sign_delete`]).
pub const DELETE_DOMAIN: &[u8] = b"burrow record delete v1";
/// How far a delete's timestamp may be from the verifier's clock, in seconds, either way.
pub const DELETE_MAX_SKEW_SECS: u64 = 300;
/// Longest namespace name (registries list records by namespace), in bytes.
pub const MAX_NAMESPACE_LEN: usize = 64;

const VERSION: u8 = 1;

/// A node and how to reach it, as it states itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRecord {
    /// The node's key; the record must be signed by it.
    pub node_id: NodeId,
    /// Relays the node is reachable through, most preferred first.
    pub relays: Vec<RelayUrl>,
    /// Direct addresses to try, most preferred first. IPv6 flow info and scope ids are not
    /// encoded: they mean nothing to the peer.
    pub addrs: Vec<SocketAddr>,
    /// Sequence number: a record replaces another of the same node only with a higher one.
    /// A node that does not keep a counter can use the time it signs at (e.g. unix
    /// milliseconds).
    pub seq: u64,
    /// Unix time in seconds after which the record is dead.
    pub expires: u64,
    /// A human-readable name, 1 to [`MAX_NAME_LEN`] bytes without control characters.
    pub name: Option<String>,
    /// What the node offers (application-defined tags): 1 to [`MAX_CAPABILITY_LEN`] bytes of
    /// printable ASCII without spaces each.
    pub capabilities: Vec<String>,
}

/// Why bytes are not a valid record, or a record cannot be encoded, signed or accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The bytes end before the record does.
    #[error("record is truncated")]
    Truncated,
    /// Written by a newer (or unknown) version of burrow.
    #[error("record version {0} is not supported (this burrow reads version {VERSION})")]
    Version(u8),
    /// The node key is not an Ed25519 public key.
    #[error("record's node id is invalid: {0}")]
    NodeId(NodeIdError),
    /// The record is not for the node it was expected to be for.
    #[error("record is not {0}'s")]
    WrongNode(NodeId),
    /// More relays than [`MAX_RELAYS`].
    #[error("record lists {0} relays; at most {MAX_RELAYS} are allowed")]
    TooManyRelays(usize),
    /// A relay URL that does not parse.
    #[error("record has a bad relay URL: {0}")]
    Relay(RelayUrlError),
    /// A relay URL that parses but is not written the way burrow writes it.
    #[error("record's relay URL {0:?} is not in canonical form")]
    RelayNotCanonical(String),
    /// A relay URL longer than [`MAX_RELAY_URL_LEN`].
    #[error("record's relay URL is {0} bytes long; at most {MAX_RELAY_URL_LEN} are allowed")]
    RelayTooLong(usize),
    /// More addresses than [`MAX_ADDRS`].
    #[error("record lists {0} addresses; at most {MAX_ADDRS} are allowed")]
    TooManyAddrs(usize),
    /// An address family byte other than 4 or 6.
    #[error("record has an address of unknown family {0} (expected 4 or 6)")]
    AddrFamily(u8),
    /// An empty name, one longer than [`MAX_NAME_LEN`], or one with control characters or
    /// invalid UTF-8.
    #[error("record's name is invalid: {0}")]
    Name(&'static str),
    /// More capabilities than [`MAX_CAPABILITIES`].
    #[error("record lists {0} capabilities; at most {MAX_CAPABILITIES} are allowed")]
    TooManyCapabilities(usize),
    /// A capability that is empty, too long, or not printable ASCII without spaces.
    #[error("record has an invalid capability {0:?}: 1 to {MAX_CAPABILITY_LEN} printable ASCII characters, no spaces")]
    Capability(String),
    /// Bytes after the last field.
    #[error("record has {0} unexpected bytes after its fields")]
    TrailingBytes(usize),
    /// The encoding would exceed [`MAX_PAYLOAD_LEN`] (or the signed form [`MAX_SIGNED_LEN`]).
    #[error("record is {0} bytes long; the limit is {MAX_SIGNED_LEN} bytes signed, {MAX_PAYLOAD_LEN} unsigned")]
    TooLarge(usize),
    /// The signature does not verify against the record's node key.
    #[error("record signature is invalid")]
    Signature,
    /// Signing with a key other than the record's node key.
    #[error("record belongs to {record}, but the key given is {key}'s")]
    KeyMismatch {
        /// The record's node.
        record: NodeId,
        /// The signing key's node.
        key: NodeId,
    },
    /// The record's expiry time has passed.
    #[error("record expired at {expires} (now {now}, unix seconds)")]
    Expired {
        /// The record's `expires`.
        expires: u64,
        /// The time it was checked at.
        now: u64,
    },
    /// The record's `seq` is not higher than the one already held.
    #[error("record seq {seq} is not newer than the current seq {current}")]
    Stale {
        /// The offered record's seq.
        seq: u64,
        /// The seq already held.
        current: u64,
    },
    /// A delete whose timestamp is more than [`DELETE_MAX_SKEW_SECS`] from now.
    #[error("delete timestamp {timestamp} is too far from now ({now}); check the clock")]
    DeleteTimestamp {
        /// The delete's timestamp.
        timestamp: u64,
        /// The time it was checked at.
        now: u64,
    },
}

impl NodeRecord {
    /// A record with no relays, addresses, name or capabilities yet.
    pub fn new(node_id: NodeId, seq: u64, expires: u64) -> NodeRecord {
        NodeRecord {
            node_id,
            relays: Vec::new(),
            addrs: Vec::new(),
            seq,
            expires,
            name: None,
            capabilities: Vec::new(),
        }
    }

    /// The unsigned body, for a DHT that signs it by itself. Fails if a field is beyond its
    /// limit or the whole beyond [`MAX_PAYLOAD_LEN`]: a signed record must say exactly what it
    /// was given, so nothing is silently left out.
    pub fn encode_payload(&self) -> Result<Vec<u8>, RecordError> {
        if self.relays.len() > MAX_RELAYS {
            return Err(RecordError::TooManyRelays(self.relays.len()));
        }
        if self.addrs.len() > MAX_ADDRS {
            return Err(RecordError::TooManyAddrs(self.addrs.len()));
        }
        if self.capabilities.len() > MAX_CAPABILITIES {
            return Err(RecordError::TooManyCapabilities(self.capabilities.len()));
        }
        let mut out = Vec::with_capacity(128);
        out.push(VERSION);
        out.extend_from_slice(self.node_id.as_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.expires.to_be_bytes());
        out.push(self.relays.len() as u8);
        for relay in &self.relays {
            let url = relay.to_string();
            if url.len() > MAX_RELAY_URL_LEN {
                return Err(RecordError::RelayTooLong(url.len()));
            }
            out.push(url.len() as u8);
            out.extend_from_slice(url.as_bytes());
        }
        out.push(self.addrs.len() as u8);
        for addr in &self.addrs {
            crate::disco::put_addr(&mut out, addr);
        }
        match &self.name {
            None => out.push(0),
            Some(name) => {
                check_name(name.as_bytes())?;
                out.push(name.len() as u8);
                out.extend_from_slice(name.as_bytes());
            }
        }
        out.push(self.capabilities.len() as u8);
        for cap in &self.capabilities {
            check_capability(cap.as_bytes())?;
            out.push(cap.len() as u8);
            out.extend_from_slice(cap.as_bytes());
        }
        if out.len() > MAX_PAYLOAD_LEN {
            return Err(RecordError::TooLarge(out.len()));
        }
        Ok(out)
    }

    /// Decodes an unsigned body. Says nothing about who wrote it: use [`SignedRecord::decode`]
    /// for records from the network, unless the transport (a BEP 44 item) checked the
    /// signature and the key.
    pub fn decode_payload(bytes: &[u8]) -> Result<NodeRecord, RecordError> {
        NodeRecord::decode_with(bytes, |key| {
            NodeId::from_bytes(key).map_err(RecordError::NodeId)
        })
    }

    /// Decodes an unsigned body that must be `node`'s, such as a BEP 44 item under that key or
    /// a record stored after verification. Cheaper than [`NodeRecord::decode_payload`]: the key
    /// is compared with `node` instead of being checked as a curve point.
    pub fn decode_payload_for(bytes: &[u8], node: &NodeId) -> Result<NodeRecord, RecordError> {
        NodeRecord::decode_with(bytes, |key| {
            if key == node.0 {
                Ok(*node)
            } else {
                Err(RecordError::WrongNode(*node))
            }
        })
    }

    fn decode_with(
        bytes: &[u8],
        node_id: impl FnOnce([u8; 32]) -> Result<NodeId, RecordError>,
    ) -> Result<NodeRecord, RecordError> {
        if bytes.len() > MAX_PAYLOAD_LEN {
            return Err(RecordError::TooLarge(bytes.len()));
        }
        let mut r = Reader(bytes);
        let version = r.u8()?;
        if version != VERSION {
            return Err(RecordError::Version(version));
        }
        let node_id = node_id(r.array()?)?;
        let seq = u64::from_be_bytes(r.array()?);
        let expires = u64::from_be_bytes(r.array()?);

        let count = usize::from(r.u8()?);
        if count > MAX_RELAYS {
            return Err(RecordError::TooManyRelays(count));
        }
        let mut relays = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(r.u8()?);
            let raw = r.take(len)?;
            // Lossy is enough: invalid UTF-8 never equals a URL's printed form.
            let text = String::from_utf8_lossy(raw);
            let url: RelayUrl = text.parse().map_err(RecordError::Relay)?;
            if url.to_string().as_bytes() != raw {
                return Err(RecordError::RelayNotCanonical(text.into_owned()));
            }
            relays.push(url);
        }

        let count = usize::from(r.u8()?);
        if count > MAX_ADDRS {
            return Err(RecordError::TooManyAddrs(count));
        }
        let mut addrs = Vec::with_capacity(count);
        for _ in 0..count {
            let ip = match r.u8()? {
                4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)),
                6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)),
                family => return Err(RecordError::AddrFamily(family)),
            };
            let port = u16::from_be_bytes(r.array()?);
            addrs.push(SocketAddr::new(ip, port));
        }

        let len = usize::from(r.u8()?);
        let name = if len == 0 {
            None
        } else {
            let raw = r.take(len)?;
            check_name(raw)?;
            Some(String::from_utf8(raw.to_vec()).map_err(|_| RecordError::Name("not UTF-8"))?)
        };

        let count = usize::from(r.u8()?);
        if count > MAX_CAPABILITIES {
            return Err(RecordError::TooManyCapabilities(count));
        }
        let mut capabilities = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(r.u8()?);
            let raw = r.take(len)?;
            check_capability(raw)?;
            // check_capability allows only ASCII.
            capabilities.push(String::from_utf8_lossy(raw).into_owned());
        }

        if !r.0.is_empty() {
            return Err(RecordError::TrailingBytes(r.0.len()));
        }
        Ok(NodeRecord {
            node_id,
            relays,
            addrs,
            seq,
            expires,
            name,
            capabilities,
        })
    }

    /// Signs the record with the node's key. Fails if `key` is not this record's node or the
    /// record does not encode.
    pub fn sign(&self, key: &SecretKey) -> Result<SignedRecord, RecordError> {
        if key.node_id() != self.node_id {
            return Err(RecordError::KeyMismatch {
                record: self.node_id,
                key: key.node_id(),
            });
        }
        let mut bytes = self.encode_payload()?;
        let signature = key.signing_key().sign(&signed_message(&bytes));
        bytes.extend_from_slice(&signature.to_bytes());
        // Decoded back, so the record held is exactly what the bytes say (scope ids dropped).
        let record = NodeRecord::decode_payload(&bytes[..bytes.len() - SIGNATURE_LEN])?;
        Ok(SignedRecord { record, bytes })
    }

    /// Whether the record is dead at `now` (unix seconds): strictly after `expires`.
    pub fn is_expired(&self, now: u64) -> bool {
        now > self.expires
    }

    /// Whether this record replaces `other`: the same node with a higher `seq`.
    pub fn supersedes(&self, other: &NodeRecord) -> bool {
        self.node_id == other.node_id && self.seq > other.seq
    }

    /// [`RecordError::Stale`] unless this record's `seq` is higher than `current`, the seq of
    /// the record already held for the node.
    pub fn check_newer_than(&self, current: u64) -> Result<(), RecordError> {
        if self.seq > current {
            Ok(())
        } else {
            Err(RecordError::Stale {
                seq: self.seq,
                current,
            })
        }
    }
}

/// A record with a valid signature by its own node key: a value of this type is always
/// authentic (it is built only by signing or by [`SignedRecord::decode`]), though it may have
/// expired since.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRecord {
    record: NodeRecord,
    bytes: Vec<u8>,
}

impl SignedRecord {
    /// Decodes a signed record and checks its signature against the key it names. Does not
    /// look at the time; see [`SignedRecord::verify`].
    pub fn decode(bytes: &[u8]) -> Result<SignedRecord, RecordError> {
        if bytes.len() > MAX_SIGNED_LEN {
            return Err(RecordError::TooLarge(bytes.len()));
        }
        let (payload, signature) = bytes
            .split_last_chunk::<SIGNATURE_LEN>()
            .ok_or(RecordError::Truncated)?;
        let record = NodeRecord::decode_payload(payload)?;
        let key = record
            .node_id
            .verifying_key()
            .ok_or(RecordError::Signature)?;
        // Strict: no small-order keys or non-canonical signatures, so one record has one
        // valid signature.
        key.verify_strict(&signed_message(payload), &Signature::from_bytes(signature))
            .map_err(|_| RecordError::Signature)?;
        Ok(SignedRecord {
            record,
            bytes: bytes.to_vec(),
        })
    }

    /// Decodes a signed record, checks its signature, and checks that it has not expired at
    /// `now` (unix seconds): what a registry or a reader does with a record from the network.
    pub fn verify(bytes: &[u8], now: u64) -> Result<SignedRecord, RecordError> {
        let signed = SignedRecord::decode(bytes)?;
        if signed.record.is_expired(now) {
            return Err(RecordError::Expired {
                expires: signed.record.expires,
                now,
            });
        }
        Ok(signed)
    }

    /// The record.
    pub fn record(&self) -> &NodeRecord {
        &self.record
    }

    /// The node that signed it.
    pub fn node_id(&self) -> NodeId {
        self.record.node_id
    }

    /// The signed encoding: payload then signature.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The signed encoding, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The unsigned payload inside the signed encoding.
    pub fn payload(&self) -> &[u8] {
        &self.bytes[..self.bytes.len() - SIGNATURE_LEN]
    }
}

/// The message a record signature covers.
fn signed_message(payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNATURE_DOMAIN.len() + payload.len());
    m.extend_from_slice(SIGNATURE_DOMAIN);
    m.extend_from_slice(payload);
    m
}

/// The message a delete signature covers.
fn delete_message(node_id: &NodeId, seq: u64, timestamp: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(DELETE_DOMAIN.len() + 48);
    m.extend_from_slice(DELETE_DOMAIN);
    m.extend_from_slice(node_id.as_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&timestamp.to_be_bytes());
    m
}

/// Signs a request to delete the node's records with `seq` or lower, made at `timestamp` (unix
/// seconds). A registry accepts it only within [`DELETE_MAX_SKEW_SECS`] of its own clock, and
/// only for a stored record whose seq is at most `seq`, so an old delete cannot remove a newer
/// record.
pub fn sign_delete(key: &SecretKey, seq: u64, timestamp: u64) -> [u8; SIGNATURE_LEN] {
    key.signing_key()
        .sign(&delete_message(&key.node_id(), seq, timestamp))
        .to_bytes()
}

/// Checks a delete signed by [`sign_delete`]: the signature by `node_id` over `seq` and
/// `timestamp`, and the timestamp within [`DELETE_MAX_SKEW_SECS`] of `now`.
pub fn verify_delete(
    node_id: &NodeId,
    seq: u64,
    timestamp: u64,
    signature: &[u8],
    now: u64,
) -> Result<(), RecordError> {
    let signature: &[u8; SIGNATURE_LEN] =
        signature.try_into().map_err(|_| RecordError::Signature)?;
    let key = node_id.verifying_key().ok_or(RecordError::Signature)?;
    key.verify_strict(
        &delete_message(node_id, seq, timestamp),
        &Signature::from_bytes(signature),
    )
    .map_err(|_| RecordError::Signature)?;
    if timestamp.abs_diff(now) > DELETE_MAX_SKEW_SECS {
        return Err(RecordError::DeleteTimestamp { timestamp, now });
    }
    Ok(())
}

/// Whether `name` is a valid namespace: 1 to [`MAX_NAMESPACE_LEN`] characters of
/// `A-Z a-z 0-9 . _ - :`, so it needs no escaping in a URL path.
pub fn is_valid_namespace(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAMESPACE_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

fn check_name(raw: &[u8]) -> Result<(), RecordError> {
    if raw.is_empty() {
        return Err(RecordError::Name("empty (leave it out instead)"));
    }
    check_label(raw).map_err(RecordError::Name)
}

/// Why `raw` is not a name shown to people (a node's, a mesh member's, a mesh's): at most
/// [`MAX_NAME_LEN`] bytes of UTF-8 without control characters. Emptiness is the caller's rule.
pub(crate) fn check_label(raw: &[u8]) -> Result<(), &'static str> {
    if raw.len() > MAX_NAME_LEN {
        return Err("longer than 64 bytes");
    }
    let text = std::str::from_utf8(raw).map_err(|_| "not UTF-8")?;
    if text.chars().any(char::is_control) {
        return Err("has control characters");
    }
    Ok(())
}

fn check_capability(raw: &[u8]) -> Result<(), RecordError> {
    if raw.is_empty()
        || raw.len() > MAX_CAPABILITY_LEN
        || !raw.iter().all(|b| (0x21..=0x7e).contains(b))
    {
        return Err(RecordError::Capability(
            String::from_utf8_lossy(raw).into_owned(),
        ));
    }
    Ok(())
}

/// Reads the payload front to back; running out is [`RecordError::Truncated`].
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
}

#[cfg(test)]
mod tests;
