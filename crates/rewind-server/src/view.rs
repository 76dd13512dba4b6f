//! A repository of the server seen from inside it, as a [`Backend`] that
//! the core opens: read straight from the server's storage, with who stored
//! each file told from the write log, as the server tells its clients (a
//! snapshot rewrite that a backup token stored supersedes nothing here
//! either, DESIGN §3.8). Read only for the web UI; for a phone inbox's
//! snapshots, writes go through the server's rules for a backup token
//! ([`App::store_as`]).

use std::collections::HashMap;
use std::sync::Arc;

use rewind_core::backend::{Backend, FileInfo, FileType, WriteOutcome, Writer};
use rewind_core::{Error, Result};

use crate::http::{App, Repo};
use crate::state::Role;

/// One repository of the server.
pub(crate) struct RepoView {
    repo: Arc<Repo>,
    name: String,
    /// Who writes, if anyone: the server and the writer's name in the
    /// write log (`dav:NAME`).
    writer: Option<(Arc<App>, String)>,
}

impl RepoView {
    /// Repository `name`, read only.
    pub(crate) fn read_only(app: &App, name: &str) -> Result<RepoView> {
        Ok(RepoView {
            repo: app.repo(name)?,
            name: name.to_string(),
            writer: None,
        })
    }

    /// Repository `name`, to which `who` adds backups.
    pub(crate) fn adding(app: &Arc<App>, name: &str, who: &str) -> Result<RepoView> {
        Ok(RepoView {
            repo: app.repo(name)?,
            name: name.to_string(),
            writer: Some((app.clone(), who.to_string())),
        })
    }

    fn refused(&self) -> Error {
        Error::Refused(format!(
            "repository {} is opened read only here (the web UI)",
            self.name
        ))
    }
}

impl std::fmt::Debug for RepoView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RepoView({})", self.name)
    }
}

impl Backend for RepoView {
    fn location(&self) -> String {
        self.name.clone()
    }

    fn create(&self) -> Result<()> {
        Err(self.refused())
    }

    fn list(&self, t: FileType) -> Result<Vec<FileInfo>> {
        self.repo.backend.list(t)
    }

    fn read(&self, t: FileType, name: &str) -> Result<Vec<u8>> {
        self.repo.backend.read(t, name)
    }

    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
        self.repo.backend.read_range(t, name, offset, len)
    }

    fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<WriteOutcome> {
        match &self.writer {
            Some((app, who)) => app.store_as(&self.name, who, t, name, data),
            None => Err(self.refused()),
        }
    }

    fn delete(&self, t: FileType, name: &str) -> Result<()> {
        match &self.writer {
            Some((app, who)) => app.delete_as(&self.name, who, t, name),
            None => Err(self.refused()),
        }
    }

    fn modified(&self, t: FileType, name: &str) -> Result<Option<std::time::SystemTime>> {
        self.repo.backend.modified(t, name)
    }

    fn connections(&self) -> usize {
        self.repo.backend.connections()
    }

    fn is_remote(&self) -> bool {
        self.repo.backend.is_remote()
    }

    fn adds_only(&self) -> Result<bool> {
        Ok(self.writer.is_some())
    }

    fn writers(&self, t: FileType) -> Result<HashMap<String, Writer>> {
        let files = self.repo.backend.list(t)?;
        Ok(self
            .repo
            .writers(t, &files)
            .into_iter()
            .map(|(name, r)| {
                (
                    name,
                    Writer {
                        token: r.token,
                        adds_only: r.role != Role::Admin,
                        time: Some(r.time),
                    },
                )
            })
            .collect())
    }
}
