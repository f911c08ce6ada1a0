//! Stream headers and answers: decoding never panics, never claims more bytes than it was
//! given, and what it reads encodes back to exactly the bytes it took.
#![no_main]

use burrow_proto::mesh::stream::{StreamAnswer, StreamOpen, MAX_ANSWER_LEN, MAX_OPEN_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((open, len))) = StreamOpen::decode(data) {
        assert!(len <= data.len().min(MAX_OPEN_LEN));
        assert_eq!(open.encode(), &data[..len]);
    }
    if let Ok(Some((answer, len))) = StreamAnswer::decode(data) {
        assert!(len <= data.len().min(MAX_ANSWER_LEN));
        assert_eq!(answer.encode(), &data[..len]);
    }
});
