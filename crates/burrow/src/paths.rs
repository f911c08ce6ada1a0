//! Where burrow keeps its files, each rule written once here, and how private files and
//! directories are made and checked.
//!
//! | what | where |
//! |---|---|
//! | configuration ([`config_dir`]) | `$XDG_CONFIG_HOME/burrow`, else `~/.config/burrow`, else `./.burrow` |
//! | state: keys, certificates, the API token ([`state_dir`]) | `$XDG_STATE_HOME/burrow`, else `~/.local/state/burrow`, else `./.burrow/state` |
//! | runtime: the daemon's socket ([`runtime_dir`]) | `$XDG_RUNTIME_DIR/burrow`, else `/run/burrow` for root, else `run` in the state directory |
//!
//! An empty variable counts as unset. Private directories are created 0700 and must stay
//! ours and closed to group and others ([`private_dir`]); private files are 0600, written
//! aside and linked into place so that nobody reads half of one ([`create_private_file`]).

use std::ffi::OsString;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why a private file or directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// Reading, creating or checking failed.
    #[error("{path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// It belongs to someone else, or group or others may use it.
    #[error(
        "{path} must belong to uid {uid} and be closed to group and others, but belongs to \
         uid {owner} with mode {mode:o} (run: chmod go= {path})"
    )]
    NotPrivate {
        /// The file or directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Its permission bits.
        mode: u32,
        /// Our effective uid.
        uid: u32,
    },
    /// A directory was expected (a symbolic link is not followed).
    #[error("{path} is not a directory")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
}

fn var(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// `$XDG_CONFIG_HOME/burrow`, else `~/.config/burrow`, else `./.burrow`.
pub fn config_dir() -> PathBuf {
    config_dir_in(&var)
}

/// `$XDG_STATE_HOME/burrow`, else `~/.local/state/burrow`, else `./.burrow/state`: keys,
/// certificates and the API token.
pub fn state_dir() -> PathBuf {
    state_dir_in(&var)
}

/// `$XDG_RUNTIME_DIR/burrow`, else `/run/burrow` for root, else `run` in [`state_dir`]: the
/// daemon's socket. Only the rule: [`private_dir`] creates and checks it.
pub fn runtime_dir() -> PathBuf {
    runtime_dir_in(&var, euid())
}

type Env<'a> = &'a dyn Fn(&str) -> Option<OsString>;

fn config_dir_in(env: Env) -> PathBuf {
    match (env("XDG_CONFIG_HOME"), env("HOME")) {
        (Some(x), _) => PathBuf::from(x).join("burrow"),
        (None, Some(home)) => PathBuf::from(home).join(".config/burrow"),
        (None, None) => PathBuf::from(".burrow"),
    }
}

fn state_dir_in(env: Env) -> PathBuf {
    match (env("XDG_STATE_HOME"), env("HOME")) {
        (Some(x), _) => PathBuf::from(x).join("burrow"),
        (None, Some(home)) => PathBuf::from(home).join(".local/state/burrow"),
        (None, None) => PathBuf::from(".burrow/state"),
    }
}

fn runtime_dir_in(env: Env, euid: u32) -> PathBuf {
    match env("XDG_RUNTIME_DIR") {
        Some(x) => PathBuf::from(x).join("burrow"),
        None if euid == 0 => PathBuf::from("/run/burrow"),
        None => state_dir_in(env).join("run"),
    }
}

/// Our effective uid.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid takes nothing, touches no memory and cannot fail.
    unsafe { libc::geteuid() }
}

/// Creates `path` (and missing parents) with mode 0700 if it does not exist, then checks that
/// it is a directory of ours that group and others cannot use.
pub fn private_dir(path: &Path) -> Result<(), PathError> {
    let io = |source| PathError::Io {
        path: path.to_owned(),
        source,
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io)?;
    let meta = fs::symlink_metadata(path).map_err(io)?;
    if !meta.is_dir() {
        return Err(PathError::NotADirectory {
            path: path.to_owned(),
        });
    }
    check_private(path, &meta, true)
}

/// Whether `meta` (of `path`) is private: no group or other bits, and, if `owned`, ours.
fn check_private(path: &Path, meta: &fs::Metadata, owned: bool) -> Result<(), PathError> {
    let (mode, owner, uid) = (meta.mode() & 0o7777, meta.uid(), euid());
    if mode & 0o077 != 0 || (owned && owner != uid) {
        return Err(PathError::NotPrivate {
            path: path.to_owned(),
            owner,
            mode,
            uid,
        });
    }
    Ok(())
}

