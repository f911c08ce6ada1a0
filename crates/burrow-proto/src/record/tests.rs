use super::*;

fn key() -> SecretKey {
    SecretKey::from_bytes([7; 32])
}

fn sample() -> NodeRecord {
    let mut r = NodeRecord::new(key().node_id(), 5, 1_700_000_000);
    r.relays.push("https://relay.example.com".parse().unwrap());
    r.addrs.push("203.0.113.7:41641".parse().unwrap());
    r.addrs.push("[2001:db8::1]:41641".parse().unwrap());
    r.name = Some("laptop ü".into());
    r.capabilities = vec!["chat/1".into(), "files".into()];
    r
}

/// A payload with everything up to (not including) the relay count.
fn head() -> Vec<u8> {
    let mut b = vec![VERSION];
    b.extend_from_slice(key().node_id().as_bytes());
    b.extend_from_slice(&5u64.to_be_bytes());
    b.extend_from_slice(&9u64.to_be_bytes());
    b
}

/// `head()` plus the given tail.
fn body(tail: &[u8]) -> Vec<u8> {
    let mut b = head();
    b.extend_from_slice(tail);
    b
}

/// Signs arbitrary payload bytes as a record would be, so the signed decoder reaches them.
fn seal(payload: &[u8]) -> Vec<u8> {
    let mut b = payload.to_vec();
    let sig = key().signing_key().sign(&signed_message(payload));
    b.extend_from_slice(&sig.to_bytes());
    b
}

#[test]
fn payload_round_trips() {
    let empty = NodeRecord::new(key().node_id(), 0, 0);
    let mut many = sample();
    many.relays.push("http://127.0.0.1:3340".parse().unwrap());
    many.relays.push("http://[::1]:8080".parse().unwrap());
    many.addrs.push("192.168.1.20:1".parse().unwrap());
    many.seq = u64::MAX;
    many.expires = u64::MAX;
    for r in [empty, sample(), many] {
        let bytes = r.encode_payload().unwrap();
        assert_eq!(NodeRecord::decode_payload(&bytes), Ok(r.clone()));
    }
    // What a typical node publishes stays far under the limit.
    assert_eq!(sample().encode_payload().unwrap().len(), 131);
    assert_eq!(
        NodeRecord::new(key().node_id(), 0, 0)
            .encode_payload()
            .unwrap()
            .len(),
        53
    );
}

#[test]
fn decoding_for_a_known_node() {
    let bytes = sample().encode_payload().unwrap();
    assert_eq!(
        NodeRecord::decode_payload_for(&bytes, &key().node_id()),
        Ok(sample())
    );
    let other = SecretKey::from_bytes([8; 32]).node_id();
    assert_eq!(
        NodeRecord::decode_payload_for(&bytes, &other),
        Err(RecordError::WrongNode(other))
    );
    assert!(matches!(
        NodeRecord::decode_payload_for(&bytes[..40], &key().node_id()),
        Err(RecordError::Truncated)
    ));
}

#[test]
fn signed_round_trips_and_verifies() {
    let signed = sample().sign(&key()).unwrap();
    assert_eq!(signed.record(), &sample());
    assert_eq!(signed.node_id(), key().node_id());
    assert_eq!(
        signed.as_bytes().len(),
        signed.payload().len() + SIGNATURE_LEN
    );
    assert_eq!(
        signed.payload(),
        sample().encode_payload().unwrap().as_slice()
    );
    let back = SignedRecord::decode(signed.as_bytes()).unwrap();
    assert_eq!(back, signed);
    assert_eq!(
        SignedRecord::verify(signed.as_bytes(), 1_700_000_000).unwrap(),
        signed
    );
    assert_eq!(signed.clone().into_bytes(), signed.as_bytes());
}

