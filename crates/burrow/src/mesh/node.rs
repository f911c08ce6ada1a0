//! A running node of a mesh: its endpoint (admitting members only), a connection to every
//! member it can reach, rosters passed on as they change, invites issued and redeemed, kicks.
//!
//! Every member dials every member it has no connection to (the roster says who), backing off
//! from 1 s to 30 s per member (1 s flat while the peer waits for its roster to sync, and at once
//! when the member shows up on the LAN); when two connections to one member meet (both ends
//! dialled at once), both ends keep the one the smaller node id dialled and retire the other
//! once the streams riding it are done (`mesh::member_conn`), and any other new connection
//! replaces the old one, which the member no longer holds (it restarted, perhaps
//! after a crash that sent no close). Members find each other through the relays' registries,
//! the DHT and mDNS (`mesh::discovery`); the record a member publishes names its relays only,
//! never its direct addresses, which members learn from each other's hole punching (or the LAN)
//! once both have proved membership.
//!
//! An admin renews the certificates of the members it is connected to before they lapse, and
//! every node cuts off a peer whose certificate lapsed ([`super::renewal`]). Invites live in the
//! state directory, so they outlive a restart of their inviter (`mesh::invites`).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burrow_proto::mesh::cert::{MemberCert, Role, SignedCert};
use burrow_proto::mesh::code::ShortCode;
use burrow_proto::mesh::invite::{Invite, SignedInvite};
use burrow_proto::mesh::pake::{self, inviter, joiner};
use burrow_proto::mesh::roster::{RosterEntry, SignedRoster};
use burrow_proto::mesh::stream::StreamOpen;
use burrow_proto::mesh::MeshError;
use burrow_proto::Rng;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::apps::Apps;
use super::discovery::{relays_only, Discovery};
use super::forward::{self, Exposed, Forward, ForwardError, Forwarding};
use super::invites::Invites;
use super::member_conn::{MemberConn, MemberStream};
use super::membership::{decode_proof, encode_proof, Membership, ROSTER_SYNC_WAIT, SYNC_REFUSAL};
use super::presence::{info_body, Presence};
use super::renewal::{self, Renewal, DEFAULT_CERT_VALIDITY};
use super::state::{MeshState, StateError};
use super::streams::{self, Asked};
use super::{JOIN_ALPN, MAX_MESSAGE_LEN, MESH_ALPN, MSG_CERT, MSG_INFO, MSG_ROSTER};
use crate::api::PathView;
use crate::dht::{DhtConfig, DhtError};
use crate::endpoint::admission::REFUSED;
use crate::endpoint::{
    Admission, AdmissionFuture, Admitted, BindError, ConnectError, Connection, Endpoint,
    EndpointOptions, ExchangeProofs, Refusal, Side,
};
use crate::publisher::{PublishError, PublishEvent, RecordPublisher};
use crate::ticket::Ticket;
use crate::NodeId;

/// First wait before dialling a member again after a failed dial; it doubles up to
/// [`MAX_REDIAL`].
const FIRST_REDIAL: Duration = Duration::from_secs(1);
/// Longest wait between dials of one member.
const MAX_REDIAL: Duration = Duration::from_secs(30);
/// Two connections to one member, one each way, established within this time of each other
/// were dialled at once by both ends (the endpoint's handshake timeout bounds how far apart).
const CROSSED_DIALS: Duration = crate::endpoint::HANDSHAKE_TIMEOUT;
/// A retired connection (one of two crossed dials) is closed once no stream has been in use
/// on it for this long: the member may still be opening one on it until it has both.
const RETIRED_LINGER: Duration = Duration::from_millis(500);
/// How often the node looks for members it has no connection to.
const DIAL_TICK: Duration = Duration::from_millis(500);
/// Longest wait between two looks at the certificates: renewals due, peers lapsed.
const MAX_CERT_CHECK: Duration = Duration::from_secs(30);
/// How long a node redeeming an invite may take to send it.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest join request (token and name), in bytes.
const MAX_JOIN_REQUEST: usize = 4096;
/// A datagram asking for an echo: this byte, then 8 bytes the echo repeats.
const DATAGRAM_PING: u8 = 0;
/// The echo.
const DATAGRAM_PONG: u8 = 1;
/// A program's datagram: this byte, then its bytes.
const DATAGRAM_APP: u8 = 2;
/// A join stream asking to redeem a token: this byte, then `token\nname`.
const JOIN_TOKEN: u8 = 1;
/// A join stream running the short code's PAKE: this byte, then `u32`-framed PAKE messages.
const JOIN_PAKE: u8 = 2;
/// Default lifetime of an invite.
pub const DEFAULT_INVITE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Member events kept for a slow [`MeshNode::events`] receiver.
pub const MEMBER_EVENT_BACKLOG: usize = 256;

/// Something that happened to a member, as [`MeshNode::events`] tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberEvent {
    /// A connection to the member is up (not one replacing another).
    Connected(NodeId),
    /// The member's connection ended.
    Disconnected(NodeId),
    /// The roster lists a new member.
    Joined {
        /// Its key.
        node: NodeId,
        /// Its name in the mesh.
        name: String,
    },
    /// The roster revokes a member.
    Revoked(NodeId),
}

