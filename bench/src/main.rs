//! `burrow-bench`: benchmarks that run burrow and its anchor in the same run, on the same
//! machine, and print a table of figures with the ratio burrow/anchor.
//!
//! Only ratios from one run mean anything: absolute numbers move with the machine and its load.
//!
//! * `stun` ([`run_stun`]): STUN Binding requests answered per second over loopback UDP, by
//!   `burrow stun` and by coturn's `turnserver`, with one load generator ([`stun::Load`]),
//!   alternating between the two servers round by round. See `bench/README.md`.
//! * `relay` ([`run_relay`]): forwarded throughput and memory per idle client.
//! * `registry` ([`run_registry`]): the bootstrap registry's memory per record and lookups per
//!   second over HTTP, next to a plain `HashMap` behind the same HTTP stack.
//! * `dht` ([`dht::run`]): record publish and resolve latency on a private Mainline DHT on
//!   loopback; absolute figures, no anchor.
//! * `direct` ([`direct::run`]): throughput, idle keep-alive bytes and memory per peer of a
//!   direct burrow path in the NAT lab, next to plain quinn between the same namespaces.
//! * `browser` ([`browser::run`]): burrow.js in Chromium on NAT lab hosts: dial to first
//!   message and to direct, data channel throughput browser ↔ native next to browser ↔
//!   browser, and what bare routers do.
//! * `mesh` ([`mesh::run`]): time from `join` to member (NAT lab), roster propagation to 50
//!   members (simulated, virtual time) and daemon memory per idle member.

mod browser;
mod dht;
mod direct;
mod forward;
mod mesh;
mod registry;
mod relay;
mod server;
mod stun;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use server::Server;
use stun::{Load, LoadConfig, Totals};

#[derive(Parser)]
#[command(
    name = "burrow-bench",
    about = "Benchmarks of burrow against its anchors, run side by side and printed as ratios"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// STUN Binding requests answered per second on loopback: `burrow stun` vs coturn.
    ///
    /// Starts both servers on free 127.0.0.1 UDP ports, then for each round measures each
    /// server with the same closed-loop load generator (the order alternates between rounds:
    /// burrow first in odd rounds, coturn first in even ones), and prints per-round and median
    /// figures with the ratio burrow/coturn. Progress goes to stderr, the result to stdout.
    Stun(StunArgs),
    /// The relay: forwarded throughput between two relay clients on loopback next to one plain
    /// loopback TCP connection (same bytes, same write sizes), and the relay's memory per
    /// connected idle client.
    Relay(RelayArgs),
    /// The bootstrap registry: memory per record with `--records` records in the store, and
    /// `GET /records/{id}` lookups per second over keep-alive HTTP, next to a plain HashMap
    /// holding the same bytes behind the same hyper + axum stack.
    Registry(RegistryArgs),
    /// Record publish and resolve latency on a private Mainline DHT of `--nodes` nodes on
    /// 127.0.0.1: publishes `--records` records from as many keys, then resolves each from a
    /// node started afterwards, and prints median and tail latencies. No anchor.
    Dht(DhtArgs),
    /// A direct (hole-punched) burrow path next to plain quinn, in the NAT lab (needs root):
    /// throughput of one stream between two open homes, idle keep-alive bytes per second of
    /// one connected peer, and RSS per connected peer.
    Direct(DirectArgs),
    /// Meshes: time from `burrow join` to member with an easy and a symmetric inviter (NAT lab,
    /// needs root; skipped otherwise) next to a plain ticket connect; roster propagation to
    /// `--roster-members` members in a seeded simulation on a virtual clock; and daemon memory
    /// per idle member on loopback next to a plain `burrow listen`.
    Mesh(mesh::MeshArgs),
    /// A TCP connection forwarded between two members' daemons (`burrow expose`, `burrow
    /// forward`) next to plain TCP between the same hosts and a direct burrow QUIC stream, in
    /// the NAT lab (needs root): throughput of each, in one run.
    Forward(forward::ForwardArgs),
    /// burrow.js in headless Chromium on NAT lab hosts (needs root, Chromium, and burrow built
    /// with `--features webrtc`): time from dial() to the first message and to the direct
    /// path, data channel throughput browser <-> native next to browser <-> browser, and the
    /// outcome between bare routers.
    Browser(browser::BrowserArgs),
    /// Internal: one side of `direct`'s memory figure, run inside a lab namespace.
    #[command(hide = true)]
    DirectPeers(PeersArgs),
}

