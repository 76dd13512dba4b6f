//! The in-memory index: blob id -> where the blob is.
//!
//! Memory: the index files' blobs are gathered in one vector while they
//! load, then sorted by id in place ([`Index::seal`]): 52 bytes a blob (a
//! 32-byte id and a 20-byte [`IndexEntry`]), plus a radix table of a
//! quarter byte a blob that narrows each lookup to about 16 entries. No
//! hash table: its slack and the copy while it grows cost more than twice
//! that at 10^7 blobs (docs/SCALE.md). Blobs added after sealing (what
//! this process writes) go to a small hash map.
//!
//! With a memory budget and a directory ([`Index::use_table`]), an index
//! larger than the budget is spilled to sorted runs while it loads and
//! merged into an on-disk table ([`super::table`]); later loads start from
//! that table and read only the index files written since, which stay in
//! memory (docs/DESIGN.md §6b).

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::PathBuf;

use super::table::{self, Run, Table, TableMeta, TableWriter};

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
    /// The on-disk table the index starts from (what `sorted` holds is
    /// then what was written since, no id in both).
    table: Option<Table>,
    /// Where and when to spill while loading.
    spill: Option<Spill>,
    /// Blobs of the table whose copy readers try first is in `sorted` (a
    /// newer copy, chosen by the rule of [`Index::seal`]): the table's
    /// entry is an alternate, and is not listed again by `blobs`.
    shadowed: HashSet<BlobId, IdBuildHasher>,
}

/// The budget and directory of an index that may spill to disk.
struct Spill {
    dir: PathBuf,
    key: [u8; 32],
    /// Entries held in memory before a run is spilled.
    limit: usize,
    runs: Vec<Run>,
    marks: [u8; 32],
    error: Option<io::Error>,
}

impl std::fmt::Debug for Spill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spill")
            .field("dir", &self.dir)
            .field("limit", &self.limit)
            .field("runs", &self.runs.len())
            .finish_non_exhaustive()
    }
}

