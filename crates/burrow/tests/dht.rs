//! Discovery over a private Mainline DHT of 100 nodes on 127.0.0.1 (never the real DHT):
//! records by NodeId, and namespace membership.

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use burrow::dht::{DhtConfig, DhtDiscovery, DhtError, LocalTestnet, Namespace, RECORD_SALT};
use burrow::{NodeId, SecretKey};
use futures_util::future::join_all;

/// One network shared by every test in this file (its nodes are threads; one set is enough).
fn net() -> &'static LocalTestnet {
    static NET: OnceLock<LocalTestnet> = OnceLock::new();
    NET.get_or_init(|| LocalTestnet::new(100).expect("local testnet"))
}

async fn client() -> DhtDiscovery {
    let config = DhtConfig {
        request_timeout: Duration::from_millis(500),
        ..net().client_config()
    };
    DhtDiscovery::start(config).await.expect("client node")
}

/// Logs for a failing test's output (RUST_LOG=burrow=debug shows every slot read and write).
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn random_key() -> SecretKey {
    SecretKey::from_bytes(rand::random())
}

#[tokio::test]
async fn a_published_record_resolves_from_another_node() {
    let (publisher, resolver) = (client().await, client().await);
    let key = random_key();
    let record = b"opaque record bytes".to_vec();

    let stored_at = publisher.publish(&key, &record, 7).await.unwrap();
    assert!(stored_at > 0);
    let got = resolver.resolve(&key.node_id()).await.expect("resolves");
    assert_eq!((got.seq, got.value), (7, record));

    // A key that never published resolves to nothing.
    assert_eq!(resolver.resolve(&random_key().node_id()).await, None);
    // A value over BEP 44's 1000 bytes is refused before it reaches the network.
    assert!(matches!(
        publisher.publish(&key, &[0; 1001], 8).await,
        Err(DhtError::TooLarge(1001))
    ));
    publisher.publish(&key, &[0; 1000], 8).await.unwrap();
}

#[tokio::test]
async fn a_stale_sequence_number_loses() {
    let (a, b, reader) = (client().await, client().await, client().await);
    let key = random_key();
    a.publish(&key, b"five", 5).await.unwrap();
    // The nodes that took seq 5 refuse seq 3 (BEP 44 error 302).
    let err = a.publish(&key, b"three", 3).await.unwrap_err();
    assert!(matches!(err, DhtError::Stale(3)), "{err}");
    // An older record, even from another node, is refused by the nodes that hold seq 5
    // (BEP 44 error 302). Nodes that never got seq 5 (the two writers' closest sets need not
    // be the same) may take it, so the put can succeed; either way seq 5 must win.
    match b.publish(&key, b"three", 3).await {
        Ok(_) | Err(DhtError::Stale(3)) => {}
        Err(e) => panic!("unexpected: {e}"),
    }
    let got = reader.resolve(&key.node_id()).await.unwrap();
    assert_eq!((got.seq, got.value.as_slice()), (5, b"five".as_slice()));
}

#[tokio::test]
async fn an_item_signed_by_another_key_is_never_returned() {
    let node = client().await;
    let (a, b) = (random_key(), random_key());
    // B publishes under its own key: that is B's record, not A's.
    node.publish(&b, b"from b", 1).await.unwrap();
    assert_eq!(node.resolve(&a.node_id()).await, None);

    // B signs an item but claims A's key: storing nodes check the signature and refuse it.
    let dht = raw_client();
    let forged = forged_item(&a, &b, b"forged", 9);
    assert!(dht.put_mutable(forged, None).await.is_err());
    assert_eq!(node.resolve(&a.node_id()).await, None);
    assert_eq!(node.resolve(&b.node_id()).await.unwrap().value, b"from b");
}

/// The client checks signatures itself: a lying DHT node that hands out a forged, newer item
/// for A loses to an honest node that has A's real, older one.
#[tokio::test]
async fn a_forged_answer_from_a_lying_node_is_ignored() {
    let (a, b) = (random_key(), random_key());
    let honest = FakeNode::serving(&mainline::MutableItem::new(
        a.signing_key().clone(),
        b"real",
        1,
        Some(RECORD_SALT),
    ));
    let liar = FakeNode::serving(&forged_item(&a, &b, b"forged", 9));
    let node = DhtDiscovery::start(DhtConfig {
        bootstrap: vec![honest.addr(), liar.addr()],
        bind: "127.0.0.1:0".parse().unwrap(),
        request_timeout: Duration::from_millis(300),
        ..DhtConfig::default()
    })
    .await
    .unwrap();
    let got = node.resolve(&a.node_id()).await.expect("the honest answer");
    assert_eq!((got.seq, got.value.as_slice()), (1, b"real".as_slice()));
    assert!(liar.answered_gets() > 0, "the liar was asked and answered");

    // With only the liar to ask, there is nothing.
    let alone = DhtDiscovery::start(DhtConfig {
        bootstrap: vec![liar.addr()],
        bind: "127.0.0.1:0".parse().unwrap(),
        request_timeout: Duration::from_millis(300),
        ..DhtConfig::default()
    })
    .await
    .unwrap();
    assert_eq!(alone.resolve(&a.node_id()).await, None);
}

