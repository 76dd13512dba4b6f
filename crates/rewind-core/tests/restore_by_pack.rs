//! Restore from a backend that says it is remote: packs are read in spans,
//! no byte twice, and their blobs handed to every file that needs them. Checked against the
//! real local backend (wrapped), with duplicates, holes, empty files, and
//! damaged and missing packs.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::*;
use rewind_core::archiver::{self, BackupOptions, Progress};
use rewind_core::backend::{Backend, FileInfo, FileType, LocalBackend, WriteOutcome};
use rewind_core::id::SnapshotId;
use rewind_core::repository::Repository;
use rewind_core::restorer::Overwrite;
use rewind_core::Result;

/// The local backend, claiming to be remote, noting the pack reads:
/// offset and length, by pack (a whole read as offset 0, length MAX).
#[derive(Debug)]
struct Remote {
    inner: LocalBackend,
    pack_reads: Mutex<HashMap<String, Vec<(u64, u32)>>>,
}

impl Backend for Remote {
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
        if t == FileType::Pack {
            self.pack_reads
                .lock()
                .unwrap()
                .entry(name.into())
                .or_default()
                .push((0, u32::MAX));
        }
        self.inner.read(t, name)
    }
    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
        if t == FileType::Pack {
            self.pack_reads
                .lock()
                .unwrap()
                .entry(name.into())
                .or_default()
                .push((offset, len));
        }
        self.inner.read_range(t, name, offset, len)
    }
    fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<WriteOutcome> {
        self.inner.write(t, name, data)
    }
    fn delete(&self, t: FileType, name: &str) -> Result<()> {
        self.inner.delete(t, name)
    }
    fn connections(&self) -> usize {
        4
    }
    fn is_remote(&self) -> bool {
        true
    }
}

fn remote(root: &Path) -> (Arc<Remote>, Repository) {
    let b = Arc::new(Remote {
        inner: LocalBackend::new(root),
        pack_reads: Mutex::new(HashMap::new()),
    });
    let repo = Repository::open(b.clone(), b"pw").unwrap();
    (b, repo)
}

/// A tree with what makes pack-by-pack placement tricky.
fn tricky_tree(src: &Path) {
    make_tree(&src.join("random"), 5, 40);
    let block: Vec<u8> = (0..700_000u32).map(|i| (i * 7 % 251) as u8).collect();
    // The same content in two files, and twice within one file.
    std::fs::write(src.join("copy1"), &block).unwrap();
    std::fs::write(src.join("copy2"), &block).unwrap();
    std::fs::write(src.join("twice"), [&block[..], &block[..]].concat()).unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    // A file in many spans of several packs, written by several threads.
    std::fs::write(src.join("large"), random_bytes(18, 12_600_000)).unwrap();
    // A sparse file: data, a hole, data, a hole at the end.
    let f = std::fs::File::create(src.join("sparse")).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&block[..100_000], 0).unwrap();
    f.write_all_at(&block[..50_000], 8 << 20).unwrap();
    f.set_len(16 << 20).unwrap();
}

fn backup(repo_dir: &Path, src: &Path) -> SnapshotId {
    init(repo_dir);
    archiver::backup(
        &open(repo_dir),
        &BackupOptions::new(vec![src.to_path_buf()]),
        &Progress::default(),
    )
    .unwrap()
    .snapshot_id
    .unwrap()
}

fn diff(a: &Path, b: &Path) -> String {
    let out = std::process::Command::new("diff")
        .arg("-r")
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn temporaries(dir: &Path) -> Vec<String> {
    walk(dir)
        .into_iter()
        .filter(|n| n.contains(".rewind-tmp-"))
        .collect()
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        out.push(e.path().display().to_string());
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        }
    }
    out
}

