//! `rewind prune` and `forget --prune` with the real binary: space given
//! back, nothing lost, a running backup respected, kill -9 at many points,
//! damage refused before any change, and usage errors.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

fn repo_bytes(repo: &Path) -> u64 {
    packs(repo)
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

/// Every file under the repository with its size (to see that nothing changed).
fn listing(repo: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![repo.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let md = e.metadata().unwrap();
            if md.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), md.len()));
            }
        }
    }
    out.sort();
    out
}

fn prune_json(env: &Env, args: &[&str]) -> serde_json::Value {
    let mut c = env.cmd();
    c.arg("--json").arg("prune").args(args);
    let r = run_cmd(c);
    assert_eq!(r.code, Some(0), "prune failed: {r}");
    r.summary()["report"].clone()
}

fn restore_latest_matches(env: &Env, src: &Path, target: &Path) {
    let _ = fs::remove_dir_all(target);
    env.ok([
        "restore".as_ref(),
        "latest".as_ref(),
        "--target".as_ref(),
        target.as_os_str(),
    ]);
    assert_trees_equal(src, &restored(target, src), &[]);
    fs::remove_dir_all(target).unwrap();
}

/// Two snapshots; the first forgotten. Returns the source directory.
fn with_garbage(env: &Env, files: usize, size: usize) -> PathBuf {
    let src = env.path("src");
    random_tree(&src.join("old"), files, size);
    random_tree(&src.join("keep"), files, size);
    env.backup([&src]);
    fs::remove_dir_all(src.join("old")).unwrap();
    random_tree(&src.join("new"), files, size);
    env.backup([&src]);
    env.ok(["forget", "--keep-last", "1", "--allow-short-history"]);
    src
}

#[test]
fn dry_run_changes_nothing_and_prune_now_gives_space_back() {
    let env = Env::with_repo();
    let src = with_garbage(&env, 20, 100_000);
    let before = listing(&env.repo);
    let bytes_before = repo_bytes(&env.repo);

    let dry = prune_json(&env, &["--dry-run", "--now"]);
    assert!(dry["deleted"]["bytes"].as_u64().unwrap() > 0, "{dry}");
    assert_eq!(
        listing(&env.repo),
        before,
        "a dry run changed the repository"
    );

    let r = prune_json(&env, &["--now"]);
    assert_eq!(
        r["deleted"], dry["deleted"],
        "the dry run's figures must hold"
    );
    let after = repo_bytes(&env.repo);
    assert!(
        after < bytes_before * 3 / 4,
        "a third of the data was forgotten: {bytes_before} -> {after}"
    );
    env.ok(["check", "--read-data"]);
    restore_latest_matches(&env, &src, &env.path("t"));
    // Nothing left to do.
    let again = prune_json(&env, &["--now"]);
    assert_eq!(again["deleted"]["count"], 0, "{again}");
}

#[test]
fn prune_marks_first_and_deletes_after_the_grace_period() {
    let env = Env::with_repo();
    let src = with_garbage(&env, 10, 100_000);
    let bytes_before = repo_bytes(&env.repo);
    let r = env.ok(["prune"]);
    let out = r.out();
    assert!(out.contains("marked") || out.contains("repacked"), "{out}");
    assert!(out.contains("deleted:   0 packs"), "{out}");
    assert!(out.contains("can be deleted by a prune from"), "{out}");
    assert!(repo_bytes(&env.repo) >= bytes_before);
    env.ok(["check", "--read-data"]);

    let r = prune_json(&env, &["--grace", "0"]);
    assert!(r["deleted"]["count"].as_u64().unwrap() > 0, "{r}");
    assert!(repo_bytes(&env.repo) < bytes_before);
    env.ok(["check", "--read-data"]);
    restore_latest_matches(&env, &src, &env.path("t"));
}

#[test]
fn forget_prune_now_in_one_command() {
    let env = Env::with_repo();
    let src = env.path("src");
    random_tree(&src.join("a"), 10, 100_000);
    env.backup([&src]);
    fs::remove_dir_all(src.join("a")).unwrap();
    random_tree(&src.join("b"), 10, 100_000);
    env.backup([&src]);
    let before = repo_bytes(&env.repo);
    let r = env.ok([
        "forget",
        "--keep-last",
        "1",
        "--allow-short-history",
        "--prune",
        "--now",
    ]);
    assert!(r.out().contains("removed 1 snapshots"), "{r}");
    assert!(repo_bytes(&env.repo) < before * 3 / 4);
    env.ok(["check", "--read-data"]);
    restore_latest_matches(&env, &src, &env.path("t"));
}

