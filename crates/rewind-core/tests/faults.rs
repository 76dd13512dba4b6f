//! Fault injection: a backend that fails its Nth mutating call, for every N
//! of a backup. After each failure the repository must open, check clean
//! (unindexed packs allowed), restore every earlier snapshot byte for byte,
//! and accept the next backup. docs/DESIGN.md, "Write ordering".

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rewind_core::archiver::{self, BackupOptions, Progress};
use rewind_core::backend::{Backend, FileInfo, FileType, LocalBackend, WriteOutcome};
use rewind_core::check::{self, CheckOptions};
use rewind_core::crypto::KdfParams;
use rewind_core::repository::{KeyOwner, Repository};
use rewind_core::restorer::{self, RestoreOptions, RestoreStart};
use rewind_core::{Error, Result};

const FAST_KDF: KdfParams = KdfParams {
    m_cost_kib: 256,
    t_cost: 1,
    p_cost: 1,
};

/// Fails every write after the first `budget` ones, as a full disk or a
/// dead server would; reads keep working.
#[derive(Debug)]
struct FaultBackend {
    inner: LocalBackend,
    budget: AtomicUsize,
    writes: AtomicUsize,
}

impl FaultBackend {
    fn new(root: &Path, budget: usize) -> Self {
        FaultBackend {
            inner: LocalBackend::new(root),
            budget: AtomicUsize::new(budget),
            writes: AtomicUsize::new(0),
        }
    }
}

impl Backend for FaultBackend {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> Result<()> {
        self.inner.create()
    }
    fn list(&self, t: FileType) -> Result<Vec<FileInfo>> {
        self.inner.list(t)
    }
    fn read(&self, t: FileType, name: &str) -> Result<Vec<u8>> {
        self.inner.read(t, name)
    }
    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
        self.inner.read_range(t, name, offset, len)
    }
    fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<WriteOutcome> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst);
        if n >= self.budget.load(Ordering::SeqCst) {
            return Err(Error::io(
                format!("write {name}"),
                std::io::Error::from_raw_os_error(28),
            ));
        }
        self.inner.write(t, name, data)
    }
    fn delete(&self, t: FileType, name: &str) -> Result<()> {
        self.inner.delete(t, name)
    }
}

fn make_tree(dir: &Path, seed: u64, files: usize) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in 0..files {
        let sub = dir.join(format!("d{}", i % 4));
        std::fs::create_dir_all(&sub).unwrap();
        // Sizes from a few bytes to ~1 MiB, random content (incompressible).
        let len = (i * 97_331) % (1 << 20) + 10;
        let mut data = vec![0u8; len];
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        std::fs::write(sub.join(format!("f{i}")), data).unwrap();
    }
}

fn open(root: &Path) -> Repository {
    Repository::open(Arc::new(LocalBackend::new(root)), b"pw").unwrap()
}

fn assert_restores(
    repo: &Repository,
    snap: &rewind_core::id::SnapshotId,
    src: &Path,
    expected: &Path,
    scratch: &Path,
) {
    let (_, s) = repo.read_snapshot(snap).unwrap();
    let target = scratch.join(format!("restore-{}", snap.short()));
    let sub = restorer::find_node(repo, &s.tree, src).unwrap().unwrap();
    let rewind_core::format::tree::NodeKind::Dir { subtree } = sub.kind else {
        panic!("not a dir")
    };
    let opts = RestoreOptions {
        target: target.clone(),
        ..Default::default()
    };
    let stats = restorer::restore(
        repo,
        RestoreStart::Tree {
            tree: subtree,
            snap_path: src.to_path_buf(),
        },
        &opts,
        &Progress::default(),
    )
    .unwrap();
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    let out = std::process::Command::new("diff")
        .arg("-r")
        .arg(expected)
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restore differs: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::remove_dir_all(&target).unwrap();
}

#[test]
fn a_backup_failing_at_any_write_leaves_the_repository_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    let src: PathBuf = tmp.path().join("src");
    make_tree(&src, 1, 24);
    Repository::init(
        Arc::new(LocalBackend::new(&repo_dir)),
        b"pw",
        FAST_KDF,
        &KeyOwner::default(),
    )
    .unwrap();
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

    for budget in 0..total {
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
