use super::*;

const NOW_MS: u64 = 1_800_000_000_000;

fn key(n: u8) -> SecretKey {
    SecretKey::from_bytes([n; 32])
}

fn signal(from: &SecretKey, to: NodeId, seq: u64) -> Signal {
    Signal {
        kind: Kind::Candidate,
        from: from.node_id(),
        to,
        session: 7,
        seq,
        unix_ms: NOW_MS,
        body: r#"{"candidate":"candidate:1 1 udp 2122 198.18.1.2 40000 typ srflx"}"#.into(),
    }
}

/// Everything the core has to say now, up to its timeout.
fn drain(core: &mut Signaling) -> Vec<Output> {
    let mut outs = Vec::new();
    loop {
        match core.poll_output() {
            Output::Timeout(_) => return outs,
            out => outs.push(out),
        }
    }
}

fn receive(core: &mut Signaling, now: Instant, data: &[u8], unix_ms: u64) -> Output {
    core.handle_input(now, Input::Received { data, unix_ms });
    let mut outs = drain(core);
    assert_eq!(outs.len(), 1, "{outs:?}");
    outs.remove(0)
}

#[test]
fn a_signal_round_trips_and_its_signature_binds_every_field() {
    let (a, b) = (key(1), key(2));
    let s = signal(&a, b.node_id(), 3);
    let bytes = s.encode(&a).unwrap();
    assert_eq!(bytes.len(), HEADER_LEN + s.body.len() + SIGNATURE_LEN);
    assert!(looks_like_signal(&bytes));
    assert!(!crate::disco::looks_like_disco(&bytes));
    assert_eq!(Signal::decode(&bytes).unwrap(), s);
    // Any byte changed breaks it: a relay can change nothing.
    for i in 0..bytes.len() {
        let mut forged = bytes.clone();
        forged[i] ^= 0x01;
        assert!(Signal::decode(&forged).is_err(), "byte {i}");
    }
    // Signed by another key than the one it names.
    let mut claimed = s.clone();
    claimed.from = b.node_id();
    let forged = claimed.encode(&a).unwrap();
    assert_eq!(Signal::decode(&forged), Err(SignalError::BadSignature));
}

#[test]
fn bad_bytes_get_their_own_errors() {
    let (a, b) = (key(1), key(2));
    let bytes = signal(&a, b.node_id(), 0).encode(&a).unwrap();
    assert_eq!(Signal::decode(b"junk"), Err(SignalError::NotASignal));
    assert_eq!(Signal::decode(&MAGIC), Err(SignalError::Truncated));
    assert_eq!(
        Signal::decode(&bytes[..bytes.len() - 1]),
        Err(SignalError::Truncated)
    );
    let mut long = bytes.clone();
    long.push(0);
    assert_eq!(Signal::decode(&long), Err(SignalError::TrailingBytes(1)));
    let mut kind = bytes.clone();
    kind[4] = 9;
    assert_eq!(Signal::decode(&kind), Err(SignalError::UnknownKind(9)));
    let mut huge = signal(&a, b.node_id(), 0);
    huge.body = "x".repeat(MAX_BODY + 1);
    assert_eq!(huge.encode(&a), Err(SignalError::BodyTooLong(MAX_BODY + 1)));
    huge.body.pop();
    assert!(Signal::decode(&huge.encode(&a).unwrap()).is_ok());
}

#[test]
fn the_core_numbers_what_it_sends_and_lets_each_signal_through_once() {
    let now = Instant::now();
    let (a, b) = (key(1), key(2));
    let mut alice = Signaling::new(a.clone(), 1);
    let mut bob = Signaling::new(b.clone(), 2);
    alice.handle_input(
        now,
        Input::Send {
            to: b.node_id(),
            session: None,
            kind: Kind::Offer,
            body: "v=0 offer".into(),
            unix_ms: NOW_MS,
        },
    );
    let Output::Transmit { to, session, data } = alice.poll_output() else {
        panic!("no transmit");
    };
    assert_eq!(to, b.node_id());
    let Output::Received(offer) = receive(&mut bob, now, &data, NOW_MS + 1_000) else {
        panic!("the offer is not let through");
    };
    assert_eq!(
        (offer.kind, offer.session, offer.seq),
        (Kind::Offer, session, 0)
    );
    // The same bytes again: a replay.
    assert!(matches!(
        receive(&mut bob, now, &data, NOW_MS),
        Output::Rejected(Rejected::Replayed { seq: 0, .. })
    ));
    // Bob answers in the session; Alice's next signals count up, and may come out of order.
    bob.handle_input(
        now,
        Input::Send {
            to: a.node_id(),
            session: Some(session),
            kind: Kind::Answer,
            body: "v=0 answer".into(),
            unix_ms: NOW_MS,
        },
    );
    let Output::Transmit { data: answer, .. } = bob.poll_output() else {
        panic!("no answer");
    };
    assert!(matches!(
        receive(&mut alice, now, &answer, NOW_MS),
        Output::Received(Signal {
            kind: Kind::Answer,
            seq: 0,
            ..
        })
    ));
    let candidates: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            alice.handle_input(
                now,
                Input::Send {
                    to: b.node_id(),
                    session: Some(session),
                    kind: Kind::Candidate,
                    body: format!("candidate {i}"),
                    unix_ms: NOW_MS,
                },
            );
            match alice.poll_output() {
                Output::Transmit { data, .. } => data,
                other => panic!("{other:?}"),
            }
        })
        .collect();
    for c in [&candidates[2], &candidates[0], &candidates[1]] {
        assert!(matches!(
            receive(&mut bob, now, c, NOW_MS),
            Output::Received(_)
        ));
    }
    assert!(matches!(
        receive(&mut bob, now, &candidates[1], NOW_MS),
        Output::Rejected(Rejected::Replayed { seq: 2, .. })
    ));
    assert_eq!(
        bob.stats(),
        SignalStats {
            accepted: 4,
            replayed: 2,
            ..SignalStats::default()
        }
    );
}

