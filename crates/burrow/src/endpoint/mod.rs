//! [`Endpoint`]: connect to a peer by its key. A connection works at once through the relay;
//! hole punching runs beside it, and traffic moves to a direct path as soon as one is proven
//! (and back to the relay if it dies) under the same QUIC connection, so streams carry on.
//! An endpoint without relays reaches peers at their direct addresses alone (a LAN, a public
//! host): it pings at once, and accepts a new peer whose first ping is authentic.
//!
//! One UDP socket per address family carries QUIC, STUN and the disco probes, so the public
//! address STUN learns is the one peers punch to.

pub mod admission;
pub(crate) mod driver;
mod hops;
mod peers;
pub(crate) mod socket;
pub(crate) mod tls;
mod unclaimed;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use burrow_proto::endpoint::{EndpointConfig, EndpointCore};
use burrow_proto::holepunch::PunchConfig;
use burrow_proto::relay::RelayUrl;
use burrow_proto::ticket::Ticket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::relay_client::{RelayClient, RelayClientOptions};
use crate::{NodeId, SecretKey};
use driver::{Command, Driver};
use peers::PeerMap;
use socket::{MagicSocket, Udp, CONTROL_QUEUE};

pub use admission::{
    Admission, AdmissionFuture, Admitted, AllowKeys, Credentials, ExchangeProofs, Refusal, Side,
};
pub use burrow_proto::disco::NatHint;
pub use burrow_proto::holepunch::DirectPath;
pub use tls::TlsError;

/// QUIC packets from the relay waiting for quinn.
const RELAYED_QUEUE: usize = 1024;
/// Incoming handshakes under way at once; more are refused until one finishes.
const MAX_HANDSHAKES: usize = 128;
/// Of those, from one peer address (one key through the relay, or one direct source) at once,
/// so that one stranger cannot take every slot.
const MAX_HANDSHAKES_PER_PEER: usize = 4;
/// An incoming handshake that takes longer is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections handshaken and waiting for [`Endpoint::accept`].
const ACCEPT_QUEUE: usize = 64;

/// How long [`Endpoint::close`] waits for connections to drain. Their close frames leave at
/// once; the full draining period (three probe timeouts, a second or more before the round trip
/// is known) would only make a short-lived endpoint, a join's say, slow to exit.
const CLOSE_WAIT: Duration = Duration::from_millis(250);
/// Longest a dial that only the relay can carry waits for the endpoint's first relay
/// connection.
const FIRST_RELAY_WAIT: Duration = Duration::from_secs(3);

/// How long after [`Endpoint::revoke`] the peer becomes a stranger: time for the close frames
/// of its connections to leave.
pub const REVOKE_GRACE: Duration = Duration::from_millis(100);

/// How to build an [`Endpoint`].
#[derive(Clone, Debug)]
pub struct EndpointOptions {
    /// The IPv4 socket's address.
    pub bind_v4: SocketAddr,
    /// The IPv6 socket's address; `None`, or a failure to bind it, means IPv4 only.
    pub bind_v6: Option<SocketAddr>,
    /// Relays to stay connected to; the home relay carries relayed traffic.
    pub relays: Vec<RelayUrl>,
    /// STUN servers that tell us our public address (the relay's co-hosted STUN, typically).
    pub stun_servers: Vec<SocketAddr>,
    /// Application protocols accepted by [`Endpoint::accept`].
    pub alpns: Vec<Vec<u8>>,
    /// Hole punching timings.
    pub punch: PunchConfig,
    /// The relay client's options.
    pub relay: RelayClientOptions,
    /// Who may stay connected, checked on every new connection both ways (`None`: any key
    /// that QUIC proves).
    pub admission: Option<Arc<dyn Admission>>,
    /// Answer burrow.js pages that dial us ([`Endpoint::accept_page`]): needs a relay and the
    /// `webrtc` feature (without it, [`Endpoint::bind`] refuses).
    pub webrtc: bool,
}

impl Default for EndpointOptions {
    fn default() -> Self {
        EndpointOptions {
            bind_v4: "0.0.0.0:0".parse().expect("valid"),
            bind_v6: Some("[::]:0".parse().expect("valid")),
            relays: Vec::new(),
            stun_servers: Vec::new(),
            alpns: Vec::new(),
            punch: PunchConfig::default(),
            relay: RelayClientOptions::default(),
            admission: None,
            webrtc: false,
        }
    }
}

