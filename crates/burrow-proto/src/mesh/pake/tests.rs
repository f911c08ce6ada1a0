//! The short-code exchange, both cores in memory.

use std::time::{Duration, Instant};

use super::inviter::{self, Inviter};
use super::joiner::{self, Joiner};
use super::*;
use crate::identity::SecretKey;
use crate::mesh::code::ShortCode;

const CODE: &str = "MESH-ABCD-2345-WXYZ";
const INVITE_ID: [u8; 16] = [0x1d; 16];
const PAYLOAD: &[u8] = b"burrowinvite-the-full-token";

fn id(n: u8) -> NodeId {
    SecretKey::from_bytes([n; 32]).node_id()
}

fn code(s: &str) -> ShortCode {
    s.parse().unwrap()
}

/// Node 1 invites.
fn inviter_config() -> inviter::Config {
    inviter::Config::new(id(1), INVITE_ID, code(CODE), PAYLOAD.to_vec())
}

fn new_inviter(seed: u64) -> Inviter {
    Inviter::new(inviter_config(), seed).unwrap()
}

fn new_joiner(n: u8, code_text: &str, seed: u64) -> Joiner {
    Joiner::new(joiner::Config::new(id(n), id(1), code(code_text)), seed)
}

/// One side's outputs until its timeout: messages, events and the timeout.
fn drain_joiner(j: &mut Joiner) -> (Vec<Vec<u8>>, Vec<joiner::Event>, Option<Instant>) {
    let (mut sent, mut events) = (Vec::new(), Vec::new());
    loop {
        match j.poll_output() {
            joiner::Output::Transmit(b) => sent.push(b),
            joiner::Output::Event(e) => events.push(e),
            joiner::Output::Timeout(at) => return (sent, events, at),
        }
    }
}

fn drain_inviter(
    i: &mut Inviter,
) -> (Vec<inviter::Transmit>, Vec<inviter::Event>, Option<Instant>) {
    let (mut sent, mut events) = (Vec::new(), Vec::new());
    loop {
        match i.poll_output() {
            inviter::Output::Transmit(t) => sent.push(t),
            inviter::Output::Event(e) => events.push(e),
            inviter::Output::Timeout(at) => return (sent, events, at),
        }
    }
}

/// Everything that happened in one exchange.
struct Run {
    joiner: Vec<joiner::Event>,
    inviter: Vec<inviter::Event>,
    /// Every message between the two, in order, both ways.
    wire: Vec<Vec<u8>>,
    /// What the inviter sent to other joiners meanwhile.
    others: Vec<inviter::Transmit>,
}

/// Runs joiner `n` against the inviter to the end, in memory.
fn run(inv: &mut Inviter, j: &mut Joiner, n: u8, now: Instant) -> Run {
    let mut out = Run {
        joiner: Vec::new(),
        inviter: Vec::new(),
        wire: Vec::new(),
        others: Vec::new(),
    };
    j.handle_input(now, joiner::Input::Start);
    loop {
        let (sent, events, _) = drain_joiner(j);
        out.joiner.extend(events);
        if sent.is_empty() {
            return out;
        }
        for bytes in sent {
            out.wire.push(bytes.clone());
            inv.handle_input(
                now,
                inviter::Input::Message {
                    from: id(n),
                    bytes: &bytes,
                },
            );
        }
        let (sent, events, _) = drain_inviter(inv);
        out.inviter.extend(events);
        for t in sent {
            if t.to != id(n) {
                out.others.push(t);
                continue;
            }
            out.wire.push(t.bytes.clone());
            j.handle_input(now, joiner::Input::Message(&t.bytes));
        }
    }
}

