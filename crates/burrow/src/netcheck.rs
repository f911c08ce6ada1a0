//! `netcheck`: what is my public address, and what kind of NAT am I behind?
//!
//! A thin tokio driver around [`burrow_proto::nat_behaviour::NatBehaviour`]: it resolves the
//! servers, binds the sockets, pumps datagrams and timers, and turns the findings into a
//! [`Report`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use burrow_proto::nat_behaviour::{
    Event, Filtering, Input, Mapping, NatBehaviour, NatBehaviourConfig, NatType, Output, SocketId,
};
use serde::Serialize;
use tokio::net::UdpSocket;

/// Share of the timeout that name resolution may use; the rest is for probing.
const DNS_SHARE: u32 = 2;
/// How long a cached report stays fresh.
const CACHE_MAX_AGE: Duration = Duration::from_secs(300);

/// What to check, and how long it may take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// STUN servers as `host:port` (IPv6 literals in brackets).
    pub servers: Vec<String>,
    /// The whole report finishes within this time.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            servers: crate::config::DEFAULT_STUN_SERVERS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            timeout: Duration::from_secs(3),
        }
    }
}

/// One server's answer, as reported.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ServerReport {
    /// The server as configured.
    pub addr: String,
    /// The address it resolved to, if it did.
    pub resolved_addr: Option<String>,
    /// Round-trip time of the Binding request.
    pub rtt_ms: Option<f64>,
    /// Our address as the server saw it.
    pub mapped_addr: Option<String>,
    /// Whether the server offers RFC 5780 behaviour discovery.
    pub rfc5780: bool,
    /// Why the server gave no answer.
    pub error: Option<String>,
}

/// The network report. Its JSON keys are part of burrow's command-line contract.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Report {
    /// Whether any STUN server answered over UDP.
    pub udp: bool,
    /// The host's own interface addresses (loopback excluded).
    pub local_addrs: Vec<String>,
    /// Public IPv4 address and port of the probing socket.
    pub public_addr: Option<String>,
    /// Public IPv6 address and port, when IPv6 works.
    pub public_addr_v6: Option<String>,
    /// Mapping behaviour.
    #[serde(serialize_with = "display")]
    pub mapping: Mapping,
    /// Filtering behaviour.
    #[serde(serialize_with = "display")]
    pub filtering: Filtering,
    /// The classic NAT type.
    #[serde(serialize_with = "display")]
    pub nat_type: NatType,
    /// Whether packets to our own public address come back (null when not tested).
    pub hairpinning: Option<bool>,
    /// Per-server results.
    pub servers: Vec<ServerReport>,
    /// How long the report took.
    pub duration_ms: u64,
}

fn display<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl Report {
    /// A one-line explanation when no server answered, for humans and logs.
    pub fn failure_summary(&self) -> Option<String> {
        if self.udp {
            return None;
        }
        if self.servers.is_empty() {
            return Some("no STUN server configured".into());
        }
        if self.servers.iter().all(|s| s.resolved_addr.is_none()) {
            return Some(
                "no STUN server answered: none of the servers' names could be resolved \
                 (no DNS or no internet?)"
                    .into(),
            );
        }
        if self.nat_type == NatType::UdpBlocked {
            return Some(
                "no STUN server answered: UDP looks blocked on this network (or every server is down)"
                    .into(),
            );
        }
        Some("no STUN server answered".into())
    }
}

/// Why netcheck could not run at all (a report with no answers is not an error).
#[derive(Debug, thiserror::Error)]
pub enum NetcheckError {
    /// No UDP socket could be bound.
    #[error("cannot bind a UDP socket: {0}")]
    Bind(std::io::Error),
    /// A server is not written as `host:port`.
    #[error("STUN server {0:?} is not host:port")]
    BadServer(String),
}

struct Target {
    configured: String,
    resolved: Result<SocketAddr, String>,
}

