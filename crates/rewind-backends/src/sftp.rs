//! Repositories over SFTP, through the system's `ssh` client.
//!
//! Like restic, rewind runs `ssh … -s HOST sftp` and speaks SFTP over its
//! stdin and stdout (openssh-sftp-client), so everything the user set up for
//! ssh applies: `~/.ssh/config`, keys, the agent, `known_hosts`, jump hosts.
//! Password and host-key prompts go to the terminal, as with ssh itself.
//!
//! The layout is the local one (DESIGN §2) under the remote path. A write goes
//! to a temporary file `.NAME.tmp-RANDOM` beside its final name, is fsynced
//! (the `fsync@openssh.com` extension) and hard-linked to its name
//! (`hardlink@openssh.com`), which fails if the name exists: write-if-absent,
//! never an overwrite (W4), and a crash leaves either no file or the whole
//! file. A lost connection is reopened and the request retried by the core's
//! retry policy, up to four attempts over about 10 s; SFTP errors (no such
//! file, permission denied) and the process's first connection, if it
//! fails (wrong host, key or host key), are not retried.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::{pin, Pin};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_core::Stream;
use openssh_sftp_client::error::{Error as SftpError, SftpErrorKind};
use openssh_sftp_client::{Sftp, SftpOptions};
use rewind_core::backend::retry::{Failure, Retry};
use rewind_core::backend::{Backend, FileInfo, FileType, WriteOutcome};
use rewind_core::{Error, Result};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::packcache::{PackCache, SMALL_READ};
use crate::Options;

/// Where an SFTP repository is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SftpLocation {
    /// The login name, if given (else ssh's default).
    pub user: Option<String>,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// The port, if given (else ssh's default).
    pub port: Option<u16>,
    /// The repository directory: absolute, or relative to the login directory.
    pub path: String,
}

impl SftpLocation {
    /// Parses `[//][user@]host[:port]/path` (absolute path) or
    /// `[user@]host:path` (scp style; relative to the home directory unless
    /// it starts with `/`).
    pub fn parse(s: &str) -> Result<SftpLocation> {
        let bad = |why: &str| {
            Error::InvalidInput(format!(
                "repository sftp:{s}: {why}; write sftp:[user@]host[:port]/absolute/path or sftp:[user@]host:relative/path"
            ))
        };
        let rest = s.strip_prefix("//").unwrap_or(s);
        let (user, rest) = match rest.split_once('@') {
            Some((u, r)) if !u.contains('/') => (Some(u.to_string()), r),
            _ => (None, rest),
        };
        if user.as_deref() == Some("") {
            return Err(bad("empty user name"));
        }
        // Host: [v6] or up to the first ':' or '/'.
        let (host, rest) = if let Some(r) = rest.strip_prefix('[') {
            let (h, r) = r
                .split_once(']')
                .ok_or_else(|| bad("no ']' after the IPv6 address"))?;
            (h.to_string(), r)
        } else {
            let end = rest.find([':', '/']).unwrap_or(rest.len());
            (rest[..end].to_string(), &rest[end..])
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if host.starts_with('-') || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("invalid host name"));
        }
        let (port, path) = if let Some(r) = rest.strip_prefix(':') {
            let digits = r.find('/').map_or(r, |i| &r[..i]);
            if !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && r.len() > digits.len()
            {
                let port = digits
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad("the port must be from 1 to 65535"))?;
                (Some(port), &r[digits.len()..])
            } else {
                (None, r)
            }
        } else {
            (None, rest)
        };
        let path = path.trim_end_matches('/');
        let path = if path.is_empty() && rest.starts_with("/") {
            "/"
        } else {
            path
        };
        if path.is_empty() {
            return Err(bad("no path"));
        }
        if path.contains('\0') {
            return Err(bad("NUL in the path"));
        }
        Ok(SftpLocation {
            user,
            host,
            port,
            path: path.to_string(),
        })
    }
}

impl std::fmt::Display for SftpLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sftp:")?;
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        match (self.port, self.path.starts_with('/')) {
            (Some(p), true) => write!(f, ":{p}{}", self.path),
            // (parse never gives a port with a relative path)
            (Some(p), false) => write!(f, ":{p}/{}", self.path),
            (None, true) => write!(f, "{}", self.path),
            (None, false) => write!(f, ":{}", self.path),
        }
    }
}

