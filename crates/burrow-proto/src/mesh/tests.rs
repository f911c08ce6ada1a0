//! Certificates, rosters and invites: round trips, limits, tampering, forgeries, time and
//! revocation.

use ed25519_dalek::Signer as _;

use super::cert::{MemberCert, Role, SignedCert, CERT_DOMAIN, MAX_CERT_LEN};
use super::error::{FormatError, MeshError};
use super::id::MeshId;
use super::invite::{Invite, SignedInvite, INVITE_DOMAIN, MAX_INVITE_TEXT_LEN, MAX_USES};
use super::roster::{
    Roster, RosterEntry, SignedRoster, MAX_MEMBERS, MAX_REVOKED, MAX_ROSTER_LEN, ROSTER_DOMAIN,
};
use super::signer::{Issuer, Signer};
use crate::identity::{NodeId, SecretKey};
use crate::ticket::Ticket;
use crate::Rng;

const NOW: u64 = 1_800_000_000;

fn mesh_key() -> SecretKey {
    SecretKey::from_bytes([1; 32])
}

fn mesh() -> MeshId {
    MeshId::of(&mesh_key())
}

/// A node key; `n` names it.
fn key(n: u8) -> SecretKey {
    SecretKey::from_bytes([n; 32])
}

fn id(n: u8) -> NodeId {
    key(n).node_id()
}

/// What a certificate of node `n` says, valid from NOW - 100 to NOW + 1000.
fn fields(n: u8, role: Role) -> MemberCert {
    MemberCert {
        mesh_id: mesh(),
        node_id: id(n),
        name: format!("node-{n}"),
        number: u32::from(n),
        role,
        not_before: NOW - 100,
        not_after: NOW + 1000,
        serial: 7,
    }
}

fn by_mesh(n: u8, role: Role) -> SignedCert {
    fields(n, role).sign(&Signer::Mesh(&mesh_key())).unwrap()
}

/// Node 2 is the admin in these tests.
fn admin() -> SignedCert {
    by_mesh(2, Role::Admin)
}

fn by_admin(n: u8) -> SignedCert {
    let admin = admin();
    fields(n, Role::Member)
        .sign(&Signer::Admin {
            key: &key(2),
            cert: &admin,
        })
        .unwrap()
}

fn roster(version: u64, members: &[u8], revoked: &[u8]) -> Roster {
    let mut r = Roster::new(mesh(), version);
    for n in members {
        let entry = RosterEntry {
            name: format!("node-{n}"),
            number: u32::from(*n),
            role: if *n == 2 { Role::Admin } else { Role::Member },
        };
        r.members.insert(id(*n), entry);
    }
    r.revoked.extend(revoked.iter().map(|n| id(*n)));
    r
}

fn signed_roster(version: u64, members: &[u8], revoked: &[u8]) -> SignedRoster {
    roster(version, members, revoked)
        .sign(&Signer::Mesh(&mesh_key()))
        .unwrap()
}

fn inviter_ticket(n: u8) -> Ticket {
    let mut t = Ticket::new(id(n));
    t.relays.push("https://relay.example.com".parse().unwrap());
    t.addrs.push("203.0.113.7:41641".parse().unwrap());
    t.addrs.push("[2001:db8::1]:41641".parse().unwrap());
    t
}

fn invite(inviter: u8) -> Invite {
    let mut rng = Rng::new(9);
    Invite::new(
        mesh(),
        "home".into(),
        inviter_ticket(inviter),
        NOW - 10,
        NOW + 3600,
        &mut rng,
    )
}

/// Re-signs `body || signer field` as `signer` would, and appends `trailer` (an issuer cert):
/// what a forger who holds `signer` can make.
fn forge(domain: &[u8], body: &[u8], signer: &SecretKey, admin: bool, trailer: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    if admin {
        out.push(1);
        out.extend_from_slice(signer.node_id().as_bytes());
    } else {
        out.push(0);
    }
    let mut message = domain.to_vec();
    message.extend_from_slice(&out);
    out.extend_from_slice(&signer.signing_key().sign(&message).to_bytes());
    out.extend_from_slice(trailer);
    out
}

/// The body of an object signed by the mesh key: all but the signer byte and signature.
fn mesh_signed_body(bytes: &[u8]) -> Vec<u8> {
    bytes[..bytes.len() - 65].to_vec()
}

/// Every single-byte change (two ways) makes `decode` fail.
fn assert_every_change_fails<T: std::fmt::Debug>(
    bytes: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, MeshError>,
) {
    for i in 0..bytes.len() {
        for flip in [0x01, 0x80] {
            let mut b = bytes.to_vec();
            b[i] ^= flip;
            assert!(decode(&b).is_err(), "byte {i} ^ {flip:#x} was accepted");
        }
    }
    for len in 0..bytes.len() {
        assert!(decode(&bytes[..len]).is_err(), "cut to {len} was accepted");
    }
}

#[test]
fn certificates_round_trip_and_verify() {
    let member = by_mesh(3, Role::Member);
    assert_eq!(SignedCert::decode(member.as_bytes()), Ok(member.clone()));
    assert_eq!(member.issuer(), &Issuer::Mesh);
    assert_eq!(member.cert(), &fields(3, Role::Member));
    assert_eq!(member.verify(&mesh(), NOW, None), Ok(()));
    // Ed25519 signs deterministically: the same certificate, the same bytes.
    assert_eq!(by_mesh(3, Role::Member).as_bytes(), member.as_bytes());
    // Mesh-signed with a 6-byte name.
    assert_eq!(member.as_bytes().len(), 166);

    let delegated = by_admin(4);
    let back = SignedCert::decode(delegated.as_bytes()).unwrap();
    assert_eq!(back, delegated);
    assert_eq!(back.issuer().admin(), Some(id(2)));
    assert_eq!(back.issuer(), &Issuer::Admin(Box::new(admin())));
    assert_eq!(back.verify(&mesh(), NOW, None), Ok(()));
    assert_eq!(delegated.as_bytes().len(), 166 + 32 + 166);
    assert_eq!(delegated.clone().into_bytes(), delegated.as_bytes());
}

