//! What a node knows of each member beyond the roster: the NAT the member told it (in
//! [`MSG_INFO`](super::MSG_INFO)) and when its last connection ended. In memory only: a restarted node has seen
//! nobody yet.

use std::collections::HashMap;
use std::sync::Mutex;

use burrow_proto::mesh::info::NodeInfo;

use crate::endpoint::NatHint;
use crate::NodeId;

/// One member's entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    /// What it last told of its NAT.
    pub(crate) nat: Option<NatHint>,
    /// When its last connection ended, Unix seconds.
    pub(crate) last_seen: Option<u64>,
}

/// Every member heard of since this node started. Only members that proved membership get an
/// entry, so it grows no larger than the roster has been.
#[derive(Debug, Default)]
pub(crate) struct Presence {
    seen: Mutex<HashMap<NodeId, Seen>>,
}

impl Presence {
    /// `node` sent the body of an [`MSG_INFO`](super::MSG_INFO); one that does not read is ignored.
    pub(crate) fn told(&self, node: NodeId, body: &[u8]) {
        match NodeInfo::decode(body) {
            Ok(info) => self.with(node, |s| s.nat = info.nat),
            Err(e) => tracing::debug!(peer = %node.short(), "info: {e}"),
        }
    }

    /// `node`'s last connection ended now.
    pub(crate) fn gone(&self, node: NodeId) {
        self.with(node, |s| s.last_seen = Some(super::now()));
    }

    /// What is known of `node`.
    pub(crate) fn get(&self, node: &NodeId) -> Seen {
        self.lock().get(node).copied().unwrap_or_default()
    }

    fn with(&self, node: NodeId, f: impl FnOnce(&mut Seen)) {
        f(self.lock().entry(node).or_default());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Seen>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The body of an [`MSG_INFO`](super::MSG_INFO) telling that our NAT is `nat`.
pub(crate) fn info_body(nat: Option<NatHint>) -> Vec<u8> {
    NodeInfo { nat }.encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_is_known_by_what_it_told_and_when_it_went() {
        let p = Presence::default();
        let node = crate::SecretKey::from_bytes([7; 32]).node_id();
        assert_eq!(p.get(&node), Seen::default());
        p.told(node, &info_body(Some(NatHint::Hard)));
        assert_eq!(p.get(&node).nat, Some(NatHint::Hard));
        // A body that does not read changes nothing.
        p.told(node, &[]);
        p.told(node, &[1; 10_000]);
        assert_eq!(p.get(&node).nat, Some(NatHint::Hard));
        let before = super::super::now();
        p.gone(node);
        let seen = p.get(&node);
        assert!(seen.last_seen.is_some_and(|t| t >= before), "{seen:?}");
        assert_eq!(seen.nat, Some(NatHint::Hard), "kept once it is gone");
    }
}
