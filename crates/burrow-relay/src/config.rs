//! What a relay server is told: where to listen, TLS, co-hosted STUN, the bootstrap registry
//! and their limits. The defaults of what operators set are [`RelaySettings`]'s.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use burrow_proto::identity::NodeId;
use burrow_proto::relay::server_conn::ConnLimits;
use burrow_proto::relay::RelayUrl;

use crate::settings::RelaySettings;
use crate::stun::StunOptions;
use crate::turn::TurnOptions;

/// The relay's limits. Every one is explicit and comes from the setting (a `burrow relay`
/// flag, a `[relay]` key) named after it, which gives its default: see [`RelaySettings`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// WebSocket sessions (handshaking or authenticated) at once; more get HTTP 503.
    /// Setting `max_clients`.
    pub max_clients: usize,
    /// TCP connections at once from one source, an IPv4 address or an IPv6 /64 (a site may
    /// use every address of its /64); more are closed at accept. Setting `max_conns_per_ip`.
    pub max_conns_per_ip: usize,
    /// Sustained bytes per second one client may send (0 = unlimited). Over it, the relay
    /// stops reading from that client until its bucket refills, so TCP slows the sender.
    /// Setting `client_rate`.
    pub client_rate_bytes_per_sec: u64,
    /// Bytes a client may send at once above its rate. Setting `client_burst`.
    pub client_burst_bytes: u64,
    /// Time from TCP accept to a valid ClientAuth (and for reading HTTP request headers);
    /// against slowloris. Setting `handshake_timeout`.
    pub handshake_timeout: Duration,
    /// A client that sends nothing for this long is closed; clients ping well within it (the
    /// server tells them the value in AuthOk). Setting `idle_timeout`.
    pub idle_timeout: Duration,
    /// Largest WebSocket message accepted from a client, in bytes; a larger one closes that
    /// client with WebSocket code 1009. By default the protocol's largest (a 64 KiB payload
    /// plus the 33-byte frame header). Setting `max_frame`.
    pub max_frame_bytes: usize,
    /// Frames waiting to be written to one client; when full, frames for it are dropped
    /// (and counted), never blocking the sender. Setting `client_queue_frames`.
    pub client_queue_frames: usize,
    /// Bytes waiting to be written to one client, the same way. Setting `client_queue_bytes`.
    pub client_queue_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        RelaySettings::default().limits()
    }
}

impl Limits {
    /// No rate limit and room for many clients from one address: for tests and benchmarks.
    pub fn unlimited() -> Self {
        Limits {
            max_clients: 1_000_000,
            max_conns_per_ip: 1_000_000,
            client_rate_bytes_per_sec: 0,
            ..Limits::default()
        }
    }

    /// The part of the limits the per-connection core enforces.
    pub fn conn_limits(&self) -> ConnLimits {
        ConnLimits {
            handshake_timeout: self.handshake_timeout,
            idle_timeout: self.idle_timeout,
            rate_bytes_per_sec: self.client_rate_bytes_per_sec,
            burst_bytes: self.client_burst_bytes.max(self.max_frame_bytes as u64),
            max_message_bytes: self.max_frame_bytes,
        }
    }
}

/// The bootstrap registry's limits. Every one is explicit and comes from a setting, as
/// [`Limits`]' do.
#[derive(Clone, Debug, PartialEq)]
pub struct RegistryLimits {
    /// Records held at once; a new node's record beyond it gets HTTP 503.
    /// Setting `registry_max_records`.
    pub max_records: usize,
    /// Records listed under one namespace; a new one beyond it gets HTTP 503.
    /// Setting `registry_max_per_namespace`.
    pub max_per_namespace: usize,
    /// Namespaces one record may be listed under. Setting `registry_max_namespaces`.
    pub max_namespaces_per_record: usize,
    /// Records one source (an IPv4 address or an IPv6 /64) may hold, counted by where each
    /// record's latest registration came from (0 = no cap); a new one beyond it gets HTTP
    /// 429. Setting `registry_max_per_source`.
    pub max_per_source: usize,
    /// Records one source may list under any one namespace (0 = no cap); beyond it, HTTP 429.
    /// So a flood from one source takes at most this many places in a listing, however its
    /// keys sort (see [`crate::records`]). Setting `registry_max_per_source_namespace`.
    pub max_per_source_namespace: usize,
    /// Longest a record is held after its last registration, whatever `ttl_secs` asks for
    /// (a longer one is lowered to it); a record is never held past its own `expires`.
    /// Setting `registry_max_ttl`.
    pub max_ttl: Duration,
    /// Largest request body, bytes; larger gets HTTP 413 (a signed record is at most 1000
    /// bytes, 1336 in base64). Setting `registry_max_body`.
    pub max_body_bytes: usize,
    /// Registry requests per second from one source, an IPv4 address or an IPv6 /64 (token
    /// bucket; 0 = unlimited); over it, HTTP 429. The buckets of the 100,000 sources seen
    /// last are kept; one older than them comes back with a full burst.
    /// Setting `registry_ip_rate`.
    pub ip_rate_per_sec: f64,
    /// Registry requests one source may make at once above its rate.
    /// Setting `registry_ip_burst`.
    pub ip_burst: u32,
    /// Writes (register, refresh, delete) per second for one key (0 = unlimited); over it,
    /// HTTP 429. Counted only once the request's signature has verified, so nobody can use up
    /// another key's budget. Setting `registry_key_rate`.
    pub key_rate_per_sec: f64,
    /// Writes one key may make at once above its rate. Setting `registry_key_burst`.
    pub key_burst: u32,
    /// Records in one page of a namespace listing, at most (and when `limit` is not given).
    /// Setting `registry_page_size`.
    pub page_size: usize,
}

