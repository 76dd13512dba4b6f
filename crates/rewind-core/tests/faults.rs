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
    failing_at_any_write(FaultBackend::new, None);
}

/// The same with packs staged as the local backend stages them: a failed
/// commit (the fsync and link) is the failed write.
#[test]
fn a_backup_staging_packs_failing_at_any_write_leaves_the_repository_intact() {
    failing_at_any_write(FaultBackend::staging, None);
}

/// The same with a scan budget of a few entries, so that most directories
/// are stored by the thread that stores them while the scan goes on (the
/// writes themselves may come after the scan: packs fill slowly here).
#[test]
fn a_backup_storing_directories_as_it_scans_failing_at_any_write_leaves_the_repository_intact() {
    failing_at_any_write(FaultBackend::staging, Some(4 * 320));
}

fn failing_at_any_write(
    backend: fn(&std::path::Path, usize) -> FaultBackend,
    scan_memory: Option<u64>,
) {
    let options = |src: &PathBuf| {
        let mut opts = BackupOptions::new(vec![src.clone()]);
        opts.scan_memory = scan_memory;
        opts
    };
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
    let counting = Arc::new(backend(&copy, usize::MAX));
    let repo = Repository::open(counting.clone(), b"pw").unwrap();
    let counted = archiver::backup(&repo, &options(&src), &Progress::default()).unwrap();
    assert_eq!(scan_memory.is_some(), counted.stored_early > 0);
    let total = counting.writes.load(Ordering::SeqCst);
    assert!(
        total >= 4,
        "expected packs, index and snapshot writes, got {total}"
    );

    // The last mutation is the removal of the backup's running marker,
    // which happens after the snapshot and cannot fail the backup.
    for budget in 0..total - 1 {
        let faulty = Arc::new(backend(&repo_dir, budget));
        let repo = Repository::open(faulty, b"pw").unwrap();
        let before = repo.snapshots().unwrap().len();
        let r = archiver::backup(&repo, &options(&src), &Progress::default());
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

/// A disk that fills in the middle of a staged pack, while a large file's
/// chunks are being stored by several threads: the backup fails with the
/// storage's error (not a file skipped as unreadable, which would save a
/// snapshot without it), writes no snapshot, leaves no staged file, and
/// the next backup with room succeeds.
#[test]
fn a_disk_full_in_the_middle_of_a_staged_pack_fails_the_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    let src: PathBuf = tmp.path().join("src");
    make_tree(&src, 3, 16);
    // Large enough to be stored by the pool's threads (more than 4 MiB).
    let big: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(src.join("disk.img"), &big).unwrap();
    init(&repo_dir);
    for room in [0, 1 << 20, 6 << 20] {
        let faulty = FaultBackend::staging(&repo_dir, usize::MAX);
        faulty.staged_room.store(room, Ordering::SeqCst);
        let repo = Repository::open(Arc::new(faulty), b"pw").unwrap();
        let progress = Progress::default();
        let err = archiver::backup(&repo, &BackupOptions::new(vec![src.clone()]), &progress)
            .expect_err("a full disk fails the backup");
        assert!(err.is_storage_full(), "room {room}: {err}");
        assert!(
            err.to_string().contains("write a pack"),
            "room {room}: {err}"
        );
        let repo = open(&repo_dir);
        assert!(
            repo.snapshots().unwrap().is_empty(),
            "room {room}: a snapshot was saved"
        );
        let staged: Vec<_> = std::fs::read_dir(repo_dir.join("data"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(
            staged.is_empty(),
            "room {room}: staged files left: {staged:?}"
        );
        assert_eq!(check_errors(&repo), Vec::<String>::new(), "room {room}");
    }
    let repo = open(&repo_dir);
    let done = archiver::backup(
        &repo,
        &BackupOptions::new(vec![src.clone()]),
        &Progress::default(),
    )
    .unwrap();
    assert_restores(&repo, &done.snapshot_id.unwrap(), &src, &src, tmp.path());
}
