//! Building a lab: the [`LabBuilder`], the plan of names and addresses it makes, and setting
//! up (and tearing down) the namespaces, links, routes, NAT rules and link conditions.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};

use crate::process::{read_lossy, tail};
use crate::{delay, netns, rules, Lab, LinkConditions, NatKind, RouterVariant};

/// Numbers labs within this process, so parallel tests get distinct namespace names.
static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

/// Describes a lab; [`LabBuilder::build`] creates it.
#[derive(Debug, Clone, Default)]
pub struct LabBuilder {
    servers: Vec<(String, Vec<Ipv4Addr>)>,
    homes: Vec<(String, NatKind, RouterVariant)>,
    conditions: Vec<(String, LinkConditions)>,
}

impl LabBuilder {
    /// Adds a server namespace with these addresses (in 203.0.113.2..=254, at least one; give
    /// two for RFC 5780 discovery). The first one is its source address for outgoing traffic.
    pub fn server(mut self, name: &str, ips: &[Ipv4Addr]) -> Self {
        self.servers.push((name.to_string(), ips.to_vec()));
        self
    }

    /// Adds a home: an end host behind a router of this kind and variant.
    pub fn home(mut self, name: &str, kind: NatKind, variant: RouterVariant) -> Self {
        self.homes.push((name.to_string(), kind, variant));
        self
    }

    /// Impairs the link between `home` and the internet (for `cgnat`, the carrier's link).
    pub fn link_conditions(mut self, home: &str, conditions: LinkConditions) -> Self {
        self.conditions.push((home.to_string(), conditions));
        self
    }

    /// Creates the namespaces, links, addresses, routes and NAT rules. Takes a second or two;
    /// on failure everything created so far is removed again.
    pub fn build(self) -> Result<Lab> {
        let plan = self.plan()?;
        if let Err(e) = netns::sweep_stale() {
            eprintln!("burrow-lab: sweeping stale namespaces: {e:#}");
        }
        let dir = std::env::temp_dir().join(format!("burrow-lab-{}", &plan.prefix[3..]));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let lab = Lab {
            namespaces: plan.namespaces(),
            prefix: plan.prefix,
            internet_ns: plan.internet_ns,
            servers: plan.servers,
            homes: plan.homes,
            dir,
            children: Mutex::new(Vec::new()),
            spawned: AtomicU32::new(0),
            delay_lines: Mutex::new(Vec::new()),
            build_time: Duration::ZERO,
        };
        // From here on, dropping `lab` (also on `?`) removes whatever was created.
        lab.setup()
    }

    fn plan(self) -> Result<Plan> {
        let seq = LAB_SEQ.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{}{}-{}", netns::PREFIX, std::process::id(), seq);
        let mut seen_ips = Vec::new();
        let mut servers = Vec::new();
        for (i, (name, ips)) in self.servers.into_iter().enumerate() {
            check_name(&name)?;
            ensure!(
                !servers.iter().any(|s: &Server| s.name == name),
                "duplicate server {name:?}"
            );
            ensure!(!ips.is_empty(), "server {name:?} has no address");
            for ip in &ips {
                let o = ip.octets();
                ensure!(
                    o[..3] == [203, 0, 113] && (2..=254).contains(&o[3]),
                    "server {name:?}: {ip} is not in 203.0.113.2..=254"
                );
                ensure!(!seen_ips.contains(ip), "server address {ip} used twice");
                seen_ips.push(*ip);
            }
            servers.push(Server {
                ns: format!("{prefix}-s-{name}"),
                name,
                ips,
                index: i,
            });
        }
        ensure!(self.homes.len() <= 250, "at most 250 homes");
        let mut homes: Vec<Home> = Vec::new();
        for (i, (name, kind, variant)) in self.homes.into_iter().enumerate() {
            check_name(&name)?;
            ensure!(
                !homes.iter().any(|h| h.name == name),
                "duplicate home {name:?}"
            );
            let n = (i + 1) as u8;
            let (lan_gw, host_ip) = if kind == NatKind::Open {
                (Ipv4Addr::new(198, 19, n, 1), Ipv4Addr::new(198, 19, n, 2))
            } else {
                (Ipv4Addr::new(10, n, 0, 1), Ipv4Addr::new(10, n, 0, 2))
            };
            homes.push(Home {
                router_ns: format!("{prefix}-h-{name}-rt"),
                host_ns: format!("{prefix}-h-{name}-host"),
                carrier_ns: (kind == NatKind::Cgnat).then(|| format!("{prefix}-h-{name}-cgn")),
                name,
                kind,
                variant,
                n,
                lan_gw,
                host_ip,
                conditions: LinkConditions::default(),
            });
        }
        for (home, c) in self.conditions {
            c.validate()
                .with_context(|| format!("link conditions of {home:?}"))?;
            let h = homes
                .iter_mut()
                .find(|h| h.name == home)
                .ok_or_else(|| anyhow!("link conditions for unknown home {home:?}"))?;
            h.conditions = c;
        }
        Ok(Plan {
            internet_ns: format!("{prefix}-inet"),
            prefix,
            servers,
            homes,
        })
    }
}

