//! Continuous protection: `schedule = "watch"`. The job's paths are watched
//! (inotify, through the `notify` crate); a change marks the job dirty, and
//! once changes have settled (`settle`, default 10 s) and `min_interval`
//! (default 5 min) has passed since its last run, the job is due. When the
//! paths cannot be watched (the kernel's watch limit, a path gone), the job
//! falls back to running every `min_interval` and the agent says so.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};

/// What the watchers saw, per job.
#[derive(Default)]
pub struct Seen {
    /// Job name: (first change not yet backed up, newest change).
    pub dirty: HashMap<String, (Instant, Instant)>,
}

/// The watchers of the watch jobs (dropping one stops it).
pub struct Watches {
    seen: Arc<Mutex<Seen>>,
    watchers: HashMap<String, notify::RecommendedWatcher>,
    /// Jobs that could not be watched: they run every `min_interval`.
    pub fallback: HashMap<String, String>,
}

impl Watches {
    pub fn new() -> Watches {
        Watches {
            seen: Arc::new(Mutex::new(Seen::default())),
            watchers: HashMap::new(),
            fallback: HashMap::new(),
        }
    }

    /// Watches `paths` for job `name` (again, if it was watched), leaving
    /// out changes under `ignore` (the repository, the agent's state).
    /// Err(why) when it cannot: the caller falls back to the interval.
    pub fn watch(
        &mut self,
        name: &str,
        paths: &[PathBuf],
        ignore: Vec<PathBuf>,
    ) -> Result<(), String> {
        self.watchers.remove(name);
        self.fallback.remove(name);
        let seen = self.seen.clone();
        let job = name.to_string();
        let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else { return };
            if matches!(ev.kind, notify::EventKind::Access(_)) {
                return;
            }
            if !ev.paths.is_empty()
                && ev
                    .paths
                    .iter()
                    .all(|p| ignore.iter().any(|i| p.starts_with(i)))
            {
                return;
            }
            let now = Instant::now();
            let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
            let e = s.dirty.entry(job.clone()).or_insert((now, now));
            e.1 = now;
        })
        .map_err(|e| format!("cannot start watching: {e}"))?;
        for p in paths {
            let mode = if p.is_dir() {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            if let Err(e) = w.watch(p, mode) {
                let why = match e.kind {
                    notify::ErrorKind::MaxFilesWatch => format!(
                        "{}: the kernel's limit of watched folders is reached \
                         (raise fs.inotify.max_user_watches)",
                        p.display()
                    ),
                    _ => format!("{}: {e}", p.display()),
                };
                self.fallback.insert(name.to_string(), why.clone());
                return Err(why);
            }
        }
        self.watchers.insert(name.to_string(), w);
        Ok(())
    }

    /// Stops watching jobs not in `keep`.
    pub fn retain(&mut self, keep: &[&str]) {
        self.watchers.retain(|n, _| keep.contains(&n.as_str()));
        self.fallback.retain(|n, _| keep.contains(&n.as_str()));
    }

    /// Whether job `name` has changes that settled for `settle`.
    pub fn settled(&self, name: &str, settle: Duration) -> bool {
        let s = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        s.dirty
            .get(name)
            .is_some_and(|(_, last)| last.elapsed() >= settle)
    }

    /// Forgets the changes of job `name` up to now (a run starts: what
    /// changes from here on is the next run's).
    pub fn clear(&self, name: &str) -> Option<Instant> {
        let mut s = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        s.dirty.remove(name).map(|(first, _)| first)
    }

    pub fn is_watched(&self, name: &str) -> bool {
        self.watchers.contains_key(name)
    }
}

/// Paths whose changes never make a job dirty: where the repository and
/// the agent's state live (a local repository inside a watched folder
/// would otherwise trigger itself).
pub fn ignored(repository: Option<&str>, state_dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![state_dir.to_path_buf()];
    match repository {
        Some(r) if r.starts_with('/') => out.push(PathBuf::from(r)),
        Some(_) => {}
        None => out.push(crate::commands::defaults().repo),
    }
    out.push(crate::commands::cache_dir().unwrap_or_default());
    out.retain(|p| !p.as_os_str().is_empty());
    out
}
