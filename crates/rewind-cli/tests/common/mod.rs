//! Shared helpers of the CLI integration tests: a fresh temporary world per
//! test (HOME, XDG dirs, repository, password), running the real `rewind`
//! binary, and comparing directory trees.

#![allow(dead_code)]

pub mod server;

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The password of every test repository (except the default one).
pub const PASSWORD: &str = "correct horse battery staple";

/// Environment variables that could leak in from the caller and change what
/// the binary does.
const CLEARED: [&str; 11] = [
    "REWIND_REPOSITORY",
    "REWIND_PASSWORD",
    "REWIND_PASSWORD_FILE",
    "REWIND_PASSWORD_COMMAND",
    "REWIND_NEW_PASSWORD_FILE",
    "REWIND_TO_PASSWORD",
    "REWIND_TO_PASSWORD_FILE",
    "RUST_BACKTRACE",
    "REWIND_SERVER_TOKEN",
    "REWIND_SERVER_TOKEN_FILE",
    "REWIND_SERVE_DATA",
];

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_rewind")
}

/// What a finished command left.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub what: String,
}

impl Run {
    /// Stdout as (lossy) text.
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The last JSON line of stdout whose message_type is "summary".
    pub fn summary(&self) -> serde_json::Value {
        self.out()
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message_type"] == "summary")
            .unwrap_or_else(|| panic!("no JSON summary line in the output of {self}"))
    }

    /// Asserts the exit code.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "unexpected exit code of {self}");
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let out = self.out();
        let out: String = out.chars().take(4000).collect();
        write!(
            f,
            "`{}` (exit {:?})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what, self.code, out, self.stderr
        )
    }
}

/// A temporary world: HOME and the XDG dirs point into it; the repository
/// and password are explicit.
pub struct Env {
    pub tmp: tempfile::TempDir,
    /// Canonical path of the temporary directory.
    pub root: PathBuf,
    pub repo: PathBuf,
    pub password: String,
}

impl Env {
    /// A fresh world without a repository.
    pub fn new() -> Env {
        let tmp = tempfile::Builder::new()
            .prefix("rewind-it-")
            .tempdir()
            .expect("tempdir");
        let root = tmp.path().canonicalize().expect("canonical tempdir");
        for d in ["home", "data", "config"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        Env {
            repo: root.join("repo"),
            tmp,
            root,
            password: PASSWORD.to_string(),
        }
    }

    /// A fresh world with an initialized repository.
    pub fn with_repo() -> Env {
        let env = Env::new();
        env.ok(["init"]);
        assert!(env.repo.join("config").is_file(), "init made no config");
        env
    }

    /// A path inside the world.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    /// A command with only HOME/XDG set (no repository, no password).
    pub fn bare_cmd(&self) -> Command {
        let mut c = Command::new(bin());
        for v in CLEARED {
            c.env_remove(v);
        }
        c.env("HOME", self.root.join("home"))
            .env("XDG_DATA_HOME", self.root.join("data"))
            .env("XDG_CONFIG_HOME", self.root.join("config"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// A command with the repository and password set.
    pub fn cmd(&self) -> Command {
        let mut c = self.bare_cmd();
        c.env("REWIND_REPOSITORY", &self.repo)
            .env("REWIND_PASSWORD", &self.password);
        c
    }

    /// Runs `rewind ARGS` against the world's repository.
    pub fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = self.cmd();
        c.args(args);
        run_cmd(c)
    }

    /// Runs `rewind ARGS` and asserts exit code 0.
    #[track_caller]
    pub fn ok<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let r = self.run(args);
        assert_eq!(r.code, Some(0), "command failed: {r}");
        r
    }

    /// `rewind --json snapshots` parsed.
    #[track_caller]
    pub fn snapshots(&self) -> Vec<serde_json::Value> {
        self.snapshots_args::<[&str; 0], &str>([])
    }

    /// `rewind --json snapshots ARGS` parsed.
    #[track_caller]
    pub fn snapshots_args<I, S>(&self, args: I) -> Vec<serde_json::Value>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = self.cmd();
        c.arg("--json").arg("snapshots").args(args);
        let r = run_cmd(c);
        assert_eq!(r.code, Some(0), "snapshots failed: {r}");
        serde_json::from_slice::<Vec<serde_json::Value>>(&r.stdout)
            .unwrap_or_else(|e| panic!("snapshots --json is not a JSON list ({e}): {r}"))
    }

    /// `rewind --json backup ARGS`, asserting success; returns the summary.
    #[track_caller]
    pub fn backup<I, S>(&self, args: I) -> serde_json::Value
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = self.cmd();
        c.arg("--json").arg("backup").args(args);
        let r = run_cmd(c);
        assert_eq!(r.code, Some(0), "backup failed: {r}");
        r.summary()
    }
}

