//! LAN discovery with multicast DNS (RFC 6762, DNS-SD RFC 6763), through `mdns-sd`.
//!
//! A node announces the service [`SERVICE_TYPE`] with its NodeId as the instance name, the
//! port of its UDP socket in the SRV record, its addresses in A/AAAA records, and TXT keys:
//! `v=1`, `id=<NodeId>`, `a0`..`a15` (direct `IP:PORT`s, one per key so that no TXT string
//! passes 255 bytes) and optionally `relay=<URL>`. Browsing yields [`MdnsEvent`]s as peers
//! appear and leave.
//!
//! Everything received is hostile input: an instance whose name is not a NodeId, or whose
//! `id` differs from its name, is dropped; at most [`MAX_ADDRS`] addresses are kept, each
//! parsed and checked (no unspecified, multicast or port-0 addresses); a relay URL must be
//! short `http(s)`. A peer is only a hint: connecting authenticates its key.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use burrow_proto::identity::NodeId;
use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use tokio::sync::watch;
use tracing::debug;

/// The DNS-SD service type burrow nodes announce.
pub const SERVICE_TYPE: &str = "_burrow._udp.local.";
/// Most addresses announced, and kept from one peer.
pub const MAX_ADDRS: usize = 16;
/// Longest relay URL accepted.
pub const MAX_RELAY_URL_LEN: usize = 200;
/// Most LAN peers [`LanPeers`] remembers: a hostile LAN can announce without end.
pub const MAX_LAN_PEERS: usize = 1024;

/// Where to run mDNS.
#[derive(Clone, Debug, Default)]
pub struct MdnsConfig {
    /// Interfaces by name (`eth0`, `wlan0`). With `addresses` also empty: every interface,
    /// mDNS's usual way.
    pub interfaces: Vec<String>,
    /// Interfaces by one of their addresses (the one a node is bound to, say).
    pub addresses: Vec<IpAddr>,
}

/// mDNS failures.
#[derive(Debug, thiserror::Error)]
pub enum MdnsError {
    /// The daemon refused or failed.
    #[error("mDNS")]
    Daemon(#[from] mdns_sd::Error),
    /// The relay URL does not fit in a TXT record.
    #[error("mDNS: relay URL longer than {MAX_RELAY_URL_LEN} bytes")]
    RelayTooLong,
}

/// A peer seen on the LAN, or gone from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MdnsEvent {
    /// A peer announced itself (again, possibly with other addresses).
    Found {
        /// Its key.
        node: NodeId,
        /// Where to reach it directly (at most [`MAX_ADDRS`]).
        addrs: Vec<SocketAddr>,
        /// Its relay, if it named one.
        relay: Option<String>,
    },
    /// A peer said goodbye, or its announcement expired.
    Lost {
        /// Its key.
        node: NodeId,
    },
}

/// An mDNS responder and browser. Dropping it withdraws the announcement (goodbye packets)
/// and stops the daemon thread.
pub struct Mdns {
    daemon: ServiceDaemon,
    announced: Option<NodeId>,
}

impl std::fmt::Debug for Mdns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mdns")
            .field("announced", &self.announced)
            .finish_non_exhaustive()
    }
}

impl Mdns {
    /// Starts the daemon (a thread of its own, with its sockets in the caller's network
    /// namespace).
    pub fn new(config: &MdnsConfig) -> Result<Self, MdnsError> {
        let daemon = ServiceDaemon::new()?;
        if !config.interfaces.is_empty() || !config.addresses.is_empty() {
            daemon.disable_interface(IfKind::All)?;
            for name in &config.interfaces {
                daemon.enable_interface(IfKind::Name(name.clone()))?;
            }
            for ip in &config.addresses {
                daemon.enable_interface(IfKind::Addr(*ip))?;
            }
        }
        Ok(Mdns {
            daemon,
            announced: None,
        })
    }

    /// Announces `node` on UDP `port`. `direct` are addresses to publish in TXT as well as in
    /// A/AAAA records; empty lets the daemon announce its interfaces' addresses.
    pub fn announce(
        &mut self,
        node: NodeId,
        port: u16,
        direct: &[SocketAddr],
        relay: Option<&str>,
    ) -> Result<(), MdnsError> {
        let id = node.to_string();
        let direct = &direct[..direct.len().min(MAX_ADDRS)];
        let mut txt: Vec<(String, String)> =
            vec![("v".into(), "1".into()), ("id".into(), id.clone())];
        for (i, a) in direct.iter().enumerate() {
            txt.push((format!("a{i}"), a.to_string()));
        }
        if let Some(relay) = relay {
            if relay.len() > MAX_RELAY_URL_LEN {
                return Err(MdnsError::RelayTooLong);
            }
            txt.push(("relay".into(), relay.to_string()));
        }
        let ips: Vec<IpAddr> = direct.iter().map(SocketAddr::ip).collect();
        let host = format!("burrow-{}.local.", &id[..16]);
        let mut info = ServiceInfo::new(SERVICE_TYPE, &id, &host, &ips[..], port, &txt[..])?;
        if ips.is_empty() {
            info = info.enable_addr_auto();
        }
        self.daemon.register(info)?;
        self.announced = Some(node);
        Ok(())
    }

