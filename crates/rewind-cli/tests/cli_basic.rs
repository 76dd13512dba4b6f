//! End-to-end tests of the everyday commands, driving the real binary:
//! zero-setup, round trip, incremental backups, point-in-time selection,
//! browsing, backup and restore options.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Paths of `ls --json -R SNAPSHOT`.
fn ls_paths(env: &Env, snapshot: &str) -> BTreeSet<String> {
    let r = env.ok(["--json", "ls", "-R", snapshot]);
    r.out()
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad ls line {l:?}: {e}"));
            v["path"].as_str().expect("path").to_string()
        })
        .collect()
}

// ------------------------------------------------------------------ 1

#[test]
fn zero_setup_creates_default_repository_and_key_file() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a.txt"), b"first file\n");

    let mut c = env.bare_cmd();
    c.arg("backup").arg(&src);
    let r = run_cmd(c);
    r.expect_code(0);

    let repo = env.path("data/rewind/repo");
    assert!(
        repo.join("config").is_file(),
        "no default repository at {}: {r}",
        repo.display()
    );
    let key = env.path("config/rewind/default-repo.password");
    let md = fs::metadata(&key).unwrap_or_else(|e| panic!("no key file {}: {e}", key.display()));
    assert_eq!(md.mode() & 0o777, 0o600, "key file mode");
    let dir_md = fs::metadata(key.parent().unwrap()).unwrap();
    assert_eq!(dir_md.mode() & 0o077, 0, "key directory is open to others");
    let pw = fs::read_to_string(&key).unwrap();
    let pw = pw.trim_end();
    assert!(
        pw.len() >= 32 && pw.bytes().all(|b| b.is_ascii_hexdigit()),
        "generated password looks weak: {pw:?}"
    );
    assert!(
        r.stderr.contains(s(&key)),
        "stderr does not say where the key is: {r}"
    );
    // Nothing was written to the real home: everything is under the temp dir.
    assert!(!env.path("home/.local").exists() && !env.path("home/.config").exists());

    // Second backup: works, and says nothing about the key any more.
    write(&src.join("b.txt"), b"second file\n");
    let mut c = env.bare_cmd();
    c.arg("backup").arg(&src);
    let r2 = run_cmd(c);
    r2.expect_code(0);
    assert!(
        !r2.stderr.contains(s(&key)) && !r2.stderr.contains("generated"),
        "second backup repeats the key notice: {r2}"
    );
    assert_eq!(
        fs::read_to_string(&key).unwrap().trim_end(),
        pw,
        "key changed"
    );

    // Other commands find the default repository and its key by themselves.
    let mut c = env.bare_cmd();
    c.args(["--json", "snapshots"]);
    let r3 = run_cmd(c);
    r3.expect_code(0);
    let snaps: Vec<serde_json::Value> = serde_json::from_slice(&r3.stdout).unwrap();
    assert_eq!(snaps.len(), 2, "{r3}");

    let target = env.path("restored");
    let mut c = env.bare_cmd();
    c.arg("restore").arg("latest").arg("--target").arg(&target);
    run_cmd(c).expect_code(0);
    assert_eq!(
        fs::read(restored(&target, &src).join("b.txt")).unwrap(),
        b"second file\n"
    );

    // The key file really is the password: it opens the repository explicitly too.
    let mut c = env.bare_cmd();
    c.env("REWIND_REPOSITORY", &repo)
        .env("REWIND_PASSWORD", pw)
        .arg("snapshots");
    run_cmd(c).expect_code(0);

    // Backing up a directory that holds the default repository and its key
    // does not back up the repository into itself.
    let mut c = env.bare_cmd();
    c.args(["--json", "backup"]).arg(&env.root);
    let r4 = run_cmd(c);
    r4.expect_code(0);
    let mut c = env.bare_cmd();
    c.args(["--json", "ls", "-R", "latest"]);
    let r5 = run_cmd(c);
    r5.expect_code(0);
    let listing = r5.out();
    assert!(listing.contains(s(&src.join("b.txt"))), "{r5}");
    assert!(
        !listing.contains(s(&repo.join("config"))),
        "the default repository was backed up into itself"
    );
}

/// A first run that cannot create the default repository (here: its
/// location is under a regular file) must not leave a key file behind that
/// makes every later run fail once the problem is fixed.
#[test]
fn zero_setup_recovers_from_a_failed_first_run() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a.txt"), b"a");
    let blocker = env.path("blocker");
    write(&blocker, b"a regular file where a directory should be");

    let mut c = env.bare_cmd();
    c.env("XDG_DATA_HOME", blocker.join("data"))
        .arg("backup")
        .arg(&src);
    let r = run_cmd(c);
    assert_ne!(r.code, Some(0), "{r}");

    // The location is fixed (the default one is fine): backups work.
    let mut c = env.bare_cmd();
    c.arg("backup").arg(&src);
    let r = run_cmd(c);
    assert_eq!(r.code, Some(0), "the failed first run broke the next: {r}");
    let mut c = env.bare_cmd();
    c.arg("snapshots");
    run_cmd(c).expect_code(0);
}

