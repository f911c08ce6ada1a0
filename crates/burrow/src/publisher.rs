//! Keeping this node findable: its signed record at the bootstrap registries and in the
//! Mainline DHT, and its namespace memberships in the DHT's directories, renewed on a
//! schedule, with an event for every outcome.
//!
//! [`RecordPublisher::start`] publishes at once and then renews: the record every
//! [`PublisherOptions::republish_every`] with the addresses of the moment, a fresh expiry and
//! a higher `seq`; the memberships every [`PublisherOptions::announce_every`]. Each registry,
//! the DHT record and each namespace has a loop of its own, so a dead registry neither delays
//! nor repeats the others, and a failure is retried sooner
//! ([`PublisherOptions::retry_after_failure`]). Dropping the publisher stops it all; what was
//! published expires by itself (the record after its lifetime, a membership after
//! [`MEMBER_TTL_SECS`]).
//!
//! A closed namespace (with a secret) goes to the DHT only: a registry's listings are public.
//!
//! ```no_run
//! # async fn run(endpoint: burrow::endpoint::Endpoint) -> Result<(), Box<dyn std::error::Error>> {
//! use burrow::publisher::{PublishEvent, PublisherOptions, RecordPublisher};
//! use burrow::SecretKey;
//!
//! let key = SecretKey::from_bytes([7; 32]);
//! let ep = endpoint.clone();
//! let mut publisher = RecordPublisher::start(key, move || ep.ticket(), PublisherOptions {
//!     registries: vec!["https://relay.example.com".parse()?],
//!     namespaces: vec!["chat".into()],
//!     ..Default::default()
//! })?;
//! loop {
//!     if let PublishEvent::PublishFailed { source, error } = publisher.next_event().await {
//!         eprintln!("not published at {source}: {error}");
//!     }
//! }
//! # }
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use burrow_proto::record::{self, is_valid_namespace, NodeRecord, RecordError};
use burrow_proto::relay::RelayUrl;
use burrow_proto::ticket::Ticket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::clock;
use crate::dht::{DhtDiscovery, DhtError, Namespace, MEMBER_TTL_SECS};
use crate::error_chain::Chain;
use crate::registry_client::{RegistryClient, RegistryClientOptions, RegistryError};
use crate::SecretKey;

/// Default time between publishing the record: its addresses stay fresh.
pub const DEFAULT_REPUBLISH_EVERY: Duration = Duration::from_secs(10 * 60);
/// Default lifetime of a published record.
pub const DEFAULT_RECORD_LIFETIME: Duration = Duration::from_secs(60 * 60);
/// Default time between announcing the memberships: well inside [`MEMBER_TTL_SECS`].
pub const DEFAULT_ANNOUNCE_EVERY: Duration = Duration::from_secs(30 * 60);
/// Default wait before trying again after a failure.
pub const DEFAULT_RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);
/// Events waiting for [`RecordPublisher::next_event`]; more are dropped (and logged).
const EVENT_QUEUE: usize = 64;

/// What to publish where, and how often.
#[derive(Clone, Debug)]
pub struct PublisherOptions {
    /// Registries (relay URLs) to keep the record at.
    pub registries: Vec<RelayUrl>,
    /// How to reach them.
    pub registry: RegistryClientOptions,
    /// The DHT to keep the record (a BEP 44 item under the node key) and the memberships in.
    pub dht: Option<Arc<DhtDiscovery>>,
    /// Namespaces to be listed under: at the registries (1 to 64 of `A-Z a-z 0-9 . _ - :`)
    /// unless closed, and in the DHT's directories.
    pub namespaces: Vec<String>,
    /// The secret that closes the namespaces: then they go to the DHT only.
    pub namespace_secret: Option<Vec<u8>>,
    /// Time between publishing the record; shorter than `record_lifetime`.
    pub republish_every: Duration,
    /// How long each published record is valid.
    pub record_lifetime: Duration,
    /// Time between announcing the memberships; at most half of [`MEMBER_TTL_SECS`].
    pub announce_every: Duration,
    /// Wait before trying a source again after it failed (or the interval, if shorter).
    pub retry_after_failure: Duration,
}

