// burrow.js: burrow from a web page. A vanilla ES module (no build step), served by every
// relay at GET /burrow.js, and kept in the repository at crates/burrow-relay/assets/.
//
// What a page gets:
//   const node = await connect({ relay: "https://relay.example.org:8443" });
//   await node.publish({ namespaces: ["fleet"], capabilities: ["gpu"], name: "tab 1" });
//   const peers = await node.discover("fleet", { require: ["gpu"], minReputation: 0.1 });
//   const conn = await node.dial(peers[0].nodeId);   // or node.onconnection = (conn) => ...
//   conn.onmessage = (bytes) => { ... };
//   conn.send(new TextEncoder().encode("hello"));     // reliable and in order
//   conn.send(bytes, { reliable: false });            // at most once, in any order
//   conn.onpathchange = (path) => { ... };            // "relay" at first, "direct" once WebRTC is up
//
// A connection is set up by a signed offer and answer (burrow_proto::signal), each carrying an
// ephemeral X25519 key: the two derive the session's keys, so what goes through the relay is
// AES-256-GCM that the relay cannot read, and the signatures on offer and answer keep it from
// standing in the middle. Messages are numbered, acknowledged and resent until acknowledged
// (at most WINDOW in flight), so a relay that drops datagrams loses none of them. A side that
// has sent nothing for 15 s sends an acknowledgement; a connection silent for 60 s ends.
//
// The same offer and answer carry WebRTC session descriptions, and signed candidate signals
// trickle the ICE candidates (STUN from the relay's GET /ice). The DTLS fingerprints are in
// those signed descriptions, so the direct path is authenticated to the same keys. Messages go
// through the relay from the first one; once a data channel is open and ICE connected, they go
// on it (DTLS, so not sealed again), numbered as before: messages sent on the relay and not yet
// acknowledged are sent again directly, and the receiver puts both paths' messages back in
// order. When the direct path fails, messages go through the relay again, unacknowledged ones
// first. A peer without WebRTC (a native node built without it) answers without a description,
// and the connection stays on the relay.
//
// The page's identity is an Ed25519 key made by WebCrypto, not extractable, kept in
// IndexedDB under a name (one key per name and origin). The relay sees the key it proves and
// the datagrams it forwards; records are signed in the page (the registry and every reader
// check them), and so are signals (burrow_proto::signal's format: the relay passes them on
// and cannot forge, alter or redirect one). The TypeScript declarations are in burrow.d.ts.

const te = new TextEncoder();
const td = new TextDecoder("utf-8", { fatal: true });

/** The relay protocol version this module speaks. */
export const PROTOCOL_VERSION = 2;
const AUTH_DOMAIN = te.encode("burrow relay auth v2\0");
const RECORD_DOMAIN = te.encode("burrow record v1");
const SIGNAL_CONTEXT = te.encode("burrow signal v1\0");
/** Starts every signal (burrow_proto::signal::MAGIC). */
export const SIGNAL_MAGIC = new Uint8Array([0x20, 0x42, 0x57, 0x53]);
const SIGNAL_HEADER = 95;
const SIGNATURE_LEN = 64;
/** The longest signal body, bytes. */
export const MAX_SIGNAL_BODY = 16 * 1024;
/** How far a signal's time may be from this page's clock, either way, ms. */
export const MAX_SKEW_MS = 120_000;
const REPLAY_WINDOW = 64n;
const MAX_SESSIONS_PER_PEER = 8;
const SESSION_IDLE_MS = 300_000;
const KINDS = ["offer", "answer", "candidate", "bye"];

/** Starts every datagram of a connection through the relay (disco's is 0x20 "BWD"). */
const CONN_MAGIC = new Uint8Array([0x20, 0x42, 0x57, 0x43]);
const CONN_INFO = te.encode("burrow page connection v1");
/** The longest message a connection carries, bytes (a relay datagram is at most 64 KiB). */
export const MAX_MESSAGE = 60 * 1024;
/** Messages in flight, unacknowledged, per connection. */
export const WINDOW = 64;
const RESEND_FIRST_MS = 300;
const RESEND_MAX_MS = 3000;
const DIAL_TIMEOUT_MS = 10_000;
const RESEND_OFFER_MS = 1000;
/** A side that has sent nothing for this long sends an acknowledgement (burrow_proto::page_conn::KEEPALIVE). */
const KEEPALIVE_MS = 15_000;
/** A connection that hears nothing for this long ends: a closed tab sends no bye. */
const IDLE_TIMEOUT_MS = 60_000;
const M_DATA = 1, M_ACK = 2, M_UNRELIABLE = 3;
/** The data channels, negotiated by both ends (no in-band open): reliable and ordered, and
 * unordered without retransmissions. */
const DC_RELIABLE = { negotiated: true, id: 0, ordered: true };
const DC_UNRELIABLE = { negotiated: true, id: 1, ordered: false, maxRetransmits: 0 };

const T_SERVER_HELLO = 0x01, T_CLIENT_AUTH = 0x02, T_AUTH_OK = 0x03;
const T_SEND = 0x10, T_RECV = 0x11, T_PING = 0x20, T_PONG = 0x21, T_PEER_GONE = 0x30;

