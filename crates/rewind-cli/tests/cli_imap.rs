//! Mail backups against a real Dovecot (Debian's `dovecot-imapd`), started
//! on loopback ports with its own configuration, password file and TLS
//! certificate (a private CA made with openssl).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rewind_backends::testsupport::loopback_port;

const PASSWORD: &str = "mail secret";

/// The access token that the test's OAuth2 introspection endpoint calls
/// active, for alice.
const TOKEN: &str = "ya29.test-access-token";

/// An OAuth2 token introspection endpoint (RFC 7662, as Dovecot's oauth2
/// passdb asks it: GET with `Authorization: Bearer TOKEN`), in the system
/// python3: [`TOKEN`] is alice's, anything else is inactive.
const INTROSPECTION: &str = r#"
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.headers.get("Authorization", "") == "Bearer " + sys.argv[2]
        body = json.dumps({"active": True, "username": "alice"} if ok else {"active": False}).encode()
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

/// A Dovecot of the test's own: `alice` and `bob`, plain IMAP (STARTTLS
/// offered) on `port`, IMAPS on `tls_port`, certificates signed by `ca`.
struct Dovecot {
    child: Child,
    /// The OAuth2 introspection endpoint ([`INTROSPECTION`]).
    oauth: Child,
    dir: PathBuf,
    port: u16,
    tls_port: u16,
    ca: PathBuf,
}

fn dovecot_binary() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/sbin/dovecot");
    p.exists().then_some(p)
}

/// Skips (true) where Dovecot cannot run: it needs root to drop to its
/// mail user.
fn skip() -> bool {
    if !is_root() {
        eprintln!("skipped: a test Dovecot needs root (it runs its mail processes as nobody)");
        return true;
    }
    assert!(
        dovecot_binary().is_some(),
        "the mail tests need Debian's dovecot-imapd: run scripts/test.sh, which installs it"
    );
    false
}

fn sh_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Dovecot {
    fn start(env: &Env) -> Dovecot {
        let dir = env.path("dovecot");
        std::fs::create_dir_all(dir.join("home")).unwrap();
        // The mail processes run as nobody and must reach their homes.
        chmod(&env.root, 0o755);
        chmod(&dir, 0o755);
        sh_ok(
            Command::new("chown")
                .arg("nobody:nogroup")
                .arg(dir.join("home")),
        );
        std::fs::write(
            dir.join("passwd"),
            format!("alice:{{PLAIN}}{PASSWORD}::::::\nbob:{{PLAIN}}{PASSWORD}::::::\n"),
        )
        .unwrap();
        // A private CA and a certificate for 127.0.0.1 signed by it.
        let ca = dir.join("ca.pem");
        sh_ok(Command::new("openssl").current_dir(&dir).args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=rewind test CA",
        ]));
        sh_ok(Command::new("openssl").current_dir(&dir).args([
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]));
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        sh_ok(Command::new("openssl").current_dir(&dir).args([
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]));
        let (port, tls_port) = (loopback_port(), loopback_port());
        let oauth_port = loopback_port();
        std::fs::write(dir.join("introspect.py"), INTROSPECTION).unwrap();
        let oauth = Command::new("/usr/bin/python3")
            .arg(dir.join("introspect.py"))
            .arg(oauth_port.to_string())
            .arg(TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the OAuth2 introspection endpoint");
        std::fs::write(
            dir.join("oauth2.conf"),
            format!(
                "introspection_mode = auth\nintrospection_url = http://127.0.0.1:{oauth_port}/introspect\nusername_attribute = username\nactive_attribute = active\nactive_value = true\n"
            ),
        )
        .unwrap();
        let d = dir.display();
        let conf = format!(
            r#"base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{d}/server.pem
ssl_key = <{d}/server.key
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2
first_valid_uid = 0
mail_location = maildir:{d}/home/%u/Maildir
passdb {{
  driver = oauth2
  mechanisms = xoauth2
  args = {d}/oauth2.conf
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={d}/home/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
  }}
}}
service anvil {{
  chroot =
}}
"#
        );
        std::fs::write(dir.join("dovecot.conf"), conf).unwrap();
        let child = Command::new(dovecot_binary().unwrap())
            .arg("-F")
            .arg("-c")
            .arg(dir.join("dovecot.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dovecot");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "dovecot did not start: {}",
                std::fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Dovecot {
            child,
            oauth,
            ca,
            dir,
            port,
            tls_port,
        }
    }

    fn url(&self, user: &str, rest: &str) -> String {
        format!("imap://{user}@127.0.0.1:{}{rest}", self.port)
    }

    fn plain(&self, user: &str) -> String {
        self.url(user, "?tls=none")
    }

    fn client(&self, user: &str) -> Imap {
        Imap::login(self.port, user)
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        signal(&self.child, nix::sys::signal::Signal::SIGTERM);
        if wait_exit(&mut self.child, 10).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = self.oauth.kill();
        let _ = self.oauth.wait();
        let _ = &self.dir;
    }
}

