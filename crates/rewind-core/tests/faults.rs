//! Fault injection: a backend that fails its Nth mutating call, for every N
//! of a backup. After each failure the repository must open, check clean
//! (unindexed packs allowed), restore every earlier snapshot byte for byte,
//! and accept the next backup. docs/DESIGN.md, "Write ordering".

mod common;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::*;
use rewind_core::archiver::{self, BackupOptions, Progress};
use rewind_core::backend::FileType;
use rewind_core::check::{self, CheckOptions};
use rewind_core::repository::Repository;
use rewind_core::Error;

#[test]
fn a_backup_failing_at_any_write_leaves_the_repository_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    let src: PathBuf = tmp.path().join("src");
    make_tree(&src, 1, 24);
    init(&repo_dir);
    let first = archiver::backup(
        &open(&repo_dir),
        &BackupOptions::new(vec![src.clone()]),
        &Progress::default(),
    )
    .unwrap();
    let first_id = first.snapshot_id.unwrap();
    let first_copy = tmp.path().join("src-first");
    assert!(std::process::Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&first_copy)
        .status()
        .unwrap()
        .success());
    // Change the tree so the next backup writes new packs, index and snapshot.
    make_tree(&src.join("new"), 2, 40);

    // Count the writes of a successful second backup, in a scratch copy.
    let copy = tmp.path().join("copy");
    assert!(std::process::Command::new("cp")
        .arg("-a")
        .arg(&repo_dir)
        .arg(&copy)
        .status()
        .unwrap()
        .success());
    let counting = Arc::new(FaultBackend::new(&copy, usize::MAX));
    let repo = Repository::open(counting.clone(), b"pw").unwrap();
    archiver::backup(
        &repo,
        &BackupOptions::new(vec![src.clone()]),
        &Progress::default(),
    )
    .unwrap();
    let total = counting.writes.load(Ordering::SeqCst);
    assert!(
        total >= 4,
        "expected packs, index and snapshot writes, got {total}"
    );

    // The last mutation is the removal of the backup's running marker,
    // which happens after the snapshot and cannot fail the backup.
    for budget in 0..total - 1 {
        let faulty = Arc::new(FaultBackend::new(&repo_dir, budget));
        let repo = Repository::open(faulty, b"pw").unwrap();
        let before = repo.snapshots().unwrap().len();
        let r = archiver::backup(
            &repo,
            &BackupOptions::new(vec![src.clone()]),
            &Progress::default(),
        );
        let err = r.expect_err("the backup must fail when a write fails");
        assert!(
            err.is_storage_full() || matches!(err, Error::Io { .. }),
            "budget {budget}: unexpected error {err}"
        );

        let repo = open(&repo_dir);
        assert_eq!(
            repo.snapshots().unwrap().len(),
            before,
            "budget {budget}: a failed backup must not leave a snapshot"
        );
        let report = check::check(
            &repo,
            &CheckOptions {
                read_data: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(report.is_ok(), "budget {budget}: {:?}", report.errors);
        assert_restores(&repo, &first_id, &src, &first_copy, tmp.path());
    }

    // The next backup succeeds and reuses what the failed ones stored.
    let repo = open(&repo_dir);
    let packs_before = repo.backend().list(FileType::Pack).unwrap().len();
    let done = archiver::backup(
        &repo,
        &BackupOptions::new(vec![src.clone()]),
        &Progress::default(),
    )
    .unwrap();
    let repo = open(&repo_dir);
    assert!(check::check(
        &repo,
        &CheckOptions {
            read_data: true,
            ..Default::default()
        }
    )
    .unwrap()
    .is_ok());
    assert_restores(&repo, &done.snapshot_id.unwrap(), &src, &src, tmp.path());
    let packs_after = repo.backend().list(FileType::Pack).unwrap().len();
    assert!(packs_after >= packs_before);
}
