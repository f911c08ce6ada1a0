//! Roster propagation in a mesh of `--roster-members` members, simulated in memory on a
//! virtual clock: every node is a real [`Membership`] (real certificates, rosters and
//! signatures, the real merge), and messages carry the real encodings; only the network is
//! modelled, as a one-way latency per link drawn from the seed. Nothing sleeps.
//!
//! What the model takes from [`burrow::mesh::node`]:
//!
//! * Connections: every online member is connected to every other one and to the admin (each
//!   member dials every member the roster lists).
//! * `roster_loop`: when the roster a node holds changes, it sends [`MSG_ROSTER`] + the roster
//!   on every connection it has, the one it heard it on included; a receiver drops a copy of
//!   the roster it holds unread, and decodes any other and offers it to its [`Membership`]
//!   (`read_messages`), which keeps it if it is newer.
//! * A member that comes back dials every online member at its dial loop's first round; on each new connection both ends show their proof (the
//!   certificate and the roster they hold) once the handshake completes on their side: the
//!   dialler after one round trip, the listener when the dialler's last handshake packet
//!   arrives (1.5 round trips), so the dialler has the listener's roster after two round trips.
//!   The members it dials do not dial it first (their redials back off up to 30 s).
//!
//! The update: the admin (holding the mesh key, as after `burrow init`) signs the next version
//! with one more member, as when it lets a node join, at virtual time 0.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use burrow::endpoint::{Credentials, Side};
use burrow::mesh::membership::Membership;
use burrow::mesh::{MeshId, MSG_ROSTER};
use burrow::{NodeId, SecretKey};
use burrow_proto::mesh::cert::{MemberCert, Role, SignedCert};
use burrow_proto::mesh::roster::{Roster, RosterEntry, SignedRoster};
use burrow_proto::mesh::signer::Signer;
use burrow_proto::mesh::MeshError;
use burrow_proto::Rng;
use serde::Serialize;

use super::Spread;

/// How long after it starts a node first looks for members to dial (`DIAL_TICK` in
/// `burrow::mesh::node`).
const DIAL_TICK: Duration = Duration::from_millis(500);
/// Certificates' validity: fixed, so that every encoding depends on the seed alone.
const NOT_BEFORE: u64 = 0;
const NOT_AFTER: u64 = 4_102_444_800; // 2100-01-01

/// What the simulation is given.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Config {
    /// Members besides the admin.
    pub members: usize,
    /// Of those, how many are offline when the update is signed.
    pub offline: usize,
    /// One-way link latency, drawn uniformly per pair of nodes.
    pub min_latency_ms: u64,
    pub max_latency_ms: u64,
    /// Offline members come back at a time drawn uniformly from this range.
    pub return_from_ms: u64,
    pub return_until_ms: u64,
    /// Trial `i` uses seed `seed + i`.
    pub seed: u64,
    pub trials: u32,
}

/// One trial's figures.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Trial {
    pub seed: u64,
    /// Virtual time until every member online at 0 holds the new version.
    pub online_all_ms: f64,
    /// One hop from the admin over its slowest link to a member online at 0: when every
    /// member would hold it if the admin alone sent it, to each.
    pub one_hop_ms: f64,
    /// For the members that came back: virtual time from their return until they held it.
    pub returned_ms: Vec<f64>,
    /// Virtual time until every member holds it.
    pub all_ms: f64,
    /// [`MSG_ROSTER`] messages sent, and their bytes (type byte + roster).
    pub pushes: u64,
    pub push_bytes: u64,
    /// Proofs (certificate + roster) shown on the returning members' new connections.
    pub proofs: u64,
    pub proof_bytes: u64,
    /// Roster-carrying messages (pushes and proofs) each member received, admin excluded.
    pub received_per_member: Vec<u64>,
    /// Of those, the ones no newer than what the member held.
    pub stale: u64,
    /// The signed new roster's length.
    pub roster_len: usize,
    /// Real time the receivers spent decoding and merging each message, in microseconds.
    pub cpu_us_per_message: Vec<f64>,
}

