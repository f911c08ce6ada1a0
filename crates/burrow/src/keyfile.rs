//! Storing the node's secret key in a file readable only by its owner, and locking it so that
//! two running nodes on one machine never share a key by accident (at a relay they would
//! evict each other).

use std::fs::{self, File, TryLockError};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use burrow_proto::identity::SecretKey;

use crate::paths::{create_private_file, read_private_file, PathError};

/// Why the key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading, creating or writing failed.
    #[error("key file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file does not hold a key.
    #[error("key file {path} does not hold a burrow secret key (64 hex digits expected)")]
    Malformed {
        /// The file.
        path: PathBuf,
    },
    /// Others can read the file.
    #[error("key file {path} is readable by others (mode {mode:o}); run: chmod 600 {path}")]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Another process holds the file's lock: it runs a node with this key.
    #[error(
        "key file {path} is in use by another burrow process{}",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    InUse {
        /// The file.
        path: PathBuf,
        /// The process holding the lock, when the system says (Linux's /proc/locks).
        pid: Option<u32>,
    },
}

/// The lock on a key file, taken by [`load_and_lock`]; released when dropped (or when the
/// process ends, however it ends).
#[derive(Debug)]
pub struct KeyLock {
    _file: File,
}

/// Like [`load_or_create`], and takes an exclusive advisory lock on the file (`flock`) for as
/// long as the returned [`KeyLock`] lives: a second process doing the same with this file
/// fails with [`KeyFileError::InUse`] instead of running a second node with the same key.
pub fn load_and_lock(path: &Path) -> Result<(SecretKey, KeyLock), KeyFileError> {
    let key = load_or_create(path)?;
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok((key, KeyLock { _file: file })),
        Err(TryLockError::WouldBlock) => Err(KeyFileError::InUse {
            path: path.to_owned(),
            pid: lock_holder(&file),
        }),
        Err(TryLockError::Error(e)) => Err(io(e)),
    }
}

/// The process holding a `flock` on `file`, from /proc/locks (`ID: FLOCK ADVISORY WRITE PID
/// MAJOR:MINOR:INODE START END`); `None` where there is no such file or no such line.
fn lock_holder(file: &File) -> Option<u32> {
    let meta = file.metadata().ok()?;
    let dev = meta.dev();
    // Linux's dev_t encoding, as /proc/locks prints it (hex major and minor).
    let (major, minor) = (
        ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff),
        (dev & 0xff) | ((dev >> 12) & !0xff),
    );
    let want = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    fs::read_to_string("/proc/locks")
        .ok()?
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() >= 6 && f[1] == "FLOCK" && f[5] == want)
        .and_then(|f| f[4].parse().ok())
}

/// The default key location: `$BURROW_KEY`, else `key` in [`crate::paths::config_dir`].
pub fn default_path() -> PathBuf {
    if let Some(p) = std::env::var_os("BURROW_KEY") {
        return PathBuf::from(p);
    }
    crate::paths::config_dir().join("key")
}

/// Loads the key at `path`, creating a new random one (mode 0600, with [`create_private_file`])
/// if the file does not exist.
pub fn load_or_create(path: &Path) -> Result<SecretKey, KeyFileError> {
    if let Some(text) = read_private_file(path)? {
        return parse(text.trim()).ok_or_else(|| KeyFileError::Malformed {
            path: path.to_owned(),
        });
    }
    let key = SecretKey::from_bytes(rand::random());
    let text = format!("{}\n", data_encoding::HEXLOWER.encode(&key.to_bytes()));
    if !create_private_file(path, text.as_bytes())? {
        // Another process created it first: use its key.
        return load_or_create(path);
    }
    tracing::info!(path = %path.display(), node_id = %key.node_id(), "created a new node key");
    Ok(key)
}

impl From<PathError> for KeyFileError {
    fn from(e: PathError) -> Self {
        match e {
            PathError::NotPrivate { path, mode, .. } => KeyFileError::TooOpen { path, mode },
            PathError::Io { path, source } => KeyFileError::Io { path, source },
            PathError::NotADirectory { path } => KeyFileError::Io {
                path,
                source: std::io::ErrorKind::NotADirectory.into(),
            },
        }
    }
}

fn parse(text: &str) -> Option<SecretKey> {
    let bytes = data_encoding::HEXLOWER_PERMISSIVE
        .decode(text.as_bytes())
        .ok()?;
    Some(SecretKey::from_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_once_then_loads_the_same_key_with_mode_0600() {
        let dir = std::env::temp_dir().join(format!("burrow-keytest-{}", std::process::id()));
        let path = dir.join("sub").join("key");
        let a = load_or_create(&path).unwrap();
        let b = load_or_create(&path).unwrap();
        assert_eq!(a.node_id(), b.node_id());
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(KeyFileError::TooOpen { .. })
        ));
        fs::write(&path, "nonsense").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(KeyFileError::Malformed { .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_locked_key_file_is_in_use_until_the_lock_is_dropped() {
        let dir = std::env::temp_dir().join(format!("burrow-locktest-{}", std::process::id()));
        let path = dir.join("key");
        let (key, lock) = load_and_lock(&path).unwrap();
        // flock locks belong to the open file, so a second open in this process conflicts
        // just as another process's would.
        match load_and_lock(&path) {
            Err(e @ KeyFileError::InUse { pid, .. }) => {
                assert_eq!(pid, Some(std::process::id()), "{e}");
                let text = e.to_string();
                assert!(
                    text.contains(&format!("(pid {})", std::process::id())),
                    "{text}"
                );
                assert!(text.contains(path.to_str().unwrap()), "{text}");
            }
            other => panic!("{other:?}"),
        }
        // Reading the key needs no lock.
        assert_eq!(load_or_create(&path).unwrap().node_id(), key.node_id());
        drop(lock);
        let (again, _lock) = load_and_lock(&path).unwrap();
        assert_eq!(again.node_id(), key.node_id());
        fs::remove_dir_all(&dir).unwrap();
    }
}
