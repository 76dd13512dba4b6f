//! The index beyond `--max-memory`: an on-disk table in the cache
//! (docs/DESIGN.md §6b), used end to end, damaged on purpose, refused bad
//! budgets.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::*;

/// The index tables in the world's cache.
fn tables(env: &Env) -> Vec<PathBuf> {
    let dir = env.path("home/.cache/rewind/index");
    let mut out = Vec::new();
    for repo in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(repo.path()).unwrap().flatten() {
            if f.file_name().to_string_lossy().starts_with("table-") {
                out.push(f.path());
            }
        }
    }
    out
}

fn small(env: &Env, args: &[&OsStr]) -> Run {
    let mut all = vec![OsStr::new("--max-memory"), OsStr::new("1M")];
    all.extend_from_slice(args);
    env.run(all)
}

/// `n` small random files (100-400 bytes) in `dirs` folders of `src`.
fn small_files(src: &Path, n: usize, dirs: usize) {
    for i in 0..n {
        write_random(&src.join(format!("d{}/f{i:05}", i % dirs)), 100 + i % 300);
    }
}

/// A backup of `src` within the small budget, which must succeed.
fn small_backup(env: &Env, src: &Path) {
    let r = small(
        env,
        &[
            OsStr::new("backup"),
            OsStr::new("--no-scan"),
            src.as_os_str(),
        ],
    );
    assert_eq!(r.code, Some(0), "{r}");
}

fn restore_equal(env: &Env, src: &Path, target: &str) {
    let out = env.path(target);
    let r = small(
        env,
        &[
            OsStr::new("restore"),
            OsStr::new("latest"),
            OsStr::new("--target"),
            out.as_os_str(),
        ],
    );
    assert_eq!(r.code, Some(0), "{r}");
    assert_trees_equal(src, &restored(&out, src), &[]);
}

#[test]
fn an_index_over_its_budget_lives_on_disk_and_restores_exactly() {
    let env = Env::with_repo();
    let src = env.path("src");
    // 12,000 blobs: more than the 5,041 entries that 1M lets the index
    // hold while it loads (a quarter of the budget, 52 bytes each).
    small_files(&src, 12_000, 16);
    let backup = |env: &Env| small_backup(env, &src);
    backup(&env);
    assert!(
        tables(&env).is_empty(),
        "the index was empty when the backup loaded it"
    );

    // The restore loads 12,000 blobs: spilled and merged into a table.
    restore_equal(&env, &src, "out1");
    let t = tables(&env);
    assert_eq!(t.len(), 1, "{t:?}");
    let made = std::fs::metadata(&t[0]).unwrap().modified().unwrap();

    // A small change is read on top of the table, which is not rewritten.
    write_random(&src.join("new.bin"), 300_000);
    backup(&env);
    restore_equal(&env, &src, "out2");
    assert_eq!(tables(&env), t);
    assert_eq!(std::fs::metadata(&t[0]).unwrap().modified().unwrap(), made);

    // The same repository in memory (the default budget) agrees.
    let out = env.path("out3");
    env.ok([
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        out.as_os_str(),
    ]);
    assert_trees_equal(&src, &restored(&out, &src), &[]);
    env.ok(["check", "--read-data"]);

    // A changed page is refused (never a wrong place): the restore stops
    // and says so, the table is removed, and the next run rebuilds it.
    let mut bytes = std::fs::read(&t[0]).unwrap();
    bytes[3 * 4096 + 40] ^= 1;
    std::fs::write(&t[0], &bytes).unwrap();
    let out = env.path("out4");
    let r = small(
        &env,
        &[
            OsStr::new("restore"),
            OsStr::new("latest"),
            OsStr::new("--target"),
            out.as_os_str(),
        ],
    );
    assert_ne!(r.code, Some(0), "{r}");
    assert!(
        r.stderr.contains("index table") && r.stderr.contains("run the command again"),
        "{r}"
    );
    assert!(!t[0].exists());
    restore_equal(&env, &src, "out5");
    assert_eq!(tables(&env).len(), 1);

    // A table planted without the key is removed and rebuilt.
    let t = tables(&env);
    std::fs::write(&t[0], vec![0u8; 3 * 4096]).unwrap();
    restore_equal(&env, &src, "out6");
    assert_eq!(tables(&env).len(), 1);

    // --no-cache: in memory, whatever the budget.
    let out = env.path("out7");
    let r = small(
        &env,
        &[
            OsStr::new("--no-cache"),
            OsStr::new("restore"),
            OsStr::new("latest"),
            OsStr::new("--target"),
            out.as_os_str(),
        ],
    );
    assert_eq!(r.code, Some(0), "{r}");
    assert_trees_equal(&src, &restored(&out, &src), &[]);

    // Check within the budget (the index files read again for each pass,
    // the walk asking the table in id order) says what check in memory
    // says: nothing, then, with a pack gone, the same losses.
    let r = small(&env, &[OsStr::new("check"), OsStr::new("--read-data")]);
    assert_eq!(r.code, Some(0), "{r}");
    // The largest pack: data (so the walk finds files whose data is gone).
    let data = repo_files(&env.repo, "data")
        .iter()
        .flat_map(|d| repo_files(d, ""))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    std::fs::remove_file(&data).unwrap();
    let same = |env: &Env, says: &str| {
        let full = env.run(["check", "--read-data"]);
        let lean = small(env, &[OsStr::new("check"), OsStr::new("--read-data")]);
        assert_ne!(full.code, Some(0), "{full}");
        assert!(full.stderr.contains(says), "{full}");
        assert_eq!(
            (full.code, &full.stdout, &full.stderr),
            (lean.code, &lean.stdout, &lean.stderr)
        );
    };
    same(&env, "12000 blobs lost");
    // The index rebuilt from the packs that are left: the blobs are then
    // missing from the index (what the walk asks the table about).
    // Another 6,000 blobs put that index over the budget again.
    env.ok(["repair", "index"]);
    let more = env.path("more");
    for i in 0..6_000usize {
        write_random(&more.join(format!("g{i:05}")), 100 + i % 200);
    }
    env.ok([
        OsStr::new("backup"),
        OsStr::new("--no-scan"),
        more.as_os_str(),
    ]);
    for t in tables(&env) {
        std::fs::remove_file(t).unwrap();
    }
    same(&env, "data blobs missing from the index");
    assert_eq!(tables(&env).len(), 1, "the lean check used no table");
}

