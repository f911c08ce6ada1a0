//! Browser peers in the NAT lab (issue 16): headless Chromium on lab hosts, burrow.js as
//! `burrow relay` serves it, the relay's STUN service as the pages' ICE server.
//!
//! - Two pages behind two port-restricted-cone NATs find each other by capability (a third key
//!   without it is not listed), dial, and carry 1 MiB each way with a SHA-256 check: the first
//!   half through the relay from the first message, the rest once the WebRTC path is up; the
//!   candidate pair getStats selected is the peer's NAT's public address, not a relay.
//! - Two pages behind symmetric NATs: no direct path exists, so the connection stays on the
//!   relay, and the same transfer arrives whole.
//! - With the `webrtc` feature: a page and `burrow listen --webrtc` (native, str0m) go direct
//!   on the UDP port a native QUIC peer uses at the same time; and a native node dials a page
//!   (`Endpoint::dial_page`, in-process on a lab host) and goes direct.
//!
//! Needs root and Chromium. Without them the test skips and says so, except under CI (CI=true),
//! where a skip is a failure.

use std::net::Ipv4Addr;
use std::thread;

use burrow_lab::burrow::{relay_url, RELAY_IPS};
use burrow_lab::chromium::chromium_present;
use burrow_lab::{Lab, NatKind, RouterVariant};
use serde_json::Value;

const BURROW: &str = env!("CARGO_BIN_EXE_burrow");

/// One side of a pair; `__ROLE__` ("dialler" or "listener"), `__NS__` (the pair's namespace),
/// `__RELAY_URL__` and `__SERVER__` are filled in. Or `__ROLE__` "to-native": the page dials
/// `__NATIVE__` (an echoing `burrow listen --webrtc`) and sends it the MiB the same way. The dialler publishes, finds the listener by
/// capability, dials it and sends half a MiB at once, the other half once the path is direct
/// (or after 3 s if it never is), then the SHA-256 of it all; the listener checks it and sends
/// its own MiB back the same way. Each page's verdict is `BURROW-LAB-OK` and a JSON report.
const PAGE: &str = r#"<!doctype html>
<html>
<head><meta charset="utf-8"><title>burrow.js in the lab</title></head>
<body>
<pre id="result">BURROW-LAB-PENDING</pre>
<img src="__SERVER__/hold" loading="eager" width="1" height="1" alt="">
<script type="module">
import * as burrow from "__RELAY_URL__/burrow.js";
const RELAY = "__RELAY_URL__", ROLE = "__ROLE__", NS = "__NS__", NATIVE = "__NATIVE__";
const MIB = 1024 * 1024, CHUNK = 60 * 1024;

function check(ok, what) { if (!ok) throw new Error(what); }
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(f, what, ms) {
  const end = Date.now() + ms;
  while (!(await f())) {
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(20);
  }
}
const hex = async (bytes) => [...new Uint8Array(await crypto.subtle.digest("SHA-256", bytes))]
  .map((b) => b.toString(16).padStart(2, "0")).join("");

/** Sends a MiB of random bytes: half now, half once direct (or after 3 s), then its hash. */
async function sendMib(conn) {
  const data = new Uint8Array(MIB);
  for (let at = 0; at < MIB; at += 65536) crypto.getRandomValues(data.subarray(at, at + 65536));
  const send = (from, to) => { for (let at = from; at < to; at += CHUNK) conn.send(data.subarray(at, Math.min(at + CHUNK, to))); };
  send(0, MIB / 2);
  const t = Date.now();
  while (conn.path !== "direct" && Date.now() - t < 3000) await sleep(20);
  send(MIB / 2, MIB);
  conn.send(`sha256 ${await hex(data)}`);
  await until(() => conn.pending === 0, "the MiB acknowledged", 20000);
}

/** Takes the connection's messages: a MiB and its hash (`received` resolves to whether they
 * match), and the short texts "hello" (`hello`) and "done" (`done`). */
function receive(conn) {
  const parts = [], got = {};
  const promise = (name) => new Promise((r) => { got[name] = r; });
  const out = { received: promise("received"), hello: promise("hello"), done: promise("done") };
  conn.onmessage = async (m) => {
    if (m.length >= 100) return void parts.push(m);
    const text = new TextDecoder().decode(m);
    if (text === "hello" || text === "done") return got[text]();
    if (!text.startsWith("sha256 ")) return;
    const all = new Uint8Array(await new Blob(parts).arrayBuffer());
    got.received(all.length === MIB && (await hex(all)) === text.slice(7));
  };
  return out;
}

