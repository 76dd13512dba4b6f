//! Retention: which snapshots a policy keeps, and why. Pure functions of
//! (snapshots, policy, time zone); nothing here touches a repository.
//!
//! Semantics follow restic's `forget` where the flags match:
//! ```text
//! sort the group newest first
//! for each snapshot:
//!     keep-last N       keeps it while N remain
//!     keep-hourly N ... keep-yearly N: keep it if its hour/day/ISO week/month/year
//!                       (in the user's time zone) differs from the bucket of the
//!                       last snapshot this rule kept, while N remain
//!     keep-within D     keeps it if it is newer than (newest snapshot - D)
//!     keep-within-daily D (and -hourly, -weekly, -monthly, -yearly): the bucket rule
//!                       with no count, for snapshots newer than (newest - D)
//!     keep-tag T        keeps it if it has tag T
//!     protection        `rewind protect` keeps it whatever the rules (until its date)
//! a snapshot is kept if any rule keeps it; the reasons are every rule that did
//! ```
//! Durations are `1y6m`, `90d`, `2w3d12h` (years, months, weeks, days, hours).

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::snapshot::SnapshotFile;
use crate::id::SnapshotId;

pub use crate::format::policy::{parse_duration, Policy};

/// What happens to one snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The snapshot.
    pub id: SnapshotId,
    /// Kept or removed.
    pub keep: bool,
    /// The rules that keep it (empty when removed).
    pub reasons: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

fn bucket(t: &jiff::Zoned, unit: Unit) -> (i32, i32, i32, i32) {
    let d = t.date();
    match unit {
        Unit::Hour => (
            i32::from(d.year()),
            i32::from(d.month()),
            i32::from(d.day()),
            i32::from(t.hour()),
        ),
        Unit::Day => (
            i32::from(d.year()),
            i32::from(d.month()),
            i32::from(d.day()),
            0,
        ),
        Unit::Week => {
            let w = d.iso_week_date();
            (i32::from(w.year()), i32::from(w.week()), 0, 0)
        }
        Unit::Month => (i32::from(d.year()), i32::from(d.month()), 0, 0),
        Unit::Year => (i32::from(d.year()), 0, 0, 0),
    }
}

struct BucketRule {
    name: &'static str,
    unit: Unit,
    /// Remaining count; `None` = unlimited (within-rules).
    left: Option<u32>,
    /// Only snapshots at or after this time (within-rules).
    since: Option<jiff::Timestamp>,
    last: Option<(i32, i32, i32, i32)>,
}

/// The bucket rules of a policy: the counted ones (hourly .. yearly) and
/// the within-ones, whose start `since` computes from a duration.
fn bucket_rules(
    policy: &Policy,
    since: impl Fn(&Option<String>) -> Result<Option<jiff::Timestamp>>,
) -> Result<Vec<BucketRule>> {
    let counted = [
        ("hourly", Unit::Hour, policy.keep_hourly),
        ("daily", Unit::Day, policy.keep_daily),
        ("weekly", Unit::Week, policy.keep_weekly),
        ("monthly", Unit::Month, policy.keep_monthly),
        ("yearly", Unit::Year, policy.keep_yearly),
    ];
    let mut rules: Vec<BucketRule> = counted
        .into_iter()
        .map(|(name, unit, n)| BucketRule {
            name,
            unit,
            left: Some(n),
            since: None,
            last: None,
        })
        .collect();
    for (name, unit, d) in [
        ("within-hourly", Unit::Hour, &policy.keep_within_hourly),
        ("within-daily", Unit::Day, &policy.keep_within_daily),
        ("within-weekly", Unit::Week, &policy.keep_within_weekly),
        ("within-monthly", Unit::Month, &policy.keep_within_monthly),
        ("within-yearly", Unit::Year, &policy.keep_within_yearly),
    ] {
        if let Some(t) = since(d)? {
            rules.push(BucketRule {
                name,
                unit,
                left: None,
                since: Some(t),
                last: None,
            });
        }
    }
    Ok(rules)
}