#[test]
fn the_right_code_hands_over_the_payload() {
    let now = Instant::now();
    let mut inv = new_inviter(1);
    let mut j = new_joiner(5, "mesh-abcd-2345-wxyz", 2);
    let run = run(&mut inv, &mut j, 5, now);
    assert_eq!(
        run.joiner,
        [joiner::Event::Joined {
            invite_id: INVITE_ID,
            payload: PAYLOAD.to_vec()
        }]
    );
    assert_eq!(run.inviter, [inviter::Event::Joined { joiner: id(5) }]);
    assert_eq!(run.wire.len(), 4);
    // The payload travels sealed.
    let welcome = &run.wire[3];
    assert!(!welcome.windows(PAYLOAD.len()).any(|w| w == PAYLOAD));
    assert_eq!(inv.failures(), 0);
    // Both are done: nothing pending.
    assert_eq!(drain_joiner(&mut j).2, None);
    assert_eq!(drain_inviter(&mut inv).2, None);
    // A multi-use invite serves the next joiner too.
    let run = self::run(&mut inv, &mut new_joiner(6, CODE, 3), 6, now);
    assert!(matches!(run.joiner[..], [joiner::Event::Joined { .. }]));
}

#[test]
fn a_wrong_code_fails_on_both_sides_and_three_burn_the_invite() {
    let now = Instant::now();
    let mut inv = new_inviter(1);
    for (attempt, n) in [7u8, 8, 7].into_iter().enumerate() {
        // Same rendezvous part, wrong password part.
        let run = run(
            &mut inv,
            &mut new_joiner(n, "MESH-ABCD-2345-WXYY", 10 + n as u64),
            n,
            now,
        );
        let last = attempt == 2;
        let expected = if last {
            Failure::Burned
        } else {
            Failure::WrongCode
        };
        assert_eq!(
            run.joiner,
            [joiner::Event::Failed(expected)],
            "attempt {attempt}"
        );
        let mut want = vec![inviter::Event::Failed {
            joiner: id(n),
            reason: Failure::WrongCode,
        }];
        if last {
            want.push(inviter::Event::Burned);
        }
        assert_eq!(run.inviter, want);
        assert_eq!(inv.failures(), attempt as u32 + 1);
        assert_eq!(inv.is_burned(), last);
    }
    // Dead: the right code is refused, and no further guess is answered.
    let run = run(&mut inv, &mut new_joiner(9, CODE, 20), 9, now);
    assert_eq!(run.joiner, [joiner::Event::Failed(Failure::Burned)]);
    assert!(run.inviter.is_empty());
    assert_eq!(run.wire.len(), 2);
    assert_eq!(
        Failure::Burned.to_string(),
        "the code is dead after 3 failed attempts; ask for a new invite"
    );
}

#[test]
fn a_resumed_core_keeps_counting_from_where_it_was() {
    let now = Instant::now();
    // Two wrong codes before a restart: one more burns it.
    let mut inv = new_inviter(1).with_failures(2);
    assert_eq!((inv.failures(), inv.is_burned()), (2, false));
    let run = run(
        &mut inv,
        &mut new_joiner(7, "MESH-ABCD-2345-WXYY", 3),
        7,
        now,
    );
    assert_eq!(run.joiner, [joiner::Event::Failed(Failure::Burned)]);
    assert!(inv.is_burned());
    // A burned count resumes burned, and a count past the limit is the limit.
    let mut inv = new_inviter(1).with_failures(u32::MAX);
    assert_eq!(inv.failures(), MAX_FAILURES);
    let run = self::run(&mut inv, &mut new_joiner(8, CODE, 4), 8, now);
    assert_eq!(run.joiner, [joiner::Event::Failed(Failure::Burned)]);
}

