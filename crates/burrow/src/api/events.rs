//! `GET /v1/events`: a WebSocket of the daemon's [`Event`]s, one JSON text message each, fed
//! by the `tokio::sync::broadcast` channel the daemon publishes on; and what every WebSocket
//! route shares (the upgrade's check and answer, messages).

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use super::as_str;
use super::error::{ApiError, ErrorCode};
use super::node::PathView;
use super::router::SocketTask;
use crate::endpoint::Endpoint;
use crate::NodeId;

/// The route.
pub(super) const PATH: &str = "/v1/events";
/// Clients send nothing but control frames; a larger message ends the stream.
const MAX_CLIENT_MESSAGE: usize = 4096;

/// Something that happened to the daemon, as `GET /v1/events` sends it: JSON with an `"event"`
/// key naming the variant in snake case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A peer connected.
    PeerUp {
        /// The peer.
        #[serde(with = "as_str")]
        node_id: NodeId,
        /// How it is reached.
        #[serde(flatten)]
        path: PathView,
    },
    /// A peer's last connection ended.
    PeerDown {
        /// The peer.
        #[serde(with = "as_str")]
        node_id: NodeId,
    },
    /// A peer is reached another way now.
    PathChanged {
        /// The peer.
        #[serde(with = "as_str")]
        node_id: NodeId,
        /// How it is reached now.
        #[serde(flatten)]
        path: PathView,
    },
    /// The mesh's roster lists a new member.
    MemberJoined {
        /// Its key.
        #[serde(with = "as_str")]
        node_id: NodeId,
        /// Its name in the mesh.
        name: String,
    },
    /// The mesh's roster revokes a member.
    MemberRevoked {
        /// Its key.
        #[serde(with = "as_str")]
        node_id: NodeId,
    },
    /// This client read too slowly and missed events (sent by the server in their place).
    Lagged {
        /// How many.
        missed: u64,
    },
}

/// Publishes a [`Event::PathChanged`] on `events` whenever one of `endpoint`'s peers is
/// reached another way (another kind of path, or another address), and when a peer first
/// appears, until the returned task is aborted (it holds the endpoint). Peers coming and going
/// are the daemon's to publish: it knows when its connections open and end.
pub fn watch_paths(endpoint: Endpoint, events: broadcast::Sender<Event>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut known: HashMap<NodeId, PathView> = HashMap::new();
        loop {
            let mut now = HashMap::new();
            for p in endpoint.peers() {
                let view = PathView::from(&p.path);
                let changed = known.get(&p.node).is_none_or(|old| {
                    (old.path, &old.remote_addr) != (view.path, &view.remote_addr)
                });
                if changed {
                    // Nobody subscribed is no reason to stop: a client may subscribe later.
                    let _ = events.send(Event::PathChanged {
                        node_id: p.node,
                        path: view.clone(),
                    });
                }
                now.insert(p.node, view);
            }
            known = now;
            // A change between the look above and this wait is caught by the next tick.
            tokio::select! {
                _ = endpoint.path_changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    })
}

/// The `Sec-WebSocket-Accept` for a WebSocket upgrade request, or why it is not one.
pub(super) fn accept_key(headers: &HeaderMap) -> Result<HeaderValue, ApiError> {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let key = headers.get(header::SEC_WEBSOCKET_KEY);
    match key {
        Some(key)
            if has(header::CONNECTION, "upgrade")
                && has(header::UPGRADE, "websocket")
                && headers
                    .get(header::SEC_WEBSOCKET_VERSION)
                    .is_some_and(|v| v == "13") =>
        {
            Ok(HeaderValue::from_str(&derive_accept_key(key.as_bytes())).expect("base64"))
        }
        _ => Err(ApiError::new(
            ErrorCode::BadRequest,
            "this route is a WebSocket (version 13): send an upgrade request",
        )),
    }
}

/// The `101 Switching Protocols` answer to an upgrade with this accept key.
pub(super) fn switching(
    accept: HeaderValue,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let mut res = hyper::Response::new(Default::default());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    res
}

/// The task of one `GET /v1/events` client: sends it `events` until it goes, the channel
/// closes or the daemon stops (then with a "going away" close frame).
pub(super) fn serve(mut events: broadcast::Receiver<Event>) -> (SocketTask, usize) {
    let task: SocketTask = Box::new(move |ws, mut stop| {
        Box::pin(async move {
            let (mut sink, mut incoming) = ws.split();
            loop {
                let message = tokio::select! {
                    event = events.recv() => match event {
                        Ok(e) => json_message(&e),
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            json_message(&Event::Lagged { missed })
                        }
                        Err(broadcast::error::RecvError::Closed) => close(CloseCode::Away, "the daemon stopped publishing"),
                    },
                    // Pings are answered inside the stream; anything else from the client is
                    // ignored, and its close or error ends the stream.
                    frame = incoming.next() => match frame {
                        Some(Ok(_)) => continue,
                        _ => return,
                    },
                    _ = super::stopped(&mut stop) => close(CloseCode::Away, "the daemon is shutting down"),
                };
                let last = matches!(message, Message::Close(_));
                if sink.send(message).await.is_err() || last {
                    return;
                }
            }
        })
    });
    (task, MAX_CLIENT_MESSAGE)
}

/// A text message of `value`'s JSON.
pub(crate) fn json_message(value: &impl Serialize) -> Message {
    Message::text(serde_json::to_string(value).expect("API messages serialize"))
}

/// A close frame with `code` and `reason`, cut (at a character boundary) to the 123 bytes a
/// close frame has room for.
pub(crate) fn close(code: CloseCode, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: burrow_proto::text::truncate(reason, 123).into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_tagged_json() {
        let node = crate::SecretKey::from_bytes([4; 32]).node_id();
        let e = Event::PathChanged {
            node_id: node,
            path: PathView {
                path: super::super::PathKind::Direct,
                remote_addr: Some("192.0.2.1:1".into()),
                rtt_ms: None,
            },
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"event": "path_changed", "node_id": node.to_string(),
                "path": "direct", "remote_addr": "192.0.2.1:1", "rtt_ms": null})
        );
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), e);
        let down = serde_json::to_value(Event::PeerDown { node_id: node }).unwrap();
        assert_eq!(
            down,
            serde_json::json!({"event": "peer_down", "node_id": node.to_string()})
        );
    }

    #[test]
    fn only_a_websocket_upgrade_gets_an_accept_key() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        assert!(accept_key(&h).is_err(), "no key");
        // RFC 6455's example.
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        assert_eq!(accept_key(&h).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert_eq!(accept_key(&h).unwrap_err().code, ErrorCode::BadRequest);
    }
}
