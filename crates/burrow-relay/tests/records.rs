//! The bootstrap registry on loopback: a real relay server, driven both by the library's
//! `RegistryClient` and by raw HTTP written here (for what a well-behaved client never sends).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use burrow::record::RecordError;
use burrow::registry_client::{
    RegistryClient, RegistryClientOptions, RegistryError, RegistryFailure,
};
use burrow::relay_client::RelayUrl;
use burrow_proto::identity::{NodeId, SecretKey};
use burrow_proto::record::{sign_delete, NodeRecord, SignedRecord};
use burrow_relay::{Limits, RegistryConfig, RegistryLimits, RelayConfig, RelayServer};
use common::{http, http_text};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn key(n: u32) -> SecretKey {
    let mut seed = [0; 32];
    seed[..4].copy_from_slice(&n.to_be_bytes());
    seed[31] = 0xaa;
    SecretKey::from_bytes(seed)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A record for `key`, valid for an hour.
fn record(key: &SecretKey, seq: u64) -> NodeRecord {
    let mut r = NodeRecord::new(key.node_id(), seq, now() + 3600);
    r.relays.push("http://127.0.0.1:3340".parse().unwrap());
    r.addrs.push("192.0.2.1:41641".parse().unwrap());
    r.name = Some("node".into());
    r
}

fn signed(key: &SecretKey, seq: u64) -> SignedRecord {
    record(key, seq).sign(key).unwrap()
}

async fn start(registry: RegistryConfig) -> RelayServer {
    RelayServer::start(RelayConfig {
        limits: Limits::unlimited(),
        registry,
        ..RelayConfig::default()
    })
    .await
    .expect("relay starts")
}

fn unlimited() -> RegistryConfig {
    RegistryConfig {
        limits: RegistryLimits::unlimited(),
        ..RegistryConfig::default()
    }
}

fn url(server: &RelayServer) -> RelayUrl {
    server.url().parse().unwrap()
}

fn client(urls: Vec<RelayUrl>) -> RegistryClient {
    RegistryClient::new(
        urls,
        RegistryClientOptions {
            timeout: Duration::from_millis(1500),
            ..RegistryClientOptions::default()
        },
    )
}

fn b64(bytes: &[u8]) -> String {
    data_encoding::BASE64URL_NOPAD.encode(bytes)
}

async fn put(addr: SocketAddr, node: &NodeId, body: Value) -> (u16, Value) {
    http(addr, "PUT", &format!("/records/{node}"), &body.to_string()).await
}

/// The error message of a refusal, checking the JSON shape on the way.
fn error_of(body: &Value) -> &str {
    body["error"].as_str().expect("an {\"error\": ...} body")
}

#[tokio::test]
async fn register_look_up_and_list_with_pagination() {
    let server = start(RegistryConfig {
        limits: RegistryLimits {
            page_size: 4,
            ..RegistryLimits::unlimited()
        },
        ..RegistryConfig::default()
    })
    .await;
    let addr = server.local_addr();
    let c = client(vec![url(&server)]);

    let mut chat: Vec<NodeId> = Vec::new();
    for n in 0..10 {
        let k = key(n);
        let ns = if n < 7 { "chat" } else { "games" };
        let report = c.publish(&signed(&k, 1), &[ns.into()], None).await.unwrap();
        assert_eq!(report.accepted, vec![url(&server)]);
        if n < 7 {
            chat.push(k.node_id());
        }
    }
    assert_eq!(server.records().unwrap().len(), 10);
    let (_, metrics) = http_text(addr, "GET", "/metrics", "").await;
    assert!(
        metrics.contains("burrow_relay_registry_records 10"),
        "{metrics}"
    );

    // Look up by key, through the client (which verifies) and raw (the JSON view).
    let found = c.lookup(&key(3).node_id()).await.unwrap();
    assert_eq!(found.record().name.as_deref(), Some("node"));
    assert_eq!(found.record().seq, 1);
    let (status, view) = http(addr, "GET", &format!("/records/{}", key(3).node_id()), "").await;
    assert_eq!(status, 200);
    assert_eq!(view["node_id"], key(3).node_id().to_string());
    assert_eq!(view["seq"], 1);
    assert_eq!(view["name"], "node");
    assert_eq!(view["relays"], json!(["http://127.0.0.1:3340"]));
    assert_eq!(view["addrs"], json!(["192.0.2.1:41641"]));
    assert_eq!(view["record"], b64(found.as_bytes()));
    let stored_until = view["stored_until"].as_u64().unwrap();
    assert!(stored_until <= found.record().expires && stored_until > now());

    let (status, body) = http(addr, "GET", &format!("/records/{}", key(99).node_id()), "").await;
    assert_eq!(status, 404);
    assert!(error_of(&body).contains("no record"));
    assert!(matches!(
        c.lookup(&key(99).node_id()).await,
        Err(RegistryError::NotFound)
    ));

    // List "chat" page by page: in node id order, each page at most the asked size (and the
    // server's page size), every record exactly once.
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = c.list("chat", cursor.as_ref(), 3).await.unwrap();
        assert!(page.records.len() <= 3);
        seen.extend(page.records.iter().map(|r| r.node_id()));
        pages += 1;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    chat.sort();
    assert_eq!(seen, chat);
    assert_eq!(pages, 3);
    // The server caps the page size.
    let (status, page) = http(addr, "GET", "/namespaces/chat?limit=1000", "").await;
    assert_eq!(status, 200);
    assert_eq!(page["records"].as_array().unwrap().len(), 4);
    assert_eq!(page["namespace"], "chat");
    assert!(page["next_cursor"].is_string());
    let (status, page) = http(addr, "GET", "/namespaces/nobody", "").await;
    assert_eq!(
        (status, page["records"].as_array().unwrap().len()),
        (200, 0)
    );
    assert!(page["next_cursor"].is_null());
    assert_eq!(http(addr, "GET", "/namespaces/a%20b", "").await.0, 400);
    assert_eq!(
        http(addr, "GET", "/namespaces/chat?cursor=zz", "").await.0,
        400
    );

    // A higher seq replaces the record and its namespaces.
    let mut moved = record(&key(0), 2);
    moved.name = Some("moved".into());
    c.publish(&moved.sign(&key(0)).unwrap(), &["games".into()], None)
        .await
        .unwrap();
    assert_eq!(c.lookup(&key(0).node_id()).await.unwrap().record(), &moved);
    let (_, page) = http(addr, "GET", "/namespaces/games", "").await;
    assert_eq!(page["records"].as_array().unwrap().len(), 4);
    let (_, page) = http(addr, "GET", "/namespaces/chat?limit=100", "").await;
    assert_eq!(page["records"].as_array().unwrap().len(), 4);
    server.shutdown().await;
}

#[tokio::test]
async fn forged_stale_expired_and_malformed_records_are_refused() {
    let server = start(unlimited()).await;
    let addr = server.local_addr();
    let victim = key(1);
    let mallory = key(2);
    let original = signed(&victim, 5);
    let (status, _) = put(
        addr,
        &victim.node_id(),
        json!({"record": b64(original.as_bytes())}),
    )
    .await;
    assert_eq!(status, 200);

    // Mallory's record naming the victim's key, signed by Mallory: 401.
    let mut forged = record(&victim, 6).encode_payload().unwrap();
    let signature = record(&mallory, 6).sign(&mallory).unwrap();
    forged.extend_from_slice(&signature.as_bytes()[signature.as_bytes().len() - 64..]);
    let (status, body) = put(addr, &victim.node_id(), json!({"record": b64(&forged)})).await;
    assert_eq!(status, 401, "{body}");
    assert!(error_of(&body).contains("signature"));
    // The victim's genuine record with one byte changed: 401.
    let mut tampered = signed(&victim, 7).into_bytes();
    tampered[60] ^= 1;
    let (status, _) = put(addr, &victim.node_id(), json!({"record": b64(&tampered)})).await;
    assert_eq!(status, 401);
    // Mallory's own valid record under the victim's path: 400.
    let (status, body) = put(
        addr,
        &victim.node_id(),
        json!({"record": b64(signed(&mallory, 9).as_bytes())}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(error_of(&body).contains("not"), "{body}");

    // Not newer: 409, both for the same seq and a lower one.
    for seq in [5, 4] {
        let (status, body) = put(
            addr,
            &victim.node_id(),
            json!({"record": b64(signed(&victim, seq).as_bytes())}),
        )
        .await;
        assert_eq!(status, 409, "{body}");
        assert!(error_of(&body).contains("stale"));
    }
    // Expired: 400.
    let mut old = record(&victim, 10);
    old.expires = now() - 10;
    let (status, body) = put(
        addr,
        &victim.node_id(),
        json!({"record": b64(old.sign(&victim).unwrap().as_bytes())}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(error_of(&body).contains("expired"));

    // Malformed requests: 400 each, with a message.
    let bad_bodies = [
        "not json".to_string(),
        json!({"record": "!!!"}).to_string(),
        json!({"record": b64(b"short")}).to_string(),
        json!({"record": b64(original.as_bytes()), "extra": 1}).to_string(),
        json!({"record": b64(signed(&victim, 11).as_bytes()), "namespaces": ["no spaces"]})
            .to_string(),
    ];
    for body in bad_bodies {
        let (status, reply) = http(
            addr,
            "PUT",
            &format!("/records/{}", victim.node_id()),
            &body,
        )
        .await;
        assert_eq!(status, 400, "{body} -> {reply}");
        assert!(!error_of(&reply).is_empty());
    }
    let (status, _) = http(addr, "GET", "/records/not-a-node-id", "").await;
    assert_eq!(status, 400);
    // Too large: 413.
    let huge = json!({"record": "A".repeat(10_000)}).to_string();
    let (status, body) = http(
        addr,
        "PUT",
        &format!("/records/{}", victim.node_id()),
        &huge,
    )
    .await;
    assert_eq!(status, 413);
    assert!(error_of(&body).contains("larger"));

    // After all that, the victim's record is the one it registered.
    let c = client(vec![url(&server)]);
    assert_eq!(c.lookup(&victim.node_id()).await.unwrap(), original);
    server.shutdown().await;
}

#[tokio::test]
async fn records_expire_with_their_ttl() {
    let server = start(RegistryConfig {
        sweep_interval: Duration::from_millis(200),
        ..unlimited()
    })
    .await;
    let c = client(vec![url(&server)]);
    // One held for a second by TTL, one by its own expiry, one for long.
    c.publish(
        &signed(&key(1), 1),
        &["t".into()],
        Some(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    let mut short = record(&key(2), 1);
    short.expires = now() + 1;
    c.publish(&short.sign(&key(2)).unwrap(), &["t".into()], None)
        .await
        .unwrap();
    c.publish(&signed(&key(3), 1), &["t".into()], None)
        .await
        .unwrap();
    assert!(c.lookup(&key(1).node_id()).await.is_ok());
    assert_eq!(c.list("t", None, 10).await.unwrap().records.len(), 3);

    // Unix seconds: "held for a second" ends after the next whole second has passed.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    for gone in [key(1), key(2)] {
        assert!(matches!(
            c.lookup(&gone.node_id()).await,
            Err(RegistryError::NotFound)
        ));
    }
    assert!(c.lookup(&key(3).node_id()).await.is_ok());
    assert_eq!(c.list("t", None, 10).await.unwrap().records.len(), 1);
    // The sweeper has dropped them from memory too.
    assert_eq!(server.records().unwrap().len(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn rate_limits_answer_429() {
    let server = start(RegistryConfig {
        limits: RegistryLimits {
            ip_rate_per_sec: 0.5,
            ip_burst: 5,
            ..RegistryLimits::unlimited()
        },
        ..RegistryConfig::default()
    })
    .await;
    let addr = server.local_addr();
    let path = format!("/records/{}", key(1).node_id());
    for _ in 0..5 {
        assert_eq!(http(addr, "GET", &path, "").await.0, 404);
    }
    let (status, body) = http(addr, "GET", &path, "").await;
    assert_eq!(status, 429);
    assert!(error_of(&body).contains("rate limited"));
    // The relay's other routes are not the registry's to limit.
    let (status, _) = http(addr, "GET", "/health", "").await;
    assert_eq!(status, 200);
    server.shutdown().await;

    // Per key: the third write for one key within the burst of 2 is refused; another key is
    // unaffected.
    let server = start(RegistryConfig {
        limits: RegistryLimits {
            key_rate_per_sec: 0.001,
            key_burst: 2,
            ..RegistryLimits::unlimited()
        },
        ..RegistryConfig::default()
    })
    .await;
    let c = client(vec![url(&server)]);
    for seq in 1..=2 {
        c.publish(&signed(&key(1), seq), &[], None).await.unwrap();
    }
    let e = c.publish(&signed(&key(1), 3), &[], None).await.unwrap_err();
    assert!(e.to_string().contains("429"), "{e}");
    c.publish(&signed(&key(2), 1), &[], None).await.unwrap();
    // Reads are not writes.
    assert_eq!(c.lookup(&key(1).node_id()).await.unwrap().record().seq, 2);
    server.shutdown().await;
}

#[tokio::test]
async fn full_registry_and_namespace_answer_503() {
    let server = start(RegistryConfig {
        limits: RegistryLimits {
            max_records: 3,
            max_per_namespace: 2,
            ..RegistryLimits::unlimited()
        },
        ..RegistryConfig::default()
    })
    .await;
    let addr = server.local_addr();
    let c = client(vec![url(&server)]);
    for n in 0..2 {
        c.publish(&signed(&key(n), 1), &["x".into()], None)
            .await
            .unwrap();
    }
    let (status, body) = put(
        addr,
        &key(2).node_id(),
        json!({"record": b64(signed(&key(2), 1).as_bytes()), "namespaces": ["x"]}),
    )
    .await;
    assert_eq!(status, 503);
    assert!(error_of(&body).contains("full"));
    c.publish(&signed(&key(2), 1), &[], None).await.unwrap();
    let (status, _) = put(
        addr,
        &key(3).node_id(),
        json!({"record": b64(signed(&key(3), 1).as_bytes())}),
    )
    .await;
    assert_eq!(status, 503);
    server.shutdown().await;
}

#[tokio::test]
async fn delete_needs_the_nodes_signature() {
    let server = start(unlimited()).await;
    let addr = server.local_addr();
    let c = client(vec![url(&server)]);
    let victim = key(1);
    let mallory = key(2);
    c.publish(&signed(&victim, 5), &["d".into()], None)
        .await
        .unwrap();
    let path = format!("/records/{}", victim.node_id());
    let delete = |signer: &SecretKey, seq: u64, timestamp: u64| {
        json!({
            "seq": seq,
            "timestamp": timestamp,
            "signature": b64(&sign_delete(signer, seq, timestamp)),
        })
        .to_string()
    };

    // Someone else's signature, an old timestamp, a lower seq, or no signature: refused.
    let (status, body) = http(addr, "DELETE", &path, &delete(&mallory, 5, now())).await;
    assert_eq!(status, 401);
    assert!(error_of(&body).contains("signature"));
    let (status, body) = http(addr, "DELETE", &path, &delete(&victim, 5, now() - 3600)).await;
    assert_eq!(status, 401);
    assert!(error_of(&body).contains("timestamp"));
    let (status, _) = http(addr, "DELETE", &path, &delete(&victim, 4, now())).await;
    assert_eq!(status, 409);
    let (status, _) = http(addr, "DELETE", &path, "{}").await;
    assert_eq!(status, 400);
    assert!(c.lookup(&victim.node_id()).await.is_ok());

    // The node itself, through the client.
    let report = c.remove(&victim, 5).await.unwrap();
    assert_eq!(report.accepted.len(), 1);
    assert!(matches!(
        c.lookup(&victim.node_id()).await,
        Err(RegistryError::NotFound)
    ));
    assert!(c.list("d", None, 10).await.unwrap().records.is_empty());
    let (status, _) = http(addr, "DELETE", &path, &delete(&victim, 5, now())).await;
    assert_eq!(status, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn records_survive_a_restart_with_a_snapshot() {
    let dir = std::env::temp_dir().join(format!("burrow-records-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join("records.snap");
    let config = RegistryConfig {
        snapshot: Some(path.clone()),
        ..unlimited()
    };

    let server = start(config.clone()).await;
    let c = client(vec![url(&server)]);
    let published: Vec<SignedRecord> = (0..5).map(|n| signed(&key(n), 3)).collect();
    for r in &published {
        c.publish(r, &["keep".into()], None).await.unwrap();
    }
    server.shutdown().await;
    assert!(path.exists());

    let server = start(config).await;
    assert_eq!(server.records().unwrap().len(), 5);
    let c = client(vec![url(&server)]);
    for r in &published {
        assert_eq!(&c.lookup(&r.node_id()).await.unwrap(), r);
    }
    assert_eq!(c.list("keep", None, 10).await.unwrap().records.len(), 5);
    // Seqs are remembered too: an old record is still stale after the restart.
    let e = c.publish(&signed(&key(0), 3), &[], None).await.unwrap_err();
    assert!(e.to_string().contains("409"), "{e}");
    server.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn two_registries_one_down_still_answer() {
    let live = start(unlimited()).await;
    // A registry that accepts connections and never answers (so only the timeout saves the
    // client), and one whose port refuses connections.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_url: RelayUrl = format!("http://{}", hang.local_addr().unwrap())
        .parse()
        .unwrap();
    let _held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = hang.accept().await {
            conns.push(s);
        }
    });
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused_url: RelayUrl = format!("http://{}", refused.local_addr().unwrap())
        .parse()
        .unwrap();
    drop(refused);

    let c = client(vec![hang_url.clone(), refused_url.clone(), url(&live)]);
    let rec = signed(&key(1), 1);
    let report = c.publish(&rec, &["x".into()], None).await.unwrap();
    assert_eq!(report.accepted, vec![url(&live)]);
    assert_eq!(report.failed.len(), 2);
    assert!(report
        .failed
        .iter()
        .any(|(u, e)| *u == hang_url && matches!(e, RegistryFailure::Timeout(_))));
    assert!(report
        .failed
        .iter()
        .any(|(u, e)| *u == refused_url && matches!(e, RegistryFailure::Connect(_))));

    // The read returns as soon as the live one answers, well before the hanging one times out.
    let started = std::time::Instant::now();
    let found = c.lookup(&key(1).node_id()).await.unwrap();
    assert_eq!(found, rec);
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(c.list("x", None, 10).await.unwrap().records.len(), 1);

    // With only dead registries, a clear error naming each.
    let dead = client(vec![hang_url, refused_url]);
    match dead.lookup(&key(1).node_id()).await {
        Err(RegistryError::AllFailed(list)) => assert_eq!(list.len(), 2),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        client(vec![]).lookup(&key(1).node_id()).await,
        Err(RegistryError::NoRegistries)
    ));
    live.shutdown().await;
}

/// A registry that serves a forged record is not believed; the honest one is.
#[tokio::test]
async fn a_lying_registry_is_not_believed() {
    use axum::routing::get;
    let victim = key(1);
    let honest = start(unlimited()).await;
    let c = client(vec![url(&honest)]);
    let genuine = signed(&victim, 1);
    c.publish(&genuine, &[], None).await.unwrap();

    // The liar answers at once with a record naming the victim, signed by someone else.
    let mut forged = record(&victim, 99).encode_payload().unwrap();
    let other = signed(&key(2), 99);
    forged.extend_from_slice(&other.as_bytes()[other.as_bytes().len() - 64..]);
    let body = json!({"record": b64(&forged)}).to_string();
    let liar = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let liar_url: RelayUrl = format!("http://{}", liar.local_addr().unwrap())
        .parse()
        .unwrap();
    let app = axum::Router::new().route(
        "/records/{id}",
        get(move || {
            let body = body.clone();
            async move { body }
        }),
    );
    tokio::spawn(async move { axum::serve(liar, app).await });

    let both = client(vec![liar_url.clone(), url(&honest)]);
    let found = both.lookup(&victim.node_id()).await.unwrap();
    assert_eq!(found, genuine);
    match client(vec![liar_url]).lookup(&victim.node_id()).await {
        Err(RegistryError::AllFailed(list)) => assert!(
            matches!(list[0].1, RegistryFailure::Record(RecordError::Signature)),
            "{list:?}"
        ),
        other => panic!("{other:?}"),
    }
    honest.shutdown().await;
}

/// A TCP proxy in front of `upstream` that holds each answer back for `delay`: a registry
/// farther away.
async fn slow_proxy(upstream: SocketAddr, delay: Duration) -> RelayUrl {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut client_rx, mut client_tx) = client.into_split();
                let (mut server_rx, mut server_tx) = server.into_split();
                let up = tokio::io::copy(&mut client_rx, &mut server_tx);
                let down = async {
                    let mut buf = vec![0; 64 * 1024];
                    let mut first = true;
                    loop {
                        let n = server_rx.read(&mut buf).await?;
                        if n == 0 {
                            return client_tx.shutdown().await;
                        }
                        if std::mem::take(&mut first) {
                            tokio::time::sleep(delay).await;
                        }
                        client_tx.write_all(&buf[..n]).await?;
                    }
                };
                let _ = tokio::join!(up, down);
            });
        }
    });
    url
}

/// One registry still holds seq 1 and answers first; the other has seq 2 and answers 100 ms
/// later: the lookup takes seq 2, whichever order the registries are given in.
#[tokio::test]
async fn a_stale_registry_beside_a_fresh_one_cannot_roll_a_lookup_back() {
    let node = key(7);
    let stale = start(unlimited()).await;
    let fresh = start(unlimited()).await;
    client(vec![url(&stale), url(&fresh)])
        .publish(&signed(&node, 1), &[], None)
        .await
        .unwrap();
    let newer = signed(&node, 2);
    client(vec![url(&fresh)])
        .publish(&newer, &[], None)
        .await
        .unwrap();
    let far_fresh = slow_proxy(fresh.local_addr(), Duration::from_millis(100)).await;
    for registries in [
        vec![url(&stale), far_fresh.clone()],
        vec![far_fresh.clone(), url(&stale)],
    ] {
        let found = client(registries.clone())
            .lookup(&node.node_id())
            .await
            .unwrap();
        assert_eq!(found.record().seq, 2, "{registries:?}");
        assert_eq!(found, newer);
    }

    // With every registry answered, the lookup does not sit out its window...
    let patient = |registries| {
        RegistryClient::new(
            registries,
            RegistryClientOptions {
                seq_window: Duration::from_secs(3),
                ..RegistryClientOptions::default()
            },
        )
    };
    let started = std::time::Instant::now();
    let found = patient(vec![url(&stale), url(&fresh)])
        .lookup(&node.node_id())
        .await
        .unwrap();
    assert_eq!(found.record().seq, 2);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // ...and one answering after the window is not waited for.
    let too_far = slow_proxy(fresh.local_addr(), Duration::from_secs(3)).await;
    let started = std::time::Instant::now();
    let found = client(vec![url(&stale), too_far])
        .lookup(&node.node_id())
        .await
        .unwrap();
    assert_eq!(found.record().seq, 1);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    stale.shutdown().await;
    fresh.shutdown().await;
}
