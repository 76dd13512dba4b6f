//! Cloud drives and buckets through rclone as a backup source:
//! `rewind backup rclone:REMOTE:PATH` (DESIGN §18b).
//!
//! The user's rclone configuration reaches the 70-odd services rclone
//! speaks. The listing is `rclone lsjson -R` (with the service's hashes
//! where it has them cheaply); the content is streamed from an
//! `rclone serve http` on a loopback port of this backup's own, behind a
//! random password, straight into the chunker: nothing is staged on disk.
//! A file whose size, modification time and (where both have one) hash
//! equal the parent snapshot's is not read again.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::Deserialize;

use rewind_core::archiver::{source_node, TreeSource};
use rewind_core::chunker::chunk_stream;
use rewind_core::format::pack::BlobKind;
use rewind_core::format::snapshot::BackupSummary;
use rewind_core::format::tree::{Node, NodeKind, Time, Tree, Xattr};
use rewind_core::id::BlobId;
use rewind_core::progress::Progress;
use rewind_core::repository::{BlobWriter, Repository};
use rewind_core::{Error, Result};

/// The extended attribute prefix of the service's hashes.
const HASH_XATTR: &str = "user.rclone.hash.";

/// Whether a backup source names an rclone remote.
pub fn is_rclone(source: &str) -> bool {
    source.starts_with("rclone:")
}

/// `REMOTE:PATH` as the snapshot names it: a remote's parameters
/// (`:s3,access_key_id=…,secret_access_key=…:`, or `name,key=…:` after a
/// configured remote; values may be quoted and hold `:` or `,`) may hold
/// credentials and are left out.
pub fn location(remote: &str) -> String {
    let (colon, rest) = match remote.strip_prefix(':') {
        Some(r) => (":", r),
        None => ("", remote),
    };
    // The remote's name, then its parameters up to the first `:` outside
    // quotes; the path after it.
    let name_end = rest.find([',', ':']).unwrap_or(rest.len());
    let name = &rest[..name_end];
    let mut quote: Option<char> = None;
    let mut path_at = None;
    for (i, c) in rest[name_end..]
        .char_indices()
        .map(|(i, c)| (name_end + i, c))
    {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, ':') => {
                path_at = Some(i + 1);
                break;
            }
            _ => {}
        }
    }
    match path_at {
        Some(at) => format!("rclone:{colon}{name}:{}", &rest[at..]),
        // No path: nothing of the parameters either.
        None => format!("rclone:{colon}{name}:"),
    }
}

/// rclone's words with the remote as given (parameters and all) replaced
/// by its [`location`], and any `…secret…=VALUE`, `…pass…=VALUE`,
/// `…key…=VALUE` or `…token…=VALUE` blanked.
fn scrub(text: &str, remote: &str) -> String {
    let shown = location(remote);
    let text = text.replace(remote, shown.trim_start_matches("rclone:"));
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(eq) = rest.find('=') {
        let key_start = rest[..eq]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .map_or(0, |i| i + 1);
        let key = rest[key_start..eq].to_ascii_lowercase();
        out.push_str(&rest[..=eq]);
        rest = &rest[eq + 1..];
        if ["secret", "pass", "key", "token"]
            .iter()
            .any(|k| key.contains(k))
        {
            let end = rest
                .find(|c: char| c == ',' || c == ':' || c == '"' || c == '\'' || c.is_whitespace())
                .unwrap_or(rest.len());
            out.push_str("***");
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

/// One entry of `rclone lsjson`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    path: String,
    size: i64,
    mod_time: String,
    is_dir: bool,
    #[serde(default)]
    hashes: BTreeMap<String, String>,
}

fn rclone() -> Command {
    let mut c = Command::new("rclone");
    c.stdin(Stdio::null());
    c
}

/// Runs rclone to its end; its stdout, or its last error line said (with
/// the remote's secrets taken out, see [`scrub`]).
fn run(args: &[&str], what: &str, remote: &str) -> anyhow::Result<Vec<u8>> {
    let out = rclone().args(args).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow!("rclone is not installed (it reaches the cloud drives): install it, e.g. `apt install rclone`")
        } else {
            anyhow!("cannot run rclone: {e}")
        }
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty() && !l.contains("Config file"))
            .unwrap_or("")
            .trim()
            .to_string();
        // rclone's log lines begin with a date and time: not news here.
        let last = match last.get(..20) {
            Some(stamp) if stamp.as_bytes()[4] == b'/' && stamp.as_bytes()[13] == b':' => {
                last[20..].to_string()
            }
            _ => last,
        };
        bail!("rclone could not {what}: {}", scrub(&last, remote));
    }
    Ok(out.stdout)
}

