//! How many hops a packet needs to leave every NAT of ours: the TTL of priming pings.
//!
//! A primer must pass our own NATs (to open their mappings) and die before the peer's network,
//! where a bare router would keep state for it. The first router outside our NATs is the first
//! hop with a public address, so we send STUN Binding requests with TTL 1, 2, 3... towards a
//! STUN server and read the ICMP time-exceeded errors each hop sends back (Linux `IP_RECVERR`).
//! Home routers answer from private addresses, carrier-grade NATs from 100.64.0.0/10.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Hops tried before giving up.
pub(crate) const MAX_HOPS: u8 = 8;
/// How long each hop gets to answer.
pub(crate) const PER_HOP: Duration = Duration::from_millis(400);

/// Whether an address is outside every NAT: not private, shared (CGNAT), loopback or
/// link-local.
pub(crate) fn is_public(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    let shared = a == 100 && (64..128).contains(&b);
    !(ip.is_private() || shared || ip.is_loopback() || ip.is_link_local() || ip.is_unspecified())
}

/// The TTL at which a packet towards `server` first reaches a public hop, or `None` when no
/// hop tells (ICMP filtered, IPv6, or not Linux). Blocking: run it off the async runtime.
pub(crate) fn nat_exit_ttl(server: SocketAddr) -> Option<u8> {
    #[cfg(target_os = "linux")]
    {
        linux::nat_exit_ttl(server).ok().flatten()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = server;
        None
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::mem::{size_of, MaybeUninit};
    use std::net::{SocketAddr, UdpSocket};
    use std::os::fd::AsRawFd;
    use std::time::Instant;

    use burrow_proto::stun::{Class, MessageWriter, Method, TransactionId};

    use super::*;

    /// What came back for one probe.
    enum Answer {
        /// A router at this address said the TTL ran out.
        Hop(Ipv4Addr),
        /// The server itself answered: the probe got through.
        Server,
        Nothing,
    }

    pub(super) fn nat_exit_ttl(server: SocketAddr) -> io::Result<Option<u8>> {
        let SocketAddr::V4(_) = server else {
            return Ok(None);
        };
        let sock = UdpSocket::bind("0.0.0.0:0")?;
        let on: libc::c_int = 1;
        // SAFETY: a valid socket and a c_int option value of the right size.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_RECVERR,
                (&on as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        for ttl in 1..=MAX_HOPS {
            sock.set_ttl(u32::from(ttl))?;
            let mut req = Vec::new();
            MessageWriter::new(
                &mut req,
                Class::Request,
                Method::BINDING,
                TransactionId(rand::random()),
            )
            .finish();
            sock.send_to(&req, server)?;
            match answer(&sock)? {
                Answer::Hop(ip) if is_public(ip) => return Ok(Some(ttl)),
                Answer::Hop(_) => continue,
                // Reached the server through private hops only (no NAT of ours to leave), or
                // no hop tells.
                Answer::Server | Answer::Nothing => return Ok(None),
            }
        }
        Ok(None)
    }

    fn answer(sock: &UdpSocket) -> io::Result<Answer> {
        let deadline = Instant::now() + PER_HOP;
        let fd = sock.as_raw_fd();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Answer::Nothing);
            }
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as libc::c_int) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if pfd.revents & libc::POLLERR != 0 {
                if let Some(ip) = read_error(fd)? {
                    return Ok(Answer::Hop(ip));
                }
                continue;
            }
            if pfd.revents & libc::POLLIN != 0 {
                let mut buf = [0u8; 1500];
                if sock.recv_from(&mut buf).is_ok() {
                    return Ok(Answer::Server);
                }
            }
        }
    }

    /// One entry of the socket's error queue: the offender of an ICMP time-exceeded.
    fn read_error(fd: libc::c_int) -> io::Result<Option<Ipv4Addr>> {
        let mut data = [0u8; 1500];
        let mut control = [0u64; 64];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: msghdr is plain data; every pointer set below outlives the call.
        let mut msg: libc::msghdr = unsafe { MaybeUninit::zeroed().assume_init() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of::<[u64; 64]>() as _;
        // SAFETY: msg points at live buffers of the stated sizes.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(None)
            } else {
                Err(e)
            };
        }
        // SAFETY: the kernel filled msg_control; CMSG_* walk it within msg_controllen.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                let c = &*cmsg;
                if c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_RECVERR {
                    let ee = libc::CMSG_DATA(cmsg).cast::<libc::sock_extended_err>();
                    let err = ee.read_unaligned();
                    // ICMP type 11: time exceeded.
                    if err.ee_origin == libc::SO_EE_ORIGIN_ICMP && err.ee_type == 11 {
                        // SO_EE_OFFENDER: the sender's address follows the struct.
                        let off = ee.add(1).cast::<libc::sockaddr_in>().read_unaligned();
                        if off.sin_family == libc::AF_INET as libc::sa_family_t {
                            return Ok(Some(Ipv4Addr::from(u32::from_be(off.sin_addr.s_addr))));
                        }
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_means_outside_every_nat() {
        for private in [
            "10.1.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "100.64.3.1",
            "127.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["198.18.3.1", "203.0.113.1", "8.8.8.8", "100.128.0.1"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn loopback_has_no_nat_to_leave() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            if let Ok((_, from)) = server.recv_from(&mut buf) {
                let _ = server.send_to(b"answer", from);
            }
        });
        assert_eq!(nat_exit_ttl(addr), None);
    }

    /// In the NAT lab (needs root): a home router is one hop, a carrier-grade NAT another, so
    /// the internet's first router is hop 2 or 3; with no NAT, the host's own router is public.
    #[test]
    fn the_nat_exit_is_counted_in_the_lab() {
        use burrow_lab::{Lab, NatKind, RouterVariant};
        if !Lab::tests_allowed() {
            return;
        }
        let server = Ipv4Addr::new(203, 0, 113, 10);
        let lab = Lab::builder()
            .server("s", &[server])
            .home(
                "home",
                NatKind::PortRestrictedCone,
                RouterVariant::Firewalled,
            )
            .home("sym", NatKind::Symmetric, RouterVariant::Bare)
            .home("cgnat", NatKind::Cgnat, RouterVariant::Firewalled)
            .home("open", NatKind::Open, RouterVariant::Firewalled)
            .build()
            .expect("lab builds");
        for (home, want) in [("home", 2), ("sym", 2), ("cgnat", 3), ("open", 1)] {
            let ttl = lab
                .in_ns(lab.host_ns(home), || {
                    Ok(nat_exit_ttl((server, 3478).into()))
                })
                .unwrap();
            assert_eq!(ttl, Some(want), "{home}");
        }
    }
}
