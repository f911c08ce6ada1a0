//! Certificate lifetimes: how long the certificates an admin issues are valid, when an online
//! admin renews one, and which renewal a node takes.
//!
//! A certificate is issued for [`DEFAULT_CERT_VALIDITY`] (or what
//! [`NodeOptions::cert_validity`](super::node::NodeOptions::cert_validity) says), backdated a
//! little for peers whose clocks run behind. An admin renews a connected member's certificate
//! once less than a third of its validity is left ([`renew_at`]), at connection and on a
//! timer, and sends it over the mesh connection ([`super::MSG_CERT`]); the node holding the
//! mesh key renews its own. A renewal keeps everything but the serial and the validity, and
//! is taken only if it is valid now and newer ([`check_newer`]). A member whose admins are all
//! offline until its certificate lapses is refused from then on and needs a new invite.

use std::time::Duration;

use burrow_proto::mesh::cert::{MemberCert, Role, SignedCert};
use burrow_proto::mesh::roster::SignedRoster;
use burrow_proto::mesh::signer::Signer;
use burrow_proto::mesh::MeshError;

use crate::NodeId;

/// How long a member certificate is valid when issued or renewed, by default: 90 days.
pub const DEFAULT_CERT_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// Most a certificate is backdated (a quarter of its validity, at most this), so that a peer
/// whose clock runs behind the issuer's takes it at once.
const MAX_BACKDATE_SECS: u64 = 60;

/// Why a node does not take a certificate offered in place of one it holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenewalError {
    /// It is not valid now, for this mesh and node (or its signer is not).
    #[error(transparent)]
    Invalid(#[from] MeshError),
    /// There is none to replace: the peer proved no certificate.
    #[error("no certificate of {0} is held to renew")]
    NoneHeld(NodeId),
    /// Neither its serial is higher nor its validity ends later.
    #[error("not newer than the certificate held (serial {serial}, valid until {not_after})")]
    NotNewer {
        /// The held certificate's serial.
        serial: u64,
        /// The held certificate's end of validity.
        not_after: u64,
    },
}

/// The validity (`not_before`, `not_after`) of a certificate `signer` issues at `now` (unix
/// seconds) for `validity`: backdated by a quarter of it (at most a minute), and ending no
/// later than an admin signer's own certificate.
pub fn validity(now: u64, validity: Duration, signer: &Signer<'_>) -> (u64, u64) {
    let secs = validity.as_secs().max(1);
    let not_before = now.saturating_sub((secs / 4).min(MAX_BACKDATE_SECS));
    let mut not_after = now.saturating_add(secs);
    if let Signer::Admin { cert, .. } = signer {
        not_after = not_after.min(cert.cert().not_after);
    }
    (not_before, not_after)
}

/// The unix second from which `cert` is due for renewal: less than a third of its validity is
/// left then.
pub fn renew_at(cert: &MemberCert) -> u64 {
    cert.not_after - (cert.not_after - cert.not_before) / 3
}

/// What a signer does about a certificate at some time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// Renews it to this.
    Due(MemberCert),
    /// Nothing until this unix second.
    NotYet(u64),
    /// Nothing: the signer may not sign that role (only the mesh key signs admins), or the
    /// renewal would not end later (an admin whose own certificate ends first).
    Never,
}

/// What `signer` does about `current` at `now`, renewing for `validity`: the renewal keeps the
/// mesh, node, name, number and role, and has the next serial and a fresh validity.
pub fn renewal(current: &MemberCert, signer: &Signer<'_>, validity: Duration, now: u64) -> Renewal {
    if current.role == Role::Admin && matches!(signer, Signer::Admin { .. }) {
        return Renewal::Never;
    }
    let at = renew_at(current);
    if now < at {
        return Renewal::NotYet(at);
    }
    let (not_before, not_after) = self::validity(now, validity, signer);
    if not_after <= current.not_after {
        return Renewal::Never;
    }
    Renewal::Due(MemberCert {
        not_before,
        not_after,
        serial: current.serial.saturating_add(1),
        ..current.clone()
    })
}

