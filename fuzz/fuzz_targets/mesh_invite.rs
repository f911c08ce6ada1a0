//! Invite decoding, binary and text, must never panic. Every invite accepted is exactly its
//! bytes, signs again to the same bytes, and prints as a token that parses back to it; every
//! token accepted prints back as itself (trimmed, lowercased).
#![no_main]

#[path = "common/reseal.rs"]
mod reseal;

use burrow_proto::mesh::invite::{SignedInvite, INVITE_DOMAIN, PREFIX};
use burrow_proto::mesh::signer::Signer;
use data_encoding::BASE32_NOPAD;
use libfuzzer_sys::fuzz_target;

fn check_text(token: &str) {
    if let Ok(invite) = token.parse::<SignedInvite>() {
        assert_eq!(invite.to_string(), token.trim().to_ascii_lowercase());
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check_text(text);
    }
    if let Ok(invite) = SignedInvite::decode(data) {
        assert_eq!(invite.as_bytes(), data);
    }
    let sealed = reseal::reseal(INVITE_DOMAIN, data);
    if let Ok(invite) = SignedInvite::decode(&sealed) {
        let again = invite.invite().sign(&Signer::Mesh(&reseal::mesh_key()));
        assert_eq!(again.expect("a decoded invite signs").as_bytes(), sealed);
        assert_eq!(
            invite.to_string().parse::<SignedInvite>().as_ref(),
            Ok(&invite)
        );
    }
    // The resealed bytes as a token (checksummed), so the text path reaches the decoder.
    let mut armored = sealed.clone();
    armored.extend_from_slice(&crc32fast::hash(&sealed).to_be_bytes());
    check_text(&format!("{PREFIX}{}", BASE32_NOPAD.encode(&armored)));
});