/// A suspicious snapshot (evidence) and the newest clean snapshot before
/// it stay until a person marks it clean: they are what `restore
/// --last-clean` needs. `out`, `suspicious` and `ids` are newest first.
fn keep_evidence(out: &mut [Decision], suspicious: &[bool], ids: &[SnapshotId]) {
    let mut clean: Option<usize> = None;
    for i in (0..out.len()).rev() {
        if suspicious[i] {
            let why = "suspicious: unresolved until a person marks it clean".to_string();
            if !out[i].reasons.contains(&why) {
                out[i].reasons.push(why);
            }
            out[i].keep = true;
            if let Some(c) = clean {
                let why = format!("clean point before suspicious {}", ids[i].short());
                if !out[c].reasons.contains(&why) {
                    out[c].reasons.push(why);
                }
                out[c].keep = true;
            }
        } else {
            clean = Some(i);
        }
    }
}

/// Applies `policy` to one group of snapshots (any order). Returns one
/// decision per snapshot, newest first.
pub fn apply(
    snapshots: &[(SnapshotId, SnapshotFile)],
    policy: &Policy,
    tz: &jiff::tz::TimeZone,
    now: jiff::Timestamp,
) -> Result<Vec<Decision>> {
    let mut snaps: Vec<&(SnapshotId, SnapshotFile)> = snapshots.iter().collect();
    snaps.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(b.0.cmp(&a.0)));
    let Some(newest) = snaps.first().map(|s| s.1.time) else {
        return Ok(Vec::new());
    };
    let newest_z = newest.to_zoned(tz.clone());
    let since = |d: &Option<String>| -> Result<Option<jiff::Timestamp>> {
        match d {
            None => Ok(None),
            Some(s) => {
                let span = parse_duration(s)?;
                let t = newest_z
                    .checked_sub(span)
                    .map_err(|e| Error::InvalidInput(format!("duration {s:?}: {e}")))?;
                Ok(Some(t.timestamp()))
            }
        }
    };
    let within = since(&policy.keep_within)?;
    let mut rules = bucket_rules(policy, since)?;
    let suspicious: Vec<bool> = snaps
        .iter()
        .map(|(_, s)| {
            s.scan
                .as_ref()
                .is_some_and(|r| r.effective() == crate::format::scan::Verdict::Suspicious)
        })
        .collect();
    let ids: Vec<SnapshotId> = snaps.iter().map(|(id, _)| *id).collect();
    let mut last_left = policy.keep_last;
    let mut out = Vec::with_capacity(snaps.len());
    for (id, s) in snaps {
        let mut reasons = Vec::new();
        if last_left > 0 {
            last_left -= 1;
            reasons.push("last".to_string());
        }
        let z = s.time.to_zoned(tz.clone());
        for r in &mut rules {
            if r.left == Some(0) || r.since.is_some_and(|t| s.time < t) {
                continue;
            }
            let b = bucket(&z, r.unit);
            if r.last != Some(b) {
                r.last = Some(b);
                if let Some(n) = &mut r.left {
                    *n -= 1;
                }
                reasons.push(r.name.to_string());
            }
        }
        if within.is_some_and(|t| s.time >= t) {
            reasons.push(format!(
                "within {}",
                policy.keep_within.as_deref().unwrap_or_default()
            ));
        }
        for t in &policy.keep_tags {
            if s.tags.iter().any(|st| st == t) {
                reasons.push(format!("tag {t}"));
            }
        }
        if s.is_protected(now) {
            reasons.push(match s.protection.as_ref().and_then(|p| p.until) {
                Some(u) => format!("protected until {u}"),
                None => "protected".to_string(),
            });
        }
        out.push(Decision {
            id: *id,
            keep: !reasons.is_empty(),
            reasons,
        });
    }
    keep_evidence(&mut out, &suspicious, &ids);
    Ok(out)
}

/// Days of history from the oldest to the newest kept snapshot, and the
/// same for the whole group.
pub fn history_days(
    snapshots: &[(SnapshotId, SnapshotFile)],
    decisions: &[Decision],
) -> (f64, f64) {
    let span = |times: Vec<jiff::Timestamp>| -> f64 {
        match (times.iter().min(), times.iter().max()) {
            (Some(a), Some(b)) => (b.as_second() - a.as_second()) as f64 / 86_400.0,
            _ => 0.0,
        }
    };
    let all = span(snapshots.iter().map(|(_, s)| s.time).collect());
    let kept = span(
        snapshots
            .iter()
            .filter(|(id, _)| decisions.iter().any(|d| d.id == *id && d.keep))
            .map(|(_, s)| s.time)
            .collect(),
    );
    (kept, all)
}

