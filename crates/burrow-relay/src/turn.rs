//! The TURN server (RFC 8656) on the STUN port: a thin driver around
//! [`burrow_proto::turn::TurnServer`].
//!
//! The STUN service's threads hand every TURN message and ChannelData they read on the
//! primary STUN socket to this driver (`Handoff`) and answer Binding themselves; TURN over
//! TCP is served on the same port number, each connection framed by a task of its own. The
//! driver is one task: it feeds the core those messages and whatever peers send to the
//! relayed sockets, sends what the core returns (to clients from the STUN socket or on their
//! connection, to peers from the relayed sockets), opens and closes relayed sockets when the
//! core says, and sleeps until the core's next deadline. Each relayed socket has a reader
//! task that only forwards datagrams.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use burrow_proto::rate::source_prefix;
use burrow_proto::turn::channel_data::stream_message_len;
use burrow_proto::turn::{
    Cidr, Event, Family, FiveTuple, Input, Output, PeerFilter, PortRequest, RelayId, Transmit,
    Transport, TurnConfig, TurnLimits, TurnServer, TurnStats,
};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::clients::{IpLimiter, IpSlot};
use crate::metrics::TurnMetrics;

/// Messages waiting for the driver, from clients and peers together; more are dropped.
const QUEUE: usize = 4096;
/// Inputs fed before the driver sends what they produced and looks at the clock again.
const BATCH: usize = 64;
/// Tries at a random port of the range before an Allocate gets 508.
const BIND_TRIES: usize = 64;
/// The largest UDP datagram.
const MAX_DATAGRAM: usize = 65_536;
/// Messages waiting to be written to one TCP client; more are dropped, as UDP would.
const TCP_QUEUE: usize = 256;
/// What a TCP connection's reader asks the socket for at a time.
const TCP_READ: usize = 4096;

/// What the TURN server is told: its credentials, where relayed sockets go, and its limits.
#[derive(Clone, Debug, PartialEq)]
pub struct TurnOptions {
    /// The realm of the long-term credentials. Setting `turn_realm`.
    pub realm: String,
    /// Long-term users, name and password. Setting `turn_user`.
    pub users: Vec<(String, String)>,
    /// Shared secrets of ephemeral credentials (coturn's `static-auth-secret`). Setting
    /// `turn_secret`.
    pub secrets: Vec<String>,
    /// The IP relayed sockets bind and that clients are told. Setting `turn_relay_ip`.
    pub relay_ip: IpAddr,
    /// Relayed sockets take ports in this range. Settings `turn_min_port`, `turn_max_port`.
    pub ports: (u16, u16),
    /// Peers allowed in ranges denied by default. Setting `turn_allow_peer`.
    pub allowed_peers: Vec<Cidr>,
    /// Allocations, quotas and the byte rate (see [`TurnLimits`]); the settings
    /// `turn_max_allocations`, `turn_max_allocations_per_user`,
    /// `turn_max_allocations_per_ip`, `turn_rate` and `turn_burst`.
    pub limits: TurnLimits,
    /// TCP connections at once from one source (IPv4 address or IPv6 /64) to TURN's TCP
    /// port, counted apart from the relay's. Setting `max_conns_per_ip`.
    pub max_conns_per_ip: usize,
    /// A TCP connection that sends no whole message this long after connecting is closed.
    /// Setting `handshake_timeout`.
    pub first_message_timeout: Duration,
}

/// What the driver has, for [`crate::RelayServer::turn_status`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TurnStatus {
    /// Allocations now.
    pub allocations: usize,
    /// Relayed sockets open now (allocations' and reserved ports).
    pub sockets: usize,
    /// The core's counters.
    pub stats: TurnStats,
    /// Messages dropped because the driver's queue was full.
    pub queue_full: u64,
    /// Sends that failed.
    pub send_failures: u64,
}

/// Something for the driver to feed its core.
enum Ingress {
    /// A datagram on the STUN socket.
    Udp {
        from: SocketAddr,
        packet: Vec<u8>,
    },
    /// A TCP connection, and where to queue what is written to it.
    TcpOpened {
        tuple: FiveTuple,
        writer: mpsc::Sender<Vec<u8>>,
    },
    /// A message framed on a TCP connection.
    Tcp {
        tuple: FiveTuple,
        packet: Vec<u8>,
    },
    TcpClosed {
        tuple: FiveTuple,
    },
    Peer {
        relay: RelayId,
        from: SocketAddr,
        packet: Vec<u8>,
    },
}

