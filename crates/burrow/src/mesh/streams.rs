//! The bidirectional streams members open to each other: each starts with a
//! [`StreamOpen`](burrow_proto::mesh::stream::StreamOpen) that says what it is for, and the
//! other side's [`StreamAnswer`] before any of its bytes. Shared by forwarded ports
//! ([`super::forward`]) and programs' streams ([`super::apps`]).

use std::time::Duration;

use burrow_proto::mesh::stream::{StreamAnswer, StreamHeaderError, StreamOpen, MAX_ANSWER_LEN};
use quinn::{RecvStream, SendStream};

/// How long the opener of a stream waits for its answer, and its header may take to come.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// The QUIC code a stream is reset or stopped with when the other end of what it carries
/// failed, or it went unanswered.
pub(crate) const RESET_CODE: u32 = 1;

/// Sends `a` (and, for a refusal, ends the stream); whether the stream goes on.
pub(crate) async fn answer(send: &mut SendStream, a: StreamAnswer) -> bool {
    let refused = matches!(a, StreamAnswer::Refused(_));
    let sent = send.write_all(&a.encode()).await.is_ok();
    if refused {
        let _ = send.finish();
    }
    sent && !refused
}

/// Waits until the member has every byte of `send`, which this end finished (or the stream or
/// its connection is gone), so that closing the connection then loses none.
pub(crate) async fn delivered(send: &mut SendStream) {
    let _ = send.stopped().await;
}

/// Reads the header at the front of `recv` with `decode`, byte by byte as it comes (it is
/// short, and the bytes after it are the stream's own); `None` if the stream ends or breaks
/// first, or what came is no header.
pub(crate) async fn read_header<T>(
    recv: &mut RecvStream,
    decode: impl Fn(&[u8]) -> Result<Option<(T, usize)>, StreamHeaderError>,
) -> Option<T> {
    let mut buf = Vec::with_capacity(MAX_ANSWER_LEN);
    loop {
        if let Some((header, _)) = decode(&buf).ok()? {
            return Some(header);
        }
        let mut byte = [0u8; 1];
        recv.read_exact(&mut byte).await.ok()?;
        buf.push(byte[0]);
    }
}

/// How the other side took a stream [`ask`] opened.
pub(crate) enum Asked {
    /// Its bytes flow from now on.
    Accepted,
    /// Refused, and why.
    Refused(String),
    /// The stream ended or broke before any answer (its connection closed, say).
    Ended,
    /// No answer within [`ANSWER_TIMEOUT`]; the stream is reset.
    TimedOut,
}

/// Writes `open` on a stream just opened and waits for the answer.
pub(crate) async fn ask(send: &mut SendStream, recv: &mut RecvStream, open: StreamOpen) -> Asked {
    if send.write_all(&open.encode()).await.is_err() {
        return Asked::Ended;
    }
    let answer = read_header(recv, StreamAnswer::decode);
    match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
        Ok(Some(StreamAnswer::Accepted)) => Asked::Accepted,
        Ok(Some(StreamAnswer::Refused(why))) => Asked::Refused(why),
        Ok(None) => Asked::Ended,
        Err(_) => {
            let _ = send.reset(RESET_CODE.into());
            Asked::TimedOut
        }
    }
}