/// Why a mesh node could not start, or a mesh operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The state on disk.
    #[error(transparent)]
    State(#[from] StateError),
    /// The endpoint would not bind.
    #[error("endpoint")]
    Bind(#[from] BindError),
    /// The record publisher would not start.
    #[error("publishing")]
    Publish(#[from] PublishError),
    /// The DHT node would not start.
    #[error("the DHT")]
    Dht(#[from] DhtError),
    /// Signing or checking a mesh object.
    #[error(transparent)]
    Mesh(#[from] MeshError),
    /// Only an admin can do this.
    #[error("only an admin of mesh {0} can do this")]
    NotAdmin(String),
    /// No member by that name or id.
    #[error("no member {0}")]
    NoMember(String),
    /// Joining failed.
    #[error("joining: {0}")]
    Join(String),
    /// Connecting to the inviter failed.
    #[error("connecting to the inviter")]
    Connect(#[from] ConnectError),
    /// What was given to join with is not an invite token.
    #[error("the invite token")]
    Token(#[source] MeshError),
    /// What was given to join with looks like a short code but is not one.
    #[error("the short code")]
    Code(#[from] burrow_proto::mesh::code::CodeError),
    /// Exposing or forwarding a port.
    #[error(transparent)]
    Forward(#[from] ForwardError),
    /// The member is not connected now.
    #[error("member {0} is not connected")]
    Offline(String),
    /// The member refused the stream, or did not answer.
    #[error("member {member} refused the stream: {reason}")]
    StreamRefused {
        /// Who.
        member: String,
        /// Why.
        reason: String,
    },
    /// A datagram larger than the connection carries now.
    #[error("a datagram of {len} bytes; the connection carries at most {max} now")]
    DatagramTooLarge {
        /// Its length.
        len: usize,
        /// The most it may have.
        max: usize,
    },
}

/// How to run a mesh node.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The IPv4 socket's address.
    pub bind_v4: SocketAddr,
    /// The IPv6 socket's address.
    pub bind_v6: Option<SocketAddr>,
    /// STUN servers; none means the relays' hosts on port 3478 is the caller's choice to add.
    pub stun_servers: Vec<SocketAddr>,
    /// How long the certificates this node issues as an admin (to joiners, and renewals) are
    /// valid; [`DEFAULT_CERT_VALIDITY`] by default.
    pub cert_validity: Duration,
    /// The Mainline DHT to publish this node's record (relays only) in and to find members
    /// in; `None` (the default) leaves the DHT out.
    pub dht: Option<DhtConfig>,
    /// Find members on the LAN by mDNS, and be found there by them (on by default): on the
    /// interface of `bind_v4`, or on every one if that is unspecified.
    pub mdns: bool,
    /// How long after starting the node waits for an admin's roster before it admits members
    /// no newer than itself ([`ROSTER_SYNC_WAIT`] by default; see [`super::membership`]).
    pub roster_sync_wait: Duration,
}

impl Default for NodeOptions {
    fn default() -> Self {
        let ep = EndpointOptions::default();
        NodeOptions {
            bind_v4: ep.bind_v4,
            bind_v6: ep.bind_v6,
            stun_servers: Vec::new(),
            cert_validity: DEFAULT_CERT_VALIDITY,
            dht: None,
            mdns: true,
            roster_sync_wait: ROSTER_SYNC_WAIT,
        }
    }
}

/// A member as this node sees it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MemberInfo {
    /// Its name in the mesh.
    pub name: String,
    /// Its key.
    pub node_id: String,
    /// Its number.
    pub number: u32,
    /// `admin` or `member`.
    pub role: &'static str,
    /// This node itself.
    pub me: bool,
    /// Connected now (always true for this node).
    pub online: bool,
    /// `direct` or `relay`, when connected.
    pub path: Option<&'static str>,
    /// The peer's direct address or the relay's URL, when connected.
    pub remote_addr: Option<String>,
    /// The direct path's round trip, in ms.
    pub rtt_ms: Option<f64>,
    /// What it told of its NAT (`easy`, `hard` or `open`), if it has.
    pub nat_type: Option<&'static str>,
    /// When it was last connected, Unix seconds: now while it is, `null` if never since this
    /// node started.
    pub last_seen: Option<u64>,
}

struct Inner {
    /// What happens to members, for [`MeshNode::events`].
    events: tokio::sync::broadcast::Sender<MemberEvent>,
    state: Mutex<MeshState>,
    membership: Arc<Membership>,
    endpoint: Endpoint,
    discovery: Discovery,
    /// The connection in use to each member.
    conns: Mutex<HashMap<NodeId, MemberConn>>,
    /// Connections that lost to another one to the same member (crossed dials), until the
    /// streams riding them are done.
    retiring: Mutex<Vec<MemberConn>>,
    dialing: Mutex<HashMap<NodeId, (Instant, Duration, bool)>>,
    /// The invites and short codes served, as kept on disk.
    invites: Mutex<Invites>,
    pings: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<()>>>,
    /// How long the certificates this node issues are valid.
    cert_validity: Duration,
    /// Wakes the certificate loop: a member connected, or a certificate changed.
    certs_changed: Notify,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Each connection's readers and each retired connection's closer: they hold the node,
    /// so shutdown waits for them (the state, and its key's lock, go with the last holder).
    conn_tasks: Mutex<Vec<JoinHandle<()>>>,
    /// What members told of themselves, and when they were last seen.
    presence: Presence,
    /// Keeps this node's record (relays only) at the registries, listed under the rendezvous
    /// namespaces of the short codes it serves; replaced when those change, as one node has
    /// one record (two publishers would race each other's sequence numbers).
    publisher: Mutex<Option<RecordPublisher>>,
    /// Ports exposed to members, and forwards to theirs.
    forwarding: Forwarding,
    /// Datagrams and streams for programs.
    apps: Apps,
}

/// A running node of a mesh.
#[derive(Clone)]
pub struct MeshNode {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MeshNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshNode")
            .field("node_id", &self.inner.endpoint.node_id())
            .finish_non_exhaustive()
    }
}

/// Members over [`MESH_ALPN`] must prove membership; a node redeeming an invite over
/// [`JOIN_ALPN`] is let in untrusted.
#[derive(Debug)]
struct MeshAdmission(ExchangeProofs<Arc<Membership>>);

impl Admission for MeshAdmission {
    fn admit<'a>(&'a self, conn: &'a Connection, side: Side) -> AdmissionFuture<'a> {
        if side == Side::Listener && conn.alpn().as_deref() == Some(JOIN_ALPN) {
            return Box::pin(async { Ok(Admitted::Untrusted) });
        }
        self.0.admit(conn, side)
    }
}

impl MeshNode {
    /// Runs `state`'s node: binds the endpoint, publishes its record (relays only) to the
    /// relays' registries (and the DHT), announces it on the LAN, lists it again under the
    /// short codes it serves, and starts connecting to every member. Within a Tokio runtime.
    pub async fn start(state: MeshState, opts: NodeOptions) -> Result<MeshNode, NodeError> {
        let membership = Arc::new(Membership::new(
            state.mesh_id,
            state.name.clone(),
            state.cert.clone(),
            state.roster.clone(),
            opts.roster_sync_wait,
        ));
        let invites = Invites::load(&state.dir, state.node_key.node_id(), super::now())?;
        let endpoint = bind_on_known_port(
            &state.dir,
            state.node_key.clone(),
            EndpointOptions {
                bind_v4: opts.bind_v4,
                bind_v6: opts.bind_v6,
                relays: state.relays.clone(),
                stun_servers: opts.stun_servers.clone(),
                alpns: vec![MESH_ALPN.to_vec(), JOIN_ALPN.to_vec()],
                admission: Some(Arc::new(MeshAdmission(ExchangeProofs::new(
                    membership.clone(),
                )))),
                ..Default::default()
            },
        )
        .await?;
        let discovery = Discovery::start(&state, &endpoint, &opts).await?;
        let publisher = discovery.publisher(&state, &endpoint, invites.namespaces())?;
        let (forwarding, forwards) = Forwarding::load(&state.dir);
        let node = MeshNode {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                membership,
                endpoint,
                discovery,
                conns: Mutex::default(),
                retiring: Mutex::default(),
                dialing: Mutex::default(),
                invites: Mutex::new(invites),
                pings: Mutex::default(),
                cert_validity: opts.cert_validity,
                certs_changed: Notify::new(),
                tasks: Mutex::default(),
                conn_tasks: Mutex::default(),
                presence: Presence::default(),
                events: tokio::sync::broadcast::channel(MEMBER_EVENT_BACKLOG).0,
                publisher: Mutex::new(Some(publisher)),
                forwarding,
                apps: Apps::default(),
            }),
        };
        for f in forwards {
            let local = f.local;
            if let Err(e) = node.listen(f).await {
                tracing::warn!(%local, "the forward kept from before: {}", crate::error_chain::Chain(&e));
            }
        }
        let tasks = vec![
            tokio::spawn(node.clone().accept_loop()),
            tokio::spawn(node.clone().dial_loop()),
            tokio::spawn(node.clone().roster_loop()),
            tokio::spawn(node.clone().info_loop()),
            tokio::spawn(node.clone().cert_loop()),
        ];
        *lock(&node.inner.tasks) = tasks;
        Ok(node)
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// The mesh's name.
    pub fn mesh_name(&self) -> String {
        lock(&self.inner.state).name.clone()
    }

    /// What happens to members from now on: connections up and down, joins and revocations.
    /// A receiver that falls [`MEMBER_EVENT_BACKLOG`] behind misses the oldest.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<MemberEvent> {
        self.inner.events.subscribe()
    }

    /// The roster held now.
    pub fn roster(&self) -> SignedRoster {
        self.inner.membership.roster()
    }

    /// This node's certificate now (renewals replace it).
    pub fn cert(&self) -> SignedCert {
        self.inner.membership.cert()
    }

    /// Every member of the roster, this node included, with how it is reached now.
    pub fn members(&self) -> Vec<MemberInfo> {
        let me = self.inner.endpoint.node_id();
        let roster = self.roster();
        let conns = lock(&self.inner.conns);
        let now = super::now();
        roster
            .roster()
            .members
            .iter()
            .map(|(node, entry)| {
                let online = *node == me || conns.contains_key(node);
                let path = (online && *node != me)
                    .then(|| PathView::from(&self.inner.endpoint.path(node)));
                let (path, remote_addr, rtt_ms) = match path {
                    Some(v) => (Some(v.path.as_str()), v.remote_addr, v.rtt_ms),
                    None => (None, None, None),
                };
                let seen = self.inner.presence.get(node);
                let nat = if *node == me {
                    self.inner.endpoint.nat()
                } else {
                    seen.nat
                };
                MemberInfo {
                    name: entry.name.clone(),
                    node_id: node.to_string(),
                    number: entry.number,
                    role: match entry.role {
                        Role::Admin => "admin",
                        Role::Member => "member",
                    },
                    me: *node == me,
                    online,
                    path,
                    remote_addr,
                    rtt_ms,
                    nat_type: nat.map(burrow_proto::mesh::info::nat_name),
                    last_seen: if online { Some(now) } else { seen.last_seen },
                }
            })
            .collect()
    }

    /// Issues an invite valid for `ttl` and `uses` joins, redeemable while this node runs
    /// (also after it restarts: it is written down first).
    pub fn invite(&self, ttl: Duration, uses: u16) -> Result<SignedInvite, NodeError> {
        let state = lock(&self.inner.state);
        let signer = state
            .signer()
            .ok_or_else(|| NodeError::NotAdmin(state.name.clone()))?;
        let now = super::now();
        let mut rng = Rng::from_seed_bytes(rand::random());
        let mut invite = Invite::new(
            state.mesh_id,
            state.name.clone(),
            relays_only(self.inner.endpoint.ticket()),
            now,
            now + ttl.as_secs(),
            &mut rng,
        );
        invite.uses = uses.max(1);
        let token = invite.sign(&signer)?;
        lock(&self.inner.invites).add(token.clone(), now)?;
        Ok(token)
    }

    /// Issues an invite as [`MeshNode::invite`] does, and a short code for it: this node lists
    /// itself under the code's rendezvous namespace at its registries (returning once one of
    /// them holds the listing, or after 5 s), and hands the token to whoever proves the code's
    /// password (three wrong tries burn it).
    pub async fn invite_code(
        &self,
        ttl: Duration,
        uses: u16,
    ) -> Result<(ShortCode, SignedInvite), NodeError> {
        let token = self.invite(ttl, uses)?;
        let code = ShortCode::generate(&mut Rng::from_seed_bytes(rand::random()));
        let namespaces = {
            let mut invites = lock(&self.inner.invites);
            invites.add_code(code.clone(), token.invite().invite_id, super::now())?;
            invites.namespaces()
        };
        // The old publisher goes first, so the two never race with one sequence number.
        drop(lock(&self.inner.publisher).take());
        let mut listed = self.inner.discovery.publisher(
            &lock(&self.inner.state),
            &self.inner.endpoint,
            namespaces,
        )?;
        let published = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match listed.next_event().await {
                    PublishEvent::Published { .. } => break,
                    e => tracing::debug!("the short code's listing: {e:?}"),
                }
            }
        });
        if published.await.is_err() {
            tracing::warn!(
                "no registry holds the short code's listing yet; joiners may not find it"
            );
        }
        *lock(&self.inner.publisher) = Some(listed);
        Ok((code, token))
    }

    /// Throws the member named `who` (a name or a node id) out: a new roster revokes it, goes
    /// to every member, and its connections close.
    pub fn kick(&self, who: &str) -> Result<NodeId, NodeError> {
        let roster = self.roster();
        let (node, ..) = self.member(who)?;
        let state = lock(&self.inner.state);
        let signer = state
            .signer()
            .ok_or_else(|| NodeError::NotAdmin(state.name.clone()))?;
        let mut next = roster.roster().clone();
        next.revoke(node);
        next.version += 1;
        let signed = next.sign(&signer)?;
        drop(state);
        self.inner.membership.offer(signed)?;
        // On disk before it returns: a node stopped right after the kick still holds it.
        self.save_roster()?;
        Ok(node)
    }

    /// Writes the roster held now to the state directory.
    fn save_roster(&self) -> Result<(), StateError> {
        let mut state = lock(&self.inner.state);
        state.roster = self.inner.membership.roster();
        state.save_roster()
    }

    /// Closes every connection and stops.
    pub async fn shutdown(&self) {
        for task in std::mem::take(&mut *lock(&self.inner.tasks)) {
            task.abort();
        }
        self.inner.forwarding.close();
        self.inner.endpoint.close().await;
        let conn_tasks = std::mem::take(&mut *lock(&self.inner.conn_tasks));
        for task in &conn_tasks {
            task.abort();
        }
        for task in conn_tasks {
            // An aborted task has dropped what it held once it is joined.
            let _ = task.await;
        }
    }

    /// Runs `task`, one of the connections', for shutdown to end and wait for.
    fn spawn_conn_task(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = lock(&self.inner.conn_tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(tokio::spawn(task));
    }

    async fn accept_loop(self) {
        while let Some(conn) = self.inner.endpoint.accept().await {
            let node = self.clone();
            tokio::spawn(async move {
                if conn.alpn().as_deref() == Some(JOIN_ALPN) {
                    node.serve_join(conn).await;
                } else {
                    node.register(conn);
                }
            });
        }
    }

    /// Keeps `conn` as the member's connection, unless it crossed one to the same member
    /// that the smaller node id dialled (see the module's doc); the one that loses is
    /// retired. Reads its messages and streams until it closes.
    fn register(&self, conn: Connection) {
        let me = self.inner.endpoint.node_id();
        let peer = conn.remote;
        let conn = MemberConn::new(conn);
        let mut kept = true;
        {
            let mut conns = lock(&self.inner.conns);
            let mut replaced = false;
            if let Some(old) = conns.get(&peer).cloned() {
                // Each end dials a member only while it holds no connection to it, so two
                // connections were dialled at once only if they go opposite ways and were
                // made within the handshakes' time of each other; then both ends keep the one
                // the smaller node id dialled. Any other old connection is gone on the
                // member's side (it restarted, or lost it without its close reaching us): the
                // new one replaces it.
                let crossed = old.side != conn.side && old.established.elapsed() < CROSSED_DIALS;
                if !crossed || old.quic.close_reason().is_some() {
                    old.quic.close(0u32.into(), b"replaced");
                } else {
                    replaced = true;
                    // Which of the two the smaller node id dialled: ours if we dialled and we
                    // are the smaller.
                    let we_dialled = conn.side == Side::Dialler;
                    kept = we_dialled == (me < peer);
                    self.retire(if kept { old } else { conn.clone() });
                }
            }
            if kept {
                conns.insert(peer, conn.clone());
                if !replaced {
                    let _ = self.inner.events.send(MemberEvent::Connected(peer));
                }
            }
        }
        if kept {
            tracing::info!(peer = %peer.short(), "member connected");
            send(&conn, MSG_INFO, &info_body(self.inner.endpoint.nat()));
            // Its certificate may be due for renewal.
            self.inner.certs_changed.notify_one();
        }
        let node = self.clone();
        self.spawn_conn_task(async move {
            tokio::join!(
                node.read_messages(&conn),
                node.read_datagrams(&conn),
                node.read_streams(&conn)
            );
            node.ended(&conn);
        });
    }

    /// Opens nothing more on `conn` (it is not the member's connection) and closes it once
    /// the streams riding it are done, or when its member is cut off.
    fn retire(&self, conn: MemberConn) {
        lock(&self.inner.retiring).push(conn.clone());
        let node = self.clone();
        self.spawn_conn_task(async move {
            tokio::select! {
                _ = conn.idle_for(RETIRED_LINGER) => conn.quic.close(0u32.into(), b"duplicate"),
                _ = conn.quic.closed() => {}
            }
            let id = conn.quic.stable_id();
            lock(&node.inner.retiring).retain(|c| c.quic.stable_id() != id);
        });
    }

    /// `conn` ended (or is cut off): if it is the member's connection in use, the member is
    /// offline now.
    fn ended(&self, conn: &Connection) {
        let peer = conn.remote;
        let mut conns = lock(&self.inner.conns);
        if conns
            .get(&peer)
            .is_some_and(|c| c.quic.stable_id() == conn.quic.stable_id())
        {
            conns.remove(&peer);
            self.inner.presence.gone(peer);
            self.inner.membership.forget_peer(&peer);
            let _ = self.inner.events.send(MemberEvent::Disconnected(peer));
            tracing::info!(peer = %peer.short(), "member disconnected");
        }
    }

    /// One round trip to member `peer` over its connection now (a QUIC datagram it echoes);
    /// `None` if not connected or no echo within `timeout`.
    pub async fn ping(&self, peer: &NodeId, timeout: Duration) -> Option<Duration> {
        let conn = lock(&self.inner.conns).get(peer).cloned()?;
        let seq: u64 = rand::random();
        let (tx, rx) = tokio::sync::oneshot::channel();
        lock(&self.inner.pings).insert(seq, tx);
        let mut d = vec![DATAGRAM_PING];
        d.extend_from_slice(&seq.to_be_bytes());
        let start = Instant::now();
        let sent = conn.quic.send_datagram(d.into()).is_ok();
        let answered = sent
            && tokio::time::timeout(timeout, rx)
                .await
                .is_ok_and(|r| r.is_ok());
        lock(&self.inner.pings).remove(&seq);
        answered.then(|| start.elapsed())
    }

    /// Echoes pings and hands pongs to their waiters.
    async fn read_datagrams(&self, conn: &Connection) {
        while let Ok(d) = conn.quic.read_datagram().await {
            match d.split_first() {
                Some((&DATAGRAM_PING, seq)) => {
                    let mut pong = vec![DATAGRAM_PONG];
                    pong.extend_from_slice(seq);
                    let _ = conn.quic.send_datagram(pong.into());
                }
                Some((&DATAGRAM_PONG, seq)) => {
                    let Ok(seq) = <[u8; 8]>::try_from(seq) else {
                        continue;
                    };
                    if let Some(tx) = lock(&self.inner.pings).remove(&u64::from_be_bytes(seq)) {
                        let _ = tx.send(());
                    }
                }
                Some((&DATAGRAM_APP, _)) => self.inner.apps.datagram(conn.remote, d.slice(1..)),
                _ => {}
            }
        }
    }

    /// Serves the streams `conn`'s member opens: forwarded connections and programs' streams.
    async fn read_streams(&self, conn: &MemberConn) {
        while let Ok((mut send, mut recv)) = conn.quic.accept_bi().await {
            let (node, member, hold) = (self.clone(), conn.remote, conn.hold());
            tokio::spawn(async move {
                let open = streams::read_header(&mut recv, StreamOpen::decode);
                match tokio::time::timeout(streams::ANSWER_TIMEOUT, open).await {
                    Ok(Some(StreamOpen::Forward { port })) => {
                        node.inner.forwarding.serve(port, send, recv).await;
                        drop(hold);
                    }
                    Ok(Some(StreamOpen::App)) => {
                        let stream = MemberStream::new(member, send, recv, hold);
                        node.inner.apps.offer(stream).await
                    }
                    _ => {
                        let _ = send.reset(streams::RESET_CODE.into());
                    }
                }
            });
        }
    }

    /// The member `who` names (a name or a node id), with its roster entry's number.
    fn member(&self, who: &str) -> Result<(NodeId, String, u32), NodeError> {
        self.roster()
            .roster()
            .members
            .iter()
            .find(|(id, e)| e.name == who || id.to_string() == who)
            .map(|(id, e)| (*id, e.name.clone(), e.number))
            .ok_or_else(|| NodeError::NoMember(who.to_owned()))
    }

    /// The name the roster gives `node`, if it lists it.
    pub fn member_name(&self, node: &NodeId) -> Option<String> {
        self.roster()
            .roster()
            .members
            .get(node)
            .map(|e| e.name.clone())
    }

    /// The connection to `node`, waiting at most `wait` for one if there is none now (and
    /// dialling it at once); `None` at once for a node the roster does not list.
    async fn connection(&self, node: NodeId, wait: Duration) -> Option<MemberConn> {
        if !self.roster().roster().members.contains_key(&node) {
            return None;
        }
        let mut events = self.inner.events.subscribe();
        if let Some(c) = lock(&self.inner.conns).get(&node) {
            return Some(c.clone());
        }
        if let Some(entry) = lock(&self.inner.dialing).get_mut(&node) {
            if !entry.2 {
                entry.0 = Instant::now();
            }
        }
        let connected = async {
            loop {
                match events.recv().await {
                    Ok(MemberEvent::Connected(n)) if n == node => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    _ => continue,
                }
                if let Some(c) = lock(&self.inner.conns).get(&node) {
                    return Some(c.clone());
                }
            }
        };
        tokio::time::timeout(wait, connected).await.ok().flatten()
    }

    /// Exposes `127.0.0.1:port` to the mesh's members (again, with a new name, if it is).
    pub fn expose(&self, port: u16, name: Option<String>) -> Result<Exposed, NodeError> {
        Ok(self.inner.forwarding.expose(port, name)?)
    }

    /// Stops exposing `port`; connections under way go on.
    pub fn unexpose(&self, port: u16) -> Result<(), NodeError> {
        Ok(self.inner.forwarding.unexpose(port)?)
    }

    /// The ports exposed.
    pub fn exposed(&self) -> Vec<Exposed> {
        self.inner.forwarding.exposed()
    }

    /// Listens on `local` (by default the member's stable address,
    /// [`forward::stable_address`]) and carries each connection to `who`'s exposed `port`.
    /// Kept, and listening again after a restart, until [`MeshNode::unforward`].
    pub async fn forward(
        &self,
        who: &str,
        port: u16,
        local: Option<SocketAddr>,
    ) -> Result<Forward, NodeError> {
        let (node_id, _, number) = self.member(who)?;
        let local = match local {
            Some(l) => l,
            None => forward::stable_address(number, port)
                .ok_or(ForwardError::NoStableAddress(number))?,
        };
        self.listen(Forward {
            node_id,
            port,
            local,
        })
        .await
    }

    async fn listen(&self, f: Forward) -> Result<Forward, NodeError> {
        let node = self.clone();
        let carry = move |tcp, f: Forward| {
            let node = node.clone();
            async move {
                let open = || async {
                    let conn = node.connection(f.node_id, forward::CONNECT_WAIT).await?;
                    let hold = conn.hold();
                    let (send, recv) = conn.quic.open_bi().await.ok()?;
                    Some((send, recv, hold))
                };
                forward::carry(tcp, f.port, open).await
            }
        };
        Ok(self.inner.forwarding.listen(f, carry).await?)
    }

    /// Stops the forward listening on `local` (it no longer accepts when this returns);
    /// connections under way go on.
    pub async fn unforward(&self, local: SocketAddr) -> Result<Forward, NodeError> {
        Ok(self.inner.forwarding.unforward(local).await?)
    }

    /// The forwards listening.
    pub fn forwards(&self) -> Vec<Forward> {
        self.inner.forwarding.forwards()
    }

    /// The member `who` names, its name, and the connection to it now.
    fn connected(&self, who: &str) -> Result<(NodeId, String, MemberConn), NodeError> {
        let (node, name, _) = self.member(who)?;
        match lock(&self.inner.conns).get(&node) {
            Some(conn) => Ok((node, name, conn.clone())),
            None => Err(NodeError::Offline(name)),
        }
    }

    /// Sends a program's datagram to the member `who` names: unreliable, as UDP.
    pub fn send_datagram(&self, who: &str, data: &[u8]) -> Result<(), NodeError> {
        let (_, _, conn) = self.connected(who)?;
        let max = conn.quic.max_datagram_size().unwrap_or(0).saturating_sub(1);
        if data.len() > max {
            return Err(NodeError::DatagramTooLarge {
                len: data.len(),
                max,
            });
        }
        let mut d = Vec::with_capacity(1 + data.len());
        d.push(DATAGRAM_APP);
        d.extend_from_slice(data);
        // Past the checks above, a datagram not sent is one lost, as UDP would lose it.
        let _ = conn.quic.send_datagram(d.into());
        Ok(())
    }

    /// Programs' datagrams that come from now on, with their senders.
    pub fn datagrams(&self) -> tokio::sync::broadcast::Receiver<(NodeId, bytes::Bytes)> {
        self.inner.apps.datagrams()
    }

    /// Opens a stream to a program accepting them on `who`'s machine; returns once it took it.
    pub async fn open_stream(&self, who: &str) -> Result<MemberStream, NodeError> {
        let (node, name, conn) = self.connected(who)?;
        let hold = conn.hold();
        let refused = |reason: &str| NodeError::StreamRefused {
            member: name.clone(),
            reason: reason.to_owned(),
        };
        let (mut send, mut recv) = conn
            .quic
            .open_bi()
            .await
            .map_err(|e| refused(&e.to_string()))?;
        match streams::ask(&mut send, &mut recv, StreamOpen::App).await {
            Asked::Accepted => Ok(MemberStream::new(node, send, recv, hold)),
            Asked::Refused(why) => Err(refused(&why)),
            Asked::Ended => Err(refused("the stream ended unanswered")),
            Asked::TimedOut => Err(refused("no program accepted it in time")),
        }
    }

    /// The next stream a member opens to a program here, accepted.
    pub async fn accept_stream(&self) -> MemberStream {
        self.inner.apps.accept().await
    }

    async fn read_messages(&self, conn: &Connection) {
        while let Ok(mut stream) = conn.quic.accept_uni().await {
            let Ok(msg) = stream.read_to_end(MAX_MESSAGE_LEN).await else {
                continue;
            };
            match msg.split_first() {
                // Most copies are of the roster held already (every member passes each one
                // on): those are dropped before the costly decoding.
                Some((&MSG_ROSTER, body)) if body == self.roster().as_bytes() => {}
                Some((&MSG_ROSTER, body)) => match SignedRoster::decode(body) {
                    Ok(roster) => match self.inner.membership.offer(roster) {
                        Ok(()) | Err(MeshError::Stale { .. }) => {}
                        Err(e) => tracing::debug!(peer = %conn.remote.short(), "roster: {e}"),
                    },
                    Err(e) => tracing::debug!(peer = %conn.remote.short(), "roster: {e}"),
                },
                Some((&MSG_INFO, body)) => self.inner.presence.told(conn.remote, body),
                Some((&MSG_CERT, body)) => match SignedCert::decode(body) {
                    Ok(cert) => self.take_cert(&conn.remote, cert),
                    Err(e) => tracing::debug!(peer = %conn.remote.short(), "certificate: {e}"),
                },
                _ => tracing::debug!(peer = %conn.remote.short(), "unknown message"),
            }
        }
    }

    async fn dial_loop(self) {
        let me = self.inner.endpoint.node_id();
        // Members seen on the LAN; one that shows up there is dialled at once. The first
        // round runs at once: a node that starts wants its members now.
        let mut on_lan = HashSet::new();
        let mut ticks = tokio::time::interval(DIAL_TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = self.inner.discovery.lan_changed() => {}
            }
            let roster = self.roster();
            let now = Instant::now();
            for node in roster.roster().members.keys().filter(|n| **n != me) {
                if lock(&self.inner.conns).contains_key(node) {
                    continue;
                }
                let mut dialing = lock(&self.inner.dialing);
                let entry = dialing.entry(*node).or_insert((now, FIRST_REDIAL, false));
                let seen = self.inner.discovery.on_lan(node).is_some();
                if !seen {
                    on_lan.remove(node);
                }
                if seen && on_lan.insert(*node) {
                    (entry.0, entry.1) = (now, FIRST_REDIAL);
                }
                if entry.2 || entry.0 > now {
                    continue;
                }
                entry.2 = true;
                let (node, this) = (*node, self.clone());
                tokio::spawn(async move { this.dial(node).await });
            }
        }
    }

    async fn dial(&self, peer: NodeId) {
        let result = match self.inner.discovery.find(peer).await {
            Ok(ticket) => self.inner.endpoint.connect(&ticket, MESH_ALPN).await,
            Err(e) => Err(ConnectError::NotFound(e)),
        };
        let mut dialing = lock(&self.inner.dialing);
        match result {
            Ok(conn) => {
                dialing.remove(&peer);
                drop(dialing);
                self.register(conn);
            }
            Err(e) => {
                tracing::debug!(peer = %peer.short(), "dialling a member: {e}");
                // A node waiting for its roster to sync lets us in shortly: no backing off.
                let syncing = matches!(&e, ConnectError::RefusedByPeer(r) | ConnectError::Refused(r)
                    if r.reason == SYNC_REFUSAL);
                if let Some(entry) = dialing.get_mut(&peer) {
                    *entry = match syncing {
                        true => (Instant::now() + FIRST_REDIAL, FIRST_REDIAL, false),
                        false => (
                            Instant::now() + entry.1,
                            (entry.1 * 2).min(MAX_REDIAL),
                            false,
                        ),
                    };
                }
            }
        }
    }

    /// Keeps the roster on disk, cuts off whom it revokes, and tells every member.
    async fn roster_loop(self) {
        let mut rosters = self.inner.membership.rosters();
        let mut before = rosters.borrow().roster().clone();
        while rosters.changed().await.is_ok() {
            let roster = rosters.borrow_and_update().clone();
            let now = roster.roster();
            for (node, entry) in &now.members {
                if !before.members.contains_key(node) {
                    let _ = self.inner.events.send(MemberEvent::Joined {
                        node: *node,
                        name: entry.name.clone(),
                    });
                }
            }
            for node in now.revoked.difference(&before.revoked) {
                let _ = self.inner.events.send(MemberEvent::Revoked(*node));
            }
            before = now.clone();
            if let Err(e) = self.save_roster() {
                tracing::warn!("saving the roster: {e}");
            }
            let conns: Vec<MemberConn> = lock(&self.inner.conns).values().cloned().collect();
            for conn in conns {
                if roster.roster().is_revoked(&conn.remote) {
                    self.cut_off(&conn, "revoked from the mesh").await;
                    continue;
                }
                send(&conn, MSG_ROSTER, roster.as_bytes());
            }
            // A retired connection whose member has no other left (cut_off closes the rest).
            for retired in lock(&self.inner.retiring).iter() {
                if roster.roster().is_revoked(&retired.remote) {
                    retired.quic.close(REFUSED.into(), b"revoked from the mesh");
                }
            }
        }
    }

    /// Tells every member of this node's NAT whenever the endpoint learns more of it.
    async fn info_loop(self) {
        let mut nat = self.inner.endpoint.nat_changes();
        while nat.changed().await.is_ok() {
            let body = info_body(*nat.borrow_and_update());
            for conn in lock(&self.inner.conns).values() {
                send(conn, MSG_INFO, &body);
            }
        }
    }

    /// Closes `conn` (and any retired connection to its peer) with `reason` and forgets its
    /// peer until it proves itself again.
    async fn cut_off(&self, conn: &Connection, reason: &str) {
        conn.quic.close(REFUSED.into(), reason.as_bytes());
        for retired in lock(&self.inner.retiring).iter() {
            if retired.remote == conn.remote {
                retired.quic.close(REFUSED.into(), reason.as_bytes());
            }
        }
        self.ended(conn);
        self.inner.endpoint.revoke(conn.remote).await;
    }

    /// A certificate `peer` sent: a renewal of ours (from an admin), or its own renewed one.
    fn take_cert(&self, peer: &NodeId, cert: SignedCert) {
        let membership = &self.inner.membership;
        let result = if cert.cert().node_id == self.inner.endpoint.node_id() {
            membership.renew(cert.clone()).map(|()| self.adopt(cert))
        } else {
            membership.renew_peer(peer, cert)
        };
        match result {
            Ok(()) => self.inner.certs_changed.notify_one(),
            Err(e) => tracing::debug!(peer = %peer.short(), "a certificate sent: {e}"),
        }
    }

    /// Keeps `cert`, just taken as this node's own, on disk and tells every member.
    fn adopt(&self, cert: SignedCert) {
        tracing::info!(
            not_after = cert.cert().not_after,
            serial = cert.cert().serial,
            "certificate renewed"
        );
        {
            let mut state = lock(&self.inner.state);
            state.cert = cert.clone();
            if let Err(e) = state.save_cert() {
                tracing::warn!("saving the renewed certificate: {e}");
            }
        }
        for conn in lock(&self.inner.conns).values() {
            send(conn, MSG_CERT, cert.as_bytes());
        }
    }

    /// Renews what is due and cuts off peers whose certificate lapsed, whenever something is
    /// due, a member connects or a certificate changes.
    async fn cert_loop(self) {
        loop {
            let next = self.check_certs().await;
            let wait = Duration::from_secs(next)
                .saturating_sub(crate::clock::since_epoch())
                .min(MAX_CERT_CHECK);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.certs_changed.notified() => {}
            }
        }
    }

    /// One look at the certificates: as an admin, renews this node's own (with the mesh key)
    /// and each connected member's that is due, sending it over; cuts off every peer whose
    /// certificate is no longer valid. Returns the unix second when something is due next.
    async fn check_certs(&self) -> u64 {
        let now = super::now();
        let mut next = u64::MAX;
        let (renewed, at) = self.renew(self.inner.membership.cert().cert(), now);
        if let Some(renewed) = renewed {
            if self.inner.membership.renew(renewed.clone()).is_ok() {
                self.adopt(renewed);
            }
        }
        next = next.min(at);
        let conns: Vec<MemberConn> = lock(&self.inner.conns).values().cloned().collect();
        for conn in conns {
            let peer = conn.remote;
            let Some(cert) = self.inner.membership.peer_cert(&peer) else {
                continue;
            };
            if let Err(e) = self.inner.membership.check(&peer, &cert) {
                let refusal = self.inner.membership.refusal(&e);
                tracing::info!(peer = %peer.short(), "cut off: {refusal}");
                self.cut_off(&conn, &refusal.reason).await;
                continue;
            }
            let (renewed, at) = self.renew(cert.cert(), now);
            let not_after = match renewed {
                Some(renewed) => {
                    tracing::info!(peer = %peer.short(), "renewing its certificate");
                    send(&conn, MSG_CERT, renewed.as_bytes());
                    let not_after = renewed.cert().not_after;
                    // It shows this one from now on.
                    let _ = self.inner.membership.renew_peer(&peer, renewed);
                    not_after
                }
                None => cert.cert().not_after,
            };
            next = next.min(at).min(not_after + 1);
        }
        next.max(now)
    }

    /// The renewal of `cert` this node signs at `now` if one is due, and the unix second when
    /// the next is (`u64::MAX`: none from this node).
    fn renew(&self, cert: &MemberCert, now: u64) -> (Option<SignedCert>, u64) {
        let state = lock(&self.inner.state);
        let Some(signer) = state.signer() else {
            return (None, u64::MAX);
        };
        match renewal::renewal(cert, &signer, self.inner.cert_validity, now) {
            Renewal::NotYet(at) => (None, at),
            Renewal::Never => (None, u64::MAX),
            Renewal::Due(next) => match next.sign(&signer) {
                Ok(signed) => {
                    let at = renewal::renew_at(signed.cert());
                    (Some(signed), at)
                }
                Err(e) => {
                    tracing::warn!("signing a renewal: {e}");
                    (None, u64::MAX)
                }
            },
        }
    }

    /// Redeems an invite for a node that dialled [`JOIN_ALPN`]: reads `token\nname`, issues its
    /// certificate and a roster that lists it, and answers with both; refuses with the reason
    /// otherwise.
    async fn serve_join(&self, conn: Connection) {
        let answer = async {
            loop {
                let (mut send, mut recv) = conn
                    .quic
                    .accept_bi()
                    .await
                    .map_err(|e| Refusal::new(format!("no request: {e}")))?;
                let mut kind = [0u8];
                recv.read_exact(&mut kind)
                    .await
                    .map_err(|_| Refusal::new("an empty request"))?;
                if kind[0] == JOIN_PAKE {
                    self.serve_pake(&conn.remote, &mut send, &mut recv).await?;
                    continue;
                }
                if kind[0] != JOIN_TOKEN {
                    return Err(Refusal::new("an unknown request"));
                }
                let request = recv
                    .read_to_end(MAX_JOIN_REQUEST)
                    .await
                    .map_err(|_| Refusal::new("unreadable or oversized request"))?;
                let reply = self.redeem(&conn.remote, &request)?;
                send.write_all(&reply)
                    .await
                    .map_err(|e| Refusal::new(format!("answering: {e}")))?;
                let _ = send.finish();
                return Ok::<(), Refusal>(());
            }
        };
        match tokio::time::timeout(JOIN_TIMEOUT, answer).await {
            Ok(Ok(())) => {
                // Let the new member's punching run; it redials over the mesh protocol.
                self.inner.endpoint.trust(conn.remote).await;
                let _ = tokio::time::timeout(Duration::from_secs(5), conn.quic.closed()).await;
            }
            Ok(Err(r)) => {
                tracing::info!(peer = %conn.remote.short(), "join refused: {r}");
                conn.quic.close(REFUSED.into(), r.reason.as_bytes());
            }
            Err(_) => conn.quic.close(REFUSED.into(), b"join timed out"),
        }
    }

    /// Runs the PAKE of the short code the joiner's first message names, on one stream.
    async fn serve_pake(
        &self,
        joiner: &NodeId,
        send: &mut crate::quinn::SendStream,
        recv: &mut crate::quinn::RecvStream,
    ) -> Result<(), Refusal> {
        let mut rendezvous = None;
        loop {
            let Some(msg) = read_frame(recv).await? else {
                return Ok(());
            };
            if rendezvous.is_none() {
                if let Ok(pake::Message::Start { rendezvous: r, .. }) = pake::Message::decode(&msg)
                {
                    rendezvous = Some(String::from_utf8_lossy(&r).into_owned());
                }
            }
            let mut out = Vec::new();
            let mut done = false;
            {
                let mut invites = lock(&self.inner.invites);
                let Some(key) = rendezvous.clone() else {
                    return Err(Refusal::new("a PAKE that does not start with Start"));
                };
                let (mut guessed, mut burned) = (false, None);
                match invites.code_mut(&key) {
                    None => {
                        out.push(pake::Message::Refused(pake::Failure::UnknownCode).encode());
                        done = true;
                    }
                    Some(code) => {
                        code.core.handle_input(
                            Instant::now(),
                            inviter::Input::Message {
                                from: *joiner,
                                bytes: &msg,
                            },
                        );
                        loop {
                            match code.core.poll_output() {
                                inviter::Output::Transmit(t) if t.to == *joiner => {
                                    out.push(t.bytes)
                                }
                                inviter::Output::Transmit(_) => {}
                                inviter::Output::Event(inviter::Event::Burned) => {
                                    // Its core refuses every later try; the token goes.
                                    tracing::info!("a short code burned after wrong guesses");
                                    burned = Some(code.invite_id);
                                    done = true;
                                    break;
                                }
                                inviter::Output::Event(inviter::Event::Joined { .. }) => {
                                    done = true
                                }
                                inviter::Output::Event(inviter::Event::Failed {
                                    reason, ..
                                }) => {
                                    tracing::info!(peer = %joiner.short(), "short code: {reason}");
                                    guessed |= reason == pake::Failure::WrongCode;
                                    done = true;
                                }
                                inviter::Output::Timeout(_) => break,
                            }
                        }
                    }
                }
                if let Some(id) = burned {
                    invites.burn(&id);
                }
                // A wrong guess counts before the joiner hears of it, so that a restart does
                // not forget it.
                if guessed || burned.is_some() {
                    if let Err(e) = invites.save(super::now()) {
                        tracing::warn!("recording a wrong guess at a short code: {e}");
                    }
                }
            }
            for bytes in out {
                write_frame(send, &bytes).await?;
            }
            if done {
                let _ = send.finish();
                return Ok(());
            }
        }
    }

    fn redeem(&self, joiner: &NodeId, request: &[u8]) -> Result<Vec<u8>, Refusal> {
        let text = std::str::from_utf8(request).map_err(|_| Refusal::new("not text"))?;
        let (token, name) = text.split_once('\n').unwrap_or((text, ""));
        let token: SignedInvite = token
            .trim()
            .parse()
            .map_err(|e: MeshError| Refusal::new(format!("invite: {e}")))?;
        let roster = self.roster();
        let state = lock(&self.inner.state);
        let now = super::now();
        token
            .verify(&state.mesh_id, now, Some(&roster))
            .map_err(|e| Refusal::new(format!("invite: {e}")))?;
        let mut invites = lock(&self.inner.invites);
        invites.check(&token)?;
        if roster.roster().is_revoked(joiner) {
            return Err(Refusal::new("this node was revoked from the mesh"));
        }
        let signer = state
            .signer()
            .ok_or_else(|| Refusal::new("the inviter can no longer sign"))?;
        let members = &roster.roster().members;
        let name = match name.trim() {
            "" => joiner.short(),
            n => n.to_owned(),
        };
        if members.iter().any(|(id, e)| e.name == name && id != joiner) {
            return Err(Refusal::new(format!(
                "the name {name} is taken in the mesh"
            )));
        }
        let number = members.values().map(|e| e.number).max().unwrap_or(0) + 1;
        let (not_before, not_after) = renewal::validity(now, self.inner.cert_validity, &signer);
        let cert = MemberCert {
            mesh_id: state.mesh_id,
            node_id: *joiner,
            name: name.clone(),
            number,
            role: Role::Member,
            not_before,
            not_after,
            serial: u64::from(number),
        }
        .sign(&signer)
        .map_err(|e| Refusal::new(format!("certificate: {e}")))?;
        let mut next = roster.roster().clone();
        next.members.insert(
            *joiner,
            RosterEntry {
                name,
                number,
                role: Role::Member,
            },
        );
        next.version += 1;
        let next = next
            .sign(&signer)
            .map_err(|e| Refusal::new(format!("roster: {e}")))?;
        // Written down before the answer goes out.
        invites.use_one(&token, now)?;
        drop((invites, state));
        self.inner
            .membership
            .offer(next.clone())
            .map_err(|e| Refusal::new(format!("roster: {e}")))?;
        Ok(encode_proof(&cert, &next))
    }
}

