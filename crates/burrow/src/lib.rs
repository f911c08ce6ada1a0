//! burrow: find peers by key and reach them through any NAT.
//!
//! This crate holds the I/O drivers around the sans-IO cores of `burrow-proto`: `netcheck`,
//! key storage, configuration, the relay client, the [`endpoint`], and [`lookup`] of nodes by
//! key: the bootstrap [`registry_client`], records and namespaces on the Mainline DHT
//! ([`dht`]), LAN peers by mDNS ([`mdns`]), and the [`publisher`] that keeps a node's own
//! record and memberships there. The daemon's local [`api`] (server and client) lives here
//! too, with the [`paths`] of its files. The `burrow` binary is a thin layer over it; the
//! servers are in `burrow-relay`.

pub mod api;
pub mod clock;
pub mod config;
pub mod dht;
pub mod endpoint;
mod error_chain;
mod http_client;
pub mod keyfile;
pub mod lookup;
pub mod mdns;
pub mod mesh;
pub mod netcheck;
#[cfg(feature = "webrtc")]
pub mod pages;
pub mod paths;
pub mod publisher;
pub mod registry_client;
pub mod relay_client;
pub mod tool;

pub use burrow_proto::identity::{NodeId, SecretKey};
pub use burrow_proto::record;
pub use burrow_proto::ticket;
/// The QUIC implementation [`endpoint::Connection`] exposes, so that callers use its version.
pub use quinn;
