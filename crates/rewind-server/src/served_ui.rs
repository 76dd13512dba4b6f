//! The web UI inside `rewind serve` ([`crate::ui`] under `/ui/`): a read or
//! admin token and the repository's password open that token's repository
//! for one browser session.
//!
//! The repository is read straight from the server's storage, through a
//! read-only view that tells who stored each file from the write log, as
//! the server tells its clients: a snapshot rewrite that a backup token
//! stored supersedes nothing here either (DESIGN §3.8), so the pages show
//! the history an admin client sees.

use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;

use rewind_core::backend::{Backend, FileInfo, FileType, WriteOutcome, Writer};
use rewind_core::repository::Repository;
use rewind_core::{Error, Result};

use crate::http::{App, Repo};
use crate::state::Role;
use crate::ui::{Opened, ServedLogin};

/// The login of the server's UI.
pub(crate) fn login(app: Arc<App>) -> ServedLogin {
    Arc::new(move |token: &str, password: &[u8]| {
        let st = app
            .state()
            .map_err(|e| format!("the server cannot read its tokens: {e}"))?;
        let t = st
            .authenticate(token, Timestamp::now())
            .map_err(|_| "unknown, expired or revoked token".to_string())?
            .clone();
        if t.role == Role::Backup {
            return Err(format!(
                "token {} is a backup token: it may only add backups, and cannot open the web UI; log in with a read or admin token",
                t.name
            ));
        }
        let repo = app.repo(&t.repo).map_err(|e| e.to_string())?;
        let view: Arc<dyn Backend> = Arc::new(ReadOnlyView {
            repo: repo.clone(),
            name: t.repo.clone(),
        });
        let opened = Repository::open(view, password).map_err(|e| match e {
            Error::WrongPassword { .. } => {
                format!("wrong password for repository {}", t.repo)
            }
            e => format!("cannot open repository {}: {e}", t.repo),
        })?;
        crate::http::log(&format!(
            "web UI: token {} opened repository {}",
            t.name, t.repo
        ));
        // The session lasts while the token works (not revoked, not
        // expired, still not a backup token).
        let (app2, presented) = (app.clone(), token.to_string());
        let still_valid: crate::ui::Validity = Arc::new(move || {
            app2.state().is_ok_and(|st| {
                st.authenticate(&presented, Timestamp::now())
                    .is_ok_and(|t| t.role != Role::Backup)
            })
        });
        Ok(Opened {
            repo: Arc::new(opened),
            label: t.repo,
            still_valid: Some(still_valid),
        })
    })
}

/// A repository's storage, read only, with its writers from the write log.
struct ReadOnlyView {
    repo: Arc<Repo>,
    name: String,
}

impl std::fmt::Debug for ReadOnlyView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReadOnlyView({})", self.name)
    }
}

fn refused() -> Error {
    Error::Refused("the web UI only reads the repository".into())
}

impl Backend for ReadOnlyView {
    fn location(&self) -> String {
        self.name.clone()
    }

    fn create(&self) -> Result<()> {
        Err(refused())
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

    fn write(&self, _: FileType, _: &str, _: &[u8]) -> Result<WriteOutcome> {
        Err(refused())
    }

    fn delete(&self, _: FileType, _: &str) -> Result<()> {
        Err(refused())
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
