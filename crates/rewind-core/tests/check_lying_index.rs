//! Check and index files that lie: sealed with the real key under a valid
//! name (what a client that holds the password and a backup token can
//! write), they point blobs that are stored intact at a pack that does not
//! exist, at the wrong bytes of a real pack, or give a real pack another
//! size. Readers fall back to the good copies, so check must not call the
//! snapshots' files lost; it must name exactly the files that lie (with who
//! stored them, where the storage records it). A pack that is really gone
//! still loses its blobs.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use rewind_core::archiver::{self, BackupOptions, Progress};
use rewind_core::backend::{Backend, FileInfo, FileType, LocalBackend, WriteOutcome, Writer};
use rewind_core::check::{self, CheckOptions, CheckReport, Subset};
use rewind_core::format::index::{IndexFile, IndexPack, VERSION};
use rewind_core::format::pack::PackedBlob;
use rewind_core::id::{Hash, IndexId, PackId, SnapshotId};
use rewind_core::repository::Repository;
use rewind_core::Result;

/// Local storage that says who stored which index file, as the rewind
/// server's write log does.
#[derive(Debug)]
struct Recorded {
    inner: LocalBackend,
    index_writers: HashMap<String, Writer>,
}

impl Backend for Recorded {
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
        self.inner.write(t, name, data)
    }
    fn delete(&self, t: FileType, name: &str) -> Result<()> {
        self.inner.delete(t, name)
    }
    fn writers(&self, t: FileType) -> Result<HashMap<String, Writer>> {
        Ok(match t {
            FileType::Index => self.index_writers.clone(),
            _ => HashMap::new(),
        })
    }
}

struct Setup {
    _tmp: tempfile::TempDir,
    repo_dir: PathBuf,
    src: PathBuf,
    scratch: PathBuf,
    snap: SnapshotId,
    /// Every blob's real entry, with its pack.
    real: Vec<(PackId, PackedBlob)>,
    /// The index files the backup wrote.
    honest: Vec<IndexId>,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    let src = tmp.path().join("src");
    make_tree(&src, 11, 40);
    init(&repo_dir);
    let snap = archiver::backup(
        &open(&repo_dir),
        &BackupOptions::new(vec![src.clone()]),
        &Progress::default(),
    )
    .unwrap()
    .snapshot_id
    .unwrap();
    let repo = open(&repo_dir);
    let index = repo.index().unwrap();
    let real = index.entries().collect();
    let honest = index.files().to_vec();
    Setup {
        scratch: tmp.path().to_path_buf(),
        _tmp: tmp,
        repo_dir,
        src,
        snap,
        real,
        honest,
    }
}

fn pack_path(repo_dir: &Path, pack: &PackId) -> PathBuf {
    repo_dir
        .join("data")
        .join(&pack.to_hex()[..2])
        .join(pack.to_hex())
}

fn index_file(pack: PackId, size: u64, blobs: Vec<PackedBlob>) -> IndexFile {
    IndexFile {
        version: VERSION,
        supersedes: Vec::new(),
        packs: vec![IndexPack {
            id: pack,
            size,
            blobs,
        }],
    }
}

/// Checks twice: as usual, and with a memory budget too small to hold the
/// index files (check then reads them again for each pass, and the index
/// goes to an on-disk table once it has 1024 blobs): the verdicts must be
/// the same, word for word.
fn run(repo: &Repository, opts: &CheckOptions) -> CheckReport {
    let held = check::check(repo, opts).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut small = Repository::open(repo.backend().clone(), b"pw").unwrap();
    small.set_index_table(cache.path(), 1);
    let streamed = check::check(&small, opts).unwrap();
    assert_eq!(format!("{held:#?}"), format!("{streamed:#?}"));
    held
}

/// Without data, with all of it, and with each half of the packs (so that
/// a lie about a pack this run does not read is found too).
fn every_way() -> Vec<(&'static str, CheckOptions)> {
    let part = |n| CheckOptions {
        subset: Some(Subset::Part { n, m: 2 }),
        ..Default::default()
    };
    vec![
        ("structure", CheckOptions::default()),
        (
            "read-data",
            CheckOptions {
                read_data: true,
                ..Default::default()
            },
        ),
        ("subset 1/2", part(1)),
        ("subset 2/2", part(2)),
    ]
}

#[test]
fn an_intact_repository_has_no_lying_index() {
    let s = setup();
    let repo = open(&s.repo_dir);
    for (how, opts) in every_way() {
        let r = run(&repo, &opts);
        assert!(r.is_ok(), "{how}: {:?}", r.errors);
        assert!(r.lying_index.is_empty(), "{how}: {:?}", r.lying_index);
        assert!(r.affected.is_empty(), "{how}");
        assert!(!r.repair_index, "{how}");
    }
}

