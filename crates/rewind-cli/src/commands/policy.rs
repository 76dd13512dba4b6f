//! `rewind policy show|set`: the repository's stored retention policy.

use anyhow::Result;
use rewind_core::retention::Policy;

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Show the stored policy (or the default of a fresh repository).
    Show,
    /// Store a policy; `rewind forget` without rules applies it.
    Set {
        #[command(flatten)]
        rules: super::forget::RuleArgs,
    },
}

/// The rules of a policy in flag syntax.
pub fn describe_rules(p: &Policy) -> String {
    let mut out = Vec::new();
    for (name, n) in [
        ("last", p.keep_last),
        ("hourly", p.keep_hourly),
        ("daily", p.keep_daily),
        ("weekly", p.keep_weekly),
        ("monthly", p.keep_monthly),
        ("yearly", p.keep_yearly),
    ] {
        if n > 0 {
            out.push(format!("--keep-{name} {n}"));
        }
    }
    for (name, d) in [
        ("within", &p.keep_within),
        ("within-hourly", &p.keep_within_hourly),
        ("within-daily", &p.keep_within_daily),
        ("within-weekly", &p.keep_within_weekly),
        ("within-monthly", &p.keep_within_monthly),
        ("within-yearly", &p.keep_within_yearly),
    ] {
        if let Some(d) = d {
            out.push(format!("--keep-{name} {d}"));
        }
    }
    for t in &p.keep_tags {
        out.push(format!("--keep-tag {t}"));
    }
    out.join(" ")
}

pub fn run(args: &Args, global: &Global) -> Result<u8> {
    match &args.action {
        Action::Show => {
            let repo = global.open()?;
            let (policy, is_set) = repo.policy()?;
            if global.json {
                outln!(
                    "{}",
                    serde_json::json!({"stored": is_set, "policy": policy})
                );
            } else {
                outln!(
                    "{} {}",
                    if is_set {
                        "stored policy:"
                    } else {
                        "default policy (none stored):"
                    },
                    describe_rules(&policy)
                );
            }
        }
        Action::Set { rules } => {
            let policy = rules.policy();
            if policy.is_empty() {
                return Err(super::usage(
                    "give at least one rule, e.g. --keep-daily 30 --keep-monthly 24",
                ));
            }
            policy.validate()?;
            let repo = global.open()?;
            repo.set_policy(&policy)?;
            if !global.quiet {
                outln!("stored policy: {}", describe_rules(&policy));
            }
        }
    }
    Ok(crate::exit::OK)
}
