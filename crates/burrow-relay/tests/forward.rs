//! Programs' traffic between mesh nodes on loopback through a real relay: a TCP port one member
//! exposes, reached through the other's forward at the member's stable address, with bytes
//! intact both ways, half-close and reset carried across; a port not exposed, nothing listening
//! and a kicked member each refused at once; forwards set up again after a restart. Programs'
//! datagrams and streams between members.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use burrow::mesh::forward::stable_address;
use burrow::mesh::node::{MeshNode, NodeError};
use burrow::mesh::state::MeshState;
use burrow_proto::relay::RelayUrl;
use common::loopback_relay as relay;
use common::mesh::{all_online, dir, joined, joined_in, opts, restart, start_from};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// A TCP server on 127.0.0.1 that reads each connection to its end, then answers with the
/// SHA-256 of what it read and closes: a half-close must cross both ways for it to answer.
async fn digest_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                if tcp.read_to_end(&mut got).await.is_ok() {
                    let _ = tcp.write_all(&Sha256::digest(&got)).await;
                }
            });
        }
    });
    port
}

/// Sends `data` to `at`, half-closes, and reads the answer to its end.
async fn exchange(at: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut tcp = TcpStream::connect(at).await?;
    tcp.write_all(data).await?;
    tcp.shutdown().await?;
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await?;
    Ok(answer)
}

/// Connects to `at` and reads: the forward must reset the connection at once, and this says
/// how long that took.
async fn reset_within(at: SocketAddr, limit: Duration) -> Duration {
    let start = Instant::now();
    let read = async {
        // The reset may come before the connect has returned.
        let mut tcp = TcpStream::connect(at).await?;
        tcp.read(&mut [0u8; 16]).await
    };
    match timeout(limit, read).await {
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => start.elapsed(),
        other => panic!("not reset within {limit:?}: {other:?}"),
    }
}

