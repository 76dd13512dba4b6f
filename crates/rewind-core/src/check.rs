//! Proof that a repository is intact: structure always, data on request.
//!
//! ```text
//! index:     every index file authenticates; every indexed pack exists with
//!            the indexed size; packs not in any index are reported
//! snapshots: every tree of every snapshot decodes, every blob is indexed
//! data:      (--read-data) every pack matches its name, its header matches
//!            the index, every blob authenticates and matches its id
//! impact:    every damaged or missing blob is traced to the snapshots and
//!            files that need it
//! ```

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::backend::FileType;
use crate::error::Result;
use crate::format::pack::PackHeader;
use crate::format::tree::NodeKind;
use crate::id::{BlobId, Hash, IdBuildHasher, SnapshotId};
use crate::repository::Repository;

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
    /// The index is damaged or incomplete: rebuilding it from the packs'
    /// headers may bring blobs back.
    pub repair_index: bool,
    /// Packs found missing or damaged: what they still hold can be saved
    /// (`repair::repair_packs`).
    pub damaged_packs: Vec<crate::id::PackId>,
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
    let index = match repo.index() {
        Ok(i) => i,
        Err(e) => {
            r.errors.push(format!("cannot load the index: {e}"));
            r.repair_index = true;
            return Ok(r);
        }
    };
    let by_pack = index.blobs_by_pack();
    let mut bad_blobs: HashSet<BlobId, IdBuildHasher> = HashSet::default();
    let listed = check_index_and_packs(repo, &index, &by_pack, &mut bad_blobs, &mut r)?;
    if opts.read_data || opts.subset.is_some() {
        bad_blobs.extend(read_packs(repo, &index, &by_pack, &listed, opts, &mut r));
    }
    // Walk every snapshot; each tree once (the outcome of a tree is the
    // same wherever it appears, only the paths differ).
    let mut tree_state: HashMap<BlobId, bool> = HashMap::new();
    for (sid, s) in &snapshots {
        walk_check(
            repo,
            &index,
            sid,
            &s.tree,
            Path::new("/"),
            &bad_blobs,
            &mut tree_state,
            &mut r,
        );
    }
    Ok(r)
}

/// Index files and the listing of packs: every indexed pack is there with
/// its size; what is not indexed is harmless unless the index is damaged.
/// Returns the listed packs (name, size); missing or resized packs go to
/// `damaged_packs`, their blobs to `bad`.
fn check_index_and_packs(
    repo: &Repository,
    index: &crate::repository::Index,
    by_pack: &[Vec<(BlobId, crate::repository::IndexEntry)>],
    bad: &mut HashSet<BlobId, IdBuildHasher>,
    r: &mut CheckReport,
) -> Result<HashMap<String, u64>> {
    r.blobs = index.len();
    for (name, e) in index.damaged() {
        r.errors.push(format!(
            "index file {name} cannot be read ({e}); the blobs it lists are reported missing below"
        ));
        r.repair_index = true;
    }
    if index.duplicates() > 0 {
        r.notes.push(format!(
            "{} blobs are stored in more than one pack (harmless; prune reclaims the space)",
            index.duplicates()
        ));
    }
    let listed: HashMap<String, u64> = repo
        .backend()
        .list(FileType::Pack)?
        .into_iter()
        .map(|f| (f.name, f.size))
        .collect();
    r.packs = listed.len();
    let mut indexed = HashSet::new();
    for (pos, (pack, size)) in index.packs().enumerate() {
        let name = pack.to_hex();
        let problem = match listed.get(&name) {
            None => Some(format!(
                "pack {name} is missing ({} blobs lost)",
                by_pack[pos].len()
            )),
            Some(&actual) if actual != size => Some(format!(
                "pack {name} is {actual} bytes, the index says {size}: truncated or replaced"
            )),
            Some(_) => None,
        };
        indexed.insert(name);
        if let Some(p) = problem {
            r.errors.push(p);
            r.damaged_packs.push(pack);
            bad.extend(by_pack[pos].iter().map(|(id, _)| *id));
        }
    }
    let unindexed = listed.keys().filter(|n| !indexed.contains(*n)).count();
    if unindexed > 0 && !index.damaged().is_empty() {
        // Not harmless: they may hold what the damaged index files listed.
        r.errors.push(format!(
            "{unindexed} packs are in no readable index file; with damaged index files they \
             may hold blobs that snapshots need: rebuild the index from the packs"
        ));
        r.repair_index = true;
    } else {
        for name in listed.keys().filter(|n| !indexed.contains(*n)) {
            r.notes.push(format!(
                "pack {name} is not in any index (left by an interrupted backup; harmless)"
            ));
        }
    }
    Ok(listed)
}

