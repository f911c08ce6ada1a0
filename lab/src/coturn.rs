//! coturn in the lab: starting `turnserver`, running `turnutils_natdiscovery` and parsing its
//! [`Verdict`], and STUN round trips from inside a namespace.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use crate::process::tail;
use crate::{netns, stun, Lab, Spawned};

/// What `turnutils_natdiscovery` found, in burrow's vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `none`, `endpoint-independent`, `address-dependent`, `address-and-port-dependent` or
    /// `unknown` (no RFC 5780 answer, e.g. UDP blocked).
    pub mapping: String,
    /// Same vocabulary as `mapping`.
    pub filtering: String,
    /// natdiscovery's whole stdout.
    pub raw: String,
}

impl Verdict {
    /// Parses the stdout of `turnutils_natdiscovery -m -f` (coturn 4.6).
    ///
    /// Result lines it prints (each between `====` rulers), per section:
    /// * mapping: `No NAT! (Endpoint Independent Mapping)` (the reflexive address equals the
    ///   local one; only detectable with `-L`), `NAT with Endpoint Independent Mapping!`,
    ///   `NAT with Address Dependent Mapping!`, `NAT with Address and Port Dependent Mapping!`;
    /// * filtering: `No NAT! (Endpoint Independent Mapping)`,
    ///   `NAT with Endpoint Independent Filtering!`, `NAT with Address Dependent Filtering!`,
    ///   `NAT with Address and Port Dependent Filtering!`.
    ///
    /// With no answer at all it prints only `STUN receive timeout..` and no result line.
    /// "No NAT" maps to `none`; in the filtering section it turns an endpoint-independent result
    /// into `none` (nothing filters), while any stricter filtering result is kept.
    pub fn parse(raw: &str) -> Verdict {
        #[derive(PartialEq)]
        enum Section {
            None,
            Mapping,
            Filtering,
        }
        let mut section = Section::None;
        let (mut map_no_nat, mut mapping) = (false, None);
        let (mut filt_no_nat, mut filtering) = (false, None);
        for line in raw.lines().map(str::trim) {
            if line.contains("Mapping Behavior Discovery") && !line.contains("Lifetime") {
                section = Section::Mapping;
            } else if line.contains("Filtering Behavior Discovery") {
                section = Section::Filtering;
            } else if line.starts_with("-= ") {
                section = Section::None;
            }
            let behaviour = if line.contains("Address and Port Dependent") {
                Some("address-and-port-dependent")
            } else if line.contains("Address Dependent") {
                Some("address-dependent")
            } else if line.contains("Endpoint Independent") {
                Some("endpoint-independent")
            } else {
                None
            };
            let no_nat = line.starts_with("No NAT");
            match section {
                Section::Mapping if no_nat => map_no_nat = true,
                Section::Mapping if line.starts_with("NAT with") && line.contains("Mapping") => {
                    mapping = behaviour
                }
                Section::Filtering if no_nat => filt_no_nat = true,
                Section::Filtering
                    if line.starts_with("NAT with") && line.contains("Filtering") =>
                {
                    filtering = behaviour
                }
                _ => {}
            }
        }
        let mapping = if map_no_nat {
            "none"
        } else {
            mapping.unwrap_or("unknown")
        };
        let filtering = match (filt_no_nat, filtering) {
            (true, Some("endpoint-independent")) | (true, None) => "none",
            (_, Some(f)) => f,
            (false, None) => "unknown",
        };
        Verdict {
            mapping: mapping.to_string(),
            filtering: filtering.to_string(),
            raw: raw.to_string(),
        }
    }

    /// Whether any STUN response came back at all.
    pub fn udp(&self) -> bool {
        self.raw.contains("UDP reflexive addr")
    }

    /// The classic NAT type these behaviours amount to, in burrow's `nat_type` vocabulary.
    pub fn nat_type(&self) -> &'static str {
        if !self.udp() {
            return "udp-blocked";
        }
        match (self.mapping.as_str(), self.filtering.as_str()) {
            ("none", "none") => "open",
            ("endpoint-independent", "endpoint-independent") => "full-cone",
            ("endpoint-independent", "address-dependent") => "restricted-cone",
            ("endpoint-independent", "address-and-port-dependent") => "port-restricted-cone",
            ("address-dependent" | "address-and-port-dependent", _) => "symmetric",
            _ => "unknown",
        }
    }
}

impl Lab {
    /// Round trip of a STUN Binding request from `ns` to `target`, retried until `timeout`.
    pub fn stun_ping(&self, ns: &str, target: SocketAddr, timeout: Duration) -> Result<Duration> {
        self.check_own_ns(ns)?;
        netns::in_netns(ns, || stun::probe(target, timeout))
    }

