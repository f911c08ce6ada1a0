//! [`ApiServer`]: the listeners, their limits, the checks on every request, the socket file's
//! life (a stale one replaced, a live one refused, ours removed on exit), and shutdown.

use std::convert::Infallible;
use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use super::auth::{Caller, Token, TokenError};
use super::error::{json_response, ApiError, ErrorCode};
use super::events;
use super::node::NodeApi;
use super::router::{Action, ApiRequest, Router};
use super::Io;
use crate::paths::{self, PathError};

/// The socket's name in [`crate::paths::runtime_dir`].
pub const SOCKET_FILE: &str = "api.sock";
/// The longest request body; longer ones get `413 payload_too_large`.
pub const MAX_BODY: usize = 64 * 1024;
/// Connections per listener at once, event streams included; more wait in the backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// A request's head must arrive within this; an idle keep-alive connection closes after it.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest request head (request line and headers); longer ones close the connection.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// A body over [`MAX_BODY`] is read and dropped up to this, so that the client reads its 413
/// (past it, the connection closes).
const MAX_DRAINED: usize = 1024 * 1024;
/// A request's body must arrive within this, else `408 request_timeout`.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long requests under way get to finish when the server shuts down.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Where the daemon's socket is by default: `api.sock` in [`crate::paths::runtime_dir`].
pub fn default_socket_path() -> PathBuf {
    paths::runtime_dir().join(SOCKET_FILE)
}

/// Where the API listens.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// The Unix socket. Its directory is created 0700 if missing, and must be private.
    pub socket: PathBuf,
    /// The TCP listener on `127.0.0.1`, if any.
    pub tcp: Option<TcpOptions>,
}

impl Default for ApiConfig {
    /// The socket at [`default_socket_path`], no TCP.
    fn default() -> Self {
        ApiConfig {
            socket: default_socket_path(),
            tcp: None,
        }
    }
}

/// The TCP listener's settings.
#[derive(Clone, Debug)]
pub struct TcpOptions {
    /// The port on `127.0.0.1` (0: any free one, see [`ApiServer::tcp_addr`]).
    pub port: u16,
    /// The bearer token's file, created (0600) with a random token if missing.
    pub token_file: PathBuf,
}

impl TcpOptions {
    /// `port`, with the token at [`super::default_token_path`].
    pub fn new(port: u16) -> TcpOptions {
        TcpOptions {
            port,
            token_file: super::default_token_path(),
        }
    }
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The socket's directory cannot be made, or is not private.
    #[error("the API socket's directory")]
    Dir(#[source] PathError),
    /// A daemon answers on the socket.
    #[error(
        "a daemon is already running{}: its API socket is {path}",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    AlreadyRunning {
        /// The socket.
        path: PathBuf,
        /// The daemon's process, as the kernel tells.
        pid: Option<i32>,
    },
    /// Something else is at the socket's path, and is left alone.
    #[error("{path} exists and is not a socket: not replacing it")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// The socket could not be bound.
    #[error("API socket {path}")]
    Socket {
        /// The socket.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The TCP listener could not be bound.
    #[error("binding the API on {addr}")]
    Tcp {
        /// Its address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The TCP listener's token file cannot be used.
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// The running API. [`ApiServer::shutdown`] stops it gracefully; dropping it stops it at once.
/// Either way the socket file goes.
#[derive(Debug)]
pub struct ApiServer {
    socket: PathBuf,
    /// The socket file's device and inode: removed on exit only if still ours.
    socket_id: (u64, u64),
    tcp_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    listeners: Vec<(JoinHandle<()>, Arc<Semaphore>)>,
}

/// What every connection's requests are answered from.
struct Shared<S> {
    router: Router<S>,
    state: Arc<S>,
    stop: watch::Receiver<bool>,
}

enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener, Token),
}

impl ApiServer {
    /// Binds the socket (replacing a stale one, refusing if a daemon answers on it) and the TCP
    /// listener if configured, and serves `router` over `state` until shut down.
    pub async fn bind<S: NodeApi>(
        config: &ApiConfig,
        router: Router<S>,
        state: Arc<S>,
    ) -> Result<ApiServer, ServeError> {
        // TCP first: if it fails, there is no socket file to clean up.
        let tcp = match &config.tcp {
            Some(opts) => {
                let token = Token::load_or_create(&opts.token_file)?;
                let addr = SocketAddr::from(([127, 0, 0, 1], opts.port));
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServeError::Tcp { addr, source })?;
                Some((listener, token))
            }
            None => None,
        };
        let tcp_addr = tcp.as_ref().and_then(|(l, _)| l.local_addr().ok());
        let (unix, socket_id) = bind_socket(&config.socket).await?;
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            router,
            state,
            stop: stop_rx,
        });
        let listeners = std::iter::once(Listener::Unix(unix))
            .chain(tcp.map(|(l, token)| Listener::Tcp(l, token)))
            .map(|listener| {
                let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
                let task = tokio::spawn(accept_loop(listener, shared.clone(), slots.clone()));
                (task, slots)
            })
            .collect();
        tracing::info!(socket = %config.socket.display(), tcp = ?tcp_addr, "local API listening");
        Ok(ApiServer {
            socket: config.socket.clone(),
            socket_id,
            tcp_addr,
            stop,
            listeners,
        })
    }

    /// The Unix socket's path.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The TCP listener's address, if there is one.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// Stops accepting, gives requests under way [`SHUTDOWN_GRACE`] to finish, closes the event
    /// streams, and removes the socket file.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let listeners = std::mem::take(&mut self.listeners);
        let drained = async {
            for (task, slots) in listeners {
                let _ = task.await;
                // Every connection holds a slot until it ends.
                let _ = slots.acquire_many(MAX_CONNECTIONS as u32).await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), drained)
            .await
            .is_err()
        {
            tracing::debug!("API connections still open after the grace period: dropped");
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for (task, _) in &self.listeners {
            task.abort();
        }
        let ours =
            fs::symlink_metadata(&self.socket).is_ok_and(|m| (m.dev(), m.ino()) == self.socket_id);
        if ours {
            let _ = fs::remove_file(&self.socket);
        }
    }
}

