//! `rewind agent`, `rewind run`, `rewind status` and `rewind config`: the
//! commands of scheduled backups (crate::agent).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use jiff::{SignedDuration, Timestamp, Zoned};

use super::Global;
use crate::agent::schedule::show_duration;
use crate::agent::state::{Outcome, Run, State, Task};
use crate::agent::{self, config};

/// The configuration file: `--config`, else the default place.
fn config_path(global: &Global) -> PathBuf {
    global.config.clone().unwrap_or_else(config::default_path)
}

#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// Serve Prometheus metrics of the jobs at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    pub command: Option<AgentCommand>,
}

#[derive(clap::Subcommand, Debug)]
pub enum AgentCommand {
    /// Write a systemd unit that runs the agent, and enable it where
    /// systemctl works.
    Install {
        /// A user unit (~/.config/systemd/user; the default unless root).
        #[arg(long, conflicts_with = "system")]
        user: bool,
        /// A system unit (/etc/systemd/system; the default for root).
        #[arg(long)]
        system: bool,
        /// Write the unit but do not enable or start it.
        #[arg(long)]
        no_enable: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The job's name.
    pub job: String,
    /// Which of its tasks.
    #[arg(long, value_enum, default_value = "backup")]
    pub task: TaskArg,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum TaskArg {
    Backup,
    Prune,
    Check,
    RestoreTest,
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {}

#[derive(clap::Args, Debug)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum ConfigCommand {
    /// Check the file and print each job resolved, with its next runs.
    Check,
    /// Write a commented starting file for this machine.
    Init {
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
}

pub fn agent(args: &AgentArgs, global: &Global) -> Result<u8> {
    match &args.command {
        None => agent::agent(&config_path(global), args.metrics_listen),
        Some(AgentCommand::Install {
            user,
            system,
            no_enable,
        }) => install(&config_path(global), *user, *system, *no_enable),
    }
}

pub fn run(args: &RunArgs, global: &Global) -> Result<u8> {
    let task = match args.task {
        TaskArg::Backup => Task::Backup,
        TaskArg::Prune => Task::Prune,
        TaskArg::Check => Task::Check,
        TaskArg::RestoreTest => Task::RestoreTest,
    };
    agent::run_now(&config_path(global), &args.job, task)
}

pub fn config(args: &ConfigArgs, global: &Global) -> Result<u8> {
    match &args.command {
        ConfigCommand::Check => check(&config_path(global), global),
        ConfigCommand::Init { force } => init(&config_path(global), *force),
    }
}

fn check(path: &Path, global: &Global) -> Result<u8> {
    let cfg = config::load(path)?;
    let now = Zoned::now();
    let mut jobs = Vec::new();
    for job in &cfg.jobs {
        let mut tasks = Vec::new();
        for task in [Task::Backup, Task::Prune, Task::Check, Task::RestoreTest] {
            let Some(s) = agent::schedule_of(job, task) else {
                continue;
            };
            let mut next = Vec::new();
            let mut t = now.clone();
            for _ in 0..3 {
                match s.next_after(&t) {
                    Some(n) => {
                        next.push(n.clone());
                        t = n;
                    }
                    None => break,
                }
            }
            tasks.push((task, s.to_string(), next));
        }
        jobs.push((job, tasks));
    }
    if global.json {
        let v: Vec<_> = jobs
            .iter()
            .map(|(job, tasks)| {
                serde_json::json!({
                    "name": job.name,
                    "repository": job.repository_key(),
                    "paths": job.paths,
                    "command": job.command,
                    "tasks": tasks.iter().map(|(t, s, n)| serde_json::json!({
                        "task": t.name(), "schedule": s,
                        "next": n.iter().map(|z| z.timestamp().to_string()).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        outln!(
            "{}",
            serde_json::json!({"file": cfg.path, "state_dir": cfg.state_dir, "jobs": v})
        );
        return Ok(crate::exit::OK);
    }
    outln!(
        "{}: {} job(s), state in {}",
        cfg.path.display(),
        cfg.jobs.len(),
        cfg.state_dir.display()
    );
    for (job, tasks) in jobs {
        outln!();
        outln!("job {}", job.name);
        outln!(
            "  repository  {}",
            job.repository
                .as_deref()
                .unwrap_or("(the default repository)")
        );
        match &job.command {
            Some(c) => outln!("  command     {}", c.join(" ")),
            None => outln!(
                "  paths       {}",
                job.paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
        if !job.exclude.is_empty() {
            outln!("  exclude     {}", job.exclude.join(", "));
        }
        if job.forget {
            outln!(
                "  retention   {}",
                if job.keep.is_empty() {
                    "the repository's policy (`rewind policy`)".to_string()
                } else {
                    job.keep.join(" ")
                }
            );
        } else {
            outln!("  retention   none (forget = false)");
        }
        if job.jitter > SignedDuration::ZERO {
            outln!("  jitter      up to {}", show_duration(job.jitter));
        }
        for (task, sched, next) in tasks {
            outln!(
                "  {:<11} {sched}; next: {}",
                task.name(),
                next.iter()
                    .map(|z| z.strftime("%a %Y-%m-%d %H:%M %Z").to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(crate::exit::OK)
}

fn init(path: &Path, force: bool) -> Result<u8> {
    if path.exists() && !force {
        bail!(
            "{} exists: edit it, or pass --force to replace it",
            path.display()
        );
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let text = format!(
        r#"# rewind agent configuration. Check it with `rewind config check`;
# run the agent with `rewind agent` (or install it: `rewind agent install`).
# Every key is described in README.md, "The agent".

[notify]
# webhook = "https://hooks.example.com/rewind"     # a JSON POST per alert
# missed_after = "2d"                              # default: twice the interval
# [notify.email]
# to = ["me@example.com"]
# from = "rewind@example.com"
# server = "smtp.example.com:587"
# security = "starttls"                            # or "tls", or "none" on loopback
# user = "rewind@example.com"
# password_file = "~/.config/rewind/smtp.password"

[jobs.home]
# repository = "sftp:backup@nas:/srv/rewind"       # default: the local default repository
# password_file = "~/.config/rewind/nas.password"
paths = ["{home}"]
exclude = [".cache", "node_modules", "target", "*.tmp"]
exclude_caches = true
schedule = "hourly"                                # every 15m | daily 02:30 | weekly sun 03:00 | cron
jitter = "5m"
# keep = {{ hourly = 24, daily = 7, weekly = 4, monthly = 12, yearly = 3 }}  # default: the repository's policy
prune = "weekly sun 04:00"
check = "daily 05:00"
check_read_data_subset = "5%"
# copy_to = {{ repository = "s3:https://s3.example.com/offsite", password_file = "~/.config/rewind/offsite.password" }}

# [jobs.home.hooks]
# before = ["systemctl --user stop syncthing"]
# after = ["systemctl --user start syncthing"]
# on_failure = ["logger -t rewind \"job $REWIND_JOB failed: $REWIND_ERROR\""]
# timeout = "5m"

# A database dump, backed up as one file:
# [jobs.db]
# command = ["pg_dump", "--format=custom", "app"]
# command_filename = "app.dump"
# schedule = "daily 01:30"
"#
    );
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    outln!(
        "wrote {}: check it with `rewind config check`",
        path.display()
    );
    Ok(crate::exit::OK)
}

/// The agent's status as `agent status --json` prints it, or `None` where
/// no agent is configured (the web UI shows it).
pub fn status_json(global: &Global) -> Option<serde_json::Value> {
    let cfg = config::load(&config_path(global)).ok()?;
    let st = State::load(&cfg.state_dir).ok()?;
    let now = Zoned::now();
    let rows: Vec<Row> = cfg.jobs.iter().map(|job| job_row(job, &st, &now)).collect();
    Some(rows_json(&rows, &st))
}

fn rows_json(rows: &[Row], st: &State) -> serde_json::Value {
    let v: Vec<_> = rows
        .iter()
        .map(
            |Row {
                 job,
                 last,
                 success,
                 age,
                 next,
                 check,
                 proven,
                 problems,
             }| {
                serde_json::json!({
                    "job": job.name,
                    "healthy": problems.is_empty(),
                    "problems": problems,
                    "last_run": last,
                    "last_success": success,
                    "last_success_age_secs": age.map(|a| a.as_secs()),
                    "next_run": next.to_string(),
                    "last_check": check,
                    "last_proven_restore": proven,
                })
            },
        )
        .collect();
    serde_json::json!({
        "healthy": rows.iter().all(|r| r.problems.is_empty()),
        "jobs": v,
        "pending_alerts": st.pending.len(),
        "agent_heartbeat": st.heartbeat.map(|t| t.to_string()),
    })
}

pub fn status(_args: &StatusArgs, global: &Global) -> Result<u8> {
    let cfg = config::load(&config_path(global))?;
    let st = State::load(&cfg.state_dir)?;
    let now = Zoned::now();
    let rows: Vec<Row> = cfg.jobs.iter().map(|job| job_row(job, &st, &now)).collect();
    let unhealthy = rows.iter().any(|r| !r.problems.is_empty());
    if global.json {
        outln!("{}", rows_json(&rows, &st));
    } else {
        for Row {
            job,
            last,
            age,
            next,
            check,
            proven,
            problems,
            ..
        } in &rows
        {
            outln!(
                "job {}: {}",
                job.name,
                if problems.is_empty() {
                    "ok"
                } else {
                    "NEEDS ATTENTION"
                }
            );
            match last {
                Some(l) => outln!(
                    "  last run     {} ({}{})",
                    local(l.start),
                    format!("{:?}", l.outcome).to_ascii_lowercase(),
                    l.snapshot
                        .as_deref()
                        .map(|s| format!(", snapshot {}", &s[..s.len().min(8)]))
                        .unwrap_or_default()
                ),
                None => outln!("  last run     never"),
            }
            if let Some(a) = age {
                outln!("  last success {} ago", show_duration(*a));
            }
            if matches!(job.schedule, crate::agent::schedule::Schedule::Watch) {
                outln!(
                    "  next run     when the paths change (at most every {})",
                    show_duration(job.min_interval)
                );
            } else {
                outln!("  next run     {}", local(*next));
            }
            if let Some(c) = check {
                outln!(
                    "  last check   {} ({})",
                    local(c.start),
                    format!("{:?}", c.outcome).to_ascii_lowercase()
                );
            }
            if let Some(p) = proven {
                outln!(
                    "  last proven restorable point: {} (restore test {})",
                    p.snapshot.as_deref().map_or("?", |s| &s[..s.len().min(8)]),
                    local(p.end)
                );
            }
            for p in problems {
                outln!("  ! {p}");
            }
        }
        if !st.pending.is_empty() {
            outln!(
                "{} alert(s) not sent yet (the agent retries)",
                st.pending.len()
            );
        }
    }
    Ok(if unhealthy {
        crate::exit::UNHEALTHY
    } else {
        crate::exit::OK
    })
}

/// One job in `status`.
struct Row<'a> {
    job: &'a config::Job,
    last: Option<Run>,
    success: Option<Run>,
    /// The last success's age.
    age: Option<SignedDuration>,
    next: Timestamp,
    check: Option<Run>,
    /// The last restore test that passed.
    proven: Option<Run>,
    /// What needs attention; empty when healthy.
    problems: Vec<String>,
}

fn job_row<'a>(job: &'a config::Job, st: &State, now: &Zoned) -> Row<'a> {
    let backup = st.get(&job.name, Task::Backup);
    let last = backup.and_then(|t| t.last.clone());
    let success = backup.and_then(|t| t.last_success.clone());
    let interval = job.schedule.interval(now);
    let allowed = interval.checked_mul(2).unwrap_or(SignedDuration::MAX);
    let age = success
        .as_ref()
        .map(|r| now.timestamp().duration_since(r.end));
    let next = match agent::due(
        &job.schedule,
        job.jitter,
        &job.name,
        backup.and_then(|t| t.last_slot),
        now,
    ) {
        Ok(_) => now.timestamp(),
        Err(at) => at.timestamp(),
    };
    let mut problems = Vec::new();
    match &age {
        None => problems.push("no successful backup yet".to_string()),
        Some(a) if *a > allowed => problems.push(format!(
            "last success {} ago, more than twice the interval ({})",
            show_duration(*a),
            show_duration(interval)
        )),
        _ => {}
    }
    if let Some(l) = &last {
        if !l.outcome.ok() && l.outcome != Outcome::Interrupted {
            problems.push(format!(
                "last run failed: {}",
                l.message.as_deref().unwrap_or("see the agent's log")
            ));
        }
        // (Without a listing after it, the run's own verdict.)
        if l.outcome == Outcome::Suspicious && l.snapshots.is_none() {
            problems.push(format!(
                "snapshot {} looks like ransomware: look with `rewind scan`, then `rewind mark`",
                l.snapshot.as_deref().unwrap_or("?")
            ));
        }
    }
    // Suspicious snapshots no person has marked, as of the last successful
    // backup (which lists them).
    for id in success.iter().flat_map(|s| &s.unresolved) {
        let short = &id[..id.len().min(8)];
        problems.push(format!(
            "snapshot {short} looks like ransomware and no one has marked it: look with \
             `rewind scan {short}`, then `rewind mark clean|suspicious {short}`"
        ));
    }
    let check = st.get(&job.name, Task::Check).and_then(|t| t.last.clone());
    if let Some(c) = &check {
        if !c.outcome.ok() {
            problems.push(format!(
                "last check failed: {}",
                c.message.as_deref().unwrap_or("see the agent's log")
            ));
        }
    }
    let proof = st.get(&job.name, Task::RestoreTest);
    if let Some(t) = proof.and_then(|t| t.last.as_ref()) {
        if !t.outcome.ok() && t.outcome != Outcome::Interrupted {
            problems.push(format!(
                "last restore test failed: {}",
                t.message.as_deref().unwrap_or("see the agent's log")
            ));
        }
    }
    let proven = proof.and_then(|t| t.last_success.clone());
    Row {
        job,
        last,
        success,
        age,
        next,
        check,
        proven,
        problems,
    }
}

fn local(t: Timestamp) -> String {
    t.to_zoned(jiff::tz::TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

fn install(config_path: &Path, user: bool, system: bool, no_enable: bool) -> Result<u8> {
    let system = system || (!user && config::is_root());
    // The file must be valid before a service depends on it.
    let cfg = config::load(config_path)?;
    let exe = std::env::current_exe().context("finding the rewind binary")?;
    let unit_dir = if system {
        PathBuf::from("/etc/systemd/system")
    } else {
        super::config_home().join("systemd/user")
    };
    let unit = unit_dir.join("rewind-agent.service");
    let text = format!(
        "# Written by `rewind agent install`.\n\
         [Unit]\n\
         Description=rewind backup agent ({jobs} job(s) from {config})\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={exe} agent --config {config}\n\
         ExecReload=/bin/kill -HUP $MAINPID\n\
         # SIGTERM to the agent only: it stops each running backup at a safe point.\n\
         KillMode=mixed\n\
         TimeoutStopSec=120\n\
         Restart=on-failure\n\
         RestartSec=30\n\
         Nice=10\n\
         IOSchedulingClass=idle\n\
         \n\
         [Install]\n\
         WantedBy={target}\n",
        jobs = cfg.jobs.len(),
        config = cfg.path.display(),
        exe = exe.display(),
        target = if system {
            "multi-user.target"
        } else {
            "default.target"
        },
    );
    std::fs::create_dir_all(&unit_dir)
        .with_context(|| format!("cannot create {}", unit_dir.display()))?;
    std::fs::write(&unit, &text).with_context(|| format!("cannot write {}", unit.display()))?;
    outln!("wrote {}:\n{text}", unit.display());
    // Completions and man pages, where this scope's tools look for them.
    let share = if system {
        PathBuf::from("/usr/local/share")
    } else {
        std::env::var_os("XDG_DATA_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".local/share")
            })
    };
    let completion = share.join("bash-completion/completions/rewind");
    super::docs::write_completion(clap_complete::Shell::Bash, &completion)?;
    let man = share.join("man/man1");
    let pages = super::docs::write_man_pages(&man)?;
    outln!(
        "wrote the bash completion {} and {} man pages in {}",
        completion.display(),
        pages.len(),
        man.display()
    );
    if no_enable {
        return Ok(crate::exit::OK);
    }
    let scope: &[&str] = if system { &[] } else { &["--user"] };
    let ctl = |args: &[&str]| {
        std::process::Command::new("systemctl")
            .args(scope)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if ctl(&["daemon-reload"]) && ctl(&["enable", "--now", "rewind-agent.service"]) {
        outln!(
            "enabled and started: see it with `systemctl {}status rewind-agent` and `rewind status`",
            if system { "" } else { "--user " }
        );
    } else {
        outln!(
            "systemctl is not available here: the unit is written but not enabled; \
             run `rewind agent --config {}` under your service manager instead",
            cfg.path.display()
        );
    }
    Ok(crate::exit::OK)
}
