//! Daemon memory per idle member, on loopback: a relay (with STUN and its registry), one admin
//! running `burrow up`, and `--members` members joined and up, every node in a home of its
//! own. The admin's VmRSS is read fresh, after every member joined, after a restart of its
//! daemon with every member joined and none up (so that no memory the joins used and freed is
//! counted as free room), and once every member is up and every node lists every other online
//! (each member dials every member: a full mesh). The growth over the last step, divided by
//! the members, is what a connected idle member costs the admin.
//!
//! The anchor: a fresh plain `burrow listen` and as many `burrow ping TICKET --interval 1h`s,
//! each holding one idle connection to it after its first ping: the listener's growth per
//! connected peer, and the median RSS of those one-connection processes next to the members'.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use burrow::api::ApiClient;
use serde::Serialize;

use super::home::{self, MeshHome, Proc};
use super::Spread;
use crate::relay::RelayProcess;
use crate::vm_rss;

/// How long the nodes settle before a reading: the join connections the admin holds for a
/// few seconds after a join are closed by then, and allocator caches have filled.
const SETTLE: Duration = Duration::from_secs(6);
/// How long every node may take to list every other online.
const MESH_PATIENCE: Duration = Duration::from_secs(90);

/// What `memory` measured.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub members: usize,
    /// The admin's VmRSS: just up; with every member joined; restarted, with every member
    /// joined and none up; with all connected.
    pub admin_rss_fresh: u64,
    pub admin_rss_joined: u64,
    pub admin_rss_restarted: u64,
    pub admin_rss_connected: u64,
    /// (connected - restarted) / members.
    pub admin_bytes_per_member: f64,
    /// (joined - fresh) / members: invites, join connections (what the allocator kept of
    /// them) and roster entries.
    pub admin_bytes_per_join: f64,
    /// The members' own daemons, each connected to every other node.
    pub member_rss: Spread,
    pub anchor: Anchor,
}

/// A plain listener with one-connection peers.
#[derive(Debug, Serialize)]
pub(crate) struct Anchor {
    pub peers: usize,
    pub listener_rss_before: u64,
    pub listener_rss_after: u64,
    pub listener_bytes_per_peer: f64,
    /// Each `burrow ping` process holding one connection.
    pub peer_rss: Spread,
}

