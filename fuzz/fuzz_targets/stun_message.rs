//! The STUN parser must never panic, and whatever it accepts must survive a re-encode.
#![no_main]

use burrow_proto::stun::{Message, MessageWriter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = Message::parse(data) {
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, msg.class, msg.method, msg.transaction_id);
        if let Some(a) = msg.xor_mapped_address {
            w.xor_mapped_address(a);
        }
        if let Some(a) = msg.other_address {
            w.other_address(a);
        }
        if let Some(s) = msg.software {
            w.software(s);
        }
        w.finish_with_fingerprint();
        let again = Message::parse(&buf).expect("re-encoded message parses");
        assert_eq!(again.xor_mapped_address, msg.xor_mapped_address);
        assert_eq!(again.other_address, msg.other_address);
        assert_eq!(again.software, msg.software);
    }
});
