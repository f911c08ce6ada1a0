//! Helpers shared by the relay's integration tests (each test file that uses them declares
//! `mod common;`).

#[allow(dead_code)] // used by the browser tests only
pub(crate) mod chromium;
pub(crate) mod mesh;

use std::sync::Arc;
use std::time::Duration;

use burrow::endpoint::{Admission, Endpoint, EndpointOptions};
use burrow::relay_client::{RelayClient, RelayUrl};
use burrow::{NodeId, SecretKey};
use burrow_relay::RelayServer;
use tokio::sync::watch;

/// The ALPN the endpoint tests speak.
#[allow(dead_code)] // used by the endpoint tests only
pub(crate) const ALPN: &[u8] = b"burrow-test/1";

/// An endpoint of a fresh key on 127.0.0.1, speaking [`ALPN`], connected to `relay`, with
/// `admission` if given.
#[allow(dead_code)] // used by the endpoint tests only
pub(crate) async fn endpoint(
    relay: &RelayServer,
    admission: Option<Arc<dyn Admission>>,
) -> Endpoint {
    endpoint_with_key(relay, SecretKey::from_bytes(rand::random()), admission).await
}

/// [`endpoint`] with the key `key`.
#[allow(dead_code)] // used by the endpoint tests only
pub(crate) async fn endpoint_with_key(
    relay: &RelayServer,
    key: SecretKey,
    admission: Option<Arc<dyn Admission>>,
) -> Endpoint {
    let ep = Endpoint::bind(
        key,
        EndpointOptions {
            bind_v4: "127.0.0.1:0".parse().unwrap(),
            bind_v6: None,
            relays: vec![relay.url().parse().unwrap()],
            alpns: vec![ALPN.to_vec()],
            admission,
            ..Default::default()
        },
    )
    .await
    .expect("endpoint binds");
    ep.relay()
        .unwrap()
        .wait_connected(Duration::from_secs(5))
        .await
        .expect("relay connected");
    ep
}

// ---------------------------------------------------------------------------------------------
// A windowed, acknowledged datagram exchange

#[allow(dead_code)] // not used by server.rs
const DATA: u8 = 0;
#[allow(dead_code)] // not used by server.rs
const ACK: u8 = 1;

/// What one side of an exchange sends, and how it paces it.
#[allow(dead_code)] // not used by server.rs
pub(crate) struct Plan {
    /// Datagrams each way.
    pub per_direction: u32,
    /// Unacknowledged datagrams in flight. Keep it well under the relay's per-client queue
    /// (256 frames), which drops when full: the application paces, as any datagram user must.
    pub window: u32,
    /// The receiver acknowledges every `ack_every` datagrams (and the last one).
    pub ack_every: u32,
    /// Datagram `seq` from the side tagged `tag`; built with [`datagram`].
    pub payload: fn(tag: u8, seq: u32) -> Vec<u8>,
}

/// A data datagram of `len` bytes: type, `tag`, `seq` (big-endian), then `fill(i)` for every
/// following byte index `i`.
#[allow(dead_code)] // not used by server.rs
pub(crate) fn datagram(tag: u8, seq: u32, len: usize, fill: impl Fn(usize) -> u8) -> Vec<u8> {
    let mut p = Vec::with_capacity(len);
    p.push(DATA);
    p.push(tag);
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend((6..len).map(fill));
    p
}

/// Sends `plan.per_direction` datagrams to `peer` within the window, and receives, checks and
/// acknowledges the peer's; with `via`, every datagram must have come through that relay.
/// Returns when both directions are complete.
#[allow(dead_code)] // not used by server.rs
pub(crate) async fn exchange(
    client: RelayClient,
    tag: u8,
    peer: NodeId,
    peer_tag: u8,
    via: Option<RelayUrl>,
    plan: &Plan,
) {
    let (per_direction, window, ack_every) = (plan.per_direction, plan.window, plan.ack_every);
    let payload = plan.payload;
    let (acked_tx, mut acked_rx) = watch::channel(0u32);
    let sender = {
        let client = client.clone();
        tokio::spawn(async move {
            for seq in 0..per_direction {
                acked_rx
                    .wait_for(|&acked| seq < acked + window)
                    .await
                    .expect("receiver alive");
                client
                    .send_wait(peer, payload(tag, seq).into())
                    .await
                    .expect("send");
            }
        })
    };
    let mut expected = 0u32;
    let mut acked = 0u32;
    while expected < per_direction || acked < per_direction {
        let (src, p, from) = client.recv().await.expect("client open");
        assert_eq!(src, peer, "misdelivered datagram");
        if let Some(via) = &via {
            assert_eq!(&from, via, "datagram via an unexpected relay");
        }
        match p[0] {
            DATA => {
                let seq = u32::from_be_bytes(p[2..6].try_into().unwrap());
                assert_eq!(seq, expected, "lost or reordered datagram");
                let want = payload(peer_tag, seq);
                assert_eq!(p.len(), want.len(), "datagram {seq} has the wrong length");
                assert!(p[..] == want[..], "datagram {seq} corrupted");
                expected += 1;
                if expected.is_multiple_of(ack_every) || expected == per_direction {
                    let mut ack = vec![ACK];
                    ack.extend_from_slice(&expected.to_be_bytes());
                    client.send_wait(peer, ack.into()).await.expect("ack");
                }
            }
            ACK => {
                acked = u32::from_be_bytes(p[1..5].try_into().unwrap());
                acked_tx.send_replace(acked);
            }
            t => panic!("unknown datagram type {t}"),
        }
    }
    sender.await.expect("sender");
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// The status and body of a raw HTTP/1.1 response.
#[allow(dead_code)] // not used by client.rs
pub(crate) fn parse_response(out: &str) -> (u16, String) {
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// One raw HTTP/1.1 request; the status and the body as JSON (null if it is not).
#[allow(dead_code)] // not used by every test file
pub(crate) async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let (status, body) = http_text(addr, method, path, body).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// One raw HTTP/1.1 request; the status and the body.
#[allow(dead_code)] // not used by every test file
pub(crate) async fn http_text(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: registry\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .expect("response in time")
        .unwrap();
    parse_response(&out)
}

/// A relay on 127.0.0.1 (a free port) with no limits.
#[allow(dead_code)] // not used by every test file
pub(crate) async fn loopback_relay() -> burrow_relay::RelayServer {
    burrow_relay::RelayServer::start(burrow_relay::RelayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        limits: burrow_relay::Limits::unlimited(),
        ..Default::default()
    })
    .await
    .expect("relay starts")
}
