//! Certificate decoding must never panic, and every certificate it accepts is exactly its
//! bytes and, signed again by the same key, gives the same bytes.
#![no_main]

#[path = "common/reseal.rs"]
mod reseal;

use burrow_proto::mesh::cert::{SignedCert, CERT_DOMAIN};
use burrow_proto::mesh::signer::{Issuer, Signer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cert) = SignedCert::decode(data) {
        assert_eq!(cert.as_bytes(), data);
    }
    let sealed = reseal::reseal(CERT_DOMAIN, data);
    if let Ok(cert) = SignedCert::decode(&sealed) {
        assert_eq!(cert.issuer(), &Issuer::Mesh);
        let again = cert.cert().sign(&Signer::Mesh(&reseal::mesh_key()));
        assert_eq!(
            again.expect("a decoded certificate signs").as_bytes(),
            sealed
        );
    }
});
