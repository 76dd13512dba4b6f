//! Prune against the real local backend: two-phase deletion, an interruption
//! at every mutation, backups that run across prunes, and backups and prunes
//! running at the same time. docs/DESIGN.md §8c states the argument these
//! tests check.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use common::*;
use jiff::{SignedDuration, Timestamp};
use rewind_core::archiver::{self, BackupOptions, Progress, StreamSource};
use rewind_core::backend::FileType;
use rewind_core::id::SnapshotId;
use rewind_core::prune::{self, PruneOptions, PruneReport};
use rewind_core::repository::Repository;

fn backup(repo_dir: &Path, src: &Path) -> SnapshotId {
    archiver::backup(
        &open(repo_dir),
        &BackupOptions::new(vec![src.to_path_buf()]),
        &Progress::default(),
    )
    .unwrap()
    .snapshot_id
    .unwrap()
}

fn forget(repo_dir: &Path, id: &SnapshotId) {
    open(repo_dir)
        .backend()
        .delete(FileType::Snapshot, &id.to_hex())
        .unwrap();
}

fn opts(now: Option<Timestamp>, grace: SignedDuration) -> PruneOptions {
    PruneOptions {
        grace,
        now,
        ..PruneOptions::default()
    }
}

fn prune_at(repo_dir: &Path, now: Timestamp) -> PruneReport {
    prune::prune(
        &open(repo_dir),
        &opts(Some(now), SignedDuration::from_hours(1)),
    )
    .unwrap()
}

fn snapshot_copy(src: &Path, to: &Path) -> PathBuf {
    copy_dir(src, to);
    to.to_path_buf()
}

#[test]
fn prune_frees_space_in_two_phases_and_keeps_every_kept_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo_dir, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    init(&repo_dir);
    make_tree(&src.join("a"), 1, 10);
    make_tree(&src.join("b"), 2, 10);
    let s1 = backup(&repo_dir, &src);
    std::fs::remove_dir_all(src.join("a")).unwrap();
    make_tree(&src.join("c"), 3, 10);
    let s2 = backup(&repo_dir, &src);
    forget(&repo_dir, &s1);

    let t0 = Timestamp::now();
    let before = pack_bytes(&open(&repo_dir));
    let r = prune_at(&repo_dir, t0);
    assert!(
        r.marked_unused.count + r.repacked.count > 0,
        "the data of the forgotten snapshot must be marked: {r:?}"
    );
    assert_eq!(
        r.deleted.count, 0,
        "nothing is deleted before the grace period"
    );
    assert!(pack_bytes(&open(&repo_dir)) >= before);
    assert!(check_errors(&open(&repo_dir)).is_empty());

    // Within the grace period: still nothing deleted.
    let r = prune_at(&repo_dir, t0 + SignedDuration::from_mins(30));
    assert_eq!(r.deleted.count, 0);
    assert!(r.waiting.count > 0, "{r:?}");

    // After it: deleted, and the kept snapshot restores byte for byte.
    let r = prune_at(&repo_dir, t0 + SignedDuration::from_hours(2));
    assert!(r.deleted.count > 0, "{r:?}");
    let after = pack_bytes(&open(&repo_dir));
    assert!(
        after < before * 3 / 4,
        "10 of 20 files were forgotten: {before} -> {after} bytes"
    );
    let repo = open(&repo_dir);
    assert!(check_errors(&repo).is_empty(), "{:?}", check_errors(&repo));
    assert_restores(&repo, &s2, &src, &src, tmp.path());

    // A fixed point: nothing more to do.
    let r = prune_at(&repo_dir, t0 + SignedDuration::from_hours(4));
    assert_eq!(
        (r.marked_unused.count, r.repacked.count, r.deleted.count),
        (0, 0, 0),
        "{r:?}"
    );
}

