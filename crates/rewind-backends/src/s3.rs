//! S3-compatible object storage through opendal (SigV4 signing, retries with
//! exponential backoff, timeouts). The repository layout is the local one
//! (DESIGN §2) under `bucket/prefix/`.
//!
//! Writes are single PUTs with `If-None-Match: *`, so an object is created
//! whole or not at all and never overwritten (W4); `config` and key files are
//! also looked up first, for servers that ignore the condition. Transient
//! errors (timeouts, 5xx, 429, resets) are retried up to 6 times with
//! exponential backoff (0.2 s to 10 s, jittered); permanent ones (403, 404,
//! a missing bucket) fail at once.

use std::io;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::options::{DeleteOptions, ListOptions, ReadOptions, WriteOptions};
use opendal::services::S3;
use opendal::{blocking, EntryMode, ErrorKind};
use rewind_core::backend::{Backend, FileInfo, FileType, ObjectLock, WriteOutcome};
use rewind_core::{Error, Result};

use crate::packcache::{PackCache, SMALL_READ};
use crate::s3lock::{BucketLock, Raw};
use crate::Options;

/// Where an S3 repository is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    /// `http[s]://host[:port]`.
    pub endpoint: String,
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket ("" for the bucket root), without slashes
    /// at either end.
    pub prefix: String,
}

impl S3Location {
    /// Parses `http[s]://endpoint/bucket[/prefix]`.
    pub fn parse(s: &str) -> Result<S3Location> {
        let bad = |why: &str| {
            Error::InvalidInput(format!(
                "repository s3:{s}: {why}; write s3:http[s]://endpoint/bucket[/prefix]"
            ))
        };
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| bad("no http:// or https://"))?;
        if scheme != "http" && scheme != "https" {
            return Err(bad("the endpoint must be http:// or https://"));
        }
        let (host, path) = rest.split_once('/').ok_or_else(|| bad("no bucket"))?;
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let path = path.trim_matches('/');
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(bad(&format!(
                "{bucket:?} is not a valid bucket name (3-63 of a-z, 0-9, '-', '.')"
            )));
        }
        Ok(S3Location {
            endpoint: format!("{scheme}://{host}"),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        })
    }
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3:{}/{}", self.endpoint, self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

/// A repository in an S3 bucket.
pub struct S3Backend {
    // Dropped before the runtime it runs on.
    op: blocking::Operator,
    /// The same, sending Content-MD5 with every PUT, as S3 requires on
    /// buckets with Object Lock.
    op_md5: blocking::Operator,
    /// Object Lock requests opendal does not make.
    raw: Raw,
    /// The bucket's Object Lock state, asked once.
    lock: Mutex<Option<BucketLock>>,
    _runtime: tokio::runtime::Runtime,
    location: S3Location,
    connections: usize,
    cache: PackCache,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Backend")
            .field("location", &self.location.to_string())
            .finish()
    }
}

/// The key prefix of a type's objects (`keys/`, ...; `""` for the config).
fn dir(t: FileType) -> String {
    match t {
        FileType::Config => String::new(),
        _ => format!("{}/", t.dir()),
    }
}

fn object_path(t: FileType, name: &str) -> Result<String> {
    if t == FileType::Config {
        return Ok("config".into());
    }
    if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidInput(format!(
            "{} name {name:?} is not 64 hex digits",
            t.what()
        )));
    }
    Ok(match t {
        FileType::Pack => format!("data/{}/{name}", &name[..2]),
        _ => format!("{}{name}", dir(t)),
    })
}

