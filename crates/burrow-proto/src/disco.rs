//! Disco packets: the hole-punching probes and candidate exchange between two nodes.
//!
//! A packet is one UDP (or relay) datagram:
//!
//! ```text
//! magic (4) | sender NodeId (32) | nonce (12) | ChaCha20-Poly1305(plaintext) + tag (16)
//! ```
//!
//! The magic and sender form the additional data, so a relay or an attacker cannot re-address
//! a packet. The key is X25519 between the two nodes' Ed25519 keys, through HKDF-SHA256, so
//! any two nodes share one without a handshake. The plaintext is a type byte and a big-endian
//! body ([`Message`]). Nothing here authenticates freshness: packets can be replayed, so
//! callers match [`Message::Pong`]s to pings they sent by [`TxId`].
//!
//! Never panics on any input.

use std::net::{IpAddr, SocketAddr};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use ring::hkdf;

use crate::identity::{NodeId, SecretKey};

/// Starts every packet. The first byte's top two bits are 0, so it is never QUIC (which sets
/// 0x40). Bytes 4..8 are the sender's key, which matches the STUN magic cookie for one key in
/// 2^32, so a shared socket tests [`looks_like_disco`] before `looks_like_stun`.
pub const MAGIC: [u8; 4] = [0x20, b'B', b'W', b'D'];
/// Most candidates one [`Message::CallMeMaybe`] carries, which bounds [`MAX_PACKET`].
pub const MAX_CANDIDATES: usize = 32;
/// The largest valid packet (a full CallMeMaybe of IPv6 addresses): a receive buffer this big
/// never truncates one, and anything longer is rejected before decrypting.
pub const MAX_PACKET: usize = HEADER_LEN + NONCE_LEN + 3 + MAX_CANDIDATES * V6_LEN + TAG_LEN;

/// Matches a [`Message::Pong`] to its [`Message::Ping`].
pub type TxId = [u8; 12];

const HEADER_LEN: usize = MAGIC.len() + 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// A packet with an empty ciphertext: anything shorter cannot be authenticated.
const MIN_PACKET: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;
/// An encoded IPv6 socket address: family, address, port.
const V6_LEN: usize = 1 + 16 + 2;
/// HKDF salt; a new protocol version gets a new string, so keys never cross versions.
const KDF_SALT: &[u8] = b"burrow disco v1";

const T_PING: u8 = 0x01;
const T_PONG: u8 = 0x02;
const T_CALL_ME_MAYBE: u8 = 0x03;
/// CallMeMaybe's flags byte: its two low bits are the NAT hint, [`NatHint::Hard`] or
/// [`NatHint::Open`] (0 is easy)...
const NAT_HARD: u8 = 0x01;
const NAT_OPEN: u8 = 0x02;
const NAT_BITS: u8 = 0x03;
/// ...and this bit marks an answer ([`Message::CallMeMaybe::answer`]).
const ANSWER: u8 = 0x04;

/// One disco message, the plaintext of a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Probes a path; the peer answers with a [`Message::Pong`] to the address it came from.
    Ping {
        /// Random, echoed in the pong.
        tx: TxId,
    },
    /// Proves a path works and tells the pinger its public address as seen on that path.
    Pong {
        /// The ping's transaction id.
        tx: TxId,
        /// The ping's source address as the responder saw it. IPv6 flow info and scope id are
        /// not sent.
        observed: SocketAddr,
    },
    /// Asks the peer to ping these addresses now, so both sides punch at the same time.
    CallMeMaybe {
        /// The sender's candidate addresses, at most [`MAX_CANDIDATES`], its public
        /// (STUN-reflexive) address first.
        candidates: Vec<SocketAddr>,
        /// What the sender knows of its own NAT.
        nat: NatHint,
        /// The sender has the receiver's candidates (from the receiver's own CallMeMaybe, in
        /// the same attempt) and has primed them: the receiver may ping at full strength now.
        /// A call without it asks for an answer, which is how a lost call or answer is noticed
        /// and made good.
        answer: bool,
    },
}

/// What a node knows of its own NAT, told in [`Message::CallMeMaybe`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NatHint {
    /// Endpoint-independent mapping, or not known (yet).
    #[default]
    Easy,
    /// The NAT maps per destination (symmetric): its public port towards the peer is none of
    /// its candidates, so only birthday probing can find it.
    Hard,
    /// No NAT: the public address is one of the node's own.
    Open,
}

