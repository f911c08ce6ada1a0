//! `direct`: what a direct (hole-punched) burrow path costs next to plain quinn, in the NAT lab.
//!
//! The lab: a relay server namespace (203.0.113.30 and .31) running `burrow relay` with STUN, and
//! two `open` homes (firewalled routers, no delay) whose hosts have routable addresses, so plain
//! quinn can connect straight from one to the other.
//!
//! * Throughput: in home A a burrow [`Endpoint`] (relay + STUN, like `burrow listen`) and a
//!   plain quinn server on A's host address; in home B a burrow endpoint that connects with A's
//!   ticket and waits for the direct path, and a plain quinn client. Each transfer sends
//!   `--bytes` on one bidirectional stream to a sink that counts and answers with the count;
//!   rounds alternate which goes first. Both sides run in this process, each on its own
//!   single-threaded Tokio runtime in its namespace.
//! * Idle cost: with those two connections idle, iptables counters in A's host namespace count
//!   the UDP bytes of each (both directions) over `--idle`.
//! * Memory per peer: fresh child processes (this executable's hidden `direct-peers`
//!   subcommand): one listener in A, then N connectors in B, each its own endpoint; the
//!   listener's and the connectors' RSS growth divided by N.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use burrow::endpoint::{transport_config, Endpoint, EndpointOptions, PathInfo};
use burrow::relay_client::RelayUrl;
use burrow::ticket::Ticket;
use burrow::{NodeId, SecretKey};
use burrow_lab::{Lab, NatKind, RouterVariant, Spawned};
use bytes::Bytes;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use serde::Serialize;

use crate::{median, server, DirectArgs, PeersArgs};

/// ALPN of both the burrow and the quinn connections.
pub(crate) const ALPN: &[u8] = b"burrow/bench/1";
/// The relay server's addresses (the second for RFC 5780 STUN).
const RELAY_IPS: [Ipv4Addr; 2] = [
    Ipv4Addr::new(203, 0, 113, 30),
    Ipv4Addr::new(203, 0, 113, 31),
];
/// The send buffer handed to the streams, chunk by chunk.
pub(crate) const BLOCK: usize = 1 << 20;
/// Comment tag on the iptables rules this benchmark inserts.
const TAG: &str = "burrow-bench-direct";

pub(crate) fn relay_url() -> RelayUrl {
    format!("http://{}:8080", RELAY_IPS[0])
        .parse()
        .expect("valid URL")
}

fn stun_addr() -> SocketAddr {
    SocketAddr::from((RELAY_IPS[0], 3478))
}

/// Everything `direct` measured.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub bytes: u64,
    pub rounds: u32,
    /// The direct path burrow used (peer address as B saw it) and its disco RTT.
    pub direct_path: String,
    pub burrow_mbit: Vec<f64>,
    pub quinn_mbit: Vec<f64>,
    pub burrow_mbit_median: f64,
    pub quinn_mbit_median: f64,
    /// Process CPU time (both ends, all threads) per GB transferred (10^9 bytes).
    pub burrow_cpu_s_per_gb: f64,
    pub quinn_cpu_s_per_gb: f64,
    /// burrow transfers after which the path was no longer direct.
    pub burrow_left_direct: u32,
    pub idle: Option<Idle>,
    pub memory: Option<Memory>,
}

/// UDP (and relay TCP) bytes counted in A's host namespace over the idle window.
#[derive(Debug, Serialize)]
pub(crate) struct Idle {
    pub secs: f64,
    /// burrow's main socket to and from the peer B: QUIC keep-alives and disco heartbeats.
    pub burrow_peer_bytes_per_sec: f64,
    pub burrow_peer_packets: u64,
    /// The part of those that were disco messages (pings, pongs), if iptables could tell.
    pub burrow_disco_bytes_per_sec: Option<f64>,
    pub burrow_disco_packets: Option<u64>,
    /// burrow's main socket to and from the relay host: STUN refreshes (per endpoint).
    pub burrow_stun_bytes_per_sec: f64,
    /// burrow's TCP connection to the relay, both directions (per endpoint, not per peer).
    pub burrow_relay_tcp_bytes_per_sec: f64,
    /// The quinn server socket, both directions.
    pub quinn_bytes_per_sec: f64,
    pub quinn_packets: u64,
    /// Every UDP packet in A's host namespace (the check that nothing else was counted).
    pub all_udp_bytes: u64,
}

