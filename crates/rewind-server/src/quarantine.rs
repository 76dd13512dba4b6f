//! `rewind serve quarantine`: the operator's way out after a client was
//! compromised (DESIGN §14). Everything one token stored in a repository
//! since a time (by the write log, [`crate::writes`], and the owners of
//! running markers) is moved out of the repository into
//! `DATA/quarantine/REPO/STAMP/` (or `STORAGE/.server/quarantine/REPO/STAMP`),
//! whatever the minimum delete age and the history floor say: they protect
//! history from clients, and this is the operator on the server. The
//! repository is then as it was before, plus what other tokens stored.
//!
//! Config and key files are never moved (without them nothing reads).
//! Files are copied to the quarantine, with a manifest, before they leave
//! the repository, so nothing is lost: a file moved by mistake is put back
//! by copying it into the repository's directory of its type.

use std::path::Path;
use std::sync::Arc;

use jiff::Timestamp;
use rewind_core::backend::{Backend, FileType, WriteOutcome};
use rewind_core::{Error, Result};
use serde::Serialize;

use crate::state::{self, StateStore};
use crate::writes;

/// Where the server keeps things.
pub struct Place<'a> {
    /// `--data`.
    pub data: Option<&'a Path>,
    /// `--storage`.
    pub storage: Option<&'a str>,
    /// Backend options of the storage.
    pub options: &'a rewind_backends::Options,
}

/// One file to move.
#[derive(Clone, Debug, Serialize)]
pub struct Item {
    /// Its type's directory (`snapshots`, `index`, `data`, …).
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip)]
    pub t: FileType,
    /// Its name.
    pub name: String,
    /// Its size.
    pub size: u64,
    /// When the token began storing it (running markers: when the storage
    /// got it, if it tells).
    pub time: Option<Timestamp>,
}

/// What a quarantine would move.
#[derive(Debug, Default)]
pub struct Plan {
    /// The files, snapshots first and packs last.
    pub items: Vec<Item>,
    /// Config and key files the token stored since then: never moved.
    pub kept: Vec<(FileType, String)>,
    /// Records that could not be read (name, why): their files stay.
    pub unreadable: Vec<(String, String)>,
}

impl Plan {
    /// Bytes to move.
    pub fn bytes(&self) -> u64 {
        self.items.iter().map(|i| i.size).sum()
    }
}

/// What a quarantine did.
#[derive(Debug, Default)]
pub struct Moved {
    /// Files moved.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Where they are now.
    pub to: String,
    /// Files that could not be moved (name, why); they stay.
    pub failed: Vec<(String, String)>,
}

/// The order files leave in: what refers to others first, so that at any
/// moment the repository reads as well as it can.
const ORDER: [FileType; 7] = [
    FileType::Snapshot,
    FileType::Proof,
    FileType::Index,
    FileType::Policy,
    FileType::PruneState,
    FileType::Running,
    FileType::Pack,
];

/// The storage of repository `repo`.
pub fn repository(place: &Place, repo: &str) -> Result<Arc<dyn Backend>> {
    match place.storage {
        None => Ok(Arc::new(rewind_core::backend::Verified::new(
            rewind_core::backend::LocalBackend::new(
                place
                    .data
                    .unwrap_or(Path::new("."))
                    .join("repos")
                    .join(repo),
            ),
        ))),
        Some(base) => {
            let loc = rewind_backends::Location::parse(&format!(
                "{}/{repo}",
                base.trim_end_matches('/')
            ))?;
            rewind_backends::open(&loc, place.options)
        }
    }
}

/// What token `token` stored in `repo` since `since`, still there.
pub fn plan(place: &Place, repo: &str, token: &str, since: Timestamp) -> Result<Plan> {
    let b = repository(place, repo)?;
    if b.list(FileType::Config)?.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{} holds no repository",
            b.location()
        )));
    }
    let log = writes::open(place.data, place.storage, place.options, repo)?;
    let mut plan = Plan::default();
    for t in [FileType::Config, FileType::Key] {
        for (name, rec) in writes::list(log.as_ref(), t)? {
            if let Ok(r) = rec {
                if r.token == token && r.time >= since && b.modified(t, &name).is_ok() {
                    plan.kept.push((t, name));
                }
            }
        }
    }
    let sizes = |t: FileType| -> Result<std::collections::HashMap<String, u64>> {
        Ok(b.list(t)?.into_iter().map(|f| (f.name, f.size)).collect())
    };
    for t in ORDER {
        let present = sizes(t)?;
        if t == FileType::Running {
            plan.items
                .extend(markers(place, repo, token, since, &b, &present)?);
            continue;
        }
        let mut items = Vec::new();
        for (name, rec) in writes::list(log.as_ref(), t)? {
            match rec {
                Ok(r) if r.token == token && r.time >= since => {
                    if let Some(&size) = present.get(&name) {
                        items.push(Item {
                            kind: rewind_backends::rest::type_segment(t),
                            t,
                            name,
                            size,
                            time: Some(r.time),
                        });
                    }
                }
                Ok(_) => {}
                Err(e) => plan.unreadable.push((name, e.to_string())),
            }
        }
        items.sort_by(|a, b| a.time.cmp(&b.time).then(a.name.cmp(&b.name)));
        plan.items.extend(items);
    }
    Ok(plan)
}

