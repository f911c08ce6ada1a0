//! Meshes: nodes that connect only to each other, with membership proved on every connection.
//!
//! The signed objects (mesh ids, member certificates, rosters, invites, short codes and their
//! PAKE) are `burrow_proto::mesh`; this module keeps them on disk ([`state`]), checks them on
//! every connection ([`membership`], an endpoint [`Credentials`](crate::endpoint::Credentials)),
//! and runs a node of a mesh ([`node`]): its endpoint, the connections to every member,
//! rosters passed on as they change, invites and joins.
//!
//! # On a connection
//!
//! Members speak [`MESH_ALPN`]. Right after the QUIC handshake, both ends show their proof on
//! their first unidirectional stream (the endpoint's
//! [`ExchangeProofs`](crate::endpoint::ExchangeProofs); the dialler at once, the listener once
//! it has checked the dialler's): `u32` length + member certificate + the roster they hold. A
//! peer whose certificate is not valid for the mesh now, or that the roster (the newer of the
//! two) revokes, is closed with the reason before any application stream, and learns no
//! direct address, nor, if it dialled, the listener's certificate and roster. Each later unidirectional stream carries one message:
//! a type byte, then its body: [`MSG_ROSTER`] + a signed roster (sent to every member when it
//! changes), [`MSG_INFO`] + what the sender tells of itself (its NAT, an
//! [`info::NodeInfo`](burrow_proto::mesh::info::NodeInfo); sent at connect and when it
//! changes), or [`MSG_CERT`] + a signed certificate (an admin's renewal of the receiver's, or
//! the sender's own once renewed, which the receiver takes only if it is valid and newer: see
//! [`renewal`]). A message of an unknown type is skipped. QUIC datagrams carry pings (`0` + 8
//! bytes, echoed as `1` + the same 8 bytes) and programs' datagrams (`2` + their bytes, see
//! [`apps`]). Bidirectional streams carry forwarded TCP connections ([`forward`]) and programs'
//! streams ([`apps`]), each opened with a header and answered before its bytes flow.
//!
//! A node redeeming an invite speaks [`JOIN_ALPN`]: admitted untrusted (no hole punching for
//! it), it sends the invite token on a bidirectional stream; the inviter answers with `u32`
//! length + the new member's certificate + the roster that lists it, or closes with the reason.

pub use burrow_proto::mesh::code::ShortCode;
pub use burrow_proto::mesh::id::MeshId;
pub use burrow_proto::mesh::invite::SignedInvite;

pub mod apps;
pub mod daemon;
mod discovery;
pub mod forward;
mod invites;
pub mod lobby;
pub mod member_conn;
pub mod membership;
pub mod node;
mod presence;
pub mod renewal;
pub mod state;
mod streams;

/// The ALPN members speak to each other.
pub const MESH_ALPN: &[u8] = b"burrow/mesh/1";
/// The ALPN of a node redeeming an invite.
pub const JOIN_ALPN: &[u8] = b"burrow/join/1";
/// A message carrying a signed roster.
pub const MSG_ROSTER: u8 = 1;
/// A message carrying what the sender tells of itself.
pub const MSG_INFO: u8 = 2;
/// A message carrying a signed member certificate: a renewal.
pub const MSG_CERT: u8 = 3;
/// Longest message on a mesh connection (a roster at its limit fits), in bytes.
pub const MAX_MESSAGE_LEN: usize = 256 * 1024;

/// Seconds since the Unix epoch: the `now` of every mesh check.
pub(crate) fn now() -> u64 {
    crate::clock::unix_now()
}
