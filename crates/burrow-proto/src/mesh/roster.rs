//! The signed roster: who is in a mesh and who was thrown out, with a version.
//!
//! Every member holds the newest roster it has seen and offers it on every mesh connection;
//! [`SignedRoster::merge`] keeps the newer of two, so a change spreads from peer to peer and a
//! member that was offline catches up at its first contact. Revocation is by node id: a kicked
//! node cannot come back with a fresh certificate, and there is no certificate hash to dodge.
//!
//! The body (integers big-endian), followed by the signed ending of [`super::signer`]:
//!
//! ```text
//! version        u8 = 1
//! mesh id        32 bytes
//! roster version u64: the highest wins
//! member count   u16 (at most MAX_MEMBERS), then per member, in increasing node id order:
//!                node id 32 bytes, number u32, role u8 (0 member, 1 admin),
//!                name u8 length + 1 to MAX_NAME_LEN bytes of UTF-8
//! revoked count  u16 (at most MAX_REVOKED), then the node ids, 32 bytes each, increasing
//! ```
//!
//! No node is both a member and revoked, and no two members share a number. A roster of 50
//! members with 8-byte names is 2,410 bytes signed by the mesh key.
//!
//! **Membership** ([`SignedRoster::check_member`]) is the certificate's say plus the roster's
//! revocations, not the roster's member list: a node that joined a moment ago has a valid
//! certificate before its roster entry reaches everyone. The list is for showing members and
//! for finding them.
//!
//! **Limits.** Two admins that sign the same version at once are ordered by their signed
//! bytes, so every node keeps the same one; the other's change is lost until someone
//! re-applies it at a higher version. An admin can sign any version, up to `u64::MAX`, after
//! which no roster can replace its own; only revoking it everywhere before that would help,
//! so admins are trusted with that as with the certificates they sign.

use std::collections::{BTreeMap, BTreeSet};

use crate::identity::NodeId;

use super::cert::{Role, SignedCert};
use super::error::{FormatError, MeshError};
use super::id::MeshId;
use super::signer::{self, Issuer, Signer};
use super::wire::{self, put_name, Reader, VERSION};
use super::MAX_NAME_LEN;

/// What a roster signature covers before the body.
pub const ROSTER_DOMAIN: &[u8] = b"burrow mesh roster v1";
/// Most members a roster lists.
pub const MAX_MEMBERS: usize = 1000;
/// Most revoked node ids a roster lists.
pub const MAX_REVOKED: usize = 1000;

const MAX_ENTRY_LEN: usize = 32 + 4 + 1 + 1 + MAX_NAME_LEN;
const MAX_BODY_LEN: usize = 1 + 32 + 8 + 2 + MAX_MEMBERS * MAX_ENTRY_LEN + 2 + MAX_REVOKED * 32;
/// Longest signed roster (about 134 KB): every limit reached, signed by an admin.
pub const MAX_ROSTER_LEN: usize = MAX_BODY_LEN + signer::MAX_ENDING_LEN;

/// A member as the roster lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterEntry {
    /// The member's name, 1 to [`MAX_NAME_LEN`] bytes without control characters.
    pub name: String,
    /// The member's number.
    pub number: u32,
    /// What the member may do.
    pub role: Role,
}

/// What a roster says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roster {
    /// The mesh.
    pub mesh_id: MeshId,
    /// The version: a roster replaces another only with a higher one.
    pub version: u64,
    /// The members.
    pub members: BTreeMap<NodeId, RosterEntry>,
    /// The node ids thrown out.
    pub revoked: BTreeSet<NodeId>,
}

impl Roster {
    /// An empty roster.
    pub fn new(mesh_id: MeshId, version: u64) -> Roster {
        Roster {
            mesh_id,
            version,
            members: BTreeMap::new(),
            revoked: BTreeSet::new(),
        }
    }

    /// Whether `node`'s membership is revoked.
    pub fn is_revoked(&self, node: &NodeId) -> bool {
        self.revoked.contains(node)
    }

    /// Throws `node` out: drops it from the members and revokes its node id. The version is
    /// the caller's to raise.
    pub fn revoke(&mut self, node: NodeId) {
        self.members.remove(&node);
        self.revoked.insert(node);
    }

    /// Signs the roster.
    pub fn sign(&self, signer: &Signer<'_>) -> Result<SignedRoster, MeshError> {
        let (bytes, issuer) =
            signer::seal(ROSTER_DOMAIN, &self.mesh_id, self.encode_body()?, signer)?;
        Ok(SignedRoster {
            roster: self.clone(),
            issuer,
            bytes,
        })
    }

    fn encode_body(&self) -> Result<Vec<u8>, FormatError> {
        check_count("members", self.members.len(), MAX_MEMBERS)?;
        check_count("revoked node ids", self.revoked.len(), MAX_REVOKED)?;
        let mut numbers = BTreeSet::new();
        let mut out = Vec::with_capacity(64 + self.members.len() * 48 + self.revoked.len() * 32);
        out.push(VERSION);
        out.extend_from_slice(self.mesh_id.as_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&(self.members.len() as u16).to_be_bytes());
        for (node, entry) in &self.members {
            check_entry(&self.revoked, &mut numbers, node, entry)?;
            out.extend_from_slice(node.as_bytes());
            out.extend_from_slice(&entry.number.to_be_bytes());
            out.push(entry.role.to_byte());
            put_name(&mut out, &entry.name)?;
        }
        out.extend_from_slice(&(self.revoked.len() as u16).to_be_bytes());
        for node in &self.revoked {
            out.extend_from_slice(node.as_bytes());
        }
        Ok(out)
    }

