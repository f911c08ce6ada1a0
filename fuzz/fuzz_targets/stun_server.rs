//! The STUN server must never panic on any datagram, and never answer with more than it got
//! plus a bounded overhead (no amplification).
#![no_main]

use burrow_proto::stun::server::{Alternate, Outcome, Role, ServerConfig, StunServer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let server = StunServer::new(ServerConfig {
        primary: "203.0.113.10:3478".parse().unwrap(),
        alternate: Alternate::Address("203.0.113.11:3479".parse().unwrap()),
        software: Some("burrow-fuzz".into()),
    });
    let mut out = Vec::new();
    let from = "198.51.100.1:5000".parse().unwrap();
    match server.handle(Role::PRIMARY, from, data, &mut out) {
        Outcome::Success(_) | Outcome::Error(..) => {
            assert!(out.len() <= data.len() + 200, "{} -> {}", data.len(), out.len())
        }
        Outcome::Ignored(_) => {}
    }
});
