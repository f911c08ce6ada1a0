//! The relay server on loopback, driven by a minimal raw client written here, so every test
//! controls the protocol byte by byte.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use burrow_proto::identity::{NodeId, SecretKey};
use burrow_proto::relay::auth::client_auth;
use burrow_proto::relay::{Frame, PeerGoneReason, FRAME_OVERHEAD, MAX_PAYLOAD};
use burrow_relay::{Limits, RelayConfig, RelayServer};
use common::parse_response;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const STEP: Duration = Duration::from_secs(5);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn key(n: u8) -> SecretKey {
    SecretKey::from_bytes([n; 32])
}

async fn start(limits: Limits) -> RelayServer {
    RelayServer::start(RelayConfig {
        limits,
        ..RelayConfig::default()
    })
    .await
    .expect("relay starts")
}

/// The URL a client dials for the relay at `addr`, which it signs.
fn url_of(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// A raw protocol client.
struct Raw {
    ws: Ws,
}

impl Raw {
    /// Connects and reads the ServerHello; returns the challenge.
    async fn connect(addr: SocketAddr) -> (Raw, [u8; 32]) {
        let (ws, _) = timeout(
            STEP,
            tokio_tungstenite::connect_async(format!("ws://{addr}/relay")),
        )
        .await
        .expect("connect in time")
        .expect("websocket upgrade");
        let mut raw = Raw { ws };
        let msg = raw.next().await;
        let Message::Binary(b) = msg else {
            panic!("expected ServerHello, got {msg:?}")
        };
        let Ok(Frame::ServerHello { challenge, .. }) = Frame::decode(&b) else {
            panic!("expected ServerHello, got {b:?}")
        };
        (raw, challenge)
    }

    /// Connects and authenticates as `key`.
    async fn authed(addr: SocketAddr, key: &SecretKey) -> Raw {
        let (mut raw, challenge) = Raw::connect(addr).await;
        raw.send_frame(&client_auth(key, &challenge, &url_of(addr)))
            .await;
        let f = raw.next_binary().await;
        assert!(
            matches!(Frame::decode(&f), Ok(Frame::AuthOk { .. })),
            "expected AuthOk, got {f:?}"
        );
        raw
    }

    async fn send_frame(&mut self, f: &Frame<'_>) {
        self.send(Message::Binary(f.to_vec().into())).await;
    }

    async fn send(&mut self, m: Message) {
        timeout(STEP, self.ws.send(m))
            .await
            .expect("send in time")
            .expect("send");
    }

    async fn send_to(&mut self, dst: NodeId, payload: &[u8]) {
        self.send_frame(&Frame::Send { dst, payload }).await;
    }

    /// The next message other than WebSocket ping/pong.
    async fn next(&mut self) -> Message {
        loop {
            let m = timeout(STEP, self.ws.next())
                .await
                .expect("message in time")
                .expect("stream open")
                .expect("no websocket error");
            if !matches!(m, Message::Ping(_) | Message::Pong(_)) {
                return m;
            }
        }
    }

    async fn next_binary(&mut self) -> Vec<u8> {
        match self.next().await {
            Message::Binary(b) => b.to_vec(),
            other => panic!("expected binary, got {other:?}"),
        }
    }

    /// Reads until a Recv frame; returns source and payload.
    async fn recv(&mut self) -> (NodeId, Vec<u8>) {
        let b = self.next_binary().await;
        match Frame::decode(&b) {
            Ok(Frame::Recv { src, payload }) => (src, payload.to_vec()),
            other => panic!("expected Recv, got {other:?}"),
        }
    }

    /// Reads until the server's close; returns its code and reason.
    async fn closed(&mut self) -> (u16, String) {
        loop {
            match timeout(STEP, self.ws.next()).await.expect("close in time") {
                Some(Ok(Message::Close(Some(f)))) => return (f.code.into(), f.reason.to_string()),
                Some(Ok(Message::Close(None))) | None => return (0, String::new()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return (0, e.to_string()),
            }
        }
    }
}

/// `a` and `b` exchange `n` datagrams each way, all delivered in order.
async fn exchange(a: &mut Raw, ka: &SecretKey, b: &mut Raw, kb: &SecretKey, n: usize) {
    for i in 0..n {
        a.send_to(kb.node_id(), format!("a{i}").as_bytes()).await;
        b.send_to(ka.node_id(), format!("b{i}").as_bytes()).await;
    }
    for i in 0..n {
        assert_eq!(b.recv().await, (ka.node_id(), format!("a{i}").into_bytes()));
        assert_eq!(a.recv().await, (kb.node_id(), format!("b{i}").into_bytes()));
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    timeout(STEP, s.read_to_string(&mut out))
        .await
        .expect("response in time")
        .unwrap();
    parse_response(&out)
}

#[tokio::test]
async fn two_clients_exchange_and_learn_when_peers_are_gone() {
    timeout(Duration::from_secs(30), async {
        let server = start(Limits::default()).await;
        let addr = server.local_addr();
        assert_eq!(server.url(), format!("http://{addr}"));
        let (ka, kb, kc) = (key(1), key(2), key(3));
        let mut a = Raw::authed(addr, &ka).await;
        let mut b = Raw::authed(addr, &kb).await;
        exchange(&mut a, &ka, &mut b, &kb, 100).await;

        // A full-size datagram passes.
        let big = vec![7u8; MAX_PAYLOAD];
        a.send_to(kb.node_id(), &big).await;
        assert_eq!(b.recv().await, (ka.node_id(), big));

        // Sending to a key nobody holds: PeerGone{NotConnected}.
        a.send_to(kc.node_id(), b"anyone?").await;
        let f = a.next_binary().await;
        assert_eq!(
            Frame::decode(&f),
            Ok(Frame::PeerGone {
                node: kc.node_id(),
                reason: PeerGoneReason::NotConnected
            })
        );
        // When b leaves, a (who sent to b) hears PeerGone{Disconnected}.
        b.ws.close(None).await.unwrap();
        let f = a.next_binary().await;
        assert_eq!(
            Frame::decode(&f),
            Ok(Frame::PeerGone {
                node: kb.node_id(),
                reason: PeerGoneReason::Disconnected
            })
        );
        let stats = server.stats();
        assert_eq!(stats.frames_forwarded, 201);
        assert_eq!(stats.drops_no_such_peer, 1);
        assert_eq!(stats.clients, 1);
        server.shutdown().await;
    })
    .await
    .expect("test in time");
}

#[tokio::test]
async fn wrong_signature_is_refused_and_counted() {
    timeout(Duration::from_secs(30), async {
        let server = start(Limits::default()).await;
        let addr = server.local_addr();
        let (mut raw, _challenge) = Raw::connect(addr).await;
        // Signed over a different challenge.
        raw.send_frame(&client_auth(&key(1), &[0; 32], &url_of(addr)))
            .await;
        let (code, reason) = raw.closed().await;
        assert_eq!(code, 1008);
        assert!(reason.contains("auth failed"), "{reason}");
        let stats = server.stats();
        assert_eq!(stats.auth_failures, 1);
        assert_eq!(stats.clients, 0);
        assert_eq!(stats.closes_for("auth_failed"), 1);
    })
    .await
    .expect("test in time");
}

#[tokio::test]
async fn claiming_anothers_key_gets_none_of_its_traffic() {
    timeout(Duration::from_secs(30), async {
        let server = start(Limits::default()).await;
        let addr = server.local_addr();
        let (ka, kb) = (key(1), key(2));
        let mut a = Raw::authed(addr, &ka).await;
        let mut b = Raw::authed(addr, &kb).await;

        // The thief claims b's key with a signature by its own key, over its own challenge.
        let (mut thief, challenge) = Raw::connect(addr).await;
        let url = url_of(addr);
        let Frame::ClientAuth { signature, .. } = client_auth(&key(66), &challenge, &url) else {
            unreachable!()
        };
        thief
            .send_frame(&Frame::ClientAuth {
                version: burrow_proto::relay::PROTOCOL_VERSION,
                node_id: kb.node_id(),
                signature,
                relay_url: &url,
            })
            .await;
        // It may not send before authenticating either; anything it gets is its close.
        let (code, _) = thief.closed().await;
        assert_eq!(code, 1008);

        // b still gets all of a's traffic.
        exchange(&mut a, &ka, &mut b, &kb, 20).await;
        assert_eq!(server.stats().auth_failures, 1);
    })
    .await
    .expect("test in time");
}

#[tokio::test]
async fn an_auth_replayed_from_an_earlier_connection_is_refused() {
    timeout(Duration::from_secs(30), async {
        let server = start(Limits::default()).await;
        let addr = server.local_addr();
        let (ka, kb) = (key(1), key(2));
        let mut a = Raw::authed(addr, &ka).await;
        // b's genuine ClientAuth, as an eavesdropper on b's connection would record it.
        let (mut b, first) = Raw::connect(addr).await;
        let url = url_of(addr);
        let recorded = client_auth(&kb, &first, &url);
        b.send_frame(&recorded).await;
        let f = b.next_binary().await;
        assert!(
            matches!(Frame::decode(&f), Ok(Frame::AuthOk { .. })),
            "{f:?}"
        );

        // Played back on a new connection: its challenge is another, so the signature fails.
        let (mut replayer, second) = Raw::connect(addr).await;
        replayer.send_frame(&recorded).await;
        match timeout(STEP, replayer.ws.next())
            .await
            .expect("an answer in time")
        {
            Some(Ok(Message::Close(Some(f)))) => {
                assert_eq!(f.code, CloseCode::Policy, "{f:?}");
                assert!(f.reason.contains("auth failed"), "{f:?}");
            }
            other => panic!(
                "a replayed auth was not refused (challenges {first:02x?}, then {second:02x?}): \
                 {other:?}"
            ),
        }
        // b kept its place: it still gets all of a's traffic.
        exchange(&mut a, &ka, &mut b, &kb, 20).await;
        assert_eq!(server.stats().auth_failures, 1);
    })
    .await
    .expect("test in time");
}

/// Keeps `a` and `b` exchanging while `offend` misbehaves; checks only the offender is
/// closed, with `code`.
async fn only_offender_closed<F, Fut>(limits: Limits, code: u16, offend: F)
where
    F: FnOnce(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = (u16, String)>,
{
    let server = start(limits).await;
    let addr = server.local_addr();
    let (ka, kb) = (key(1), key(2));
    let mut a = Raw::authed(addr, &ka).await;
    let mut b = Raw::authed(addr, &kb).await;
    exchange(&mut a, &ka, &mut b, &kb, 10).await;
    let (got, reason) = offend(addr).await;
    assert_eq!(got, code, "close reason: {reason}");
    exchange(&mut a, &ka, &mut b, &kb, 10).await;
    assert_eq!(server.stats().clients, 2);
}

#[tokio::test]
async fn oversized_frame_closes_only_the_offender_with_1009() {
    timeout(Duration::from_secs(30), async {
        only_offender_closed(Limits::default(), 1009, |addr| async move {
            let mut c = Raw::authed(addr, &key(3)).await;
            let mut msg = Frame::Send {
                dst: key(1).node_id(),
                payload: b"",
            }
            .to_vec();
            msg.resize(FRAME_OVERHEAD + MAX_PAYLOAD + 1, 0);
            c.send(Message::Binary(msg.into())).await;
            c.closed().await
        })
        .await;
        // Before authenticating too.
        only_offender_closed(Limits::default(), 1009, |addr| async move {
            let (mut c, _) = Raw::connect(addr).await;
            c.send(Message::Binary(vec![0x10; 200_000].into())).await;
            c.closed().await
        })
        .await;
    })
    .await
    .expect("test in time");
}

#[tokio::test]
async fn garbage_after_the_upgrade_closes_only_the_offender() {
    timeout(Duration::from_secs(30), async {
        // A binary message that is not a frame.
        only_offender_closed(Limits::default(), 1002, |addr| async move {
            let mut c = Raw::authed(addr, &key(3)).await;
            c.send(Message::Binary(vec![0xde, 0xad, 0xbe, 0xef].into()))
                .await;
            c.closed().await
        })
        .await;
        // A frame only the server may send.
        only_offender_closed(Limits::default(), 1002, |addr| async move {
            let mut c = Raw::authed(addr, &key(3)).await;
            c.send_frame(&Frame::Recv {
                src: key(1).node_id(),
                payload: b"forged",
            })
            .await;
            c.closed().await
        })
        .await;
        // A second ClientAuth.
        only_offender_closed(Limits::default(), 1002, |addr| async move {
            let mut c = Raw::authed(addr, &key(3)).await;
            c.send_frame(&client_auth(&key(3), &[0; 32], &url_of(addr)))
                .await;
            c.closed().await
        })
        .await;
        // A text message.
        only_offender_closed(Limits::default(), 1003, |addr| async move {
            let mut c = Raw::authed(addr, &key(3)).await;
            c.send(Message::Text("hello".into())).await;
            c.closed().await
        })
        .await;
        // Bytes that are not WebSocket at all, right after the upgrade.
        only_offender_closed(Limits::default(), 1002, |addr| async move {
            let mut s = raw_upgrade(addr).await;
            s.write_all(&[0xff; 64]).await.unwrap();
            // The server answers with a close frame (0x88, len, code) and hangs up.
            let mut buf = Vec::new();
            let _ = timeout(STEP, s.read_to_end(&mut buf)).await;
            let at = buf
                .windows(1)
                .position(|w| w[0] == 0x88)
                .expect("a close frame");
            let code = u16::from_be_bytes([buf[at + 2], buf[at + 3]]);
            (code, String::from_utf8_lossy(&buf[at + 4..]).into_owned())
        })
        .await;
    })
    .await
    .expect("test in time");
}

/// A TCP stream that has completed the WebSocket upgrade by hand; the ServerHello frame has
/// been read off it.
async fn raw_upgrade(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /relay HTTP/1.1\r\nHost: relay\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    // ServerHello: 2-byte WebSocket header + 34 bytes.
    let mut hello = [0u8; 36];
    s.read_exact(&mut hello).await.unwrap();
    assert_eq!(hello[0], 0x82);
    s
}

#[tokio::test]
async fn slow_handshake_closes_only_the_offender() {
    timeout(Duration::from_secs(30), async {
        let limits = Limits {
            handshake_timeout: Duration::from_millis(500),
            ..Limits::default()
        };
        only_offender_closed(limits.clone(), 1008, |addr| async move {
            let (mut c, _) = Raw::connect(addr).await;
            // Never sends ClientAuth.
            let started = std::time::Instant::now();
            let closed = c.closed().await;
            assert!(started.elapsed() < Duration::from_secs(2));
            closed
        })
        .await;
        // At the HTTP layer: a connection that never sends its request is dropped too.
        let server = start(limits).await;
        let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
        s.write_all(b"GET /relay HTTP/1.1\r\n").await.unwrap();
        let mut buf = Vec::new();
        let n = timeout(Duration::from_secs(3), s.read_to_end(&mut buf))
            .await
            .expect("the relay hangs up on a slow request head");
        assert!(n.is_ok() || buf.is_empty());
    })
    .await
    .expect("test in time");
}

#[tokio::test]
async fn idle_clients_are_closed() {
    timeout(Duration::from_secs(30), async {
        let server = start(Limits {
            idle_timeout: Duration::from_millis(400),
            ..Limits::default()
        })
        .await;
        let addr = server.local_addr();
        let mut idle = Raw::authed(addr, &key(1)).await;
        let mut pinger = Raw::authed(addr, &key(2)).await;
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            pinger.send_frame(&Frame::Ping { data: [4; 8] }).await;
            let f = pinger.next_binary().await;
            assert_eq!(Frame::decode(&f), Ok(Frame::Pong { data: [4; 8] }));
        }
        assert_eq!(idle.closed().await.0, 1001);
        assert_eq!(server.stats().clients, 1);
    })
    .await
    .expect("test in time");
}

#[tokio::test]
async fn a_second_connection_for_a_key_replaces_the_first() {
    timeout(Duration::from_secs(30), async {
        let server = start(Limits::default()).await;
        let addr = server.local_addr();
        let (ka, kb) = (key(1), key(2));
        let mut a = Raw::authed(addr, &ka).await;
        let mut old_b = Raw::authed(addr, &kb).await;
        let mut b = Raw::authed(addr, &kb).await;
        let (code, reason) = old_b.closed().await;
        assert_eq!(code, 4001, "{reason}");
        exchange(&mut a, &ka, &mut b, &kb, 10).await;
        let stats = server.stats();
        assert_eq!(stats.clients, 2);
        assert_eq!(stats.closes_for("replaced"), 1);
    })
    .await
    .expect("test in time");
}

#[tokio::test]
async fn per_ip_connection_limit() {
    timeout(Duration::from_secs(30), async {
        let server = start(Limits {
            max_conns_per_ip: 3,
            ..Limits::default()
        })
        .await;
        let addr = server.local_addr();
        let mut clients = Vec::new();
        for i in 0..3 {
            clients.push(Raw::authed(addr, &key(i + 1)).await);
        }
        // The fourth TCP connection is closed at accept.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 16];
        let n = timeout(STEP, s.read(&mut buf))
            .await
            .expect("closed in time");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        assert!(
            tokio_tungstenite::connect_async(format!("ws://{addr}/relay"))
                .await
                .is_err()
        );
        assert_eq!(server.stats().refused_per_ip, 2);
        // A slot frees when a client leaves.
        let mut gone = clients.pop().unwrap();
        gone.ws.close(None).await.unwrap();
        let _ = gone.closed().await;
        drop(gone);
        let mut ok = None;
        for _ in 0..50 {
            if let Ok((ws, _)) =
                tokio_tungstenite::connect_async(format!("ws://{addr}/relay")).await
            {
                ok = Some(ws);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ok.is_some());
    })
    .await
    .expect("test in time");
}

#[tokio::test]
async fn max_clients_refuses_with_503() {
    timeout(Duration::from_secs(30), async {
        let server = start(Limits {
            max_clients: 2,
            ..Limits::default()
        })
        .await;
        let addr = server.local_addr();
        let _a = Raw::authed(addr, &key(1)).await;
        let _b = Raw::connect(addr).await; // handshaking sessions count too
        let err = tokio_tungstenite::connect_async(format!("ws://{addr}/relay"))
            .await
            .expect_err("refused");
        assert!(err.to_string().contains("503"), "{err}");
        // /health still answers.
        assert_eq!(http_get(addr, "/health").await.0, 200);
        assert_eq!(server.stats().refused_max_clients, 1);
    })
    .await
    .expect("test in time");
}

#[tokio::test]
async fn health_and_metrics() {
    timeout(Duration::from_secs(30), async {
        let server = start(Limits::default()).await;
        let addr = server.local_addr();
        let (ka, kb) = (key(1), key(2));
        let mut a = Raw::authed(addr, &ka).await;
        let mut b = Raw::authed(addr, &kb).await;
        exchange(&mut a, &ka, &mut b, &kb, 5).await;
        a.send_to(key(9).node_id(), b"x").await;
        let _ = a.next_binary().await;
        let (_bad, _) = Raw::connect(addr).await;

        let (status, body) = http_get(addr, "/health").await;
        assert_eq!(status, 200);
        let health: serde_json::Value = serde_json::from_str(&body).expect(&body);
        assert_eq!(health["status"], "ok");
        assert_eq!(health["clients"], 2);
        assert!(health["uptime_secs"].is_u64());
        assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));

        let (status, body) = http_get(addr, "/metrics").await;
        assert_eq!(status, 200);
        for line in [
            "burrow_relay_clients 2",
            "burrow_relay_sessions 3",
            "burrow_relay_frames_forwarded_total 10",
            "burrow_relay_bytes_forwarded_total 20",
            "burrow_relay_drops_total{reason=\"no_such_peer\"} 1",
            "burrow_relay_drops_total{reason=\"queue_full\"} 0",
            "burrow_relay_auth_failures_total 0",
            "burrow_relay_closes_total{reason=\"auth_failed\"} 0",
            "burrow_relay_connections_refused_total{reason=\"per_ip_limit\"} 0",
            "burrow_relay_peer_gone_notices_total{reason=\"not_connected\"} 1",
            "# EOF",
        ] {
            assert!(body.contains(line), "missing {line:?} in\n{body}");
        }
        assert!(body.contains("burrow_relay_connections_accepted_total"));
        assert_eq!(http_get(addr, "/nope").await.0, 404);
    })
    .await
    .expect("test in time");
}

#[tokio::test]
async fn graceful_shutdown_sends_restarting_then_1012() {
    timeout(Duration::from_secs(30), async {
        let server = start(Limits::default()).await;
        let addr = server.local_addr();
        let mut a = Raw::authed(addr, &key(1)).await;
        let mut b = Raw::authed(addr, &key(2)).await;
        let (mut handshaking, _) = Raw::connect(addr).await;
        let started = std::time::Instant::now();
        server.shutdown().await;
        assert!(started.elapsed() < Duration::from_secs(2));
        for c in [&mut a, &mut b] {
            let f = c.next_binary().await;
            assert_eq!(
                Frame::decode(&f),
                Ok(Frame::Restarting {
                    reconnect_in_ms: 200,
                    try_for_ms: 30_000
                })
            );
            assert_eq!(c.closed().await.0, 1012);
        }
        assert_eq!(handshaking.closed().await.0, 1012);
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "no longer listening"
        );
    })
    .await
    .expect("test in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_drops_its_own_frames_and_blocks_nobody() {
    timeout(Duration::from_secs(60), async {
        let server = start(Limits {
            // Filled by bytes (four full datagrams), while bursts of small ones still fit.
            client_queue_frames: 64,
            client_queue_bytes: 256 * 1024,
            ..Limits::unlimited()
        })
        .await;
        let addr = server.local_addr();
        let (ka, kb, kslow) = (key(1), key(2), key(3));
        let mut a = Raw::authed(addr, &ka).await;
        let mut b = Raw::authed(addr, &kb).await;
        // Never reads.
        let _slow = Raw::authed(addr, &kslow).await;
        let big = vec![1u8; MAX_PAYLOAD];
        let mut i = 0;
        while server.stats().drops_queue_full == 0 {
            a.send_to(kslow.node_id(), &big).await;
            i += 1;
            assert!(i < 5000, "the queue to a non-reading client never filled");
        }
        // a's own traffic still flows both ways.
        exchange(&mut a, &ka, &mut b, &kb, 20).await;
    })
    .await
    .expect("test in time");
}

#[tokio::test]
async fn over_rate_clients_are_slowed_not_dropped() {
    timeout(Duration::from_secs(30), async {
        let server = start(Limits {
            client_rate_bytes_per_sec: 1_000_000,
            client_burst_bytes: 100_000,
            ..Limits::default()
        })
        .await;
        let addr = server.local_addr();
        let (ka, kb) = (key(1), key(2));
        let mut a = Raw::authed(addr, &ka).await;
        let mut b = Raw::authed(addr, &kb).await;
        let payload = vec![3u8; 10_000];
        let started = std::time::Instant::now();
        let n = 60; // 600 kB: 100 kB of burst, then ~0.5 s at 1 MB/s
        let send = async {
            for _ in 0..n {
                a.send_to(kb.node_id(), &payload).await;
            }
        };
        let recv = async {
            for _ in 0..n {
                assert_eq!(b.recv().await.1.len(), payload.len());
            }
        };
        tokio::join!(send, recv);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(400), "{took:?}");
        let stats = server.stats();
        assert_eq!(stats.frames_forwarded, n);
        assert!(stats.rate_limited > 0);
    })
    .await
    .expect("test in time");
}

#[tokio::test]
async fn tls_relay_serves_wss_and_https() {
    use std::sync::Arc;
    use tokio_rustls::rustls::{self, pki_types::ServerName, RootCertStore};

    timeout(Duration::from_secs(30), async {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let dir = std::env::temp_dir().join(format!("burrow-relay-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();

        // A key file that is not PEM is a clear error at start.
        let bad = RelayServer::start(RelayConfig {
            tls: Some(burrow_relay::TlsFiles {
                cert: cert_path.clone(),
                key: cert_path.clone(),
            }),
            ..RelayConfig::default()
        })
        .await;
        assert!(matches!(bad, Err(burrow_relay::RelayError::Tls(_))));

        let server = RelayServer::start(RelayConfig {
            tls: Some(burrow_relay::TlsFiles {
                cert: cert_path,
                key: key_path,
            }),
            ..RelayConfig::default()
        })
        .await
        .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let addr = server.local_addr();
        assert_eq!(server.url(), format!("https://{addr}"));

        let mut roots = RootCertStore::empty();
        roots.add(cert.cert.der().clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .expect("TLS handshake");
        let (mut ws, _) = tokio_tungstenite::client_async("wss://localhost/relay", tls)
            .await
            .expect("wss upgrade");
        let hello = timeout(STEP, ws.next()).await.unwrap().unwrap().unwrap();
        let Ok(Frame::ServerHello { challenge, .. }) = Frame::decode(&hello.into_data()) else {
            panic!("no ServerHello over TLS")
        };
        // Signed for the name it dialled, which the relay's certificate carries.
        let url = format!("https://localhost:{}", addr.port());
        ws.send(Message::Binary(
            client_auth(&key(1), &challenge, &url).to_vec().into(),
        ))
        .await
        .unwrap();
        let ok = timeout(STEP, ws.next()).await.unwrap().unwrap().unwrap();
        assert!(matches!(
            Frame::decode(&ok.into_data()),
            Ok(Frame::AuthOk { .. })
        ));
        assert_eq!(server.stats().clients, 1);

        // Plain HTTP to a TLS port gets nowhere.
        let (status, _) = http_get(addr, "/health").await;
        assert_eq!(status, 0);
    })
    .await
    .expect("test in time");
}

#[tokio::test]
async fn a_relay_reached_at_a_url_it_does_not_know_says_so_until_told() {
    timeout(Duration::from_secs(30), async {
        // Clients reach it by a name (through a proxy, say); it knows only its address.
        let server = start(Limits::default()).await;
        let addr = server.local_addr();
        let public = format!("http://relay.example.org:{}", addr.port());
        let (mut raw, challenge) = Raw::connect(addr).await;
        raw.send_frame(&client_auth(&key(1), &challenge, &public))
            .await;
        let (code, reason) = raw.closed().await;
        assert_eq!(code, 1008);
        assert_eq!(
            reason,
            format!(
                "auth failed: signed for http://relay.example.org:{}, which is not this relay \
                 (http://{addr})",
                addr.port()
            )
        );
        assert_eq!(server.stats().auth_failures, 1);

        // Told its public URL (a proxy's, on port 80), it takes exactly that one.
        let public = "http://relay.example.org:80";
        let told = RelayServer::start(RelayConfig {
            public_urls: vec![public.parse().unwrap()],
            ..RelayConfig::default()
        })
        .await
        .unwrap();
        let addr = told.local_addr();
        assert_eq!(told.url(), public);
        let (mut raw, challenge) = Raw::connect(addr).await;
        raw.send_frame(&client_auth(&key(1), &challenge, &url_of(addr)))
            .await;
        assert_eq!(
            raw.closed().await.0,
            1008,
            "its own address is no longer it"
        );
        let (mut raw, challenge) = Raw::connect(addr).await;
        raw.send_frame(&client_auth(
            &key(1),
            &challenge,
            "http://relay.example.org",
        ))
        .await;
        let f = raw.next_binary().await;
        assert!(
            matches!(Frame::decode(&f), Ok(Frame::AuthOk { .. })),
            "{f:?}"
        );
    })
    .await
    .expect("test in time");
}

#[tokio::test]
async fn a_version_1_client_gets_a_clear_refusal() {
    timeout(Duration::from_secs(30), async {
        let server = start(Limits::default()).await;
        let (mut raw, challenge) = Raw::connect(server.local_addr()).await;
        // What a version 1 client sends: its key and a signature over domain, challenge and
        // key, no URL.
        let k = key(1);
        let signed = [
            &b"burrow relay auth v1\0"[..],
            &challenge,
            k.node_id().as_bytes(),
        ]
        .concat();
        let signature = ed25519_dalek::Signer::sign(k.signing_key(), &signed).to_bytes();
        let v1 = [&[0x02, 1][..], k.node_id().as_bytes(), &signature].concat();
        raw.send(Message::Binary(v1.into())).await;
        let (code, reason) = raw.closed().await;
        assert_eq!(code, 1008);
        assert_eq!(
            reason,
            "auth failed: unsupported protocol version 1 (this relay speaks 2)"
        );
    })
    .await
    .expect("test in time");
}
