//! Node identity: a node is its Ed25519 public key.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use data_encoding::BASE32_NOPAD;
use ed25519_dalek::{SigningKey, VerifyingKey};

/// A node's identity: its Ed25519 public key, shown as 52 lowercase base32 characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub(crate) [u8; 32]);

/// Why a string or byte string is not a NodeId.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeIdError {
    /// Not base32.
    #[error("node id is not base32: {0}")]
    Encoding(String),
    /// Wrong number of bytes.
    #[error("node id must be 32 bytes, got {0}")]
    Length(usize),
    /// Not a valid Ed25519 point.
    #[error("node id is not a valid Ed25519 public key")]
    NotAKey,
}

impl NodeId {
    /// The raw public key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Checks that the bytes are an Ed25519 public key.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, NodeIdError> {
        VerifyingKey::from_bytes(&bytes).map_err(|_| NodeIdError::NotAKey)?;
        Ok(NodeId(bytes))
    }

    /// The key, for verifying signatures. `None` for ids taken unchecked from relay frames
    /// that are not curve points (such an id can never authenticate).
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        VerifyingKey::from_bytes(&self.0).ok()
    }

    /// A short prefix for logs.
    pub fn short(&self) -> String {
        self.to_string()[..10].to_string()
    }

    /// The 32 key bytes of a node id's text form, without checking that they are an Ed25519
    /// point (which costs a point decompression): for looking a key up among ids that were
    /// checked when they were stored. Use [`FromStr`] for anything else.
    pub fn text_to_bytes(s: &str) -> Result<[u8; 32], NodeIdError> {
        let bytes = BASE32_NOPAD
            .decode(s.trim().to_ascii_uppercase().as_bytes())
            .map_err(|e| NodeIdError::Encoding(e.to_string()))?;
        bytes
            .as_slice()
            .try_into()
            .map_err(|_| NodeIdError::Length(bytes.len()))
    }
}

/// Maps keyed by NodeId can be searched with bare key bytes (same `Hash` and `Eq`).
impl Borrow<[u8; 32]> for NodeId {
    fn borrow(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE32_NOPAD.encode(&self.0).to_ascii_lowercase())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

impl FromStr for NodeId {
    type Err = NodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeId::from_bytes(NodeId::text_to_bytes(s)?)
    }
}

/// A node's secret key. Debug output never shows the secret.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// Wraps 32 secret bytes (an Ed25519 seed).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SecretKey(SigningKey::from_bytes(&bytes))
    }

    /// The 32 secret bytes, for storing.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The node this key speaks for.
    pub fn node_id(&self) -> NodeId {
        NodeId(self.0.verifying_key().to_bytes())
    }

    /// The signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(for {})", self.node_id().short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_round_trips_through_text() {
        let key = SecretKey::from_bytes([7; 32]);
        let id = key.node_id();
        let text = id.to_string();
        assert_eq!(text.len(), 52);
        assert!(text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        assert_eq!(text.parse::<NodeId>().unwrap(), id);
        assert_eq!(text.to_uppercase().parse::<NodeId>().unwrap(), id);
    }

    #[test]
    fn bad_node_ids_are_clear_errors() {
        assert!(matches!(
            "not base32!".parse::<NodeId>(),
            Err(NodeIdError::Encoding(_))
        ));
        assert!(matches!(
            "aaaa".parse::<NodeId>(),
            Err(NodeIdError::Encoding(_)) | Err(NodeIdError::Length(_))
        ));
        assert!(matches!(
            "aaaaaaaa".parse::<NodeId>(),
            Err(NodeIdError::Length(5))
        ));
        assert!(!format!("{:?}", SecretKey::from_bytes([1; 32])).contains("0101"));
    }

    #[test]
    fn text_to_bytes_skips_only_the_point_check() {
        let id = SecretKey::from_bytes([7; 32]).node_id();
        assert_eq!(NodeId::text_to_bytes(&id.to_string()), Ok(*id.as_bytes()));
        let not_a_point = NodeId([2; 32]).to_string();
        assert_eq!(NodeId::text_to_bytes(&not_a_point), Ok([2; 32]));
        assert_eq!(not_a_point.parse::<NodeId>(), Err(NodeIdError::NotAKey));
        assert_eq!(
            NodeId::text_to_bytes("aaaaaaaa"),
            Err(NodeIdError::Length(5))
        );
        let mut map = std::collections::HashMap::new();
        map.insert(id, 1);
        assert_eq!(map.get(id.as_bytes()), Some(&1));
    }
}
