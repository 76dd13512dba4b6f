//! Prune: give back the space of data that no snapshot uses, safely beside
//! backups that run at the same time (docs/DESIGN.md §8c).
//!
//! Deletion has two phases, separated by a grace period:
//! ```text
//! run N:   pack P holds only unused blobs -> a new index without P is written,
//!          the old index files are removed, P is marked (time t) in the state
//! run N+k: P still unindexed, marked at least `grace` ago, no running backup
//!          started before t, and no snapshot needs a blob only P has -> delete
//!          P; if a snapshot needs one of its blobs -> P goes back into the index
//! ```
//! A backup that read the index while it still listed P may reuse P's blobs
//! without uploading them again. Such a backup started before t; it either
//! finishes (its snapshot is visible to run N+k, which then keeps P) or is
//! still running (its marker postpones the deletion) or died (nothing refers
//! to P). A backup that started after t never saw P in the index.
//!
//! Partly used packs are repacked: their used blobs are copied into new
//! packs (indexed by the copy), and the old packs follow the path above.

use std::collections::{HashMap, HashSet};

use jiff::{SignedDuration, Timestamp};
use rayon::prelude::*;

use crate::backend::{delete_unless_kept, FileType};
use crate::cancel::Cancel;
use crate::error::{Error, Remedy, Result};
use crate::format::index::{IndexFile, IndexPack};
use crate::format::pack::{BlobKind, PackedBlob};
use crate::format::prune::{Mark, PruneState, RunningKind, VERSION};
use crate::format::tree::NodeKind;
use crate::id::{BlobId, IdBuildHasher, IndexId, PackId};
use crate::repository::{FileSet, Repository, STALE_AFTER};

/// The default grace period between marking a pack and deleting it.
pub const DEFAULT_GRACE: SignedDuration = SignedDuration::from_hours(23);
pub use crate::repository::CLOCK_SKEW;
/// Packs per index file written by prune.
const PACKS_PER_PRUNE_INDEX: usize = 256;

/// How much unused space prune may leave in partly used packs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MaxUnused {
    /// A fraction (0..=1) of the repository's pack bytes.
    Fraction(f64),
    /// A number of bytes.
    Bytes(u64),
}

impl std::str::FromStr for MaxUnused {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidInput(format!(
                "{s:?} is not an amount of unused space: give a percentage like 5% or a size \
                 like 2GiB"
            ))
        };
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(0.0..=100.0).contains(&v) {
                return Err(bad());
            }
            return Ok(MaxUnused::Fraction(v / 100.0));
        }
        crate::stats::parse_size(t)
            .map(MaxUnused::Bytes)
            .ok_or_else(bad)
    }
}

/// Options of [`prune`].
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Unused space allowed to remain in partly used packs.
    pub max_unused: MaxUnused,
    /// Time between marking a pack and deleting it.
    pub grace: SignedDuration,
    /// Also delete what this run marks (refused while a backup runs).
    pub delete_now: bool,
    /// Only compute the plan.
    pub dry_run: bool,
    /// Prune as if snapshot files that cannot be read, and snapshots whose
    /// root tree cannot be read, did not exist (they restore nothing), after
    /// naming each in [`PruneReport::ignored_snapshots`]. Without it, prune
    /// refuses while there is one (it cannot tell which data it needs).
    pub ignore_damaged_snapshots: bool,
    /// Host name for the running marker.
    pub hostname: String,
    /// The current time (tests move it forward); None for the clock.
    pub now: Option<Timestamp>,
    /// Set it to stop at the next safe point, before the repository is
    /// changed (or between repacked packs): prune then returns
    /// [`Error::Interrupted`].
    pub cancel: Cancel,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused: MaxUnused::Fraction(0.05),
            grace: DEFAULT_GRACE,
            delete_now: false,
            dry_run: false,
            ignore_damaged_snapshots: false,
            hostname: crate::source::local_hostname(),
            now: None,
            cancel: Cancel::default(),
        }
    }
}

/// A count of packs and their bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Packs {
    /// Packs.
    pub count: u64,
    /// Their size.
    pub bytes: u64,
}

impl Packs {
    fn add(&mut self, bytes: u64) {
        self.count += 1;
        self.bytes += bytes;
    }

    fn remove(&mut self, bytes: u64) {
        self.count -= 1;
        self.bytes -= bytes;
    }
}

/// What prune found and did (or would do, for a dry run).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PruneReport {
    /// Snapshots whose data is kept.
    pub snapshots: u64,
    /// With `ignore_damaged_snapshots`: snapshot files that cannot be read,
    /// or whose root tree cannot be read, pruned as if they did not exist
    /// (name, why).
    pub ignored_snapshots: Vec<(String, String)>,
    /// Blobs that snapshots use.
    pub used_blobs: u64,
    /// Every pack file in the repository before the run.
    pub packs_before: Packs,
    /// Indexed packs kept as they are (used, or within the unused limit).
    pub kept: Packs,
    /// Stored bytes in kept packs that no snapshot uses.
    pub unused_bytes_kept: u64,
    /// Packs that hold only unused data: marked now.
    pub marked_unused: Packs,
    /// Packs outside the index, seen for the first time (left by a killed
    /// backup, or being written by a running one): marked now.
    pub marked_unindexed: Packs,
    /// Partly used packs whose used blobs are copied to new packs (then
    /// marked).
    pub repacked: Packs,
    /// Bytes copied by the repacking (stored size).
    pub repack_copied_bytes: u64,
    /// New packs written by the repacking.
    pub repack_new_packs: u64,
    /// Packs deleted by this run.
    pub deleted: Packs,
    /// Marked packs still within their grace period.
    pub waiting: Packs,
    /// Marked packs whose deletion waits for a running backup.
    pub postponed: Packs,
    /// Marked packs that a snapshot uses again: the mark is dropped.
    pub unmarked: Packs,
    /// Unindexed packs put back into the index because a snapshot needs them.
    pub recovered: Packs,
    /// Indexed packs that do not exist and hold nothing used (dropped from
    /// the index).
    pub missing_unused: u64,
    /// Marked packs whose header cannot be read: left in place (name, error).
    pub unreadable: Vec<(String, String)>,
    /// Index files written (by the repacking and the index rewrite).
    pub index_written: u64,
    /// Old index files removed.
    pub index_removed: u64,
    /// Running backups seen (host, pid, start).
    pub running_backups: Vec<(String, u32, Timestamp)>,
    /// Prune state files that cannot be read: every mark then starts its
    /// grace period again (one of them may have been the newest state).
    pub damaged_states: Vec<String>,
    /// Damaged running markers young enough to be a running backup's:
    /// treated as one whose start is unknown (deletions wait).
    pub damaged_markers: Vec<String>,
    /// Packs due for deletion that the store still retains (S3 Object
    /// Lock): they stay marked, and a prune after their retention deletes
    /// them.
    pub retained: Packs,
    /// Those packs and the end of their retention, earliest first.
    pub retained_until: Vec<(String, Timestamp)>,
    /// Old versions of deleted files removed once their retention ended
    /// (S3 Object Lock).
    pub versions_removed: u64,
    /// Temporary files of interrupted writes removed (local backend).
    pub temporaries_removed: u64,
    /// Earliest time at which a prune can delete the packs that wait.
    pub next_deletion: Option<Timestamp>,
}

