//! Discovery from the command line: `listen` announcing itself on the LAN (its record and
//! namespaces are [`burrow::publisher`]'s), and `burrow resolve`, `peers` and
//! `connect NODE_ID`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use burrow::dht::{DhtConfig, DhtDiscovery};
use burrow::endpoint::Endpoint;
use burrow::lookup::{list_members, Found, Lookup, Member, MDNS_WAIT};
use burrow::mdns::{LanPeers, MdnsConfig};
use burrow::record::NodeRecord;
use burrow::registry_client::{RegistryClient, RegistryClientOptions};
use burrow::relay_client::RelayUrl;
use burrow::ticket::Ticket;
use burrow::NodeId;
use serde_json::json;

/// Where to look nodes up by key: bootstrap registries and the Mainline DHT.
#[derive(clap::Args, Clone)]
pub(crate) struct LookupArgs {
    /// Bootstrap registry to ask (a relay's address, http(s)://host:port); repeat for
    /// several.
    #[arg(long = "registry", value_name = "URL")]
    pub registries: Vec<RelayUrl>,
    #[command(flatten)]
    pub dht: DhtArgs,
}

/// The Mainline DHT, which the command line uses only when asked to.
#[derive(clap::Args, Clone)]
pub(crate) struct DhtArgs {
    /// Mainline DHT node to join through (HOST:PORT; `burrow dht-node` runs one); repeat for
    /// several. Without it the DHT is not used.
    #[arg(long = "dht-bootstrap", value_name = "HOST:PORT")]
    pub dht_bootstrap: Vec<String>,
}

/// mDNS, on by default.
#[derive(clap::Args, Clone, Copy)]
pub(crate) struct MdnsArgs {
    /// No mDNS: neither announce on nor search the LAN (env: 1/true/yes).
    #[arg(long, env = "BURROW_NO_MDNS", value_parser = clap::builder::BoolishValueParser::new())]
    no_mdns: bool,
}

impl MdnsArgs {
    pub(crate) fn enabled(self) -> bool {
        !self.no_mdns
    }
}

/// Announces `ticket` on the LAN; a failure is a warning, since mDNS is a convenience.
pub(crate) fn announce_on_lan(
    ep: &Endpoint,
    ticket: &Ticket,
    config: &MdnsConfig,
) -> Option<LanPeers> {
    let announce = || -> Result<LanPeers> {
        let lan = LanPeers::start(config)?;
        let relay = ticket.relays.first().map(ToString::to_string);
        lan.announce(
            ep.node_id(),
            ep.local_addr()?.port(),
            &ticket.addrs,
            relay.as_deref(),
        )?;
        Ok(lan)
    };
    announce()
        .map_err(|e| eprintln!("warning: not announced on the LAN: {e:#}"))
        .ok()
}

/// The LAN's peers, browsed in the background, or `None` (with a warning) if mDNS fails.
fn lan_peers(config: &MdnsConfig) -> Option<LanPeers> {
    LanPeers::start(config)
        .map_err(|e| eprintln!("warning: mDNS unavailable: {e:#}"))
        .ok()
}

/// A Mainline DHT client node joined through `bootstrap` (`HOST:PORT`s), or `None` without
/// any: the DHT is opt-in from the command line.
pub(crate) async fn dht(bootstrap: &[String]) -> Result<Option<Arc<DhtDiscovery>>> {
    if bootstrap.is_empty() {
        return Ok(None);
    }
    let dht = DhtDiscovery::start(DhtConfig {
        bootstrap: bootstrap.to_vec(),
        ..Default::default()
    })
    .await?;
    dht.bootstrapped().await;
    Ok(Some(Arc::new(dht)))
}

/// The secret of a closed namespace: the file's bytes, less one final newline (as editors
/// and `echo` leave one).
pub(crate) fn namespace_secret(path: Option<&Path>) -> Result<Option<Vec<u8>>> {
    let Some(path) = path else { return Ok(None) };
    let mut secret = std::fs::read(path)
        .with_context(|| format!("cannot read the namespace secret {}", path.display()))?;
    if secret.ends_with(b"\n") {
        secret.pop();
        if secret.ends_with(b"\r") {
            secret.pop();
        }
    }
    if secret.is_empty() {
        bail!("the namespace secret file {} is empty", path.display());
    }
    Ok(Some(secret))
}