// ---------------------------------------------------------------------------------------------
// Bytes

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

function u64(n) {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n));
  return b;
}

const B32 = "abcdefghijklmnopqrstuvwxyz234567";

/** A node id's text form (52 lowercase base32 characters, no padding) of its 32 key bytes. */
export function nodeIdText(bytes) {
  let out = "", bits = 0, value = 0;
  for (const byte of bytes) {
    value = (value << 8) | byte; bits += 8;
    while (bits >= 5) { out += B32[(value >>> (bits - 5)) & 31]; bits -= 5; }
  }
  if (bits > 0) out += B32[(value << (5 - bits)) & 31];
  return out;
}

/** The 32 key bytes of a node id's text form; throws on anything else. */
export function nodeIdBytes(text) {
  const s = text.trim().toLowerCase();
  const out = [];
  let bits = 0, value = 0;
  for (const c of s) {
    const v = B32.indexOf(c);
    if (v < 0) throw new Error(`not a node id: ${text}`);
    value = (value << 5) | v; bits += 5;
    if (bits >= 8) { out.push((value >>> (bits - 8)) & 255); bits -= 8; }
  }
  if (out.length !== 32) throw new Error(`a node id is 32 bytes, not ${out.length}: ${text}`);
  return new Uint8Array(out);
}

function base64url(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function fromBase64url(text) {
  const s = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}

// ---------------------------------------------------------------------------------------------
// Keys

function idb(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/**
 * The page's key pair under `name`, made (not extractable) and kept in IndexedDB the first
 * time. Falls back to a key for this page's life alone where IndexedDB is not available.
 */
export async function loadKey(name = "default") {
  let db = null;
  try {
    const open = indexedDB.open("burrow", 1);
    open.onupgradeneeded = () => open.result.createObjectStore("keys");
    db = await idb(open);
    const kept = await idb(db.transaction("keys").objectStore("keys").get(name));
    if (kept) return kept;
  } catch (_) {
    db = null;
  }
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
  if (db) await idb(db.transaction("keys", "readwrite").objectStore("keys").put(pair, name));
  return pair;
}

async function sign(key, bytes) {
  return new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, key.privateKey, bytes));
}

