//! A local cache of a remote repository's index and snapshot files and of
//! its tree blobs (`$XDG_CACHE_HOME/rewind/meta/<location>/`), so that a
//! command on S3, SFTP or a rewind server does not fetch every one of them
//! again.
//!
//! Tree blobs are kept sealed, as the pack holds them, under `trees/ID`:
//! the repository opens them with the key, which authenticates them for
//! that id (a damaged or swapped one fails and is fetched from its pack).
//!
//! Safe by construction: those files are named by the BLAKE3 of their
//! bytes, so a cached file is used only when its bytes hash to its name (a
//! damaged or half-written one is removed and fetched again, never
//! trusted); listings always ask the storage, so a file deleted there is
//! never read from here. Files are written to a temporary name and
//! renamed, so processes sharing the cache never see a partial file. The
//! cache is bounded: when it is over its size, the least recently used
//! files go.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::FileType;
use crate::id::Hash;

/// Default bound of one repository's cache.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// The cache folder of one repository.
#[derive(Debug)]
pub struct MetaCache {
    dir: PathBuf,
    max_bytes: u64,
    counter: AtomicU64,
}

fn cached_type(t: FileType) -> bool {
    matches!(t, FileType::Index | FileType::Snapshot)
}

fn valid_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl MetaCache {
    /// The cache in `dir`, trimmed to `max_bytes` (least recently used
    /// files first).
    pub fn new(dir: PathBuf, max_bytes: u64) -> MetaCache {
        let c = MetaCache {
            dir,
            max_bytes,
            counter: AtomicU64::new(0),
        };
        c.trim();
        c
    }

    /// Where its files are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, t: FileType, name: &str) -> Option<PathBuf> {
        (cached_type(t) && valid_name(name)).then(|| self.dir.join(t.dir()).join(name))
    }

    /// A cached file whose bytes hash to its name.
    pub fn get(&self, t: FileType, name: &str) -> Option<Vec<u8>> {
        let p = self.path(t, name)?;
        let data = std::fs::read(&p).ok()?;
        if Hash::of(&data).to_hex() != name {
            let _ = std::fs::remove_file(&p);
            return None;
        }
        // Recently used: keep it in a trim.
        if let Ok(f) = std::fs::File::options().write(true).open(&p) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
        Some(data)
    }

    /// Stores a file read from (or written to) the storage, if its bytes
    /// are what its name says. Failing to cache is not an error.
    pub fn put(&self, t: FileType, name: &str, data: &[u8]) {
        let Some(p) = self.path(t, name) else { return };
        if p.exists() || Hash::of(data).to_hex() != name {
            return;
        }
        let Some(dir) = p.parent() else { return };
        if std::fs::create_dir_all(dir).is_err() {
            return;
        }
        let tmp = dir.join(format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            self.counter.fetch_add(1, Ordering::Relaxed)
        ));
        if std::fs::write(&tmp, data).is_ok() && std::fs::rename(&tmp, &p).is_ok() {
            return;
        }
        let _ = std::fs::remove_file(&tmp);
    }

    fn tree_path(&self, id: &str) -> Option<PathBuf> {
        valid_name(id).then(|| self.dir.join("trees").join(id))
    }

    /// A sealed tree blob, as [`MetaCache::put_tree`] stored it. Not
    /// checked here: the caller opens it with the key.
    pub fn get_tree(&self, id: &str) -> Option<Vec<u8>> {
        let p = self.tree_path(id)?;
        let data = std::fs::read(&p).ok()?;
        if let Ok(f) = std::fs::File::options().write(true).open(&p) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
        Some(data)
    }

    /// Keeps a sealed tree blob that opened. Failing to cache is not an
    /// error.
    pub fn put_tree(&self, id: &str, sealed: &[u8]) {
        let Some(p) = self.tree_path(id) else { return };
        if p.exists() {
            return;
        }
        let Some(dir) = p.parent() else { return };
        if std::fs::create_dir_all(dir).is_err() {
            return;
        }
        let tmp = dir.join(format!(
            ".{id}.{}.{}.tmp",
            std::process::id(),
            self.counter.fetch_add(1, Ordering::Relaxed)
        ));
        if std::fs::write(&tmp, sealed).is_ok() && std::fs::rename(&tmp, &p).is_ok() {
            return;
        }
        let _ = std::fs::remove_file(&tmp);
    }

    /// Forgets a tree blob that did not open.
    pub fn remove_tree(&self, id: &str) {
        if let Some(p) = self.tree_path(id) {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Forgets a file (deleted from the storage).
    pub fn remove(&self, t: FileType, name: &str) {
        if let Some(p) = self.path(t, name) {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Removes the least recently used files until the cache fits.
    fn trim(&self) {
        let mut files = Vec::new();
        let mut total = 0u64;
        for sub in [FileType::Index.dir(), FileType::Snapshot.dir(), "trees"] {
            let Ok(rd) = std::fs::read_dir(self.dir.join(sub)) else {
                continue;
            };
            for e in rd.flatten() {
                let Ok(m) = e.metadata() else { continue };
                total += m.len();
                let used = m.modified().unwrap_or(std::time::UNIX_EPOCH);
                files.push((used, m.len(), e.path()));
            }
        }
        if total <= self.max_bytes {
            return;
        }
        files.sort();
        for (_, len, p) in files {
            if total <= self.max_bytes {
                break;
            }
            if std::fs::remove_file(p).is_ok() {
                total -= len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bytes_that_match_their_name_are_served() {
        let d = tempfile::tempdir().unwrap();
        let c = MetaCache::new(d.path().join("c"), DEFAULT_MAX_BYTES);
        let data = b"a sealed snapshot file".to_vec();
        let name = Hash::of(&data).to_hex();
        assert!(c.get(FileType::Snapshot, &name).is_none());
        c.put(FileType::Snapshot, &name, &data);
        assert_eq!(c.get(FileType::Snapshot, &name), Some(data.clone()));
        // Bytes that are not what the name says are never stored...
        let other = Hash::of(b"other").to_hex();
        c.put(FileType::Snapshot, &other, &data);
        assert!(c.get(FileType::Snapshot, &other).is_none());
        // ...and a damaged cached file is dropped, not served.
        let p = d.path().join("c/snapshots").join(&name);
        std::fs::write(&p, b"a sealed snapshot fil3").unwrap();
        assert!(c.get(FileType::Snapshot, &name).is_none());
        assert!(!p.exists());
        // Packs and settings are not cached; odd names are not paths.
        c.put(FileType::Pack, &name, &data);
        assert!(c.get(FileType::Pack, &name).is_none());
        c.put(FileType::Snapshot, "../../etc/passwd", &data);
        assert!(!d.path().join("etc").exists());
        c.remove(FileType::Snapshot, &name);
        assert!(c.get(FileType::Snapshot, &name).is_none());
    }

    #[test]
    fn the_least_recently_used_files_go_first() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("c");
        let c = MetaCache::new(dir.clone(), DEFAULT_MAX_BYTES);
        let mut names = Vec::new();
        for i in 0..4u8 {
            let data = vec![i; 1000];
            let name = Hash::of(&data).to_hex();
            c.put(FileType::Index, &name, &data);
            let f = std::fs::File::options()
                .write(true)
                .open(dir.join("index").join(&name))
                .unwrap();
            f.set_modified(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(1000 + u64::from(i)),
            )
            .unwrap();
            names.push(name);
        }
        let c = MetaCache::new(dir.clone(), 2500);
        let left: Vec<bool> = names
            .iter()
            .map(|n| dir.join("index").join(n).exists())
            .collect();
        assert_eq!(left, [false, false, true, true]);
        drop(c);
    }
}
