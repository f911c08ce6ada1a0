//! `burrow listen` and `burrow connect` across the NAT lab: relayed at once, direct when the
//! NATs allow. (The full matrix of issue 4 grows from this.)
//!
//! Needs root. Without it the tests skip and say so, except under CI (CI=true), where a skip is a
//! failure because CI runs as root.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use burrow_lab::{Lab, NatKind, RouterVariant};

const BURROW: &str = env!("CARGO_BIN_EXE_burrow");
const RELAY_IPS: [Ipv4Addr; 2] = [
    Ipv4Addr::new(203, 0, 113, 30),
    Ipv4Addr::new(203, 0, 113, 31),
];

/// A relay with RFC 5780 STUN on the internet segment, and the given homes.
fn build(homes: &[(&str, NatKind, RouterVariant)]) -> Lab {
    let mut b = Lab::builder().server("relay", &RELAY_IPS);
    for &(name, kind, variant) in homes {
        b = b.home(name, kind, variant);
    }
    let lab = b.build().expect("lab builds");
    let ns = lab.server_ns("relay").to_string();
    lab.spawn(
        &ns,
        BURROW,
        [
            "relay",
            "--listen",
            &format!("{}:8080", RELAY_IPS[0]),
            "--stun",
            &format!("{}:3478", RELAY_IPS[0]),
            "--alt-ip",
            &RELAY_IPS[1].to_string(),
        ],
    )
    .expect("relay starts");
    lab
}

/// Starts `burrow listen` in `home` and returns its ticket.
fn listen(lab: &Lab, home: &str) -> String {
    let relay = format!("http://{}:8080", RELAY_IPS[0]);
    let key = std::env::temp_dir().join(format!("burrow-lab-key-{}-{home}", std::process::id()));
    let p = lab
        .spawn(
            lab.host_ns(home),
            BURROW,
            [
                "listen",
                "--relay",
                &relay,
                "--json",
                "--key",
                key.to_str().unwrap(),
            ],
        )
        .expect("listen starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = std::fs::read_to_string(p.stdout_path()).unwrap_or_default();
        if let Some(line) = out.lines().next() {
            let v: serde_json::Value = serde_json::from_str(line).expect("listen prints JSON");
            return v["ticket"].as_str().expect("ticket").to_string();
        }
        assert!(
            Instant::now() < deadline,
            "listen printed no ticket: {:?}",
            std::fs::read_to_string(p.stderr_path())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn connect(lab: &Lab, home: &str, ticket: &str) -> serde_json::Value {
    let mut cmd = lab.command(lab.host_ns(home), BURROW);
    cmd.args([
        "connect",
        ticket,
        "--json",
        "--direct-timeout",
        "5s",
        "--bytes",
        "1000000",
    ]);
    let out = burrow_lab::output_with_timeout(cmd, Duration::from_secs(40)).expect("connect runs");
    assert!(
        out.status.success(),
        "connect from {home} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("connect prints JSON")
}

#[test]
fn port_restricted_pairs_go_direct_through_both_router_variants_and_symmetric_pairs_stay_relayed() {
    if !Lab::tests_allowed() {
        return;
    }
    use NatKind::*;
    use RouterVariant::*;
    let pairs = [
        (
            "prc-fw",
            PortRestrictedCone,
            Firewalled,
            "prc2-fw",
            PortRestrictedCone,
            Firewalled,
            true,
        ),
        (
            "prc-bare",
            PortRestrictedCone,
            Bare,
            "prc2-bare",
            PortRestrictedCone,
            Bare,
            true,
        ),
        (
            "sym-a", Symmetric, Firewalled, "sym-b", Symmetric, Firewalled, false,
        ),
    ];
    let mut homes = Vec::new();
    for &(a, ka, va, b, kb, vb, _) in &pairs {
        homes.push((a, ka, va));
        homes.push((b, kb, vb));
    }
    let lab = build(&homes);
    let mut failures = Vec::new();
    for &(a, _, _, b, _, _, direct) in &pairs {
        let ticket = listen(&lab, a);
        let r = connect(&lab, b, &ticket);
        eprintln!("{b} -> {a}: {r}");
        assert_eq!(r["connected"], true);
        assert_eq!(r["bytes"], 1_000_000);
        let want = if direct { "direct" } else { "relay" };
        if r["path"] != want {
            failures.push(format!("{b} -> {a}: path {} (want {want})", r["path"]));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
