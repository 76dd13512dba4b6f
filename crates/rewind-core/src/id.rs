//! Typed 32-byte identifiers.
//!
//! Blob ids are keyed BLAKE3 hashes of a blob's plaintext (the key is a
//! repository secret). Every repository file (pack, index, snapshot, key) is
//! named by the plain BLAKE3 hash of its stored bytes, so storage can verify
//! a file against its name without any key.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// A 32-byte hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// Plain BLAKE3 of `data`: the name of a repository file.
    pub fn of(data: &[u8]) -> Self {
        Hash(*blake3::hash(data).as_bytes())
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex characters, for display.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.short())
    }
}

impl FromStr for Hash {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| Error::InvalidInput(format!("{s:?} is not a 64-character hex id")))?;
        Ok(Hash(out))
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            let b: &[u8] = serde_bytes::deserialize(d)?;
            let arr: [u8; 32] = b
                .try_into()
                .map_err(|_| serde::de::Error::custom("id must be 32 bytes"))?;
            Ok(Hash(arr))
        }
    }
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Hash);

        impl $name {
            /// Lowercase hex.
            pub fn to_hex(&self) -> String { self.0.to_hex() }
            /// First 8 hex characters.
            pub fn short(&self) -> String { self.0.short() }
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; 32] { &self.0 .0 }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { fmt::Display::fmt(&self.0, f) }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { write!(f, "{}({})", stringify!($name), self.0.short()) }
        }
        impl From<Hash> for $name {
            fn from(h: Hash) -> Self { $name(h) }
        }
        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> { Ok($name(s.parse()?)) }
        }
    };
}

typed_id!(
    /// Keyed hash of a blob's plaintext (data chunk or tree).
    BlobId
);
typed_id!(
    /// Name of a pack file.
    PackId
);
typed_id!(
    /// Name of an index file.
    IndexId
);
typed_id!(
    /// Name of a snapshot file.
    SnapshotId
);
typed_id!(
    /// Name of a key file.
    KeyId
);

/// A `Hasher` for ids that are already uniformly random: uses 8 of their bytes.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Ids hash as their 32 bytes (plus nothing else); mix in anything else.
        let mut buf = [0u8; 8];
        let n = bytes.len().min(8);
        buf[..n].copy_from_slice(&bytes[..n]);
        self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(buf);
    }
}

/// `BuildHasher` for maps keyed by ids.
pub type IdBuildHasher = std::hash::BuildHasherDefault<IdHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let h = Hash::of(b"abc");
        let s = h.to_hex();
        assert_eq!(s.len(), 64);
        assert_eq!(s.parse::<Hash>().unwrap(), h);
        assert!("zz".parse::<Hash>().is_err());
        assert!(s[..63].parse::<Hash>().is_err());
    }

    #[test]
    fn binary_and_json_round_trip() {
        let id = BlobId(Hash::of(b"x"));
        let bin = postcard::to_stdvec(&id).unwrap();
        assert_eq!(bin.len(), 33);
        assert_eq!(postcard::from_bytes::<BlobId>(&bin).unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<BlobId>(&json).unwrap(), id);
        assert!(postcard::from_bytes::<BlobId>(&bin[..20]).is_err());
    }
}
