//! A restore test's result (`proofs/`, DESIGN §3.11): a sample of a
//! snapshot's files was restored, read back and compared, so every client
//! can show the newest snapshot proven restorable.

use serde::{Deserialize, Serialize};

use crate::crypto::Domain;
use crate::error::Result;
use crate::id::{Hash, SnapshotId};

/// Version of proof files.
pub const VERSION: u32 = 1;

/// One file that did not come back as it should.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofFailure {
    /// Its path in the snapshot.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

/// A restore test of one snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProofFile {
    pub version: u32,
    /// The snapshot tested.
    pub snapshot: SnapshotId,
    /// When the test ended.
    pub time: jiff::Timestamp,
    /// The machine that ran it.
    pub hostname: String,
    /// Entries of the whole tree whose metadata was read.
    pub entries: u64,
    /// Regular files in the snapshot.
    pub files: u64,
    /// Files restored and compared.
    pub tested: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Of the tested files: those also compared with the live file (same
    /// size and mtime as in the snapshot).
    pub live_compared: u64,
    /// What failed; empty when the test passed.
    pub failures: Vec<ProofFailure>,
}

impl ProofFile {
    /// Whether every tested file came back right.
    pub fn passed(&self) -> bool {
        self.failures.is_empty() && self.tested > 0
    }
}

impl super::RepoFile for ProofFile {
    const TYPE: super::FileType = super::FileType::Proof;
    const DOMAIN: Domain<'static> = Domain::Proof;
    type Id = Hash;

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("proof serializes")
    }

    fn decode(name: &str, plain: &[u8]) -> Result<Self> {
        super::decode_json("proof", name, plain, |p: &Self| p.version, VERSION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Crypto;
    use crate::format::RepoFile;

    #[test]
    fn proof_round_trip_and_tamper() {
        let c = Crypto::generate();
        let p = ProofFile {
            version: VERSION,
            snapshot: SnapshotId(Hash([7; 32])),
            time: jiff::Timestamp::UNIX_EPOCH,
            hostname: "h".into(),
            entries: 3,
            files: 2,
            tested: 2,
            bytes: 10,
            live_compared: 1,
            failures: vec![],
        };
        let (id, sealed) = p.seal(&c);
        assert_eq!(ProofFile::open(&c, &id.to_hex(), &sealed).unwrap(), p);
        assert!(p.passed());
        let mut bad = sealed.clone();
        let n = bad.len() - 1;
        bad[n] ^= 1;
        assert!(ProofFile::open(&c, &Hash::of(&bad).to_hex(), &bad).is_err());
    }
}