/// A minimal IMAP client for setting up and checking mailboxes.
struct Imap {
    r: BufReader<TcpStream>,
    w: TcpStream,
    tag: u32,
}

impl Imap {
    fn login(port: u16, user: &str) -> Imap {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut c = Imap {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
            tag: 0,
        };
        let mut greeting = String::new();
        c.r.read_line(&mut greeting).unwrap();
        c.ok(&format!("LOGIN {user} \"{PASSWORD}\""));
        c
    }

    /// Sends a command; returns everything up to its tagged OK (literals
    /// included), failing on NO or BAD.
    fn ok(&mut self, cmd: &str) -> Vec<u8> {
        self.tag += 1;
        let tag = format!("t{}", self.tag);
        write!(self.w, "{tag} {cmd}\r\n").unwrap();
        self.read_until(&tag)
    }

    fn read_until(&mut self, tag: &str) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut line = Vec::new();
            self.r.read_until(b'\n', &mut line).unwrap();
            assert!(!line.is_empty(), "the server closed the connection");
            // A literal {N}: N more bytes follow.
            if let Some(n) = line
                .strip_suffix(b"}\r\n")
                .and_then(|l| l.iter().rposition(|&b| b == b'{').map(|i| &l[i + 1..]))
                .and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok())
            {
                out.extend_from_slice(&line);
                let mut lit = vec![0u8; n];
                self.r.read_exact(&mut lit).unwrap();
                out.extend_from_slice(&lit);
                continue;
            }
            let done = line.starts_with(format!("{tag} ").as_bytes());
            if done {
                let l = String::from_utf8_lossy(&line);
                assert!(l.starts_with(&format!("{tag} OK")), "IMAP said: {l}");
                return out;
            }
            out.extend_from_slice(&line);
        }
    }

    fn append(&mut self, folder: &str, flags: &str, msg: &[u8]) {
        self.tag += 1;
        let tag = format!("t{}", self.tag);
        write!(
            self.w,
            "{tag} APPEND \"{folder}\" ({flags}) {{{}}}\r\n",
            msg.len()
        )
        .unwrap();
        let mut cont = String::new();
        self.r.read_line(&mut cont).unwrap();
        assert!(cont.starts_with('+'), "APPEND: {cont}");
        self.w.write_all(msg).unwrap();
        self.w.write_all(b"\r\n").unwrap();
        self.read_until(&tag);
    }

    /// EXISTS of a folder.
    fn count(&mut self, folder: &str) -> usize {
        let out = String::from_utf8_lossy(&self.ok(&format!("EXAMINE \"{folder}\""))).into_owned();
        out.lines()
            .find_map(|l| l.strip_suffix(" EXISTS").and_then(|l| l.strip_prefix("* ")))
            .and_then(|n| n.trim().parse().ok())
            .unwrap()
    }
}