/// Runs a prepared command to its end.
pub fn run_cmd(mut c: Command) -> Run {
    let what = std::iter::once(c.get_program())
        .chain(c.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let o = c
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    Run {
        code: o.status.code(),
        stdout: o.stdout,
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        what,
    }
}

/// Where a restore of a whole snapshot puts the source path `src`
/// (snapshots hold absolute paths).
pub fn restored(target: &Path, src: &Path) -> PathBuf {
    target.join(src.strip_prefix("/").expect("absolute source path"))
}

/// `n` random bytes.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf
}

/// Writes `n` random bytes to `path` (creating its parents).
pub fn write_random(path: &Path, n: usize) -> Vec<u8> {
    let data = random_bytes(n);
    write(path, &data);
    data
}

/// Writes a file, creating its parents.
pub fn write(path: &Path, data: &[u8]) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A tree of `files` random files of `size` bytes in a few subdirectories.
pub fn random_tree(dir: &Path, files: usize, size: usize) {
    for i in 0..files {
        write_random(&dir.join(format!("d{}/f{i:04}", i % 8)), size);
    }
}

/// Runs as root?
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Is the program on PATH?
pub fn has_cmd(name: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Runs a helper program and asserts success.
#[track_caller]
pub fn sh(prog: &str, args: &[&OsStr]) {
    let o = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog}: {e}"));
    assert!(
        o.status.success(),
        "{prog} {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Pack files of a repository (paths), found by their 64-hex names.
pub fn packs(repo: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(repo.join("data")) else {
        return out;
    };
    for sub in rd.flatten() {
        let Ok(rd2) = fs::read_dir(sub.path()) else {
            continue;
        };
        for f in rd2.flatten() {
            let name = f.file_name();
            let name = name.to_string_lossy();
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                out.push(f.path());
            }
        }
    }
    out.sort();
    out
}

/// Files of one repository subdirectory (`index`, `snapshots`, `keys`).
pub fn repo_files(repo: &Path, sub: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(repo.join(sub))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

fn kind(md: &fs::Metadata) -> &'static str {
    let t = md.file_type();
    if t.is_file() {
        "file"
    } else if t.is_dir() {
        "dir"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else {
        "device"
    }
}

fn same_content(a: &Path, b: &Path) -> std::io::Result<bool> {
    let (mut fa, mut fb) = (fs::File::open(a)?, fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Compares two trees: entry names, types, sizes, contents (except for
/// files whose path relative to `a` is in `skip_content`), modes, owners,
/// mtimes (to the nanosecond) and symlink targets. Returns the differences.
pub fn diff_trees(a: &Path, b: &Path, skip_content: &[&Path]) -> Vec<String> {
    let mut out = Vec::new();
    diff_rec(a, b, Path::new(""), skip_content, &mut out);
    out
}

/// Asserts that two trees are equal (see [`diff_trees`]).
#[track_caller]
pub fn assert_trees_equal(a: &Path, b: &Path, skip_content: &[&Path]) {
    let d = diff_trees(a, b, skip_content);
    assert!(
        d.is_empty(),
        "{} and {} differ:\n  {}",
        a.display(),
        b.display(),
        d.join("\n  ")
    );
}

fn diff_rec(a: &Path, b: &Path, rel: &Path, skip: &[&Path], out: &mut Vec<String>) {
    let (ma, mb) = match (fs::symlink_metadata(a), fs::symlink_metadata(b)) {
        (Ok(x), Ok(y)) => (x, y),
        (Ok(_), Err(e)) => {
            out.push(format!("{}: missing in the copy ({e})", rel.display()));
            return;
        }
        (Err(e), _) => {
            out.push(format!("{}: missing in the original ({e})", rel.display()));
            return;
        }
    };
    let shown = rel.display();
    if kind(&ma) != kind(&mb) {
        out.push(format!("{shown}: {} vs {}", kind(&ma), kind(&mb)));
        return;
    }
    if ma.file_type().is_symlink() {
        let (ta, tb) = (fs::read_link(a).unwrap(), fs::read_link(b).unwrap());
        if ta != tb {
            out.push(format!("{shown}: link target {ta:?} vs {tb:?}"));
        }
    } else if ma.mode() != mb.mode() {
        out.push(format!("{shown}: mode {:o} vs {:o}", ma.mode(), mb.mode()));
    }
    if (ma.uid(), ma.gid()) != (mb.uid(), mb.gid()) {
        out.push(format!(
            "{shown}: owner {}:{} vs {}:{}",
            ma.uid(),
            ma.gid(),
            mb.uid(),
            mb.gid()
        ));
    }
    if (ma.mtime(), ma.mtime_nsec()) != (mb.mtime(), mb.mtime_nsec()) {
        out.push(format!(
            "{shown}: mtime {}.{:09} vs {}.{:09}",
            ma.mtime(),
            ma.mtime_nsec(),
            mb.mtime(),
            mb.mtime_nsec()
        ));
    }
    if ma.is_file() {
        if ma.len() != mb.len() {
            out.push(format!("{shown}: size {} vs {}", ma.len(), mb.len()));
        } else if !skip.contains(&rel) {
            match same_content(a, b) {
                Ok(true) => {}
                Ok(false) => out.push(format!("{shown}: content differs")),
                Err(e) => out.push(format!("{shown}: cannot compare: {e}")),
            }
        }
    }
    if ma.is_dir() {
        let names = |p: &Path| -> Vec<std::ffi::OsString> {
            let mut v: Vec<_> = fs::read_dir(p)
                .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            v.sort();
            v
        };
        let (na, nb) = (names(a), names(b));
        for n in &na {
            if !nb.contains(n) {
                out.push(format!("{}: missing in the copy", rel.join(n).display()));
            }
        }
        for n in &nb {
            if !na.contains(n) {
                out.push(format!("{}: only in the copy", rel.join(n).display()));
            }
        }
        for n in na.iter().filter(|n| nb.contains(n)) {
            diff_rec(&a.join(n), &b.join(n), &rel.join(n), skip, out);
        }
    }
}

/// Sets the mtime of a file or directory (following symlinks).
pub fn set_mtime(path: &Path, secs: u64, nanos: u32) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
    let f = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
}

/// Sets the mode bits of a path.
pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Number of snapshot files in the repository directory.
pub fn snapshot_files(repo: &Path) -> usize {
    repo_files(repo, "snapshots")
        .iter()
        .filter(|p| {
            p.file_name()
                .map(|n| n.len() == 64 && !n.to_string_lossy().starts_with('.'))
                .unwrap_or(false)
        })
        .count()
}

/// A world whose repository lives elsewhere (S3, SFTP): its location, the
/// environment and arguments every command needs to reach it.
pub struct RemoteRepo {
    pub env: Env,
    pub url: String,
    pub vars: Vec<(String, String)>,
    pub args: Vec<String>,
}

impl RemoteRepo {
    /// A command for the repository at `url` (same password, same reach).
    pub fn cmd_at(&self, url: &str) -> Command {
        let mut c = self.env.cmd();
        c.env("REWIND_REPOSITORY", url).args(&self.args);
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }

    /// Runs `rewind ARGS` against the remote repository.
    pub fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = self.cmd_at(&self.url);
        c.args(args);
        run_cmd(c)
    }

    /// Runs `rewind ARGS` and asserts exit code 0.
    #[track_caller]
    pub fn ok<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let r = self.run(args);
        assert_eq!(r.code, Some(0), "command failed: {r}");
        r
    }

    /// Restores the latest snapshot to `name` and compares it with `src`.
    pub fn restore_matches(&self, src: &Path, name: &str) {
        let t = self.env.path(name);
        self.ok([
            "restore".as_ref(),
            "latest".as_ref(),
            "--target".as_ref(),
            t.as_os_str(),
        ]);
        assert_trees_equal(src, &restored(&t, src), &[]);
        fs::remove_dir_all(&t).unwrap();
    }
}

/// Sends `sig` to a child process.
pub fn signal(child: &std::process::Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

/// Waits up to `secs` for a child to exit and gives its exit code; kills it
/// and fails the test when it does not.
#[track_caller]
pub fn wait_exit(child: &mut std::process::Child, secs: u64) -> Option<i32> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < until {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("the process did not exit within {secs} s");
}

/// Sets an extended attribute with `setfattr` (Debian's attr); false
/// where that is not possible.
pub fn set_xattr(path: &Path, name: &str, value: &str) -> bool {
    has_cmd("setfattr")
        && Command::new("setfattr")
            .args(["-n", name, "-v", value])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success())
}

/// An extended attribute's value, read with `getfattr`.
pub fn get_xattr(path: &Path, name: &str) -> Option<String> {
    let o = Command::new("getfattr")
        .args(["--only-values", "-n", name])
        .arg(path)
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}
