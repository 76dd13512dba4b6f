//! Helpers shared by the library's integration tests: a fast KDF, a
//! backend that fails after a budget of mutations, tree generators and a
//! byte-exact restore check.

#![allow(dead_code)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rewind_core::archiver::Progress;
use rewind_core::backend::{Backend, FileInfo, FileType, LocalBackend, Staged, WriteOutcome};
use rewind_core::crypto::KdfParams;
use rewind_core::format::index::IndexFile;
use rewind_core::format::RepoFile;
use rewind_core::id::IndexId;
use rewind_core::repository::Repository;
use rewind_core::restorer::{self, Overwrite, RestoreOptions, RestoreStart};
use rewind_core::{Error, Result};

pub const FAST_KDF: KdfParams = KdfParams {
    m_cost_kib: 256,
    t_cost: 1,
    p_cost: 1,
};

/// Fails every write and delete after the first `budget` ones, as a
/// crash, a full disk or a dead server would; reads keep working.
#[derive(Debug)]
pub struct FaultBackend {
    pub inner: LocalBackend,
    pub budget: AtomicUsize,
    /// Mutations (writes, deletes, commits of staged files) attempted.
    pub writes: AtomicUsize,
    /// Packs are staged as the local backend stages them (a commit counts
    /// as a write); otherwise gathered in memory and written.
    pub staging: bool,
    /// Bytes that staged files may take in all before their writes fail
    /// with ENOSPC (a disk that fills in the middle of a pack).
    pub staged_room: AtomicUsize,
}

impl FaultBackend {
    pub fn new(root: &Path, budget: usize) -> Self {
        FaultBackend {
            inner: LocalBackend::new(root),
            budget: AtomicUsize::new(budget),
            writes: AtomicUsize::new(0),
            staging: false,
            staged_room: AtomicUsize::new(usize::MAX),
        }
    }

    /// The same, staging packs.
    pub fn staging(root: &Path, budget: usize) -> Self {
        FaultBackend {
            staging: true,
            ..FaultBackend::new(root, budget)
        }
    }

    fn mutation(&self, what: &str, errno: i32) -> Result<()> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst);
        if n >= self.budget.load(Ordering::SeqCst) {
            return Err(Error::io(
                what.to_string(),
                std::io::Error::from_raw_os_error(errno),
            ));
        }
        Ok(())
    }
}

/// A staged file of a [`FaultBackend`].
struct FaultStaged<'a> {
    backend: &'a FaultBackend,
    inner: Box<dyn Staged + 'a>,
}

impl std::io::Write for FaultStaged<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = &self.backend.staged_room;
        if room
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| {
                r.checked_sub(buf.len())
            })
            .is_err()
        {
            return Err(std::io::Error::from_raw_os_error(28));
        }
        self.inner.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Staged for FaultStaged<'_> {
    fn commit(self: Box<Self>, name: &str) -> Result<WriteOutcome> {
        self.backend.mutation(&format!("commit {name}"), 28)?;
        self.inner.commit(name)
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
        self.mutation(&format!("write {name}"), 28)?;
        self.inner.write(t, name, data)
    }
    fn delete(&self, t: FileType, name: &str) -> Result<()> {
        self.mutation(&format!("delete {name}"), 5)?;
        self.inner.delete(t, name)
    }
    fn stage(&self, t: FileType) -> Result<Option<Box<dyn Staged + '_>>> {
        if !self.staging {
            return Ok(None);
        }
        Ok(self.inner.stage(t)?.map(|inner| {
            Box::new(FaultStaged {
                backend: self,
                inner,
            }) as Box<dyn Staged + '_>
        }))
    }
}

/// `len` bytes of a xorshift stream from `seed` (incompressible).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn make_tree(dir: &Path, seed: u64, files: usize) {
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

/// A new repository at `dir` (password "pw", the fast KDF).
pub fn try_init(dir: &Path) -> Result<Repository> {
    Repository::init(
        Arc::new(LocalBackend::new(dir)),
        b"pw",
        FAST_KDF,
        &rewind_core::repository::KeyOwner::default(),
    )
}

/// [`try_init`], which must succeed.
pub fn init(dir: &Path) -> Repository {
    try_init(dir).unwrap()
}

pub fn open(root: &Path) -> Repository {
    Repository::open(Arc::new(LocalBackend::new(root)), b"pw").unwrap()
}

pub fn assert_restores(
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

/// Restores the folder `src` of snapshot `snap` into `target`.
pub fn restore_into(
    repo: &Repository,
    snap: &rewind_core::id::SnapshotId,
    src: &Path,
    target: &Path,
    overwrite: Overwrite,
) -> restorer::RestoreStats {
    let (_, s) = repo.read_snapshot(snap).unwrap();
    let node = restorer::find_node(repo, &s.tree, src).unwrap().unwrap();
    let rewind_core::format::tree::NodeKind::Dir { subtree } = node.kind else {
        panic!("not a dir")
    };
    restorer::restore(
        repo,
        RestoreStart::Tree {
            tree: subtree,
            snap_path: src.to_path_buf(),
        },
        &RestoreOptions {
            target: target.to_path_buf(),
            overwrite,
            ..Default::default()
        },
        &Progress::default(),
    )
    .unwrap()
}

/// Copies a directory tree (`cp -a`).
pub fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    assert!(std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success());
}

/// Runs check with --read-data and returns its errors.
pub fn check_errors(repo: &Repository) -> Vec<String> {
    rewind_core::check::check(
        repo,
        &rewind_core::check::CheckOptions {
            read_data: true,
            ..Default::default()
        },
    )
    .unwrap()
    .errors
}

/// Stored bytes of all packs.
pub fn pack_bytes(repo: &Repository) -> u64 {
    repo.backend()
        .list(FileType::Pack)
        .unwrap()
        .iter()
        .map(|f| f.size)
        .sum()
}

/// Seals `file` again and again (each seal has a fresh nonce, so a new
/// name) until its name sorts after every index file there, writes it and
/// returns its id: readers merge index files in name order, so the file
/// written is the copy they try first.
pub fn write_last(repo: &Repository, file: &IndexFile) -> IndexId {
    let last = repo
        .backend()
        .list(FileType::Index)
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .max()
        .unwrap_or_default();
    for _ in 0..100_000 {
        let (id, bytes) = file.seal(repo.crypto());
        if id.to_hex() > last {
            repo.backend()
                .write(FileType::Index, &id.to_hex(), &bytes)
                .unwrap();
            return id;
        }
    }
    panic!("no name sorted after {last}");
}

/// Plants what a client holding the key can write: every data blob listed
/// again, 4 KiB longer, in a pack that does not exist (`ee…`), in an index
/// file whose name makes it the copy readers try first. Returns how many
/// blobs it lists.
pub fn plant_longer_copies(repo_dir: &Path) -> usize {
    use rewind_core::format::index::{IndexPack, VERSION};
    use rewind_core::format::pack::{BlobKind, PackedBlob};
    use rewind_core::id::{Hash, PackId};
    let repo = open(repo_dir);
    let lies: Vec<PackedBlob> = repo
        .index()
        .unwrap()
        .entries()
        .filter(|(_, b)| b.kind == BlobKind::Data)
        .map(|(_, b)| PackedBlob {
            raw_length: b.raw_length + 4096,
            ..b
        })
        .collect();
    let n = lies.len();
    write_last(
        &repo,
        &IndexFile {
            version: VERSION,
            supersedes: Vec::new(),
            packs: vec![IndexPack {
                id: PackId(Hash([0xee; 32])),
                size: 1 << 30,
                blobs: lies,
            }],
        },
    );
    n
}