/// A message with CRLF line ends (Dovecot keeps it byte for byte).
fn message(folder: &str, i: usize, attachment: bool) -> Vec<u8> {
    let mut m = format!(
        "From: Bob <bob@example.com>\r\nTo: Alice <alice@example.com>\r\nSubject: {folder} message {i}\r\nMessage-ID: <{i}.{}@example.com>\r\nDate: Mon, 30 Nov 2026 07:00:00 +0000\r\nMIME-Version: 1.0\r\n",
        folder.len()
    );
    if attachment {
        m += "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n";
        let data = random_bytes(150_000);
        let b64: String = data
            .chunks(57)
            .map(|c| {
                let mut s = String::new();
                for ch in c.chunks(3) {
                    let n =
                        ch.iter().fold(0u32, |a, &b| a << 8 | u32::from(b)) << (8 * (3 - ch.len()));
                    const T: &[u8] =
                        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
                    for k in 0..4 {
                        s.push(if k <= ch.len() {
                            T[(n >> (18 - 6 * k) & 63) as usize] as char
                        } else {
                            '='
                        });
                    }
                }
                s + "\r\n"
            })
            .collect();
        m += &b64;
        m += "--b--\r\n";
    } else {
        m += &format!("Content-Type: text/plain; charset=utf-8\r\n\r\nHello Alice, this is message {i} in {folder}.\r\nGrüße\r\n");
    }
    m.into_bytes()
}

/// Files called `name` below `dir`.
fn count_named(dir: &Path, name: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            if e.file_type().unwrap().is_dir() {
                count_named(&e.path(), name)
            } else {
                usize::from(e.file_name() == name)
            }
        })
        .sum()
}

/// A world with a repository and a Dovecot.
fn world() -> (Env, Dovecot) {
    let env = Env::with_repo();
    let dovecot = Dovecot::start(&env);
    (env, dovecot)
}

/// `rewind` with the mail password in a file.
fn mail_cmd(env: &Env) -> Command {
    let pw = env.path("mail-password");
    std::fs::write(&pw, PASSWORD).unwrap();
    let mut c = env.cmd();
    c.env("REWIND_IMAP_PASSWORD_FILE", &pw);
    c
}

fn mail_backup(env: &Env, url: &str) -> Run {
    let mut c = mail_cmd(env);
    c.args(["--json", "backup", url]);
    run_cmd(c)
}