/// How a node joined: the path its connection to the inviter took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined {
    /// The mesh's name.
    pub mesh: String,
    /// `direct` or `relay`, when the inviter answered.
    pub path: &'static str,
    /// The inviter's direct address, or the relay's URL.
    pub remote_addr: Option<String>,
}

/// Redeems `token` at its inviter as a member called `name`, and writes the mesh state into
/// `dir` (where the node's key is created if missing). Within a Tokio runtime.
pub async fn join(
    dir: &std::path::Path,
    token: &SignedInvite,
    name: Option<&str>,
    opts: NodeOptions,
) -> Result<(MeshState, Joined), NodeError> {
    crate::paths::private_dir(dir).map_err(StateError::from)?;
    if dir.join("mesh.json").exists() {
        return Err(StateError::Exists(dir.to_owned()).into());
    }
    let invite = token.invite();
    token.verify(&invite.mesh_id, super::now(), None)?;
    let key_path = dir.join("node.key");
    let key = crate::keyfile::load_or_create(&key_path).map_err(StateError::from)?;
    let relays = invite.inviter.relays.clone();
    let ep = bind_on_known_port(
        dir,
        key,
        EndpointOptions {
            bind_v4: opts.bind_v4,
            bind_v6: opts.bind_v6,
            relays: relays.clone(),
            stun_servers: opts.stun_servers,
            // It accepts nothing; the endpoint wants a protocol all the same.
            alpns: vec![JOIN_ALPN.to_vec()],
            ..Default::default()
        },
    )
    .await?;
    let result = async {
        let conn = ep.connect(&invite.inviter, JOIN_ALPN).await?;
        let (mut send, mut recv) = conn.quic.open_bi().await.map_err(ConnectError::from)?;
        let request = format!("{}{token}\n{}", JOIN_TOKEN as char, name.unwrap_or(""));
        let refused = |conn: &Connection, e: String| match conn.quic.close_reason() {
            Some(crate::quinn::ConnectionError::ApplicationClosed(c)) => {
                NodeError::Join(String::from_utf8_lossy(&c.reason).into_owned())
            }
            _ => NodeError::Join(e),
        };
        send.write_all(request.as_bytes())
            .await
            .map_err(|e| refused(&conn, e.to_string()))?;
        let _ = send.finish();
        let reply = recv
            .read_to_end(MAX_MESSAGE_LEN)
            .await
            .map_err(|e| refused(&conn, e.to_string()))?;
        let path = PathView::from(&ep.path(&conn.remote));
        conn.quic.close(0u32.into(), b"joined");
        let (cert, roster) = decode_proof(&reply).map_err(NodeError::Join)?;
        roster.verify(&invite.mesh_id, super::now())?;
        roster.check_member(&ep.node_id(), &cert, super::now())?;
        Ok::<_, NodeError>((cert, roster, path))
    }
    .await;
    ep.close().await;
    let (cert, roster, path) = result?;
    let state = MeshState::joined(dir, invite.mesh_name.clone(), relays, cert, roster)?;
    let joined = Joined {
        mesh: invite.mesh_name.clone(),
        path: path.path.as_str(),
        remote_addr: path.remote_addr,
    };
    Ok((state, joined))
}

