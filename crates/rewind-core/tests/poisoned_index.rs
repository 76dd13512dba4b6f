//! An index file that lies, sealed with the real key under a valid name
//! (what a client that holds the password and a backup token can write):
//! it points every blob at a pack that does not exist, or at the wrong
//! bytes of a real pack. Readers try the other copies they know of, so
//! every snapshot still restores.

mod common;

use std::path::PathBuf;

use common::*;
use rewind_core::archiver::{self, BackupOptions, Progress};
use rewind_core::format::index::{IndexFile, IndexPack, VERSION};
use rewind_core::format::pack::PackedBlob;
use rewind_core::id::{Hash, PackId};

#[test]
fn lying_index_files_do_not_hide_the_real_copies() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    let src: PathBuf = tmp.path().join("src");
    make_tree(&src, 7, 12);
    init(&repo_dir);
    let snap = archiver::backup(
        &open(&repo_dir),
        &BackupOptions::new(vec![src.clone()]),
        &Progress::default(),
    )
    .unwrap()
    .snapshot_id
    .unwrap();

    // The real entries, to lie about.
    let repo = open(&repo_dir);
    let index = repo.index().unwrap();
    let real: Vec<(PackId, PackedBlob)> = index.entries().collect();
    // Lie 1: every blob in a pack that does not exist.
    let missing = IndexFile {
        version: VERSION,
        supersedes: Vec::new(),
        packs: vec![IndexPack {
            id: PackId(Hash([0xee; 32])),
            size: 1 << 20,
            blobs: real.iter().map(|(_, b)| *b).collect(),
        }],
    };
    write_last(&repo, &missing);
    let repo = open(&repo_dir);
    let index = repo.index().unwrap();
    let (_, first) = &real[0];
    assert_eq!(
        index.pack_id(&index.get(&first.id).unwrap()),
        PackId(Hash([0xee; 32])),
        "the lie is not the copy tried first: the test proves nothing"
    );
    assert_restores(&repo, &snap, &src, &src, tmp.path());

    // Lie 2: every blob at the wrong place of a real pack (its bytes fail
    // authentication there).
    let (pack, _) = real[0];
    let shifted = IndexFile {
        version: VERSION,
        supersedes: Vec::new(),
        packs: vec![IndexPack {
            id: pack,
            size: std::fs::metadata(
                repo_dir
                    .join("data")
                    .join(&pack.to_hex()[..2])
                    .join(pack.to_hex()),
            )
            .unwrap()
            .len(),
            blobs: real
                .iter()
                .map(|(_, b)| PackedBlob { offset: 9, ..*b })
                .collect(),
        }],
    };
    write_last(&repo, &shifted);
    let repo = open(&repo_dir);
    assert_restores(&repo, &snap, &src, &src, tmp.path());
    for (_, b) in &real {
        repo.read_blob(&b.id).unwrap();
    }
}
