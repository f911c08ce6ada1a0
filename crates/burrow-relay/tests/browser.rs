//! A real browser speaks the relay protocol: headless Chromium opens the relay's WebSocket,
//! proves a WebCrypto Ed25519 key, and exchanges datagrams (up to 60 KiB) with a Rust
//! [`RelayClient`] that echoes them back. Issue 3: the relay must work from a browser's
//! WebSocket, because browser peers will use it. How the page is run: `common::chromium`.

mod common;

use std::time::Duration;

use burrow::relay_client::{RelayClient, RelayUrl};
use burrow::SecretKey;
use burrow_relay::{RelayConfig, RelayServer};
use common::chromium;
use tokio::sync::mpsc;

/// Datagram sizes the page sends, in this order; the echo peer returns each unchanged.
const SIZES: [usize; 5] = [1, 100, 1200, 16 * 1024, 60 * 1024];

/// The page. `__RELAY__` (the WebSocket URL), `__RELAY_URL__` (the relay URL the page signs
/// for), `__ECHO__` (the echo peer's node id in hex) and `__SIZES__` are filled in here,
/// `__SERVER__` by `chromium::run_page`.
const PAGE: &str = r#"<!doctype html>
<html>
<head><meta charset="utf-8"><title>burrow relay from a browser</title></head>
<body>
<pre id="result">BURROW-BROWSER-PENDING</pre>
<!-- Holds the load event (and so --dump-dom) until it is released below. -->
<img src="__SERVER__/hold" loading="eager" width="1" height="1" alt="">
<script>
"use strict";
const SERVER = "__SERVER__";
const RELAY = "__RELAY__";
const RELAY_URL = new TextEncoder().encode("__RELAY_URL__");
const ECHO = hex("__ECHO__");
const SIZES = [__SIZES__];
const DOMAIN = new TextEncoder().encode("burrow relay auth v2\0");
const STEP_MS = 10000;

function hex(s) {
  const b = new Uint8Array(s.length / 2);
  for (let i = 0; i < b.length; i++) b[i] = parseInt(s.substr(2 * i, 2), 16);
  return b;
}
function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}
function equal(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
function random(n) {
  const b = new Uint8Array(n);
  for (let at = 0; at < n; at += 65536) crypto.getRandomValues(b.subarray(at, at + 65536));
  return b;
}

// Frames arrive here; next() hands them out in order, failing on close or silence.
const inbox = [];
let wake = null;
let closed = null;
function push() { if (wake) { const w = wake; wake = null; w(); } }
async function next(what) {
  const deadline = Date.now() + STEP_MS;
  while (inbox.length === 0) {
    if (closed) throw new Error(`${what}: connection closed (${closed})`);
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`${what}: nothing within ${STEP_MS} ms`);
    await new Promise(r => { wake = r; setTimeout(r, Math.min(left, 200)); });
  }
  return inbox.shift();
}

async function main() {
  const ws = new WebSocket(RELAY);
  ws.binaryType = "arraybuffer";
  ws.onmessage = e => {
    if (typeof e.data === "string") { closed = "text message from relay"; push(); return; }
    inbox.push(new Uint8Array(e.data)); push();
  };
  ws.onclose = e => { closed = `close code ${e.code} reason "${e.reason}"`; push(); };
  ws.onerror = () => { closed = closed || "websocket error"; push(); };

  // 1. ServerHello: 0x01, version, 32-byte challenge.
  const hello = await next("ServerHello");
  if (hello.length !== 34 || hello[0] !== 0x01) throw new Error(`bad ServerHello (${hello.length} bytes, type ${hello[0]})`);
  const version = hello[1];
  if (version !== 2) throw new Error(`the relay speaks protocol version ${version}, this page 2`);
  const challenge = hello.subarray(2);

  // 2. ClientAuth: 0x02, version, node id (raw Ed25519 public key), signature, relay URL; the
  // signature covers domain, challenge, node id and the URL, so it is good at this relay only.
  const key = await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
  const nodeId = new Uint8Array(await crypto.subtle.exportKey("raw", key.publicKey));
  if (nodeId.length !== 32) throw new Error(`raw public key is ${nodeId.length} bytes`);
  const signed = concat(DOMAIN, challenge, nodeId, RELAY_URL);
  const sig = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, key.privateKey, signed));
  ws.send(concat(new Uint8Array([0x02, version]), nodeId, sig, RELAY_URL));

  // 3. AuthOk: 0x03, idle timeout (u32).
  const ok = await next("AuthOk");
  if (ok.length !== 5 || ok[0] !== 0x03) throw new Error(`expected AuthOk, got type ${ok[0]} (${ok.length} bytes)`);

  // 4. Send (0x10 ‖ dst ‖ payload) to the echo peer; expect Recv (0x11 ‖ src ‖ payload) back.
  const sent = SIZES.map(random);
  for (const p of sent) ws.send(concat(new Uint8Array([0x10]), ECHO, p));
  for (let i = 0; i < sent.length; i++) {
    let f;
    do {
      f = await next(`echo ${i} (${sent[i].length} bytes)`);
      if (f[0] === 0x20) ws.send(concat(new Uint8Array([0x21]), f.subarray(1))); // Ping → Pong
    } while (f[0] === 0x20 || f[0] === 0x21);
    if (f[0] === 0x30) throw new Error(`PeerGone for echo ${i}`);
    if (f[0] !== 0x11 || f.length < 33) throw new Error(`echo ${i}: frame type ${f[0]}, ${f.length} bytes`);
    if (!equal(f.subarray(1, 33), ECHO)) throw new Error(`echo ${i}: from another node`);
    if (!equal(f.subarray(33), sent[i])) throw new Error(`echo ${i}: ${f.length - 33} bytes differ from the ${sent[i].length} sent`);
  }
  ws.close(1000, "done");
  return `${sent.length} echoes, ${sent.reduce((n, p) => n + p.length, 0)} bytes`;
}