/// `burrow peers`: the nodes under a namespace at the registries and in the DHT, merged.
pub(crate) async fn peers(
    namespace: String,
    lookup: LookupArgs,
    secret: Option<Vec<u8>>,
    json_out: bool,
) -> Result<()> {
    if lookup.registries.is_empty() && lookup.dht.dht_bootstrap.is_empty() {
        bail!("nothing to ask: give --registry URL (a relay's address) or --dht-bootstrap HOST:PORT, or both");
    }
    let dht = dht(&lookup.dht.dht_bootstrap).await?;
    let listed = list_members(
        &namespace,
        secret.as_deref(),
        &lookup.registries,
        dht.as_deref(),
    )
    .await?;
    if let Some(e) = &listed.registry_error {
        eprintln!("warning: registries: {e}");
    }
    let members = listed.members;
    if json_out {
        let rows: Vec<serde_json::Value> = members.iter().map(member_json).collect();
        println!("{}", json!({"namespace": namespace, "peers": rows}));
    } else {
        println!("{} peers in {namespace}", members.len());
        for m in &members {
            let sources: Vec<&str> = m.listed_by.iter().map(|l| l.as_str()).collect();
            let addressing = match &m.record {
                None => "no record found".to_string(),
                Some((_, r)) => format!(
                    "relays {:?}  addrs {:?}",
                    strings(&r.relays),
                    strings(&r.addrs)
                ),
            };
            println!("{}  [{}]  {addressing}", m.node_id, sources.join(","));
        }
    }
    Ok(())
}

/// A member as `burrow peers --json` prints it.
fn member_json(m: &Member) -> serde_json::Value {
    let sources: Vec<&str> = m.listed_by.iter().map(|l| l.as_str()).collect();
    match &m.record {
        Some((from, r)) => {
            json!({"node_id": m.node_id.to_string(), "sources": sources, "record": from.as_str(),
                "seq": r.seq, "expires": r.expires, "relays": strings(&r.relays),
                "addrs": strings(&r.addrs),
                "ticket": m.ticket().map(|t| t.to_string())})
        }
        None => json!({"node_id": m.node_id.to_string(), "sources": sources, "record": null,
            "seq": null, "expires": null, "relays": [], "addrs": [], "ticket": null}),
    }
}

/// Each item's text form.
fn strings<T: ToString>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

/// What `burrow connect` dials: a ticket as given, or a node id looked up at the registries,
/// in the DHT and on the LAN.
pub(crate) async fn target(
    target: &str,
    lookup: LookupArgs,
    mdns: Option<MdnsConfig>,
) -> Result<Ticket> {
    if let Ok(ticket) = target.parse::<Ticket>() {
        return Ok(ticket);
    }
    let Ok(node) = target.parse::<NodeId>() else {
        bail!("{target:?} is neither a ticket (burrow...) nor a node id");
    };
    let LookupArgs { registries, dht } = lookup;
    if registries.is_empty() && dht.dht_bootstrap.is_empty() && mdns.is_none() {
        bail!("to dial a node id, give --registry URL or --dht-bootstrap HOST:PORT, or allow mDNS (or use its ticket)");
    }
    let dht = self::dht(&dht.dht_bootstrap).await?;
    let mut lookup = Lookup::new(registries, dht, Duration::from_secs(10));
    if let Some(lan) = mdns.as_ref().and_then(lan_peers) {
        lookup = lookup.with_mdns(lan);
    }
    Ok(lookup.resolve(&node).await?.ticket)
}