#[test]
fn scope_ids_are_dropped_when_signing() {
    let mut r = NodeRecord::new(key().node_id(), 1, 2);
    r.addrs.push("[fe80::1%7]:9".parse().unwrap());
    let signed = r.sign(&key()).unwrap();
    assert_eq!(
        signed.record().addrs,
        ["[fe80::1]:9".parse::<SocketAddr>().unwrap()]
    );
}

#[test]
fn expiry_and_seq() {
    let signed = sample().sign(&key()).unwrap();
    let bytes = signed.as_bytes();
    // Alive through the second it names, dead after it.
    assert!(SignedRecord::verify(bytes, 1_700_000_000).is_ok());
    let e = SignedRecord::verify(bytes, 1_700_000_001).unwrap_err();
    assert_eq!(
        e,
        RecordError::Expired {
            expires: 1_700_000_000,
            now: 1_700_000_001
        }
    );
    assert!(e.to_string().contains("expired"));
    // decode alone does not look at the time.
    assert!(SignedRecord::decode(bytes).is_ok());

    let r = sample();
    let mut newer = sample();
    newer.seq += 1;
    assert!(newer.supersedes(&r));
    assert!(!r.supersedes(&newer));
    assert!(!r.supersedes(&r));
    let mut other = newer.clone();
    other.node_id = SecretKey::from_bytes([8; 32]).node_id();
    assert!(!other.supersedes(&r));
    assert_eq!(newer.check_newer_than(r.seq), Ok(()));
    assert_eq!(
        r.check_newer_than(r.seq),
        Err(RecordError::Stale { seq: 5, current: 5 })
    );
    assert!(r.check_newer_than(6).is_err());
}

#[test]
fn forged_and_tampered_records_are_refused() {
    let signed = sample().sign(&key()).unwrap();
    let good = signed.as_bytes().to_vec();

    // Any flipped bit, in the payload or the signature, breaks it.
    for i in [0usize, 40, 60, good.len() - 70, good.len() - 1] {
        let mut b = good.clone();
        b[i] ^= 0x01;
        assert!(SignedRecord::decode(&b).is_err(), "byte {i}");
    }
    let mut b = good.clone();
    let last = b.len() - 1;
    b[last] ^= 0x80;
    assert_eq!(SignedRecord::decode(&b), Err(RecordError::Signature));

    // Signed by someone else, naming this key.
    let mallory = SecretKey::from_bytes([9; 32]);
    let payload = sample().encode_payload().unwrap();
    let mut forged = payload.clone();
    forged.extend_from_slice(
        &mallory
            .signing_key()
            .sign(&signed_message(&payload))
            .to_bytes(),
    );
    assert_eq!(SignedRecord::decode(&forged), Err(RecordError::Signature));

    // The right key, without the domain prefix: not a record signature.
    let mut undomained = payload.clone();
    undomained.extend_from_slice(&key().signing_key().sign(&payload).to_bytes());
    assert_eq!(
        SignedRecord::decode(&undomained),
        Err(RecordError::Signature)
    );

    // Signing for another node's record is refused up front.
    let e = sample().sign(&mallory).unwrap_err();
    assert!(matches!(e, RecordError::KeyMismatch { .. }));

    // Too short to hold a signature at all.
    assert_eq!(
        SignedRecord::decode(&good[..SIGNATURE_LEN - 1]),
        Err(RecordError::Truncated)
    );
    assert_eq!(SignedRecord::decode(&[]), Err(RecordError::Truncated));
}

