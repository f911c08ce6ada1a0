//! Finding how to reach a node by its key alone: bootstrap registries and the Mainline DHT
//! behind one call, the first verified answer winning.
//!
//! Every answer is a record signed by the node's own key (registries) or a BEP 44 item signed
//! by it (DHT), so a source can withhold a node but never misdirect to another address set.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use burrow_proto::record::NodeRecord;
use burrow_proto::relay::RelayUrl;
use burrow_proto::ticket::Ticket;
use futures_util::StreamExt;
use tokio::task::JoinSet;

use crate::dht::DhtDiscovery;
use crate::registry_client::{RegistryClient, RegistryClientOptions};
use crate::NodeId;

/// Where to look.
#[derive(Clone)]
pub struct Discovery {
    registries: Option<RegistryClient>,
    dht: Option<Arc<DhtDiscovery>>,
    timeout: Duration,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field(
                "registries",
                &self.registries.as_ref().map(|r| r.registries().to_vec()),
            )
            .field("dht", &self.dht.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A node's addressing, and who told us.
#[derive(Clone, Debug)]
pub struct Found {
    /// Relays and direct addresses, ready for [`crate::endpoint::Endpoint::connect`].
    pub ticket: Ticket,
    /// `registry` or `dht`.
    pub source: &'static str,
    /// The record's sequence number.
    pub seq: u64,
}

/// Why a node was not found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// No registry and no DHT to ask.
    #[error("no discovery source configured (give a registry or a DHT)")]
    NoSources,
    /// Every source answered without a valid, unexpired record, or timed out.
    #[error("no source knows {0}")]
    NotFound(NodeId),
}

impl Discovery {
    /// Registries (relay URLs) and an optional running DHT node; each lookup gives up after
    /// `timeout`.
    pub fn new(
        registries: Vec<RelayUrl>,
        dht: Option<Arc<DhtDiscovery>>,
        timeout: Duration,
    ) -> Discovery {
        let registries = (!registries.is_empty()).then(|| {
            RegistryClient::new(
                registries,
                RegistryClientOptions {
                    timeout,
                    ..Default::default()
                },
            )
        });
        Discovery {
            registries,
            dht,
            timeout,
        }
    }

    /// The first verified answer from any source.
    pub async fn resolve(&self, node: &NodeId) -> Result<Found, DiscoveryError> {
        if self.registries.is_none() && self.dht.is_none() {
            return Err(DiscoveryError::NoSources);
        }
        let node = *node;
        let mut asks = JoinSet::new();
        if let Some(reg) = self.registries.clone() {
            asks.spawn(async move {
                let rec = reg.lookup(&node).await.ok()?;
                Some((rec.record().clone(), "registry"))
            });
        }
        if let Some(dht) = self.dht.clone() {
            asks.spawn(async move {
                let item = dht.resolve(&node).await?;
                let rec = NodeRecord::decode_payload_for(&item.value, &node).ok()?;
                Some((rec, "dht"))
            });
        }
        let now = unix_now();
        let first = tokio::time::timeout(self.timeout, async {
            while let Some(r) = asks.join_next().await {
                if let Ok(Some((rec, source))) = r {
                    if !rec.is_expired(now) {
                        return Some((rec, source));
                    }
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        let (rec, source) = first.ok_or(DiscoveryError::NotFound(node))?;
        Ok(Found {
            ticket: Ticket {
                node_id: node,
                relays: rec.relays,
                addrs: rec.addrs,
            },
            source,
            seq: rec.seq,
        })
    }
}

/// The records `nodes` keep in the DHT, in the order of `nodes`: `None` where the DHT has no
/// valid, unexpired record or the lookup took longer than `timeout`. At most `parallel`
/// lookups run at once, since each one's answers arrive as a burst on the node's one socket.
pub async fn resolve_in_dht(
    dht: &DhtDiscovery,
    nodes: &[NodeId],
    parallel: usize,
    timeout: Duration,
) -> Vec<Option<NodeRecord>> {
    let now = unix_now();
    futures_util::stream::iter(nodes)
        .map(|node| async move {
            let item = tokio::time::timeout(timeout, dht.resolve(node))
                .await
                .ok()??;
            NodeRecord::decode_payload_for(&item.value, node)
                .ok()
                .filter(|r| !r.is_expired(now))
        })
        .buffered(parallel.max(1))
        .collect()
        .await
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}
