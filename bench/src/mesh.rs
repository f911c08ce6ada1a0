//! `mesh`: what a mesh costs, three figures, each next to an anchor where there is one.
//!
//! * `join` ([`join`]): time from `burrow join` to member, in the NAT lab (root), with the
//!   inviter behind an easy and behind a symmetric NAT; anchor: a plain ticket connect
//!   between the same two homes in the same run.
//! * `roster` ([`propagation`]): roster propagation to `--roster-members` members, simulated
//!   in memory on a virtual clock with the real membership code; anchors: one hop from the
//!   admin at the largest link latency, and every member receiving the roster once.
//! * `memory` ([`memory`]): daemon memory per idle member on loopback; anchor: a plain
//!   `burrow listen` per connected `burrow ping`.

pub(crate) mod home;
mod join;
mod memory;
mod propagation;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::ValueEnum;
use serde::Serialize;

use crate::{parse_duration, server};

/// `burrow-bench mesh`'s arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct MeshArgs {
    /// Measure only these figures (comma-separated) [default: all three].
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Figure>,
    /// join: joins per inviter, and as many anchor connects.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// join: one-way delay of every home's link in the lab.
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    delay: Duration,
    /// join: how long after online a direct path is waited for.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    direct_patience: Duration,
    /// roster: members besides the admin.
    #[arg(long, default_value_t = 50)]
    roster_members: usize,
    /// roster: of those, how many are offline when the new roster is signed.
    #[arg(long, default_value_t = 5)]
    offline: usize,
    /// roster: shortest one-way link latency.
    #[arg(long, default_value = "5ms", value_parser = parse_duration)]
    min_latency: Duration,
    /// roster: longest one-way link latency.
    #[arg(long, default_value = "80ms", value_parser = parse_duration)]
    max_latency: Duration,
    /// roster: offline members come back between this time...
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    return_from: Duration,
    /// roster: ...and this one.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    return_until: Duration,
    /// roster: seed of the first trial (trial i uses seed + i).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// roster: trials, each with its own seed.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    trials: u32,
    /// memory: members joined and up.
    #[arg(long, default_value_t = 20)]
    members: usize,
    /// The burrow binary [default: `burrow` next to this executable].
    #[arg(long, value_name = "PATH")]
    burrow: Option<PathBuf>,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One of the three figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Figure {
    Join,
    Roster,
    Memory,
}

/// A figure over several samples.
#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Samples.
    pub n: usize,
}

impl Spread {
    /// Of `values`; all NaN when there are none.
    pub(crate) fn of(values: Vec<f64>) -> Spread {
        let n = values.len();
        let min = values.iter().copied().reduce(f64::min).unwrap_or(f64::NAN);
        let max = values.iter().copied().reduce(f64::max).unwrap_or(f64::NAN);
        Spread {
            median: crate::median(values),
            min,
            max,
            n,
        }
    }

    /// `median (min-max)`, with `decimals`.
    fn show(&self, decimals: usize) -> String {
        if self.n == 0 {
            return "-".into();
        }
        format!(
            "{:.d$} ({:.d$}-{:.d$})",
            self.median,
            self.min,
            self.max,
            d = decimals
        )
    }
}

/// Everything `mesh` measured.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    benchmark: &'static str,
    join: Option<join::Report>,
    /// Why the join figure was not measured (not root), if it was asked for.
    join_skipped: Option<String>,
    roster: Option<propagation::Report>,
    memory: Option<memory::Report>,
}

