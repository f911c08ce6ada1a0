//! Why a mesh object is refused: one error type for certificates, rosters and invites, since
//! they fail the same ways.

use crate::identity::{NodeId, NodeIdError};
use crate::ticket::TicketError;

use super::id::MeshId;

/// Why bytes (or text) are not a well-formed mesh object, or a value cannot be encoded: the
/// layout, not the meaning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The bytes end before the object does.
    #[error("truncated")]
    Truncated,
    /// Written by a newer (or unknown) version of burrow.
    #[error("format version {0} is not supported (this burrow reads version 1)")]
    Version(u8),
    /// Bytes after the last field.
    #[error("{0} unexpected bytes after the last field")]
    TrailingBytes(usize),
    /// Longer than any valid object of its kind.
    #[error("{len} bytes long; the limit is {max}")]
    TooLarge {
        /// The length given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More entries of some kind than the limit.
    #[error("{count} {what}; at most {max} are allowed")]
    TooMany {
        /// What there are too many of.
        what: &'static str,
        /// How many there are.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A name that is empty, longer than [`super::MAX_NAME_LEN`], not UTF-8 or has control
    /// characters.
    #[error("name is invalid: {0}")]
    Name(&'static str),
    /// A node id that is not an Ed25519 public key.
    #[error("node id is invalid")]
    NodeId(#[source] NodeIdError),
    /// A mesh id that is not an Ed25519 public key.
    #[error("mesh id is invalid")]
    MeshId(#[source] NodeIdError),
    /// A role byte other than 0 (member) or 1 (admin).
    #[error("unknown role {0}")]
    Role(u8),
    /// A signer byte other than 0 (the mesh key) or 1 (an admin).
    #[error("unknown kind of signer {0}")]
    SignerKind(u8),
    /// A validity that ends before it starts.
    #[error("validity ends ({end}) before it starts ({start})")]
    Validity {
        /// The start, unix seconds.
        start: u64,
        /// The end, unix seconds.
        end: u64,
    },
    /// A roster's node ids not in strictly increasing order.
    #[error("{0} are not in increasing node id order, or repeat")]
    Unsorted(&'static str),
    /// A roster that lists a node both as a member and as revoked.
    #[error("{0} is both a member and revoked")]
    MemberRevoked(NodeId),
    /// A roster that gives two members the same number.
    #[error("member number {0} is used twice")]
    DuplicateNumber(u32),
    /// An invite's use count outside 1 to [`super::invite::MAX_USES`].
    #[error("an invite's uses must be 1 to {max}, not {0}", max = super::invite::MAX_USES)]
    Uses(u16),
    /// An invite's inviter address (a ticket body) that does not decode.
    #[error("inviter's address is invalid")]
    Inviter(#[source] TicketError),
    /// Text without the expected prefix.
    #[error("it must start with {0:?}")]
    Prefix(&'static str),
    /// Text that is not base32.
    #[error("not valid base32: {0}")]
    Base32(String),
    /// Text whose checksum does not match: a typo or a partial copy (not tampering, which the
    /// signature catches).
    #[error("corrupted (checksum mismatch); copy it again in full")]
    Checksum,
    /// A PAKE message type this burrow does not know.
    #[error("unknown message type {0}")]
    MessageType(u8),
    /// A PAKE refusal reason this burrow does not know.
    #[error("unknown refusal reason {0}")]
    Reason(u8),
    /// A PAKE start whose rendezvous part is not four code symbols.
    #[error("rendezvous part is not four code symbols")]
    Rendezvous,
}

/// Why a certificate, roster or invite is refused, or cannot be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeshError {
    /// Not a well-formed encoding, or a value beyond the format's limits.
    #[error("bad format")]
    Format(#[from] FormatError),
    /// The signature does not verify: the bytes were changed after signing, or signed by a key
    /// other than the one they name.
    #[error("signature is invalid (changed after signing, or signed by another key)")]
    Signature,
    /// Signed by a node whose certificate does not make it an admin.
    #[error("signed by {0}, which is not an admin")]
    NotAdmin(NodeId),
    /// An admin certificate signed by an admin: only the mesh key makes admins.
    #[error("an admin certificate must be signed by the mesh key, not by an admin")]
    AdminByAdmin,
    /// The certificate that makes the signer an admin is itself not valid.
    #[error("signer {admin}'s admin certificate is not valid")]
    Issuer {
        /// The admin.
        admin: NodeId,
        /// Why its certificate is refused.
        #[source]
        source: Box<MeshError>,
    },
    /// Signed by an admin whose node id the roster revokes.
    #[error("signed by {0}, an admin whose membership is revoked")]
    IssuerRevoked(NodeId),
    /// Signing with a key other than the one needed.
    #[error("the key given is {key}'s, but {expected}'s is needed")]
    KeyMismatch {
        /// The key needed.
        expected: NodeId,
        /// The key given.
        key: NodeId,
    },
    /// Signing as the mesh key with another key.
    #[error("the key given is not mesh {0}'s key")]
    NotMeshKey(MeshId),
    /// For another mesh.
    #[error("it is for mesh {found}, not {expected}")]
    WrongMesh {
        /// Our mesh.
        expected: MeshId,
        /// The mesh it is for.
        found: MeshId,
    },
    /// A certificate for another node than the one that presents it.
    #[error("the certificate is {found}'s, not {expected}'s")]
    WrongNode {
        /// The node that presented it.
        expected: NodeId,
        /// The node it is for.
        found: NodeId,
    },
    /// Past its end of validity.
    #[error("expired at {not_after} (now {now}, unix seconds)")]
    Expired {
        /// The last second it was valid.
        not_after: u64,
        /// The time it was checked at.
        now: u64,
    },
    /// Before its start of validity.
    #[error("not valid before {not_before} (now {now}, unix seconds)")]
    NotYetValid {
        /// The first second it is valid.
        not_before: u64,
        /// The time it was checked at.
        now: u64,
    },
    /// The node's membership is revoked.
    #[error("{0}'s membership is revoked")]
    Revoked(NodeId),
    /// A roster whose version is not newer than the one held.
    #[error("roster version {version} is not newer than the current version {current}")]
    Stale {
        /// The offered roster's version.
        version: u64,
        /// The version held.
        current: u64,
    },
    /// An admin signing a member certificate that would outlive the admin's own.
    #[error("the certificate would be valid until {not_after}, after its signer's own certificate ends ({signer_not_after})")]
    OutlivesSigner {
        /// The certificate's end of validity.
        not_after: u64,
        /// The admin's end of validity.
        signer_not_after: u64,
    },
    /// An invite signed by an admin for another inviter: an admin invites only to itself.
    #[error("the invite names {inviter} as the inviter but is signed by {signer}")]
    InviterNotSigner {
        /// The inviter the invite names.
        inviter: NodeId,
        /// The admin that signed it.
        signer: NodeId,
    },
}
