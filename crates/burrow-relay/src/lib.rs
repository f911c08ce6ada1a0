//! burrow's relay server: forwards end-to-end encrypted datagrams between keys over
//! WebSocket, co-hosts STUN ([`stun`]), TURN on the STUN port ([`turn`]) and the bootstrap
//! registry of signed node records ([`records`]), and serves `GET /health`, `GET /stats`
//! (JSON: clients from pages and native ones, datagrams and signals forwarded, records,
//! uptime) and `GET /metrics`. With `allowed_keys` it admits only enrolled keys. [`RelaySettings`] are what an operator sets (`burrow relay`'s flags and
//! config file).
//!
//! ```no_run
//! # async fn run() -> Result<(), burrow_relay::RelayError> {
//! use burrow_relay::{RelayConfig, RelayServer};
//! let server = RelayServer::start(RelayConfig::default()).await?;
//! println!("clients connect to {}/relay", server.url());
//! server.shutdown().await; // tells every client Restarting, closes with 1012
//! # Ok(()) }
//! ```
//!
//! The protocol is [`burrow_proto::relay`]; each connection runs the sans-IO
//! [`burrow_proto::relay::server_conn::ServerConnection`] under a thin driver. It depends on
//! `burrow-proto`, never on the client library.

mod clients;
mod config;
mod http;
mod metrics;
mod presence;
mod public_urls;
pub mod records;
mod session;
mod settings;
pub mod stun;
mod tls;
pub mod turn;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{Limits, RegistryConfig, RegistryLimits, RelayConfig, RestartNotice, TlsFiles};
pub use metrics::{RelayStats, CLOSE_LABELS};
#[cfg(feature = "clap")]
pub use settings::RelayFlags;
pub use settings::{
    DurationError, HumanDuration, PeerRange, PublicUrl, RelaySettings, TurnUser, TurnUserError,
};
use stun::{StunService, StunServiceError};
pub use tls::TlsFileError;

