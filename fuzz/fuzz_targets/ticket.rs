//! Ticket parsing must never panic, and every token it accepts must print back as exactly the
//! same token (trimmed, lowercased). The input is tried both as text and as a ticket body sealed
//! with a valid checksum, since random text almost never gets past the CRC to the body decoder.
#![no_main]

use burrow_proto::ticket::Ticket;
use data_encoding::BASE32_NOPAD;
use libfuzzer_sys::fuzz_target;

fn check(token: &str) {
    if let Ok(ticket) = token.parse::<Ticket>() {
        assert_eq!(ticket.to_string(), token.trim().to_ascii_lowercase());
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check(text);
    }
    let mut body = data.to_vec();
    body.extend_from_slice(&crc32fast::hash(data).to_be_bytes());
    check(&format!("burrow{}", BASE32_NOPAD.encode(&body)));
});
