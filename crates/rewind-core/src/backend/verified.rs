//! The one place that checks what a backend's ranged reads return.
//!
//! [`Verified`] wraps a [`Backend`] and forwards every method; a
//! `read_range` that returns other than the requested length (an S3
//! endpoint that clips a range, a server or proxy that ignores `Range`, a
//! file truncated under a reader) becomes an error naming the file, the
//! offset and both lengths, of kind [`std::io::ErrorKind::UnexpectedEof`]
//! (the rewind server answers that with 416). No short buffer reaches
//! the code that slices blobs out of it.
//!
//! Names are not checked here. A content-named file (every type but the
//! config: its name is the BLAKE3 of its bytes) is checked where it is
//! opened: [`crate::format::RepoFile::open`] for sealed files, the key
//! reader, and check and repair for packs. Those readers name a damaged
//! file and go on (the other keys, the newest readable settings, the blobs
//! of a damaged pack that still authenticate), which an error from the
//! read itself would prevent, and hashing here too would hash every small
//! file twice. Packs are never hashed per read: each blob authenticates on
//! its own, and `check --read-data` hashes whole packs.
//!
//! Given a [`MetaCache`] (remote repositories), it serves index and
//! snapshot files from the local cache, each checked against its name
//! there (super::cache).

use std::time::{Duration, SystemTime};

use super::cache::MetaCache;
use super::{Backend, FileInfo, FileType, ObjectLock, WriteOutcome};
use crate::error::{Error, Result};

/// A [`Backend`] whose ranged reads are checked for their length.
#[derive(Debug)]
pub struct Verified<B: ?Sized> {
    cache: Option<MetaCache>,
    inner: B,
}

impl<B: Backend> Verified<B> {
    /// Wraps a backend.
    pub fn new(inner: B) -> Verified<B> {
        Verified { cache: None, inner }
    }

    /// Wraps a backend whose index and snapshot files are cached in `cache`.
    pub fn with_cache(inner: B, cache: MetaCache) -> Verified<B> {
        Verified {
            cache: Some(cache),
            inner,
        }
    }
}

impl<B: ?Sized> Verified<B> {
    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }
}

impl<B: Backend + ?Sized> Backend for Verified<B> {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn create(&self) -> Result<()> {
        self.inner.create()
    }

    fn list(&self, t: FileType) -> Result<Vec<FileInfo>> {
        self.inner.list(t)
    }

    fn read(&self, t: FileType, name: &str) -> Result<Vec<u8>> {
        let Some(cache) = &self.cache else {
            return self.inner.read(t, name);
        };
        if let Some(data) = cache.get(t, name) {
            return Ok(data);
        }
        let data = self.inner.read(t, name)?;
        cache.put(t, name, &data);
        Ok(data)
    }

