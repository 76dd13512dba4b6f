//! Subcommands, one file each, and what they share: finding the
//! repository, getting the password, naming snapshots, showing progress.

pub mod agent;
pub mod backup;
pub mod browse;
pub mod check;
pub mod copy;
pub mod copy_target;
pub mod docs;
pub mod forget;
pub mod init;
pub mod key;
pub mod mount;
pub mod policy;
pub mod protect;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod scan;
pub mod serve;
pub mod snapshots;
pub mod stats;
pub mod ui;
pub mod unlock;
pub mod verify;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use rewind_core::archiver::Progress;
use rewind_core::backend::Backend;
use rewind_core::format::snapshot::SnapshotFile;
use rewind_core::id::SnapshotId;
use rewind_core::repository::Repository;
use rewind_core::select::SnapshotFilter;

/// rewind: encrypted, deduplicated, point-in-time backups.
#[derive(Parser, Debug)]
#[command(name = "rewind", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Repository location: a path, sftp:[user@]host[:port]/path,
    /// s3:http[s]://endpoint/bucket[/prefix] or rest:https://host:port/REPO
    /// (default: $XDG_DATA_HOME/rewind/repo, created on first backup); for
    /// `serve token add`, the repository's name on the server.
    #[arg(short = 'r', long = "repo", env = "REWIND_REPOSITORY", global = true)]
    pub repo: Option<PathBuf>,
    /// File holding the repository password.
    #[arg(long, env = "REWIND_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors and warnings.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// A backend option KEY=VALUE (repeatable): s3.region, s3.connections,
    /// s3.profile, sftp.command, sftp.args, sftp.connections, rest.ca,
    /// rest.token-file, rest.connections.
    #[arg(short = 'o', long = "option", global = true, value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// File holding the token of a rest: repository (else REWIND_SERVER_TOKEN).
    #[arg(
        long,
        env = "REWIND_SERVER_TOKEN_FILE",
        global = true,
        value_name = "FILE"
    )]
    pub token_file: Option<PathBuf>,
    /// The agent's configuration file, for `agent`, `run`, `status` and
    /// `config` (else $XDG_CONFIG_HOME/rewind/rewind.toml, or
    /// /etc/rewind/rewind.toml for root).
    #[arg(
        long = "config",
        env = "REWIND_CONFIG",
        global = true,
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// Do not use or fill the local cache of a remote repository's index
    /// and snapshot files ($XDG_CACHE_HOME/rewind/meta).
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// Memory the index may take (e.g. 512M, 2G): an index that needs more
    /// than a quarter of this (52 bytes a chunk) is kept as a table on disk
    /// in the cache ($XDG_CACHE_HOME/rewind/index), and the index stays
    /// within it whatever the repository's size (check and prune read the
    /// index files again instead of holding them; prune still holds its
    /// used blobs, ~36 bytes a chunk). With --no-cache the index is held in
    /// memory. An eighth of it is a backup's scan's (past it, folders are
    /// stored while the scan goes on) and a restore's plan's (past it, the
    /// restore goes a window of files at a time).
    #[arg(
        long,
        env = "REWIND_MAX_MEMORY",
        global = true,
        value_name = "SIZE",
        default_value = "512M"
    )]
    pub max_memory: String,
    /// How the data (file contents and directories) written is compressed:
    /// default (zstd level 3), fast (level 1: 10-15 % less CPU, 1.5 to 3 %
    /// more storage), high (level 9: about 6 % smaller on text, three to
    /// four times the CPU), off, or a zstd level from 1 to 19. Data written
    /// at any level reads back the same way.
    #[arg(
        long,
        env = "REWIND_COMPRESSION",
        global = true,
        value_name = "LEVEL",
        default_value = "default"
    )]
    pub compression: String,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a repository.
    Init(init::Args),
    /// Back up files, a stream or a command's output.
    Backup(backup::Args),
    /// List snapshots.
    Snapshots(snapshots::Args),
    /// List the files of a snapshot.
    Ls(browse::LsArgs),
    /// Find files in every snapshot ("when did this file last look right?").
    Find(browse::FindArgs),
    /// Show what changed between two snapshots.
    Diff(browse::DiffArgs),
    /// Write a file of a snapshot to stdout (a directory as tar).
    Dump(browse::DumpArgs),
    /// Restore a snapshot, or part of one.
    Restore(restore::Args),
    /// Mount the history as a read-only file system (FUSE).
    Mount(mount::Args),
    /// Browse, download and restore in a web browser (on this machine).
    Ui(ui::Args),
    /// Manage the passwords that open the repository.
    Key(key::Args),
    /// Verify the repository's structure, and optionally all data.
    Check(check::Args),
    /// Rebuild derived data (the index) from what the repository holds.
    Repair(repair::Args),
    /// Show or store the repository's retention policy.
    Policy(policy::Args),
    /// Keep a snapshot whatever the retention policy (until a date, or for good).
    Protect(protect::ProtectArgs),
    /// Remove the protection of a snapshot.
    Unprotect(protect::UnprotectArgs),
    /// Sizes, deduplication and compression of the repository.
    Stats(stats::Args),
    /// Remove snapshots by a retention policy (keeps a year of history unless told otherwise).
    Forget(forget::Args),
    /// Give back the space of data that no snapshot uses (safe beside running backups).
    Prune(prune::Args),
    /// Copy snapshots to another repository (an offsite copy), sending only what it lacks.
    Copy(copy::Args),
    /// Show or store the repository every backup is copied to.
    CopyTarget(copy_target::Args),
    /// Score a snapshot's changes against its parent (ransomware detection).
    Scan(scan::ScanArgs),
    /// Overrule the ransomware scan: mark a snapshot clean or suspicious.
    Mark(scan::MarkArgs),
    /// Show or store the URL that ransomware alerts are POSTed to.
    Notify(scan::NotifyArgs),
    /// Host repositories for clients that add backups but cannot destroy them.
    Serve(serve::Args),
    /// Prove a snapshot restorable: restore a sample of its files and compare them (a restore test).
    VerifyRestore(verify::Args),
    /// Run the jobs of the configuration file on their schedules (scheduled backups).
    Agent(agent::AgentArgs),
    /// Run one job of the configuration file now.
    Run(agent::RunArgs),
    /// How each job of the configuration file is doing (exit 5 when one needs attention).
    Status(agent::StatusArgs),
    /// Check or start the agent's configuration file.
    Config(agent::ConfigArgs),
    /// Keep this repository's key in a key agent for a while (as ssh-agent
    /// does): commands then need no password and skip its key derivation.
    Unlock(unlock::UnlockArgs),
    /// Make the key agent forget this repository's key (or every key).
    Lock(unlock::LockArgs),
    /// The key agent itself (started by `unlock`).
    #[command(hide = true)]
    KeyAgent(unlock::KeyAgentArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(docs::CompletionsArgs),
    /// Print the man page (or write every page into a folder with --dir).
    Man(docs::ManArgs),
}

