//! Discovery from the command line: `listen` publishing its signed record to its relays'
//! registries, the DHT and the LAN, and `burrow resolve`, `peers` and `connect NODE_ID`.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use anyhow::{bail, Result};
use burrow::dht::{DhtConfig, DhtDiscovery, Republisher};
use burrow::discovery::{Discovery, MDNS_WAIT};
use burrow::endpoint::Endpoint;
use burrow::mdns::{LanPeers, MdnsConfig};
use burrow::record::{NodeRecord, SignedRecord};
use burrow::registry_client::{RegistryClient, RegistryClientOptions};
use burrow::relay_client::RelayUrl;
use burrow::ticket::Ticket;
use burrow::{NodeId, SecretKey};
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

/// How long a published record lives; it is re-published well before.
const RECORD_LIFETIME: Duration = Duration::from_secs(3600);
/// How often `listen` re-publishes its record.
pub const REPUBLISH_EVERY: Duration = Duration::from_secs(600);

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

/// Keeps the record for `ticket` published in the DHT (a BEP 44 item under the node key)
/// until the handle is dropped.
pub fn keep_in_dht(dht: &DhtDiscovery, key: &SecretKey, ticket: &Ticket) -> Result<Republisher> {
    let record = signed_record(key, ticket)?;
    let payload = record.record().encode_payload()?;
    Ok(dht.keep_published(key.clone(), payload, record.record().seq as i64)?)
}

/// Replaces the record [`keep_in_dht`] keeps published with a fresh one.
pub fn update_in_dht(r: &Republisher, key: &SecretKey, ticket: &Ticket) -> Result<()> {
    let record = signed_record(key, ticket)?;
    r.update(
        record.record().encode_payload()?,
        record.record().seq as i64,
    )?;
    Ok(())
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// The record for what a ticket says, signed; its seq is the time in milliseconds.
pub fn signed_record(key: &SecretKey, ticket: &Ticket) -> Result<SignedRecord> {
    let now = unix_now();
    let mut record = NodeRecord::new(
        key.node_id(),
        now.as_millis() as u64,
        (now + RECORD_LIFETIME).as_secs(),
    );
    record.relays = ticket
        .relays
        .iter()
        .take(burrow::record::MAX_RELAYS)
        .cloned()
        .collect();
    record.addrs = ticket
        .addrs
        .iter()
        .take(burrow::record::MAX_ADDRS)
        .copied()
        .collect();
    Ok(record.sign(key)?)
}

/// Publishes the record at every registry, listed under `namespaces`; returns how many
/// registries accepted it.
pub async fn publish(
    registries: &[RelayUrl],
    key: &SecretKey,
    ticket: &Ticket,
    namespaces: &[String],
) -> Result<usize> {
    let client = RegistryClient::new(registries.to_vec(), RegistryClientOptions::default());
    let record = signed_record(key, ticket)?;
    let report = client
        .publish(&record, namespaces, Some(RECORD_LIFETIME))
        .await?;
    Ok(report.accepted.len())
}

/// Most pages `burrow peers` reads (each up to the registry's page size).
const MAX_PAGES: usize = 100;

/// `burrow peers`: the nodes listed under a namespace, page by page.
pub async fn peers(namespace: String, registries: Vec<RelayUrl>, json_out: bool) -> Result<()> {
    if registries.is_empty() {
        bail!("no registry to ask: give --registry URL (a relay's address)");
    }
    let client = RegistryClient::new(registries, RegistryClientOptions::default());
    let mut members = Vec::new();
    let mut after = None;
    for _ in 0..MAX_PAGES {
        let page = client.list(&namespace, after.as_ref(), 100).await?;
        members.extend(page.records);
        match page.next_cursor {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    let rows: Vec<serde_json::Value> = members
        .iter()
        .map(|m| {
            let r = m.record();
            let ticket = Ticket {
                node_id: r.node_id,
                relays: r.relays.clone(),
                addrs: r.addrs.clone(),
            };
            json!({"node_id": r.node_id.to_string(), "seq": r.seq, "expires": r.expires,
                "relays": r.relays.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "addrs": r.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "ticket": ticket.to_string()})
        })
        .collect();
    if json_out {
        println!("{}", json!({"namespace": namespace, "peers": rows}));
    } else {
        println!("{} peers in {namespace}", rows.len());
        for r in &rows {
            println!(
                "{}  relays {}  addrs {}",
                r["node_id"].as_str().unwrap_or(""),
                r["relays"],
                r["addrs"]
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
    let mut discovery = Discovery::new(registries, self::dht(dht).await?, Duration::from_secs(10));
    if let Some(lan) = mdns.as_ref().and_then(lan_peers) {
        discovery = discovery.with_mdns(lan);
    }
    Ok(discovery.resolve(&node).await?.ticket)
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
    let mut best: Option<NodeRecord> = None;
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
                best = Some(record);
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
                if best.as_ref().is_none_or(|b| record.seq > b.seq) {
                    best = Some(record.clone());
                }
            }
            Err(e) => answers.push(
                json!({"source": format!("registry {url}"), "ms": ms, "error": e.to_string()}),
            ),
        }
    }
    let mut ticket = best.map(|b| Ticket {
        node_id: node,
        relays: b.relays,
        addrs: b.addrs,
    });
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
                let t = ticket.get_or_insert_with(|| Ticket::new(node));
                for a in peer.addrs {
                    if !t.addrs.contains(&a) {
                        t.addrs.push(a);
                    }
                }
                if let Some(r) = peer.relay.and_then(|r| r.parse().ok()) {
                    if !t.relays.contains(&r) {
                        t.relays.push(r);
                    }
                }
            }
            None => {
                answers.push(json!({"source": "mdns", "ms": ms, "error": "not seen on the LAN"}))
            }
        }
    }
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