    fn read_stream(&self, t: FileType, name: &str) -> Result<Box<dyn std::io::Read + Send>> {
        match &self.cache {
            None => self.inner.read_stream(t, name),
            Some(_) => Ok(Box::new(std::io::Cursor::new(self.read(t, name)?))),
        }
    }

    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
        let data = self.inner.read_range(t, name, offset, len)?;
        if data.len() as u64 == u64::from(len) {
            return Ok(data);
        }
        let got = data.len();
        Err(Error::io(
            format!("read {} {} {name}", self.inner.location(), t.what()),
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                if got < len as usize {
                    format!(
                        "asked for {len} bytes at {offset}, got {got} (the file is shorter, or the storage cut the range short)"
                    )
                } else {
                    format!(
                        "asked for {len} bytes at {offset}, got {got} (the storage ignored the range)"
                    )
                },
            ),
        ))
    }

    fn cached_tree(&self, id: &str) -> Option<Vec<u8>> {
        self.cache.as_ref()?.get_tree(id)
    }

    fn cache_tree(&self, id: &str, sealed: Option<&[u8]>) {
        if let Some(cache) = &self.cache {
            match sealed {
                Some(s) => cache.put_tree(id, s),
                None => cache.remove_tree(id),
            }
        }
    }

    fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<WriteOutcome> {
        let out = self.inner.write(t, name, data)?;
        if let Some(cache) = &self.cache {
            cache.put(t, name, data);
        }
        Ok(out)
    }

    fn write_owned(&self, t: FileType, name: &str, data: bytes::Bytes) -> Result<WriteOutcome> {
        match (&self.cache, t) {
            // The cache keeps a copy of what it caches (not packs).
            (Some(_), FileType::Index | FileType::Snapshot) => self.write(t, name, &data),
            _ => self.inner.write_owned(t, name, data),
        }
    }

    fn delete(&self, t: FileType, name: &str) -> Result<()> {
        self.inner.delete(t, name)?;
        if let Some(cache) = &self.cache {
            cache.remove(t, name);
        }
        Ok(())
    }

    fn write_from(
        &self,
        t: FileType,
        name: &str,
        src: &mut dyn std::io::Read,
    ) -> Result<WriteOutcome> {
        self.inner.write_from(t, name, src)
    }

    fn write_from_gathers(&self) -> bool {
        self.inner.write_from_gathers()
    }

    fn stage(&self, t: FileType) -> Result<Option<Box<dyn super::Staged + '_>>> {
        // Packs only: the cache keeps copies of the other types as they
        // are written, which a staged write would bypass.
        match t {
            FileType::Pack => self.inner.stage(t),
            _ => Ok(None),
        }
    }

    fn modified(&self, t: FileType, name: &str) -> Result<Option<SystemTime>> {
        self.inner.modified(t, name)
    }

    fn connections(&self) -> usize {
        self.inner.connections()
    }

    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }

    fn remove_stale_temporaries(&self, older_than: Duration) -> Result<u64> {
        self.inner.remove_stale_temporaries(older_than)
    }

    fn object_lock(&self) -> Result<Option<ObjectLock>> {
        self.inner.object_lock()
    }

    fn set_object_lock(&self, lock: ObjectLock) -> Result<()> {
        self.inner.set_object_lock(lock)
    }

    fn retained_until(&self, t: FileType, name: &str) -> Result<Option<SystemTime>> {
        self.inner.retained_until(t, name)
    }

    fn remove_expired_versions(&self) -> Result<u64> {
        self.inner.remove_expired_versions()
    }

    fn writers(&self, t: FileType) -> Result<std::collections::HashMap<String, super::Writer>> {
        self.inner.writers(t)
    }

    fn adds_only(&self) -> Result<bool> {
        self.inner.adds_only()
    }

    fn foreign_entries(&self) -> Result<Vec<String>> {
        self.inner.foreign_entries()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{LocalBackend, LockMode};
    use std::sync::Mutex;

    /// Storage that answers ranged reads with whatever it was told to, and
    /// records which methods were called.
    #[derive(Debug, Default)]
    struct Fake {
        range_answer: Vec<u8>,
        calls: Mutex<Vec<&'static str>>,
    }

    impl Fake {
        fn called(&self, m: &'static str) {
            self.calls.lock().unwrap().push(m);
        }
    }

    const LOCK: ObjectLock = ObjectLock {
        mode: LockMode::Governance,
        days: 3,
    };

    impl Backend for Fake {
        fn location(&self) -> String {
            "fake:".into()
        }
        fn create(&self) -> Result<()> {
            self.called("create");
            Ok(())
        }
        fn list(&self, _: FileType) -> Result<Vec<FileInfo>> {
            self.called("list");
            Ok(vec![])
        }
        fn read(&self, _: FileType, _: &str) -> Result<Vec<u8>> {
            self.called("read");
            Ok(b"not what the name says".to_vec())
        }
        fn read_range(&self, _: FileType, _: &str, _: u64, _: u32) -> Result<Vec<u8>> {
            self.called("read_range");
            Ok(self.range_answer.clone())
        }
        fn write(&self, _: FileType, _: &str, _: &[u8]) -> Result<WriteOutcome> {
            self.called("write");
            Ok(WriteOutcome::Created)
        }
        fn delete(&self, _: FileType, _: &str) -> Result<()> {
            self.called("delete");
            Ok(())
        }
        fn write_from(
            &self,
            _: FileType,
            _: &str,
            _: &mut dyn std::io::Read,
        ) -> Result<WriteOutcome> {
            self.called("write_from");
            Ok(WriteOutcome::AlreadyExists)
        }
        fn modified(&self, _: FileType, _: &str) -> Result<Option<SystemTime>> {
            self.called("modified");
            Ok(Some(SystemTime::UNIX_EPOCH))
        }
        fn connections(&self) -> usize {
            7
        }
        fn is_remote(&self) -> bool {
            true
        }
        fn remove_stale_temporaries(&self, _: Duration) -> Result<u64> {
            self.called("remove_stale_temporaries");
            Ok(3)
        }
        fn object_lock(&self) -> Result<Option<ObjectLock>> {
            self.called("object_lock");
            Ok(Some(LOCK))
        }
        fn set_object_lock(&self, _: ObjectLock) -> Result<()> {
            self.called("set_object_lock");
            Ok(())
        }
        fn retained_until(&self, _: FileType, _: &str) -> Result<Option<SystemTime>> {
            self.called("retained_until");
            Ok(Some(SystemTime::UNIX_EPOCH))
        }
        fn remove_expired_versions(&self) -> Result<u64> {
            self.called("remove_expired_versions");
            Ok(5)
        }
        fn foreign_entries(&self) -> Result<Vec<String>> {
            self.called("foreign_entries");
            Ok(vec!["x".into()])
        }
    }

    fn name() -> String {
        "ab".repeat(32)
    }

    #[test]
    fn a_short_range_is_an_error_naming_the_file_offset_and_lengths() {
        let b = Verified::new(Fake {
            range_answer: b"abc".to_vec(),
            ..Fake::default()
        });
        let e = b.read_range(FileType::Pack, &name(), 100, 10).unwrap_err();
        let Error::Io { error, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof);
        let msg = e.to_string();
        for part in ["fake:", "pack", &name(), "10 bytes at 100", "got 3"] {
            assert!(msg.contains(part), "{part:?} in {msg}");
        }
    }

    #[test]
    fn a_long_range_is_an_error_too_and_an_exact_one_passes() {
        let b = Verified::new(Fake {
            range_answer: b"0123456789".to_vec(),
            ..Fake::default()
        });
        let e = b.read_range(FileType::Pack, &name(), 0, 4).unwrap_err();
        assert!(e.to_string().contains("got 10"), "{e}");
        assert_eq!(
            b.read_range(FileType::Pack, &name(), 0, 10).unwrap(),
            b"0123456789"
        );
        let empty = Verified::new(Fake::default());
        assert!(empty
            .read_range(FileType::Index, &name(), 5, 0)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn whole_reads_are_left_to_the_readers_that_check_names() {
        // The decorator does not hash: RepoFile::open, the key reader and
        // check name a damaged file and go on, so the bytes reach them.
        let b = Verified::new(Fake::default());
        assert_eq!(
            b.read(FileType::Snapshot, &name()).unwrap(),
            b"not what the name says"
        );
    }

    #[test]
    fn every_method_is_forwarded() {
        let b = Verified::new(Fake {
            range_answer: b"x".to_vec(),
            ..Fake::default()
        });
        let n = name();
        let t = FileType::Index;
        assert_eq!(b.location(), "fake:");
        b.create().unwrap();
        b.list(t).unwrap();
        b.read(t, &n).unwrap();
        b.read_range(t, &n, 0, 1).unwrap();
        assert_eq!(b.write(t, &n, b"x").unwrap(), WriteOutcome::Created);
        assert_eq!(
            b.write_from(t, &n, &mut &b"x"[..]).unwrap(),
            WriteOutcome::AlreadyExists
        );
        b.delete(t, &n).unwrap();
        assert_eq!(b.modified(t, &n).unwrap(), Some(SystemTime::UNIX_EPOCH));
        assert_eq!(b.connections(), 7);
        assert!(b.is_remote());
        assert_eq!(b.remove_stale_temporaries(Duration::ZERO).unwrap(), 3);
        assert_eq!(b.object_lock().unwrap(), Some(LOCK));
        b.set_object_lock(LOCK).unwrap();
        assert_eq!(
            b.retained_until(t, &n).unwrap(),
            Some(SystemTime::UNIX_EPOCH)
        );
        assert_eq!(b.remove_expired_versions().unwrap(), 5);
        assert_eq!(b.foreign_entries().unwrap(), ["x"]);
        assert_eq!(
            *b.inner().calls.lock().unwrap(),
            [
                "create",
                "list",
                "read",
                "read_range",
                "write",
                "write_from",
                "delete",
                "modified",
                "remove_stale_temporaries",
                "object_lock",
                "set_object_lock",
                "retained_until",
                "remove_expired_versions",
                "foreign_entries",
            ]
        );
    }

    #[test]
    fn a_wrapped_local_backend_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let b = Verified::new(LocalBackend::new(dir.path().join("repo")));
        crate::backend::conformance::run(&b);
    }
}
