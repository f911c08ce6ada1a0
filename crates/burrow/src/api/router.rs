//! The route table: a method and a path pattern (`/v1/members/{node}`) to a handler that takes
//! the daemon's state and the request and answers with something serializable, or an
//! [`ApiError`].

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use hyper::Method;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;

use super::error::{ApiError, ErrorCode};

/// A request as a handler sees it: its path parameters and its body (already read, at most
/// [`super::MAX_BODY`]).
#[derive(Debug)]
pub struct ApiRequest {
    params: Params,
    body: Bytes,
}

/// A path's parameters, by the names its pattern gives them.
pub(super) type Params = Vec<(&'static str, String)>;

impl ApiRequest {
    pub(super) fn new(params: Params, body: Bytes) -> ApiRequest {
        ApiRequest { params, body }
    }

    /// The path segment the pattern names `{name}`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON of type `T` ([`ErrorCode::BadRequest`] if it is not).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("request body: {e}")))
    }
}

type Handler<S> =
    Arc<dyn Fn(Arc<S>, ApiRequest) -> BoxFuture<'static, Result<Vec<u8>, ApiError>> + Send + Sync>;

/// A WebSocket a route serves, upgraded from its request.
pub type ApiSocket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// What a WebSocket route does once the upgrade is through: it runs until it is done, and
/// should end (with a close frame) once the watch turns true, the daemon shutting down.
pub type SocketTask =
    Box<dyn FnOnce(ApiSocket, watch::Receiver<bool>) -> BoxFuture<'static, ()> + Send>;

type SocketHandler<S> = Arc<
    dyn Fn(Arc<S>, ApiRequest) -> BoxFuture<'static, Result<(SocketTask, usize), ApiError>>
        + Send
        + Sync,
>;

/// What a route does.
pub(super) enum Action<S> {
    /// Answers with JSON.
    Json(Handler<S>),
    /// Upgrades to a WebSocket, which the task the handler returns serves.
    Socket(SocketHandler<S>),
}

impl<S> Clone for Action<S> {
    fn clone(&self) -> Self {
        match self {
            Action::Json(h) => Action::Json(h.clone()),
            Action::Socket(h) => Action::Socket(h.clone()),
        }
    }
}

struct Route<S> {
    method: Method,
    pattern: &'static str,
    action: Action<S>,
}

/// The routes a server answers: [`Router::new`] has the core ones, [`Router::route`] adds
/// more.
pub struct Router<S> {
    routes: Vec<Route<S>>,
}

