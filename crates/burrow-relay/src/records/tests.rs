use burrow_proto::identity::SecretKey;
use burrow_proto::record::NodeRecord;

use std::net::IpAddr;

use super::*;

fn key(n: u32) -> SecretKey {
    let mut seed = [0; 32];
    seed[..4].copy_from_slice(&n.to_be_bytes());
    SecretKey::from_bytes(seed)
}

fn signed(n: u32, seq: u64) -> SignedRecord {
    let k = key(n);
    let mut r = NodeRecord::new(k.node_id(), seq, 2_000);
    r.relays.push("http://127.0.0.1:3340".parse().unwrap());
    r.sign(&k).unwrap()
}

fn ns(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn limits() -> RegistryLimits {
    RegistryLimits::default()
}

#[test]
fn insert_get_replace_and_stale() {
    let store = RecordStore::new(limits());
    let r1 = signed(1, 10);
    store.insert(&r1, &[], 1_000, 0, None).unwrap();
    let got = store.get(r1.node_id().as_bytes(), 500).unwrap();
    assert_eq!(got.bytes, r1.as_bytes());
    assert_eq!(got.stored_until, 1_000);
    assert_eq!(got.node, r1.node_id());
    assert_eq!(store.len(), 1);
    assert_eq!(store.seq_of(&r1.node_id()), Some(10));

    assert_eq!(
        store.insert(&signed(1, 10), &[], 1_500, 0, None),
        Err(StoreError::Stale {
            seq: 10,
            stored: 10
        })
    );
    assert!(store.insert(&signed(1, 9), &[], 1_500, 0, None).is_err());
    let r2 = signed(1, 11);
    store.insert(&r2, &[], 1_500, 0, None).unwrap();
    assert_eq!(
        store.get(r1.node_id().as_bytes(), 500).unwrap().bytes,
        r2.as_bytes()
    );
    assert_eq!(store.len(), 1);

    // Past its storage time it no longer blocks a lower seq.
    assert!(store
        .insert(&signed(1, 3), &[], 1_500, 1_500, None)
        .is_err());
    store
        .insert(&signed(1, 3), &[], 1_500, 1_501, None)
        .unwrap();
    assert_eq!(store.seq_of(&r1.node_id()), Some(3));

    // Past its storage time it is gone for readers, and the sweep drops it.
    assert!(store.get(r1.node_id().as_bytes(), 1_501).is_none());
    assert_eq!(store.sweep(1_500), 0);
    assert_eq!(store.sweep(1_501), 1);
    assert!(store.is_empty());
    assert_eq!(store.seq_of(&r1.node_id()), None);
}

#[test]
fn limits_are_enforced() {
    let store = RecordStore::new(RegistryLimits {
        max_records: 2,
        max_per_namespace: 1,
        max_namespaces_per_record: 2,
        ..limits()
    });
    store
        .insert(&signed(1, 1), &ns(&["a"]), 1_000, 0, None)
        .unwrap();
    assert_eq!(
        store.insert(&signed(2, 1), &ns(&["a"]), 1_000, 0, None),
        Err(StoreError::NamespaceFull("a".into()))
    );
    // A record already in the namespace may be replaced there.
    store
        .insert(&signed(1, 2), &ns(&["a", "b"]), 1_000, 0, None)
        .unwrap();
    store
        .insert(&signed(2, 1), &ns(&["c"]), 1_000, 0, None)
        .unwrap();
    assert_eq!(
        store.insert(&signed(3, 1), &[], 1_000, 0, None),
        Err(StoreError::Full(2))
    );
    assert_eq!(
        store.insert(&signed(1, 3), &ns(&["a", "b", "c"]), 1_000, 0, None),
        Err(StoreError::TooManyNamespaces(2))
    );
    for bad in ["", "has space", "ü", &"x".repeat(65)] {
        assert!(matches!(
            store.insert(&signed(1, 3), &ns(&[bad]), 1_000, 0, None),
            Err(StoreError::BadNamespace(_))
        ));
    }
    assert!(check_namespace("Chat.v1:room-2_x").is_ok());
    // Moving out of a namespace frees its place.
    store
        .insert(&signed(1, 3), &ns(&["b"]), 1_000, 0, None)
        .unwrap();
    store.remove(&key(2).node_id(), 1).unwrap();
    store
        .insert(&signed(3, 1), &ns(&["a"]), 1_000, 0, None)
        .unwrap();
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

#[test]
fn a_source_is_capped_per_namespace_and_in_all() {
    let store = RecordStore::new(RegistryLimits {
        max_per_source: 5,
        max_per_source_namespace: 3,
        ..limits()
    });
    // One IPv6 /64 is one source, whichever of its addresses a record comes from.
    let site = [
        "2001:db8:1:2::1",
        "2001:db8:1:2:aaaa::9",
        "2001:db8:1:2:ffff::",
    ];
    for (n, from) in (1..).zip(site) {
        store
            .insert(&signed(n, 1), &ns(&["a"]), 1_000, 0, ip(from))
            .unwrap();
    }
    assert_eq!(
        store.insert(
            &signed(4, 1),
            &ns(&["a"]),
            1_000,
            0,
            ip("2001:db8:1:2:1234::1")
        ),
        Err(StoreError::SourceNamespaceFull {
            namespace: "a".into(),
            max: 3
        })
    );
    // The next /64, an IPv4 address and the program's own records have their own counts.
    for (n, from) in [(4, ip("2001:db8:1:3::1")), (5, ip("192.0.2.7")), (6, None)] {
        store
            .insert(&signed(n, 1), &ns(&["a"]), 1_000, 0, from)
            .unwrap();
    }
    // Its records in other namespaces, or in none, count towards its total.
    let from = ip("2001:db8:1:2::77");
    store
        .insert(&signed(7, 1), &ns(&["b"]), 1_000, 0, from)
        .unwrap();
    store.insert(&signed(8, 1), &[], 1_000, 0, from).unwrap();
    assert_eq!(
        store.insert(&signed(9, 1), &[], 1_000, 0, from),
        Err(StoreError::SourceFull(5))
    );
    // Refreshing a record it holds adds nothing; the caps only refuse what is new to it.
    store
        .insert(&signed(1, 2), &ns(&["a"]), 1_000, 0, from)
        .unwrap();
    assert!(matches!(
        store.insert(&signed(8, 2), &ns(&["a"]), 1_000, 0, from),
        Err(StoreError::SourceNamespaceFull { .. })
    ));
    // A record that moves to another source leaves the first one room.
    store
        .insert(&signed(1, 3), &ns(&["a"]), 1_000, 0, ip("198.51.100.1"))
        .unwrap();
    store
        .insert(&signed(9, 1), &ns(&["a"]), 1_000, 0, from)
        .unwrap();
    // So do deleted and expired ones.
    store.remove(&signed(9, 1).node_id(), 1).unwrap();
    store.insert(&signed(10, 1), &[], 1_000, 0, from).unwrap();
    assert_eq!(store.sweep(1_001), 9);
    for n in 11..14 {
        store
            .insert(&signed(n, 1), &ns(&["a"]), 2_000, 1_001, from)
            .unwrap();
    }
    // A cap of 0 is no cap.
    let open = RecordStore::new(RegistryLimits {
        max_per_source: 0,
        max_per_source_namespace: 0,
        ..limits()
    });
    for n in 0..300 {
        open.insert(&signed(n, 1), &ns(&["a"]), 1_000, 0, from)
            .unwrap();
    }
}

#[test]
fn list_pages_in_key_order() {
    let store = RecordStore::new(limits());
    let mut ids: Vec<NodeId> = Vec::new();
    for n in 0..25 {
        let r = signed(n, 1);
        ids.push(r.node_id());
        let names = if n % 5 == 0 {
            ns(&["other"])
        } else {
            ns(&["chat"])
        };
        store.insert(&r, &names, 1_000, 0, None).unwrap();
    }
    let mut want: Vec<NodeId> = (0..25).filter(|n| n % 5 != 0).map(|n| ids[n]).collect();
    want.sort();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let (page, next) = store.list("chat", cursor.as_ref(), 7, 500);
        assert!(page.len() <= 7);
        seen.extend(
            page.iter()
                .map(|s| SignedRecord::decode(&s.bytes).unwrap().node_id()),
        );
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, want);
    assert_eq!(store.list("nobody", None, 7, 500), (Vec::new(), None));
    // Expired records are left out of pages.
    assert!(store.list("chat", None, 100, 1_001).0.is_empty());
}

#[test]
fn remove_respects_seq() {
    let store = RecordStore::new(limits());
    let r = signed(1, 5);
    store.insert(&r, &ns(&["a"]), 1_000, 0, None).unwrap();
    assert_eq!(
        store.remove(&r.node_id(), 4),
        Err(StoreError::Stale { seq: 4, stored: 5 })
    );
    store.remove(&r.node_id(), 5).unwrap();
    assert_eq!(store.remove(&r.node_id(), 5), Err(StoreError::NotFound));
    assert!(store.list("a", None, 10, 0).0.is_empty());
    assert!(store.is_empty());
}

#[test]
fn snapshot_round_trips_and_checks_what_it_loads() {
    let dir = std::env::temp_dir().join(format!("burrow-records-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("records.snap");
    let store = RecordStore::new(limits());
    for n in 0..50 {
        let until = if n < 40 { 1_000 } else { 100 };
        store
            .insert(&signed(n, 3), &ns(&["chat"]), until, 0, None)
            .unwrap();
    }
    assert_eq!(store.save(&path).unwrap(), 50);

    let back = RecordStore::new(limits());
    // Ten were held only until 100.
    assert_eq!(back.load(&path, 500).unwrap(), 40);
    assert_eq!(back.len(), 40);
    assert_eq!(
        back.get(key(7).node_id().as_bytes(), 500),
        store.get(key(7).node_id().as_bytes(), 500)
    );
    assert_eq!(back.list("chat", None, 100, 500).0.len(), 40);
    assert!(back.get(key(45).node_id().as_bytes(), 50).is_none());

    // A tampered record is dropped, the rest load; a cut-short file loads what is whole.
    let mut data = std::fs::read(&path).unwrap();
    data[8 + 2 + 60] ^= 1;
    std::fs::write(&path, &data).unwrap();
    assert_eq!(RecordStore::new(limits()).load(&path, 0).unwrap(), 49);
    std::fs::write(&path, &data[..data.len() - 3]).unwrap();
    assert_eq!(RecordStore::new(limits()).load(&path, 0).unwrap(), 48);

    std::fs::write(&path, b"not a snapshot").unwrap();
    assert!(matches!(
        RecordStore::new(limits()).load(&path, 0),
        Err(SnapshotError::NotASnapshot(_))
    ));
    assert_eq!(
        RecordStore::new(limits())
            .load(&dir.join("missing"), 0)
            .unwrap(),
        0
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