/// Names of servers and homes become part of namespace names.
fn check_name(name: &str) -> Result<()> {
    ensure!(
        !name.is_empty()
            && name.len() <= 32
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "name {name:?} must be 1-32 characters of a-z, 0-9 and '-'"
    );
    Ok(())
}

struct Plan {
    prefix: String,
    internet_ns: String,
    servers: Vec<Server>,
    homes: Vec<Home>,
}

impl Plan {
    fn namespaces(&self) -> Vec<String> {
        let mut v = vec![self.internet_ns.clone()];
        v.extend(self.servers.iter().map(|s| s.ns.clone()));
        for h in &self.homes {
            v.extend(h.carrier_ns.clone());
            v.push(h.router_ns.clone());
            v.push(h.host_ns.clone());
        }
        v
    }
}

#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) name: String,
    pub(crate) ns: String,
    pub(crate) ips: Vec<Ipv4Addr>,
    pub(crate) index: usize,
}

#[derive(Debug)]
pub(crate) struct Home {
    pub(crate) name: String,
    pub(crate) kind: NatKind,
    pub(crate) variant: RouterVariant,
    /// 1-based index: the N in 198.18.N.0/24, 10.N.0.0/24, 100.64.N.0/24.
    pub(crate) n: u8,
    pub(crate) router_ns: String,
    pub(crate) host_ns: String,
    pub(crate) carrier_ns: Option<String>,
    pub(crate) lan_gw: Ipv4Addr,
    pub(crate) host_ip: Ipv4Addr,
    pub(crate) conditions: LinkConditions,
}

impl Home {
    /// The address the internet sees: the outer router's WAN, or the host itself when open.
    pub(crate) fn public_ip(&self) -> Ipv4Addr {
        if self.kind == NatKind::Open {
            self.host_ip
        } else {
            Ipv4Addr::new(198, 18, self.n, 2)
        }
    }

    /// The namespace whose `bw-wan` faces the internet.
    fn outer_ns(&self) -> &str {
        self.carrier_ns.as_deref().unwrap_or(&self.router_ns)
    }
}

impl Lab {
    fn setup(mut self) -> Result<Lab> {
        let started = Instant::now();
        // 1. Namespaces, in one `ip` process.
        let script: String = self
            .namespaces
            .iter()
            .map(|ns| format!("netns add {ns}\n"))
            .collect();
        netns::ip_batch(None, &script, false)?;

        // 2. Sysctls before any interface exists, so new interfaces inherit `default`.
        let router: Vec<(&'static str, &'static str)> = vec![
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
            ("net.ipv4.ip_forward", "1"),
        ];
        let end: Vec<(&'static str, &'static str)> = router[..2].to_vec();
        let mut plan = vec![(self.internet_ns.clone(), router.clone())];
        plan.extend(self.servers.iter().map(|s| (s.ns.clone(), end.clone())));
        for h in &self.homes {
            if let Some(c) = &h.carrier_ns {
                plan.push((c.clone(), router.clone()));
            }
            plan.push((h.router_ns.clone(), router.clone()));
            plan.push((h.host_ns.clone(), end.clone()));
        }
        netns::set_sysctls(&plan)?;

        // 3. Links, addresses and routes: one `ip -batch` per namespace, parents first, since
        // each namespace creates the veth pairs to its children.
        for (ns, script) in self.ip_scripts() {
            netns::ip_batch(Some(&ns), &script, false)?;
        }

        // 4. Firewall and NAT, with one iptables-restore per router.
        for h in &self.homes {
            if let Some(set) = rules::ipset_script(h.kind) {
                let mut cmd = netns::ns_command(&h.router_ns, "ipset")?;
                cmd.arg("restore");
                netns::run_with_stdin(cmd, &set)
                    .with_context(|| format!("ipset in {}", h.router_ns))?;
            }
            let conditions = (!h.conditions.is_none()).then_some(h.conditions);
            let outer_conditions = if h.carrier_ns.is_some() {
                None
            } else {
                conditions
            };
            let r = rules::router_rules(&rules::RouterRules {
                kind: h.kind,
                variant: h.variant,
                wan_ip: if h.kind == NatKind::Cgnat {
                    Ipv4Addr::new(100, 64, h.n, 2)
                } else {
                    Ipv4Addr::new(198, 18, h.n, 2)
                },
                host_ip: h.host_ip,
                conditions: outer_conditions,
            });
            iptables_restore(&h.router_ns, &r)?;
            if let Some(c) = &h.carrier_ns {
                iptables_restore(c, &rules::carrier_rules(h.variant, conditions.as_ref()))?;
            }
        }

        // 5. Rate limits (tbf on both ends of the home's WAN link) and delay lines.
        for h in &self.homes {
            if let Some(kbit) = h.conditions.rate_kbit {
                let tbf = tbf_args(kbit);
                tc(
                    h.outer_ns(),
                    &format!("qdisc add dev {} root {tbf}\n", rules::WAN),
                )?;
                tc(
                    &self.internet_ns,
                    &format!("qdisc add dev bw-h{} root {tbf}\n", h.n),
                )?;
            }
            if let Some(d) = h.conditions.delay.filter(|d| !d.is_zero()) {
                let line = delay::DelayLine::start(h.outer_ns(), rules::DELAY_QUEUE, d)?;
                self.delay_lines.lock().expect("lock").push(line);
            }
        }
        self.build_time = started.elapsed();
        Ok(self)
    }

