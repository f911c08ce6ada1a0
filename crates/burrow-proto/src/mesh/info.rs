//! What a member tells each member it connects to about itself, beside its proof: its NAT, as
//! its endpoint sees it. Unsigned (it travels on a connection whose both ends proved
//! membership) and only shown to people: nothing is decided on it.
//!
//! The body is one byte per field, in this order: the NAT (`0` not known, `1` easy, `2` hard,
//! `3` open). A reader takes the fields it knows and ignores any bytes after them (fields a
//! newer member sends); a value it does not know reads as not known. At most
//! [`MAX_INFO_LEN`] bytes.

use crate::disco::NatHint;

use super::error::FormatError;

/// Longest body accepted, in bytes: room for fields to come, and no more.
pub const MAX_INFO_LEN: usize = 256;

const NAT_UNKNOWN: u8 = 0;
const NAT_EASY: u8 = 1;
const NAT_HARD: u8 = 2;
const NAT_OPEN: u8 = 3;

/// What a member tells of itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Its NAT, if its endpoint knows yet.
    pub nat: Option<NatHint>,
}

impl NodeInfo {
    /// The body.
    pub fn encode(&self) -> Vec<u8> {
        vec![match self.nat {
            None => NAT_UNKNOWN,
            Some(NatHint::Easy) => NAT_EASY,
            Some(NatHint::Hard) => NAT_HARD,
            Some(NatHint::Open) => NAT_OPEN,
        }]
    }

    /// Reads a body: empty is [`FormatError::Truncated`], over [`MAX_INFO_LEN`] bytes
    /// [`FormatError::TooLarge`]; unknown values and later bytes are ignored.
    pub fn decode(body: &[u8]) -> Result<NodeInfo, FormatError> {
        if body.len() > MAX_INFO_LEN {
            return Err(FormatError::TooLarge {
                len: body.len(),
                max: MAX_INFO_LEN,
            });
        }
        let (&nat, _later) = body.split_first().ok_or(FormatError::Truncated)?;
        let nat = match nat {
            NAT_EASY => Some(NatHint::Easy),
            NAT_HARD => Some(NatHint::Hard),
            NAT_OPEN => Some(NatHint::Open),
            _ => None,
        };
        Ok(NodeInfo { nat })
    }
}

/// A NAT hint's name, as people and JSON see it: `easy` (the mapping is the same towards every
/// destination, a cone NAT or none found yet), `hard` (it varies by destination: symmetric) or
/// `open` (no NAT: the public address is the node's own).
pub fn nat_name(nat: NatHint) -> &'static str {
    match nat {
        NatHint::Easy => "easy",
        NatHint::Hard => "hard",
        NatHint::Open => "open",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_nat_reads_back_and_unknown_bytes_are_ignored() {
        for nat in [
            None,
            Some(NatHint::Easy),
            Some(NatHint::Hard),
            Some(NatHint::Open),
        ] {
            let info = NodeInfo { nat };
            let body = info.encode();
            assert_eq!(NodeInfo::decode(&body), Ok(info));
            // A newer member's later fields are skipped.
            let longer = [&body[..], &[9, 9, 9]].concat();
            assert_eq!(NodeInfo::decode(&longer), Ok(info));
        }
        assert_eq!(NodeInfo::decode(&[4]), Ok(NodeInfo { nat: None }));
        assert_eq!(NodeInfo::decode(&[255]), Ok(NodeInfo { nat: None }));
        assert_eq!(NodeInfo::decode(&[]), Err(FormatError::Truncated));
        assert_eq!(
            NodeInfo::decode(&[1; MAX_INFO_LEN]).unwrap().nat,
            Some(NatHint::Easy)
        );
        assert_eq!(
            NodeInfo::decode(&[1; MAX_INFO_LEN + 1]),
            Err(FormatError::TooLarge {
                len: MAX_INFO_LEN + 1,
                max: MAX_INFO_LEN
            })
        );
        assert_eq!(nat_name(NatHint::Hard), "hard");
    }
}
