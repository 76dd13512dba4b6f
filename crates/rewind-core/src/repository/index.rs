//! The in-memory index: blob id -> where the blob is.
//!
//! Memory: the index files' blobs are gathered in one vector while they
//! load, then sorted by id in place ([`Index::seal`]): 52 bytes a blob (a
//! 32-byte id and a 20-byte [`IndexEntry`]), plus a radix table of a
//! quarter byte a blob that narrows each lookup to about 16 entries. No
//! hash table: its slack and the copy while it grows cost more than twice
//! that at 10^7 blobs (docs/SCALE.md). Blobs added after sealing (what
//! this process writes) go to a small hash map.

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
    /// One entry per blob, sorted by id: the copy readers try first.
    sorted: Vec<(BlobId, IndexEntry)>,
    /// `radix[p]..radix[p + 1]` is where in `sorted` the ids whose first
    /// `radix_bits` bits are `p` lie.
    radix: Vec<u32>,
    radix_bits: u32,
    /// While the index files load: every entry, in load order, until
    /// [`Index::seal`] sorts them into `sorted`.
    staged: Option<Vec<(BlobId, IndexEntry)>>,
    /// Blobs added after sealing (what this process wrote).
    tail: HashMap<BlobId, IndexEntry, IdBuildHasher>,
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
    /// An empty index to load index files into, that knows which packs
    /// prune marked for deletion: their blobs can be read but must not be
    /// reused by new backups. Lookups see the loaded blobs once
    /// [`Index::seal`] has run.
    pub fn with_marked(marked: HashSet<PackId, IdBuildHasher>) -> Self {
        Index {
            marked,
            staged: Some(Vec::new()),
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
        for b in &p.blobs {
            let e = IndexEntry {
                pack: pos,
                offset: b.offset,
                length: b.length,
                raw_length: b.raw_length,
                kind: b.kind,
            };
            match &mut self.staged {
                Some(staged) => staged.push((b.id, e)),
                None => self.add_late(b.id, e),
            }
        }
    }

    /// A blob added after sealing: to the tail; a second copy of a blob
    /// the index has is kept as an alternate.
    fn add_late(&mut self, id: BlobId, e: IndexEntry) {
        let known = self.sorted_get(&id).copied();
        match known.or_else(|| self.tail.get(&id).copied()) {
            None => {
                self.tail.insert(id, e);
            }
            Some(first) => {
                self.duplicates += 1;
                if first != e {
                    self.alternates.entry(id).or_default().push(e);
                }
            }
        }
    }

    /// Sorts the loaded blobs by id (in place) and picks, of several copies
    /// of a blob, the one readers try first: the last in the order of the
    /// packs (index files in name order) that is not in a marked pack, or
    /// the last if all are; the others become alternates. Lookups work from
    /// here on; blobs added later go to a small map.
    pub fn seal(&mut self) {
        let Some(mut v) = self.staged.take() else {
            return;
        };
        // About 16 blobs per radix slot.
        let bits = (usize::BITS - (v.len() / 16).leading_zeros()).min(24);
        radix_sort(&mut v, bits);
        // Copies of one id are next to each other: keep one in place.
        let mut out = 0;
        let mut i = 0;
        while i < v.len() {
            let mut j = i + 1;
            while j < v.len() && v[j].0 == v[i].0 {
                j += 1;
            }
            let run = &v[i..j];
            let chosen = run
                .iter()
                .rposition(|(_, e)| !self.pack_marked[e.pack as usize])
                .unwrap_or(run.len() - 1);
            if run.len() > 1 {
                self.duplicates += run.len() as u64 - 1;
                let first = run[chosen].1;
                let mut others: Vec<IndexEntry> = Vec::new();
                for (k, (_, e)) in run.iter().enumerate() {
                    if k != chosen && *e != first && !others.contains(e) {
                        others.push(*e);
                    }
                }
                if !others.is_empty() {
                    self.alternates.insert(run[0].0, others);
                }
            }
            v[out] = run[chosen];
            out += 1;
            i = j;
        }
        v.truncate(out);
        v.shrink_to_fit();
        let radix = slot_starts(&v, bits);
        self.sorted = v;
        self.radix = radix;
        self.radix_bits = bits;
    }

    fn sorted_get(&self, id: &BlobId) -> Option<&IndexEntry> {
        if self.sorted.is_empty() {
            return None;
        }
        let p = prefix(id, self.radix_bits);
        let slot = &self.sorted[self.radix[p] as usize..self.radix[p + 1] as usize];
        if slot.is_empty() {
            return None;
        }
        // Ids are uniform within a slot: start where the next 16 bits put
        // it and step to it (about two entries away), so a lookup touches
        // one or two cache lines of the slot rather than a binary search's
        // four.
        let key = words(id);
        let frac = ((key[0] << self.radix_bits) >> 48) as usize;
        let mut i = ((frac * slot.len()) >> 16).min(slot.len() - 1);
        while i > 0 && words(&slot[i].0) > key {
            i -= 1;
        }
        while i + 1 < slot.len() && words(&slot[i].0) < key {
            i += 1;
        }
        (slot[i].0 == *id).then(|| &slot[i].1)
    }

    /// True if the blob is stored in a pack that is not marked for
    /// deletion, i.e. a new snapshot may refer to it.
    pub fn contains_live(&self, id: &BlobId) -> bool {
        self.get(id)
            .is_some_and(|e| !self.pack_marked[e.pack as usize])
    }

    /// True if prune marked the pack for deletion.
    pub fn is_marked(&self, pack: &PackId) -> bool {
        self.marked.contains(pack)
    }

    /// Looks a blob up.
    pub fn get(&self, id: &BlobId) -> Option<&IndexEntry> {
        self.sorted_get(id).or_else(|| self.tail.get(id))
    }

    /// The other copies of a blob stored more than once (see
    /// [`Index::get`] for the one readers try first).
    pub fn alternates(&self, id: &BlobId) -> &[IndexEntry] {
        self.alternates.get(id).map_or(&[], Vec::as_slice)
    }

    /// True if the blob is stored.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.get(id).is_some()
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
        self.sorted
            .iter()
            .map(|(id, e)| (id, e))
            .chain(self.tail.iter())
    }

    /// Every blob as an index file would list it: its pack and its entry
    /// there (the copy readers try first; [`Index::alternates`] aside).
    pub fn entries(&self) -> impl Iterator<Item = (PackId, PackedBlob)> + '_ {
        self.blobs().map(|(id, e)| {
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
        self.sorted.len() + self.tail.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        for (id, e) in self.blobs() {
            out[e.pack as usize].push((*id, *e));
        }
        for v in &mut out {
            v.sort_by_key(|(_, e)| e.offset);
        }
        out
    }
}