/// Which snapshot fields form a retention group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct GroupBy {
    /// Group by host name.
    pub host: bool,
    /// Group by the set of paths.
    pub paths: bool,
    /// Group by the set of tags.
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

impl std::str::FromStr for GroupBy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let mut g = GroupBy {
            host: false,
            paths: false,
            tags: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "paths" => g.paths = true,
                "tags" => g.tags = true,
                other => {
                    return Err(Error::InvalidInput(format!(
                        "snapshots are grouped by host, paths and tags, not {other:?}"
                    )))
                }
            }
        }
        Ok(g)
    }
}

/// The key of a group: the values of the grouped fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct GroupKey {
    /// Host, when grouped by host.
    pub hostname: Option<String>,
    /// Sorted paths, when grouped by paths.
    pub paths: Option<Vec<String>>,
    /// Sorted tags, when grouped by tags.
    pub tags: Option<Vec<String>>,
}

impl std::fmt::Display for GroupKey {
    /// `host h, paths /a /b, tags x,y`, or `all` for the one group of
    /// ungrouped snapshots.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(h) = &self.hostname {
            parts.push(format!("host {h}"));
        }
        if let Some(p) = &self.paths {
            parts.push(format!("paths {}", p.join(" ")));
        }
        if let Some(t) = &self.tags {
            parts.push(format!("tags {}", t.join(",")));
        }
        if parts.is_empty() {
            f.write_str("all")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// The decisions for one group.
#[derive(Clone, Debug, Serialize)]
pub struct GroupPlan {
    /// The group.
    pub key: GroupKey,
    /// One decision per snapshot, newest first.
    pub decisions: Vec<Decision>,
    /// Days between the oldest and newest snapshot kept.
    pub kept_days: f64,
    /// Days between the oldest and newest snapshot of the group today.
    pub all_days: f64,
}

/// The shortest history a policy may leave a group with, unless the user
/// insists: ransomware is often found weeks or months late.
pub const MIN_HISTORY_DAYS: f64 = 365.0;

impl GroupPlan {
    /// True when the plan would cut a group that has a year of history or
    /// more to less than a year.
    pub fn shortens_history(&self) -> bool {
        self.kept_days < MIN_HISTORY_DAYS
            && self.all_days > self.kept_days
            && self.all_days >= MIN_HISTORY_DAYS
    }
}

/// Groups the snapshots and applies the policy to each group.
pub fn plan(
    snapshots: &[(SnapshotId, SnapshotFile)],
    policy: &Policy,
    group_by: GroupBy,
    tz: &jiff::tz::TimeZone,
    now: jiff::Timestamp,
) -> Result<Vec<GroupPlan>> {
    let mut groups: std::collections::BTreeMap<GroupKey, Vec<(SnapshotId, SnapshotFile)>> =
        std::collections::BTreeMap::new();
    for (id, s) in snapshots {
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        let key = GroupKey {
            hostname: group_by.host.then(|| s.hostname.clone()),
            paths: group_by.paths.then(|| sorted(&s.paths)),
            tags: group_by.tags.then(|| sorted(&s.tags)),
        };
        groups.entry(key).or_default().push((*id, s.clone()));
    }
    groups
        .into_iter()
        .map(|(key, snaps)| {
            let decisions = apply(&snaps, policy, tz, now)?;
            let (kept_days, all_days) = history_days(&snaps, &decisions);
            Ok(GroupPlan {
                key,
                decisions,
                kept_days,
                all_days,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::snapshot::{BackupSummary, VERSION};
    use crate::id::{BlobId, Hash};
    use proptest::prelude::*;

    const NOW: jiff::Timestamp = jiff::Timestamp::UNIX_EPOCH;

    fn snap(n: u32, time: &str, tags: &[&str]) -> (SnapshotId, SnapshotFile) {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&n.to_le_bytes());
        (
            SnapshotId(Hash(id)),
            SnapshotFile {
                version: VERSION,
                time: time.parse().unwrap(),
                tree: BlobId::default(),
                paths: vec!["/d".into()],
                hostname: "h".into(),
                username: "u".into(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                parent: None,
                program: "t".into(),
                summary: BackupSummary::default(),
                protection: None,
                original: None,
                copied_from: None,
                rewritten: None,
                scan: None,
            },
        )
    }

    fn kept(
        snaps: &[(SnapshotId, SnapshotFile)],
        p: &Policy,
        tz: &jiff::tz::TimeZone,
    ) -> Vec<String> {
        let d = apply(snaps, p, tz, NOW).unwrap();
        let mut out: Vec<String> = d
            .iter()
            .filter(|d| d.keep)
            .map(|d| {
                snaps
                    .iter()
                    .find(|(id, _)| *id == d.id)
                    .unwrap()
                    .1
                    .time
                    .to_string()
            })
            .collect();
        out.sort();
        out
    }

    /// Two snapshots a day, at 08:00 and 20:00 UTC, for 400 days from 2025-01-01.
    fn twice_daily() -> Vec<(SnapshotId, SnapshotFile)> {
        let start: jiff::Timestamp = "2025-01-01T08:00:00Z".parse().unwrap();
        (0..800u32)
            .map(|i| {
                let t = start
                    .checked_add(jiff::SignedDuration::from_hours(12 * i64::from(i)))
                    .unwrap();
                snap(i, &t.to_string(), &[])
            })
            .collect()
    }

    #[test]
    fn table_of_rules() {
        let utc = jiff::tz::TimeZone::UTC;
        let s = twice_daily();
        // The newest is 2026-02-04T20:00Z (a Wednesday of ISO week 6).
        let k = |p: Policy| kept(&s, &p, &utc);
        assert_eq!(
            k(Policy {
                keep_last: 3,
                ..Default::default()
            }),
            [
                "2026-02-03T20:00:00Z",
                "2026-02-04T08:00:00Z",
                "2026-02-04T20:00:00Z"
            ]
        );
        // The newest of each of the last two days.
        assert_eq!(
            k(Policy {
                keep_daily: 2,
                ..Default::default()
            }),
            ["2026-02-03T20:00:00Z", "2026-02-04T20:00:00Z"]
        );
        assert_eq!(
            k(Policy {
                keep_hourly: 2,
                ..Default::default()
            }),
            ["2026-02-04T08:00:00Z", "2026-02-04T20:00:00Z"]
        );
        // ISO weeks: week 5 ended on Sunday 2026-02-01.
        assert_eq!(
            k(Policy {
                keep_weekly: 2,
                ..Default::default()
            }),
            ["2026-02-01T20:00:00Z", "2026-02-04T20:00:00Z"]
        );
        assert_eq!(
            k(Policy {
                keep_monthly: 2,
                ..Default::default()
            }),
            ["2026-01-31T20:00:00Z", "2026-02-04T20:00:00Z"]
        );
        // Only two years exist.
        assert_eq!(
            k(Policy {
                keep_yearly: 5,
                ..Default::default()
            }),
            ["2025-12-31T20:00:00Z", "2026-02-04T20:00:00Z"]
        );
        // Everything at or after newest - 1 day.
        assert_eq!(
            k(Policy {
                keep_within: Some("1d".into()),
                ..Default::default()
            }),
            [
                "2026-02-03T20:00:00Z",
                "2026-02-04T08:00:00Z",
                "2026-02-04T20:00:00Z"
            ]
        );
        // One per month back to 2025-12-04T20:00.
        assert_eq!(
            k(Policy {
                keep_within_monthly: Some("2m".into()),
                ..Default::default()
            }),
            [
                "2025-12-31T20:00:00Z",
                "2026-01-31T20:00:00Z",
                "2026-02-04T20:00:00Z"
            ]
        );
        // Rules add up: daily 1 and monthly 2 share the newest.
        assert_eq!(
            k(Policy {
                keep_daily: 1,
                keep_monthly: 2,
                ..Default::default()
            }),
            ["2026-01-31T20:00:00Z", "2026-02-04T20:00:00Z"]
        );
        // No rule keeps nothing.
        assert!(kept(&s, &Policy::default(), &utc).is_empty());
    }

    #[test]
    fn tags_and_reasons() {
        let utc = jiff::tz::TimeZone::UTC;
        let s = vec![
            snap(1, "2026-01-01T10:00:00Z", &["keep"]),
            snap(2, "2026-01-02T10:00:00Z", &[]),
            snap(3, "2026-01-03T10:00:00Z", &[]),
        ];
        let d = apply(
            &s,
            &Policy {
                keep_last: 1,
                keep_daily: 1,
                keep_tags: vec!["keep".into()],
                ..Default::default()
            },
            &utc,
            NOW,
        )
        .unwrap();
        assert_eq!(d[0].reasons, vec!["last", "daily"]);
        assert!(!d[1].keep);
        assert_eq!(d[2].reasons, vec!["tag keep"]);
    }

    #[test]
    fn days_follow_the_users_time_zone_across_dst() {
        // 2026-03-29 is the spring DST change in Berlin. 23:30 UTC on
        // 2026-03-28 is 00:30 on the 29th in Berlin (UTC+1).
        let berlin = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        let s = vec![
            snap(1, "2026-03-28T22:30:00Z", &[]),
            snap(2, "2026-03-28T23:30:00Z", &[]),
            snap(3, "2026-03-29T21:30:00Z", &[]),
        ];
        // In Berlin, #2 and #3 fall on the 29th (#3 is 23:30 CEST): daily 2 keeps #3 and #1.
        assert_eq!(
            kept(
                &s,
                &Policy {
                    keep_daily: 2,
                    ..Default::default()
                },
                &berlin
            ),
            vec!["2026-03-28T22:30:00Z", "2026-03-29T21:30:00Z"]
        );
        // In UTC, #1 and #2 share the 28th.
        assert_eq!(
            kept(
                &s,
                &Policy {
                    keep_daily: 2,
                    ..Default::default()
                },
                &jiff::tz::TimeZone::UTC
            ),
            vec!["2026-03-28T23:30:00Z", "2026-03-29T21:30:00Z"]
        );
    }

    #[test]
    fn leap_years_and_durations() {
        assert_eq!(parse_duration("1y6m").unwrap().get_years(), 1);
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("3x").is_err());
        let utc = jiff::tz::TimeZone::UTC;
        // Newest 2024-02-29: within 1y reaches back to 2023-02-28 (jiff clamps).
        let s = vec![
            snap(1, "2023-02-27T12:00:00Z", &[]),
            snap(2, "2023-03-01T12:00:00Z", &[]),
            snap(3, "2024-02-29T12:00:00Z", &[]),
        ];
        assert_eq!(
            kept(
                &s,
                &Policy {
                    keep_within: Some("1y".into()),
                    ..Default::default()
                },
                &utc
            ),
            vec!["2023-03-01T12:00:00Z", "2024-02-29T12:00:00Z"]
        );
    }

    #[test]
    fn protected_snapshots_are_kept_until_their_date() {
        let utc = jiff::tz::TimeZone::UTC;
        let mut s = vec![
            snap(1, "2026-01-01T10:00:00Z", &[]),
            snap(2, "2026-01-02T10:00:00Z", &[]),
            snap(3, "2026-01-03T10:00:00Z", &[]),
        ];
        s[0].1.protection = Some(crate::format::snapshot::Protection { until: None });
        s[1].1.protection = Some(crate::format::snapshot::Protection {
            until: Some("2026-06-01T00:00:00Z".parse().unwrap()),
        });
        let p = Policy {
            keep_last: 1,
            ..Default::default()
        };
        let before: jiff::Timestamp = "2026-05-01T00:00:00Z".parse().unwrap();
        let d = apply(&s, &p, &utc, before).unwrap();
        assert!(d.iter().all(|d| d.keep), "{d:?}");
        assert_eq!(d[1].reasons, vec!["protected until 2026-06-01T00:00:00Z"]);
        assert_eq!(d[2].reasons, vec!["protected"]);
        let after: jiff::Timestamp = "2026-07-01T00:00:00Z".parse().unwrap();
        let d = apply(&s, &p, &utc, after).unwrap();
        assert!(!d[1].keep && d[2].keep, "{d:?}");
    }

    #[test]
    fn the_recommended_policy_keeps_the_year_and_thins_the_rest() {
        let utc = jiff::tz::TimeZone::UTC;
        let s = twice_daily(); // 400 days, two a day
        let p = plan(&s, &Policy::recommended(), GroupBy::default(), &utc, NOW).unwrap();
        assert!(
            !p[0].shortens_history(),
            "{} of {} days",
            p[0].kept_days,
            p[0].all_days
        );
        // The oldest kept is the newest of January 2025 (monthly), 369 days back.
        assert!(p[0].kept_days >= 365.0, "{}", p[0].kept_days);
        let kept = p[0].decisions.iter().filter(|d| d.keep).count();
        // 2 days hourly (4) + 30 daily + ~13 weekly + 14 monthly + 2 yearly, with overlaps.
        assert!((40..=70).contains(&kept), "{kept}");
        Policy::recommended().validate().unwrap();
    }

    #[test]
    fn the_one_year_floor() {
        let utc = jiff::tz::TimeZone::UTC;
        let s = twice_daily(); // 400 days
        let p = plan(
            &s,
            &Policy {
                keep_daily: 30,
                ..Default::default()
            },
            GroupBy::default(),
            &utc,
            NOW,
        )
        .unwrap();
        assert_eq!(p.len(), 1);
        assert!(
            p[0].shortens_history(),
            "{} of {} days",
            p[0].kept_days,
            p[0].all_days
        );
        let p = plan(
            &s,
            &Policy {
                keep_daily: 30,
                keep_monthly: 24,
                ..Default::default()
            },
            GroupBy::default(),
            &utc,
            NOW,
        )
        .unwrap();
        assert!(
            !p[0].shortens_history(),
            "{} of {} days",
            p[0].kept_days,
            p[0].all_days
        );
        // A young group is not held to the floor.
        let young: Vec<_> = s[..100].to_vec();
        let p = plan(
            &young,
            &Policy {
                keep_last: 1,
                ..Default::default()
            },
            GroupBy::default(),
            &utc,
            NOW,
        )
        .unwrap();
        assert!(!p[0].shortens_history());
    }

    #[test]
    fn groups_by_host_and_paths() {
        let utc = jiff::tz::TimeZone::UTC;
        let mut s = vec![
            snap(1, "2026-01-01T10:00:00Z", &[]),
            snap(2, "2026-01-02T10:00:00Z", &[]),
        ];
        s[1].1.hostname = "other".into();
        let p = plan(
            &s,
            &Policy {
                keep_last: 1,
                ..Default::default()
            },
            GroupBy::default(),
            &utc,
            NOW,
        )
        .unwrap();
        assert_eq!(p.len(), 2);
        assert!(p.iter().all(|g| g.decisions.iter().all(|d| d.keep)));
        let p = plan(
            &s,
            &Policy {
                keep_last: 1,
                ..Default::default()
            },
            "paths".parse().unwrap(),
            &utc,
            NOW,
        )
        .unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].decisions.iter().filter(|d| d.keep).count(), 1);
        assert!("host,bogus".parse::<GroupBy>().is_err());
    }

    proptest! {
        #[test]
        fn every_snapshot_gets_exactly_one_decision_whatever_the_order(
            times in proptest::collection::vec(0i64..100_000_000, 0..40),
            last in 0u32..5, daily in 0u32..5, monthly in 0u32..5, shuffle in any::<u64>(),
        ) {
            let mut s: Vec<_> = times.iter().enumerate().map(|(i, t)| snap(i as u32, &jiff::Timestamp::from_second(1_700_000_000 + t).unwrap().to_string(), &[])).collect();
            let p = Policy { keep_last: last, keep_daily: daily, keep_monthly: monthly, ..Default::default() };
            let a = apply(&s, &p, &jiff::tz::TimeZone::UTC, NOW).unwrap();
            // Rotate the input: the same decisions come out.
            let k = if s.is_empty() { 0 } else { (shuffle as usize) % s.len() };
            s.rotate_left(k);
            let b = apply(&s, &p, &jiff::tz::TimeZone::UTC, NOW).unwrap();
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(a.len(), times.len());
            let mut ids: Vec<_> = a.iter().map(|d| d.id).collect();
            ids.sort();
            ids.dedup();
            prop_assert_eq!(ids.len(), times.len());
            prop_assert!(a.iter().filter(|d| d.keep).count() as u32 <= last + daily + monthly);
        }
    }
}
