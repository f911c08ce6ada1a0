//! `forward`: a TCP connection carried between two members' daemons (`burrow expose` on one,
//! `burrow forward` on the other), next to what it is made of, in one NAT-lab run:
//!
//! * plain TCP between the same two hosts (the limit: no encryption, no user-space hops);
//! * plain TCP on loopback inside home B (what each of a forward's two local legs costs);
//! * one burrow QUIC stream on a direct path between two endpoints in the same homes (the path
//!   a forward rides, without its two loopback TCP legs and the daemons' copies).
//!
//! The lab is `direct`'s: the relay server and two `open` homes. Home A runs a TCP sink on
//! all its addresses (it reads each connection to its end and answers with the byte count),
//! the mesh's admin daemon, which exposes the sink's port, and a burrow endpoint with a QUIC
//! sink; home B runs the member's daemon, which forwards A's port to A's stable address, and
//! a burrow endpoint that connects to A's directly. Each round sends `--bytes` once each way
//! of the three, in a rotating order, from B.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use burrow::api::ApiClient;
use burrow::ticket::Ticket;
use bytes::Bytes;
use serde::Serialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::direct::{self, bind_burrow, open_homes_lab, runtime, wait_direct, ALPN, BLOCK};
use crate::mesh::home::{api_of_up, run_json, Member, MeshHome};
use crate::{median, server};
use burrow_lab::Lab;

/// `burrow-bench forward`'s arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct ForwardArgs {
    /// Bytes sent per measurement.
    #[arg(long, default_value_t = 100_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    bytes: u64,
    /// Rounds; each measures the three once, in a rotating order.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// The burrow binary, run as the relay and the daemons [default: `burrow` next to this
    /// executable].
    #[arg(long, value_name = "PATH")]
    burrow: Option<PathBuf>,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// The ways bytes go (from B to A, and B's loopback).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    Tcp,
    Quic,
    Forward,
    Loopback,
}

/// What `forward` measured.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Report {
    pub bytes: u64,
    pub tcp_mbit: Vec<f64>,
    pub quic_mbit: Vec<f64>,
    pub forward_mbit: Vec<f64>,
    pub loopback_mbit: Vec<f64>,
    pub tcp_mbit_median: f64,
    pub quic_mbit_median: f64,
    pub forward_mbit_median: f64,
    pub loopback_mbit_median: f64,
    /// CPU time of everything that ran (this harness's threads at both ends, and the two
    /// daemons), per 10^9 bytes.
    pub tcp_cpu_s_per_gb: f64,
    pub quic_cpu_s_per_gb: f64,
    pub forward_cpu_s_per_gb: f64,
    pub loopback_cpu_s_per_gb: f64,
    /// What a forward's parts cost: the QUIC stream and two loopback TCP legs.
    pub parts_cpu_s_per_gb: f64,
    /// The share of the QUIC stream's throughput a forward that cost only its parts would
    /// reach where all of them share the same CPUs (as here): QUIC's CPU over the parts'.
    pub cpu_bound_fwd_quic: f64,
}

/// A mesh daemon (`burrow up`) in a lab home, and its API.
struct Daemon {
    home: MeshHome,
    api: ApiClient,
    pid: u32,
}

/// Runs the benchmark and prints it.
pub(crate) fn run(args: &ForwardArgs) -> Result<()> {
    let burrow = server::find_burrow(args.burrow.as_deref())?;
    let (lab, _relay) = open_homes_lab(&burrow, 64)?;
    let r = measure(&lab, &burrow, args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "forwarded TCP, NAT lab (two open homes), {} MB per transfer, {} rounds; Mbit/s",
        r.bytes / 1_000_000,
        r.tcp_mbit.len()
    );
    println!(
        "{:<10} {:>12} {:>12} {:>12} {:>12} {:>9} {:>9}",
        "round", "plain TCP", "loopback", "QUIC stream", "forwarded", "fwd/QUIC", "fwd/TCP"
    );
    for i in 0..r.tcp_mbit.len() {
        let each = [&r.tcp_mbit, &r.loopback_mbit, &r.quic_mbit, &r.forward_mbit].map(|v| v[i]);
        println!("{}", row(&format!("{}", i + 1), 0, each));
    }
    let medians = [
        r.tcp_mbit_median,
        r.loopback_mbit_median,
        r.quic_mbit_median,
        r.forward_mbit_median,
    ];
    println!("{}", row("median", 0, medians));
    let cpu = [
        r.tcp_cpu_s_per_gb,
        r.loopback_cpu_s_per_gb,
        r.quic_cpu_s_per_gb,
        r.forward_cpu_s_per_gb,
    ];
    println!("{}", row("CPU-s/GB", 2, cpu));
    println!(
        "plain TCP: host B to host A. loopback: TCP on 127.0.0.1 inside B. QUIC stream: two \
         burrow endpoints, direct. forwarded: B's client to B's `burrow forward` listener, \
         through both daemons (direct), to A's sink on 127.0.0.1. CPU-s/GB: all the harness's \
         threads and both daemons, per 10^9 bytes (its ratios are fwd/QUIC and fwd/TCP as \
         well)."
    );
    println!(
        "a forward's parts (the QUIC stream and two loopback legs) cost {:.2} CPU-s/GB; the \
         forward costs {:.2}x that. Where they share this machine's {} CPUs, a forward that \
         cost only its parts would reach {:.2} of the QUIC stream.",
        r.parts_cpu_s_per_gb,
        r.forward_cpu_s_per_gb / r.parts_cpu_s_per_gb,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        r.cpu_bound_fwd_quic,
    );
    Ok(())
}