#[test]
fn no_pack_byte_is_read_twice_and_everything_lands_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    tricky_tree(&src);
    let repo_dir = tmp.path().join("repo");
    let snap = backup(&repo_dir, &src);
    let (b, repo) = remote(&repo_dir);
    let target = tmp.path().join("out");
    let stats = restore_into(&repo, &snap, &src, &target, Overwrite::IfChanged);
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    assert_eq!(diff(&src, &target), "");
    // Holes stay holes.
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(target.join("sparse")).unwrap();
    assert_eq!(md.len(), 16 << 20);
    assert!(md.blocks() * 512 < 1 << 20, "{} blocks", md.blocks());
    // mtimes restored (metadata applied after the content).
    assert_eq!(
        std::fs::metadata(src.join("copy1")).unwrap().mtime(),
        std::fs::metadata(target.join("copy1")).unwrap().mtime()
    );
    // Tree packs are read by the planner, blob by blob; data packs once.
    let index = repo.index().unwrap();
    let tree_packs: Vec<String> = index
        .blobs()
        .filter(|(_, e)| e.kind == rewind_core::format::pack::BlobKind::Tree)
        .map(|(_, e)| index.pack_id(&e).to_hex())
        .collect();
    let reads = b.pack_reads.lock().unwrap().clone();
    let data_reads: Vec<_> = reads
        .iter()
        .filter(|(p, _)| !tree_packs.contains(p))
        .collect();
    assert!(data_reads.len() >= 2, "{reads:?}");
    for (pack, r) in &data_reads {
        assert_read_once(pack, r);
    }
    assert!(temporaries(&target).is_empty());

    // Again over the result: everything is skipped, nothing is read.
    b.pack_reads.lock().unwrap().clear();
    let stats = restore_into(&repo, &snap, &src, &target, Overwrite::IfChanged);
    assert_eq!(stats.files_restored, 0);
    assert!(b
        .pack_reads
        .lock()
        .unwrap()
        .keys()
        .all(|p| tree_packs.contains(p)));
    b.pack_reads.lock().unwrap().clear();
    // --overwrite always rewrites every file, still one read per pack.
    let stats = restore_into(&repo, &snap, &src, &target, Overwrite::Always);
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    assert!(stats.files_restored > 40);
    assert_eq!(diff(&src, &target), "");
    let reads = b.pack_reads.lock().unwrap().clone();
    for (pack, r) in reads.iter().filter(|(p, _)| !tree_packs.contains(p)) {
        assert_read_once(pack, r);
    }
}

/// No byte of a data pack is read twice (the reads are spans of at most
/// 4 MiB and the blob that crosses the limit, at most 1 MiB and its seal,
/// so a pack may take several), and no pack is read whole.
fn assert_read_once(pack: &str, reads: &[(u64, u32)]) {
    let mut r = reads.to_vec();
    r.sort();
    for w in r.windows(2) {
        assert!(
            w[0].0 + u64::from(w[0].1) <= w[1].0,
            "data pack {pack}: reads overlap: {r:?}"
        );
    }
    assert!(
        r.iter().all(|(_, len)| *len <= (5 << 20) + 4096),
        "{pack}: {r:?}"
    );
}

