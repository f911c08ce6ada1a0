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

pub mod burrow;
pub mod chromium;
mod cleanup;
mod coturn;
mod delay;
mod kind;
pub mod matrix;
mod netns;
mod process;
mod rules;
mod selfcheck;
mod stun;
mod topology;

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU32;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

pub use cleanup::{remove_own_namespaces, sweep_stale};
pub use coturn::Verdict;
pub use delay::run_delay_line;
pub use kind::{LinkConditions, NatKind, RouterVariant};
pub use process::{output_with_timeout, Spawned};
pub use selfcheck::{selfcheck, SelfCheck, SelfCheckRow};
pub use topology::LabBuilder;

use process::Tracked;
use topology::{Home, Server};

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

    /// For tests: `true` when labs can be built here. Otherwise prints "SKIPPED: why" and
    /// returns `false`, except under CI (`CI` set), where it panics: CI runs as root and must
    /// run the lab.
    pub fn tests_allowed() -> bool {
        match Self::root_skip_reason() {
            None => true,
            Some(why) if std::env::var_os("CI").is_some() => {
                panic!("{why}: CI runs as root and must run the NAT lab")
            }
            Some(why) => {
                eprintln!("SKIPPED: {why}");
                false
            }
        }
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
}
