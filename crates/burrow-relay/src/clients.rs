//! Who is connected: authenticated keys and their outbound queues, and per-IP connection
//! counts.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use burrow_proto::identity::NodeId;
use burrow_proto::relay::server_conn::CloseReason;
use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use crate::metrics::DropReason;

/// How many recent senders a client remembers, to tell them when it leaves.
pub(crate) const RECENT_SENDERS: usize = 32;

/// Why a session ends.
#[derive(Clone, Debug)]
pub(crate) enum End {
    /// The server closes it, with a close frame.
    Close(CloseReason),
    /// The client closed it or the connection broke; nothing more to send.
    ClientClosed,
}

impl End {
    pub(crate) fn label(&self) -> &'static str {
        match self {
            End::Close(r) => r.label(),
            End::ClientClosed => "client_closed",
        }
    }
}

/// A one-shot signal that ends a session, with the first reason given.
#[derive(Debug, Default)]
pub(crate) struct Kill {
    reason: OnceLock<End>,
    notify: Notify,
}

impl Kill {
    /// Ends the session; the first reason wins.
    pub(crate) fn fire(&self, end: End) {
        let _ = self.reason.set(end);
        self.notify.notify_waiters();
    }

    pub(crate) fn reason(&self) -> Option<&End> {
        self.reason.get()
    }

    /// Waits until fired.
    pub(crate) async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.reason.get().is_some() {
                return;
            }
            notified.await;
        }
    }
}

/// An authenticated client, as others see it.
#[derive(Debug)]
pub(crate) struct Client {
    pub conn_id: u64,
    pub node_id: NodeId,
    tx: mpsc::Sender<Bytes>,
    queued_bytes: AtomicUsize,
    max_queued_bytes: usize,
    /// Set when it leaves [`Clients`], so cached handles notice.
    gone: AtomicBool,
    pub kill: Kill,
    /// Keys that sent to this client lately (bounded), told PeerGone when it leaves.
    recent_senders: Mutex<VecDeque<NodeId>>,
}

impl Client {
    pub(crate) fn new(
        conn_id: u64,
        node_id: NodeId,
        tx: mpsc::Sender<Bytes>,
        max_queued_bytes: usize,
    ) -> Self {
        Client {
            conn_id,
            node_id,
            tx,
            queued_bytes: AtomicUsize::new(0),
            max_queued_bytes,
            gone: AtomicBool::new(false),
            kill: Kill::default(),
            recent_senders: Mutex::new(VecDeque::new()),
        }
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }

    /// Queues a frame for this client without waiting; fails when its queue is full.
    pub(crate) fn enqueue(&self, frame: Bytes) -> Result<(), DropReason> {
        let len = frame.len();
        let before = self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        // One frame always fits, so a large frame cannot be stuck forever.
        if before > 0 && before + len > self.max_queued_bytes {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            return Err(DropReason::QueueFull);
        }
        match self.tx.try_send(frame) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                Err(DropReason::QueueFull)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                Err(DropReason::NoSuchPeer)
            }
        }
    }

    /// The writer took `len` bytes off the queue.
    pub(crate) fn dequeued(&self, len: usize) {
        self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
    }

    pub(crate) fn note_sender(&self, sender: NodeId) {
        let mut recent = self
            .recent_senders
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(i) = recent.iter().position(|n| *n == sender) {
            recent.remove(i);
        } else if recent.len() >= RECENT_SENDERS {
            recent.pop_front();
        }
        recent.push_back(sender);
    }

    pub(crate) fn take_recent_senders(&self) -> VecDeque<NodeId> {
        std::mem::take(
            &mut *self
                .recent_senders
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }
}

/// Authenticated clients by key.
#[derive(Debug, Default)]
pub(crate) struct Clients {
    by_key: RwLock<HashMap<NodeId, Arc<Client>>>,
}

impl Clients {
    pub(crate) fn get(&self, node: &NodeId) -> Option<Arc<Client>> {
        self.by_key
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .cloned()
    }

    /// Adds a client; returns the one it replaces, which the caller closes.
    pub(crate) fn insert(&self, client: Arc<Client>) -> Option<Arc<Client>> {
        let old = self
            .by_key
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(client.node_id, client);
        if let Some(old) = &old {
            old.gone.store(true, Ordering::Relaxed);
        }
        old
    }

