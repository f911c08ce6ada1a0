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
        client_auth(&SecretKey::from_bytes([1; 32]), &[3; 32]),
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
fn auth_verifies_only_the_right_key_challenge_and_version() {
    let key = SecretKey::from_bytes([1; 32]);
    let challenge = [9; 32];
    let Frame::ClientAuth {
        version,
        node_id,
        signature,
    } = client_auth(&key, &challenge)
    else {
        unreachable!()
    };
    assert_eq!(verify(&challenge, version, &node_id, &signature), Ok(()));
    // Another challenge (a replay on a new connection).
    assert_eq!(
        verify(&[8; 32], version, &node_id, &signature),
        Err(AuthError::BadSignature)
    );
    // Another key claimed with this signature.
    assert_eq!(
        verify(&challenge, version, &node(2), &signature),
        Err(AuthError::BadSignature)
    );
    // A corrupted signature.
    let mut bad = signature;
    bad[0] ^= 1;
    assert_eq!(
        verify(&challenge, version, &node_id, &bad),
        Err(AuthError::BadSignature)
    );
    assert_eq!(
        verify(&challenge, 2, &node_id, &signature),
        Err(AuthError::Version(2))
    );
    // Bytes that are not a curve point.
    let Frame::ClientAuth { node_id: junk, .. } =
        Frame::decode(&[&[0x02, 1][..], &[0xff; 32], &[0; 64]].concat()).unwrap()
    else {
        unreachable!()
    };
    assert!(matches!(
        verify(&challenge, 1, &junk, &signature),
        Err(AuthError::BadKey | AuthError::BadSignature)
    ));
}
