//! What a relay server is told: where to listen, TLS, co-hosted STUN and its limits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use burrow::config::RelayFileConfig;
use burrow::stun_service::StunOptions;
use burrow_proto::relay::server_conn::{ConnLimits, MAX_MESSAGE};

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
        c.stun = match (s.stun, s.alt_ip) {
            (Some(listen), alt_ip) => Some(StunOptions {
                listen,
                alt_ip,
                alt_port: None,
                threads: 1,
            }),
            (None, Some(_)) => return bad("--alt-ip needs --stun"),
            (None, None) => None,
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
        assert!(RelayConfig::from_settings(&s).unwrap().stun.is_some());
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
        assert!(c.stun.is_some());
    }
}