#[test]
fn burning_refuses_the_exchanges_in_flight() {
    let now = Instant::now();
    let mut inv = new_inviter(1);
    // Joiner 5 (right code) is half-way: its Start was answered.
    let mut waiting = new_joiner(5, CODE, 2);
    waiting.handle_input(now, joiner::Input::Start);
    let (start, _, _) = drain_joiner(&mut waiting);
    inv.handle_input(
        now,
        inviter::Input::Message {
            from: id(5),
            bytes: &start[0],
        },
    );
    let (reply, _, _) = drain_inviter(&mut inv);
    waiting.handle_input(now, joiner::Input::Message(&reply[0].bytes));
    let (confirm, _, _) = drain_joiner(&mut waiting);
    let mut last = None;
    for n in 6..9 {
        let wrong = new_joiner(n, "MESH-ABCD-2345-WXYY", n as u64);
        last = Some(run(&mut inv, &mut { wrong }, n, now));
    }
    assert!(inv.is_burned());
    // The burn told joiner 5 at once, and its late confirmation finds no session.
    let last = last.unwrap();
    assert_eq!(
        last.others,
        [inviter::Transmit {
            to: id(5),
            bytes: Message::Refused(Failure::Burned).encode()
        }]
    );
    assert!(last.inviter.contains(&inviter::Event::Failed {
        joiner: id(5),
        reason: Failure::Burned
    }));
    inv.handle_input(
        now,
        inviter::Input::Message {
            from: id(5),
            bytes: &confirm[0],
        },
    );
    let (sent, _, _) = drain_inviter(&mut inv);
    assert_eq!(
        Message::decode(&sent[0].bytes),
        Ok(Message::Refused(Failure::Unexpected))
    );
    waiting.handle_input(now, joiner::Input::Message(&last.others[0].bytes));
    assert_eq!(
        drain_joiner(&mut waiting).1,
        [joiner::Event::Failed(Failure::Burned)]
    );
}

#[test]
fn spliced_sessions_fail_key_confirmation() {
    let now = Instant::now();
    // Two joiners with the right code, each half-way.
    let half_way = |inv: &mut Inviter, n: u8| {
        let mut j = new_joiner(n, CODE, n as u64);
        j.handle_input(now, joiner::Input::Start);
        let (start, _, _) = drain_joiner(&mut j);
        inv.handle_input(
            now,
            inviter::Input::Message {
                from: id(n),
                bytes: &start[0],
            },
        );
        let (reply, _, _) = drain_inviter(inv);
        (j, reply[0].bytes.clone())
    };
    let confirm_of = |j: &mut Joiner, reply: &[u8]| {
        j.handle_input(now, joiner::Input::Message(reply));
        drain_joiner(j).0.remove(0)
    };

    // 5's confirmation arrives in 6's session (a relay swapping them).
    let mut inv = new_inviter(1);
    let (mut j5, reply5) = half_way(&mut inv, 5);
    let (mut j6, reply6) = half_way(&mut inv, 6);
    let confirm5 = confirm_of(&mut j5, &reply5);
    let _ = confirm_of(&mut j6, &reply6);
    inv.handle_input(
        now,
        inviter::Input::Message {
            from: id(6),
            bytes: &confirm5,
        },
    );
    let (sent, events, _) = drain_inviter(&mut inv);
    assert_eq!(
        Message::decode(&sent[0].bytes),
        Ok(Message::Refused(Failure::WrongCode))
    );
    assert_eq!(
        events,
        [inviter::Event::Failed {
            joiner: id(6),
            reason: Failure::WrongCode
        }]
    );

    // 6's Reply delivered to 5: 5 confirms keys no inviter session has.
    let mut inv = new_inviter(1);
    let (mut j5, _) = half_way(&mut inv, 5);
    let (_, reply6) = half_way(&mut inv, 6);
    let confirm = confirm_of(&mut j5, &reply6);
    inv.handle_input(
        now,
        inviter::Input::Message {
            from: id(5),
            bytes: &confirm,
        },
    );
    let (sent, _, _) = drain_inviter(&mut inv);
    assert_eq!(
        Message::decode(&sent[0].bytes),
        Ok(Message::Refused(Failure::WrongCode))
    );

    // 6's Welcome delivered to 5.
    let mut inv = new_inviter(1);
    let (mut j5, reply5) = half_way(&mut inv, 5);
    let (mut j6, reply6) = half_way(&mut inv, 6);
    let _ = confirm_of(&mut j5, &reply5);
    let confirm6 = confirm_of(&mut j6, &reply6);
    inv.handle_input(
        now,
        inviter::Input::Message {
            from: id(6),
            bytes: &confirm6,
        },
    );
    let (welcome6, _, _) = drain_inviter(&mut inv);
    j5.handle_input(now, joiner::Input::Message(&welcome6[0].bytes));
    assert_eq!(
        drain_joiner(&mut j5).1,
        [joiner::Event::Failed(Failure::WrongCode)]
    );

    // A relay that says 5's messages come from 7: the keys are bound to the real ids.
    let mut inv = new_inviter(1);
    let mut j5 = new_joiner(5, CODE, 5);
    j5.handle_input(now, joiner::Input::Start);
    let (start, _, _) = drain_joiner(&mut j5);
    let from = id(7);
    inv.handle_input(
        now,
        inviter::Input::Message {
            from,
            bytes: &start[0],
        },
    );
    let (reply, _, _) = drain_inviter(&mut inv);
    let confirm = confirm_of(&mut j5, &reply[0].bytes);
    inv.handle_input(
        now,
        inviter::Input::Message {
            from,
            bytes: &confirm,
        },
    );
    let (sent, _, _) = drain_inviter(&mut inv);
    assert_eq!(
        Message::decode(&sent[0].bytes),
        Ok(Message::Refused(Failure::WrongCode))
    );

    // A joiner talking to the wrong inviter (another node answering): its keys name node 1.
    let mut other = Inviter::new(
        inviter::Config::new(id(2), INVITE_ID, code(CODE), PAYLOAD.to_vec()),
        1,
    )
    .unwrap();
    let run = run(&mut other, &mut new_joiner(5, CODE, 5), 5, now);
    assert_eq!(run.joiner, [joiner::Event::Failed(Failure::WrongCode)]);
}

