//! The burrow NAT lab: network namespaces joined by veth links, with the Linux kernel's NAT in
//! the home routers, an "internet" router in the middle and servers on 203.0.113.0/24.
//!
//! ```no_run
//! use burrow_lab::{Lab, NatKind, RouterVariant};
//! # fn main() -> anyhow::Result<()> {
//! if let Some(why) = Lab::root_skip_reason() {
//!     eprintln!("SKIPPED: {why}");
//!     return Ok(());
//! }
//! let lab = Lab::builder()
//!     .server("stun", &["203.0.113.10".parse()?, "203.0.113.11".parse()?])
//!     .home("h1", NatKind::Symmetric, RouterVariant::Firewalled)
//!     .build()?;
//! lab.start_coturn("stun", 3478)?;
//! let verdict = lab.natdiscovery("h1", "203.0.113.10".parse()?, 3478)?;
//! assert_eq!(verdict.mapping, "address-and-port-dependent");
//! # Ok(()) }
//! ```
//!
//! Topology (N is the home's index, 1-based, in the order homes were added):
//!
//! * `internet` namespace: forwards between links (TTL decrements like a real hop); one veth per
//!   server (`bw-s<i>`, 203.0.113.1/32) and per home (`bw-h<N>`, 198.18.N.1/24).
//! * server namespace: all its addresses as /32 on `bw-up`, default route via 203.0.113.1.
//! * home: router namespace (`bw-wan` 198.18.N.2/24, `bw-lan` 10.N.0.1/24) and host namespace
//!   (`bw-up` 10.N.0.2/24). An `open` home uses the routable 198.19.N.0/24 as its LAN instead. A
//!   `cgnat` home puts a carrier namespace between router and internet: carrier `bw-wan`
//!   198.18.N.2/24 and `bw-cust` 100.64.N.1/24, home router `bw-wan` 100.64.N.2/24.
//!
//! Everything is torn down when the [`Lab`] is dropped; namespaces of labs whose process died
//! are swept when the next lab is built.

#![warn(missing_docs)]

mod delay;
mod netns;
mod rules;
mod selfcheck;
mod stun;

use std::ffi::OsStr;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};

pub use delay::run_delay_line;
pub use selfcheck::{selfcheck, SelfCheck, SelfCheckRow};

/// Deletes lab namespaces (`bw-<pid>-...`) whose process no longer runs, after killing what
/// still runs inside them, and returns their names. [`LabBuilder::build`] does this itself.
pub fn sweep_stale() -> Result<Vec<String>> {
    netns::sweep_stale()
}

/// Runs `cmd` with stdout and stderr captured (stdin from /dev/null) and returns its output;
/// kills it and fails if it runs longer than `timeout`. Several coturn tools wait forever for
/// a response that a NAT filters (e.g. `turnutils_stunclient` after its CHANGE-REQUEST), so
/// run them through this: `output_with_timeout(lab.command(ns, "turnutils_stunclient"), ..)`.
pub fn output_with_timeout(cmd: Command, timeout: Duration) -> Result<std::process::Output> {
    netns::output_with_timeout(cmd, timeout)
}

/// Kills what runs in, and deletes, every namespace of every lab of *this* process. Meant for
/// a binary's SIGINT/SIGTERM handling, where the labs' destructors will not run.
pub fn remove_own_namespaces() -> Result<Vec<String>> {
    netns::remove_own()
}

/// Numbers labs within this process, so parallel tests get distinct namespace names.
static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

/// The NAT behaviours the lab can build, each with the kernel's own NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatKind {
    /// No NAT: the host has a routable address.
    Open,
    /// Endpoint-independent mapping and filtering (SNAT + DNAT of all inbound UDP).
    FullCone,
    /// Endpoint-independent mapping, address-dependent filtering.
    RestrictedCone,
    /// Endpoint-independent mapping, address-and-port-dependent filtering (plain MASQUERADE).
    PortRestrictedCone,
    /// Address-and-port-dependent mapping (MASQUERADE `--random-fully`).
    Symmetric,
    /// UDP dropped in the router (TCP still NATed).
    UdpBlocked,
    /// Two layers of MASQUERADE: home router onto 100.64.0.0/10, carrier onto its public address.
    Cgnat,
}

