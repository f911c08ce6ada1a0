//! Issue 2's acceptance in the NAT lab: `burrow netcheck` reports what the lab built, for every
//! NAT kind and both router variants, against `burrow stun` and against coturn; and coturn's own
//! clients give the same verdicts against `burrow stun` as against coturn. Against a `burrow
//! stun` on one address (a second port only), netcheck still reports every kind's mapping, and
//! `unknown` for what one address cannot tell.
//!
//! Needs root. Without it the tests skip and say so, except under CI (CI=true), where a skip is a
//! failure because CI runs as root.

use std::net::{Ipv4Addr, SocketAddr};
use std::thread;
use std::time::Duration;

use burrow_lab::{Lab, NatKind, RouterVariant};

const BURROW: &str = env!("CARGO_BIN_EXE_burrow");
const PORT: u16 = 3478;
const BURROW_IPS: [Ipv4Addr; 2] = [
    Ipv4Addr::new(203, 0, 113, 10),
    Ipv4Addr::new(203, 0, 113, 11),
];
const COTURN_IPS: [Ipv4Addr; 2] = [
    Ipv4Addr::new(203, 0, 113, 20),
    Ipv4Addr::new(203, 0, 113, 21),
];
/// `burrow stun` on one address, with its default second port.
const ONE_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 12);

/// What netcheck can tell of `kind` against a one-address server: the mapping always; of the
/// filtering only whether it depends on the port, so endpoint-independent and
/// address-dependent filtering (and so full and restricted cones) are `unknown`.
fn one_address_verdict(kind: NatKind) -> [&'static str; 3] {
    let apd = "address-and-port-dependent";
    match kind {
        NatKind::Open => ["none", "unknown", "open"],
        NatKind::FullCone | NatKind::RestrictedCone => {
            ["endpoint-independent", "unknown", "unknown"]
        }
        NatKind::PortRestrictedCone | NatKind::Cgnat => {
            ["endpoint-independent", apd, "port-restricted-cone"]
        }
        NatKind::Symmetric => [apd, apd, "symmetric"],
        NatKind::UdpBlocked => ["unknown", "unknown", "udp-blocked"],
    }
}

fn home_name(kind: NatKind, variant: RouterVariant) -> String {
    format!("{}-{}", kind.name(), variant.name())
}

/// A lab with burrow's STUN server and coturn, each on two addresses, and one home per NAT kind
/// and router variant.
fn build_lab(variants: &[RouterVariant]) -> Lab {
    let mut b = Lab::builder()
        .server("burrow", &BURROW_IPS)
        .server("burrow1", &[ONE_IP])
        .server("coturn", &COTURN_IPS);
    for &variant in variants {
        for kind in NatKind::ALL {
            b = b.home(&home_name(kind, variant), kind, variant);
        }
    }
    let lab = b.build().expect("lab builds");
    let ns = lab.server_ns("burrow").to_string();
    lab.spawn(
        &ns,
        BURROW,
        [
            "stun",
            "--listen",
            &format!("{}:{PORT}", BURROW_IPS[0]),
            "--alt-ip",
            &BURROW_IPS[1].to_string(),
        ],
    )
    .expect("burrow stun starts");
    let ns = lab.server_ns("burrow1").to_string();
    lab.spawn(
        &ns,
        BURROW,
        ["stun", "--listen", &format!("{ONE_IP}:{PORT}")],
    )
    .expect("burrow stun on one address starts");
    lab.start_coturn("coturn", PORT).expect("coturn starts");
    let inet = lab.internet_ns().to_string();
    lab.stun_ping(
        &inet,
        SocketAddr::from((BURROW_IPS[0], PORT)),
        Duration::from_secs(5),
    )
    .expect("burrow stun answers");
    for port in [PORT, PORT + 1] {
        lab.stun_ping(
            &inet,
            SocketAddr::from((ONE_IP, port)),
            Duration::from_secs(5),
        )
        .expect("burrow stun on one address answers on both ports");
    }
    lab
}

