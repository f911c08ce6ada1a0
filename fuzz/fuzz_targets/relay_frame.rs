//! Relay frame decoding must never panic, and every frame it accepts must re-encode to exactly
//! the same bytes; the in-place Send -> Recv rewrite must keep the payload.
#![no_main]

use burrow_proto::identity::SecretKey;
use burrow_proto::relay::{send_to_recv_in_place, Frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::decode(data) {
        assert_eq!(frame.to_vec(), data, "{frame:?}");
    }
    let src = SecretKey::from_bytes([1; 32]).node_id();
    let mut msg = data.to_vec();
    if let Ok(dst) = send_to_recv_in_place(&mut msg, &src) {
        let Ok(Frame::Send { dst: d, payload }) = Frame::decode(data) else {
            panic!("rewrote a non-Send frame")
        };
        assert_eq!(d, dst);
        assert_eq!(
            Frame::decode(&msg),
            Ok(Frame::Recv { src, payload }),
            "payload changed"
        );
    }
});
