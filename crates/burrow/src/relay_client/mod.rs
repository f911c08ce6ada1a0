//! The relay client: holds connections to one or more relays, sends datagrams through the
//! home relay (the connected one with the lowest measured RTT) and receives from all of them.
//!
//! Each relay gets one task that connects, authenticates, keeps the connection alive and
//! reconnects with backoff and jitter when it drops, honouring the relay's restart notice. A
//! connection the relay replaced with a newer one for the same key (another node is using
//! it) is retried ever less often, and reported once ([`RelayEvent::Replaced`]).
//! The protocol logic lives in the sans-IO cores of [`burrow_proto::relay`]
//! ([`client_conn`](burrow_proto::relay::client_conn), [`backoff`](burrow_proto::relay::backoff),
//! [`home`](burrow_proto::relay::home)); this module only moves bytes and reads the clock.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use burrow::relay_client::{RelayClient, RelayClientOptions};
//! use burrow::{NodeId, SecretKey};
//!
//! let key = SecretKey::from_bytes([7; 32]);
//! let relays = vec!["https://relay.example.com".parse()?];
//! let client = RelayClient::new(relays, key, RelayClientOptions::default());
//! client.wait_connected(Duration::from_secs(5)).await?;
//! let peer: NodeId = "...".parse()?;
//! client.send(peer, bytes::Bytes::from_static(b"hello"))?;
//! while let Some((from, datagram, via)) = client.recv().await {
//!     println!("{from} sent {} bytes via {via}", datagram.len());
//! }
//! # Ok(()) }
//! ```

mod conn;
pub(crate) mod tls;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burrow_proto::relay::home::{Candidate, HomeSelector};
use burrow_proto::relay::MAX_PAYLOAD;
use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::{NodeId, SecretKey};

pub use burrow_proto::relay::backoff::{BackoffConfig, Jitter};
pub use burrow_proto::relay::client_conn::ClientConfig as ConnectionConfig;
pub use burrow_proto::relay::home::HomeConfig;
pub use burrow_proto::relay::{RelayUrl, RelayUrlError};
pub use tls::TlsError;

/// Options for [`RelayClient::new`].
#[derive(Clone, Debug)]
pub struct RelayClientOptions {
    /// Handshake timeout, keepalive and dead-connection detection.
    pub connection: ConnectionConfig,
    /// TCP connect, TLS and the WebSocket upgrade together. Default 10 s.
    pub connect_timeout: Duration,
    /// How reconnects are spaced.
    pub backoff: BackoffConfig,
    /// When the home relay changes.
    pub home: HomeConfig,
    /// Datagrams waiting to be written, per relay. Default 1024.
    pub send_queue: usize,
    /// Received datagrams waiting for [`RelayClient::recv`], all relays together. When full,
    /// reading from the relays pauses (the relay then queues or drops). Default 1024.
    pub recv_queue: usize,
    /// Trust the public web PKI roots (webpki-roots) for `https://` relays. Default true.
    pub webpki_roots: bool,
    /// More trusted root certificates (DER), for private deployments and tests.
    pub extra_roots: Vec<Vec<u8>>,
}

impl Default for RelayClientOptions {
    fn default() -> Self {
        RelayClientOptions {
            connection: ConnectionConfig::default(),
            connect_timeout: Duration::from_secs(10),
            backoff: BackoffConfig::default(),
            home: HomeConfig::default(),
            send_queue: 1024,
            recv_queue: 1024,
            webpki_roots: true,
            extra_roots: Vec::new(),
        }
    }
}

/// The state of one relay connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayConnState {
    /// Connecting or authenticating.
    Connecting {
        /// Failed attempts before this one.
        attempt: u32,
    },
    /// Authenticated; datagrams flow.
    Connected {
        /// Smoothed round-trip time, once measured.
        rtt: Option<Duration>,
        /// When the handshake completed.
        since: Instant,
    },
    /// Waiting before the next attempt.
    Backoff {
        /// The next attempt starts then.
        until: Instant,
        /// Failed attempts so far.
        attempt: u32,
        /// Why the last attempt or connection ended.
        error: String,
    },
    /// The client was closed.
    Closed,
}

