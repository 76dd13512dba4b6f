//! `rewind key list|add|remove|passwd`

use std::path::PathBuf;

use anyhow::{Context, Result};
use rewind_core::crypto::KdfParams;

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// List the keys (one per password).
    List,
    /// Add a password.
    Add(NewPassword),
    /// Remove a key by id (prefix); the last key and the one in use are kept.
    Remove {
        /// Key id or unique prefix.
        id: String,
    },
    /// Change the password you opened the repository with.
    Passwd(NewPassword),
}

#[derive(clap::Args, Debug)]
pub struct NewPassword {
    /// File holding the new password (else REWIND_NEW_PASSWORD_FILE, else a prompt).
    #[arg(long, env = "REWIND_NEW_PASSWORD_FILE")]
    pub new_password_file: Option<PathBuf>,
}

impl NewPassword {
    fn get(&self) -> Result<Vec<u8>> {
        let p = match &self.new_password_file {
            Some(f) => {
                let s = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
                super::first_line(&s)
            }
            None => super::prompt_new("New password: ")?,
        };
        if p.is_empty() {
            anyhow::bail!("an empty password is not allowed");
        }
        Ok(p)
    }
}

pub fn run(args: &Args, global: &Global) -> Result<u8> {
    let mut repo = global.open_with_password()?;
    let owner = super::init::owner();
    match &args.action {
        Action::List => {
            let keys = repo.keys()?;
            if global.json {
                let v: Vec<_> = keys.iter().map(|k| serde_json::json!({"id": k.id.to_hex(), "current": k.current, "created": k.file.created, "hostname": k.file.hostname, "username": k.file.username})).collect();
                outln!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                outln!("   {:<10}  {:<16}  {:<16}  Created", "ID", "User", "Host");
                for k in keys {
                    outln!(
                        "{}  {:<10}  {:<16}  {:<16}  {}",
                        if k.current { "*" } else { " " },
                        k.id.short(),
                        k.file.username,
                        k.file.hostname,
                        k.file.created
                    );
                }
            }
        }
        Action::Add(np) => {
            let id = repo.add_key(&np.get()?, KdfParams::DEFAULT, &owner)?;
            outln!("added key {}", id.short());
        }
        Action::Remove { id } => {
            let removed = repo.remove_key(id)?;
            outln!("removed key {}", removed.short());
        }
        Action::Passwd(np) => {
            let new = np.get()?;
            // The default repository opened with its key file: that file must
            // follow, or unattended backups would fail with a wrong password.
            let (_, is_default) = global.location();
            let key_file = super::defaults().key_file;
            let update_file =
                is_default && global.password_from_env()?.is_none() && key_file.exists();
            if update_file {
                let tmp = key_file.with_extension("new");
                let _ = std::fs::remove_file(&tmp);
                super::init::write_key_file(&tmp, &new)?;
                let id = repo.change_password(&new, KdfParams::DEFAULT, &owner)?;
                std::fs::rename(&tmp, &key_file).with_context(|| format!("the password changed but {} could not be updated; the new password is in {}", key_file.display(), tmp.display()))?;
                outln!(
                    "password changed (new key {}); {} holds the new one",
                    id.short(),
                    key_file.display()
                );
            } else {
                let id = repo.change_password(&new, KdfParams::DEFAULT, &owner)?;
                outln!("password changed (new key {})", id.short());
            }
        }
    }
    Ok(crate::exit::OK)
}