/// Sorts by (id, pack, offset) in place, by radix (an American flag sort:
/// no second buffer): by the first 8 bits of the id, then within each of
/// those 256 buckets by the next `bits - 8`, so that each pass writes to
/// few places at once and stays in the cache; then each slot of `bits`
/// bits (about 16 entries) is sorted alone.
fn radix_sort(v: &mut [(BlobId, IndexEntry)], bits: u32) {
    let first = bits.min(8);
    flag_pass(v, 0, first);
    if bits > first {
        let starts = slot_starts(v, first);
        for b in 0..starts.len() - 1 {
            flag_pass(
                &mut v[starts[b] as usize..starts[b + 1] as usize],
                first,
                bits - first,
            );
        }
    }
    let starts = slot_starts(v, bits);
    for slot in 0..starts.len() - 1 {
        v[starts[slot] as usize..starts[slot + 1] as usize]
            .sort_unstable_by_key(|(id, e)| (words(id), e.pack, e.offset));
    }
}

/// One pass: moves each entry to the bucket of its id's bits `skip ..
/// skip + bits` (the bits before are the same for all of `v`).
fn flag_pass(v: &mut [(BlobId, IndexEntry)], skip: u32, bits: u32) {
    if bits == 0 || v.len() < 2 {
        return;
    }
    let mask = (1usize << bits) - 1;
    let bucket = |id: &BlobId| prefix(id, skip + bits) & mask;
    let mut starts = vec![0u32; (1usize << bits) + 1];
    for (id, _) in v.iter() {
        starts[bucket(id) + 1] += 1;
    }
    for k in 1..starts.len() {
        starts[k] += starts[k - 1];
    }
    let mut next: Vec<u32> = starts[..starts.len() - 1].to_vec();
    for b in 0..next.len() {
        let end = starts[b + 1];
        while next[b] < end {
            let i = next[b] as usize;
            let home = bucket(&v[i].0);
            if home == b {
                next[b] += 1;
            } else {
                let j = next[home] as usize;
                next[home] += 1;
                v.swap(i, j);
            }
        }
    }
}

/// Where each radix slot of `bits` bits starts in `v` (sorted or not, the
/// counts are the same), and its end: `2^bits + 1` positions.
fn slot_starts(v: &[(BlobId, IndexEntry)], bits: u32) -> Vec<u32> {
    let mut radix = vec![0u32; (1usize << bits) + 1];
    for (id, _) in v {
        radix[prefix(id, bits) + 1] += 1;
    }
    for k in 1..radix.len() {
        radix[k] += radix[k - 1];
    }
    radix
}

/// An id as four big-endian words: ordered as its bytes, compared without
/// a call to memcmp (the sort and every lookup compare ids).
#[allow(
    clippy::big_endian_bytes,
    reason = "in memory only: big-endian words order as the id's bytes"
)]
fn words(id: &BlobId) -> [u64; 4] {
    let b = &id.0 .0;
    std::array::from_fn(|k| u64::from_be_bytes(b[k * 8..k * 8 + 8].try_into().expect("8 bytes")))
}