/// The rclone source of a backup.
pub struct RcloneSource {
    remote: String,
    entries: Vec<Entry>,
    /// Kept for its `Drop`: the content server lives as long as the source.
    _server: Server,
    base: String,
    password: String,
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
}

/// A file as read: its chunks and its size.
type ReadFile = (Vec<BlobId>, u64);

/// Files read from the content server at once.
const READERS: usize = 4;

/// A file to read.
struct Job<'e> {
    dirs: Vec<Vec<u8>>,
    name: Vec<u8>,
    entry: &'e Entry,
    hashes: Vec<Xattr>,
    mtime: Time,
}

impl RcloneSource {
    /// Reads one file into the repository: its chunks and size, or `None`
    /// (said) where the remote side failed.
    fn read_one(
        &self,
        j: &Job<'_>,
        params: &rewind_core::crypto::ChunkerParams,
        writer: &BlobWriter<'_>,
        progress: &Progress,
    ) -> Result<Option<ReadFile>> {
        progress.cancel.check()?;
        let path = Path::new(&j.entry.path);
        let mut content = Vec::new();
        let read = self.open(&j.entry.path).and_then(|mut body| {
            chunk_stream(params, &mut body, |chunk: &[u8]| -> Result<()> {
                progress.cancel.check()?;
                content.push(writer.add_blob(BlobKind::Data, chunk)?.0);
                progress
                    .done_bytes
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                Ok(())
            })
        });
        let size = match read {
            Ok(n) => n,
            Err(e) if from_remote(&e) => {
                progress.warn(path, format!("cannot read: {e}"));
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if j.entry.size >= 0 && size != j.entry.size as u64 {
            progress.warn(
                path,
                "changed while being read; the snapshot holds what was read",
            );
        }
        progress.done_files.fetch_add(1, Ordering::Relaxed);
        Ok(Some((content, size)))
    }
}

/// The content server, stopped when dropped (whatever the way out).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port (bound and let go; rclone binds it next).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl RcloneSource {
    /// Lists the remote and starts the content server, so that a missing
    /// rclone, an unknown remote or a refused credential is said before
    /// the backup begins.
    pub fn start(spec: &str) -> anyhow::Result<RcloneSource> {
        let remote = spec
            .strip_prefix("rclone:")
            .filter(|r| r.contains(':'))
            .ok_or_else(|| anyhow!("{spec:?}: write rclone:REMOTE:PATH (a remote of `rclone config`, e.g. rclone:gdrive:Documents)"))?
            .to_string();
        let features = run(
            &["backend", "features", &remote],
            &format!("use the remote {}", location(&remote)),
            &remote,
        )?;
        let features: serde_json::Value =
            serde_json::from_slice(&features).context("rclone backend features printed no JSON")?;
        // Hashes the service keeps (not ones rclone would compute by
        // reading every file, as for local disks).
        let slow = features["Features"]["SlowHash"].as_bool().unwrap_or(true);
        let mut args = vec!["lsjson", "-R", "--no-mimetype"];
        if !slow {
            args.push("--hash");
        }
        args.push(&remote);
        let listing = run(&args, &format!("list {}", location(&remote)), &remote)?;
        let entries: Vec<Entry> =
            serde_json::from_slice(&listing).context("rclone lsjson printed no JSON list")?;
        let password = rewind_server::ui::random_token();
        let mut last = anyhow!("rclone serve http did not start");
        for _ in 0..5 {
            let port = free_port()?;
            // The password in the environment, not on the command line
            // (where `ps` shows it to everyone).
            let mut server = Server(
                rclone()
                    .args(["serve", "http", &remote, "--read-only", "--addr"])
                    .arg(format!("127.0.0.1:{port}"))
                    .env("RCLONE_USER", "rewind")
                    .env("RCLONE_PASS", &password)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("cannot start rclone serve http")?,
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            let up = loop {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break true;
                }
                if server.0.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(30));
            };
            if up {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .context("start the HTTP client's runtime")?;
                let client = reqwest::Client::builder()
                    .read_timeout(Duration::from_secs(300))
                    .build()
                    .context("set up the HTTP client")?;
                return Ok(RcloneSource {
                    remote,
                    entries,
                    _server: server,
                    base: format!("http://127.0.0.1:{port}/"),
                    password,
                    runtime,
                    client,
                });
            }
            drop(server);
            last = anyhow!("rclone serve http did not start on port {port}");
        }
        Err(last)
    }

