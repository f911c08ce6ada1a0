//! Endpoints with no relay at all, on loopback: a peer known only by its direct addresses is
//! reached straight away, and strangers' forged pings are ignored.

use std::time::{Duration, Instant};

use burrow::endpoint::{Endpoint, EndpointOptions, PathInfo};
use burrow::ticket::Ticket;
use burrow::SecretKey;
use tokio::time::timeout;

const ALPN: &[u8] = b"burrow-test/1";

async fn endpoint() -> Endpoint {
    Endpoint::bind(
        SecretKey::from_bytes(rand::random()),
        EndpointOptions {
            bind_v4: "127.0.0.1:0".parse().unwrap(),
            bind_v6: None,
            alpns: vec![ALPN.to_vec()],
            ..Default::default()
        },
    )
    .await
    .expect("endpoint binds")
}

#[tokio::test]
async fn without_relays_a_ticket_of_addresses_connects_directly() {
    timeout(Duration::from_secs(20), async {
        let (a, b) = (endpoint().await, endpoint().await);
        let ticket = b.ticket();
        assert!(ticket.relays.is_empty());
        assert_eq!(ticket.addrs, vec![b.local_addr().unwrap()]);

        let accept = tokio::spawn({
            let b = b.clone();
            async move {
                let conn = b.accept().await.expect("an incoming connection");
                let (mut send, mut recv) = conn.quic.accept_bi().await.unwrap();
                let got = recv.read_to_end(1024).await.unwrap();
                send.write_all(&got).await.unwrap();
                send.finish().unwrap();
                let _ = conn.quic.closed().await;
                conn.remote
            }
        });
        let start = Instant::now();
        let conn = a.connect(&ticket, ALPN).await.expect("connects");
        let took = start.elapsed();
        assert_eq!(conn.remote, b.node_id());
        let (mut send, mut recv) = conn.quic.open_bi().await.unwrap();
        send.write_all(b"hello, no relay").await.unwrap();
        send.finish().unwrap();
        assert_eq!(recv.read_to_end(1024).await.unwrap(), b"hello, no relay");
        assert!(
            matches!(a.path(&b.node_id()), PathInfo::Direct(d) if d.addr == b.local_addr().unwrap()),
            "{:?}",
            a.path(&b.node_id())
        );
        eprintln!("connected without a relay in {took:?}");
        // Nothing to wait for: no STUN, no hops to measure, no relay to answer a call. A dial
        // that waited out its 1 s for them, or QUIC's first flight lost (a 1 s PTO), shows.
        assert!(took < Duration::from_millis(500), "took {took:?}");
        conn.quic.close(0u32.into(), b"done");
        assert_eq!(accept.await.unwrap(), a.node_id());
    })
    .await
    .expect("within 20 s");
}

#[tokio::test]
async fn no_relay_and_no_address_is_a_clear_error() {
    let a = endpoint().await;
    let other = SecretKey::from_bytes(rand::random()).node_id();
    let err = a
        .connect(&Ticket::new(other), ALPN)
        .await
        .expect_err("nothing to dial");
    assert!(err.to_string().contains("no way to reach"), "{err}");
}

#[tokio::test]
async fn a_ping_sealed_for_another_key_makes_no_peer() {
    // A stranger that claims a key it does not hold: its packets cannot be opened, so the
    // endpoint keeps no state for it and never accepts its QUIC.
    let b = endpoint().await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let victim = SecretKey::from_bytes(rand::random());
    let liar = SecretKey::from_bytes(rand::random());
    let key = burrow_proto::disco::SharedKey::new(&liar, &b.node_id()).unwrap();
    let ping = burrow_proto::disco::Message::Ping { tx: rand::random() };
    // Sealed with the liar's key but naming the victim as sender.
    let forged = key.seal(&victim.node_id(), &ping, rand::random()).unwrap();
    for _ in 0..200 {
        sock.send_to(&forged, b.local_addr().unwrap())
            .await
            .unwrap();
    }
    let mut buf = [0u8; 1500];
    let answer = timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await;
    assert!(answer.is_err(), "a forged ping got an answer");
}
