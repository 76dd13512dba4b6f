//! A directory found exactly as in the parent snapshot takes the parent's
//! tree during the scan instead of being held to the end and written again
//! (docs/DESIGN.md §9). These tests check that nothing that changed is
//! lost to that shortcut, that the counts still cover every file, and that
//! a tree prune has marked for deletion is never reused.

mod common;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use common::*;
use rewind_core::archiver::{self, BackupOptions, BackupOutcome, Progress};
use rewind_core::backend::FileType;
use rewind_core::format::tree::NodeKind;
use rewind_core::id::BlobId;
use rewind_core::prune::{self, PruneOptions};
use rewind_core::repository::Repository;
use rewind_core::restorer::Overwrite;

fn backup(repo: &Repository, src: &Path) -> BackupOutcome {
    archiver::backup(
        repo,
        &BackupOptions::new(vec![src.to_path_buf()]),
        &Progress::default(),
    )
    .unwrap()
}

/// Three levels of directories, files in each, a symlink and an empty
/// directory. Returns the number of files and their bytes.
fn make_deep_tree(src: &Path) -> (u64, u64) {
    let (mut files, mut bytes) = (0, 0);
    for (i, dir) in ["a", "a/b", "a/b/c", "d", "d/e"].iter().enumerate() {
        std::fs::create_dir_all(src.join(dir)).unwrap();
        for j in 0..3 {
            let len = 1000 + 777 * (i * 3 + j);
            std::fs::write(
                src.join(dir).join(format!("f{j}")),
                random_bytes((i * 3 + j) as u64, len),
            )
            .unwrap();
            files += 1;
            bytes += len as u64;
        }
    }
    std::fs::create_dir_all(src.join("d/empty")).unwrap();
    symlink("../a/f0", src.join("d/link")).unwrap();
    (files, bytes)
}

/// Every tree a snapshot reaches, depth first.
fn trees(repo: &Repository, root: &BlobId, out: &mut Vec<BlobId>) {
    out.push(*root);
    for n in repo.read_tree(root).unwrap().nodes {
        if let NodeKind::Dir { subtree } = n.kind {
            trees(repo, &subtree, out);
        }
    }
}

#[test]
fn a_backup_of_an_unchanged_tree_counts_every_file_and_reads_none() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo_dir, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    let repo = init(&repo_dir);
    let (files, bytes) = make_deep_tree(&src);

    let first = backup(&repo, &src);
    assert_eq!(first.snapshot.summary.files_new, files);
    let repo = open(&repo_dir);
    let second = backup(&repo, &src);
    let s = &second.snapshot.summary;
    assert_eq!(second.snapshot.tree, first.snapshot.tree);
    assert_eq!(
        (s.files_unchanged, s.files_new, s.files_changed),
        (files, 0, 0),
        "{s:?}"
    );
    assert_eq!(s.total_bytes, bytes, "{s:?}");
    assert_eq!(s.dirs, first.snapshot.summary.dirs, "{s:?}");
    assert_eq!(s.others, 1, "the symlink: {s:?}");
    assert_eq!((s.bytes_read, s.blobs_added), (0, 0), "{s:?}");
}

#[test]
fn what_changed_below_unchanged_directories_is_in_the_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo_dir, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    init(&repo_dir);
    make_deep_tree(&src);
    backup(&open(&repo_dir), &src);

    // Each change alone, then a backup whose restore must equal the source.
    type Change = fn(&Path);
    let changes: [(&str, Change); 8] = [
        ("a file removed deep down", |s| {
            std::fs::remove_file(s.join("a/b/c/f1")).unwrap()
        }),
        ("a file added deep down", |s| {
            std::fs::write(s.join("a/b/c/new"), b"new").unwrap()
        }),
        ("a symlink pointed elsewhere", |s| {
            std::fs::remove_file(s.join("d/link")).unwrap();
            symlink("../a/f1", s.join("d/link")).unwrap();
        }),
        ("an empty directory removed", |s| {
            std::fs::remove_dir(s.join("d/empty")).unwrap()
        }),
        ("an empty directory added", |s| {
            std::fs::create_dir(s.join("a/b/c/fresh")).unwrap()
        }),
        ("a file renamed", |s| {
            std::fs::rename(s.join("d/e/f0"), s.join("d/e/g0")).unwrap()
        }),
        ("a directory's mode changed", |s| {
            std::fs::set_permissions(s.join("a/b"), std::fs::Permissions::from_mode(0o700)).unwrap()
        }),
        ("a file rewritten in place, same size", |s| {
            std::fs::write(s.join("a/b/f2"), random_bytes(99, 1000 + 777 * 5)).unwrap()
        }),
    ];
    for (what, change) in changes {
        change(&src);
        let repo = open(&repo_dir);
        let out = backup(&repo, &src);
        let snap = out.snapshot_id.unwrap();
        assert_restores(&repo, &snap, &src, &src, tmp.path());
        // `diff -r` sees contents and names; the link and the mode are
        // looked at here.
        let target = tmp.path().join("look");
        let stats = restore_into(&repo, &snap, &src, &target, Overwrite::Always);
        assert!(stats.errors.is_empty(), "after {what}: {:?}", stats.errors);
        assert_eq!(
            std::fs::read_link(target.join("d/link")).unwrap(),
            std::fs::read_link(src.join("d/link")).unwrap(),
            "after {what}"
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(
            mode(&target.join("a/b")),
            mode(&src.join("a/b")),
            "after {what}"
        );
        assert_eq!(
            target.join("d/empty").exists(),
            src.join("d/empty").exists(),
            "after {what}"
        );
        std::fs::remove_dir_all(&target).unwrap();
    }
}

#[test]
fn a_parent_tree_that_prune_marked_is_written_again() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo_dir, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    init(&repo_dir);
    make_deep_tree(&src);
    let first = backup(&open(&repo_dir), &src);
    let id = first.snapshot_id.unwrap().to_hex();

    // The snapshot is forgotten, prune marks all its packs, and the
    // snapshot file comes back (a copy restored by hand, another client
    // that still held it): its trees are in marked packs.
    let repo = open(&repo_dir);
    let saved = repo.backend().read(FileType::Snapshot, &id).unwrap();
    repo.backend().delete(FileType::Snapshot, &id).unwrap();
    let r = prune::prune(
        &open(&repo_dir),
        &PruneOptions {
            grace: jiff::SignedDuration::from_hours(1),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(r.marked_unused.count > 0, "{r:?}");
    repo.backend()
        .write(FileType::Snapshot, &id, &saved)
        .unwrap();

    let repo = open(&repo_dir);
    let index = repo.index().unwrap();
    assert!(!index.contains_live(&first.snapshot.tree));
    let second = backup(&repo, &src);
    let repo = open(&repo_dir);
    let index = repo.index().unwrap();
    let mut reached = Vec::new();
    trees(&repo, &second.snapshot.tree, &mut reached);
    // The path down to the source, then src, a, a/b, a/b/c, d, d/e, d/empty.
    assert!(reached.len() >= 8, "{reached:?}");
    for t in &reached {
        assert!(
            index.contains_live(t),
            "tree {t} of the new snapshot is in a pack marked for deletion"
        );
    }
    assert_restores(&repo, &second.snapshot_id.unwrap(), &src, &src, tmp.path());
}
