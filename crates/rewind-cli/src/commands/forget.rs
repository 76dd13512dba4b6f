//! `rewind forget`: remove snapshots by a retention policy.
//!
//! Removing snapshots frees no space by itself: the data they alone
//! referenced stays until `rewind prune` (or `forget --prune`) reclaims it.

use anyhow::Result;
use rewind_core::forget::{self, ForgetOptions, ForgetPlan, PolicySource};
use rewind_core::retention::{GroupBy, Policy};

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
    let group_by: GroupBy = args
        .group_by
        .parse()
        .map_err(|e: rewind_core::Error| super::usage(format!("--group-by: {e}")))?;
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
    let opts = ForgetOptions {
        // No rule on the command line: the repository's stored policy (or
        // the recommended one of a fresh repository).
        policy: (!given.is_empty()).then_some(given),
        group_by,
        filter: args.select.filter(),
        allow_short_history: args.allow_short_history,
    };
    let tz = jiff::tz::TimeZone::system();
    let plan = forget::plan(&repo, &opts, &tz, jiff::Timestamp::now())?;
    if plan.policy_source() != PolicySource::Given && !global.quiet && !global.json {
        outln!(
            "applying the repository's {} policy ({})",
            if plan.policy_source() == PolicySource::Stored {
                "stored"
            } else {
                "default"
            },
            super::policy::describe_rules(plan.policy())
        );
    }
    for u in plan.unreadable() {
        eprintln!(
            "warning: snapshot {} cannot be read and is skipped: {} (run `rewind check`)",
            u.name, u.error
        );
    }

    let floor = plan.history_floor();
    if !floor.allows() {
        for g in &floor.short_groups {
            eprintln!(
                "refused: group {} has {:.0} days of history; this policy would keep only {:.0} days",
                g.key, g.all_days, g.kept_days
            );
        }
        eprintln!("Ransomware and silent damage are often found weeks or months late: a backup history shorter than a year may no longer hold a clean copy. Keep more (e.g. --keep-monthly 12 --keep-yearly 5), or pass --allow-short-history if you are sure.");
    }
    plan.check_history_floor()?;

    // A closed stdout ends what is printed, not the forgetting.
    if global.json {
        crate::output::unless_closed((|| -> Result<()> {
            outln!("{}", serde_json::to_string_pretty(plan.groups())?);
            Ok(())
        })())?;
    } else if !global.quiet {
        crate::output::unless_closed(print_decisions(&plan))?;
    }
    if args.dry_run {
        if !global.json && !global.quiet {
            outln!("dry run: nothing was removed");
        }
        if args.prune {
            return super::prune::run_with(&repo, &prune_opts, global);
        }
        return Ok(crate::exit::OK);
    }

    let report = forget::execute(&repo, &plan)?;
    if !global.json && !global.quiet {
        crate::output::unless_closed((|| -> Result<()> {
            outln!(
                "removed {} snapshots{}",
                report.removed.len(),
                if args.prune {
                    ""
                } else {
                    " (their data stays until `rewind prune`)"
                }
            );
            Ok(())
        })())?;
    }
    if !report.kept_by_storage.is_empty() {
        eprintln!(
            "warning: the storage kept {} snapshots that the policy would remove:",
            report.kept_by_storage.len()
        );
        for k in &report.kept_by_storage {
            eprintln!("  {}", k.reason);
        }
    }
    if args.prune {
        return super::prune::run_with(&repo, &prune_opts, global);
    }
    Ok(crate::exit::OK)
}

/// Per group, what is kept (and why) and what goes.
fn print_decisions(plan: &ForgetPlan) -> Result<()> {
    for p in plan.groups() {
        outln!(
            "group {}: keep {} of {} snapshots",
            p.key,
            p.decisions.iter().filter(|d| d.keep).count(),
            p.decisions.len()
        );
        for d in &p.decisions {
            let time = plan.snapshot(&d.id).map(|s| local_time(s.time));
            let time = time.as_deref().unwrap_or("?");
            if d.keep {
                outln!(
                    "  keep    {}  {}  {}",
                    d.id.short(),
                    time,
                    d.reasons.join(", ")
                );
            } else {
                outln!("  remove  {}  {}", d.id.short(), time);
            }
        }
    }
    Ok(())
}
