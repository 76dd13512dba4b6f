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

fn cursor_file(repo_id: &str) -> std::path::PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        });
    cache.join("rewind").join(format!("check-cursor-{repo_id}"))
}

pub fn run(args: &Args, global: &Global) -> Result<u8> {
    let subset = args
        .read_data_subset
        .as_deref()
        .map(str::parse::<check::Subset>)
        .transpose()?;
    let repo = global.open()?;
    let cursor_path = cursor_file(&repo.config().id);
    let cursor = std::fs::read_to_string(&cursor_path)
        .ok()
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
        // Best effort: a lost cursor only means starting over.
        if let Some(dir) = cursor_path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(&cursor_path, report.next_cursor.to_string());
    }
    if global.json {
        println!(
            "{}",
            serde_json::json!({
                "ok": report.is_ok(), "errors": report.errors, "notes": report.notes,
                "affected": report.affected.iter().map(|a| serde_json::json!({"snapshot": a.snapshot.to_hex(), "path": a.path.to_string_lossy()})).collect::<Vec<_>>(),
                "snapshots": report.snapshots, "packs": report.packs, "packs_read": report.packs_read, "blobs": report.blobs,
            })
        );
    } else {
        for n in &report.notes {
            eprintln!("note: {n}");
        }
        for e in &report.errors {
            eprintln!("error: {e}");
        }
        if !report.affected.is_empty() {
            eprintln!("affected files:");
            for a in &report.affected {
                eprintln!("  snapshot {}: {}", a.snapshot.short(), a.path.display());
            }
        }
        if !global.quiet {
            println!(
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
    Ok(if report.is_ok() {
        crate::exit::OK
    } else {
        crate::exit::FATAL
    })
}
