//! burrow's DHT records against libtorrent's DHT (Debian's python3-libtorrent), an
//! independent BEP 5/44 implementation, in a private DHT of libtorrent sessions on loopback
//! (never the real DHT). Without python3-libtorrent these skip, except under CI.

#[path = "support/libtorrent.rs"]
mod libtorrent;

use std::time::{Duration, Instant};

use burrow::dht::{DhtConfig, DhtDiscovery, Resolved, RECORD_SALT};
use burrow::SecretKey;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use libtorrent::Libtorrent;

/// libtorrent sessions per test: enough that a lookup has several nodes to ask.
const SESSIONS: usize = 6;

/// A burrow DHT node (client mode, as `listen` and `resolve` run it) that joins the
/// libtorrent DHT only.
async fn burrow_node(lt: &Libtorrent) -> DhtDiscovery {
    DhtDiscovery::start(DhtConfig {
        bootstrap: lt.nodes.clone(),
        bind: "127.0.0.1:0".parse().unwrap(),
        request_timeout: Duration::from_millis(500),
        ..DhtConfig::default()
    })
    .await
    .expect("burrow DHT node")
}

fn random_key() -> SecretKey {
    SecretKey::from_bytes(rand::random())
}

/// BEP 44's signed bytes for a salted mutable item.
fn signable(salt: &[u8], seq: i64, value: &[u8]) -> Vec<u8> {
    let mut out = format!("4:salt{}:", salt.len()).into_bytes();
    out.extend_from_slice(salt);
    out.extend_from_slice(format!("3:seqi{seq}e1:v{}:", value.len()).as_bytes());
    out.extend_from_slice(value);
    out
}

#[tokio::test]
async fn libtorrent_reads_the_record_burrow_published() {
    let Some(mut lt) = Libtorrent::start(SESSIONS, false) else {
        return;
    };
    let node = burrow_node(&lt).await;
    let key = random_key();
    let record = b"burrow record bytes, opaque to the DHT".to_vec();
    let stored_at = node.publish(&key, &record, 42).await.unwrap();
    assert!(stored_at > 0, "no libtorrent node stored it");

    let id = key.node_id();
    let item = lt
        .get(SESSIONS - 1, id.as_bytes(), RECORD_SALT)
        .expect("libtorrent finds burrow's record");
    assert_eq!((item.seq, &item.value), (42, &record));
    // libtorrent checked the signature before handing the item over; check it here too.
    VerifyingKey::from_bytes(id.as_bytes())
        .unwrap()
        .verify(
            &signable(RECORD_SALT, item.seq, &item.value),
            &Signature::from_bytes(&item.signature),
        )
        .expect("signed by the node's key over burrow's salt");
    // The salt is part of the item's address: unsalted, there is nothing.
    assert_eq!(lt.get(0, id.as_bytes(), b""), None);
}

#[tokio::test]
async fn burrow_resolves_a_record_held_only_by_libtorrent_nodes() {
    let Some(mut lt) = Libtorrent::start(SESSIONS, false) else {
        return;
    };
    let key = random_key();
    let id = key.node_id();
    let (seq, stored_at) = lt.put(0, &key.to_bytes(), id.as_bytes(), RECORD_SALT, b"from lt");
    assert!(stored_at > 0, "libtorrent stored it nowhere");

    let node = burrow_node(&lt).await;
    let started = Instant::now();
    let got = node.resolve(&id).await.expect("burrow resolves it");
    eprintln!("resolve through libtorrent nodes: {:?}", started.elapsed());
    assert_eq!(
        got,
        Resolved {
            seq,
            value: b"from lt".to_vec()
        }
    );
    // A key nobody published under resolves to nothing.
    assert_eq!(node.resolve(&random_key().node_id()).await, None);
}

#[tokio::test]
async fn a_newer_record_written_by_libtorrent_wins_over_burrows() {
    let Some(mut lt) = Libtorrent::start(SESSIONS, false) else {
        return;
    };
    let (publisher, reader) = (burrow_node(&lt).await, burrow_node(&lt).await);
    let key = random_key();
    let id = key.node_id();
    publisher
        .publish(&key, b"old, by burrow", 1000)
        .await
        .unwrap();
    assert_eq!(reader.resolve(&id).await.unwrap().seq, 1000);

    // libtorrent reads seq 1000 and writes 1001 under the same key and salt.
    let (seq, stored_at) = lt.put(
        2,
        &key.to_bytes(),
        id.as_bytes(),
        RECORD_SALT,
        b"new, by lt",
    );
    assert_eq!(seq, 1001);
    assert!(stored_at > 0, "libtorrent stored it nowhere");
    for node in [&reader, &publisher] {
        let got = node.resolve(&id).await.expect("resolves");
        assert_eq!(
            (got.seq, got.value.as_slice()),
            (1001, b"new, by lt".as_slice())
        );
    }
    // And burrow cannot go back to an older one over libtorrent's.
    assert!(publisher.publish(&key, b"older", 999).await.is_err());
}

/// A burrow node that published to libtorrent nodes must not slow down later lookups through
/// them. libtorrent adds whoever stores an item at it to its routing table, even a read-only
/// node (BEP 43 says not to), so the publisher's socket is handed out as a DHT node; if it
/// then stayed silent, every lookup that asked it would wait out a request timeout.
#[tokio::test]
async fn resolving_through_libtorrent_nodes_stays_fast_after_a_burrow_publish() {
    let Some(mut lt) = Libtorrent::start(SESSIONS, false) else {
        return;
    };
    let key = random_key();
    let id = key.node_id();
    let (_, stored_at) = lt.put(0, &key.to_bytes(), id.as_bytes(), RECORD_SALT, b"from lt");
    assert!(stored_at > 0, "libtorrent stored it nowhere");
    // Mainline's default request timeout (2 s), as `burrow resolve` runs.
    let config = || DhtConfig {
        bootstrap: lt.nodes.clone(),
        bind: "127.0.0.1:0".parse().unwrap(),
        ..DhtConfig::default()
    };
    let timed_resolve = |config: DhtConfig| async {
        let node = DhtDiscovery::start(config).await.unwrap();
        let started = Instant::now();
        let got = node.resolve(&id).await.expect("resolves");
        (started.elapsed(), got)
    };
    let (before, _) = timed_resolve(config()).await;

    // A publisher that stays up, as `burrow listen` does.
    let publisher = DhtDiscovery::start(config()).await.unwrap();
    let other = random_key();
    assert!(
        publisher
            .publish(&other, b"listen's record", 1)
            .await
            .unwrap()
            > 0
    );
    let (after, got) = timed_resolve(config()).await;
    eprintln!(
        "resolve through libtorrent nodes: {before:?} before a burrow publish, {after:?} after"
    );
    assert_eq!(got.value, b"from lt");
    assert!(
        after < Duration::from_millis(1000),
        "resolve took {after:?} after a publish"
    );
}
