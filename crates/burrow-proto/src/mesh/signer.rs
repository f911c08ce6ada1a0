//! Who signs a mesh object, and the signed ending every certificate, roster and invite shares.
//!
//! ```text
//! body         the object's fields; the first byte is the format version, then the mesh id
//! signer       u8 0: the mesh key
//!              u8 1 + 32 bytes: an admin's node id
//! signature    64 bytes: Ed25519 by the mesh key or the admin's node key, over the object's
//!              domain string, the body and the signer field
//! admin cert   for an admin only: its certificate, signed by the mesh key, to the end
//! ```
//!
//! The admin's certificate travels with what it signed, so a verifier needs nothing but the
//! mesh id. It must be an admin's, for the same mesh and node, and signed by the mesh key
//! itself (the decoder refuses a second link before reading it).

use ed25519_dalek::{Signature, Signer as _};

use crate::identity::{NodeId, SecretKey};

use super::cert::{Role, SignedCert};
use super::error::{FormatError, MeshError};
use super::id::MeshId;
use super::roster::SignedRoster;
use super::wire::Reader;

const SIGNATURE_LEN: usize = 64;
const BY_MESH: u8 = 0;
const BY_ADMIN: u8 = 1;

/// Longest signed ending after a body: an admin's node id, the signature and its certificate.
pub(crate) const MAX_ENDING_LEN: usize = 1 + 32 + SIGNATURE_LEN + super::cert::MAX_MESH_SIGNED_LEN;

/// A key that signs for a mesh.
#[derive(Clone, Copy, Debug)]
pub enum Signer<'a> {
    /// The mesh key: the creator's, valid for ever.
    Mesh(&'a SecretKey),
    /// An admin's node key, with the admin certificate (signed by the mesh key) that lets it
    /// sign. It signs member certificates, rosters and invites, never admin certificates.
    Admin {
        /// The admin's node key.
        key: &'a SecretKey,
        /// The admin's certificate.
        cert: &'a SignedCert,
    },
}

/// Who signed a mesh object, as it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Issuer {
    /// The mesh key.
    Mesh,
    /// An admin, with the certificate that makes it one (signed by the mesh key).
    Admin(Box<SignedCert>),
}

impl Issuer {
    /// The admin's node id, or `None` for the mesh key.
    pub fn admin(&self) -> Option<NodeId> {
        match self {
            Issuer::Mesh => None,
            Issuer::Admin(cert) => Some(cert.cert().node_id),
        }
    }

    /// Whether the signer may sign at `now`: the mesh key always; an admin while its
    /// certificate is valid and, if a roster is given, not revoked by it.
    pub(crate) fn check(&self, now: u64, roster: Option<&SignedRoster>) -> Result<(), MeshError> {
        let Issuer::Admin(cert) = self else {
            return Ok(());
        };
        let admin = cert.cert().node_id;
        cert.cert()
            .check_validity(now)
            .map_err(|source| MeshError::Issuer {
                admin,
                source: Box::new(source),
            })?;
        if roster.is_some_and(|r| r.roster().is_revoked(&admin)) {
            return Err(MeshError::IssuerRevoked(admin));
        }
        Ok(())
    }
}

impl Signer<'_> {
    /// Checks that this key may sign for `mesh` (at all: validity is the verifier's business).
    fn check(&self, mesh: &MeshId) -> Result<(), MeshError> {
        match self {
            Signer::Mesh(key) => {
                if MeshId::of(key) != *mesh {
                    return Err(MeshError::NotMeshKey(*mesh));
                }
            }
            Signer::Admin { key, cert } => {
                let c = cert.cert();
                if c.mesh_id != *mesh {
                    return Err(MeshError::WrongMesh {
                        expected: *mesh,
                        found: c.mesh_id,
                    });
                }
                if key.node_id() != c.node_id {
                    return Err(MeshError::KeyMismatch {
                        expected: c.node_id,
                        key: key.node_id(),
                    });
                }
                if c.role != Role::Admin {
                    return Err(MeshError::NotAdmin(c.node_id));
                }
                // An admin certificate is always signed by the mesh key: decoding refuses
                // any other, so nothing to check here.
            }
        }
        Ok(())
    }
}