async function main() {
  const t0 = performance.now();
  const me = await burrow.connect({ relay: RELAY, keyName: ROLE });
  const report = { role: ROLE, iceServers: me.iceServers };
  let conn, helloMs = null, directMs = null, dialledAt;
  if (ROLE === "echo") {
    // A native node dials this page: everything it sends comes back, until "stop".
    await me.publish({ namespaces: [NS], capabilities: ["echo"], name: "echo" });
    conn = await new Promise((r) => { me.onconnection = r; });
    dialledAt = performance.now();
    conn.onpathchange = (path) => { if (path === "direct" && directMs === null) directMs = performance.now() - dialledAt; };
    await new Promise((r) => {
      conn.onmessage = (m, info) => {
        if (m.length === 4 && new TextDecoder().decode(m) === "stop") r();
        else conn.send(m, info);
      };
    });
    Object.assign(report, {
      path: conn.path, stats: conn.stats(), pair: await conn.candidatePair(),
      directMs: directMs === null ? null : Math.round(directMs), signals: me.signalStats(),
    });
    me.close();
    return JSON.stringify(report);
  }
  if (ROLE === "to-native") {
    // `burrow listen --webrtc` echoes: the MiB comes back.
    dialledAt = performance.now();
    conn = await me.dial(NATIVE);
    const answeredMs = performance.now() - dialledAt;
    conn.onpathchange = (path) => { if (path === "direct" && directMs === null) directMs = performance.now() - dialledAt; };
    const { received } = receive(conn);
    await sendMib(conn);
    check(await received, "the echoed MiB did not arrive whole");
    Object.assign(report, {
      path: conn.path, stats: conn.stats(), pair: await conn.candidatePair(), answeredMs: Math.round(answeredMs),
      directMs: directMs === null ? null : Math.round(directMs), totalMs: Math.round(performance.now() - t0),
    });
    conn.close();
    me.close();
    return JSON.stringify(report);
  }
  if (ROLE === "listener") {
    // A second key without the capability, listed in the same namespace.
    const other = await burrow.connect({ relay: RELAY, keyName: "other" });
    await other.publish({ namespaces: [NS], capabilities: ["chat"], name: "other" });
    const came = new Promise((r) => { me.onconnection = r; });
    await me.publish({ namespaces: [NS], capabilities: ["gpu", "chat"], name: "listener" });
    conn = await came;
    conn.send("hello");
    dialledAt = performance.now();
  } else {
    await me.publish({ namespaces: [NS], capabilities: ["gpu"], name: "dialler" });
    let all = [];
    await until(async () => (all = await me.discover(NS)).length === 3, "three records listed", 20000);
    const found = (await me.discover(NS, { require: ["gpu"], online: true })).filter((p) => p.nodeId !== me.nodeId);
    check(found.length === 1 && found[0].name === "listener",
      `with gpu: ${JSON.stringify(found.map((p) => p.name))} of ${JSON.stringify(all.map((p) => p.name))}`);
    report.listed = all.map((p) => p.name).sort();
    report.found = found.map((p) => p.name);
    dialledAt = performance.now();
    conn = await me.dial(found[0].nodeId);
  }
  conn.onpathchange = (path) => { if (path === "direct" && directMs === null) directMs = performance.now() - dialledAt; };
  const { received, hello, done } = receive(conn);
  if (ROLE === "dialler") {
    // From dial() to the listener's first message.
    await hello;
    helloMs = performance.now() - dialledAt;
    await sendMib(conn);
    check(await received, "the listener's MiB did not arrive whole");
  } else {
    check(await received, "the dialler's MiB did not arrive whole");
    await sendMib(conn);
  }
  Object.assign(report, {
    path: conn.path, stats: conn.stats(), pair: await conn.candidatePair(),
    helloMs: helloMs === null ? null : Math.round(helloMs), directMs: directMs === null ? null : Math.round(directMs),
    totalMs: Math.round(performance.now() - t0), signals: me.signalStats(),
  });
  // Each end closes only once the other has taken its report, and said so.
  conn.send("done");
  await done;
  await until(() => conn.pending === 0, "the last message acknowledged", 5000);
  conn.close();
  me.close();
  return JSON.stringify(report);
}

