//! The connection protocol of burrow.js (a page's `Connection`), for native nodes that answer
//! or dial pages.
//!
//! A session is set up by a signed offer and answer ([`crate::signal`]) whose bodies carry each
//! side's ephemeral X25519 key (`{"dh": base64url}`, and a WebRTC `"sdp"` where the sides speak
//! it). Both derive one AES-256-GCM key per direction with HKDF-SHA256 (salt: the session id,
//! big-endian; info: `"burrow page connection v1"`, the dialler's and the listener's key bytes,
//! and `"to listener"` or `"to dialler"`).
//!
//! Messages, on either path:
//!
//! ```text
//! plain    = type (1: data, 2: ack, 3: unreliable) || u64 (data: its number; ack: how many
//!            came in order) || bytes
//! relayed  = MAGIC || session u64 || counter u64 || AES-256-GCM(plain), with the counter as
//!            the nonce (4 zero bytes first) and the 20 bytes before it as associated data
//! direct   = plain, on a WebRTC data channel (DTLS to the fingerprint the peer signed)
//! ```
//!
//! Data messages are numbered, acknowledged and sent again until acknowledged, at most
//! [`WINDOW`] in flight; the receiver puts both paths' messages back in order. Once the direct
//! path is up the unacknowledged ones go again on it; when it goes down, the ones that went on
//! it go again through the relay. What went on the data channel (reliable itself) is not sent
//! again while it lives.
//!
//! [`PageConn`] follows the crate's calling convention; it needs no randomness once its
//! [`Ephemeral`] key is made (from seed bytes).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use curve25519_dalek::MontgomeryPoint;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::hkdf;

use crate::identity::NodeId;

/// Starts every relayed datagram of a connection (disco's is 0x20 "BWD", a signal's "BWS").
pub const MAGIC: [u8; 4] = [0x20, b'B', b'W', b'C'];
/// The longest message a connection carries, bytes (a relay datagram is at most 64 KiB).
pub const MAX_MESSAGE: usize = 60 * 1024;
/// Data messages in flight, unacknowledged, per connection.
pub const WINDOW: usize = 64;
/// The first wait before a relayed message goes again; doubled each time, up to
/// [`RESEND_MAX`].
pub const RESEND_FIRST: Duration = Duration::from_millis(300);
/// The longest wait between two sends of one message.
pub const RESEND_MAX: Duration = Duration::from_secs(3);
/// Counters of relayed datagrams behind the newest that may still come (out of order).
pub const REPLAY_WINDOW: u64 = 64;
/// A side that has sent nothing for this long sends an acknowledgement, so that its peer
/// knows it is there.
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// A connection that has heard nothing from its peer for this long ends
/// ([`Output::TimedOut`]): a closed tab sends no bye.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

const INFO: &[u8] = b"burrow page connection v1";
const HEAD: usize = 20;
const TAG: usize = 16;
const T_DATA: u8 = 1;
const T_ACK: u8 = 2;
const T_UNRELIABLE: u8 = 3;

/// Whether `datagram` starts like a connection's relayed datagram.
pub fn looks_like_page_conn(datagram: &[u8]) -> bool {
    datagram.len() >= HEAD + TAG && datagram[..4] == MAGIC
}

/// The session a relayed datagram says it belongs to (not yet authenticated).
pub fn session_of(datagram: &[u8]) -> Option<u64> {
    looks_like_page_conn(datagram).then(|| u64_at(datagram, 4))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

/// One side's ephemeral X25519 key for a session's offer or answer.
pub struct Ephemeral {
    secret: [u8; 32],
    public: [u8; 32],
}

impl Ephemeral {
    /// A key from 32 random bytes.
    pub fn new(seed: [u8; 32]) -> Ephemeral {
        let public = MontgomeryPoint::mul_base_clamped(seed).to_bytes();
        Ephemeral {
            secret: seed,
            public,
        }
    }

    /// The public key, as the offer or answer carries it.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }
}

impl std::fmt::Debug for Ephemeral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ephemeral")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// Which side of the session this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Sent the offer.
    Dialler,
    /// Answered it.
    Listener,
}

/// Why a session's keys could not be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PageConnError {
    /// The peer's ephemeral key is of low order: the agreement would be all zeros.
    #[error("the peer's ephemeral key is of low order")]
    LowOrderKey,
}

/// The path a connection's messages take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Through the relay, encrypted end to end.
    Relay,
    /// A WebRTC data channel.
    Direct,
}

