//! The joiner's side: one exchange with one inviter, ending in the payload (the full invite
//! token) or a failure.

use std::time::{Duration, Instant};

use spake2::{Ed25519Group, Spake2};

use crate::identity::NodeId;
use crate::mesh::code::ShortCode;
use crate::Rng;

use super::{spake_start, Failure, Keys, Message, Parties, DEFAULT_TIMEOUT};

/// What the joiner core needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Our node id.
    pub joiner: NodeId,
    /// The inviter's node id (found under the code's registry namespace).
    pub inviter: NodeId,
    /// The code.
    pub code: ShortCode,
    /// How long the whole exchange may take.
    pub timeout: Duration,
}

impl Config {
    /// With [`DEFAULT_TIMEOUT`].
    pub fn new(joiner: NodeId, inviter: NodeId, code: ShortCode) -> Config {
        Config {
            joiner,
            inviter,
            code,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// What happens to the joiner core.
#[derive(Debug)]
pub enum Input<'a> {
    /// Begin: send the opening message.
    Start,
    /// A message from the inviter.
    Message(&'a [u8]),
    /// Time passed.
    Timeout,
}

/// How the exchange ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The inviter proved it knows the code, and sent this.
    Joined {
        /// The invite the inviter answered for (the token's own id must be this one).
        invite_id: [u8; 16],
        /// The payload: the full invite token, to decode and verify as any token.
        payload: Vec<u8>,
    },
    /// The exchange failed.
    Failed(Failure),
}

/// What the joiner core wants done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// A message to send to the inviter.
    Transmit(Vec<u8>),
    /// The exchange ended.
    Event(Event),
    /// Nothing more to do until then (`None`: until the next input).
    Timeout(Option<Instant>),
}

enum State {
    Idle,
    AwaitReply {
        spake: Box<Spake2<Ed25519Group>>,
        msg_a: [u8; 33],
    },
    AwaitWelcome {
        keys: Box<Keys>,
        invite_id: [u8; 16],
    },
    Done,
}

/// The joiner's side of the short-code exchange.
pub struct Joiner {
    config: Config,
    rng: Rng,
    state: State,
    deadline: Option<Instant>,
    transmit: Option<Vec<u8>>,
    event: Option<Event>,
}

impl Joiner {
    /// A joiner that sends nothing before [`Input::Start`].
    pub fn new(config: Config, seed: u64) -> Joiner {
        Joiner {
            config,
            rng: Rng::new(seed),
            state: State::Idle,
            deadline: None,
            transmit: None,
            event: None,
        }
    }

    /// Feeds the core; never fails (a bad message ends the exchange with a failure event).
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        if matches!(self.state, State::Done) {
            return;
        }
        if self.deadline.is_some_and(|d| now >= d) {
            return self.fail(Failure::Timeout);
        }
        let parties = Parties {
            joiner: self.config.joiner,
            inviter: self.config.inviter,
        };
        match (std::mem::replace(&mut self.state, State::Done), input) {
            (state, Input::Timeout) => self.state = state,
            (State::Idle, Input::Start) => {
                let (spake, msg_a) =
                    spake_start(true, self.config.code.password(), parties, &mut self.rng);
                let mut rendezvous = [0; 4];
                rendezvous.copy_from_slice(self.config.code.rendezvous().as_bytes());
                self.send(&Message::Start {
                    rendezvous,
                    spake: msg_a,
                });
                self.deadline = Some(now + self.config.timeout);
                self.state = State::AwaitReply {
                    spake: Box::new(spake),
                    msg_a,
                };
            }
            (state, Input::Start) => self.state = state,
            (state, Input::Message(bytes)) => self.on_message(state, parties, bytes),
        }
    }

    /// What to do next; call until it returns a timeout.
    pub fn poll_output(&mut self) -> Output {
        if let Some(bytes) = self.transmit.take() {
            return Output::Transmit(bytes);
        }
        if let Some(e) = self.event.take() {
            return Output::Event(e);
        }
        match self.state {
            State::Done => Output::Timeout(None),
            _ => Output::Timeout(self.deadline),
        }
    }

    fn on_message(&mut self, state: State, parties: Parties, bytes: &[u8]) {
        match (state, Message::decode(bytes)) {
            (_, Ok(Message::Refused(reason))) => self.fail(reason),
            (
                State::AwaitReply { spake, msg_a },
                Ok(Message::Reply {
                    invite_id,
                    spake: msg_b,
                }),
            ) => {
                let Ok(key) = spake.finish(&msg_b) else {
                    return self.fail(Failure::Unexpected);
                };
                let keys = Keys::derive(&key, &invite_id, parties, &msg_a, &msg_b);
                self.send(&Message::Confirm {
                    tag: keys.tag(&keys.joiner),
                });
                self.state = State::AwaitWelcome {
                    keys: Box::new(keys),
                    invite_id,
                };
            }
            (State::AwaitWelcome { keys, invite_id }, Ok(Message::Welcome { tag, sealed })) => {
                let payload = keys
                    .check(&keys.inviter, &tag)
                    .then(|| keys.open(&sealed))
                    .flatten();
                match payload {
                    Some(payload) => self.end(Event::Joined { invite_id, payload }),
                    None => self.fail(Failure::WrongCode),
                }
            }
            _ => self.fail(Failure::Unexpected),
        }
    }

    fn send(&mut self, message: &Message) {
        self.transmit = Some(message.encode());
    }

    fn fail(&mut self, reason: Failure) {
        self.end(Event::Failed(reason));
    }

    fn end(&mut self, event: Event) {
        self.state = State::Done;
        self.event = Some(event);
    }
}