    /// Starts browsing for peers (its own announcement is left out).
    pub fn browse(&self) -> Result<MdnsBrowser, MdnsError> {
        Ok(MdnsBrowser {
            rx: self.daemon.browse(SERVICE_TYPE)?,
            own: self.announced,
        })
    }
}

impl Drop for Mdns {
    fn drop(&mut self) {
        // Unregisters (goodbye packets) and stops the thread.
        let _ = self.daemon.shutdown();
    }
}

/// Peers as they appear and leave; ends when the daemon stops.
pub struct MdnsBrowser {
    rx: mdns_sd::Receiver<ServiceEvent>,
    own: Option<NodeId>,
}

impl MdnsBrowser {
    /// The next peer event; `None` once the daemon has stopped.
    pub async fn next(&mut self) -> Option<MdnsEvent> {
        loop {
            let event = self.rx.recv_async().await.ok()?;
            let parsed = match event {
                ServiceEvent::ServiceResolved(s) => {
                    let ips = s.addresses.iter().map(|a| a.to_ip_addr());
                    let txt = |k: &str| s.txt_properties.get_property_val(k).flatten();
                    parse_found(&s.fullname, s.port, ips, txt)
                }
                ServiceEvent::ServiceRemoved(_, fullname) => {
                    instance_node(&fullname).map(|node| MdnsEvent::Lost { node })
                }
                _ => None,
            };
            match parsed {
                Some(e) if Some(event_node(&e)) == self.own => {}
                Some(e) => return Some(e),
                None => {}
            }
        }
    }
}

/// How to reach a peer seen on the LAN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LanPeer {
    /// Its direct addresses.
    pub addrs: Vec<SocketAddr>,
    /// Its relay, if it named one.
    pub relay: Option<String>,
}

/// mDNS as a discovery source: announces this node and keeps, in the background, the peers
/// seen on the LAN (at most [`MAX_LAN_PEERS`]). Clones share one daemon; the last one dropped
/// withdraws the announcement.
#[derive(Clone)]
pub struct LanPeers {
    mdns: Arc<Mutex<Mdns>>,
    seen: watch::Receiver<HashMap<NodeId, LanPeer>>,
}

impl std::fmt::Debug for LanPeers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LanPeers")
            .field("seen", &self.seen.borrow().len())
            .finish_non_exhaustive()
    }
}

impl LanPeers {
    /// Starts the daemon and browsing. Must be called within a Tokio runtime.
    pub fn start(config: &MdnsConfig) -> Result<LanPeers, MdnsError> {
        let mdns = Mdns::new(config)?;
        let mut browser = mdns.browse()?;
        let (tx, seen) = watch::channel(HashMap::new());
        tokio::spawn(async move {
            while let Some(event) = browser.next().await {
                tx.send_if_modified(|seen| match event {
                    MdnsEvent::Found { node, addrs, relay } => {
                        if seen.len() >= MAX_LAN_PEERS && !seen.contains_key(&node) {
                            return false;
                        }
                        seen.insert(node, LanPeer { addrs, relay });
                        true
                    }
                    MdnsEvent::Lost { node } => seen.remove(&node).is_some(),
                });
            }
        });
        Ok(LanPeers {
            mdns: Arc::new(Mutex::new(mdns)),
            seen,
        })
    }

    /// Announces this node (see [`Mdns::announce`]); a second call replaces the first.
    pub fn announce(
        &self,
        node: NodeId,
        port: u16,
        direct: &[SocketAddr],
        relay: Option<&str>,
    ) -> Result<(), MdnsError> {
        let mut mdns = self.mdns.lock().unwrap_or_else(|e| e.into_inner());
        mdns.announce(node, port, direct, relay)
    }

    /// The peers seen so far.
    pub fn peers(&self) -> Vec<(NodeId, LanPeer)> {
        let own = self
            .mdns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .announced;
        let seen = self.seen.borrow();
        let mut out: Vec<_> = seen
            .iter()
            .filter(|(n, _)| Some(**n) != own)
            .map(|(n, p)| (*n, p.clone()))
            .collect();
        out.sort_by_key(|(n, _)| *n);
        out
    }

    /// `node` as seen on the LAN, waiting up to `wait` for it to show up.
    pub async fn find(&self, node: &NodeId, wait: Duration) -> Option<LanPeer> {
        let mut seen = self.seen.clone();
        let found = tokio::time::timeout(wait, seen.wait_for(|s| s.contains_key(node)))
            .await
            .ok()?
            .ok()?
            .get(node)
            .cloned();
        found
    }
}

fn event_node(e: &MdnsEvent) -> NodeId {
    match e {
        MdnsEvent::Found { node, .. } | MdnsEvent::Lost { node } => *node,
    }
}

/// The NodeId an instance's full name (`<id>._burrow._udp.local.`) stands for.
fn instance_node(fullname: &str) -> Option<NodeId> {
    let instance = fullname.strip_suffix(SERVICE_TYPE)?.strip_suffix('.')?;
    instance.parse().ok()
}

