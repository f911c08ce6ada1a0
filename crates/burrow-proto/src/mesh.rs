//! Meshes: who belongs, proved by signatures, and how a new node is let in.
//!
//! A **mesh** is a group of nodes that connect only to each other. It is made by `burrow init`,
//! which creates a **mesh key** (an Ed25519 [`SecretKey`](crate::identity::SecretKey), kept by
//! its creator); the mesh's identity is that key's public half ([`id::MeshId`]), so anyone who
//! knows which mesh they are in can check everything below offline, with nothing else to fetch
//! or trust.
//!
//! - A member holds a **certificate** ([`cert::SignedCert`]): its node id, name, member number,
//!   role and validity, signed for the mesh. It proves membership on every connection.
//! - Every member holds the signed **roster** ([`roster::SignedRoster`]): the members and the
//!   revoked node ids, with a version; the highest version wins as it travels from peer to peer.
//!   [`roster::SignedRoster::check_member`] answers "is this node a member now" from its
//!   certificate and the roster, for every way a peer can be found.
//! - An **invite** ([`invite::SignedInvite`]) is the token that lets one more node join; its
//!   **short code** ([`code::ShortCode`]) is redeemed with a PAKE ([`pake`]), so it can only be
//!   guessed online, and dies after three wrong guesses.
//! - What a member tells of itself to each member it connects to (its NAT, unsigned and only
//!   for show) is an [`info::NodeInfo`].
//! - What a member opens a stream to another for (a forwarded TCP connection, or a program's
//!   stream), and the answer, are a [`stream::StreamOpen`] and a [`stream::StreamAnswer`].
//!
//! # Who signs
//!
//! The mesh key signs everything, and never expires on its own. It may also make **admins**:
//! an admin certificate (role admin, signed by the mesh key) lets that node's own key sign
//! member certificates, rosters and invites ([`signer::Signer::Admin`]). Only the mesh key
//! signs admin certificates, so the chain is at most one link long: mesh key, admin, member.
//! Anything an admin signs carries the admin's certificate, is valid only while that
//! certificate is (so a lapsed admin cannot backdate), and is refused once the admin's node id
//! is revoked. The online admin renews what it signed before its own certificate lapses.
//!
//! Every signed object ends the same way (see [`signer`]): the object's body (starting with a
//! format version and the mesh id), who signed it, an Ed25519 signature over a per-object
//! domain string, the body and the signer, and for an admin its certificate. The domain strings
//! (`burrow mesh cert v1`, ...) keep a signature for one kind of object, or by a node key for a
//! record or a DHT item, from passing as another.
//!
//! Decoders accept only the canonical form, so every accepted encoding re-encodes to itself
//! and a signature covers exactly what is shown. Nothing here reads a clock: times are Unix
//! seconds the caller passes in (`now`).

pub mod cert;
pub mod code;
mod error;
pub mod id;
pub mod info;
pub mod invite;
pub mod pake;
pub mod roster;
pub mod signer;
pub mod stream;
mod wire;

pub use error::{FormatError, MeshError};

/// Longest name (a member's or a mesh's), in bytes of UTF-8; names have no control characters.
pub const MAX_NAME_LEN: usize = crate::record::MAX_NAME_LEN;

#[cfg(test)]
mod tests;
