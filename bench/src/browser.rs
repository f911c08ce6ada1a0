//! `burrow-bench browser`: burrow.js in headless Chromium on NAT lab hosts (needs root and
//! Chromium, and `burrow` built with `--features webrtc`).
//!
//! For browser ↔ browser and browser ↔ native (`burrow listen --webrtc`), each behind its own
//! port-restricted NAT: `--runs` dials, each timed from `dial()` to the first echoed message
//! and to the direct path; then `--bytes` echoed through one direct connection (payload Mbit/s
//! one way), browser ↔ native next to browser ↔ browser in the same run. Then the same dials
//! between bare routers (no WAN firewall), where the outcome (direct or relayed) is the figure.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::thread;

use anyhow::{bail, Context, Result};
use burrow_lab::burrow::{relay_url, RELAY_IPS};
use burrow_lab::{Lab, NatKind, RouterVariant};
use serde::Serialize;
use serde_json::Value;

use crate::{median, server};

const PAGE: &str = include_str!("browser.html");

#[derive(clap::Args, Debug)]
pub(crate) struct BrowserArgs {
    /// Dials timed per pair behind firewalled routers.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Dials per pair behind bare routers (each waits up to 5 s for a direct path).
    #[arg(long, default_value_t = 4)]
    bare_runs: u32,
    /// Bytes echoed through one direct connection, per pair.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    bytes: u64,
    /// The burrow binary (built with `--features webrtc`) [default: `burrow` next to this
    /// executable].
    #[arg(long, value_name = "PATH")]
    burrow: Option<PathBuf>,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One pair's figures.
#[derive(Debug, Serialize)]
struct PairReport {
    pair: String,
    runs: usize,
    direct: usize,
    /// Median ms from `dial()` to the first echoed message, and to the direct path (of the
    /// runs that went direct).
    first_message_ms: f64,
    to_direct_ms: f64,
    /// The selected candidate pairs' types (local/remote), per run.
    candidate_pairs: Vec<Option<String>>,
    throughput_mbit: Option<f64>,
}

pub(crate) fn run(args: &BrowserArgs) -> Result<()> {
    if let Some(why) = Lab::root_skip_reason() {
        bail!("the browser bench needs the NAT lab: {why}");
    }
    if !burrow_lab::chromium::chromium_present() {
        bail!(
            "the browser bench needs Chromium ({})",
            burrow_lab::chromium::CHROMIUM
        );
    }
    let burrow = server::find_burrow(args.burrow.as_deref())?;
    let prc = NatKind::PortRestrictedCone;
    let lab = Lab::builder()
        .server("relay", &RELAY_IPS)
        .home("page-a", prc, RouterVariant::Firewalled)
        .home("page-b", prc, RouterVariant::Firewalled)
        .home("native", prc, RouterVariant::Firewalled)
        .home("bare-a", prc, RouterVariant::Bare)
        .home("bare-b", prc, RouterVariant::Bare)
        .home("bare-native", prc, RouterVariant::Bare)
        .build()?;
    let _relay = lab.spawn_relay(&burrow, "relay")?;
    let listen = |home: &str| -> Result<String> {
        let (_, hello) = lab
            .spawn_listener(&burrow, home, &["--webrtc", "--no-publish"])
            .with_context(|| {
                format!("burrow listen --webrtc in {home} (built with --features webrtc?)")
            })?;
        Ok(hello["node_id"].as_str().context("no node id")?.to_string())
    };
    let native = listen("native")?;
    let bare_native = listen("bare-native")?;

    let mut reports = Vec::new();
    eprintln!("browser <-> browser ...");
    reports.push(pages(
        &lab,
        "browser <-> browser",
        "page-a",
        Some("page-b"),
        "",
        args.runs,
        args.bytes,
    )?);
    eprintln!("browser <-> native ...");
    reports.push(pages(
        &lab,
        "browser <-> native",
        "page-a",
        None,
        &native,
        args.runs,
        args.bytes,
    )?);
    if args.bare_runs > 0 {
        eprintln!("bare routers ...");
        reports.push(pages(
            &lab,
            "bare: browser <-> browser",
            "bare-a",
            Some("bare-b"),
            "",
            args.bare_runs,
            0,
        )?);
        reports.push(pages(
            &lab,
            "bare: browser <-> native",
            "bare-a",
            None,
            &bare_native,
            args.bare_runs,
            0,
        )?);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
        return Ok(());
    }
    println!(
        "burrow.js in headless Chromium, NAT lab (port-restricted-cone homes); ms are medians"
    );
    println!(
        "{:<28} {:>7} {:>12} {:>11} {:>11}  candidate pairs",
        "pair", "direct", "first msg", "to direct", "Mbit/s"
    );
    for r in &reports {
        let pairs: Vec<&str> = r
            .candidate_pairs
            .iter()
            .map(|p| p.as_deref().unwrap_or("-"))
            .collect();
        println!(
            "{:<28} {:>3}/{:<3} {:>12.0} {:>11.0} {:>11}  {}",
            r.pair,
            r.direct,
            r.runs,
            r.first_message_ms,
            r.to_direct_ms,
            r.throughput_mbit.map_or("-".into(), |m| format!("{m:.0}")),
            pairs.join(" ")
        );
    }
    if let (Some(n), Some(b)) = (reports[1].throughput_mbit, reports[0].throughput_mbit) {
        println!(
            "data channel throughput browser<->native / browser<->browser: {:.2}",
            n / b
        );
    }
    println!(
        "first msg: dial() to the echo of a message sent at once (through the relay). to direct: \
         dial() to conn.path == \"direct\". Mbit/s: payload one way, echoed through one direct \
         connection."
    );
    Ok(())
}

/// Runs the dialler page behind `home` against an echo page behind `echo_home`, or against
/// the native node `native`; returns its figures.
fn pages(
    lab: &Lab,
    name: &str,
    home: &str,
    echo_home: Option<&str>,
    native: &str,
    runs: u32,
    bytes: u64,
) -> Result<PairReport> {
    let ns = format!("bench-{home}");
    let page = |role: &str, runs: u32, bytes: u64| {
        PAGE.replace("__RELAY_URL__", &relay_url())
            .replace("__ROLE__", role)
            .replace("__NS__", &ns)
            .replace("__PEER__", native)
            .replace("__RUNS__", &runs.to_string())
            .replace("__BYTES__", &bytes.to_string())
    };
    let server_ip: Ipv4Addr = RELAY_IPS[0];
    let dialler = thread::scope(|s| {
        let echo = echo_home
            .map(|h| s.spawn(move || lab.run_page(h, "relay", server_ip, &page("echo", 0, 0))));
        let dialler = lab.run_page(home, "relay", server_ip, &page("dialler", runs, bytes));
        if let Some(echo) = echo {
            let _ = echo.join();
        }
        dialler
    })?;
    let Some(json) = dialler.verdict.strip_prefix("BENCH-OK ") else {
        bail!("{name}: the page said {}\n{}", dialler.verdict, dialler.log);
    };
    let v: Value = serde_json::from_str(&json.replace("&quot;", "\"").replace("&amp;", "&"))?;
    let runs = v["runs"].as_array().context("no runs")?;
    let ms = |key: &str| -> Vec<f64> { runs.iter().filter_map(|r| r[key].as_f64()).collect() };
    Ok(PairReport {
        pair: name.into(),
        runs: runs.len(),
        direct: runs.iter().filter(|r| r["path"] == "direct").count(),
        first_message_ms: median(ms("firstMs")),
        to_direct_ms: median(ms("directMs")),
        candidate_pairs: runs
            .iter()
            .map(|r| r["pair"].as_str().map(str::to_string))
            .collect(),
        throughput_mbit: v["throughput"]["mbit"].as_f64(),
    })
}
