//! The STUN parser must never panic, and whatever it accepts must survive a re-encode; the
//! same bytes as ChannelData must parse within bounds or fail, in both framings.
#![no_main]

use burrow_proto::stun::{Message, MessageWriter};
use burrow_proto::turn::{ChannelData, Framing};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for framing in [Framing::Datagram, Framing::Stream] {
        if let Ok(cd) = ChannelData::parse(data, framing) {
            let mut again = Vec::new();
            ChannelData::encode(cd.channel, cd.data, framing, &mut again);
            assert_eq!(ChannelData::parse(&again, framing), Ok(cd));
        }
    }
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
        for peer in msg.peer_addresses() {
            w.xor_peer_address(peer);
        }
        if let Some(l) = msg.lifetime {
            w.lifetime(l);
        }
        if let Some(c) = msg.channel_number {
            w.channel_number(c);
        }
        if let Some(d) = msg.data {
            w.data(d);
        }
        if let Some(t) = msg.reservation_token {
            w.reservation_token(t);
        }
        if let Some(u) = msg.username {
            w.username(u);
        }
        w.finish_with_fingerprint();
        let again = Message::parse(&buf).expect("re-encoded message parses");
        assert_eq!(again.xor_mapped_address, msg.xor_mapped_address);
        assert_eq!(again.other_address, msg.other_address);
        assert_eq!(again.software, msg.software);
        assert!(again.peer_addresses().eq(msg.peer_addresses()));
        assert_eq!(again.lifetime, msg.lifetime);
        assert_eq!(again.channel_number, msg.channel_number);
        assert_eq!(again.data, msg.data);
        assert_eq!(again.reservation_token, msg.reservation_token);
        assert_eq!(again.username, msg.username);
    }
});
