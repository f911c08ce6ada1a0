//! Mesh nodes on loopback through a real relay and its registry: a mesh made, two nodes joining
//! by token, every member connected to every member; outsiders refused; a kick that cuts the
//! member off everywhere; a restart that needs no re-join. Certificates renewed by an online
//! admin, and a lapsed member refused once none is; invites that outlive their inviter's
//! restart; members that find each other in the DHT or on the LAN (mDNS on loopback) with no
//! registry; a member back from a restart that refuses a node kicked while it was away.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use burrow::dht::LocalTestnet;
use burrow::endpoint::admission::REFUSED;
use burrow::endpoint::{ConnectError, Connection, Endpoint, EndpointOptions, ExchangeProofs};
use burrow::mdns::{LanPeers, LanTag, MdnsConfig};
use burrow::mesh::membership::{Membership, EXPIRED_REFUSAL, SYNC_REFUSAL};
use burrow::mesh::node::{join, join_code, MemberEvent, MeshNode, NodeError, NodeOptions};
use burrow::mesh::state::MeshState;
use burrow::mesh::MESH_ALPN;
use burrow::ticket::Ticket;
use burrow::{quinn, NodeId};
use burrow_proto::relay::RelayUrl;
use common::loopback_relay as relay;
use common::mesh::{all_online, dir, joined, joined_in, opts, restart, start_from};
use tokio::time::timeout;

/// `outsider` dials `ticket`'s member and opens a stream: the member must close the connection
/// as refused within 1 s of the handshake.
async fn refused_at_once(outsider: &Endpoint, ticket: &Ticket, who: &str) {
    let conn = outsider
        .connect(ticket, MESH_ALPN)
        .await
        .expect("the handshake completes");
    let t = Instant::now();
    let (mut s, _r) = conn.quic.open_bi().await.unwrap();
    let _ = s.write_all(b"let me in").await;
    match timeout(Duration::from_secs(1), conn.quic.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(c)) => {
            assert_eq!(c.error_code.into_inner(), u64::from(REFUSED));
            eprintln!(
                "{who} refused after {:?}: {}",
                t.elapsed(),
                String::from_utf8_lossy(&c.reason)
            );
        }
        other => panic!("the {who} was not refused within 1 s: {other:?}"),
    }
}

/// The reason the peer gives for refusing a connection: the dial fails with it (a listener
/// that refuses shows no proof, so the dialler never takes it for admitted).
fn refusal(result: Result<Connection, ConnectError>) -> String {
    match result {
        Err(ConnectError::RefusedByPeer(r)) => r.reason,
        Ok(conn) => panic!(
            "the dial succeeded; closed afterwards: {:?}",
            conn.quic.close_reason()
        ),
        Err(e) => panic!("not a refusal by the peer: {e}"),
    }
}

/// An endpoint with the node key in `dir` that shows the membership stored there (certificate
/// and roster) when it dials: a member's node as a peer sees it, without a running node's dial
/// loop racing its connections. It accepts no mesh connection, so that a dial of the peer's
/// (which the peer would refuse, forgetting our paths) cannot race ours either.
async fn prover(dir: &std::path::Path) -> Endpoint {
    let state = MeshState::load(dir).expect("state loads");
    let membership = Membership::new(
        state.mesh_id,
        state.name.clone(),
        state.cert.clone(),
        state.roster.clone(),
        Duration::ZERO,
    );
    let ep = Endpoint::bind(
        state.node_key.clone(),
        EndpointOptions {
            bind_v4: "127.0.0.1:0".parse().unwrap(),
            bind_v6: None,
            relays: state.relays.clone(),
            alpns: vec![b"burrow-test/prover".to_vec()],
            admission: Some(Arc::new(ExchangeProofs::new(Arc::new(membership)))),
            ..Default::default()
        },
    )
    .await
    .expect("endpoint binds");
    ep.relay()
        .unwrap()
        .wait_connected(Duration::from_secs(5))
        .await
        .expect("relay connected");
    ep
}

/// Sleeps until unix second `secs` has passed.
async fn sleep_past(secs: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    tokio::time::sleep(Duration::from_secs(secs + 1).saturating_sub(now)).await;
}

