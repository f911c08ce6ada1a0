//! A direct path under stress, across the NAT lab: cut mid-transfer, a relay restart, and
//! forged probes from a third host. Every transfer is checked end to end by SHA-256 (the
//! listener's sink hashes what it got; `burrow connect` compares).
//!
//! Needs root. Without it the tests skip and say so, except under CI (CI=true), where a skip is a
//! failure because CI runs as root.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use burrow_lab::burrow::RELAY_IPS;
use burrow_lab::{Lab, LinkConditions, NatKind, RouterVariant, Spawned};
use burrow_proto::disco::{self, Message, NatHint, SharedKey};
use burrow_proto::identity::{NodeId, SecretKey};

const BURROW: &str = env!("CARGO_BIN_EXE_burrow");
/// The connector's link is held to this rate, so transfers last long enough to be cut.
const RATE_KBIT: u32 = 100_000;

struct Setup {
    lab: Lab,
    relay: u32,
    listener: Spawned,
    ticket: String,
}

/// A relay, a listener in home `a` behind `listener`, and the connector's home `b`,
/// port-restricted, rate-limited and `b_delay` away (one way); all firewalled; `extra` homes
/// besides.
fn setup(listener: NatKind, b_delay: Option<Duration>, extra: &[(&str, NatKind)]) -> Setup {
    let mut b = Lab::builder()
        .server("relay", &RELAY_IPS)
        .home("a", listener, RouterVariant::Firewalled)
        .home("b", NatKind::PortRestrictedCone, RouterVariant::Firewalled)
        .link_conditions(
            "b",
            LinkConditions {
                rate_kbit: Some(RATE_KBIT),
                delay: b_delay,
                ..Default::default()
            },
        );
    for &(name, kind) in extra {
        b = b.home(name, kind, RouterVariant::Firewalled);
    }
    let lab = b.build().expect("lab builds");
    let relay = lab
        .spawn_relay(BURROW, "relay")
        .expect("relay starts")
        .pid();
    let (listener, first) = lab
        .spawn_listener(BURROW, "a", &[])
        .expect("listen prints its ticket");
    let ticket = first["ticket"].as_str().unwrap().to_string();
    Setup {
        lab,
        relay,
        listener,
        ticket,
    }
}

impl Setup {
    /// Starts `burrow connect --bytes N` in home `b`.
    fn connect(&self, bytes: u64, key: Option<&std::path::Path>) -> Spawned {
        let mut args = vec![
            "connect".to_string(),
            self.ticket.clone(),
            "--json".into(),
            "--bytes".into(),
            bytes.to_string(),
        ];
        if let Some(k) = key {
            args.extend(["--key".into(), k.to_str().unwrap().into()]);
        }
        self.lab
            .spawn(self.lab.host_ns("b"), BURROW, args)
            .expect("connect starts")
    }

    /// Waits for the listener to report a direct path; returns the peer's address on it.
    fn wait_direct(&self) -> String {
        let line = self
            .listener
            .wait_for_line(Duration::from_secs(20), |l| {
                (l.contains("\"event\":\"path\"") || l.contains("\"event\":\"connected\""))
                    && l.contains("\"path\":\"direct\"")
            })
            .expect("the connection goes direct");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        v["remote_addr"].as_str().unwrap().to_string()
    }

    /// Waits for `connect` to finish and returns its JSON; it checked the hash.
    fn finish(&self, connect: &Spawned) -> serde_json::Value {
        let line = connect
            .wait_for_line(Duration::from_secs(180), |l| l.starts_with('{'))
            .expect("connect finishes the transfer");
        serde_json::from_str(&line).unwrap()
    }

