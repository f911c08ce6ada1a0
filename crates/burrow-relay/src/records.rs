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
//!   400 malformed, expired, bad namespace or node id mismatch; 401 bad signature; 409 seq not
//!   higher; 413 body too large; 429 rate limited; 503 registry or namespace full.
//! * `GET /records/{node_id}` returns the stored view: `node_id`, `record`, `seq`, `expires`,
//!   `relays`, `addrs`, `name` (or null), `capabilities` (decoded from the record for reading
//!   convenience; a careful client verifies `record` and ignores the rest) and
//!   `stored_until` (unix seconds). 404 if none.
//! * `GET /namespaces/{ns}?cursor=C&limit=N` returns `{"namespace", "records": [view...],
//!   "next_cursor"}`: records in node id order after the node id `C` (from the start without
//!   one), at most `N` (default and maximum: the `page_size` limit); `next_cursor` is the node
//!   id to continue after, or null at the end.
//! * `DELETE /records/{node_id}` with `{"seq": N, "timestamp": T, "signature": B64}` removes the
//!   node's record: the signature is [`burrow_proto::record::sign_delete`] by the node over `N`
//!   and `T` (unix seconds, within 5 minutes of the server's clock), and the stored record's
//!   seq must be at most `N`, so an old delete cannot remove a newer record. Returns
//!   `{"deleted": true}`; 401 bad signature or timestamp, 404 none, 409 stored seq higher.
//!
//! Rate limits: every registry request counts against its source IP's token bucket, and every
//! write with a valid signature against its key's (see [`crate::RegistryLimits`]). Behind a
//! reverse proxy every request comes from the proxy's IP.
//!
//! # Store
//!
//! Compact, for millions of records: each record is kept as its signed bytes (decoded only
//! when a view is asked for) in a sharded map from the 32-byte key, and each namespace is a
//! 64-bit hash (truncated SHA-256 of its name) mapping to an ordered set of keys, which gives
//! cursor pagination. Reads take one shard's read lock.

mod limiter;
mod maintenance;
pub(crate) mod routes;
mod snapshot;

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};

use burrow_proto::identity::NodeId;
use burrow_proto::record::{is_valid_namespace, SignedRecord};

use crate::config::RegistryLimits;

pub(crate) use limiter::RateLimiter;
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
    namespaces: Mutex<HashMap<u64, BTreeSet<NodeId>>>,
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
            namespaces: Mutex::default(),
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
    /// lost count may register again once its old record has lapsed.
    pub fn insert(
        &self,
        record: &SignedRecord,
        namespaces: &[String],
        stored_until: u64,
        now: u64,
    ) -> Result<(), StoreError> {
        if namespaces.len() > self.limits.max_namespaces_per_record {
            return Err(StoreError::TooManyNamespaces(
                self.limits.max_namespaces_per_record,
            ));
        }
        let mut hashes = Vec::with_capacity(namespaces.len());
        for name in namespaces {
            check_namespace(name)?;
            let h = namespace_hash(name);
            if !hashes.contains(&h) {
                hashes.push(h);
            }
        }
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
        } else if self.len() >= self.limits.max_records {
            return Err(StoreError::Full(self.limits.max_records));
        }
        let old_namespaces: &[u64] = old.map(|e| &e.namespaces[..]).unwrap_or(&[]);
        {
            let mut index = self.namespaces.lock().expect("lock");
            for (h, name) in hashes.iter().zip(namespaces) {
                let full = index
                    .get(h)
                    .is_some_and(|set| set.len() >= self.limits.max_per_namespace);
                if full && !old_namespaces.contains(h) {
                    return Err(StoreError::NamespaceFull(name.clone()));
                }
            }
            for h in old_namespaces.iter().filter(|h| !hashes.contains(h)) {
                unindex(&mut index, *h, &key);
            }
            for h in &hashes {
                index.entry(*h).or_default().insert(key);
            }
        }
        let entry = Entry {
            bytes: record.as_bytes().into(),
            seq,
            stored_until,
            namespaces: hashes.into_boxed_slice(),
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

    /// Takes `entry` (already removed from its shard) out of the count and the index.
    fn forget(&self, entry: &Entry, key: &NodeId) {
        self.len.fetch_sub(1, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
        if !entry.namespaces.is_empty() {
            let mut index = self.namespaces.lock().expect("lock");
            for h in entry.namespaces.iter() {
                unindex(&mut index, *h, key);
            }
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
        let keys: Vec<NodeId> = {
            let index = self.namespaces.lock().expect("lock");
            let Some(set) = index.get(&namespace_hash(namespace)) else {
                return (Vec::new(), None);
            };
            let start = match after {
                Some(n) => Bound::Excluded(*n),
                None => Bound::Unbounded,
            };
            // One more than asked, to know whether another page follows.
            set.range((start, Bound::Unbounded))
                .take(limit + 1)
                .copied()
                .collect()
        };
        let more = keys.len() > limit;
        let keys = &keys[..keys.len().min(limit)];
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let shard = self.shards[shard_of(key.as_bytes())].read().expect("lock");
            // Gone or expired since the index was read: skipped, the page is just shorter.
            if let Some(e) = shard.get(key).filter(|e| e.stored_until >= now) {
                out.push(e.stored(*key));
            }
        }
        let next = keys.last().filter(|_| more).copied();
        (out, next)
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
            let mut index = self.namespaces.lock().expect("lock");
            for h in namespaces
                .iter()
                .take(self.limits.max_namespaces_per_record)
            {
                let set = index.entry(*h).or_default();
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
            },
        );
        self.len.fetch_add(1, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
        true
    }
}

fn unindex(index: &mut HashMap<u64, BTreeSet<NodeId>>, namespace: u64, key: &NodeId) {
    if let Some(set) = index.get_mut(&namespace) {
        set.remove(key);
        if set.is_empty() {
            index.remove(&namespace);
        }
    }
}

#[cfg(test)]
mod tests;
