//! Corruption matrix: every kind of repository file, damaged three ways (a
//! flipped bit, truncation, deletion). The damage is reported (never a
//! panic), and whatever the damage does not touch still restores.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use common::*;

#[derive(Clone, Copy, Debug)]
enum Damage {
    Flip,
    Truncate,
    Delete,
}

fn damage(path: &Path, how: Damage) {
    match how {
        Damage::Flip => {
            let mut b = fs::read(path).unwrap();
            let i = b.len() / 2;
            b[i] ^= 0x10;
            fs::write(path, b).unwrap();
        }
        Damage::Truncate => {
            let b = fs::read(path).unwrap();
            fs::write(path, &b[..b.len() / 2]).unwrap();
        }
        Damage::Delete => fs::remove_file(path).unwrap(),
    }
}

/// Two independent snapshots: A (src/a) and B (src/b), each with its own
/// packs, index file and snapshot file.
struct Setup {
    env: Env,
    a: PathBuf,
    b: PathBuf,
    a_pack: PathBuf,
    a_index: PathBuf,
    a_snapshot: PathBuf,
    b_id: String,
}

fn setup() -> Setup {
    let env = Env::with_repo();
    let a = env.path("a");
    let b = env.path("b");
    write_random(&a.join("a.bin"), 300_000);
    write_random(&b.join("b.bin"), 300_000);
    env.backup([&a]);
    let packs_a = packs(&env.repo);
    let index_a = repo_files(&env.repo, "index");
    let snaps_a = repo_files(&env.repo, "snapshots");
    let b_id = env.backup([&b])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let a_pack = packs_a
        .iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap()
        .clone();
    Setup {
        a_pack,
        a_index: index_a[0].clone(),
        a_snapshot: snaps_a[0].clone(),
        env,
        a,
        b,
        b_id,
    }
}

fn b_restores(s: &Setup) {
    let t = s.env.path(format!("restore-b-{}", rand_suffix()));
    let r = s.env.run([
        OsStr::new("restore"),
        OsStr::new(&s.b_id),
        OsStr::new("--target"),
        t.as_os_str(),
    ]);
    assert_eq!(r.code, Some(0), "B must restore despite damage to A: {r}");
    assert_eq!(
        fs::read(restored(&t, &s.b).join("b.bin")).unwrap(),
        fs::read(s.b.join("b.bin")).unwrap()
    );
}

fn rand_suffix() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[test]
fn damaged_data_pack() {
    for how in [Damage::Flip, Damage::Truncate, Damage::Delete] {
        let s = setup();
        damage(&s.a_pack, how);
        let r = s.env.run(["check", "--read-data"]);
        assert_eq!(r.code, Some(1), "{how:?}: {r}");
        assert!(
            r.stderr.contains("pack") && !r.stderr.contains("panicked"),
            "{how:?}: {r}"
        );
        assert!(
            r.stderr.contains("a.bin"),
            "{how:?}: affected file not named: {r}"
        );
        // A names its damaged file; B is whole.
        let t = s.env.path("restore-a");
        let r = s.env.run([
            OsStr::new("restore"),
            OsStr::new("latest"),
            OsStr::new("--path"),
            s.a.as_os_str(),
            OsStr::new("--target"),
            t.as_os_str(),
        ]);
        assert_eq!(r.code, Some(1), "{how:?}: {r}");
        assert!(r.stderr.contains("a.bin"), "{how:?}: {r}");
        b_restores(&s);
    }
}

#[test]
fn damaged_index_file() {
    for how in [Damage::Flip, Damage::Truncate, Damage::Delete] {
        let s = setup();
        damage(&s.a_index, how);
        let r = s.env.run(["check"]);
        assert_eq!(r.code, Some(1), "{how:?}: {r}");
        assert!(!r.stderr.contains("panicked"), "{how:?}: {r}");
        b_restores(&s);
        // The index comes back from the packs.
        s.env.ok(["repair", "index"]);
        s.env.ok(["check", "--read-data"]);
    }
}

#[test]
fn damaged_snapshot_file() {
    for how in [Damage::Flip, Damage::Truncate] {
        let s = setup();
        damage(&s.a_snapshot, how);
        let r = s.env.run(["check"]);
        assert_eq!(r.code, Some(1), "{how:?}: {r}");
        let name = s.a_snapshot.file_name().unwrap().to_str().unwrap();
        assert!(
            r.stderr.contains(name),
            "{how:?}: damaged snapshot not named: {r}"
        );
        b_restores(&s);
    }
    // A deleted snapshot file looks like a forgotten snapshot (DESIGN.md,
    // threat model): check cannot tell, and the rest is intact.
    let s = setup();
    damage(&s.a_snapshot, Damage::Delete);
    s.env.ok(["check"]);
    b_restores(&s);
}

#[test]
fn damaged_key_and_config() {
    for how in [Damage::Flip, Damage::Truncate, Damage::Delete] {
        let s = setup();
        let key = repo_files(&s.env.repo, "keys").remove(0);
        if let Damage::Flip = how {
            // One hex digit of the sealed master key: still JSON, fails authentication.
            let text = fs::read_to_string(&key).unwrap();
            let at = text.find("\"data\"").unwrap() + 12;
            let mut b = text.into_bytes();
            b[at] = if b[at] == b'0' { b'1' } else { b'0' };
            fs::write(&key, b).unwrap();
        } else {
            damage(&key, how);
        }
        let r = s.env.run(["snapshots"]);
        // The only key damaged is damage (exit 1, the file named), not a
        // wrong password; deleted, there is no repository.
        let want = if let Damage::Delete = how { 10 } else { 1 };
        assert_eq!(r.code, Some(want), "{how:?}: {r}");
        assert!(!r.stderr.contains("panicked"), "{how:?}: {r}");
        if want == 1 {
            let name = key.file_name().unwrap().to_str().unwrap();
            assert!(r.stderr.contains(name), "{how:?}: key file not named: {r}");
        }
    }
    // The config is plaintext and holds no secret; truncated or deleted, the
    // location is no repository any more (and says so).
    for how in [Damage::Truncate, Damage::Delete] {
        let s = setup();
        damage(&s.env.repo.join("config"), how);
        let r = s.env.run(["snapshots"]);
        assert_eq!(r.code, Some(10), "{how:?}: {r}");
        assert!(r.stderr.contains("config"), "{how:?}: {r}");
    }
}