/// QUIC keep-alive while a connection idles, so it stays up for as long as both ends hold
/// it; well inside the idle timeout.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// A connection that hears nothing for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(45);

/// The QUIC transport settings of every endpoint connection, both sides (keep-alive, idle
/// timeout): for a plain quinn endpoint that should behave the same, such as a benchmark's.
pub fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(IDLE_TIMEOUT).expect("45 s is a valid idle timeout"),
    ));
    Arc::new(t)
}

/// Why an endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A UDP socket could not be bound.
    #[error("binding UDP {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// TLS could not be set up.
    #[error("TLS setup")]
    Tls(#[source] TlsError),
    /// quinn refused the socket.
    #[error("QUIC endpoint")]
    Quic(#[source] std::io::Error),
    /// Pages were asked for, and this build has no WebRTC.
    #[error("answering pages needs burrow built with the `webrtc` feature")]
    NoWebRtc,
    /// Pages were asked for, and no relay was given: pages reach a node through its relay.
    #[error("answering pages needs a relay")]
    NoRelayForPages,
    /// The DTLS certificate for WebRTC could not be made.
    #[cfg(feature = "webrtc")]
    #[error("making the DTLS certificate")]
    Certificate(#[source] rcgen::Error),
}

/// Why a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The peer cannot be reached: no relay in common and no direct address.
    #[error("no way to reach {0}: the ticket has no relay this endpoint uses and no address")]
    NoRoute(String),
    /// No lookup source knows the node.
    #[error(transparent)]
    NotFound(#[from] crate::lookup::LookupError),
    /// TLS could not be set up.
    #[error("TLS setup")]
    Tls(#[source] TlsError),
    /// QUIC refused to start the connection.
    #[error("QUIC: {0}")]
    Start(#[from] quinn::ConnectError),
    /// The handshake failed, or the connection was lost.
    #[error("QUIC: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// The peer's admission refused us.
    #[error("refused by the peer: {0}")]
    RefusedByPeer(Refusal),
    /// Our admission refused the peer.
    #[error("refused the peer: {0}")]
    Refused(Refusal),
}

/// How a peer is reached right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathInfo {
    /// Straight over UDP.
    Direct(DirectPath),
    /// Through the home relay (its URL, if one is connected).
    Relay(Option<RelayUrl>),
}

/// A peer of an endpoint and how it is reached, from [`Endpoint::peers`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// Its key.
    pub node: NodeId,
    /// How it is reached now.
    pub path: PathInfo,
    /// When a QUIC packet last went to or came from it, on any path.
    pub last_activity: Option<std::time::Instant>,
}

/// A QUIC connection to a peer whose key the handshake proved.
#[derive(Clone, Debug)]
pub struct Connection {
    /// The QUIC connection: streams and datagrams.
    pub quic: quinn::Connection,
    /// The peer's key.
    pub remote: NodeId,
    /// When its handshake completed.
    pub established: std::time::Instant,
    /// Which end dialled: we ([`Side::Dialler`]) or the peer.
    pub side: Side,
}

impl Connection {
    /// The application protocol the handshake chose.
    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.quic
            .handshake_data()?
            .downcast::<quinn::crypto::rustls::HandshakeData>()
            .ok()?
            .protocol
    }
}

struct Inner {
    secret: SecretKey,
    quic: quinn::Endpoint,
    socket: Arc<MagicSocket>,
    peers: Arc<PeerMap>,
    relay: Option<RelayClient>,
    commands: mpsc::Sender<Command>,
    accepted: tokio::sync::Mutex<mpsc::Receiver<Connection>>,
    candidates: watch::Receiver<Vec<SocketAddr>>,
    path_changes: watch::Receiver<u64>,
    nat: watch::Receiver<Option<NatHint>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    #[cfg(feature = "webrtc")]
    pages: Option<crate::pages::Pages>,
    has_stun: bool,
    admission: Option<Arc<dyn Admission>>,
}

/// A node on the network: its key, its sockets, its relays, and its connections.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("node_id", &self.node_id())
            .field("socket", &self.inner.socket)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Binds the sockets and starts connecting to the relays. Must be called within a Tokio
    /// runtime.
    pub async fn bind(secret: SecretKey, opts: EndpointOptions) -> Result<Endpoint, BindError> {
        let bind =
            |addr: SocketAddr| Udp::bind(addr).map_err(|source| BindError::Bind { addr, source });
        let v4 = bind(opts.bind_v4)?;
        // IPv6 is optional: many hosts and every lab namespace lack it.
        let v6 = opts.bind_v6.and_then(|a| Udp::bind(a).ok());
        let peers = Arc::new(PeerMap::new());
        let relay = (!opts.relays.is_empty())
            .then(|| RelayClient::new(opts.relays.clone(), secret.clone(), opts.relay.clone()));
        let (relayed_tx, relayed_rx) = mpsc::channel(RELAYED_QUEUE);
        let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let socket = Arc::new(MagicSocket {
            v4,
            v6,
            peers: peers.clone(),
            relay: relay.clone(),
            relayed: Mutex::new(relayed_rx),
            unclaimed: Mutex::default(),
            closing: Default::default(),
            control: control_tx.clone(),
            #[cfg(feature = "webrtc")]
            webrtc: Default::default(),
        });
        let server = tls::server_config(&secret, &opts.alpns).map_err(BindError::Tls)?;
        let mut config = quinn::EndpointConfig::default();
        // Disco packets are told from QUIC by the fixed bit, so QUIC must always set it.
        config.grease_quic_bit(false);
        let quic = quinn::Endpoint::new_with_abstract_socket(
            config,
            Some(server),
            socket.clone(),
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(BindError::Quic)?;

        let (commands_tx, commands_rx) = mpsc::channel(64);
        let (disco_tx, disco_rx) = mpsc::channel(CONTROL_QUEUE);
        let candidates = watch::Sender::new(driver::local_candidates(&socket));
        let path_changes = watch::Sender::new(0);
        let nat = watch::Sender::new(None);
        let mut tasks = Vec::new();
        #[cfg(feature = "webrtc")]
        let pages = match (&relay, opts.webrtc) {
            (Some(relay), true) => {
                let (pages, task) = crate::pages::spawn(
                    secret.clone(),
                    socket.clone(),
                    relay.clone(),
                    candidates.subscribe(),
                )
                .map_err(BindError::Certificate)?;
                let _ = socket.webrtc.set(pages.udp.clone());
                tasks.push(task);
                Some(pages)
            }
            (None, true) => return Err(BindError::NoRelayForPages),
            _ => None,
        };
        #[cfg(not(feature = "webrtc"))]
        if opts.webrtc {
            return Err(BindError::NoWebRtc);
        }
        if let Some(relay) = &relay {
            tasks.push(tokio::spawn(driver::relay_reader(
                relay.clone(),
                peers.clone(),
                relayed_tx.clone(),
                disco_tx,
                #[cfg(feature = "webrtc")]
                pages.as_ref().map(|p| p.relayed.clone()),
            )));
        }
        let core = EndpointCore::new(
            secret.clone(),
            EndpointConfig {
                punch: opts.punch.clone(),
                relay: relay.is_some(),
                stun_servers: opts.stun_servers.clone(),
                ..EndpointConfig::default()
            },
            rand::random(),
        );
        let driver = Driver {
            core,
            socket: socket.clone(),
            peers: peers.clone(),
            relay: relay.clone(),
            hops_server: opts.stun_servers.iter().find(|s| s.is_ipv4()).copied(),
            control: control_rx,
            control_tx,
            quic_tx: relayed_tx,
            relayed_disco: disco_rx,
            commands: commands_rx,
            candidates: candidates.clone(),
            path_changes: path_changes.clone(),
            nat: nat.clone(),
            spare_readers: Default::default(),
        };
        tasks.push(tokio::spawn(driver.run()));
        let (accepted_tx, accepted) = mpsc::channel(ACCEPT_QUEUE);
        tasks.push(tokio::spawn(handshake_incoming(
            quic.clone(),
            peers.clone(),
            commands_tx.clone(),
            accepted_tx,
            opts.admission.clone(),
        )));
        Ok(Endpoint {
            inner: Arc::new(Inner {
                secret,
                quic,
                socket,
                peers,
                relay,
                commands: commands_tx,
                accepted: tokio::sync::Mutex::new(accepted),
                candidates: candidates.subscribe(),
                path_changes: path_changes.subscribe(),
                nat: nat.subscribe(),
                tasks: Mutex::new(tasks),
                #[cfg(feature = "webrtc")]
                pages,
                has_stun: !opts.stun_servers.is_empty(),
                admission: opts.admission,
            }),
        })
    }

    /// The next burrow.js page (or other burrow.js peer) that dialled us, once its offer is
    /// answered; `None` when the endpoint was bound without [`EndpointOptions::webrtc`] or
    /// has closed.
    #[cfg(feature = "webrtc")]
    pub async fn accept_page(&self) -> Option<crate::pages::PageConnection> {
        self.inner
            .pages
            .as_ref()?
            .accepted
            .lock()
            .await
            .recv()
            .await
    }

    /// Dials the burrow.js page (or other burrow.js peer) of `node` through the relay: a
    /// signed offer with a WebRTC offer, sent again each second until the answer comes; the
    /// connection is usable at once, and moves to WebRTC once ICE is up. Fails after
    /// [`crate::pages::DIAL_TIMEOUT`] without an answer, or when the endpoint was bound without
    /// [`EndpointOptions::webrtc`].
    #[cfg(feature = "webrtc")]
    pub async fn dial_page(
        &self,
        node: NodeId,
    ) -> Result<crate::pages::PageConnection, crate::pages::PageError> {
        use crate::pages::{Command, PageError};
        let pages = self.inner.pages.as_ref().ok_or(PageError::Closed)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        pages
            .commands
            .send(Command::Dial { peer: node, reply })
            .map_err(|_| PageError::Closed)?;
        answer.await.map_err(|_| PageError::Closed)?
    }

    /// Our key.
    pub fn node_id(&self) -> NodeId {
        self.inner.secret.node_id()
    }

    /// The relay client, if the endpoint has relays.
    pub fn relay(&self) -> Option<&RelayClient> {
        self.inner.relay.as_ref()
    }

    /// The IPv4 socket's local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.socket.v4.local_addr()
    }

    /// Our direct addresses: interface addresses, and the public one once STUN answered.
    pub fn candidates(&self) -> Vec<SocketAddr> {
        self.inner.candidates.borrow().clone()
    }

    /// Waits until STUN has told us our public address (at most `timeout`; not at all
    /// without STUN servers).
    pub async fn wait_public_addr(&self, timeout: Duration) {
        if !self.inner.has_stun {
            return;
        }
        // The NAT is known once a STUN server has answered, and by then the candidates hold
        // the public address it told. (The candidates themselves change before that too: the
        // interface addresses are read at start.)
        let mut nat = self.inner.nat.clone();
        let _ = tokio::time::timeout(timeout, nat.wait_for(Option::is_some)).await;
    }

    /// What we know of our NAT: `None` until a STUN server answers (or peers' pongs show a
    /// mapping that varies by destination).
    pub fn nat(&self) -> Option<NatHint> {
        *self.inner.nat.borrow()
    }

    /// Changes of [`Endpoint::nat`].
    pub fn nat_changes(&self) -> watch::Receiver<Option<NatHint>> {
        self.inner.nat.clone()
    }

    /// A ticket for this endpoint: our key, relays and direct addresses.
    pub fn ticket(&self) -> Ticket {
        let mut t = Ticket::new(self.node_id());
        if let Some(relay) = &self.inner.relay {
            t.relays = relay.relays().to_vec();
        }
        t.addrs = self.candidates();
        t
    }

    /// Connects to the peer in `ticket`, speaking `alpn`. The connection starts through the
    /// relay; punching starts beside it.
    pub async fn connect(&self, ticket: &Ticket, alpn: &[u8]) -> Result<Connection, ConnectError> {
        let node = ticket.node_id;
        if self.inner.relay.is_none() && ticket.addrs.is_empty() {
            return Err(ConnectError::NoRoute(node.to_string()));
        }
        if let (Some(relay), true) = (&self.inner.relay, ticket.addrs.is_empty()) {
            // Only the relay can carry this handshake (and the CallMeMaybe): an endpoint that
            // has just been bound is still connecting to it, and QUIC would resend its lost
            // first packets only after a second.
            relay.wait_first_connect(FIRST_RELAY_WAIT).await;
        }
        let peer = self.inner.peers.get_or_insert(node);
        let _ = self
            .inner
            .commands
            .send(Command::Connect {
                node,
                addrs: ticket.addrs.clone(),
            })
            .await;
        let client = tls::client_config(&self.inner.secret, node, &[alpn.to_vec()])
            .map_err(ConnectError::Tls)?;
        let connecting = self
            .inner
            .quic
            .connect_with(client, peer.mapped, tls::SERVER_NAME)?;
        let conn = Connection {
            quic: connecting.await?,
            remote: node,
            established: std::time::Instant::now(),
            side: Side::Dialler,
        };
        if let Some(admission) = &self.inner.admission {
            if let Err(ours) = admission::run(&**admission, &conn, Side::Dialler).await {
                // Only our own verdict takes back the trust the dial gave. A peer that closed
                // this connection (one of two that met, or "retry shortly" while it syncs its
                // roster), or our own "retry shortly", says nothing against the key, which may
                // have another connection with us whose punching must go on.
                if !ours.retry && !admission::closed_by_peer(&conn.quic) {
                    self.revoke(node).await;
                }
                // A check that failed because the peer closed on us reports the peer's reason.
                return Err(match admission::peer_refusal(&conn.quic) {
                    Some(theirs) => ConnectError::RefusedByPeer(theirs),
                    None => ConnectError::Refused(ours),
                });
            }
        }
        Ok(conn)
    }

    /// Trusts `node`, admitted [`Admitted::Untrusted`] before: hole punching runs for it now.
    pub async fn trust(&self, node: NodeId) {
        let _ = self
            .inner
            .commands
            .send(Command::Authenticated { node })
            .await;
    }

    /// Stops trusting `node`: its hole punching and direct paths end, and it is a stranger
    /// again until it is dialled or passes admission anew. Close its connections first: the
    /// revocation takes effect [`REVOKE_GRACE`] later, so their close frames (which tell the
    /// peer why) still go out; after it, nothing more is sent to it.
    pub async fn revoke(&self, node: NodeId) {
        let commands = self.inner.commands.clone();
        tokio::spawn(async move {
            tokio::time::sleep(REVOKE_GRACE).await;
            let _ = commands.send(Command::Revoked { node }).await;
        });
    }

    /// Connects to a node known only by its key: `lookup` finds its relays and addresses,
    /// then as [`Endpoint::connect`]. Addresses that slower sources find later are handed to
    /// the hole punching while the connection is under way. The relayed path needs this
    /// endpoint to share a relay with the node.
    pub async fn connect_node(
        &self,
        node: NodeId,
        lookup: &crate::lookup::Lookup,
        alpn: &[u8],
    ) -> Result<Connection, ConnectError> {
        let (found, later) = lookup.resolve_with_updates(&node).await?;
        let commands = self.inner.commands.clone();
        tokio::spawn(async move {
            if let Ok(merged) = later.await {
                let addrs = merged.ticket.addrs;
                let _ = commands.send(Command::Connect { node, addrs }).await;
            }
        });
        self.connect(&found.ticket, alpn).await
    }

    /// The next incoming connection, authenticated (`None` once the endpoint is closed).
    /// Handshakes run side by side in the background, so a slow or stalled one delays no
    /// other; those that fail or take over 10 s are skipped.
    pub async fn accept(&self) -> Option<Connection> {
        self.inner.accepted.lock().await.recv().await
    }

    /// How `node` is reached right now.
    pub fn path(&self, node: &NodeId) -> PathInfo {
        match self.inner.peers.by_node(node).and_then(|p| p.direct()) {
            Some(d) => PathInfo::Direct(d),
            None => PathInfo::Relay(
                self.inner
                    .relay
                    .as_ref()
                    .and_then(|r| r.state().borrow().home.clone()),
            ),
        }
    }

    /// The peers this endpoint dialled or accepted and has not forgotten yet (it forgets a
    /// peer once its connections have carried nothing for a minute), in no order.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.inner
            .peers
            .confirmed()
            .into_iter()
            .map(|(peer, last_activity)| PeerStatus {
                node: peer.node,
                path: self.path(&peer.node),
                last_activity,
            })
            .collect()
    }

    /// Resolves when any peer's path changes next (never, once the endpoint is closed: a loop
    /// around it must not spin).
    pub async fn path_changed(&self) {
        let mut rx = self.inner.path_changes.clone();
        rx.borrow_and_update();
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Closes every connection and stops the endpoint.
    pub async fn close(&self) {
        // The close must reach peers whose direct path died unnoticed: it goes both ways.
        self.inner
            .socket
            .closing
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.inner.quic.close(0u32.into(), b"closing");
        let _ = tokio::time::timeout(CLOSE_WAIT, self.inner.quic.wait_idle()).await;
        for task in std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()))
        {
            task.abort();
        }
        if let Some(relay) = &self.inner.relay {
            relay.clone().close().await;
        }
    }
}

