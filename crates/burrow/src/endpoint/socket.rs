//! The socket quinn drives: one UDP socket per address family plus the relay, behind one
//! [`quinn::AsyncUdpSocket`].
//!
//! quinn addresses every peer by its made-up address (see [`super::peers`]). Sending, the
//! socket looks up the peer's route and sends straight to its direct address or through the
//! relay. Receiving, it demultiplexes each UDP datagram by its first bytes: STUN answers and
//! disco probes go to the endpoint's driver, QUIC packets from a known peer address go to
//! quinn under the peer's made-up address, and anything else is dropped.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use burrow_proto::disco::looks_like_disco;
use burrow_proto::stun::looks_like_stun;
use bytes::Bytes;
use quinn::udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::io::Interest;
use tokio::sync::mpsc;

use super::peers::{Peer, PeerMap};
use super::unclaimed::Unclaimed;
use super::DirectPath;
use crate::relay_client::RelayClient;

/// A packet the driver must look at: a STUN answer or a disco message.
#[derive(Debug)]
pub(crate) enum Control {
    /// Arrived on a main socket from this address.
    Udp(SocketAddr, Bytes),
    /// Arrived on spare socket `n` of the peer `node` from this address.
    Spare {
        node: burrow_proto::identity::NodeId,
        n: u16,
        from: SocketAddr,
        packet: Bytes,
    },
}

impl Control {
    fn udp(from: SocketAddr, data: &[u8]) -> Control {
        Control::Udp(from, Bytes::copy_from_slice(data))
    }
}

/// Control packets waiting for the driver; more are dropped (they are all retried).
pub(crate) const CONTROL_QUEUE: usize = 1024;

/// One bound UDP socket with quinn-udp's state (GSO, GRO, ECN).
#[derive(Debug)]
pub(crate) struct Udp {
    pub io: tokio::net::UdpSocket,
    state: UdpSocketState,
    /// Held while a packet goes out with a non-default TTL, so no QUIC packet does.
    ttl_lock: Mutex<()>,
}

impl Udp {
    pub(super) fn bind(addr: SocketAddr) -> io::Result<Udp> {
        let std = std::net::UdpSocket::bind(addr)?;
        std.set_nonblocking(true)?;
        let state = UdpSocketState::new(UdpSockRef::from(&std))?;
        Ok(Udp {
            io: tokio::net::UdpSocket::from_std(std)?,
            state,
            ttl_lock: Mutex::new(()),
        })
    }

    fn try_send(&self, t: &Transmit<'_>) -> io::Result<()> {
        let _guard = self.ttl_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.io
            .try_io(Interest::WRITABLE, || self.state.send((&self.io).into(), t))
    }

    /// Sends one control packet (disco or STUN), with `ttl` if given. Never waits: a full
    /// socket buffer drops it, as UDP would.
    pub(crate) fn send_control(
        &self,
        to: SocketAddr,
        data: &[u8],
        ttl: Option<u8>,
    ) -> io::Result<()> {
        let _guard = ttl.map(|_| self.ttl_lock.lock().unwrap_or_else(|e| e.into_inner()));
        send_with_ttl(&self.io, to, data, ttl)
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }
}

/// One datagram with a TTL (hop limit) of its own, if given, straight to the kernel: a fresh
/// socket has no writability from tokio's reactor yet, and would refuse. The caller keeps other
/// senders off the socket while the TTL is changed.
pub(crate) fn send_with_ttl(
    socket: &tokio::net::UdpSocket,
    to: SocketAddr,
    data: &[u8],
    ttl: Option<u8>,
) -> io::Result<()> {
    let sock = socket2::SockRef::from(socket);
    let Some(ttl) = ttl else {
        return sock.send_to(data, &to.into()).map(drop);
    };
    let v6 = to.is_ipv6();
    let old = if v6 {
        sock.unicast_hops_v6()?
    } else {
        sock.ttl_v4()?
    };
    let set = |t: u32| {
        if v6 {
            sock.set_unicast_hops_v6(t)
        } else {
            sock.set_ttl_v4(t)
        }
    };
    set(u32::from(ttl))?;
    let sent = sock.send_to(data, &to.into());
    set(old)?;
    sent.map(drop)
}

