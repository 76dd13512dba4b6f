//! Forgetting snapshots: [`plan`] decides, [`execute`] deletes
//! (docs/DESIGN.md §8b).
//!
//! A plan applies a retention policy ([`crate::retention`]) to the
//! snapshots a filter selects, judges the result against the one-year
//! history floor ([`MIN_HISTORY_DAYS`]) and lists which snapshot files go,
//! in the order they go. It changes nothing: a dry run is a plan, and it
//! serializes (JSON) for any front end to show.
//!
//! [`execute`] carries a plan out and enforces the rules itself, whoever
//! calls it: it refuses a plan that cuts a group's history below the floor
//! unless the plan was made with [`ForgetOptions::allow_short_history`];
//! it deletes the superseded copies of a snapshot (left by protect or mark,
//! §3.8) before the snapshot, which would otherwise come back as its older
//! copy; it leaves a snapshot the storage keeps (the rewind server's
//! minimum delete age) and says so; and it removes the superseded copies
//! of other snapshots where the storage lets it.
//!
//! ```no_run
//! # fn f(repo: &rewind_core::repository::Repository) -> rewind_core::Result<()> {
//! use rewind_core::forget::{self, ForgetOptions};
//! let plan = forget::plan(repo, &ForgetOptions::default(),
//!     &jiff::tz::TimeZone::system(), jiff::Timestamp::now())?;
//! println!("{}", serde_json::to_string_pretty(&plan).unwrap());
//! let report = forget::execute(repo, &plan)?;
//! println!("removed {} snapshots", report.removed.len());
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::backend::{delete_unless_kept, FileType};
use crate::error::{Error, Result};
use crate::format::snapshot::SnapshotFile;
use crate::id::SnapshotId;
use crate::repository::Repository;
use crate::retention::{self, GroupBy, GroupKey, GroupPlan, Policy, MIN_HISTORY_DAYS};
use crate::select::SnapshotFilter;

/// What to forget.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ForgetOptions {
    /// The rules; `None` applies the repository's stored policy, or the
    /// recommended one where none was stored. A policy without any rule
    /// is refused (it would keep nothing).
    pub policy: Option<Policy>,
    /// Which snapshot fields form a group.
    pub group_by: GroupBy,
    /// Which snapshots are considered (the others stay).
    pub filter: SnapshotFilter,
    /// Allow a plan that leaves a group with less than a year of history
    /// (the user insists).
    pub allow_short_history: bool,
}

/// Where the plan's policy came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicySource {
    /// Given by the caller.
    Given,
    /// The repository's stored policy.
    Stored,
    /// The recommended policy: none was given or stored.
    Default,
}

/// A group the plan would leave with less than a year of history.
#[derive(Clone, Debug, Serialize)]
pub struct ShortGroup {
    /// The group.
    pub key: GroupKey,
    /// Days of history the group has now.
    pub all_days: f64,
    /// Days of history the plan would keep.
    pub kept_days: f64,
}

/// The one-year history floor's verdict on a plan.
#[derive(Clone, Debug, Serialize)]
pub struct HistoryFloor {
    /// The floor, in days ([`MIN_HISTORY_DAYS`]).
    pub min_days: f64,
    /// Groups with a year of history or more that the plan would cut to
    /// less than a year.
    pub short_groups: Vec<ShortGroup>,
    /// True when the plan's options allow cutting them.
    pub overridden: bool,
}

impl HistoryFloor {
    /// True when no group would be cut below the floor.
    pub fn respected(&self) -> bool {
        self.short_groups.is_empty()
    }

    /// True when the plan may be carried out: the floor is respected or
    /// the caller allowed a shorter history.
    pub fn allows(&self) -> bool {
        self.respected() || self.overridden
    }
}

/// A snapshot the plan removes.
#[derive(Clone, Debug, Serialize)]
pub struct Removal {
    /// The snapshot.
    pub id: SnapshotId,
    /// Its time.
    pub time: jiff::Timestamp,
    /// Its superseded copies, deleted before it (in this order).
    pub superseded: Vec<SnapshotId>,
}

/// A snapshot file that could not be read; the plan leaves it alone.
#[derive(Clone, Debug, Serialize)]
pub struct Unreadable {
    /// Its name.
    pub name: String,
    /// Why it cannot be read.
    pub error: String,
}

