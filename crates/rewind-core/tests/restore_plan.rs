//! `restorer::plan` decides without writing: files already identical, a
//! changed file, a directory in the way, an extra entry for `--delete`, a
//! symlink in the way of a directory (never looked through); `execute` then
//! does what the plan says.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use rewind_core::archiver::{self, BackupOptions, Progress};
use rewind_core::backend::LocalBackend;
use rewind_core::format::tree::NodeKind;
use rewind_core::id::SnapshotId;
use rewind_core::repository::{KeyOwner, Repository};
use rewind_core::restorer::{self, Overwrite, RestoreOptions, RestorePlan, RestoreStart};

fn backup(repo_dir: &Path, src: &Path) -> (Repository, SnapshotId) {
    Repository::init(
        Arc::new(LocalBackend::new(repo_dir)),
        b"pw",
        FAST_KDF,
        &KeyOwner::default(),
    )
    .unwrap();
    let repo = open(repo_dir);
    let id = archiver::backup(
        &repo,
        &BackupOptions::new(vec![src.to_path_buf()]),
        &Progress::default(),
    )
    .unwrap()
    .snapshot_id
    .unwrap();
    (repo, id)
}

/// The contents of `src` in the snapshot.
fn start(repo: &Repository, snap: &SnapshotId, src: &Path) -> RestoreStart {
    let (_, s) = repo.read_snapshot(snap).unwrap();
    let node = restorer::find_node(repo, &s.tree, src).unwrap().unwrap();
    let NodeKind::Dir { subtree } = node.kind else {
        panic!("not a dir")
    };
    RestoreStart::Tree {
        tree: subtree,
        snap_path: src.to_path_buf(),
    }
}

fn opts(target: &Path, overwrite: Overwrite, delete: bool) -> RestoreOptions {
    RestoreOptions {
        target: target.to_path_buf(),
        overwrite,
        delete,
        ..Default::default()
    }
}

fn plan(repo: &Repository, snap: &SnapshotId, src: &Path, o: &RestoreOptions) -> RestorePlan {
    restorer::plan(repo, start(repo, snap, src), o, &Progress::default()).unwrap()
}

/// Everything below `dir` (symlinks not followed): kind, inode, size,
/// mtime, content or link target.
fn describe(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            let what = if md.is_dir() {
                todo.push(p.clone());
                "dir".to_string()
            } else if md.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&p).unwrap().display())
            } else {
                format!("{:?}", fs::read(&p).unwrap())
            };
            let desc = format!(
                "{what} ino {} mtime {}.{}",
                md.ino(),
                md.mtime(),
                md.mtime_nsec()
            );
            out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), desc);
        }
    }
    out
}

fn paths(v: &[&str]) -> Vec<PathBuf> {
    v.iter().map(PathBuf::from).collect()
}

