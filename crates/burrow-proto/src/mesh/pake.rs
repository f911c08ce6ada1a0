//! Redeeming a short code: SPAKE2 between the joiner and the inviter, then key confirmation,
//! then the inviter hands over the full invite token sealed under the agreed key.
//!
//! Two sans-IO cores, in the crate's calling convention: [`joiner::Joiner`] and
//! [`inviter::Inviter`] (one per invite, serving any number of joiners). Their messages travel
//! on one reliable, ordered channel between the two nodes (the daemon uses a stream to the
//! inviter, relayed or direct), so the cores never retransmit: a lost message ends in a
//! timeout. The exchange:
//!
//! ```text
//! joiner                                          inviter
//!   Start(rendezvous part, SPAKE2 message A)  ->
//!                                             <-  Reply(invite id, SPAKE2 message B)
//!   Confirm(joiner's tag)                     ->
//!                                             <-  Welcome(inviter's tag, sealed payload)
//!                                                 or Refused(reason)
//! ```
//!
//! SPAKE2 (the `spake2` crate, Ed25519 group) runs with the joiner as side A and the inviter as
//! side B, the code's password part as the password, and the two node ids as the identities.
//! From its key `K` both derive, with HKDF-SHA256 whose salt is the transcript (`burrow invite
//! pake v1`, invite id, joiner id, inviter id, message A, message B), two HMAC-SHA256 keys whose
//! tags over the transcript are the confirmations, and a ChaCha20-Poly1305 key that seals the
//! payload (zero nonce: the key is new each session). So a session is bound to both node ids
//! and the invite: a relay that lies about who is speaking, or a man in the middle that
//! splices messages from two sessions, ends with different keys on the two sides, and the
//! confirmation fails.
//!
//! **Guessing.** A message A commits its sender to one password guess, and the inviter answers
//! with something keyed by `K` only after the joiner's tag proves the guess right; a session
//! that breaks off earlier tells an attacker nothing. Each wrong tag counts against the invite;
//! after [`MAX_FAILURES`] the invite is burned: every later attempt, right or wrong, is refused
//! the same way, so no further guess is answered (see [`super::code`] for the odds).
//!
//! Messages (version byte, type byte, fields):
//!
//! ```text
//! 1 1 Start    rendezvous part (4 code symbols, uppercase), SPAKE2 message (33 bytes)
//! 1 2 Reply    invite id (16 bytes), SPAKE2 message (33 bytes)
//! 1 3 Confirm  tag (32 bytes)
//! 1 4 Welcome  tag (32 bytes), sealed payload (ciphertext and 16-byte tag) to the end
//! 1 5 Refused  reason (u8, see Failure)
//! ```

use std::convert::Infallible;
use std::time::Duration;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use ring::{hkdf, hmac};
use spake2::{Ed25519Group, Identity, Password, Spake2};

use crate::identity::NodeId;
use crate::Rng;

use super::error::FormatError;
use super::wire::{self, Reader, VERSION};

pub mod inviter;
pub mod joiner;

/// Failed attempts after which an invite's code is burned.
pub const MAX_FAILURES: u32 = 3;
/// Longest payload the inviter hands over (a full invite token is at most
/// [`super::invite::MAX_INVITE_LEN`]).
pub const MAX_PAYLOAD_LEN: usize = 16 * 1024;
/// Longest message.
pub const MAX_MESSAGE_LEN: usize = 2 + 32 + MAX_PAYLOAD_LEN + AEAD_TAG_LEN;
/// How long an exchange may take, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

const SPAKE_LEN: usize = 33;
const TAG_LEN: usize = 32;
const AEAD_TAG_LEN: usize = 16;
const TRANSCRIPT_DOMAIN: &[u8] = b"burrow invite pake v1";

