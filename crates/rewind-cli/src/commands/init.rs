//! `rewind init`

use std::sync::Arc;

use anyhow::{Context, Result};
use rewind_core::backend::LocalBackend;
use rewind_core::crypto::KdfParams;
use rewind_core::repository::{KeyOwner, Repository};

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn owner() -> KeyOwner {
    KeyOwner {
        hostname: rewind_core::archiver::local_hostname(),
        username: rewind_core::archiver::local_username(),
    }
}

pub fn run(_args: &Args, global: &Global) -> Result<u8> {
    let (path, _) = global.location();
    let password = match global.password_from_env()? {
        Some(p) => p,
        None => super::prompt_new("Password for the new repository: ")?,
    };
    if password.is_empty() {
        anyhow::bail!("an empty password is not allowed");
    }
    let repo = Repository::init(
        Arc::new(LocalBackend::new(&path)),
        &password,
        KdfParams::DEFAULT,
        &owner(),
    )
    .with_context(|| format!("cannot create a repository at {}", path.display()))?;
    if global.json {
        println!(
            "{}",
            serde_json::json!({"message_type": "initialized", "id": repo.config().id, "repository": path})
        );
    } else if !global.quiet {
        println!(
            "created rewind repository {} at {}",
            repo.config().id,
            path.display()
        );
        println!("Keep the password safe: without it, nothing in this repository can be restored.");
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
    let password = match global.password_from_env()? {
        Some(p) => p,
        None => {
            let mut raw = [0u8; 32];
            rewind_core::crypto::random_bytes(&mut raw);
            let pw = hex::encode(raw);
            write_key_file(&defaults.key_file, pw.as_bytes())?;
            pw.into_bytes()
        }
    };
    Repository::init(
        Arc::new(LocalBackend::new(&path)),
        &password,
        KdfParams::DEFAULT,
        &owner(),
    )
    .with_context(|| format!("cannot create the default repository at {}", path.display()))?;
    eprintln!("Created a new repository at {}.", path.display());
    if global.password_from_env()?.is_none() {
        eprintln!(
            "Its password was generated and saved in {} (readable only by you).",
            defaults.key_file.display()
        );
        eprintln!("KEEP A COPY OF THAT FILE SOMEWHERE ELSE (a password manager, a USB stick): without it this backup cannot be restored.");
    }
    Ok(true)
}

fn write_key_file(path: &std::path::Path, password: &[u8]) -> Result<()> {
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
        .with_context(|| format!("cannot create key file {} (if it exists, the default repository was removed: move the file away first)", path.display()))?;
    f.write_all(password)
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
