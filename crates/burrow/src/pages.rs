//! Browser peers: burrow.js connections answered by a native endpoint (the `webrtc` feature).
//!
//! A page dials with a signed offer ([`burrow_proto::signal`]) carrying its ephemeral key and a
//! WebRTC offer; the endpoint answers with its own key and a WebRTC answer made by str0m, with
//! ICE candidates from its interfaces and its STUN-learned address **on the socket QUIC uses**.
//! The endpoint dials a page the same way round ([`crate::endpoint::Endpoint::dial_page`]).
//! Messages go through the relay at once ([`burrow_proto::page_conn`], end-to-end encrypted),
//! and on the WebRTC data channel once ICE and DTLS are up, as in burrow.js.
//!
//! One task (the host) owns every session: the signaling core, each session's
//! [`PageConn`] and [`Rtc`]. The socket layer hands it the datagrams WebRTC owns (DTLS, and
//! STUN with MESSAGE-INTEGRITY, which ICE checks carry and the endpoint's own STUN never
//! does), the relay reader hands it signals and connection datagrams, and programs talk to it
//! through [`PageConnection`]. It sends what the cores return and sleeps until the next
//! deadline of any of them.
//!
//! Limits: [`MAX_SESSIONS`] at once (offers beyond are ignored), [`MAX_SESSIONS_PER_PEER`] per
//! key (a new one closes its oldest); a session whose page is silent for
//! [`page_conn::IDLE_TIMEOUT`] ends (both sides send a keepalive after
//! [`page_conn::KEEPALIVE`] of silence), so vanished tabs do not hold sessions. Messages that came and that the program has not read
//! yet are held for it: a program must keep reading.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use burrow_proto::identity::{NodeId, SecretKey};
/// How a page connection's messages go: through the relay or on the WebRTC data channel.
pub use burrow_proto::page_conn::Path;
use burrow_proto::page_conn::{self, Ephemeral, PageConn, Role};
use burrow_proto::signal::{self, Kind, Signaling};
use burrow_proto::stun;
use bytes::Bytes;
use data_encoding::BASE64URL_NOPAD;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use str0m::config::DtlsCert;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Rtc, RtcConfig};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tracing::debug;

use crate::endpoint::socket::MagicSocket;
use crate::relay_client::RelayClient;

/// Page sessions at once; offers beyond are ignored.
pub const MAX_SESSIONS: usize = 256;
/// Sessions of one key at once (burrow.js holds as many); a new one closes the oldest.
pub const MAX_SESSIONS_PER_PEER: usize = 8;
/// Reliable messages a program may have given and not yet had acknowledged, per connection;
/// [`PageConnection::send`] waits beyond.
pub const SEND_BUDGET: usize = 2 * page_conn::WINDOW;
/// Datagrams waiting for the host, from the socket and from the relay each; more are dropped
/// (ICE and the connection's resends make up for them).
const QUEUE: usize = 1024;
/// Page connections waiting for [`crate::endpoint::Endpoint::accept_page`].
const ACCEPT_QUEUE: usize = 64;
/// A dial's offer goes again this often until the answer comes (a relay drops datagrams when
/// a queue is full)...
const RESEND_OFFER: std::time::Duration = std::time::Duration::from_secs(1);
/// ...and the dial fails after this long without one.
pub const DIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The negotiated data channels of burrow.js: reliable and ordered, and unordered without
/// retransmissions.
const RELIABLE_CHANNEL: u16 = 0;
const UNRELIABLE_CHANNEL: u16 = 1;

/// A message from a page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageMessage {
    /// Its bytes.
    pub data: Bytes,
    /// Sent reliably (once, in order) or not.
    pub reliable: bool,
}

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// The connection ended.
    #[error("the page connection is closed")]
    Closed,
    /// More than [`page_conn::MAX_MESSAGE`] bytes.
    #[error("a message is at most {} bytes", page_conn::MAX_MESSAGE)]
    TooLong,
    /// The dialled key sent no answer within [`DIAL_TIMEOUT`].
    #[error("no answer within {DIAL_TIMEOUT:?}")]
    NoAnswer,
    /// The dialled key answered with something that is not an answer to our offer.
    #[error("the answer is not one to our offer")]
    BadAnswer,
}

