//! The stored retention policy: JSON, compressed and sealed; files are named
//! by their content hash and the newest (by `time`) wins.

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
        };
        let (name, mut sealed) = f.seal(&c);
        assert_eq!(name, Hash::of(&sealed));
        assert_eq!(PolicyFile::open(&c, "p", &sealed).unwrap(), f);
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(PolicyFile::open(&c, "p", &sealed).is_err());
    }
}
