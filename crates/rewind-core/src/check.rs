//! Proof that a repository is intact: structure always, data on request.
//!
//! ```text
//! index:     every index file authenticates; every entry of every index
//!            file is judged (its pack exists with the size that file
//!            says); a blob is lost only when no entry gives it, and an
//!            index file that lists blobs where they are not is named;
//!            packs not in any index are reported
//! snapshots: every tree of every snapshot decodes, every blob is indexed
//! data:      (--read-data) every pack matches its name, its header parses,
//!            every entry any index file gives there authenticates and
//!            matches its id
//! impact:    every damaged or missing blob is traced to the snapshots and
//!            files that need it
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::backend::FileType;
use crate::error::Result;
use crate::format::index::IndexPack;
use crate::format::pack::{PackHeader, PackedBlob, PREFIX_LEN};
use crate::format::tree::NodeKind;
use crate::id::{BlobId, Hash, IdBuildHasher, IndexId, PackId, SnapshotId};
use crate::repository::{FileSet, Index, Repository};

/// Options of a check.
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// Read and authenticate every pack.
    pub read_data: bool,
    /// Read only part of the packs (implies reading data).
    pub subset: Option<Subset>,
    /// Where the previous rotating subset ended (see [`Subset`]).
    pub cursor: u64,
}

/// Which packs `check` reads when not all of them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Subset {
    /// Part `n` of `m` (1-based): the packs whose id, read as a number,
    /// is `n - 1` modulo `m`. Running 1/m .. m/m reads everything.
    Part {
        /// Which part.
        n: u64,
        /// Of how many.
        m: u64,
    },
    /// This fraction (0..=1) of the packs, continuing where the previous
    /// run stopped (the cursor), so repeated runs cover everything.
    Fraction(f64),
    /// About this many bytes of packs, continuing from the cursor.
    Bytes(u64),
}

pub use crate::stats::parse_size;

impl std::str::FromStr for Subset {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            crate::Error::InvalidInput(format!("{s:?} is not a subset: use n/m (e.g. 1/7), a percentage (10%) or a size (5GiB, 500MiB)"))
        };
        let s = s.trim();
        if let Some((n, m)) = s.split_once('/') {
            let (n, m): (u64, u64) = (
                n.trim().parse().map_err(|_| bad())?,
                m.trim().parse().map_err(|_| bad())?,
            );
            return if m >= 1 && (1..=m).contains(&n) {
                Ok(Subset::Part { n, m })
            } else {
                Err(bad())
            };
        }
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            return if p > 0.0 && p <= 100.0 {
                Ok(Subset::Fraction(p / 100.0))
            } else {
                Err(bad())
            };
        }
        match parse_size(s) {
            Some(v) if v > 0 => Ok(Subset::Bytes(v)),
            _ => Err(bad()),
        }
    }
}

/// Chooses the packs to read from `packs` (any order) and returns them with
/// the cursor for the next run.
pub fn select_packs(
    packs: &[(crate::id::PackId, u64)],
    subset: Subset,
    cursor: u64,
) -> (Vec<crate::id::PackId>, u64) {
    let mut sorted: Vec<(crate::id::PackId, u64)> = packs.to_vec();
    sorted.sort();
    let n = sorted.len();
    if n == 0 {
        return (Vec::new(), 0);
    }
    match subset {
        Subset::Part { n: part, m } => {
            let chosen = sorted
                .iter()
                .filter(|(id, _)| {
                    u64::from_le_bytes(id.as_bytes()[..8].try_into().expect("8 bytes")) % m
                        == part - 1
                })
                .map(|(id, _)| *id)
                .collect();
            (chosen, cursor)
        }
        Subset::Fraction(f) => {
            let k = ((f * n as f64).ceil() as usize).clamp(1, n);
            let start = (cursor as usize) % n;
            let chosen = (0..k).map(|i| sorted[(start + i) % n].0).collect();
            (chosen, ((start + k) % n) as u64)
        }
        Subset::Bytes(limit) => {
            let start = (cursor as usize) % n;
            let mut chosen = Vec::new();
            let mut total = 0u64;
            for i in 0..n {
                let (id, size) = sorted[(start + i) % n];
                if !chosen.is_empty() && total + size > limit {
                    break;
                }
                chosen.push(id);
                total += size;
            }
            let next = ((start + chosen.len()) % n) as u64;
            (chosen, next)
        }
    }
}

/// A file that a damaged blob makes unrestorable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Affected {
    /// Snapshot.
    pub snapshot: SnapshotId,
    /// Path in it.
    pub path: PathBuf,
}

/// Findings of a check.
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    /// Damage: the repository cannot restore everything.
    pub errors: Vec<String>,
    /// Harmless findings (unreferenced packs, duplicate blobs).
    pub notes: Vec<String>,
    /// Files affected by the damage.
    pub affected: Vec<Affected>,
    /// Snapshots checked.
    pub snapshots: usize,
    /// Packs listed.
    pub packs: usize,
    /// Packs read (with read_data).
    pub packs_read: usize,
    /// Blobs in the index.
    pub blobs: usize,
    /// Cursor for the next rotating `--read-data-subset` run.
    pub next_cursor: u64,
    /// The index is damaged, incomplete or wrong: rebuilding it from the
    /// packs' headers may bring blobs back, and leaves out what index
    /// files that lie say.
    pub repair_index: bool,
    /// Packs found missing or damaged: what they still hold can be saved
    /// (`repair::repair_packs`).
    pub damaged_packs: Vec<crate::id::PackId>,
    /// Index files that list blobs where they are not, while nothing is
    /// lost through them (every such blob has a good copy elsewhere) or
    /// the packs' own sizes or headers prove them wrong: wrong, or planted
    /// by someone who holds the key (readers already fall back to the
    /// good copies). Each is named in `errors`, with who stored it where
    /// the storage records that.
    pub lying_index: Vec<crate::id::IndexId>,
}

