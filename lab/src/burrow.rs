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

/// How many addresses the relay's host has: two for the whole of RFC 5780, or one, as on most
/// rented servers, where STUN's second port alone shows a symmetric NAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayHost {
    /// [`RELAY_IPS`], STUN with `--alt-ip`.
    TwoAddresses,
    /// The first of [`RELAY_IPS`] only.
    OneAddress,
}

impl RelayHost {
    /// Both, two addresses first.
    pub const ALL: [RelayHost; 2] = [RelayHost::TwoAddresses, RelayHost::OneAddress];

    /// The addresses to build the relay's server with.
    pub fn ips(self) -> &'static [Ipv4Addr] {
        match self {
            RelayHost::TwoAddresses => &RELAY_IPS,
            RelayHost::OneAddress => &RELAY_IPS[..1],
        }
    }

    /// `two-address` or `one-address`, as reports and the command line name it.
    pub fn name(self) -> &'static str {
        match self {
            RelayHost::TwoAddresses => "two-address",
            RelayHost::OneAddress => "one-address",
        }
    }
}

impl std::str::FromStr for RelayHost {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        RelayHost::ALL
            .into_iter()
            .find(|h| h.name() == s)
            .ok_or_else(|| format!("{s:?}: the relay host is two-address or one-address"))
    }
}

/// `burrow relay` on the first of `ips`: WebSocket on port 8080, STUN on 3478 (and its second
/// port, 3479), with the second of `ips`, if any, as STUN's alternate IP.
pub fn relay_args(ips: &[Ipv4Addr]) -> Vec<String> {
    let mut args = vec![
        "relay".into(),
        "--listen".into(),
        format!("{}:8080", ips[0]),
        "--stun".into(),
        format!("{}:3478", ips[0]),
    ];
    if let Some(alt) = ips.get(1) {
        args.extend(["--alt-ip".into(), alt.to_string()]);
    }
    args
}

/// The relay's URL, for `--relay` and `--registry`.
pub fn relay_url() -> String {
    format!("http://{}:8080", RELAY_IPS[0])
}

impl Lab {
    /// Starts `burrow relay` in the server namespace `server` (built with the addresses of a
    /// [`RelayHost`]), on as many addresses as it has.
    pub fn spawn_relay(&self, burrow: impl AsRef<OsStr>, server: &str) -> Result<Spawned> {
        let relay = self.spawn(
            self.server_ns(server),
            burrow,
            relay_args(self.server_ips(server)),
        )?;
        // It binds every socket before it says so: a client started earlier would miss its first
        // STUN answers and print a ticket without its public address.
        relay.wait_for_stderr_line(Duration::from_secs(20), |l| {
            l.starts_with("relay listening")
        })?;
        Ok(relay)
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