/// Binds the socket at `path` in a private directory: a socket nobody answers on (its daemon
/// died) is replaced, one that answers is refused, and anything else there is left alone.
async fn bind_socket(path: &Path) -> Result<(UnixListener, (u64, u64)), ServeError> {
    let io = |source| ServeError::Socket {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    paths::private_dir(dir.unwrap_or(Path::new("."))).map_err(ServeError::Dir)?;
    match fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(ServeError::NotASocket {
                path: path.to_owned(),
            })
        }
        Ok(_) => {
            let probe = tokio::time::timeout(Duration::from_secs(1), UnixStream::connect(path));
            match probe.await {
                Ok(Ok(live)) => {
                    return Err(ServeError::AlreadyRunning {
                        path: path.to_owned(),
                        pid: live.peer_cred().ok().and_then(|c| c.pid()),
                    })
                }
                // Its backlog is full: alive, but too busy to say who it is.
                Err(_) => {
                    return Err(ServeError::AlreadyRunning {
                        path: path.to_owned(),
                        pid: None,
                    })
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %path.display(), "replacing the socket of a daemon that is gone");
                    match fs::remove_file(path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
                        _ => {}
                    }
                }
                Ok(Err(e)) => return Err(io(e)),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io)?;
    let meta = fs::symlink_metadata(path).map_err(io)?;
    Ok((listener, (meta.dev(), meta.ino())))
}

impl Listener {
    /// The next connection, and who it is from.
    async fn accept(&self) -> std::io::Result<(Box<dyn Io>, Caller)> {
        match self {
            Listener::Unix(l) => {
                let (stream, _) = l.accept().await?;
                let uid = stream.peer_cred().ok().map(|c| c.uid());
                Ok((Box::new(stream), Caller::Unix { uid }))
            }
            Listener::Tcp(l, token) => {
                let (stream, _) = l.accept().await?;
                let _ = stream.set_nodelay(true);
                let port = stream.local_addr()?.port();
                let token = token.clone();
                Ok((Box::new(stream), Caller::Tcp { port, token }))
            }
        }
    }
}

