//! The repository's stored settings: the retention policy and, optionally,
//! the copy target that backups send each new snapshot to. JSON, compressed
//! and sealed; files are named by their content hash and the newest (by
//! `time`) wins. `copy_to` is a compatible addition to version 1: readers
//! that do not know it ignore it.

use serde::{Deserialize, Serialize};

use crate::crypto::{Crypto, Domain};
use crate::error::{Error, Result};
use crate::id::Hash;
use crate::retention::Policy;

/// Policy file format version.
pub const VERSION: u32 = 1;

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

impl PolicyFile {
    /// Sealed bytes and name.
    pub fn seal(&self, crypto: &Crypto) -> (Hash, Vec<u8>) {
        let plain = serde_json::to_vec(self).expect("policy serializes");
        let sealed = super::seal_object(crypto, Domain::Policy, &plain);
        (Hash::of(&sealed), sealed)
    }

    /// Opens and decodes a policy file.
    pub fn open(crypto: &Crypto, name: &str, sealed: &[u8]) -> Result<Self> {
        let plain = super::open_object(crypto, Domain::Policy, "policy", name, sealed)?;
        let p: PolicyFile =
            serde_json::from_slice(&plain).map_err(|e| Error::corrupt("policy", name, e))?;
        if p.version != VERSION {
            return Err(Error::corrupt(
                "policy",
                name,
                format!("unknown policy version {}", p.version),
            ));
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(PolicyFile::open(&c, "p", &sealed).unwrap(), f);
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(PolicyFile::open(&c, "p", &sealed).is_err());
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
