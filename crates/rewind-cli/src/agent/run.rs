//! Running one task of one job: the same `rewind` commands a person types
//! (`backup`, `forget`, `prune`, `check`), run as child processes of this
//! binary, with the job's hooks around them, retries with backoff for
//! failures that may pass (a storage server down for a minute), and a clean
//! stop: on SIGTERM the child gets one SIGTERM and stops at its next safe
//! point, as it does when a person presses Ctrl-C.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};

use super::config::{Config, Job};
use super::state::{Outcome, Run, Task};

/// Exit codes of `rewind` that another attempt cannot change.
const FINAL_CODES: [i32; 5] = [2, 4, 10, 12, 130];

/// What a run needs besides the job.
pub struct Runner<'a> {
    pub config: &'a Config,
    /// The `rewind` binary (this one).
    pub exe: PathBuf,
    /// Set on SIGTERM/SIGINT: stop the child and do not retry.
    pub stop: Arc<AtomicBool>,
    /// Called with one line per event.
    pub log: &'a (dyn Fn(&str) + Sync),
}

/// What one child command did.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    stopped: bool,
}

impl Ran {
    /// The child's last error line, for the record and the alert.
    fn message(&self) -> String {
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        let errors: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with("error"))
            .collect();
        let pick = if errors.is_empty() { &lines } else { &errors };
        let mut m = pick
            .iter()
            .rev()
            .take(3)
            .rev()
            .copied()
            .collect::<Vec<_>>()
            .join(" / ");
        if m.is_empty() {
            m = match self.code {
                Some(c) => format!("exit code {c}"),
                None => "killed by a signal".into(),
            };
        }
        m.chars().take(2000).collect()
    }
}