impl CheckReport {
    /// True when nothing is damaged.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Checks the repository.
pub fn check(repo: &Repository, opts: &CheckOptions) -> Result<CheckReport> {
    let mut r = CheckReport::default();
    check_side_files(repo, &mut r)?;
    // Snapshots first, then the index: a backup that finishes meanwhile adds
    // its index before its snapshot, so every snapshot seen here has its
    // blobs in the index loaded next.
    let (snapshots, damaged) = repo.snapshots_checked()?;
    for (name, e) in damaged {
        r.errors
            .push(format!("snapshot {name} cannot be read: {e}"));
    }
    r.snapshots = snapshots.len();
    void_claims(repo, &mut r)?;
    // Each index file on its own (which file says what, so that one that
    // lies can be named) and merged (what readers use).
    let loaded = FileSet::load(repo).and_then(|files| Ok((files, repo.index()?)));
    let (files, index) = match loaded {
        Ok(l) => l,
        Err(e) => {
            r.errors.push(format!("cannot load the index: {e}"));
            r.repair_index = true;
            return Ok(r);
        }
    };
    let bad_blobs = check_index(repo, &files, &index, opts, &mut r)?;
    let gone = files.gone.take();
    drop(files);
    if !gone.is_empty() {
        let names: Vec<String> = gone.iter().map(IndexId::to_hex).collect();
        r.errors.push(format!(
            "index file{} {} vanished while check read the index files (a prune or repair \
             replaced {}): this check is incomplete; run it again",
            if gone.len() == 1 { "" } else { "s" },
            names.join(", "),
            if gone.len() == 1 { "it" } else { "them" },
        ));
    }
    // With the index in an on-disk table, the data blobs that snapshots
    // use are asked about in id order first (one lookup per blob would
    // read a page per blob); the walk then needs only the answer.
    let (missing, unread) = if index.on_disk() {
        let (m, u) = missing_data(repo, &index, &snapshots)?;
        (Some(m), u)
    } else {
        (None, HashSet::default())
    };
    let has_data = |id: &BlobId| match &missing {
        Some(m) => !m.contains(id),
        None => index.contains(id),
    };
    // Walk every snapshot; each tree once (the outcome of a tree is the
    // same wherever it appears, only the paths differ).
    let mut tree_state: HashMap<BlobId, bool> = HashMap::new();
    for (sid, s) in &snapshots {
        walk_check(
            repo,
            &Walk {
                index: &index,
                has_data: &has_data,
                unread: &unread,
                bad: &bad_blobs,
                sid,
            },
            &s.tree,
            Path::new("/"),
            false,
            &mut tree_state,
            &mut r,
        );
    }
    Ok(r)
}

impl FileSet<'_> {
    /// Where the listings of each of `wanted` packs place blobs: every
    /// place once, sorted.
    fn places(
        &self,
        wanted: &HashSet<PackId, IdBuildHasher>,
    ) -> Result<HashMap<PackId, Vec<Place>, IdBuildHasher>> {
        let mut out: HashMap<PackId, Vec<Place>, IdBuildHasher> = HashMap::default();
        if wanted.is_empty() {
            return Ok(out);
        }
        self.each(|_, file| {
            for p in file.packs.iter().filter(|p| wanted.contains(&p.id)) {
                out.entry(p.id)
                    .or_default()
                    .extend(p.blobs.iter().map(Place::of));
            }
        })?;
        for v in out.values_mut() {
            v.sort_unstable();
            v.dedup();
        }
        Ok(out)
    }

    /// `packs` in groups whose places fit a quarter of the budget (see
    /// [`FileSet::groups`]).
    fn batches(&self, packs: &[PackId], facts: &BTreeMap<PackId, PackFacts>) -> Vec<Vec<PackId>> {
        self.groups(packs, |id| {
            facts[id].listings.iter().map(|l| l.entries).sum::<usize>()
                * std::mem::size_of::<Place>()
        })
    }
}

/// With the index in an on-disk table: the data blobs that snapshots use
/// and the index lacks, and the trees that could not be read. Each tree is
/// read once; its data blob ids are gathered within a third of the memory
/// budget, sorted, and spilled as runs beside the table when that fills;
/// the runs are then merged and asked about in id order, so the table is
/// read once rather than once per batch (where no run can be written, a
/// full batch is asked about at once). The walk reports trees that cannot
/// be read, and asks the index directly about what lies under one that it
/// reads after all.
fn missing_data(
    repo: &Repository,
    index: &Index,
    snapshots: &[(SnapshotId, crate::format::snapshot::SnapshotFile)],
) -> Result<(
    HashSet<BlobId, IdBuildHasher>,
    HashSet<BlobId, IdBuildHasher>,
)> {
    // A third of the budget for the ids gathered (sorting needs no second
    // copy).
    let cap = usize::try_from(repo.memory_budget().unwrap_or(512 << 20) / 3 / 32)
        .unwrap_or(usize::MAX)
        .max(4096);
    let dir = index
        .table_path()
        .and_then(Path::parent)
        .map(Path::to_path_buf);
    let mut missing: HashSet<BlobId, IdBuildHasher> = HashSet::default();
    let mut runs: Vec<IdRun> = Vec::new();
    let mut pending: Vec<BlobId> = Vec::new();
    let mut seen: HashSet<BlobId, IdBuildHasher> = HashSet::default();
    let mut unread: HashSet<BlobId, IdBuildHasher> = HashSet::default();
    let mut todo: Vec<BlobId> = snapshots.iter().map(|(_, s)| s.tree).collect();
    while let Some(tree) = todo.pop() {
        if !seen.insert(tree) {
            continue;
        }
        let Ok(t) = repo.read_tree(&tree) else {
            unread.insert(tree);
            continue;
        };
        for n in &t.nodes {
            match &n.kind {
                NodeKind::File { content, .. } => {
                    pending.extend(content);
                    if pending.len() >= cap {
                        pending.sort_unstable();
                        pending.dedup();
                        match dir.as_deref().map(|d| IdRun::write(d, &pending)) {
                            Some(Ok(run)) => runs.push(run),
                            // No room for a run: this batch now (the table
                            // is then read once more).
                            _ => missing.extend(index.missing_sorted(&pending)),
                        }
                        pending.clear();
                    }
                }
                NodeKind::Dir { subtree } => todo.push(*subtree),
                _ => {}
            }
        }
    }
    pending.sort_unstable();
    pending.dedup();
    if runs.is_empty() {
        missing.extend(index.missing_sorted(&pending));
        return Ok((missing, unread));
    }
    let mut streams: Vec<Box<dyn Iterator<Item = std::io::Result<BlobId>>>> = runs
        .into_iter()
        .map(|r| Box::new(r.into_iter()) as Box<dyn Iterator<Item = _>>)
        .collect();
    streams.push(Box::new(pending.into_iter().map(Ok)));
    // In id order: each batch goes on through the table where the last
    // one stopped.
    let mut batch: Vec<BlobId> = Vec::with_capacity(1 << 16);
    let mut last = None;
    for id in merge_ids(streams) {
        let id = id?;
        if last == Some(id) {
            continue;
        }
        last = Some(id);
        batch.push(id);
        if batch.len() == batch.capacity() {
            missing.extend(index.missing_sorted(&batch));
            batch.clear();
        }
    }
    missing.extend(index.missing_sorted(&batch));
    Ok((missing, unread))
}

