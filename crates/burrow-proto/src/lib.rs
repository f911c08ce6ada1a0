//! Sans-IO protocol cores for burrow.
//!
//! Nothing here opens a socket, reads a clock or asks the OS for randomness: every state
//! machine takes bytes, [`std::time::Instant`]s and a seed in and hands bytes, timers and
//! events out, so the I/O drivers in the `burrow` and `burrow-relay` crates stay thin and every
//! protocol can be tested deterministically, in virtual time, in memory.
//!
//! # One calling convention
//!
//! Every core with state over time has the same shape (the one `str0m` uses):
//!
//! - **`new(config, seed: u64)`**: randomness comes in once, as a seed, and the core draws
//!   everything from it (transaction ids, nonces, jitter, port orders). Nothing is sent
//!   before the first input.
//! - **`handle_input(&mut self, now: Instant, input: Input<'_>)`**: everything that happens
//!   to the core: received datagrams, commands from the application, and time passing
//!   (`Input::Timeout`). It never blocks, and it never fails: network input is hostile, so a
//!   bad packet is dropped (and counted or logged by the driver where it matters), never an
//!   error the driver must handle. `now` never goes backwards.
//! - **`poll_output(&mut self) -> Output`**: what the core wants done, drained in a loop
//!   after every input: `Output::Transmit` (bytes to send, and where), `Output::Event`
//!   (something the application may want to know), and finally `Output::Timeout(at)`: nothing
//!   more to do until `at`, when the driver feeds `Input::Timeout` (`None`: until the next
//!   input). Feeding `Input::Timeout` early is harmless; the core does what is due.
//! - **Queries** (`&self` methods) read state and change nothing.
//!
//! A driver is then always the same loop: read sockets and channels, feed the core, send what
//! it returns, sleep until its timeout (see `burrow::netcheck::run`).
//!
//! The cores that follow it: [`endpoint::EndpointCore`], [`holepunch::PeerPaths`],
//! [`nat_behaviour::NatBehaviour`], [`turn::TurnServer`], [`mesh::pake::joiner::Joiner`],
//! [`mesh::pake::inviter::Inviter`], [`signal::Signaling`], and two that need no randomness,
//! so take no seed: [`relay::client_conn::ClientConnection`] and [`page_conn::PageConn`] (its
//! ephemeral key is made from seed bytes beforehand). Two small calculators send nothing and own no timer, so they
//! have no input or output queue: [`relay::backoff::Backoff`] (seeded the same way), which the
//! driver asks for a delay, and [`relay::home::HomeSelector`], which it asks for a home relay.
//!
//! Two documented exceptions, both on hot paths with nothing to wait for:
//! [`stun::server::StunServer`] keeps no state at all, so it is one call per request that
//! writes the answer into a buffer; and the relay server's per-connection core
//! ([`relay::server_conn`]) returns one `Action` per frame, because it runs once per forwarded
//! datagram and its only timers are the handshake and idle deadlines (its random challenge
//! comes from the driver with each connection).
//!
//! Plain codecs (STUN messages, relay frames, disco packets, signals, records, tickets, mesh
//! certificates, rosters and invites) are functions from bytes to values and back, with typed
//! errors, and never panic on any input.

// Tests drive the cores with real clocks and maps where that is simpler; the library itself
// is held to clippy.toml's list (no clock, thread, OS randomness, socket, lock or seeded map).
#![cfg_attr(
    test,
    allow(
        clippy::disallowed_methods,
        clippy::disallowed_types,
        reason = "tests may read the clock and use std maps"
    )
)]

pub mod disco;
pub mod endpoint;
pub mod holepunch;
pub mod identity;
pub mod mesh;
#[cfg(test)]
mod mutation;
pub mod nat_behaviour;
pub mod page_conn;
pub mod rate;
pub mod record;
pub mod relay;
mod rng;
pub mod signal;
pub mod stun;
pub mod text;
pub mod ticket;
pub mod turn;

pub use rng::Rng;