#[tokio::test]
async fn twenty_members_of_a_namespace_all_find_each_other() {
    logs();
    let ns = Namespace::new("burrow-test-team", Some(b"shared secret"));
    let keys: Vec<SecretKey> = (0..20).map(|_| random_key()).collect();
    let nodes = join_all((0..20).map(|_| client())).await;
    let all: BTreeSet<NodeId> = keys.iter().map(|k| k.node_id()).collect();

    // Everyone announces at once: members that share a slot race for it.
    let start = Instant::now();
    let results = join_all(nodes.iter().zip(&keys).map(|(n, k)| n.announce(&ns, k))).await;
    for r in results {
        r.unwrap();
    }
    eprintln!("20 concurrent announces: {:?}", start.elapsed());

    let start = Instant::now();
    let lists = join_all(nodes.iter().map(|n| n.members(&ns))).await;
    eprintln!("20 listings: {:?}", start.elapsed());
    for (i, list) in lists.into_iter().enumerate() {
        let list: BTreeSet<NodeId> = list.into_iter().collect();
        let missing: Vec<_> = all.difference(&list).map(|n| (n, ns.slot_of(n))).collect();
        assert_eq!(
            list,
            all,
            "member {i} sees {} of 20, missing {missing:?}",
            list.len()
        );
    }

    // Without the secret, or under another name, there is nothing to see.
    let outsider = client().await;
    assert!(outsider
        .members(&Namespace::new("burrow-test-team", None))
        .await
        .is_empty());
    assert!(outsider
        .members(&Namespace::new("burrow-test-team", Some(b"guess")))
        .await
        .is_empty());

    // A member that leaves is no longer listed; the rest still are.
    nodes[0].leave(&ns, &keys[0]).await.unwrap();
    let list: BTreeSet<NodeId> = outsider.members(&ns).await.into_iter().collect();
    let mut rest = all.clone();
    rest.remove(&keys[0].node_id());
    assert_eq!(list, rest);
}

#[tokio::test]
async fn bad_settings_are_clear_errors() {
    let err = DhtDiscovery::start(DhtConfig {
        bootstrap: vec!["no-port".into()],
        ..net().client_config()
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("no-port"), "{err}");

    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let err = DhtDiscovery::start(DhtConfig {
        bind: match taken.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        },
        ..net().client_config()
    })
    .await
    .unwrap_err();
    assert!(matches!(err, DhtError::Bind { .. }), "{err}");
}

/// A plain mainline client, to send what burrow's API will not.
fn raw_client() -> mainline::async_dht::AsyncDht {
    mainline::Dht::builder()
        .bootstrap(&net().client_config().bootstrap)
        .bind_address(std::net::Ipv4Addr::LOCALHOST)
        .build()
        .unwrap()
        .as_async()
}

/// An item that claims `claimed`'s key but carries `signer`'s signature.
fn forged_item(
    claimed: &SecretKey,
    signer: &SecretKey,
    value: &[u8],
    seq: i64,
) -> mainline::MutableItem {
    let by_signer =
        mainline::MutableItem::new(signer.signing_key().clone(), value, seq, Some(RECORD_SALT));
    mainline::MutableItem::new_signed_unchecked(
        *claimed.node_id().as_bytes(),
        *by_signer.signature(),
        value,
        seq,
        Some(RECORD_SALT),
    )
}

/// A DHT node on 127.0.0.1 that answers every `get` with one fixed mutable item (whatever its
/// signature) and every other query with an empty answer. KRPC (BEP 5) written by hand.
struct FakeNode {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    gets: Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeNode {
    fn serving(item: &mainline::MutableItem) -> FakeNode {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let gets = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (k, sig, seq, v) = (
            *item.key(),
            *item.signature(),
            item.seq(),
            item.value().to_vec(),
        );
        let id: [u8; 20] = rand::random();
        let (stop2, gets2) = (stop.clone(), gets.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let req = &buf[..n];
                let Some(tid) = transaction_id(req) else {
                    continue;
                };
                let mut r = Vec::new();
                r.extend_from_slice(b"d1:rd2:id20:");
                r.extend_from_slice(&id);
                if contains(req, b"1:q3:get") {
                    gets2.fetch_add(1, Ordering::Relaxed);
                    r.extend_from_slice(b"1:k32:");
                    r.extend_from_slice(&k);
                    r.extend_from_slice(format!("3:seqi{seq}e3:sig64:").as_bytes());
                    r.extend_from_slice(&sig);
                    r.extend_from_slice(b"5:token4:tokn");
                    r.extend_from_slice(format!("1:v{}:", v.len()).as_bytes());
                    r.extend_from_slice(&v);
                } else {
                    r.extend_from_slice(b"5:nodes0:");
                }
                r.extend_from_slice(format!("e1:t{}:", tid.len()).as_bytes());
                r.extend_from_slice(&tid);
                r.extend_from_slice(b"1:y1:re");
                let _ = socket.send_to(&r, from);
            }
        });
        FakeNode { addr, stop, gets }
    }

    fn addr(&self) -> String {
        self.addr.to_string()
    }

    fn answered_gets(&self) -> usize {
        self.gets.load(Ordering::Relaxed)
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The `t` of a KRPC message: its top-level keys sort after `a`'s dictionary, so the last
/// `1:t` is the key (random ids inside `a` could only fake an earlier one).
fn transaction_id(msg: &[u8]) -> Option<Vec<u8>> {
    let at = msg.windows(3).rposition(|w| w == b"1:t")? + 3;
    let colon = at + msg[at..].iter().position(|&c| c == b':')?;
    let len: usize = std::str::from_utf8(&msg[at..colon]).ok()?.parse().ok()?;
    msg.get(colon + 1..colon + 1 + len).map(<[u8]>::to_vec)
}
