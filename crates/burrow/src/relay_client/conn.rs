//! One relay's task: connect, authenticate, move datagrams, and reconnect with backoff.

use std::sync::Arc;
use std::time::{Duration, Instant};

use burrow_proto::relay::backoff::Backoff;
use burrow_proto::relay::client_conn::{
    encode_send, ClientConnection, ConnError, Event, Input, Output,
};
use burrow_proto::relay::server_conn::CLOSE_REPLACED;
use burrow_proto::relay::{RelayUrl, FRAME_OVERHEAD, MAX_PAYLOAD};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info, warn};

use super::tls::{self, TlsConfig};
use super::{Datagram, RelayClientOptions, RelayConnState, RelayEvent, Shared};
use crate::error_chain::Chain;
use crate::SecretKey;

/// A connection authenticated for at least this long counts as a success: the backoff
/// starts again from its shortest delay. (A relay that accepts and at once drops us does not
/// get hammered at the shortest delay.)
const STABLE_AFTER: Duration = Duration::from_secs(1);
/// Control frames (pings, pongs) waiting for the writer; more are dropped, since a writer this
/// far behind is stuck and the silence detection will end the connection.
const CONTROL_QUEUE: usize = 32;
/// Messages written before the writer flushes even if more are waiting.
const WRITE_BATCH: usize = 64;
/// How long a closing client waits to deliver its WebSocket close.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Everything one relay's task owns.
pub(super) struct RelayTask {
    pub idx: usize,
    pub url: RelayUrl,
    pub key: SecretKey,
    pub opts: Arc<RelayClientOptions>,
    pub tls: Option<TlsConfig>,
    pub shared: Arc<Shared>,
    /// Datagrams to send through this relay.
    pub outgoing: mpsc::Receiver<Datagram>,
    /// Datagrams received, for [`super::RelayClient::recv`].
    pub incoming: mpsc::Sender<(usize, crate::NodeId, Bytes)>,
    pub shutdown: watch::Receiver<bool>,
}

/// How a connection attempt ended.
struct Ended {
    /// Why, for the state and the log.
    error: String,
    /// How long it was authenticated, if it got that far.
    authenticated_for: Option<Duration>,
    /// What the relay said about the end.
    notices: Notices,
    /// The client is closing.
    shutdown: bool,
}

impl Ended {
    fn error(error: impl ToString) -> Self {
        Ended {
            error: error.to_string(),
            authenticated_for: None,
            notices: Notices::default(),
            shutdown: false,
        }
    }
}

/// What the relay says about why a connection ends, gathered while it runs.
#[derive(Default)]
struct Notices {
    /// Its restart notice: reconnect in, try for.
    restart: Option<(Duration, Duration)>,
    /// It closed the connection for a newer one with our key (close code 4001).
    replaced: bool,
}

/// Resolves once the client is closing (or every client handle is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn ws_config() -> WebSocketConfig {
    // A hostile relay cannot make us buffer more than one maximal frame.
    let max = MAX_PAYLOAD + FRAME_OVERHEAD;
    WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

