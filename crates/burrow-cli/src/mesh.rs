//! The mesh commands: `init`, `up`, `invite`, `join`, `members`, `kick`, `peers`, `status`,
//! `ping NAME` and `down`. `up` runs the node and its local API; the others (but `init` and
//! `join`) ask it through that API.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use burrow::api::{default_socket_path, ApiClient, ApiConfig, Status, TcpOptions};
use burrow::dht::DhtConfig;
use burrow::mesh::lobby::{JoinAnswer, Lobby};
use burrow::mesh::node::{join_any, MeshNode, NodeOptions};
use burrow::mesh::state::{default_dir, MeshState, StateError};
use burrow::relay_client::RelayUrl;
use serde_json::{json, Value};
use tokio::signal::unix::{signal, SignalKind};

use crate::ping::PingOptions;

/// Where a node keeps its mesh, and how it binds.
#[derive(clap::Args, Clone)]
pub(crate) struct MeshArgs {
    /// The mesh state directory [default: mesh in $XDG_STATE_HOME/burrow or
    /// ~/.local/state/burrow].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// STUN server as IP:PORT; repeat for several [default: port 3478 on each relay's host].
    #[arg(long = "stun", value_name = "IP:PORT")]
    stun: Vec<SocketAddr>,
    /// Local UDP address to bind (IPv4).
    #[arg(long, value_name = "IP:PORT", default_value = "0.0.0.0:0")]
    bind: SocketAddr,
    // Members are also published in and found in the DHT when it is given.
    #[command(flatten)]
    dht: crate::discover::DhtArgs,
    // Members are found on the LAN (on the interface of --bind) unless it is off.
    #[command(flatten)]
    mdns: crate::discover::MdnsArgs,
}

impl MeshArgs {
    fn dir(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(default_dir)
    }

    async fn options(&self, relays: &[RelayUrl]) -> NodeOptions {
        NodeOptions {
            bind_v4: self.bind,
            bind_v6: self
                .bind
                .ip()
                .is_unspecified()
                .then(|| "[::]:0".parse().expect("valid")),
            stun_servers: crate::peer::stun_servers(&self.stun, relays).await,
            dht: (!self.dht.dht_bootstrap.is_empty()).then(|| DhtConfig {
                bootstrap: self.dht.dht_bootstrap.clone(),
                ..Default::default()
            }),
            mdns: self.mdns.enabled(),
            ..Default::default()
        }
    }
}

/// How `burrow up` runs, beside where its mesh is.
#[derive(clap::Args, Clone)]
pub(crate) struct UpArgs {
    /// Exit (cleanly, as on SIGTERM) when the process that started this one exits: for a
    /// daemon run by a program, which may die without stopping it.
    #[arg(long)]
    exit_with_parent: bool,
    /// Also serve the local API on 127.0.0.1:PORT (0: any free port), where every request
    /// needs the bearer token in the state directory's api-token file (created 0600).
    #[arg(long, value_name = "127.0.0.1:PORT")]
    api_listen: Option<SocketAddr>,
}

/// `burrow init NAME`.
pub(crate) fn init(
    name: String,
    member: Option<String>,
    relays: Vec<RelayUrl>,
    args: MeshArgs,
    json_out: bool,
) -> Result<()> {
    if relays.is_empty() {
        anyhow::bail!("a mesh needs a relay: give --relay URL (members find each other there)");
    }
    let state = MeshState::init(&args.dir(), &name, member.as_deref(), relays)?;
    let out = json!({"mesh": state.name, "mesh_id": state.mesh_id.to_string(),
        "node_id": state.node_key.node_id().to_string(), "dir": state.dir.display().to_string()});
    if json_out {
        println!("{out}");
    } else {
        println!("created mesh {} ({})", state.name, state.mesh_id);
        println!("this node is its first admin: run `burrow up`, then `burrow invite`");
    }
    Ok(())
}