async function verify(publicKeyBytes, signature, bytes) {
  try {
    const key = await crypto.subtle.importKey("raw", publicKeyBytes, { name: "Ed25519" }, false, ["verify"]);
    return await crypto.subtle.verify({ name: "Ed25519" }, key, signature, bytes);
  } catch (_) {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Records (burrow_proto::record's payload: version, key, seq, expires, relays, addrs, name,
// capabilities; then a signature over "burrow record v1" and the payload)

function lengthPrefixed(bytes, what) {
  if (bytes.length > 255) throw new Error(`${what} is longer than 255 bytes`);
  return concat(new Uint8Array([bytes.length]), bytes);
}

/** A signed record of `id` (its key bytes), as the registry takes it. */
export async function signRecord(key, id, { seq, expires, relays = [], name = null, capabilities = [] }) {
  if (relays.length > 4) throw new Error("a record names at most 4 relays");
  if (capabilities.length > 16) throw new Error("a record carries at most 16 capabilities");
  const nameBytes = name === null ? new Uint8Array(0) : te.encode(name);
  if (nameBytes.length > 64) throw new Error("a name is at most 64 bytes");
  for (const c of capabilities) {
    if (!/^[\x21-\x7e]{1,32}$/.test(c)) throw new Error(`capability ${JSON.stringify(c)}: 1 to 32 printable ASCII characters`);
  }
  const payload = concat(
    new Uint8Array([1]), id, u64(seq), u64(expires),
    new Uint8Array([relays.length]), ...relays.map((r) => lengthPrefixed(te.encode(r), "a relay URL")),
    new Uint8Array([0]),
    lengthPrefixed(nameBytes, "the name"),
    new Uint8Array([capabilities.length]), ...capabilities.map((c) => lengthPrefixed(te.encode(c), "a capability")),
  );
  return concat(payload, await sign(key, concat(RECORD_DOMAIN, payload)));
}

/** Whether a signed record (bytes) is signed by the key it names, which must be `id`. */
export async function verifyRecord(bytes, id) {
  if (bytes.length < 1 + 32 + SIGNATURE_LEN || bytes[0] !== 1) return false;
  const payload = bytes.subarray(0, bytes.length - SIGNATURE_LEN);
  if (!equal(payload.subarray(1, 33), id)) return false;
  return verify(id, bytes.subarray(bytes.length - SIGNATURE_LEN), concat(RECORD_DOMAIN, payload));
}

// ---------------------------------------------------------------------------------------------
// Signals (burrow_proto::signal)

/**
 * A signal's bytes: magic, kind, from, to, session, seq, unix ms, body length, body, and the
 * sender's signature over "burrow signal v1\0" and all of that.
 */
export async function encodeSignal(key, { kind, from, to, session, seq, unixMs, body = "" }) {
  const code = KINDS.indexOf(kind) + 1;
  if (code === 0) throw new Error(`unknown signal kind ${kind}`);
  const bodyBytes = te.encode(body);
  if (bodyBytes.length > MAX_SIGNAL_BODY) throw new Error(`a signal body is at most ${MAX_SIGNAL_BODY} bytes`);
  const len = new Uint8Array([bodyBytes.length >> 8, bodyBytes.length & 255]);
  const signed = concat(SIGNAL_MAGIC, new Uint8Array([code]), from, to, u64(session), u64(seq), u64(unixMs), len, bodyBytes);
  return concat(signed, await sign(key, concat(SIGNAL_CONTEXT, signed)));
}

/** Whether `bytes` start like a signal. */
export function looksLikeSignal(bytes) {
  return bytes.length >= 4 && equal(bytes.subarray(0, 4), SIGNAL_MAGIC);
}

/** The signal in `bytes` with its signature checked, or an error saying why not. */
export async function decodeSignal(bytes) {
  if (!looksLikeSignal(bytes)) throw new SignalError("malformed", "not a signal");
  if (bytes.length < SIGNAL_HEADER + SIGNATURE_LEN) throw new SignalError("malformed", "truncated");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const kind = KINDS[bytes[4] - 1];
  if (!kind) throw new SignalError("malformed", `unknown kind ${bytes[4]}`);
  const bodyLen = view.getUint16(93);
  if (bodyLen > MAX_SIGNAL_BODY) throw new SignalError("malformed", "body too long");
  if (bytes.length !== SIGNAL_HEADER + bodyLen + SIGNATURE_LEN) throw new SignalError("malformed", "wrong length");
  const from = bytes.slice(5, 37);
  const signedLen = SIGNAL_HEADER + bodyLen;
  const ok = await verify(from, bytes.subarray(signedLen), concat(SIGNAL_CONTEXT, bytes.subarray(0, signedLen)));
  if (!ok) throw new SignalError("forged", "the signature does not verify");
  let body;
  try { body = td.decode(bytes.subarray(SIGNAL_HEADER, signedLen)); } catch (_) {
    throw new SignalError("malformed", "the body is not UTF-8");
  }
  return {
    kind, from: nodeIdText(from), to: nodeIdText(bytes.subarray(37, 69)),
    session: view.getBigUint64(69), seq: view.getBigUint64(77), unixMs: Number(view.getBigUint64(85)), body,
  };
}

/** Why a signal that came was dropped: `reason` is one of SignalStats' counters. */
export class SignalError extends Error {
  constructor(reason, message) { super(message); this.reason = reason; }
}

/**
 * The signaling state of one key (as burrow_proto::signal::Signaling): numbers what it sends
 * per session, lets through signals addressed to it, fresh and new, and counts the rest.
 */
class Signaling {
  constructor(key, id) {
    this.key = key; this.id = id; this.me = nodeIdText(id);
    this.sessions = new Map();
    this.stats = { accepted: 0, malformed: 0, forged: 0, misaddressed: 0, stale: 0, replayed: 0 };
  }

  session(peer, session) {
    const now = Date.now();
    for (const [k, s] of this.sessions) if (now - s.last >= SESSION_IDLE_MS) this.sessions.delete(k);
    const k = `${peer}/${session}`;
    let s = this.sessions.get(k);
    if (!s) {
      const mine = [...this.sessions].filter(([key]) => key.startsWith(`${peer}/`));
      if (mine.length >= MAX_SESSIONS_PER_PEER) {
        mine.sort((a, b) => a[1].last - b[1].last);
        this.sessions.delete(mine[0][0]);
      }
      s = { nextSeq: 0n, newest: null, seen: 0n, ended: false, last: now };
      this.sessions.set(k, s);
    }
    s.last = now;
    return s;
  }

  async seal(to, kind, body, session) {
    session = session ?? crypto.getRandomValues(new BigUint64Array(1))[0];
    const s = this.session(to, session);
    const seq = s.nextSeq++;
    if (kind === "bye") s.ended = true;
    const bytes = await encodeSignal(this.key, { kind, from: this.id, to: nodeIdBytes(to), session, seq, unixMs: Date.now(), body });
    return { session, seq, bytes };
  }

  async open(bytes) {
    let signal;
    try { signal = await decodeSignal(bytes); } catch (e) {
      this.stats[e.reason ?? "malformed"]++;
      throw e;
    }
    const reject = (reason, message) => { this.stats[reason]++; throw new SignalError(reason, message); };
    if (signal.to !== this.me) reject("misaddressed", "addressed to another key");
    if (Math.abs(signal.unixMs - Date.now()) > MAX_SKEW_MS) reject("stale", "too old or too far ahead");
    const s = this.session(signal.from, signal.session);
    if (s.ended) reject("replayed", "the session has ended");
    if (!admit(s, signal.seq)) reject("replayed", "seen already");
    if (signal.kind === "bye") s.ended = true;
    this.stats.accepted++;
    return signal;
  }
}

/** Marks `seq` as come in session `s`; false if it came before or is too old. */
function admit(s, seq) {
  if (s.newest === null) { s.newest = seq; s.seen = 1n; return true; }
  if (seq > s.newest) {
    const shift = seq - s.newest;
    s.seen = (shift >= REPLAY_WINDOW ? 0n : (s.seen << shift) & ((1n << REPLAY_WINDOW) - 1n)) | 1n;
    s.newest = seq;
    return true;
  }
  const back = s.newest - seq;
  if (back >= REPLAY_WINDOW || (s.seen & (1n << back)) !== 0n) return false;
  s.seen |= 1n << back;
  return true;
}

// ---------------------------------------------------------------------------------------------
// The relay connection

/** A page's node: its key, its relay session, its records and its signals. */
export class Node {
  /** Use connect(). */
  constructor(relay, key, id, iceServers) {
    this.relay = relay;
    /** The ICE servers of connections' WebRTC paths; null: no WebRTC, relayed only. */
    this.iceServers = iceServers;
    this.key = key;
    this.id = id;
    /** This page's node id. */
    this.nodeId = nodeIdText(id);
    this.signaling = new Signaling(key, id);
    /** A signal for this page came and passed every check: (signal) => void. */
    this.onsignal = null;
    /** A signal came and was dropped: (error) => void (its reason is counted in signalStats). */
    this.onbadsignal = null;
    /** Any other datagram from a key through the relay: (from, bytes) => void. */
    this.ondatagram = null;
    /** The relay said a key is not (or no longer) connected: (nodeId) => void. */
    this.onpeergone = null;
    /** Another node dialled this page and the connection is up: (conn) => void. */
    this.onconnection = null;
    this.ws = null;
    this.seq = Date.now();
    /** Connections by `${peer}/${session}`. */
    this.conns = new Map();
    /** Frames are handled one at a time, in the order they came. */
    this.inbound = Promise.resolve();
  }

  /**
   * A connection to `nodeId`: a signed offer with an ephemeral key (and a WebRTC offer), its
   * signed answer, then messages through the relay, encrypted to the session's keys, until a
   * direct path is up. Rejects if no answer comes within 10 s.
   */
  async dial(nodeId) {
    const dh = await crypto.subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
    const mine = new Uint8Array(await crypto.subtle.exportKey("raw", dh.publicKey));
    const session = crypto.getRandomValues(new BigUint64Array(1))[0];
    const conn = new Connection(this, nodeId, session, true);
    const sdp = await conn.rtcOffer();
    const offer = JSON.stringify(sdp ? { dh: base64url(mine), sdp } : { dh: base64url(mine) });
    conn.pendingDh = dh;
    const answered = new Promise((resolve, reject) => {
      // A relay drops datagrams when a queue is full: the offer goes again (a new signal of
      // the session) until the answer comes.
      const again = setInterval(() => this.signal(nodeId, "offer", offer, session).catch(() => {}), RESEND_OFFER_MS);
      const timeout = setTimeout(() => {
        clearInterval(again);
        conn.ended("no answer");
        reject(new Error(`no answer from ${nodeId} within ${DIAL_TIMEOUT_MS} ms`));
      }, DIAL_TIMEOUT_MS);
      conn.dialDone = (c) => { clearInterval(again); clearTimeout(timeout); resolve(c); };
    });
    this.conns.set(conn.key, conn);
    await this.signal(nodeId, "offer", offer, session).catch(() => {}); // and again each second
    return answered;
  }

  async signalled(s) {
    const key = `${s.from}/${s.session}`;
    const conn = this.conns.get(key);
    if (s.kind === "offer" && conn && !conn.dialled) {
      // The answer was lost: the dialler offers again.
      return this.signal(s.from, "answer", conn.answer, s.session);
    }
    if (s.kind === "offer" && !conn) {
      let theirs, body;
      try { body = JSON.parse(s.body); theirs = fromBase64url(body.dh); } catch (_) { return this.onsignal?.(s); }
      const dh = await crypto.subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
      const mine = new Uint8Array(await crypto.subtle.exportKey("raw", dh.publicKey));
      const c = new Connection(this, s.from, s.session, false);
      await c.keys(dh, theirs, s.from, this.nodeId);
      // A peer holds at most as many connections as it may hold signaling sessions.
      const theirsOpen = [...this.conns.values()].filter((o) => o.peer === s.from);
      if (theirsOpen.length >= MAX_SESSIONS_PER_PEER) theirsOpen[0].ended("replaced by a newer one");
      this.conns.set(key, c);
      const sdp = typeof body.sdp === "string" ? await c.rtcAnswer(body.sdp) : null;
      c.answer = JSON.stringify(sdp ? { dh: base64url(mine), sdp } : { dh: base64url(mine) });
      await this.signal(s.from, "answer", c.answer, s.session);
      c.opened();
      return this.onconnection?.(c);
    }
    if (s.kind === "answer" && conn && !conn.pendingDh) return; // one more answer to an offer sent again
    if (s.kind === "answer" && conn) {
      let theirs, body;
      try { body = JSON.parse(s.body); theirs = fromBase64url(body.dh); } catch (_) { return; }
      const dh = conn.pendingDh;
      conn.pendingDh = null;
      await conn.keys(dh, theirs, this.nodeId, s.from);
      await conn.rtcAnswered(typeof body.sdp === "string" ? body.sdp : null);
      conn.opened();
      conn.flush();
      return conn.dialDone(conn);
    }
    if (s.kind === "candidate" && conn) return conn.rtcCandidate(s.body);
    if (s.kind === "bye" && conn) return conn.ended("closed by the peer");
    this.onsignal?.(s);
  }

  /** Sends `bytes` to `nodeId` through the relay (at most 64 KiB; dropped if it is not there). */
  send(nodeId, bytes) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) throw new Error("not connected to the relay");
    this.ws.send(concat(new Uint8Array([T_SEND]), nodeIdBytes(nodeId), bytes));
  }

  /** Sends a signed signal (`kind`: offer, answer, candidate or bye) in `session` (a new one
   * if not given, for an offer); resolves to its session and seq. */
  async signal(nodeId, kind, body = "", session = undefined) {
    const sealed = await this.signaling.seal(nodeId, kind, body, session);
    this.send(nodeId, sealed.bytes);
    return { session: sealed.session, seq: sealed.seq };
  }

  /** What became of the signals that came. */
  signalStats() {
    return { ...this.signaling.stats };
  }

  /** Publishes this page's record at the relay's registry, listed under `namespaces`. */
  async publish({ namespaces = [], capabilities = [], name = null, ttlSecs = 3600 } = {}) {
    const expires = Math.floor(Date.now() / 1000) + ttlSecs;
    const record = await signRecord(this.key, this.id, { seq: this.seq++, expires, relays: [this.relay], name, capabilities });
    const r = await fetch(`${this.relay}/records/${this.nodeId}`, {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ record: base64url(record), namespaces, ttl_secs: ttlSecs }),
    });
    const answer = await r.json();
    if (!r.ok) throw new Error(`publishing: ${r.status} ${answer.error ?? ""}`);
    return answer;
  }

  /**
   * The records listed under `namespace` at the relay's registry (every page of them), with
   * their signatures checked: those with all of `require`, of keys whose reputation there is
   * at least `minReputation`, and only keys connected there now if `online`.
   */
  async discover(namespace, { require = [], minReputation = 0, online = false } = {}) {
    const found = [];
    let cursor = null;
    do {
      const q = new URLSearchParams();
      if (require.length) q.set("require", require.join(","));
      if (minReputation > 0) q.set("min_reputation", String(minReputation));
      if (online) q.set("online", "1");
      if (cursor) q.set("cursor", cursor);
      const r = await fetch(`${this.relay}/namespaces/${encodeURIComponent(namespace)}?${q}`);
      const page = await r.json();
      if (!r.ok) throw new Error(`discovering: ${r.status} ${page.error ?? ""}`);
      for (const v of page.records) {
        // The registry is not trusted: a record it cannot have signed, or not this key's, is skipped.
        if (!(await verifyRecord(fromBase64url(v.record), nodeIdBytes(v.node_id)))) continue;
        found.push({ nodeId: v.node_id, name: v.name, capabilities: v.capabilities, relays: v.relays, online: v.online, reputation: v.reputation });
      }
      cursor = page.next_cursor;
    } while (cursor);
    return found;
  }

  /** The relay's /stats. */
  async relayStats() {
    return (await fetch(`${this.relay}/stats`)).json();
  }

  /** Leaves the relay. */
  close() {
    for (const c of this.conns.values()) c.close();
    clearInterval(this.pinger);
    if (this.ws) this.ws.close(1000, "closing");
  }

  async handle(frame) {
    const type = frame[0];
    if (type === T_RECV && frame.length >= 33) {
      const from = nodeIdText(frame.subarray(1, 33));
      const payload = frame.slice(33);
      if (looksLikeSignal(payload)) {
        let s;
        try {
          s = await this.signaling.open(payload);
        } catch (e) {
          return this.onbadsignal?.(e);
        }
        if (s.from !== from) return; // a relay passing one key's signal off as another's
        await this.signalled(s);
      } else if (payload.length >= 20 && equal(payload.subarray(0, 4), CONN_MAGIC)) {
        const session = new DataView(payload.buffer, payload.byteOffset).getBigUint64(4);
        await this.conns.get(`${from}/${session}`)?.received(payload);
      } else {
        this.ondatagram?.(from, payload);
      }
    } else if (type === T_PING) {
      this.ws.send(concat(new Uint8Array([T_PONG]), frame.subarray(1)));
    } else if (type === T_PEER_GONE && frame.length >= 33) {
      this.onpeergone?.(nodeIdText(frame.subarray(1, 33)));
    }
  }
}

