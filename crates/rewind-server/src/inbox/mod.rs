//! Phone inboxes (DESIGN §18c): WebDAV folders in `rewind serve` that
//! phones (and anything else that speaks WebDAV) upload to. The server
//! snapshots each inbox into its repository when uploads settle and on a
//! schedule, with the ransomware scan, so a photo deleted or encrypted on
//! the phone stays in history.
//!
//! An inbox lives in the server's data directory, `DATA/dav/NAME/`:
//! `inbox.json` (mode 0600: the repository, a hash of the inbox's password
//! and the password of a key made for the inbox in that repository) and
//! `files/`, what the phone sees. The server opens the repository with
//! that key for each snapshot and writes through the rules of a backup
//! token named `dav:NAME` (the write log names it, the quota binds, nothing
//! is ever deleted), so the inbox can add history and never remove it.

pub mod serve;

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use rewind_core::crypto::KdfParams;
use rewind_core::repository::{KeyOwner, Repository};
use rewind_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::quarantine::Place;

/// Version of `inbox.json`.
pub const VERSION: u32 = 1;

/// An inbox's settings, `DATA/dav/NAME/inbox.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Inbox {
    /// [`VERSION`].
    pub version: u32,
    /// Its name: the user name of its login and its URL, `/dav/NAME/`.
    pub name: String,
    /// The repository its snapshots go to.
    pub repo: String,
    /// BLAKE3 of its password, hex (the password is shown once, at `add`).
    pub password_hash: String,
    /// The key made for it in the repository.
    pub key_id: String,
    /// That key's password (random; the server needs it for every
    /// snapshot, so it is kept here, mode 0600).
    pub key_password: String,
    /// When it was made.
    pub created: Timestamp,
    /// Most bytes its files may take together (uploads past it get 507).
    pub max_size: Option<u64>,
}

impl Inbox {
    /// The snapshots' path and the writer's name in the write log.
    pub fn label(&self) -> String {
        format!("dav:{}", self.name)
    }

    /// True when `password` is this inbox's (compared as BLAKE3 hashes, in
    /// constant time).
    pub fn password_matches(&self, password: &[u8]) -> bool {
        blake3::Hash::from_hex(&self.password_hash).is_ok_and(|h| h == blake3::hash(password))
    }
}

/// `DATA/dav`.
pub fn root(data: &Path) -> PathBuf {
    data.join("dav")
}

/// `DATA/dav/NAME/files`: what the phone sees.
pub fn files_dir(data: &Path, name: &str) -> PathBuf {
    root(data).join(name).join("files")
}

fn settings_path(data: &Path, name: &str) -> PathBuf {
    root(data).join(name).join("inbox.json")
}

/// Inbox names: lower-case letters, digits, `-`, `_` and `.`, up to 64,
/// not starting with `.` (they are a user name and a URL segment).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

/// Inbox `name`, if there is one.
pub fn load(data: &Path, name: &str) -> Result<Option<Inbox>> {
    if !valid_name(name) {
        return Ok(None);
    }
    let path = settings_path(data, name);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
    };
    let inbox: Inbox = serde_json::from_slice(&bytes).map_err(|e| {
        Error::corrupt(
            "inbox",
            path.display().to_string(),
            format!("not an inbox's settings ({e}); remove the inbox and add it again"),
        )
    })?;
    if inbox.version > VERSION {
        return Err(Error::InvalidInput(format!(
            "inbox {} has settings of version {}, newer than this rewind understands (up to {VERSION}); install a newer rewind",
            path.display(),
            inbox.version
        )));
    }
    Ok(Some(inbox))
}

