//! Signed WebRTC signaling between two keys: offers, answers, ICE candidates and byes, each
//! signed by its sender, for browsers and native nodes to set up a WebRTC connection through
//! a relay that only forwards them.
//!
//! A signal travels as one ordinary relay datagram. The relay proves who sent a datagram, but
//! it could forge one; the signature is what makes the DTLS fingerprint in an SDP the
//! sender's own, end to end, so a relay cannot stand in the middle of the WebRTC connection.
//!
//! ```text
//! magic (4) | kind (1) | from (32) | to (32) | session (8) | seq (8) | unix_ms (8)
//!   | body length (2) | body (UTF-8, at most MAX_BODY) | Ed25519 signature by `from` (64)
//! ```
//!
//! Integers are big-endian. The signature covers [`SIGN_CONTEXT`] and then every byte before
//! it, so a signal is bound to its recipient (`to`: it cannot be passed on to another key),
//! to its session and to its place in it (`seq`). The body is what the session needs, as
//! text (this module checks only that): burrow.js's offers and answers are a JSON object with
//! the ephemeral X25519 key (`dh`, base64url) from which both ends derive the keys of what
//! their connection sends through the relay (and, for WebRTC, the SDP), a candidate is the
//! JSON of an `RTCIceCandidateInit`, and a bye is empty or a reason.
//!
//! [`Signaling`] is the sans-IO core around the codec, in the crate's calling convention: it
//! numbers what it sends in each session and lets through only signals addressed to it,
//! fresh (within [`MAX_SKEW`] of its wall clock) and new (a replay window per session), and
//! counts what it rejects. Never panics on any input.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use ed25519_dalek::{Signature, Signer};

use crate::identity::{NodeId, SecretKey};
use crate::Rng;

/// Starts every signal. Like disco's it is never QUIC (top bits 0) and shares disco's first
/// three bytes, so a check for disco's magic does not take it for disco.
pub const MAGIC: [u8; 4] = [0x20, b'B', b'W', b'S'];
/// The longest body: an SDP of a data channel is about 1 KiB, of audio and video a few.
pub const MAX_BODY: usize = 16 * 1024;
/// Bytes before the body.
pub const HEADER_LEN: usize = 4 + 1 + 32 + 32 + 8 + 8 + 8 + 2;
/// Bytes of the signature that ends a signal.
pub const SIGNATURE_LEN: usize = 64;
/// The longest valid signal.
pub const MAX_SIGNAL: usize = HEADER_LEN + MAX_BODY + SIGNATURE_LEN;
/// What a signal's signature covers before the signal's bytes, so that no other message
/// signed by the same key (a record, a certificate) can pass for a signal.
pub const SIGN_CONTEXT: &[u8] = b"burrow signal v1\0";
/// How far a signal's time may be from the receiver's clock, either way.
pub const MAX_SKEW: Duration = Duration::from_secs(120);

/// What a signal is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// An SDP offer: it opens a session.
    Offer,
    /// The SDP answer to the session's offer.
    Answer,
    /// One ICE candidate (trickled).
    Candidate,
    /// The session is over.
    Bye,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Offer => 1,
            Kind::Answer => 2,
            Kind::Candidate => 3,
            Kind::Bye => 4,
        }
    }

    fn from_code(code: u8) -> Option<Kind> {
        Some(match code {
            1 => Kind::Offer,
            2 => Kind::Answer,
            3 => Kind::Candidate,
            4 => Kind::Bye,
            _ => return None,
        })
    }
}

/// One signal, decoded and its signature checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signal {
    /// What it is for.
    pub kind: Kind,
    /// The sender, whose key signed it.
    pub from: NodeId,
    /// The recipient.
    pub to: NodeId,
    /// The session, chosen by whoever sent its offer.
    pub session: u64,
    /// Its place among the sender's signals in the session, from 0.
    pub seq: u64,
    /// When it was signed, by the sender's wall clock, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// The SDP, the candidate, or a bye's reason.
    pub body: String,
}