/// A relay whose registry is off: members can relay through it but not find each other there.
async fn relay_without_registry() -> burrow_relay::RelayServer {
    burrow_relay::RelayServer::start(burrow_relay::RelayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        limits: burrow_relay::Limits::unlimited(),
        registry: burrow_relay::RegistryConfig {
            enabled: false,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .expect("relay starts")
}

#[tokio::test]
async fn members_join_by_token_connect_to_all_and_outsiders_and_the_kicked_stay_out() {
    timeout(Duration::from_secs(90), async {
        let relay = relay().await;
        let url: RelayUrl = relay.url().parse().unwrap();
        let a_dir = dir("a");
        let a_state = MeshState::init(&a_dir, "lab", None, vec![url.clone()]).expect("init");
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
        refused_at_once(&outsider, &ticket, "outsider").await;
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
        let state = MeshState::init(&dir("code-a"), "lab", None, vec![url.clone()]).expect("init");
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

#[tokio::test]
async fn an_online_admin_renews_certificates_and_a_lapsed_member_is_refused_once_none_is() {
    timeout(Duration::from_secs(120), async {
        let relay = relay().await;
        let url: RelayUrl = relay.url().parse().unwrap();
        let a_dir = dir("renew-a");
        let a = MeshNode::start(
            MeshState::init(&a_dir, "lab", None, vec![url.clone()]).expect("init"),
            opts(),
        )
        .await
        .expect("a starts");
        // C joins with the default validity (90 days); B with 10 seconds.
        let c = joined(&url, &a, "c").await;
        let short = NodeOptions {
            cert_validity: Duration::from_secs(10),
            ..opts()
        };
        let a = restart(a, &a_dir, short).await;
        let b_dir = dir("renew-b");
        let b = joined_in(&b_dir, &url, &a, "b", opts()).await;
        let first = b.cert().cert().clone();
        assert!(first.not_after - first.not_before <= 12, "{first:?}");
        let a_name = a.members().into_iter().find(|m| m.me).unwrap().name;
        assert!(all_online(&b, &[a_name.as_str(), "c"], Duration::from_secs(10)).await);

        // Past the first certificate's end, B is still in: A renewed it over the connection.
        sleep_past(first.not_after).await;
        let renewed = b.cert().cert().clone();
        assert!(
            renewed.serial > first.serial && renewed.not_after > first.not_after,
            "{first:?} then {renewed:?}"
        );
        assert_eq!(
            (&renewed.name, renewed.number, renewed.role),
            (&first.name, first.number, first.role)
        );
        for (n, name) in [(&a, "b"), (&c, "b"), (&b, "c")] {
            assert!(all_online(n, &[name], Duration::from_millis(100)).await);
        }
        eprintln!(
            "B's certificate renewed to serial {}, valid {} s more",
            renewed.serial,
            renewed.not_after - first.not_after
        );
        // B restarts: it proves itself with the renewed certificate it stored.
        let b = restart(b, &b_dir, opts()).await;
        assert!(b.cert().cert().serial >= renewed.serial);
        assert!(all_online(&b, &[a_name.as_str(), "c"], Duration::from_secs(10)).await);

        // The admin goes: B's certificate lapses; C cuts it off and refuses it with the reason.
        a.shutdown().await;
        drop(a);
        let last = b.cert().cert().clone();
        sleep_past(last.not_after).await;
        timeout(Duration::from_secs(3), async {
            while c.members().iter().any(|m| m.name == "b" && m.online) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("C cuts B off within 3 s of its certificate's end");
        // B dials C again (its node stopped, so that no dial of its own races this one).
        b.shutdown().await;
        drop(b);
        let b = prover(&b_dir).await;
        let why = refusal(b.connect(&c.endpoint().ticket(), MESH_ALPN).await);
        assert!(why.contains(EXPIRED_REFUSAL), "{why}");
        eprintln!("a lapsed member is refused: {why}");
        b.close().await;
        c.shutdown().await;
    })
    .await
    .expect("test within 120 s");
}

#[tokio::test]
async fn invites_and_short_codes_outlive_a_restart_of_their_inviter() {
    timeout(Duration::from_secs(120), async {
        let relay = relay().await;
        let url: RelayUrl = relay.url().parse().unwrap();
        let relays = [url.clone()];
        let a_dir = dir("keep-a");
        let a = MeshNode::start(
            MeshState::init(&a_dir, "lab", None, vec![url.clone()]).expect("init"),
            opts(),
        )
        .await
        .expect("a starts");
        let later = a.invite(Duration::from_secs(600), 1).unwrap();
        let spent = a.invite(Duration::from_secs(600), 1).unwrap();
        join(&dir("keep-b"), &spent, Some("b"), opts())
            .await
            .expect("b joins");
        let (code, _) = a.invite_code(Duration::from_secs(600), 1).await.unwrap();
        let (guessed, _) = a.invite_code(Duration::from_secs(600), 1).await.unwrap();
        let text = guessed.to_string();
        let last = text.chars().last().unwrap();
        let wrong: burrow_proto::mesh::code::ShortCode = format!(
            "{}{}",
            &text[..text.len() - 1],
            if last == '2' { '3' } else { '2' }
        )
        .parse()
        .unwrap();
        for i in 0..2 {
            match join_code(&dir(&format!("keep-w{i}")), &wrong, &relays, None, opts()).await {
                Err(NodeError::Join(why)) => {
                    assert_eq!(why, "the code is wrong (key confirmation failed)")
                }
                other => panic!("a wrong code: {other:?}"),
            }
        }

        let a = restart(a, &a_dir, opts()).await;
        // An invite issued before the restart is redeemed after it.
        join(&dir("keep-c"), &later, Some("c"), opts())
            .await
            .expect("an invite outlives the restart");
        // A single-use invite used before it stays used.
        match join(&dir("keep-e"), &spent, Some("e"), opts()).await {
            Err(NodeError::Join(why)) => assert_eq!(why, "invite: already used"),
            other => panic!("a replayed token after a restart: {other:?}"),
        }
        // A short code is served again, and found under its rendezvous namespace.
        let (state, _) = join_code(&dir("keep-d"), &code, &relays, Some("d"), opts())
            .await
            .expect("a short code outlives the restart");
        assert_eq!(state.cert.cert().name, "d");
        // The two wrong guesses before the restart still count: the third burns the code.
        match join_code(&dir("keep-w2"), &wrong, &relays, None, opts()).await {
            Err(NodeError::Join(why)) => assert!(why.contains("dead after 3"), "{why}"),
            other => panic!("a third wrong guess: {other:?}"),
        }
        a.shutdown().await;
    })
    .await
    .expect("test within 120 s");
}

#[tokio::test]
async fn members_find_each_other_on_the_lan_alone_and_outsiders_there_are_refused() {
    timeout(Duration::from_secs(90), async {
        let relay = relay_without_registry().await;
        let url: RelayUrl = relay.url().parse().unwrap();
        let state = MeshState::init(&dir("lan-a"), "lab", None, vec![url.clone()]).expect("init");
        let mesh_id = state.mesh_id;
        let a = MeshNode::start(state, opts()).await.expect("a starts");
        let t = Instant::now();
        let b = joined(&url, &a, "b").await;
        // No registry and no DHT: mDNS is the only way the two can find each other.
        let a_name = a.members().into_iter().find(|m| m.me).unwrap().name;
        assert!(all_online(&a, &["b"], Duration::from_secs(20)).await);
        assert!(all_online(&b, &[a_name.as_str()], Duration::from_secs(5)).await);
        let seen = b.members().into_iter().find(|m| m.name == a_name).unwrap();
        eprintln!(
            "found on the LAN and connected {:?} after the join: {:?} {:?}",
            t.elapsed(),
            seen.path,
            seen.remote_addr
        );

        // An outsider on the LAN who knows A's node id finds nothing under it...
        let a_id = a.endpoint().node_id();
        let lan = MdnsConfig::for_bind("127.0.0.1".parse().unwrap());
        let by_id = LanPeers::<NodeId>::start(&lan).unwrap();
        assert_eq!(by_id.find(&a_id, Duration::from_secs(3)).await, None);
        // ... and a tag it cannot tie to A without the mesh id; given the addresses anyway,
        // its connection is refused at once and opens nothing.
        let by_tag = LanPeers::<LanTag>::start(&lan).unwrap();
        let tag = LanTag(mesh_id.lan_tag(&a_id));
        let found = by_tag
            .find(&tag, Duration::from_secs(5))
            .await
            .expect("A's tag is announced");
        assert!(!tag.to_string().contains(&a_id.to_string()[..8]));
        let outsider = common::endpoint(&relay, None).await;
        let ticket = Ticket {
            node_id: a_id,
            relays: Vec::new(),
            addrs: found.addrs,
        };
        refused_at_once(&outsider, &ticket, "LAN outsider").await;
        outsider.close().await;
        for n in [&a, &b] {
            n.shutdown().await;
        }
    })
    .await
    .expect("test within 90 s");
}

#[tokio::test]
async fn members_find_each_other_in_the_dht_without_a_registry() {
    timeout(Duration::from_secs(90), async {
        let net = tokio::task::spawn_blocking(|| LocalTestnet::new(20).expect("local DHT"))
            .await
            .unwrap();
        let relay = relay_without_registry().await;
        let url: RelayUrl = relay.url().parse().unwrap();
        let dht_only = NodeOptions {
            dht: Some(net.client_config()),
            mdns: false,
            ..opts()
        };
        let state = MeshState::init(&dir("dht-a"), "lab", None, vec![url.clone()]).expect("init");
        let a = MeshNode::start(state, dht_only.clone())
            .await
            .expect("a starts");
        let t = Instant::now();
        let b = joined_in(&dir("dht-b"), &url, &a, "b", dht_only).await;
        let a_name = a.members().into_iter().find(|m| m.me).unwrap().name;
        assert!(all_online(&a, &["b"], Duration::from_secs(30)).await);
        assert!(all_online(&b, &[a_name.as_str()], Duration::from_secs(5)).await);
        eprintln!(
            "found in the DHT and connected {:?} after the join",
            t.elapsed()
        );
        for n in [&a, &b] {
            n.shutdown().await;
        }
    })
    .await
    .expect("test within 90 s");
}

#[tokio::test]
async fn a_member_back_from_a_restart_refuses_a_node_kicked_while_it_was_away() {
    timeout(Duration::from_secs(90), async {
        let relay = relay().await;
        let url: RelayUrl = relay.url().parse().unwrap();
        let a_dir = dir("gate-a");
        let a = MeshNode::start(
            MeshState::init(&a_dir, "lab", None, vec![url.clone()]).expect("init"),
            opts(),
        )
        .await
        .expect("a starts");
        let (b_dir, c_dir) = (dir("gate-b"), dir("gate-c"));
        let b = joined_in(&b_dir, &url, &a, "b", opts()).await;
        let c = joined_in(&c_dir, &url, &a, "c", opts()).await;
        assert!(all_online(&a, &["b", "c"], Duration::from_secs(10)).await);
        let b_id = b.endpoint().node_id();

        // B and C go offline; A kicks B, and goes offline too.
        for n in [b, c] {
            n.shutdown().await;
        }
        a.kick("b").expect("kick");
        a.shutdown().await;
        drop(a);

        // C comes back still holding the roster that lists B; B, holding it too, dials C first.
        let c_state = MeshState::load(&c_dir).expect("c loads");
        assert!(!c_state.roster.roster().is_revoked(&b_id));
        let c = MeshNode::start(
            c_state,
            NodeOptions {
                roster_sync_wait: Duration::from_secs(60),
                ..opts()
            },
        )
        .await
        .expect("c restarts");
        let b = prover(&b_dir).await;
        let watch = {
            let c = c.clone();
            tokio::spawn(async move {
                loop {
                    let b_online = c.members().iter().any(|m| m.name == "b" && m.online);
                    assert!(!b_online, "C let B in");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        let why = refusal(b.connect(&c.endpoint().ticket(), MESH_ALPN).await);
        assert!(why.contains(SYNC_REFUSAL), "{why}");
        eprintln!("B refused before C synced: {why}");

        // A comes back; C takes its roster and refuses B for good.
        let t = Instant::now();
        let a = start_from(&a_dir, opts()).await;
        timeout(Duration::from_secs(10), async {
            while !c.roster().roster().is_revoked(&b_id) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("C learns of the kick from A");
        eprintln!("C synced with A {:?} after A restarted", t.elapsed());
        let why = refusal(b.connect(&c.endpoint().ticket(), MESH_ALPN).await);
        assert!(why.contains("revoked"), "{why}");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!watch.is_finished(), "C let B in");
        watch.abort();
        b.close().await;
        for n in [&a, &c] {
            n.shutdown().await;
        }
    })
    .await
    .expect("test within 90 s");
}

/// Waits for the next of `events` that `pick` takes, for at most `limit`.
async fn next_event<T>(
    events: &mut tokio::sync::broadcast::Receiver<MemberEvent>,
    limit: Duration,
    mut pick: impl FnMut(&MemberEvent) -> Option<T>,
) -> Option<T> {
    timeout(limit, async {
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let Some(t) = pick(&e) {
                        return Some(t);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

#[tokio::test]
async fn a_node_tells_of_joins_connections_kicks_and_disconnections() {
    timeout(Duration::from_secs(60), async {
        let relay = relay().await;
        let url: RelayUrl = relay.url().parse().unwrap();
        let state = MeshState::init(&dir("ev-a"), "lab", None, vec![url.clone()]).expect("init");
        let a = MeshNode::start(state, opts()).await.expect("a starts");
        let mut events = a.events();
        let b = joined(&url, &a, "b").await;
        let b_id = b.endpoint().node_id();
        let limit = Duration::from_secs(10);
        let joined = next_event(&mut events, limit, |e| match e {
            MemberEvent::Joined { node, name } if *node == b_id => Some(name.clone()),
            _ => None,
        })
        .await;
        assert_eq!(joined.as_deref(), Some("b"));
        let up = |e: &MemberEvent| (*e == MemberEvent::Connected(b_id)).then_some(());
        assert!(next_event(&mut events, limit, up).await.is_some(), "b up");
        a.kick("b").expect("kick");
        let revoked = |e: &MemberEvent| (*e == MemberEvent::Revoked(b_id)).then_some(());
        assert!(next_event(&mut events, limit, revoked).await.is_some());
        let down = |e: &MemberEvent| (*e == MemberEvent::Disconnected(b_id)).then_some(());
        assert!(next_event(&mut events, limit, down).await.is_some());
        for n in [&a, &b] {
            n.shutdown().await;
        }
    })
    .await
    .expect("test within 60 s");
}
