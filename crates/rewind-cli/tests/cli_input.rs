//! End-to-end tests of what the user hands the CLI and of how it ends:
//! empty or unknown snapshot names, missing sources and files, `init` onto
//! a place that is not empty, a restore target that is a file, things in
//! the way of a restore, Ctrl-C and SIGTERM, and a stdout closed early.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Every path below `dir` (files and directories), relative, sorted.
fn listing(dir: &Path) -> Vec<PathBuf> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().to_path_buf());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

// ------------------------------------------------------------ snapshots

#[test]
fn an_empty_snapshot_argument_is_a_usage_error() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("a.txt"), b"alpha\n");
    env.backup([&src]);
    let target = env.path("t");
    let t = s(&target);
    let inside = format!(":{}", s(&src));
    let cases: Vec<Vec<&str>> = vec![
        vec!["restore", "", "--target", t],
        vec!["restore", " ", "--target", t],
        vec!["restore", &inside, "--target", t],
        vec!["ls", ""],
        vec!["dump", "", "/"],
        vec!["diff", "", "latest"],
        vec!["diff", "latest", ""],
        vec!["scan", ""],
        vec!["mark", "clean", ""],
        vec!["protect", ""],
        vec!["unprotect", ""],
        vec!["backup", "--parent", "", s(&src)],
    ];
    for args in cases {
        let r = env.run(&args);
        r.expect_code(2);
        assert!(
            r.stderr.contains("snapshot argument is empty"),
            "{args:?}: {r}"
        );
        assert!(r.out().is_empty(), "{args:?}: {r}");
    }
    assert!(!target.exists(), "a refused restore created its target");
    assert_eq!(
        env.snapshots().len(),
        1,
        "a refused backup saved a snapshot"
    );
    assert!(env.snapshots()[0]["protected"] == false);
}

#[test]
fn an_unknown_snapshot_and_a_missing_path_are_both_usage_errors() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("a.txt"), b"alpha\n");
    env.backup([&src]);
    let target = env.path("t");
    let r = env.run(["restore", "deadbeef", "--target", s(&target)]);
    r.expect_code(2);
    assert!(r.stderr.contains("no snapshot matches deadbeef"), "{r}");
    let spec = format!("latest:{}", s(&src.join("nope")));
    let r = env.run(["restore", &spec, "--target", s(&target)]);
    r.expect_code(2);
    assert!(r.stderr.contains("not in the snapshot"), "{r}");
    assert!(!target.exists());
    for args in [
        vec!["ls", "deadbeef"],
        vec!["dump", "deadbeef", "/"],
        vec!["ls", "@2001-01-01"],
        vec!["ls", "latest", "--host", "no-such-host"],
    ] {
        let r = env.run(&args);
        r.expect_code(2);
        assert!(r.stderr.contains("no snapshot matches"), "{args:?}: {r}");
    }
}

// -------------------------------------------------------------- backup

#[test]
fn one_missing_source_among_several_backs_up_the_rest_and_exits_3() {
    let env = Env::with_repo();
    let here = env.path("here");
    let also = env.path("also.txt");
    write(&here.join("a.txt"), b"alpha\n");
    write(&also, b"also\n");
    let gone = env.path("gone");
    let gone_deep = env.path("no/such/dir/file");
    let mut c = env.cmd();
    c.arg("--json")
        .arg("backup")
        .args([&here, &gone, &also, &gone_deep]);
    let r = run_cmd(c);
    r.expect_code(3);
    assert!(r.stderr.contains(s(&gone)), "{r}");
    assert!(r.stderr.contains(s(&gone_deep)), "{r}");
    assert!(r.stderr.contains("does not exist"), "{r}");
    let summary = r.summary();
    assert_eq!(summary["errors"], 2, "{r}");
    assert_eq!(summary["files_new"], 2, "{r}");
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 1);
    let paths: Vec<&str> = snaps[0]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(paths, [s(&also), s(&here)]);
    let t = env.path("t");
    env.ok(["restore", "latest", "--target", s(&t)]);
    assert_trees_equal(&here, &restored(&t, &here), &[]);
    assert_eq!(fs::read(restored(&t, &also)).unwrap(), b"also\n");
    assert!(!restored(&t, &gone).exists());
    assert!(repo_files(&env.repo, "running").is_empty());
}

#[test]
fn a_backup_whose_every_source_is_missing_is_refused() {
    let env = Env::with_repo();
    let (a, b) = (env.path("gone"), env.path("also/gone"));
    let r = env.run([OsStr::new("backup"), a.as_os_str(), b.as_os_str()]);
    r.expect_code(2);
    assert!(r.stderr.contains("nothing to back up"), "{r}");
    assert!(r.stderr.contains(s(&a)) && r.stderr.contains(s(&b)), "{r}");
    assert_eq!(snapshot_files(&env.repo), 0);
    assert!(repo_files(&env.repo, "running").is_empty());
}