/// Why bytes are not a valid signal (or a signal cannot be encoded).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    /// Not a signal at all.
    #[error("not a signal (no signal magic)")]
    NotASignal,
    /// Shorter than its fields say.
    #[error("signal truncated")]
    Truncated,
    /// Bytes after the signature.
    #[error("{0} bytes after the signal's signature")]
    TrailingBytes(usize),
    /// An unknown kind.
    #[error("unknown signal kind {0}")]
    UnknownKind(u8),
    /// A body past [`MAX_BODY`].
    #[error("a signal body of {0} bytes; the limit is {MAX_BODY}")]
    BodyTooLong(usize),
    /// A body that is not UTF-8.
    #[error("a signal body that is not UTF-8")]
    BodyNotText,
    /// The sender's key is no Ed25519 point.
    #[error("the signal's sender is not a valid key")]
    BadSender,
    /// The recipient's key is no Ed25519 point.
    #[error("the signal's recipient is not a valid key")]
    BadRecipient,
    /// The signature does not verify against the sender's key.
    #[error("the signal's signature is invalid")]
    BadSignature,
}

impl Signal {
    /// The signal's bytes, signed with `key` (whose node id must be `from`; the signature
    /// would not verify otherwise). Fails only for a body past [`MAX_BODY`].
    pub fn encode(&self, key: &SecretKey) -> Result<Vec<u8>, SignalError> {
        let body = self.body.as_bytes();
        let len = u16::try_from(body.len())
            .ok()
            .filter(|n| usize::from(*n) <= MAX_BODY)
            .ok_or(SignalError::BodyTooLong(body.len()))?;
        let mut out = Vec::with_capacity(HEADER_LEN + body.len() + SIGNATURE_LEN);
        out.extend_from_slice(&MAGIC);
        out.push(self.kind.code());
        out.extend_from_slice(self.from.as_bytes());
        out.extend_from_slice(self.to.as_bytes());
        out.extend_from_slice(&self.session.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.unix_ms.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(body);
        let signature = key.signing_key().sign(&signed_bytes(&out));
        out.extend_from_slice(&signature.to_bytes());
        Ok(out)
    }

    /// Decodes `bytes` and checks the signature against the sender's key.
    pub fn decode(bytes: &[u8]) -> Result<Signal, SignalError> {
        if !looks_like_signal(bytes) {
            return Err(SignalError::NotASignal);
        }
        let header = bytes.get(..HEADER_LEN).ok_or(SignalError::Truncated)?;
        let u64_at = |at: usize| {
            let mut b = [0; 8];
            b.copy_from_slice(&header[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let key_at = |at: usize| {
            let mut b = [0; 32];
            b.copy_from_slice(&header[at..at + 32]);
            NodeId::from_bytes(b).map_err(|_| SignalError::BadSender)
        };
        let kind = Kind::from_code(header[4]).ok_or(SignalError::UnknownKind(header[4]))?;
        let body_len = usize::from(u16::from_be_bytes([header[93], header[94]]));
        if body_len > MAX_BODY {
            return Err(SignalError::BodyTooLong(body_len));
        }
        let signed_len = HEADER_LEN + body_len;
        let total = signed_len + SIGNATURE_LEN;
        if bytes.len() < total {
            return Err(SignalError::Truncated);
        }
        if bytes.len() > total {
            return Err(SignalError::TrailingBytes(bytes.len() - total));
        }
        let from = key_at(5)?;
        let signature =
            Signature::from_slice(&bytes[signed_len..]).map_err(|_| SignalError::BadSignature)?;
        from.verifying_key()
            .ok_or(SignalError::BadSender)?
            .verify_strict(&signed_bytes(&bytes[..signed_len]), &signature)
            .map_err(|_| SignalError::BadSignature)?;
        let body = std::str::from_utf8(&bytes[HEADER_LEN..signed_len])
            .map_err(|_| SignalError::BodyNotText)?;
        Ok(Signal {
            kind,
            from,
            to: key_at(37).map_err(|_| SignalError::BadRecipient)?,
            session: u64_at(69),
            seq: u64_at(77),
            unix_ms: u64_at(85),
            body: body.to_owned(),
        })
    }
}

/// Whether `bytes` start like a signal (its magic): the cheap test before [`Signal::decode`].
pub fn looks_like_signal(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC)
}

fn signed_bytes(signal: &[u8]) -> Vec<u8> {
    [SIGN_CONTEXT, signal].concat()
}

/// Sessions whose replay state the core keeps at most; past this the one idle longest is
/// forgotten first (a replay of its signals is then caught by their age alone).
pub const MAX_SESSIONS: usize = 4096;
/// Sessions one peer may hold at once; its oldest is forgotten first.
pub const MAX_SESSIONS_PER_PEER: usize = 8;
/// A session with no signal either way for this long is forgotten. Longer than twice
/// [`MAX_SKEW`], so a replay of any of its signals is too old by then.
pub const SESSION_IDLE: Duration = Duration::from_secs(300);
/// How far behind the newest signal of a session an older one may still come (out of order).
pub const REPLAY_WINDOW: u64 = 64;

/// What happens to a [`Signaling`] core.
#[derive(Debug)]
pub enum Input<'a> {
    /// A relay datagram that looks like a signal ([`looks_like_signal`]) came; `unix_ms` is
    /// this machine's wall clock now.
    Received {
        /// The datagram.
        data: &'a [u8],
        /// Milliseconds since the Unix epoch, now.
        unix_ms: u64,
    },
    /// Send a signal to `to` in `session` (`None`: a new session, for an offer; its id comes
    /// back in [`Output::Transmit`]).
    Send {
        /// The recipient.
        to: NodeId,
        /// The session, or none for a new one.
        session: Option<u64>,
        /// What it is for.
        kind: Kind,
        /// The SDP, candidate or reason.
        body: String,
        /// Milliseconds since the Unix epoch, now.
        unix_ms: u64,
    },
    /// Time passed.
    Timeout,
}

/// Why a signal that came was not let through.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Not a valid signal, or a forged one (see the error).
    #[error(transparent)]
    Invalid(#[from] SignalError),
    /// Addressed to another key (a relay passing it on).
    #[error("addressed to another key")]
    NotForUs,
    /// Signed more than [`MAX_SKEW`] from this machine's clock.
    #[error("signed {0} ms from this clock, beyond the allowed skew")]
    Stale(u64),
    /// Seen already, or too far behind the session's newest.
    #[error("a replay (session {session:016x}, seq {seq})")]
    Replayed {
        /// The session.
        session: u64,
        /// The signal's place in it.
        seq: u64,
    },
    /// The session ended with a bye.
    #[error("session {0:016x} has ended")]
    Ended(u64),
}

/// Counts of what the core did with the signals that came.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignalStats {
    /// Let through.
    pub accepted: u64,
    /// Not signals, or unreadable.
    pub malformed: u64,
    /// Signed by another key than the one they claim (or signed wrong).
    pub forged: u64,
    /// For another key.
    pub misaddressed: u64,
    /// Too old or too far in the future.
    pub stale: u64,
    /// Seen before, or in a session that ended.
    pub replayed: u64,
}

/// What the core wants done.
#[derive(Debug)]
pub enum Output {
    /// Send `data` to `to` as a relay datagram.
    Transmit {
        /// The recipient.
        to: NodeId,
        /// Its session.
        session: u64,
        /// The signed signal.
        data: Vec<u8>,
    },
    /// A signal came and passed every check.
    Received(Signal),
    /// A signal came and was dropped, and why (the counts are in [`Signaling::stats`]).
    Rejected(Rejected),
    /// Nothing more to do until then (`None`: until the next input).
    Timeout(Option<Instant>),
}

/// One session with one peer: what we sent, what came.
#[derive(Debug)]
struct Session {
    next_seq: u64,
    /// The newest seq that came, and a bit for each of the [`REPLAY_WINDOW`] before it
    /// (bit `i`: `newest - i` came); `None` before the first.
    newest: Option<u64>,
    seen: u64,
    ended: bool,
    last_active: Instant,
}

impl Session {
    fn new(now: Instant) -> Session {
        Session {
            next_seq: 0,
            newest: None,
            seen: 0,
            ended: false,
            last_active: now,
        }
    }

