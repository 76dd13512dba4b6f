//! `rewind backup`

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result};
use rewind_core::archiver::{
    self, BackupOptions, BackupOutcome, ParentChoice, Progress, StreamSource,
};

use super::Global;
use crate::output::bytes;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Files and directories to back up.
    pub paths: Vec<PathBuf>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Host name to record (default: this machine's).
    #[arg(long)]
    pub host: Option<String>,
    /// Exclude paths matching this pattern (gitignore syntax; repeatable).
    #[arg(short = 'e', long = "exclude")]
    pub excludes: Vec<String>,
    /// Read exclude patterns from a file, one per line.
    #[arg(long = "exclude-file")]
    pub exclude_files: Vec<PathBuf>,
    /// Skip directories that contain a file of this name.
    #[arg(long = "exclude-if-present")]
    pub exclude_if_present: Vec<String>,
    /// Skip cache directories marked with a CACHEDIR.TAG.
    #[arg(long)]
    pub exclude_caches: bool,
    /// Do not cross into other file systems.
    #[arg(short = 'x', long)]
    pub one_file_system: bool,
    /// Do everything but write to the repository.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Use this snapshot as the parent (default: the newest of the same host and paths).
    #[arg(long)]
    pub parent: Option<String>,
    /// Read every file again, even if unchanged.
    #[arg(short, long)]
    pub force: bool,
    /// Record this time instead of now (for imports).
    #[arg(long)]
    pub time: Option<String>,
    /// Back up standard input as one file.
    #[arg(long, conflicts_with = "stdin_from_command")]
    pub stdin: bool,
    /// File name for --stdin or --stdin-from-command.
    #[arg(long, default_value = "stdin")]
    pub stdin_filename: String,
    /// Back up the output of a command (after --); fails without a snapshot if the command fails.
    #[arg(long)]
    pub stdin_from_command: bool,
    /// After the backup, copy the new snapshot to this repository too (an
    /// offsite copy, with its own password and retention).
    #[arg(long, value_name = "LOCATION")]
    pub copy_to: Option<String>,
    /// Password file of the --copy-to repository (else REWIND_TO_PASSWORD, or a prompt).
    #[arg(long, env = "REWIND_TO_PASSWORD_FILE", value_name = "FILE")]
    pub copy_to_password_file: Option<PathBuf>,
    /// A backend option of the --copy-to repository, KEY=VALUE (repeatable).
    #[arg(long = "copy-to-option", value_name = "KEY=VALUE")]
    pub copy_to_options: Vec<String>,
    /// Do not copy to the stored copy target (`rewind copy-target`) this time.
    #[arg(long, conflicts_with = "copy_to")]
    pub no_copy: bool,
    /// Do not score the changes against the parent snapshot (ransomware
    /// detection).
    #[arg(long)]
    pub no_scan: bool,
    /// When the backup looks like a ransomware attack, POST a JSON alert here.
    #[arg(long, env = "REWIND_NOTIFY_URL", value_name = "URL")]
    pub notify_url: Option<String>,
    /// The command for --stdin-from-command.
    #[arg(last = true)]
    pub command: Vec<String>,
}