/// One relay as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayStatus {
    /// The relay.
    pub url: RelayUrl,
    /// Its connection.
    pub state: RelayConnState,
    /// Successful handshakes so far (1 after the first connect; each reconnect adds one).
    pub connects: u64,
}

/// Every relay's state and which one is home.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayClientState {
    /// In the order given to [`RelayClient::new`].
    pub relays: Vec<RelayStatus>,
    /// The relay sends go through, if any is connected.
    pub home: Option<RelayUrl>,
}

impl RelayClientState {
    /// How many relays are connected.
    pub fn connected(&self) -> usize {
        self.relays
            .iter()
            .filter(|r| matches!(r.state, RelayConnState::Connected { .. }))
            .count()
    }

    /// The status of one relay.
    pub fn relay(&self, url: &RelayUrl) -> Option<&RelayStatus> {
        self.relays.iter().find(|r| &r.url == url)
    }
}

/// Something about the relays that the user should hear of, from [`RelayClient::events`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayEvent {
    /// The relay closed our connection because a newer one authenticated the same key
    /// (WebSocket close code 4001): another node is using this node's key. Sent once per
    /// streak of replacements; meanwhile reconnects come ever less often
    /// ([`BackoffConfig::replaced_initial`]), so the two nodes do not evict each other in a
    /// tight loop.
    Replaced {
        /// The relay.
        relay: RelayUrl,
        /// When this client tries that relay again.
        retry_in: Duration,
    },
}

/// Events waiting for a slow [`RelayClient::events`] reader; older ones are then dropped.
const EVENT_QUEUE: usize = 16;

/// Why [`RelayClient::send`] did not take a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Over the relay protocol's 64 KiB limit.
    #[error("datagram of {0} bytes exceeds the relay's {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    /// The home relay's send queue is full (the relay or the network is slower than the
    /// sender, or the connection has stalled).
    #[error("relay send queue is full")]
    QueueFull,
    /// No relay is connected.
    #[error("no relay is connected")]
    NoRelay,
    /// The client was closed.
    #[error("relay client is closed")]
    Closed,
}

/// Why [`RelayClient::wait_connected`] returned without a home relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// No relay connected in time.
    #[error("no relay connected within {0:?}")]
    Timeout(Duration),
    /// The client was closed.
    #[error("relay client is closed")]
    Closed,
}

/// `home` when there is none.
const NO_HOME: usize = usize::MAX;

/// What the client and its relay tasks share.
struct Shared {
    urls: Vec<RelayUrl>,
    state: watch::Sender<RelayClientState>,
    selector: Mutex<HomeSelector>,
    /// Index of the home relay, for the send fast path.
    home: AtomicUsize,
    closed: AtomicBool,
    events: broadcast::Sender<RelayEvent>,
}

impl Shared {
    /// Changes one relay's status and re-evaluates the home relay.
    fn update(&self, idx: usize, f: impl FnOnce(&mut RelayStatus)) {
        // Poisoning only follows a panic elsewhere; the selector state is still consistent.
        let mut selector = self.selector.lock().unwrap_or_else(|e| e.into_inner());
        self.state.send_modify(|s| {
            f(&mut s.relays[idx]);
            let candidates: Vec<Candidate> = s
                .relays
                .iter()
                .map(|r| match r.state {
                    RelayConnState::Connected { rtt, .. } => Candidate {
                        connected: true,
                        rtt,
                    },
                    _ => Candidate {
                        connected: false,
                        rtt: None,
                    },
                })
                .collect();
            let home = selector.update(&candidates);
            let old = self.home.swap(home.unwrap_or(NO_HOME), Ordering::AcqRel);
            if old != home.unwrap_or(NO_HOME) {
                match home {
                    Some(h) => tracing::info!(relay = %self.urls[h], "home relay"),
                    None => tracing::info!("no relay connected"),
                }
            }
            s.home = home.map(|h| self.urls[h].clone());
        });
    }
}