/// The file in a mesh directory that keeps the node's UDP port.
const PORT_FILE: &str = "port";
/// How long a node waits for the port it used last to be let go (by an endpoint of this
/// process that just closed on it, as after [`join`]) before it takes another.
const PORT_RELEASE_WAIT: Duration = Duration::from_millis(500);

/// Binds an endpoint for the node whose mesh directory is `dir` on the IPv4 port it used last,
/// unless `options` names one: the NAT tends to keep the same public mapping for the same
/// socket, so the direct paths members hold (and the path found while joining) stay good
/// across a restart. Another port if that one is taken; the port bound is kept for next time.
async fn bind_on_known_port(
    dir: &std::path::Path,
    key: crate::SecretKey,
    mut options: EndpointOptions,
) -> Result<Endpoint, BindError> {
    let asked = options.bind_v4;
    let file = dir.join(PORT_FILE);
    let known = crate::paths::read_private_file(&file)
        .ok()
        .flatten()
        .and_then(|p| p.trim().parse::<u16>().ok());
    if let (0, Some(port)) = (asked.port(), known) {
        options.bind_v4.set_port(port);
    }
    let started = Instant::now();
    let endpoint = loop {
        match Endpoint::bind(key.clone(), options.clone()).await {
            // The endpoint that joined on it may be closing still: its socket goes once the
            // runtime has run its driver to the end.
            Err(BindError::Bind { source, .. })
                if options.bind_v4 != asked
                    && source.kind() == std::io::ErrorKind::AddrInUse
                    && started.elapsed() < PORT_RELEASE_WAIT =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(BindError::Bind { .. }) if options.bind_v4 != asked => {
                options.bind_v4 = asked;
                break Endpoint::bind(key, options).await?;
            }
            bound => break bound?,
        }
    };
    if let Ok(addr) = endpoint.local_addr() {
        if Some(addr.port()) != known {
            if let Err(e) =
                crate::paths::replace_private_file(&file, addr.port().to_string().as_bytes())
            {
                tracing::warn!("keeping the node's port: {e}");
            }
        }
    }
    Ok(endpoint)
}

