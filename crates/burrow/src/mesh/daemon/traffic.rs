//! The routes through which programs put their own traffic on the mesh: TCP ports exposed and
//! forwarded ([`crate::mesh::forward`]), datagrams and streams ([`crate::mesh::apps`]).
//!
//! A stream's WebSocket carries its bytes as binary messages both ways. An **empty** binary
//! message ends its sender's side (as a TCP half-close): from the program, the member's
//! stream is finished; towards the program, the member finished. Once both sides have ended
//! the daemon closes the WebSocket (1000); on a failure (the member reset the stream, the
//! connection dropped) it closes with 1011 and the reason. A program that closes the WebSocket
//! before both sides ended resets the stream.

use std::net::SocketAddr;
use std::sync::Arc;

use data_encoding::BASE64;
use futures_util::{SinkExt, StreamExt};
use hyper::Method;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use super::{api_error, Daemon};
use crate::api::{
    close_message, json_message, stopped, ApiError, ApiSocket, ErrorCode, Router, SocketTask,
};
use crate::mesh::forward::{Exposed, Forward};
use crate::mesh::member_conn::MemberStream;
use crate::mesh::streams;
use crate::NodeId;

/// Largest message a program may send on a stream's WebSocket, in bytes.
pub const MAX_STREAM_MESSAGE: usize = 1024 * 1024;
/// The datagram WebSocket takes nothing from the program but control frames.
const MAX_DATAGRAM_CLIENT_MESSAGE: usize = 4096;
/// Bytes read from a stream at a time, and so the largest message towards the program.
const STREAM_CHUNK: usize = 64 * 1024;
/// The QUIC code a stream is reset or stopped with when its program went away.
const PROGRAM_GONE: u32 = 2;

#[derive(Debug, Deserialize)]
struct ExposeRequest {
    port: u16,
    name: Option<String>,
}

#[derive(Debug, Serialize)]
struct ExposedList {
    exposed: Vec<Exposed>,
}

#[derive(Debug, Serialize)]
struct PortAnswer {
    port: u16,
}

#[derive(Debug, Deserialize)]
struct ForwardRequest {
    member: String,
    port: u16,
    local: Option<SocketAddr>,
}

/// A forward as the API shows it: with the member's name.
#[derive(Debug, Serialize)]
struct ForwardView {
    member: Option<String>,
    #[serde(flatten)]
    forward: Forward,
}

#[derive(Debug, Serialize)]
struct ForwardList {
    forwards: Vec<ForwardView>,
}

#[derive(Debug, Serialize)]
struct LocalAnswer {
    local: SocketAddr,
}

#[derive(Debug, Deserialize)]
struct DatagramRequest {
    member: String,
    data: String,
}

#[derive(Debug, Serialize)]
struct SentAnswer {
    sent: usize,
}

/// A datagram towards the program, or word of those it missed.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum DatagramMessage {
    Datagram {
        from: Option<String>,
        #[serde(with = "crate::api::as_str")]
        node_id: NodeId,
        data: String,
    },
    Lagged {
        event: &'static str,
        missed: u64,
    },
}

/// The first message of an accepted stream's WebSocket: who opened it.
#[derive(Debug, Serialize)]
struct StreamFrom {
    from: Option<String>,
    #[serde(with = "crate::api::as_str")]
    node_id: NodeId,
}

impl Daemon {
    fn forward_view(&self, forward: Forward) -> ForwardView {
        ForwardView {
            member: self.node.member_name(&forward.node_id),
            forward,
        }
    }
}

/// `router` with the routes of programs' traffic.
pub(super) fn routes(router: Router<Daemon>) -> Router<Daemon> {
    router
        .route(
            Method::POST,
            "/v1/expose",
            |d: Arc<Daemon>, req| async move {
                let r: ExposeRequest = req.json()?;
                d.node.expose(r.port, r.name).map_err(api_error)
            },
        )
        .route(Method::GET, "/v1/expose", |d: Arc<Daemon>, _| async move {
            Ok(ExposedList {
                exposed: d.node.exposed(),
            })
        })
        .route(
            Method::DELETE,
            "/v1/expose/{port}",
            |d: Arc<Daemon>, req| async move {
                let port = param(&req, "port")?;
                d.node.unexpose(port).map_err(api_error)?;
                Ok(PortAnswer { port })
            },
        )
        .route(
            Method::POST,
            "/v1/forwards",
            |d: Arc<Daemon>, req| async move {
                let r: ForwardRequest = req.json()?;
                let f = d.node.forward(&r.member, r.port, r.local).await;
                Ok(d.forward_view(f.map_err(api_error)?))
            },
        )
        .route(
            Method::GET,
            "/v1/forwards",
            |d: Arc<Daemon>, _| async move {
                let forwards = d.node.forwards();
                Ok(ForwardList {
                    forwards: forwards.into_iter().map(|f| d.forward_view(f)).collect(),
                })
            },
        )
        .route(
            Method::DELETE,
            "/v1/forwards/{local}",
            |d: Arc<Daemon>, req| async move {
                let local = param(&req, "local")?;
                d.node.unforward(local).await.map_err(api_error)?;
                Ok(LocalAnswer { local })
            },
        )
        .route(
            Method::POST,
            "/v1/datagrams",
            |d: Arc<Daemon>, req| async move {
                let r: DatagramRequest = req.json()?;
                let data = BASE64.decode(r.data.as_bytes()).map_err(|e| {
                    ApiError::new(ErrorCode::BadRequest, format!("data is not base64: {e}"))
                })?;
                d.node.send_datagram(&r.member, &data).map_err(api_error)?;
                Ok(SentAnswer { sent: data.len() })
            },
        )
        .socket("/v1/datagrams", |d: Arc<Daemon>, _| async move {
            // Subscribed before the 101 goes out.
            let datagrams = d.node.datagrams();
            let task: SocketTask =
                Box::new(move |ws, stop| Box::pin(send_datagrams(d, datagrams, ws, stop)));
            Ok((task, MAX_DATAGRAM_CLIENT_MESSAGE))
        })
        .socket("/v1/streams/{member}", |d: Arc<Daemon>, req| async move {
            let member = req.param("member").unwrap_or_default().to_owned();
            let stream = d.node.open_stream(&member).await.map_err(api_error)?;
            let task: SocketTask = Box::new(move |ws, stop| Box::pin(carry(ws, stream, stop)));
            Ok((task, MAX_STREAM_MESSAGE))
        })
        .socket("/v1/streams", |d: Arc<Daemon>, _| async move {
            let task: SocketTask = Box::new(move |ws, stop| Box::pin(accept(d, ws, stop)));
            Ok((task, MAX_STREAM_MESSAGE))
        })
}