impl Default for RegistryLimits {
    fn default() -> Self {
        RegistryConfig::default().limits
    }
}

impl RegistryLimits {
    /// No rate limits (the caps on records stay): for tests and benchmarks.
    pub fn unlimited() -> Self {
        RegistryLimits {
            ip_rate_per_sec: 0.0,
            key_rate_per_sec: 0.0,
            ..RegistryLimits::default()
        }
    }
}

/// The bootstrap registry: signed node records by key and by namespace, over HTTP JSON (see
/// [`crate::records`]). Its fields come from settings, as [`Limits`]' do.
#[derive(Clone, Debug, PartialEq)]
pub struct RegistryConfig {
    /// Serve `/records` and `/namespaces`. Setting `no_registry` turns it off.
    pub enabled: bool,
    /// Its limits.
    pub limits: RegistryLimits,
    /// Keep the records in this file across restarts: loaded (and every record re-verified,
    /// expired ones dropped) at start, written every `snapshot_interval` when something
    /// changed, and at shutdown. Without it, records live in memory only.
    /// Setting `records_snapshot`.
    pub snapshot: Option<PathBuf>,
    /// How often the snapshot is written (when records changed).
    /// Setting `registry_snapshot_interval`.
    pub snapshot_interval: Duration,
    /// How often expired records are dropped. Setting `registry_sweep_interval`.
    pub sweep_interval: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RelaySettings::default().registry()
    }
}

/// PEM files for TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// What a restarting relay tells its clients (the [`burrow_proto::relay::Frame::Restarting`]
/// notice).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartNotice {
    /// Reconnect after about this long. Default 200 ms.
    pub reconnect_in: Duration,
    /// Keep trying this relay for about this long before another. Default 30 s.
    pub try_for: Duration,
}

impl Default for RestartNotice {
    fn default() -> Self {
        RestartNotice {
            reconnect_in: Duration::from_millis(200),
            try_for: Duration::from_secs(30),
        }
    }
}

/// Everything [`crate::RelayServer::start`] needs.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// TCP address for HTTP(S) and WebSocket. Default `127.0.0.1:0` (any free port), which
    /// suits tests; a public relay sets it.
    pub listen: SocketAddr,
    /// The URLs clients dial to reach this relay, which their ClientAuth must be signed for.
    /// Empty (the default): the address each connection arrives at, and with TLS the names
    /// on the certificate (see the `public_urls` module). Setting `public_url`.
    pub public_urls: Vec<RelayUrl>,
    /// Co-hosted STUN service, if any.
    pub stun: Option<StunOptions>,
    /// TURN on the STUN service's primary port, if any (needs `stun`).
    pub turn: Option<TurnOptions>,
    /// Serve HTTPS/WSS with these files; plain HTTP when `None`.
    pub tls: Option<TlsFiles>,
    /// Limits.
    pub limits: Limits,
    /// The bootstrap registry.
    pub registry: RegistryConfig,
    /// What graceful shutdown tells clients.
    pub restart_notice: RestartNotice,
    /// How long graceful shutdown waits for clients to take their close frame. Default 2 s.
    pub shutdown_grace: Duration,
    /// tungstenite's read buffer per connection, bytes: the largest single read from a
    /// socket, and what an idle connection holds. Default 4 KiB.
    pub ws_read_buffer_bytes: usize,
    /// Bytes tungstenite gathers before writing to the socket (outgoing frames are batched
    /// and flushed once the queue is drained). Default 16 KiB.
    pub ws_write_buffer_bytes: usize,
    /// The only keys admitted, to the relay and to the registry (enrolled devices); `None`
    /// (the default): any key.
    pub allowed_keys: Option<Arc<BTreeSet<NodeId>>>,
    /// The time over which a key's reputation is its share connected (see `presence`).
    /// Default a day.
    pub reputation_window: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_urls: Vec::new(),
            stun: None,
            turn: None,
            tls: None,
            limits: Limits::default(),
            registry: RegistryConfig::default(),
            restart_notice: RestartNotice::default(),
            shutdown_grace: Duration::from_secs(2),
            ws_read_buffer_bytes: 4 * 1024,
            ws_write_buffer_bytes: 16 * 1024,
            allowed_keys: None,
            reputation_window: Duration::from_secs(24 * 3600),
        }
    }
}
