//! A minimal STUN Binding probe (RFC 5389 header only), used to see that a server in the lab
//! answers. Hand-written on purpose: it needs 20 bytes out and a header check in, and the lab
//! should not depend on the codec it is meant to test.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

const MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

fn transaction_id(seq: u32) -> [u8; 12] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mut id = [0u8; 12];
    id[..8].copy_from_slice(&(nanos ^ u64::from(std::process::id())).to_be_bytes());
    id[8..].copy_from_slice(&seq.to_be_bytes());
    id
}

/// Sends Binding requests to `target` (from the calling thread's namespace) until a success
/// response with the same transaction id arrives or `timeout` passes; returns the round trip.
pub(crate) fn probe(target: SocketAddr, timeout: Duration) -> Result<Duration> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    let deadline = Instant::now() + timeout;
    let mut seq = 0u32;
    let mut wait = Duration::from_millis(50);
    while Instant::now() < deadline {
        seq += 1;
        let id = transaction_id(seq);
        let mut req = [0u8; 20];
        req[1] = 0x01; // Binding request, length 0
        req[4..8].copy_from_slice(&MAGIC);
        req[8..].copy_from_slice(&id);
        let sent = Instant::now();
        // Sending can fail while routes settle or after an ICMP error; just retry.
        let _ = sock.send_to(&req, target);
        let until = (sent + wait).min(deadline);
        let mut buf = [0u8; 1500];
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left))?;
            match sock.recv_from(&mut buf) {
                Ok((n, from)) if from == target && n >= 20 => {
                    if buf[0] == 0x01 && buf[1] == 0x01 && buf[4..8] == MAGIC && buf[8..20] == id {
                        return Ok(sent.elapsed());
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        wait = (wait * 2).min(Duration::from_millis(500));
    }
    bail!("no STUN Binding response from {target} within {timeout:?}")
}