impl Runner<'_> {
    /// Runs `task` of `job` for `slot` and says how it went.
    pub fn run(&self, job: &Job, task: Task, slot: Option<Timestamp>) -> Run {
        let start = Timestamp::now();
        let mut run = Run::begun(task, slot, start, Outcome::Failed);
        if task == Task::Backup {
            let env = hook_env(job, task, &run, "pending");
            if let Err(m) = self.hooks(job, &job.hooks.before, "before", &env) {
                run.message = Some(m);
                run.end = Timestamp::now();
                self.on_failure(job, &run);
                return run;
            }
        }
        self.attempts(job, task, &mut run);
        if task == Task::Backup && run.outcome.ok() && job.forget {
            let mut args = vec!["forget".to_string()];
            args.extend(job.keep.iter().cloned());
            args.push("--host".into());
            args.push(job.host.clone().unwrap_or_else(hostname));
            let r = self.rewind(job, &args);
            if r.code != Some(0) {
                run.outcome = if r.stopped {
                    Outcome::Interrupted
                } else {
                    Outcome::Failed
                };
                run.message = Some(format!(
                    "the backup was saved, but retention (forget) failed: {}",
                    r.message()
                ));
            }
        }
        if task == Task::Backup && run.outcome.ok() {
            self.take_stock(job, &mut run);
        }
        if task == Task::Backup && run.outcome.ok() {
            let env = hook_env(job, task, &run, outcome_name(run.outcome));
            if let Err(m) = self.hooks(job, &job.hooks.after, "after", &env) {
                run.outcome = Outcome::Failed;
                run.message = Some(m);
            }
        }
        run.end = Timestamp::now();
        if !run.outcome.ok() && run.outcome != Outcome::Interrupted {
            self.on_failure(job, &run);
        }
        run
    }

    /// After a backup: the repository's size and snapshots, how many
    /// snapshots of this job it holds, and which of them look like ransomware with no person's
    /// mark (they stay a problem in `status` until marked). A listing that
    /// fails leaves both unknown; the backup stands.
    fn take_stock(&self, job: &Job, run: &mut Run) {
        let mut args = vec![
            "snapshots".to_string(),
            "--host".into(),
            job.host.clone().unwrap_or_else(hostname),
        ];
        for p in &job.paths {
            args.extend(["--path".into(), p.display().to_string()]);
        }
        let stats = self.rewind(job, &["stats".to_string()]);
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&stats.stdout) {
            run.repository_bytes = v["pack_bytes"].as_u64();
            run.repository_snapshots = v["snapshots"].as_u64();
        }
        let r = self.rewind(job, &args);
        let Ok(list) = serde_json::from_str::<Vec<serde_json::Value>>(&r.stdout) else {
            return;
        };
        run.snapshots = Some(list.len() as u64);
        run.unresolved = list
            .iter()
            .filter(|s| s["suspicious"] == true)
            .filter_map(|s| s["id"].as_str().map(str::to_string))
            .collect();
    }

    fn on_failure(&self, job: &Job, run: &Run) {
        if let Err(m) = self.hooks(
            job,
            &job.hooks.on_failure,
            "on_failure",
            &hook_env(job, run.task, run, outcome_name(run.outcome)),
        ) {
            (self.log)(&format!("job {}: {m}", job.name));
        }
    }

    /// The task's command, again after a failure that may pass.
    fn attempts(&self, job: &Job, task: Task, run: &mut Run) {
        let args = task_args(job, task);
        let mut delay = self.config.retry_delay;
        for attempt in 1..=self.config.retries + 1 {
            run.attempts = attempt;
            let r = self.rewind(job, &args);
            run.exit_code = r.code;
            run.outcome = match r.code {
                _ if r.stopped => Outcome::Interrupted,
                Some(0) => Outcome::Success,
                Some(3) if task == Task::Backup => Outcome::Warning,
                Some(4) if task == Task::Backup => Outcome::Suspicious,
                _ => Outcome::Failed,
            };
            if matches!(task, Task::Backup | Task::RestoreTest) {
                read_summary(&r.stdout, run);
            }
            if run.outcome != Outcome::Success {
                run.message = Some(r.message());
            } else {
                run.message = None;
            }
            let final_code = r.code.is_some_and(|c| FINAL_CODES.contains(&c));
            if run.outcome != Outcome::Failed || final_code || attempt > self.config.retries {
                return;
            }
            (self.log)(&format!(
                "job {} {}: attempt {attempt} failed ({}); again in {}",
                job.name,
                task.name(),
                r.message(),
                super::schedule::show_duration(delay)
            ));
            if self.sleep(delay) {
                run.outcome = Outcome::Interrupted;
                return;
            }
            delay = delay.checked_mul(2).unwrap_or(delay);
        }
    }

    /// Sleeps, waking early on stop; true when stopped.
    fn sleep(&self, d: SignedDuration) -> bool {
        let until = Instant::now() + Duration::from_secs(d.as_secs().max(0) as u64);
        while Instant::now() < until {
            if self.stop.load(Ordering::SeqCst) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.stop.load(Ordering::SeqCst)
    }

    /// Runs `rewind ARGS` for this job's repository.
    fn rewind(&self, job: &Job, args: &[String]) -> Ran {
        let mut c = Command::new(&self.exe);
        c.arg("--json");
        if let Some(r) = &job.repository {
            c.arg("--repo").arg(r);
        }
        if let Some(p) = &job.password_file {
            c.arg("--password-file").arg(p);
        }
        if let Some(t) = &job.token_file {
            c.arg("--token-file").arg(t);
        }
        for (k, v) in &job.options {
            c.arg("-o").arg(format!("{k}={v}"));
        }
        // Every task: a backup's copy and prune's repacking write data too.
        if let Some(level) = &job.compression {
            c.arg("--compression").arg(level);
        }
        if let Some(cmd) = &job.password_command {
            c.env("REWIND_PASSWORD_COMMAND", cmd);
        }
        c.args(args);
        let r = self.child(c);
        // What the command said on stderr (warnings, the default
        // repository's password file, errors) goes to the agent's log.
        let what = args.first().map(String::as_str).unwrap_or("rewind");
        for line in r.stderr.lines().filter(|l| !l.trim().is_empty()).take(20) {
            (self.log)(&format!("job {} {what}: | {line}", job.name));
        }
        r
    }

    /// Runs a command to its end, stopping it (one SIGTERM, then after 60 s
    /// SIGKILL) when the agent is told to stop.
    fn child(&self, mut c: Command) -> Ran {
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C on the agent's terminal
            // reaches the agent only, which passes on exactly one signal.
            .process_group(0);
        let mut child = match c.spawn() {
            Ok(c) => c,
            Err(e) => {
                return Ran {
                    code: None,
                    stdout: String::new(),
                    stderr: format!("error: cannot start {:?}: {e}", c.get_program()),
                    stopped: false,
                }
            }
        };
        let out = drain(child.stdout.take());
        let err = drain(child.stderr.take());
        let stopped = self.wait(&mut child, None);
        let status = child.wait().ok();
        Ran {
            code: status.and_then(|s| s.code()),
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
            stopped,
        }
    }

    /// Waits for the child, passing a stop on; with a timeout, kills it
    /// then. True when it was stopped by the agent.
    fn wait(&self, child: &mut Child, timeout: Option<Duration>) -> bool {
        let begun = Instant::now();
        let mut termed: Option<Instant> = None;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return termed.is_some();
            }
            let timed_out = timeout.is_some_and(|t| begun.elapsed() > t);
            if termed.is_none() && (self.stop.load(Ordering::SeqCst) || timed_out) {
                signal(child.id(), nix::sys::signal::Signal::SIGTERM);
                termed = Some(Instant::now());
            }
            if termed.is_some_and(|t| t.elapsed() > Duration::from_secs(60))
                || (timed_out && termed.is_some_and(|t| t.elapsed() > Duration::from_secs(5)))
            {
                let _ = child.kill();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs each hook through `sh -c` with the job's environment and a
    /// timeout; the first that fails stops the rest and is named.
    fn hooks(
        &self,
        job: &Job,
        hooks: &[String],
        when: &str,
        env: &[(&'static str, String)],
    ) -> Result<(), String> {
        let timeout = Duration::from_secs(job.hook_timeout.as_secs().max(1) as u64);
        for h in hooks {
            let mut c = Command::new("sh");
            c.arg("-c").arg(h).envs(env.iter().map(|(k, v)| (k, v)));
            c.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0);
            let mut child = c
                .spawn()
                .map_err(|e| format!("{when} hook `{h}` could not start: {e}"))?;
            let out = drain(child.stdout.take());
            let err = drain(child.stderr.take());
            let begun = Instant::now();
            let stopped = self.wait(&mut child, Some(timeout));
            let status = child.wait().ok();
            let (_, stderr) = (out.join(), err.join().unwrap_or_default());
            let last = stderr.lines().last().unwrap_or("").to_string();
            match status.and_then(|s| s.code()) {
                Some(0) => {}
                _ if begun.elapsed() >= timeout => {
                    return Err(format!(
                        "{when} hook `{h}` did not finish in {} and was stopped",
                        super::schedule::show_duration(job.hook_timeout)
                    ))
                }
                _ if stopped => return Err(format!("{when} hook `{h}` was stopped")),
                Some(c) => {
                    return Err(format!(
                        "{when} hook `{h}` failed (exit code {c}){}",
                        if last.is_empty() {
                            String::new()
                        } else {
                            format!(": {last}")
                        }
                    ))
                }
                None => return Err(format!("{when} hook `{h}` was killed by a signal")),
            }
        }
        Ok(())
    }
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// Reads a pipe to its end on a thread (so a chatty child never blocks on a
/// full pipe while the agent waits).
fn drain<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut s);
        }
        String::from_utf8_lossy(&s).into_owned()
    })
}