/// Bytes of memory per entry while loading.
const ENTRY_BYTES: u64 = std::mem::size_of::<(BlobId, IndexEntry)>() as u64;

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
        let pos = self.pack_position(p.id, p.size);
        for b in &p.blobs {
            let e = IndexEntry {
                pack: pos,
                offset: b.offset,
                length: b.length,
                raw_length: b.raw_length,
                kind: b.kind,
            };
            match &mut self.staged {
                Some(staged) => {
                    if let Some(sp) = &mut self.spill {
                        if staged.len() >= sp.limit && sp.error.is_none() {
                            spill_run(sp, staged);
                        }
                    }
                    staged.push((b.id, e));
                }
                None => self.add_late(b.id, e),
            }
        }
    }

    /// The position of a pack in [`Index::packs`], added there if new.
    fn pack_position(&mut self, id: PackId, size: u64) -> u32 {
        if let Some(&pos) = self.pack_pos.get(&id) {
            return pos;
        }
        let pos = u32::try_from(self.packs.len()).expect("fewer than 4 billion packs");
        self.packs.push(id);
        self.pack_sizes.push(size);
        self.pack_marked.push(self.marked.contains(&id));
        self.pack_pos.insert(id, pos);
        pos
    }

    /// True if an index of `blobs` blobs stays in memory under `budget`
    /// bytes: it fits a quarter of it (the loading vector's doubling may
    /// take half). Past that it goes to the on-disk table.
    pub(crate) fn fits(blobs: u64, budget: u64) -> bool {
        blobs.saturating_mul(ENTRY_BYTES) <= budget / 4
    }

    /// Lets this index (before any file is added) spill to `dir` when it
    /// holds more than a quarter of `budget` bytes (its vector may then
    /// take half), and start from the newest
    /// table there that was made with the same marked packs and of index
    /// files all still `listed`. Returns the names of the index files that
    /// table holds (not to be read again).
    pub(crate) fn use_table(
        &mut self,
        dir: PathBuf,
        key: [u8; 32],
        budget: u64,
        listed: &HashSet<String>,
    ) -> HashSet<String> {
        let marks = table::marks_hash(&self.marked);
        // A quarter of the budget in entries: the vector's doubling may take
        // it to half.
        let limit = usize::try_from((budget / 4 / ENTRY_BYTES).max(1024)).unwrap_or(usize::MAX);
        let mut skip = HashSet::new();
        for path in table::tables(&dir) {
            let (t, meta) = match Table::open(&path, &key) {
                Ok(x) => x,
                // Damaged, another key's, another version: never trusted.
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                // Gone meanwhile (another process tidied), or out of file
                // handles: not this load's to judge.
                Err(_) => continue,
            };
            if meta.marks != marks || !meta.files.iter().all(|f| listed.contains(&f.to_hex())) {
                continue;
            }
            skip = meta.files.iter().map(|f| f.to_hex()).collect();
            self.start_from(t, meta);
            break;
        }
        self.spill = Some(Spill {
            dir,
            key,
            limit,
            runs: Vec::new(),
            marks,
            error: None,
        });
        skip
    }

    fn start_from(&mut self, t: Table, meta: TableMeta) {
        for (id, size) in meta.packs {
            self.pack_position(id, size);
        }
        self.files = meta.files;
        self.duplicates = meta.duplicates;
        self.alternates = meta
            .alternates
            .into_iter()
            .map(|(id, v)| (id, v.iter().map(table::unraw).collect()))
            .collect();
        self.table = Some(t);
    }

    /// The error that stopped the on-disk table, if one did: the caller
    /// loads the index again in memory.
    pub(crate) fn table_error(&mut self) -> Option<io::Error> {
        self.spill.as_mut().and_then(|s| s.error.take())
    }

    /// Where the on-disk table this index uses is, if it uses one.
    pub fn table_path(&self) -> Option<&std::path::Path> {
        self.table.as_ref().map(Table::path)
    }

    /// A blob added after sealing: to the tail; a second copy of a blob
    /// the index has is kept as an alternate.
    fn add_late(&mut self, id: BlobId, e: IndexEntry) {
        match self.get(&id) {
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

    /// Of the copies of one blob (in the order of their packs): counts
    /// the duplicates, keeps the others as alternates, and returns the
    /// one readers try first: the last not in a marked pack, else the last.
    fn pick(&mut self, id: BlobId, copies: &[IndexEntry]) -> IndexEntry {
        let k = copies
            .iter()
            .rposition(|e| !self.pack_marked[e.pack as usize])
            .unwrap_or(copies.len() - 1);
        let chosen = copies[k];
        if copies.len() > 1 {
            self.duplicates += copies.len() as u64 - 1;
        }
        let known = self.alternates.remove(&id).unwrap_or_default();
        let mut others: Vec<IndexEntry> = Vec::new();
        for e in known.iter().chain(copies) {
            if *e != chosen && !others.contains(e) {
                others.push(*e);
            }
        }
        if !others.is_empty() {
            self.alternates.insert(id, others);
        }
        chosen
    }

    /// Sorts the loaded blobs by id (in place) and picks, of several copies
    /// of a blob, the one readers try first: the last in the order of the
    /// packs (index files in name order) that is not in a marked pack, or
    /// the last if all are; the others become alternates. Lookups work from
    /// here on; blobs added later go to a small map.
    ///
    /// An index that spilled runs to disk, or whose blobs since its table
    /// reach an eighth of its limit, is merged into a new on-disk table
    /// instead (an error there is kept for [`Index::table_error`]).
    pub fn seal(&mut self) {
        let Some(mut v) = self.staged.take() else {
            return;
        };
        if let Some(sp) = &self.spill {
            let spilled = !sp.runs.is_empty();
            let big_delta = self.table.is_some() && v.len() >= sp.limit / 8;
            if sp.error.is_none() && (spilled || big_delta) {
                if let Err(e) = self.write_table(v) {
                    if let Some(sp) = &mut self.spill {
                        sp.error = Some(e);
                    }
                }
                return;
            }
        }
        let bits = radix_bits(v.len());
        radix_sort(&mut v, bits);
        // Copies of one id are next to each other: keep one in place.
        let mut out = 0;
        let mut i = 0;
        let mut copies: Vec<IndexEntry> = Vec::new();
        while i < v.len() {
            let mut j = i + 1;
            while j < v.len() && v[j].0 == v[i].0 {
                j += 1;
            }
            let id = v[i].0;
            let chosen = if j - i == 1 {
                v[i].1
            } else {
                copies.clear();
                copies.extend(v[i..j].iter().map(|(_, e)| *e));
                self.pick(id, &copies)
            };
            v[out] = (id, chosen);
            out += 1;
            i = j;
        }
        v.truncate(out);
        // Blobs the table has too: one copy, the other an alternate (the
        // table's packs come first).
        if let Some(t) = self.table.take() {
            let hits: Vec<Option<IndexEntry>> = t.get_sorted(v.iter().map(|(id, _)| id)).collect();
            let mut out = 0;
            for (k, hit) in hits.into_iter().enumerate() {
                let (id, e) = v[k];
                match hit {
                    Some(te) if self.pick(id, &[te, e]) == te => {}
                    Some(_) => {
                        self.shadowed.insert(id);
                        v[out] = (id, e);
                        out += 1;
                    }
                    None => {
                        v[out] = (id, e);
                        out += 1;
                    }
                }
            }
            v.truncate(out);
            self.table = Some(t);
        }
        v.shrink_to_fit();
        let bits = radix_bits(v.len());
        let radix = slot_starts(&v, bits);
        self.sorted = v;
        self.radix = radix;
        self.radix_bits = bits;
    }

    /// Merges the table this index started from (if any), the spilled
    /// runs and `v` into a new table, and uses it.
    fn write_table(&mut self, mut v: Vec<(BlobId, IndexEntry)>) -> io::Result<()> {
        let bits = radix_bits(v.len());
        radix_sort(&mut v, bits);
        let sp = self.spill.as_mut().expect("a spilling index");
        let runs = std::mem::take(&mut sp.runs);
        let (dir, key, marks) = (sp.dir.clone(), sp.key, sp.marks);
        let base = self.table.take();
        type Stream<'a> = Box<dyn Iterator<Item = io::Result<(BlobId, IndexEntry)>> + 'a>;
        let mut streams: Vec<Stream<'_>> = Vec::new();
        if let Some(t) = &base {
            streams.push(Box::new(t.iter().map(Ok)));
        }
        for r in runs {
            streams.push(Box::new(r.into_iter()));
        }
        streams.push(Box::new(v.into_iter().map(Ok)));
        let mut w = TableWriter::create(&dir, &key)?;
        // Copies of one id arrive together: each group is picked and
        // written once the next id (or the end) arrives.
        let mut copies: Vec<IndexEntry> = Vec::new();
        let mut merged = table::merge(streams).peekable();
        while let Some(item) = merged.next() {
            let (id, e) = item?;
            copies.push(e);
            if !matches!(merged.peek(), Some(Ok((next, _))) if *next == id) {
                let chosen = self.pick(id, &copies);
                w.push(&id, &chosen)?;
                copies.clear();
            }
        }
        drop(merged);
        if base.as_ref().is_some_and(Table::is_damaged) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a page of the index table failed authentication",
            ));
        }
        drop(base);
        let mut files: Vec<String> = self.files.iter().map(|f| f.to_hex()).collect();
        files.sort();
        let mut h = blake3::Hasher::new();
        for f in &files {
            h.update(f.as_bytes());
        }
        h.update(&marks);
        let name = format!("table-{}", &h.finalize().to_hex()[..32]);
        let meta = TableMeta {
            packs: self.packs().collect(),
            files: self.files.clone(),
            alternates: self
                .alternates
                .iter()
                .map(|(id, v)| (*id, v.iter().map(table::raw).collect()))
                .collect(),
            duplicates: self.duplicates,
            marks,
        };
        let (path, file) = w.finish(meta, &name)?;
        let (t, _) = Table::from_file(file, &path, &key)?;
        table::tidy(&dir, &path);
        self.table = Some(t);
        self.sorted = Vec::new();
        self.radix = Vec::new();
        self.radix_bits = 0;
        Ok(())
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
    pub fn get(&self, id: &BlobId) -> Option<IndexEntry> {
        self.sorted_get(id)
            .or_else(|| self.tail.get(id))
            .copied()
            .or_else(|| self.table.as_ref().and_then(|t| t.get(id)))
    }

    /// The on-disk table, if a page of it failed authentication since it
    /// was opened (it was removed: the next load builds it again).
    pub fn damaged_table(&self) -> Option<&std::path::Path> {
        self.table
            .as_ref()
            .filter(|t| t.is_damaged())
            .map(Table::path)
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

    /// True when the index lives in an on-disk table: a lookup may cost a
    /// read, so many lookups should go through [`Index::missing_sorted`].
    pub fn on_disk(&self) -> bool {
        self.table.is_some()
    }

    /// Which of `ids` (sorted, unique) the index does not hold: with an
    /// on-disk table, each of its pages is read at most once for the
    /// batch, so asking about every blob of a repository in id-ordered
    /// batches reads the table a few times over, not once per blob.
    pub fn missing_sorted(&self, ids: &[BlobId]) -> Vec<BlobId> {
        let in_memory = |id: &BlobId| self.sorted_get(id).is_some() || self.tail.contains_key(id);
        let rest = ids.iter().filter(|id| !in_memory(id));
        match &self.table {
            None => rest.copied().collect(),
            Some(t) => {
                let rest: Vec<&BlobId> = rest.collect();
                rest.iter()
                    .zip(t.get_sorted(rest.iter().copied()))
                    .filter(|(_, e)| e.is_none())
                    .map(|(id, _)| **id)
                    .collect()
            }
        }
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
    pub fn blobs(&self) -> impl Iterator<Item = (BlobId, IndexEntry)> + '_ {
        self.table
            .iter()
            .flat_map(Table::iter)
            .filter(|(id, _)| !self.shadowed.contains(id))
            .chain(self.sorted.iter().copied())
            .chain(self.tail.iter().map(|(id, e)| (*id, *e)))
    }

    /// Every blob as an index file would list it: its pack and its entry
    /// there (the copy readers try first; [`Index::alternates`] aside).
    pub fn entries(&self) -> impl Iterator<Item = (PackId, PackedBlob)> + '_ {
        self.blobs().map(|(id, e)| {
            (
                self.pack_id(&e),
                PackedBlob {
                    kind: e.kind,
                    id,
                    offset: e.offset,
                    length: e.length,
                    raw_length: e.raw_length,
                },
            )
        })
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        let on_disk = self.table.as_ref().map_or(0, |t| t.len() as usize);
        on_disk - self.shadowed.len() + self.sorted.len() + self.tail.len()
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
            out[e.pack as usize].push((id, e));
        }
        for v in &mut out {
            v.sort_by_key(|(_, e)| e.offset);
        }
        out
    }
}

