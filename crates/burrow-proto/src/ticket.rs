//! Tickets: one copy-pasteable token holding a node's key and the ways to reach it.
//!
//! `burrow listen` prints a ticket; `burrow connect TICKET` parses it. The token is `burrow`
//! followed by lowercase unpadded base32 (the same alphabet as [`NodeId`]'s text form) of a
//! compact body, so it is URL-safe, has no spaces and survives a double-click selection:
//!
//! ```text
//! version      u8 = 1
//! node key     32 bytes (Ed25519 public key)
//! relay count  u8 (at most MAX_RELAYS), then per relay:
//!              u8 length + the URL exactly as RelayUrl displays it
//! addr count   u8 (at most MAX_ADDRS), then per address:
//!              u8 family (4 or 6) + 4 or 16 IP bytes + u16 port, big-endian
//! checksum     CRC32 of everything above, big-endian
//! ```
//!
//! The checksum is checked before anything else, so a mistyped or partly copied token is
//! reported as corrupted instead of as, say, a wrong key. Later versions must keep the CRC32
//! trailer so that old parsers can still tell corruption from an unsupported version.
//!
//! Parsing accepts only the canonical form, so every accepted token prints back as itself
//! (lowercased, trimmed) and one ticket has exactly one token.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use data_encoding::BASE32_NOPAD;

use crate::identity::{NodeId, NodeIdError};
use crate::relay::{RelayUrl, RelayUrlError};

/// Most relays a ticket carries.
pub const MAX_RELAYS: usize = 8;
/// Most direct addresses a ticket carries.
pub const MAX_ADDRS: usize = 32;
/// Longest token in characters: one with [`MAX_RELAYS`] relays of the longest encodable URL and
/// [`MAX_ADDRS`] IPv6 addresses. Longer input is rejected before it is decoded.
pub const MAX_TICKET_LEN: usize = PREFIX.len() + (MAX_BODY_LEN * 8).div_ceil(5);

const PREFIX: &str = "burrow";
const VERSION: u8 = 1;
/// A relay URL's length is one byte.
const MAX_RELAY_URL_LEN: usize = u8::MAX as usize;
const CHECKSUM_LEN: usize = 4;
/// Longest body, checksum included.
pub(crate) const MAX_BODY_LEN: usize =
    1 + 32 + 1 + MAX_RELAYS * (1 + MAX_RELAY_URL_LEN) + 1 + MAX_ADDRS * (1 + 16 + 2) + CHECKSUM_LEN;

/// A node and the ways to reach it.
///
/// Its text form ([`Display`](fmt::Display) / [`FromStr`]) is the token users copy and paste.
/// Printing never fails; fields beyond what the format holds are left out rather than rejected:
/// only the first [`MAX_RELAYS`] relays whose URL is at most 255 bytes long (any URL except one
/// with a host name near DNS's 253-character limit) and the first [`MAX_ADDRS`] addresses are
/// written. IPv6 flow info and scope ids are not written either: they mean nothing to the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// The node's key: who to connect to and who must answer.
    pub node_id: NodeId,
    /// Relays the node is reachable through, most preferred first.
    pub relays: Vec<RelayUrl>,
    /// Direct addresses to try, most preferred first.
    pub addrs: Vec<SocketAddr>,
}

/// Why a string is not a ticket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// Does not start with `burrow`.
    #[error("not a burrow ticket: it must start with \"{PREFIX}\"")]
    Prefix,
    /// More characters than any ticket has.
    #[error("ticket is {0} characters long; the limit is {MAX_TICKET_LEN}")]
    TooLong(usize),
    /// Not base32 after the prefix.
    #[error("ticket is not valid base32: {0}")]
    Base32(String),
    /// The checksum does not match: a typo or a partial copy.
    #[error("ticket is corrupted (checksum mismatch); copy it again in full")]
    Checksum,
    /// The body ends before its contents do.
    #[error("ticket is truncated")]
    Truncated,
    /// Written by a newer (or unknown) version of burrow.
    #[error("ticket version {0} is not supported (this burrow reads version {VERSION})")]
    Version(u8),
    /// The node key is not an Ed25519 public key.
    #[error("ticket's node id is invalid: {0}")]
    NodeId(NodeIdError),
    /// More relays than [`MAX_RELAYS`].
    #[error("ticket lists {0} relays; at most {MAX_RELAYS} are allowed")]
    TooManyRelays(usize),
    /// A relay URL that does not parse.
    #[error("ticket has a bad relay URL: {0}")]
    Relay(RelayUrlError),
    /// A relay URL that parses but is not written the way burrow writes it.
    #[error("ticket's relay URL {0:?} is not in canonical form")]
    RelayNotCanonical(String),
    /// More addresses than [`MAX_ADDRS`].
    #[error("ticket lists {0} addresses; at most {MAX_ADDRS} are allowed")]
    TooManyAddrs(usize),
    /// An address family byte other than 4 or 6.
    #[error("ticket has an address of unknown family {0} (expected 4 or 6)")]
    AddrFamily(u8),
    /// Bytes after the last address.
    #[error("ticket has {0} unexpected bytes after its addresses")]
    TrailingBytes(usize),
}