/// `burrow up`: runs until SIGINT, SIGTERM, `burrow down` or (with `--exit-with-parent`) its
/// parent's exit, then closes its connections and exits 0.
pub(crate) async fn up(args: MeshArgs, up: UpArgs, json_out: bool) -> Result<()> {
    let tcp = match up.api_listen {
        Some(addr) if addr.ip() != Ipv4Addr::LOCALHOST => {
            bail!("--api-listen {addr}: the API listens on 127.0.0.1 only")
        }
        Some(addr) => Some(TcpOptions::new(addr.port())),
        None => None,
    };
    // Caught from the start: a signal, or the parent's exit, as soon as `up` is printed still
    // stops it cleanly.
    let parent = std::os::unix::process::parent_id();
    let (mut int, mut term) = (
        signal(SignalKind::interrupt())?,
        signal(SignalKind::terminate())?,
    );
    let config = ApiConfig {
        tcp: tcp.clone(),
        ..ApiConfig::default()
    };
    let mut stopped = Box::pin(async move {
        tokio::select! {
            _ = int.recv() => "interrupted",
            _ = term.recv() => "terminated",
            _ = parent_exit(parent), if up.exit_with_parent => "its parent exited",
        }
    });
    let dir = args.dir();
    let state = match MeshState::load(&dir) {
        // In no mesh yet: the API waits for `POST /v1/join`.
        Err(StateError::Missing(_)) => {
            let lobby = Lobby::serve(dir.clone(), args.options(&[]).await, &config).await?;
            let out = json!({"event": "waiting", "api": config.socket.display().to_string(),
                "dir": dir.display().to_string()});
            if json_out {
                println!("{out}");
            } else {
                println!(
                    "in no mesh yet: waiting for a join (POST /v1/join at {})",
                    config.socket.display()
                );
            }
            let joined = tokio::select! {
                j = lobby.joined() => j.ok_or("asked to stop"),
                why = &mut stopped => Err(why),
            };
            lobby.shutdown().await;
            match joined {
                Ok(j) if json_out => println!("{}", json!({"event": "joined", "joined": j})),
                Ok(j) => println!("joined mesh {} as {} ({})", j.mesh, j.name, j.path),
                Err(why) => {
                    print_down(why, json_out);
                    return Ok(());
                }
            }
            MeshState::load(&dir)?
        }
        other => other?,
    };
    let opts = args.options(&state.relays).await;
    let (name, node_id) = (state.name.clone(), state.node_key.node_id());
    let node = MeshNode::start(state, opts).await?;
    let running = burrow::mesh::daemon::serve(node, &config).await?;
    let tcp_addr = running.api().tcp_addr().map(|a| a.to_string());
    let token_file = tcp.map(|t| t.token_file.display().to_string());
    if json_out {
        let out = json!({"event": "up", "mesh": name, "node_id": node_id.to_string(),
            "api": config.socket.display().to_string(), "api_tcp": tcp_addr,
            "api_token_file": token_file});
        println!("{out}");
    } else {
        println!(
            "up: mesh {name} as {node_id}; API at {}",
            config.socket.display()
        );
        if let (Some(addr), Some(file)) = (tcp_addr, token_file) {
            println!("API also at http://{addr} (bearer token in {file})");
        }
    }
    let why = tokio::select! {
        why = &mut stopped => why,
        _ = running.stop_requested() => "asked to stop",
    };
    running.shutdown().await;
    print_down(why, json_out);
    Ok(())
}

fn print_down(why: &str, json_out: bool) {
    if json_out {
        println!("{}", json!({"event": "down", "reason": why}));
    } else {
        println!("down: {why}");
    }
}