// ------------------------------------------------------------------ 2

#[test]
fn round_trip_preserves_everything() {
    let env = Env::with_repo();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();

    write(&src.join("empty.txt"), b"");
    write(&src.join("small.txt"), b"hello\n");
    let big = write_random(&src.join("random.bin"), (3 << 20) + 12345);
    write(&src.join("exec.sh"), b"#!/bin/sh\necho hi\n");
    chmod(&src.join("exec.sh"), 0o751);
    write(&src.join("setuid"), b"s");
    chmod(&src.join("setuid"), 0o4711);
    write(&src.join("private.txt"), b"p");
    chmod(&src.join("private.txt"), 0o600);
    fs::create_dir(src.join("empty_dir")).unwrap();
    chmod(&src.join("empty_dir"), 0o700);
    write(&src.join("sticky/inside.txt"), b"inside");
    chmod(&src.join("sticky"), 0o1777);
    std::os::unix::fs::symlink("small.txt", src.join("link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", src.join("dangling")).unwrap();
    std::os::unix::fs::symlink("sticky", src.join("dirlink")).unwrap();
    write(&src.join("hard_a"), b"hard linked content");
    fs::hard_link(src.join("hard_a"), src.join("hard_b")).unwrap();
    sh("mkfifo", &[src.join("fifo").as_os_str()]);
    let latin1 = src.join(OsStr::from_bytes(b"caf\xe9.txt"));
    write(&latin1, b"latin-1 name");
    let weird_dir = src.join(OsStr::from_bytes(b"\xff\xfe dir"));
    write(
        &weird_dir.join(OsStr::from_bytes(b"\x80")),
        b"non-UTF-8 everywhere",
    );

    // Owner (as root only).
    let root = is_root();
    if root {
        write(&src.join("owned.txt"), b"owned");
        std::os::unix::fs::chown(src.join("owned.txt"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(src.join("link"), Some(4321), Some(8765)).unwrap();
    } else {
        eprintln!("not root: ownership part skipped");
    }

    // xattrs.
    write(&src.join("xattr.txt"), b"has attributes");
    let xattrs = set_xattr(&src.join("xattr.txt"), "user.comment", "rewind test")
        && set_xattr(&src.join("xattr.txt"), "user.other", "second");
    if !xattrs {
        eprintln!("setfattr missing or user xattrs unsupported: xattr part skipped");
    }

    // A sparse file > 4 GiB with little data.
    let sparse = src.join("sparse.img");
    let head = random_bytes(4096);
    let tail = random_bytes(300_000);
    let tail_at: u64 = (4 << 30) + 123_456_789;
    let sparse_len: u64 = 5 << 30;
    {
        let f = fs::File::create(&sparse).unwrap();
        f.set_len(sparse_len).unwrap();
        f.write_all_at(&head, 0).unwrap();
        f.write_all_at(&tail, tail_at).unwrap();
    }
    let src_blocks = fs::metadata(&sparse).unwrap().blocks();
    assert!(
        src_blocks * 512 < 16 << 20,
        "the test file system does not make sparse files"
    );

    // A very long path (about 3000 bytes below src).
    let mut deep = src.join("deep");
    for i in 0..15 {
        let c = (b'a' + i as u8) as char;
        deep.push(std::iter::repeat_n(c, 199).collect::<String>());
    }
    write(&deep.join("leaf.txt"), b"deep down");
    assert!(deep.as_os_str().len() > 3000);

    // Specific mtimes (dirs last, their children are done).
    set_mtime(&src.join("small.txt"), 1_600_000_000, 123_456_789);
    set_mtime(&src.join("random.bin"), 946_684_800, 1);
    set_mtime(&src.join("empty.txt"), 2_000_000_000, 999_999_999);
    sh(
        "touch",
        &[
            OsStr::new("-h"),
            OsStr::new("-d"),
            OsStr::new("@1500000000.25"),
            src.join("link").as_os_str(),
        ],
    );
    set_mtime(&src.join("empty_dir"), 1_400_000_000, 500);
    set_mtime(&src.join("sticky"), 1_300_000_000, 0);

    let summary = env.backup([&src]);
    assert_eq!(summary["errors"], 0, "{summary}");
    assert!(summary["snapshot_id"].is_string());

    let target = env.path("target");
    let r = env.run([
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        target.as_os_str(),
    ]);
    r.expect_code(0);
    let out = restored(&target, &src);

    assert_trees_equal(&src, &out, &[Path::new("sparse.img")]);

    // Bytes of the big random file (also covered by the tree comparison).
    assert_eq!(fs::read(out.join("random.bin")).unwrap(), big);
    // Hard links are hard links again.
    let (a, b) = (
        fs::metadata(out.join("hard_a")).unwrap(),
        fs::metadata(out.join("hard_b")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "hard link pair restored as two files");
    assert_eq!(a.nlink(), 2);
    // The fifo is a fifo.
    assert!(fs::symlink_metadata(out.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    // Symlink targets.
    assert_eq!(
        fs::read_link(out.join("dangling")).unwrap(),
        PathBuf::from("/nonexistent/target")
    );
    // Non-UTF-8 names.
    assert_eq!(
        fs::read(restored(&target, &latin1)).unwrap(),
        b"latin-1 name"
    );
    // Long path.
    assert_eq!(
        fs::read(restored(&target, &deep).join("leaf.txt")).unwrap(),
        b"deep down"
    );
    // Modes and mtimes explicitly for a few.
    let m = fs::metadata(out.join("setuid")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o4711);
    let m = fs::metadata(out.join("small.txt")).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_600_000_000, 123_456_789));
    if root {
        let m = fs::metadata(out.join("owned.txt")).unwrap();
        assert_eq!((m.uid(), m.gid()), (1234, 5678));
    }
    if xattrs {
        assert_eq!(
            get_xattr(&out.join("xattr.txt"), "user.comment").as_deref(),
            Some("rewind test")
        );
        assert_eq!(
            get_xattr(&out.join("xattr.txt"), "user.other").as_deref(),
            Some("second")
        );
    }
    // The sparse file: same size, still sparse, same data where there is data.
    let rs = out.join("sparse.img");
    let md = fs::metadata(&rs).unwrap();
    assert_eq!(md.len(), sparse_len);
    assert!(
        md.blocks() * 512 < 16 << 20,
        "sparse file restored with {} blocks allocated",
        md.blocks()
    );
    let f = fs::File::open(&rs).unwrap();
    let mut buf = vec![0u8; head.len()];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, head);
    let mut buf = vec![0u8; tail.len()];
    f.read_exact_at(&mut buf, tail_at).unwrap();
    assert_eq!(buf, tail);
    let mut buf = vec![1u8; 65536];
    f.read_exact_at(&mut buf, 2 << 30).unwrap();
    assert!(buf.iter().all(|&b| b == 0), "hole does not read as zeros");
    let mut buf = vec![1u8; 4096];
    f.read_exact_at(&mut buf, sparse_len - 4096).unwrap();
    assert!(buf.iter().all(|&b| b == 0), "trailing hole is not zeros");
}

// ------------------------------------------------------------------ 3

#[test]
fn incremental_backup_reads_only_changed_files() {
    let env = Env::with_repo();
    let src = env.path("src");
    for i in 0..6 {
        write_random(&src.join(format!("sub{}/f{i}", i % 2)), 10_000 + i * 1000);
    }
    write(&src.join("empty"), b"");
    let n = 7;

    let s1 = env.backup([&src]);
    assert_eq!(s1["files_new"], n, "{s1}");
    assert_eq!(s1["files_unchanged"], 0, "{s1}");

    let s2 = env.backup([&src]);
    assert_eq!(s2["files_unchanged"], n, "{s2}");
    assert_eq!(s2["files_changed"], 0, "{s2}");
    assert_eq!(s2["files_new"], 0, "{s2}");
    assert_eq!(s2["bytes_read"], 0, "{s2}");

    // Same size, other content.
    let changed = src.join("sub1/f3");
    let new_content = random_bytes(13_000);
    fs::write(&changed, &new_content).unwrap();
    let s3 = env.backup([&src]);
    assert_eq!(s3["files_changed"], 1, "{s3}");
    assert_eq!(s3["files_unchanged"], n - 1, "{s3}");
    assert_eq!(s3["bytes_read"], 13_000, "{s3}");

    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 3);
    assert_eq!(
        snaps[2]["parent"], snaps[1]["id"],
        "the parent of an incremental backup is the previous snapshot"
    );

    let target = env.path("t");
    env.ok([
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        target.as_os_str(),
    ]);
    assert_trees_equal(&src, &restored(&target, &src), &[]);
}

// ------------------------------------------------------------------ 4

#[test]
fn point_in_time_selection_and_browsing() {
    let env = Env::with_repo();
    let src = env.path("src");
    let doc = src.join("doc.txt");
    write(&doc, b"old version\n");
    let bin = write_random(&src.join("data.bin"), 300_000);

    let s1 = env.backup([
        OsStr::new("--time"),
        OsStr::new("2026-01-10 10:00"),
        src.as_os_str(),
    ]);
    write(&doc, b"new version, longer than the old one\n");
    let s2 = env.backup([
        OsStr::new("--time"),
        OsStr::new("2026-02-10 10:00"),
        src.as_os_str(),
    ]);
    let (id1, id2) = (
        s1["snapshot_id"].as_str().unwrap().to_string(),
        s2["snapshot_id"].as_str().unwrap().to_string(),
    );
    assert_ne!(id1, id2);

    let restore = |spec: &str, extra: &[&str], target: &Path| {
        let mut args: Vec<&OsStr> = vec![OsStr::new("restore"), OsStr::new(spec)];
        args.extend(extra.iter().map(OsStr::new));
        args.push(OsStr::new("--target"));
        args.push(target.as_os_str());
        env.ok(args);
        fs::read(restored(target, &doc)).unwrap()
    };
    assert_eq!(
        restore("@2026-01-20", &[], &env.path("t1")),
        b"old version\n"
    );
    assert_eq!(
        restore("latest", &["--as-of", "2026-02-11"], &env.path("t2")),
        b"new version, longer than the old one\n"
    );
    assert_eq!(
        restore("latest", &["--as-of", "2026-01-10 10:30"], &env.path("t3")),
        b"old version\n"
    );
    // Nothing before the first snapshot.
    let r = env.run([
        OsStr::new("restore"),
        OsStr::new("@2026-01-01"),
        OsStr::new("--target"),
        env.path("t4").as_os_str(),
    ]);
    assert_ne!(
        r.code,
        Some(0),
        "a time before every snapshot restored something: {r}"
    );
    assert!(r.stderr.contains("no snapshot"), "{r}");
    assert!(!env.path("t4").exists());

    // ls
    let paths = ls_paths(&env, "latest");
    assert!(paths.contains(s(&doc)), "{paths:?}");
    let r = env.ok([
        OsStr::new("ls"),
        OsStr::new("-l"),
        OsStr::new(&id1[..8]),
        src.as_os_str(),
    ]);
    let line = r
        .out()
        .lines()
        .find(|l| l.ends_with(s(&doc)))
        .unwrap_or_else(|| panic!("ls -l does not list doc.txt: {r}"))
        .to_string();
    assert!(line.starts_with("-rw"), "{line}");
    assert!(
        line.contains(" 12 "),
        "size of the old version not shown: {line}"
    );

    // find: both snapshots hold doc.txt.
    let r = env.ok(["--json", "find", "doc.txt"]);
    let hits: Vec<serde_json::Value> = r
        .out()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let snaps: BTreeSet<&str> = hits
        .iter()
        .map(|h| h["snapshot"].as_str().unwrap())
        .collect();
    assert_eq!(snaps, BTreeSet::from([id1.as_str(), id2.as_str()]), "{r}");
    assert!(hits.iter().all(|h| h["path"] == s(&doc)), "{r}");
    let r = env.ok(["find", "doc.txt"]);
    assert!(
        r.out().contains(&id1[..8]) && r.out().contains(&id2[..8]),
        "{r}"
    );
    let r = env.ok(["find", "no-such-file.xyz"]);
    assert!(r.out().trim().is_empty(), "{r}");

    // diff
    let r = env.ok(["diff", &id1, &id2]);
    let want = format!("M    {}", s(&doc));
    assert!(
        r.out().lines().any(|l| l == want),
        "diff does not show {want:?}: {r}"
    );
    assert!(
        !r.out().contains("data.bin"),
        "unchanged file listed by diff: {r}"
    );

    // dump of a file: exact bytes.
    let r = env.ok([
        OsStr::new("dump"),
        OsStr::new("latest"),
        src.join("data.bin").as_os_str(),
    ]);
    assert!(r.stdout == bin, "dump of data.bin differs");
    let r = env.ok([OsStr::new("dump"), OsStr::new(&id1), doc.as_os_str()]);
    assert_eq!(r.stdout, b"old version\n");

    // dump of a directory: a tar.
    let r = env.ok([OsStr::new("dump"), OsStr::new("latest"), src.as_os_str()]);
    assert!(r.stdout.len() > 512, "dump of a directory is too short");
    assert_eq!(&r.stdout[257..262], b"ustar", "not a tar header");
    let mut tar = std::process::Command::new("tar")
        .args(["-tf", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    tar.stdin.take().unwrap().write_all(&r.stdout).unwrap();
    let o = tar.wait_with_output().unwrap();
    assert!(o.status.success(), "tar cannot read the dump");
    let listing = String::from_utf8_lossy(&o.stdout);
    assert!(
        listing.lines().any(|l| l == "src/doc.txt"),
        "tar listing: {listing}"
    );
    assert!(listing.lines().any(|l| l == "src/data.bin"), "{listing}");
    // And the file content in the tar is the right one.
    let dir = env.path("untar");
    fs::create_dir(&dir).unwrap();
    let mut tar = std::process::Command::new("tar")
        .arg("-xf")
        .arg("-")
        .arg("-C")
        .arg(&dir)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    tar.stdin.take().unwrap().write_all(&r.stdout).unwrap();
    assert!(tar.wait().unwrap().success());
    assert_eq!(fs::read(dir.join("src/data.bin")).unwrap(), bin);
}

// ------------------------------------------------------------------ 5

#[test]
fn backup_options() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("keep.txt"), b"keep");
    write(&src.join("a.tmp"), b"temp");
    write(&src.join("sub/b.tmp"), b"temp");
    write(&src.join("sub/keep2.txt"), b"keep");
    write(&src.join("secret/key.pem"), b"secret");
    write(&src.join("marked/.nobackup"), b"");
    write(&src.join("marked/data.txt"), b"marked");
    let mut tag = b"Signature: 8a477f597d28d172789f06886806bc55\n".to_vec();
    tag.extend_from_slice(b"# This file is a cache directory tag.\n");
    write(&src.join("cache/CACHEDIR.TAG"), &tag);
    write(&src.join("cache/blob"), b"cached");
    write(
        &src.join("fakecache/CACHEDIR.TAG"),
        b"Signature: not the right one\n",
    );
    write(&src.join("fakecache/blob"), b"not a cache");
    let exclude_file = env.path("excludes.txt");
    write(&exclude_file, b"# a comment\n\nsecret/\n");

    let s1 = env.backup([
        OsStr::new("--exclude"),
        OsStr::new("*.tmp"),
        OsStr::new("--exclude-file"),
        exclude_file.as_os_str(),
        OsStr::new("--exclude-if-present"),
        OsStr::new(".nobackup"),
        OsStr::new("--exclude-caches"),
        OsStr::new("--tag"),
        OsStr::new("daily"),
        OsStr::new("--tag"),
        OsStr::new("manual"),
        src.as_os_str(),
    ]);
    let id1 = s1["snapshot_id"].as_str().unwrap().to_string();
    let paths = ls_paths(&env, &id1);
    let has = |rel: &str| paths.contains(s(&src.join(rel)));
    assert!(has("keep.txt") && has("sub/keep2.txt"), "{paths:?}");
    assert!(!has("a.tmp") && !has("sub/b.tmp"), "--exclude: {paths:?}");
    assert!(
        !has("secret") && !has("secret/key.pem"),
        "--exclude-file: {paths:?}"
    );
    assert!(!has("marked/data.txt"), "--exclude-if-present: {paths:?}");
    assert!(
        !has("cache/blob") && !has("cache/CACHEDIR.TAG"),
        "--exclude-caches: {paths:?}"
    );
    assert!(
        has("fakecache/blob"),
        "a CACHEDIR.TAG without the signature must not exclude: {paths:?}"
    );

    // Without options everything is there (the exclusions above were the options').
    let s_all = env.backup([src.as_os_str()]);
    let all = ls_paths(&env, s_all["snapshot_id"].as_str().unwrap());
    for rel in ["a.tmp", "secret/key.pem", "marked/data.txt", "cache/blob"] {
        assert!(all.contains(s(&src.join(rel))), "{rel} missing: {all:?}");
    }

    // --dry-run writes nothing.
    write_random(&src.join("new.bin"), 200_000);
    let packs_before = packs(&env.repo);
    let snaps_before = env.snapshots().len();
    let d = env.backup([OsStr::new("--dry-run"), src.as_os_str()]);
    assert_eq!(d["dry_run"], true);
    assert!(d["snapshot_id"].is_null(), "{d}");
    assert_eq!(d["files_new"], 1, "{d}");
    assert!(d["bytes_added_raw"].as_u64().unwrap() >= 200_000, "{d}");
    assert_eq!(
        env.snapshots().len(),
        snaps_before,
        "dry run saved a snapshot"
    );
    assert_eq!(packs(&env.repo), packs_before, "dry run wrote packs");

    // --host and --tag filters.
    let sh_ = env.backup([
        OsStr::new("--host"),
        OsStr::new("otherhost"),
        src.as_os_str(),
    ]);
    let by_host = env.snapshots_args(["--host", "otherhost"]);
    assert_eq!(by_host.len(), 1, "{by_host:?}");
    assert_eq!(by_host[0]["hostname"], "otherhost");
    assert_eq!(by_host[0]["id"], sh_["snapshot_id"]);
    let tagged = env.snapshots_args(["--tag", "daily"]);
    assert_eq!(tagged.len(), 1, "{tagged:?}");
    assert_eq!(tagged[0]["id"].as_str().unwrap(), id1);
    assert_eq!(
        tagged[0]["tags"],
        serde_json::json!(["daily", "manual"]),
        "{tagged:?}"
    );
    assert_eq!(env.snapshots_args(["--tag", "daily,manual"]).len(), 1);
    assert_eq!(env.snapshots_args(["--tag", "daily,nope"]).len(), 0);
    assert_eq!(env.snapshots_args(["--tag", "nope"]).len(), 0);
    let r = env.ok(["snapshots", "--tag", "daily"]);
    assert!(
        r.out().contains(&id1[..8]) && r.out().contains("daily,manual"),
        "{r}"
    );

    // --stdin --stdin-filename
    let payload = random_bytes(150_000);
    let mut c = env.cmd();
    c.args(["--json", "backup", "--stdin", "--stdin-filename", "db.sql"])
        .stdin(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(&payload).unwrap();
    let o = child.wait_with_output().unwrap();
    let r = Run {
        code: o.status.code(),
        stdout: o.stdout,
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        what: "backup --stdin".into(),
    };
    r.expect_code(0);
    let sid = r.summary()["snapshot_id"].as_str().unwrap().to_string();
    let r = env.ok(["dump", &sid, "/db.sql"]);
    assert!(
        r.stdout == payload,
        "stdin backup does not dump back the same bytes"
    );

    // --stdin-from-command, success.
    let ok = env.backup([
        "--stdin-from-command",
        "--stdin-filename",
        "cmd.out",
        "--",
        "sh",
        "-c",
        "echo data",
    ]);
    let cid = ok["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(env.ok(["dump", &cid, "/cmd.out"]).stdout, b"data\n");

    // --stdin-from-command, the command fails: no snapshot.
    let before = env.snapshots().len();
    let r = env.run([
        "backup",
        "--stdin-from-command",
        "--",
        "sh",
        "-c",
        "echo partial; exit 3",
    ]);
    assert_ne!(r.code, Some(0), "a failing command was backed up: {r}");
    assert!(r.stderr.contains("failed"), "{r}");
    assert_eq!(
        env.snapshots().len(),
        before,
        "a failing command left a snapshot"
    );
    assert_eq!(snapshot_files(&env.repo), before);
    // And the repository is still fine.
    env.ok(["check"]);
}

// ------------------------------------------------------------------ 6

#[test]
fn restore_options() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("a.txt"), b"alpha\n");
    write(&src.join("b.log"), b"bravo\n");
    write(&src.join("sub/c.txt"), b"charlie\n");
    write(&src.join("sub/d.log"), b"delta\n");
    write_random(&src.join("big.bin"), 1 << 20);
    let id = env.backup([&src])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let restore = |extra: &[&OsStr], target: &Path| -> Run {
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("--json"),
            OsStr::new("restore"),
            OsStr::new(id.as_str()),
        ];
        args.extend_from_slice(extra);
        args.push(OsStr::new("--target"));
        args.push(target.as_os_str());
        env.run(args)
    };
    let o = |s: &'static str| OsStr::new(s);

    // --include
    let t = env.path("t_inc");
    restore(&[o("--include"), o("*.txt")], &t).expect_code(0);
    let r = restored(&t, &src);
    assert!(r.join("a.txt").is_file() && r.join("sub/c.txt").is_file());
    assert!(!r.join("b.log").exists() && !r.join("sub/d.log").exists());
    assert!(!r.join("big.bin").exists());

    // --exclude
    let t = env.path("t_exc");
    restore(
        &[o("--exclude"), o("*.log"), o("--exclude"), o("big.bin")],
        &t,
    )
    .expect_code(0);
    let r = restored(&t, &src);
    assert!(r.join("a.txt").is_file() && r.join("sub/c.txt").is_file());
    assert!(!r.join("b.log").exists() && !r.join("sub/d.log").exists());
    assert!(!r.join("big.bin").exists());
    let t = env.path("t_exc_dir");
    restore(&[o("--exclude"), o("sub/")], &t).expect_code(0);
    let r = restored(&t, &src);
    assert!(r.join("a.txt").is_file() && !r.join("sub").exists());

    // Full restore, then twice: the second finds everything up to date.
    let t = env.path("t_full");
    let first = restore(&[], &t);
    first.expect_code(0);
    assert_eq!(first.summary()["files_restored"], 5, "{first}");
    let full = restored(&t, &src);
    assert_trees_equal(&src, &full, &[]);
    let second = restore(&[], &t);
    second.expect_code(0);
    let s2 = second.summary();
    assert_eq!(s2["files_restored"], 0, "{second}");
    assert_eq!(s2["files_skipped"], 5, "{second}");
    let text = env.ok([
        OsStr::new("restore"),
        OsStr::new(id.as_str()),
        OsStr::new("--target"),
        t.as_os_str(),
    ]);
    assert!(
        text.out().contains("5 files already up to date"),
        "restore twice does not report files up to date: {text}"
    );

    // --overwrite never keeps a modified file.
    let a = full.join("a.txt");
    fs::write(&a, b"changed locally, and longer\n").unwrap();
    restore(&[o("--overwrite"), o("never")], &t).expect_code(0);
    assert_eq!(fs::read(&a).unwrap(), b"changed locally, and longer\n");
    // A missing file is still restored with never.
    fs::remove_file(full.join("b.log")).unwrap();
    restore(&[o("--overwrite"), o("never")], &t).expect_code(0);
    assert_eq!(fs::read(full.join("b.log")).unwrap(), b"bravo\n");

    // Default (if-changed) rewrites the file whose content and mtime changed.
    let r = restore(&[], &t);
    r.expect_code(0);
    assert_eq!(fs::read(&a).unwrap(), b"alpha\n");
    assert_eq!(r.summary()["files_restored"], 1, "{r}");
    assert_trees_equal(&src, &full, &[]);

    // --overwrite always rewrites even identical files.
    let r = restore(&[o("--overwrite"), o("always")], &t);
    r.expect_code(0);
    assert_eq!(r.summary()["files_restored"], 5, "{r}");

    // --delete removes what the snapshot lacks.
    write(&full.join("extra.txt"), b"not in the snapshot");
    write(&full.join("sub/extra_dir/x"), b"not in the snapshot");
    let r = restore(&[o("--delete")], &t);
    r.expect_code(0);
    assert!(!full.join("extra.txt").exists(), "--delete left a file");
    assert!(!full.join("sub/extra_dir").exists(), "--delete left a dir");
    assert!(r.summary()["deleted"].as_u64().unwrap() >= 2, "{r}");
    assert_trees_equal(&src, &full, &[]);
    // --delete with filters is refused.
    let r = restore(&[o("--delete"), o("--include"), o("*.txt")], &t);
    assert_ne!(r.code, Some(0), "{r}");

    // --verify
    let t = env.path("t_verify");
    let r = restore(&[o("--verify")], &t);
    r.expect_code(0);
    assert_eq!(r.summary()["verified"], 5, "{r}");

    // --dry-run writes nothing.
    let t = env.path("t_dry");
    let r = restore(&[o("--dry-run")], &t);
    r.expect_code(0);
    assert_eq!(r.summary()["files_restored"], 5, "{r}");
    assert!(!t.exists(), "dry run created the target");
    fs::write(&a, b"changed again!\n").unwrap();
    let r = restore(&[o("--dry-run"), o("--delete")], &env.path("t_full"));
    r.expect_code(0);
    assert_eq!(r.summary()["files_restored"], 1, "{r}");
    assert_eq!(fs::read(&a).unwrap(), b"changed again!\n", "dry run wrote");

    // SNAPSHOT:/sub/path restores only that subtree, into the target.
    let t = env.path("t_sub");
    let spec = format!("{id}:{}", s(&src.join("sub")));
    env.ok([
        OsStr::new("restore"),
        OsStr::new(&spec),
        OsStr::new("--target"),
        t.as_os_str(),
    ]);
    let mut names: Vec<_> = fs::read_dir(&t)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["c.txt", "d.log"], "subtree restore");
    assert_eq!(fs::read(t.join("c.txt")).unwrap(), b"charlie\n");
    // A single file.
    let t = env.path("t_one");
    let spec = format!("latest:{}", s(&src.join("a.txt")));
    env.ok([
        OsStr::new("restore"),
        OsStr::new(&spec),
        OsStr::new("--target"),
        t.as_os_str(),
    ]);
    let names: Vec<_> = fs::read_dir(&t)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["a.txt"]);
    assert_eq!(fs::read(t.join("a.txt")).unwrap(), b"alpha\n");
    // A path that is not in the snapshot.
    let spec = format!("latest:{}", s(&src.join("nope")));
    let r = env.run([
        OsStr::new("restore"),
        OsStr::new(&spec),
        OsStr::new("--target"),
        env.path("t_nope").as_os_str(),
    ]);
    assert_ne!(r.code, Some(0), "{r}");
    assert!(r.stderr.contains("not in the snapshot"), "{r}");
}

