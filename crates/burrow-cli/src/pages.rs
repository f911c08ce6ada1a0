//! `burrow listen --webrtc`: answers burrow.js pages and echoes what they send, for browser
//! tests and demos.

use burrow::endpoint::Endpoint;
use burrow::pages::{PageConnection, Path};
use serde_json::json;

/// Accepts pages until the endpoint closes; each connection echoes on a task of its own.
pub(crate) async fn echo_pages(ep: Endpoint, json_out: bool) {
    while let Some(conn) = ep.accept_page().await {
        tokio::spawn(echo(conn, json_out));
    }
}

fn event(json_out: bool, value: serde_json::Value, line: String) {
    if json_out {
        println!("{value}");
    } else {
        eprintln!("{line}");
    }
}

fn path_name(p: Path) -> &'static str {
    match p {
        Path::Relay => "relay",
        Path::Direct => "direct",
    }
}

async fn echo(mut conn: PageConnection, json_out: bool) {
    let peer = conn.peer().to_string();
    event(
        json_out,
        json!({"event": "page_connected", "node_id": peer, "session": conn.session()}),
        format!("page {peer} connected (through the relay)"),
    );
    let mut paths = conn.path_updates();
    let (mut messages, mut bytes) = (0u64, 0u64);
    loop {
        tokio::select! {
            m = conn.recv() => {
                let Some(m) = m else { break };
                messages += 1;
                bytes += m.data.len() as u64;
                if conn.send(m.data, m.reliable).await.is_err() {
                    break;
                }
            }
            changed = paths.changed() => {
                if changed.is_err() {
                    break;
                }
                let path = path_name(*paths.borrow_and_update());
                event(
                    json_out,
                    json!({"event": "page_path", "node_id": peer, "path": path}),
                    format!("page {peer}: path {path}"),
                );
            }
        }
    }
    event(
        json_out,
        json!({"event": "page_closed", "node_id": peer, "messages": messages, "bytes": bytes}),
        format!("page {peer} closed after {messages} messages ({bytes} bytes), echoed"),
    );
}