/// Whether `offered` may replace `held`, the certificate a node holds for itself or for a
/// peer: for the same mesh and node, valid now by the roster held (signed by the mesh key or by
/// an admin that is valid and not revoked), and newer (a higher serial, or a later end).
pub fn check_newer(
    held: &SignedCert,
    offered: &SignedCert,
    roster: &SignedRoster,
    now: u64,
) -> Result<(), RenewalError> {
    let held = held.cert();
    roster.check_member(&held.node_id, offered, now)?;
    let c = offered.cert();
    if c.serial <= held.serial && c.not_after <= held.not_after {
        return Err(RenewalError::NotNewer {
            serial: held.serial,
            not_after: held.not_after,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretKey;
    use burrow_proto::mesh::id::MeshId;
    use burrow_proto::mesh::roster::Roster;

    struct Mesh {
        key: SecretKey,
        id: MeshId,
        roster: SignedRoster,
    }

    fn mesh(seed: u8) -> Mesh {
        let key = SecretKey::from_bytes([seed; 32]);
        let id = MeshId::of(&key);
        let roster = Roster::new(id, 1).sign(&Signer::Mesh(&key)).unwrap();
        Mesh { key, id, roster }
    }

    fn cert(m: &Mesh, node: u8, role: Role, not_before: u64, not_after: u64) -> MemberCert {
        MemberCert {
            mesh_id: m.id,
            node_id: SecretKey::from_bytes([node; 32]).node_id(),
            name: format!("n{node}"),
            number: u32::from(node),
            role,
            not_before,
            not_after,
            serial: 7,
        }
    }

    #[test]
    fn validity_is_backdated_a_little_and_capped_by_an_admin_signer() {
        let m = mesh(1);
        let signer = Signer::Mesh(&m.key);
        assert_eq!(validity(1000, Duration::from_secs(8), &signer), (998, 1008));
        assert_eq!(
            validity(10_000, DEFAULT_CERT_VALIDITY, &signer),
            (10_000 - 60, 10_000 + DEFAULT_CERT_VALIDITY.as_secs())
        );
        let admin_key = SecretKey::from_bytes([9; 32]);
        let mut admin = cert(&m, 9, Role::Admin, 0, 5000);
        admin.node_id = admin_key.node_id();
        let admin = admin.sign(&signer).unwrap();
        let by_admin = Signer::Admin {
            key: &admin_key,
            cert: &admin,
        };
        assert_eq!(
            validity(1000, DEFAULT_CERT_VALIDITY, &by_admin),
            (940, 5000)
        );
    }

    #[test]
    fn renewal_is_due_in_the_last_third_and_keeps_everything_but_serial_and_validity() {
        let m = mesh(1);
        let signer = Signer::Mesh(&m.key);
        let current = cert(&m, 2, Role::Member, 100, 400);
        assert_eq!(renew_at(&current), 300);
        let v = Duration::from_secs(300);
        assert_eq!(renewal(&current, &signer, v, 299), Renewal::NotYet(300));
        let Renewal::Due(next) = renewal(&current, &signer, v, 300) else {
            panic!("due");
        };
        assert_eq!(
            (next.not_before, next.not_after, next.serial),
            (240, 600, 8)
        );
        assert_eq!(
            (&next.name, next.number, next.role, next.node_id),
            (&current.name, current.number, current.role, current.node_id)
        );
        // A renewal that would not end later is not made.
        assert_eq!(
            renewal(&current, &signer, Duration::from_secs(10), 380),
            Renewal::Never
        );
    }

    #[test]
    fn an_admin_renews_members_only() {
        let m = mesh(1);
        let admin_key = SecretKey::from_bytes([9; 32]);
        let mut admin = cert(&m, 9, Role::Admin, 0, 10_000);
        admin.node_id = admin_key.node_id();
        let admin = admin.sign(&Signer::Mesh(&m.key)).unwrap();
        let by_admin = Signer::Admin {
            key: &admin_key,
            cert: &admin,
        };
        let v = Duration::from_secs(300);
        let other_admin = cert(&m, 3, Role::Admin, 100, 400);
        assert_eq!(renewal(&other_admin, &by_admin, v, 100), Renewal::Never);
        assert!(matches!(
            renewal(&other_admin, &Signer::Mesh(&m.key), v, 350),
            Renewal::Due(_)
        ));
        let member = cert(&m, 2, Role::Member, 100, 400);
        let Renewal::Due(next) = renewal(&member, &by_admin, v, 350) else {
            panic!("an admin renews a member");
        };
        next.sign(&by_admin).expect("and may sign it");
    }

    #[test]
    fn only_a_valid_newer_certificate_of_the_same_node_and_mesh_is_taken() {
        let m = mesh(1);
        let signer = Signer::Mesh(&m.key);
        let now = 1000;
        let held = cert(&m, 2, Role::Member, 900, 1100).sign(&signer).unwrap();
        let newer = MemberCert {
            serial: 8,
            not_after: 1300,
            ..held.cert().clone()
        };
        check_newer(&held, &newer.sign(&signer).unwrap(), &m.roster, now).unwrap();
        // The same serial and end, or older: refused.
        let same = held.cert().clone().sign(&signer).unwrap();
        assert!(matches!(
            check_newer(&held, &same, &m.roster, now),
            Err(RenewalError::NotNewer { serial: 7, .. })
        ));
        // Another node's, another mesh's (signed by its key), or one that is not valid now.
        let other_node = MemberCert {
            node_id: SecretKey::from_bytes([3; 32]).node_id(),
            ..newer.clone()
        };
        assert!(matches!(
            check_newer(&held, &other_node.sign(&signer).unwrap(), &m.roster, now),
            Err(RenewalError::Invalid(MeshError::WrongNode { .. }))
        ));
        let other = mesh(2);
        let foreign = MemberCert {
            mesh_id: other.id,
            ..newer.clone()
        };
        assert!(matches!(
            check_newer(
                &held,
                &foreign.sign(&Signer::Mesh(&other.key)).unwrap(),
                &m.roster,
                now
            ),
            Err(RenewalError::Invalid(MeshError::WrongMesh { .. }))
        ));
        let lapsed = MemberCert {
            not_after: 999,
            not_before: 0,
            serial: 9,
            ..newer.clone()
        };
        assert!(matches!(
            check_newer(&held, &lapsed.sign(&signer).unwrap(), &m.roster, now),
            Err(RenewalError::Invalid(MeshError::Expired { .. }))
        ));
        // One whose node the roster revokes.
        let mut revoking = m.roster.roster().clone();
        revoking.revoke(held.cert().node_id);
        revoking.version = 2;
        let revoking = revoking.sign(&signer).unwrap();
        assert!(matches!(
            check_newer(&held, &newer.sign(&signer).unwrap(), &revoking, now),
            Err(RenewalError::Invalid(MeshError::Revoked(_)))
        ));
    }
}
