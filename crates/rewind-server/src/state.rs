//! The server's own state: access tokens and per-repository settings, in
//! one JSON document changed only by the operator's `rewind serve token ...`
//! and `rewind serve repo set ...` and re-read by a running server when it
//! changes. It lives in `DATA/server.json` (mode 0600), or, for servers
//! with `--storage`, in the store itself (`STORAGE/.server/policy/<hash>`,
//! [`StateStore`]), so that servers in front of one store share it and keep
//! nothing of their own.
//!
//! Tokens are stored as their BLAKE3 hash only. A token is 32 random bytes
//! (`rwt_` + 64 hex), so a plain hash is enough: there is nothing to guess.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rewind_core::backend::{Backend, FileType};

use jiff::Timestamp;
use rewind_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// What a token may do in its repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything; write nothing.
    Read,
    /// Read everything; add new files (never overwrite, never delete but
    /// its own running markers).
    Backup,
    /// Everything, within the server's retention rules.
    Admin,
}

impl Role {
    /// Parses `read`, `backup` or `admin`.
    pub fn parse(s: &str) -> Result<Role> {
        match s {
            "read" => Ok(Role::Read),
            "backup" => Ok(Role::Backup),
            "admin" => Ok(Role::Admin),
            _ => Err(Error::InvalidInput(format!(
                "role {s:?}: give backup, read or admin"
            ))),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Read => "read",
            Role::Backup => "backup",
            Role::Admin => "admin",
        })
    }
}

/// One access token (its hash).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Token {
    /// Its name, for logs and `token revoke`.
    pub name: String,
    /// The repository it opens.
    pub repo: String,
    /// What it may do there.
    pub role: Role,
    /// BLAKE3 of the token, hex.
    pub hash: String,
    /// When it was made.
    pub created: Timestamp,
    /// When it stops working, if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Timestamp>,
    /// When it was revoked, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Timestamp>,
}

/// Per-repository settings; unset fields take the server's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoSettings {
    /// Files younger than this many days are never deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_delete_age_days: Option<u32>,
    /// Snapshot deletes may not cut the stored history below this many days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_days: Option<u32>,
    /// The repository's quota in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
}

/// The whole state file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// Format version (1).
    pub version: u32,
    /// Every token ever made (revoked ones stay, marked).
    #[serde(default)]
    pub tokens: Vec<Token>,
    /// Settings by repository name.
    #[serde(default)]
    pub repos: BTreeMap<String, RepoSettings>,
}

/// Why a presented token does not open anything.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenProblem {
    /// No token with that hash exists.
    Unknown,
    /// The token expired at this time.
    Expired(String, Timestamp),
    /// The token was revoked at this time.
    Revoked(String, Timestamp),
}

/// The state file inside a data directory.
pub fn state_path(data: &Path) -> PathBuf {
    data.join("server.json")
}

/// Hash of a token, as stored.
pub fn token_hash(token: &str) -> blake3::Hash {
    blake3::hash(token.trim().as_bytes())
}

