//! `Lookup` over real sources on loopback: a relay's registry and a private Mainline DHT.
//! An endpoint dials a node by its key alone; later, newer answers are merged and cached. And
//! the publisher that keeps a node's record in both, with its events.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use burrow::dht::{DhtConfig, DhtDiscovery, LocalTestnet, Namespace};
use burrow::endpoint::{Endpoint, EndpointOptions};
use burrow::lookup::{Listing, Lookup};
use burrow::publisher::{PublishEvent, PublisherOptions, RecordPublisher, Source};
use burrow::record::NodeRecord;
use burrow::registry_client::{RegistryClient, RegistryClientOptions};
use burrow::relay_client::RelayUrl;
use burrow::ticket::Ticket;
use burrow::{NodeId, SecretKey};
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

        let lookup = Lookup::new(vec![url(&relay)], None, Duration::from_secs(5));
        let conn = a
            .connect_node(b.node_id(), &lookup, ALPN)
            .await
            .expect("dials by node id");
        assert_eq!(conn.remote, b.node_id());
        let (mut send, mut recv) = conn.quic.open_bi().await.unwrap();
        send.write_all(b"found you").await.unwrap();
        send.finish().unwrap();
        assert_eq!(recv.read_to_end(1024).await.unwrap(), b"found you");

        // With the registry gone, the cached answer still serves.
        relay.shutdown().await;
        let again = timeout(Duration::from_millis(200), lookup.resolve(&b.node_id()))
            .await
            .expect("answered from the cache at once")
            .expect("still known");
        assert_eq!(again.ticket.addrs, b.ticket().addrs);
        // A node nobody knows is still not found.
        let stranger = SecretKey::from_bytes(rand::random()).node_id();
        assert!(lookup.resolve(&stranger).await.is_err());
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

    let lookup = Lookup::new(
        vec![url(&relay)],
        Some(Arc::new(dht)),
        Duration::from_secs(10),
    );
    let (first, later) = lookup.resolve_with_updates(&node).await.unwrap();
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
    let cached = lookup.resolve(&node).await.unwrap();
    assert_eq!((cached.seq, cached.ticket.addrs), (2, new.addrs));
}

