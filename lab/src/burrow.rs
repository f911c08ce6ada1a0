//! Running burrow itself in a lab: the relay on the internet segment, and listeners in homes,
//! as the matrix scenario and the lab tests do.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use crate::{Lab, Spawned};

/// Addresses of the server `relay` runs on; the second serves RFC 5780's alternate-address
/// tests.
pub const RELAY_IPS: [Ipv4Addr; 2] = [
    Ipv4Addr::new(203, 0, 113, 30),
    Ipv4Addr::new(203, 0, 113, 31),
];

/// `burrow relay` on [`RELAY_IPS`]: WebSocket on port 8080, STUN on 3478.
pub fn relay_args() -> Vec<String> {
    vec![
        "relay".into(),
        "--listen".into(),
        format!("{}:8080", RELAY_IPS[0]),
        "--stun".into(),
        format!("{}:3478", RELAY_IPS[0]),
        "--alt-ip".into(),
        RELAY_IPS[1].to_string(),
    ]
}

/// The relay's URL, for `--relay` and `--registry`.
pub fn relay_url() -> String {
    format!("http://{}:8080", RELAY_IPS[0])
}

impl Lab {
    /// Starts `burrow relay` in the server namespace `server` (built with [`RELAY_IPS`]).
    pub fn spawn_relay(&self, burrow: impl AsRef<OsStr>, server: &str) -> Result<Spawned> {
        self.spawn(self.server_ns(server), burrow, relay_args())
    }

    /// Starts `burrow listen --json --relay URL` in `home`, with a key of its own in the lab's
    /// directory, and `extra` arguments; returns it with the first line it printed (node id,
    /// ticket, relays, addresses).
    pub fn spawn_listener(
        &self,
        burrow: impl AsRef<OsStr>,
        home: &str,
        extra: &[&str],
    ) -> Result<(Spawned, serde_json::Value)> {
        let key = self.dir().join(format!("{home}.key"));
        let mut args = vec![
            "listen".to_string(),
            "--json".into(),
            "--relay".into(),
            relay_url(),
            "--key".into(),
            key.to_string_lossy().into_owned(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let p = self.spawn(self.host_ns(home), burrow, args)?;
        let line = p.wait_for_line(Duration::from_secs(20), |_| true)?;
        let v: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("listen printed {line:?}"))?;
        if v["ticket"].as_str().is_none() {
            return Err(anyhow!("no ticket in {line}"));
        }
        Ok((p, v))
    }
}
