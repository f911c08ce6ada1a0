//! Time from `burrow join` to member, in the NAT lab (root): an inviter behind a
//! port-restricted cone NAT (easy) and one behind a symmetric NAT, each running `burrow up`
//! for a mesh of its own, and a joiner behind a port-restricted cone NAT; every home link
//! delayed `--delay` each way, the relay (`burrow relay` with RFC 5780 STUN) on the lab's
//! internet.
//!
//! Per run and inviter, in a fresh joiner home: the inviter's API issues an invite; the clock
//! starts as the harness starts `burrow join TOKEN`; when it exits, the harness starts
//! `burrow up` in the joiner's home; the inviter's `GET /v1/members` is polled every 20 ms
//! until it lists the joiner online (a mesh connection admitted both ways), then until its
//! path is direct (or `--direct-patience` after online). Then the joiner's daemon is killed
//! and kicked, so the inviter does not keep dialling it.
//!
//! The anchor, in the same run between the same two homes: a plain `burrow listen` beside the
//! inviter's daemon, and a plain ticket connect started in the joiner's home; the clock runs
//! from starting it until the listener prints the connection, then until it prints a direct
//! path: what connecting costs, so the ratio is what joining costs over it (two processes,
//! each binding an endpoint and reaching the other side, plus the invite's redemption and the
//! proofs of membership). The connect is `burrow ping TICKET --count 2 --interval 1h`, which
//! dials as `burrow connect` does (bind, relay, connect, a first round trip) but then holds the
//! connection: `connect` exits once its own side is direct, often before the listener's side
//! has switched, so the listener would never show it. Runs alternate which goes first.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use burrow::api::ApiClient;
use burrow_lab::burrow::{relay_url, RELAY_IPS};
use burrow_lab::{Lab, LinkConditions, NatKind, RouterVariant, Spawned};
use serde::Serialize;

use super::home::{self, MeshHome};
use super::Spread;

/// How often the inviter's members, or the listener's output, is looked at.
const POLL: Duration = Duration::from_millis(20);
/// Longest a joiner (or a ticket connect) may take to show up at all.
const ONLINE_PATIENCE: Duration = Duration::from_secs(30);
/// The lab home the joiner lives in.
const JOINER: &str = "joiner";

/// What `join` is given.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Config {
    pub runs: u32,
    /// One-way delay of every home's link.
    pub delay_ms: u64,
    /// How long after online a direct path is waited for.
    pub direct_patience_ms: u64,
}

/// One run against one inviter.
#[derive(Debug, Serialize)]
pub(crate) struct Run {
    #[serde(flatten)]
    pub join: Joined,
    #[serde(flatten)]
    pub connect: Connected,
}

/// The join half of a run.
#[derive(Debug, Serialize)]
pub(crate) struct Joined {
    /// From starting `burrow join` to its exit.
    pub join_exit_ms: f64,
    /// The path `burrow join` reports it redeemed the invite over.
    pub join_path: String,
    /// From starting `burrow join` to the inviter listing the joiner online, and its path then.
    pub online_ms: f64,
    pub online_path: String,
    /// From starting `burrow join` to the inviter listing a direct path, if it did in time.
    pub direct_ms: Option<f64>,
}

/// The anchor half of a run.
#[derive(Debug, Serialize)]
pub(crate) struct Connected {
    /// From starting the ticket connect to the listener printing the connection, and its path.
    pub connect_seen_ms: f64,
    pub connect_seen_path: String,
    /// From starting it to the listener printing a direct path, if in time.
    pub connect_direct_ms: Option<f64>,
    /// Its first ping's line (`pong from ... via PATH ADDR in RTT`).
    pub connect_pong: Option<String>,
}

/// Every run against one inviter, and the figures over them.
#[derive(Debug, Serialize)]
pub(crate) struct InviterReport {
    /// The inviter's NAT kind.
    pub nat: &'static str,
    pub join_to_online_ms: Spread,
    pub join_exit_ms: Spread,
    /// From the joiner's `burrow up` starting to online.
    pub up_to_online_ms: Spread,
    /// Over the runs that went direct in time.
    pub join_to_direct_ms: Spread,
    pub join_direct_runs: usize,
    pub connect_seen_ms: Spread,
    pub connect_to_direct_ms: Spread,
    pub connect_direct_runs: usize,
    pub runs: Vec<Run>,
}

/// The whole figure.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub config: Config,
    pub inviters: Vec<InviterReport>,
}

/// An inviter: its home, daemon (and API), and the anchor's listener beside it.
struct Inviter {
    home: &'static str,
    nat: &'static str,
    api: ApiClient,
    ticket: String,
    listener: Spawned,
    runs: Vec<Run>,
    _mesh: MeshHome,
}

