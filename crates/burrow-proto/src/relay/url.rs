//! Relay addresses: written `http(s)://HOST[:PORT]`, reached at `ws(s)://HOST:PORT/relay`.

use std::fmt;
use std::str::FromStr;

/// The path of the WebSocket endpoint on a relay.
pub const RELAY_PATH: &str = "/relay";

/// A relay's address. `https://` means TLS (`wss://`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayUrl {
    tls: bool,
    /// A DNS name, an IPv4 address, or an IPv6 address without brackets.
    host: String,
    port: u16,
}

/// Why a string is not a relay URL.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RelayUrlError {
    /// Not `http://` or `https://`.
    #[error("relay URL must start with http:// or https://: {0:?}")]
    Scheme(String),
    /// No host, or a host with characters no host name has.
    #[error("relay URL has no valid host: {0:?}")]
    Host(String),
    /// A port that is not a number from 1 to 65535.
    #[error("relay URL has an invalid port: {0:?}")]
    Port(String),
    /// A path, query or user info: a relay URL is just scheme, host and port.
    #[error("relay URL must be just scheme, host and port: {0:?}")]
    Extra(String),
}

impl RelayUrl {
    /// Whether the relay is reached over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The host: a DNS name or an IP address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host as written in a URL (IPv6 in brackets).
    fn url_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// The WebSocket URL: `ws(s)://HOST:PORT/relay`.
    pub fn ws_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}:{}{RELAY_PATH}", self.url_host(), self.port)
    }
}

impl fmt::Display for RelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.url_host(), self.port)
    }
}

impl fmt::Debug for RelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelayUrl({self})")
    }
}

impl FromStr for RelayUrl {
    type Err = RelayUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (tls, rest) = if let Some(rest) = strip_prefix_ci(s, "https://") {
            (true, rest)
        } else if let Some(rest) = strip_prefix_ci(s, "http://") {
            (false, rest)
        } else {
            return Err(RelayUrlError::Scheme(s.into()));
        };
        // A bare trailing slash is harmless; any other path is a mistake worth reporting.
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(RelayUrlError::Extra(s.into()));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| RelayUrlError::Host(s.into()))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(RelayUrlError::Host(s.into()));
            }
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return Err(RelayUrlError::Extra(s.into())),
            }
        } else {
            match rest.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        let valid_host = !host.is_empty()
            && host.len() <= 253
            && (host.contains(':')
                || host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_'));
        if !valid_host {
            return Err(RelayUrlError::Host(s.into()));
        }
        let port = match port {
            None => {
                if tls {
                    443
                } else {
                    80
                }
            }
            // Digits only: u16's parser would also take a sign.
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(RelayUrlError::Port(s.into())),
            },
        };
        Ok(RelayUrl {
            tls,
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> RelayUrl {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_prints() {
        let u = url("http://127.0.0.1:3340");
        assert!(!u.is_tls());
        assert_eq!(u.host(), "127.0.0.1");
        assert_eq!(u.port(), 3340);
        assert_eq!(u.to_string(), "http://127.0.0.1:3340");
        assert_eq!(u.ws_url(), "ws://127.0.0.1:3340/relay");

        let u = url("HTTPS://Relay.Example.com/");
        assert!(u.is_tls());
        assert_eq!(u.to_string(), "https://relay.example.com:443");
        assert_eq!(u.ws_url(), "wss://relay.example.com:443/relay");
        assert_eq!(url("http://example.com").port(), 80);

        let u = url("http://[::1]:8080");
        assert_eq!(u.host(), "::1");
        assert_eq!(u.to_string(), "http://[::1]:8080");
        assert_eq!(u.ws_url(), "ws://[::1]:8080/relay");
        assert_eq!(url("https://[fe80::1]").port(), 443);
        assert_eq!(url(&u.to_string()), u);
    }

    #[test]
    fn bad_urls_are_clear_errors() {
        let err = |s: &str| s.parse::<RelayUrl>().unwrap_err();
        assert!(matches!(err("ws://a:1"), RelayUrlError::Scheme(_)));
        assert!(matches!(err("a:1"), RelayUrlError::Scheme(_)));
        assert!(matches!(err(""), RelayUrlError::Scheme(_)));
        assert!(matches!(err("http://"), RelayUrlError::Host(_)));
        assert!(matches!(err("http://:80"), RelayUrlError::Host(_)));
        assert!(matches!(err("http://a b:80"), RelayUrlError::Host(_)));
        assert!(matches!(err("http://[zz]:80"), RelayUrlError::Host(_)));
        assert!(matches!(err("http://[::1"), RelayUrlError::Host(_)));
        assert!(matches!(err("http://a:0"), RelayUrlError::Port(_)));
        assert!(matches!(err("http://a:65536"), RelayUrlError::Port(_)));
        assert!(matches!(err("http://a:+80"), RelayUrlError::Port(_)));
        assert!(matches!(err("http://a:"), RelayUrlError::Port(_)));
        assert!(matches!(err("http://a:1/relay"), RelayUrlError::Extra(_)));
        assert!(matches!(err("http://u@a:1"), RelayUrlError::Extra(_)));
        assert!(matches!(err("http://[::1]x"), RelayUrlError::Extra(_)));
        assert!(matches!(err("http://é:1"), RelayUrlError::Host(_)));
        assert!(err("http://a:1/x").to_string().contains("just scheme"));
    }
}
