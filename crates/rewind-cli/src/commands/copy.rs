//! `rewind copy [--from LOCATION] --to LOCATION`: copy snapshots to another
//! repository.

use anyhow::{Context, Result};
use rewind_core::repository::Repository;

use super::Global;
use crate::output::bytes;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The source repository (same as --repo; its password as for --repo).
    #[arg(long, value_name = "LOCATION")]
    pub from: Option<std::path::PathBuf>,
    /// The destination repository (a path, sftp: or s3: location); it must
    /// exist (`rewind init --repo LOCATION`).
    #[arg(long, value_name = "LOCATION")]
    pub to: String,
    /// File holding the destination's password (else REWIND_TO_PASSWORD, or a prompt).
    #[arg(long, env = "REWIND_TO_PASSWORD_FILE", value_name = "FILE")]
    pub to_password_file: Option<std::path::PathBuf>,
    /// A backend option of the destination, KEY=VALUE (repeatable).
    #[arg(long = "to-option", value_name = "KEY=VALUE")]
    pub to_options: Vec<String>,
    /// Show which snapshots would be copied; copy nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Snapshots to copy (ids, `latest`, `@TIME`); default: every snapshot
    /// that passes the filters.
    pub snapshots: Vec<String>,
    #[command(flatten)]
    pub select: super::SelectArgs,
}

/// Where a destination's password may be: a file given now (flag or
/// REWIND_TO_PASSWORD_FILE), else REWIND_TO_PASSWORD, else the file stored
/// with the copy target, else a prompt.
#[derive(Clone, Copy, Default)]
pub struct PasswordFiles<'a> {
    pub explicit: Option<&'a std::path::Path>,
    pub stored: Option<&'a std::path::Path>,
}

/// Opens a copy destination: checks it is not the source (before any
/// password), then opens it with the password from the file, the
/// environment or a prompt.
pub fn open_destination(
    to: &str,
    password_file: PasswordFiles,
    option_args: &[String],
    source_id: &str,
) -> Result<Repository> {
    let location = rewind_backends::Location::parse(to)?;
    let mut options = rewind_backends::Options::new();
    for o in option_args {
        let (k, v) = rewind_backends::parse_option(o)?;
        options.insert(k, v);
    }
    let backend = rewind_backends::open(&location, &options)?;
    let shown = backend.location();
    let config = Repository::probe(&*backend)
        .with_context(|| format!("cannot open destination repository {shown}"))?;
    // Before any password: the config (plaintext) names the repository.
    if config.id == source_id {
        return Err(super::usage(format!(
            "{shown} is the source repository itself; copy to another repository"
        )));
    }
    let read_file = |f: &std::path::Path| -> Result<Vec<u8>> {
        let s = std::fs::read(f)
            .with_context(|| format!("cannot read password file {}", f.display()))?;
        Ok(super::first_line(&s))
    };
    let password = if let Some(f) = password_file.explicit {
        read_file(f)?
    } else if let Some(p) = std::env::var_os("REWIND_TO_PASSWORD") {
        p.into_encoded_bytes()
    } else if let Some(f) = password_file.stored {
        read_file(f).context("the stored copy target's password file (rewind copy-target set)")?
    } else {
        super::prompt("Destination repository password: ")?
    };
    Repository::open(backend, &password)
        .with_context(|| format!("cannot open destination repository {shown}"))
}

pub fn run(args: &Args, global: &Global) -> Result<u8> {
    if args.select.as_of.is_some() && args.snapshots.is_empty() {
        return Err(super::usage(
            "--as-of picks one snapshot: give it with a snapshot, e.g. `copy latest --as-of ...`",
        ));
    }
    let global = match (&args.from, &global.repo) {
        (Some(from), Some(repo)) if from != repo => {
            return Err(super::usage(format!(
                "--from {} and --repo {} name different sources; give one",
                from.display(),
                repo.display()
            )))
        }
        (Some(from), _) => &Global {
            repo: Some(from.clone()),
            ..global.clone()
        },
        (None, _) => global,
    };
    let src = global.open()?;
    let mut dst = open_destination(
        &args.to,
        PasswordFiles {
            explicit: args.to_password_file.as_deref(),
            stored: None,
        },
        &args.to_options,
        &src.config().id,
    )?;
    global.configure(&mut dst)?;
    let wanted = if args.snapshots.is_empty() {
        args.select.matching(&src)?
    } else {
        let mut v = Vec::new();
        for spec in &args.snapshots {
            v.push(args.select.resolve(&src, spec)?);
        }
        v.sort_by_key(|e| e.0);
        v.dedup_by(|a, b| a.0 == b.0);
        v
    };
    let report = rewind_core::copy::copy(&src, &dst, &wanted, args.dry_run)?;
    if global.json {
        outln!(
            "{}",
            serde_json::json!({
                "message_type": "summary",
                "dry_run": args.dry_run,
                "copied": report.copied.iter().map(|(s, d)| serde_json::json!({"source": s.to_hex(), "destination": d.map(|d| d.to_hex())})).collect::<Vec<_>>(),
                "skipped": report.skipped.iter().map(|s| s.to_hex()).collect::<Vec<_>>(),
                "blobs_added": report.blobs_added,
                "bytes_added_raw": report.bytes_added_raw,
                "bytes_added_stored": report.bytes_added_stored,
            })
        );
    } else if !global.quiet {
        for (s, d) in &report.copied {
            match d {
                Some(d) => outln!("copied snapshot {} -> {}", s.short(), d.short()),
                None => outln!("would copy snapshot {}", s.short()),
            }
        }
        outln!(
            "{} {} snapshot(s), {} already in {}; added {} ({} stored)",
            if args.dry_run { "would copy" } else { "copied" },
            report.copied.len(),
            report.skipped.len(),
            dst.backend().location(),
            bytes(report.bytes_added_raw),
            bytes(report.bytes_added_stored),
        );
    }
    Ok(crate::exit::OK)
}