#[test]
fn a_missing_exclude_file_is_a_usage_error_naming_it() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("a.txt"), b"alpha\n");
    let missing = env.path("excludes.txt");
    let r = env.run([
        OsStr::new("backup"),
        OsStr::new("--exclude-file"),
        missing.as_os_str(),
        src.as_os_str(),
    ]);
    r.expect_code(2);
    assert!(r.stderr.contains(s(&missing)), "{r}");
    assert!(r.stderr.contains("exclude file"), "{r}");
    assert_eq!(snapshot_files(&env.repo), 0);
}

// ---------------------------------------------------------------- init

#[test]
fn init_refuses_a_directory_of_other_files() {
    let env = Env::new();
    let dir = env.path("documents");
    write(&dir.join("thesis.odt"), b"years of work");
    write(&dir.join("photos/cat.jpg"), b"meow");
    let before = listing(&dir);
    let mut c = env.cmd();
    c.env("REWIND_REPOSITORY", &dir).arg("init");
    let r = run_cmd(c);
    r.expect_code(1);
    assert!(r.stderr.contains(s(&dir)), "{r}");
    assert!(r.stderr.contains("not empty"), "{r}");
    assert!(r.stderr.contains("thesis.odt"), "{r}");
    assert!(!r.stderr.contains("already exists"), "{r}");
    assert_eq!(listing(&dir), before, "init changed a foreign directory");
}

/// A directory laid out like a restic repository.
fn restic_like(dir: &Path) {
    let hex = |c: char| std::iter::repeat_n(c, 64).collect::<String>();
    write(&dir.join("config"), &random_bytes(155));
    write(&dir.join("keys").join(hex('1')), br#"{"kdf":"scrypt"}"#);
    write(&dir.join("snapshots").join(hex('2')), &random_bytes(300));
    write(&dir.join("index").join(hex('3')), &random_bytes(300));
    write(&dir.join("data/44").join(hex('4')), &random_bytes(3000));
    fs::create_dir_all(dir.join("locks")).unwrap();
}

#[test]
fn init_refuses_a_restic_repository() {
    let env = Env::new();
    let dir = env.path("restic-repo");
    restic_like(&dir);
    let before = listing(&dir);
    let mut c = env.cmd();
    c.env("REWIND_REPOSITORY", &dir).arg("init");
    let r = run_cmd(c);
    r.expect_code(1);
    assert!(r.stderr.contains(s(&dir)), "{r}");
    assert!(r.stderr.contains("not a rewind"), "{r}");
    assert!(!r.stderr.contains("already exists"), "{r}");
    assert_eq!(listing(&dir), before, "init changed a foreign repository");
    // Without its config, its other files still say that it is not empty.
    fs::remove_file(dir.join("config")).unwrap();
    fs::remove_dir(dir.join("locks")).unwrap();
    let before = listing(&dir);
    let mut c = env.cmd();
    c.env("REWIND_REPOSITORY", &dir).arg("init");
    let r = run_cmd(c);
    r.expect_code(1);
    assert!(r.stderr.contains(s(&dir)), "{r}");
    assert!(r.stderr.contains("no config"), "{r}");
    assert_eq!(listing(&dir), before);
}

#[test]
fn init_into_an_empty_existing_directory_works() {
    let env = Env::new();
    fs::create_dir_all(&env.repo).unwrap();
    env.ok(["init"]);
    assert!(env.repo.join("config").is_file());
    let src = env.path("src");
    write(&src.join("a.txt"), b"alpha\n");
    env.backup([&src]);
    // A second init still says that a repository is there.
    let r = env.run(["init"]);
    r.expect_code(1);
    assert!(r.stderr.contains("already exists"), "{r}");
}

// ------------------------------------------------------------- restore

#[test]
fn a_restore_target_that_is_a_file_is_a_usage_error() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("a.txt"), b"alpha\n");
    env.backup([&src]);
    let file = env.path("target.txt");
    write(&file, b"not a directory");
    for extra in [&[][..], &["--dry-run"][..]] {
        let mut args = vec!["restore", "latest", "--target", s(&file)];
        args.extend(extra);
        let r = env.run(&args);
        r.expect_code(2);
        assert!(
            r.stderr
                .contains(&format!("--target {} is a file, not a directory", s(&file))),
            "{r}"
        );
        assert!(!r.stderr.contains("os error"), "{r}");
    }
    assert_eq!(fs::read(&file).unwrap(), b"not a directory");
}

