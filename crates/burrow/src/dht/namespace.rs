//! Namespace directories: the pure part (keys, slots, entry format, merging), no I/O.
//!
//! See the [module docs of `dht`](super) for the design. Everything here takes the time as an
//! argument (`now`, Unix seconds), so the rules are testable without a network or a clock.

use std::fmt;

use burrow_proto::identity::{NodeId, SecretKey};
use ed25519_dalek::{Signature, Signer, Verifier};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use sha2::{Digest, Sha256};

/// Directory items per namespace. A member's entry lives in one of them, chosen by its
/// NodeId, so only members that share a slot contend for writes; listing reads them all.
/// Part of the namespace's identity: every member must use the same number.
pub const SLOTS: u8 = 16;
/// Entries one slot item holds (each 104 bytes; see [`MAX_SEALED_LEN`]).
pub const ENTRIES_PER_SLOT: usize = 9;
/// How long an entry counts after its member signed it. Members re-announce well within it;
/// a member that stops announcing drops out of listings after this.
pub const MEMBER_TTL_SECS: u64 = 2 * 60 * 60;
/// Entries signed this far in the future (clock skew) still count; later ones do not.
pub const MAX_SKEW_SECS: u64 = 10 * 60;

const VERSION: u8 = 1;
const ENTRY_LEN: usize = 32 + 8 + 64;
const TAG_LEN: usize = 16;
/// The largest sealed slot value: version, nonce, entries, tag. BEP 44 allows 1000 bytes.
pub const MAX_SEALED_LEN: usize = 1 + NONCE_LEN + ENTRIES_PER_SLOT * ENTRY_LEN + TAG_LEN;
const _: () = assert!(MAX_SEALED_LEN <= super::MAX_VALUE_LEN);

/// A namespace: a group of nodes that find each other's NodeIds through the DHT.
///
/// Everything is derived from the name and the optional secret; nodes that use the same pair
/// share the namespace. Without the secret, the name alone gives an open namespace that anyone
/// who guesses the name can list and write to.
#[derive(Clone)]
pub struct Namespace {
    name: String,
    secret: bool,
    topic: [u8; 32],
    directory_seed: [u8; 32],
    cipher_key: [u8; 32],
}

impl Namespace {
    /// The namespace `name`, closed by `secret` if one is given (members share the secret out
    /// of band; an empty secret counts as a secret, distinct from none).
    pub fn new(name: &str, secret: Option<&[u8]>) -> Self {
        // Length-prefixed so that no (secret, name) pair collides with another.
        let mut h = Sha256::new();
        h.update(b"burrow namespace v1");
        match secret {
            Some(s) => {
                h.update([1]);
                h.update((s.len() as u64).to_be_bytes());
                h.update(s);
            }
            None => h.update([0]),
        }
        h.update(name.as_bytes());
        let topic: [u8; 32] = h.finalize().into();
        Namespace {
            name: name.to_string(),
            secret: secret.is_some(),
            topic,
            directory_seed: derive(b"burrow namespace directory key v1", &topic),
            cipher_key: derive(b"burrow namespace directory cipher v1", &topic),
        }
    }

    /// The name it was created with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a secret closes it.
    pub fn has_secret(&self) -> bool {
        self.secret
    }

    /// The 32-byte topic every other key of the namespace is derived from.
    pub fn topic(&self) -> &[u8; 32] {
        &self.topic
    }

    /// The slot that holds `node`'s entry.
    pub fn slot_of(&self, node: &NodeId) -> u8 {
        let mut h = Sha256::new();
        h.update(b"burrow namespace slot v1");
        h.update(self.topic);
        h.update(node.as_bytes());
        h.finalize()[0] % SLOTS
    }

    /// The BEP 44 salt of a slot's item.
    pub fn slot_salt(slot: u8) -> Vec<u8> {
        format!("burrow/ns/v1/{slot}").into_bytes()
    }

    /// The Ed25519 seed of the key that signs the directory items (everyone in the namespace
    /// holds it).
    pub(crate) fn directory_seed(&self) -> &[u8; 32] {
        &self.directory_seed
    }