#[test]
fn payload_errors() {
    let dec = |b: &[u8]| NodeRecord::decode_payload(b);
    assert_eq!(dec(&[]), Err(RecordError::Truncated));
    let mut b = head();
    b[0] = 2;
    assert_eq!(dec(&b), Err(RecordError::Version(2)));
    assert_eq!(dec(&head()[..20]), Err(RecordError::Truncated));
    assert_eq!(dec(&head()), Err(RecordError::Truncated));
    let mut b = body(&[0, 0, 0, 0]);
    b[1..33].copy_from_slice(&[2; 32]);
    assert_eq!(dec(&b), Err(RecordError::NodeId(NodeIdError::NotAKey)));

    assert_eq!(
        dec(&body(&[MAX_RELAYS as u8 + 1])),
        Err(RecordError::TooManyRelays(MAX_RELAYS + 1))
    );
    let relay = |url: &[u8]| {
        let mut t = vec![1, url.len() as u8];
        t.extend_from_slice(url);
        t.extend([0, 0, 0]);
        NodeRecord::decode_payload(&body(&t))
    };
    assert_eq!(relay(b"http://a:80").unwrap().relays[0].port(), 80);
    assert!(matches!(
        relay(b"ftp://a:1"),
        Err(RecordError::Relay(RelayUrlError::Scheme(_)))
    ));
    assert!(matches!(
        relay(b"http://\xff:80"),
        Err(RecordError::Relay(_))
    ));
    assert_eq!(
        relay(b"HTTP://a"),
        Err(RecordError::RelayNotCanonical("HTTP://a".into()))
    );
    assert_eq!(dec(&body(&[1, 4, b'h', b't'])), Err(RecordError::Truncated));

    assert_eq!(
        dec(&body(&[0, MAX_ADDRS as u8 + 1])),
        Err(RecordError::TooManyAddrs(MAX_ADDRS + 1))
    );
    assert_eq!(
        dec(&body(&[0, 1, 5, 1, 2, 3, 4, 0, 80, 0, 0])),
        Err(RecordError::AddrFamily(5))
    );
    assert_eq!(
        dec(&body(&[0, 1, 6, 1, 2, 3, 4, 0, 80, 0, 0])),
        Err(RecordError::Truncated)
    );

    // Names: absent is 0; empty is impossible to write; too long, bad UTF-8, control chars.
    assert_eq!(dec(&body(&[0, 0, 0, 0])).unwrap().name, None);
    assert_eq!(
        dec(&body(&[0, 0, 2, b'h', b'i', 0]))
            .unwrap()
            .name
            .as_deref(),
        Some("hi")
    );
    let mut t = vec![0, 0, MAX_NAME_LEN as u8 + 1];
    t.extend(std::iter::repeat_n(b'a', MAX_NAME_LEN + 1));
    t.push(0);
    assert!(matches!(dec(&body(&t)), Err(RecordError::Name(_))));
    assert_eq!(
        dec(&body(&[0, 0, 2, 0xc3, 0x28, 0])),
        Err(RecordError::Name("not UTF-8"))
    );
    assert_eq!(
        dec(&body(&[0, 0, 2, b'a', b'\n', 0])),
        Err(RecordError::Name("has control characters"))
    );
    assert_eq!(dec(&body(&[0, 0, 3, b'a'])), Err(RecordError::Truncated));

    assert_eq!(
        dec(&body(&[0, 0, 0, MAX_CAPABILITIES as u8 + 1])),
        Err(RecordError::TooManyCapabilities(MAX_CAPABILITIES + 1))
    );
    assert_eq!(
        dec(&body(&[0, 0, 0, 1, 0])),
        Err(RecordError::Capability(String::new()))
    );
    assert_eq!(
        dec(&body(&[0, 0, 0, 1, 2, b'a', b' '])),
        Err(RecordError::Capability("a ".into()))
    );
    assert_eq!(
        dec(&body(&[0, 0, 0, 1, 2, b'a'])),
        Err(RecordError::Truncated)
    );

    assert_eq!(
        dec(&body(&[0, 0, 0, 0, 9, 9])),
        Err(RecordError::TrailingBytes(2))
    );
    let big = vec![0; MAX_PAYLOAD_LEN + 1];
    assert_eq!(dec(&big), Err(RecordError::TooLarge(MAX_PAYLOAD_LEN + 1)));
    assert_eq!(
        SignedRecord::decode(&vec![0; MAX_SIGNED_LEN + 1]),
        Err(RecordError::TooLarge(MAX_SIGNED_LEN + 1))
    );
}

