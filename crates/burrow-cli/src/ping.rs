//! `burrow ping`'s loop and its lines, whether the pings go over a connection of its own (to a
//! ticket) or through the daemon (to a member).

use std::future::Future;
use std::time::Duration;

use anyhow::{bail, Result};
use burrow::api::{PathKind, Pong};
use serde_json::json;

/// How to ping.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PingOptions {
    /// Pings to send at most.
    pub count: u64,
    /// Time between pings.
    pub interval: Duration,
    /// Stop at the first pong over a direct path (and fail without one).
    pub until_direct: bool,
    /// One JSON object per line.
    pub json: bool,
}

/// Sends up to `opts.count` pings to the peer called `name` with `one(seq)` (a pong, or why
/// there is none), printing a line for each; fails if none answered (or, with
/// `until_direct`, none over a direct path).
pub(crate) async fn run<F, Fut>(opts: PingOptions, name: &str, mut one: F) -> Result<()>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<Pong, String>>,
{
    let mut answered = 0;
    for seq in 1..=opts.count {
        let result = one(seq).await;
        print(opts.json, seq, name, &result);
        if let Ok(pong) = &result {
            answered += 1;
            if opts.until_direct && pong.path == PathKind::Direct {
                return Ok(());
            }
        }
        if seq < opts.count {
            tokio::time::sleep(opts.interval).await;
        }
    }
    match (answered, opts.until_direct) {
        (0, _) => bail!("no pong from {name} in {} ping(s)", opts.count),
        (_, true) => bail!("no direct path to {name} in {} ping(s)", opts.count),
        _ => Ok(()),
    }
}

/// One ping's line: `pong from bob (203.0.113.7:4000) via direct in 3.1 ms`, `pong from bob
/// via relay http://... in 9.8 ms`, or why there was no pong.
fn print(json_out: bool, seq: u64, name: &str, result: &Result<Pong, String>) {
    if json_out {
        let line = match result {
            Ok(p) => json!({"seq": seq, "name": name, "node_id": p.node_id.to_string(),
                "path": p.path, "remote_addr": p.remote_addr, "rtt_ms": p.rtt_ms}),
            Err(e) => json!({"seq": seq, "name": name, "error": e}),
        };
        println!("{line}");
        return;
    }
    match result {
        Ok(p) => {
            let addr = p.remote_addr.as_deref().unwrap_or("?");
            let via = match p.path {
                PathKind::Direct => format!("({addr}) via direct"),
                PathKind::Relay => format!("via relay {addr}"),
            };
            println!("pong from {name} {via} in {:.1} ms", p.rtt_ms);
        }
        Err(e) => println!("no pong from {name} (seq {seq}): {e}"),
    }
}