#[test]
fn a_mailbox_is_backed_up_incrementally_and_restored_exactly() {
    if skip() {
        return;
    }
    let (env, dovecot) = world();
    let mut alice = dovecot.client("alice");
    alice.ok("CREATE \"Entw&APw-rfe\"");
    alice.ok("CREATE \"Archive.2025\"");
    let mut sent: HashMap<(&str, usize), Vec<u8>> = HashMap::new();
    for i in 1..=1200 {
        let m = message("INBOX", i, i % 150 == 0);
        alice.append("INBOX", if i % 2 == 0 { "\\Seen" } else { "" }, &m);
        sent.insert(("INBOX", i), m);
    }
    for i in 1..=20 {
        let m = message("Entwürfe", i, false);
        alice.append("Entw&APw-rfe", "\\Draft", &m);
        sent.insert(("Entwürfe", i), m);
    }
    let old = message("Archive.2025", 1, false);
    alice.append("Archive.2025", "", &old);
    let url = dovecot.plain("alice");
    let r = mail_backup(&env, &url);
    assert_eq!(r.code, Some(0), "{r}");
    let s = r.summary();
    // Restored as files: every message byte for byte, flags as xattrs.
    let out = env.path("restored");
    env.ok(["restore", "latest", "--target", out.to_str().unwrap()]);
    let records = count_named(&out, ".imap-folder.json");
    assert_eq!(
        records, 3,
        "INBOX, Entwürfe, Archive/2025 (Archive only holds)"
    );
    assert_eq!(s["files_new"], 1200 + 20 + 1, "one file a message: {s}");
    for ((folder, i), m) in &sent {
        let p = out.join(folder).join(format!("{i:010}.eml"));
        assert_eq!(
            &std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
            m,
            "{}",
            p.display()
        );
    }
    assert_eq!(
        std::fs::read(out.join("Archive/2025/0000000001.eml")).unwrap(),
        old
    );
    assert_eq!(
        get_xattr(&out.join("INBOX/0000000002.eml"), "user.imap.flags").as_deref(),
        Some("\\Seen")
    );
    assert_eq!(
        get_xattr(&out.join("Entwürfe/0000000001.eml"), "user.imap.flags").as_deref(),
        Some("\\Draft")
    );
    let record = std::fs::read_to_string(out.join("Entwürfe/.imap-folder.json")).unwrap();
    assert!(record.contains("Entw&APw-rfe"), "{record}");
    let first = env.snapshots()[0]["id"].as_str().unwrap().to_string();

    // Changes: 10 new, one flagged, one deleted, a folder renamed, and a
    // folder deleted and made again (a new UIDVALIDITY: its UIDs start over).
    for i in 1201..=1210 {
        alice.append("INBOX", "", &message("INBOX", i, false));
    }
    alice.ok("SELECT INBOX");
    alice.ok("UID STORE 3 +FLAGS (\\Flagged)");
    alice.ok("UID STORE 5 +FLAGS (\\Deleted)");
    alice.ok("EXPUNGE");
    alice.ok("RENAME \"Archive.2025\" \"Archive.Old\"");
    alice.ok("DELETE \"Entw&APw-rfe\"");
    alice.ok("CREATE \"Entw&APw-rfe\"");
    let fresh = message("Entwürfe", 999, false);
    alice.append("Entw&APw-rfe", "", &fresh);
    let r = mail_backup(&env, &url);
    assert_eq!(r.code, Some(0), "{r}");
    let s = r.summary();
    // New: 10 in INBOX, the renamed folder's message, the new folder's one;
    // the folder records changed. Nothing already kept was downloaded again.
    assert_eq!(s["files_unchanged"], 1200 - 1, "{s}");
    assert!(
        s["bytes_read"].as_u64().unwrap() < 100_000,
        "only the new messages: {s}"
    );
    let out2 = env.path("restored2");
    env.ok(["restore", "latest", "--target", out2.to_str().unwrap()]);
    assert!(
        !out2.join("INBOX/0000000005.eml").exists(),
        "an expunged message is gone from the new snapshot"
    );
    assert!(out2.join("INBOX/0000001210.eml").exists());
    assert_eq!(
        get_xattr(&out2.join("INBOX/0000000003.eml"), "user.imap.flags").as_deref(),
        Some("\\Flagged")
    );
    assert_eq!(
        std::fs::read(out2.join("Archive/Old/0000000001.eml")).unwrap(),
        old
    );
    assert!(!out2.join("Archive/2025").exists());
    // The new UIDVALIDITY: UID 1 is another message now, not the old one.
    assert_eq!(
        std::fs::read(out2.join("Entwürfe/0000000001.eml")).unwrap(),
        fresh
    );
    assert!(!out2.join("Entwürfe/0000000002.eml").exists());
    // The deleted message stays in the history.
    let ls = env.ok(["ls", &first, "/INBOX"]).out();
    assert!(ls.contains("0000000005.eml"), "{ls}");
    let diff = env.ok(["diff", &first, "latest"]).out();
    assert!(diff.contains("-    /INBOX/0000000005.eml"), "{diff}");

    // Back to a mailbox: bob gets alice's INBOX of the first backup under
    // Restored/, with flags and dates; a second run adds nothing.
    let to = dovecot.url("bob", "/Restored?tls=none");
    let mut c = mail_cmd(&env);
    c.args(["restore", &format!("{first}:/INBOX"), "--to", &to]);
    let r = run_cmd(c);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.out().contains("restored 1200 messages"), "{r}");
    let mut bob = dovecot.client("bob");
    assert_eq!(bob.count("Restored.INBOX"), 1200);
    let body = bob.ok("UID FETCH 2 (FLAGS BODY.PEEK[])");
    assert!(String::from_utf8_lossy(&body).contains("\\Seen"));
    assert!(body
        .windows(sent[&("INBOX", 2)].len())
        .any(|w| w == &sent[&("INBOX", 2)][..]));
    let mut c = mail_cmd(&env);
    c.args(["restore", &format!("{first}:/INBOX"), "--to", &to]);
    let r = run_cmd(c);
    assert!(
        r.out().contains("restored 0 messages") && r.out().contains("1200 were already there"),
        "{r}"
    );
    assert_eq!(bob.count("Restored.INBOX"), 1200);

    // And to a Maildir.
    let md = env.path("Maildir");
    env.ok([
        "restore",
        "latest",
        "--to",
        &format!("maildir:{}", md.display()),
    ]);
    let cur: Vec<_> = std::fs::read_dir(md.join("INBOX/cur"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(cur.len(), 1209);
    let named = |end: &str| {
        cur.iter()
            .any(|e| e.file_name().to_string_lossy().ends_with(end))
    };
    assert!(
        named(":2,S") && named(":2,F") && named(":2,"),
        "flags in the Maildir names"
    );
}

#[test]
fn bad_addresses_passwords_and_folders_are_clear_errors() {
    if skip() {
        return;
    }
    let (env, dovecot) = world();
    dovecot
        .client("alice")
        .append("INBOX", "", &message("INBOX", 1, false));
    // The wrong password: nothing saved.
    let mut c = env.cmd();
    c.env("REWIND_IMAP_PASSWORD", "wrong")
        .args(["backup", &dovecot.plain("alice")]);
    let r = run_cmd(c);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("refused the login of alice"), "{r}");
    assert!(env.snapshots().is_empty());
    // No password at all, and no terminal to ask on.
    let r = env.run(["backup", &dovecot.plain("alice")]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("REWIND_IMAP_PASSWORD_FILE"), "{r}");
    // Plain text to another machine is refused before anything is sent.
    let r = env.run(["backup", "imap://alice@mail.example.com?tls=none"]);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("only to this machine"), "{r}");
    let r = env.run(["backup", "imap://mail.example.com"]);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("USER@"), "{r}");
    let r = env.run(["backup", &dovecot.plain("alice"), "/etc"]);
    assert_eq!(r.code, Some(2), "{r}");
    // A folder the mailbox does not have.
    let r = mail_backup(&env, &dovecot.url("alice", "/NoSuchFolder?tls=none"));
    assert_ne!(r.code, Some(0), "{r}");
    assert!(r.stderr.contains("has no folder \"NoSuchFolder\""), "{r}");
    // One folder only.
    let r = mail_backup(&env, &dovecot.url("alice", "/INBOX?tls=none"));
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(r.summary()["files_new"], 1);
}