fn is_object_name(t: FileType, name: &str) -> bool {
    if t == FileType::Config {
        return name == "config";
    }
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

impl S3Backend {
    /// Connects (lazily: no request is made until the first operation).
    pub fn open(location: &S3Location, options: &Options) -> Result<S3Backend> {
        // The process-wide HTTP transport (reqwest with rustls); first call wins.
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(opendal::install_default);
        let region = options
            .get("s3.region")
            .cloned()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".into());
        let connections = match options.get("s3.connections") {
            Some(c) => c
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| {
                    Error::InvalidInput(format!("s3.connections={c}: give a number from 1 to 64"))
                })?,
            None => 5,
        };
        let builder = || {
            let b = S3::default()
                .endpoint(&location.endpoint)
                .bucket(&location.bucket)
                .root(&format!("/{}", location.prefix))
                .region(&region)
                // Never wait for an EC2 metadata service that is not there.
                .disable_ec2_metadata();
            match options.get("s3.profile") {
                Some(p) => b.profile(p),
                None => b,
            }
        };
        let ctx = |e: opendal::Error| {
            Error::InvalidInput(format!("cannot use S3 repository {location}: {e}"))
        };
        let raw = Raw::new(
            &location.endpoint,
            &location.bucket,
            &region,
            options.get("s3.profile").map(String::as_str),
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rewind-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::io("start the S3 client runtime", e))?;
        let (op, op_md5) = {
            let _guard = runtime.enter();
            (
                Self::operator(builder()).map_err(ctx)?,
                Self::operator(builder().checksum_algorithm("md5")).map_err(ctx)?,
            )
        };
        Ok(S3Backend {
            op,
            op_md5,
            raw,
            lock: Mutex::new(None),
            _runtime: runtime,
            location: location.clone(),
            connections,
            cache: PackCache::new(2 * connections + 2),
        })
    }

    /// An operator with timeouts and retries.
    fn operator(builder: S3) -> opendal::Result<blocking::Operator> {
        let op = opendal::Operator::new(builder)?
            .layer(
                TimeoutLayer::new()
                    .with_timeout(Duration::from_secs(300))
                    .with_io_timeout(Duration::from_secs(60)),
            )
            .layer(
                RetryLayer::new()
                    .with_jitter()
                    .with_max_times(6)
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(10)),
            );
        blocking::Operator::new(op)
    }

    /// The object key of a repository path (with the prefix).
    fn key(&self, path: &str) -> String {
        if self.location.prefix.is_empty() {
            path.to_string()
        } else {
            format!("{}/{path}", self.location.prefix)
        }
    }

    fn raw_err(&self, what: &str, e: String) -> Error {
        Error::io(format!("{what} {}", self.location), io::Error::other(e))
    }

    /// The bucket's Object Lock state (asked once per process). A server
    /// that does not implement Object Lock counts as a bucket without it.
    fn bucket_lock(&self) -> Result<BucketLock> {
        let mut cached = self.lock.lock().expect("lock state");
        if let Some(l) = *cached {
            return Ok(l);
        }
        let l = self
            ._runtime
            .block_on(self.raw.bucket_lock())
            .map_err(|e| self.raw_err("ask about Object Lock on", e))?;
        *cached = Some(l);
        Ok(l)
    }

    fn locking(&self) -> Result<bool> {
        Ok(self.bucket_lock()? != BucketLock::Disabled)
    }

    /// On a locked bucket: deletes every version of `path` that its
    /// retention allows (after the delete marker that hid it).
    fn delete_versions(&self, path: &str) -> Result<()> {
        let (parent, _) = path.rsplit_once('/').unwrap_or(("", path));
        let opts = ListOptions {
            versions: true,
            deleted: true,
            ..Default::default()
        };
        let dir = if parent.is_empty() {
            String::new()
        } else {
            format!("{parent}/")
        };
        let entries = match self.op.list_options(&dir, opts) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.err("list versions of", path, e)),
        };
        let versions: Vec<_> = entries.into_iter().filter(|e| e.path() == path).collect();
        self.remove_versions(path, &versions, None)?;
        Ok(())
    }

    /// Deletes the data versions among `versions` (all of one path) that
    /// are older than `older_than` (all if None) and whose retention allows
    /// it; then the delete markers, if no data version is left. Never
    /// touches a current data version. Returns how many data versions went.
    fn remove_versions(
        &self,
        path: &str,
        versions: &[opendal::Entry],
        older_than: Option<SystemTime>,
    ) -> Result<u64> {
        let mut removed = 0;
        let mut left = 0;
        for v in versions.iter().filter(|v| !v.metadata().is_deleted()) {
            let m = v.metadata();
            let old_enough = match (older_than, m.last_modified()) {
                (None, _) => true,
                (Some(t), Some(lm)) => SystemTime::from(lm) < t,
                (Some(_), None) => false,
            };
            let (Some(version), false, true) =
                (m.version(), m.is_current() == Some(true), old_enough)
            else {
                left += 1;
                continue;
            };
            let opts = DeleteOptions {
                version: Some(version.to_string()),
                ..Default::default()
            };
            match self.op.delete_options(path, opts) {
                Ok(()) => removed += 1,
                // Retained: it stays until its retention ends.
                Err(e) if e.kind() == ErrorKind::PermissionDenied => left += 1,
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(self.err("delete a version of", path, e)),
            }
        }
        if left == 0 {
            for v in versions.iter().filter(|v| v.metadata().is_deleted()) {
                let Some(version) = v.metadata().version() else {
                    continue;
                };
                let opts = DeleteOptions {
                    version: Some(version.to_string()),
                    ..Default::default()
                };
                match self.op.delete_options(path, opts) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(self.err("delete a delete marker of", path, e)),
                }
            }
        }
        Ok(removed)
    }

    fn err(&self, what: &str, path: &str, e: opendal::Error) -> Error {
        let kind = match e.kind() {
            ErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
            ErrorKind::NotFound => io::ErrorKind::NotFound,
            _ if e.is_temporary() => io::ErrorKind::TimedOut,
            _ => io::ErrorKind::Other,
        };
        let hint = match e.kind() {
            ErrorKind::PermissionDenied => {
                " (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile)"
            }
            ErrorKind::ConfigInvalid => " (does the bucket exist?)",
            _ if e.to_string().contains("signing credential") => {
                " (no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile with -o s3.profile=NAME)"
            }
            _ if e.to_string().contains("error sending request") => {
                " (cannot reach the server; retried 6 times with backoff)"
            }
            _ if e.is_temporary() => " (the server kept failing; retried 6 times)",
            _ => "",
        };
        Error::io(
            format!("{what} {}/{path}", self.location),
            io::Error::new(kind, format!("{e}{hint}")),
        )
    }

    /// One PUT of `data` if no file of that name exists.
    fn put(&self, t: FileType, name: &str, data: bytes::Bytes) -> Result<WriteOutcome> {
        let path = object_path(t, name)?;
        if matches!(t, FileType::Config | FileType::Key) {
            match self.op.stat(&path) {
                Ok(_) => return Ok(WriteOutcome::AlreadyExists),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(self.err("stat", &path, e)),
            }
        }
        let opts = WriteOptions {
            if_not_exists: true,
            ..Default::default()
        };
        // Locked buckets want Content-MD5 (and retain what is written).
        let op = if self.locking()? {
            &self.op_md5
        } else {
            &self.op
        };
        // One buffer: a single PUT, atomic on every S3 implementation.
        match op.write_options(&path, data, opts) {
            Ok(_) => Ok(WriteOutcome::Created),
            Err(e) if e.kind() == ErrorKind::ConditionNotMatch => Ok(WriteOutcome::AlreadyExists),
            Err(e) => Err(self.err("write", &path, e)),
        }
    }
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        self.location.to_string()
    }

    fn create(&self) -> Result<()> {
        match self.op.stat("config") {
            Ok(_) => return Err(Error::AlreadyExists(self.location())),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(self.err("stat", "config", e)),
        }
        // Buckets are made by their owner; check that it is reachable.
        let opts = ListOptions {
            limit: Some(1),
            ..Default::default()
        };
        self.op
            .list_options("", opts)
            .map(|_| ())
            .map_err(|e| self.err("list", "", e))
    }

    fn list(&self, t: FileType) -> Result<Vec<FileInfo>> {
        if t == FileType::Config {
            return match self.op.stat("config") {
                Ok(m) => Ok(vec![FileInfo {
                    name: "config".into(),
                    size: m.content_length(),
                }]),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(self.err("stat", "config", e)),
            };
        }
        let opts = ListOptions {
            recursive: true,
            ..Default::default()
        };
        let entries = match self.op.list_options(&dir(t), opts) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.err("list", &dir(t), e)),
        };
        let mut out: Vec<FileInfo> = entries
            .into_iter()
            .filter(|e| e.metadata().mode() == EntryMode::FILE)
            .filter_map(|e| {
                let name = e.name().to_string();
                is_object_name(t, &name).then(|| FileInfo {
                    name,
                    size: e.metadata().content_length(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.dedup_by(|a, b| a.name == b.name);
        Ok(out)
    }

    fn read(&self, t: FileType, name: &str) -> Result<Vec<u8>> {
        let path = object_path(t, name)?;
        match self.op.read(&path) {
            Ok(b) => Ok(b.to_vec()),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::Missing {
                what: t.what(),
                id: name.to_string(),
            }),
            Err(e) => Err(self.err("read", &path, e)),
        }
    }

    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
        // Small reads (small files, trees) come from the cached whole pack;
        // large ones (runs of a big file's blobs, up to 16 MiB) are one
        // request each anyway.
        if t == FileType::Pack && len <= SMALL_READ {
            let location = self.location();
            return self.cache.read_range(&location, name, offset, len, || {
                self.read(FileType::Pack, name)
            });
        }
        let path = object_path(t, name)?;
        let opts = ReadOptions {
            range: (offset..offset + u64::from(len)).into(),
            ..Default::default()
        };
        match self.op.read_options(&path, opts) {
            // S3 clips a range that runs past the end: the Verified
            // wrapper (rewind_backends::open) refuses the short buffer.
            Ok(b) => Ok(b.to_vec()),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::Missing {
                what: t.what(),
                id: name.to_string(),
            }),
            Err(e) if e.kind() == ErrorKind::RangeNotSatisfied => Err(Error::io(
                format!("read {}/{path}", self.location),
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{len} bytes at {offset} lie beyond its end"),
                ),
            )),
            Err(e) => Err(self.err("read", &path, e)),
        }
    }

    fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<WriteOutcome> {
        self.put(t, name, bytes::Bytes::copy_from_slice(data))
    }

    fn write_owned(&self, t: FileType, name: &str, data: bytes::Bytes) -> Result<WriteOutcome> {
        self.put(t, name, data)
    }

    fn delete(&self, t: FileType, name: &str) -> Result<()> {
        let path = object_path(t, name)?;
        if t == FileType::Pack {
            self.cache.forget(name);
        }
        // On a locked (hence versioned) bucket this only adds a delete
        // marker: the file is gone from listings at once, its data stays
        // until its retention ends.
        match self.op.delete(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(self.err("delete", &path, e)),
        }
        if self.locking()? {
            self.delete_versions(&path)?;
        }
        Ok(())
    }

    fn modified(&self, t: FileType, name: &str) -> Result<Option<std::time::SystemTime>> {
        let path = object_path(t, name)?;
        match self.op.stat(&path) {
            Ok(m) => Ok(m
                .last_modified()
                .map(|t| std::time::SystemTime::from(t.into_inner()))),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::Missing {
                what: t.what(),
                id: name.to_string(),
            }),
            Err(e) => Err(self.err("stat", &path, e)),
        }
    }

    fn connections(&self) -> usize {
        self.connections
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn object_lock(&self) -> Result<Option<ObjectLock>> {
        Ok(match self.bucket_lock()? {
            BucketLock::Default(l) => Some(l),
            _ => None,
        })
    }

    fn set_object_lock(&self, lock: ObjectLock) -> Result<()> {
        *self.lock.lock().expect("lock state") = None;
        if self.bucket_lock()? == BucketLock::Disabled {
            return Err(Error::InvalidInput(format!(
                "bucket {:?} at {} has no Object Lock; it can only be enabled when the bucket is created (e.g. aws s3api create-bucket --bucket {} --object-lock-enabled-for-bucket)",
                self.location.bucket, self.location.endpoint, self.location.bucket
            )));
        }
        self._runtime
            .block_on(self.raw.set_default_retention(lock))
            .map_err(|e| self.raw_err("set Object Lock on", e))?;
        *self.lock.lock().expect("lock state") = None;
        match self.bucket_lock()? {
            BucketLock::Default(l) if l == lock => Ok(()),
            other => Err(Error::io(
                format!("set Object Lock on {}", self.location),
                io::Error::other(format!(
                    "the server accepted {lock:?} but now reports {other:?}"
                )),
            )),
        }
    }

    fn retained_until(&self, t: FileType, name: &str) -> Result<Option<SystemTime>> {
        if !self.locking()? {
            return Ok(None);
        }
        let key = self.key(&object_path(t, name)?);
        self._runtime
            .block_on(self.raw.retained_until(&key))
            .map_err(|e| self.raw_err("read the retention of a file in", e))
    }

    fn remove_expired_versions(&self) -> Result<u64> {
        let Some(lock) = self.object_lock()? else {
            return Ok(0);
        };
        let opts = ListOptions {
            recursive: true,
            versions: true,
            deleted: true,
            ..Default::default()
        };
        let entries = self
            .op
            .list_options("", opts)
            .map_err(|e| self.err("list versions of", "", e))?;
        let mut by_path: std::collections::BTreeMap<String, Vec<opendal::Entry>> =
            Default::default();
        for e in entries {
            if e.metadata().mode() == EntryMode::FILE {
                by_path.entry(e.path().to_string()).or_default().push(e);
            }
        }
        // Older than the default retention (and a day, for clocks): its
        // retention has ended unless someone extended it, and then the
        // server refuses and it stays.
        let cutoff = SystemTime::now() - Duration::from_secs((u64::from(lock.days) + 1) * 86_400);
        let mut removed = 0;
        for (path, versions) in by_path {
            let has_old = versions
                .iter()
                .any(|v| v.metadata().is_current() != Some(true));
            if has_old {
                removed += self.remove_versions(&path, &versions, Some(cutoff))?;
            }
        }
        Ok(removed)
    }
}