#[test]
fn encoding_refuses_what_it_cannot_say() {
    let enc = |r: &NodeRecord| r.encode_payload().unwrap_err();
    let mut r = sample();
    r.relays = vec!["http://a:1".parse().unwrap(); MAX_RELAYS + 1];
    assert_eq!(enc(&r), RecordError::TooManyRelays(MAX_RELAYS + 1));
    let mut r = sample();
    r.relays = vec![format!("https://{}:1", "h".repeat(250)).parse().unwrap()];
    assert_eq!(enc(&r), RecordError::RelayTooLong(260));
    let mut r = sample();
    r.addrs = vec!["10.0.0.1:1".parse().unwrap(); MAX_ADDRS + 1];
    assert_eq!(enc(&r), RecordError::TooManyAddrs(MAX_ADDRS + 1));
    let mut r = sample();
    r.name = Some(String::new());
    assert!(matches!(enc(&r), RecordError::Name(_)));
    r.name = Some("x".repeat(MAX_NAME_LEN + 1));
    assert!(matches!(enc(&r), RecordError::Name(_)));
    r.name = Some("x".repeat(MAX_NAME_LEN));
    assert!(r.encode_payload().is_ok());
    let mut r = sample();
    r.capabilities = vec!["c".into(); MAX_CAPABILITIES + 1];
    assert_eq!(
        enc(&r),
        RecordError::TooManyCapabilities(MAX_CAPABILITIES + 1)
    );
    r.capabilities = vec!["has space".into()];
    assert_eq!(enc(&r), RecordError::Capability("has space".into()));
    r.capabilities = vec!["c".repeat(MAX_CAPABILITY_LEN + 1)];
    assert!(matches!(enc(&r), RecordError::Capability(_)));

    // Every field within its limit, but too much together.
    let mut r = NodeRecord::new(key().node_id(), 1, 1);
    for i in 0..MAX_RELAYS {
        let url = format!("https://{}:{}", "h".repeat(240), 1000 + i);
        r.relays.push(url.parse().unwrap());
    }
    let e = enc(&r);
    assert!(
        matches!(e, RecordError::TooLarge(n) if n > MAX_PAYLOAD_LEN),
        "{e}"
    );
    assert!(r.sign(&key()).is_err());
}

/// The largest record that encodes is at most MAX_SIGNED_LEN bytes signed.
#[test]
fn largest_record_fits_a_bep44_item() {
    let mut r = NodeRecord::new(key().node_id(), u64::MAX, u64::MAX);
    r.addrs = (0..MAX_ADDRS as u16)
        .map(|p| SocketAddr::new(Ipv6Addr::LOCALHOST.into(), p))
        .collect();
    r.name = Some("n".repeat(MAX_NAME_LEN));
    // Every field at its limit would be too large together: half the capabilities.
    r.capabilities = (0..MAX_CAPABILITIES / 2)
        .map(|i| format!("{i:0>width$}", width = MAX_CAPABILITY_LEN))
        .collect();
    // Fill with relays while the record still encodes.
    let mut i = 0;
    loop {
        let mut more = r.clone();
        more.relays.push(
            format!("https://{}:{}", "h".repeat(120), 1000 + i)
                .parse()
                .unwrap(),
        );
        if more.relays.len() > MAX_RELAYS || more.encode_payload().is_err() {
            break;
        }
        r = more;
        i += 1;
    }
    let signed = r.sign(&key()).unwrap();
    assert!(signed.as_bytes().len() <= MAX_SIGNED_LEN);
    assert!(signed.as_bytes().len() > MAX_SIGNED_LEN - 200);
    // Bencoded as a BEP 44 value ("936:" + payload), the payload is under 1000 bytes.
    assert!(signed.payload().len() + 4 < 1000);
}

