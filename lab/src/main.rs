//! `burrow-lab`: the NAT lab's command line.
//!
//! * `burrow-lab selfcheck [--json]`: build every NAT kind in both router variants and check
//!   them against coturn's natdiscovery; exit 1 on any disagreement.
//! * `burrow-lab delay-line --queue N --delay-ms MS`: hold every packet of NFQUEUE N for MS
//!   milliseconds (run it inside a namespace with `ip netns exec`).
//! * `burrow-lab matrix [--burrow PATH] [--json FILE]`: `burrow listen` and `burrow connect`
//!   across every pair of NAT kinds in both router variants, with a relay on two addresses and
//!   on one; exit 1 when a pair falls short.
//! * `burrow-lab sweep`: remove lab namespaces whose process has died.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "burrow-lab", about = "burrow's NAT lab (needs root)")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build every NAT kind in both router variants and check each with coturn's natdiscovery.
    Selfcheck {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Also print natdiscovery's raw output for every home (to stderr).
        #[arg(long)]
        verbose: bool,
    },
    /// Delay every packet of an NFQUEUE (in the current network namespace).
    DelayLine {
        /// NFQUEUE number.
        #[arg(long, default_value_t = 0)]
        queue: u16,
        /// One-way delay in milliseconds.
        #[arg(long)]
        delay_ms: u64,
    },
    /// Connect every pair of NAT kinds in both router variants, with a relay on two addresses
    /// and on one, and report paths and timings.
    Matrix {
        /// The burrow binary (default: `burrow` next to this program).
        #[arg(long)]
        burrow: Option<std::path::PathBuf>,
        /// Also write the runs as JSON to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        /// Only these kinds (comma-separated; default all).
        #[arg(long, value_delimiter = ',')]
        kinds: Vec<burrow_lab::NatKind>,
        /// Only this router variant (default both).
        #[arg(long)]
        variant: Option<String>,
        /// Only this relay host: two-address (RFC 5780 STUN) or one-address (a second STUN
        /// port only) [default: both].
        #[arg(long)]
        relay_host: Option<burrow_lab::burrow::RelayHost>,
        /// Only the pairs with a symmetric side (those hard-NAT detection decides).
        #[arg(long)]
        symmetric_pairs: bool,
        /// One-way delay per home link, in ms.
        #[arg(long, default_value_t = 20)]
        delay_ms: u64,
        /// Runs of each symmetric x cone pair.
        #[arg(long, default_value_t = 10)]
        hard_runs: usize,
        /// Runs of every other pair.
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// Connections at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
    },
    /// Delete lab namespaces left behind by processes that died.
    Sweep,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cleanup_on_signals();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("burrow-lab: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// On SIGINT, SIGTERM or SIGHUP, remove this process's lab namespaces (and what runs in them)
/// before exiting: a signal would otherwise skip the labs' destructors.
fn cleanup_on_signals() {
    // SAFETY: plain libc calls on a locally owned signal set; done before any other thread
    // exists, so every later thread inherits the blocked mask and only `sigwait` sees them.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::spawn(move || {
        let mut sig = 0;
        // SAFETY: `set` is a valid, initialised signal set.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            eprintln!("burrow-lab: signal {sig}, removing the lab");
            if let Err(e) = burrow_lab::remove_own_namespaces() {
                eprintln!("burrow-lab: {e:#}");
            }
            std::process::exit(128 + sig);
        }
    });
}

fn run(cli: Cli) -> Result<bool> {
    match cli.command {
        Cmd::Selfcheck { json, verbose } => {
            if let Some(why) = burrow_lab::Lab::root_skip_reason() {
                anyhow::bail!("{why}");
            }
            let check = burrow_lab::selfcheck()?;
            if verbose {
                for r in &check.rows {
                    eprintln!(
                        "===== {} / {} =====\n{}",
                        r.kind,
                        r.variant,
                        r.got.raw.trim()
                    );
                }
            }
            if json {
                println!("{}", check.to_json());
            } else {
                print!("{}", check.table());
            }
            if !check.passed() {
                eprintln!("burrow-lab: self-check failed: some kinds disagree with natdiscovery");
            }
            Ok(check.passed())
        }
        Cmd::DelayLine { queue, delay_ms } => {
            let stop = AtomicBool::new(false);
            burrow_lab::run_delay_line(queue, Duration::from_millis(delay_ms), &stop, || {
                eprintln!("delay line on NFQUEUE {queue}: {delay_ms} ms");
            })?;
            Ok(true)
        }
        Cmd::Matrix {
            burrow,
            json,
            kinds,
            variant,
            relay_host,
            symmetric_pairs,
            delay_ms,
            hard_runs,
            runs,
            parallel,
        } => {
            if let Some(why) = burrow_lab::Lab::root_skip_reason() {
                anyhow::bail!("{why}");
            }
            let burrow = match burrow {
                Some(b) => b,
                None => std::env::current_exe()?.with_file_name("burrow"),
            };
            let mut opts = burrow_lab::matrix::MatrixOptions::new(burrow);
            if !kinds.is_empty() {
                opts.kinds = kinds;
            }
            if let Some(v) = variant {
                opts.variants.retain(|x| x.name() == v);
                anyhow::ensure!(!opts.variants.is_empty(), "variant is firewalled or bare");
            }
            if let Some(h) = relay_host {
                opts.relay_hosts = vec![h];
            }
            if symmetric_pairs {
                opts.pairs = burrow_lab::matrix::Pairs::WithSymmetric;
            }
            opts.delay = Duration::from_millis(delay_ms);
            opts.hard_runs = hard_runs;
            opts.runs = runs;
            opts.parallel = parallel;
            let report = burrow_lab::matrix::run_matrix(&opts, &|r| eprintln!("{r}"))?;
            print!("{}", report.table());
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
            }
            let failures = report.failures();
            for f in &failures {
                eprintln!("FAIL {f}");
            }
            Ok(failures.is_empty())
        }
        Cmd::Sweep => {
            for ns in burrow_lab::sweep_stale()? {
                println!("removed {ns}");
            }
            Ok(true)
        }
    }
}
