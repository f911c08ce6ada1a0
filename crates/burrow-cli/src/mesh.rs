//! The mesh commands: `init`, `up`, `invite`, `join`, `members`, `kick`. `up` runs the node
//! and its local API; `invite`, `members` and `kick` ask it through that API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use burrow::api::{ApiClient, ApiConfig};
use burrow::dht::DhtConfig;
use burrow::mesh::node::{join, join_code, MeshNode, NodeOptions};
use burrow::mesh::state::{default_dir, MeshState};
use burrow::relay_client::RelayUrl;
use serde_json::{json, Value};

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

/// `burrow init NAME`.
pub(crate) fn init(
    name: String,
    relays: Vec<RelayUrl>,
    args: MeshArgs,
    json_out: bool,
) -> Result<()> {
    if relays.is_empty() {
        anyhow::bail!("a mesh needs a relay: give --relay URL (members find each other there)");
    }
    let state = MeshState::init(&args.dir(), &name, relays)?;
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

/// `burrow up`: runs until SIGINT or SIGTERM.
pub(crate) async fn up(args: MeshArgs, json_out: bool) -> Result<()> {
    let state = MeshState::load(&args.dir())?;
    let opts = args.options(&state.relays).await;
    let (name, node_id) = (state.name.clone(), state.node_key.node_id());
    let node = MeshNode::start(state, opts).await?;
    let config = ApiConfig::default();
    let api = burrow::mesh::daemon::serve(node.clone(), &config).await?;
    let out = json!({"event": "up", "mesh": name, "node_id": node_id.to_string(),
        "api": config.socket.display().to_string()});
    if json_out {
        println!("{out}");
    } else {
        println!(
            "up: mesh {name} as {node_id}; API at {}",
            config.socket.display()
        );
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    api.shutdown().await;
    node.shutdown().await;
    Ok(())
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
        println!("Attempting connection to the inviter...");
    }
    let (state, joined) = if what.to_ascii_uppercase().starts_with("MESH-") {
        let code: burrow::mesh::ShortCode = what.parse().context("the short code")?;
        if relays.is_empty() {
            anyhow::bail!("a short code needs --relay URL: the relay where its inviter is listed");
        }
        let opts = args.options(&relays).await;
        join_code(&args.dir(), &code, &relays, name.as_deref(), opts).await?
    } else {
        let token: burrow::mesh::SignedInvite = what.parse().context("the invite token")?;
        let opts = args.options(&token.invite().inviter.relays).await;
        join(&args.dir(), &token, name.as_deref(), opts).await?
    };
    let me = state.cert.cert();
    if json_out {
        println!(
            "{}",
            json!({"joined": true, "mesh": joined.mesh, "path": joined.path,
            "name": me.name, "number": me.number, "node_id": me.node_id.to_string()})
        );
    } else {
        println!(
            "✓ Joined mesh {} ({}) as {}; run `burrow up`",
            joined.mesh, joined.path, me.name
        );
    }
    Ok(())
}

async fn post(path: &str, body: Value) -> Result<Value> {
    Ok(ApiClient::local().post(path, &body).await?)
}

/// `burrow invite`.
pub(crate) async fn invite(expires: Duration, uses: u16, code: bool, json_out: bool) -> Result<()> {
    let request = json!({"expires_secs": expires.as_secs(), "uses": uses, "code": code});
    let answer = post("/v1/invites", request).await?;
    if json_out {
        println!("{answer}");
    } else {
        println!("{}", answer["token"].as_str().unwrap_or_default());
        if let Some(code) = answer["code"].as_str() {
            println!("short code: {code} (burrow join {code} --relay URL)");
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
    let answer: Value = ApiClient::local().get("/v1/members").await?;
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