#[test]
fn deletes_are_signed_and_timely() {
    let k = key();
    let id = k.node_id();
    let sig = sign_delete(&k, 7, 1000);
    assert_eq!(verify_delete(&id, 7, 1000, &sig, 1000), Ok(()));
    assert_eq!(verify_delete(&id, 7, 1000, &sig, 1300), Ok(()));
    assert_eq!(verify_delete(&id, 7, 1000, &sig, 700), Ok(()));
    assert_eq!(
        verify_delete(&id, 7, 1000, &sig, 1301),
        Err(RecordError::DeleteTimestamp {
            timestamp: 1000,
            now: 1301
        })
    );
    // Any other seq, time, node or a record signature does not pass as this delete.
    assert_eq!(
        verify_delete(&id, 8, 1000, &sig, 1000),
        Err(RecordError::Signature)
    );
    assert_eq!(
        verify_delete(&id, 7, 1001, &sig, 1000),
        Err(RecordError::Signature)
    );
    let other = SecretKey::from_bytes([9; 32]);
    assert_eq!(
        verify_delete(&other.node_id(), 7, 1000, &sig, 1000),
        Err(RecordError::Signature)
    );
    let mallory = sign_delete(&other, 7, 1000);
    assert_eq!(
        verify_delete(&id, 7, 1000, &mallory, 1000),
        Err(RecordError::Signature)
    );
    assert_eq!(
        verify_delete(&id, 7, 1000, &sig[..63], 1000),
        Err(RecordError::Signature)
    );
}

/// Deterministic mutation of payloads and of signed records: never a panic, whatever decodes
/// encodes back byte for byte, and no mutant keeps a valid signature. Signature checks are
/// slow in debug builds (milliseconds each), so only one input in 32 goes through each.
#[test]
fn mutated_records_never_panic() {
    let mut r = sample();
    r.relays.push("http://[::1]:3340".parse().unwrap());
    let payload = r.encode_payload().unwrap();
    let signed = r.sign(&key()).unwrap().into_bytes();
    let mut rng = crate::mutation::Mutator::new();
    let mut decoded = 0;
    for i in 0..50_000 {
        let seed = if i % 32 == 1 { &signed } else { &payload };
        let mut m = rng.overwrite(seed);
        if rng.next().is_multiple_of(4) {
            rng.truncate_below(&mut m, seed.len() + 1);
        }
        if let Ok(record) = NodeRecord::decode_payload(&m) {
            assert_eq!(record.encode_payload().unwrap(), m);
            decoded += 1;
        }
        if i % 32 == 1 {
            assert!(
                SignedRecord::decode(&m).is_err() || m == signed,
                "a mutated record kept a valid signature"
            );
        } else if i % 32 == 0 {
            // Sealed with the sample's key: valid exactly when the payload decodes and still
            // names that key.
            let sealed = seal(&m);
            match (
                SignedRecord::decode(&sealed),
                NodeRecord::decode_payload(&m),
            ) {
                (Ok(s), Ok(p)) => assert_eq!(s.record(), &p),
                (Err(RecordError::Signature), Ok(p)) => assert_ne!(p.node_id, key().node_id()),
                (Err(_), Err(_)) => {}
                (s, p) => panic!("signed {s:?} vs payload {p:?}"),
            }
        }
    }
    assert!(decoded > 1000, "{decoded}");
}

#[test]
fn namespaces() {
    for good in [
        "a",
        "chat",
        "Chat.v1:room-2_x",
        &"x".repeat(MAX_NAMESPACE_LEN),
    ] {
        assert!(is_valid_namespace(good), "{good}");
    }
    for bad in [
        "",
        "has space",
        "ü",
        "a/b",
        "a?b",
        "%20",
        &"x".repeat(MAX_NAMESPACE_LEN + 1),
    ] {
        assert!(!is_valid_namespace(bad), "{bad}");
    }
}