/// Runs a fresh check.
pub async fn run(options: &Options) -> Result<Report, NetcheckError> {
    let started = Instant::now();
    let deadline = started + options.timeout;
    for s in &options.servers {
        if split_host_port(s).is_none() {
            return Err(NetcheckError::BadServer(s.clone()));
        }
    }
    let local_ips = local_ips();
    let have_v6 = local_ips.iter().any(|ip| match ip {
        IpAddr::V6(v6) => is_global_v6(v6),
        IpAddr::V4(_) => false,
    });
    let targets = resolve(
        &options.servers,
        started + options.timeout / DNS_SHARE,
        have_v6,
    )
    .await;

    let main4 = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .await
        .map_err(NetcheckError::Bind)?;
    let filter4 = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await.ok();
    let any_v6 = targets
        .iter()
        .any(|t| t.resolved.as_ref().is_ok_and(|a| a.is_ipv6()));
    let main6 = if any_v6 {
        UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).await.ok()
    } else {
        None
    };
    let mut sockets = vec![(SocketId::Main4, local_addr(&main4))];
    if let Some(s) = &filter4 {
        sockets.push((SocketId::Filter4, local_addr(s)));
    }
    if let Some(s) = &main6 {
        sockets.push((SocketId::Main6, local_addr(s)));
    }

    let probed: Vec<(usize, SocketAddr)> = targets
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.resolved.as_ref().ok().map(|a| (i, *a)))
        .collect();
    let mut core = NatBehaviour::new(
        NatBehaviourConfig {
            servers: probed.iter().map(|(_, a)| *a).collect(),
            sockets,
            local_ips: local_ips.clone(),
            deadline,
        },
        rand::random(),
    );
    core.handle_input(Instant::now(), Input::Start);

    let mut buf4 = vec![0u8; 2048];
    let mut buf_f = vec![0u8; 2048];
    let mut buf6 = vec![0u8; 2048];
    'run: loop {
        let wake = loop {
            match core.poll_output() {
                Output::Transmit(t) => {
                    let socket = match t.socket {
                        SocketId::Main4 => Some(&main4),
                        SocketId::Filter4 => filter4.as_ref(),
                        SocketId::Main6 => main6.as_ref(),
                    };
                    if let Some(socket) = socket {
                        if let Err(e) = socket.send_to(&t.payload, t.to).await {
                            tracing::debug!(to = %t.to, error = %e, "netcheck send failed");
                        }
                    }
                }
                Output::Event(Event::Done) | Output::Timeout(None) => break 'run,
                Output::Timeout(Some(at)) => break tokio::time::Instant::from_std(at),
            }
        };
        let (socket, received, buf) = tokio::select! {
            r = main4.recv_from(&mut buf4) => (SocketId::Main4, r, &buf4),
            r = recv_opt(filter4.as_ref(), &mut buf_f) => (SocketId::Filter4, r, &buf_f),
            r = recv_opt(main6.as_ref(), &mut buf6) => (SocketId::Main6, r, &buf6),
            _ = tokio::time::sleep_until(wake) => {
                core.handle_input(Instant::now(), Input::Timeout);
                continue;
            }
        };
        if let Ok((n, from)) = received {
            let packet = &buf[..n];
            core.handle_input(
                Instant::now(),
                Input::Datagram {
                    socket,
                    from,
                    packet,
                },
            );
        }
    }

    let findings = core.findings();
    let mut servers: Vec<ServerReport> = targets
        .iter()
        .map(|t| ServerReport {
            addr: t.configured.clone(),
            resolved_addr: t.resolved.as_ref().ok().map(|a| a.to_string()),
            rtt_ms: None,
            mapped_addr: None,
            rfc5780: false,
            error: t.resolved.as_ref().err().cloned(),
        })
        .collect();
    for ((i, _), result) in probed.iter().zip(&findings.servers) {
        let s = &mut servers[*i];
        s.rtt_ms = result.rtt.map(|d| (d.as_secs_f64() * 1e4).round() / 10.0);
        s.mapped_addr = result.mapped.map(|a| a.to_string());
        s.rfc5780 = result.other_address.is_some();
        s.error = result.error.clone();
    }
    Ok(Report {
        udp: findings.udp,
        local_addrs: local_ips
            .iter()
            .filter(|ip| !ip.is_loopback())
            .map(|ip| ip.to_string())
            .collect(),
        public_addr: findings.public_addr.map(|a| a.to_string()),
        public_addr_v6: findings.public_addr_v6.map(|a| a.to_string()),
        mapping: findings.mapping,
        filtering: findings.filtering,
        nat_type: findings.nat_type,
        hairpinning: findings.hairpinning,
        servers,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// Like [`run`], but reuses a report younger than five minutes for the same options, so a
/// process that asks repeatedly probes once.
pub async fn cached(options: &Options) -> Result<Report, NetcheckError> {
    static CACHE: Mutex<Option<(Options, Instant, Report)>> = Mutex::new(None);
    if let Some((o, at, report)) = CACHE.lock().expect("poisoned").as_ref() {
        if o == options && at.elapsed() < CACHE_MAX_AGE {
            return Ok(report.clone());
        }
    }
    let report = run(options).await?;
    *CACHE.lock().expect("poisoned") = Some((options.clone(), Instant::now(), report.clone()));
    Ok(report)
}

async fn recv_opt(
    socket: Option<&UdpSocket>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

fn local_addr(socket: &UdpSocket) -> SocketAddr {
    socket
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
}

/// Resolves every server in parallel, giving up on names still unresolved at `until`.
async fn resolve(servers: &[String], until: Instant, want_v6: bool) -> Vec<Target> {
    let mut tasks = Vec::new();
    for s in servers {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let until = tokio::time::Instant::from_std(until);
            match tokio::time::timeout_at(until, tokio::net::lookup_host(s.clone())).await {
                Err(_) => vec![Err("dns: timed out".to_string())],
                Ok(Err(e)) => vec![Err(format!("dns: {e}"))],
                Ok(Ok(addrs)) => {
                    let addrs: Vec<SocketAddr> = addrs.collect();
                    let mut out = Vec::new();
                    if let Some(a) = addrs.iter().find(|a| a.is_ipv4()) {
                        out.push(Ok(*a));
                    }
                    if let Some(a) = addrs.iter().find(|a| a.is_ipv6()) {
                        if want_v6 || out.is_empty() {
                            out.push(Ok(*a));
                        }
                    }
                    if out.is_empty() {
                        out.push(Err("dns: no addresses".to_string()));
                    }
                    out
                }
            }
        }));
    }
    let mut targets = Vec::new();
    for (s, task) in servers.iter().zip(tasks) {
        let results = task
            .await
            .unwrap_or_else(|e| vec![Err(format!("dns: {e}"))]);
        for resolved in results {
            targets.push(Target {
                configured: s.clone(),
                resolved,
            });
        }
    }
    targets
}

fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    (!host.is_empty()).then_some((host, port))
}

fn local_ips() -> Vec<IpAddr> {
    if_addrs::get_if_addrs()
        .map(|ifs| ifs.into_iter().map(|i| i.ip()).collect())
        .unwrap_or_default()
}

fn is_global_v6(ip: &Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !ip.is_loopback() && !ip.is_unspecified() && (first & 0xe000) == 0x2000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_parsing() {
        assert_eq!(split_host_port("a.b:3478"), Some(("a.b", 3478)));
        assert_eq!(split_host_port("[::1]:3478"), Some(("[::1]", 3478)));
        assert_eq!(split_host_port("nohost"), None);
        assert_eq!(split_host_port(":1"), None);
        assert_eq!(split_host_port("a:99999"), None);
    }
}
