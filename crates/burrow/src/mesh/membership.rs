//! Membership on every connection: what a member shows (its certificate and the roster it
//! holds) and what it checks of a peer, as the endpoint's [`Credentials`].

use burrow_proto::mesh::cert::SignedCert;
use burrow_proto::mesh::id::MeshId;
use burrow_proto::mesh::roster::SignedRoster;
use burrow_proto::mesh::MeshError;
use tokio::sync::watch;

use crate::endpoint::{Credentials, Refusal, Side};
use crate::NodeId;

/// What this node shows, and the roster it holds. Rosters that peers show are merged in (the
/// newest valid one wins); subscribers of [`Membership::rosters`] hear of each change.
#[derive(Debug)]
pub struct Membership {
    mesh_id: MeshId,
    name: String,
    cert: SignedCert,
    roster: watch::Sender<SignedRoster>,
}

impl Membership {
    /// This node, in the mesh `mesh_id` called `name`, with `cert`, holding `roster`.
    pub fn new(
        mesh_id: MeshId,
        name: String,
        cert: SignedCert,
        roster: SignedRoster,
    ) -> Membership {
        Membership {
            mesh_id,
            name,
            cert,
            roster: watch::Sender::new(roster),
        }
    }

    /// The roster held now.
    pub fn roster(&self) -> SignedRoster {
        self.roster.borrow().clone()
    }

    /// Changes of the roster held.
    pub fn rosters(&self) -> watch::Receiver<SignedRoster> {
        self.roster.subscribe()
    }

    /// Takes `offered` if it is valid for this mesh and newer than the roster held; says why
    /// not otherwise ([`MeshError::Stale`] for one no newer).
    pub fn offer(&self, offered: SignedRoster) -> Result<(), MeshError> {
        let mut result = Ok(());
        self.roster
            .send_if_modified(|held| match held.merge(offered, super::now()) {
                Ok(newer) => {
                    *held = newer;
                    true
                }
                Err(e) => {
                    result = Err(e);
                    false
                }
            });
        result
    }

    /// Whether `node` showing `cert` is a member now, by the roster held.
    pub fn check(&self, node: &NodeId, cert: &SignedCert) -> Result<(), MeshError> {
        self.roster.borrow().check_member(node, cert, super::now())
    }

    fn refuse(&self, e: impl std::fmt::Display) -> Refusal {
        Refusal::new(format!("not a member of mesh {}: {e}", self.name))
    }
}

/// A proof: `u32` length + certificate + roster.
pub(crate) fn encode_proof(cert: &SignedCert, roster: &SignedRoster) -> Vec<u8> {
    let cert = cert.as_bytes();
    let mut out = Vec::with_capacity(4 + cert.len() + roster.as_bytes().len());
    out.extend_from_slice(&(cert.len() as u32).to_be_bytes());
    out.extend_from_slice(cert);
    out.extend_from_slice(roster.as_bytes());
    out
}

/// Splits and decodes a proof (the signatures are checked; nothing else is).
pub(crate) fn decode_proof(bytes: &[u8]) -> Result<(SignedCert, SignedRoster), String> {
    let (len, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or("a proof shorter than its length")?;
    let len = u32::from_be_bytes(*len) as usize;
    if len > rest.len() {
        return Err("a certificate longer than the proof".into());
    }
    let (cert, roster) = rest.split_at(len);
    let cert = SignedCert::decode(cert).map_err(|e| format!("certificate: {e}"))?;
    let roster = SignedRoster::decode(roster).map_err(|e| format!("roster: {e}"))?;
    Ok((cert, roster))
}

impl Credentials for Membership {
    fn proof(&self) -> Vec<u8> {
        encode_proof(&self.cert, &self.roster.borrow())
    }

    fn check(&self, node: &NodeId, proof: &[u8], _side: Side) -> Result<(), Refusal> {
        let (cert, roster) = decode_proof(proof).map_err(|e| self.refuse(e))?;
        if roster.roster().mesh_id != self.mesh_id {
            return Err(self.refuse("another mesh"));
        }
        // A newer roster teaches us of members (and revocations) we did not know yet.
        match self.offer(roster) {
            Ok(()) | Err(MeshError::Stale { .. }) => {}
            Err(e) => tracing::debug!(peer = %node.short(), "its roster: {e}"),
        }
        Membership::check(self, node, &cert).map_err(|e| self.refuse(e))
    }
}