/// The `rewind` arguments of a task.
pub fn task_args(job: &Job, task: Task) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    match task {
        Task::Backup => {
            a.push("backup".into());
            if let Some(h) = &job.host {
                a.extend(["--host".into(), h.clone()]);
            }
            for t in &job.tags {
                a.extend(["--tag".into(), t.clone()]);
            }
            for e in &job.exclude {
                a.extend(["--exclude".into(), e.clone()]);
            }
            for f in &job.exclude_file {
                a.extend(["--exclude-file".into(), f.display().to_string()]);
            }
            for e in &job.exclude_if_present {
                a.extend(["--exclude-if-present".into(), e.clone()]);
            }
            if job.exclude_caches {
                a.push("--exclude-caches".into());
            }
            if job.one_file_system {
                a.push("--one-file-system".into());
            }
            if let Some(to) = &job.copy_to {
                a.extend(["--copy-to".into(), to.repository.clone()]);
                if let Some(p) = &to.password_file {
                    a.extend(["--copy-to-password-file".into(), p.display().to_string()]);
                }
                for (k, v) in &to.options {
                    a.extend(["--copy-to-option".into(), format!("{k}={v}")]);
                }
            }
            match &job.command {
                Some(cmd) => {
                    a.push("--stdin-from-command".into());
                    if let Some(f) = &job.command_filename {
                        a.extend(["--stdin-filename".into(), f.clone()]);
                    }
                    a.push("--".into());
                    a.extend(cmd.iter().cloned());
                }
                None => a.extend(job.paths.iter().map(|p| p.display().to_string())),
            }
        }
        Task::Prune => a.push("prune".into()),
        Task::RestoreTest => {
            a.extend(["verify-restore".into(), "--sample".into()]);
            a.push(job.restore_test_sample.clone());
            a.extend(["--host".into(), job.host.clone().unwrap_or_else(hostname)]);
            for p in &job.paths {
                a.extend(["--path".into(), p.display().to_string()]);
            }
        }
        Task::Check => {
            a.push("check".into());
            if let Some(s) = &job.check_read_data_subset {
                a.extend(["--read-data-subset".into(), s.clone()]);
            }
        }
    }
    a
}