/// The figures over all trials.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub config: Config,
    /// Medians (and ranges) over trials.
    pub online_all_ms: Spread,
    /// [`Trial::one_hop_ms`]: the anchor for `online_all_ms`.
    pub one_hop_ms: Spread,
    /// Over every returning member of every trial.
    pub returned_ms: Spread,
    pub all_ms: Spread,
    pub total_bytes: Spread,
    pub push_bytes: Spread,
    pub proof_bytes: Spread,
    /// Every member receiving the new roster once, in one push: the anchor for the bytes.
    pub ideal_bytes: f64,
    /// Over every member of every trial.
    pub received_per_member: Spread,
    /// Stale messages as a share of all received, percent.
    pub stale_pct: Spread,
    pub roster_len: usize,
    /// Over every message of every trial.
    pub cpu_us_per_message: Spread,
    /// Each trial's real decode + merge time, summed over its messages, per member.
    pub cpu_ms_per_member: Spread,
    pub trials: Vec<Trial>,
}

/// Runs every trial.
pub(crate) fn run(config: &Config) -> Result<Report> {
    ensure!(config.members > 0, "--roster-members must be at least 1");
    ensure!(
        config.offline <= config.members,
        "--offline {} is more than --roster-members {}",
        config.offline,
        config.members
    );
    ensure!(
        config.min_latency_ms <= config.max_latency_ms
            && config.return_from_ms <= config.return_until_ms,
        "a range whose start is after its end"
    );
    let mut trials = Vec::new();
    for i in 0..config.trials {
        let seed = config.seed.wrapping_add(u64::from(i));
        let t = Sim::new(config, seed)?.run()?;
        eprintln!(
            "roster: seed {seed}: online members hold it after {:.1} ms, all after {:.1} ms; \
             {} pushes, {} proofs, {:.0} KB",
            t.online_all_ms,
            t.all_ms,
            t.pushes,
            t.proofs,
            (t.push_bytes + t.proof_bytes) as f64 / 1e3
        );
        trials.push(t);
    }
    let over = |f: &dyn Fn(&Trial) -> f64| Spread::of(trials.iter().map(f).collect());
    let flat = |f: &dyn Fn(&Trial) -> Vec<f64>| Spread::of(trials.iter().flat_map(f).collect());
    let roster_len = trials.first().map_or(0, |t| t.roster_len);
    Ok(Report {
        config: config.clone(),
        online_all_ms: over(&|t| t.online_all_ms),
        one_hop_ms: over(&|t| t.one_hop_ms),
        returned_ms: flat(&|t| t.returned_ms.clone()),
        all_ms: over(&|t| t.all_ms),
        total_bytes: over(&|t| (t.push_bytes + t.proof_bytes) as f64),
        push_bytes: over(&|t| t.push_bytes as f64),
        proof_bytes: over(&|t| t.proof_bytes as f64),
        ideal_bytes: (config.members * (1 + roster_len)) as f64,
        received_per_member: flat(&|t| t.received_per_member.iter().map(|&n| n as f64).collect()),
        stale_pct: over(&|t| {
            100.0 * t.stale as f64 / t.received_per_member.iter().sum::<u64>().max(1) as f64
        }),
        roster_len,
        cpu_us_per_message: flat(&|t| t.cpu_us_per_message.clone()),
        cpu_ms_per_member: over(&|t| {
            t.cpu_us_per_message.iter().sum::<f64>() / 1e3 / config.members as f64
        }),
        trials,
    })
}

/// Something that happens at a virtual time.
enum Event {
    /// A roster push arrives at `to`.
    Push { to: usize, msg: Arc<Vec<u8>> },
    /// An offline node comes back (starts its daemon).
    Return { node: usize },
    /// A returned node dials every online node it has no connection to.
    DialAll { node: usize },
    /// `from`'s handshake with `to` completed on its side: it shows its proof.
    ShowProof { from: usize, to: usize, side: Side },
    /// That proof arrives; `side` is the receiver's.
    Proof {
        to: usize,
        from: usize,
        proof: Vec<u8>,
        side: Side,
    },
}

struct Node {
    id: NodeId,
    membership: Membership,
    rosters: tokio::sync::watch::Receiver<SignedRoster>,
    online: bool,
    /// Nodes it has a connection to (admitted, registered).
    links: BTreeSet<usize>,
    /// Nodes it has a connection to or is connecting to.
    dialled: BTreeSet<usize>,
    returned_at: Option<u64>,
    held_at: Option<u64>,
    received: u64,
}