#[test]
fn restore_delete_replaces_a_directory_in_the_way() {
    let env = Env::with_repo();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    std::os::unix::fs::symlink("elsewhere", src.join("build")).unwrap();
    write(&src.join("notes.txt"), b"notes\n");
    std::os::unix::fs::symlink("notes.txt", src.join("link")).unwrap();
    env.backup([&src]);
    let t = env.path("t");
    let base = restored(&t, &src);
    write(&base.join("build/stale/object.o"), b"old build output");
    write(
        &base.join("notes.txt/inner"),
        b"a directory where a file goes",
    );
    fs::create_dir_all(base.join("link")).unwrap();
    let r = env.run(["--json", "restore", "latest", "--delete", "--target", s(&t)]);
    r.expect_code(0);
    assert_eq!(
        fs::read_link(base.join("build")).unwrap(),
        PathBuf::from("elsewhere")
    );
    assert_eq!(
        fs::read_link(base.join("link")).unwrap(),
        PathBuf::from("notes.txt")
    );
    assert_eq!(fs::read(base.join("notes.txt")).unwrap(), b"notes\n");
    assert_trees_equal(&src, &base, &[]);
    assert_eq!(r.summary()["deleted"], 3, "{r}");
}

#[test]
fn a_directory_in_the_way_is_a_conflict_not_up_to_date() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("notes.txt"), b"notes\n");
    std::os::unix::fs::symlink("notes.txt", src.join("link")).unwrap();
    env.backup([&src]);
    let t = env.path("t");
    let base = restored(&t, &src);
    write(&base.join("notes.txt/precious"), b"keep me");
    write(&base.join("link/precious"), b"keep me too");
    for overwrite in ["never", "if-changed", "always"] {
        let r = env.run([
            "--json",
            "restore",
            "latest",
            "--overwrite",
            overwrite,
            "--target",
            s(&t),
        ]);
        r.expect_code(1);
        let summary = r.summary();
        assert_eq!(summary["files_skipped"], 0, "{overwrite}: {r}");
        assert_eq!(summary["errors"], 2, "{overwrite}: {r}");
        for name in ["notes.txt", "link"] {
            assert!(
                r.stderr
                    .lines()
                    .any(|l| l.contains(name) && l.contains("directory")),
                "{overwrite}: {name} not reported: {r}"
            );
        }
        assert_eq!(
            fs::read(base.join("notes.txt/precious")).unwrap(),
            b"keep me"
        );
        assert_eq!(
            fs::read(base.join("link/precious")).unwrap(),
            b"keep me too"
        );
    }
    // The text summary does not count them as up to date either.
    let r = env.run(["restore", "latest", "--target", s(&t)]);
    r.expect_code(1);
    assert!(r.out().contains("0 files already up to date"), "{r}");
}

// ------------------------------------------------------------- signals

/// Waits until the repository has a running marker (or the child ended).
fn wait_for_marker(env: &Env, child: &mut Child) {
    let start = Instant::now();
    while repo_files(&env.repo, "running").is_empty() {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the backup ended ({st}) before its running marker was seen");
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no running marker"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Names of leftover temporaries anywhere in the repository.
fn temporaries(repo: &Path) -> Vec<PathBuf> {
    listing(repo)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".tmp-"))
        .collect()
}

#[track_caller]
fn assert_clean_after_interrupt(env: &Env, r: &Run) {
    r.expect_code(130);
    assert!(r.stderr.contains("interrupted"), "{r}");
    assert!(!r.stderr.contains("panicked"), "{r}");
    assert!(
        repo_files(&env.repo, "running").is_empty(),
        "running marker left: {r}"
    );
    assert_eq!(snapshot_files(&env.repo), 0, "a snapshot was written: {r}");
    assert_eq!(temporaries(&env.repo), Vec::<PathBuf>::new());
    env.ok(["check", "--read-data"]);
}

fn finish(child: Child, what: &str) -> Run {
    let o = child.wait_with_output().unwrap();
    Run {
        code: o.status.code(),
        stdout: o.stdout,
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        what: what.into(),
    }
}

fn interrupt_a_tree_backup(signal: Signal) {
    let env = Env::with_repo();
    let src = env.path("src");
    // Enough to take seconds: the signal lands while files are read.
    random_tree(&src, 400, 256 << 10);
    let mut c = env.cmd();
    c.arg("backup").arg(&src);
    let mut child = c.spawn().unwrap();
    wait_for_marker(&env, &mut child);
    kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    let r = finish(child, "rewind backup (interrupted)");
    assert_clean_after_interrupt(&env, &r);
    // The next backup works, and uses what the interrupted one uploaded.
    env.backup([&src]);
    let t = env.path("t");
    env.ok(["restore", "latest", "--target", s(&t)]);
    assert_trees_equal(&src, &restored(&t, &src), &[]);
}

