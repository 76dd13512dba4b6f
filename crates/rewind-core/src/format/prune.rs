//! Prune's state and the markers of running operations: JSON, compressed and
//! sealed, named by the hash of their bytes (docs/DESIGN.md §3.9, §3.10).

use serde::{Deserialize, Serialize};

use crate::crypto::Domain;
use crate::error::Result;
use crate::id::{Hash, PackId};

/// Prune state and running marker format version.
pub const VERSION: u32 = 1;

/// A pack that is in no index file and waits for deletion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// The pack.
    pub pack: PackId,
    /// When a prune first saw it outside the index (prune's clock).
    pub since: jiff::Timestamp,
}

/// Contents of a prune state file. Each prune writes a complete one and then
/// removes the older ones; of several (a crash in between) the newest wins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneState {
    /// Format version (1).
    pub version: u32,
    /// When the prune that wrote it started.
    pub time: jiff::Timestamp,
    /// Packs waiting for deletion.
    pub marks: Vec<Mark>,
}

/// What a running marker announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunningKind {
    /// A backup (or anything else that adds blobs and then a snapshot).
    Backup,
    /// A prune.
    Prune,
}

/// Contents of a running marker. It is rewritten every few minutes while the
/// operation runs and removed when it ends; one left by a killed process goes
/// stale and is ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningMarker {
    /// Format version (1).
    pub version: u32,
    /// What runs.
    pub kind: RunningKind,
    /// Host name.
    pub hostname: String,
    /// Process id on that host.
    pub pid: u32,
    /// When it started, before it read the index (its own clock).
    pub start: jiff::Timestamp,
    /// When the marker was last rewritten.
    pub refreshed: jiff::Timestamp,
    /// The process's PID namespace (the inode of `/proc/self/ns/pid`):
    /// a pid names a process only within it, so a prune on the same host
    /// name but in another namespace (a container) cannot tell whether the
    /// process lives. Optional (§3.10; absent in older markers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_namespace: Option<u64>,
}

impl super::RepoFile for PruneState {
    const TYPE: super::FileType = super::FileType::PruneState;
    const DOMAIN: Domain<'static> = Domain::PruneState;
    type Id = Hash;

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("prune state serializes")
    }

    fn decode(name: &str, plain: &[u8]) -> Result<Self> {
        super::decode_json("prune state", name, plain, |s: &Self| s.version, VERSION)
    }
}

impl super::RepoFile for RunningMarker {
    const TYPE: super::FileType = super::FileType::Running;
    const DOMAIN: Domain<'static> = Domain::Running;
    type Id = Hash;

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("running marker serializes")
    }

    fn decode(name: &str, plain: &[u8]) -> Result<Self> {
        super::decode_json("running marker", name, plain, |m: &Self| m.version, VERSION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Crypto;
    use crate::format::RepoFile;

    #[test]
    fn round_trip_and_tamper() {
        let c = Crypto::generate();
        let s = PruneState {
            version: VERSION,
            time: jiff::Timestamp::UNIX_EPOCH,
            marks: vec![Mark {
                pack: PackId(Hash([7; 32])),
                since: jiff::Timestamp::UNIX_EPOCH,
            }],
        };
        let (name, mut sealed) = s.seal(&c);
        assert_eq!(PruneState::open(&c, &name.to_hex(), &sealed).unwrap(), s);
        // Not interchangeable with a running marker.
        assert!(RunningMarker::open(&c, &name.to_hex(), &sealed).is_err());
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(PruneState::open(&c, &name.to_hex(), &sealed).is_err());
        assert!(PruneState::open(&c, &Hash::of(&sealed).to_hex(), &sealed).is_err());
    }
}
