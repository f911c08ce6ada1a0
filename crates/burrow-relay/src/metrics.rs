//! The relay's counters, exported as Prometheus text at `GET /metrics` and as
//! [`RelayStats`] to programs.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use burrow_proto::turn::TurnStats;

/// Why a frame was not delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum DropReason {
    /// No client with the destination key is connected.
    NoSuchPeer,
    /// The destination's outbound queue was full (a slow receiver).
    QueueFull,
}

impl DropReason {
    /// The metrics label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            DropReason::NoSuchPeer => "no_such_peer",
            DropReason::QueueFull => "queue_full",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// Every close reason label, so `/metrics` shows zeros instead of missing series.
pub const CLOSE_LABELS: &[&str] = &[
    "client_closed",
    "handshake_timeout",
    "idle_timeout",
    "bad_frame",
    "unexpected_frame",
    "auth_failed",
    "text_message",
    "too_large",
    "replaced",
    "shutting_down",
    "transport_error",
];

/// The relay's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    pub clients: Gauge,
    pub browser_clients: Gauge,
    pub sessions: Gauge,
    pub accepted: Counter,
    refused: Family<Reason, Counter>,
    pub frames_forwarded: Counter,
    pub signals_forwarded: Counter,
    pub bytes_forwarded: Counter,
    pub drop_no_such_peer: Counter,
    pub drop_queue_full: Counter,
    pub throttled: Counter,
    pub auth_failures: Counter,
    closes: Family<Reason, Counter>,
    notices: Family<Reason, Counter>,
    pub registry_records: Gauge,
    pub turn: TurnMetrics,
}

/// The TURN server's metrics. Counters are shared handles: the driver and the STUN threads
/// hold clones.
#[derive(Clone)]
pub(crate) struct TurnMetrics {
    pub allocations: Gauge,
    pub sockets: Gauge,
    pub queue_full: Counter,
    pub send_failed: Counter,
    counters: Family<Reason, Counter>,
}

