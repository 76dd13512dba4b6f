//! `rewind verify-restore`: restore tests that prove a snapshot restorable,
//! and that fail, naming the files, when it is not.

mod common;

use std::os::unix::fs::MetadataExt;

use common::*;

fn proven(env: &Env) -> Vec<serde_json::Value> {
    env.snapshots()
        .into_iter()
        .map(|s| s["proven"].clone())
        .collect()
}

#[test]
fn a_restore_test_passes_is_stored_and_marks_the_snapshot() {
    let env = Env::with_repo();
    let src = env.path("src");
    random_tree(&src, 30, 5000);
    env.backup([&src]);
    assert!(proven(&env)[0].is_null());
    let r = env.run(["verify-restore", "--sample", "10"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(
        r.out().contains("PASSED") && r.out().contains("10 of 30 files"),
        "{r}"
    );
    // Every file still looks as backed up, so each was compared with it.
    assert!(r.out().contains("10 also with the live file"), "{r}");
    let p = &proven(&env)[0];
    assert_eq!(p["tested"], 10, "{p}");
    let r = env.ok(["snapshots"]);
    assert!(r.out().contains("newest proven restorable point"), "{r}");
    // A sample by share, and JSON.
    let r = env.ok(["--json", "verify-restore", "--sample", "50%"]);
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(v["tested"], 15, "{v}");
    assert!(v["saved"].is_string(), "{v}");
    // Bad samples are usage errors.
    for bad in ["0", "150%", "some"] {
        let r = env.run(["verify-restore", "--sample", bad]);
        assert_eq!(r.code, Some(2), "{bad}: {r}");
    }
}

#[test]
fn a_damaged_pack_fails_the_test_and_names_the_files() {
    let env = Env::with_repo();
    let src = env.path("src");
    random_tree(&src, 12, 200_000);
    env.backup([&src]);
    env.ok(["verify-restore", "--sample", "100%"]);
    // One byte flipped in the middle of the largest pack (file data): it
    // no longer authenticates.
    let big = packs(&env.repo)
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut b = std::fs::read(&big).unwrap();
    let mid = b.len() / 3;
    b[mid] ^= 0x40;
    std::fs::write(&big, b).unwrap();
    let r = env.run(["verify-restore", "--sample", "100%"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.out().contains("FAILED"), "{r}");
    assert!(r.stderr.contains(src.to_str().unwrap()), "{r}");
    // The newest test decides: the snapshot is no longer marked proven.
    assert!(proven(&env)[0].is_null(), "{:?}", proven(&env));
    // Every pack damaged, trees included: still a result, naming folders.
    for p in packs(&env.repo) {
        let mut b = std::fs::read(&p).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0x40;
        std::fs::write(&p, b).unwrap();
    }
    let r = env.run(["--json", "verify-restore", "--sample", "100%"]);
    assert_eq!(r.code, Some(1), "{r}");
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["passed"], false, "{v}");
    assert!(!v["failures"].as_array().unwrap().is_empty(), "{v}");
}

#[test]
fn a_live_file_that_differs_under_the_same_size_and_mtime_is_named() {
    let env = Env::with_repo();
    let src = env.path("src");
    random_tree(&src, 5, 4000);
    env.backup([&src]);
    // Bit rot on the live disk: content changed, size and mtime kept.
    let victim = files_under(&src)[0].clone();
    let md = std::fs::metadata(&victim).unwrap();
    let mut b = std::fs::read(&victim).unwrap();
    b[10] ^= 1;
    std::fs::write(&victim, b).unwrap();
    set_mtime(&victim, md.mtime() as u64, md.mtime_nsec() as u32);
    let r = env.run(["verify-restore", "--sample", "100%"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains(victim.to_str().unwrap())
            && r.stderr.contains("differs from the live file"),
        "{r}"
    );
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}