impl Ticket {
    /// A ticket with no relays and no addresses yet.
    pub fn new(node_id: NodeId) -> Ticket {
        Ticket {
            node_id,
            relays: Vec::new(),
            addrs: Vec::new(),
        }
    }

    /// The body without its checksum, applying the limits documented on [`Ticket`] (an
    /// invite carries it too).
    pub(crate) fn body(&self) -> Vec<u8> {
        let relays: Vec<String> = self
            .relays
            .iter()
            .map(RelayUrl::to_string)
            .filter(|url| url.len() <= MAX_RELAY_URL_LEN)
            .take(MAX_RELAYS)
            .collect();
        let addrs = &self.addrs[..self.addrs.len().min(MAX_ADDRS)];
        let mut body = vec![VERSION];
        body.extend_from_slice(self.node_id.as_bytes());
        body.push(relays.len() as u8);
        for url in &relays {
            body.push(url.len() as u8);
            body.extend_from_slice(url.as_bytes());
        }
        body.push(addrs.len() as u8);
        for addr in addrs {
            match addr.ip() {
                IpAddr::V4(ip) => {
                    body.push(4);
                    body.extend_from_slice(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    body.push(6);
                    body.extend_from_slice(&ip.octets());
                }
            }
            body.extend_from_slice(&addr.port().to_be_bytes());
        }
        body
    }

    pub(crate) fn decode_body(body: &[u8]) -> Result<Ticket, TicketError> {
        let mut r = Reader(body);
        let version = r.u8()?;
        if version != VERSION {
            return Err(TicketError::Version(version));
        }
        let node_id = NodeId::from_bytes(r.array()?).map_err(TicketError::NodeId)?;

        let count = usize::from(r.u8()?);
        if count > MAX_RELAYS {
            return Err(TicketError::TooManyRelays(count));
        }
        let mut relays = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(r.u8()?);
            let raw = r.take(len)?;
            // Lossy is enough: invalid UTF-8 never equals a URL's printed form, so it is
            // rejected below if the URL parser has not already refused it.
            let text = String::from_utf8_lossy(raw);
            let url: RelayUrl = text.parse().map_err(TicketError::Relay)?;
            if url.to_string().as_bytes() != raw {
                return Err(TicketError::RelayNotCanonical(text.into_owned()));
            }
            relays.push(url);
        }

        let count = usize::from(r.u8()?);
        if count > MAX_ADDRS {
            return Err(TicketError::TooManyAddrs(count));
        }
        let mut addrs = Vec::with_capacity(count);
        for _ in 0..count {
            let ip = match r.u8()? {
                4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)),
                6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)),
                family => return Err(TicketError::AddrFamily(family)),
            };
            let port = u16::from_be_bytes(r.array()?);
            addrs.push(SocketAddr::new(ip, port));
        }

        if !r.0.is_empty() {
            return Err(TicketError::TrailingBytes(r.0.len()));
        }
        Ok(Ticket {
            node_id,
            relays,
            addrs,
        })
    }
}

/// Appends the checksum and encodes: the token for `body`.
fn seal(body: Vec<u8>) -> String {
    armor(PREFIX, body)
}

