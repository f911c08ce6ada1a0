//! Invite tokens: what lets one more node join a mesh.
//!
//! `burrow invite` prints a full token; `burrow join TOKEN` reads the mesh and the inviter's
//! node and addresses from it, connects to the inviter and redeems it there (an admin must be
//! online for that). The token is a bearer credential: whoever holds it may join, as many times
//! as its `uses` say, until it expires; the inviter keeps the count. Its short code
//! ([`super::code`]) goes through a PAKE instead ([`super::pake`]), which hands the joiner this
//! token.
//!
//! The body (integers big-endian), followed by the signed ending of [`super::signer`]:
//!
//! ```text
//! version      u8 = 1
//! mesh id      32 bytes: the mesh's public key, which verifies everything the mesh signs
//! invite id    16 random bytes: the inviter's name for this invite
//! secret       32 random bytes: makes the token unguessable
//! created      u64: unix seconds
//! expires      u64: unix seconds, the last second it can be redeemed (at least created)
//! uses         u16: how many nodes may join with it, 1 to MAX_USES (default 1)
//! mesh name    u8 length + 1 to MAX_NAME_LEN bytes of UTF-8 without control characters
//! inviter      u16 length + a ticket's body (see crate::ticket: version, the inviter's node
//!              id, its relays and direct addresses), without the ticket's checksum
//! ```
//!
//! An admin invites only to itself: if an admin signed the token, the inviter is that admin.
//! The text form is `burrowinvite` followed by lowercase unpadded base32 of the signed bytes
//! and their CRC32: URL-safe, one word, and a mistyped or cut token is reported as corrupted
//! (the checksum) rather than as tampered with (the signature). A token with one relay and two
//! addresses, signed by the mesh key, is 262 bytes, 438 characters.

use std::fmt;
use std::str::FromStr;

use data_encoding::BASE32_NOPAD;

use crate::identity::NodeId;
use crate::ticket::{armor, unarmor, Ticket, Unarmor};
use crate::Rng;

use super::error::{FormatError, MeshError};
use super::id::MeshId;
use super::roster::SignedRoster;
use super::signer::{self, Issuer, Signer};
use super::wire::{self, put_name, Reader, VERSION};
use super::MAX_NAME_LEN;

/// What an invite signature covers before the body.
pub const INVITE_DOMAIN: &[u8] = b"burrow mesh invite v1";
/// Most nodes one invite lets in.
pub const MAX_USES: u16 = 1000;
/// The text form's prefix.
pub const PREFIX: &str = "burrowinvite";

const MAX_BODY_LEN: usize =
    1 + 32 + 16 + 32 + 8 + 8 + 2 + 1 + MAX_NAME_LEN + 2 + crate::ticket::MAX_BODY_LEN;
/// Longest signed invite, in bytes.
pub const MAX_INVITE_LEN: usize = MAX_BODY_LEN + signer::MAX_ENDING_LEN;
const CHECKSUM_LEN: usize = 4;
/// Longest text form, in characters. Longer input is refused before it is decoded.
pub const MAX_INVITE_TEXT_LEN: usize =
    PREFIX.len() + ((MAX_INVITE_LEN + CHECKSUM_LEN) * 8).div_ceil(5);

/// What an invite says.
#[derive(Clone, PartialEq, Eq)]
pub struct Invite {
    /// The mesh, which is also its public key.
    pub mesh_id: MeshId,
    /// The mesh's name, 1 to [`MAX_NAME_LEN`] bytes without control characters.
    pub mesh_name: String,
    /// The inviter's name for this invite.
    pub invite_id: [u8; 16],
    /// What makes the token unguessable. Never shown in `Debug` output.
    pub secret: [u8; 32],
    /// When it was made, unix seconds.
    pub created: u64,
    /// The last second it can be redeemed, unix seconds.
    pub expires: u64,
    /// How many nodes may join with it.
    pub uses: u16,
    /// The inviter's node, and how to reach it. As in a ticket, relays and addresses beyond
    /// the ticket's limits are left out.
    pub inviter: Ticket,
}

impl fmt::Debug for Invite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invite")
            .field("mesh_id", &self.mesh_id)
            .field("mesh_name", &self.mesh_name)
            .field("invite_id", &BASE32_NOPAD.encode(&self.invite_id))
            .field("created", &self.created)
            .field("expires", &self.expires)
            .field("uses", &self.uses)
            .field("inviter", &self.inviter)
            .finish_non_exhaustive()
    }
}

impl Invite {
    /// A single-use invite to `mesh_id` made at `created`, with a fresh id and secret drawn
    /// from `rng` (seed it with [`Rng::from_seed_bytes`] from the OS: the secret is a bearer
    /// credential).
    pub fn new(
        mesh_id: MeshId,
        mesh_name: String,
        inviter: Ticket,
        created: u64,
        expires: u64,
        rng: &mut Rng,
    ) -> Invite {
        Invite {
            mesh_id,
            mesh_name,
            invite_id: rng.bytes(),
            secret: rng.bytes(),
            created,
            expires,
            uses: 1,
            inviter,
        }
    }

    /// Signs the invite: by the mesh key, or by an admin that is the inviter.
    pub fn sign(&self, signer: &Signer<'_>) -> Result<SignedInvite, MeshError> {
        if let Signer::Admin { key, .. } = signer {
            check_inviter(&self.inviter.node_id, &key.node_id())?;
        }
        let (bytes, _) = signer::seal(INVITE_DOMAIN, &self.mesh_id, self.encode_body()?, signer)?;
        // Decoded back, so the invite held is exactly what the bytes say (the ticket's limits).
        SignedInvite::decode(&bytes)
    }