/// Sends `conn`'s peer one message, `kind` and `body`, on a unidirectional stream of its own
/// (in the background).
fn send(conn: &Connection, kind: u8, body: &[u8]) {
    let mut msg = Vec::with_capacity(1 + body.len());
    msg.push(kind);
    msg.extend_from_slice(body);
    let conn = conn.clone();
    tokio::spawn(async move {
        if let Ok(mut s) = conn.quic.open_uni().await {
            let _ = s.write_all(&msg).await;
            let _ = s.finish();
        }
    });
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads one `u32`-framed message (at most [`pake::MAX_MESSAGE_LEN`]); `None` at the end.
async fn read_frame(recv: &mut crate::quinn::RecvStream) -> Result<Option<Vec<u8>>, Refusal> {
    let mut len = [0u8; 4];
    if recv.read_exact(&mut len).await.is_err() {
        return Ok(None);
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > pake::MAX_MESSAGE_LEN {
        return Err(Refusal::new("an oversized PAKE message"));
    }
    let mut msg = vec![0; len];
    recv.read_exact(&mut msg)
        .await
        .map_err(|_| Refusal::new("a cut PAKE message"))?;
    Ok(Some(msg))
}

async fn write_frame(send: &mut crate::quinn::SendStream, msg: &[u8]) -> Result<(), Refusal> {
    let mut frame = (msg.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(msg);
    send.write_all(&frame)
        .await
        .map_err(|e| Refusal::new(format!("writing: {e}")))
}

/// Finds the inviter of short code `code` under its rendezvous namespace at `relays`, proves
/// the code's password to it, and joins with the token it hands over, as [`join`] does.
pub async fn join_code(
    dir: &std::path::Path,
    code: &ShortCode,
    relays: &[crate::relay_client::RelayUrl],
    name: Option<&str>,
    opts: NodeOptions,
) -> Result<(MeshState, Joined), NodeError> {
    let listed = crate::lookup::list_members(&code.namespace(), None, relays, None)
        .await
        .map_err(|e| NodeError::Join(format!("finding the inviter: {e}")))?;
    let candidates: Vec<Ticket> = listed.members.iter().filter_map(|m| m.ticket()).collect();
    if candidates.is_empty() {
        return Err(NodeError::Join(format!(
            "no inviter is listed for {code} at {} relay(s): is its node up, and the code right?",
            relays.len()
        )));
    }
    crate::paths::private_dir(dir).map_err(StateError::from)?;
    let key = crate::keyfile::load_or_create(&dir.join("node.key")).map_err(StateError::from)?;
    let ep = bind_on_known_port(
        dir,
        key.clone(),
        EndpointOptions {
            bind_v4: opts.bind_v4,
            bind_v6: opts.bind_v6,
            relays: relays.to_vec(),
            stun_servers: opts.stun_servers.clone(),
            alpns: vec![JOIN_ALPN.to_vec()],
            ..Default::default()
        },
    )
    .await?;
    let mut last = NodeError::Join("no inviter answered".into());
    let mut token = None;
    for ticket in candidates {
        match redeem_code(&ep, &ticket, code).await {
            Ok(t) => {
                token = Some(t);
                break;
            }
            Err(e) => last = e,
        }
    }
    ep.close().await;
    let token = token.ok_or(last)?;
    join(dir, &token, name, opts).await
}

/// Joins with `invite`, a token or a short code (`MESH-…`, found at `relays`; a token names
/// its own), as [`join`] or [`join_code`] does; with no STUN servers in `opts`, those beside
/// the relays ([`crate::relay_client::relay_stun_servers`]).
pub async fn join_any(
    dir: &std::path::Path,
    invite: &str,
    relays: &[crate::relay_client::RelayUrl],
    name: Option<&str>,
    mut opts: NodeOptions,
) -> Result<(MeshState, Joined), NodeError> {
    let invite = invite.trim();
    if invite
        .get(..burrow_proto::mesh::code::PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(burrow_proto::mesh::code::PREFIX))
    {
        let code: ShortCode = invite.parse()?;
        if relays.is_empty() {
            return Err(NodeError::Join(
                "a short code needs a relay: the one where its inviter is listed".into(),
            ));
        }
        if opts.stun_servers.is_empty() {
            opts.stun_servers = crate::relay_client::relay_stun_servers(relays).await;
        }
        join_code(dir, &code, relays, name, opts).await
    } else {
        let token: SignedInvite = invite.parse().map_err(NodeError::Token)?;
        if opts.stun_servers.is_empty() {
            let relays = &token.invite().inviter.relays;
            opts.stun_servers = crate::relay_client::relay_stun_servers(relays).await;
        }
        join(dir, &token, name, opts).await
    }
}

/// Runs the joiner's side of the PAKE with `ticket`'s node; the token it hands over.
async fn redeem_code(
    ep: &Endpoint,
    ticket: &Ticket,
    code: &ShortCode,
) -> Result<SignedInvite, NodeError> {
    let conn = ep.connect(ticket, JOIN_ALPN).await?;
    let (mut send, mut recv) = conn.quic.open_bi().await.map_err(ConnectError::from)?;
    let broke = |r: Refusal| NodeError::Join(r.reason);
    send.write_all(&[JOIN_PAKE])
        .await
        .map_err(|e| NodeError::Join(e.to_string()))?;
    let config = joiner::Config::new(ep.node_id(), ticket.node_id, code.clone());
    let mut core = joiner::Joiner::new(config, rand::random());
    core.handle_input(Instant::now(), joiner::Input::Start);
    let result = loop {
        match core.poll_output() {
            joiner::Output::Transmit(bytes) => {
                write_frame(&mut send, &bytes).await.map_err(broke)?
            }
            joiner::Output::Event(joiner::Event::Joined { payload, .. }) => break Ok(payload),
            joiner::Output::Event(joiner::Event::Failed(f)) => {
                break Err(NodeError::Join(f.to_string()))
            }
            joiner::Output::Timeout(_) => {
                let msg = tokio::time::timeout(pake::DEFAULT_TIMEOUT, read_frame(&mut recv))
                    .await
                    .map_err(|_| NodeError::Join("no answer from the inviter in time".into()))?
                    .map_err(broke)?
                    .ok_or_else(|| NodeError::Join("the inviter ended the exchange".into()))?;
                core.handle_input(Instant::now(), joiner::Input::Message(&msg));
            }
        }
    };
    conn.quic.close(0u32.into(), b"done");
    let payload = result?;
    let text = String::from_utf8(payload)
        .map_err(|_| NodeError::Join("a token that is not text".into()))?;
    Ok(text.parse()?)
}