/**
 * A connection between this page and another node, in a session set up by signed signals:
 * reliable, ordered messages of at most MAX_MESSAGE bytes, end-to-end encrypted.
 */
export class Connection {
  /** Made by Node.dial and Node.onconnection. */
  constructor(node, peer, session, dialled) {
    this.node = node;
    /** The other node's id. */
    this.peer = peer;
    /** The session's id. */
    this.session = session;
    this.dialled = dialled;
    this.key = `${peer}/${session}`;
    /** How messages go: "relay" (through the relay, encrypted end to end) or "direct" (a
     * WebRTC data channel, DTLS to the fingerprint the peer signed). */
    this.path = "relay";
    /** A message came: (bytes: Uint8Array, { reliable: boolean }) => void. */
    this.onmessage = null;
    /** The path changed: (path: "relay" | "direct") => void. */
    this.onpathchange = null;
    /** The connection ended: (why: string) => void. */
    this.onclose = null;
    this.ready = false;
    this.closedWhy = null;
    this.sendCounter = 0n;
    this.nextSeq = 0n;      // the next message's number
    this.unacked = new Map(); // seq -> { bytes, sentAt, resendMs, direct }
    this.queued = [];       // messages beyond the window
    this.delivered = 0n;    // messages delivered in order so far
    this.early = new Map(); // seq -> bytes that came ahead of a gap
    this.counts = { sent: 0, received: 0, resent: 0, bytesSent: 0, bytesReceived: 0, sentDirect: 0, receivedDirect: 0 };
    this.lastSent = this.lastHeard = Date.now();
    this.timer = setInterval(() => this.tick(), RESEND_FIRST_MS / 2);
    this.pc = null;         // the RTCPeerConnection, while a direct path may come or lives
    this.channels = null;   // its two data channels: { reliable, unreliable }
    this.localCandidates = [];  // gathered before the session was up; signalled once it is
    this.remoteCandidates = []; // came before the remote description was set
  }

