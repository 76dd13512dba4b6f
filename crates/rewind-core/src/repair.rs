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

use crate::backend::FileType;
use crate::error::Result;
use crate::format::index::IndexPack;
use crate::format::pack::PackHeader;
use crate::id::{IndexId, PackId};
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

pub(crate) fn read_header(repo: &Repository, name: &str, size: u64) -> Result<IndexPack> {
    let id: PackId = name.parse()?;
    if size < 4 {
        return Err(crate::Error::corrupt("pack", name, "too short"));
    }
    let trailer = repo
        .backend()
        .read_range(FileType::Pack, name, size - 4, 4)?;
    let hlen = PackHeader::header_len(trailer[..4].try_into().expect("4 bytes"));
    if u64::from(hlen) + 4 > size {
        return Err(crate::Error::corrupt(
            "pack",
            name,
            "header length exceeds pack",
        ));
    }
    let sealed =
        repo.backend()
            .read_range(FileType::Pack, name, size - 4 - u64::from(hlen), hlen)?;
    let header = PackHeader::parse_header(repo.crypto(), &id, size, &sealed)?;
    Ok(IndexPack {
        id,
        size,
        blobs: header.blobs,
    })
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
        .map(|f| (f.name.clone(), read_header(repo, &f.name, f.size)))
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
/// are present but corrupt are found by `check --read-data`: delete their
/// pack, run [`repair_index`], then this.
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