/// One running `ssh` and the SFTP session over it.
struct Session {
    sftp: Arc<Sftp>,
    child: tokio::process::Child,
    /// What ssh printed on stderr (the tail), for error messages.
    stderr: Arc<Mutex<String>>,
}

/// A repository on an SFTP server.
pub struct SftpBackend {
    location: SftpLocation,
    /// The ssh command line up to (not including) `-s HOST sftp`.
    command: Vec<String>,
    connections: usize,
    session: Mutex<Option<Arc<Session>>>,
    /// Set by the first session: a connection that fails before it (wrong
    /// host, user, key or host key) is not retried.
    connected: AtomicBool,
    cache: PackCache,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for SftpBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SftpBackend")
            .field("location", &self.location.to_string())
            .finish()
    }
}

/// How a request is retried when the connection breaks: four attempts,
/// 0.5 s, 2 and 8 apart (about 10 s in all, less the jitter).
const RETRY: Retry = Retry::new(4, Duration::from_millis(500), 4);

/// Why an attempt failed.
enum Broken {
    /// No session: ssh or the SFTP handshake failed.
    Connect(Error),
    /// The request failed on this session.
    Request(SftpError, Arc<Session>),
}

fn is_name(t: FileType, name: &str) -> bool {
    if t == FileType::Config {
        return name == "config";
    }
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether the error means the connection is gone (reconnect and retry)
/// rather than an answer from the server.
fn is_connection_error(e: &SftpError) -> bool {
    !matches!(
        e,
        SftpError::SftpError(..) | SftpError::UnsupportedExtension(_)
    )
}

fn no_such_file(e: &SftpError) -> bool {
    matches!(e, SftpError::SftpError(SftpErrorKind::NoSuchFile, _))
}

/// The next item of a stream (futures-core has no combinators).
async fn next<S: Stream>(mut s: Pin<&mut S>) -> Option<S::Item> {
    std::future::poll_fn(|cx| s.as_mut().poll_next(cx)).await
}

impl SftpBackend {
    /// Prepares the backend; ssh is started by the first operation.
    ///
    /// Options: `sftp.command` (the ssh program and its arguments, split at
    /// spaces; default `ssh`), `sftp.args` (extra arguments for ssh, split at
    /// spaces, e.g. `-i KEY -o UserKnownHostsFile=FILE`), `sftp.connections`
    /// (requests in flight, default 4).
    pub fn open(location: &SftpLocation, options: &Options) -> Result<SftpBackend> {
        let split = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        let mut command = options
            .get("sftp.command")
            .map(|c| split(c))
            .unwrap_or_else(|| vec!["ssh".to_string()]);
        if command.is_empty() {
            return Err(Error::InvalidInput(
                "sftp.command is empty; give the ssh program, e.g. -o sftp.command=ssh".into(),
            ));
        }
        if let Some(a) = options.get("sftp.args") {
            command.extend(split(a));
        }
        if let Some(p) = location.port {
            command.extend(["-p".to_string(), p.to_string()]);
        }
        if let Some(u) = &location.user {
            command.extend(["-l".to_string(), u.clone()]);
        }
        // Notice a dead server within two minutes; the user's -o options
        // above come first and win.
        for o in [
            "ServerAliveInterval=30",
            "ServerAliveCountMax=4",
            "ConnectTimeout=30",
        ] {
            command.extend(["-o".to_string(), o.to_string()]);
        }
        let connections = match options.get("sftp.connections") {
            Some(c) => c
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| {
                    Error::InvalidInput(format!("sftp.connections={c}: give a number from 1 to 64"))
                })?,
            None => 4,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rewind-sftp")
            .enable_all()
            .build()
            .map_err(|e| Error::io("start the SFTP client runtime", e))?;
        Ok(SftpBackend {
            location: location.clone(),
            command,
            connections,
            session: Mutex::new(None),
            connected: AtomicBool::new(false),
            cache: PackCache::new(2 * connections + 2),
            runtime,
        })
    }

    fn path(&self, t: FileType, name: &str) -> Result<PathBuf> {
        if !is_name(t, name) {
            return Err(Error::InvalidInput(format!(
                "{} name {name:?} is not 64 hex digits",
                t.what()
            )));
        }
        let root = Path::new(&self.location.path);
        Ok(match t {
            FileType::Config => root.join("config"),
            FileType::Pack => root.join("data").join(&name[..2]).join(name),
            _ => root.join(t.dir()).join(name),
        })
    }

    /// Starts ssh and opens an SFTP session.
    async fn connect(&self) -> std::result::Result<Session, Error> {
        let mut cmd = tokio::process::Command::new(&self.command[0]);
        cmd.args(&self.command[1..])
            .args(["-s", "--", &self.location.host, "sftp"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            Error::io(
                format!("start {:?} for {}", self.command[0], self.location),
                io::Error::new(
                    e.kind(),
                    format!("{e} (is OpenSSH's ssh client installed? set another with -o sftp.command=...)"),
                ),
            )
        })?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut err_pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let mut s = sink.lock().expect("ssh stderr");
                s.push_str(&String::from_utf8_lossy(&buf[..n]));
                if s.len() > 4096 {
                    let cut = s.len() - 2048;
                    let cut = (cut..s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(0);
                    s.drain(..cut);
                }
            }
        });
        let options = SftpOptions::new()
            .max_pending_requests(std::num::NonZeroU16::new(64).expect("nonzero"));
        match Sftp::new(stdin, stdout, options).await {
            Ok(sftp) => Ok(Session {
                sftp: Arc::new(sftp),
                child,
                stderr,
            }),
            Err(e) => {
                // ssh has exited or will: wait a moment for its message.
                let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                let said = stderr.lock().expect("ssh stderr").trim().to_string();
                let status = match status {
                    Ok(Ok(s)) => format!("ssh exited with {s}"),
                    _ => format!("the SFTP handshake failed: {e}"),
                };
                let said = if said.is_empty() {
                    String::new()
                } else {
                    format!("; ssh said: {said}")
                };
                Err(Error::io(
                    format!("connect to {}", self.location),
                    io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        format!(
                            "{status}{said} (check the host, user, key and that the server runs SFTP; pass ssh arguments with -o sftp.args=...)"
                        ),
                    ),
                ))
            }
        }
    }

    fn session(&self) -> Result<Arc<Session>> {
        let mut guard = self.session.lock().expect("sftp session");
        if let Some(s) = guard.as_ref() {
            return Ok(s.clone());
        }
        let s = Arc::new(self.runtime.block_on(self.connect())?);
        self.connected.store(true, Ordering::Relaxed);
        *guard = Some(s.clone());
        Ok(s)
    }

    /// Drops a broken session (unless another thread already replaced it).
    fn discard(&self, broken: &Arc<Session>) {
        let mut guard = self.session.lock().expect("sftp session");
        if guard.as_ref().is_some_and(|s| Arc::ptr_eq(s, broken)) {
            *guard = None;
        }
    }

    /// Runs `op` on the session, reconnecting and retrying with [`RETRY`]
    /// when the connection breaks. `what` and `path` name the operation in
    /// errors.
    fn run<T, F, Fut>(&self, what: &str, path: &Path, op: F) -> Result<T>
    where
        F: Fn(Arc<Sftp>) -> Fut,
        Fut: Future<Output = std::result::Result<T, SftpError>>,
    {
        let result = RETRY.run(|_| {
            // The first connection of the process fails fast (a wrong host
            // or key is not transient); reconnecting after a break is
            // retried like the request, as the server may be restarting.
            let session = self.session().map_err(|e| {
                Failure::transient_if(self.connected.load(Ordering::Relaxed), Broken::Connect(e))
            })?;
            self.runtime
                .block_on(op(session.sftp.clone()))
                .map_err(|e| {
                    // SFTP errors (no such file, permission denied) are
                    // answers: not retried.
                    let transient = is_connection_error(&e);
                    if transient {
                        self.discard(&session);
                    }
                    Failure::transient_if(transient, Broken::Request(e, session))
                })
        });
        result.map_err(|f| match f.error {
            Broken::Connect(e) => e,
            Broken::Request(e, session) => self.err(what, path, &session, e, f.attempts),
        })
    }

    fn err(&self, what: &str, path: &Path, s: &Session, e: SftpError, attempts: u32) -> Error {
        let kind = match &e {
            SftpError::SftpError(SftpErrorKind::NoSuchFile, _) => io::ErrorKind::NotFound,
            SftpError::SftpError(SftpErrorKind::PermDenied, _) => io::ErrorKind::PermissionDenied,
            e if is_connection_error(e) => io::ErrorKind::ConnectionAborted,
            _ => io::ErrorKind::Other,
        };
        let detail = match &e {
            SftpError::SftpError(k, m) => format!("{k:?}: {}", m.get().0),
            e => {
                let said = s.stderr.lock().expect("ssh stderr").trim().to_string();
                let said = if said.is_empty() {
                    String::new()
                } else {
                    format!("; ssh said: {said}")
                };
                format!("the connection broke ({e}){said}; tried {attempts} times")
            }
        };
        Error::io(
            format!("{what} {}:{}", self.location, path.display()),
            io::Error::new(kind, detail),
        )
    }

    /// Creates `dir` and its missing parents.
    async fn mkdir_p(sftp: &Sftp, dir: &Path) -> std::result::Result<(), SftpError> {
        let mut fs = sftp.fs();
        let mut missing = Vec::new();
        let mut d = dir;
        loop {
            match fs.metadata(d).await {
                Ok(_) => break,
                Err(e) if no_such_file(&e) => {
                    missing.push(d.to_path_buf());
                    match d.parent() {
                        Some(p) if !p.as_os_str().is_empty() => d = p,
                        _ => break,
                    }
                }
                Err(e) => return Err(e),
            }
        }
        for d in missing.iter().rev() {
            if let Err(e) = fs.create_dir(d).await {
                // Another writer may have made it meanwhile.
                if fs.metadata(d).await.is_err() {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// The complete files in one directory: (name, size, is a directory,
    /// modification time).
    async fn read_dir(
        sftp: &Sftp,
        dir: &Path,
    ) -> std::result::Result<Vec<(String, u64, bool, Option<SystemTime>)>, SftpError> {
        let mut fs = sftp.fs();
        let d = match fs.open_dir(dir).await {
            Ok(d) => d,
            Err(e) if no_such_file(&e) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut entries = pin!(d.read_dir());
        let mut out = Vec::new();
        while let Some(e) = next(entries.as_mut()).await {
            let e = e?;
            let name = e.filename().to_string_lossy().into_owned();
            if name == "." || name == ".." {
                continue;
            }
            let m = e.metadata();
            let is_dir = m.file_type().is_some_and(|t| t.is_dir());
            let mtime = m.modified().map(|t| t.as_system_time());
            out.push((name, m.len().unwrap_or(0), is_dir, mtime));
        }
        Ok(out)
    }
}

fn random_suffix() -> String {
    let mut b = [0u8; 8];
    rewind_core::crypto::random_bytes(&mut b);
    hex::encode(b)
}

impl Backend for SftpBackend {
    fn location(&self) -> String {
        self.location.to_string()
    }

    fn create(&self) -> Result<()> {
        let root = PathBuf::from(&self.location.path);
        let config = root.join("config");
        let exists = self.run("stat", &config, |sftp| {
            let config = config.clone();
            async move {
                match sftp.fs().metadata(&config).await {
                    Ok(_) => Ok(true),
                    Err(e) if no_such_file(&e) => Ok(false),
                    Err(e) => Err(e),
                }
            }
        })?;
        if exists {
            return Err(Error::AlreadyExists(self.location()));
        }
        let mut dirs: Vec<PathBuf> = [
            FileType::Key,
            FileType::Snapshot,
            FileType::Index,
            FileType::Pack,
            FileType::Policy,
            FileType::PruneState,
            FileType::Running,
            FileType::Proof,
        ]
        .iter()
        .map(|t| root.join(t.dir()))
        .collect();
        dirs.extend((0..=255u8).map(|i| root.join("data").join(hex::encode([i]))));
        self.run("create", &root, |sftp| {
            let dirs = dirs.clone();
            let root = root.clone();
            async move {
                Self::mkdir_p(&sftp, &root).await?;
                let mut fs = sftp.fs();
                for d in &dirs {
                    if let Err(e) = fs.create_dir(d).await {
                        if fs.metadata(d).await.is_err() {
                            return Err(e);
                        }
                    }
                }
                Ok(())
            }
        })
    }

    fn list(&self, t: FileType) -> Result<Vec<FileInfo>> {
        let root = PathBuf::from(&self.location.path);
        let d = root.join(t.dir());
        let mut out: Vec<FileInfo> = self.run("list", &d, |sftp| {
            let d = d.clone();
            async move {
                let mut dirs = vec![d.clone()];
                if t == FileType::Pack {
                    dirs = Self::read_dir(&sftp, &d)
                        .await?
                        .into_iter()
                        .filter(|e| e.2 && e.0.len() == 2)
                        .map(|e| d.join(e.0))
                        .collect();
                }
                let mut out = Vec::new();
                for sub in dirs {
                    for (name, size, is_dir, _) in Self::read_dir(&sftp, &sub).await? {
                        if !is_dir && is_name(t, &name) {
                            out.push(FileInfo { name, size });
                        }
                    }
                }
                Ok(out)
            }
        })?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn read(&self, t: FileType, name: &str) -> Result<Vec<u8>> {
        let path = self.path(t, name)?;
        let r = self.run("read", &path, |sftp| {
            let path = path.clone();
            async move {
                match sftp.fs().read(&path).await {
                    Ok(b) => Ok(Some(b.to_vec())),
                    Err(e) if no_such_file(&e) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        })?;
        r.ok_or_else(|| Error::Missing {
            what: t.what(),
            id: name.to_string(),
        })
    }

    fn modified(&self, t: FileType, name: &str) -> Result<Option<std::time::SystemTime>> {
        let path = self.path(t, name)?;
        let r = self.run("stat", &path, |sftp| {
            let path = path.clone();
            async move {
                match sftp.fs().metadata(&path).await {
                    Ok(m) => Ok(Some(m.modified().map(|t| t.as_system_time()))),
                    Err(e) if no_such_file(&e) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        })?;
        r.ok_or_else(|| Error::Missing {
            what: t.what(),
            id: name.to_string(),
        })
    }

    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
        if t == FileType::Pack && len <= SMALL_READ {
            let location = self.location();
            return self.cache.read_range(&location, name, offset, len, || {
                self.read(FileType::Pack, name)
            });
        }
        let path = self.path(t, name)?;
        let r = self.run("read", &path, |sftp| {
            let path = path.clone();
            async move {
                let mut f = match sftp.open(&path).await {
                    Ok(f) => f,
                    Err(e) if no_such_file(&e) => return Ok(None),
                    Err(e) => return Err(e),
                };
                f.seek(io::SeekFrom::Start(offset)).await?;
                let got = f.read_all(len as usize, Default::default()).await;
                f.close().await?;
                Ok(Some(got))
            }
        })?;
        match r {
            None => Err(Error::Missing {
                what: t.what(),
                id: name.to_string(),
            }),
            Some(Ok(b)) => Ok(b.to_vec()),
            Some(Err(e)) => Err(Error::io(
                format!("read {}:{}", self.location, path.display()),
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{len} bytes at {offset}: {e} (the file is shorter)"),
                ),
            )),
        }
    }

    fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<WriteOutcome> {
        let path = self.path(t, name)?;
        let parent = path.parent().expect("a file has a directory").to_path_buf();
        self.run("write", &path, |sftp| {
            let path = path.clone();
            let parent = parent.clone();
            let tmp = parent.join(format!(".{name}.tmp-{}", random_suffix()));
            async move {
                if !sftp.support_hardlink() {
                    return Err(SftpError::UnsupportedExtension(&"hardlink@openssh.com"));
                }
                let mut fs = sftp.fs();
                if fs.metadata(&path).await.is_ok() {
                    return Ok(WriteOutcome::AlreadyExists);
                }
                let mut opts = sftp.options();
                opts.write(true).create_new(true);
                let mut f = match opts.open(&tmp).await {
                    Ok(f) => f,
                    Err(e) if no_such_file(&e) => {
                        Self::mkdir_p(&sftp, &parent).await?;
                        opts.open(&tmp).await?
                    }
                    Err(e) => return Err(e),
                };
                let written = async {
                    f.write_all(data).await?;
                    if sftp.support_fsync() {
                        f.sync_all().await?;
                    }
                    f.close().await
                }
                .await;
                if let Err(e) = written {
                    let _ = fs.remove_file(&tmp).await;
                    return Err(e);
                }
                let linked = fs.hard_link(&tmp, &path).await;
                let _ = fs.remove_file(&tmp).await;
                match linked {
                    Ok(()) => Ok(WriteOutcome::Created),
                    Err(e) => {
                        if fs.metadata(&path).await.is_ok() {
                            Ok(WriteOutcome::AlreadyExists)
                        } else {
                            Err(e)
                        }
                    }
                }
            }
        })
    }

    fn delete(&self, t: FileType, name: &str) -> Result<()> {
        let path = self.path(t, name)?;
        if t == FileType::Pack {
            self.cache.forget(name);
        }
        self.run("delete", &path, |sftp| {
            let path = path.clone();
            async move {
                match sftp.fs().remove_file(&path).await {
                    Ok(()) => Ok(()),
                    Err(e) if no_such_file(&e) => Ok(()),
                    Err(e) => Err(e),
                }
            }
        })
    }

    fn connections(&self) -> usize {
        self.connections
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn remove_stale_temporaries(&self, older_than: Duration) -> Result<u64> {
        let root = PathBuf::from(&self.location.path);
        let cutoff = SystemTime::now() - older_than;
        self.run("clean", &root, |sftp| {
            let root = root.clone();
            async move {
                let mut dirs = vec![root.clone()];
                for t in FileType::ALL {
                    if t != FileType::Config {
                        dirs.push(root.join(t.dir()));
                    }
                }
                for (name, _, is_dir, _) in Self::read_dir(&sftp, &root.join("data")).await? {
                    if is_dir && name.len() == 2 {
                        dirs.push(root.join("data").join(name));
                    }
                }
                let mut removed = 0;
                let mut fs = sftp.fs();
                for d in dirs {
                    for (name, _, is_dir, mtime) in Self::read_dir(&sftp, &d).await? {
                        let stale = mtime.is_some_and(|m| m < cutoff);
                        if !is_dir && name.starts_with('.') && name.contains(".tmp-") && stale {
                            match fs.remove_file(d.join(&name)).await {
                                Ok(()) => removed += 1,
                                Err(e) if no_such_file(&e) => {}
                                Err(e) => return Err(e),
                            }
                        }
                    }
                }
                Ok(removed)
            }
        })
    }
}

impl Drop for SftpBackend {
    fn drop(&mut self) {
        // Close the session politely; ssh is killed when its Child drops.
        if let Some(s) = self.session.lock().ok().and_then(|mut g| g.take()) {
            if let Ok(s) = Arc::try_unwrap(s) {
                let Session {
                    sftp, mut child, ..
                } = s;
                self.runtime.block_on(async move {
                    if let Ok(sftp) = Arc::try_unwrap(sftp) {
                        let _ = tokio::time::timeout(Duration::from_secs(5), sftp.close()).await;
                    }
                    let _ = child.kill().await;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let l = SftpLocation::parse("me@host:2222/srv/repo").unwrap();
        assert_eq!(
            l,
            SftpLocation {
                user: Some("me".into()),
                host: "host".into(),
                port: Some(2222),
                path: "/srv/repo".into()
            }
        );
        assert_eq!(l.to_string(), "sftp:me@host:2222/srv/repo");
        let l = SftpLocation::parse("host/srv/repo/").unwrap();
        assert_eq!((l.user, l.port, l.path.as_str()), (None, None, "/srv/repo"));
        let l = SftpLocation::parse("me@host:repo").unwrap();
        assert_eq!((l.port, l.path.as_str()), (None, "repo"));
        assert_eq!(l.to_string(), "sftp:me@host:repo");
        let l = SftpLocation::parse("me@host:/abs").unwrap();
        assert_eq!((l.port, l.path.as_str()), (None, "/abs"));
        let l = SftpLocation::parse("//u@[::1]:22/r").unwrap();
        assert_eq!(
            (l.host.as_str(), l.port, l.path.as_str()),
            ("::1", Some(22), "/r")
        );
        assert_eq!(l.to_string(), "sftp:u@[::1]:22/r");
        for bad in [
            "",
            "host",
            "@host/r",
            "-oProxyCommand=x/r",
            "host:0/r",
            "host:99999/r",
            "[::1/r",
        ] {
            assert!(SftpLocation::parse(bad).is_err(), "{bad:?}");
        }
    }
}
