//! The library's relay client against real relay servers on loopback: delivery, restart,
//! failover, state, bounded queues, dead-connection detection and TLS.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use burrow::relay_client::{
    RelayClient, RelayClientOptions, RelayClientState, RelayConnState, RelayEvent, RelayUrl,
    SendError, WaitError,
};
use burrow::{NodeId, SecretKey};
use burrow_proto::relay::{auth, Frame, PROTOCOL_VERSION};
use burrow_relay::{Limits, RelayConfig, RelayServer, TlsFiles};
use bytes::Bytes;
use common::{datagram, exchange, Plan};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::oneshot;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

fn key(n: u8) -> SecretKey {
    SecretKey::from_bytes([n; 32])
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn start_relay(listen: SocketAddr) -> RelayServer {
    RelayServer::start(RelayConfig {
        listen,
        limits: Limits::unlimited(),
        ..Default::default()
    })
    .await
    .expect("relay starts")
}

fn url_of(server: &RelayServer) -> RelayUrl {
    server.url().parse().expect("relay URL parses")
}

async fn wait_state(
    client: &RelayClient,
    within: Duration,
    what: &str,
    f: impl FnMut(&RelayClientState) -> bool,
) -> RelayClientState {
    let mut rx = client.state();
    let result = timeout(within, rx.wait_for(f)).await;
    match result {
        Ok(Ok(s)) => s.clone(),
        _ => panic!(
            "{what}: not reached within {within:?}; state: {:#?}",
            *client.state().borrow()
        ),
    }
}

async fn recv_within(client: &RelayClient, within: Duration) -> (NodeId, Bytes, RelayUrl) {
    timeout(within, client.recv())
        .await
        .expect("a datagram in time")
        .expect("client open")
}

// ---------------------------------------------------------------------------------------------
// 100,000 datagrams

const PER_DIRECTION: u32 = 50_000;
const PLAN: Plan = Plan {
    per_direction: PER_DIRECTION,
    window: 128,
    ack_every: 32,
    payload,
};

fn payload(tag: u8, seq: u32) -> Vec<u8> {
    let len = if seq % 1000 == 999 {
        60_000
    } else {
        6 + (seq as usize * 7919) % 1400
    };
    datagram(tag, seq, len, |i| (seq as u8).wrapping_add(i as u8) ^ tag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_exchange_100k_datagrams_without_loss() {
    timeout(Duration::from_secs(120), async {
        let relay = start_relay(loopback()).await;
        let url = url_of(&relay);
        let a = RelayClient::new(vec![url.clone()], key(1), Default::default());
        let b = RelayClient::new(vec![url.clone()], key(2), Default::default());
        let bystander = RelayClient::new(vec![url.clone()], key(3), Default::default());
        for c in [&a, &b, &bystander] {
            assert_eq!(
                c.wait_connected(Duration::from_secs(5)).await,
                Ok(url.clone())
            );
        }
        let started = Instant::now();
        let (ra, rb) = tokio::join!(
            tokio::spawn(exchange(a.clone(), 0xa, key(2).node_id(), 0xb, None, &PLAN)),
            tokio::spawn(exchange(b.clone(), 0xb, key(1).node_id(), 0xa, None, &PLAN)),
        );
        ra.expect("a");
        rb.expect("b");
        let took = started.elapsed();
        eprintln!(
            "100,000 datagrams (plus acks) through the relay in {took:?} ({:.0}/s)",
            f64::from(2 * PER_DIRECTION) / took.as_secs_f64()
        );
        // Nobody else got any of it, and both stayed connected throughout.
        assert!(timeout(Duration::from_millis(200), bystander.recv())
            .await
            .is_err());
        for c in [&a, &b] {
            assert_eq!(c.state().borrow().relays[0].connects, 1);
        }
        let drops = relay.stats();
        eprintln!("relay stats: {drops:?}");
        a.close().await;
        b.close().await;
        bystander.close().await;
        relay.shutdown().await;
    })
    .await
    .expect("test timed out");
}

// ---------------------------------------------------------------------------------------------
// Restart

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reconnect_within_2s_after_a_relay_restart() {
    timeout(Duration::from_secs(30), async {
        let relay = start_relay(loopback()).await;
        let addr = relay.local_addr();
        let url = url_of(&relay);
        let a = RelayClient::new(vec![url.clone()], key(1), Default::default());
        let b = RelayClient::new(vec![url.clone()], key(2), Default::default());
        a.wait_connected(Duration::from_secs(5)).await.unwrap();
        b.wait_connected(Duration::from_secs(5)).await.unwrap();
        a.send(key(2).node_id(), Bytes::from_static(b"before"))
            .unwrap();
        let (src, p, _) = recv_within(&b, Duration::from_secs(2)).await;
        assert_eq!((src, &p[..]), (key(1).node_id(), &b"before"[..]));

        relay.shutdown().await;
        for c in [&a, &b] {
            wait_state(c, Duration::from_secs(3), "disconnected", |s| {
                s.home.is_none()
            })
            .await;
            assert_eq!(
                c.send(key(9).node_id(), Bytes::new()),
                Err(SendError::NoRelay)
            );
        }

        let relay = start_relay(addr).await;
        let up = Instant::now();
        for c in [&a, &b] {
            wait_state(c, Duration::from_secs(2), "reconnected", |s| {
                s.relays[0].connects == 2 && s.home.is_some()
            })
            .await;
        }
        eprintln!(
            "both clients reconnected {:?} after the relay came back",
            up.elapsed()
        );
        assert!(up.elapsed() < Duration::from_secs(2));

        a.send(key(2).node_id(), Bytes::from_static(b"after"))
            .unwrap();
        let (src, p, via) = recv_within(&b, Duration::from_secs(2)).await;
        assert_eq!((src, &p[..], via), (key(1).node_id(), &b"after"[..], url));
        b.send(key(1).node_id(), Bytes::from_static(b"back"))
            .unwrap();
        let (src, p, _) = recv_within(&a, Duration::from_secs(2)).await;
        assert_eq!((src, &p[..]), (key(2).node_id(), &b"back"[..]));
        a.close().await;
        b.close().await;
        relay.shutdown().await;
    })
    .await
    .expect("test timed out");
}

// ---------------------------------------------------------------------------------------------
// Failover

/// A relay in a runtime of its own, which can be killed without any goodbye: the runtime is
/// dropped, so every socket closes at once, as when the process dies.
struct KillableRelay {
    url: RelayUrl,
    kill: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KillableRelay {
    async fn start() -> KillableRelay {
        let (url_tx, url_rx) = oneshot::channel();
        let (kill, kill_rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let relay = start_relay(loopback()).await;
                let _ = url_tx.send(url_of(&relay));
                let _ = kill_rx.await;
                // Leaked into the dying runtime: no graceful shutdown, no restart notice.
                std::mem::forget(relay);
            });
            rt.shutdown_timeout(Duration::ZERO);
        });
        KillableRelay {
            url: url_rx.await.expect("relay thread starts"),
            kill: Some(kill),
            thread: Some(thread),
        }
    }

    fn kill(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().expect("relay thread");
        }
    }
}

