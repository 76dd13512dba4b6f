//! Regressions found by review (2026-11-26), one test each.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;

use common::*;

/// `rewind backup /` backed up nothing and exited 0. Excludes keep this
/// test to its own directory under / (gitignore negation).
#[test]
fn backing_up_the_root_directory_stores_its_entries() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("a.txt"), b"root test");
    // root = /tmp/rewind-it-XXXX: allow only the path down to it.
    let comps: Vec<String> = env
        .root
        .components()
        .skip(1)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let mut args: Vec<String> = vec!["backup".into(), "/".into()];
    let mut prefix = String::new();
    for c in &comps {
        args.push("--exclude".into());
        args.push(format!("{prefix}/*"));
        prefix = format!("{prefix}/{c}");
        args.push("--exclude".into());
        args.push(format!("!{prefix}"));
    }
    let mut c = env.cmd();
    c.arg("--json").args(&args);
    let r = run_cmd(c);
    assert!(r.code == Some(0) || r.code == Some(3), "{r}");
    let s = r.summary();
    assert!(s["files_new"].as_u64().unwrap() >= 1, "nothing stored: {r}");
    let r = env.ok([
        OsStr::new("dump"),
        OsStr::new("latest"),
        src.join("a.txt").as_os_str(),
    ]);
    assert_eq!(r.stdout, b"root test");
}

/// Restoring a symlink where the target holds a real directory removed the
/// whole directory tree without --delete.
#[test]
fn restore_never_removes_a_directory_in_the_way() {
    let env = Env::with_repo();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    std::os::unix::fs::symlink("elsewhere", src.join("build")).unwrap();
    env.backup([&src]);
    let t = env.path("t");
    let in_the_way = restored(&t, &src).join("build");
    write(&in_the_way.join("precious.txt"), b"keep me");
    let r = env.run([
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        t.as_os_str(),
    ]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains("build") && r.stderr.contains("directory is in the way"),
        "{r}"
    );
    assert_eq!(
        fs::read(in_the_way.join("precious.txt")).unwrap(),
        b"keep me"
    );
}

/// `--delete` left entries inside directories that are empty in the snapshot.
#[test]
fn delete_empties_directories_that_are_empty_in_the_snapshot() {
    let env = Env::with_repo();
    let src = env.path("src");
    fs::create_dir_all(src.join("cache")).unwrap();
    write(&src.join("a.txt"), b"a");
    env.backup([&src]);
    let t = env.path("t");
    let junk = restored(&t, &src).join("cache/junk");
    write(&junk, b"junk");
    env.ok([
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--delete"),
        OsStr::new("--target"),
        t.as_os_str(),
    ]);
    assert!(!junk.exists(), "--delete kept {}", junk.display());
    assert!(restored(&t, &src).join("cache").is_dir());
}

/// Conflicting arguments are usage errors: exit 2, before any password.
#[test]
fn conflicting_arguments_exit_2() {
    let env = Env::with_repo();
    let r = env.run([
        "restore",
        "latest",
        "--delete",
        "--include",
        "x",
        "--target",
        "t",
    ]);
    assert_eq!(r.code, Some(2), "{r}");
    let r = env.run(["backup"]);
    assert_eq!(r.code, Some(2), "{r}");
    let r = env.run(["restore", "latest:/a/../b", "--target", "t"]);
    assert_eq!(r.code, Some(2), "{r}");
}

/// A path inside the repository cannot be backed up (it would back itself up).
#[test]
fn the_repository_refuses_to_back_itself_up() {
    let env = Env::with_repo();
    let r = env.run([OsStr::new("backup"), env.repo.join("data").as_os_str()]);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("inside the repository"), "{r}");
    assert!(env.snapshots().is_empty());
}

/// `key passwd` on the default repository keeps its key file in step, so
/// unattended backups go on working.
#[test]
fn key_passwd_updates_the_default_key_file() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a.txt"), b"a");
    let mut c = env.bare_cmd();
    c.arg("backup").arg(&src);
    run_cmd(c).expect_code(0);
    let new = env.path("new-password");
    fs::write(&new, b"a new password\r\n").unwrap();
    let mut c = env.bare_cmd();
    c.args(["key", "passwd", "--new-password-file"]).arg(&new);
    run_cmd(c).expect_code(0);
    let key_file = env.path("config/rewind/default-repo.password");
    assert_eq!(fs::read(&key_file).unwrap(), b"a new password\n");
    assert_eq!(fs::metadata(&key_file).unwrap().mode() & 0o777, 0o600);
    let mut c = env.bare_cmd();
    c.arg("backup").arg(&src);
    run_cmd(c).expect_code(0);
    // The CRLF file opens it too (the \r is not part of the password).
    let mut c = env.bare_cmd();
    c.arg("--password-file").arg(&new).arg("snapshots");
    run_cmd(c).expect_code(0);
}

/// A location without a repository is reported as such (exit 10) before
/// any password is asked for.
#[test]
fn no_repository_is_reported_before_asking_for_a_password() {
    let env = Env::new();
    let mut c = env.bare_cmd();
    c.arg("--repo")
        .arg(env.path("nothing-here"))
        .arg("snapshots");
    let r = run_cmd(c);
    assert_eq!(r.code, Some(10), "{r}");
    assert!(r.stderr.contains("no rewind repository"), "{r}");
}

/// A restore that cannot write a file (its data is damaged) leaves the
/// existing file in the target as it was, and no temporary file behind.
#[test]
fn a_failed_restore_keeps_the_existing_file() {
    let env = Env::with_repo();
    let src = env.path("src");
    write_random(&src.join("data.bin"), 300_000);
    env.backup([&src]);
    let t = env.path("t");
    let existing = restored(&t, &src).join("data.bin");
    write(&existing, b"the user's own version");
    for p in packs(&env.repo) {
        let mut b = std::fs::read(&p).unwrap();
        let i = b.len() / 3;
        b[i] ^= 1;
        std::fs::write(&p, b).unwrap();
    }
    let r = env.run([
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--overwrite"),
        OsStr::new("always"),
        OsStr::new("--target"),
        t.as_os_str(),
    ]);
    assert_eq!(r.code, Some(1), "{r}");
    assert_eq!(std::fs::read(&existing).unwrap(), b"the user's own version");
    let leftovers: Vec<_> = std::fs::read_dir(existing.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".rewind-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
