//! The in-memory index: blob id -> where the blob is.
//!
//! Memory: a hash map slot holds a 32-byte id and a 20-byte [`IndexEntry`];
//! with hashbrown's control byte and a load factor of at most 7/8 that is
//! about 60 bytes per blob, i.e. 60 MiB for a million chunks (256 GiB of
//! unique data at the default 256 KiB chunks).

use std::collections::{HashMap, HashSet};

use crate::format::index::{IndexFile, IndexPack};
use crate::format::pack::{BlobKind, PackedBlob};
use crate::id::{BlobId, IdBuildHasher, IndexId, PackId};

/// Where one blob is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// Position of the pack in [`Index::packs`].
    pub pack: u32,
    /// Offset of the sealed blob.
    pub offset: u32,
    /// Length of the sealed blob.
    pub length: u32,
    /// Plaintext length.
    pub raw_length: u32,
    /// Data or tree.
    pub kind: BlobKind,
}

/// Every index file of a repository, merged.
#[derive(Debug, Default)]
pub struct Index {
    packs: Vec<PackId>,
    pack_sizes: Vec<u64>,
    pack_pos: HashMap<PackId, u32, IdBuildHasher>,
    blobs: HashMap<BlobId, IndexEntry, IdBuildHasher>,
    files: Vec<IndexId>,
    damaged: Vec<(String, String)>,
    duplicates: u64,
    /// The other known copies of blobs stored more than once: where a
    /// reader turns when the chosen copy is missing or fails
    /// authentication (an index file that lies, a damaged pack).
    alternates: HashMap<BlobId, Vec<IndexEntry>, IdBuildHasher>,
    /// Packs that prune marked for deletion (docs/DESIGN.md §8c).
    marked: HashSet<PackId, IdBuildHasher>,
    pack_marked: Vec<bool>,
}

impl Index {
    /// An empty index that knows which packs prune marked for deletion:
    /// their blobs can be read but must not be reused by new backups.
    pub fn with_marked(marked: HashSet<PackId, IdBuildHasher>) -> Self {
        Index {
            marked,
            ..Index::default()
        }
    }

    /// Adds the packs of one index file.
    pub fn add_file(&mut self, id: IndexId, file: &IndexFile) {
        self.files.push(id);
        for p in &file.packs {
            self.add_pack(p);
        }
    }

    /// Records an index file that could not be read.
    pub fn add_damaged(&mut self, name: String, error: String) {
        self.damaged.push((name, error));
    }

    /// Index files that could not be read (name, error).
    pub fn damaged(&self) -> &[(String, String)] {
        &self.damaged
    }

    /// Adds one pack's blobs.
    pub fn add_pack(&mut self, p: &IndexPack) {
        let pos = match self.pack_pos.get(&p.id) {
            Some(&pos) => pos,
            None => {
                let pos = u32::try_from(self.packs.len()).expect("fewer than 4 billion packs");
                self.packs.push(p.id);
                self.pack_sizes.push(p.size);
                self.pack_marked.push(self.marked.contains(&p.id));
                self.pack_pos.insert(p.id, pos);
                pos
            }
        };
        let marked = self.pack_marked[pos as usize];
        for b in &p.blobs {
            let e = IndexEntry {
                pack: pos,
                offset: b.offset,
                length: b.length,
                raw_length: b.raw_length,
                kind: b.kind,
            };
            match self.blobs.entry(b.id) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(e);
                }
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    self.duplicates += 1;
                    // Of two copies, locate the one that stays; keep the
                    // other as a fallback.
                    let other = if !marked || self.pack_marked[o.get().pack as usize] {
                        o.insert(e)
                    } else {
                        e
                    };
                    if other != *o.get() {
                        self.alternates.entry(b.id).or_default().push(other);
                    }
                }
            }
        }
    }

    /// True if the blob is stored in a pack that is not marked for
    /// deletion, i.e. a new snapshot may refer to it.
    pub fn contains_live(&self, id: &BlobId) -> bool {
        self.blobs
            .get(id)
            .is_some_and(|e| !self.pack_marked[e.pack as usize])
    }

    /// True if prune marked the pack for deletion.
    pub fn is_marked(&self, pack: &PackId) -> bool {
        self.marked.contains(pack)
    }

    /// Looks a blob up.
    pub fn get(&self, id: &BlobId) -> Option<&IndexEntry> {
        self.blobs.get(id)
    }

    /// The other copies of a blob stored more than once (see
    /// [`Index::get`] for the one readers try first).
    pub fn alternates(&self, id: &BlobId) -> &[IndexEntry] {
        self.alternates.get(id).map_or(&[], Vec::as_slice)
    }

    /// True if the blob is stored.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.blobs.contains_key(id)
    }

    /// The pack of an entry.
    pub fn pack_id(&self, e: &IndexEntry) -> PackId {
        self.packs[e.pack as usize]
    }

    /// The pack at a position of [`Index::packs`] (an [`IndexEntry::pack`]).
    pub fn pack_id_at(&self, pos: u32) -> PackId {
        self.packs[pos as usize]
    }

    /// Every pack with its size.
    pub fn packs(&self) -> impl Iterator<Item = (PackId, u64)> + '_ {
        self.packs
            .iter()
            .copied()
            .zip(self.pack_sizes.iter().copied())
    }

    /// Every blob.
    pub fn blobs(&self) -> impl Iterator<Item = (&BlobId, &IndexEntry)> {
        self.blobs.iter()
    }

    /// Every blob as an index file would list it: its pack and its entry
    /// there (the copy readers try first; [`Index::alternates`] aside).
    pub fn entries(&self) -> impl Iterator<Item = (PackId, PackedBlob)> + '_ {
        self.blobs.iter().map(|(id, e)| {
            (
                self.pack_id(e),
                PackedBlob {
                    kind: e.kind,
                    id: *id,
                    offset: e.offset,
                    length: e.length,
                    raw_length: e.raw_length,
                },
            )
        })
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Index files merged.
    pub fn files(&self) -> &[IndexId] {
        &self.files
    }

    /// Blob entries seen more than once (same blob stored in two packs).
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// The blobs of each pack, in pack order (for check).
    pub fn blobs_by_pack(&self) -> Vec<Vec<(BlobId, IndexEntry)>> {
        let mut out = vec![Vec::new(); self.packs.len()];
        for (id, e) in &self.blobs {
            out[e.pack as usize].push((*id, *e));
        }
        for v in &mut out {
            v.sort_by_key(|(_, e)| e.offset);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Hash;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        #[test]
        fn index_agrees_with_a_model(entries in proptest::collection::vec((any::<[u8; 32]>(), 0u8..4, any::<u32>()), 0..50)) {
            let mut idx = Index::default();
            let mut model = BTreeMap::new();
            for (id, pack, off) in entries {
                let pack_id = PackId(Hash([pack; 32]));
                let blob = PackedBlob { kind: BlobKind::Data, id: BlobId(Hash(id)), offset: off, length: 1, raw_length: 1 };
                idx.add_pack(&IndexPack { id: pack_id, size: 10, blobs: vec![blob] });
                model.insert(BlobId(Hash(id)), (pack_id, off));
            }
            prop_assert_eq!(idx.len(), model.len());
            for (id, (pack, off)) in model {
                let e = idx.get(&id).unwrap();
                prop_assert_eq!(idx.pack_id(e), pack);
                prop_assert_eq!(e.offset, off);
            }
        }
    }
}
