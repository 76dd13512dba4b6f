//! Phone inboxes: WebDAV folders in a real `rewind serve`, uploaded to by
//! real WebDAV clients (rclone's WebDAV backend and raw HTTP), snapshotted
//! by the server into the repository; and Debian's `litmus` suite.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use common::server::{client, http, Server};
use common::*;

/// `rewind serve ARGS --data DATA` with the repository's password.
fn dav_admin(env: &Env, server: &Server, args: &[&str]) -> Run {
    let mut c = env.bare_cmd();
    c.arg("serve")
        .args(args)
        .arg("--data")
        .arg(&server.data)
        .env("REWIND_PASSWORD", &env.password);
    run_cmd(c)
}

/// A server with a repository `phone` (made by an admin client) and an
/// inbox for it; the inbox's password.
struct Setup {
    env: Env,
    server: Server,
    admin: RemoteRepo,
    password: String,
}

fn setup(server_args: &[&str], add_args: &[&str]) -> Setup {
    setup_settling("1", server_args, add_args)
}

/// [`setup`] with a settle time of `settle` seconds.
fn setup_settling(settle: &str, server_args: &[&str], add_args: &[&str]) -> Setup {
    let env = Env::new();
    let mut args = vec!["--inbox-settle", settle];
    args.extend_from_slice(server_args);
    let server = Server::start(&env, &args);
    let admin = client(
        &env,
        &server,
        "phone",
        &server.token(&env, "phone", "admin", &[]),
    );
    admin.ok(["init"]);
    let mut a = vec!["dav", "add", "--repo", "phone"];
    a.extend_from_slice(add_args);
    let r = dav_admin(&env, &server, &a);
    assert_eq!(r.code, Some(0), "{r}");
    let out = r.out();
    let password = out
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .unwrap_or_else(|| panic!("no password in {out:?}"))
        .to_string();
    assert!(out.contains("url: https://SERVER:PORT/dav/phone/"), "{out}");
    assert!(out.contains("user: phone"), "{out}");
    Setup {
        env,
        server,
        admin,
        password,
    }
}

impl Setup {
    fn auth(&self, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("phone:{password}"))
        )
    }

    /// A raw request to the inbox with its login.
    fn dav(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let auth = self.auth(&self.password);
        http(
            &self.server.addr,
            method,
            &format!("/dav/phone/{path}"),
            None,
            &[("Authorization", &auth)],
            body,
        )
    }

    /// `rclone ARGS` with the inbox as remote `inbox:`.
    fn rclone(&self, args: &[&str]) {
        let obscured = Command::new("rclone")
            .args(["obscure", &self.password])
            .output()
            .unwrap();
        let out = Command::new("rclone")
            .args(args)
            .env("RCLONE_CONFIG", "/dev/null")
            .env("RCLONE_CONFIG_INBOX_TYPE", "webdav")
            .env(
                "RCLONE_CONFIG_INBOX_URL",
                format!("http://{}/dav/phone/", self.server.addr),
            )
            .env("RCLONE_CONFIG_INBOX_USER", "phone")
            .env(
                "RCLONE_CONFIG_INBOX_PASS",
                String::from_utf8_lossy(&obscured.stdout).trim(),
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rclone {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn snapshots(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.admin.ok(["--json", "snapshots"]).out()).unwrap()
    }

    /// Waits (up to 60 s) for the `n`th snapshot of the inbox.
    #[track_caller]
    fn wait_snapshots(&self, n: usize) -> Vec<serde_json::Value> {
        let start = Instant::now();
        loop {
            let s = self.snapshots();
            if s.len() >= n {
                for snap in &s {
                    assert_eq!(snap["paths"], serde_json::json!(["dav:phone"]), "{snap}");
                }
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{} snapshots after 60 s, waiting for {n}; server log:\n{}",
                s.len(),
                self.server.log()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Restores snapshot `id` and returns where.
    fn restore(&self, id: &str, name: &str) -> std::path::PathBuf {
        let t = self.env.path(name);
        self.admin
            .ok(["restore", id, "--target", t.to_str().unwrap()]);
        t
    }
}

/// The same files with the same content (WebDAV carries neither modes
/// nor times).
fn same_files(a: &Path, b: &Path) {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Option<Vec<u8>>)>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if p.is_dir() {
                out.push((rel, None));
                walk(root, &p, out);
            } else {
                out.push((rel, Some(fs::read(&p).unwrap())));
            }
        }
    }
    let (mut x, mut y) = (Vec::new(), Vec::new());
    walk(a, a, &mut x);
    walk(b, b, &mut y);
    x.sort();
    y.sort();
    let names = |v: &[(String, Option<Vec<u8>>)]| v.iter().map(|e| e.0.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&x),
        names(&y),
        "{} and {} hold other names",
        a.display(),
        b.display()
    );
    for (e, f) in x.iter().zip(&y) {
        assert!(e.1 == f.1, "{} differs", e.0);
    }
}