/// Sorted blob ids spilled to an unlinked file (see [`missing_data`]).
struct IdRun {
    file: std::fs::File,
    len: usize,
}

impl IdRun {
    fn write(dir: &Path, ids: &[BlobId]) -> std::io::Result<IdRun> {
        use std::io::{Seek, Write};
        let file = crate::repository::unlinked_file(dir, "ids")?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        for id in ids {
            out.write_all(&id.0 .0)?;
        }
        let mut file = out.into_inner().map_err(|e| e.into_error())?;
        file.seek(std::io::SeekFrom::Start(0))?;
        Ok(IdRun {
            file,
            len: ids.len(),
        })
    }

    fn into_iter(self) -> impl Iterator<Item = std::io::Result<BlobId>> {
        use std::io::Read;
        let mut r = std::io::BufReader::with_capacity(1 << 18, self.file);
        (0..self.len).map(move |_| {
            let mut id = [0u8; 32];
            r.read_exact(&mut id).map(|()| BlobId(Hash(id)))
        })
    }
}

/// Merges sorted streams of ids into one sorted stream (copies kept).
fn merge_ids<'a>(
    mut streams: Vec<Box<dyn Iterator<Item = std::io::Result<BlobId>> + 'a>>,
) -> impl Iterator<Item = std::io::Result<BlobId>> + 'a {
    use std::cmp::Reverse;
    let mut heap = std::collections::BinaryHeap::new();
    let mut err = None;
    for (k, s) in streams.iter_mut().enumerate() {
        match s.next() {
            Some(Ok(id)) => heap.push(Reverse((id, k))),
            Some(Err(e)) => err = Some(e),
            None => {}
        }
    }
    std::iter::from_fn(move || {
        if let Some(e) = err.take() {
            return Some(Err(e));
        }
        let Reverse((id, k)) = heap.pop()?;
        match streams[k].next() {
            Some(Ok(next)) => heap.push(Reverse((next, k))),
            Some(Err(e)) => err = Some(e),
            None => {}
        }
        Some(Ok(id))
    })
}

/// Where an index file says a blob is (its kind aside: a copy is good when
/// it reads).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Place {
    blob: BlobId,
    offset: u32,
    length: u32,
    raw_length: u32,
}

impl Place {
    fn of(b: &PackedBlob) -> Self {
        Place {
            blob: b.id,
            offset: b.offset,
            length: b.length,
            raw_length: b.raw_length,
        }
    }
}

/// One index file's listing of a pack, as check keeps it (its entries are
/// read from the file again when needed).
struct Listing {
    /// The file's position in [`FileSet::ids`].
    file: usize,
    /// The size it gives the pack.
    size: u64,
    /// How many entries it lists there.
    entries: usize,
    /// Where its last entry ends.
    end: u64,
    /// The hash of the places it lists there, sorted: listings that
    /// disagree on what the pack holds differ here.
    places: Hash,
}

/// What check knows of one pack that some index file lists.
#[derive(Default)]
struct PackFacts {
    /// Where it is listed, in file order.
    listings: Vec<Listing>,
    /// Its size in the storage; None when it is not there.
    actual: Option<u64>,
    /// Some listing gives the size it has.
    size_confirmed: bool,
    /// Its listings disagree on what it holds.
    contested: bool,
    /// When the pack or its header was read: the places listed there that
    /// do not hold their blob, and why.
    wrong: Option<HashMap<Place, Wrong>>,
}

/// Why an index file's entry does not give its blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wrong {
    /// The pack is not in the storage.
    Missing,
    /// The file gives the pack another size than it has.
    Size { says: u64, actual: u64 },
    /// The entry ends past the end of the pack.
    PastEnd { blob: BlobId, offset: u32 },
    /// The bytes there do not authenticate as the blob (damage to the
    /// pack, as far as check can tell).
    FailsAuth { blob: BlobId, offset: u32 },
    /// The bytes there do not authenticate as the blob, and the pack's
    /// authenticated header has no such entry: the index file is wrong.
    Misread { blob: BlobId, offset: u32 },
    /// The pack's header (read alone) has no such entry.
    NotInHeader { blob: BlobId, offset: u32 },
}

impl Wrong {
    /// Findings of one kind about one listing are said together.
    fn kind(self) -> u8 {
        match self {
            Wrong::Missing => 0,
            Wrong::Size { .. } => 1,
            Wrong::PastEnd { .. } => 2,
            Wrong::FailsAuth { .. } => 3,
            Wrong::Misread { .. } => 4,
            Wrong::NotInHeader { .. } => 5,
        }
    }

    /// Says this finding about `pack`, made for `n` entries of a listing
    /// (`self` is the first).
    fn describe(self, pack: &PackId, n: usize) -> String {
        let (blob, offset, one, many) = match self {
            Wrong::Missing => return format!("pack {pack} is missing"),
            Wrong::Size { says, actual } => {
                return format!("pack {pack} is {actual} bytes, not {says}")
            }
            Wrong::PastEnd { blob, offset } => (
                blob,
                offset,
                "would end past its end",
                "would end past its end",
            ),
            Wrong::FailsAuth { blob, offset } => {
                (blob, offset, "fails authentication", "fail authentication")
            }
            Wrong::Misread { blob, offset } => (
                blob,
                offset,
                "fails authentication, and its header has no such entry",
                "fail authentication, and its header has no such entries",
            ),
            Wrong::NotInHeader { blob, offset } => (
                blob,
                offset,
                "is not there according to its header",
                "are not there according to its header",
            ),
        };
        if n == 1 {
            format!(
                "pack {pack}: blob {} at offset {offset} {one}",
                blob.short()
            )
        } else {
            format!(
                "pack {pack}: {n} blobs {many} (blob {} at offset {offset}, ...)",
                blob.short()
            )
        }
    }
}

/// Judges one entry of an index file (`size`: what that file says the
/// pack's size is): None when it gives its blob, as far as this run
/// knows (a pack not read counts as good when it has the size the file
/// says); else why not, and whether that proves the file wrong (another
/// listing or the pack's header says otherwise) rather than the pack
/// damaged.
fn judge(facts: &PackFacts, size: u64, p: &Place) -> Option<(Wrong, bool)> {
    let Some(actual) = facts.actual else {
        return Some((Wrong::Missing, false));
    };
    if actual != size {
        return Some((Wrong::Size { says: size, actual }, facts.size_confirmed));
    }
    let (blob, offset) = (p.blob, p.offset);
    if u64::from(p.offset) + u64::from(p.length) > actual {
        return Some((Wrong::PastEnd { blob, offset }, true));
    }
    let w = *facts.wrong.as_ref()?.get(p)?;
    Some((w, !matches!(w, Wrong::FailsAuth { .. })))
}