/// The path of the WebSocket endpoint.
pub const RELAY_PATH: &str = "/relay";

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The TCP listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The co-hosted STUN service could not start.
    #[error("STUN")]
    Stun(#[from] StunServiceError),
    /// The settings do not make sense.
    #[error("{0}")]
    Config(String),
    /// The TLS certificate or key could not be used.
    #[error("TLS")]
    Tls(#[from] TlsFileError),
    /// The registry's snapshot file could not be read.
    #[error(transparent)]
    Snapshot(#[from] records::SnapshotError),
}

/// State every connection shares.
pub(crate) struct Shared {
    config: RelayConfig,
    metrics: metrics::Metrics,
    /// The connected clients.
    clients: clients::Clients,
    /// Which keys are connected, and for how much of the time (their reputation).
    presence: presence::Presence,
    /// The bootstrap registry, unless turned off.
    records: Option<records::routes::Registry>,
    /// The URLs clients must have signed for.
    public_urls: Arc<public_urls::PublicUrls>,
    /// Whether a client signing for a URL this relay does not know has been logged (once:
    /// it is news for the operator, not for every connection).
    warned_wrong_relay: AtomicBool,
    started: Instant,
    conn_ids: AtomicU64,
    /// Live WebSocket sessions, for max_clients and for shutdown to wait on.
    sessions: AtomicUsize,
    shutting_down: watch::Sender<bool>,
}

/// Resolves once shutdown has begun.
pub(crate) async fn until_shutdown(rx: &mut watch::Receiver<bool>) {
    // A watch::Ref is not Send, so it must not live across the caller's awaits.
    let _ = rx.wait_for(|s| *s).await;
}

impl Shared {
    fn next_conn_id(&self) -> u64 {
        self.conn_ids.fetch_add(1, Ordering::Relaxed)
    }
}

/// A running relay. Dropping it without [`RelayServer::shutdown`] stops accepting but leaves
/// sessions to end on their own.
pub struct RelayServer {
    local_addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
    stun: Option<StunService>,
    turn: Option<turn::TurnService>,
    /// The registry's sweeper and snapshot writer.
    maintenance: Vec<JoinHandle<()>>,
}

/// What `/stats` says: who is connected, what went through, what the registry holds.
#[derive(Clone, Debug, serde::Serialize, PartialEq, Eq)]
pub(crate) struct Stats {
    /// Authenticated clients from web pages.
    pub browser_clients: u64,
    /// Authenticated clients that are not (native nodes).
    pub native_clients: u64,
    /// Datagrams forwarded between clients.
    pub frames_forwarded: u64,
    /// Of them, WebRTC signals ([`burrow_proto::signal`]).
    pub signals_forwarded: u64,
    /// Payload bytes forwarded.
    pub bytes_forwarded: u64,
    /// Records the registry holds (0 without one).
    pub records: u64,
    /// Seconds since start.
    pub uptime_secs: u64,
}

/// A snapshot for `/health`.
#[derive(Clone, Debug, serde::Serialize, PartialEq, Eq)]
pub struct Health {
    /// `"ok"`, or `"shutting_down"`.
    pub status: &'static str,
    /// Authenticated clients.
    pub clients: u64,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// burrow's version.
    pub version: &'static str,
}

impl RelayServer {
    /// Binds the listener (and the STUN sockets), loads TLS, and starts serving.
    pub async fn start(config: RelayConfig) -> Result<RelayServer, RelayError> {
        let (tls, cert) = match &config.tls {
            Some(files) => {
                let (acceptor, cert) = tls::acceptor(files)?;
                (Some(acceptor), Some(cert))
            }
            None => (None, None),
        };
        let public_urls = Arc::new(public_urls::PublicUrls::new(
            config.public_urls.clone(),
            cert,
        ));
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| RelayError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| RelayError::Bind {
            addr: config.listen,
            source,
        })?;
        let metrics = metrics::Metrics::new();
        let (stun, turn) = match (&config.stun, &config.turn) {
            (Some(stun), Some(turn)) => {
                let (handoff, queue) = turn::channel(&metrics.turn);
                let service = StunService::start_with(stun, Some(handoff))?;
                let local = service.local_addrs()[0].1;
                let bind_err = |source| RelayError::Bind {
                    addr: local,
                    source,
                };
                let listener = TcpListener::bind(local).await.map_err(bind_err)?;
                let socket = service.primary_socket();
                let driver =
                    turn::TurnService::start(turn, queue, socket, listener, metrics.turn.clone())
                        .map_err(bind_err)?;
                tracing::info!(%local, relay_ip = %turn.relay_ip, "TURN serving on UDP and TCP");
                (Some(service), Some(driver))
            }
            (Some(stun), None) => (Some(StunService::start(stun)?), None),
            (None, Some(_)) => return Err(RelayError::Config("TURN needs STUN's port".into())),
            (None, None) => (None, None),
        };
        let records = if config.registry.enabled {
            let store = Arc::new(records::RecordStore::new(config.registry.limits.clone()));
            if let Some(path) = config.registry.snapshot.clone() {
                let loader = store.clone();
                let now = records::routes::unix_now();
                let loaded = tokio::task::spawn_blocking(move || loader.load(&path, now))
                    .await
                    .map_err(|e| {
                        RelayError::Config(format!("loading the records snapshot: {e}"))
                    })??;
                tracing::info!(loaded, "records snapshot loaded");
            }
            Some(records::routes::Registry::new(store))
        } else {
            None
        };
        let (shutting_down, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            config,
            metrics,
            clients: clients::Clients::default(),
            presence: presence::Presence::default(),
            records,
            public_urls,
            warned_wrong_relay: AtomicBool::new(false),
            started: Instant::now(),
            conn_ids: AtomicU64::new(1),
            sessions: AtomicUsize::new(0),
            shutting_down,
        });
        let is_tls = tls.is_some();
        let maintenance = records::maintenance(&shared);
        let accept = tokio::spawn(http::accept_loop(listener, shared.clone(), tls));
        tracing::info!(%local_addr, tls = is_tls, "relay listening");
        Ok(RelayServer {
            local_addr,
            tls: is_tls,
            shared,
            accept,
            stun,
            turn,
            maintenance,
        })
    }

    /// The bound TCP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The relay's URL as clients are given it: the first configured public URL, or
    /// `http://IP:PORT` (`https://` with TLS) of the bound address. The WebSocket endpoint is
    /// this with `ws(s)://` and [`RELAY_PATH`].
    pub fn url(&self) -> String {
        if let Some(url) = self.shared.public_urls.first() {
            return url.to_string();
        }
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// The co-hosted STUN service's addresses, if any.
    pub fn stun_addrs(&self) -> Vec<SocketAddr> {
        self.stun
            .as_ref()
            .map(|s| s.local_addrs().iter().map(|(_, a)| *a).collect())
            .unwrap_or_default()
    }

    /// The IP of TURN's relayed addresses, if it serves TURN (on the first of
    /// [`RelayServer::stun_addrs`]).
    pub fn turn_relay_ip(&self) -> Option<std::net::IpAddr> {
        self.shared.config.turn.as_ref().map(|t| t.relay_ip)
    }

    /// The TURN server's counters, if it serves TURN.
    pub fn turn_status(&self) -> Option<turn::TurnStatus> {
        self.turn.as_ref().map(|t| t.status())
    }

    /// The counters.
    pub fn stats(&self) -> RelayStats {
        self.shared.metrics.snapshot()
    }

    /// What `/health` says.
    pub fn health(&self) -> Health {
        self.shared.health()
    }

    /// The bootstrap registry's records, unless the registry is turned off. Programs (and the
    /// benchmark) may insert into it directly.
    pub fn records(&self) -> Option<&Arc<records::RecordStore>> {
        self.shared.records.as_ref().map(|r| &r.store)
    }

    /// Graceful shutdown: stops accepting, sends every client a Restarting notice and a
    /// close with code 1012, waits up to the configured grace for them, stops STUN.
    pub async fn shutdown(mut self) {
        self.shared.shutting_down.send_replace(true);
        self.accept.abort();
        let _ = (&mut self.accept).await;
        let deadline =
            Instant::now() + self.shared.config.shutdown_grace + Duration::from_millis(500);
        while self.shared.sessions.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // TURN first: it sends from the STUN socket.
        self.turn.take();
        if let Some(stun) = self.stun.take() {
            let _ = tokio::task::spawn_blocking(move || stun.shutdown()).await;
        }
        for task in self.maintenance.drain(..) {
            task.abort();
            let _ = task.await;
        }
        // After the writers are gone, so the last snapshot has every record.
        records::final_snapshot(&self.shared).await;
        tracing::info!("relay stopped");
    }
}

impl Shared {
    fn stats(&self) -> Stats {
        let m = self.metrics.snapshot();
        Stats {
            browser_clients: m.browser_clients,
            native_clients: m.clients.saturating_sub(m.browser_clients),
            frames_forwarded: m.frames_forwarded,
            signals_forwarded: m.signals_forwarded,
            bytes_forwarded: m.bytes_forwarded,
            records: self.records.as_ref().map_or(0, |r| r.store.len() as u64),
            uptime_secs: self.started.elapsed().as_secs(),
        }
    }

    fn health(&self) -> Health {
        Health {
            status: if *self.shutting_down.borrow() {
                "shutting_down"
            } else {
                "ok"
            },
            clients: self.clients.len() as u64,
            uptime_secs: self.started.elapsed().as_secs(),
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

impl Drop for RelayServer {
    fn drop(&mut self) {
        self.accept.abort();
        for task in &self.maintenance {
            task.abort();
        }
    }
}