/// One line of the table: plain TCP, loopback, QUIC and forwarded, with `p` decimals, and
/// the forward's ratios.
fn row(label: &str, p: usize, [tcp, lo, quic, fwd]: [f64; 4]) -> String {
    format!(
        "{label:<10} {tcp:>12.p$} {lo:>12.p$} {quic:>12.p$} {fwd:>12.p$} {:>9.2} {:>9.2}",
        fwd / quic,
        fwd / tcp
    )
}

fn measure(lab: &Lab, burrow: &Path, args: &ForwardArgs) -> Result<Report> {
    let (ns_a, ns_b) = (lab.host_ns("a").to_owned(), lab.host_ns("b").to_owned());
    let sink_port = lab.in_ns(&ns_a, tcp_sink)?;
    let sink_addr = SocketAddr::from((lab.host_ip("a"), sink_port));
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, lab.in_ns(&ns_b, tcp_sink)?));

    eprintln!("starting the daemons");
    let a = start_daemon(lab, burrow, "a", None)?;
    let invite: serde_json::Value = runtime()?.block_on(a.api.post("/v1/invites", &json!({})))?;
    let token = invite["token"].as_str().context("no token")?.to_owned();
    let b = start_daemon(lab, burrow, "b", Some(&token))?;
    let _: serde_json::Value =
        runtime()?.block_on(a.api.post("/v1/expose", &json!({"port": sink_port})))?;
    let forward: serde_json::Value = runtime()?.block_on(
        b.api
            .post("/v1/forwards", &json!({"member": "a", "port": sink_port})),
    )?;
    let local: SocketAddr = forward["local"]
        .as_str()
        .context("no local address")?
        .parse()?;
    runtime()?.block_on(until_direct(&b.api))?;

    // A's QUIC sink runs on a thread of its own until B is done.
    let (ticket_tx, ticket_rx) = std::sync::mpsc::channel::<Ticket>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let report = std::thread::scope(|s| {
        let quic_a = s.spawn(|| {
            lab.in_ns(&ns_a, move || {
                runtime()?.block_on(async move {
                    let ep = bind_burrow().await?;
                    ep.wait_public_addr(Duration::from_secs(2)).await;
                    ticket_tx.send(ep.ticket()).ok().context("B is gone")?;
                    let serve = async {
                        while let Some(c) = ep.accept().await {
                            tokio::spawn(direct::sink(c.quic));
                        }
                    };
                    tokio::select! {
                        _ = serve => {}
                        _ = stop_rx => {}
                    }
                    ep.close().await;
                    Ok(())
                })
            })
        });
        let report = ticket_rx
            .recv()
            .context("A's endpoint did not start")
            .and_then(|ticket| {
                lab.in_ns(&ns_b, || {
                    runtime()?.block_on(rounds(
                        args,
                        ticket,
                        sink_addr,
                        local,
                        loopback,
                        [a.pid, b.pid],
                    ))
                })
            });
        drop(stop_tx);
        quic_a
            .join()
            .unwrap_or_else(|_| bail!("A's thread panicked"))?;
        report
    })?;
    for d in [&b, &a] {
        let _: Result<serde_json::Value, _> =
            runtime()?.block_on(d.api.post("/v1/shutdown", &json!({})));
    }
    drop((a.home, b.home));
    Ok(report)
}

