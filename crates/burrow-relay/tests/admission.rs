//! An endpoint's admission on real sockets through a real relay: a key it does not admit is
//! closed with the reason right after its handshake, never reaches `accept`, and never learns
//! a direct address; an admitted one goes direct; a revoked one is refused from then on; with
//! proofs exchanged, members get in and outsiders are refused within a second.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burrow::endpoint::admission::REFUSED;
use burrow::endpoint::{
    Admission, AdmissionFuture, Admitted, AllowKeys, ConnectError, Connection, Credentials,
    Endpoint, ExchangeProofs, PathInfo, Refusal, Side,
};
use burrow::{quinn, NodeId, SecretKey};
use burrow_relay::RelayServer;
use common::{endpoint, loopback_relay as relay, ALPN};
use ed25519_dalek::{Signature, Signer, Verifier};
use tokio::time::timeout;

/// An allow-list that the test changes as it goes.
fn allow_list() -> (Arc<Mutex<HashSet<NodeId>>>, Arc<dyn Admission>) {
    let allowed = Arc::new(Mutex::new(HashSet::new()));
    let check = allowed.clone();
    let admission = AllowKeys(move |k: &NodeId| check.lock().unwrap().contains(k));
    (allowed, Arc::new(admission))
}

async fn is_direct_within(ep: &Endpoint, peer: &NodeId, limit: Duration) -> bool {
    timeout(limit, async {
        while !matches!(ep.path(peer), PathInfo::Direct(_)) {
            ep.path_changed().await;
        }
    })
    .await
    .is_ok()
}

/// The code and reason the peer closed `conn` with, once it does (within `limit`).
async fn closed_with(conn: &Connection, limit: Duration) -> Option<(u64, String)> {
    match timeout(limit, conn.quic.closed()).await.ok()? {
        quinn::ConnectionError::ApplicationClosed(c) => Some((
            c.error_code.into_inner(),
            String::from_utf8_lossy(&c.reason).into_owned(),
        )),
        _ => None,
    }
}

#[tokio::test]
async fn a_key_not_admitted_is_refused_at_once_and_learns_no_address() {
    timeout(Duration::from_secs(40), async {
        let relay = relay().await;
        let (allowed, admission) = allow_list();
        let listener = endpoint(&relay, Some(admission)).await;
        let member = endpoint(&relay, None).await;
        let outsider = endpoint(&relay, None).await;
        allowed.lock().unwrap().insert(member.node_id());
        // The relay only: direct addresses come from the listener's CallMeMaybe alone.
        let mut ticket = listener.ticket();
        ticket.addrs.clear();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        {
            let (listener, accepted) = (listener.clone(), accepted.clone());
            tokio::spawn(async move {
                while let Some(c) = listener.accept().await {
                    accepted.lock().unwrap().push(c.remote);
                    // Keep it open; the member's stays up.
                    std::mem::forget(c);
                }
            });
        }

        let start = Instant::now();
        let conn = outsider
            .connect(&ticket, ALPN)
            .await
            .expect("the handshake itself completes");
        let (code, reason) = closed_with(&conn, Duration::from_secs(1))
            .await
            .expect("closed by the listener within 1 s");
        let took = start.elapsed();
        assert_eq!(code, u64::from(REFUSED));
        assert_eq!(reason, "this node does not accept your key");
        assert!(
            conn.quic.open_bi().await.is_err(),
            "no stream on a refused connection"
        );

        let member_conn = member
            .connect(&ticket, ALPN)
            .await
            .expect("member connects");
        assert!(
            is_direct_within(&member, &listener.node_id(), Duration::from_secs(5)).await,
            "the member goes direct: the listener told it its addresses"
        );
        // The outsider keeps asking (it dialled, so it punches) but is told nothing.
        assert!(
            !is_direct_within(&outsider, &listener.node_id(), Duration::from_secs(3)).await,
            "the outsider found a direct path"
        );
        assert_eq!(*accepted.lock().unwrap(), vec![member.node_id()]);
        eprintln!("outsider refused {took:?} after dialling");
        drop(member_conn);
        for ep in [&listener, &member, &outsider] {
            ep.close().await;
        }
    })
    .await
    .expect("test within 40 s");
}