/// The first `bits` bits of an id, as a radix slot.
#[allow(
    clippy::big_endian_bytes,
    reason = "in memory only: the id's first bits, in byte order"
)]
fn prefix(id: &BlobId, bits: u32) -> usize {
    if bits == 0 {
        return 0;
    }
    let b = &id.0 .0;
    let top = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (top >> (32 - bits)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Hash;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn blob(id: u8, offset: u32) -> PackedBlob {
        PackedBlob {
            kind: BlobKind::Data,
            id: BlobId(Hash([id; 32])),
            offset,
            length: 1,
            raw_length: 1,
        }
    }

    proptest! {
        /// A loaded and sealed index agrees with the rule it documents:
        /// per blob, the copy in the last pack (by first appearance) that
        /// is not marked, else the last; the other distinct copies are
        /// alternates; the rest are not found.
        #[test]
        fn a_sealed_index_agrees_with_a_model(
            entries in proptest::collection::vec((0u8..40, 0u8..6, 0u32..3), 0..120),
            marked in proptest::collection::vec(0u8..6, 0..3),
        ) {
            let pack = |p: u8| PackId(Hash([p.wrapping_add(100); 32]));
            let mut idx = Index::with_marked(marked.iter().map(|&m| pack(m)).collect());
            let mut order: Vec<u8> = Vec::new();
            let mut copies: BTreeMap<u8, Vec<(u8, u32)>> = BTreeMap::new();
            for &(id, p, off) in &entries {
                idx.add_pack(&IndexPack { id: pack(p), size: 10, blobs: vec![blob(id, off)] });
                if !order.contains(&p) {
                    order.push(p);
                }
                copies.entry(id).or_default().push((p, off));
            }
            idx.seal();
            let rank = |p: u8| order.iter().position(|&x| x == p).unwrap();
            prop_assert_eq!(idx.len(), copies.len());
            prop_assert_eq!(idx.duplicates() as usize, entries.len() - copies.len());
            for (id, mut c) in copies {
                c.sort_by_key(|&(p, _)| rank(p)); // stable: load order within a pack
                let chosen = c
                    .iter()
                    .rposition(|(p, _)| !marked.contains(p))
                    .unwrap_or(c.len() - 1);
                let b = BlobId(Hash([id; 32]));
                let e = idx.get(&b).unwrap();
                prop_assert_eq!(idx.pack_id(e), pack(c[chosen].0));
                let first = (c[chosen].0, e.offset);
                let mut others: Vec<(u8, u32)> = Vec::new();
                for x in &c {
                    if *x != first && !others.contains(x) {
                        others.push(*x);
                    }
                }
                let alts: Vec<(PackId, u32)> =
                    idx.alternates(&b).iter().map(|a| (idx.pack_id(a), a.offset)).collect();
                let want: Vec<(PackId, u32)> = others.iter().map(|&(p, o)| (pack(p), o)).collect();
                let mut alts_sorted = alts.clone();
                alts_sorted.sort();
                let mut want_sorted = want.clone();
                want_sorted.sort();
                prop_assert_eq!(alts_sorted, want_sorted);
                prop_assert_eq!(idx.contains_live(&b), !marked.contains(&c[chosen].0));
            }
            for missing in 40u8..50 {
                prop_assert!(idx.get(&BlobId(Hash([missing; 32]))).is_none());
            }
            prop_assert_eq!(idx.blobs().count(), idx.len());
        }
    }

    /// Random ids over many radix slots: every one is found, others not.
    #[test]
    fn lookups_find_every_blob_among_many() {
        let mut idx = Index::with_marked(HashSet::default());
        let ids: Vec<BlobId> = (0..50_000u32)
            .map(|i| BlobId(Hash(*blake3::hash(&i.to_le_bytes()).as_bytes())))
            .collect();
        for chunk in ids.chunks(100) {
            idx.add_pack(&IndexPack {
                id: PackId(Hash(*blake3::hash(chunk[0].0 .0.as_slice()).as_bytes())),
                size: 1,
                blobs: chunk
                    .iter()
                    .enumerate()
                    .map(|(k, id)| PackedBlob {
                        kind: BlobKind::Data,
                        id: *id,
                        offset: k as u32,
                        length: 1,
                        raw_length: 1,
                    })
                    .collect(),
            });
        }
        idx.seal();
        assert!(idx.radix_bits >= 11);
        for (k, id) in ids.iter().enumerate() {
            assert_eq!(idx.get(id).map(|e| e.offset), Some((k % 100) as u32));
        }
        for i in 50_000..51_000u32 {
            let id = BlobId(Hash(*blake3::hash(&i.to_le_bytes()).as_bytes()));
            assert!(!idx.contains(&id));
        }
    }

    /// What a process writes after loading goes to the tail: found, and a
    /// second copy is an alternate.
    #[test]
    fn blobs_added_after_sealing_are_found() {
        let mut idx = Index::default();
        idx.add_pack(&IndexPack {
            id: PackId(Hash([1; 32])),
            size: 1,
            blobs: vec![blob(7, 0)],
        });
        idx.add_pack(&IndexPack {
            id: PackId(Hash([2; 32])),
            size: 1,
            blobs: vec![blob(7, 5)],
        });
        let b = BlobId(Hash([7; 32]));
        assert_eq!(idx.get(&b).unwrap().offset, 0);
        assert_eq!(idx.alternates(&b).len(), 1);
        assert_eq!(idx.len(), 1);
        assert_eq!(idx.duplicates(), 1);
    }
}