/// The socket quinn sees.
pub(crate) struct MagicSocket {
    pub v4: Udp,
    pub v6: Option<Udp>,
    pub peers: Arc<PeerMap>,
    pub relay: Option<RelayClient>,
    /// QUIC packets that came through the relay, already under the peer's made-up address.
    pub relayed: Mutex<mpsc::Receiver<(SocketAddr, Bytes)>>,
    /// QUIC packets from addresses no peer has claimed yet, for the claim that may follow.
    pub unclaimed: Mutex<Unclaimed>,
    /// The endpoint is closing: packets go on the direct path and through the relay, so that
    /// the close reaches a peer whose direct path died unnoticed.
    pub closing: std::sync::atomic::AtomicBool,
    pub control: mpsc::Sender<Control>,
    /// Where WebRTC's datagrams go (DTLS, ICE's STUN), once page answering has started.
    #[cfg(feature = "webrtc")]
    pub webrtc: std::sync::OnceLock<mpsc::Sender<crate::pages::Datagram>>,
}

impl fmt::Debug for MagicSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MagicSocket")
            .field("v4", &self.v4.local_addr().ok())
            .field("v6", &self.v6.as_ref().and_then(|s| s.local_addr().ok()))
            .finish_non_exhaustive()
    }
}

impl MagicSocket {
    /// The socket of `addr`'s family.
    pub(crate) fn udp_for(&self, addr: &SocketAddr) -> Option<&Udp> {
        match addr {
            SocketAddr::V4(_) => Some(&self.v4),
            SocketAddr::V6(_) => self.v6.as_ref(),
        }
    }

    /// Sends `t` on the direct path; `None` when the path's socket is missing (then the
    /// caller falls back to the relay).
    pub(super) fn send_direct(
        &self,
        peer: &Peer,
        direct: &DirectPath,
        t: &Transmit,
    ) -> Option<io::Result<()>> {
        if let Some(spare) = direct.spare.and_then(|n| peer.spare(n)) {
            // Birthday paths are rare: plain sends, no GSO, and a full buffer is loss
            // (quinn's writability poller watches the main socket, not this one).
            let seg = t.segment_size.unwrap_or(t.contents.len()).max(1);
            for chunk in t.contents.chunks(seg) {
                let _ = send_with_ttl(&spare, direct.addr, chunk, None);
            }
            return Some(Ok(()));
        }
        let udp = self.udp_for(&direct.addr)?;
        let t = Transmit {
            destination: direct.addr,
            ecn: t.ecn,
            contents: t.contents,
            segment_size: t.segment_size,
            src_ip: None,
        };
        Some(match udp.try_send(&t) {
            // A broken direct path is the driver's to notice; QUIC sees loss.
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Ok(()),
            r => r,
        })
    }

    /// The QUIC packets kept from `addr` while no peer had claimed it, and forgotten.
    pub(super) fn take_unclaimed(&self, addr: SocketAddr) -> Vec<Bytes> {
        let mut unclaimed = self.unclaimed.lock().unwrap_or_else(|e| e.into_inner());
        unclaimed.take(Instant::now(), addr)
    }

    /// Splits a received batch: control packets to the driver, QUIC packets from a peer's
    /// address kept (compacted to the front of the buffer) under its made-up address, QUIC
    /// packets from other addresses put aside (see [`Unclaimed`]). Returns the QUIC
    /// bytes kept.
    fn demux(&self, buf: &mut [u8], meta: &mut RecvMeta) -> usize {
        let from = meta.addr;
        let stride = meta.stride.max(1);
        let peer = self.peers.by_direct(&from);
        let mut kept = 0;
        let mut start = 0;
        while start < meta.len {
            let end = (start + stride).min(meta.len);
            let seg = &buf[start..end];
            let quic = seg.first().is_some_and(|b| b & 0x40 != 0);
            if looks_like_disco(seg) {
                let _ = self.control.try_send(Control::udp(from, seg));
            } else if self.to_webrtc(from, meta.dst_ip, seg) {
            } else if looks_like_stun(seg) {
                let _ = self.control.try_send(Control::udp(from, seg));
            } else if quic && peer.is_none() {
                self.unclaimed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .hold(Instant::now(), from, seg);
            } else if quic {
                // Only the last segment may be shorter than the stride, so compacting keeps
                // the layout GRO promised quinn.
                if kept != start {
                    buf.copy_within(start..end, kept);
                }
                kept += end - start;
            }
            start = end;
        }
        if let Some(peer) = peer {
            if kept > 0 {
                self.peers.note_direct_rx(&peer);
                meta.addr = peer.mapped;
            }
        }
        meta.len = kept;
        kept
    }

