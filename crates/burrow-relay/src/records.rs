//! The bootstrap registry: signed node records ([`burrow_proto::record`]) by key and by
//! namespace, so that nodes can find each other's relays and addresses by key alone.
//!
//! The registry is not trusted: every record is signed by its node, and readers check the
//! signature themselves. The registry checks it too, so that nobody can register, replace or
//! delete a record for a key they do not hold.
//!
//! # HTTP JSON API
//!
//! Records travel as their signed binary form in base64url without padding (`record`).
//! Node ids are the 52-character base32 form. Errors are `{"error": "..."}` with the status
//! given.
//!
//! * `PUT /records/{node_id}` with `{"record": B64, "namespaces": ["ns", ...], "ttl_secs": N}`
//!   (`namespaces` and `ttl_secs` optional) registers or replaces the node's record and returns
//!   the stored view (below). The record must be signed by `node_id`, unexpired, and have a
//!   `seq` higher than the stored one. It is held until its own `expires` or `ttl_secs` from
//!   now, whichever is first (`ttl_secs` defaults to, and is capped at, the `max_ttl` limit),
//!   and listed under the namespaces given (replacing earlier ones). A namespace is 1 to 64
//!   characters of `A-Z a-z 0-9 . _ - :`.
//!   400 malformed, expired, bad namespace or node id mismatch; 401 bad signature; 403 a key
//!   not enrolled (on a relay with `allowed_keys`, which refuses its deletes too); 409 seq not
//!   higher; 413 body too large; 429 rate limited; 503 registry or namespace full.
//! * `GET /records/{node_id}` returns the stored view: `node_id`, `record`, `seq`, `expires`,
//!   `relays`, `addrs`, `name` (or null), `capabilities` (decoded from the record for reading
//!   convenience; a careful client verifies `record` and ignores the rest),
//!   `stored_until` (unix seconds), and this relay's own view of the key: `online` (connected
//!   to this relay now) and `reputation` (the share of the reputation window it was connected
//!   here, 0 to 1; what it means and does not is in the `presence` module). 404 if none.
//! * `GET /namespaces/{ns}?cursor=C&limit=N` returns `{"namespace", "records": [view...],
//!   "next_cursor"}`: records in node id order after the node id `C` (from the start without
//!   one), at most `N` (default and maximum: the `page_size` limit); `next_cursor` is the node
//!   id to continue after, or null at the end. Filters: `require=a,b` (records whose
//!   capabilities include all of these), `online=1` (keys connected to this relay now),
//!   `min_reputation=X` (keys whose `reputation` is at least `X`). A filtered page looks at
//!   no more than 20 records for each it may hold, so it may come back short, even empty,
//!   with a `next_cursor` to go on from.
//! * `DELETE /records/{node_id}` with `{"seq": N, "timestamp": T, "signature": B64}` removes the
//!   node's record: the signature is [`burrow_proto::record::sign_delete`] by the node over `N`
//!   and `T` (unix seconds, within 5 minutes of the server's clock), and the stored record's
//!   seq must be at most `N`, so an old delete cannot remove a newer record. Returns
//!   `{"deleted": true}`; 401 bad signature or timestamp, 404 none, 409 stored seq higher.
//!
//! # Limits per source
//!
//! A source is an IPv4 address or an IPv6 /64 ([`burrow_proto::rate::source_prefix`]): one
//! host, or one site, which is handed a /64 and may use every address in it. Keys are free, so
//! limits that keys alone could dodge are per source:
//!
//! * rate: every registry request counts against its source's token bucket, and every write
//!   with a valid signature against its key's (see [`crate::RegistryLimits`]);
//! * records: a source may hold at most `max_per_source` records, counted from the source of
//!   each record's latest registration, and list at most `max_per_source_namespace` of them
//!   under any one namespace; past either, 429. So a flood of records from one source, however
//!   many keys it grinds to sort first, takes at most that many places in a namespace listing
//!   (which is in node id order), and at most that many in the registry.
//!
//! What that does not stop: an attacker with many sources. With the defaults (32 per
//! namespace, 256 in all), hiding a namespace's members from a reader that reads the first
//! 10,000 records of a listing (`burrow peers`) takes 313 sources, filling a namespace of
//! 100,000 takes 3,125, and filling the registry's 1,000,000 takes 3,907. Namespaces are open:
//! anyone may list a record under any name, so a namespace is a meeting point, not a guest
//! list (a closed namespace, in the DHT, is the one with a secret). Behind a reverse proxy
//! every request comes from the proxy's address, so these limits apply to all clients at once:
//! raise them there (0 turns a cap off). Records loaded from a snapshot count against no
//! source until they are registered again.
//!
//! # Store
//!
//! Compact, for millions of records: each record is kept as its signed bytes (decoded only
//! when a view is asked for) in a sharded map from the 32-byte key, and each namespace is a
//! 64-bit hash (truncated SHA-256 of its name) mapping to an ordered set of keys, which gives
//! cursor pagination. Reads take one shard's read lock.

