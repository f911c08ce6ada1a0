use super::*;
use crate::identity::SecretKey;
use crate::relay::auth::client_auth;

const CHALLENGE: [u8; 32] = [9; 32];
/// The relay's URL, as its clients dial it.
const URL: &str = "https://relay.example.org:443";

/// A relay with the one URL [`URL`].
fn own() -> Arc<dyn OwnUrls> {
    Arc::new(URL.parse::<crate::relay::RelayUrl>().unwrap())
}

fn key(n: u8) -> SecretKey {
    SecretKey::from_bytes([n; 32])
}

fn limits() -> ConnLimits {
    ConnLimits {
        handshake_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        rate_bytes_per_sec: 0,
        burst_bytes: 0,
        max_message_bytes: MAX_MESSAGE,
    }
}

fn bin(conn: &mut ServerConnection, now: Instant, frame: &Frame<'_>) -> Action {
    let mut msg = frame.to_vec();
    conn.handle_input(now, Input::Binary(&mut msg))
}

fn raw(conn: &mut ServerConnection, now: Instant, mut msg: Vec<u8>) -> Action {
    conn.handle_input(now, Input::Binary(&mut msg))
}

/// A connection that has authenticated key 1 at `t0`.
fn authed(limits: ConnLimits) -> (ServerConnection, Instant) {
    let t0 = Instant::now();
    let mut c = ServerConnection::new(t0, CHALLENGE, own(), limits);
    let a = bin(&mut c, t0, &client_auth(&key(1), &CHALLENGE, URL));
    assert!(matches!(a, Action::Authenticated { .. }), "{a:?}");
    (c, t0)
}

fn close_reason(a: Action) -> CloseReason {
    match a {
        Action::Close(r) => r,
        other => panic!("expected a close, got {other:?}"),
    }
}

#[test]
fn hello_carries_the_challenge_and_auth_succeeds() {
    let t0 = Instant::now();
    let mut c = ServerConnection::new(t0, CHALLENGE, own(), limits());
    assert_eq!(
        c.hello(),
        Frame::ServerHello {
            version: PROTOCOL_VERSION,
            challenge: CHALLENGE
        }
    );
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    let a = bin(&mut c, t0, &client_auth(&key(1), &CHALLENGE, URL));
    assert_eq!(
        a,
        Action::Authenticated {
            node_id: key(1).node_id(),
            reply: Frame::AuthOk {
                idle_timeout_ms: 60_000
            }
        }
    );
    assert_eq!(c.node_id(), Some(key(1).node_id()));
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(60)));
}

