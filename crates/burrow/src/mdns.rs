//! LAN discovery with multicast DNS (RFC 6762, DNS-SD RFC 6763), through `mdns-sd`.
//!
//! A node announces a service with its name as the instance name, the port of its UDP socket
//! in the SRV record, its addresses in A/AAAA records, and TXT keys: `v=1`, `a0`..`a15`
//! (direct `IP:PORT`s, one per key so that no TXT string passes 255 bytes) and optionally
//! `relay=<URL>`. Browsing yields [`MdnsEvent`]s as peers appear and leave. A node is named
//! one of two ways ([`LanName`]):
//!
//! - by its [`NodeId`], under [`SERVICE_TYPE`], with `id=<NodeId>` in TXT too: anyone who knows
//!   the key finds the node;
//! - by a [`LanTag`], under [`TAG_SERVICE_TYPE`]: an opaque name that only those who can derive
//!   it (the members of a mesh, from its id) match to a node, so knowing a node's key is not
//!   enough to find it on the LAN.
//!
//! Everything received is hostile input: an instance whose name is not a name of its kind, or
//! whose `id` differs from its name, is dropped; at most [`MAX_ADDRS`] addresses are kept, each
//! parsed and checked (no unspecified, multicast or port-0 addresses); a relay URL must be
//! short `http(s)`. A peer is only a hint: connecting authenticates its key.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use burrow_proto::identity::NodeId;
use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use tokio::sync::watch;
use tracing::debug;

/// The DNS-SD service type of nodes announced by node id.
pub const SERVICE_TYPE: &str = "_burrow._udp.local.";
/// The DNS-SD service type of nodes announced by [`LanTag`] (mesh members).
pub const TAG_SERVICE_TYPE: &str = "_burrow-mesh._udp.local.";
/// Most addresses announced, and kept from one peer.
pub const MAX_ADDRS: usize = 16;
/// Longest relay URL accepted.
pub const MAX_RELAY_URL_LEN: usize = 200;
/// Most LAN peers [`LanPeers`] remembers: a hostile LAN can announce without end.
pub const MAX_LAN_PEERS: usize = 1024;

/// How a node is named in its announcement, and so who can find it.
pub trait LanName: Copy + Eq + Ord + Hash + fmt::Debug + Send + Sync + 'static {
    /// The service type names of this kind are announced under.
    const SERVICE_TYPE: &'static str;
    /// The instance name (one DNS label).
    fn instance(&self) -> String;
    /// The name an instance name stands for, if it is one of this kind.
    fn from_instance(instance: &str) -> Option<Self>;
    /// TXT keys that name it too, beside `v=1` and the addresses.
    fn txt(&self) -> Vec<(String, String)>;
    /// Whether a resolved announcement's TXT keys agree with its instance name.
    fn matches_txt<'a>(&self, txt: impl Fn(&str) -> Option<&'a [u8]>) -> bool;
}

impl LanName for NodeId {
    const SERVICE_TYPE: &'static str = SERVICE_TYPE;

    fn instance(&self) -> String {
        self.to_string()
    }

    fn from_instance(instance: &str) -> Option<Self> {
        instance.parse().ok()
    }

    fn txt(&self) -> Vec<(String, String)> {
        vec![("id".into(), self.to_string())]
    }

    fn matches_txt<'a>(&self, txt: impl Fn(&str) -> Option<&'a [u8]>) -> bool {
        let claimed = txt("id").and_then(|id| std::str::from_utf8(id).ok()?.parse().ok());
        claimed == Some(*self)
    }
}

/// An opaque name announced instead of a node id: 16 bytes, shown as 32 lowercase hex digits.
/// A mesh member's is [`MeshId::lan_tag`](burrow_proto::mesh::id::MeshId::lan_tag).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LanTag(pub [u8; 16]);

impl fmt::Display for LanTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for LanTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LanTag({self})")
    }
}

impl LanName for LanTag {
    const SERVICE_TYPE: &'static str = TAG_SERVICE_TYPE;

    fn instance(&self) -> String {
        self.to_string()
    }

