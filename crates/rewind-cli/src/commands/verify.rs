//! `rewind verify-restore`: a restore test (rewind_core::proof).

use anyhow::{Context, Result};

use super::{Global, SelectArgs};
use crate::output::bytes;
use rewind_core::proof::{self, Sample};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The snapshot to test (default: latest).
    pub snapshot: Option<String>,
    /// How many files to restore and compare: a number (100) or a share (5%).
    #[arg(long, default_value = "100")]
    pub sample: Sample,
    /// Where to restore them (default: a new folder in $TMPDIR, removed after).
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<std::path::PathBuf>,
    /// Do not store the result in the repository.
    #[arg(long)]
    pub no_save: bool,
    #[command(flatten)]
    pub select: SelectArgs,
}

pub fn run(args: &Args, global: &Global) -> Result<u8> {
    let repo = global.open()?;
    let spec = args.snapshot.as_deref().unwrap_or("latest");
    let (id, snap) = args.select.resolve(&repo, spec)?;
    let tmp;
    let scratch = match &args.scratch {
        Some(d) => d.join(format!("rewind-restore-test-{}", std::process::id())),
        None => {
            tmp = tempfile::Builder::new()
                .prefix("rewind-restore-test-")
                .tempdir()
                .context("cannot create a scratch folder in $TMPDIR (or give --scratch DIR)")?;
            tmp.path().to_path_buf()
        }
    };
    let seed = {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish()
    };
    if !global.quiet && !global.json {
        eprintln!(
            "restore test of snapshot {} ({}): the tree's metadata, then a sample of {} restored into {}",
            id.short(),
            crate::output::local_time(snap.time),
            match args.sample {
                Sample::Files(n) => format!("{n} files"),
                Sample::Percent(p) => format!("{p}% of the files"),
            },
            scratch.display()
        );
    }
    let result = proof::restore_test(&repo, id, &snap, args.sample, &scratch, seed);
    if args.scratch.is_some() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    let p = result?;
    let mut saved = None;
    let mut save_error = None;
    if !args.no_save {
        match repo.write_file(&p) {
            Ok(name) => saved = Some(name.to_hex()),
            Err(e) => save_error = Some(e.to_string()),
        }
    }
    if global.json {
        outln!(
            "{}",
            serde_json::json!({
                "message_type": "summary", "snapshot_id": id.to_hex(), "passed": p.passed(), "entries": p.entries,
                "files": p.files, "tested": p.tested, "bytes": p.bytes,
                "live_compared": p.live_compared, "failures": p.failures,
                "saved": saved, "save_error": save_error,
            })
        );
    } else {
        for f in &p.failures {
            eprintln!("error: {}: {}", f.path, f.message);
        }
        if !global.quiet || !p.passed() {
            outln!(
                "{}: {} entries read; {} of {} files restored and compared ({}), {} also with the live file{}",
                if p.passed() { "PASSED" } else { "FAILED" },
                p.entries,
                p.tested,
                p.files,
                bytes(p.bytes),
                p.live_compared,
                if p.failures.is_empty() {
                    String::new()
                } else {
                    format!("; {} failed (listed above)", p.failures.len())
                }
            );
        }
    }
    if let Some(e) = &save_error {
        eprintln!("warning: the result could not be stored in the repository: {e}");
    }
    Ok(if p.passed() {
        crate::exit::OK
    } else {
        crate::exit::FATAL
    })
}
