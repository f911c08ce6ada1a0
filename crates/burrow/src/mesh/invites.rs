//! The invites an admin node issued, kept across its restarts: `invites.json` in the mesh state
//! directory (0600, replaced atomically), loaded at start with the expired ones dropped.
//!
//! ```json
//! {"invites": [{"token": "burrowinvite...", "uses_left": 1, "burned": false}],
//!  "codes": [{"code": "MESH-XXXX-XXXX-XXXX", "invite_id": "<32 hex digits>", "failures": 0}]}
//! ```
//!
//! Each change is written before anyone hears of it: a use before the new member's answer goes
//! out, a wrong guess at a short code before its refusal, so a restart neither gives a token its
//! use back nor a code its guesses. A used-up invite stays until it expires, so that a replay
//! is told "already used"; a short code whose invite is used up goes at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burrow_proto::mesh::code::ShortCode;
use burrow_proto::mesh::invite::SignedInvite;
use burrow_proto::mesh::pake::inviter::{self, Inviter};
use data_encoding::HEXLOWER;
use serde::{Deserialize, Serialize};

use super::state::StateError;
use crate::endpoint::Refusal;
use crate::paths;
use crate::NodeId;

/// The file, in the mesh state directory.
const INVITES_FILE: &str = "invites.json";

/// An invite issued here.
#[derive(Debug)]
struct Pending {
    token: SignedInvite,
    uses_left: u16,
    /// Its short code had too many wrong guesses: the token is dead too.
    burned: bool,
}

/// A short code served here: its PAKE core (which hands the invite's token over).
pub(crate) struct Code {
    pub(crate) core: Inviter,
    pub(crate) invite_id: [u8; 16],
    code: ShortCode,
}

/// The invites and short codes a node serves, as on disk.
pub(crate) struct Invites {
    path: PathBuf,
    me: NodeId,
    pending: HashMap<[u8; 16], Pending>,
    /// By rendezvous part.
    codes: HashMap<String, Code>,
}

impl std::fmt::Debug for Invites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invites")
            .field("pending", &self.pending.len())
            .field("codes", &self.codes.len())
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize, Default)]
struct File {
    invites: Vec<InviteEntry>,
    codes: Vec<CodeEntry>,
}

#[derive(Serialize, Deserialize)]
struct InviteEntry {
    token: String,
    uses_left: u16,
    #[serde(default)]
    burned: bool,
}

#[derive(Serialize, Deserialize)]
struct CodeEntry {
    code: String,
    invite_id: String,
    failures: u32,
}

impl Invites {
    /// What `dir` holds for node `me`, without what expired before `now`.
    pub(crate) fn load(dir: &Path, me: NodeId, now: u64) -> Result<Invites, StateError> {
        let path = dir.join(INVITES_FILE);
        let corrupt = |what: String| StateError::Corrupt {
            path: path.clone(),
            what,
        };
        let file: File = match paths::read_private_file(&path)? {
            Some(json) => serde_json::from_str(&json).map_err(|e| corrupt(e.to_string()))?,
            None => File::default(),
        };
        let mut invites = Invites {
            path: path.clone(),
            me,
            pending: HashMap::new(),
            codes: HashMap::new(),
        };
        for e in file.invites {
            let token: SignedInvite = e.token.parse().map_err(|e| corrupt(format!("{e}")))?;
            invites.pending.insert(
                token.invite().invite_id,
                Pending {
                    token,
                    uses_left: e.uses_left,
                    burned: e.burned,
                },
            );
        }
        for e in file.codes {
            let code: ShortCode = e.code.parse().map_err(|e| corrupt(format!("{e}")))?;
            let invite_id = HEXLOWER
                .decode(e.invite_id.as_bytes())
                .ok()
                .and_then(|id| <[u8; 16]>::try_from(id).ok())
                .ok_or_else(|| corrupt(format!("invite id {:?}", e.invite_id)))?;
            if let Some(c) = invites.code(code, invite_id) {
                let c = Code {
                    core: c.core.with_failures(e.failures),
                    ..c
                };
                invites.codes.insert(c.code.rendezvous().to_owned(), c);
            }
        }
        invites.prune(now);
        Ok(invites)
    }