#[test]
fn a_running_backup_blocks_prune_now_but_not_prune() {
    let env = Env::with_repo();
    let src = with_garbage(&env, 10, 50_000);
    // A backup that waits on its stdin.
    let mut c = env.cmd();
    c.args(["backup", "--stdin", "--stdin-filename", "dump.sql"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&random_bytes(300_000)).unwrap();
    let start = Instant::now();
    while repo_files(&env.repo, "running").is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no running marker"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let r = env.run(["prune", "--now"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("a backup runs"), "{r}");
    let r = prune_json(&env, &[]);
    assert_eq!(r["running_backups"].as_array().unwrap().len(), 1, "{r}");
    // With no grace, the marked data of the forgotten snapshot would go,
    // but it waits for the backup that started before it was marked.
    let r = prune_json(&env, &["--grace", "0"]);
    assert_eq!(r["deleted"]["count"], 0, "{r}");
    assert!(r["postponed"]["count"].as_u64().unwrap() > 0, "{r}");

    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(repo_files(&env.repo, "running").is_empty(), "marker left");
    let r = prune_json(&env, &["--grace", "0"]);
    assert!(r["deleted"]["count"].as_u64().unwrap() > 0, "{r}");
    env.ok(["check", "--read-data"]);
    let t = env.path("t");
    let first = env.snapshots()[0]["id"].as_str().unwrap().to_string();
    env.ok([
        "restore".as_ref(),
        first.as_ref(),
        "--target".as_ref(),
        t.as_os_str(),
    ]);
    assert_trees_equal(&src, &restored(&t, &src), &[]);
}

#[test]
fn kill_9_during_prune_leaves_a_consistent_repository() {
    let template = Env::with_repo();
    // About 36 MiB, a third of it forgotten, in several packs.
    let src = with_garbage(&template, 40, 300_000);
    let work = Env::with_repo();
    // How long a whole prune takes here, to spread the kills over it.
    sh(
        "cp",
        &[
            "-a".as_ref(),
            template.repo.as_os_str(),
            work.repo.as_os_str(),
        ],
    );
    let t = Instant::now();
    work.ok(["prune", "--now", "--max-unused", "0%"]);
    let full = t.elapsed().as_millis() as u64;
    eprintln!("a whole prune takes {full} ms");
    let delays: Vec<u64> = [1, 5, 15, 30, 50, 70, 90]
        .iter()
        .map(|p| full * p / 100)
        .collect();
    for (i, ms) in delays.iter().enumerate() {
        let _ = fs::remove_dir_all(&work.repo);
        sh(
            "cp",
            &[
                "-a".as_ref(),
                template.repo.as_os_str(),
                work.repo.as_os_str(),
            ],
        );
        let mut c = work.cmd();
        c.args(["prune", "--now", "--max-unused", "0%"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = c.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(*ms));
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        child.wait().unwrap();
        eprintln!("kill after {ms} ms (finished before: {finished})");

        let r = work.run(["check"]);
        assert_eq!(r.code, Some(0), "check after a kill at {ms} ms: {r}");
        restore_latest_matches(&work, &src, &work.path(format!("t{i}")));
        // The next prune finishes the job (the killed one's marker is
        // recognised as dead) and everything still checks.
        work.ok(["prune", "--now"]);
        work.ok(["check"]);
        restore_latest_matches(&work, &src, &work.path(format!("u{i}")));
    }
    work.ok(["check", "--read-data"]);
}

#[test]
fn prune_refuses_damage_before_changing_anything() {
    let env = Env::with_repo();
    with_garbage(&env, 10, 100_000);
    // A used pack lost.
    let data_pack = packs(&env.repo)
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let saved = fs::read(&data_pack).unwrap();
    fs::remove_file(&data_pack).unwrap();
    let before = listing(&env.repo);
    let r = env.run(["prune", "--now"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("rewind check"), "{r}");
    assert_eq!(
        listing(&env.repo),
        before,
        "prune changed a damaged repository"
    );
    fs::write(&data_pack, saved).unwrap();

    // A damaged index file.
    let idx = repo_files(&env.repo, "index").pop().unwrap();
    let mut b = fs::read(&idx).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 1;
    fs::write(&idx, b).unwrap();
    let before = listing(&env.repo);
    let r = env.run(["prune", "--now"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("repair index"), "{r}");
    assert_eq!(listing(&env.repo), before);
}

#[test]
fn prune_usage_errors() {
    let env = Env::with_repo();
    for args in [
        &["prune", "--max-unused", "lots"][..],
        &["prune", "--max-unused", "150%"],
        &["prune", "--grace", "5x"],
        &["prune", "--grace", ""],
        &["forget", "--keep-last", "1", "--now"],
    ] {
        let r = env.run(args);
        assert_eq!(r.code, Some(2), "{args:?}: {r}");
        assert!(
            r.stderr.contains("--"),
            "{args:?} should name the option: {r}"
        );
    }
}

#[test]
fn prune_removes_old_temporaries_of_killed_writes_only() {
    let env = Env::with_repo();
    with_garbage(&env, 3, 10_000);
    let sub = env.repo.join("data").join("00");
    let old = sub.join(format!(".{}.tmp-0123456789abcdef", "00".repeat(32)));
    let young = sub.join(format!(".{}.tmp-fedcba9876543210", "00".repeat(32)));
    fs::write(&old, b"half a pack").unwrap();
    fs::write(&young, b"being written").unwrap();
    set_mtime(&old, 1_600_000_000, 0);
    let r = prune_json(&env, &["--dry-run"]);
    assert_eq!(
        r["temporaries_removed"], 0,
        "a dry run removes nothing: {r}"
    );
    assert!(old.exists());
    let r = prune_json(&env, &[]);
    assert_eq!(r["temporaries_removed"], 1, "{r}");
    assert!(!old.exists(), "an old temporary stays");
    assert!(
        young.exists(),
        "a recent temporary (a running write) was removed"
    );
    env.ok(["check", "--read-data"]);
}

#[test]
fn a_garbage_snapshot_file_blocks_prune_until_the_admin_ignores_it() {
    let env = Env::with_repo();
    let src = with_garbage(&env, 10, 100_000);
    // Undecodable, under a valid name: what a backup token and the
    // password can leave on a server that keeps files for 30 days.
    let name = "ab".repeat(32);
    fs::write(
        env.repo.join("snapshots").join(&name),
        b"not a snapshot at all",
    )
    .unwrap();

    // Default: refused before any change, naming the file and the way out.
    let before = listing(&env.repo);
    let r = env.run(["prune", "--now"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains(&name), "{r}");
    assert!(r.stderr.contains("--ignore-damaged-snapshots"), "{r}");
    assert_eq!(
        listing(&env.repo),
        before,
        "a refused prune changed the repository"
    );

    // The admin's way out: the damaged file is named, the rest is pruned.
    let bytes_before = repo_bytes(&env.repo);
    let r = env.run(["prune", "--ignore-damaged-snapshots", "--now"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stderr.contains(&name), "{r}");
    assert!(repo_bytes(&env.repo) < bytes_before, "nothing reclaimed");
    // Every readable snapshot still restores byte-exact ("latest" is
    // refused while a damaged file may be newer: named by id).
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let id = snaps[0]["id"].as_str().unwrap().to_string();
    let target = env.path("target");
    env.ok([
        "restore".as_ref(),
        id.as_ref(),
        "--target".as_ref(),
        target.as_os_str(),
    ]);
    assert_trees_equal(&src, &restored(&target, &src), &[]);

    // check --read-data finds only the damaged snapshot file.
    let mut c = env.cmd();
    c.args(["--json", "check", "--read-data"]);
    let r = run_cmd(c);
    assert_ne!(r.code, Some(0), "{r}");
    let report: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let errors = report["errors"].as_array().unwrap().clone();
    assert_eq!(errors.len(), 1, "{r}");
    assert!(errors[0].as_str().unwrap().contains(&name), "{r}");
}
