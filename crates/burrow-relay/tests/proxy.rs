//! The relay behind a real reverse proxy: nginx, configured with only the three lines a
//! WebSocket upgrade needs, in front of a relay on loopback that is told its public URL (the
//! proxy's), which clients sign their login for. Two library clients that know only the proxy's
//! URL exchange datagrams both ways (up to a full 64 KiB one), and `/health` answers through
//! the proxy.
//!
//! Needs `nginx` (Debian package `nginx`; `./test.sh` installs it as root). Without it the test
//! prints `SKIPPED: nginx not installed` and passes, except in CI (`CI` set), where it fails.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use burrow::relay_client::{RelayClient, RelayClientOptions, RelayUrl};
use burrow::SecretKey;
use burrow_proto::relay::MAX_PAYLOAD;
use burrow_relay::{RelayConfig, RelayServer};
use common::{datagram, exchange, parse_response, Plan};
use tokio::time::timeout;

fn key(n: u8) -> SecretKey {
    SecretKey::from_bytes([n; 32])
}

// ---------------------------------------------------------------------------------------------
// nginx as a child process

/// `nginx` on `PATH`, or where Debian puts it (`/usr/sbin` is not on a normal user's `PATH`).
fn find_nginx() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file())
}

/// An nginx reverse proxy in a temporary directory of its own, listening on 127.0.0.1 and
/// forwarding everything to `upstream`. Stopped (and its directory removed) on drop.
struct Nginx {
    bin: PathBuf,
    dir: PathBuf,
    child: Child,
    addr: SocketAddr,
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(dir: &Path, port: u16, upstream: SocketAddr, root: bool) -> String {
    let d = dir.display();
    // As root, the master drops the worker to an unprivileged user; Debian has no group
    // `nobody`, which is nginx's default.
    let user = if root { "user nobody nogroup;" } else { "" };
    format!(
        r#"daemon off;
{user}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log notice;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 120s;
        }}
    }}
}}
"#
    )
}

impl Nginx {
    /// Starts nginx and waits until its port accepts connections. A port taken between
    /// choosing and binding it makes nginx exit; then another port is tried.
    fn start(bin: PathBuf, upstream: SocketAddr) -> Nginx {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.trim_ascii() == b"0")
            .unwrap_or(false);
        let mut last_error = String::new();
        for attempt in 0..5 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            let dir = std::env::temp_dir().join(format!(
                "burrow-proxy-test-{}-{nanos}-{attempt}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let port = free_port();
            let conf = dir.join("nginx.conf");
            std::fs::write(&conf, config(&dir, port, upstream, root)).unwrap();
            let child = Command::new(&bin)
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(&conf)
                // Before reading the config, nginx opens its compiled-in error log
                // (/var/log/nginx/error.log), which a normal user may not write.
                .arg("-e")
                .arg(dir.join("error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nginx starts");
            let mut nginx = Nginx {
                bin: bin.clone(),
                dir,
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
            };
            match nginx.wait_listening(Duration::from_secs(10)) {
                Ok(()) => return nginx,
                Err(e) => last_error = e,
            }
        }
        panic!("nginx did not start: {last_error}");
    }

    fn wait_listening(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("nginx exited ({status}): {}", self.error_log()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} not accepting within {within:?}: {}",
                    self.addr,
                    self.error_log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    fn url(&self) -> RelayUrl {
        format!("http://{}", self.addr).parse().unwrap()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // `nginx -s stop` signals the master (SIGTERM via the pid file), which stops its
        // worker too; killing only the master would orphan the worker with the port open.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new(&self.bin)
                .arg("-p")
                .arg(&self.dir)
                .arg("-c")
                .arg(self.dir.join("nginx.conf"))
                .arg("-e")
                .arg(self.dir.join("error.log"))
                .args(["-s", "stop"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A plain HTTP/1.1 GET; returns the status and body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: relay.example.org\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response in time");
    parse_response(&out)
}

// ---------------------------------------------------------------------------------------------
// The exchange

const PER_DIRECTION: u32 = 3_000;
const PLAN: Plan = Plan {
    per_direction: PER_DIRECTION,
    window: 64,
    ack_every: 16,
    payload,
};

fn payload(tag: u8, seq: u32) -> Vec<u8> {
    let len = match seq {
        // Full-size datagrams: the largest the protocol carries.
        1000 | 2999 => MAX_PAYLOAD,
        _ if seq % 250 == 7 => 30_000,
        _ => 6 + (seq as usize * 7919) % 1400,
    };
    datagram(tag, seq, len, |i| {
        (seq as u8).wrapping_add(i as u8) ^ tag ^ (i >> 8) as u8
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_works_behind_an_nginx_reverse_proxy() {
    let Some(bin) = find_nginx() else {
        if std::env::var_os("CI").is_some() {
            panic!("nginx not installed, and CI must run this test (apt-get install nginx)");
        }
        eprintln!("SKIPPED: nginx not installed");
        return;
    };
    timeout(Duration::from_secs(60), async {
        // nginx first, so the relay can be told the proxy's URL as its own.
        let upstream = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let proxy = tokio::task::spawn_blocking(move || Nginx::start(bin, upstream))
            .await
            .expect("nginx starts");
        let url = proxy.url();
        assert_ne!(proxy.addr, upstream);
        let relay = RelayServer::start(RelayConfig {
            listen: upstream,
            public_urls: vec![url.clone()],
            ..Default::default()
        })
        .await
        .expect("relay starts");

        let a = RelayClient::new(vec![url.clone()], key(1), RelayClientOptions::default());
        let b = RelayClient::new(vec![url.clone()], key(2), RelayClientOptions::default());
        for c in [&a, &b] {
            assert_eq!(
                c.wait_connected(Duration::from_secs(10)).await,
                Ok(url.clone()),
                "client connects through the proxy; nginx error log:\n{}",
                proxy.error_log()
            );
        }

        // /health through the proxy sees both clients.
        let proxy_addr = proxy.addr;
        let (status, body) = tokio::task::spawn_blocking(move || http_get(proxy_addr, "/health"))
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        let health: serde_json::Value = serde_json::from_str(&body).expect(&body);
        assert_eq!(health["status"], "ok", "{body}");
        assert_eq!(health["clients"], 2, "{body}");
        assert_eq!(health["version"], env!("CARGO_PKG_VERSION"), "{body}");

        let started = Instant::now();
        let (ka, kb, via) = (key(1).node_id(), key(2).node_id(), Some(url.clone()));
        let (ra, rb) = tokio::join!(
            tokio::spawn(exchange(a.clone(), 0xa, kb, 0xb, via.clone(), &PLAN)),
            tokio::spawn(exchange(b.clone(), 0xb, ka, 0xa, via, &PLAN)),
        );
        ra.expect("a");
        rb.expect("b");
        eprintln!(
            "{} datagrams (plus acks) through nginx in {:?}",
            2 * PER_DIRECTION,
            started.elapsed()
        );
        for c in [&a, &b] {
            assert_eq!(c.state().borrow().relays[0].connects, 1, "stayed connected");
        }
        let stats = relay.stats();
        eprintln!("relay stats: {stats:?}");

        a.close().await;
        b.close().await;
        // nginx logs a WebSocket session when it ends: both went through it, upgraded (101).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = proxy.access_log();
            let upgraded = log
                .lines()
                .filter(|l| l.contains("GET /relay") && l.contains("\" 101 "))
                .count();
            if upgraded >= 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "nginx logged {upgraded} WebSocket sessions, not 2:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(proxy);
        relay.shutdown().await;
    })
    .await
    .expect("test timed out");
}