    /// A reader of one file's content from the content server.
    fn open(&self, path: &str) -> Result<BodyReader<'_>> {
        let url = format!(
            "{}{}",
            self.base,
            percent_encoding::utf8_percent_encode(path, PATH_SET)
        );
        // The request is made inside the runtime (its timeouts need it).
        let resp = self
            .runtime
            .block_on(async {
                self.client
                    .get(&url)
                    .basic_auth("rewind", Some(&self.password))
                    .send()
                    .await
            })
            .map_err(|e| read_error(path, e))?;
        if !resp.status().is_success() {
            return Err(read_error(path, format!("HTTP {}", resp.status())));
        }
        Ok(BodyReader {
            runtime: &self.runtime,
            resp,
            buf: bytes::Bytes::new(),
        })
    }
}

/// Characters of a path sent as they are: unreserved ones and `/`.
const PATH_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// A failure of the remote side (rclone, the service, the connection), as
/// opposed to the repository's.
#[derive(Debug)]
struct RemoteError(String);

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RemoteError {}

fn remote_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(RemoteError(e.to_string()))
}

fn read_error(path: &str, e: impl std::fmt::Display) -> Error {
    Error::io(format!("read {path} through rclone"), remote_error(e))
}

/// Whether an error is the remote side's: the file is then left out and
/// named, as an unreadable local file is; the repository's errors stop the
/// backup.
fn from_remote(e: &Error) -> bool {
    matches!(e, Error::Io { error, .. } if error.get_ref().is_some_and(|i| i.is::<RemoteError>()))
}

/// A response body as a `Read`.
struct BodyReader<'a> {
    runtime: &'a tokio::runtime::Runtime,
    resp: reqwest::Response,
    buf: bytes::Bytes,
}

impl Read for BodyReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            let resp = &mut self.resp;
            match self.runtime.block_on(async { resp.chunk().await }) {
                Ok(Some(b)) => self.buf = b,
                Ok(None) => return Ok(0),
                Err(e) => return Err(remote_error(e)),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        let _ = self.buf.split_to(n);
        Ok(n)
    }
}

/// A listed time; `None` where rclone's text is not one.
fn time_of(s: &str) -> Option<Time> {
    let t = s.parse::<jiff::Timestamp>().ok()?;
    let (secs, nanos) = (t.as_second(), t.subsec_nanosecond());
    // Before 1970 the fraction is negative: borrow a second.
    Some(if nanos < 0 {
        Time {
            secs: secs - 1,
            nanos: (nanos + 1_000_000_000) as u32,
        }
    } else {
        Time {
            secs,
            nanos: nanos as u32,
        }
    })
}

fn hash_xattrs(hashes: &BTreeMap<String, String>) -> Vec<Xattr> {
    hashes
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| Xattr {
            name: format!("{HASH_XATTR}{k}").into_bytes(),
            value: v.as_bytes().to_vec(),
        })
        .collect()
}