/// Validates a resolved announcement; `None` drops it.
fn parse_found<'a>(
    fullname: &str,
    port: u16,
    ips: impl Iterator<Item = IpAddr>,
    txt: impl Fn(&str) -> Option<&'a [u8]>,
) -> Option<MdnsEvent> {
    let node = instance_node(fullname)?;
    let claimed: NodeId = std::str::from_utf8(txt("id")?).ok()?.parse().ok()?;
    if claimed != node {
        debug!(fullname, "mDNS instance name and id differ; ignored");
        return None;
    }
    let usable =
        |a: &SocketAddr| a.port() != 0 && !a.ip().is_unspecified() && !a.ip().is_multicast();
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let from_txt = (0..MAX_ADDRS).filter_map(|i| {
        std::str::from_utf8(txt(&format!("a{i}"))?)
            .ok()?
            .parse::<SocketAddr>()
            .ok()
    });
    let from_records = ips.take(MAX_ADDRS).map(|ip| SocketAddr::new(ip, port));
    for a in from_txt.chain(from_records) {
        if addrs.len() == MAX_ADDRS {
            break;
        }
        if usable(&a) && !addrs.contains(&a) {
            addrs.push(a);
        }
    }
    let relay = txt("relay")
        .and_then(|r| std::str::from_utf8(r).ok())
        .filter(|r| {
            r.len() <= MAX_RELAY_URL_LEN && (r.starts_with("http://") || r.starts_with("https://"))
        })
        .map(str::to_string);
    Some(MdnsEvent::Found { node, addrs, relay })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burrow_proto::identity::SecretKey;
    use std::collections::HashMap;

    fn id() -> NodeId {
        SecretKey::from_bytes([9; 32]).node_id()
    }

    fn parse(fullname: &str, ips: &[&str], txt: &HashMap<String, Vec<u8>>) -> Option<MdnsEvent> {
        let ips: Vec<IpAddr> = ips.iter().map(|s| s.parse().unwrap()).collect();
        parse_found(fullname, 7000, ips.into_iter(), |k| {
            txt.get(k).map(Vec::as_slice)
        })
    }

    fn txt(pairs: &[(&str, &[u8])]) -> HashMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect()
    }

    #[test]
    fn a_good_announcement_gives_its_node_addresses_and_relay() {
        let name = format!("{}.{SERVICE_TYPE}", id());
        let t = txt(&[
            ("id", id().to_string().as_bytes()),
            ("a0", b"192.168.1.5:7000"),
            ("a1", b"[fe80::1]:7001"),
            ("relay", b"https://relay.example:443"),
        ]);
        let e = parse(&name, &["192.168.1.5", "10.0.0.2"], &t).unwrap();
        assert_eq!(
            e,
            MdnsEvent::Found {
                node: id(),
                addrs: vec![
                    "192.168.1.5:7000".parse().unwrap(),
                    "[fe80::1]:7001".parse().unwrap(),
                    "10.0.0.2:7000".parse().unwrap(),
                ],
                relay: Some("https://relay.example:443".into()),
            }
        );
        assert_eq!(instance_node(&name), Some(id()));
    }

    #[test]
    fn hostile_announcements_are_dropped_or_trimmed() {
        let other = SecretKey::from_bytes([8; 32]).node_id();
        let name = format!("{}.{SERVICE_TYPE}", id());
        // Name and id disagree, id missing, id not a key, name not a key.
        let lying = txt(&[("id", other.to_string().as_bytes())]);
        assert_eq!(parse(&name, &[], &lying), None);
        assert_eq!(parse(&name, &[], &txt(&[])), None);
        assert_eq!(parse(&name, &[], &txt(&[("id", &[0xff, 0xfe])])), None);
        let named = format!("printer.{SERVICE_TYPE}");
        assert_eq!(parse(&named, &[], &txt(&[("id", b"printer")])), None);
        assert_eq!(instance_node("x"), None);
        assert_eq!(instance_node(SERVICE_TYPE), None);

        // Junk addresses go, the rest are capped; a bad relay is dropped.
        let mut t = txt(&[
            ("id", id().to_string().as_bytes()),
            ("a0", b"0.0.0.0:1"),
            ("a1", b"224.0.0.251:5353"),
            ("a2", b"1.2.3.4:0"),
            ("a3", b"not an address"),
            ("relay", b"javascript:alert(1)"),
        ]);
        let many: Vec<String> = (0..100).map(|i| format!("10.0.{i}.1")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let Some(MdnsEvent::Found { addrs, relay, .. }) = parse(&name, &many, &t) else {
            panic!("a valid id with bad extras is still a peer");
        };
        assert_eq!(addrs.len(), MAX_ADDRS);
        assert!(addrs
            .iter()
            .all(|a| a.ip().to_string().starts_with("10.0.")));
        assert_eq!(relay, None);
        t.insert(
            "relay".into(),
            format!("https://{}", "x".repeat(300)).into_bytes(),
        );
        let Some(MdnsEvent::Found { relay, .. }) = parse(&name, &[], &t) else {
            panic!()
        };
        assert_eq!(relay, None);
    }
}
