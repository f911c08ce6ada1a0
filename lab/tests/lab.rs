//! Lab behaviour beyond the NAT kinds: router variants, link conditions, process tracking and
//! cleanup (also after a panic). Skipped without root.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use burrow_lab::{Lab, LinkConditions, NatKind, RouterVariant};

const S1: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const S2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);

/// [`poke`] from namespace `from` at a one-shot UDP echo bound to `at` in namespace `ns`.
fn poke_echo(lab: &Lab, from: &str, ns: &str, at: SocketAddr) -> &'static str {
    // A socket stays in the namespace it was made in.
    let echo = lab.in_ns(ns, || Ok(UdpSocket::bind(at)?)).unwrap();
    echo.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut buf = [0u8; 64];
            if let Ok((n, src)) = echo.recv_from(&mut buf) {
                let _ = echo.send_to(&buf[..n], src);
            }
        });
        poke(lab, from, at)
    })
}

fn gone(namespaces: &[String]) -> bool {
    namespaces
        .iter()
        .all(|ns| !Path::new("/run/netns").join(ns).exists())
}

/// Sends one datagram from `ns` to `to` on a connected socket and says what came back:
/// `"reply"`, `"refused"` (ICMP port unreachable) or `"silence"`.
fn poke(lab: &Lab, ns: &str, to: SocketAddr) -> &'static str {
    lab.in_ns(ns, || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect(to)?;
        s.set_read_timeout(Some(Duration::from_millis(700)))?;
        s.send(b"hello")?;
        let mut buf = [0u8; 64];
        Ok(match s.recv(&mut buf) {
            Ok(_) => "reply",
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => "refused",
            Err(_) => "silence",
        })
    })
    .unwrap()
}

#[test]
fn router_variants_differ_on_unsolicited_packets() {
    if !Lab::tests_allowed() {
        return;
    }
    let lab = Lab::builder()
        .server("peer", &[S1])
        .home("fw", NatKind::PortRestrictedCone, RouterVariant::Firewalled)
        .home("bare", NatKind::PortRestrictedCone, RouterVariant::Bare)
        .home("full", NatKind::FullCone, RouterVariant::Firewalled)
        .home("open", NatKind::Open, RouterVariant::Firewalled)
        .build()
        .unwrap();
    let peer = lab.server_ns("peer");
    // A firewalled router drops unsolicited packets silently; a bare one answers them itself.
    assert_eq!(
        poke(&lab, peer, (lab.public_ip("fw"), 40000).into()),
        "silence"
    );
    assert_eq!(
        poke(&lab, peer, (lab.public_ip("bare"), 40000).into()),
        "refused"
    );
    // Full cone forwards them to the host, whose kernel answers (nothing listens there).
    assert_eq!(
        poke(&lab, peer, (lab.public_ip("full"), 40000).into()),
        "refused"
    );
    assert_eq!(lab.public_ip("open"), lab.host_ip("open"));
    // The state a bare router keeps for an early packet takes the port, so the host's later
    // outbound flow to that peer gets another one; the firewalled router keeps the port.
    for (home, port_kept) in [("fw", true), ("bare", false)] {
        let peer_addr: SocketAddr = (S1, 7000).into();
        let public = lab.public_ip(home);
        let seen = std::thread::scope(|s| {
            let rx = s.spawn(|| {
                lab.in_ns(peer, || {
                    let sock = UdpSocket::bind(peer_addr)?;
                    sock.send_to(b"early", (public, 41000))?;
                    sock.set_read_timeout(Some(Duration::from_secs(3)))?;
                    let mut buf = [0u8; 64];
                    Ok(sock.recv_from(&mut buf)?.1)
                })
            });
            std::thread::sleep(Duration::from_millis(300));
            lab.in_ns(lab.host_ns(home), || {
                let sock = UdpSocket::bind((lab.host_ip(home), 41000))?;
                sock.send_to(b"late", peer_addr)?;
                Ok(())
            })
            .unwrap();
            rx.join().unwrap().unwrap()
        });
        eprintln!("{home}: host 41000 seen as {seen}");
        assert_eq!(seen.ip(), public);
        assert_eq!(seen.port() == 41000, port_kept, "{home}: seen as {seen}");
    }
    // Hosts reach servers, and an open host is reachable from the internet (where a firewalled
    // one, above, is not).
    let fw = lab.host_ns("fw");
    let to_server = poke_echo(&lab, fw, peer, (S1, 7001).into());
    assert_eq!(to_server, "reply", "a host reaching a server");
    let open: SocketAddr = (lab.host_ip("open"), 7001).into();
    let to_open = poke_echo(&lab, peer, lab.host_ns("open"), open);
    assert_eq!(to_open, "reply", "the internet reaching an open host");
}

