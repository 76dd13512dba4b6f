//! `rewind completions SHELL` and `rewind man`: generated from the CLI
//! definition, so they never drift from it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;

use super::Cli;

#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}

#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Write rewind.1 and a page per command (rewind-backup.1, ...) into
    /// this folder instead of printing rewind.1.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn completions(args: &CompletionsArgs) -> Result<u8> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "rewind", &mut out);
    crate::output::unless_closed(
        std::io::Write::write_all(&mut std::io::stdout(), &out).map_err(Into::into),
    )?;
    Ok(crate::exit::OK)
}

pub fn man(args: &ManArgs) -> Result<u8> {
    match &args.dir {
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut out)?;
            crate::output::unless_closed(
                std::io::Write::write_all(&mut std::io::stdout(), &out).map_err(Into::into),
            )?;
        }
        Some(dir) => {
            let written = write_man_pages(dir)?;
            outln!("wrote {} man pages to {}", written.len(), dir.display());
        }
    }
    Ok(crate::exit::OK)
}

/// Writes rewind.1 and rewind-COMMAND.1 for each command into `dir`.
pub fn write_man_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cmd = Cli::command();
    let mut written = Vec::new();
    let mut page = |name: String, c: clap::Command| -> Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(c).render(&mut out)?;
        std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
        Ok(())
    };
    page("rewind".into(), cmd.clone())?;
    for sub in cmd.get_subcommands() {
        let name = format!("rewind-{}", sub.get_name());
        let static_name: &'static str = Box::leak(name.clone().into_boxed_str());
        page(name, sub.clone().name(static_name))?;
    }
    Ok(written)
}

/// Writes the bash completion script to `path`.
pub fn write_completion(shell: clap_complete::Shell, path: &Path) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "rewind", &mut out);
    std::fs::write(path, out).with_context(|| format!("cannot write {}", path.display()))
}