    /// `(namespace, ip batch)` for every namespace, each after the one creating its links.
    fn ip_scripts(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut inet = String::from("link set lo up\n");
        for s in &self.servers {
            let dev = format!("bw-s{}", s.index);
            inet += &format!(
                "link add {dev} type veth peer name bw-up netns {ns}\n\
                 addr add 203.0.113.1/32 dev {dev}\n\
                 link set {dev} up\n",
                ns = s.ns
            );
            for ip in &s.ips {
                inet += &format!("route add {ip}/32 dev {dev}\n");
            }
        }
        for h in &self.homes {
            let (dev, n) = (format!("bw-h{}", h.n), h.n);
            inet += &format!(
                "link add {dev} type veth peer name {wan} netns {ns}\n\
                 addr add 198.18.{n}.1/24 dev {dev}\n\
                 link set {dev} up\n",
                wan = rules::WAN,
                ns = h.outer_ns()
            );
            if h.kind == NatKind::Open {
                inet += &format!("route add 198.19.{n}.0/24 via 198.18.{n}.2\n");
            }
        }
        out.push((self.internet_ns.clone(), inet));

        for s in &self.servers {
            let mut sc = String::from("link set lo up\n");
            for ip in &s.ips {
                sc += &format!("addr add {ip}/32 dev bw-up\n");
            }
            sc += &format!(
                "link set bw-up up\n\
                 route add 203.0.113.1/32 dev bw-up\n\
                 route add default via 203.0.113.1 dev bw-up src {}\n",
                s.ips[0]
            );
            out.push((s.ns.clone(), sc));
        }

        for h in &self.homes {
            let n = h.n;
            let wan = rules::WAN;
            let lan = rules::LAN;
            let mut rt = String::from("link set lo up\n");
            if let Some(c) = &h.carrier_ns {
                let cg = format!(
                    "link set lo up\n\
                     addr add 198.18.{n}.2/24 dev {wan}\n\
                     link set {wan} up\n\
                     route add default via 198.18.{n}.1\n\
                     link add bw-cust type veth peer name {wan} netns {rt_ns}\n\
                     addr add 100.64.{n}.1/24 dev bw-cust\n\
                     link set bw-cust up\n",
                    rt_ns = h.router_ns
                );
                out.push((c.clone(), cg));
                rt += &format!(
                    "addr add 100.64.{n}.2/24 dev {wan}\n\
                     link set {wan} up\n\
                     route add default via 100.64.{n}.1\n"
                );
            } else {
                rt += &format!(
                    "addr add 198.18.{n}.2/24 dev {wan}\n\
                     link set {wan} up\n\
                     route add default via 198.18.{n}.1\n"
                );
            }
            rt += &format!(
                "link add {lan} type veth peer name bw-up netns {host_ns}\n\
                 addr add {gw}/24 dev {lan}\n\
                 link set {lan} up\n",
                host_ns = h.host_ns,
                gw = h.lan_gw
            );
            out.push((h.router_ns.clone(), rt));
            let host = format!(
                "link set lo up\n\
                 addr add {ip}/24 dev bw-up\n\
                 link set bw-up up\n\
                 route add default via {gw}\n",
                ip = h.host_ip,
                gw = h.lan_gw
            );
            out.push((h.host_ns.clone(), host));
        }
        out
    }

