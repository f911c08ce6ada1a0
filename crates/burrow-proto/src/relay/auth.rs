//! Proving a key to the relay: the client signs the server's fresh challenge and the URL of the
//! relay it dialled.
//!
//! The URL binds the signature to one relay. Without it, a hostile relay in a node's list (a
//! ticket or an unsigned hint can put one there) could hand the node another relay's challenge,
//! pass the signature on, and hold a session at that other relay as the node: its relayed
//! traffic, and its place. Signed for the hostile relay's URL, the signature is worthless
//! anywhere else, since every relay checks that the URL is one of its own ([`OwnUrls`]).
//!
//! The URL rather than a TLS exporter (a secret of the TLS session, as in RFC 9266): relays
//! often sit behind a TLS-terminating reverse proxy, which ends the client's TLS session before
//! the relay, and browsers cannot read an exporter at all. The URL works in both cases. What it
//! does not stop is an attacker on the path of a plain `http://` relay, who sees and forwards
//! the session anyway; `https://` relays stop that one with TLS.

use std::fmt;

use ed25519_dalek::{Signature, Signer};

use super::{Frame, RelayUrl, RelayUrlError, PROTOCOL_VERSION};
use crate::identity::{NodeId, SecretKey};

/// Domain separation, so a relay signature can never be replayed as any other burrow signature
/// (nor as version 1's, which signed no URL).
const DOMAIN: &[u8] = b"burrow relay auth v2\0";

/// The URLs a relay answers to: a ClientAuth signed for any other is refused. Its display
/// names them, for the refusal.
pub trait OwnUrls: fmt::Display + fmt::Debug + Send + Sync {
    /// Whether a client that dialled `url` has reached this relay.
    fn accepts(&self, url: &RelayUrl) -> bool;
}

/// A relay with one URL.
impl OwnUrls for RelayUrl {
    fn accepts(&self, url: &RelayUrl) -> bool {
        self == url
    }
}

/// Why a ClientAuth was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The client speaks another protocol version.
    #[error("unsupported protocol version {0} (this relay speaks {PROTOCOL_VERSION})")]
    Version(u8),
    /// The claimed key is not an Ed25519 public key.
    #[error("the claimed node id is not an Ed25519 public key")]
    BadKey,
    /// The relay URL in the ClientAuth is not one.
    #[error("the ClientAuth's relay URL is invalid")]
    BadUrl(#[source] RelayUrlError),
    /// The signature does not verify for the claimed key.
    #[error("signature does not match the claimed node id")]
    BadSignature,
    /// A genuine signature, for another relay: passed on by that relay, or the client
    /// reached this one at a URL that its operator has not declared.
    #[error("signed for {signed_for}, which is not this relay ({own})")]
    WrongRelay {
        /// The URL the client signed for.
        signed_for: RelayUrl,
        /// This relay's URLs, as [`OwnUrls`] displays them.
        own: String,
    },
    /// A genuine login of a key this relay does not admit: it admits only the devices its
    /// operator enrolled.
    #[error("this relay admits only the keys enrolled with it, and this one is not")]
    NotEnrolled,
}

/// The bytes a client signs: domain, challenge, its own key and the relay's URL.
pub fn signed_message(challenge: &[u8; 32], node_id: &NodeId, relay_url: &str) -> Vec<u8> {
    [DOMAIN, challenge, node_id.as_bytes(), relay_url.as_bytes()].concat()
}

/// The client's answer to a challenge from the relay it dialled at `relay_url` (in
/// [`RelayUrl`]'s display form).
pub fn client_auth<'a>(key: &SecretKey, challenge: &[u8; 32], relay_url: &'a str) -> Frame<'a> {
    let node_id = key.node_id();
    let signature = key
        .signing_key()
        .sign(&signed_message(challenge, &node_id, relay_url))
        .to_bytes();
    Frame::ClientAuth {
        version: PROTOCOL_VERSION,
        node_id,
        signature,
        relay_url,
    }
}

/// Checks a ClientAuth against the challenge this connection was sent and the relay's own
/// URLs. The signature is checked before the URL, so [`AuthError::WrongRelay`] always names a
/// URL that the key's holder signed.
pub fn verify(
    challenge: &[u8; 32],
    version: u8,
    node_id: &NodeId,
    signature: &[u8; 64],
    relay_url: &str,
    own: &dyn OwnUrls,
) -> Result<(), AuthError> {
    if version != PROTOCOL_VERSION {
        return Err(AuthError::Version(version));
    }
    let url: RelayUrl = relay_url.parse().map_err(AuthError::BadUrl)?;
    let key = node_id.verifying_key().ok_or(AuthError::BadKey)?;
    key.verify_strict(
        &signed_message(challenge, node_id, relay_url),
        &Signature::from_bytes(signature),
    )
    .map_err(|_| AuthError::BadSignature)?;
    if !own.accepts(&url) {
        return Err(AuthError::WrongRelay {
            signed_for: url,
            own: own.to_string(),
        });
    }
    Ok(())
}
