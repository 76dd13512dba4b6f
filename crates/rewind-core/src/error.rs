//! Errors of the core, grouped by what a caller can do about them.
//!
//! Policy: repository bytes never cause a panic; every parser returns
//! [`Error::Corrupt`] naming the object. I/O errors carry the path or object
//! they concern. The CLI maps variants to exit codes (see README.md).

use std::io;

/// Result alias of the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub use self::Remedy as ErrorRemedy;

/// Every error the core returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The location holds no rewind repository.
    #[error("no rewind repository at {location}: {reason}")]
    NoRepository {
        /// Where we looked.
        location: String,
        /// What was missing.
        reason: String,
    },
    /// A repository already exists where `init` was asked to create one.
    #[error("a repository already exists at {0}")]
    AlreadyExists(String),
    /// No key file of the repository opens with the given password. Key
    /// files that could not be tried (damaged) are named: if one of them
    /// was this password's, the password is right and the file needs
    /// restoring.
    #[error("wrong password: no key of the repository opens with it{}", damaged_keys_note(.damaged))]
    WrongPassword {
        /// Key files that could not be tried, as "keys/NAME: why".
        damaged: Vec<String>,
    },
    /// The repository was written by a newer rewind.
    #[error("repository format version {found} is newer than this rewind understands (up to {supported}); install a newer rewind")]
    UnsupportedVersion {
        /// Version found in the repository config.
        found: u32,
        /// Highest version this build reads.
        supported: u32,
    },
    /// An object failed authentication or could not be decoded.
    #[error("{what} {id} is corrupt or was tampered with: {detail}")]
    Corrupt {
        /// Kind of object (pack, index, snapshot, tree, blob, key, config).
        what: &'static str,
        /// Its id or name.
        id: String,
        /// What exactly failed.
        detail: String,
    },
    /// An object that must exist is not in the repository.
    #[error("{what} {id} is missing from the repository")]
    Missing {
        /// Kind of object.
        what: &'static str,
        /// Its id or name.
        id: String,
    },
    /// A snapshot selector matched nothing.
    #[error("no snapshot matches {0}")]
    SnapshotNotFound(String),
    /// A snapshot id prefix matched several snapshots.
    #[error("snapshot id prefix {0} matches several snapshots; give more characters")]
    AmbiguousSnapshot(String),
    /// The caller's input is invalid.
    #[error("{0}")]
    InvalidInput(String),
    /// The operation was refused to protect data.
    #[error("{0}")]
    Refused(String),
    /// The operation was cancelled (see [`crate::cancel`]) and stopped at a
    /// safe point.
    #[error("interrupted: stopped at a safe point; the repository is consistent")]
    Interrupted,
    /// A command whose output was being backed up failed.
    #[error("command {command} failed ({status}); no snapshot was saved")]
    CommandFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
    },
    /// An error with what a person can do about it; each front end (the
    /// CLI, the agent, a web page) words the remedy its own way, so the
    /// core's messages name no command or flag.
    #[error("{error}")]
    WithRemedy {
        /// The error.
        #[source]
        error: Box<Error>,
        /// What to do about it.
        remedy: Remedy,
    },
    /// An I/O error, with what we were doing. The OS error is in the
    /// message and is also the `source()`, so that a caller can tell its
    /// kind (a closed pipe, a full disk) through any chain of context; a
    /// printer of chains skips a cause that the message already says.
    #[error("{context}: {error}")]
    Io {
        /// What we were doing, naming the path or object.
        context: String,
        /// The OS error.
        #[source]
        error: io::Error,
    },
}

fn damaged_keys_note(damaged: &[String]) -> String {
    if damaged.is_empty() {
        return String::new();
    }
    format!(
        " (and {} key file{} could not be tried: {}; if one of them was this password's, \
         restore it from a copy or use another password)",
        damaged.len(),
        if damaged.len() == 1 { "" } else { "s" },
        damaged.join("; ")
    )
}

/// What a person can do about an error (see [`Error::WithRemedy`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Remedy {
    /// Create a repository there.
    Init,
    /// Check the repository to see what is damaged and what it affects.
    Check,
    /// Check, then write repaired snapshots that leave out lost files.
    CheckThenRepairSnapshots,
    /// Rebuild the index from the packs' headers.
    RepairIndex,
    /// See the repository's keys.
    ListKeys,
    /// Change the password of the key in use instead.
    ChangePassword,
    /// Prune without deleting at once (the grace period), or wait.
    PruneWithGrace,
    /// A snapshot (file or root tree) cannot be read: prune with
    /// `ignore_damaged_snapshots` (it restores nothing), or recover it.
    PruneIgnoringDamagedSnapshots,
}

impl Error {
    /// Attaches what a person can do about this error.
    pub fn with_remedy(self, remedy: Remedy) -> Self {
        Error::WithRemedy {
            error: Box::new(self),
            remedy,
        }
    }

    /// The remedy attached to this error, if any.
    pub fn remedy(&self) -> Option<Remedy> {
        match self {
            Error::WithRemedy { remedy, .. } => Some(*remedy),
            _ => None,
        }
    }

    /// The error without its remedy.
    pub fn inner(&self) -> &Error {
        match self {
            Error::WithRemedy { error, .. } => error.inner(),
            e => e,
        }
    }

    /// Builds an [`Error::Io`] with a context.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            error: source,
        }
    }

    /// Builds an [`Error::Corrupt`].
    pub fn corrupt(what: &'static str, id: impl ToString, detail: impl ToString) -> Self {
        Error::Corrupt {
            what,
            id: id.to_string(),
            detail: detail.to_string(),
        }
    }

    /// True when the error says that the storage is full.
    pub fn is_storage_full(&self) -> bool {
        matches!(self, Error::Io { error: source, .. } if source.raw_os_error() == Some(nix::libc::ENOSPC) || source.kind() == io::ErrorKind::StorageFull)
    }
}

/// Extension to add context to `io::Result`.
pub trait IoContext<T> {
    /// Wraps the error with a context message, computed lazily.
    fn ctx<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::io(f(), e))
    }
}

impl From<io::Error> for Error {
    /// Bare I/O errors come from sources being read (see the archiver); the
    /// caller adds the path.
    fn from(source: io::Error) -> Self {
        Error::Io {
            context: "read".into(),
            error: source,
        }
    }
}
