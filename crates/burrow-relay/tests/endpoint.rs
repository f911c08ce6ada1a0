//! [`Endpoint`]s and a real relay on loopback: the connection works through the relay at
//! once, moves to the direct path, and the streams carry on across the move; handshakes that
//! strangers start through the relay and never finish delay no genuine accept.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use burrow::endpoint::{Connection, Endpoint, EndpointOptions, PathInfo};
use burrow::relay_client::RelayClient;
use burrow::ticket::Ticket;
use burrow::{NodeId, SecretKey};
use burrow_proto::disco::looks_like_disco;
use burrow_relay::RelayServer;
use common::{endpoint, loopback_relay as relay, ALPN};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

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
        let (a, b) = (endpoint(&relay, None).await, endpoint(&relay, None).await);
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

/// A restarted node: a new endpoint of the same key, on the same port, dials a peer that still
/// holds a live direct path to its old incarnation there (a mesh member's daemon after the
/// short-lived endpoint it joined with). The peer answers the relayed handshake on that path
/// before the new endpoint has claimed the peer's address; those packets must reach QUIC once
/// it has (a moment later), not be dropped and wait for QUIC's probe timeout (about 1 s).
#[tokio::test]
async fn a_restarted_node_on_its_old_port_connects_without_waiting_for_a_resend() {
    timeout(Duration::from_secs(30), async {
        let relay = relay().await;
        let b = endpoint(&relay, None).await;
        tokio::spawn(echo_server(b.clone()));
        let mut ticket = b.ticket();
        ticket.addrs.clear();
        let key = SecretKey::from_bytes(rand::random());
        let old = common::endpoint_with_key(&relay, key.clone(), None).await;
        let port = old.local_addr().unwrap().port();
        let conn = old.connect(&ticket, ALPN).await.expect("connects");
        until_direct(&b, &old.node_id(), Duration::from_secs(5))
            .await
            .expect("b direct to the old incarnation");
        drop(conn);
        old.close().await;
        drop(old);

        // The old endpoint's tasks let go of its socket a moment after it closes.
        let options = EndpointOptions {
            bind_v4: SocketAddr::from(([127, 0, 0, 1], port)),
            bind_v6: None,
            relays: vec![relay.url().parse().unwrap()],
            alpns: vec![ALPN.to_vec()],
            ..Default::default()
        };
        let new = loop {
            match Endpoint::bind(key.clone(), options.clone()).await {
                Ok(ep) => break ep,
                Err(e) => eprintln!("old port not free yet: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let start = Instant::now();
        let conn = new.connect(&ticket, ALPN).await.expect("connects again");
        let (mut send, mut recv) = conn.quic.open_bi().await.unwrap();
        send.write_all(b"back").await.unwrap();
        let mut buf = [0u8; 4];
        recv.read_exact(&mut buf).await.unwrap();
        let took = start.elapsed();
        eprintln!("restarted node: connected and echoed in {took:?}");
        assert!(took < Duration::from_millis(500), "{took:?}");
        new.close().await;
        b.close().await;
    })
    .await
    .expect("test within 30 s");
}

/// Incoming handshakes an endpoint runs at once (burrow's `MAX_HANDSHAKES`).
const MAX_HANDSHAKES: usize = 128;
/// Of those, from one peer address (one key through the relay) (burrow's
/// `MAX_HANDSHAKES_PER_PEER`).
const MAX_HANDSHAKES_PER_PEER: usize = 4;
/// How long an incoming handshake may take (burrow's `HANDSHAKE_TIMEOUT`).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The destination connection id of a QUIC long-header packet (`None` for a short header).
fn long_header_dcid(packet: &[u8]) -> Option<&[u8]> {
    if packet.first()? & 0x80 == 0 {
        return None;
    }
    packet.get(6..6 + usize::from(*packet.get(5)?))
}

/// Starts `n` handshakes at `server` that never finish, and watches them: a stranger's relay
/// client catches `n` QUIC Initials (a genuine burrow client dials the stranger's key `n`
/// times, and the first packet of each connection is kept), and strangers of `per_key`
/// Initials each send them on to `server` and never reply. The watch counts the connections
/// `server` answered (its packets carry each client's connection id).
async fn stall(
    relay: &RelayServer,
    server: NodeId,
    n: usize,
    per_key: usize,
) -> watch::Receiver<usize> {
    let key = SecretKey::from_bytes(rand::random());
    let stranger = RelayClient::new(
        vec![relay.url().parse().unwrap()],
        key.clone(),
        Default::default(),
    );
    stranger
        .wait_connected(Duration::from_secs(5))
        .await
        .expect("stranger connected");
    let dialler = endpoint(relay, None).await;
    let dials: Vec<_> = (0..n)
        .map(|_| {
            let (dialler, ticket) = (dialler.clone(), Ticket::new(key.node_id()));
            tokio::spawn(async move { dialler.connect(&ticket, ALPN).await })
        })
        .collect();
    let mut seen = HashSet::new();
    let mut initials = Vec::new();
    while initials.len() < n {
        let (_, packet, _) = stranger.recv().await.expect("stranger open");
        if !looks_like_disco(&packet)
            && long_header_dcid(&packet).is_some_and(|id| seen.insert(id.to_vec()))
        {
            initials.push(packet);
        }
    }
    for dial in dials {
        dial.abort();
    }
    dialler.close().await;

    drop(stranger);
    let (tx, rx) = watch::channel(0);
    let answered = std::sync::Arc::new(std::sync::Mutex::new(HashSet::new()));
    for chunk in initials.chunks(per_key) {
        let sender = RelayClient::new(
            vec![relay.url().parse().unwrap()],
            SecretKey::from_bytes(rand::random()),
            Default::default(),
        );
        sender
            .wait_connected(Duration::from_secs(5))
            .await
            .expect("stranger connected");
        for packet in chunk {
            sender
                .send_wait(server, packet.clone())
                .await
                .expect("relayed");
        }
        let (tx, answered) = (tx.clone(), answered.clone());
        tokio::spawn(async move {
            while let Some((src, packet, _)) = sender.recv().await {
                if let Some(id) = long_header_dcid(&packet).filter(|_| src == server) {
                    let mut a = answered.lock().unwrap();
                    if a.insert(id.to_vec()) {
                        tx.send_replace(a.len());
                    }
                }
            }
        });
    }
    rx
}

/// Connections an endpoint accepted, with when.
type Accepted = mpsc::UnboundedReceiver<(Connection, Instant)>;

/// Every connection `server` accepts, with when.
fn accepts(server: Endpoint) -> Accepted {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(conn) = server.accept().await {
            let _ = tx.send((conn, Instant::now()));
        }
    });
    rx
}

/// How long a fresh client's dial takes until `server` accepts it: `Err` if the dial fails or
/// the accept takes over 5 s.
async fn accept_latency(
    relay: &RelayServer,
    server: NodeId,
    accepted: &mut Accepted,
) -> Result<Duration, String> {
    let client = endpoint(relay, None).await;
    let start = Instant::now();
    let failed = async {
        match client.connect(&Ticket::new(server), ALPN).await {
            // The dialler's half ends first: the server accepts on its last flight.
            Ok(_held) => std::future::pending().await,
            Err(e) => format!("dial failed: {e}"),
        }
    };
    let accept = async {
        loop {
            let (conn, at) = accepted.recv().await.expect("server open");
            if conn.remote == client.node_id() {
                return at - start;
            }
        }
    };
    let result = tokio::select! {
        took = accept => Ok(took),
        e = failed => Err(e),
        _ = tokio::time::sleep(Duration::from_secs(5)) => Err("not accepted within 5 s".into()),
    };
    client.close().await;
    result
}

/// The median of three accept latencies.
async fn median_accept_latency(
    relay: &RelayServer,
    server: NodeId,
    accepted: &mut Accepted,
) -> Duration {
    let mut took = Vec::new();
    for _ in 0..3 {
        took.push(
            accept_latency(relay, server, accepted)
                .await
                .expect("accepted"),
        );
    }
    took.sort();
    took[1]
}

#[tokio::test]
async fn a_hundred_stalled_handshakes_delay_a_genuine_accept_by_under_100_ms() {
    const STALLED: usize = 100;
    timeout(Duration::from_secs(60), async {
        let relay = relay().await;
        let server = endpoint(&relay, None).await;
        let mut accepted = accepts(server.clone());
        let quiet = median_accept_latency(&relay, server.node_id(), &mut accepted).await;

        let mut answered = stall(&relay, server.node_id(), STALLED, MAX_HANDSHAKES_PER_PEER).await;
        // Every stalled handshake is under way (the server answered its Initial) before the
        // genuine dials start; on a serial accept only the first would be.
        let _ = timeout(Duration::from_secs(3), answered.wait_for(|&n| n >= STALLED)).await;
        let busy = median_accept_latency(&relay, server.node_id(), &mut accepted).await;
        eprintln!(
            "accept latency (median of 3): {quiet:?} quiet, {busy:?} beside {} stalled handshakes",
            *answered.borrow()
        );
        assert_eq!(
            *answered.borrow(),
            STALLED,
            "the server answered every stalled Initial"
        );
        assert!(
            busy.saturating_sub(quiet) < Duration::from_millis(100),
            "{STALLED} stalled handshakes delayed a genuine accept from {quiet:?} to {busy:?}"
        );
        server.close().await;
    })
    .await
    .expect("test within 60 s");
}

#[tokio::test]
async fn past_the_cap_new_handshakes_are_refused_until_the_stalled_ones_time_out() {
    timeout(Duration::from_secs(60), async {
        let relay = relay().await;
        let server = endpoint(&relay, None).await;
        let mut accepted = accepts(server.clone());
        let mut answered = stall(
            &relay,
            server.node_id(),
            MAX_HANDSHAKES + 2,
            MAX_HANDSHAKES_PER_PEER,
        )
        .await;
        let stalled_at = Instant::now();
        // The cap's worth under way, the two past it refused (a close, also an answer).
        timeout(
            Duration::from_secs(5),
            answered.wait_for(|&n| n == MAX_HANDSHAKES + 2),
        )
        .await
        .expect("every Initial answered")
        .unwrap();

        let refused = accept_latency(&relay, server.node_id(), &mut accepted).await;
        eprintln!("a genuine dial beside {MAX_HANDSHAKES} stalled handshakes: {refused:?}");
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("refused")),
            "{refused:?}"
        );

        // Once the stalled handshakes time out, their slots are free again.
        let back = loop {
            match accept_latency(&relay, server.node_id(), &mut accepted).await {
                Ok(_) => break stalled_at.elapsed(),
                Err(_) if stalled_at.elapsed() < HANDSHAKE_TIMEOUT + Duration::from_secs(5) => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => panic!(
                    "still refused {:?} after the stall: {e}",
                    stalled_at.elapsed()
                ),
            }
        };
        eprintln!("accepting again {back:?} after the stall");
        assert!(
            back >= HANDSHAKE_TIMEOUT - Duration::from_secs(1),
            "{back:?}"
        );
        server.close().await;
    })
    .await
    .expect("test within 60 s");
}

#[tokio::test]
async fn one_stranger_key_holds_no_more_than_its_share_of_the_handshakes() {
    timeout(Duration::from_secs(60), async {
        let relay = relay().await;
        let server = endpoint(&relay, None).await;
        let mut accepted = accepts(server.clone());
        // One key sends the cap's worth and more: all but its share are refused at once.
        let mut answered = stall(&relay, server.node_id(), MAX_HANDSHAKES + 2, usize::MAX).await;
        timeout(
            Duration::from_secs(5),
            answered.wait_for(|&n| n == MAX_HANDSHAKES + 2),
        )
        .await
        .expect("every Initial answered")
        .unwrap();
        let took = accept_latency(&relay, server.node_id(), &mut accepted).await;
        eprintln!(
            "a genuine dial beside one key's {} stalled Initials: {took:?}",
            MAX_HANDSHAKES + 2
        );
        assert!(took.is_ok(), "{took:?}");
        server.close().await;
    })
    .await
    .expect("test within 60 s");
}
