//! A flood of records from one source cannot hide a namespace's real members from
//! `burrow peers` (issue 13, finding 7).
//!
//! A real relay with its registry runs on 127.0.0.1, with no rate limits, so that only the
//! registry's per-source caps stand between the flood and the listing (a patient flooder gets
//! past any rate). The flood comes from one address, 127.0.0.2: one source, as one IPv4
//! address or one IPv6 /64 is (loopback has no IPv6 /64 to spare; the registry's unit tests
//! show that the addresses of one /64 count as one source). Its 10,000 keys are chosen to sort
//! before every member's, so in node id order they fill the first 100 pages that
//! `burrow peers` reads. The members register from 127.0.0.3 to 127.0.0.5, as three hosts.

use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use burrow_proto::identity::SecretKey;
use burrow_proto::record::NodeRecord;
use burrow_relay::{Limits, RegistryConfig, RegistryLimits, RelayConfig, RelayServer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

const BURROW: &str = env!("CARGO_BIN_EXE_burrow");
const NAMESPACE: &str = "team.flooded";
const FLOOD: u32 = 10_000;
/// Connections the flood is spread over, all from the one source address.
const FLOOD_CONNECTIONS: u32 = 4;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The `n`th key whose node id does (`low`) or does not start below 0xf0.
fn keys(low: bool, count: u32, salt: u8) -> Vec<SecretKey> {
    (0u32..)
        .map(|n| {
            let mut seed = [salt; 32];
            seed[..4].copy_from_slice(&n.to_be_bytes());
            SecretKey::from_bytes(seed)
        })
        .filter(|k| (k.node_id().as_bytes()[0] < 0xf0) == low)
        .take(count as usize)
        .collect()
}

/// The JSON body that registers `key`'s record under the namespace.
fn put_body(key: &SecretKey) -> String {
    let mut r = NodeRecord::new(key.node_id(), 1, now() + 3600);
    r.relays.push("http://127.0.0.1:3340".parse().unwrap());
    let signed = r.sign(key).unwrap();
    serde_json::json!({
        "record": data_encoding::BASE64URL_NOPAD.encode(signed.as_bytes()),
        "namespaces": [NAMESPACE],
    })
    .to_string()
}

/// An HTTP/1.1 connection to the registry from the source address `from`.
struct Http(BufReader<TcpStream>);

impl Http {
    async fn connect(from: IpAddr, to: SocketAddr) -> Http {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from, 0)).unwrap();
        Http(BufReader::new(socket.connect(to).await.unwrap()))
    }

    /// PUTs `key`'s record; returns the status.
    async fn put(&mut self, key: &SecretKey) -> u16 {
        let body = put_body(key);
        let req = format!(
            "PUT /records/{} HTTP/1.1\r\nHost: registry\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            key.node_id(),
            body.len()
        );
        self.0.get_mut().write_all(req.as_bytes()).await.unwrap();
        let mut status = 0;
        let mut length = 0;
        loop {
            let mut line = String::new();
            assert!(self.0.read_line(&mut line).await.unwrap() > 0, "closed");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(s) = line.strip_prefix("HTTP/1.1 ") {
                status = s[..3].parse().unwrap();
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; length];
        self.0.read_exact(&mut body).await.unwrap();
        status
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_records_from_one_source_cannot_hide_a_namespaces_members() {
    let relay = RelayServer::start(RelayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        limits: Limits::unlimited(),
        registry: RegistryConfig {
            limits: RegistryLimits::unlimited(),
            ..RegistryConfig::default()
        },
        ..RelayConfig::default()
    })
    .await
    .expect("relay starts");
    let registry = relay.local_addr();

    let members = keys(false, 3, 0x11);
    for (i, m) in members.iter().enumerate() {
        let from = IpAddr::from([127, 0, 0, 3 + i as u8]);
        let status = Http::connect(from, registry).await.put(m).await;
        assert_eq!(status, 200, "member {i} registers");
    }

    let flood = std::sync::Arc::new(keys(true, FLOOD, 0x22));
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..FLOOD_CONNECTIONS)
        .map(|c| {
            let flood = flood.clone();
            tokio::spawn(async move {
                let mut http = Http::connect([127, 0, 0, 2].into(), registry).await;
                let (mut accepted, mut refused) = (0usize, 0usize);
                for k in flood
                    .iter()
                    .skip(c as usize)
                    .step_by(FLOOD_CONNECTIONS as usize)
                {
                    match http.put(k).await {
                        200 => accepted += 1,
                        429 => refused += 1,
                        other => panic!("the flood got HTTP {other}"),
                    }
                }
                (accepted, refused)
            })
        })
        .collect();
    let (mut accepted, mut refused) = (0, 0);
    for t in tasks {
        let (a, r) = t.await.unwrap();
        (accepted, refused) = (accepted + a, refused + r);
    }
    eprintln!(
        "the flood: {accepted} of {FLOOD} records accepted, {refused} refused with 429, in {:?}",
        started.elapsed()
    );
    let cap = RegistryLimits::default().max_per_source_namespace;
    assert_eq!(accepted, cap, "one source lists at most its cap");

    let registry_url = format!("http://{registry}");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(BURROW)
            .env("BURROW_NO_MDNS", "1")
            .args(["peers", "--json", "--namespace", NAMESPACE])
            .args(["--registry", &registry_url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "burrow peers: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let listed: std::collections::BTreeSet<String> = v["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .map(|p| p["node_id"].as_str().unwrap().to_string())
        .collect();
    eprintln!("burrow peers lists {} nodes", listed.len());
    for (i, m) in members.iter().enumerate() {
        assert!(
            listed.contains(&m.node_id().to_string()),
            "member {i} is hidden: burrow peers lists {} nodes",
            listed.len()
        );
    }
    relay.shutdown().await;
}