/// What [`execute`] will do, decided by [`plan`] without changing
/// anything. Only [`plan`] makes one, so that a plan always carries the
/// floor's verdict on its own decisions.
#[derive(Clone, Debug, Serialize)]
pub struct ForgetPlan {
    /// The repository's id.
    repository: String,
    /// How the plan was asked for.
    options: ForgetOptions,
    /// The policy applied.
    policy: Policy,
    /// Where it came from.
    policy_source: PolicySource,
    /// Per group, one decision per snapshot (newest first) with reasons.
    groups: Vec<GroupPlan>,
    /// The one-year floor's verdict.
    history_floor: HistoryFloor,
    /// The snapshots to delete, in order, each after its superseded copies.
    remove: Vec<Removal>,
    /// Superseded copies of snapshots that stay (or that the filter left
    /// out): garbage, deleted last where the storage lets them go.
    remove_superseded: Vec<SnapshotId>,
    /// Snapshot files that could not be read (left alone).
    unreadable: Vec<Unreadable>,
    /// The selected snapshots, for callers that show them.
    #[serde(skip)]
    snapshots: HashMap<SnapshotId, SnapshotFile>,
}

impl ForgetPlan {
    /// The options the plan was made with.
    pub fn options(&self) -> &ForgetOptions {
        &self.options
    }

    /// The policy applied.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Where the policy came from.
    pub fn policy_source(&self) -> PolicySource {
        self.policy_source
    }

    /// Per group, the decisions with their reasons.
    pub fn groups(&self) -> &[GroupPlan] {
        &self.groups
    }

    /// The one-year floor's verdict.
    pub fn history_floor(&self) -> &HistoryFloor {
        &self.history_floor
    }

    /// The snapshots to delete, in the order [`execute`] deletes them.
    pub fn removals(&self) -> &[Removal] {
        &self.remove
    }

    /// Superseded copies of snapshots that stay, deleted last.
    pub fn superseded_of_others(&self) -> &[SnapshotId] {
        &self.remove_superseded
    }

    /// Snapshot files that could not be read.
    pub fn unreadable(&self) -> &[Unreadable] {
        &self.unreadable
    }

    /// A selected snapshot.
    pub fn snapshot(&self, id: &SnapshotId) -> Option<&SnapshotFile> {
        self.snapshots.get(id)
    }

    /// `Ok` when the plan may be carried out; [`Error::Refused`] when it
    /// would cut a group's history below a year and its options do not
    /// allow that. Judged from the plan's decisions, not from a stored
    /// verdict.
    pub fn check_history_floor(&self) -> Result<()> {
        let short = self.groups.iter().any(GroupPlan::shortens_history);
        if short && !self.options.allow_short_history {
            return Err(Error::Refused(format!(
                "retention policy would leave less than {MIN_HISTORY_DAYS:.0} days of history"
            )));
        }
        Ok(())
    }
}

/// What [`execute`] did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ForgetReport {
    /// Snapshots deleted.
    pub removed: Vec<SnapshotId>,
    /// Snapshots the storage kept (it refused to delete them or one of
    /// their superseded copies), with its reason.
    pub kept_by_storage: Vec<KeptByStorage>,
    /// Superseded copies of other snapshots deleted.
    pub superseded_removed: Vec<SnapshotId>,
    /// Superseded copies of other snapshots the storage kept for now.
    pub superseded_kept: Vec<SnapshotId>,
}

/// A snapshot the storage kept.
#[derive(Clone, Debug, Serialize)]
pub struct KeptByStorage {
    /// The snapshot.
    pub id: SnapshotId,
    /// The storage's reason.
    pub reason: String,
}

