//! libtorrent as a test oracle: drives `libtorrent_dht.py` (beside this file), a private DHT
//! of libtorrent sessions on loopback addresses, over its stdin/stdout JSON lines.
//!
//! Needs Debian's `python3-libtorrent` under `/usr/bin/python3` (`test.sh` installs it).
//! Without it [`Libtorrent::start`] returns `None` and says the test skips, except under CI
//! (`CI` set), where a missing libtorrent fails the test.

// Included by test crates that each use part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{json, Value};

/// Debian's python, the one its `python3-libtorrent` is built for (not a pyenv one on PATH).
const PYTHON: &str = "/usr/bin/python3";

/// A running helper and its libtorrent DHT nodes; dropping it stops them.
pub(crate) struct Libtorrent {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// The sessions' DHT addresses, `IP:PORT`, in session order.
    pub nodes: Vec<String>,
}

/// A mutable item as libtorrent got it (its signature already checked by libtorrent).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Item {
    pub seq: i64,
    pub value: Vec<u8>,
    pub signature: [u8; 64],
}

impl Libtorrent {
    /// Starts `sessions` libtorrent DHT nodes on 127.0.0.2 and up, joined to each other
    /// unless `isolated`. `None` (with a note on stderr) when python3-libtorrent is missing.
    pub(crate) fn start(sessions: usize, isolated: bool) -> Option<Libtorrent> {
        if !available() {
            let why = "python3-libtorrent is missing (./test.sh installs it: apt-get install \
                       python3-libtorrent)";
            assert!(std::env::var_os("CI").is_none(), "{why}");
            eprintln!("skipped: {why}");
            return None;
        }
        // From crates/burrow or a sibling crate that includes this module.
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../burrow/tests/support/libtorrent_dht.py");
        let mut cmd = Command::new(PYTHON);
        cmd.arg(&script).arg("--sessions").arg(sessions.to_string());
        if isolated {
            cmd.arg("--isolated");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut lt = Libtorrent {
            child,
            stdin,
            stdout,
            nodes: Vec::new(),
        };
        let ready = lt.read_line();
        assert_eq!(ready["event"], "ready", "{ready}");
        lt.nodes = ready["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| n.as_str().expect("IP:PORT").to_string())
            .collect();
        Some(lt)
    }

    /// Sends one request and returns its reply; a failed request panics with the helper's
    /// error.
    pub(crate) fn request(&mut self, request: Value) -> Value {
        writeln!(self.stdin, "{request}").expect("helper's stdin");
        self.stdin.flush().expect("helper's stdin");
        let reply = self.read_line();
        assert_eq!(reply["ok"], true, "libtorrent helper: {request} -> {reply}");
        reply
    }

    /// Has `session` (or every session) add the DHT node at `addr` (`add_dht_node`).
    pub(crate) fn add_node(&mut self, session: Option<usize>, addr: &str) {
        let mut request = json!({"op": "add_node", "addr": addr});
        if let Some(s) = session {
            request["session"] = s.into();
        }
        self.request(request);
    }

    /// `dht_get_mutable_item` from `session`: the item under `key` and `salt`, if found.
    pub(crate) fn get(&mut self, session: usize, key: &[u8; 32], salt: &[u8]) -> Option<Item> {
        let reply = self.request(json!({
            "op": "get", "session": session, "key": hex(key), "salt": hex(salt),
        }));
        if reply["found"] != true {
            return None;
        }
        Some(Item {
            seq: reply["seq"].as_i64().expect("seq"),
            value: unhex(&reply["value"]),
            signature: unhex(&reply["signature"]).try_into().expect("64 bytes"),
        })
    }

    /// `dht_put_mutable_item` from `session`, signed by the key of `seed` (whose public key
    /// is `public_key`): libtorrent stores `value` with the seq it found plus one. Returns
    /// (seq, how many nodes stored it).
    pub(crate) fn put(
        &mut self,
        session: usize,
        seed: &[u8; 32],
        public_key: &[u8; 32],
        salt: &[u8],
        value: &[u8],
    ) -> (i64, u64) {
        let reply = self.request(json!({
            "op": "put", "session": session, "seed": hex(seed), "public_key": hex(public_key),
            "salt": hex(salt), "value": hex(value),
        }));
        (
            reply["seq"].as_i64().expect("seq"),
            reply["stored_at"].as_u64().expect("stored_at"),
        )
    }

    /// The nodes in `session`'s routing table, as `IP:PORT`.
    pub(crate) fn routing_table(&mut self, session: usize) -> Vec<String> {
        let reply = self.request(json!({"op": "routing_table", "session": session}));
        reply["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| n.as_str().expect("IP:PORT").to_string())
            .collect()
    }

    /// How many KRPC replies `session` has received from `addr`.
    pub(crate) fn replies(&mut self, session: usize, addr: &str) -> u64 {
        let reply = self.request(json!({"op": "replies", "session": session, "addr": addr}));
        reply["replies"].as_u64().expect("replies")
    }

    fn read_line(&mut self) -> Value {
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).expect("helper's stdout");
        assert!(n > 0, "the libtorrent helper exited (its stderr is above)");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("helper said {line:?}: {e}"))
    }
}

impl Drop for Libtorrent {
    fn drop(&mut self) {
        // Our own child, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether Debian's python imports libtorrent.
fn available() -> bool {
    Command::new(PYTHON)
        .args(["-c", "import libtorrent"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(v: &Value) -> Vec<u8> {
    let s = v.as_str().expect("hex string");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}
