//! Discovery from the command line: `listen` announcing itself on the LAN (its record and
//! namespaces are [`burrow::publisher`]'s), and `burrow resolve`, `peers` and
//! `connect NODE_ID`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use burrow::dht::{DhtConfig, DhtDiscovery, Namespace};
use burrow::endpoint::Endpoint;
use burrow::lookup::{resolve_in_dht, Found, Lookup, MDNS_WAIT};
use burrow::mdns::{LanPeers, MdnsConfig};
use burrow::record::{NodeRecord, SignedRecord};
use burrow::registry_client::{RegistryClient, RegistryClientOptions};
use burrow::relay_client::RelayUrl;
use burrow::ticket::Ticket;
use burrow::NodeId;
use serde_json::json;

/// mDNS, on by default.
#[derive(clap::Args, Clone, Copy)]
pub struct MdnsArgs {
    /// No mDNS: neither announce on nor search the LAN (env: 1/true/yes).
    #[arg(long, env = "BURROW_NO_MDNS", value_parser = clap::builder::BoolishValueParser::new())]
    no_mdns: bool,
}

impl MdnsArgs {
    pub fn enabled(self) -> bool {
        !self.no_mdns
    }
}

/// mDNS on every interface, or only on the one `bind` names.
pub fn mdns_config(bind: IpAddr) -> MdnsConfig {
    MdnsConfig {
        addresses: (!bind.is_unspecified())
            .then_some(bind)
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

/// Announces `ticket` on the LAN; a failure is a warning, since mDNS is a convenience.
pub fn announce_on_lan(ep: &Endpoint, ticket: &Ticket, config: &MdnsConfig) -> Option<LanPeers> {
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
pub async fn dht(bootstrap: &[String]) -> Result<Option<Arc<DhtDiscovery>>> {
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

/// Most pages `burrow peers` reads (each up to the registry's page size).
const MAX_PAGES: usize = 100;
/// Records of DHT-only members looked up at once.
const PARALLEL_RESOLVES: usize = 8;
/// How long one such lookup may take before the row goes without a record.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The secret of a closed namespace: the file's bytes, less one final newline (as editors
/// and `echo` leave one).
pub fn namespace_secret(path: Option<&Path>) -> Result<Option<Vec<u8>>> {
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

/// Every record the registries list under `namespace`, page by page.
async fn list_registries(namespace: &str, registries: Vec<RelayUrl>) -> Result<Vec<SignedRecord>> {
    let client = RegistryClient::new(registries, RegistryClientOptions::default());
    let mut members = Vec::new();
    let mut after = None;
    for _ in 0..MAX_PAGES {
        let page = client.list(namespace, after.as_ref(), 100).await?;
        members.extend(page.records);
        match page.next_cursor {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    Ok(members)
}

/// The NodeIds in the DHT's directory of the namespace, and the DHT node that read them (for
/// looking up their records); `None` without a bootstrap node.
async fn list_dht(
    ns: &Namespace,
    bootstrap: &[String],
) -> Result<Option<(Vec<NodeId>, Arc<DhtDiscovery>)>> {
    let Some(dht) = dht(bootstrap).await? else {
        return Ok(None);
    };
    if !dht.bootstrapped().await {
        eprintln!("warning: no DHT bootstrap node answered: the DHT lists nobody");
    }
    Ok(Some((dht.members(ns).await, dht)))
}

/// One node in `burrow peers`: who listed it, and its record with where that came from.
#[derive(Default)]
struct PeerRow {
    sources: Vec<&'static str>,
    record: Option<(&'static str, NodeRecord)>,
}

/// `burrow peers`: the nodes under a namespace at the registries and in the DHT, merged.
pub async fn peers(
    namespace: String,
    registries: Vec<RelayUrl>,
    dht_bootstrap: Vec<String>,
    secret: Option<Vec<u8>>,
    json_out: bool,
) -> Result<()> {
    if registries.is_empty() && dht_bootstrap.is_empty() {
        bail!("nothing to ask: give --registry URL (a relay's address) or --dht-bootstrap HOST:PORT, or both");
    }
    let ns = Namespace::new(&namespace, secret.as_deref());
    let asked_registries = !registries.is_empty();
    let (from_registries, from_dht) = tokio::join!(
        async {
            if asked_registries {
                Some(list_registries(&namespace, registries).await)
            } else {
                None
            }
        },
        list_dht(&ns, &dht_bootstrap)
    );
    let from_dht = from_dht?;
    let mut rows: BTreeMap<NodeId, PeerRow> = BTreeMap::new();
    match from_registries {
        Some(Ok(records)) => {
            for r in records {
                let row = rows.entry(r.record().node_id).or_default();
                row.sources.push("registry");
                row.record = Some(("registry", r.record().clone()));
            }
        }
        // With the DHT to fall back on, a registry failure is not the end.
        Some(Err(e)) if from_dht.is_some() => eprintln!("warning: registries: {e:#}"),
        Some(Err(e)) => return Err(e),
        None => {}
    }
    if let Some((members, dht)) = from_dht {
        for m in &members {
            rows.entry(*m).or_default().sources.push("dht");
        }
        // The directory holds NodeIds only: the addresses of nodes no registry listed come
        // from their records in the DHT.
        let missing: Vec<NodeId> = members
            .into_iter()
            .filter(|m| rows[m].record.is_none())
            .collect();
        let found = resolve_in_dht(&dht, &missing, PARALLEL_RESOLVES, RESOLVE_TIMEOUT).await;
        for (node, record) in missing.iter().zip(found) {
            if let Some(record) = record {
                rows.get_mut(node).expect("listed").record = Some(("dht", record));
            }
        }
    }
    let rows: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|(node, row)| match row.record {
            Some((from, r)) => {
                let ticket = Ticket {
                    node_id: node,
                    relays: r.relays.clone(),
                    addrs: r.addrs.clone(),
                };
                json!({"node_id": node.to_string(), "sources": row.sources, "record": from,
                    "seq": r.seq, "expires": r.expires,
                    "relays": r.relays.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "addrs": r.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "ticket": ticket.to_string()})
            }
            None => json!({"node_id": node.to_string(), "sources": row.sources, "record": null,
                "seq": null, "expires": null, "relays": [], "addrs": [], "ticket": null}),
        })
        .collect();
    if json_out {
        println!("{}", json!({"namespace": namespace, "peers": rows}));
    } else {
        println!("{} peers in {namespace}", rows.len());
        for r in &rows {
            let sources: Vec<&str> = r["sources"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str())
                .collect();
            let addressing = if r["record"].is_null() {
                "no record found".to_string()
            } else {
                format!("relays {}  addrs {}", r["relays"], r["addrs"])
            };
            println!(
                "{}  [{}]  {addressing}",
                r["node_id"].as_str().unwrap_or(""),
                sources.join(",")
            );
        }
    }
    Ok(())
}

/// What `burrow connect` dials: a ticket as given, or a node id looked up at the registries,
/// in the DHT and on the LAN.
pub async fn target(
    target: &str,
    registries: Vec<RelayUrl>,
    dht: &[String],
    mdns: Option<MdnsConfig>,
) -> Result<Ticket> {
    if let Ok(ticket) = target.parse::<Ticket>() {
        return Ok(ticket);
    }
    let Ok(node) = target.parse::<NodeId>() else {
        bail!("{target:?} is neither a ticket (burrow...) nor a node id");
    };
    if registries.is_empty() && dht.is_empty() && mdns.is_none() {
        bail!("to dial a node id, give --registry URL or --dht-bootstrap HOST:PORT, or allow mDNS (or use its ticket)");
    }
    let mut lookup = Lookup::new(registries, self::dht(dht).await?, Duration::from_secs(10));
    if let Some(lan) = mdns.as_ref().and_then(lan_peers) {
        lookup = lookup.with_mdns(lan);
    }
    Ok(lookup.resolve(&node).await?.ticket)
}

/// `burrow resolve`: asks every registry, the DHT and the LAN on their own, prints each answer
/// with its latency, and a ticket made from the newest record (plus LAN addresses).
pub async fn resolve(
    node: NodeId,
    registries: Vec<RelayUrl>,
    dht_bootstrap: Vec<String>,
    mdns: bool,
    json_out: bool,
) -> Result<()> {
    if registries.is_empty() && dht_bootstrap.is_empty() && !mdns {
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
    if let Some(dht) = dht(&dht_bootstrap).await? {
        let start = Instant::now();
        let found = dht.resolve(&node).await;
        let ms = (start.elapsed().as_secs_f64() * 1e5).round() / 100.0;
        match found.and_then(|f| NodeRecord::decode_payload_for(&f.value, &node).ok()) {
            Some(record) => {
                answers.push(json!({"source": "dht", "ms": ms, "seq": record.seq,
                    "expires": record.expires,
                    "relays": record.relays.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "addrs": record.addrs.iter().map(ToString::to_string).collect::<Vec<_>>()}));
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
                    "relays": record.relays.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "addrs": record.addrs.iter().map(ToString::to_string).collect::<Vec<_>>()}));
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
                answers.push(json!({"source": "mdns", "ms": ms,
                    "relays": peer.relay.iter().collect::<Vec<_>>(),
                    "addrs": peer.addrs.iter().map(ToString::to_string).collect::<Vec<_>>()}));
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
                    a["relays"],
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