/// Builds the lab and runs every run; `None` with the reason when this process cannot build
/// a lab.
pub(crate) fn run(
    burrow: &Path,
    config: &Config,
    rt: &tokio::runtime::Runtime,
) -> Result<std::result::Result<Report, String>> {
    if let Some(why) = Lab::root_skip_reason() {
        return Ok(Err(why));
    }
    let homes = [
        ("easy", NatKind::PortRestrictedCone),
        ("sym", NatKind::Symmetric),
        (JOINER, NatKind::PortRestrictedCone),
    ];
    let mut builder = Lab::builder().server("relay", &RELAY_IPS);
    for (name, kind) in homes {
        builder = builder.home(name, kind, RouterVariant::Firewalled);
        if config.delay_ms > 0 {
            let delay = Duration::from_millis(config.delay_ms);
            builder = builder.link_conditions(
                name,
                LinkConditions {
                    delay: Some(delay),
                    ..Default::default()
                },
            );
        }
    }
    eprintln!("join: building the lab");
    let lab = builder.build()?;
    lab.spawn_relay(burrow, "relay")?;
    let mut inviters = Vec::new();
    for (name, _) in &homes[..2] {
        inviters.push(start_inviter(&lab, burrow, name)?);
    }
    // The inviters' relay connections, STUN and records settle.
    crate::server::sleep(Duration::from_secs(3))?;
    let anchor_home = MeshHome::new(lab.dir(), "anchor")?;
    for run in 0..config.runs {
        let order: Vec<usize> = if run % 2 == 0 { vec![0, 1] } else { vec![1, 0] };
        for i in order {
            let inv = &mut inviters[i];
            let join_first = run % 2 == 0;
            let (mut joined, mut connected) = (None, None);
            for step in 0..2 {
                crate::server::check_interrupted()?;
                if (step == 0) == join_first {
                    joined = Some(join_once(&lab, burrow, inv, run, config, rt)?);
                } else {
                    connected = Some(connect_once(&lab, burrow, inv, &anchor_home, config)?);
                }
                crate::server::sleep(Duration::from_millis(500))?;
            }
            let run_report = Run {
                join: joined.context("joined")?,
                connect: connected.context("connected")?,
            };
            eprintln!(
                "join: run {}/{} {:>4} inviter: member online after {:.0} ms ({}), direct {}; \
                 connect seen after {:.0} ms ({}), direct {}",
                run + 1,
                config.runs,
                inv.nat,
                run_report.join.online_ms,
                run_report.join.online_path,
                fmt_ms(run_report.join.direct_ms),
                run_report.connect.connect_seen_ms,
                run_report.connect.connect_seen_path,
                fmt_ms(run_report.connect.connect_direct_ms),
            );
            inv.runs.push(run_report);
        }
    }
    lab.check_delays()?;
    let inviters = inviters.into_iter().map(summarize).collect();
    Ok(Ok(Report {
        config: config.clone(),
        inviters,
    }))
}

fn fmt_ms(ms: Option<f64>) -> String {
    ms.map_or("not in time".into(), |ms| format!("after {ms:.0} ms"))
}

fn summarize(inv: Inviter) -> InviterReport {
    let runs = inv.runs;
    let of = |f: &dyn Fn(&Run) -> Option<f64>| Spread::of(runs.iter().filter_map(f).collect());
    InviterReport {
        nat: inv.nat,
        join_to_online_ms: of(&|r| Some(r.join.online_ms)),
        join_exit_ms: of(&|r| Some(r.join.join_exit_ms)),
        up_to_online_ms: of(&|r| Some(r.join.online_ms - r.join.join_exit_ms)),
        join_to_direct_ms: of(&|r| r.join.direct_ms),
        join_direct_runs: runs.iter().filter(|r| r.join.direct_ms.is_some()).count(),
        connect_seen_ms: of(&|r| Some(r.connect.connect_seen_ms)),
        connect_to_direct_ms: of(&|r| r.connect.connect_direct_ms),
        connect_direct_runs: runs
            .iter()
            .filter(|r| r.connect.connect_direct_ms.is_some())
            .count(),
        runs,
    }
}

/// `burrow init` and `burrow up` in `home`, and a `burrow listen` beside them.
fn start_inviter(lab: &Lab, burrow: &Path, home: &'static str) -> Result<Inviter> {
    let ns = lab.host_ns(home);
    let nat = lab.kind(home).name();
    let mesh = MeshHome::new(lab.dir(), &format!("{home}-inviter"))?;
    let mut init = lab.command(ns, burrow);
    init.envs(mesh.env())
        .args(["init", home, "--relay", &relay_url(), "--json"]);
    home::run_json(init, Duration::from_secs(20))?;
    let up = spawn_in(lab, ns, &mesh, burrow, &["up", "--json"])?;
    let line = up.wait_for_line(Duration::from_secs(20), |l| l.contains("\"up\""))?;
    let api = home::api_of_up(&line)?;
    let (listener, first) = lab.spawn_listener(burrow, home, &[])?;
    let ticket = first["ticket"].as_str().context("ticket")?.to_string();
    eprintln!("join: {nat} inviter up in {ns}");
    Ok(Inviter {
        home,
        nat,
        api,
        ticket,
        listener,
        runs: Vec::new(),
        _mesh: mesh,
    })
}

