//! The field encodings the mesh objects share (all integers big-endian).

use crate::identity::NodeId;

use super::error::FormatError;
use super::id::MeshId;

/// The format version every mesh object starts with.
pub(crate) const VERSION: u8 = 1;

/// Reads an encoding front to back; running out is [`FormatError::Truncated`].
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    /// How many bytes have been read.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// What is left.
    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.bytes[self.pos..]
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let head = self.rest().get(..n).ok_or(FormatError::Truncated)?;
        self.pos += n;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// The format version byte, which must be [`VERSION`].
    pub(crate) fn version(&mut self) -> Result<(), FormatError> {
        match self.u8()? {
            VERSION => Ok(()),
            other => Err(FormatError::Version(other)),
        }
    }

    /// A node id, checked to be an Ed25519 point.
    pub(crate) fn node_id(&mut self) -> Result<NodeId, FormatError> {
        NodeId::from_bytes(self.array()?).map_err(FormatError::NodeId)
    }

    /// A mesh id, checked to be an Ed25519 point.
    pub(crate) fn mesh_id(&mut self) -> Result<MeshId, FormatError> {
        MeshId::from_bytes(self.array()?).map_err(FormatError::MeshId)
    }

    /// A name: a length byte and 1 to `MAX_NAME_LEN` bytes (see [`put_name`]).
    pub(crate) fn name(&mut self) -> Result<String, FormatError> {
        let len = usize::from(self.u8()?);
        let raw = self.take(len)?;
        check_name(raw)?;
        // check_name proved it UTF-8.
        Ok(String::from_utf8_lossy(raw).into_owned())
    }

    /// Fails unless everything was read.
    pub(crate) fn finish(&self) -> Result<(), FormatError> {
        match self.rest().len() {
            0 => Ok(()),
            n => Err(FormatError::TrailingBytes(n)),
        }
    }
}

/// Appends a name: a length byte and the UTF-8, which must be 1 to `MAX_NAME_LEN` bytes
/// without control characters.
pub(crate) fn put_name(out: &mut Vec<u8>, name: &str) -> Result<(), FormatError> {
    check_name(name.as_bytes())?;
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

fn check_name(raw: &[u8]) -> Result<(), FormatError> {
    if raw.is_empty() {
        return Err(FormatError::Name("empty"));
    }
    crate::record::check_label(raw).map_err(FormatError::Name)
}

/// Fails if an encoding is longer than `max`, before any work is done on it.
pub(crate) fn check_len(bytes: &[u8], max: usize) -> Result<(), FormatError> {
    if bytes.len() > max {
        return Err(FormatError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    Ok(())
}
