//! Discovery through BitTorrent's Mainline DHT (BEP 5, BEP 44), with the `mainline` crate.
//!
//! # Records
//!
//! A burrow NodeId is an Ed25519 public key, and so is the key of a BEP 44 mutable item: a
//! node publishes its record (opaque bytes here, at most [`MAX_VALUE_LEN`]) as a mutable item
//! signed by its own key, salted with [`RECORD_SALT`] so that other uses of the same key
//! (pkarr, for one, uses it unsalted) never collide with burrow's. Anyone can then
//! [`resolve`](DhtDiscovery::resolve) a NodeId to the most recent record without a server of
//! ours. DHT nodes and `mainline` check every item's signature, so nobody can publish for a
//! key they do not hold, and a lower `seq` than the one stored is refused (BEP 44 error 302),
//! so an old record cannot be replayed over a newer one. Stored items are forgotten after
//! about two hours, so a node republishes on a schedule ([`crate::publisher`] does).
//! Callers pick `seq`; Unix time is a good choice (it survives restarts).
//!
//! # Namespaces
//!
//! Members of a [`Namespace`] (a name and an optional secret shared out of band) find each
//! other's NodeIds with [`announce`](DhtDiscovery::announce) and
//! [`members`](DhtDiscovery::members). BEP 5's `announce_peer`/`get_peers` store only IP
//! addresses, not keys, and the signed-peers draft is not in `mainline`; so the namespace
//! keeps a *directory* of BEP 44 items instead:
//!
//! * `topic = SHA-256("burrow namespace v1" || secret? || name)` (length-prefixed secret). From
//!   it come an Ed25519 *directory key* and a ChaCha20-Poly1305 key. Everyone who knows the
//!   name and secret holds both; nobody else can compute them.
//! * The directory is [`SLOTS`] mutable items under the directory key, salted
//!   `burrow/ns/v1/<slot>`; their 20-byte DHT targets are `SHA-1(directory key || salt)` as
//!   BEP 44 defines. A member's slot is a hash of the topic and its NodeId, so members only
//!   contend with the few that share their slot.
//! * A slot holds up to [`ENTRIES_PER_SLOT`] entries: NodeId, time, and the member's own
//!   signature over (topic, time). The whole value is encrypted, so the DHT nodes that store
//!   it see neither NodeIds nor the namespace.
//! * Announcing is read-modify-write of one's slot with BEP 44 compare-and-swap (`cas` = the
//!   seq read), then a read-back; a member that lost a race (its entry missing) retries with
//!   random backoff. Listing reads every slot and keeps the entries whose signature verifies
//!   and whose time is within [`MEMBER_TTL_SECS`]. Members re-announce on a schedule
//!   ([`crate::publisher`] does).
//!
//! Limits, stated plainly:
//!
//! * **Size.** At most `SLOTS × ENTRIES_PER_SLOT` = 144 members are listed, fewer in practice
//!   since slots fill unevenly (a full slot drops its oldest entry, and that member pushes back
//!   on its next re-announce). Large groups need gossip between members on top.
//! * **Trust inside.** Anyone with the name and secret holds the directory key: they cannot
//!   forge another key's entry (entries are signed), but they can erase entries, or store a
//!   slot with the highest possible `seq`, which freezes that slot until the DHT forgets it.
//!   An open namespace (no secret) is open to this vandalism from anyone who guesses its name.
//! * **Consistency.** Writers that race may lose an update; the read-back retries and the
//!   schedule heal it, so a listing can miss a member for up to one re-announce interval.
//! * **Privacy.** Outsiders cannot find or read the directory. But the DHT nodes near a slot's
//!   target see the IP addresses of everyone who reads or writes it, and can link those IPs to
//!   one (unknown) namespace; a record resolved by NodeId is public, as is who asks for it.
//! * **Cost.** A listing is [`SLOTS`] DHT lookups in parallel; an announce is two lookups and
//!   one store.
//! * **Clocks.** Entry freshness uses wall clocks; entries more than [`MAX_SKEW_SECS`] in the
//!   future are ignored.
//!
//! `mainline` speaks IPv4 only and runs each node on its own thread, behind an async handle.
//! burrow builds it with fixes (`patches/mainline/BURROW-PATCH.md`), three of them for
//! libtorrent's DHT: queries with 2-byte transaction ids get answers, a read-only node refuses
//! queries at once instead of leaving the sender to time out, and BEP 44 puts need no `target`.

mod namespace;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::time::Duration;