    fn from_instance(instance: &str) -> Option<Self> {
        let hex = instance.as_bytes();
        if hex.len() != 32 {
            return None;
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut tag = [0; 16];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            tag[i] = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(LanTag(tag))
    }

    fn txt(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    fn matches_txt<'a>(&self, _txt: impl Fn(&str) -> Option<&'a [u8]>) -> bool {
        true
    }
}

/// Where to run mDNS.
#[derive(Clone, Debug, Default)]
pub struct MdnsConfig {
    /// Interfaces by name (`eth0`, `wlan0`). With `addresses` also empty: every interface,
    /// mDNS's usual way.
    pub interfaces: Vec<String>,
    /// Interfaces by one of their addresses (the one a node is bound to, say).
    pub addresses: Vec<IpAddr>,
}

impl MdnsConfig {
    /// mDNS on every interface when `bind` is unspecified, else only on the interface of
    /// `bind` (a node bound to one address announces and searches there only).
    pub fn for_bind(bind: IpAddr) -> MdnsConfig {
        MdnsConfig {
            addresses: (!bind.is_unspecified())
                .then_some(bind)
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }
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

/// A peer seen on the LAN, or gone from it; named by its key unless `N` says otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MdnsEvent<N = NodeId> {
    /// A peer announced itself (again, possibly with other addresses).
    Found {
        /// Its name.
        node: N,
        /// Where to reach it directly (at most [`MAX_ADDRS`]).
        addrs: Vec<SocketAddr>,
        /// Its relay, if it named one.
        relay: Option<String>,
    },
    /// A peer said goodbye, or its announcement expired.
    Lost {
        /// Its name.
        node: N,
    },
}

/// An mDNS responder and browser. Dropping it withdraws the announcement (goodbye packets)
/// and stops the daemon thread.
pub struct Mdns {
    daemon: ServiceDaemon,
    /// The full service name announced last.
    announced: Option<String>,
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
    pub fn announce<N: LanName>(
        &mut self,
        node: N,
        port: u16,
        direct: &[SocketAddr],
        relay: Option<&str>,
    ) -> Result<(), MdnsError> {
        let instance = node.instance();
        let direct = &direct[..direct.len().min(MAX_ADDRS)];
        let mut txt: Vec<(String, String)> = vec![("v".into(), "1".into())];
        txt.extend(node.txt());
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
        let host = format!("burrow-{}.local.", &instance[..16.min(instance.len())]);
        let mut info =
            ServiceInfo::new(N::SERVICE_TYPE, &instance, &host, &ips[..], port, &txt[..])?;
        if ips.is_empty() {
            info = info.enable_addr_auto();
        }
        self.daemon.register(info)?;
        self.announced = Some(full_name::<N>(&instance));
        Ok(())
    }