#[test]
fn certificate_limits() {
    let sign = |c: &MemberCert| c.sign(&Signer::Mesh(&mesh_key()));
    let mut c = fields(3, Role::Member);
    c.name = "n".repeat(super::MAX_NAME_LEN);
    c.not_after = u64::MAX;
    c.serial = u64::MAX;
    c.number = u32::MAX;
    let longest = sign(&c).unwrap();
    assert_eq!(SignedCert::decode(longest.as_bytes()), Ok(longest.clone()));

    for (name, why) in [
        ("", "empty"),
        (&*"n".repeat(65), "longer than 64 bytes"),
        ("a\nb", "has control characters"),
    ] {
        c.name = name.into();
        assert_eq!(sign(&c), Err(FormatError::Name(why).into()), "{name:?}");
    }
    c = fields(3, Role::Member);
    c.not_after = c.not_before - 1;
    assert_eq!(
        sign(&c),
        Err(FormatError::Validity {
            start: NOW - 100,
            end: NOW - 101
        }
        .into())
    );

    // Hand-made bodies, resealed by the mesh key so the decoder reaches the field.
    let good = by_mesh(3, Role::Member);
    let body_len = good.as_bytes().len() - 65;
    let body = &good.as_bytes()[..body_len];
    let reseal = |body: &[u8]| forge(CERT_DOMAIN, body, &mesh_key(), false, &[]);
    assert_eq!(SignedCert::decode(&reseal(body)), Ok(good.clone()));
    let at = |i: usize, v: u8| {
        let mut b = body.to_vec();
        b[i] = v;
        SignedCert::decode(&reseal(&b))
    };
    assert_eq!(at(0, 2), Err(FormatError::Version(2).into()));
    assert_eq!(at(1 + 32 + 32 + 8 + 4, 2), Err(FormatError::Role(2).into()));
    // The name's length byte: beyond the end, then 0.
    assert_eq!(at(94, 200), Err(FormatError::Truncated.into()));
    assert_eq!(at(94, 0), Err(FormatError::Name("empty").into()));
    let mut b = body.to_vec();
    b[96] = 0xff;
    assert_eq!(
        SignedCert::decode(&reseal(&b)),
        Err(FormatError::Name("not UTF-8").into())
    );
    let mut b = body.to_vec();
    b[33..65].copy_from_slice(&[2; 32]);
    assert!(matches!(
        SignedCert::decode(&reseal(&b)),
        Err(MeshError::Format(FormatError::NodeId(_)))
    ));

    let mut b = good.as_bytes().to_vec();
    b[body_len] = 2;
    assert_eq!(
        SignedCert::decode(&b),
        Err(FormatError::SignerKind(2).into())
    );
    let mut b = good.as_bytes().to_vec();
    b.push(0);
    assert_eq!(
        SignedCert::decode(&b),
        Err(FormatError::TrailingBytes(1).into())
    );
    let long = vec![1; MAX_CERT_LEN + 1];
    assert_eq!(
        SignedCert::decode(&long),
        Err(FormatError::TooLarge {
            len: MAX_CERT_LEN + 1,
            max: MAX_CERT_LEN
        }
        .into())
    );
    // The longest certificate is one an admin with a 64-byte name signs for a member with one.
    let mut admin_fields = fields(2, Role::Admin);
    admin_fields.name = "a".repeat(64);
    let admin = sign(&admin_fields).unwrap();
    let mut member = fields(3, Role::Member);
    member.name = "m".repeat(64);
    let signed = member
        .sign(&Signer::Admin {
            key: &key(2),
            cert: &admin,
        })
        .unwrap();
    assert_eq!(signed.as_bytes().len(), MAX_CERT_LEN);
    assert!(SignedCert::decode(signed.as_bytes()).is_ok());
}

#[test]
fn every_changed_byte_of_a_certificate_fails() {
    assert_every_change_fails(by_mesh(3, Role::Member).as_bytes(), SignedCert::decode);
    assert_every_change_fails(by_admin(4).as_bytes(), SignedCert::decode);
}

#[test]
fn a_member_cannot_forge_a_longer_validity() {
    let member = by_mesh(3, Role::Member);
    let bytes = member.as_bytes();
    let body_len = bytes.len() - 65;
    let mut body = bytes[..body_len].to_vec();
    // not_after sits after version, mesh, node, serial, number, role and not_before.
    let at = 1 + 32 + 32 + 8 + 4 + 1 + 8;
    body[at..at + 8].copy_from_slice(&u64::MAX.to_be_bytes());

    // Unsigned: the signature no longer matches.
    let mut tampered = body.clone();
    tampered.extend_from_slice(&bytes[body_len..]);
    assert_eq!(SignedCert::decode(&tampered), Err(MeshError::Signature));
    // Re-signed by the member's own key, presenting its member certificate as authority.
    let forged = forge(CERT_DOMAIN, &body, &key(3), true, bytes);
    assert_eq!(SignedCert::decode(&forged), Err(MeshError::NotAdmin(id(3))));
    // Re-signed by the member's key, claiming to be the mesh key.
    let forged = forge(CERT_DOMAIN, &body, &key(3), false, &[]);
    assert_eq!(SignedCert::decode(&forged), Err(MeshError::Signature));
    // With a home-made admin certificate for itself.
    let fake_admin = forge(
        CERT_DOMAIN,
        &admin().as_bytes()[..admin().as_bytes().len() - 65]
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (33..65).contains(&i) {
                    id(3).as_bytes()[i - 33]
                } else {
                    *b
                }
            })
            .collect::<Vec<_>>(),
        &key(3),
        false,
        &[],
    );
    let forged = forge(CERT_DOMAIN, &body, &key(3), true, &fake_admin);
    assert_eq!(
        SignedCert::decode(&forged),
        Err(MeshError::Issuer {
            admin: id(3),
            source: Box::new(MeshError::Signature)
        })
    );
}