/// One trial: node 0 is the admin.
struct Sim {
    nodes: Vec<Node>,
    /// One-way latency between each pair, microseconds.
    latency: Vec<Vec<u64>>,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: std::collections::HashMap<u64, Event>,
    seq: u64,
    next: SignedRoster,
    seed: u64,
    pushes: u64,
    push_bytes: u64,
    proofs: u64,
    proof_bytes: u64,
    stale: u64,
    cpu_us: Vec<f64>,
}

impl Sim {
    /// The mesh of `config` for `seed`: keys, certificates, the current roster listing every
    /// node, the next one, latencies and who is offline, all drawn from the seed.
    fn new(config: &Config, seed: u64) -> Result<Sim> {
        let mut rng = Rng::new(seed);
        let mesh_key = SecretKey::from_bytes(rng.bytes());
        let mesh_id = MeshId::of(&mesh_key);
        let signer = Signer::Mesh(&mesh_key);
        let n = config.members + 1;
        let keys: Vec<SecretKey> = (0..n).map(|_| SecretKey::from_bytes(rng.bytes())).collect();
        let entry = |i: usize| RosterEntry {
            name: if i == 0 {
                "admin".into()
            } else {
                format!("m{i}")
            },
            number: i as u32 + 1,
            role: if i == 0 { Role::Admin } else { Role::Member },
        };
        let mut roster = Roster::new(mesh_id, 1);
        for (i, key) in keys.iter().enumerate() {
            roster.members.insert(key.node_id(), entry(i));
        }
        let current = roster.sign(&signer)?;
        // The next version: one more member, as a join makes it.
        let newcomer = SecretKey::from_bytes(rng.bytes()).node_id();
        roster.members.insert(newcomer, entry(n));
        roster.version += 1;
        let next = roster.sign(&signer)?;

        let range = |rng: &mut Rng, lo: u64, hi: u64| lo + rng.next_u64() % (hi - lo + 1);
        let mut latency = vec![vec![0; n]; n];
        for (i, j) in (0..n).flat_map(|i| (i + 1..n).map(move |j| (i, j))) {
            let us = range(
                &mut rng,
                config.min_latency_ms * 1000,
                config.max_latency_ms * 1000,
            );
            latency[i][j] = us;
            latency[j][i] = us;
        }
        // Who is offline: a seeded shuffle of the members, admin excluded.
        let mut order: Vec<usize> = (1..n).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        let offline: Vec<usize> = order[..config.offline].to_vec();

        let mut nodes = Vec::with_capacity(n);
        for (i, key) in keys.iter().enumerate() {
            let e = entry(i);
            let cert: SignedCert = MemberCert {
                mesh_id,
                node_id: key.node_id(),
                name: e.name,
                number: e.number,
                role: e.role,
                not_before: NOT_BEFORE,
                not_after: NOT_AFTER,
                serial: u64::from(e.number),
            }
            .sign(&signer)?;
            let membership =
                Membership::new(mesh_id, "sim".into(), cert, current.clone(), Duration::ZERO);
            let rosters = membership.rosters();
            nodes.push(Node {
                id: key.node_id(),
                membership,
                rosters,
                online: !offline.contains(&i),
                links: BTreeSet::new(),
                dialled: BTreeSet::new(),
                returned_at: None,
                held_at: None,
                received: 0,
            });
        }
        let online: Vec<usize> = (0..n).filter(|&i| nodes[i].online).collect();
        for &i in &online {
            nodes[i].links = online.iter().copied().filter(|&j| j != i).collect();
            nodes[i].dialled = nodes[i].links.clone();
        }
        let mut sim = Sim {
            nodes,
            latency,
            queue: BinaryHeap::new(),
            events: Default::default(),
            seq: 0,
            next,
            seed,
            pushes: 0,
            push_bytes: 0,
            proofs: 0,
            proof_bytes: 0,
            stale: 0,
            cpu_us: Vec::new(),
        };
        for &node in &offline {
            let at = range(
                &mut rng,
                config.return_from_ms * 1000,
                config.return_until_ms * 1000,
            );
            sim.at(at, Event::Return { node });
        }
        Ok(sim)
    }

