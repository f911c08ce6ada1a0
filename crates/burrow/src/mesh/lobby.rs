//! `burrow up` on a node in no mesh yet: the local API, so that a program can join it to one
//! (`POST /v1/join`), after which `up` runs the mesh's daemon ([`super::daemon`]) on the same
//! socket. The core routes answer for the node's key alone, through an endpoint on loopback
//! that nobody is told about (no relays, no peers: `GET /v1/peers` is empty).
//!
//! | route | request | answer |
//! |---|---|---|
//! | `POST /v1/join` | `{"invite": TOKEN or CODE, "name"?, "relays"?: [URL]}` (a short code needs the relay its inviter is listed at) | `{"joined": true, "mesh", "path", "remote_addr", "name", "number", "node_id"}` |
//! | `GET /v1/members` | | `{"mesh": null, "members": []}` |
//! | `POST /v1/shutdown` | | `{"stopping": true}` |
//!
//! Errors beside the core ones: `join_refused` (403: the invite is bad, spent, expired, or the
//! inviter refused it), with a `"reason"` beside the code: `expired`, `used`, `revoked`,
//! `wrong_password`, `code_dead`, `name_taken`, `invalid` (tampered or mistyped) or `refused`
//! (anything else); and `join_failed` (502: the inviter could not be reached).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use hyper::Method;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use super::daemon::{shutdown_route, Stoppable};
use super::node::{join_any, Joined, NodeError, NodeOptions};
use super::state::{MeshState, StateError};
use crate::api::{ApiConfig, ApiError, ApiServer, ErrorCode, Event, NodeApi, Pong, Router};
use crate::endpoint::{BindError, Endpoint, EndpointOptions};
use crate::relay_client::RelayUrl;
use crate::NodeId;

/// How a node joined, as `POST /v1/join` and `burrow join --json` tell it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JoinAnswer {
    /// Always true.
    pub joined: bool,
    /// The mesh's name.
    pub mesh: String,
    /// `direct` or `relay`: the path to the inviter when it answered.
    pub path: String,
    /// The inviter's direct address, or the relay's URL.
    pub remote_addr: Option<String>,
    /// This node's name in the mesh.
    pub name: String,
    /// This node's member number.
    pub number: u32,
    /// This node's key.
    pub node_id: String,
}

impl JoinAnswer {
    /// What `join` and `joined` say of the node in `state`.
    pub fn new(state: &MeshState, joined: &Joined) -> JoinAnswer {
        let me = state.cert.cert();
        JoinAnswer {
            joined: true,
            mesh: joined.mesh.clone(),
            path: joined.path.to_owned(),
            remote_addr: joined.remote_addr.clone(),
            name: me.name.clone(),
            number: me.number,
            node_id: me.node_id.to_string(),
        }
    }
}

/// `POST /v1/join`'s body.
#[derive(Debug, Deserialize)]
struct JoinRequest {
    invite: String,
    name: Option<String>,
    #[serde(default)]
    relays: Vec<String>,
}

struct LobbyState {
    dir: PathBuf,
    opts: NodeOptions,
    endpoint: Endpoint,
    started: Instant,
    /// Nothing is ever sent: a lobby has no peers.
    events: broadcast::Sender<Event>,
    stop: watch::Sender<bool>,
    /// Set once the node has joined.
    joined: watch::Sender<Option<JoinAnswer>>,
    /// A join is under way (one at a time).
    joining: AtomicBool,
}

impl NodeApi for LobbyState {
    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn started(&self) -> Instant {
        self.started
    }

    fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    async fn ping(&self, node: NodeId) -> Result<Pong, ApiError> {
        Err(ApiError::new(
            ErrorCode::UnknownPeer,
            format!("{node} is no member: this node is in no mesh yet (POST /v1/join)"),
        ))
    }
}

impl Stoppable for LobbyState {
    fn stop(&self) -> &watch::Sender<bool> {
        &self.stop
    }
}

fn join_error(e: NodeError) -> ApiError {
    let code = match &e {
        NodeError::Connect(_) | NodeError::Bind(_) => ErrorCode::JoinFailed,
        NodeError::State(_) | NodeError::Publish(_) => ErrorCode::Internal,
        _ => ErrorCode::JoinRefused,
    };
    let message = crate::error_chain::Chain(&e).to_string();
    let error = ApiError::new(code, &message);
    match code {
        ErrorCode::JoinRefused => error.with_reason(refusal_reason(&message)),
        _ => error,
    }
}

/// Why a join was refused, for programs: the inviter's refusal reaches the joiner as its text
/// (a QUIC close reason), so this reads the phrases burrow's own checks write.
fn refusal_reason(message: &str) -> &'static str {
    const REASONS: [(&str, &str); 8] = [
        ("expired at", "expired"),
        ("already used", "used"),
        ("revoked", "revoked"),
        ("the code is wrong", "wrong_password"),
        ("dead after", "code_dead"),
        ("is taken", "name_taken"),
        ("checksum", "invalid"),
        ("signature", "invalid"),
    ];
    REASONS
        .iter()
        .find(|(phrase, _)| message.contains(phrase))
        .map_or("refused", |(_, reason)| reason)
}