#[test]
fn only_the_mesh_key_makes_admins() {
    let admin = admin();
    let as_admin = Signer::Admin {
        key: &key(2),
        cert: &admin,
    };
    assert_eq!(
        fields(4, Role::Admin).sign(&as_admin),
        Err(MeshError::AdminByAdmin)
    );
    // Forged by hand: an admin certificate signed by the admin.
    let body = mesh_signed_body(by_mesh(4, Role::Admin).as_bytes());
    let forged = forge(CERT_DOMAIN, &body, &key(2), true, admin.as_bytes());
    assert_eq!(SignedCert::decode(&forged), Err(MeshError::AdminByAdmin));
    // Signed by a node whose "admin" certificate is itself delegated: two links. (A
    // certificate so signed is longer than any certificate may be.)
    let roster_body = mesh_signed_body(signed_roster(1, &[3], &[]).as_bytes());
    let chained = forge(
        ROSTER_DOMAIN,
        &roster_body,
        &key(4),
        true,
        by_admin(4).as_bytes(),
    );
    assert_eq!(
        SignedRoster::decode(&chained),
        Err(MeshError::Issuer {
            admin: id(4),
            source: Box::new(MeshError::AdminByAdmin)
        })
    );
    let member_body = mesh_signed_body(by_mesh(5, Role::Member).as_bytes());
    let chained = forge(
        CERT_DOMAIN,
        &member_body,
        &key(4),
        true,
        by_admin(4).as_bytes(),
    );
    assert!(matches!(
        SignedCert::decode(&chained),
        Err(MeshError::Format(FormatError::TooLarge { .. }))
    ));

    // Signers that may not sign.
    assert_eq!(
        fields(3, Role::Member).sign(&Signer::Mesh(&key(9))),
        Err(MeshError::NotMeshKey(mesh()))
    );
    assert_eq!(
        fields(3, Role::Member).sign(&Signer::Admin {
            key: &key(9),
            cert: &admin
        }),
        Err(MeshError::KeyMismatch {
            expected: id(2),
            key: id(9)
        })
    );
    let member = by_mesh(3, Role::Member);
    assert_eq!(
        fields(4, Role::Member).sign(&Signer::Admin {
            key: &key(3),
            cert: &member
        }),
        Err(MeshError::NotAdmin(id(3)))
    );
    let mut outliving = fields(4, Role::Member);
    outliving.not_after = NOW + 1001;
    assert_eq!(
        outliving.sign(&as_admin),
        Err(MeshError::OutlivesSigner {
            not_after: NOW + 1001,
            signer_not_after: NOW + 1000
        })
    );
    let mut other_mesh = fields(4, Role::Member);
    other_mesh.mesh_id = MeshId::of(&key(9));
    assert_eq!(
        other_mesh.sign(&as_admin),
        Err(MeshError::WrongMesh {
            expected: MeshId::of(&key(9)),
            found: mesh()
        })
    );
}

#[test]
fn the_signers_certificate_must_be_its_own_and_of_the_mesh() {
    let body = mesh_signed_body(signed_roster(1, &[3], &[]).as_bytes());
    // Signed by 3, carrying 2's admin certificate.
    let forged = forge(ROSTER_DOMAIN, &body, &key(3), true, admin().as_bytes());
    assert_eq!(
        SignedRoster::decode(&forged),
        Err(MeshError::Issuer {
            admin: id(3),
            source: Box::new(MeshError::WrongNode {
                expected: id(3),
                found: id(2)
            })
        })
    );
    // Signed by an admin of another mesh.
    let other = MeshId::of(&key(9));
    let foreign_admin = MemberCert {
        mesh_id: other,
        ..fields(2, Role::Admin)
    }
    .sign(&Signer::Mesh(&key(9)))
    .unwrap();
    let forged = forge(
        ROSTER_DOMAIN,
        &body,
        &key(2),
        true,
        foreign_admin.as_bytes(),
    );
    assert_eq!(
        SignedRoster::decode(&forged),
        Err(MeshError::Issuer {
            admin: id(2),
            source: Box::new(MeshError::WrongMesh {
                expected: mesh(),
                found: other
            })
        })
    );
}

