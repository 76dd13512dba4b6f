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
    for i in 0..12_000usize {
        write_random(&src.join(format!("d{}/f{i:05}", i % 16)), 100 + i % 300);
    }
    let backup = |env: &Env| {
        let r = small(
            env,
            &[
                OsStr::new("backup"),
                OsStr::new("--no-scan"),
                src.as_os_str(),
            ],
        );
        assert_eq!(r.code, Some(0), "{r}");
    };
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
