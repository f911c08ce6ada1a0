//! `registry`: what the bootstrap registry costs.
//!
//! * Memory: this process's RSS growth per record while `--records` signed records go into a
//!   running relay's [`burrow_relay::records::RecordStore`] (in-process, through
//!   `RelayServer::records`), next to the growth for the same bytes in a plain
//!   `HashMap<[u8; 32], Box<[u8]>>` (the anchor) and the 512-byte aim.
//! * Lookups: `GET /records/{node_id}` per second over loopback HTTP/1.1 with keep-alive
//!   clients, from the relay, next to the same lookups from the anchor map behind the same
//!   hyper + axum stack (a handler that looks the key up and returns the record in base64
//!   JSON, no more), in the same run.
//!
//! Everything runs in this process: the servers on one tokio runtime, the load generator on
//! another, each with its own threads.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use burrow::record::NodeRecord;
use burrow::{NodeId, SecretKey};
use burrow_relay::records::RecordStore;
use burrow_relay::{Limits, RegistryConfig, RegistryLimits, RelayConfig, RelayServer};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rand::Rng;
use tokio::net::{TcpListener, TcpStream};
use tower_service::Service;

/// The anchor's records: the same signed bytes in a plain map.
pub(crate) type AnchorMap = HashMap<[u8; 32], Box<[u8]>>;

/// A relay with the registry on, no rate limits, and room for `records` records.
pub(crate) async fn start_relay(records: usize) -> Result<RelayServer> {
    Ok(RelayServer::start(RelayConfig {
        limits: Limits::unlimited(),
        registry: RegistryConfig {
            limits: RegistryLimits {
                max_records: records.max(1),
                max_per_namespace: records.max(1),
                ..RegistryLimits::unlimited()
            },
            ..RegistryConfig::default()
        },
        ..RelayConfig::default()
    })
    .await?)
}

/// The record node `i` publishes: one relay, an IPv4 and an IPv6 address, listed under one of
/// 100 namespaces: what a typical node registers.
fn record_for(i: usize, expires: u64) -> (SecretKey, NodeRecord, String) {
    let mut seed = [0x5a; 32];
    seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
    let key = SecretKey::from_bytes(seed);
    let mut r = NodeRecord::new(key.node_id(), 1, expires);
    r.relays
        .push("https://relay.example.com:8443".parse().expect("valid URL"));
    r.addrs
        .push(SocketAddr::from(([198, 51, 100, (i % 250) as u8], 41641)));
    r.addrs.push(SocketAddr::new(
        std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16).into(),
        41641,
    ));
    (key, r, format!("ns-{}", i % 100))
}

/// Signs `n` records on every core and inserts them into `store` in batches (so at most a
/// batch of generated records exists besides the store). Returns the node ids, in a vector
/// allocated and touched before the first record, so that its memory is not counted as the
/// store's. `progress` is called now and then with the count so far.
pub(crate) fn fill_store(
    store: &RecordStore,
    n: usize,
    expires: u64,
    ids: &mut [[u8; 32]],
    progress: impl Fn(usize) + Sync,
) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let chunk = n.div_ceil(threads).max(1);
    let failed = AtomicBool::new(false);
    std::thread::scope(|s| {
        for (t, part) in ids.chunks_mut(chunk).enumerate() {
            let (failed, progress) = (&failed, &progress);
            s.spawn(move || {
                let base = t * chunk;
                for (j, slot) in part.iter_mut().enumerate() {
                    let i = base + j;
                    let (key, record, ns) = record_for(i, expires);
                    let signed = record.sign(&key).expect("a small record signs");
                    if store.insert(&signed, &[ns], expires, 0, None).is_err() {
                        failed.store(true, Ordering::Relaxed);
                        return;
                    }
                    *slot = *key.node_id().as_bytes();
                    if t == 0 && j % 100_000 == 0 && j > 0 {
                        progress(j * threads);
                    }
                }
            });
        }
    });
    if failed.load(Ordering::Relaxed) {
        bail!("the store refused a record");
    }
    Ok(())
}

/// Copies every record in `store` into the anchor map.
pub(crate) fn fill_anchor(store: &RecordStore, ids: &[[u8; 32]], now: u64) -> Result<AnchorMap> {
    let mut map = AnchorMap::new();
    for id in ids {
        let stored = store.get(id, now).context("a stored record is missing")?;
        map.insert(*id, stored.bytes.into_boxed_slice());
    }
    Ok(map)
}

