//! [`ApiClient`]: typed calls to a running daemon's API, over its Unix socket or its TCP
//! listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::{TcpStream, UnixStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use super::auth::Token;
use super::error::{ErrorBody, ErrorCode};
use super::events::{Event, PATH as EVENTS_PATH};
use super::node::{PeerInfo, Peers, PingRequest, Pong, Status};
use super::Io;
use crate::http_client::{exchange, ExchangeError};
use crate::NodeId;

/// The longest answer read.
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// A client of the daemon's local API. Each call opens its own connection.
#[derive(Clone, Debug)]
pub struct ApiClient {
    target: Target,
    timeout: Duration,
}

#[derive(Clone, Debug)]
enum Target {
    Unix(PathBuf),
    Tcp(SocketAddr, Token),
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens where the daemon would.
    #[error("no burrow daemon at {at}: run `burrow up`")]
    NoDaemon {
        /// Where it was looked for: the socket's path, or the TCP address.
        at: String,
        /// What connecting said.
        source: std::io::Error,
    },
    /// Connecting failed otherwise (permissions, for one).
    #[error("connecting to the daemon's API at {at}")]
    Connect {
        /// The socket's path, or the TCP address.
        at: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP with the daemon")]
    Http(#[source] hyper::Error),
    /// The answer could not be read (or was too long).
    #[error("reading the daemon's answer")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The daemon refused or failed, saying why.
    #[error("{message} ({code})")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error code (see [`ErrorCode`]; [`ClientError::code`] parses it).
        code: String,
        /// The daemon's message.
        message: String,
    },
    /// The answer is not what this client expects.
    #[error("the daemon's answer (HTTP {status}) is not what this client expects")]
    Json {
        /// The HTTP status.
        status: u16,
        /// The cause.
        source: serde_json::Error,
    },
    /// An event is not one this client knows (a newer daemon's, say).
    #[error("an event this client does not know")]
    Event(#[source] serde_json::Error),
    /// The events WebSocket failed.
    #[error("the daemon's events stream")]
    WebSocket(#[source] tungstenite::Error),
    /// No answer in time.
    #[error("no answer from the daemon within {0:?}")]
    Timeout(Duration),
}

impl ClientError {
    /// The daemon's error code, if the daemon answered with one this client knows.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { code, .. } => code.parse().ok(),
            _ => None,
        }
    }
}

/// The events of `GET /v1/events`, as they come.
pub struct EventStream {
    ws: WebSocketStream<Box<dyn Io>>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl EventStream {
    /// The next event; `None` once the daemon closes the stream. An event this client does
    /// not know (from a newer daemon) is an error, and the stream goes on.
    pub async fn next(&mut self) -> Option<Result<Event, ClientError>> {
        loop {
            return match self.ws.next().await? {
                Ok(Message::Text(text)) => {
                    Some(
                        serde_json::from_str(&text).map_err(|source| ClientError::Json {
                            status: 101,
                            source,
                        }),
                    )
                }
                Ok(Message::Close(_)) => None,
                Ok(_) => continue,
                Err(e) => Some(Err(ClientError::WebSocket(e))),
            };
        }
    }
}

impl ApiClient {
    /// A client of the daemon at the default socket, [`super::default_socket_path`].
    pub fn local() -> ApiClient {
        ApiClient::unix(super::default_socket_path())
    }

    /// A client of the daemon whose socket is `path`.
    pub fn unix(path: impl Into<PathBuf>) -> ApiClient {
        ApiClient {
            target: Target::Unix(path.into()),
            timeout: Duration::from_secs(10),
        }
    }

    /// A client of the daemon's TCP listener at `addr`, with its token.
    pub fn tcp(addr: SocketAddr, token: Token) -> ApiClient {
        ApiClient {
            target: Target::Tcp(addr, token),
            timeout: Duration::from_secs(10),
        }
    }

    /// The same client, waiting at most `timeout` for each answer (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> ApiClient {
        self.timeout = timeout;
        self
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<Status, ClientError> {
        self.get("/v1/status").await
    }

    /// `GET /v1/peers`.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, ClientError> {
        Ok(self.get::<Peers>("/v1/peers").await?.peers)
    }