/// Runs every incoming handshake in a task of its own (at most [`MAX_HANDSHAKES`] at once,
/// each for at most [`HANDSHAKE_TIMEOUT`], then the admission) and queues the connections
/// whose key TLS proved and the admission let in, telling the driver (the key may be punched
/// for now). A connection that arrived at another peer's made-up address than its key's is
/// refused: its packets were misfiled.
async fn handshake_incoming(
    quic: quinn::Endpoint,
    peers: Arc<PeerMap>,
    commands: mpsc::Sender<Command>,
    accepted: mpsc::Sender<Connection>,
    admission: Option<Arc<dyn Admission>>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let per_peer = Arc::new(Mutex::new(std::collections::HashMap::new()));
    while let Some(incoming) = quic.accept().await {
        let Some(peer_slot) = PeerSlot::take(&per_peer, incoming.remote_address()) else {
            tracing::debug!("too many handshakes from one peer address: refused one");
            incoming.refuse();
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("too many handshakes under way: refused one");
            incoming.refuse();
            continue;
        };
        let (accepted, peers, commands) = (accepted.clone(), peers.clone(), commands.clone());
        let admission = admission.clone();
        tokio::spawn(async move {
            let _slots = (slot, peer_slot);
            let quic = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return tracing::debug!("incoming handshake failed: {e}"),
                Err(_) => return tracing::debug!("incoming handshake timed out"),
            };
            let Some(remote) = tls::peer_node_id(&quic) else {
                return;
            };
            let filed_as = peers.by_mapped(&quic.remote_address()).map(|p| p.node);
            if filed_as != Some(remote) {
                tracing::debug!(peer = %remote.short(), "handshake at another peer's address: refused");
                quic.close(0u32.into(), b"misfiled");
                return;
            }
            let conn = Connection {
                quic,
                remote,
                established: std::time::Instant::now(),
                side: Side::Listener,
            };
            let admitted = match &admission {
                None => Admitted::Trusted,
                Some(admission) => {
                    match admission::run(&**admission, &conn, Side::Listener).await {
                        Ok(a) => a,
                        Err(r) => return tracing::debug!(peer = %remote.short(), "refused: {r}"),
                    }
                }
            };
            peers.get_or_insert(remote);
            if admitted == Admitted::Trusted {
                let _ = commands.send(Command::Authenticated { node: remote }).await;
            }
            let _ = accepted.send(conn).await;
        });
    }
}

/// One of a peer address's [`MAX_HANDSHAKES_PER_PEER`] handshake slots, given back on drop.
struct PeerSlot {
    taken: Arc<Mutex<std::collections::HashMap<SocketAddr, usize>>>,
    from: SocketAddr,
}

impl PeerSlot {
    fn take(
        taken: &Arc<Mutex<std::collections::HashMap<SocketAddr, usize>>>,
        from: SocketAddr,
    ) -> Option<PeerSlot> {
        let mut map = taken.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(from).or_default();
        if *n >= MAX_HANDSHAKES_PER_PEER {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            taken: taken.clone(),
            from,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut map = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.from) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.from);
            }
        }
    }
}
