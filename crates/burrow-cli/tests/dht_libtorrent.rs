//! `burrow dht-node` serving libtorrent's DHT (Debian's python3-libtorrent), on loopback only.
//! Without python3-libtorrent this skips, except under CI.

#[path = "../../burrow/tests/support/libtorrent.rs"]
mod libtorrent;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use burrow::SecretKey;
use libtorrent::Libtorrent;

/// A child process killed on drop, so a failing test leaves nothing running.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// libtorrent sends 2-byte transaction ids; a node that answered only 4-byte ones (mainline
/// 8.0.1) never got into its routing table and stored nothing for it.
#[test]
fn libtorrent_nodes_use_a_burrow_dht_node_to_store_and_find_items() {
    // Two libtorrent nodes that know nobody but the burrow node.
    let Some(mut lt) = Libtorrent::start(2, true) else {
        return;
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_burrow"))
        .args([
            "dht-node",
            "--json",
            "--bind",
            "127.0.0.1:0",
            "--no-bootstrap",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kept open to the end: the node prints more, and a closed pipe would end it.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let _node = Running(child);
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let started: serde_json::Value = serde_json::from_str(&first).expect("a JSON line");
    let addr = started["addr"].as_str().expect("addr").to_string();
    lt.add_node(None, &addr);

    // libtorrent keeps only nodes that answered it.
    let deadline = Instant::now() + Duration::from_secs(5);
    for session in 0..2 {
        while !lt.routing_table(session).contains(&addr) {
            assert!(
                Instant::now() < deadline,
                "the burrow node never entered libtorrent's routing table ({} replies from it)",
                lt.replies(session, &addr)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(lt.replies(session, &addr) > 0);
    }

    // One libtorrent node stores an item at the burrow node, the other reads it back there.
    let key = SecretKey::from_bytes(rand::random());
    let public = key.node_id();
    let (seq, stored_at) = lt.put(0, &key.to_bytes(), public.as_bytes(), b"salt", b"value");
    assert_eq!(stored_at, 1, "the burrow node took the item");
    let item = lt
        .get(1, public.as_bytes(), b"salt")
        .expect("found at the burrow node");
    assert_eq!(
        (item.seq, item.value.as_slice()),
        (seq, b"value".as_slice())
    );
}
