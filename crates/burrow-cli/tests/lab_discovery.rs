//! Discovery across the NAT lab: peers behind different NATs, each told only the relay's URL,
//! connect by node id (the listener publishes its signed record to the relay's registry); on
//! one LAN with no servers they find each other by mDNS, whose unsigned answers give addresses
//! and nothing else.
//!
//! Needs root. Without it the test skips and says so, except under CI (CI=true), where a skip is
//! a failure because CI runs as root.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use burrow_lab::burrow::{relay_url, RELAY_IPS};
use burrow_lab::{Lab, NatKind, RouterVariant};

const BURROW: &str = env!("CARGO_BIN_EXE_burrow");

/// `burrow connect ARGS --json --bytes 1000000` in `ns` (mDNS allowed): checks it connected
/// directly and moved the bytes; returns its report.
fn connect_directly(lab: &Lab, ns: &str, args: &[&str]) -> serde_json::Value {
    let start = Instant::now();
    let mut cmd = lab.command(ns, BURROW);
    cmd.env_remove("BURROW_NO_MDNS")
        .arg("connect")
        .args(args)
        .args(["--json", "--bytes", "1000000"]);
    let out = burrow_lab::output_with_timeout(cmd, Duration::from_secs(40)).unwrap();
    assert!(
        out.status.success(),
        "connect {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("connect {args:?} done in {:?}: {r}", start.elapsed());
    assert_eq!(r["connected"], true);
    assert_eq!(r["bytes"], 1_000_000);
    assert_eq!(r["path"], "direct");
    r
}

/// `burrow connect ARGS` in `ns` fails, saying `why`.
fn connect_fails(lab: &Lab, ns: &str, args: &[&str], why: &str) {
    let mut cmd = lab.command(ns, BURROW);
    cmd.arg("connect").args(args);
    let out = burrow_lab::output_with_timeout(cmd, Duration::from_secs(20)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains(why), "{stderr}");
}

#[test]
fn peers_behind_different_nats_connect_by_node_id_with_only_the_relay_url() {
    if !Lab::tests_allowed() {
        return;
    }
    let lab = Lab::builder()
        .server("relay", &RELAY_IPS)
        .home("a", NatKind::PortRestrictedCone, RouterVariant::Firewalled)
        .home("b", NatKind::Cgnat, RouterVariant::Bare)
        .build()
        .expect("lab builds");
    lab.spawn_relay(BURROW, "relay").expect("relay starts");
    let url = relay_url();
    let (listener, first) = lab
        .spawn_listener(BURROW, "a", &[])
        .expect("listen prints its id");
    let node = first["node_id"].as_str().unwrap().to_string();
    listener
        .wait_for_line(Duration::from_secs(10), |l| l.contains("\"published\""))
        .expect("listen publishes its record");

    connect_directly(
        &lab,
        lab.host_ns("b"),
        &[&node, "--registry", &url, "--direct-timeout", "5s"],
    );

    // A node nobody published: a clear error.
    let stranger = burrow::SecretKey::from_bytes([9; 32]).node_id().to_string();
    connect_fails(
        &lab,
        lab.host_ns("b"),
        &[&stranger, "--registry", &url],
        "no source knows",
    );
}

#[test]
fn two_peers_on_one_lan_with_no_servers_find_each_other_by_mdns_and_connect() {
    if !Lab::tests_allowed() {
        return;
    }
    // One LAN segment: a home's host and its router, and nothing else running: no relay, no
    // registry, no DHT, no STUN.
    let lab = Lab::builder()
        .home("lan", NatKind::Open, RouterVariant::Bare)
        .build()
        .expect("lab builds");
    let key = lab.dir().join("lan.key");
    let args = ["listen", "--json", "--key", key.to_str().unwrap()];
    let listener = lab
        .spawn(lab.router_ns("lan"), BURROW, args)
        .expect("listen starts");
    let first = listener
        .wait_for_line(Duration::from_secs(20), |_| true)
        .expect("listen prints its id");
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["mdns"], true, "{first}");
    let node = first["node_id"].as_str().unwrap().to_string();

    connect_directly(&lab, lab.host_ns("lan"), &[&node]);

    // Without mDNS there is nothing to ask.
    connect_fails(
        &lab,
        lab.host_ns("lan"),
        &[&node, "--no-mdns"],
        "allow mDNS",
    );
}