/// The text form of tickets and invite tokens: `prefix` + lowercase base32 (no padding) of
/// `body` followed by its CRC32, so a typo reads as corruption rather than as another value.
/// Public so tools and tests can write a token from bytes they built themselves.
pub fn armor(prefix: &str, mut body: Vec<u8>) -> String {
    body.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    format!(
        "{prefix}{}",
        BASE32_NOPAD.encode(&body).to_ascii_lowercase()
    )
}

/// Why [`unarmor`] refused a text.
#[derive(Debug)]
pub(crate) enum Unarmor {
    /// It does not start with the prefix.
    Prefix,
    /// Longer than `max_len` bytes (its length in bytes and in characters).
    TooLong { len: usize, chars: usize },
    /// Not base32 after the prefix.
    Base32(String),
    /// Shorter than the checksum.
    Truncated,
    /// The checksum does not match.
    Checksum,
}

/// The body of an [`armor`]ed text (trimmed, in any case) of at most `max_len` bytes.
pub(crate) fn unarmor(prefix: &str, s: &str, max_len: usize) -> Result<Vec<u8>, Unarmor> {
    let s = s.trim();
    let encoded = s
        .get(..prefix.len())
        .filter(|head| head.eq_ignore_ascii_case(prefix))
        .map(|_| &s[prefix.len()..])
        .ok_or(Unarmor::Prefix)?;
    // Bounds the work done on whatever got pasted.
    if s.len() > max_len {
        return Err(Unarmor::TooLong {
            len: s.len(),
            chars: s.chars().count(),
        });
    }
    let mut bytes = BASE32_NOPAD
        .decode(encoded.to_ascii_uppercase().as_bytes())
        .map_err(|e| {
            Unarmor::Base32(format!(
                "{} at character {}",
                e.kind,
                prefix.len() + e.position
            ))
        })?;
    let body_len = bytes
        .len()
        .checked_sub(CHECKSUM_LEN)
        .ok_or(Unarmor::Truncated)?;
    if crc32fast::hash(&bytes[..body_len]).to_be_bytes()[..] != bytes[body_len..] {
        return Err(Unarmor::Checksum);
    }
    bytes.truncate(body_len);
    Ok(bytes)
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&seal(self.body()))
    }
}

impl FromStr for Ticket {
    type Err = TicketError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let body = unarmor(PREFIX, s, MAX_TICKET_LEN).map_err(|e| match e {
            Unarmor::Prefix => TicketError::Prefix,
            Unarmor::TooLong { chars, .. } => TicketError::TooLong(chars),
            Unarmor::Base32(e) => TicketError::Base32(e),
            Unarmor::Truncated => TicketError::Truncated,
            Unarmor::Checksum => TicketError::Checksum,
        })?;
        Ticket::decode_body(&body)
    }
}