    /// Marks `seq` as come; false if it came before or is too old for the window.
    fn admit(&mut self, seq: u64) -> bool {
        let Some(newest) = self.newest else {
            self.newest = Some(seq);
            self.seen = 1;
            return true;
        };
        if seq > newest {
            let shift = seq - newest;
            self.seen = if shift >= REPLAY_WINDOW {
                0
            } else {
                self.seen << shift
            } | 1;
            self.newest = Some(seq);
            return true;
        }
        let back = newest - seq;
        if back >= REPLAY_WINDOW || self.seen & (1 << back) != 0 {
            return false;
        }
        self.seen |= 1 << back;
        true
    }
}

/// The signaling core of one key: see the module's doc.
#[derive(Debug)]
pub struct Signaling {
    key: SecretKey,
    me: NodeId,
    rng: Rng,
    /// By peer and session.
    sessions: BTreeMap<(NodeId, u64), Session>,
    out: VecDeque<Output>,
    stats: SignalStats,
}

impl Signaling {
    /// The core for `key`; session ids come from `seed`.
    pub fn new(key: SecretKey, seed: u64) -> Signaling {
        Signaling {
            me: key.node_id(),
            key,
            rng: Rng::new(seed),
            sessions: BTreeMap::new(),
            out: VecDeque::new(),
            stats: SignalStats::default(),
        }
    }

