//! User configuration: a TOML file, overridden by the environment, overridden by flags.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The public STUN servers the seed projects use, queried when nothing else is configured.
pub const DEFAULT_STUN_SERVERS: &[&str] = &[
    "stun.l.google.com:19302",
    "stun1.l.google.com:19302",
    "stun.cloudflare.com:3478",
    "stun.stunprotocol.org:3478",
];

/// Environment variable with a comma-separated list of STUN servers.
pub const STUN_SERVERS_ENV: &str = "BURROW_STUN_SERVERS";
/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "BURROW_CONFIG";

/// The configuration file's contents. Unknown keys are errors, so typos do not pass silently.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// STUN servers as `host:port`.
    pub stun_servers: Option<Vec<String>>,
    /// `burrow relay` settings (the `[relay]` table); its flags override them.
    pub relay: Option<RelayFileConfig>,
}

/// The `[relay]` table: the same settings as `burrow relay`'s flags (with `_` for `-`), each
/// optional. Sizes are
/// bytes, rates bytes per second, durations written like `10s` or `500ms`.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RelayFileConfig {
    /// TCP address for HTTP(S) and WebSocket.
    pub listen: Option<SocketAddr>,
    /// UDP address of the co-hosted STUN server.
    pub stun: Option<SocketAddr>,
    /// Alternate IP for RFC 5780 STUN.
    pub alt_ip: Option<IpAddr>,
    /// STUN's second port [default: the STUN port + 1].
    pub alt_port: Option<u16>,
    /// No second STUN port (not with `alt_ip`).
    pub no_alt_port: Option<bool>,
    /// TLS certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Maximum WebSocket sessions.
    pub max_clients: Option<usize>,
    /// Maximum TCP connections per source IP.
    pub max_conns_per_ip: Option<usize>,
    /// Bytes per second per client; 0 = unlimited.
    pub client_rate: Option<u64>,
    /// Burst bytes per client.
    pub client_burst: Option<u64>,
    /// Time to complete the handshake.
    #[serde(default, deserialize_with = "duration")]
    pub handshake_timeout: Option<Duration>,
    /// Silence after which a client is closed.
    #[serde(default, deserialize_with = "duration")]
    pub idle_timeout: Option<Duration>,
    /// Largest WebSocket message from a client, bytes.
    pub max_frame: Option<usize>,
    /// Frames queued per client.
    pub client_queue_frames: Option<usize>,
    /// Bytes queued per client.
    pub client_queue_bytes: Option<usize>,
    /// Turn the bootstrap registry off.
    pub no_registry: Option<bool>,
    /// File the registry keeps its records in across restarts.
    pub records_snapshot: Option<PathBuf>,
    /// How often the records snapshot is written.
    #[serde(default, deserialize_with = "duration")]
    pub registry_snapshot_interval: Option<Duration>,
    /// How often expired records are dropped.
    #[serde(default, deserialize_with = "duration")]
    pub registry_sweep_interval: Option<Duration>,
    /// Records held at once.
    pub registry_max_records: Option<usize>,
    /// Records per namespace.
    pub registry_max_per_namespace: Option<usize>,
    /// Namespaces per record.
    pub registry_max_namespaces: Option<usize>,
    /// Longest a record is held after its registration.
    #[serde(default, deserialize_with = "duration")]
    pub registry_max_ttl: Option<Duration>,
    /// Largest registry request body, bytes.
    pub registry_max_body: Option<usize>,
    /// Registry requests per second per IP; 0 = unlimited.
    pub registry_ip_rate: Option<f64>,
    /// Registry request burst per IP.
    pub registry_ip_burst: Option<u32>,
    /// Registry writes per second per key; 0 = unlimited.
    pub registry_key_rate: Option<f64>,
    /// Registry write burst per key.
    pub registry_key_burst: Option<u32>,
    /// Records per page of a namespace listing, at most.
    pub registry_page_size: Option<usize>,
}

