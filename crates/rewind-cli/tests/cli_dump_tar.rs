//! `rewind dump SNAPSHOT DIR` writes a tar that GNU tar extracts back
//! exactly: content, modes, owners, times to the nanosecond (before 1970
//! too), symlinks, hard links and extended attributes.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

fn setfattr(path: &Path, name: &str, value: &str) {
    assert!(
        set_xattr(path, name, value),
        "setfattr on {} (Debian's attr; scripts/test.sh installs it)",
        path.display()
    );
}

#[test]
fn a_dumped_folder_extracts_with_gnu_tar_exactly() {
    let env = Env::with_repo();
    let src = env.path("docs");
    write(&src.join("a.txt"), b"first path of a hard link\n");
    std::fs::hard_link(src.join("a.txt"), src.join("sub/../b.txt")).ok();
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::hard_link(src.join("a.txt"), src.join("sub/b.txt")).unwrap();
    write(&src.join("sub/old.txt"), b"written before 1970\n");
    write(&src.join("tool.sh"), b"#!/bin/sh\necho hi\n");
    std::fs::set_permissions(
        src.join("tool.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .unwrap();
    std::os::unix::fs::symlink("sub/old.txt", src.join("link")).unwrap();
    write_random(&src.join("sub/big.bin"), 3 << 20);
    setfattr(&src.join("a.txt"), "user.comment", "kept by the tar");
    setfattr(&src.join("sub"), "user.folder", "a folder's attribute");
    set_mtime(&src.join("a.txt"), 1_700_000_000, 123_456_789);
    set_mtime(&src.join("tool.sh"), 1_600_000_000, 1);
    // Before 1970, with nanoseconds.
    let old = src.join("sub/old.txt");
    assert!(Command::new("touch")
        .args(["-m", "-d", "@-1000.000000042"])
        .arg(&old)
        .status()
        .unwrap()
        .success());
    set_mtime(&src.join("sub"), 1_650_000_000, 5);
    set_mtime(&src, 1_650_000_001, 6);
    env.backup([&src]);

    let archive = env.path("docs.tar");
    let mut c = env.cmd();
    c.args(["dump", "latest", src.to_str().unwrap()])
        .stdout(std::fs::File::create(&archive).unwrap());
    assert!(c.status().unwrap().success());
    let out = env.path("out");
    std::fs::create_dir_all(&out).unwrap();
    let tar = Command::new("tar")
        // (GNU tar calls a time before 1970 "implausibly old" and fails
        // the extraction unless told it is fine; it sets it either way.)
        .args([
            "-x",
            "--xattrs",
            "--xattrs-include=*",
            "-p",
            "--warning=no-timestamp",
            "-f",
        ])
        .arg(&archive)
        .arg("-C")
        .arg(&out)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        tar.status.success(),
        "{}",
        String::from_utf8_lossy(&tar.stderr)
    );
    // GNU tar says nothing it did not understand.
    assert!(
        tar.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&tar.stderr)
    );
    let back = out.join("docs");
    assert_trees_equal(&src, &back, &[]);
    let (a, b) = (
        std::fs::metadata(back.join("a.txt")).unwrap(),
        std::fs::metadata(back.join("sub/b.txt")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "the hard link came back as two files");
    assert_eq!(a.nlink(), 2);
    assert_eq!(
        get_xattr(&back.join("a.txt"), "user.comment").as_deref(),
        Some("kept by the tar")
    );
    assert_eq!(
        get_xattr(&back.join("sub"), "user.folder").as_deref(),
        Some("a folder's attribute")
    );
    // -1000.000000042 s: 1001 s before 1970 plus 999,999,958 ns.
    let m = std::fs::symlink_metadata(back.join("sub/old.txt")).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (-1001, 999_999_958));
}
