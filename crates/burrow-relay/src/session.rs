//! One WebSocket session: a thin driver around
//! [`burrow_proto::relay::server_conn::ServerConnection`].
//!
//! Handshake first, in one loop. After AuthOk, a reader and a writer run concurrently in the
//! same task (no second task, to keep idle clients cheap): the reader hands each message to
//! the core and forwards Recv frames into other clients' bounded queues without ever
//! waiting on them; the writer drains this client's queue in batches and flushes once per
//! batch.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use burrow_proto::identity::NodeId;
use burrow_proto::relay::auth::{AuthError, OwnUrls};
use burrow_proto::relay::server_conn::{Action, CloseReason, Input, ServerConnection};
use burrow_proto::relay::{Frame, PeerGoneReason, FRAME_OVERHEAD};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, timeout};

use crate::clients::{Client, End};
use crate::metrics::DropReason;
use crate::Shared;

/// Frames the writer takes off the queue before each flush.
const WRITE_BATCH: usize = 64;
/// Destinations a reader remembers, to skip the clients' lock on the fast path.
const DEST_CACHE: usize = 8;
/// A sender re-registers itself with a destination's recent senders this often.
const NOTE_SENDER_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

type Sink = SplitSink<WebSocket, Message>;
type Stream = SplitStream<WebSocket>;

/// Runs one session to its end; its client must have signed for one of the URLs in `own`.
pub(crate) async fn run(
    ws: WebSocket,
    shared: Arc<Shared>,
    own: Arc<dyn OwnUrls>,
    mut shutdown: watch::Receiver<bool>,
    browser: bool,
) {
    let conn_id = shared.next_conn_id();
    let mut core = ServerConnection::new(
        Instant::now(),
        rand::random(),
        own,
        shared.config.limits.conn_limits(),
    );
    let (mut sink, mut stream) = ws.split();
    let hello = core.hello().to_vec();
    let end = match sink.send(Message::Binary(hello.into())).await {
        Err(_) => End::ClientClosed,
        Ok(()) => match handshake(&mut core, &mut stream, &mut shutdown, &shared).await {
            Ok((node_id, auth_ok)) => {
                let session = Session {
                    shared,
                    conn_id,
                    node_id,
                    browser,
                };
                return authenticated(core, sink, stream, shutdown, session, auth_ok).await;
            }
            Err(end) => end,
        },
    };
    // A session that never authenticated: say why and go.
    tracing::debug!(conn_id, reason = %end.label(), "handshake ended");
    if let End::Close(CloseReason::AuthFailed(e)) = &end {
        shared.metrics.auth_failures.inc();
        if let AuthError::WrongRelay { signed_for, own } = e {
            if !shared.warned_wrong_relay.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    %signed_for, this_relay = %own,
                    "refused a client that signed for another relay's URL: a relay passing on \
                     its clients' logins, or clients reaching this relay at a URL it does not \
                     know (behind a proxy, by a name): if {signed_for} is this relay, give it \
                     --public-url {signed_for} (said once)"
                );
            }
        }
    }
    shared.metrics.closed(end.label());
    close(&mut sink, &end, &shared).await;
}

/// Reads until a valid ClientAuth; returns the key and the AuthOk to send.
async fn handshake(
    core: &mut ServerConnection,
    stream: &mut Stream,
    shutdown: &mut watch::Receiver<bool>,
    shared: &Shared,
) -> Result<(NodeId, Frame<'static>), End> {
    loop {
        let deadline = core
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + shared.config.limits.handshake_timeout);
        tokio::select! {
            _ = sleep_until(deadline.into()) => {
                if let Some(reason) = core.handle_timeout(Instant::now()) {
                    return Err(End::Close(reason));
                }
            }
            _ = crate::until_shutdown(shutdown) => return Err(End::Close(CloseReason::ShuttingDown)),
            msg = stream.next() => {
                let mut buf = match message_input(msg) {
                    Ok(m) => m,
                    Err(end) => return Err(end),
                };
                let action = match &mut buf {
                    Received::Binary(b) => core.handle_input(Instant::now(), Input::Binary(b)),
                    Received::Other(input) => core.handle_input(Instant::now(), input.as_input()),
                };
                match action {
                    Action::Authenticated { node_id, .. }
                        if shared.config.allowed_keys.as_ref().is_some_and(|keys| !keys.contains(&node_id)) =>
                    {
                        return Err(End::Close(CloseReason::AuthFailed(AuthError::NotEnrolled)));
                    }
                    Action::Authenticated { node_id, reply } => return Ok((node_id, reply)),
                    Action::Close(reason) => return Err(End::Close(reason)),
                    Action::None | Action::Reply(_) | Action::Forward { .. } => {}
                }
            }
        }
    }
}