/// XOAUTH2, as Gmail and Microsoft 365 take it: the token command's
/// output is the access token, checked by Dovecot's oauth2 passdb against
/// a real introspection endpoint.
#[test]
fn xoauth2_logs_in_with_the_token_command() {
    if skip() {
        return;
    }
    let (env, dovecot) = world();
    dovecot
        .client("alice")
        .append("INBOX", "", &message("INBOX", 1, false));
    let url = dovecot.url("alice", "?tls=none&auth=xoauth2");
    let token_backup = |command: Option<&str>| {
        let mut c = env.cmd();
        if let Some(cmd) = command {
            c.env("REWIND_IMAP_TOKEN_COMMAND", cmd);
        }
        c.args(["--json", "backup", &url]);
        run_cmd(c)
    };
    // No token command.
    let r = token_backup(None);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("REWIND_IMAP_TOKEN_COMMAND"), "{r}");
    // An expired or wrong token: refused, nothing saved, the token not shown.
    let r = token_backup(Some("echo ya29.expired"));
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("refused the login of alice"), "{r}");
    assert!(!r.stderr.contains("ya29.expired"), "{r}");
    // A token command that fails.
    let r = token_backup(Some("exit 3"));
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("REWIND_IMAP_TOKEN_COMMAND"), "{r}");
    assert!(env.snapshots().is_empty());
    // The right one.
    let r = token_backup(Some(&format!("echo {TOKEN}")));
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(r.summary()["files_new"], 1);
    let log = std::fs::read_to_string(dovecot.dir.join("dovecot.log")).unwrap();
    assert!(log.contains("method=XOAUTH2"), "{log}");
}