/// The parent snapshot's file at `path` is this entry: same size and
/// modification time, and the same hash where both have one.
fn same(old: &Node, e: &Entry, hashes: &[Xattr]) -> bool {
    let size_ok = e.size < 0 || old.size == e.size as u64;
    let common: Vec<_> = hashes
        .iter()
        .filter_map(|h| old.xattrs.iter().find(|o| o.name == h.name).map(|o| (o, h)))
        .collect();
    old.is_file()
        && size_ok
        && time_of(&e.mod_time).is_some_and(|t| old.mtime == t)
        && common.iter().all(|(o, h)| o.value == h.value)
}

/// A directory being built.
#[derive(Default)]
struct Dir {
    files: Vec<Node>,
    subdirs: BTreeMap<Vec<u8>, Dir>,
    mtime: Time,
}

impl Dir {
    fn at(&mut self, dirs: &[&[u8]]) -> &mut Dir {
        dirs.iter()
            .fold(self, |d, name| d.subdirs.entry(name.to_vec()).or_default())
    }

    fn write(self, writer: &BlobWriter<'_>, summary: &mut BackupSummary) -> Result<BlobId> {
        let mut nodes = self.files;
        for (name, sub) in self.subdirs {
            // A folder listed after a file of its name: the file was kept.
            if nodes.iter().any(|n| n.name == name) {
                summary.errors += 1;
                continue;
            }
            let mtime = sub.mtime;
            let subtree = sub.write(writer, summary)?;
            summary.dirs += 1;
            nodes.push(source_node(
                &name,
                NodeKind::Dir { subtree },
                0o040755,
                0,
                mtime,
            ));
        }
        Ok(writer
            .add_blob(BlobKind::Tree, &Tree::new(nodes).encode())?
            .0)
    }
}

/// The parent snapshot's trees, read once each, by folder path.
struct ParentTrees<'a> {
    repo: &'a Repository,
    trees: HashMap<PathBuf, Option<Tree>>,
}

impl ParentTrees<'_> {
    fn file(&mut self, path: &Path) -> Option<Node> {
        let dir = path.parent().unwrap_or(Path::new(""));
        let name = path.file_name()?;
        self.dir(dir)?
            .find(std::os::unix::ffi::OsStrExt::as_bytes(name))
            .cloned()
    }

    fn dir(&mut self, dir: &Path) -> Option<&Tree> {
        if !self.trees.contains_key(dir) {
            let found = match dir.parent() {
                None => None,
                Some(up) => {
                    let name = dir.file_name().map(std::os::unix::ffi::OsStrExt::as_bytes);
                    match (self.dir(up).cloned(), name) {
                        (Some(t), Some(name)) => match t.find(name).map(|n| &n.kind) {
                            Some(NodeKind::Dir { subtree }) => self.repo.read_tree(subtree).ok(),
                            _ => None,
                        },
                        _ => None,
                    }
                }
            };
            self.trees.insert(dir.to_path_buf(), found);
        }
        self.trees.get(dir).and_then(|t| t.as_ref())
    }
}

impl TreeSource for RcloneSource {
    fn paths(&self) -> Vec<String> {
        vec![location(&self.remote)]
    }

