//! Memory per idle authenticated client: starts a relay in a child process, connects N
//! clients from this process, and reads the child's RSS before and after.
//!
//! ```sh
//! cargo run --release -p burrow-relay --example idle_memory -- 10000
//! ```
//! (Needs a file-descriptor limit above N in both processes; `ulimit -n`.)

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use burrow_proto::identity::SecretKey;
use burrow_proto::relay::auth::client_auth;
use burrow_proto::relay::Frame;
use burrow_relay::{Limits, RelayConfig, RelayServer};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let first = args.next().unwrap_or_else(|| "10000".into());
    if first == "server" {
        return server();
    }
    let n: usize = first.parse().expect("number of clients");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("server")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the relay");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line.trim().parse().expect("relay address");
    let pid = child.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Warm up with a few clients so one-time allocations are not counted per client.
        let mut held = connect(addr, 0, 100).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = rss_kib(pid);
        held.extend(connect(addr, 100, n).await);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = rss_kib(pid);
        let per = (after.saturating_sub(before)) as f64 * 1024.0 / n as f64;
        println!(
            "{} idle authenticated clients: relay RSS {} KiB -> {} KiB, {:.0} bytes ({:.1} KiB) per client",
            held.len() - 100,
            before,
            after,
            per,
            per / 1024.0
        );
    });
    let _ = child.kill();
    let _ = child.wait();
}

async fn connect(
    addr: SocketAddr,
    from: usize,
    count: usize,
) -> Vec<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>>
{
    let mut out = Vec::with_capacity(count);
    let mut i = from;
    while i < from + count {
        let batch = (from + count - i).min(200);
        let mut tasks = Vec::new();
        for j in i..i + batch {
            tasks.push(tokio::spawn(async move {
                let mut seed = [0u8; 32];
                seed[..8].copy_from_slice(&(j as u64 + 1).to_le_bytes());
                let key = SecretKey::from_bytes(seed);
                let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/relay"))
                    .await
                    .expect("connect");
                let Some(Ok(Message::Binary(b))) = ws.next().await else {
                    panic!("no hello")
                };
                let Ok(Frame::ServerHello { challenge, .. }) = Frame::decode(&b) else {
                    panic!("bad hello")
                };
                ws.send(Message::Binary(
                    client_auth(&key, &challenge).to_vec().into(),
                ))
                .await
                .unwrap();
                let Some(Ok(Message::Binary(b))) = ws.next().await else {
                    panic!("no AuthOk")
                };
                assert!(matches!(Frame::decode(&b), Ok(Frame::AuthOk { .. })));
                ws
            }));
        }
        for t in tasks {
            out.push(t.await.unwrap());
        }
        i += batch;
    }
    out
}

fn server() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = RelayServer::start(RelayConfig {
            limits: Limits {
                idle_timeout: Duration::from_secs(600),
                ..Limits::unlimited()
            },
            ..RelayConfig::default()
        })
        .await
        .unwrap();
        println!("{}", server.local_addr());
        std::future::pending::<()>().await;
    });
}
