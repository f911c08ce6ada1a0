use super::auth::{client_auth, verify, AuthError};
use super::*;
use crate::identity::{NodeId, SecretKey};

fn node(n: u8) -> NodeId {
    SecretKey::from_bytes([n; 32]).node_id()
}

#[test]
fn every_frame_round_trips() {
    let payload = vec![7u8; MAX_PAYLOAD];
    let frames = [
        Frame::ServerHello {
            version: PROTOCOL_VERSION,
            challenge: [3; 32],
        },
        client_auth(
            &SecretKey::from_bytes([1; 32]),
            &[3; 32],
            "http://127.0.0.1:3340",
        ),
        Frame::AuthOk {
            idle_timeout_ms: 60_000,
        },
        Frame::Send {
            dst: node(2),
            payload: &payload,
        },
        Frame::Recv {
            src: node(2),
            payload: b"",
        },
        Frame::Ping { data: [1; 8] },
        Frame::Pong { data: [2; 8] },
        Frame::PeerGone {
            node: node(4),
            reason: PeerGoneReason::Disconnected,
        },
        Frame::Restarting {
            reconnect_in_ms: 500,
            try_for_ms: 10_000,
        },
    ];
    for f in frames {
        assert_eq!(Frame::decode(&f.to_vec()), Ok(f));
    }
}

#[test]
fn bad_frames_are_clear_errors() {
    assert_eq!(Frame::decode(b""), Err(FrameError::Empty));
    assert_eq!(Frame::decode(&[0x7f]), Err(FrameError::UnknownType(0x7f)));
    assert!(matches!(
        Frame::decode(&[0x01, 1, 2]),
        Err(FrameError::BadLength {
            frame_type: 1,
            len: 3,
            ..
        })
    ));
    assert!(matches!(
        Frame::decode(&[0x10; 20]),
        Err(FrameError::BadLength {
            frame_type: 0x10,
            ..
        })
    ));
    let mut big = vec![0x10; 33 + MAX_PAYLOAD + 1];
    big[0] = 0x10;
    assert_eq!(
        Frame::decode(&big),
        Err(FrameError::PayloadTooLarge(MAX_PAYLOAD + 1))
    );
    let mut gone = Frame::PeerGone {
        node: node(1),
        reason: PeerGoneReason::NotConnected,
    }
    .to_vec();
    gone[33] = 9;
    assert_eq!(Frame::decode(&gone), Err(FrameError::BadReason(9)));
    assert_eq!(
        send_to_recv_in_place(&mut Frame::Ping { data: [0; 8] }.to_vec(), &node(1)),
        Err(FrameError::Unexpected(0x20))
    );
}

#[test]
fn send_becomes_recv_in_place() {
    let mut msg = Frame::Send {
        dst: node(2),
        payload: b"hello",
    }
    .to_vec();
    let dst = send_to_recv_in_place(&mut msg, &node(1)).unwrap();
    assert_eq!(dst, node(2));
    assert_eq!(
        Frame::decode(&msg),
        Ok(Frame::Recv {
            src: node(1),
            payload: b"hello"
        })
    );
}

#[test]
fn client_auth_lengths_are_checked() {
    // 98 bytes without a URL (version 1's form), up to 255 bytes of URL after them.
    let base = client_auth(&SecretKey::from_bytes([1; 32]), &[3; 32], "").to_vec();
    assert_eq!(base.len(), 98);
    assert!(Frame::decode(&base).is_ok());
    let mut long = base.clone();
    long.extend_from_slice(&[b'a'; 255]);
    assert!(Frame::decode(&long).is_ok());
    long.push(b'a');
    assert!(matches!(
        Frame::decode(&long),
        Err(FrameError::BadLength { frame_type: 2, .. })
    ));
    assert!(matches!(
        Frame::decode(&base[..97]),
        Err(FrameError::BadLength { frame_type: 2, .. })
    ));
    let mut not_text = base;
    not_text.push(0xff);
    assert_eq!(Frame::decode(&not_text), Err(FrameError::NotUtf8(2)));
}

#[test]
fn auth_verifies_only_the_right_key_challenge_relay_and_version() {
    let key = SecretKey::from_bytes([1; 32]);
    let challenge = [9; 32];
    let text = "http://127.0.0.1:3340";
    let relay: RelayUrl = text.parse().unwrap();
    let Frame::ClientAuth {
        version,
        node_id,
        signature,
        relay_url,
    } = client_auth(&key, &challenge, text)
    else {
        unreachable!()
    };
    let check = |challenge: &[u8; 32], version, node_id: &NodeId, signature: &[u8; 64]| {
        verify(challenge, version, node_id, signature, relay_url, &relay)
    };
    assert_eq!(check(&challenge, version, &node_id, &signature), Ok(()));
    // Another challenge (a replay on a new connection).
    assert_eq!(
        check(&[8; 32], version, &node_id, &signature),
        Err(AuthError::BadSignature)
    );
    // Another key claimed with this signature.
    assert_eq!(
        check(&challenge, version, &node(2), &signature),
        Err(AuthError::BadSignature)
    );
    // A corrupted signature.
    let mut bad = signature;
    bad[0] ^= 1;
    assert_eq!(
        check(&challenge, version, &node_id, &bad),
        Err(AuthError::BadSignature)
    );
    assert_eq!(
        check(&challenge, 1, &node_id, &signature),
        Err(AuthError::Version(1))
    );
    // Another relay: a genuine signature, refused there.
    let elsewhere: RelayUrl = "http://127.0.0.1:3341".parse().unwrap();
    assert_eq!(
        verify(&challenge, version, &node_id, &signature, relay_url, &elsewhere),
        Err(AuthError::WrongRelay {
            signed_for: relay.clone(),
            own: elsewhere.to_string(),
        })
    );
    // Bytes that are not a curve point.
    let Frame::ClientAuth { node_id: junk, .. } =
        Frame::decode(&[&[0x02, 2][..], &[0xff; 32], &[0; 64]].concat()).unwrap()
    else {
        unreachable!()
    };
    assert!(matches!(
        check(&challenge, 2, &junk, &signature),
        Err(AuthError::BadKey | AuthError::BadSignature)
    ));
}
