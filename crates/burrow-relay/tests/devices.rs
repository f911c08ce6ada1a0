//! Devices at the relay, on loopback: only enrolled keys get in (relay and registry), a
//! namespace listed by capability, by who is online and by reputation, `/stats`, and signed
//! signals passed through the relay with forged and replayed ones rejected and counted at the
//! receiver.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use burrow::registry_client::{RegistryClient, RegistryClientOptions};
use burrow::relay_client::{RelayClient, RelayUrl};
use burrow_proto::identity::{NodeId, SecretKey};
use burrow_proto::record::NodeRecord;
use burrow_proto::signal::{Input, Kind, Output, Rejected, SignalStats, Signaling};
use burrow_relay::{Limits, RelayConfig, RelayServer};
use common::http;
use serde_json::Value;
use tokio::time::timeout;

fn key(n: u8) -> SecretKey {
    SecretKey::from_bytes([n; 32])
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `key`'s record with `capabilities`, for an hour.
fn record(key: &SecretKey, capabilities: &[&str]) -> burrow_proto::record::SignedRecord {
    let mut r = NodeRecord::new(key.node_id(), 1, unix_ms() / 1000 + 3600);
    r.capabilities = capabilities.iter().map(|c| c.to_string()).collect();
    r.sign(key).unwrap()
}

/// The node ids a namespace listing with `query` returns, and its status.
async fn listed(server: &RelayServer, query: &str) -> (u16, BTreeSet<NodeId>) {
    let (status, body) = http(
        server.local_addr(),
        "GET",
        &format!("/namespaces/fleet{query}"),
        "",
    )
    .await;
    let ids = body["records"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| r["node_id"].as_str().unwrap().parse().unwrap())
                .collect()
        })
        .unwrap_or_default();
    (status, ids)
}

