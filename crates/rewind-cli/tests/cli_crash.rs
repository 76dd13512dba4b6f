//! Crash safety, concurrency and a full disk, with the real binary:
//! kill -9 at several points of a backup, two backups at once into one
//! repository, a repository on a file system that fills up.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn restore_to(env: &Env, spec: &str, target: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<&OsStr> = vec![OsStr::new("restore"), OsStr::new(spec)];
    args.extend(extra.iter().map(OsStr::new));
    args.push(OsStr::new("--target"));
    args.push(target.as_os_str());
    env.run(args)
}

#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// This long after the start.
    After(Duration),
    /// As soon as this many new pack files exist.
    Packs(usize),
}

fn point_is_late(p: &KillPoint) -> bool {
    matches!(p, KillPoint::Packs(n) if *n >= 4)
}

#[test]
fn kill_9_during_backup_leaves_a_consistent_repository() {
    let env = Env::with_repo();
    let small = env.path("small");
    random_tree(&small, 20, 20_000);
    let s0 = env.backup([&small]);
    let s0_id = s0["snapshot_id"].as_str().unwrap().to_string();

    // About 60 MiB in 240 files.
    let big = env.path("big");
    random_tree(&big, 240, 256 << 10);

    let points = [
        KillPoint::After(Duration::from_millis(20)),
        KillPoint::After(Duration::from_millis(300)),
        KillPoint::After(Duration::from_millis(1500)),
        KillPoint::Packs(1),
        KillPoint::Packs(4),
    ];
    let mut followers: Vec<(String, PathBuf)> = Vec::new();
    for (i, point) in points.iter().enumerate() {
        let packs_before = packs(&env.repo).len();
        let snaps_before = snapshot_files(&env.repo);
        let mut c = env.cmd();
        c.arg("backup")
            .arg(&big)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = c.spawn().expect("spawn backup");
        let start = Instant::now();
        match *point {
            KillPoint::After(d) => std::thread::sleep(d),
            KillPoint::Packs(n) => loop {
                if packs(&env.repo).len() >= packs_before + n {
                    break;
                }
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(300),
                    "backup made no pack in 5 minutes"
                );
                std::thread::sleep(Duration::from_millis(2));
            },
        }
        let finished_before_kill = child.try_wait().unwrap();
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        let new_snaps = snapshot_files(&env.repo) - snaps_before;
        eprintln!(
            "kill point {point:?}: killed after {:?}, {} new packs, {new_snaps} new snapshots, status {status:?} (finished before kill: {finished_before_kill:?})",
            start.elapsed(),
            packs(&env.repo).len() - packs_before,
        );
        // A snapshot exists only if the backup got to its very end (then
        // it must be complete: check --read-data below reads all of it).
        assert!(new_snaps <= 1);
        if new_snaps == 1 {
            assert!(
                finished_before_kill.is_some() || status.success() || point_is_late(point),
                "a backup killed early left a snapshot"
            );
        }

        // The repository is consistent: check (also reading what is indexed).
        let r = env.run(["check", "--read-data"]);
        assert_eq!(r.code, Some(0), "check after kill at {point:?}: {r}");
        // Every snapshot list entry is readable.
        let snaps = env.snapshots();
        assert_eq!(snaps.len(), 1 + followers.len() + new_snaps);

        // The earlier snapshot restores byte for byte.
        let t = env.path(format!("t0_{i}"));
        restore_to(&env, &s0_id, &t, &[]).expect_code(0);
        assert_trees_equal(&small, &restored(&t, &small), &[]);
        fs::remove_dir_all(&t).unwrap();

        // A following backup succeeds.
        let after = env.path(format!("after{i}"));
        random_tree(&after, 4, 30_000);
        write_random(&after.join("from_big"), 1000);
        let s = env.backup([&after]);
        followers.push((s["snapshot_id"].as_str().unwrap().to_string(), after));
    }

    // All follow-up snapshots restore.
    for (i, (id, dir)) in followers.iter().enumerate() {
        let t = env.path(format!("tf_{i}"));
        restore_to(&env, id, &t, &[]).expect_code(0);
        assert_trees_equal(dir, &restored(&t, dir), &[]);
    }

    // The interrupted backup, run to its end, works and restores.
    let s = env.backup([&big]);
    assert_eq!(s["errors"], 0, "{s}");
    let id = s["snapshot_id"].as_str().unwrap().to_string();
    // (Structure only: reading all 60 MiB again would double the test's time;
    // the restore below verifies a sample.)
    let r = env.run(["check"]);
    assert_eq!(r.code, Some(0), "{r}");
    let t = env.path("t_big");
    let r = restore_to(&env, &id, &t, &["--include", "f000*", "--verify"]);
    r.expect_code(0);
    let out = restored(&t, &big);
    let mut n = 0;
    for d in 0..8 {
        for e in fs::read_dir(big.join(format!("d{d}"))).unwrap() {
            let e = e.unwrap();
            let name = e.file_name();
            if name.to_string_lossy().starts_with("f000") {
                n += 1;
                let rel = Path::new(&format!("d{d}")).join(&name);
                assert!(
                    fs::read(out.join(&rel)).unwrap() == fs::read(e.path()).unwrap(),
                    "{} differs after restore",
                    rel.display()
                );
            }
        }
    }
    assert_eq!(n, 10);

    // A restore killed halfway resumes: the next run makes everything exact.
    let t = env.path("t_resume");
    let mut c = env.cmd();
    c.args(["restore", &id, "--include", "d0/", "--target"])
        .arg(&t)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let start = Instant::now();
    let out = restored(&t, &big);
    // Kill it once it has written a few files (or after 3 s).
    while start.elapsed() < Duration::from_secs(3) && child.try_wait().unwrap().is_none() {
        let n = fs::read_dir(out.join("d0"))
            .map(|rd| rd.count())
            .unwrap_or(0);
        if n >= 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    let _ = child.wait();
    let r = restore_to(&env, &id, &t, &["--include", "d0/"]);
    r.expect_code(0);
    assert_trees_equal(&big.join("d0"), &out.join("d0"), &[]);
}