/// Each of the TURN core's counters: its label in `burrow_relay_turn_events`, and its value.
fn turn_counters(s: &TurnStats) -> [(&'static str, u64); 23] {
    [
        ("allocation_created", s.allocations_created),
        ("allocation_expired", s.allocations_expired),
        ("allocation_deleted", s.allocations_deleted),
        ("challenge", s.challenges),
        ("auth_failure", s.auth_failures),
        ("expired_credential", s.expired_credentials),
        ("stale_nonce", s.stale_nonces),
        ("bad_request", s.bad_requests),
        ("forbidden_peer", s.forbidden_peers),
        ("allocation_mismatch", s.mismatches),
        ("wrong_credentials", s.wrong_credentials),
        ("quota_reached", s.quota_refused),
        ("insufficient_capacity", s.capacity_refused),
        ("permission_created", s.permissions_created),
        ("channel_bound", s.channels_bound),
        ("packet_to_peer", s.to_peer_packets),
        ("byte_to_peer", s.to_peer_bytes),
        ("packet_to_client", s.to_client_packets),
        ("byte_to_client", s.to_client_bytes),
        ("drop_no_permission", s.dropped_no_permission),
        ("drop_rate_limited", s.dropped_rate),
        ("drop_unusable", s.dropped_unusable),
        ("unsigned_answer_limited", s.unsigned_limited),
    ]
}

impl TurnMetrics {
    fn register(registry: &mut Registry) -> TurnMetrics {
        let m = TurnMetrics {
            allocations: Gauge::default(),
            sockets: Gauge::default(),
            queue_full: Counter::default(),
            send_failed: Counter::default(),
            counters: Family::default(),
        };
        registry.register(
            "turn_allocations",
            "TURN allocations now",
            m.allocations.clone(),
        );
        registry.register(
            "turn_sockets",
            "TURN relayed sockets open (allocations and reserved ports)",
            m.sockets.clone(),
        );
        registry.register(
            "turn_queue_full",
            "TURN messages dropped because the driver's queue was full",
            m.queue_full.clone(),
        );
        registry.register(
            "turn_send_failures",
            "TURN sends that failed",
            m.send_failed.clone(),
        );
        registry.register(
            "turn_events",
            "What the TURN server did, by event: allocations made and ended, requests \
             refused by reason, permissions and channels made, packets and bytes relayed, \
             data dropped by reason",
            m.counters.clone(),
        );
        for (reason, _) in turn_counters(&TurnStats::default()) {
            let _ = m.counters.get_or_create(&Reason { reason });
        }
        m
    }

    /// Adds what the core's counters gained from `old` to `new`.
    pub(crate) fn publish(&self, old: &TurnStats, new: &TurnStats) {
        for ((reason, was), (_, is)) in turn_counters(old).into_iter().zip(turn_counters(new)) {
            if is > was {
                self.counters
                    .get_or_create(&Reason { reason })
                    .inc_by(is - was);
            }
        }
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("burrow_relay");
        let clients = Gauge::default();
        registry.register(
            "clients",
            "Authenticated clients connected",
            clients.clone(),
        );
        let browser_clients = Gauge::default();
        registry.register(
            "browser_clients",
            "Authenticated clients connected from a web page (their upgrade had an Origin)",
            browser_clients.clone(),
        );
        let sessions = Gauge::default();
        registry.register(
            "sessions",
            "WebSocket sessions open, handshaking or authenticated",
            sessions.clone(),
        );
        let accepted = Counter::default();
        registry.register(
            "connections_accepted",
            "TCP connections accepted",
            accepted.clone(),
        );
        let refused = Family::<Reason, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections refused by a limit (per_ip_limit, max_clients)",
            refused.clone(),
        );
        let frames_forwarded = Counter::default();
        registry.register(
            "frames_forwarded",
            "Datagrams forwarded between clients",
            frames_forwarded.clone(),
        );
        let signals_forwarded = Counter::default();
        registry.register(
            "signals_forwarded",
            "Datagrams forwarded that were WebRTC signals",
            signals_forwarded.clone(),
        );
        let bytes_forwarded = Counter::default();
        registry.register(
            "bytes_forwarded",
            "Payload bytes forwarded between clients",
            bytes_forwarded.clone(),
        );
        let drops = Family::<Reason, Counter>::default();
        registry.register("drops", "Datagrams not delivered, by reason", drops.clone());
        let throttled = Counter::default();
        registry.register(
            "rate_limited",
            "Times a client over its byte rate had reading paused",
            throttled.clone(),
        );
        let auth_failures = Counter::default();
        registry.register(
            "auth_failures",
            "ClientAuth frames that did not prove their key",
            auth_failures.clone(),
        );
        let closes = Family::<Reason, Counter>::default();
        registry.register(
            "closes",
            "WebSocket sessions ended, by reason",
            closes.clone(),
        );
        let notices = Family::<Reason, Counter>::default();
        registry.register(
            "peer_gone_notices",
            "PeerGone notices sent, by reason",
            notices.clone(),
        );
        let registry_records = Gauge::default();
        registry.register(
            "registry_records",
            "Node records held by the bootstrap registry",
            registry_records.clone(),
        );
        let turn = TurnMetrics::register(&mut registry);
        for r in ["per_ip_limit", "max_clients"] {
            let _ = refused.get_or_create(&Reason { reason: r });
        }
        for r in CLOSE_LABELS {
            let _ = closes.get_or_create(&Reason { reason: r });
        }
        for r in ["not_connected", "disconnected"] {
            let _ = notices.get_or_create(&Reason { reason: r });
        }
        let drop_no_such_peer = drops
            .get_or_create(&Reason {
                reason: DropReason::NoSuchPeer.label(),
            })
            .clone();
        let drop_queue_full = drops
            .get_or_create(&Reason {
                reason: DropReason::QueueFull.label(),
            })
            .clone();
        Metrics {
            registry,
            clients,
            browser_clients,
            sessions,
            accepted,
            refused,
            frames_forwarded,
            signals_forwarded,
            bytes_forwarded,
            drop_no_such_peer,
            drop_queue_full,
            throttled,
            auth_failures,
            closes,
            notices,
            registry_records,
            turn,
        }
    }

    pub(crate) fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&Reason { reason }).inc();
    }

    pub(crate) fn dropped(&self, reason: DropReason) {
        match reason {
            DropReason::NoSuchPeer => self.drop_no_such_peer.inc(),
            DropReason::QueueFull => self.drop_queue_full.inc(),
        };
    }

    pub(crate) fn closed(&self, reason: &'static str) {
        self.closes.get_or_create(&Reason { reason }).inc();
    }

    pub(crate) fn notice(&self, reason: &'static str) {
        self.notices.get_or_create(&Reason { reason }).inc();
    }

    /// Prometheus (OpenMetrics) text.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub(crate) fn snapshot(&self) -> RelayStats {
        let get = |f: &Family<Reason, Counter>, reason: &'static str| {
            f.get_or_create(&Reason { reason }).get()
        };
        RelayStats {
            clients: self.clients.get().max(0) as u64,
            browser_clients: self.browser_clients.get().max(0) as u64,
            sessions: self.sessions.get().max(0) as u64,
            connections_accepted: self.accepted.get(),
            refused_per_ip: get(&self.refused, "per_ip_limit"),
            refused_max_clients: get(&self.refused, "max_clients"),
            frames_forwarded: self.frames_forwarded.get(),
            signals_forwarded: self.signals_forwarded.get(),
            bytes_forwarded: self.bytes_forwarded.get(),
            drops_no_such_peer: self.drop_no_such_peer.get(),
            drops_queue_full: self.drop_queue_full.get(),
            rate_limited: self.throttled.get(),
            auth_failures: self.auth_failures.get(),
            closes: CLOSE_LABELS
                .iter()
                .map(|r| (*r, get(&self.closes, r)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}

/// A snapshot of the relay's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Authenticated clients now.
    pub clients: u64,
    /// Of them, clients from a web page.
    pub browser_clients: u64,
    /// WebSocket sessions now (handshaking or authenticated).
    pub sessions: u64,
    /// TCP connections accepted.
    pub connections_accepted: u64,
    /// Connections refused by the per-IP limit.
    pub refused_per_ip: u64,
    /// WebSocket upgrades refused because the relay was full.
    pub refused_max_clients: u64,
    /// Datagrams forwarded.
    pub frames_forwarded: u64,
    /// Of them, WebRTC signals.
    pub signals_forwarded: u64,
    /// Payload bytes forwarded.
    pub bytes_forwarded: u64,
    /// Datagrams dropped: destination not connected.
    pub drops_no_such_peer: u64,
    /// Datagrams dropped: destination queue full.
    pub drops_queue_full: u64,
    /// Times a client had reading paused by its byte rate.
    pub rate_limited: u64,
    /// Failed ClientAuths.
    pub auth_failures: u64,
    /// Sessions ended, by reason label (only non-zero ones).
    pub closes: Vec<(&'static str, u64)>,
}

impl RelayStats {
    /// Sessions ended for `reason` (a [`CLOSE_LABELS`] entry).
    pub fn closes_for(&self, reason: &str) -> u64 {
        self.closes
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }
}