fn needs_rclone() {
    assert!(
        has_cmd("rclone"),
        "the inbox tests need Debian's rclone: run scripts/test.sh, which installs it"
    );
}

/// Photos and notes as a phone would upload them.
fn phone_tree(dir: &Path) {
    random_tree(&dir.join("DCIM/Camera"), 6, 150_000);
    for i in 0..40 {
        write(
            &dir.join(format!("Notes/note-{i:02}.txt")),
            format!(
                "note {i}\n{}",
                "shopping list, call mum, buy milk\n".repeat(40)
            )
            .as_bytes(),
        );
    }
    write(&dir.join("Documents/Ünïcode name.txt"), b"hello");
}

#[test]
fn uploads_become_snapshots_and_what_the_phone_deletes_stays_in_history() {
    needs_rclone();
    let s = setup(&[], &[]);
    let src = s.env.path("phone");
    phone_tree(&src);
    s.rclone(&["copy", src.to_str().unwrap(), "inbox:"]);
    let snaps = s.wait_snapshots(1);
    let first = snaps.last().unwrap()["id"].as_str().unwrap().to_string();
    let t = s.restore(&first, "r1");
    same_files(&src, &t);

    // The phone deletes photos (and a whole folder) from the inbox; the
    // next snapshot has them no more, the first still restores them.
    s.rclone(&["delete", "inbox:DCIM/Camera", "--include", "f0*"]);
    s.rclone(&["purge", "inbox:Documents"]);
    let snaps = s.wait_snapshots(2);
    let second = snaps.last().unwrap()["id"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    let t2 = s.restore(&second, "r2");
    assert!(!t2.join("Documents").exists());
    assert!(t2.join("Notes/note-07.txt").exists());
    let t1 = s.restore(&first, "r1-again");
    same_files(&src, &t1);

    // The snapshots were stored as the inbox, not as the admin.
    let log = fs::read_to_string(
        s.server
            .data
            .join("writes/phone/snapshots")
            .join(second_full_id(&s, &second)),
    )
    .unwrap();
    assert!(log.contains("\"token\":\"dav:phone\""), "{log}");
    assert!(log.contains("\"role\":\"backup\""), "{log}");
}

fn second_full_id(s: &Setup, short: &str) -> String {
    let snaps = s.snapshots();
    let full = snaps
        .iter()
        .find(|x| x["id"].as_str().unwrap().starts_with(short))
        .unwrap();
    full["id"].as_str().unwrap().to_string()
}

#[test]
fn the_login_the_size_limit_and_paths_are_enforced() {
    let s = setup(&[], &["--max-size", "1M"]);
    let addr = s.server.addr.clone();
    // No login, a wrong password, another inbox's name.
    let (code, body) = http(&addr, "PUT", "/dav/phone/a.txt", None, &[], b"x");
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("log in with user phone"), "{body}");
    let wrong = s.auth("not-the-password");
    let (code, _) = http(
        &addr,
        "PUT",
        "/dav/phone/a.txt",
        None,
        &[("Authorization", &wrong)],
        b"x",
    );
    assert_eq!(code, 401);
    let (code, body) = http(&addr, "GET", "/dav/other/", None, &[], b"");
    assert_eq!(code, 404, "{body}");
    // Out of the inbox: refused, whatever the encoding.
    for p in [
        "../../server.json",
        "%2e%2e/%2e%2e/server.json",
        "x/../../inbox.json",
    ] {
        let (code, body) = s.dav("GET", p, b"");
        assert_eq!(code, 400, "{p}: {body}");
    }
    // Nothing was stored by the refused requests.
    let files = s.server.data.join("dav/phone/files");
    assert_eq!(fs::read_dir(&files).unwrap().count(), 0);

    // The size limit: 600 KB fits, another 600 KB does not (507, and the
    // file is not there).
    let (code, body) = s.dav("PUT", "one.bin", &random_bytes(600_000));
    assert!(code == 201 || code == 204, "{code} {body}");
    let (code, body) = s.dav("PUT", "two.bin", &random_bytes(600_000));
    assert_eq!(code, 507, "{body}");
    assert!(body.contains("inbox phone is full"), "{body}");
    assert!(!files.join("two.bin").exists());

    // COPY and MOVE cannot name a target outside the inbox: not a
    // neighbour's name that starts like it, not `..`, not another inbox by
    // URL; nothing is written there.
    let outside = s.server.data.join("escaped");
    let (code, body) = s.dav("PUT", "small.bin", &random_bytes(1000));
    assert!(code == 201 || code == 204, "{code} {body}");
    for dest in [
        format!("/dav/phoneX{}", outside.display()),
        "/dav/phone/../inbox.json".to_string(),
        "/dav/phone/%2e%2e/inbox.json".to_string(),
        format!("http://{addr}/dav/other/x"),
        format!("http://{addr}/dav/phonex/x"),
    ] {
        for method in ["COPY", "MOVE"] {
            let auth = s.auth(&s.password);
            let (code, body) = http(
                &addr,
                method,
                "/dav/phone/small.bin",
                None,
                &[
                    ("Authorization", &auth),
                    ("Destination", &dest),
                    ("Overwrite", "T"),
                ],
                b"",
            );
            assert_eq!(code, 403, "{method} to {dest}: {body}");
        }
    }
    assert!(!outside.exists());
    assert!(
        files.join("one.bin").exists(),
        "a refused MOVE moved nothing"
    );
    // A COPY inside the inbox works, and counts against its size: a second
    // copy of 600 KB does not fit.
    let auth = s.auth(&s.password);
    let (code, body) = http(
        &addr,
        "COPY",
        "/dav/phone/one.bin",
        None,
        &[
            ("Authorization", &auth),
            ("Destination", "/dav/phone/copy.bin"),
        ],
        b"",
    );
    assert_eq!(code, 507, "{body}");
    assert!(!files.join("copy.bin").exists());
    let (code, body) = s.dav("DELETE", "one.bin", b"");
    assert!(code == 204 || code == 200, "{code} {body}");
    let (code, body) = http(
        &addr,
        "COPY",
        "/dav/phone/small.bin",
        None,
        &[
            ("Authorization", &auth),
            ("Destination", &format!("http://{addr}/dav/phone/copy.bin")),
        ],
        b"",
    );
    assert!(code == 201 || code == 204, "{code} {body}");
    assert_eq!(fs::read(files.join("copy.bin")).unwrap().len(), 1000);

    // The inbox's files are not the settings: inbox.json is mode 0600 and
    // out of reach.
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(s.server.data.join("dav/phone/inbox.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let settings = fs::read_to_string(s.server.data.join("dav/phone/inbox.json")).unwrap();
    assert!(
        !settings.contains(&s.password),
        "the password itself is kept"
    );

    // An inbox whose name starts with "dav" is reached by its own name.
    let r = dav_admin(
        &s.env,
        &s.server,
        &["dav", "add", "--repo", "phone", "davina"],
    );
    assert_eq!(r.code, Some(0), "{r}");
    let (code, body) = http(&addr, "GET", "/dav/davina/", None, &[], b"");
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("inbox davina"), "{body}");
    // A stray file among the inboxes hides none of them.
    fs::write(s.server.data.join("dav/notes.txt"), "x").unwrap();
    fs::create_dir_all(s.server.data.join("dav/broken")).unwrap();
    fs::write(s.server.data.join("dav/broken/inbox.json"), "{not json").unwrap();

    // List and remove.
    let r = s.server.admin(&s.env, &["dav", "list"]);
    assert!(r.out().starts_with("davina  repo phone"), "{r}");
    assert!(r.out().contains("\nphone  repo phone"), "{r}");
    assert!(r.stderr.contains("warning: inbox broken"), "{r}");
    let r = s.server.admin(&s.env, &["dav", "remove", "phone"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stderr.contains("rewind key remove"), "{r}");
    let (code, _) = s.dav("GET", "", b"");
    assert_eq!(code, 404);
    let r = s.server.admin(&s.env, &["dav", "remove", "phone"]);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("no inbox \"phone\""), "{r}");
}

#[test]
fn adding_an_inbox_needs_the_repository_and_its_password() {
    let env = Env::new();
    let server = Server::start(&env, &[]);
    let admin = client(
        &env,
        &server,
        "phone",
        &server.token(&env, "phone", "admin", &[]),
    );
    // No repository yet.
    let r = dav_admin(&env, &server, &["dav", "add", "--repo", "phone"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("holds no repository phone"), "{r}");
    admin.ok(["init"]);
    // A wrong password: nothing is made.
    let mut c = env.bare_cmd();
    c.args(["serve", "dav", "add", "--repo", "phone", "--data"])
        .arg(&server.data)
        .env("REWIND_PASSWORD", "wrong");
    let r = run_cmd(c);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("wrong password"), "{r}");
    assert!(!server.data.join("dav/phone").exists());
    assert_eq!(
        admin.ok(["key", "list"]).out().lines().count(),
        2,
        "one key and the header"
    );
    // A bad name, no --data.
    let r = dav_admin(
        &env,
        &server,
        &["dav", "add", "--repo", "phone", "Bad/Name"],
    );
    assert_eq!(r.code, Some(2), "{r}");
    let mut c = env.bare_cmd();
    c.args(["serve", "dav", "list"])
        .env_remove("REWIND_SERVE_DATA");
    let r = run_cmd(c);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("--data DIR"), "{r}");
    // The right one, twice: the second is refused.
    let r = dav_admin(&env, &server, &["dav", "add", "--repo", "phone"]);
    assert_eq!(r.code, Some(0), "{r}");
    let r = dav_admin(&env, &server, &["dav", "add", "--repo", "phone"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("inbox phone exists"), "{r}");
    // A key for the inbox, named for it.
    let keys = admin.ok(["key", "list"]).out();
    assert!(keys.contains("dav:phone"), "{keys}");
}

#[test]
fn encrypted_uploads_are_flagged_and_the_last_clean_state_restores() {
    let s = setup(&[], &[]);
    let src = s.env.path("phone");
    phone_tree(&src);
    put_tree(&s, &src, &src);
    let clean = s.wait_snapshots(1);
    assert!(
        clean[0]["scan"].is_null() || clean[0]["scan"]["verdict"] == "clean",
        "{}",
        clean[0]
    );
    // Ransomware on the phone encrypts the notes and the sync app uploads
    // them over the old ones.
    for e in fs::read_dir(src.join("Notes")).unwrap() {
        let p = e.unwrap().path();
        let (code, body) = s.dav(
            "PUT",
            &format!("Notes/{}", p.file_name().unwrap().to_str().unwrap()),
            &random_bytes(2_000),
        );
        assert!(code == 201 || code == 204, "{code} {body}");
    }
    let snaps = s.wait_snapshots(2);
    let attacked = snaps.last().unwrap();
    assert_eq!(attacked["scan"]["verdict"], "suspicious", "{attacked}");
    assert!(
        s.server.log().contains("SUSPICIOUS"),
        "the server's log says so: {}",
        s.server.log()
    );
    let t = s.env.path("clean");
    s.admin.ok([
        "restore",
        "--last-clean",
        "--path",
        "dav:phone",
        "--target",
        t.to_str().unwrap(),
    ]);
    same_files(&src, &t);
}

/// Uploads `dir` (a subtree of `root`) with raw PUTs and MKCOLs.
fn put_tree(s: &Setup, root: &Path, dir: &Path) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let rel = p.strip_prefix(root).unwrap().to_str().unwrap();
        let rel: String = rel
            .split('/')
            .map(|seg| {
                percent_encoding::utf8_percent_encode(seg, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join("/");
        if p.is_dir() {
            let (code, body) = s.dav("MKCOL", &format!("{rel}/"), b"");
            assert_eq!(code, 201, "{rel}: {body}");
            put_tree(s, root, &p);
        } else {
            let (code, body) = s.dav("PUT", &rel, &fs::read(&p).unwrap());
            assert!(code == 201 || code == 204, "{rel}: {code} {body}");
        }
    }
}

#[test]
fn a_server_killed_before_the_snapshot_takes_it_after_its_restart() {
    // A long settle: the server is killed before the snapshot is due.
    let mut s = setup_settling("30", &[], &[]);
    let photo = random_bytes(300_000);
    let (code, body) = s.dav("PUT", "photo.jpg", &photo);
    assert_eq!(code, 201, "{body}");
    assert!(s.snapshots().is_empty());
    signal(
        s.server.child.as_ref().unwrap(),
        nix::sys::signal::Signal::SIGKILL,
    );
    s.server.kill();
    s.server.args = vec!["--inbox-settle".into(), "1".into()];
    s.server.spawn(&s.env);
    let snaps = s.wait_snapshots(1);
    let t = s.restore(snaps[0]["id"].as_str().unwrap(), "r");
    assert_eq!(fs::read(t.join("photo.jpg")).unwrap(), photo);
    s.admin.ok(["check", "--read-data"]);
}

#[test]
fn the_repository_quota_binds_the_inbox_snapshots() {
    let s = setup(&[], &[]);
    let r = s
        .server
        .admin(&s.env, &["repo", "set", "phone", "--max-size", "200K"]);
    assert_eq!(r.code, Some(0), "{r}");
    let (code, body) = s.dav("PUT", "big.bin", &random_bytes(400_000));
    assert_eq!(code, 201, "{body}");
    let start = Instant::now();
    while !s.server.log().contains("is at its quota") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{}",
            s.server.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(s.snapshots().is_empty(), "no snapshot over the quota");
    s.admin.ok(["check"]);
}

/// Debian's litmus WebDAV suite against an inbox: which suites pass whole,
/// and that every failure is a PROPPATCH (dead properties are not stored:
/// DESIGN §18c).
#[test]
fn litmus() {
    assert!(
        Path::new("/usr/bin/litmus").exists(),
        "the inbox tests need Debian's litmus: run scripts/test.sh, which installs it"
    );
    let s = setup(&[], &[]);
    let url = format!("http://{}/dav/phone/", s.server.addr);
    let run = |suites: &str| {
        let out = Command::new("litmus")
            .args([&url, "phone", &s.password])
            .env("TESTS", suites)
            .current_dir(s.env.path(""))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for suite in ["basic", "copymove", "http"] {
        let out = run(suite);
        assert!(
            out.contains(&format!("<- summary for `{suite}':")) && out.contains("0 failed"),
            "litmus {suite}:\n{out}"
        );
    }
    for suite in ["props", "locks"] {
        let out = run(suite);
        let fails: Vec<&str> = out.lines().filter(|l| l.contains("FAIL")).collect();
        assert!(
            fails
                .iter()
                .all(|l| l.contains("PROPPATCH") || l.contains("No responses returned")),
            "litmus {suite}: failures other than PROPPATCH:\n{out}"
        );
        let passed = out
            .lines()
            .find(|l| l.starts_with(&format!("<- summary for `{suite}'")))
            .unwrap_or_else(|| panic!("litmus {suite}:\n{out}"));
        eprintln!("litmus {suite}: {passed}");
    }
}