/// Lookups per second straight from the store and from the anchor map, one thread, no HTTP.
pub(crate) fn in_process_lookups(
    store: &RecordStore,
    map: &AnchorMap,
    ids: &[[u8; 32]],
    now: u64,
    duration: Duration,
) -> Result<(f64, f64)> {
    let nodes = &ids[..ids.len().min(100_000)];
    let mut rng = rand::rng();
    let (mut n, start) = (0u64, Instant::now());
    while start.elapsed() < duration {
        for _ in 0..1000 {
            let node = &nodes[rng.random_range(0..nodes.len())];
            std::hint::black_box(store.get(node, now)).context("missing")?;
        }
        n += 1000;
    }
    let ours = n as f64 / start.elapsed().as_secs_f64();
    let (mut n, start) = (0u64, Instant::now());
    while start.elapsed() < duration {
        for _ in 0..1000 {
            let node = &nodes[rng.random_range(0..nodes.len())];
            // The same work as a store read: find it and copy the bytes out.
            let bytes = map.get(node).context("missing")?.to_vec();
            std::hint::black_box(bytes);
        }
        n += 1000;
    }
    Ok((ours, n as f64 / start.elapsed().as_secs_f64()))
}

/// Serves the anchor map at `GET /records/{node_id}` with hyper's HTTP/1.1 connection driver
/// and an axum router, as the relay does; returns its address.
pub(crate) async fn start_anchor(map: Arc<AnchorMap>) -> Result<SocketAddr> {
    async fn lookup(State(map): State<Arc<AnchorMap>>, Path(id): Path<String>) -> Response {
        // The same parse as the registry's hot path: base32 to key bytes, no point check.
        let Ok(key) = NodeId::text_to_bytes(&id) else {
            return StatusCode::BAD_REQUEST.into_response();
        };
        match map.get(&key) {
            Some(bytes) => {
                let body = serde_json::json!({
                    "node_id": id,
                    "record": data_encoding::BASE64URL_NOPAD.encode(bytes),
                });
                axum::Json(body).into_response()
            }
            None => StatusCode::NOT_FOUND.into_response(),
        }
    }
    let router = Router::new()
        .route("/records/{node_id}", get(lookup))
        .with_state(map);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let router = router.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let mut router = router.clone();
                    async move { Ok::<_, Infallible>(router.call(req).await.into_response()) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// `connections` keep-alive clients each sending `GET /records/{random id}` back to back to
/// `addr`, counting 200 answers; runs until `stop`.
pub(crate) struct Load {
    answered: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts the clients on the current runtime.
    pub(crate) async fn start(
        addr: SocketAddr,
        ids: Arc<Vec<String>>,
        connections: usize,
    ) -> Result<Load> {
        let answered = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for c in 0..connections {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            let (answered, errors, stop, ids) =
                (answered.clone(), errors.clone(), stop.clone(), ids.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = c.wrapping_mul(7919);
                while !stop.load(Ordering::Relaxed) {
                    // A cheap walk through the ids with a prime step: spread, no RNG cost.
                    i = (i + 104_729) % ids.len();
                    let req = hyper::Request::get(format!("/records/{}", ids[i]))
                        .header(hyper::header::HOST, "registry")
                        .body(Empty::new())
                        .expect("valid request");
                    let ok = match sender.send_request(req).await {
                        Ok(res) => {
                            let status = res.status();
                            res.into_body().collect().await.is_ok() && status == StatusCode::OK
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    };
                    if ok {
                        answered.fetch_add(1, Ordering::Relaxed);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        Ok(Load {
            answered,
            errors,
            stop,
            tasks,
        })
    }

    /// 200 answers so far, and everything else.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.answered.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }

    /// Stops the clients.
    pub(crate) async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Lookups per second against `addr` over `duration` after `warmup`, and the error count.
pub(crate) async fn measure_http(
    addr: SocketAddr,
    ids: Arc<Vec<String>>,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<(f64, u64)> {
    let load = Load::start(addr, ids, connections).await?;
    tokio::time::sleep(warmup).await;
    let (a0, e0) = load.counts();
    let start = Instant::now();
    tokio::time::sleep(duration).await;
    let (a1, e1) = load.counts();
    let wall = start.elapsed().as_secs_f64();
    load.stop().await;
    if a1 == a0 {
        bail!("no lookup was answered with 200 during the measurement");
    }
    Ok(((a1 - a0) as f64 / wall, e1 - e0))
}