#[tokio::test]
async fn the_publisher_keeps_the_record_fresh_everywhere_and_reports_each_source() {
    let net = tokio::task::spawn_blocking(|| LocalTestnet::new(20).expect("local DHT"))
        .await
        .unwrap();
    let start_dht = || {
        DhtDiscovery::start(DhtConfig {
            request_timeout: Duration::from_millis(500),
            ..net.client_config()
        })
    };
    let (dht, reader) = (start_dht().await.unwrap(), start_dht().await.unwrap());
    let relay = relay().await;
    // Nothing listens on port 1.
    let dead: RelayUrl = "http://127.0.0.1:1".parse().unwrap();
    let key = SecretKey::from_bytes(rand::random());
    let node = key.node_id();
    let addrs: Arc<Mutex<Vec<SocketAddr>>> =
        Arc::new(Mutex::new(vec!["192.0.2.1:1000".parse().unwrap()]));
    let ticket = {
        let (addrs, relays) = (addrs.clone(), vec![url(&relay)]);
        move || Ticket {
            node_id: node,
            relays: relays.clone(),
            addrs: addrs.lock().unwrap().clone(),
        }
    };
    let mut publisher = RecordPublisher::start(
        key,
        ticket,
        PublisherOptions {
            registries: vec![url(&relay), dead.clone()],
            dht: Some(Arc::new(dht)),
            namespaces: vec!["team.p".into()],
            republish_every: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .unwrap();

    // Every source reports.
    let mut seen = (None, None, false, false);
    // Per source, since each publishes in a loop of its own.
    let mut last_seqs = std::collections::HashMap::new();
    timeout(Duration::from_secs(60), async {
        while !matches!(seen, (Some(_), Some(_), true, true)) {
            match publisher.next_event().await {
                PublishEvent::Published {
                    source,
                    seq,
                    stored,
                } => {
                    let last = last_seqs.insert(source.to_string(), seq).unwrap_or(0);
                    assert!(seq > last, "{source}: seq {seq} after {last}");
                    match source {
                        Source::Dht => seen.1 = Some(stored),
                        Source::Registry(u) => {
                            assert_eq!(u, url(&relay));
                            seen.0 = Some(stored);
                        }
                    }
                }
                PublishEvent::PublishFailed { source, error } => {
                    assert_eq!(source, Source::Registry(dead.clone()), "{error}");
                    assert!(error.to_string().contains("connect"), "{error}");
                    seen.2 = true;
                }
                PublishEvent::Announced { namespace } => {
                    assert_eq!(namespace, "team.p");
                    seen.3 = true;
                }
                other => panic!("{other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("every source reports within 60 s: {seen:?}"));
    let (registry_stored, dht_stored, ..) = seen;
    assert_eq!(registry_stored, Some(None), "a registry is one store");
    assert!(dht_stored.flatten().unwrap() > 0, "{dht_stored:?}");
    let client = RegistryClient::new(vec![url(&relay)], RegistryClientOptions::default());
    let listed = client.list("team.p", None, 10).await.unwrap();
    assert_eq!(listed.records.len(), 1);
    assert_eq!(
        reader.members(&Namespace::new("team.p", None)).await,
        [node]
    );

    // A new address reaches both within a republish or two, under a higher seq.
    let last_seq = last_seqs.into_values().max().unwrap();
    let new: Vec<SocketAddr> = vec!["192.0.2.2:2000".parse().unwrap()];
    *addrs.lock().unwrap() = new.clone();
    timeout(Duration::from_secs(20), async {
        loop {
            let at_registry = client.lookup(&node).await.unwrap();
            let in_dht = reader.resolve(&node).await.expect("in the DHT");
            let from_dht = NodeRecord::decode_payload_for(&in_dht.value, &node).unwrap();
            if at_registry.record().addrs == new && from_dht.addrs == new {
                assert!(at_registry.record().seq > last_seq);
                assert!(from_dht.seq > last_seq);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the new address is published within 20 s");
}

#[tokio::test]
async fn a_namespace_lists_each_member_once_with_who_listed_it_and_its_record() {
    let net = tokio::task::spawn_blocking(|| LocalTestnet::new(20).expect("local DHT"))
        .await
        .unwrap();
    let dht = DhtDiscovery::start(DhtConfig {
        request_timeout: Duration::from_millis(500),
        ..net.client_config()
    })
    .await
    .unwrap();
    let relay = relay().await;
    let registry = RegistryClient::new(vec![url(&relay)], RegistryClientOptions::default());
    let ns = Namespace::new("crew", None);
    // a: at the registry only; b: in the DHT only; c: both.
    let keys: Vec<SecretKey> = (0..3)
        .map(|_| SecretKey::from_bytes(rand::random()))
        .collect();
    let record = |k: &SecretKey, port: u16| {
        let mut r = NodeRecord::new(k.node_id(), 1, expires());
        r.addrs = vec![SocketAddr::from(([192, 0, 2, 1], port))];
        r
    };
    for (i, k) in keys.iter().enumerate() {
        let r = record(k, 1000 + i as u16);
        if i != 1 {
            let signed = r.sign(k).unwrap();
            registry
                .publish(&signed, &["crew".to_string()], None)
                .await
                .unwrap();
        }
        if i != 0 {
            dht.publish(k, &r.encode_payload().unwrap(), 1)
                .await
                .unwrap();
            dht.announce(&ns, k).await.unwrap();
        }
    }
    let listed = burrow::lookup::list_members("crew", None, &[url(&relay)], Some(&dht))
        .await
        .unwrap();
    assert!(listed.registry_error.is_none());
    /// Node, listed by, record from, record's addresses.
    type Row = (NodeId, Vec<Listing>, Option<Listing>, Vec<SocketAddr>);
    let rows: Vec<Row> = listed
        .members
        .into_iter()
        .map(|m| {
            let (from, addrs) = match m.record {
                Some((from, r)) => (Some(from), r.addrs),
                None => (None, Vec::new()),
            };
            (m.node_id, m.listed_by, from, addrs)
        })
        .collect();
    let mut want = vec![
        (
            keys[0].node_id(),
            vec![Listing::Registry],
            Some(Listing::Registry),
            1000,
        ),
        (
            keys[1].node_id(),
            vec![Listing::Dht],
            Some(Listing::Dht),
            1001,
        ),
        (
            keys[2].node_id(),
            vec![Listing::Registry, Listing::Dht],
            Some(Listing::Registry),
            1002,
        ),
    ];
    want.sort_by_key(|w| w.0);
    let want: Vec<_> = want
        .into_iter()
        .map(|(n, l, f, port)| (n, l, f, vec![SocketAddr::from(([192, 0, 2, 1], port))]))
        .collect();
    assert_eq!(rows, want);
    // A closed namespace is never asked of a registry: with no DHT, there is nothing to ask.
    let closed = burrow::lookup::list_members("crew", Some(b"secret"), &[url(&relay)], None).await;
    assert!(matches!(
        closed,
        Err(burrow::lookup::MembersError::NoSource)
    ));
}