pub fn run(args: &Args, global: &Global) -> Result<u8> {
    let streaming = args.stdin || args.stdin_from_command;
    if streaming && !args.paths.is_empty() {
        return Err(super::usage(
            "--stdin and --stdin-from-command take no paths",
        ));
    }
    if !streaming && args.paths.is_empty() {
        return Err(super::usage(
            "nothing to back up: give one or more paths, --stdin, or --stdin-from-command -- CMD",
        ));
    }
    if args.stdin_from_command && args.command.is_empty() {
        return Err(super::usage("--stdin-from-command needs a command after --, e.g. `rewind backup --stdin-from-command -- pg_dump mydb`"));
    }
    let other = OtherSource::of(&args.paths)?;
    if args.dry_run && global.repo.is_none() && !super::defaults().repo.join("config").exists() {
        return Err(super::usage("--dry-run compares with a repository, and the default one does not exist yet: run `rewind backup` without --dry-run first"));
    }
    // Exclude files before the repository: a wrong name is said at once.
    let excludes = read_excludes(args)?;
    if super::init::ensure_default_repository(global)? && !global.quiet && !global.json {
        eprintln!();
    }
    // While the key is derived (a core for 0.1-0.2 s), other threads read
    // the sources' metadata in for the scan; stopped when the backup starts.
    let warm_up =
        (!streaming && other.is_none()).then(|| rewind_core::source::warm_up(&args.paths));
    let repo = global.open()?;
    // The copy target is opened first: a wrong password or a missing
    // repository is said before the backup, not after it.
    // The settings are read once, before the backup: the copy target now,
    // the alert URL after the scan. (A damaged settings file is passed
    // over for the newest readable one; only storage errors stop here.)
    let settings = if args.dry_run {
        None
    } else {
        repo.settings()
            .context("cannot read the repository's settings")?
    };
    let stored = if args.copy_to.is_none() && !args.no_copy {
        settings.as_ref().and_then(|s| s.copy_to.clone())
    } else {
        None
    };
    let copy_to = open_copy_target(args, global, stored.as_ref(), &repo)?;
    let opts = options(args, excludes, global, &repo)?;
    drop(warm_up);
    // A mailbox's login or a remote's listing before the backup: a wrong
    // password or a bad remote is said now.
    let mut other = other.map(OtherSource::start).transpose()?;

    // Ctrl-C or SIGTERM from here on stops the backup at a safe point
    // (no snapshot, no running marker left); not during the password prompt.
    let progress = Progress::with_cancel(crate::interrupt::install());
    let outcome = if let Some(source) = other.as_mut() {
        super::with_progress(global, "backing up", &progress, || {
            archiver::backup_source(&repo, &opts, source.as_mut(), &progress)
        })?
    } else if streaming {
        run_stream(&repo, &opts, args, global, &progress)?
    } else {
        super::with_progress(global, "backing up", &progress, || {
            archiver::backup(&repo, &opts, &progress)
        })?
    };
    // A closed stdout ends what is printed, not the copy or the alert below.
    crate::output::unless_closed(print_summary(&outcome, global, args.dry_run))?;
    if let Some(e) = &outcome.scan_error {
        eprintln!("warning: the ransomware scan could not run ({e}); the snapshot is saved without a verdict (rewind scan ID tries again)");
    }
    let after = rewind_core::after_backup::run(
        &repo,
        &outcome,
        &rewind_core::after_backup::AfterBackup {
            copy_to: copy_to.as_ref(),
            notify_url: args
                .notify_url
                .clone()
                .or_else(|| settings.as_ref().and_then(|s| s.notify_url.clone())),
            deliver: &rewind_backends::notify::post_json,
        },
    );
    let mut copy_failed = false;
    if let (Some(copied), Some(dst), Some(id)) = (&after.copy, &copy_to, outcome.snapshot_id) {
        match copied {
            Ok(report) => crate::output::unless_closed(print_copied(report, dst, global))?,
            Err(e) => {
                copy_failed = true;
                eprintln!(
                    "error: snapshot {} is saved, but copying it to {} failed: {e} (run `rewind copy --to ...` to retry)",
                    id.short(),
                    dst.backend().location()
                );
            }
        }
    }
    if after.suspicious {
        if let (Some(id), Some(r)) = (outcome.snapshot_id, &outcome.snapshot.scan) {
            super::scan::warn(&id, r);
        }
        if let Some(Err(e)) = &after.alert {
            eprintln!("error: the alert could not be sent: {e}");
        }
        return Ok(crate::exit::SUSPICIOUS);
    }
    Ok(if copy_failed {
        crate::exit::FATAL
    } else if outcome.warnings.is_empty() && outcome.summary().errors == 0 {
        crate::exit::OK
    } else {
        crate::exit::PARTIAL
    })
}

/// A source that is not this machine's files: a mailbox or an rclone
/// remote, backed up on its own.
enum OtherSource {
    Mail(crate::imap::ImapUrl),
    Cloud(String),
}

impl OtherSource {
    /// The other source the paths name, if any (a usage error when it is
    /// mixed with anything else).
    fn of(paths: &[PathBuf]) -> Result<Option<OtherSource>> {
        let texts: Vec<String> = paths
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let other = |p: &String| crate::imap::is_imap(p) || crate::rclone::is_rclone(p);
        match texts.as_slice() {
            [one] if crate::imap::is_imap(one) => Ok(Some(OtherSource::Mail(
                crate::imap::ImapUrl::parse(one).map_err(|e| super::usage(e.to_string()))?,
            ))),
            [one] if crate::rclone::is_rclone(one) => Ok(Some(OtherSource::Cloud(one.clone()))),
            many if many.iter().any(other) => Err(super::usage(
                "back up a mailbox or an rclone remote on its own: one imap:// or rclone: source per backup, without files",
            )),
            _ => Ok(None),
        }
    }