/// A received WebSocket message, owned and mutable for the core.
enum Received {
    Binary(BytesMut),
    Other(NonBinary),
}

enum NonBinary {
    Text(usize),
    Control,
}

impl NonBinary {
    fn as_input(&self) -> Input<'static> {
        match self {
            NonBinary::Text(n) => Input::Text(*n),
            NonBinary::Control => Input::Control,
        }
    }
}

/// Turns what the WebSocket stream gave into core input, or the end of the session.
fn message_input(msg: Option<Result<Message, axum::Error>>) -> Result<Received, End> {
    match msg {
        None | Some(Ok(Message::Close(_))) => Err(End::ClientClosed),
        Some(Err(e)) => Err(transport_error(e)),
        Some(Ok(Message::Binary(b))) => Ok(Received::Binary(
            // Unique only if tungstenite no longer shares its read buffer; else copy once.
            b.try_into_mut().unwrap_or_else(|b| BytesMut::from(&b[..])),
        )),
        Some(Ok(Message::Text(t))) => Ok(Received::Other(NonBinary::Text(t.len()))),
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(Received::Other(NonBinary::Control)),
    }
}

/// Classifies a WebSocket-layer error: too large (1009), a broken connection (nothing to
/// send) or invalid WebSocket framing (1002).
fn transport_error(e: axum::Error) -> End {
    use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
    let inner = e.into_inner();
    match inner.downcast_ref::<WsError>() {
        Some(WsError::Capacity(CapacityError::MessageTooLong { size, .. })) => {
            End::Close(CloseReason::TooLarge(*size))
        }
        Some(WsError::Capacity(c)) => End::Close(CloseReason::Transport(c.to_string())),
        Some(WsError::Protocol(p)) => End::Close(CloseReason::Transport(p.to_string())),
        Some(WsError::Utf8(_)) => End::Close(CloseReason::Transport("invalid UTF-8".into())),
        _ => End::ClientClosed,
    }
}

/// Sends the close frame (and first a Restarting notice when shutting down), bounded in time.
async fn close(sink: &mut Sink, end: &End, shared: &Shared) {
    let End::Close(reason) = end else {
        let _ = timeout(shared.config.shutdown_grace, sink.close()).await;
        return;
    };
    let grace = shared.config.shutdown_grace;
    let _ = timeout(grace, async {
        let frame = CloseFrame {
            code: reason.code(),
            reason: reason.to_string().into(),
        };
        sink.send(Message::Close(Some(frame))).await
    })
    .await;
}

/// Who an authenticated session is.
struct Session {
    shared: Arc<Shared>,
    conn_id: u64,
    node_id: NodeId,
    /// Its upgrade came from a web page (it had an `Origin`).
    browser: bool,
}