/// One message of the exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// The joiner's opening.
    Start {
        /// The code's rendezvous part, which says which invite the joiner means.
        rendezvous: [u8; 4],
        /// SPAKE2 message A.
        spake: [u8; SPAKE_LEN],
    },
    /// The inviter's answer.
    Reply {
        /// Which invite the inviter answers for.
        invite_id: [u8; 16],
        /// SPAKE2 message B.
        spake: [u8; SPAKE_LEN],
    },
    /// The joiner's proof that it derived the same key.
    Confirm {
        /// HMAC-SHA256 of the transcript under the joiner's confirmation key.
        tag: [u8; TAG_LEN],
    },
    /// The inviter's proof, and the payload.
    Welcome {
        /// HMAC-SHA256 of the transcript under the inviter's confirmation key.
        tag: [u8; TAG_LEN],
        /// The payload, sealed.
        sealed: Vec<u8>,
    },
    /// The inviter refuses.
    Refused(Failure),
}

/// Why an exchange failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// Key confirmation failed: a wrong code, or someone tampered with the exchange.
    #[error("the code is wrong (key confirmation failed)")]
    WrongCode,
    /// The invite had too many failed attempts and no longer answers.
    #[error("the code is dead after {MAX_FAILURES} failed attempts; ask for a new invite")]
    Burned,
    /// The inviter has no live invite for this code.
    #[error("the inviter has no invite for this code (expired or withdrawn?)")]
    UnknownCode,
    /// The inviter is in too many exchanges at once.
    #[error("the inviter is busy with other joiners; try again")]
    Busy,
    /// A message out of turn, or one that does not decode.
    #[error("the exchange broke off: an unexpected or malformed message")]
    Unexpected,
    /// No answer in time.
    #[error("no answer in time")]
    Timeout,
}

impl Failure {
    fn to_byte(self) -> u8 {
        match self {
            Failure::WrongCode => 1,
            Failure::Burned => 2,
            Failure::UnknownCode => 3,
            Failure::Busy => 4,
            Failure::Unexpected => 5,
            Failure::Timeout => 6,
        }
    }

    fn from_byte(b: u8) -> Result<Failure, FormatError> {
        Ok(match b {
            1 => Failure::WrongCode,
            2 => Failure::Burned,
            3 => Failure::UnknownCode,
            4 => Failure::Busy,
            5 => Failure::Unexpected,
            6 => Failure::Timeout,
            other => return Err(FormatError::Reason(other)),
        })
    }
}

const START: u8 = 1;
const REPLY: u8 = 2;
const CONFIRM: u8 = 3;
const WELCOME: u8 = 4;
const REFUSED: u8 = 5;

impl Message {
    /// The encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        match self {
            Message::Start { rendezvous, spake } => {
                out.push(START);
                out.extend_from_slice(rendezvous);
                out.extend_from_slice(spake);
            }
            Message::Reply { invite_id, spake } => {
                out.push(REPLY);
                out.extend_from_slice(invite_id);
                out.extend_from_slice(spake);
            }
            Message::Confirm { tag } => {
                out.push(CONFIRM);
                out.extend_from_slice(tag);
            }
            Message::Welcome { tag, sealed } => {
                out.push(WELCOME);
                out.extend_from_slice(tag);
                out.extend_from_slice(sealed);
            }
            Message::Refused(reason) => {
                out.push(REFUSED);
                out.push(reason.to_byte());
            }
        }
        out
    }

    /// Decodes a message; every accepted one encodes back to the same bytes.
    pub fn decode(bytes: &[u8]) -> Result<Message, FormatError> {
        wire::check_len(bytes, MAX_MESSAGE_LEN)?;
        let mut r = Reader::new(bytes);
        r.version()?;
        let message = match r.u8()? {
            START => {
                let rendezvous: [u8; 4] = r.array()?;
                if !rendezvous.iter().all(|b| super::code::is_symbol(*b)) {
                    return Err(FormatError::Rendezvous);
                }
                Message::Start {
                    rendezvous,
                    spake: r.array()?,
                }
            }
            REPLY => Message::Reply {
                invite_id: r.array()?,
                spake: r.array()?,
            },
            CONFIRM => Message::Confirm { tag: r.array()? },
            WELCOME => {
                let tag = r.array()?;
                let sealed = r.take(r.rest().len())?.to_vec();
                Message::Welcome { tag, sealed }
            }
            REFUSED => Message::Refused(Failure::from_byte(r.u8()?)?),
            other => return Err(FormatError::MessageType(other)),
        };
        r.finish()?;
        Ok(message)
    }
}

