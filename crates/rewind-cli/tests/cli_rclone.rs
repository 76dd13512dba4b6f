//! Backups of rclone remotes with Debian's `rclone`: a local remote, a
//! WebDAV remote (`rclone serve webdav` on loopback) and an S3 remote on a
//! real SeaweedFS; and the errors a person meets.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rewind_backends::testsupport::{loopback_port, SeaweedFs};

fn skip() -> bool {
    if has_cmd("rclone") {
        return false;
    }
    panic!("the rclone tests need Debian's rclone: run scripts/test.sh, which installs it");
}

fn rclone(args: &[&str]) -> String {
    let out = Command::new("rclone")
        .args(args)
        .env("RCLONE_CONFIG", "/dev/null")
        // rclone 1.60's S3 client cannot load a custom CA bundle.
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rclone {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A tree of files: text, random data, a nested folder, a non-ASCII name.
fn tree(dir: &Path) {
    random_tree(&dir.join("photos"), 8, 200_000);
    write(
        &dir.join("docs/report.txt"),
        "quarterly report\n".repeat(500).as_bytes(),
    );
    write(&dir.join("docs/deep/er/nämé with space.txt"), b"hello");
    write(&dir.join("empty.txt"), b"");
}

/// `rewind --json backup rclone:…` with the test's rclone configuration.
fn backup(env: &Env, remote: &str) -> Run {
    let mut c = env.cmd();
    c.env("RCLONE_CONFIG", "/dev/null")
        .env_remove("AWS_CA_BUNDLE")
        .args(["--json", "backup", &format!("rclone:{remote}")]);
    run_cmd(c)
}

/// Compares a tree with its restored copy: the same names, the same
/// content, file times to the second (what every remote keeps; modes,
/// owners and folder times are the remote's own).
fn same_files(a: &Path, b: &Path) {
    let names = |d: &Path| -> Vec<std::ffi::OsString> {
        let mut v: Vec<_> = std::fs::read_dir(d)
            .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
            .flatten()
            .map(|e| e.file_name())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(a), names(b), "{} and {}", a.display(), b.display());
    for n in names(a) {
        let (x, y) = (a.join(&n), b.join(&n));
        if x.is_dir() {
            same_files(&x, &y);
            continue;
        }
        assert_eq!(
            std::fs::read(&x).unwrap(),
            std::fs::read(&y).unwrap(),
            "{}",
            y.display()
        );
        let secs = |p: &Path| {
            std::fs::metadata(p)
                .unwrap()
                .modified()
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        assert_eq!(secs(&x), secs(&y), "mtime of {}", y.display());
    }
}

#[test]
fn a_local_remote_is_backed_up_incrementally_and_restored_locally_and_to_a_remote() {
    if skip() {
        return;
    }
    let env = Env::with_repo();
    let src = env.path("src");
    tree(&src);
    let remote = format!(":local:{}", src.display());
    let r = backup(&env, &remote);
    assert_eq!(r.code, Some(0), "{r}");
    let s = r.summary();
    assert_eq!(s["files_new"], 8 + 3, "{s}");
    assert!(!r.stderr.contains("warning"), "{r}");
    assert_eq!(
        env.snapshots()[0]["paths"][0],
        format!("rclone::local:{}", src.display())
    );
    // Nothing changed: nothing read.
    let r = backup(&env, &remote);
    assert_eq!(r.summary()["files_unchanged"], 11, "{r}");
    assert_eq!(r.summary()["bytes_read"], 0, "{r}");
    // One file changed, one added, one removed.
    std::thread::sleep(Duration::from_millis(1100));
    write(&src.join("docs/report.txt"), b"rewritten");
    write(&src.join("docs/new.txt"), b"new");
    std::fs::remove_file(src.join("empty.txt")).unwrap();
    let r = backup(&env, &remote);
    let s = r.summary();
    assert_eq!(
        (s["files_new"].as_u64(), s["files_unchanged"].as_u64()),
        (Some(2), Some(9)),
        "{s}"
    );
    let out = env.path("restored");
    env.ok(["restore", "latest", "--target", out.to_str().unwrap()]);
    same_files(&src, &out);
    // Back to a remote (a local one here), streamed through rclone rcat.
    let dest = env.path("to-remote");
    let mut c = env.cmd();
    c.env("RCLONE_CONFIG", "/dev/null").args([
        "restore",
        "latest",
        "--to",
        &format!("rclone::local:{}", dest.display()),
    ]);
    let r = run_cmd(c);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.out().contains("restored 11 files"), "{r}");
    same_files(&src, &dest);
}

/// `rclone serve webdav` of a folder, on a loopback port, with a password.
struct Dav {
    child: Child,
    port: u16,
}

impl Drop for Dav {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dav(dir: &Path) -> Dav {
    let port = loopback_port();
    let child = Command::new("rclone")
        .env("RCLONE_CONFIG", "/dev/null")
        .args(["serve", "webdav", &format!(":local:{}", dir.display())])
        .args([
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--user",
            "me",
            "--pass",
            "dav secret",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "rclone serve webdav did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Dav { child, port }
}

#[test]
fn a_webdav_remote_is_backed_up_without_its_password_in_the_snapshot() {
    if skip() {
        return;
    }
    let env = Env::with_repo();
    let src = env.path("dav");
    tree(&src);
    let server = dav(&src);
    let obscured = rclone(&["obscure", "dav secret"]);
    let remote = format!(
        ":webdav,url='http://127.0.0.1:{}',user=me,pass={obscured}:",
        server.port
    );
    let r = backup(&env, &remote);
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(r.summary()["files_new"], 11);
    let path = env.snapshots()[0]["paths"][0].as_str().unwrap().to_string();
    assert_eq!(
        path, "rclone::webdav:",
        "the remote's parameters are left out"
    );
    let out = env.path("restored");
    env.ok(["restore", "latest", "--target", out.to_str().unwrap()]);
    same_files(&src, &out);
    // A wrong password: a clear error, nothing saved.
    let wrong = rclone(&["obscure", "wrong"]);
    let r = backup(
        &env,
        &format!(
            ":webdav,url='http://127.0.0.1:{}',user=me,pass={wrong}:",
            server.port
        ),
    );
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("rclone could not"), "{r}");
    assert!(!r.stderr.contains(&wrong), "the password is not said: {r}");
    assert_eq!(env.snapshots().len(), 1);
}

#[test]
fn an_s3_remote_on_seaweedfs_and_the_errors_a_person_meets() {
    if skip() {
        return;
    }
    let env = Env::with_repo();
    let weed = SeaweedFs::start(&["drive"]);
    let src = env.path("src");
    tree(&src);
    let keys: Vec<(&str, &str)> = weed.env();
    let key = |k: &str| keys.iter().find(|(n, _)| *n == k).unwrap().1;
    let s3 = |secret: &str| {
        format!(
            ":s3,provider=Other,endpoint='{}',access_key_id={},secret_access_key={secret},region=us-east-1:drive/team",
            weed.endpoint,
            key("AWS_ACCESS_KEY_ID")
        )
    };
    let remote = s3(key("AWS_SECRET_ACCESS_KEY"));
    rclone(&["copy", src.to_str().unwrap(), &remote]);
    let r = backup(&env, &remote);
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(r.summary()["files_new"], 11, "{r}");
    assert_eq!(env.snapshots()[0]["paths"][0], "rclone::s3:drive/team");
    let out = env.path("restored");
    env.ok(["restore", "latest", "--target", out.to_str().unwrap()]);
    same_files(&src, &out);
    // A credential that no longer works (a wrong secret key).
    let r = backup(&env, &s3("not-the-secret"));
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("rclone could not list"), "{r}");
    assert!(
        !r.stderr.contains("not-the-secret"),
        "the secret is not said: {r}"
    );
    // An unknown remote name.
    let r = backup(&env, "nosuchremote:Documents");
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains("didn't find section in config file"),
        "{r}"
    );
    // No path after the remote.
    let r = backup(&env, "gdrive");
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("write rclone:REMOTE:PATH"), "{r}");
    // No rclone at all.
    let mut c = env.cmd();
    c.env("PATH", "/nonexistent")
        .args(["backup", &format!("rclone:{remote}")]);
    let r = run_cmd(c);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("rclone is not installed"), "{r}");
    // A remote mixed with files.
    let r = env.run(["backup", &format!("rclone:{remote}"), src.to_str().unwrap()]);
    assert_eq!(r.code, Some(2), "{r}");
}
