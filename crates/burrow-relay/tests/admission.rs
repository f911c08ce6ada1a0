//! An endpoint's admission on real sockets through a real relay: a key it does not admit is
//! closed with the reason right after its handshake, never reaches `accept`, and never learns
//! a direct address; an admitted one goes direct; a revoked one is refused from then on.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burrow::endpoint::admission::REFUSED;
use burrow::endpoint::{Admission, AllowKeys, ConnectError, Connection, Endpoint, PathInfo};
use burrow::{quinn, NodeId};
use common::{endpoint, loopback_relay as relay, ALPN};
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
