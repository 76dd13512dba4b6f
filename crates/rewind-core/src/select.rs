//! Naming snapshots: a full or short id, `latest`, or a point in time
//! (`@2026-03-01`, `--as-of "2026-03-01 14:00"`): the newest snapshot at or
//! before that time, among those that pass the filter.

use crate::error::{Error, Result};
use crate::format::snapshot::SnapshotFile;
use crate::id::SnapshotId;

/// Which snapshots a command considers.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SnapshotFilter {
    /// Only these hosts (any if empty).
    pub hosts: Vec<String>,
    /// Only snapshots having all tags of one of these sets (comma-separated
    /// tags within one string); any if empty.
    pub tags: Vec<String>,
    /// Only snapshots that include these paths (any if empty).
    pub paths: Vec<String>,
}

impl SnapshotFilter {
    /// True if the snapshot passes.
    pub fn matches(&self, s: &SnapshotFile) -> bool {
        (self.hosts.is_empty() || self.hosts.iter().any(|h| h == &s.hostname))
            && (self.tags.is_empty()
                || self.tags.iter().any(|set| {
                    set.split(',')
                        .filter(|t| !t.is_empty())
                        .all(|t| s.tags.iter().any(|st| st == t))
                }))
            && (self.paths.is_empty()
                || self.paths.iter().all(|p| {
                    s.paths
                        .iter()
                        .any(|sp| sp == p.trim_end_matches('/') || sp == p)
                }))
    }
}

/// Parses a point in time: RFC 3339, `YYYY-MM-DD`, `YYYY-MM-DD HH:MM[:SS]`,
/// or `YYYY-MM-DDTHH:MM[:SS]`, in the given time zone when no offset is given.
/// A date alone means the start of that day.
pub fn parse_time(s: &str, tz: &jiff::tz::TimeZone) -> Result<jiff::Timestamp> {
    let s = s.trim();
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Ok(ts);
    }
    let normalized = s.replacen(' ', "T", 1);
    let civil = normalized
        .parse::<jiff::civil::DateTime>()
        .or_else(|_| normalized.parse::<jiff::civil::Date>().map(|d| d.to_datetime(jiff::civil::Time::midnight())))
        .map_err(|_| Error::InvalidInput(format!("cannot read {s:?} as a time; use e.g. \"2026-03-01\", \"2026-03-01 14:00\" or RFC 3339")))?;
    civil
        .to_zoned(tz.clone())
        .map(|z| z.timestamp())
        .map_err(|e| Error::InvalidInput(format!("{s:?} is not a valid local time: {e}")))
}

/// Resolves a snapshot selector among `snapshots` (sorted oldest first).
///
/// `spec` is `latest`, `@TIME`, or an id prefix; `as_of`, when given,
/// replaces `latest` (and is refused together with an id).
pub fn select<'a>(
    snapshots: &'a [(SnapshotId, SnapshotFile)],
    spec: &str,
    as_of: Option<jiff::Timestamp>,
    filter: &SnapshotFilter,
    tz: &jiff::tz::TimeZone,
) -> Result<&'a (SnapshotId, SnapshotFile)> {
    let spec = spec.trim();
    if spec.is_empty() {
        // Never a silent `latest`: an empty argument is usually a shell
        // variable that was not set.
        return Err(Error::InvalidInput(
            "the snapshot argument is empty; give a snapshot id, `latest` or @TIME".into(),
        ));
    }
    let (time, label) = if let Some(t) = spec.strip_prefix('@') {
        if as_of.is_some() {
            return Err(Error::InvalidInput(
                "give either @TIME or a point in time to go back to (as of), not both".into(),
            ));
        }
        (Some(parse_time(t, tz)?), spec.to_string())
    } else if spec == "latest" {
        (
            as_of,
            match as_of {
                Some(t) => format!("as of {t}"),
                None => "latest".to_string(),
            },
        )
    } else {
        if as_of.is_some() {
            return Err(Error::InvalidInput(format!(
                "a point in time (as of) picks a snapshot by time; do not also give the id {spec}"
            )));
        }
        if !spec.bytes().all(|b| b.is_ascii_hexdigit()) || spec.len() > 64 {
            return Err(Error::InvalidInput(format!(
                "{spec:?} is not a snapshot id, `latest` or @TIME"
            )));
        }
        let spec_l = spec.to_ascii_lowercase();
        let found: Vec<_> = snapshots
            .iter()
            .filter(|(id, _)| id.to_hex().starts_with(&spec_l))
            .collect();
        return match found.as_slice() {
            [one] => Ok(one),
            [] => Err(Error::SnapshotNotFound(spec.to_string())),
            _ => Err(Error::AmbiguousSnapshot(spec.to_string())),
        };
    };
    snapshots
        .iter()
        .rev()
        .filter(|(_, s)| filter.matches(s))
        .find(|(_, s)| time.is_none_or(|t| s.time <= t))
        .ok_or_else(|| Error::SnapshotNotFound(describe(&label, filter)))
}

