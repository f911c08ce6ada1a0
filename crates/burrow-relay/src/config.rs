//! What a relay server is told: where to listen, TLS, co-hosted STUN, the bootstrap registry
//! and their limits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use burrow::config::RelayFileConfig;
use burrow_proto::relay::server_conn::{ConnLimits, MAX_MESSAGE};

use crate::stun::{AltPort, StunOptions};

/// The relay's limits. Every one is explicit, has a default and a `burrow relay` flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// WebSocket sessions (handshaking or authenticated) at once; more get HTTP 503.
    /// Default 10,000. Flag `--max-clients`.
    pub max_clients: usize,
    /// TCP connections at once from one source IP; more are closed at accept.
    /// Default 64. Flag `--max-conns-per-ip`.
    pub max_conns_per_ip: usize,
    /// Sustained bytes per second one client may send (0 = unlimited). Over it, the relay
    /// stops reading from that client until its bucket refills, so TCP slows the sender.
    /// Default 12,500,000 (100 Mbit/s). Flag `--client-rate`.
    pub client_rate_bytes_per_sec: u64,
    /// Bytes a client may send at once above its rate. Default 2 MiB. Flag `--client-burst`.
    pub client_burst_bytes: u64,
    /// Time from TCP accept to a valid ClientAuth (and for reading HTTP request headers);
    /// against slowloris. Default 10 s. Flag `--handshake-timeout`.
    pub handshake_timeout: Duration,
    /// A client that sends nothing for this long is closed; clients ping well within it (the
    /// server tells them the value in AuthOk). Default 60 s. Flag `--idle-timeout`.
    pub idle_timeout: Duration,
    /// Largest WebSocket message accepted from a client, in bytes; a larger one closes that
    /// client with WebSocket code 1009. Default 65,569 (a 64 KiB payload plus the 33-byte
    /// frame header). Flag `--max-frame`.
    pub max_frame_bytes: usize,
    /// Frames waiting to be written to one client; when full, frames for it are dropped
    /// (and counted), never blocking the sender. Default 256. Flag `--client-queue-frames`.
    pub client_queue_frames: usize,
    /// Bytes waiting to be written to one client, the same way. Default 1 MiB.
    /// Flag `--client-queue-bytes`.
    pub client_queue_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clients: 10_000,
            max_conns_per_ip: 64,
            client_rate_bytes_per_sec: 100_000_000 / 8,
            client_burst_bytes: 2 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_frame_bytes: MAX_MESSAGE,
            client_queue_frames: 256,
            client_queue_bytes: 1024 * 1024,
        }
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

/// The bootstrap registry's limits. Every one is explicit, has a default and a key in the
/// config file's `[relay]` table (written here after each field).
#[derive(Clone, Debug, PartialEq)]
pub struct RegistryLimits {
    /// Records held at once; a new node's record beyond it gets HTTP 503.
    /// Default 1,000,000. `registry_max_records`.
    pub max_records: usize,
    /// Records listed under one namespace; a new one beyond it gets HTTP 503.
    /// Default 100,000. `registry_max_per_namespace`.
    pub max_per_namespace: usize,
    /// Namespaces one record may be listed under. Default 8. `registry_max_namespaces`.
    pub max_namespaces_per_record: usize,
    /// Longest a record is held after its last registration, whatever `ttl_secs` asks for
    /// (a longer one is lowered to it); a record is never held past its own `expires`.
    /// Default 24 h. `registry_max_ttl`.
    pub max_ttl: Duration,
    /// Largest request body, bytes; larger gets HTTP 413. Default 4096 (a signed record is at
    /// most 1000 bytes, 1336 in base64). `registry_max_body`.
    pub max_body_bytes: usize,
    /// Registry requests per second from one IP address (token bucket; 0 = unlimited); over
    /// it, HTTP 429. Default 20. `registry_ip_rate`.
    pub ip_rate_per_sec: f64,
    /// Registry requests one IP address may make at once above its rate. Default 100.
    /// `registry_ip_burst`.
    pub ip_burst: u32,
    /// Writes (register, refresh, delete) per second for one key (0 = unlimited); over it,
    /// HTTP 429. Counted only once the request's signature has verified, so nobody can use up
    /// another key's budget. Default 0.2 (one every 5 s). `registry_key_rate`.
    pub key_rate_per_sec: f64,
    /// Writes one key may make at once above its rate. Default 10. `registry_key_burst`.
    pub key_burst: u32,
    /// Records in one page of a namespace listing, at most (and when `limit` is not given).
    /// Default 100. `registry_page_size`.
    pub page_size: usize,
}

