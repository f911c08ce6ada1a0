//! Signals: decoding any bytes never panics; a signal built from the input and signed decodes
//! back to itself, and fails once any byte is cut; the core fed both lets a signal through at
//! most once and counts every datagram it was given.
#![no_main]

use std::time::Instant;

use burrow_proto::identity::SecretKey;
use burrow_proto::signal::{Input, Kind, Output, Signal, Signaling};
use libfuzzer_sys::fuzz_target;

fn drain(core: &mut Signaling) -> (u64, u64) {
    let (mut accepted, mut rejected) = (0, 0);
    loop {
        match core.poll_output() {
            Output::Timeout(_) => return (accepted, rejected),
            Output::Received(_) => accepted += 1,
            Output::Rejected(_) => rejected += 1,
            Output::Transmit { .. } => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = Signal::decode(data);
    let (a, b) = (
        SecretKey::from_bytes([1; 32]),
        SecretKey::from_bytes([2; 32]),
    );
    let word = |at: usize| {
        let mut w = [0u8; 8];
        for (i, byte) in data.iter().skip(at).take(8).enumerate() {
            w[i] = *byte;
        }
        u64::from_be_bytes(w)
    };
    let kind = [Kind::Offer, Kind::Answer, Kind::Candidate, Kind::Bye]
        [data.first().map_or(0, |k| usize::from(*k % 4))];
    let signal = Signal {
        kind,
        from: a.node_id(),
        to: b.node_id(),
        session: word(1),
        seq: word(9),
        unix_ms: word(17) >> 1,
        body: String::from_utf8_lossy(data.get(25..).unwrap_or_default()).into_owned(),
    };
    let Ok(bytes) = signal.encode(&a) else {
        return;
    };
    assert_eq!(Signal::decode(&bytes).as_ref(), Ok(&signal));
    assert!(Signal::decode(&bytes[..bytes.len() - 1]).is_err());

    let now = Instant::now();
    let mut core = Signaling::new(b, 0);
    let mut given = 0;
    for d in [data, &bytes[..], &bytes[..], data] {
        core.handle_input(
            now,
            Input::Received {
                data: d,
                unix_ms: signal.unix_ms,
            },
        );
        given += 1;
    }
    let (accepted, rejected) = drain(&mut core);
    assert!(accepted <= 1, "a signal let through twice");
    assert_eq!(accepted + rejected, given);
    let s = core.stats();
    assert_eq!(s.accepted, accepted);
    assert_eq!(
        s.malformed + s.forged + s.misaddressed + s.stale + s.replayed,
        rejected
    );
});
