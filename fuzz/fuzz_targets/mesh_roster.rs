//! Roster decoding must never panic, and every roster it accepts is exactly its bytes and,
//! signed again by the same key, gives the same bytes (one roster, one encoding).
#![no_main]

#[path = "common/reseal.rs"]
mod reseal;

use burrow_proto::mesh::roster::{SignedRoster, ROSTER_DOMAIN};
use burrow_proto::mesh::signer::Signer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(roster) = SignedRoster::decode(data) {
        assert_eq!(roster.as_bytes(), data);
    }
    let sealed = reseal::reseal(ROSTER_DOMAIN, data);
    if let Ok(roster) = SignedRoster::decode(&sealed) {
        let again = roster.roster().sign(&Signer::Mesh(&reseal::mesh_key()));
        assert_eq!(again.expect("a decoded roster signs").as_bytes(), sealed);
        assert!(!roster.newer_than(&roster));
    }
});
