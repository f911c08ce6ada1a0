//! `burrow up`: a [`MeshNode`] behind the local API. `GET /v1/status` gains its `mesh`
//! ([`MeshStatus`]); beside the API's core routes:
//!
//! | route | request | answer |
//! |---|---|---|
//! | `GET /v1/members` | | `{"mesh", "members": [{"name", "node_id", "number", "role", "me", "online", "path", "remote_addr", "rtt_ms", "nat_type", "last_seen"}]}`; `nat_type` as the member told it (`easy`, `hard`, `open`, or `null`), `last_seen` Unix seconds (now while connected, `null` if not since the daemon started) |
//! | `POST /v1/invites` | `{"expires_secs"?, "uses"?, "code"?}` (default a day, 1, false) | `{"token", "code", "expires", "uses"}`; `code` (`MESH-XXXX-XXXX-XXXX`, or null) when asked |
//! | `POST /v1/kick` | `{"member": NAME or NODE_ID}` | `{"node_id"}` |
//! | `POST /v1/shutdown` | | `{"stopping": true}`; then the daemon closes its connections and the API, and its socket file goes |
//! | `POST /v1/join` | | `already_member` (409): a node in a mesh joins no other (before it is in one, `burrow up` serves [`super::lobby`], where this route joins) |
//!
//! Errors beside the core ones: `not_admin` (403), `unknown_member` (404) and `already_member`
//! (409).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

pub mod traffic;

use super::forward::ForwardError;
use super::node::{MemberEvent, MemberInfo, MeshNode, NodeError, DEFAULT_INVITE_TTL};
use crate::api::{
    watch_paths, ApiConfig, ApiError, ApiServer, ErrorCode, Event, MeshStatus, NodeApi, PathView,
    Pong, Router, ServeError, Status, PING_TIMEOUT,
};
use crate::endpoint::Endpoint;
use crate::NodeId;

/// Events kept for slow API readers.
const EVENT_BACKLOG: usize = 256;

/// A mesh node as the local API shows it.
#[derive(Debug)]
pub struct Daemon {
    node: MeshNode,
    started: Instant,
    events: broadcast::Sender<Event>,
    /// Set by `POST /v1/shutdown`.
    stop: watch::Sender<bool>,
}

/// `GET /v1/members`.
#[derive(Debug, Serialize)]
struct Members {
    mesh: String,
    members: Vec<MemberInfo>,
}

/// `POST /v1/invites`.
#[derive(Debug, Deserialize)]
struct InviteRequest {
    expires_secs: Option<u64>,
    uses: Option<u16>,
    #[serde(default)]
    code: bool,
}

#[derive(Debug, Serialize)]
struct InviteAnswer {
    token: String,
    code: Option<String>,
    expires: u64,
    uses: u16,
}

/// `POST /v1/kick`.
#[derive(Debug, Deserialize)]
struct KickRequest {
    member: String,
}

#[derive(Debug, Serialize)]
struct KickAnswer {
    node_id: String,
}

/// `POST /v1/shutdown`.
#[derive(Debug, Serialize)]
struct ShutdownAnswer {
    stopping: bool,
}

impl NodeApi for Daemon {
    fn endpoint(&self) -> &Endpoint {
        self.node.endpoint()
    }

    fn started(&self) -> Instant {
        self.started
    }

    fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn status(&self) -> Status {
        let members = self.node.members();
        let me = members.iter().find(|m| m.me);
        Status {
            mesh: Some(MeshStatus {
                name: self.node.mesh_name(),
                mesh_id: self.node.roster().roster().mesh_id.to_string(),
                node_name: me.map(|m| m.name.clone()).unwrap_or_default(),
                role: me.map_or("member", |m| m.role).to_owned(),
                number: me.map_or(0, |m| m.number),
                members_online: members.iter().filter(|m| m.online).count(),
                members_total: members.len(),
            }),
            ..Status::new(self.node.endpoint(), self.started)
        }
    }

    async fn ping(&self, node: NodeId) -> Result<Pong, ApiError> {
        match self.node.ping(&node, PING_TIMEOUT).await {
            Some(rtt) => Ok(Pong::new(self.node.endpoint(), node, rtt)),
            None => Err(ApiError::new(
                ErrorCode::UnknownPeer,
                format!("no answer from {node}: not a connected member"),
            )),
        }
    }
}

fn api_error(e: NodeError) -> ApiError {
    let code = match &e {
        NodeError::NotAdmin(_) => ErrorCode::NotAdmin,
        NodeError::NoMember(_) => ErrorCode::UnknownMember,
        NodeError::Offline(_) => ErrorCode::MemberOffline,
        NodeError::StreamRefused { .. } => ErrorCode::StreamRefused,
        NodeError::DatagramTooLarge { .. } => ErrorCode::PayloadTooLarge,
        NodeError::Forward(f) => match f {
            ForwardError::NotExposed(_) => ErrorCode::NotExposed,
            ForwardError::UnknownForward(_) => ErrorCode::UnknownForward,
            ForwardError::Taken(_) | ForwardError::Bind { .. } => ErrorCode::ForwardFailed,
            ForwardError::PortZero | ForwardError::NoStableAddress(_) => ErrorCode::BadRequest,
            ForwardError::Save(_) => ErrorCode::Internal,
        },
        _ => ErrorCode::Internal,
    };
    ApiError::new(code, crate::error_chain::Chain(&e).to_string())
}

