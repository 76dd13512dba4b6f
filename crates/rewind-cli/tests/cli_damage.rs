//! Damage that a review and fault probes found mishandled: a hostile or
//! edited config, damaged key files, damaged side files (settings, prune
//! states, running markers), a damaged index, a damaged newest snapshot and
//! a pack with one flipped bit. Each is named, never blocks backups or
//! maintenance, and loses no more than it must.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use common::*;

fn flip_middle(path: &Path) {
    let mut b = fs::read(path).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0x10;
    fs::write(path, b).unwrap();
}

fn name_of(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn one(mut v: Vec<PathBuf>) -> PathBuf {
    assert_eq!(v.len(), 1, "expected one file: {v:?}");
    v.remove(0)
}

/// Two days ago, as seconds since the epoch.
fn two_days_ago() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 2 * 86_400
}

#[test]
fn a_config_id_that_names_a_path_is_refused_and_nothing_is_written_outside() {
    let env = Env::with_repo();
    let src = env.path("src");
    write_random(&src.join("f"), 10_000);
    env.backup([&src]);
    let cache = env.path("cache");
    let config = env.repo.join("config");
    let text = fs::read_to_string(&config).unwrap();
    let id = serde_json::from_str::<serde_json::Value>(&text).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let hostile = text.replace(&id, "../../../escaped");
    fs::write(&config, hostile).unwrap();
    let r = run_cmd({
        let mut c = env.cmd();
        c.env("XDG_CACHE_HOME", &cache)
            .args(["check", "--read-data-subset", "50%"]);
        c
    });
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains("config") && r.stderr.contains("hex"),
        "{r}"
    );
    assert!(!env.path("escaped").exists() && !env.root.join("../escaped").exists());
    assert!(
        !cache.exists(),
        "nothing may be cached for a refused config: {r}"
    );
}