impl NatKind {
    /// Every kind, in a stable order.
    pub const ALL: [NatKind; 7] = [
        NatKind::Open,
        NatKind::FullCone,
        NatKind::RestrictedCone,
        NatKind::PortRestrictedCone,
        NatKind::Symmetric,
        NatKind::UdpBlocked,
        NatKind::Cgnat,
    ];

    /// Short name: `open`, `full-cone`, `restricted-cone`, `port-restricted-cone`,
    /// `symmetric`, `udp-blocked`, `cgnat`.
    pub fn name(self) -> &'static str {
        match self {
            NatKind::Open => "open",
            NatKind::FullCone => "full-cone",
            NatKind::RestrictedCone => "restricted-cone",
            NatKind::PortRestrictedCone => "port-restricted-cone",
            NatKind::Symmetric => "symmetric",
            NatKind::UdpBlocked => "udp-blocked",
            NatKind::Cgnat => "cgnat",
        }
    }

    /// The RFC 4787 mapping behaviour a correct classifier reports for this kind, in burrow's
    /// vocabulary (`none`, `endpoint-independent`, `address-dependent`,
    /// `address-and-port-dependent`, `unknown`).
    pub fn expected_mapping(self) -> &'static str {
        match self {
            NatKind::Open => "none",
            NatKind::FullCone
            | NatKind::RestrictedCone
            | NatKind::PortRestrictedCone
            | NatKind::Cgnat => "endpoint-independent",
            NatKind::Symmetric => "address-and-port-dependent",
            NatKind::UdpBlocked => "unknown",
        }
    }

    /// The RFC 4787 filtering behaviour a correct classifier reports for this kind.
    pub fn expected_filtering(self) -> &'static str {
        match self {
            NatKind::Open => "none",
            NatKind::FullCone => "endpoint-independent",
            NatKind::RestrictedCone => "address-dependent",
            NatKind::PortRestrictedCone | NatKind::Symmetric | NatKind::Cgnat => {
                "address-and-port-dependent"
            }
            NatKind::UdpBlocked => "unknown",
        }
    }

    /// The `nat_type` a correct classifier reports (`cgnat` looks like a port-restricted cone).
    pub fn expected_nat_type(self) -> &'static str {
        match self {
            NatKind::Cgnat => "port-restricted-cone",
            other => other.name(),
        }
    }
}

impl fmt::Display for NatKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NatKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        NatKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| anyhow!("unknown NAT kind {s:?}"))
    }
}

/// The two ways real Linux routers treat packets addressed to themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RouterVariant {
    /// A stateful firewall on the router's own WAN input: established/related accepted, the
    /// rest dropped silently (the default).
    #[default]
    Firewalled,
    /// No input rules: the router answers unsolicited packets itself (ICMP port unreachable)
    /// and keeps conntrack state for them.
    Bare,
}

impl RouterVariant {
    /// Both variants.
    pub const ALL: [RouterVariant; 2] = [RouterVariant::Firewalled, RouterVariant::Bare];

    /// `firewalled` or `bare`.
    pub fn name(self) -> &'static str {
        match self {
            RouterVariant::Firewalled => "firewalled",
            RouterVariant::Bare => "bare",
        }
    }
}

impl fmt::Display for RouterVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Impairments of a home's link to the internet. Each applies in each direction separately: a
/// delay of 50 ms adds 100 ms to a round trip, a loss of 5% drops 5% of the packets each way.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkConditions {
    /// Random loss in percent (0..=100), with iptables `-m statistic`.
    pub loss_percent: f32,
    /// Rate limit in kbit/s, with a `tbf` qdisc on both ends of the link.
    pub rate_kbit: Option<u32>,
    /// One-way delay, with an NFQUEUE delay line in the namespace owning the home's WAN link.
    pub delay: Option<Duration>,
}

