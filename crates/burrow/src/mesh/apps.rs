//! Datagrams and streams between programs on members' machines, which reach them through
//! their daemons' local API: a datagram is a QUIC datagram on the mesh connection (a type byte,
//! then the program's bytes), a stream a bidirectional stream opened with
//! [`StreamOpen::App`](burrow_proto::mesh::stream::StreamOpen::App).
//!
//! Datagrams are unreliable, as UDP is: each goes to every program reading them at that
//! moment, and one that reads too slowly misses the oldest past [`DATAGRAM_BACKLOG`]. A stream
//! waits for a program to accept it: at most [`MAX_WAITING_STREAMS`] wait, for at most the
//! opener's [`ANSWER_TIMEOUT`]; the opener hears it accepted only once a program took it.

use std::time::Instant;

use burrow_proto::mesh::stream::StreamAnswer;
use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, Mutex};

use super::member_conn::MemberStream;
use super::streams::{answer, ANSWER_TIMEOUT};
use crate::NodeId;

/// Datagrams kept for each slow reader; it misses the oldest past this many.
pub const DATAGRAM_BACKLOG: usize = 1024;
/// Streams from members that may wait for a program to accept them; more are refused.
pub const MAX_WAITING_STREAMS: usize = 16;

/// The datagrams and streams that came for programs.
#[derive(Debug)]
pub(crate) struct Apps {
    datagrams: broadcast::Sender<(NodeId, Bytes)>,
    waiting: mpsc::Sender<(Instant, MemberStream)>,
    queue: Mutex<mpsc::Receiver<(Instant, MemberStream)>>,
}

impl Default for Apps {
    fn default() -> Self {
        let (waiting, queue) = mpsc::channel(MAX_WAITING_STREAMS);
        Apps {
            datagrams: broadcast::channel(DATAGRAM_BACKLOG).0,
            waiting,
            queue: Mutex::new(queue),
        }
    }
}

impl Apps {
    /// A datagram came from `from`.
    pub(crate) fn datagram(&self, from: NodeId, data: Bytes) {
        // Nobody reading now: it is lost, as a datagram may be.
        let _ = self.datagrams.send((from, data));
    }

    /// Datagrams from now on.
    pub(crate) fn datagrams(&self) -> broadcast::Receiver<(NodeId, Bytes)> {
        self.datagrams.subscribe()
    }

    /// A member opened a stream for a program: it waits for one, unless too many do.
    pub(crate) async fn offer(&self, stream: MemberStream) {
        if let Err(full) = self.waiting.try_send((Instant::now(), stream)) {
            let (_, mut stream) = full.into_inner();
            let why = "too many streams wait for a program to accept them";
            answer(&mut stream.send, StreamAnswer::Refused(why.into())).await;
        }
    }

    /// The next stream a member opened that is still waiting for its answer, accepted.
    pub(crate) async fn accept(&self) -> MemberStream {
        let mut queue = self.queue.lock().await;
        while let Some((at, mut s)) = queue.recv().await {
            // Past this, its opener has given up on it.
            if at.elapsed() < ANSWER_TIMEOUT && answer(&mut s.send, StreamAnswer::Accepted).await {
                return s;
            }
        }
        // `self` holds a sender, so the queue never closes.
        std::future::pending().await
    }
}
