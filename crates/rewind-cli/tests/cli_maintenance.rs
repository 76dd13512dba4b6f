//! Maintenance commands: `forget` (retention rules, the one-year floor, dry run), `stats`, `check --read-data-subset`.

mod common;

use std::ffi::OsStr;

use common::*;

fn backup_at(env: &Env, src: &std::path::Path, time: &str) {
    write(&src.join("f.txt"), time.as_bytes());
    env.ok([
        OsStr::new("backup"),
        OsStr::new("--time"),
        OsStr::new(time),
        src.as_os_str(),
    ]);
}

#[test]
fn forget_keeps_a_year_unless_told_otherwise() {
    let env = Env::with_repo();
    let src = env.path("src");
    // Monthly snapshots over 14 months, plus three in the last week.
    for m in 1..=12 {
        backup_at(&env, &src, &format!("2025-{m:02}-15 10:00"));
    }
    for t in [
        "2026-01-15 10:00",
        "2026-02-10 10:00",
        "2026-02-12 10:00",
        "2026-02-14 10:00",
    ] {
        backup_at(&env, &src, t);
    }
    assert_eq!(env.snapshots().len(), 16);

    // No rule: the default policy of a fresh repository applies and keeps
    // all of these (one a month for two years, daily for 30 days).
    let r = env.ok(["forget"]);
    assert!(r.out().contains("default policy"), "{r}");
    assert_eq!(env.snapshots().len(), 16);
    let r = env.ok(["policy", "show"]);
    assert!(
        r.out().contains("default") && r.out().contains("--keep-within-monthly 2y"),
        "{r}"
    );

    // A week of history would be left: refused with the reason.
    let r = env.run(["forget", "--keep-daily", "7"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains("365 days") || r.stderr.contains("a year"),
        "{r}"
    );
    assert_eq!(env.snapshots().len(), 16);

    // Dry run lists decisions with reasons and removes nothing.
    let r = env.ok([
        "forget",
        "--keep-daily",
        "7",
        "--keep-monthly",
        "24",
        "--dry-run",
    ]);
    let out = r.out();
    assert!(
        out.contains("keep") && out.contains("monthly") && out.contains("daily"),
        "{r}"
    );
    assert_eq!(env.snapshots().len(), 16);

    // Daily 1 + monthly 24 keeps the newest of each month (14): the two
    // older snapshots of February go. Stored as the repository's policy,
    // forget without rules applies it.
    assert_eq!(env.run(["policy", "set"]).code, Some(2));
    assert_eq!(
        env.run(["policy", "set", "--keep-within", "3q"]).code,
        Some(2)
    );
    env.ok(["policy", "set", "--keep-daily", "1", "--keep-monthly", "24"]);
    let r = env.ok(["policy", "show"]);
    assert!(
        r.out()
            .contains("stored policy: --keep-daily 1 --keep-monthly 24"),
        "{r}"
    );
    env.ok(["forget"]);
    let left = env.snapshots();
    assert_eq!(left.len(), 14, "{left:?}");
    assert!(
        !left
            .iter()
            .any(|s| s["time"].as_str().unwrap().starts_with("2026-02-1")
                && !s["time"].as_str().unwrap().starts_with("2026-02-14")),
        "{left:?}"
    );
    // The oldest (2025-01-15) survives: history is intact.
    assert!(left
        .iter()
        .any(|s| s["time"].as_str().unwrap().starts_with("2025-01-15")));

    // The user insists: only the newest remains, and it restores.
    env.ok(["forget", "--keep-last", "1", "--allow-short-history"]);
    let left = env.snapshots();
    assert_eq!(left.len(), 1);
    let t = env.path("t");
    env.ok([
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        t.as_os_str(),
    ]);
    assert_eq!(
        std::fs::read(restored(&t, &src).join("f.txt")).unwrap(),
        b"2026-02-14 10:00"
    );
    // check is clean (unreferenced data is not damage).
    env.ok(["check"]);
}

#[test]
fn forget_groups_by_host_and_refuses_bad_input() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("a"), b"a");
    env.ok([
        OsStr::new("backup"),
        OsStr::new("--host"),
        OsStr::new("one"),
        src.as_os_str(),
    ]);
    env.ok([
        OsStr::new("backup"),
        OsStr::new("--host"),
        OsStr::new("two"),
        src.as_os_str(),
    ]);
    env.ok(["forget", "--keep-last", "1"]);
    assert_eq!(env.snapshots().len(), 2, "one per host is kept");
    env.ok(["forget", "--keep-last", "1", "--group-by", "paths"]);
    assert_eq!(env.snapshots().len(), 1);
    assert_eq!(env.run(["forget", "--keep-within", "3x"]).code, Some(2));
    assert_eq!(
        env.run(["forget", "--keep-last", "1", "--group-by", "color"])
            .code,
        Some(2)
    );
}