  /** Derives the two directions' keys from the X25519 agreement (HKDF-SHA256 over the
   * session, bound to the dialler's and the listener's ids). */
  async keys(dh, theirs, dialler, listener) {
    const peerKey = await crypto.subtle.importKey("raw", theirs, { name: "X25519" }, false, []);
    const shared = await crypto.subtle.deriveBits({ name: "X25519", public: peerKey }, dh.privateKey, 256);
    const ikm = await crypto.subtle.importKey("raw", shared, "HKDF", false, ["deriveKey"]);
    const direction = (label) => crypto.subtle.deriveKey(
      { name: "HKDF", hash: "SHA-256", salt: u64(this.session), info: concat(CONN_INFO, nodeIdBytes(dialler), nodeIdBytes(listener), te.encode(label)) },
      ikm, { name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
    const [toListener, toDialler] = await Promise.all([direction("to listener"), direction("to dialler")]);
    [this.sendKey, this.recvKey] = this.dialled ? [toListener, toDialler] : [toDialler, toListener];
  }

  /**
   * Sends `data` (bytes or text). Reliable (the default): delivered once, in order, or the
   * connection ends. `{ reliable: false }`: at most once, in any order, nothing resent.
   */
  send(data, { reliable = true } = {}) {
    if (this.closedWhy) throw new Error(`the connection is closed: ${this.closedWhy}`);
    const bytes = typeof data === "string" ? te.encode(data) : new Uint8Array(data);
    if (bytes.length > MAX_MESSAGE) throw new Error(`a message is at most ${MAX_MESSAGE} bytes`);
    if (!reliable) {
      if (this.ready) this.transmit(M_UNRELIABLE, 0n, bytes);
      return;
    }
    this.queued.push(bytes);
    this.flush();
  }

  /** Messages handed to send and not yet acknowledged. */
  get pending() {
    return this.unacked.size + this.queued.length;
  }

  /** Counts: messages sent, received and resent, and their bytes; how many of the messages
   * went and came on the direct path. */
  stats() {
    return { path: this.path, ...this.counts, pending: this.pending };
  }

  /**
   * The direct path's candidate pair as WebRTC's getStats has it (`{ local, remote }`, each
   * `{ type, address, port, protocol }`), or null while there is none.
   */
  async candidatePair() {
    if (!this.pc) return null;
    const report = await this.pc.getStats();
    let pair = null;
    report.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
    });
    if (!pair) report.forEach((s) => { if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s; });
    if (!pair) return null;
    const side = (id) => {
      const c = report.get(id);
      return c && { type: c.candidateType, address: c.address, port: c.port, protocol: c.protocol };
    };
    return { local: side(pair.localCandidateId), remote: side(pair.remoteCandidateId) };
  }

