//! Running markers: a backup or prune announces itself in `running/` and
//! rewrites its marker every [`REFRESH_EVERY`] until it ends. Nothing waits
//! on a marker; prune only postpones deleting packs that a running backup
//! may still rely on (docs/DESIGN.md §8c). A marker not refreshed for
//! [`STALE_AFTER`] belongs to a dead (or long suspended) process.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};
use jiff::{SignedDuration, Timestamp};

use super::Repository;
use crate::backend::{Backend, FileType};
use crate::crypto::Crypto;
use crate::error::{Error, Result};
use crate::format::prune::{RunningKind, RunningMarker, VERSION};

/// How often a running marker is rewritten.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);
/// How far clocks of different machines may disagree.
pub const CLOCK_SKEW: SignedDuration = SignedDuration::from_mins(10);
/// A marker older than this is ignored (its process died or slept).
pub const STALE_AFTER: SignedDuration = SignedDuration::from_secs(30 * 60);

struct Current {
    name: String,
    marker: RunningMarker,
    /// A gap between refreshes (suspend, stop, failed writes) was long
    /// enough for a prune to take this process for dead.
    was_stale: bool,
}

/// The marker of an operation in progress; dropping it removes the marker.
pub struct Running {
    backend: Arc<dyn Backend>,
    current: Arc<Mutex<Current>>,
    stop: Option<Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.current.lock().expect("marker");
        f.debug_struct("Running").field("marker", &c.name).finish()
    }
}

fn write_marker(backend: &dyn Backend, crypto: &Crypto, m: &RunningMarker) -> Result<String> {
    use crate::format::RepoFile;
    let (name, bytes) = m.seal(crypto);
    backend.write(FileType::Running, &name.to_hex(), &bytes)?;
    Ok(name.to_hex())
}

/// This process's PID namespace, where the system tells it.
pub fn pid_namespace() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
}

impl Running {
    /// When the operation started (written in its marker).
    pub fn start(&self) -> Timestamp {
        self.current.lock().expect("marker").marker.start
    }

    /// True when the marker may have looked stale to a prune at some point:
    /// the process was stopped or suspended for long, or refreshing failed.
    pub fn went_stale(&self) -> bool {
        let c = self.current.lock().expect("marker");
        c.was_stale || Timestamp::now().duration_since(c.marker.refreshed) >= STALE_AFTER / 2
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let name = self.current.lock().expect("marker").name.clone();
        let _ = self.backend.delete(FileType::Running, &name);
    }
}

impl Repository {
    /// Writes a running marker and keeps it fresh until the returned guard
    /// is dropped. Its start is when this handle was opened, i.e. before
    /// it read the index and the marks.
    pub fn announce(&self, kind: RunningKind, hostname: &str) -> Result<Running> {
        let marker = RunningMarker {
            version: VERSION,
            kind,
            hostname: hostname.to_string(),
            pid: std::process::id(),
            start: self.opened(),
            refreshed: Timestamp::now(),
            pid_namespace: pid_namespace(),
        };
        let name = write_marker(&**self.backend(), self.crypto(), &marker)?;
        let current = Arc::new(Mutex::new(Current {
            name,
            marker,
            was_stale: false,
        }));
        let (stop, stopped) = bounded::<()>(0);
        let backend = self.backend().clone();
        let crypto = self.crypto().clone();
        let shared = current.clone();
        let thread = std::thread::Builder::new()
            .name("running-marker".into())
            .spawn(move || loop {
                match stopped.recv_timeout(REFRESH_EVERY) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                let mut m = {
                    let mut c = shared.lock().expect("marker");
                    let now = Timestamp::now();
                    if now.duration_since(c.marker.refreshed) >= STALE_AFTER / 2 {
                        c.was_stale = true;
                    }
                    c.marker.clone()
                };
                m.refreshed = Timestamp::now();
                // A failed refresh leaves the old marker; went_stale() reports
                // it once it is old enough to matter.
                if let Ok(name) = write_marker(&*backend, &crypto, &m) {
                    let old = {
                        let mut c = shared.lock().expect("marker");
                        let old = std::mem::replace(&mut c.name, name);
                        c.marker = m;
                        old
                    };
                    let _ = backend.delete(FileType::Running, &old);
                }
            })
            .map_err(|e| Error::io("start the running-marker thread", e))?;
        Ok(Running {
            backend: self.backend().clone(),
            current,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Every readable running marker with its file name; unreadable ones
    /// are left out (see [`Repository::running_markers_checked`]).
    pub fn running_markers(&self) -> Result<Vec<(String, RunningMarker)>> {
        Ok(self.running_markers_checked()?.0)
    }

    /// Every readable running marker with its file name, and the files
    /// that are not readable markers with why. A damaged marker cannot be
    /// told from garbage, but it may be a live backup's: prune treats it
    /// as one until its storage time is [`STALE_AFTER`] old.
    pub fn running_markers_checked(&self) -> Result<RunningMarkers> {
        // A marker that vanishes between list and read was ended or
        // replaced by its refresh: list again, so a refreshed one is seen.
        for _ in 0..5 {
            let mut out = Vec::new();
            let mut damaged = Vec::new();
            let mut raced = false;
            for f in self.backend().list(FileType::Running)? {
                let bytes = match self.backend().read(FileType::Running, &f.name) {
                    Ok(b) => b,
                    Err(Error::Missing { .. }) => {
                        raced = true;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                match <RunningMarker as crate::format::RepoFile>::open(
                    self.crypto(),
                    &f.name,
                    &bytes,
                ) {
                    Ok(m) => out.push((f.name, m)),
                    Err(e) => damaged.push((f, e)),
                }
            }
            if !raced {
                return Ok((out, damaged));
            }
        }
        Err(Error::Refused(
            "the running markers keep changing while they are read; try again".into(),
        ))
    }
}

/// Readable running markers (file name, marker) and damaged marker files.
pub type RunningMarkers = (
    Vec<(String, RunningMarker)>,
    Vec<(crate::backend::FileInfo, Error)>,
);