mod maintenance;
pub(crate) mod routes;
mod snapshot;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};

use burrow_proto::identity::NodeId;
use burrow_proto::rate::source_prefix;
use burrow_proto::record::{is_valid_namespace, SignedRecord};

use crate::config::RegistryLimits;

pub(crate) use maintenance::{final_snapshot, maintenance};
pub use snapshot::SnapshotError;

/// Map shards; a power of two, indexed by the key's first byte.
const SHARDS: usize = 64;

/// Why the store refused a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The stored record's seq is not lower than the offered one.
    #[error("stale record: seq {seq} is not higher than the stored seq {stored}")]
    Stale {
        /// The offered seq.
        seq: u64,
        /// The stored seq.
        stored: u64,
    },
    /// The registry holds its maximum number of records.
    #[error("registry is full ({0} records)")]
    Full(usize),
    /// A namespace holds its maximum number of records.
    #[error("namespace {0:?} is full")]
    NamespaceFull(String),
    /// The source of the registration holds its maximum number of records.
    #[error("too many records from this address: at most {0} per IPv4 address or IPv6 /64")]
    SourceFull(usize),
    /// The source of the registration lists its maximum number of records in a namespace.
    #[error(
        "too many records from this address in namespace {namespace:?}: at most {max} per \
         IPv4 address or IPv6 /64"
    )]
    SourceNamespaceFull {
        /// The namespace.
        namespace: String,
        /// The cap.
        max: usize,
    },
    /// A namespace name that is empty, too long or has other characters than
    /// `A-Z a-z 0-9 . _ - :`.
    #[error("invalid namespace {0:?}: 1 to 64 characters of A-Z a-z 0-9 . _ - :")]
    BadNamespace(String),
    /// More namespaces than the limit allows.
    #[error("a record may be listed under at most {0} namespaces")]
    TooManyNamespaces(usize),
    /// No record for the key.
    #[error("no record for this node")]
    NotFound,
}

/// One shard of the records, by key.
type Shard = RwLock<HashMap<NodeId, Entry>>;

/// One stored record.
struct Entry {
    /// The signed record, as received.
    bytes: Box<[u8]>,
    seq: u64,
    /// Unix seconds: dropped after this.
    stored_until: u64,
    /// Hashes of the namespaces it is listed under.
    namespaces: Box<[u64]>,
    /// Where its latest registration came from ([`source_prefix`]); `None` for one put in by
    /// the program or loaded from a snapshot, which counts against no source.
    source: Option<IpAddr>,
}

/// What is kept beside the records: the namespace listings, and the per-source counts that
/// the caps check.
#[derive(Default)]
struct Index {
    namespaces: HashMap<u64, BTreeSet<NodeId>>,
    /// Records per source.
    per_source: HashMap<IpAddr, usize>,
    /// Records per source and namespace.
    per_source_namespace: HashMap<(IpAddr, u64), usize>,
}

impl Index {
    /// Counts a record from `source` listed under `namespaces`.
    fn count(&mut self, source: IpAddr, namespaces: &[u64]) {
        *self.per_source.entry(source).or_default() += 1;
        for h in namespaces {
            *self.per_source_namespace.entry((source, *h)).or_default() += 1;
        }
    }

