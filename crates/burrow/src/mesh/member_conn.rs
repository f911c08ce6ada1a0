//! A member's connection, with the streams in use on it counted.
//!
//! When two connections to one member cross (both ends dialled at once), both ends keep the
//! same one and retire the other: nothing new is opened on it, and it is closed once the
//! streams already riding it are done (and none came for a moment, as the other end may be
//! opening one on it still), so a forwarded TCP connection or a program's stream made in that
//! moment goes on instead of being reset.

use std::sync::Arc;
use std::time::Duration;

use quinn::{RecvStream, SendStream};
use tokio::sync::watch;

use crate::endpoint::Connection;
use crate::NodeId;

/// A member's connection, and how many streams are in use on it.
#[derive(Clone, Debug)]
pub(crate) struct MemberConn {
    conn: Connection,
    in_use: Arc<watch::Sender<usize>>,
}

impl MemberConn {
    pub(crate) fn new(conn: Connection) -> MemberConn {
        MemberConn {
            conn,
            in_use: Arc::new(watch::channel(0).0),
        }
    }

    /// Counts one more stream in use on this connection until the hold is dropped.
    pub(crate) fn hold(&self) -> StreamHold {
        self.in_use.send_modify(|n| *n += 1);
        StreamHold(self.in_use.clone())
    }

    /// Resolves once no stream has been in use on this connection for `linger`.
    pub(crate) async fn idle_for(&self, linger: Duration) {
        let mut in_use = self.in_use.subscribe();
        loop {
            let _ = in_use.wait_for(|n| *n == 0).await;
            if tokio::time::timeout(linger, in_use.wait_for(|n| *n > 0))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

impl std::ops::Deref for MemberConn {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.conn
    }
}

/// Keeps the connection a stream rides open while it lives (see the module's doc).
#[derive(Debug)]
pub(crate) struct StreamHold(Arc<watch::Sender<usize>>);

impl Drop for StreamHold {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// One half of a program's stream (a quinn [`SendStream`] or [`RecvStream`], which it derefs
/// to: `&mut *half` is quinn's, for tokio's I/O traits): while either half lives, the
/// connection the stream rides stays open.
#[derive(Debug)]
pub struct Held<T> {
    stream: T,
    _hold: Arc<StreamHold>,
}

impl<T> Held<T> {
    /// The quinn stream alone: its connection may be closed under it from then on, if it is
    /// one that lost to another (see the module's doc).
    pub fn into_inner(self) -> T {
        self.stream
    }
}

impl<T> std::ops::Deref for Held<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.stream
    }
}

impl<T> std::ops::DerefMut for Held<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.stream
    }
}

/// A program's bidirectional stream with a member, opened by either end.
#[derive(Debug)]
pub struct MemberStream {
    /// The member.
    pub member: NodeId,
    /// Towards the member.
    pub send: Held<SendStream>,
    /// From the member.
    pub recv: Held<RecvStream>,
}

impl MemberStream {
    /// `send` and `recv`, riding the connection `hold` keeps open.
    pub(crate) fn new(
        member: NodeId,
        send: SendStream,
        recv: RecvStream,
        hold: StreamHold,
    ) -> MemberStream {
        let hold = Arc::new(hold);
        MemberStream {
            member,
            send: Held {
                stream: send,
                _hold: hold.clone(),
            },
            recv: Held {
                stream: recv,
                _hold: hold,
            },
        }
    }
}
