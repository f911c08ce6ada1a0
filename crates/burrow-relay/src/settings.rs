//! `burrow relay`'s settings, each written once: its name, type, default and doc serve the
//! config file's `[relay]` table, the command's flags (with the `clap` feature) and the
//! defaults that `--help` shows. [`RelayConfig::from_settings`] checks them and makes the
//! server's configuration.
//!
//! Precedence is default < file < flags: the file is read into [`RelaySettings`] (missing
//! keys keep their defaults), then [`RelayFlags::apply`] lays over it only the flags that
//! were given.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use burrow_proto::identity::NodeId;
use burrow_proto::relay::server_conn::MAX_MESSAGE;
use burrow_proto::relay::{RelayUrl, RelayUrlError};
use burrow_proto::turn::{Cidr, CidrError, TurnLimits};
use serde::Deserialize;

use crate::config::{Limits, RegistryConfig, RegistryLimits, RelayConfig, TlsFiles};
use crate::stun::{AltPort, StunOptions};
use crate::turn::TurnOptions;
use crate::RelayError;

/// Declares [`RelaySettings`] and its `Default` from one list of `doc`, `#[arg(…)]` (the
/// flag's clap attributes beyond `long` and the default, if any), `name: type`, and
/// `= default` unless the type's own (`None`, `false`) is meant.
macro_rules! relay_settings {
    ($(
        $(#[doc = $doc:literal])*
        $(#[arg($($arg:tt)*)])?
        $name:ident: $ty:ty $(= $default:expr)?,
    )*) => {
        /// `burrow relay`'s settings: the config file's `[relay]` table (keys as here; unknown
        /// keys are errors) and the command's flags (the same names with `-` for `_`).
        /// Sizes are bytes, rates per second, durations written like `10s` or `500ms`.
        #[derive(Clone, Debug, PartialEq, Deserialize)]
        #[cfg_attr(feature = "clap", derive(clap::Args))]
        #[serde(default, deny_unknown_fields)]
        pub struct RelaySettings {
            $(
                $(#[doc = $doc])*
                #[cfg_attr(
                    feature = "clap",
                    arg(long, $($($arg)*,)? $(default_value_t = $default)?)
                )]
                pub $name: $ty,
            )*
        }

        impl Default for RelaySettings {
            fn default() -> Self {
                RelaySettings {
                    $($name: relay_settings!(@default $($default)?),)*
                }
            }
        }
    };
    (@default $default:expr) => { $default };
    (@default) => { Default::default() };
}

relay_settings! {
    /// TCP address for HTTP(S) and WebSocket.
    #[arg(value_name = "IP:PORT")]
    listen: Option<SocketAddr>,
    /// A URL clients reach this relay at, which their login must be signed for (repeat for
    /// several) [default: the address a connection arrives at, and with TLS the names on the
    /// certificate]. Needed behind a reverse proxy, and for a DNS name over plain HTTP.
    #[arg(value_name = "URL")]
    public_url: Vec<PublicUrl>,
    /// Also serve STUN on this UDP address.
    #[arg(value_name = "IP:PORT")]
    stun: Option<SocketAddr>,
    /// Alternate IP of this host for RFC 5780 STUN (needs --stun).
    #[arg(value_name = "IP")]
    alt_ip: Option<IpAddr>,
    /// STUN's second port [default: the STUN port + 1]. Without --alt-ip it is served on the
    /// same IP, which is enough to recognise a symmetric NAT.
    #[arg(value_name = "PORT")]
    alt_port: Option<u16>,
    /// Serve STUN on one port only (clients then cannot recognise a symmetric NAT by this
    /// server alone).
    #[arg(conflicts_with_all = ["alt_port", "alt_ip"])]
    no_alt_port: bool,
    /// Serve TURN (RFC 8656) on the STUN port (UDP, and TCP on the same port number), with
    /// ephemeral credentials made with this shared secret, as coturn's use-auth-secret:
    /// username `EXPIRY:USER` (Unix seconds), password base64(HMAC-SHA1(secret, username)).
    /// Repeat to rotate secrets.
    #[arg(value_name = "SECRET")]
    turn_secret: Vec<String>,
    /// Serve TURN with this long-term user (repeat for several).
    #[arg(value_name = "USER:PASSWORD")]
    turn_user: Vec<TurnUser>,
    /// The realm of TURN's credentials.
    #[arg(value_name = "REALM")]
    turn_realm: String = "burrow".to_string(),
    /// IP address that TURN's relayed sockets bind and advertise [default: the STUN IP].
    #[arg(value_name = "IP")]
    turn_relay_ip: Option<IpAddr>,
    /// Lowest port of TURN's relayed sockets.
    #[arg(value_name = "PORT")]
    turn_min_port: u16 = 49152,
    /// Highest port of TURN's relayed sockets.
    #[arg(value_name = "PORT")]
    turn_max_port: u16 = 65535,
    /// Let TURN relay to peers in this range, though private, loopback, link-local and other
    /// reserved ranges are denied by default (repeat for several).
    #[arg(value_name = "CIDR")]
    turn_allow_peer: Vec<PeerRange>,
    /// TURN allocations (and reserved ports) at once; more get 508.
    #[arg(value_name = "N")]
    turn_max_allocations: usize = TurnLimits::default().max_allocations,
    /// TURN allocations one username may hold; 0 = no cap; more get 486.
    #[arg(value_name = "N")]
    turn_max_allocations_per_user: usize = TurnLimits::default().max_allocations_per_user,
    /// TURN allocations one client IP (IPv6 /64) may hold; 0 = no cap; more get 486.
    #[arg(value_name = "N")]
    turn_max_allocations_per_ip: usize = TurnLimits::default().max_allocations_per_ip,
    /// Bytes per second one TURN allocation may relay, both ways; 0 = unlimited.
    #[arg(value_name = "BYTES")]
    turn_rate: u64 = TurnLimits::default().rate_bytes_per_sec,
    /// Bytes one TURN allocation may relay at once above its rate.
    #[arg(value_name = "BYTES")]
    turn_burst: u64 = TurnLimits::default().burst_bytes,
    /// TLS certificate chain, PEM (serve https/wss).
    #[arg(value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key, PEM.
    #[arg(value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Maximum WebSocket sessions at once.
    #[arg(value_name = "N")]
    max_clients: usize = 10_000,
    /// Maximum TCP connections from one source (IPv4 address or IPv6 /64), to the relay and
    /// to TURN's TCP port each.
    #[arg(value_name = "N")]
    max_conns_per_ip: usize = 64,
    /// Bytes per second one client may send; 0 = unlimited.
    #[arg(value_name = "BYTES")]
    client_rate: u64 = 100_000_000 / 8,
    /// Bytes one client may send in a burst.
    #[arg(value_name = "BYTES")]
    client_burst: u64 = 2 * 1024 * 1024,
    /// Time from connect to authenticated (for TURN over TCP: to its first message).
    #[arg(value_name = "DUR")]
    handshake_timeout: HumanDuration = HumanDuration(Duration::from_secs(10)),
    /// Close clients silent this long.
    #[arg(value_name = "DUR")]
    idle_timeout: HumanDuration = HumanDuration(Duration::from_secs(60)),
    /// Largest WebSocket message from a client, bytes.
    #[arg(value_name = "BYTES")]
    max_frame: usize = MAX_MESSAGE,
    /// Frames queued for one client before dropping.
    #[arg(value_name = "N")]
    client_queue_frames: usize = 256,
    /// Bytes queued for one client before dropping.
    #[arg(value_name = "BYTES")]
    client_queue_bytes: usize = 1024 * 1024,
    /// Do not serve the bootstrap registry (/records, /namespaces).
    no_registry: bool,
    /// Keep registry records in this file across restarts (loaded at start, written
    /// periodically and at shutdown) [default: memory only].
    #[arg(value_name = "FILE")]
    records_snapshot: Option<PathBuf>,
    /// How often the records snapshot is written, when records changed.
    #[arg(value_name = "DUR")]
    registry_snapshot_interval: HumanDuration = HumanDuration(Duration::from_secs(60)),
    /// How often expired records are dropped.
    #[arg(value_name = "DUR")]
    registry_sweep_interval: HumanDuration = HumanDuration(Duration::from_secs(30)),
    /// Records the registry holds at once.
    #[arg(value_name = "N")]
    registry_max_records: usize = 1_000_000,
    /// Records listed under one namespace.
    #[arg(value_name = "N")]
    registry_max_per_namespace: usize = 100_000,
    /// Namespaces one record may be listed under.
    #[arg(value_name = "N")]
    registry_max_namespaces: usize = 8,
    /// Records one source (IPv4 address or IPv6 /64) may hold; 0 = no cap.
    #[arg(value_name = "N")]
    registry_max_per_source: usize = 256,
    /// Records one source may list under one namespace; 0 = no cap.
    #[arg(value_name = "N")]
    registry_max_per_source_namespace: usize = 32,
    /// Longest a record is held after registering.
    #[arg(value_name = "DUR")]
    registry_max_ttl: HumanDuration = HumanDuration(Duration::from_secs(24 * 3600)),
    /// Largest registry request body, bytes (a signed record is at most 1336 in base64).
    #[arg(value_name = "BYTES")]
    registry_max_body: usize = 4096,
    /// Registry requests per second per source (IPv4 address or IPv6 /64); 0 = unlimited.
    #[arg(value_name = "PER_SEC")]
    registry_ip_rate: f64 = 20.0,
    /// Registry request burst per source.
    #[arg(value_name = "N")]
    registry_ip_burst: u32 = 100,
    /// Registry writes per second per key; 0 = unlimited.
    #[arg(value_name = "PER_SEC")]
    registry_key_rate: f64 = 0.2,
    /// Registry write burst per key.
    #[arg(value_name = "N")]
    registry_key_burst: u32 = 10,
    /// Records per page of a namespace listing, at most.
    #[arg(value_name = "N")]
    registry_page_size: usize = 100,
    /// Admit only the keys this file lists (enrolled devices), to the relay and to the
    /// registry: one node id a line; blank lines and `#` comments are skipped. Read at start.
    #[arg(value_name = "FILE")]
    allow_keys: Option<PathBuf>,
    /// A key's reputation is the share of this time (or of all the time this relay has known
    /// it, if longer) that it was connected here.
    #[arg(value_name = "DUR")]
    reputation_window: HumanDuration = HumanDuration(Duration::from_secs(24 * 3600)),
}

impl RelaySettings {
    /// The relay's limits these settings give.
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_clients: self.max_clients,
            max_conns_per_ip: self.max_conns_per_ip,
            client_rate_bytes_per_sec: self.client_rate,
            client_burst_bytes: self.client_burst,
            handshake_timeout: self.handshake_timeout.0,
            idle_timeout: self.idle_timeout.0,
            max_frame_bytes: self.max_frame,
            client_queue_frames: self.client_queue_frames,
            client_queue_bytes: self.client_queue_bytes,
        }
    }

    /// The bootstrap registry these settings describe.
    pub(crate) fn registry(&self) -> RegistryConfig {
        RegistryConfig {
            enabled: !self.no_registry,
            limits: RegistryLimits {
                max_records: self.registry_max_records,
                max_per_namespace: self.registry_max_per_namespace,
                max_namespaces_per_record: self.registry_max_namespaces,
                max_per_source: self.registry_max_per_source,
                max_per_source_namespace: self.registry_max_per_source_namespace,
                max_ttl: self.registry_max_ttl.0,
                max_body_bytes: self.registry_max_body,
                ip_rate_per_sec: self.registry_ip_rate,
                ip_burst: self.registry_ip_burst,
                key_rate_per_sec: self.registry_key_rate,
                key_burst: self.registry_key_burst,
                page_size: self.registry_page_size,
            },
            snapshot: self.records_snapshot.clone(),
            snapshot_interval: self.registry_snapshot_interval.0,
            sweep_interval: self.registry_sweep_interval.0,
        }
    }
}