#[test]
fn certificates_are_valid_only_in_their_time_and_mesh() {
    let c = by_mesh(3, Role::Member);
    assert_eq!(
        c.verify(&mesh(), NOW - 101, None),
        Err(MeshError::NotYetValid {
            not_before: NOW - 100,
            now: NOW - 101
        })
    );
    assert_eq!(c.verify(&mesh(), NOW - 100, None), Ok(()));
    assert_eq!(c.verify(&mesh(), NOW + 1000, None), Ok(()));
    let e = c.verify(&mesh(), NOW + 1001, None).unwrap_err();
    assert_eq!(
        e,
        MeshError::Expired {
            not_after: NOW + 1000,
            now: NOW + 1001
        }
    );
    assert!(e.to_string().contains("expired"), "{e}");
    let other = MeshId::of(&key(9));
    assert_eq!(
        c.verify(&other, NOW, None),
        Err(MeshError::WrongMesh {
            expected: other,
            found: mesh()
        })
    );

    // Signed by an admin: valid only while the admin's certificate is.
    let mut admin_fields = fields(2, Role::Admin);
    admin_fields.not_after = NOW + 500;
    let admin = admin_fields.sign(&Signer::Mesh(&mesh_key())).unwrap();
    let mut member = fields(4, Role::Member);
    member.not_after = NOW + 500;
    let delegated = member
        .sign(&Signer::Admin {
            key: &key(2),
            cert: &admin,
        })
        .unwrap();
    assert_eq!(delegated.verify(&mesh(), NOW + 500, None), Ok(()));
    // A certificate whose own validity goes on, made by hand, still dies with its admin's.
    let mut longer = delegated.as_bytes()[..166 - 65].to_vec();
    let at = 1 + 32 + 32 + 8 + 4 + 1 + 8;
    longer[at..at + 8].copy_from_slice(&(NOW + 900).to_be_bytes());
    let longer = SignedCert::decode(&forge(
        CERT_DOMAIN,
        &longer,
        &key(2),
        true,
        admin.as_bytes(),
    ))
    .unwrap();
    assert_eq!(longer.cert().not_after, NOW + 900);
    let e = longer.verify(&mesh(), NOW + 501, None).unwrap_err();
    assert_eq!(
        e,
        MeshError::Issuer {
            admin: id(2),
            source: Box::new(MeshError::Expired {
                not_after: NOW + 500,
                now: NOW + 501
            })
        }
    );
    assert!(
        e.to_string().contains("admin certificate is not valid"),
        "{e}"
    );
}

#[test]
fn revoked_members_and_admins_are_refused() {
    let r = signed_roster(2, &[2, 3, 4], &[5]);
    assert_eq!(
        r.check_member(&id(3), &by_mesh(3, Role::Member), NOW),
        Ok(())
    );
    assert_eq!(r.check_member(&id(4), &by_admin(4), NOW), Ok(()));
    assert_eq!(
        r.check_member(&id(5), &by_mesh(5, Role::Member), NOW),
        Err(MeshError::Revoked(id(5)))
    );
    assert_eq!(
        r.check_member(&id(6), &by_mesh(3, Role::Member), NOW),
        Err(MeshError::WrongNode {
            expected: id(6),
            found: id(3)
        })
    );
    // Not in the member list, but a valid certificate: a member (the list may lag).
    assert_eq!(
        r.check_member(&id(7), &by_mesh(7, Role::Member), NOW),
        Ok(())
    );
    assert!(matches!(
        r.check_member(&id(3), &by_mesh(3, Role::Member), NOW + 1001),
        Err(MeshError::Expired { .. })
    ));
    let stranger = fields(3, Role::Member);
    let stranger = MemberCert {
        mesh_id: MeshId::of(&key(9)),
        ..stranger
    }
    .sign(&Signer::Mesh(&key(9)))
    .unwrap();
    assert!(matches!(
        r.check_member(&id(3), &stranger, NOW),
        Err(MeshError::WrongMesh { .. })
    ));

    // The admin is revoked: it is out, and so is everyone it vouched for.
    let mut kicked = roster(3, &[3, 4], &[]);
    kicked.revoke(id(2));
    let kicked = kicked.sign(&Signer::Mesh(&mesh_key())).unwrap();
    assert_eq!(
        kicked.check_member(&id(2), &admin(), NOW),
        Err(MeshError::Revoked(id(2)))
    );
    assert_eq!(
        kicked.check_member(&id(4), &by_admin(4), NOW),
        Err(MeshError::IssuerRevoked(id(2)))
    );
    assert_eq!(
        kicked.check_member(&id(3), &by_mesh(3, Role::Member), NOW),
        Ok(())
    );
    // A roster of another mesh says nothing about ours.
    assert!(matches!(
        by_mesh(3, Role::Member).verify(
            &mesh(),
            NOW,
            Some(
                &Roster::new(MeshId::of(&key(9)), 1)
                    .sign(&Signer::Mesh(&key(9)))
                    .unwrap()
            )
        ),
        Err(MeshError::WrongMesh { .. })
    ));
}

#[test]
fn rosters_round_trip() {
    let members: Vec<u8> = (2..52).collect();
    let r = signed_roster(5, &members, &[60, 61]);
    assert_eq!(SignedRoster::decode(r.as_bytes()), Ok(r.clone()));
    assert_eq!(r.verify(&mesh(), NOW), Ok(()));
    assert_eq!(r.roster().members.len(), 50);
    // Same roster, same bytes.
    assert_eq!(
        signed_roster(5, &members, &[60, 61]).as_bytes(),
        r.as_bytes()
    );

    // 50 members with 8-byte names, nobody revoked: the size the docs give.
    let mut fifty = Roster::new(mesh(), 1);
    for n in 0..50u8 {
        let entry = RosterEntry {
            name: format!("member{n:02}"),
            number: u32::from(n) + 1,
            role: Role::Member,
        };
        fifty.members.insert(key(100 + n).node_id(), entry);
    }
    let fifty = fifty.sign(&Signer::Mesh(&mesh_key())).unwrap();
    assert_eq!(fifty.as_bytes().len(), 2410);

    let admin = admin();
    let by_admin = roster(6, &members, &[])
        .sign(&Signer::Admin {
            key: &key(2),
            cert: &admin,
        })
        .unwrap();
    let back = SignedRoster::decode(by_admin.as_bytes()).unwrap();
    assert_eq!(back, by_admin);
    assert_eq!(back.issuer().admin(), Some(id(2)));
    assert_eq!(back.verify(&mesh(), NOW), Ok(()));
    assert_eq!(back.clone().into_bytes(), back.as_bytes());
}

/// Distinct valid node ids, more than the 255 `key(n)` makes.
fn many_ids(count: usize, salt: u8) -> Vec<NodeId> {
    (0..count)
        .map(|i| {
            let mut seed = [salt; 32];
            seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
            SecretKey::from_bytes(seed).node_id()
        })
        .collect()
}

