//! Short code parsing must never panic, and every code it accepts prints back as itself
//! (trimmed, uppercased), with a registry namespace that is valid.
#![no_main]

use burrow_proto::mesh::code::ShortCode;
use burrow_proto::record::is_valid_namespace;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(code) = text.parse::<ShortCode>() {
        assert_eq!(code.to_string(), text.trim().to_ascii_uppercase());
        assert!(is_valid_namespace(&code.namespace()));
    }
});