/// The keys an `--allow-keys` file lists: one node id a line, blank lines and `#` comments
/// skipped.
fn read_allowed_keys(path: &Path) -> Result<BTreeSet<NodeId>, RelayError> {
    let bad = |why: String| RelayError::Config(format!("--allow-keys {}: {why}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let mut keys = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let key = line
            .parse::<NodeId>()
            .map_err(|e| bad(format!("line {}: {line:?}: {e}", n + 1)))?;
        keys.insert(key);
    }
    Ok(keys)
}

impl RelaySettings {
    /// TURN's options, if TURN is on (a secret or a user is set).
    fn turn(&self, stun: Option<&StunOptions>) -> Result<Option<TurnOptions>, RelayError> {
        let bad = |m: &str| Err(RelayError::Config(m.to_string()));
        if self.turn_secret.is_empty() && self.turn_user.is_empty() {
            return Ok(None);
        }
        let Some(stun) = stun else {
            return bad("TURN (--turn-secret, --turn-user) is served on the STUN port: set --stun");
        };
        let relay_ip = self.turn_relay_ip.unwrap_or(stun.listen.ip());
        if relay_ip.is_unspecified() {
            return bad("TURN needs --turn-relay-ip when --stun listens on an unspecified address");
        }
        if self.turn_min_port == 0 || self.turn_min_port >= self.turn_max_port {
            return bad("--turn-min-port must be at least 1 and below --turn-max-port");
        }
        if self.turn_secret.iter().any(String::is_empty) {
            return bad("--turn-secret must not be empty");
        }
        Ok(Some(TurnOptions {
            realm: self.turn_realm.clone(),
            users: self
                .turn_user
                .iter()
                .map(|u| (u.name.clone(), u.password.clone()))
                .collect(),
            secrets: self.turn_secret.clone(),
            relay_ip,
            ports: (self.turn_min_port, self.turn_max_port),
            allowed_peers: self.turn_allow_peer.iter().map(|p| p.0).collect(),
            limits: TurnLimits {
                max_allocations: self.turn_max_allocations,
                max_allocations_per_user: self.turn_max_allocations_per_user,
                max_allocations_per_ip: self.turn_max_allocations_per_ip,
                rate_bytes_per_sec: self.turn_rate,
                burst_bytes: self.turn_burst,
                ..TurnLimits::default()
            },
            max_conns_per_ip: self.max_conns_per_ip,
            first_message_timeout: self.handshake_timeout.0,
        }))
    }
}

impl RelayConfig {
    /// The configuration that `burrow relay` settings describe, after checking that they make
    /// sense together.
    pub fn from_settings(s: &RelaySettings) -> Result<RelayConfig, RelayError> {
        let bad = |m: &str| Err(RelayError::Config(m.to_string()));
        let Some(listen) = s.listen else {
            return bad("no listen address (--listen IP:PORT or listen in [relay])");
        };
        let alt_port = AltPort::from_settings(s.alt_port, s.no_alt_port)?;
        let stun = match s.stun {
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
        let tls = match (&s.tls_cert, &s.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => None,
            _ => return bad("TLS needs both --tls-cert and --tls-key"),
        };
        let turn = s.turn(stun.as_ref())?;
        let c = RelayConfig {
            listen,
            public_urls: s.public_url.iter().map(|u| u.0.clone()).collect(),
            stun,
            turn,
            tls,
            limits: s.limits(),
            registry: s.registry(),
            allowed_keys: match &s.allow_keys {
                Some(path) => Some(Arc::new(read_allowed_keys(path)?)),
                None => None,
            },
            reputation_window: s.reputation_window.0,
            ..RelayConfig::default()
        };
        if c.reputation_window.is_zero() {
            return bad("reputation-window must be longer than zero");
        }
        let l = &c.limits;
        if l.max_clients == 0 || l.max_conns_per_ip == 0 || l.client_queue_frames == 0 {
            return bad("max-clients, max-conns-per-ip and client-queue-frames must be at least 1");
        }
        if l.handshake_timeout.is_zero() || l.idle_timeout.is_zero() {
            return bad("timeouts must be longer than zero");
        }
        if l.max_frame_bytes < 512 {
            return bad("max-frame must be at least 512 bytes (a ClientAuth is up to 353)");
        }
        let r = &c.registry;
        let rl = &r.limits;
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

/// A relay URL in a setting (`http(s)://HOST[:PORT]`), in flags and in the file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PublicUrl(pub RelayUrl);

impl FromStr for PublicUrl {
    type Err = RelayUrlError;
    fn from_str(s: &str) -> Result<Self, RelayUrlError> {
        s.parse().map(PublicUrl)
    }
}

impl TryFrom<String> for PublicUrl {
    type Error = RelayUrlError;
    fn try_from(s: String) -> Result<Self, RelayUrlError> {
        s.parse()
    }
}

impl fmt::Display for PublicUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A TURN user in a setting: `USER:PASSWORD` (the password may hold colons, the name not).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct TurnUser {
    /// The username.
    pub name: String,
    /// The password.
    pub password: String,
}

/// A setting that is not `USER:PASSWORD`.
#[derive(Debug, thiserror::Error)]
#[error("not USER:PASSWORD (a non-empty user name, a colon, a password)")]
pub struct TurnUserError;

impl FromStr for TurnUser {
    type Err = TurnUserError;
    fn from_str(s: &str) -> Result<Self, TurnUserError> {
        match s.split_once(':') {
            Some((name, password)) if !name.is_empty() => Ok(TurnUser {
                name: name.to_string(),
                password: password.to_string(),
            }),
            _ => Err(TurnUserError),
        }
    }
}

impl TryFrom<String> for TurnUser {
    type Error = TurnUserError;
    fn try_from(s: String) -> Result<Self, TurnUserError> {
        s.parse()
    }
}

/// Keeps passwords out of logs and debug output.
impl fmt::Debug for TurnUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TurnUser({}:…)", self.name)
    }
}

/// An IP range in a setting: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PeerRange(pub Cidr);

impl FromStr for PeerRange {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, CidrError> {
        s.parse().map(PeerRange)
    }
}

impl TryFrom<String> for PeerRange {
    type Error = CidrError;
    fn try_from(s: String) -> Result<Self, CidrError> {
        s.parse()
    }
}

/// A duration as people write it, in flags and in the file: `500ms`, `10s`, `2m`, `24h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HumanDuration(pub Duration);

/// A duration that [`HumanDuration`] cannot read.
#[derive(Debug, thiserror::Error)]
#[error("not a duration (write durations like 500ms, 15s, 2m)")]
pub struct DurationError(#[from] humantime::DurationError);

impl FromStr for HumanDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, DurationError> {
        Ok(HumanDuration(humantime::parse_duration(s)?))
    }
}

impl TryFrom<String> for HumanDuration {
    type Error = DurationError;
    fn try_from(s: String) -> Result<Self, DurationError> {
        s.parse()
    }
}

impl fmt::Display for HumanDuration {
    /// In the largest unit that it is a whole number of (`24h`, not humantime's `1day`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (secs, nanos) = (self.0.as_secs(), self.0.subsec_nanos());
        if nanos % 1_000_000 != 0 {
            humantime::format_duration(self.0).fmt(f)
        } else if nanos != 0 || secs == 0 {
            write!(f, "{}ms", self.0.as_millis())
        } else if secs % 3600 == 0 {
            write!(f, "{}h", secs / 3600)
        } else if secs % 60 == 0 {
            write!(f, "{}m", secs / 60)
        } else {
            write!(f, "{secs}s")
        }
    }
}

/// `burrow relay`'s flags as given on the command line, to lay over settings from the config
/// file. As a clap argument group it is [`RelaySettings`]'s flags, whose `--help` shows the
/// defaults; but only a flag that was given overrides the file, not a default.
#[cfg(feature = "clap")]
#[derive(Clone, Debug)]
pub struct RelayFlags(clap::ArgMatches);

#[cfg(feature = "clap")]
impl RelayFlags {
    /// `settings` with every flag that was given put in.
    pub fn apply(&self, settings: &mut RelaySettings) -> Result<(), clap::Error> {
        clap::FromArgMatches::update_from_arg_matches(settings, &self.0)
    }
}

#[cfg(feature = "clap")]
impl clap::FromArgMatches for RelayFlags {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut given = matches.clone();
        for id in matches.ids() {
            if matches.value_source(id.as_str()) != Some(clap::parser::ValueSource::CommandLine) {
                // Defaults (and absent flags) must not replace what the file says.
                given
                    .try_clear_id(id.as_str())
                    .map_err(|e| clap::Error::raw(clap::error::ErrorKind::InvalidValue, e))?;
            }
        }
        Ok(RelayFlags(given))
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

#[cfg(feature = "clap")]
impl clap::Args for RelayFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        <RelaySettings as clap::Args>::augment_args(cmd)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        <RelaySettings as clap::Args>::augment_args_for_update(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listening() -> RelaySettings {
        RelaySettings {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            ..RelaySettings::default()
        }
    }

    #[test]
    fn settings_fill_in_defaults_and_are_checked() {
        let mut s = RelaySettings {
            idle_timeout: HumanDuration(Duration::from_secs(5)),
            ..listening()
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
        s.no_alt_port = true;
        let stun = RelayConfig::from_settings(&s).unwrap().stun.unwrap();
        assert_eq!(stun.alt_port, AltPort::Off);
        s.alt_port = Some(4000);
        assert!(
            RelayConfig::from_settings(&s).is_err(),
            "contradicting settings"
        );
        s.no_alt_port = false;
        let stun = RelayConfig::from_settings(&s).unwrap().stun.unwrap();
        assert_eq!(stun.alt_port, AltPort::Port(4000));
        s.max_clients = 0;
        assert!(RelayConfig::from_settings(&s).is_err());
        assert!(RelayConfig::from_settings(&RelaySettings::default()).is_err());
    }

    #[test]
    fn turn_settings_need_stun_and_a_relay_ip() {
        let mut s = RelaySettings {
            turn_secret: vec!["s".into()],
            ..listening()
        };
        assert!(RelayConfig::from_settings(&s).is_err(), "TURN needs --stun");
        s.stun = Some("0.0.0.0:3478".parse().unwrap());
        assert!(
            RelayConfig::from_settings(&s).is_err(),
            "an unspecified STUN IP needs --turn-relay-ip"
        );
        s.turn_relay_ip = Some([203, 0, 113, 10].into());
        let turn = RelayConfig::from_settings(&s).unwrap().turn.unwrap();
        assert_eq!(turn.relay_ip, IpAddr::from([203, 0, 113, 10]));
        assert_eq!(turn.limits, TurnLimits::default());
        assert_eq!(
            (turn.ports, turn.realm.as_str()),
            ((49152, 65535), "burrow")
        );
        s.turn_min_port = 65535;
        assert!(RelayConfig::from_settings(&s).is_err());
        s.turn_min_port = 49152;
        s.turn_secret.clear();
        assert!(
            RelayConfig::from_settings(&s).unwrap().turn.is_none(),
            "off"
        );

        let file: RelaySettings = toml::from_str(
            "stun = \"127.0.0.1:3478\"\nturn_user = [\"alice:pass:word\"]\n\
             turn_allow_peer = [\"10.0.0.0/8\", \"::1\"]\nturn_max_allocations_per_ip = 0\n",
        )
        .unwrap();
        let s = RelaySettings {
            listen: listening().listen,
            ..file
        };
        let turn = RelayConfig::from_settings(&s).unwrap().turn.unwrap();
        assert_eq!(turn.users, [("alice".into(), "pass:word".into())]);
        assert_eq!(turn.relay_ip, IpAddr::from([127, 0, 0, 1]), "the STUN IP");
        let allowed: Vec<String> = turn.allowed_peers.iter().map(|c| c.to_string()).collect();
        assert_eq!(allowed, ["10.0.0.0/8", "::1/128"]);
        assert_eq!(turn.limits.max_allocations_per_ip, 0);
        for bad in [
            "turn_user = [\"nopassword\"]",
            "turn_user = [\":x\"]",
            "turn_allow_peer = [\"10.0.0.0/40\"]",
        ] {
            assert!(toml::from_str::<RelaySettings>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_table_parses_and_rejects_unknown_keys_and_bad_durations() {
        let s: RelaySettings = toml::from_str(
            "listen = \"0.0.0.0:443\"\nhandshake_timeout = \"500ms\"\n\
             idle_timeout = \"2m\"\nclient_rate = 0\nmax_clients = 5\nno_registry = true\n\
             public_url = [\"https://relay.example.org\", \"http://10.0.0.5:8080\"]\n",
        )
        .unwrap();
        let urls: Vec<String> = s.public_url.iter().map(|u| u.to_string()).collect();
        assert_eq!(
            urls,
            ["https://relay.example.org:443", "http://10.0.0.5:8080"]
        );
        assert!(toml::from_str::<RelaySettings>("public_url = [\"ws://a:1\"]").is_err());
        assert_eq!(s.handshake_timeout.0, Duration::from_millis(500));
        assert_eq!(s.idle_timeout.0, Duration::from_secs(120));
        assert_eq!((s.client_rate, s.max_clients), (0, 5));
        assert!(s.no_registry);
        assert_eq!(s.max_frame, RelaySettings::default().max_frame, "a default");
        assert!(toml::from_str::<RelaySettings>("idle_timeout = \"soon\"").is_err());
        assert!(toml::from_str::<RelaySettings>("max_clientz = 1").is_err());
    }

    #[test]
    fn durations_read_what_they_print() {
        for (ms, shown) in [
            (0, "0ms"),
            (500, "500ms"),
            (1500, "1500ms"),
            (10_000, "10s"),
            (90_000, "90s"),
            (60_000, "1m"),
            (24 * 3600 * 1000, "24h"),
        ] {
            let d = HumanDuration(Duration::from_millis(ms));
            assert_eq!(d.to_string(), shown);
            assert_eq!(shown.parse::<HumanDuration>().unwrap(), d);
        }
        let odd = HumanDuration(Duration::from_nanos(1_500));
        assert_eq!(odd.to_string().parse::<HumanDuration>().unwrap(), odd);
    }

    /// default < file < flags: a flag's default (shown in `--help`) does not replace the file.
    #[cfg(feature = "clap")]
    #[test]
    fn only_given_flags_override_the_file() {
        use clap::Parser;
        #[derive(Parser)]
        struct Relay {
            #[command(flatten)]
            flags: RelayFlags,
        }
        let file: RelaySettings = toml::from_str(
            "listen = \"0.0.0.0:443\"\nmax_clients = 5\nidle_timeout = \"2m\"\n\
             no_registry = true\n",
        )
        .unwrap();
        let over = |args: &[&str]| {
            let relay = Relay::try_parse_from([&["relay"], args].concat()).unwrap();
            let mut s = file.clone();
            relay.flags.apply(&mut s).unwrap();
            s
        };
        assert_eq!(over(&[]), file);
        let s = over(&[
            "--max-clients",
            "7",
            "--handshake-timeout",
            "3s",
            "--stun",
            "[::]:3478",
        ]);
        assert_eq!(s.max_clients, 7);
        assert_eq!(s.handshake_timeout.0, Duration::from_secs(3));
        assert_eq!(s.stun, Some("[::]:3478".parse().unwrap()));
        assert_eq!(
            s.idle_timeout.0,
            Duration::from_secs(120),
            "the file's, not the default"
        );
        assert!(s.no_registry, "an absent switch leaves the file's");
        assert_eq!(s.listen, file.listen);
        let s = over(&[
            "--public-url",
            "https://relay.example.org",
            "--public-url",
            "http://[2001:db8::1]:80",
        ]);
        let c = RelayConfig::from_settings(&s).unwrap();
        assert_eq!(
            c.public_urls,
            [
                "https://relay.example.org".parse::<RelayUrl>().unwrap(),
                "http://[2001:db8::1]:80".parse().unwrap()
            ]
        );
        assert!(Relay::try_parse_from(["relay", "--public-url", "relay.example.org"]).is_err());
        assert!(Relay::try_parse_from(["relay", "--idle-timeout", "soon"]).is_err());
        assert!(Relay::try_parse_from(["relay", "--alt-port", "5", "--no-alt-port"]).is_err());
        let s = over(&[
            "--turn-secret",
            "a",
            "--turn-secret",
            "b",
            "--turn-allow-peer",
            "127.0.0.1",
            "--turn-user",
            "alice:x",
            "--turn-rate",
            "0",
        ]);
        assert_eq!(s.turn_secret, ["a", "b"]);
        assert_eq!(
            s.turn_allow_peer,
            ["127.0.0.1".parse::<PeerRange>().unwrap()]
        );
        assert_eq!((s.turn_user.len(), s.turn_rate), (1, 0));
        assert_eq!(s.turn_realm, "burrow", "a default");
        assert!(Relay::try_parse_from(["relay", "--turn-allow-peer", "10.0.0.0/99"]).is_err());
        assert!(Relay::try_parse_from(["relay", "--turn-user", "nocolon"]).is_err());
    }

    #[test]
    fn an_allow_keys_file_lists_node_ids_and_a_bad_line_is_named() {
        let dir = std::env::temp_dir().join(format!("burrow-allow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = burrow_proto::identity::SecretKey::from_bytes([5; 32]).node_id();
        let file = dir.join("devices.txt");
        std::fs::write(&file, format!("# the lab\n\n{key}  # node 5\n")).unwrap();
        let settings = RelaySettings {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            allow_keys: Some(file.clone()),
            ..RelaySettings::default()
        };
        let c = RelayConfig::from_settings(&settings).unwrap();
        assert_eq!(
            c.allowed_keys.as_deref(),
            Some(&std::collections::BTreeSet::from([key]))
        );
        std::fs::write(&file, format!("{key}\nnot-a-key\n")).unwrap();
        let e = RelayConfig::from_settings(&settings)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("not-a-key"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        let missing = RelaySettings {
            allow_keys: Some(dir.join("gone.txt")),
            ..settings
        };
        assert!(RelayConfig::from_settings(&missing).is_err());
    }

    #[test]
    fn the_example_config_shows_the_defaults() {
        let text = include_str!("../../../deploy/relay.example.toml");
        let file: toml::Table = toml::from_str(text).unwrap();
        let relay = file["relay"].as_table().unwrap().clone();
        let s = RelaySettings::deserialize(relay).unwrap();
        let c = RelayConfig::from_settings(&s).unwrap();
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.registry, RegistryConfig::default());
        assert!(c.stun.is_some());
        assert!(
            c.turn.is_none(),
            "TURN is off until a secret or user is set"
        );
        let defaults = RelaySettings::default();
        assert_eq!(
            (&s.turn_realm, s.turn_min_port, s.turn_max_port),
            (
                &defaults.turn_realm,
                defaults.turn_min_port,
                defaults.turn_max_port
            )
        );
        let limits = |s: &RelaySettings| {
            [
                s.turn_max_allocations as u64,
                s.turn_max_allocations_per_user as u64,
                s.turn_max_allocations_per_ip as u64,
                s.turn_rate,
                s.turn_burst,
            ]
        };
        assert_eq!(limits(&s), limits(&defaults));
    }
}