/// Where the default repository and its key live.
pub struct Defaults {
    pub repo: PathBuf,
    pub key_file: PathBuf,
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// rewind's cache directory: `$XDG_CACHE_HOME/rewind`, else
/// `$HOME/.cache/rewind`; None when neither names an absolute path (never a
/// directory relative to wherever rewind happens to run).
pub fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache"))
                .filter(|p| p.is_absolute())
        })
        .map(|c| c.join("rewind"))
}

/// `$XDG_CONFIG_HOME`, else `~/.config`.
pub fn config_home() -> PathBuf {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".config"))
}

pub fn defaults() -> Defaults {
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".local/share"));
    let config = config_home();
    Defaults {
        repo: data.join("rewind/repo"),
        key_file: config.join("rewind/default-repo.password"),
    }
}

impl Global {
    /// The repository location and whether it is the default one.
    pub fn location(&self) -> (PathBuf, bool) {
        match &self.repo {
            Some(p) => (p.clone(), false),
            None => (defaults().repo, true),
        }
    }

    /// The password from the environment or a file, if one is given.
    pub fn password_from_env(&self) -> Result<Option<Vec<u8>>> {
        if let Some(f) = &self.password_file {
            let s = std::fs::read(f)
                .with_context(|| format!("cannot read password file {}", f.display()))?;
            return Ok(Some(first_line(&s)));
        }
        if let Some(cmd) = std::env::var_os("REWIND_PASSWORD_COMMAND").filter(|c| !c.is_empty()) {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(&cmd)
                .stderr(std::process::Stdio::inherit())
                .output()
                .with_context(|| format!("cannot run REWIND_PASSWORD_COMMAND {cmd:?}"))?;
            if !out.status.success() {
                bail!("REWIND_PASSWORD_COMMAND {cmd:?} failed ({})", out.status);
            }
            return Ok(Some(first_line(&out.stdout)));
        }
        if let Some(p) = std::env::var_os("REWIND_PASSWORD") {
            return Ok(Some(p.into_encoded_bytes()));
        }
        Ok(None)
    }