#[test]
fn roster_limits() {
    let mut full = Roster::new(mesh(), u64::MAX);
    for (i, node) in many_ids(MAX_MEMBERS, 1).into_iter().enumerate() {
        let entry = RosterEntry {
            name: "x".repeat(super::MAX_NAME_LEN),
            number: i as u32,
            role: Role::Member,
        };
        full.members.insert(node, entry);
    }
    full.revoked.extend(many_ids(MAX_REVOKED, 2));
    let mut admin_fields = fields(2, Role::Admin);
    admin_fields.name = "a".repeat(64);
    let admin = admin_fields.sign(&Signer::Mesh(&mesh_key())).unwrap();
    let signer = Signer::Admin {
        key: &key(2),
        cert: &admin,
    };
    let signed = full.sign(&signer).unwrap();
    assert_eq!(signed.as_bytes().len(), MAX_ROSTER_LEN);
    assert_eq!(SignedRoster::decode(signed.as_bytes()), Ok(signed.clone()));

    let mut over = full.clone();
    over.members
        .insert(id(3), over.members.values().next().unwrap().clone());
    assert_eq!(
        over.sign(&signer),
        Err(FormatError::TooMany {
            what: "members",
            count: MAX_MEMBERS + 1,
            max: MAX_MEMBERS
        }
        .into())
    );
    let mut over = full.clone();
    over.revoked.insert(id(3));
    assert!(matches!(
        over.sign(&signer),
        Err(MeshError::Format(FormatError::TooMany {
            what: "revoked node ids",
            ..
        }))
    ));
    let mut dup = roster(1, &[3, 4], &[]);
    dup.members.get_mut(&id(4)).unwrap().number = 3;
    assert_eq!(
        dup.sign(&Signer::Mesh(&mesh_key())),
        Err(FormatError::DuplicateNumber(3).into())
    );
    let mut both = roster(1, &[3, 4], &[]);
    both.revoked.insert(id(4));
    assert_eq!(
        both.sign(&Signer::Mesh(&mesh_key())),
        Err(FormatError::MemberRevoked(id(4)).into())
    );
    let mut nameless = roster(1, &[3], &[]);
    nameless.members.get_mut(&id(3)).unwrap().name.clear();
    assert_eq!(
        nameless.sign(&Signer::Mesh(&mesh_key())),
        Err(FormatError::Name("empty").into())
    );

    // Hand-made bodies, resealed: order, repeats and counts.
    let reseal = |body: &[u8]| forge(ROSTER_DOMAIN, body, &mesh_key(), false, &[]);
    let head = |count: u16| {
        let mut b = vec![1];
        b.extend_from_slice(mesh().as_bytes());
        b.extend_from_slice(&1u64.to_be_bytes());
        b.extend_from_slice(&count.to_be_bytes());
        b
    };
    let entry = |b: &mut Vec<u8>, node: &NodeId, number: u32| {
        b.extend_from_slice(node.as_bytes());
        b.extend_from_slice(&number.to_be_bytes());
        b.extend_from_slice(&[0, 1, b'n']);
    };
    let (lo, hi) = if id(3) < id(4) {
        (id(3), id(4))
    } else {
        (id(4), id(3))
    };
    let mut b = head(2);
    entry(&mut b, &hi, 1);
    entry(&mut b, &lo, 2);
    b.extend_from_slice(&0u16.to_be_bytes());
    assert_eq!(
        SignedRoster::decode(&reseal(&b)),
        Err(FormatError::Unsorted("members").into())
    );
    let mut b = head(2);
    entry(&mut b, &lo, 1);
    entry(&mut b, &lo, 2);
    b.extend_from_slice(&0u16.to_be_bytes());
    assert_eq!(
        SignedRoster::decode(&reseal(&b)),
        Err(FormatError::Unsorted("members").into())
    );
    let mut b = head(0);
    b.extend_from_slice(&2u16.to_be_bytes());
    b.extend_from_slice(hi.as_bytes());
    b.extend_from_slice(lo.as_bytes());
    assert_eq!(
        SignedRoster::decode(&reseal(&b)),
        Err(FormatError::Unsorted("revoked node ids").into())
    );
    let mut b = head(1);
    entry(&mut b, &lo, 1);
    b.extend_from_slice(&1u16.to_be_bytes());
    b.extend_from_slice(lo.as_bytes());
    assert_eq!(
        SignedRoster::decode(&reseal(&b)),
        Err(FormatError::MemberRevoked(lo).into())
    );
    let mut b = head(2);
    entry(&mut b, &lo, 1);
    entry(&mut b, &hi, 1);
    b.extend_from_slice(&0u16.to_be_bytes());
    assert_eq!(
        SignedRoster::decode(&reseal(&b)),
        Err(FormatError::DuplicateNumber(1).into())
    );
    assert_eq!(
        SignedRoster::decode(&reseal(&head(MAX_MEMBERS as u16 + 1))),
        Err(FormatError::TooMany {
            what: "members",
            count: MAX_MEMBERS + 1,
            max: MAX_MEMBERS
        }
        .into())
    );
    let mut b = head(0);
    b.extend_from_slice(&(MAX_REVOKED as u16 + 1).to_be_bytes());
    assert!(matches!(
        SignedRoster::decode(&reseal(&b)),
        Err(MeshError::Format(FormatError::TooMany {
            what: "revoked node ids",
            ..
        }))
    ));
    let long = vec![0; MAX_ROSTER_LEN + 1];
    assert!(matches!(
        SignedRoster::decode(&long),
        Err(MeshError::Format(FormatError::TooLarge { .. }))
    ));
}