#[test]
fn wrong_signature_is_refused() {
    let t0 = Instant::now();
    let mut c = ServerConnection::new(t0, CHALLENGE, own(), limits());
    // Signed over another challenge.
    let r = close_reason(bin(&mut c, t0, &client_auth(&key(1), &[8; 32], URL)));
    assert_eq!(r, CloseReason::AuthFailed(AuthError::BadSignature));
    assert_eq!(r.code(), CLOSE_POLICY_VIOLATION);
    assert!(c.is_closed());
    assert_eq!(c.node_id(), None);
    // Nothing after a close does anything.
    assert_eq!(
        bin(&mut c, t0, &client_auth(&key(1), &CHALLENGE, URL)),
        Action::None
    );
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn claiming_another_key_is_refused() {
    let t0 = Instant::now();
    let mut c = ServerConnection::new(t0, CHALLENGE, own(), limits());
    let Frame::ClientAuth { signature, .. } = client_auth(&key(1), &CHALLENGE, URL) else {
        unreachable!()
    };
    let forged = Frame::ClientAuth {
        version: PROTOCOL_VERSION,
        node_id: key(2).node_id(),
        signature,
        relay_url: URL,
    };
    let r = close_reason(bin(&mut c, t0, &forged));
    assert_eq!(r, CloseReason::AuthFailed(AuthError::BadSignature));
}

#[test]
fn an_auth_for_another_relay_is_refused_and_names_it() {
    let t0 = Instant::now();
    // Genuinely signed by key 1, for the relay it dialled: a hostile one that passed this
    // relay's challenge on.
    let mut c = ServerConnection::new(t0, CHALLENGE, own(), limits());
    let hostile = "http://203.0.113.9:8080";
    let r = close_reason(bin(&mut c, t0, &client_auth(&key(1), &CHALLENGE, hostile)));
    assert_eq!(
        r,
        CloseReason::AuthFailed(AuthError::WrongRelay {
            signed_for: hostile.parse().unwrap(),
            own: URL.into(),
        })
    );
    assert_eq!(r.code(), CLOSE_POLICY_VIOLATION);
    assert_eq!(
        r.to_string(),
        "auth failed: signed for http://203.0.113.9:8080, which is not this relay \
         (https://relay.example.org:443)"
    );
    assert_eq!(c.node_id(), None);

    // The same URL written another way is the same relay.
    let mut c = ServerConnection::new(t0, CHALLENGE, own(), limits());
    let a = bin(
        &mut c,
        t0,
        &client_auth(&key(1), &CHALLENGE, "HTTPS://Relay.Example.org/"),
    );
    assert!(matches!(a, Action::Authenticated { .. }), "{a:?}");

    // A URL swapped in after signing breaks the signature; one that is no URL is refused.
    let Frame::ClientAuth { signature, .. } = client_auth(&key(1), &CHALLENGE, hostile) else {
        unreachable!()
    };
    let swapped = Frame::ClientAuth {
        version: PROTOCOL_VERSION,
        node_id: key(1).node_id(),
        signature,
        relay_url: URL,
    };
    let mut c = ServerConnection::new(t0, CHALLENGE, own(), limits());
    let r = close_reason(bin(&mut c, t0, &swapped));
    assert_eq!(r, CloseReason::AuthFailed(AuthError::BadSignature));
    let mut c = ServerConnection::new(t0, CHALLENGE, own(), limits());
    let r = close_reason(bin(
        &mut c,
        t0,
        &client_auth(&key(1), &CHALLENGE, "relay:1"),
    ));
    assert!(
        matches!(r, CloseReason::AuthFailed(AuthError::BadUrl(_))),
        "{r:?}"
    );
}

#[test]
fn a_version_1_client_is_refused_with_a_clear_reason() {
    // Version 1's ClientAuth: type, version, key, and a signature over domain "burrow relay
    // auth v1", the challenge and the key; no URL.
    let t0 = Instant::now();
    let k = key(1);
    let v1_message = [
        &b"burrow relay auth v1\0"[..],
        &CHALLENGE,
        k.node_id().as_bytes(),
    ]
    .concat();
    let signature = ed25519_dalek::Signer::sign(k.signing_key(), &v1_message).to_bytes();
    let msg = [&[0x02, 1][..], k.node_id().as_bytes(), &signature].concat();
    let mut c = ServerConnection::new(t0, CHALLENGE, own(), limits());
    let r = close_reason(raw(&mut c, t0, msg));
    assert_eq!(r, CloseReason::AuthFailed(AuthError::Version(1)));
    assert_eq!(
        r.to_string(),
        "auth failed: unsupported protocol version 1 (this relay speaks 2)"
    );
}

#[test]
fn wrong_version_and_non_key_are_refused() {
    let t0 = Instant::now();
    let Frame::ClientAuth {
        node_id, signature, ..
    } = client_auth(&key(1), &CHALLENGE, URL)
    else {
        unreachable!()
    };
    let mut c = ServerConnection::new(t0, CHALLENGE, own(), limits());
    let r = close_reason(bin(
        &mut c,
        t0,
        &Frame::ClientAuth {
            version: 99,
            node_id,
            signature,
            relay_url: URL,
        },
    ));
    assert_eq!(r, CloseReason::AuthFailed(AuthError::Version(99)));

    // A ClientAuth whose key bytes are not a curve point.
    let mut msg = client_auth(&key(1), &CHALLENGE, URL).to_vec();
    msg[2..34].copy_from_slice(&[0xff; 32]);
    msg[33] = 0x7f;
    let mut c = ServerConnection::new(t0, CHALLENGE, own(), limits());
    let r = close_reason(raw(&mut c, t0, msg));
    assert!(matches!(r, CloseReason::AuthFailed(_)), "{r:?}");
}

#[test]
fn anything_but_client_auth_before_auth_is_a_protocol_error() {
    let t0 = Instant::now();
    let frames = [
        Frame::Send {
            dst: key(2).node_id(),
            payload: b"hi",
        },
        Frame::Ping { data: [0; 8] },
        Frame::Pong { data: [0; 8] },
        Frame::ServerHello {
            version: 1,
            challenge: [0; 32],
        },
        Frame::AuthOk { idle_timeout_ms: 1 },
        Frame::Recv {
            src: key(2).node_id(),
            payload: b"",
        },
        Frame::PeerGone {
            node: key(2).node_id(),
            reason: PeerGoneReason::Disconnected,
        },
        Frame::Restarting {
            reconnect_in_ms: 1,
            try_for_ms: 1,
        },
    ];
    for f in frames {
        let mut c = ServerConnection::new(t0, CHALLENGE, own(), limits());
        let r = close_reason(bin(&mut c, t0, &f));
        assert!(
            matches!(
                r,
                CloseReason::Unexpected {
                    authenticated: false,
                    ..
                }
            ),
            "{f:?}: {r:?}"
        );
        assert_eq!(r.code(), CLOSE_PROTOCOL_ERROR);
        assert!(r.to_string().contains("before ClientAuth"), "{r}");
    }
}

#[test]
fn server_frames_and_second_auth_after_auth_are_protocol_errors() {
    let frames = [
        client_auth(&key(1), &CHALLENGE, URL),
        Frame::ServerHello {
            version: 1,
            challenge: [0; 32],
        },
        Frame::AuthOk { idle_timeout_ms: 1 },
        Frame::Recv {
            src: key(2).node_id(),
            payload: b"x",
        },
        Frame::PeerGone {
            node: key(2).node_id(),
            reason: PeerGoneReason::NotConnected,
        },
        Frame::Restarting {
            reconnect_in_ms: 1,
            try_for_ms: 1,
        },
    ];
    for f in frames {
        let (mut c, t0) = authed(limits());
        let r = close_reason(bin(&mut c, t0, &f));
        assert!(
            matches!(
                r,
                CloseReason::Unexpected {
                    authenticated: true,
                    ..
                }
            ),
            "{f:?}: {r:?}"
        );
        assert!(c.is_closed());
    }
}

#[test]
fn garbage_is_a_bad_frame_in_every_state() {
    let garbage: [Vec<u8>; 5] = [
        vec![],
        vec![0x7f, 1, 2],
        vec![0x02; 10],
        vec![0x10; 5],
        vec![0x20, 1],
    ];
    for g in &garbage {
        let t0 = Instant::now();
        let mut c = ServerConnection::new(t0, CHALLENGE, own(), limits());
        let r = close_reason(raw(&mut c, t0, g.clone()));
        assert!(matches!(r, CloseReason::BadFrame(_)), "{g:?}: {r:?}");
        assert_eq!(r.code(), CLOSE_PROTOCOL_ERROR);
        let (mut c, t0) = authed(limits());
        let r = close_reason(raw(&mut c, t0, g.clone()));
        assert!(matches!(r, CloseReason::BadFrame(_)), "{g:?}: {r:?}");
        assert_eq!(r.label(), "bad_frame");
    }
    // A PeerGone with an unknown reason from a client is bad too.
    let (mut c, t0) = authed(limits());
    let mut msg = vec![0x30];
    msg.extend_from_slice(&[0; 33]);
    msg[33] = 9;
    assert_eq!(
        close_reason(raw(&mut c, t0, msg)),
        CloseReason::BadFrame(FrameError::BadReason(9))
    );
}

#[test]
fn text_messages_close_with_1003() {
    let t0 = Instant::now();
    let mut c = ServerConnection::new(t0, CHALLENGE, own(), limits());
    let r = close_reason(c.handle_input(t0, Input::Text(5)));
    assert_eq!(
        (r.code(), r.label()),
        (CLOSE_UNSUPPORTED_DATA, "text_message")
    );
    let (mut c, t0) = authed(limits());
    let r = close_reason(c.handle_input(t0, Input::Text(0)));
    assert_eq!(r, CloseReason::Text);
}

#[test]
fn oversized_messages_close_with_1009() {
    let (mut c, t0) = authed(limits());
    let r = close_reason(raw(&mut c, t0, vec![0x10; MAX_MESSAGE + 1]));
    assert_eq!(r, CloseReason::TooLarge(MAX_MESSAGE + 1));
    assert_eq!(r.code(), CLOSE_TOO_BIG);

    // A lower configured limit applies to every message, also during the handshake.
    let small = ConnLimits {
        max_message_bytes: 50,
        ..limits()
    };
    let mut c = ServerConnection::new(t0, CHALLENGE, own(), small);
    let r = close_reason(bin(&mut c, t0, &client_auth(&key(1), &CHALLENGE, URL)));
    assert_eq!(r, CloseReason::TooLarge(98 + URL.len()));
    // The frame layer's own limit maps to 1009 as well.
    assert_eq!(
        CloseReason::BadFrame(FrameError::PayloadTooLarge(70_000)).code(),
        CLOSE_TOO_BIG
    );
}

#[test]
fn send_is_rewritten_into_recv_in_place() {
    let (mut c, t0) = authed(limits());
    let dst = key(2).node_id();
    let mut msg = Frame::Send {
        dst,
        payload: b"datagram",
    }
    .to_vec();
    assert_eq!(
        c.handle_input(t0, Input::Binary(&mut msg)),
        Action::Forward { dst }
    );
    assert_eq!(
        Frame::decode(&msg),
        Ok(Frame::Recv {
            src: key(1).node_id(),
            payload: b"datagram"
        })
    );
    // Empty payloads are fine, and a Send to oneself is just forwarded.
    let me = key(1).node_id();
    assert_eq!(
        bin(
            &mut c,
            t0,
            &Frame::Send {
                dst: me,
                payload: b""
            }
        ),
        Action::Forward { dst: me }
    );
}

#[test]
fn ping_gets_pong_and_pong_and_control_are_quiet() {
    let (mut c, t0) = authed(limits());
    assert_eq!(
        bin(&mut c, t0, &Frame::Ping { data: [5; 8] }),
        Action::Reply(Frame::Pong { data: [5; 8] })
    );
    assert_eq!(bin(&mut c, t0, &Frame::Pong { data: [5; 8] }), Action::None);
    assert_eq!(c.handle_input(t0, Input::Control), Action::None);
}

#[test]
fn slow_handshake_times_out() {
    let t0 = Instant::now();
    let mut c = ServerConnection::new(t0, CHALLENGE, own(), limits());
    // Control frames and time do not extend the handshake.
    c.handle_input(t0 + Duration::from_secs(9), Input::Control);
    assert_eq!(c.handle_timeout(t0 + Duration::from_millis(9_999)), None);
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    let r = c.handle_timeout(t0 + Duration::from_secs(10)).unwrap();
    assert_eq!(r, CloseReason::HandshakeTimeout);
    assert_eq!(r.code(), CLOSE_POLICY_VIOLATION);
    assert!(c.is_closed());
    assert_eq!(c.handle_timeout(t0 + Duration::from_secs(100)), None);
}

#[test]
fn idle_timeout_is_reset_by_any_message() {
    let (mut c, t0) = authed(limits());
    let s = Duration::from_secs;
    assert_eq!(c.handle_timeout(t0 + s(59)), None);
    c.handle_input(t0 + s(59), Input::Control);
    assert_eq!(c.poll_timeout(), Some(t0 + s(119)));
    bin(&mut c, t0 + s(100), &Frame::Ping { data: [0; 8] });
    assert_eq!(c.handle_timeout(t0 + s(159)), None);
    let r = c.handle_timeout(t0 + s(160)).unwrap();
    assert_eq!((r.code(), r.label()), (CLOSE_GOING_AWAY, "idle_timeout"));
}

#[test]
fn rate_limit_pauses_reading_after_the_burst() {
    let l = ConnLimits {
        rate_bytes_per_sec: 1000,
        burst_bytes: 2000,
        ..limits()
    };
    let (mut c, t0) = authed(l);
    let send = |n: usize| {
        Frame::Send {
            dst: key(2).node_id(),
            payload: &vec![0; n],
        }
        .to_vec()
    };
    // The burst passes untouched.
    let a = raw(&mut c, t0, send(1000 - FRAME_OVERHEAD));
    assert!(matches!(a, Action::Forward { .. }));
    assert_eq!(c.read_resume_at(t0), None);
    raw(&mut c, t0, send(1000 - FRAME_OVERHEAD));
    assert_eq!(c.read_resume_at(t0), None);
    // The next 500 bytes go into debt: half a second at 1000 B/s.
    let a = raw(&mut c, t0, send(500 - FRAME_OVERHEAD));
    assert!(matches!(a, Action::Forward { .. }), "shaped, never dropped");
    let resume = c.read_resume_at(t0).unwrap();
    assert_eq!(resume, t0 + Duration::from_millis(500));
    assert_eq!(c.read_resume_at(resume), None);
    // Paused time is not idleness.
    assert_eq!(c.poll_timeout(), Some(resume + Duration::from_secs(60)));
    // Refilled at 1000 B/s: after 1.5 s, 1000 bytes pass again.
    raw(
        &mut c,
        t0 + Duration::from_millis(1500),
        send(1000 - FRAME_OVERHEAD),
    );
    assert_eq!(c.read_resume_at(t0 + Duration::from_millis(1500)), None);
}

#[test]
fn no_rate_limit_when_zero() {
    let (mut c, t0) = authed(limits());
    for _ in 0..100 {
        raw(&mut c, t0, vec![0x10; MAX_MESSAGE]);
        assert_eq!(c.read_resume_at(t0), None);
    }
}

#[test]
fn not_connected_notices_are_rate_limited() {
    let (mut c, t0) = authed(limits());
    let n = key(3).node_id();
    let sent = (0..100)
        .filter(|_| c.not_connected_notice(t0, n).is_some())
        .count();
    assert_eq!(sent, NOTICE_BURST as usize);
    assert_eq!(c.not_connected_notice(t0, n), None);
    let later = t0 + Duration::from_millis(1000 / NOTICES_PER_SEC);
    assert_eq!(
        c.not_connected_notice(later, n),
        Some(Frame::PeerGone {
            node: n,
            reason: PeerGoneReason::NotConnected
        })
    );
}

#[test]
fn close_reasons_fit_a_close_frame() {
    let reasons = [
        CloseReason::HandshakeTimeout,
        CloseReason::IdleTimeout,
        CloseReason::BadFrame(FrameError::BadLength {
            frame_type: 0x10,
            len: 3,
            expected: "at least 33",
        }),
        CloseReason::Unexpected {
            frame_type: 0x11,
            authenticated: true,
        },
        CloseReason::AuthFailed(AuthError::Version(200)),
        CloseReason::AuthFailed(AuthError::WrongRelay {
            signed_for: format!("https://{}.example:443", "a".repeat(240))
                .parse()
                .unwrap(),
            own: URL.into(),
        }),
        CloseReason::Text,
        CloseReason::TooLarge(usize::MAX),
        CloseReason::Replaced,
        CloseReason::ShuttingDown,
        CloseReason::Transport("é".repeat(200)),
    ];
    for r in reasons {
        assert!(r.to_string().len() <= 123, "{r}");
        assert!(!r.label().is_empty());
    }
    assert_eq!(CloseReason::ShuttingDown.code(), CLOSE_SERVICE_RESTART);
    assert_eq!(CloseReason::Replaced.code(), CLOSE_REPLACED);
}

#[test]
fn external_close_stops_everything() {
    let (mut c, t0) = authed(limits());
    c.close();
    assert_eq!(bin(&mut c, t0, &Frame::Ping { data: [0; 8] }), Action::None);
    assert_eq!(c.poll_timeout(), None);
    assert_eq!(c.handle_timeout(t0 + Duration::from_secs(1000)), None);
}

#[test]
fn arbitrary_sequences_never_panic() {
    // A small deterministic generator; the fuzz target relay_handshake goes much further.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let auth = client_auth(&key(1), &CHALLENGE, URL).to_vec();
    for _ in 0..2000 {
        let t0 = Instant::now();
        let mut c = ServerConnection::new(
            t0,
            CHALLENGE,
            own(),
            ConnLimits {
                rate_bytes_per_sec: next() % 3000,
                burst_bytes: next() % 3000,
                max_message_bytes: (next() % 200) as usize,
                ..limits()
            },
        );
        for i in 0..8 {
            let now = t0 + Duration::from_millis(next() % 20_000);
            let mut msg = if next() % 3 == 0 {
                auth.clone()
            } else {
                let len = (next() % 120) as usize;
                let mut m: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                if let Some(b) = m.first_mut() {
                    *b = [0x02, 0x10, 0x20, 0x21, 0x11, 0x30][(next() % 6) as usize];
                }
                m
            };
            if i % 3 == 1 {
                let byte = (next() as usize) % msg.len().max(1);
                if let Some(b) = msg.get_mut(byte) {
                    *b ^= 1 << (next() % 8);
                }
            }
            let _ = c.handle_input(now, Input::Binary(&mut msg));
            let _ = c.handle_timeout(now);
            let _ = c.read_resume_at(now);
            let _ = c.poll_timeout();
        }
    }
}