/// RSS growth per peer, from fresh processes.
#[derive(Debug, Serialize)]
pub(crate) struct Memory {
    pub peers: usize,
    pub burrow: MemorySide,
    pub quinn: MemorySide,
}

#[derive(Debug, Serialize)]
pub(crate) struct MemorySide {
    /// Listener process RSS growth per connected peer.
    pub listener_bytes_per_peer: f64,
    /// Connector process RSS growth per peer (its own endpoint and one connection).
    pub connector_bytes_per_peer: f64,
    pub listener_rss_before: u64,
    pub listener_rss_after: u64,
    pub connector_rss_before: u64,
    pub connector_rss_after: u64,
    /// Connections established (and, for burrow, how many were direct at the end).
    pub connected: usize,
    pub direct: usize,
}

/// Runs the whole benchmark.
pub(crate) fn run(args: &DirectArgs) -> Result<Report> {
    let burrow_bin = server::find_burrow(args.burrow.as_deref())?;
    let exe = std::env::current_exe().context("locating this executable")?;
    // Room for the memory figure's connectors, all from B's one address.
    let (lab, _relay) = open_homes_lab(&burrow_bin, args.peers + 64)?;

    let mut report = throughput_and_idle(&lab, args)?;
    if args.peers > 0 {
        let burrow = memory(&lab, &exe, "burrow", args.peers)?;
        let quinn = memory(&lab, &exe, "quinn", args.peers)?;
        report.memory = Some(Memory {
            peers: args.peers,
            burrow,
            quinn,
        });
    }
    Ok(report)
}

/// The lab of this benchmark (and `forward`'s): the relay server (`burrow relay` with STUN on
/// both its addresses, at most `conns_per_ip` connections from one address) and two `open`
/// homes, `a` and `b`.
pub(crate) fn open_homes_lab(burrow: &Path, conns_per_ip: usize) -> Result<(Lab, Spawned)> {
    if let Some(why) = Lab::root_skip_reason() {
        bail!("this benchmark builds a NAT lab of network namespaces and needs root: {why}");
    }
    eprintln!("building the lab");
    let lab = Lab::builder()
        .server("relay", &RELAY_IPS)
        .home("a", NatKind::Open, RouterVariant::Firewalled)
        .home("b", NatKind::Open, RouterVariant::Firewalled)
        .build()?;
    let relay = lab.spawn(
        lab.server_ns("relay"),
        burrow,
        [
            "relay".to_string(),
            "--listen".into(),
            format!("{}:8080", RELAY_IPS[0]),
            "--stun".into(),
            stun_addr().to_string(),
            "--alt-ip".into(),
            RELAY_IPS[1].to_string(),
            "--max-conns-per-ip".into(),
            conns_per_ip.to_string(),
        ],
    )?;
    std::thread::sleep(Duration::from_millis(300));
    if lab.try_wait(relay.pid())?.is_some() {
        bail!("burrow relay exited at start: {}", relay.stderr());
    }
    Ok((lab, relay))
}

/// What side A tells side B.
struct Offer {
    ticket: Ticket,
    burrow_port: u16,
    quinn_addr: SocketAddr,
    cert: CertificateDer<'static>,
}