main().then(
  (report) => `BURROW-LAB-OK ${report}`,
  (err) => `BURROW-LAB-FAIL: ${err && err.message || err}`,
).then((verdict) => {
  document.getElementById("result").textContent = verdict;
  return fetch(`__SERVER__/release`, { mode: "no-cors", cache: "no-store" });
});
</script>
</body>
</html>
"#;

/// A lab with the relay (its STUN co-hosted) and one firewalled home per `(name, kind)`, and
/// the relay started.
fn browser_lab(homes: &[(&str, NatKind)]) -> (Lab, burrow_lab::Spawned) {
    let mut b = Lab::builder().server("relay", &RELAY_IPS);
    for (name, kind) in homes {
        b = b.home(name, *kind, RouterVariant::Firewalled);
    }
    let lab = b.build().expect("lab builds");
    let relay = lab.spawn_relay(BURROW, "relay").expect("relay starts");
    (lab, relay)
}

/// The page for `role`, in namespace `ns`, dialling `native` if its role is "to-native".
fn page(role: &str, ns: &str, native: &str) -> String {
    PAGE.replace("__RELAY_URL__", &relay_url())
        .replace("__ROLE__", role)
        .replace("__NS__", ns)
        .replace("__NATIVE__", native)
}

/// The page's report from its verdict, which must be OK.
fn report(run: burrow_lab::chromium::Run) -> Value {
    run.expect_ok("BURROW-LAB-OK");
    let json = run.verdict.trim_start_matches("BURROW-LAB-OK ");
    serde_json::from_str::<Value>(&html_unescape(json)).expect("the page's report is JSON")
}

/// Runs the pair's two pages side by side (listener behind `listener_home`, dialler behind
/// `dialler_home`), each to an OK verdict; returns their reports, dialler's first.
fn run_pair(lab: &Lab, ns: &str, dialler_home: &str, listener_home: &str) -> (Value, Value) {
    let page = |role: &str| page(role, ns, "");
    let (dialler, listener) = thread::scope(|s| {
        let listener =
            s.spawn(|| lab.run_page(listener_home, "relay", RELAY_IPS[0], &page("listener")));
        let dialler =
            s.spawn(|| lab.run_page(dialler_home, "relay", RELAY_IPS[0], &page("dialler")));
        (
            dialler.join().expect("dialler thread"),
            listener.join().expect("listener thread"),
        )
    });
    let d = report(dialler.expect("dialler's chromium"));
    let l = report(listener.expect("listener's chromium"));
    eprintln!("{ns} dialler: {d}\n{ns} listener: {l}");
    (d, l)
}

/// The dumped DOM escapes `&`, `<`, `>` and `"` in text.
fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// What both ends of a pair must show whatever the path: the pages' ICE server is the relay's
/// STUN service, and every message went through.
fn check_common(report: &Value) {
    assert_eq!(
        report["iceServers"][0]["urls"][0],
        format!("stun:{}:3478", RELAY_IPS[0]),
        "the relay's /ice: {report}"
    );
    assert_eq!(report["stats"]["pending"], 0, "{report}");
    assert!(
        report["stats"]["bytesReceived"].as_u64() > Some(1024 * 1024),
        "{report}"
    );
}