#[test]
fn the_same_seeds_give_the_same_bytes() {
    let now = Instant::now();
    let wire = |inviter_seed, joiner_seed| {
        run(
            &mut new_inviter(inviter_seed),
            &mut new_joiner(5, CODE, joiner_seed),
            5,
            now,
        )
        .wire
    };
    let a = wire(1, 2);
    assert_eq!(a, wire(1, 2));
    let b = wire(1, 3);
    assert_ne!(a[0], b[0]);
    assert_eq!(a[1].len(), b[1].len());
    assert_ne!(wire(4, 2)[1], a[1]);
}

#[test]
fn exchanges_time_out() {
    let t0 = Instant::now();
    let mut j = new_joiner(5, CODE, 2);
    assert_eq!(drain_joiner(&mut j), (vec![], vec![], None));
    j.handle_input(t0, joiner::Input::Start);
    let (start, _, at) = drain_joiner(&mut j);
    assert_eq!(at, Some(t0 + DEFAULT_TIMEOUT));
    j.handle_input(t0 + Duration::from_secs(29), joiner::Input::Timeout);
    assert_eq!(drain_joiner(&mut j).1, []);
    j.handle_input(t0 + DEFAULT_TIMEOUT, joiner::Input::Timeout);
    assert_eq!(
        drain_joiner(&mut j),
        (vec![], vec![joiner::Event::Failed(Failure::Timeout)], None)
    );

    // The inviter forgets a joiner that went quiet, and counts no failure.
    let mut inv = new_inviter(1);
    inv.handle_input(
        t0,
        inviter::Input::Message {
            from: id(5),
            bytes: &start[0],
        },
    );
    let (_, _, at) = drain_inviter(&mut inv);
    assert_eq!(at, Some(t0 + DEFAULT_TIMEOUT));
    inv.handle_input(t0 + Duration::from_secs(29), inviter::Input::Timeout);
    assert_eq!(drain_inviter(&mut inv).1, []);
    inv.handle_input(t0 + DEFAULT_TIMEOUT, inviter::Input::Timeout);
    assert_eq!(
        drain_inviter(&mut inv),
        (
            vec![],
            vec![inviter::Event::Failed {
                joiner: id(5),
                reason: Failure::Timeout
            }],
            None
        )
    );
    assert_eq!(inv.failures(), 0);
}