use burrow_proto::identity::{NodeId, SecretKey};
use futures_util::StreamExt;
use mainline::async_dht::AsyncDht;
use mainline::errors::{ConcurrencyError, PutMutableError, PutQueryError};
use mainline::{Dht, MutableItem, SigningKey};
use tracing::{debug, info, warn};

use crate::clock::unix_now;
use namespace::{merge, Entry};
pub use namespace::{
    Namespace, ENTRIES_PER_SLOT, MAX_SEALED_LEN, MAX_SKEW_SECS, MEMBER_TTL_SECS, SLOTS,
};

/// The largest value a BEP 44 item holds, in bytes.
pub const MAX_VALUE_LEN: usize = 1000;
/// The salt of a node's record item (BEP 44 allows up to 64 bytes).
pub const RECORD_SALT: &[u8] = b"burrow/record/v1";
/// Mainline's well-known bootstrap nodes, the default for [`DhtConfig::bootstrap`].
pub const DEFAULT_BOOTSTRAP: &[&str] = &[
    "router.bittorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "dht.libtorrent.org:25401",
    "router.utorrent.com:6881",
];
/// Tries of one directory read-modify-write before giving up.
const WRITE_ATTEMPTS: u32 = 8;
/// Directory slots read at once by [`DhtDiscovery::members`].
const PARALLEL_SLOT_READS: usize = 2;

/// How to run the DHT node.
#[derive(Clone, Debug)]
pub struct DhtConfig {
    /// Nodes to join the DHT through, as `HOST:PORT`. Empty: start a new network (the first
    /// node of a private DHT).
    pub bootstrap: Vec<String>,
    /// UDP address to bind (IPv4: `mainline` has no IPv6). Port 0 picks a free one.
    pub bind: SocketAddrV4,
    /// Serve other nodes' queries and store their items from the start. Otherwise the node
    /// starts as a client and turns server once it sees it is reachable (`mainline`'s
    /// adaptive mode); a client is read-only (BEP 43) and answers queries with an error.
    pub server: bool,
    /// How long to wait for one DHT node's answer.
    pub request_timeout: Duration,
}