#[test]
fn stats_report_dedup_and_compression() {
    let env = Env::with_repo();
    let src = env.path("src");
    // 1 MiB of text-like data twice: dedup 2x within one snapshot, compressible.
    let text: Vec<u8> = (0..(1u32 << 20))
        .map(|i| b"abcdefgh\n"[(i % 9) as usize])
        .collect();
    write(&src.join("a.txt"), &text);
    write(&src.join("b.txt"), &text);
    env.backup([&src]);
    env.backup([&src]);
    let r = env.ok(["--json", "stats"]);
    let s: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(s["snapshots"], 2);
    assert_eq!(s["restore_size"], 4 << 20);
    assert!(s["unique_data"].as_u64().unwrap() <= 1 << 20, "{s}");
    assert!(s["dedup_ratio"].as_f64().unwrap() >= 4.0, "{s}");
    assert!(s["compression_ratio"].as_f64().unwrap() > 10.0, "{s}");
    assert!(s["packs"].as_u64().unwrap() >= 2, "{s}");
}

/// `check --read-data-subset`: the parts together read every pack, a
/// rotating percentage reaches every pack over repeated runs, and damage is
/// found by the run that reads the damaged pack.
#[test]
fn check_read_data_subset() {
    let env = Env::with_repo();
    let src = env.path("src");
    // Enough data for several packs (16 MiB each), incompressible.
    for i in 0..5 {
        write_random(&src.join(format!("f{i}")), 12 << 20);
    }
    env.backup([&src]);
    let total = packs(&env.repo).len();
    assert!(total >= 4, "{total} packs");
    let read = |args: &[&str]| -> u64 {
        let mut a = vec!["--json", "check"];
        a.extend_from_slice(args);
        let r = env.run(a);
        let v: serde_json::Value =
            serde_json::from_slice(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r}"));
        v["packs_read"].as_u64().unwrap()
    };
    let parts: u64 = (1..=3)
        .map(|n| read(&["--read-data-subset", &format!("{n}/3")]))
        .sum();
    assert_eq!(parts, total as u64);
    // 30% per run: four runs cover everything (the cursor lives in XDG_CACHE_HOME).
    let per_run = read(&["--read-data-subset", "30%"]);
    assert!(
        per_run >= 1 && per_run < total as u64,
        "{per_run} of {total}"
    );
    assert_eq!(
        env.run(["check", "--read-data-subset", "0/3"]).code,
        Some(2)
    );

    // Damage one pack: exactly one of the parts reports it.
    let victim = packs(&env.repo)
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&victim, &bytes).unwrap();
    let failing = (1..=3)
        .filter(|n| {
            env.run(["check", "--read-data-subset", &format!("{n}/3")])
                .code
                != Some(0)
        })
        .count();
    assert_eq!(failing, 1);
}

/// A protected snapshot survives any policy until it is unprotected (or its
/// date passes); protecting rewrites the snapshot file under a new id with
/// the same contents.
#[test]
fn protected_snapshots_survive_forget() {
    let env = Env::with_repo();
    let src = env.path("src");
    backup_at(&env, &src, "2026-01-01 10:00");
    let old = env.snapshots()[0]["id"].as_str().unwrap().to_string();
    backup_at(&env, &src, "2026-01-02 10:00");
    backup_at(&env, &src, "2026-01-03 10:00");
    env.ok(["protect", &old[..8]]);
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 3, "protect must replace, not add: {snaps:?}");
    let protected: Vec<_> = snaps.iter().filter(|s| s["protected"] == true).collect();
    assert_eq!(protected.len(), 1);
    assert!(protected[0]["time"]
        .as_str()
        .unwrap()
        .starts_with("2026-01-01"));
    assert!(
        !snaps.iter().any(|s| s["id"] == old.as_str()),
        "the old file must be gone"
    );

    env.ok(["forget", "--keep-last", "1"]);
    let left = env.snapshots();
    assert_eq!(left.len(), 2, "{left:?}");
    // Restoring the protected snapshot gives its original contents.
    let t = env.path("t");
    env.ok([
        OsStr::new("restore"),
        OsStr::new("@2026-01-01 12:00"),
        OsStr::new("--target"),
        t.as_os_str(),
    ]);
    assert_eq!(
        std::fs::read(restored(&t, &src).join("f.txt")).unwrap(),
        b"2026-01-01 10:00"
    );

    assert_eq!(
        env.run(["protect", "latest", "--until", "2001-01-01"]).code,
        Some(2)
    );
    env.ok(["unprotect", "@2026-01-01 12:00"]);
    env.ok(["forget", "--keep-last", "1"]);
    assert_eq!(env.snapshots().len(), 1);
    env.ok(["check"]);
}

