//! The `dht` benchmark: record publish and resolve latency on a private Mainline DHT on
//! loopback (never the public DHT).
//!
//! There is no anchor here: no independent DHT implementation is installed to compare with,
//! and the public DHT is out of reach. The figures are absolute and only say what a lookup
//! costs in CPU and in `mainline`'s own scheduling when the network itself takes no time.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use burrow::dht::{DhtConfig, DhtDiscovery, LocalTestnet};
use burrow::SecretKey;
use serde::Serialize;

/// What one run measured.
#[derive(Debug, Serialize)]
pub(crate) struct DhtReport {
    /// Nodes in the local DHT.
    pub nodes: usize,
    /// Records published (one per key).
    pub records: usize,
    /// Bytes per record.
    pub record_bytes: usize,
    /// Seconds to start the local DHT.
    pub testnet_start_secs: f64,
    /// Publish latency, milliseconds.
    pub publish_ms: Percentiles,
    /// Resolve latency from a fresh node, milliseconds.
    pub resolve_ms: Percentiles,
    /// Records that resolved to the published bytes.
    pub resolved: usize,
    /// Median DHT nodes that stored a record.
    pub stored_at_median: f64,
}

/// Latency percentiles.
#[derive(Debug, Serialize)]
pub(crate) struct Percentiles {
    /// 50th.
    pub p50: f64,
    /// 90th.
    pub p90: f64,
    /// 99th.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    fn of(mut ms: Vec<f64>) -> Percentiles {
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        Percentiles {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// Starts `nodes` DHT nodes on 127.0.0.1, publishes `records` records of `record_bytes` from
/// as many keys through one node, one after another, then resolves each from a node started
/// afterwards.
pub(crate) async fn run(
    nodes: usize,
    records: usize,
    record_bytes: usize,
    request_timeout: Duration,
) -> Result<DhtReport> {
    ensure!(records > 0, "--records must be at least 1");
    eprintln!("starting {nodes} DHT nodes on 127.0.0.1");
    let started = Instant::now();
    let net = tokio::task::spawn_blocking(move || LocalTestnet::new(nodes))
        .await?
        .context("local DHT")?;
    let testnet_start_secs = started.elapsed().as_secs_f64();
    let config = DhtConfig {
        request_timeout,
        ..net.client_config()
    };

    let publisher = DhtDiscovery::start(config.clone()).await?;
    ensure!(publisher.bootstrapped().await, "publisher did not join");
    let keys: Vec<SecretKey> = (0..records)
        .map(|_| SecretKey::from_bytes(rand::random()))
        .collect();
    let value = |i: usize| -> Vec<u8> {
        (0..record_bytes)
            .map(|j| (i.wrapping_mul(31) + j) as u8)
            .collect()
    };
    let mut publish_ms = Vec::with_capacity(records);
    let mut stored = Vec::with_capacity(records);
    for (i, key) in keys.iter().enumerate() {
        let t = Instant::now();
        let at = publisher
            .publish(key, &value(i), 1)
            .await
            .with_context(|| format!("publish {i}"))?;
        publish_ms.push(t.elapsed().as_secs_f64() * 1e3);
        stored.push(f64::from(at));
        if (i + 1) % 50 == 0 {
            eprintln!("published {}", i + 1);
        }
    }

    // A node that has seen none of it: its routing table starts from the bootstrap nodes.
    let resolver = DhtDiscovery::start(config).await?;
    ensure!(resolver.bootstrapped().await, "resolver did not join");
    let mut resolve_ms = Vec::with_capacity(records);
    let mut resolved = 0;
    for (i, key) in keys.iter().enumerate() {
        let t = Instant::now();
        let got = resolver.resolve(&key.node_id()).await;
        resolve_ms.push(t.elapsed().as_secs_f64() * 1e3);
        if got.is_some_and(|r| r.value == value(i)) {
            resolved += 1;
        }
        if (i + 1) % 50 == 0 {
            eprintln!("resolved {}", i + 1);
        }
    }
    drop((publisher, resolver));
    tokio::task::spawn_blocking(move || drop(net)).await?;
    Ok(DhtReport {
        nodes,
        records,
        record_bytes,
        testnet_start_secs,
        publish_ms: Percentiles::of(publish_ms),
        resolve_ms: Percentiles::of(resolve_ms),
        resolved,
        stored_at_median: crate::median(stored),
    })
}

/// Prints the report as a table.
pub(crate) fn print(r: &DhtReport) {
    println!(
        "local DHT: {} nodes on 127.0.0.1 (started in {:.1} s); {} records of {} bytes",
        r.nodes, r.testnet_start_secs, r.records, r.record_bytes
    );
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>9}",
        "latency (ms)", "p50", "p90", "p99", "max"
    );
    for (label, p) in [
        ("publish", &r.publish_ms),
        ("resolve (fresh node)", &r.resolve_ms),
    ] {
        println!(
            "{label:<28} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            p.p50, p.p90, p.p99, p.max
        );
    }
    println!(
        "resolved {}/{}; median nodes storing a record: {}",
        r.resolved, r.records, r.stored_at_median
    );
    println!();
    println!("no anchor: no other DHT implementation runs here. Loopback takes no time: the floor");
    println!(
        "is mainline's own pacing (its node thread blocks up to 50 ms in recv before it looks"
    );
    println!("at new commands and finished lookups); a tail is lookups that wait out");
    println!("--request-timeout on a node that does not answer.");
}