/// Why a packet or message was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DiscoError {
    /// The datagram does not start with [`MAGIC`]: it belongs to another protocol.
    #[error("not a disco packet")]
    NotDisco,
    /// Too short to hold the header, nonce and tag, or longer than [`MAX_PACKET`].
    #[error("disco packet of {0} bytes is outside {MIN_PACKET}..={MAX_PACKET} bytes")]
    BadLength(usize),
    /// The sender field names someone other than this key's peer.
    #[error("disco packet claims sender {got}, expected {expected}")]
    WrongSender {
        /// The peer this key belongs to.
        expected: NodeId,
        /// The claimed sender (not necessarily a valid key).
        got: NodeId,
    },
    /// The tag did not verify: a different key, or the packet was altered.
    #[error("disco packet failed authentication (wrong key or tampered)")]
    Decrypt,
    /// The peer's NodeId is not an Ed25519 public key.
    #[error("peer key is not a valid Ed25519 public key")]
    InvalidKey,
    /// The peer's key is a low-order point, which would give a shared secret anyone knows.
    #[error("peer key is a low-order point")]
    LowOrderKey,
    /// A decrypted message with no type byte.
    #[error("empty disco message")]
    Empty,
    /// A message type this version does not know.
    #[error("unknown disco message type {0:#04x}")]
    UnknownType(u8),
    /// A message that ends before its body does.
    #[error("disco message type {0:#04x} is truncated")]
    Truncated(u8),
    /// A message followed by bytes its type does not define.
    #[error("disco message type {msg_type:#04x} has {extra} trailing bytes")]
    TrailingBytes {
        /// The message type.
        msg_type: u8,
        /// How many bytes follow the message.
        extra: usize,
    },
    /// An address family other than 4 or 6.
    #[error("unknown address family {0}")]
    UnknownFamily(u8),
    /// A CallMeMaybe with a flags byte this version does not define.
    #[error("unknown CallMeMaybe flags {0:#04x}")]
    UnknownFlags(u8),
    /// A CallMeMaybe over [`MAX_CANDIDATES`], sent or received.
    #[error("{0} candidates exceed the limit of {MAX_CANDIDATES}")]
    TooManyCandidates(usize),
}

/// Cheap demultiplexing of a datagram that may be STUN, QUIC or disco; not validation.
pub fn looks_like_disco(b: &[u8]) -> bool {
    b.starts_with(&MAGIC)
}

/// The claimed sender of a packet, read before any crypto so the caller can look up (or
/// derive) the shared key. Unauthenticated, and not checked to be a curve point:
/// [`SharedKey::new`] refuses one that is not, and [`SharedKey::open`] proves it.
pub fn sender(packet: &[u8]) -> Result<NodeId, DiscoError> {
    split(packet).map(|(sender, _, _)| sender)
}

/// The sender, nonce and ciphertext-with-tag of a packet of valid magic and length.
fn split(packet: &[u8]) -> Result<(NodeId, [u8; NONCE_LEN], &[u8]), DiscoError> {
    if !looks_like_disco(packet) {
        return Err(DiscoError::NotDisco);
    }
    if !(MIN_PACKET..=MAX_PACKET).contains(&packet.len()) {
        return Err(DiscoError::BadLength(packet.len()));
    }
    let mut sender = [0; 32];
    sender.copy_from_slice(&packet[MAGIC.len()..HEADER_LEN]);
    let mut nonce = [0; NONCE_LEN];
    nonce.copy_from_slice(&packet[HEADER_LEN..HEADER_LEN + NONCE_LEN]);
    Ok((NodeId(sender), nonce, &packet[HEADER_LEN + NONCE_LEN..]))
}

/// The additional data: binds the claimed sender to the ciphertext.
fn header(sender: &NodeId) -> [u8; HEADER_LEN] {
    let mut header = [0; HEADER_LEN];
    header[..MAGIC.len()].copy_from_slice(&MAGIC);
    header[MAGIC.len()..].copy_from_slice(sender.as_bytes());
    header
}

/// The symmetric key two nodes share; derive once per peer and cache.
#[derive(Clone)]
pub struct SharedKey {
    peer: NodeId,
    key: LessSafeKey,
}

impl SharedKey {
    /// Derives the key both nodes compute: X25519 with the Ed25519 keys converted to
    /// Montgomery form, then HKDF-SHA256 over both public keys in sorted order.
    pub fn new(ours: &SecretKey, theirs: &NodeId) -> Result<SharedKey, DiscoError> {
        let their_point = theirs
            .verifying_key()
            .ok_or(DiscoError::InvalidKey)?
            .to_montgomery();
        let shared = their_point.mul_clamped(ours.signing_key().to_scalar_bytes());
        if shared.to_bytes() == [0; 32] {
            return Err(DiscoError::LowOrderKey);
        }
        let our_id = ours.node_id();
        let (lo, hi) = if our_id <= *theirs {
            (our_id, *theirs)
        } else {
            (*theirs, our_id)
        };
        let key = hkdf::Salt::new(hkdf::HKDF_SHA256, KDF_SALT)
            .extract(shared.as_bytes())
            .expand(&[lo.as_bytes(), hi.as_bytes()], &CHACHA20_POLY1305)
            .map(UnboundKey::from)
            .expect("a 32-byte key is within HKDF-SHA256's output limit");
        Ok(SharedKey {
            peer: *theirs,
            key: LessSafeKey::new(key),
        })
    }

    /// Encodes and encrypts `msg` as sent by `from` (our NodeId). `nonce` must never repeat
    /// under this key; 12 fresh random bytes per packet are fine.
    pub fn seal(
        &self,
        from: &NodeId,
        msg: &Message,
        nonce: [u8; 12],
    ) -> Result<Vec<u8>, DiscoError> {
        Ok(self.seal_plaintext(from, nonce, msg.encode()?))
    }