/// `repair index` rebuilds a lost or damaged index from the pack headers:
/// afterwards check is clean and everything restores.
#[test]
fn repair_index_rebuilds_a_lost_index() {
    let env = Env::with_repo();
    let src = env.path("src");
    write_random(&src.join("big.bin"), 20 << 20);
    write(&src.join("small.txt"), b"small");
    env.backup([&src]);
    write(&src.join("later.txt"), b"later");
    env.backup([&src]);
    let index_files = repo_files(&env.repo, "index");
    assert!(!index_files.is_empty());
    // Lose one index file and truncate the other(s).
    std::fs::remove_file(&index_files[0]).unwrap();
    for f in &index_files[1..] {
        let b = std::fs::read(f).unwrap();
        std::fs::write(f, &b[..b.len() / 2]).unwrap();
    }
    assert_ne!(env.run(["check"]).code, Some(0));
    let r = env.ok(["repair", "index", "--dry-run"]);
    assert!(r.out().contains("would index"), "{r}");
    env.ok(["repair", "index"]);
    env.ok(["check", "--read-data"]);
    let t = env.path("t");
    env.ok([
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--verify"),
        OsStr::new("--target"),
        t.as_os_str(),
    ]);
    assert_eq!(
        std::fs::read(restored(&t, &src).join("big.bin")).unwrap(),
        std::fs::read(src.join("big.bin")).unwrap()
    );
    assert_eq!(
        std::fs::read(restored(&t, &src).join("later.txt")).unwrap(),
        b"later"
    );
}

/// `repair snapshots` after a pack is lost: a new snapshot without the
/// files whose data was in it restores cleanly; the original stays.
#[test]
fn repair_snapshots_leaves_out_lost_files() {
    let env = Env::with_repo();
    let src = env.path("src");
    write_random(&src.join("big.bin"), 20 << 20);
    env.backup([&src]);
    // small.txt comes later, so its data is in another pack.
    write(&src.join("keep/small.txt"), b"small");
    env.backup([&src]);
    // Lose the largest pack (data of big.bin), then rebuild the index.
    let victim = packs(&env.repo)
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    std::fs::remove_file(&victim).unwrap();
    env.ok(["repair", "index"]);
    let r = env.ok(["repair", "snapshots", "--dry-run"]);
    assert!(r.out().contains("big.bin"), "{r}");
    assert_eq!(env.snapshots().len(), 2);
    let r = env.ok(["repair", "snapshots"]);
    assert!(
        r.out().contains("left out") && r.out().contains("big.bin"),
        "{r}"
    );
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 4, "originals kept: {snaps:?}");
    let repaired = snaps
        .iter()
        .rev()
        .find(|s| {
            s["tags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == "repaired")
        })
        .expect("a repaired snapshot");
    let t = env.path("t");
    env.ok([
        OsStr::new("restore"),
        OsStr::new(repaired["id"].as_str().unwrap()),
        OsStr::new("--target"),
        t.as_os_str(),
    ]);
    assert_eq!(
        std::fs::read(restored(&t, &src).join("keep/small.txt")).unwrap(),
        b"small"
    );
    assert!(!restored(&t, &src).join("big.bin").exists());
    // Nothing left to repair in the repaired snapshot.
    let r = env.ok([
        OsStr::new("repair"),
        OsStr::new("snapshots"),
        OsStr::new("--tag"),
        OsStr::new("repaired"),
    ]);
    assert!(r.out().contains("no snapshot refers to lost data"), "{r}");
}
