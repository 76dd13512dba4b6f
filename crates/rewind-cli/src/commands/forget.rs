//! `rewind forget`: remove snapshots by a retention policy.
//!
//! Removing snapshots frees no space by itself: the data they alone
//! referenced stays until `rewind prune` (or `forget --prune`) reclaims it.

use anyhow::Result;
use rewind_core::backend::{delete_unless_kept, FileType};
use rewind_core::retention::{self, GroupBy, Policy};

use super::Global;
use crate::output::local_time;

/// Retention rules, shared by `forget` and `policy set`.
#[derive(clap::Args, Debug, Clone)]
pub struct RuleArgs {
    /// Keep the N newest snapshots.
    #[arg(long, default_value_t = 0)]
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the last N hours.
    #[arg(long, default_value_t = 0)]
    pub keep_hourly: u32,
    /// ... days.
    #[arg(long, default_value_t = 0)]
    pub keep_daily: u32,
    /// ... ISO weeks.
    #[arg(long, default_value_t = 0)]
    pub keep_weekly: u32,
    /// ... months.
    #[arg(long, default_value_t = 0)]
    pub keep_monthly: u32,
    /// ... years.
    #[arg(long, default_value_t = 0)]
    pub keep_yearly: u32,
    /// Keep every snapshot newer than the newest minus this (e.g. 1y6m, 90d).
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Keep the newest snapshot of each hour within DURATION.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_hourly: Option<String>,
    /// ... of each day within DURATION.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_daily: Option<String>,
    /// ... of each ISO week within DURATION.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_weekly: Option<String>,
    /// ... of each month within DURATION.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_monthly: Option<String>,
    /// ... of each year within DURATION.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_yearly: Option<String>,
    /// Keep snapshots with this tag (repeatable).
    #[arg(long = "keep-tag")]
    pub keep_tags: Vec<String>,
}