    /// Logs in or lists.
    fn start(self) -> Result<Box<dyn archiver::TreeSource>> {
        Ok(match self {
            OtherSource::Mail(url) => {
                let secret = crate::imap::secret(&url)?;
                Box::new(crate::imap::backup::MailSource::connect(url, secret)?)
            }
            OtherSource::Cloud(spec) => Box::new(crate::rclone::RcloneSource::start(&spec)?),
        })
    }
}

/// Opens the repository each new snapshot is copied to (given, else the
/// stored copy target): before the backup, so that a wrong password or a
/// missing repository is said before, not after it.
fn open_copy_target(
    args: &Args,
    global: &Global,
    stored: Option<&rewind_core::format::policy::CopyTarget>,
    repo: &rewind_core::repository::Repository,
) -> Result<Option<rewind_core::repository::Repository>> {
    let mut target = match (&args.copy_to, stored, args.dry_run) {
        (_, _, true) => None,
        (Some(to), _, false) => Some(super::copy::open_destination(
            to,
            super::copy::PasswordFiles {
                explicit: args.copy_to_password_file.as_deref(),
                stored: None,
            },
            &args.copy_to_options,
            &repo.config().id,
        )?),
        (None, Some(t), false) => {
            let mut options: Vec<String> =
                t.options.iter().map(|(k, v)| format!("{k}={v}")).collect();
            options.extend(args.copy_to_options.iter().cloned());
            let stored_file = t.password_file.as_deref().map(std::path::Path::new);
            Some(
                super::copy::open_destination(
                    &t.location,
                    super::copy::PasswordFiles {
                        explicit: args.copy_to_password_file.as_deref(),
                        stored: stored_file,
                    },
                    &options,
                    &repo.config().id,
                )
                .with_context(|| {
                    format!(
                        "cannot open the stored copy target {} (back up without it with --no-copy)",
                        t.location
                    )
                })?,
            )
        }
        (None, None, false) => None,
    };
    // Its index within --max-memory, and its new data at --compression.
    if let Some(t) = &mut target {
        global.configure(t)?;
    }
    Ok(target)
}

/// The backup's options from the arguments.
fn options(
    args: &Args,
    excludes: Vec<String>,
    global: &Global,
    repo: &rewind_core::repository::Repository,
) -> Result<BackupOptions> {
    let mut opts = BackupOptions::new(args.paths.clone());
    if let Some(h) = &args.host {
        opts.hostname = h.clone();
    }
    opts.tags = args
        .tags
        .iter()
        .flat_map(|t| t.split(','))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    opts.excludes = excludes;
    opts.exclude_if_present = args.exclude_if_present.clone();
    opts.exclude_caches = args.exclude_caches;
    opts.one_file_system = args.one_file_system;
    opts.dry_run = args.dry_run;
    opts.skip_scan = args.no_scan;
    // An eighth of --max-memory for the scan's entries (64 MiB, about
    // 200,000 entries, by default): past it, directories are stored as
    // the scan goes.
    opts.scan_memory = Some(global.memory_budget()? / 8);
    let (repo_path, _) = global.location();
    if let Ok(p) = repo_path.canonicalize() {
        opts.exclude_paths.push(p);
    }
    if let Some(t) = &args.time {
        opts.time = Some(rewind_core::select::parse_time(
            t,
            &jiff::tz::TimeZone::system(),
        )?);
    }
    opts.parent = if args.force {
        ParentChoice::None
    } else if let Some(p) = &args.parent {
        let (id, _) = super::SelectArgs::default().resolve(repo, p)?;
        ParentChoice::Snapshot(id)
    } else {
        ParentChoice::Auto
    };
    Ok(opts)
}

/// The exclude patterns: given, and read from the exclude files.
fn read_excludes(args: &Args) -> Result<Vec<String>> {
    let mut excludes = args.excludes.clone();
    for f in &args.exclude_files {
        let text = std::fs::read_to_string(f)
            .map_err(|e| super::usage(format!("cannot read exclude file {}: {e}", f.display())))?;
        excludes.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
    }
    Ok(excludes)
}