#[tokio::test]
async fn a_dialler_refuses_a_listener_it_does_not_admit() {
    timeout(Duration::from_secs(20), async {
        let relay = relay().await;
        let (_allowed, admission) = allow_list();
        let dialler = endpoint(&relay, Some(admission)).await;
        let listener = endpoint(&relay, None).await;
        let mut ticket = listener.ticket();
        ticket.addrs.clear();
        match dialler.connect(&ticket, ALPN).await {
            Err(ConnectError::Refused(r)) => {
                assert_eq!(r.reason, "this node does not accept your key")
            }
            other => panic!("expected our refusal, got {other:?}"),
        }
        dialler.close().await;
        listener.close().await;
    })
    .await
    .expect("test within 20 s");
}

#[tokio::test]
async fn a_revoked_key_loses_its_direct_path_and_is_refused_when_it_redials() {
    timeout(Duration::from_secs(40), async {
        let relay = relay().await;
        let (allowed, admission) = allow_list();
        let listener = endpoint(&relay, Some(admission)).await;
        let member = endpoint(&relay, None).await;
        allowed.lock().unwrap().insert(member.node_id());
        let mut ticket = listener.ticket();
        ticket.addrs.clear();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        {
            let listener = listener.clone();
            tokio::spawn(async move {
                while let Some(c) = listener.accept().await {
                    let _ = tx.send(c);
                }
            });
        }
        let conn = member.connect(&ticket, ALPN).await.expect("connects");
        let theirs = rx.recv().await.expect("accepted");
        assert!(is_direct_within(&listener, &member.node_id(), Duration::from_secs(5)).await);

        // Kicked: closed first (once revoked, nothing more reaches it), then revoked.
        allowed.lock().unwrap().clear();
        theirs.quic.close(REFUSED.into(), b"revoked");
        assert!(closed_with(&conn, Duration::from_secs(2)).await.is_some());
        listener.revoke(member.node_id()).await;
        timeout(Duration::from_secs(2), async {
            while matches!(listener.path(&member.node_id()), PathInfo::Direct(_)) {
                listener.path_changed().await;
            }
        })
        .await
        .expect("the listener forgets the direct path");

        let again = member
            .connect(&ticket, ALPN)
            .await
            .expect("the handshake completes");
        let (code, _) = closed_with(&again, Duration::from_secs(1))
            .await
            .expect("the redial is refused within 1 s");
        assert_eq!(code, u64::from(REFUSED));
        assert!(
            timeout(Duration::from_secs(1), rx.recv()).await.is_err(),
            "the redial never reaches accept"
        );
        listener.close().await;
        member.close().await;
    })
    .await
    .expect("test within 40 s");
}

/// A toy mesh: a member's proof is the mesh key's signature over its node id.
#[derive(Debug)]
struct SignedBy {
    mesh: SecretKey,
    /// Our node id, signed by `signer` (the mesh key for members, anything for outsiders).
    ours: Vec<u8>,
}

impl SignedBy {
    fn new(mesh: &SecretKey, signer: &SecretKey, node: NodeId) -> SignedBy {
        SignedBy {
            mesh: mesh.clone(),
            ours: signer
                .signing_key()
                .sign(node.as_bytes())
                .to_bytes()
                .to_vec(),
        }
    }
}

impl Credentials for SignedBy {
    fn proof(&self) -> Vec<u8> {
        self.ours.clone()
    }

    fn check(&self, node: &NodeId, proof: &[u8], _side: Side) -> Result<(), Refusal> {
        let sig = Signature::from_slice(proof).map_err(|_| Refusal::new("not a signature"))?;
        self.mesh
            .signing_key()
            .verifying_key()
            .verify(node.as_bytes(), &sig)
            .map_err(|_| Refusal::new("not a member"))
    }
}

/// An endpoint whose key `signer` vouches for, in the mesh of `mesh`.
async fn vouched(relay: &RelayServer, mesh: &SecretKey, signer: Option<&SecretKey>) -> Endpoint {
    let key = SecretKey::from_bytes(rand::random());
    let signer = signer.unwrap_or(&key);
    let admission = ExchangeProofs::new(SignedBy::new(mesh, signer, key.node_id()));
    common::endpoint_with_key(relay, key, Some(Arc::new(admission))).await
}

