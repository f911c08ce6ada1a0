//! User configuration: a TOML file, overridden by the environment, overridden by flags.

use std::path::{Path, PathBuf};

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
    /// `burrow relay` settings (the `[relay]` table), left as a table for the relay server to
    /// read: they are `burrow_relay::RelaySettings`, which this library does not depend on.
    pub relay: Option<toml::Table>,
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

impl Config {
    /// The file named by `$BURROW_CONFIG`, else `config.toml` in [`crate::paths::config_dir`].
    pub fn default_path() -> PathBuf {
        std::env::var_os(CONFIG_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::paths::config_dir().join("config.toml"))
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
    fn the_relay_table_is_kept_for_the_relay() {
        let c: Config = toml::from_str("[relay]\nmax_clients = 5\n").unwrap();
        assert_eq!(c.relay.unwrap()["max_clients"].as_integer(), Some(5));
        assert!(toml::from_str::<Config>("relay = 5").is_err());
    }

    #[test]
    fn missing_file_is_empty_config() {
        let c = Config::load(Path::new("/nonexistent/burrow/config.toml")).unwrap();
        assert_eq!(c, Config::default());
    }
}
