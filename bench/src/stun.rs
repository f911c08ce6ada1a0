//! STUN Binding messages, built and parsed by hand (RFC 8489), and the closed-loop UDP load
//! generator that the `stun` benchmark points at each server in turn.
//!
//! The messages are deliberately independent of `burrow-proto`: the harness must not share code
//! with the server it measures, or a bug in one would hide in the other.
//!
//! Load generator: `threads` OS threads, each owning one connected UDP socket with a blocking
//! receive and a short read timeout. Each socket keeps up to `window` requests outstanding; every
//! matching response is counted and immediately replaced by a fresh request. Requests unanswered
//! after `timeout` are forgotten (counted as timed out) and replaced, so loss never stalls it.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::RngCore;

/// The fixed magic cookie in every RFC 5389/8489 message header.
pub(crate) const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Message type of a Binding request.
pub(crate) const BINDING_REQUEST: u16 = 0x0001;
/// Message type of a Binding success response.
pub(crate) const BINDING_SUCCESS: u16 = 0x0101;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const ATTR_FINGERPRINT: u16 = 0x8028;
const FINGERPRINT_XOR: u32 = 0x5354_554E;
const HEADER_LEN: usize = 20;
/// Header plus one FINGERPRINT attribute (4-byte attribute header, 4-byte CRC).
const MAX_REQUEST_LEN: usize = HEADER_LEN + 8;

/// A 96-bit STUN transaction id.
pub(crate) type TxId = [u8; 12];