/// Runs [`join_any`] on a thread of its own (and a runtime of its own, which the join's
/// endpoint lives and ends in), so a join finishes, and the node counts as joined, even if
/// the client that asked goes away; the answer comes on the channel. (It also gives the router
/// a future that is `Send` for every lifetime, which rustc cannot prove of the join's own:
/// rust-lang/rust#102211.)
fn start_join(
    l: Arc<LobbyState>,
    invite: String,
    relays: Vec<RelayUrl>,
    name: Option<String>,
) -> tokio::sync::oneshot::Receiver<Result<JoinAnswer, NodeError>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| NodeError::Join(format!("a runtime for the join: {e}")))
            .and_then(|rt| {
                rt.block_on(join_any(
                    &l.dir,
                    &invite,
                    &relays,
                    name.as_deref(),
                    l.opts.clone(),
                ))
            })
            .map(|(state, joined)| JoinAnswer::new(&state, &joined));
        if let Ok(answer) = &result {
            l.joined.send_replace(Some(answer.clone()));
        }
        l.joining.store(false, Ordering::Release);
        let _ = tx.send(result);
    });
    rx
}

/// `GET /v1/members` before a mesh: none.
#[derive(Serialize)]
struct NoMembers {
    mesh: Option<String>,
    members: [(); 0],
}

fn router() -> Router<LobbyState> {
    shutdown_route(Router::new())
        .route(Method::GET, "/v1/members", |_: Arc<LobbyState>, _| async {
            Ok(NoMembers {
                mesh: None,
                members: [],
            })
        })
        .route(
            Method::POST,
            "/v1/join",
            |l: Arc<LobbyState>, req| async move {
                let r: JoinRequest = req.json()?;
                let relays = r
                    .relays
                    .iter()
                    .map(|u| u.parse::<RelayUrl>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("relays: {e}")))?;
                if let Some(done) = l.joined.borrow().clone() {
                    return Err(ApiError::new(
                        ErrorCode::AlreadyMember,
                        format!("this node joined mesh {} already", done.mesh),
                    ));
                }
                if l.joining.swap(true, Ordering::AcqRel) {
                    return Err(ApiError::new(
                        ErrorCode::AlreadyMember,
                        "this node is joining a mesh already",
                    ));
                }
                start_join(l.clone(), r.invite, relays, r.name)
                    .await
                    .unwrap_or_else(|_| Err(NodeError::Join("the join's thread ended".into())))
                    .map_err(join_error)
            },
        )
}

/// Why a lobby could not start.
#[derive(Debug, thiserror::Error)]
pub enum LobbyError {
    /// The node's key.
    #[error(transparent)]
    State(#[from] StateError),
    /// Its endpoint.
    #[error("endpoint")]
    Bind(#[from] BindError),
    /// Its API.
    #[error(transparent)]
    Serve(#[from] crate::api::ServeError),
}

/// The API of a node in no mesh yet, until it joins one or is asked to stop.
pub struct Lobby {
    api: ApiServer,
    state: Arc<LobbyState>,
}

impl std::fmt::Debug for Lobby {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lobby")
            .field("dir", &self.state.dir)
            .finish_non_exhaustive()
    }
}

impl Lobby {
    /// Serves the API as `config` says for the node whose mesh directory `dir` will be (its
    /// key is made there if missing); joins run with `opts`.
    pub async fn serve(
        dir: PathBuf,
        opts: NodeOptions,
        config: &ApiConfig,
    ) -> Result<Lobby, LobbyError> {
        crate::paths::private_dir(&dir).map_err(StateError::from)?;
        let key =
            crate::keyfile::load_or_create(&dir.join("node.key")).map_err(StateError::from)?;
        let endpoint = Endpoint::bind(
            key,
            EndpointOptions {
                bind_v4: (std::net::Ipv4Addr::LOCALHOST, 0).into(),
                bind_v6: None,
                alpns: vec![b"burrow/lobby".to_vec()],
                ..Default::default()
            },
        )
        .await?;
        let state = Arc::new(LobbyState {
            dir,
            opts,
            endpoint,
            started: Instant::now(),
            events: broadcast::channel(1).0,
            stop: watch::Sender::new(false),
            joined: watch::Sender::new(None),
            joining: Default::default(),
        });
        let api = ApiServer::bind(config, router(), state.clone()).await?;
        Ok(Lobby { api, state })
    }

    /// How the node joined, once it has; `None` once a client asked the lobby to stop.
    pub async fn joined(&self) -> Option<JoinAnswer> {
        let mut joined = self.state.joined.subscribe();
        let mut stop = self.state.stop.subscribe();
        tokio::select! {
            j = joined.wait_for(Option::is_some) => j.ok().and_then(|j| j.clone()),
            _ = stop.wait_for(|s| *s) => None,
        }
    }

    /// Closes the API (its socket file goes) and the endpoint.
    pub async fn shutdown(self) {
        self.api.shutdown().await;
        self.state.endpoint.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burrow_proto::mesh::pake::Failure;
    use burrow_proto::mesh::MeshError;

    #[test]
    fn refusals_read_as_their_reasons_from_the_errors_own_words() {
        let expired = MeshError::Expired {
            not_after: 1,
            now: 2,
        };
        let cases = [
            (format!("invite: {expired}"), "expired"),
            ("invite: already used".into(), "used"),
            ("this node was revoked from the mesh".into(), "revoked"),
            (Failure::WrongCode.to_string(), "wrong_password"),
            (Failure::Burned.to_string(), "code_dead"),
            ("the name b is taken in the mesh".into(), "name_taken"),
            (MeshError::Signature.to_string(), "invalid"),
            (
                burrow_proto::mesh::FormatError::Checksum.to_string(),
                "invalid",
            ),
            ("not issued here".into(), "refused"),
        ];
        for (message, reason) in cases {
            assert_eq!(refusal_reason(&message), reason, "{message}");
        }
    }
}
