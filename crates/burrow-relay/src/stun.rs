//! The STUN server: binds its sockets and answers on them with
//! [`burrow_proto::stun::server::StunServer`], handing TURN messages to [`crate::turn`].
//!
//! Plain threads with blocking sockets: the server keeps no per-client state, so there is
//! nothing to share but counters, and a blocking `recv_from` is the cheapest way to wait.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use burrow_proto::stun::server::{Alternate, Ignored, Outcome, Role, ServerConfig, StunServer};

use crate::turn::Handoff;

/// Largest datagram read; longer ones are truncated and then fail to parse. TURN's Send
/// indications and ChannelData carry whole datagrams for peers, so it is UDP's largest.
const RECV_BUFFER: usize = 65_536;
/// How often a blocked thread wakes to notice shutdown.
const SHUTDOWN_POLL: Duration = Duration::from_millis(200);

/// Counters of what the service has done. Read with [`StunService::stats`].
#[derive(Debug, Default)]
pub struct Stats {
    /// Binding success responses sent.
    pub responses: AtomicU64,
    /// Error responses (400, 420) sent.
    pub errors: AtomicU64,
    /// Datagrams that were not STUN.
    pub not_stun: AtomicU64,
    /// STUN messages that failed validation.
    pub malformed: AtomicU64,
    /// Responses and indications, which are never answered.
    pub not_request: AtomicU64,
    /// Sends that failed.
    pub send_failures: AtomicU64,
}

/// A running STUN service. Dropping it stops the threads.
pub struct StunService {
    addrs: Vec<(Role, SocketAddr)>,
    primary: Arc<UdpSocket>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// The STUN service's second port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AltPort {
    /// The listen port + 1; with listen port 0, any free port (a one-address server tells
    /// clients its second port, so it need not be the next one).
    #[default]
    Next,
    /// This port.
    Port(u16),
    /// No second port: a plain Binding server (not allowed with an alternate IP).
    Off,
}

impl AltPort {
    /// The second port that the settings `alt_port` (`--alt-port PORT`) and `no_alt_port`
    /// (`--no-alt-port`) ask for; they contradict each other.
    pub fn from_settings(port: Option<u16>, off: bool) -> Result<AltPort, StunServiceError> {
        match (port, off) {
            (Some(_), true) => Err(StunServiceError::Options(
                "--alt-port and --no-alt-port contradict each other",
            )),
            (Some(port), false) => Ok(AltPort::Port(port)),
            (None, true) => Ok(AltPort::Off),
            (None, false) => Ok(AltPort::Next),
        }
    }
}

