//! `burrow up`: a [`MeshNode`] behind the local API. Beside the API's core routes:
//!
//! | route | request | answer |
//! |---|---|---|
//! | `GET /v1/members` | | `{"mesh", "members": [{"name", "node_id", "number", "role", "me", "online", "path", "remote_addr", "rtt_ms"}]}` |
//! | `POST /v1/invites` | `{"expires_secs"?, "uses"?, "code"?}` (default a day, 1, false) | `{"token", "code", "expires", "uses"}`; `code` (`MESH-XXXX-XXXX-XXXX`, or null) when asked |
//! | `POST /v1/kick` | `{"member": NAME or NODE_ID}` | `{"node_id"}` |
//!
//! Errors beside the core ones: `not_admin` (403) and `unknown_member` (404).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::node::{MemberInfo, MeshNode, NodeError, DEFAULT_INVITE_TTL};
use crate::api::{
    watch_paths, ApiConfig, ApiError, ApiServer, ErrorCode, Event, NodeApi, Pong, Router,
    ServeError, PING_TIMEOUT,
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
        _ => ErrorCode::Internal,
    };
    ApiError::new(code, e.to_string())
}

/// The daemon's routes: the core ones and the mesh's.
fn router() -> Router<Daemon> {
    Router::new()
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
}

/// Serves `node` on the local API as `config` says, until the returned server shuts down.
pub async fn serve(node: MeshNode, config: &ApiConfig) -> Result<ApiServer, ServeError> {
    let (events, _) = broadcast::channel(EVENT_BACKLOG);
    // Runs for as long as the process: the daemon is the process.
    drop(watch_paths(node.endpoint().clone(), events.clone()));
    let daemon = Arc::new(Daemon {
        node,
        started: Instant::now(),
        events,
    });
    ApiServer::bind(config, router(), daemon).await
}