/// Fills the snapshot and its figures from `backup --json`'s summary line.
fn read_summary(stdout: &str, run: &mut Run) {
    for line in stdout.lines().rev() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["message_type"] != "summary" {
            continue;
        }
        run.snapshot = v["snapshot_id"].as_str().map(|s| s.to_string());
        run.bytes_added = v["bytes_added_stored"].as_u64();
        run.files = match v["tested"].as_u64() {
            // A restore test: the files it restored and compared.
            Some(tested) => Some(tested),
            None => Some(
                ["files_new", "files_changed", "files_unchanged"]
                    .iter()
                    .filter_map(|k| v[*k].as_u64())
                    .sum(),
            ),
        };
        return;
    }
}

/// The environment a hook sees.
fn hook_env(job: &Job, task: Task, run: &Run, outcome: &str) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("REWIND_JOB", job.name.clone()),
        ("REWIND_TASK", task.name().to_string()),
        ("REWIND_OUTCOME", outcome.to_string()),
    ];
    if let Some(s) = &run.snapshot {
        env.push(("REWIND_SNAPSHOT", s.clone()));
    }
    if let Some(m) = &run.message {
        env.push(("REWIND_ERROR", m.clone()));
    }
    env
}

/// An outcome as hooks, logs and alerts spell it.
pub fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Success => "success",
        Outcome::Warning => "warning",
        Outcome::Suspicious => "suspicious",
        Outcome::Failed => "failed",
        Outcome::Interrupted => "interrupted",
    }
}

/// This machine's name, as `backup` records it.
pub fn hostname() -> String {
    rewind_core::source::local_hostname()
}