    /// Starts coturn's `turnserver` on all of `server`'s addresses (STUN only, RFC 5780 on when
    /// it has two or more, alternate port `port + 1`; no config file, TLS, DTLS or CLI) and
    /// waits until every address answers on both ports.
    pub fn start_coturn(&self, server: &str, port: u16) -> Result<Spawned> {
        ensure!(
            port < u16::MAX,
            "port {port} leaves no room for the alternate port"
        );
        let s = self.server(server);
        let pidfile = self.dir.join(format!("turnserver-{server}-{port}.pid"));
        let mut args: Vec<String> = [
            "-n",
            "--stun-only",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--simple-log",
            "--log-file",
            "stdout",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend([
            "--listening-port".into(),
            port.to_string(),
            "--alt-listening-port".into(),
            (port + 1).to_string(),
            "--pidfile".into(),
            pidfile.display().to_string(),
            // Its own (unused) user database instead of the system-wide default one.
            "--db".into(),
            self.dir
                .join(format!("turndb-{server}-{port}"))
                .display()
                .to_string(),
        ]);
        for ip in &s.ips {
            args.extend(["--listening-ip".into(), ip.to_string()]);
        }
        // coturn after 4.6.1 turned RFC 5780 off by default; only those versions know --rfc5780.
        if s.ips.len() > 1 && coturn_has_rfc5780_flag() {
            args.push("--rfc5780".into());
        }
        let proc = self.spawn(&s.ns, "turnserver", &args)?;
        let targets: Vec<SocketAddr> = s
            .ips
            .iter()
            .flat_map(|ip| [(*ip, port).into(), (*ip, port + 1).into()])
            .collect();
        let ready = netns::in_netns(&self.internet_ns, || {
            for t in &targets {
                stun::probe(*t, Duration::from_secs(10))?;
            }
            Ok(())
        });
        if let Err(e) = ready {
            bail!(
                "turnserver in {} does not answer: {e:#}\nits output:\n{}{}",
                s.ns,
                tail(&proc.stdout(), 30),
                tail(&proc.stderr(), 30)
            );
        }
        Ok(proc)
    }

    /// Runs `turnutils_natdiscovery -m -f -L <host ip> -p <port> <server_ip>` in the host of
    /// `home` and parses its verdict (see [`Verdict::parse`]). Takes up to ~7 s: every test
    /// that gets no answer waits 3 s.
    pub fn natdiscovery(&self, home: &str, server_ip: Ipv4Addr, port: u16) -> Result<Verdict> {
        let h = self.home(home);
        let mut cmd = self.command(&h.host_ns, "turnutils_natdiscovery");
        // -L binds the host's address, so natdiscovery can see "no NAT" (it compares the
        // reflexive address with the bound one, which is 0.0.0.0 without -L).
        cmd.args(["-m", "-f", "-L"])
            .arg(h.host_ip.to_string())
            .arg("-p")
            .arg(port.to_string())
            .arg(server_ip.to_string());
        let out = netns::output_with_timeout(cmd, Duration::from_secs(60))
            .with_context(|| format!("turnutils_natdiscovery in {}", h.host_ns))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        ensure!(
            out.status.success() || stdout.contains("Behavior Discovery"),
            "turnutils_natdiscovery failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            stdout
        );
        Ok(Verdict::parse(&stdout))
    }
}

/// Whether the installed `turnserver` has the `--rfc5780` switch (coturn after 4.6.1).
fn coturn_has_rfc5780_flag() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        Command::new("turnserver")
            .arg("-h")
            .output()
            .map(|o| {
                let text = String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr);
                text.lines()
                    .any(|l| l.trim_start().starts_with("--rfc5780"))
            })
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAT_APDF: &str = "
-= Mapping Behavior Discovery =-

========================================
RFC 5780 response 1
UDP reflexive addr: 198.18.4.2:40000
Local addr: 10.4.0.2:40000

========================================
RFC 5780 response 2
UDP reflexive addr: 198.18.4.2:40000

========================================
NAT with Endpoint Independent Mapping!
========================================

-= Filtering Behavior Discovery =-

========================================
RFC 5780 response 3
UDP reflexive addr: 198.18.4.2:40001
STUN receive timeout..
STUN receive timeout..

========================================
NAT with Address and Port Dependent Filtering!
========================================
";

    #[test]
    fn parses_natdiscovery() {
        let v = Verdict::parse(NAT_APDF);
        assert_eq!(v.mapping, "endpoint-independent");
        assert_eq!(v.filtering, "address-and-port-dependent");
        assert_eq!(v.nat_type(), "port-restricted-cone");

        let open = "-= Mapping Behavior Discovery =-\nUDP reflexive addr: 1.2.3.4:5\n\
            No NAT! (Endpoint Independent Mapping)\nNAT with Endpoint Independent Mapping!\n\
            -= Filtering Behavior Discovery =-\nNo NAT! (Endpoint Independent Mapping)\n\
            NAT with Endpoint Independent Filtering!\n";
        let v = Verdict::parse(open);
        assert_eq!((v.mapping.as_str(), v.filtering.as_str()), ("none", "none"));
        assert_eq!(v.nat_type(), "open");

        let blocked = "\n-= Mapping Behavior Discovery =-\nSTUN receive timeout..\n\n\
            -= Filtering Behavior Discovery =-\nSTUN receive timeout..\n";
        let v = Verdict::parse(blocked);
        assert_eq!(
            (v.mapping.as_str(), v.filtering.as_str()),
            ("unknown", "unknown")
        );
        assert_eq!(v.nat_type(), "udp-blocked");

        let sym = "-= Mapping Behavior Discovery =-\nUDP reflexive addr: 1.2.3.4:5\n\
            NAT with Address and Port Dependent Mapping!\n\
            -= Filtering Behavior Discovery =-\nNAT with Address Dependent Filtering!\n";
        let v = Verdict::parse(sym);
        assert_eq!(v.mapping, "address-and-port-dependent");
        assert_eq!(v.filtering, "address-dependent");
        assert_eq!(v.nat_type(), "symmetric");
    }
}