#[test]
fn pages_find_each_other_by_capability_and_go_direct_where_the_nats_allow() {
    if !Lab::tests_allowed() || !chromium_present() {
        return;
    }
    let (lab, _relay) = browser_lab(&[
        ("prc-a", NatKind::PortRestrictedCone),
        ("prc-b", NatKind::PortRestrictedCone),
        ("sym-a", NatKind::Symmetric),
        ("sym-b", NatKind::Symmetric),
    ]);

    let ((d, l), (sd, sl)) = thread::scope(|s| {
        let easy = s.spawn(|| run_pair(&lab, "easy", "prc-a", "prc-b"));
        let hard = s.spawn(|| run_pair(&lab, "hard", "sym-a", "sym-b"));
        (
            easy.join().expect("easy pair"),
            hard.join().expect("hard pair"),
        )
    });

    // Port-restricted cones: found by capability, then direct, each end's selected pair
    // pointing at the other's NAT.
    assert_eq!(
        d["listed"],
        serde_json::json!(["dialler", "listener", "other"]),
        "{d}"
    );
    assert_eq!(d["found"], serde_json::json!(["listener"]), "{d}");
    for (report, peer_home) in [(&d, "prc-b"), (&l, "prc-a")] {
        check_common(report);
        assert_eq!(report["path"], "direct", "{report}");
        let remote = &report["pair"]["remote"];
        let peer_nat: Ipv4Addr = lab.public_ip(peer_home);
        assert_eq!(remote["address"], peer_nat.to_string(), "{report}");
        assert!(
            ["srflx", "prflx"].contains(&remote["type"].as_str().unwrap_or("")),
            "the remote candidate is the peer's NAT mapping: {report}"
        );
        assert_ne!(report["pair"]["local"]["type"], "relay", "{report}");
        assert!(
            report["stats"]["sentDirect"].as_u64() >= Some(8),
            "at least the second half went directly: {report}"
        );
    }
    // Symmetric NATs: relayed from start to end, nothing lost.
    for report in [&sd, &sl] {
        check_common(report);
        assert_eq!(report["path"], "relay", "{report}");
        assert_eq!(report["stats"]["sentDirect"], 0, "{report}");
    }
}

/// Chromium behind one port-restricted NAT dials `burrow listen --webrtc` behind another: the
/// MiB goes there and back (echoed) and the connection ends direct on the listener's UDP port,
/// while a native QUIC peer behind a third NAT sends 20 MB to the same listener on the same
/// port, also direct.
#[cfg(feature = "webrtc")]
#[test]
fn a_page_reaches_a_native_node_directly_beside_a_quic_peer_on_the_same_port() {
    if !Lab::tests_allowed() || !chromium_present() {
        return;
    }
    let (lab, _relay) = browser_lab(&[
        ("page", NatKind::PortRestrictedCone),
        ("native", NatKind::PortRestrictedCone),
        ("quic", NatKind::PortRestrictedCone),
    ]);
    let (listener, hello) = lab
        .spawn_listener(BURROW, "native", &["--webrtc", "--no-publish"])
        .expect("listener starts");
    let native = hello["node_id"].as_str().expect("node id").to_string();
    let ticket = hello["ticket"].as_str().expect("ticket").to_string();

    let (page_run, quic) = thread::scope(|s| {
        let page_run = s.spawn(|| {
            lab.run_page(
                "page",
                "relay",
                RELAY_IPS[0],
                &page("to-native", "native", &native),
            )
        });
        let quic = s.spawn(|| {
            let mut cmd = lab.command(lab.host_ns("quic"), BURROW);
            cmd.args(["connect", &ticket, "--json", "--bytes", "20000000"]);
            burrow_lab::output_with_timeout(cmd, std::time::Duration::from_secs(60))
        });
        (
            page_run.join().expect("page thread"),
            quic.join().expect("quic thread"),
        )
    });
    let r = report(page_run.expect("the page's chromium"));
    eprintln!("page to native: {r}");
    let quic = quic.expect("burrow connect runs");
    assert!(
        quic.status.success(),
        "{}",
        String::from_utf8_lossy(&quic.stderr)
    );
    let q: Value = serde_json::from_slice(&quic.stdout).expect("connect prints JSON");
    eprintln!("quic peer: {q}");

    check_common(&r);
    assert_eq!(r["path"], "direct", "{r}");
    assert!(r["stats"]["sentDirect"].as_u64() >= Some(8), "{r}");
    let remote = &r["pair"]["remote"];
    let native_nat = lab.public_ip("native").to_string();
    assert_eq!(remote["address"], native_nat, "{r}");
    assert_eq!(q["connected"], true, "{q}");
    assert_eq!(q["bytes"], 20_000_000, "{q}");
    assert_eq!(q["path"], "direct", "{q}");
    // The same UDP port of the listener's NAT (an endpoint-independent mapping of one socket)
    // carried both.
    assert_eq!(
        q["remote_addr"],
        format!("{native_nat}:{}", remote["port"]),
        "QUIC {q} and WebRTC {r} on the same port"
    );
    let out = listener.stdout();
    assert!(out.contains("\"page_connected\""), "{out}");
    assert!(out.contains("\"path\":\"direct\""), "{out}");
}