    /// The password to open the repository: environment, the default
    /// repository's key file, or a prompt.
    pub fn password(&self) -> Result<Vec<u8>> {
        if let Some(p) = self.password_from_env()? {
            return Ok(p);
        }
        let (_, is_default) = self.location();
        if is_default {
            let kf = defaults().key_file;
            if let Ok(s) = std::fs::read(&kf) {
                return Ok(first_line(&s));
            }
        }
        prompt("Repository password: ")
    }

    /// The storage backend of the repository location (a path, `local:`
    /// or `s3:` URL).
    pub fn backend(&self) -> Result<Arc<dyn Backend>> {
        let (path, _) = self.location();
        let location = match path.to_str() {
            Some(s) => rewind_backends::Location::parse(s)?,
            None => rewind_backends::Location::Local(path),
        };
        let mut options = rewind_backends::Options::new();
        for o in &self.options {
            let (k, v) = rewind_backends::parse_option(o)?;
            options.insert(k, v);
        }
        if let Some(f) = &self.token_file {
            options
                .entry("rest.token-file".into())
                .or_insert_with(|| f.display().to_string());
        }
        let cache = if self.no_cache { None } else { cache_dir() };
        Ok(rewind_backends::open_cached(
            &location,
            &options,
            cache.as_deref(),
        )?)
    }

    /// Opens the repository.
    pub fn open(&self) -> Result<Repository> {
        self.open_with(true)
    }

    /// Opens the repository with its password, never the key agent's key
    /// (`key` commands: which password is in use matters there).
    pub fn open_with_password(&self) -> Result<Repository> {
        self.open_with(false)
    }

    fn open_with(&self, agent: bool) -> Result<Repository> {
        // Settings checked before any password is asked for.
        self.memory_budget()?;
        self.compression_level()?;
        let backend = self.backend()?;
        let location = backend.location();
        // No password prompt for a location that holds no repository.
        let config = Repository::probe(&*backend)
            .with_context(|| format!("cannot open repository {location}"))?;
        let from_agent = if agent {
            unlock::open_from_agent(backend.clone(), &config.id)
                .with_context(|| format!("cannot open repository {location}"))?
        } else {
            None
        };
        let mut repo = match from_agent {
            Some(repo) => repo,
            None => {
                let password = self.password()?;
                Repository::open(backend, &password)
                    .with_context(|| format!("cannot open repository {location}"))?
            }
        };
        self.configure(&mut repo)?;
        Ok(repo)
    }

    /// Applies --max-memory (and the cache) to a repository's index, and
    /// --compression to what it writes.
    pub fn configure(&self, repo: &mut Repository) -> Result<()> {
        let budget = self.memory_budget()?;
        if let Some(cache) = (!self.no_cache).then(cache_dir).flatten() {
            repo.set_index_table(&cache, budget);
        }
        repo.set_compression(self.compression_level()?);
        Ok(())
    }

    /// --compression, checked.
    pub fn compression_level(&self) -> Result<i32> {
        compression_level(&self.compression).map_err(|why| usage(format!("--compression {why}")))
    }

    /// --max-memory, checked.
    pub fn memory_budget(&self) -> Result<u64> {
        match rewind_core::check::parse_size(&self.max_memory) {
            Some(n) if n >= 1 << 20 => Ok(n),
            _ => Err(usage(format!(
                "--max-memory {:?}: give a size with K, M, G or T (KiB, MiB, ...), at least 1M, e.g. 512M",
                self.max_memory
            ))),
        }
    }
}

/// A compression setting (`--compression`, a job's `compression`): its zstd
/// level, or [`rewind_core::format::NO_COMPRESSION`]; the error says what
/// is wrong with `s`.
pub fn compression_level(s: &str) -> std::result::Result<i32, String> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "default" | "auto" => rewind_core::repository::COMPRESSION_LEVEL,
        "fast" => 1,
        "high" => 9,
        "off" | "none" => rewind_core::format::NO_COMPRESSION,
        n => match n.parse::<i32>() {
            Ok(n @ 1..=19) => n,
            _ => {
                return Err(format!(
                    "{s:?}: give default, fast, high, off, or a zstd level from 1 to 19"
                ))
            }
        },
    })
}

