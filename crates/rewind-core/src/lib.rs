//! # rewind-core
//!
//! The engine of rewind: an encrypted, deduplicated, point-in-time backup
//! repository. Everything that touches a repository lives here; the `rewind`
//! binary only parses arguments and prints.
//!
//! Main types:
//! - [`backend::Backend`]: dumb storage of whole files ([`backend::LocalBackend`]).
//! - [`repository::Repository`]: a backend opened with a password: keys, index, blobs.
//! - [`archiver`]: source files -> chunks -> packs -> trees -> snapshot.
//! - [`restorer`]: snapshot -> files on disk, never outside the target.
//! - [`select`]: naming snapshots by id, `latest` or a point in time.
//! - [`forget`]: which snapshots a retention policy removes (a plan), and
//!   their removal under the one-year history floor.
//!
//! ```no_run
//! use std::sync::Arc;
//! use rewind_core::{backend::LocalBackend, crypto::KdfParams, repository::{KeyOwner, Repository}};
//! let backend = Arc::new(LocalBackend::new("/tmp/repo"));
//! let repo = Repository::init(backend, b"secret", KdfParams::DEFAULT, &KeyOwner::default()).unwrap();
//! let opts = rewind_core::archiver::BackupOptions::new(vec!["/etc".into()]);
//! let progress = rewind_core::archiver::Progress::default();
//! let outcome = rewind_core::archiver::backup(&repo, &opts, &progress).unwrap();
//! println!("snapshot {}", outcome.snapshot_id.unwrap());
//! ```

pub mod after_backup;
pub mod archiver;
pub mod backend;
pub mod browse;
pub mod cancel;
pub mod check;
pub mod chunker;
pub mod copy;
pub mod crypto;
pub mod error;
pub mod forget;
pub mod format;
pub mod id;
pub mod progress;
pub mod proof;
pub mod prune;
pub mod repair;
pub mod repository;
pub mod restorer;
pub mod retention;
pub mod scan;
pub mod select;
pub mod source;
pub mod stats;

pub use error::{Error, Result};