    /// Writes it all down, without what expired before `now`.
    pub(crate) fn save(&mut self, now: u64) -> Result<(), StateError> {
        self.prune(now);
        let file = File {
            invites: self
                .pending
                .values()
                .map(|p| InviteEntry {
                    token: p.token.to_string(),
                    uses_left: p.uses_left,
                    burned: p.burned,
                })
                .collect(),
            codes: self
                .codes
                .values()
                .map(|c| CodeEntry {
                    code: c.code.to_string(),
                    invite_id: HEXLOWER.encode(&c.invite_id),
                    failures: c.core.failures(),
                })
                .collect(),
        };
        let json = serde_json::to_vec_pretty(&file).expect("plain data serializes");
        paths::replace_private_file(&self.path, &json)?;
        Ok(())
    }

    /// Drops the invites that expired before `now`, and the codes that can hand nothing over.
    fn prune(&mut self, now: u64) {
        self.pending.retain(|_, p| p.token.invite().expires >= now);
        let live = |id: &[u8; 16]| self.pending.get(id).is_some_and(|p| p.uses_left > 0);
        let live: Vec<[u8; 16]> = self.pending.keys().filter(|id| live(id)).copied().collect();
        self.codes.retain(|_, c| live.contains(&c.invite_id));
    }

    /// Adds `token`, good for its uses, and writes it down.
    pub(crate) fn add(&mut self, token: SignedInvite, now: u64) -> Result<(), StateError> {
        let pending = Pending {
            uses_left: token.invite().uses,
            token,
            burned: false,
        };
        self.pending
            .insert(pending.token.invite().invite_id, pending);
        self.save(now)
    }

    /// Serves `code` for the invite `invite_id` issued here, and writes it down.
    pub(crate) fn add_code(
        &mut self,
        code: ShortCode,
        invite_id: [u8; 16],
        now: u64,
    ) -> Result<(), StateError> {
        let c = self
            .code(code, invite_id)
            .ok_or_else(|| StateError::Corrupt {
                path: self.path.clone(),
                what: "a short code for an invite not issued here".into(),
            })?;
        self.codes.insert(c.code.rendezvous().to_owned(), c);
        self.save(now)
    }

    /// A PAKE core handing over the token of invite `invite_id`, if it is here.
    fn code(&self, code: ShortCode, invite_id: [u8; 16]) -> Option<Code> {
        let token = &self.pending.get(&invite_id)?.token;
        let config = inviter::Config::new(
            self.me,
            invite_id,
            code.clone(),
            token.to_string().into_bytes(),
        );
        let core = Inviter::new(config, rand::random()).ok()?;
        Some(Code {
            core,
            invite_id,
            code,
        })
    }

    /// The rendezvous namespaces of the codes served.
    pub(crate) fn namespaces(&self) -> Vec<String> {
        self.codes.values().map(|c| c.code.namespace()).collect()
    }

    /// The code with rendezvous part `rendezvous`.
    pub(crate) fn code_mut(&mut self, rendezvous: &str) -> Option<&mut Code> {
        self.codes.get_mut(rendezvous)
    }

    /// Kills the invite whose code burned: its token is refused from now on.
    pub(crate) fn burn(&mut self, invite_id: &[u8; 16]) {
        if let Some(p) = self.pending.get_mut(invite_id) {
            p.burned = true;
        }
    }

    /// Whether `token` was issued here and may still be redeemed.
    pub(crate) fn check(&self, token: &SignedInvite) -> Result<(), Refusal> {
        let pending = self
            .pending
            .get(&token.invite().invite_id)
            .filter(|p| p.token == *token)
            .ok_or_else(|| Refusal::new("invite: not issued here"))?;
        if pending.burned {
            return Err(Refusal::new(
                "invite: withdrawn, as its short code had too many wrong guesses",
            ));
        }
        if pending.uses_left == 0 {
            return Err(Refusal::new("invite: already used"));
        }
        Ok(())
    }

