//! End-to-end tests of failures: wrong passwords, missing or foreign
//! repositories, unreadable sources, unwritable targets, damaged
//! repositories, key management.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    let r = env.run(["backup", "--no-such-flag"]);
    r.expect_code(2);
    let r = env.run(["restore", "latest"]); // no --target
    r.expect_code(2);
    assert!(r.stderr.contains("--target"), "{r}");
    let r = env.run(["frobnicate"]);
    r.expect_code(2);
}

#[test]
fn wrong_password_exits_12() {
    let env = Env::with_repo();
    let mut c = env.cmd();
    c.env("REWIND_PASSWORD", "not the password")
        .arg("snapshots");
    let r = run_cmd(c);
    r.expect_code(12);
    assert!(r.stderr.contains("wrong password"), "{r}");
    // A password file with the wrong password too.
    let pwf = env.path("pw");
    fs::write(&pwf, "also wrong\n").unwrap();
    let mut c = env.bare_cmd();
    c.env("REWIND_REPOSITORY", &env.repo)
        .env("REWIND_PASSWORD_FILE", &pwf)
        .args(["backup", "/etc/hostname"]);
    run_cmd(c).expect_code(12);
    // The right one in a file (first line only) works.
    fs::write(&pwf, format!("{PASSWORD}\nsecond line ignored\n")).unwrap();
    let mut c = env.bare_cmd();
    c.env("REWIND_REPOSITORY", &env.repo)
        .env("REWIND_PASSWORD_FILE", &pwf)
        .arg("snapshots");
    run_cmd(c).expect_code(0);
    // No password at all, not on a terminal: a clear error, no hang.
    let mut c = env.bare_cmd();
    c.env("REWIND_REPOSITORY", &env.repo).arg("snapshots");
    let r = run_cmd(c);
    assert_ne!(r.code, Some(0), "{r}");
    assert!(r.stderr.contains("no password"), "{r}");
}

#[test]
fn not_a_repository_exits_10() {
    let env = Env::new();
    let empty = env.path("empty");
    fs::create_dir(&empty).unwrap();
    let mut c = env.cmd();
    c.env("REWIND_REPOSITORY", &empty).arg("snapshots");
    let r = run_cmd(c);
    r.expect_code(10);
    assert!(r.stderr.contains("no rewind repository"), "{r}");
    assert!(r.stderr.contains(s(&empty)), "{r}");

    let mut c = env.cmd();
    c.env("REWIND_REPOSITORY", env.path("does/not/exist"))
        .arg("snapshots");
    run_cmd(c).expect_code(10);

    let file = env.path("a-file");
    fs::write(&file, b"x").unwrap();
    let mut c = env.cmd();
    c.env("REWIND_REPOSITORY", &file).arg("snapshots");
    run_cmd(c).expect_code(10);

    // A backup into a missing explicit repository does not create one.
    let mut c = env.cmd();
    c.env("REWIND_REPOSITORY", &empty)
        .args(["backup", "/etc/hostname"]);
    run_cmd(c).expect_code(10);
    assert!(!empty.join("config").exists());
}

#[test]
fn init_twice_fails_and_keeps_the_repository() {
    let env = Env::with_repo();
    let config_before = fs::read(env.repo.join("config")).unwrap();
    let mut c = env.cmd();
    c.env("REWIND_PASSWORD", "another password").arg("init");
    let r = run_cmd(c);
    assert_ne!(r.code, Some(0), "second init succeeded: {r}");
    assert!(r.stderr.contains("already exists"), "{r}");
    assert_eq!(fs::read(env.repo.join("config")).unwrap(), config_before);
    env.ok(["snapshots"]);
    let mut c = env.cmd();
    c.env("REWIND_PASSWORD", "another password")
        .arg("snapshots");
    run_cmd(c).expect_code(12);
    assert_eq!(repo_files(&env.repo, "keys").len(), 1);
}