/// Accepts connections while a slot is free, until the server stops.
async fn accept_loop<S: NodeApi>(
    listener: Listener,
    shared: Arc<Shared<S>>,
    slots: Arc<Semaphore>,
) {
    let mut stop = shared.stop.clone();
    loop {
        let next = async {
            let slot = slots.clone().acquire_owned().await.expect("never closed");
            (slot, listener.accept().await)
        };
        let (slot, accepted) = tokio::select! {
            next = next => next,
            _ = super::stopped(&mut stop) => return,
        };
        match accepted {
            Ok((io, caller)) => {
                tokio::spawn(serve_connection(io, caller, shared.clone(), slot));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("local API accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves HTTP/1.1 on one connection until it ends or the server stops.
async fn serve_connection<S: NodeApi>(
    io: Box<dyn Io>,
    caller: Caller,
    shared: Arc<Shared<S>>,
    slot: OwnedSemaphorePermit,
) {
    // An event stream outlives its connection's HTTP and keeps the slot.
    let slot = Arc::new(slot);
    let mut stop = shared.stop.clone();
    // A refused user gets its answer, then the connection closes.
    let keep_alive = caller.user_allowed();
    let service = hyper::service::service_fn(move |req| {
        let (shared, caller, slot) = (shared.clone(), caller.clone(), slot.clone());
        async move { Ok::<_, Infallible>(shared.answer(req, &caller, slot).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(keep_alive)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("local API connection: {e}");
            }
        }
        _ = super::stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
        }
    }
}

impl<S: NodeApi> Shared<S> {
    /// The response to one request: its route's answer, or the first check's refusal.
    async fn answer(
        &self,
        req: Request<Incoming>,
        caller: &Caller,
        slot: Arc<OwnedSemaphorePermit>,
    ) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        match self.dispatch(req, caller, slot).await {
            Ok(res) => res,
            Err(e) => {
                let mut res = e.response();
                if e.code == ErrorCode::MethodNotAllowed {
                    let allow = self.router.allowed(&path).join(", ");
                    if let Ok(v) = HeaderValue::from_str(&allow) {
                        res.headers_mut().insert(header::ALLOW, v);
                    }
                }
                res
            }
        }
    }

    async fn dispatch(
        &self,
        mut req: Request<Incoming>,
        caller: &Caller,
        slot: Arc<OwnedSemaphorePermit>,
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        caller.check(req.headers())?;
        let (action, params) = self.router.find(req.method(), req.uri().path())?;
        match action {
            Action::Json(handler) => {
                let body = read_body(req).await?;
                let answer = handler(self.state.clone(), ApiRequest::new(params, body)).await?;
                Ok(json_response(StatusCode::OK, answer))
            }
            Action::Socket(handler) => {
                let accept = events::accept_key(req.headers())?;
                let (task, max_message) =
                    handler(self.state.clone(), ApiRequest::new(params, Bytes::new())).await?;
                let upgrade = hyper::upgrade::on(&mut req);
                let stop = self.stop.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    match upgrade.await {
                        Ok(upgraded) => {
                            let config = WebSocketConfig::default()
                                .max_message_size(Some(max_message))
                                .max_frame_size(Some(max_message));
                            let io = TokioIo::new(upgraded);
                            let ws =
                                WebSocketStream::from_raw_socket(io, Role::Server, Some(config))
                                    .await;
                            task(ws, stop).await
                        }
                        Err(e) => tracing::debug!("WebSocket upgrade failed: {e}"),
                    }
                });
                Ok(events::switching(accept))
            }
        }
    }
}

/// A request's whole body: at most [`MAX_BODY`], within [`BODY_TIMEOUT`]. A longer one is read
/// on and dropped, up to [`MAX_DRAINED`], so that the client is not cut off before it reads
/// the 413 (past that, the connection closes).
async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body is over {MAX_BODY} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_DRAINED as u64) {
        return Err(too_large());
    }
    let mut body = req.into_body();
    let mut kept = Vec::new();
    let mut seen = 0;
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::new(ErrorCode::BadRequest, format!("reading the body: {e}"))
            })?;
            if let Ok(data) = frame.into_data() {
                seen += data.len();
                if seen > MAX_DRAINED {
                    break;
                }
                if seen <= MAX_BODY {
                    kept.extend_from_slice(&data);
                }
            }
        }
        Ok(())
    };
    tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::RequestTimeout,
                format!("the body did not arrive within {BODY_TIMEOUT:?}"),
            )
        })??;
    if seen > MAX_BODY {
        return Err(too_large());
    }
    Ok(Bytes::from(kept))
}
