//! The small protocol `burrow listen` speaks with `burrow connect` and `burrow ping`, so that
//! anyone can check reachability, paths and throughput between two nodes.
//!
//! - On every connection the listener at once opens a unidirectional stream and writes one
//!   greeting byte: the connecting side's time to first byte.
//! - A bidirectional stream starts with a mode byte: [`ECHO`] sends everything back; [`SINK`]
//!   reads to the end and answers with the byte count (8 bytes, big-endian) and the SHA-256 of
//!   the bytes (32), so the sender can check that every byte arrived intact.
//! - Every QUIC datagram is echoed (pings).

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::endpoint::Connection;
use crate::error_chain::Chain;

/// The ALPN of this protocol.
pub const ALPN: &[u8] = b"burrow/tool/1";
/// Mode byte: echo the stream.
pub const ECHO: u8 = b'E';
/// Mode byte: count the stream's bytes.
pub const SINK: u8 = b'S';
const GREETING: u8 = 0x01;
/// Bytes written per call when sending data.
const CHUNK: usize = 64 * 1024;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The connection ended.
    #[error("connection")]
    Connection(#[from] quinn::ConnectionError),
    /// Writing failed.
    #[error("write")]
    Write(#[from] quinn::WriteError),
    /// Reading failed.
    #[error("read")]
    Read(#[from] quinn::ReadError),
    /// A stream ended early.
    #[error("read")]
    ReadExact(#[from] quinn::ReadExactError),
    /// The stream was already finished.
    #[error("stream closed")]
    Closed(#[from] quinn::ClosedStream),
    /// Datagrams are off on this connection.
    #[error("datagram")]
    Datagram(#[from] quinn::SendDatagramError),
    /// The peer broke the protocol.
    #[error("protocol: {0}")]
    Protocol(&'static str),
}

/// Serves one connection until it closes: the greeting, echo and sink streams, datagram
/// echo. Returns the application bytes received.
pub async fn serve(conn: Connection) -> u64 {
    let quic = conn.quic.clone();
    let greet = async {
        let mut s = quic.open_uni().await?;
        s.write_all(&[GREETING]).await?;
        s.finish()?;
        Ok::<_, ToolError>(())
    };
    if let Err(e) = greet.await {
        tracing::debug!("greeting: {}", Chain(&e));
    }
    let datagrams = {
        let quic = quic.clone();
        tokio::spawn(async move {
            while let Ok(d) = quic.read_datagram().await {
                let _ = quic.send_datagram(d);
            }
        })
    };
    let mut streams = tokio::task::JoinSet::new();
    while let Ok((send, recv)) = quic.accept_bi().await {
        streams.spawn(serve_stream(send, recv));
    }
    datagrams.abort();
    let mut total = 0;
    while let Some(r) = streams.join_next().await {
        total += r.ok().and_then(Result::ok).unwrap_or(0);
    }
    total
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) -> Result<u64, ToolError> {
    let mut mode = [0u8];
    recv.read_exact(&mut mode).await?;
    let mut total = 0u64;
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    while let Some(chunk) = recv.read_chunk(CHUNK, true).await? {
        total += chunk.bytes.len() as u64;
        match mode[0] {
            ECHO => send.write_chunk(chunk.bytes).await?,
            SINK => hash.update(&chunk.bytes),
            _ => return Err(ToolError::Protocol("unknown stream mode")),
        }
    }
    if mode[0] == SINK {
        send.write_all(&total.to_be_bytes()).await?;
        send.write_all(hash.finish().as_ref()).await?;
    }
    send.finish()?;
    Ok(total)
}

/// Waits for the listener's greeting: the first application byte.
pub async fn greeting(conn: &Connection) -> Result<(), ToolError> {
    let mut s = conn.quic.accept_uni().await?;
    let mut b = [0u8];
    s.read_exact(&mut b).await?;
    if b[0] != GREETING {
        return Err(ToolError::Protocol("bad greeting"));
    }
    Ok(())
}

/// Sends `bytes` random bytes to the listener's sink and checks its count and hash; returns
/// the time taken.
pub async fn send_bytes(conn: &Connection, bytes: u64) -> Result<Duration, ToolError> {
    let start = Instant::now();
    let (mut send, mut recv) = conn.quic.open_bi().await?;
    send.write_all(&[SINK]).await?;
    let block: Vec<u8> = (0..CHUNK).map(|_| rand::random()).collect();
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut left = bytes;
    let mut index = 0u64;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        // Every chunk differs (its index in front), so a lost, repeated or reordered chunk
        // changes the hash.
        let mut chunk = block[..n].to_vec();
        for (b, i) in chunk.iter_mut().zip(index.to_be_bytes()) {
            *b ^= i;
        }
        hash.update(&chunk);
        send.write_chunk(Bytes::from(chunk)).await?;
        left -= n as u64;
        index += 1;
    }
    send.finish()?;
    let mut answer = [0u8; 8 + 32];
    recv.read_exact(&mut answer).await?;
    if answer[..8] != bytes.to_be_bytes() {
        return Err(ToolError::Protocol(
            "the listener counted a different number of bytes",
        ));
    }
    if answer[8..] != *hash.finish().as_ref() {
        return Err(ToolError::Protocol(
            "the listener received different bytes (SHA-256 mismatch)",
        ));
    }
    Ok(start.elapsed())
}

/// How often [`ping`] sends its datagram again while no echo has come: a datagram is never
/// retransmitted by QUIC, and one lost (say while the path moves) must not fail the ping.
const PING_RESEND: Duration = Duration::from_millis(250);

/// One ping over a QUIC datagram (sent again every [`PING_RESEND`], each copy numbered, the
/// round trip timed from the copy echoed); `None` if no echo came within `timeout`.
pub async fn ping(
    conn: &Connection,
    seq: u64,
    timeout: Duration,
) -> Result<Option<Duration>, ToolError> {
    let mut sent: Vec<Instant> = Vec::new();
    let echoed = tokio::time::timeout(timeout, async {
        let mut resend = tokio::time::interval(PING_RESEND);
        loop {
            tokio::select! {
                _ = resend.tick(), if sent.len() < usize::from(u8::MAX) => {
                    let mut d = seq.to_be_bytes().to_vec();
                    d.push(sent.len() as u8);
                    conn.quic.send_datagram(Bytes::from(d))?;
                    sent.push(Instant::now());
                }
                d = conn.quic.read_datagram() => {
                    let d = d?;
                    if let Some((copy, rest)) = d.split_last() {
                        if rest == seq.to_be_bytes() {
                            if let Some(at) = sent.get(usize::from(*copy)) {
                                return Ok::<_, ToolError>(at.elapsed());
                            }
                        }
                    }
                }
            }
        }
    })
    .await;
    match echoed {
        Ok(r) => r.map(Some),
        Err(_) => Ok(None),
    }
}
