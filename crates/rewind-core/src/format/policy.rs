//! The repository's stored settings: the retention policy and, optionally,
//! the copy target that backups send each new snapshot to. JSON, compressed
//! and sealed; files are named by their content hash and the newest (by
//! `time`) wins. `copy_to` is a compatible addition to version 1: readers
//! that do not know it ignore it.

use serde::{Deserialize, Serialize};

use crate::crypto::Domain;
use crate::error::{Error, Result};
use crate::id::Hash;

/// Policy file format version.
pub const VERSION: u32 = 1;

/// A retention policy. Counts of 0 and `None` durations are off.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Keep the N newest.
    pub keep_last: u32,
    /// Keep the newest of each of the last N hours.
    pub keep_hourly: u32,
    /// ... days.
    pub keep_daily: u32,
    /// ... ISO weeks.
    pub keep_weekly: u32,
    /// ... months.
    pub keep_monthly: u32,
    /// ... years.
    pub keep_yearly: u32,
    /// Keep everything newer than the newest snapshot minus this.
    pub keep_within: Option<String>,
    /// Keep the newest of each hour within this duration.
    pub keep_within_hourly: Option<String>,
    /// ... day.
    pub keep_within_daily: Option<String>,
    /// ... ISO week.
    pub keep_within_weekly: Option<String>,
    /// ... month.
    pub keep_within_monthly: Option<String>,
    /// ... year.
    pub keep_within_yearly: Option<String>,
    /// Keep snapshots with any of these tags.
    pub keep_tags: Vec<String>,
}

impl Policy {
    /// The policy of a fresh repository: hourly for 2 days, daily for 30
    /// days, weekly for 3 months, monthly for 2 years, yearly for 10 years.
    pub fn recommended() -> Self {
        Policy {
            keep_within_hourly: Some("2d".into()),
            keep_within_daily: Some("30d".into()),
            keep_within_weekly: Some("3m".into()),
            keep_within_monthly: Some("2y".into()),
            keep_within_yearly: Some("10y".into()),
            ..Default::default()
        }
    }

    /// Checks every duration.
    pub fn validate(&self) -> Result<()> {
        for d in [
            &self.keep_within,
            &self.keep_within_hourly,
            &self.keep_within_daily,
            &self.keep_within_weekly,
            &self.keep_within_monthly,
            &self.keep_within_yearly,
        ]
        .into_iter()
        .flatten()
        {
            parse_duration(d)?;
        }
        Ok(())
    }

    /// True when no rule is set (such a policy would remove everything).
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}

/// Parses `1y6m`, `90d`, `2w3d12h` into a span.
pub fn parse_duration(s: &str) -> Result<jiff::Span> {
    let bad = || {
        Error::InvalidInput(format!(
            "{s:?} is not a duration; use e.g. 1y6m, 90d, 2w3d, 12h"
        ))
    };
    let mut span = jiff::Span::new();
    let mut num = String::new();
    let mut any = false;
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: i64 = num.parse().map_err(|_| bad())?;
        num.clear();
        span = match c {
            'y' => span.try_years(n),
            'm' => span.try_months(n),
            'w' => span.try_weeks(n),
            'd' => span.try_days(n),
            'h' => span.try_hours(n),
            _ => return Err(bad()),
        }
        .map_err(|_| bad())?;
        any = true;
    }
    if !num.is_empty() || !any {
        return Err(bad());
    }
    Ok(span)
}

/// Contents of a policy file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyFile {
    /// Format version (1).
    pub version: u32,
    /// When it was set.
    pub time: jiff::Timestamp,
    /// The policy.
    pub policy: Policy,
    /// Where `rewind backup` copies each new snapshot (unless told
    /// otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_to: Option<CopyTarget>,
    /// Where `rewind backup` POSTs an alert when a snapshot looks like a
    /// ransomware attack (unless `--notify-url` says otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
}

/// A stored copy target. Its password is never stored here, only where to
/// read it on the machine that runs the backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyTarget {
    /// The destination repository's location.
    pub location: String,
    /// Its backend options (`key=value`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub options: std::collections::BTreeMap<String, String>,
    /// A file that holds its password, if one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
}

impl super::RepoFile for PolicyFile {
    const TYPE: super::FileType = super::FileType::Policy;
    const DOMAIN: Domain<'static> = Domain::Policy;
    type Id = Hash;

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("policy serializes")
    }

    fn decode(name: &str, plain: &[u8]) -> Result<Self> {
        super::decode_json("policy", name, plain, |p: &Self| p.version, VERSION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Crypto;
    use crate::format::RepoFile;

    #[test]
    fn policy_file_round_trip_and_tamper() {
        let c = Crypto::generate();
        let f = PolicyFile {
            version: VERSION,
            time: jiff::Timestamp::UNIX_EPOCH,
            policy: Policy::recommended(),
            copy_to: Some(CopyTarget {
                location: "s3:http://host/bucket".into(),
                options: [("s3.region".to_string(), "eu".to_string())].into(),
                password_file: None,
            }),
            notify_url: Some("https://alerts.example/hook".into()),
        };
        let (name, mut sealed) = f.seal(&c);
        assert_eq!(name, Hash::of(&sealed));
        assert_eq!(PolicyFile::open(&c, &name.to_hex(), &sealed).unwrap(), f);
        // A name that is not the content's hash is refused.
        assert!(PolicyFile::open(&c, &"0".repeat(64), &sealed).is_err());
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(PolicyFile::open(&c, &Hash::of(&sealed).to_hex(), &sealed).is_err());
    }

    #[test]
    fn a_policy_file_without_copy_target_still_reads() {
        // As written before copy targets and alert URLs existed.
        let policy = serde_json::to_string(&Policy::recommended()).unwrap();
        let old = format!(r#"{{"version":1,"time":"2026-01-01T00:00:00Z","policy":{policy}}}"#);
        let f: PolicyFile = serde_json::from_str(&old).unwrap();
        assert_eq!(f.copy_to, None);
        assert_eq!(f.notify_url, None);
        assert_eq!(f.policy, Policy::recommended());
    }
}
