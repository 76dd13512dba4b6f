//! Storage: the only code that touches where a repository lives.
//!
//! A [`Backend`] stores whole files by ([`FileType`], name). Later backends
//! (SFTP, S3, the rewind server) implement the same trait; the rest of the
//! core never sees paths or URLs.

pub mod cache;
mod local;
pub mod retry;
mod verified;

pub use local::LocalBackend;
pub use verified::Verified;

use crate::error::Result;

pub use crate::format::FileType;

/// A listed file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    /// Its name (64 hex characters for everything but the config).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Who stored a file, where the storage records it (the rewind server's
/// write log, DESIGN §14).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Writer {
    /// The name of the token that stored it.
    pub token: String,
    /// The token may only add files (a `backup` token): what it stores can
    /// add history but not rewrite it (a rewrite of a snapshot it stores
    /// supersedes nothing, DESIGN §3.8).
    pub adds_only: bool,
    /// When the storage got it.
    pub time: Option<jiff::Timestamp>,
}

/// Result of a write-if-absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The file was created and is durable.
    Created,
    /// A file of that name already existed; it was left untouched.
    AlreadyExists,
}

/// How an object store keeps files from being deleted: S3 Object Lock's
/// default retention of a bucket. Every file written is retained for `days`
/// from its creation; until then no credential can delete it (compliance
/// mode) or only one allowed to bypass governance can (governance mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectLock {
    /// `compliance` or `governance`.
    pub mode: LockMode,
    /// Retention of each new file, in days.
    pub days: u32,
}

/// The S3 Object Lock retention modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Nobody can shorten the retention or delete a retained version.
    Compliance,
    /// Users with `s3:BypassGovernanceRetention` can.
    Governance,
}

impl LockMode {
    /// The S3 API's name (`COMPLIANCE`, `GOVERNANCE`).
    pub fn s3_name(self) -> &'static str {
        match self {
            LockMode::Compliance => "COMPLIANCE",
            LockMode::Governance => "GOVERNANCE",
        }
    }
}

impl std::fmt::Display for LockMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LockMode::Compliance => "compliance",
            LockMode::Governance => "governance",
        })
    }
}

