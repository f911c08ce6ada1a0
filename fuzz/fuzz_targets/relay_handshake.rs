//! The relay server's per-connection core fed arbitrary sequences of messages, time steps and
//! limits must never panic, and must keep its invariants: nothing is forwarded before a key is
//! proven, a forwarded message is a Recv from the proven key, and nothing happens after a close.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use burrow_proto::identity::SecretKey;
use burrow_proto::relay::auth::client_auth;
use burrow_proto::relay::server_conn::{Action, ConnLimits, Input, ServerConnection};
use burrow_proto::relay::{Frame, RelayUrl};
use libfuzzer_sys::fuzz_target;

const CHALLENGE: [u8; 32] = [7; 32];
const URL: &str = "http://127.0.0.1:3340";

fn auth() -> &'static [u8] {
    static AUTH: OnceLock<Vec<u8>> = OnceLock::new();
    AUTH.get_or_init(|| client_auth(&SecretKey::from_bytes([1; 32]), &CHALLENGE, URL).to_vec())
}

struct Input_<'a>(&'a [u8]);

impl Input_<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.byte()?, self.byte()?]))
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input_(data);
    let (Some(a), Some(b), Some(c)) = (input.u16(), input.u16(), input.u16()) else {
        return;
    };
    let limits = ConnLimits {
        handshake_timeout: Duration::from_millis(u64::from(a % 20_000) + 1),
        idle_timeout: Duration::from_millis(u64::from(b % 60_000) + 1),
        rate_bytes_per_sec: u64::from(c) * 16,
        burst_bytes: u64::from(c),
        max_message_bytes: usize::from(c) * 2,
    };
    let mut now = Instant::now();
    let own = Arc::new(URL.parse::<RelayUrl>().unwrap());
    let mut conn = ServerConnection::new(now, CHALLENGE, own, limits);
    let me = SecretKey::from_bytes([1; 32]).node_id();
    let mut closed = false;
    while let Some(op) = input.byte() {
        let action = match op % 6 {
            0 => {
                now += Duration::from_millis(u64::from(input.u16().unwrap_or(0)));
                let _ = conn.read_resume_at(now);
                if conn.handle_timeout(now).is_some() {
                    assert!(!closed);
                    closed = true;
                }
                continue;
            }
            1 => conn.handle_input(now, Input::Text(usize::from(op))),
            2 => conn.handle_input(now, Input::Control),
            3 => conn.handle_input(now, Input::Binary(&mut auth().to_vec())),
            4 => {
                let _ = conn.not_connected_notice(now, me);
                continue;
            }
            _ => {
                let len = usize::from(input.u16().unwrap_or(0));
                let mut msg = input.take(len).to_vec();
                let action = conn.handle_input(now, Input::Binary(&mut msg));
                if let Action::Forward { .. } = action {
                    assert!(
                        matches!(Frame::decode(&msg), Ok(Frame::Recv { src, .. }) if src == me),
                        "forwarded something that is not a Recv from the proven key"
                    );
                }
                action
            }
        };
        if closed {
            assert_eq!(action, Action::None, "acted after a close");
        }
        match action {
            Action::Forward { .. } | Action::Reply(_) => assert_eq!(conn.node_id(), Some(me)),
            Action::Authenticated { node_id, .. } => assert_eq!(node_id, me),
            Action::Close(reason) => {
                closed = true;
                assert!(reason.to_string().len() <= 123);
            }
            Action::None => {}
        }
        assert_eq!(conn.is_closed(), closed);
    }
});