  /** Ends the session (its peer is told with a signed bye). */
  close() {
    if (this.closedWhy) return;
    this.node.signal(this.peer, "bye", "", this.session).catch(() => {});
    this.ended("closed");
  }

  ended(why) {
    if (this.closedWhy) return;
    this.closedWhy = why;
    clearInterval(this.timer);
    this.pc?.close();
    this.node.conns.delete(this.key);
    this.onclose?.(why);
  }

  /** The session is up (keys agreed, the answer sent or taken): candidates gathered so far go. */
  opened() {
    this.ready = true;
    for (const c of this.localCandidates.splice(0)) this.node.signal(this.peer, "candidate", c, this.session).catch(() => {});
  }

  // --- The direct path -------------------------------------------------------------------

  /** The dialler's side: a peer connection and its offer's SDP, or null without WebRTC. */
  async rtcOffer() {
    if (!this.rtcStart()) return null;
    await this.pc.setLocalDescription();
    return this.pc.localDescription.sdp;
  }

  /** The listener's side: takes the dialler's offer; the answer's SDP, or null. */
  async rtcAnswer(sdp) {
    if (!this.rtcStart()) return null;
    try {
      await this.pc.setRemoteDescription({ type: "offer", sdp });
      await this.rtcRemoteSet();
      await this.pc.setLocalDescription();
      return this.pc.localDescription.sdp;
    } catch (_) {
      this.rtcStop();
      return null;
    }
  }

