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
        .args([
            "stun",
            "--listen",
            "127.0.0.1:0",
            "--alt-port",
            "5",
            "--no-alt-port",
        ])
        .output()
        .unwrap();
    assert_eq!(
        alt.status.code(),
        Some(2),
        "--alt-port contradicts --no-alt-port"
    );
    let alt = burrow()
        .args([
            "stun",
            "--listen",
            "127.0.0.1:0",
            "--alt-ip",
            "127.0.0.2",
            "--no-alt-port",
        ])
        .output()
        .unwrap();
    assert_eq!(
        alt.status.code(),
        Some(2),
        "RFC 5780 needs the alternate port"
    );
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

/// A `burrow ... --json` child: its stdout read line by line on a thread, so a read can time
/// out, and its stderr kept for assertions.
struct JsonChild {
    child: Running,
    lines: std::sync::mpsc::Receiver<serde_json::Value>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl JsonChild {
    fn spawn(cmd: &mut Command) -> JsonChild {
        use std::io::{BufRead, Read};
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
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
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (mut pipe, kept) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            let mut buf = [0; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                kept.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        JsonChild {
            child: Running(child),
            lines,
            stderr,
        }
    }

    fn next(&self) -> serde_json::Value {
        self.lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a line within 10 s")
    }

    /// The first line of each event in `names` (in that order), skipping other lines.
    fn events(&self, names: &[&str], patience: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + patience;
        let mut seen: Vec<Option<serde_json::Value>> = vec![None; names.len()];
        while seen.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "events {names:?} within {patience:?}: saw {seen:?}; stderr: {}",
                    self.stderr()
                )
            });
            if let Some(i) = names.iter().position(|n| line["event"] == *n) {
                seen[i].get_or_insert(line);
            }
        }
        seen.into_iter().map(Option::unwrap).collect()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Its exit status, waiting at most `patience` for it.
    fn exit(&mut self, patience: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(status) = self.child.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {patience:?}; stderr: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `burrow dht-node --json` on 127.0.0.1 with `args`.
fn dht_node(args: &[&str]) -> JsonChild {
    JsonChild::spawn(
        burrow()
            .args(["dht-node", "--json", "--bind", "127.0.0.1:0"])
            .args(args),
    )
}

#[test]
fn dht_nodes_on_loopback_bootstrap_off_each_other() {
    // Only loopback: a new private DHT, never Mainline's public bootstrap nodes.
    let first = dht_node(&["--no-bootstrap"]);
    let a = first.next();
    let a_addr = a["addr"].as_str().unwrap().to_string();
    assert!(a_addr.starts_with("127.0.0.1:"), "{a}");
    assert_eq!(a["bootstrap"], serde_json::json!([]));

    let second = dht_node(&["--bootstrap", &a_addr]);
    let b_addr = second.next()["addr"].as_str().unwrap().to_string();
    assert_ne!(a_addr, b_addr);
    let joined = second.next();
    assert_eq!(joined["event"], "bootstrapped");
    assert_eq!(joined["ok"], true, "{joined}");
    assert!(joined["known_nodes"].as_u64().unwrap() >= 1, "{joined}");

    // The third joins through the second and learns the first from it.
    let third = dht_node(&["--bootstrap", &b_addr]);
    third.next();
    let joined = third.next();
    assert_eq!(joined["ok"], true, "{joined}");
    assert!(joined["known_nodes"].as_u64().unwrap() >= 2, "{joined}");
}

/// A private DHT of three `burrow dht-node`s on loopback (never Mainline's public nodes): the
/// first starts it, the other two join through it.
struct PrivateDht {
    _nodes: Vec<JsonChild>,
    /// The nodes' `IP:PORT`s, for `--dht-bootstrap`.
    addrs: Vec<String>,
}

fn private_dht() -> PrivateDht {
    let first = dht_node(&["--no-bootstrap"]);
    let first_addr = first.next()["addr"].as_str().unwrap().to_string();
    let mut addrs = vec![first_addr.clone()];
    let mut nodes = vec![first];
    for _ in 0..2 {
        let node = dht_node(&["--bootstrap", &first_addr]);
        addrs.push(node.next()["addr"].as_str().unwrap().to_string());
        nodes.push(node);
    }
    for node in &nodes[1..] {
        let joined = node.next();
        assert_eq!(joined["ok"], true, "{joined}");
    }
    PrivateDht {
        _nodes: nodes,
        addrs,
    }
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

/// `burrow ARGS` (a command printing one JSON object), repeated until `done(succeeded, answer)`
/// or until `patience` runs out; the last answer.
fn poll_json(
    args: &[&str],
    patience: Duration,
    done: impl Fn(bool, &serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + patience;
    loop {
        let out = burrow().args(args).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: {e}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        if done(out.status.success(), &v) || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `burrow resolve --json ARGS`, repeated until it finds the node or `patience` runs out;
/// the last answer.
fn resolve_until_found(args: &[&str], patience: Duration) -> serde_json::Value {
    let args: Vec<&str> = ["resolve", "--json"].iter().chain(args).copied().collect();
    poll_json(&args, patience, |ok, _| ok)
}

/// `burrow peers --json ARGS`, which must succeed.
fn peers_json(args: &[&str]) -> serde_json::Value {
    let args: Vec<&str> = ["peers", "--json"].iter().chain(args).copied().collect();
    poll_json(&args, Duration::ZERO, |ok, v| {
        assert!(ok, "{args:?}: {v}");
        true
    })
}

/// The node ids in a `burrow peers --json` answer.
fn peer_ids(v: &serde_json::Value) -> std::collections::BTreeSet<String> {
    v["peers"]
        .as_array()
        .unwrap_or_else(|| panic!("no peers in {v}"))
        .iter()
        .map(|p| p["node_id"].as_str().unwrap().to_string())
        .collect()
}

/// A file under the temp directory that this test process owns; removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(label: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("burrow-cli-{label}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `burrow relay` on loopback with STUN beside it: its URL and STUN address.
fn start_relay() -> (String, String, Running) {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    drop(tcp);
    let stun = format!("127.0.0.1:{}", free_port_pair());
    let relay = Running(
        burrow()
            .args(["relay", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--stun", &stun])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    (format!("http://127.0.0.1:{port}"), stun, relay)
}

/// `burrow listen --json` on 127.0.0.1 with the key in `key` and `args`: its first line
/// (node id, ticket, addresses) and the child.
fn listen(key: &TempFile, args: &[&str]) -> (serde_json::Value, JsonChild) {
    let child = JsonChild::spawn(
        burrow()
            .args([
                "listen",
                "--json",
                "--bind",
                "127.0.0.1:0",
                "--key",
                key.path(),
            ])
            .args(args),
    );
    (child.next(), child)
}

#[test]
fn listen_publishes_its_record_and_resolve_and_peers_find_it() {
    let (relay, stun, _relay) = start_relay();
    let key = TempFile::new("resolve-test");
    let (first, _listen) = listen(
        &key,
        &["--relay", &relay, "--stun", &stun, "--namespace", "team.a"],
    );
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
    let team = peers_json(&["--namespace", "team.a", "--registry", &relay]);
    assert_eq!(team["peers"].as_array().unwrap().len(), 1, "{team}");
    assert_eq!(team["peers"][0]["node_id"], node.as_str());
    assert_eq!(team["peers"][0]["sources"], serde_json::json!(["registry"]));
    assert_eq!(team["peers"][0]["record"], "registry");
    assert_eq!(team["peers"][0]["addrs"], first["addrs"]);
    assert!(peer_ids(&peers_json(&[
        "--namespace",
        "team.b",
        "--registry",
        &relay
    ]))
    .is_empty());

    // An unknown node: not found, exit 1, a clear message.
    let stranger = burrow::SecretKey::from_bytes([7; 32]).node_id().to_string();
    let out = burrow()
        .args(["resolve", &stranger, "--registry", &relay])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no source knows"));
}

#[test]
fn listen_publishes_into_a_private_dht_and_resolve_finds_it_there() {
    let dht = private_dht();
    let key = TempFile::new("dht-test");
    let (first, _listen) = listen(&key, &["--dht-bootstrap", &dht.addrs[1]]);
    let id = first["node_id"].as_str().unwrap().to_string();

    let v = resolve_until_found(
        &[&id, "--dht-bootstrap", &dht.addrs[2]],
        Duration::from_secs(30),
    );
    assert_eq!(v["found"], true, "{v}");
    assert_eq!(v["answers"][0]["source"], "dht");
    assert_eq!(v["answers"][0]["addrs"], first["addrs"]);
}

#[test]
fn two_listeners_announce_a_namespace_in_the_dht_and_peers_lists_both() {
    let dht = private_dht();
    let (key_a, key_b) = (TempFile::new("ns-a"), TempFile::new("ns-b"));
    let (first_a, a) = listen(
        &key_a,
        &["--namespace", "team.x", "--dht-bootstrap", &dht.addrs[1]],
    );
    let (first_b, b) = listen(
        &key_b,
        &["--namespace", "team.x", "--dht-bootstrap", &dht.addrs[2]],
    );
    for l in [&a, &b] {
        let announced = &l.events(&["announced"], Duration::from_secs(30))[0];
        assert_eq!(
            announced,
            &serde_json::json!({"event": "announced", "namespace": "team.x", "source": "dht"})
        );
    }
    let want: std::collections::BTreeSet<String> = [&first_a, &first_b]
        .iter()
        .map(|f| f["node_id"].as_str().unwrap().to_string())
        .collect();
    // Until both are listed and both records (published beside the announce) are found.
    let args = [
        "peers",
        "--json",
        "--namespace",
        "team.x",
        "--dht-bootstrap",
        &dht.addrs[0],
    ];
    let v = poll_json(&args, Duration::from_secs(60), |ok, v| {
        ok && peer_ids(v) == want
            && v["peers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| !p["record"].is_null())
    });
    assert_eq!(peer_ids(&v), want, "{v}");
    for first in [&first_a, &first_b] {
        let row = v["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["node_id"] == first["node_id"])
            .unwrap();
        assert_eq!(row["sources"], serde_json::json!(["dht"]), "{v}");
        assert_eq!(row["record"], "dht", "{v}");
        assert_eq!(row["addrs"], first["addrs"], "{v}");
        let ticket: burrow::ticket::Ticket = row["ticket"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            ticket.node_id.to_string(),
            first["node_id"].as_str().unwrap()
        );
    }
}

#[test]
fn a_closed_namespace_is_listed_only_with_its_secret_and_never_at_the_registry() {
    let dht = private_dht();
    let (relay, stun, _relay) = start_relay();
    let (key, secret) = (
        TempFile::new("closed-ns"),
        TempFile::new("closed-ns-secret"),
    );
    std::fs::write(&secret.0, "team x only\n").unwrap();
    let (first, l) = listen(
        &key,
        &[
            "--relay",
            &relay,
            "--stun",
            &stun,
            "--namespace",
            "team.x",
            "--namespace-secret-file",
            secret.path(),
            "--dht-bootstrap",
            &dht.addrs[1],
        ],
    );
    let id = first["node_id"].as_str().unwrap().to_string();
    // Announced in the DHT, and the record (by key only) at the registry.
    let seen = l.events(&["announced", "published"], Duration::from_secs(30));
    assert_eq!(seen[1]["source"], relay.as_str(), "{seen:?}");
    assert!(
        l.stderr()
            .contains("warning: closed namespaces (team.x) go to the DHT only"),
        "{}",
        l.stderr()
    );

    // A DHT listing takes some 20 s on loopback (sixteen slot lookups, two at a time, each
    // waiting out unresponsive client nodes): the open namespace is listed meanwhile.
    let open_dht = {
        let dht = dht.addrs[2].clone();
        std::thread::spawn(move || peers_json(&["--namespace", "team.x", "--dht-bootstrap", &dht]))
    };
    let with_secret = [
        "peers",
        "--json",
        "--namespace",
        "team.x",
        "--namespace-secret-file",
        secret.path(),
        "--dht-bootstrap",
        &dht.addrs[2],
    ];
    let v = poll_json(&with_secret, Duration::from_secs(45), |ok, v| {
        ok && peer_ids(v).contains(&id)
    });
    assert_eq!(peer_ids(&v), [id.clone()].into(), "{v}");
    assert_eq!(v["peers"][0]["sources"], serde_json::json!(["dht"]));

    // The open namespace of the same name knows nothing of it, in the DHT or at the registry.
    let open = open_dht.join().unwrap();
    assert!(peer_ids(&open).is_empty(), "{open}");
    let open = peers_json(&["--namespace", "team.x", "--registry", &relay]);
    assert!(peer_ids(&open).is_empty(), "{open}");
}

#[test]
fn peers_needs_a_source_and_a_closed_namespace_needs_the_dht() {
    let run = |args: &[&str]| burrow().args(args).output().unwrap();
    let none = run(&["peers", "--namespace", "x"]);
    assert_eq!(none.status.code(), Some(1));
    let err = String::from_utf8_lossy(&none.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("--registry") && err.contains("--dht-bootstrap"),
        "{err}"
    );

    let secret = TempFile::new("usage-secret");
    std::fs::write(&secret.0, "s").unwrap();
    let s = secret.path();
    // A closed namespace is DHT only: no registry, and the DHT is required.
    for args in [
        &["peers", "--namespace", "x", "--namespace-secret-file", s][..],
        &[
            "peers",
            "--namespace",
            "x",
            "--namespace-secret-file",
            s,
            "--dht-bootstrap",
            "127.0.0.1:1",
            "--registry",
            "http://127.0.0.1:1",
        ],
        &["listen", "--namespace", "x", "--namespace-secret-file", s],
        &[
            "listen",
            "--dht-bootstrap",
            "127.0.0.1:1",
            "--namespace-secret-file",
            s,
        ],
    ] {
        assert_eq!(run(args).status.code(), Some(2), "{args:?}");
    }
    std::fs::write(&secret.0, "\n").unwrap();
    let empty = run(&[
        "peers",
        "--namespace",
        "x",
        "--namespace-secret-file",
        s,
        "--dht-bootstrap",
        "127.0.0.1:1",
    ]);
    assert_eq!(empty.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&empty.stderr).contains("is empty"));
}

#[test]
fn listen_reports_publishing_at_each_registry_and_in_the_dht() {
    let dht = private_dht();
    let (relay, stun, _relay) = start_relay();
    // A registry nobody runs: the port was free a moment ago.
    let dead = {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", tcp.local_addr().unwrap().port())
    };
    let key = TempFile::new("publish-events");
    let (_first, l) = listen(
        &key,
        &[
            "--relay",
            &relay,
            "--relay",
            &dead,
            "--stun",
            &stun,
            "--dht-bootstrap",
            &dht.addrs[1],
        ],
    );
    let (mut at_registry, mut in_dht, mut failed) = (None, None, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while at_registry.is_none() || in_dht.is_none() || failed.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = l.lines.recv_timeout(left) else {
            panic!(
                "registry {at_registry:?}, dht {in_dht:?}, failed {failed:?}; stderr: {}",
                l.stderr()
            )
        };
        match (line["event"].as_str(), line["source"].as_str()) {
            (Some("published"), Some("dht")) => in_dht = Some(line),
            (Some("published"), Some(s)) if s == relay => at_registry = Some(line),
            (Some("publish_failed"), Some(s)) if s == dead => failed = Some(line),
            (Some("published" | "publish_failed"), _) => panic!("unexpected: {line}"),
            _ => {}
        }
    }
    let (at_registry, in_dht, failed) = (at_registry.unwrap(), in_dht.unwrap(), failed.unwrap());
    eprintln!("{at_registry}\n{in_dht}\n{failed}");
    // The seq is the time in milliseconds.
    assert!(
        at_registry["seq"].as_u64().unwrap() > 1_700_000_000_000,
        "{at_registry}"
    );
    assert_eq!(
        at_registry["stored"],
        serde_json::Value::Null,
        "{at_registry}"
    );
    assert!(
        in_dht["seq"].as_u64().unwrap() > 1_700_000_000_000,
        "{in_dht}"
    );
    // Three DHT nodes and no other writer: someone stored it.
    assert!(in_dht["stored"].as_u64().unwrap() >= 1, "{in_dht}");
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("connect"), "{failed}");
}

#[test]
fn a_second_node_on_a_key_in_use_fails_at_once_and_says_why() {
    let key = TempFile::new("key-in-use");
    let (first, running) = listen(&key, &[]);
    for command in [
        &["listen"][..],
        &["ping", first["ticket"].as_str().unwrap()],
    ] {
        let start = Instant::now();
        let mut child = burrow()
            .args(command)
            .args(["--bind", "127.0.0.1:0", "--key", key.path()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A node that starts anyway never exits by itself: give it 5 s.
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(5) {
                let _ = child.kill();
                panic!("{command:?} still running after 5 s on a key in use");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let took = start.elapsed();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        let want = format!(
            "error: key file {} is in use by another burrow process (pid {}); use --key FILE \
             to give this node its own key",
            key.path(),
            running.pid()
        );
        assert_eq!(err.trim(), want);
        assert!(took < Duration::from_secs(2), "{command:?} took {took:?}");
    }
    // Once the first is gone, the key is free again.
    drop(running);
    let (again, _l) = listen(&key, &[]);
    assert_eq!(again["node_id"], first["node_id"]);
}

/// `burrow relay` takes its settings from the config file's `[relay]` table, and only the flags
/// that are given override it: the defaults that `--help` shows do not.
#[test]
fn relay_settings_come_from_the_file_then_the_flags_given() {
    let config = TempFile::new("relay-config");
    let relay = |file: &str, args: &[&str]| {
        std::fs::write(&config.0, file).unwrap();
        let out = burrow()
            .args(["--config", config.path(), "relay"])
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        err
    };
    // Refused for the file's value, so the default of --max-clients did not replace it.
    let err = relay("[relay]\nlisten = \"127.0.0.1:0\"\nmax_clients = 0\n", &[]);
    assert!(err.contains("max-clients"), "{err}");
    let err = relay(
        "[relay]\nlisten = \"127.0.0.1:0\"\nmax_clients = 5\n",
        &["--max-clients", "0"],
    );
    assert!(err.contains("max-clients"), "{err}");
    let err = relay("[relay]\nlisten = \"127.0.0.1:0\"\nmax_clientz = 1\n", &[]);
    assert!(err.contains("max_clientz"), "{err}");
    let err = relay("[relay]\nidle_timeout = \"soon\"\n", &[]);
    assert!(err.contains("idle_timeout"), "{err}");
}

/// One node of a mesh for the CLI tests: its state and runtime directories (so its API socket
/// is its own), torn down with it.
struct MeshHome(std::path::PathBuf);

impl MeshHome {
    fn new(label: &str) -> MeshHome {
        let dir =
            std::env::temp_dir().join(format!("burrow-cli-mesh-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("run")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("run"), std::fs::Permissions::from_mode(0o700)).unwrap();
        MeshHome(dir)
    }

    /// `burrow ARGS` as this node: its state dir, its runtime dir.
    fn burrow(&self, args: &[&str]) -> Command {
        let mut cmd = burrow();
        self.env(&mut cmd).args(args);
        cmd
    }

    /// `cmd` in this node's environment.
    fn env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.env("XDG_RUNTIME_DIR", self.0.join("run"))
            .env("XDG_STATE_HOME", self.0.join("state"))
    }

    /// Its daemon's API socket.
    fn socket(&self) -> std::path::PathBuf {
        self.0.join("run/burrow/api.sock")
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.burrow(args).output().unwrap();
        assert!(
            out.status.success(),
            "burrow {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("burrow {args:?}: {e}"))
    }

    /// `burrow up` with `args`, and its first line (the `up` event).
    fn up(&self, stun: &str, args: &[&str]) -> (JsonChild, serde_json::Value) {
        let up = JsonChild::spawn(
            self.burrow(&["up", "--json", "--bind", "127.0.0.1:0", "--stun", stun])
                .args(args),
        );
        let first = up.next();
        assert_eq!(first["event"], "up", "{}", up.stderr());
        (up, first)
    }

    /// `burrow ARGS`, which must fail with exit code 1: its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.burrow(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "burrow {args:?}: {err}");
        err
    }
}

impl Drop for MeshHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `check()` until it gives a value, or panics after `patience`.
fn until<T>(patience: Duration, what: &str, check: impl Fn() -> Option<T>) -> T {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within {patience:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `home`'s members list once it shows each of `names` online (within `patience`).
fn members_online(home: &MeshHome, names: &[&str], patience: Duration) -> serde_json::Value {
    until(patience, "members online", || {
        let v = home.json(&["members", "--json"]);
        let online = |n: &str| {
            v["members"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == n && m["online"] == true)
        };
        names.iter().all(|n| online(n)).then_some(v)
    })
}

#[test]
fn a_mesh_made_joined_listed_and_kicked_through_the_cli() {
    let (relay, stun, _relay) = start_relay();
    let (a, b) = (MeshHome::new("a"), MeshHome::new("b"));
    let made = a.json(&["init", "lab", "--relay", &relay, "--json"]);
    assert_eq!(made["mesh"], "lab");
    let _a_up = a.up(&stun, &[]);
    let invite = a.json(&["invite", "--json"]);
    let token = invite["token"].as_str().unwrap();
    assert_eq!(invite["uses"], 1);

    let joined = b.json(&[
        "join",
        token,
        "--name",
        "b",
        "--json",
        "--bind",
        "127.0.0.1:0",
        "--stun",
        &stun,
    ]);
    assert_eq!(
        (&joined["joined"], &joined["mesh"], &joined["name"]),
        (&true.into(), &"lab".into(), &"b".into())
    );
    // Spent: a second node cannot use it.
    let c = MeshHome::new("c");
    let again = c
        .burrow(&["join", token, "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already used"),
        "{again:?}"
    );

    let _b_up = b.up(&stun, &[]);
    let mine = a.json(&["members", "--json"]);
    let me = mine["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["me"] == true);
    let a_name = me.unwrap()["name"].as_str().unwrap().to_string();
    let seen = members_online(&b, &[&a_name, "b"], Duration::from_secs(10));
    let a_row = seen["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == a_name.as_str())
        .unwrap()
        .clone();
    assert_eq!(a_row["role"], "admin");
    members_online(&a, &["b"], Duration::from_secs(10));

    // Only an admin invites; the kick reaches B.
    let not_admin = b.burrow(&["invite"]).output().unwrap();
    assert_eq!(not_admin.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&not_admin.stderr).contains("only an admin"));
    let kicked = a.json(&["kick", "b", "--json"]);
    assert_eq!(kicked["node_id"], joined["node_id"]);
    until(Duration::from_secs(2), "b gone from the roster", || {
        let v = a.json(&["members", "--json"]);
        (!v["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "b"))
        .then_some(v)
    });
    // A short code, found at the relay and proved by PAKE.
    let invite = a.json(&["invite", "--json"]);
    let code = invite["code"].as_str().unwrap();
    assert!(code.starts_with("MESH-"), "{invite}");
    let by_code = c.json(&[
        "join",
        code,
        "--relay",
        &relay,
        "--name",
        "c",
        "--json",
        "--bind",
        "127.0.0.1:0",
        "--stun",
        &stun,
    ]);
    assert_eq!(
        (&by_code["joined"], &by_code["name"]),
        (&true.into(), &"c".into())
    );
    // Without a daemon, the mesh commands say what to do.
    let none = c.burrow(&["members"]).output().unwrap();
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("burrow up"));
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `home`'s `peers --json` row for `name`, once `check` accepts it (within `patience`).
fn peer_row(
    home: &MeshHome,
    name: &str,
    patience: Duration,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    until(patience, &format!("a peers row for {name}"), || {
        let v = home.json(&["peers", "--json"]);
        let row = v["peers"].as_array()?.iter().find(|p| p["name"] == name)?;
        check(row).then(|| row.clone())
    })
}

/// A GET of `path` on the API's TCP listener at `addr`, with `token` if given: its status line
/// and body.
fn tcp_get(addr: &str, path: &str, token: Option<&str>) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

#[test]
fn a_mesh_daemon_shows_peers_and_status_pings_members_and_stops_on_down() {
    let (relay, stun, _relay) = start_relay();
    let (a, b) = (MeshHome::new("pa"), MeshHome::new("pb"));
    let made = a.json(&["init", "lab", "--relay", &relay, "--json"]);
    let (_a_up, a_first) = a.up(&stun, &["--api-listen", "127.0.0.1:0"]);
    let token = a.json(&["invite", "--json"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    let joined = b.json(&[
        "join",
        &token,
        "--name",
        "b",
        "--json",
        "--bind",
        "127.0.0.1:0",
        "--stun",
        &stun,
    ]);
    let (mut b_up, _) = b.up(&stun, &[]);

    // B as A sees it: every key, online now, with the NAT type B tells of itself.
    let b_nat = until(Duration::from_secs(10), "b's NAT type", || {
        b.json(&["status", "--json"])["nat_type"]
            .as_str()
            .map(String::from)
    });
    let row = peer_row(&a, "b", Duration::from_secs(10), |r| {
        r["online"] == true && r["nat_type"] == b_nat.as_str()
    });
    let keys: std::collections::BTreeSet<&str> = row
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "last_seen",
            "name",
            "nat_type",
            "node_id",
            "online",
            "path",
            "remote_addr",
            "rtt_ms"
        ]
        .into(),
        "{row}"
    );
    assert_eq!(row["node_id"], joined["node_id"]);
    assert!(
        ["direct", "relay"].contains(&row["path"].as_str().unwrap()),
        "{row}"
    );
    assert!(row["remote_addr"].is_string(), "{row}");
    let seen = row["last_seen"].as_u64().unwrap();
    assert!(seen.abs_diff(unix_now()) <= 2, "online: seen now, {row}");
    let peers = a.json(&["peers", "--json"]);
    assert_eq!(peers["mesh"], "lab");
    assert_eq!(
        peers["peers"].as_array().unwrap().len(),
        1,
        "not itself: {peers}"
    );

    // A's status.
    let status = a.json(&["status", "--json"]);
    assert_eq!(status["node_id"], made["node_id"], "{status}");
    let mesh = &status["mesh"];
    assert_eq!(
        (&mesh["name"], &mesh["role"], &mesh["number"]),
        (&"lab".into(), &"admin".into(), &1.into()),
        "{status}"
    );
    assert_eq!(mesh["mesh_id"], made["mesh_id"]);
    assert_eq!(
        (&mesh["members_online"], &mesh["members_total"]),
        (&2.into(), &2.into())
    );
    assert!(status["nat_type"].is_string(), "{status}");
    assert!(!status["addrs"].as_array().unwrap().is_empty(), "{status}");
    assert_eq!(status["relays"][0]["url"], relay.as_str());
    assert_eq!(status["relays"][0]["state"], "connected");
    let text = a.burrow(&["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("mesh:     lab") && text.contains("2/2 online"),
        "{text}"
    );

    // Pings through the daemon, by name: each with its path and round trip.
    let out = a
        .burrow(&["ping", "b", "--count", "3", "--interval", "100ms", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pongs: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(pongs.len(), 3, "{pongs:?}");
    for (i, p) in pongs.iter().enumerate() {
        assert_eq!(
            (&p["seq"], &p["name"]),
            (&(i + 1).into(), &"b".into()),
            "{p}"
        );
        assert_eq!(p["node_id"], joined["node_id"]);
        assert!(
            ["direct", "relay"].contains(&p["path"].as_str().unwrap()),
            "{p}"
        );
        assert!(p["rtt_ms"].as_f64().unwrap() > 0.0, "{p}");
    }
    // On loopback the path goes direct: --until-direct stops at that pong.
    let out = a
        .burrow(&[
            "ping",
            joined["node_id"].as_str().unwrap(),
            "--until-direct",
            "--count",
            "30",
            "--interval",
            "200ms",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let last = text.lines().last().unwrap();
    assert!(
        last.starts_with("pong from b (127.0.0.1:") && last.contains(") via direct in "),
        "{text}"
    );
    let err = a.fails(&["ping", "nobody"]);
    assert!(err.contains("no member nobody in mesh lab"), "{err}");

    // The TCP listener wants its token.
    let tcp = a_first["api_tcp"].as_str().unwrap();
    let (line, body) = tcp_get(tcp, "/v1/status", None);
    assert!(line.contains(" 401 "), "{line}");
    assert!(body.contains("unauthorized"), "{body}");
    let token_file = a_first["api_token_file"].as_str().unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(token_file).unwrap();
    let (line, body) = tcp_get(tcp, "/v1/status", Some(token.trim()));
    assert!(line.contains(" 200 "), "{line}");
    assert!(body.contains(made["node_id"].as_str().unwrap()), "{body}");

    // `down`: B's daemon closes, exits 0 and takes its socket with it; A sees it go.
    let went = unix_now();
    let out = b.burrow(&["down"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!b.socket().exists());
    assert_eq!(
        b_up.events(&["down"], Duration::from_secs(5))[0]["reason"],
        "asked to stop"
    );
    assert!(b_up.exit(Duration::from_secs(5)).success());
    let gone = peer_row(&a, "b", Duration::from_secs(5), |r| r["online"] == false);
    assert_eq!(
        (&gone["path"], &gone["rtt_ms"]),
        (&serde_json::Value::Null, &serde_json::Value::Null),
        "{gone}"
    );
    assert_eq!(gone["nat_type"], b_nat.as_str(), "the last one it told");
    let last_seen = gone["last_seen"].as_u64().unwrap();
    assert!((went..=unix_now()).contains(&last_seen), "{gone}");
    std::thread::sleep(Duration::from_millis(1100));
    let later = peer_row(&a, "b", Duration::ZERO, |_| true);
    assert_eq!(
        later["last_seen"], last_seen,
        "no longer moving with the clock"
    );
    let err = b.fails(&["status"]);
    assert!(
        err.contains(&format!("no burrow daemon at {}", b.socket().display()))
            && err.contains("run `burrow up`"),
        "{err}"
    );
}

#[test]
fn up_exits_cleanly_on_sigterm_and_when_its_parent_dies() {
    let (relay, stun, _relay) = start_relay();
    let home = MeshHome::new("signals");
    home.json(&["init", "solo", "--relay", &relay, "--json"]);

    let (mut up, _) = home.up(&stun, &[]);
    assert!(home.socket().exists());
    let kill = |signal: &str, pid: u32| {
        let ok = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    kill("-TERM", up.pid());
    assert_eq!(
        up.events(&["down"], Duration::from_secs(5))[0]["reason"],
        "terminated"
    );
    assert_eq!(up.exit(Duration::from_secs(5)).code(), Some(0));
    assert!(!home.socket().exists());

    // Started by a shell that then dies: the daemon notices within a second and stops.
    let mut sh = Command::new("sh");
    home.env(&mut sh).env("BURROW_NO_MDNS", "1").args([
        "-c",
        r#""$0" up --json --bind 127.0.0.1:0 --stun "$1" --exit-with-parent & echo $!; wait"#,
        BURROW,
        &stun,
    ]);
    let shell = JsonChild::spawn(&mut sh);
    let daemon = shell.next().as_u64().expect("the daemon's pid") as u32;
    assert_eq!(shell.next()["event"], "up", "{}", shell.stderr());
    kill("-KILL", shell.pid());
    let killed = Instant::now();
    assert_eq!(
        shell.events(&["down"], Duration::from_secs(5))[0]["reason"],
        "its parent exited"
    );
    until(Duration::from_secs(5), "the daemon gone", || {
        // Gone, or a zombie its new parent has yet to reap.
        let stat = std::fs::read_to_string(format!("/proc/{daemon}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .chars()
            .next();
        matches!(state, None | Some('Z' | 'X')).then_some(())
    });
    assert!(
        killed.elapsed() < Duration::from_secs(3),
        "{:?}",
        killed.elapsed()
    );
    assert!(!home.socket().exists());

    let err = home.fails(&["down"]);
    assert!(
        err.contains("no burrow daemon at") && err.contains("run `burrow up`"),
        "{err}"
    );
    // Without --namespace, peers asks the daemon; lookup flags need a namespace.
    let err = home.fails(&["peers", "--registry", &relay]);
    assert!(err.contains("--namespace"), "{err}");

    // A ticket is still pinged over a connection of its own.
    let key = TempFile::new("ping-ticket");
    let (first, _listener) = listen(&key, &["--relay", &relay, "--no-publish"]);
    let out = burrow()
        .args([
            "ping",
            first["ticket"].as_str().unwrap(),
            "--count",
            "2",
            "--interval",
            "100ms",
            "--json",
        ])
        .args(["--bind", "127.0.0.1:0", "--stun", &stun])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["node_id"], first["node_id"]);
    assert!(lines[1]["rtt_ms"].as_f64().unwrap() > 0.0, "{lines:?}");
}

/// `burrow relay --turn-secret` serves TURN on the STUN port: coturn's client allocates, binds
/// channels and gets every packet back from coturn's peer. (tests/turn.rs in burrow-relay
/// runs the whole script, against coturn too.)
#[test]
fn relay_serves_turn_with_its_flags() {
    let no_stun = burrow()
        .args(["relay", "--listen", "127.0.0.1:0", "--turn-secret", "s"])
        .output()
        .unwrap();
    assert_eq!(no_stun.status.code(), Some(1));
    let err = String::from_utf8_lossy(&no_stun.stderr);
    assert!(
        err.trim().lines().count() == 1 && err.contains("--stun"),
        "{err}"
    );

    let have = ["turnutils_uclient", "turnutils_peer"]
        .iter()
        .all(|p| Command::new(p).arg("-h").output().is_ok());
    if !have {
        assert!(std::env::var_os("CI").is_none(), "CI must have coturn");
        eprintln!("SKIPPED: coturn's turnutils are not installed");
        return;
    }
    let port = free_port_pair();
    let mut child = burrow()
        .args([
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--no-registry",
            "--no-alt-port",
        ])
        .args(["--stun", &format!("127.0.0.1:{port}")])
        .args([
            "--turn-secret",
            "s3cret",
            "--turn-allow-peer",
            "127.0.0.1/32",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _relay = Running(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let said = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("TURN announced");
        if line.starts_with("TURN on") {
            break line;
        }
    };
    assert_eq!(
        said,
        format!("TURN on 127.0.0.1:{port} (UDP), relayed addresses on 127.0.0.1")
    );
    let peer_port = free_port_pair();
    let _peer = Running(
        Command::new("turnutils_peer")
            .args(["-L", "127.0.0.1", "-p", &peer_port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new("timeout")
        .args([
            "60",
            "turnutils_uclient",
            "-W",
            "s3cret",
            "-u",
            "alice",
            "-n",
            "20",
        ])
        .args([
            "-p",
            &port.to_string(),
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port.to_string(),
        ])
        .arg("127.0.0.1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("tot_send_msgs=40, tot_recv_msgs=40")
            && text.contains("Total lost packets 0 "),
        "{text}"
    );
}

#[test]
fn a_daemon_in_no_mesh_joins_one_through_its_api_and_runs_it() {
    let (relay, stun, _relay) = start_relay();
    let (a, b) = (MeshHome::new("lobby-a"), MeshHome::new("lobby-b"));
    a.json(&["init", "lab", "--name", "a", "--relay", &relay, "--json"]);
    let _a_up = a.up(&stun, &[]);
    let token = a.json(&["invite", "--json"])["token"]
        .as_str()
        .unwrap()
        .to_owned();

    // B has no mesh: its daemon waits, and answers for its key alone.
    let b_up = JsonChild::spawn(&mut b.burrow(&[
        "up",
        "--json",
        "--bind",
        "127.0.0.1:0",
        "--stun",
        &stun,
    ]));
    let waiting = b_up.next();
    assert_eq!(waiting["event"], "waiting", "{}", b_up.stderr());
    let status = b.json(&["status", "--json"]);
    assert!(status["mesh"].is_null(), "{status}");
    assert!(b.json(&["peers", "--json"])["peers"]
        .as_array()
        .unwrap()
        .is_empty());

    let api = burrow::api::ApiClient::unix(b.0.join("run/burrow/api.sock"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let post =
        |body: serde_json::Value| rt.block_on(api.post::<_, serde_json::Value>("/v1/join", &body));
    // A bad token is refused, and the daemon keeps waiting.
    let bad = post(serde_json::json!({"invite": "burrowinviteaaaa"})).unwrap_err();
    assert_eq!(
        bad.code(),
        Some(burrow::api::ErrorCode::JoinRefused),
        "{bad}"
    );
    let joined = post(serde_json::json!({"invite": token, "name": "b"})).expect("joins");
    assert_eq!(
        (&joined["joined"], &joined["mesh"], &joined["name"]),
        (&true.into(), &"lab".into(), &"b".into())
    );
    let seen = b_up.events(&["joined", "up"], Duration::from_secs(10));
    let (joined_event, up) = (&seen[0], &seen[1]);
    assert_eq!(joined_event["joined"]["name"], "b");
    assert_eq!(up["mesh"], "lab");
    members_online(&a, &["b"], Duration::from_secs(10));
    // A member joins no other mesh.
    let again = rt
        .block_on(
            burrow::api::ApiClient::unix(b.0.join("run/burrow/api.sock"))
                .post::<_, serde_json::Value>("/v1/join", &serde_json::json!({"invite": token})),
        )
        .unwrap_err();
    assert_eq!(
        again.code(),
        Some(burrow::api::ErrorCode::AlreadyMember),
        "{again}"
    );
}
