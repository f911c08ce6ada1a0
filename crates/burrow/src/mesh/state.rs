//! A node's mesh state on disk: one directory (by default `mesh` in
//! [`crate::paths::state_dir`]), mode 0700, its files 0600:
//!
//! | file | holds |
//! |---|---|
//! | `node.key` | this node's key (the [`crate::keyfile`] format) |
//! | `mesh.key` | the mesh key, on the node that created the mesh only |
//! | `mesh.json` | `{"name", "mesh_id", "relays": [url]}` |
//! | `cert` | this node's member certificate, base64; replaced when an admin renews it |
//! | `roster` | the newest roster this node holds, base64; replaced as newer ones arrive |
//! | `invites.json` | the invites and short codes this node serves, on an admin |
//!
//! A restarted node reads it all back and is a member at once: no re-join.

use std::path::{Path, PathBuf};

use burrow_proto::mesh::cert::{MemberCert, Role, SignedCert};
use burrow_proto::mesh::id::MeshId;
use burrow_proto::mesh::roster::{Roster, RosterEntry, SignedRoster};
use burrow_proto::mesh::signer::Signer;
use burrow_proto::mesh::MeshError;
use burrow_proto::relay::RelayUrl;
use data_encoding::BASE64;
use serde::{Deserialize, Serialize};

use super::renewal;
use crate::keyfile::{self, KeyFileError, KeyLock};
use crate::paths::{self, PathError};
use crate::SecretKey;

/// Why mesh state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file or the directory.
    #[error(transparent)]
    Path(#[from] PathError),
    /// A key file.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// Nothing is there: this node is in no mesh yet.
    #[error("no mesh state in {0} (run `burrow init NAME`, or `burrow join CODE`)")]
    Missing(PathBuf),
    /// A mesh is there already.
    #[error("{0} already holds a mesh; remove it first to make another")]
    Exists(PathBuf),
    /// A file does not hold what it should.
    #[error("{path}: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A certificate or roster would not sign or verify.
    #[error("mesh")]
    Mesh(#[from] MeshError),
}

/// `mesh.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct MeshFile {
    name: String,
    mesh_id: String,
    relays: Vec<String>,
}

/// Everything a node of a mesh keeps, loaded.
#[derive(Debug)]
pub struct MeshState {
    /// Where it lives.
    pub dir: PathBuf,
    /// The mesh's name.
    pub name: String,
    /// The mesh.
    pub mesh_id: MeshId,
    /// Relays this node uses (and that new members are told of).
    pub relays: Vec<RelayUrl>,
    /// This node's key.
    pub node_key: SecretKey,
    /// The mesh key, if this node holds it.
    pub mesh_key: Option<SecretKey>,
    /// This node's certificate.
    pub cert: SignedCert,
    /// The newest roster this node holds.
    pub roster: SignedRoster,
    /// Held for as long as the state is: one process per node key.
    _lock: KeyLock,
}

/// The default directory: `mesh` in [`paths::state_dir`].
pub fn default_dir() -> PathBuf {
    paths::state_dir().join("mesh")
}

impl MeshState {
    /// Creates a mesh named `name` in `dir`: a new mesh key, this node its first member
    /// (number 1, admin, called `member`, or by the host's name), and a roster listing it.
    pub fn init(
        dir: &Path,
        name: &str,
        member: Option<&str>,
        relays: Vec<RelayUrl>,
    ) -> Result<MeshState, StateError> {
        paths::private_dir(dir)?;
        if dir.join("mesh.json").exists() {
            return Err(StateError::Exists(dir.to_owned()));
        }
        let mesh_key = keyfile::load_or_create(&dir.join("mesh.key"))?;
        let (node_key, lock) = keyfile::load_and_lock(&dir.join("node.key"))?;
        let mesh_id = MeshId::of(&mesh_key);
        let signer = Signer::Mesh(&mesh_key);
        let (not_before, not_after) =
            renewal::validity(super::now(), renewal::DEFAULT_CERT_VALIDITY, &signer);
        let cert = MemberCert {
            mesh_id,
            node_id: node_key.node_id(),
            name: member.map_or_else(|| name_of(&node_key), str::to_owned),
            number: 1,
            role: Role::Admin,
            not_before,
            not_after,
            serial: 1,
        }
        .sign(&signer)?;
        let mut roster = Roster::new(mesh_id, 1);
        roster.members.insert(
            node_key.node_id(),
            RosterEntry {
                name: cert.cert().name.clone(),
                number: 1,
                role: Role::Admin,
            },
        );
        let roster = roster.sign(&signer)?;
        let state = MeshState {
            dir: dir.to_owned(),
            name: name.to_owned(),
            mesh_id,
            relays,
            node_key,
            mesh_key: Some(mesh_key),
            cert,
            roster,
            _lock: lock,
        };
        state.write_joined()?;
        Ok(state)
    }