#[test]
fn link_conditions_delay_and_loss() {
    if !Lab::tests_allowed() {
        return;
    }
    let delay = Duration::from_millis(40);
    let lab = Lab::builder()
        .server("stun", &[S1, S2])
        .home(
            "slow",
            NatKind::PortRestrictedCone,
            RouterVariant::Firewalled,
        )
        .home("slow-cgnat", NatKind::Cgnat, RouterVariant::Firewalled)
        .home("lossy", NatKind::Symmetric, RouterVariant::Bare)
        .home("thin", NatKind::Open, RouterVariant::Bare)
        .home(
            "plain",
            NatKind::PortRestrictedCone,
            RouterVariant::Firewalled,
        )
        .link_conditions(
            "slow",
            LinkConditions {
                delay: Some(delay),
                ..Default::default()
            },
        )
        .link_conditions(
            "slow-cgnat",
            LinkConditions {
                delay: Some(delay),
                ..Default::default()
            },
        )
        .link_conditions(
            "lossy",
            LinkConditions {
                loss_percent: 100.0,
                ..Default::default()
            },
        )
        .link_conditions(
            "thin",
            LinkConditions {
                rate_kbit: Some(800),
                ..Default::default()
            },
        )
        .build()
        .unwrap();
    lab.start_coturn("stun", 3478).unwrap();
    let target: SocketAddr = (S1, 3478).into();
    let t = Duration::from_secs(3);
    let plain = (0..5)
        .map(|_| lab.stun_ping(lab.host_ns("plain"), target, t).unwrap())
        .min()
        .unwrap();
    for home in ["slow", "slow-cgnat"] {
        // Best of a few, so a scheduling hiccup cannot fail the test.
        let rtt = (0..5)
            .map(|_| lab.stun_ping(lab.host_ns(home), target, t).unwrap())
            .min()
            .unwrap();
        eprintln!("{home}: rtt {rtt:?} (no conditions: {plain:?})");
        assert!(
            rtt >= 2 * delay,
            "{home}: rtt {rtt:?} below twice the one-way delay"
        );
        assert!(
            rtt < 2 * delay + Duration::from_millis(30),
            "{home}: rtt {rtt:?}"
        );
    }
    assert!(plain < Duration::from_millis(20), "plain rtt {plain:?}");
    assert!(lab
        .stun_ping(lab.host_ns("lossy"), target, Duration::from_millis(500))
        .is_err());
    // Rate: blast for a second through an 800 kbit/s (100 kB/s) link and count what arrives.
    let sink: SocketAddr = (S1, 5000).into();
    let (received, sent) = std::thread::scope(|s| {
        let rx = s.spawn(|| {
            lab.in_ns(lab.server_ns("stun"), || {
                let sock = UdpSocket::bind(sink)?;
                sock.set_read_timeout(Some(Duration::from_millis(500)))?;
                let mut total = 0usize;
                let mut buf = [0u8; 2048];
                while let Ok(n) = sock.recv(&mut buf) {
                    total += n;
                }
                Ok(total)
            })
        });
        std::thread::sleep(Duration::from_millis(100));
        let tx = lab.in_ns(lab.host_ns("thin"), || {
            let sock = UdpSocket::bind("0.0.0.0:0")?;
            let junk = [0u8; 1000];
            let start = Instant::now();
            let mut sent = 0usize;
            while start.elapsed() < Duration::from_secs(1) {
                sent += sock.send_to(&junk, sink)?;
                std::thread::sleep(Duration::from_micros(200));
            }
            Ok(sent)
        });
        (rx.join().unwrap().unwrap(), tx.unwrap())
    });
    eprintln!("thin: sent {sent} bytes in 1 s, {received} arrived");
    assert!(
        sent > 1_000_000,
        "sender too slow to test the shaper: {sent}"
    );
    assert!(
        (60_000..=160_000).contains(&received),
        "800 kbit/s link delivered {received} bytes in ~1 s"
    );
    // The lab tells when a delay is not in force: here its packets no longer reach the queue.
    lab.check_delays().expect("both delays in force");
    for (table, chain) in [("raw", "PREROUTING"), ("mangle", "POSTROUTING")] {
        let mut cmd = lab.command(lab.router_ns("slow"), "iptables");
        cmd.args(["-t", table, "-F", chain]);
        assert!(cmd.status().unwrap().success());
    }
    let err = lab.check_delays().expect_err("slow's delay is gone");
    assert!(format!("{err:#}").contains("home slow:"), "{err:#}");
}