/// Every inbox, by name, and what could not be read (an entry that is no
/// inbox's directory, a damaged settings file), each in words: one bad
/// entry hides no other inbox.
pub fn list(data: &Path) -> Result<(Vec<Inbox>, Vec<String>)> {
    let dir = root(data);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(Error::io(format!("read {}", dir.display()), e)),
    };
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for e in entries {
        let e = e.map_err(|e| Error::io(format!("read {}", dir.display()), e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        match load(data, &name) {
            Ok(Some(inbox)) => out.push(inbox),
            Ok(None) => {}
            Err(err) => problems.push(format!("inbox {name}: {err}")),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    problems.sort();
    Ok((out, problems))
}

/// A new inbox and its password (shown once).
pub struct Added {
    /// Its settings.
    pub inbox: Inbox,
    /// The password of its login.
    pub password: String,
}

/// Makes inbox `name` for repository `repo` of the server at `place`: a
/// key in the repository (opened with `repo_password`, which is not kept),
/// the settings and the files directory.
pub fn add(
    place: &Place,
    repo: &str,
    name: &str,
    repo_password: &[u8],
    max_size: Option<u64>,
) -> Result<Added> {
    let Some(data) = place.data else {
        return Err(Error::InvalidInput(
            "phone inboxes keep their files in the server's --data DIR: give it (with --storage too, if the repositories live there)".into(),
        ));
    };
    if !valid_name(name) {
        return Err(Error::InvalidInput(format!(
            "inbox name {name:?}: use lower-case letters, digits, '-', '_' and '.' (up to 64, not starting with '.')"
        )));
    }
    if load(data, name)?.is_some() {
        return Err(Error::InvalidInput(format!(
            "inbox {name} exists ({}); `rewind serve dav remove {name}` first to make it again",
            settings_path(data, name).display()
        )));
    }
    let backend = crate::quarantine::repository(place, repo)?;
    if backend
        .list(rewind_core::backend::FileType::Config)?
        .is_empty()
    {
        return Err(Error::InvalidInput(format!(
            "the server holds no repository {repo} ({}): a client makes it with `rewind init` through a token of it",
            backend.location()
        )));
    }
    let opened = Repository::open(backend, repo_password)?;
    let key_password = hex::encode(random::<32>());
    let password = hex::encode(random::<16>());
    // The key's password is 256 random bits: a slow derivation adds
    // nothing, and every snapshot opens the repository with it.
    let kdf = KdfParams {
        m_cost_kib: 1024,
        t_cost: 1,
        p_cost: 1,
    };
    let key_id = opened.add_key(
        key_password.as_bytes(),
        kdf,
        &KeyOwner {
            hostname: rewind_core::archiver::local_hostname(),
            username: format!("dav:{name}"),
        },
    )?;
    let inbox = Inbox {
        version: VERSION,
        name: name.to_string(),
        repo: repo.to_string(),
        password_hash: blake3::hash(password.as_bytes()).to_hex().to_string(),
        key_id: key_id.to_hex(),
        key_password,
        created: Timestamp::now(),
        max_size,
    };
    let files = files_dir(data, name);
    std::fs::create_dir_all(&files)
        .map_err(|e| Error::io(format!("create {}", files.display()), e))?;
    let _ = std::fs::set_permissions(
        root(data).join(name),
        std::fs::Permissions::from_mode(0o700),
    );
    write_settings(data, &inbox)?;
    Ok(Added { inbox, password })
}

/// Writes `inbox.json` whole (a temporary file, fsynced, renamed), mode 0600.
fn write_settings(data: &Path, inbox: &Inbox) -> Result<()> {
    let path = settings_path(data, &inbox.name);
    let tmp = path.with_extension("json.tmp");
    let what = |e| Error::io(format!("write {}", path.display()), e);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(what)?;
    let json = serde_json::to_vec_pretty(inbox).expect("serializable");
    f.write_all(&json)
        .and_then(|_| f.sync_all())
        .map_err(what)?;
    std::fs::rename(&tmp, &path).map_err(what)
}

/// Removes inbox `name`: its settings, and its files unless `keep_files`
/// (they stay in the snapshots either way). Its key stays in the
/// repository, useless without the password removed here; `rewind key
/// remove ID` takes it out.
pub fn remove(data: &Path, name: &str, keep_files: bool) -> Result<Inbox> {
    let Some(inbox) = load(data, name)? else {
        return Err(Error::InvalidInput(format!(
            "the server has no inbox {name:?}: `rewind serve dav list` shows them"
        )));
    };
    let path = settings_path(data, name);
    std::fs::remove_file(&path).map_err(|e| Error::io(format!("remove {}", path.display()), e))?;
    if !keep_files {
        let dir = root(data).join(name);
        std::fs::remove_dir_all(&dir)
            .map_err(|e| Error::io(format!("remove {}", dir.display()), e))?;
    }
    Ok(inbox)
}

fn random<const N: usize>() -> [u8; N] {
    let mut raw = [0u8; N];
    getrandom::getrandom(&mut raw).expect("the operating system's random source failed");
    raw
}

/// The repository of `inbox`, opened with its key, written through the
/// server's rules for a backup token named after the inbox.
pub(crate) fn open(app: &Arc<crate::http::App>, inbox: &Inbox) -> Result<Repository> {
    let view = crate::view::RepoView::adding(app, &inbox.repo, &inbox.label())?;
    let mut repo = Repository::open(Arc::new(view), inbox.key_password.as_bytes()).map_err(|e| match e {
        Error::WrongPassword { .. } => Error::Refused(format!(
            "the key of inbox {} (key {}) no longer opens repository {}: was it removed? Remove the inbox and add it again",
            inbox.name, inbox.key_id, inbox.repo
        )),
        e => e,
    })?;
    repo.set_compression(app.compression());
    Ok(repo)
}
