//! The HTTP side: our own accept loop (per-source limit at accept, optional TLS), hyper serving
//! an axum router with `/relay`, `/health`, `/metrics` and the registry's routes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use burrow_proto::rate::source_prefix;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use crate::clients::{IpLimiter, IpSlot};
use crate::{session, Shared, RELAY_PATH};

/// Per-connection facts handed to the handlers.
#[derive(Clone)]
pub(crate) struct ConnInfo {
    pub(crate) peer: SocketAddr,
    /// The address the connection arrived at.
    pub(crate) local: SocketAddr,
    /// Held for as long as the connection lives, including after a WebSocket upgrade.
    _slot: Arc<IpSlot>,
}

/// Counts a WebSocket session for max_clients and shutdown; released on drop.
struct SessionGuard(Arc<Shared>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::Relaxed);
        self.0.metrics.sessions.dec();
    }
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
) {
    let limiter = IpLimiter::new(shared.config.limits.max_conns_per_ip);
    let router = router(shared.clone());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        shared.metrics.accepted.inc();
        let Some(slot) = limiter.acquire(source_prefix(peer.ip())) else {
            shared.metrics.refused("per_ip_limit");
            tracing::debug!(%peer, "per-IP connection limit reached");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Where it arrived: with a wildcard listen address, the address of the interface.
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let info = ConnInfo {
            peer,
            local,
            _slot: Arc::new(slot),
        };
        tokio::spawn(serve_connection(
            stream,
            info,
            router.clone(),
            shared.clone(),
            tls.clone(),
        ));
    }
}

async fn serve_connection(
    stream: TcpStream,
    info: ConnInfo,
    router: Router,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
) {
    let handshake_timeout = shared.config.limits.handshake_timeout;
    match tls {
        None => serve_http(stream, info, router, shared).await,
        Some(acceptor) => {
            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => serve_http(tls_stream, info, router, shared).await,
                Ok(Err(e)) => tracing::debug!(peer = %info.peer, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(peer = %info.peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn serve_http<IO>(io: IO, info: ConnInfo, router: Router, shared: Arc<Shared>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.peer;
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(info.clone());
        let mut router = router.clone();
        async move { router.call(req).await }
    });
    let mut shutdown = shared.shutting_down.subscribe();
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // Slowloris at the HTTP layer: the request head must arrive within the handshake time.
        .header_read_timeout(shared.config.limits.handshake_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, "HTTP connection ended: {e}");
            }
        }
        _ = crate::until_shutdown(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(shared.config.shutdown_grace, conn).await;
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    let router = Router::new()
        .route(RELAY_PATH, get(relay))
        .route("/health", get(health))
        .route("/stats", get(stats))
        .route("/ice", get(ice))
        .route("/metrics", get(metrics))
        .route("/burrow.js", get(burrow_js));
    let router = if shared.records.is_some() {
        router.merge(crate::records::routes::router())
    } else {
        router
    };
    router
        .layer(axum::middleware::from_fn(cors))
        .with_state(shared)
}

/// Pages of any origin may read the relay's routes and write signed records: nothing here
/// rests on cookies or on which page asks (a record's signature is its authority), so CORS
/// lets every origin in, and answers preflights itself.
async fn cors(req: Request<axum::body::Body>, next: axum::middleware::Next) -> Response {
    let any = HeaderValue::from_static("*");
    if req.method() == axum::http::Method::OPTIONS {
        return (
            StatusCode::NO_CONTENT,
            [
                (header::ACCESS_CONTROL_ALLOW_ORIGIN, any),
                (
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static("GET, PUT, DELETE"),
                ),
                (
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static("content-type"),
                ),
                (
                    header::ACCESS_CONTROL_MAX_AGE,
                    HeaderValue::from_static("600"),
                ),
            ],
        )
            .into_response();
    }
    let mut response = next.run(req).await;
    response
        .headers_mut()
        .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, any);
    response
}

/// The browser module, as kept in the repository.
const BURROW_JS: &str = include_str!("../assets/burrow.js");

async fn burrow_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        BURROW_JS,
    )
        .into_response()
}

async fn relay(
    State(shared): State<Arc<Shared>>,
    Extension(info): Extension<ConnInfo>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if *shared.shutting_down.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "relay restarting\n").into_response();
    }
    let max = shared.config.limits.max_clients;
    if shared
        .sessions
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < max).then_some(n + 1)
        })
        .is_err()
    {
        shared.metrics.refused("max_clients");
        return (StatusCode::SERVICE_UNAVAILABLE, "relay full\n").into_response();
    }
    shared.metrics.sessions.inc();
    let guard = SessionGuard(shared.clone());
    let own = shared.public_urls.for_connection(info.local);
    let config = &shared.config;
    let shutdown = shared.shutting_down.subscribe();
    // Browsers always send the page's origin with a WebSocket upgrade; native clients don't.
    let browser = headers.contains_key(header::ORIGIN);
    ws.read_buffer_size(config.ws_read_buffer_bytes)
        .write_buffer_size(config.ws_write_buffer_bytes)
        .max_message_size(config.limits.max_frame_bytes)
        .max_frame_size(config.limits.max_frame_bytes)
        .on_upgrade(move |socket| async move {
            // The IP slot and the session count live as long as the session.
            let _info = info;
            let _guard = guard;
            session::run(socket, shared, own, shutdown, browser).await;
        })
}

async fn stats(State(shared): State<Arc<Shared>>) -> Json<crate::Stats> {
    Json(shared.stats())
}

/// `GET /ice`: the ICE servers a page's `RTCPeerConnection` should use, in WebRTC's own
/// dictionary shape (`{"iceServers": [{"urls": [...]}]}`): this relay's STUN service, if it
/// runs one. A STUN service on a wildcard address is named by the address the request came
/// in on, as the page reached this relay there.
async fn ice(
    State(shared): State<Arc<Shared>>,
    Extension(info): Extension<ConnInfo>,
) -> Json<serde_json::Value> {
    let urls: Vec<String> = shared
        .config
        .stun
        .iter()
        .map(|stun| {
            let ip = if stun.listen.ip().is_unspecified() {
                info.local.ip()
            } else {
                stun.listen.ip()
            };
            format!(
                "stun:{}",
                SocketAddr::new(ip.to_canonical(), stun.listen.port())
            )
        })
        .collect();
    let servers: Vec<serde_json::Value> = urls
        .into_iter()
        .map(|url| serde_json::json!({ "urls": [url] }))
        .collect();
    Json(serde_json::json!({ "iceServers": servers }))
}

async fn health(State(shared): State<Arc<Shared>>) -> Json<crate::Health> {
    Json(shared.health())
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Result<Response, Infallible> {
    if let Some(reg) = &shared.records {
        shared.metrics.registry_records.set(reg.store.len() as i64);
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
        .into_response())
}
