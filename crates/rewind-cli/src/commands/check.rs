//! `rewind check`

use anyhow::Result;
use rewind_core::check::{self, CheckOptions};

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Also read and authenticate every pack.
    #[arg(long)]
    pub read_data: bool,
}

pub fn run(args: &Args, global: &Global) -> Result<u8> {
    let repo = global.open()?;
    let report = check::check(
        &repo,
        &CheckOptions {
            read_data: args.read_data,
        },
    )?;
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
