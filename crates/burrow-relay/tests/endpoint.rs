//! Two [`Endpoint`]s and a real relay on loopback: the connection works through the relay at
//! once, moves to the direct path, and the streams carry on across the move.

mod common;

use std::time::{Duration, Instant};

use burrow::endpoint::{Endpoint, EndpointOptions, PathInfo};
use burrow::SecretKey;
use burrow_relay::RelayServer;
use common::loopback_relay as relay;
use tokio::time::timeout;

const ALPN: &[u8] = b"burrow-test/1";

async fn endpoint(relay: &RelayServer) -> Endpoint {
    let ep = Endpoint::bind(
        SecretKey::from_bytes(rand::random()),
        EndpointOptions {
            bind_v4: "127.0.0.1:0".parse().unwrap(),
            bind_v6: None,
            relays: vec![relay.url().parse().unwrap()],
            alpns: vec![ALPN.to_vec()],
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

/// Waits until `ep` reaches `peer` directly, or `limit` passes.
async fn until_direct(ep: &Endpoint, peer: &burrow::NodeId, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    timeout(limit, async {
        loop {
            if let PathInfo::Direct(_) = ep.path(peer) {
                return start.elapsed();
            }
            ep.path_changed().await;
        }
    })
    .await
    .ok()
}

async fn echo_server(ep: Endpoint) {
    while let Some(conn) = ep.accept().await {
        tokio::spawn(async move {
            while let Ok((mut send, mut recv)) = conn.quic.accept_bi().await {
                tokio::spawn(async move {
                    while let Ok(Some(chunk)) = recv.read_chunk(64 * 1024, true).await {
                        if send.write_all(&chunk.bytes).await.is_err() {
                            return;
                        }
                    }
                    let _ = send.finish();
                });
            }
        });
    }
}

#[tokio::test]
async fn relay_first_then_direct_with_one_stream_across_the_move() {
    timeout(Duration::from_secs(30), async {
        let relay = relay().await;
        let (a, b) = (endpoint(&relay).await, endpoint(&relay).await);
        tokio::spawn(echo_server(b.clone()));
        // A ticket with the relay only: the direct addresses come through the punching.
        let mut ticket = b.ticket();
        ticket.addrs.clear();

        let conn = a.connect(&ticket, ALPN).await.expect("connects");
        assert_eq!(conn.remote, b.node_id());
        let (mut send, mut recv) = conn.quic.open_bi().await.unwrap();
        send.write_all(b"over the relay").await.unwrap();
        let mut buf = [0u8; 14];
        recv.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"over the relay");

        let took = until_direct(&a, &b.node_id(), Duration::from_secs(5))
            .await
            .expect("direct within 5 s");
        let PathInfo::Direct(path) = a.path(&b.node_id()) else {
            unreachable!()
        };
        assert_eq!(path.addr, b.local_addr().unwrap());
        until_direct(&b, &a.node_id(), Duration::from_secs(5))
            .await
            .expect("b direct too");
        eprintln!("direct after {took:?}, rtt {:?}", path.rtt);

        // The same stream, now on the direct path: 4 MB echoed intact.
        let data: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let data = data.clone();
            tokio::spawn(async move {
                send.write_all(&data).await.unwrap();
                send.finish().unwrap();
            })
        };
        let echoed = recv.read_to_end(8_000_000).await.unwrap();
        writer.await.unwrap();
        assert!(echoed == data, "echo differs");
        a.close().await;
        b.close().await;
    })
    .await
    .expect("test within 30 s");
}