impl PackFacts {
    /// Some listing of it may have an entry that does not give its blob
    /// (see [`judge`]): the pack is missing, a listing gives it another
    /// size or places a blob past its end, or a read found a wrong entry.
    fn suspect(&self) -> bool {
        let Some(actual) = self.actual else {
            return true;
        };
        self.listings
            .iter()
            .any(|l| l.size != actual || l.end > actual)
            || self.wrong.as_ref().is_some_and(|w| !w.is_empty())
    }
}

/// Calls `f` with every entry of every suspect pack (see
/// [`PackFacts::suspect`]; the others have no verdict) of every index file
/// (the file's position, the pack, the entry) and its verdict (see
/// [`judge`]). Without a suspect pack, the files are not read.
fn each_entry(
    files: &FileSet,
    packs: &BTreeMap<PackId, PackFacts>,
    mut f: impl FnMut(usize, &PackId, &PackedBlob, Option<(Wrong, bool)>),
) -> Result<()> {
    if !packs.values().any(PackFacts::suspect) {
        return Ok(());
    }
    files.each(|fi, file| {
        for listing in &file.packs {
            let facts = &packs[&listing.id];
            if !facts.suspect() {
                continue;
            }
            for b in &listing.blobs {
                f(
                    fi,
                    &listing.id,
                    b,
                    judge(facts, listing.size, &Place::of(b)),
                );
            }
        }
    })
}

/// What one index file says wrongly.
#[derive(Default)]
struct Misplaced {
    /// Entries that do not give their blob.
    entries: usize,
    /// Of those, the ones whose blob has no good copy anywhere.
    lost: usize,
    /// Some of them are proved wrong (by another listing's size or by the
    /// pack's header), not explained by damage to a pack.
    disproved: bool,
    /// Findings by pack and kind: how many entries, and the first.
    findings: BTreeMap<(PackId, u8), (usize, Wrong)>,
}

/// Index files and packs: every index file authenticates; every entry of
/// every index file is judged on its own (its pack is there with the size
/// that file says; with `--read-data`, its bytes authenticate as its
/// blob). A blob is lost only when none of its entries is good, so an
/// index file that lies hides no good copy; each such file is named.
/// Returns the lost blobs; missing or damaged packs go to `damaged_packs`.
fn check_index(
    repo: &Repository,
    files: &FileSet,
    index: &Index,
    opts: &CheckOptions,
    r: &mut CheckReport,
) -> Result<HashSet<BlobId, IdBuildHasher>> {
    r.blobs = index.len();
    let listed: HashMap<String, u64> = repo
        .backend()
        .list(FileType::Pack)?
        .into_iter()
        .map(|f| (f.name, f.size))
        .collect();
    r.packs = listed.len();

    // The first pass also finds the damaged files.
    let mut packs = pack_facts(files, &listed)?;
    let damaged = !files.damaged.borrow().is_empty();
    for (name, e) in files.damaged.borrow().iter() {
        r.errors.push(format!(
            "index file {name} cannot be read ({e}); the blobs it lists are reported missing below"
        ));
        r.repair_index = true;
    }
    let mut found = Vec::new();
    if opts.read_data || opts.subset.is_some() {
        found.extend(read_packs(repo, files, &mut packs, opts, r)?);
    }
    found.extend(read_contested_headers(repo, files, &mut packs, r)?);
    let lost = lost_blobs(files, &packs)?;
    report_bad_packs(files, &packs, &lost, r)?;
    r.errors.extend(found);
    report_unindexed_packs(repo, &listed, &packs, damaged, opts, r);
    name_lying_files(repo, files, &packs, &lost, r)?;
    if index.duplicates() > 0 {
        r.notes.push(if r.lying_index.is_empty() {
            format!(
                "{} blobs are stored in more than one pack (harmless; prune reclaims the space)",
                index.duplicates()
            )
        } else {
            format!(
                "{} index entries name a blob that another entry names too, among them those of \
                 the index files that lie (see the errors)",
                index.duplicates()
            )
        });
    }
    let mut seen = HashSet::new();
    r.damaged_packs.retain(|p| seen.insert(*p));
    Ok(lost)
}

/// What check knows of each pack some index file lists before it reads
/// any: where it is listed, its size in the storage (`listed`: name ->
/// size), whether a listing gives that size, whether its listings
/// disagree on what it holds.
fn pack_facts(
    files: &FileSet,
    listed: &HashMap<String, u64>,
) -> Result<BTreeMap<PackId, PackFacts>> {
    let mut packs: BTreeMap<PackId, PackFacts> = BTreeMap::new();
    let mut bytes = Vec::new();
    files.each(|fi, f| {
        for p in &f.packs {
            let mut v: Vec<Place> = p.blobs.iter().map(Place::of).collect();
            v.sort_unstable();
            bytes.clear();
            for x in &v {
                bytes.extend_from_slice(&x.blob.0 .0);
                for n in [x.offset, x.length, x.raw_length] {
                    bytes.extend_from_slice(&n.to_le_bytes());
                }
            }
            packs.entry(p.id).or_default().listings.push(Listing {
                file: fi,
                size: p.size,
                entries: p.blobs.len(),
                end: p
                    .blobs
                    .iter()
                    .map(|b| u64::from(b.offset) + u64::from(b.length))
                    .max()
                    .unwrap_or(0),
                places: Hash::of(&bytes),
            });
        }
    })?;
    for (id, facts) in &mut packs {
        facts.actual = listed.get(&id.to_hex()).copied();
        facts.size_confirmed = facts.listings.iter().any(|l| Some(l.size) == facts.actual);
        if let [first, rest @ ..] = facts.listings.as_slice() {
            facts.contested = rest.iter().any(|l| l.places != first.places);
        }
    }
    Ok(packs)
}