    /// Encrypts a slot's entries, so that DHT nodes storing the item cannot read NodeIds.
    pub(crate) fn seal(&self, slot: u8, entries: &[Entry]) -> Vec<u8> {
        let entries = &entries[..entries.len().min(ENTRIES_PER_SLOT)];
        let mut body = Vec::with_capacity(entries.len() * ENTRY_LEN + TAG_LEN);
        for e in entries {
            body.extend_from_slice(e.node.as_bytes());
            body.extend_from_slice(&e.time.to_be_bytes());
            body.extend_from_slice(&e.sig);
        }
        let nonce: [u8; NONCE_LEN] = rand::random();
        self.cipher()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(slot)),
                &mut body,
            )
            .expect("ChaCha20-Poly1305 seals any length below 256 GiB");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + body.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        out
    }

    /// Decrypts a slot's value and returns the entries whose signatures hold, or nothing if
    /// the value is not a sealed directory of this namespace and slot. Takes hostile input.
    pub(crate) fn open(&self, slot: u8, value: &[u8]) -> Vec<Entry> {
        if value.len() > MAX_SEALED_LEN || value.len() < 1 + NONCE_LEN + TAG_LEN {
            return Vec::new();
        }
        if value[0] != VERSION {
            return Vec::new();
        }
        let nonce: [u8; NONCE_LEN] = value[1..1 + NONCE_LEN].try_into().expect("length checked");
        let mut body = value[1 + NONCE_LEN..].to_vec();
        let Ok(plain) = self.cipher().open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(slot)),
            &mut body,
        ) else {
            return Vec::new();
        };
        plain
            .chunks_exact(ENTRY_LEN)
            .filter_map(|c| {
                let node = NodeId::from_bytes(c[..32].try_into().expect("chunk")).ok()?;
                let time = u64::from_be_bytes(c[32..40].try_into().expect("chunk"));
                let sig = c[40..].try_into().expect("chunk");
                let entry = Entry { node, time, sig };
                entry.verify(self).then_some(entry)
            })
            .collect()
    }

    fn cipher(&self) -> LessSafeKey {
        LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, &self.cipher_key).expect("32-byte key"),
        )
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret nor anything that opens the directory.
        f.debug_struct("Namespace")
            .field("name", &self.name)
            .field("secret", &self.secret)
            .finish()
    }
}

fn derive(label: &[u8], topic: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(label);
    h.update(topic);
    h.finalize().into()
}

fn aad(slot: u8) -> [u8; 2] {
    [VERSION, slot]
}

/// One member in a directory: its NodeId, when it announced, and its signature over the
/// namespace's topic and that time (so nobody can list a key that did not join, nor carry an
/// entry from one namespace to another).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub node: NodeId,
    pub time: u64,
    sig: [u8; 64],
}

impl Entry {
    /// `key`'s entry, signed at `time`.
    pub(crate) fn sign(ns: &Namespace, key: &SecretKey, time: u64) -> Entry {
        let sig = key.signing_key().sign(&signed_bytes(ns, time)).to_bytes();
        Entry {
            node: key.node_id(),
            time,
            sig,
        }
    }

    fn verify(&self, ns: &Namespace) -> bool {
        let Some(key) = self.node.verifying_key() else {
            return false;
        };
        key.verify(
            &signed_bytes(ns, self.time),
            &Signature::from_bytes(&self.sig),
        )
        .is_ok()
    }

    /// Signed recently enough and not too far in the future.
    pub(crate) fn is_fresh(&self, now: u64) -> bool {
        self.time <= now.saturating_add(MAX_SKEW_SECS)
            && self.time.saturating_add(MEMBER_TTL_SECS) >= now
    }
}

fn signed_bytes(ns: &Namespace, time: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(b"burrow namespace member v1");
    m.extend_from_slice(&ns.topic);
    m.extend_from_slice(&time.to_be_bytes());
    m
}

