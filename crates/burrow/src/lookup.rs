//! Finding how to reach a node by its key alone: bootstrap registries, the Mainline DHT and
//! mDNS behind one call. The first signed answer is returned at once; the sources still asking
//! go on in the background, and what they find is merged into a cache that later calls read.
//!
//! Registry and DHT answers are records signed by the node's own key, so a source can withhold
//! a node but never misdirect to another address set; of two records the newer (higher `seq`)
//! wins. mDNS answers are unsigned LAN hints that any host on the LAN can send: they contribute
//! direct addresses and nothing else, never a relay (which a dialler would log in to and send
//! through) nor a record's place. A hint that comes first waits up to [`HINT_GRACE`] for a
//! signed answer to join; alone, it is a ticket of LAN addresses with no relay. Either way the
//! QUIC handshake proves the key, so a lie costs a failed dial, not a connection to the wrong
//! node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burrow_proto::record::NodeRecord;
use burrow_proto::relay::RelayUrl;
use burrow_proto::ticket::Ticket;
use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::clock::unix_now;
use crate::dht::DhtDiscovery;
use crate::mdns::{LanPeer, LanPeers};
use crate::registry_client::{RegistryClient, RegistryClientOptions};
use crate::NodeId;

mod members;
pub use members::{
    list_members, Listing, Member, Members, MembersError, MAX_PAGES, PAGE_SIZE, PARALLEL_RESOLVES,
    RESOLVE_TIMEOUT,
};

/// How long a resolved answer is served from the cache.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// Most nodes the cache holds; past it, the oldest answer goes.
pub const CACHE_CAPACITY: usize = 4096;
/// How long mDNS is given to see a node that has not announced itself yet.
pub const MDNS_WAIT: Duration = Duration::from_secs(3);
/// How long an unsigned hint that answered first waits for a signed record, while a registry
/// or the DHT is still asking: about a registry's round trips over the internet.
pub const HINT_GRACE: Duration = Duration::from_secs(1);
/// [`Found::source`] of an answer from mDNS alone.
const MDNS: &str = "mdns";
/// Most direct addresses a merged answer keeps.
const MAX_MERGED_ADDRS: usize = 32;

/// Where to look.
#[derive(Clone)]
pub struct Lookup {
    registries: Option<RegistryClient>,
    dht: Option<Arc<DhtDiscovery>>,
    mdns: Option<LanPeers>,
    timeout: Duration,
    cache: Arc<Mutex<HashMap<NodeId, (Found, Instant)>>>,
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookup")
            .field(
                "registries",
                &self.registries.as_ref().map(|r| r.registries().to_vec()),
            )
            .field("dht", &self.dht.is_some())
            .field("mdns", &self.mdns.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A node's addressing, and who told us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Relays and direct addresses, ready for [`crate::endpoint::Endpoint::connect`].
    pub ticket: Ticket,
    /// Where the signed record came from, `registry` or `dht`; `mdns` when only the LAN
    /// answered.
    pub source: &'static str,
    /// The signed record's sequence number (0 for mDNS answers alone).
    pub seq: u64,
}

impl Found {
    /// A verified record's addressing, unless it has expired.
    pub fn from_record(rec: NodeRecord, source: &'static str) -> Option<Found> {
        (!rec.is_expired(unix_now())).then_some(Found {
            ticket: Ticket {
                node_id: rec.node_id,
                relays: rec.relays,
                addrs: rec.addrs,
            },
            source,
            seq: rec.seq,
        })
    }

    /// The direct addresses an mDNS announcement of `node` gives, unless it gave none. The
    /// relay it may name is left out: the announcement is unsigned.
    pub fn from_lan(node: NodeId, peer: LanPeer) -> Option<Found> {
        (!peer.addrs.is_empty()).then(|| Found {
            ticket: Ticket {
                node_id: node,
                relays: Vec::new(),
                addrs: peer.addrs,
            },
            source: MDNS,
            seq: 0,
        })
    }

    /// Whether a signed record stands behind this answer (not mDNS hints alone).
    fn is_signed(&self) -> bool {
        self.source != MDNS
    }

