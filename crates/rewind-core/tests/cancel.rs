//! Cancellation (crate::cancel): a backup or prune whose flag is set stops
//! with Error::Interrupted, leaves no snapshot and no running marker, and
//! the repository stays consistent. Also: init refuses a location that is
//! not vacant, whatever the backend's caller.

mod common;

use common::*;
use rewind_core::archiver::{self, BackupOptions, Progress};
use rewind_core::backend::FileType;
use rewind_core::cancel::Cancel;
use rewind_core::prune::{self, PruneOptions};
use rewind_core::repository::Repository;
use rewind_core::Error;

fn count(repo: &Repository, t: FileType) -> usize {
    repo.backend().list(t).unwrap().len()
}

#[test]
fn a_cancelled_backup_stops_without_a_snapshot_or_marker() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo_dir, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    try_init(&repo_dir).unwrap();
    make_tree(&src, 1, 20);
    let repo = open(&repo_dir);
    let cancel = Cancel::new();
    cancel.cancel();
    let r = archiver::backup(
        &repo,
        &BackupOptions::new(vec![src.clone()]),
        &Progress::with_cancel(cancel),
    );
    assert!(matches!(r, Err(Error::Interrupted)), "{r:?}");
    assert_eq!(count(&repo, FileType::Snapshot), 0);
    assert_eq!(count(&repo, FileType::Running), 0);
    assert!(check_errors(&repo).is_empty());
    // Not cancelled: the same backup goes through.
    let r = archiver::backup(
        &repo,
        &BackupOptions::new(vec![src]),
        &Progress::with_cancel(Cancel::new()),
    )
    .unwrap();
    assert!(r.snapshot_id.is_some());
}

#[test]
fn a_cancelled_prune_changes_nothing_and_leaves_no_marker() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo_dir, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    try_init(&repo_dir).unwrap();
    make_tree(&src, 2, 20);
    let repo = open(&repo_dir);
    let id = archiver::backup(&repo, &BackupOptions::new(vec![src]), &Progress::default())
        .unwrap()
        .snapshot_id
        .unwrap();
    repo.backend()
        .delete(FileType::Snapshot, &id.to_hex())
        .unwrap();
    let before: Vec<_> = [FileType::Pack, FileType::Index, FileType::PruneState]
        .iter()
        .map(|t| repo.backend().list(*t).unwrap())
        .collect();
    let cancel = Cancel::new();
    cancel.cancel();
    let opts = PruneOptions {
        delete_now: true,
        cancel,
        ..PruneOptions::default()
    };
    let r = prune::prune(&open(&repo_dir), &opts);
    assert!(matches!(r, Err(Error::Interrupted)), "{r:?}");
    let after: Vec<_> = [FileType::Pack, FileType::Index, FileType::PruneState]
        .iter()
        .map(|t| repo.backend().list(*t).unwrap())
        .collect();
    assert_eq!(before, after);
    assert_eq!(count(&repo, FileType::Running), 0);
}

#[test]
fn init_refuses_what_is_not_vacant() {
    let tmp = tempfile::tempdir().unwrap();
    // Other files.
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("letter.txt"), b"dear").unwrap();
    let r = try_init(&docs);
    assert!(
        matches!(&r, Err(Error::Refused(m)) if m.contains("letter.txt")),
        "{r:?}"
    );
    assert_eq!(std::fs::read_dir(&docs).unwrap().count(), 1);
    // A config that is not rewind's.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("config"), [0u8, 1, 2, 3]).unwrap();
    let r = try_init(&other);
    assert!(
        matches!(&r, Err(Error::Refused(m)) if m.contains("not a rewind")),
        "{r:?}"
    );
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 1);
    // Empty and absent locations are vacant; a repository is there after.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    try_init(&empty).unwrap();
    try_init(&tmp.path().join("new")).unwrap();
    assert!(matches!(try_init(&empty), Err(Error::AlreadyExists(_))));
}
