//! The members of a namespace, as the bootstrap registries and the DHT's directory list
//! them: one row per node, with who listed it and its record (from a registry's listing, or
//! looked up in the DHT for nodes only the directory names).

use std::collections::BTreeMap;
use std::time::Duration;

use burrow_proto::record::NodeRecord;
use burrow_proto::relay::RelayUrl;
use burrow_proto::ticket::Ticket;

use super::resolve_in_dht;
use crate::dht::{DhtDiscovery, Namespace};
use crate::registry_client::{RegistryClient, RegistryClientOptions, RegistryError};
use crate::NodeId;

/// Most pages read from the registries (each up to [`PAGE_SIZE`] records).
pub const MAX_PAGES: usize = 100;
/// Records asked for per page.
pub const PAGE_SIZE: usize = 100;
/// Records of directory-only members looked up in the DHT at once...
pub const PARALLEL_RESOLVES: usize = 8;
/// ...each for at most this long before its row goes without a record.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a member was listed, or its record found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Listing {
    /// A bootstrap registry's listing of the namespace.
    Registry,
    /// The DHT's directory of the namespace (and the node's record there).
    Dht,
}

impl Listing {
    /// `registry` or `dht`, as reports name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Listing::Registry => "registry",
            Listing::Dht => "dht",
        }
    }
}

/// One member of a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The node.
    pub node_id: NodeId,
    /// Who listed it, registries first.
    pub listed_by: Vec<Listing>,
    /// Its signed record's contents, and where the record came from; `None` when no record
    /// was found (a directory entry whose record expired, say).
    pub record: Option<(Listing, NodeRecord)>,
}

impl Member {
    /// A ticket from the member's record.
    pub fn ticket(&self) -> Option<Ticket> {
        let (_, r) = self.record.as_ref()?;
        Some(Ticket {
            node_id: self.node_id,
            relays: r.relays.clone(),
            addrs: r.addrs.clone(),
        })
    }
}

/// What [`list_members`] found.
#[derive(Debug)]
pub struct Members {
    /// One row per node, in NodeId order.
    pub members: Vec<Member>,
    /// Why the registries could not be read, when the DHT was there to answer instead.
    pub registry_error: Option<RegistryError>,
}

/// Why a namespace could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum MembersError {
    /// Neither registries nor a DHT to ask.
    #[error("nothing to ask: no registry and no DHT")]
    NoSource,
    /// The registries failed, and there was no DHT to fall back on.
    #[error("listing the namespace at the registries")]
    Registries(#[source] RegistryError),
}

/// The members of `namespace` (closed by `secret`, if given) at `registries` and in `dht`'s
/// directory. A closed namespace is never asked of a registry, whose listings are public.
pub async fn list_members(
    namespace: &str,
    secret: Option<&[u8]>,
    registries: &[RelayUrl],
    dht: Option<&DhtDiscovery>,
) -> Result<Members, MembersError> {
    let registries = if secret.is_some() {
        &[][..]
    } else {
        registries
    };
    if registries.is_empty() && dht.is_none() {
        return Err(MembersError::NoSource);
    }
    let ns = Namespace::new(namespace, secret);
    let (from_registries, from_dht) = tokio::join!(
        async {
            if registries.is_empty() {
                None
            } else {
                Some(list_registries(namespace, registries.to_vec()).await)
            }
        },
        async {
            match dht {
                Some(d) => Some(d.members(&ns).await),
                None => None,
            }
        }
    );
    let mut rows: BTreeMap<NodeId, Member> = BTreeMap::new();
    let mut registry_error = None;
    match from_registries {
        Some(Ok(records)) => {
            for r in records {
                let record = r.record().clone();
                let row = row(&mut rows, record.node_id);
                row.listed_by.push(Listing::Registry);
                row.record = Some((Listing::Registry, record));
            }
        }
        // With the DHT to fall back on, a registry failure is not the end.
        Some(Err(e)) if dht.is_some() => registry_error = Some(e),
        Some(Err(e)) => return Err(MembersError::Registries(e)),
        None => {}
    }
    if let (Some(members), Some(dht)) = (from_dht, dht) {
        for m in &members {
            row(&mut rows, *m).listed_by.push(Listing::Dht);
        }
        // The directory holds NodeIds only: the addresses of nodes no registry listed come
        // from their records in the DHT.
        let missing: Vec<NodeId> = members
            .into_iter()
            .filter(|m| rows[m].record.is_none())
            .collect();
        let found = resolve_in_dht(dht, &missing, PARALLEL_RESOLVES, RESOLVE_TIMEOUT).await;
        for (node, record) in missing.iter().zip(found) {
            if let Some(record) = record {
                row(&mut rows, *node).record = Some((Listing::Dht, record));
            }
        }
    }
    Ok(Members {
        members: rows.into_values().collect(),
        registry_error,
    })
}

fn row(rows: &mut BTreeMap<NodeId, Member>, node_id: NodeId) -> &mut Member {
    rows.entry(node_id).or_insert_with(|| Member {
        node_id,
        listed_by: Vec::new(),
        record: None,
    })
}

/// Every record the registries list under `namespace`, page by page.
async fn list_registries(
    namespace: &str,
    registries: Vec<RelayUrl>,
) -> Result<Vec<burrow_proto::record::SignedRecord>, RegistryError> {
    let client = RegistryClient::new(registries, RegistryClientOptions::default());
    let mut members = Vec::new();
    let mut after = None;
    for _ in 0..MAX_PAGES {
        let page = client.list(namespace, after.as_ref(), PAGE_SIZE).await?;
        members.extend(page.records);
        match page.next_cursor {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    Ok(members)
}