async fn authenticated(
    mut core: ServerConnection,
    mut sink: Sink,
    mut stream: Stream,
    mut shutdown: watch::Receiver<bool>,
    session: Session,
    auth_ok: Frame<'static>,
) {
    let Session {
        shared,
        conn_id,
        node_id,
        browser,
    } = session;
    let limits = &shared.config.limits;
    let (tx, mut rx) = mpsc::channel(limits.client_queue_frames.max(1));
    let me = Arc::new(Client::new(conn_id, node_id, tx, limits.client_queue_bytes));
    // AuthOk goes first in the queue, before anyone can find this client.
    let _ = me.enqueue(Bytes::from(auth_ok.to_vec()));
    if let Some(old) = shared.clients.insert(me.clone()) {
        old.kill.fire(End::Close(CloseReason::Replaced));
    } else {
        shared.metrics.clients.inc();
    }
    shared.presence.connected(node_id, Instant::now());
    if browser {
        shared.metrics.browser_clients.inc();
    }
    tracing::debug!(conn_id, node = %node_id.short(), "client authenticated");

    let reader = read_loop(&mut core, &mut stream, &shared, &me);
    let writer = write_loop(&mut sink, &mut rx, &me);
    let killed = async {
        tokio::select! {
            _ = me.kill.wait() => {}
            _ = crate::until_shutdown(&mut shutdown) => me.kill.fire(End::Close(CloseReason::ShuttingDown)),
        }
    };
    // The reader and writer end themselves when the session is killed; `killed` turns a
    // shutdown into a kill, and gives a writer stuck on a client that does not read a grace
    // period before it is abandoned.
    let grace = shared.config.shutdown_grace;
    tokio::select! {
        _ = async { tokio::join!(reader, writer) } => {}
        _ = async { killed.await; tokio::time::sleep(grace).await } => {}
    }
    let end = me.kill.reason().cloned().unwrap_or(End::ClientClosed);

    // Leave the clients before the close frame, so nobody queues to a closing client.
    if shared.clients.remove(&me) {
        shared.metrics.clients.dec();
        notify_recent_senders(&shared, &me);
    }
    shared.presence.disconnected(&node_id, Instant::now());
    if browser {
        shared.metrics.browser_clients.dec();
    }
    tracing::debug!(conn_id, node = %node_id.short(), reason = end.label(), "client closed");
    shared.metrics.closed(end.label());
    // One grace period for the notice and the close together.
    let _ = timeout(shared.config.shutdown_grace, async {
        if let End::Close(CloseReason::ShuttingDown) = end {
            let notice = Frame::Restarting {
                reconnect_in_ms: ms(shared.config.restart_notice.reconnect_in),
                try_for_ms: ms(shared.config.restart_notice.try_for),
            };
            let _ = sink.feed(Message::Binary(notice.to_vec().into())).await;
        }
        close(&mut sink, &end, &shared).await;
    })
    .await;
}

