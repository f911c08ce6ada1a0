//! Member certificates: a mesh's signed statement that a node belongs to it.
//!
//! A member presents its certificate on every mesh connection; the peer checks it with
//! [`SignedCert::verify`] against its own mesh id, the time and its roster (or all at once with
//! [`SignedRoster::check_member`](super::roster::SignedRoster::check_member)). The body (all
//! integers big-endian), followed by the signed ending of [`super::signer`]:
//!
//! ```text
//! version      u8 = 1
//! mesh id      32 bytes (the mesh key)
//! node id      32 bytes (the member's Ed25519 key)
//! serial       u64: the signer's number for this certificate (a renewal has a new one)
//! number       u32: the member's number in the mesh (1 for the creator)
//! role         u8: 0 member, 1 admin
//! not before   u64: unix seconds, the first second it is valid
//! not after    u64: unix seconds, the last second it is valid (at least not before)
//! name         u8 length + 1 to MAX_NAME_LEN bytes of UTF-8 without control characters
//! ```
//!
//! A certificate signed by the mesh key with a 6-byte name is 166 bytes; one signed by an
//! admin carries the admin's certificate too, about twice that. The longest is
//! [`MAX_CERT_LEN`].

use crate::identity::NodeId;

use super::error::{FormatError, MeshError};
use super::id::MeshId;
use super::roster::SignedRoster;
use super::signer::{self, Issuer, Signer};
use super::wire::{self, put_name, Reader, VERSION};
use super::MAX_NAME_LEN;

/// What a certificate signature covers before the body.
pub const CERT_DOMAIN: &[u8] = b"burrow mesh cert v1";

const MAX_BODY_LEN: usize = 1 + 32 + 32 + 8 + 4 + 1 + 8 + 8 + 1 + MAX_NAME_LEN;
/// Longest certificate signed by the mesh key (an admin's is always one).
pub(crate) const MAX_MESH_SIGNED_LEN: usize = MAX_BODY_LEN + 1 + 64;
/// Longest certificate: one signed by an admin, with the admin's certificate.
pub const MAX_CERT_LEN: usize = MAX_BODY_LEN + 1 + 32 + 64 + MAX_MESH_SIGNED_LEN;

/// What a member may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Connects to the other members.
    Member,
    /// Also signs member certificates, rosters and invites.
    Admin,
}

impl Role {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            Role::Member => 0,
            Role::Admin => 1,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Result<Role, FormatError> {
        match b {
            0 => Ok(Role::Member),
            1 => Ok(Role::Admin),
            other => Err(FormatError::Role(other)),
        }
    }
}

/// What a member certificate says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberCert {
    /// The mesh.
    pub mesh_id: MeshId,
    /// The member.
    pub node_id: NodeId,
    /// The member's name in the mesh, 1 to [`MAX_NAME_LEN`] bytes without control characters.
    pub name: String,
    /// The member's number in the mesh.
    pub number: u32,
    /// What the member may do.
    pub role: Role,
    /// First second of validity, unix seconds.
    pub not_before: u64,
    /// Last second of validity, unix seconds.
    pub not_after: u64,
    /// The signer's number for this certificate.
    pub serial: u64,
}

impl MemberCert {
    /// Signs the certificate. An admin signs only member certificates, valid no longer than
    /// its own.
    pub fn sign(&self, signer: &Signer<'_>) -> Result<SignedCert, MeshError> {
        if let Signer::Admin { cert, .. } = signer {
            if self.role == Role::Admin {
                return Err(MeshError::AdminByAdmin);
            }
            let signer_not_after = cert.cert().not_after;
            if self.not_after > signer_not_after {
                return Err(MeshError::OutlivesSigner {
                    not_after: self.not_after,
                    signer_not_after,
                });
            }
        }
        let (bytes, issuer) =
            signer::seal(CERT_DOMAIN, &self.mesh_id, self.encode_body()?, signer)?;
        Ok(SignedCert {
            cert: self.clone(),
            issuer,
            bytes,
        })
    }

    /// Whether `now` (unix seconds) is within the validity.
    pub fn check_validity(&self, now: u64) -> Result<(), MeshError> {
        if now < self.not_before {
            return Err(MeshError::NotYetValid {
                not_before: self.not_before,
                now,
            });
        }
        if now > self.not_after {
            return Err(MeshError::Expired {
                not_after: self.not_after,
                now,
            });
        }
        Ok(())
    }

