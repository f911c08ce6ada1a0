//! Mesh nodes for the tests: state directories, options for loopback, joins, restarts.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use burrow::mesh::node::{join, MeshNode, NodeOptions};
use burrow::mesh::state::MeshState;
use burrow_proto::relay::RelayUrl;

#[allow(dead_code)] // not used by every test file
pub(crate) fn dir(what: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    std::env::temp_dir().join(format!("burrow-mesh-{what}-{}-{nanos}", std::process::id()))
}

#[allow(dead_code)] // not used by every test file
pub(crate) fn opts() -> NodeOptions {
    NodeOptions {
        bind_v4: "127.0.0.1:0".parse().unwrap(),
        bind_v6: None,
        ..Default::default()
    }
}

/// Waits until `node` lists every one of `names` online, or `limit` passes.
#[allow(dead_code)] // not used by every test file
pub(crate) async fn all_online(node: &MeshNode, names: &[&str], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let members = node.members();
        let ok = names
            .iter()
            .all(|n| members.iter().any(|m| m.name == *n && m.online));
        if ok {
            return true;
        }
        if Instant::now() >= deadline {
            eprintln!("{:#?}", members);
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[allow(dead_code)] // not used by every test file
pub(crate) async fn joined(relay_url: &RelayUrl, admin: &MeshNode, name: &str) -> MeshNode {
    joined_in(&dir(name), relay_url, admin, name, opts()).await
}

/// A node that joins `admin`'s mesh as `name` with its state in `dir`, started with `opts`.
#[allow(dead_code)] // not used by every test file
pub(crate) async fn joined_in(
    dir: &std::path::Path,
    relay_url: &RelayUrl,
    admin: &MeshNode,
    name: &str,
    opts: NodeOptions,
) -> MeshNode {
    let token = admin.invite(Duration::from_secs(600), 1).expect("invite");
    assert_eq!(token.invite().inviter.relays, vec![relay_url.clone()]);
    assert!(
        token.invite().inviter.addrs.is_empty(),
        "no direct address in a token"
    );
    let (state, how) = join(dir, &token, Some(name), opts.clone())
        .await
        .expect("joins");
    assert_eq!(how.mesh, "lab");
    let joined_on = port_of(dir);
    let node = MeshNode::start(state, opts).await.expect("starts");
    // On the port it joined on, which the joining endpoint, just closed, lets go: members
    // hold the path found while joining.
    assert_eq!(node.endpoint().local_addr().unwrap().port(), joined_on);
    node
}

/// The UDP port a node with its state in `dir` bound last.
fn port_of(dir: &std::path::Path) -> u16 {
    std::fs::read_to_string(dir.join("port"))
        .expect("the node keeps its port")
        .trim()
        .parse()
        .unwrap()
}

/// Stops `node` and starts it again from its state in `dir`, with `opts`.
#[allow(dead_code)] // not used by every test file
pub(crate) async fn restart(node: MeshNode, dir: &std::path::Path, opts: NodeOptions) -> MeshNode {
    let port = node.endpoint().local_addr().unwrap().port();
    node.shutdown().await;
    drop(node);
    let node = start_from(dir, opts).await;
    assert_eq!(
        node.endpoint().local_addr().unwrap().port(),
        port,
        "the same port"
    );
    node
}

/// A node started from its state in `dir`, with `opts`.
#[allow(dead_code)] // not used by every test file
pub(crate) async fn start_from(dir: &std::path::Path, opts: NodeOptions) -> MeshNode {
    let state = MeshState::load(dir).expect("state loads");
    MeshNode::start(state, opts).await.expect("starts")
}
