//! Storing the node's secret key in a file readable only by its owner.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use burrow_proto::identity::SecretKey;

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
}

/// The default key location: `$BURROW_KEY`, else `$XDG_CONFIG_HOME/burrow/key`, else
/// `~/.config/burrow/key`.
pub fn default_path() -> PathBuf {
    if let Some(p) = std::env::var_os("BURROW_KEY") {
        return PathBuf::from(p);
    }
    crate::config::config_dir().join("key")
}

/// Loads the key at `path`, creating a new random one (mode 0600) if the file does not exist.
pub fn load_or_create(path: &Path) -> Result<SecretKey, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    match fs::read_to_string(path) {
        Ok(text) => {
            let mode = fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyFileError::TooOpen {
                    path: path.to_owned(),
                    mode,
                });
            }
            parse(text.trim()).ok_or_else(|| KeyFileError::Malformed {
                path: path.to_owned(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::create_dir_all(dir).map_err(io)?;
            }
            // Written aside and linked into place, so a process starting at the same time never
            // reads a half-written key, and the first one to link wins.
            let key = SecretKey::from_bytes(rand::random());
            let tmp = path.with_extension(format!("tmp{}", rand::random::<u32>()));
            let written = (|| {
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)?;
                writeln!(file, "{}", data_encoding::HEXLOWER.encode(&key.to_bytes()))?;
                file.sync_all()?;
                fs::hard_link(&tmp, path)
            })();
            let _ = fs::remove_file(&tmp);
            match written {
                Ok(()) => {
                    tracing::info!(path = %path.display(), node_id = %key.node_id(), "created a new node key");
                    Ok(key)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create(path),
                Err(e) => Err(io(e)),
            }
        }
        Err(e) => Err(io(e)),
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
}
