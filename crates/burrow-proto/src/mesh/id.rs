//! A mesh's identity: its mesh key's public half.
//!
//! The id *is* the Ed25519 public key, not a hash of it: every certificate, roster and invite
//! is verified against that key, so whoever holds the id can check them all with nothing else
//! to fetch, and an invite needs to carry the key only once. A hash would save nothing (a
//! 32-byte hash is as long as the key; a shorter one could collide) and would add a key to
//! look up and match. The text form is the one [`NodeId`] uses: 52 lowercase base32
//! characters.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::VerifyingKey;

use crate::identity::{NodeId, NodeIdError, SecretKey};

/// A mesh's identity: the public half of its mesh key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MeshId(NodeId);

/// Why a string is not a mesh id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mesh id is invalid")]
pub struct MeshIdError(#[source] pub NodeIdError);

impl MeshId {
    /// The mesh whose key this is.
    pub fn of(mesh_key: &SecretKey) -> MeshId {
        MeshId(mesh_key.node_id())
    }

    /// Checks that the bytes are an Ed25519 public key.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<MeshId, NodeIdError> {
        NodeId::from_bytes(bytes).map(MeshId)
    }

    /// The public key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// A short prefix for logs.
    pub fn short(&self) -> String {
        self.0.short()
    }

    /// The key that signs for the mesh (always a valid point: ids are checked when made).
    pub(crate) fn verifying_key(&self) -> Option<VerifyingKey> {
        self.0.verifying_key()
    }
}

impl fmt::Display for MeshId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for MeshId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MeshId({})", self.short())
    }
}

impl FromStr for MeshId {
    type Err = MeshIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(MeshId).map_err(MeshIdError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_errors_are_clear() {
        let key = SecretKey::from_bytes([3; 32]);
        let id = MeshId::of(&key);
        assert_eq!(id.as_bytes(), key.node_id().as_bytes());
        let text = id.to_string();
        assert_eq!(text.len(), 52);
        assert_eq!(text.parse::<MeshId>(), Ok(id));
        assert_eq!(
            format!(" {} ", text.to_uppercase()).parse::<MeshId>(),
            Ok(id)
        );
        assert_eq!(MeshId::from_bytes(*id.as_bytes()), Ok(id));

        let e = "aaaaaaaa".parse::<MeshId>().unwrap_err();
        assert_eq!(e, MeshIdError(NodeIdError::Length(5)));
        assert_eq!(e.to_string(), "mesh id is invalid");
        let source = std::error::Error::source(&e).unwrap().to_string();
        assert!(source.contains("32 bytes"), "{source}");
        assert!(matches!(
            "not base32!".parse::<MeshId>(),
            Err(MeshIdError(NodeIdError::Encoding(_)))
        ));
        assert_eq!(MeshId::from_bytes([2; 32]), Err(NodeIdError::NotAKey));
        assert!(format!("{id:?}").starts_with("MeshId("));
    }
}
