//! `Discovery` over real sources on loopback: a relay's registry and a private Mainline DHT.
//! An endpoint dials a node by its key alone; later, newer answers are merged and cached.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use burrow::dht::{DhtConfig, DhtDiscovery, LocalTestnet};
use burrow::discovery::Discovery;
use burrow::endpoint::{Endpoint, EndpointOptions};
use burrow::record::NodeRecord;
use burrow::registry_client::{RegistryClient, RegistryClientOptions};
use burrow::relay_client::RelayUrl;
use burrow::SecretKey;
use burrow_relay::RelayServer;
use common::loopback_relay as relay;
use tokio::time::timeout;

const ALPN: &[u8] = b"burrow-test/1";

fn url(relay: &RelayServer) -> RelayUrl {
    relay.url().parse().unwrap()
}

fn expires() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600
}

/// Publishes `record` (signed by `key`) at the relay's registry.
async fn register(relay: &RelayServer, key: &SecretKey, record: NodeRecord) {
    let client = RegistryClient::new(vec![url(relay)], RegistryClientOptions::default());
    let report = client
        .publish(&record.sign(key).unwrap(), &[], None)
        .await
        .expect("registry accepts the record");
    assert_eq!(report.accepted.len(), 1);
}

#[tokio::test]
async fn an_endpoint_dials_a_node_known_only_by_its_key_and_the_answer_is_cached() {
    timeout(Duration::from_secs(30), async {
        let relay = relay().await;
        let bind = |key: SecretKey| {
            Endpoint::bind(
                key,
                EndpointOptions {
                    bind_v4: "127.0.0.1:0".parse().unwrap(),
                    bind_v6: None,
                    relays: vec![url(&relay)],
                    alpns: vec![ALPN.to_vec()],
                    ..Default::default()
                },
            )
        };
        let b_key = SecretKey::from_bytes(rand::random());
        let (a, b) = (
            bind(SecretKey::from_bytes(rand::random())).await.unwrap(),
            bind(b_key.clone()).await.unwrap(),
        );
        let mut record = NodeRecord::new(b.node_id(), 1, expires());
        record.relays = vec![url(&relay)];
        record.addrs = b.ticket().addrs;
        register(&relay, &b_key, record).await;
        tokio::spawn({
            let b = b.clone();
            async move {
                while let Some(conn) = b.accept().await {
                    let (mut send, mut recv) = conn.quic.accept_bi().await.unwrap();
                    let got = recv.read_to_end(1024).await.unwrap();
                    send.write_all(&got).await.unwrap();
                    send.finish().unwrap();
                    let _ = conn.quic.closed().await;
                }
            }
        });

        let discovery = Discovery::new(vec![url(&relay)], None, Duration::from_secs(5));
        let conn = a
            .connect_node(b.node_id(), &discovery, ALPN)
            .await
            .expect("dials by node id");
        assert_eq!(conn.remote, b.node_id());
        let (mut send, mut recv) = conn.quic.open_bi().await.unwrap();
        send.write_all(b"found you").await.unwrap();
        send.finish().unwrap();
        assert_eq!(recv.read_to_end(1024).await.unwrap(), b"found you");

        // With the registry gone, the cached answer still serves.
        relay.shutdown().await;
        let again = timeout(Duration::from_millis(200), discovery.resolve(&b.node_id()))
            .await
            .expect("answered from the cache at once")
            .expect("still known");
        assert_eq!(again.ticket.addrs, b.ticket().addrs);
        // A node nobody knows is still not found.
        let stranger = SecretKey::from_bytes(rand::random()).node_id();
        assert!(discovery.resolve(&stranger).await.is_err());
    })
    .await
    .expect("within 30 s");
}

#[tokio::test]
async fn a_newer_record_found_later_is_merged_into_the_cache() {
    let net = tokio::task::spawn_blocking(|| LocalTestnet::new(20).expect("local DHT"))
        .await
        .unwrap();
    let dht = DhtDiscovery::start(DhtConfig {
        request_timeout: Duration::from_millis(500),
        ..net.client_config()
    })
    .await
    .expect("DHT client");
    let relay = relay().await;
    let key = SecretKey::from_bytes(rand::random());
    let node = key.node_id();

    // The registry holds seq 1, the DHT seq 2 with another address.
    let mut old = NodeRecord::new(node, 1, expires());
    old.addrs = vec!["192.0.2.1:1000".parse().unwrap()];
    register(&relay, &key, old).await;
    let mut new = NodeRecord::new(node, 2, expires());
    new.addrs = vec!["192.0.2.2:2000".parse().unwrap()];
    let payload = new.encode_payload().unwrap();
    dht.publish(&key, &payload, 2).await.expect("DHT stores it");

    let discovery = Discovery::new(
        vec![url(&relay)],
        Some(Arc::new(dht)),
        Duration::from_secs(10),
    );
    let (first, later) = discovery.resolve_with_updates(&node).await.unwrap();
    eprintln!("first answer: {} seq {}", first.source, first.seq);
    if first.seq == 1 {
        // The registry was first; the DHT's newer record follows.
        let merged = timeout(Duration::from_secs(15), later)
            .await
            .expect("the DHT answers")
            .expect("a merged answer");
        assert_eq!(
            (merged.seq, merged.ticket.addrs.clone()),
            (2, new.addrs.clone())
        );
    }
    // Either way the cache now serves the newest record.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let cached = discovery.resolve(&node).await.unwrap();
    assert_eq!((cached.seq, cached.ticket.addrs), (2, new.addrs));
}