fn describe(label: &str, f: &SnapshotFilter) -> String {
    let mut out = label.to_string();
    if !f.hosts.is_empty() {
        out += &format!(" with host {}", f.hosts.join(" or "));
    }
    if !f.tags.is_empty() {
        out += &format!(" with tags {}", f.tags.join(" or "));
    }
    if !f.paths.is_empty() {
        out += &format!(" with paths {}", f.paths.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::snapshot::{BackupSummary, VERSION};
    use crate::id::{BlobId, Hash};

    fn snap(n: u8, time: &str, host: &str, tags: &[&str]) -> (SnapshotId, SnapshotFile) {
        (
            SnapshotId(Hash([n; 32])),
            SnapshotFile {
                version: VERSION,
                time: time.parse().unwrap(),
                tree: BlobId::default(),
                paths: vec!["/data".into()],
                hostname: host.into(),
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

    fn list() -> Vec<(SnapshotId, SnapshotFile)> {
        vec![
            snap(0x11, "2026-02-27T10:00:00Z", "a", &[]),
            snap(0x22, "2026-03-01T09:00:00Z", "a", &["daily"]),
            snap(0x23, "2026-03-01T15:00:00Z", "b", &[]),
            snap(0x33, "2026-03-03T10:00:00Z", "a", &["daily", "x"]),
        ]
    }

    #[test]
    fn point_in_time_selection() {
        let l = list();
        let utc = jiff::tz::TimeZone::UTC;
        let f = SnapshotFilter::default();
        assert_eq!(
            select(&l, "latest", None, &f, &utc).unwrap().0 .0 .0[0],
            0x33
        );
        // Start of the day: before anything of March 1st.
        assert_eq!(
            select(&l, "@2026-03-01", None, &f, &utc).unwrap().0 .0 .0[0],
            0x11
        );
        assert_eq!(
            select(&l, "@2026-03-01 14:00", None, &f, &utc)
                .unwrap()
                .0
                 .0
                 .0[0],
            0x22
        );
        let t = parse_time("2026-03-02", &utc).unwrap();
        assert_eq!(
            select(&l, "latest", Some(t), &f, &utc).unwrap().0 .0 .0[0],
            0x23
        );
        let host_a = SnapshotFilter {
            hosts: vec!["a".into()],
            ..Default::default()
        };
        assert_eq!(
            select(&l, "latest", Some(t), &host_a, &utc)
                .unwrap()
                .0
                 .0
                 .0[0],
            0x22
        );
        assert!(matches!(
            select(&l, "@2020-01-01", None, &f, &utc),
            Err(Error::SnapshotNotFound(_))
        ));
        let tagged = SnapshotFilter {
            tags: vec!["daily,x".into()],
            ..Default::default()
        };
        assert_eq!(
            select(&l, "latest", None, &tagged, &utc).unwrap().0 .0 .0[0],
            0x33
        );
    }

    #[test]
    fn ids_and_errors() {
        let l = list();
        let utc = jiff::tz::TimeZone::UTC;
        let f = SnapshotFilter::default();
        assert_eq!(select(&l, "3333", None, &f, &utc).unwrap().0 .0 .0[0], 0x33);
        assert!(matches!(
            select(&l, "2", None, &f, &utc),
            Err(Error::AmbiguousSnapshot(_))
        ));
        assert!(matches!(
            select(&l, "4444", None, &f, &utc),
            Err(Error::SnapshotNotFound(_))
        ));
        assert!(select(&l, "yesterday", None, &f, &utc).is_err());
        for empty in ["", " ", "\t"] {
            assert!(
                matches!(select(&l, empty, None, &f, &utc), Err(Error::InvalidInput(m)) if m.contains("empty")),
                "{empty:?}"
            );
        }
        assert!(select(&l, "@not a date", None, &f, &utc).is_err());
        assert!(select(&l, "3333", Some(jiff::Timestamp::now()), &f, &utc).is_err());
    }

    #[test]
    fn local_time_zone_and_dst() {
        let tz = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        // Summer time: UTC+2.
        assert_eq!(
            parse_time("2026-07-01 14:00", &tz).unwrap().to_string(),
            "2026-07-01T12:00:00Z"
        );
        assert_eq!(
            parse_time("2026-01-01 14:00", &tz).unwrap().to_string(),
            "2026-01-01T13:00:00Z"
        );
        assert_eq!(
            parse_time("2026-01-01T14:00:00+05:00", &tz)
                .unwrap()
                .to_string(),
            "2026-01-01T09:00:00Z"
        );
    }
}
