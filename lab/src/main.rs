//! `burrow-lab`: the NAT lab's command line.
//!
//! * `burrow-lab selfcheck [--json]`: build every NAT kind in both router variants and check
//!   them against coturn's natdiscovery; exit 1 on any disagreement.
//! * `burrow-lab delay-line --queue N --delay-ms MS`: hold every packet of NFQUEUE N for MS
//!   milliseconds (run it inside a namespace with `ip netns exec`).
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
        Cmd::Sweep => {
            for ns in burrow_lab::sweep_stale()? {
                println!("removed {ns}");
            }
            Ok(true)
        }
    }
}