impl Default for PublisherOptions {
    fn default() -> Self {
        PublisherOptions {
            registries: Vec::new(),
            registry: RegistryClientOptions::default(),
            dht: None,
            namespaces: Vec::new(),
            namespace_secret: None,
            republish_every: DEFAULT_REPUBLISH_EVERY,
            record_lifetime: DEFAULT_RECORD_LIFETIME,
            announce_every: DEFAULT_ANNOUNCE_EVERY,
            retry_after_failure: DEFAULT_RETRY_AFTER_FAILURE,
        }
    }
}

/// Where a record went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A bootstrap registry.
    Registry(RelayUrl),
    /// The Mainline DHT.
    Dht,
}

impl fmt::Display for Source {
    /// The registry's URL, or `dht`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Registry(url) => write!(f, "{url}"),
            Source::Dht => f.write_str("dht"),
        }
    }
}

/// What the publisher did.
#[derive(Debug)]
pub enum PublishEvent {
    /// The record is stored at `source`.
    Published {
        /// Where.
        source: Source,
        /// The record's sequence number (Unix time in milliseconds, or one more than the last).
        seq: u64,
        /// How many DHT nodes stored it; `None` for a registry, which is one store.
        stored: Option<u32>,
    },
    /// Publishing at `source` failed; it is tried again after the retry wait.
    PublishFailed {
        /// Where.
        source: Source,
        /// Why.
        error: PublishError,
    },
    /// The node is listed in the DHT's directory of `namespace`.
    Announced {
        /// The namespace's name.
        namespace: String,
    },
    /// Announcing in `namespace` failed; it is tried again after the retry wait.
    AnnounceFailed {
        /// The namespace's name.
        namespace: String,
        /// Why.
        error: DhtError,
    },
}