    /// Takes back a [`Index::count`].
    fn uncount(&mut self, source: IpAddr, namespaces: &[u64]) {
        fn down<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) {
            if let Some(n) = map.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&key);
                }
            }
        }
        down(&mut self.per_source, source);
        for h in namespaces {
            down(&mut self.per_source_namespace, (source, *h));
        }
    }

    fn unlist(&mut self, namespace: u64, key: &NodeId) {
        if let Some(set) = self.namespaces.get_mut(&namespace) {
            set.remove(key);
            if set.is_empty() {
                self.namespaces.remove(&namespace);
            }
        }
    }
}

/// Whether `count` has reached `cap` (0: no cap).
fn at_cap(count: Option<&usize>, cap: usize) -> bool {
    cap > 0 && count.is_some_and(|&n| n >= cap)
}

/// A stored record as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Whose it is.
    pub node: NodeId,
    /// The signed record, as received.
    pub bytes: Vec<u8>,
    /// Unix seconds after which the registry drops it.
    pub stored_until: u64,
}

/// The registry's records, in memory. Every method takes the time (unix seconds) from the
/// caller.
pub struct RecordStore {
    limits: RegistryLimits,
    shards: Box<[Shard]>,
    index: Mutex<Index>,
    len: AtomicUsize,
    /// Bumped on every change, so the snapshot writer knows when there is something to write.
    generation: AtomicU64,
}

/// The 64-bit hash a namespace is indexed by: stable across restarts (the snapshot stores it)
/// and not steerable, so nobody can pick a name that lands in another namespace.
pub fn namespace_hash(name: &str) -> u64 {
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let mut first = [0; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first)
}

/// Checks a namespace name ([`is_valid_namespace`]).
pub fn check_namespace(name: &str) -> Result<(), StoreError> {
    if is_valid_namespace(name) {
        Ok(())
    } else {
        Err(StoreError::BadNamespace(name.chars().take(80).collect()))
    }
}

fn shard_of(key: &[u8; 32]) -> usize {
    usize::from(key[0]) & (SHARDS - 1)
}

impl Entry {
    fn stored(&self, node: NodeId) -> Stored {
        Stored {
            node,
            bytes: self.bytes.to_vec(),
            stored_until: self.stored_until,
        }
    }
}

impl RecordStore {
    /// An empty store with these limits.
    pub fn new(limits: RegistryLimits) -> RecordStore {
        RecordStore {
            limits,
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            index: Mutex::default(),
            len: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
        }
    }

    /// The limits.
    pub fn limits(&self) -> &RegistryLimits {
        &self.limits
    }

