//! The registry's snapshot file, so records survive a restart.
//!
//! ```text
//! magic         8 bytes "BRWREC\0\x01" (format version 1)
//! per record:   u16 length + the signed record
//!               u64 stored_until (unix seconds)
//!               u8 namespace count + that many u64 namespace hashes
//! ```
//!
//! Integers are big-endian. The file is written to a temporary name and renamed over the old
//! one, so a crash leaves the previous snapshot whole. Loading trusts nothing in it: every
//! record's signature is checked again (on all cores: a million records take several seconds
//! of CPU), and records past their storage time are left out.

use std::io::Write;
use std::path::{Path, PathBuf};

use burrow_proto::record::{SignedRecord, MAX_SIGNED_LEN};

use super::RecordStore;

const MAGIC: &[u8; 8] = b"BRWREC\0\x01";

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading, writing or renaming the file failed.
    #[error("records snapshot {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a records snapshot.
    #[error("records snapshot {0}: not a burrow records snapshot (bad magic)")]
    NotASnapshot(PathBuf),
}

pub(super) fn save(store: &RecordStore, path: &Path) -> Result<usize, SnapshotError> {
    let io = |source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
    file.write_all(MAGIC).map_err(io)?;
    let mut count = 0;
    let mut buf = Vec::new();
    for shard in store.shards.iter() {
        // Copied out under the read lock, written after it: a slow disk never holds up writers.
        {
            let shard = shard.read().expect("lock");
            for e in shard.values() {
                buf.extend_from_slice(&(e.bytes.len() as u16).to_be_bytes());
                buf.extend_from_slice(&e.bytes);
                buf.extend_from_slice(&e.stored_until.to_be_bytes());
                buf.push(e.namespaces.len() as u8);
                for h in e.namespaces.iter() {
                    buf.extend_from_slice(&h.to_be_bytes());
                }
            }
            count += shard.len();
        }
        file.write_all(&buf).map_err(io)?;
        buf.clear();
    }
    let file = file.into_inner().map_err(|e| io(e.into_error()))?;
    // On disk before the rename, so the rename never exposes a partial file.
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(count)
}

/// One record as read from the file, not yet verified.
struct Raw<'a> {
    bytes: &'a [u8],
    stored_until: u64,
    namespaces: Vec<u64>,
}

pub(super) fn load(store: &RecordStore, path: &Path, now: u64) -> Result<usize, SnapshotError> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(SnapshotError::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    let Some(mut rest) = data.strip_prefix(MAGIC) else {
        return Err(SnapshotError::NotASnapshot(path.to_owned()));
    };
    let mut raws = Vec::new();
    while !rest.is_empty() {
        match parse_one(rest) {
            Some((raw, tail)) => {
                raws.push(raw);
                rest = tail;
            }
            None => {
                tracing::warn!(
                    path = %path.display(),
                    "records snapshot is cut short after {} records; loading those",
                    raws.len()
                );
                break;
            }
        }
    }
    let live: Vec<Raw<'_>> = raws.into_iter().filter(|r| r.stored_until >= now).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = live.len().div_ceil(threads).max(1);
    let (loaded, rejected) = std::thread::scope(|s| {
        let workers: Vec<_> = live
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let (mut loaded, mut rejected) = (0usize, 0usize);
                    for raw in part {
                        match SignedRecord::verify(raw.bytes, now) {
                            Ok(rec) if store.restore(&rec, &raw.namespaces, raw.stored_until) => {
                                loaded += 1
                            }
                            _ => rejected += 1,
                        }
                    }
                    (loaded, rejected)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("snapshot loader panicked"))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    });
    if rejected > 0 {
        tracing::warn!(
            path = %path.display(),
            "{rejected} records in the snapshot failed verification, expired or did not fit the limits"
        );
    }
    Ok(loaded)
}

fn parse_one(data: &[u8]) -> Option<(Raw<'_>, &[u8])> {
    let (len, rest) = data.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    if len > MAX_SIGNED_LEN || rest.len() < len {
        return None;
    }
    let (bytes, rest) = rest.split_at(len);
    let (stored_until, rest) = rest.split_first_chunk::<8>()?;
    let (&count, mut rest) = rest.split_first()?;
    let mut namespaces = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let (h, tail) = rest.split_first_chunk::<8>()?;
        namespaces.push(u64::from_be_bytes(*h));
        rest = tail;
    }
    Some((
        Raw {
            bytes,
            stored_until: u64::from_be_bytes(*stored_until),
            namespaces,
        },
        rest,
    ))
}