#[test]
fn prune_interrupted_at_any_mutation_leaves_a_clean_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let (template, src) = (tmp.path().join("template"), tmp.path().join("src"));
    init(&template);
    // s1 = {a, b} in one pack, s2 = {b, c}, s3 = {c, d}.
    make_tree(&src.join("a"), 11, 8);
    make_tree(&src.join("b"), 12, 8);
    let s1 = backup(&template, &src);
    std::fs::remove_dir_all(src.join("a")).unwrap();
    make_tree(&src.join("c"), 13, 8);
    let s2 = backup(&template, &src);
    std::fs::remove_dir_all(src.join("b")).unwrap();
    make_tree(&src.join("d"), 14, 8);
    let s3 = backup(&template, &src);
    let t0 = Timestamp::now();
    // One prune has marked and repacked; then more is forgotten, so the run
    // under test deletes, marks, repacks and rewrites the index at once.
    forget(&template, &s1);
    let r = prune_at(&template, t0);
    assert!(r.repacked.count > 0, "{r:?}");
    forget(&template, &s2);
    let t1 = t0 + SignedDuration::from_hours(2);

    let work = tmp.path().join("work");
    copy_dir(&template, &work);
    let counting = Arc::new(FaultBackend::new(&work, usize::MAX));
    let repo = Repository::open(counting.clone(), b"pw").unwrap();
    let full = prune::prune(&repo, &opts(Some(t1), SignedDuration::from_hours(1))).unwrap();
    assert!(full.deleted.count > 0 && full.index_written > 0, "{full:?}");
    let total = counting.writes.load(Ordering::SeqCst);
    assert!(
        total >= 6,
        "expected a marker, packs, index, state and deletions: {total}"
    );

    for budget in 0..total {
        copy_dir(&template, &work);
        let faulty = Arc::new(FaultBackend::new(&work, budget));
        let repo = Repository::open(faulty, b"pw").unwrap();
        let r = prune::prune(&repo, &opts(Some(t1), SignedDuration::from_hours(1)));
        drop(repo);
        // The last mutation is the marker's own removal, which cannot fail
        // the run; every other one does.
        if budget + 1 < total {
            assert!(r.is_err(), "budget {budget}: prune must report the failure");
        }
        let repo = open(&work);
        let errors = check_errors(&repo);
        assert!(errors.is_empty(), "budget {budget}: {errors:?}");
        assert_restores(&repo, &s3, &src, &src, tmp.path());

        // The next prunes finish the job.
        prune_at(&work, t1);
        prune_at(&work, t1 + SignedDuration::from_hours(2));
        let repo = open(&work);
        assert!(check_errors(&repo).is_empty(), "budget {budget}");
        assert_restores(&repo, &s3, &src, &src, tmp.path());
        let r = prune_at(&work, t1 + SignedDuration::from_hours(4));
        assert_eq!(
            r.deleted.count + r.marked_unused.count,
            0,
            "budget {budget}: {r:?}"
        );
    }
}

/// A reader that yields `data`, tells the test it started, and then waits
/// until the test lets it finish.
struct HeldReader {
    data: std::io::Cursor<Vec<u8>>,
    started: Option<crossbeam_channel::Sender<()>>,
    release: crossbeam_channel::Receiver<()>,
}

impl Read for HeldReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(s) = self.started.take() {
            let _ = s.send(());
        }
        let n = self.data.read(buf)?;
        if n == 0 {
            let _ = self.release.recv();
        }
        Ok(n)
    }
}

fn stream_backup(repo: &Repository, data: &[u8]) -> SnapshotId {
    let source = StreamSource {
        name: "x".into(),
        reader: Box::new(std::io::Cursor::new(data.to_vec())),
        finish: Box::new(|| Ok(())),
    };
    archiver::backup_stream(
        repo,
        &BackupOptions::new(vec![]),
        source,
        &Progress::default(),
    )
    .unwrap()
    .snapshot_id
    .unwrap()
}

/// Runs a backup of `data` that reads the index, then waits while `during`
/// runs, then writes its snapshot.
fn backup_across(repo_dir: &Path, data: &[u8], during: impl FnOnce()) -> SnapshotId {
    let (started_tx, started) = crossbeam_channel::bounded(1);
    let (release, release_rx) = crossbeam_channel::bounded(1);
    let repo = open(repo_dir);
    let reader = HeldReader {
        data: std::io::Cursor::new(data.to_vec()),
        started: Some(started_tx),
        release: release_rx,
    };
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            let source = StreamSource {
                name: "x".into(),
                reader: Box::new(reader),
                finish: Box::new(|| Ok(())),
            };
            archiver::backup_stream(
                &repo,
                &BackupOptions::new(vec![]),
                source,
                &Progress::default(),
            )
            .unwrap()
            .snapshot_id
            .unwrap()
        });
        started.recv().unwrap();
        during();
        release.send(()).unwrap();
        h.join().unwrap()
    })
}

fn assert_stream(repo: &Repository, id: &SnapshotId, data: &[u8]) {
    let (_, s) = repo.read_snapshot(id).unwrap();
    let tree = repo.read_tree(&s.tree).unwrap();
    let mut r = rewind_core::browse::FileReader::new(repo, &tree.nodes[0]).unwrap();
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    assert!(out == data, "snapshot {id} does not give back its data");
}

fn grace0() -> PruneOptions {
    opts(None, SignedDuration::ZERO)
}

