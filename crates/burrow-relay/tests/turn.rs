//! TURN against coturn's own clients on loopback: `turnutils_peer` echoes, and
//! `turnutils_uclient` allocates, binds channels (or sends indications) and counts what comes
//! back. The same script runs against coturn's `turnserver` first, so a broken script fails
//! there too, then against burrow's relay with the same settings. uclient exits 0 even when
//! packets are lost, so the script reads its counters.

use std::net::{TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use burrow_proto::stun::{Class, Message, MessageWriter, Method, TransactionId};
use burrow_proto::turn::ephemeral_password;
use burrow_relay::{PeerRange, RelayConfig, RelayServer, RelaySettings};

const SECRET: &str = "north-wind";
/// Messages each uclient session sends (it runs an RTP and an RTCP session).
const MESSAGES: u32 = 40;

/// Whether coturn's programs are installed; CI installs coturn, so there a missing one fails.
fn have_coturn() -> bool {
    let all = ["turnserver", "turnutils_uclient", "turnutils_peer"]
        .iter()
        .all(|p| Command::new(p).arg("-h").output().is_ok());
    if !all {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have coturn (turnserver, turnutils_uclient, turnutils_peer)"
        );
        eprintln!("SKIPPED: coturn's turnserver and turnutils are not installed");
    }
    all
}