/// Resolves once `parent`, this process's parent, has exited (another adopts it then).
async fn parent_exit(parent: u32) {
    while std::os::unix::process::parent_id() == parent {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `burrow join TOKEN|CODE`.
pub(crate) async fn join_mesh(
    what: String,
    relays: Vec<RelayUrl>,
    name: Option<String>,
    args: MeshArgs,
    json_out: bool,
) -> Result<()> {
    let what = what.trim();
    if !json_out {
        println!("Attempting direct connection...");
    }
    let opts = args.options(&[]).await;
    let (state, joined) = join_any(&args.dir(), what, &relays, name.as_deref(), opts).await?;
    let me = state.cert.cert();
    if json_out {
        println!(
            "{}",
            serde_json::to_string(&JoinAnswer::new(&state, &joined))?
        );
    } else {
        if joined.path == "relay" {
            println!(
                "✗ no direct path by the time the inviter answered, via relay {}",
                joined.remote_addr.as_deref().unwrap_or("?")
            );
        }
        println!("✓ Joined mesh {} ({})", joined.mesh, joined.path);
        println!(
            "this node is {} (member {}): run `burrow up`",
            me.name, me.number
        );
    }
    Ok(())
}

async fn post(path: &str, body: Value) -> Result<Value> {
    Ok(ApiClient::local().post(path, &body).await?)
}

async fn get(path: &str) -> Result<Value> {
    Ok(ApiClient::local().get(path).await?)
}

async fn delete(path: &str) -> Result<Value> {
    Ok(ApiClient::local().delete(path).await?)
}

/// `burrow invite`.
pub(crate) async fn invite(expires: Duration, uses: u16, code: bool, json_out: bool) -> Result<()> {
    let request = json!({"expires_secs": expires.as_secs(), "uses": uses, "code": code});
    let answer = post("/v1/invites", request).await?;
    if json_out {
        println!("{answer}");
    } else {
        let token = answer["token"].as_str().unwrap_or_default();
        println!("{token}");
        if let Some(code) = answer["code"].as_str() {
            // The relay the code is listed at: the inviter's first, as the token names it.
            let relay = token
                .parse::<burrow::mesh::SignedInvite>()
                .ok()
                .and_then(|t| t.invite().inviter.relays.first().map(ToString::to_string))
                .unwrap_or_else(|| "URL".into());
            println!("short code: {code} (burrow join {code} --relay {relay})");
        }
        println!(
            "(valid for {} join(s); the inviting node must be up to redeem it)",
            answer["uses"]
        );
    }
    Ok(())
}

/// `burrow members`.
pub(crate) async fn members(json_out: bool) -> Result<()> {
    let answer = get("/v1/members").await?;
    if json_out {
        println!("{answer}");
        return Ok(());
    }
    println!("mesh {}", answer["mesh"].as_str().unwrap_or_default());
    for m in answer["members"].as_array().into_iter().flatten() {
        let dash = |v: &Value| v.as_str().map_or("-".to_string(), str::to_string);
        println!(
            "{:<20} {:<8} {:<8} {:<7} {}",
            m["name"].as_str().unwrap_or_default(),
            m["role"].as_str().unwrap_or_default(),
            if m["me"] == true {
                "(me)"
            } else if m["online"] == true {
                "online"
            } else {
                "offline"
            },
            dash(&m["path"]),
            dash(&m["remote_addr"]),
        );
    }
    Ok(())
}

/// `burrow kick NAME`.
pub(crate) async fn kick(member: String, json_out: bool) -> Result<()> {
    let answer = post("/v1/kick", json!({"member": member})).await?;
    if json_out {
        println!("{answer}");
    } else {
        println!(
            "kicked {member} ({})",
            answer["node_id"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

/// `burrow expose`.
pub(crate) async fn expose(
    port: Option<u16>,
    name: Option<String>,
    off: bool,
    json_out: bool,
) -> Result<()> {
    let answer = match port {
        None => get("/v1/expose").await?,
        Some(port) if off => delete(&format!("/v1/expose/{port}")).await?,
        Some(port) => post("/v1/expose", json!({"port": port, "name": name})).await?,
    };
    if json_out {
        println!("{answer}");
        return Ok(());
    }
    match port {
        None => {
            for e in answer["exposed"].as_array().into_iter().flatten() {
                println!("{:<6} {}", e["port"], e["name"].as_str().unwrap_or("-"));
            }
        }
        Some(port) if off => println!("port {port} is no longer exposed"),
        Some(port) => match answer["name"].as_str() {
            Some(name) => println!("members reach 127.0.0.1:{port} here ({name})"),
            None => println!("members reach 127.0.0.1:{port} here"),
        },
    }
    Ok(())
}

/// `burrow forward`.
pub(crate) async fn forward(
    target: Option<String>,
    local: Option<std::net::SocketAddr>,
    off: bool,
    json_out: bool,
) -> Result<()> {
    let Some(target) = target else {
        let answer = get("/v1/forwards").await?;
        if json_out {
            println!("{answer}");
        } else {
            for f in answer["forwards"].as_array().into_iter().flatten() {
                println!("{}", forward_line(f));
            }
        }
        return Ok(());
    };
    let (member, port) = target
        .rsplit_once(':')
        .and_then(|(m, p)| Some((m, p.parse::<u16>().ok()?)))
        .filter(|(m, _)| !m.is_empty())
        .ok_or_else(|| anyhow::anyhow!("{target:?} is not MEMBER:PORT"))?;
    if !off {
        let answer = post(
            "/v1/forwards",
            json!({"member": member, "port": port, "local": local}),
        )
        .await?;
        if json_out {
            println!("{answer}");
        } else {
            println!("{}", forward_line(&answer));
        }
        return Ok(());
    }
    let listed = get("/v1/forwards").await?;
    let matching: Vec<&Value> = listed["forwards"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| {
            let who = f["member"] == member || f["node_id"] == member;
            let local_ok = local.is_none_or(|l| f["local"] == l.to_string());
            who && f["port"] == port && local_ok
        })
        .collect();
    if matching.is_empty() {
        anyhow::bail!("no forward to {target}");
    }
    let mut stopped = Vec::new();
    for f in matching {
        let local = f["local"].as_str().unwrap_or_default();
        stopped.push(delete(&format!("/v1/forwards/{local}")).await?);
    }
    if json_out {
        println!("{}", json!({"stopped": stopped}));
    } else {
        for s in stopped {
            println!(
                "stopped the forward on {}",
                s["local"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// One forward, for people: where it listens and where it goes.
fn forward_line(f: &Value) -> String {
    let member = f["member"]
        .as_str()
        .or_else(|| f["node_id"].as_str())
        .unwrap_or_default();
    format!(
        "{} -> {member}:{}",
        f["local"].as_str().unwrap_or_default(),
        f["port"]
    )
}

/// `burrow peers` in a mesh: every other member, and how it is reached.
pub(crate) async fn peers(json_out: bool) -> Result<()> {
    let answer = get("/v1/members").await?;
    let others = answer["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["me"] != true);
    const KEYS: [&str; 8] = [
        "name",
        "node_id",
        "online",
        "path",
        "remote_addr",
        "rtt_ms",
        "nat_type",
        "last_seen",
    ];
    let rows: Vec<Value> = others
        .map(|m| Value::Object(KEYS.iter().map(|k| (k.to_string(), m[k].clone())).collect()))
        .collect();
    if json_out {
        println!("{}", json!({"mesh": answer["mesh"], "peers": rows}));
        return Ok(());
    }
    println!(
        "{:<16} {:<10} {:<7} {:<6} {:<24} {:>8} {:<5} LAST SEEN",
        "NAME", "NODE", "ONLINE", "PATH", "ADDRESS", "RTT", "NAT"
    );
    let now = burrow::clock::unix_now();
    for r in &rows {
        let text = |k: &str| r[k].as_str().unwrap_or("-").to_string();
        let rtt = r["rtt_ms"]
            .as_f64()
            .map_or("-".into(), |ms| format!("{ms:.1}ms"));
        let seen = match (r["online"].as_bool(), r["last_seen"].as_u64()) {
            (Some(true), _) => "now".to_string(),
            (_, Some(t)) => format!(
                "{} ago",
                humantime::format_duration(Duration::from_secs(now.saturating_sub(t)))
            ),
            _ => "never".to_string(),
        };
        println!(
            "{:<16} {:<10} {:<7} {:<6} {:<24} {:>8} {:<5} {seen}",
            text("name"),
            text("node_id").get(..10).unwrap_or("-"),
            if r["online"] == true { "yes" } else { "no" },
            text("path"),
            text("remote_addr"),
            rtt,
            text("nat_type"),
        );
    }
    Ok(())
}

/// `burrow status`: the daemon's node, mesh, NAT, addresses and relays.
pub(crate) async fn status(json_out: bool) -> Result<()> {
    let s: Status = ApiClient::local().status().await?;
    if json_out {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(());
    }
    if let Some(m) = &s.mesh {
        println!("mesh:     {} ({})", m.name, m.mesh_id);
        println!(
            "node:     {}, {} (member {}), {}",
            m.node_name, m.role, m.number, s.node_id
        );
        println!("members:  {}/{} online", m.members_online, m.members_total);
    } else {
        println!("node:     {}", s.node_id);
    }
    println!(
        "NAT:      {}",
        s.nat_type.as_deref().unwrap_or("not known yet")
    );
    let addrs: Vec<String> = s.addrs.iter().map(ToString::to_string).collect();
    println!("addrs:    {}", addrs.join(", "));
    for r in &s.relays {
        let state = r.state.as_str();
        let rtt = r
            .rtt_ms
            .map(|ms| format!(", {ms:.1} ms"))
            .unwrap_or_default();
        let home = if r.home { ", home" } else { "" };
        let error = r
            .error
            .as_ref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        println!("relay:    {} {state}{home}{rtt}{error}", r.url);
    }
    println!(
        "uptime:   {}",
        humantime::format_duration(Duration::from_secs(s.uptime_ms / 1000))
    );
    Ok(())
}

/// `burrow ping NAME|NODE_ID`: pings a member through the daemon. `not_ticket` says why the
/// target did not read as a ticket, for the error if no member has that name either.
pub(crate) async fn ping(
    target: &str,
    not_ticket: burrow::ticket::TicketError,
    opts: PingOptions,
) -> Result<()> {
    let api = ApiClient::local();
    let answer: Value = api.get("/v1/members").await?;
    let members = answer["members"].as_array().cloned().unwrap_or_default();
    let Some(member) = members
        .iter()
        .find(|m| m["name"] == target || m["node_id"] == target)
    else {
        let mesh = answer["mesh"].as_str().unwrap_or_default();
        let also = match not_ticket {
            burrow::ticket::TicketError::Prefix => String::new(),
            e => format!(" (nor is it a ticket: {e})"),
        };
        bail!("no member {target} in mesh {mesh}{also}");
    };
    if member["me"] == true {
        bail!("{target} is this node");
    }
    let name = member["name"].as_str().unwrap_or(target).to_string();
    let node: burrow::NodeId = member["node_id"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .context("the daemon's member list")?;
    let api = &api;
    crate::ping::run(opts, &name, |_| async move {
        api.ping(node)
            .await
            .map_err(|e| format!("{:#}", anyhow::Error::from(e)))
    })
    .await
}

/// `burrow down`: asks the daemon to stop, and waits (at most 5 s) until its socket is gone.
pub(crate) async fn down(json_out: bool) -> Result<()> {
    post("/v1/shutdown", json!({})).await?;
    let socket = default_socket_path();
    let deadline = Instant::now() + Duration::from_secs(5);
    while socket.exists() {
        if Instant::now() > deadline {
            bail!(
                "asked the daemon to stop, but its socket {} is still there after 5 s",
                socket.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if json_out {
        println!("{}", json!({"stopped": true}));
    } else {
        println!("the daemon stopped");
    }
    Ok(())
}