/// The blobs that are lost: an entry that gives them fails (see
/// [`judge`]), and no entry that holds gives them.
fn lost_blobs(
    files: &FileSet,
    packs: &BTreeMap<PackId, PackFacts>,
) -> Result<HashSet<BlobId, IdBuildHasher>> {
    let mut lost: HashSet<BlobId, IdBuildHasher> = HashSet::default();
    each_entry(files, packs, |_, _, b, v| {
        if v.is_some() {
            lost.insert(b.id);
        }
    })?;
    if !lost.is_empty() {
        // Every entry here, suspect pack or not: a good copy anywhere saves
        // a blob.
        files.each(|_, file| {
            for listing in &file.packs {
                let facts = &packs[&listing.id];
                for b in &listing.blobs {
                    if lost.contains(&b.id) && judge(facts, listing.size, &Place::of(b)).is_none() {
                        lost.remove(&b.id);
                    }
                }
            }
        })?;
    }
    Ok(lost)
}

/// Reports every pack that is missing or has none of the sizes its
/// listings give: how many of its blobs are lost (`lost`), how many have a
/// good copy elsewhere, and which index files list it. A missing pack that
/// loses blobs, and every pack of the wrong size, goes to `damaged_packs`.
fn report_bad_packs(
    files: &FileSet,
    packs: &BTreeMap<PackId, PackFacts>,
    lost: &HashSet<BlobId, IdBuildHasher>,
    r: &mut CheckReport,
) -> Result<()> {
    let bad: Vec<PackId> = packs
        .iter()
        .filter(|(_, f)| f.actual.is_none() || !f.size_confirmed)
        .map(|(id, _)| *id)
        .collect();
    for batch in files.batches(&bad, packs) {
        let mut places = files.places(&batch.iter().copied().collect())?;
        for id in &batch {
            report_bad_pack(files, id, &packs[id], &mut places, lost, r);
        }
    }
    Ok(())
}

/// One pack of [`report_bad_packs`] (`places`: where its listings place
/// blobs).
fn report_bad_pack(
    files: &FileSet,
    id: &PackId,
    facts: &PackFacts,
    places: &mut HashMap<PackId, Vec<Place>, IdBuildHasher>,
    lost: &HashSet<BlobId, IdBuildHasher>,
    r: &mut CheckReport,
) {
    let name = id.to_hex();
    let mut blobs: Vec<BlobId> = places
        .remove(id)
        .unwrap_or_default()
        .iter()
        .map(|p| p.blob)
        .collect();
    blobs.sort_unstable();
    blobs.dedup();
    let gone = blobs.iter().filter(|b| lost.contains(*b)).count();
    let saved = blobs.len() - gone;
    let mut names: Vec<String> = facts
        .listings
        .iter()
        .map(|l| files.ids[l.file].to_hex())
        .collect();
    names.dedup();
    let by = format!(
        "listed by index file{} {}",
        if names.len() == 1 { "" } else { "s" },
        names.join(", ")
    );
    match facts.actual {
        None if gone == 0 => r.errors.push(format!(
            "pack {name} is missing, but each of the {saved} blobs listed there has a good \
             copy elsewhere (none lost; {by})"
        )),
        None => {
            let also = if saved > 0 {
                format!(", {saved} more listed there have a good copy elsewhere")
            } else {
                String::new()
            };
            r.errors.push(format!(
                "pack {name} is missing ({gone} blobs lost{also}; {by})"
            ));
            r.damaged_packs.push(*id);
        }
        Some(actual) => {
            let says = facts.listings[0].size;
            r.errors.push(format!(
                "pack {name} is {actual} bytes, the index says {says}: truncated or replaced \
                 ({gone} blobs lost; {by})"
            ));
            r.damaged_packs.push(*id);
        }
    }
}

/// Packs in the storage (`listed`) that no index file lists (`packs`).
/// With damaged index files (`index_damaged`) they may hold what those
/// listed: an error, and the index wants rebuilding. Else each is a
/// leftover of an interrupted backup (a note), or, when `--read-data`
/// reads it whole and it is not a pack of this repository, garbage stored
/// under a valid name (an error).
fn report_unindexed_packs(
    repo: &Repository,
    listed: &HashMap<String, u64>,
    packs: &BTreeMap<PackId, PackFacts>,
    index_damaged: bool,
    opts: &CheckOptions,
    r: &mut CheckReport,
) {
    let indexed: HashSet<String> = packs.keys().map(PackId::to_hex).collect();
    let unindexed = listed.keys().filter(|n| !indexed.contains(*n)).count();
    if unindexed > 0 && index_damaged {
        // Not harmless: they may hold what the damaged index files listed.
        r.errors.push(format!(
            "{unindexed} packs are in no readable index file; with damaged index files they \
             may hold blobs that snapshots need: rebuild the index from the packs"
        ));
        r.repair_index = true;
    } else {
        let mut strangers: Vec<&String> = listed.keys().filter(|n| !indexed.contains(*n)).collect();
        strangers.sort();
        for name in strangers {
            // Read whole with --read-data: a leftover of an interrupted
            // backup is a pack of this repository; garbage is not.
            match opts.read_data.then(|| foreign_pack(repo, name)).flatten() {
                Some(why) => r.errors.push(format!(
                    "pack {name} is in no index and is not a pack of this repository ({why}): \
                     garbage stored under a valid name, or damage. No snapshot uses it; prune \
                     deletes it once the storage lets it, and on a rewind server the operator \
                     moves out what a stolen token stored (rewind serve quarantine)"
                )),
                None => r.notes.push(format!(
                    "pack {name} is not in any index (left by an interrupted backup; harmless)"
                )),
            }
        }
    }
}