/// How the STUN service's threads pass TURN messages on.
#[derive(Clone)]
pub(crate) struct Handoff {
    tx: mpsc::Sender<Ingress>,
    metrics: TurnMetrics,
}

impl Handoff {
    /// Queues a message from `from` for the driver; drops it (counted) when the queue is full.
    pub(crate) fn pass(&self, from: SocketAddr, packet: &[u8]) {
        let packet = packet.to_vec();
        if self.tx.try_send(Ingress::Udp { from, packet }).is_err() {
            self.metrics.queue_full.inc();
        }
    }
}

/// The running driver. Dropping it stops the driver and the TCP listener and closes every
/// relayed socket and connection.
pub(crate) struct TurnService {
    task: JoinHandle<()>,
    tcp: JoinHandle<()>,
    status: watch::Receiver<TurnStatus>,
}

/// The channel that connects the STUN service to a driver started with [`TurnService::start`].
pub(crate) fn channel(metrics: &TurnMetrics) -> (Handoff, TurnReceiver) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let handoff = Handoff {
        tx: tx.clone(),
        metrics: metrics.clone(),
    };
    (handoff, TurnReceiver { tx, rx })
}

/// The driver's end of [`channel`].
pub(crate) struct TurnReceiver {
    /// For the relayed sockets' readers.
    tx: mpsc::Sender<Ingress>,
    rx: mpsc::Receiver<Ingress>,
}

impl TurnService {
    /// Starts the driver for TURN arriving on the STUN socket `socket` and on TCP
    /// connections to `listener`.
    pub(crate) fn start(
        options: &TurnOptions,
        queue: TurnReceiver,
        socket: Arc<StdUdpSocket>,
        listener: TcpListener,
        metrics: TurnMetrics,
    ) -> std::io::Result<TurnService> {
        let local = socket.local_addr()?;
        let config = TurnConfig {
            realm: options.realm.clone(),
            software: Some(format!("burrow {}", env!("CARGO_PKG_VERSION"))),
            users: options.users.clone(),
            secrets: options.secrets.clone(),
            relay_v4: options.relay_ip.is_ipv4(),
            relay_v6: options.relay_ip.is_ipv6(),
            limits: options.limits.clone(),
            peers: PeerFilter {
                allowed: options.allowed_peers.clone(),
            },
            ..TurnConfig::default()
        };
        let (status_tx, status) = watch::channel(TurnStatus::default());
        let tcp = tokio::spawn(accept_tcp(
            listener,
            queue.tx.clone(),
            IpLimiter::new(options.max_conns_per_ip),
            options.first_message_timeout,
        ));
        let driver = Driver {
            core: TurnServer::new(config, rand::random()),
            queue,
            stun: socket,
            local,
            relay_ip: options.relay_ip,
            ports: options.ports,
            relays: BTreeMap::new(),
            tcp: BTreeMap::new(),
            metrics,
            status: status_tx,
            published: TurnStatus::default(),
        };
        Ok(TurnService {
            task: tokio::spawn(driver.run()),
            tcp,
            status,
        })
    }

    /// The latest counters.
    pub(crate) fn status(&self) -> TurnStatus {
        self.status.borrow().clone()
    }
}

impl Drop for TurnService {
    fn drop(&mut self) {
        self.task.abort();
        self.tcp.abort();
    }
}

/// A relayed socket and its reader.
struct Relay {
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

struct Driver {
    core: TurnServer,
    queue: TurnReceiver,
    stun: Arc<StdUdpSocket>,
    local: SocketAddr,
    relay_ip: IpAddr,
    ports: (u16, u16),
    relays: BTreeMap<RelayId, Relay>,
    /// Where to queue what is written to each TCP client.
    tcp: BTreeMap<FiveTuple, mpsc::Sender<Vec<u8>>>,
    metrics: TurnMetrics,
    status: watch::Sender<TurnStatus>,
    published: TurnStatus,
}

impl Driver {
    async fn run(mut self) {
        let mut deadline: Option<Instant> = None;
        loop {
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let first = tokio::select! {
                msg = self.queue.rx.recv() => match msg {
                    Some(msg) => Some(msg),
                    None => return,
                },
                () = sleep => None,
            };
            match first {
                Some(msg) => {
                    self.feed(msg);
                    for _ in 1..BATCH {
                        match self.queue.rx.try_recv() {
                            Ok(msg) => self.feed(msg),
                            Err(_) => break,
                        }
                    }
                }
                None => self.core.handle_input(Instant::now(), Input::Timeout),
            }
            deadline = self.drain();
            self.publish();
        }
    }

