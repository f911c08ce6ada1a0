//! Proving a key to the relay: the client signs the server's fresh challenge.

use ed25519_dalek::{Signature, Signer};

use super::{Frame, PROTOCOL_VERSION};
use crate::identity::{NodeId, SecretKey};

/// Domain separation, so a relay signature can never be replayed as any other burrow signature.
const DOMAIN: &[u8] = b"burrow relay auth v1\0";

/// Why a ClientAuth was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The client speaks another protocol version.
    #[error("unsupported protocol version {0} (this relay speaks {PROTOCOL_VERSION})")]
    Version(u8),
    /// The claimed key is not an Ed25519 public key.
    #[error("the claimed node id is not an Ed25519 public key")]
    BadKey,
    /// The signature does not verify for the claimed key.
    #[error("signature does not match the claimed node id")]
    BadSignature,
}

/// The bytes a client signs: domain, challenge and its own key.
pub fn signed_message(challenge: &[u8; 32], node_id: &NodeId) -> [u8; 21 + 64] {
    let mut m = [0u8; 21 + 64];
    m[..21].copy_from_slice(DOMAIN);
    m[21..53].copy_from_slice(challenge);
    m[53..].copy_from_slice(node_id.as_bytes());
    m
}

/// The client's answer to a challenge.
pub fn client_auth(key: &SecretKey, challenge: &[u8; 32]) -> Frame<'static> {
    let node_id = key.node_id();
    let signature = key
        .signing_key()
        .sign(&signed_message(challenge, &node_id))
        .to_bytes();
    Frame::ClientAuth {
        version: PROTOCOL_VERSION,
        node_id,
        signature,
    }
}

/// Checks a ClientAuth against the challenge this connection was sent.
pub fn verify(
    challenge: &[u8; 32],
    version: u8,
    node_id: &NodeId,
    signature: &[u8; 64],
) -> Result<(), AuthError> {
    if version != PROTOCOL_VERSION {
        return Err(AuthError::Version(version));
    }
    let key = node_id.verifying_key().ok_or(AuthError::BadKey)?;
    key.verify_strict(
        &signed_message(challenge, node_id),
        &Signature::from_bytes(signature),
    )
    .map_err(|_| AuthError::BadSignature)
}