/// `--read-data`: reads the chosen packs whole and authenticates every
/// indexed blob. Returns the blobs that failed; damaged packs go to
/// `damaged_packs`.
fn read_packs(
    repo: &Repository,
    index: &crate::repository::Index,
    by_pack: &[Vec<(BlobId, crate::repository::IndexEntry)>],
    listed: &HashMap<String, u64>,
    opts: &CheckOptions,
    r: &mut CheckReport,
) -> Vec<BlobId> {
    let present: Vec<(crate::id::PackId, u64)> = index
        .packs()
        .filter(|(p, _)| listed.contains_key(&p.to_hex()))
        .collect();
    let wanted: Option<HashSet<crate::id::PackId>> = opts.subset.map(|sub| {
        let (chosen, next) = select_packs(&present, sub, opts.cursor);
        r.next_cursor = next;
        chosen.into_iter().collect()
    });
    let packs: Vec<(usize, crate::id::PackId)> = index
        .packs()
        .enumerate()
        .filter(|(_, (p, _))| listed.contains_key(&p.to_hex()))
        .filter(|(_, (p, _))| wanted.as_ref().is_none_or(|w| w.contains(p)))
        .map(|(i, (p, _))| (i, p))
        .collect();
    r.packs_read = packs.len();
    let results: Vec<(crate::id::PackId, Vec<String>, Vec<BlobId>)> = packs
        .par_iter()
        .map(|(pos, pack)| {
            let (errs, bad) = read_pack(repo, pack, &by_pack[*pos]);
            (*pack, errs, bad)
        })
        .collect();
    let mut bad_blobs = Vec::new();
    for (pack, errs, bad) in results {
        if !errs.is_empty() {
            r.damaged_packs.push(pack);
        }
        r.errors.extend(errs);
        bad_blobs.extend(bad);
    }
    bad_blobs
}

/// Reads one pack whole: its name, its header against the index, and
/// every indexed blob. Returns the errors and the blobs that failed.
fn read_pack(
    repo: &Repository,
    pack: &crate::id::PackId,
    blobs: &[(BlobId, crate::repository::IndexEntry)],
) -> (Vec<String>, Vec<BlobId>) {
    let name = pack.to_hex();
    let bytes = match repo.backend().read(FileType::Pack, &name) {
        Ok(b) => b,
        Err(e) => {
            return (
                vec![format!("pack {name}: {e}")],
                blobs.iter().map(|(id, _)| *id).collect(),
            )
        }
    };
    let mut errs = Vec::new();
    if Hash::of(&bytes) != pack.0 {
        errs.push(format!(
            "pack {name} does not match its name (bit rot or tampering)"
        ));
    }
    match PackHeader::parse(repo.crypto(), pack, &bytes) {
        Ok(h) => {
            let in_header: HashSet<BlobId> = h.blobs.iter().map(|b| b.id).collect();
            for (id, _) in blobs {
                if !in_header.contains(id) {
                    errs.push(format!(
                        "pack {name}: blob {id} is indexed but not in the pack header"
                    ));
                }
            }
        }
        Err(e) => errs.push(e.to_string()),
    }
    let bad: Vec<BlobId> = blobs
        .iter()
        .filter(|(id, e)| {
            let (start, end) = (e.offset as usize, e.offset as usize + e.length as usize);
            end > bytes.len()
                || repo
                    .open_blob(id, e.raw_length, &bytes[start..end], &name)
                    .is_err()
        })
        .map(|(id, _)| *id)
        .collect();
    if !bad.is_empty() {
        errs.push(format!(
            "pack {name}: {} blobs fail authentication",
            bad.len()
        ));
    }
    (errs, bad)
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

#[allow(clippy::too_many_arguments)]
fn walk_check(
    repo: &Repository,
    index: &crate::repository::Index,
    sid: &SnapshotId,
    tree: &BlobId,
    base: &Path,
    bad: &HashSet<BlobId, IdBuildHasher>,
    seen: &mut HashMap<BlobId, bool>,
    r: &mut CheckReport,
) {
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
                let missing: Vec<&BlobId> =
                    content.iter().filter(|id| !index.contains(id)).collect();
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
                walk_check(repo, index, sid, subtree, &p, bad, seen, r);
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