// ------------------------------------------------------------------ more

#[test]
fn repository_inside_the_source_is_not_backed_up() {
    let mut env = Env::new();
    let src = env.path("src");
    write(&src.join("a.txt"), b"a");
    env.repo = src.join("repo");
    env.ok(["init"]);
    env.backup([&src]);
    let paths = ls_paths(&env, "latest");
    assert!(paths.contains(s(&src.join("a.txt"))), "{paths:?}");
    assert!(
        !paths.iter().any(|p| p.starts_with(s(&env.repo))),
        "the repository was backed up into itself: {paths:?}"
    );
}

/// Two paths of the target are hard links of one file (as restored from an
/// older snapshot); the snapshot being restored has them as two different
/// files. Each must end up with its own content.
#[test]
fn restore_over_hard_linked_target_files() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("a"), b"shared\n");
    fs::hard_link(src.join("a"), src.join("b")).unwrap();
    let old = env.backup([&src])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The link is broken (an editor saving b by rename, say) and both change.
    fs::remove_file(src.join("b")).unwrap();
    write(&src.join("b"), b"b is now a different, longer file\n");
    write(&src.join("a"), b"a changed too\n");
    env.backup([&src]);

    let t = env.path("t");
    env.ok([
        OsStr::new("restore"),
        OsStr::new(&old),
        OsStr::new("--target"),
        t.as_os_str(),
    ]);
    let out = restored(&t, &src);
    assert_eq!(
        fs::metadata(out.join("a")).unwrap().ino(),
        fs::metadata(out.join("b")).unwrap().ino()
    );
    let r = env.run([
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        t.as_os_str(),
    ]);
    r.expect_code(0);
    assert_eq!(
        fs::read_to_string(out.join("a")).unwrap(),
        "a changed too\n",
        "{r}"
    );
    assert_eq!(
        fs::read_to_string(out.join("b")).unwrap(),
        "b is now a different, longer file\n",
        "{r}"
    );
}