struct PackInfo {
    size: u64,
    /// The listing prune goes by (the first): the index file's position in
    /// the file set and the pack's there. Its entries are not kept: the
    /// steps that need them read the index files again, or use the ones
    /// held when they fit the memory budget (docs/SCALE.md).
    listing: (u32, u32),
    /// Blobs listed there.
    count: u32,
    /// Used blobs whose kept copy is this one: a bit per position in that
    /// listing (not a copy of the entry, nor a 4-byte position).
    used: Vec<u64>,
    /// Bits set in `used`.
    used_count: u32,
    used_bytes: u64,
}

impl PackInfo {
    /// Claims position `k` of the listing for this pack.
    fn use_blob(&mut self, k: usize, length: u32) {
        if self.used.is_empty() {
            self.used = vec![0; (self.count as usize).div_ceil(64)];
        }
        self.used[k / 64] |= 1 << (k % 64);
        self.used_count += 1;
        self.used_bytes += u64::from(length);
    }

    fn is_used(&self, k: usize) -> bool {
        self.used
            .get(k / 64)
            .is_some_and(|w| w & (1 << (k % 64)) != 0)
    }

    /// The positions claimed, in order.
    fn used_positions(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.count as usize).filter(|k| {
            self.used
                .get(k / 64)
                .is_some_and(|w| w & (1 << (k % 64)) != 0)
        })
    }
}

/// Position of a file or pack in a [`FileSet`], as [`PackInfo::listing`] keeps it.
fn at(fi: usize, pi: usize) -> (u32, u32) {
    let n = |x: usize| u32::try_from(x).expect("fewer than 4 billion index files and packs");
    (n(fi), n(pi))
}

/// What a claim of a blob found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Claim {
    /// Used, and this is its first copy: kept.
    First,
    /// A used key claimed before: a copy of the same blob, or (rarely, see
    /// [`UsedKey`]) another blob with the same key.
    Again,
    /// No snapshot uses it.
    Unused,
}

/// A copy whose key was claimed before ([`Claim::Again`]): its pack and
/// position there, and its key.
type Again = (PackId, u32, UsedKey);

/// Keeps the blobs whose key another blob claimed first ([`UsedKey`]): a
/// pass over the files collects the full ids of the claimed copies of
/// those keys and of the copies claimed again; a copy whose id is not
/// among the claimed ones is another blob, and is claimed too. Returns how
/// many were kept so.
fn keep_colliding(
    files: &FileSet<'_>,
    packs: &mut HashMap<PackId, PackInfo>,
    again: &[Again],
) -> Result<usize> {
    if again.is_empty() {
        return Ok(0);
    }
    let keys: HashSet<UsedKey> = again.iter().map(|(_, _, key)| *key).collect();
    let wanted: HashSet<(PackId, u32)> = again.iter().map(|(p, k, _)| (*p, *k)).collect();
    let mut claimed: HashMap<UsedKey, Vec<BlobId>> = HashMap::new();
    let mut copies: Vec<(PackId, u32, BlobId, u32)> = Vec::new();
    files.each(|fi, file| {
        for (pi, p) in file.packs.iter().enumerate() {
            let Some(info) = packs.get(&p.id).filter(|i| i.listing == at(fi, pi)) else {
                continue;
            };
            for (k, b) in p.blobs.iter().enumerate() {
                let key = used_key(&b.id);
                if !keys.contains(&key) {
                    continue;
                }
                let k32 = u32::try_from(k).expect("fewer than 4 billion blobs");
                if info.is_used(k) {
                    claimed.entry(key).or_default().push(b.id);
                } else if wanted.contains(&(p.id, k32)) {
                    copies.push((p.id, k32, b.id, b.length));
                }
            }
        }
    })?;
    let keep = colliding(claimed, copies);
    for (pack, k, length) in &keep {
        packs
            .get_mut(pack)
            .expect("listed")
            .use_blob(*k as usize, *length);
    }
    Ok(keep.len())
}

/// Of the copies claimed again, those whose id is not a claimed one (nor
/// one kept before them): other blobs with the same key.
fn colliding(
    mut claimed: HashMap<UsedKey, Vec<BlobId>>,
    copies: Vec<(PackId, u32, BlobId, u32)>,
) -> Vec<(PackId, u32, u32)> {
    let mut keep = Vec::new();
    for (pack, k, id, length) in copies {
        let ids = claimed.entry(used_key(&id)).or_default();
        if !ids.contains(&id) {
            ids.push(id);
            keep.push((pack, k, length));
        }
    }
    keep
}

/// Blobs in use, and the root trees that could not be read (with why).
type UsedBlobs = (UsedSet, Vec<(BlobId, String)>);

/// A used blob as the used set holds it: the first 128 bits of its id
/// (half the memory of a full id, docs/SCALE.md).
///
/// Two different ids that share them would count as one blob: the second
/// would look like a copy of the first, and prune could drop it. By chance
/// that takes about 2^64 blobs (at 10^8 the odds are 1 in 10^22); on
/// purpose, an attacker who holds the keys can make such a pair in about
/// 2^64 hashes, one half of which it could then get a victim to back up.
/// So a key claimed twice is looked at again with its full ids
/// ([`keep_colliding`]): a copy of the same id is a copy, a different id
/// is kept.
type UsedKey = u128;

#[allow(
    clippy::big_endian_bytes,
    reason = "in memory only: big-endian keys order as the id's bytes, so the radix slots are the id's first bits"
)]
fn used_key(id: &BlobId) -> UsedKey {
    let b = &id.0 .0;
    u128::from_be_bytes(b[..16].try_into().expect("16 bytes"))
}

/// The first `bits` bits of a key (`bits` ≤ 24), as a radix slot.
fn key_slot(key: UsedKey, bits: u32) -> usize {
    if bits == 0 {
        0
    } else {
        usize::try_from(key >> (128 - bits)).expect("at most 24 bits")
    }
}

/// The blobs snapshots use, compact: tree ids in a hash set (the walk asks
/// of each whether it is new), data blobs as [`UsedKey`]s in a vector
/// sorted and deduplicated whenever it fills and at the end, with a bit per
/// blob for "claimed by a pack": about 16 bytes a data blob rather than a
/// hash set's ~55 (docs/SCALE.md).
#[derive(Default)]
struct UsedSet {
    trees: HashSet<BlobId, IdBuildHasher>,
    data: Vec<UsedKey>,
    /// Length of `data` after its last deduplication.
    deduped: usize,
    claimed: Vec<u64>,
    /// Where in `data` the ids whose first `bits` bits are `p` start
    /// (`starts[p]..starts[p + 1]`, the index's radix table): a claim
    /// searches about 16 ids, not all of them (a binary search over 10^7 ids misses the cache at
    /// every step).
    starts: Vec<u32>,
    bits: u32,
}

impl UsedSet {
    /// Adds a tree; true if it was not there.
    fn insert_tree(&mut self, id: BlobId) -> bool {
        self.trees.insert(id)
    }

    /// Adds a data blob. When the vector is full its copies go first; it
    /// grows by a quarter only if that leaves it more than three quarters
    /// full (a doubling would hold twice what it needs at the peak).
    fn insert_data(&mut self, id: BlobId) {
        if self.data.len() == self.data.capacity() && self.data.len() > self.deduped {
            self.dedup();
            let (len, cap) = (self.data.len(), self.data.capacity());
            if len > cap / 4 * 3 {
                self.data.reserve_exact(cap / 4 + 1024);
            }
        }
        self.data.push(used_key(&id));
    }

    fn dedup(&mut self) {
        self.data.sort_unstable();
        self.data.dedup();
        self.deduped = self.data.len();
    }