    /// Counts one use of `token` (checked with [`Invites::check`]) and writes it down; on
    /// failure nothing changes and the use is refused.
    pub(crate) fn use_one(&mut self, token: &SignedInvite, now: u64) -> Result<(), Refusal> {
        self.check(token)?;
        let id = token.invite().invite_id;
        let pending = self.pending.get_mut(&id).expect("checked");
        pending.uses_left -= 1;
        if let Err(e) = self.save(now) {
            tracing::warn!("recording an invite's use: {e}");
            if let Some(p) = self.pending.get_mut(&id) {
                p.uses_left += 1;
            }
            return Err(Refusal::new("the inviter cannot record the invite's use"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burrow_proto::mesh::id::MeshId;
    use burrow_proto::mesh::invite::Invite;
    use burrow_proto::mesh::signer::Signer;
    use burrow_proto::ticket::Ticket;
    use burrow_proto::Rng;
    use std::os::unix::fs::PermissionsExt;

    use crate::SecretKey;

    fn dir(what: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "burrow-invites-{what}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        paths::private_dir(&d).unwrap();
        d
    }

    fn token(key: &SecretKey, now: u64, ttl: u64, uses: u16) -> SignedInvite {
        let me = key.node_id();
        let mut invite = Invite::new(
            MeshId::of(key),
            "lab".into(),
            Ticket::new(me),
            now,
            now + ttl,
            &mut Rng::new(rand::random()),
        );
        invite.uses = uses;
        invite.sign(&Signer::Mesh(key)).unwrap()
    }

    #[test]
    fn uses_and_codes_survive_a_reload_and_expired_ones_do_not() {
        let key = SecretKey::from_bytes([1; 32]);
        let me = key.node_id();
        let d = dir("reload");
        let now = 1_000_000;
        let mut invites = Invites::load(&d, me, now).unwrap();
        let (two, once, short) = (
            token(&key, now, 600, 2),
            token(&key, now, 600, 1),
            token(&key, now, 10, 1),
        );
        for t in [&two, &once, &short] {
            invites.add(t.clone(), now).unwrap();
        }
        let code = ShortCode::generate(&mut Rng::new(7));
        invites
            .add_code(code.clone(), two.invite().invite_id, now)
            .unwrap();
        invites.use_one(&two, now).unwrap();
        invites.use_one(&once, now).unwrap();
        let mode = std::fs::metadata(d.join(INVITES_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let mut again = Invites::load(&d, me, now + 60).unwrap();
        assert_eq!(again.check(&two), Ok(()), "one use left");
        assert_eq!(
            again.check(&once),
            Err(Refusal::new("invite: already used"))
        );
        assert_eq!(
            again.check(&short),
            Err(Refusal::new("invite: not issued here")),
            "expired, dropped"
        );
        assert_eq!(again.namespaces(), [code.namespace()]);
        // Its last use goes, and the code with it.
        again.use_one(&two, now + 60).unwrap();
        assert!(again.code_mut(code.rendezvous()).is_none());
        let third = Invites::load(&d, me, now + 60).unwrap();
        assert!(third.namespaces().is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_codes_wrong_guesses_and_burn_are_kept() {
        let key = SecretKey::from_bytes([1; 32]);
        let me = key.node_id();
        let d = dir("burn");
        let now = 1_000_000;
        let mut invites = Invites::load(&d, me, now).unwrap();
        let t = token(&key, now, 600, 1);
        invites.add(t.clone(), now).unwrap();
        let code = ShortCode::generate(&mut Rng::new(7));
        invites
            .add_code(code.clone(), t.invite().invite_id, now)
            .unwrap();
        // Two wrong guesses, as the PAKE core counts them.
        let c = invites.codes.remove(code.rendezvous()).unwrap();
        let c = Code {
            core: c.core.with_failures(2),
            ..c
        };
        invites.codes.insert(code.rendezvous().to_owned(), c);
        invites.save(now).unwrap();
        let mut again = Invites::load(&d, me, now).unwrap();
        assert_eq!(
            again.code_mut(code.rendezvous()).unwrap().core.failures(),
            2
        );
        again.burn(&t.invite().invite_id);
        again.save(now).unwrap();
        let refused = Invites::load(&d, me, now).unwrap().check(&t).unwrap_err();
        assert!(refused.reason.contains("withdrawn"), "{refused}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_a_fresh_start() {
        let d = dir("corrupt");
        paths::replace_private_file(&d.join(INVITES_FILE), b"{not json").unwrap();
        let me = SecretKey::from_bytes([1; 32]).node_id();
        assert!(matches!(
            Invites::load(&d, me, 0),
            Err(StateError::Corrupt { .. })
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