fn throughput_and_idle(lab: &Lab, args: &DirectArgs) -> Result<Report> {
    let ns_a = lab.host_ns("a").to_string();
    let ns_b = lab.host_ns("b").to_string();
    let ip_a = lab.host_ip("a");
    let (offer_tx, offer_rx) = std::sync::mpsc::channel::<Offer>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::scope(|s| {
        let a = s.spawn(|| lab.in_ns(&ns_a, move || side_a(ip_a, offer_tx, stop_rx)));
        let b = lab.in_ns(&ns_b, || side_b(lab, args, offer_rx));
        drop(stop_tx);
        let a = a
            .join()
            .unwrap_or_else(|_| bail!("home A's thread panicked"));
        let report = b?;
        a?;
        Ok(report)
    })
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Home A: a burrow endpoint and a quinn server, each with a counting sink, until stopped.
fn side_a(
    ip: Ipv4Addr,
    offer: std::sync::mpsc::Sender<Offer>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<()> {
    runtime()?.block_on(async move {
        let ep = bind_burrow().await?;
        ep.wait_public_addr(Duration::from_secs(2)).await;
        let (server, cert) = quinn_server_config()?;
        let q = quinn_endpoint(SocketAddr::from((ip, 0)), Some(server))?;
        offer
            .send(Offer {
                ticket: ep.ticket(),
                burrow_port: ep.local_addr()?.port(),
                quinn_addr: q.local_addr()?,
                cert,
            })
            .ok()
            .context("home B is gone")?;
        let burrow_side = {
            let ep = ep.clone();
            async move {
                while let Some(c) = ep.accept().await {
                    tokio::spawn(sink(c.quic));
                }
            }
        };
        let quinn_side = {
            let q = q.clone();
            async move {
                while let Some(incoming) = q.accept().await {
                    if let Ok(c) = incoming.await {
                        tokio::spawn(sink(c));
                    }
                }
            }
        };
        tokio::select! {
            _ = burrow_side => {}
            _ = quinn_side => {}
            _ = stop => {}
        }
        q.close(0u32.into(), b"done");
        ep.close().await;
        Ok(())
    })
}

/// Home B: connects both, measures throughput, then the idle cost.
fn side_b(lab: &Lab, args: &DirectArgs, offer: std::sync::mpsc::Receiver<Offer>) -> Result<Report> {
    let offer = offer
        .recv()
        .context("home A failed before it offered anything")?;
    runtime()?.block_on(async move {
        let ep = bind_burrow().await?;
        let node_a = offer.ticket.node_id;
        let conn = ep
            .connect(&offer.ticket, ALPN)
            .await
            .context("burrow connect")?;
        let direct = wait_direct(&ep, &node_a, Duration::from_secs(10))
            .await
            .context("burrow's path did not go direct within 10 s")?;
        let direct_path = format!("{} (disco RTT {:?})", direct.addr, direct.rtt);
        eprintln!("burrow: direct path to {direct_path}");
        let q = quinn_endpoint("0.0.0.0:0".parse()?, None)?;
        let qconn = q
            .connect_with(quinn_client_config(&offer.cert)?, offer.quinn_addr, "bench")?
            .await
            .context("quinn connect")?;
        eprintln!("quinn: connected to {}", offer.quinn_addr);

        let block = Bytes::from((0..BLOCK).map(|_| rand::random::<u8>()).collect::<Vec<_>>());
        // Warm-up, not counted: both paths carry some data once (MTU discovery, buffers).
        let warm = (args.bytes / 10).max(1);
        transfer(&conn.quic, warm, &block).await?;
        transfer(&qconn, warm, &block).await?;

        let (mut ours, mut anchor) = (Vec::new(), Vec::new());
        let (mut ours_cpu, mut anchor_cpu) = (Duration::ZERO, Duration::ZERO);
        let mut left_direct = 0;
        for round in 0..args.rounds {
            let order: [bool; 2] = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for is_burrow in order {
                server::check_interrupted()?;
                let c = if is_burrow { &conn.quic } else { &qconn };
                let cpu0 = server::own_cpu_time()?;
                let took = transfer(c, args.bytes, &block).await?;
                let cpu = server::own_cpu_time()? - cpu0;
                let mbit = args.bytes as f64 * 8.0 / took.as_secs_f64() / 1e6;
                let name = if is_burrow { "burrow" } else { "quinn" };
                let mut note = String::new();
                if is_burrow && !matches!(ep.path(&node_a), PathInfo::Direct(_)) {
                    left_direct += 1;
                    note = " (path no longer direct!)".into();
                }
                eprintln!(
                    "round {}/{} {name:>6}: {mbit:>8.0} Mbit/s, {:.2} s, process CPU {:.2} s{note}",
                    round + 1,
                    args.rounds,
                    took.as_secs_f64(),
                    cpu.as_secs_f64()
                );
                if is_burrow {
                    ours.push(mbit);
                    ours_cpu += cpu;
                } else {
                    anchor.push(mbit);
                    anchor_cpu += cpu;
                }
            }
        }
        let gb = args.bytes as f64 * f64::from(args.rounds) / 1e9;
        let idle = if args.idle.is_zero() {
            None
        } else {
            // Let the transfers' last ACKs and the path's active heartbeats settle.
            tokio::time::sleep(Duration::from_secs(6)).await;
            Some(idle(lab, args.idle, &offer, lab.host_ip("b")).await?)
        };
        // Both connections must still be up, or the idle figure measured a dead connection.
        ensure!(
            conn.quic.close_reason().is_none() && qconn.close_reason().is_none(),
            "a connection closed during the idle window (burrow: {:?}, quinn: {:?})",
            conn.quic.close_reason(),
            qconn.close_reason()
        );
        if !matches!(ep.path(&node_a), PathInfo::Direct(_)) {
            eprintln!("warning: burrow's path was not direct at the end of the idle window");
        }
        qconn.close(0u32.into(), b"done");
        q.wait_idle().await;
        ep.close().await;
        Ok(Report {
            bytes: args.bytes,
            rounds: args.rounds,
            direct_path,
            burrow_mbit_median: median(ours.clone()),
            quinn_mbit_median: median(anchor.clone()),
            burrow_mbit: ours,
            quinn_mbit: anchor,
            burrow_cpu_s_per_gb: ours_cpu.as_secs_f64() / gb,
            quinn_cpu_s_per_gb: anchor_cpu.as_secs_f64() / gb,
            burrow_left_direct: left_direct,
            idle,
            memory: None,
        })
    })
}

/// Counts bytes in A's host namespace for `window` with both connections idle.
async fn idle(lab: &Lab, window: Duration, offer: &Offer, ip_b: Ipv4Addr) -> Result<Idle> {
    let ns = lab.host_ns("a");
    let relay = RELAY_IPS[0].to_string();
    let peer = ip_b.to_string();
    let (bp, qp) = (
        offer.burrow_port.to_string(),
        offer.quinn_addr.port().to_string(),
    );
    // (name, chain, match)
    let rules: Vec<(&str, &str, Vec<&str>)> = vec![
        (
            "burrow-peer-in",
            "INPUT",
            vec!["-p", "udp", "-s", &peer, "--dport", &bp],
        ),
        (
            "burrow-peer-out",
            "OUTPUT",
            vec!["-p", "udp", "-d", &peer, "--sport", &bp],
        ),
        (
            "burrow-stun-in",
            "INPUT",
            vec!["-p", "udp", "-s", &relay, "--dport", &bp],
        ),
        (
            "burrow-stun-out",
            "OUTPUT",
            vec!["-p", "udp", "-d", &relay, "--sport", &bp],
        ),
        (
            "burrow-tcp-in",
            "INPUT",
            vec!["-p", "tcp", "-s", &relay, "--sport", "8080"],
        ),
        (
            "burrow-tcp-out",
            "OUTPUT",
            vec!["-p", "tcp", "-d", &relay, "--dport", "8080"],
        ),
        ("quinn-in", "INPUT", vec!["-p", "udp", "--dport", &qp]),
        ("quinn-out", "OUTPUT", vec!["-p", "udp", "--sport", &qp]),
        ("udp-in", "INPUT", vec!["-p", "udp"]),
        ("udp-out", "OUTPUT", vec!["-p", "udp"]),
    ];
    // Disco packets start with the magic 0x20 'B' 'W' 'D' (QUIC packets always have the fixed
    // bit 0x40 set, so they never do): the u32 match reads the first 4 payload bytes.
    const DISCO: &str = "0>>22&0x3C@8=0x20425744";
    let optional: Vec<(&str, &str, Vec<&str>)> = vec![
        (
            "burrow-disco-in",
            "INPUT",
            vec![
                "-p", "udp", "-s", &peer, "--dport", &bp, "-m", "u32", "--u32", DISCO,
            ],
        ),
        (
            "burrow-disco-out",
            "OUTPUT",
            vec![
                "-p", "udp", "-d", &peer, "--sport", &bp, "-m", "u32", "--u32", DISCO,
            ],
        ),
    ];
    let insert = |name: &str, chain: &str, m: &[&str]| {
        let comment = format!("{TAG}-{name}");
        let mut a = vec!["-w", "-I", chain];
        a.extend(m.iter().copied());
        a.extend(["-m", "comment", "--comment", &comment]);
        iptables(lab, ns, &a)
    };
    for (name, chain, m) in &rules {
        insert(name, chain, m)?;
    }
    for (name, chain, m) in &optional {
        if let Err(e) = insert(name, chain, m) {
            eprintln!("idle: no disco/QUIC split (iptables u32 match unavailable: {e:#})");
            break;
        }
    }
    eprintln!("idle: counting bytes in home A for {:?}", window);
    iptables(lab, ns, &["-w", "-Z", "INPUT"])?;
    iptables(lab, ns, &["-w", "-Z", "OUTPUT"])?;
    let start = Instant::now();
    let end = start + window;
    while Instant::now() < end {
        server::check_interrupted()?;
        tokio::time::sleep((end - Instant::now()).min(Duration::from_millis(500))).await;
    }
    let mut counts = std::collections::HashMap::new();
    for chain in ["INPUT", "OUTPUT"] {
        let out = iptables(lab, ns, &["-w", "-nvx", "-L", chain])?;
        let secs_out = out;
        for line in secs_out.lines() {
            let Some(name) = line
                .split("/* ")
                .nth(1)
                .and_then(|r| r.split(" */").next())
                .and_then(|c| c.strip_prefix(&format!("{TAG}-")))
            else {
                continue;
            };
            let f: Vec<&str> = line.split_whitespace().collect();
            let (pkts, bytes): (u64, u64) = (f[0].parse()?, f[1].parse()?);
            counts.insert(name.to_string(), (pkts, bytes));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let get = |n: &str| counts.get(n).copied().unwrap_or_default();
    let pair = |a: &str, b: &str| {
        let (x, y) = (get(a), get(b));
        (x.0 + y.0, x.1 + y.1)
    };
    let bpeer = pair("burrow-peer-in", "burrow-peer-out");
    let bstun = pair("burrow-stun-in", "burrow-stun-out");
    let btcp = pair("burrow-tcp-in", "burrow-tcp-out");
    let quinn = pair("quinn-in", "quinn-out");
    let all = pair("udp-in", "udp-out");
    let disco = counts
        .contains_key("burrow-disco-out")
        .then(|| pair("burrow-disco-in", "burrow-disco-out"));
    ensure!(
        counts.len() >= rules.len(),
        "missing iptables counters: {counts:?}"
    );
    if all.1 != bpeer.1 + bstun.1 + quinn.1 {
        eprintln!(
            "warning: {} UDP bytes in home A were neither burrow's nor quinn's",
            all.1 as i64 - (bpeer.1 + bstun.1 + quinn.1) as i64
        );
    }
    Ok(Idle {
        secs,
        burrow_peer_bytes_per_sec: bpeer.1 as f64 / secs,
        burrow_peer_packets: bpeer.0,
        burrow_disco_bytes_per_sec: disco.map(|d| d.1 as f64 / secs),
        burrow_disco_packets: disco.map(|d| d.0),
        burrow_stun_bytes_per_sec: bstun.1 as f64 / secs,
        burrow_relay_tcp_bytes_per_sec: btcp.1 as f64 / secs,
        quinn_bytes_per_sec: quinn.1 as f64 / secs,
        quinn_packets: quinn.0,
        all_udp_bytes: all.1,
    })
}

fn iptables(lab: &Lab, ns: &str, args: &[&str]) -> Result<String> {
    let mut cmd = lab.command(ns, "iptables");
    cmd.args(args);
    let out = burrow_lab::output_with_timeout(cmd, Duration::from_secs(10))?;
    ensure!(
        out.status.success(),
        "iptables {args:?} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Sends `bytes` on a new bidirectional stream and waits for the sink's count.
pub(crate) async fn transfer(
    conn: &quinn::Connection,
    bytes: u64,
    block: &Bytes,
) -> Result<Duration> {
    let start = Instant::now();
    let (mut send, mut recv) = conn.open_bi().await?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        send.write_chunk(block.slice(..n)).await?;
        left -= n as u64;
    }
    send.finish()?;
    let mut answer = [0u8; 8];
    recv.read_exact(&mut answer).await?;
    let took = start.elapsed();
    let got = u64::from_be_bytes(answer);
    ensure!(got == bytes, "the sink counted {got} bytes, not {bytes}");
    Ok(took)
}

/// Serves a connection's streams: reads each to its end and answers with the byte count.
/// Holds the connection until it closes.
pub(crate) async fn sink(conn: quinn::Connection) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        tokio::spawn(async move {
            let mut total = 0u64;
            while let Ok(Some(chunk)) = recv.read_chunk(usize::MAX, false).await {
                total += chunk.bytes.len() as u64;
            }
            let _ = send.write_all(&total.to_be_bytes()).await;
            let _ = send.finish();
            // Keep `send` until the peer has the answer.
            let _ = send.stopped().await;
        });
    }
}

/// A burrow endpoint the way `burrow listen`/`connect` bind one: IPv4, the lab relay and its
/// STUN, connected to the relay.
pub(crate) async fn bind_burrow() -> Result<Endpoint> {
    let ep = Endpoint::bind(
        SecretKey::from_bytes(rand::random()),
        EndpointOptions {
            bind_v4: "0.0.0.0:0".parse()?,
            bind_v6: None,
            relays: vec![relay_url()],
            stun_servers: vec![stun_addr()],
            alpns: vec![ALPN.to_vec()],
            ..Default::default()
        },
    )
    .await?;
    ep.relay()
        .context("relay client")?
        .wait_connected(Duration::from_secs(15))
        .await
        .context("no relay connection within 15 s")?;
    Ok(ep)
}

pub(crate) async fn wait_direct(
    ep: &Endpoint,
    node: &NodeId,
    timeout: Duration,
) -> Result<burrow::endpoint::DirectPath> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let PathInfo::Direct(d) = ep.path(node) {
            return Ok(d);
        }
        // Poll as well: a change between `path` and `path_changed` would otherwise be missed.
        let wake = deadline.min(tokio::time::Instant::now() + Duration::from_millis(100));
        if tokio::time::timeout_at(wake, ep.path_changed())
            .await
            .is_err()
            && tokio::time::Instant::now() >= deadline
        {
            bail!("still {:?}", ep.path(node));
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A self-signed certificate (rcgen) for the name "bench", TLS 1.3, ring, our ALPN.
fn quinn_server_config() -> Result<(quinn::ServerConfig, CertificateDer<'static>)> {
    let ck = rcgen::generate_simple_self_signed(vec!["bench".to_string()])?;
    let cert = ck.cert.der().clone();
    let key = PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key.into())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    // The settings burrow gives its connections, so the anchor differs only in what it is.
    server.transport_config(transport_config());
    Ok((server, cert))
}

/// Trusts exactly the server's self-signed certificate.
fn quinn_client_config(cert: &CertificateDer<'static>) -> Result<quinn::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone())?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(transport_config());
    Ok(client)
}

/// A plain quinn endpoint on a socket bound to `addr` (in the current thread's namespace).
fn quinn_endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind(addr).with_context(|| format!("binding {addr}"))?;
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        socket,
        Arc::new(quinn::TokioRuntime),
    )?)
}