#[test]
fn a_bad_budget_is_refused_before_the_password() {
    let env = Env::with_repo();
    for bad in ["0", "lots", "512K", "64Q"] {
        let mut c = env.bare_cmd();
        c.env("REWIND_REPOSITORY", &env.repo)
            .args(["--max-memory", bad, "snapshots"]);
        let r = run_cmd(c);
        assert_eq!(r.code, Some(2), "{bad}: {r}");
        assert!(r.stderr.contains("--max-memory"), "{bad}: {r}");
        assert!(!r.stderr.contains("password"), "{bad}: {r}");
    }
}

/// Prune within the budget: it reads the index files again for each step
/// (claims, repacks, the new index) instead of holding them, and what it
/// leaves restores exactly and checks clean.
#[test]
fn prune_within_the_budget_keeps_what_snapshots_use() {
    let env = Env::with_repo();
    let src = env.path("src");
    small_files(&src, 8_000, 8);
    let backup = |env: &Env| small_backup(env, &src);
    backup(&env);
    // Half the files go: their blobs are used by the first snapshot only,
    // and share packs with blobs that stay.
    for i in (0..8_000usize).step_by(2) {
        std::fs::remove_file(src.join(format!("d{}/f{i:05}", i % 8))).unwrap();
    }
    write_random(&src.join("new.bin"), 200_000);
    backup(&env);
    let r = small(
        &env,
        &[
            OsStr::new("forget"),
            OsStr::new("--keep-last"),
            OsStr::new("1"),
        ],
    );
    assert_eq!(r.code, Some(0), "{r}");
    let before = du(&env.repo.join("data"));
    let r = small(
        &env,
        &[
            OsStr::new("--json"),
            OsStr::new("prune"),
            OsStr::new("--now"),
            OsStr::new("--max-unused"),
            OsStr::new("0%"),
        ],
    );
    assert_eq!(r.code, Some(0), "{r}");
    let report: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let report = &report["report"];
    assert!(
        report["repack_copied_bytes"].as_u64() > Some(0)
            && report["deleted"]["count"].as_u64() > Some(0)
            && report["index_written"].as_u64() > Some(0),
        "{report:#}"
    );
    assert!(
        du(&env.repo.join("data")) < before,
        "nothing was given back"
    );
    restore_equal(&env, &src, "out");
    env.ok(["check", "--read-data"]);
}

/// Bytes of the files under `dir`.
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        total += if m.is_dir() { du(&e.path()) } else { m.len() };
    }
    total
}