    fn teardown(&mut self) {
        // Delay lines first: their threads sit inside the namespaces.
        self.delay_lines.lock().map(|mut v| v.clear()).ok();
        let panicking = std::thread::panicking();
        let children =
            std::mem::take(&mut *self.children.lock().unwrap_or_else(|e| e.into_inner()));
        for mut t in children {
            let _ = t.child.kill();
            if let Err(e) = t.child.wait() {
                eprintln!("burrow-lab: reaping {}: {e}", t.label);
            }
            if panicking {
                // The logs of the lab's processes are what one needs to see why a test failed.
                if let Some((out, err)) = &t.logs {
                    eprintln!(
                        "burrow-lab: --- {} stdout ({}) ---\n{}\n--- stderr ---\n{}",
                        t.label,
                        out.display(),
                        tail(&read_lossy(out), 30),
                        tail(&read_lossy(err), 30)
                    );
                }
            }
        }
        // Anything else still running in the lab (e.g. started through `command`).
        netns::kill_all_in(&self.namespaces);
        if let Err(e) = netns::delete_namespaces(&self.namespaces) {
            eprintln!("burrow-lab: deleting namespaces of {}: {e:#}", self.prefix);
        }
        let leftover: Vec<&String> = self
            .namespaces
            .iter()
            .filter(|ns| netns::netns_path(ns).exists())
            .collect();
        if !leftover.is_empty() {
            eprintln!("burrow-lab: namespaces left behind: {leftover:?}");
        }
        if panicking || std::env::var_os("BURROW_LAB_KEEP").is_some() {
            eprintln!("burrow-lab: logs kept in {}", self.dir.display());
        } else if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("burrow-lab: removing {}: {e}", self.dir.display());
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn iptables_restore(ns: &str, rules: &str) -> Result<()> {
    if rules.is_empty() {
        return Ok(());
    }
    let cmd = netns::ns_command(ns, "iptables-restore")?;
    netns::run_with_stdin(cmd, rules).with_context(|| format!("iptables-restore in {ns}:\n{rules}"))
}

fn tc(ns: &str, script: &str) -> Result<()> {
    netns::check_ns_name(ns)?;
    let mut cmd = Command::new("tc");
    cmd.args(["-n", ns, "-batch", "-"]);
    netns::run_with_stdin(cmd, script).with_context(|| format!("tc in {ns}: {script}"))
}

/// A token bucket for `kbit`: about 10 ms of traffic (at least two full frames) of burst, and
/// up to 100 ms of queue before tail drop.
fn tbf_args(kbit: u32) -> String {
    let bytes_per_sec = u64::from(kbit) * 1000 / 8;
    let burst = (bytes_per_sec / 100).max(2 * 1514);
    format!("tbf rate {kbit}kbit burst {burst} latency 100ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_addresses_and_names() {
        let plan = Lab::builder()
            .server("stun", &["203.0.113.10".parse().unwrap()])
            .home("a", NatKind::Open, RouterVariant::Bare)
            .home("b", NatKind::Cgnat, RouterVariant::Firewalled)
            .plan()
            .unwrap();
        assert_eq!(plan.homes[0].host_ip, Ipv4Addr::new(198, 19, 1, 2));
        assert_eq!(plan.homes[1].host_ip, Ipv4Addr::new(10, 2, 0, 2));
        assert_eq!(plan.homes[1].public_ip(), Ipv4Addr::new(198, 18, 2, 2));
        let names = plan.namespaces();
        assert_eq!(names.len(), 1 + 1 + 2 + 3);
        assert!(names.iter().all(|n| netns::check_ns_name(n).is_ok()));
        assert!(Lab::builder()
            .server("x", &["10.0.0.1".parse().unwrap()])
            .plan()
            .is_err());
        assert!(Lab::builder()
            .home("Bad Name", NatKind::Open, RouterVariant::Bare)
            .plan()
            .is_err());
        assert!(Lab::builder()
            .link_conditions("nope", LinkConditions::default())
            .plan()
            .is_err());
    }

    #[test]
    fn tbf_has_sane_burst() {
        assert_eq!(tbf_args(1000), "tbf rate 1000kbit burst 3028 latency 100ms");
        assert!(tbf_args(100_000).contains("burst 125000"));
    }
}
