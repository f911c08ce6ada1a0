//! The routes every daemon has, with or without a mesh: status, peers, ping and events; the
//! state trait the daemon implements for them; and their JSON.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::error::{ApiError, ErrorCode};
use super::events::Event;
use super::router::Router;
use super::{as_str, millis};
use crate::endpoint::{Endpoint, PathInfo};
use crate::relay_client::{RelayConnState, RelayUrl};
use crate::ticket::Ticket;
use crate::NodeId;

/// A ping that takes longer is answered with [`ErrorCode::PeerTimeout`].
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// What the core routes need from the daemon, which keeps owning its endpoint: the server only
/// reads through this.
pub trait NodeApi: Send + Sync + 'static {
    /// The daemon's endpoint.
    fn endpoint(&self) -> &Endpoint;

    /// When the daemon started.
    fn started(&self) -> Instant;

    /// A new subscription to the daemon's events (from the `tokio::sync::broadcast::Sender`
    /// it publishes them on), for one `GET /v1/events` client.
    fn events(&self) -> broadcast::Receiver<Event>;

    /// One round trip to `node` now (`POST /v1/ping`), over the daemon's connection to it;
    /// [`ErrorCode::UnknownPeer`] if there is none. [`Pong::new`] writes the answer. The
    /// server gives up after [`PING_TIMEOUT`].
    fn ping(&self, node: NodeId) -> impl Future<Output = Result<Pong, ApiError>> + Send;

    /// `GET /v1/status`: by default, the endpoint's.
    fn status(&self) -> Status {
        Status::new(self.endpoint(), self.started())
    }

    /// `GET /v1/peers`: by default, the endpoint's peers.
    fn peers(&self) -> Vec<PeerInfo> {
        PeerInfo::list(self.endpoint())
    }
}

impl<S: NodeApi> Router<S> {
    /// The core routes: `GET /v1/status`, `GET /v1/peers`, `POST /v1/ping`, `GET /v1/events`.
    pub fn new() -> Router<S> {
        Router::empty()
            .route(Method::GET, "/v1/status", |s: Arc<S>, _| async move {
                Ok(s.status())
            })
            .route(Method::GET, "/v1/peers", |s: Arc<S>, _| async move {
                Ok(Peers { peers: s.peers() })
            })
            .route(Method::POST, "/v1/ping", |s: Arc<S>, req| async move {
                let PingRequest { node } = req.json()?;
                tokio::time::timeout(PING_TIMEOUT, s.ping(node))
                    .await
                    .unwrap_or_else(|_| {
                        Err(ApiError::new(
                            ErrorCode::PeerTimeout,
                            format!("no answer from {node} within {PING_TIMEOUT:?}"),
                        ))
                    })
            })
            .socket(super::events::PATH, |s: Arc<S>, _| async move {
                // Subscribed before the 101 goes out: whatever is published after it arrives.
                Ok(super::events::serve(s.events()))
            })
    }
}

impl<S: NodeApi> Default for Router<S> {
    fn default() -> Self {
        Router::new()
    }
}

/// `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The daemon's node id.
    #[serde(with = "as_str")]
    pub node_id: NodeId,
    /// burrow's version.
    pub version: String,
    /// Since the daemon started.
    pub uptime_ms: u64,
    /// A ticket for the endpoint: its key, relays and addresses.
    #[serde(with = "as_str")]
    pub ticket: Ticket,
    /// Its direct addresses (the public one first, once STUN has answered).
    pub addrs: Vec<SocketAddr>,
    /// What it knows of its NAT: `easy`, `hard` or `open`
    /// ([`nat_name`](burrow_proto::mesh::info::nat_name)); `null` until STUN answers.
    #[serde(default)]
    pub nat_type: Option<String>,
    /// Its relays.
    pub relays: Vec<RelayInfo>,
    /// The mesh it is a node of, for a mesh daemon.
    #[serde(default)]
    pub mesh: Option<MeshStatus>,
}

/// A mesh daemon's mesh in [`Status`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshStatus {
    /// The mesh's name.
    pub name: String,
    /// Its id.
    pub mesh_id: String,
    /// This node's name in it.
    pub node_name: String,
    /// This node's role: `admin` or `member`.
    pub role: String,
    /// This node's member number.
    pub number: u32,
    /// Members connected now, this node included.
    pub members_online: usize,
    /// Members in the roster.
    pub members_total: usize,
}

impl Status {
    /// The status of `endpoint`, running since `started`.
    pub fn new(endpoint: &Endpoint, started: Instant) -> Status {
        let relays = endpoint.relay().map(|r| r.state().borrow().clone());
        let relays = relays.map_or_else(Vec::new, |state| {
            state
                .relays
                .iter()
                .map(|r| RelayInfo::new(&r.url, &r.state, r.connects, state.home.as_ref()))
                .collect()
        });
        let ticket = endpoint.ticket();
        Status {
            node_id: endpoint.node_id(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_ms: started.elapsed().as_millis() as u64,
            addrs: ticket.addrs.clone(),
            ticket,
            nat_type: endpoint
                .nat()
                .map(|n| burrow_proto::mesh::info::nat_name(n).to_owned()),
            relays,
            mesh: None,
        }
    }
}

/// One relay in [`Status`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RelayInfo {
    /// The relay.
    #[serde(with = "as_str")]
    pub url: RelayUrl,
    /// Whether relayed traffic goes through it.
    pub home: bool,
    /// Its connection.
    pub state: RelayState,
    /// The round trip to it, once connected and measured.
    pub rtt_ms: Option<f64>,
    /// Successful handshakes so far.
    pub connects: u64,
    /// Why the last attempt failed, while waiting to retry.
    pub error: Option<String>,
}