fn run_stream(
    repo: &rewind_core::repository::Repository,
    opts: &BackupOptions,
    args: &Args,
    global: &Global,
    progress: &Progress,
) -> Result<BackupOutcome> {
    if args.stdin {
        let source = StreamSource {
            name: args.stdin_filename.clone(),
            reader: Box::new(std::io::stdin()),
            finish: Box::new(|| Ok(())),
        };
        return Ok(super::with_progress(
            global,
            "reading stdin",
            progress,
            || archiver::backup_stream(repo, opts, source, progress),
        )?);
    }
    let Some((prog, rest)) = args.command.split_first() else {
        return Err(super::usage("--stdin-from-command needs a command after --, e.g. `rewind backup --stdin-from-command -- pg_dump mydb`"));
    };
    let mut child = std::process::Command::new(prog)
        .args(rest)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {prog}"))?;
    let stdout: Box<dyn Read + Send> = Box::new(child.stdout.take().expect("piped stdout"));
    let cmdline = args.command.join(" ");
    let child = std::sync::Mutex::new(child);
    let finish = Box::new(|| {
        let status = child
            .lock()
            .expect("child")
            .wait()
            .map_err(|e| rewind_core::Error::io(format!("wait for {cmdline}"), e))?;
        if status.success() {
            Ok(())
        } else {
            Err(rewind_core::Error::CommandFailed {
                command: cmdline.clone(),
                status: status.to_string(),
            })
        }
    });
    let source = StreamSource {
        name: args.stdin_filename.clone(),
        reader: stdout,
        finish,
    };
    let r = super::with_progress(global, "reading command output", progress, || {
        archiver::backup_stream(repo, opts, source, progress)
    });
    if r.is_err() {
        let mut c = child.lock().expect("child");
        let _ = c.kill();
        let _ = c.wait();
    }
    Ok(r?)
}

fn print_copied(
    report: &rewind_core::copy::CopyReport,
    dst: &rewind_core::repository::Repository,
    global: &Global,
) -> Result<()> {
    if global.json {
        outln!(
            "{}",
            serde_json::json!({
                "message_type": "copied",
                "destination": dst.backend().location(),
                "snapshot_id": report.copied.first().and_then(|(_, d)| d.map(|d| d.to_hex())),
                "bytes_added_stored": report.bytes_added_stored,
            })
        );
    } else if !global.quiet {
        for (_, d) in &report.copied {
            if let Some(d) = d {
                outln!(
                    "copied to {} as snapshot {} ({} sent)",
                    dst.backend().location(),
                    d.short(),
                    bytes(report.bytes_added_stored)
                );
            }
        }
    }
    Ok(())
}

fn print_summary(o: &BackupOutcome, global: &Global, dry_run: bool) -> Result<()> {
    let s = o.summary();
    if global.json {
        outln!(
            "{}",
            serde_json::json!({
                "message_type": "summary",
                "snapshot_id": o.snapshot_id.map(|i| i.to_hex()),
                "dry_run": dry_run,
                "files_new": s.files_new, "files_changed": s.files_changed, "files_unchanged": s.files_unchanged,
                "dirs": s.dirs, "others": s.others, "bytes_read": s.bytes_read, "total_bytes": s.total_bytes,
                "blobs_added": s.blobs_added, "bytes_added_raw": s.bytes_added_raw, "bytes_added_stored": s.bytes_added_stored,
                "errors": s.errors, "duration_secs": s.duration_secs,
                "scan": o.snapshot.scan,
                "scan_error": o.scan_error,
                "warnings": o.warnings.iter().map(|w| serde_json::json!({"path": w.path.to_string_lossy(), "message": w.message})).collect::<Vec<_>>(),
            })
        );
        return Ok(());
    }
    if !global.quiet {
        outln!(
            "Files:       {} new, {} changed, {} unchanged",
            s.files_new,
            s.files_changed,
            s.files_unchanged
        );
        outln!("Dirs:        {}", s.dirs);
        outln!(
            "Read:        {} (of {} in the snapshot)",
            bytes(s.bytes_read),
            bytes(s.total_bytes)
        );
        outln!(
            "Added:       {} stored ({} before compression)",
            bytes(s.bytes_added_stored),
            bytes(s.bytes_added_raw)
        );
        outln!("Duration:    {:.2} s", s.duration_secs);
        match o.snapshot_id {
            Some(id) => outln!("snapshot {} saved", id.short()),
            None => outln!("dry run: nothing was saved"),
        }
    }
    if !o.warnings.is_empty() {
        eprintln!("warning: {} files or directories could not be read (listed above); the snapshot holds everything else", o.warnings.len());
    }
    Ok(())
}