/// A connection with a page (or any burrow.js peer) that dialled this endpoint.
#[derive(Debug)]
pub struct PageConnection {
    peer: NodeId,
    session: u64,
    messages: mpsc::UnboundedReceiver<PageMessage>,
    commands: mpsc::UnboundedSender<Command>,
    budget: Arc<Semaphore>,
    path: watch::Receiver<Path>,
}

impl PageConnection {
    /// The page's key.
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// How messages go now.
    pub fn path(&self) -> Path {
        *self.path.borrow()
    }

    /// The path as it changes (`changed()` fails once the connection ended).
    pub fn path_updates(&self) -> watch::Receiver<Path> {
        self.path.clone()
    }

    /// The session's id (the dialler chose it).
    pub fn session(&self) -> u64 {
        self.session
    }

    /// The next message; `None` once the connection ended.
    pub async fn recv(&mut self) -> Option<PageMessage> {
        self.messages.recv().await
    }

    /// Sends `data`, reliably (waits while [`SEND_BUDGET`] messages are unacknowledged) or
    /// not.
    pub async fn send(&self, data: Bytes, reliable: bool) -> Result<(), PageError> {
        if data.len() > page_conn::MAX_MESSAGE {
            return Err(PageError::TooLong);
        }
        if reliable {
            self.budget
                .acquire()
                .await
                .map_err(|_| PageError::Closed)?
                .forget();
        }
        self.commands
            .send(Command::Send {
                key: (self.peer, self.session),
                data,
                reliable,
            })
            .map_err(|_| PageError::Closed)
    }

    /// Ends the connection (the page is told with a signed bye).
    pub fn close(&self) {
        let _ = self.commands.send(Command::Close {
            key: (self.peer, self.session),
        });
    }
}

impl Drop for PageConnection {
    fn drop(&mut self) {
        self.close();
    }
}

type Key = (NodeId, u64);

#[derive(Debug)]
pub(crate) enum Command {
    Send {
        key: Key,
        data: Bytes,
        reliable: bool,
    },
    Close {
        key: Key,
    },
    Dial {
        peer: NodeId,
        reply: oneshot::Sender<Result<PageConnection, PageError>>,
    },
}

/// A UDP datagram for WebRTC, with where it came from and the local IP it came to.
#[derive(Debug)]
pub(crate) struct Datagram {
    pub from: SocketAddr,
    pub to_ip: Option<IpAddr>,
    pub packet: Bytes,
}

/// Whether a datagram on the endpoint's socket is WebRTC's: DTLS (first byte 20 to 63, RFC
/// 7983; the caller has ruled out disco, whose 0x20 lies in that range), or STUN that carries
/// MESSAGE-INTEGRITY (ICE's checks and answers; the endpoint's own STUN answers carry none).
pub(crate) fn is_webrtc(packet: &[u8]) -> bool {
    match packet.first() {
        Some(20..=63) => true,
        Some(0..=3) => stun::looks_like_stun(packet) && has_message_integrity(packet),
        _ => false,
    }
}