#[test]
fn newer_config_version_is_refused() {
    let env = Env::with_repo();
    let path = env.repo.join("config");
    let mut cfg: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(cfg["version"], 1);
    cfg["version"] = 99.into();
    fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    let r = env.run(["snapshots"]);
    assert_ne!(r.code, Some(0), "{r}");
    assert!(
        r.stderr.contains("99"),
        "message does not name the version: {r}"
    );
    assert!(r.stderr.contains("version"), "{r}");
    // And no backup goes into it.
    let r = env.run(["backup", "/etc/hostname"]);
    assert_ne!(r.code, Some(0), "{r}");
    assert_eq!(snapshot_files(&env.repo), 0);
}

/// A command running the binary as uid/gid 65534 (setpriv or runuser).
fn as_nobody(env: &Env) -> Option<Command> {
    let base = env.cmd();
    let mut c = if has_cmd("setpriv") {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin()]);
        c
    } else if has_cmd("runuser") {
        let name = String::from_utf8(
            Command::new("id")
                .args(["-nu", "65534"])
                .output()
                .ok()?
                .stdout,
        )
        .ok()?;
        let mut c = Command::new("runuser");
        c.args(["-u", name.trim(), "--", bin()]);
        c
    } else {
        return None;
    };
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.stdin(std::process::Stdio::null());
    Some(c)
}

#[test]
fn unreadable_files_exit_3_and_are_named() {
    if !is_root() {
        eprintln!("not root: cannot make files unreadable to another user; skipped");
        return;
    }
    let env = Env::with_repo();
    let Some(_) = as_nobody(&env) else {
        eprintln!("neither setpriv nor runuser: skipped");
        return;
    };
    let src = env.path("src");
    write(&src.join("ok.txt"), b"readable");
    write(&src.join("secret.txt"), b"root only");
    write(&src.join("private/inner.txt"), b"root only");
    sh(
        "chown",
        &[
            OsStr::new("-R"),
            OsStr::new("65534:65534"),
            env.root.as_os_str(),
        ],
    );
    sh(
        "chown",
        &[OsStr::new("0:0"), src.join("secret.txt").as_os_str()],
    );
    sh(
        "chown",
        &[
            OsStr::new("-R"),
            OsStr::new("0:0"),
            src.join("private").as_os_str(),
        ],
    );
    fs::set_permissions(src.join("secret.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(src.join("private"), fs::Permissions::from_mode(0o700)).unwrap();

    let mut c = as_nobody(&env).unwrap();
    c.arg("backup").arg(&src);
    let r = run_cmd(c);
    r.expect_code(3);
    assert!(
        r.stderr.contains(s(&src.join("secret.txt"))),
        "unreadable file not named: {r}"
    );
    assert!(
        r.stderr.contains(s(&src.join("private"))),
        "unreadable directory not named: {r}"
    );
    assert!(r.stderr.contains("ermission denied"), "{r}");
    // The snapshot was saved, with everything else.
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 1, "no snapshot saved");
    let listing = env.ok(["ls", "-R", "latest"]).out();
    assert!(listing.contains(s(&src.join("ok.txt"))), "{listing}");
    assert!(!listing.contains("secret.txt"), "{listing}");
    assert!(
        snaps[0]["summary"]["errors"].as_u64().unwrap() >= 2,
        "{snaps:?}"
    );

    // --json reports the warnings in the summary too.
    let mut c = as_nobody(&env).unwrap();
    c.arg("--json").arg("backup").arg(&src);
    let r = run_cmd(c);
    r.expect_code(3);
    let w = r.summary()["warnings"].clone();
    assert!(
        w.as_array()
            .unwrap()
            .iter()
            .any(|x| x["path"] == s(&src.join("secret.txt"))),
        "{r}"
    );
}

#[test]
fn unwritable_restore_target_fails_clearly() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("a.txt"), b"a");
    env.backup([&src]);
    let file = env.path("plain-file");
    fs::write(&file, b"I am a file").unwrap();
    let target = file.join("sub");
    let r = env.run([
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        target.as_os_str(),
    ]);
    assert_ne!(r.code, Some(0), "{r}");
    assert!(r.stderr.contains(s(&target)), "target not named: {r}");
    assert!(r.stderr.contains("Not a directory"), "{r}");
    assert_eq!(fs::read(&file).unwrap(), b"I am a file");
}