/// Radix bits for `n` entries: about 16 per slot.
pub(crate) fn radix_bits(n: usize) -> u32 {
    (usize::BITS - (n / 16).leading_zeros()).min(24)
}

/// Sorts `staged` and writes it as a run; an error stops spilling (kept
/// for [`Index::table_error`]).
fn spill_run(sp: &mut Spill, staged: &mut Vec<(BlobId, IndexEntry)>) {
    let bits = radix_bits(staged.len());
    radix_sort(staged, bits);
    match Run::write(&sp.dir, staged) {
        Ok(r) => {
            sp.runs.push(r);
            staged.clear();
        }
        Err(e) => sp.error = Some(e),
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
    id_slot_starts(v.iter().map(|(id, _)| id), bits)
}

/// [`slot_starts`] of bare ids (prune's set of used blobs).
fn id_slot_starts<'a>(ids: impl Iterator<Item = &'a BlobId>, bits: u32) -> Vec<u32> {
    let mut radix = vec![0u32; (1usize << bits) + 1];
    for id in ids {
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
pub(crate) fn prefix(id: &BlobId, bits: u32) -> usize {
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
                prop_assert_eq!(idx.pack_id(&e), pack(c[chosen].0));
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

    /// Index files of random blobs: `files` files of `per_file` blobs in
    /// packs of 50, about one blob in 20 also stored in an earlier pack.
    fn random_files(seed: u32, files: u32, per_file: u32) -> Vec<(IndexId, IndexFile)> {
        let h = |x: &[u8]| Hash(*blake3::hash(x).as_bytes());
        let mut out = Vec::new();
        let mut all: Vec<BlobId> = Vec::new();
        for f in 0..files {
            let mut packs = Vec::new();
            for p in 0..per_file / 50 {
                let blobs = (0..50u32)
                    .map(|k| {
                        let n = (seed, f, p, k);
                        let id = if k % 20 == 7 && !all.is_empty() {
                            all[(f * 31 + p * 7 + k) as usize % all.len()]
                        } else {
                            BlobId(h(format!("{n:?}").as_bytes()))
                        };
                        all.push(id);
                        PackedBlob {
                            kind: if k % 9 == 0 {
                                BlobKind::Tree
                            } else {
                                BlobKind::Data
                            },
                            id,
                            offset: k * 100,
                            length: 90 + k,
                            raw_length: 200 + k,
                        }
                    })
                    .collect();
                packs.push(IndexPack {
                    id: PackId(h(format!("pack {seed} {f} {p}").as_bytes())),
                    size: 5000,
                    blobs,
                });
            }
            let id = IndexId(h(format!("file {seed} {f}").as_bytes()));
            out.push((
                id,
                IndexFile {
                    version: 1,
                    supersedes: Vec::new(),
                    packs,
                },
            ));
        }
        out.sort_by_key(|(id, _)| *id);
        out
    }

    fn load(
        files: &[(IndexId, IndexFile)],
        marked: &HashSet<PackId, IdBuildHasher>,
        table: Option<(&std::path::Path, u64)>,
    ) -> (Index, HashSet<String>) {
        let mut idx = Index::with_marked(marked.clone());
        let mut skip = HashSet::new();
        if let Some((dir, budget)) = table {
            let listed = files.iter().map(|(id, _)| id.to_hex()).collect();
            skip = idx.use_table(dir.to_owned(), [7; 32], budget, &listed);
        }
        for (id, f) in files {
            if !skip.contains(&id.to_hex()) {
                idx.add_file(*id, f);
            }
        }
        idx.seal();
        assert!(idx.table_error().is_none());
        (idx, skip)
    }

    /// Both indexes answer the same for every blob of `files` and a few
    /// others: the copy, whether it is live, and its alternates (as packs
    /// and offsets, which do not depend on the order packs were added in).
    fn assert_same(a: &Index, b: &Index, files: &[(IndexId, IndexFile)]) {
        assert_eq!(a.len(), b.len());
        assert_eq!(a.duplicates(), b.duplicates());
        assert_eq!(a.blobs().count(), a.len());
        assert_eq!(b.blobs().count(), b.len());
        let ids: HashSet<BlobId> = b.blobs().map(|(id, _)| id).collect();
        assert_eq!(ids.len(), b.len(), "a blob listed twice");
        let place = |i: &Index, e: &IndexEntry| {
            (
                i.pack_id(e),
                e.offset,
                e.length,
                e.raw_length,
                e.kind == BlobKind::Tree,
            )
        };
        for (_, f) in files {
            for p in &f.packs {
                for blob in &p.blobs {
                    let (x, y) = (a.get(&blob.id).unwrap(), b.get(&blob.id).unwrap());
                    assert_eq!(place(a, &x), place(b, &y));
                    assert_eq!(a.contains_live(&blob.id), b.contains_live(&blob.id));
                    let mut ax: Vec<_> =
                        a.alternates(&blob.id).iter().map(|e| place(a, e)).collect();
                    let mut bx: Vec<_> =
                        b.alternates(&blob.id).iter().map(|e| place(b, e)).collect();
                    ax.sort();
                    bx.sort();
                    assert_eq!(ax, bx);
                }
            }
        }
        for k in 0..100u32 {
            let id = BlobId(Hash(
                *blake3::hash(&(k + 1_000_000).to_le_bytes()).as_bytes(),
            ));
            assert!(a.get(&id).is_none() && b.get(&id).is_none());
        }
        // In id order, a batch: exactly the unknown ids are missing.
        let unknown: Vec<BlobId> = (0..100u32)
            .map(|k| {
                BlobId(Hash(
                    *blake3::hash(&(k + 2_000_000).to_le_bytes()).as_bytes(),
                ))
            })
            .collect();
        let mut batch: Vec<BlobId> = files
            .iter()
            .flat_map(|(_, f)| &f.packs)
            .flat_map(|p| p.blobs.iter().map(|b| b.id))
            .chain(unknown.iter().copied())
            .collect();
        batch.sort_unstable();
        batch.dedup();
        let mut want = unknown;
        want.sort_unstable();
        assert_eq!(a.missing_sorted(&batch), want);
        assert_eq!(b.missing_sorted(&batch), want);
    }

    /// An index over its budget spills runs and merges them into a table
    /// that answers as the in-memory index does, marked packs included.
    #[test]
    fn a_spilled_index_answers_as_the_index_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let files = random_files(1, 12, 500);
        let marked: HashSet<PackId, IdBuildHasher> = files
            .iter()
            .step_by(3)
            .map(|(_, f)| f.packs[1].id)
            .collect();
        let (mem, _) = load(&files, &marked, None);
        // 1024 entries a run: six runs.
        let (disk, _) = load(&files, &marked, Some((dir.path(), 1)));
        assert!(disk.table_path().is_some());
        assert!(disk.sorted.is_empty());
        assert_same(&mem, &disk, &files);
        // Nothing left behind but the table.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    /// A later load starts from the table and reads only the new files:
    /// a few stay in memory, many make a new table; a table of files no
    /// longer listed (a prune replaced them) or of other marks is not used.
    #[test]
    fn a_later_load_reads_only_the_files_written_since() {
        let dir = tempfile::tempdir().unwrap();
        let none = HashSet::default();
        let old = random_files(2, 12, 500);
        let (first, _) = load(&old, &none, Some((dir.path(), 1)));
        assert!(first.table_path().is_some());
        drop(first);

        let mut more = old.clone();
        more.extend(random_files(3, 1, 100));
        // A new pack that holds blobs the table has too.
        let again: Vec<PackedBlob> = old[2].1.packs[0].blobs[..10].to_vec();
        more.push((
            IndexId(Hash([0xee; 32])),
            IndexFile {
                version: 1,
                supersedes: Vec::new(),
                packs: vec![IndexPack {
                    id: PackId(Hash([0xef; 32])),
                    size: 9,
                    blobs: again,
                }],
            },
        ));
        let (mem, _) = load(&more, &none, None);
        let (disk, skip) = load(&more, &none, Some((dir.path(), 1)));
        assert_eq!(skip.len(), old.len());
        // The new files' blobs (less their duplicates) stay in memory; the
        // copies of the table's blobs in the new pack are chosen (it comes
        // later) and shadow the table's entries.
        assert!(
            (90..=110).contains(&disk.sorted.len()),
            "{}",
            disk.sorted.len()
        );
        assert_eq!(disk.shadowed.len(), 10);
        assert_same(&mem, &disk, &more);
        let t1 = disk.table_path().unwrap().to_owned();
        drop(disk);

        // Many new blobs: a new table, the old one removed (once it is
        // more than a minute old: another process may be opening it).
        std::fs::File::options()
            .write(true)
            .open(&t1)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(120))
            .unwrap();
        more.extend(random_files(4, 4, 500));
        more.sort_by_key(|(id, _)| *id);
        let (mem, _) = load(&more, &none, None);
        let (disk, skip) = load(&more, &none, Some((dir.path(), 1)));
        assert_eq!(skip.len(), old.len());
        assert!(disk.sorted.is_empty());
        assert_ne!(disk.table_path().unwrap(), t1);
        assert!(!t1.exists());
        assert_same(&mem, &disk, &more);
        drop(disk);

        // A file of the table is gone: built again from what is listed.
        let fewer: Vec<_> = more[1..].to_vec();
        let (mem, _) = load(&fewer, &none, None);
        let (disk, skip) = load(&fewer, &none, Some((dir.path(), 1)));
        assert!(skip.is_empty());
        assert_same(&mem, &disk, &fewer);
        drop(disk);

        // Other marks: built again.
        let marked: HashSet<PackId, IdBuildHasher> = [fewer[0].1.packs[0].id].into_iter().collect();
        let (mem, _) = load(&fewer, &marked, None);
        let (disk, skip) = load(&fewer, &marked, Some((dir.path(), 1)));
        assert!(skip.is_empty());
        assert_same(&mem, &disk, &fewer);
    }

    /// A table is trusted only with its key and its bytes: one made with
    /// another key is removed and rebuilt; a page changed on disk fails
    /// its MAC, answers "not found" (never a wrong place), and the table
    /// is removed.
    #[test]
    fn a_damaged_or_foreign_table_is_never_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let none = HashSet::default();
        let files = random_files(5, 8, 500);
        let (disk, _) = load(&files, &none, Some((dir.path(), 1)));
        let path = disk.table_path().unwrap().to_owned();
        drop(disk);

        let mut other = Index::with_marked(none.clone());
        let listed = files.iter().map(|(id, _)| id.to_hex()).collect();
        assert!(other
            .use_table(dir.path().to_owned(), [8; 32], 1, &listed)
            .is_empty());
        assert!(!path.exists(), "a table that fails its MAC is removed");

        let (disk, _) = load(&files, &none, Some((dir.path(), 1)));
        let path = disk.table_path().unwrap().to_owned();
        drop(disk);
        let (disk, skip) = load(&files, &none, Some((dir.path(), 1)));
        assert_eq!(skip.len(), files.len());
        // Flip one byte of the third page's entries.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[3 * table::PAGE + 40] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let mut wrong = 0;
        for (_, f) in &files {
            for p in &f.packs {
                for b in &p.blobs {
                    if let Some(e) = disk.get(&b.id) {
                        if disk.pack_id(&e) != p.id && disk.alternates(&b.id).is_empty() {
                            wrong += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(wrong, 0);
        assert!(disk.damaged_table().is_some());
        assert!(!path.exists());
    }
}
