//! Mesh nodes on loopback through a real relay and its registry: a mesh made, two nodes joining
//! by token, every member connected to every member; outsiders refused; a kick that cuts the
//! member off everywhere; a restart that needs no re-join.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use burrow::endpoint::admission::REFUSED;
use burrow::mesh::node::{join, join_code, MeshNode, NodeError, NodeOptions};
use burrow::mesh::state::MeshState;
use burrow::mesh::MESH_ALPN;
use burrow::quinn;
use burrow_proto::relay::RelayUrl;
use common::loopback_relay as relay;
use tokio::time::timeout;

fn dir(what: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    std::env::temp_dir().join(format!("burrow-mesh-{what}-{}-{nanos}", std::process::id()))
}

fn opts() -> NodeOptions {
    NodeOptions {
        bind_v4: "127.0.0.1:0".parse().unwrap(),
        bind_v6: None,
        ..Default::default()
    }
}

/// Waits until `node` lists every one of `names` online, or `limit` passes.
async fn all_online(node: &MeshNode, names: &[&str], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let members = node.members();
        let ok = names
            .iter()
            .all(|n| members.iter().any(|m| m.name == *n && m.online));
        if ok {
            return true;
        }
        if Instant::now() >= deadline {
            eprintln!("{:#?}", members);
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn joined(relay_url: &RelayUrl, admin: &MeshNode, name: &str) -> MeshNode {
    let token = admin.invite(Duration::from_secs(600), 1).expect("invite");
    assert_eq!(token.invite().inviter.relays, vec![relay_url.clone()]);
    assert!(
        token.invite().inviter.addrs.is_empty(),
        "no direct address in a token"
    );
    let (state, how) = join(&dir(name), &token, Some(name), opts())
        .await
        .expect("joins");
    assert_eq!(how.mesh, "lab");
    MeshNode::start(state, opts()).await.expect("starts")
}

#[tokio::test]
async fn members_join_by_token_connect_to_all_and_outsiders_and_the_kicked_stay_out() {
    timeout(Duration::from_secs(90), async {
        let relay = relay().await;
        let url: RelayUrl = relay.url().parse().unwrap();
        let a_dir = dir("a");
        let a_state = MeshState::init(&a_dir, "lab", vec![url.clone()]).expect("init");
        let mesh_id = a_state.mesh_id;
        let a = MeshNode::start(a_state, opts()).await.expect("a starts");

        let start = Instant::now();
        let b = joined(&url, &a, "b").await;
        let c = joined(&url, &a, "c").await;
        let a_name = a.members().into_iter().find(|m| m.me).unwrap().name;
        for (n, others) in [
            (&a, ["b", "c"]),
            (&b, [a_name.as_str(), "c"]),
            (&c, [a_name.as_str(), "b"]),
        ] {
            assert!(
                all_online(n, &others, Duration::from_secs(10)).await,
                "everyone online within 10 s of the joins"
            );
        }
        eprintln!(
            "three members all connected {:?} after the first invite",
            start.elapsed()
        );
        assert_eq!(b.roster().roster().mesh_id, mesh_id);

        // A single-use token is spent.
        let token = a.invite(Duration::from_secs(600), 1).unwrap();
        join(&dir("d"), &token, Some("d"), opts())
            .await
            .expect("d joins");
        match join(&dir("e"), &token, Some("e"), opts()).await {
            Err(NodeError::Join(why)) => {
                assert_eq!(why, "invite: already used")
            }
            other => panic!("a spent token: {other:?}"),
        }

        // An outsider with A's record (relays only) is refused at once, and opens nothing.
        let outsider = common::endpoint(&relay, None).await;
        let ticket = a.endpoint().ticket();
        let conn = outsider
            .connect(&ticket, MESH_ALPN)
            .await
            .expect("the handshake completes");
        let t = Instant::now();
        let (mut s, _r) = conn.quic.open_bi().await.unwrap();
        let _ = s.write_all(b"let me in").await;
        match timeout(Duration::from_secs(1), conn.quic.closed()).await {
            Ok(quinn::ConnectionError::ApplicationClosed(c)) => {
                assert_eq!(c.error_code.into_inner(), u64::from(REFUSED));
                eprintln!(
                    "outsider refused after {:?}: {}",
                    t.elapsed(),
                    String::from_utf8_lossy(&c.reason)
                );
            }
            other => panic!("the outsider was not refused within 1 s: {other:?}"),
        }
        outsider.close().await;

        // A kicks B: C drops it within 2 s, and B's redials are refused.
        let b_id = b.endpoint().node_id();
        let t = Instant::now();
        a.kick("b").expect("kick");
        timeout(Duration::from_secs(2), async {
            while c.members().iter().any(|m| m.name == "b") {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("C drops B within 2 s");
        eprintln!("C dropped B {:?} after the kick", t.elapsed());
        assert!(c.roster().roster().is_revoked(&b_id));
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            !b.members().iter().any(|m| !m.me && m.online),
            "B reconnected to someone: {:#?}",
            b.members()
        );

        // A restarts from its state: the others are back within 5 s, no re-join.
        a.shutdown().await;
        drop(a);
        let t = Instant::now();
        let a = MeshNode::start(MeshState::load(&a_dir).expect("load"), opts())
            .await
            .expect("a restarts");
        assert!(all_online(&a, &["c"], Duration::from_secs(5)).await);
        assert!(all_online(&c, &[a_name.as_str()], Duration::from_secs(5)).await);
        eprintln!("back after a restart in {:?}", t.elapsed());
        for n in [&a, &b, &c] {
            n.shutdown().await;
        }
    })
    .await
    .expect("test within 90 s");
}

#[tokio::test]
async fn a_short_code_joins_once_and_dies_after_three_wrong_guesses() {
    timeout(Duration::from_secs(90), async {
        let relay = relay().await;
        let url: RelayUrl = relay.url().parse().unwrap();
        let state = MeshState::init(&dir("code-a"), "lab", vec![url.clone()]).expect("init");
        let a = MeshNode::start(state, opts()).await.expect("a starts");
        let relays = [url];

        // The right code: found at the registry by its rendezvous part, proved, joined.
        let (code, _) = a
            .invite_code(Duration::from_secs(600), 1)
            .await
            .expect("invite");
        let t = Instant::now();
        let (state, how) = join_code(&dir("code-b"), &code, &relays, Some("b"), opts())
            .await
            .expect("joins by code");
        eprintln!("joined by code in {:?} ({})", t.elapsed(), how.path);
        assert_eq!(state.cert.cert().name, "b");
        assert!(a
            .roster()
            .roster()
            .members
            .contains_key(&state.node_key.node_id()));

        // Another code: three wrong passwords burn it; then the right one is refused too.
        let (code, _) = a
            .invite_code(Duration::from_secs(600), 1)
            .await
            .expect("invite");
        let text = code.to_string();
        for i in 0..3 {
            // The same rendezvous part, another password.
            let last = text.chars().last().unwrap();
            let other = if last == '2' { '3' } else { '2' };
            let wrong: burrow_proto::mesh::code::ShortCode =
                format!("{}{}", &text[..text.len() - 1], other)
                    .parse()
                    .unwrap();
            assert_ne!(wrong, code);
            match join_code(&dir(&format!("wrong{i}")), &wrong, &relays, None, opts()).await {
                // The third wrong guess burns the code, and is told so.
                Err(NodeError::Join(why)) if i < 2 => {
                    assert_eq!(why, "the code is wrong (key confirmation failed)")
                }
                Err(NodeError::Join(why)) => assert!(why.contains("dead after 3"), "{why}"),
                other => panic!("a wrong code: {other:?}"),
            }
        }
        match join_code(&dir("late"), &code, &relays, None, opts()).await {
            Err(NodeError::Join(why)) => assert!(why.contains("dead after 3"), "{why}"),
            other => panic!("a burned code: {other:?}"),
        }
        a.shutdown().await;
    })
    .await
    .expect("test within 90 s");
}