fn netcheck(lab: &Lab, home: &str, server: Ipv4Addr) -> serde_json::Value {
    let out = lab
        .command(lab.host_ns(home), BURROW)
        .args(["netcheck", "--json", "--timeout", "3s", "--stun"])
        .arg(format!("{server}:{PORT}"))
        .env("BURROW_CONFIG", "/nonexistent/burrow.toml")
        .output()
        .expect("netcheck runs");
    assert!(
        out.status.success(),
        "netcheck in {home}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("netcheck prints JSON")
}

#[test]
fn netcheck_reports_what_the_lab_built_against_burrow_and_coturn() {
    if !Lab::tests_allowed() {
        return;
    }
    let lab = build_lab(&RouterVariant::ALL);
    let homes: Vec<(NatKind, RouterVariant)> = RouterVariant::ALL
        .iter()
        .flat_map(|&v| NatKind::ALL.map(|k| (k, v)))
        .collect();
    let mut table = Vec::new();
    let mut failures = 0;
    // One thread per home: each netcheck lives in its own namespaces.
    let results: Vec<_> = thread::scope(|s| {
        let handles: Vec<_> = homes
            .iter()
            .map(|&(kind, variant)| {
                let lab = &lab;
                s.spawn(move || {
                    let home = home_name(kind, variant);
                    let b = netcheck(lab, &home, BURROW_IPS[0]);
                    let c = netcheck(lab, &home, COTURN_IPS[0]);
                    let o = netcheck(lab, &home, ONE_IP);
                    (kind, variant, b, c, o)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (kind, variant, b, c, o) in results {
        let want = [
            kind.expected_mapping(),
            kind.expected_filtering(),
            kind.expected_nat_type(),
        ];
        for (server, r, want) in [
            ("burrow", &b, want),
            ("coturn", &c, want),
            ("1-ip", &o, one_address_verdict(kind)),
        ] {
            let got = [
                r["mapping"].as_str().unwrap_or("?"),
                r["filtering"].as_str().unwrap_or("?"),
                r["nat_type"].as_str().unwrap_or("?"),
            ];
            let ok = got == want;
            failures += usize::from(!ok);
            table.push(format!(
                "{:<22} {:<11} {:<7} {:<28} {:<28} {:<22} {}",
                kind.name(),
                variant.name(),
                server,
                got[0],
                got[1],
                got[2],
                if ok { "ok" } else { "MISMATCH" }
            ));
            if kind != NatKind::UdpBlocked {
                let public = r["public_addr"].as_str().unwrap_or("");
                assert!(
                    public.starts_with(&format!("{}:", lab.public_ip(&home_name(kind, variant)))),
                    "{} {}: public address {public}",
                    kind.name(),
                    variant.name()
                );
            }
        }
    }
    eprintln!(
        "{:<22} {:<11} {:<7} {:<28} {:<28} {:<22}\n{}",
        "kind",
        "variant",
        "server",
        "mapping",
        "filtering",
        "nat_type",
        table.join("\n")
    );
    assert_eq!(failures, 0, "netcheck disagreed with the lab");
}

/// turnutils_stunclient's exit status and reflexive IP. It waits forever for a CHANGE-REQUEST
/// answer that a filtering NAT drops, so it runs under `timeout`, line-buffered so its output
/// survives the kill.
fn stunclient(lab: &Lab, home: &str, server: Ipv4Addr) -> (Option<i32>, Option<std::net::IpAddr>) {
    let out = lab
        .command(lab.host_ns(home), "timeout")
        .args([
            "4",
            "stdbuf",
            "-oL",
            "turnutils_stunclient",
            "-p",
            &PORT.to_string(),
        ])
        .arg(server.to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let reflexive = text
        .lines()
        .find_map(|l| l.split("UDP reflexive addr: ").nth(1))
        .and_then(|a| a.trim().parse::<SocketAddr>().ok())
        .map(|a| a.ip());
    (out.status.code(), reflexive)
}

#[test]
fn coturn_clients_give_the_same_verdicts_against_burrow_stun_as_against_coturn() {
    if !Lab::tests_allowed() {
        return;
    }
    let lab = build_lab(&[RouterVariant::Firewalled]);
    let results: Vec<_> = thread::scope(|s| {
        let handles: Vec<_> = NatKind::ALL
            .iter()
            .map(|&kind| {
                let lab = &lab;
                s.spawn(move || {
                    let home = home_name(kind, RouterVariant::Firewalled);
                    let verdicts = [BURROW_IPS[0], COTURN_IPS[0]]
                        .map(|ip| lab.natdiscovery(&home, ip, PORT).unwrap());
                    let clients =
                        [BURROW_IPS[0], COTURN_IPS[0]].map(|ip| stunclient(lab, &home, ip));
                    (kind, home, verdicts, clients)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (kind, home, [on_burrow, on_coturn], [client_b, client_c]) in results {
        eprintln!(
            "{:<22} natdiscovery vs burrow: {} / {}   vs coturn: {} / {}   stunclient: {:?} / {:?}",
            kind.name(),
            on_burrow.mapping,
            on_burrow.filtering,
            on_coturn.mapping,
            on_coturn.filtering,
            client_b,
            client_c
        );
        assert_eq!(
            (&on_burrow.mapping, &on_burrow.filtering),
            (&on_coturn.mapping, &on_coturn.filtering),
            "{}: natdiscovery\n--- against burrow:\n{}\n--- against coturn:\n{}",
            kind.name(),
            on_burrow.raw,
            on_coturn.raw
        );
        assert_eq!(
            on_burrow.mapping,
            kind.expected_mapping(),
            "{}",
            kind.name()
        );
        assert_eq!(
            on_burrow.filtering,
            kind.expected_filtering(),
            "{}",
            kind.name()
        );
        assert_eq!(
            client_b,
            client_c,
            "{}: turnutils_stunclient burrow vs coturn",
            kind.name()
        );
        if kind != NatKind::UdpBlocked {
            assert_eq!(
                client_b.1,
                Some(lab.public_ip(&home).into()),
                "{}",
                kind.name()
            );
        }
    }
}

#[test]
fn netcheck_without_any_network_finishes_within_its_timeout() {
    if !Lab::tests_allowed() {
        return;
    }
    // A namespace with only loopback: the default public servers cannot be resolved or reached,
    // and nothing can leave the machine.
    let lab = Lab::builder().build().expect("empty lab");
    let ns = lab.internet_ns().to_string();
    let started = std::time::Instant::now();
    let out = lab
        .command(&ns, BURROW)
        .args(["netcheck", "--timeout", "2s"])
        .env("BURROW_CONFIG", "/nonexistent/burrow.toml")
        .env_remove("BURROW_STUN_SERVERS")
        .output()
        .unwrap();
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("no STUN server answered"), "{text}");
    assert!(took < Duration::from_millis(2500), "took {took:?}");
}