#[test]
fn a_running_backup_that_reuses_marked_data_postpones_its_deletion() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    init(&repo_dir);
    let data = random_bytes(7, 3 << 20);
    let old = stream_backup(&open(&repo_dir), &data);
    forget(&repo_dir, &old);

    let reports = Mutex::new(Vec::new());
    let s2 = backup_across(&repo_dir, &data, || {
        // Its index was read before the data was marked, so it reuses it.
        let r1 = prune::prune(&open(&repo_dir), &grace0()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let r2 = prune::prune(&open(&repo_dir), &grace0()).unwrap();
        reports.lock().unwrap().extend([r1, r2]);
    });
    let reports = reports.into_inner().unwrap();
    assert!(reports[0].marked_unused.count > 0, "{:?}", reports[0]);
    assert_eq!(reports[1].deleted.count, 0, "{:?}", reports[1]);
    assert!(reports[1].postponed.count > 0, "{:?}", reports[1]);
    assert_eq!(reports[1].running_backups.len(), 1);

    // Its snapshot now uses the marked pack: the next prune keeps it.
    let r3 = prune::prune(&open(&repo_dir), &grace0()).unwrap();
    assert!(r3.unmarked.count > 0, "{r3:?}");
    let repo = open(&repo_dir);
    assert!(check_errors(&repo).is_empty());
    assert_stream(&repo, &s2, &data);
}

#[test]
fn without_its_running_marker_the_same_backup_would_lose_data() {
    // The control for the test above: it shows that the marker is what
    // protects the backup (so that test can fail).
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    init(&repo_dir);
    let data = random_bytes(7, 3 << 20);
    let old = stream_backup(&open(&repo_dir), &data);
    forget(&repo_dir, &old);
    backup_across(&repo_dir, &data, || {
        let repo = open(&repo_dir);
        for f in repo.backend().list(FileType::Running).unwrap() {
            repo.backend().delete(FileType::Running, &f.name).unwrap();
        }
        prune::prune(&repo, &grace0()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let r = prune::prune(&open(&repo_dir), &grace0()).unwrap();
        assert!(r.deleted.count > 0, "{r:?}");
    });
    assert!(!check_errors(&open(&repo_dir)).is_empty());
}

#[test]
fn a_backup_that_starts_after_a_mark_stores_the_data_again() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    init(&repo_dir);
    let data = random_bytes(9, 2 << 20);
    let old = stream_backup(&open(&repo_dir), &data);
    forget(&repo_dir, &old);
    let r = prune::prune(&open(&repo_dir), &grace0()).unwrap();
    assert!(r.marked_unused.count > 0);

    let repo = open(&repo_dir);
    let s2 = stream_backup(&repo, &data);
    let (_, snap) = repo.read_snapshot(&s2).unwrap();
    assert!(
        snap.summary.bytes_added_raw >= data.len() as u64,
        "marked data must not be reused: {:?}",
        snap.summary
    );
    let r = prune::prune(&open(&repo_dir), &grace0()).unwrap();
    assert!(r.deleted.count > 0, "{r:?}");
    let repo = open(&repo_dir);
    assert!(check_errors(&repo).is_empty());
    assert_stream(&repo, &s2, &data);
}

#[test]
fn backups_before_during_and_after_prunes_all_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo_dir, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    init(&repo_dir);
    make_tree(&src.join("d0"), 100, 6);
    let first = backup(&repo_dir, &src);
    let copies = Mutex::new(vec![(
        first,
        snapshot_copy(&src, &tmp.path().join("copy0")),
    )]);

    std::thread::scope(|s| {
        let backups = s.spawn(|| {
            for i in 1..=6u64 {
                make_tree(&src.join(format!("d{i}")), 100 + i, 6);
                if i >= 2 {
                    std::fs::remove_dir_all(src.join(format!("d{}", i - 2))).unwrap();
                }
                let copy = snapshot_copy(&src, &tmp.path().join(format!("copy{i}")));
                let id = backup(&repo_dir, &src);
                let mut c = copies.lock().unwrap();
                c.push((id, copy));
                // Keep the three newest: the rest is garbage for prune.
                if c.len() > 3 {
                    let (old, _) = c.remove(0);
                    forget(&repo_dir, &old);
                }
            }
        });
        let mut prunes = 0;
        while !backups.is_finished() {
            prune::prune(&open(&repo_dir), &grace0()).unwrap();
            prunes += 1;
        }
        backups.join().unwrap();
        assert!(prunes >= 2, "prunes must overlap the backups ({prunes})");
    });
    // And after: two more rounds delete what the last ones marked.
    for _ in 0..2 {
        prune::prune(&open(&repo_dir), &grace0()).unwrap();
    }
    let repo = open(&repo_dir);
    assert!(check_errors(&repo).is_empty(), "{:?}", check_errors(&repo));
    let copies = copies.into_inner().unwrap();
    assert_eq!(repo.snapshots().unwrap().len(), copies.len());
    for (id, copy) in &copies {
        assert_restores(&repo, id, &src, copy, tmp.path());
    }
}