#[derive(Args, Debug)]
struct DirectArgs {
    /// Bytes sent per throughput measurement.
    #[arg(long, default_value_t = 200_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    bytes: u64,
    /// Rounds; each measures burrow and quinn once, alternating which goes first.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// How long the idle connections' bytes are counted (0 skips it).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    idle: Duration,
    /// Connected peers for the memory figure (0 skips it).
    #[arg(long, default_value_t = 100)]
    peers: usize,
    /// The burrow binary, run as the relay [default: `burrow` next to this executable].
    #[arg(long, value_name = "PATH")]
    burrow: Option<PathBuf>,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct PeersArgs {
    /// `listen` or `connect`.
    role: String,
    /// `burrow` or `quinn`.
    #[arg(long)]
    kind: String,
    #[arg(long, default_value_t = 1)]
    peers: usize,
    #[arg(long)]
    bind: Option<std::net::Ipv4Addr>,
    #[arg(long)]
    ticket: Option<String>,
    #[arg(long)]
    addr: Option<String>,
    #[arg(long)]
    cert: Option<String>,
}

#[derive(Args, Debug)]
struct RegistryArgs {
    /// Records inserted into the store.
    #[arg(long, default_value_t = 1_000_000)]
    records: usize,
    /// Measuring time per server per round, after the warm-up.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
    /// Load applied before each measurement starts, not counted.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Rounds; each measures the relay and the anchor once, alternating which goes first.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Keep-alive HTTP connections, each with one request outstanding.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Threads of the servers' runtime.
    #[arg(long, default_value_t = 1)]
    server_threads: usize,
    /// Threads of the load generator's runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Measure the lookups of only one of the servers (`relay` or `anchor`).
    #[arg(long, value_parser = ["relay", "anchor"])]
    only: Option<String>,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct DhtArgs {
    /// DHT nodes on loopback.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(20..=2000))]
    nodes: u16,
    /// Records to publish and resolve, each under its own key.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    records: u32,
    /// Bytes per record (BEP 44 allows up to 1000).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u16).range(0..=1000))]
    record_bytes: u16,
    /// How long a lookup waits for one DHT node's answer.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    request_timeout: Duration,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct RelayArgs {
    /// Bytes sent per throughput measurement.
    #[arg(long, default_value_t = 200_000_000)]
    bytes: u64,
    /// Datagram sizes to measure (relay payloads and TCP write sizes).
    #[arg(long, value_delimiter = ',', default_value = "1200,16384,65536")]
    payload: Vec<usize>,
    /// Rounds per payload size; medians are printed.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Idle clients connected for the memory figure (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// The burrow binary [default: `burrow` next to this executable].
    #[arg(long, value_name = "PATH")]
    burrow: Option<PathBuf>,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct StunArgs {
    /// Measuring time per server per round, after the warm-up (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
    /// Load applied before each measurement starts, not counted.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Number of rounds; each round measures every server once.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Measure only one of the servers.
    #[arg(long, value_enum)]
    only: Option<Which>,
    /// The burrow binary [default: `burrow` next to this executable, i.e. target/release/burrow].
    #[arg(long, value_name = "PATH")]
    burrow: Option<PathBuf>,
    /// burrow's server thread count (`burrow stun --threads`) [default: burrow's own].
    #[arg(long, value_name = "N")]
    burrow_threads: Option<u32>,
    /// coturn's server binary (a name is looked up on PATH).
    #[arg(long, value_name = "PATH", default_value = "turnserver")]
    coturn: PathBuf,
    /// coturn's UDP thread count (`turnserver -m`) [default: coturn's own, one per CPU].
    #[arg(long, value_name = "N")]
    coturn_threads: Option<u32>,
    /// Load generator threads, each with its own UDP socket.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
    /// Requests kept outstanding per socket.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    window: u16,
    /// A request unanswered for this long is forgotten and replaced by a new one.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    timeout: Duration,
    /// Append a FINGERPRINT attribute to every request (28-byte instead of 20-byte requests).
    #[arg(long)]
    fingerprint: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Which {
    Burrow,
    Coturn,
}

fn parse_duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

fn main() -> ExitCode {
    server::catch_interrupts();
    let result = match Cli::parse().command {
        Command::Stun(args) => run_stun(&args),
        Command::Relay(args) => run_relay(&args),
        Command::Registry(args) => run_registry(&args),
        Command::Dht(args) => run_dht(&args),
        Command::Direct(args) => run_direct(&args),
        Command::Mesh(args) => mesh::run(&args),
        Command::Forward(args) => forward::run(&args),
        Command::Browser(args) => browser::run(&args),
        Command::DirectPeers(args) => direct::peers_main(&args),
    };
    // By now every server has been killed: they are dropped inside `run_stun`.
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The figures of one measurement (or the medians over rounds).
#[derive(Clone, Copy, Debug, Default, Serialize)]
struct Figures {
    /// Binding success responses to outstanding requests, per wall-clock second.
    requests_per_sec: f64,
    /// Server CPU time (user + system, all threads) per wall-clock second.
    server_cpu_cores: f64,
    /// Answered requests per second of server CPU time.
    requests_per_server_cpu_sec: f64,
    /// Requests that timed out, as a percentage of requests resolved (answered, rejected or
    /// timed out) during the measurement.
    unanswered_pct: f64,
    /// The harness's own CPU time (essentially the load generator) per wall-clock second.
    loadgen_cpu_cores: f64,
}

/// One server measured once.
#[derive(Clone, Copy, Debug, Serialize)]
struct Measurement {
    #[serde(flatten)]
    figures: Figures,
    /// Wall-clock length of the measurement, in seconds.
    wall_secs: f64,
    /// Raw load generator counters over the measurement.
    counters: Totals,
}

impl Figures {
    /// A `Figures` whose every field is `f(that field's getter)`.
    fn from_fn(f: impl Fn(fn(&Figures) -> f64) -> f64) -> Figures {
        Figures {
            requests_per_sec: f(|x| x.requests_per_sec),
            server_cpu_cores: f(|x| x.server_cpu_cores),
            requests_per_server_cpu_sec: f(|x| x.requests_per_server_cpu_sec),
            unanswered_pct: f(|x| x.unanswered_pct),
            loadgen_cpu_cores: f(|x| x.loadgen_cpu_cores),
        }
    }
}

/// One row of the table's median section.
struct Figure {
    label: &'static str,
    get: fn(&Figures) -> f64,
    decimals: usize,
}

/// The table's median rows, in order.
const FIGURES: [Figure; 5] = [
    Figure {
        label: "requests/s",
        get: |f| f.requests_per_sec,
        decimals: 0,
    },
    Figure {
        label: "server CPU (cores)",
        get: |f| f.server_cpu_cores,
        decimals: 2,
    },
    Figure {
        label: "requests per server CPU-second",
        get: |f| f.requests_per_server_cpu_sec,
        decimals: 0,
    },
    Figure {
        label: "unanswered (%)",
        get: |f| f.unanswered_pct,
        decimals: 2,
    },
    Figure {
        label: "load generator CPU (cores)",
        get: |f| f.loadgen_cpu_cores,
        decimals: 2,
    },
];

/// Runs the `direct` benchmark and prints its result.
fn run_direct(args: &DirectArgs) -> Result<()> {
    let r = direct::run(args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let mut rows: Vec<(String, f64, f64, usize)> = Vec::new();
    for (i, (b, q)) in r.burrow_mbit.iter().zip(&r.quinn_mbit).enumerate() {
        rows.push((format!("Mbit/s, round {}", i + 1), *b, *q, 0));
    }
    rows.push((
        "Mbit/s, median".into(),
        r.burrow_mbit_median,
        r.quinn_mbit_median,
        0,
    ));
    rows.push((
        "process CPU-s per GB (both ends)".into(),
        r.burrow_cpu_s_per_gb,
        r.quinn_cpu_s_per_gb,
        2,
    ));
    if let Some(i) = &r.idle {
        rows.push((
            "idle peer: UDP bytes/s (both directions)".into(),
            i.burrow_peer_bytes_per_sec,
            i.quinn_bytes_per_sec,
            1,
        ));
        rows.push((
            "idle peer: UDP packets".into(),
            i.burrow_peer_packets as f64,
            i.quinn_packets as f64,
            0,
        ));
        if let (Some(b), Some(p)) = (i.burrow_disco_bytes_per_sec, i.burrow_disco_packets) {
            rows.push(("  of which disco: bytes/s".into(), b, 0.0, 1));
            rows.push(("  of which disco: packets".into(), p as f64, 0.0, 0));
        }
        rows.push((
            "  per endpoint: STUN bytes/s (UDP)".into(),
            i.burrow_stun_bytes_per_sec,
            0.0,
            1,
        ));
        rows.push((
            "  per endpoint: relay TCP bytes/s".into(),
            i.burrow_relay_tcp_bytes_per_sec,
            0.0,
            1,
        ));
    }
    if let Some(m) = &r.memory {
        rows.push((
            format!("RSS per peer, listener ({} peers)", m.peers),
            m.burrow.listener_bytes_per_peer,
            m.quinn.listener_bytes_per_peer,
            0,
        ));
        rows.push((
            "RSS per peer, connectors (endpoint each)".into(),
            m.burrow.connector_bytes_per_peer,
            m.quinn.connector_bytes_per_peer,
            0,
        ));
    }
    println!(
        "{:<42} {:>10} {:>10} {:>6}",
        "figure", "burrow", "quinn", "ratio"
    );
    for (label, ours, anchor, decimals) in rows {
        let (o, a, ratio) = if anchor > 0.0 {
            (
                format!("{ours:.decimals$}"),
                format!("{anchor:.decimals$}"),
                format!("{:.2}", ours / anchor),
            )
        } else {
            (format!("{ours:.decimals$}"), "-".into(), "-".into())
        };
        println!("{label:<42} {o:>10} {a:>10} {ratio:>6}");
    }
    println!();
    println!(
        "{} x {} bytes per round on one bidirectional stream, home B -> home A (open homes,",
        r.rounds, r.bytes
    );
    println!(
        "firewalled routers, no delay); burrow direct path: {}.",
        r.direct_path
    );
    if r.burrow_left_direct > 0 {
        println!(
            "WARNING: burrow was off the direct path after {} transfer(s).",
            r.burrow_left_direct
        );
    }
    if let Some(i) = &r.idle {
        println!(
            "idle: iptables counters in home A over {:.0} s (IP packet bytes); keep-alive 15 s for both.",
            i.secs
        );
    }
    if let Some(m) = &r.memory {
        println!(
            "memory: VmRSS growth / peers; burrow {} connected ({} direct), quinn {} connected.",
            m.burrow.connected, m.burrow.direct, m.quinn.connected
        );
    }
    println!("ratio = burrow / quinn; MB and GB are 10^6 and 10^9 bytes.");
    Ok(())
}

/// Runs the `dht` benchmark and prints its result.
fn run_dht(args: &DhtArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = rt.block_on(dht::run(
        usize::from(args.nodes),
        args.records as usize,
        usize::from(args.record_bytes),
        args.request_timeout,
    ))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        dht::print(&report);
    }
    Ok(())
}

/// Runs the `relay` benchmark and prints its result.
fn run_relay(args: &RelayArgs) -> Result<()> {
    let burrow_bin = server::find_burrow(args.burrow.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rows: Vec<(String, f64, f64, usize)> = Vec::new();
    let mut json = serde_json::Map::new();

    let relay = relay::RelayProcess::start(&burrow_bin, 16)?;
    let url = relay.url();
    for &payload in &args.payload {
        let (mut ours, mut anchor, mut lost) = (Vec::new(), Vec::new(), Vec::new());
        let mut two_hop = Vec::new();
        for round in 0..args.rounds {
            eprintln!("throughput: {payload}-byte datagrams, round {}", round + 1);
            // Alternate the order so drift in the machine's load favours neither.
            let (r, t) = if round % 2 == 0 {
                let r = rt.block_on(relay::relay_throughput(&url, payload, args.bytes))?;
                (r, rt.block_on(relay::tcp_throughput(payload, args.bytes))?)
            } else {
                let t = rt.block_on(relay::tcp_throughput(payload, args.bytes))?;
                (
                    rt.block_on(relay::relay_throughput(&url, payload, args.bytes))?,
                    t,
                )
            };
            ours.push(r.mb_per_sec);
            anchor.push(t.mb_per_sec);
            lost.push(r.lost_pct);
            two_hop.push(
                rt.block_on(relay::tcp_forwarder_throughput(payload, args.bytes))?
                    .mb_per_sec,
            );
        }
        let (o, a, l, f) = (median(ours), median(anchor), median(lost), median(two_hop));
        rows.push((format!("MB/s, {payload}-byte datagrams"), o, a, 0));
        rows.push((
            format!("  two-hop anchor (TCP forwarder), {payload} B"),
            o,
            f,
            0,
        ));
        rows.push((format!("  TCP forwarder vs TCP, {payload} B"), f, a, 0));
        rows.push((format!("lost %, {payload}-byte datagrams"), l, 0.0, 2));
        json.insert(
            format!("throughput_{payload}"),
            serde_json::json!({"relay_mb_per_sec": o, "tcp_mb_per_sec": a, "ratio": o / a,
                "tcp_forwarder_mb_per_sec": f, "ratio_to_forwarder": o / f, "lost_pct": l}),
        );
    }
    drop(relay);

    if args.clients > 0 {
        let relay = relay::RelayProcess::start(&burrow_bin, args.clients)?;
        server::sleep(Duration::from_millis(300))?;
        let before = relay.rss()?;
        let started = Instant::now();
        let clients = rt.block_on(relay::idle_clients(
            &relay.url(),
            relay.addr(),
            args.clients,
            64,
            |n| eprintln!("memory: {n} idle clients connected"),
        ))?;
        let took = started.elapsed();
        server::sleep(Duration::from_secs(1))?;
        let after = relay.rss()?;
        let per_client = after.saturating_sub(before) as f64 / clients.len() as f64;
        rows.push((
            format!("RSS per idle client (bytes), {} clients", clients.len()),
            per_client,
            16384.0,
            0,
        ));
        json.insert(
            "memory".into(),
            serde_json::json!({"clients": clients.len(), "rss_before": before, "rss_after": after,
                "bytes_per_client": per_client, "aim_bytes": 16384, "connect_secs": took.as_secs_f64()}),
        );
        rt.block_on(async move { drop(clients) });
    }

    if args.json {
        println!("{}", serde_json::Value::Object(json));
        return Ok(());
    }
    println!(
        "{:<48} {:>10} {:>10} {:>6}",
        "figure", "relay", "anchor", "ratio"
    );
    for (label, ours, anchor, decimals) in rows {
        let ratio = if anchor > 0.0 {
            format!("{:.2}", ours / anchor)
        } else {
            "-".into()
        };
        println!("{label:<48} {ours:>10.decimals$} {anchor:>10.decimals$} {ratio:>6}");
    }
    println!();
    println!("anchor: one plain loopback TCP connection, same bytes and write sizes (throughput);");
    println!("        two-hop anchor: the same through a plain userspace TCP forwarder;");
    println!("        the 16 KiB aim (memory). Medians over rounds; MB = 10^6 bytes.");
    Ok(())
}

/// Runs the `registry` benchmark and prints its result.
fn run_registry(args: &RegistryArgs) -> Result<()> {
    use std::sync::Arc;
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads.max(1))
        .thread_name("servers")
        .enable_all()
        .build()?;
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .thread_name("load")
        .enable_all()
        .build()?;
    let n = args.records;
    if n == 0 {
        bail!("--records must be at least 1");
    }
    let relay = servers.block_on(registry::start_relay(n))?;
    let store = relay.records().context("registry is on")?.clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let expires = now + 24 * 3600;

    // Touched before the baseline, so that only the store's growth is counted.
    let mut ids = vec![[1u8; 32]; n];
    server::sleep(Duration::from_millis(200))?;
    let rss0 = crate::vm_rss(None)?;
    let started = Instant::now();
    eprintln!("memory: signing and inserting {n} records");
    registry::fill_store(&store, n, expires, &mut ids, |k| {
        eprintln!("memory: ~{k} records inserted")
    })?;
    let fill_secs = started.elapsed().as_secs_f64();
    let rss1 = crate::vm_rss(None)?;
    let anchor_map = Arc::new(registry::fill_anchor(&store, &ids, now)?);
    let rss2 = crate::vm_rss(None)?;
    let ours_mem = rss1.saturating_sub(rss0) as f64 / n as f64;
    let anchor_mem = rss2.saturating_sub(rss1) as f64 / n as f64;
    eprintln!(
        "memory: store {ours_mem:.0} B/record, plain HashMap {anchor_mem:.0} B/record ({fill_secs:.1} s to sign and insert)"
    );

    let (ours_local, anchor_local) =
        registry::in_process_lookups(&store, &anchor_map, &ids, now, Duration::from_secs(1))?;

    let anchor_addr = servers.block_on(registry::start_anchor(anchor_map.clone()))?;
    let relay_addr = relay.local_addr();
    let texts: Arc<Vec<String>> = Arc::new(
        ids.iter()
            .map(|id| burrow::NodeId::from_bytes(*id).map(|n| n.to_string()))
            .collect::<Result<_, _>>()?,
    );
    let (mut ours, mut anchor, mut errors) = (Vec::new(), Vec::new(), 0);
    for round in 0..args.rounds {
        let mut order = [("relay", relay_addr), ("anchor", anchor_addr)];
        if round % 2 == 1 {
            order.reverse();
        }
        for (name, addr) in order {
            if args.only.as_deref().is_some_and(|only| only != name) {
                continue;
            }
            let (rate, errs) = clients.block_on(registry::measure_http(
                addr,
                texts.clone(),
                args.connections,
                args.warmup,
                args.duration,
            ))?;
            eprintln!(
                "round {}/{} {name:>6}: {rate:>9.0} lookups/s",
                round + 1,
                args.rounds
            );
            errors += errs;
            if name == "relay" {
                ours.push(rate);
            } else {
                anchor.push(rate);
            }
        }
    }
    if errors > 0 {
        eprintln!("warning: {errors} lookups were not answered with 200");
    }
    let (o, a) = (median(ours.clone()), median(anchor.clone()));
    let rows: Vec<(String, f64, f64, usize)> = vec![
        (
            format!("RSS per record (bytes), {n} records"),
            ours_mem,
            anchor_mem,
            0,
        ),
        ("  vs the 512-byte aim".into(), ours_mem, 512.0, 0),
        ("lookups/s over HTTP, median".into(), o, a, 0),
        ("  vs the 50,000/s aim".into(), o, 50_000.0, 0),
        (
            "lookups/s in-process (no HTTP)".into(),
            ours_local,
            anchor_local,
            0,
        ),
    ];
    drop(clients);
    servers.block_on(relay.shutdown());

    if args.json {
        let out = serde_json::json!({
            "benchmark": "registry",
            "records": n,
            "memory": {"rss_before": rss0, "rss_after_store": rss1, "rss_after_anchor": rss2,
                "store_bytes_per_record": ours_mem, "hashmap_bytes_per_record": anchor_mem,
                "aim_bytes": 512, "fill_secs": fill_secs},
            "lookups_http": {"relay_per_sec": ours, "anchor_per_sec": anchor,
                "relay_median": o, "anchor_median": a, "ratio": o / a, "aim_per_sec": 50_000,
                "connections": args.connections, "errors": errors},
            "lookups_in_process": {"store_per_sec": ours_local, "hashmap_per_sec": anchor_local},
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "{:<44} {:>10} {:>10} {:>6}",
        "figure", "registry", "anchor", "ratio"
    );
    for (label, ours, anchor, decimals) in rows {
        let ratio = if anchor > 0.0 {
            format!("{:.2}", ours / anchor)
        } else {
            "-".into()
        };
        println!("{label:<44} {ours:>10.decimals$} {anchor:>10.decimals$} {ratio:>6}");
    }
    println!();
    println!("anchor: the same signed records in a plain HashMap<[u8; 32], Box<[u8]>> (memory,");
    println!("        in-process), served by a handler that only looks up and base64-encodes");
    println!("        behind the same hyper HTTP/1.1 + axum stack (lookups/s); the aims.");
    println!(
        "{} keep-alive connections; {} server / {} client runtime threads; medians over {} rounds.",
        args.connections, args.server_threads, args.client_threads, args.rounds
    );
    Ok(())
}

/// Runs the `stun` benchmark and prints its result.
fn run_stun(args: &StunArgs) -> Result<()> {
    let want = |w: Which| args.only.is_none() || args.only == Some(w);
    // Resolve both binaries before starting anything, so a missing one fails fast.
    let burrow_bin = if want(Which::Burrow) {
        Some(server::find_burrow(args.burrow.as_deref())?)
    } else {
        None
    };
    let coturn_bin = if want(Which::Coturn) {
        Some(server::find_on_path(
            &args.coturn,
            "install coturn, pass --coturn PATH, or use --only burrow",
        )?)
    } else {
        None
    };

    // Both servers run for the whole benchmark (the idle one costs nothing) and are killed when
    // `servers` is dropped, on success or on any error.
    let mut servers: Vec<Server> = Vec::new();
    if let Some(bin) = &burrow_bin {
        servers.push(Server::burrow(bin, args.burrow_threads)?);
    }
    if let Some(bin) = &coturn_bin {
        servers.push(Server::coturn(bin, args.coturn_threads)?);
    }
    for s in &mut servers {
        s.wait_ready(Duration::from_secs(10))?;
        eprintln!("{} ready on {}: {}", s.name, s.addr, s.command.join(" "));
    }
    let coturn_version = servers
        .iter()
        .find(|s| s.name == "coturn")
        .and_then(|s| s.output_line("Version Coturn"));

    let mut results: Vec<Vec<Measurement>> = vec![Vec::new(); servers.len()];
    for round in 0..args.rounds {
        let mut order: Vec<usize> = (0..servers.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let server = &mut servers[i];
            let m = measure(server, args)
                .with_context(|| format!("round {}, {}", round + 1, server.name))?;
            eprintln!(
                "round {}/{} {:>6}: {:>9.0} requests/s, server {:.2} cores, {:.0} requests per server CPU-second",
                round + 1,
                args.rounds,
                server.name,
                m.figures.requests_per_sec,
                m.figures.server_cpu_cores,
                m.figures.requests_per_server_cpu_sec,
            );
            results[i].push(m);
        }
    }
    let report = Report::new(args, &servers, results, coturn_version);
    drop(servers);

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// Warms `server` up, then measures it for `args.duration` with a fresh load generator.
fn measure(server: &mut Server, args: &StunArgs) -> Result<Measurement> {
    server.check_running()?;
    let config = LoadConfig {
        target: server.addr,
        threads: args.threads.into(),
        window: args.window.into(),
        timeout: args.timeout,
        fingerprint: args.fingerprint,
    };
    let load = Load::start(&config).context("starting the load generator")?;
    server::sleep(args.warmup)?;
    let (server0, own0) = (server.cpu_time()?, server::own_cpu_time()?);
    let (start, totals0) = (Instant::now(), load.totals());
    server::sleep(args.duration)?;
    let (end, totals1) = (Instant::now(), load.totals());
    let (server1, own1) = (server.cpu_time()?, server::own_cpu_time()?);
    load.stop().context("load generator")?;
    server.check_running()?;

    let wall = (end - start).as_secs_f64();
    let counters = totals1.since(totals0);
    if counters.answered == 0 {
        bail!(
            "{} answered no Binding request during the measurement ({counters:?})",
            server.name
        );
    }
    if counters.error_responses > 0 {
        eprintln!(
            "warning: {} sent {} error responses to Binding requests",
            server.name, counters.error_responses
        );
    }
    let server_cpu = (server1 - server0).as_secs_f64();
    let resolved = counters.answered + counters.error_responses + counters.timed_out;
    let figures = Figures {
        requests_per_sec: counters.answered as f64 / wall,
        server_cpu_cores: server_cpu / wall,
        requests_per_server_cpu_sec: if server_cpu > 0.0 {
            counters.answered as f64 / server_cpu
        } else {
            f64::NAN
        },
        unanswered_pct: 100.0 * counters.timed_out as f64 / resolved as f64,
        loadgen_cpu_cores: (own1 - own0).as_secs_f64() / wall,
    };
    if figures.loadgen_cpu_cores > 0.9 * f64::from(args.threads) {
        eprintln!(
            "warning: the load generator used {:.2} cores with {} thread(s): it, not {}, may be \
             the bottleneck; compare requests per server CPU-second, or try more --threads",
            figures.loadgen_cpu_cores, args.threads, server.name
        );
    }
    Ok(Measurement {
        figures,
        wall_secs: wall,
        counters,
    })
}

/// Median of `values` (mean of the middle two for an even count); NaN if empty.
/// Resident memory of process `pid` (`None`: this one), in bytes, from /proc.
pub(crate) fn vm_rss(pid: Option<u32>) -> Result<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_string(),
    };
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")?;
    Ok(kib * 1024)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Everything the benchmark found; printed as a table or serialized as JSON.
#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    config: ReportConfig,
    burrow: Option<ServerReport>,
    coturn: Option<ServerReport>,
    /// burrow / coturn for each median figure (present when both servers ran).
    ratio: Option<Figures>,
}

#[derive(Serialize)]
struct ReportConfig {
    target: &'static str,
    duration_secs: f64,
    warmup_secs: f64,
    rounds: u32,
    order: &'static str,
    loadgen_threads: u16,
    window_per_socket: u16,
    timeout_ms: u128,
    fingerprint: bool,
    coturn_version: Option<String>,
}

#[derive(Serialize)]
struct ServerReport {
    command: Vec<String>,
    /// Size and attributes of the server's response to a plain Binding request.
    response: String,
    median: Figures,
    rounds: Vec<Measurement>,
}

impl Report {
    fn new(
        args: &StunArgs,
        servers: &[Server],
        results: Vec<Vec<Measurement>>,
        coturn_version: Option<String>,
    ) -> Report {
        let mut burrow = None;
        let mut coturn = None;
        for (server, rounds) in servers.iter().zip(results) {
            let median =
                Figures::from_fn(|get| median(rounds.iter().map(|m| get(&m.figures)).collect()));
            let report = Some(ServerReport {
                command: server.command.clone(),
                response: stun::describe(&server.sample_response),
                median,
                rounds,
            });
            match server.name {
                "burrow" => burrow = report,
                _ => coturn = report,
            }
        }
        let ratio = match (&burrow, &coturn) {
            (Some(b), Some(c)) => Some(Figures::from_fn(|get| get(&b.median) / get(&c.median))),
            _ => None,
        };
        Report {
            benchmark: "stun",
            config: ReportConfig {
                target: "127.0.0.1 (loopback UDP)",
                duration_secs: args.duration.as_secs_f64(),
                warmup_secs: args.warmup.as_secs_f64(),
                rounds: args.rounds,
                order: "burrow then coturn in odd rounds, coturn then burrow in even rounds",
                loadgen_threads: args.threads,
                window_per_socket: args.window,
                timeout_ms: args.timeout.as_millis(),
                fingerprint: args.fingerprint,
                coturn_version,
            },
            burrow,
            coturn,
            ratio,
        }
    }

    /// The human-readable table: requests/s per round, then every figure's median.
    fn table(&self) -> String {
        use std::fmt::Write;
        let c = &self.config;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "STUN Binding on {}: {} s per server per round after {} s warm-up, {} rounds;\n\
             load: {} thread(s) x 1 socket, {} outstanding per socket, {} ms timeout, {}",
            c.target,
            c.duration_secs,
            c.warmup_secs,
            c.rounds,
            c.loadgen_threads,
            c.window_per_socket,
            c.timeout_ms,
            if c.fingerprint {
                "with FINGERPRINT"
            } else {
                "no FINGERPRINT"
            },
        );
        if let Some(v) = &c.coturn_version {
            let _ = writeln!(out, "coturn: {v}");
        }
        for (name, r) in [("burrow", &self.burrow), ("coturn", &self.coturn)] {
            if let Some(r) = r {
                let _ = writeln!(out, "{name} response: {}", r.response);
            }
        }
        let _ = writeln!(out);
        let cell = |r: &Option<ServerReport>,
                    value: &dyn Fn(&ServerReport) -> f64,
                    decimals: usize| match r {
            Some(r) => format!("{:.*}", decimals, value(r)),
            None => "-".to_string(),
        };
        let ratio = |get: fn(&Figures) -> f64| match &self.ratio {
            Some(r) if get(r).is_finite() => format!("{:.2}", get(r)),
            _ => "-".to_string(),
        };
        let mut rows = vec![[
            "figure".to_string(),
            "burrow".into(),
            "coturn".into(),
            "ratio".into(),
        ]];
        for round in 0..c.rounds as usize {
            let get = move |r: &ServerReport| r.rounds[round].figures.requests_per_sec;
            let r = match (&self.burrow, &self.coturn) {
                (Some(b), Some(co)) => format!("{:.2}", get(b) / get(co)),
                _ => "-".to_string(),
            };
            rows.push([
                format!("requests/s, round {}", round + 1),
                cell(&self.burrow, &get, 0),
                cell(&self.coturn, &get, 0),
                r,
            ]);
        }
        for Figure {
            label,
            get,
            decimals,
        } in FIGURES
        {
            let value = move |r: &ServerReport| get(&r.median);
            rows.push([
                format!("{label}, median"),
                cell(&self.burrow, &value, decimals),
                cell(&self.coturn, &value, decimals),
                ratio(get),
            ]);
        }
        let widths: Vec<usize> = (0..4)
            .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
            .collect();
        for row in rows {
            let _ = writeln!(
                out,
                "{:<w0$}  {:>w1$}  {:>w2$}  {:>w3$}",
                row[0],
                row[1],
                row[2],
                row[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3]
            );
        }
        let _ = writeln!(out, "\nratio = burrow / coturn; medians over rounds; CPU = user + system time from /proc/PID/stat.");
        out
    }
}