    fn at(&mut self, time: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((time, self.seq)));
        self.events.insert(self.seq, event);
    }

    fn run(mut self) -> Result<Trial> {
        // The admin signs the update at 0: its roster changes.
        self.nodes[0].membership.offer(self.next.clone())?;
        self.roster_changed(0, 0);
        while let Some(Reverse((now, seq))) = self.queue.pop() {
            let event = self.events.remove(&seq).context("scheduled")?;
            self.handle(now, event)?;
        }
        let members = &self.nodes[1..];
        if let Some(m) = members.iter().find(|m| m.held_at.is_none()) {
            bail!("seed {}: {} never got the new roster", self.seed, m.id);
        }
        let ms = |us: u64| us as f64 / 1e3;
        let held = |m: &Node| m.held_at.unwrap_or_default();
        Ok(Trial {
            seed: self.seed,
            online_all_ms: ms(members
                .iter()
                .filter(|m| m.returned_at.is_none())
                .map(held)
                .max()
                .unwrap_or_default()),
            one_hop_ms: ms((1..self.nodes.len())
                .filter(|&m| self.nodes[m].returned_at.is_none())
                .map(|m| self.latency[0][m])
                .max()
                .unwrap_or_default()),
            returned_ms: members
                .iter()
                .filter_map(|m| Some(ms(held(m) - m.returned_at?)))
                .collect(),
            all_ms: ms(members.iter().map(held).max().unwrap_or_default()),
            pushes: self.pushes,
            push_bytes: self.push_bytes,
            proofs: self.proofs,
            proof_bytes: self.proof_bytes,
            received_per_member: members.iter().map(|m| m.received).collect(),
            stale: self.stale,
            roster_len: self.next.as_bytes().len(),
            cpu_us_per_message: self.cpu_us,
        })
    }

    fn handle(&mut self, now: u64, event: Event) -> Result<()> {
        match event {
            Event::Push { to, msg } => {
                let node = &self.nodes[to];
                // As `read_messages` does.
                let start = Instant::now();
                let result = match msg.split_first() {
                    // A copy of the roster held is dropped unread.
                    Some((&MSG_ROSTER, body)) if body == node.membership.roster().as_bytes() => {
                        Err(MeshError::Stale {
                            version: 0,
                            current: 0,
                        })
                    }
                    Some((&MSG_ROSTER, body)) => {
                        SignedRoster::decode(body).and_then(|roster| node.membership.offer(roster))
                    }
                    _ => bail!("not a roster message"),
                };
                self.cpu_us.push(start.elapsed().as_secs_f64() * 1e6);
                self.nodes[to].received += 1;
                match result {
                    Ok(()) => self.roster_changed(to, now),
                    Err(MeshError::Stale { .. }) => self.stale += u64::from(to != 0),
                    Err(e) => bail!("a push refused: {e}"),
                }
            }
            Event::Return { node } => {
                self.nodes[node].online = true;
                self.nodes[node].returned_at = Some(now);
                self.at(now + micros(DIAL_TICK), Event::DialAll { node });
            }
            Event::DialAll { node } => {
                let targets: Vec<usize> = (0..self.nodes.len())
                    .filter(|&p| {
                        p != node && self.nodes[p].online && !self.nodes[node].dialled.contains(&p)
                    })
                    .collect();
                for p in targets {
                    let l = self.latency[node][p];
                    self.nodes[node].dialled.insert(p);
                    self.nodes[p].dialled.insert(node);
                    let (dialler, listener) = (
                        Event::ShowProof {
                            from: node,
                            to: p,
                            side: Side::Listener,
                        },
                        Event::ShowProof {
                            from: p,
                            to: node,
                            side: Side::Dialler,
                        },
                    );
                    self.at(now + 2 * l, dialler);
                    self.at(now + 3 * l, listener);
                }
            }
            Event::ShowProof { from, to, side } => {
                let proof = self.nodes[from].membership.proof();
                self.proofs += 1;
                self.proof_bytes += proof.len() as u64;
                let l = self.latency[from][to];
                self.at(
                    now + l,
                    Event::Proof {
                        to,
                        from,
                        proof,
                        side,
                    },
                );
            }
            Event::Proof {
                to,
                from,
                proof,
                side,
            } => {
                let peer = self.nodes[from].id;
                let node = &mut self.nodes[to];
                let start = Instant::now();
                let verdict = Credentials::check(&node.membership, &peer, &proof, side);
                self.cpu_us.push(start.elapsed().as_secs_f64() * 1e6);
                node.received += 1;
                verdict.map_err(|r| anyhow::anyhow!("a member refused: {r}"))?;
                let changed = node.rosters.has_changed().unwrap_or(false);
                if changed {
                    self.roster_changed(to, now);
                } else {
                    self.stale += u64::from(to != 0);
                }
                // Registered after its admission, which is where the roster changed.
                self.nodes[to].links.insert(from);
            }
        }
        Ok(())
    }

    /// `roster_loop`: the new roster to every connection.
    fn roster_changed(&mut self, node: usize, now: u64) {
        let n = &mut self.nodes[node];
        let roster = n.rosters.borrow_and_update().clone();
        if roster.roster().version >= self.next.roster().version {
            n.held_at.get_or_insert(now);
        }
        let mut msg = vec![MSG_ROSTER];
        msg.extend_from_slice(roster.as_bytes());
        let msg = Arc::new(msg);
        let links: Vec<usize> = n.links.iter().copied().collect();
        for to in links {
            self.pushes += 1;
            self.push_bytes += msg.len() as u64;
            let l = self.latency[node][to];
            self.at(
                now + l,
                Event::Push {
                    to,
                    msg: msg.clone(),
                },
            );
        }
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(members: usize, offline: usize) -> Config {
        Config {
            members,
            offline,
            min_latency_ms: 5,
            max_latency_ms: 80,
            return_from_ms: 1000,
            return_until_ms: 10_000,
            seed: 7,
            trials: 1,
        }
    }

    #[test]
    fn every_member_gets_the_new_roster_and_the_same_seed_gives_the_same_figures() {
        let a = Sim::new(&config(12, 3), 7).unwrap().run().unwrap();
        let b = Sim::new(&config(12, 3), 7).unwrap().run().unwrap();
        assert_eq!(a.returned_ms.len(), 3);
        assert_eq!(
            (a.online_all_ms, a.all_ms, a.push_bytes, a.proof_bytes),
            (b.online_all_ms, b.all_ms, b.push_bytes, b.proof_bytes)
        );
        // Within the link latencies; the members that came back seconds later, after that.
        assert!(a.online_all_ms >= 5.0 && a.online_all_ms <= 80.0, "{a:?}");
        assert!(a.returned_ms.iter().all(|&ms| ms > 0.0), "{a:?}");
        assert!(a.all_ms >= 1000.0, "{a:?}");
        let c = Sim::new(&config(12, 3), 8).unwrap().run().unwrap();
        assert_ne!(a.online_all_ms, c.online_all_ms);
    }

    #[test]
    fn a_lone_returning_member_waits_for_its_dial_tick_and_two_round_trips() {
        let t = Sim::new(&config(12, 1), 5).unwrap().run().unwrap();
        let back = t.returned_ms[0];
        assert!(
            (500.0 + 4.0 * 5.0..=500.0 + 4.0 * 80.0).contains(&back),
            "{t:?}"
        );
        // It dials the 11 others and the admin; each connection shows a proof each way.
        assert_eq!(t.proofs, 2 * 12, "{t:?}");
    }

    #[test]
    fn with_everyone_online_each_member_forwards_the_roster_once_to_every_other_node() {
        let t = Sim::new(&config(12, 0), 3).unwrap().run().unwrap();
        // The admin pushes to 12, each member to the other 11 and the admin.
        assert_eq!(t.pushes, 12 + 12 * 12, "{t:?}");
        assert_eq!(t.push_bytes, t.pushes * (1 + t.roster_len as u64));
        // Each member's first copy is news, the other 11 are stale.
        assert_eq!(t.stale, 12 * 11, "{t:?}");
        assert_eq!((t.proofs, t.all_ms), (0, t.online_all_ms));
    }
}