/// Names every index file that lists blobs where they are not, when
/// nothing is lost through it (each of those blobs has a good copy
/// elsewhere) or when it is proved wrong (another listing gives the pack's
/// real size, or the pack's own header says otherwise): such a file is
/// wrong or planted, not a sign of damaged packs. Files whose wrong
/// entries are all explained by a lost or damaged pack are left to the
/// errors about that pack (a missing one names the files that list it).
fn name_lying_files(
    repo: &Repository,
    files: &FileSet,
    packs: &BTreeMap<PackId, PackFacts>,
    lost: &HashSet<BlobId, IdBuildHasher>,
    r: &mut CheckReport,
) -> Result<()> {
    let mut per_file: Vec<Misplaced> = Vec::new();
    per_file.resize_with(files.ids.len(), Misplaced::default);
    each_entry(files, packs, |fi, pack, b, v| {
        let Some((wrong, disproved)) = v else {
            return;
        };
        let m = &mut per_file[fi];
        m.entries += 1;
        m.lost += usize::from(lost.contains(&b.id));
        m.disproved |= disproved;
        m.findings
            .entry((*pack, wrong.kind()))
            .or_insert((0, wrong))
            .0 += 1;
    })?;
    let lying: Vec<usize> = per_file
        .iter()
        .enumerate()
        .filter(|(_, m)| m.entries > 0 && (m.lost == 0 || m.disproved))
        .map(|(fi, _)| fi)
        .collect();
    if lying.is_empty() {
        return Ok(());
    }
    // Who stored them, where the storage records it.
    let writers = repo.backend().writers(FileType::Index).unwrap_or_default();
    for fi in lying {
        let m = &per_file[fi];
        let id = files.ids[fi];
        let name = id.to_hex();
        const SHOWN: usize = 3;
        let mut what: Vec<String> = m
            .findings
            .iter()
            .take(SHOWN)
            .map(|((pack, _), (n, first))| first.describe(pack, *n))
            .collect();
        if m.findings.len() > SHOWN {
            what.push(format!("and {} more", m.findings.len() - SHOWN));
        }
        let what = what.join("; ");
        let copies = if m.lost == 0 {
            format!(
                "{} a good copy elsewhere, so nothing is lost through it",
                if m.entries == 1 {
                    "it has".to_string()
                } else {
                    format!("all {} have", m.entries)
                }
            )
        } else {
            format!(
                "{} of them have a good copy elsewhere, {} have none and are lost (see the pack \
                 errors)",
                m.entries - m.lost,
                m.lost
            )
        };
        let stored = writers
            .get(&name)
            .map(|w| {
                format!(
                    " (stored by {}token {}{})",
                    if w.adds_only { "backup " } else { "" },
                    w.token,
                    w.time
                        .map(|t| format!(" at {}", t.strftime("%Y-%m-%d %H:%M:%S UTC")))
                        .unwrap_or_default()
                )
            })
            .unwrap_or_default();
        r.errors.push(format!(
            "index file {name} lists {} blob{} where {} not ({what}); {copies}: it is wrong or \
             planted{stored}; `rewind repair index` rebuilds the index from the packs without it",
            m.entries,
            if m.entries == 1 { "" } else { "s" },
            if m.entries == 1 { "it is" } else { "they are" },
        ));
        r.lying_index.push(id);
        r.repair_index = true;
    }
    Ok(())
}

/// Why a pack no index lists is not one of this repository's (read whole):
/// its bytes do not hash to its name, or its header does not open with the
/// key. `None` for a pack of this repository.
fn foreign_pack(repo: &Repository, name: &str) -> Option<String> {
    let bytes = match repo.backend().read(FileType::Pack, name) {
        Ok(b) => b,
        Err(crate::Error::Missing { .. }) => return None,
        Err(e) => return Some(format!("cannot be read: {e}")),
    };
    let id: PackId = name.parse().ok()?;
    if Hash::of(&bytes) != id.0 {
        return Some("its bytes do not match its name".into());
    }
    PackHeader::parse(repo.crypto(), &id, &bytes)
        .err()
        .map(|e| format!("its header does not open: {e}"))
}

/// Snapshot files whose rewrite claims count for nothing: stored by a
/// token that may only add (DESIGN §3.8), and hidden by the listing. Each
/// is named: nothing is lost through it, but someone who holds that token
/// and the password tried to rewrite history.
fn void_claims(repo: &Repository, r: &mut CheckReport) -> Result<()> {
    let writers = repo.backend().writers(FileType::Snapshot)?;
    if !writers.values().any(|w| w.adds_only) {
        return Ok(());
    }
    for (id, identity) in repo.superseded_snapshots()? {
        let Some(w) = writers.get(&id.to_hex()).filter(|w| w.adds_only) else {
            continue;
        };
        let claims = match repo.read_snapshot(&id) {
            Ok((_, s)) => s.original.is_some() || s.rewritten.is_some(),
            Err(_) => false,
        };
        if claims {
            r.errors.push(format!(
                "snapshot file {id} claims to rewrite snapshot {} (as protect, unprotect or mark \
                 do), but token {} stored it{}, which may only add: the claim is ignored and the \
                 file hidden; nothing is lost through it. Someone holding that token and the \
                 password wrote it: revoke the token, and the server's operator moves what it \
                 stored out (rewind serve quarantine)",
                identity.short(),
                w.token,
                w.time.map(|t| format!(" at {t}")).unwrap_or_default()
            ));
        }
    }
    Ok(())
}

/// `--read-data`: reads the chosen packs whole and authenticates every
/// entry that any index file gives there. Returns the errors about the
/// packs themselves (damaged ones go to `damaged_packs`) and records in
/// `packs` the entries that fail.
fn read_packs(
    repo: &Repository,
    files: &FileSet,
    packs: &mut BTreeMap<PackId, PackFacts>,
    opts: &CheckOptions,
    r: &mut CheckReport,
) -> Result<Vec<String>> {
    let present: Vec<(PackId, u64)> = packs
        .iter()
        .filter_map(|(id, f)| f.actual.map(|size| (*id, size)))
        .collect();
    let chosen: Vec<PackId> = match opts.subset {
        Some(sub) => {
            let (chosen, next) = select_packs(&present, sub, opts.cursor);
            r.next_cursor = next;
            chosen
        }
        None => present.iter().map(|(id, _)| *id).collect(),
    };
    r.packs_read = chosen.len();
    let mut errors = Vec::new();
    // A batch of packs at a time: their places, then the packs.
    for batch in files.batches(&chosen, packs) {
        let places = files.places(&batch.iter().copied().collect())?;
        let results: Vec<(PackId, PackRead)> = batch
            .par_iter()
            .map(|id| {
                (
                    *id,
                    read_pack(repo, id, places.get(id).map_or(&[], Vec::as_slice)),
                )
            })
            .collect();
        for (id, read) in results {
            if !read.errors.is_empty() {
                r.damaged_packs.push(id);
            }
            errors.extend(read.errors);
            if let Some(facts) = packs.get_mut(&id) {
                facts.wrong = Some(read.wrong);
            }
        }
    }
    Ok(errors)
}