/// The daemon's routes: the core ones and the mesh's.
fn router() -> Router<Daemon> {
    let router = Router::new()
        .route(Method::GET, "/v1/members", |d: Arc<Daemon>, _| async move {
            Ok(Members {
                mesh: d.node.mesh_name(),
                members: d.node.members(),
            })
        })
        .route(
            Method::POST,
            "/v1/invites",
            |d: Arc<Daemon>, req| async move {
                let r: InviteRequest = req.json()?;
                let ttl = r
                    .expires_secs
                    .map_or(DEFAULT_INVITE_TTL, Duration::from_secs);
                let uses = r.uses.unwrap_or(1);
                let (code, token) = if r.code {
                    let (code, token) = d.node.invite_code(ttl, uses).await.map_err(api_error)?;
                    (Some(code.to_string()), token)
                } else {
                    (None, d.node.invite(ttl, uses).map_err(api_error)?)
                };
                Ok(InviteAnswer {
                    code,
                    expires: token.invite().expires,
                    uses: token.invite().uses,
                    token: token.to_string(),
                })
            },
        )
        .route(Method::POST, "/v1/kick", |d: Arc<Daemon>, req| async move {
            let r: KickRequest = req.json()?;
            let node = d.node.kick(&r.member).map_err(api_error)?;
            Ok(KickAnswer {
                node_id: node.to_string(),
            })
        })
        .route(Method::POST, "/v1/join", |d: Arc<Daemon>, _| async move {
            Err::<(), _>(ApiError::new(
                ErrorCode::AlreadyMember,
                format!(
                    "this node is a member of mesh {} already",
                    d.node.mesh_name()
                ),
            ))
        });
    shutdown_route(traffic::routes(router))
}

/// A daemon that `POST /v1/shutdown` stops.
pub(super) trait Stoppable: NodeApi {
    /// Set to true to stop.
    fn stop(&self) -> &watch::Sender<bool>;
}

impl Stoppable for Daemon {
    fn stop(&self) -> &watch::Sender<bool> {
        &self.stop
    }
}

/// `router` with `POST /v1/shutdown`.
pub(super) fn shutdown_route<S: Stoppable>(router: Router<S>) -> Router<S> {
    router.route(Method::POST, "/v1/shutdown", |d: Arc<S>, _| async move {
        d.stop().send_replace(true);
        Ok(ShutdownAnswer { stopping: true })
    })
}

/// A daemon at work: its node behind its API, until [`Running::shutdown`].
#[derive(Debug)]
pub struct Running {
    api: ApiServer,
    daemon: Arc<Daemon>,
}

impl Running {
    /// The API server (where it listens).
    pub fn api(&self) -> &ApiServer {
        &self.api
    }

    /// Resolves once a client asked the daemon to stop (`POST /v1/shutdown`).
    pub async fn stop_requested(&self) {
        let _ = self.daemon.stop.subscribe().wait_for(|s| *s).await;
    }

    /// Stops: closes the node's connections (members see it go at once), then the API, whose
    /// socket file goes last.
    pub async fn shutdown(self) {
        self.daemon.node.shutdown().await;
        self.api.shutdown().await;
    }
}

/// Passes `node`'s member events on to the API's clients.
async fn tell_member_events(node: MeshNode, events: broadcast::Sender<Event>) {
    let mut members = node.events();
    loop {
        let event = match members.recv().await {
            Ok(MemberEvent::Connected(node_id)) => Event::PeerUp {
                node_id,
                path: PathView::from(&node.endpoint().path(&node_id)),
            },
            Ok(MemberEvent::Disconnected(node_id)) => Event::PeerDown { node_id },
            Ok(MemberEvent::Joined {
                node: node_id,
                name,
            }) => Event::MemberJoined { node_id, name },
            Ok(MemberEvent::Revoked(node_id)) => Event::MemberRevoked { node_id },
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        // Nobody subscribed is no reason to stop: a client may subscribe later.
        let _ = events.send(event);
    }
}

/// Serves `node` on the local API as `config` says, until [`Running::shutdown`].
pub async fn serve(node: MeshNode, config: &ApiConfig) -> Result<Running, ServeError> {
    let (events, _) = broadcast::channel(EVENT_BACKLOG);
    // Both run for as long as the process: the daemon is the process.
    drop(watch_paths(node.endpoint().clone(), events.clone()));
    drop(tokio::spawn(tell_member_events(
        node.clone(),
        events.clone(),
    )));
    let daemon = Arc::new(Daemon {
        node,
        started: Instant::now(),
        events,
        stop: watch::Sender::new(false),
    });
    let api = ApiServer::bind(config, router(), daemon.clone()).await?;
    Ok(Running { api, daemon })
}
