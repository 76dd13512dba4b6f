//! `check --read-data` reads a pack from start to end a window at a time
//! (docs/DESIGN.md §11) rather than whole: blobs that straddle windows,
//! damage far into a pack and a pack cut short must be judged exactly as
//! when the pack was read whole.

mod common;

use std::path::PathBuf;

use common::*;
use rewind_core::archiver::{self, BackupOptions, Progress};
use rewind_core::backend::FileType;

/// A repository holding one data pack of about 12 MiB (a random file cut
/// into ~48 chunks, so that many straddle the 1 MiB windows).
struct Large {
    _tmp: tempfile::TempDir,
    repo_dir: PathBuf,
    /// The pack's name, path and size.
    name: String,
    path: PathBuf,
    size: u64,
    /// Its blobs as its header lists them: (offset, length).
    listed: Vec<(u64, u64)>,
}

fn repo_with_a_large_pack() -> Large {
    let tmp = tempfile::tempdir().unwrap();
    let (repo_dir, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    let repo = init(&repo_dir);
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("big"), random_bytes(5, 12 << 20)).unwrap();
    archiver::backup(
        &repo,
        &BackupOptions::new(vec![src.clone()]),
        &Progress::default(),
    )
    .unwrap();
    let pack = repo
        .backend()
        .list(FileType::Pack)
        .unwrap()
        .into_iter()
        .max_by_key(|f| f.size)
        .unwrap();
    assert!(pack.size > 10 << 20, "{pack:?}");
    let path = repo_dir.join("data").join(&pack.name[..2]).join(&pack.name);
    assert!(path.exists(), "{}", path.display());
    let listed = repo
        .read_pack_header(&pack.name, pack.size)
        .unwrap()
        .blobs
        .iter()
        .map(|b| (u64::from(b.offset), u64::from(b.length)))
        .collect();
    Large {
        _tmp: tmp,
        repo_dir,
        name: pack.name,
        path,
        size: pack.size,
        listed,
    }
}

/// Asserts that one of `errors` contains each of `parts`.
fn assert_said(errors: &[String], parts: &[&str]) {
    assert!(
        errors.iter().any(|e| parts.iter().all(|p| e.contains(p))),
        "no error says {parts:?}: {errors:#?}"
    );
}

#[test]
fn blobs_across_read_windows_check_clean() {
    let large = repo_with_a_large_pack();
    let straddling = large
        .listed
        .iter()
        .filter(|(o, l)| o >> 20 != (o + l - 1) >> 20)
        .count();
    assert!(straddling >= 5, "{straddling} blobs cross a MiB boundary");
    assert_eq!(check_errors(&open(&large.repo_dir)), Vec::<String>::new());
}

#[test]
fn one_flipped_byte_deep_in_a_pack_is_one_damaged_blob() {
    let Large {
        repo_dir,
        name,
        path,
        listed,
        ..
    } = &repo_with_a_large_pack();
    // Inside the blob that crosses the 6 MiB mark, just past it.
    let at = (6 << 20) + 10;
    assert!(listed.iter().any(|(o, l)| *o < 6 << 20 && o + l > at));
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] ^= 0x01;
    std::fs::write(path, &bytes).unwrap();

    let errors = check_errors(&open(repo_dir));
    assert_said(&errors, &[&format!("pack {name} does not match its name")]);
    assert_said(
        &errors,
        &[&format!("pack {name}: 1 blobs fail authentication")],
    );
}

#[test]
fn a_pack_cut_short_fails_every_blob_past_the_cut_and_its_header() {
    let Large {
        repo_dir,
        name,
        path,
        listed,
        ..
    } = &repo_with_a_large_pack();
    let cut = (7 << 20) + 4321;
    let past = listed.iter().filter(|(o, l)| o + l > cut).count();
    assert!(past > 10, "{past}");
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(cut).unwrap();
    drop(f);

    let errors = check_errors(&open(repo_dir));
    assert_said(&errors, &[&format!("pack {name} does not match its name")]);
    // The header's end is gone.
    assert_said(&errors, &[name, "header"]);
    assert_said(
        &errors,
        &[&format!("pack {name}: {past} blobs fail authentication")],
    );
}

#[test]
fn places_that_lie_deep_in_a_large_pack_name_the_index_file_not_the_pack() {
    // An index file, as a client holding the key can write one, giving the
    // 12 MiB pack's real blobs at places the pack does not have: shifted by
    // a few bytes (overlapping two blobs), running past its end, starting
    // past its end, and at the offset of another blob. The pack is intact:
    // every finding is the index file's.
    use rewind_core::check::{self, CheckOptions};
    use rewind_core::format::index::{IndexFile, IndexPack, VERSION};
    use rewind_core::format::pack::{BlobKind, PackedBlob};
    use rewind_core::id::PackId;
    let Large {
        repo_dir,
        name,
        size,
        ..
    } = &repo_with_a_large_pack();
    let (size, repo) = (*size, open(repo_dir));
    let header = repo.read_pack_header(name, size).unwrap();
    let data: Vec<&PackedBlob> = header
        .blobs
        .iter()
        .filter(|b| b.kind == BlobKind::Data)
        .collect();
    assert!(data.len() > 20);
    let (a, b, c) = (data[5], data[20], data[data.len() - 1]);
    let lies = vec![
        PackedBlob {
            offset: a.offset + 7,
            ..*a
        },
        PackedBlob {
            offset: c.offset,
            length: c.length + 5000,
            ..*c
        },
        PackedBlob {
            offset: size as u32 + 100,
            ..*b
        },
        PackedBlob {
            offset: a.offset,
            length: a.length,
            ..*b
        },
    ];
    let liar = write_last(
        &repo,
        &IndexFile {
            version: VERSION,
            supersedes: Vec::new(),
            packs: vec![IndexPack {
                id: name.parse::<PackId>().unwrap(),
                size,
                blobs: lies,
            }],
        },
    );
    let r = check::check(
        &open(repo_dir),
        &CheckOptions {
            read_data: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(r.lying_index, vec![liar], "{:#?}", r.errors);
    assert!(r.damaged_packs.is_empty(), "{:#?}", r.errors);
    // Damage to the pack would be an error of its own, naming the pack.
    assert_eq!(r.errors.len(), 1, "{:#?}", r.errors);
    assert!(
        r.errors[0].contains("lists 4 blobs where they are not"),
        "{:#?}",
        r.errors
    );
}