type Datagram = (NodeId, Bytes);

struct Inner {
    shared: Arc<Shared>,
    /// Per relay, the queue its task writes from.
    senders: Vec<mpsc::Sender<Datagram>>,
    recv: tokio::sync::Mutex<mpsc::Receiver<(usize, NodeId, Bytes)>>,
    /// Dropping it (with the last clone of the client) stops the tasks too.
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A client of one or more relays. Cheap to clone; all clones share the connections, which
/// close when the last clone is dropped or [`RelayClient::close`] is called.
#[derive(Clone)]
pub struct RelayClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RelayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayClient")
            .field("relays", &self.inner.shared.urls)
            .finish_non_exhaustive()
    }
}

impl RelayClient {
    /// Starts connecting to every relay in the background. Must be called within a Tokio
    /// runtime. Duplicate URLs are connected to once.
    pub fn new(relays: Vec<RelayUrl>, key: SecretKey, opts: RelayClientOptions) -> RelayClient {
        let mut urls: Vec<RelayUrl> = Vec::with_capacity(relays.len());
        for url in relays {
            if !urls.contains(&url) {
                urls.push(url);
            }
        }
        let state = RelayClientState {
            relays: urls
                .iter()
                .map(|url| RelayStatus {
                    url: url.clone(),
                    state: RelayConnState::Connecting { attempt: 0 },
                    connects: 0,
                })
                .collect(),
            home: None,
        };
        let shared = Arc::new(Shared {
            urls: urls.clone(),
            state: watch::Sender::new(state),
            selector: Mutex::new(HomeSelector::new(opts.home.clone())),
            home: AtomicUsize::new(NO_HOME),
            closed: AtomicBool::new(false),
            events: broadcast::Sender::new(EVENT_QUEUE),
        });
        let tls = if urls.iter().any(RelayUrl::is_tls) {
            Some(tls::client_config(&opts))
        } else {
            None
        };
        let (shutdown, _) = watch::channel(false);
        let (recv_tx, recv_rx) = mpsc::channel(opts.recv_queue.max(1));
        let opts = Arc::new(opts);
        let mut senders = Vec::with_capacity(urls.len());
        let mut tasks = Vec::with_capacity(urls.len());
        for (idx, url) in urls.iter().enumerate() {
            let (tx, rx) = mpsc::channel(opts.send_queue.max(1));
            senders.push(tx);
            let task = conn::RelayTask {
                idx,
                url: url.clone(),
                key: key.clone(),
                opts: opts.clone(),
                tls: tls.clone(),
                shared: shared.clone(),
                outgoing: rx,
                incoming: recv_tx.clone(),
                shutdown: shutdown.subscribe(),
            };
            tasks.push(tokio::spawn(task.run()));
        }
        RelayClient {
            inner: Arc::new(Inner {
                shared,
                senders,
                recv: tokio::sync::Mutex::new(recv_rx),
                shutdown,
                tasks: Mutex::new(tasks),
            }),
        }
    }

    /// The relays, in the order given (without duplicates).
    pub fn relays(&self) -> &[RelayUrl] {
        &self.inner.shared.urls
    }

    fn home_queue(&self, len: usize) -> Result<&mpsc::Sender<Datagram>, SendError> {
        if len > MAX_PAYLOAD {
            return Err(SendError::TooLarge(len));
        }
        if self.inner.shared.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        let home = self.inner.shared.home.load(Ordering::Acquire);
        self.inner.senders.get(home).ok_or(SendError::NoRelay)
    }