impl RelayTask {
    /// Connects, and reconnects after every drop, until the client closes.
    pub(super) async fn run(mut self) {
        let mut backoff = Backoff::new(self.opts.backoff.clone(), rand::random());
        loop {
            let attempt = backoff.attempt();
            self.shared.update(self.idx, |s| {
                s.state = RelayConnState::Connecting { attempt };
            });
            let mut stop = self.shutdown.clone();
            let ended = tokio::select! {
                ended = self.connect_and_run() => ended,
                _ = stopped(&mut stop) => break,
            };
            if ended.shutdown {
                break;
            }
            let now = Instant::now();
            if ended.authenticated_for.is_some_and(|d| d >= STABLE_AFTER) {
                backoff.reset();
            }
            if let Some((reconnect_in, try_for)) = ended.notices.restart {
                backoff.restart_notice(reconnect_in, try_for, now);
            }
            let new_streak = ended.notices.replaced
                && backoff.replaced(ended.authenticated_for.unwrap_or_default());
            let delay = backoff.next_delay(now);
            if new_streak {
                // Said once per streak: each replacement after it is the same news.
                warn!(relay = %self.url, retry_in = ?delay,
                    "another node is using this node's key: the relay took a newer connection \
                     for it in place of ours; reconnecting ever less often (give each node its \
                     own key)");
                let _ = self.shared.events.send(RelayEvent::Replaced {
                    relay: self.url.clone(),
                    retry_in: delay,
                });
            }
            let until = now + delay;
            let attempt = backoff.attempt();
            let error = ended.error.clone();
            // First the state, which moves the home elsewhere, so no new sends land here...
            self.shared.update(self.idx, |s| {
                s.state = RelayConnState::Backoff {
                    until,
                    attempt,
                    error,
                };
            });
            // ...then the queue: what it holds would be stale by the time we are back.
            let mut dropped = 0usize;
            while self.outgoing.try_recv().is_ok() {
                dropped += 1;
            }
            if ended.authenticated_for.is_some() {
                info!(relay = %self.url, error = %ended.error, dropped, ?delay, "relay connection lost");
            } else {
                debug!(relay = %self.url, error = %ended.error, ?delay, "relay connection failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stopped(&mut self.shutdown) => break,
            }
        }
        self.shared
            .update(self.idx, |s| s.state = RelayConnState::Closed);
    }

    /// One connection, from TCP connect until it ends.
    async fn connect_and_run(&mut self) -> Ended {
        let deadline = tokio::time::Instant::now() + self.opts.connect_timeout;
        let addr = (self.url.host().to_string(), self.url.port());
        let tcp = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Ended::error(format!("connect: {e}")),
            Err(_) => return Ended::error("connect: timed out"),
        };
        // Small datagrams must not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some(config) if self.url.is_tls() => {
                let host = self.url.host().to_string();
                match tokio::time::timeout_at(deadline, tls::connect(config, &host, tcp)).await {
                    Ok(Ok(stream)) => self.session(stream, deadline).await,
                    Ok(Err(e)) => Ended::error(Chain(&e)),
                    Err(_) => Ended::error("TLS handshake timed out"),
                }
            }
            _ => self.session(tcp, deadline).await,
        }
    }

    /// The WebSocket upgrade, the relay handshake, then datagrams until the connection ends.
    async fn session<S>(&mut self, stream: S, deadline: tokio::time::Instant) -> Ended
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let upgrade = tokio_tungstenite::client_async_with_config(
            self.url.ws_url(),
            stream,
            Some(ws_config()),
        );
        let ws = match tokio::time::timeout_at(deadline, upgrade).await {
            Ok(Ok((ws, _response))) => ws,
            Ok(Err(e)) => return Ended::error(format!("WebSocket upgrade: {e}")),
            Err(_) => return Ended::error("WebSocket upgrade timed out"),
        };
        let (mut sink, mut stream) = ws.split();
        let mut conn =
            ClientConnection::new(self.key.clone(), &self.url, self.opts.connection.clone());
        conn.handle_input(Instant::now(), Input::Start);
        let mut notices = Notices::default();

        // The handshake, in lock step.
        let handshake = async {
            let mut connected = None;
            loop {
                let wake = loop {
                    match conn.poll_output() {
                        Output::Transmit(msg) => sink
                            .send(Message::Binary(msg.into()))
                            .await
                            .map_err(|e| format!("send: {e}"))?,
                        // Transmits come first: the first ping, for the RTT that picks the home
                        // relay, is sent by now.
                        Output::Event(Event::Connected { idle_timeout }) => {
                            connected = Some(idle_timeout)
                        }
                        Output::Event(Event::Restarting {
                            reconnect_in,
                            try_for,
                        }) => notices.restart = Some((reconnect_in, try_for)),
                        Output::Event(Event::Failed(e)) => return Err(Chain(&e).to_string()),
                        Output::Event(_) => {}
                        Output::Timeout(at) => break at,
                    }
                };
                if let Some(idle_timeout) = connected {
                    return Ok(idle_timeout);
                }
                tokio::select! {
                    msg = stream.next() => {
                        if let Some(bytes) = binary(msg)? {
                            conn.handle_input(Instant::now(), Input::Message(bytes));
                        }
                    }
                    _ = sleep_until(wake) => {}
                }
                if wake.is_some_and(|at| Instant::now() >= at) {
                    conn.handle_input(Instant::now(), Input::Timeout);
                }
            }
        };
        // The core times the handshake out too; this also bounds a send that never completes.
        let limit = self.opts.connection.handshake_timeout;
        let handshake = async {
            tokio::time::timeout(limit, handshake)
                .await
                .unwrap_or_else(|_| Err(ConnError::HandshakeTimeout(limit).to_string()))
        };
        let idle_timeout = match handshake.await {
            // A restart notice followed by a welcome is history.
            Ok(t) => {
                notices.restart = None;
                t
            }
            Err(error) => {
                return Ended {
                    notices,
                    ..Ended::error(error)
                }
            }
        };
        let since = Instant::now();
        debug!(relay = %self.url, ?idle_timeout, ping = ?conn.ping_interval(), "relay connected");
        self.shared.update(self.idx, |s| {
            s.state = RelayConnState::Connected { rtt: None, since };
            s.connects += 1;
        });

        let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let reader = read_loop(
            &mut conn,
            &mut stream,
            control_tx,
            self.idx,
            &self.incoming,
            &self.shared,
            &mut notices,
        );
        let writer = write_loop(&mut sink, control_rx, &mut self.outgoing);
        let (error, shutdown) = tokio::select! {
            e = reader => (e, false),
            e = writer => (e, false),
            _ = stopped(&mut self.shutdown) => ("client closed".to_string(), true),
        };
        if shutdown {
            let close = Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "client closing".into(),
            }));
            let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(close)).await;
        }
        Ended {
            error,
            authenticated_for: Some(since.elapsed()),
            notices,
            shutdown,
        }
    }
}