    fn encode_body(&self) -> Result<Vec<u8>, FormatError> {
        check_times_and_uses(self.created, self.expires, self.uses)?;
        let mut out = Vec::with_capacity(256);
        out.push(VERSION);
        out.extend_from_slice(self.mesh_id.as_bytes());
        out.extend_from_slice(&self.invite_id);
        out.extend_from_slice(&self.secret);
        out.extend_from_slice(&self.created.to_be_bytes());
        out.extend_from_slice(&self.expires.to_be_bytes());
        out.extend_from_slice(&self.uses.to_be_bytes());
        put_name(&mut out, &self.mesh_name)?;
        let ticket = self.inviter.body();
        out.extend_from_slice(&(ticket.len() as u16).to_be_bytes());
        out.extend_from_slice(&ticket);
        Ok(out)
    }

    fn read_body(r: &mut Reader<'_>) -> Result<Invite, FormatError> {
        r.version()?;
        let mesh_id = r.mesh_id()?;
        let invite_id = r.array()?;
        let secret = r.array()?;
        let created = r.u64()?;
        let expires = r.u64()?;
        let uses = r.u16()?;
        check_times_and_uses(created, expires, uses)?;
        let mesh_name = r.name()?;
        let len = usize::from(r.u16()?);
        let inviter = Ticket::decode_body(r.take(len)?).map_err(FormatError::Inviter)?;
        Ok(Invite {
            mesh_id,
            mesh_name,
            invite_id,
            secret,
            created,
            expires,
            uses,
            inviter,
        })
    }
}

fn check_times_and_uses(created: u64, expires: u64, uses: u16) -> Result<(), FormatError> {
    if expires < created {
        return Err(FormatError::Validity {
            start: created,
            end: expires,
        });
    }
    if uses == 0 || uses > MAX_USES {
        return Err(FormatError::Uses(uses));
    }
    Ok(())
}

fn check_inviter(inviter: &NodeId, signer: &NodeId) -> Result<(), MeshError> {
    if inviter != signer {
        return Err(MeshError::InviterNotSigner {
            inviter: *inviter,
            signer: *signer,
        });
    }
    Ok(())
}

/// An invite whose signature chain is sound: built by signing or by decoding.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedInvite {
    invite: Invite,
    issuer: Issuer,
    bytes: Vec<u8>,
}

impl fmt::Debug for SignedInvite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedInvite")
            .field("invite", &self.invite)
            .field("issuer", &self.issuer.admin())
            .finish_non_exhaustive()
    }
}

impl SignedInvite {
    /// Decodes an invite and checks its signature, and its signer's certificate if an admin
    /// signed it. Looks neither at the time nor at which mesh: see [`SignedInvite::verify`].
    pub fn decode(bytes: &[u8]) -> Result<SignedInvite, MeshError> {
        wire::check_len(bytes, MAX_INVITE_LEN)?;
        let mut r = Reader::new(bytes);
        let invite = Invite::read_body(&mut r)?;
        let issuer = signer::open(INVITE_DOMAIN, &invite.mesh_id, bytes, r.pos(), false)?;
        if let Some(admin) = issuer.admin() {
            check_inviter(&invite.inviter.node_id, &admin)?;
        }
        Ok(SignedInvite {
            invite,
            issuer,
            bytes: bytes.to_vec(),
        })
    }

    /// Whether the invite may be redeemed in `mesh` at `now` (unix seconds): for that mesh, not
    /// expired, signed by the mesh key or by an admin valid now, and, if a roster is given,
    /// neither the signer nor the inviter revoked. A joiner, which has no roster yet, passes
    /// the invite's own mesh id; the inviter passes its mesh and roster (and keeps the count of
    /// uses itself).
    pub fn verify(
        &self,
        mesh: &MeshId,
        now: u64,
        roster: Option<&SignedRoster>,
    ) -> Result<(), MeshError> {
        let invite = &self.invite;
        if invite.mesh_id != *mesh {
            return Err(MeshError::WrongMesh {
                expected: *mesh,
                found: invite.mesh_id,
            });
        }
        if now > invite.expires {
            return Err(MeshError::Expired {
                not_after: invite.expires,
                now,
            });
        }
        self.issuer.check(now, roster)?;
        let inviter = invite.inviter.node_id;
        if roster.is_some_and(|r| r.roster().is_revoked(&inviter)) {
            return Err(MeshError::Revoked(inviter));
        }
        Ok(())
    }

    /// What the invite says.
    pub fn invite(&self) -> &Invite {
        &self.invite
    }

    /// Who signed it.
    pub fn issuer(&self) -> &Issuer {
        &self.issuer
    }

    /// The signed encoding.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// The token users copy and paste.
impl fmt::Display for SignedInvite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&armor(PREFIX, self.bytes.clone()))
    }
}

/// Parses a token (trimmed, in any case) and checks its signature, as
/// [`SignedInvite::decode`].
impl FromStr for SignedInvite {
    type Err = MeshError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = unarmor(PREFIX, s, MAX_INVITE_TEXT_LEN).map_err(|e| match e {
            Unarmor::Prefix => FormatError::Prefix(PREFIX),
            Unarmor::TooLong { len, .. } => FormatError::TooLarge {
                len,
                max: MAX_INVITE_TEXT_LEN,
            },
            Unarmor::Base32(e) => FormatError::Base32(e),
            Unarmor::Truncated => FormatError::Truncated,
            Unarmor::Checksum => FormatError::Checksum,
        })?;
        SignedInvite::decode(&bytes)
    }
}