/// Running markers the token stored since `since` (by their owners'
/// records and the storage's time of the marker; a marker whose time the
/// storage does not tell counts as recent).
fn markers(
    place: &Place,
    repo: &str,
    token: &str,
    since: Timestamp,
    b: &Arc<dyn Backend>,
    present: &std::collections::HashMap<String, u64>,
) -> Result<Vec<Item>> {
    let owners = StateStore::open(place.data, place.storage, place.options)?.marker_owners();
    let mut out = Vec::new();
    for (name, &size) in present {
        let key = state::marker_owner_key(repo, name);
        let owner = match owners.read(FileType::Running, &key) {
            Ok(o) => o,
            Err(Error::Missing { .. }) => continue,
            Err(e) => return Err(e),
        };
        if owner != token.as_bytes() {
            continue;
        }
        let time = match b.modified(FileType::Running, name) {
            Ok(t) => t.and_then(|t| Timestamp::try_from(t).ok()),
            Err(Error::Missing { .. }) => continue,
            Err(e) => return Err(e),
        };
        if time.is_none_or(|t| t >= since) {
            out.push(Item {
                kind: rewind_backends::rest::type_segment(FileType::Running),
                t: FileType::Running,
                name: name.clone(),
                size,
                time,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Where a quarantine made at `stamp` keeps its files.
fn destination(place: &Place, repo: &str, stamp: &str) -> Result<Arc<dyn Backend>> {
    match place.storage {
        None => writes::local(
            &place
                .data
                .unwrap_or(Path::new("."))
                .join("quarantine")
                .join(repo)
                .join(stamp),
        ),
        Some(base) => {
            let loc = rewind_backends::Location::parse(&format!(
                "{}/.server/quarantine/{repo}/{stamp}",
                base.trim_end_matches('/')
            ))?;
            rewind_backends::open(&loc, place.options)
        }
    }
}

/// Moves the plan's files out of the repository: each is copied into the
/// quarantine (with `manifest.json`, in its `policy` directory, written
/// first) and then deleted from the repository. Then the state is saved
/// again, so that running servers count the repository anew.
pub fn apply(place: &Place, repo: &str, token: &str, plan: &Plan) -> Result<Moved> {
    let b = repository(place, repo)?;
    let now = Timestamp::now();
    let stamp = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    let q = destination(place, repo, &stamp)?;
    let manifest = serde_json::to_vec_pretty(&serde_json::json!({
        "version": 1,
        "repo": repo,
        "token": token,
        "time": now,
        "files": plan.items,
    }))
    .expect("a manifest serializes");
    // The manifest is named by its hash, like the files beside it.
    q.write(
        FileType::Policy,
        blake3::hash(&manifest).to_hex().as_ref(),
        &manifest,
    )?;
    let mut moved = Moved {
        to: q.location(),
        ..Moved::default()
    };
    for item in &plan.items {
        let r = (|| -> Result<()> {
            let bytes = match b.read(item.t, &item.name) {
                Ok(x) => x,
                Err(Error::Missing { .. }) => return Ok(()),
                Err(e) => return Err(e),
            };
            match q.write(item.t, &item.name, &bytes)? {
                WriteOutcome::Created | WriteOutcome::AlreadyExists => {}
            }
            b.delete(item.t, &item.name)
        })();
        match r {
            Ok(()) => {
                moved.files += 1;
                moved.bytes += item.size;
            }
            Err(e) => moved
                .failed
                .push((format!("{} {}", item.t.what(), item.name), e.to_string())),
        }
    }
    let store = StateStore::open(place.data, place.storage, place.options)?;
    store.save(&store.load()?)?;
    Ok(moved)
}
