//! PAKE message decoding must never panic and every message it accepts encodes back to the
//! same bytes. The input, cut into messages (a length byte each), is also fed to an inviter
//! (as from one joiner) and to a joiner that has sent its Start: neither panics, and no input
//! makes the joiner accept, since it cannot know the keys.
#![no_main]

use std::time::{Duration, Instant};

use burrow_proto::identity::SecretKey;
use burrow_proto::mesh::pake::{inviter, joiner, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::decode(data) {
        assert_eq!(message.encode(), data);
    }
    let (us, them) = (
        SecretKey::from_bytes([1; 32]).node_id(),
        SecretKey::from_bytes([2; 32]).node_id(),
    );
    let code = "MESH-ABCD-2345-WXYZ".parse().unwrap();
    let config = inviter::Config::new(us, [9; 16], code, b"token".to_vec());
    let mut inv = inviter::Inviter::new(config.clone(), 1).unwrap();
    let mut join = joiner::Joiner::new(joiner::Config::new(them, us, config.code), 2);
    let mut now = Instant::now();
    join.handle_input(now, joiner::Input::Start);
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let (message, tail) = tail.split_at(usize::from(len).min(tail.len()));
        rest = tail;
        now += Duration::from_secs(u64::from(len % 4));
        inv.handle_input(
            now,
            inviter::Input::Message {
                from: them,
                bytes: message,
            },
        );
        while !matches!(inv.poll_output(), inviter::Output::Timeout(_)) {}
        join.handle_input(now, joiner::Input::Message(message));
        loop {
            match join.poll_output() {
                joiner::Output::Event(joiner::Event::Joined { .. }) => {
                    panic!("joined on forged messages")
                }
                joiner::Output::Timeout(_) => break,
                _ => {}
            }
        }
    }
});