// ---------------------------------------------------------------------------------------------
// Memory per peer: child processes.

/// One memory measurement: a listener in A, then `peers` connectors in B.
fn memory(lab: &Lab, exe: &Path, kind: &str, peers: usize) -> Result<MemorySide> {
    eprintln!("memory: {kind}, {peers} peers");
    let mut largs = vec![
        "direct-peers".to_string(),
        "listen".into(),
        "--kind".into(),
        kind.into(),
        "--bind".into(),
        lab.host_ip("a").to_string(),
    ];
    largs.extend(["--peers".into(), peers.to_string()]);
    let listener = lab.spawn(lab.host_ns("a"), exe, &largs)?;
    let result = (|| {
        let ready = listener.wait_for_line(Duration::from_secs(30), |l| l.starts_with('{'))?;
        let v: serde_json::Value = serde_json::from_str(&ready)?;
        check_is_harness(&listener)?;
        std::thread::sleep(Duration::from_secs(1));
        let l0 = crate::vm_rss(Some(listener.pid()))?;
        let mut cargs = vec![
            "direct-peers".to_string(),
            "connect".into(),
            "--kind".into(),
            kind.into(),
            "--peers".into(),
            peers.to_string(),
        ];
        match kind {
            "burrow" => cargs.extend(["--ticket".into(), json_str(&v, "ticket")?]),
            _ => cargs.extend([
                "--addr".into(),
                json_str(&v, "addr")?,
                "--cert".into(),
                json_str(&v, "cert")?,
            ]),
        }
        let connector = lab.spawn(lab.host_ns("b"), exe, &cargs)?;
        let r = (|| {
            let line = connector.wait_for_line(Duration::from_secs(180), |l| l.starts_with('{'))?;
            let c: serde_json::Value = serde_json::from_str(&line)?;
            std::thread::sleep(Duration::from_secs(1));
            let l1 = crate::vm_rss(Some(listener.pid()))?;
            let n = |k: &str| c[k].as_u64().with_context(|| format!("no {k} in {line}"));
            let (c0, c1) = (n("rss_before")?, n("rss_after")?);
            let connected = n("connected")? as usize;
            let direct = n("direct")? as usize;
            eprintln!(
                "memory: {kind}: listener {l0} -> {l1} B, connectors {c0} -> {c1} B, \
                 {connected} connected, {direct} direct"
            );
            Ok(MemorySide {
                listener_bytes_per_peer: l1.saturating_sub(l0) as f64 / peers as f64,
                connector_bytes_per_peer: c1.saturating_sub(c0) as f64 / peers as f64,
                listener_rss_before: l0,
                listener_rss_after: l1,
                connector_rss_before: c0,
                connector_rss_after: c1,
                connected,
                direct,
            })
        })();
        let _ = lab.kill(connector.pid());
        r
    })();
    let _ = lab.kill(listener.pid());
    result
}

