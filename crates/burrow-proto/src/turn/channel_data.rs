//! ChannelData messages (RFC 8656 12.4): a 2-byte channel number, a 2-byte length and the
//! data, which a client and the server exchange instead of Send and Data indications once a
//! channel is bound (4 bytes of overhead instead of 36).
//!
//! Over a stream (TCP, TLS) each message is padded to a multiple of 4 bytes, so the next one
//! starts aligned; over UDP padding is optional: burrow sends none and accepts up to 3 bytes.

/// The lowest channel number a client may bind.
pub const MIN_CHANNEL: u16 = 0x4000;
/// The highest channel number a client may bind. RFC 8656 narrowed the range to 0x4FFF and
/// reserved the rest, but RFC 5766's clients use up to 0x7FFF (coturn's `turnutils_uclient`
/// picks channels at random from it) and coturn serves them, so burrow does too: the first
/// two bits (01) still tell ChannelData from STUN.
pub const MAX_CHANNEL: u16 = 0x7fff;
/// The channel number and length.
pub const HEADER_LEN: usize = 4;

/// How messages are delimited on the client's transport.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Framing {
    /// One message per UDP datagram: padding optional.
    Datagram,
    /// Messages back to back on a TCP or TLS stream: padding mandatory.
    Stream,
}

/// Why bytes are not a ChannelData message.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ChannelDataError {
    /// Fewer than 4 bytes.
    #[error("{len} bytes is shorter than the 4-byte ChannelData header")]
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// The channel number is outside 0x4000..=0x7FFF.
    #[error("channel number {0:#06x} is outside 0x4000..=0x7fff")]
    BadChannel(u16),
    /// The length field disagrees with the bytes present (and their padding).
    #[error("ChannelData declares {declared} bytes but {actual} follow the header")]
    LengthMismatch {
        /// The length the header declares.
        declared: u16,
        /// The bytes after the header.
        actual: usize,
    },
}

/// A parsed ChannelData message, borrowing its data.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ChannelData<'a> {
    /// The channel number.
    pub channel: u16,
    /// The application data.
    pub data: &'a [u8],
}

/// Whether a message that starts with `first` is ChannelData rather than STUN: its first two
/// bits are 01 (RFC 7983: 64..=79 are channels, STUN starts 0..=3).
pub fn is_channel_data(first: u8) -> bool {
    first & 0xc0 == 0x40
}

fn padded(len: usize) -> usize {
    len.div_ceil(4) * 4
}

impl<'a> ChannelData<'a> {
    /// Parses one message. Never panics.
    pub fn parse(buf: &'a [u8], framing: Framing) -> Result<Self, ChannelDataError> {
        let [c0, c1, l0, l1, rest @ ..] = buf else {
            return Err(ChannelDataError::TooShort { len: buf.len() });
        };
        let channel = u16::from_be_bytes([*c0, *c1]);
        if !(MIN_CHANNEL..=MAX_CHANNEL).contains(&channel) {
            return Err(ChannelDataError::BadChannel(channel));
        }
        let declared = u16::from_be_bytes([*l0, *l1]);
        let len = usize::from(declared);
        let fits = match framing {
            Framing::Datagram => (len..=padded(len)).contains(&rest.len()),
            Framing::Stream => rest.len() == padded(len),
        };
        if !fits {
            return Err(ChannelDataError::LengthMismatch {
                declared,
                actual: rest.len(),
            });
        }
        Ok(ChannelData {
            channel,
            data: &rest[..len],
        })
    }

    /// Writes a message carrying `data` (at most 65,535 bytes) on `channel` into `out`
    /// (cleared first), padded as `framing` needs.
    pub fn encode(channel: u16, data: &[u8], framing: Framing, out: &mut Vec<u8>) {
        let data = &data[..data.len().min(usize::from(u16::MAX))];
        out.clear();
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
        if framing == Framing::Stream {
            out.resize(HEADER_LEN + padded(data.len()), 0);
        }
    }
}

/// How many bytes the message at the start of a TCP stream takes, once its first 4 bytes
/// are there: a STUN message is its 20-byte header and its length, a ChannelData message its
/// 4-byte header and its padded length. `None` until 4 bytes have arrived.
pub fn stream_message_len(buf: &[u8]) -> Option<usize> {
    let [first, _, l0, l1, ..] = buf else {
        return None;
    };
    let len = usize::from(u16::from_be_bytes([*l0, *l1]));
    Some(if is_channel_data(*first) {
        HEADER_LEN + padded(len)
    } else {
        crate::stun::HEADER_LEN + len
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_padding_is_optional_and_tcp_padding_mandatory() {
        let mut out = Vec::new();
        ChannelData::encode(0x4001, b"hello", Framing::Datagram, &mut out);
        assert_eq!(out, b"\x40\x01\x00\x05hello");
        let udp = ChannelData::parse(&out, Framing::Datagram).unwrap();
        assert_eq!((udp.channel, udp.data), (0x4001, &b"hello"[..]));
        assert!(matches!(
            ChannelData::parse(&out, Framing::Stream),
            Err(ChannelDataError::LengthMismatch {
                declared: 5,
                actual: 5
            })
        ));
        ChannelData::encode(0x4001, b"hello", Framing::Stream, &mut out);
        assert_eq!(out, b"\x40\x01\x00\x05hello\0\0\0");
        assert_eq!(stream_message_len(&out), Some(12));
        for framing in [Framing::Datagram, Framing::Stream] {
            assert_eq!(ChannelData::parse(&out, framing).unwrap().data, b"hello");
        }
        // More than the padding, or less than declared: not one message.
        let mut long = out.clone();
        long.push(0);
        assert!(ChannelData::parse(&long, Framing::Datagram).is_err());
        assert!(ChannelData::parse(&out[..8], Framing::Datagram).is_err());
    }

    #[test]
    fn channels_outside_the_range_and_short_input_are_refused() {
        assert_eq!(
            ChannelData::parse(b"\x80\x00\x00\x00", Framing::Datagram),
            Err(ChannelDataError::BadChannel(0x8000))
        );
        assert_eq!(
            ChannelData::parse(b"\x40\x00\x00", Framing::Datagram),
            Err(ChannelDataError::TooShort { len: 3 })
        );
        assert!(is_channel_data(0x40) && is_channel_data(0x7f));
        assert!(!is_channel_data(0x00) && !is_channel_data(0x80));
        let stun_header = [0, 1, 0, 8, 0x21, 0x12, 0xa4, 0x42];
        assert_eq!(stream_message_len(&stun_header), Some(28));
        assert_eq!(stream_message_len(&[0x40, 0]), None);
    }

    #[test]
    fn mutated_channel_data_never_panics() {
        let mut seed = Vec::new();
        ChannelData::encode(0x4abc, &[7; 37], Framing::Stream, &mut seed);
        let mut rng = crate::mutation::Mutator::new();
        for _ in 0..50_000 {
            let mut m = rng.overwrite(&seed);
            rng.truncate_below(&mut m, seed.len() + 1);
            for framing in [Framing::Datagram, Framing::Stream] {
                if let Ok(cd) = ChannelData::parse(&m, framing) {
                    assert!(cd.data.len() + HEADER_LEN <= m.len());
                }
            }
            let _ = stream_message_len(&m);
        }
    }
}