/// Writes a Binding request with transaction id `txid` into `buf` and returns its length:
/// the 20-byte header, plus a FINGERPRINT attribute if `fingerprint` is set.
pub(crate) fn write_binding_request(
    buf: &mut [u8; MAX_REQUEST_LEN],
    txid: &TxId,
    fingerprint: bool,
) -> usize {
    let body_len: u16 = if fingerprint { 8 } else { 0 };
    buf[0..2].copy_from_slice(&BINDING_REQUEST.to_be_bytes());
    buf[2..4].copy_from_slice(&body_len.to_be_bytes());
    buf[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    buf[8..20].copy_from_slice(txid);
    if !fingerprint {
        return HEADER_LEN;
    }
    // The CRC covers the header (whose length already counts the FINGERPRINT attribute) and
    // every attribute before FINGERPRINT; here, just the header.
    buf[20..22].copy_from_slice(&ATTR_FINGERPRINT.to_be_bytes());
    buf[22..24].copy_from_slice(&4u16.to_be_bytes());
    let crc = crc32fast::hash(&buf[..HEADER_LEN]) ^ FINGERPRINT_XOR;
    buf[24..28].copy_from_slice(&crc.to_be_bytes());
    MAX_REQUEST_LEN
}

/// Parses a STUN header: returns the message type and transaction id if `msg` looks like a STUN
/// message (top two bits zero, magic cookie, length field matching the datagram, 4-aligned).
pub(crate) fn parse_header(msg: &[u8]) -> Option<(u16, TxId)> {
    if msg.len() < HEADER_LEN || msg[0] & 0xC0 != 0 {
        return None;
    }
    let ty = u16::from_be_bytes([msg[0], msg[1]]);
    let len = usize::from(u16::from_be_bytes([msg[2], msg[3]]));
    let cookie = u32::from_be_bytes([msg[4], msg[5], msg[6], msg[7]]);
    if cookie != MAGIC_COOKIE || len % 4 != 0 || HEADER_LEN + len != msg.len() {
        return None;
    }
    let mut txid = [0u8; 12];
    txid.copy_from_slice(&msg[8..20]);
    Some((ty, txid))
}

/// The attributes of a well-formed STUN message as (type, value), in order; `None` if the
/// message or an attribute is truncated.
pub(crate) fn attributes(msg: &[u8]) -> Option<Vec<(u16, &[u8])>> {
    parse_header(msg)?;
    let mut attrs = &msg[HEADER_LEN..];
    let mut out = Vec::new();
    while !attrs.is_empty() {
        let ty = u16::from_be_bytes([*attrs.first()?, *attrs.get(1)?]);
        let len = usize::from(u16::from_be_bytes([*attrs.get(2)?, *attrs.get(3)?]));
        out.push((ty, attrs.get(4..4 + len)?));
        attrs = attrs.get((4 + len.div_ceil(4) * 4).min(attrs.len())..)?;
    }
    Some(out)
}

/// Extracts XOR-MAPPED-ADDRESS from a well-formed STUN message, if present.
/// Used once per server, by the readiness probe, to check the server's answer is correct.
pub(crate) fn xor_mapped_address(msg: &[u8]) -> Option<SocketAddr> {
    let (_, txid) = parse_header(msg)?;
    let (_, value) = attributes(msg)?
        .into_iter()
        .find(|(ty, _)| *ty == ATTR_XOR_MAPPED_ADDRESS)?;
    decode_xor_address(value, &txid)
}

/// A one-line description of a STUN message: its size and attribute names, e.g.
/// `80 bytes: XOR-MAPPED-ADDRESS MAPPED-ADDRESS SOFTWARE FINGERPRINT`.
pub(crate) fn describe(msg: &[u8]) -> String {
    let names: Vec<String> = attributes(msg)
        .unwrap_or_default()
        .iter()
        .map(|(ty, _)| match *ty {
            0x0001 => "MAPPED-ADDRESS".to_string(),
            ATTR_XOR_MAPPED_ADDRESS => "XOR-MAPPED-ADDRESS".to_string(),
            0x8022 => "SOFTWARE".to_string(),
            0x802b => "RESPONSE-ORIGIN".to_string(),
            0x802c => "OTHER-ADDRESS".to_string(),
            ATTR_FINGERPRINT => "FINGERPRINT".to_string(),
            other => format!("{other:#06x}"),
        })
        .collect();
    format!("{} bytes: {}", msg.len(), names.join(" "))
}

fn decode_xor_address(value: &[u8], txid: &TxId) -> Option<SocketAddr> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = u16::from_be_bytes([value.get(2)? ^ cookie[0], value.get(3)? ^ cookie[1]]);
    let ip = match value.get(1)? {
        0x01 => {
            let raw: [u8; 4] = value.get(4..8)?.try_into().ok()?;
            let mut octets = [0u8; 4];
            for (i, o) in octets.iter_mut().enumerate() {
                *o = raw[i] ^ cookie[i];
            }
            IpAddr::V4(Ipv4Addr::from(octets))
        }
        0x02 => {
            let raw: [u8; 16] = value.get(4..20)?.try_into().ok()?;
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&cookie);
            key[4..].copy_from_slice(txid);
            let mut octets = [0u8; 16];
            for (i, o) in octets.iter_mut().enumerate() {
                *o = raw[i] ^ key[i];
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Sends one Binding request on `socket` (connected to the server) and waits up to `wait` for
/// a response with the same transaction id, which it returns (of whatever type).
/// `Ok(None)` means no answer (the server may still be starting).
pub(crate) fn probe(socket: &UdpSocket, wait: Duration) -> io::Result<Option<Vec<u8>>> {
    let mut txid = [0u8; 12];
    rand::rng().fill_bytes(&mut txid);
    let mut req = [0u8; MAX_REQUEST_LEN];
    let n = write_binding_request(&mut req, &txid, false);
    let deadline = Instant::now() + wait;
    match socket.send(&req[..n]) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        Err(e) => return Err(e),
    }
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        socket.set_read_timeout(Some(left))?;
        match socket.recv(&mut buf) {
            Ok(n) => match parse_header(&buf[..n]) {
                Some((_, id)) if id == txid => return Ok(Some(buf[..n].to_vec())),
                _ => {}
            },
            Err(e) if is_timeout(&e) => return Ok(None),
            // Nothing listening yet (ICMP port unreachable): wait out the rest of `wait`
            // rather than spin.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// How the load generator drives a server.
#[derive(Clone, Debug)]
pub(crate) struct LoadConfig {
    /// The server's UDP address.
    pub target: SocketAddr,
    /// Sender threads, one UDP socket each.
    pub threads: usize,
    /// Requests kept outstanding per socket.
    pub window: usize,
    /// After this long without an answer a request is forgotten and replaced.
    pub timeout: Duration,
    /// Append a FINGERPRINT attribute to each request.
    pub fingerprint: bool,
}

/// Running totals of one sender thread, read by the measuring thread while it runs.
#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    answered: AtomicU64,
    error_responses: AtomicU64,
    timed_out: AtomicU64,
    stray: AtomicU64,
}

/// A snapshot of the load generator's counters, summed over all threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Totals {
    /// Binding requests sent.
    pub sent: u64,
    /// Binding success responses (type 0x0101) whose transaction id was outstanding.
    pub answered: u64,
    /// Responses to an outstanding transaction that were not a success (e.g. 0x0111 error).
    pub error_responses: u64,
    /// Requests forgotten after the timeout.
    pub timed_out: u64,
    /// Datagrams that matched no outstanding request, or were not STUN (late answers included).
    pub stray: u64,
}

impl Totals {
    /// Counter-wise `self - earlier`.
    pub(crate) fn since(self, earlier: Totals) -> Totals {
        Totals {
            sent: self.sent - earlier.sent,
            answered: self.answered - earlier.answered,
            error_responses: self.error_responses - earlier.error_responses,
            timed_out: self.timed_out - earlier.timed_out,
            stray: self.stray - earlier.stray,
        }
    }
}

/// A running load generator; stop it with [`Load::stop`] (dropping it also stops the threads).
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    counters: Vec<Arc<Counters>>,
    threads: Vec<JoinHandle<io::Result<()>>>,
}

impl Load {
    /// Binds the sockets and starts the sender threads; they run until [`Load::stop`].
    pub(crate) fn start(config: &LoadConfig) -> io::Result<Load> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut load = Load {
            stop: stop.clone(),
            counters: Vec::new(),
            threads: Vec::new(),
        };
        for i in 0..config.threads {
            let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
            socket.connect(config.target)?;
            // Short, so the stop flag and the timeout sweep are looked at even when nothing comes.
            socket.set_read_timeout(Some(
                (config.timeout / 4).clamp(Duration::from_millis(1), Duration::from_millis(20)),
            ))?;
            let counters = Arc::new(Counters::default());
            load.counters.push(counters.clone());
            let (config, stop) = (config.clone(), stop.clone());
            let handle = std::thread::Builder::new()
                .name(format!("stun-load-{i}"))
                .spawn(move || sender(&socket, &config, &counters, &stop))?;
            load.threads.push(handle);
        }
        Ok(load)
    }

    /// Current totals over all threads.
    pub(crate) fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for c in &self.counters {
            t.sent += c.sent.load(Ordering::Relaxed);
            t.answered += c.answered.load(Ordering::Relaxed);
            t.error_responses += c.error_responses.load(Ordering::Relaxed);
            t.timed_out += c.timed_out.load(Ordering::Relaxed);
            t.stray += c.stray.load(Ordering::Relaxed);
        }
        t
    }

    /// Stops and joins the sender threads, returning the first socket error any of them hit.
    pub(crate) fn stop(mut self) -> io::Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let mut result = Ok(());
        for handle in self.threads.drain(..) {
            let r = handle
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("load thread panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// One sender thread: keeps `window` requests in flight on `socket` until `stop` is set.
fn sender(
    socket: &UdpSocket,
    config: &LoadConfig,
    counters: &Counters,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut rng = rand::rng();
    let mut outstanding: HashMap<TxId, Instant> = HashMap::with_capacity(config.window * 2);
    let mut req = [0u8; MAX_REQUEST_LEN];
    let mut buf = [0u8; 2048];
    let sweep_every = (config.timeout / 4).max(Duration::from_millis(1));
    let mut next_sweep = Instant::now() + sweep_every;

    // Sends one fresh request and records it as outstanding.
    let mut send_one = |outstanding: &mut HashMap<TxId, Instant>, now: Instant| -> io::Result<()> {
        let mut txid = [0u8; 12];
        rng.fill_bytes(&mut txid);
        let n = write_binding_request(&mut req, &txid, config.fingerprint);
        match socket.send(&req[..n]) {
            Ok(_) => {}
            // An earlier ICMP error, or a full socket buffer: the request counts as sent and lost;
            // the timeout sweep replaces it. A dead server is noticed by the measuring thread.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused || is_timeout(&e) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
            Err(e) => return Err(e),
        }
        outstanding.insert(txid, now);
        counters.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    };

    let now = Instant::now();
    while outstanding.len() < config.window {
        send_one(&mut outstanding, now)?;
    }
    while !stop.load(Ordering::Relaxed) {
        match socket.recv(&mut buf) {
            Ok(n) => match parse_header(&buf[..n]) {
                Some((ty, txid)) if outstanding.remove(&txid).is_some() => {
                    let counter = if ty == BINDING_SUCCESS {
                        &counters.answered
                    } else {
                        &counters.error_responses
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    send_one(&mut outstanding, Instant::now())?;
                }
                _ => {
                    counters.stray.fetch_add(1, Ordering::Relaxed);
                }
            },
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(e),
        }
        let now = Instant::now();
        if now >= next_sweep {
            next_sweep = now + sweep_every;
            let before = outstanding.len();
            outstanding.retain(|_, sent| now.duration_since(*sent) < config.timeout);
            let expired = before - outstanding.len();
            if expired > 0 {
                counters
                    .timed_out
                    .fetch_add(expired as u64, Ordering::Relaxed);
                while outstanding.len() < config.window {
                    send_one(&mut outstanding, now)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let txid = [7u8; 12];
        let mut buf = [0u8; MAX_REQUEST_LEN];
        let n = write_binding_request(&mut buf, &txid, false);
        assert_eq!(n, 20);
        assert_eq!(&buf[..8], &[0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42]);
        assert_eq!(parse_header(&buf[..n]), Some((BINDING_REQUEST, txid)));

        let n = write_binding_request(&mut buf, &txid, true);
        assert_eq!(n, 28);
        assert_eq!(&buf[2..4], &[0, 8]);
        assert_eq!(&buf[20..24], &[0x80, 0x28, 0, 4]);
        let crc = u32::from_be_bytes(buf[24..28].try_into().unwrap()) ^ FINGERPRINT_XOR;
        assert_eq!(crc, crc32fast::hash(&buf[..20]));
        assert_eq!(parse_header(&buf[..n]), Some((BINDING_REQUEST, txid)));
    }

    #[test]
    fn rejects_non_stun() {
        assert_eq!(parse_header(&[0u8; 19]), None);
        let mut msg = [0u8; 20];
        msg[1] = 1; // right type, wrong cookie
        assert_eq!(parse_header(&msg), None);
        msg[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        msg[3] = 4; // length says 4, datagram has 0
        assert_eq!(parse_header(&msg), None);
    }

    /// RFC 5769 section 2.2: sample IPv4 response (XOR-MAPPED-ADDRESS 192.0.2.1:32853).
    #[test]
    fn rfc5769_ipv4_response() {
        let msg: [u8; 80] = [
            0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34,
            0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74,
            0x20, 0x76, 0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01,
            0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43, 0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99,
            0xfd, 0x9e, 0x90, 0xc3, 0x8c, 0x74, 0x89, 0xf9, 0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b,
            0xe7, 0xd7, 0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96,
        ];
        let (ty, _) = parse_header(&msg).unwrap();
        assert_eq!(ty, BINDING_SUCCESS);
        assert_eq!(
            xor_mapped_address(&msg),
            Some("192.0.2.1:32853".parse().unwrap())
        );
    }
}
