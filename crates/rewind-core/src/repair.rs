//! Repairs that rebuild derived data from what the repository still holds.
//!
//! `repair_index` rebuilds the index from the packs' own headers:
//! ```text
//! for every pack: read its last 4 bytes, then its sealed header; verify it
//! write new index files (16 packs each) that supersede every old index file
//! then delete the old index files
//! ```
//! A crash before the deletions leaves old and new index files side by side:
//! duplicates are harmless (the same blob at the same place). Packs whose
//! header cannot be read are reported; their blobs stay missing.

use rayon::prelude::*;

use crate::backend::{delete_unless_kept, FileType};
use crate::error::Result;
use crate::format::index::IndexPack;
use crate::format::pack::{PackHeader, PackedBlob};
use crate::id::{Hash, IndexId, PackId};
use crate::repository::Repository;

/// What `repair_index` did.
#[derive(Clone, Debug, Default)]
pub struct RepairIndexStats {
    /// Packs indexed.
    pub packs: usize,
    /// Blobs indexed.
    pub blobs: usize,
    /// Packs whose header could not be read (name, error).
    pub unreadable: Vec<(String, String)>,
    /// Index files written.
    pub written: usize,
    /// Old index files removed.
    pub removed: usize,
}

/// Rebuilds the index from the pack headers (`dry_run`: only count).
pub fn repair_index(repo: &Repository, dry_run: bool) -> Result<RepairIndexStats> {
    let old: Vec<IndexId> = repo
        .backend()
        .list(FileType::Index)?
        .into_iter()
        .map(|f| f.name.parse())
        .collect::<Result<_>>()?;
    let packs = repo.backend().list(FileType::Pack)?;
    let results: Vec<(String, Result<IndexPack>)> = packs
        .par_iter()
        .map(|f| (f.name.clone(), repo.read_pack_header(&f.name, f.size)))
        .collect();
    let mut stats = RepairIndexStats::default();
    let mut good = Vec::new();
    for (name, r) in results {
        match r {
            Ok(p) => {
                stats.blobs += p.blobs.len();
                good.push(p);
            }
            Err(e) => stats.unreadable.push((name, e.to_string())),
        }
    }
    stats.packs = good.len();
    if dry_run {
        return Ok(stats);
    }
    // The old files go only once the new index is durable.
    let (written, removed, _kept) =
        repo.replace_index(&good, &old, crate::repository::PACKS_PER_INDEX)?;
    stats.written = written as usize;
    stats.removed = removed as usize;
    Ok(stats)
}

/// One snapshot rewritten by [`repair_snapshots`].
#[derive(Clone, Debug)]
pub struct RepairedSnapshot {
    /// The damaged snapshot (kept until the user forgets it).
    pub original: crate::id::SnapshotId,
    /// The new snapshot without the damaged entries (None for a dry run).
    pub repaired: Option<crate::id::SnapshotId>,
    /// Paths left out, with the reason.
    pub removed: Vec<(std::path::PathBuf, String)>,
}

fn rewrite_tree(
    repo: &Repository,
    writer: &crate::repository::BlobWriter<'_>,
    index: &crate::repository::Index,
    tree: &crate::id::BlobId,
    path: &std::path::Path,
    removed: &mut Vec<(std::path::PathBuf, String)>,
) -> Result<crate::id::BlobId> {
    use crate::format::tree::{NodeKind, Tree};
    use std::os::unix::ffi::OsStrExt;
    let t = match repo.read_tree(tree) {
        Ok(t) => t,
        Err(e) => {
            removed.push((path.to_path_buf(), format!("directory listing lost: {e}")));
            Tree::new(Vec::new())
        }
    };
    let mut nodes = Vec::with_capacity(t.nodes.len());
    for mut n in t.nodes {
        let p = path.join(std::ffi::OsStr::from_bytes(&n.name));
        match &n.kind {
            NodeKind::File { content, .. } => {
                let missing = content.iter().filter(|id| !index.contains(id)).count();
                if missing > 0 {
                    removed.push((
                        p,
                        format!("{missing} of {} data blobs missing", content.len()),
                    ));
                    continue;
                }
            }
            NodeKind::Dir { subtree } => {
                let new = rewrite_tree(repo, writer, index, subtree, &p, removed)?;
                n.kind = NodeKind::Dir { subtree: new };
            }
            _ => {}
        }
        nodes.push(n);
    }
    let (id, _) = writer.add_blob(
        crate::format::pack::BlobKind::Tree,
        &Tree::new(nodes).encode(),
    )?;
    Ok(id)
}

