//! `rewind protect` and `rewind unprotect`: snapshots that retention never removes.

use anyhow::Result;
use rewind_core::format::snapshot::Protection;

use super::{Global, SelectArgs};

#[derive(clap::Args, Debug)]
pub struct ProtectArgs {
    /// Snapshot: id, `latest` or @TIME.
    pub snapshot: String,
    /// Protect until this time ("2027-01-01"); for good without it.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    #[command(flatten)]
    pub select: SelectArgs,
}

#[derive(clap::Args, Debug)]
pub struct UnprotectArgs {
    /// Snapshot: id, `latest` or @TIME.
    pub snapshot: String,
    #[command(flatten)]
    pub select: SelectArgs,
}

pub fn protect(args: &ProtectArgs, global: &Global) -> Result<u8> {
    let until = args
        .until
        .as_deref()
        .map(|t| rewind_core::select::parse_time(t, &jiff::tz::TimeZone::system()))
        .transpose()?;
    if let Some(u) = until {
        if u <= jiff::Timestamp::now() {
            return Err(super::usage(format!("--until {u} is in the past")));
        }
    }
    let repo = global.open()?;
    let (id, _) = args.select.resolve(&repo, &args.snapshot)?;
    let new = repo.set_protection(&id, Some(Protection { until }))?;
    if !global.quiet {
        match until {
            Some(u) => outln!(
                "snapshot {} is protected until {} (its id is now {})",
                id.short(),
                crate::output::local_time(u),
                new.short()
            ),
            None => outln!(
                "snapshot {} is protected for good (its id is now {})",
                id.short(),
                new.short()
            ),
        }
    }
    Ok(crate::exit::OK)
}

pub fn unprotect(args: &UnprotectArgs, global: &Global) -> Result<u8> {
    let repo = global.open()?;
    let (id, _) = args.select.resolve(&repo, &args.snapshot)?;
    let new = repo.set_protection(&id, None)?;
    if !global.quiet {
        outln!(
            "snapshot {} is no longer protected (its id is now {})",
            id.short(),
            new.short()
        );
    }
    Ok(crate::exit::OK)
}