    /// Records held (including expired ones not yet swept).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers or replaces `record`, held until `stored_until` (unix seconds; the caller
    /// applies the TTL limits) and listed under `namespaces`, which replace any earlier ones.
    /// The caller has checked the signature (a [`SignedRecord`] is authentic) and the expiry.
    /// A stored record whose time is up at `now` no longer blocks a lower seq: a node that
    /// lost count may register again once its old record has lapsed. `from` is the address
    /// the registration came from, which the per-source caps count (by its
    /// [`source_prefix`]); `None` for a program's own records, which no cap counts.
    pub fn insert(
        &self,
        record: &SignedRecord,
        namespaces: &[String],
        stored_until: u64,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<(), StoreError> {
        let limits = &self.limits;
        if namespaces.len() > limits.max_namespaces_per_record {
            return Err(StoreError::TooManyNamespaces(
                limits.max_namespaces_per_record,
            ));
        }
        let mut hashes = Vec::with_capacity(namespaces.len());
        let mut names = Vec::with_capacity(namespaces.len());
        for name in namespaces {
            check_namespace(name)?;
            let h = namespace_hash(name);
            if !hashes.contains(&h) {
                hashes.push(h);
                names.push(name);
            }
        }
        let source = from.map(source_prefix);
        let key = record.node_id();
        let seq = record.record().seq;
        let mut shard = self.shards[shard_of(key.as_bytes())].write().expect("lock");
        let old = shard.get(&key);
        if let Some(old) = old {
            if old.seq >= seq && old.stored_until >= now {
                return Err(StoreError::Stale {
                    seq,
                    stored: old.seq,
                });
            }
        } else if self.len() >= limits.max_records {
            return Err(StoreError::Full(limits.max_records));
        }
        let old_namespaces: &[u64] = old.map(|e| &e.namespaces[..]).unwrap_or(&[]);
        let old_source = old.and_then(|e| e.source);
        {
            let mut index = self.index.lock().expect("lock");
            // The caps count what this registration adds to its source: everything, unless
            // the record was that source's already.
            if let Some(s) = source {
                let kept = old_source == Some(s);
                if !kept && at_cap(index.per_source.get(&s), limits.max_per_source) {
                    return Err(StoreError::SourceFull(limits.max_per_source));
                }
                for (h, name) in hashes.iter().zip(&names) {
                    let cap = limits.max_per_source_namespace;
                    let listed = kept && old_namespaces.contains(h);
                    if !listed && at_cap(index.per_source_namespace.get(&(s, *h)), cap) {
                        return Err(StoreError::SourceNamespaceFull {
                            namespace: name.to_string(),
                            max: cap,
                        });
                    }
                }
            }
            for (h, name) in hashes.iter().zip(&names) {
                let full = index
                    .namespaces
                    .get(h)
                    .is_some_and(|set| set.len() >= limits.max_per_namespace);
                if full && !old_namespaces.contains(h) {
                    return Err(StoreError::NamespaceFull(name.to_string()));
                }
            }
            for h in old_namespaces.iter().filter(|h| !hashes.contains(h)) {
                index.unlist(*h, &key);
            }
            for h in &hashes {
                index.namespaces.entry(*h).or_default().insert(key);
            }
            if let Some(s) = old_source {
                index.uncount(s, old_namespaces);
            }
            if let Some(s) = source {
                index.count(s, &hashes);
            }
        }
        let entry = Entry {
            bytes: record.as_bytes().into(),
            seq,
            stored_until,
            namespaces: hashes.into_boxed_slice(),
            source,
        };
        if shard.insert(key, entry).is_none() {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
        self.generation.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The record of the node with these key bytes ([`NodeId::as_bytes`], or
    /// [`NodeId::text_to_bytes`] unchecked: only valid keys are ever stored), unless there is
    /// none or it is past its storage time at `now`.
    pub fn get(&self, key: &[u8; 32], now: u64) -> Option<Stored> {
        let shard = self.shards[shard_of(key)].read().expect("lock");
        shard
            .get_key_value(key)
            .filter(|(_, e)| e.stored_until >= now)
            .map(|(node, e)| e.stored(*node))
    }

    /// The seq of the node's stored record, if any (expired or not).
    pub fn seq_of(&self, node: &NodeId) -> Option<u64> {
        self.shards[shard_of(node.as_bytes())]
            .read()
            .expect("lock")
            .get(node)
            .map(|e| e.seq)
    }

    /// Removes the node's record if its seq is at most `max_seq`.
    pub fn remove(&self, node: &NodeId, max_seq: u64) -> Result<(), StoreError> {
        let mut shard = self.shards[shard_of(node.as_bytes())]
            .write()
            .expect("lock");
        match shard.get(node) {
            None => return Err(StoreError::NotFound),
            Some(e) if e.seq > max_seq => {
                return Err(StoreError::Stale {
                    seq: max_seq,
                    stored: e.seq,
                })
            }
            Some(_) => {}
        }
        let entry = shard.remove(node).expect("checked above");
        self.forget(&entry, node);
        Ok(())
    }

    /// Takes `entry` (already removed from its shard) out of the counts and the index.
    fn forget(&self, entry: &Entry, key: &NodeId) {
        self.len.fetch_sub(1, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
        if entry.namespaces.is_empty() && entry.source.is_none() {
            return;
        }
        let mut index = self.index.lock().expect("lock");
        for h in entry.namespaces.iter() {
            index.unlist(*h, key);
        }
        if let Some(s) = entry.source {
            index.uncount(s, &entry.namespaces);
        }
    }

    /// Up to `limit` live records listed under `namespace`, in key order after `after`; and
    /// the key to continue after, if more may follow.
    pub fn list(
        &self,
        namespace: &str,
        after: Option<&NodeId>,
        limit: usize,
        now: u64,
    ) -> (Vec<Stored>, Option<NodeId>) {
        self.list_where(namespace, after, limit, now, limit, |_| true)
    }

    /// As [`RecordStore::list`], the records `keep` accepts only, looking at no more than
    /// `scan` listed after `after`: a page may come back short (even empty) with a cursor
    /// when few match, and the next page goes on from where this one stopped looking.
    pub fn list_where(
        &self,
        namespace: &str,
        after: Option<&NodeId>,
        limit: usize,
        now: u64,
        scan: usize,
        keep: impl Fn(&Stored) -> bool,
    ) -> (Vec<Stored>, Option<NodeId>) {
        let scan = scan.max(limit);
        let keys: Vec<NodeId> = {
            let index = self.index.lock().expect("lock");
            let Some(set) = index.namespaces.get(&namespace_hash(namespace)) else {
                return (Vec::new(), None);
            };
            let start = match after {
                Some(n) => Bound::Excluded(*n),
                None => Bound::Unbounded,
            };
            // One more than looked at, to know whether another page follows.
            set.range((start, Bound::Unbounded))
                .take(scan + 1)
                .copied()
                .collect()
        };
        let mut out = Vec::with_capacity(limit.min(keys.len()));
        let mut last = None;
        for (looked, key) in keys.iter().enumerate() {
            if out.len() == limit || looked == scan {
                // More follow: the next page starts after the last one looked at.
                return (out, last);
            }
            last = Some(*key);
            let shard = self.shards[shard_of(key.as_bytes())].read().expect("lock");
            // Gone or expired since the index was read: skipped, the page is just shorter.
            if let Some(e) = shard.get(key).filter(|e| e.stored_until >= now) {
                let stored = e.stored(*key);
                drop(shard);
                if keep(&stored) {
                    out.push(stored);
                }
            }
        }
        (out, None)
    }

    /// Drops every record past its storage time at `now`; returns how many.
    pub fn sweep(&self, now: u64) -> usize {
        let mut dropped = 0;
        for shard in self.shards.iter() {
            // One shard at a time, so readers of the others never wait.
            let mut shard = shard.write().expect("lock");
            let expired: Vec<NodeId> = shard
                .iter()
                .filter(|(_, e)| e.stored_until < now)
                .map(|(k, _)| *k)
                .collect();
            for key in expired {
                let entry = shard.remove(&key).expect("listed above");
                self.forget(&entry, &key);
                dropped += 1;
            }
        }
        dropped
    }

    /// A number that changes whenever the records do.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Writes every record to `path` (atomically: a temporary file, then a rename).
    pub fn save(&self, path: &Path) -> Result<usize, SnapshotError> {
        snapshot::save(self, path)
    }

    /// Loads the records in `path` written by [`RecordStore::save`]: each one's signature is
    /// checked again and those past their storage time at `now` are left out. A missing file
    /// loads nothing. Returns how many records were loaded.
    pub fn load(&self, path: &Path, now: u64) -> Result<usize, SnapshotError> {
        snapshot::load(self, path, now)
    }

    /// Puts an entry read from a snapshot back (its signature already checked), keeping the
    /// limits; namespaces are hashes.
    fn restore(&self, record: &SignedRecord, namespaces: &[u64], stored_until: u64) -> bool {
        let key = record.node_id();
        let mut shard = self.shards[shard_of(key.as_bytes())].write().expect("lock");
        if shard.contains_key(&key) || self.len() >= self.limits.max_records {
            return false;
        }
        let mut kept = Vec::with_capacity(namespaces.len());
        {
            let mut index = self.index.lock().expect("lock");
            for h in namespaces
                .iter()
                .take(self.limits.max_namespaces_per_record)
            {
                let set = index.namespaces.entry(*h).or_default();
                if set.len() < self.limits.max_per_namespace && !kept.contains(h) {
                    set.insert(key);
                    kept.push(*h);
                }
            }
        }
        shard.insert(
            key,
            Entry {
                bytes: record.as_bytes().into(),
                seq: record.record().seq,
                stored_until,
                namespaces: kept.into_boxed_slice(),
                source: None,
            },
        );
        self.len.fetch_add(1, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests;
