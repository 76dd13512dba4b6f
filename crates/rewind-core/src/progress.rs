//! Live progress of a long operation (backup, restore) and the warnings it
//! collects about single paths, read by a front end from another thread.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::cancel::Cancel;

/// Something that went wrong with one path; the backup went on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The path concerned.
    pub path: PathBuf,
    /// What happened.
    pub message: String,
}

/// Live counters of a running backup (read them from another thread).
#[derive(Debug, Default)]
pub struct Progress {
    /// Files to read, known once the scan ends.
    pub total_files: AtomicU64,
    /// Bytes to read.
    pub total_bytes: AtomicU64,
    /// Files done.
    pub done_files: AtomicU64,
    /// Bytes read.
    pub done_bytes: AtomicU64,
    /// Entries scanned so far.
    pub scanned: AtomicU64,
    /// Set when the scan is over and totals are final.
    pub scan_done: AtomicBool,
    /// Set it to stop the backup at its next safe point: it then returns
    /// [`crate::Error::Interrupted`] and writes no snapshot.
    pub cancel: Cancel,
    warnings: Mutex<Vec<Warning>>,
    seen_warnings: AtomicU64,
}

impl Progress {
    /// Counters at zero, and a backup that stops once `cancel` is set.
    pub fn with_cancel(cancel: Cancel) -> Self {
        Progress {
            cancel,
            ..Progress::default()
        }
    }

    pub fn warn(&self, path: &Path, message: impl Into<String>) {
        self.warnings.lock().expect("warnings").push(Warning {
            path: path.to_path_buf(),
            message: message.into(),
        });
    }

    /// Warnings not yet returned by this method (for live display).
    pub fn new_warnings(&self) -> Vec<Warning> {
        let w = self.warnings.lock().expect("warnings");
        let from = self.seen_warnings.swap(w.len() as u64, Ordering::SeqCst) as usize;
        w[from.min(w.len())..].to_vec()
    }

    pub(crate) fn all_warnings(&self) -> Vec<Warning> {
        self.warnings.lock().expect("warnings").clone()
    }
}
