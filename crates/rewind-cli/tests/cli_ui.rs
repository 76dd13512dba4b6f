//! `rewind ui`: the web UI, over raw HTTP (its security rules, downloads,
//! pagination) and in a real headless Chromium (tests/ui_browser.py,
//! driven by Playwright from the venv that scripts/test.sh makes).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::server::{client, Server};
use common::*;

/// A running `rewind ui`, stopped (SIGTERM) when dropped.
struct Ui {
    child: Child,
    /// `127.0.0.1:PORT`.
    addr: String,
    /// The one-time login path, `/login?token=…`.
    login: String,
}

impl Ui {
    fn start(env: &Env) -> Ui {
        let mut c = env.cmd();
        c.arg("ui").stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = c.spawn().expect("start rewind ui");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("rewind ui: open http://")
            .unwrap_or_else(|| panic!("rewind ui printed {line:?}"))
            .to_string();
        let (addr, login) = url.split_at(url.find('/').unwrap());
        Ui {
            child,
            addr: addr.to_string(),
            login: login.to_string(),
        }
    }

    /// Logs in with the printed token: the session cookie.
    fn session(&self) -> String {
        let r = self.get(&self.login, None);
        assert_eq!(r.status, 303, "login: {}", r.text());
        let c = r.header("set-cookie");
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict"),
            "cookie {c}"
        );
        c.split(';').next().unwrap().to_string()
    }

    fn get(&self, path: &str, cookie: Option<&str>) -> Answer {
        let mut h = vec![];
        if let Some(c) = cookie {
            h.push(("Cookie", c.to_string()));
        }
        http(&self.addr, "GET", path, &h, b"")
    }

    fn post(&self, path: &str, cookie: &str, form: &str, extra: &[(&str, String)]) -> Answer {
        let mut h = vec![
            ("Cookie", cookie.to_string()),
            (
                "Content-Type",
                "application/x-www-form-urlencoded".to_string(),
            ),
        ];
        h.extend(extra.iter().cloned());
        http(&self.addr, "POST", path, &h, form.as_bytes())
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        signal(&self.child, nix::sys::signal::Signal::SIGTERM);
        if wait_exit(&mut self.child, 10).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on its own connection; chunked bodies are joined.
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).expect("connect to rewind ui");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| *k == "Host") {
        req += &format!("Host: {addr}\r\n");
    }
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += &format!("Content-Length: {}\r\n\r\n", body.len());
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete answer");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let mut hs = HashMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            hs.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut body = raw[split + 4..].to_vec();
    if hs.get("transfer-encoding").is_some_and(|t| t == "chunked") {
        body = dechunk(&body);
    }
    Answer {
        status,
        headers: hs,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").expect("chunk size");
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 4 + n..];
    }
}