#[test]
fn a_plan_lists_what_each_entry_gets_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write_file(&src.join("a.txt"), b"alpha\n");
    write_file(&src.join("b.txt"), b"bravo\n");
    write_file(&src.join("notes.txt"), b"notes\n");
    write_file(&src.join("sub/c.txt"), b"charlie\n");
    write_file(&src.join("h1"), b"linked\n");
    fs::hard_link(src.join("h1"), src.join("h2")).unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    let (repo, snap) = backup(&tmp.path().join("repo"), &src);

    // A full restore, then: one file changed, a directory where a file
    // goes, and an entry the snapshot lacks.
    let target = tmp.path().join("target");
    let o = opts(&target, Overwrite::IfChanged, false);
    let first = restorer::restore(&repo, start(&repo, &snap, &src), &o, &Progress::default());
    assert!(first.unwrap().errors.is_empty());
    write_file(&target.join("b.txt"), b"bravo, changed\n");
    fs::remove_file(target.join("notes.txt")).unwrap();
    write_file(&target.join("notes.txt/inner"), b"in the way");
    write_file(&target.join("extra.txt"), b"not in the snapshot");
    let before = describe(&target);

    let p = plan(&repo, &snap, &src, &o);
    assert_eq!(p.dirs, paths(&["sub"]));
    assert_eq!(p.write, paths(&["b.txt"]));
    assert_eq!(p.write_bytes, 6);
    assert_eq!(p.identical, paths(&["a.txt", "h1", "h2", "sub/c.txt"]));
    assert!(p.kept.is_empty() && p.hardlinks.is_empty() && p.blocked.is_empty());
    assert_eq!(p.others, paths(&["link"]));
    assert_eq!(p.conflicts, paths(&["notes.txt"]));
    assert!(p.delete.is_empty(), "{:?}", p.delete);
    let dry = p.dry_run_stats();
    assert_eq!((dry.files_skipped, dry.dirs, dry.others), (3, 1, 2));

    let o_never = opts(&target, Overwrite::Never, false);
    let p = plan(&repo, &snap, &src, &o_never);
    assert!(p.write.is_empty(), "{:?}", p.write);
    assert_eq!(p.identical, paths(&["a.txt", "h1", "h2", "sub/c.txt"]));
    assert_eq!(p.kept, paths(&["b.txt", "link"]));
    assert_eq!(p.conflicts, paths(&["notes.txt"]));

    let o_delete = opts(&target, Overwrite::IfChanged, true);
    let p = plan(&repo, &snap, &src, &o_delete);
    assert_eq!(p.write, paths(&["b.txt", "notes.txt"]));
    assert_eq!(p.delete, paths(&["extra.txt", "notes.txt"]));
    assert!(p.conflicts.is_empty(), "{:?}", p.conflicts);
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["write"], serde_json::json!(["b.txt", "notes.txt"]));
    assert_eq!(
        json["delete"],
        serde_json::json!(["extra.txt", "notes.txt"])
    );
    assert!(json.get("work").is_none(), "{json}");

    // Planning wrote nothing.
    assert_eq!(describe(&target), before);

    // The plan carried out.
    let stats = restorer::execute(&repo, p, &o_delete, &Progress::default()).unwrap();
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    assert_eq!(
        (
            stats.files_restored,
            stats.files_skipped,
            stats.files_failed
        ),
        (2, 3, 0)
    );
    assert_eq!(stats.deleted, 2);
    for (rel, content) in [("b.txt", &b"bravo\n"[..]), ("notes.txt", b"notes\n")] {
        assert_eq!(fs::read(target.join(rel)).unwrap(), content, "{rel}");
    }
    assert!(!target.join("extra.txt").exists());
    let ino = |p: &str| fs::metadata(target.join(p)).unwrap().ino();
    assert_eq!(ino("h1"), ino("h2"));
}

#[test]
fn a_plan_never_looks_through_a_symlink_in_the_way_of_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write_file(&src.join("sub/c.txt"), b"charlie\n");
    let (repo, snap) = backup(&tmp.path().join("repo"), &src);
    let target = tmp.path().join("target");
    let o = opts(&target, Overwrite::IfChanged, true);
    let first = restorer::restore(&repo, start(&repo, &snap, &src), &o, &Progress::default());
    assert!(first.unwrap().errors.is_empty());
    // The restored directory moves elsewhere (its file still identical)
    // and a symlink to it takes its place.
    let outside = tmp.path().join("outside");
    fs::rename(target.join("sub"), &outside).unwrap();
    write_file(&outside.join("keep.me"), b"not the target's");
    std::os::unix::fs::symlink(&outside, target.join("sub")).unwrap();
    let elsewhere = describe(&outside);

    // --overwrite never: the symlink stays, and nothing below it is restored.
    let never = opts(&target, Overwrite::Never, false);
    let p = plan(&repo, &snap, &src, &never);
    assert_eq!(p.conflicts, paths(&["sub"]));
    assert_eq!(p.blocked, paths(&["sub/c.txt"]));
    assert!(p.dirs.is_empty() && p.write.is_empty() && p.identical.is_empty());
    let stats = restorer::execute(&repo, p, &never, &Progress::default()).unwrap();
    assert_eq!((stats.files_failed, stats.errors.len()), (1, 1));
    assert!(fs::symlink_metadata(target.join("sub"))
        .unwrap()
        .file_type()
        .is_symlink());

    // Otherwise the symlink is replaced by the directory, whose file is
    // written: what the symlink points to is neither identical nor extra.
    let p = plan(&repo, &snap, &src, &o);
    assert_eq!(p.dirs, paths(&["sub"]));
    assert_eq!(p.write, paths(&["sub/c.txt"]));
    assert!(p.identical.is_empty() && p.delete.is_empty() && p.conflicts.is_empty());
    let stats = restorer::execute(&repo, p, &o, &Progress::default()).unwrap();
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    assert_eq!((stats.files_restored, stats.deleted), (1, 0));
    assert!(fs::symlink_metadata(target.join("sub")).unwrap().is_dir());
    assert_eq!(fs::read(target.join("sub/c.txt")).unwrap(), b"charlie\n");
    assert_eq!(describe(&outside), elsewhere);
}

fn write_file(path: &Path, data: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}
