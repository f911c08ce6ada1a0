//! The daemon's local API: HTTP/1.1 and JSON on a Unix socket, and optionally on
//! `127.0.0.1:PORT`, for the `burrow` CLI and for programs in any language.
//!
//! The daemon owns its [`Endpoint`](crate::endpoint::Endpoint) and implements [`NodeApi`] to
//! show it; [`ApiServer::bind`] serves a [`Router`] of routes over that state, and
//! [`ApiClient`] calls them. A new route is one [`Router::route`] call on the server and one
//! [`ApiClient::get`] or [`ApiClient::post`] call on the client.
//!
//! # Who may call it
//!
//! - **Unix socket** (`api.sock` in [`crate::paths::runtime_dir`], a 0700 directory that must
//!   be ours; the socket itself is 0600): the kernel tells the server the caller's uid
//!   (`SO_PEERCRED`); callers other than the daemon's own user and root get `403
//!   forbidden_user` to every request.
//! - **TCP** (`127.0.0.1:PORT` only, off unless configured): every request needs
//!   `Authorization: Bearer TOKEN` with the token from a 0600 file (`api-token` in
//!   [`crate::paths::state_dir`], 64 hex digits, generated when missing; compared in constant
//!   time), else `401 unauthorized`; and a `Host` of `127.0.0.1:PORT` or `localhost:PORT`,
//!   else `403 forbidden_host` (DNS rebinding).
//! - **Both**: a request with an `Origin`, `Referer` or `Sec-Fetch-Site` header comes from a web
//!   page (or a browser, or a script pretending to be one) and gets `403 forbidden_origin`: a web
//!   page must never drive the daemon.
//!
//! The checks run in that order: a caller's uid, then origin, host and token.
//!
//! # Routes
//!
//! | route | request | answer |
//! |---|---|---|
//! | `GET /v1/status` | | [`Status`]: `{"node_id", "version", "uptime_ms", "ticket", "addrs": [str], "nat_type", "relays": [{"url", "home", "state", "rtt_ms", "connects", "error"}], "mesh"}`; `nat_type` is `easy`, `hard`, `open` or `null` (not known yet); `state` is `connecting`, `connected`, `backoff` or `closed`; `mesh` is a mesh daemon's [`MeshStatus`] (`{"name", "mesh_id", "node_name", "role", "number", "members_online", "members_total"}`), else `null` |
//! | `GET /v1/peers` | | `{"peers": [...]}`, each a [`PeerInfo`]: `{"node_id", "path", "remote_addr", "rtt_ms", "idle_ms"}`; `path` is `direct` or `relay`, `remote_addr` the peer's address or the relay's URL, `rtt_ms` the direct path's |
//! | `POST /v1/ping` | `{"node": NODE_ID}` | [`Pong`]: `{"node_id", "path", "remote_addr", "rtt_ms"}`, one round trip measured now |
//! | `GET /v1/events` | a WebSocket upgrade | one text message per [`Event`], JSON with an `"event"` key: `peer_up` and `path_changed` (with `node_id`, `path`, `remote_addr`, `rtt_ms`), `peer_down` (`node_id`), `lagged` (`missed`: events this slow reader lost) |
//!
//! Node ids and tickets are the strings `burrow` prints; times are milliseconds (`_ms`,
//! fractional for round trips); a value not known is `null`. Answers are `200` with a JSON
//! object; new keys may appear in any answer, so readers must ignore keys they do not know.
//!
//! # Errors
//!
//! Every error is `{"error": {"code": CODE, "message": TEXT}}` with a stable code ([`ErrorCode`];
//! the message is for people and may change):
//!
//! | status | code | when |
//! |---|---|---|
//! | 400 | `bad_request` | the body is not the JSON the route takes |
//! | 401 | `unauthorized` | TCP: no bearer token, or another one |
//! | 403 | `forbidden_origin` | the request has an `Origin`, `Referer` or `Sec-Fetch-Site` header |
//! | 403 | `forbidden_host` | TCP: the `Host` is not `127.0.0.1:PORT` or `localhost:PORT` |
//! | 403 | `forbidden_user` | Unix socket: the caller is another user, and not root |
//! | 404 | `not_found` | no such route |
//! | 404 | `unknown_peer` | the node is not one the daemon is connected to |
//! | 405 | `method_not_allowed` | the route exists with another method (see `Allow`) |
//! | 408 | `request_timeout` | the body did not arrive within 10 s |
//! | 413 | `payload_too_large` | the body is over 64 KiB |
//! | 500 | `internal` | the daemon failed |
//! | 504 | `peer_timeout` | the peer did not answer within 5 s |
//!
//! # Limits
//!
//! | limit | value |
//! |---|---|
//! | connections at once, per listener, event streams included (more wait in the backlog) | [`MAX_CONNECTIONS`], 64 |
//! | a request head (request line and headers) | [`MAX_HEAD_BYTES`], 16 KiB, within [`HEADER_TIMEOUT`], 10 s; an idle keep-alive connection closes after 10 s |
//! | a request body | [`MAX_BODY`], 64 KiB, within [`BODY_TIMEOUT`], 10 s |
//! | a ping | answered within [`PING_TIMEOUT`], 5 s |
//! | shutdown | requests under way get [`SHUTDOWN_GRACE`], 2 s; event streams get a close frame; the socket file is removed |
//!
//! ```text
//! $ curl --unix-socket "$XDG_RUNTIME_DIR/burrow/api.sock" http://localhost/v1/status
//! $ curl -H "Authorization: Bearer $(cat ~/.local/state/burrow/api-token)" http://127.0.0.1:PORT/v1/peers
//! ```

mod auth;
mod client;
mod error;
mod events;
mod node;
mod router;
mod server;

use tokio::io::{AsyncRead, AsyncWrite};

pub use auth::{default_token_path, Token, TokenError, TOKEN_FILE};
pub use client::{ApiClient, ClientError, EventStream};
pub use error::{ApiError, ErrorCode};
pub(crate) use events::{close as close_message, json_message};
pub use events::{watch_paths, Event};
pub use node::PING_TIMEOUT;
pub use node::{
    MeshStatus, NodeApi, PathKind, PathView, PeerInfo, Pong, RelayInfo, RelayState, Status,
};
pub use router::{ApiRequest, ApiSocket, Router, SocketTask};
pub use server::{default_socket_path, ApiConfig, ApiServer, ServeError, TcpOptions};
pub use server::{
    BODY_TIMEOUT, HEADER_TIMEOUT, MAX_BODY, MAX_CONNECTIONS, MAX_HEAD_BYTES, SHUTDOWN_GRACE,
    SOCKET_FILE,
};

/// A byte stream either listener (or the client) speaks HTTP over: a Unix or a TCP socket.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Serde for values that JSON carries as their text: node ids, tickets, relay URLs.
pub(crate) mod as_str {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{de, Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub(crate) fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// Resolves once the server's stop flag is set (or its sender is gone).
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Milliseconds with two decimals, as every `_ms` round trip is written.
fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}