/// Parses `500G`, `64MiB`, `1T` (binary units; `check`'s syntax), more than 0.
pub fn parse_size(s: &str) -> Result<u64> {
    match rewind_core::check::parse_size(s) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(usage(format!(
            "size {s:?}: give a number with K, M, G or T (KiB, MiB, ...), more than 0, e.g. 500G"
        ))),
    }
}

pub fn first_line(s: &[u8]) -> Vec<u8> {
    let end = s.iter().position(|&b| b == b'\n').unwrap_or(s.len());
    let line = &s[..end];
    line.strip_suffix(b"\r").unwrap_or(line).to_vec()
}

/// A usage error (exit code 2): wrong or conflicting arguments.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(rewind_core::Error::InvalidInput(msg.into()))
}

/// Asks for a password on the terminal.
pub fn prompt(label: &str) -> Result<Vec<u8>> {
    if !std::io::stdin().is_terminal() {
        bail!("no password given: set REWIND_PASSWORD_FILE, REWIND_PASSWORD_COMMAND or REWIND_PASSWORD, or run on a terminal to be asked");
    }
    let p = rpassword::prompt_password(label).context("cannot read the password")?;
    Ok(p.into_bytes())
}

/// Asks for a new password twice.
pub fn prompt_new(label: &str) -> Result<Vec<u8>> {
    let a = prompt(label)?;
    let b = prompt("Repeat it: ")?;
    if a != b {
        bail!("the two passwords differ; nothing was changed");
    }
    if a.is_empty() {
        bail!("an empty password is not allowed");
    }
    Ok(a)
}

/// Every readable snapshot; damaged snapshot files are named on stderr and
/// left out, so one damaged file does not hide the others.
pub fn load_snapshots(repo: &Repository) -> Result<Vec<(SnapshotId, SnapshotFile)>> {
    let (ok, damaged) = repo.snapshots_checked()?;
    for (name, e) in damaged {
        eprintln!(
            "warning: snapshot {name} cannot be read and is skipped: {e} (run `rewind check`)"
        );
    }
    Ok(ok)
}

/// Snapshot filters and point-in-time selection shared by commands.
#[derive(Args, Debug, Clone, Default)]
pub struct SelectArgs {
    /// Only snapshots of this host (repeatable).
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// Only snapshots with these tags (comma-separated: all of them; repeat for either).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Only snapshots of this path (repeatable).
    #[arg(long = "path")]
    pub paths: Vec<String>,
    /// Pick the newest snapshot at or before this time ("2026-03-01 14:00", "2026-03-01"; local time).
    #[arg(long = "as-of", value_name = "TIME")]
    pub as_of: Option<String>,
}

impl SelectArgs {
    pub fn filter(&self) -> SnapshotFilter {
        SnapshotFilter {
            hosts: self.hosts.clone(),
            tags: self.tags.clone(),
            paths: self.paths.clone(),
        }
    }

    /// Every readable snapshot that passes the host/tag/path filters, oldest first.
    pub fn matching(&self, repo: &Repository) -> Result<Vec<(SnapshotId, SnapshotFile)>> {
        let filter = self.filter();
        Ok(load_snapshots(repo)?
            .into_iter()
            .filter(|(_, s)| filter.matches(s))
            .collect())
    }