impl RuleArgs {
    pub fn policy(&self) -> Policy {
        Policy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within: self.keep_within.clone(),
            keep_within_hourly: self.keep_within_hourly.clone(),
            keep_within_daily: self.keep_within_daily.clone(),
            keep_within_weekly: self.keep_within_weekly.clone(),
            keep_within_monthly: self.keep_within_monthly.clone(),
            keep_within_yearly: self.keep_within_yearly.clone(),
            keep_tags: self.keep_tags.clone(),
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub rules: RuleArgs,
    /// Group snapshots by these fields: host, paths, tags.
    #[arg(long, default_value = "host,paths")]
    pub group_by: String,
    /// Show what would be kept and removed, remove nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Allow a policy that leaves a group with less than a year of history.
    #[arg(long)]
    pub allow_short_history: bool,
    /// Run prune afterwards (with --dry-run: show what it would do).
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub prune_args: super::prune::PruneArgs,
    #[command(flatten)]
    pub select: super::SelectArgs,
}

pub fn run(args: &Args, global: &Global) -> Result<u8> {
    let given = args.rules.policy();
    given.validate()?;
    let group_by: GroupBy = args.group_by.parse()?;
    if args.select.as_of.is_some() {
        return Err(super::usage("--as-of does not apply to forget"));
    }
    let prune_opts = args.prune_args.options(args.dry_run)?;
    if !args.prune
        && (args.prune_args.now
            || args.prune_args.grace != "23h"
            || args.prune_args.max_unused != "5%")
    {
        return Err(super::usage(
            "--now, --grace and --max-unused apply only with --prune",
        ));
    }
    let repo = global.open()?;
    // No rule on the command line: the repository's stored policy (or the
    // recommended one of a fresh repository).
    let policy = if given.is_empty() {
        let (stored, is_set) = repo.policy()?;
        if !global.quiet && !global.json {
            outln!(
                "applying the repository's {} policy ({})",
                if is_set { "stored" } else { "default" },
                super::policy::describe_rules(&stored)
            );
        }
        stored
    } else {
        given
    };
    let snaps = args.select.matching(&repo)?;
    let tz = jiff::tz::TimeZone::system();
    let plans = retention::plan(&snaps, &policy, group_by, &tz, jiff::Timestamp::now())?;

    let short: Vec<_> = plans.iter().filter(|p| p.shortens_history()).collect();
    if !short.is_empty() && !args.allow_short_history {
        for p in &short {
            eprintln!(
                "refused: group {} has {:.0} days of history; this policy would keep only {:.0} days",
                describe(&p.key),
                p.all_days,
                p.kept_days
            );
        }
        eprintln!("Ransomware and silent damage are often found weeks or months late: a backup history shorter than a year may no longer hold a clean copy. Keep more (e.g. --keep-monthly 12 --keep-yearly 5), or pass --allow-short-history if you are sure.");
        return Err(anyhow::Error::new(rewind_core::Error::Refused(
            "retention policy would leave less than 365 days of history".into(),
        )));
    }

    let by_id: std::collections::HashMap<_, _> = snaps.iter().map(|(id, s)| (*id, s)).collect();
    let mut removed = 0usize;
    // Snapshots the storage keeps (the rewind server's retention rules).
    let mut kept_by_storage: Vec<String> = Vec::new();
    let superseded = if args.dry_run {
        Vec::new()
    } else {
        repo.superseded_snapshots()?
    };
    if global.json {
        outln!("{}", serde_json::to_string_pretty(&plans)?);
    }
    for p in &plans {
        if !global.json && !global.quiet {
            outln!(
                "group {}: keep {} of {} snapshots",
                describe(&p.key),
                p.decisions.iter().filter(|d| d.keep).count(),
                p.decisions.len()
            );
            for d in &p.decisions {
                let s = by_id[&d.id];
                if d.keep {
                    outln!(
                        "  keep    {}  {}  {}",
                        d.id.short(),
                        local_time(s.time),
                        d.reasons.join(", ")
                    );
                } else {
                    outln!("  remove  {}  {}", d.id.short(), local_time(s.time));
                }
            }
        }
        if !args.dry_run {
            for d in p.decisions.iter().filter(|d| !d.keep) {
                // Older copies first (protect, mark): left alone, one would
                // come back as the snapshot.
                let identity = by_id[&d.id].original.unwrap_or(d.id);
                let copies = superseded.iter().filter(|(_, i)| *i == identity);
                let mut kept = None;
                for (copy, _) in copies {
                    kept = kept.or(delete_unless_kept(
                        repo.backend().as_ref(),
                        FileType::Snapshot,
                        &copy.to_hex(),
                    )?);
                }
                if kept.is_none() {
                    kept = delete_unless_kept(
                        repo.backend().as_ref(),
                        FileType::Snapshot,
                        &d.id.to_hex(),
                    )?;
                }
                match kept {
                    None => removed += 1,
                    Some(why) => kept_by_storage.push(why),
                }
            }
        }
    }
    if !global.json && !global.quiet {
        if args.dry_run {
            outln!("dry run: nothing was removed");
        } else {
            outln!(
                "removed {removed} snapshots{}",
                if args.prune {
                    ""
                } else {
                    " (their data stays until `rewind prune`)"
                }
            );
        }
    }
    // Copies of kept snapshots left by protect or mark where the storage
    // kept the old file: garbage, removed when the storage lets them go.
    for (copy, _) in &superseded {
        delete_unless_kept(repo.backend().as_ref(), FileType::Snapshot, &copy.to_hex())?;
    }
    if !kept_by_storage.is_empty() {
        eprintln!(
            "warning: the storage kept {} snapshots that the policy would remove:",
            kept_by_storage.len()
        );
        for why in &kept_by_storage {
            eprintln!("  {why}");
        }
    }
    if args.prune {
        return super::prune::run_with(&repo, &prune_opts, global);
    }
    Ok(crate::exit::OK)
}

fn describe(k: &retention::GroupKey) -> String {
    let mut parts = Vec::new();
    if let Some(h) = &k.hostname {
        parts.push(format!("host {h}"));
    }
    if let Some(p) = &k.paths {
        parts.push(format!("paths {}", p.join(" ")));
    }
    if let Some(t) = &k.tags {
        parts.push(format!("tags {}", t.join(",")));
    }
    if parts.is_empty() {
        "all".into()
    } else {
        parts.join(", ")
    }
}