    /// Sorts what is left and makes room for the claims.
    fn seal(&mut self) {
        // Not shrunk: a copy of the vector would be the peak.
        self.dedup();
        self.claimed = vec![0; self.data.len().div_ceil(64)];
        self.bits = crate::repository::radix_bits(self.data.len());
        let mut starts = vec![0u32; (1usize << self.bits) + 1];
        for key in &self.data {
            starts[key_slot(*key, self.bits) + 1] += 1;
        }
        for k in 1..starts.len() {
            starts[k] += starts[k - 1];
        }
        self.starts = starts;
    }

    fn len(&self) -> usize {
        self.trees.len() + self.data.len()
    }

    /// Claims a used blob for a pack (after [`UsedSet::seal`]).
    fn claim(&mut self, id: &BlobId) -> Claim {
        // An id may be both (a file whose bytes are a tree's): one claim.
        let tree = self.trees.remove(id);
        let key = used_key(id);
        let p = key_slot(key, self.bits);
        let (lo, hi) = (self.starts[p] as usize, self.starts[p + 1] as usize);
        let data = match self.data[lo..hi].binary_search(&key).map(|k| lo + k) {
            Ok(k) if self.claimed[k / 64] & (1 << (k % 64)) == 0 => {
                self.claimed[k / 64] |= 1 << (k % 64);
                Claim::First
            }
            Ok(_) => Claim::Again,
            Err(_) => Claim::Unused,
        };
        match (tree, data) {
            (true, _) => Claim::First,
            (false, data) => data,
        }
    }

    /// The used blobs no pack claimed, as keys.
    fn unclaimed(&self) -> HashSet<UsedKey> {
        let data = self
            .data
            .iter()
            .enumerate()
            .filter(|(k, _)| self.claimed[k / 64] & (1 << (k % 64)) == 0)
            .map(|(_, key)| *key);
        self.trees.iter().map(used_key).chain(data).collect()
    }
}

/// Every blob that a snapshot uses, reading trees level by level in parallel.
///
/// A root tree that cannot be read is refused, or with `skip_bad_roots`
/// left out and returned with the error (its snapshot restores nothing).
fn used_blobs(
    repo: &Repository,
    roots: impl Iterator<Item = BlobId>,
    skip_bad_roots: bool,
    cancel: &Cancel,
) -> Result<UsedBlobs> {
    // Room for every blob the index holds and a 32nd more: a repository
    // whose snapshots use most of its blobs fills it once, without the
    // doubling that would hold twice that while it grows.
    let mut used = UsedSet::default();
    let blobs = repo.index()?.len();
    used.data.reserve_exact(blobs + blobs / 32 + 1024);
    let mut frontier: Vec<BlobId> = roots.filter(|t| used.insert_tree(*t)).collect();
    let bad_roots: std::sync::Mutex<Vec<(BlobId, String)>> = Default::default();
    let mut level = 0;
    while !frontier.is_empty() {
        cancel.check()?;
        let mut next = Vec::new();
        // A few trees at a time: a whole level's children at once would
        // hold every data blob id of that level beside the used set.
        for batch in frontier.chunks(rayon::current_num_threads() * 4) {
            let children: Vec<Vec<(BlobId, bool)>> = batch
                .par_iter()
                .map(|id| {
                    let tree = match repo.read_tree(id) {
                        Ok(t) => t,
                        Err(e) if level == 0 && skip_bad_roots => {
                            bad_roots
                                .lock()
                                .expect("not poisoned")
                                .push((*id, e.to_string()));
                            return Ok(Vec::new());
                        }
                        Err(e) if level == 0 => {
                            return Err(Error::Refused(format!(
                                "the root tree {id} of a snapshot cannot be read ({e}); prune \
                             cannot tell which data it needs and stops before changing \
                             anything"
                            ))
                            .with_remedy(Remedy::PruneIgnoringDamagedSnapshots));
                        }
                        Err(e) => {
                            return Err(Error::Refused(format!(
                                "tree {id} cannot be read ({e}); prune stops before changing \
                             anything"
                            ))
                            .with_remedy(Remedy::CheckThenRepairSnapshots));
                        }
                    };
                    let mut out = Vec::new();
                    for n in tree.nodes {
                        match n.kind {
                            NodeKind::File { content, .. } => {
                                out.extend(content.into_iter().map(|b| (b, false)));
                            }
                            NodeKind::Dir { subtree } => out.push((subtree, true)),
                            _ => {}
                        }
                    }
                    Ok(out)
                })
                .collect::<Result<_>>()?;
            for (id, is_tree) in children.into_iter().flatten() {
                if !is_tree {
                    used.insert_data(id);
                } else if used.insert_tree(id) {
                    next.push(id);
                }
            }
        }
        frontier = next;
        level += 1;
    }
    let bad_roots = bad_roots.into_inner().expect("not poisoned");
    for (id, _) in &bad_roots {
        used.trees.remove(id);
    }
    used.seal();
    Ok((used, bad_roots))
}

/// True for a marker of this host whose process no longer exists (killed
/// before it could remove its marker). A marker written in another PID
/// namespace (a container with the same host name) names a pid this prune
/// cannot look up: never judged dead.
fn is_dead_here(m: &crate::format::prune::RunningMarker, opts: &PruneOptions) -> bool {
    use nix::errno::Errno;
    if m.hostname != opts.hostname {
        return false;
    }
    if m.pid_namespace
        .is_some_and(|ns| Some(ns) != crate::repository::pid_namespace())
    {
        return false;
    }
    let Ok(pid) = i32::try_from(m.pid) else {
        return false;
    };
    matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(Errno::ESRCH)
    )
}

/// The other operations that run, as prune sees them.
#[derive(Default)]
struct Others {
    /// Live backup markers (not stale, not of a dead process on this host).
    backups: Vec<crate::format::prune::RunningMarker>,
    /// Live markers of other prunes.
    prunes: Vec<crate::format::prune::RunningMarker>,
    /// Damaged marker files younger than [`STALE_AFTER`] by the storage's
    /// clock: each may be a live backup's, with an unknown start.
    damaged: Vec<String>,
}

impl Others {
    fn read(repo: &Repository, opts: &PruneOptions, now: Timestamp) -> Result<Others> {
        let (markers, damaged) = repo.running_markers_checked()?;
        let mut others = Others::default();
        for (name, m) in markers {
            let ours = m.kind == RunningKind::Prune
                && m.pid == std::process::id()
                && m.hostname == opts.hostname;
            if ours || !marker_is_fresh(repo, &name, &m, now)? || is_dead_here(&m, opts) {
                continue;
            }
            match m.kind {
                RunningKind::Prune => others.prunes.push(m),
                RunningKind::Backup => others.backups.push(m),
            }
        }
        for (f, _) in damaged {
            // Fail safe: a marker that cannot be read counts as a running
            // backup until the storage says it is old (one that cannot
            // tell its files' times: for as long as the marker is there;
            // an admin removes it).
            if marker_age(repo, &f.name, now)?.is_none_or(|age| age < STALE_AFTER) {
                others.damaged.push(f.name);
            }
        }
        Ok(others)
    }

    /// The running backups as a report lists them (host, pid, start).
    fn summary(&self) -> Vec<(String, u32, Timestamp)> {
        self.backups
            .iter()
            .map(|m| (m.hostname.clone(), m.pid, m.start))
            .collect()
    }

    /// Why deleting at once is not safe now, if it is not.
    fn refuse_now(&self) -> Option<String> {
        if let Some(m) = self.backups.first() {
            return Some(format!(
                "a backup runs on {} (pid {}) since {}; deleting at once could remove data \
                 it relies on",
                m.hostname, m.pid, m.start
            ));
        }
        self.damaged.first().map(|name| {
            format!(
                "running marker {name} cannot be read (damaged), so it may be a running \
                 backup's until it is {} minutes old; deleting at once could remove data that \
                 backup relies on",
                STALE_AFTER.as_secs() / 60
            )
        })
    }
}