    fn read_body(r: &mut Reader<'_>) -> Result<Roster, FormatError> {
        r.version()?;
        let mesh_id = r.mesh_id()?;
        let version = r.u64()?;

        let count = usize::from(r.u16()?);
        check_count("members", count, MAX_MEMBERS)?;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let node = r.node_id()?;
            if entries.last().is_some_and(|(last, _)| *last >= node) {
                return Err(FormatError::Unsorted("members"));
            }
            let number = r.u32()?;
            let role = Role::from_byte(r.u8()?)?;
            let name = r.name()?;
            entries.push((node, RosterEntry { name, number, role }));
        }

        let count = usize::from(r.u16()?);
        check_count("revoked node ids", count, MAX_REVOKED)?;
        let mut revoked = Vec::with_capacity(count);
        for _ in 0..count {
            let node = r.node_id()?;
            if revoked.last().is_some_and(|last| *last >= node) {
                return Err(FormatError::Unsorted("revoked node ids"));
            }
            revoked.push(node);
        }
        let revoked: BTreeSet<NodeId> = revoked.into_iter().collect();

        let mut numbers = BTreeSet::new();
        for (node, entry) in &entries {
            check_entry(&revoked, &mut numbers, node, entry)?;
        }
        Ok(Roster {
            mesh_id,
            version,
            members: entries.into_iter().collect(),
            revoked,
        })
    }
}

fn check_count(what: &'static str, count: usize, max: usize) -> Result<(), FormatError> {
    if count > max {
        return Err(FormatError::TooMany { what, count, max });
    }
    Ok(())
}

/// The rules across entries: a member is not revoked, and numbers are unique.
fn check_entry(
    revoked: &BTreeSet<NodeId>,
    numbers: &mut BTreeSet<u32>,
    node: &NodeId,
    entry: &RosterEntry,
) -> Result<(), FormatError> {
    if revoked.contains(node) {
        return Err(FormatError::MemberRevoked(*node));
    }
    if !numbers.insert(entry.number) {
        return Err(FormatError::DuplicateNumber(entry.number));
    }
    Ok(())
}

/// A roster whose signature chain is sound: built by signing or by [`SignedRoster::decode`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRoster {
    roster: Roster,
    issuer: Issuer,
    bytes: Vec<u8>,
}

impl SignedRoster {
    /// Decodes a roster and checks its signature, and its signer's certificate if an admin
    /// signed it. Looks neither at the time nor at which mesh: see [`SignedRoster::verify`].
    pub fn decode(bytes: &[u8]) -> Result<SignedRoster, MeshError> {
        wire::check_len(bytes, MAX_ROSTER_LEN)?;
        let mut r = Reader::new(bytes);
        let roster = Roster::read_body(&mut r)?;
        let issuer = signer::open(ROSTER_DOMAIN, &roster.mesh_id, bytes, r.pos(), false)?;
        Ok(SignedRoster {
            roster,
            issuer,
            bytes: bytes.to_vec(),
        })
    }

    /// Whether this is a valid roster of `mesh` at `now` (unix seconds): signed by the mesh key,
    /// or by an admin whose certificate is valid now and whom the roster does not revoke.
    pub fn verify(&self, mesh: &MeshId, now: u64) -> Result<(), MeshError> {
        if self.roster.mesh_id != *mesh {
            return Err(MeshError::WrongMesh {
                expected: *mesh,
                found: self.roster.mesh_id,
            });
        }
        self.issuer.check(now, Some(self))
    }

    /// Whether this roster replaces `other`: a higher version, or the same version with greater
    /// signed bytes (two admins that signed the same version at once), so every node keeps
    /// the same one.
    pub fn newer_than(&self, other: &SignedRoster) -> bool {
        (self.roster.version, &self.bytes) > (other.roster.version, &other.bytes)
    }

    /// What a node does with a roster a peer offers when it holds this one: the offer is kept
    /// (returned) if it is valid for this mesh at `now`, its signer is revoked neither by it nor
    /// by this roster, and it is [newer](SignedRoster::newer_than). Otherwise this roster stays,
    /// and the error says why.
    pub fn merge(&self, offered: SignedRoster, now: u64) -> Result<SignedRoster, MeshError> {
        offered.verify(&self.roster.mesh_id, now)?;
        offered.issuer.check(now, Some(self))?;
        if !offered.newer_than(self) {
            return Err(MeshError::Stale {
                version: offered.roster.version,
                current: self.roster.version,
            });
        }
        Ok(offered)
    }

    /// Whether `node`, presenting `cert`, is a member now (unix seconds): the certificate is
    /// `node`'s, for this roster's mesh, valid now, and neither the node nor the certificate's
    /// signer is revoked. What every connection and every discovery path (mDNS, the DHT, a
    /// registry) checks before it trusts a peer with anything.
    pub fn check_member(
        &self,
        node: &NodeId,
        cert: &SignedCert,
        now: u64,
    ) -> Result<(), MeshError> {
        if cert.cert().node_id != *node {
            return Err(MeshError::WrongNode {
                expected: *node,
                found: cert.cert().node_id,
            });
        }
        cert.verify(&self.roster.mesh_id, now, Some(self))
    }

    /// What the roster says.
    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    /// Who signed it.
    pub fn issuer(&self) -> &Issuer {
        &self.issuer
    }

    /// The signed encoding.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The signed encoding, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}
