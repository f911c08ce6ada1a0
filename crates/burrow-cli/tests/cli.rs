//! The `burrow` binary on loopback: the command-line contract, exit codes and JSON keys.

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BURROW: &str = env!("CARGO_BIN_EXE_burrow");

/// The binary, with mDNS off: these tests run on the host, whose LAN must see no multicast
/// from them (the NAT lab tests mDNS inside namespaces).
fn burrow() -> Command {
    let mut cmd = Command::new(BURROW);
    cmd.env("BURROW_NO_MDNS", "1");
    cmd
}

/// A child process killed on drop, so a failing test leaves nothing running.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port_pair() -> u16 {
    // Two consecutive free UDP ports on both loopback addresses.
    loop {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = s.local_addr().unwrap().port();
        if p < 65000
            && UdpSocket::bind(("127.0.0.1", p + 1)).is_ok()
            && UdpSocket::bind(("127.0.0.2", p)).is_ok()
            && UdpSocket::bind(("127.0.0.2", p + 1)).is_ok()
        {
            return p;
        }
    }
}

/// `burrow stun` on 127.0.0.1 with 127.0.0.2 as its alternate IP; returns its primary port.
fn start_rfc5780_stun() -> (u16, Running) {
    let port = free_port_pair();
    let child = burrow()
        .args([
            "stun",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--alt-ip",
            "127.0.0.2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    (port, Running(child))
}

fn netcheck_json(args: &[&str]) -> (serde_json::Value, Duration) {
    let start = Instant::now();
    let out = burrow()
        .args(["netcheck", "--json"])
        .args(args)
        .env_remove("BURROW_STUN_SERVERS")
        .env("BURROW_CONFIG", "/nonexistent/burrow.toml")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one JSON object: {stdout}");
    (serde_json::from_str(&stdout).unwrap(), start.elapsed())
}

#[test]
fn netcheck_against_burrow_stun_on_loopback_is_open_with_every_contract_key() {
    let (port, _stun) = start_rfc5780_stun();
    let (r, _) = netcheck_json(&["--stun", &format!("127.0.0.1:{port}")]);
    for key in [
        "udp",
        "local_addrs",
        "public_addr",
        "mapping",
        "filtering",
        "nat_type",
        "hairpinning",
        "servers",
        "duration_ms",
    ] {
        assert!(r.get(key).is_some(), "missing {key} in {r}");
    }
    assert_eq!(r["udp"], true);
    assert_eq!(r["nat_type"], "open");
    assert_eq!(r["mapping"], "none");
    assert_eq!(r["filtering"], "none");
    let server = &r["servers"][0];
    assert!(server["rtt_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(server["rfc5780"], true);
    assert!(server["mapped_addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    for key in ["addr", "rtt_ms", "mapped_addr", "error"] {
        assert!(server.get(key).is_some(), "missing servers[].{key}");
    }
}

#[test]
fn netcheck_works_over_ipv6_loopback() {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED: no IPv6 loopback");
        return;
    }
    let probe = UdpSocket::bind("[::1]:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let child = burrow()
        .args(["stun", "--listen", &format!("[::1]:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _stun = Running(child);
    std::thread::sleep(Duration::from_millis(300));
    let (r, _) = netcheck_json(&["--stun", &format!("[::1]:{port}")]);
    assert_eq!(r["udp"], true, "{r}");
    assert!(
        r["public_addr_v6"].as_str().unwrap().starts_with("[::1]:"),
        "{r}"
    );
}

#[test]
fn netcheck_with_no_answer_finishes_within_its_timeout_and_says_so() {
    // Nothing listens on this loopback port: silence, as when UDP is blocked.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    drop(silent);
    let (r, took) = netcheck_json(&["--stun", &addr, "--timeout", "1s"]);
    assert_eq!(r["udp"], false);
    assert_eq!(r["nat_type"], "udp-blocked");
    assert!(took < Duration::from_millis(1900), "took {took:?}");

    let out = burrow()
        .args(["netcheck", "--stun", &addr, "--timeout", "500ms"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("no STUN server answered"), "{text}");
}

#[test]
fn netcheck_with_unresolvable_servers_says_so_at_once() {
    let (r, took) = netcheck_json(&["--stun", "no-such-host.invalid:3478", "--timeout", "2s"]);
    assert_eq!(r["udp"], false);
    assert!(r["servers"][0]["error"]
        .as_str()
        .unwrap()
        .starts_with("dns:"));
    assert!(took < Duration::from_millis(2500));
}

#[test]
fn usage_errors_exit_2_and_failures_exit_1_with_one_line() {
    let usage = burrow()
        .args(["netcheck", "--timeout", "soon"])
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
    let bad = burrow()
        .args(["netcheck", "--stun", "nohostport"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    let alt = burrow()
        .args(["stun", "--listen", "127.0.0.1:0", "--alt-port", "5"])
        .output()
        .unwrap();
    assert_eq!(alt.status.code(), Some(2), "--alt-port needs --alt-ip");
}

#[test]
fn stun_server_answers_coturn_stunclient() {
    if std::process::Command::new("turnutils_stunclient")
        .arg("-h")
        .output()
        .is_err()
    {
        // CI installs coturn, so there a missing client is a failure, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have coturn's turnutils_stunclient"
        );
        eprintln!("SKIPPED: coturn's turnutils_stunclient is not installed");
        return;
    }
    let (port, _stun) = start_rfc5780_stun();
    let out = Command::new("turnutils_stunclient")
        .args(["-p", &port.to_string(), "127.0.0.1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("UDP reflexive addr: 127.0.0.1:"), "{text}");
    assert!(
        text.contains(&format!("Other addr: : 127.0.0.2:{}", port + 1)),
        "{text}"
    );
}

#[test]
fn id_creates_a_key_once_and_prints_the_same_node_id() {
    let dir = std::env::temp_dir().join(format!("burrow-cli-id-{}", std::process::id()));
    let key = dir.join("key");
    let id = |json: bool| {
        let mut c = burrow();
        c.args(["id", "--key", key.to_str().unwrap()]);
        if json {
            c.arg("--json");
        }
        let out = c.output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let first = id(false);
    assert_eq!(first.trim().len(), 52);
    assert_eq!(id(false), first);
    let j: serde_json::Value = serde_json::from_str(&id(true)).unwrap();
    assert_eq!(j["node_id"].as_str().unwrap(), first.trim());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `burrow dht-node --json` as a child: its stdout read line by line on a thread, so a read
/// can time out.
struct DhtNode {
    _child: Running,
    lines: std::sync::mpsc::Receiver<serde_json::Value>,
}

impl DhtNode {
    fn start(args: &[&str]) -> DhtNode {
        use std::io::BufRead;
        let mut child = burrow()
            .args(["dht-node", "--json", "--bind", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(serde_json::from_str(&line).expect("a JSON line"));
            }
        });
        DhtNode {
            _child: Running(child),
            lines,
        }
    }

    fn next(&self) -> serde_json::Value {
        self.lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a line within 10 s")
    }
}

#[test]
fn dht_nodes_on_loopback_bootstrap_off_each_other() {
    // Only loopback: a new private DHT, never Mainline's public bootstrap nodes.
    let first = DhtNode::start(&["--no-bootstrap"]);
    let a = first.next();
    let a_addr = a["addr"].as_str().unwrap().to_string();
    assert!(a_addr.starts_with("127.0.0.1:"), "{a}");
    assert_eq!(a["bootstrap"], serde_json::json!([]));

    let second = DhtNode::start(&["--bootstrap", &a_addr]);
    let b_addr = second.next()["addr"].as_str().unwrap().to_string();
    assert_ne!(a_addr, b_addr);
    let joined = second.next();
    assert_eq!(joined["event"], "bootstrapped");
    assert_eq!(joined["ok"], true, "{joined}");
    assert!(joined["known_nodes"].as_u64().unwrap() >= 1, "{joined}");

    // The third joins through the second and learns the first from it.
    let third = DhtNode::start(&["--bootstrap", &b_addr]);
    third.next();
    let joined = third.next();
    assert_eq!(joined["ok"], true, "{joined}");
    assert!(joined["known_nodes"].as_u64().unwrap() >= 2, "{joined}");
}

#[test]
fn dht_node_usage_and_failures() {
    let usage = burrow()
        .args(["dht-node", "--bind", "[::1]:6881"])
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2), "IPv6 is a usage error");
    let both = burrow()
        .args(["dht-node", "--no-bootstrap", "--bootstrap", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(both.status.code(), Some(2));
    let bad = burrow()
        .args(["dht-node", "--bind", "127.0.0.1:0", "--bootstrap", "noport"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("noport"),
        "{err}"
    );
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let busy = burrow()
        .args(["dht-node", "--no-bootstrap", "--bind"])
        .arg(taken.local_addr().unwrap().to_string())
        .output()
        .unwrap();
    assert_eq!(busy.status.code(), Some(1));
}

/// `burrow resolve --json ARGS`, repeated until it finds the node or `patience` runs out;
/// the last answer.
fn resolve_until_found(args: &[&str], patience: Duration) -> serde_json::Value {
    let deadline = Instant::now() + patience;
    loop {
        let out = burrow()
            .args(["resolve", "--json"])
            .args(args)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if out.status.success() || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The first line `child` prints.
fn first_line(child: &mut Child) -> String {
    use std::io::BufRead;
    let out = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(out).read_line(&mut line).unwrap();
    line
}

#[test]
fn listen_publishes_its_record_and_resolve_and_peers_find_it() {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    drop(tcp);
    let stun = free_port_pair();
    let _relay = Running(
        burrow()
            .args([
                "relay",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--stun",
                &format!("127.0.0.1:{stun}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let relay = format!("http://127.0.0.1:{port}");
    let key = std::env::temp_dir().join(format!("burrow-resolve-test-{}", std::process::id()));
    let _ = std::fs::remove_file(&key);
    let mut listen = burrow()
        .args([
            "listen",
            "--json",
            "--relay",
            &relay,
            "--bind",
            "127.0.0.1:0",
        ])
        .args([
            "--stun",
            &format!("127.0.0.1:{stun}"),
            "--namespace",
            "team.a",
        ])
        .arg("--key")
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first: serde_json::Value = serde_json::from_str(&first_line(&mut listen)).unwrap();
    let _listen = Running(listen);
    let node = first["node_id"].as_str().unwrap().to_string();

    let v = resolve_until_found(
        &[
            &node,
            "--registry",
            &relay,
            "--registry",
            "http://127.0.0.1:1",
        ],
        Duration::from_secs(15),
    );
    assert_eq!(v["found"], true, "{v}");
    // One answer per registry: the live one with the record, the dead one with an error.
    let answers = v["answers"].as_array().unwrap();
    assert_eq!(answers.len(), 2, "{v}");
    let good = answers.iter().find(|a| a.get("error").is_none()).unwrap();
    assert_eq!(good["relays"][0], relay.as_str());
    assert_eq!(good["addrs"], first["addrs"]);
    assert!(answers.iter().any(|a| a["error"].is_string()));
    let ticket: burrow::ticket::Ticket = v["ticket"].as_str().unwrap().parse().unwrap();
    assert_eq!(ticket.node_id.to_string(), node);

    // Listed under its namespace, and nowhere else.
    let peers = |ns: &str| -> serde_json::Value {
        let out = burrow()
            .args(["peers", "--namespace", ns, "--registry", &relay, "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let team = peers("team.a");
    assert_eq!(team["peers"].as_array().unwrap().len(), 1, "{team}");
    assert_eq!(team["peers"][0]["node_id"], node.as_str());
    assert_eq!(peers("team.b")["peers"].as_array().unwrap().len(), 0);

    // An unknown node: not found, exit 1, a clear message.
    let stranger = burrow::SecretKey::from_bytes([7; 32]).node_id().to_string();
    let out = burrow()
        .args(["resolve", &stranger, "--registry", &relay])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no source knows"));
    let _ = std::fs::remove_file(&key);
}

#[test]
fn listen_publishes_into_a_private_dht_and_resolve_finds_it_there() {
    let port = || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let node = |bind: u16, bootstrap: Option<u16>| {
        let mut cmd = burrow();
        cmd.args(["dht-node", "--bind", &format!("127.0.0.1:{bind}")]);
        match bootstrap {
            Some(b) => cmd.args(["--bootstrap", &format!("127.0.0.1:{b}")]),
            None => cmd.arg("--no-bootstrap"),
        };
        Running(
            cmd.stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let (p1, p2, p3) = (port(), port(), port());
    let _n1 = node(p1, None);
    std::thread::sleep(Duration::from_millis(300));
    let _n2 = node(p2, Some(p1));
    let _n3 = node(p3, Some(p1));
    std::thread::sleep(Duration::from_millis(500));

    let key = std::env::temp_dir().join(format!("burrow-dht-test-{}", std::process::id()));
    let _ = std::fs::remove_file(&key);
    let mut listen = burrow()
        .args([
            "listen",
            "--json",
            "--bind",
            "127.0.0.1:0",
            "--dht-bootstrap",
        ])
        .arg(format!("127.0.0.1:{p2}"))
        .arg("--key")
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first: serde_json::Value = serde_json::from_str(&first_line(&mut listen)).unwrap();
    let _listen = Running(listen);
    let id = first["node_id"].as_str().unwrap().to_string();

    let dht = format!("127.0.0.1:{p3}");
    let v = resolve_until_found(&[&id, "--dht-bootstrap", &dht], Duration::from_secs(30));
    assert_eq!(v["found"], true, "{v}");
    assert_eq!(v["answers"][0]["source"], "dht");
    assert_eq!(v["answers"][0]["addrs"], first["addrs"]);
    let _ = std::fs::remove_file(&key);
}
