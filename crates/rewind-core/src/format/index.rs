//! Index files: which blobs each pack holds, so that no pack header has to
//! be read to find a blob. Encoded with postcard, compressed, sealed.

use serde::{Deserialize, Serialize};

use super::pack::PackedBlob;
use crate::crypto::Domain;
use crate::error::{Error, Result};
use crate::id::{IndexId, PackId};

/// Index file format version.
pub const VERSION: u32 = 1;

/// One pack and its blobs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPack {
    /// Pack name.
    pub id: PackId,
    /// Its size in bytes.
    pub size: u64,
    /// Its blobs.
    pub blobs: Vec<PackedBlob>,
}

/// Contents of an index file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    /// Format version (1).
    pub version: u32,
    /// Index files this one replaces (written by repair and prune; empty
    /// for a backup's index files).
    pub supersedes: Vec<IndexId>,
    /// Packs described.
    pub packs: Vec<IndexPack>,
}

impl super::RepoFile for IndexFile {
    const TYPE: super::FileType = super::FileType::Index;
    const DOMAIN: Domain<'static> = Domain::Index;
    type Id = IndexId;

    fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("index serializes")
    }

    fn decode(name: &str, plain: &[u8]) -> Result<Self> {
        let f: IndexFile =
            postcard::from_bytes(plain).map_err(|e| Error::corrupt("index", name, e))?;
        super::check_version("index", name, f.version, VERSION)?;
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Crypto;
    use crate::format::pack::BlobKind;
    use crate::format::RepoFile;
    use crate::id::{BlobId, Hash};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn index_file_round_trip(packs in proptest::collection::vec((any::<[u8; 32]>(), any::<u64>(), proptest::collection::vec((any::<[u8; 32]>(), any::<u32>(), any::<u32>(), any::<bool>()), 0..5)), 0..5)) {
            let c = Crypto::generate();
            let file = IndexFile {
                version: VERSION,
                supersedes: vec![IndexId(Hash([7; 32]))],
                packs: packs.into_iter().map(|(id, size, blobs)| IndexPack {
                    id: PackId(Hash(id)),
                    size,
                    blobs: blobs.into_iter().map(|(b, off, len, tree)| PackedBlob {
                        kind: if tree { BlobKind::Tree } else { BlobKind::Data },
                        id: BlobId(Hash(b)), offset: off, length: len, raw_length: len / 2,
                    }).collect(),
                }).collect(),
            };
            let (id, sealed) = file.seal(&c);
            prop_assert_eq!(id.0, crate::id::Hash::of(&sealed));
            prop_assert_eq!(IndexFile::open(&c, &id.to_hex(), &sealed).unwrap(), file);
            let short = &sealed[..sealed.len() - 1];
            prop_assert!(IndexFile::open(&c, &id.to_hex(), short).is_err());
            // Renamed to match, it still fails authentication.
            prop_assert!(IndexFile::open(&c, &crate::id::Hash::of(short).to_hex(), short).is_err());
        }

        #[test]
        fn index_decode_of_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = postcard::from_bytes::<IndexFile>(&bytes);
            let _ = postcard::from_bytes::<crate::format::pack::PackHeader>(&bytes);
        }
    }

    #[test]
    fn unknown_version_is_refused() {
        let c = Crypto::generate();
        let (_, sealed) = IndexFile {
            version: 2,
            ..Default::default()
        }
        .seal(&c);
        assert!(matches!(
            IndexFile::open(&c, "x", &sealed),
            Err(Error::Corrupt { .. })
        ));
    }
}