/// A free port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn admin(url: &RelayUrl, at: &std::path::Path) -> MeshNode {
    let state = MeshState::init(at, "lab", None, vec![url.clone()]).expect("init");
    MeshNode::start(state, opts()).await.expect("a starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_port_carries_tcp_and_refuses_what_it_must_at_once() {
    timeout(Duration::from_secs(90), async {
        let relay = relay().await;
        let url: RelayUrl = relay.url().parse().unwrap();
        let a_dir = dir("fwd-a");
        let a = admin(&url, &a_dir).await;
        let b = joined(&url, &a, "b").await;
        let c = joined(&url, &a, "c").await;
        assert!(all_online(&a, &["b", "c"], Duration::from_secs(10)).await);

        // B exposes a server; A reaches it at B's stable address, the same on every machine.
        let port = digest_server().await;
        b.expose(port, Some("digest".into())).unwrap();
        let f = a.forward("b", port, None).await.expect("forwards");
        let b_number = b.members().iter().find(|m| m.me).unwrap().number;
        assert_eq!(Some(f.local), stable_address(b_number, port));
        assert_eq!(f.node_id, b.endpoint().node_id());

        // 4 MB one way, the digest back: both half-closes crossed, every byte intact.
        let data: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
        let start = Instant::now();
        let answer = exchange(f.local, &data).await.expect("the exchange");
        assert_eq!(answer, Sha256::digest(&data).to_vec());
        eprintln!(
            "4 MB through the forward and the digest back in {:?}",
            start.elapsed()
        );
        // Several at once.
        let runs = (0..8u8).map(|i| {
            let data = vec![i; 100_000 + usize::from(i)];
            async move {
                (
                    exchange(f.local, &data).await.unwrap(),
                    Sha256::digest(&data),
                )
            }
        });
        for (got, want) in futures_util::future::join_all(runs).await {
            assert_eq!(got, want.to_vec());
        }

        // Not exposed, and exposed with nothing listening: reset at once.
        let unexposed = a.forward("b", closed_port(), None).await.unwrap();
        let took = reset_within(unexposed.local, Duration::from_secs(1)).await;
        eprintln!("a port not exposed: reset after {took:?}");
        let nothing = closed_port();
        b.expose(nothing, None).unwrap();
        let silent = a.forward("b", nothing, None).await.unwrap();
        reset_within(silent.local, Duration::from_secs(1)).await;

        // The exposed server resets its side: the program at the forward sees a reset too.
        let resetter = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rport = resetter.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (tcp, _) = resetter.accept().await.unwrap();
            socket2::SockRef::from(&tcp)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(tcp);
        });
        b.expose(rport, None).unwrap();
        let r = a.forward("b", rport, None).await.unwrap();
        reset_within(r.local, Duration::from_secs(2)).await;

        // Taking the port back: the next connection is refused.
        b.unexpose(port).unwrap();
        reset_within(f.local, Duration::from_secs(1)).await;
        b.expose(port, None).unwrap();

        // Errors: an unknown member, a forward where one listens already.
        assert!(matches!(
            a.forward("nobody", port, None).await,
            Err(NodeError::NoMember(_))
        ));
        assert!(matches!(
            a.forward("b", port, Some(f.local)).await,
            Err(NodeError::Forward(_))
        ));

        // A restarted node listens on its forwards again, and they carry.
        let a = restart(a, &a_dir, opts()).await;
        assert!(a.forwards().iter().any(|g| g.local == f.local));
        assert!(all_online(&a, &["b"], Duration::from_secs(10)).await);
        // Right after a restart both ends may dial at once: a connection riding the dial that
        // loses goes on all the same.
        let answer = exchange(f.local, b"after the restart").await.unwrap();
        assert_eq!(answer, Sha256::digest(b"after the restart").to_vec());

        // A kicked member: C's forward to it is refused at once (not after a wait for a
        // connection that will never come).
        let to_b = c
            .forward("b", port, Some("127.0.0.1:0".parse().unwrap()))
            .await
            .unwrap();
        assert_eq!(
            exchange(to_b.local, b"x").await.unwrap(),
            Sha256::digest(b"x").to_vec()
        );
        a.kick("b").unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        while c.members().iter().any(|m| m.name == "b") {
            assert!(
                Instant::now() < deadline,
                "c still lists b 2 s after the kick"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = reset_within(to_b.local, Duration::from_secs(1)).await;
        eprintln!("a kicked member: reset after {took:?}");
        for n in [a, b, c] {
            n.shutdown().await;
        }
    })
    .await
    .expect("test within 90 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn programs_send_datagrams_and_streams_to_members() {
    timeout(Duration::from_secs(60), async {
        let relay = relay().await;
        let url: RelayUrl = relay.url().parse().unwrap();
        let a = admin(&url, &dir("apps-a")).await;
        let b = joined(&url, &a, "b").await;
        assert!(all_online(&a, &["b"], Duration::from_secs(10)).await);
        let a_name = a.members().into_iter().find(|m| m.me).unwrap().name;

        // 100 datagrams, each its own bytes, all there (loopback loses none at this pace).
        let mut got = b.datagrams();
        for i in 0..100u8 {
            a.send_datagram("b", &[i; 700]).unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for i in 0..100u8 {
            let (from, data) = timeout(Duration::from_secs(5), got.recv())
                .await
                .expect("a datagram in time")
                .unwrap();
            assert_eq!(from, a.endpoint().node_id());
            assert_eq!(&data[..], &[i; 700][..]);
        }
        assert!(matches!(
            a.send_datagram("b", &vec![0; 70_000]),
            Err(NodeError::DatagramTooLarge { .. })
        ));
        assert!(matches!(
            b.send_datagram("nobody", b"x"),
            Err(NodeError::NoMember(_))
        ));

        // A 10 MB stream from B to a program accepting on A, its digest back.
        let acceptor = {
            let a = a.clone();
            tokio::spawn(async move {
                let mut s = a.accept_stream().await;
                let got = s.recv.read_to_end(20_000_000).await.unwrap();
                s.send.write_all(&Sha256::digest(&got)).await.unwrap();
                s.send.finish().unwrap();
                s.member
            })
        };
        let data: Vec<u8> = (0..10_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
        let mut s = b.open_stream(&a_name).await.expect("accepted");
        assert_eq!(s.member, a.endpoint().node_id());
        s.send.write_all(&data).await.unwrap();
        s.send.finish().unwrap();
        let digest = s.recv.read_to_end(64).await.unwrap();
        assert_eq!(digest, Sha256::digest(&data).to_vec());
        assert_eq!(acceptor.await.unwrap(), b.endpoint().node_id());
        a.shutdown().await;
        b.shutdown().await;
    })
    .await
    .expect("test within 60 s");
}

/// Sends 1 MB on a program's stream to `other` opened the moment `node` has a connection to
/// it, in pieces over half a second, and checks the digest the other end answers with.
async fn stream_as_soon_as_connected(node: MeshNode, other: String) {
    let mut s = loop {
        match node.open_stream(&other).await {
            Ok(s) => break s,
            Err(NodeError::Offline(_)) => tokio::time::sleep(Duration::from_millis(1)).await,
            Err(e) => panic!("opening a stream to {other}: {e}"),
        }
    };
    let piece = vec![7u8; 50_000];
    for _ in 0..20 {
        s.send.write_all(&piece).await.expect("the stream goes on");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    s.send.finish().unwrap();
    let digest = s.recv.read_to_end(64).await.expect("the digest");
    assert_eq!(digest, Sha256::digest(piece.repeat(20)).to_vec());
}

/// Answers every program's stream `node` accepts with the digest of what it read.
async fn digest_streams(node: MeshNode) {
    loop {
        let mut s = node.accept_stream().await;
        tokio::spawn(async move {
            let got = s.recv.read_to_end(2_000_000).await.unwrap();
            s.send.write_all(&Sha256::digest(&got)).await.unwrap();
            s.send.finish().unwrap();
            let _ = s.send.stopped().await;
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_riding_either_of_two_crossed_dials_go_on() {
    timeout(Duration::from_secs(90), async {
        let relay = relay().await;
        let url: RelayUrl = relay.url().parse().unwrap();
        let (a_dir, b_dir) = (dir("crossed-a"), dir("crossed-b"));
        let mut a = admin(&url, &a_dir).await;
        let mut b = joined_in(&b_dir, &url, &a, "b", opts()).await;
        assert!(all_online(&a, &["b"], Duration::from_secs(10)).await);
        let a_name = a.members().into_iter().find(|m| m.me).unwrap().name;
        // Started at once, both dial at once: two connections meet, and each node opens its
        // stream on the first it has, which may be the one both then retire.
        for _ in 0..4 {
            a.shutdown().await;
            b.shutdown().await;
            // Their keys are free once they are gone.
            drop((a, b));
            (a, b) = tokio::join!(start_from(&a_dir, opts()), start_from(&b_dir, opts()));
            let acceptors = [a.clone(), b.clone()].map(|n| tokio::spawn(digest_streams(n)));
            tokio::join!(
                stream_as_soon_as_connected(a.clone(), "b".into()),
                stream_as_soon_as_connected(b.clone(), a_name.clone())
            );
            // Joined, so that the nodes they hold are gone before the restart.
            for t in acceptors {
                t.abort();
                let _ = t.await;
            }
        }
        a.shutdown().await;
        b.shutdown().await;
    })
    .await
    .expect("test within 90 s");
}
