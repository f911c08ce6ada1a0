//! Who may allocate: long-term users (RFC 8489 9.2) and the ephemeral credentials of the
//! TURN REST API that coturn's `use-auth-secret` serves, so existing integrations work as
//! they are: the username is `expiry` or `expiry:user` (Unix seconds), the password
//! `base64(HMAC-SHA1(secret, username))`, and the username is refused once `expiry` passed.

use std::collections::BTreeMap;

use data_encoding::BASE64;
use ring::hmac;

use crate::stun::integrity::long_term_key;

/// A long-term key: `MD5(username:realm:password)`.
pub type Key = [u8; 16];

/// The password a TURN REST service hands out for `username` under `secret`.
pub fn ephemeral_password(secret: &[u8], username: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    BASE64.encode(hmac::sign(&key, username.as_bytes()).as_ref())
}

/// Why a username has no key.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Refusal {
    /// Neither a configured user nor an ephemeral username.
    Unknown,
    /// An ephemeral username whose expiry has passed.
    Expired,
}

/// The credentials a server accepts, with their keys computed for its realm.
#[derive(Clone, Debug)]
pub(crate) struct Credentials {
    realm: String,
    users: BTreeMap<String, Key>,
    secrets: Vec<Vec<u8>>,
}

impl Credentials {
    pub(crate) fn new(realm: &str, users: &[(String, String)], secrets: &[String]) -> Self {
        Credentials {
            realm: realm.to_string(),
            users: users
                .iter()
                .map(|(u, p)| (u.clone(), long_term_key(u, realm, p)))
                .collect(),
            secrets: secrets.iter().map(|s| s.as_bytes().to_vec()).collect(),
        }
    }

    /// The keys `username` may have signed with at `unix_secs`: one per secret for an
    /// ephemeral username (secrets rotate, so several may be valid at once).
    pub(crate) fn keys(&self, username: &str, unix_secs: u64) -> Result<Vec<Key>, Refusal> {
        if let Some(key) = self.users.get(username) {
            return Ok(vec![*key]);
        }
        let expiry = username
            .split(':')
            .next()
            .and_then(|t| t.parse::<u64>().ok());
        match expiry {
            Some(_) if self.secrets.is_empty() => Err(Refusal::Unknown),
            Some(expiry) if expiry < unix_secs => Err(Refusal::Expired),
            Some(_) => Ok(self
                .secrets
                .iter()
                .map(|s| long_term_key(username, &self.realm, &ephemeral_password(s, username)))
                .collect()),
            None => Err(Refusal::Unknown),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_what_coturn_and_the_rest_api_compute() {
        // Both computed independently (Python's hashlib and hmac).
        assert_eq!(
            data_encoding::HEXLOWER.encode(&long_term_key("alice", "burrow", "secret")),
            "671e571d31895d129eea39fa8e63c197"
        );
        assert_eq!(
            ephemeral_password(b"sekrit", "1700000000:alice"),
            "qicIgfR+IBFR4/g4weuEVByS9aw="
        );
        let creds = Credentials::new(
            "burrow",
            &[("alice".into(), "secret".into())],
            &["old".into(), "sekrit".into()],
        );
        assert_eq!(
            creds.keys("alice", 0),
            Ok(vec![long_term_key("alice", "burrow", "secret")])
        );
        let eph = "1700000000:alice";
        let keys = creds.keys(eph, 1_700_000_000).unwrap();
        let expected = long_term_key(eph, "burrow", "qicIgfR+IBFR4/g4weuEVByS9aw=");
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1], expected);
        assert_eq!(creds.keys(eph, 1_700_000_001), Err(Refusal::Expired));
        assert_eq!(creds.keys("1700000000", 0).map(|k| k.len()), Ok(2));
        assert_eq!(creds.keys("bob", 0), Err(Refusal::Unknown));
        assert_eq!(creds.keys("soon:bob", 0), Err(Refusal::Unknown));
        let no_secret = Credentials::new("burrow", &[], &[]);
        assert_eq!(no_secret.keys(eph, 0), Err(Refusal::Unknown));
    }
}