/// Whether a STUN message has a MESSAGE-INTEGRITY attribute. A scan of the attribute list,
/// not a parse: ICE's attributes (PRIORITY, USE-CANDIDATE, ICE-CONTROLLING, ...) are not ones
/// the endpoint's STUN parser takes.
fn has_message_integrity(packet: &[u8]) -> bool {
    const MESSAGE_INTEGRITY: u16 = 0x0008;
    let mut at = 20;
    while at + 4 <= packet.len() {
        let kind = u16::from_be_bytes([packet[at], packet[at + 1]]);
        let len = usize::from(u16::from_be_bytes([packet[at + 2], packet[at + 3]]));
        if kind == MESSAGE_INTEGRITY {
            return true;
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    false
}

/// The endpoint's side of the host: where the socket and the relay reader send, and where
/// page connections come out.
#[derive(Debug)]
pub(crate) struct Pages {
    pub udp: mpsc::Sender<Datagram>,
    pub commands: mpsc::UnboundedSender<Command>,
    pub relayed: mpsc::Sender<(NodeId, Bytes)>,
    pub accepted: tokio::sync::Mutex<mpsc::Receiver<PageConnection>>,
}

/// Starts the host; returns the endpoint's side and the task.
pub(crate) fn spawn(
    secret: SecretKey,
    socket: Arc<MagicSocket>,
    relay: RelayClient,
    candidates: watch::Receiver<Vec<SocketAddr>>,
) -> Result<(Pages, tokio::task::JoinHandle<()>), rcgen::Error> {
    let (udp_tx, udp_rx) = mpsc::channel(QUEUE);
    let (relayed_tx, relayed_rx) = mpsc::channel(QUEUE);
    let (accept_tx, accept_rx) = mpsc::channel(ACCEPT_QUEUE);
    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    let host = Host {
        me: secret.node_id(),
        signaling: Signaling::new(secret, rand::random()),
        relay,
        socket,
        candidates,
        cert: dtls_cert()?,
        sessions: HashMap::new(),
        accept: accept_tx,
        commands_tx: commands_tx.clone(),
        dials: HashMap::new(),
    };
    let task = tokio::spawn(host.run(udp_rx, relayed_rx, commands_rx));
    Ok((
        Pages {
            udp: udp_tx,
            commands: commands_tx,
            relayed: relayed_tx,
            accepted: tokio::sync::Mutex::new(accept_rx),
        },
        task,
    ))
}

/// The endpoint's DTLS certificate (ECDSA P-256, self-signed; its fingerprint goes in every
/// signed answer, which is what authenticates it).
fn dtls_cert() -> Result<DtlsCert, rcgen::Error> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.serial_number = Some(rand::random::<[u8; 16]>().to_vec().into());
    let cert = params.self_signed(&key)?;
    Ok(DtlsCert {
        certificate: cert.der().to_vec(),
        private_key: key.serialize_der(),
    })
}

struct Session {
    core: PageConn,
    rtc: Option<Rtc>,
    channels: Option<(ChannelId, ChannelId)>,
    ice_up: bool,
    channel_open: bool,
    /// Direct messages the data channel had no room for yet.
    backlog: VecDeque<(Vec<u8>, bool)>,
    answer: String,
    to_program: mpsc::UnboundedSender<PageMessage>,
    path: watch::Sender<Path>,
    budget: Arc<Semaphore>,
    /// Reliable messages the program gave, and how many of them the budget got back.
    given: usize,
    returned: usize,
    started: Instant,
    /// The page went silent ([`page_conn::IDLE_TIMEOUT`]): the session is removed.
    timed_out: bool,
}

struct Host {
    me: NodeId,
    signaling: Signaling,
    relay: RelayClient,
    socket: Arc<MagicSocket>,
    candidates: watch::Receiver<Vec<SocketAddr>>,
    cert: DtlsCert,
    sessions: HashMap<Key, Session>,
    accept: mpsc::Sender<PageConnection>,
    commands_tx: mpsc::UnboundedSender<Command>,
    dials: HashMap<Key, Dialling>,
}

/// A dial waiting for its answer.
struct Dialling {
    ours: Ephemeral,
    rtc: Option<(Rtc, (ChannelId, ChannelId), SdpPendingOffer)>,
    offer: String,
    reply: oneshot::Sender<Result<PageConnection, PageError>>,
    started: Instant,
    next_offer: Instant,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Host {
    async fn run(
        mut self,
        mut udp: mpsc::Receiver<Datagram>,
        mut relayed: mpsc::Receiver<(NodeId, Bytes)>,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) {
        loop {
            let wake = self.drain(Instant::now());
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    self.signaling.handle_input(now, signal::Input::Timeout);
                    for s in self.sessions.values_mut() {
                        s.core.handle_input(now, page_conn::Input::Timeout);
                        if let Some(rtc) = &mut s.rtc {
                            let _ = rtc.handle_input(str0m::Input::Timeout(now));
                        }
                    }
                }
                Some((from, payload)) = relayed.recv() => self.relayed(from, &payload),
                Some(d) = udp.recv() => self.udp(d),
                Some(cmd) = commands.recv() => self.command(cmd),
                else => return,
            }
        }
    }

    fn relayed(&mut self, from: NodeId, payload: &[u8]) {
        let now = Instant::now();
        if signal::looks_like_signal(payload) {
            self.signaling.handle_input(
                now,
                signal::Input::Received {
                    data: payload,
                    unix_ms: unix_ms(),
                },
            );
            while let Some(out) = self.poll_signaling() {
                if let Ok(s) = out {
                    // A relay passing one key's signal off as another's gets nowhere.
                    if s.from == from {
                        self.signalled(now, s);
                    }
                }
            }
        } else if let Some(session) = page_conn::session_of(payload) {
            if let Some(s) = self.sessions.get_mut(&(from, session)) {
                s.core.handle_input(now, page_conn::Input::Relayed(payload));
            }
        }
    }

    /// The next signal that came through the signaling core (sending what it asks), or an
    /// error for one it dropped; `None` when it has nothing more.
    fn poll_signaling(&mut self) -> Option<Result<signal::Signal, signal::Rejected>> {
        loop {
            match self.signaling.poll_output() {
                signal::Output::Transmit { to, data, .. } => {
                    let _ = self.relay.send(to, data.into());
                }
                signal::Output::Received(s) => return Some(Ok(s)),
                signal::Output::Rejected(r) => {
                    debug!("signal dropped: {r}");
                    return Some(Err(r));
                }
                signal::Output::Timeout(_) => return None,
            }
        }
    }

    fn send_signal(&mut self, to: NodeId, session: u64, kind: Kind, body: String) {
        self.signaling.handle_input(
            Instant::now(),
            signal::Input::Send {
                to,
                session: Some(session),
                kind,
                body,
                unix_ms: unix_ms(),
            },
        );
        while self.poll_signaling().is_some() {}
    }

    fn signalled(&mut self, now: Instant, s: signal::Signal) {
        let key = (s.from, s.session);
        match s.kind {
            Kind::Offer => {
                if let Some(existing) = self.sessions.get(&key) {
                    // Our answer was lost: the page offers again.
                    let answer = existing.answer.clone();
                    return self.send_signal(s.from, s.session, Kind::Answer, answer);
                }
                self.offered(now, s);
            }
            Kind::Candidate => {
                let Some(rtc) = self.sessions.get_mut(&key).and_then(|s| s.rtc.as_mut()) else {
                    return;
                };
                let candidate = serde_json::from_str::<serde_json::Value>(&s.body)
                    .ok()
                    .and_then(|v| v["candidate"].as_str().map(str::to_string));
                // mDNS names and other candidates str0m cannot read are skipped.
                if let Some(c) = candidate.and_then(|c| Candidate::from_sdp_string(&c).ok()) {
                    rtc.add_remote_candidate(c);
                }
            }
            Kind::Bye => {
                self.sessions.remove(&key);
            }
            Kind::Answer => self.answered(now, s),
        }
    }

    /// Starts dialling `peer`: keys, a WebRTC offer, the signed offer (sent again each
    /// second until the answer comes).
    fn dial(
        &mut self,
        now: Instant,
        peer: NodeId,
        reply: oneshot::Sender<Result<PageConnection, PageError>>,
    ) {
        let session: u64 = rand::random();
        let ours = Ephemeral::new(rand::random());
        let rtc = self.rtc_offer(now);
        let mut offer = serde_json::json!({ "dh": BASE64URL_NOPAD.encode(&ours.public()) });
        if let Some((_, _, sdp, _)) = &rtc {
            offer["sdp"] = sdp.clone().into();
        }
        let offer = offer.to_string();
        self.send_signal(peer, session, Kind::Offer, offer.clone());
        self.dials.insert(
            (peer, session),
            Dialling {
                ours,
                rtc: rtc.map(|(rtc, channels, _, pending)| (rtc, channels, pending)),
                offer,
                reply,
                started: now,
                next_offer: now + RESEND_OFFER,
            },
        );
    }

    /// The answer to one of our dials: the session starts, and the program gets it.
    fn answered(&mut self, now: Instant, s: signal::Signal) {
        let key = (s.from, s.session);
        let Some(dial) = self.dials.remove(&key) else {
            return; // one more answer to an offer sent again, or to none of ours
        };
        let body = serde_json::from_str::<serde_json::Value>(&s.body).ok();
        let theirs = body
            .as_ref()
            .and_then(|b| b["dh"].as_str())
            .and_then(|dh| BASE64URL_NOPAD.decode(dh.as_bytes()).ok())
            .and_then(|b| <[u8; 32]>::try_from(b).ok());
        let core = theirs.and_then(|theirs| {
            PageConn::new(
                &dial.ours,
                theirs,
                s.session,
                Role::Dialler,
                &self.me,
                &s.from,
            )
            .ok()
        });
        let Some(core) = core else {
            let _ = dial.reply.send(Err(PageError::BadAnswer));
            return;
        };
        let sdp = body
            .as_ref()
            .and_then(|b| b["sdp"].as_str())
            .and_then(|a| SdpAnswer::from_sdp_string(a).ok());
        let (rtc, channels) = match (dial.rtc, sdp) {
            (Some((mut rtc, channels, pending)), Some(answer)) => {
                match rtc.sdp_api().accept_answer(pending, answer) {
                    Ok(()) => (Some(rtc), Some(channels)),
                    Err(e) => {
                        debug!(peer = %s.from.short(), "WebRTC answer refused: {e}");
                        (None, None)
                    }
                }
            }
            // A peer without WebRTC: relayed only.
            _ => (None, None),
        };
        let (conn, session) = self.new_session(now, key, core, rtc, channels, String::new());
        self.sessions.insert(key, session);
        // A dialler that gave up drops the connection, which closes it.
        let _ = dial.reply.send(Ok(conn));
    }

    /// A page's offer: keys, a WebRTC answer if it offered WebRTC, the signed answer, and a
    /// connection for the program.
    fn offered(&mut self, now: Instant, s: signal::Signal) {
        let Ok(body) = serde_json::from_str::<serde_json::Value>(&s.body) else {
            return;
        };
        let Some(theirs) = body["dh"]
            .as_str()
            .and_then(|dh| BASE64URL_NOPAD.decode(dh.as_bytes()).ok())
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
        else {
            return;
        };
        if self.sessions.len() >= MAX_SESSIONS {
            return debug!(peer = %s.from.short(), "page offer ignored: too many sessions");
        }
        let ours = Ephemeral::new(rand::random());
        let Ok(core) = PageConn::new(&ours, theirs, s.session, Role::Listener, &s.from, &self.me)
        else {
            return;
        };
        let (rtc, channels, sdp) = match body["sdp"].as_str() {
            Some(offer) => match self.rtc_answer(now, offer) {
                Some((rtc, channels, sdp)) => (Some(rtc), Some(channels), Some(sdp)),
                None => (None, None, None),
            },
            None => (None, None, None),
        };
        let mut answer = serde_json::json!({ "dh": BASE64URL_NOPAD.encode(&ours.public()) });
        if let Some(sdp) = sdp {
            answer["sdp"] = sdp.into();
        }
        let answer = answer.to_string();

        let mine: Vec<Key> = self
            .sessions
            .keys()
            .filter(|k| k.0 == s.from)
            .copied()
            .collect();
        if mine.len() >= MAX_SESSIONS_PER_PEER {
            if let Some(oldest) = mine.iter().min_by_key(|k| self.sessions[*k].started) {
                self.sessions.remove(oldest);
            }
        }
        let key = (s.from, s.session);
        let (conn, session) = self.new_session(now, key, core, rtc, channels, answer.clone());
        if self.accept.try_send(conn).is_err() {
            return debug!(peer = %s.from.short(), "page connection refused: nobody accepts");
        }
        self.sessions.insert(key, session);
        self.send_signal(s.from, s.session, Kind::Answer, answer);
    }

    /// A session's state and the program's handle on it.
    fn new_session(
        &self,
        now: Instant,
        (peer, session): Key,
        core: PageConn,
        rtc: Option<Rtc>,
        channels: Option<(ChannelId, ChannelId)>,
        answer: String,
    ) -> (PageConnection, Session) {
        let (to_program, messages) = mpsc::unbounded_channel();
        let (path_tx, path_rx) = watch::channel(Path::Relay);
        let budget = Arc::new(Semaphore::new(SEND_BUDGET));
        let conn = PageConnection {
            peer,
            session,
            messages,
            commands: self.commands_tx.clone(),
            budget: budget.clone(),
            path: path_rx,
        };
        let state = Session {
            core,
            rtc,
            channels,
            ice_up: false,
            channel_open: false,
            backlog: VecDeque::new(),
            answer,
            to_program,
            path: path_tx,
            budget,
            given: 0,
            returned: 0,
            started: now,
            timed_out: false,
        };
        (conn, state)
    }

    /// str0m's answer to a page's WebRTC offer, with our candidates and burrow.js's two
    /// negotiated data channels.
    fn rtc_answer(
        &self,
        now: Instant,
        offer: &str,
    ) -> Option<(Rtc, (ChannelId, ChannelId), String)> {
        let offer = SdpOffer::from_sdp_string(offer).ok()?;
        let mut rtc = self.rtc(now)?;
        let answer = rtc.sdp_api().accept_offer(offer).ok()?;
        let mut api = rtc.direct_api();
        let reliable = api.create_data_channel(channel_config(RELIABLE_CHANNEL));
        let unreliable = api.create_data_channel(channel_config(UNRELIABLE_CHANNEL));
        Some((rtc, (reliable, unreliable), answer.to_sdp_string()))
    }

    /// str0m's offer for a dial, with the same channels.
    #[allow(clippy::type_complexity)]
    fn rtc_offer(
        &self,
        now: Instant,
    ) -> Option<(Rtc, (ChannelId, ChannelId), String, SdpPendingOffer)> {
        let mut rtc = self.rtc(now)?;
        let mut api = rtc.sdp_api();
        let reliable = api.add_channel_with_config(channel_config(RELIABLE_CHANNEL));
        let unreliable = api.add_channel_with_config(channel_config(UNRELIABLE_CHANNEL));
        let (offer, pending) = api.apply()?;
        Some((rtc, (reliable, unreliable), offer.to_sdp_string(), pending))
    }

    /// A new str0m session with our certificate and candidates.
    fn rtc(&self, now: Instant) -> Option<Rtc> {
        let mut rtc = RtcConfig::new()
            .set_crypto_provider(Arc::new(str0m_rust_crypto::default_provider()))
            .set_dtls_cert(self.cert.clone())
            .build(now);
        let local = self.socket.v4.local_addr().ok()?;
        let candidates = self.candidates.borrow().clone();
        let host_ips: Vec<SocketAddr> = crate::endpoint::driver::local_candidates(&self.socket)
            .into_iter()
            .filter(SocketAddr::is_ipv4)
            .collect();
        for addr in &host_ips {
            if let Ok(c) = Candidate::host(*addr, "udp") {
                rtc.add_local_candidate(c);
            }
        }
        // What the endpoint learned by STUN: our NAT's address for the socket.
        let base = host_ips.first().copied().unwrap_or(local);
        for addr in candidates
            .iter()
            .filter(|a| a.is_ipv4() && !host_ips.contains(a))
        {
            if let Ok(c) = Candidate::server_reflexive(*addr, base, "udp") {
                rtc.add_local_candidate(c);
            }
        }
        Some(rtc)
    }

    fn udp(&mut self, d: Datagram) {
        let Ok(local) = self.socket.v4.local_addr() else {
            return;
        };
        let destination = SocketAddr::new(d.to_ip.unwrap_or(local.ip()), local.port());
        let Ok(receive) = Receive::new(Protocol::Udp, d.from, destination, &d.packet) else {
            return;
        };
        let input = str0m::Input::Receive(Instant::now(), receive);
        for s in self.sessions.values_mut() {
            if let Some(rtc) = s.rtc.as_mut().filter(|rtc| rtc.accepts(&input)) {
                let _ = rtc.handle_input(input);
                return;
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Send {
                key,
                data,
                reliable,
            } => {
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.given += usize::from(reliable);
                    s.core.handle_input(
                        now,
                        page_conn::Input::Send {
                            data: &data,
                            reliable,
                        },
                    );
                }
            }
            Command::Dial { peer, reply } => self.dial(now, peer, reply),
            Command::Close { key } => {
                if self.sessions.remove(&key).is_some() {
                    self.send_signal(key.0, key.1, Kind::Bye, String::new());
                }
            }
        }
    }

    /// Does what every session's cores ask; returns when to wake next.
    fn drain(&mut self, now: Instant) -> Instant {
        let mut wake = now + std::time::Duration::from_secs(3600);
        let mut ended = Vec::new();
        for (key, s) in self.sessions.iter_mut() {
            if let Some(at) = drain_session(key, s, &self.relay, &self.socket, now) {
                wake = wake.min(at);
            }
            if s.to_program.is_closed() || s.timed_out {
                ended.push(*key);
            }
        }
        for key in ended {
            self.sessions.remove(&key);
            self.send_signal(key.0, key.1, Kind::Bye, String::new());
        }
        if let signal::Output::Timeout(Some(at)) = self.signaling.poll_output() {
            wake = wake.min(at);
        }
        // Dials: the offer again, or the end.
        let due: Vec<Key> = self
            .dials
            .iter()
            .filter(|(_, d)| now >= d.next_offer)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            let d = self.dials.get_mut(&key).expect("listed");
            if now >= d.started + DIAL_TIMEOUT || d.reply.is_closed() {
                let d = self.dials.remove(&key).expect("listed");
                let _ = d.reply.send(Err(PageError::NoAnswer));
                continue;
            }
            d.next_offer = now + RESEND_OFFER;
            let offer = d.offer.clone();
            self.send_signal(key.0, key.1, Kind::Offer, offer);
        }
        for d in self.dials.values() {
            wake = wake.min(d.next_offer);
        }
        wake
    }
}