    fn feed(&mut self, msg: Ingress) {
        let now = Instant::now();
        let client = |tuple, packet| {
            let unix_secs = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            Input::Client {
                tuple,
                packet,
                unix_secs,
            }
        };
        match msg {
            Ingress::Udp { from, packet } => {
                let tuple = FiveTuple {
                    client: from,
                    server: self.local,
                    transport: Transport::Udp,
                };
                self.core.handle_input(now, client(tuple, &packet));
            }
            Ingress::Tcp { tuple, packet } => {
                self.core.handle_input(now, client(tuple, &packet));
            }
            Ingress::TcpOpened { tuple, writer } => {
                self.tcp.insert(tuple, writer);
            }
            Ingress::TcpClosed { tuple } => {
                self.tcp.remove(&tuple);
                self.core.handle_input(now, Input::ClientClosed { tuple });
            }
            Ingress::Peer {
                relay,
                from,
                packet,
            } => {
                let input = Input::Peer {
                    relay,
                    from,
                    packet: &packet,
                };
                self.core.handle_input(now, input);
            }
        }
        // Sends as they come, so a batch does not queue up in the core.
        self.drain();
    }

    /// Does what the core asks until it only has a deadline left, and returns that.
    fn drain(&mut self) -> Option<Instant> {
        loop {
            match self.core.poll_output() {
                Output::Transmit(Transmit::Client { tuple, data }) => match tuple.transport {
                    Transport::Udp => {
                        if let Err(e) = self.stun.send_to(&data, tuple.client) {
                            self.send_failed(tuple.client, &e);
                        }
                    }
                    Transport::Tcp => {
                        let sent = self.tcp.get(&tuple).map(|w| w.try_send(data));
                        if let Some(Err(mpsc::error::TrySendError::Full(_))) = sent {
                            self.metrics.queue_full.inc();
                        }
                        // Closed meanwhile: the core hears of it next.
                    }
                },
                Output::Transmit(Transmit::Peer { relay, to, data }) => {
                    let Some(r) = self.relays.get(&relay) else {
                        continue;
                    };
                    if let Err(e) = r.socket.try_send_to(&data, to) {
                        self.send_failed(to, &e);
                    }
                }
                Output::Event(Event::OpenRelay {
                    relay,
                    family,
                    port,
                }) => {
                    let input = match self.open(relay, family, port) {
                        Some(addr) => Input::RelayOpened { relay, addr },
                        None => Input::RelayFailed { relay },
                    };
                    self.core.handle_input(Instant::now(), input);
                }
                Output::Event(Event::CloseRelay { relay }) => {
                    self.relays.remove(&relay);
                }
                Output::Timeout(at) => return at,
            }
        }
    }

    fn send_failed(&self, to: SocketAddr, e: &std::io::Error) {
        self.metrics.send_failed.inc();
        tracing::debug!(%to, error = %e, "TURN send failed");
    }

    /// Binds a relayed socket (and for an even pair its neighbour) at a random port of the
    /// range, and starts its reader.
    fn open(&mut self, relay: RelayId, family: Family, port: PortRequest) -> Option<SocketAddr> {
        if (family == Family::V4) != self.relay_ip.is_ipv4() {
            return None;
        }
        let (min, max) = self.ports;
        let mut rng = rand::rng();
        for _ in 0..BIND_TRIES {
            let mut p = rng.random_range(min..=max);
            let pair = match port {
                PortRequest::Any => None,
                PortRequest::Even | PortRequest::EvenPair { .. } => {
                    p &= !1;
                    if p < min {
                        continue;
                    }
                    match port {
                        PortRequest::EvenPair { next } => Some(next),
                        _ => None,
                    }
                }
            };
            if pair.is_some() && p >= max {
                continue;
            }
            let Ok(socket) = bind(SocketAddr::new(self.relay_ip, p)) else {
                continue;
            };
            if let Some(next) = pair {
                let Ok(second) = bind(SocketAddr::new(self.relay_ip, p + 1)) else {
                    continue;
                };
                self.add(next, second);
            }
            let addr = socket.local_addr().ok()?;
            self.add(relay, socket);
            return Some(addr);
        }
        tracing::warn!(min, max, "no free relayed port for TURN");
        None
    }

