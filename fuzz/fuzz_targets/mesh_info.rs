//! Info decoding must never panic, accepts exactly the bodies of 1 to MAX_INFO_LEN bytes, and
//! what it reads encodes to a body that reads back the same.
#![no_main]

use burrow_proto::mesh::info::{NodeInfo, MAX_INFO_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match NodeInfo::decode(data) {
        Ok(info) => {
            assert!((1..=MAX_INFO_LEN).contains(&data.len()));
            assert_eq!(NodeInfo::decode(&info.encode()), Ok(info));
        }
        Err(_) => assert!(data.is_empty() || data.len() > MAX_INFO_LEN),
    }
});