/// Connections waiting in `tcp`'s backlog and datagrams queued on `udp` (both non-blocking):
/// every contact since they were bound, none of them answered.
fn contacts(tcp: &TcpListener, udp: &UdpSocket) -> (usize, usize) {
    let mut conns = 0;
    while tcp.accept().is_ok() {
        conns += 1;
    }
    let mut datagrams = 0;
    let mut buf = [0u8; 1500];
    loop {
        match udp.recv(&mut buf) {
            Ok(_) => datagrams += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("udp recv: {e}"),
        }
    }
    (conns, datagrams)
}

#[test]
fn an_mdns_answer_naming_a_relay_does_not_make_a_node_contact_that_relay() {
    if !Lab::tests_allowed() {
        return;
    }
    let lab = Lab::builder()
        .home("lan", NatKind::Open, RouterVariant::Bare)
        .build()
        .expect("lab builds");
    let router = lab.router_ns("lan");
    // The node announces nothing itself: the LAN's only answer about it is a stranger's.
    let key = lab.dir().join("lan.key");
    let args = [
        "listen",
        "--json",
        "--no-mdns",
        "--key",
        key.to_str().unwrap(),
    ];
    let listener = lab.spawn(router, BURROW, args).expect("listen starts");
    let first = listener
        .wait_for_line(Duration::from_secs(20), |_| true)
        .expect("listen prints its id");
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    let node: burrow::NodeId = first["node_id"].as_str().unwrap().parse().unwrap();
    let addrs: Vec<SocketAddr> = first["addrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().parse().unwrap())
        .collect();

    // A stranger on the LAN (here in the node's namespace) announces the node with its true
    // addresses and a "relay" of its own, where it counts TCP connections (the relay) and UDP
    // datagrams (STUN, on port 3478 of the relay's host).
    let mut gateway = lab.host_ip("lan").octets();
    gateway[3] = 1;
    let gateway = std::net::Ipv4Addr::from(gateway);
    let (tcp, udp, _announcer) = lab
        .in_ns(router, || {
            let tcp = TcpListener::bind((gateway, 0))?;
            tcp.set_nonblocking(true)?;
            let udp = UdpSocket::bind((gateway, 3478))?;
            udp.set_nonblocking(true)?;
            let relay = format!("http://{}", tcp.local_addr()?);
            let mut mdns = burrow::mdns::Mdns::new(&burrow::mdns::MdnsConfig {
                interfaces: vec!["bw-lan".into()],
                ..Default::default()
            })?;
            mdns.announce(node, addrs[0].port(), &addrs, Some(&relay))?;
            Ok((tcp, udp, mdns))
        })
        .expect("the stranger announces");

    connect_directly(&lab, lab.host_ns("lan"), &[&node.to_string()]);
    assert_eq!(
        contacts(&tcp, &udp),
        (0, 0),
        "the dialler contacted the relay an mDNS answer named (connections, datagrams)"
    );

    // `resolve` shows the LAN's answer as addresses alone, and its ticket has no relay.
    let mut cmd = lab.command(lab.host_ns("lan"), BURROW);
    cmd.env_remove("BURROW_NO_MDNS")
        .args(["resolve", &node.to_string(), "--json"]);
    let out = burrow_lab::output_with_timeout(cmd, Duration::from_secs(20)).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let answer = &r["answers"][0];
    assert_eq!(answer["source"], "mdns", "{r}");
    assert!(answer.get("relays").is_none(), "{r}");
    let ticket: burrow::ticket::Ticket = r["ticket"].as_str().unwrap().parse().unwrap();
    assert_eq!((ticket.relays.len(), ticket.addrs), (0, addrs), "{r}");
}
