//! burrow.js connections: any bytes, fed as relayed datagrams, direct messages and sends to
//! one side, never panic it; a message the other side sends is delivered once, intact, however
//! the input interleaves its copies and relayed garbage (direct messages come from the peer
//! itself, over DTLS, so garbage there may be delivered: it is the peer's).
#![no_main]

use std::time::{Duration, Instant};

use burrow_proto::identity::SecretKey;
use burrow_proto::page_conn::{Ephemeral, Input, Output, PageConn, Role};
use libfuzzer_sys::fuzz_target;

fn outputs(core: &mut PageConn) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (mut relayed, mut messages) = (Vec::new(), Vec::new());
    loop {
        match core.poll_output() {
            Output::Timeout(_) => return (relayed, messages),
            Output::Relay(d) => relayed.push(d),
            Output::Message { data, .. } => messages.push(data),
            Output::Direct { .. } | Output::PathChanged(_) | Output::TimedOut => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (a, b) = (Ephemeral::new([1; 32]), Ephemeral::new([2; 32]));
    let (d, l) = (
        SecretKey::from_bytes([1; 32]).node_id(),
        SecretKey::from_bytes([2; 32]).node_id(),
    );
    let mut dialler = PageConn::new(&a, b.public(), 9, Role::Dialler, &d, &l).unwrap();
    let mut listener = PageConn::new(&b, a.public(), 9, Role::Listener, &d, &l).unwrap();
    let mut now = Instant::now();
    dialler.handle_input(now, Input::Send { data: b"the message", reliable: true });
    let (sent, _) = outputs(&mut dialler);
    let mut delivered = Vec::new();
    let mut direct_fed = false;
    // Each input byte picks what the listener gets next: the real datagram, junk, or time.
    for (i, op) in data.iter().enumerate() {
        let rest = &data[i..];
        match op % 6 {
            0 => listener.handle_input(now, Input::Relayed(&sent[0])),
            1 => listener.handle_input(now, Input::Relayed(rest)),
            2 => {
                direct_fed = true;
                listener.handle_input(now, Input::Direct(rest));
            }
            3 => listener.handle_input(now, Input::Send { data: rest, reliable: op & 8 != 0 }),
            4 => listener.handle_input(now, Input::DirectUp(op & 8 != 0)),
            _ => {
                now += Duration::from_millis(u64::from(*op) * 10);
                listener.handle_input(now, Input::Timeout);
            }
        }
        delivered.extend(outputs(&mut listener).1);
    }
    if direct_fed {
        return;
    }
    // Relayed junk cannot decrypt, so only the real message can come out, once.
    assert!(delivered.len() <= 1, "{delivered:?}");
    if let Some(m) = delivered.first() {
        assert_eq!(m, b"the message");
    }
});