fn json_str(v: &serde_json::Value, key: &str) -> Result<String> {
    Ok(v[key]
        .as_str()
        .with_context(|| format!("no {key} in {v}"))?
        .to_string())
}

/// The RSS read through the pid must be the harness's own child, not an `ip` wrapper.
fn check_is_harness(p: &Spawned) -> Result<()> {
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", p.pid()))?;
    ensure!(
        comm.trim() == "burrow-bench",
        "pid {} is {comm:?}, not burrow-bench",
        p.pid()
    );
    Ok(())
}

/// The hidden `direct-peers` subcommand, run inside a lab namespace by [`memory`].
pub(crate) fn peers_main(args: &PeersArgs) -> Result<()> {
    runtime()?.block_on(async {
        match (args.role.as_str(), args.kind.as_str()) {
            ("listen", "burrow") => {
                let ep = bind_burrow().await?;
                ep.wait_public_addr(Duration::from_secs(2)).await;
                println!("{}", serde_json::json!({"ticket": ep.ticket().to_string()}));
                while let Some(c) = ep.accept().await {
                    tokio::spawn(sink(c.quic));
                }
                Ok(())
            }
            ("listen", "quinn") => {
                let ip = args.bind.context("--bind")?;
                let (server, cert) = quinn_server_config()?;
                let q = quinn_endpoint(SocketAddr::from((ip, 0)), Some(server))?;
                println!(
                    "{}",
                    serde_json::json!({"addr": q.local_addr()?.to_string(),
                        "cert": data_encoding::BASE64.encode(&cert)})
                );
                while let Some(incoming) = q.accept().await {
                    if let Ok(c) = incoming.await {
                        tokio::spawn(sink(c));
                    }
                }
                Ok(())
            }
            ("connect", kind) => connect_peers(args, kind).await,
            (role, kind) => bail!("unknown role {role:?} or kind {kind:?}"),
        }
    })
}