/// A query value: every byte but unreserved ones as %XX.
fn enc(b: &[u8]) -> String {
    b.iter()
        .map(|&c| {
            if c.is_ascii_alphanumeric() || b"-_.~/".contains(&c) {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

/// Asserts two trees equal but for the top folder's mtime (the restore
/// made or filled that folder itself, now).
#[track_caller]
fn assert_same_below(a: &Path, b: &Path, context: &str) {
    let d: Vec<_> = diff_trees(a, b, &[])
        .into_iter()
        .filter(|l| !l.starts_with(": mtime"))
        .collect();
    assert!(
        d.is_empty(),
        "{} and {} differ: {d:?}\n{context}",
        a.display(),
        b.display()
    );
}

/// The only snapshot's id.
fn only_snapshot(env: &Env) -> String {
    let s = env.snapshots();
    s.last().unwrap()["id"].as_str().unwrap().to_string()
}

/// The CSRF token of a page's forms.
fn csrf_of(page: &str) -> String {
    let at = page
        .find(r#"name="csrf" value=""#)
        .expect("a form with a csrf field");
    let rest = &page[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

#[test]
fn the_login_token_works_once_and_every_page_needs_the_session() {
    let env = Env::with_repo();
    let src = env.path("src");
    write_random(&src.join("a.bin"), 1000);
    env.backup([&src]);
    let ui = Ui::start(&env);
    // No session: pages send to the login page, downloads are refused.
    let r = ui.get("/", None);
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), "/login");
    let id = only_snapshot(&env);
    let file = format!(
        "/file/{id}?path={}",
        enc(src.join("a.bin").as_os_str().as_bytes())
    );
    assert_eq!(ui.get(&file, None).status, 401);
    assert_eq!(ui.get(&file, Some("rewind_session=forged")).status, 401);
    assert_eq!(ui.get("/login?token=0000", None).status, 403);
    // The printed token logs in once.
    let cookie = ui.session();
    let again = ui.get(&ui.login, None);
    assert_eq!(again.status, 403, "{}", again.text());
    assert!(again.text().contains("works once"), "{}", again.text());
    let page = ui.get("/", Some(&cookie));
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-security-policy"),
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    assert_eq!(page.header("x-frame-options"), "DENY");
    assert_eq!(page.header("x-content-type-options"), "nosniff");
    assert!(!page.text().contains("<script"), "pages carry no script");
    assert_eq!(ui.get(&file, Some(&cookie)).status, 200);
    // Another host name (DNS rebinding) is not answered.
    let port = ui.addr.rsplit(':').next().unwrap();
    let rebound = http(
        &ui.addr,
        "GET",
        "/",
        &[
            ("Host", format!("attacker.example:{port}")),
            ("Cookie", cookie.clone()),
        ],
        b"",
    );
    assert_eq!(rebound.status, 421);
    // Logging out ends the session (and needs its CSRF token).
    let csrf = csrf_of(&page.text());
    assert_eq!(ui.post("/logout", &cookie, "csrf=wrong", &[]).status, 403);
    assert_eq!(ui.get("/", Some(&cookie)).status, 200);
    assert_eq!(
        ui.post("/logout", &cookie, &format!("csrf={csrf}"), &[])
            .status,
        303
    );
    assert_eq!(ui.get("/", Some(&cookie)).status, 303);
}

#[test]
fn failed_logins_are_limited() {
    let env = Env::with_repo();
    let ui = Ui::start(&env);
    for _ in 0..rewind_server::ui::MAX_FAILED_LOGINS {
        assert_eq!(ui.get("/login?token=guess", None).status, 403);
    }
    // Guessing has no more tries this minute...
    let r = ui.get("/login?token=guess", None);
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("retry-after"), "60");
    // ...but the guesses of others cannot lock the token's owner out.
    assert_eq!(ui.get(&ui.login, None).status, 303);
    // POST /login is not how `rewind ui` logs in, and counts for nothing.
    let r = http(&ui.addr, "POST", "/login", &[], b"token=x");
    assert_eq!(r.status, 403);
}

#[test]
fn a_restore_needs_the_csrf_token_and_a_same_site_form() {
    let env = Env::with_repo();
    let src = env.path("src");
    random_tree(&src.join("docs"), 20, 3000);
    env.backup([&src]);
    let id = only_snapshot(&env);
    let ui = Ui::start(&env);
    let cookie = ui.session();
    let docs = src.join("docs");
    let form_page = ui.get(
        &format!(
            "/restore?snap={id}&path={}",
            enc(docs.as_os_str().as_bytes())
        ),
        Some(&cookie),
    );
    assert_eq!(form_page.status, 200, "{}", form_page.text());
    let csrf = csrf_of(&form_page.text());
    let target = env.path("restored");
    // The form's path field is the path percent-encoded once more.
    let fields = |csrf: &str| {
        format!(
            "csrf={csrf}&snap={id}&path={}&target={}&overwrite=if-changed",
            enc(enc(docs.as_os_str().as_bytes()).as_bytes()),
            enc(target.as_os_str().as_bytes())
        )
    };
    assert_eq!(ui.post("/restore", &cookie, &fields(""), &[]).status, 403);
    assert_eq!(
        ui.post("/restore", &cookie, &fields("f00d"), &[]).status,
        403
    );
    let cross = ui.post(
        "/restore",
        &cookie,
        &fields(&csrf),
        &[("Origin", "http://attacker.example".to_string())],
    );
    assert_eq!(cross.status, 403);
    assert!(!target.exists(), "a refused restore wrote nothing");
    // A relative target is refused with a reason.
    let rel = ui.post(
        "/restore",
        &cookie,
        &fields(&csrf).replace(&enc(target.as_os_str().as_bytes()), "relative/dir"),
        &[],
    );
    assert_eq!(rel.status, 400);
    assert!(rel.text().contains("must be a full path"), "{}", rel.text());
    // The real form restores.
    let ok = ui.post("/restore", &cookie, &fields(&csrf), &[]);
    assert_eq!(ok.status, 303, "{}", ok.text());
    let job = ok.header("location").to_string();
    assert_eq!(job, "/jobs/1");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = ui.get(&job, Some(&cookie)).text();
        if p.contains("Restore finished") {
            assert!(p.contains("Restored 20 files"), "{p}");
            break;
        }
        assert!(Instant::now() < deadline, "restore did not finish: {p}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_same_below(&docs, &target, "");
}

#[test]
fn hostile_names_are_text_and_paths_stay_inside_the_snapshot() {
    let env = Env::with_repo();
    let src = env.path("src");
    let hostile: [&[u8]; 4] = [
        b"<script>alert(1)",
        b"<img src=x onerror=alert(1)>",
        b"\"><b>quote",
        b"bad\xffname&amp;.txt",
    ];
    for (i, name) in hostile.iter().enumerate() {
        write(
            &src.join(std::ffi::OsStr::from_bytes(name)),
            format!("content {i}").as_bytes(),
        );
    }
    env.backup([&src]);
    let id = only_snapshot(&env);
    let ui = Ui::start(&env);
    let cookie = ui.session();
    let page = ui.get(
        &format!("/snapshot/{id}?path={}", enc(src.as_os_str().as_bytes())),
        Some(&cookie),
    );
    assert_eq!(page.status, 200);
    let html = page.text();
    for raw in ["<script>alert(1)", "<img src=x", "\"><b>"] {
        assert!(!html.contains(raw), "{raw} reached the page as HTML");
    }
    assert!(html.contains("&lt;script&gt;alert(1)"), "{html}");
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    // A name that is not UTF-8 is shown with the byte escaped, and its link
    // downloads exactly that file.
    assert!(html.contains(r"bad\xffname&amp;amp;.txt"), "{html}");
    for (i, name) in hostile.iter().enumerate() {
        let path = enc(src
            .join(std::ffi::OsStr::from_bytes(name))
            .as_os_str()
            .as_bytes());
        let link = format!("/file/{id}?path={path}");
        assert!(
            html.contains(&link.replace('&', "&amp;")),
            "no link {link} in the page"
        );
        let r = ui.get(&link, Some(&cookie));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.body, format!("content {i}").as_bytes());
        assert!(r.header("content-disposition").starts_with("attachment;"));
        assert_eq!(r.header("content-type"), "application/octet-stream");
    }
    // Nothing outside the snapshot: `..` is refused, and this machine's
    // files are not looked at.
    for path in ["/../../etc/passwd", "/tmp/../../etc"] {
        let r = ui.get(
            &format!("/file/{id}?path={}", enc(path.as_bytes())),
            Some(&cookie),
        );
        assert_eq!(r.status, 400, "{path}: {}", r.text());
    }
    let r = ui.get(&format!("/file/{id}?path=/etc/passwd"), Some(&cookie));
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(!r.text().contains("root:"), "a file of this machine leaked");
    let r = ui.get("/snapshot/0123456789abcdef", Some(&cookie));
    assert_eq!(r.status, 404);
    // A folder link that names a file shows its versions.
    let one = src.join(std::ffi::OsStr::from_bytes(hostile[0]));
    let r = ui.get(
        &format!("/snapshot/{id}?path={}", enc(one.as_os_str().as_bytes())),
        Some(&cookie),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains("Versions of &lt;script&gt;alert(1)"),
        "{}",
        r.text()
    );
}

#[test]
fn a_folder_downloads_as_a_tar_gz_that_gnu_tar_extracts_exactly() {
    let env = Env::with_repo();
    let src = env.path("src");
    random_tree(&src.join("data"), 12, 50_000);
    write(&src.join("data/tiny"), b"tiny");
    chmod(&src.join("data/tiny"), 0o640);
    std::fs::hard_link(src.join("data/tiny"), src.join("data/tiny-link")).unwrap();
    std::os::unix::fs::symlink("tiny", src.join("data/sym")).unwrap();
    let xattr = set_xattr(&src.join("data/tiny"), "user.color", "blue");
    set_mtime(&src.join("data/tiny"), 1_500_000_000, 123_456_789);
    env.backup([&src]);
    let id = only_snapshot(&env);
    let ui = Ui::start(&env);
    let cookie = ui.session();
    let data = src.join("data");
    let r = ui.get(
        &format!("/archive/{id}?path={}", enc(data.as_os_str().as_bytes())),
        Some(&cookie),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), "application/gzip");
    assert!(
        r.header("content-disposition").contains("data.tar.gz"),
        "{}",
        r.header("content-disposition")
    );
    let tgz = env.path("data.tar.gz");
    std::fs::write(&tgz, &r.body).unwrap();
    let out = env.path("extracted");
    std::fs::create_dir_all(&out).unwrap();
    let st = Command::new("tar")
        .args([
            "-x",
            "-z",
            "--xattrs",
            "--xattrs-include=user.*",
            "-p",
            "-f",
        ])
        .arg(&tgz)
        .arg("-C")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success(), "GNU tar could not read the archive");
    let got = out.join("data");
    // Files keep their times; the top folder's is when tar filled it.
    assert_same_below(&data, &got, "the archive differs");
    assert_eq!(
        std::fs::metadata(got.join("tiny")).unwrap().ino(),
        std::fs::metadata(got.join("tiny-link")).unwrap().ino(),
        "the hard link came back as a copy"
    );
    if xattr {
        assert_eq!(
            get_xattr(&got.join("tiny"), "user.color").as_deref(),
            Some("blue")
        );
    }
}

#[test]
fn a_large_folder_is_paginated() {
    let env = Env::with_repo();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..1200 {
        std::fs::write(src.join(format!("f{i:05}")), b"").unwrap();
    }
    env.backup([&src]);
    let id = only_snapshot(&env);
    let ui = Ui::start(&env);
    let cookie = ui.session();
    let base = format!("/snapshot/{id}?path={}", enc(src.as_os_str().as_bytes()));
    let rows = |html: &str| html.matches(r#"<td class="name">"#).count();
    let first = ui.get(&base, Some(&cookie)).text();
    assert_eq!(rows(&first), 500);
    assert!(first.contains("Page 1 of 3"), "{first}");
    assert!(first.contains("f00000") && !first.contains("f00500"));
    let last = ui.get(&format!("{base}&page=3"), Some(&cookie)).text();
    assert_eq!(rows(&last), 200);
    assert!(last.contains("f01199") && !last.contains("f00999"));
    // A page past the end shows the last one.
    assert_eq!(
        rows(&ui.get(&format!("{base}&page=99"), Some(&cookie)).text()),
        200
    );
}

/// Python with Playwright: `REWIND_TEST_PYTHON`, else the venv that
/// scripts/test.sh makes.
fn playwright_python() -> PathBuf {
    if let Some(p) = std::env::var_os("REWIND_TEST_PYTHON") {
        return p.into();
    }
    let venv =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-tools/venv/bin/python");
    let ok = Command::new(&venv)
        .args(["-c", "import playwright"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the browser test needs Python's playwright: run scripts/test.sh, which installs it into target/test-tools/venv, or set REWIND_TEST_PYTHON"
    );
    venv
}

fn chromium() -> PathBuf {
    let p = std::env::var_os("REWIND_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        p.exists(),
        "the browser test needs Debian's chromium ({}): run scripts/test.sh, which installs it, or set REWIND_TEST_CHROMIUM",
        p.display()
    );
    p
}

/// Copies a tree with its metadata (`cp -a`).
fn copy_tree(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn the_pages_work_in_a_real_browser() {
    let python = playwright_python();
    let chromium = chromium();
    let env = Env::with_repo();
    let src = env.path("src");
    let docs = src.join("docs");
    random_tree(&docs, 40, 4000);
    for i in 0..40 {
        // Text that compresses well, so that its encryption shows.
        let text = format!("Quarterly report {i}\n").repeat(200 + i);
        write(&docs.join(format!("report-{i:02}.txt")), text.as_bytes());
    }
    write(&docs.join("budget.xlsx"), b"budget, version one");
    write(&docs.join("<script>alert(1)"), b"not a script");
    env.backup([&src]);
    let clean = env.path("clean");
    copy_tree(&src, &clean);
    // The attack: every report rewritten with random bytes and renamed.
    std::thread::sleep(Duration::from_millis(1100));
    for i in 0..40 {
        let p = docs.join(format!("report-{i:02}.txt"));
        let len = std::fs::metadata(&p).unwrap().len() as usize;
        write(&p.with_extension("txt.locked"), &random_bytes(len));
        std::fs::remove_file(&p).unwrap();
    }
    let mut c = env.cmd();
    c.args(["--json", "backup"]).arg(&src);
    let attack = run_cmd(c);
    assert_eq!(attack.code, Some(4), "the attack was not flagged: {attack}");
    let ui = Ui::start(&env);
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let downloaded = env.path("downloaded-budget.xlsx");
    let restored = env.path("restored-docs");
    let in_place = env.path("in-place");
    copy_tree(&src, &in_place);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui_browser.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(format!("http://{}{}", ui.addr, ui.login))
        .arg(&chromium)
        .arg(&shots)
        .arg(&docs)
        .arg(&downloaded)
        .arg(&restored)
        .arg(&in_place)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the browser test failed:\n{said}");
    // What the browser did, checked on disk.
    assert_eq!(
        std::fs::read(&downloaded).unwrap(),
        b"budget, version one",
        "{said}"
    );
    assert_same_below(&clean.join("docs"), &restored, &said);
    // The last clean state, restored over the attacked copy with the
    // attack's files removed, is the clean tree.
    assert_same_below(&clean, &in_place, &said);
}

/// `POST /ui/login` on a server; the answer.
fn served_login(addr: &str, token: &str, password: &str) -> Answer {
    http(
        addr,
        "POST",
        "/ui/login",
        &[(
            "Content-Type",
            "application/x-www-form-urlencoded".to_string(),
        )],
        format!(
            "token={}&password={}",
            enc(token.as_bytes()),
            enc(password.as_bytes())
        )
        .as_bytes(),
    )
}

#[test]
fn rewind_serve_shows_the_pages_to_read_and_admin_tokens_with_the_password() {
    let env = Env::new();
    let server = Server::start(&env, &[]);
    let backup = server.token(&env, "laptop", "backup", &[]);
    let read = server.token(&env, "laptop", "read", &[]);
    let other = server.token(&env, "desktop", "admin", &[]);
    let c = client(&env, &server, "laptop", &backup);
    let src = env.path("src");
    write(&src.join("notes.txt"), b"served notes");
    c.ok(["init"]);
    c.ok(["backup", src.to_str().unwrap()]);
    let addr = server.addr.clone();
    // Nothing without a session; the name "ui" is not a repository's.
    let r = http(&addr, "GET", "/ui/", &[], b"");
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), "/ui/login");
    assert_eq!(http(&addr, "GET", "/ui/login", &[], b"").status, 200);
    let refused = server.admin(&env, &["token", "add", "--repo", "ui", "--role", "read"]);
    assert_ne!(refused.code, Some(0), "{refused}");
    assert!(
        refused.stderr.contains("taken by the server's web UI"),
        "{refused}"
    );
    let refused = server.admin(&env, &["token", "add", "--repo", "dav", "--role", "read"]);
    assert_ne!(refused.code, Some(0), "{refused}");
    assert!(
        refused
            .stderr
            .contains("taken by the server's phone inboxes"),
        "{refused}"
    );
    // A backup token may not look; a wrong password opens nothing.
    let r = served_login(&addr, &backup, &env.password);
    assert_eq!(r.status, 403);
    assert!(r.text().contains("backup token"), "{}", r.text());
    let r = served_login(&addr, &read, "not the password");
    assert_eq!(r.status, 403);
    assert!(r.text().contains("wrong password"), "{}", r.text());
    let r = served_login(&addr, &other, &env.password);
    assert_eq!(
        r.status, 403,
        "a token of a repository with no repository behind it"
    );
    // A read token and the password: the history, and downloads.
    let r = served_login(&addr, &read, &env.password);
    assert_eq!(r.status, 303, "{}", r.text());
    let cookie = r.header("set-cookie");
    assert!(
        cookie.contains("Path=/ui/") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_string();
    let h = [("Cookie", cookie.clone())];
    let page = http(&addr, "GET", "/ui/", &h, b"");
    assert_eq!(page.status, 200);
    let id = c.ok(["--json", "snapshots"]).out();
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    let id = id[0]["id"].as_str().unwrap().to_string();
    assert!(page.text().contains(&id[..8]), "{}", page.text());
    assert!(
        page.text().contains(r#"href="/ui/snapshot/"#),
        "links stay under /ui/"
    );
    let f = http(
        &addr,
        "GET",
        &format!(
            "/ui/file/{id}?path={}",
            enc(src.join("notes.txt").as_os_str().as_bytes())
        ),
        &h,
        b"",
    );
    assert_eq!(f.status, 200, "{}", f.text());
    assert_eq!(f.body, b"served notes");
    // Restores to a folder are `rewind ui`'s, on the machine itself.
    let r = http(&addr, "GET", &format!("/ui/restore?snap={id}"), &h, b"");
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("download the folder instead"),
        "{}",
        r.text()
    );
    // A login form posted from another site is refused (login CSRF).
    let r = http(
        &addr,
        "POST",
        "/ui/login",
        &[
            (
                "Content-Type",
                "application/x-www-form-urlencoded".to_string(),
            ),
            ("Origin", "https://attacker.example".to_string()),
        ],
        format!("token={read}&password={}", env.password).as_bytes(),
    );
    assert_eq!(r.status, 403);
    // The protocol is still there beside it.
    c.ok(["snapshots"]);
    // Revoking the token ends its sessions (looked at every 5 s).
    let names = server.admin(&env, &["token", "list"]).out();
    let name = names
        .split_whitespace()
        .find(|w| w.starts_with("laptop-read"))
        .unwrap()
        .to_string();
    let r = server.admin(&env, &["token", "revoke", &name]);
    assert_eq!(r.code, Some(0), "{r}");
    std::thread::sleep(Duration::from_millis(5500));
    let r = http(&addr, "GET", "/ui/", &h, b"");
    assert_eq!(r.status, 303, "a revoked token's session still works");
    assert!(
        server.log().contains("web UI: token laptop-read"),
        "{}",
        server.log()
    );
}