    /// Removes the client if it is still the current one for its key.
    pub(crate) fn remove(&self, client: &Client) -> bool {
        let mut map = self.by_key.write().unwrap_or_else(|e| e.into_inner());
        client.gone.store(true, Ordering::Relaxed);
        match map.get(&client.node_id) {
            Some(c) if c.conn_id == client.conn_id => {
                map.remove(&client.node_id);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.by_key.read().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Counts TCP connections per source: an IPv4 address or an IPv6 /64, which the caller
/// gives ([`burrow_proto::rate::source_prefix`]).
#[derive(Debug)]
pub(crate) struct IpLimiter {
    max: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in the per-IP count; released on drop.
#[derive(Debug)]
pub(crate) struct IpSlot {
    limiter: Arc<IpLimiter>,
    ip: IpAddr,
}

impl IpLimiter {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(IpLimiter {
            max,
            counts: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            limiter: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self
            .limiter
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burrow_proto::identity::SecretKey;

    fn node(n: u8) -> NodeId {
        SecretKey::from_bytes([n; 32]).node_id()
    }

    #[test]
    fn ip_slots_are_counted_and_released() {
        let l = IpLimiter::new(2);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let a = l.acquire(ip).unwrap();
        let _b = l.acquire(ip).unwrap();
        assert!(l.acquire(ip).is_none());
        assert!(l.acquire([10, 0, 0, 2].into()).is_some());
        drop(a);
        assert!(l.acquire(ip).is_some());
    }

    #[test]
    fn recent_senders_are_bounded_and_deduplicated() {
        let (tx, _rx) = mpsc::channel(1);
        let c = Client::new(1, node(1), tx, 100);
        // Fewer senders than fit, each many times: every one is listed once.
        for _ in 0..5 {
            for i in 0..10 {
                c.note_sender(node(i));
            }
        }
        let once: VecDeque<NodeId> = (0..10).map(node).collect();
        assert_eq!(c.take_recent_senders(), once);
        assert!(c.take_recent_senders().is_empty());
        // More than fit: the least recent go first, and a sender seen again is recent again.
        for i in 0..40 {
            c.note_sender(node(i));
        }
        c.note_sender(node(8));
        c.note_sender(node(40));
        let recent = c.take_recent_senders();
        let kept: VecDeque<NodeId> = (10..40).chain([8, 40]).map(node).collect();
        assert_eq!(recent, kept);
        assert_eq!(recent.len(), RECENT_SENDERS);
    }

    #[test]
    fn queue_bounds_frames_and_bytes() {
        let (tx, mut rx) = mpsc::channel(3);
        let c = Client::new(1, node(1), tx, 100);
        assert!(
            c.enqueue(Bytes::from(vec![0; 150])).is_ok(),
            "one frame always fits"
        );
        assert_eq!(
            c.enqueue(Bytes::from(vec![0; 10])),
            Err(DropReason::QueueFull)
        );
        let f = rx.try_recv().unwrap();
        c.dequeued(f.len());
        for _ in 0..3 {
            c.enqueue(Bytes::from(vec![0; 10])).unwrap();
        }
        assert_eq!(
            c.enqueue(Bytes::from(vec![0; 10])),
            Err(DropReason::QueueFull)
        );
        drop(rx);
        let (tx, rx) = mpsc::channel(3);
        drop(rx);
        let c = Client::new(2, node(2), tx, 100);
        assert_eq!(c.enqueue(Bytes::new()), Err(DropReason::NoSuchPeer));
    }

    #[test]
    fn only_the_current_connection_removes_its_key() {
        let r = Clients::default();
        let (tx, _rx) = mpsc::channel(1);
        let old = Arc::new(Client::new(1, node(1), tx.clone(), 10));
        let new = Arc::new(Client::new(2, node(1), tx, 10));
        assert!(r.insert(old.clone()).is_none());
        assert_eq!(r.insert(new.clone()).unwrap().conn_id, 1);
        assert!(old.is_gone());
        assert!(!r.remove(&old));
        assert_eq!(r.len(), 1);
        assert!(r.remove(&new));
        assert_eq!(r.len(), 0);
    }
}
