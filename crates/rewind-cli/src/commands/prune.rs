//! `rewind prune`: give back the space of data no snapshot uses.

use anyhow::Result;
use jiff::SignedDuration;
use rewind_core::prune::{self, MaxUnused, Packs, PruneOptions, PruneReport};

use super::Global;
use crate::output::{bytes, local_time};

/// Options shared by `prune` and `forget --prune`.
#[derive(clap::Args, Debug, Clone)]
pub struct PruneArgs {
    /// Unused space allowed to stay in partly used packs, as a share of the
    /// repository (5%) or a size (2GiB); packs beyond it are repacked.
    #[arg(long, default_value = "5%", value_name = "LIMIT")]
    pub max_unused: String,
    /// How long a pack stays marked before it is deleted, so that backups
    /// running meanwhile never lose data they rely on (e.g. 23h, 2d, 30min).
    #[arg(long, default_value = "23h", value_name = "DURATION")]
    pub grace: String,
    /// Delete unused data in this run instead of marking it first. Refused
    /// while a backup runs; only safe when no other client can start one.
    #[arg(long)]
    pub now: bool,
    /// Prune as if snapshot files that cannot be read (or whose root tree
    /// cannot be read) did not exist: they restore nothing. Each is named;
    /// without this flag prune refuses while there is one.
    #[arg(long)]
    pub ignore_damaged_snapshots: bool,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub prune: PruneArgs,
    /// Show what would be marked, repacked and deleted; change nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

/// `30min`, `23h`, `2d`, `1d12h` or `0`.
pub fn parse_grace(s: &str) -> std::result::Result<SignedDuration, String> {
    let bad = || format!("--grace {s:?}: give a duration like 23h, 2d, 30min or 0");
    let t = s.trim();
    if t == "0" {
        return Ok(SignedDuration::ZERO);
    }
    let mut total = SignedDuration::ZERO;
    let mut rest = t;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "s" => 1,
            "min" | "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let part = n
            .checked_mul(secs)
            .filter(|v| *v <= 10 * 365 * 86_400)
            .ok_or_else(bad)?;
        total += SignedDuration::from_secs(part);
    }
    Ok(total)
}

impl PruneArgs {
    pub fn options(&self, dry_run: bool) -> Result<PruneOptions> {
        let max_unused: MaxUnused = self
            .max_unused
            .parse()
            .map_err(|e: rewind_core::Error| super::usage(format!("--max-unused: {e}")))?;
        let grace = parse_grace(&self.grace).map_err(super::usage)?;
        Ok(PruneOptions {
            max_unused,
            grace,
            delete_now: self.now,
            dry_run,
            ignore_damaged_snapshots: self.ignore_damaged_snapshots,
            ..PruneOptions::default()
        })
    }
}

pub fn run(args: &Args, global: &Global) -> Result<u8> {
    let opts = args.prune.options(args.dry_run)?;
    let repo = global.open()?;
    run_with(&repo, &opts, global)
}

/// Runs prune on an open repository and prints its report.
pub fn run_with(
    repo: &rewind_core::repository::Repository,
    opts: &PruneOptions,
    global: &Global,
) -> Result<u8> {
    if opts.grace < SignedDuration::from_hours(1) && !opts.delete_now && !global.quiet {
        eprintln!(
            "warning: a grace period under an hour is only safe if no backup takes longer \
             (or is suspended for longer) than that"
        );
    }
    // Ctrl-C or SIGTERM stops prune at a safe point (exit 130).
    let opts = &PruneOptions {
        cancel: crate::interrupt::install(),
        ..opts.clone()
    };
    let r = prune::prune(repo, opts)?;
    for (name, why) in &r.ignored_snapshots {
        eprintln!("warning: snapshot {name} cannot be read ({why}); pruned as if it did not exist (--ignore-damaged-snapshots): the data only it refers to is not kept");
    }
    for name in &r.damaged_states {
        eprintln!("warning: prune state {name} cannot be read; every marked pack waits its grace period again from now (nothing is deleted on an old mark), and this run's state replaces it");
    }
    for name in &r.damaged_markers {
        eprintln!("warning: running marker {name} cannot be read; it is taken for a running backup until it is old, so deletions wait");
    }
    for (name, e) in &r.unreadable {
        eprintln!("warning: pack {name} is outside the index and its header cannot be read ({e}); it is left in place");
    }
    // A closed stdout ends the report, not the exit code.
    let print = || -> Result<()> {
        if global.json {
            outln!(
                "{}",
                serde_json::json!({"message_type": "summary", "dry_run": opts.dry_run, "report": r})
            );
        } else if !global.quiet {
            print_report(&r, opts)?;
        }
        Ok(())
    };
    crate::output::unless_closed(print())?;
    Ok(if r.unreadable.is_empty() {
        crate::exit::OK
    } else {
        crate::exit::PARTIAL
    })
}

