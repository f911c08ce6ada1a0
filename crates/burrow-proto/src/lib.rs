//! Sans-IO protocol cores for burrow.
//!
//! Nothing here opens a socket or reads a clock: every state machine takes bytes and
//! [`std::time::Instant`]s in and hands bytes, timers and events out, so the I/O drivers in the
//! `burrow` crate stay thin and every protocol can be tested deterministically in memory.

pub mod disco;
pub mod discovery;
pub mod holepunch;
pub mod identity;
#[cfg(test)]
mod mutation;
pub mod record;
pub mod relay;
pub mod stun;
pub mod ticket;