/// Reads the body front to back; running out is [`TicketError::Truncated`].
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TicketError> {
        if self.0.len() < n {
            return Err(TicketError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TicketError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, TicketError> {
        Ok(self.take(1)?[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SecretKey;

    fn node() -> NodeId {
        SecretKey::from_bytes([7; 32]).node_id()
    }

    fn sample() -> Ticket {
        let mut t = Ticket::new(node());
        t.relays.push("https://relay.example.com".parse().unwrap());
        t.addrs.push("203.0.113.7:41641".parse().unwrap());
        t.addrs.push("[2001:db8::1]:41641".parse().unwrap());
        t
    }

    /// A body with everything up to (not including) the relay count.
    fn head() -> Vec<u8> {
        let mut b = vec![VERSION];
        b.extend_from_slice(node().as_bytes());
        b
    }

    fn parse_body(body: Vec<u8>) -> Result<Ticket, TicketError> {
        seal(body).parse()
    }

    #[test]
    fn round_trips() {
        let empty = Ticket::new(node());
        let mut many = sample();
        many.relays.push("http://127.0.0.1:3340".parse().unwrap());
        many.relays.push("http://[::1]:8080".parse().unwrap());
        many.addrs.push("192.168.1.20:1".parse().unwrap());
        many.addrs.push("[fe80::1]:65535".parse().unwrap());
        for t in [empty, sample(), many] {
            let text = t.to_string();
            assert!(text.starts_with("burrow"));
            assert!(text
                .chars()
                .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c)));
            assert!(text.len() <= MAX_TICKET_LEN);
            assert_eq!(text.parse::<Ticket>(), Ok(t.clone()));
            assert_eq!(format!("  {}\n", text.to_uppercase()).parse(), Ok(t));
        }
        // What `burrow listen` typically prints: one relay and two addresses.
        assert_eq!(sample().to_string().len(), 158);
    }

    #[test]
    fn display_applies_the_documented_limits() {
        let mut t = Ticket::new(node());
        let long_host = "a".repeat(250);
        t.relays
            .push(format!("https://{long_host}:1").parse().unwrap());
        for port in 1..=MAX_RELAYS as u16 + 2 {
            t.relays
                .push(format!("http://r.example:{port}").parse().unwrap());
        }
        for port in 1..=MAX_ADDRS as u16 + 2 {
            t.addrs.push(SocketAddr::new([10, 0, 0, 1].into(), port));
        }
        let back: Ticket = t.to_string().parse().unwrap();
        assert_eq!(back.relays, t.relays[1..=MAX_RELAYS]);
        assert_eq!(back.addrs, t.addrs[..MAX_ADDRS]);

        t.addrs = vec!["[fe80::1%7]:9".parse().unwrap()];
        let back: Ticket = t.to_string().parse().unwrap();
        assert_eq!(back.addrs, ["[fe80::1]:9".parse::<SocketAddr>().unwrap()]);
    }

    #[test]
    fn largest_ticket_is_max_ticket_len() {
        let mut t = Ticket::new(node());
        // "https://" + host + ":65535" is exactly 255 bytes.
        let host = "h".repeat(MAX_RELAY_URL_LEN - "https://:65535".len());
        for i in 0..MAX_RELAYS {
            let url = format!("https://{host}:{}", 65535 - i);
            t.relays.push(url.parse().unwrap());
        }
        for port in 0..MAX_ADDRS as u16 {
            t.addrs
                .push(SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port));
        }
        let text = t.to_string();
        assert_eq!(text.len(), MAX_TICKET_LEN);
        assert_eq!(text.parse(), Ok(t));
    }

    #[test]
    fn text_errors() {
        let err = |s: &str| s.parse::<Ticket>().unwrap_err();
        let good = sample().to_string();
        assert_eq!(err(""), TicketError::Prefix);
        assert_eq!(err("burro"), TicketError::Prefix);
        assert_eq!(err(&node().to_string()), TicketError::Prefix);
        assert_eq!(err(&good[1..]), TicketError::Prefix);
        // Byte 6 falls inside the "é".
        assert_eq!(err("burro\u{e9}aa"), TicketError::Prefix);

        let long = format!("burrow{}", "a".repeat(MAX_TICKET_LEN));
        assert_eq!(err(&long), TicketError::TooLong(MAX_TICKET_LEN + 6));

        let e = err(&format!("{}1{}", &good[..20], &good[21..]));
        assert_eq!(
            e,
            TicketError::Base32("invalid symbol at character 20".into())
        );
        assert!(e.to_string().contains("base32"));
        assert!(matches!(err("burrow a"), TicketError::Base32(_)));
        // A length no unpadded base32 string has.
        assert!(matches!(
            err(&good[..good.len() - 2]),
            TicketError::Base32(_)
        ));

        // One mistyped character, or a cut that still decodes: the checksum catches both.
        let last = good.len() - 1;
        let typo = if &good[last..] == "a" { "b" } else { "a" };
        assert_eq!(
            err(&format!("{}{typo}", &good[..last])),
            TicketError::Checksum
        );
        let mistyped_key = format!("{}q{}", &good[..12], &good[13..]);
        assert_ne!(mistyped_key, good);
        assert_eq!(err(&mistyped_key), TicketError::Checksum);
        assert_eq!(err(&good[..good.len() - 8]), TicketError::Checksum);
        assert!(err(&mistyped_key).to_string().contains("corrupted"));

        assert_eq!(err("burrow"), TicketError::Truncated);
        assert_eq!(err("burrowaaaaaaa"), TicketError::Truncated);
    }

    #[test]
    fn body_errors() {
        let mut b = head();
        b[0] = 2;
        assert_eq!(parse_body(b), Err(TicketError::Version(2)));
        assert_eq!(parse_body(vec![]), Err(TicketError::Truncated));
        assert_eq!(
            parse_body(head()[..20].to_vec()),
            Err(TicketError::Truncated)
        );
        assert_eq!(parse_body(head()), Err(TicketError::Truncated));

        let mut b = head();
        b.push(MAX_RELAYS as u8 + 1);
        assert_eq!(
            parse_body(b),
            Err(TicketError::TooManyRelays(MAX_RELAYS + 1))
        );

        let relay = |url: &[u8]| {
            let mut b = head();
            b.extend([1, url.len() as u8]);
            b.extend_from_slice(url);
            b.push(0);
            parse_body(b)
        };
        assert_eq!(relay(b"http://a:80").unwrap().relays[0].port(), 80);
        let e = relay(b"ftp://a:1").unwrap_err();
        assert!(matches!(
            e,
            TicketError::Relay(RelayUrlError::Scheme(ref u)) if u == "ftp://a:1"
        ));
        assert!(e.to_string().contains("http:// or https://"), "{e}");
        assert!(matches!(relay(b""), Err(TicketError::Relay(_))));
        assert!(matches!(
            relay(b"http://\xff:80"),
            Err(TicketError::Relay(_))
        ));
        assert_eq!(
            relay(b"HTTP://a"),
            Err(TicketError::RelayNotCanonical("HTTP://a".into()))
        );
        let mut b = head();
        b.extend([1, 4, b'h', b't', b't']);
        assert_eq!(parse_body(b), Err(TicketError::Truncated));

        let mut b = head();
        b.extend([0, MAX_ADDRS as u8 + 1]);
        assert_eq!(parse_body(b), Err(TicketError::TooManyAddrs(MAX_ADDRS + 1)));
        let mut b = head();
        b.extend([0, 1, 5, 1, 2, 3, 4, 0, 80]);
        assert_eq!(parse_body(b), Err(TicketError::AddrFamily(5)));
        let mut b = head();
        b.extend([0, 1, 6, 1, 2, 3, 4, 0, 80]);
        assert_eq!(parse_body(b), Err(TicketError::Truncated));
        let mut b = head();
        b.extend([0, 1, 4, 1, 2, 3, 4, 0]);
        assert_eq!(parse_body(b), Err(TicketError::Truncated));

        let mut b = sample().body();
        b.extend([0, 0, 0]);
        assert_eq!(parse_body(b), Err(TicketError::TrailingBytes(3)));
    }

    /// Consistent with `NodeId::from_str`: a key that is not a curve point can never
    /// authenticate, so a ticket naming one is refused up front.
    #[test]
    fn key_must_be_an_ed25519_point() {
        let not_a_point = [2; 32];
        assert_eq!(NodeId::from_bytes(not_a_point), Err(NodeIdError::NotAKey));
        let mut b = head();
        b[1..33].copy_from_slice(&not_a_point);
        b.extend([0, 0]);
        let e = parse_body(b).unwrap_err();
        assert_eq!(e, TicketError::NodeId(NodeIdError::NotAKey));
        assert!(e.to_string().contains("Ed25519"));
    }

    /// Deterministic mutation of the token text and of the body (resealed with a valid
    /// checksum, so the body decoder is reached): never a panic, and whatever parses prints
    /// back as the same token.
    #[test]
    fn mutated_tickets_never_panic() {
        let mut t = sample();
        t.relays.push("http://[::1]:3340".parse().unwrap());
        let text = t.to_string().into_bytes();
        let body = t.body();
        let mut rng = crate::mutation::Mutator::new();
        let mut mutate = |seed: &[u8]| {
            let mut m = rng.overwrite(seed);
            // Truncate only sometimes, so that many bodies stay whole enough to parse.
            if rng.next().is_multiple_of(4) {
                rng.truncate_below(&mut m, seed.len() + 1);
            }
            m
        };
        let mut parsed = 0;
        for i in 0..100_000 {
            let candidate = if i % 2 == 0 {
                String::from_utf8_lossy(&mutate(&text)).into_owned()
            } else {
                seal(mutate(&body))
            };
            if let Ok(ticket) = candidate.parse::<Ticket>() {
                assert_eq!(ticket.to_string(), candidate.trim().to_ascii_lowercase());
                parsed += 1;
            }
        }
        // Enough resealed bodies must parse for the print-back check to mean something.
        assert!(parsed > 1000, "{parsed}");
    }
}