#[test]
fn every_changed_byte_of_a_roster_fails() {
    assert_every_change_fails(
        signed_roster(3, &[2, 3], &[4]).as_bytes(),
        SignedRoster::decode,
    );
    let admin = admin();
    let by_admin = roster(3, &[2, 3], &[4])
        .sign(&Signer::Admin {
            key: &key(2),
            cert: &admin,
        })
        .unwrap();
    assert_every_change_fails(by_admin.as_bytes(), SignedRoster::decode);
}

#[test]
fn roster_merge_keeps_the_highest_version() {
    let v2 = signed_roster(2, &[2, 3], &[]);
    let v3 = signed_roster(3, &[2, 3, 4], &[]);
    assert!(v3.newer_than(&v2));
    assert!(!v2.newer_than(&v3));
    assert!(!v2.newer_than(&v2));
    assert_eq!(v2.merge(v3.clone(), NOW), Ok(v3.clone()));
    assert_eq!(
        v3.merge(v2.clone(), NOW),
        Err(MeshError::Stale {
            version: 2,
            current: 3
        })
    );
    assert_eq!(
        v3.merge(v3.clone(), NOW),
        Err(MeshError::Stale {
            version: 3,
            current: 3
        })
    );
    // Two rosters of the same version: both nodes settle on the same one.
    let other3 = signed_roster(3, &[2, 3, 5], &[]);
    let (lo, hi) = if other3.as_bytes() > v3.as_bytes() {
        (v3.clone(), other3)
    } else {
        (other3, v3.clone())
    };
    assert_eq!(lo.merge(hi.clone(), NOW), Ok(hi.clone()));
    assert!(hi.merge(lo, NOW).is_err());

    // Another mesh's roster, however new, is not ours.
    let foreign = Roster::new(MeshId::of(&key(9)), 100)
        .sign(&Signer::Mesh(&key(9)))
        .unwrap();
    assert!(matches!(
        v3.merge(foreign, NOW),
        Err(MeshError::WrongMesh { .. })
    ));
}

#[test]
fn rosters_signed_by_revoked_or_lapsed_admins_or_members_are_refused() {
    let admin = admin();
    let as_admin = Signer::Admin {
        key: &key(2),
        cert: &admin,
    };
    let current = signed_roster(3, &[2, 3], &[]);
    let by_admin = roster(4, &[2, 3, 4], &[]).sign(&as_admin).unwrap();
    assert_eq!(current.merge(by_admin.clone(), NOW), Ok(by_admin.clone()));

    // Revoked by the roster held.
    let mut kicked = roster(4, &[3], &[]);
    kicked.revoke(id(2));
    let kicked = kicked.sign(&Signer::Mesh(&mesh_key())).unwrap();
    let late = roster(5, &[3, 4], &[]).sign(&as_admin).unwrap();
    assert_eq!(
        kicked.merge(late, NOW),
        Err(MeshError::IssuerRevoked(id(2)))
    );
    // Revoked by the offered roster itself.
    let mut self_kick = roster(5, &[3], &[]);
    self_kick.revoke(id(2));
    let self_kick = self_kick.sign(&as_admin).unwrap();
    assert_eq!(
        self_kick.verify(&mesh(), NOW),
        Err(MeshError::IssuerRevoked(id(2)))
    );
    assert_eq!(
        current.merge(self_kick, NOW),
        Err(MeshError::IssuerRevoked(id(2)))
    );
    // The admin's certificate has lapsed.
    assert!(matches!(
        current.merge(by_admin, NOW + 1001),
        Err(MeshError::Issuer { .. })
    ));
    // A member signing a roster, with its member certificate as authority.
    let member = by_mesh(3, Role::Member);
    let body = roster(9, &[3], &[])
        .sign(&Signer::Mesh(&mesh_key()))
        .unwrap();
    let body = &body.as_bytes()[..body.as_bytes().len() - 65];
    let forged = forge(ROSTER_DOMAIN, body, &key(3), true, member.as_bytes());
    assert_eq!(
        SignedRoster::decode(&forged),
        Err(MeshError::NotAdmin(id(3)))
    );
}

#[test]
fn invites_round_trip_as_bytes_and_text() {
    let signed = invite(2).sign(&Signer::Mesh(&mesh_key())).unwrap();
    assert_eq!(signed.invite(), &invite(2));
    assert_eq!(signed.issuer(), &Issuer::Mesh);
    assert_eq!(SignedInvite::decode(signed.as_bytes()), Ok(signed.clone()));
    assert_eq!(signed.verify(&mesh(), NOW, None), Ok(()));
    let text = signed.to_string();
    assert!(text.starts_with("burrowinvite"));
    assert!(text[12..]
        .chars()
        .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c)));
    assert_eq!(text.parse(), Ok(signed.clone()));
    assert_eq!(
        format!(" {}\n", text.to_uppercase()).parse(),
        Ok(signed.clone())
    );
    // The sizes the docs give: one relay, two addresses, signed by the mesh key.
    assert_eq!(signed.as_bytes().len(), 262);
    assert_eq!(text.len(), 438);
    // The same draws, the same token.
    assert_eq!(
        invite(2)
            .sign(&Signer::Mesh(&mesh_key()))
            .unwrap()
            .to_string(),
        text
    );
    let mut rng = Rng::new(10);
    let other = Invite::new(mesh(), "home".into(), inviter_ticket(2), NOW, NOW, &mut rng);
    assert_ne!(other.secret, invite(2).secret);
    assert_ne!(other.invite_id, invite(2).invite_id);
    assert_eq!(other.uses, 1);

    // Debug never shows the secret.
    let secret_b32 = data_encoding::BASE32_NOPAD.encode(&signed.invite().secret);
    let debug = format!("{signed:?} {:?}", signed.invite());
    assert!(!debug.contains(&secret_b32[..8]), "{debug}");
    assert!(
        !debug.contains(&format!("{:?}", signed.invite().secret)),
        "{debug}"
    );

    // Signed by an admin, who must be the inviter.
    let admin = admin();
    let as_admin = Signer::Admin {
        key: &key(2),
        cert: &admin,
    };
    let by_admin = invite(2).sign(&as_admin).unwrap();
    assert_eq!(by_admin.issuer().admin(), Some(id(2)));
    assert_eq!(by_admin.to_string().parse(), Ok(by_admin.clone()));
    assert_eq!(by_admin.verify(&mesh(), NOW, None), Ok(()));
    assert_eq!(
        invite(3).sign(&as_admin),
        Err(MeshError::InviterNotSigner {
            inviter: id(3),
            signer: id(2)
        })
    );
    let body = invite(3).sign(&Signer::Mesh(&mesh_key())).unwrap();
    let body = &body.as_bytes()[..body.as_bytes().len() - 65];
    let forged = forge(INVITE_DOMAIN, body, &key(2), true, admin.as_bytes());
    assert_eq!(
        SignedInvite::decode(&forged),
        Err(MeshError::InviterNotSigner {
            inviter: id(3),
            signer: id(2)
        })
    );
}

