//! The CLI on an S3 repository (a real SeaweedFS on loopback, started here):
//! init, backup, restore, check, forget and prune; wrong password, a missing
//! repository and a bad option; the server killed in the middle of a backup.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use rewind_backends::testsupport::SeaweedFs;

struct S3Env {
    remote: RemoteRepo,
    server: SeaweedFs,
}

impl S3Env {
    fn new(bucket: &str) -> S3Env {
        let server = SeaweedFs::start(&[bucket]);
        let remote = RemoteRepo {
            env: Env::new(),
            url: server.url(bucket, "repo"),
            vars: server
                .env()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            args: Vec::new(),
        };
        S3Env { remote, server }
    }
}

impl std::ops::Deref for S3Env {
    type Target = RemoteRepo;
    fn deref(&self) -> &RemoteRepo {
        &self.remote
    }
}

impl std::ops::DerefMut for S3Env {
    fn deref_mut(&mut self) -> &mut RemoteRepo {
        &mut self.remote
    }
}

#[test]
fn a_repository_on_s3_does_everything_a_local_one_does() {
    let s3 = S3Env::new("everything");
    // Errors first: nothing there yet, a bad option.
    let r = s3.run(["snapshots"]);
    assert_eq!(r.code, Some(10), "{r}");
    assert!(r.stderr.contains("s3:http://127.0.0.1"), "{r}");
    let r = s3.run(["-o", "s3.bogus=1", "snapshots"]);
    assert_eq!(r.code, Some(2), "{r}");
    let r = s3.run(["-o", "s3.connections=0", "snapshots"]);
    assert_eq!(r.code, Some(2), "{r}");

    s3.ok(["init"]);
    let r = s3.run(["init"]);
    assert_eq!(r.code, Some(1), "a second init must fail: {r}");
    let src = s3.env.path("src");
    random_tree(&src.join("a"), 12, 200_000);
    random_tree(&src.join("b"), 12, 50_000);
    s3.ok(["backup".as_ref(), src.as_os_str()]);
    s3.restore_matches(&src, "t1");

    std::fs::remove_dir_all(src.join("a")).unwrap();
    random_tree(&src.join("c"), 6, 300_000);
    s3.ok(["-o", "s3.connections=2", "backup", src.to_str().unwrap()]);
    s3.ok(["check", "--read-data"]);
    assert_eq!(
        serde_json::from_slice::<Vec<serde_json::Value>>(&s3.ok(["--json", "snapshots"]).stdout)
            .unwrap()
            .len(),
        2
    );

    // Wrong password.
    let mut c = s3.cmd_at(&s3.url);
    c.env("REWIND_PASSWORD", "wrong").arg("snapshots");
    assert_eq!(run_cmd(c).code, Some(12));

    // The index and snapshot files are cached locally; a damaged cached
    // file is not trusted (fetched again), and --no-cache leaves none.
    let cache = s3.env.path("home/.cache/rewind/meta");
    let cached = |sub: &str| -> Vec<std::path::PathBuf> {
        let mut v = Vec::new();
        for d in std::fs::read_dir(&cache).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(d.path().join(sub))
                .into_iter()
                .flatten()
                .flatten()
            {
                v.push(f.path());
            }
        }
        v
    };
    assert_eq!(cached("snapshots").len(), 2, "{cache:?}");
    assert!(!cached("index").is_empty());
    for f in cached("snapshots") {
        std::fs::write(&f, b"not what the name says").unwrap();
    }
    let listed = s3.ok(["--json", "snapshots"]);
    assert_eq!(
        serde_json::from_slice::<Vec<serde_json::Value>>(&listed.stdout)
            .unwrap()
            .len(),
        2
    );
    for f in cached("snapshots") {
        assert_ne!(std::fs::read(&f).unwrap(), b"not what the name says");
    }
    std::fs::remove_dir_all(&cache).unwrap();
    s3.ok(["--no-cache", "snapshots"]);
    assert!(cached("snapshots").is_empty());

    // Forget and prune at once, then everything still checks and restores.
    s3.ok([
        "forget",
        "--keep-last",
        "1",
        "--allow-short-history",
        "--prune",
        "--now",
    ]);
    s3.ok(["check", "--read-data"]);
    s3.restore_matches(&src, "t2");

    // Copy from S3 to a local repository with another password: the copy
    // restores byte for byte.
    let local = s3.env.path("local-copy");
    let mut c = s3.cmd_at(local.to_str().unwrap());
    c.env("REWIND_PASSWORD", "local password").arg("init");
    run_cmd(c).expect_code(0);
    let mut c = s3.cmd_at(&s3.url);
    c.env("REWIND_TO_PASSWORD", "local password")
        .args(["copy", "--to", local.to_str().unwrap()]);
    run_cmd(c).expect_code(0);
    let t = s3.env.path("t3");
    let mut c = s3.cmd_at(local.to_str().unwrap());
    c.env("REWIND_PASSWORD", "local password").args([
        "restore".as_ref(),
        "latest".as_ref(),
        "--target".as_ref(),
        t.as_os_str(),
    ]);
    run_cmd(c).expect_code(0);
    assert_trees_equal(&src, &restored(&t, &src), &[]);
}