/// Plants a running marker sealed with the key (as a client holding the
/// password can) and returns its file.
fn plant_marker(repo_dir: &Path, start: Timestamp, refreshed: Timestamp) -> PathBuf {
    use rewind_core::format::prune::{RunningKind, RunningMarker};
    use rewind_core::format::RepoFile;
    let repo = open(repo_dir);
    let m = RunningMarker {
        version: 1,
        kind: RunningKind::Backup,
        hostname: "elsewhere".into(),
        pid: 4242,
        start,
        refreshed,
        pid_namespace: None,
    };
    let (name, bytes) = m.seal(repo.crypto());
    repo.backend()
        .write(FileType::Running, &name.to_hex(), &bytes)
        .unwrap();
    repo_dir.join("running").join(name.to_hex())
}

fn set_age(file: &Path, age: std::time::Duration) {
    let t = std::time::SystemTime::now() - age;
    filetime::set_file_mtime(file, filetime::FileTime::from_system_time(t)).unwrap();
}

#[test]
fn a_marker_claiming_a_far_future_refresh_blocks_prune_now_only_while_its_file_is_fresh() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    init(&repo_dir);
    let data = random_bytes(3, 1 << 20);
    let old = stream_backup(&open(&repo_dir), &data);
    let kept = stream_backup(&open(&repo_dir), &random_bytes(4, 1 << 20));
    forget(&repo_dir, &old);
    let year = Timestamp::now() + SignedDuration::from_hours(24 * 365);
    let marker = plant_marker(&repo_dir, year, year);
    let now = || PruneOptions {
        delete_now: true,
        ..PruneOptions::default()
    };

    // Fresh by the storage's clock: it may be a live backup's (fail safe).
    let e = prune::prune(&open(&repo_dir), &now()).unwrap_err();
    assert!(e.to_string().contains("a backup runs"), "{e}");

    // Older than STALE_AFTER by the storage's clock: its claim no longer counts.
    set_age(&marker, std::time::Duration::from_secs(31 * 60));
    let before = pack_bytes(&open(&repo_dir));
    let r = prune::prune(&open(&repo_dir), &now()).unwrap();
    assert!(r.deleted.count > 0, "{r:?}");
    assert!(r.running_backups.is_empty(), "{r:?}");
    let repo = open(&repo_dir);
    assert!(pack_bytes(&repo) < before);
    assert!(check_errors(&repo).is_empty());
    assert_stream(&repo, &kept, &random_bytes(4, 1 << 20));

    // The same kind of claim a little ahead (within the clock skew) is an
    // honest marker's: judged by its refresh time as before, whatever the
    // file's age.
    let soon = Timestamp::now() + SignedDuration::from_mins(5);
    let honest = plant_marker(&repo_dir, soon, soon);
    set_age(&honest, std::time::Duration::from_secs(3600));
    let e = prune::prune(&open(&repo_dir), &now()).unwrap_err();
    assert!(e.to_string().contains("a backup runs"), "{e}");
}

#[test]
fn a_sealed_snapshot_whose_root_tree_does_not_exist_is_refused_or_explicitly_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    init(&repo_dir);
    let old = stream_backup(&open(&repo_dir), &random_bytes(5, 1 << 20));
    let kept_data = random_bytes(6, 1 << 20);
    let kept = stream_backup(&open(&repo_dir), &kept_data);
    forget(&repo_dir, &old);
    // Sealed with the key, valid in form, but its tree is nowhere.
    let repo = open(&repo_dir);
    let (_, mut bogus) = repo.read_snapshot(&kept).unwrap();
    bogus.tree = repo.crypto().blob_id(b"no such tree");
    bogus.time = Timestamp::now() + SignedDuration::from_hours(1);
    let bogus_id = repo.write_file(&bogus).unwrap();
    let now = |ignore| PruneOptions {
        delete_now: true,
        ignore_damaged_snapshots: ignore,
        ..PruneOptions::default()
    };

    let e = prune::prune(&open(&repo_dir), &now(false)).unwrap_err();
    assert_eq!(
        e.remedy(),
        Some(rewind_core::error::Remedy::PruneIgnoringDamagedSnapshots),
        "{e}"
    );
    let before = pack_bytes(&open(&repo_dir));
    let r = prune::prune(&open(&repo_dir), &now(true)).unwrap();
    assert_eq!(r.snapshots, 1, "{r:?}");
    assert_eq!(r.ignored_snapshots.len(), 1, "{r:?}");
    assert_eq!(r.ignored_snapshots[0].0, bogus_id.to_hex());
    assert!(r.deleted.count > 0, "{r:?}");
    let repo = open(&repo_dir);
    assert!(pack_bytes(&repo) < before);
    assert_stream(&repo, &kept, &kept_data);
}