fn packs(p: &Packs) -> String {
    format!(
        "{} pack{} ({})",
        p.count,
        if p.count == 1 { "" } else { "s" },
        bytes(p.bytes)
    )
}

fn print_report(r: &PruneReport, opts: &PruneOptions) -> Result<()> {
    let would = |done: &'static str, planned: &'static str| {
        if opts.dry_run {
            planned
        } else {
            done
        }
    };
    outln!(
        "{} snapshots use {} blobs; the repository has {}",
        r.snapshots,
        r.used_blobs,
        packs(&r.packs_before)
    );
    outln!(
        "keep:      {}, of which {} unused (limit --max-unused)",
        packs(&r.kept),
        bytes(r.unused_bytes_kept)
    );
    if r.repacked.count > 0 {
        outln!(
            "{} {}: {} of used data copied{}",
            would("repacked: ", "repack:   "),
            packs(&r.repacked),
            bytes(r.repack_copied_bytes),
            if opts.dry_run {
                String::new()
            } else {
                format!(" into {} new packs", r.repack_new_packs)
            }
        );
    }
    if r.marked_unused.count + r.marked_unindexed.count > 0 {
        outln!(
            "{} {} unused{}",
            would("marked:   ", "mark:     "),
            packs(&r.marked_unused),
            if r.marked_unindexed.count > 0 {
                format!(", {} outside the index", packs(&r.marked_unindexed))
            } else {
                String::new()
            }
        );
    }
    if r.unmarked.count > 0 {
        outln!(
            "in use again: {} (a snapshot refers to them; mark dropped)",
            packs(&r.unmarked)
        );
    }
    if r.recovered.count > 0 {
        outln!(
            "{} {} that snapshots need back into the index",
            would("put back: ", "put back: "),
            packs(&r.recovered)
        );
    }
    outln!(
        "{} {}",
        would("deleted:  ", "delete:   "),
        packs(&r.deleted)
    );
    if r.postponed.count > 0 {
        let who: Vec<String> = r
            .running_backups
            .iter()
            .map(|(h, pid, start)| format!("{h} pid {pid} since {}", local_time(*start)))
            .collect();
        outln!(
            "postponed: {} while backups run ({})",
            packs(&r.postponed),
            who.join("; ")
        );
    }
    if r.retained.count > 0 {
        let (first, last) = (
            &r.retained_until[0],
            &r.retained_until[r.retained_until.len() - 1],
        );
        outln!(
            "retained:  {} under Object Lock, not deleted: the store keeps them until {}{}; \
             a prune after that deletes them",
            packs(&r.retained),
            local_time(first.1),
            if last.1 != first.1 {
                format!(" to {}", local_time(last.1))
            } else {
                String::new()
            }
        );
        for (pack, until) in r.retained_until.iter().take(5) {
            outln!("           pack {pack} until {}", local_time(*until));
        }
        if r.retained_until.len() > 5 {
            outln!(
                "           and {} more (--json lists all)",
                r.retained_until.len() - 5
            );
        }
    }
    let waiting = r.waiting.count
        + if opts.delete_now {
            0
        } else {
            r.marked_unused.count + r.marked_unindexed.count + r.repacked.count
        };
    if let Some(t) = r.next_deletion.filter(|_| waiting > 0) {
        outln!(
            "waiting:   {} marked pack(s) can be deleted by a prune from {} on (grace {:#})",
            waiting,
            local_time(t),
            opts.grace
        );
    }
    if r.versions_removed > 0 {
        outln!(
            "removed {} old version(s) of deleted files whose Object Lock retention ended",
            r.versions_removed
        );
    }
    if r.temporaries_removed > 0 {
        outln!(
            "removed {} temporary file(s) left by interrupted writes",
            r.temporaries_removed
        );
    }
    if opts.dry_run {
        outln!("dry run: nothing was changed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_syntax() {
        assert_eq!(parse_grace("0").unwrap(), SignedDuration::ZERO);
        assert_eq!(parse_grace("23h").unwrap(), SignedDuration::from_hours(23));
        assert_eq!(
            parse_grace("1d12h").unwrap(),
            SignedDuration::from_hours(36)
        );
        assert_eq!(parse_grace("30min").unwrap(), SignedDuration::from_mins(30));
        for bad in ["", "h", "5", "5x", "-1h", "99999999999d"] {
            assert!(parse_grace(bad).is_err(), "{bad}");
        }
    }
}