#[test]
fn sigterm_stops_a_backup_cleanly() {
    interrupt_a_tree_backup(Signal::SIGTERM);
}

#[test]
fn sigint_stops_a_backup_cleanly() {
    interrupt_a_tree_backup(Signal::SIGINT);
}

#[test]
fn sigint_stops_a_stream_backup_cleanly() {
    let env = Env::with_repo();
    let mut c = env.cmd();
    c.args(["backup", "--stdin", "--stdin-filename", "dump.sql"])
        .stdin(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let chunk = random_bytes(1 << 20);
    stdin.write_all(&chunk).unwrap();
    wait_for_marker(&env, &mut child);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    // The stream goes on: the backup stops at its next chunk, not at the end.
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(60), "still running");
        if stdin.write_all(&chunk).is_err() {
            break;
        }
    }
    drop(stdin);
    let r = finish(child, "rewind backup --stdin (interrupted)");
    assert_clean_after_interrupt(&env, &r);
}

#[test]
fn plain_prune_removes_the_markers_of_killed_backups() {
    let env = Env::with_repo();
    for _ in 0..3 {
        let before = repo_files(&env.repo, "running").len();
        let mut c = env.cmd();
        c.args(["backup", "--stdin"]).stdin(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&random_bytes(100_000)).unwrap();
        let start = Instant::now();
        while repo_files(&env.repo, "running").len() == before {
            assert!(start.elapsed() < Duration::from_secs(60), "no marker");
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL: no chance to clean up
        child.wait().unwrap();
    }
    assert_eq!(repo_files(&env.repo, "running").len(), 3);
    env.ok(["prune"]);
    assert_eq!(
        repo_files(&env.repo, "running"),
        Vec::<PathBuf>::new(),
        "prune left the markers of dead backups"
    );
    env.ok(["check"]);
}

// -------------------------------------------------------------- output

/// Runs `rewind ARGS` with a stdout that is closed before anything is
/// written to it.
fn with_closed_stdout(env: &Env, args: &[&str]) -> Run {
    let mut c = env.cmd();
    c.args(args);
    let mut child = c.spawn().unwrap();
    drop(child.stdout.take());
    finish(child, &format!("rewind {} >&-", args.join(" ")))
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let env = Env::with_repo();
    let src = env.path("src");
    write_random(&src.join("big.bin"), 1 << 20);
    random_tree(&src.join("many"), 300, 10);
    env.backup([&src]);
    write(&src.join("new.txt"), b"new\n");
    let big = src.join("big.bin");
    let many = src.join("many");
    let t = env.path("t");
    for args in [
        vec!["dump", "latest", s(&big)],
        vec!["dump", "latest", s(&src)],
        vec!["ls", "latest", "-R"],
        vec!["ls", "-l", "latest", s(&many)],
        vec!["--json", "ls", "latest"],
        vec!["snapshots"],
        vec!["--json", "snapshots"],
        vec!["find", "f0*"],
        vec!["backup", s(&src)],
        vec!["--json", "backup", s(&src)],
        vec!["diff", "latest", "latest"],
        vec!["stats"],
        vec!["policy", "show"],
        vec!["key", "list"],
        vec!["restore", "latest", "--target", s(&t)],
        vec!["forget", "--keep-last", "100", "--allow-short-history"],
        vec!["prune", "--dry-run"],
    ] {
        let r = with_closed_stdout(&env, &args);
        assert_eq!(r.code, Some(0), "{r}");
        assert!(
            !r.stderr.contains("Broken pipe")
                && !r.stderr.contains("panicked")
                && !r.stderr.contains("error"),
            "{r}"
        );
    }
    assert_eq!(env.snapshots().len(), 3, "the backups were saved");
    assert_trees_equal(&src, &restored(&t, &src), &[]);
}

#[test]
fn a_closed_stdout_keeps_the_exit_code_of_the_work_done() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("notes.txt"), b"notes\n");
    env.backup([&src]);
    // A restore that could not restore everything still says so.
    let t = env.path("t");
    write(&restored(&t, &src).join("notes.txt/precious"), b"keep me");
    let r = with_closed_stdout(&env, &["restore", "latest", "--target", s(&t)]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("directory is in the way"), "{r}");
    assert!(!r.stderr.contains("Broken pipe"), "{r}");
    // A backup that could not read a path given still exits 3.
    let gone = env.path("gone");
    let r = with_closed_stdout(&env, &["backup", s(&src), s(&gone)]);
    assert_eq!(r.code, Some(3), "{r}");
    assert!(r.stderr.contains(s(&gone)), "{r}");
    assert!(!r.stderr.contains("Broken pipe"), "{r}");
    assert_eq!(env.snapshots().len(), 2);
}