/// Decides what forgetting with `opts` does, changing nothing: applies the
/// policy to the readable snapshots that pass the filter, group by group
/// (in time zone `tz`, protections judged at `now`), judges the result
/// against the one-year floor, and lists the snapshot files to delete.
pub fn plan(
    repo: &Repository,
    opts: &ForgetOptions,
    tz: &jiff::tz::TimeZone,
    now: jiff::Timestamp,
) -> Result<ForgetPlan> {
    let (policy, policy_source) = match &opts.policy {
        Some(p) => {
            p.validate()?;
            if p.is_empty() {
                return Err(Error::InvalidInput(
                    "a retention policy needs at least one rule; without one it would keep nothing"
                        .into(),
                ));
            }
            (p.clone(), PolicySource::Given)
        }
        None => {
            let (stored, is_set) = repo.policy()?;
            let source = if is_set {
                PolicySource::Stored
            } else {
                PolicySource::Default
            };
            (stored, source)
        }
    };
    let (all, damaged) = repo.snapshots_checked()?;
    let unreadable = damaged
        .into_iter()
        .map(|(name, e)| Unreadable {
            name,
            error: e.to_string(),
        })
        .collect();
    let snaps: Vec<(SnapshotId, SnapshotFile)> = all
        .into_iter()
        .filter(|(_, s)| opts.filter.matches(s))
        .collect();
    // (copy, identity), as the listing above found them.
    let superseded = repo.superseded_snapshots()?;
    let groups = retention::plan(&snaps, &policy, opts.group_by, tz, now)?;
    let history_floor = HistoryFloor {
        min_days: MIN_HISTORY_DAYS,
        short_groups: groups
            .iter()
            .filter(|g| g.shortens_history())
            .map(|g| ShortGroup {
                key: g.key.clone(),
                all_days: g.all_days,
                kept_days: g.kept_days,
            })
            .collect(),
        overridden: opts.allow_short_history,
    };
    let snapshots: HashMap<SnapshotId, SnapshotFile> = snaps.into_iter().collect();
    let mut planned: HashSet<SnapshotId> = HashSet::new();
    let mut remove = Vec::new();
    for d in groups.iter().flat_map(|g| &g.decisions).filter(|d| !d.keep) {
        let s = &snapshots[&d.id];
        let identity = s.original.unwrap_or(d.id);
        let copies: Vec<SnapshotId> = superseded
            .iter()
            .filter(|(_, i)| *i == identity)
            .map(|(c, _)| *c)
            .collect();
        planned.extend(&copies);
        remove.push(Removal {
            id: d.id,
            time: s.time,
            superseded: copies,
        });
    }
    let mut remove_superseded = Vec::new();
    for (c, _) in &superseded {
        if planned.insert(*c) {
            remove_superseded.push(*c);
        }
    }
    Ok(ForgetPlan {
        repository: repo.config().id.clone(),
        options: opts.clone(),
        policy,
        policy_source,
        groups,
        history_floor,
        remove,
        remove_superseded,
        unreadable,
        snapshots,
    })
}

/// Carries out a plan of this repository: refuses it if it cuts a group
/// below the one-year floor without the plan's override; else deletes each
/// snapshot after its superseded copies (a snapshot stays when the storage
/// keeps one of its copies, or it would come back as that copy), then the
/// superseded copies of the snapshots that stay. Files the storage keeps
/// are reported, not errors; so are superseded copies these credentials
/// may not delete (garbage, hidden); any other failure, among them a
/// snapshot these credentials may not delete, stops at once, leaving
/// every snapshot not yet reached (and none half-deleted: a snapshot whose
/// copies were deleted is still the snapshot).
pub fn execute(repo: &Repository, plan: &ForgetPlan) -> Result<ForgetReport> {
    if plan.repository != repo.config().id {
        return Err(Error::InvalidInput(format!(
            "this forget plan was made for repository {}, not {}",
            plan.repository,
            repo.config().id
        )));
    }
    plan.check_history_floor()?;
    let backend = repo.backend().as_ref();
    let delete = |id: &SnapshotId| delete_unless_kept(backend, FileType::Snapshot, &id.to_hex());
    let mut report = ForgetReport::default();
    for r in &plan.remove {
        // Older copies first: left alone, one would come back as the
        // snapshot.
        let mut kept = None;
        for copy in &r.superseded {
            kept = kept.or(delete(copy)?);
        }
        if kept.is_none() {
            kept = delete(&r.id)?;
        }
        match kept {
            None => report.removed.push(r.id),
            Some(reason) => report
                .kept_by_storage
                .push(KeptByStorage { id: r.id, reason }),
        }
    }
    // Copies of kept snapshots left by protect or mark where the storage
    // kept the old file: garbage, removed when the storage (or a token
    // that may delete) lets them go.
    for copy in &plan.remove_superseded {
        match delete(copy) {
            Ok(None) => report.superseded_removed.push(*copy),
            Ok(Some(_)) => report.superseded_kept.push(*copy),
            Err(e) if crate::backend::is_not_permitted(&e) => report.superseded_kept.push(*copy),
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}
