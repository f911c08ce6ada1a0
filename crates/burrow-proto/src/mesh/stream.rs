//! What a member opens a bidirectional stream on a mesh connection for, and the answer.
//!
//! The opener writes a [`StreamOpen`] first: a kind byte, then that kind's fields. `1` is a
//! forwarded TCP connection, followed by the port (big-endian `u16`) it wants on the other
//! machine's loopback; `2` is a stream for a program behind the other node's local API, with no
//! fields. The other side answers with a [`StreamAnswer`]: `0`, after which the stream carries
//! the connection's bytes both ways; or `1`, a length byte and a reason in UTF-8 (at most
//! [`MAX_REASON_LEN`] bytes), after which it ends the stream.
//!
//! Both are read from the front of what has arrived so far: `decode` says how many bytes the
//! header took, or that more are needed (`Ok(None)`), or why it can never be one.

/// Longest reason a refusal carries, in bytes.
pub const MAX_REASON_LEN: usize = 200;
/// Longest [`StreamOpen`] encoding, in bytes: a reader never needs more to decide.
pub const MAX_OPEN_LEN: usize = 3;
/// Longest [`StreamAnswer`] encoding, in bytes.
pub const MAX_ANSWER_LEN: usize = 2 + MAX_REASON_LEN;

const KIND_FORWARD: u8 = 1;
const KIND_APP: u8 = 2;
const ACCEPTED: u8 = 0;
const REFUSED: u8 = 1;

/// Why bytes cannot be the start of a stream header.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StreamHeaderError {
    /// A kind of stream this burrow does not know.
    #[error("unknown kind of stream {0}")]
    Kind(u8),
    /// An answer that is neither accepted nor refused.
    #[error("unknown answer {0}")]
    Answer(u8),
    /// A refusal whose reason is longer than [`MAX_REASON_LEN`] or not UTF-8.
    #[error("the refusal's reason is invalid")]
    Reason,
}

/// What a stream is opened for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamOpen {
    /// A TCP connection to this port on the other machine's loopback, which it must expose.
    Forward {
        /// The port.
        port: u16,
    },
    /// A stream for a program that accepts them through the other node's local API.
    App,
}

impl StreamOpen {
    /// The header's bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            StreamOpen::Forward { port } => {
                let [hi, lo] = port.to_be_bytes();
                vec![KIND_FORWARD, hi, lo]
            }
            StreamOpen::App => vec![KIND_APP],
        }
    }

    /// The header at the front of `buf` and its length; `None` if `buf` ends before it does.
    pub fn decode(buf: &[u8]) -> Result<Option<(StreamOpen, usize)>, StreamHeaderError> {
        let Some(&kind) = buf.first() else {
            return Ok(None);
        };
        match kind {
            KIND_FORWARD => Ok(buf.get(1..3).map(|p| {
                let port = u16::from_be_bytes([p[0], p[1]]);
                (StreamOpen::Forward { port }, 3)
            })),
            KIND_APP => Ok(Some((StreamOpen::App, 1))),
            other => Err(StreamHeaderError::Kind(other)),
        }
    }
}

/// The answer to a [`StreamOpen`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamAnswer {
    /// The stream carries bytes from now on.
    Accepted,
    /// Refused, and why (at most [`MAX_REASON_LEN`] bytes; longer ones are cut at a character
    /// boundary when encoded).
    Refused(String),
}

impl StreamAnswer {
    /// The answer's bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            StreamAnswer::Accepted => vec![ACCEPTED],
            StreamAnswer::Refused(reason) => {
                let reason = crate::text::truncate(reason, MAX_REASON_LEN);
                let mut out = vec![REFUSED, reason.len() as u8];
                out.extend_from_slice(reason.as_bytes());
                out
            }
        }
    }

    /// The answer at the front of `buf` and its length; `None` if `buf` ends before it does.
    pub fn decode(buf: &[u8]) -> Result<Option<(StreamAnswer, usize)>, StreamHeaderError> {
        let Some(&status) = buf.first() else {
            return Ok(None);
        };
        match status {
            ACCEPTED => Ok(Some((StreamAnswer::Accepted, 1))),
            REFUSED => {
                let Some(&len) = buf.get(1) else {
                    return Ok(None);
                };
                let len = usize::from(len);
                if len > MAX_REASON_LEN {
                    return Err(StreamHeaderError::Reason);
                }
                let Some(reason) = buf.get(2..2 + len) else {
                    return Ok(None);
                };
                let reason = std::str::from_utf8(reason).map_err(|_| StreamHeaderError::Reason)?;
                Ok(Some((StreamAnswer::Refused(reason.to_owned()), 2 + len)))
            }
            other => Err(StreamHeaderError::Answer(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_read_back_from_any_prefix_on() {
        for open in [
            StreamOpen::Forward { port: 5555 },
            StreamOpen::Forward { port: 0 },
            StreamOpen::App,
        ] {
            let bytes = open.encode();
            assert!(bytes.len() <= MAX_OPEN_LEN);
            for cut in 0..bytes.len() {
                assert_eq!(StreamOpen::decode(&bytes[..cut]), Ok(None));
            }
            let more = [&bytes[..], b"data"].concat();
            assert_eq!(StreamOpen::decode(&more), Ok(Some((open, bytes.len()))));
        }
        assert_eq!(StreamOpen::decode(&[0]), Err(StreamHeaderError::Kind(0)));
        assert_eq!(StreamOpen::decode(&[9, 1]), Err(StreamHeaderError::Kind(9)));
    }

    #[test]
    fn answers_read_back_and_long_reasons_are_cut() {
        for answer in [
            StreamAnswer::Accepted,
            StreamAnswer::Refused(String::new()),
            StreamAnswer::Refused("port 5555 is not exposed".into()),
        ] {
            let bytes = answer.encode();
            for cut in 0..bytes.len() {
                assert_eq!(StreamAnswer::decode(&bytes[..cut]), Ok(None));
            }
            let more = [&bytes[..], b"x"].concat();
            assert_eq!(StreamAnswer::decode(&more), Ok(Some((answer, bytes.len()))));
        }
        let long = StreamAnswer::Refused("é".repeat(150)).encode();
        assert!(long.len() <= MAX_ANSWER_LEN);
        let Ok(Some((StreamAnswer::Refused(r), _))) = StreamAnswer::decode(&long) else {
            panic!("a refusal")
        };
        assert_eq!(r, "é".repeat(100));
        assert_eq!(
            StreamAnswer::decode(&[1, 201]),
            Err(StreamHeaderError::Reason)
        );
        assert_eq!(
            StreamAnswer::decode(&[1, 1, 0xff]),
            Err(StreamHeaderError::Reason)
        );
        assert_eq!(
            StreamAnswer::decode(&[2]),
            Err(StreamHeaderError::Answer(2))
        );
    }
}