#[tokio::test]
async fn members_exchange_proofs_and_outsiders_are_refused_within_a_second() {
    timeout(Duration::from_secs(40), async {
        let relay = relay().await;
        let mesh = SecretKey::from_bytes(rand::random());
        let a = vouched(&relay, &mesh, Some(&mesh)).await;
        let b = vouched(&relay, &mesh, Some(&mesh)).await;
        let mut ticket = a.ticket();
        ticket.addrs.clear();
        {
            let a = a.clone();
            tokio::spawn(async move {
                while let Some(c) = a.accept().await {
                    tokio::spawn(async move {
                        while let Ok((mut send, mut recv)) = c.quic.accept_bi().await {
                            let got = recv.read_to_end(1024).await.unwrap_or_default();
                            let _ = send.write_all(&got).await;
                            let _ = send.finish();
                        }
                    });
                }
            });
        }
        // Members: admitted both ways; the application's streams are its own; direct.
        let conn = b.connect(&ticket, ALPN).await.expect("a member connects");
        let (mut send, mut recv) = conn.quic.open_bi().await.unwrap();
        send.write_all(b"hello, member").await.unwrap();
        send.finish().unwrap();
        assert_eq!(recv.read_to_end(1024).await.unwrap(), b"hello, member");
        assert!(is_direct_within(&b, &a.node_id(), Duration::from_secs(5)).await);

        // Outsiders, each refused with its own reason, well within a second.
        let forger = SecretKey::from_bytes(rand::random());
        let wrong_signer = vouched(&relay, &mesh, Some(&forger)).await;
        let plain = common::endpoint(&relay, None).await;
        let cases: [(&Endpoint, bool, &str); 2] = [
            (&wrong_signer, false, "not a member"),
            (&plain, true, "a stream before any proof"),
        ];
        for (outsider, opens_a_stream, reason) in cases {
            let start = Instant::now();
            let result = outsider.connect(&ticket, ALPN).await;
            let conn = match result {
                Err(ConnectError::RefusedByPeer(r)) => {
                    assert_eq!(r.reason, reason);
                    None
                }
                Ok(conn) => Some(conn),
                Err(e) => panic!("{reason}: {e}"),
            };
            if let Some(conn) = conn {
                if opens_a_stream {
                    let (mut s, _r) = conn.quic.open_bi().await.unwrap();
                    let _ = s.write_all(b"let me in").await;
                }
                let (code, why) = closed_with(&conn, Duration::from_secs(1))
                    .await
                    .expect("closed by the listener");
                assert_eq!((code, why.as_str()), (u64::from(REFUSED), reason));
            }
            let took = start.elapsed();
            assert!(
                took < Duration::from_secs(1),
                "{reason}: refused after {took:?}"
            );
            assert!(
                !is_direct_within(outsider, &a.node_id(), Duration::from_millis(500)).await,
                "{reason}: the outsider found a direct path"
            );
            eprintln!("{reason}: refused after {took:?}");
        }
        // One that shows nothing and opens nothing is refused when the proof's time is up.
        let start = Instant::now();
        let silent = plain.connect(&ticket, ALPN).await.expect("handshake");
        let (_, why) = closed_with(&silent, Duration::from_secs(3))
            .await
            .expect("closed by the listener");
        assert_eq!(why, "no proof in time");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_millis(1900),
            "{took:?}"
        );
        for ep in [&a, &b, &wrong_signer, &plain] {
            ep.close().await;
        }
    })
    .await
    .expect("test within 40 s");
}

/// Lets anyone in, trusted by nobody until the test says so.
#[derive(Debug)]
struct Untrusting;

impl Admission for Untrusting {
    fn admit<'a>(&'a self, _conn: &'a Connection, _side: Side) -> AdmissionFuture<'a> {
        Box::pin(async { Ok(Admitted::Untrusted) })
    }
}

#[tokio::test]
async fn an_untrusted_peer_stays_on_the_relay_until_it_is_trusted() {
    timeout(Duration::from_secs(30), async {
        let relay = relay().await;
        let listener = endpoint(&relay, Some(Arc::new(Untrusting))).await;
        let dialler = endpoint(&relay, None).await;
        let mut ticket = listener.ticket();
        ticket.addrs.clear();
        let accepted = {
            let listener = listener.clone();
            tokio::spawn(async move { listener.accept().await })
        };
        let conn = dialler.connect(&ticket, ALPN).await.expect("connects");
        let theirs = accepted.await.unwrap().expect("accepted, untrusted");
        assert_eq!(theirs.remote, dialler.node_id());
        assert!(
            !is_direct_within(&dialler, &listener.node_id(), Duration::from_secs(3)).await,
            "untrusted, yet told our addresses"
        );
        listener.trust(dialler.node_id()).await;
        assert!(
            is_direct_within(&dialler, &listener.node_id(), Duration::from_secs(5)).await,
            "trusted now, the punching runs"
        );
        drop((conn, theirs));
        listener.close().await;
        dialler.close().await;
    })
    .await
    .expect("test within 30 s");
}