    /// Resolves a snapshot selector (id, `latest`, `@TIME`).
    pub fn resolve(&self, repo: &Repository, spec: &str) -> Result<(SnapshotId, SnapshotFile)> {
        let tz = jiff::tz::TimeZone::system();
        let as_of = self
            .as_of
            .as_deref()
            .map(|t| rewind_core::select::parse_time(t, &tz))
            .transpose()?;
        let (snaps, damaged) = repo.snapshots_checked()?;
        let (id, s) = rewind_core::select::select(&snaps, spec, as_of, &self.filter(), &tz)?;
        // `latest` or a time picks by date, and a snapshot that cannot be
        // read has none: it may be the one meant, so never pick another
        // one silently. An id names exactly one snapshot: it goes ahead.
        let t = spec.trim();
        let by_date = as_of.is_some() || t == "latest" || t.is_empty() || t.starts_with('@');
        // One stored before the picked snapshot began (by the storage's
        // clock, with a margin for clocks that differ) is older than it.
        let older = |name: &str| {
            let stored = repo
                .backend()
                .modified(rewind_core::backend::FileType::Snapshot, name);
            let margin = std::time::Duration::from_secs(600);
            matches!(stored, Ok(Some(at)) if jiff::Timestamp::try_from(at + margin).is_ok_and(|at| at < s.time))
        };
        let maybe_newer = damaged.iter().find(|(name, _)| !older(name));
        if let (true, Some((name, e))) = (by_date, maybe_newer) {
            anyhow::bail!(
                "snapshot file {name} cannot be read ({e}); it may be newer than snapshot {} \
                 that {spec:?} would pick, so none is chosen by date while it is damaged. \
                 Name the snapshot by its id (`rewind snapshots`), and see `rewind check`",
                id.short()
            );
        }
        for (name, e) in &damaged {
            eprintln!(
                "warning: snapshot {name} cannot be read and is skipped: {e} (run `rewind check`)"
            );
        }
        Ok((*id, s.clone()))
    }
}

/// Renders a core [`Progress`] while `work` runs: a bar on a terminal, JSON
/// lines with `--json`, nothing otherwise. Warnings go to stderr live.
pub fn with_progress<T>(
    global: &Global,
    verb: &str,
    progress: &Progress,
    work: impl FnOnce() -> T,
) -> T {
    let tty = crate::output::stdout_is_tty() && !global.json && !global.quiet;
    let json = global.json;
    let done = &std::sync::atomic::AtomicBool::new(false);
    // The work's end wakes the reporter at once (a plain sleep added up to
    // a tick, 100 ms, to every command).
    let (wake, woken) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || {
            let bar = tty.then(|| {
                let b = indicatif::ProgressBar::new(0);
                b.set_style(
                    indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}")
                        .expect("valid template")
                        .progress_chars("=> "),
                );
                b
            });
            let mut tick = 0u32;
            loop {
                let finished = done.load(Ordering::SeqCst);
                for w in progress.new_warnings() {
                    let line = format!("warning: {}: {}", w.path.display(), w.message);
                    match &bar {
                        Some(b) => b.suspend(|| eprintln!("{line}")),
                        None if json => eprintln!("{}", serde_json::json!({"message_type": "warning", "path": w.path.to_string_lossy(), "message": w.message})),
                        None => eprintln!("{line}"),
                    }
                }
                let (tf, tb, df, db) = (
                    progress.total_files.load(Ordering::Relaxed),
                    progress.total_bytes.load(Ordering::Relaxed),
                    progress.done_files.load(Ordering::Relaxed),
                    progress.done_bytes.load(Ordering::Relaxed),
                );
                if let Some(b) = &bar {
                    b.set_length(tb.max(db));
                    b.set_position(db);
                    let scanning = if progress.scan_done.load(Ordering::Relaxed) { String::new() } else { format!(" (scanning, {} found)", progress.scanned.load(Ordering::Relaxed)) };
                    b.set_message(format!("{verb} {df}/{tf} files{scanning}"));
                    b.tick();
                }
                if json && tick.is_multiple_of(10) && !finished {
                    // Never stops the work: a closed stdout is said by the summary.
                    let _ = writeln!(crate::output::stdout(), "{}", serde_json::json!({"message_type": "status", "files_done": df, "files_total": tf, "bytes_done": db, "bytes_total": tb, "scan_done": progress.scan_done.load(Ordering::Relaxed)}));
                }
                if finished {
                    if let Some(b) = bar {
                        b.finish_and_clear();
                    }
                    break;
                }
                tick += 1;
                // A message or a hang-up (the work ended): look again now.
                let _ = woken.recv_timeout(Duration::from_millis(100));
            }
        });
        // Stop the progress thread even if `work` panics, or the scope
        // would wait for it forever.
        struct Done<'a>(
            &'a std::sync::atomic::AtomicBool,
            std::sync::mpsc::Sender<()>,
        );
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
                let _ = self.1.send(());
            }
        }
        let _done = Done(done, wake);
        work()
    })
}