#[test]
fn the_inviter_refuses_what_it_cannot_serve() {
    let now = Instant::now();
    let start_of = |n: u8, code_text: &str| {
        let mut j = new_joiner(n, code_text, n as u64);
        j.handle_input(now, joiner::Input::Start);
        drain_joiner(&mut j).0.remove(0)
    };
    let answer = |inv: &mut Inviter, n: u8, bytes: &[u8]| {
        inv.handle_input(now, inviter::Input::Message { from: id(n), bytes });
        let (sent, _, _) = drain_inviter(inv);
        sent.into_iter()
            .map(|t| Message::decode(&t.bytes).unwrap())
            .collect::<Vec<_>>()
    };
    let refused = |f| vec![Message::Refused(f)];

    let mut config = inviter_config();
    config.max_sessions = 1;
    let mut inv = Inviter::new(config, 1).unwrap();
    assert!(matches!(
        answer(&mut inv, 5, &start_of(5, CODE))[..],
        [Message::Reply { .. }]
    ));
    assert_eq!(
        answer(&mut inv, 6, &start_of(6, CODE)),
        refused(Failure::Busy)
    );
    // Starting again replaces the joiner's own session.
    assert!(matches!(
        answer(&mut inv, 5, &start_of(5, CODE))[..],
        [Message::Reply { .. }]
    ));
    assert_eq!(
        answer(&mut inv, 6, &start_of(6, "MESH-ZZZZ-2345-WXYZ")),
        refused(Failure::UnknownCode)
    );
    assert_eq!(
        answer(&mut inv, 7, &Message::Confirm { tag: [0; 32] }.encode()),
        refused(Failure::Unexpected)
    );
    assert_eq!(answer(&mut inv, 7, b"junk"), refused(Failure::Unexpected));
    let reply = Message::Reply {
        invite_id: INVITE_ID,
        spake: [0; 33],
    };
    assert_eq!(
        answer(&mut inv, 7, &reply.encode()),
        refused(Failure::Unexpected)
    );
    // A bad SPAKE2 message (wrong side byte), from 5, whose new Start frees its place.
    let mut bad = Message::decode(&start_of(5, CODE)).unwrap();
    if let Message::Start { spake, .. } = &mut bad {
        spake[0] = b'B';
    }
    assert_eq!(
        answer(&mut inv, 5, &bad.encode()),
        refused(Failure::Unexpected)
    );
    assert!(matches!(
        answer(&mut inv, 6, &start_of(6, CODE))[..],
        [Message::Reply { .. }]
    ));
    // A refusal is never answered.
    assert_eq!(
        answer(&mut inv, 7, &Message::Refused(Failure::Busy).encode()),
        []
    );
    assert_eq!(inv.failures(), 0);

    let mut config = inviter_config();
    config.payload = vec![0; MAX_PAYLOAD_LEN + 1];
    assert!(matches!(
        Inviter::new(config.clone(), 1),
        Err(FormatError::TooLarge { .. })
    ));
    config.payload.pop();
    let mut inv = Inviter::new(config, 1).unwrap();
    let run = run(&mut inv, &mut new_joiner(5, CODE, 2), 5, now);
    assert!(
        matches!(&run.joiner[..], [joiner::Event::Joined { payload, .. }] if payload.len() == MAX_PAYLOAD_LEN)
    );
}

#[test]
fn the_joiner_ends_on_anything_out_of_turn() {
    let now = Instant::now();
    let events_after = |bytes: &[u8]| {
        let mut j = new_joiner(5, CODE, 2);
        j.handle_input(now, joiner::Input::Start);
        drain_joiner(&mut j);
        j.handle_input(now, joiner::Input::Message(bytes));
        let (sent, events, at) = drain_joiner(&mut j);
        assert!(sent.is_empty());
        assert_eq!(at, None);
        // Done: more input changes nothing.
        j.handle_input(now, joiner::Input::Start);
        assert_eq!(drain_joiner(&mut j), (vec![], vec![], None));
        events
    };
    let failed = |f| vec![joiner::Event::Failed(f)];
    assert_eq!(events_after(b"junk"), failed(Failure::Unexpected));
    assert_eq!(
        events_after(
            &Message::Welcome {
                tag: [0; 32],
                sealed: vec![]
            }
            .encode()
        ),
        failed(Failure::Unexpected)
    );
    assert_eq!(
        events_after(&Message::Refused(Failure::Busy).encode()),
        failed(Failure::Busy)
    );
    let bad_point = Message::Reply {
        invite_id: INVITE_ID,
        spake: [b'B'; 33],
    };
    assert_eq!(
        events_after(&bad_point.encode()),
        failed(Failure::Unexpected)
    );
}