    /// Hands WebRTC's datagrams (see [`crate::pages::is_webrtc`]) to the page host, if it
    /// runs; true if `seg` was one.
    #[cfg(feature = "webrtc")]
    fn to_webrtc(&self, from: SocketAddr, to_ip: Option<std::net::IpAddr>, seg: &[u8]) -> bool {
        let Some(tx) = self.webrtc.get() else {
            return false;
        };
        if !crate::pages::is_webrtc(seg) {
            return false;
        }
        let _ = tx.try_send(crate::pages::Datagram {
            from,
            to_ip,
            packet: Bytes::copy_from_slice(seg),
        });
        true
    }

    #[cfg(not(feature = "webrtc"))]
    fn to_webrtc(&self, _: SocketAddr, _: Option<std::net::IpAddr>, _: &[u8]) -> bool {
        false
    }

    fn poll_udp(
        &self,
        udp: &Udp,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(udp.io.poll_recv_ready(cx))?;
            let n = match udp.io.try_io(Interest::READABLE, || {
                udp.state.recv((&udp.io).into(), bufs, meta)
            }) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            };
            // Keep the datagrams that carry QUIC, in order.
            let mut out = 0;
            for i in 0..n {
                let kept = self.demux(&mut bufs[i], &mut meta[i]);
                if kept == 0 {
                    continue;
                }
                if out != i {
                    let (head, tail) = bufs.split_at_mut(i);
                    head[out][..kept].copy_from_slice(&tail[0][..kept]);
                    meta[out] = meta[i];
                }
                out += 1;
            }
            if out > 0 {
                return Poll::Ready(Ok(out));
            }
        }
    }
}

impl AsyncUdpSocket for MagicSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Poller { socket: self })
    }

    fn try_send(&self, t: &Transmit) -> io::Result<()> {
        let Some(peer) = self.peers.by_mapped(&t.destination) else {
            // A peer forgotten since (its connection ended): the packet has nowhere to go.
            return Ok(());
        };
        self.peers.note_activity(&peer);
        let both = self.closing.load(std::sync::atomic::Ordering::Relaxed);
        if let Some(direct) = peer.direct() {
            if let Some(r) = self.send_direct(&peer, &direct, t) {
                if !both || r.is_err() {
                    return r;
                }
            }
        }
        let seg = t.segment_size.unwrap_or(t.contents.len()).max(1);
        for chunk in t.contents.chunks(seg) {
            match &self.relay {
                // A full relay queue is loss, which QUIC's congestion control answers.
                Some(relay) => drop(relay.send(peer.node, Bytes::copy_from_slice(chunk))),
                // No route yet: the driver sends it once punching proves a path.
                None => peer.hold(Bytes::copy_from_slice(chunk)),
            }
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        {
            let mut relayed = self.relayed.lock().unwrap_or_else(|e| e.into_inner());
            let mut n = 0;
            while n < bufs.len().min(meta.len()) {
                let Poll::Ready(Some((from, data))) = relayed.poll_recv(cx) else {
                    break;
                };
                if data.len() > bufs[n].len() {
                    continue;
                }
                bufs[n][..data.len()].copy_from_slice(&data);
                meta[n] = RecvMeta {
                    addr: from,
                    len: data.len(),
                    stride: data.len(),
                    ecn: None,
                    dst_ip: None,
                };
                n += 1;
            }
            if n > 0 {
                return Poll::Ready(Ok(n));
            }
        }
        if let Poll::Ready(r) = self.poll_udp(&self.v4, cx, bufs, meta) {
            return Poll::Ready(r);
        }
        if let Some(v6) = &self.v6 {
            if let Poll::Ready(r) = self.poll_udp(v6, cx, bufs, meta) {
                return Poll::Ready(r);
            }
        }
        Poll::Pending
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        // quinn must believe it is on IPv6 to dial the made-up addresses.
        let port = self.v4.local_addr()?.port();
        Ok(SocketAddr::new(
            std::net::Ipv6Addr::UNSPECIFIED.into(),
            port,
        ))
    }

    fn max_transmit_segments(&self) -> usize {
        self.v4.state.max_gso_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.v4.state.gro_segments()
    }

    fn may_fragment(&self) -> bool {
        self.v4.state.may_fragment()
    }
}

/// Tells quinn when it may send again after a full socket buffer.
#[derive(Debug)]
struct Poller {
    socket: Arc<MagicSocket>,
}

impl UdpPoller for Poller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        self.socket.v4.io.poll_send_ready(cx)
    }
}