/// The path parameter `name`, parsed.
fn param<T: std::str::FromStr>(req: &crate::api::ApiRequest, name: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    let text = req.param(name).unwrap_or_default();
    text.parse()
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("{name} {text:?}: {e}")))
}

/// Sends the program every datagram that comes, until it goes or the daemon stops.
async fn send_datagrams(
    d: Arc<Daemon>,
    mut datagrams: broadcast::Receiver<(NodeId, bytes::Bytes)>,
    ws: ApiSocket,
    mut stop: watch::Receiver<bool>,
) {
    let (mut sink, mut incoming) = ws.split();
    loop {
        let message = tokio::select! {
            got = datagrams.recv() => match got {
                Ok((node_id, data)) => json_message(&DatagramMessage::Datagram {
                    from: d.node.member_name(&node_id),
                    node_id,
                    data: BASE64.encode(&data),
                }),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    json_message(&DatagramMessage::Lagged { event: "lagged", missed })
                }
                Err(broadcast::error::RecvError::Closed) => close_message(CloseCode::Away, "the node stopped"),
            },
            frame = incoming.next() => match frame {
                Some(Ok(_)) => continue,
                _ => return,
            },
            _ = stopped(&mut stop) => close_message(CloseCode::Away, "the daemon is shutting down"),
        };
        let last = matches!(message, Message::Close(_));
        if sink.send(message).await.is_err() || last {
            return;
        }
    }
}

/// Waits for a stream a member opens here, tells the program who opened it, and carries it.
async fn accept(d: Arc<Daemon>, ws: ApiSocket, mut stop: watch::Receiver<bool>) {
    let (mut sink, mut incoming) = ws.split();
    // Made once: dropping it while it answers a stream would lose that stream.
    let accepting = d.node.accept_stream();
    tokio::pin!(accepting);
    let stream = loop {
        tokio::select! {
            s = &mut accepting => break s,
            frame = incoming.next() => match frame {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            _ = stopped(&mut stop) => {
                let _ = sink.send(close_message(CloseCode::Away, "the daemon is shutting down")).await;
                return;
            }
        }
    };
    let from = StreamFrom {
        from: d.node.member_name(&stream.member),
        node_id: stream.member,
    };
    if sink.send(json_message(&from)).await.is_err() {
        let mut send = stream.send;
        let _ = send.reset(PROGRAM_GONE.into());
        return;
    }
    let ws = match sink.reunite(incoming) {
        Ok(ws) => ws,
        Err(_) => return,
    };
    carry(ws, stream, stop).await;
}

/// Carries bytes between a program's WebSocket and a member's stream, as the module says.
async fn carry(ws: ApiSocket, stream: MemberStream, mut stop: watch::Receiver<bool>) {
    let MemberStream {
        mut send, mut recv, ..
    } = stream;
    let (mut sink, mut incoming) = ws.split();
    let mut buf = vec![0u8; STREAM_CHUNK];
    let (mut program_done, mut member_done) = (false, false);
    let failure = loop {
        if program_done && member_done {
            break None;
        }
        tokio::select! {
            frame = incoming.next(), if !program_done => match frame {
                Some(Ok(Message::Binary(data))) if data.is_empty() => {
                    program_done = true;
                    let _ = send.finish();
                }
                Some(Ok(Message::Binary(data))) => {
                    if let Err(e) = send.write_all(&data).await {
                        break Some(format!("the member's stream: {e}"));
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    let _ = send.reset(PROGRAM_GONE.into());
                    let _ = recv.stop(PROGRAM_GONE.into());
                    return;
                }
                Some(Ok(_)) => {}
            },
            read = recv.read(&mut buf), if !member_done => match read {
                Ok(Some(n)) => {
                    if sink.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                        let _ = send.reset(PROGRAM_GONE.into());
                        let _ = recv.stop(PROGRAM_GONE.into());
                        return;
                    }
                }
                Ok(None) => {
                    member_done = true;
                    if sink.send(Message::binary(Vec::new())).await.is_err() {
                        let _ = send.reset(PROGRAM_GONE.into());
                        return;
                    }
                }
                Err(e) => break Some(format!("the member's stream: {e}")),
            },
            _ = stopped(&mut stop) => break Some("the daemon is shutting down".into()),
        }
    };
    let close = match &failure {
        None => close_message(CloseCode::Normal, ""),
        Some(why) => {
            let _ = send.reset(PROGRAM_GONE.into());
            close_message(CloseCode::Error, why)
        }
    };
    let _ = sink.send(close).await;
    if failure.is_none() {
        streams::delivered(&mut send).await;
    }
}
