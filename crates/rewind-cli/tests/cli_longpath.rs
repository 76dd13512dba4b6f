//! Paths longer than PATH_MAX (4,096 bytes on Linux): every component is at
//! most 255 bytes, but `lstat`/`open`/`mkdir` of the whole path fail with
//! ENAMETOOLONG. Backup must read such trees and restore must write them.
//!
//! The test builds and inspects the deep tree only with calls relative to
//! an open directory (`mkdirat`, `openat`, `fstatat`, `readlinkat`), never
//! with the long path and never through the shared working directory.

mod common;

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, mkdirat, utimensat, FileStat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;

use common::*;

/// Depth and component length of the deep tree: 30 × 201 bytes is about
/// 6,000 bytes below the source directory.
const DEPTH: usize = 30;
const NAME_LEN: usize = 200;

/// An open directory; closed on drop.
struct Dir(RawFd);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = nix::unistd::close(self.0);
    }
}

impl Dir {
    /// Opens a directory by a (short) path.
    fn open(path: &Path) -> Dir {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        Dir(fd)
    }

    /// Opens the directory `name` in this one (never through a symlink).
    fn sub(&self, name: &str) -> Dir {
        let fd = openat(
            Some(self.0),
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap_or_else(|e| panic!("openat {name}: {e}"));
        Dir(fd)
    }

    /// Makes the directory `name` in this one and opens it.
    fn mkdir(&self, name: &str) -> Dir {
        mkdirat(Some(self.0), name, Mode::from_bits_truncate(0o755))
            .unwrap_or_else(|e| panic!("mkdirat {name}: {e}"));
        self.sub(name)
    }

    /// The name of `name` in this directory through /proc: a short path
    /// for what std can only do by path (writing a file, a symlink...).
    fn proc(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/fd/{}/{name}", std::process::id(), self.0))
    }

    fn stat(&self, name: &str) -> FileStat {
        fstatat(Some(self.0), name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .unwrap_or_else(|e| panic!("fstatat {name}: {e}"))
    }

    fn exists(&self, name: &str) -> bool {
        fstatat(Some(self.0), name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok()
    }

    fn readlink(&self, name: &str) -> OsString {
        nix::fcntl::readlinkat(Some(self.0), name)
            .unwrap_or_else(|e| panic!("readlinkat {name}: {e}"))
    }

    /// The content of the regular file `name` (opened with O_NOFOLLOW).
    fn read(&self, name: &str) -> Vec<u8> {
        let fd = openat(
            Some(self.0),
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap_or_else(|e| panic!("openat {name}: {e}"));
        let f = Dir(fd);
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match nix::unistd::read(f.0, &mut buf) {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => panic!("read {name}: {e}"),
            }
        }
    }

    fn names(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.proc(""))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Sets atime and mtime of `name` without following a symlink.
    fn set_mtime(&self, name: &str, secs: i64, nanos: i64) {
        let t = TimeSpec::new(secs, nanos);
        utimensat(Some(self.0), name, &t, &t, UtimensatFlags::NoFollowSymlink)
            .unwrap_or_else(|e| panic!("utimensat {name}: {e}"));
    }

    fn mtime(&self, name: &str) -> (i64, i64) {
        let st = self.stat(name);
        (st.st_mtime, st.st_mtime_nsec)
    }
}

/// The name of the deep directory at depth `i` (0-based).
fn level(i: usize) -> String {
    let mut s = format!("{i:02}-");
    let fill = (b'a' + (i % 26) as u8) as char;
    while s.len() < NAME_LEN {
        s.push(fill);
    }
    s
}

/// The path of the deepest directory below `top` (longer than PATH_MAX).
fn deep_path(top: &Path) -> PathBuf {
    let mut p = top.to_path_buf();
    for i in 0..DEPTH {
        p.push(level(i));
    }
    p
}

/// Opens the deepest directory below `top`, one component at a time.
fn open_deep(top: &Path) -> Dir {
    let mut d = Dir::open(top);
    for i in 0..DEPTH {
        d = d.sub(&level(i));
    }
    d
}

fn getfattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let o = std::process::Command::new("getfattr")
        .args(["--only-values", "-n", name])
        .arg(path)
        .output()
        .ok()?;
    o.status.success().then_some(o.stdout)
}

/// Builds the deep tree below `src`: at the deepest level a file with an
/// xattr (where supported), a hard link to it, a symlink, a fifo and a
/// subdirectory with a file; specific mtimes everywhere. Returns the file's
/// content and whether the xattr was set.
fn build_deep_tree(src: &Path) -> (Vec<u8>, bool) {
    std::fs::create_dir_all(src).unwrap();
    let mut d = Dir::open(src);
    for i in 0..DEPTH {
        d = d.mkdir(&level(i));
    }
    let content = random_bytes(300_000);
    std::fs::write(d.proc("deep.txt"), &content).unwrap();
    nix::unistd::linkat(
        Some(d.0),
        "deep.txt",
        Some(d.0),
        "hard.txt",
        AtFlags::empty(),
    )
    .unwrap();
    nix::unistd::symlinkat("deep.txt", Some(d.0), "link").unwrap();
    nix::unistd::mkfifoat(Some(d.0), "fifo", Mode::from_bits_truncate(0o640)).unwrap();
    let sub = d.mkdir("sub");
    std::fs::write(sub.proc("inner.txt"), b"further down\n").unwrap();
    sub.set_mtime("inner.txt", 1_300_000_000, 7);
    d.set_mtime("sub", 1_400_000_000, 500_000_000);

    let xattr = has_cmd("setfattr")
        && std::process::Command::new("setfattr")
            .args(["-n", "user.deep", "-v", "at the bottom"])
            .arg(d.proc("deep.txt"))
            .status()
            .is_ok_and(|s| s.success());
    if !xattr {
        eprintln!("setfattr missing or user xattrs unsupported: xattr part skipped");
    }
    d.set_mtime("deep.txt", 1_600_000_000, 123_456_789);
    d.set_mtime("link", 1_500_000_000, 250_000_000);
    d.set_mtime("fifo", 1_200_000_000, 3);
    // The deepest directory and one above it, once their content is made.
    drop(d);
    let mut d = Dir::open(src);
    for i in 0..DEPTH - 1 {
        d = d.sub(&level(i));
    }
    d.set_mtime(&level(DEPTH - 1), 1_100_000_000, 11);
    (content, xattr)
}

/// Asserts that the deep tree below `out` is the one below `src`.
fn assert_deep_equal(src: &Path, out: &Path, content: &[u8], xattr: bool) {
    let (a, b) = (open_deep(src), open_deep(out));
    assert_eq!(b.read("deep.txt"), content, "content of the deep file");
    assert_eq!(b.read("hard.txt"), content, "content of the hard link");
    assert_eq!(
        b.stat("deep.txt").st_ino,
        b.stat("hard.txt").st_ino,
        "hard link restored as two files"
    );
    assert_eq!(b.readlink("link"), OsStr::new("deep.txt"), "symlink target");
    assert_eq!(
        b.stat("fifo").st_mode & nix::libc::S_IFMT,
        nix::libc::S_IFIFO,
        "fifo"
    );
    assert_eq!(b.sub("sub").read("inner.txt"), b"further down\n");
    assert_eq!(
        a.names(),
        b.names(),
        "entries of the deepest directory differ"
    );
    for name in ["deep.txt", "link", "fifo", "sub"] {
        assert_eq!(a.mtime(name), b.mtime(name), "mtime of {name}");
        let (ma, mb) = (a.stat(name).st_mode, b.stat(name).st_mode);
        if ma & nix::libc::S_IFMT != nix::libc::S_IFLNK {
            assert_eq!(ma, mb, "mode of {name}");
        }
    }
    assert_eq!(
        a.sub("sub").mtime("inner.txt"),
        b.sub("sub").mtime("inner.txt"),
        "mtime of sub/inner.txt"
    );
    // The deepest directory's own mtime, seen from its parent.
    let (mut pa, mut pb) = (Dir::open(src), Dir::open(out));
    for i in 0..DEPTH - 1 {
        pa = pa.sub(&level(i));
        pb = pb.sub(&level(i));
    }
    let last = level(DEPTH - 1);
    assert_eq!(pa.mtime(&last), pb.mtime(&last), "mtime of the deepest dir");
    assert_eq!(pb.mtime(&last), (1_100_000_000, 11));
    if xattr {
        assert_eq!(
            getfattr(&b.proc("deep.txt"), "user.deep").as_deref(),
            Some(&b"at the bottom"[..]),
            "xattr of the deep file"
        );
    }
}

#[test]
fn backup_and_restore_paths_longer_than_path_max() {
    let env = Env::with_repo();
    let src = env.path("src");
    let (content, xattr) = build_deep_tree(&src);
    let deep = deep_path(&src);
    assert!(
        deep.as_os_str().len() > 6000,
        "the deep path is only {} bytes",
        deep.as_os_str().len()
    );
    assert_eq!(
        std::fs::symlink_metadata(deep.join("deep.txt"))
            .unwrap_err()
            .raw_os_error(),
        Some(nix::libc::ENAMETOOLONG),
        "the test needs paths the kernel refuses"
    );

    // Backup: nothing skipped.
    let summary = env.backup([&src]);
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(summary["files_new"], 3, "{summary}");

    // The snapshot lists the deep entries.
    let r = env.ok(["--json", "ls", "-R", "latest"]);
    let listed: BTreeSet<String> = r
        .out()
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad ls line {l:?}: {e}"));
            v["path"].as_str().expect("path").to_string()
        })
        .collect();
    for name in [
        "deep.txt",
        "hard.txt",
        "link",
        "fifo",
        "sub",
        "sub/inner.txt",
    ] {
        let p = deep.join(name);
        assert!(
            listed.contains(p.to_str().unwrap()),
            "ls does not list {name} at the bottom"
        );
    }

