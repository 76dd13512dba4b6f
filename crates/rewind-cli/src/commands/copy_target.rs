//! `rewind copy-target show|set|unset`: the repository every new snapshot
//! is copied to, stored in the repository's (sealed) settings so that a
//! plain `rewind backup` makes both copies.

use anyhow::{Context, Result};
use rewind_core::format::policy::CopyTarget;

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Show the stored copy target.
    Show,
    /// Store a copy target; it is opened first, to prove it works.
    Set {
        /// The destination repository (a path, sftp: or s3: location); it
        /// must exist (`rewind init --repo LOCATION`).
        location: String,
        /// A file on this machine holding its password, read at each
        /// backup (else REWIND_TO_PASSWORD, or a prompt). The password
        /// itself is never stored.
        #[arg(long, value_name = "FILE")]
        to_password_file: Option<std::path::PathBuf>,
        /// A backend option of the destination, KEY=VALUE (repeatable).
        #[arg(long = "to-option", value_name = "KEY=VALUE")]
        to_options: Vec<String>,
    },
    /// Stop copying backups.
    Unset,
}

pub fn run(args: &Args, global: &Global) -> Result<u8> {
    let repo = global.open()?;
    match &args.action {
        Action::Show => {
            let t = repo.copy_target()?;
            if global.json {
                outln!("{}", serde_json::json!({ "copy_target": t }));
            } else {
                match t {
                    None => outln!(
                        "no copy target: backups are not copied (rewind copy-target set LOCATION)"
                    ),
                    Some(t) => {
                        outln!("copy target: {}", t.location);
                        for (k, v) in &t.options {
                            outln!("  option {k}={v}");
                        }
                        match &t.password_file {
                            Some(f) => outln!("  password file: {f}"),
                            None => outln!("  password: REWIND_TO_PASSWORD, or asked"),
                        }
                    }
                }
            }
        }
        Action::Set {
            location,
            to_password_file,
            to_options,
        } => {
            let password_file = match to_password_file {
                // Stored absolute: backups may run from another directory.
                Some(f) => Some(
                    std::path::absolute(f)
                        .with_context(|| format!("password file {}", f.display()))?,
                ),
                None => None,
            };
            let dst = super::copy::open_destination(
                location,
                super::copy::PasswordFiles {
                    explicit: password_file.as_deref(),
                    stored: None,
                },
                to_options,
                &repo.config().id,
            )?;
            let mut parsed = std::collections::BTreeMap::new();
            for o in to_options {
                let (k, v) = rewind_backends::parse_option(o)?;
                parsed.insert(k, v);
            }
            let target = CopyTarget {
                location: location.clone(),
                options: parsed,
                password_file: password_file.map(|f| f.display().to_string()),
            };
            repo.set_copy_target(Some(target))?;
            if !global.quiet {
                outln!(
                    "stored copy target {}: each `rewind backup` copies its snapshot there (skip with --no-copy)",
                    dst.backend().location()
                );
            }
        }
        Action::Unset => {
            repo.set_copy_target(None)?;
            if !global.quiet {
                outln!("no copy target: backups are no longer copied");
            }
        }
    }
    Ok(crate::exit::OK)
}