impl LinkConditions {
    fn is_none(&self) -> bool {
        self.loss_percent == 0.0 && self.rate_kbit.is_none() && self.delay.is_none()
    }

    fn validate(&self) -> Result<()> {
        ensure!(
            (0.0..=100.0).contains(&self.loss_percent),
            "loss_percent {} not in 0..=100",
            self.loss_percent
        );
        ensure!(self.rate_kbit != Some(0), "rate_kbit must be positive");
        ensure!(
            self.delay.map_or(true, |d| d <= Duration::from_secs(10)),
            "delay above 10s"
        );
        Ok(())
    }
}

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
struct Server {
    name: String,
    ns: String,
    ips: Vec<Ipv4Addr>,
    index: usize,
}

#[derive(Debug)]
struct Home {
    name: String,
    kind: NatKind,
    variant: RouterVariant,
    /// 1-based index: the N in 198.18.N.0/24, 10.N.0.0/24, 100.64.N.0/24.
    n: u8,
    router_ns: String,
    host_ns: String,
    carrier_ns: Option<String>,
    lan_gw: Ipv4Addr,
    host_ip: Ipv4Addr,
    conditions: LinkConditions,
}

impl Home {
    /// The address the internet sees: the outer router's WAN, or the host itself when open.
    fn public_ip(&self) -> Ipv4Addr {
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

/// A process the lab started and kills on drop.
struct Tracked {
    child: Child,
    label: String,
    logs: Option<(PathBuf, PathBuf)>,
}

/// A background process started with [`Lab::spawn`]; its stdout and stderr go to files in the
/// lab's directory. The lab kills it when dropped (or with [`Lab::kill`]).
#[derive(Debug, Clone)]
pub struct Spawned {
    pid: u32,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Spawned {
    /// Process id (of the program itself: `ip netns exec` execs it in place).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// File receiving the process's stdout.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout
    }

    /// File receiving the process's stderr.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr
    }

    /// Everything the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout)
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr)
    }

    /// Waits until a complete stdout line satisfies `pred` and returns it. Fails after `timeout`
    /// or as soon as the process has exited without printing one.
    pub fn wait_for_line(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let exited = !is_alive(self.pid);
            let out = self.stdout();
            // Only lines ended by a newline count, so a half-written line is never returned.
            let complete = out.rfind('\n').map_or("", |i| &out[..i]);
            if let Some(line) = complete.lines().find(|l| pred(l)) {
                return Ok(line.to_string());
            }
            if exited || Instant::now() >= deadline {
                bail!(
                    "process {} {} without the expected line; stdout:\n{}\nstderr:\n{}",
                    self.pid,
                    if exited { "exited" } else { "timed out" },
                    tail(&out, 40),
                    tail(&self.stderr(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// True while `pid` runs (a zombie counts as exited).
fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

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

/// A running lab. Dropping it kills the processes it started and deletes its namespaces.
pub struct Lab {
    prefix: String,
    internet_ns: String,
    servers: Vec<Server>,
    homes: Vec<Home>,
    /// Every namespace of the lab, in creation order.
    namespaces: Vec<String>,
    dir: PathBuf,
    children: Mutex<Vec<Tracked>>,
    /// Numbers the log files of spawned processes.
    spawned: AtomicU32,
    delay_lines: Mutex<Vec<delay::DelayLine>>,
    build_time: Duration,
}

impl fmt::Debug for Lab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lab")
            .field("prefix", &self.prefix)
            .field("servers", &self.servers)
            .field("homes", &self.homes)
            .finish_non_exhaustive()
    }
}

impl Lab {
    /// Starts describing a lab.
    pub fn builder() -> LabBuilder {
        LabBuilder::default()
    }

    /// `Some(reason)` when this process cannot build labs (not root, or `ip netns` does not
    /// work here), so tests can skip; `None` when it can. Checked once per process.
    pub fn root_skip_reason() -> Option<String> {
        static REASON: OnceLock<Option<String>> = OnceLock::new();
        REASON
            .get_or_init(|| {
                const WHY: &str = "NAT lab tests need root (CAP_NET_ADMIN); skipping";
                // SAFETY: plain syscall.
                if unsafe { libc::geteuid() } != 0 {
                    return Some(WHY.to_string());
                }
                // Really try, since root in a container may still lack the capabilities.
                let ns = format!("{}{}-probe", netns::PREFIX, std::process::id());
                let made = netns::ip_batch(None, &format!("netns add {ns}\n"), false);
                let _ = netns::delete_namespaces(&[ns]);
                made.err().map(|e| {
                    let why = e.root_cause().to_string().replace('\n', " ");
                    format!("{WHY} (`ip netns add` failed: {why})")
                })
            })
            .clone()
    }

    /// How long [`LabBuilder::build`] took.
    pub fn build_time(&self) -> Duration {
        self.build_time
    }

    /// Prefix of all this lab's namespace names (`bw-<pid>-<seq>`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every namespace of this lab.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// Directory holding the logs of spawned processes (removed on drop unless the thread is
    /// panicking or `BURROW_LAB_KEEP` is set).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The "internet" router namespace.
    pub fn internet_ns(&self) -> &str {
        &self.internet_ns
    }

    /// Names of the homes, in the order they were added.
    pub fn homes(&self) -> impl Iterator<Item = &str> {
        self.homes.iter().map(|h| h.name.as_str())
    }

    fn home(&self, home: &str) -> &Home {
        self.homes
            .iter()
            .find(|h| h.name == home)
            .unwrap_or_else(|| panic!("no home {home:?} in this lab"))
    }

    fn server(&self, server: &str) -> &Server {
        self.servers
            .iter()
            .find(|s| s.name == server)
            .unwrap_or_else(|| panic!("no server {server:?} in this lab"))
    }

    /// Namespace of the end host in `home`.
    ///
    /// # Panics
    /// If the lab has no such home (likewise for the other accessors taking a name).
    pub fn host_ns(&self, home: &str) -> &str {
        &self.home(home).host_ns
    }

    /// Namespace of the home's own router (for `cgnat`, the inner one).
    pub fn router_ns(&self, home: &str) -> &str {
        &self.home(home).router_ns
    }

    /// Namespace of the carrier router of a `cgnat` home.
    pub fn carrier_ns(&self, home: &str) -> Option<&str> {
        self.home(home).carrier_ns.as_deref()
    }

    /// LAN address of the host in `home`.
    pub fn host_ip(&self, home: &str) -> Ipv4Addr {
        self.home(home).host_ip
    }

    /// The address the internet sees for `home` (the outer router's WAN address; the host's own
    /// address for `open`).
    pub fn public_ip(&self, home: &str) -> Ipv4Addr {
        self.home(home).public_ip()
    }

    /// NAT kind of `home`.
    pub fn kind(&self, home: &str) -> NatKind {
        self.home(home).kind
    }

    /// Router variant of `home`.
    pub fn variant(&self, home: &str) -> RouterVariant {
        self.home(home).variant
    }

    /// Namespace of `server`.
    pub fn server_ns(&self, server: &str) -> &str {
        &self.server(server).ns
    }

    /// Addresses of `server`, as given to the builder.
    pub fn server_ips(&self, server: &str) -> &[Ipv4Addr] {
        &self.server(server).ips
    }

    /// `ip netns exec NS program`: add arguments, then run it as usual. Not tracked by the lab
    /// (see [`Lab::spawn`] for background processes), but killed with the lab if still running.
    pub fn command(&self, ns: &str, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(program);
        cmd
    }

    /// Starts `program args..` in the background inside `ns`, with stdout and stderr going to
    /// files in [`Lab::dir`]. The lab kills it when dropped.
    pub fn spawn<I, S>(&self, ns: &str, program: impl AsRef<OsStr>, args: I) -> Result<Spawned>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.check_own_ns(ns)?;
        let program = program.as_ref();
        let mut cmd = self.command(ns, program);
        cmd.args(args);
        let seq = self.spawned.fetch_add(1, Ordering::Relaxed);
        let base = Path::new(program)
            .file_name()
            .unwrap_or(program)
            .to_string_lossy()
            .into_owned();
        let stdout = self.dir.join(format!("{seq:02}-{base}.out"));
        let stderr = self.dir.join(format!("{seq:02}-{base}.err"));
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout)?)
            .stderr(std::fs::File::create(&stderr)?);
        let label = format!("{base} in {ns}");
        let child = cmd.spawn().with_context(|| format!("spawning {label}"))?;
        let pid = child.id();
        self.children.lock().expect("lock").push(Tracked {
            child,
            label,
            logs: Some((stdout.clone(), stderr.clone())),
        });
        Ok(Spawned {
            pid,
            stdout,
            stderr,
        })
    }

    /// Spawns a command built by the caller (e.g. from [`Lab::command`], with its own stdio)
    /// and tracks it like [`Lab::spawn`] does; returns the pid.
    pub fn spawn_command(&self, mut cmd: Command) -> Result<u32> {
        let label = format!("{:?}", cmd.get_args().collect::<Vec<_>>());
        let child = cmd.spawn().with_context(|| format!("spawning {label}"))?;
        let pid = child.id();
        self.children.lock().expect("lock").push(Tracked {
            child,
            label,
            logs: None,
        });
        Ok(pid)
    }

    /// Kills (SIGKILL) and reaps a process started by [`Lab::spawn`] or [`Lab::spawn_command`].
    pub fn kill(&self, pid: u32) -> Result<()> {
        let mut children = self.children.lock().expect("lock");
        let i = children
            .iter()
            .position(|t| t.child.id() == pid)
            .ok_or_else(|| anyhow!("process {pid} was not started by this lab"))?;
        let mut t = children.remove(i);
        let _ = t.child.kill();
        t.child.wait()?;
        Ok(())
    }

    /// `Some(status)` once a process started by the lab has exited.
    pub fn try_wait(&self, pid: u32) -> Result<Option<ExitStatus>> {
        let mut children = self.children.lock().expect("lock");
        let t = children
            .iter_mut()
            .find(|t| t.child.id() == pid)
            .ok_or_else(|| anyhow!("process {pid} was not started by this lab"))?;
        Ok(t.child.try_wait()?)
    }

    fn check_own_ns(&self, ns: &str) -> Result<()> {
        ensure!(
            self.namespaces.iter().any(|n| n == ns),
            "namespace {ns:?} is not part of this lab"
        );
        Ok(())
    }

    /// Runs `f` on a new thread inside namespace `ns` and returns its result. Sockets that `f`
    /// opens (also from threads or runtimes it starts) live in that namespace, so a test can
    /// drive in-process code as if it ran on a lab host.
    pub fn in_ns<T: Send>(&self, ns: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        self.check_own_ns(ns)?;
        netns::in_netns(ns, f)
    }

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

    #[test]
    fn kinds_round_trip_and_expectations_agree() {
        for k in NatKind::ALL {
            assert_eq!(k.name().parse::<NatKind>().unwrap(), k);
            let v = Verdict {
                mapping: k.expected_mapping().into(),
                filtering: k.expected_filtering().into(),
                raw: if k == NatKind::UdpBlocked {
                    String::new()
                } else {
                    "UDP reflexive addr".into()
                },
            };
            assert_eq!(v.nat_type(), k.expected_nat_type(), "{k}");
        }
    }

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