/// `burrow ARGS` in the background in namespace `ns`, living in `home`.
fn spawn_in(lab: &Lab, ns: &str, home: &MeshHome, burrow: &Path, args: &[&str]) -> Result<Spawned> {
    let mut argv = home.env_args();
    argv.push(burrow.into());
    argv.extend(args.iter().map(Into::into));
    lab.spawn(ns, "env", argv)
}

/// One join.
fn join_once(
    lab: &Lab,
    burrow: &Path,
    inv: &Inviter,
    run: u32,
    config: &Config,
    rt: &tokio::runtime::Runtime,
) -> Result<Joined> {
    let ns = lab.host_ns(JOINER);
    let token = rt.block_on(home::invite(&inv.api))?;
    let joiner = MeshHome::new(lab.dir(), &format!("{}-joiner-{run}", inv.home))?;
    let name = format!("j{run}");
    let start = Instant::now();
    let mut join = lab.command(ns, burrow);
    join.envs(joiner.env())
        .args(["join", &token, "--name", &name, "--json"]);
    let joined = home::run_json(join, ONLINE_PATIENCE)?;
    let join_exit = start.elapsed();
    let node_id = joined["node_id"].as_str().context("node_id")?.to_string();
    let up = spawn_in(lab, ns, &joiner, burrow, &["up", "--json"])?;
    let patience = Duration::from_millis(config.direct_patience_ms);
    let mut online: Option<(Duration, String)> = None;
    let mut direct = None;
    let result = loop {
        crate::server::check_interrupted()?;
        let members = rt.block_on(home::members(&inv.api))?;
        let me = members.iter().find(|m| m.node_id == node_id && m.online);
        if let Some(m) = me {
            let path = m.path.clone().unwrap_or_default();
            let (at, _) = online.get_or_insert((start.elapsed(), path.clone()));
            let at = *at;
            if path == "direct" {
                direct = Some(start.elapsed());
                break Ok(());
            }
            if start.elapsed() > at + patience {
                break Ok(());
            }
        } else if online.is_none() && start.elapsed() > ONLINE_PATIENCE {
            break Err(anyhow::anyhow!(
                "the {} inviter did not list {name} online within {ONLINE_PATIENCE:?}; \
                 the joiner's up said: {}",
                inv.nat,
                up.stderr()
            ));
        }
        std::thread::sleep(POLL);
    };
    let _ = lab.kill(up.pid());
    // Out of the roster, so that the inviter stops dialling it.
    let kicked: Result<serde_json::Value, _> = rt.block_on(
        inv.api
            .post("/v1/kick", &serde_json::json!({"member": node_id})),
    );
    result?;
    kicked.context("kicking the joiner")?;
    let (online_at, online_path) = online.context("online")?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(Joined {
        join_exit_ms: ms(join_exit),
        join_path: joined["path"].as_str().unwrap_or_default().to_string(),
        online_ms: ms(online_at),
        online_path,
        direct_ms: direct.map(ms),
    })
}

/// One ticket connect to the inviter's listener (the anchor).
fn connect_once(
    lab: &Lab,
    burrow: &Path,
    inv: &Inviter,
    home: &MeshHome,
    config: &Config,
) -> Result<Connected> {
    let ns = lab.host_ns(JOINER);
    let seen_before = listener_events(&inv.listener).len();
    let patience = Duration::from_millis(config.direct_patience_ms);
    let start = Instant::now();
    let connect = spawn_in(
        lab,
        ns,
        home,
        burrow,
        &["ping", &inv.ticket, "--count", "2", "--interval", "1h"],
    )?;
    let mut seen: Option<(Duration, String)> = None;
    let mut direct = None;
    let result = loop {
        crate::server::check_interrupted()?;
        for e in listener_events(&inv.listener).into_iter().skip(seen_before) {
            let path = e["path"].as_str().unwrap_or_default().to_string();
            match e["event"].as_str() {
                Some("connected") => {
                    seen.get_or_insert((start.elapsed(), path.clone()));
                }
                Some("path") => {}
                _ => continue,
            }
            if path == "direct" && direct.is_none() {
                direct = Some(start.elapsed());
            }
        }
        match &seen {
            Some(_) if direct.is_some() => break Ok(()),
            Some((at, _)) if start.elapsed() > *at + patience => break Ok(()),
            None if start.elapsed() > ONLINE_PATIENCE => {
                break Err(anyhow::anyhow!(
                    "the {} inviter's listener saw no connection within {ONLINE_PATIENCE:?}; \
                     the connect said: {}",
                    inv.nat,
                    connect.stderr()
                ))
            }
            _ => {}
        }
        std::thread::sleep(POLL);
    };
    let pong = connect
        .stdout()
        .lines()
        .find(|l| l.starts_with("pong"))
        .map(str::to_string);
    let _ = lab.kill(connect.pid());
    result?;
    let (at, path) = seen.context("seen")?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(Connected {
        connect_seen_ms: ms(at),
        connect_seen_path: path,
        connect_direct_ms: direct.map(ms),
        connect_pong: pong,
    })
}

/// The JSON lines a `burrow listen --json` printed so far.
fn listener_events(listener: &Spawned) -> Vec<serde_json::Value> {
    listener
        .stdout()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