impl RelayFileConfig {
    /// These settings with every one that `flags` sets replaced by the flag's value.
    pub fn overridden_by(self, flags: RelayFileConfig) -> RelayFileConfig {
        RelayFileConfig {
            listen: flags.listen.or(self.listen),
            stun: flags.stun.or(self.stun),
            alt_ip: flags.alt_ip.or(self.alt_ip),
            alt_port: flags.alt_port.or(self.alt_port),
            no_alt_port: flags.no_alt_port.or(self.no_alt_port),
            tls_cert: flags.tls_cert.or(self.tls_cert),
            tls_key: flags.tls_key.or(self.tls_key),
            max_clients: flags.max_clients.or(self.max_clients),
            max_conns_per_ip: flags.max_conns_per_ip.or(self.max_conns_per_ip),
            client_rate: flags.client_rate.or(self.client_rate),
            client_burst: flags.client_burst.or(self.client_burst),
            handshake_timeout: flags.handshake_timeout.or(self.handshake_timeout),
            idle_timeout: flags.idle_timeout.or(self.idle_timeout),
            max_frame: flags.max_frame.or(self.max_frame),
            client_queue_frames: flags.client_queue_frames.or(self.client_queue_frames),
            client_queue_bytes: flags.client_queue_bytes.or(self.client_queue_bytes),
            no_registry: flags.no_registry.or(self.no_registry),
            records_snapshot: flags.records_snapshot.or(self.records_snapshot),
            registry_snapshot_interval: flags
                .registry_snapshot_interval
                .or(self.registry_snapshot_interval),
            registry_sweep_interval: flags
                .registry_sweep_interval
                .or(self.registry_sweep_interval),
            registry_max_records: flags.registry_max_records.or(self.registry_max_records),
            registry_max_per_namespace: flags
                .registry_max_per_namespace
                .or(self.registry_max_per_namespace),
            registry_max_namespaces: flags
                .registry_max_namespaces
                .or(self.registry_max_namespaces),
            registry_max_ttl: flags.registry_max_ttl.or(self.registry_max_ttl),
            registry_max_body: flags.registry_max_body.or(self.registry_max_body),
            registry_ip_rate: flags.registry_ip_rate.or(self.registry_ip_rate),
            registry_ip_burst: flags.registry_ip_burst.or(self.registry_ip_burst),
            registry_key_rate: flags.registry_key_rate.or(self.registry_key_rate),
            registry_key_burst: flags.registry_key_burst.or(self.registry_key_burst),
            registry_page_size: flags.registry_page_size.or(self.registry_page_size),
        }
    }
}

/// A duration written like `10s`, `500ms` or `2m`.
fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("{e} (write durations like 500ms, 15s, 2m)")))
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("config file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("config file {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: toml::de::Error,
    },
}

/// `$XDG_CONFIG_HOME/burrow`, else `~/.config/burrow`, else `./.burrow`.
pub fn config_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("burrow");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".config").join("burrow"),
        None => PathBuf::from(".burrow"),
    }
}

impl Config {
    /// The file named by `$BURROW_CONFIG`, else `config.toml` in [`config_dir`].
    pub fn default_path() -> PathBuf {
        std::env::var_os(CONFIG_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| config_dir().join("config.toml"))
    }

    /// Reads `path`; a missing file is an empty configuration.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|source| ConfigError::Parse {
                path: path.to_owned(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(source) => Err(ConfigError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// STUN servers by precedence: `flags`, then `$BURROW_STUN_SERVERS`, then the file, then
    /// [`DEFAULT_STUN_SERVERS`].
    pub fn stun_servers(&self, flags: &[String]) -> Vec<String> {
        if !flags.is_empty() {
            return flags.to_vec();
        }
        if let Ok(env) = std::env::var(STUN_SERVERS_ENV) {
            let list: Vec<String> = env
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            if !list.is_empty() {
                return list;
            }
        }
        if let Some(list) = self.stun_servers.as_ref().filter(|l| !l.is_empty()) {
            return list.clone();
        }
        DEFAULT_STUN_SERVERS.iter().map(|s| s.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_unknown_keys() {
        let c: Config = toml::from_str("stun_servers = [\"127.0.0.1:3478\"]").unwrap();
        assert_eq!(c.stun_servers(&[]).len(), 1);
        assert!(toml::from_str::<Config>("stun_server = []").is_err());
        let flags = vec!["10.0.0.1:1".to_string()];
        assert_eq!(c.stun_servers(&flags), flags);
        assert_eq!(
            Config::default().stun_servers(&[]).len(),
            DEFAULT_STUN_SERVERS.len()
        );
    }

    #[test]
    fn relay_table_parses_and_flags_override_it() {
        let c: Config = toml::from_str(
            "[relay]\nlisten = \"0.0.0.0:443\"\nhandshake_timeout = \"500ms\"\n\
             idle_timeout = \"2m\"\nclient_rate = 0\nmax_clients = 5\n",
        )
        .unwrap();
        let file = c.relay.unwrap();
        assert_eq!(file.handshake_timeout, Some(Duration::from_millis(500)));
        assert_eq!(file.idle_timeout, Some(Duration::from_secs(120)));
        let flags = RelayFileConfig {
            max_clients: Some(7),
            ..RelayFileConfig::default()
        };
        let merged = file.overridden_by(flags);
        assert_eq!(merged.max_clients, Some(7));
        assert_eq!(merged.client_rate, Some(0));
        assert_eq!(merged.listen, Some("0.0.0.0:443".parse().unwrap()));
        assert!(toml::from_str::<Config>("[relay]\nidle_timeout = \"soon\"").is_err());
        assert!(toml::from_str::<Config>("[relay]\nmax_clientz = 1").is_err());
    }

    #[test]
    fn missing_file_is_empty_config() {
        let c = Config::load(Path::new("/nonexistent/burrow/config.toml")).unwrap();
        assert_eq!(c, Config::default());
    }
}