  /** The dialler takes the answer's SDP; none (a peer without WebRTC): relayed only. */
  async rtcAnswered(sdp) {
    if (!this.pc) return;
    if (sdp === null) return this.rtcStop();
    try {
      await this.pc.setRemoteDescription({ type: "answer", sdp });
      await this.rtcRemoteSet();
    } catch (_) {
      this.rtcStop();
    }
  }

  /** A candidate signal (an RTCIceCandidateInit's JSON) of the peer. */
  async rtcCandidate(body) {
    if (!this.pc) return;
    if (!this.pc.remoteDescription) return void this.remoteCandidates.push(body);
    try { await this.pc.addIceCandidate(JSON.parse(body)); } catch (_) { /* not one we can use */ }
  }

  async rtcRemoteSet() {
    for (const c of this.remoteCandidates.splice(0)) await this.rtcCandidate(c);
  }

  rtcStart() {
    if (!this.node.iceServers || typeof RTCPeerConnection !== "function") return false;
    const pc = new RTCPeerConnection({ iceServers: this.node.iceServers });
    const reliable = pc.createDataChannel("burrow", DC_RELIABLE);
    const unreliable = pc.createDataChannel("burrow-unreliable", DC_UNRELIABLE);
    for (const dc of [reliable, unreliable]) {
      dc.binaryType = "arraybuffer";
      dc.onopen = dc.onclose = () => this.rtcPath();
      dc.onmessage = (e) => this.accept(new Uint8Array(e.data), true);
    }
    pc.onconnectionstatechange = () => this.rtcPath();
    pc.onicecandidate = (e) => {
      if (!e.candidate || !e.candidate.candidate) return;
      const body = JSON.stringify(e.candidate.toJSON());
      if (!this.ready) return void this.localCandidates.push(body);
      this.node.signal(this.peer, "candidate", body, this.session).catch(() => {});
    };
    this.pc = pc;
    this.channels = { reliable, unreliable };
    return true;
  }

  rtcStop() {
    this.pc?.close();
    this.pc = null;
    this.channels = null;
    this.rtcPath();
  }

  /** Whether the direct path carries messages now. */
  get directUp() {
    return this.pc?.connectionState === "connected" && this.channels?.reliable.readyState === "open";
  }

  /** Follows the direct path's state: messages unacknowledged on the path left are sent again
   * on the new one. */
  rtcPath() {
    if (this.closedWhy) return;
    const path = this.directUp ? "direct" : "relay";
    if (path === this.path) return;
    this.path = path;
    for (const [seq, m] of this.unacked) {
      if (path === "direct") {
        this.counts.resent++;
        this.transmit(M_DATA, seq, m.bytes);
      } else if (m.direct) {
        m.sentAt = 0;
        m.resendMs = RESEND_FIRST_MS;
      }
    }
    this.onpathchange?.(path);
    if (path === "relay") this.resend();
  }

  // --- Sending and receiving -------------------------------------------------------------

  flush() {
    if (!this.ready) return;
    while (this.queued.length && this.unacked.size < WINDOW) {
      const bytes = this.queued.shift();
      const seq = this.nextSeq++;
      this.unacked.set(seq, { bytes, sentAt: Date.now(), resendMs: RESEND_FIRST_MS, direct: false });
      this.counts.sent++;
      this.counts.bytesSent += bytes.length;
      this.transmit(M_DATA, seq, bytes);
    }
  }

  tick() {
    this.resend();
    const now = Date.now();
    if (this.ready && now - this.lastSent >= KEEPALIVE_MS) this.transmit(M_ACK, this.delivered);
    if (now - this.lastHeard >= IDLE_TIMEOUT_MS) this.ended("the peer went silent");
  }

  resend() {
    const now = Date.now();
    for (const [seq, m] of this.unacked) {
      // The data channel is reliable itself: what went on it is not sent again while it lives.
      if (m.direct && this.path === "direct") continue;
      if (now - m.sentAt < m.resendMs) continue;
      m.sentAt = now;
      m.resendMs = Math.min(m.resendMs * 2, RESEND_MAX_MS);
      this.counts.resent++;
      this.transmit(M_DATA, seq, m.bytes);
    }
  }

