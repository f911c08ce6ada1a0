//! Node record decoding must never panic; every payload it accepts must encode back to exactly
//! the same bytes; the signed decoder must agree with the payload decoder. Random bytes almost
//! never carry a valid signature, so an accepted payload is also signed with a fixed key (its
//! node id replaced by that key's) and run through the signed decoder, whole and cut short.
#![no_main]

use burrow_proto::identity::SecretKey;
use burrow_proto::record::{NodeRecord, SignedRecord, SIGNATURE_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let payload = NodeRecord::decode_payload(data);
    if let Ok(record) = &payload {
        assert_eq!(record.encode_payload().as_deref(), Ok(data));
    }
    if let Ok(signed) = SignedRecord::decode(data) {
        assert_eq!(signed.as_bytes(), data);
        let inner = NodeRecord::decode_payload(&data[..data.len() - SIGNATURE_LEN]);
        assert_eq!(inner.as_ref(), Ok(signed.record()));
    }
    let key = SecretKey::from_bytes([7; 32]);
    if let Ok(mut record) = payload {
        record.node_id = key.node_id();
        let signed = record.sign(&key).expect("a decoded record re-encodes");
        let bytes = signed.as_bytes();
        let back = SignedRecord::decode(bytes).expect("a fresh signature verifies");
        assert_eq!(back.record(), &record);
        assert!(SignedRecord::decode(&bytes[..bytes.len() - 1]).is_err());
    }
});