impl<S: Send + Sync + 'static> Router<S> {
    /// A table without routes.
    pub fn empty() -> Router<S> {
        Router { routes: Vec::new() }
    }

    /// Adds a route: `handler` answers `method` on paths matching `pattern`, whose segments are
    /// literal or `{name}` (read with [`ApiRequest::param`]). Its answer is sent as JSON with
    /// status 200, its error with the error's status.
    ///
    /// # Panics
    /// If `pattern` is not under `/v1/` or the table has it already with this method: routes
    /// are fixed when the daemon starts.
    ///
    /// ```ignore
    /// router.route(Method::GET, "/v1/members/{node}", |daemon: Arc<Daemon>, req| async move {
    ///     daemon.member(req.param("node").unwrap_or_default())
    /// })
    /// ```
    pub fn route<F, Fut, T>(self, method: Method, pattern: &'static str, handler: F) -> Router<S>
    where
        F: Fn(Arc<S>, ApiRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, ApiError>> + Send + 'static,
        T: Serialize,
    {
        let handler: Handler<S> = Arc::new(move |state, req| {
            let answer = handler(state, req);
            Box::pin(async move {
                let value = answer.await?;
                serde_json::to_vec(&value).map_err(|e| {
                    ApiError::new(ErrorCode::Internal, format!("encoding the answer: {e}"))
                })
            })
        });
        self.add(method, pattern, Action::Json(handler))
    }

    /// Adds a WebSocket route on `GET pattern`: `handler` runs before the upgrade (its error
    /// is the answer, as JSON, and no upgrade happens), and returns the task that serves the
    /// socket once upgraded, with the largest message it takes from the client, in bytes.
    ///
    /// # Panics
    /// As [`Router::route`].
    pub fn socket<F, Fut>(self, pattern: &'static str, handler: F) -> Router<S>
    where
        F: Fn(Arc<S>, ApiRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(SocketTask, usize), ApiError>> + Send + 'static,
    {
        let handler: SocketHandler<S> = Arc::new(move |state, req| Box::pin(handler(state, req)));
        self.add(Method::GET, pattern, Action::Socket(handler))
    }

    fn add(mut self, method: Method, pattern: &'static str, action: Action<S>) -> Self {
        assert!(
            pattern.starts_with("/v1/"),
            "route {pattern} is not versioned"
        );
        assert!(
            !self
                .routes
                .iter()
                .any(|r| r.method == method && r.pattern == pattern),
            "route {method} {pattern} twice"
        );
        self.routes.push(Route {
            method,
            pattern,
            action,
        });
        self
    }

    /// The route for `method` and `path`, and the path's parameters.
    pub(super) fn find(
        &self,
        method: &Method,
        path: &str,
    ) -> Result<(Action<S>, Params), ApiError> {
        let mut allowed = Vec::new();
        for r in &self.routes {
            let Some(params) = matches(r.pattern, path) else {
                continue;
            };
            if r.method == method {
                return Ok((r.action.clone(), params));
            }
            allowed.push(r.method.as_str());
        }
        if allowed.is_empty() {
            Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no route {path}"),
            ))
        } else {
            Err(ApiError::new(
                ErrorCode::MethodNotAllowed,
                format!("{path} takes {}", allowed.join(", ")),
            ))
        }
    }

    /// The methods a path takes, for a 405's `Allow` header.
    pub(super) fn allowed(&self, path: &str) -> Vec<&str> {
        self.routes
            .iter()
            .filter(|r| matches(r.pattern, path).is_some())
            .map(|r| r.method.as_str())
            .collect()
    }
}

/// The parameters of `path` if it matches `pattern`.
fn matches(pattern: &'static str, path: &str) -> Option<Params> {
    let (mut want, mut got) = (pattern.split('/'), path.split('/'));
    let mut params = Vec::new();
    loop {
        match (want.next(), got.next()) {
            (None, None) => return Some(params),
            (Some(w), Some(g)) => match w.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
                Some(name) if !g.is_empty() => params.push((name, g.to_owned())),
                None if w == g => {}
                _ => return None,
            },
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_paths_and_name_their_parameters() {
        assert_eq!(matches("/v1/status", "/v1/status"), Some(vec![]));
        assert_eq!(matches("/v1/status", "/v1/status/"), None);
        assert_eq!(matches("/v1/status", "/v1"), None);
        assert_eq!(
            matches("/v1/members/{node}", "/v1/members/abc"),
            Some(vec![("node", "abc".to_string())])
        );
        assert_eq!(matches("/v1/members/{node}", "/v1/members/"), None);
        assert_eq!(matches("/v1/members/{node}", "/v1/members/a/b"), None);
    }

    #[tokio::test]
    async fn found_routes_answer_and_others_are_404_or_405() {
        let router: Router<()> = Router::empty()
            .route(Method::GET, "/v1/echo/{word}", |_, req| async move {
                Ok(req.param("word").map(String::from))
            })
            .route(Method::POST, "/v1/echo/{word}", |_, req| async move {
                req.json::<Vec<u32>>()
            });
        let call = |m: Method, body: &'static [u8]| {
            let Ok((Action::Json(h), params)) = router.find(&m, "/v1/echo/hi") else {
                panic!("a JSON route")
            };
            h(
                Arc::new(()),
                ApiRequest::new(params, Bytes::from_static(body)),
            )
        };
        assert_eq!(call(Method::GET, b"").await.unwrap(), b"\"hi\"");
        assert_eq!(call(Method::POST, b"[1]").await.unwrap(), b"[1]");
        let bad = call(Method::POST, b"{").await.unwrap_err();
        assert_eq!(bad.code, ErrorCode::BadRequest);
        let e = |m: Method, p: &str| router.find(&m, p).err().map(|e| e.code);
        assert_eq!(
            e(Method::DELETE, "/v1/echo/hi"),
            Some(ErrorCode::MethodNotAllowed)
        );
        assert_eq!(router.allowed("/v1/echo/hi"), ["GET", "POST"]);
        assert_eq!(e(Method::GET, "/v1/nothing"), Some(ErrorCode::NotFound));
    }

    #[test]
    #[should_panic(expected = "twice")]
    fn a_route_twice_is_a_bug() {
        let _: Router<()> = Router::empty()
            .route(Method::GET, "/v1/x", |_, _| async { Ok(1) })
            .route(Method::GET, "/v1/x", |_, _| async { Ok(2) });
    }
}
