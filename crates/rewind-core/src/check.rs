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
            r.errors.push(format!("cannot load the index: {e} (run `rewind repair index` when available, or restore from another copy)"));
            return Ok(r);
        }
    };
    r.blobs = index.len();
    for (name, e) in index.damaged() {
        r.errors.push(format!(
            "index file {name} cannot be read ({e}); the blobs it lists are reported missing below"
        ));
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
    let mut bad_blobs: HashSet<BlobId, IdBuildHasher> = HashSet::default();
    let mut indexed = HashSet::new();
    let by_pack = index.blobs_by_pack();
    for (pos, (pack, size)) in index.packs().enumerate() {
        let name = pack.to_hex();
        indexed.insert(name.clone());
        match listed.get(&name) {
            None => {
                r.errors.push(format!(
                    "pack {name} is missing ({} blobs lost)",
                    by_pack[pos].len()
                ));
                bad_blobs.extend(by_pack[pos].iter().map(|(id, _)| *id));
            }
            Some(&actual) if actual != size => {
                r.errors.push(format!(
                    "pack {name} is {actual} bytes, the index says {size}: truncated or replaced"
                ));
                bad_blobs.extend(by_pack[pos].iter().map(|(id, _)| *id));
            }
            Some(_) => {}
        }
    }
    for name in listed.keys() {
        if !indexed.contains(name) {
            r.notes.push(format!(
                "pack {name} is not in any index (left by an interrupted backup; harmless)"
            ));
        }
    }

    if opts.read_data {
        let packs: Vec<(usize, crate::id::PackId)> = index
            .packs()
            .enumerate()
            .filter(|(_, (p, _))| listed.contains_key(&p.to_hex()))
            .map(|(i, (p, _))| (i, p))
            .collect();
        r.packs_read = packs.len();
        let results: Vec<(Vec<String>, Vec<BlobId>)> = packs
            .par_iter()
            .map(|(pos, pack)| {
                let name = pack.to_hex();
                let mut errs = Vec::new();
                let mut bad = Vec::new();
                let bytes = match repo.backend().read(FileType::Pack, &name) {
                    Ok(b) => b,
                    Err(e) => {
                        return (
                            vec![format!("pack {name}: {e}")],
                            by_pack[*pos].iter().map(|(id, _)| *id).collect(),
                        )
                    }
                };
                if Hash::of(&bytes) != pack.0 {
                    errs.push(format!(
                        "pack {name} does not match its name (bit rot or tampering)"
                    ));
                }
                match PackHeader::parse(repo.crypto(), pack, &bytes) {
                    Ok(h) => {
                        let in_header: HashSet<BlobId> = h.blobs.iter().map(|b| b.id).collect();
                        for (id, _) in &by_pack[*pos] {
                            if !in_header.contains(id) {
                                errs.push(format!(
                                    "pack {name}: blob {id} is indexed but not in the pack header"
                                ));
                            }
                        }
                    }
                    Err(e) => errs.push(e.to_string()),
                }
                for (id, e) in &by_pack[*pos] {
                    let (start, end) = (e.offset as usize, e.offset as usize + e.length as usize);
                    let ok = end <= bytes.len()
                        && repo
                            .open_blob(id, e.raw_length, &bytes[start..end], &name)
                            .is_ok();
                    if !ok {
                        bad.push(*id);
                    }
                }
                if !bad.is_empty() {
                    errs.push(format!(
                        "pack {name}: {} blobs fail authentication",
                        bad.len()
                    ));
                }
                (errs, bad)
            })
            .collect();
        for (errs, bad) in results {
            r.errors.extend(errs);
            bad_blobs.extend(bad);
        }
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