#[test]
fn concurrent_backups_into_one_repository() {
    let env = Env::with_repo();
    let (a, b) = (env.path("tree_a"), env.path("tree_b"));
    random_tree(&a, 24, 256 << 10);
    random_tree(&b, 24, 256 << 10);
    // Some data in both: both processes store it at the same time.
    let shared = random_bytes(1 << 20);
    write(&a.join("shared.bin"), &shared);
    write(&b.join("shared.bin"), &shared);

    let spawn = |dir: &Path| {
        let mut c = env.cmd();
        c.arg("--json").arg("backup").arg(dir);
        c.spawn().expect("spawn backup")
    };
    let (ca, cb) = (spawn(&a), spawn(&b));
    let (oa, ob) = (
        ca.wait_with_output().unwrap(),
        cb.wait_with_output().unwrap(),
    );
    for (o, name) in [(&oa, "a"), (&ob, "b")] {
        assert!(
            o.status.success(),
            "backup {name} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    let r = env.run(["check", "--read-data"]);
    assert_eq!(r.code, Some(0), "{r}");
    for (i, dir) in [&a, &b].into_iter().enumerate() {
        let s = dir.to_str().unwrap();
        let snap = snaps
            .iter()
            .find(|x| x["paths"][0] == s)
            .unwrap_or_else(|| panic!("no snapshot of {s}: {snaps:?}"));
        let t = env.path(format!("t{i}"));
        restore_to(&env, snap["id"].as_str().unwrap(), &t, &[]).expect_code(0);
        assert_trees_equal(dir, &restored(&t, dir), &[]);
    }
}

/// Unmounts on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disk_fails_cleanly() {
    if !is_root() {
        eprintln!("not root: cannot mount a small file system; skipped");
        return;
    }
    let mut env = Env::new();
    let mnt = env.path("mnt");
    fs::create_dir(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=20m", "tmpfs"])
        .arg(&mnt)
        .stderr(Stdio::null())
        .status();
    if !st.map(|s| s.success()).unwrap_or(false) {
        eprintln!("cannot mount a tmpfs here; skipped");
        return;
    }
    let _mount = Mount(mnt.clone());
    env.repo = mnt.join("repo");
    env.ok(["init"]);

    let small = env.path("small");
    random_tree(&small, 10, 10_000);
    let s0 = env.backup([&small]);
    let s0_id = s0["snapshot_id"].as_str().unwrap().to_string();

    let big = env.path("big");
    random_tree(&big, 40, 1 << 20);
    let r = env.run([OsStr::new("backup"), big.as_os_str()]);
    assert_ne!(
        r.code,
        Some(0),
        "a backup larger than the disk succeeded: {r}"
    );
    assert_ne!(
        r.code,
        Some(3),
        "a full disk is not a per-file warning: {r}"
    );
    let err = r.stderr.to_lowercase();
    assert!(
        err.contains("no space") || err.contains("full"),
        "the message does not say the disk is full: {r}"
    );
    assert!(!err.contains("panicked"), "{r}");
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 1, "a failed backup left a snapshot: {snaps:?}");
    assert_eq!(snapshot_files(&env.repo), 1);

    // The earlier snapshot still restores (to a place with room).
    let t = env.path("t");
    restore_to(&env, &s0_id, &t, &[]).expect_code(0);
    assert_trees_equal(&small, &restored(&t, &small), &[]);
    // And the repository is consistent.
    let r = env.run(["check", "--read-data"]);
    assert_eq!(r.code, Some(0), "check after a full disk: {r}");
    // No temporary files were left to fill the disk.
    let mut leftovers = Vec::new();
    let mut stack = vec![env.repo.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if e.file_name().to_string_lossy().contains(".tmp-") {
                leftovers.push(p);
            }
        }
    }
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // A restore onto a file system too small for it fails, saying why.
    let mnt2 = env.path("mnt2");
    fs::create_dir(&mnt2).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&mnt2)
        .status()
        .unwrap();
    assert!(st.success());
    let _mount2 = Mount(mnt2.clone());
    let r = restore_to(&env, &s0_id, &mnt2.join("t"), &[]);
    assert_ne!(
        r.code,
        Some(0),
        "a restore larger than the disk succeeded: {r}"
    );
    assert!(
        r.stderr.to_lowercase().contains("no space"),
        "the message does not say the disk is full: {r}"
    );
    assert!(!r.stderr.contains("panicked"), "{r}");
}

/// `check` while a backup finishes: the new snapshot refers to blobs of an
/// index file written after check loaded the index. That is no damage.
#[test]
fn check_during_a_backup_reports_no_damage() {
    let env = Env::with_repo();
    let big = env.path("big");
    random_tree(&big, 20, 1 << 20); // makes check --read-data take a while
    env.backup([&big]);
    let small = env.path("small");
    write(&small.join("x.txt"), b"small");

    let mut c = env.cmd();
    c.args(["check", "--read-data"]);
    let check = c.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(400));
    env.backup([&small]);
    let o = check.wait_with_output().unwrap();
    let r = Run {
        code: o.status.code(),
        stdout: o.stdout,
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        what: "check --read-data (during a backup)".into(),
    };
    // The repository is healthy.
    env.ok(["check"]);
    assert_eq!(
        r.code,
        Some(0),
        "check reported damage on a healthy repository: {r}"
    );
}