    /// `self` with what `later` adds, whichever came first: the newer signed record (higher
    /// `seq`) is the base, and unsigned hints only add their direct addresses.
    pub fn merged(self, later: Found) -> Found {
        let newer_record = later.is_signed() && (!self.is_signed() || later.seq > self.seq);
        let (mut base, extra) = if newer_record {
            (later, self)
        } else {
            (self, later)
        };
        if !extra.is_signed() {
            for a in extra.ticket.addrs {
                if !base.ticket.addrs.contains(&a) && base.ticket.addrs.len() < MAX_MERGED_ADDRS {
                    base.ticket.addrs.push(a);
                }
            }
        }
        base
    }
}

/// Why a node was not found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// No registry, DHT or mDNS to ask.
    #[error("no discovery source configured (give a registry or a DHT, or enable mDNS)")]
    NoSources,
    /// Every source answered without a valid, unexpired record, or timed out.
    #[error("no source knows {0}")]
    NotFound(NodeId),
}

impl Lookup {
    /// Registries (relay URLs) and an optional running DHT node; each lookup gives up after
    /// `timeout`.
    pub fn new(
        registries: Vec<RelayUrl>,
        dht: Option<Arc<DhtDiscovery>>,
        timeout: Duration,
    ) -> Lookup {
        let registries = (!registries.is_empty()).then(|| {
            RegistryClient::new(
                registries,
                RegistryClientOptions {
                    timeout,
                    ..Default::default()
                },
            )
        });
        Lookup {
            registries,
            dht,
            mdns: None,
            timeout,
            cache: Arc::default(),
        }
    }

    /// Also asks the LAN through mDNS (waiting at most [`MDNS_WAIT`] for a node to appear).
    pub fn with_mdns(mut self, lan: LanPeers) -> Lookup {
        self.mdns = Some(lan);
        self
    }

    /// The first signed answer (with the hints that came before it), or hints alone when no
    /// signed source answered within [`HINT_GRACE`] of them; or a cached answer.
    pub async fn resolve(&self, node: &NodeId) -> Result<Found, LookupError> {
        self.resolve_with_updates(node)
            .await
            .map(|(found, _)| found)
    }

    /// The first answer, as [`Lookup::resolve`], and a channel that yields it merged with every
    /// other source's once they are done (not sent when nothing was added, or on a cache hit).
    pub async fn resolve_with_updates(
        &self,
        node: &NodeId,
    ) -> Result<(Found, oneshot::Receiver<Found>), LookupError> {
        let (tx, rx) = oneshot::channel();
        if let Some(found) = self.cached(node) {
            return Ok((found, rx));
        }
        let mut asks = self.ask_all(*node)?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let first = first_answer(&mut asks, deadline)
            .await
            .ok_or(LookupError::NotFound(*node))?;
        self.remember(first.clone());
        if !asks.is_empty() {
            let this = self.clone();
            let first_ticket = first.ticket.clone();
            let mut merged = first.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout_at(deadline, async {
                    while let Some(r) = asks.join_next().await {
                        if let Ok(Some(found)) = r {
                            merged = merged.clone().merged(found);
                        }
                    }
                })
                .await;
                this.remember(merged.clone());
                if merged.ticket != first_ticket {
                    let _ = tx.send(merged);
                }
            });
        }
        Ok((first, rx))
    }

    /// Starts every source's lookup; each yields an answer or `None`.
    fn ask_all(&self, node: NodeId) -> Result<JoinSet<Option<Found>>, LookupError> {
        if self.registries.is_none() && self.dht.is_none() && self.mdns.is_none() {
            return Err(LookupError::NoSources);
        }
        let mut asks = JoinSet::new();
        if let Some(reg) = self.registries.clone() {
            asks.spawn(async move {
                let rec = reg.lookup(&node).await.ok()?;
                Found::from_record(rec.record().clone(), "registry")
            });
        }
        if let Some(dht) = self.dht.clone() {
            asks.spawn(async move {
                let item = dht.resolve(&node).await?;
                let rec = NodeRecord::decode_payload_for(&item.value, &node).ok()?;
                Found::from_record(rec, "dht")
            });
        }
        if let Some(lan) = self.mdns.clone() {
            let wait = MDNS_WAIT.min(self.timeout);
            asks.spawn(async move { Found::from_lan(node, lan.find(&node, wait).await?) });
        }
        Ok(asks)
    }

    fn cached(&self, node: &NodeId) -> Option<Found> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (found, at) = cache.get(node)?;
        (at.elapsed() < CACHE_TTL).then(|| found.clone())
    }

    fn remember(&self, found: Found) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
        if cache.len() >= CACHE_CAPACITY && !cache.contains_key(&found.ticket.node_id) {
            if let Some(oldest) = cache.iter().min_by_key(|(_, (_, at))| *at).map(|(n, _)| *n) {
                cache.remove(&oldest);
            }
        }
        cache.insert(found.ticket.node_id, (found, Instant::now()));
    }
}

