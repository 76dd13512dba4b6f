//! `rewind unlock` / `rewind lock`: the key agent. Unhappy paths first: a
//! wrong password unlocks nothing, another repository gets no key, a
//! removed password stops opening, a lock or an expiry ends it, and another
//! user cannot reach it.

mod common;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;

/// A command on the world's repository with the agent's directory set and
/// no password at all.
fn no_password(env: &Env, args: &[&str]) -> Run {
    let mut c = env.bare_cmd();
    c.env("REWIND_REPOSITORY", &env.repo)
        .env("XDG_RUNTIME_DIR", env.path("run"))
        .args(args);
    run_cmd(c)
}

fn with_password(env: &Env, pw: &str, args: &[&OsStr]) -> Run {
    let mut c = env.bare_cmd();
    c.env("REWIND_REPOSITORY", &env.repo)
        .env("XDG_RUNTIME_DIR", env.path("run"))
        .env("REWIND_PASSWORD", pw)
        .args(args);
    run_cmd(c)
}

fn socket(env: &Env) -> PathBuf {
    env.path("run/rewind/keys.sock")
}

fn wait_gone(p: &std::path::Path) -> bool {
    let start = Instant::now();
    while p.exists() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
    }
    !p.exists()
}

#[test]
fn an_unlocked_repository_opens_without_its_password_until_locked() {
    let env = Env::with_repo();
    std::fs::create_dir_all(env.path("run")).unwrap();
    let src = env.path("src");
    random_tree(&src, 5, 3000);
    env.ok([OsStr::new("backup"), src.as_os_str()]);

    // Nothing unlocked: no password, no repository.
    let r = no_password(&env, &["snapshots"]);
    assert_ne!(r.code, Some(0), "{r}");

    // A socket folder others may enter is refused: nothing unlocked.
    let open_dir = env.path("shared-run");
    std::fs::create_dir_all(open_dir.join("rewind")).unwrap();
    std::fs::set_permissions(
        open_dir.join("rewind"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let mut c = env.bare_cmd();
    c.env("REWIND_REPOSITORY", &env.repo)
        .env("XDG_RUNTIME_DIR", &open_dir)
        .env("REWIND_PASSWORD", PASSWORD)
        .arg("unlock");
    let r = run_cmd(c);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("0700"), "{r}");
    assert!(!open_dir.join("rewind/keys.sock").exists());

    // A wrong password unlocks nothing and starts no agent.
    let r = with_password(&env, "wrong", &[OsStr::new("unlock")]);
    assert_eq!(
        r.code,
        Some(12),
        "the documented code of a wrong password: {r}"
    );
    assert!(!socket(&env).exists());

    let r = with_password(&env, PASSWORD, &[OsStr::new("unlock")]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.out().contains("unlocked"), "{r}");
    let sock = socket(&env);
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(sock.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );

    // What is unlocked, without a password (and no key in the answer).
    let r = no_password(&env, &["unlock", "--list"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(
        r.out().contains("unlocked until") && r.out().contains(env.repo.to_str().unwrap()),
        "{r}"
    );
    let r = no_password(&env, &["--json", "unlock", "--list"]);
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(listed.len(), 1, "{r}");
    assert!(listed[0].get("key").is_none(), "{r}");

    // Now without a password: list, back up, restore.
    let r = no_password(&env, &["--json", "snapshots"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(
        serde_json::from_slice::<Vec<serde_json::Value>>(&r.stdout)
            .unwrap()
            .len(),
        1
    );
    std::fs::write(src.join("more.txt"), b"written while unlocked").unwrap();
    let r = no_password(&env, &["backup", src.to_str().unwrap()]);
    assert_eq!(r.code, Some(0), "{r}");
    let out = env.path("out");
    let r = no_password(
        &env,
        &["restore", "latest", "--target", out.to_str().unwrap()],
    );
    assert_eq!(r.code, Some(0), "{r}");
    assert_trees_equal(&src, &restored(&out, &src), &[]);

    // Another repository gets nothing from the agent.
    let other = Env::with_repo();
    let mut c = other.bare_cmd();
    c.env("REWIND_REPOSITORY", &other.repo)
        .env("XDG_RUNTIME_DIR", env.path("run"))
        .arg("snapshots");
    let r = run_cmd(c);
    assert_ne!(r.code, Some(0), "{r}");

    // Another user cannot reach the socket (its folder is the user's own).
    if is_root() && has_cmd("setpriv") {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin()])
            .env_clear()
            .env("HOME", "/nonexistent")
            .env("XDG_RUNTIME_DIR", env.path("run"))
            .env("REWIND_REPOSITORY", &env.repo)
            .args(["snapshots"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let r = run_cmd(c);
        assert_ne!(r.code, Some(0), "{r}");
    }

    // lock: the password is needed again, and the agent is gone.
    let r = no_password(&env, &["lock"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(wait_gone(&sock));
    let r = no_password(&env, &["snapshots"]);
    assert_ne!(r.code, Some(0), "{r}");
    let r = no_password(&env, &["lock"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.out().contains("nothing was unlocked"), "{r}");
    let r = no_password(&env, &["unlock", "--list"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.out().contains("nothing is unlocked"), "{r}");
}

#[test]
fn an_expired_or_removed_password_opens_nothing() {
    let env = Env::with_repo();
    std::fs::create_dir_all(env.path("run")).unwrap();

    // --for 2s: gone by itself.
    let r = with_password(
        &env,
        PASSWORD,
        &[OsStr::new("unlock"), OsStr::new("--for"), OsStr::new("2s")],
    );
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(no_password(&env, &["snapshots"]).code, Some(0));
    std::thread::sleep(Duration::from_millis(2500));
    assert!(wait_gone(&socket(&env)));
    assert_ne!(no_password(&env, &["snapshots"]).code, Some(0));

    // Bad durations.
    for bad in ["0s", "soon"] {
        let r = with_password(
            &env,
            PASSWORD,
            &[OsStr::new("unlock"), OsStr::new("--for"), OsStr::new(bad)],
        );
        assert_eq!(r.code, Some(2), "{bad}: {r}");
    }

    // A second password, unlocked with, then removed with the first: the
    // agent's key no longer opens the repository.
    let second = env.path("second-pw");
    std::fs::write(&second, b"second password\n").unwrap();
    let r = with_password(
        &env,
        PASSWORD,
        &[
            OsStr::new("key"),
            OsStr::new("add"),
            OsStr::new("--new-password-file"),
            second.as_os_str(),
        ],
    );
    assert_eq!(r.code, Some(0), "{r}");
    let r = with_password(&env, "second password", &[OsStr::new("unlock")]);
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(no_password(&env, &["snapshots"]).code, Some(0));
    let r = with_password(
        &env,
        "second password",
        &[OsStr::new("--json"), OsStr::new("key"), OsStr::new("list")],
    );
    let keys: Vec<serde_json::Value> = serde_json::from_slice(&r.stdout).unwrap();
    let id = keys.iter().find(|k| k["current"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // key commands use the password given, not the agent's key.
    let r = with_password(
        &env,
        PASSWORD,
        &[OsStr::new("key"), OsStr::new("remove"), OsStr::new(&id)],
    );
    assert_eq!(r.code, Some(0), "{r}");
    let r = no_password(&env, &["snapshots"]);
    assert_ne!(
        r.code,
        Some(0),
        "a removed password still opened the repository: {r}"
    );
    assert_eq!(no_password(&env, &["lock", "--all"]).code, Some(0));
    assert!(wait_gone(&socket(&env)));
}