#[test]
fn a_damaged_or_missing_pack_fails_only_the_files_that_need_it() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    tricky_tree(&src);
    let repo_dir = tmp.path().join("repo");
    let snap = backup(&repo_dir, &src);
    let (b, repo) = remote(&repo_dir);
    let mut packs = b.list(FileType::Pack).unwrap();
    packs.sort_by_key(|p| p.size);
    // Damage the largest data pack (a tree pack is small), drop another.
    let damaged = packs.last().unwrap().name.clone();
    let path = repo_dir.join("data").join(&damaged[..2]).join(&damaged);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();

    let target = tmp.path().join("out");
    let stats = restore_into(&repo, &snap, &src, &target, Overwrite::IfChanged);
    assert!(!stats.errors.is_empty(), "damage went unnoticed");
    for e in &stats.errors {
        assert!(
            !target.join(&e.path).exists(),
            "{} left behind",
            e.path.display()
        );
        assert!(
            e.message.contains(&damaged) || e.message.contains("authentication"),
            "{}: {}",
            e.path.display(),
            e.message
        );
    }
    // Every file that did not fail is exact; no temporaries are left.
    let failed: Vec<_> = stats.errors.iter().map(|e| e.path.clone()).collect();
    for f in walk(&src) {
        let rel = Path::new(&f).strip_prefix(&src).unwrap().to_path_buf();
        if failed.contains(&rel) || Path::new(&f).is_dir() {
            continue;
        }
        assert_eq!(
            std::fs::read(&f).unwrap(),
            std::fs::read(target.join(&rel)).unwrap(),
            "{}",
            rel.display()
        );
    }
    assert!(
        temporaries(&target).is_empty(),
        "{:?}",
        temporaries(&target)
    );

    // A pack that is gone: the same, named.
    std::fs::remove_file(&path).unwrap();
    let target = tmp.path().join("out2");
    let stats = restore_into(&repo, &snap, &src, &target, Overwrite::IfChanged);
    assert!(!stats.errors.is_empty());
    assert!(
        stats
            .errors
            .iter()
            .all(|e| e.message.contains(&damaged[..8])),
        "{:?}",
        stats.errors
    );
    assert!(temporaries(&target).is_empty());
}

#[test]
fn an_index_file_that_lies_about_lengths_still_restores_every_file_exactly() {
    // What a client holding the key can write: every data blob listed
    // again, 4 KiB longer, in a pack that does not exist, under a name that
    // makes it the copy tried first. Placed pack by pack by those lengths,
    // each blob is then read from its good copy, which is not that long:
    // the files concerned are written again in order, not left failed and
    // not written with their blobs at the wrong places.
    let tmp = tempfile::tempdir().unwrap();
    let (src, repo_dir) = (tmp.path().join("src"), tmp.path().join("repo"));
    tricky_tree(&src);
    let snap = backup(&repo_dir, &src);
    let planted = plant_longer_copies(&repo_dir);
    assert!(planted > 20, "{planted} data blobs");
    let (b, repo) = remote(&repo_dir);
    let target = tmp.path().join("out");
    let stats = restore_into(&repo, &snap, &src, &target, Overwrite::IfChanged);
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    assert_eq!(diff(&src, &target), "");
    assert!(
        temporaries(&target).is_empty(),
        "{:?}",
        temporaries(&target)
    );
    // The lying copies were the ones placed by (their pack was asked for).
    assert!(
        b.pack_reads.lock().unwrap().contains_key(&"ee".repeat(32)),
        "the lying index file was not the copy tried first"
    );
}

#[test]
fn check_reads_each_remote_pack_once_and_whole() {
    // Remote storage serves small ranged reads from a cache of whole packs:
    // a second read for the header would fetch each pack twice.
    let tmp = tempfile::tempdir().unwrap();
    let (src, repo_dir) = (tmp.path().join("src"), tmp.path().join("repo"));
    tricky_tree(&src);
    backup(&repo_dir, &src);
    let (b, repo) = remote(&repo_dir);
    let r = rewind_core::check::check(
        &repo,
        &rewind_core::check::CheckOptions {
            read_data: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    let reads = b.pack_reads.lock().unwrap();
    let packs = b.list(FileType::Pack).unwrap();
    assert_eq!(packs.len(), r.packs);
    for p in packs {
        let reads = &reads[&p.name];
        // One whole read; the other reads are the trees' (the walk of the
        // snapshots), none of them the trailer.
        let whole = reads.iter().filter(|r| **r == (0, u32::MAX)).count();
        assert_eq!(whole, 1, "pack {}: {reads:?}", p.name);
        assert!(
            !reads.contains(&(p.size - 4, 4)),
            "pack {}: its trailer read again: {reads:?}",
            p.name
        );
    }
}