    /// Decrypts and decodes a packet from this key's peer (checks the sender field equals
    /// the peer too, so our own packets reflected back are refused).
    pub fn open(&self, packet: &[u8]) -> Result<Message, DiscoError> {
        let (sender, nonce, sealed) = split(packet)?;
        if sender != self.peer {
            return Err(DiscoError::WrongSender {
                expected: self.peer,
                got: sender,
            });
        }
        let mut buf = sealed.to_vec();
        let plaintext = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(header(&sender)),
                &mut buf,
            )
            .map_err(|_| DiscoError::Decrypt)?;
        Message::decode(plaintext)
    }

    /// Builds a packet around any plaintext (tests use it to seal malformed messages).
    fn seal_plaintext(&self, from: &NodeId, nonce: [u8; 12], mut plaintext: Vec<u8>) -> Vec<u8> {
        let header = header(from);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(header),
                &mut plaintext,
            )
            .expect("a disco message is far below ChaCha20-Poly1305's length limit");
        [&header[..], &nonce, &plaintext, tag.as_ref()].concat()
    }
}

impl std::fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedKey(peer {})", self.peer.short())
    }
}

impl Message {
    /// The plaintext inside a packet. Public so fuzzers can reach the encoder without
    /// the AEAD; [`SharedKey::seal`] is the normal way in.
    pub fn encode(&self) -> Result<Vec<u8>, DiscoError> {
        let mut out = Vec::new();
        match self {
            Message::Ping { tx } => {
                out.push(T_PING);
                out.extend_from_slice(tx);
            }
            Message::Pong { tx, observed } => {
                out.push(T_PONG);
                out.extend_from_slice(tx);
                put_addr(&mut out, observed);
            }
            Message::CallMeMaybe {
                candidates,
                nat,
                answer,
            } => {
                if candidates.len() > MAX_CANDIDATES {
                    return Err(DiscoError::TooManyCandidates(candidates.len()));
                }
                out.extend_from_slice(&[T_CALL_ME_MAYBE, candidates.len() as u8]);
                for addr in candidates {
                    put_addr(&mut out, addr);
                }
                let nat = match nat {
                    NatHint::Easy => 0,
                    NatHint::Hard => NAT_HARD,
                    NatHint::Open => NAT_OPEN,
                };
                out.push(nat | if *answer { ANSWER } else { 0 });
            }
        }
        Ok(out)
    }

    /// Parses a decrypted plaintext. Public so fuzzers can reach the parser without the
    /// AEAD; its input is unauthenticated unless it came from [`SharedKey::open`].
    pub fn decode(plaintext: &[u8]) -> Result<Message, DiscoError> {
        let (&msg_type, body) = plaintext.split_first().ok_or(DiscoError::Empty)?;
        let mut r = Reader {
            msg_type,
            rest: body,
        };
        let msg = match msg_type {
            T_PING => Message::Ping { tx: r.array()? },
            T_PONG => Message::Pong {
                tx: r.array()?,
                observed: r.addr()?,
            },
            T_CALL_ME_MAYBE => {
                let [count] = r.array()?;
                if usize::from(count) > MAX_CANDIDATES {
                    return Err(DiscoError::TooManyCandidates(count.into()));
                }
                let candidates = (0..count).map(|_| r.addr()).collect::<Result<_, _>>()?;
                let [flags] = r.array()?;
                let nat = match flags & NAT_BITS {
                    _ if flags & !(NAT_BITS | ANSWER) != 0 => {
                        return Err(DiscoError::UnknownFlags(flags))
                    }
                    0 => NatHint::Easy,
                    NAT_HARD => NatHint::Hard,
                    NAT_OPEN => NatHint::Open,
                    _ => return Err(DiscoError::UnknownFlags(flags)),
                };
                Message::CallMeMaybe {
                    candidates,
                    nat,
                    answer: flags & ANSWER != 0,
                }
            }
            other => return Err(DiscoError::UnknownType(other)),
        };
        if !r.rest.is_empty() {
            return Err(DiscoError::TrailingBytes {
                msg_type,
                extra: r.rest.len(),
            });
        }
        Ok(msg)
    }
}

/// Family (4 or 6), address, port: the address encoding of disco messages and node records.
pub(crate) fn put_addr(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// Reads a message body front to back; running out is [`DiscoError::Truncated`].
struct Reader<'a> {
    msg_type: u8,
    rest: &'a [u8],
}

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DiscoError> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(DiscoError::Truncated(self.msg_type))?;
        self.rest = rest;
        Ok(*head)
    }

    fn addr(&mut self) -> Result<SocketAddr, DiscoError> {
        let ip = match self.array()? {
            [4] => IpAddr::from(self.array::<4>()?),
            [6] => IpAddr::from(self.array::<16>()?),
            [family] => return Err(DiscoError::UnknownFamily(family)),
        };
        Ok(SocketAddr::new(ip, u16::from_be_bytes(self.array()?)))
    }
}

#[cfg(test)]
mod tests;
