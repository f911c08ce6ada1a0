//! `relay`: what the relay costs.
//!
//! * Throughput: two [`RelayClient`]s exchange datagrams through `burrow relay` on loopback,
//!   next to one plain loopback TCP connection carrying the same bytes in the same write sizes
//!   (the physical limit of any TCP relay here), in the same run.
//! * Memory: the relay process's RSS growth per connected, authenticated, idle client.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use burrow::relay_client::{RelayClient, RelayClientOptions};
use burrow::SecretKey;
use burrow_proto::relay::{auth, Frame, RelayUrl};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// A `burrow relay` child process, killed on drop.
pub(crate) struct RelayProcess {
    child: Child,
    addr: SocketAddr,
}

impl RelayProcess {
    /// Starts `burrow relay` on a free loopback port with no rate limit and room for
    /// `clients` connections from 127.0.0.1, and waits until `/health` answers.
    pub(crate) fn start(burrow: &Path, clients: usize) -> Result<RelayProcess> {
        RelayProcess::start_with(burrow, clients, &[])
    }

    /// [`RelayProcess::start`] with more `burrow relay` arguments.
    pub(crate) fn start_with(
        burrow: &Path,
        clients: usize,
        extra: &[&str],
    ) -> Result<RelayProcess> {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let room = (clients + 64).to_string();
        let mut cmd = Command::new(burrow);
        cmd.args(["relay", "--listen", &addr.to_string(), "--client-rate", "0"])
            .args(["--max-clients", &room, "--max-conns-per-ip", &room])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        crate::server::die_with_harness(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", burrow.display()))?;
        let mut relay = RelayProcess { child, addr };
        let deadline = Instant::now() + Duration::from_secs(10);
        while health(addr).is_err() {
            if let Some(status) = relay.child.try_wait()? {
                bail!("burrow relay exited at start: {status}");
            }
            if Instant::now() > deadline {
                bail!("burrow relay did not answer /health within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(relay)
    }

    /// The relay's TCP address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The relay's URL.
    pub(crate) fn url(&self) -> RelayUrl {
        format!("http://{}", self.addr).parse().expect("valid URL")
    }

    /// Resident memory of the relay process, in bytes.
    pub(crate) fn rss(&self) -> Result<u64> {
        crate::vm_rss(Some(self.child.id()))
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn health(addr: SocketAddr) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    if out.starts_with("HTTP/1.1 200") {
        Ok(out)
    } else {
        Err(std::io::Error::other(out))
    }
}

/// One throughput measurement.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub(crate) struct Throughput {
    /// Payload bytes delivered per second, in MB/s (10^6).
    pub mb_per_sec: f64,
    /// Share of datagrams sent but not delivered.
    pub lost_pct: f64,
}

/// Sends `total` bytes in `payload`-sized datagrams from one relay client to another.
pub(crate) async fn relay_throughput(
    url: &RelayUrl,
    payload: usize,
    total: u64,
) -> Result<Throughput> {
    let opts = RelayClientOptions::default;
    let b_key = SecretKey::from_bytes(rand::random());
    let b_id = b_key.node_id();
    let a = RelayClient::new(
        vec![url.clone()],
        SecretKey::from_bytes(rand::random()),
        opts(),
    );
    let b = RelayClient::new(vec![url.clone()], b_key, opts());
    a.wait_connected(Duration::from_secs(10)).await?;
    b.wait_connected(Duration::from_secs(10)).await?;
    let count = total.div_ceil(payload as u64);
    let data = Bytes::from(vec![0xa5u8; payload]);
    let receiver = tokio::spawn(async move {
        let mut got = 0u64;
        let mut first = None;
        let mut last = Instant::now();
        // Quiet for 500 ms after the last datagram means the rest was lost. One timer, pushed
        // back only when it fires, not a timer entry per datagram (which the sender's side
        // does not pay either).
        const QUIET: Duration = Duration::from_millis(500);
        let quiet = tokio::time::sleep(QUIET);
        tokio::pin!(quiet);
        loop {
            let p = tokio::select! {
                biased;
                r = b.recv() => match r {
                    Some((_, p, _)) => p,
                    None => break,
                },
                _ = &mut quiet => {
                    let resume = last + QUIET;
                    if first.is_none() || Instant::now() >= resume {
                        break;
                    }
                    quiet.as_mut().reset(resume.into());
                    continue;
                }
            };
            first.get_or_insert_with(Instant::now);
            last = Instant::now();
            got += 1;
            std::hint::black_box(&p);
            if got == count {
                break;
            }
        }
        (got, first.map(|f| last - f))
    });
    for _ in 0..count {
        a.send_wait(b_id, data.clone()).await?;
    }
    let (got, span) = receiver.await?;
    let span = span.context("nothing arrived through the relay")?;
    Ok(Throughput {
        mb_per_sec: (got * payload as u64) as f64 / span.as_secs_f64() / 1e6,
        lost_pct: 100.0 * (count - got) as f64 / count as f64,
    })
}

/// The anchor: the same bytes in the same write sizes over one plain loopback TCP connection.
pub(crate) async fn tcp_throughput(payload: usize, total: u64) -> Result<Throughput> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let reader = tokio::spawn(tcp_sink(listener, payload, total));
    tcp_source(addr, payload, total).await?;
    tcp_result(reader.await??, "nothing arrived over TCP")
}

/// The two-hop anchor: the same bytes through a plain userspace TCP forwarder (read, write,
/// nothing else), in this process. It bounds what any TCP relay can do here, protocol aside.
pub(crate) async fn tcp_forwarder_throughput(payload: usize, total: u64) -> Result<Throughput> {
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sink_addr = sink.local_addr()?;
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let proxy_addr = proxy.local_addr()?;
    let forwarder = tokio::spawn(async move {
        let (mut inbound, _) = proxy.accept().await?;
        let mut outbound = tokio::net::TcpStream::connect(sink_addr).await?;
        outbound.set_nodelay(true)?;
        // A large buffer gives the forwarder its best case (tokio::io::copy uses 8 KiB).
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = inbound.read(&mut buf).await?;
            if n == 0 {
                return anyhow::Ok(());
            }
            outbound.write_all(&buf[..n]).await?;
        }
    });
    let reader = tokio::spawn(tcp_sink(sink, payload, total));
    tcp_source(proxy_addr, payload, total).await?;
    let received = reader.await??;
    forwarder.await??;
    tcp_result(received, "nothing arrived through the forwarder")
}

/// Writes `total` bytes to `addr` in `payload`-sized writes, then closes.
async fn tcp_source(addr: SocketAddr, payload: usize, total: u64) -> Result<()> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let data = vec![0xa5u8; payload];
    let mut sent = 0u64;
    while sent < total {
        s.write_all(&data).await?;
        sent += payload as u64;
    }
    Ok(())
}

/// Accepts one connection and reads `total` bytes: the bytes and the time from first to last.
async fn tcp_sink(
    listener: tokio::net::TcpListener,
    payload: usize,
    total: u64,
) -> Result<(u64, Option<Duration>)> {
    let (mut s, _) = listener.accept().await?;
    let mut buf = vec![0u8; payload.max(64 * 1024)];
    let mut got = 0u64;
    let mut first = None;
    while got < total {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        first.get_or_insert_with(Instant::now);
        got += n as u64;
    }
    Ok((got, first.map(|f| f.elapsed())))
}

fn tcp_result((got, span): (u64, Option<Duration>), nothing: &'static str) -> Result<Throughput> {
    let span = span.context(nothing)?;
    Ok(Throughput {
        mb_per_sec: got as f64 / span.as_secs_f64() / 1e6,
        lost_pct: 0.0,
    })
}

/// Connects `n` authenticated clients that then stay idle, `parallel` handshakes at a time,
/// and returns them (dropping them disconnects).
pub(crate) async fn idle_clients(
    url: &RelayUrl,
    addr: SocketAddr,
    n: usize,
    parallel: usize,
    progress: impl Fn(usize),
) -> Result<Vec<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>>> {
    let ws_url = url.ws_url();
    let url = url.to_string();
    let mut clients = Vec::with_capacity(n);
    let mut pending = futures_util::stream::iter(0..n)
        .map(|_| {
            let (ws_url, url) = (ws_url.clone(), url.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let (mut ws, _) = tokio_tungstenite::client_async(ws_url, tcp).await?;
                let key = SecretKey::from_bytes(rand::random());
                let hello = ws.next().await.context("closed before hello")??;
                let Ok(Frame::ServerHello { challenge, .. }) = Frame::decode(&hello.into_data())
                else {
                    bail!("expected ServerHello");
                };
                let auth = auth::client_auth(&key, &challenge, &url).to_vec();
                ws.send(Message::binary(auth)).await?;
                let ok = ws.next().await.context("closed before AuthOk")??;
                if !matches!(Frame::decode(&ok.into_data()), Ok(Frame::AuthOk { .. })) {
                    bail!("authentication refused");
                }
                anyhow::Ok(ws)
            }
        })
        .buffer_unordered(parallel);
    while let Some(ws) = pending.next().await {
        clients.push(ws?);
        if clients.len() % 1000 == 0 {
            progress(clients.len());
        }
    }
    Ok(clients)
}
