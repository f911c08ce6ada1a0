//! The `burrow` command: a thin layer that parses arguments, calls the library and prints.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use burrow::config::{Config, RelayFileConfig};
use burrow::dht::{DhtConfig, DhtDiscovery};
use burrow::netcheck::{self, Report};
use burrow::relay_client::RelayUrl;
use burrow::ticket::Ticket;
use burrow_relay::stun::{AltPort, StunOptions, StunService};
use clap::{Parser, Subcommand};

mod discover;
mod peer;

/// burrow: find peers by key and reach them through any NAT.
#[derive(Parser)]
#[command(name = "burrow", version, about, long_about = None)]
struct Cli {
    /// Log more (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Configuration file [default: $BURROW_CONFIG or ~/.config/burrow/config.toml]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a STUN server (RFC 8489) with NAT behaviour discovery: on a second port by
    /// default (clients behind a symmetric NAT can tell), and with --alt-ip the whole of
    /// RFC 5780.
    Stun {
        /// Primary address to listen on.
        #[arg(long, value_name = "IP:PORT", default_value = "0.0.0.0:3478")]
        listen: SocketAddr,
        /// Alternate IP address of this host, for CHANGE-REQUEST and OTHER-ADDRESS.
        #[arg(long, value_name = "IP")]
        alt_ip: Option<IpAddr>,
        #[command(flatten)]
        alt_port: AltPortArgs,
        /// Threads reading the primary socket (more than one contends for the socket; one
        /// answers about 1.5x coturn's rate on loopback, see bench/).
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Run a relay: forwards end-to-end encrypted datagrams between keys over WebSocket
    /// (GET /relay), with GET /health and GET /metrics, the bootstrap registry of signed node
    /// records (/records, /namespaces), and optionally a STUN server. Every
    /// setting can also go in the config file's [relay] table; flags override it.
    Relay(Box<RelayArgs>),
    /// Report the public address, NAT mapping and filtering, NAT type and hairpinning.
    Netcheck {
        /// STUN server as HOST:PORT; repeat for several [default: $BURROW_STUN_SERVERS, the
        /// config file's stun_servers, or public servers].
        #[arg(long = "stun", value_name = "HOST:PORT")]
        stun: Vec<String>,
        /// Finish within this time (e.g. 500ms, 3s).
        #[arg(long, value_name = "DUR", default_value = "3s", value_parser = parse_duration)]
        timeout: Duration,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Accept connections: print a ticket, then serve echo/sink streams and pings.
    Listen {
        /// Relay to stay reachable through (http(s)://host:port); repeat for several.
        #[arg(long = "relay", value_name = "URL")]
        relays: Vec<RelayUrl>,
        #[command(flatten)]
        node: peer::NodeArgs,
        /// Do not publish this node's signed record (registries, DHT) nor announce its
        /// namespaces.
        #[arg(long)]
        no_publish: bool,
        /// List this node under namespace NS for `burrow peers`: at the registries, and with
        /// --dht-bootstrap in the DHT's directory of NS too; repeat for several.
        #[arg(long = "namespace", value_name = "NS")]
        namespaces: Vec<String>,
        /// Close the namespaces with the secret in FILE (its bytes, less a final newline):
        /// they go to the DHT only, never to the registries, whose listings are public.
        #[arg(
            long,
            value_name = "FILE",
            requires = "namespaces",
            requires = "dht_bootstrap"
        )]
        namespace_secret_file: Option<PathBuf>,
        /// Mainline DHT node to join through (HOST:PORT; `burrow dht-node` runs one); repeat
        /// for several. Without it the DHT is not used.
        #[arg(long = "dht-bootstrap", value_name = "HOST:PORT")]
        dht_bootstrap: Vec<String>,
        #[command(flatten)]
        mdns: discover::MdnsArgs,
        /// Print JSON lines: the ticket first, then one per event.
        #[arg(long)]
        json: bool,
    },
    /// List the nodes under a namespace, from the registries and the DHT's directory of it:
    /// one row per node, with the sources that listed it.
    Peers {
        /// The namespace (for registries: 1 to 64 of A-Z a-z 0-9 . _ - :).
        #[arg(long)]
        namespace: String,
        /// Registry to ask (a relay's address); repeat for several.
        #[arg(long = "registry", value_name = "URL")]
        registries: Vec<RelayUrl>,
        /// Mainline DHT node to join through (HOST:PORT); repeat for several. Lists the DHT's
        /// directory of the namespace and looks up the records of its members.
        #[arg(long = "dht-bootstrap", value_name = "HOST:PORT")]
        dht_bootstrap: Vec<String>,
        /// The closed namespace's secret, as on `listen` (DHT only: registries never list
        /// closed namespaces).
        #[arg(
            long,
            value_name = "FILE",
            requires = "dht_bootstrap",
            conflicts_with = "registries"
        )]
        namespace_secret_file: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Find how to reach a node by its id: asks each registry, the DHT and the LAN (mDNS),
    /// prints every answer with its latency, and a ticket for `burrow connect`.
    Resolve {
        /// The node id.
        node_id: burrow::NodeId,
        /// Registry to ask (a relay's address, http(s)://host:port); repeat for several.
        #[arg(long = "registry", value_name = "URL")]
        registries: Vec<RelayUrl>,
        /// Mainline DHT node to join through (HOST:PORT; `burrow dht-node` runs one); repeat
        /// for several. Without it the DHT is not used.
        #[arg(long = "dht-bootstrap", value_name = "HOST:PORT")]
        dht_bootstrap: Vec<String>,
        #[command(flatten)]
        mdns: discover::MdnsArgs,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Connect to a ticket: report the time to first byte, the path and the time until it
    /// went direct, and optionally transfer bytes.
    Connect {
        /// The listener's ticket, or its node id (then found through --registry, the DHT or
        /// on the LAN by mDNS).
        target: String,
        /// Registry to find a node id's addresses at (a relay's address); repeat for several.
        #[arg(long = "registry", value_name = "URL")]
        registries: Vec<RelayUrl>,
        /// Mainline DHT node to join through (HOST:PORT; `burrow dht-node` runs one); repeat
        /// for several. Without it the DHT is not used.
        #[arg(long = "dht-bootstrap", value_name = "HOST:PORT")]
        dht_bootstrap: Vec<String>,
        #[command(flatten)]
        mdns: discover::MdnsArgs,
        /// Bytes to send to the listener's sink (reports throughput).
        #[arg(long, value_name = "N", default_value_t = 0)]
        bytes: u64,
        /// How long to wait for a direct path before reporting (or transferring) anyway.
        #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
        direct_timeout: Duration,
        #[command(flatten)]
        node: peer::NodeArgs,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Ping a ticket: the path (direct address or relay) and the round-trip time of each ping.
    Ping {
        /// The listener's ticket.
        ticket: Ticket,
        /// Pings to send.
        #[arg(long, short = 'c', default_value_t = 5)]
        count: u64,
        /// Time between pings.
        #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
        #[command(flatten)]
        node: peer::NodeArgs,
    },
    /// Run a Mainline DHT node in server mode (BEP 5/44): a bootstrap node for a private DHT,
    /// or one more node of the public one. Prints its address, then runs until Ctrl-C.
    DhtNode {
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
    },
    /// Print this node's id, creating its key on first use.
    Id {
        /// Secret key file [default: $BURROW_KEY or ~/.config/burrow/key].
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct RelayArgs {
    /// TCP address for HTTP(S) and WebSocket.
    #[arg(long, value_name = "IP:PORT")]
    listen: Option<SocketAddr>,
    /// Also serve STUN on this UDP address.
    #[arg(long, value_name = "IP:PORT")]
    stun: Option<SocketAddr>,
    /// Alternate IP of this host for RFC 5780 STUN (needs --stun).
    #[arg(long, value_name = "IP")]
    alt_ip: Option<IpAddr>,
    #[command(flatten)]
    alt_port: AltPortArgs,
    /// TLS certificate chain, PEM (serve https/wss).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key, PEM.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Maximum WebSocket sessions at once [default: 10000].
    #[arg(long, value_name = "N")]
    max_clients: Option<usize>,
    /// Maximum TCP connections from one source IP [default: 64].
    #[arg(long, value_name = "N")]
    max_conns_per_ip: Option<usize>,
    /// Bytes per second one client may send; 0 = unlimited [default: 12500000, 100 Mbit/s].
    #[arg(long, value_name = "BYTES")]
    client_rate: Option<u64>,
    /// Bytes one client may send in a burst [default: 2097152].
    #[arg(long, value_name = "BYTES")]
    client_burst: Option<u64>,
    /// Time from connect to authenticated [default: 10s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    handshake_timeout: Option<Duration>,
    /// Close clients silent this long [default: 60s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    idle_timeout: Option<Duration>,
    /// Largest WebSocket message from a client, bytes [default: 65569].
    #[arg(long, value_name = "BYTES")]
    max_frame: Option<usize>,
    /// Frames queued for one client before dropping [default: 256].
    #[arg(long, value_name = "N")]
    client_queue_frames: Option<usize>,
    /// Bytes queued for one client before dropping [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    client_queue_bytes: Option<usize>,
    /// Do not serve the bootstrap registry (/records, /namespaces).
    #[arg(long)]
    no_registry: bool,
    /// Keep registry records in this file across restarts (loaded at start, written
    /// periodically and at shutdown) [default: memory only].
    #[arg(long, value_name = "FILE")]
    records_snapshot: Option<PathBuf>,
    /// How often the records snapshot is written, when records changed [default: 60s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    registry_snapshot_interval: Option<Duration>,
    /// How often expired records are dropped [default: 30s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    registry_sweep_interval: Option<Duration>,
    /// Records the registry holds at once [default: 1000000].
    #[arg(long, value_name = "N")]
    registry_max_records: Option<usize>,
    /// Records listed under one namespace [default: 100000].
    #[arg(long, value_name = "N")]
    registry_max_per_namespace: Option<usize>,
    /// Namespaces one record may be listed under [default: 8].
    #[arg(long, value_name = "N")]
    registry_max_namespaces: Option<usize>,
    /// Longest a record is held after registering [default: 24h].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    registry_max_ttl: Option<Duration>,
    /// Largest registry request body, bytes [default: 4096].
    #[arg(long, value_name = "BYTES")]
    registry_max_body: Option<usize>,
    /// Registry requests per second per source IP; 0 = unlimited [default: 20].
    #[arg(long, value_name = "PER_SEC")]
    registry_ip_rate: Option<f64>,
    /// Registry request burst per source IP [default: 100].
    #[arg(long, value_name = "N")]
    registry_ip_burst: Option<u32>,
    /// Registry writes per second per key; 0 = unlimited [default: 0.2].
    #[arg(long, value_name = "PER_SEC")]
    registry_key_rate: Option<f64>,
    /// Registry write burst per key [default: 10].
    #[arg(long, value_name = "N")]
    registry_key_burst: Option<u32>,
    /// Records per page of a namespace listing, at most [default: 100].
    #[arg(long, value_name = "N")]
    registry_page_size: Option<usize>,
}

/// STUN's second port, for `stun` and `relay`.
#[derive(clap::Args)]
struct AltPortArgs {
    /// STUN's second port [default: the STUN port + 1]. Without --alt-ip it is served on the
    /// same IP, which is enough to recognise a symmetric NAT.
    #[arg(long, value_name = "PORT")]
    alt_port: Option<u16>,
    /// Serve STUN on one port only (clients then cannot recognise a symmetric NAT by this
    /// server alone).
    #[arg(long, conflicts_with_all = ["alt_port", "alt_ip"])]
    no_alt_port: bool,
}

impl AltPortArgs {
    fn alt_port(&self) -> AltPort {
        match (self.alt_port, self.no_alt_port) {
            (_, true) => AltPort::Off,
            (Some(port), false) => AltPort::Port(port),
            (None, false) => AltPort::Next,
        }
    }
}

impl RelayArgs {
    fn settings(self) -> RelayFileConfig {
        RelayFileConfig {
            listen: self.listen,
            stun: self.stun,
            alt_ip: self.alt_ip,
            alt_port: self.alt_port.alt_port,
            // Only a flag that was given overrides the file.
            no_alt_port: self.alt_port.no_alt_port.then_some(true),
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            max_clients: self.max_clients,
            max_conns_per_ip: self.max_conns_per_ip,
            client_rate: self.client_rate,
            client_burst: self.client_burst,
            handshake_timeout: self.handshake_timeout,
            idle_timeout: self.idle_timeout,
            max_frame: self.max_frame,
            client_queue_frames: self.client_queue_frames,
            client_queue_bytes: self.client_queue_bytes,
            // Only a flag that was given overrides the file.
            no_registry: self.no_registry.then_some(true),
            records_snapshot: self.records_snapshot,
            registry_snapshot_interval: self.registry_snapshot_interval,
            registry_sweep_interval: self.registry_sweep_interval,
            registry_max_records: self.registry_max_records,
            registry_max_per_namespace: self.registry_max_per_namespace,
            registry_max_namespaces: self.registry_max_namespaces,
            registry_max_ttl: self.registry_max_ttl,
            registry_max_body: self.registry_max_body,
            registry_ip_rate: self.registry_ip_rate,
            registry_ip_burst: self.registry_ip_burst,
            registry_key_rate: self.registry_key_rate,
            registry_key_burst: self.registry_key_burst,
            registry_page_size: self.registry_page_size,
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write durations like 500ms, 15s, 2m)"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn run(cli: Cli) -> Result<()> {
    let config_path = cli.config.clone().unwrap_or_else(Config::default_path);
    match cli.command {
        Command::Stun {
            listen,
            alt_ip,
            alt_port,
            threads,
        } => stun(listen, alt_ip, alt_port.alt_port(), threads),
        Command::Relay(args) => {
            let file = Config::load(&config_path)?.relay.unwrap_or_default();
            relay(file.overridden_by(args.settings()))
        }
        Command::Netcheck {
            stun,
            timeout,
            json,
        } => {
            let config = Config::load(&config_path)?;
            let options = netcheck::Options {
                servers: config.stun_servers(&stun),
                timeout,
            };
            let report = runtime()?.block_on(netcheck::cached(&options))?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print_report(&report);
            }
            Ok(())
        }
        Command::Listen {
            relays,
            node,
            no_publish,
            namespaces,
            namespace_secret_file,
            dht_bootstrap,
            mdns,
            json,
        } => {
            let secret = discover::namespace_secret(namespace_secret_file.as_deref())?;
            let publish = peer::Publish {
                records: !no_publish,
                namespaces,
                namespace_secret: secret,
                dht_bootstrap,
                mdns: mdns.enabled(),
            };
            runtime()?.block_on(peer::listen(node, relays, publish, json))
        }
        Command::Peers {
            namespace,
            registries,
            dht_bootstrap,
            namespace_secret_file,
            json,
        } => {
            let secret = discover::namespace_secret(namespace_secret_file.as_deref())?;
            runtime()?.block_on(discover::peers(
                namespace,
                registries,
                dht_bootstrap,
                secret,
                json,
            ))
        }
        Command::Resolve {
            node_id,
            registries,
            dht_bootstrap,
            mdns,
            json,
        } => runtime()?.block_on(discover::resolve(
            node_id,
            registries,
            dht_bootstrap,
            mdns.enabled(),
            json,
        )),
        Command::Connect {
            target,
            registries,
            dht_bootstrap,
            mdns,
            bytes,
            direct_timeout,
            node,
            json,
        } => runtime()?.block_on(async {
            let mdns = mdns
                .enabled()
                .then(|| discover::mdns_config(node.bind.ip()));
            let ticket = discover::target(&target, registries, &dht_bootstrap, mdns).await?;
            peer::connect(node, ticket, bytes, direct_timeout, json).await
        }),
        Command::Ping {
            ticket,
            count,
            interval,
            node,
        } => runtime()?.block_on(peer::ping(node, ticket, count, interval)),
        Command::DhtNode {
            bind,
            bootstrap,
            no_bootstrap,
            json,
        } => {
            let bootstrap = if no_bootstrap {
                Vec::new()
            } else if bootstrap.is_empty() {
                DhtConfig::default().bootstrap
            } else {
                bootstrap
            };
            runtime()?.block_on(dht_node(bind, bootstrap, json))
        }
        Command::Id { key, json } => {
            let path = key.unwrap_or_else(burrow::keyfile::default_path);
            let key = burrow::keyfile::load_or_create(&path)?;
            if json {
                let out = serde_json::json!({
                    "node_id": key.node_id().to_string(),
                    "key_file": path.display().to_string(),
                });
                println!("{out}");
            } else {
                println!("{}", key.node_id());
            }
            Ok(())
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn stun(
    listen: SocketAddr,
    alt_ip: Option<IpAddr>,
    alt_port: AltPort,
    threads: usize,
) -> Result<()> {
    let service = StunService::start(&StunOptions {
        listen,
        alt_ip,
        alt_port,
        threads,
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
    runtime()?.block_on(async {
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

fn relay(settings: RelayFileConfig) -> Result<()> {
    let config = burrow_relay::RelayConfig::from_settings(&settings)?;
    runtime()?.block_on(async {
        let server = burrow_relay::RelayServer::start(config).await?;
        eprintln!(
            "relay listening on {} (clients use {}, WebSocket at {})",
            server.local_addr(),
            server.url(),
            burrow_relay::RELAY_PATH
        );
        for addr in server.stun_addrs() {
            eprintln!("STUN listening on {addr}");
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

async fn dht_node(bind: SocketAddrV4, bootstrap: Vec<String>, json: bool) -> Result<()> {
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

fn print_report(r: &Report) {
    let or_dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    println!("UDP:            {}", if r.udp { "yes" } else { "no" });
    println!("Public address: {}", or_dash(&r.public_addr));
    if r.public_addr_v6.is_some() {
        println!("Public IPv6:    {}", or_dash(&r.public_addr_v6));
    }
    println!("NAT type:       {}", r.nat_type);
    println!("  mapping:      {}", r.mapping);
    println!("  filtering:    {}", r.filtering);
    let hairpin = match r.hairpinning {
        Some(true) => "yes",
        Some(false) => "no",
        None => "not tested",
    };
    println!("Hairpinning:    {hairpin}");
    println!("Local addrs:    {}", r.local_addrs.join(", "));
    println!();
    println!("{:<28} {:>9}  {:<24} ERROR", "SERVER", "RTT", "MAPPED");
    for s in &r.servers {
        let name = match &s.resolved_addr {
            Some(a) if *a != s.addr => format!("{} ({a})", s.addr),
            _ => s.addr.clone(),
        };
        let rtt = s
            .rtt_ms
            .map(|ms| format!("{ms:.1}ms"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<28} {:>9}  {:<24} {}",
            name,
            rtt,
            or_dash(&s.mapped_addr),
            s.error.clone().unwrap_or_default()
        );
    }
    println!();
    if let Some(why) = r.failure_summary() {
        println!("{why}");
    }
    println!("took {} ms", r.duration_ms);
}