/// A relay connection's state in [`RelayInfo`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayState {
    /// Connecting or authenticating.
    Connecting,
    /// Datagrams flow.
    Connected,
    /// Waiting before the next attempt.
    Backoff,
    /// The client was closed.
    Closed,
}

impl RelayState {
    /// The state as JSON has it.
    pub fn as_str(self) -> &'static str {
        match self {
            RelayState::Connecting => "connecting",
            RelayState::Connected => "connected",
            RelayState::Backoff => "backoff",
            RelayState::Closed => "closed",
        }
    }
}

impl RelayInfo {
    fn new(url: &RelayUrl, conn: &RelayConnState, connects: u64, home: Option<&RelayUrl>) -> Self {
        let (state, rtt, error) = match conn {
            RelayConnState::Connecting { .. } => (RelayState::Connecting, None, None),
            RelayConnState::Connected { rtt, .. } => (RelayState::Connected, *rtt, None),
            RelayConnState::Backoff { error, .. } => {
                (RelayState::Backoff, None, Some(error.clone()))
            }
            RelayConnState::Closed => (RelayState::Closed, None, None),
        };
        RelayInfo {
            url: url.clone(),
            home: home == Some(url),
            state,
            rtt_ms: rtt.map(millis),
            connects,
            error,
        }
    }
}

/// Straight or through a relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// Straight over UDP.
    Direct,
    /// Through the home relay.
    Relay,
}

impl PathKind {
    /// `direct` or `relay`, as JSON has it.
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::Relay => "relay",
        }
    }
}

/// How a peer is reached: in [`PeerInfo`] and path events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PathView {
    /// Direct or relayed.
    pub path: PathKind,
    /// The peer's address on a direct path; the relay's URL on a relayed one.
    pub remote_addr: Option<String>,
    /// The direct path's round trip as hole punching last measured it; `null` when relayed.
    pub rtt_ms: Option<f64>,
}

impl From<&PathInfo> for PathView {
    fn from(p: &PathInfo) -> Self {
        match p {
            PathInfo::Direct(d) => PathView {
                path: PathKind::Direct,
                remote_addr: Some(d.addr.to_string()),
                // Zero until a probe has measured it (a path taken on a peer's first ping).
                rtt_ms: (!d.rtt.is_zero()).then(|| millis(d.rtt)),
            },
            PathInfo::Relay(url) => PathView {
                path: PathKind::Relay,
                remote_addr: url.as_ref().map(ToString::to_string),
                rtt_ms: None,
            },
        }
    }
}

/// One peer in `GET /v1/peers`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Its key.
    #[serde(with = "as_str")]
    pub node_id: NodeId,
    /// How it is reached.
    #[serde(flatten)]
    pub path: PathView,
    /// Since a QUIC packet last went to or came from it.
    pub idle_ms: Option<u64>,
}

impl PeerInfo {
    /// The peers of `endpoint`, by node id.
    pub fn list(endpoint: &Endpoint) -> Vec<PeerInfo> {
        let mut peers: Vec<PeerInfo> = endpoint
            .peers()
            .into_iter()
            .map(|p| PeerInfo {
                node_id: p.node,
                path: PathView::from(&p.path),
                idle_ms: p.last_activity.map(|t| t.elapsed().as_millis() as u64),
            })
            .collect();
        peers.sort_by_cached_key(|p| p.node_id.to_string());
        peers
    }
}

/// `GET /v1/peers`.
#[derive(Serialize, Deserialize)]
pub(super) struct Peers {
    pub(super) peers: Vec<PeerInfo>,
}

/// `POST /v1/ping`'s body.
#[derive(Serialize, Deserialize)]
pub(super) struct PingRequest {
    #[serde(with = "as_str")]
    pub(super) node: NodeId,
}

/// `POST /v1/ping`'s answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pong {
    /// The peer.
    #[serde(with = "as_str")]
    pub node_id: NodeId,
    /// The path the ping took.
    pub path: PathKind,
    /// The peer's address on a direct path; the relay's URL on a relayed one.
    pub remote_addr: Option<String>,
    /// The round trip.
    pub rtt_ms: f64,
}

impl Pong {
    /// The answer to a ping of `node` that took `rtt`, with the path `endpoint` reaches it by.
    pub fn new(endpoint: &Endpoint, node: NodeId, rtt: Duration) -> Pong {
        let PathView {
            path, remote_addr, ..
        } = PathView::from(&endpoint.path(&node));
        Pong {
            node_id: node,
            path,
            remote_addr,
            rtt_ms: millis(rtt),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::DirectPath;

    #[test]
    fn paths_and_peers_read_as_documented() {
        let direct = PathInfo::Direct(DirectPath {
            addr: "192.0.2.1:4000".parse().unwrap(),
            rtt: Duration::from_micros(12_345),
            spare: None,
        });
        let node = crate::SecretKey::from_bytes([3; 32]).node_id();
        let peer = PeerInfo {
            node_id: node,
            path: PathView::from(&direct),
            idle_ms: Some(5),
        };
        let json = serde_json::to_value(&peer).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"node_id": node.to_string(), "path": "direct",
                "remote_addr": "192.0.2.1:4000", "rtt_ms": 12.35, "idle_ms": 5})
        );
        assert_eq!(serde_json::from_value::<PeerInfo>(json).unwrap(), peer);
        let relayed = PathView::from(&PathInfo::Relay(None));
        assert_eq!(
            serde_json::to_value(relayed).unwrap(),
            serde_json::json!({"path": "relay", "remote_addr": null, "rtt_ms": null})
        );
        assert!(serde_json::from_str::<PingRequest>(r#"{"node": "nonsense"}"#).is_err());
    }
}