    fn add(&mut self, relay: RelayId, socket: UdpSocket) {
        let socket = Arc::new(socket);
        let reader = tokio::spawn(read_relay(
            relay,
            socket.clone(),
            self.queue.tx.clone(),
            self.metrics.clone(),
        ));
        self.relays.insert(relay, Relay { socket, reader });
    }

    /// Hands the counters to `/metrics` (as increments) and to [`TurnService::status`].
    fn publish(&mut self) {
        let status = TurnStatus {
            allocations: self.core.allocation_count(),
            sockets: self.relays.len(),
            stats: self.core.stats().clone(),
            queue_full: self.metrics.queue_full.get(),
            send_failures: self.metrics.send_failed.get(),
        };
        if status == self.published {
            return;
        }
        self.metrics.publish(&self.published.stats, &status.stats);
        self.metrics.allocations.set(status.allocations as i64);
        self.metrics.sockets.set(status.sockets as i64);
        self.status.send_replace(status.clone());
        self.published = status;
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = StdUdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// Forwards what peers send to a relayed socket to the driver.
async fn read_relay(
    relay: RelayId,
    socket: Arc<UdpSocket>,
    tx: mpsc::Sender<Ingress>,
    metrics: TurnMetrics,
) {
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        // On the stack and never held across an await, so an idle socket costs no buffer.
        let mut buf = [0u8; MAX_DATAGRAM];
        loop {
            match socket.try_recv_from(&mut buf) {
                Ok((n, from)) => {
                    let packet = buf[..n].to_vec();
                    if tx
                        .try_send(Ingress::Peer {
                            relay,
                            from,
                            packet,
                        })
                        .is_err()
                    {
                        metrics.queue_full.inc();
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // ICMP errors from earlier sends surface here; they are no reason to stop.
                Err(_) => break,
            }
        }
    }
}

/// Accepts TURN's TCP connections, each served by a task of its own (aborted with this one).
async fn accept_tcp(
    listener: TcpListener,
    tx: mpsc::Sender<Ingress>,
    limiter: Arc<IpLimiter>,
    first_message: Duration,
) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next() => continue,
        };
        let (stream, client) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("TURN accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = limiter.acquire(source_prefix(client.ip())) else {
            tracing::debug!(%client, "per-IP TURN connection limit reached");
            continue;
        };
        let Ok(server) = stream.local_addr() else {
            continue;
        };
        let tuple = FiveTuple {
            client,
            server,
            transport: Transport::Tcp,
        };
        connections.spawn(serve_tcp(stream, tuple, tx.clone(), slot, first_message));
    }
}

/// Frames one TCP connection's messages for the driver and writes what it queues back.
async fn serve_tcp(
    stream: TcpStream,
    tuple: FiveTuple,
    tx: mpsc::Sender<Ingress>,
    _slot: IpSlot,
    first_message: Duration,
) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (writer, mut queue) = mpsc::channel::<Vec<u8>>(TCP_QUEUE);
    if tx.send(Ingress::TcpOpened { tuple, writer }).await.is_err() {
        return;
    }
    let write = async {
        while let Some(data) = queue.recv().await {
            if wr.write_all(&data).await.is_err() {
                return;
            }
        }
    };
    let read = async {
        let mut buf: Vec<u8> = Vec::new();
        let mut framed_any = false;
        loop {
            while let Some(len) = stream_message_len(&buf).filter(|&len| buf.len() >= len) {
                let packet: Vec<u8> = buf.drain(..len).collect();
                framed_any = true;
                if tx.send(Ingress::Tcp { tuple, packet }).await.is_err() {
                    return;
                }
            }
            buf.reserve(TCP_READ);
            let read = rd.read_buf(&mut buf);
            let n = if framed_any {
                read.await
            } else {
                match tokio::time::timeout(first_message, read).await {
                    Ok(n) => n,
                    Err(_) => return,
                }
            };
            if !matches!(n, Ok(n) if n > 0) {
                return;
            }
        }
    };
    tokio::select! {
        () = write => {}
        () = read => {}
    }
    let _ = tx.send(Ingress::TcpClosed { tuple }).await;
}