impl Default for RegistryLimits {
    fn default() -> Self {
        RegistryLimits {
            max_records: 1_000_000,
            max_per_namespace: 100_000,
            max_namespaces_per_record: 8,
            max_ttl: Duration::from_secs(24 * 3600),
            max_body_bytes: 4096,
            ip_rate_per_sec: 20.0,
            ip_burst: 100,
            key_rate_per_sec: 0.2,
            key_burst: 10,
            page_size: 100,
        }
    }
}

impl RegistryLimits {
    /// No rate limits: for tests and benchmarks.
    pub fn unlimited() -> Self {
        RegistryLimits {
            ip_rate_per_sec: 0.0,
            key_rate_per_sec: 0.0,
            ..RegistryLimits::default()
        }
    }
}

/// The bootstrap registry: signed node records by key and by namespace, over HTTP JSON (see
/// [`crate::records`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RegistryConfig {
    /// Serve `/records` and `/namespaces`. Default true. Flag `--no-registry` turns it off.
    pub enabled: bool,
    /// Its limits.
    pub limits: RegistryLimits,
    /// Keep the records in this file across restarts: loaded (and every record re-verified,
    /// expired ones dropped) at start, written every `snapshot_interval` when something
    /// changed, and at shutdown. Default none: records live in memory only.
    /// Flag `--records-snapshot`.
    pub snapshot: Option<PathBuf>,
    /// How often the snapshot is written (when records changed). Default 60 s.
    /// `registry_snapshot_interval`.
    pub snapshot_interval: Duration,
    /// How often expired records are dropped. Default 30 s. `registry_sweep_interval`.
    pub sweep_interval: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            enabled: true,
            limits: RegistryLimits::default(),
            snapshot: None,
            snapshot_interval: Duration::from_secs(60),
            sweep_interval: Duration::from_secs(30),
        }
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
    /// Co-hosted STUN service, if any.
    pub stun: Option<StunOptions>,
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
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            stun: None,
            tls: None,
            limits: Limits::default(),
            registry: RegistryConfig::default(),
            restart_notice: RestartNotice::default(),
            shutdown_grace: Duration::from_secs(2),
            ws_read_buffer_bytes: 4 * 1024,
            ws_write_buffer_bytes: 16 * 1024,
        }
    }
}

