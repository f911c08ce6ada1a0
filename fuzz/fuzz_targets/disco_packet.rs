//! Disco packet opening and message decoding must never panic; every message the decoder
//! accepts must re-encode to exactly the same bytes and survive a seal/open round trip.
#![no_main]

use std::sync::LazyLock;

use burrow_proto::disco::{looks_like_disco, sender, Message, SharedKey};
use burrow_proto::identity::{NodeId, SecretKey};
use libfuzzer_sys::fuzz_target;

/// Node A, A's key for B and B's key for A: derived once, not per input.
static KEYS: LazyLock<(NodeId, SharedKey, SharedKey)> = LazyLock::new(|| {
    let (a, b) = (
        SecretKey::from_bytes([1; 32]),
        SecretKey::from_bytes([2; 32]),
    );
    (
        a.node_id(),
        SharedKey::new(&a, &b.node_id()).unwrap(),
        SharedKey::new(&b, &a.node_id()).unwrap(),
    )
});

fuzz_target!(|data: &[u8]| {
    let (a, ab, ba) = &*KEYS;
    if sender(data).is_ok() || ba.open(data).is_ok() {
        assert!(looks_like_disco(data));
    }
    if let Ok(msg) = Message::decode(data) {
        assert_eq!(msg.encode().unwrap(), data, "{msg:?}");
        let packet = ab.seal(a, &msg, [7; 12]).unwrap();
        assert_eq!(sender(&packet).unwrap(), *a);
        assert_eq!(ba.open(&packet).unwrap(), msg);
    }
});