/// Why the publisher cannot start, or a record was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The options are out of range.
    #[error("bad publisher setting: {0}")]
    Config(String),
    /// The record could not be built from the ticket.
    #[error("cannot make the record")]
    Record(#[from] RecordError),
    /// The registry refused it or did not answer.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The DHT did not store it.
    #[error(transparent)]
    Dht(#[from] DhtError),
}

/// Keeps the node's record published and its memberships announced until dropped; see the
/// [module docs](self).
pub struct RecordPublisher {
    events: mpsc::Receiver<PublishEvent>,
    tasks: Vec<JoinHandle<()>>,
    /// Holds a sender too, so that the event queue stays open with nothing to publish.
    _shared: Arc<Shared>,
}

impl fmt::Debug for RecordPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordPublisher")
            .field("loops", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl Drop for RecordPublisher {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What every loop shares.
struct Shared {
    key: SecretKey,
    ticket: Box<dyn Fn() -> Ticket + Send + Sync>,
    record_lifetime: Duration,
    /// The last `seq` handed out, so that seqs only grow even if the clock steps back.
    last_seq: AtomicU64,
    events: mpsc::Sender<PublishEvent>,
}

impl Shared {
    /// A record of the node's addressing now, with a new `seq`.
    fn record(&self) -> NodeRecord {
        let now = clock::since_epoch();
        let millis = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        let next = |last: u64| millis.max(last.saturating_add(1));
        let last = self
            .last_seq
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| Some(next(l)))
            .expect("always Some");
        let ticket = (self.ticket)();
        let mut record = NodeRecord::new(
            self.key.node_id(),
            next(last),
            (now + self.record_lifetime).as_secs(),
        );
        record.relays = ticket.relays.into_iter().take(record::MAX_RELAYS).collect();
        record.addrs = ticket.addrs.into_iter().take(record::MAX_ADDRS).collect();
        record
    }

    /// Reports an event; never waits (a reader that fell behind loses events, not schedule).
    fn report(&self, event: PublishEvent) {
        match &event {
            PublishEvent::PublishFailed { source, error } => {
                info!(%source, "publishing the record failed: {}", Chain(error))
            }
            PublishEvent::AnnounceFailed { namespace, error } => {
                info!(namespace, "announcing in the DHT failed: {}", Chain(error))
            }
            event => debug!(?event, "publisher"),
        }
        if self.events.try_send(event).is_err() {
            debug!("publisher event dropped: nobody is reading them");
        }
    }

    /// Reports the outcome of one publish at `source`; returns the wait until the next.
    fn published(
        &self,
        source: Source,
        outcome: Result<(u64, Option<u32>), PublishError>,
        schedule: Schedule,
    ) -> Duration {
        match outcome {
            Ok((seq, stored)) => {
                self.report(PublishEvent::Published {
                    source,
                    seq,
                    stored,
                });
                schedule.every
            }
            Err(error) => {
                self.report(PublishEvent::PublishFailed { source, error });
                schedule.retry
            }
        }
    }
}

/// One loop's timing.
#[derive(Clone, Copy)]
struct Schedule {
    every: Duration,
    retry: Duration,
}

impl RecordPublisher {
    /// Starts publishing `key`'s record, built from `ticket()` (called for each publish; an
    /// endpoint's [`ticket`](crate::endpoint::Endpoint::ticket), typically), and announcing
    /// its memberships, as `options` say. Must be called within a Tokio runtime. Fails only on
    /// bad options.
    pub fn start(
        key: SecretKey,
        ticket: impl Fn() -> Ticket + Send + Sync + 'static,
        options: PublisherOptions,
    ) -> Result<RecordPublisher, PublishError> {
        let bad = |what: String| Err(PublishError::Config(what));
        if options.republish_every < Duration::from_secs(1)
            || options.republish_every >= options.record_lifetime
        {
            return bad(format!(
                "republish interval {:?} must be at least 1s and shorter than the record's \
                 lifetime {:?}",
                options.republish_every, options.record_lifetime
            ));
        }
        let member_ttl = Duration::from_secs(MEMBER_TTL_SECS);
        if options.announce_every < Duration::from_secs(1)
            || options.announce_every > member_ttl / 2
        {
            return bad(format!(
                "announce interval {:?} must be between 1s and {:?}",
                options.announce_every,
                member_ttl / 2
            ));
        }
        if options.retry_after_failure.is_zero() {
            return bad("the retry wait must not be zero".into());
        }
        // A registry lists namespaces for anyone to read: a closed one stays out of it.
        let registry_namespaces = match options.namespace_secret {
            Some(_) => Vec::new(),
            None => options.namespaces.clone(),
        };
        if !options.registries.is_empty() {
            if let Some(n) = registry_namespaces.iter().find(|n| !is_valid_namespace(n)) {
                return bad(format!(
                    "namespace {n:?} is not 1 to {} of A-Z a-z 0-9 . _ - :",
                    record::MAX_NAMESPACE_LEN
                ));
            }
        }

        let (tx, events) = mpsc::channel(EVENT_QUEUE);
        let shared = Arc::new(Shared {
            key,
            ticket: Box::new(ticket),
            record_lifetime: options.record_lifetime,
            last_seq: AtomicU64::new(0),
            events: tx,
        });
        let records = Schedule {
            every: options.republish_every,
            retry: options.retry_after_failure.min(options.republish_every),
        };
        let announces = Schedule {
            every: options.announce_every,
            retry: options.retry_after_failure.min(options.announce_every),
        };
        let mut tasks = Vec::new();
        for url in options.registries {
            let client = RegistryClient::new(vec![url.clone()], options.registry.clone());
            tasks.push(tokio::spawn(keep_at_registry(
                shared.clone(),
                url,
                client,
                registry_namespaces.clone(),
                records,
            )));
        }
        if let Some(dht) = options.dht {
            tasks.push(tokio::spawn(keep_in_dht(
                shared.clone(),
                dht.clone(),
                records,
            )));
            for name in &options.namespaces {
                let ns = Namespace::new(name, options.namespace_secret.as_deref());
                tasks.push(tokio::spawn(keep_announced(
                    shared.clone(),
                    dht.clone(),
                    ns,
                    announces,
                )));
            }
        }
        Ok(RecordPublisher {
            events,
            tasks,
            _shared: shared,
        })
    }

    /// The next event (waits forever when there is nothing to publish). Cancel-safe.
    pub async fn next_event(&mut self) -> PublishEvent {
        match self.events.recv().await {
            Some(event) => event,
            // Cannot happen: `_shared` holds a sender.
            None => std::future::pending().await,
        }
    }
}

/// Keeps the record at one registry.
async fn keep_at_registry(
    shared: Arc<Shared>,
    url: RelayUrl,
    client: RegistryClient,
    namespaces: Vec<String>,
    schedule: Schedule,
) {
    loop {
        let outcome = async {
            let record = shared.record().sign(&shared.key)?;
            let ttl = Some(shared.record_lifetime);
            client.publish(&record, &namespaces, ttl).await?;
            Ok((record.record().seq, None))
        }
        .await;
        let wait = shared.published(Source::Registry(url.clone()), outcome, schedule);
        tokio::time::sleep(wait).await;
    }
}

/// Keeps the record in the DHT (its payload; the BEP 44 item's signature covers it).
async fn keep_in_dht(shared: Arc<Shared>, dht: Arc<DhtDiscovery>, schedule: Schedule) {
    dht.bootstrapped().await;
    loop {
        let outcome = async {
            let record = shared.record();
            let payload = record.encode_payload()?;
            // A seq in milliseconds fits an i64 for the next 290 million years.
            let seq = i64::try_from(record.seq).unwrap_or(i64::MAX);
            let stored = dht.publish(&shared.key, &payload, seq).await?;
            Ok((record.seq, Some(stored)))
        }
        .await;
        let wait = shared.published(Source::Dht, outcome, schedule);
        tokio::time::sleep(wait).await;
    }
}

/// Keeps the node in one namespace's DHT directory.
async fn keep_announced(
    shared: Arc<Shared>,
    dht: Arc<DhtDiscovery>,
    ns: Namespace,
    schedule: Schedule,
) {
    dht.bootstrapped().await;
    loop {
        let namespace = ns.name().to_string();
        let wait = match dht.announce(&ns, &shared.key).await {
            Ok(()) => {
                shared.report(PublishEvent::Announced { namespace });
                schedule.every
            }
            Err(error) => {
                shared.report(PublishEvent::AnnounceFailed { namespace, error });
                schedule.retry
            }
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(options: PublisherOptions) -> Result<RecordPublisher, PublishError> {
        let key = SecretKey::from_bytes([3; 32]);
        let node = key.node_id();
        RecordPublisher::start(key, move || Ticket::new(node), options)
    }

    #[tokio::test]
    async fn bad_options_are_refused_before_anything_is_sent() {
        for options in [
            PublisherOptions {
                republish_every: DEFAULT_RECORD_LIFETIME,
                ..Default::default()
            },
            PublisherOptions {
                announce_every: Duration::from_secs(MEMBER_TTL_SECS),
                ..Default::default()
            },
            PublisherOptions {
                retry_after_failure: Duration::ZERO,
                ..Default::default()
            },
            PublisherOptions {
                registries: vec!["http://127.0.0.1:1".parse().unwrap()],
                namespaces: vec!["no spaces".into()],
                ..Default::default()
            },
        ] {
            assert!(matches!(start(options), Err(PublishError::Config(_))));
        }
        // A closed namespace never reaches a registry, so its name is not held to their rules.
        start(PublisherOptions {
            registries: vec!["http://127.0.0.1:1".parse().unwrap()],
            namespaces: vec!["any name".into()],
            namespace_secret: Some(b"s".to_vec()),
            ..Default::default()
        })
        .unwrap();
    }

    #[test]
    fn seqs_only_grow_and_records_carry_the_ticket() {
        let key = SecretKey::from_bytes([3; 32]);
        let (tx, _rx) = mpsc::channel(1);
        let node = key.node_id();
        let shared = Shared {
            key,
            ticket: Box::new(move || {
                let mut t = Ticket::new(node);
                t.addrs = (1..=20).map(|p| ([192, 0, 2, 1], p).into()).collect();
                t
            }),
            record_lifetime: DEFAULT_RECORD_LIFETIME,
            // As if the clock had stepped back: seqs go on from the highest handed out.
            last_seq: AtomicU64::new(u64::MAX / 2),
            events: tx,
        };
        let (a, b) = (shared.record(), shared.record());
        assert_eq!((a.seq, b.seq), (u64::MAX / 2 + 1, u64::MAX / 2 + 2));
        assert_eq!(a.addrs.len(), record::MAX_ADDRS);
        a.sign(&shared.key).unwrap();
    }
}