impl RelayConfig {
    /// The configuration that `burrow relay` settings describe (the config file's `[relay]`
    /// table with the flags laid over it); unset values keep their defaults.
    pub fn from_settings(s: &RelayFileConfig) -> Result<RelayConfig, crate::RelayError> {
        let bad = |m: &str| Err(crate::RelayError::Config(m.to_string()));
        let mut c = RelayConfig::default();
        let Some(listen) = s.listen else {
            return bad("no listen address (--listen IP:PORT or listen in [relay])");
        };
        c.listen = listen;
        let alt_port = match (s.alt_port, s.no_alt_port.unwrap_or(false)) {
            (Some(_), true) => return bad("--alt-port and --no-alt-port contradict each other"),
            (Some(port), false) => AltPort::Port(port),
            (None, true) => AltPort::Off,
            (None, false) => AltPort::Next,
        };
        c.stun = match s.stun {
            Some(listen) => Some(StunOptions {
                listen,
                alt_ip: s.alt_ip,
                alt_port,
                threads: 1,
            }),
            None if s.alt_ip.is_some() || s.alt_port.is_some() => {
                return bad("--alt-ip and --alt-port need --stun")
            }
            None => None,
        };
        c.tls = match (&s.tls_cert, &s.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => None,
            _ => return bad("TLS needs both --tls-cert and --tls-key"),
        };
        let l = &mut c.limits;
        l.max_clients = s.max_clients.unwrap_or(l.max_clients);
        l.max_conns_per_ip = s.max_conns_per_ip.unwrap_or(l.max_conns_per_ip);
        l.client_rate_bytes_per_sec = s.client_rate.unwrap_or(l.client_rate_bytes_per_sec);
        l.client_burst_bytes = s.client_burst.unwrap_or(l.client_burst_bytes);
        l.handshake_timeout = s.handshake_timeout.unwrap_or(l.handshake_timeout);
        l.idle_timeout = s.idle_timeout.unwrap_or(l.idle_timeout);
        l.max_frame_bytes = s.max_frame.unwrap_or(l.max_frame_bytes);
        l.client_queue_frames = s.client_queue_frames.unwrap_or(l.client_queue_frames);
        l.client_queue_bytes = s.client_queue_bytes.unwrap_or(l.client_queue_bytes);
        if l.max_clients == 0 || l.max_conns_per_ip == 0 || l.client_queue_frames == 0 {
            return bad("max-clients, max-conns-per-ip and client-queue-frames must be at least 1");
        }
        if l.handshake_timeout.is_zero() || l.idle_timeout.is_zero() {
            return bad("timeouts must be longer than zero");
        }
        if l.max_frame_bytes < 128 {
            return bad("max-frame must be at least 128 bytes (a ClientAuth is 98)");
        }
        let r = &mut c.registry;
        r.enabled = !s.no_registry.unwrap_or(false);
        r.snapshot = s.records_snapshot.clone();
        r.snapshot_interval = s.registry_snapshot_interval.unwrap_or(r.snapshot_interval);
        r.sweep_interval = s.registry_sweep_interval.unwrap_or(r.sweep_interval);
        let rl = &mut r.limits;
        rl.max_records = s.registry_max_records.unwrap_or(rl.max_records);
        rl.max_per_namespace = s.registry_max_per_namespace.unwrap_or(rl.max_per_namespace);
        rl.max_namespaces_per_record = s
            .registry_max_namespaces
            .unwrap_or(rl.max_namespaces_per_record);
        rl.max_ttl = s.registry_max_ttl.unwrap_or(rl.max_ttl);
        rl.max_body_bytes = s.registry_max_body.unwrap_or(rl.max_body_bytes);
        rl.ip_rate_per_sec = s.registry_ip_rate.unwrap_or(rl.ip_rate_per_sec);
        rl.ip_burst = s.registry_ip_burst.unwrap_or(rl.ip_burst);
        rl.key_rate_per_sec = s.registry_key_rate.unwrap_or(rl.key_rate_per_sec);
        rl.key_burst = s.registry_key_burst.unwrap_or(rl.key_burst);
        rl.page_size = s.registry_page_size.unwrap_or(rl.page_size);
        if rl.max_records == 0 || rl.max_per_namespace == 0 || rl.page_size == 0 {
            return bad("registry max records, max per namespace and page size must be at least 1");
        }
        if rl.max_ttl.is_zero() || r.snapshot_interval.is_zero() || r.sweep_interval.is_zero() {
            return bad("registry max TTL and intervals must be longer than zero");
        }
        let valid_rate = |r: f64| r.is_finite() && r >= 0.0;
        if !valid_rate(rl.ip_rate_per_sec) || !valid_rate(rl.key_rate_per_sec) {
            return bad("registry rates must be numbers of at least 0");
        }
        if rl.max_body_bytes < 2048 {
            return bad(
                "registry max body must be at least 2048 bytes (a record is up to 1336 in base64)",
            );
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_fill_in_defaults_and_are_checked() {
        let mut s = RelayFileConfig {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            idle_timeout: Some(Duration::from_secs(5)),
            ..RelayFileConfig::default()
        };
        let c = RelayConfig::from_settings(&s).unwrap();
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(5));
        assert_eq!(c.limits.max_clients, Limits::default().max_clients);
        assert!(c.tls.is_none() && c.stun.is_none());
        s.tls_cert = Some("cert.pem".into());
        assert!(RelayConfig::from_settings(&s).is_err());
        s.tls_key = Some("key.pem".into());
        assert!(RelayConfig::from_settings(&s).unwrap().tls.is_some());
        s.alt_ip = Some([127, 0, 0, 2].into());
        assert!(RelayConfig::from_settings(&s).is_err());
        s.stun = Some("127.0.0.1:3478".parse().unwrap());
        let stun = RelayConfig::from_settings(&s).unwrap().stun.unwrap();
        assert_eq!(
            stun.alt_port,
            AltPort::Next,
            "a second STUN port by default"
        );
        s.no_alt_port = Some(true);
        let stun = RelayConfig::from_settings(&s).unwrap().stun.unwrap();
        assert_eq!(stun.alt_port, AltPort::Off);
        s.alt_port = Some(4000);
        assert!(
            RelayConfig::from_settings(&s).is_err(),
            "contradicting settings"
        );
        s.no_alt_port = None;
        let stun = RelayConfig::from_settings(&s).unwrap().stun.unwrap();
        assert_eq!(stun.alt_port, AltPort::Port(4000));
        s.max_clients = Some(0);
        assert!(RelayConfig::from_settings(&s).is_err());
        assert!(RelayConfig::from_settings(&RelayFileConfig::default()).is_err());
    }

    #[test]
    fn the_example_config_shows_the_defaults() {
        let text = include_str!("../../../deploy/relay.example.toml");
        let file: burrow::config::Config = toml::from_str(text).unwrap();
        let c = RelayConfig::from_settings(&file.relay.unwrap()).unwrap();
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.registry, RegistryConfig::default());
        assert!(c.stun.is_some());
    }
}
