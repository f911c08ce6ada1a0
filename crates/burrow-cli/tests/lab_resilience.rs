//! A direct path under stress, across the NAT lab: cut mid-transfer, a relay restart, and
//! forged probes from a third host. Every transfer is checked end to end by SHA-256 (the
//! listener's sink hashes what it got; `burrow connect` compares).
//!
//! Needs root. Without it the tests skip and say so, except under CI (CI=true), where a skip is a
//! failure because CI runs as root.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use burrow_lab::burrow::RELAY_IPS;
use burrow_lab::{Lab, LinkConditions, NatKind, RouterVariant, Spawned};
use burrow_proto::disco::{Message, NatHint, SharedKey};
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

/// A relay, a listener in home `a` and a rate-limited home `b`, both port-restricted; `extra`
/// homes besides.
fn setup(extra: &[(&str, NatKind)]) -> Setup {
    let mut b = Lab::builder()
        .server("relay", &RELAY_IPS)
        .home("a", NatKind::PortRestrictedCone, RouterVariant::Firewalled)
        .home("b", NatKind::PortRestrictedCone, RouterVariant::Firewalled)
        .link_conditions(
            "b",
            LinkConditions {
                rate_kbit: Some(RATE_KBIT),
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
}

#[test]
fn a_transfer_survives_its_direct_path_being_cut_and_finishes_over_the_relay() {
    if !Lab::tests_allowed() {
        return;
    }
    let s = setup(&[]);
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
        back <= Duration::from_millis(2500),
        "back on the relay after {back:?}"
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
    let s = setup(&[]);
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

#[test]
fn forged_probes_from_a_third_host_do_not_move_the_path() {
    if !Lab::tests_allowed() {
        return;
    }
    let s = setup(&[("evil", NatKind::Open)]);
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

    let connect = s.connect(40_000_000, Some(&key_path));
    let direct_from = s.wait_direct();
    let attacker = SecretKey::from_bytes(rand::random());
    let sent = s
        .lab
        .in_ns(s.lab.host_ns("evil"), || {
            let sock = UdpSocket::bind("0.0.0.0:0")?;
            let wrong_key = SharedKey::new(&attacker, &ticket.node_id)?;
            let mut n = 0;
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
                n += 1;
                if i % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            Ok(n)
        })
        .expect("the attacker sends");
    let r = s.finish(&connect);
    eprintln!("{sent} forged packets; {r}");
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