/// The first signed answer of `asks` before `deadline`, merged with the hints that came before
/// it; the hints alone once every other source is done, or [`HINT_GRACE`] after the first of
/// them (at the latest at `deadline`).
async fn first_answer(
    asks: &mut JoinSet<Option<Found>>,
    deadline: tokio::time::Instant,
) -> Option<Found> {
    let mut hints: Option<Found> = None;
    let mut until = deadline;
    loop {
        let Ok(Some(result)) = tokio::time::timeout_at(until, asks.join_next()).await else {
            return hints;
        };
        let Ok(Some(found)) = result else { continue };
        let found = match hints.take() {
            Some(h) => h.merged(found),
            None => found,
        };
        if found.is_signed() {
            return Some(found);
        }
        hints = Some(found);
        until = until.min(tokio::time::Instant::now() + HINT_GRACE);
    }
}

/// The records `nodes` keep in the DHT, in the order of `nodes`: `None` where the DHT has no
/// valid, unexpired record or the lookup took longer than `timeout`. At most `parallel`
/// lookups run at once, since each one's answers arrive as a burst on the node's one socket.
pub async fn resolve_in_dht(
    dht: &DhtDiscovery,
    nodes: &[NodeId],
    parallel: usize,
    timeout: Duration,
) -> Vec<Option<NodeRecord>> {
    let now = unix_now();
    futures_util::stream::iter(nodes)
        .map(|node| async move {
            let item = tokio::time::timeout(timeout, dht.resolve(node))
                .await
                .ok()??;
            NodeRecord::decode_payload_for(&item.value, node)
                .ok()
                .filter(|r| !r.is_expired(now))
        })
        .buffered(parallel.max(1))
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use burrow_proto::identity::SecretKey;

    fn node() -> NodeId {
        SecretKey::from_bytes([3; 32]).node_id()
    }

    fn found(source: &'static str, seq: u64, addrs: &[&str]) -> Found {
        Found {
            ticket: Ticket {
                node_id: node(),
                relays: vec!["https://relay.example:443".parse().unwrap()],
                addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            },
            source,
            seq,
        }
    }

    /// A LAN answer as mDNS gives it, naming a relay.
    fn lan(addrs: &[&str]) -> Found {
        let peer = LanPeer {
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            relay: Some("http://192.168.1.66:8080".into()),
        };
        Found::from_lan(node(), peer).unwrap()
    }

    #[test]
    fn an_mdns_answer_gives_addresses_only() {
        let hint = lan(&["192.168.1.2:7"]);
        assert_eq!(hint.ticket.relays, []);
        assert_eq!(hint.ticket.addrs, ["192.168.1.2:7".parse().unwrap()]);
        assert_eq!(
            (hint.source, hint.seq, hint.is_signed()),
            ("mdns", 0, false)
        );
        let no_addrs = LanPeer {
            addrs: Vec::new(),
            relay: Some("http://192.168.1.66:8080".into()),
        };
        assert_eq!(Found::from_lan(node(), no_addrs), None);
    }

    #[test]
    fn the_newer_record_wins_and_mdns_only_adds_addresses() {
        let old = found("dht", 5, &["1.1.1.1:1"]);
        let new = found("registry", 9, &["2.2.2.2:2"]);
        let mut hint = lan(&["192.168.1.2:7", "2.2.2.2:2"]);
        // Even a hint that carried a relay adds its addresses only.
        hint.ticket.relays = vec!["http://192.168.1.66:8080".parse().unwrap()];
        assert_eq!(old.clone().merged(new.clone()), new);
        assert_eq!(new.clone().merged(old.clone()), new);
        let both = new.clone().merged(hint.clone());
        assert_eq!((both.source, both.seq), ("registry", 9));
        assert_eq!(both.ticket.relays, new.ticket.relays);
        assert_eq!(
            both.ticket.addrs,
            ["2.2.2.2:2", "192.168.1.2:7"].map(|a| a.parse().unwrap())
        );
        // Whichever came first, the signed record is the base.
        assert_eq!(hint.clone().merged(new.clone()), both);
        // Two hints: the addresses of both, still no relay of theirs and no record's place.
        let hints = lan(&["192.168.1.2:7"]).merged(lan(&["10.0.0.2:7"]));
        assert!(!hints.is_signed() && hints.ticket.relays.is_empty());
        assert_eq!(hints.ticket.addrs.len(), 2);
    }

    fn later(ms: u64) -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_millis(ms)
    }

    /// `answers`, each after its delay, as [`Lookup`]'s sources would give them.
    fn asks(answers: Vec<(u64, Option<Found>)>) -> JoinSet<Option<Found>> {
        let mut asks = JoinSet::new();
        for (ms, answer) in answers {
            asks.spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                answer
            });
        }
        asks
    }

    #[tokio::test]
    async fn a_hint_that_answers_first_waits_for_a_signed_record() {
        // The record comes within the grace: it is the answer, with the hint's addresses.
        let record = found("registry", 4, &["2.2.2.2:2"]);
        let hint = lan(&["192.168.1.2:7"]);
        let mut both = asks(vec![(0, Some(hint.clone())), (100, Some(record.clone()))]);
        let first = first_answer(&mut both, later(10_000)).await.unwrap();
        assert_eq!(first, record.clone().merged(hint.clone()));
        assert_eq!(first.ticket.relays, record.ticket.relays);

        // No signed source: the hint at once, addresses and no relay.
        let start = tokio::time::Instant::now();
        let mut alone = asks(vec![(0, Some(hint.clone())), (50, None)]);
        assert_eq!(
            first_answer(&mut alone, later(10_000)).await,
            Some(hint.clone())
        );
        assert!(start.elapsed() < HINT_GRACE / 2, "{:?}", start.elapsed());

        // A record later than the grace: the hint alone, then, and the record left to the
        // background merge.
        let start = tokio::time::Instant::now();
        let late = HINT_GRACE.as_millis() as u64 + 500;
        let mut slow = asks(vec![(0, Some(hint.clone())), (late, Some(record))]);
        assert_eq!(
            first_answer(&mut slow, later(10_000)).await,
            Some(hint.clone())
        );
        assert!(start.elapsed() >= HINT_GRACE, "{:?}", start.elapsed());
        assert_eq!(slow.len(), 1);

        // The lookup's deadline comes first: the hint then, and nothing at all before it.
        let mut slow = asks(vec![(0, Some(hint.clone())), (late, None)]);
        assert_eq!(first_answer(&mut slow, later(200)).await, Some(hint));
        let mut none = asks(vec![(late, None)]);
        assert_eq!(first_answer(&mut none, later(100)).await, None);
    }

    #[tokio::test]
    async fn no_sources_is_an_error() {
        let d = Lookup::new(Vec::new(), None, Duration::from_secs(1));
        let node = SecretKey::from_bytes([4; 32]).node_id();
        assert_eq!(d.resolve(&node).await, Err(LookupError::NoSources));
    }

    #[test]
    fn the_cache_serves_fresh_answers_and_stays_bounded() {
        let d = Lookup::new(Vec::new(), None, Duration::from_secs(1));
        let f = found("registry", 1, &["1.1.1.1:1"]);
        d.remember(f.clone());
        assert_eq!(d.cached(&f.ticket.node_id), Some(f));
        for i in 0..CACHE_CAPACITY + 10 {
            let mut g = found("dht", 1, &[]);
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64 + 100).to_le_bytes());
            g.ticket.node_id = SecretKey::from_bytes(seed).node_id();
            d.remember(g);
        }
        assert_eq!(d.cache.lock().unwrap().len(), CACHE_CAPACITY);
    }
}