    fn iptables(&self, ns: &str, args: &[&str]) {
        let mut cmd = self.lab.command(ns, "iptables");
        cmd.args(args);
        let out = burrow_lab::output_with_timeout(cmd, Duration::from_secs(10)).unwrap();
        assert!(
            out.status.success(),
            "iptables {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Packets an `iptables -A INPUT -s IP -j ACCEPT` rule in `ns` has counted.
    fn counted_from(&self, ns: &str, ip: Ipv4Addr) -> u64 {
        let mut cmd = self.lab.command(ns, "iptables-save");
        cmd.args(["-c", "-t", "filter"]);
        let out = burrow_lab::output_with_timeout(cmd, Duration::from_secs(10)).unwrap();
        let rules = String::from_utf8_lossy(&out.stdout);
        // `[packets:bytes] -A INPUT -s IP/32 ... -j ACCEPT`
        let line = rules
            .lines()
            .find(|l| l.contains(&format!("-A INPUT -s {ip}/32")))
            .unwrap_or_else(|| panic!("no counting rule for {ip} in {rules}"));
        line.trim_start_matches('[')
            .split(':')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no packet count in {line:?}"))
    }
}

#[test]
fn a_transfer_survives_its_direct_path_being_cut_and_finishes_over_the_relay() {
    if !Lab::tests_allowed() {
        return;
    }
    let s = setup(NatKind::PortRestrictedCone, None, &[]);
    let connect = s.connect(100_000_000, None);
    s.wait_direct();
    std::thread::sleep(Duration::from_secs(1));
    // Cut: the listener's router drops every UDP packet (the relay is TCP).
    s.iptables(
        s.lab.router_ns("a"),
        &["-I", "FORWARD", "-p", "udp", "-j", "DROP"],
    );
    let cut = Instant::now();
    s.listener
        .wait_for_line(Duration::from_secs(5), |l| {
            l.contains("\"event\":\"path\"") && l.contains("\"path\":\"relay\"")
        })
        .expect("the listener moves back to the relay");
    let back = cut.elapsed();
    let r = s.finish(&connect);
    eprintln!("back on the relay {back:?} after the cut; {r}");
    assert!(
        back <= Duration::from_secs(2),
        "back on the relay after {back:?}, want within 2 s"
    );
    assert_eq!(r["connected"], true);
    assert_eq!(
        r["bytes"], 100_000_000u64,
        "every byte arrived, hash checked"
    );
    assert_eq!(r["path"], "relay");
    assert!(r["path_changes"].as_u64().unwrap() >= 1, "{r}");
}

#[test]
fn a_relay_restart_does_not_disturb_a_direct_transfer() {
    if !Lab::tests_allowed() {
        return;
    }
    let s = setup(NatKind::PortRestrictedCone, None, &[]);
    let connect = s.connect(60_000_000, None);
    s.wait_direct();
    std::thread::sleep(Duration::from_millis(500));
    s.lab.kill(s.relay).expect("relay stops");
    std::thread::sleep(Duration::from_millis(500));
    s.lab
        .spawn_relay(BURROW, "relay")
        .expect("relay starts again");
    let r = s.finish(&connect);
    eprintln!("{r}");
    assert_eq!(r["connected"], true);
    assert_eq!(
        r["bytes"], 60_000_000u64,
        "every byte arrived, hash checked"
    );
    assert_eq!(r["path"], "direct");
    assert!(
        r["path_changes"].as_u64().unwrap() <= 1,
        "never back on the relay: {r}"
    );
}

/// What the attacker did and saw.
#[derive(Debug, Default)]
struct Attack {
    /// Forged packets sent.
    sent: u64,
    /// Disco packets from the listener (pongs to forged pings, probes of forged candidates).
    disco: u64,
    /// Pings among them that it answered as the victim.
    answered: u64,
    /// Other packets from the listener: its connection's traffic, sent where its path points.
    traffic: u64,
}

#[test]
fn forged_probes_from_a_third_host_do_not_move_the_path() {
    if !Lab::tests_allowed() {
        return;
    }
    // Behind a full cone, anyone's packets to the listener's mapping reach it. The connector is
    // 10 ms away, the attacker next door: a path to the attacker, if the listener believed in
    // one, would win on round trip time.
    let s = setup(
        NatKind::FullCone,
        Some(Duration::from_millis(10)),
        &[("evil", NatKind::Open)],
    );
    let evil = s.lab.host_ip("evil");
    // The connector's key is fixed, so the attacker can claim to be it.
    let key_path = s.lab.dir().join("connector.key");
    let id = std::process::Command::new(BURROW)
        .args(["id", "--json", "--key", key_path.to_str().unwrap()])
        .output()
        .unwrap();
    let id: serde_json::Value = serde_json::from_slice(&id.stdout).unwrap();
    let victim: NodeId = id["node_id"].as_str().unwrap().parse().unwrap();
    let ticket: burrow::ticket::Ticket = s.ticket.parse().unwrap();
    let target: SocketAddr = ticket.addrs[0];
    assert_eq!(
        target.ip(),
        s.lab.public_ip("a"),
        "the listener's public mapping"
    );
    // Counts what reaches the listener's host from the attacker.
    let host = s.lab.host_ns("a");
    s.iptables(
        host,
        &["-A", "INPUT", "-s", &evil.to_string(), "-j", "ACCEPT"],
    );

    let connect = s.connect(40_000_000, Some(&key_path));
    let direct_from = s.wait_direct();
    let attacker = SecretKey::from_bytes(rand::random());
    let attack = s
        .lab
        .in_ns(s.lab.host_ns("evil"), || {
            let sock = UdpSocket::bind((evil, 0))?;
            let wrong_key = SharedKey::new(&attacker, &ticket.node_id)?;
            let mut a = Attack::default();
            // Reads for `wait`, answering every ping it can open as the victim would.
            let listen = |a: &mut Attack, wait: Duration| -> anyhow::Result<()> {
                let until = Instant::now() + wait;
                let mut buf = [0u8; 2048];
                while let Some(left) = until.checked_duration_since(Instant::now()) {
                    sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
                    let Ok((n, from)) = sock.recv_from(&mut buf) else {
                        break;
                    };
                    if from.ip() != target.ip() {
                        continue;
                    }
                    if !disco::looks_like_disco(&buf[..n]) {
                        a.traffic += 1;
                        continue;
                    }
                    a.disco += 1;
                    if let Ok(Message::Ping { tx }) = wrong_key.open(&buf[..n]) {
                        let pong = Message::Pong { tx, observed: from };
                        sock.send_to(&wrong_key.seal(&victim, &pong, rand::random())?, from)?;
                        a.answered += 1;
                    }
                }
                Ok(())
            };
            for i in 0..2000u32 {
                let msg = match i % 3 {
                    0 => Message::Ping { tx: rand::random() },
                    1 => Message::Pong {
                        tx: rand::random(),
                        observed: target,
                    },
                    _ => Message::CallMeMaybe {
                        candidates: vec![sock.local_addr()?],
                        nat: NatHint::Easy,
                        answer: false,
                    },
                };
                // Claims the victim as sender, sealed with a key that is not the victim's.
                let mut packet = wrong_key.seal(&victim, &msg, rand::random())?;
                if i % 2 == 0 {
                    // Or plain garbage behind the victim's header.
                    let body = packet.len() - 36;
                    for b in &mut packet[36..36 + body] {
                        *b = rand::random();
                    }
                }
                sock.send_to(&packet, target)?;
                a.sent += 1;
                if i % 100 == 99 {
                    listen(&mut a, Duration::from_millis(20))?;
                }
            }
            // Time for the listener to probe the attacker's "candidates" and switch, if it would.
            listen(&mut a, Duration::from_secs(2))?;
            Ok(a)
        })
        .expect("the attacker sends");
    let arrived = s.counted_from(host, evil);
    eprintln!("{arrived} packets reached the listener's host from the attacker: {attack:?}");
    assert_eq!(
        arrived,
        attack.sent + attack.answered,
        "every forged packet (and answer) reached the listener's host"
    );
    assert_eq!(
        attack.traffic, 0,
        "the listener's path moved to the attacker: its connection sent packets there"
    );
    assert_eq!(
        attack.disco, 0,
        "the listener answered or probed the attacker"
    );
    let r = s.finish(&connect);
    eprintln!("{r}");
    assert_eq!(r["connected"], true);
    assert_eq!(r["bytes"], 40_000_000u64);
    assert_eq!(r["path"], "direct");
    assert!(
        r["path_changes"].as_u64().unwrap() <= 1,
        "the path never moved: {r}"
    );
    // The listener reports a path event only when the path changes (none after going direct).
    let closed = s
        .listener
        .wait_for_line(Duration::from_secs(10), |l| {
            l.contains("\"event\":\"closed\"")
        })
        .expect("the listener saw the connection close");
    assert!(closed.contains(&direct_from), "{closed}");
    let out = s.listener.stdout();
    let moves: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("\"event\":\"path\""))
        .collect();
    assert!(
        moves.iter().all(|m| m.contains("\"path\":\"direct\"")) && moves.len() <= 1,
        "the listener's path moved: {moves:#?}"
    );
}

/// Through the relay, `keys` strangers (fresh keys, from home `from`) send the listener a
/// CallMeMaybe every 50 ms for `time`, each naming `names` and claiming a hard NAT (which
/// would make an easy node spray the first one). Returns the messages sent.
fn flood_through_the_relay(
    s: &Setup,
    from: &str,
    listener: NodeId,
    names: Vec<SocketAddr>,
    keys: usize,
    time: Duration,
) -> u64 {
    s.lab
        .in_ns(s.lab.host_ns(from), move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let relay: burrow::relay_client::RelayUrl =
                    burrow_lab::burrow::relay_url().parse()?;
                let mut clients = Vec::new();
                for _ in 0..keys {
                    let key = SecretKey::from_bytes(rand::random());
                    let sealer = SharedKey::new(&key, &listener)?;
                    let c = burrow::relay_client::RelayClient::new(
                        vec![relay.clone()],
                        key.clone(),
                        Default::default(),
                    );
                    clients.push((key.node_id(), sealer, c));
                }
                for (_, _, c) in &clients {
                    c.wait_connected(Duration::from_secs(10)).await?;
                }
                let mut sent = 0;
                let until = Instant::now() + time;
                let msg = Message::CallMeMaybe {
                    candidates: names,
                    nat: NatHint::Hard,
                    answer: false,
                };
                while Instant::now() < until {
                    for (me, sealer, c) in &clients {
                        let packet = sealer.seal(me, &msg, rand::random())?;
                        if c.send(listener, packet.into()).is_ok() {
                            sent += 1;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                for (_, _, c) in clients {
                    c.close().await;
                }
                Ok::<_, anyhow::Error>(sent)
            })
        })
        .expect("the flood runs")
}

#[test]
fn a_stranger_flood_through_the_relay_leaves_genuine_connections_direct_and_fast() {
    if !Lab::tests_allowed() {
        return;
    }
    // The connector's link is held to 100 Mbit/s, so a transfer measures the path, not the
    // CPU that the flood shares on this machine.
    let s = setup(
        NatKind::PortRestrictedCone,
        None,
        &[("evil", NatKind::Open), ("victim", NatKind::Open)],
    );
    let ticket: burrow::ticket::Ticket = s.ticket.parse().unwrap();
    let victim = SocketAddr::new(s.lab.host_ip("victim").into(), 9);
    // Counts what reaches the victim from the listener's public address.
    let listener_ip = s.lab.public_ip("a");
    s.iptables(
        s.lab.host_ns("victim"),
        &[
            "-A",
            "INPUT",
            "-s",
            &listener_ip.to_string(),
            "-j",
            "ACCEPT",
        ],
    );
    let bytes = 60_000_000;
    let quiet = s.finish(&s.connect(bytes, None));
    let connector = s.wait_direct().parse::<SocketAddr>().unwrap();
    // The flood names the connector's address (a path hijack) and the victim's (a reflection).
    let flood = std::thread::scope(|scope| {
        let flood = scope.spawn(|| {
            flood_through_the_relay(
                &s,
                "evil",
                ticket.node_id,
                vec![victim, connector],
                48,
                Duration::from_secs(12),
            )
        });
        std::thread::sleep(Duration::from_secs(3));
        let flooded = s.finish(&s.connect(bytes, None));
        (flood.join().unwrap(), flooded)
    });
    let (sent, flooded) = flood;
    let to_victim = s.counted_from(s.lab.host_ns("victim"), listener_ip);
    let rate = |r: &serde_json::Value| r["throughput_mbps"].as_f64().unwrap();
    eprintln!(
        "quiet: {:.1} Mbit/s, {}; under {sent} stranger messages: {:.1} Mbit/s, {}; {to_victim} packets to the victim",
        rate(&quiet),
        quiet["path"],
        rate(&flooded),
        flooded["path"]
    );
    assert!(sent > 5_000, "the flood ran: {sent} messages");
    for r in [&quiet, &flooded] {
        assert_eq!(r["connected"], true);
        assert_eq!(r["bytes"], bytes, "every byte arrived, hash checked");
        assert_eq!(r["path"], "direct", "{r}");
        // Relay to direct once, when direct came after the first byte; never back.
        assert!(r["path_changes"].as_u64().unwrap() <= 1, "moved: {r}");
    }
    assert!(
        rate(&flooded) >= 0.9 * rate(&quiet),
        "throughput under the flood {:.1} Mbit/s, quiet {:.1}",
        rate(&flooded),
        rate(&quiet)
    );
    assert_eq!(
        to_victim, 0,
        "the listener sent the victim {to_victim} packets"
    );
}