    fn store(
        &mut self,
        repo: &Repository,
        writer: &BlobWriter<'_>,
        parent_root: Option<&Tree>,
        summary: &mut BackupSummary,
        progress: &Progress,
    ) -> Result<BlobId> {
        let mut parent = ParentTrees {
            repo,
            trees: HashMap::new(),
        };
        parent.trees.insert(PathBuf::from(""), parent_root.cloned());
        let mut root = Dir::default();
        let params = repo.crypto().chunker();
        let entries = std::mem::take(&mut self.entries);
        progress.total_files.store(
            entries.iter().filter(|e| !e.is_dir).count() as u64,
            Ordering::Relaxed,
        );
        // Files to read, in listing order; read several at once below.
        let mut jobs: Vec<Job> = Vec::new();
        let mut pending = std::collections::HashSet::new();
        for e in &entries {
            progress.cancel.check()?;
            let path = Path::new(&e.path);
            // Every part of the path a plain name rewind can store (no `..`,
            // no root, no empty part).
            let parts: Option<Vec<&[u8]>> = path
                .components()
                .map(|c| match c {
                    std::path::Component::Normal(n) => {
                        let b = std::os::unix::ffi::OsStrExt::as_bytes(n);
                        rewind_core::format::tree::validate_name(b).ok().map(|()| b)
                    }
                    _ => None,
                })
                .collect();
            let Some((name, dirs)) = parts.as_deref().and_then(|p| p.split_last()) else {
                progress.warn(path, "a name rewind cannot store; left out");
                summary.errors += 1;
                continue;
            };
            let name: &[u8] = name;
            let Some(mtime) = time_of(&e.mod_time) else {
                progress.warn(
                    path,
                    format!("rclone gave no readable time ({:?}); left out", e.mod_time),
                );
                summary.errors += 1;
                continue;
            };
            if e.is_dir {
                let mut all = dirs.to_vec();
                all.push(name);
                root.at(&all).mtime = mtime;
                continue;
            }
            // Two entries of one name (Google Drive allows it; S3 has `a`
            // beside `a/`): the first is kept.
            {
                let here = root.at(dirs);
                if here.subdirs.contains_key(name)
                    || here.files.iter().any(|n| n.name == name)
                    || !pending.insert(e.path.as_str())
                {
                    progress.warn(
                        path,
                        "another entry has this name in its folder; this one is left out",
                    );
                    summary.errors += 1;
                    continue;
                }
            }
            let hashes = hash_xattrs(&e.hashes);
            if let Some(old) = parent.file(path).filter(|old| same(old, e, &hashes)) {
                summary.files_unchanged += 1;
                summary.total_bytes += old.size;
                root.at(dirs).files.push(old);
                continue;
            }
            jobs.push(Job {
                dirs: dirs.iter().map(|d| d.to_vec()).collect(),
                name: name.to_vec(),
                entry: e,
                hashes,
                mtime,
            });
        }
        // A few readers at once: one waiting for the service leaves the
        // others (and the cores) busy.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(READERS)
            .build()
            .map_err(|e| Error::io("start reader threads", std::io::Error::other(e)))?;
        let read: Vec<Result<Option<ReadFile>>> = pool.install(|| {
            use rayon::prelude::*;
            jobs.par_iter()
                .map(|j| self.read_one(j, &params, writer, progress))
                .collect()
        });
        for (j, r) in jobs.into_iter().zip(read) {
            let Some((content, size)) = r? else {
                summary.errors += 1;
                continue;
            };
            let mut n = source_node(
                &j.name,
                NodeKind::File {
                    content,
                    holes: Vec::new(),
                },
                0o100644,
                size,
                j.mtime,
            );
            n.xattrs = j.hashes;
            summary.files_new += 1;
            summary.bytes_read += size;
            summary.total_bytes += size;
            let dirs: Vec<&[u8]> = j.dirs.iter().map(Vec::as_slice).collect();
            root.at(&dirs).files.push(n);
        }
        progress.scan_done.store(true, Ordering::SeqCst);
        root.write(writer, summary)
    }
}

/// What a restore to a remote did.
#[derive(Debug, Default)]
pub struct Uploaded {
    pub files: u64,
    pub bytes: u64,
    pub dirs: u64,
}