/// Writes, for each damaged snapshot, a new snapshot that leaves out the
/// files whose data is missing from the index and the directories whose
/// listing is lost, tagged `repaired`. The originals are kept. Blobs that
/// are present but corrupt are found by `check --read-data`: run
/// [`repair_packs`] first, which keeps every blob that still
/// authenticates, then this.
pub fn repair_snapshots(
    repo: &Repository,
    snapshots: &[(crate::id::SnapshotId, crate::format::snapshot::SnapshotFile)],
    dry_run: bool,
) -> Result<Vec<RepairedSnapshot>> {
    let index = repo.index()?;
    let (plans, _) = repo.write_blobs_with(dry_run, |writer| {
        let mut out = Vec::new();
        for (id, s) in snapshots {
            let mut removed = Vec::new();
            let root = rewrite_tree(
                repo,
                writer,
                &index,
                &s.tree,
                std::path::Path::new("/"),
                &mut removed,
            )?;
            if !removed.is_empty() {
                out.push((*id, s.clone(), root, removed));
            }
        }
        Ok(out)
    })?;
    let mut result = Vec::new();
    for (id, mut s, root, removed) in plans {
        let repaired = if dry_run {
            None
        } else {
            s.tree = root;
            s.original = Some(s.original.unwrap_or(id));
            s.protection = None;
            if !s.tags.iter().any(|t| t == "repaired") {
                s.tags.push("repaired".into());
            }
            Some(repo.save_snapshot(&s)?)
        };
        result.push(RepairedSnapshot {
            original: id,
            repaired,
            removed,
        });
    }
    Ok(result)
}

/// What [`repair_packs`] found and did for one damaged pack.
#[derive(Clone, Debug, Default)]
pub struct SalvagedPack {
    /// The damaged pack.
    pub pack: PackId,
    /// Blobs that still authenticate: stored again in new packs.
    pub salvaged: usize,
    /// Blobs lost (fail authentication, or the pack is gone).
    pub lost: usize,
    /// Why the pack counts as damaged.
    pub damage: String,
    /// The storage keeps the damaged file for now (it left the index).
    pub kept: bool,
}

/// What [`repair_packs`] did.
#[derive(Clone, Debug, Default)]
pub struct RepairPacksReport {
    /// Packs read.
    pub packs_read: usize,
    /// The damaged packs, with what was saved of each.
    pub damaged: Vec<SalvagedPack>,
    /// New packs written for the salvaged blobs.
    pub new_packs: u64,
    /// Index files written and removed.
    pub index_written: u64,
    /// Old index files removed.
    pub index_removed: u64,
}

/// The blobs a pack should hold: every index file's entries for it, and its
/// own header where that still authenticates.
fn expected_blobs(
    repo: &Repository,
    files: &[(IndexId, crate::format::index::IndexFile)],
    pack: &PackId,
    bytes: Option<&[u8]>,
) -> Vec<PackedBlob> {
    let mut blobs: Vec<PackedBlob> = files
        .iter()
        .flat_map(|(_, f)| f.packs.iter())
        .filter(|p| p.id == *pack)
        .flat_map(|p| p.blobs.iter().cloned())
        .collect();
    if let Some(h) = bytes.and_then(|b| PackHeader::parse(repo.crypto(), pack, b).ok()) {
        blobs.extend(h.blobs);
    }
    blobs.sort_by_key(|b| (b.offset, b.id));
    blobs.dedup_by_key(|b| (b.offset, b.id));
    blobs
}

