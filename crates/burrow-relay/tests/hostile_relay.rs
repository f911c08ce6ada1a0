//! A hostile relay in a node's relay list cannot log in as that node at another relay (issue 13,
//! finding 6). The hostile relay here is a real WebSocket server on loopback that, for each
//! client, dials a genuine relay and passes every message both ways unchanged: the genuine
//! relay's challenge to the victim, the victim's signed ClientAuth back. The victim is the
//! library's `RelayClient`, which only knows the hostile relay's URL (or that one and the
//! genuine relay's). Honest clients connecting directly are the positive control.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use burrow::relay_client::{RelayClient, RelayConnState, RelayUrl};
use burrow::SecretKey;
use burrow_proto::relay::Frame;
use common::{datagram, exchange, loopback_relay, Plan};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

fn key(n: u8) -> SecretKey {
    SecretKey::from_bytes([n; 32])
}

/// What the genuine relay answered to a ClientAuth that the hostile relay passed on.
#[derive(Debug, PartialEq)]
enum Answer {
    /// It took the victim's key: the hostile relay holds a session as the victim.
    AuthOk,
    /// It closed the connection with this code and reason.
    Closed(u16, String),
}

/// A hostile relay on loopback that hands every client's messages to the relay at `target`
/// and back, and reports what `target` answered to each forwarded ClientAuth.
async fn proxying_relay(target: SocketAddr) -> (RelayUrl, mpsc::UnboundedReceiver<Answer>) {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(victim) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                let Ok((genuine, _)) =
                    tokio_tungstenite::connect_async(format!("ws://{target}/relay")).await
                else {
                    return;
                };
                let (mut to_victim, mut from_victim) = victim.split();
                let (mut to_genuine, mut from_genuine) = genuine.split();
                let up = async {
                    while let Some(Ok(m)) = from_victim.next().await {
                        if to_genuine.send(m).await.is_err() {
                            break;
                        }
                    }
                };
                let down = async {
                    while let Some(Ok(m)) = from_genuine.next().await {
                        match &m {
                            Message::Binary(b) => {
                                if let Ok(Frame::AuthOk { .. }) = Frame::decode(b) {
                                    let _ = tx.send(Answer::AuthOk);
                                }
                            }
                            Message::Close(f) => {
                                let (code, reason) = f
                                    .as_ref()
                                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                                    .unwrap_or_default();
                                let _ = tx.send(Answer::Closed(code, reason));
                            }
                            _ => {}
                        }
                        if to_victim.send(m).await.is_err() {
                            break;
                        }
                    }
                };
                tokio::select! {
                    _ = up => {}
                    _ = down => {}
                }
            });
        }
    });
    (url, rx)
}

/// The next answer the hostile relay saw.
async fn next_answer(rx: &mut mpsc::UnboundedReceiver<Answer>) -> Answer {
    timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the hostile relay passed on a ClientAuth in time")
        .expect("hostile relay running")
}

fn payload(tag: u8, seq: u32) -> Vec<u8> {
    datagram(tag, seq, 200, |i| i as u8 ^ tag)
}

const PLAN: Plan = Plan {
    per_direction: 200,
    window: 32,
    ack_every: 8,
    payload,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxying_relay_cannot_log_in_as_its_client_elsewhere() {
    timeout(Duration::from_secs(60), async {
        let genuine = loopback_relay().await;
        let genuine_url: RelayUrl = genuine.url().parse().unwrap();
        // The positive control: an honest client logs in directly.
        let peer = RelayClient::new(vec![genuine_url.clone()], key(2), Default::default());
        peer.wait_connected(Duration::from_secs(5))
            .await
            .expect("an honest client logs in");

        let (hostile_url, mut answers) = proxying_relay(genuine.local_addr()).await;
        let victim = RelayClient::new(vec![hostile_url.clone()], key(1), Default::default());
        // The genuine relay refuses the victim's signature, which names the relay it dialled.
        for _ in 0..2 {
            match next_answer(&mut answers).await {
                Answer::Closed(1008, reason) => assert!(
                    reason.contains(&hostile_url.to_string()),
                    "the refusal names the relay the client signed for: {reason}"
                ),
                other => panic!("the genuine relay answered {other:?} to a proxied ClientAuth"),
            }
        }
        let stats = genuine.stats();
        assert_eq!(stats.clients, 1, "only the honest client has a session");
        assert!(stats.auth_failures >= 2, "{stats:?}");
        assert!(
            !matches!(
                victim.state().borrow().relays[0].state,
                RelayConnState::Connected { .. }
            ),
            "the victim never thinks it is connected"
        );
        victim.close().await;
        peer.close().await;
        genuine.shutdown().await;
    })
    .await
    .expect("test in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxying_relay_cannot_displace_its_clients_session_elsewhere() {
    timeout(Duration::from_secs(60), async {
        let genuine = loopback_relay().await;
        let genuine_url: RelayUrl = genuine.url().parse().unwrap();
        let (hostile_url, mut answers) = proxying_relay(genuine.local_addr()).await;
        let peer = RelayClient::new(vec![genuine_url.clone()], key(2), Default::default());
        // The victim holds both: the genuine relay directly, and the hostile one.
        let victim = RelayClient::new(
            vec![genuine_url.clone(), hostile_url.clone()],
            key(1),
            Default::default(),
        );
        for c in [&peer, &victim] {
            c.wait_connected(Duration::from_secs(5)).await.unwrap();
        }
        for _ in 0..2 {
            let answer = next_answer(&mut answers).await;
            assert!(
                matches!(answer, Answer::Closed(1008, _)),
                "the genuine relay answered {answer:?} to a proxied ClientAuth"
            );
        }
        // The victim's own session at the genuine relay was never replaced, and carries its
        // traffic both ways.
        let (kv, kp) = (key(1).node_id(), key(2).node_id());
        let via = Some(genuine_url.clone());
        let (rv, rp) = tokio::join!(
            tokio::spawn(exchange(victim.clone(), 0xa, kp, 0xb, via.clone(), &PLAN)),
            tokio::spawn(exchange(peer.clone(), 0xb, kv, 0xa, via, &PLAN)),
        );
        rv.expect("victim");
        rp.expect("peer");
        let state = victim.state().borrow().clone();
        assert_eq!(state.relays[0].connects, 1, "{state:?}");
        assert_eq!(state.relays[1].connects, 0, "{state:?}");
        let stats = genuine.stats();
        assert_eq!(stats.closes_for("replaced"), 0, "{stats:?}");
        assert_eq!(stats.clients, 2, "{stats:?}");
        victim.close().await;
        peer.close().await;
        genuine.shutdown().await;
    })
    .await
    .expect("test in time");
}