/// Restores the files below `tree` to `REMOTE:PATH` (`to` without the
/// `rclone:` prefix): each streamed to `rclone rcat`, then its modification
/// time set (where the service keeps one). Nothing is staged on disk.
pub fn restore_to(repo: &Repository, tree: &BlobId, to: &str) -> anyhow::Result<Uploaded> {
    let remote = to
        .strip_prefix("rclone:")
        .filter(|r| r.contains(':'))
        .ok_or_else(|| anyhow!("--to: write rclone:REMOTE:PATH"))?;
    let shown = location(remote);
    run(
        &["backend", "features", remote],
        &format!("use the remote {shown}"),
        remote,
    )?;
    let mut done = Uploaded::default();
    // `remote:` is the remote's own top (its home on SFTP), not `remote:/`.
    let base = remote.trim_end_matches('/');
    let join = |rel: &str| {
        if base.ends_with(':') {
            format!("{base}{rel}")
        } else {
            format!("{base}/{rel}")
        }
    };
    let mut stack = vec![(*tree, String::new())];
    while let Some((id, rel)) = stack.pop() {
        for n in &repo.read_tree(&id)?.nodes {
            let Ok(name) = std::str::from_utf8(&n.name) else {
                bail!(
                    "{rel}/{}: a name that is not UTF-8 cannot be written through rclone; restore to a folder instead",
                    String::from_utf8_lossy(&n.name)
                );
            };
            let path = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            match &n.kind {
                NodeKind::Dir { subtree } => {
                    done.dirs += 1;
                    stack.push((*subtree, path));
                }
                NodeKind::File { .. } => {
                    upload(repo, n, &join(&path), &path, remote)?;
                    done.files += 1;
                    done.bytes += n.size;
                }
                _ => {}
            }
        }
    }
    Ok(done)
}

/// One file into `rclone rcat`; a failed read kills rcat before it sees an
/// end, so that no cut-off file is left as if whole.
fn upload(repo: &Repository, n: &Node, dest: &str, path: &str, remote: &str) -> anyhow::Result<()> {
    let mut child = Server(
        rclone()
            .args(["rcat", "--size", &n.size.to_string(), dest])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run rclone rcat")?,
    );
    let mut stdin = child.0.stdin.take().expect("piped");
    let mut stderr = child.0.stderr.take().expect("piped");
    // Read rcat's words as they come, so that it never blocks on them.
    let said = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let copied = rewind_core::browse::FileReader::new(repo, n)
        .map_err(anyhow::Error::from)
        .and_then(|mut r| std::io::copy(&mut r, &mut stdin).map_err(anyhow::Error::from));
    if let Err(e) = copied {
        let _ = child.0.kill();
        return Err(e.context(format!("send {path} to rclone")));
    }
    drop(stdin);
    let status = child.0.wait().context("rclone rcat")?;
    let said = said.join().unwrap_or_default();
    if !status.success() {
        bail!(
            "rclone could not write {path}: {}",
            scrub(said.lines().last().unwrap_or(""), remote)
        );
    }
    if let Ok(t) = jiff::Timestamp::new(n.mtime.secs, n.mtime.nanos as i32) {
        // A service without modification times says no: fine.
        let stamp = t.strftime("%Y-%m-%dT%H:%M:%S").to_string();
        let _ = run(
            &["touch", "--no-create", "-t", &stamp, dest],
            "set a time",
            remote,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::location;

    #[test]
    fn credentials_never_reach_the_snapshot_path() {
        assert_eq!(location("gdrive:Documents/x"), "rclone:gdrive:Documents/x");
        assert_eq!(location(":local:/srv/data"), "rclone::local:/srv/data");
        assert_eq!(
            location(":s3,access_key_id=AK,secret_access_key=SECRET:bucket/p"),
            "rclone::s3:bucket/p"
        );
        assert_eq!(
            location(":webdav,url='http://h:8080/a,b',user=me,pass=SECRET:"),
            "rclone::webdav:"
        );
        assert_eq!(
            location(r#":webdav,url="http://h:1",pass='x:y':dir"#),
            "rclone::webdav:dir"
        );
        assert_eq!(location(":s3,secret=unterminated'"), "rclone::s3:");
        assert_eq!(
            location("myS3,secret_access_key=X:bucket"),
            "rclone:myS3:bucket"
        );
        let remote = ":s3,secret_access_key=TOPSECRET:b";
        let said =
            format!("Failed to create file system for \"{remote}\": 403, token=abc pass=xyz");
        let s = super::scrub(&said, remote);
        assert!(
            !s.contains("TOPSECRET") && !s.contains("abc") && !s.contains("xyz"),
            "{s}"
        );
        assert!(s.contains(":s3:b"), "{s}");
    }
}
