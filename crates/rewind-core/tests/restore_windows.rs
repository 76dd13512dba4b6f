//! A restore larger than its plan's budget is planned and written a window
//! of the tree at a time (docs/DESIGN.md §10). These tests hold a restore
//! in windows of two entries to what the whole plan (`plan`, then
//! `execute`) does, on a new target and on targets that already hold
//! identical, changed and conflicting entries, under each overwrite policy:
//! the same figures, the same errors, the same tree, hard links included.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;
use rewind_core::archiver::{self, BackupOptions, Progress};
use rewind_core::format::tree::NodeKind;
use rewind_core::repository::Repository;
use rewind_core::restorer::{self, Overwrite, RestoreOptions, RestoreStart, RestoreStats};

/// Two entries a window.
const TWO: u64 = 2 * 480;

/// Folders with files, hard links whose paths fall in different windows
/// (one pair of them inside the target's conflicts below), symlinks, a
/// fifo, an empty folder, and a folder whose mode keeps others out.
fn make_source(src: &Path) {
    for (i, dir) in ["a", "a/b", "a/b/c", "m", "z", "z/y"].iter().enumerate() {
        fs::create_dir_all(src.join(dir)).unwrap();
        for j in 0..3 {
            let len = 100 + 4099 * (i * 3 + j);
            fs::write(
                src.join(dir).join(format!("f{j}")),
                random_bytes((i * 3 + j) as u64, len),
            )
            .unwrap();
        }
    }
    fs::hard_link(src.join("a/f0"), src.join("z/y/link-to-a-f0")).unwrap();
    fs::hard_link(src.join("m/f1"), src.join("z/link-to-m-f1")).unwrap();
    std::os::unix::fs::symlink("../a/f1", src.join("m/sym")).unwrap();
    // Made in an early window, while later ones write beside it.
    std::os::unix::fs::symlink("/", src.join("a/to-root")).unwrap();
    // Named as a restore's temporary, but the snapshot's own file.
    fs::write(src.join(".rewind-tmp-0123456789abcdef"), b"kept").unwrap();
    fs::write(src.join("a/b/.rewind-tmp-fedcba9876543210"), b"kept").unwrap();
    assert!(std::process::Command::new("mkfifo")
        .arg(src.join("z/fifo"))
        .status()
        .unwrap()
        .success());
    fs::create_dir_all(src.join("empty")).unwrap();
    fs::set_permissions(src.join("a/b/c"), fs::Permissions::from_mode(0o700)).unwrap();
}

/// Targets as a user might find them before a restore.
fn prepare(target: &Path, src: &Path, setup: &str) {
    match setup {
        "new" => {}
        "partly there" => {
            copy_dir(src, target);
            // Changed, same size; changed size; gone.
            fs::write(target.join("a/f1"), random_bytes(77, 100 + 4099)).unwrap();
            fs::write(target.join("m/f2"), b"shorter").unwrap();
            fs::remove_file(target.join("z/f0")).unwrap();
            // A directory where the snapshot has a file.
            fs::remove_file(target.join("a/b/f0")).unwrap();
            fs::create_dir_all(target.join("a/b/f0/inside")).unwrap();
            // A file where the snapshot has a directory.
            fs::remove_dir_all(target.join("z/y")).unwrap();
            fs::write(target.join("z/y"), b"in the way").unwrap();
            // A hard link's first path cannot be written (a directory in
            // its way): its link, in a later window, is not made either.
            fs::remove_file(target.join("m/f1")).unwrap();
            fs::create_dir_all(target.join("m/f1/x")).unwrap();
            fs::remove_file(target.join("z/link-to-m-f1")).unwrap();
        }
        other => panic!("{other}"),
    }
}

/// Everything below `dir` (symlinks not followed): kind, mode, size,
/// mtime, content or link target, and which paths share an inode.
fn describe(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, PathBuf> = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            let kind = if md.is_dir() {
                todo.push(p.clone());
                "dir".to_string()
            } else if md.file_type().is_symlink() {
                format!("symlink {:?}", fs::read_link(&p).unwrap())
            } else if md.is_file() {
                let same = inodes.entry(md.ino()).or_insert_with(|| rel.clone());
                format!(
                    "file {} {:?} links {} first {}",
                    md.size(),
                    blake3::hash(&fs::read(&p).unwrap()),
                    md.nlink(),
                    same.display()
                )
            } else {
                "special".to_string()
            };
            out.insert(
                rel,
                format!("{kind} mode {:o} mtime {}", md.mode(), md.mtime()),
            );
        }
    }
    out
}