/// Without `--read-data` (or for packs it does not read this time): a
/// pack whose listings disagree on what it holds has its header read (two
/// small reads), and entries it does not have are wrong. Returns the
/// errors about headers that cannot be read.
fn read_contested_headers(
    repo: &Repository,
    files: &FileSet,
    packs: &mut BTreeMap<PackId, PackFacts>,
    r: &mut CheckReport,
) -> Result<Vec<String>> {
    let todo: Vec<(PackId, u64)> = packs
        .iter()
        .filter(|(_, f)| f.contested && f.wrong.is_none())
        .filter_map(|(id, f)| f.actual.map(|size| (*id, size)))
        .collect();
    let mut errors = Vec::new();
    let ids: Vec<PackId> = todo.iter().map(|(id, _)| *id).collect();
    for batch in files.batches(&ids, packs) {
        let mut places = files.places(&batch.iter().copied().collect())?;
        let results: Vec<(PackId, Result<IndexPack>)> = batch
            .par_iter()
            .map(|id| {
                (
                    *id,
                    repo.read_pack_header(&id.to_hex(), packs[id].actual.unwrap_or(0)),
                )
            })
            .collect();
        for (id, header) in results {
            let facts = packs.get_mut(&id).expect("chosen from packs");
            match header {
                Ok(h) => {
                    let there: HashSet<Place> = h.blobs.iter().map(Place::of).collect();
                    let places = places.remove(&id).unwrap_or_default();
                    facts.wrong = Some(
                        places
                            .into_iter()
                            .filter(|p| !there.contains(p))
                            .map(|p| {
                                let (blob, offset) = (p.blob, p.offset);
                                (p, Wrong::NotInHeader { blob, offset })
                            })
                            .collect(),
                    );
                }
                Err(e) => {
                    errors.push(format!("pack {id}: its header cannot be read ({e})"));
                    r.damaged_packs.push(id);
                }
            }
        }
    }
    Ok(errors)
}

/// What reading one pack found.
struct PackRead {
    /// Damage to the pack itself.
    errors: Vec<String>,
    /// Places that do not hold their blob, and why.
    wrong: HashMap<Place, Wrong>,
}

/// Bytes of a pack `check --read-data` reads at a time: with the longest
/// blob being checked, what one reader holds (a pack read whole was 16 MiB
/// a thread).
const READ_WINDOW: u64 = 1 << 20;

/// Reads one pack from start to end: its name, its header, and every place
/// that an index file gives there. A place that fails and is not in the
/// pack's authenticated header is the index file's error; one that is, is
/// damage to the pack.
fn read_pack(repo: &Repository, pack: &PackId, places: &[Place]) -> PackRead {
    // One buffer per thread for every pack it reads (a fresh one per pack
    // is freed into the allocator's arenas, which then hold several).
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|b| read_pack_into(repo, pack, places, &mut b.borrow_mut()))
}

fn read_pack_into(
    repo: &Repository,
    pack: &PackId,
    places: &[Place],
    buf: &mut Vec<u8>,
) -> PackRead {
    use std::io::Read;
    let name = pack.to_hex();
    let unreadable = |e: String| PackRead {
        errors: vec![format!("pack {name}: {e}")],
        wrong: places
            .iter()
            .map(|p| {
                let (blob, offset) = (p.blob, p.offset);
                (*p, Wrong::FailsAuth { blob, offset })
            })
            .collect(),
    };
    // Remote storage hands over a whole pack in one request (and serves
    // small ranged reads from a cache of whole packs, so reading the header
    // again would fetch the pack twice): it is read whole and judged from
    // memory, the header included.
    let backend = repo.backend();
    let whole = if backend.is_remote() {
        match backend.read(FileType::Pack, &name) {
            Ok(b) => Some(b),
            Err(e) => return unreadable(e.to_string()),
        }
    } else {
        None
    };
    let mut stream: Box<dyn Read + '_> = match &whole {
        Some(b) => Box::new(b.as_slice()),
        None => match backend.read_stream(FileType::Pack, &name) {
            Ok(s) => s,
            Err(e) => return unreadable(e.to_string()),
        },
    };
    // The places in the order of the pack: `buf` holds the bytes from the
    // start of the first one not yet looked at to what is read so far.
    let mut order: Vec<&Place> = places.iter().collect();
    order.sort_by_key(|p| (p.offset, p.length));
    let mut next = 0;
    let mut failing: Vec<&Place> = Vec::new();
    let mut hash = blake3::Hasher::new();
    let mut head = Vec::with_capacity(PREFIX_LEN as usize);
    buf.clear();
    let mut buf_start = 0u64;
    loop {
        let buf_end = buf_start + buf.len() as u64;
        let keep_from = order
            .get(next)
            .map_or(buf_end, |p| u64::from(p.offset).clamp(buf_start, buf_end));
        buf.drain(..(keep_from - buf_start) as usize);
        buf_start = keep_from;
        let before = buf.len();
        if let Err(e) = (&mut stream).take(READ_WINDOW).read_to_end(buf) {
            return unreadable(format!("read: {e}"));
        }
        let got = &buf[before..];
        hash.update(got);
        let want = (PREFIX_LEN as usize - head.len()).min(got.len());
        head.extend_from_slice(&got[..want]);
        let at_end = (got.len() as u64) < READ_WINDOW;
        let buf_end = buf_start + buf.len() as u64;
        while let Some(p) = order.get(next) {
            let (start, end) = (
                u64::from(p.offset),
                u64::from(p.offset) + u64::from(p.length),
            );
            if end > buf_end {
                if !at_end {
                    break; // more to read first
                }
                failing.push(p); // past the end of the pack
            } else {
                let bytes = &buf[(start - buf_start) as usize..(end - buf_start) as usize];
                if repo.open_blob(&p.blob, p.raw_length, bytes, &name).is_err() {
                    failing.push(p);
                }
            }
            next += 1;
        }
        if at_end {
            break;
        }
    }
    let size = buf_start + buf.len() as u64;
    let mut errors = Vec::new();
    if Hash(*hash.finalize().as_bytes()) != pack.0 {
        errors.push(format!(
            "pack {name} does not match its name (bit rot or tampering)"
        ));
    }
    // The header: from memory for a whole pack; else the magic from the
    // bytes read and the sealed header read again from the end (a few
    // KiB; the pack is not held to its end).
    let blobs = match &whole {
        Some(b) => PackHeader::parse(repo.crypto(), pack, b).map(|h| h.blobs),
        None => PackHeader::check_prefix(pack, &head, size)
            .and_then(|()| repo.read_pack_header(&name, size))
            .map(|h| h.blobs),
    };
    let header: Option<HashSet<Place>> = match blobs {
        Ok(b) => Some(b.iter().map(Place::of).collect()),
        Err(e) => {
            errors.push(e.to_string());
            None
        }
    };
    let mut wrong = HashMap::new();
    let mut damaged = 0;
    for p in failing {
        let (blob, offset) = (p.blob, p.offset);
        let w = if header.as_ref().is_some_and(|h| !h.contains(p)) {
            Wrong::Misread { blob, offset }
        } else {
            damaged += 1;
            Wrong::FailsAuth { blob, offset }
        };
        wrong.insert(*p, w);
    }
    if damaged > 0 {
        errors.push(format!("pack {name}: {damaged} blobs fail authentication"));
    }
    PackRead { errors, wrong }
}

