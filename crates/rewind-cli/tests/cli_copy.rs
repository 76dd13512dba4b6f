//! `rewind copy`: snapshots copied to a repository with another password,
//! incrementally, resumably, and refused where it makes no sense.

mod common;

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

const TO_PASSWORD: &str = "another password for the offsite copy";

/// A second repository beside the world's one.
fn second_repo(env: &Env) -> std::path::PathBuf {
    let b = env.path("offsite");
    let mut c = env.cmd();
    c.env("REWIND_REPOSITORY", &b)
        .env("REWIND_PASSWORD", TO_PASSWORD)
        .arg("init");
    run_cmd(c).expect_code(0);
    b
}

fn copy(env: &Env, to: &Path, extra: &[&str]) -> Run {
    let mut c = env.cmd();
    c.env("REWIND_TO_PASSWORD", TO_PASSWORD)
        .arg("--json")
        .arg("copy")
        .arg("--to")
        .arg(to)
        .args(extra);
    run_cmd(c)
}

fn at(env: &Env, repo: &Path, args: &[&str]) -> Run {
    let mut c = env.cmd();
    c.env("REWIND_REPOSITORY", repo)
        .env("REWIND_PASSWORD", TO_PASSWORD)
        .args(args);
    run_cmd(c)
}

#[test]
fn copies_are_incremental_and_restore_byte_for_byte() {
    let env = Env::with_repo();
    let offsite = second_repo(&env);
    let src = env.path("src");
    random_tree(&src.join("a"), 10, 100_000);
    env.backup([&src]);
    random_tree(&src.join("b"), 10, 100_000);
    env.backup([&src]);

    // A dry run copies nothing.
    let r = copy(&env, &offsite, &["--dry-run"]);
    r.expect_code(0);
    assert_eq!(r.summary()["copied"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(snapshot_files(&offsite), 0);

    let r = copy(&env, &offsite, &[]);
    r.expect_code(0);
    let s = r.summary();
    assert_eq!(s["copied"].as_array().unwrap().len(), 2, "{r}");
    let first_bytes = s["bytes_added_raw"].as_u64().unwrap();
    assert!(first_bytes >= 2_000_000, "{s}");
    at(&env, &offsite, &["check", "--read-data"]).expect_code(0);
    let t = env.path("t1");
    at(
        &env,
        &offsite,
        &["restore", "latest", "--target", t.to_str().unwrap()],
    )
    .expect_code(0);
    assert_trees_equal(&src, &restored(&t, &src), &[]);

    // Again: nothing to do.
    let s = copy(&env, &offsite, &[]).summary();
    assert_eq!(s["copied"].as_array().unwrap().len(), 0, "{s}");
    assert_eq!(s["skipped"].as_array().unwrap().len(), 2, "{s}");
    assert_eq!(s["bytes_added_raw"], 0);

    // A new snapshot: only it is copied, and only its new data is sent.
    write_random(&src.join("new-file"), 50_000);
    env.backup([&src]);
    let s = copy(&env, &offsite, &[]).summary();
    assert_eq!(s["copied"].as_array().unwrap().len(), 1, "{s}");
    let added = s["bytes_added_raw"].as_u64().unwrap();
    assert!(
        added < first_bytes / 10,
        "sent {added} bytes for a 50 kB change"
    );
    let t = env.path("t2");
    at(
        &env,
        &offsite,
        &["restore", "latest", "--target", t.to_str().unwrap()],
    )
    .expect_code(0);
    assert_trees_equal(&src, &restored(&t, &src), &[]);

    // A protected snapshot (a new id, the same identity) is not copied twice.
    env.ok(["protect", "latest"]);
    let s = copy(&env, &offsite, &[]).summary();
    assert_eq!(s["copied"].as_array().unwrap().len(), 0, "{s}");
}

#[test]
fn copy_refuses_what_makes_no_sense() {
    let env = Env::with_repo();
    let offsite = second_repo(&env);
    let src = env.path("src");
    random_tree(&src, 3, 1000);
    env.backup([&src]);
    // Wrong destination password.
    let mut c = env.cmd();
    c.env("REWIND_TO_PASSWORD", "wrong")
        .args(["copy", "--to", offsite.to_str().unwrap()]);
    assert_eq!(run_cmd(c).code, Some(12));
    // No repository there.
    let r = copy(&env, &env.path("nothing-here"), &[]);
    assert_eq!(r.code, Some(10), "{r}");
    // Into itself.
    let r = copy(&env, &env.repo.clone(), &[]);
    assert_eq!(r.code, Some(2), "{r}");
    // A snapshot that does not exist: a name that matches nothing.
    let r = copy(&env, &offsite, &["deadbeef"]);
    assert_eq!(r.code, Some(2), "{r}");
    assert_eq!(snapshot_files(&offsite), 0);
}

#[test]
fn a_killed_copy_resumes() {
    let env = Env::with_repo();
    let offsite = second_repo(&env);
    let src = env.path("src");
    random_tree(&src, 60, 1 << 20); // 60 MiB: several packs
    env.backup([&src]);
    let mut c = env.cmd();
    c.env("REWIND_TO_PASSWORD", TO_PASSWORD)
        .args(["copy", "--to", offsite.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let start = Instant::now();
    while packs(&offsite).len() < 2 && child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    child.wait().unwrap();
    assert_eq!(
        snapshot_files(&offsite),
        0,
        "a killed copy wrote a snapshot"
    );
    at(&env, &offsite, &["check"]).expect_code(0);
    // Packs count once an index file lists them (every 16 packs or 30 s).
    let indexed = !repo_files(&offsite, "index").is_empty();

    let s = copy(&env, &offsite, &[]).summary();
    assert_eq!(s["copied"].as_array().unwrap().len(), 1, "{s}");
    let resent = s["bytes_added_raw"].as_u64().unwrap();
    eprintln!("resumed copy sent {resent} bytes (index written before the kill: {indexed})");
    if indexed {
        assert!(
            resent < 60 << 20,
            "the resumed copy sent everything again ({resent})"
        );
    }
    at(&env, &offsite, &["check", "--read-data"]).expect_code(0);
    let t = env.path("t");
    at(
        &env,
        &offsite,
        &["restore", "latest", "--target", t.to_str().unwrap()],
    )
    .expect_code(0);
    assert_trees_equal(&src, &restored(&t, &src), &[]);
    let _ = fs::remove_dir_all(&t);
}

#[test]
fn backup_copy_to_sends_each_new_snapshot_offsite() {
    let env = Env::with_repo();
    let offsite = second_repo(&env);
    let src = env.path("src");
    random_tree(&src, 8, 50_000);

    // A wrong password for the copy target is said before anything is backed up.
    let mut c = env.cmd();
    c.env("REWIND_TO_PASSWORD", "wrong").args([
        "backup".as_ref(),
        "--copy-to".as_ref(),
        offsite.as_os_str(),
        src.as_os_str(),
    ]);
    assert_eq!(run_cmd(c).code, Some(12));
    assert_eq!(snapshot_files(&env.repo), 0);

    for round in 0..2 {
        write_random(&src.join(format!("round{round}")), 20_000);
        let mut c = env.cmd();
        c.env("REWIND_TO_PASSWORD", TO_PASSWORD).args([
            "backup".as_ref(),
            "--copy-to".as_ref(),
            offsite.as_os_str(),
            src.as_os_str(),
        ]);
        let r = run_cmd(c);
        r.expect_code(0);
        assert!(r.out().contains("copied to"), "{r}");
        assert_eq!(snapshot_files(&offsite), round + 1);
    }
    at(&env, &offsite, &["check", "--read-data"]).expect_code(0);
    let t = env.path("t");
    at(
        &env,
        &offsite,
        &["restore", "latest", "--target", t.to_str().unwrap()],
    )
    .expect_code(0);
    assert_trees_equal(&src, &restored(&t, &src), &[]);
    // Nothing left for a plain copy to do.
    let s = copy(&env, &offsite, &[]).summary();
    assert_eq!(s["copied"].as_array().unwrap().len(), 0, "{s}");
}

#[test]
fn a_stored_copy_target_makes_every_backup_two_copies() {
    let env = Env::with_repo();
    let offsite = second_repo(&env);
    let src = env.path("src");
    random_tree(&src, 8, 100_000);
    let pw_file = env.path("offsite.pw");
    fs::write(&pw_file, "wrong password\n").unwrap();

    // Nothing stored yet.
    let r = env.ok(["copy-target", "show"]);
    assert!(r.out().contains("no copy target"), "{r}");
    // A target that does not open is not stored.
    let r = env.run([
        "copy-target".as_ref(),
        "set".as_ref(),
        offsite.as_os_str(),
        "--to-password-file".as_ref(),
        pw_file.as_os_str(),
    ]);
    assert_eq!(r.code, Some(12), "{r}");
    assert!(env
        .ok(["copy-target", "show"])
        .out()
        .contains("no copy target"));
    // Nor the repository itself.
    let r = env.run(["copy-target".as_ref(), "set".as_ref(), env.repo.as_os_str()]);
    assert_eq!(r.code, Some(2), "{r}");

    fs::write(&pw_file, format!("{TO_PASSWORD}\n")).unwrap();
    env.ok([
        "copy-target".as_ref(),
        "set".as_ref(),
        offsite.as_os_str(),
        "--to-password-file".as_ref(),
        pw_file.as_os_str(),
    ]);
    let r = env.ok(["copy-target", "show"]);
    assert!(r.out().contains(offsite.to_str().unwrap()), "{r}");
    // Options are checked and stored with it.
    let r = env.run([
        "copy-target".as_ref(),
        "set".as_ref(),
        offsite.as_os_str(),
        "--to-option".as_ref(),
        "s3.bogus=1".as_ref(),
    ]);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("s3.bogus"), "{r}");
    // The stored policy is untouched by it, and the other way round.
    env.ok([
        "policy",
        "set",
        "--keep-daily",
        "30",
        "--keep-monthly",
        "24",
    ]);
    assert!(env
        .ok(["copy-target", "show"])
        .out()
        .contains(offsite.to_str().unwrap()));

    // A plain backup now makes both copies.
    let r = env.ok(["backup".as_ref(), src.as_os_str()]);
    assert!(r.out().contains("copied to"), "{r}");
    assert_eq!(snapshot_files(&offsite), 1);
    at(&env, &offsite, &["check", "--read-data"]).expect_code(0);
    // --no-copy skips it once.
    random_tree(&src.join("more"), 2, 10_000);
    env.ok(["backup".as_ref(), "--no-copy".as_ref(), src.as_os_str()]);
    assert_eq!(snapshot_files(&offsite), 1);

    // The password file gone: said before anything is backed up.
    fs::remove_file(&pw_file).unwrap();
    let before = snapshot_files(&env.repo);
    let r = env.run(["backup".as_ref(), src.as_os_str()]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains("--no-copy") && r.stderr.contains("offsite.pw"),
        "{r}"
    );
    assert_eq!(
        snapshot_files(&env.repo),
        before,
        "no backup without its copy"
    );
    // REWIND_TO_PASSWORD still works with the stored target.
    let mut c = env.cmd();
    c.env("REWIND_TO_PASSWORD", TO_PASSWORD)
        .arg("backup")
        .arg(&src);
    run_cmd(c).expect_code(0);
    assert_eq!(snapshot_files(&offsite), 2);

    env.ok(["copy-target", "unset"]);
    env.ok(["backup".as_ref(), src.as_os_str()]);
    assert_eq!(snapshot_files(&offsite), 2);
    assert!(env
        .ok(["policy", "show"])
        .out()
        .contains("--keep-monthly 24"));
}

#[test]
fn copy_from_names_the_source() {
    let env = Env::with_repo();
    let offsite = second_repo(&env);
    let src = env.path("src");
    random_tree(&src, 4, 50_000);
    env.backup([&src]);
    // --from instead of --repo.
    let mut c = env.bare_cmd();
    c.env("REWIND_PASSWORD", PASSWORD)
        .env("REWIND_TO_PASSWORD", TO_PASSWORD)
        .arg("copy")
        .arg("--from")
        .arg(&env.repo)
        .arg("--to")
        .arg(&offsite);
    run_cmd(c).expect_code(0);
    assert_eq!(snapshot_files(&offsite), 1);
    // --from and --repo that disagree.
    let mut c = env.cmd();
    c.env("REWIND_TO_PASSWORD", TO_PASSWORD)
        .arg("copy")
        .arg("--from")
        .arg(&offsite)
        .arg("--to")
        .arg(&offsite);
    assert_eq!(run_cmd(c).code, Some(2));
}

/// `--compression` holds for the copy too: a backup's copy target
/// re-seals each blob with its own key, at the level asked for.
#[test]
fn backup_copy_to_writes_at_the_chosen_compression() {
    let env = Env::with_repo();
    let offsite = second_repo(&env);
    let src = env.path("src");
    // About 2 MB of numbers: a third of it compressed.
    let lines: String = (0..300_000u32).map(|i| format!("{i}\n")).collect();
    write(&src.join("numbers"), lines.as_bytes());
    let mut c = env.cmd();
    c.env("REWIND_TO_PASSWORD", TO_PASSWORD).args([
        "backup".as_ref(),
        "--compression".as_ref(),
        "off".as_ref(),
        "--copy-to".as_ref(),
        offsite.as_os_str(),
        src.as_os_str(),
    ]);
    run_cmd(c).expect_code(0);
    let stored = |repo: &Path| -> u64 {
        packs(repo)
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum()
    };
    for (name, repo) in [("source", &env.repo), ("copy", &offsite)] {
        assert!(
            stored(repo) > lines.len() as u64,
            "the {name} holds {} bytes of {}: compressed all the same",
            stored(repo),
            lines.len()
        );
    }
    at(&env, &offsite, &["check", "--read-data"]).expect_code(0);
}