/// Runs one session's cores to their timeouts: the connection's datagrams to the relay, its
/// direct messages to the data channels, str0m's packets to the socket, messages to the
/// program, and the path as it changes. Returns the earliest deadline.
fn drain_session(
    key: &Key,
    s: &mut Session,
    relay: &RelayClient,
    socket: &MagicSocket,
    now: Instant,
) -> Option<Instant> {
    let mut wake: Option<Instant> = None;
    let earliest =
        |wake: &mut Option<Instant>, t: Instant| *wake = Some(wake.map_or(t, |w| w.min(t)));
    loop {
        // str0m first: its events feed the connection core.
        if let Some(rtc) = &mut s.rtc {
            loop {
                match rtc.poll_output() {
                    Ok(str0m::Output::Timeout(t)) => {
                        earliest(&mut wake, t);
                        break;
                    }
                    Ok(str0m::Output::Transmit(t)) => {
                        if let Some(udp) = socket.udp_for(&t.destination) {
                            let _ = udp.send_control(t.destination, &t.contents, None);
                        }
                    }
                    Ok(str0m::Output::Event(e)) => match e {
                        Event::IceConnectionStateChange(state) => {
                            s.ice_up = matches!(
                                state,
                                IceConnectionState::Connected | IceConnectionState::Completed
                            );
                        }
                        Event::ChannelOpen(id, _) if Some(id) == s.channels.map(|c| c.0) => {
                            s.channel_open = true;
                        }
                        Event::ChannelClose(id) if Some(id) == s.channels.map(|c| c.0) => {
                            s.channel_open = false;
                        }
                        Event::ChannelData(d) => {
                            s.core.handle_input(now, page_conn::Input::Direct(&d.data));
                        }
                        _ => {}
                    },
                    Err(e) => {
                        debug!(peer = %key.0.short(), "WebRTC session failed: {e}");
                        s.rtc = None;
                        s.ice_up = false;
                        s.channel_open = false;
                        break;
                    }
                }
            }
        }
        let up = s.ice_up && s.channel_open;
        if (s.core.path() == Path::Direct) != up {
            s.core.handle_input(now, page_conn::Input::DirectUp(up));
        }
        // Whatever the data channels had no room for, first.
        while let Some((data, reliable)) = s.backlog.pop_front() {
            if !write_channel(s, &data, reliable) {
                s.backlog.push_front((data, reliable));
                break;
            }
        }
        let mut more = false;
        loop {
            match s.core.poll_output() {
                page_conn::Output::Relay(d) => {
                    let _ = relay.send(key.0, d.into());
                }
                page_conn::Output::Direct { data, reliable } => {
                    if !s.backlog.is_empty() || !write_channel(s, &data, reliable) {
                        s.backlog.push_back((data, reliable));
                    }
                    more = true;
                }
                page_conn::Output::Message { data, reliable } => {
                    let _ = s.to_program.send(PageMessage {
                        data: data.into(),
                        reliable,
                    });
                }
                page_conn::Output::TimedOut => {
                    debug!(peer = %key.0.short(), "page connection: the page went silent");
                    s.timed_out = true;
                }
                page_conn::Output::PathChanged(path) => {
                    debug!(peer = %key.0.short(), ?path, "page connection path");
                    s.path.send_replace(path);
                }
                page_conn::Output::Timeout(t) => {
                    if let Some(t) = t {
                        earliest(&mut wake, t);
                    }
                    break;
                }
            }
        }
        // Acknowledged messages give the program's budget back.
        let acked = s.given.saturating_sub(s.core.pending());
        if acked > s.returned {
            s.budget.add_permits(acked - s.returned);
            s.returned = acked;
        }
        // Direct messages were written to str0m: let it send them before sleeping.
        if !more {
            return wake;
        }
    }
}

/// One of burrow.js's two negotiated data channels.
fn channel_config(id: u16) -> ChannelConfig {
    if id == RELIABLE_CHANNEL {
        ChannelConfig {
            label: "burrow".into(),
            negotiated: Some(id),
            ..ChannelConfig::default()
        }
    } else {
        ChannelConfig {
            label: "burrow-unreliable".into(),
            ordered: false,
            reliability: Reliability::MaxRetransmits { retransmits: 0 },
            negotiated: Some(id),
            ..ChannelConfig::default()
        }
    }
}

/// Writes one direct message; false if the channel has no room for it now.
fn write_channel(s: &mut Session, data: &[u8], reliable: bool) -> bool {
    let (Some(rtc), Some((rel, unrel))) = (s.rtc.as_mut(), s.channels) else {
        // No WebRTC any more: the core learns it is down and resends through the relay.
        return true;
    };
    let id = if reliable { rel } else { unrel };
    match rtc.channel(id).map(|mut c| c.write(true, data)) {
        Some(Ok(accepted)) => accepted || !reliable,
        _ => true,
    }
}