/// Appends the signed ending to `body`, a `domain` object of `mesh`: the signed encoding, and
/// the issuer it names.
pub(crate) fn seal(
    domain: &[u8],
    mesh: &MeshId,
    mut body: Vec<u8>,
    signer: &Signer<'_>,
) -> Result<(Vec<u8>, Issuer), MeshError> {
    signer.check(mesh)?;
    let (key, issuer) = match signer {
        Signer::Mesh(key) => {
            body.push(BY_MESH);
            (key, Issuer::Mesh)
        }
        Signer::Admin { key, cert } => {
            body.push(BY_ADMIN);
            body.extend_from_slice(key.node_id().as_bytes());
            (key, Issuer::Admin(Box::new((*cert).clone())))
        }
    };
    let signature = key.signing_key().sign(&message(domain, &body));
    body.extend_from_slice(&signature.to_bytes());
    if let Issuer::Admin(cert) = &issuer {
        body.extend_from_slice(cert.as_bytes());
    }
    Ok((body, issuer))
}

/// Reads the signed ending that follows the body `bytes[..body_len]` of a `domain` object of
/// `mesh`, and checks the signature. `nested`: the object is itself an admin's certificate
/// inside another's ending, which must be signed by the mesh key.
pub(crate) fn open(
    domain: &[u8],
    mesh: &MeshId,
    bytes: &[u8],
    body_len: usize,
    nested: bool,
) -> Result<Issuer, MeshError> {
    let mut r = Reader::new(bytes);
    r.take(body_len)?;
    match r.u8()? {
        BY_MESH => {
            let signed = r.pos();
            let signature = r.array::<SIGNATURE_LEN>()?;
            r.finish()?;
            check_signature(domain, mesh.verifying_key(), &bytes[..signed], &signature)?;
            Ok(Issuer::Mesh)
        }
        BY_ADMIN if nested => Err(MeshError::AdminByAdmin),
        BY_ADMIN => {
            let admin = r.node_id()?;
            let signed = r.pos();
            let signature = r.array::<SIGNATURE_LEN>()?;
            let issuer_error = |source| MeshError::Issuer {
                admin,
                source: Box::new(source),
            };
            let cert = SignedCert::decode_nested(r.rest()).map_err(issuer_error)?;
            let c = cert.cert();
            if c.node_id != admin {
                return Err(issuer_error(MeshError::WrongNode {
                    expected: admin,
                    found: c.node_id,
                }));
            }
            if c.mesh_id != *mesh {
                return Err(issuer_error(MeshError::WrongMesh {
                    expected: *mesh,
                    found: c.mesh_id,
                }));
            }
            if c.role != Role::Admin {
                return Err(MeshError::NotAdmin(admin));
            }
            check_signature(domain, admin.verifying_key(), &bytes[..signed], &signature)?;
            Ok(Issuer::Admin(Box::new(cert)))
        }
        other => Err(FormatError::SignerKind(other).into()),
    }
}

fn check_signature(
    domain: &[u8],
    key: Option<ed25519_dalek::VerifyingKey>,
    signed: &[u8],
    signature: &[u8; SIGNATURE_LEN],
) -> Result<(), MeshError> {
    // Strict: no small-order keys or malleable signatures, so one object has one encoding.
    key.ok_or(MeshError::Signature)?
        .verify_strict(&message(domain, signed), &Signature::from_bytes(signature))
        .map_err(|_| MeshError::Signature)
}

fn message(domain: &[u8], signed: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(domain.len() + signed.len());
    m.extend_from_slice(domain);
    m.extend_from_slice(signed);
    m
}
