//! How members find each other: the relays' registries, the Mainline DHT (when bootstrap nodes
//! are given) and the LAN by mDNS (on by default). Every path only says where to dial: the
//! connection is then admitted like any other ([`super::MESH_ALPN`], both proofs), so none of
//! them lets a non-member in.
//!
//! - **Registries and the DHT** hold the record each member publishes, signed by its node key
//!   and naming its relays only, never its direct addresses.
//! - **mDNS**: a member announces its direct addresses under its LAN tag
//!   ([`MeshId::lan_tag`], [`crate::mdns::TAG_SERVICE_TYPE`]), never its node id, and finds
//!   the others by computing theirs from the roster. Someone who knows a node's id but not the
//!   mesh id cannot tell which announcement is the node's. An announcement is an unsigned hint:
//!   it adds addresses to a dial, never a relay.

use std::sync::Arc;
use std::time::Duration;

use burrow_proto::mesh::id::MeshId;
use burrow_proto::relay::RelayUrl;

use super::node::NodeOptions;
use super::state::MeshState;
use crate::dht::{DhtDiscovery, DhtError};
use crate::endpoint::Endpoint;
use crate::lookup::{Found, Lookup, LookupError, HINT_GRACE};
use crate::mdns::{LanPeer, LanPeers, LanTag, MdnsConfig};
use crate::publisher::{PublishError, PublisherOptions, RecordPublisher};
use crate::ticket::Ticket;
use crate::NodeId;

/// How long a registry or DHT lookup of a member may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a mesh node looks for members, and where it makes itself found.
#[derive(Debug)]
pub(crate) struct Discovery {
    mesh_id: MeshId,
    relays: Vec<RelayUrl>,
    lookup: Lookup,
    dht: Option<Arc<DhtDiscovery>>,
    lan: Option<LanPeers<LanTag>>,
}

impl Discovery {
    /// Joins the DHT if `opts` say so, and announces `endpoint` on the LAN under its tag unless
    /// mDNS is off (a failure there is a warning: mDNS is a convenience).
    pub(crate) async fn start(
        state: &MeshState,
        endpoint: &Endpoint,
        opts: &NodeOptions,
    ) -> Result<Discovery, DhtError> {
        let dht = match &opts.dht {
            Some(config) => Some(Arc::new(DhtDiscovery::start(config.clone()).await?)),
            None => None,
        };
        let lan = opts
            .mdns
            .then(|| {
                announce(
                    state.mesh_id,
                    endpoint,
                    &MdnsConfig::for_bind(opts.bind_v4.ip()),
                )
            })
            .flatten();
        Ok(Discovery {
            mesh_id: state.mesh_id,
            relays: state.relays.clone(),
            lookup: Lookup::new(state.relays.clone(), dht.clone(), LOOKUP_TIMEOUT),
            dht,
            lan,
        })
    }

    /// A publisher of `state`'s record as `endpoint` reaches it (relays only), to the
    /// registries and the DHT, listed under `namespaces`.
    pub(crate) fn publisher(
        &self,
        state: &MeshState,
        endpoint: &Endpoint,
        namespaces: Vec<String>,
    ) -> Result<RecordPublisher, PublishError> {
        let ep = endpoint.clone();
        RecordPublisher::start(
            state.node_key.clone(),
            move || relays_only(ep.ticket()),
            PublisherOptions {
                registries: state.relays.clone(),
                dht: self.dht.clone(),
                namespaces,
                // A record refused as stale (another publisher of ours just wrote) is soon
                // written again, with a higher sequence number.
                retry_after_failure: Duration::from_secs(1),
                ..Default::default()
            },
        )
    }

    /// Member `node` as seen on the LAN now.
    pub(crate) fn on_lan(&self, node: &NodeId) -> Option<LanPeer> {
        self.lan.as_ref()?.get(&LanTag(self.mesh_id.lan_tag(node)))
    }

    /// Resolves when the members seen on the LAN change (never without mDNS).
    pub(crate) async fn lan_changed(&self) {
        match &self.lan {
            Some(lan) => lan.changed().await,
            None => std::future::pending().await,
        }
    }

    /// Where to dial member `node`: its record at the registries or in the DHT, with the
    /// addresses it announces on the LAN. A member seen on the LAN is not kept waiting for the
    /// slower sources: they get [`HINT_GRACE`], and without them the dial goes to its LAN
    /// addresses and this node's relays (a mesh's members share its relays).
    pub(crate) async fn find(&self, node: NodeId) -> Result<Ticket, LookupError> {
        let hint = self.on_lan(&node).and_then(|p| Found::from_lan(node, p));
        let signed = match hint {
            Some(_) => tokio::time::timeout(HINT_GRACE, self.lookup.resolve(&node))
                .await
                .unwrap_or(Err(LookupError::NotFound(node))),
            None => self.lookup.resolve(&node).await,
        };
        match (signed, hint) {
            (Ok(found), Some(hint)) => Ok(found.merged(hint).ticket),
            (Ok(found), None) => Ok(found.ticket),
            (Err(_), Some(hint)) => Ok(Ticket {
                relays: self.relays.clone(),
                ..hint.ticket
            }),
            (Err(e), None) => Err(e),
        }
    }
}

/// Starts mDNS on `config`'s interfaces and announces `endpoint`'s direct addresses under its
/// LAN tag in `mesh`.
fn announce(mesh: MeshId, endpoint: &Endpoint, config: &MdnsConfig) -> Option<LanPeers<LanTag>> {
    let start = || -> Result<LanPeers<LanTag>, Box<dyn std::error::Error>> {
        let lan = LanPeers::start(config)?;
        let tag = LanTag(mesh.lan_tag(&endpoint.node_id()));
        lan.announce(
            tag,
            endpoint.local_addr()?.port(),
            &endpoint.candidates(),
            None,
        )?;
        Ok(lan)
    };
    start()
        .map_err(|e| tracing::warn!("not announced on the LAN: {e}"))
        .ok()
}

/// `ticket` without its direct addresses: what a member tells the world (registries, the DHT,
/// invites).
pub(crate) fn relays_only(mut ticket: Ticket) -> Ticket {
    ticket.addrs.clear();
    ticket
}
