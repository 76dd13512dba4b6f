//! `rewind scan SNAPSHOT` and `rewind mark clean|suspicious SNAPSHOT`: the
//! ransomware scan after the fact, and a person's verdict over it.

use anyhow::Result;
use rewind_core::format::snapshot::SnapshotFile;
use rewind_core::id::SnapshotId;
use rewind_core::repository::Repository;
use rewind_core::scan::{self, ScanResult, Verdict};

use super::{Global, SelectArgs};
use crate::output::local_time;

#[derive(clap::Args, Debug)]
pub struct ScanArgs {
    /// The snapshot to score against the one before it (id, `latest`, @TIME).
    pub snapshot: String,
    #[command(flatten)]
    pub select: SelectArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum VerdictArg {
    Clean,
    Suspicious,
}

#[derive(clap::Args, Debug)]
pub struct MarkArgs {
    /// `clean` (a false alarm: retention and --last-clean stop treating it
    /// as an attack) or `suspicious`.
    #[arg(value_enum)]
    pub verdict: VerdictArg,
    /// The snapshot (id, `latest`, @TIME).
    pub snapshot: String,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// Prints a suspicious verdict loudly on stderr.
pub fn warn(id: &SnapshotId, r: &ScanResult) {
    eprintln!();
    eprintln!(
        "WARNING: snapshot {} looks like a ransomware attack",
        id.short()
    );
    for reason in &r.reasons {
        eprintln!("  - {reason}");
    }
    for rule in r.rules.iter().filter(|x| x.fired) {
        eprintln!(
            "  rule {} fired: {} against the line: {}",
            rule.name,
            (rule.value * 1000.0).round() / 1000.0,
            rule.threshold
        );
    }
    if !r.top_paths.is_empty() {
        eprintln!("  for example:");
        for p in &r.top_paths {
            eprintln!("    {p}");
        }
    }
    eprintln!(
        "  The snapshot is saved (it is evidence). Restore the state before it with\n  \
         `rewind restore --last-clean --target DIR`; if this is a false alarm,\n  \
         `rewind mark clean {}`.",
        id.short()
    );
}

/// The snapshot before `id` in its group: its recorded parent if it is still
/// there, else the newest older snapshot of the same host and paths.
pub fn previous(
    repo: &Repository,
    id: &SnapshotId,
    s: &SnapshotFile,
) -> Result<Option<(SnapshotId, SnapshotFile)>> {
    let (all, _) = repo.snapshots_checked()?;
    if let Some(p) = s.parent {
        if let Some(found) = all
            .iter()
            .find(|(pid, ps)| *pid == p || ps.original == Some(p))
        {
            return Ok(Some(found.clone()));
        }
    }
    Ok(all
        .into_iter()
        .filter(|(pid, ps)| {
            pid != id && ps.hostname == s.hostname && ps.paths == s.paths && ps.time < s.time
        })
        .max_by(|a, b| a.1.time.cmp(&b.1.time)))
}

pub fn scan(args: &ScanArgs, global: &Global) -> Result<u8> {
    let repo = global.open()?;
    let (id, s) = args.select.resolve(&repo, &args.snapshot)?;
    let Some((pid, parent)) = previous(&repo, &id, &s)? else {
        if global.json {
            outln!(
                "{}",
                serde_json::json!({"snapshot_id": id.to_hex(), "scan": null, "message": "no earlier snapshot of the same host and paths"})
            );
        } else {
            outln!(
                "snapshot {} is the first of its host and paths: nothing to compare it with",
                id.short()
            );
        }
        return Ok(crate::exit::OK);
    };
    let files_before =
        parent.summary.files_new + parent.summary.files_changed + parent.summary.files_unchanged;
    let sizes = scan::Sizes::new(&repo)?;
    let mut r = scan::scan(&repo, &sizes, &parent.tree, &s.tree, files_before)?;
    // A slow attack: the earlier snapshots of its group count too.
    let earlier: Vec<(SnapshotId, SnapshotFile)> = repo
        .snapshots()?
        .into_iter()
        .filter(|(pid, ps)| {
            *pid != id && ps.hostname == s.hostname && ps.paths == s.paths && ps.time < s.time
        })
        .collect();
    let files_now = s.summary.files_new + s.summary.files_changed + s.summary.files_unchanged;
    scan::accumulate(&mut r, &earlier, files_now);
    // A closed stdout ends what is printed, not the verdict's exit code.
    let print = || -> Result<()> {
        if global.json {
            outln!(
                "{}",
                serde_json::json!({"snapshot_id": id.to_hex(), "parent_id": pid.to_hex(), "scan": r, "stored": s.scan})
            );
        } else {
            outln!(
                "snapshot {} of {} against {} of {}: {}",
                id.short(),
                local_time(s.time),
                pid.short(),
                local_time(parent.time),
                r.verdict
            );
            let c = &r.counts;
            outln!(
                "  {} modified, {} added, {} removed, {} moved; {} examined",
                c.modified,
                c.added,
                c.removed,
                c.moved,
                c.examined
            );
            if r.verdict == Verdict::Suspicious {
                warn(&id, &r);
            } else {
                for reason in &r.reasons {
                    outln!("  - {reason}");
                }
            }
            // (the rules that fired are in the warning)
            for rule in r.rules.iter().filter(|x| !x.fired) {
                outln!(
                    "  rule {}: {} (did not fire; the line: {})",
                    rule.name,
                    (rule.value * 1000.0).round() / 1000.0,
                    rule.threshold
                );
            }
            if let Some(o) = s.scan.as_ref().and_then(|x| x.overruled.as_ref()) {
                outln!(
                    "  marked {} by {} on {}",
                    o.verdict,
                    o.by,
                    local_time(o.time)
                );
            }
        }
        Ok(())
    };
    crate::output::unless_closed(print())?;
    let effective = match s.scan.as_ref().and_then(|x| x.overruled.as_ref()) {
        Some(o) => o.verdict,
        None => r.verdict,
    };
    Ok(if effective == Verdict::Suspicious {
        crate::exit::SUSPICIOUS
    } else {
        crate::exit::OK
    })
}

pub fn mark(args: &MarkArgs, global: &Global) -> Result<u8> {
    let repo = global.open()?;
    let (id, _) = args.select.resolve(&repo, &args.snapshot)?;
    let verdict = match args.verdict {
        VerdictArg::Clean => Verdict::Clean,
        VerdictArg::Suspicious => Verdict::Suspicious,
    };
    let by = format!(
        "{}@{}",
        rewind_core::archiver::local_username(),
        rewind_core::archiver::local_hostname()
    );
    let new = repo.set_verdict(&id, verdict, &by)?;
    if global.json {
        outln!(
            "{}",
            serde_json::json!({"snapshot_id": new.to_hex(), "previous_id": id.to_hex(), "verdict": verdict})
        );
    } else if !global.quiet {
        outln!(
            "snapshot {} marked {verdict} (now {})",
            id.short(),
            new.short()
        );
    }
    Ok(crate::exit::OK)
}

#[derive(clap::Args, Debug)]
pub struct NotifyArgs {
    #[command(subcommand)]
    pub action: NotifyAction,
}

#[derive(clap::Subcommand, Debug)]
pub enum NotifyAction {
    /// Show the stored alert URL.
    Show,
    /// Store the URL that backups POST an alert to when a snapshot looks
    /// like ransomware (a test alert is sent first).
    Set {
        /// An http:// or https:// URL.
        url: String,
    },
    /// Remove it.
    Unset,
}

pub fn notify(args: &NotifyArgs, global: &Global) -> Result<u8> {
    let repo = global.open()?;
    match &args.action {
        NotifyAction::Show => match repo.notify_url()? {
            Some(u) => outln!("alerts go to {u}"),
            None => outln!("no alert URL stored (rewind notify set URL, or backup --notify-url)"),
        },
        NotifyAction::Set { url } => {
            let test = serde_json::json!({
                "message_type": "test",
                "repository": repo.backend().location(),
                "message": "rewind will POST here when a backup looks like a ransomware attack",
            });
            rewind_backends::notify::post_json(url, &test)?;
            repo.set_notify_url(Some(url.clone()))?;
            if !global.quiet {
                outln!("a test alert was delivered; alerts now go to {url}");
            }
        }
        NotifyAction::Unset => {
            repo.set_notify_url(None)?;
            if !global.quiet {
                outln!("no alert URL stored");
            }
        }
    }
    Ok(crate::exit::OK)
}
