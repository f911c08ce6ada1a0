//! Membership on every connection: what a member shows (its certificate and the roster it
//! holds) and what it checks of a peer, as the endpoint's [`Credentials`].
//!
//! **The roster-sync gate.** A node that starts may have missed a kick while it was away, and
//! the kicked node would show it an old roster. So until it has exchanged proofs with an admin
//! since starting (and so holds the admin's roster), or the sync wait
//! ([`ROSTER_SYNC_WAIT`] by default) has passed, it admits only admins, and members whose
//! roster is newer than its own; others are refused with [`SYNC_REFUSAL`] and redial soon. A
//! node whose roster names no admin but itself has nobody to wait for.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use burrow_proto::mesh::cert::{Role, SignedCert};
use burrow_proto::mesh::id::MeshId;
use burrow_proto::mesh::roster::SignedRoster;
use burrow_proto::mesh::MeshError;
use tokio::sync::watch;

use super::renewal::{check_newer, RenewalError};
use crate::endpoint::{Credentials, Refusal, Side};
use crate::NodeId;

/// How long after it starts a node waits for an admin's roster before it admits members
/// whose roster is no newer than its own.
pub const ROSTER_SYNC_WAIT: Duration = Duration::from_secs(5);
/// The reason a member is refused while the node waits for an admin's roster.
pub const SYNC_REFUSAL: &str =
    "this node has not synced its roster since it started; retry shortly";
/// What a member whose certificate lapsed is told.
pub const EXPIRED_REFUSAL: &str = "certificate expired; ask an admin for a new invite";

/// What this node shows, and the roster it holds. Rosters that peers show are merged in (the
/// newest valid one wins); subscribers of [`Membership::rosters`] hear of each change. It also
/// keeps the certificate each peer last proved, and the roster-sync gate (see the
/// [module docs](self)).
#[derive(Debug)]
pub struct Membership {
    mesh_id: MeshId,
    name: String,
    cert: Mutex<SignedCert>,
    roster: watch::Sender<SignedRoster>,
    peers: Mutex<HashMap<NodeId, SignedCert>>,
    /// Until when, unless synced, the gate is closed.
    sync_until: Instant,
    synced: AtomicBool,
}