/// What both sides derive from SPAKE2's key and the transcript.
struct Keys {
    transcript: Vec<u8>,
    joiner: hmac::Key,
    inviter: hmac::Key,
    seal: LessSafeKey,
}

/// The ids one exchange is between.
#[derive(Clone, Copy)]
struct Parties {
    joiner: NodeId,
    inviter: NodeId,
}

impl Keys {
    fn derive(
        spake_key: &[u8],
        invite_id: &[u8; 16],
        parties: Parties,
        msg_a: &[u8],
        msg_b: &[u8],
    ) -> Keys {
        let mut transcript = TRANSCRIPT_DOMAIN.to_vec();
        transcript.extend_from_slice(invite_id);
        transcript.extend_from_slice(parties.joiner.as_bytes());
        transcript.extend_from_slice(parties.inviter.as_bytes());
        transcript.extend_from_slice(msg_a);
        transcript.extend_from_slice(msg_b);
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &transcript).extract(spake_key);
        let hmac_key = |label: &[u8]| {
            prk.expand(&[label], hmac::HMAC_SHA256)
                .map(hmac::Key::from)
                .expect("a 32-byte key is within HKDF-SHA256's output limit")
        };
        let seal = prk
            .expand(&[b"payload"], &CHACHA20_POLY1305)
            .map(UnboundKey::from)
            .expect("a 32-byte key is within HKDF-SHA256's output limit");
        Keys {
            joiner: hmac_key(b"joiner confirm"),
            inviter: hmac_key(b"inviter confirm"),
            seal: LessSafeKey::new(seal),
            transcript,
        }
    }

    fn tag(&self, key: &hmac::Key) -> [u8; TAG_LEN] {
        let mut tag = [0; TAG_LEN];
        tag.copy_from_slice(hmac::sign(key, &self.transcript).as_ref());
        tag
    }

    /// Constant time.
    fn check(&self, key: &hmac::Key, tag: &[u8; TAG_LEN]) -> bool {
        hmac::verify(key, &self.transcript, tag).is_ok()
    }

    fn seal(&self, payload: &[u8]) -> Vec<u8> {
        let mut sealed = payload.to_vec();
        self.seal
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::empty(),
                &mut sealed,
            )
            .expect("a payload within MAX_PAYLOAD_LEN seals");
        sealed
    }

    fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        let mut buf = sealed.to_vec();
        let len = self
            .seal
            .open_in_place(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::empty(),
                &mut buf,
            )
            .ok()?
            .len();
        buf.truncate(len);
        Some(buf)
    }
}

/// Starts SPAKE2 on one side: the state and the 33-byte message to send.
fn spake_start(
    side_a: bool,
    password: &[u8],
    parties: Parties,
    rng: &mut Rng,
) -> (Spake2<Ed25519Group>, [u8; SPAKE_LEN]) {
    let password = Password::new(password);
    let (a, b) = (
        Identity::new(parties.joiner.as_bytes()),
        Identity::new(parties.inviter.as_bytes()),
    );
    let rng = SpakeRng(rng);
    let (state, msg) = if side_a {
        Spake2::<Ed25519Group>::start_a_with_rng(&password, &a, &b, rng)
    } else {
        Spake2::<Ed25519Group>::start_b_with_rng(&password, &a, &b, rng)
    };
    let mut out = [0; SPAKE_LEN];
    out.copy_from_slice(&msg);
    (state, out)
}

/// The crate's seeded generator, for `spake2`'s random scalar.
struct SpakeRng<'a>(&'a mut Rng);

impl spake2::rand_core::TryRng for SpakeRng<'_> {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(u32::from_be_bytes(self.0.bytes()))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.0.next_u64())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.fill(dst);
        Ok(())
    }
}

/// ChaCha12 is a cryptographically strong generator.
impl spake2::rand_core::TryCryptoRng for SpakeRng<'_> {}

#[cfg(test)]
mod tests;