#[test]
fn the_s3_server_dying_mid_backup_fails_cleanly_and_the_next_backup_completes() {
    let mut s3 = S3Env::new("dying");
    s3.ok(["init"]);
    let src = s3.env.path("src");
    random_tree(&src, 40, 1 << 20); // 40 MiB: several packs
    let mut c = s3.cmd_at(&s3.url);
    c.args(["backup".as_ref(), src.as_os_str()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    s3.server.kill();
    let t = Instant::now();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "backup with the server killed: {:?} after {:?}: {stderr}",
        out.status,
        t.elapsed()
    );
    if out.status.success() {
        // It finished before the kill: the test proves nothing then.
        panic!("the backup finished in 700 ms; make the source larger");
    }
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("s3:http://127.0.0.1"), "{stderr}");
    assert!(t.elapsed() < Duration::from_secs(180), "{:?}", t.elapsed());

    s3.server.restart();
    // No snapshot was written; the repository checks clean.
    let snaps: Vec<serde_json::Value> =
        serde_json::from_slice(&s3.ok(["--json", "snapshots"]).stdout).unwrap();
    assert!(snaps.is_empty());
    s3.ok(["check"]);
    s3.ok(["backup".as_ref(), src.as_os_str()]);
    s3.ok(["check", "--read-data"]);
    s3.restore_matches(&src, "t");
}

#[test]
fn object_lock_keeps_forgotten_data_and_prune_says_until_when() {
    let mut s3 = S3Env::new("plainbucket");
    s3.server.create_locked_bucket("lockedbucket");
    // A bucket without Object Lock: refused before anything is written.
    let r = s3.run(["init", "--object-lock-days", "1"]);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("no Object Lock"), "{r}");
    assert_eq!(s3.run(["snapshots"]).code, Some(10), "nothing was created");
    // A mode without days, and zero days, are usage errors.
    assert_eq!(
        s3.run(["init", "--object-lock-mode", "governance"]).code,
        Some(2)
    );
    assert_eq!(s3.run(["init", "--object-lock-days", "0"]).code, Some(2));

    s3.url = s3.server.url("lockedbucket", "repo");
    let r = s3.ok(["init", "--object-lock-days", "1"]);
    assert!(
        r.out()
            .contains("Object Lock: every file is kept for 1 days"),
        "{r}"
    );
    let src = s3.env.path("src");
    random_tree(&src, 6, 300_000);
    s3.ok(["backup".as_ref(), src.as_os_str()]);
    std::fs::remove_dir_all(&src).unwrap();
    random_tree(&src, 4, 200_000);
    s3.ok(["backup".as_ref(), src.as_os_str()]);

    // The first snapshot is forgotten at once; its packs are not deleted,
    // and prune names them and the end of their retention.
    let r = s3.ok([
        "forget",
        "--keep-last",
        "1",
        "--allow-short-history",
        "--prune",
        "--now",
    ]);
    let out = r.out();
    eprintln!("{out}");
    assert!(
        out.contains("retained:") && out.contains("under Object Lock"),
        "{out}"
    );
    assert!(out.contains("deleted:   0 packs"), "{out}");
    let r = s3.ok(["--json", "prune", "--now"]);
    let summary: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let report = &summary["report"];
    assert!(
        report["retained"]["count"].as_u64().unwrap() >= 1,
        "{summary}"
    );
    assert_eq!(report["deleted"]["count"], 0, "{summary}");
    assert_eq!(
        report["retained_until"].as_array().unwrap().len() as u64,
        report["retained"]["count"].as_u64().unwrap()
    );
    s3.ok(["check", "--read-data"]);
    s3.restore_matches(&src, "t");
}