impl Membership {
    /// This node, in the mesh `mesh_id` called `name`, with `cert`, holding `roster`, starting
    /// now with a roster-sync gate open after `sync_wait` at the latest.
    pub fn new(
        mesh_id: MeshId,
        name: String,
        cert: SignedCert,
        roster: SignedRoster,
        sync_wait: Duration,
    ) -> Membership {
        let me = cert.cert().node_id;
        let other_admin = roster
            .roster()
            .members
            .iter()
            .any(|(node, entry)| entry.role == Role::Admin && *node != me);
        Membership {
            mesh_id,
            name,
            cert: Mutex::new(cert),
            roster: watch::Sender::new(roster),
            peers: Mutex::default(),
            sync_until: Instant::now() + sync_wait,
            synced: AtomicBool::new(!other_admin),
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

    /// This node's certificate now.
    pub fn cert(&self) -> SignedCert {
        lock(&self.cert).clone()
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

    /// Takes `offered` as this node's own certificate if it is a valid renewal of it (see
    /// [`check_newer`]); every later proof shows it.
    pub fn renew(&self, offered: SignedCert) -> Result<(), RenewalError> {
        let mut held = lock(&self.cert);
        check_newer(&held, &offered, &self.roster.borrow(), super::now())?;
        *held = offered;
        Ok(())
    }

    /// The certificate `node` last proved (or was renewed to by this node).
    pub fn peer_cert(&self, node: &NodeId) -> Option<SignedCert> {
        lock(&self.peers).get(node).cloned()
    }

    /// Takes `offered` as peer `node`'s certificate if it is a valid renewal of the one it
    /// proved (see [`check_newer`]).
    pub fn renew_peer(&self, node: &NodeId, offered: SignedCert) -> Result<(), RenewalError> {
        let mut peers = lock(&self.peers);
        let Some(held) = peers.get(node) else {
            return Err(RenewalError::NoneHeld(*node));
        };
        check_newer(held, &offered, &self.roster.borrow(), super::now())?;
        peers.insert(*node, offered);
        Ok(())
    }

    /// Forgets `node`'s certificate (its connections are gone, or it was cut off).
    pub fn forget_peer(&self, node: &NodeId) {
        lock(&self.peers).remove(node);
    }

    /// Whether the roster-sync gate is open: an admin's proof was seen since starting, or
    /// the wait passed.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed) || Instant::now() >= self.sync_until
    }

    /// What a peer is told when `e` says it is not a member.
    pub fn refusal(&self, e: &MeshError) -> Refusal {
        match e {
            MeshError::Expired { .. } => self.refuse(EXPIRED_REFUSAL),
            e => self.refuse(e),
        }
    }

    fn refuse(&self, e: impl std::fmt::Display) -> Refusal {
        Refusal::new(format!("not a member of mesh {}: {e}", self.name))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
        encode_proof(&lock(&self.cert), &self.roster.borrow())
    }

    fn check(&self, node: &NodeId, proof: &[u8], _side: Side) -> Result<(), Refusal> {
        let (cert, roster) = decode_proof(proof).map_err(|e| self.refuse(e))?;
        if roster.roster().mesh_id != self.mesh_id {
            return Err(self.refuse("another mesh"));
        }
        // A newer roster teaches us of members (and revocations) we did not know yet.
        let newer = match self.offer(roster) {
            Ok(()) => true,
            Err(MeshError::Stale { .. }) => false,
            Err(e) => {
                tracing::debug!(peer = %node.short(), "its roster: {e}");
                false
            }
        };
        Membership::check(self, node, &cert).map_err(|e| self.refusal(&e))?;
        if cert.cert().role == Role::Admin {
            self.synced.store(true, Ordering::Relaxed);
        } else if !newer && !self.is_synced() {
            return Err(Refusal::retry_later(SYNC_REFUSAL));
        }
        lock(&self.peers).insert(*node, cert);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretKey;
    use burrow_proto::mesh::cert::MemberCert;
    use burrow_proto::mesh::roster::{Roster, RosterEntry};
    use burrow_proto::mesh::signer::Signer;

    struct Mesh {
        key: SecretKey,
        id: MeshId,
    }

    impl Mesh {
        fn new() -> Mesh {
            let key = SecretKey::from_bytes([1; 32]);
            Mesh {
                id: MeshId::of(&key),
                key,
            }
        }

        fn cert(&self, node: &SecretKey, role: Role, not_after: u64) -> SignedCert {
            MemberCert {
                mesh_id: self.id,
                node_id: node.node_id(),
                name: node.node_id().short(),
                number: 2,
                role,
                not_before: 0,
                not_after,
                serial: 1,
            }
            .sign(&Signer::Mesh(&self.key))
            .unwrap()
        }

        /// A roster of `version` that lists `admin` as an admin and revokes `revoked`.
        fn roster(&self, version: u64, admin: &SecretKey, revoked: &[NodeId]) -> SignedRoster {
            let mut r = Roster::new(self.id, version);
            r.members.insert(
                admin.node_id(),
                RosterEntry {
                    name: "admin".into(),
                    number: 1,
                    role: Role::Admin,
                },
            );
            for n in revoked {
                r.revoke(*n);
            }
            r.sign(&Signer::Mesh(&self.key)).unwrap()
        }
    }

    fn far() -> u64 {
        super::super::now() + 3600
    }

    #[test]
    fn a_started_node_admits_admins_and_newer_rosters_only_until_it_synced() {
        let m = Mesh::new();
        let (admin, me, member, kicked) = (
            SecretKey::from_bytes([2; 32]),
            SecretKey::from_bytes([3; 32]),
            SecretKey::from_bytes([4; 32]),
            SecretKey::from_bytes([5; 32]),
        );
        let old = m.roster(1, &admin, &[]);
        let node = Membership::new(
            m.id,
            "lab".into(),
            m.cert(&me, Role::Member, far()),
            old.clone(),
            Duration::from_secs(3600),
        );
        assert!(!node.is_synced(), "another admin may have kicked someone");
        // The kicked node shows the old roster: refused for now, not admitted.
        let kicked_proof = encode_proof(&m.cert(&kicked, Role::Member, far()), &old);
        let refused = Credentials::check(&node, &kicked.node_id(), &kicked_proof, Side::Listener);
        assert_eq!(refused, Err(Refusal::retry_later(SYNC_REFUSAL)));
        assert!(node.peer_cert(&kicked.node_id()).is_none());
        // A member with a newer roster is admitted, and its roster taken.
        let newer = m.roster(2, &admin, &[]);
        let proof = encode_proof(&m.cert(&member, Role::Member, far()), &newer);
        Credentials::check(&node, &member.node_id(), &proof, Side::Dialler).unwrap();
        assert_eq!(node.roster().roster().version, 2);
        // The admin's proof brings the kick and opens the gate; the kicked node is out.
        let kick = m.roster(3, &admin, &[kicked.node_id()]);
        let proof = encode_proof(&m.cert(&admin, Role::Admin, far()), &kick);
        Credentials::check(&node, &admin.node_id(), &proof, Side::Dialler).unwrap();
        assert!(node.is_synced());
        let refused = Credentials::check(&node, &kicked.node_id(), &kicked_proof, Side::Listener)
            .unwrap_err();
        assert!(refused.reason.contains("revoked"), "{refused}");
        // A member showing the roster held is admitted now.
        let proof = encode_proof(&m.cert(&member, Role::Member, far()), &kick);
        Credentials::check(&node, &member.node_id(), &proof, Side::Listener).unwrap();
    }

    #[test]
    fn the_gate_opens_after_the_wait_or_for_a_sole_admin() {
        let m = Mesh::new();
        let (admin, member) = (
            SecretKey::from_bytes([2; 32]),
            SecretKey::from_bytes([4; 32]),
        );
        let roster = m.roster(1, &admin, &[]);
        let proof = encode_proof(&m.cert(&member, Role::Member, far()), &roster);
        let waited = Membership::new(
            m.id,
            "lab".into(),
            m.cert(&SecretKey::from_bytes([3; 32]), Role::Member, far()),
            roster.clone(),
            Duration::ZERO,
        );
        Credentials::check(&waited, &member.node_id(), &proof, Side::Listener).unwrap();
        // The admin the roster names, restarting: no other admin could have kicked anyone.
        let sole = Membership::new(
            m.id,
            "lab".into(),
            m.cert(&admin, Role::Admin, far()),
            roster,
            Duration::from_secs(3600),
        );
        assert!(sole.is_synced());
        Credentials::check(&sole, &member.node_id(), &proof, Side::Listener).unwrap();
    }

    #[test]
    fn a_lapsed_certificate_is_refused_with_its_own_reason() {
        let m = Mesh::new();
        let (admin, member) = (
            SecretKey::from_bytes([2; 32]),
            SecretKey::from_bytes([4; 32]),
        );
        let roster = m.roster(1, &admin, &[]);
        let node = Membership::new(
            m.id,
            "lab".into(),
            m.cert(&admin, Role::Admin, far()),
            roster.clone(),
            Duration::ZERO,
        );
        let lapsed = encode_proof(&m.cert(&member, Role::Member, 10), &roster);
        let refused =
            Credentials::check(&node, &member.node_id(), &lapsed, Side::Listener).unwrap_err();
        assert_eq!(
            refused.reason,
            format!("not a member of mesh lab: {EXPIRED_REFUSAL}")
        );
    }

    #[test]
    fn renewals_replace_own_and_peer_certificates_only_when_newer() {
        let m = Mesh::new();
        let (admin, member) = (
            SecretKey::from_bytes([2; 32]),
            SecretKey::from_bytes([4; 32]),
        );
        let roster = m.roster(1, &admin, &[]);
        let node = Membership::new(
            m.id,
            "lab".into(),
            m.cert(&admin, Role::Admin, far()),
            roster.clone(),
            Duration::ZERO,
        );
        let renewed = m.cert(&admin, Role::Admin, far() + 10);
        node.renew(renewed.clone()).unwrap();
        assert_eq!(node.cert(), renewed);
        assert_eq!(
            node.proof(),
            encode_proof(&renewed, &roster),
            "shown from now on"
        );
        assert!(
            node.renew(m.cert(&admin, Role::Admin, far())).is_err(),
            "older"
        );
        // A peer's: only once it proved one, and only newer.
        let peer_renewed = m.cert(&member, Role::Member, far() + 10);
        assert!(node
            .renew_peer(&member.node_id(), peer_renewed.clone())
            .is_err());
        let proof = encode_proof(&m.cert(&member, Role::Member, far()), &roster);
        Credentials::check(&node, &member.node_id(), &proof, Side::Listener).unwrap();
        node.renew_peer(&member.node_id(), peer_renewed.clone())
            .unwrap();
        assert_eq!(node.peer_cert(&member.node_id()), Some(peer_renewed));
        // Not another node's certificate as this peer's.
        let other = m.cert(&SecretKey::from_bytes([6; 32]), Role::Member, far() + 20);
        assert!(node.renew_peer(&member.node_id(), other).is_err());
    }
}