#[test]
fn index_files_that_lie_are_named_and_lose_nothing() {
    let s = setup();
    let repo = open(&s.repo_dir);
    assert!(
        s.real.len() > 10,
        "too few blobs to lie about: {}",
        s.real.len()
    );
    let blobs = || s.real.iter().map(|(_, b)| *b);
    // Each lie is written under a name that sorts after every index file
    // there: readers merge index files in name order, so a lie is the copy
    // tried first, and a check that trusted the merged index alone would
    // call the blobs lost.
    // (a) Every blob in a pack that does not exist.
    let nowhere = PackId(Hash([0xee; 32]));
    let a = write_last(&repo, &index_file(nowhere, 1 << 20, blobs().collect()));
    // (b) Every blob at the wrong place of a real pack of the right size
    // (tampered copies: the bytes there are something else).
    let (target, _) = s.real[0];
    let target_size = std::fs::metadata(pack_path(&s.repo_dir, &target))
        .unwrap()
        .len();
    let b = write_last(
        &repo,
        &index_file(
            target,
            target_size,
            blobs().map(|b| PackedBlob { offset: 9, ..b }).collect(),
        ),
    );
    // (c) The real entries of a real pack, with another size.
    let c = write_last(
        &repo,
        &index_file(
            target,
            target_size + 1,
            s.real
                .iter()
                .filter(|(p, _)| *p == target)
                .map(|(_, b)| *b)
                .collect(),
        ),
    );
    let mut lies = vec![a, b, c];
    lies.sort();

    // The storage says who stored what: the backup's files by the laptop,
    // the lies by another backup token.
    let when: jiff::Timestamp = "2024-05-06T07:08:09Z".parse().unwrap();
    let mut index_writers: HashMap<String, Writer> = s
        .honest
        .iter()
        .map(|id| {
            (
                id.to_hex(),
                Writer {
                    token: "laptop".into(),
                    adds_only: true,
                    time: Some(when),
                },
            )
        })
        .collect();
    for id in &lies {
        index_writers.insert(
            id.to_hex(),
            Writer {
                token: "mallory".into(),
                adds_only: true,
                time: Some(when),
            },
        );
    }
    let repo = Repository::open(
        Arc::new(Recorded {
            inner: LocalBackend::new(&s.repo_dir),
            index_writers,
        }),
        b"pw",
    )
    .unwrap();
    // The lie is what readers try first: a check that believed it would
    // call every file lost.
    let index = repo.index().unwrap();
    let elsewhere = s
        .real
        .iter()
        .find(|(p, _)| *p != target)
        .expect("blobs in more than one pack")
        .1;
    let chosen = index.get(&elsewhere.id).unwrap();
    assert!(
        index.pack_id(&chosen) == nowhere || (index.pack_id(&chosen), chosen.offset) == (target, 9),
        "a lie is not the copy tried first: the test proves nothing"
    );

    for (how, opts) in every_way() {
        let r = run(&repo, &opts);
        let mut named = r.lying_index.clone();
        named.sort();
        assert_eq!(named, lies, "{how}: {:#?}", r.errors);
        for id in &lies {
            let said: Vec<&String> = r
                .errors
                .iter()
                .filter(|e| e.starts_with(&format!("index file {}", id.to_hex())))
                .collect();
            assert_eq!(
                said.len(),
                1,
                "{how}: {id} is not named once: {:#?}",
                r.errors
            );
            assert!(
                said[0].contains("nothing is lost")
                    && said[0].contains("stored by backup token mallory at 2024-05-06 07:08:09")
                    && said[0].contains("repair index"),
                "{how}: {}",
                said[0]
            );
        }
        let about = |id: &IndexId| {
            r.errors
                .iter()
                .find(|e| e.starts_with(&format!("index file {}", id.to_hex())))
                .unwrap()
                .clone()
        };
        assert!(
            about(&a).contains(&format!("pack {nowhere} is missing")),
            "{how}: {}",
            about(&a)
        );
        assert!(
            about(&b).contains(&format!("pack {target}:")),
            "{how}: {}",
            about(&b)
        );
        assert!(
            about(&c).contains(&format!("pack {target} is {target_size} bytes")),
            "{how}: {}",
            about(&c)
        );
        for id in &s.honest {
            assert!(
                !r.errors.iter().any(|e| e.contains(&id.to_hex())),
                "{how}: the backup's own index file {id} is blamed: {:#?}",
                r.errors
            );
        }
        assert!(r.affected.is_empty(), "{how}: {:?}", r.affected);
        assert!(
            r.damaged_packs.is_empty(),
            "{how}: intact packs called damaged: {:?} {:#?}",
            r.damaged_packs,
            r.errors
        );
        assert!(
            !r.errors
                .iter()
                .any(|e| e.starts_with("snapshot ") || e.contains("blobs lost")),
            "{how}: {:#?}",
            r.errors
        );
        assert!(r.repair_index, "{how}");
    }
    assert_restores(&repo, &s.snap, &s.src, &s.src, &s.scratch);

    // Rebuilding the index from the packs leaves the lies out.
    rewind_core::repair::repair_index(&repo, false).unwrap();
    let repo = open(&s.repo_dir);
    let r = run(
        &repo,
        &CheckOptions {
            read_data: true,
            ..Default::default()
        },
    );
    assert!(r.is_ok() && r.lying_index.is_empty(), "{:#?}", r.errors);
}

#[test]
fn a_pack_that_is_gone_with_no_other_copy_loses_its_blobs() {
    let s = setup();
    // The pack with the most blobs.
    let mut count: HashMap<PackId, usize> = HashMap::new();
    for (p, _) in &s.real {
        *count.entry(*p).or_default() += 1;
    }
    let (gone, n) = count.into_iter().max_by_key(|(_, n)| *n).unwrap();
    std::fs::remove_file(pack_path(&s.repo_dir, &gone)).unwrap();
    let repo = open(&s.repo_dir);
    for (how, opts) in every_way() {
        let r = run(&repo, &opts);
        assert!(
            r.errors
                .iter()
                .any(|e| e.starts_with(&format!("pack {gone} is missing ({n} blobs lost"))),
            "{how}: {:#?}",
            r.errors
        );
        assert_eq!(r.damaged_packs, vec![gone], "{how}");
        assert!(!r.affected.is_empty(), "{how}: nothing affected");
        // The index file that lists it is honest: the pack is what is gone.
        assert!(r.lying_index.is_empty(), "{how}: {:?}", r.lying_index);
        assert!(
            !r.errors.iter().any(|e| e.contains("planted")),
            "{how}: {:#?}",
            r.errors
        );
    }
}