#[test]
fn invite_limits() {
    let sign = |i: &Invite| i.sign(&Signer::Mesh(&mesh_key()));
    for uses in [0, MAX_USES + 1] {
        let mut i = invite(2);
        i.uses = uses;
        assert_eq!(sign(&i), Err(FormatError::Uses(uses).into()));
    }
    let mut i = invite(2);
    i.uses = MAX_USES;
    i.mesh_name = "m".repeat(64);
    assert!(sign(&i).is_ok());
    i.mesh_name = "m".repeat(65);
    assert!(matches!(
        sign(&i),
        Err(MeshError::Format(FormatError::Name(_)))
    ));
    let mut i = invite(2);
    i.expires = i.created - 1;
    assert!(matches!(
        sign(&i),
        Err(MeshError::Format(FormatError::Validity { .. }))
    ));
    // Beyond the ticket's limits, relays are left out, as in a ticket; what is held is what
    // was signed.
    let mut i = invite(2);
    for port in 1..=10 {
        i.inviter
            .relays
            .push(format!("http://r.example:{port}").parse().unwrap());
    }
    let signed = sign(&i).unwrap();
    assert_eq!(
        signed.invite().inviter.relays.len(),
        crate::ticket::MAX_RELAYS
    );
    assert_eq!(SignedInvite::decode(signed.as_bytes()), Ok(signed.clone()));

    // A body whose ticket does not decode.
    let good = sign(&invite(2)).unwrap();
    let mut body = good.as_bytes()[..good.as_bytes().len() - 65].to_vec();
    let ticket_at = 1 + 32 + 16 + 32 + 8 + 8 + 2 + 1 + 4 + 2;
    body[ticket_at] = 9;
    let e =
        SignedInvite::decode(&forge(INVITE_DOMAIN, &body, &mesh_key(), false, &[])).unwrap_err();
    assert_eq!(
        e,
        FormatError::Inviter(crate::ticket::TicketError::Version(9)).into()
    );

    // Text.
    let err = |s: &str| s.parse::<SignedInvite>().unwrap_err();
    assert_eq!(err("burrowabc"), FormatError::Prefix("burrowinvite").into());
    assert_eq!(err(""), FormatError::Prefix("burrowinvite").into());
    assert!(matches!(
        err(&format!("burrowinvite{}", "a".repeat(MAX_INVITE_TEXT_LEN))),
        MeshError::Format(FormatError::TooLarge { .. })
    ));
    assert!(matches!(
        err("burrowinvite1"),
        MeshError::Format(FormatError::Base32(_))
    ));
    assert_eq!(err("burrowinvite"), FormatError::Truncated.into());
    let text = good.to_string();
    let e = err(&text[..text.len() - 8]);
    assert_eq!(e, FormatError::Checksum.into());
    let chain = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(chain.contains("copy it again"), "{chain}");
}

#[test]
fn every_changed_byte_or_character_of_an_invite_fails() {
    let signed = invite(2).sign(&Signer::Mesh(&mesh_key())).unwrap();
    assert_every_change_fails(signed.as_bytes(), SignedInvite::decode);
    let admin = admin();
    let by_admin = invite(2)
        .sign(&Signer::Admin {
            key: &key(2),
            cert: &admin,
        })
        .unwrap();
    assert_every_change_fails(by_admin.as_bytes(), SignedInvite::decode);

    // Every character of the text: the checksum (or base32) catches it.
    let text = signed.to_string();
    for i in 0..text.len() {
        let mut t = text.clone().into_bytes();
        t[i] = if t[i] == b'a' { b'b' } else { b'a' };
        let t = String::from_utf8(t).unwrap();
        assert!(t.parse::<SignedInvite>().is_err(), "character {i}");
    }
    // A changed byte with the checksum fixed up (deliberate tampering): the signature.
    let mut b = signed.as_bytes().to_vec();
    b[60] ^= 1;
    let mut armored = b.clone();
    armored.extend_from_slice(&crc32fast::hash(&b).to_be_bytes());
    let t = format!(
        "burrowinvite{}",
        data_encoding::BASE32_NOPAD.encode(&armored).to_lowercase()
    );
    assert_eq!(t.parse::<SignedInvite>(), Err(MeshError::Signature));
}