#[test]
fn tls_and_starttls_check_the_certificate() {
    if skip() {
        return;
    }
    let (env, dovecot) = world();
    dovecot
        .client("alice")
        .append("INBOX", "", &message("INBOX", 1, false));
    let ca = format!("ca={}", dovecot.ca.display());
    // Without the private CA the certificate is not trusted.
    let r = mail_backup(
        &env,
        &format!("imap://alice@127.0.0.1:{}", dovecot.tls_port),
    );
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains("TLS with 127.0.0.1") && r.stderr.to_lowercase().contains("certificate"),
        "{r}"
    );
    let r = mail_backup(
        &env,
        &format!("imap://alice@127.0.0.1:{}?{ca}", dovecot.tls_port),
    );
    assert_eq!(r.code, Some(0), "{r}");
    let r = mail_backup(&env, &dovecot.url("alice", &format!("?tls=starttls&{ca}")));
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(r.summary()["files_new"], 1, "{r}");
    // STARTTLS without the CA: refused too.
    let r = mail_backup(&env, &dovecot.url("alice", "?tls=starttls"));
    assert_eq!(r.code, Some(1), "{r}");
}

/// A TCP proxy in front of Dovecot that cuts connection N after the server
/// sent `limits[N]` bytes (`None`: never).
fn proxy(to: u16, limits: Vec<Option<usize>>) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let limits = Arc::new(Mutex::new(limits.into_iter()));
    let conns = Arc::new(AtomicUsize::new(0));
    let counted = conns.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            counted.fetch_add(1, Ordering::SeqCst);
            let limit = limits.lock().unwrap().next().flatten();
            let server = TcpStream::connect(("127.0.0.1", to)).unwrap();
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut s2);
            });
            std::thread::spawn(move || {
                let (mut server, mut client) = (server, client);
                let mut sent = 0usize;
                let mut buf = [0u8; 4096];
                loop {
                    let n = match server.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let n = match limit {
                        Some(l) if sent + n >= l => {
                            let _ = client.write_all(&buf[..l - sent]);
                            break;
                        }
                        _ => n,
                    };
                    if client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    sent += n;
                }
                let _ = client.shutdown(std::net::Shutdown::Both);
                let _ = server.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    (port, conns)
}

#[test]
fn a_dropped_connection_is_retried_and_a_lost_server_is_said() {
    if skip() {
        return;
    }
    let (env, dovecot) = world();
    let mut alice = dovecot.client("alice");
    alice.ok("CREATE Work");
    for i in 1..=300 {
        alice.append("INBOX", "", &message("INBOX", i, i % 50 == 0));
        alice.append("Work", "", &message("Work", i, false));
    }
    // One proxy for both backups (the address is the snapshots' path).
    // Backup 1: the first connection breaks in the middle of the messages,
    // the second is fine: everything is in the snapshot.
    // Backup 2: every connection breaks soon after the login: the folders
    // are kept as backup 1 had them, and said.
    let mut limits = vec![Some(300_000), None, Some(3_000)];
    limits.extend(std::iter::repeat_n(Some(1_200), 8));
    let (port, conns) = proxy(dovecot.port, limits);
    let url = format!("imap://alice@127.0.0.1:{port}?tls=none");
    let r = mail_backup(&env, &url);
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(r.summary()["files_new"], 600, "{r}");
    assert_eq!(
        conns.load(Ordering::SeqCst),
        2,
        "the broken connection was replaced once"
    );
    for i in 301..=310 {
        alice.append("INBOX", "", &message("INBOX", i, false));
    }
    let r = mail_backup(&env, &url);
    assert_eq!(r.code, Some(3), "{r}");
    let said = format!("{}{}", r.out(), r.stderr);
    assert!(said.contains("could not be backed up"), "{r}");
    assert!(said.contains("as the previous backup had it"), "{r}");
    let out = env.path("restored");
    env.ok(["restore", "latest", "--target", out.to_str().unwrap()]);
    for folder in ["INBOX", "Work"] {
        let n = std::fs::read_dir(out.join(folder)).unwrap().count();
        assert_eq!(n, 301, "{folder}: 300 messages and the record, as before");
    }
}