    /// Writes what a node that just joined holds (its key is in `dir` already).
    pub(crate) fn joined(
        dir: &Path,
        name: String,
        relays: Vec<RelayUrl>,
        cert: SignedCert,
        roster: SignedRoster,
    ) -> Result<MeshState, StateError> {
        let (node_key, lock) = keyfile::load_and_lock(&dir.join("node.key"))?;
        let state = MeshState {
            dir: dir.to_owned(),
            name,
            mesh_id: cert.cert().mesh_id,
            relays,
            node_key,
            mesh_key: None,
            cert,
            roster,
            _lock: lock,
        };
        state.write_joined()?;
        Ok(state)
    }

    fn write_joined(&self) -> Result<(), StateError> {
        self.save_cert()?;
        self.save_roster()?;
        let file = MeshFile {
            name: self.name.clone(),
            mesh_id: self.mesh_id.to_string(),
            relays: self.relays.iter().map(ToString::to_string).collect(),
        };
        let json = serde_json::to_vec_pretty(&file).expect("plain data serializes");
        paths::replace_private_file(&self.dir.join("mesh.json"), &json)?;
        Ok(())
    }

    /// Loads the mesh in `dir`, and locks its node key.
    pub fn load(dir: &Path) -> Result<MeshState, StateError> {
        let read = |file: &str| -> Result<(PathBuf, String), StateError> {
            let path = dir.join(file);
            match paths::read_private_file(&path)? {
                Some(text) => Ok((path, text)),
                None => Err(StateError::Missing(dir.to_owned())),
            }
        };
        let corrupt = |path: &Path, what: String| StateError::Corrupt {
            path: path.to_owned(),
            what,
        };
        let (path, json) = read("mesh.json")?;
        let file: MeshFile =
            serde_json::from_str(&json).map_err(|e| corrupt(&path, e.to_string()))?;
        let mesh_id: MeshId = file
            .mesh_id
            .parse()
            .map_err(|e: burrow_proto::mesh::id::MeshIdError| corrupt(&path, e.to_string()))?;
        let relays = file
            .relays
            .iter()
            .map(|u| u.parse())
            .collect::<Result<Vec<RelayUrl>, _>>()
            .map_err(|e| corrupt(&path, e.to_string()))?;
        let base64 = |file: &str| -> Result<(PathBuf, Vec<u8>), StateError> {
            let (path, text) = read(file)?;
            let bytes = BASE64
                .decode(text.trim().as_bytes())
                .map_err(|e| corrupt(&path, e.to_string()))?;
            Ok((path, bytes))
        };
        let (path, cert) = base64("cert")?;
        let cert = SignedCert::decode(&cert).map_err(|e| corrupt(&path, e.to_string()))?;
        let (path, roster) = base64("roster")?;
        let roster = SignedRoster::decode(&roster).map_err(|e| corrupt(&path, e.to_string()))?;
        let mesh_key_path = dir.join("mesh.key");
        let mesh_key = match mesh_key_path.exists() {
            true => Some(keyfile::load_or_create(&mesh_key_path)?),
            false => None,
        };
        let (node_key, lock) = keyfile::load_and_lock(&dir.join("node.key"))?;
        if cert.cert().node_id != node_key.node_id() || cert.cert().mesh_id != mesh_id {
            return Err(corrupt(
                &dir.join("cert"),
                "not this node's certificate for this mesh".into(),
            ));
        }
        Ok(MeshState {
            dir: dir.to_owned(),
            name: file.name,
            mesh_id,
            relays,
            node_key,
            mesh_key,
            cert,
            roster,
            _lock: lock,
        })
    }

    /// Writes this node's certificate.
    pub fn save_cert(&self) -> Result<(), StateError> {
        let text = BASE64.encode(self.cert.as_bytes());
        paths::replace_private_file(&self.dir.join("cert"), text.as_bytes())?;
        Ok(())
    }

    /// Writes the roster held now.
    pub fn save_roster(&self) -> Result<(), StateError> {
        let text = BASE64.encode(self.roster.as_bytes());
        paths::replace_private_file(&self.dir.join("roster"), text.as_bytes())?;
        Ok(())
    }

    /// The signer this node signs with, if it may sign for the mesh.
    pub fn signer(&self) -> Option<Signer<'_>> {
        match (&self.mesh_key, self.cert.cert().role) {
            (Some(key), _) => Some(Signer::Mesh(key)),
            (None, Role::Admin) => Some(Signer::Admin {
                key: &self.node_key,
                cert: &self.cert,
            }),
            (None, Role::Member) => None,
        }
    }
}

/// A member's default name: its host name, else its short node id.
pub(crate) fn name_of(key: &SecretKey) -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.len() <= burrow_proto::mesh::MAX_NAME_LEN)
        .unwrap_or_else(|| key.node_id().short())
}
