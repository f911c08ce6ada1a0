//! A mesh's identity: its mesh key's public half.
//!
//! The id *is* the Ed25519 public key, not a hash of it: every certificate, roster and invite
//! is verified against that key, so whoever holds the id can check them all with nothing else
//! to fetch, and an invite needs to carry the key only once. A hash would save nothing (a
//! 32-byte hash is as long as the key; a shorter one could collide) and would add a key to
//! look up and match. The text form is the one [`NodeId`] uses: 52 lowercase base32
//! characters.
//!
//! The id is not published: it travels in invites, and in certificates and rosters on mesh
//! connections only. So it keys what members announce on the LAN ([`MeshId::lan_tag`]), which
//! lets members find each other there while someone who knows only a node's id (its ticket,
//! say) cannot tell which announcement is that node's.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::VerifyingKey;

use crate::identity::{NodeId, NodeIdError, SecretKey};

/// What a LAN tag's HMAC covers before the node id.
const LAN_TAG_DOMAIN: &[u8] = b"burrow mesh lan tag v1";
/// Bytes in a [`MeshId::lan_tag`].
pub const LAN_TAG_LEN: usize = 16;

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

    /// The name member `node` announces itself under on the LAN: HMAC-SHA256, keyed by the
    /// mesh id, of a domain string and the node id, cut to [`LAN_TAG_LEN`] bytes. Members
    /// compute it for every member of their roster; without the mesh id it is a random-looking
    /// name that a node id cannot be matched to. It does not change, so a watcher of the LAN can
    /// tell that the same (unknown) node announced itself again.
    pub fn lan_tag(&self, node: &NodeId) -> [u8; LAN_TAG_LEN] {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.as_bytes());
        let mut ctx = ring::hmac::Context::with_key(&key);
        ctx.update(LAN_TAG_DOMAIN);
        ctx.update(node.as_bytes());
        let mut tag = [0; LAN_TAG_LEN];
        tag.copy_from_slice(&ctx.sign().as_ref()[..LAN_TAG_LEN]);
        tag
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

    #[test]
    fn lan_tags_differ_per_mesh_and_node_and_hide_the_node_id() {
        let mesh = MeshId::of(&SecretKey::from_bytes([3; 32]));
        let other_mesh = MeshId::of(&SecretKey::from_bytes([4; 32]));
        let (a, b) = (
            SecretKey::from_bytes([5; 32]).node_id(),
            SecretKey::from_bytes([6; 32]).node_id(),
        );
        assert_eq!(mesh.lan_tag(&a), mesh.lan_tag(&a), "members agree on it");
        assert_ne!(mesh.lan_tag(&a), mesh.lan_tag(&b));
        assert_ne!(mesh.lan_tag(&a), other_mesh.lan_tag(&a));
        // Neither the node id nor the mesh id shows through.
        let tag = mesh.lan_tag(&a);
        assert!(!a
            .as_bytes()
            .windows(4)
            .any(|w| tag.windows(4).any(|t| t == w)));
        assert!(!mesh
            .as_bytes()
            .windows(4)
            .any(|w| tag.windows(4).any(|t| t == w)));
    }
}
