//! `rewind agent`: backups that happen by themselves. Jobs from one TOML
//! file ([`config`]) run on their schedules ([`schedule`]) through the same
//! commands a person types ([`run`]); what ran and how it went is kept in a
//! local state file that survives kill -9 ([`state`]); failures, recoveries,
//! missed backups and suspicious snapshots are sent as alerts ([`notify`]).

pub mod config;
pub mod notify;
pub mod run;
pub mod schedule;
pub mod state;
pub mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use jiff::{SignedDuration, Timestamp, Zoned};

use config::{Config, Job};
use schedule::{show_duration, Schedule};
use state::{Lock, Outcome, Run, Started, State, Task};

/// One line to stderr: the time, then the event.
pub fn log(line: &str) {
    eprintln!(
        "{} {line}",
        Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or(Timestamp::now())
    );
}

/// A task's schedule in a job, if it has one.
pub fn schedule_of(job: &Job, task: Task) -> Option<&Schedule> {
    match task {
        Task::Backup => Some(&job.schedule),
        Task::Prune => job.prune.as_ref(),
        Task::Check => job.check.as_ref(),
        Task::RestoreTest => job.restore_test.as_ref(),
    }
}

const TASKS: [Task; 4] = [Task::Backup, Task::Prune, Task::Check, Task::RestoreTest];

/// The random delay of one slot of one job: the same for the same slot (a
/// restarted agent does not draw again), below `jitter`.
fn jitter_for(job: &str, slot: &Zoned, jitter: SignedDuration) -> SignedDuration {
    let secs = jitter.as_secs();
    if secs <= 0 {
        return SignedDuration::ZERO;
    }
    // A hash of the job and the slot: spread, stable, not a secret.
    let h =
        rewind_core::id::Hash::of(format!("{job}\0{}", slot.timestamp().as_second()).as_bytes());
    let n = u64::from_le_bytes(h.0[..8].try_into().expect("8 bytes"));
    SignedDuration::from_secs((n % secs as u64) as i64)
}

/// When a task is due next: `Ok(slot)` when it is due now (the newest
/// slot missed, however many were), `Err(time)` when it is not yet.
pub fn due(
    schedule: &Schedule,
    jitter: SignedDuration,
    job: &str,
    last_slot: Option<Timestamp>,
    now: &Zoned,
) -> std::result::Result<Zoned, Zoned> {
    let Some(last) = last_slot else {
        return Ok(now.clone());
    };
    let since = last.to_zoned(now.time_zone().clone());
    if let Some(slot) = schedule.latest_due(&since, now) {
        let at = slot.timestamp() + jitter_for(job, &slot, jitter);
        if at <= now.timestamp() {
            return Ok(slot);
        }
        return Err(at.to_zoned(now.time_zone().clone()));
    }
    let next = schedule
        .next_after(&since.max(now.clone()))
        .unwrap_or_else(|| now.clone());
    let at = next.timestamp() + jitter_for(job, &next, jitter);
    Err(at.to_zoned(now.time_zone().clone()))
}

/// The agent's shared parts.
struct Shared {
    config: Mutex<Arc<Config>>,
    stop: Arc<AtomicBool>,
    exe: PathBuf,
}

/// Changes the state file under its lock: read, change, write. The file is
/// the truth, shared by the agent's workers and `rewind run`.
fn update<T>(dir: &Path, f: impl FnOnce(&mut State) -> T) -> Result<T> {
    let _lock = Lock::take(dir, "state", true)?;
    let mut st = State::load(dir)?;
    let out = f(&mut st);
    st.save(dir)?;
    Ok(out)
}

impl Shared {
    fn config(&self) -> Arc<Config> {
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes the state file; a failure is logged (the run goes on).
    fn update<T: Default>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        update(&self.config().state_dir, f).unwrap_or_else(|e| {
            log(&format!("error: cannot update the agent state: {e:#}"));
            T::default()
        })
    }