async fn connect_peers(args: &PeersArgs, kind: &str) -> Result<()> {
    // Settle first, so the baseline includes the runtime and everything loaded at start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = crate::vm_rss(None)?;
    let n = args.peers;
    let mut held_burrow: Vec<(Endpoint, burrow::endpoint::Connection)> = Vec::new();
    let mut held_quinn: Vec<(quinn::Endpoint, quinn::Connection)> = Vec::new();
    let mut direct = 0;
    match kind {
        "burrow" => {
            let ticket: Ticket = args.ticket.as_deref().context("--ticket")?.parse()?;
            // Ten at a time, like a node that gains peers over a few seconds.
            for batch in (0..n).collect::<Vec<_>>().chunks(10) {
                let mut set = tokio::task::JoinSet::new();
                for _ in batch {
                    let ticket = ticket.clone();
                    set.spawn(async move {
                        let ep = bind_burrow().await?;
                        let c = ep.connect(&ticket, ALPN).await?;
                        Ok::<_, anyhow::Error>((ep, c))
                    });
                }
                while let Some(r) = set.join_next().await {
                    held_burrow.push(r??);
                }
            }
            for (ep, _) in &held_burrow {
                if wait_direct(ep, &ticket.node_id, Duration::from_secs(15))
                    .await
                    .is_ok()
                {
                    direct += 1;
                }
            }
        }
        "quinn" => {
            let addr: SocketAddr = args.addr.as_deref().context("--addr")?.parse()?;
            let cert = CertificateDer::from(
                data_encoding::BASE64.decode(args.cert.as_deref().context("--cert")?.as_bytes())?,
            );
            let config = quinn_client_config(&cert)?;
            // Ten at a time, as for burrow.
            for batch in (0..n).collect::<Vec<_>>().chunks(10) {
                let mut set = tokio::task::JoinSet::new();
                for _ in batch {
                    let config = config.clone();
                    set.spawn(async move {
                        let q = quinn_endpoint("0.0.0.0:0".parse()?, None)?;
                        let c = q.connect_with(config, addr, "bench")?.await?;
                        Ok::<_, anyhow::Error>((q, c))
                    });
                }
                while let Some(r) = set.join_next().await {
                    held_quinn.push(r??);
                }
            }
            direct = n;
        }
        _ => bail!("unknown kind {kind:?}"),
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = crate::vm_rss(None)?;
    let connected = held_burrow.len() + held_quinn.len();
    println!(
        "{}",
        serde_json::json!({"rss_before": before, "rss_after": after,
            "connected": connected, "direct": direct})
    );
    // Hold everything until the harness kills us.
    std::future::pending::<()>().await;
    Ok(())
}
