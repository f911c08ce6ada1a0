//! The `burrow` command: a thin layer that parses arguments, calls the library and prints.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use burrow::config::Config;
use burrow::netcheck::{self, Report};
use burrow::relay_client::RelayUrl;
use burrow::ticket::Ticket;
use clap::{Parser, Subcommand};

mod discover;
mod mesh;
#[cfg(feature = "webrtc")]
mod pages;
mod peer;
mod ping;
#[cfg(feature = "server")]
mod server;

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
    #[cfg(feature = "server")]
    Stun(server::StunArgs),
    /// Run a relay: forwards end-to-end encrypted datagrams between keys over WebSocket
    /// (GET /relay), with GET /health and GET /metrics, the bootstrap registry of signed node
    /// records (/records, /namespaces), and optionally a STUN server. Every
    /// setting can also go in the config file's [relay] table; flags override it.
    #[cfg(feature = "server")]
    Relay(burrow_relay::RelayFlags),
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
        #[command(flatten)]
        dht: discover::DhtArgs,
        #[command(flatten)]
        mdns: discover::MdnsArgs,
        /// Answer burrow.js pages too (through the relay, then over WebRTC on this node's UDP
        /// port), echoing each message back: a peer for browser tests and demos. Needs a
        /// build with the `webrtc` feature.
        #[arg(long)]
        webrtc: bool,
        /// Print JSON lines: the ticket first, then one per event.
        #[arg(long)]
        json: bool,
    },
    /// List the mesh's other members as the running `burrow up` reaches them (online, path,
    /// address, RTT, NAT, last seen); or with --namespace, the nodes under a namespace, from
    /// the registries and the DHT's directory of it, one row per node with the sources that
    /// listed it.
    Peers {
        /// The namespace (for registries: 1 to 64 of A-Z a-z 0-9 . _ - :).
        #[arg(long)]
        namespace: Option<String>,
        /// Where to ask: the registries' listings, and the DHT's directory of the namespace
        /// (with the records of its members).
        #[command(flatten)]
        lookup: discover::LookupArgs,
        /// The closed namespace's secret, as on `listen` (DHT only: registries never list
        /// closed namespaces).
        #[arg(
            long,
            value_name = "FILE",
            requires = "namespace",
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
        #[command(flatten)]
        lookup: discover::LookupArgs,
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
        #[command(flatten)]
        lookup: discover::LookupArgs,
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
    /// Ping a mesh member by name or node id (through the running `burrow up`), or a
    /// listener's ticket: the path (direct address or relay) and round trip of each ping.
    Ping {
        /// A member's name or node id, or a listener's ticket.
        target: String,
        /// Pings to send.
        #[arg(long, short = 'c', default_value_t = 5)]
        count: u64,
        /// Time between pings.
        #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
        /// Stop at the first pong over a direct path; fail if none of the pings gets one.
        #[arg(long)]
        until_direct: bool,
        /// Print one JSON object per ping.
        #[arg(long)]
        json: bool,
        /// How to dial a ticket (not used for members: the daemon pings them).
        #[command(flatten)]
        node: peer::NodeArgs,
    },
    /// Run a Mainline DHT node in server mode (BEP 5/44): a bootstrap node for a private DHT,
    /// or one more node of the public one. Prints its address, then runs until Ctrl-C.
    #[cfg(feature = "server")]
    DhtNode(server::DhtNodeArgs),
    /// Create a mesh: a mesh key, and this node its first member and admin.
    Init {
        /// The mesh's name.
        name: String,
        /// This node's name in the mesh [default: the host's name].
        #[arg(long = "name", value_name = "NAME")]
        member: Option<String>,
        /// Relay the members meet at (http(s)://host:port); repeat for several.
        #[arg(long = "relay", value_name = "URL", required = true)]
        relays: Vec<RelayUrl>,
        #[command(flatten)]
        mesh: mesh::MeshArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run this node of its mesh (alias: serve): connections to every member, and the local
    /// API the other mesh commands use. Runs until Ctrl-C or SIGTERM.
    #[command(alias = "serve")]
    Up {
        #[command(flatten)]
        mesh: mesh::MeshArgs,
        #[command(flatten)]
        up: mesh::UpArgs,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// The running `burrow up`'s status: node, mesh, NAT type, addresses, relays, members
    /// online, uptime.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop the running `burrow up` cleanly, and wait (at most 5 s) until it is gone.
    Down {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print an invite token for one more node (asks the running `burrow up`, an admin).
    Invite {
        /// How long the invite stays valid.
        #[arg(long, value_name = "DUR", default_value = "24h", value_parser = parse_duration)]
        expires: Duration,
        /// How many nodes may join with it.
        #[arg(long, default_value_t = 1)]
        uses: u16,
        /// Print the token only, without the short code (MESH-XXXX-XXXX-XXXX) that also
        /// redeems it (the code lists this node at its relays' registries while it lives;
        /// three wrong tries burn it).
        #[arg(long)]
        no_code: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Join a mesh with an invite token or short code: connects to the inviter and writes this
    /// node's membership; then run `burrow up`.
    Join {
        /// The invite token (burrowinvite...) or short code (MESH-XXXX-XXXX-XXXX).
        token: String,
        /// Relay where the inviter of a short code is found (a token names its own).
        #[arg(long = "relay", value_name = "URL")]
        relays: Vec<RelayUrl>,
        /// This node's name in the mesh [default: its short node id].
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        mesh: mesh::MeshArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the mesh's members: online or not, path, address (asks the running `burrow up`).
    Members {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Throw a member out of the mesh, everywhere (asks the running `burrow up`, an admin).
    Kick {
        /// The member's name or node id.
        member: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Let the mesh's members reach a TCP port on this machine's 127.0.0.1 (asks the running
    /// `burrow up`; kept across restarts). With no port, list the ports exposed.
    Expose {
        /// The port.
        port: Option<u16>,
        /// What it is, for people.
        #[arg(long = "as", value_name = "NAME")]
        name: Option<String>,
        /// Stop exposing the port (connections under way go on).
        #[arg(long, requires = "port")]
        off: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Listen on a local address and carry each TCP connection to a member's exposed port
    /// (asks the running `burrow up`; kept across restarts). The address is by default the
    /// member's stable one, 127.77.X.Y:PORT from its member number, the same on every machine.
    /// With no MEMBER:PORT, list the forwards.
    Forward {
        /// The member (name or node id) and its exposed port.
        #[arg(value_name = "MEMBER:PORT")]
        target: Option<String>,
        /// Where to listen instead of the stable address (IP:PORT; port 0 picks one).
        #[arg(long, value_name = "ADDR")]
        local: Option<std::net::SocketAddr>,
        /// Stop the forward(s) to MEMBER:PORT (connections under way go on).
        #[arg(long, requires = "target")]
        off: bool,
        /// Print JSON.
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

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write durations like 500ms, 15s, 2m)"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, as the contract says, though some causes (TOML's) span several.
            let e = format!("{e:#}");
            let lines: Vec<&str> = e.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            eprintln!("error: {}", lines.join(" "));
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
        #[cfg(feature = "server")]
        Command::Stun(args) => server::stun(args),
        #[cfg(feature = "server")]
        Command::Relay(flags) => server::relay(flags, &config_path),
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
            dht,
            mdns,
            webrtc,
            json,
        } => {
            let secret = discover::namespace_secret(namespace_secret_file.as_deref())?;
            let publish = peer::Publish {
                records: !no_publish,
                namespaces,
                namespace_secret: secret,
                dht_bootstrap: dht.dht_bootstrap,
                mdns: mdns.enabled(),
            };
            runtime()?.block_on(peer::listen(node, relays, publish, webrtc, json))
        }
        Command::Peers {
            namespace,
            lookup,
            namespace_secret_file,
            json,
        } => {
            let Some(namespace) = namespace else {
                if !lookup.registries.is_empty() || !lookup.dht.dht_bootstrap.is_empty() {
                    anyhow::bail!("--registry and --dht-bootstrap look up a namespace: give --namespace NS too");
                }
                return runtime()?.block_on(mesh::peers(json));
            };
            let secret = discover::namespace_secret(namespace_secret_file.as_deref())?;
            runtime()?.block_on(discover::peers(namespace, lookup, secret, json))
        }
        Command::Resolve {
            node_id,
            lookup,
            mdns,
            json,
        } => runtime()?.block_on(discover::resolve(node_id, lookup, mdns.enabled(), json)),
        Command::Connect {
            target,
            lookup,
            mdns,
            bytes,
            direct_timeout,
            node,
            json,
        } => runtime()?.block_on(async {
            let mdns = mdns
                .enabled()
                .then(|| burrow::mdns::MdnsConfig::for_bind(node.bind.ip()));
            let ticket = discover::target(&target, lookup, mdns).await?;
            peer::connect(node, ticket, bytes, direct_timeout, json).await
        }),
        Command::Ping {
            target,
            count,
            interval,
            until_direct,
            json,
            node,
        } => {
            let opts = ping::PingOptions {
                count,
                interval,
                until_direct,
                json,
            };
            match target.parse::<Ticket>() {
                Ok(ticket) => runtime()?.block_on(peer::ping(node, ticket, opts)),
                Err(e) => runtime()?.block_on(mesh::ping(&target, e, opts)),
            }
        }
        #[cfg(feature = "server")]
        Command::DhtNode(args) => server::dht_node(args),
        Command::Init {
            name,
            member,
            relays,
            mesh,
            json,
        } => mesh::init(name, member, relays, mesh, json),
        Command::Up { mesh, up, json } => runtime()?.block_on(mesh::up(mesh, up, json)),
        Command::Status { json } => runtime()?.block_on(mesh::status(json)),
        Command::Down { json } => runtime()?.block_on(mesh::down(json)),
        Command::Invite {
            expires,
            uses,
            no_code,
            json,
        } => runtime()?.block_on(mesh::invite(expires, uses, !no_code, json)),
        Command::Join {
            token,
            relays,
            name,
            mesh,
            json,
        } => runtime()?.block_on(mesh::join_mesh(token, relays, name, mesh, json)),
        Command::Members { json } => runtime()?.block_on(mesh::members(json)),
        Command::Kick { member, json } => runtime()?.block_on(mesh::kick(member, json)),
        Command::Expose {
            port,
            name,
            off,
            json,
        } => runtime()?.block_on(mesh::expose(port, name, off, json)),
        Command::Forward {
            target,
            local,
            off,
            json,
        } => runtime()?.block_on(mesh::forward(target, local, off, json)),
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

/// The runtime of a node's commands (`up`, `listen`, `connect`, ...): one thread. A node's
/// work is one QUIC endpoint whose driver is serial anyway, and on one thread its forwarded
/// bytes move between QUIC and TCP without waking another thread per packet (the forward
/// bench: 0.42 → 0.51 of a QUIC stream, 3.5 → 2.9 CPU-s per GB, against two workers).
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The runtime of the servers (`relay`, `stun`, `dht-node`), whose many clients are
/// independent: two workers.
fn server_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
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