    // A second backup finds everything unchanged.
    let again = env.backup([&src]);
    assert_eq!(again["errors"], 0, "{again}");
    assert_eq!(again["files_unchanged"], 3, "{again}");

    // Restore into a new target.
    let t = env.path("target");
    let restore = |extra: &[&str], target: &Path| -> Run {
        let mut args: Vec<&OsStr> = vec![OsStr::new("--json"), OsStr::new("restore")];
        args.push(OsStr::new("latest"));
        args.extend(extra.iter().map(OsStr::new));
        args.push(OsStr::new("--target"));
        args.push(target.as_os_str());
        env.run(args)
    };
    let r = restore(&[], &t);
    r.expect_code(0);
    assert_eq!(r.summary()["errors"], 0, "{r}");
    let out = restored(&t, &src);
    assert_deep_equal(&src, &out, &content, xattr);

    // Again: everything is up to date.
    let r = restore(&[], &t);
    r.expect_code(0);
    assert_eq!(r.summary()["files_restored"], 0, "{r}");

    // --delete removes what the snapshot lacks down there, and a changed
    // file is written again.
    {
        let b = open_deep(&out);
        std::fs::write(b.proc("extra.txt"), b"not in the snapshot").unwrap();
        let x = b.mkdir("extra_dir");
        let y = x.mkdir("nested");
        std::fs::write(y.proc("x"), b"not in the snapshot").unwrap();
        std::fs::write(
            b.sub("sub").proc("inner.txt"),
            b"changed locally, and longer\n",
        )
        .unwrap();
    }
    let r = restore(&["--delete"], &t);
    r.expect_code(0);
    let b = open_deep(&out);
    assert!(!b.exists("extra.txt"), "--delete left a file: {r}");
    assert!(!b.exists("extra_dir"), "--delete left a directory: {r}");
    assert!(r.summary()["deleted"].as_u64().unwrap() >= 2, "{r}");
    assert_eq!(r.summary()["files_restored"], 1, "{r}");
    drop(b);
    assert_deep_equal(&src, &out, &content, xattr);

    // --verify reads the deep files back.
    let t = env.path("target_verify");
    let r = restore(&["--verify"], &t);
    r.expect_code(0);
    // Two files (the hard link is the first file's inode).
    assert_eq!(r.summary()["verified"], 2, "{r}");
    assert_deep_equal(&src, &restored(&t, &src), &content, xattr);

    // A subtree named by its (long) snapshot path, restored into a short
    // target.
    let spec = format!("latest:{}", deep.join("sub").display());
    let t = env.path("target_sub");
    let r = env.run([
        OsStr::new("restore"),
        OsStr::new(&spec),
        OsStr::new("--target"),
        t.as_os_str(),
    ]);
    r.expect_code(0);
    assert_eq!(
        std::fs::read(t.join("inner.txt")).unwrap(),
        b"further down\n"
    );
}