/// Dumb storage of whole files.
///
/// Contract:
/// - `write` is write-if-absent and atomic: after it returns `Created`, the
///   whole file is durable under its name; a crash before that leaves either
///   no file of that name or the complete file, never a partial one. It never
///   overwrites an existing file.
/// - `list` returns every complete file of a type (no temporary files).
/// - `read` and `read_range` of an absent file return
///   [`crate::Error::Missing`]; a range beyond the end is an error. Callers
///   get backends wrapped in [`Verified`], the one place that turns a
///   range of the wrong length into an error: no silently short buffer.
/// - All methods may be called from many threads at once.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Where the repository is, for messages.
    fn location(&self) -> String;
    /// Creates the empty layout; fails if a config already exists.
    fn create(&self) -> Result<()>;
    /// Lists the files of a type.
    fn list(&self, t: FileType) -> Result<Vec<FileInfo>>;
    /// Reads a whole file.
    fn read(&self, t: FileType, name: &str) -> Result<Vec<u8>>;
    /// A file read from its start to its end by a reader that need not
    /// hold it whole (`check --read-data`). The default reads it whole;
    /// local storage reads from the file as the reader goes.
    fn read_stream(&self, t: FileType, name: &str) -> Result<Box<dyn std::io::Read + Send>> {
        Ok(Box::new(std::io::Cursor::new(self.read(t, name)?)))
    }
    /// Reads `len` bytes at `offset`.
    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u32) -> Result<Vec<u8>>;
    /// Writes a file if no file of that name exists.
    fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<WriteOutcome>;
    /// [`Backend::write`] of bytes the caller gives away: a backend whose
    /// client needs them owned (S3, the rewind server) sends them without
    /// a copy (a pack upload held two 16 MiB buffers, the caller's and the
    /// request's), and the caller may learn when they are dropped
    /// ([`bytes::Bytes::from_owner`]: the backup writer gets its pack
    /// buffer back).
    fn write_owned(&self, t: FileType, name: &str, data: bytes::Bytes) -> Result<WriteOutcome> {
        self.write(t, name, &data)
    }
    /// Deletes a file; deleting an absent file is not an error. Storage
    /// that enforces a retention (the rewind server's minimum delete age)
    /// answers [`crate::Error::Refused`] for a file it keeps.
    fn delete(&self, t: FileType, name: &str) -> Result<()>;
    /// Writes a file read from `src` to its end, with the contract of
    /// [`Backend::write`]. An error from `src` aborts the write and leaves
    /// no file. Backends that can stream (local) never hold it whole.
    fn write_from(
        &self,
        t: FileType,
        name: &str,
        src: &mut dyn std::io::Read,
    ) -> Result<WriteOutcome> {
        let mut data = Vec::new();
        src.read_to_end(&mut data)
            .map_err(|e| crate::Error::io(format!("read the {} {name} to store", t.what()), e))?;
        self.write(t, name, &data)
    }
    /// A file of type `t` to be written before its name is known (a pack:
    /// its name is the hash of its bytes), or `None` where the backend
    /// cannot (the caller then gathers the bytes and calls
    /// [`Backend::write`]). The local backend writes a temporary file that
    /// [`Staged::commit`] makes durable and names; a staged file dropped
    /// without a commit leaves nothing.
    fn stage(&self, t: FileType) -> Result<Option<Box<dyn Staged + '_>>> {
        let _ = t;
        Ok(None)
    }
    /// True when [`Backend::write_from`] gathers the whole content in memory
    /// before storing it (the default one does: S3, SFTP); false when it
    /// streams (local files). The server bounds the bytes the gathering
    /// ones hold at once (DESIGN §14).
    fn write_from_gathers(&self) -> bool {
        true
    }
    /// When a file was stored, where the storage knows it (`None` where it
    /// does not); [`crate::Error::Missing`] for an absent file.
    fn modified(&self, t: FileType, name: &str) -> Result<Option<std::time::SystemTime>> {
        let _ = (t, name);
        Ok(None)
    }
    /// How many requests are worth running at once.
    fn connections(&self) -> usize {
        2
    }
    /// True when every request costs a network round trip (S3, SFTP):
    /// restore then reads each pack once and hands its blobs to every file
    /// that needs them, instead of reading file by file.
    fn is_remote(&self) -> bool {
        false
    }
    /// Removes temporary files of interrupted writes that are older than
    /// `older_than`; returns how many. Backends without temporaries
    /// (object stores: a PUT is atomic) have none.
    fn remove_stale_temporaries(&self, older_than: std::time::Duration) -> Result<u64> {
        let _ = older_than;
        Ok(0)
    }

    /// The retention every new file gets, if the storage enforces one
    /// (S3 Object Lock). Deleting a retained file only hides it (a delete
    /// marker) until its retention ends.
    fn object_lock(&self) -> Result<Option<ObjectLock>> {
        Ok(None)
    }

    /// Makes every file written from now on retained for `lock.days`
    /// (S3: the bucket's default retention). Fails on storage without
    /// object locking.
    fn set_object_lock(&self, lock: ObjectLock) -> Result<()> {
        let _ = lock;
        Err(crate::Error::InvalidInput(format!(
            "{} cannot lock objects; Object Lock needs an S3 bucket created with Object Lock enabled",
            self.location()
        )))
    }

    /// Until when a file cannot be deleted, if it is retained now.
    fn retained_until(&self, t: FileType, name: &str) -> Result<Option<std::time::SystemTime>> {
        let _ = (t, name);
        Ok(None)
    }

    /// Removes old versions of deleted files whose retention has ended
    /// (on storage that keeps versions); returns how many.
    fn remove_expired_versions(&self) -> Result<u64> {
        Ok(0)
    }

    /// Who stored each file of a type (by name), where the storage keeps
    /// a record of it (the rewind server, for every type but packs and
    /// running markers); empty where it does not. Files without a record
    /// are taken as the repository's own.
    fn writers(&self, t: FileType) -> Result<std::collections::HashMap<String, Writer>> {
        let _ = t;
        Ok(std::collections::HashMap::new())
    }

    /// A sealed tree blob from a local cache of this storage, if it keeps
    /// one (remote repositories, [`cache`]); the caller authenticates it.
    fn cached_tree(&self, id: &str) -> Option<Vec<u8>> {
        let _ = id;
        None
    }

    /// Offers a sealed tree blob that opened to the local cache, if any;
    /// `None` forgets a cached one that did not open.
    fn cache_tree(&self, id: &str, sealed: Option<&[u8]>) {
        let _ = (id, sealed);
    }

    /// True when this handle may only add files (a `backup` token of the
    /// rewind server): rewrites of snapshots through it would not count.
    fn adds_only(&self) -> Result<bool> {
        Ok(false)
    }

    /// Names at the location that are not part of a repository's layout
    /// (at most a few), so that `init` never creates a repository among
    /// other files. Storage that only sees the layout's files (object
    /// stores, the rewind server) has none to name: [`check_vacant`] lists
    /// the layout's files there.
    fn foreign_entries(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// A file being written whose name comes last ([`Backend::stage`]).
pub trait Staged: std::io::Write + Send {
    /// Makes what was written durable and visible as `name`, with the
    /// contract of [`Backend::write`] (an existing file of that name is
    /// kept: [`WriteOutcome::AlreadyExists`]).
    fn commit(self: Box<Self>, name: &str) -> Result<WriteOutcome>;
}

/// Refuses a location where a repository must not be created: one that
/// holds a repository (rewind's: [`crate::Error::AlreadyExists`]; anything
/// else's, such as restic's, whose config is not rewind's), other files, or
/// a repository's files without its config. An empty or absent location,
/// or the layout of an init that stopped before writing its first key, is
/// vacant. Reads only.
pub fn check_vacant(b: &dyn Backend) -> Result<()> {
    use crate::error::Error;
    let location = b.location();
    let refuse = |what: String| {
        Err(Error::Refused(format!(
            "{location} {what}; a repository is only created where nothing is (an empty or new \
             directory or prefix), so nothing there is changed"
        )))
    };
    match b.read(FileType::Config, "config") {
        Ok(bytes) => {
            return match crate::format::config::Config::parse(&bytes, &location) {
                Err(Error::NoRepository { reason, .. }) => refuse(format!(
                    "is not a rewind repository: {reason} (another program's repository?)"
                )),
                _ => Err(Error::AlreadyExists(location)),
            }
        }
        Err(Error::Missing { .. }) => {}
        Err(e) => return Err(e),
    }
    let foreign = b.foreign_entries()?;
    if !foreign.is_empty() {
        return refuse(format!(
            "is not empty and is not a rewind repository: it holds {}",
            foreign.join(", ")
        ));
    }
    for t in [
        FileType::Key,
        FileType::Snapshot,
        FileType::Index,
        FileType::Pack,
    ] {
        let n = b.list(t)?.len();
        if n > 0 {
            return refuse(format!(
                "holds {n} {} file{} but no config: a damaged repository, another program's, or \
                 an init that stopped halfway",
                t.what(),
                if n == 1 { "" } else { "s" }
            ));
        }
    }
    Ok(())
}

/// Deletes a file unless the storage keeps it (the rewind server refuses
/// deletes of files younger than its minimum age): `Ok(None)` when it is
/// gone, `Ok(Some(reason))` when the storage kept it. Other errors stay
/// errors.
pub fn delete_unless_kept(b: &dyn Backend, t: FileType, name: &str) -> Result<Option<String>> {
    match b.delete(t, name) {
        Ok(()) => Ok(None),
        Err(crate::Error::Refused(why)) => Ok(Some(why)),
        Err(e) => Err(e),
    }
}

/// True when a delete failed because these credentials may not delete
/// (the rewind server's `backup` and `read` tokens, a read-only
/// directory): unlike a file the storage keeps for now, it will not go
/// later either.
pub fn is_not_permitted(e: &crate::Error) -> bool {
    matches!(e.inner(), crate::Error::Io { error, .. } if error.kind() == std::io::ErrorKind::PermissionDenied)
}

#[doc(hidden)]
pub mod conformance {
    //! The suite every backend must pass: exact listings, ranged reads,
    //! not-found, write-if-absent, idempotent delete.
    use super::*;
    use crate::error::Error;

    /// Files are named by the BLAKE3 hash of their bytes, as in a real
    /// repository, so that storage that verifies names (the rewind server)
    /// passes too.
    pub fn run(b: &dyn Backend) {
        let named = |data: &[u8]| blake3::hash(data).to_hex().to_string();
        b.create().unwrap();
        b.create().unwrap(); // idempotent until a config exists
        let name = named(b"hello world");
        assert!(b.list(FileType::Pack).unwrap().is_empty());
        assert!(matches!(
            b.read(FileType::Pack, &name),
            Err(Error::Missing { .. })
        ));
        assert_eq!(
            b.write(FileType::Pack, &name, b"hello world").unwrap(),
            WriteOutcome::Created
        );
        assert_eq!(
            b.write(FileType::Pack, &name, b"other").unwrap(),
            WriteOutcome::AlreadyExists
        );
        assert_eq!(b.read(FileType::Pack, &name).unwrap(), b"hello world");
        // Storage that knows when a file was stored says it was just now.
        if let Some(t) = b.modified(FileType::Pack, &name).unwrap() {
            let age = std::time::SystemTime::now()
                .duration_since(t)
                .unwrap_or_default();
            assert!(age.as_secs() < 600, "stored {age:?} ago");
        }
        assert!(!matches!(
            b.modified(FileType::Pack, &"cd".repeat(32)),
            Ok(Some(_))
        ));
        assert_eq!(b.read_range(FileType::Pack, &name, 6, 5).unwrap(), b"world");
        assert!(
            b.read_range(FileType::Pack, &name, 6, 50).is_err(),
            "short read must fail"
        );
        assert_eq!(
            b.list(FileType::Pack).unwrap(),
            vec![FileInfo {
                name: name.clone(),
                size: 11
            }]
        );
        assert!(b.list(FileType::Index).unwrap().is_empty());
        assert!(matches!(
            b.read_range(FileType::Pack, &"cd".repeat(32), 0, 1),
            Err(Error::Missing { .. })
        ));
        // Each type lists exactly its own files, in name order. (Not key
        // files: the rewind server never deletes those.)
        for t in [FileType::Snapshot, FileType::Index, FileType::Policy] {
            let contents = [format!("{} one", t.what()), format!("{} two", t.what())];
            let mut names: Vec<String> = contents.iter().map(|c| named(c.as_bytes())).collect();
            for (n, c) in names.iter().zip(&contents).rev() {
                b.write(t, n, c.as_bytes()).unwrap();
            }
            let listed: Vec<String> = b.list(t).unwrap().into_iter().map(|f| f.name).collect();
            names.sort();
            assert_eq!(listed, names, "{t:?}");
            assert_eq!(
                b.read(t, &named(contents[1].as_bytes())).unwrap(),
                contents[1].as_bytes()
            );
            for n in &names {
                b.delete(t, n).unwrap();
            }
            assert!(b.list(t).unwrap().is_empty());
        }
        assert!(b.list(FileType::Config).unwrap().is_empty());
        // A staged pack is invisible until committed; a commit over an
        // existing name keeps the file; one dropped leaves nothing behind.
        if let Some(mut staged) = b.stage(FileType::Pack).unwrap() {
            use std::io::Write;
            let content = b"staged, then named".as_slice();
            let staged_name = named(content);
            staged.write_all(&content[..6]).unwrap();
            staged.write_all(&content[6..]).unwrap();
            assert_eq!(
                b.list(FileType::Pack).unwrap().len(),
                1,
                "seen before its commit"
            );
            assert_eq!(staged.commit(&staged_name).unwrap(), WriteOutcome::Created);
            assert_eq!(b.read(FileType::Pack, &staged_name).unwrap(), content);
            let mut again = b.stage(FileType::Pack).unwrap().expect("stages again");
            again.write_all(b"other").unwrap();
            assert_eq!(
                again.commit(&staged_name).unwrap(),
                WriteOutcome::AlreadyExists
            );
            assert_eq!(b.read(FileType::Pack, &staged_name).unwrap(), content);
            let mut dropped = b.stage(FileType::Pack).unwrap().expect("stages again");
            dropped.write_all(b"never named").unwrap();
            drop(dropped);
            assert_eq!(
                b.remove_stale_temporaries(std::time::Duration::ZERO)
                    .unwrap(),
                0,
                "a staged file left behind"
            );
            b.delete(FileType::Pack, &staged_name).unwrap();
        }
        b.delete(FileType::Pack, &name).unwrap();
        b.delete(FileType::Pack, &name).unwrap();
        assert!(b.list(FileType::Pack).unwrap().is_empty());
        assert_eq!(
            b.write(FileType::Config, "config", b"{}").unwrap(),
            WriteOutcome::Created
        );
        assert_eq!(
            b.write(FileType::Config, "config", b"{\"x\":1}").unwrap(),
            WriteOutcome::AlreadyExists
        );
        assert_eq!(b.read(FileType::Config, "config").unwrap(), b"{}");
        assert_eq!(b.list(FileType::Config).unwrap().len(), 1);
        assert!(
            b.create().is_err(),
            "create over an existing repository must fail"
        );
    }
}
