//! The server commands, behind the `server` feature: `stun` and `relay` (burrow-relay) and
//! `dht-node`.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::path::Path;

use anyhow::{Context, Result};
use burrow::config::Config;
use burrow::dht::{DhtConfig, DhtDiscovery};
use burrow_relay::stun::{AltPort, StunOptions, StunService};
use burrow_relay::{RelayConfig, RelayFlags, RelayServer, RelaySettings, RELAY_PATH};
use serde::Deserialize;

use crate::server_runtime;

/// `burrow stun`'s flags.
#[derive(clap::Args)]
pub(crate) struct StunArgs {
    /// Primary address to listen on.
    #[arg(long, value_name = "IP:PORT", default_value = "0.0.0.0:3478")]
    listen: SocketAddr,
    /// Alternate IP address of this host, for CHANGE-REQUEST and OTHER-ADDRESS.
    #[arg(long, value_name = "IP")]
    alt_ip: Option<IpAddr>,
    /// STUN's second port [default: the STUN port + 1]. Without --alt-ip it is served on the
    /// same IP, which is enough to recognise a symmetric NAT.
    #[arg(long, value_name = "PORT")]
    alt_port: Option<u16>,
    /// Serve STUN on one port only (clients then cannot recognise a symmetric NAT by this
    /// server alone).
    #[arg(long, conflicts_with_all = ["alt_port", "alt_ip"])]
    no_alt_port: bool,
    /// Threads reading the primary socket (more than one contends for the socket; one
    /// answers about 1.5x coturn's rate on loopback, see bench/).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// `burrow dht-node`'s flags.
#[derive(clap::Args)]
pub(crate) struct DhtNodeArgs {
    /// UDP address to listen on (IPv4; the DHT library has no IPv6).
    #[arg(long, value_name = "IP:PORT", default_value = "0.0.0.0:6881")]
    bind: SocketAddrV4,
    /// Node to join through; repeat for several [default: Mainline's public bootstrap
    /// nodes].
    #[arg(
        long = "bootstrap",
        value_name = "HOST:PORT",
        conflicts_with = "no_bootstrap"
    )]
    bootstrap: Vec<String>,
    /// Join nobody: be the first node of a new, private DHT.
    #[arg(long)]
    no_bootstrap: bool,
    /// Print JSON lines: the address first, then one when bootstrapping is done.
    #[arg(long)]
    json: bool,
}

pub(crate) fn stun(args: StunArgs) -> Result<()> {
    let service = StunService::start(&StunOptions {
        listen: args.listen,
        alt_ip: args.alt_ip,
        alt_port: AltPort::from_settings(args.alt_port, args.no_alt_port)?,
        threads: args.threads,
    })?;
    for (role, addr) in service.local_addrs() {
        let what = match (role.alt_ip, role.alt_port) {
            (false, false) => "primary",
            (false, true) => "primary IP, alternate port",
            (true, false) => "alternate IP, primary port",
            (true, true) => "alternate",
        };
        eprintln!("STUN listening on {addr} ({what})");
    }
    server_runtime()?.block_on(async {
        wait_for_shutdown_signal().await;
    });
    let stats = service.stats();
    use std::sync::atomic::Ordering::Relaxed;
    eprintln!(
        "STUN stopped: {} responses, {} error responses, {} not STUN, {} malformed",
        stats.responses.load(Relaxed),
        stats.errors.load(Relaxed),
        stats.not_stun.load(Relaxed),
        stats.malformed.load(Relaxed),
    );
    service.shutdown();
    Ok(())
}

/// `burrow relay`: the config file's `[relay]` table with `flags` laid over it.
pub(crate) fn relay(flags: RelayFlags, config_path: &Path) -> Result<()> {
    let table = Config::load(config_path)?.relay.unwrap_or_default();
    let mut settings = RelaySettings::deserialize(table)
        .with_context(|| format!("config file {}: [relay]", config_path.display()))?;
    flags.apply(&mut settings)?;
    let config = RelayConfig::from_settings(&settings)?;
    server_runtime()?.block_on(async {
        let server = RelayServer::start(config).await?;
        eprintln!(
            "relay listening on {} (clients use {}, WebSocket at {})",
            server.local_addr(),
            server.url(),
            RELAY_PATH
        );
        for addr in server.stun_addrs() {
            eprintln!("STUN listening on {addr}");
        }
        if let (Some(ip), Some(addr)) = (server.turn_relay_ip(), server.stun_addrs().first()) {
            eprintln!("TURN on {addr} (UDP), relayed addresses on {ip}");
        }
        if let Some(records) = server.records() {
            eprintln!(
                "registry at {}/records and {}/namespaces ({} records loaded)",
                server.url(),
                server.url(),
                records.len()
            );
        }
        wait_for_shutdown_signal().await;
        eprintln!("relay shutting down: telling clients to reconnect");
        server.shutdown().await;
        anyhow::Ok(())
    })
}

pub(crate) fn dht_node(args: DhtNodeArgs) -> Result<()> {
    let bootstrap = if args.no_bootstrap {
        Vec::new()
    } else if args.bootstrap.is_empty() {
        DhtConfig::default().bootstrap
    } else {
        args.bootstrap
    };
    server_runtime()?.block_on(run_dht_node(args.bind, bootstrap, args.json))
}

async fn run_dht_node(bind: SocketAddrV4, bootstrap: Vec<String>, json: bool) -> Result<()> {
    let config = DhtConfig {
        bootstrap: bootstrap.clone(),
        bind,
        server: true,
        ..DhtConfig::default()
    };
    let node = DhtDiscovery::start(config).await?;
    let addr = node.local_addr();
    if json {
        let out = serde_json::json!({ "addr": addr.to_string(), "bootstrap": bootstrap });
        println!("{out}");
    } else {
        eprintln!("DHT node listening on {addr} (server mode)");
    }
    let report = async {
        // A first node of a new DHT has nobody to find until others join it.
        let bootstrapped = !bootstrap.is_empty() && node.bootstrapped().await;
        let known = node.known_nodes().await.len();
        if json {
            let out = serde_json::json!({
                "event": "bootstrapped",
                "ok": bootstrapped,
                "known_nodes": known,
            });
            println!("{out}");
        } else if bootstrapped {
            eprintln!("joined the DHT: {known} nodes known");
        } else if !bootstrap.is_empty() {
            eprintln!("warning: no DHT node answered yet; still trying");
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = report => {}
        _ = wait_for_shutdown_signal() => {}
    }
    Ok(())
}

async fn wait_for_shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
