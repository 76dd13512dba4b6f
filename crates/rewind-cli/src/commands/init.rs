//! `rewind init`

use std::sync::Arc;

use anyhow::{Context, Result};
use rewind_core::backend::{LocalBackend, LockMode, ObjectLock, Verified};
use rewind_core::crypto::KdfParams;
use rewind_core::repository::{InitOptions, KeyOwner, Repository};

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Make the store keep every file of the repository for DAYS after it
    /// is written (S3 Object Lock: the bucket's default retention; the
    /// bucket must have been created with Object Lock enabled). Until then
    /// not even the bucket's owner can delete or overwrite it; prune waits.
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub object_lock_days: Option<u32>,
    /// `compliance` (nobody can shorten the retention) or `governance`
    /// (users allowed to bypass governance can).
    #[arg(
        long,
        value_name = "MODE",
        default_value = "compliance",
        requires = "object_lock_days"
    )]
    pub object_lock_mode: LockModeArg,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum LockModeArg {
    Compliance,
    Governance,
}

pub fn owner() -> KeyOwner {
    KeyOwner {
        hostname: rewind_core::archiver::local_hostname(),
        username: rewind_core::archiver::local_username(),
    }
}

pub fn run(args: &Args, global: &Global) -> Result<u8> {
    let backend = global.backend()?;
    let location = backend.location();
    // Before the password prompt (Repository::init_with checks again).
    rewind_core::backend::check_vacant(&*backend)
        .with_context(|| format!("cannot create a repository at {location}"))?;
    let lock = args.object_lock_days.map(|days| ObjectLock {
        days,
        mode: match args.object_lock_mode {
            LockModeArg::Compliance => LockMode::Compliance,
            LockModeArg::Governance => LockMode::Governance,
        },
    });
    let password = match global.password_from_env()? {
        Some(p) => p,
        None => super::prompt_new("Password for the new repository: ")?,
    };
    if password.is_empty() {
        anyhow::bail!("an empty password is not allowed");
    }
    let opts = InitOptions { object_lock: lock };
    let repo = Repository::init_with(backend, &password, KdfParams::DEFAULT, &owner(), &opts)
        .with_context(|| format!("cannot create a repository at {location}"))?;
    if global.json {
        outln!(
            "{}",
            serde_json::json!({"message_type": "initialized", "id": repo.config().id, "repository": location, "object_lock": lock})
        );
    } else if !global.quiet {
        outln!(
            "created rewind repository {} at {location}",
            repo.config().id,
        );
        if let Some(l) = lock {
            outln!(
                "Object Lock: every file is kept for {} days after it is written ({} mode); \
                 forget hides snapshots at once, prune deletes their data only after that.",
                l.days,
                l.mode
            );
        }
        outln!("Keep the password safe: without it, nothing in this repository can be restored.");
    }
    Ok(crate::exit::OK)
}

/// Creates the default repository and its key file on first use.
/// Returns true if it was created now.
pub fn ensure_default_repository(global: &Global) -> Result<bool> {
    let (path, is_default) = global.location();
    if !is_default || path.join("config").exists() {
        return Ok(false);
    }
    let defaults = super::defaults();
    let from_env = global.password_from_env()?;
    let mut generated = false;
    let password = match &from_env {
        Some(p) => p.clone(),
        // A key file without a repository: an earlier first run failed after
        // writing it (or the repository was moved away). Reuse it.
        None if defaults.key_file.exists() => {
            let s = std::fs::read(&defaults.key_file)
                .with_context(|| format!("cannot read key file {}", defaults.key_file.display()))?;
            super::first_line(&s)
        }
        None => {
            let mut raw = [0u8; 32];
            rewind_core::crypto::random_bytes(&mut raw);
            let pw = hex::encode(raw);
            write_key_file(&defaults.key_file, pw.as_bytes())?;
            generated = true;
            pw.into_bytes()
        }
    };
    if let Err(e) = Repository::init(
        Arc::new(Verified::new(LocalBackend::new(&path))),
        &password,
        KdfParams::DEFAULT,
        &owner(),
    ) {
        if generated {
            // Nothing uses this password yet: leave no stale key file behind.
            let _ = std::fs::remove_file(&defaults.key_file);
        }
        return Err(anyhow::Error::new(e).context(format!(
            "cannot create the default repository at {}",
            path.display()
        )));
    }
    eprintln!("Created a new repository at {}.", path.display());
    if from_env.is_none() {
        if generated {
            eprintln!(
                "Its password was generated and saved in {} (readable only by you).",
                defaults.key_file.display()
            );
        } else {
            eprintln!(
                "Its password is the one in {}.",
                defaults.key_file.display()
            );
        }
        eprintln!("KEEP A COPY OF THAT FILE SOMEWHERE ELSE (a password manager, a USB stick): without it this backup cannot be restored.");
    }
    Ok(true)
}

/// Writes a password file readable only by its owner (0600, in a 0700
/// directory); fails if the file exists.
pub fn write_key_file(path: &std::path::Path, password: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create key file {}", path.display()))?;
    f.write_all(password)
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