#[test]
fn messages_round_trip_and_bad_ones_are_typed_errors() {
    let all = [
        Message::Start {
            rendezvous: *b"AB2Z",
            spake: [3; 33],
        },
        Message::Reply {
            invite_id: [4; 16],
            spake: [5; 33],
        },
        Message::Confirm { tag: [6; 32] },
        Message::Welcome {
            tag: [7; 32],
            sealed: vec![8; 40],
        },
        Message::Welcome {
            tag: [7; 32],
            sealed: vec![],
        },
        Message::Refused(Failure::WrongCode),
        Message::Refused(Failure::Burned),
        Message::Refused(Failure::UnknownCode),
        Message::Refused(Failure::Busy),
        Message::Refused(Failure::Unexpected),
        Message::Refused(Failure::Timeout),
    ];
    for m in &all {
        assert_eq!(Message::decode(&m.encode()).as_ref(), Ok(m));
    }
    assert_eq!(Message::decode(&[]), Err(FormatError::Truncated));
    assert_eq!(Message::decode(&[2, 1]), Err(FormatError::Version(2)));
    assert_eq!(Message::decode(&[1, 9]), Err(FormatError::MessageType(9)));
    assert_eq!(Message::decode(&[1, 5, 0]), Err(FormatError::Reason(0)));
    assert_eq!(Message::decode(&[1, 5, 7]), Err(FormatError::Reason(7)));
    assert_eq!(
        Message::decode(&[1, 5, 1, 0]),
        Err(FormatError::TrailingBytes(1))
    );
    assert_eq!(Message::decode(&[1, 3, 0]), Err(FormatError::Truncated));
    let mut start = all[0].encode();
    start[2] = b'0';
    assert_eq!(Message::decode(&start), Err(FormatError::Rendezvous));
    start[2] = b'a';
    assert_eq!(Message::decode(&start), Err(FormatError::Rendezvous));
    let long = vec![1; MAX_MESSAGE_LEN + 1];
    assert!(matches!(
        Message::decode(&long),
        Err(FormatError::TooLarge { .. })
    ));
}

/// Deterministic mutation of real messages, fed to the decoder and to both cores: never a
/// panic, every accepted message encodes back to itself, and no mutated exchange succeeds.
#[test]
fn mutated_messages_never_panic() {
    let now = Instant::now();
    let good = run(&mut new_inviter(1), &mut new_joiner(5, CODE, 2), 5, now).wire;
    let mut rng = crate::mutation::Mutator::new();
    let mut inv = new_inviter(1);
    let mut decoded = 0;
    for i in 0..100_000 {
        let seed = &good[i % good.len()];
        let mut m = rng.overwrite(seed);
        if rng.next().is_multiple_of(4) {
            rng.truncate_below(&mut m, seed.len() + 1);
        }
        if let Ok(msg) = Message::decode(&m) {
            assert_eq!(msg.encode(), m);
            decoded += 1;
        }
        if i % 10 == 0 {
            inv.handle_input(
                now,
                inviter::Input::Message {
                    from: id(5),
                    bytes: &m,
                },
            );
            while let inviter::Output::Transmit(_) | inviter::Output::Event(_) = inv.poll_output() {
            }
            let mut j = new_joiner(5, CODE, 2);
            j.handle_input(now, joiner::Input::Start);
            drain_joiner(&mut j);
            j.handle_input(now, joiner::Input::Message(&m));
            assert!(!matches!(
                drain_joiner(&mut j).1[..],
                [joiner::Event::Joined { .. }]
            ));
        }
    }
    assert!(decoded > 10_000, "{decoded}");
}
