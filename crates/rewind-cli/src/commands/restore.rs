//! `rewind restore`

use std::path::PathBuf;

use anyhow::Result;
use rewind_core::archiver::Progress;
use rewind_core::format::tree::NodeKind;
use rewind_core::restorer::{self, Overwrite, RestoreOptions, RestoreStart};

use super::{Global, SelectArgs};
use crate::output::bytes;

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum OverwriteArg {
    Never,
    IfChanged,
    Always,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// SNAPSHOT or SNAPSHOT:/PATH (id, `latest` or @TIME).
    #[arg(required_unless_present = "last_clean")]
    pub snapshot: Option<String>,
    /// Restore the newest snapshot before the first one that looks like a
    /// ransomware attack (in the group chosen with --host/--path/--tag).
    #[arg(long, conflicts_with = "snapshot")]
    pub last_clean: bool,
    /// Directory to restore into.
    #[arg(short, long, required_unless_present = "to")]
    pub target: Option<PathBuf>,
    /// Restore elsewhere than a folder: a mail backup to a mailbox
    /// (imap://USER@HOST[/FOLDER]) or a Maildir (maildir:DIR); files to an
    /// rclone remote (rclone:REMOTE:PATH).
    #[arg(long, conflicts_with_all = ["target", "delete", "includes", "excludes", "verify"])]
    pub to: Option<String>,
    /// Restore only paths matching (gitignore syntax, snapshot paths; repeatable).
    #[arg(short, long = "include")]
    pub includes: Vec<String>,
    /// Do not restore paths matching (repeatable).
    #[arg(short, long = "exclude")]
    pub excludes: Vec<String>,
    /// What to do with files that exist in the target.
    #[arg(long, value_enum, default_value = "if-changed")]
    pub overwrite: OverwriteArg,
    /// Remove files in the target that the snapshot lacks.
    #[arg(long)]
    pub delete: bool,
    /// Read every restored file back and compare it with the snapshot.
    #[arg(long)]
    pub verify: bool,
    /// Show what would be done.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// A path inside a snapshot: absolute, clean, without `..`.
fn snapshot_path(s: &str) -> Result<PathBuf> {
    let mut out = PathBuf::from("/");
    for c in std::path::Path::new(s).components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::ParentDir => {
                return Err(super::usage(format!(
                    "{s:?}: a path in a snapshot cannot contain .."
                )))
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The snapshot `--last-clean` means, said on stderr with why.
fn last_clean(
    repo: &rewind_core::repository::Repository,
    select: &SelectArgs,
    global: &Global,
) -> Result<(
    rewind_core::id::SnapshotId,
    rewind_core::format::snapshot::SnapshotFile,
)> {
    let group = select.matching(repo)?;
    let mut groups: Vec<(String, Vec<String>)> = group
        .iter()
        .map(|(_, s)| (s.hostname.clone(), s.paths.clone()))
        .collect();
    groups.sort();
    groups.dedup();
    if groups.len() > 1 {
        let list: Vec<String> = groups
            .iter()
            .map(|(h, p)| format!("--host {h} --path {}", p.join(" --path ")))
            .collect();
        return Err(super::usage(format!(
            "--last-clean looks at one machine's backups of the same paths, and {} groups match; choose one: {}",
            groups.len(),
            list.join("; ")
        )));
    }
    let Some((clean, bad)) = rewind_core::scan::last_clean(&group) else {
        if group.is_empty() {
            anyhow::bail!(rewind_core::Error::SnapshotNotFound(
                "the given --host/--path/--tag".into()
            ));
        }
        anyhow::bail!(
            "the oldest snapshot of this group is already suspicious: there is no clean snapshot before it"
        );
    };
    let snap = group
        .iter()
        .find(|(id, _)| *id == clean)
        .map(|(_, s)| s.clone())
        .expect("chosen from the group");
    if !global.quiet {
        match bad.and_then(|b| group.iter().find(|(id, _)| *id == b)) {
            Some((bid, bs)) => eprintln!(
                "last clean snapshot: {} of {}, the one before {} of {}, which looks like an attack ({})",
                clean.short(),
                crate::output::local_time(snap.time),
                bid.short(),
                crate::output::local_time(bs.time),
                bs.scan
                    .as_ref()
                    .and_then(|r| r.reasons.first().cloned())
                    .unwrap_or_else(|| "marked suspicious".into())
            ),
            None => eprintln!(
                "no snapshot of this group looks like an attack; the newest, {}, is the last clean one",
                clean.short()
            ),
        }
    }
    Ok((clean, snap))
}

/// `--to rclone:REMOTE:PATH`: the files of a snapshot (or of a folder in
/// it) to a remote.
fn restore_remote(
    args: &Args,
    global: &Global,
    to: &str,
    spec: &str,
    sub: Option<PathBuf>,
) -> Result<u8> {
    if args.dry_run {
        return Err(super::usage("--dry-run is not supported with --to"));
    }
    let repo = global.open()?;
    let (id, snap) = if args.last_clean {
        last_clean(&repo, &args.select, global)?
    } else {
        args.select.resolve(&repo, spec)?
    };
    let tree = match sub.as_deref().filter(|p| *p != std::path::Path::new("/")) {
        None => snap.tree,
        Some(p) => match restorer::find_node(&repo, &snap.tree, p)? {
            Some(rewind_core::format::tree::Node {
                kind: NodeKind::Dir { subtree },
                ..
            }) => subtree,
            _ => {
                return Err(super::usage(format!(
                    "{} is not a folder of snapshot {}: --to rclone: restores folders",
                    p.display(),
                    id.short()
                )))
            }
        },
    };
    let done = crate::rclone::restore_to(&repo, &tree, to)?;
    if global.json {
        outln!(
            "{}",
            serde_json::json!({"message_type": "summary", "snapshot_id": id.to_hex(), "files_restored": done.files, "dirs": done.dirs, "bytes_written": done.bytes})
        );
    } else if !global.quiet {
        outln!(
            "restored {} files ({}) in {} folders to {}",
            done.files,
            bytes(done.bytes),
            done.dirs,
            crate::rclone::location(to.trim_start_matches("rclone:"))
        );
    }
    Ok(crate::exit::OK)
}

/// `--to imap://…` or `--to maildir:DIR`: the messages of a mail backup.
fn restore_mail(
    args: &Args,
    global: &Global,
    to: &str,
    spec: &str,
    sub: Option<PathBuf>,
) -> Result<u8> {
    if crate::rclone::is_rclone(to) {
        return restore_remote(args, global, to, spec, sub);
    }
    let target =
        crate::imap::restore::MailTarget::parse(to).map_err(|e| super::usage(e.to_string()))?;
    let repo = global.open()?;
    let (id, snap) = if args.last_clean {
        last_clean(&repo, &args.select, global)?
    } else {
        args.select.resolve(&repo, spec)?
    };
    let secret = match &target {
        crate::imap::restore::MailTarget::Imap(url) => Some(crate::imap::secret(url)?),
        crate::imap::restore::MailTarget::Maildir(_) => None,
    };
    if args.dry_run {
        return Err(super::usage("--dry-run is not supported with --to"));
    }
    let done = crate::imap::restore::restore(
        &repo,
        &snap.tree,
        sub.as_deref().filter(|p| *p != std::path::Path::new("/")),
        &target,
        secret.as_deref(),
    )?;
    if global.json {
        outln!(
            "{}",
            serde_json::json!({"message_type": "summary", "snapshot_id": id.to_hex(), "folders": done.folders, "messages_restored": done.messages, "messages_already_there": done.already_there, "bytes": done.bytes})
        );
    } else if !global.quiet {
        outln!(
            "restored {} messages ({}) into {} folders of {to}; {} were already there",
            done.messages,
            bytes(done.bytes),
            done.folders,
            done.already_there
        );
    }
    Ok(crate::exit::OK)
}

pub fn run(args: &Args, global: &Global) -> Result<u8> {
    let spec_arg = args.snapshot.as_deref().unwrap_or("");
    let (spec, sub) = match spec_arg.find(":/") {
        Some(i) => (&spec_arg[..i], Some(snapshot_path(&spec_arg[i + 1..])?)),
        None => (spec_arg, None),
    };
    if let Some(to) = &args.to {
        return restore_mail(args, global, to, spec, sub);
    }
    let target = args
        .target
        .clone()
        .expect("clap requires --target without --to");
    if args.delete && (!args.includes.is_empty() || !args.excludes.is_empty()) {
        return Err(super::usage("--delete cannot be combined with --include or --exclude: it would remove what the filters leave out"));
    }
    // Before the password: a target that cannot be one is a usage error.
    if let Ok(md) = std::fs::metadata(&target) {
        if !md.is_dir() {
            let what = if md.is_file() {
                "a file"
            } else {
                "something else"
            };
            return Err(super::usage(format!(
                "--target {} is {what}, not a directory",
                target.display()
            )));
        }
    }
    let repo = global.open()?;
    let (id, snap) = if args.last_clean {
        last_clean(&repo, &args.select, global)?
    } else {
        args.select.resolve(&repo, spec)?
    };
    let start = match &sub {
        None => RestoreStart::Tree {
            tree: snap.tree,
            snap_path: PathBuf::from("/"),
        },
        Some(p) => match restorer::find_node(&repo, &snap.tree, p)? {
            None => RestoreStart::Tree {
                tree: snap.tree,
                snap_path: PathBuf::from("/"),
            },
            Some(n) => match &n.kind {
                NodeKind::Dir { subtree } => RestoreStart::Tree {
                    tree: *subtree,
                    snap_path: p.clone(),
                },
                _ => RestoreStart::Node {
                    node: n,
                    snap_path: p.clone(),
                },
            },
        },
    };
    let opts = RestoreOptions {
        target: target.clone(),
        overwrite: match args.overwrite {
            OverwriteArg::Never => Overwrite::Never,
            OverwriteArg::IfChanged => Overwrite::IfChanged,
            OverwriteArg::Always => Overwrite::Always,
        },
        delete: args.delete,
        verify: args.verify,
        dry_run: args.dry_run,
        includes: args.includes.clone(),
        excludes: args.excludes.clone(),
        // An eighth of --max-memory for the plan (64 MiB, about 130,000
        // files, by default): a larger restore goes a window at a time.
        plan_memory: Some(global.memory_budget()? / 8),
    };
    if !global.quiet && !global.json {
        eprintln!(
            "restoring snapshot {} of {} to {}",
            id.short(),
            crate::output::local_time(snap.time),
            target.display()
        );
    }
    let progress = Progress::default();
    let stats = super::with_progress(global, "restoring", &progress, || {
        restorer::restore(&repo, start, &opts, &progress)
    })?;
    for e in &stats.errors {
        eprintln!("error: {}: {}", e.path.display(), e.message);
    }
    // A closed stdout ends the summary, not the exit code that says
    // whether everything was restored.
    let print = || -> Result<()> {
        if global.json {
            outln!(
                "{}",
                serde_json::json!({"message_type": "summary", "snapshot_id": id.to_hex(), "dry_run": args.dry_run, "files_restored": stats.files_restored, "files_skipped": stats.files_skipped, "files_failed": stats.files_failed, "dirs": stats.dirs, "others": stats.others, "bytes_written": stats.bytes_written, "deleted": stats.deleted, "verified": stats.verified, "errors": stats.errors.len()})
            );
        } else if !global.quiet {
            let verb = if args.dry_run {
                "would restore"
            } else {
                "restored"
            };
            outln!(
                "{verb} {} files ({}), {} dirs, {} other entries; {} files already up to date{}",
                stats.files_restored,
                bytes(stats.bytes_written),
                stats.dirs,
                stats.others,
                stats.files_skipped,
                if stats.files_failed > 0 {
                    format!("; {} files FAILED", stats.files_failed)
                } else {
                    String::new()
                }
            );
            if args.delete {
                outln!("deleted {} entries not in the snapshot", stats.deleted);
            }
            if args.verify {
                outln!("verified {} files", stats.verified);
            }
        }
        Ok(())
    };
    crate::output::unless_closed(print())?;
    if stats.errors.is_empty() {
        Ok(crate::exit::OK)
    } else {
        eprintln!(
            "restore finished with {} errors (listed above); everything else was restored",
            stats.errors.len()
        );
        Ok(crate::exit::FATAL)
    }
}