impl Drop for KillableRelay {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_home_relay_moves_traffic_to_the_other() {
    timeout(Duration::from_secs(30), async {
        let mut relays = [KillableRelay::start().await, KillableRelay::start().await];
        let urls = vec![relays[0].url.clone(), relays[1].url.clone()];
        let a = RelayClient::new(urls.clone(), key(1), Default::default());
        let b = RelayClient::new(urls.clone(), key(2), Default::default());
        for c in [&a, &b] {
            wait_state(c, Duration::from_secs(5), "both relays measured", |s| {
                s.relays
                    .iter()
                    .all(|r| matches!(r.state, RelayConnState::Connected { rtt: Some(_), .. }))
            })
            .await;
        }
        let home = a.wait_connected(Duration::ZERO).await.unwrap();
        let (dead, other) = if home == urls[0] { (0, 1) } else { (1, 0) };

        a.send(key(2).node_id(), Bytes::from_static(b"via home"))
            .unwrap();
        let (_, p, via) = recv_within(&b, Duration::from_secs(2)).await;
        assert_eq!((&p[..], &via), (&b"via home"[..], &home));

        relays[dead].kill();
        let killed = Instant::now();
        let s = wait_state(&a, Duration::from_secs(2), "failover", |s| {
            s.home.as_ref() == Some(&urls[other])
        })
        .await;
        eprintln!("home moved {:?} after the kill", killed.elapsed());
        assert!(matches!(
            s.relays[dead].state,
            RelayConnState::Connecting { .. } | RelayConnState::Backoff { .. }
        ));
        // b may have had either home; it must now be on the survivor too.
        wait_state(&b, Duration::from_secs(2), "b failover", |s| {
            s.home.as_ref() == Some(&urls[other])
        })
        .await;

        a.send(key(2).node_id(), Bytes::from_static(b"after kill"))
            .unwrap();
        let (src, p, via) = recv_within(&b, Duration::from_secs(2)).await;
        assert_eq!(
            (src, &p[..], &via),
            (key(1).node_id(), &b"after kill"[..], &urls[other])
        );
        b.send(key(1).node_id(), Bytes::from_static(b"reply"))
            .unwrap();
        let (_, p, via) = recv_within(&a, Duration::from_secs(2)).await;
        assert_eq!((&p[..], &via), (&b"reply"[..], &urls[other]));
        a.close().await;
        b.close().await;
    })
    .await
    .expect("test timed out");
}

// ---------------------------------------------------------------------------------------------
// State and bounded queues

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_reports_backoff_then_connection_then_close() {
    timeout(Duration::from_secs(30), async {
        // A port nobody listens on (yet).
        let addr = std::net::TcpListener::bind(loopback())
            .unwrap()
            .local_addr()
            .unwrap();
        let url: RelayUrl = format!("http://{addr}").parse().unwrap();
        let c = RelayClient::new(vec![url.clone()], key(1), Default::default());
        let s = wait_state(&c, Duration::from_secs(5), "two failed attempts", |s| {
            matches!(s.relays[0].state, RelayConnState::Backoff { attempt, .. } if attempt >= 2)
        })
        .await;
        match &s.relays[0].state {
            RelayConnState::Backoff { error, .. } => {
                assert!(error.contains("connect"), "{error}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.home, None);
        assert_eq!(s.relays[0].connects, 0);
        assert_eq!(
            c.send(key(2).node_id(), Bytes::from_static(b"x")),
            Err(SendError::NoRelay)
        );
        assert_eq!(
            c.send(key(2).node_id(), vec![0; 70_000].into()),
            Err(SendError::TooLarge(70_000))
        );
        assert_eq!(
            c.wait_connected(Duration::from_millis(100)).await,
            Err(WaitError::Timeout(Duration::from_millis(100)))
        );

        // The relay appears: the client finds it by itself.
        let relay = start_relay(addr).await;
        let s = wait_state(&c, Duration::from_secs(5), "connected and measured", |s| {
            matches!(
                s.relays[0].state,
                RelayConnState::Connected { rtt: Some(_), .. }
            )
        })
        .await;
        assert_eq!(s.home, Some(url.clone()));
        assert_eq!(s.relays[0].connects, 1);
        assert_eq!(s.connected(), 1);

        let mut rx = c.state();
        let c2 = c.clone();
        c.close().await;
        assert_eq!(
            rx.borrow_and_update().relays[0].state,
            RelayConnState::Closed
        );
        assert_eq!(rx.borrow().home, None);
        assert_eq!(
            c2.send(key(2).node_id(), Bytes::new()),
            Err(SendError::Closed)
        );
        assert!(timeout(Duration::from_secs(1), c2.recv())
            .await
            .expect("recv ends")
            .is_none());
        relay.shutdown().await;
    })
    .await
    .expect("test timed out");
}

/// A relay that authenticates the client and then stops reading: the network or the relay
/// has stalled. `idle_timeout_ms` is what it announces.
async fn stalled_relay(idle_timeout_ms: u32) -> (RelayUrl, tokio::task::JoinHandle<()>) {
    slow_stalled_relay(idle_timeout_ms, Duration::ZERO).await
}

/// [`stalled_relay`], which also waits `hello_after` before it greets a client it accepted.
async fn slow_stalled_relay(
    idle_timeout_ms: u32,
    hello_after: Duration,
) -> (RelayUrl, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let url: RelayUrl = format!("http://{}", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    let own = url.clone();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        tokio::time::sleep(hello_after).await;
        let challenge = [42u8; 32];
        let hello = Frame::ServerHello {
            version: PROTOCOL_VERSION,
            challenge,
        };
        ws.send(Message::Binary(hello.to_vec().into()))
            .await
            .unwrap();
        let Some(Ok(Message::Binary(m))) = ws.next().await else {
            panic!("no ClientAuth")
        };
        let Ok(Frame::ClientAuth {
            version,
            node_id,
            signature,
            relay_url,
        }) = Frame::decode(&m)
        else {
            panic!("not a ClientAuth")
        };
        auth::verify(&challenge, version, &node_id, &signature, relay_url, &own).unwrap();
        let ok = Frame::AuthOk { idle_timeout_ms };
        ws.send(Message::Binary(ok.to_vec().into())).await.unwrap();
        // Hold the connection open, reading nothing.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(ws);
    });
    (url, task)
}

/// What an endpoint that dials at start relies on: `wait_first_connect` holds a new client
/// until its first relay connection is up, but not past its timeout, and not at all once every
/// relay has failed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_the_first_relay_connection_ends_as_soon_as_it_can() {
    timeout(Duration::from_secs(30), async {
        // A relay slow to greet: the wait lasts until it has, and the client has a home.
        let hello_after = Duration::from_millis(400);
        let (url, slow) = slow_stalled_relay(30_000, hello_after).await;
        let start = Instant::now();
        let c = RelayClient::new(vec![url.clone()], key(1), Default::default());
        c.wait_first_connect(Duration::from_secs(3)).await;
        let waited = start.elapsed();
        assert!(waited >= hello_after, "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        assert_eq!(c.state().borrow().home, Some(url));
        c.close().await;
        slow.abort();

        // One that never greets: the wait ends at its timeout, with no home.
        let (url, silent) = slow_stalled_relay(30_000, Duration::from_secs(3600)).await;
        let start = Instant::now();
        let c = RelayClient::new(vec![url], key(2), Default::default());
        c.wait_first_connect(Duration::from_millis(300)).await;
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        assert!(waited < Duration::from_secs(1), "{waited:?}");
        assert_eq!(c.state().borrow().home, None);
        c.close().await;
        silent.abort();

        // A port nobody listens on: the first attempt fails at once, and so does the wait.
        let addr = std::net::TcpListener::bind(loopback())
            .unwrap()
            .local_addr()
            .unwrap();
        let url: RelayUrl = format!("http://{addr}").parse().unwrap();
        let start = Instant::now();
        let c = RelayClient::new(vec![url], key(3), Default::default());
        c.wait_first_connect(Duration::from_secs(3)).await;
        let waited = start.elapsed();
        assert!(waited < Duration::from_secs(1), "{waited:?}");
        let s = c.state().borrow().clone();
        assert_eq!(s.home, None);
        assert!(
            !matches!(s.relays[0].state, RelayConnState::Connecting { attempt: 0 }),
            "{s:?}"
        );
        c.close().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_relay_fills_the_bounded_queue_then_is_declared_dead() {
    timeout(Duration::from_secs(30), async {
        let (url, fake) = stalled_relay(900).await;
        let mut opts = RelayClientOptions {
            send_queue: 8,
            ..Default::default()
        };
        opts.connection.pong_timeout = Duration::from_millis(700);
        let c = RelayClient::new(vec![url.clone()], key(1), opts);
        c.wait_connected(Duration::from_secs(5)).await.unwrap();

        // Loopback socket buffers take some megabytes; then the queue fills.
        let big = Bytes::from(vec![7u8; 60_000]);
        let mut accepted = 0;
        let full = loop {
            match c.send(key(2).node_id(), big.clone()) {
                Ok(()) => accepted += 1,
                Err(e) => break e,
            }
            assert!(accepted < 5_000, "the queue never filled");
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        assert_eq!(full, SendError::QueueFull);
        eprintln!("queue full after {accepted} datagrams of 60 kB");

        // Pings go unanswered: the client gives the connection up (ping every 300 ms, dead
        // after 300 + 700 ms of silence).
        let s = wait_state(&c, Duration::from_secs(3), "declared dead", |s| {
            matches!(s.relays[0].state, RelayConnState::Backoff { .. })
        })
        .await;
        match &s.relays[0].state {
            RelayConnState::Backoff { error, .. } => {
                assert!(error.contains("nothing received"), "{error}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.send(key(2).node_id(), big), Err(SendError::NoRelay));
        c.close().await;
        fake.abort();
    })
    .await
    .expect("test timed out");
}

// ---------------------------------------------------------------------------------------------
// TLS

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_relays_work_with_a_trusted_root_and_fail_without() {
    timeout(Duration::from_secs(30), async {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let dir = std::env::temp_dir().join(format!("burrow-client-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, cert.cert.pem()).unwrap();
        std::fs::write(&files.key, cert.key_pair.serialize_pem()).unwrap();
        let relay = RelayServer::start(RelayConfig {
            listen: loopback(),
            tls: Some(files),
            limits: Limits::unlimited(),
            ..Default::default()
        })
        .await
        .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let url = url_of(&relay);
        assert!(url.is_tls());

        let trusted = RelayClientOptions {
            webpki_roots: false,
            extra_roots: vec![cert.cert.der().to_vec()],
            ..Default::default()
        };
        let a = RelayClient::new(vec![url.clone()], key(1), trusted.clone());
        let b = RelayClient::new(vec![url.clone()], key(2), trusted);
        a.wait_connected(Duration::from_secs(5)).await.unwrap();
        b.wait_connected(Duration::from_secs(5)).await.unwrap();
        a.send(key(2).node_id(), Bytes::from_static(b"over tls"))
            .unwrap();
        let (_, p, via) = recv_within(&b, Duration::from_secs(2)).await;
        assert_eq!((&p[..], via), (&b"over tls"[..], url.clone()));

        // Only the public roots: the self-signed certificate is refused.
        let untrusting = RelayClient::new(vec![url.clone()], key(3), Default::default());
        let s = wait_state(&untrusting, Duration::from_secs(5), "TLS refused", |s| {
            matches!(s.relays[0].state, RelayConnState::Backoff { .. })
        })
        .await;
        match &s.relays[0].state {
            RelayConnState::Backoff { error, .. } => assert!(error.contains("TLS"), "{error}"),
            other => panic!("{other:?}"),
        }
        for c in [a, b, untrusting] {
            c.close().await;
        }
        relay.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_with_one_key_back_off_and_say_so_once() {
    timeout(Duration::from_secs(60), async {
        let relay = start_relay(loopback()).await;
        let url = url_of(&relay);
        let a = RelayClient::new(vec![url.clone()], key(1), Default::default());
        let mut a_events = a.events();
        a.wait_connected(Duration::from_secs(5)).await.unwrap();
        let b = RelayClient::new(vec![url.clone()], key(1), Default::default());
        let mut b_events = b.events();
        let start = Instant::now();
        // Each evicts the other when it comes back. The first replaced wait is 2.5-5 s, the
        // second 5-10 s: in 12 s, at most 5 connects (the old schedule, a few hundred ms
        // apart, made dozens), and at least 4, since both do come back.
        tokio::time::sleep(Duration::from_secs(12)).await;
        let connects = |c: &RelayClient| c.state().borrow().relays[0].connects;
        let (ca, cb) = (connects(&a), connects(&b));
        eprintln!("connects in {:?}: a {ca}, b {cb}", start.elapsed());
        assert!(
            ca + cb <= 5,
            "a reconnected {ca} times, b {cb}: a tight loop"
        );
        assert!(ca + cb >= 4, "a {ca}, b {cb}: they must come back");
        // Said once each, though a was replaced twice.
        for (name, events) in [("a", &mut a_events), ("b", &mut b_events)] {
            match events.try_recv() {
                Ok(RelayEvent::Replaced { relay, retry_in }) => {
                    assert_eq!(relay, url);
                    let secs = retry_in.as_secs_f64();
                    assert!((2.5..=5.0).contains(&secs), "{name}: first wait {secs} s");
                }
                other => panic!("{name}: {other:?}"),
            }
            assert!(events.try_recv().is_err(), "{name} said it more than once");
        }
        for c in [a, b] {
            c.close().await;
        }
        relay.shutdown().await;
    })
    .await
    .expect("test timed out");
}
