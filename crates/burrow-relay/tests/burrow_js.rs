//! burrow.js in headless Chromium against a real relay on loopback: a page imports the module
//! the relay serves, makes three nodes (keys kept in IndexedDB), publishes their records
//! (signed in the page, checked by the Rust registry), finds one by capability, passes signals
//! between its nodes and to a native node (Rust's `Signaling` checks the page's, the page
//! checks Rust's), rejects and counts a forged and a replayed one, and carries 1 MiB each way
//! on a connection through the relay, encrypted end to end, through a relay queue short
//! enough to drop some of it.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use burrow::relay_client::{RelayClient, RelayUrl};
use burrow::SecretKey;
use burrow_proto::signal::{Input, Kind, Output, Signaling};
use burrow_relay::{Limits, RelayConfig, RelayServer};
use common::chromium;

/// The page; `__RELAY_URL__` and `__NATIVE__` (the native node's id) are filled in here,
/// `__SERVER__` by `chromium::run_page`.
const PAGE: &str = r#"<!doctype html>
<html>
<head><meta charset="utf-8"><title>burrow.js</title></head>
<body>
<pre id="result">BURROW-JS-PENDING</pre>
<img src="__SERVER__/hold" loading="eager" width="1" height="1" alt="">
<script type="module">
import * as burrow from "__RELAY_URL__/burrow.js";
const RELAY = "__RELAY_URL__";
const NATIVE = "__NATIVE__";

function check(ok, what) { if (!ok) throw new Error(what); }
async function until(f, what, ms = 10000) {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise(r => setTimeout(r, 20));
  }
}

async function main() {
  // Relayed only: on loopback a WebRTC path would go by the machine's own interfaces (the lab
  // test covers it).
  const [a, b, c] = await Promise.all(["a", "b", "c"].map(keyName => burrow.connect({ relay: RELAY, keyName, webrtc: false })));
  await a.publish({ namespaces: ["fleet"], capabilities: ["gpu", "chat"], name: "a" });
  await b.publish({ namespaces: ["fleet"], capabilities: ["chat"], name: "b" });
  await c.publish({ namespaces: ["fleet"], capabilities: ["gpu"], name: "c" });
  const all = await b.discover("fleet");
  check(all.length === 3, `all of the fleet: ${JSON.stringify(all)}`);
  const found = await b.discover("fleet", { require: ["gpu", "chat"], online: true });
  check(found.length === 1 && found[0].nodeId === a.nodeId && found[0].name === "a",
    `gpu and chat: ${JSON.stringify(found)}`);

  // Signals between two of the page's nodes: one let through, its replay and a forgery not.
  const got = [], bad = [];
  b.onsignal = s => got.push(s);
  b.onbadsignal = e => bad.push(e.reason);
  const { session } = await a.signal(b.nodeId, "offer", "v=0 a=fingerprint:sha-256 AB:CD");
  const candidate = await burrow.encodeSignal(a.key, {
    kind: "candidate", from: burrow.nodeIdBytes(a.nodeId), to: burrow.nodeIdBytes(b.nodeId),
    session, seq: 1n, unixMs: Date.now(), body: '{"candidate":"candidate:1 1 udp 1 198.18.1.2 4000 typ srflx"}',
  });
  const forged = candidate.slice();
  forged[100] ^= 0x01;
  for (const bytes of [candidate, candidate, forged]) a.send(b.nodeId, bytes);
  await until(() => got.length + bad.length === 4, "four signals at b");
  check(got[0].kind === "offer" && got[0].body.includes("AB:CD") && got[0].from === a.nodeId, "the offer");
  check(got[1].kind === "candidate" && got[1].seq === 1n, "the candidate");
  const stats = b.signalStats();
  check(stats.accepted === 2 && stats.replayed === 1 && stats.forged === 1,
    `b's signal counts: ${JSON.stringify(stats)}`);

  // A native node: it checks the page's offer with burrow_proto's core and answers in kind.
  const answers = [];
  a.onsignal = s => answers.push(s);
  await a.signal(NATIVE, "offer", "v=0 from the page");
  await until(() => answers.length === 1, "the native node's answer");
  check(answers[0].kind === "answer" && answers[0].from === NATIVE && answers[0].body === "v=0 from rust",
    `the answer: ${JSON.stringify(answers[0], (k, v) => typeof v === "bigint" ? String(v) : v)}`);

  // A connection from a to b through the relay, end-to-end encrypted: 1 MiB in 105 messages
  // each way (b echoes; more than the window, so acknowledgements must flow), all back in
  // order.
  b.onconnection = conn => { conn.onmessage = m => conn.send(m); };
  const conn = await a.dial(b.nodeId);
  check(conn.path === "relay", `path ${conn.path}`);
  const sent = [];
  for (let i = 0; i < 105; i++) {
    const m = new Uint8Array(i === 104 ? 1024 * 1024 - 104 * 10_000 : 10_000);
    for (let at = 0; at < m.length; at += 65536) crypto.getRandomValues(m.subarray(at, at + 65536));
    sent.push(m);
  }
  const echoed = [];
  conn.onmessage = m => echoed.push(m);
  for (const m of sent) conn.send(m);
  await until(() => echoed.length === sent.length, "the echoes", 20000);
  const digest = async parts => new Uint8Array(await crypto.subtle.digest("SHA-256", await new Blob(parts).arrayBuffer()));
  const [want, have] = [await digest(sent), await digest(echoed)];
  check(want.every((x, i) => x === have[i]) && echoed.every((m, i) => m.length === sent[i].length),
    "the echoed megabyte differs");
  const connStats = conn.stats();
  conn.close();

  const relay = await a.relayStats();
  check(relay.browser_clients === 3 && relay.native_clients === 1 && relay.signals_forwarded >= 8,
    `relay stats: ${JSON.stringify(relay)}`);

  // The key under a name is kept: connecting again as "a" is the same node.
  const again = await burrow.connect({ relay: RELAY, keyName: "a", webrtc: false });
  check(again.nodeId === a.nodeId, "the key kept in IndexedDB");
  for (const n of [again, b, c]) n.close();
  return `${all.length} published, 1 found by capability, signals ok (${JSON.stringify(stats)}), 1 MiB echoed through the relay (${JSON.stringify(connStats)})`;
}