#[test]
fn processes_and_namespaces_go_away() {
    if !Lab::tests_allowed() {
        return;
    }
    let lab = Lab::builder()
        .server("s", &[S1])
        .home("h", NatKind::Cgnat, RouterVariant::Bare)
        .build()
        .unwrap();
    let namespaces = lab.namespaces().to_vec();
    let p = lab.spawn(lab.host_ns("h"), "sleep", ["60"]).unwrap();
    // Started through `command` and not handed to the lab: still killed with it.
    let mut untracked = lab
        .command(lab.router_ns("h"), "sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let p2 = lab
        .spawn(lab.server_ns("s"), "sh", ["-c", "echo ready; sleep 60"])
        .unwrap();
    assert_eq!(
        p2.wait_for_line(Duration::from_secs(5), |l| l == "ready")
            .unwrap(),
        "ready"
    );
    assert!(Path::new(&format!("/proc/{}", p.pid())).exists());
    drop(lab);
    assert!(gone(&namespaces), "namespaces left: {namespaces:?}");
    // Killed by the lab, so it is gone at once rather than after its 60 s.
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = untracked.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = untracked.kill();
            panic!("a process started through `command` outlived its lab");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert!(!Path::new(&format!("/proc/{}", p.pid())).exists());
}

#[test]
fn cleanup_after_panic() {
    if !Lab::tests_allowed() {
        return;
    }
    let mut namespaces = Vec::new();
    let mut dir = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = Lab::builder()
            .server("s", &[S1, S2])
            .home("h", NatKind::RestrictedCone, RouterVariant::Firewalled)
            .build()
            .unwrap();
        namespaces = lab.namespaces().to_vec();
        dir = Some(lab.dir().to_path_buf());
        lab.start_coturn("s", 3478).unwrap();
        panic!("test failure inside a lab");
    }));
    assert!(result.is_err());
    assert!(!namespaces.is_empty());
    assert!(
        gone(&namespaces),
        "namespaces left after panic: {namespaces:?}"
    );
    // The lab keeps its logs when dropped during a panic; this panic was on purpose.
    let _ = std::fs::remove_dir_all(dir.unwrap());
}

#[test]
fn failed_build_cleans_up_and_stale_labs_are_swept() {
    if !Lab::tests_allowed() {
        return;
    }
    // A namespace of a "dead" lab (no process has pid 999999999).
    let stale = "bw-999999999-0-inet";
    let made = std::process::Command::new("ip")
        .args(["netns", "add", stale])
        .status()
        .unwrap();
    assert!(made.success());
    let lab = Lab::builder()
        .home("h", NatKind::Open, RouterVariant::Firewalled)
        .build()
        .unwrap();
    assert!(
        !Path::new("/run/netns").join(stale).exists(),
        "stale lab not swept"
    );
    drop(lab);
    // A build that fails after creating its namespaces (tc cannot represent this rate) removes
    // them again. The error names the namespace it failed in, and so the lab's prefix.
    let err = Lab::builder()
        .home("failing", NatKind::Open, RouterVariant::Bare)
        .link_conditions(
            "failing",
            LinkConditions {
                rate_kbit: Some(u32::MAX),
                ..Default::default()
            },
        )
        .build()
        .expect_err("tc refuses the rate");
    let msg = format!("{err:#}");
    eprintln!("failed build: {msg}");
    let failed_in = msg
        .split(|c: char| c.is_whitespace() || c == ':')
        .find(|w| w.starts_with("bw-") && w.contains("-h-failing-"))
        .unwrap_or_else(|| panic!("no namespace named in {msg:?}"));
    assert!(msg.starts_with(&format!("tc in {failed_in}")), "{msg}");
    let prefix = format!("{}-", failed_in.split("-h-").next().unwrap());
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "a failed build left {left:?}");
    // Two servers with the same address fail before anything is created.
    assert!(Lab::builder()
        .server("a", &[S1])
        .server("b", &[S1])
        .build()
        .is_err());
}