fn start(repo: &Repository, tree_root: &rewind_core::id::BlobId, src: &Path) -> RestoreStart {
    let node = restorer::find_node(repo, tree_root, src).unwrap().unwrap();
    let NodeKind::Dir { subtree } = node.kind else {
        panic!("not a dir")
    };
    RestoreStart::Tree {
        tree: subtree,
        snap_path: src.to_path_buf(),
    }
}

/// The figures and errors of a restore, comparable.
fn figures(s: &RestoreStats) -> String {
    let mut errors: Vec<String> = s
        .errors
        .iter()
        .map(|w| format!("{}: {}", w.path.display(), w.message))
        .collect();
    errors.sort();
    format!(
        "restored {} skipped {} failed {} dirs {} others {} bytes {} deleted {} verified {} errors {errors:#?}",
        s.files_restored,
        s.files_skipped,
        s.files_failed,
        s.dirs,
        s.others,
        s.bytes_written,
        s.deleted,
        s.verified
    )
}

#[test]
fn a_restore_in_windows_does_what_the_whole_plan_does() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo_dir, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    make_source(&src);
    let repo = init(&repo_dir);
    let out = archiver::backup(
        &repo,
        &BackupOptions::new(vec![src.clone()]),
        &Progress::default(),
    )
    .unwrap();
    let repo = open(&repo_dir);
    let root = out.snapshot.tree;

    for setup in ["new", "partly there"] {
        for overwrite in [Overwrite::IfChanged, Overwrite::Never, Overwrite::Always] {
            let case = format!("{setup}, {overwrite:?}");
            let (whole_dir, windows_dir) = (tmp.path().join("whole"), tmp.path().join("windows"));
            for t in [&whole_dir, &windows_dir] {
                let _ = fs::remove_dir_all(t);
                prepare(t, &src, setup);
            }
            let opts = |target: &Path, plan_memory| RestoreOptions {
                target: target.to_path_buf(),
                overwrite,
                verify: true,
                plan_memory,
                ..Default::default()
            };
            let whole_opts = opts(&whole_dir, None);
            let plan = restorer::plan(
                &repo,
                start(&repo, &root, &src),
                &whole_opts,
                &Progress::default(),
            )
            .unwrap();
            let whole = restorer::execute(&repo, plan, &whole_opts, &Progress::default()).unwrap();
            let windows = restorer::restore(
                &repo,
                start(&repo, &root, &src),
                &opts(&windows_dir, Some(TWO)),
                &Progress::default(),
            )
            .unwrap();
            assert_eq!(figures(&windows), figures(&whole), "{case}");
            assert_eq!(describe(&windows_dir), describe(&whole_dir), "{case}");
            if setup == "new" {
                assert!(whole.errors.is_empty(), "{case}: {:?}", whole.errors);
                assert_eq!(whole.files_restored, 6 * 3 + 2, "{case}");
                // Restored as backed up, hard links and all.
                let (mut a, b) = (describe(&windows_dir), describe(&src));
                a.retain(|p, _| b.contains_key(p));
                assert_eq!(a.len(), b.len(), "{case}");
            } else {
                let said = |path: &str| whole.errors.iter().any(|w| w.path == Path::new(path));
                assert!(said("a/b/f0") && said("m/f1"), "{case}: {:?}", whole.errors);
                assert!(said("z/link-to-m-f1"), "{case}: {:?}", whole.errors);
            }
            // Found identical, they are not taken for stale temporaries.
            for dir in [&whole_dir, &windows_dir] {
                for own in [
                    ".rewind-tmp-0123456789abcdef",
                    "a/b/.rewind-tmp-fedcba9876543210",
                ] {
                    assert_eq!(fs::read(dir.join(own)).unwrap(), b"kept", "{case}: {own}");
                }
            }
        }
    }
}