/// True when a marker claims a time (start or refresh) beyond `now` plus
/// the clock skew: a clock far ahead, or a marker forged with the key to
/// look live forever.
fn claims_future(m: &crate::format::prune::RunningMarker, now: Timestamp) -> bool {
    let latest = now.saturating_add(CLOCK_SKEW).expect("in range");
    m.refreshed > latest || m.start > latest
}

/// Whether a readable marker is young enough to be a live operation's. An
/// honest marker: its refresh is less than [`STALE_AFTER`] ago. One that
/// claims a future time cannot be judged by its claim (it would block
/// `--now` forever): the storage's time of the file decides, as for a
/// damaged marker, and where the storage cannot tell, it counts as live
/// (fail safe).
fn marker_is_fresh(
    repo: &Repository,
    name: &str,
    m: &crate::format::prune::RunningMarker,
    now: Timestamp,
) -> Result<bool> {
    if !claims_future(m, now) {
        return Ok(now.duration_since(m.refreshed) < STALE_AFTER);
    }
    Ok(marker_age(repo, name, now)?.is_none_or(|age| age < STALE_AFTER))
}

/// How old a running marker file is by the storage's clock (None where
/// the storage does not say or the file is gone).
fn marker_age(repo: &Repository, name: &str, now: Timestamp) -> Result<Option<SignedDuration>> {
    match repo.backend().modified(FileType::Running, name) {
        Ok(Some(t)) => Ok(Timestamp::try_from(t).ok().map(|t| now.duration_since(t))),
        Ok(None) | Err(Error::Missing { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// What happens to a marked pack that no snapshot needs.
enum Fate {
    Wait,
    Postpone,
    Delete,
}

/// What prune will do, decided before anything changes (steps 1 to 6b of
/// docs/DESIGN.md §8c): printed by `--dry-run`, carried out by
/// [`execute`]. The public lists name the packs; `report` has the figures.
#[derive(serde::Serialize)]
pub struct PrunePlan {
    /// The figures as planned (`execute` completes them).
    pub report: PruneReport,
    /// Marked packs past their grace period: deleted.
    pub delete: Vec<PackId>,
    /// What `--now` deletes besides (this run's new marks and repacks),
    /// if no backup started meanwhile.
    pub delete_now: Vec<PackId>,
    /// Partly used packs whose used blobs are copied to new packs.
    pub repack: Vec<PackId>,
    /// Packs marked by this run (unused, or outside the index).
    pub mark: Vec<PackId>,
    /// Packs that leave the index (deleted, or missing and unused).
    pub unindex: Vec<PackId>,
    /// Unindexed packs put back into the index.
    pub recover: Vec<PackId>,
    /// Whether new index files replace the old ones.
    pub rewrite_index: bool,
    #[serde(skip)]
    work: Work,
}

/// What [`execute`] needs beyond the plan's lists.
#[derive(Default)]
struct Work {
    now: Timestamp,
    packs: HashMap<PackId, PackInfo>,
    stored: HashMap<PackId, u64>,
    old_index: Vec<IndexId>,
    /// The index files, when held (see [`FileSet`]).
    held: Option<Vec<IndexFile>>,
    budget: Option<u64>,
    state_files: Vec<crate::backend::FileInfo>,
    recovered: Vec<IndexPack>,
    /// Marks kept as they are, and marks of packs deleted by this run.
    carried: Vec<Mark>,
    doomed: Vec<Mark>,
    retained: HashMap<PackId, Timestamp>,
    /// Whether this run's new marks postpone the next deletion.
    waits_from_now: bool,
}

/// Everything prune reads before it decides (steps 3 to 5 of docs/DESIGN.md §8c).
struct Inventory {
    marks: HashMap<PackId, Timestamp>,
    state_files: Vec<crate::backend::FileInfo>,
    stored: HashMap<PackId, u64>,
    /// Used blobs that no indexed, existing pack claimed: missing from
    /// the index (step 5). Each claim takes its blob out of the used set,
    /// so one set serves both (memory: docs/SCALE.md).
    unclaimed: HashSet<UsedKey>,
    packs: HashMap<PackId, PackInfo>,
    order: Vec<PackId>,
    old_index: Vec<IndexId>,
    /// The index files, when held (see [`FileSet`]).
    held: Option<Vec<IndexFile>>,
    budget: Option<u64>,
}

impl Inventory {
    /// The marks, then the snapshots, the index and the packs: a
    /// snapshot's blobs are indexed before it is written, and a pack is
    /// written before it is indexed, so each listing covers what the one
    /// before refers to. Each used blob is claimed by one indexed, existing
    /// pack, an unmarked one if it can.
    fn read(repo: &Repository, opts: &PruneOptions, report: &mut PruneReport) -> Result<Self> {
        let states = repo.side_files(|s: &PruneState| s.time)?;
        let mut marks: HashMap<PackId, Timestamp> = states
            .newest
            .map(|s| s.marks.into_iter().map(|m| (m.pack, m.since)).collect())
            .unwrap_or_default();
        // A damaged state may be the newest: the readable one may then be
        // older and hold marks the newest dropped (a pack used again, that
        // a backup started since may reuse). Fail safe: every mark starts
        // its grace period again, so nothing is deleted on an old mark.
        if !states.damaged.is_empty() {
            let now = opts.now.unwrap_or_else(Timestamp::now);
            for since in marks.values_mut() {
                *since = now;
            }
            report.damaged_states = states.damaged.iter().map(|(n, _)| n.clone()).collect();
        }
        let state_files = states.files;
        let (snapshots, bad_snaps) = repo.snapshots_checked()?;
        if let (Some((name, e)), false) = (bad_snaps.first(), opts.ignore_damaged_snapshots) {
            return Err(Error::Refused(format!(
                "snapshot file {name} cannot be read ({e}); prune cannot tell which data it \
                 needs. If it cannot be recovered, move it out of snapshots/ and prune again"
            ))
            .with_remedy(Remedy::PruneIgnoringDamagedSnapshots));
        }
        // Ignored: such a file names no tree prune could read, so it
        // restores nothing; the report names it.
        report.ignored_snapshots = bad_snaps
            .iter()
            .map(|(name, e)| (name.clone(), e.to_string()))
            .collect();
        let files = FileSet::load(repo)?;
        let mut packs: HashMap<PackId, PackInfo> = HashMap::new();
        files.each(|fi, file| {
            for (pi, p) in file.packs.iter().enumerate() {
                packs.entry(p.id).or_insert(PackInfo {
                    size: p.size,
                    listing: at(fi, pi),
                    count: u32::try_from(p.blobs.len()).expect("fewer than 4 billion blobs"),
                    used: Vec::new(),
                    used_count: 0,
                    used_bytes: 0,
                });
            }
        })?;
        if let Some((name, e)) = files.damaged.borrow().first() {
            return Err(Error::Refused(format!(
                "index file {name} is damaged ({e}); prune cannot tell which packs are in use"
            ))
            .with_remedy(Remedy::RepairIndex));
        }
        files.unchanged()?;
        let stored: HashMap<PackId, u64> = repo
            .backend()
            .list(FileType::Pack)?
            .into_iter()
            .filter_map(|f| Some((f.name.parse().ok()?, f.size)))
            .collect();
        for size in stored.values() {
            report.packs_before.add(*size);
        }
        let (used, bad_roots) = used_blobs(
            repo,
            snapshots.iter().map(|(_, s)| s.tree),
            opts.ignore_damaged_snapshots,
            &opts.cancel,
        )?;
        let mut kept_snapshots = snapshots.len() as u64;
        for (id, s) in &snapshots {
            if let Some((tree, e)) = bad_roots.iter().find(|(t, _)| *t == s.tree) {
                kept_snapshots -= 1;
                report.ignored_snapshots.push((
                    id.to_hex(),
                    format!("its root tree {tree} cannot be read ({e})"),
                ));
            }
        }
        report.snapshots = kept_snapshots;
        report.used_blobs = used.len() as u64;

        let mut order: Vec<PackId> = packs.keys().copied().collect();
        order.sort_by_key(|id| (marks.contains_key(id), *id));
        // Claims in file order, unmarked packs first (a pass over the files
        // each, the second only when some pack is marked).
        let mut unclaimed = used;
        let mut again: Vec<Again> = Vec::new();
        for marked in [false, true] {
            if marked && marks.is_empty() {
                break;
            }
            files.each(|fi, file| {
                for (pi, p) in file.packs.iter().enumerate() {
                    if marks.contains_key(&p.id) != marked || !stored.contains_key(&p.id) {
                        continue;
                    }
                    let info = packs.get_mut(&p.id).expect("listed");
                    if info.listing != at(fi, pi) {
                        continue;
                    }
                    for (k, b) in p.blobs.iter().enumerate() {
                        match unclaimed.claim(&b.id) {
                            Claim::First => info.use_blob(k, b.length),
                            Claim::Again => again.push((
                                p.id,
                                u32::try_from(k).expect("fewer than 4 billion blobs"),
                                used_key(&b.id),
                            )),
                            Claim::Unused => {}
                        }
                    }
                }
            })?;
        }
        keep_colliding(&files, &mut packs, &again)?;
        drop(again);
        files.unchanged()?;
        let unclaimed = unclaimed.unclaimed();
        let (old_index, held, budget) = files.into_parts();
        Ok(Inventory {
            marks,
            state_files,
            stored,
            unclaimed,
            packs,
            order,
            old_index,
            held,
            budget,
        })
    }
}

/// Decisions being made, step by step.
#[derive(Default)]
struct Decisions {
    keep: Vec<PackId>,
    /// Partly used packs and their unused bytes.
    partly: Vec<(PackId, u64)>,
    new_marks: Vec<PackId>,
    carried: Vec<Mark>,
    doomed: Vec<Mark>,
    /// New marks of packs whose header cannot be read: never deleted at once.
    unreadable_new: HashSet<PackId>,
    unindex: HashSet<PackId>,
    delete: Vec<PackId>,
    recovered: Vec<IndexPack>,
}

impl Decisions {
    /// A marked pack that nothing needs: wait, postpone, or delete.
    fn marked(&mut self, r: &mut PruneReport, id: PackId, size: u64, since: Timestamp, fate: Fate) {
        let mark = Mark { pack: id, since };
        match fate {
            Fate::Wait => {
                r.waiting.add(size);
                self.carried.push(mark);
            }
            Fate::Postpone => {
                r.postponed.add(size);
                self.carried.push(mark);
            }
            Fate::Delete => {
                r.deleted.add(size);
                self.delete.push(id);
                // Marked until it is gone: a backup that reads the new
                // state and an old index file must not reuse it.
                self.doomed.push(mark);
            }
        }
    }
}

/// Step 6 for indexed packs: each is kept, repacked later, marked, or deleted.
fn decide_indexed(
    inv: &Inventory,
    fate: &dyn Fn(Timestamp) -> Fate,
    d: &mut Decisions,
    r: &mut PruneReport,
) {
    for id in &inv.order {
        let info = &inv.packs[id];
        if !inv.stored.contains_key(id) {
            // Used blobs here were claimed elsewhere, or are missing (step 5).
            r.missing_unused += 1;
            d.unindex.insert(*id);
            continue;
        }
        match (info.used_count == 0, inv.marks.get(id)) {
            (true, None) => {
                r.marked_unused.add(info.size);
                d.new_marks.push(*id);
            }
            (true, Some(&since)) => {
                if matches!(fate(since), Fate::Delete) {
                    d.unindex.insert(*id);
                }
                d.marked(r, *id, info.size, since, fate(since));
            }
            (false, mark) => {
                if mark.is_some() {
                    r.unmarked.add(info.size);
                }
                if info.used_count < info.count {
                    d.partly
                        .push((*id, info.size.saturating_sub(info.used_bytes)));
                } else {
                    d.keep.push(*id);
                }
            }
        }
    }
}

/// Step 6 for packs outside the index. A used blob that no indexed pack holds
/// can only be in one of them (a lost index file): that pack goes back into
/// the index. Anything else is damage, and prune stops.
fn decide_unindexed(
    repo: &Repository,
    inv: &Inventory,
    fate: &dyn Fn(Timestamp) -> Fate,
    d: &mut Decisions,
    r: &mut PruneReport,
) -> Result<()> {
    let mut missing: HashSet<UsedKey> = inv.unclaimed.clone();
    let mut unindexed: Vec<(PackId, u64)> = inv
        .stored
        .iter()
        .filter(|(id, _)| !inv.packs.contains_key(id))
        .map(|(id, size)| (*id, *size))
        .collect();
    unindexed.sort();
    let headers: Vec<Option<Result<IndexPack>>> = unindexed
        .par_iter()
        .map(|(id, size)| (!missing.is_empty()).then(|| repo.read_pack_header(&id.to_hex(), *size)))
        .collect();
    for ((id, size), header) in unindexed.into_iter().zip(headers) {
        match header {
            Some(Ok(h)) if h.blobs.iter().any(|b| missing.contains(&used_key(&b.id))) => {
                for b in &h.blobs {
                    missing.remove(&used_key(&b.id));
                }
                r.recovered.add(size);
                d.recovered.push(h);
                continue;
            }
            Some(Err(e)) => {
                r.unreadable.push((id.to_hex(), e.to_string()));
                if let Some(&since) = inv.marks.get(&id) {
                    d.carried.push(Mark { pack: id, since });
                } else {
                    d.new_marks.push(id);
                    d.unreadable_new.insert(id);
                }
                continue;
            }
            Some(Ok(_)) | None => {}
        }
        match inv.marks.get(&id) {
            None => {
                r.marked_unindexed.add(size);
                d.new_marks.push(id);
            }
            Some(&since) => d.marked(r, id, size, since, fate(since)),
        }
    }
    match missing.iter().next() {
        Some(b) => Err(Error::Refused(format!(
            "{} blob(s) that snapshots use are in no pack (for example the one whose id \
             starts {b:032x}); prune stops before changing anything",
            missing.len()
        ))
        .with_remedy(Remedy::CheckThenRepairSnapshots)),
        None => Ok(()),
    }
}

/// Step 6, repacking: the emptiest partly used packs are repacked until the unused space
/// left in kept packs is within the limit. Returns the packs to repack.
fn choose_repacks(
    inv: &Inventory,
    opts: &PruneOptions,
    d: &mut Decisions,
    r: &mut PruneReport,
) -> Vec<PackId> {
    let size = |p: &PackId| inv.packs[p].size;
    let remaining: u64 = d
        .keep
        .iter()
        .chain(d.partly.iter().map(|(p, _)| p))
        .map(size)
        .sum();
    let limit = match opts.max_unused {
        MaxUnused::Fraction(f) => (remaining as f64 * f) as u64,
        MaxUnused::Bytes(b) => b,
    };
    let mut unused_left: u64 = d.partly.iter().map(|(_, u)| u).sum();
    let mut partly = std::mem::take(&mut d.partly);
    partly.sort_by(|a, b| {
        let ra = a.1 as f64 / size(&a.0).max(1) as f64;
        let rb = b.1 as f64 / size(&b.0).max(1) as f64;
        rb.total_cmp(&ra).then(a.0.cmp(&b.0))
    });
    let mut repack = Vec::new();
    for (id, unused) in partly {
        if unused_left > limit {
            unused_left -= unused;
            r.repacked.add(size(&id));
            r.repack_copied_bytes += inv.packs[&id].used_bytes;
            repack.push(id);
        } else {
            d.keep.push(id);
        }
    }
    for id in &d.keep {
        r.kept.add(size(id));
        r.unused_bytes_kept += size(id).saturating_sub(inv.packs[id].used_bytes);
    }
    repack
}

/// Step 6b, Object Lock: the store refuses to delete a pack it still
/// retains (a delete would only hide it). Such a pack is not deleted: it
/// stays marked and indexed, and a prune after its retention deletes it.
fn keep_retained(
    repo: &Repository,
    inv: &Inventory,
    now: Timestamp,
    d: &mut Decisions,
    now_delete: &mut Vec<PackId>,
    r: &mut PruneReport,
) -> Result<HashMap<PackId, Timestamp>> {
    let retained = retained_packs(
        repo,
        d.delete.iter().chain(now_delete.iter()),
        &inv.old_index,
        now,
    )?;
    if retained.is_empty() {
        return Ok(retained);
    }
    let stored = &inv.stored;
    d.delete.retain(|id| {
        if retained.contains_key(id) {
            r.deleted.remove(stored[id]);
            r.retained.add(stored[id]);
            d.unindex.remove(id);
            false
        } else {
            true
        }
    });
    let (kept, gone): (Vec<Mark>, Vec<Mark>) = std::mem::take(&mut d.doomed)
        .into_iter()
        .partition(|m| retained.contains_key(&m.pack));
    d.carried.extend(kept);
    d.doomed = gone;
    now_delete.retain(|id| {
        if retained.contains_key(id) {
            r.retained.add(stored[id]);
            false
        } else {
            true
        }
    });
    let mut until: Vec<(String, Timestamp)> =
        retained.iter().map(|(id, t)| (id.to_hex(), *t)).collect();
    until.sort_by_key(|(id, t)| (*t, id.clone()));
    r.retained_until = until;
    Ok(retained)
}

/// Decides what prune will do (steps 2 to 6b), changing nothing: what
/// `--dry-run` shows, and what a front end can print or test. Carrying a
/// plan out is [`prune`]'s, which first announces the prune (step 1). Refuses
/// when another prune runs, when `--now` is unsafe, or when the repository
/// is damaged in a way that hides which data is used.
pub fn plan(repo: &Repository, opts: &PruneOptions) -> Result<PrunePlan> {
    let now = opts.now.unwrap_or_else(Timestamp::now);
    let mut report = PruneReport::default();

    // 1 and 2. Who else runs. Read after `now`: a backup that starts later reads
    //    the marks of every pack that can be deleted now.
    let others = Others::read(repo, opts, now)?;
    if let (Some(m), false) = (others.prunes.first(), opts.dry_run) {
        return Err(Error::Refused(format!(
            "another prune runs on {} (pid {}) since {}; run one prune at a time",
            m.hostname, m.pid, m.start
        )));
    }
    report.running_backups = others.summary();
    report.damaged_markers = others.damaged.clone();
    if opts.delete_now && !opts.dry_run {
        if let Some(why) = others.refuse_now() {
            return Err(Error::Refused(why).with_remedy(Remedy::PruneWithGrace));
        }
    }
    let unknown_start = !others.damaged.is_empty();
    let fate = |since: Timestamp| {
        if opts.delete_now {
            Fate::Delete // no backup runs: checked above
        } else if now.duration_since(since) < opts.grace {
            Fate::Wait
        } else if unknown_start
            || others
                .backups
                .iter()
                .any(|m| m.start <= since.saturating_add(CLOCK_SKEW).expect("in range"))
        {
            Fate::Postpone
        } else {
            Fate::Delete
        }
    };

    // 3 to 5. What there is, and what is used.
    let inv = Inventory::read(repo, opts, &mut report)?;
    let mut d = Decisions::default();
    decide_indexed(&inv, &fate, &mut d, &mut report);
    decide_unindexed(repo, &inv, &fate, &mut d, &mut report)?;
    let repack = choose_repacks(&inv, opts, &mut d, &mut report);
    // With --now, what this run marks goes too (unless a backup started
    // meanwhile: checked again after the state is written).
    let mut now_delete: Vec<PackId> = if opts.delete_now {
        d.new_marks
            .iter()
            .chain(&repack)
            .filter(|id| !d.unreadable_new.contains(*id))
            .copied()
            .collect()
    } else {
        Vec::new()
    };
    let retained = keep_retained(repo, &inv, now, &mut d, &mut now_delete, &mut report)?;
    let waits_from_now = !(opts.delete_now || d.new_marks.is_empty() && repack.is_empty());
    let rewrite_index = !d.unindex.is_empty() || !d.recovered.is_empty() || {
        // Consolidate many small index files too, except where the storage
        // retains files: there the old ones may stay (the rewind server
        // refuses their delete) and each run would add a copy.
        let needed = (inv.packs.len() - d.unindex.len()).div_ceil(PACKS_PER_PRUNE_INDEX);
        inv.old_index.len() > 2 * needed.max(1) && repo.backend().object_lock()?.is_none()
    };
    let mut plan = PrunePlan {
        report,
        delete: d.delete,
        delete_now: now_delete,
        repack,
        mark: d.new_marks,
        unindex: d.unindex.into_iter().collect(),
        recover: d.recovered.iter().map(|p| p.id).collect(),
        rewrite_index,
        work: Work {
            now,
            packs: inv.packs,
            stored: inv.stored,
            old_index: inv.old_index,
            held: inv.held,
            budget: inv.budget,
            state_files: inv.state_files,
            recovered: d.recovered,
            carried: d.carried,
            doomed: d.doomed,
            retained,
            waits_from_now,
        },
    };
    plan.unindex.sort();
    plan.report.next_deletion = plan.work.next_deletion(&opts.grace, now);
    Ok(plan)
}

impl Work {
    /// Earliest time at which a prune can delete what waits, if this run's
    /// new marks carry `new_since`.
    fn next_deletion(&self, grace: &SignedDuration, new_since: Timestamp) -> Option<Timestamp> {
        let w = self;
        let after_grace = w
            .carried
            .iter()
            .filter(|m| !w.retained.contains_key(&m.pack))
            .map(|m| m.since)
            .chain(w.waits_from_now.then_some(new_since))
            .min()
            .map(|t| t.saturating_add(*grace).expect("in range"));
        after_grace
            .into_iter()
            .chain(w.retained.values().min().copied())
            .min()
    }
}

impl PrunePlan {
    /// The report of a dry run: the plan's figures, as if `--now` deleted
    /// what it would.
    pub fn dry_run_report(mut self) -> PruneReport {
        let w = &self.work;
        let mut unindexed = self.unindex.len();
        for id in &self.delete_now {
            self.report.deleted.add(w.stored[id]);
            if w.packs.contains_key(id) && !self.unindex.contains(id) {
                unindexed += 1;
            }
        }
        if self.rewrite_index || unindexed > self.unindex.len() {
            let listed = w.packs.len() - unindexed + w.recovered.len();
            self.report.index_written = listed.div_ceil(PACKS_PER_PRUNE_INDEX) as u64;
            self.report.index_removed = w.old_index.len() as u64;
        }
        self.report
    }
}

/// Runs prune (or plans it, with `dry_run`).
pub fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneReport> {
    let _marker = if opts.dry_run {
        None
    } else {
        Some(repo.announce(RunningKind::Prune, &opts.hostname)?)
    };
    let plan = plan(repo, opts)?;
    if opts.dry_run {
        return Ok(plan.dry_run_report());
    }
    execute(repo, plan, opts)
}

/// Carries out a plan (steps 7 to 10): repack, write the new state, check
/// `--now` again, replace the index, delete, clean up. Only [`prune`] calls
/// it: with the prune's running marker announced, right after [`plan`],
/// with the options the plan was made with.
fn execute(repo: &Repository, plan: PrunePlan, opts: &PruneOptions) -> Result<PruneReport> {
    // Nothing was changed so far: the last point to stop without a trace.
    opts.cancel.check()?;
    let PrunePlan {
        mut report,
        mut delete,
        delete_now,
        repack,
        mark,
        unindex,
        rewrite_index,
        mut work,
        ..
    } = plan;
    let mut unindex: HashSet<PackId> = unindex.into_iter().collect();
    let mut rewrite_index = rewrite_index;
    let files = FileSet::from_parts(repo, work.old_index.clone(), work.held.take(), work.budget);
    repack_packs(repo, &files, &work, &repack, opts, &mut report)?;

    // 8. The new state, complete, before any pack leaves the index. New
    //    marks carry the time of this write: a backup that reads the index
    //    later sees them and does not reuse those packs.
    let since = opts.now.unwrap_or_else(Timestamp::now);
    report.next_deletion = work.next_deletion(&opts.grace, since);
    let mut all_marks = work.carried.clone();
    all_marks.extend(work.doomed.iter().cloned());
    all_marks.extend(mark.iter().chain(&repack).map(|p| Mark { pack: *p, since }));
    let new_state = PruneState {
        version: VERSION,
        time: since,
        marks: all_marks,
    };
    let state_name = repo.write_file(&new_state)?;

    // --now: a backup that started during this run read the old state, so
    // it may reuse (or have just uploaded) what this run marked. Look again.
    if !delete_now.is_empty() {
        let late = Others::read(repo, opts, Timestamp::now())?;
        if late.refuse_now().is_none() {
            for id in &delete_now {
                report.deleted.add(work.stored[id]);
                if work.packs.contains_key(id) {
                    unindex.insert(*id);
                    rewrite_index = true;
                }
                delete.push(*id);
            }
            report.marked_unused = Packs::default();
            report.marked_unindexed = Packs::default();
        } else {
            report.running_backups = late.summary();
            report.damaged_markers = late.damaged;
            for id in &delete_now {
                report.postponed.add(work.stored[id]);
            }
        }
    }
    if rewrite_index {
        replace_index(repo, &files, &work, &unindex, &mut delete, &mut report)?;
    }

    // 10. Delete.
    delete
        .par_iter()
        .try_for_each(|id| repo.backend().delete(FileType::Pack, &id.to_hex()))?;
    clean_up(repo, &work, &state_name.to_hex(), opts, &mut report)?;
    Ok(report)
}

/// Step 7: copy the used blobs of the packs to repack (the writer indexes
/// the new packs before it returns). Stopped between two blobs, what was
/// copied is indexed (a duplicate until the next prune) and the old packs
/// stay as they are.
fn repack_packs(
    repo: &Repository,
    files: &FileSet,
    work: &Work,
    repack: &[PackId],
    opts: &PruneOptions,
    report: &mut PruneReport,
) -> Result<()> {
    if repack.is_empty() {
        return Ok(());
    }
    // A group of packs at a time (within the budget): the used entries of
    // its packs, from their listings, then their blobs copied.
    let groups = files.groups(repack, |id| {
        work.packs[id].used_count as usize * std::mem::size_of::<PackedBlob>()
    });
    let ((), stats) = repo.rewrite_blobs(|w| {
        for group in groups {
            let wanted: HashSet<PackId> = group.iter().copied().collect();
            let mut used: HashMap<PackId, Vec<PackedBlob>> = HashMap::new();
            files.each(|fi, file| {
                for (pi, p) in file.packs.iter().enumerate() {
                    match work.packs.get(&p.id) {
                        Some(info) if wanted.contains(&p.id) && info.listing == at(fi, pi) => {
                            let blobs = info.used_positions().map(|k| p.blobs[k]).collect();
                            used.insert(p.id, blobs);
                        }
                        _ => {}
                    }
                }
            })?;
            files.unchanged()?;
            group.par_iter().try_for_each(|id| {
                let mut blobs: Vec<PackedBlob> = used.get(id).cloned().unwrap_or_default();
                blobs.sort_by_key(|b| b.offset);
                let kinds: HashMap<BlobId, BlobKind> =
                    blobs.iter().map(|b| (b.id, b.kind)).collect();
                let ids: Vec<BlobId> = blobs.iter().map(|b| b.id).collect();
                repo.read_blobs(&ids, |id, data| {
                    opts.cancel.check()?;
                    w.add_blob(kinds[id], &data)?;
                    Ok(())
                })
            })?;
        }
        Ok(())
    })?;
    report.repack_new_packs = stats.packs;
    report.index_written += stats.index_files.len() as u64;
    opts.cancel.check()
}

/// Step 9: the new index (without the packs that leave it, with the
/// recovered ones), durable before the old index files go, which happens
/// before any pack is deleted. A pack that an old index file the storage
/// kept still lists is not deleted.
fn replace_index(
    repo: &Repository,
    files: &FileSet,
    work: &Work,
    unindex: &HashSet<PackId>,
    delete: &mut Vec<PackId>,
    report: &mut PruneReport,
) -> Result<()> {
    // Written as the old files are read again, a new file's worth at a
    // time: every pack they list (its first listing) but those that leave
    // the index, and the recovered ones.
    let old = &work.old_index;
    let mut pending: Vec<IndexPack> = work.recovered.clone();
    let mut written = 0;
    let mut failed = None;
    files.each(|fi, file| {
        for (pi, p) in file.packs.iter().enumerate() {
            if failed.is_some() || unindex.contains(&p.id) {
                continue;
            }
            if work
                .packs
                .get(&p.id)
                .is_some_and(|info| info.listing == at(fi, pi))
            {
                pending.push(p.clone());
            }
            if pending.len() >= PACKS_PER_PRUNE_INDEX {
                match repo.write_index_file(std::mem::take(&mut pending), old) {
                    Ok(()) => written += 1,
                    Err(e) => failed = Some(e),
                }
            }
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    // A file that vanished meanwhile would leave its packs out.
    files.unchanged()?;
    if !pending.is_empty() {
        repo.write_index_file(pending, old)?;
        written += 1;
    }
    let (removed, kept) = repo.remove_index_files(old)?;
    report.index_written += written;
    report.index_removed += removed;
    // The storage kept an old index file after all (its clock, not ours,
    // decides): the packs it lists stay, or it would list deleted packs.
    // They stay marked for a later prune.
    if kept.is_empty() {
        return Ok(());
    }
    let mut listed_by_kept: HashSet<PackId> = HashSet::new();
    for id in &kept {
        match repo.read_index_file(id) {
            Ok(f) => listed_by_kept.extend(f.packs.iter().map(|p| p.id)),
            Err(Error::Missing { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    delete.retain(|id| {
        if listed_by_kept.contains(id) {
            report.deleted.remove(work.stored[id]);
            report.retained.add(work.stored[id]);
            false
        } else {
            true
        }
    });
    Ok(())
}

/// Step 10, after the packs: older state files, markers of processes long dead, temporaries
/// of interrupted writes, and (Object Lock) versions whose retention ended.
fn clean_up(
    repo: &Repository,
    work: &Work,
    state_name: &str,
    opts: &PruneOptions,
    report: &mut PruneReport,
) -> Result<()> {
    let now = work.now;
    for f in work.state_files.iter().filter(|f| f.name != state_name) {
        // The newest state wins; one the storage keeps for now is harmless.
        delete_unless_kept(repo.backend().as_ref(), FileType::PruneState, &f.name)?;
    }
    let (markers, damaged) = repo.running_markers_checked()?;
    for (name, m) in markers {
        let old_enough = if claims_future(&m, now) {
            // Judged by the storage's time, as a damaged marker.
            marker_age(repo, &name, now)?.is_some_and(|age| age >= opts.grace.max(STALE_AFTER * 2))
        } else {
            now.duration_since(m.refreshed) >= opts.grace.max(STALE_AFTER * 2)
        };
        if old_enough {
            delete_unless_kept(repo.backend().as_ref(), FileType::Running, &name)?;
        } else if is_dead_here(&m, opts) {
            // Its process on this host is gone (killed before it could
            // remove its marker): nothing relies on the marker, which every
            // prune here ignores already. Without this, each killed backup
            // would leave one for a day (the grace period).
            delete_unless_kept(repo.backend().as_ref(), FileType::Running, &name)?;
        }
    }
    // Damaged markers as old as a stale one that prune deletes.
    for (f, _) in damaged {
        if marker_age(repo, &f.name, now)?.is_some_and(|age| age >= opts.grace.max(STALE_AFTER * 2))
        {
            delete_unless_kept(repo.backend().as_ref(), FileType::Running, &f.name)?;
        }
    }
    // Temporaries of writes killed long ago (never those of a running
    // backup: it writes each file within minutes).
    let age = opts.grace.max(SignedDuration::from_hours(1)).unsigned_abs();
    report.temporaries_removed = repo.backend().remove_stale_temporaries(age)?;
    // On a locked bucket: versions of deleted files whose retention ended.
    report.versions_removed = repo.backend().remove_expired_versions()?;
    Ok(())
}

/// The packs among `ids` that the store retains beyond `now`, and until
/// when (only asked of stores with a retention: S3 Object Lock, the rewind
/// server's minimum delete age). A pack listed by an index file in
/// `old_index` that the store retains counts as retained until that file
/// goes: where the store refuses the file's delete (the rewind server), it
/// stays listed, and deleting the pack would leave a dangling entry.
fn retained_packs<'a>(
    repo: &Repository,
    ids: impl Iterator<Item = &'a PackId>,
    old_index: &[IndexId],
    now: Timestamp,
) -> Result<HashMap<PackId, Timestamp>> {
    if repo.backend().object_lock()?.is_none() {
        return Ok(HashMap::new());
    }
    let ids: Vec<PackId> = ids.copied().collect();
    let until = |t: FileType, name: String| -> Option<Result<Timestamp>> {
        match repo.backend().retained_until(t, &name) {
            Ok(Some(t)) => {
                let t = Timestamp::try_from(t).ok()?;
                (t > now).then_some(Ok(t))
            }
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    };
    let mut retained: HashMap<PackId, Timestamp> = ids
        .par_iter()
        .filter_map(|id| until(FileType::Pack, id.to_hex()).map(|r| r.map(|t| (*id, t))))
        .collect::<Result<_>>()?;
    if ids.is_empty() {
        return Ok(retained);
    }
    let held: Vec<(IndexId, Timestamp)> = old_index
        .par_iter()
        .filter_map(|id| until(FileType::Index, id.to_hex()).map(|r| r.map(|t| (*id, t))))
        .collect::<Result<_>>()?;
    let wanted: HashSet<PackId> = ids.into_iter().collect();
    for (index_id, t) in held {
        let file = match repo.read_index_file(&index_id) {
            Ok(f) => f,
            Err(Error::Missing { .. }) => continue,
            Err(e) => return Err(e),
        };
        for p in file.packs.iter().filter(|p| wanted.contains(&p.id)) {
            let e = retained.entry(p.id).or_insert(t);
            *e = (*e).max(t);
        }
    }
    Ok(retained)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The compact used set answers as a hash set would: each used blob
    /// claimed once, an id used both as a tree and as data claimed once,
    /// unused ids never, and what no one claimed is reported.
    #[test]
    fn the_used_set_claims_each_blob_once() {
        let id = |n: u32| BlobId(crate::id::Hash(*blake3::hash(&n.to_le_bytes()).as_bytes()));
        let mut used = UsedSet::default();
        for round in 0..3u32 {
            for n in 0..300_000u32 {
                if n % 3 != 0 || round == 0 {
                    used.insert_data(id(n));
                }
            }
        }
        assert!(used.insert_tree(id(1_000_000)));
        assert!(!used.insert_tree(id(1_000_000)));
        assert!(used.insert_tree(id(5)));
        used.seal();
        assert_eq!(used.len(), 300_000 + 2);
        for n in (0..300_000u32).filter(|n| n % 7 != 0) {
            assert_eq!(used.claim(&id(n)), Claim::First, "{n}");
            assert_eq!(used.claim(&id(n)), Claim::Again, "{n} twice");
        }
        for n in 300_000..300_100u32 {
            assert_eq!(used.claim(&id(n)), Claim::Unused);
        }
        assert_eq!(used.claim(&id(1_000_000)), Claim::First);
        let left = used.unclaimed();
        assert_eq!(left.len(), (0..300_000u32).filter(|n| n % 7 == 0).count());
        assert!(left.contains(&used_key(&id(0))) && !left.contains(&used_key(&id(1))));
    }

    /// Two ids with the same first 128 bits claim one key: the second is
    /// claimed "again", and the pass over full ids keeps it, while a true
    /// copy of a claimed id (or of one kept so) stays a copy.
    #[test]
    fn a_key_claimed_by_another_id_keeps_that_blob() {
        let mut a = [7u8; 32];
        let mut b = a;
        b[31] = 8;
        a[0] = 1;
        b[0] = 1;
        let (a, b) = (BlobId(crate::id::Hash(a)), BlobId(crate::id::Hash(b)));
        assert_eq!(used_key(&a), used_key(&b));
        let mut used = UsedSet::default();
        used.insert_data(b);
        used.seal();
        assert_eq!(used.claim(&a), Claim::First, "a (unused) claims b's key");
        assert_eq!(used.claim(&b), Claim::Again);
        let pack = |n: u8| PackId(crate::id::Hash([n; 32]));
        let claimed = HashMap::from([(used_key(&a), vec![a])]);
        let copies = vec![
            (pack(2), 0, a, 10), // a copy of a
            (pack(3), 1, b, 20), // b: another blob
            (pack(4), 2, b, 20), // a copy of b, once b is kept
        ];
        assert_eq!(colliding(claimed, copies), vec![(pack(3), 1, 20)]);
    }

    #[test]
    fn max_unused_syntax() {
        assert_eq!(
            "5%".parse::<MaxUnused>().unwrap(),
            MaxUnused::Fraction(0.05)
        );
        assert_eq!("0%".parse::<MaxUnused>().unwrap(), MaxUnused::Fraction(0.0));
        assert_eq!(
            "2GiB".parse::<MaxUnused>().unwrap(),
            MaxUnused::Bytes(2 << 30)
        );
        for bad in ["", "150%", "-1%", "lots", "5%%"] {
            assert!(bad.parse::<MaxUnused>().is_err(), "{bad}");
        }
    }
}
