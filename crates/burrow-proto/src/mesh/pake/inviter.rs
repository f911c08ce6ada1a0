//! The inviter's side: one core per invite with a short code, serving every joiner that
//! tries it, counting wrong codes, and burned after [`MAX_FAILURES`] of them.
//!
//! The driver routes to this core every message from a node that has a session here, and
//! every `Start` whose rendezvous part is this code's (read it with [`Message::decode`]);
//! peers are the node ids the transport authenticated. It drops the core when the invite
//! expires or is used up.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::identity::NodeId;
use crate::mesh::code::ShortCode;
use crate::mesh::error::FormatError;
use crate::Rng;

use super::{
    spake_start, Failure, Keys, Message, Parties, DEFAULT_TIMEOUT, MAX_FAILURES, MAX_PAYLOAD_LEN,
};

/// What the inviter core needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Our node id.
    pub inviter: NodeId,
    /// The invite this code redeems.
    pub invite_id: [u8; 16],
    /// The code.
    pub code: ShortCode,
    /// What a joiner that proves the code receives: the full invite token's bytes. At most
    /// [`MAX_PAYLOAD_LEN`].
    pub payload: Vec<u8>,
    /// How long a joiner has from its `Start` to its `Confirm`.
    pub timeout: Duration,
    /// Most exchanges at once; more are refused as busy.
    pub max_sessions: usize,
}

impl Config {
    /// The defaults: [`DEFAULT_TIMEOUT`], 8 exchanges at once.
    pub fn new(inviter: NodeId, invite_id: [u8; 16], code: ShortCode, payload: Vec<u8>) -> Config {
        Config {
            inviter,
            invite_id,
            code,
            payload,
            timeout: DEFAULT_TIMEOUT,
            max_sessions: 8,
        }
    }
}

/// What happens to the inviter core.
#[derive(Debug)]
pub enum Input<'a> {
    /// A message from `from` (the node id the transport authenticated).
    Message {
        /// The sender.
        from: NodeId,
        /// The message.
        bytes: &'a [u8],
    },
    /// Time passed.
    Timeout,
}

/// A message to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The joiner.
    pub to: NodeId,
    /// The message.
    pub bytes: Vec<u8>,
}

/// What the application may want to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `joiner` proved the code and was sent the payload.
    Joined {
        /// The joiner.
        joiner: NodeId,
    },
    /// An exchange with `joiner` failed.
    Failed {
        /// The joiner.
        joiner: NodeId,
        /// Why.
        reason: Failure,
    },
    /// The code had [`MAX_FAILURES`] wrong attempts and is dead: every later attempt is
    /// refused. Said once.
    Burned,
}

/// What the inviter core wants done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// A message to send.
    Transmit(Transmit),
    /// Something happened.
    Event(Event),
    /// Nothing more to do until then (`None`: until the next input).
    Timeout(Option<Instant>),
}

struct Session {
    keys: Keys,
    deadline: Instant,
}

