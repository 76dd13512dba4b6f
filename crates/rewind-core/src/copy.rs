//! Copying snapshots to another repository (an offsite copy).
//!
//! Repositories have their own keys, so a blob's id differs between them:
//! every data blob of a snapshot is read from the source, stored in the
//! destination under its own id (deduplicated there, so only what the
//! destination lacks is uploaded), and every tree is rewritten with the new
//! ids, bottom up. The destination snapshot records the source identity in
//! `copied_from` (DESIGN §3.8), so a second run skips what was copied.
//!
//! Within a run, trees already copied are remembered (source tree id ->
//! destination tree id): an unchanged directory of the next snapshot costs
//! nothing. A run that is interrupted leaves indexed packs in the
//! destination, which the next run deduplicates against: copies resume.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::error::Result;
use crate::format::pack::BlobKind;
use crate::format::snapshot::SnapshotFile;
use crate::format::tree::{NodeKind, Tree};
use crate::id::{BlobId, SnapshotId};
use crate::repository::{BlobWriter, Repository};

/// The identity of a snapshot across copies and rewrites (protect): the
/// snapshot it was copied from, else the one it replaced, else itself.
pub fn identity(id: &SnapshotId, s: &SnapshotFile) -> SnapshotId {
    s.copied_from.or(s.original).unwrap_or(*id)
}

/// What a copy did (or would do).
#[derive(Clone, Debug, Default)]
pub struct CopyReport {
    /// (source snapshot, new destination snapshot; None for a dry run).
    pub copied: Vec<(SnapshotId, Option<SnapshotId>)>,
    /// Source snapshots the destination already has.
    pub skipped: Vec<SnapshotId>,
    /// Blobs stored in the destination.
    pub blobs_added: u64,
    /// Their plaintext bytes.
    pub bytes_added_raw: u64,
    /// Their stored bytes.
    pub bytes_added_stored: u64,
}

struct Mapper<'a> {
    src: &'a Repository,
    trees: Mutex<HashMap<BlobId, BlobId>>,
}

impl Mapper<'_> {
    /// Copies a tree (and everything below it); returns its destination id.
    fn tree(&self, w: &BlobWriter<'_>, id: &BlobId) -> Result<BlobId> {
        if let Some(d) = self.trees.lock().expect("trees").get(id) {
            return Ok(*d);
        }
        let tree = self.src.read_tree(id)?;
        let nodes = tree
            .nodes
            .into_par_iter()
            .map(|mut node| {
                match &mut node.kind {
                    NodeKind::Dir { subtree } => *subtree = self.tree(w, subtree)?,
                    NodeKind::File { content, .. } => {
                        let mut out = Vec::with_capacity(content.len());
                        self.src.read_blobs(content, |_, data| {
                            out.push(w.add_blob(BlobKind::Data, &data)?.0);
                            Ok(())
                        })?;
                        *content = out;
                    }
                    _ => {}
                }
                Ok(node)
            })
            .collect::<Result<Vec<_>>>()?;
        let (new, _) = w.add_blob(BlobKind::Tree, &Tree::new(nodes).encode())?;
        self.trees.lock().expect("trees").insert(*id, new);
        Ok(new)
    }
}

/// Copies the `wanted` source snapshots that `dst` does not have yet, oldest
/// first. With `dry_run`, only says which.
pub fn copy(
    src: &Repository,
    dst: &Repository,
    wanted: &[(SnapshotId, SnapshotFile)],
    dry_run: bool,
) -> Result<CopyReport> {
    let mut report = CopyReport::default();
    let have: HashSet<SnapshotId> = dst
        .snapshots()?
        .iter()
        .map(|(id, s)| identity(id, s))
        .collect();
    let mut todo: Vec<&(SnapshotId, SnapshotFile)> = Vec::new();
    for entry in wanted {
        if have.contains(&identity(&entry.0, &entry.1)) {
            report.skipped.push(entry.0);
        } else {
            todo.push(entry);
        }
    }
    todo.sort_by_key(|(_, s)| s.time);
    if dry_run {
        report.copied = todo.iter().map(|(id, _)| (*id, None)).collect();
        return Ok(report);
    }
    // The destination sees a backup: prune there postpones deletions.
    let _marker = dst.announce(
        crate::format::prune::RunningKind::Backup,
        &crate::source::local_hostname(),
    )?;
    let mapper = Mapper {
        src,
        trees: Mutex::new(HashMap::new()),
    };
    // Source id -> destination id of the snapshots copied in this run, for
    // the `parent` field.
    let mut copied_ids: HashMap<SnapshotId, SnapshotId> = HashMap::new();
    for (id, s) in todo {
        // One writer per snapshot: its index is durable before its snapshot
        // is written (W2), and an interruption loses at most one snapshot.
        let (root, stats) = dst.write_blobs(|w| mapper.tree(w, &s.tree))?;
        let mut copy = s.clone();
        copy.tree = root;
        copy.parent = s.parent.and_then(|p| copied_ids.get(&p).copied());
        copy.copied_from = Some(identity(id, s));
        copy.original = None;
        let new = dst.save_snapshot(&copy)?;
        copied_ids.insert(*id, new);
        report.copied.push((*id, Some(new)));
        report.blobs_added += stats.data_blobs + stats.tree_blobs;
        report.bytes_added_raw += stats.bytes_raw;
        report.bytes_added_stored += stats.bytes_stored;
    }
    Ok(report)
}