    /// `POST /v1/ping`: one round trip to `node`.
    pub async fn ping(&self, node: NodeId) -> Result<Pong, ClientError> {
        self.post("/v1/ping", &PingRequest { node }).await
    }

    /// `GET /v1/events`: the daemon's events from now on.
    pub async fn events(&self) -> Result<EventStream, ClientError> {
        let (io, host) = self.connect().await?;
        let mut req = format!("ws://{host}{EVENTS_PATH}")
            .into_client_request()
            .map_err(ClientError::WebSocket)?;
        if let Some(auth) = self.authorization() {
            req.headers_mut().insert(header::AUTHORIZATION, auth);
        }
        let handshake = tokio_tungstenite::client_async(req, io);
        match tokio::time::timeout(self.timeout, handshake).await {
            Ok(Ok((ws, _))) => Ok(EventStream { ws }),
            // A refusal comes as an ordinary answer with the error's JSON.
            Ok(Err(tungstenite::Error::Http(res))) => {
                let body = res.body().clone().unwrap_or_default();
                Err(refusal(res.status().as_u16(), &body))
            }
            Ok(Err(e)) => Err(ClientError::WebSocket(e)),
            Err(_) => Err(ClientError::Timeout(self.timeout)),
        }
    }

    /// `GET path`, its answer as `T`: for routes this client has no method for.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None).await
    }

    /// `DELETE path`, its answer as `T`.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::DELETE, path, None).await
    }

    /// `POST path` with `body` as JSON, its answer as `T`.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).expect("request types serialize");
        self.call(Method::POST, path, Some(body)).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let work = async {
            let (io, host) = self.connect().await?;
            let mut req = Request::builder()
                .method(method)
                .uri(path)
                .header(header::HOST, host)
                .header(header::USER_AGENT, "burrow");
            if let Some(auth) = self.authorization() {
                req = req.header(header::AUTHORIZATION, auth);
            }
            if body.is_some() {
                req = req.header(header::CONTENT_TYPE, "application/json");
            }
            let req = req
                .body(Full::new(Bytes::from(body.unwrap_or_default())))
                .expect("a valid request");
            exchange(io, req, MAX_ANSWER).await.map_err(|e| match e {
                ExchangeError::Http(e) => ClientError::Http(e),
                ExchangeError::Body(e) => ClientError::Body(e),
            })
        };
        let (status, body) = tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))??;
        if !status.is_success() {
            return Err(refusal(status.as_u16(), &body));
        }
        serde_json::from_slice(&body).map_err(|source| ClientError::Json {
            status: status.as_u16(),
            source,
        })
    }

    /// A connection to the daemon, and the `Host` to send on it.
    async fn connect(&self) -> Result<(Box<dyn Io>, String), ClientError> {
        let (connected, at) = match &self.target {
            Target::Unix(path) => (
                UnixStream::connect(path)
                    .await
                    .map(|s| Box::new(s) as Box<dyn Io>),
                path.display().to_string(),
            ),
            Target::Tcp(addr, _) => (
                TcpStream::connect(addr).await.map(|s| {
                    let _ = s.set_nodelay(true);
                    Box::new(s) as Box<dyn Io>
                }),
                addr.to_string(),
            ),
        };
        match connected {
            Ok(io) => {
                let host = match &self.target {
                    Target::Unix(_) => "localhost".into(),
                    Target::Tcp(..) => at,
                };
                Ok((io, host))
            }
            Err(source) if is_absent(&source) => Err(ClientError::NoDaemon { at, source }),
            Err(source) => Err(ClientError::Connect { at, source }),
        }
    }

    fn authorization(&self) -> Option<HeaderValue> {
        match &self.target {
            Target::Tcp(_, token) => {
                HeaderValue::from_str(&format!("Bearer {}", token.as_str())).ok()
            }
            Target::Unix(_) => None,
        }
    }
}

/// Whether a connect error means nothing is there: no socket file, or nobody listening.
fn is_absent(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), NotFound | ConnectionRefused)
}

/// The error an unsuccessful answer carries (its code is `unknown` if it has no error JSON).
fn refusal(status: u16, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => ClientError::Api {
            status,
            code: error.code,
            message: error.message,
        },
        Err(_) => ClientError::Api {
            status,
            code: "unknown".into(),
            message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        },
    }
}