/// The inviter's side of the short-code exchange, for one invite.
pub struct Inviter {
    config: Config,
    rng: Rng,
    failures: u32,
    sessions: BTreeMap<NodeId, Session>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Inviter {
    /// A core for one invite. Fails if the payload is longer than [`MAX_PAYLOAD_LEN`].
    pub fn new(config: Config, seed: u64) -> Result<Inviter, FormatError> {
        super::wire::check_len(&config.payload, MAX_PAYLOAD_LEN)?;
        Ok(Inviter {
            config,
            rng: Rng::new(seed),
            failures: 0,
            sessions: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// The core with `failures` wrong codes already counted: an inviter that restarts resumes
    /// the count it kept, so a restart does not give an attacker fresh guesses.
    pub fn with_failures(mut self, failures: u32) -> Inviter {
        self.failures = failures.min(MAX_FAILURES);
        self
    }

    /// Wrong codes so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Whether the code is dead.
    pub fn is_burned(&self) -> bool {
        self.failures >= MAX_FAILURES
    }

    /// Feeds the core; never fails (a bad message is refused or dropped).
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.expire(now);
        let Input::Message { from, bytes } = input else {
            return;
        };
        match Message::decode(bytes) {
            Ok(Message::Start { rendezvous, spake }) => self.start(now, from, rendezvous, &spake),
            Ok(Message::Confirm { tag }) => self.confirm(from, &tag),
            // Never answered, so two cores that meet cannot refuse each other for ever.
            Ok(Message::Refused(_)) => {
                self.sessions.remove(&from);
            }
            // A joiner sends nothing else.
            Ok(_) | Err(_) => {
                self.sessions.remove(&from);
                self.refuse(from, Failure::Unexpected);
            }
        }
    }

    /// What to do next; call until it returns a timeout.
    pub fn poll_output(&mut self) -> Output {
        if let Some(t) = self.transmits.pop_front() {
            return Output::Transmit(t);
        }
        if let Some(e) = self.events.pop_front() {
            return Output::Event(e);
        }
        Output::Timeout(self.sessions.values().map(|s| s.deadline).min())
    }

    fn start(&mut self, now: Instant, from: NodeId, rendezvous: [u8; 4], msg_a: &[u8]) {
        // A joiner that starts again gives up its old session, which answered no guess.
        self.sessions.remove(&from);
        if self.is_burned() {
            return self.refuse(from, Failure::Burned);
        }
        if rendezvous != self.config.code.rendezvous().as_bytes() {
            return self.refuse(from, Failure::UnknownCode);
        }
        if self.sessions.len() >= self.config.max_sessions {
            return self.refuse(from, Failure::Busy);
        }
        let parties = Parties {
            joiner: from,
            inviter: self.config.inviter,
        };
        let (spake, msg_b) =
            spake_start(false, self.config.code.password(), parties, &mut self.rng);
        let Ok(key) = spake.finish(msg_a) else {
            return self.refuse(from, Failure::Unexpected);
        };
        let keys = Keys::derive(&key, &self.config.invite_id, parties, msg_a, &msg_b);
        self.sessions.insert(
            from,
            Session {
                keys,
                deadline: now + self.config.timeout,
            },
        );
        self.send(
            from,
            &Message::Reply {
                invite_id: self.config.invite_id,
                spake: msg_b,
            },
        );
    }

    fn confirm(&mut self, from: NodeId, tag: &[u8; 32]) {
        let Some(session) = self.sessions.remove(&from) else {
            return self.refuse(from, Failure::Unexpected);
        };
        let keys = &session.keys;
        if keys.check(&keys.joiner, tag) {
            let welcome = Message::Welcome {
                tag: keys.tag(&keys.inviter),
                sealed: keys.seal(&self.config.payload),
            };
            self.send(from, &welcome);
            self.events.push_back(Event::Joined { joiner: from });
            return;
        }
        self.failures += 1;
        self.events.push_back(Event::Failed {
            joiner: from,
            reason: Failure::WrongCode,
        });
        if !self.is_burned() {
            return self.refuse(from, Failure::WrongCode);
        }
        self.events.push_back(Event::Burned);
        self.refuse(from, Failure::Burned);
        // No exchange in progress will be answered now: tell them at once.
        for joiner in std::mem::take(&mut self.sessions).into_keys() {
            self.refuse(joiner, Failure::Burned);
            self.events.push_back(Event::Failed {
                joiner,
                reason: Failure::Burned,
            });
        }
    }

    /// Ends the exchanges past their deadline. They answered no guess, so they count as no
    /// failure.
    fn expire(&mut self, now: Instant) {
        let expired: Vec<NodeId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.deadline <= now)
            .map(|(joiner, _)| *joiner)
            .collect();
        for joiner in expired {
            self.sessions.remove(&joiner);
            self.events.push_back(Event::Failed {
                joiner,
                reason: Failure::Timeout,
            });
        }
    }

    fn refuse(&mut self, to: NodeId, reason: Failure) {
        self.send(to, &Message::Refused(reason));
    }

    fn send(&mut self, to: NodeId, message: &Message) {
        self.transmits.push_back(Transmit {
            to,
            bytes: message.encode(),
        });
    }
}