  /** Sends one message on the path in use: on the data channel as it is (type, number or
   * acknowledged count, bytes), or through the relay as one encrypted datagram (magic,
   * session, counter (the nonce), then AES-GCM of the same). */
  async transmit(type, seq, bytes = new Uint8Array(0)) {
    this.lastSent = Date.now();
    const plain = concat(new Uint8Array([type]), u64(seq), bytes);
    if (this.path === "direct") {
      const dc = type === M_UNRELIABLE ? this.channels.unreliable : this.channels.reliable;
      try {
        dc.send(plain);
        const m = type === M_DATA && this.unacked.get(seq);
        if (m) { m.direct = true; this.counts.sentDirect++; }
        return;
      } catch (_) { /* closing: through the relay instead */ }
    }
    const counter = this.sendCounter++;
    const head = concat(CONN_MAGIC, u64(this.session), u64(counter));
    const iv = concat(new Uint8Array(4), u64(counter));
    const sealed = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: head }, this.sendKey, plain));
    try { this.node.send(this.peer, concat(head, sealed)); } catch (_) { /* resent later */ }
  }

  /** A datagram of this session from the relay. */
  async received(datagram) {
    if (!this.recvKey) return;
    const head = datagram.subarray(0, 20);
    const iv = concat(new Uint8Array(4), datagram.subarray(12, 20));
    let plain;
    try {
      plain = new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv, additionalData: head }, this.recvKey, datagram.subarray(20)));
    } catch (_) {
      return; // not the peer's: the relay or anyone else cannot make one that decrypts
    }
    this.accept(plain, false);
  }

  /** One message of either path: data is put in order and acknowledged. */
  accept(plain, direct) {
    if (plain.length < 9 || this.closedWhy) return;
    this.lastHeard = Date.now();
    const seq = new DataView(plain.buffer, plain.byteOffset).getBigUint64(1);
    if (plain[0] === M_ACK) {
      for (const s of this.unacked.keys()) if (s < seq) this.unacked.delete(s);
      return this.flush();
    }
    if (plain[0] === M_UNRELIABLE) return this.onmessage?.(plain.slice(9), { reliable: false });
    if (plain[0] !== M_DATA) return;
    if (seq >= this.delivered && seq < this.delivered + BigInt(WINDOW) && !this.early.has(seq)) {
      this.early.set(seq, plain.slice(9));
      if (direct) this.counts.receivedDirect++;
    }
    while (this.early.has(this.delivered)) {
      const bytes = this.early.get(this.delivered);
      this.early.delete(this.delivered);
      this.delivered++;
      this.counts.received++;
      this.counts.bytesReceived += bytes.length;
      this.onmessage?.(bytes, { reliable: true });
    }
    this.transmit(M_ACK, this.delivered);
  }
}

/**
 * Connects to `relay` (its URL as the relay knows itself, e.g. "https://relay.example.org:8443")
 * with the page's key under `keyName`; resolves once the relay has taken the key's proof.
 * Connections try a direct WebRTC path unless `webrtc` is false, with `iceServers` if given,
 * else those of the relay's GET /ice (its STUN service).
 */
export async function connect({ relay, keyName = "default", key = null, webrtc = true, iceServers = null } = {}) {
  relay = relay.replace(/\/+$/, "");
  key = key ?? (await loadKey(keyName));
  const id = new Uint8Array(await crypto.subtle.exportKey("raw", key.publicKey));
  if (!webrtc || typeof RTCPeerConnection !== "function") iceServers = null;
  else if (!iceServers) {
    try { iceServers = (await (await fetch(`${relay}/ice`)).json()).iceServers ?? []; } catch (_) { iceServers = []; }
  }
  const node = new Node(relay, key, id, iceServers);
  const ws = new WebSocket(`${relay.replace(/^http/, "ws")}/relay`);
  ws.binaryType = "arraybuffer";
  node.ws = ws;
  await new Promise((resolve, reject) => {
    let authed = false;
    ws.onmessage = async (e) => {
      if (typeof e.data === "string") return;
      const frame = new Uint8Array(e.data);
      if (authed) {
        node.inbound = node.inbound.then(() => node.handle(frame)).catch(() => {});
        return;
      }
      if (frame[0] === T_SERVER_HELLO && frame.length === 34) {
        if (frame[1] !== PROTOCOL_VERSION) return reject(new Error(`the relay speaks protocol ${frame[1]}, this module ${PROTOCOL_VERSION}`));
        const url = te.encode(relay);
        const sig = await sign(key, concat(AUTH_DOMAIN, frame.subarray(2), id, url));
        ws.send(concat(new Uint8Array([T_CLIENT_AUTH, PROTOCOL_VERSION]), id, sig, url));
      } else if (frame[0] === T_AUTH_OK && frame.length === 5) {
        authed = true;
        const idleMs = new DataView(frame.buffer, frame.byteOffset).getUint32(1);
        node.pinger = setInterval(() => {
          if (ws.readyState === WebSocket.OPEN) ws.send(concat(new Uint8Array([T_PING]), crypto.getRandomValues(new Uint8Array(8))));
        }, Math.max(1000, idleMs / 3));
        resolve();
      }
    };
    ws.onclose = (e) => {
      clearInterval(node.pinger);
      if (!authed) reject(new Error(`the relay closed the connection: ${e.code} ${e.reason}`));
    };
    ws.onerror = () => { if (!authed) reject(new Error(`cannot reach the relay at ${relay}`)); };
  });
  return node;
}