    /// Starts browsing for peers named as `N` names them (its own announcement is left out).
    pub fn browse<N: LanName>(&self) -> Result<MdnsBrowser<N>, MdnsError> {
        Ok(MdnsBrowser {
            rx: self.daemon.browse(N::SERVICE_TYPE)?,
            own: self.announced.clone(),
            kind: std::marker::PhantomData,
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
pub struct MdnsBrowser<N = NodeId> {
    rx: mdns_sd::Receiver<ServiceEvent>,
    own: Option<String>,
    kind: std::marker::PhantomData<N>,
}

impl<N: LanName> MdnsBrowser<N> {
    /// The next peer event; `None` once the daemon has stopped.
    pub async fn next(&mut self) -> Option<MdnsEvent<N>> {
        loop {
            let event = self.rx.recv_async().await.ok()?;
            let (fullname, parsed) = match event {
                ServiceEvent::ServiceResolved(s) => {
                    let ips = s.addresses.iter().map(|a| a.to_ip_addr());
                    let txt = |k: &str| s.txt_properties.get_property_val(k).flatten();
                    let found = parse_found(&s.fullname, s.port, ips, txt);
                    (s.fullname.clone(), found)
                }
                ServiceEvent::ServiceRemoved(_, fullname) => {
                    let lost = instance_name::<N>(&fullname).map(|node| MdnsEvent::Lost { node });
                    (fullname, lost)
                }
                _ => continue,
            };
            match parsed {
                Some(_) if self.own.as_deref() == Some(fullname.as_str()) => {}
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
/// seen on the LAN (at most [`MAX_LAN_PEERS`]), named by key unless `N` says otherwise. Clones
/// share one daemon; the last one dropped withdraws the announcement.
#[derive(Clone)]
pub struct LanPeers<N = NodeId> {
    mdns: Arc<Mutex<Mdns>>,
    seen: watch::Receiver<HashMap<N, LanPeer>>,
}

impl<N> fmt::Debug for LanPeers<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LanPeers")
            .field("seen", &self.seen.borrow().len())
            .finish_non_exhaustive()
    }
}

impl<N: LanName> LanPeers<N> {
    /// Starts the daemon and browsing. Must be called within a Tokio runtime.
    pub fn start(config: &MdnsConfig) -> Result<LanPeers<N>, MdnsError> {
        let mdns = Mdns::new(config)?;
        let mut browser = mdns.browse::<N>()?;
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
        node: N,
        port: u16,
        direct: &[SocketAddr],
        relay: Option<&str>,
    ) -> Result<(), MdnsError> {
        let mut mdns = self.mdns.lock().unwrap_or_else(|e| e.into_inner());
        mdns.announce(node, port, direct, relay)
    }

    /// The peers seen so far.
    pub fn peers(&self) -> Vec<(N, LanPeer)> {
        let own = self
            .mdns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .announced
            .clone();
        let seen = self.seen.borrow();
        let mut out: Vec<_> = seen
            .iter()
            .filter(|(n, _)| own.as_deref() != Some(full_name::<N>(&n.instance()).as_str()))
            .map(|(n, p)| (*n, p.clone()))
            .collect();
        out.sort_by_key(|(n, _)| *n);
        out
    }

    /// `node` as seen on the LAN so far.
    pub fn get(&self, node: &N) -> Option<LanPeer> {
        self.seen.borrow().get(node).cloned()
    }

    /// `node` as seen on the LAN, waiting up to `wait` for it to show up.
    pub async fn find(&self, node: &N, wait: Duration) -> Option<LanPeer> {
        let mut seen = self.seen.clone();
        let found = tokio::time::timeout(wait, seen.wait_for(|s| s.contains_key(node)))
            .await
            .ok()?
            .ok()?
            .get(node)
            .cloned();
        found
    }

    /// Resolves when the peers seen change next (never, once browsing has stopped).
    pub async fn changed(&self) {
        let mut seen = self.seen.clone();
        seen.borrow_and_update();
        if seen.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The full service name of instance `instance` of `N`'s kind.
fn full_name<N: LanName>(instance: &str) -> String {
    format!("{instance}.{}", N::SERVICE_TYPE)
}

/// The name an instance's full name (`<instance>.<service type>`) stands for.
fn instance_name<N: LanName>(fullname: &str) -> Option<N> {
    let instance = fullname.strip_suffix(N::SERVICE_TYPE)?.strip_suffix('.')?;
    N::from_instance(instance)
}

/// Validates a resolved announcement; `None` drops it.
fn parse_found<'a, N: LanName>(
    fullname: &str,
    port: u16,
    ips: impl Iterator<Item = IpAddr>,
    txt: impl Fn(&str) -> Option<&'a [u8]>,
) -> Option<MdnsEvent<N>> {
    let node = instance_name::<N>(fullname)?;
    if !node.matches_txt(&txt) {
        debug!(
            fullname,
            "mDNS instance name and TXT keys disagree; ignored"
        );
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
        assert_eq!(instance_name::<NodeId>(&name), Some(id()));
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
        assert_eq!(instance_name::<NodeId>("x"), None);
        assert_eq!(instance_name::<NodeId>(SERVICE_TYPE), None);

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

    #[test]
    fn tagged_announcements_name_no_node_and_parse_only_as_tags() {
        let tag = LanTag([0xab; 16]);
        assert_eq!(tag.instance(), "ab".repeat(16));
        assert_eq!(LanTag::from_instance(&tag.instance()), Some(tag));
        assert!(tag.txt().is_empty(), "no id in the TXT keys");
        let name = full_name::<LanTag>(&tag.instance());
        assert_eq!(name, format!("{}.{TAG_SERVICE_TYPE}", "ab".repeat(16)));
        let t = txt(&[("a0", b"192.168.1.5:7000")]);
        let found = parse_found::<LanTag>(&name, 7000, std::iter::empty(), |k| {
            t.get(k).map(Vec::as_slice)
        });
        assert_eq!(
            found,
            Some(MdnsEvent::Found {
                node: tag,
                addrs: vec!["192.168.1.5:7000".parse().unwrap()],
                relay: None,
            })
        );
        // Not a tag: uppercase, short, not hex, a node id, or the other service type.
        for bad in [
            "AB".repeat(16),
            "ab".repeat(15),
            "zz".repeat(16),
            id().to_string(),
        ] {
            assert_eq!(LanTag::from_instance(&bad), None, "{bad}");
        }
        assert_eq!(
            instance_name::<LanTag>(&format!("{}.{SERVICE_TYPE}", tag)),
            None
        );
        assert_eq!(instance_name::<NodeId>(&name), None);
    }

    #[test]
    fn a_bind_address_limits_mdns_to_its_interface() {
        assert!(MdnsConfig::for_bind("0.0.0.0".parse().unwrap())
            .addresses
            .is_empty());
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(MdnsConfig::for_bind(lo).addresses, [lo]);
    }
}
