//! Which peers an allocation may reach. A TURN server sends wherever its clients ask, so
//! without a filter it is a door into its own network: peers in private, loopback,
//! link-local, shared (CGNAT), documentation, multicast and other reserved ranges are denied
//! unless an operator allows a range (coturn's `denied-peer-ip` list for these, with
//! `allowed-peer-ip` over it).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP prefix such as `10.0.0.0/8` or `2001:db8::/32`; a bare address is its own /32 or
/// /128.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Text that is not a [`Cidr`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The address part is not an IP address.
    #[error("not an IP address or IP/prefix")]
    Address(#[from] std::net::AddrParseError),
    /// The prefix is not a number within the family's bits.
    #[error("the prefix length must be 0 to {max}")]
    Prefix {
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
}

impl Cidr {
    /// The prefix of `prefix` bits at `addr`, or `None` if `prefix` is too long.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        (prefix <= max_prefix(addr)).then_some(Cidr { addr, prefix })
    }

    /// Whether `ip` is in the range. IPv4-mapped IPv6 addresses count as their IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr.parse::<IpAddr>()?, Some(prefix)),
            None => (s.parse::<IpAddr>()?, None),
        };
        let max = max_prefix(addr);
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse().map_err(|_| CidrError::Prefix { max })?,
        };
        Cidr::new(addr, prefix).ok_or(CidrError::Prefix { max })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Cidr {
    Cidr {
        addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        prefix,
    }
}

const fn v6(segments: [u16; 3], prefix: u8) -> Cidr {
    let [a, b, c] = segments;
    Cidr {
        addr: IpAddr::V6(Ipv6Addr::new(a, b, c, 0, 0, 0, 0, 0)),
        prefix,
    }
}

/// The ranges denied unless allowed: RFC 6890's special-purpose registries (private, shared,
/// loopback, link-local, documentation, benchmarking, multicast, reserved), and on IPv6 also
/// NAT64 and 6to4, which lead back into IPv4 ranges.
pub const DENIED_BY_DEFAULT: &[Cidr] = &[
    v4(0, 0, 0, 0, 8),
    v4(10, 0, 0, 0, 8),
    v4(100, 64, 0, 0, 10),
    v4(127, 0, 0, 0, 8),
    v4(169, 254, 0, 0, 16),
    v4(172, 16, 0, 0, 12),
    v4(192, 0, 0, 0, 24),
    v4(192, 0, 2, 0, 24),
    v4(192, 88, 99, 0, 24),
    v4(192, 168, 0, 0, 16),
    v4(198, 18, 0, 0, 15),
    v4(198, 51, 100, 0, 24),
    v4(203, 0, 113, 0, 24),
    v4(224, 0, 0, 0, 4),
    v4(240, 0, 0, 0, 4),
    v6([0, 0, 0], 127),
    v6([0x64, 0xff9b, 0], 96),
    v6([0x64, 0xff9b, 1], 48),
    v6([0x100, 0, 0], 64),
    v6([0x2001, 0, 0], 23),
    v6([0x2001, 0xdb8, 0], 32),
    v6([0x2002, 0, 0], 16),
    v6([0xfc00, 0, 0], 7),
    v6([0xfe80, 0, 0], 10),
    v6([0xff00, 0, 0], 8),
];

/// The peers an allocation may send to and hear from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerFilter {
    /// Ranges allowed even though [`DENIED_BY_DEFAULT`] lists them (`--turn-allow-peer`).
    pub allowed: Vec<Cidr>,
}

impl PeerFilter {
    /// Whether `ip` may be a peer.
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allowed.iter().any(|c| c.contains(ip))
            || !DENIED_BY_DEFAULT.iter().any(|c| c.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_parse_print_and_match() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert_eq!(c.to_string(), "10.1.0.0/16");
        assert!(c.contains(ip("10.1.255.3")) && !c.contains(ip("10.2.0.1")));
        assert!(
            c.contains(ip("::ffff:10.1.0.9")),
            "IPv4-mapped counts as IPv4"
        );
        assert!(!c.contains(ip("2001:db8::1")));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let all: Cidr = "::/0".parse().unwrap();
        assert!(all.contains(ip("2a00::1")) && !all.contains(ip("1.2.3.4")));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("1.2.3.4")));
        for bad in ["10.0.0.0/33", "::/129", "10.0.0/8", "x", "10.0.0.0/-1", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn private_and_reserved_peers_are_denied_unless_allowed() {
        let filter = PeerFilter::default();
        for denied in [
            "127.0.0.1",
            "10.0.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.251",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
            "ff02::1",
        ] {
            assert!(!filter.permits(ip(denied)), "{denied}");
        }
        for public in [
            "1.1.1.1",
            "8.8.4.4",
            "172.32.0.1",
            "2a00:1450::1",
            "2606:4700::1",
        ] {
            assert!(filter.permits(ip(public)), "{public}");
        }
        let lab = PeerFilter {
            allowed: vec!["127.0.0.1/32".parse().unwrap()],
        };
        assert!(lab.permits(ip("127.0.0.1")) && !lab.permits(ip("127.0.0.2")));
    }
}