#[test]
fn an_edited_config_is_detected_by_the_keys() {
    let env = Env::with_repo();
    let config = env.repo.join("config");
    let text = fs::read_to_string(&config).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let id = v["id"].as_str().unwrap();
    // Still a well-formed id, one digit changed: only the binding to the
    // keys can tell. (Swapping letters left an id without them unchanged.)
    let last = id.chars().last().unwrap();
    let other = format!(
        "{}{}",
        &id[..id.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    assert_ne!(other, id);
    fs::write(&config, text.replace(id, &other)).unwrap();
    let r = env.run(["snapshots"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains("config") && r.stderr.contains("created with"),
        "{r}"
    );
}

#[test]
fn a_damaged_key_file_is_named_not_taken_for_a_wrong_password() {
    let env = Env::with_repo();
    let first = one(repo_files(&env.repo, "keys"));
    let second_pw = env.path("second.pw");
    fs::write(&second_pw, "another password\n").unwrap();
    env.ok([
        OsStr::new("key"),
        OsStr::new("add"),
        OsStr::new("--new-password-file"),
        second_pw.as_os_str(),
    ]);
    flip_middle(&first);
    // The first password's key is damaged: the message says so, by name.
    let r = env.run(["snapshots"]);
    assert_eq!(r.code, Some(12), "{r}");
    assert!(
        r.stderr.contains(&name_of(&first)),
        "damaged key not named: {r}"
    );
    // The other key still opens.
    let r = run_cmd({
        let mut c = env.cmd();
        c.env("REWIND_PASSWORD", "another password")
            .arg("snapshots");
        c
    });
    assert_eq!(r.code, Some(0), "{r}");
    // Check names it too.
    let r = run_cmd({
        let mut c = env.cmd();
        c.env("REWIND_PASSWORD", "another password").arg("check");
        c
    });
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains(&name_of(&first)), "{r}");

    // The only key damaged: damage, not a wrong password.
    let env = Env::with_repo();
    let key = one(repo_files(&env.repo, "keys"));
    flip_middle(&key);
    let r = env.run(["snapshots"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains(&name_of(&key)) && !r.stderr.contains("wrong password"),
        "{r}"
    );
}

#[test]
fn a_damaged_settings_file_never_blocks_a_backup_and_can_be_replaced() {
    let env = Env::with_repo();
    let src = env.path("src");
    write_random(&src.join("f"), 10_000);
    env.ok(["policy", "set", "--keep-within", "2y"]);
    let file = one(repo_files(&env.repo, "policy"));
    flip_middle(&file);
    // Backups go on (the recommended policy applies: no readable settings).
    env.backup([&src]);
    // Check names the damage.
    let r = env.run(["check", "--read-data"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains(&name_of(&file)), "{r}");
    // New settings replace it.
    env.ok(["policy", "set", "--keep-within", "3y"]);
    assert!(!file.exists(), "the damaged settings file stays");
    env.ok(["check", "--read-data"]);
    let r = env.ok(["policy", "show"]);
    assert!(r.out().contains("3y"), "{r}");
}

#[test]
fn a_damaged_running_marker_holds_off_prune_now_until_it_is_old() {
    let env = Env::with_repo();
    let src = env.path("src");
    write_random(&src.join("f"), 10_000);
    env.backup([&src]);
    // Garbage under a valid name: it may be a live backup's marker.
    let marker = env.repo.join("running").join("ab".repeat(32));
    fs::create_dir_all(marker.parent().unwrap()).unwrap();
    fs::write(&marker, random_bytes(200)).unwrap();
    let r = env.run(["prune", "--now"]);
    assert_eq!(
        r.code,
        Some(1),
        "prune --now went ahead past a damaged marker: {r}"
    );
    assert!(r.stderr.contains(&name_of(&marker)), "{r}");
    let r = env.run(["check"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains(&name_of(&marker)), "{r}");
    // Old by the storage's clock: stale, and deleted by a plain prune.
    set_mtime(&marker, two_days_ago(), 0);
    env.ok(["prune", "--now"]);
    env.ok(["prune"]);
    assert!(!marker.exists(), "an old damaged marker is never removed");
    env.ok(["check"]);
}

#[test]
fn a_damaged_prune_state_is_named_and_replaced() {
    let env = Env::with_repo();
    let src = env.path("src");
    write_random(&src.join("f"), 10_000);
    env.backup([&src]);
    let state = env.repo.join("prune").join("cd".repeat(32));
    fs::create_dir_all(state.parent().unwrap()).unwrap();
    fs::write(&state, random_bytes(300)).unwrap();
    let r = env.run(["check"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains(&name_of(&state)), "{r}");
    env.ok(["prune"]);
    assert!(
        !state.exists(),
        "prune keeps a damaged state beside its new one"
    );
    env.ok(["check"]);
}

#[test]
fn a_damaged_index_is_not_called_harmless_and_backup_says_so() {
    let env = Env::with_repo();
    let a = env.path("a");
    write_random(&a.join("a.bin"), 200_000);
    env.backup([&a]);
    let index = one(repo_files(&env.repo, "index"));
    flip_middle(&index);
    let r = env.run(["check"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(!r.stderr.contains("harmless"), "{r}");
    assert!(r.stderr.contains("repair index"), "{r}");
    // A backup warns (and stores the data again rather than failing).
    let b = env.path("b");
    write_random(&b.join("b.bin"), 1000);
    let r = env.run([OsStr::new("backup"), b.as_os_str()]);
    assert!(
        r.stderr.contains(&name_of(&index)),
        "a backup on a damaged index warns of nothing: {r}"
    );
    env.ok(["repair", "index"]);
    env.ok(["check", "--read-data"]);
}

#[test]
fn restore_latest_refuses_to_pick_an_older_snapshot_past_a_damaged_one() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("f"), b"old");
    let old = env.backup([&src])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = repo_files(&env.repo, "snapshots");
    write(&src.join("f"), b"new");
    env.backup([&src]);
    let newest = repo_files(&env.repo, "snapshots")
        .into_iter()
        .find(|p| !before.contains(p))
        .unwrap();
    flip_middle(&newest);
    let t = env.path("t");
    let r = env.run([
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        t.as_os_str(),
    ]);
    assert_eq!(r.code, Some(1), "restored an older snapshot as latest: {r}");
    assert!(r.stderr.contains(&name_of(&newest)), "{r}");
    assert!(!t.exists(), "{r}");
    // By id, the intact snapshot restores.
    env.ok([
        OsStr::new("restore"),
        OsStr::new(&old),
        OsStr::new("--target"),
        t.as_os_str(),
    ]);
    assert_eq!(fs::read(restored(&t, &src).join("f")).unwrap(), b"old");
}

#[test]
fn repair_packs_keeps_every_blob_that_still_authenticates() {
    let env = Env::with_repo();
    let src = env.path("src");
    // Many small files: one chunk each, all in one pack.
    for i in 0..200 {
        write_random(&src.join(format!("f{i:03}")), 3000 + i);
    }
    let id = env.backup([&src])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let pack = packs(&env.repo)
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    // One flipped bit in the middle of the pack: one blob.
    let mut b = fs::read(&pack).unwrap();
    let at = b.len() / 2;
    b[at] ^= 0x01;
    fs::write(&pack, b).unwrap();

    let r = env.run(["check", "--read-data"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains("repair packs"),
        "check does not point to the repair: {r}"
    );

    let r = env.run(["--json", "repair", "packs", "--dry-run"]);
    assert_eq!(r.code, Some(0), "{r}");
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["damaged"][0]["lost"], 1, "{r}");
    assert!(pack.exists(), "a dry run deleted the pack");

    let r = env.ok(["--json", "repair", "packs"]);
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let d = &v["damaged"][0];
    assert_eq!(d["pack"], name_of(&pack), "{r}");
    assert_eq!(d["lost"], 1, "{r}");
    assert_eq!(d["salvaged"], 199, "{r}");
    assert!(!pack.exists(), "the damaged pack stays");

    let r = env.ok(["repair", "snapshots"]);
    let left_out = r.out().lines().filter(|l| l.contains("left out")).count();
    assert_eq!(
        left_out, 1,
        "repair lost more than the one damaged file: {r}"
    );

    // The repaired snapshot restores everything but that one file.
    let repaired = env
        .snapshots()
        .into_iter()
        .find(|s| s["id"].as_str().unwrap() != id)
        .unwrap();
    let t = env.path("t");
    env.ok([
        OsStr::new("restore"),
        OsStr::new(repaired["id"].as_str().unwrap()),
        OsStr::new("--target"),
        t.as_os_str(),
    ]);
    let back = restored(&t, &src);
    let same = (0..200)
        .filter(|i| {
            let n = format!("f{i:03}");
            fs::read(back.join(&n)).ok() == Some(fs::read(src.join(&n)).unwrap())
        })
        .count();
    assert_eq!(same, 199);
    // Every pack reads whole; the one lost file is the only damage left,
    // in the original snapshot (kept until forgotten).
    let r = env.run(["--json", "check", "--read-data"]);
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["affected"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(v["affected"][0]["snapshot"], id.as_str(), "{r}");
    assert_eq!(v["damaged_packs"].as_array().unwrap().len(), 0, "{r}");
}

#[test]
fn the_check_cursor_is_never_kept_relative_to_the_working_directory() {
    let env = Env::with_repo();
    let src = env.path("src");
    write_random(&src.join("f"), 10_000);
    env.backup([&src]);
    let cwd = env.path("cwd");
    fs::create_dir_all(&cwd).unwrap();
    let r = run_cmd({
        let mut c = env.cmd();
        c.env_remove("HOME")
            .env_remove("XDG_CACHE_HOME")
            .current_dir(&cwd)
            .args(["check", "--read-data-subset", "50%"]);
        c
    });
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stderr.contains("cursor"), "{r}");
    assert_eq!(
        fs::read_dir(&cwd).unwrap().count(),
        0,
        "wrote into the working directory"
    );
    // A cache that cannot be written is said, not swallowed.
    let blocked = env.path("blocked");
    fs::write(&blocked, "a file, not a directory").unwrap();
    let r = run_cmd({
        let mut c = env.cmd();
        c.env("XDG_CACHE_HOME", &blocked)
            .args(["check", "--read-data-subset", "50%"]);
        c
    });
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stderr.contains("cannot keep the check cursor"), "{r}");
}

#[test]
fn files_that_fail_to_restore_are_not_counted_as_up_to_date() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("d/x"), b"x");
    write(&src.join("d/y"), b"y");
    let before = packs(&env.repo);
    env.backup([&src]);
    // The data pack is lost: both files fail; the directories restore.
    let data_pack = packs(&env.repo)
        .into_iter()
        .filter(|p| !before.contains(p))
        .min_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let t = env.path("t");
    let mut lost = false;
    for p in packs(&env.repo).into_iter().filter(|p| !before.contains(p)) {
        // Remove the pack whose loss fails the files, not the trees.
        fs::rename(&p, env.path("aside")).unwrap();
        let r = env.run([
            OsStr::new("--json"),
            OsStr::new("restore"),
            OsStr::new("latest"),
            OsStr::new("--target"),
            t.as_os_str(),
        ]);
        fs::rename(env.path("aside"), &p).unwrap();
        if !r.out().contains(r#""message_type":"summary""#) {
            continue; // the tree pack: nothing could be planned
        }
        assert_eq!(r.code, Some(1), "{r}");
        let s = r.summary();
        assert_eq!(s["files_skipped"], 0, "failures counted as up to date: {r}");
        assert_eq!(s["files_failed"], 2, "{r}");
        lost = true;
    }
    assert!(lost, "no data pack found ({})", data_pack.display());
}

#[test]
fn a_file_that_grew_while_read_has_the_size_it_was_stored_with() {
    // /proc files say 0 bytes and then give content: a file that grew
    // between its stat and its read, every time.
    let proc_file = Path::new("/proc/version");
    if !proc_file.is_file() {
        eprintln!("skipped: no /proc/version");
        return;
    }
    let env = Env::with_repo();
    let summary = run_cmd({
        let mut c = env.cmd();
        c.args(["--json", "backup", "/proc/version"]);
        c
    })
    .summary();
    let t = env.path("t");
    env.ok([
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        t.as_os_str(),
    ]);
    let stored = fs::metadata(t.join("proc/version")).unwrap().len();
    assert!(stored > 0);
    assert_eq!(summary["total_bytes"], stored, "{summary}");
    let snaps = env.snapshots();
    assert_eq!(snaps[0]["summary"]["total_bytes"], stored, "{snaps:?}");
}

#[test]
fn a_hard_link_to_a_blocked_file_is_never_made_through_a_symlink() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("a/x"), b"inside");
    fs::create_dir_all(src.join("b")).unwrap();
    fs::hard_link(src.join("a/x"), src.join("b/y")).unwrap();
    env.backup([&src]);
    // The target has a symlink to a directory outside where the snapshot
    // has the directory `a` (whose `x` is the first path of the hard link `b/y`), and a file `x` out there.
    let t = env.path("t");
    let outside = env.path("outside");
    write(&outside.join("x"), b"outside");
    let back = restored(&t, &src);
    fs::create_dir_all(&back).unwrap();
    std::os::unix::fs::symlink(&outside, back.join("a")).unwrap();
    let r = env.run([
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--overwrite"),
        OsStr::new("never"),
        OsStr::new("--target"),
        t.as_os_str(),
    ]);
    assert_eq!(r.code, Some(1), "{r}");
    let outside_ino = fs::metadata(outside.join("x")).unwrap().ino();
    if let Ok(md) = fs::symlink_metadata(back.join("b/y")) {
        assert_ne!(
            md.ino(),
            outside_ino,
            "linked a file outside the target: {r}"
        );
    }
    assert_eq!(fs::read(outside.join("x")).unwrap(), b"outside");
    assert_eq!(fs::metadata(outside.join("x")).unwrap().nlink(), 1, "{r}");
}

#[test]
fn a_damaged_newest_prune_state_deletes_nothing_on_an_older_mark() {
    let env = Env::with_repo();
    let a = env.path("a");
    write_random(&a.join("a.bin"), 300_000);
    env.backup([&a]);
    // Forget it: its pack is unused, and a prune marks it.
    let b = env.path("b");
    write_random(&b.join("b.bin"), 1000);
    env.backup([&b]);
    let ids: Vec<String> = env
        .snapshots()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let old_state_dir = env.repo.join("prune");
    env.ok(["forget", "--keep-last", "1", "--allow-short-history"]);
    env.ok(["prune"]);
    let marked = one(repo_files(&env.repo, "prune"));
    let kept = env.path("state-with-mark");
    fs::copy(&marked, &kept).unwrap();
    // A later state (e.g. one that dropped the mark) is damaged; the older
    // one with the mark is still there.
    env.ok(["prune"]);
    let newest = one(repo_files(&env.repo, "prune"));
    fs::copy(&kept, old_state_dir.join(name_of(&marked))).unwrap();
    set_mtime(&old_state_dir.join(name_of(&marked)), two_days_ago(), 0);
    flip_middle(&newest);
    let before = packs(&env.repo);
    // The old mark's grace period (1 s) is over; still nothing goes on it.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let r = env.run(["prune", "--grace", "1s"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stderr.contains(&name_of(&newest)), "{r}");
    assert_eq!(
        packs(&env.repo),
        before,
        "deleted on an older state's mark: {r}"
    );
    assert!(ids.len() == 2);
}
