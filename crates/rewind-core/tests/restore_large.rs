//! A large file is restored by several threads, each writing its own part
//! at offsets taken from the index: holes, a chunk repeated at several
//! places, and a damaged blob in the middle must come out as they would
//! from a restore in order.

mod common;

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use common::*;
use rewind_core::archiver::{self, BackupOptions, Progress};
use rewind_core::format::tree::NodeKind;
use rewind_core::id::SnapshotId;
use rewind_core::repository::Repository;
use rewind_core::restorer::{self, Overwrite};

const MIB: u64 = 1 << 20;

/// `big.img`: 72 MiB with two holes and data between them, one MiB of it
/// repeated at three places (the same chunks, in different parts);
/// `dense.bin`: 40 MiB of data; `small.txt`.
fn large_tree(src: &Path) {
    std::fs::create_dir_all(src).unwrap();
    let f = std::fs::File::create(src.join("big.img")).unwrap();
    f.write_all_at(&random_bytes(1, (20 * MIB) as usize), 0)
        .unwrap();
    // A hole from 20 to 36 MiB.
    f.write_all_at(&random_bytes(2, (24 * MIB) as usize), 36 * MIB)
        .unwrap();
    let repeated = random_bytes(3, MIB as usize);
    for at in [3 * MIB, 41 * MIB, 59 * MIB] {
        f.write_all_at(&repeated, at).unwrap();
    }
    // A hole from 60 MiB to the end.
    f.set_len(72 * MIB).unwrap();
    std::fs::write(src.join("dense.bin"), random_bytes(4, (40 * MIB) as usize)).unwrap();
    std::fs::write(src.join("small.txt"), b"small and whole").unwrap();
}

/// A repository at `tmp/repo` with one backup of [`large_tree`] at
/// `tmp/src`.
struct Setup {
    tmp: tempfile::TempDir,
    src: PathBuf,
    repo_dir: PathBuf,
    repo: Repository,
    snap: SnapshotId,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    large_tree(&src);
    let repo_dir = tmp.path().join("repo");
    let repo = init(&repo_dir);
    let snap = backup(&repo, &src);
    Setup {
        tmp,
        src,
        repo_dir,
        repo,
        snap,
    }
}

fn backup(repo: &Repository, src: &Path) -> SnapshotId {
    archiver::backup(
        repo,
        &BackupOptions::new(vec![src.to_path_buf()]),
        &Progress::default(),
    )
    .unwrap()
    .snapshot_id
    .unwrap()
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

fn temporaries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".rewind-tmp-"))
        .collect()
}

#[test]
fn a_large_sparse_file_is_restored_by_parts_exactly() {
    let Setup {
        tmp,
        src,
        repo,
        snap,
        ..
    } = setup();
    let target = tmp.path().join("out");
    let stats = restore_into(&repo, &snap, &src, &target, Overwrite::IfChanged);
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    assert_eq!(stats.files_restored, 3);
    for name in ["big.img", "dense.bin", "small.txt"] {
        assert!(same_bytes(&src.join(name), &target.join(name)), "{name}");
    }
    let md = std::fs::metadata(target.join("big.img")).unwrap();
    assert_eq!(md.len(), 72 * MIB);
    // 44 MiB of data: the 28 MiB of holes are not written.
    assert!(
        md.blocks() * 512 < 50 * MIB,
        "{} bytes allocated",
        md.blocks() * 512
    );
    assert!(temporaries(&target).is_empty());
}

#[test]
fn a_damaged_blob_in_the_middle_of_a_large_file_fails_that_file_alone() {
    let Setup {
        tmp,
        src,
        repo_dir,
        repo,
        snap,
    } = setup();

    // A chunk in the middle of dense.bin: one byte of it changed in its pack.
    let (_, s) = repo.read_snapshot(&snap).unwrap();
    let node = restorer::find_node(&repo, &s.tree, &src.join("dense.bin"))
        .unwrap()
        .unwrap();
    let NodeKind::File { content, .. } = node.kind else {
        panic!("not a file")
    };
    assert!(content.len() > 8, "{} chunks", content.len());
    let (pack, entry) = repo.locate(&content[content.len() / 2]).unwrap().unwrap();
    let hex = pack.to_hex();
    let path = repo_dir.join("data").join(&hex[..2]).join(&hex);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[entry.offset as usize + entry.length as usize / 2] ^= 1;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(&path, bytes).unwrap();

    // A file of that name is in the target already: a failed restore
    // leaves it as it was.
    let target = tmp.path().join("out");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("dense.bin"), b"the user's own").unwrap();
    let stats = restore_into(&open(&repo_dir), &snap, &src, &target, Overwrite::IfChanged);
    assert_eq!(stats.files_failed, 1, "{:?}", stats.errors);
    assert_eq!(stats.errors.len(), 1, "{:?}", stats.errors);
    let said = format!("{:?}", stats.errors[0]);
    assert!(said.contains("dense.bin"), "{said}");
    assert_eq!(
        std::fs::read(target.join("dense.bin")).unwrap(),
        b"the user's own"
    );
    // The others, including the other large file, are whole.
    assert!(same_bytes(&src.join("big.img"), &target.join("big.img")));
    assert!(same_bytes(
        &src.join("small.txt"),
        &target.join("small.txt")
    ));
    assert!(
        temporaries(&target).is_empty(),
        "{:?}",
        temporaries(&target)
    );
}

#[test]
fn an_index_file_that_lies_about_lengths_cannot_misplace_a_large_file() {
    // What a client holding the key can write: every data blob listed
    // again, 4 KiB longer, in a pack that does not exist, under a name
    // that makes it the copy tried first. The parts of a large file are
    // placed by those lengths; the good copies read instead are not that
    // long, so the file must be written again in order, not with its
    // blobs at the wrong places.
    let Setup {
        tmp,
        src,
        repo_dir,
        snap,
        ..
    } = setup();
    let planted = plant_longer_copies(&repo_dir);
    assert!(planted > 20, "{planted} data blobs");
    let repo = open(&repo_dir);
    let target = tmp.path().join("out");
    let stats = restore_into(&repo, &snap, &src, &target, Overwrite::IfChanged);
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    for name in ["big.img", "dense.bin", "small.txt"] {
        assert!(same_bytes(&src.join(name), &target.join(name)), "{name}");
    }
    assert!(temporaries(&target).is_empty());
}