impl Default for DhtConfig {
    fn default() -> Self {
        DhtConfig {
            bootstrap: DEFAULT_BOOTSTRAP.iter().map(|s| s.to_string()).collect(),
            bind: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
            server: false,
            request_timeout: mainline::DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// What can go wrong with the DHT.
#[derive(Debug, thiserror::Error)]
pub enum DhtError {
    /// The UDP socket could not be bound.
    #[error("cannot start a DHT node on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddrV4,
        /// Why.
        source: std::io::Error,
    },
    /// A bootstrap node is not `HOST:PORT`.
    #[error("bad DHT bootstrap node {0:?}: expected HOST:PORT")]
    Bootstrap(String),
    /// The value does not fit in a BEP 44 item.
    #[error("value is {0} bytes; a DHT item holds at most {MAX_VALUE_LEN}")]
    TooLarge(usize),
    /// The DHT already holds a newer item (a higher `seq`) for this key.
    #[error("the DHT holds a newer item for this key than seq {0}")]
    Stale(i64),
    /// Other writers kept winning the race for a namespace slot.
    #[error("namespace slot still contended after {WRITE_ATTEMPTS} tries")]
    Contended,
    /// No DHT node is known to store at: bootstrapping failed or found nobody.
    #[error("no DHT nodes to store at (not bootstrapped)")]
    NoNodes,
    /// The nodes asked to store it answered with an error.
    #[error("DHT nodes answered error {code}: {description}")]
    Refused {
        /// The KRPC error code.
        code: i32,
        /// Their message.
        description: String,
    },
    /// The store failed otherwise.
    #[error("DHT store failed")]
    Put(#[source] PutMutableError),
}

/// A resolved record: the most recent valid item under a NodeId.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// Its sequence number.
    pub seq: i64,
    /// The record bytes.
    pub value: Vec<u8>,
}

/// A Mainline DHT node used for discovery: publish and resolve records by NodeId, announce
/// and list namespace members. Cheap to clone (clones share the node); the node stops when
/// the last clone is dropped.
#[derive(Clone, Debug)]
pub struct DhtDiscovery {
    dht: AsyncDht,
    local_addr: SocketAddrV4,
}

impl DhtDiscovery {
    /// Binds the socket and starts the node; joining the DHT goes on in the background.
    pub async fn start(config: DhtConfig) -> Result<Self, DhtError> {
        // Name resolution and mainline's start-up block.
        let dht = tokio::task::spawn_blocking(move || build(&config))
            .await
            .expect("DHT start-up panicked")?
            .as_async();
        let local_addr = dht.info().await.local_addr();
        info!(%local_addr, "DHT node started");
        Ok(DhtDiscovery { dht, local_addr })
    }

    /// The UDP address the node listens on.
    pub fn local_addr(&self) -> SocketAddr {
        SocketAddr::V4(self.local_addr)
    }

    /// Waits for the first lookup of its own id; true if it found other nodes.
    pub async fn bootstrapped(&self) -> bool {
        self.dht.bootstrapped().await
    }

    /// Nodes in its routing table, as `IP:PORT` (what another node could bootstrap from).
    pub async fn known_nodes(&self) -> Vec<String> {
        self.dht.to_bootstrap().await
    }

    /// Stores `value` under `key`'s NodeId with sequence number `seq`. Returns how many DHT
    /// nodes stored it. Fails with [`DhtError::Stale`] if the DHT holds a higher `seq`.
    pub async fn publish(&self, key: &SecretKey, value: &[u8], seq: i64) -> Result<u32, DhtError> {
        if value.len() > MAX_VALUE_LEN {
            return Err(DhtError::TooLarge(value.len()));
        }
        let item = MutableItem::new(key.signing_key().clone(), value, seq, Some(RECORD_SALT));
        let outcome = self
            .dht
            .put_mutable(item, None)
            .await
            .map_err(|e| put_error(e, seq))?;
        debug!(node = %key.node_id().short(), seq, stored_at = outcome.stored_at, "published");
        Ok(outcome.stored_at)
    }

    /// The most recent record published under `node`, if the DHT has one. Items whose
    /// signature does not verify under `node`'s key are never returned.
    pub async fn resolve(&self, node: &NodeId) -> Option<Resolved> {
        let item = self
            .dht
            .get_mutable_most_recent(node.as_bytes(), Some(RECORD_SALT))
            .await?;
        // mainline checked the signature against the key and the key against the target;
        // checked again here because this is the one property that must never break.
        (item.key() == node.as_bytes()).then(|| Resolved {
            seq: item.seq(),
            value: item.value().to_vec(),
        })
    }

    /// Adds (or refreshes) `key`'s entry in the namespace's directory.
    pub async fn announce(&self, ns: &Namespace, key: &SecretKey) -> Result<(), DhtError> {
        let entry = Entry::sign(ns, key, unix_now());
        self.update_slot(ns, ns.slot_of(&key.node_id()), Some(entry), None)
            .await
    }

    /// Removes `key`'s entry from the namespace's directory.
    pub async fn leave(&self, ns: &Namespace, key: &SecretKey) -> Result<(), DhtError> {
        let me = key.node_id();
        self.update_slot(ns, ns.slot_of(&me), None, Some(me)).await
    }

    /// The NodeIds currently announced in the namespace (signed by themselves, fresh),
    /// sorted. Reads every slot in parallel.
    pub async fn members(&self, ns: &Namespace) -> Vec<NodeId> {
        let now = unix_now();
        // A few slots at a time: each lookup's answers arrive as one burst, and many bursts at
        // once overflow the UDP socket's receive buffer (answers are lost, not slowed).
        let entries: Vec<Vec<Entry>> = futures_util::stream::iter(0..SLOTS)
            .map(|slot| async move {
                let read = self.read_slot(ns, slot).await;
                read.versions.into_iter().flatten().collect()
            })
            .buffer_unordered(PARALLEL_SLOT_READS)
            .collect()
            .await;
        let mut out: Vec<NodeId> = entries
            .into_iter()
            .flatten()
            .filter(|e| e.is_fresh(now))
            .map(|e| e.node)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// A slot as the DHT holds it: the highest seq seen, and the entries of every distinct
    /// item at that seq (more than one when writers raced and DHT nodes took different ones).
    async fn read_slot(&self, ns: &Namespace, slot: u8) -> Slot {
        let key = directory_key(ns);
        let salt = Namespace::slot_salt(slot);
        let items: Vec<MutableItem> = self
            .dht
            .get_mutable(key.verifying_key().as_bytes(), Some(&salt), None)
            .collect()
            .await;
        let Some(seq) = items.iter().map(MutableItem::seq).max() else {
            return Slot::default();
        };
        let mut values: Vec<&[u8]> = items
            .iter()
            .filter(|i| i.seq() == seq)
            .map(MutableItem::value)
            .collect();
        values.sort();
        values.dedup();
        let versions: Vec<Vec<Entry>> = values.iter().map(|v| ns.open(slot, v)).collect();
        debug!(
            namespace = ns.name(),
            slot,
            seq,
            answers = items.len(),
            versions = versions.len(),
            "read slot"
        );
        Slot {
            seq: Some(seq),
            versions,
        }
    }

    /// Read-modify-write of one directory slot with compare-and-swap, read back until every
    /// version the DHT holds shows the change (or [`WRITE_ATTEMPTS`] run out).
    async fn update_slot(
        &self,
        ns: &Namespace,
        slot: u8,
        add: Option<Entry>,
        remove: Option<NodeId>,
    ) -> Result<(), DhtError> {
        let key = directory_key(ns);
        let salt = Namespace::slot_salt(slot);
        // Done when no item at the highest seq lacks the change: a writer that raced with us
        // may have put its own item, without our entry, on some of the nodes.
        let done = |s: &Slot| match (&add, remove) {
            (Some(a), _) => !s.versions.is_empty() && s.versions.iter().all(|v| v.contains(a)),
            (None, Some(r)) => s.versions.iter().all(|v| v.iter().all(|e| e.node != r)),
            (None, None) => true,
        };
        let mut wrote = false;
        for attempt in 0..WRITE_ATTEMPTS {
            if attempt > 0 {
                // Random backoff, so racing writers stop colliding.
                let max = 100 * u64::from(attempt);
                let ms = rand::random_range(10..=max);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let current = self.read_slot(ns, slot).await;
            if (wrote || add.is_none()) && done(&current) {
                return Ok(());
            }
            // `cas` 0 for a slot we saw empty: a node that meanwhile took another writer's
            // first item refuses ours (301) instead of replacing it at the same seq.
            let cas = current.seq.unwrap_or(0);
            let seq = cas.saturating_add(1);
            let entries = current.versions.into_iter().flatten().collect();
            let next = merge(entries, add.clone(), remove, unix_now());
            let count = next.len();
            let item = MutableItem::new(key.clone(), &ns.seal(slot, &next), seq, Some(&salt));
            match self.dht.put_mutable(item, Some(cas)).await {
                Ok(outcome) => {
                    debug!(
                        namespace = ns.name(),
                        slot,
                        seq,
                        entries = count,
                        stored_at = outcome.stored_at,
                        "wrote slot"
                    );
                    wrote = true;
                }
                // Someone else wrote in between (or a write of ours is still in flight):
                // read again.
                Err(PutMutableError::Concurrency(e)) => {
                    debug!(
                        namespace = ns.name(),
                        slot, attempt, "slot write raced: {e}"
                    );
                    wrote = true;
                }
                Err(e) => return Err(put_error(e, seq)),
            }
        }
        Err(DhtError::Contended)
    }
}

/// One directory slot as read from the DHT.
#[derive(Default)]
struct Slot {
    seq: Option<i64>,
    versions: Vec<Vec<Entry>>,
}

/// A private Mainline DHT of server nodes on 127.0.0.1, for tests and benchmarks: it never
/// talks to the real DHT. Each node runs on its own thread; all stop when this is dropped.
#[derive(Debug)]
pub struct LocalTestnet {
    inner: mainline::Testnet,
}

impl LocalTestnet {
    /// Starts `count` nodes whose routing tables already hold each other. Blocks (briefly);
    /// from async code call it inside `spawn_blocking`.
    pub fn new(count: usize) -> Result<Self, DhtError> {
        let inner = mainline::Testnet::builder(count)
            .bind_address(Ipv4Addr::LOCALHOST)
            .build()
            .map_err(|source| DhtError::Bind {
                addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
                source,
            })?;
        Ok(LocalTestnet { inner })
    }

    /// The nodes' addresses, as `IP:PORT` for [`DhtConfig::bootstrap`].
    pub fn bootstrap(&self) -> &[String] {
        &self.inner.bootstrap
    }

    /// A configuration that joins this network only, on 127.0.0.1, through three of its
    /// nodes (mainline asks every bootstrap node on each lookup while its routing table is
    /// small, so giving it all of them would flood them).
    ///
    /// It runs in server mode: the testnet's nodes have no bootstrap list, so they take
    /// mainline's first-node exception and add everyone who asks them to their routing
    /// tables; a client-mode node would then be handed out as a DHT node that only refuses
    /// queries (read-only), a wasted request in every lookup that reaches it.
    pub fn client_config(&self) -> DhtConfig {
        let n = self.inner.bootstrap.len();
        let picks = [0, n / 3, 2 * n / 3];
        let mut bootstrap: Vec<String> = picks
            .iter()
            .filter_map(|&i| self.inner.bootstrap.get(i).cloned())
            .collect();
        bootstrap.dedup();
        DhtConfig {
            bootstrap,
            bind: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
            server: true,
            ..DhtConfig::default()
        }
    }
}

fn build(config: &DhtConfig) -> Result<Dht, DhtError> {
    let bootstrap = resolve_bootstrap(&config.bootstrap)?;
    let mut builder = Dht::builder();
    builder
        .bind_address(*config.bind.ip())
        .port(config.bind.port())
        .request_timeout(config.request_timeout);
    if config.bootstrap.is_empty() {
        builder.no_bootstrap();
    } else {
        builder.bootstrap(&bootstrap);
    }
    if config.server {
        builder.server_mode();
    }
    builder.build().map_err(|source| DhtError::Bind {
        addr: config.bind,
        source,
    })
}

/// Resolves `HOST:PORT`s to IPv4 addresses. A malformed entry is an error; a name that does
/// not resolve (offline, DNS down) only a warning, so that the node still starts.
fn resolve_bootstrap(nodes: &[String]) -> Result<Vec<SocketAddrV4>, DhtError> {
    let mut out = Vec::new();
    for node in nodes {
        let (host, port) = node
            .rsplit_once(':')
            .filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            .ok_or_else(|| DhtError::Bootstrap(node.clone()))?;
        let port: u16 = port.parse().expect("checked");
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match (host, port).to_socket_addrs() {
            Ok(addrs) => {
                let before = out.len();
                out.extend(addrs.filter_map(|a| match a {
                    SocketAddr::V4(v4) => Some(v4),
                    SocketAddr::V6(_) => None,
                }));
                if out.len() == before {
                    warn!(node, "DHT bootstrap node has no IPv4 address; skipped");
                }
            }
            Err(e) => warn!(node, "cannot resolve DHT bootstrap node: {e}"),
        }
    }
    Ok(out)
}

fn directory_key(ns: &Namespace) -> SigningKey {
    SigningKey::from_bytes(ns.directory_seed())
}

fn put_error(e: PutMutableError, seq: i64) -> DhtError {
    match e {
        PutMutableError::Concurrency(ConcurrencyError::NotMostRecent) => DhtError::Stale(seq),
        PutMutableError::Query(PutQueryError::NoClosestNodes) => DhtError::NoNodes,
        PutMutableError::Query(PutQueryError::ErrorResponse(e)) => DhtError::Refused {
            code: e.code,
            description: e.description,
        },
        e => DhtError::Put(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_entries_must_be_host_and_port() {
        for bad in ["nohost", ":6881", "host:", "host:99999", "1.2.3.4"] {
            assert!(
                matches!(
                    resolve_bootstrap(&[bad.into()]),
                    Err(DhtError::Bootstrap(_))
                ),
                "{bad}"
            );
        }
        let ok = resolve_bootstrap(&["127.0.0.1:6881".into(), "[::1]:6881".into()]).unwrap();
        assert_eq!(ok, vec!["127.0.0.1:6881".parse().unwrap()]);
    }

    #[test]
    fn the_directory_key_is_not_any_members_key_and_differs_per_namespace() {
        let namespaces = [
            Namespace::new("a", None),
            Namespace::new("a", Some(b"x")),
            Namespace::new("a", Some(b"y")),
            Namespace::new("a", Some(b"")),
            Namespace::new("b", None),
            Namespace::new("b", Some(b"x")),
        ];
        let keys: Vec<_> = namespaces
            .iter()
            .map(|ns| directory_key(ns).verifying_key())
            .collect();
        for (i, k) in keys.iter().enumerate() {
            assert!(!keys[..i].contains(k), "{} shares a directory key", i);
        }
        // Every member derives the same key from the name and secret alone.
        let again = directory_key(&Namespace::new("a", Some(b"x"))).verifying_key();
        assert_eq!(again, keys[1]);
        // Members' own records live under their node keys, never under the directory's.
        for n in 0..16 {
            let member = SecretKey::from_bytes([n; 32]).signing_key().verifying_key();
            assert!(!keys.contains(&member), "member {n}");
        }
    }
}