/// The next content of a slot: the fresh entries of `current`, one per node (its newest),
/// without `remove`, with `add` first; newest first, at most [`ENTRIES_PER_SLOT`] (the oldest
/// are dropped when the slot is full).
pub(crate) fn merge(
    current: Vec<Entry>,
    add: Option<Entry>,
    remove: Option<NodeId>,
    now: u64,
) -> Vec<Entry> {
    let replaced = |n: &NodeId| add.as_ref().is_some_and(|a| a.node == *n) || remove == Some(*n);
    let mut rest: Vec<Entry> = current
        .into_iter()
        .filter(|e| e.is_fresh(now) && !replaced(&e.node))
        .collect();
    rest.sort_by(|a, b| b.time.cmp(&a.time).then(a.node.cmp(&b.node)));
    let mut out: Vec<Entry> = add.into_iter().collect();
    for e in rest {
        if out.len() == ENTRIES_PER_SLOT {
            break;
        }
        if !out.iter().any(|o| o.node == e.node) {
            out.push(e);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> SecretKey {
        SecretKey::from_bytes([i; 32])
    }

    const NOW: u64 = 1_700_000_000;

    #[test]
    fn secret_and_name_both_change_the_topic() {
        let open = Namespace::new("team", None);
        let empty = Namespace::new("team", Some(b""));
        let closed = Namespace::new("team", Some(b"s3cret"));
        let other = Namespace::new("team2", Some(b"s3cret"));
        // "a" + "bc" must not collide with "ab" + "c".
        let split1 = Namespace::new("bc", Some(b"a"));
        let split2 = Namespace::new("c", Some(b"ab"));
        let topics = [&open, &empty, &closed, &other, &split1, &split2].map(|n| *n.topic());
        for (i, a) in topics.iter().enumerate() {
            for b in &topics[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(Namespace::new("team", None).topic(), open.topic());
        assert!(!format!("{closed:?}").contains("s3cret"));
    }

    #[test]
    fn sealed_entries_round_trip_and_only_open_with_the_same_namespace_and_slot() {
        let ns = Namespace::new("n", Some(b"k"));
        let entries: Vec<Entry> = (1..=ENTRIES_PER_SLOT as u8)
            .map(|i| Entry::sign(&ns, &key(i), NOW))
            .collect();
        let sealed = ns.seal(3, &entries);
        assert!(sealed.len() <= MAX_SEALED_LEN);
        assert_eq!(ns.open(3, &sealed), entries);
        assert!(ns.open(4, &sealed).is_empty(), "moved to another slot");
        assert!(Namespace::new("n", Some(b"K")).open(3, &sealed).is_empty());
        assert!(Namespace::new("n", None).open(3, &sealed).is_empty());
        // No NodeId shows in the clear.
        let id = key(1).node_id();
        assert!(!sealed.windows(32).any(|w| w == id.as_bytes()));
    }

    #[test]
    fn entries_signed_for_another_namespace_or_tampered_are_dropped() {
        let ns = Namespace::new("n", None);
        let foreign = Entry::sign(&Namespace::new("m", None), &key(1), NOW);
        let mut forged = Entry::sign(&ns, &key(2), NOW);
        forged.node = key(3).node_id(); // claims a key that never signed
        let mut retimed = Entry::sign(&ns, &key(4), NOW);
        retimed.time += 1;
        let good = Entry::sign(&ns, &key(5), NOW);
        let sealed = ns.seal(0, &[foreign, forged, retimed, good.clone()]);
        assert_eq!(ns.open(0, &sealed), vec![good]);
    }

    #[test]
    fn hostile_values_give_no_entries_and_never_panic() {
        let ns = Namespace::new("n", None);
        let good = ns.seal(0, &[Entry::sign(&ns, &key(1), NOW)]);
        for len in 0..good.len() {
            assert!(ns.open(0, &good[..len]).is_empty());
        }
        let mut flipped = good.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0x40;
            assert!(ns.open(0, &flipped).is_empty(), "bit flip at {i}");
            flipped[i] ^= 0x40;
        }
        assert!(ns.open(0, &vec![VERSION; 1000]).is_empty());
        assert!(ns.open(0, &vec![0; 5000]).is_empty());
    }

    #[test]
    fn merge_keeps_the_newest_fresh_entry_per_node_and_caps_the_slot() {
        let ns = Namespace::new("n", None);
        let old = Entry::sign(&ns, &key(1), NOW - MEMBER_TTL_SECS - 1);
        let future = Entry::sign(&ns, &key(2), NOW + MAX_SKEW_SECS + 1);
        let a1 = Entry::sign(&ns, &key(3), NOW - 100);
        let a2 = Entry::sign(&ns, &key(3), NOW - 10);
        let merged = merge(vec![old, future, a1, a2.clone()], None, None, NOW);
        assert_eq!(merged, vec![a2.clone()]);

        // Full slot: the newcomer goes in, the oldest goes out.
        let full: Vec<Entry> = (10..10 + ENTRIES_PER_SLOT as u8)
            .map(|i| Entry::sign(&ns, &key(i), NOW - 1000 + i as u64))
            .collect();
        let me = Entry::sign(&ns, &key(99), NOW);
        let merged = merge(full.clone(), Some(me.clone()), None, NOW);
        assert_eq!(merged.len(), ENTRIES_PER_SLOT);
        assert_eq!(merged[0], me);
        assert!(!merged.contains(&full[0]), "the oldest is evicted");
        assert!(merged.contains(&full[ENTRIES_PER_SLOT - 1]));

        // Re-announcing replaces the old entry; leaving removes it.
        let me_again = Entry::sign(&ns, &key(99), NOW + 5);
        let merged = merge(merged, Some(me_again.clone()), None, NOW + 5);
        assert_eq!(merged.iter().filter(|e| e.node == me.node).count(), 1);
        assert_eq!(merged[0], me_again);
        let left = merge(merged, None, Some(me.node), NOW + 5);
        assert!(left.iter().all(|e| e.node != me.node));
    }
}