/// The text of a private file, `None` if it does not exist; [`PathError::NotPrivate`] if group
/// or others may read it.
pub fn read_private_file(path: &Path) -> Result<Option<String>, PathError> {
    let io = |source| PathError::Io {
        path: path.to_owned(),
        source,
    };
    match fs::read_to_string(path) {
        Ok(text) => {
            check_private(path, &fs::metadata(path).map_err(io)?, false)?;
            Ok(Some(text))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(e)),
    }
}

/// Creates `path` with mode 0600 holding `contents`, and its missing parents with mode 0700.
/// Written aside and linked into place, so that a process starting at the same time never reads
/// half of it and the first one to link wins: returns `false` (and changes nothing) if the file
/// exists already.
pub fn create_private_file(path: &Path, contents: &[u8]) -> Result<bool, PathError> {
    let io = |source| PathError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    let written = write_aside(path, contents, |tmp| fs::hard_link(tmp, path));
    match written {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io(e)),
    }
}

/// Writes `contents` to `path` with mode 0600, replacing what is there at once: written aside
/// and renamed into place, so a reader sees the old file or the new one, never half of either.
pub fn replace_private_file(path: &Path, contents: &[u8]) -> Result<(), PathError> {
    write_aside(path, contents, |tmp| fs::rename(tmp, path)).map_err(|source| PathError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes `contents` to a new 0600 file beside `path`, synced, and hands it to `place` (which
/// links or renames it into place); the file aside is gone afterwards either way.
fn write_aside(
    path: &Path,
    contents: &[u8],
    place: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", rand::random::<u32>()));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        place(&tmp)
    })();
    // After a rename there is nothing left to remove; after a link, the name aside goes.
    let _ = fs::remove_file(&tmp);
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |name| {
            pairs
                .iter()
                .find(|(k, v)| *k == name && !v.is_empty())
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn each_rule_prefers_xdg_then_home_then_the_working_directory() {
        let xdg = env(&[
            ("XDG_CONFIG_HOME", "/x/c"),
            ("XDG_STATE_HOME", "/x/s"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
            ("HOME", "/home/u"),
        ]);
        assert_eq!(config_dir_in(&xdg), Path::new("/x/c/burrow"));
        assert_eq!(state_dir_in(&xdg), Path::new("/x/s/burrow"));
        assert_eq!(
            runtime_dir_in(&xdg, 1000),
            Path::new("/run/user/1000/burrow")
        );

        let home = env(&[("HOME", "/home/u"), ("XDG_STATE_HOME", "")]);
        assert_eq!(config_dir_in(&home), Path::new("/home/u/.config/burrow"));
        assert_eq!(
            state_dir_in(&home),
            Path::new("/home/u/.local/state/burrow")
        );
        assert_eq!(runtime_dir_in(&home, 0), Path::new("/run/burrow"));
        assert_eq!(
            runtime_dir_in(&home, 1000),
            Path::new("/home/u/.local/state/burrow/run")
        );

        let none = env(&[]);
        assert_eq!(config_dir_in(&none), Path::new(".burrow"));
        assert_eq!(runtime_dir_in(&none, 1000), Path::new(".burrow/state/run"));
    }

    #[test]
    fn private_dirs_are_made_0700_and_open_ones_refused() {
        let base = std::env::temp_dir().join(format!("burrow-paths-{}", std::process::id()));
        let dir = base.join("a/b");
        private_dir(&dir).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        private_dir(&dir).unwrap();

        fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).unwrap();
        let err = private_dir(&dir).unwrap_err();
        assert!(
            matches!(err, PathError::NotPrivate { mode: 0o750, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod go="), "{err}");

        let link = base.join("link");
        std::os::unix::fs::symlink(&base, &link).unwrap();
        assert!(matches!(
            private_dir(&link),
            Err(PathError::NotADirectory { .. })
        ));
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn private_files_are_created_once_0600_and_open_ones_refused() {
        let base = std::env::temp_dir().join(format!("burrow-pfile-{}", std::process::id()));
        let file = base.join("sub/token");
        assert_eq!(read_private_file(&file).unwrap(), None);
        assert!(create_private_file(&file, b"one").unwrap());
        assert!(!create_private_file(&file, b"two").unwrap(), "first wins");
        assert_eq!(read_private_file(&file).unwrap().as_deref(), Some("one"));
        let meta = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(meta(&file), 0o600);
        assert_eq!(meta(&base.join("sub")), 0o700);

        fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            read_private_file(&file),
            Err(PathError::NotPrivate { mode: 0o640, .. })
        ));
        fs::remove_dir_all(&base).unwrap();
    }
}