/// A child process, killed (by its own PID) and reaped when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A UDP port `p` with `p + 1` free too (turnutils_peer listens on both; coturn may use
/// the next for RFC 5780), and TCP `p` free (coturn listens on TCP as well).
fn free_port_pair() -> u16 {
    loop {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p >= 65_000 {
            continue;
        }
        let free = UdpSocket::bind(("127.0.0.1", p + 1)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free {
            return p;
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Waits until a STUN Binding to `port` is answered.
fn wait_for_stun(port: u16) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut req = Vec::new();
    MessageWriter::new(
        &mut req,
        Class::Request,
        Method::BINDING,
        TransactionId([3; 12]),
    )
    .finish();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        socket.send_to(&req, ("127.0.0.1", port)).unwrap();
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            if Message::parse(&buf[..n]).is_ok() {
                return;
            }
        }
    }
    panic!("nothing answers STUN on port {port}");
}

fn start_peer() -> (Proc, u16) {
    let port = free_port_pair();
    let child = Command::new("turnutils_peer")
        .args(["-L", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // It prints nothing when ready; give it a moment to bind.
    std::thread::sleep(Duration::from_millis(300));
    (Proc(child), port)
}

/// A TURN server under test: coturn's (kept for its drop) or burrow's.
enum Server {
    Coturn(#[allow(dead_code, reason = "held to be killed on drop")] Proc),
    Burrow(RelayServer),
}

/// coturn with ephemeral credentials of [`SECRET`], relaying on loopback; loopback peers
/// allowed only if `allow_loopback` (it denies them by default, as burrow does).
fn start_coturn(dir: &std::path::Path, allow_loopback: bool) -> (Server, u16) {
    let port = free_port_pair();
    let mut cmd = Command::new("turnserver");
    cmd.args([
        "-n",
        "--use-auth-secret",
        "--static-auth-secret",
        SECRET,
        "--realm",
        "burrow",
        "--no-tls",
        "--no-dtls",
        "--no-cli",
        "--listening-ip",
        "127.0.0.1",
        "--relay-ip",
        "127.0.0.1",
        "--listening-port",
        &port.to_string(),
        "--simple-log",
        "--log-file",
        "stdout",
    ])
    .arg("--db")
    .arg(dir.join(format!("turndb-{port}")))
    .arg("--pidfile")
    .arg(dir.join(format!("turnserver-{port}.pid")))
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if allow_loopback {
        cmd.arg("--allow-loopback-peers");
    }
    let proc = Proc(cmd.spawn().unwrap());
    wait_for_stun(port);
    (Server::Coturn(proc), port)
}

/// burrow's relay, set up as `burrow relay --stun 127.0.0.1:0 --turn-secret SECRET` (with
/// `--turn-allow-peer 127.0.0.1` if `allow_loopback`) would be.
fn start_burrow(rt: &tokio::runtime::Runtime, allow_loopback: bool) -> (Server, u16) {
    let settings = RelaySettings {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        stun: Some("127.0.0.1:0".parse().unwrap()),
        no_alt_port: true,
        no_registry: true,
        turn_secret: vec![SECRET.into()],
        turn_allow_peer: if allow_loopback {
            vec!["127.0.0.1".parse::<PeerRange>().unwrap()]
        } else {
            Vec::new()
        },
        ..RelaySettings::default()
    };
    let config = RelayConfig::from_settings(&settings).unwrap();
    let server = rt.block_on(RelayServer::start(config)).unwrap();
    let port = server.stun_addrs()[0].port();
    (Server::Burrow(server), port)
}

/// What a uclient run printed.
struct Run {
    ok: bool,
    text: String,
}

/// Its last totals: messages sent, received, and the lost packets it reported.
#[derive(Debug, PartialEq, Eq)]
struct Counters {
    sent: u64,
    received: u64,
    lost: u64,
}

fn number_after(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

impl Run {
    /// From the closing lines: `start_mclient: tot_send_msgs=N, tot_recv_msgs=M` (the one
    /// without `msz`) and `Total lost packets L`.
    fn counters(&self) -> Option<Counters> {
        let totals = self
            .text
            .lines()
            .rfind(|l| l.contains("tot_send_msgs=") && !l.contains("msz="))?;
        let lost = self
            .text
            .lines()
            .rfind(|l| l.contains("Total lost packets"))?;
        Some(Counters {
            sent: number_after(totals, "tot_send_msgs=")?,
            received: number_after(totals, "tot_recv_msgs=")?,
            lost: number_after(lost, "Total lost packets ")?,
        })
    }
}

fn uclient(port: u16, peer_port: u16, args: &[&str]) -> Run {
    let mut cmd = Command::new("timeout");
    cmd.args(["60", "turnutils_uclient"])
        .args(args)
        .args(["-p", &port.to_string(), "-e", "127.0.0.1"])
        .args(["-r", &peer_port.to_string(), "-n", &MESSAGES.to_string()])
        .arg("127.0.0.1");
    let out = cmd.output().unwrap();
    Run {
        ok: out.status.success(),
        text: String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr),
    }
}

/// How uclient talks to the server in the runs that carry data: channels over UDP (its
/// default), Send indications (`-s`), and both over TCP (`-t`).
const DATA_MODES: [&[&str]; 4] = [&[], &["-s"], &["-t"], &["-t", "-s"]];

/// The script: traffic in every mode of [`DATA_MODES`], every packet back; a wrong secret, an
/// expired username and (on `closed`, which allows no loopback peer) a forbidden peer refused.
fn script(name: &str, open: u16, closed: u16, peer: u16) {
    let user = ["-W", SECRET, "-u", "alice"];
    for mode in DATA_MODES {
        let run = uclient(open, peer, &[&user[..], mode].concat());
        let counters = run.counters();
        // An RTP and an RTCP session, each sending MESSAGES.
        let expected = Counters {
            sent: 2 * u64::from(MESSAGES),
            received: 2 * u64::from(MESSAGES),
            lost: 0,
        };
        assert_eq!(
            counters.as_ref(),
            Some(&expected),
            "{name} {mode:?}:\n{}",
            run.text
        );
        eprintln!("{name} {mode:?}: {counters:?}");
    }

    let run = uclient(open, peer, &["-W", "not-the-secret", "-u", "alice"]);
    assert!(
        !run.ok && run.text.contains("Cannot complete Allocation") && run.counters().is_none(),
        "{name}: a wrong secret must be refused:\n{}",
        run.text
    );
    let expired = format!("{}:alice", unix_now() - 60);
    let password = ephemeral_password(SECRET.as_bytes(), &expired);
    let run = uclient(open, peer, &["-u", &expired, "-w", &password]);
    assert!(
        !run.ok && run.text.contains("Cannot complete Allocation"),
        "{name}: an expired username must be refused:\n{}",
        run.text
    );
    // The same credential before its expiry works, so the refusal is the expiry's.
    let fresh = format!("{}:alice", unix_now() + 600);
    let password = ephemeral_password(SECRET.as_bytes(), &fresh);
    let run = uclient(open, peer, &["-u", &fresh, "-w", &password]);
    assert_eq!(
        run.counters().map(|c| c.lost),
        Some(0),
        "{name}:\n{}",
        run.text
    );

    for mode in DATA_MODES {
        let run = uclient(closed, peer, &[&user[..], mode].concat());
        assert!(
            !run.ok && run.text.contains("error 403"),
            "{name} {mode:?}: a loopback peer must be forbidden:\n{}",
            run.text
        );
    }
}

/// `GET /metrics` of the relay.
fn metrics(server: &RelayServer) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

fn metric(text: &str, reason: &str) -> u64 {
    let key = format!("burrow_relay_turn_events_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(key.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in\n{text}"))
}

#[test]
fn coturn_clients_pass_against_coturn_then_burrow() {
    if !have_coturn() {
        return;
    }
    let dir: PathBuf = std::env::temp_dir().join(format!("burrow-turn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_peer, peer) = start_peer();

    let (_coturn_open, open) = start_coturn(&dir, true);
    let (_coturn_closed, closed) = start_coturn(&dir, false);
    script("coturn", open, closed, peer);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (burrow_open, open) = start_burrow(&rt, true);
    let (burrow_closed, closed) = start_burrow(&rt, false);
    script("burrow", open, closed, peer);

    let (Server::Burrow(open), Server::Burrow(closed)) = (burrow_open, burrow_closed) else {
        unreachable!()
    };
    // What the relay counted agrees with what the clients saw, once it has read the last
    // messages the clients sent before they exited. Each data run makes a probe, an RTP and
    // an RTCP allocation and deletes the last two with a Refresh; over TCP the probe goes
    // with its connection.
    let (udp_runs, tcp_runs) = (3, 2);
    let data_runs = udp_runs + tcp_runs;
    let deleted = 2 * udp_runs + 3 * tcp_runs;
    let deadline = Instant::now() + Duration::from_secs(5);
    while open.turn_status().unwrap().stats.allocations_deleted < deleted
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = open.turn_status().unwrap();
    let s = &status.stats;
    eprintln!("burrow: {status:?}");
    let packets = data_runs * 2 * u64::from(MESSAGES);
    assert_eq!(
        (s.to_peer_packets, s.to_client_packets),
        (packets, packets),
        "{s:?}"
    );
    assert!(s.channels_bound >= 2 && s.permissions_created >= 2, "{s:?}");
    assert_eq!(s.allocations_created, 3 * data_runs, "{s:?}");
    assert_eq!(s.allocations_deleted, deleted, "{s:?}");
    assert_eq!(
        status.allocations, udp_runs as usize,
        "UDP probes are left to expire"
    );
    assert!(s.auth_failures >= 1 && s.expired_credentials >= 1, "{s:?}");
    assert_eq!(s.forbidden_peers, 0);
    assert_eq!((status.queue_full, status.send_failures), (0, 0));
    let text = metrics(&open);
    assert_eq!(metric(&text, "packet_to_peer"), s.to_peer_packets);
    assert_eq!(metric(&text, "expired_credential"), s.expired_credentials);
    let closed_status = closed.turn_status().unwrap();
    assert_eq!(closed_status.stats.forbidden_peers, 4, "{closed_status:?}");
    assert_eq!(metric(&metrics(&closed), "forbidden_peer"), 4);
    assert_eq!(closed_status.stats.to_peer_packets, 0);

    rt.block_on(async {
        open.shutdown().await;
        closed.shutdown().await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}