/// `burrow resolve`: asks every registry, the DHT and the LAN on their own, prints each answer
/// with its latency, and a ticket made from the newest record (plus LAN addresses). The LAN's
/// answer is unsigned: its row and the ticket take its addresses only, never its relay.
pub(crate) async fn resolve(
    node: NodeId,
    lookup: LookupArgs,
    mdns: bool,
    json_out: bool,
) -> Result<()> {
    let LookupArgs { registries, dht } = lookup;
    if registries.is_empty() && dht.dht_bootstrap.is_empty() && !mdns {
        bail!("nothing to ask: give --registry URL (a relay's address, e.g. http://relay.example.net:8080) or --dht-bootstrap HOST:PORT, or allow mDNS");
    }
    let mut answers = Vec::new();
    // Merged as `Lookup` merges: the newest record, plus LAN addresses.
    let mut best: Option<Found> = None;
    let mut add = |found: Option<Found>| {
        if let Some(f) = found {
            best = Some(match best.take() {
                Some(b) => b.merged(f),
                None => f,
            });
        }
    };
    // mDNS browses while the others are asked.
    let lan = mdns
        .then(|| lan_peers(&MdnsConfig::default()))
        .flatten()
        .map(|lan| {
            tokio::spawn(async move {
                let start = Instant::now();
                (lan.find(&node, MDNS_WAIT).await, start.elapsed())
            })
        });
    if let Some(dht) = self::dht(&dht.dht_bootstrap).await? {
        let start = Instant::now();
        let found = dht.resolve(&node).await;
        let ms = (start.elapsed().as_secs_f64() * 1e5).round() / 100.0;
        match found.and_then(|f| NodeRecord::decode_payload_for(&f.value, &node).ok()) {
            Some(record) => {
                answers.push(json!({"source": "dht", "ms": ms, "seq": record.seq,
                    "expires": record.expires,
                    "relays": strings(&record.relays), "addrs": strings(&record.addrs)}));
                add(Found::from_record(record, "dht"));
            }
            None => answers.push(json!({"source": "dht", "ms": ms, "error": "no valid record"})),
        }
    }
    let mut lookups = tokio::task::JoinSet::new();
    for url in registries {
        lookups.spawn(async move {
            let client = RegistryClient::new(vec![url.clone()], RegistryClientOptions::default());
            let start = Instant::now();
            let r = client.lookup(&node).await;
            (url, start.elapsed(), r)
        });
    }
    while let Some(Ok((url, took, r))) = lookups.join_next().await {
        let ms = (took.as_secs_f64() * 1e5).round() / 100.0;
        match r {
            Ok(rec) => {
                let record = rec.record();
                answers.push(json!({"source": format!("registry {url}"), "ms": ms,
                    "seq": record.seq, "expires": record.expires,
                    "relays": strings(&record.relays), "addrs": strings(&record.addrs)}));
                add(Found::from_record(record.clone(), "registry"));
            }
            Err(e) => answers.push(
                json!({"source": format!("registry {url}"), "ms": ms, "error": e.to_string()}),
            ),
        }
    }
    if let Some(Ok((found, took))) = match lan {
        Some(task) => Some(task.await),
        None => None,
    } {
        let ms = (took.as_secs_f64() * 1e5).round() / 100.0;
        match found {
            Some(peer) => {
                answers.push(json!({"source": "mdns", "ms": ms, "addrs": strings(&peer.addrs)}));
                add(Found::from_lan(node, peer));
            }
            None => {
                answers.push(json!({"source": "mdns", "ms": ms, "error": "not seen on the LAN"}))
            }
        }
    }
    let ticket = best.map(|b| b.ticket);
    if json_out {
        println!(
            "{}",
            json!({"node_id": node.to_string(), "found": ticket.is_some(), "answers": answers,
                "ticket": ticket.as_ref().map(ToString::to_string)})
        );
    } else {
        for a in &answers {
            match a.get("error") {
                Some(e) => println!(
                    "{:<40} {:>8.1} ms  {}",
                    a["source"].as_str().unwrap_or(""),
                    a["ms"].as_f64().unwrap_or(0.0),
                    e.as_str().unwrap_or("")
                ),
                None => println!(
                    "{:<40} {:>8.1} ms  seq {}  relays {}  addrs {}",
                    a["source"].as_str().unwrap_or(""),
                    a["ms"].as_f64().unwrap_or(0.0),
                    a.get("seq").map_or("-".into(), ToString::to_string),
                    a.get("relays").map_or("-".into(), ToString::to_string),
                    a["addrs"]
                ),
            }
        }
        if let Some(t) = &ticket {
            println!("ticket: {t}");
        }
    }
    if ticket.is_none() {
        bail!("no source knows {node}");
    }
    Ok(())
}
