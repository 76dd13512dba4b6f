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
/// into ~48 chunks, so that many straddle the 1 MiB windows); returns the
/// repository's directory, the pack's name and path.
fn repo_with_a_large_pack(tmp: &std::path::Path) -> (PathBuf, String, PathBuf) {
    let (repo_dir, src) = (tmp.join("repo"), tmp.join("src"));
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
    (repo_dir, pack.name, path)
}

/// The pack's blobs as its header lists them: (offset, length).
fn blobs(repo_dir: &std::path::Path, name: &str, size: u64) -> Vec<(u64, u64)> {
    open(repo_dir)
        .read_pack_header(name, size)
        .unwrap()
        .blobs
        .iter()
        .map(|b| (u64::from(b.offset), u64::from(b.length)))
        .collect()
}

#[test]
fn blobs_across_read_windows_check_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo_dir, name, path) = repo_with_a_large_pack(tmp.path());
    let size = std::fs::metadata(&path).unwrap().len();
    let listed = blobs(&repo_dir, &name, size);
    let straddling = listed
        .iter()
        .filter(|(o, l)| o >> 20 != (o + l - 1) >> 20)
        .count();
    assert!(straddling >= 5, "{straddling} blobs cross a MiB boundary");
    assert_eq!(check_errors(&open(&repo_dir)), Vec::<String>::new());
}

#[test]
fn one_flipped_byte_deep_in_a_pack_is_one_damaged_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo_dir, name, path) = repo_with_a_large_pack(tmp.path());
    let size = std::fs::metadata(&path).unwrap().len();
    let listed = blobs(&repo_dir, &name, size);
    // Inside the blob that crosses the 6 MiB mark, just past it.
    let at = (6 << 20) + 10;
    assert!(listed.iter().any(|(o, l)| *o < 6 << 20 && o + l > at));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[at as usize] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();

    let errors = check_errors(&open(&repo_dir));
    assert!(
        errors
            .iter()
            .any(|e| e.contains(&name) && e.contains("does not match its name")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e == &format!("pack {name}: 1 blobs fail authentication")),
        "{errors:?}"
    );
}

#[test]
fn a_pack_cut_short_fails_every_blob_past_the_cut_and_its_header() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo_dir, name, path) = repo_with_a_large_pack(tmp.path());
    let size = std::fs::metadata(&path).unwrap().len();
    let listed = blobs(&repo_dir, &name, size);
    let cut = (7 << 20) + 4321;
    let past = listed.iter().filter(|(o, l)| o + l > cut).count();
    assert!(past > 10, "{past}");
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(cut).unwrap();
    drop(f);

    let errors = check_errors(&open(&repo_dir));
    assert!(
        errors
            .iter()
            .any(|e| e.contains(&name) && e.contains("does not match its name")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains(&name) && e.contains("header")),
        "the header's end is gone: {errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e == &format!("pack {name}: {past} blobs fail authentication")),
        "{past} blobs lie past the cut: {errors:?}"
    );
}
