//! Prune's state and the markers of running operations: JSON, compressed and
//! sealed, named by the hash of their bytes (docs/DESIGN.md §3.9, §3.10).

use serde::{Deserialize, Serialize};

use crate::crypto::{Crypto, Domain};
use crate::error::{Error, Result};
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
}

macro_rules! sealed_json {
    ($ty:ty, $domain:expr, $what:literal) => {
        impl $ty {
            /// Sealed bytes and name.
            pub fn seal(&self, crypto: &Crypto) -> (Hash, Vec<u8>) {
                let plain = serde_json::to_vec(self).expect("serializes");
                let sealed = super::seal_object(crypto, $domain, &plain);
                (Hash::of(&sealed), sealed)
            }

            /// Checks the name, opens and decodes.
            pub fn open(crypto: &Crypto, name: &str, sealed: &[u8]) -> Result<Self> {
                if Hash::of(sealed).to_hex() != name {
                    return Err(Error::corrupt(
                        $what,
                        name,
                        "content does not match its name",
                    ));
                }
                let plain = super::open_object(crypto, $domain, $what, name, sealed)?;
                let v: Self =
                    serde_json::from_slice(&plain).map_err(|e| Error::corrupt($what, name, e))?;
                if v.version != VERSION {
                    return Err(Error::corrupt(
                        $what,
                        name,
                        format!("unknown version {}", v.version),
                    ));
                }
                Ok(v)
            }
        }
    };
}

sealed_json!(PruneState, Domain::PruneState, "prune state");
sealed_json!(RunningMarker, Domain::Running, "running marker");

#[cfg(test)]
mod tests {
    use super::*;

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