main().then(
  what => `BURROW-BROWSER-OK ${what}`,
  err => `BURROW-BROWSER-FAIL: ${err && err.message || err}`,
).then(verdict => {
  document.getElementById("result").textContent = verdict;
  return fetch(`${SERVER}/release`, { mode: "no-cors", cache: "no-store" });
});
</script>
</body>
</html>
"#;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_talks_to_the_relay() {
    if !chromium::chromium_present() {
        return;
    }
    let relay = RelayServer::start(RelayConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        ..Default::default()
    })
    .await
    .expect("relay starts");
    let url: RelayUrl = relay.url().parse().expect("relay URL parses");

    // The echo peer: returns every datagram to its sender, and tells the test what it saw.
    let echo_key = SecretKey::from_bytes([7; 32]);
    let echo_id = echo_key.node_id();
    let echo = RelayClient::new(vec![url], echo_key, Default::default());
    echo.wait_connected(Duration::from_secs(5))
        .await
        .expect("echo peer connects");
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let relay_addr = relay.local_addr();
    let echo_task = {
        let echo = echo.clone();
        tokio::spawn(async move {
            // While the page waits for its first echo, the relay's /stats counts it as a
            // page's client (its upgrade had an Origin) and the echo peer as a native one.
            let mut clients = None;
            while let Some((src, payload, _via)) = echo.recv().await {
                if clients.is_none() {
                    let (_, stats) = common::http(relay_addr, "GET", "/stats", "").await;
                    clients = Some((
                        stats["browser_clients"].clone(),
                        stats["native_clients"].clone(),
                    ));
                }
                let _ = seen_tx.send((src, payload.len()));
                echo.send_wait(src, payload).await.expect("echo sends");
            }
            clients
        })
    };

    let sizes: Vec<String> = SIZES.iter().map(|n| n.to_string()).collect();
    let html = PAGE
        .replace("__RELAY_URL__", &relay.url())
        .replace("__RELAY__", &format!("ws://{}/relay", relay.local_addr()))
        .replace("__ECHO__", &hex(echo_id.as_bytes()))
        .replace("__SIZES__", &sizes.join(", "));
    let run = chromium::run_page(&html).await;
    run.expect_ok("BURROW-BROWSER-OK");

    // The echo peer saw every datagram, from one browser key, in order.
    let mut seen = Vec::new();
    while let Ok(s) = seen_rx.try_recv() {
        seen.push(s);
    }
    assert_eq!(
        seen.iter().map(|&(_, n)| n).collect::<Vec<_>>(),
        SIZES,
        "echo peer's datagrams"
    );
    assert!(
        seen.iter()
            .all(|&(src, _)| src == seen[0].0 && src != echo_id),
        "datagrams from one browser key"
    );

    echo.close().await;
    let clients = echo_task.await.expect("echo task");
    assert_eq!(
        clients,
        Some((serde_json::Value::from(1), serde_json::Value::from(1))),
        "/stats: one page's client, one native"
    );
    relay.shutdown().await;
}