#[test]
fn a_forged_expiry_re_signed_by_a_non_admin_fails_with_its_own_error() {
    let signed = invite(3).sign(&Signer::Mesh(&mesh_key())).unwrap();
    let bytes = signed.as_bytes();
    let mut body = bytes[..bytes.len() - 65].to_vec();
    let at = 1 + 32 + 16 + 32 + 8;
    body[at..at + 8].copy_from_slice(&u64::MAX.to_be_bytes());

    // Changed, not re-signed: tampering.
    let mut tampered = body.clone();
    tampered.extend_from_slice(&bytes[bytes.len() - 65..]);
    assert_eq!(SignedInvite::decode(&tampered), Err(MeshError::Signature));
    // Re-signed by member 3 (the inviter named), with its member certificate.
    let member = by_mesh(3, Role::Member);
    let forged = forge(INVITE_DOMAIN, &body, &key(3), true, member.as_bytes());
    let e = SignedInvite::decode(&forged).unwrap_err();
    assert_eq!(e, MeshError::NotAdmin(id(3)));
    assert_ne!(e.to_string(), MeshError::Signature.to_string());
    // Re-signed by a stranger's key posing as the mesh key.
    let forged = forge(INVITE_DOMAIN, &body, &key(9), false, &[]);
    assert_eq!(SignedInvite::decode(&forged), Err(MeshError::Signature));
}

#[test]
fn invites_expire_and_die_with_their_signer() {
    let signed = invite(2).sign(&Signer::Mesh(&mesh_key())).unwrap();
    assert_eq!(signed.verify(&mesh(), NOW + 3600, None), Ok(()));
    assert_eq!(
        signed.verify(&mesh(), NOW + 3601, None),
        Err(MeshError::Expired {
            not_after: NOW + 3600,
            now: NOW + 3601
        })
    );
    let other = MeshId::of(&key(9));
    assert!(matches!(
        signed.verify(&other, NOW, None),
        Err(MeshError::WrongMesh { .. })
    ));
    let mut kicked = roster(4, &[3], &[]);
    kicked.revoke(id(2));
    let kicked = kicked.sign(&Signer::Mesh(&mesh_key())).unwrap();
    assert_eq!(
        signed.verify(&mesh(), NOW, Some(&kicked)),
        Err(MeshError::Revoked(id(2)))
    );
    let admin = admin();
    let by_admin = invite(2)
        .sign(&Signer::Admin {
            key: &key(2),
            cert: &admin,
        })
        .unwrap();
    assert_eq!(
        by_admin.verify(&mesh(), NOW, Some(&kicked)),
        Err(MeshError::IssuerRevoked(id(2)))
    );
    assert!(matches!(
        by_admin.verify(&mesh(), NOW + 1001, None),
        Err(MeshError::Issuer { .. })
    ));
}

/// Deterministic mutation of every encoding, as the fuzz targets do: never a panic, and
/// whatever decodes encodes back to the same bytes (re-signed by the mesh key where the
/// mutation left the mesh id alone, since random bytes rarely carry a valid signature).
#[test]
fn mutated_encodings_never_panic_and_round_trip() {
    let mut rng = crate::mutation::Mutator::new();
    let cert = by_mesh(3, Role::Member);
    let roster = signed_roster(3, &[2, 3, 4], &[5]);
    let invite = invite(2).sign(&Signer::Mesh(&mesh_key())).unwrap();
    let mesh_signed = |b: &[u8], domain: &[u8]| forge(domain, b, &mesh_key(), false, &[]);
    let body = |b: &[u8]| b[..b.len() - 65].to_vec();
    let (cert_body, roster_body, invite_body) = (
        body(cert.as_bytes()),
        body(roster.as_bytes()),
        body(invite.as_bytes()),
    );
    let mut accepted = [0; 3];
    for i in 0..10_000 {
        // Whole encodings, and bodies resealed so the decoders' deeper checks are reached.
        let whole = i % 2 == 0;
        let mut mutate = |seed: &[u8]| {
            let mut m = rng.overwrite(seed);
            if rng.next().is_multiple_of(4) {
                rng.truncate_below(&mut m, seed.len() + 1);
            }
            m
        };
        let c = mutate(if whole { cert.as_bytes() } else { &cert_body });
        let c = if whole {
            c
        } else {
            mesh_signed(&c, CERT_DOMAIN)
        };
        if let Ok(decoded) = SignedCert::decode(&c) {
            assert_eq!(decoded.as_bytes(), c);
            if let Ok(again) = decoded.cert().sign(&Signer::Mesh(&mesh_key())) {
                assert_eq!(again.as_bytes(), c);
            }
            accepted[0] += 1;
        }
        let r = mutate(if whole {
            roster.as_bytes()
        } else {
            &roster_body
        });
        let r = if whole {
            r
        } else {
            mesh_signed(&r, ROSTER_DOMAIN)
        };
        if let Ok(decoded) = SignedRoster::decode(&r) {
            if let Ok(again) = decoded.roster().sign(&Signer::Mesh(&mesh_key())) {
                assert_eq!(again.as_bytes(), r);
            }
            accepted[1] += 1;
        }
        let v = mutate(if whole {
            invite.as_bytes()
        } else {
            &invite_body
        });
        let v = if whole {
            v
        } else {
            mesh_signed(&v, INVITE_DOMAIN)
        };
        if let Ok(decoded) = SignedInvite::decode(&v) {
            if let Ok(again) = decoded.invite().sign(&Signer::Mesh(&mesh_key())) {
                assert_eq!(again.as_bytes(), v);
            }
            assert_eq!(decoded.to_string().parse(), Ok(decoded.clone()));
            accepted[2] += 1;
        }
        let text = String::from_utf8_lossy(&mutate(invite.to_string().as_bytes())).into_owned();
        if let Ok(decoded) = text.parse::<SignedInvite>() {
            assert_eq!(decoded.to_string(), text.trim().to_ascii_lowercase());
        }
    }
    // Enough resealed bodies must decode for the round trip to mean something.
    for n in accepted {
        assert!(n > 300, "{accepted:?}");
    }
}