/// B's side: every round, the three transfers.
async fn rounds(
    args: &ForwardArgs,
    ticket: Ticket,
    sink: SocketAddr,
    local: SocketAddr,
    loopback: SocketAddr,
    daemons: [u32; 2],
) -> Result<Report> {
    let cpu_now = || -> Result<Duration> {
        let mut t = server::own_cpu_time()?;
        for pid in daemons {
            t += server::pid_cpu_time(pid)?;
        }
        Ok(t)
    };
    let mut cpu = [Duration::ZERO; 4];
    let ep = bind_burrow().await?;
    let conn = ep.connect(&ticket, ALPN).await?;
    wait_direct(&ep, &ticket.node_id, Duration::from_secs(15))
        .await
        .context("the QUIC anchor is not direct")?;
    let block = Bytes::from(vec![0x5a; BLOCK]);
    let mut r = Report {
        bytes: args.bytes,
        ..Report::default()
    };
    let order = [Way::Tcp, Way::Quic, Way::Forward, Way::Loopback];
    for round in 0..args.rounds as usize {
        for i in 0..order.len() {
            let way = order[(round + i) % order.len()];
            let cpu_before = cpu_now()?;
            let took = match way {
                Way::Tcp => tcp_transfer(sink, args.bytes, &block).await?,
                Way::Quic => direct::transfer(&conn.quic, args.bytes, &block).await?,
                Way::Forward => tcp_transfer(local, args.bytes, &block).await?,
                Way::Loopback => tcp_transfer(loopback, args.bytes, &block).await?,
            };
            cpu[way as usize] += cpu_now()? - cpu_before;
            let mbit = args.bytes as f64 * 8.0 / took.as_secs_f64() / 1e6;
            eprintln!("round {}: {way:?} {mbit:.0} Mbit/s", round + 1);
            match way {
                Way::Tcp => r.tcp_mbit.push(mbit),
                Way::Quic => r.quic_mbit.push(mbit),
                Way::Forward => r.forward_mbit.push(mbit),
                Way::Loopback => r.loopback_mbit.push(mbit),
            }
        }
    }
    r.tcp_mbit_median = median(r.tcp_mbit.clone());
    r.quic_mbit_median = median(r.quic_mbit.clone());
    r.forward_mbit_median = median(r.forward_mbit.clone());
    r.loopback_mbit_median = median(r.loopback_mbit.clone());
    let gb = args.bytes as f64 * f64::from(args.rounds) / 1e9;
    [
        r.tcp_cpu_s_per_gb,
        r.quic_cpu_s_per_gb,
        r.forward_cpu_s_per_gb,
        r.loopback_cpu_s_per_gb,
    ] = cpu.map(|c| c.as_secs_f64() / gb);
    r.parts_cpu_s_per_gb = r.quic_cpu_s_per_gb + 2.0 * r.loopback_cpu_s_per_gb;
    r.cpu_bound_fwd_quic = r.quic_cpu_s_per_gb / r.parts_cpu_s_per_gb;
    ep.close().await;
    Ok(r)
}

/// Sends `bytes` to `to` over TCP, half-closes, and waits for the sink's count.
async fn tcp_transfer(to: SocketAddr, bytes: u64, block: &Bytes) -> Result<Duration> {
    let start = Instant::now();
    let mut tcp = tokio::net::TcpStream::connect(to)
        .await
        .with_context(|| format!("connecting to {to}"))?;
    tcp.set_nodelay(true)?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        tcp.write_all(&block[..n]).await?;
        left -= n as u64;
    }
    tcp.shutdown().await?;
    let mut answer = [0u8; 8];
    tcp.read_exact(&mut answer)
        .await
        .with_context(|| format!("the count from {to}"))?;
    let took = start.elapsed();
    let got = u64::from_be_bytes(answer);
    ensure!(
        got == bytes,
        "the sink at {to} counted {got} bytes, not {bytes}"
    );
    Ok(took)
}

/// A TCP sink on every address of this namespace's host (a free port, returned): reads each
/// connection to its end and answers with the byte count. Its thread lives as long as the
/// process.
fn tcp_sink() -> Result<u16> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut tcp = tcp;
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0u64;
                while let Ok(n @ 1..) = tcp.read(&mut buf) {
                    total += n as u64;
                }
                let _ = tcp.write_all(&total.to_be_bytes());
            });
        }
    });
    Ok(port)
}

/// `burrow init` (with no token) or `burrow join TOKEN`, then `burrow up`, in home `name`.
fn start_daemon(lab: &Lab, burrow: &Path, name: &str, token: Option<&str>) -> Result<Daemon> {
    let home = MeshHome::new(lab.dir(), &format!("node-{name}"))?;
    let ns = lab.host_ns(name);
    let relay = direct::relay_url().to_string();
    let args: Vec<&str> = match token {
        None => vec!["init", "bench", "--name", name, "--relay", &relay, "--json"],
        Some(t) => vec!["join", t, "--name", name, "--json"],
    };
    let mut cmd = lab.command(ns, "env");
    cmd.args(home.env_args()).arg(burrow).args(&args);
    run_json(cmd, Duration::from_secs(30))?;
    let mut up_args = home.env_args();
    up_args.extend([burrow.into(), "up".into(), "--json".into()]);
    let up = lab.spawn(ns, "env", up_args)?;
    let line = up
        .wait_for_line(Duration::from_secs(20), |l| l.contains(r#""event":"up""#))
        .with_context(|| format!("{name}: burrow up"))?;
    Ok(Daemon {
        home,
        api: api_of_up(&line)?,
        pid: up.pid(),
    })
}

/// Waits until `api`'s daemon reaches the other member directly.
async fn until_direct(api: &ApiClient) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Members {
        members: Vec<Member>,
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m: Members = api.get("/v1/members").await?;
        if let Some(other) = m.members.iter().find(|m| !m.me && m.online) {
            if other.path.as_deref() == Some("direct") {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            bail!("the daemons are not direct within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