/// Runs it with `members` members.
pub(crate) fn run(burrow: &Path, members: usize, rt: &tokio::runtime::Runtime) -> Result<Report> {
    ensure!(members > 0, "--members must be at least 1");
    let stun = free_udp_pair()?;
    let relay = RelayProcess::start_with(
        burrow,
        4 * members + 64,
        &[
            "--stun",
            &stun.to_string(),
            // Every node is 127.0.0.1 here, and each looks up every other.
            "--registry-ip-rate",
            "0",
        ],
    )?;
    let relay_url = relay.url().to_string();
    let stun = stun.to_string();
    let node_args = ["--bind", "127.0.0.1:0", "--stun", &stun];
    let root = std::env::temp_dir().join(format!("burrow-bench-mesh-{}", std::process::id()));
    let up = |home: &MeshHome| -> Result<(Proc, ApiClient)> {
        let mut args = vec!["up", "--json"];
        args.extend(node_args);
        let mut p = Proc::spawn(burrow, home, "up", &args)?;
        let line = p.wait_for_line(Duration::from_secs(20), |l| l.contains("\"up\""))?;
        let api = home::api_of_up(&line)?;
        Ok((p, api))
    };

    let admin_home = MeshHome::new(&root, "admin")?;
    let mut init = std::process::Command::new(burrow);
    init.args(["init", "bench", "--relay", &relay_url, "--json"])
        .envs(admin_home.env());
    home::run_json(init, Duration::from_secs(20))?;
    let (admin, admin_api) = up(&admin_home)?;
    crate::server::sleep(SETTLE)?;
    let admin_rss_fresh = vm_rss(Some(admin.pid()))?;
    eprintln!("memory: admin up, {admin_rss_fresh} B; joining {members} members");

    let mut homes = Vec::new();
    for i in 1..=members {
        let token = rt.block_on(home::invite(&admin_api))?;
        let h = MeshHome::new(&root, &format!("m{i}"))?;
        let name = format!("m{i}");
        let mut join = std::process::Command::new(burrow);
        join.args(["join", &token, "--name", &name, "--json"])
            .args(node_args)
            .envs(h.env());
        let v = home::run_json(join, Duration::from_secs(60))?;
        ensure!(v["joined"] == true, "m{i} did not join: {v}");
        homes.push(h);
    }
    crate::server::sleep(SETTLE)?;
    let admin_rss_joined = vm_rss(Some(admin.pid()))?;
    admin.terminate(Duration::from_secs(10))?;
    let (admin, admin_api) = up(&admin_home)?;
    crate::server::sleep(SETTLE)?;
    let admin_rss_restarted = vm_rss(Some(admin.pid()))?;
    eprintln!(
        "memory: {members} joined: admin {admin_rss_joined} B, restarted {admin_rss_restarted} B; \
         starting the members"
    );

    let mut daemons = Vec::new();
    for h in &homes {
        daemons.push(up(h)?);
    }
    let started = Instant::now();
    let apis: Vec<&ApiClient> = std::iter::once(&admin_api)
        .chain(daemons.iter().map(|(_, a)| a))
        .collect();
    loop {
        crate::server::check_interrupted()?;
        let mut short = 0;
        for api in &apis {
            let online = rt
                .block_on(home::members(api))?
                .iter()
                .filter(|m| m.online && !m.me)
                .count();
            short += members.saturating_sub(online);
        }
        if short == 0 {
            break;
        }
        ensure!(
            started.elapsed() < MESH_PATIENCE,
            "after {MESH_PATIENCE:?}, {short} connections of the full mesh were still missing"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "memory: every node lists every other online after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    crate::server::sleep(SETTLE)?;
    let admin_rss_connected = vm_rss(Some(admin.pid()))?;
    let member_rss = daemons
        .iter()
        .map(|(p, _)| vm_rss(Some(p.pid())).map(|b| b as f64))
        .collect::<Result<Vec<_>>>()?;
    drop((daemons, admin));

    let anchor = anchor(burrow, &root, &relay_url, &node_args, members)?;
    drop(relay);
    let _ = std::fs::remove_dir_all(&root);
    Ok(Report {
        members,
        admin_rss_fresh,
        admin_rss_joined,
        admin_rss_restarted,
        admin_rss_connected,
        admin_bytes_per_member: (admin_rss_connected as f64 - admin_rss_restarted as f64)
            / members as f64,
        admin_bytes_per_join: (admin_rss_joined as f64 - admin_rss_fresh as f64) / members as f64,
        member_rss: Spread::of(member_rss),
        anchor,
    })
}

/// `burrow listen` with `peers` `burrow ping`s connected to it.
fn anchor(
    burrow: &Path,
    root: &Path,
    relay_url: &str,
    node_args: &[&str],
    peers: usize,
) -> Result<Anchor> {
    let h = MeshHome::new(root, "anchor")?;
    let key = h.path("listen.key");
    let key = key.to_str().context("a UTF-8 temp dir")?;
    let mut args = vec!["listen", "--json", "--relay", relay_url, "--key", key];
    args.extend(node_args);
    let mut listener = Proc::spawn(burrow, &h, "listen", &args)?;
    let first = listener.wait_for_line(Duration::from_secs(20), |l| l.contains("\"ticket\""))?;
    let v: serde_json::Value = serde_json::from_str(&first)?;
    let ticket = v["ticket"].as_str().context("no ticket")?.to_string();
    crate::server::sleep(SETTLE)?;
    let before = vm_rss(Some(listener.pid()))?;
    eprintln!("memory: anchor listener {before} B; connecting {peers} `burrow ping`s");
    let mut pings = Vec::new();
    for i in 0..peers {
        // Each its own key: pings sharing one would be one peer to the listener and the relay.
        let key = h.path(&format!("ping{i}.key"));
        let key = key.to_str().context("a UTF-8 temp dir")?;
        let mut args = vec![
            "ping",
            &ticket,
            "--count",
            "2",
            "--interval",
            "1h",
            "--key",
            key,
        ];
        args.extend(node_args);
        pings.push(Proc::spawn(burrow, &h, &format!("ping{i}"), &args)?);
    }
    for p in &mut pings {
        p.wait_for_line(Duration::from_secs(30), |l| l.starts_with("pong"))?;
    }
    let connected = listener
        .lines()
        .iter()
        .filter(|l| l.contains("\"connected\""))
        .count();
    ensure!(
        connected == peers,
        "the listener saw {connected} connections, not {peers}"
    );
    crate::server::sleep(SETTLE)?;
    let after = vm_rss(Some(listener.pid()))?;
    let peer_rss = pings
        .iter()
        .map(|p| vm_rss(Some(p.pid())).map(|b| b as f64))
        .collect::<Result<Vec<_>>>()?;
    Ok(Anchor {
        peers,
        listener_rss_before: before,
        listener_rss_after: after,
        listener_bytes_per_peer: (after as f64 - before as f64) / peers as f64,
        peer_rss: Spread::of(peer_rss),
    })
}

/// A loopback address whose UDP port and the next one are free (STUN serves on both).
fn free_udp_pair() -> Result<SocketAddr> {
    for _ in 0..100 {
        let a = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = a.local_addr()?.port();
        if port < u16::MAX && UdpSocket::bind((Ipv4Addr::LOCALHOST, port + 1)).is_ok() {
            return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        }
    }
    anyhow::bail!("no two free consecutive UDP ports on 127.0.0.1")
}
