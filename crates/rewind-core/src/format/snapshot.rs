//! Snapshot files: a point in time. JSON (so that fields can be added
//! without a new version), compressed and sealed.

use serde::{Deserialize, Serialize};

use crate::crypto::Domain;
use crate::error::Result;
use crate::id::{BlobId, SnapshotId};

/// Snapshot format version.
pub const VERSION: u32 = 1;

/// What a backup did, stored with its snapshot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BackupSummary {
    /// Files read for the first time.
    pub files_new: u64,
    /// Files read again because they changed.
    pub files_changed: u64,
    /// Files taken from the parent without reading.
    pub files_unchanged: u64,
    /// Directories.
    pub dirs: u64,
    /// Other nodes (symlinks, devices, fifos, sockets).
    pub others: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Logical size of every file in the snapshot.
    pub total_bytes: u64,
    /// Blobs that were new to the repository.
    pub blobs_added: u64,
    /// Bytes of plaintext in new blobs.
    pub bytes_added_raw: u64,
    /// Bytes stored for new blobs (after compression and encryption).
    pub bytes_added_stored: u64,
    /// Files or directories that could not be read (reported by name).
    pub errors: u64,
    /// Seconds the backup took.
    pub duration_secs: f64,
}

/// Contents of a snapshot file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// Format version (1).
    pub version: u32,
    /// Point in time, RFC 3339 with nanoseconds, UTC.
    pub time: jiff::Timestamp,
    /// Root tree.
    pub tree: BlobId,
    /// Backed-up paths as given (absolute, lossy UTF-8 for display; the tree
    /// holds the exact bytes).
    pub paths: Vec<String>,
    /// Host name.
    pub hostname: String,
    /// User who ran the backup.
    pub username: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Parent snapshot used to skip unchanged files.
    #[serde(default)]
    pub parent: Option<SnapshotId>,
    /// Program that wrote it.
    pub program: String,
    /// Statistics of the backup.
    #[serde(default)]
    pub summary: BackupSummary,
    /// Set by `rewind protect`: retention never removes this snapshot
    /// (until the time given, or for good when it has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protection: Option<Protection>,
    /// The snapshot this one replaced when it was rewritten (by protect or
    /// unprotect); the contents are the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<SnapshotId>,
    /// Set by `rewind copy`: the identity of the source snapshot (its own
    /// `copied_from`, else its `original`, else its id), so that copies are
    /// not made twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_from: Option<SnapshotId>,
    /// When `protect`, `unprotect` or `mark` wrote this copy. Of several
    /// files with the same identity (`original`, else the id), the one
    /// rewritten last is the snapshot; the others are superseded copies
    /// that storage refused to delete yet (the rewind server's minimum
    /// delete age) or that a crash left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewritten: Option<jiff::Timestamp>,
    /// The ransomware scan against the parent (`crate::format::scan`), and a
    /// person's decision on it. Absent: not scanned (no parent, or written
    /// before scans existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<crate::format::scan::ScanResult>,
}

/// Protection of a snapshot against retention.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Protection {
    /// Protected until this time; for good when `None`.
    pub until: Option<jiff::Timestamp>,
}

impl SnapshotFile {
    /// True when retention must keep this snapshot at `now`.
    pub fn is_protected(&self, now: jiff::Timestamp) -> bool {
        self.protection
            .as_ref()
            .is_some_and(|p| p.until.is_none_or(|u| now < u))
    }
}

impl super::RepoFile for SnapshotFile {
    const TYPE: super::FileType = super::FileType::Snapshot;
    const DOMAIN: Domain<'static> = Domain::Snapshot;
    type Id = SnapshotId;

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("snapshot serializes")
    }

    fn decode(name: &str, plain: &[u8]) -> Result<Self> {
        super::decode_json("snapshot", name, plain, |s: &Self| s.version, VERSION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Crypto;
    use crate::format::RepoFile;
    use crate::id::Hash;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn snapshot_round_trip(secs in 0i64..4_000_000_000, nanos in 0i32..1_000_000_000, host in ".{0,20}", tags in proptest::collection::vec("[a-z]{1,8}", 0..4), files in any::<u64>()) {
            let c = Crypto::generate();
            let s = SnapshotFile {
                version: VERSION,
                time: jiff::Timestamp::new(secs, nanos).unwrap(),
                tree: BlobId(Hash([1; 32])),
                paths: vec!["/home/u".into()],
                hostname: host,
                username: "u".into(),
                tags,
                parent: Some(SnapshotId(Hash([2; 32]))),
                program: "rewind test".into(),
                summary: BackupSummary { files_new: files, ..Default::default() },
                protection: if files % 2 == 0 { None } else { Some(Protection { until: if files % 3 == 0 { None } else { Some(jiff::Timestamp::UNIX_EPOCH) } }) },
                original: if files % 5 == 0 { None } else { Some(SnapshotId(Hash([3; 32]))) },
                copied_from: if files % 3 == 0 { None } else { Some(SnapshotId(Hash([4; 32]))) },
                rewritten: None,
                scan: None,
            };
            let (id, sealed) = s.seal(&c);
            prop_assert_eq!(id.0, Hash::of(&sealed));
            prop_assert_eq!(SnapshotFile::open(&c, &id.to_hex(), &sealed).unwrap(), s);
        }
    }

    #[test]
    fn a_snapshot_sealed_by_another_key_or_as_an_index_is_refused() {
        let a = Crypto::generate();
        let b = Crypto::generate();
        let s = SnapshotFile {
            version: VERSION,
            time: jiff::Timestamp::UNIX_EPOCH,
            tree: BlobId::default(),
            paths: vec![],
            hostname: String::new(),
            username: String::new(),
            tags: vec![],
            parent: None,
            program: String::new(),
            summary: BackupSummary::default(),
            protection: None,
            original: None,
            copied_from: None,
            rewritten: None,
            scan: None,
        };
        let (id, sealed) = s.seal(&a);
        let name = id.to_hex();
        assert!(SnapshotFile::open(&a, &name, &sealed).is_ok());
        assert!(SnapshotFile::open(&b, &name, &sealed).is_err());
        assert!(crate::format::index::IndexFile::open(&a, &name, &sealed).is_err());
    }
}