/// Sleeps until `at`, or forever for `None`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The bytes of a binary message (`None` for WebSocket control messages), or why the
/// connection is over.
fn binary(
    msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> Result<Option<Bytes>, String> {
    match msg {
        None => Err("connection closed".into()),
        Some(Err(e)) => Err(format!("receive: {e}")),
        Some(Ok(Message::Binary(b))) => Ok(Some(b)),
        Some(Ok(Message::Close(Some(frame)))) => Err(format!(
            "closed by the relay ({}): {}",
            u16::from(frame.code),
            frame.reason
        )),
        Some(Ok(Message::Close(None))) => Err("closed by the relay".into()),
        Some(Ok(Message::Text(_))) => Err("the relay sent a text message".into()),
        // WebSocket-level pings are answered by tungstenite; they also show the link is alive,
        // but only relay frames count for the keepalive, which is the relay's own.
        Some(Ok(_)) => Ok(None),
    }
}

/// Reads frames, runs the keepalive timers, and hands datagrams to the application.
async fn read_loop<St>(
    conn: &mut ClientConnection,
    stream: &mut St,
    control: mpsc::Sender<Vec<u8>>,
    idx: usize,
    incoming: &mpsc::Sender<(usize, crate::NodeId, Bytes)>,
    shared: &Shared,
    notices: &mut Notices,
) -> String
where
    St: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    // One timer, moved when the core's deadline does, rather than a fresh `sleep_until`
    // (a timer entry registered and cancelled) per message.
    let timer = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(timer);
    loop {
        let wake = loop {
            match conn.poll_output() {
                // A full control queue means a stuck writer; silence detection ends it.
                Output::Transmit(msg) => drop(control.try_send(msg)),
                Output::Event(Event::Recv { src, payload }) => {
                    // Waiting here pushes back on the relay rather than dropping.
                    if incoming.send((idx, src, payload)).await.is_err() {
                        return "client dropped".into();
                    }
                }
                Output::Event(Event::Rtt { smoothed, .. }) => {
                    shared.update(idx, |s| {
                        if let RelayConnState::Connected { rtt, .. } = &mut s.state {
                            *rtt = Some(smoothed);
                        }
                    });
                }
                Output::Event(Event::PeerGone { node, reason }) => {
                    debug!(relay = %shared.urls[idx], peer = %node.short(), ?reason, "peer gone");
                }
                Output::Event(Event::Restarting {
                    reconnect_in,
                    try_for,
                }) => {
                    info!(relay = %shared.urls[idx], ?reconnect_in, ?try_for, "relay restarting");
                    notices.restart = Some((reconnect_in, try_for));
                }
                Output::Event(Event::Failed(e)) => {
                    if !matches!(e, ConnError::Dead(_)) {
                        warn!(relay = %shared.urls[idx], "protocol error: {}", Chain(&e));
                    }
                    return Chain(&e).to_string();
                }
                Output::Event(Event::Connected { .. }) => {}
                Output::Timeout(at) => break at,
            }
        };
        if let Some(wake) = wake.map(tokio::time::Instant::from_std) {
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
        }
        tokio::select! {
            // Frames first: under load, a late look at the clock must not see silence that the
            // socket buffer would disprove.
            biased;
            msg = stream.next() => {
                if let Some(Ok(Message::Close(Some(frame)))) = &msg {
                    notices.replaced = u16::from(frame.code) == CLOSE_REPLACED;
                }
                match binary(msg) {
                    Ok(Some(bytes)) => conn.handle_input(Instant::now(), Input::Message(bytes)),
                    Ok(None) => {}
                    Err(e) => return e,
                }
            }
            _ = &mut timer, if wake.is_some() => {}
        }
        // Also after a frame: while frames keep coming, the timer branch may never win.
        if wake.is_some_and(|at| Instant::now() >= at) {
            conn.handle_input(Instant::now(), Input::Timeout);
        }
    }
}

/// Writes control frames (first) and datagrams, flushing once the queues are drained.
async fn write_loop<Si>(
    sink: &mut Si,
    mut control: mpsc::Receiver<Vec<u8>>,
    outgoing: &mut mpsc::Receiver<Datagram>,
) -> String
where
    Si: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    fn datagram(d: Datagram) -> Option<Message> {
        // Sizes were checked by send(); a failure here is skipped, not fatal.
        encode_send(&d.0, &d.1)
            .ok()
            .map(|m| Message::Binary(m.into()))
    }
    loop {
        let first = tokio::select! {
            biased;
            c = control.recv() => match c {
                Some(m) => Message::Binary(m.into()),
                None => return "reader ended".into(),
            },
            d = outgoing.recv() => match d {
                Some(d) => match datagram(d) {
                    Some(m) => m,
                    None => continue,
                },
                None => return "client dropped".into(),
            },
        };
        if let Err(e) = sink.feed(first).await {
            return format!("send: {e}");
        }
        for _ in 0..WRITE_BATCH {
            let next = match control.try_recv() {
                Ok(m) => Message::Binary(m.into()),
                Err(_) => match outgoing.try_recv() {
                    Ok(d) => match datagram(d) {
                        Some(m) => m,
                        None => continue,
                    },
                    Err(_) => break,
                },
            };
            if let Err(e) = sink.feed(next).await {
                return format!("send: {e}");
            }
        }
        if let Err(e) = sink.flush().await {
            return format!("send: {e}");
        }
    }
}
