//! Stateless nonces (RFC 8489 9.2): each one carries its expiry and a MAC over it and the
//! client's address, under a key drawn from the server's seed, so the server keeps nothing per
//! client, a nonce works for the address it was given to only, and a stale one is told apart
//! (error 438, with a fresh nonce) from a forged one.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use data_encoding::HEXLOWER;
use ring::hmac;

/// Hex digits of the expiry, then of the truncated MAC.
const EXPIRY_HEX: usize = 16;
const MAC_BYTES: usize = 12;

pub(crate) struct Nonces {
    key: hmac::Key,
    lifetime: Duration,
    /// The first instant the server saw: expiries count milliseconds from it.
    origin: Option<Instant>,
}

impl Nonces {
    pub(crate) fn new(secret: [u8; 32], lifetime: Duration) -> Nonces {
        Nonces {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            lifetime,
            origin: None,
        }
    }

    fn mac(&self, expiry: u64, client: SocketAddr) -> [u8; MAC_BYTES] {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(&expiry.to_be_bytes());
        match client.ip() {
            std::net::IpAddr::V4(ip) => ctx.update(&ip.octets()),
            std::net::IpAddr::V6(ip) => ctx.update(&ip.octets()),
        }
        ctx.update(&client.port().to_be_bytes());
        let mut mac = [0u8; MAC_BYTES];
        mac.copy_from_slice(&ctx.sign().as_ref()[..MAC_BYTES]);
        mac
    }

    fn millis(&mut self, now: Instant) -> u64 {
        let origin = *self.origin.get_or_insert(now);
        now.saturating_duration_since(origin).as_millis() as u64
    }

    /// A nonce for `client`, valid for the lifetime from `now`.
    pub(crate) fn issue(&mut self, now: Instant, client: SocketAddr) -> String {
        let expiry = self.millis(now) + self.lifetime.as_millis() as u64;
        format!(
            "{expiry:016x}{}",
            HEXLOWER.encode(&self.mac(expiry, client))
        )
    }

    /// Whether `nonce` is one this server gave `client` and is still fresh at `now`.
    pub(crate) fn is_valid(&mut self, now: Instant, client: SocketAddr, nonce: &str) -> bool {
        if nonce.len() != EXPIRY_HEX + 2 * MAC_BYTES || !nonce.is_ascii() {
            return false;
        }
        let (expiry, mac) = nonce.split_at(EXPIRY_HEX);
        let Ok(expiry) = u64::from_str_radix(expiry, 16) else {
            return false;
        };
        let Ok(mac) = HEXLOWER.decode(mac.as_bytes()) else {
            return false;
        };
        // Not secret-dependent timing that matters: a forger learns only that a guess failed.
        mac == self.mac(expiry, client) && self.millis(now) < expiry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_for_one_client_and_goes_stale() {
        let t0 = Instant::now();
        let mut nonces = Nonces::new([7; 32], Duration::from_secs(600));
        let alice: SocketAddr = "198.51.100.1:4000".parse().unwrap();
        let bob: SocketAddr = "198.51.100.1:4001".parse().unwrap();
        let n = nonces.issue(t0, alice);
        assert_eq!(n.len(), 40);
        assert!(nonces.is_valid(t0 + Duration::from_secs(599), alice, &n));
        assert!(!nonces.is_valid(t0, bob, &n), "another client's");
        assert!(
            !nonces.is_valid(t0 + Duration::from_secs(600), alice, &n),
            "stale"
        );
        let mut forged = n.clone().into_bytes();
        forged[0] = b'f';
        let forged = String::from_utf8(forged).unwrap();
        assert!(!nonces.is_valid(t0, alice, &forged), "a later expiry");
        let other = Nonces::new([8; 32], Duration::from_secs(600)).issue(t0, alice);
        assert!(!nonces.is_valid(t0, alice, &other), "another server's");
        for junk in ["", "xyz", &"0".repeat(40), &"é".repeat(20)] {
            assert!(!nonces.is_valid(t0, alice, junk));
        }
    }
}