    fn state(&self) -> State {
        State::load(&self.config().state_dir).unwrap_or_default()
    }

    /// Runs one task of one job, recording it before and after.
    fn run_task(&self, job: &Job, task: Task, slot: Option<Zoned>) -> Run {
        let cfg = self.config();
        let slot_ts = slot.as_ref().map(|s| s.timestamp());
        self.update(|st| {
            let t = st.task(&job.name, task);
            if slot_ts.is_some() {
                t.last_slot = slot_ts;
            }
            t.running = Some(Started {
                slot: slot_ts,
                start: Timestamp::now(),
                pid: std::process::id(),
            });
        });
        log(&format!(
            "job {} {}: started{}",
            job.name,
            task.name(),
            slot.as_ref()
                .map(|s| format!(" (slot {})", s.strftime("%Y-%m-%d %H:%M:%S %Z")))
                .unwrap_or_default()
        ));
        let runner = run::Runner {
            config: &cfg,
            exe: self.exe.clone(),
            stop: self.stop.clone(),
            log: &log,
        };
        let run = runner.run(job, task, slot_ts);
        // Recorded first: what the log says has happened is in the record.
        let stopping = self.stop.load(Ordering::SeqCst);
        self.update(|st| record(st, job, run.clone(), stopping));
        log(&format!(
            "job {} {}: {}",
            job.name,
            task.name(),
            describe(&run)
        ));
        run
    }
}

/// Records a finished run and queues the alerts it calls for.
fn record(st: &mut State, job: &Job, run: Run, stopping: bool) {
    let t = st.task(&job.name, run.task);
    t.running = None;
    if t.rerun == run.slot {
        t.rerun = None;
    }
    t.last = Some(run.clone());
    let mut events = Vec::new();
    if run.outcome.ok() {
        t.failures = 0;
        if std::mem::take(&mut t.alerted) {
            events.push((
                "recovery",
                format!("job {} {} works again", job.name, run.task.name()),
            ));
        }
        t.last_success = Some(run.clone());
        if run.outcome == Outcome::Suspicious {
            events.push((
                "suspicious",
                format!(
                    "job {}: snapshot {} looks like a ransomware attack",
                    job.name,
                    run.snapshot
                        .as_deref()
                        .map_or("?", |s| &s[..s.len().min(8)])
                ),
            ));
        }
    } else if run.outcome == Outcome::Interrupted && stopping {
        // Stopped by the agent's own shutdown: the slot runs again at the
        // next start (it did not run to its end).
        t.rerun = run.slot;
    } else {
        t.failures += 1;
        if !t.alerted {
            t.alerted = true;
            events.push((
                "failure",
                format!(
                    "job {} {} failed: {}",
                    job.name,
                    run.task.name(),
                    run.message.as_deref().unwrap_or("see the agent's log")
                ),
            ));
        }
    }
    for (kind, text) in events {
        notify::queue(
            st,
            &job.notify,
            &notify::Event {
                kind,
                job: &job.name,
                task: run.task.name(),
                text,
                snapshot: run.snapshot.as_deref(),
                message: run.message.as_deref(),
            },
        );
    }
}

/// A run in one line.
fn describe(run: &Run) -> String {
    let secs = run.end.duration_since(run.start).as_secs_f64();
    let mut s = format!("{:?}", run.outcome).to_ascii_lowercase();
    if let Some(snap) = &run.snapshot {
        s.push_str(&format!(", snapshot {}", &snap[..snap.len().min(8)]));
    }
    if let Some(f) = run.files {
        s.push_str(&format!(", {f} files"));
    }
    if let Some(b) = run.bytes_added {
        s.push_str(&format!(", {} added", rewind_core::stats::human_bytes(b)));
    }
    s.push_str(&format!(", {secs:.1} s"));
    if run.attempts > 1 {
        s.push_str(&format!(", {} attempts", run.attempts));
    }
    if let Some(m) = &run.message {
        s.push_str(&format!(": {m}"));
    }
    s
}