/// `burrow::Endpoint::dial_page` from a native node behind one port-restricted NAT to a page
/// behind another (found in the relay's registry), in-process on the lab host: 1 MiB echoed
/// by the page, half of it sent at once (through the relay), half once direct.
#[cfg(feature = "webrtc")]
#[test]
fn a_native_node_dials_a_page_and_goes_direct() {
    use std::time::Duration;

    use burrow::endpoint::{Endpoint, EndpointOptions};
    use burrow::pages::Path;
    use burrow::registry_client::RegistryClient;
    use burrow::SecretKey;

    if !Lab::tests_allowed() || !chromium_present() {
        return;
    }
    let (lab, _relay) = browser_lab(&[
        ("page", NatKind::PortRestrictedCone),
        ("native", NatKind::PortRestrictedCone),
    ]);

    let native = || -> anyhow::Result<(Path, usize)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let relay: burrow::relay_client::RelayUrl = relay_url().parse()?;
            let ep = Endpoint::bind(
                SecretKey::from_bytes(rand::random()),
                EndpointOptions {
                    relays: vec![relay.clone()],
                    stun_servers: vec![(RELAY_IPS[0], 3478).into()],
                    bind_v6: None,
                    alpns: vec![b"burrow-lab-browser/1".to_vec()],
                    webrtc: true,
                    ..Default::default()
                },
            )
            .await?;
            ep.relay()
                .expect("relay")
                .wait_connected(Duration::from_secs(10))
                .await?;
            ep.wait_public_addr(Duration::from_secs(2)).await;
            let registry = RegistryClient::new(vec![relay], Default::default());
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let page = loop {
                if let Ok(p) = registry.list("dial-me", None, 10).await {
                    if let Some(r) = p.records.first() {
                        break r.node_id();
                    }
                }
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "the page never published"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let mut conn = ep.dial_page(page).await?;
            let data: Vec<u8> = (0..1024 * 1024).map(|_| rand::random::<u8>()).collect();
            let chunks: Vec<&[u8]> = data.chunks(60 * 1024).collect();
            let half = chunks.len() / 2;
            for c in &chunks[..half] {
                conn.send(bytes::Bytes::copy_from_slice(c), true).await?;
            }
            let mut paths = conn.path_updates();
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                paths.wait_for(|p| *p == Path::Direct),
            )
            .await;
            for c in &chunks[half..] {
                conn.send(bytes::Bytes::copy_from_slice(c), true).await?;
            }
            let mut echoed = Vec::new();
            while echoed.len() < data.len() {
                let m = tokio::time::timeout(Duration::from_secs(20), conn.recv())
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("the connection ended"))?;
                echoed.extend_from_slice(&m.data);
            }
            anyhow::ensure!(echoed == data, "the echoed MiB differs");
            let path = conn.path();
            conn.send(bytes::Bytes::from_static(b"stop"), true).await?;
            // Until the page has it (the stop is acknowledged), then close.
            tokio::time::sleep(Duration::from_millis(500)).await;
            drop(conn);
            ep.close().await;
            Ok((path, chunks.len()))
        })
    };
    let (page_run, native) = thread::scope(|s| {
        let page_run =
            s.spawn(|| lab.run_page("page", "relay", RELAY_IPS[0], &page("echo", "dial-me", "")));
        let native = s.spawn(|| lab.in_ns(lab.host_ns("native"), native));
        (
            page_run.join().expect("page thread"),
            native.join().expect("native thread"),
        )
    });
    let (native_path, sent) = native.expect("the native dialler");
    let r = report(page_run.expect("the page's chromium"));
    eprintln!("page dialled by native: {r}; native's path {native_path:?}");
    assert_eq!(native_path, Path::Direct, "{r}");
    assert_eq!(r["path"], "direct", "{r}");
    assert_eq!(
        r["pair"]["remote"]["address"],
        lab.public_ip("native").to_string(),
        "{r}"
    );
    assert!(r["stats"]["received"].as_u64() >= Some(sent as u64), "{r}");
    assert!(r["stats"]["receivedDirect"].as_u64() >= Some(8), "{r}");
}