    /// Feeds the core; never fails (a bad signal is an [`Output::Rejected`], a body past
    /// [`MAX_BODY`] to send is one too).
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.expire(now);
        match input {
            Input::Timeout => {}
            Input::Received { data, unix_ms } => {
                let output = match self.receive(now, data, unix_ms) {
                    Ok(signal) => {
                        self.stats.accepted += 1;
                        Output::Received(signal)
                    }
                    Err(why) => {
                        let count = match &why {
                            Rejected::Invalid(
                                SignalError::BadSignature | SignalError::BadSender,
                            ) => &mut self.stats.forged,
                            Rejected::Invalid(_) => &mut self.stats.malformed,
                            Rejected::NotForUs => &mut self.stats.misaddressed,
                            Rejected::Stale(_) => &mut self.stats.stale,
                            Rejected::Replayed { .. } | Rejected::Ended(_) => {
                                &mut self.stats.replayed
                            }
                        };
                        *count += 1;
                        Output::Rejected(why)
                    }
                };
                self.out.push_back(output);
            }
            Input::Send {
                to,
                session,
                kind,
                body,
                unix_ms,
            } => {
                let session = session.unwrap_or_else(|| self.rng.next_u64());
                let state = self.session(now, to, session);
                let seq = state.next_seq;
                state.next_seq += 1;
                state.ended |= kind == Kind::Bye;
                let signal = Signal {
                    kind,
                    from: self.me,
                    to,
                    session,
                    seq,
                    unix_ms,
                    body,
                };
                let output = match signal.encode(&self.key) {
                    Ok(data) => Output::Transmit { to, session, data },
                    Err(e) => Output::Rejected(Rejected::Invalid(e)),
                };
                self.out.push_back(output);
            }
        }
    }

    /// What the core wants done next; drain it after every input.
    pub fn poll_output(&mut self) -> Output {
        if let Some(out) = self.out.pop_front() {
            return out;
        }
        let next = self.sessions.values().map(|s| s.last_active).min();
        Output::Timeout(next.map(|at| at + SESSION_IDLE))
    }

    /// What became of the signals that came.
    pub fn stats(&self) -> SignalStats {
        self.stats
    }

    /// Sessions whose state is kept.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    fn receive(&mut self, now: Instant, data: &[u8], unix_ms: u64) -> Result<Signal, Rejected> {
        let signal = Signal::decode(data)?;
        if signal.to != self.me {
            return Err(Rejected::NotForUs);
        }
        let skew = signal.unix_ms.abs_diff(unix_ms);
        if u128::from(skew) > MAX_SKEW.as_millis() {
            return Err(Rejected::Stale(skew));
        }
        let (session, seq) = (signal.session, signal.seq);
        let state = self.session(now, signal.from, session);
        if state.ended {
            return Err(Rejected::Ended(session));
        }
        if !state.admit(seq) {
            return Err(Rejected::Replayed { session, seq });
        }
        state.ended |= signal.kind == Kind::Bye;
        Ok(signal)
    }

    /// The state of `session` with `peer`, made if new (forgetting the peer's oldest, or
    /// anyone's, past the limits), and marked active now.
    fn session(&mut self, now: Instant, peer: NodeId, session: u64) -> &mut Session {
        let key = (peer, session);
        if !self.sessions.contains_key(&key) {
            let oldest = |sessions: &BTreeMap<(NodeId, u64), Session>, only: Option<NodeId>| {
                sessions
                    .iter()
                    .filter(|((p, _), _)| only.is_none_or(|o| *p == o))
                    .min_by_key(|(_, s)| s.last_active)
                    .map(|(k, _)| *k)
            };
            let of_peer = self.sessions.keys().filter(|(p, _)| *p == peer).count();
            if of_peer >= MAX_SESSIONS_PER_PEER {
                if let Some(k) = oldest(&self.sessions, Some(peer)) {
                    self.sessions.remove(&k);
                }
            } else if self.sessions.len() >= MAX_SESSIONS {
                if let Some(k) = oldest(&self.sessions, None) {
                    self.sessions.remove(&k);
                }
            }
        }
        let state = self
            .sessions
            .entry(key)
            .or_insert_with(|| Session::new(now));
        state.last_active = now;
        state
    }

    fn expire(&mut self, now: Instant) {
        self.sessions
            .retain(|_, s| now.saturating_duration_since(s.last_active) < SESSION_IDLE);
    }
}

#[cfg(test)]
mod tests;