/// A repository with one snapshot of a big random file and a few small ones.
fn damaged_setup() -> (Env, PathBuf, String) {
    let env = Env::with_repo();
    let src = env.path("src");
    write_random(&src.join("big.bin"), 6 << 20);
    write(&src.join("one.txt"), b"one\n");
    write(&src.join("two/three.txt"), b"three\n");
    write_random(&src.join("two/four.bin"), 50_000);
    let id = env.backup([&src])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    (env, src, id)
}

fn largest_pack(repo: &Path) -> PathBuf {
    packs(repo)
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .expect("a pack")
}

#[test]
fn bit_flip_is_found_and_the_rest_restores() {
    let (env, src, _) = damaged_setup();
    env.ok(["check", "--read-data"]);

    let pack = largest_pack(&env.repo);
    let mut bytes = fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::set_permissions(&pack, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&pack, &bytes).unwrap();

    let r = env.run(["--json", "check", "--read-data"]);
    assert_ne!(
        r.code,
        Some(0),
        "check --read-data missed a flipped bit: {r}"
    );
    let report: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let affected: Vec<String> = report["affected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].as_str().unwrap().to_string())
        .collect();
    assert!(!affected.is_empty(), "no affected file named: {r}");
    // The flipped byte is in the middle of the data pack: nearly all of it is big.bin.
    assert!(
        affected.contains(&s(&src.join("big.bin")).to_string()),
        "{affected:?}"
    );
    let text = env.run(["check", "--read-data"]);
    assert_ne!(text.code, Some(0));
    assert!(
        text.stderr.contains(s(&src.join("big.bin"))),
        "text check does not name the file: {text}"
    );
    let pack_name = pack.file_name().unwrap().to_str().unwrap();
    assert!(text.stderr.contains(pack_name), "pack not named: {text}");

    // Restore: fails for the damaged file only.
    let target = env.path("t");
    let r = env.run([
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        target.as_os_str(),
    ]);
    assert_ne!(r.code, Some(0), "restore of a damaged file succeeded: {r}");
    assert!(r.stderr.contains("big.bin"), "{r}");
    let out = restored(&target, &src);
    for rel in ["one.txt", "two/three.txt", "two/four.bin"] {
        let p = src.join(rel);
        if affected.contains(&s(&p).to_string()) {
            continue;
        }
        assert_eq!(
            fs::read(out.join(rel)).unwrap(),
            fs::read(&p).unwrap(),
            "{rel} not restored"
        );
    }
    // The structural check (no data read) cannot see it, but stays sane.
    let r = env.run(["check"]);
    assert!(r.code == Some(0) || r.code == Some(1), "{r}");
}

#[test]
fn missing_pack_is_named_by_check() {
    let (env, src, _) = damaged_setup();
    let pack = largest_pack(&env.repo);
    let name = pack.file_name().unwrap().to_str().unwrap().to_string();
    fs::remove_file(&pack).unwrap();
    let r = env.run(["check"]);
    assert_ne!(r.code, Some(0), "check missed a deleted pack: {r}");
    assert!(r.stderr.contains(&name), "pack not named: {r}");
    assert!(r.stderr.contains("missing"), "{r}");
    assert!(r.stderr.contains(s(&src.join("big.bin"))), "{r}");

    // Restore names the lost files and still makes the directories.
    let target = env.path("t");
    let r = env.run([
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        target.as_os_str(),
    ]);
    assert_ne!(r.code, Some(0), "{r}");
    assert!(r.stderr.contains("big.bin"), "{r}");
    assert!(restored(&target, &src).join("two").is_dir());
}

#[test]
fn truncated_index_is_a_clear_error() {
    let (env, _src, _) = damaged_setup();
    let idx = repo_files(&env.repo, "index");
    assert_eq!(idx.len(), 1, "{idx:?}");
    let bytes = fs::read(&idx[0]).unwrap();
    fs::set_permissions(&idx[0], fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&idx[0], &bytes[..bytes.len() / 2]).unwrap();
    let name = idx[0].file_name().unwrap().to_str().unwrap().to_string();

    let r = env.run(["check"]);
    assert_ne!(r.code, Some(0), "check accepted a truncated index: {r}");
    assert!(r.stderr.contains("index"), "{r}");
    assert!(r.stderr.contains(&name), "index file not named: {r}");

    let r = env.run([
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        env.path("t").as_os_str(),
    ]);
    assert_ne!(r.code, Some(0), "{r}");
    assert!(r.stderr.contains("index"), "{r}");
    assert!(!r.stderr.contains("panicked"), "{r}");

    let r = env.run(["ls", "latest"]);
    assert_ne!(r.code, Some(0), "{r}");
    assert!(r.stderr.contains("index"), "{r}");
}

#[test]
fn key_management() {
    let env = Env::with_repo();
    let keys = |pw: &str| -> Vec<serde_json::Value> {
        let mut c = env.cmd();
        c.env("REWIND_PASSWORD", pw).args(["--json", "key", "list"]);
        let r = run_cmd(c);
        r.expect_code(0);
        serde_json::from_slice(&r.stdout).unwrap()
    };
    let with_pw = |pw: &str, args: &[&OsStr]| -> Run {
        let mut c = env.cmd();
        c.env("REWIND_PASSWORD", pw).args(args);
        run_cmd(c)
    };
    let k = keys(PASSWORD);
    assert_eq!(k.len(), 1);
    assert_eq!(k[0]["current"], true);
    let first_id = k[0]["id"].as_str().unwrap().to_string();

    // The last key cannot be removed.
    let r = env.run(["key", "remove", &first_id[..8]]);
    assert_ne!(r.code, Some(0), "removed the last key: {r}");
    assert!(r.stderr.contains("last key"), "{r}");
    assert_eq!(keys(PASSWORD).len(), 1);

    // An empty new password is refused.
    let empty = env.path("empty-pw");
    fs::write(&empty, b"\n").unwrap();
    let r = with_pw(
        PASSWORD,
        &[
            OsStr::new("key"),
            OsStr::new("add"),
            OsStr::new("--new-password-file"),
            empty.as_os_str(),
        ],
    );
    assert_ne!(r.code, Some(0), "{r}");
    assert_eq!(keys(PASSWORD).len(), 1);

    // Add a second password.
    let second = env.path("second-pw");
    fs::write(&second, b"second password\n").unwrap();
    let r = with_pw(
        PASSWORD,
        &[
            OsStr::new("key"),
            OsStr::new("add"),
            OsStr::new("--new-password-file"),
            second.as_os_str(),
        ],
    );
    r.expect_code(0);
    assert!(r.out().contains("added key"), "{r}");
    let k = keys("second password");
    assert_eq!(k.len(), 2);
    let second_id = k.iter().find(|k| k["current"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(second_id, first_id);

    // The key in use cannot be removed.
    let r = with_pw(
        "second password",
        &[
            OsStr::new("key"),
            OsStr::new("remove"),
            OsStr::new(&second_id[..10]),
        ],
    );
    assert_ne!(r.code, Some(0), "removed the key in use: {r}");
    assert_eq!(keys(PASSWORD).len(), 2);

    // Remove the first key with the second password: the first no longer opens.
    let r = with_pw(
        "second password",
        &[
            OsStr::new("key"),
            OsStr::new("remove"),
            OsStr::new(&first_id[..10]),
        ],
    );
    r.expect_code(0);
    assert!(r.out().contains("removed key"), "{r}");
    with_pw(PASSWORD, &[OsStr::new("snapshots")]).expect_code(12);
    assert_eq!(keys("second password").len(), 1);

    // passwd: replace the second password by a third.
    let third = env.path("third-pw");
    fs::write(&third, b"third password\n").unwrap();
    let mut c = env.cmd();
    c.env("REWIND_PASSWORD", "second password")
        .env("REWIND_NEW_PASSWORD_FILE", &third)
        .args(["key", "passwd"]);
    let r = run_cmd(c);
    r.expect_code(0);
    assert!(r.out().contains("password changed"), "{r}");
    with_pw("second password", &[OsStr::new("snapshots")]).expect_code(12);
    let k = keys("third password");
    assert_eq!(k.len(), 1, "passwd left the old key: {k:?}");
    assert_ne!(k[0]["id"].as_str().unwrap(), second_id);
    // The data is still readable with the new password.
    let src = env.path("src");
    write(&src.join("f"), b"content");
    let mut c = env.cmd();
    c.env("REWIND_PASSWORD", "third password")
        .arg("backup")
        .arg(&src);
    run_cmd(c).expect_code(0);
    let r = with_pw(
        "third password",
        &[
            OsStr::new("dump"),
            OsStr::new("latest"),
            src.join("f").as_os_str(),
        ],
    );
    r.expect_code(0);
    assert_eq!(r.stdout, b"content");
}

#[test]
fn file_changing_while_read_exits_3() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("stable.txt"), b"stable");
    let grow = src.join("grow.log");
    write_random(&grow, 8 << 20);
    // Appends to the file during the whole backup.
    let mut appender = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while :; do echo line >> '{}'; sleep 0.005; done",
            s(&grow)
        ))
        .spawn()
        .unwrap();
    let r = env.run([OsStr::new("--json"), OsStr::new("backup"), src.as_os_str()]);
    let _ = appender.kill();
    let _ = appender.wait();
    r.expect_code(3);
    assert!(
        r.stderr.contains(s(&grow)) && r.stderr.contains("changed while being read"),
        "the changing file is not named: {r}"
    );
    assert_eq!(env.snapshots().len(), 1, "no snapshot saved");
    // The next backup reads it again (and all is quiet now).
    let s2 = env.backup([&src]);
    assert_eq!(s2["files_changed"], 1, "{s2}");
    assert_eq!(s2["files_unchanged"], 1, "{s2}");
    let dumped = env.ok([OsStr::new("dump"), OsStr::new("latest"), grow.as_os_str()]);
    assert!(dumped.stdout == fs::read(&grow).unwrap());
}

