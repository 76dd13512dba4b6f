//! A tree larger than the scan's budget is stored as it is scanned: each
//! directory the scan finishes while over budget is handed to a thread that
//! reads its files and writes its tree, and the scan keeps only its node
//! (docs/DESIGN.md §9). These tests hold it to the same snapshot as a scan
//! held whole, byte for byte and count for count.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;

use common::*;
use rewind_core::archiver::{self, BackupOptions, BackupOutcome, ParentChoice, Progress};
use rewind_core::format::tree::NodeKind;
use rewind_core::id::BlobId;
use rewind_core::repository::Repository;
use rewind_core::restorer;

/// A budget of a few entries: nearly every directory is handed off.
const TINY: u64 = 4 * 320;

fn backup(
    repo: &Repository,
    src: &Path,
    budget: Option<u64>,
    parent: ParentChoice,
) -> BackupOutcome {
    let mut opts = BackupOptions::new(vec![src.to_path_buf()]);
    opts.scan_memory = budget;
    opts.parent = parent;
    archiver::backup(repo, &opts, &Progress::default()).unwrap()
}

/// The tree of the source folder in a snapshot (the root's trees hold
/// its parents, /tmp among them, which other tests change meanwhile).
fn src_tree(repo: &Repository, out: &BackupOutcome, src: &Path) -> BlobId {
    let node = restorer::find_node(repo, &out.snapshot.tree, src)
        .unwrap()
        .unwrap();
    match node.kind {
        NodeKind::Dir { subtree } => subtree,
        _ => panic!("{} is not a directory in the snapshot", src.display()),
    }
}

/// Directories four deep and wide, files at every level (one large enough
/// to be shared by the readers), empty directories and symlinks.
fn make_wide_tree(src: &Path) {
    for a in 0..6 {
        for b in 0..4 {
            for c in 0..3 {
                let dir = src.join(format!("a{a}/b{b}/c{c}"));
                std::fs::create_dir_all(&dir).unwrap();
                for f in 0..3 {
                    let seed = (a * 100 + b * 10 + c) * 10 + f;
                    std::fs::write(
                        dir.join(format!("f{f}")),
                        random_bytes(seed as u64, 200 + 37 * seed),
                    )
                    .unwrap();
                }
            }
            std::fs::write(src.join(format!("a{a}/b{b}/note")), format!("{a}{b}")).unwrap();
        }
        std::fs::create_dir_all(src.join(format!("a{a}/empty"))).unwrap();
        symlink("../top", src.join(format!("a{a}/link"))).unwrap();
    }
    std::fs::write(src.join("big"), random_bytes(7, 6 << 20)).unwrap();
    std::fs::write(src.join("top"), b"top").unwrap();
}

#[test]
fn a_tree_over_the_scan_budget_makes_the_same_snapshot_as_one_held_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo_dir, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    make_wide_tree(&src);
    let repo = init(&repo_dir);

    let early = backup(&repo, &src, Some(TINY), ParentChoice::None);
    // 6 × 4 × 3 leaf directories, 6 × 4 middle ones, 6 + 6 at the top.
    assert!(
        early.stored_early >= 72,
        "expected directories stored while scanning, got {}",
        early.stored_early
    );
    let whole = backup(&repo, &src, None, ParentChoice::None);
    assert_eq!(whole.stored_early, 0, "a small tree is held whole");
    assert_eq!(src_tree(&repo, &early, &src), src_tree(&repo, &whole, &src));
    let (e, w) = (early.summary(), whole.summary());
    assert_eq!(
        (
            e.files_new,
            e.dirs,
            e.others,
            e.total_bytes,
            e.bytes_read,
            e.errors
        ),
        (
            w.files_new,
            w.dirs,
            w.others,
            w.total_bytes,
            w.bytes_read,
            w.errors
        )
    );
    assert_eq!(e.files_new, 6 * 4 * 3 * 3 + 6 * 4 + 2);

    let repo = open(&repo_dir);
    assert!(check_errors(&repo).is_empty(), "{:?}", check_errors(&repo));
    assert_restores(&repo, &early.snapshot_id.unwrap(), &src, &src, tmp.path());
}

/// Against a parent: the unchanged directories are still taken whole from
/// it, the changed ones are handed off, and the counts add up.
#[test]
fn an_incremental_backup_over_the_budget_reuses_and_stores_what_it_should() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo_dir, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    make_wide_tree(&src);
    let repo = init(&repo_dir);
    let first = backup(&repo, &src, None, ParentChoice::None);
    let first_id = first.snapshot_id.unwrap();

    std::fs::write(src.join("a1/b2/c0/f1"), b"changed").unwrap();
    std::fs::write(src.join("a3/b0/new"), b"new").unwrap();
    std::fs::remove_dir_all(src.join("a5/b3")).unwrap();

    // Opened again, as a new command would: the parent's blobs are then
    // in the index that tells which files can be reused.
    let repo = open(&repo_dir);
    let early = backup(&repo, &src, Some(TINY), ParentChoice::Snapshot(first_id));
    let whole = backup(&repo, &src, None, ParentChoice::Snapshot(first_id));
    assert!(early.stored_early > 0);
    assert_eq!(src_tree(&repo, &early, &src), src_tree(&repo, &whole, &src));
    let (e, w) = (early.summary(), whole.summary());
    assert_eq!(
        (
            e.files_new,
            e.files_changed,
            e.files_unchanged,
            e.total_bytes,
            e.bytes_read
        ),
        (
            w.files_new,
            w.files_changed,
            w.files_unchanged,
            w.total_bytes,
            w.bytes_read
        )
    );
    assert_eq!((e.files_new, e.files_changed, e.bytes_read), (1, 1, 10));
    let repo = open(&repo_dir);
    assert_restores(&repo, &early.snapshot_id.unwrap(), &src, &src, tmp.path());
}

/// A dry run over the budget reads everything and stores nothing.
#[test]
fn a_dry_run_over_the_budget_stores_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo_dir, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    make_wide_tree(&src);
    let repo = init(&repo_dir);
    let mut opts = BackupOptions::new(vec![src.clone()]);
    opts.scan_memory = Some(TINY);
    opts.dry_run = true;
    let out = archiver::backup(&repo, &opts, &Progress::default()).unwrap();
    assert!(out.snapshot_id.is_none());
    assert!(out.stored_early > 0);
    assert_eq!(out.summary().files_new, 6 * 4 * 3 * 3 + 6 * 4 + 2);
    assert_eq!(pack_bytes(&open(&repo_dir)), 0);
}