    /// Queues a datagram for `dst` on the home relay. Never waits: a full queue is
    /// [`SendError::QueueFull`] (the datagram is not taken), no connected relay is
    /// [`SendError::NoRelay`]. Datagrams still queued when their relay's connection drops are
    /// discarded.
    pub fn send(&self, dst: NodeId, payload: Bytes) -> Result<(), SendError> {
        let queue = self.home_queue(payload.len())?;
        queue.try_send((dst, payload)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => SendError::Closed,
        })
    }

    /// Like [`RelayClient::send`], but waits for room in the home relay's queue instead of
    /// failing with [`SendError::QueueFull`]: backpressure for bulk senders.
    pub async fn send_wait(&self, dst: NodeId, payload: Bytes) -> Result<(), SendError> {
        let queue = self.home_queue(payload.len())?;
        queue
            .send((dst, payload))
            .await
            .map_err(|_| SendError::Closed)
    }

    /// The next datagram from any relay: sender, payload and the relay it came through.
    /// `None` once the client is closed and everything received has been read.
    pub async fn recv(&self) -> Option<(NodeId, Bytes, RelayUrl)> {
        let (idx, src, payload) = self.inner.recv.lock().await.recv().await?;
        Some((src, payload, self.inner.shared.urls[idx].clone()))
    }

    /// Every relay's state and the home relay; changes are signalled on the receiver.
    pub fn state(&self) -> watch::Receiver<RelayClientState> {
        self.inner.shared.state.subscribe()
    }

    /// Events from now on (the receiver sees those sent after this call).
    pub fn events(&self) -> broadcast::Receiver<RelayEvent> {
        self.inner.shared.events.subscribe()
    }

    /// Waits until some relay is connected (there is a home relay) and returns it.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<RelayUrl, WaitError> {
        let mut rx = self.state();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|s| s.home.is_some())).await;
        match waited {
            Ok(Ok(s)) => s.home.clone().ok_or(WaitError::Closed),
            Ok(Err(_)) => Err(WaitError::Closed),
            Err(_) => Err(WaitError::Timeout(timeout)),
        }
    }

    /// Waits, at most `timeout`, while no relay is connected and some relay is still on its
    /// first attempt: a client that has just started has none for a moment, and what is sent
    /// meanwhile is dropped. Returns at once once a relay is connected, or once every relay
    /// has failed at least once (waiting longer would not help).
    pub async fn wait_first_connect(&self, timeout: Duration) {
        let first_attempt = |s: &RelayClientState| {
            s.relays
                .iter()
                .any(|r| matches!(r.state, RelayConnState::Connecting { attempt: 0 }))
        };
        let mut rx = self.state();
        let settled = rx.wait_for(|s| s.home.is_some() || !first_attempt(s));
        let _ = tokio::time::timeout(timeout, settled).await;
    }

    /// Closes every relay connection (with a WebSocket close) and waits for the tasks to end.
    /// Other clones of this client are closed too.
    pub async fn close(self) {
        self.inner.shared.closed.store(true, Ordering::Release);
        self.inner.shutdown.send_replace(true);
        let tasks =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            // A task only ends by itself; an error here means it panicked, which is logged.
            if let Err(e) = task.await {
                tracing::error!("relay task failed: {e}");
            }
        }
    }
}

/// The STUN port a relay serves beside it (`burrow relay` does, on its host).
pub const RELAY_STUN_PORT: u16 = 3478;

/// STUN servers for an endpoint that names no others: [`RELAY_STUN_PORT`] on each relay's
/// host (its IPv4 addresses; a host that does not resolve is left out).
pub async fn relay_stun_servers(relays: &[RelayUrl]) -> Vec<std::net::SocketAddr> {
    let mut out = Vec::new();
    for r in relays {
        if let Ok(addrs) = tokio::net::lookup_host((r.host(), RELAY_STUN_PORT)).await {
            out.extend(addrs.filter(std::net::SocketAddr::is_ipv4));
        }
    }
    out
}