/// What happens to a [`PageConn`].
#[derive(Debug)]
pub enum Input<'a> {
    /// A relayed datagram of this session ([`session_of`]) came.
    Relayed(&'a [u8]),
    /// A message came on one of the data channels.
    Direct(&'a [u8]),
    /// The application sends `data` (at most [`MAX_MESSAGE`] bytes; more is refused and
    /// counted). Reliable data waits beyond the window; see [`PageConn::pending`].
    Send {
        /// The message.
        data: &'a [u8],
        /// Delivered once and in order (true), or at most once in any order.
        reliable: bool,
    },
    /// The direct path is up (its reliable channel open and ICE connected) or not.
    DirectUp(bool),
    /// Time passed.
    Timeout,
}

/// What the core wants done.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// Send this datagram to the peer through the relay.
    Relay(Vec<u8>),
    /// Send this message on the reliable data channel (`reliable`) or the unreliable one.
    Direct {
        /// The message, as is.
        data: Vec<u8>,
        /// Which channel.
        reliable: bool,
    },
    /// A message for the application.
    Message {
        /// Its bytes.
        data: Vec<u8>,
        /// Whether it came as reliable data.
        reliable: bool,
    },
    /// The path changed.
    PathChanged(Path),
    /// Nothing came from the peer for [`IDLE_TIMEOUT`]: the connection is over.
    TimedOut,
    /// Nothing more to do until then (`None`: until the next input).
    Timeout(Option<Instant>),
}

/// Counts of a connection's messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageConnStats {
    /// Reliable messages sent (each once, however often it went).
    pub sent: u64,
    /// Reliable messages delivered in order.
    pub received: u64,
    /// Sends of a message again.
    pub resent: u64,
    /// Bytes of the reliable messages sent.
    pub bytes_sent: u64,
    /// Bytes of the reliable messages delivered.
    pub bytes_received: u64,
    /// Reliable messages sent on the direct path.
    pub sent_direct: u64,
    /// Reliable messages that came on the direct path.
    pub received_direct: u64,
    /// Relayed datagrams that did not decrypt, replays, and malformed messages.
    pub rejected: u64,
    /// Messages the application gave that were too long.
    pub refused: u64,
}

#[derive(Debug)]
struct Unacked {
    data: Vec<u8>,
    sent_at: Instant,
    wait: Duration,
    direct: bool,
}

/// One burrow.js connection's state: keys, numbering, acknowledgements, resends, path.
pub struct PageConn {
    session: u64,
    send_key: LessSafeKey,
    recv_key: LessSafeKey,
    send_counter: u64,
    /// The newest relayed counter that came, and a bit per counter before it.
    newest_counter: Option<u64>,
    seen_counters: u64,
    path: Path,
    next_seq: u64,
    unacked: BTreeMap<u64, Unacked>,
    queued: VecDeque<Vec<u8>>,
    delivered: u64,
    early: BTreeMap<u64, Vec<u8>>,
    out: VecDeque<Output>,
    stats: PageConnStats,
    /// When we last sent anything, and last heard anything that authenticated (from the
    /// first input on).
    last_sent: Option<Instant>,
    last_heard: Option<Instant>,
    timed_out: bool,
}