/// Marks runs that a killed agent or `rewind run` left "running" as
/// interrupted and makes their slots due again (once). A job whose lock is
/// held (`held`: by this process; else by another one) is running and left
/// alone.
fn recover(st: &mut State, dir: &Path, held: Option<&str>) -> Vec<String> {
    let mut said = Vec::new();
    for (job, tasks) in st.jobs.iter_mut() {
        if held != Some(job.as_str())
            && !matches!(Lock::take(dir, &format!("job-{job}"), false), Ok(Some(_)))
        {
            continue;
        }
        for (task, t) in tasks.iter_mut() {
            if let Some(r) = t.running.take() {
                said.push(format!(
                    "job {job} {}: the run started {} did not finish (the agent was killed); it runs again",
                    task.name(),
                    r.start
                ));
                t.last = Some(Run {
                    message: Some("the agent was killed during the run".into()),
                    ..Run::begun(*task, r.slot, r.start, Outcome::Interrupted)
                });
                t.rerun = r.slot;
            }
        }
    }
    said
}

/// Prometheus metrics of the jobs, from the state file.
pub fn metrics(config_path: &Path) -> String {
    use std::fmt::Write;
    let Ok(cfg) = config::load(config_path) else {
        return "rewind_agent_up 1\nrewind_agent_config_valid 0\n".into();
    };
    let st = State::load(&cfg.state_dir).unwrap_or_default();
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, rows: Vec<(String, f64)>| {
        let _ = writeln!(
            out,
            "# HELP rewind_{name} {help}\n# TYPE rewind_{name} gauge"
        );
        for (labels, v) in rows {
            let _ = writeln!(out, "rewind_{name}{labels} {v}");
        }
    };
    let mut rows: HashMap<&str, Vec<(String, f64)>> = HashMap::new();
    for job in &cfg.jobs {
        for task in TASKS {
            if schedule_of(job, task).is_none() {
                continue;
            }
            let l = format!("{{job=\"{}\",task=\"{}\"}}", job.name, task.name());
            let t = st.get(&job.name, task);
            let mut put = |k: &'static str, v: f64| rows.entry(k).or_default().push((l.clone(), v));
            if let Some(r) = t.and_then(|t| t.last_success.as_ref()) {
                put("last_success_timestamp_seconds", r.end.as_second() as f64);
            }
            if let Some(r) = t.and_then(|t| t.last.as_ref()) {
                put("last_run_timestamp_seconds", r.start.as_second() as f64);
                put(
                    "last_run_duration_seconds",
                    r.end.duration_since(r.start).as_secs_f64(),
                );
                put("last_run_ok", if r.outcome.ok() { 1.0 } else { 0.0 });
                if let Some(f) = r.files {
                    put("last_run_files", f as f64);
                }
                if let Some(b) = r.bytes_added {
                    put("last_run_added_bytes", b as f64);
                }
                if let Some(b) = r.repository_bytes {
                    put("repository_bytes", b as f64);
                }
                if let Some(n) = r.repository_snapshots {
                    put("repository_snapshots", n as f64);
                }
                if let Some(n) = r.snapshots {
                    put("snapshots", n as f64);
                    put("unresolved_suspicious_snapshots", r.unresolved.len() as f64);
                }
            }
            put("failures", t.map_or(0, |t| t.failures) as f64);
            put(
                "running",
                if t.is_some_and(|t| t.running.is_some()) {
                    1.0
                } else {
                    0.0
                },
            );
        }
    }
    for (name, help) in [
        (
            "last_success_timestamp_seconds",
            "When the task last succeeded (end, Unix seconds).",
        ),
        (
            "last_run_timestamp_seconds",
            "When the task last started (Unix seconds).",
        ),
        ("last_run_duration_seconds", "How long the last run took."),
        ("last_run_ok", "1 when the last run succeeded."),
        (
            "last_run_files",
            "Files in the last backup (or tested by the last restore test).",
        ),
        (
            "last_run_added_bytes",
            "Bytes the last backup added to the repository.",
        ),
        (
            "repository_bytes",
            "The repository's stored bytes (packs), after the job's last backup.",
        ),
        (
            "repository_snapshots",
            "All snapshots in the repository (any host), after the job's last backup.",
        ),
        (
            "snapshots",
            "This job's snapshots in the repository, after its last backup.",
        ),
        (
            "unresolved_suspicious_snapshots",
            "Of those: suspicious, not marked by a person.",
        ),
        ("failures", "Failed runs since the last success."),
        ("running", "1 while the task runs."),
    ] {
        metric(name, help, rows.remove(name).unwrap_or_default());
    }
    metric(
        "alerts_pending",
        "Alerts not sent yet.",
        vec![(String::new(), st.pending.len() as f64)],
    );
    metric(
        "agent_up",
        "1 while the agent answers.",
        vec![(String::new(), 1.0)],
    );
    out
}

