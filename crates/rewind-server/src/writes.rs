//! The write log: which token stored each file of a repository, and when
//! (DESIGN §14). One record per stored file, written once before the file
//! and never changed: `DATA/writes/REPO/TYPE/NAME` (the layout of a
//! repository), or `STORAGE/.server/writes/REPO/…` with `--storage`, so
//! that every server in front of one store sees the others' records.
//!
//! Clients are told the writer of snapshots, index files and the other
//! small files in listings: a rewrite stored by a token that may only add
//! supersedes nothing (DESIGN §3.8). After an incident the operator moves
//! what a token stored since a time out of the repository
//! ([`crate::quarantine`]). Running markers are not logged here: they are
//! rewritten every few minutes, and their owners are kept apart
//! ([`crate::state::StateStore::marker_owners`]).

use std::path::Path;
use std::sync::Arc;

use jiff::Timestamp;
use rewind_core::backend::{Backend, FileType, WriteOutcome};
use rewind_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::state::Role;

/// The version of a record.
pub const VERSION: u32 = 1;

/// Who stored one file, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// [`VERSION`].
    pub version: u32,
    /// When the upload began (the file is stored after this record).
    pub time: Timestamp,
    /// The token's name.
    pub token: String,
    /// Its role then.
    pub role: Role,
    /// The announced length of the upload, if any.
    pub size: Option<u64>,
}

impl Record {
    /// What a client is told ([`rewind_core::backend::Writer`]).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"token": self.token, "role": self.role, "time": self.time})
    }
}

/// The write log of repository `repo`: `DATA/writes/REPO`, or
/// `STORAGE/.server/writes/REPO`.
pub fn open(
    data: Option<&Path>,
    storage: Option<&str>,
    options: &rewind_backends::Options,
    repo: &str,
) -> Result<Arc<dyn Backend>> {
    match storage {
        Some(base) => {
            let loc = rewind_backends::Location::parse(&format!(
                "{}/.server/writes/{repo}",
                base.trim_end_matches('/')
            ))?;
            rewind_backends::open(&loc, options)
        }
        None => local(&data.unwrap_or(Path::new(".")).join("writes").join(repo)),
    }
}

/// A directory with a repository's layout, made if it is not there (its
/// config is a record like the others, so `create` may not run twice).
pub(crate) fn local(root: &Path) -> Result<Arc<dyn Backend>> {
    let b = rewind_core::backend::LocalBackend::new(root);
    if !root.join("data").join("ff").is_dir() {
        for i in 0..=255u8 {
            let d = root.join("data").join(hex::encode([i]));
            std::fs::create_dir_all(&d)
                .map_err(|e| Error::io(format!("create {}", d.display()), e))?;
        }
    }
    Ok(Arc::new(b))
}

/// Records that `rec.token` is storing `t`/`name` in `repo`, before the
/// file is written, so that no file stored through the server is without
/// its record (a crash between the two leaves a record of a file that
/// never came, which is harmless). An existing record stays when its file
/// exists (the upload will be answered 409); one whose file is absent (an
/// upload that failed, a file quarantined) is replaced.
pub fn record(
    log: &dyn Backend,
    repo: &dyn Backend,
    t: FileType,
    name: &str,
    rec: &Record,
) -> Result<()> {
    let bytes = serde_json::to_vec(rec).expect("a record serializes");
    for _ in 0..3 {
        match log.write(t, name, &bytes)? {
            WriteOutcome::Created => return Ok(()),
            WriteOutcome::AlreadyExists => {}
        }
        match repo.modified(t, name) {
            Ok(_) => return Ok(()),
            Err(Error::Missing { .. }) => log.delete(t, name)?,
            Err(e) => return Err(e),
        }
    }
    Err(Error::io(
        format!("record the writer of {} {name}", t.what()),
        std::io::Error::other("its record kept changing"),
    ))
}

/// The record of one file, if there is one (an unreadable record is
/// reported, not taken for none).
pub fn read(log: &dyn Backend, t: FileType, name: &str) -> Result<Option<Record>> {
    match log.read(t, name) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::corrupt("write record", name, e)),
        Err(Error::Missing { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every record of a type (name, record); unreadable ones as errors.
pub fn list(log: &dyn Backend, t: FileType) -> Result<Vec<(String, Result<Record>)>> {
    let mut out = Vec::new();
    for f in log.list(t)? {
        match read(log, t, &f.name) {
            Ok(Some(r)) => out.push((f.name, Ok(r))),
            Ok(None) => {}
            Err(e) => out.push((f.name, Err(e))),
        }
    }
    Ok(out)
}
