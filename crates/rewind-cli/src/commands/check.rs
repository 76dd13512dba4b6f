//! `rewind check`

use anyhow::Result;
use rewind_core::check::{self, CheckOptions};

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Also read and authenticate every pack.
    #[arg(long)]
    pub read_data: bool,
    /// Read only part of the data: n/m (e.g. 1/7), a percentage (10%) or a size (5GiB).
    /// Percentages and sizes continue where the previous run stopped, so
    /// repeated runs cover everything.
    #[arg(long, value_name = "SUBSET", conflicts_with = "read_data")]
    pub read_data_subset: Option<String>,
}

/// Where the rotating subset's cursor is kept; None without a cache
/// directory. The repository id is checked hex (`Config::parse`), so it
/// cannot name another path.
fn cursor_file(repo_id: &str) -> Option<std::path::PathBuf> {
    super::cache_dir().map(|c| c.join(format!("check-cursor-{repo_id}")))
}

/// Keeps the cursor for the next run; a failure only means that the next
/// run starts the rotation over, so it is a warning.
fn save_cursor(path: Option<&std::path::Path>, cursor: u64) {
    let Some(path) = path else {
        eprintln!(
            "warning: neither XDG_CACHE_HOME nor HOME names a directory, so the check cursor \
             is not kept: the next --read-data-subset run starts from the first pack again"
        );
        return;
    };
    let saved = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(path, cursor.to_string()));
    if let Err(e) = saved {
        eprintln!(
            "warning: cannot keep the check cursor in {}: {e}; the next --read-data-subset \
             run starts from the first pack again",
            path.display()
        );
    }
}

pub fn run(args: &Args, global: &Global) -> Result<u8> {
    let subset = args
        .read_data_subset
        .as_deref()
        .map(str::parse::<check::Subset>)
        .transpose()?;
    let repo = global.open()?;
    let cursor_path = cursor_file(&repo.config().id);
    let cursor = cursor_path
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let report = check::check(
        &repo,
        &CheckOptions {
            read_data: args.read_data,
            subset,
            cursor,
        },
    )?;
    if subset.is_some() {
        save_cursor(cursor_path.as_deref(), report.next_cursor);
    }
    // The verdict's exit code stands even when stdout was closed.
    let print = || -> Result<()> {
        if global.json {
            outln!(
                "{}",
                serde_json::json!({
                    "ok": report.is_ok(), "errors": report.errors, "notes": report.notes,
                    "affected": report.affected.iter().map(|a| serde_json::json!({"snapshot": a.snapshot.to_hex(), "path": a.path.to_string_lossy()})).collect::<Vec<_>>(),
                    "snapshots": report.snapshots, "packs": report.packs, "packs_read": report.packs_read, "blobs": report.blobs,
                    "repair_index": report.repair_index,
                    "damaged_packs": report.damaged_packs.iter().map(|p| p.to_hex()).collect::<Vec<_>>(),
                })
            );
        } else {
            for n in &report.notes {
                eprintln!("note: {n}");
            }
            for e in &report.errors {
                eprintln!("error: {e}");
            }
            if report.repair_index {
                eprintln!(
                    "The index is damaged or incomplete: run `rewind repair index` to rebuild it \
                     from the packs, then `rewind check` again."
                );
            }
            if !report.damaged_packs.is_empty() {
                eprintln!(
                    "{} packs are missing or damaged: run `rewind repair packs` to save every blob \
                     they still hold, then `rewind repair snapshots` so the rest restores.",
                    report.damaged_packs.len()
                );
            }
            if !report.affected.is_empty() {
                eprintln!("affected files:");
                for a in &report.affected {
                    eprintln!("  snapshot {}: {}", a.snapshot.short(), a.path.display());
                }
            }
            if !global.quiet {
                outln!(
                    "checked {} snapshots, {} packs ({} read), {} blobs: {}",
                    report.snapshots,
                    report.packs,
                    report.packs_read,
                    report.blobs,
                    if report.is_ok() {
                        "no errors"
                    } else {
                        "DAMAGE FOUND"
                    }
                );
            }
        }
        Ok(())
    };
    crate::output::unless_closed(print())?;
    Ok(if report.is_ok() {
        crate::exit::OK
    } else {
        crate::exit::FATAL
    })
}
