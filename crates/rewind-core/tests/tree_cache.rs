//! The local cache of a remote repository's tree blobs: filled by reads,
//! used instead of the pack, and never trusted: a damaged or swapped entry
//! fails authentication for its id and is fetched from the pack again.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use rewind_core::archiver::{self, BackupOptions, Progress};
use rewind_core::backend::cache::MetaCache;
use rewind_core::backend::{LocalBackend, Verified};
use rewind_core::format::tree::NodeKind;
use rewind_core::repository::Repository;

fn cached(repo_dir: &Path, cache: &Path) -> Repository {
    let backend = Verified::with_cache(
        LocalBackend::new(repo_dir),
        MetaCache::new(cache.to_path_buf(), 1 << 30),
    );
    Repository::open(Arc::new(backend), b"pw").unwrap()
}

fn packs(repo_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(repo_dir.join("data")).unwrap().flatten() {
        for f in std::fs::read_dir(d.path()).unwrap().flatten() {
            out.push(f.path());
        }
    }
    out
}

#[test]
fn trees_come_from_the_cache_and_a_bad_entry_is_never_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo_dir, cache, src) = (
        tmp.path().join("repo"),
        tmp.path().join("cache"),
        tmp.path().join("src"),
    );
    make_tree(&src, 3, 10);
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/f"), b"x").unwrap();
    init(&repo_dir);
    let id = archiver::backup(
        &open(&repo_dir),
        &BackupOptions::new(vec![src.clone()]),
        &Progress::default(),
    )
    .unwrap()
    .snapshot_id
    .unwrap();
    let repo = cached(&repo_dir, &cache);
    let (_, snap) = repo.read_snapshot(&id).unwrap();
    let root = repo.read_tree(&snap.tree).unwrap();
    let entry = cache.join("trees").join(snap.tree.to_hex());
    assert!(entry.is_file(), "a tree read is cached");

    // The packs gone: the trees still read, from the cache.
    let saved = tmp.path().join("saved");
    std::fs::create_dir_all(&saved).unwrap();
    let all = packs(&repo_dir);
    for p in &all {
        std::fs::rename(p, saved.join(p.file_name().unwrap())).unwrap();
    }
    let again = cached(&repo_dir, &cache);
    assert_eq!(again.read_tree(&snap.tree).unwrap(), root);

    // A damaged entry: not trusted (it fails authentication), removed.
    let mut bytes = std::fs::read(&entry).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&entry, &bytes).unwrap();
    let again = cached(&repo_dir, &cache);
    assert!(
        again.read_tree(&snap.tree).is_err(),
        "a damaged cache entry was used"
    );
    assert!(!entry.exists(), "the damaged entry is forgotten");

    // The packs back: read from the pack, cached again.
    for p in &all {
        std::fs::rename(saved.join(p.file_name().unwrap()), p).unwrap();
    }
    assert_eq!(
        cached(&repo_dir, &cache).read_tree(&snap.tree).unwrap(),
        root
    );
    assert!(entry.is_file());

    // Another tree's sealed bytes under this tree's id: they are sealed
    // for their own id and do not open for this one.
    let sub = root
        .nodes
        .iter()
        .find_map(|n| match &n.kind {
            NodeKind::Dir { subtree } => Some(*subtree),
            _ => None,
        })
        .expect("a folder below the root");
    let repo = cached(&repo_dir, &cache);
    repo.read_tree(&sub).unwrap();
    std::fs::copy(cache.join("trees").join(sub.to_hex()), &entry).unwrap();
    assert_eq!(
        cached(&repo_dir, &cache).read_tree(&snap.tree).unwrap(),
        root
    );
}
