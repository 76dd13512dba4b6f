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
use crate::format::index::{IndexFile, IndexPack, VERSION};
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

fn read_header(repo: &Repository, name: &str, size: u64) -> Result<IndexPack> {
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
    for chunk in good.chunks(crate::repository::PACKS_PER_INDEX) {
        let file = IndexFile {
            version: VERSION,
            supersedes: old.clone(),
            packs: chunk.to_vec(),
        };
        let (id, bytes) = file.seal(repo.crypto());
        repo.backend()
            .write(FileType::Index, &id.to_hex(), &bytes)?;
        stats.written += 1;
    }
    // Only now that the new index is durable do the old files go.
    for id in &old {
        repo.backend().delete(FileType::Index, &id.to_hex())?;
        stats.removed += 1;
    }
    Ok(stats)
}
