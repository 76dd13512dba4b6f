//! The agent's local record of runs (`STATE_DIR/agent.json`): per job and
//! task the last run, the last success and the slot last started, plus
//! notifications not yet sent. Written whole to a temporary file, synced
//! and renamed over the old one, so a kill -9 at any moment leaves either
//! the old record or the new one.
//!
//! A run's slot is recorded as started before the run begins: a killed
//! agent finds `running` set at its next start, records the run as
//! interrupted and runs it again once; a finished run's slot is never run
//! twice.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Version of `agent.json`.
pub const VERSION: u32 = 1;

/// What a task is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    Backup,
    Prune,
    Check,
    RestoreTest,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Backup => "backup",
            Task::Prune => "prune",
            Task::Check => "check",
            Task::RestoreTest => "restore-test",
        }
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Success,
    /// Done, but some files could not be read.
    Warning,
    /// Done, and the backup looks like ransomware.
    Suspicious,
    Failed,
    /// The agent was stopped or killed during the run.
    Interrupted,
}

impl Outcome {
    /// Whether the run did its job (a snapshot was saved, the check passed).
    pub fn ok(self) -> bool {
        matches!(
            self,
            Outcome::Success | Outcome::Warning | Outcome::Suspicious
        )
    }
}

/// One finished run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Run {
    pub task: Task,
    /// The scheduled time this run stood for (None: `rewind run`).
    pub slot: Option<Timestamp>,
    pub start: Timestamp,
    pub end: Timestamp,
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    /// Attempts made (retries + 1).
    pub attempts: u32,
    /// The snapshot a backup saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_added: Option<u64>,
    /// After a backup: this host's snapshots of these paths in the
    /// repository...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<u64>,
    /// ...and those of them that look like ransomware and that no person
    /// has marked (ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unresolved: Vec<String>,
    /// After a backup: the repository's stored bytes (packs) and all its
    /// snapshots, any host (`rewind stats`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_snapshots: Option<u64>,
    /// What went wrong, in the words of the command that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Run {
    /// A run of `task` for `slot` that began at `start` and has no result
    /// yet (outcome `outcome` until one is set).
    pub fn begun(task: Task, slot: Option<Timestamp>, start: Timestamp, outcome: Outcome) -> Run {
        Run {
            task,
            slot,
            start,
            end: start,
            outcome,
            exit_code: None,
            attempts: 0,
            snapshot: None,
            files: None,
            bytes_added: None,
            snapshots: None,
            unresolved: Vec::new(),
            repository_bytes: None,
            repository_snapshots: None,
            message: None,
        }
    }
}

/// A run that began and has not ended (yet, or ever: killed).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Started {
    pub slot: Option<Timestamp>,
    pub start: Timestamp,
    pub pid: u32,
}

/// One task of one job.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TaskState {
    /// The newest slot a run was started for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_slot: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<Started>,
    /// The slot of a run that was interrupted (agent killed or stopped):
    /// it runs again, once, at the next start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Run>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Run>,
    /// Failed runs since the last success.
    #[serde(default)]
    pub failures: u32,
    /// Whether the newest alert said the task is failing (so the next
    /// success is a recovery) or missed.
    #[serde(default)]
    pub alerted: bool,
}

/// A notification waiting to be sent.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Pending {
    pub job: String,
    pub body: serde_json::Value,
    pub queued: Timestamp,
    #[serde(default)]
    pub tries: u32,
}

/// The whole record.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub version: u32,
    /// Job name, then task.
    #[serde(default)]
    pub jobs: BTreeMap<String, BTreeMap<Task, TaskState>>,
    #[serde(default)]
    pub pending: Vec<Pending>,
    /// When the agent last said it was alive (a missed backup is noticed
    /// even when the agent itself was down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<Timestamp>,
}

impl State {
    pub fn file(dir: &Path) -> PathBuf {
        dir.join("agent.json")
    }

    /// The record in `dir`, or an empty one.
    pub fn load(dir: &Path) -> Result<State> {
        let path = State::file(dir);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let s: State = serde_json::from_slice(&bytes).with_context(|| {
                    format!(
                        "{} is not a rewind agent state file: move it away to start afresh \
                         (the repositories are not affected)",
                        path.display()
                    )
                })?;
                if s.version > VERSION {
                    anyhow::bail!(
                        "{} was written by a newer rewind (state version {}); upgrade rewind",
                        path.display(),
                        s.version
                    );
                }
                Ok(s)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State {
                version: VERSION,
                ..State::default()
            }),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the record: temporary file, fsync, rename, fsync the folder.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the state folder {}", dir.display()))?;
        let path = State::file(dir);
        let tmp = dir.join(format!(".agent.json.{}.tmp", std::process::id()));
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(&serde_json::to_vec_pretty(self)?)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("cannot replace {}", path.display()))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    pub fn task(&mut self, job: &str, task: Task) -> &mut TaskState {
        self.jobs
            .entry(job.to_string())
            .or_default()
            .entry(task)
            .or_default()
    }

    pub fn get(&self, job: &str, task: Task) -> Option<&TaskState> {
        self.jobs.get(job)?.get(&task)
    }
}

/// A lock held while the process lives (`flock`, released by the kernel
/// when the process dies, kill -9 included).
pub struct Lock(#[allow(dead_code)] std::fs::File);

impl Lock {
    /// Takes `dir/locks/NAME.lock`, waiting for it when `wait`; None when
    /// another process holds it and `wait` is false.
    pub fn take(dir: &Path, name: &str, wait: bool) -> Result<Option<Lock>> {
        let locks = dir.join("locks");
        std::fs::create_dir_all(&locks)
            .with_context(|| format!("cannot create {}", locks.display()))?;
        let path = locks.join(format!("{name}.lock"));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open the lock {}", path.display()))?;
        if wait {
            f.lock()
                .with_context(|| format!("cannot lock {}", path.display()))?;
            return Ok(Some(Lock(f)));
        }
        match f.try_lock() {
            Ok(()) => Ok(Some(Lock(f))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }
}

/// A lock name for a repository location (any string).
pub fn repository_lock_name(location: &str) -> String {
    let h = rewind_core::id::Hash::of(location.as_bytes()).to_hex();
    format!("repo-{}", &h[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_a_bad_file_says_so() {
        let d = tempfile::tempdir().unwrap();
        let mut s = State::load(d.path()).unwrap();
        s.task("home", Task::Backup).last_slot = Some(Timestamp::UNIX_EPOCH);
        s.save(d.path()).unwrap();
        assert_eq!(State::load(d.path()).unwrap(), s);
        std::fs::write(State::file(d.path()), b"{not json").unwrap();
        let e = State::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("not a rewind agent state file"), "{e}");
    }

    #[test]
    fn a_lock_is_held_once() {
        let d = tempfile::tempdir().unwrap();
        let a = Lock::take(d.path(), "job-home", false).unwrap();
        assert!(a.is_some());
        assert!(Lock::take(d.path(), "job-home", false).unwrap().is_none());
        drop(a);
        assert!(Lock::take(d.path(), "job-home", false).unwrap().is_some());
    }
}