#[test]
fn misaddressed_stale_forged_and_ended_signals_are_rejected_and_counted() {
    let now = Instant::now();
    let (a, b, c) = (key(1), key(2), key(3));
    let mut bob = Signaling::new(b.clone(), 2);
    let for_carol = signal(&a, c.node_id(), 0).encode(&a).unwrap();
    assert!(matches!(
        receive(&mut bob, now, &for_carol, NOW_MS),
        Output::Rejected(Rejected::NotForUs)
    ));
    let skew = MAX_SKEW.as_millis() as u64 + 1;
    let fresh = signal(&a, b.node_id(), 0).encode(&a).unwrap();
    assert!(matches!(
        receive(&mut bob, now, &fresh, NOW_MS + skew),
        Output::Rejected(Rejected::Stale(_))
    ));
    assert!(matches!(
        receive(&mut bob, now, &fresh, NOW_MS - skew),
        Output::Rejected(Rejected::Stale(_))
    ));
    let mut forged = fresh.clone();
    *forged.last_mut().unwrap() ^= 1;
    assert!(matches!(
        receive(&mut bob, now, &forged, NOW_MS),
        Output::Rejected(Rejected::Invalid(SignalError::BadSignature))
    ));
    assert!(matches!(
        receive(&mut bob, now, b"\x20BWSjunk", NOW_MS),
        Output::Rejected(Rejected::Invalid(SignalError::Truncated))
    ));
    // Nothing rejected so far left state behind; a bye ends the session for what follows.
    assert_eq!(bob.sessions(), 0);
    let mut bye = signal(&a, b.node_id(), 1);
    bye.kind = Kind::Bye;
    let bye = bye.encode(&a).unwrap();
    assert!(matches!(
        receive(&mut bob, now, &bye, NOW_MS),
        Output::Received(_)
    ));
    assert!(matches!(
        receive(&mut bob, now, &fresh, NOW_MS),
        Output::Rejected(Rejected::Ended(7))
    ));
    assert_eq!(
        bob.stats(),
        SignalStats {
            accepted: 1,
            malformed: 1,
            forged: 1,
            misaddressed: 1,
            stale: 2,
            replayed: 1,
        }
    );
}

#[test]
fn the_replay_window_holds_the_last_64_and_refuses_what_is_older() {
    let mut s = Session::new(Instant::now());
    assert!(s.admit(100));
    assert!(s.admit(100 - REPLAY_WINDOW + 1));
    assert!(!s.admit(100 - REPLAY_WINDOW), "older than the window");
    assert!(!s.admit(100));
    assert!(s.admit(1_000), "a jump past the window");
    assert!(!s.admit(1_000));
    assert!(s.admit(999));
    assert!(s.admit(u64::MAX));
    assert!(!s.admit(u64::MAX));
}

#[test]
fn sessions_are_forgotten_when_idle_and_bounded_per_peer() {
    let now = Instant::now();
    let (a, b) = (key(1), key(2));
    let mut bob = Signaling::new(b.clone(), 2);
    for session in 0..(MAX_SESSIONS_PER_PEER as u64 + 3) {
        let mut s = signal(&a, b.node_id(), 0);
        s.session = session;
        let data = s.encode(&a).unwrap();
        assert!(matches!(
            receive(&mut bob, now, &data, NOW_MS),
            Output::Received(_)
        ));
    }
    assert_eq!(bob.sessions(), MAX_SESSIONS_PER_PEER);
    let Output::Timeout(Some(at)) = bob.poll_output() else {
        panic!("no idle timer");
    };
    assert_eq!(at, now + SESSION_IDLE);
    bob.handle_input(at, Input::Timeout);
    assert_eq!(bob.sessions(), 0);
    assert!(matches!(bob.poll_output(), Output::Timeout(None)));
}