/// Salvages damaged packs: every blob of a damaged pack that still
/// authenticates (each blob is sealed on its own) is stored again in a new
/// pack; then the damaged packs leave the index and are deleted. Only the
/// blobs that really are lost stay missing, so `repair_snapshots` after it
/// leaves out only the files that need them.
///
/// `only`: the packs to look at (all indexed packs when empty). A pack is
/// damaged when it is missing, does not match its name, or one of its
/// blobs fails authentication. With `dry_run`, nothing is written.
pub fn repair_packs(
    repo: &Repository,
    only: &[PackId],
    dry_run: bool,
) -> Result<RepairPacksReport> {
    let (files, _) = repo.index_files()?;
    let listed: std::collections::HashMap<String, u64> = repo
        .backend()
        .list(FileType::Pack)?
        .into_iter()
        .map(|f| (f.name, f.size))
        .collect();
    let mut candidates: Vec<PackId> = if only.is_empty() {
        files
            .iter()
            .flat_map(|(_, f)| f.packs.iter().map(|p| p.id))
            .collect()
    } else {
        only.to_vec()
    };
    candidates.sort();
    candidates.dedup();
    let mut report = RepairPacksReport {
        packs_read: candidates.len(),
        ..Default::default()
    };
    // One pack in memory per thread: read, verify, keep what authenticates.
    let salvage = |w: Option<&crate::repository::BlobWriter<'_>>| -> Result<Vec<SalvagedPack>> {
        let found: Vec<Option<SalvagedPack>> = candidates
            .par_iter()
            .map(|pack| {
                let name = pack.to_hex();
                let bytes = if listed.contains_key(&name) {
                    match repo.backend().read(FileType::Pack, &name) {
                        Ok(b) => Some(b),
                        Err(crate::Error::Missing { .. }) => None,
                        Err(e) => return Err(e),
                    }
                } else {
                    None
                };
                let blobs = expected_blobs(repo, &files, pack, bytes.as_deref());
                let mut s = SalvagedPack {
                    pack: *pack,
                    ..Default::default()
                };
                let Some(bytes) = bytes else {
                    s.lost = blobs.len();
                    s.damage = "the pack is missing".into();
                    return Ok(Some(s));
                };
                let intact_file = Hash::of(&bytes) == pack.0;
                let mut good = Vec::new();
                for b in &blobs {
                    let (start, end) = (b.offset as usize, b.offset as usize + b.length as usize);
                    match (end <= bytes.len())
                        .then(|| repo.open_blob(&b.id, b.raw_length, &bytes[start..end], &name))
                    {
                        Some(Ok(data)) => good.push((b.kind, data)),
                        _ => s.lost += 1,
                    }
                }
                if intact_file && s.lost == 0 {
                    return Ok(None);
                }
                // Damaged: what still authenticates is stored again.
                s.salvaged = good.len();
                if let Some(w) = w {
                    for (kind, data) in good {
                        w.add_blob(kind, &data)?;
                    }
                }
                s.damage = if intact_file {
                    format!("{} blobs fail authentication", s.lost)
                } else {
                    "its content does not match its name".into()
                };
                Ok(Some(s))
            })
            .collect::<Result<_>>()?;
        Ok(found.into_iter().flatten().collect())
    };
    if dry_run {
        report.damaged = salvage(None)?;
        return Ok(report);
    }
    // The salvaged blobs are stored again before anything leaves the index
    // (a writer that ignores the index: the index still points at the
    // damaged copies). An intact pack costs one read and writes nothing.
    let (damaged, stats) = repo.rewrite_blobs(|w| salvage(Some(w)))?;
    report.new_packs = stats.packs;
    report.index_written = stats.index_files.len() as u64;
    if damaged.is_empty() {
        return Ok(report);
    }
    // Every index file but the writer's new ones is replaced by files that
    // no longer list the damaged packs; then the damaged packs go.
    let gone: std::collections::HashSet<PackId> = damaged.iter().map(|d| d.pack).collect();
    let (files, _) = repo.index_files()?;
    let new_files: std::collections::HashSet<IndexId> = stats.index_files.iter().copied().collect();
    let old: Vec<IndexId> = files
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !new_files.contains(id))
        .collect();
    let mut keep: Vec<IndexPack> = files
        .iter()
        .filter(|(id, _)| !new_files.contains(id))
        .flat_map(|(_, f)| f.packs.iter())
        .filter(|p| !gone.contains(&p.id))
        .cloned()
        .collect();
    keep.sort_by_key(|p| p.id);
    keep.dedup_by_key(|p| p.id);
    let (written, removed, _kept) =
        repo.replace_index(&keep, &old, crate::repository::PACKS_PER_INDEX)?;
    report.index_written += written;
    report.index_removed = removed;
    report.damaged = damaged;
    for d in &mut report.damaged {
        if listed.contains_key(&d.pack.to_hex()) {
            d.kept =
                delete_unless_kept(&**repo.backend(), FileType::Pack, &d.pack.to_hex())?.is_some();
        }
    }
    Ok(report)
}