fn ids(keys: &[&SecretKey]) -> BTreeSet<NodeId> {
    keys.iter().map(|k| k.node_id()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolled_devices_are_found_by_capability_presence_and_reputation() {
    timeout(Duration::from_secs(60), async {
        let (gpu_chat, chat, gpu, stranger) = (key(1), key(2), key(3), key(9));
        let server = RelayServer::start(RelayConfig {
            limits: Limits::unlimited(),
            allowed_keys: Some(Arc::new(ids(&[&gpu_chat, &chat, &gpu]))),
            reputation_window: Duration::from_secs(10),
            ..RelayConfig::default()
        })
        .await
        .unwrap();
        let url: RelayUrl = server.url().parse().unwrap();
        let registry = RegistryClient::new(vec![url.clone()], RegistryClientOptions::default());
        let fleet = ["fleet".to_string()];
        for (k, caps) in [
            (&gpu_chat, &["gpu", "chat"][..]),
            (&chat, &["chat"]),
            (&gpu, &["gpu"]),
        ] {
            registry
                .publish(&record(k, caps), &fleet, None)
                .await
                .unwrap();
        }
        // A key not enrolled: its record is refused, and so is its relay login.
        assert!(registry
            .publish(&record(&stranger, &["gpu"]), &fleet, None)
            .await
            .is_err());
        let failures = server.stats().auth_failures;
        let outsider = RelayClient::new(vec![url.clone()], stranger.clone(), Default::default());
        assert!(outsider
            .wait_connected(Duration::from_secs(2))
            .await
            .is_err());
        assert!(server.stats().auth_failures > failures);

        // Two of them connect; the third published but stays away.
        let clients: Vec<RelayClient> = [&gpu_chat, &chat]
            .iter()
            .map(|k| RelayClient::new(vec![url.clone()], (*k).clone(), Default::default()))
            .collect();
        for c in &clients {
            c.wait_connected(Duration::from_secs(5)).await.unwrap();
        }
        let all = ids(&[&gpu_chat, &chat, &gpu]);
        assert_eq!(listed(&server, "").await, (200, all));
        assert_eq!(
            listed(&server, "?require=gpu").await.1,
            ids(&[&gpu_chat, &gpu])
        );
        assert_eq!(
            listed(&server, "?require=gpu,chat").await.1,
            ids(&[&gpu_chat])
        );
        assert_eq!(
            listed(&server, "?online=1").await.1,
            ids(&[&gpu_chat, &chat])
        );
        assert_eq!(
            listed(&server, "?require=gpu&online=1").await.1,
            ids(&[&gpu_chat])
        );
        assert_eq!(
            listed(&server, "?require=none").await,
            (200, BTreeSet::new())
        );
        // Connected a second of a 10 s window: a share of about 0.1; the absent key has 0.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert_eq!(
            listed(&server, "?min_reputation=0.05").await.1,
            ids(&[&gpu_chat, &chat])
        );
        assert_eq!(
            listed(&server, "?min_reputation=0.9").await.1,
            BTreeSet::new()
        );
        let (_, view) = http(
            server.local_addr(),
            "GET",
            &format!("/records/{}", gpu.node_id()),
            "",
        )
        .await;
        assert_eq!(
            (&view["online"], &view["reputation"]),
            (&Value::Bool(false), &Value::from(0.0))
        );
        for bad in ["?online=maybe", "?min_reputation=2", "?min_reputation=x"] {
            assert_eq!(listed(&server, bad).await.0, 400, "{bad}");
        }
        // A filtered page of one looks at up to 20 records: here all three, so none follow.
        let (status, body) = http(
            server.local_addr(),
            "GET",
            "/namespaces/fleet?require=none&limit=1",
            "",
        )
        .await;
        assert_eq!((status, &body["next_cursor"]), (200, &Value::Null));

        let (status, stats) = http(server.local_addr(), "GET", "/stats", "").await;
        assert_eq!(status, 200);
        assert_eq!(
            (&stats["native_clients"], &stats["browser_clients"]),
            (&Value::from(2), &Value::from(0))
        );
        assert_eq!(stats["records"], Value::from(3));
        assert!(stats["uptime_secs"].is_u64());
        server.shutdown().await;
    })
    .await
    .expect("test within 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_cross_the_relay_and_forged_or_replayed_ones_are_rejected_and_counted() {
    timeout(Duration::from_secs(30), async {
        let server = common::loopback_relay().await;
        let url: RelayUrl = server.url().parse().unwrap();
        let (a, b) = (key(1), key(2));
        let ca = RelayClient::new(vec![url.clone()], a.clone(), Default::default());
        let cb = RelayClient::new(vec![url.clone()], b.clone(), Default::default());
        for c in [&ca, &cb] {
            c.wait_connected(Duration::from_secs(5)).await.unwrap();
        }
        let now = Instant::now();
        let mut alice = Signaling::new(a.clone(), 1);
        let mut bob = Signaling::new(b.clone(), 2);
        alice.handle_input(
            now,
            Input::Send {
                to: b.node_id(),
                session: None,
                kind: Kind::Offer,
                body: "v=0\r\na=fingerprint:sha-256 AB:CD\r\n".into(),
                unix_ms: unix_ms(),
            },
        );
        let Output::Transmit { data: offer, .. } = alice.poll_output() else {
            panic!("no offer");
        };
        // The offer as sent, the same again (a replay), and one whose SDP someone on the way
        // changed (a forgery: the fingerprint is what a relay in the middle would swap).
        let mut forged = offer.clone();
        let at = forged.len() - 70;
        forged[at] ^= 0x20;
        for d in [&offer, &offer, &forged] {
            ca.send_wait(b.node_id(), d.clone().into()).await.unwrap();
        }
        let mut outs = Vec::new();
        for _ in 0..3 {
            let (from, d, _) = timeout(Duration::from_secs(5), cb.recv()).await.unwrap().unwrap();
            assert_eq!(from, a.node_id());
            bob.handle_input(now, Input::Received { data: &d, unix_ms: unix_ms() });
            outs.push(bob.poll_output());
        }
        assert!(matches!(&outs[0], Output::Received(s) if s.kind == Kind::Offer && s.body.contains("AB:CD")));
        assert!(matches!(&outs[1], Output::Rejected(Rejected::Replayed { .. })));
        assert!(matches!(&outs[2], Output::Rejected(Rejected::Invalid(_))));
        assert_eq!(
            bob.stats(),
            SignalStats {
                accepted: 1,
                replayed: 1,
                forged: 1,
                ..SignalStats::default()
            }
        );
        let (_, stats) = http(server.local_addr(), "GET", "/stats", "").await;
        assert_eq!(stats["signals_forwarded"], Value::from(3));
        assert!(stats["frames_forwarded"].as_u64().unwrap() >= 3);
        server.shutdown().await;
    })
    .await
    .expect("test within 30 s");
}
