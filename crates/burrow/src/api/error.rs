//! The API's errors: a stable code, an HTTP status, a message for people, and their JSON
//! (`{"error": {"code": "...", "message": "..."}}`).

use bytes::Bytes;
use http_body_util::Full;
use hyper::{header, Response, StatusCode};
use serde::{Deserialize, Serialize};

/// Declares the codes once: the enum, each one's text and HTTP status.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $name:ident = $text:literal, $status:ident;)*) => {
        /// A stable error code: what a program tests for (the message may change).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($(#[$doc])* $name,)*
        }

        impl ErrorCode {
            /// Every code.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name),*];

            /// The code as JSON carries it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$name => $text,)*
                }
            }

            /// The HTTP status that goes with it.
            pub fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$name => StatusCode::$status,)*
                }
            }
        }
    };
}

error_codes! {
    /// The body is not the JSON the route takes.
    BadRequest = "bad_request", BAD_REQUEST;
    /// TCP: no bearer token, or another one.
    Unauthorized = "unauthorized", UNAUTHORIZED;
    /// The request has an `Origin`, `Referer` or `Sec-Fetch-Site` header: a web page may have
    /// sent it.
    ForbiddenOrigin = "forbidden_origin", FORBIDDEN;
    /// TCP: the `Host` is not `127.0.0.1:PORT` or `localhost:PORT` (DNS rebinding).
    ForbiddenHost = "forbidden_host", FORBIDDEN;
    /// Unix socket: the caller runs as another user than the daemon, and not as root.
    ForbiddenUser = "forbidden_user", FORBIDDEN;
    /// No such route.
    NotFound = "not_found", NOT_FOUND;
    /// The node is not one the daemon is connected to.
    UnknownPeer = "unknown_peer", NOT_FOUND;
    /// The route exists with another method.
    MethodNotAllowed = "method_not_allowed", METHOD_NOT_ALLOWED;
    /// The body did not arrive in time.
    RequestTimeout = "request_timeout", REQUEST_TIMEOUT;
    /// The body is too long.
    PayloadTooLarge = "payload_too_large", PAYLOAD_TOO_LARGE;
    /// The daemon failed.
    Internal = "internal", INTERNAL_SERVER_ERROR;
    /// The peer did not answer in time.
    PeerTimeout = "peer_timeout", GATEWAY_TIMEOUT;
    /// Only a mesh admin may do this.
    NotAdmin = "not_admin", FORBIDDEN;
    /// No member by that name or node id.
    UnknownMember = "unknown_member", NOT_FOUND;
    /// The invite is bad, spent or expired, or its inviter refused it.
    JoinRefused = "join_refused", FORBIDDEN;
    /// The inviter could not be reached.
    JoinFailed = "join_failed", BAD_GATEWAY;
    /// The node is in a mesh already.
    AlreadyMember = "already_member", CONFLICT;
    /// The member is not connected now.
    MemberOffline = "member_offline", CONFLICT;
    /// The port is not exposed.
    NotExposed = "not_exposed", NOT_FOUND;
    /// No forward listens at that address.
    UnknownForward = "unknown_forward", NOT_FOUND;
    /// A forward could not listen where asked (the address is in use, say).
    ForwardFailed = "forward_failed", CONFLICT;
    /// The member refused the stream, or no program there accepted it in time.
    StreamRefused = "stream_refused", BAD_GATEWAY;
}

impl std::str::FromStr for ErrorCode {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == s)
            .ok_or(())
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal or failure a route answers with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
    /// A finer code beside some codes (`join_refused`'s says why the invite was refused),
    /// sent as `"reason"`.
    pub reason: Option<&'static str>,
}

impl ApiError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            reason: None,
        }
    }

    /// The error with a finer code, `reason`.
    pub fn with_reason(self, reason: &'static str) -> ApiError {
        ApiError {
            reason: Some(reason),
            ..self
        }
    }

    /// The error's JSON.
    fn json(&self) -> Vec<u8> {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().into(),
                message: self.message.clone(),
                reason: self.reason.map(Into::into),
            },
        };
        serde_json::to_vec(&body).expect("strings serialize")
    }

    /// The error as the HTTP response that carries it.
    pub(super) fn response(&self) -> Response<Full<Bytes>> {
        let mut res = json_response(self.code.status(), self.json());
        if self.code == ErrorCode::Unauthorized {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        res
    }
}

/// A JSON response: the media type, and not to be cached or sniffed.
pub(super) fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    let h = res.headers_mut();
    let v = header::HeaderValue::from_static;
    h.insert(header::CONTENT_TYPE, v("application/json"));
    h.insert(header::CACHE_CONTROL, v("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, v("nosniff"));
    res
}

/// The JSON of an error.
#[derive(Serialize, Deserialize)]
pub(super) struct ErrorBody {
    pub(super) error: ErrorDetail,
}

/// The JSON of an error, inside.
#[derive(Serialize, Deserialize)]
pub(super) struct ErrorDetail {
    pub(super) code: String,
    pub(super) message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_parse_back() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "{c} twice");
            assert_eq!(c.as_str().parse::<ErrorCode>(), Ok(*c));
            assert!(c.status().is_client_error() || c.status().is_server_error());
        }
        assert!("no_such_code".parse::<ErrorCode>().is_err());
    }

    #[test]
    fn the_json_has_the_code_and_message() {
        let e = ApiError::new(ErrorCode::Unauthorized, "no token");
        let v: serde_json::Value = serde_json::from_slice(&e.json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {"code": "unauthorized", "message": "no token"}})
        );
        let res = e.response();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(res.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
    }
}