impl std::fmt::Debug for PageConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageConn")
            .field("session", &self.session)
            .field("path", &self.path)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl PageConn {
    /// The session's state from our ephemeral key and theirs, and the two sides' keys.
    pub fn new(
        ours: &Ephemeral,
        theirs: [u8; 32],
        session: u64,
        role: Role,
        dialler: &NodeId,
        listener: &NodeId,
    ) -> Result<PageConn, PageConnError> {
        let shared = MontgomeryPoint(theirs).mul_clamped(ours.secret);
        if shared.to_bytes() == [0; 32] {
            return Err(PageConnError::LowOrderKey);
        }
        let prk =
            hkdf::Salt::new(hkdf::HKDF_SHA256, &session.to_be_bytes()).extract(shared.as_bytes());
        let direction = |label: &[u8]| {
            let info = [INFO, dialler.as_bytes(), listener.as_bytes(), label];
            let key: UnboundKey = prk
                .expand(&info, &AES_256_GCM)
                .expect("a 32-byte key is within HKDF-SHA256's output limit")
                .into();
            LessSafeKey::new(key)
        };
        let (to_listener, to_dialler) = (direction(b"to listener"), direction(b"to dialler"));
        let (send_key, recv_key) = match role {
            Role::Dialler => (to_listener, to_dialler),
            Role::Listener => (to_dialler, to_listener),
        };
        Ok(PageConn {
            session,
            send_key,
            recv_key,
            send_counter: 0,
            newest_counter: None,
            seen_counters: 0,
            path: Path::Relay,
            next_seq: 0,
            unacked: BTreeMap::new(),
            queued: VecDeque::new(),
            delivered: 0,
            early: BTreeMap::new(),
            out: VecDeque::new(),
            stats: PageConnStats::default(),
            last_sent: None,
            last_heard: None,
            timed_out: false,
        })
    }

    /// The session's id.
    pub fn session(&self) -> u64 {
        self.session
    }

    /// The path messages take now.
    pub fn path(&self) -> Path {
        self.path
    }

    /// Reliable messages given and not yet acknowledged (in flight or waiting for the window).
    pub fn pending(&self) -> usize {
        self.unacked.len() + self.queued.len()
    }

    /// The counts so far.
    pub fn stats(&self) -> PageConnStats {
        self.stats
    }

    /// Feeds the core (see the crate's calling convention).
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.last_sent.get_or_insert(now);
        self.last_heard.get_or_insert(now);
        match input {
            Input::Relayed(datagram) => {
                if let Some(plain) = self.open(datagram) {
                    self.last_heard = Some(now);
                    self.accept(now, &plain, false);
                }
            }
            Input::Direct(message) => {
                self.last_heard = Some(now);
                self.accept(now, message, true);
            }
            Input::Send { data, reliable } => {
                if data.len() > MAX_MESSAGE {
                    self.stats.refused += 1;
                } else if reliable {
                    self.queued.push_back(data.to_vec());
                    self.flush(now);
                } else {
                    self.transmit(T_UNRELIABLE, 0, data);
                }
            }
            Input::DirectUp(up) => self.path_to(now, if up { Path::Direct } else { Path::Relay }),
            Input::Timeout => self.resend(now),
        }
        if self.last_sent.is_some_and(|t| now >= t + KEEPALIVE) {
            self.transmit(T_ACK, self.delivered, &[]);
        }
        if !self.timed_out && self.last_heard.is_some_and(|t| now >= t + IDLE_TIMEOUT) {
            self.timed_out = true;
            self.out.push_back(Output::TimedOut);
        }
        if !self.out.is_empty() {
            self.last_sent = Some(now);
        }
    }

    /// What to do next (see the crate's calling convention).
    pub fn poll_output(&mut self) -> Output {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        let resend = self
            .unacked
            .values()
            .filter(|m| !(m.direct && self.path == Path::Direct))
            .map(|m| m.sent_at + m.wait)
            .min();
        let keepalive = self.last_sent.map(|t| t + KEEPALIVE);
        let idle = self
            .last_heard
            .filter(|_| !self.timed_out)
            .map(|t| t + IDLE_TIMEOUT);
        Output::Timeout([resend, keepalive, idle].into_iter().flatten().min())
    }

    fn path_to(&mut self, now: Instant, path: Path) {
        if path == self.path {
            return;
        }
        self.path = path;
        self.out.push_back(Output::PathChanged(path));
        let seqs: Vec<u64> = self.unacked.keys().copied().collect();
        for seq in seqs {
            let m = self.unacked.get_mut(&seq).expect("listed");
            match path {
                Path::Direct => {
                    let data = std::mem::take(&mut m.data);
                    self.stats.resent += 1;
                    self.transmit(T_DATA, seq, &data);
                    if let Some(m) = self.unacked.get_mut(&seq) {
                        m.data = data;
                    }
                }
                Path::Relay if m.direct => {
                    m.direct = false;
                    m.wait = RESEND_FIRST;
                    m.sent_at = now - RESEND_FIRST;
                }
                Path::Relay => {}
            }
        }
        if path == Path::Relay {
            self.resend(now);
        }
    }

    fn flush(&mut self, now: Instant) {
        while self.unacked.len() < WINDOW {
            let Some(data) = self.queued.pop_front() else {
                break;
            };
            let seq = self.next_seq;
            self.next_seq += 1;
            self.stats.sent += 1;
            self.stats.bytes_sent += data.len() as u64;
            self.transmit(T_DATA, seq, &data);
            let direct = self.path == Path::Direct;
            self.unacked.insert(
                seq,
                Unacked {
                    data,
                    sent_at: now,
                    wait: RESEND_FIRST,
                    direct,
                },
            );
        }
    }

    fn resend(&mut self, now: Instant) {
        let mut again = Vec::new();
        for (&seq, m) in self.unacked.iter_mut() {
            // The data channel is reliable itself: what went on it goes again only if it dies.
            if (m.direct && self.path == Path::Direct) || now < m.sent_at + m.wait {
                continue;
            }
            m.sent_at = now;
            m.wait = (m.wait * 2).min(RESEND_MAX);
            again.push(seq);
        }
        for seq in again {
            self.stats.resent += 1;
            let data = std::mem::take(&mut self.unacked.get_mut(&seq).expect("listed").data);
            self.transmit(T_DATA, seq, &data);
            if let Some(m) = self.unacked.get_mut(&seq) {
                m.data = data;
            }
        }
    }

    /// One message on the path in use.
    fn transmit(&mut self, kind: u8, seq: u64, bytes: &[u8]) {
        let mut plain = Vec::with_capacity(9 + bytes.len() + HEAD + TAG);
        plain.push(kind);
        plain.extend_from_slice(&seq.to_be_bytes());
        plain.extend_from_slice(bytes);
        if self.path == Path::Direct {
            if kind == T_DATA {
                self.stats.sent_direct += 1;
                if let Some(m) = self.unacked.get_mut(&seq) {
                    m.direct = true;
                }
            }
            self.out.push_back(Output::Direct {
                data: plain,
                reliable: kind != T_UNRELIABLE,
            });
            return;
        }
        let counter = self.send_counter;
        self.send_counter += 1;
        let mut head = [0u8; HEAD];
        head[..4].copy_from_slice(&MAGIC);
        head[4..12].copy_from_slice(&self.session.to_be_bytes());
        head[12..20].copy_from_slice(&counter.to_be_bytes());
        self.send_key
            .seal_in_place_append_tag(nonce(counter), Aad::from(head), &mut plain)
            .expect("a message is far below AES-GCM's limit");
        let mut datagram = Vec::with_capacity(HEAD + plain.len());
        datagram.extend_from_slice(&head);
        datagram.extend_from_slice(&plain);
        self.out.push_back(Output::Relay(datagram));
    }

    /// Decrypts a relayed datagram of this session, once per counter.
    fn open(&mut self, datagram: &[u8]) -> Option<Vec<u8>> {
        if session_of(datagram) != Some(self.session) {
            self.stats.rejected += 1;
            return None;
        }
        let counter = u64_at(datagram, 12);
        let mut head = [0u8; HEAD];
        head.copy_from_slice(&datagram[..HEAD]);
        if !self.counter_is_new(counter) {
            self.stats.rejected += 1;
            return None;
        }
        let mut sealed = datagram[HEAD..].to_vec();
        let Ok(plain) = self
            .recv_key
            .open_in_place(nonce(counter), Aad::from(head), &mut sealed)
        else {
            self.stats.rejected += 1;
            return None;
        };
        let len = plain.len();
        sealed.truncate(len);
        self.mark_counter(counter);
        Some(sealed)
    }

    fn counter_is_new(&self, counter: u64) -> bool {
        match self.newest_counter {
            None => true,
            Some(newest) if counter > newest => true,
            Some(newest) => {
                let back = newest - counter;
                back < REPLAY_WINDOW && self.seen_counters & (1 << back) == 0
            }
        }
    }

    fn mark_counter(&mut self, counter: u64) {
        match self.newest_counter {
            Some(newest) if counter <= newest => self.seen_counters |= 1 << (newest - counter),
            Some(newest) => {
                let shift = counter - newest;
                self.seen_counters = if shift >= REPLAY_WINDOW {
                    0
                } else {
                    self.seen_counters << shift
                } | 1;
                self.newest_counter = Some(counter);
            }
            None => {
                self.seen_counters = 1;
                self.newest_counter = Some(counter);
            }
        }
    }

    /// One message of either path: data is put in order and acknowledged.
    fn accept(&mut self, now: Instant, plain: &[u8], direct: bool) {
        if plain.len() < 9 {
            self.stats.rejected += 1;
            return;
        }
        let seq = u64_at(plain, 1);
        let body = &plain[9..];
        match plain[0] {
            T_ACK => {
                self.unacked.retain(|&s, _| s >= seq);
                self.flush(now);
            }
            T_UNRELIABLE => self.out.push_back(Output::Message {
                data: body.to_vec(),
                reliable: false,
            }),
            T_DATA => {
                let in_window = seq >= self.delivered && seq < self.delivered + WINDOW as u64;
                if in_window && !self.early.contains_key(&seq) {
                    self.early.insert(seq, body.to_vec());
                    if direct {
                        self.stats.received_direct += 1;
                    }
                }
                while let Some(data) = self.early.remove(&self.delivered) {
                    self.delivered += 1;
                    self.stats.received += 1;
                    self.stats.bytes_received += data.len() as u64;
                    self.out.push_back(Output::Message {
                        data,
                        reliable: true,
                    });
                }
                self.transmit(T_ACK, self.delivered, &[]);
            }
            _ => self.stats.rejected += 1,
        }
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> NodeId {
        crate::identity::SecretKey::from_bytes([b; 32]).node_id()
    }

    fn pair() -> (PageConn, PageConn) {
        let (a, b) = (Ephemeral::new([1; 32]), Ephemeral::new([2; 32]));
        let (d, l) = (id(1), id(2));
        let dialler = PageConn::new(&a, b.public(), 7, Role::Dialler, &d, &l).unwrap();
        let listener = PageConn::new(&b, a.public(), 7, Role::Listener, &d, &l).unwrap();
        (dialler, listener)
    }

    type Drained = (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<Vec<u8>>);

    /// Drains `from`'s output; returns (relayed datagrams, direct messages, app messages).
    fn drain(from: &mut PageConn) -> Drained {
        let (mut relayed, mut direct, mut app) = (vec![], vec![], vec![]);
        loop {
            match from.poll_output() {
                Output::Relay(d) => relayed.push(d),
                Output::Direct { data, .. } => direct.push(data),
                Output::Message { data, .. } => app.push(data),
                Output::PathChanged(_) | Output::TimedOut => {}
                Output::Timeout(_) => return (relayed, direct, app),
            }
        }
    }

    #[test]
    fn messages_cross_the_relay_in_order_and_are_acknowledged() {
        let (mut d, mut l) = pair();
        let now = Instant::now();
        for i in 0..3u8 {
            d.handle_input(
                now,
                Input::Send {
                    data: &[i; 10],
                    reliable: true,
                },
            );
        }
        let (relayed, _, _) = drain(&mut d);
        assert_eq!(relayed.len(), 3);
        // Out of order, one twice: delivered once each, in order.
        for dg in [&relayed[2], &relayed[0], &relayed[0], &relayed[1]] {
            l.handle_input(now, Input::Relayed(dg));
        }
        let (acks, _, app) = drain(&mut l);
        assert_eq!(app, vec![vec![0; 10], vec![1; 10], vec![2; 10]]);
        assert_eq!(l.stats().rejected, 1, "the replayed datagram");
        for a in &acks {
            d.handle_input(now, Input::Relayed(a));
        }
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn a_lost_datagram_is_sent_again_and_a_forged_one_rejected() {
        let (mut d, mut l) = pair();
        let t0 = Instant::now();
        d.handle_input(
            t0,
            Input::Send {
                data: b"hello",
                reliable: true,
            },
        );
        let (lost, _, _) = drain(&mut d);
        assert_eq!(d.poll_output(), Output::Timeout(Some(t0 + RESEND_FIRST)));
        let mut forged = lost[0].clone();
        forged[25] ^= 1;
        l.handle_input(t0, Input::Relayed(&forged));
        assert_eq!(l.stats().rejected, 1);
        d.handle_input(t0 + RESEND_FIRST, Input::Timeout);
        let (again, _, _) = drain(&mut d);
        assert_eq!(again.len(), 1);
        l.handle_input(t0, Input::Relayed(&again[0]));
        let (_, _, app) = drain(&mut l);
        assert_eq!(app, vec![b"hello".to_vec()]);
    }

    #[test]
    fn the_window_holds_messages_back_and_the_direct_path_takes_the_unacknowledged() {
        let (mut d, mut l) = pair();
        let now = Instant::now();
        for i in 0..(WINDOW + 5) {
            d.handle_input(
                now,
                Input::Send {
                    data: &(i as u32).to_be_bytes(),
                    reliable: true,
                },
            );
        }
        let (relayed, _, _) = drain(&mut d);
        assert_eq!(relayed.len(), WINDOW);
        assert_eq!(d.pending(), WINDOW + 5);
        // The direct path comes up before any of them arrived: all in flight go again on it.
        d.handle_input(now, Input::DirectUp(true));
        let (_, direct, _) = drain(&mut d);
        assert_eq!(direct.len(), WINDOW);
        l.handle_input(now, Input::DirectUp(true));
        for m in &direct {
            l.handle_input(now, Input::Direct(m));
        }
        let (_, acks, app) = drain(&mut l);
        assert_eq!(app.len(), WINDOW);
        for a in &acks {
            d.handle_input(now, Input::Direct(a));
        }
        // The acknowledgements opened the window: the other five go directly.
        let (relayed, direct, _) = drain(&mut d);
        assert!(relayed.is_empty());
        assert_eq!(direct.len(), 5);
        // Nothing is resent while the data channel lives: the next deadline is the keepalive.
        assert_eq!(d.poll_output(), Output::Timeout(Some(now + KEEPALIVE)));
        // It dies: the five go again through the relay at once.
        d.handle_input(now, Input::DirectUp(false));
        let (relayed, _, _) = drain(&mut d);
        assert_eq!(relayed.len(), 5);
        for dg in &relayed {
            l.handle_input(now, Input::Relayed(dg));
        }
        let (_, _, app) = drain(&mut l);
        assert_eq!(app.len(), 5);
        assert_eq!(l.stats().received, (WINDOW + 5) as u64);
    }

    #[test]
    fn unreliable_and_oversized_messages() {
        let (mut d, mut l) = pair();
        let now = Instant::now();
        d.handle_input(
            now,
            Input::Send {
                data: b"x",
                reliable: false,
            },
        );
        d.handle_input(
            now,
            Input::Send {
                data: &vec![0; MAX_MESSAGE + 1],
                reliable: true,
            },
        );
        let (relayed, _, _) = drain(&mut d);
        assert_eq!(relayed.len(), 1);
        assert_eq!(d.stats().refused, 1);
        assert_eq!(
            d.poll_output(),
            Output::Timeout(Some(now + KEEPALIVE)),
            "nothing to resend"
        );
        l.handle_input(now, Input::Relayed(&relayed[0]));
        assert_eq!(
            l.poll_output(),
            Output::Message {
                data: b"x".to_vec(),
                reliable: false
            }
        );
    }

    #[test]
    fn an_idle_side_keeps_alive_and_a_silent_peer_times_out() {
        let (mut d, mut l) = pair();
        let t0 = Instant::now();
        d.handle_input(t0, Input::Timeout);
        l.handle_input(t0, Input::Timeout);
        drain(&mut d);
        // d keeps talking (a keepalive each 15 s); l hears it and does not time out.
        let mut t = t0;
        for _ in 0..3 {
            t += KEEPALIVE;
            d.handle_input(t, Input::Timeout);
            let (relayed, _, _) = drain(&mut d);
            assert_eq!(relayed.len(), 1, "one keepalive");
            l.handle_input(t, Input::Relayed(&relayed[0]));
            assert!(!std::iter::from_fn(|| match l.poll_output() {
                Output::Timeout(_) => None,
                o => Some(o),
            })
            .any(|o| o == Output::TimedOut));
        }
        // d never heard l (whose keepalives were dropped): it times out, once.
        let mut outs = Vec::new();
        d.handle_input(t0 + IDLE_TIMEOUT, Input::Timeout);
        d.handle_input(t0 + IDLE_TIMEOUT * 2, Input::Timeout);
        loop {
            match d.poll_output() {
                Output::Timeout(_) => break,
                o => outs.push(o),
            }
        }
        assert_eq!(outs.iter().filter(|o| **o == Output::TimedOut).count(), 1);
    }

    #[test]
    fn a_low_order_key_is_refused_and_garbage_never_panics() {
        let ours = Ephemeral::new([3; 32]);
        assert_eq!(
            PageConn::new(&ours, [0; 32], 1, Role::Dialler, &id(1), &id(2)).unwrap_err(),
            PageConnError::LowOrderKey
        );
        let (mut d, _) = pair();
        let now = Instant::now();
        let mut rng = crate::Rng::new(5);
        for len in 0..200 {
            let mut junk: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            d.handle_input(now, Input::Direct(&junk));
            if junk.len() >= HEAD + TAG {
                junk[..4].copy_from_slice(&MAGIC);
                junk[4..12].copy_from_slice(&7u64.to_be_bytes());
            }
            d.handle_input(now, Input::Relayed(&junk));
        }
        drain(&mut d);
    }
}
