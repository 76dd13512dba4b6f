//! The CLI on an SFTP repository (a real OpenSSH sshd on loopback, started
//! here): init, backup, restore, check, forget and prune, `backup --copy-to`
//! an SFTP repository; errors; the server killed in the middle of a backup.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use rewind_backends::testsupport::SshServer;

struct SftpEnv {
    remote: RemoteRepo,
    server: SshServer,
}

impl SftpEnv {
    fn new() -> SftpEnv {
        let server = SshServer::start();
        let env = Env::new();
        let url = server.url(&env.path("remote/repo"));
        let option = format!("sftp.args={}", server.ssh_args());
        let remote = RemoteRepo {
            env,
            url,
            vars: Vec::new(),
            args: vec!["-o".into(), option],
        };
        SftpEnv { remote, server }
    }

    fn option(&self) -> &str {
        &self.remote.args[1]
    }
}

impl std::ops::Deref for SftpEnv {
    type Target = RemoteRepo;
    fn deref(&self) -> &RemoteRepo {
        &self.remote
    }
}

#[test]
fn a_repository_over_sftp_does_everything_a_local_one_does() {
    let s = SftpEnv::new();
    // Nothing there yet: exit 10, named.
    let r = s.run(["snapshots"]);
    assert_eq!(r.code, Some(10), "{r}");
    assert!(r.stderr.contains("sftp:"), "{r}");
    // Without the key: ssh's refusal, not a hang.
    let mut c = s.env.cmd();
    c.env("REWIND_REPOSITORY", &s.url)
        .args(["-o", "sftp.args=-F none -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes -i /nonexistent", "snapshots"]);
    let r = run_cmd(c);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("Permission denied"), "{r}");

    s.ok(["init"]);
    assert_eq!(s.run(["init"]).code, Some(1));
    let src = s.env.path("src");
    random_tree(&src.join("a"), 12, 200_000);
    random_tree(&src.join("b"), 12, 50_000);
    s.ok(["backup".as_ref(), src.as_os_str()]);
    s.restore_matches(&src, "t1");

    std::fs::remove_dir_all(src.join("a")).unwrap();
    random_tree(&src.join("c"), 6, 300_000);
    s.ok(["backup".as_ref(), src.as_os_str()]);
    s.ok(["check", "--read-data"]);

    let mut c = s.cmd_at(&s.url);
    c.env("REWIND_PASSWORD", "wrong").arg("snapshots");
    assert_eq!(run_cmd(c).code, Some(12));

    s.ok([
        "forget",
        "--keep-last",
        "1",
        "--allow-short-history",
        "--prune",
        "--now",
    ]);
    s.ok(["check", "--read-data"]);
    s.restore_matches(&src, "t2");
    let snaps: Vec<serde_json::Value> =
        serde_json::from_slice(&s.ok(["--json", "snapshots"]).stdout).unwrap();
    assert_eq!(snaps.len(), 1);

    // A local repository that sends each backup offsite over SFTP.
    let local = s.env.path("local");
    let mut c = s.cmd_at(local.to_str().unwrap());
    c.env("REWIND_PASSWORD", "local password").arg("init");
    run_cmd(c).expect_code(0);
    let mut c = s.cmd_at(local.to_str().unwrap());
    c.env("REWIND_PASSWORD", "local password")
        .env("REWIND_TO_PASSWORD", PASSWORD)
        .args(["backup".as_ref(), src.as_os_str()])
        .args(["--copy-to", &s.url, "--copy-to-option", s.option()]);
    run_cmd(c).expect_code(0);
    let snaps: Vec<serde_json::Value> =
        serde_json::from_slice(&s.ok(["--json", "snapshots"]).stdout).unwrap();
    assert_eq!(snaps.len(), 2, "the copy arrived");
    s.ok(["check", "--read-data"]);
    s.restore_matches(&src, "t3");
}

#[test]
fn the_sftp_server_dying_mid_backup_fails_cleanly_and_the_next_backup_completes() {
    let mut s = SftpEnv::new();
    s.ok(["init"]);
    let src = s.env.path("src");
    random_tree(&src, 40, 1 << 20); // 40 MiB: several packs
    let mut c = s.cmd_at(&s.url);
    c.args(["backup".as_ref(), src.as_os_str()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    s.server.kill();
    let t = Instant::now();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "backup with the server killed: {:?} after {:?}: {stderr}",
        out.status,
        t.elapsed()
    );
    if out.status.success() {
        panic!("the backup finished in 700 ms; make the source larger");
    }
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("sftp:"), "{stderr}");
    assert!(t.elapsed() < Duration::from_secs(120), "{:?}", t.elapsed());

    s.server.restart();
    let snaps: Vec<serde_json::Value> =
        serde_json::from_slice(&s.ok(["--json", "snapshots"]).stdout).unwrap();
    assert!(snaps.is_empty(), "no snapshot from the failed backup");
    s.ok(["check"]);
    s.ok(["backup".as_ref(), src.as_os_str()]);
    s.ok(["check", "--read-data"]);
    s.restore_matches(&src, "t");
    // The killed backup's temporary files are cleaned by prune.
    s.ok(["prune", "--now"]);
}