/// Runs the figures asked for and prints them.
pub(crate) fn run(args: &MeshArgs) -> Result<()> {
    let want = |f: Figure| args.only.is_empty() || args.only.contains(&f);
    let burrow = if want(Figure::Join) || want(Figure::Memory) {
        Some(server::find_burrow(args.burrow.as_deref())?)
    } else {
        None
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut report = Report {
        benchmark: "mesh",
        join: None,
        join_skipped: None,
        roster: None,
        memory: None,
    };
    if want(Figure::Roster) {
        let ms = |d: Duration| d.as_millis() as u64;
        report.roster = Some(propagation::run(&propagation::Config {
            members: args.roster_members,
            offline: args.offline,
            min_latency_ms: ms(args.min_latency),
            max_latency_ms: ms(args.max_latency),
            return_from_ms: ms(args.return_from),
            return_until_ms: ms(args.return_until),
            seed: args.seed,
            trials: args.trials,
        })?);
    }
    if let (true, Some(burrow)) = (want(Figure::Memory), &burrow) {
        report.memory = Some(memory::run(burrow, args.members, &rt)?);
    }
    if let (true, Some(burrow)) = (want(Figure::Join), &burrow) {
        let config = join::Config {
            runs: args.runs,
            delay_ms: args.delay.as_millis() as u64,
            direct_patience_ms: args.direct_patience.as_millis() as u64,
        };
        match join::run(burrow, &config, &rt)? {
            Ok(r) => report.join = Some(r),
            Err(why) => {
                eprintln!("join: skipped: it builds a NAT lab of network namespaces: {why}");
                report.join_skipped = Some(why);
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

/// One table row: figure, burrow, anchor, ratio.
type Row = [String; 4];

fn row(label: impl Into<String>, ours: String, anchor: String, ratio: Option<f64>) -> Row {
    let ratio = ratio
        .filter(|r| r.is_finite())
        .map_or("-".into(), |r| format!("{r:.2}"));
    [label.into(), ours, anchor, ratio]
}

fn plain(v: f64, decimals: usize) -> String {
    format!("{v:.decimals$}")
}

/// Appends a titled table with notes under it.
fn section(out: &mut String, title: String, rows: Vec<Row>, notes: &[String]) {
    use std::fmt::Write;
    let _ = writeln!(out, "{title}");
    let widths: Vec<usize> = (0..4)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let _ = writeln!(
            out,
            "{:<w0$}  {:>w1$}  {:>w2$}  {:>w3$}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
    }
    for n in notes {
        let _ = writeln!(out, "{n}");
    }
    let _ = writeln!(out);
}

/// The human-readable report: one table per figure, each with what it measured.
fn table(r: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let head = |ours: &str, anchor: &str| -> Row {
        ["figure".into(), ours.into(), anchor.into(), "ratio".into()]
    };

    if let Some(j) = &r.join {
        let mut rows = vec![head("burrow join", "ticket connect")];
        for inv in &j.inviters {
            let n = inv.runs.len();
            rows.push(row(
                format!("{} inviter: join -> member online (ms)", inv.nat),
                inv.join_to_online_ms.show(0),
                inv.connect_seen_ms.show(0),
                Some(inv.join_to_online_ms.median / inv.connect_seen_ms.median),
            ));
            rows.push(row(
                "  of which `burrow join` to its exit",
                inv.join_exit_ms.show(0),
                "-".into(),
                None,
            ));
            rows.push(row(
                "  of which `burrow up` to online",
                inv.up_to_online_ms.show(0),
                "-".into(),
                None,
            ));
            rows.push(row(
                format!(
                    "  to a direct path (ms; direct in {}/{n} vs {}/{n})",
                    inv.join_direct_runs, inv.connect_direct_runs
                ),
                inv.join_to_direct_ms.show(0),
                inv.connect_to_direct_ms.show(0),
                Some(inv.join_to_direct_ms.median / inv.connect_to_direct_ms.median),
            ));
        }
        let c = &j.config;
        section(
            &mut out,
            format!(
                "join -> member, NAT lab: {} runs per inviter, every home link delayed {} ms each way; \
                 median (min-max)",
                c.runs, c.delay_ms
            ),
            rows,
            &[
                "burrow join: from starting `burrow join TOKEN` (joiner: port-restricted cone) until the".into(),
                "  inviter's GET /v1/members lists it online, after `burrow up` started in the joiner's home".into(),
                "  the moment `join` exited; a fresh joiner home (key, state) per run.".into(),
                "ticket connect: from starting `burrow ping TICKET --count 2 --interval 1h` (dials as".into(),
                "  `burrow connect` does, then holds the connection) in the joiner's home until the".into(),
                "  `burrow listen` beside the inviter's daemon prints the connection (same homes, same run).".into(),
                format!(
                    "direct: until the inviter (listener) shows a direct path, waited for up to {} ms after online.",
                    c.direct_patience_ms
                ),
            ],
        );
    } else if let Some(why) = &r.join_skipped {
        let _ = writeln!(out, "join -> member: skipped ({why})\n");
    }

    if let Some(p) = &r.roster {
        let c = &p.config;
        let rows = vec![
            head("burrow", "anchor"),
            row(
                "online members hold the new roster (ms)",
                p.online_all_ms.show(1),
                p.one_hop_ms.show(1),
                Some(p.online_all_ms.median / p.one_hop_ms.median),
            ),
            row(
                "returning members, from their return (ms)",
                p.returned_ms.show(0),
                "-".into(),
                None,
            ),
            row(
                "every member holds it (ms)",
                p.all_ms.show(0),
                "-".into(),
                None,
            ),
            row(
                "bytes sent, pushes + proofs",
                p.total_bytes.show(0),
                plain(p.ideal_bytes, 0),
                Some(p.total_bytes.median / p.ideal_bytes),
            ),
            row(
                "  roster pushes",
                p.push_bytes.show(0),
                plain(p.ideal_bytes, 0),
                Some(p.push_bytes.median / p.ideal_bytes),
            ),
            row(
                "  proofs on returning members' connections",
                p.proof_bytes.show(0),
                "-".into(),
                None,
            ),
            row(
                "roster messages received per member",
                p.received_per_member.show(0),
                "1".into(),
                Some(p.received_per_member.median),
            ),
            row(
                "  of which stale (%)",
                p.stale_pct.show(1),
                "-".into(),
                None,
            ),
            row(
                "decode + merge per message (real CPU, us)",
                p.cpu_us_per_message.show(0),
                "-".into(),
                None,
            ),
            row(
                "decode + merge per member per update (ms)",
                p.cpu_ms_per_member.show(2),
                "-".into(),
                None,
            ),
        ];
        section(
            &mut out,
            format!(
                "roster propagation: admin + {} members ({} offline, back at {}-{} ms), links {}-{} ms one \
                 way; {} seeds from {}; virtual time; median (min-max)",
                c.members,
                c.offline,
                c.return_from_ms,
                c.return_until_ms,
                c.min_latency_ms,
                c.max_latency_ms,
                c.trials,
                c.seed
            ),
            rows,
            &[
                format!(
                    "the new roster is {} bytes signed (a push is 1 more); every node is a real Membership,",
                    p.roster_len
                ),
                "  every message a real encoding, decoded and merged as MeshNode does; full mesh as MeshNode".into(),
                "  connects; returning members dial everyone 500 ms after they start, and hold the roster".into(),
                "  after two round trips (handshake, then the listener's proof).".into(),
                "anchors: one hop from the admin over its slowest link to an online member (the admin alone".into(),
                "  telling each member); every member receiving the roster once, in one push.".into(),
            ],
        );
    }

    if let Some(m) = &r.memory {
        let a = &m.anchor;
        let rows = vec![
            head("burrow up", "burrow listen"),
            row(
                format!("RSS per connected idle member, admin ({})", m.members),
                plain(m.admin_bytes_per_member, 0),
                plain(a.listener_bytes_per_peer, 0),
                Some(m.admin_bytes_per_member / a.listener_bytes_per_peer),
            ),
            row(
                "RSS of a member's daemon vs a `burrow ping`",
                m.member_rss.show(0),
                a.peer_rss.show(0),
                Some(m.member_rss.median / a.peer_rss.median),
            ),
            row(
                "admin RSS: restarted, none up / all connected",
                format!("{} / {}", m.admin_rss_restarted, m.admin_rss_connected),
                format!("{} / {}", a.listener_rss_before, a.listener_rss_after),
                None,
            ),
            row(
                "admin RSS growth per join (before the restart)",
                plain(m.admin_bytes_per_join, 0),
                "-".into(),
                None,
            ),
        ];
        section(
            &mut out,
            format!(
                "daemon memory, loopback: an admin and {} members, all `burrow up`; bytes of VmRSS",
                m.members
            ),
            rows,
            &[
                "per member: the admin's growth from its restart with every member joined (none up) to".into(),
                "  every node listing every other online (a full mesh), over the members. Anchor: a fresh".into(),
                "  `burrow listen`'s growth per connected `burrow ping --interval 1h` (one idle connection".into(),
                format!(
                    "  each); a member (connected to {} nodes) next to such a one-connection process.",
                    m.members
                ),
            ],
        );
    }
    out
}