fn ms(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// Tells the clients that recently sent to `gone` that it has disconnected.
fn notify_recent_senders(shared: &Shared, gone: &Client) {
    let frame = Bytes::from(
        Frame::PeerGone {
            node: gone.node_id,
            reason: PeerGoneReason::Disconnected,
        }
        .to_vec(),
    );
    for sender in gone.take_recent_senders() {
        if let Some(c) = shared.clients.get(&sender) {
            if c.enqueue(frame.clone()).is_ok() {
                shared.metrics.notice("disconnected");
            }
        }
    }
}

/// A destination the reader has looked up lately.
struct Dest {
    client: Arc<Client>,
    noted_at: Instant,
}

async fn read_loop(
    core: &mut ServerConnection,
    stream: &mut Stream,
    shared: &Shared,
    me: &Arc<Client>,
) {
    let mut cache: Vec<Dest> = Vec::new();
    // One timer for the session rather than a fresh `sleep_until` per message (which
    // registers and cancels a timer entry each time). The deadline only moves later while
    // frames arrive, so the timer stays armed at the older, earlier deadline; when that fires
    // early the core says so and the timer is re-armed at the current one.
    let timer = tokio::time::sleep_until(Instant::now().into());
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;
    // Likewise one kill waiter, not one registered with the Notify per message.
    let killed = me.kill.wait();
    tokio::pin!(killed);
    let end = loop {
        let now = Instant::now();
        if let Some(resume) = core.read_resume_at(now) {
            shared.metrics.throttled.inc();
            tokio::select! {
                _ = sleep_until(resume.into()) => {}
                _ = &mut killed => return,
            }
        }
        let Some(deadline) = core.poll_timeout() else {
            return;
        };
        if !matches!(armed, Some(a) if a <= deadline) {
            timer.as_mut().reset(deadline.into());
            armed = Some(deadline);
        }
        let msg = tokio::select! {
            biased;
            _ = &mut killed => return,
            _ = &mut timer => {
                armed = None;
                match core.handle_timeout(Instant::now()) {
                    Some(reason) => break End::Close(reason),
                    None => continue,
                }
            }
            msg = stream.next() => msg,
        };
        let mut buf = match message_input(msg) {
            Ok(Received::Binary(b)) => b,
            Ok(Received::Other(other)) => {
                match core.handle_input(Instant::now(), other.as_input()) {
                    Action::Close(reason) => break End::Close(reason),
                    _ => continue,
                }
            }
            Err(end) => break end,
        };
        let now = Instant::now();
        match core.handle_input(now, Input::Binary(&mut buf)) {
            Action::Forward { dst } => {
                forward(shared, me, &mut cache, now, dst, buf.freeze(), core)
            }
            Action::Reply(frame) => {
                let _ = me.enqueue(Bytes::from(frame.to_vec()));
            }
            Action::Close(reason) => break End::Close(reason),
            Action::None | Action::Authenticated { .. } => {}
        }
    };
    me.kill.fire(end);
}

fn forward(
    shared: &Shared,
    me: &Client,
    cache: &mut Vec<Dest>,
    now: Instant,
    dst: NodeId,
    frame: Bytes,
    core: &mut ServerConnection,
) {
    let payload = frame.len().saturating_sub(FRAME_OVERHEAD) as u64;
    let pos = cache
        .iter()
        .position(|d| d.client.node_id == dst && !d.client.is_gone());
    let dest = match pos {
        Some(i) => &mut cache[i],
        None => {
            cache.retain(|d| !d.client.is_gone());
            let Some(client) = shared.clients.get(&dst) else {
                shared.metrics.dropped(DropReason::NoSuchPeer);
                if let Some(notice) = core.not_connected_notice(now, dst) {
                    if me.enqueue(Bytes::from(notice.to_vec())).is_ok() {
                        shared.metrics.notice("not_connected");
                    }
                }
                return;
            };
            if cache.len() >= DEST_CACHE {
                cache.remove(0);
            }
            client.note_sender(me.node_id);
            cache.push(Dest {
                client,
                noted_at: now,
            });
            cache.last_mut().expect("just pushed")
        }
    };
    if now.saturating_duration_since(dest.noted_at) >= NOTE_SENDER_EVERY {
        dest.client.note_sender(me.node_id);
        dest.noted_at = now;
    }
    let signal = frame
        .get(FRAME_OVERHEAD..)
        .is_some_and(burrow_proto::signal::looks_like_signal);
    match dest.client.enqueue(frame) {
        Ok(()) => {
            shared.metrics.frames_forwarded.inc();
            if signal {
                shared.metrics.signals_forwarded.inc();
            }
            shared.metrics.bytes_forwarded.inc_by(payload);
        }
        Err(reason) => shared.metrics.dropped(reason),
    }
}

async fn write_loop(sink: &mut Sink, rx: &mut mpsc::Receiver<Bytes>, me: &Client) {
    let killed = me.kill.wait();
    tokio::pin!(killed);
    loop {
        // A fresh batch each time: an idle client then holds no batch memory.
        let mut batch = Vec::new();
        let n = tokio::select! {
            biased;
            _ = &mut killed => return,
            n = rx.recv_many(&mut batch, WRITE_BATCH) => n,
        };
        if n == 0 {
            return;
        }
        let result = async {
            for frame in batch.drain(..) {
                me.dequeued(frame.len());
                sink.feed(Message::Binary(frame)).await?;
            }
            sink.flush().await
        }
        .await;
        if result.is_err() {
            me.kill.fire(End::ClientClosed);
            return;
        }
    }
}