/// Options for [`StunService::start`].
#[derive(Clone, Debug)]
pub struct StunOptions {
    /// Primary address.
    pub listen: SocketAddr,
    /// Alternate IP for RFC 5780 (CHANGE-REQUEST, OTHER-ADDRESS).
    pub alt_ip: Option<std::net::IpAddr>,
    /// The second port. With an alternate IP it is RFC 5780's alternate port; without one the
    /// server listens on it on the primary IP, so clients behind a symmetric NAT can tell.
    pub alt_port: AltPort,
    /// Threads reading the primary socket.
    pub threads: usize,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StunServiceError {
    /// A socket could not be bound.
    #[error("cannot bind {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The options do not make sense together.
    #[error("{0}")]
    Options(&'static str),
}

impl StunService {
    /// Binds every socket the configuration needs and starts answering.
    pub fn start(options: &StunOptions) -> Result<StunService, StunServiceError> {
        Self::start_with(options, None)
    }

    /// [`StunService::start`], handing TURN messages that reach the primary socket to `turn`.
    pub(crate) fn start_with(
        options: &StunOptions,
        turn: Option<Handoff>,
    ) -> Result<StunService, StunServiceError> {
        let bad = |why| Err(StunServiceError::Options(why));
        let listen = options.listen;
        let next_port = listen.port().checked_add(1);
        let bind = |addr: SocketAddr| -> Result<(SocketAddr, Arc<UdpSocket>), StunServiceError> {
            let err = |source| StunServiceError::Bind { addr, source };
            let socket = UdpSocket::bind(addr).map_err(err)?;
            socket.set_read_timeout(Some(SHUTDOWN_POLL)).map_err(err)?;
            Ok((socket.local_addr().map_err(err)?, Arc::new(socket)))
        };
        // Bind the primary first: with port 0 its real port is only known afterwards.
        let (primary, primary_socket) = bind(listen)?;
        let mut second = None;
        let alternate = match (options.alt_ip, options.alt_port) {
            (None, AltPort::Off) => Alternate::None,
            (None, port) => {
                let port = match port {
                    AltPort::Port(p) if p == listen.port() && p != 0 => {
                        return bad("the alternate port must differ from the listen port")
                    }
                    AltPort::Port(p) => p,
                    _ if listen.port() == 0 => 0,
                    _ => match next_port {
                        Some(p) => p,
                        None => return bad("no port after 65535 for the alternate port"),
                    },
                };
                let (addr, socket) = bind(SocketAddr::new(primary.ip(), port))?;
                second = Some((addr, socket));
                Alternate::Port(addr.port())
            }
            (Some(ip), port) => {
                if ip.is_ipv4() != listen.is_ipv4() {
                    return bad(
                        "the alternate IP must be of the same family as the listen address",
                    );
                }
                if ip == listen.ip() {
                    return bad("the alternate IP must differ from the listen IP");
                }
                let port = match (port, next_port) {
                    (AltPort::Off, _) => return bad("RFC 5780 needs an alternate port too"),
                    (AltPort::Port(p), _) => p,
                    (AltPort::Next, Some(p)) => p,
                    (AltPort::Next, None) => {
                        return bad("no port after 65535 for the alternate port")
                    }
                };
                if port == listen.port() || listen.port() == 0 {
                    return bad("RFC 5780 needs fixed, distinct primary and alternate ports");
                }
                Alternate::Address(SocketAddr::new(ip, port))
            }
        };
        let server = Arc::new(StunServer::new(ServerConfig {
            primary,
            alternate,
            software: Some(format!("burrow {}", env!("CARGO_PKG_VERSION"))),
        }));
        let mut sockets = vec![(Role::PRIMARY, primary, primary_socket)];
        for (role, addr) in server.roles().into_iter().skip(1) {
            let (addr, socket) = match second.take() {
                Some(bound) => bound,
                None => bind(addr)?,
            };
            sockets.push((role, addr, socket));
        }
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let all: Arc<Vec<(Role, Arc<UdpSocket>)>> = Arc::new(
            sockets
                .iter()
                .map(|(role, _, s)| (*role, Arc::clone(s)))
                .collect(),
        );
        let mut threads = Vec::new();
        for (i, (role, addr, _)) in sockets.iter().enumerate() {
            let count = if *role == Role::PRIMARY {
                options.threads.max(1)
            } else {
                1
            };
            for _ in 0..count {
                let (server, stats, stop, all) = (
                    Arc::clone(&server),
                    Arc::clone(&stats),
                    Arc::clone(&stop),
                    Arc::clone(&all),
                );
                let role = *role;
                // TURN is served on the primary address only.
                let turn = turn.clone().filter(|_| role == Role::PRIMARY);
                let thread = std::thread::Builder::new()
                    .name(format!("stun-{addr}"))
                    .spawn(move || serve(i, role, &server, &all, &stats, &stop, turn.as_ref()))
                    .map_err(|source| StunServiceError::Bind {
                        addr: *addr,
                        source,
                    })?;
                threads.push(thread);
            }
        }
        for (role, addr, _) in &sockets {
            tracing::debug!(%addr, ?role, "STUN listening");
        }
        Ok(StunService {
            addrs: sockets.iter().map(|(r, a, _)| (*r, *a)).collect(),
            primary: Arc::clone(&sockets[0].2),
            stats,
            stop,
            threads,
        })
    }

    /// The bound addresses, primary first.
    pub fn local_addrs(&self) -> &[(Role, SocketAddr)] {
        &self.addrs
    }

    /// The primary socket, which TURN answers from.
    pub(crate) fn primary_socket(&self) -> Arc<UdpSocket> {
        Arc::clone(&self.primary)
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Stops the threads and waits for them.
    pub fn shutdown(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for StunService {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

fn serve(
    index: usize,
    role: Role,
    server: &StunServer,
    sockets: &[(Role, Arc<UdpSocket>)],
    stats: &Stats,
    stop: &AtomicBool,
    turn: Option<&Handoff>,
) {
    let socket = &sockets[index].1;
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut out = Vec::with_capacity(RECV_BUFFER);
    while !stop.load(Ordering::Relaxed) {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => {
                // ICMP errors from earlier sends surface here; they are no reason to stop.
                tracing::debug!(error = %e, "STUN recv error");
                continue;
            }
        };
        if let Some(turn) = turn.filter(|_| burrow_proto::turn::is_turn(&buf[..n])) {
            turn.pass(from, &buf[..n]);
            continue;
        }
        let reply = match server.handle(role, from, &buf[..n], &mut out) {
            Outcome::Success(reply) => {
                stats.responses.fetch_add(1, Ordering::Relaxed);
                reply
            }
            Outcome::Error(reply, code) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, code, "STUN error response");
                reply
            }
            Outcome::Ignored(why) => {
                let counter = match &why {
                    Ignored::NotStun(_) => &stats.not_stun,
                    Ignored::Malformed(_) => &stats.malformed,
                    Ignored::NotRequest => &stats.not_request,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, reason = ?why, "STUN datagram ignored");
                continue;
            }
        };
        let sender = sockets
            .iter()
            .find(|(r, _)| *r == reply.from)
            .map(|(_, s)| s)
            .unwrap_or(socket);
        if let Err(e) = sender.send_to(&out, reply.to) {
            stats.send_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(to = %reply.to, error = %e, "STUN send failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burrow_proto::stun::{Class, Message, MessageWriter, Method, TransactionId};

    fn start_on_loopback() -> (StunService, SocketAddr) {
        let service = StunService::start(&StunOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            alt_ip: None,
            alt_port: AltPort::Off,
            threads: 1,
        })
        .unwrap();
        let server = service.local_addrs()[0].1;
        (service, server)
    }

    fn binding(client: &UdpSocket, to: SocketAddr, change_port: bool) -> (SocketAddr, Vec<u8>) {
        let mut req = Vec::new();
        let mut w = MessageWriter::new(
            &mut req,
            Class::Request,
            Method::BINDING,
            TransactionId([7; 12]),
        );
        if change_port {
            w.change_request(false, true);
        }
        w.finish();
        client.send_to(&req, to).unwrap();
        let mut buf = [0u8; 1500];
        let (n, from) = client.recv_from(&mut buf).unwrap();
        (from, buf[..n].to_vec())
    }

    #[test]
    fn one_address_serves_a_second_port_and_says_which() {
        let service = StunService::start(&StunOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            alt_ip: None,
            alt_port: AltPort::Next,
            threads: 1,
        })
        .unwrap();
        let addrs = service.local_addrs();
        assert_eq!(addrs.len(), 2, "{addrs:?}");
        let (primary, second) = (addrs[0].1, addrs[1].1);
        assert_eq!(primary.ip(), second.ip());
        assert_ne!(primary.port(), second.port());
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        for (to, other) in [(primary, second), (second, primary)] {
            let (from, resp) = binding(&client, to, false);
            let resp = Message::parse(&resp).unwrap();
            assert_eq!(from, to);
            assert_eq!(resp.alternate_port, Some(other.port()));
            assert_eq!(resp.other_address, None, "RFC 5780 7.4: no second IP");
        }
        // CHANGE-REQUEST for the port: answered from the second port.
        let (from, _) = binding(&client, primary, true);
        assert_eq!(from, second);
        service.shutdown();
    }

    #[test]
    fn answers_on_loopback_and_survives_garbage() {
        let (service, server) = start_on_loopback();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        for garbage in [&b""[..], b"\x00", &[0xffu8; 100], &[0u8; 20], &[0u8; 3000]] {
            client.send_to(garbage, server).unwrap();
        }
        let mut req = Vec::new();
        let tid = TransactionId([9; 12]);
        MessageWriter::new(&mut req, Class::Request, Method::BINDING, tid).finish();
        client.send_to(&req, server).unwrap();
        let mut buf = [0u8; 1500];
        let (n, _) = client.recv_from(&mut buf).unwrap();
        let resp = Message::parse(&buf[..n]).unwrap();
        assert_eq!(resp.transaction_id, tid);
        assert_eq!(resp.mapped(), Some(client.local_addr().unwrap()));
        assert_eq!(service.stats().responses.load(Ordering::Relaxed), 1);
        assert!(service.stats().not_stun.load(Ordering::Relaxed) >= 4);
        service.shutdown();
    }

    #[test]
    fn keeps_answering_after_a_flood_of_mixed_garbage_and_requests() {
        let (service, server) = start_on_loopback();
        let flooders: Vec<_> = (0..2)
            .map(|t| {
                std::thread::spawn(move || {
                    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                    let mut req = Vec::new();
                    let mut x = 0x2545_f491_4f6c_dd1du64 + t;
                    for i in 0..50_000u32 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let tid = TransactionId([i as u8; 12]);
                        MessageWriter::new(&mut req, Class::Request, Method::BINDING, tid).finish();
                        // Every third datagram is a valid request, the rest corrupt or truncated.
                        let at = (x as usize) % req.len();
                        match i % 3 {
                            0 => {}
                            1 => req[at] ^= 0x55,
                            _ => req.truncate(at),
                        }
                        let _ = s.send_to(&req, server);
                    }
                })
            })
            .collect();
        for f in flooders {
            f.join().unwrap();
        }
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut req = Vec::new();
        let tid = TransactionId([0xee; 12]);
        MessageWriter::new(&mut req, Class::Request, Method::BINDING, tid).finish();
        let mut buf = [0u8; 1500];
        let answered = (0..20).any(|_| {
            client.send_to(&req, server).unwrap();
            matches!(client.recv_from(&mut buf), Ok((n, _))
                if Message::parse(&buf[..n]).map(|m| m.transaction_id) == Ok(tid))
        });
        assert!(answered, "server stopped answering after the flood");
        let stats = service.stats();
        assert!(stats.responses.load(Ordering::Relaxed) > 1000);
        assert!(
            stats.not_stun.load(Ordering::Relaxed) + stats.malformed.load(Ordering::Relaxed) > 1000
        );
    }

    #[test]
    fn rejects_inconsistent_options() {
        let options = |alt_ip: Option<&str>, alt_port| StunOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            alt_ip: alt_ip.map(|ip| ip.parse().unwrap()),
            alt_port,
            threads: 1,
        };
        for (bad, why) in [
            (
                options(Some("127.0.0.2"), AltPort::Off),
                "an alternate port too",
            ),
            (
                options(Some("127.0.0.1"), AltPort::Next),
                "differ from the listen IP",
            ),
            (options(Some("::1"), AltPort::Next), "same family"),
            (
                options(Some("127.0.0.2"), AltPort::Port(5)),
                "fixed, distinct",
            ),
        ] {
            match StunService::start(&bad) {
                Err(StunServiceError::Options(e)) => assert!(e.contains(why), "{e}"),
                other => panic!("{bad:?}: {:?}", other.map(|s| s.local_addrs().to_vec())),
            }
        }
    }
}
