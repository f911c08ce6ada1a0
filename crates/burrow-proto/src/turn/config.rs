//! What a TURN server is told, and what it counts.

use std::time::Duration;

use super::PeerFilter;

/// Limits that bound what clients can make the server hold and do.
#[derive(Clone, Debug, PartialEq)]
pub struct TurnLimits {
    /// Allocations and reserved ports at once; more get 508 (Insufficient Capacity).
    pub max_allocations: usize,
    /// Allocations one username may hold (0 = no cap); more get 486 (Allocation Quota
    /// Reached).
    pub max_allocations_per_user: usize,
    /// Allocations one client IP (an IPv6 /64) may hold (0 = no cap); more get 486.
    pub max_allocations_per_ip: usize,
    /// Bytes per second one allocation may relay, both ways together (0 = unlimited); over
    /// it, datagrams are dropped.
    pub rate_bytes_per_sec: u64,
    /// Bytes an allocation may relay at once above its rate (at least 65,535, so that any
    /// datagram can pass).
    pub burst_bytes: u64,
    /// Peer IPs one allocation may have permissions for; more get 508.
    pub max_permissions: usize,
    /// Channels one allocation may bind; more get 508.
    pub max_channels: usize,
    /// Lifetime of an allocation that asks for less or nothing (RFC 8656: 600 s).
    pub default_lifetime: Duration,
    /// Longest lifetime granted (RFC 8656: 3600 s).
    pub max_lifetime: Duration,
}

impl Default for TurnLimits {
    fn default() -> Self {
        TurnLimits {
            max_allocations: 10_000,
            max_allocations_per_user: 100,
            max_allocations_per_ip: 100,
            rate_bytes_per_sec: 12_500_000,
            burst_bytes: 2 * 1024 * 1024,
            max_permissions: 64,
            max_channels: 64,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
        }
    }
}

/// What the server is told.
#[derive(Clone, Debug)]
pub struct TurnConfig {
    /// The realm of the long-term credentials.
    pub realm: String,
    /// Sent as SOFTWARE in responses, if set.
    pub software: Option<String>,
    /// Long-term users: name and password.
    pub users: Vec<(String, String)>,
    /// Shared secrets of ephemeral (TURN REST) credentials; several may be valid at once.
    pub secrets: Vec<String>,
    /// Whether the driver can relay over IPv4 and over IPv6.
    pub relay_v4: bool,
    /// See `relay_v4`.
    pub relay_v6: bool,
    /// The limits.
    pub limits: TurnLimits,
    /// The peers that may be reached.
    pub peers: PeerFilter,
    /// How long a nonce is good for; then requests get 438 (Stale Nonce) and a new one.
    pub nonce_lifetime: Duration,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            realm: "burrow".to_string(),
            software: None,
            users: Vec::new(),
            secrets: Vec::new(),
            relay_v4: true,
            relay_v6: false,
            limits: TurnLimits::default(),
            peers: PeerFilter::default(),
            nonce_lifetime: Duration::from_secs(600),
        }
    }
}

/// Counters of what the server did, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TurnStats {
    /// Allocations made (relayed socket opened).
    pub allocations_created: u64,
    /// Allocations that ended by expiring.
    pub allocations_expired: u64,
    /// Allocations deleted by a Refresh with lifetime 0 or by their TCP connection closing.
    pub allocations_deleted: u64,
    /// Requests without credentials, answered 401 with a realm and nonce (the normal first
    /// step of every client).
    pub challenges: u64,
    /// Requests with credentials that did not verify (unknown user, wrong password or realm).
    pub auth_failures: u64,
    /// Requests with an ephemeral username past its expiry.
    pub expired_credentials: u64,
    /// Requests with a stale or foreign nonce (438).
    pub stale_nonces: u64,
    /// Requests refused 400, 420, 440, 442 or 443.
    pub bad_requests: u64,
    /// Requests refused 403: a peer the filter denies.
    pub forbidden_peers: u64,
    /// Requests refused 437: no allocation, or one made by another Allocate.
    pub mismatches: u64,
    /// Requests refused 441: another username than the allocation's.
    pub wrong_credentials: u64,
    /// Allocates refused 486: a per-user or per-IP quota.
    pub quota_refused: u64,
    /// Requests refused 508: a capacity limit, or no relayed socket to be had.
    pub capacity_refused: u64,
    /// Permissions installed (not counting refreshes).
    pub permissions_created: u64,
    /// Channels bound (not counting refreshes).
    pub channels_bound: u64,
    /// Datagrams relayed to peers.
    pub to_peer_packets: u64,
    /// Bytes relayed to peers.
    pub to_peer_bytes: u64,
    /// Datagrams relayed to clients.
    pub to_client_packets: u64,
    /// Bytes relayed to clients.
    pub to_client_bytes: u64,
    /// Data dropped for want of a permission (or channel).
    pub dropped_no_permission: u64,
    /// Data dropped by the allocation's byte rate.
    pub dropped_rate: u64,
    /// Messages from clients without an allocation that could carry them, or malformed.
    pub dropped_unusable: u64,
    /// Unsigned responses (challenges, errors before authentication) not sent because their
    /// UDP source had used up its share: the source may be forged.
    pub unsigned_limited: u64,
}