/// A file in the target that is a hard link of a file outside the target
/// must be replaced, not written through.
#[test]
fn restore_does_not_write_through_hard_links_out_of_the_target() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("a.txt"), b"content from the snapshot\n");
    env.backup([&src]);
    let t = env.path("t");
    let out = restored(&t, &src);
    fs::create_dir_all(&out).unwrap();
    let outside = env.path("outside.txt");
    write(&outside, b"precious file outside the target\n");
    chmod(&outside, 0o600);
    fs::hard_link(&outside, out.join("a.txt")).unwrap();

    env.ok([
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        t.as_os_str(),
    ]);
    assert_eq!(
        fs::read_to_string(out.join("a.txt")).unwrap(),
        "content from the snapshot\n"
    );
    assert_eq!(
        fs::read_to_string(&outside).unwrap(),
        "precious file outside the target\n",
        "the restore wrote through a hard link to a file outside the target"
    );
    assert_eq!(fs::metadata(&outside).unwrap().mode() & 0o777, 0o600);
}

/// `--compression` (or REWIND_COMPRESSION) chooses how new data is
/// stored; snapshots written at different levels restore the same, and a
/// wrong level is refused before anything is written.
#[test]
fn compression_is_chosen_per_run_and_every_level_restores() {
    let env = Env::with_repo();
    // Words in a pseudo-random order: text, compressible, unlike itself
    // at any distance.
    const WORDS: [&str; 16] = [
        "backup", "restore", "snapshot", "the", "of", "a", "disk", "file", "year", "day", "ransom",
        "copy", "keep", "old", "new", "index",
    ];
    let mut x = 12345u64;
    let mut text = Vec::new();
    while text.len() < 3 << 20 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        text.extend_from_slice(WORDS[(x >> 60) as usize].as_bytes());
        text.push(if (x >> 40) & 7 == 0 { b'\n' } else { b' ' });
    }
    let stored = |dir: &str, how: &[&str]| -> (u64, u64) {
        let src = env.path(dir);
        // Each run's file differs, so that each stores new data.
        let mut data = dir.as_bytes().to_vec();
        data.extend_from_slice(&text);
        write(&src.join("log.txt"), &data);
        let mut args: Vec<&OsStr> = how.iter().map(OsStr::new).collect();
        args.push(src.as_os_str());
        let s = env.backup(args);
        (
            s["bytes_added_raw"].as_u64().unwrap(),
            s["bytes_added_stored"].as_u64().unwrap(),
        )
    };

    let bad = env.run(["backup", "--compression", "ultra", s(&env.path("x"))]);
    bad.expect_code(2);
    assert!(
        bad.stderr.contains("--compression \"ultra\"") && bad.stderr.contains("off"),
        "{bad}"
    );
    assert!(env.snapshots().is_empty(), "a refused run wrote a snapshot");

    let (raw, off) = stored("off", &["--compression", "off"]);
    assert!(off >= raw, "off stored {off} of {raw} bytes");
    let (_, fast) = stored("fast", &["--compression", "fast"]);
    let (_, default) = stored("default", &[]);
    let (_, high) = stored("high", &["--compression", "9"]);
    assert!(fast < raw / 2, "fast stored {fast} of {raw}");
    assert!(
        high < default && default < fast,
        "high {high}, default {default}, fast {fast}"
    );

    // The variable, as the agent's jobs and scripts set it.
    let mut c = env.cmd();
    c.env("REWIND_COMPRESSION", "nope")
        .args(["backup", s(&env.path("off"))]);
    let r = run_cmd(c);
    r.expect_code(2);

    for dir in ["off", "fast", "default", "high"] {
        let t = env.path(format!("r-{dir}"));
        env.ok([
            "restore",
            "latest",
            "--path",
            s(&env.path(dir)),
            "--target",
            s(&t),
        ]);
        assert_trees_equal(&env.path(dir), &restored(&t, &env.path(dir)), &[]);
    }
    env.ok(["check", "--read-data"]);
}