/// Error messages name the OS error once, not twice.
#[test]
fn io_error_messages_are_not_repeated() {
    let env = Env::with_repo();
    let r = env.run([OsStr::new("backup"), env.path("does-not-exist").as_os_str()]);
    assert_ne!(r.code, Some(0), "{r}");
    assert!(r.stderr.contains("does not exist"), "{r}");
    assert!(
        r.stderr.matches("No such file or directory").count() <= 1,
        "{r}"
    );
    let file = env.path("plain-file");
    fs::write(&file, b"x").unwrap();
    let r = env.run([
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        file.join("sub").as_os_str(),
    ]);
    assert_ne!(r.code, Some(0), "{r}");
    assert!(r.stderr.matches("(os error").count() <= 1, "{r}");
}

/// One damaged snapshot file must not make the other snapshots unusable:
/// they still list and restore, and check names the damaged one.
#[test]
fn damaged_snapshot_file_does_not_block_the_others() {
    let env = Env::with_repo();
    let src = env.path("src");
    write(&src.join("a.txt"), b"one\n");
    let first = env.backup([&src])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    write(&src.join("b.txt"), b"two\n");
    let second = env.backup([&src])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();

    let damaged = env.repo.join("snapshots").join(&first);
    let stored = fs::metadata(&damaged).unwrap().modified().unwrap();
    let mut bytes = fs::read(&damaged).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&damaged, &bytes).unwrap();
    // Bit rot keeps the file's time: it was stored before the second
    // snapshot began, so `latest` can still be told (a damaged file that
    // may be newer stops `latest`: cli_damage.rs).
    let old = stored.duration_since(std::time::UNIX_EPOCH).unwrap();
    set_mtime(&damaged, old.as_secs() - 3600, 0);

    // check finds and names it.
    let r = env.run(["check"]);
    assert_ne!(r.code, Some(0), "{r}");
    assert!(r.stderr.contains(&first), "{r}");
    // The intact snapshot still restores, by id and as latest.
    let t = env.path("t");
    let r = env.run([
        OsStr::new("restore"),
        OsStr::new(&second),
        OsStr::new("--target"),
        t.as_os_str(),
    ]);
    assert_eq!(r.code, Some(0), "intact snapshot not restorable: {r}");
    assert_eq!(
        fs::read(restored(&t, &src).join("b.txt")).unwrap(),
        b"two\n"
    );
    let r = env.run(["ls", "latest"]);
    assert_eq!(r.code, Some(0), "{r}");
    // And it is listed.
    let r = env.run(["snapshots"]);
    assert!(r.out().contains(&second[..8]), "{r}");
    assert!(
        r.stderr.contains(&first[..8]),
        "damaged snapshot not named: {r}"
    );
}