impl State {
    /// Reads the state of a data directory (empty if there is none yet).
    pub fn load(data: &Path) -> Result<State> {
        let p = state_path(data);
        let bytes = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(State {
                    version: 1,
                    ..Default::default()
                })
            }
            Err(e) => return Err(Error::io(format!("read {}", p.display()), e)),
        };
        let s: State = serde_json::from_slice(&bytes).map_err(|e| {
            Error::InvalidInput(format!(
                "{} is not a rewind server state file: {e}",
                p.display()
            ))
        })?;
        if s.version != 1 {
            return Err(Error::UnsupportedVersion {
                found: s.version,
                supported: 1,
            });
        }
        Ok(s)
    }

    /// Writes the state atomically (temporary file, fsync, rename), mode 0600.
    pub fn save(&self, data: &Path) -> Result<()> {
        fs::create_dir_all(data).map_err(|e| Error::io(format!("create {}", data.display()), e))?;
        let p = state_path(data);
        let tmp = data.join(format!(".server.json.tmp-{}", std::process::id()));
        let bytes = serde_json::to_vec_pretty(self).expect("state serializes");
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &p)?;
            fs::File::open(data)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io(format!("write {}", p.display()), e)
        })
    }

    /// Makes a new token; returns it (the only time it is ever seen).
    pub fn add_token(
        &mut self,
        name: Option<&str>,
        repo: &str,
        role: Role,
        expires: Option<Timestamp>,
    ) -> Result<String> {
        if !rewind_backends::rest::valid_repo_name(repo) {
            return Err(Error::InvalidInput(format!(
                "repository name {repo:?}: use letters, digits, '-', '_' and '.' (up to 64, not starting with '.')"
            )));
        }
        if repo == "ui" || repo == "dav" {
            return Err(Error::InvalidInput(format!(
                "repository name {repo:?} is taken by the server's {} (/{repo}/): choose another",
                if repo == "ui" {
                    "web UI"
                } else {
                    "phone inboxes"
                }
            )));
        }
        let name = match name {
            Some(n) => n.to_string(),
            None => {
                let mut i = 1;
                loop {
                    let n = format!("{repo}-{role}-{i}");
                    if !self.tokens.iter().any(|t| t.name == n) {
                        break n;
                    }
                    i += 1;
                }
            }
        };
        if name.is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(Error::InvalidInput(format!(
                "token name {name:?}: give a name without spaces"
            )));
        }
        if self.tokens.iter().any(|t| t.name == name) {
            return Err(Error::InvalidInput(format!(
                "a token named {name:?} exists already; choose another --name"
            )));
        }
        let mut raw = [0u8; 32];
        getrandom::getrandom(&mut raw).expect("the operating system's random source failed");
        let token = format!("rwt_{}", hex::encode(raw));
        self.tokens.push(Token {
            name,
            repo: repo.to_string(),
            role,
            hash: token_hash(&token).to_hex().to_string(),
            created: Timestamp::now(),
            expires,
            revoked: None,
        });
        Ok(token)
    }

    /// Revokes a token by name.
    pub fn revoke(&mut self, name: &str) -> Result<()> {
        match self.tokens.iter_mut().find(|t| t.name == name) {
            Some(t) if t.revoked.is_some() => Err(Error::InvalidInput(format!(
                "token {name:?} was revoked already"
            ))),
            Some(t) => {
                t.revoked = Some(Timestamp::now());
                Ok(())
            }
            None => Err(Error::InvalidInput(format!(
                "no token named {name:?}; `rewind serve token list` shows them"
            ))),
        }
    }

    /// The token a client presented, if it is valid now. Every stored
    /// hash is compared, each in constant time (`blake3::Hash`'s equality).
    pub fn authenticate(&self, presented: &str, now: Timestamp) -> Result<&Token, TokenProblem> {
        let h = token_hash(presented);
        let mut found = None;
        for t in &self.tokens {
            let Ok(stored) = blake3::Hash::from_hex(&t.hash) else {
                continue;
            };
            if stored == h {
                found = Some(t);
            }
        }
        let t = found.ok_or(TokenProblem::Unknown)?;
        if let Some(r) = t.revoked {
            return Err(TokenProblem::Revoked(t.name.clone(), r));
        }
        if let Some(e) = t.expires.filter(|e| *e <= now) {
            return Err(TokenProblem::Expired(t.name.clone(), e));
        }
        Ok(t)
    }

    /// Every repository named by a token or a setting.
    pub fn repo_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .tokens
            .iter()
            .map(|t| t.repo.clone())
            .chain(self.repos.keys().cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Where the state lives.
#[derive(Clone)]
pub enum StateStore {
    /// `DATA/server.json`.
    File(PathBuf),
    /// In a store, as versions named by their hash under the `policy`
    /// directory of `STORAGE/.server`; the newest wins, older ones are
    /// deleted after a new one is written.
    Store(Arc<dyn Backend>),
}

/// One stored version of the state.
#[derive(Serialize, Deserialize)]
struct Version {
    time: Timestamp,
    state: State,
}

impl StateStore {
    /// The store of a server: in `--storage` if given, else in `data`.
    pub fn open(
        data: Option<&Path>,
        storage: Option<&str>,
        options: &rewind_backends::Options,
    ) -> Result<StateStore> {
        match (storage, data) {
            (Some(_), Some(d)) if state_path(d).exists() => Err(Error::InvalidInput(format!(
                "{} holds tokens, but with --storage the server reads them from the store: move them there (`rewind serve token add --storage ...` for each) and remove that file, or serve without --storage",
                state_path(d).display()
            ))),
            (Some(base), _) => {
                let loc = rewind_backends::Location::parse(&format!(
                    "{}/.server",
                    base.trim_end_matches('/')
                ))?;
                Ok(StateStore::Store(rewind_backends::open(&loc, options)?))
            }
            (None, Some(d)) => Ok(StateStore::File(d.to_path_buf())),
            (None, None) => Err(Error::InvalidInput(
                "give --data DIR (tokens in DIR/server.json) or --storage LOCATION (tokens in the store)".into(),
            )),
        }
    }

    /// Where the server records which token stored each running marker
    /// (a file per marker, named by [`marker_owner_key`], holding the
    /// token's name), beside the state: `DATA/marker-owners/running/`, or
    /// `STORAGE/.server/running/`. A restarted server, or another in front
    /// of the same store, so still lets a client remove its own marker.
    pub fn marker_owners(&self) -> Arc<dyn Backend> {
        match self {
            StateStore::File(d) => Arc::new(rewind_core::backend::LocalBackend::new(
                d.join("marker-owners"),
            )),
            StateStore::Store(b) => b.clone(),
        }
    }

    /// Where, for messages.
    pub fn describe(&self) -> String {
        match self {
            StateStore::File(d) => state_path(d).display().to_string(),
            StateStore::Store(b) => b.location(),
        }
    }

    /// Something that changes when the state does (cheap: a stat, or a
    /// listing of a few small files).
    pub fn stamp(&self) -> Option<String> {
        match self {
            StateStore::File(d) => {
                // Each save renames a new file into place: its inode
                // changes even when the clock's tick and the length do not.
                let md = fs::metadata(state_path(d)).ok()?;
                Some(format!(
                    "{} {:?} {}",
                    md.ino(),
                    md.modified().ok()?,
                    md.len()
                ))
            }
            StateStore::Store(b) => {
                let names: Vec<String> = b
                    .list(FileType::Policy)
                    .ok()?
                    .into_iter()
                    .map(|f| f.name)
                    .collect();
                Some(names.join(","))
            }
        }
    }

    /// The current state (empty if none was ever saved).
    pub fn load(&self) -> Result<State> {
        match self {
            StateStore::File(d) => State::load(d),
            StateStore::Store(b) => {
                // A listed version can be replaced before it is read: list
                // again rather than take "nothing" for an empty state.
                for _ in 0..5 {
                    let files = b.list(FileType::Policy)?;
                    if files.is_empty() {
                        return Ok(State {
                            version: 1,
                            ..Default::default()
                        });
                    }
                    if let Some(v) = newest_version(b.as_ref(), &files)? {
                        if v.state.version != 1 {
                            return Err(Error::UnsupportedVersion {
                                found: v.state.version,
                                supported: 1,
                            });
                        }
                        return Ok(v.state);
                    }
                }
                Err(Error::io(
                    format!("read the server state in {}", b.location()),
                    std::io::Error::other("its files kept changing while being read"),
                ))
            }
        }
    }

    /// Saves a new state.
    pub fn save(&self, state: &State) -> Result<()> {
        match self {
            StateStore::File(d) => state.save(d),
            StateStore::Store(b) => {
                let old = b.list(FileType::Policy)?;
                // Newer than the newest, whatever this machine's clock says.
                let after = newest_version(b.as_ref(), &old)?.map(|v| v.time);
                let now = Timestamp::now();
                let time = match after {
                    Some(t) if t >= now => t + jiff::SignedDuration::from_nanos(1),
                    _ => now,
                };
                let v = Version {
                    time,
                    state: state.clone(),
                };
                let bytes = serde_json::to_vec_pretty(&v).expect("state serializes");
                let name = blake3::hash(&bytes).to_hex().to_string();
                b.write(FileType::Policy, &name, &bytes)?;
                for f in old.iter().filter(|f| f.name != name) {
                    let _ = b.delete(FileType::Policy, &f.name);
                }
                Ok(())
            }
        }
    }
}

/// The name of the record of who stored running marker `marker` of
/// repository `repo` ([`StateStore::marker_owners`]).
pub fn marker_owner_key(repo: &str, marker: &str) -> String {
    blake3::hash(format!("{repo}/{marker}").as_bytes())
        .to_hex()
        .to_string()
}

/// The newest readable version among `files` (`None` if none could be
/// read: replaced meanwhile).
fn newest_version(
    b: &dyn Backend,
    files: &[rewind_core::backend::FileInfo],
) -> Result<Option<Version>> {
    let mut newest: Option<Version> = None;
    for f in files {
        let bytes = match b.read(FileType::Policy, &f.name) {
            Ok(x) => x,
            Err(Error::Missing { .. }) => continue,
            Err(e) => return Err(e),
        };
        let v: Version = serde_json::from_slice(&bytes)
            .map_err(|e| Error::corrupt("server state", &f.name, e))?;
        if newest.as_ref().is_none_or(|n| v.time > n.time) {
            newest = Some(v);
        }
    }
    Ok(newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two saves within one tick of the file system's clock, of the same
    /// length, must still look different to a server.
    #[test]
    fn each_save_changes_the_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::File(dir.path().to_path_buf());
        let tick = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1 << 30);
        let mut s = State {
            version: 1,
            ..Default::default()
        };
        s.add_token(Some("laptop-a"), "r", Role::Backup, None)
            .unwrap();
        let mut stamps = Vec::new();
        for name in ["laptop-a", "laptop-b"] {
            // The same bytes but one letter of the name.
            s.tokens[0].name = name.into();
            store.save(&s).unwrap();
            fs::File::options()
                .write(true)
                .open(state_path(dir.path()))
                .unwrap()
                .set_modified(tick)
                .unwrap();
            stamps.push(store.stamp().unwrap());
        }
        assert_ne!(stamps[0], stamps[1]);
    }

    #[test]
    fn tokens_are_stored_as_hashes_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::load(dir.path()).unwrap();
        let tok = s.add_token(None, "laptop", Role::Backup, None).unwrap();
        assert!(tok.starts_with("rwt_") && tok.len() == 68);
        let later = Timestamp::now() + jiff::SignedDuration::from_secs(60);
        let old = s
            .add_token(Some("old"), "laptop", Role::Admin, Some(Timestamp::now()))
            .unwrap();
        s.save(dir.path()).unwrap();
        let text = fs::read_to_string(state_path(dir.path())).unwrap();
        assert!(!text.contains(&tok[4..]), "the token itself is stored");
        let s = State::load(dir.path()).unwrap();
        assert_eq!(s.authenticate(&tok, later).unwrap().name, "laptop-backup-1");
        assert_eq!(s.authenticate(&tok, later).unwrap().role, Role::Backup);
        assert_eq!(
            s.authenticate("rwt_0000", later).unwrap_err(),
            TokenProblem::Unknown
        );
        assert!(matches!(
            s.authenticate(&old, later),
            Err(TokenProblem::Expired(..))
        ));
        let mut s = s;
        s.revoke("laptop-backup-1").unwrap();
        assert!(s.revoke("laptop-backup-1").is_err());
        assert!(s.revoke("nobody").is_err());
        assert!(matches!(
            s.authenticate(&tok, later),
            Err(TokenProblem::Revoked(..))
        ));
        assert!(s.add_token(Some("old"), "x", Role::Read, None).is_err());
        assert!(s.add_token(None, "../etc", Role::Read, None).is_err());
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(state_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_state_in_a_store_is_shared_and_the_newest_wins() {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("store").display().to_string();
        let opts = rewind_backends::Options::new();
        let a = StateStore::open(None, Some(&storage), &opts).unwrap();
        let b = StateStore::open(None, Some(&storage), &opts).unwrap();
        assert!(a.load().unwrap().tokens.is_empty());
        let mut st = a.load().unwrap();
        let tok = st.add_token(None, "r", Role::Backup, None).unwrap();
        a.save(&st).unwrap();
        let stamp = b.stamp();
        assert!(b
            .load()
            .unwrap()
            .authenticate(&tok, Timestamp::now())
            .is_ok());
        let mut st = b.load().unwrap();
        st.revoke("r-backup-1").unwrap();
        b.save(&st).unwrap();
        assert_ne!(a.stamp(), stamp, "a change must change the stamp");
        assert!(matches!(
            a.load().unwrap().authenticate(&tok, Timestamp::now()),
            Err(TokenProblem::Revoked(..))
        ));
        // One version is kept.
        let StateStore::Store(backend) = &a else {
            panic!()
        };
        assert_eq!(backend.list(FileType::Policy).unwrap().len(), 1);
        // Tokens left in a data directory are not silently ignored.
        let data = dir.path().join("data");
        State::default().save(&data).unwrap();
        assert!(StateStore::open(Some(&data), Some(&storage), &opts).is_err());
        assert!(StateStore::open(None, None, &opts).is_err());
    }
}