/// Key files, settings, prune states and running markers: each damaged
/// file is named. None of them stops a backup or prune (the newest readable
/// settings and state are in force, other keys still open), but each is
/// damage that the storage let happen.
fn check_side_files(repo: &Repository, r: &mut CheckReport) -> Result<()> {
    for k in repo.backend().list(FileType::Key)? {
        let bytes = match repo.backend().read(FileType::Key, &k.name) {
            Ok(b) => b,
            Err(crate::Error::Missing { .. }) => continue,
            Err(e) => return Err(e),
        };
        let why = if Hash::of(&bytes).to_hex() != k.name {
            Some("its content does not match its name".to_string())
        } else {
            serde_json::from_slice::<crate::crypto::KeyFile>(&bytes)
                .err()
                .map(|e| format!("not a key file ({e})"))
        };
        if let Some(why) = why {
            r.errors.push(format!(
                "key file {} is damaged: {why}; the password it held no longer opens the \
                 repository (other keys still do)",
                k.name
            ));
        }
    }
    for (name, e) in repo.settings_files()?.damaged {
        r.errors.push(format!(
            "settings file {name} cannot be read ({e}); the newest readable settings are in \
             force, and storing new settings replaces it"
        ));
    }
    let prune = repo.side_files(|s: &crate::format::prune::PruneState| s.time)?;
    for (name, e) in prune.damaged {
        r.errors.push(format!(
            "prune state {name} cannot be read ({e}); the packs it marked are marked again by \
             the next prune, which then replaces it"
        ));
    }
    for (f, e) in repo.running_markers_checked()?.1 {
        r.errors.push(format!(
            "running marker {} cannot be read ({e}); prune treats it as a running backup until \
             it is {} minutes old, and deletes it later",
            f.name,
            crate::repository::STALE_AFTER.as_secs() / 60
        ));
    }
    Ok(())
}

/// What the walk of one snapshot asks about blobs.
struct Walk<'a> {
    index: &'a Index,
    /// Whether the index holds a data blob.
    has_data: &'a dyn Fn(&BlobId) -> bool,
    /// Trees that `has_data` knows nothing under (see [`missing_data`]).
    unread: &'a HashSet<BlobId, IdBuildHasher>,
    /// Blobs that check_index found lost.
    bad: &'a HashSet<BlobId, IdBuildHasher>,
    sid: &'a SnapshotId,
}

fn walk_check(
    repo: &Repository,
    w: &Walk,
    tree: &BlobId,
    base: &Path,
    direct: bool,
    seen: &mut HashMap<BlobId, bool>,
    r: &mut CheckReport,
) {
    let (index, bad, sid) = (w.index, w.bad, w.sid);
    // Under a tree that `has_data` knows nothing about: ask the index.
    let direct = direct || w.unread.contains(tree);
    // A tree already found intact needs no second walk.
    if seen.get(tree) == Some(&true) {
        return;
    }
    let t = if bad.contains(tree) || !index.contains(tree) {
        Err(format!(
            "tree {tree} is {}",
            if index.contains(tree) {
                "damaged"
            } else {
                "missing"
            }
        ))
    } else {
        repo.read_tree(tree).map_err(|e| e.to_string())
    };
    let t = match t {
        Ok(t) => t,
        Err(e) => {
            r.errors
                .push(format!("snapshot {}: {}: {e}", sid.short(), base.display()));
            r.affected.push(Affected {
                snapshot: *sid,
                path: base.to_path_buf(),
            });
            seen.insert(*tree, false);
            return;
        }
    };
    let mut intact = true;
    for n in &t.nodes {
        let p = base.join(OsStr::from_bytes(&n.name));
        match &n.kind {
            NodeKind::File { content, .. } => {
                let ask = |id: &&BlobId| {
                    if direct {
                        index.contains(id)
                    } else {
                        (w.has_data)(id)
                    }
                };
                let missing: Vec<&BlobId> = content.iter().filter(|id| !ask(id)).collect();
                let damaged = content.iter().filter(|id| bad.contains(*id)).count();
                if !missing.is_empty() {
                    r.errors.push(format!(
                        "snapshot {}: {}: {} data blobs missing from the index (first {})",
                        sid.short(),
                        p.display(),
                        missing.len(),
                        missing[0]
                    ));
                }
                if !missing.is_empty() || damaged > 0 {
                    intact = false;
                    r.affected.push(Affected {
                        snapshot: *sid,
                        path: p,
                    });
                }
            }
            NodeKind::Dir { subtree } => {
                walk_check(repo, w, subtree, &p, direct, seen, r);
                if seen.get(subtree) != Some(&true) {
                    intact = false;
                }
            }
            _ => {}
        }
    }
    seen.insert(*tree, intact);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{Hash, PackId};

    fn packs(n: u8) -> Vec<(PackId, u64)> {
        (0..n)
            .map(|i| (PackId(Hash([i.wrapping_mul(37); 32])), 100 + u64::from(i)))
            .collect()
    }

    #[test]
    fn parts_cover_every_pack_once() {
        let p = packs(50);
        let mut all: Vec<PackId> = (1..=7)
            .flat_map(|n| select_packs(&p, Subset::Part { n, m: 7 }, 0).0)
            .collect();
        all.sort();
        let mut want: Vec<PackId> = p.iter().map(|(id, _)| *id).collect();
        want.sort();
        assert_eq!(all, want);
    }

    #[test]
    fn rotating_subsets_cover_everything_in_turn() {
        let p = packs(23);
        for subset in [Subset::Fraction(0.1), Subset::Bytes(500)] {
            let mut seen = HashSet::new();
            let mut cursor = 0;
            for _ in 0..12 {
                let (chosen, next) = select_packs(&p, subset, cursor);
                assert!(!chosen.is_empty());
                seen.extend(chosen);
                cursor = next;
            }
            assert_eq!(seen.len(), 23, "{subset:?}");
        }
    }

    #[test]
    fn subset_syntax() {
        assert_eq!(
            "1/7".parse::<Subset>().unwrap(),
            Subset::Part { n: 1, m: 7 }
        );
        assert_eq!("10%".parse::<Subset>().unwrap(), Subset::Fraction(0.1));
        assert_eq!("5GiB".parse::<Subset>().unwrap(), Subset::Bytes(5 << 30));
        for bad in ["0/7", "8/7", "1/0", "0%", "101%", "x", "5 parsecs", "-1G"] {
            assert!(bad.parse::<Subset>().is_err(), "{bad}");
        }
    }
}