    fn encode_body(&self) -> Result<Vec<u8>, FormatError> {
        check_validity_order(self.not_before, self.not_after)?;
        let mut out = Vec::with_capacity(MAX_BODY_LEN);
        out.push(VERSION);
        out.extend_from_slice(self.mesh_id.as_bytes());
        out.extend_from_slice(self.node_id.as_bytes());
        out.extend_from_slice(&self.serial.to_be_bytes());
        out.extend_from_slice(&self.number.to_be_bytes());
        out.push(self.role.to_byte());
        out.extend_from_slice(&self.not_before.to_be_bytes());
        out.extend_from_slice(&self.not_after.to_be_bytes());
        put_name(&mut out, &self.name)?;
        Ok(out)
    }

    fn read_body(r: &mut Reader<'_>) -> Result<MemberCert, FormatError> {
        r.version()?;
        let mesh_id = r.mesh_id()?;
        let node_id = r.node_id()?;
        let serial = r.u64()?;
        let number = r.u32()?;
        let role = Role::from_byte(r.u8()?)?;
        let not_before = r.u64()?;
        let not_after = r.u64()?;
        check_validity_order(not_before, not_after)?;
        let name = r.name()?;
        Ok(MemberCert {
            mesh_id,
            node_id,
            name,
            number,
            role,
            not_before,
            not_after,
            serial,
        })
    }
}

fn check_validity_order(start: u64, end: u64) -> Result<(), FormatError> {
    if end < start {
        return Err(FormatError::Validity { start, end });
    }
    Ok(())
}

/// A certificate whose signature chain is sound: a value of this type was built by signing or
/// by [`SignedCert::decode`], though it may have expired or been revoked since (see
/// [`SignedCert::verify`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCert {
    cert: MemberCert,
    issuer: Issuer,
    bytes: Vec<u8>,
}

impl SignedCert {
    /// Decodes a certificate and checks its signature, and its signer's certificate if an
    /// admin signed it. Looks neither at the time nor at which mesh: see
    /// [`SignedCert::verify`].
    pub fn decode(bytes: &[u8]) -> Result<SignedCert, MeshError> {
        SignedCert::decode_at(bytes, false)
    }

    /// Decodes an admin's certificate inside another object's signed ending.
    pub(crate) fn decode_nested(bytes: &[u8]) -> Result<SignedCert, MeshError> {
        SignedCert::decode_at(bytes, true)
    }

    fn decode_at(bytes: &[u8], nested: bool) -> Result<SignedCert, MeshError> {
        wire::check_len(bytes, MAX_CERT_LEN)?;
        let mut r = Reader::new(bytes);
        let cert = MemberCert::read_body(&mut r)?;
        let issuer = signer::open(CERT_DOMAIN, &cert.mesh_id, bytes, r.pos(), nested)?;
        if cert.role == Role::Admin && issuer != Issuer::Mesh {
            return Err(MeshError::AdminByAdmin);
        }
        Ok(SignedCert {
            cert,
            issuer,
            bytes: bytes.to_vec(),
        })
    }

    /// Whether this certificate makes its node a member of `mesh` at `now` (unix seconds): for
    /// that mesh, within its validity, signed by the mesh key or by an admin whose certificate
    /// is valid now, and, if a roster is given, neither the node nor its signer revoked.
    pub fn verify(
        &self,
        mesh: &MeshId,
        now: u64,
        roster: Option<&SignedRoster>,
    ) -> Result<(), MeshError> {
        if self.cert.mesh_id != *mesh {
            return Err(MeshError::WrongMesh {
                expected: *mesh,
                found: self.cert.mesh_id,
            });
        }
        if let Some(r) = roster {
            if r.roster().mesh_id != *mesh {
                return Err(MeshError::WrongMesh {
                    expected: *mesh,
                    found: r.roster().mesh_id,
                });
            }
        }
        self.cert.check_validity(now)?;
        self.issuer.check(now, roster)?;
        if roster.is_some_and(|r| r.roster().is_revoked(&self.cert.node_id)) {
            return Err(MeshError::Revoked(self.cert.node_id));
        }
        Ok(())
    }

    /// What the certificate says.
    pub fn cert(&self) -> &MemberCert {
        &self.cert
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
