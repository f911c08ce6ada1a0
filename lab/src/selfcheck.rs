//! The lab's self-check: builds every NAT kind in both router variants and asks an independent
//! oracle (coturn's `turnutils_natdiscovery` against `turnserver` on two addresses) whether each
//! behaves as the kind it claims to be.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use serde_json::json;

use crate::{Lab, NatKind, RouterVariant, Verdict};

/// One home of the self-check: what was built and what natdiscovery said.
#[derive(Debug, Clone)]
pub struct SelfCheckRow {
    /// The kind that was built.
    pub kind: NatKind,
    /// The router variant that was built.
    pub variant: RouterVariant,
    /// natdiscovery's verdict.
    pub got: Verdict,
}

impl SelfCheckRow {
    /// Whether mapping, filtering and NAT type all match the kind's expectations.
    pub fn ok(&self) -> bool {
        self.got.mapping == self.kind.expected_mapping()
            && self.got.filtering == self.kind.expected_filtering()
            && self.got.nat_type() == self.kind.expected_nat_type()
    }
}

/// The outcome of [`selfcheck`].
#[derive(Debug, Clone)]
pub struct SelfCheck {
    /// One row per kind and variant.
    pub rows: Vec<SelfCheckRow>,
    /// Time to build the lab.
    pub build_time: Duration,
    /// Time until coturn answered on all four addresses.
    pub coturn_time: Duration,
    /// Time for all natdiscovery runs (side by side).
    pub discovery_time: Duration,
    /// Time to tear the lab down.
    pub teardown_time: Duration,
    /// Time for the whole check, including teardown.
    pub total_time: Duration,
}

impl SelfCheck {
    /// True when every row agrees with its expectations.
    pub fn passed(&self) -> bool {
        self.rows.iter().all(SelfCheckRow::ok)
    }

    /// A human-readable table (`mapping/filtering/nat_type`, expected and got).
    pub fn table(&self) -> String {
        let cells: Vec<[String; 5]> = self
            .rows
            .iter()
            .map(|r| {
                let k = r.kind;
                [
                    k.name().to_string(),
                    r.variant.name().to_string(),
                    format!(
                        "{}/{}/{}",
                        k.expected_mapping(),
                        k.expected_filtering(),
                        k.expected_nat_type()
                    ),
                    format!("{}/{}/{}", r.got.mapping, r.got.filtering, r.got.nat_type()),
                    if r.ok() { "yes" } else { "NO" }.to_string(),
                ]
            })
            .collect();
        let header = ["kind", "variant", "expected", "got", "ok"].map(String::from);
        let mut widths = [0usize; 5];
        for row in std::iter::once(&header).chain(&cells) {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.len());
            }
        }
        let mut s = String::new();
        for row in std::iter::once(&header).chain(&cells) {
            let line: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            let _ = writeln!(s, "{}", line.join("  ").trim_end());
        }
        let _ = writeln!(
            s,
            "{} of {} agree; build {} ms, coturn ready {} ms, natdiscovery {} ms, \
             teardown {} ms, total {} ms",
            self.rows.iter().filter(|r| r.ok()).count(),
            self.rows.len(),
            self.build_time.as_millis(),
            self.coturn_time.as_millis(),
            self.discovery_time.as_millis(),
            self.teardown_time.as_millis(),
            self.total_time.as_millis()
        );
        s
    }

    /// The result as one JSON object (`passed`, `build_ms`, `coturn_ms`, `discovery_ms`,
    /// `teardown_ms`, `duration_ms`, `rows`).
    pub fn to_json(&self) -> serde_json::Value {
        let rows: Vec<_> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "kind": r.kind.name(),
                    "variant": r.variant.name(),
                    "expected": {
                        "mapping": r.kind.expected_mapping(),
                        "filtering": r.kind.expected_filtering(),
                        "nat_type": r.kind.expected_nat_type(),
                    },
                    "got": {
                        "mapping": r.got.mapping,
                        "filtering": r.got.filtering,
                        "nat_type": r.got.nat_type(),
                    },
                    "ok": r.ok(),
                })
            })
            .collect();
        json!({
            "passed": self.passed(),
            "build_ms": self.build_time.as_millis() as u64,
            "coturn_ms": self.coturn_time.as_millis() as u64,
            "discovery_ms": self.discovery_time.as_millis() as u64,
            "teardown_ms": self.teardown_time.as_millis() as u64,
            "duration_ms": self.total_time.as_millis() as u64,
            "rows": rows,
        })
    }
}

/// Name of the self-check home for a kind and variant.
fn home_name(kind: NatKind, variant: RouterVariant) -> String {
    let v = match variant {
        RouterVariant::Firewalled => "fw",
        RouterVariant::Bare => "bare",
    };
    format!("{}-{v}", kind.name())
}

/// Builds one lab with every kind in both variants and a coturn server on 203.0.113.10 and .11,
/// runs natdiscovery from every home at once, and reports what each got. Errors only when the
/// lab itself cannot run; disagreements are in the rows (see [`SelfCheck::passed`]).
pub fn selfcheck() -> Result<SelfCheck> {
    let started = Instant::now();
    let ips: [Ipv4Addr; 2] = [
        Ipv4Addr::new(203, 0, 113, 10),
        Ipv4Addr::new(203, 0, 113, 11),
    ];
    let mut builder = Lab::builder().server("stun", &ips);
    let mut homes = Vec::new();
    for kind in NatKind::ALL {
        for variant in RouterVariant::ALL {
            builder = builder.home(&home_name(kind, variant), kind, variant);
            homes.push((kind, variant));
        }
    }
    let lab = builder.build()?;
    let build_time = lab.build_time();
    let t = Instant::now();
    lab.start_coturn("stun", 3478)?;
    let coturn_time = t.elapsed();
    let t = Instant::now();
    // natdiscovery mostly waits for 3 s timeouts, so all homes run side by side.
    let results: Vec<Result<Verdict>> = std::thread::scope(|s| {
        let lab = &lab;
        let handles: Vec<_> = homes
            .iter()
            .map(|&(k, v)| s.spawn(move || lab.natdiscovery(&home_name(k, v), ips[0], 3478)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("natdiscovery thread panicked")))
            })
            .collect()
    });
    let discovery_time = t.elapsed();
    let mut rows = Vec::new();
    for ((kind, variant), got) in homes.into_iter().zip(results) {
        rows.push(SelfCheckRow {
            kind,
            variant,
            got: got?,
        });
    }
    let t = Instant::now();
    drop(lab);
    let teardown_time = t.elapsed();
    Ok(SelfCheck {
        rows,
        build_time,
        coturn_time,
        discovery_time,
        teardown_time,
        total_time: started.elapsed(),
    })
}