main().then(
  what => `BURROW-JS-OK ${what}`,
  err => `BURROW-JS-FAIL: ${err && err.message || err}`,
).then(verdict => {
  document.getElementById("result").textContent = verdict;
  return fetch(`__SERVER__/release`, { mode: "no-cors", cache: "no-store" });
});
</script>
</body>
</html>
"#;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_publishes_finds_by_capability_and_signals_pages_and_native_nodes() {
    if !chromium::chromium_present() {
        return;
    }
    // A short queue per client, so that the connection's bursts lose datagrams at the relay
    // and only its resending gets every message through.
    let relay = RelayServer::start(RelayConfig {
        limits: Limits {
            client_queue_frames: 8,
            ..Limits::unlimited()
        },
        ..RelayConfig::default()
    })
    .await
    .unwrap();
    let url: RelayUrl = relay.url().parse().unwrap();

    // The native node: answers each offer that passes its checks.
    let key = SecretKey::from_bytes([9; 32]);
    let native = RelayClient::new(vec![url], key.clone(), Default::default());
    native.wait_connected(Duration::from_secs(5)).await.unwrap();
    let answering = {
        let native = native.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let mut core = Signaling::new(key, 1);
            let mut offers = Vec::new();
            while let Some((from, data, _)) = native.recv().await {
                core.handle_input(
                    Instant::now(),
                    Input::Received {
                        data: &data,
                        unix_ms: unix_ms(),
                    },
                );
                let Output::Received(offer) = core.poll_output() else {
                    continue;
                };
                assert_eq!(offer.from, from, "signed by the key that sent it");
                core.handle_input(
                    Instant::now(),
                    Input::Send {
                        to: from,
                        session: Some(offer.session),
                        kind: Kind::Answer,
                        body: "v=0 from rust".into(),
                        unix_ms: unix_ms(),
                    },
                );
                if let Output::Transmit { to, data, .. } = core.poll_output() {
                    native.send_wait(to, data.into()).await.unwrap();
                }
                offers.push(offer);
            }
            offers
        })
    };

    let html = PAGE
        .replace("__RELAY_URL__", &relay.url())
        .replace("__NATIVE__", &key.node_id().to_string());
    let run = chromium::run_page(&html).await;
    run.expect_ok("BURROW-JS-OK");
    let drops = relay.stats().drops_queue_full;
    eprintln!("datagrams the relay dropped on full queues: {drops}");
    assert!(
        drops > 0,
        "the connection's bursts were meant to overflow the relay's queue"
    );
    native.close().await;
    let offers = answering.await.unwrap();
    assert_eq!(offers.len(), 1);
    assert_eq!(
        (offers[0].kind, offers[0].body.as_str()),
        (Kind::Offer, "v=0 from the page")
    );
    relay.shutdown().await;
}