/// `rewind agent`: runs the jobs until SIGTERM or SIGINT.
pub fn agent(config_path: &Path, metrics_listen: Option<std::net::SocketAddr>) -> Result<u8> {
    let cfg = config::load(config_path)?;
    let _agent_lock = Lock::take(&cfg.state_dir, "agent", false)?.ok_or_else(|| {
        anyhow::anyhow!(
            "another rewind agent runs with the state in {}: stop it first (one agent per state folder)",
            cfg.state_dir.display()
        )
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("installing a signal handler")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
        .context("installing the SIGHUP handler")?;
    let dir = cfg.state_dir.clone();
    for line in update(&dir, |st| recover(st, &dir, None))? {
        log(&line);
    }
    if let Some(addr) = metrics_listen {
        let path = config_path.to_path_buf();
        let at =
            rewind_server::text::serve_text(addr, "/metrics", Arc::new(move || metrics(&path)))
                .with_context(|| format!("--metrics-listen {addr}"))?;
        log(&format!("metrics on http://{at}/metrics"));
    }
    log(&format!(
        "agent started: {} job(s) from {}, state in {}",
        cfg.jobs.len(),
        cfg.path.display(),
        cfg.state_dir.display()
    ));
    let shared = Arc::new(Shared {
        config: Mutex::new(Arc::new(cfg)),
        stop: stop.clone(),
        exe: std::env::current_exe().context("finding the rewind binary")?,
    });
    let mut watches = watch::Watches::new();
    set_watches(&mut watches, &shared.config());
    // One worker per repository at a time: jobs on one repository run one
    // after another, different repositories side by side.
    let mut workers: HashMap<String, std::thread::JoinHandle<()>> = HashMap::new();
    let mut last_beat = Timestamp::UNIX_EPOCH;
    let mut last_send = Timestamp::UNIX_EPOCH;
    while !stop.load(Ordering::SeqCst) {
        if reload.swap(false, Ordering::SeqCst) {
            let path = shared.config().path.clone();
            match config::load(&path) {
                Ok(new) => {
                    log(&format!(
                        "reloaded {}: {} job(s)",
                        path.display(),
                        new.jobs.len()
                    ));
                    *shared.config.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
                    set_watches(&mut watches, &shared.config());
                }
                Err(e) => log(&format!(
                    "error: the new configuration is not valid, the old one stays: {e:#}"
                )),
            }
        }
        workers.retain(|_, h| !h.is_finished());
        let cfg = shared.config();
        let now = Zoned::now();
        let by_repo = due_tasks(&shared, &cfg, &workers, &watches, &now);
        start_workers(&shared, &cfg, by_repo, &mut workers);
        let now_ts = Timestamp::now();
        if now_ts.duration_since(last_beat) >= SignedDuration::from_secs(60) {
            last_beat = now_ts;
            missed(&shared, &cfg, &now);
            shared.update(|st| st.heartbeat = Some(now_ts));
        }
        if now_ts.duration_since(last_send) >= SignedDuration::from_secs(30) {
            last_send = now_ts;
            send_pending(&shared);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    log(&format!(
        "stopping: waiting for {} running task(s) to stop at a safe point",
        workers.len()
    ));
    for (_, h) in workers {
        let _ = h.join();
    }
    send_pending(&shared);
    log("agent stopped");
    Ok(crate::exit::OK)
}

/// Watches the paths of every `watch` job of `cfg` (and no others).
fn set_watches(watches: &mut watch::Watches, cfg: &Config) {
    let mut names = Vec::new();
    for job in cfg
        .jobs
        .iter()
        .filter(|j| matches!(j.schedule, Schedule::Watch))
    {
        names.push(job.name.as_str());
        let ignore = watch::ignored(job.repository.as_deref(), &cfg.state_dir);
        match watches.watch(&job.name, &job.paths, ignore) {
            Ok(()) => log(&format!(
                "job {}: watching {} path(s); a backup once changes settle ({}), at most every {}",
                job.name,
                job.paths.len(),
                show_duration(job.settle),
                show_duration(job.min_interval)
            )),
            Err(why) => log(&format!(
                "warning: job {}: cannot watch ({why}); backing up every {} instead",
                job.name,
                show_duration(job.min_interval)
            )),
        }
    }
    watches.retain(&names);
}

/// Whether a `watch` job's backup is due: never ran; or `min_interval`
/// since its last run and changes that settled (or, unwatchable, just the
/// interval).
fn watch_due(watches: &watch::Watches, job: &Job, last: Option<Timestamp>, now: &Zoned) -> bool {
    let Some(last) = last else { return true };
    if now.timestamp().duration_since(last) < job.min_interval {
        return false;
    }
    let settle = Duration::from_secs(job.settle.as_secs().max(0) as u64);
    !watches.is_watched(&job.name) || watches.settled(&job.name, settle)
}

type Due = HashMap<String, Vec<(usize, Task, Zoned)>>;

/// The tasks due now, by repository (none of a repository whose worker is
/// still busy).
fn due_tasks(
    shared: &Shared,
    cfg: &Config,
    workers: &HashMap<String, std::thread::JoinHandle<()>>,
    watches: &watch::Watches,
    now: &Zoned,
) -> Due {
    let mut by_repo: Due = HashMap::new();
    let st = shared.state();
    for (i, job) in cfg.jobs.iter().enumerate() {
        if workers.contains_key(&job.repository_key()) {
            continue;
        }
        for task in TASKS {
            let Some(sched) = schedule_of(job, task) else {
                continue;
            };
            let ts = st.get(&job.name, task);
            if let Some(slot) = ts.and_then(|t| t.rerun) {
                let slot = slot.to_zoned(now.time_zone().clone());
                by_repo
                    .entry(job.repository_key())
                    .or_default()
                    .push((i, task, slot));
                continue;
            }
            let last = ts.and_then(|t| t.last_slot);
            if last.is_none() && task != Task::Backup {
                // Maintenance starts counting when the agent first sees
                // the job; the first backup runs at once.
                shared.update(|st| st.task(&job.name, task).last_slot = Some(now.timestamp()));
                continue;
            }
            if matches!(sched, Schedule::Watch) {
                if watch_due(watches, job, last, now) {
                    // What changes from now on is the next run's.
                    if let Some(first) = watches.clear(&job.name) {
                        log(&format!(
                            "job {}: changes since {:.1} s ago have settled",
                            job.name,
                            first.elapsed().as_secs_f64()
                        ));
                    }
                    by_repo
                        .entry(job.repository_key())
                        .or_default()
                        .push((i, task, now.clone()));
                }
                continue;
            }
            if let Ok(slot) = due(sched, job.jitter, &job.name, last, now) {
                by_repo
                    .entry(job.repository_key())
                    .or_default()
                    .push((i, task, slot));
            }
        }
    }
    by_repo
}

/// Starts a worker per repository for its due tasks.
fn start_workers(
    shared: &Arc<Shared>,
    cfg: &Arc<Config>,
    by_repo: Due,
    workers: &mut HashMap<String, std::thread::JoinHandle<()>>,
) {
    for (repo, tasks) in by_repo {
        let lock_name = state::repository_lock_name(&repo);
        let shared = shared.clone();
        let cfg = cfg.clone();
        let lock_dir = cfg.state_dir.clone();
        let handle = std::thread::spawn(move || {
            let _repo_lock = Lock::take(&lock_dir, &lock_name, true);
            for (i, task, slot) in tasks {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let job = &cfg.jobs[i];
                match Lock::take(&lock_dir, &format!("job-{}", job.name), false) {
                    Ok(Some(_job_lock)) => {
                        shared.run_task(job, task, Some(slot));
                    }
                    Ok(None) => log(&format!(
                        "job {} {}: already running (`rewind run`?); this slot is skipped",
                        job.name,
                        task.name()
                    )),
                    Err(e) => log(&format!("job {}: {e:#}", job.name)),
                }
            }
        });
        workers.insert(repo, handle);
    }
}

/// Alerts for jobs whose last successful backup is older than allowed
/// (`missed_after`, else twice the interval): also after the agent itself
/// was down, since the age comes from the record.
fn missed(shared: &Shared, cfg: &Config, now: &Zoned) {
    for job in &cfg.jobs {
        // A watched folder that does not change needs no backup.
        if matches!(job.schedule, Schedule::Watch) && job.notify.missed_after.is_none() {
            continue;
        }
        let limit = job
            .notify
            .missed_after
            .as_deref()
            .and_then(|m| schedule::parse_duration(m).ok())
            .unwrap_or_else(|| {
                job.schedule
                    .interval(now)
                    .checked_mul(2)
                    .unwrap_or(SignedDuration::MAX)
            });
        shared.update(|st| {
            let t = st.task(&job.name, Task::Backup);
            let since = t
                .last_success
                .as_ref()
                .map(|r| r.end)
                .or(t.last.as_ref().map(|r| r.start));
            let Some(since) = since else { return };
            let age = now.timestamp().duration_since(since);
            if age > limit && !t.alerted {
                t.alerted = true;
                let text = format!(
                    "job {}: no successful backup for {} (allowed: {})",
                    job.name,
                    show_duration(age),
                    show_duration(limit)
                );
                log(&text);
                notify::queue(
                    st,
                    &job.notify,
                    &notify::Event {
                        kind: "missed",
                        job: &job.name,
                        task: "backup",
                        text,
                        snapshot: None,
                        message: None,
                    },
                );
            }
        });
    }
}

/// Sends queued alerts; what fails stays queued for the next round.
fn send_pending(shared: &Shared) {
    let pending = shared.update(|st| std::mem::take(&mut st.pending));
    if pending.is_empty() {
        return;
    }
    let mut left = Vec::new();
    for mut p in pending {
        match notify::send(&p) {
            Ok(()) => log(&format!(
                "job {}: alert sent ({})",
                p.job,
                p.body["alert"]["event"].as_str().unwrap_or("?")
            )),
            Err(e) => {
                p.tries += 1;
                log(&format!(
                    "job {}: alert not sent, kept for later (try {}): {e:#}",
                    p.job, p.tries
                ));
                left.push(p);
            }
        }
    }
    shared.update(|st| {
        left.append(&mut st.pending);
        st.pending = left;
    });
}

/// `rewind run JOB [--task T]`: runs a task of a job now, through the same
/// code as the agent, and records it.
pub fn run_now(config_path: &Path, name: &str, task: Task) -> Result<u8> {
    let cfg = config::load(config_path)?;
    let Some(job_index) = cfg.jobs.iter().position(|j| j.name == name) else {
        bail!(
            "no job {name:?} in {}: the jobs are {}",
            cfg.path.display(),
            cfg.jobs
                .iter()
                .map(|j| j.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("installing a signal handler")?;
    }
    let _job_lock =
        Lock::take(&cfg.state_dir, &format!("job-{name}"), false)?.ok_or_else(|| {
            anyhow::anyhow!(
                "job {name:?} is running already (in the agent or another `rewind run`)"
            )
        })?;
    let _repo_lock = Lock::take(
        &cfg.state_dir,
        &state::repository_lock_name(&cfg.jobs[job_index].repository_key()),
        true,
    )?;
    let dir = cfg.state_dir.clone();
    for line in update(&dir, |st| recover(st, &dir, Some(name)))? {
        log(&line);
    }
    let shared = Shared {
        stop,
        exe: std::env::current_exe().context("finding the rewind binary")?,
        config: Mutex::new(Arc::new(cfg)),
    };
    let cfg = shared.config();
    let job = &cfg.jobs[job_index];
    let run = shared.run_task(job, task, None);
    send_pending(&shared);
    Ok(match run.outcome {
        Outcome::Success => crate::exit::OK,
        Outcome::Warning => crate::exit::PARTIAL,
        Outcome::Suspicious => crate::exit::SUSPICIOUS,
        Outcome::Interrupted => crate::exit::INTERRUPTED,
        Outcome::Failed => crate::exit::FATAL,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_below_its_bound_and_is_the_same_for_a_slot() {
        let slot = jiff::civil::date(2026, 6, 1)
            .at(2, 30, 0, 0)
            .in_tz("UTC")
            .unwrap();
        let bound = SignedDuration::from_mins(10);
        let mut seen = std::collections::HashSet::new();
        for job in 0..200 {
            let j = jitter_for(&format!("job{job}"), &slot, bound);
            assert!(j >= SignedDuration::ZERO && j < bound, "{j:?}");
            assert_eq!(j, jitter_for(&format!("job{job}"), &slot, bound));
            seen.insert(j.as_secs());
        }
        // Spread over the window, not one value.
        assert!(seen.len() > 100, "{}", seen.len());
        assert_eq!(
            jitter_for("x", &slot, SignedDuration::ZERO),
            SignedDuration::ZERO
        );
    }

    #[test]
    fn a_slot_is_due_after_its_jitter_and_never_ran_is_due_now() {
        let s: Schedule = "daily 02:30".parse().unwrap();
        let at = |h: i8, m: i8| {
            jiff::civil::date(2026, 6, 1)
                .at(h, m, 0, 0)
                .in_tz("UTC")
                .unwrap()
        };
        let now = at(2, 31);
        assert!(due(&s, SignedDuration::ZERO, "j", None, &now).is_ok());
        let last = Some(at(0, 0).timestamp() - SignedDuration::from_hours(24));
        assert_eq!(
            due(&s, SignedDuration::ZERO, "j", last, &now),
            Ok(at(2, 30))
        );
        let j = jitter_for("j", &at(2, 30), SignedDuration::from_hours(1));
        let r = due(&s, SignedDuration::from_hours(1), "j", last, &now);
        if j > SignedDuration::from_mins(1) {
            assert_eq!(r, Err(at(2, 30).checked_add(j).unwrap()));
        }
        // Done for today: the next is tomorrow's.
        let done = Some(at(2, 30).timestamp());
        assert_eq!(
            due(&s, SignedDuration::ZERO, "j", done, &now),
            Err(jiff::civil::date(2026, 6, 2)
                .at(2, 30, 0, 0)
                .in_tz("UTC")
                .unwrap())
        );
    }
}
