//! A repository in a local directory.
//!
//! Layout: `config`, `keys/`, `snapshots/`, `index/`, `data/XX/` where XX is
//! the first two hex characters of a pack name. Writes go to a temporary file
//! `NAME.tmp-RANDOM` in the target directory, are fsynced, then hard-linked to
//! their final name (which fails if the name exists: write-if-absent, no
//! overwrite) and the directory is fsynced.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Backend, FileInfo, FileType, WriteOutcome};
use crate::error::{Error, IoContext, Result};

/// A repository directory on a local file system.
#[derive(Debug)]
pub struct LocalBackend {
    root: PathBuf,
    /// Open pack files for ranged reads (restore reads many blobs of one pack).
    open_files: Mutex<HashMap<PathBuf, Arc<File>>>,
    /// Staged files may be unnamed (`O_TMPFILE`); off in a test of the
    /// named ones.
    unnamed: bool,
}

/// How many pack files [`LocalBackend`] keeps open for reading.
const OPEN_FILES: usize = 64;

impl LocalBackend {
    /// A backend rooted at `root` (not touched until used).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend {
            root: root.into(),
            open_files: Mutex::new(HashMap::new()),
            unnamed: true,
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, t: FileType) -> PathBuf {
        match t {
            FileType::Config => self.root.clone(),
            _ => self.root.join(t.dir()),
        }
    }

    fn path(&self, t: FileType, name: &str) -> Result<PathBuf> {
        // Names come from our own code or from listings; still, never let one
        // leave the repository directory.
        if name.is_empty() || name.contains('/') || name.contains('\0') || name.starts_with('.') {
            return Err(Error::InvalidInput(format!(
                "invalid {} file name {name:?}",
                t.what()
            )));
        }
        Ok(match t {
            FileType::Pack if name.len() >= 2 => self.dir(t).join(&name[..2]).join(name),
            _ => self.dir(t).join(name),
        })
    }
}

fn missing(t: FileType, name: &str) -> Error {
    Error::Missing {
        what: t.what(),
        id: name.to_string(),
    }
}

/// Names a written, fsynced temporary file `p` (a hard link: fails if `p`
/// exists, so never an overwrite) and makes the name durable.
fn publish(tmp: &Path, p: &Path) -> Result<WriteOutcome> {
    match fs::hard_link(tmp, p) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(WriteOutcome::AlreadyExists),
        Err(e) => return Err(Error::io(format!("link {}", p.display()), e)),
    }
    sync_dir(p.parent().expect("object paths have a parent"))?;
    Ok(WriteOutcome::Created)
}

/// A file written before its name is known ([`Backend::stage`]): an
/// unnamed file of its type's directory, or a named temporary one there,
/// linked under its name in [`super::Staged::commit`]; the named one is
/// removed when dropped (after the link, or without one).
struct LocalStaged<'a> {
    backend: &'a LocalBackend,
    t: FileType,
    tmp: Option<PathBuf>,
    file: File,
}

impl std::io::Write for LocalStaged<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl super::Staged for LocalStaged<'_> {
    fn commit(self: Box<Self>, name: &str) -> Result<WriteOutcome> {
        let p = self.backend.path(self.t, name)?;
        if p.exists() {
            return Ok(WriteOutcome::AlreadyExists);
        }
        self.file
            .sync_all()
            .ctx(|| format!("fsync the new {} {name}", self.t.what()))?;
        if let Some(tmp) = &self.tmp {
            return publish(tmp, &p);
        }
        use std::os::fd::AsRawFd;
        let unnamed = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        match nix::unistd::linkat(
            None,
            Path::new(&unnamed),
            None,
            p.as_path(),
            nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
        ) {
            Ok(()) => {}
            Err(nix::errno::Errno::EEXIST) => return Ok(WriteOutcome::AlreadyExists),
            Err(e) => {
                return Err(Error::io(
                    format!("link {}", p.display()),
                    std::io::Error::from(e),
                ))
            }
        }
        sync_dir(p.parent().expect("object paths have a parent"))?;
        Ok(WriteOutcome::Created)
    }
}

impl Drop for LocalStaged<'_> {
    fn drop(&mut self) {
        if let Some(tmp) = &self.tmp {
            let _ = fs::remove_file(tmp);
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("fsync directory {}", dir.display()))
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn create(&self) -> Result<()> {
        if self.root.join("config").exists() {
            return Err(Error::AlreadyExists(self.location()));
        }
        fs::create_dir_all(&self.root)
            .ctx(|| format!("create repository directory {}", self.root.display()))?;
        for t in [
            FileType::Key,
            FileType::Snapshot,
            FileType::Index,
            FileType::Pack,
            FileType::Policy,
            FileType::PruneState,
            FileType::Running,
            FileType::Proof,
        ] {
            let d = self.dir(t);
            fs::create_dir_all(&d).ctx(|| format!("create {}", d.display()))?;
        }
        for i in 0..=255u8 {
            let d = self.dir(FileType::Pack).join(hex::encode([i]));
            fs::create_dir_all(&d).ctx(|| format!("create {}", d.display()))?;
        }
        // Make the layout durable before anything is written into it.
        sync_dir(&self.dir(FileType::Pack))?;
        sync_dir(&self.root)?;
        match self.root.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
            _ => Ok(()),
        }
    }

    fn list(&self, t: FileType) -> Result<Vec<FileInfo>> {
        let mut out = Vec::new();
        let mut dirs = vec![self.dir(t)];
        if t == FileType::Pack {
            // Every data/XX folder or an error: a folder dropped from the
            // listing would make its packs look missing (or unused).
            let top = self.dir(t);
            let context = || format!("list {}", top.display());
            dirs = match fs::read_dir(&top) {
                Ok(rd) => {
                    let mut dirs = Vec::new();
                    for e in rd {
                        let e = e.ctx(context)?;
                        if e.file_type().ctx(context)?.is_dir() {
                            dirs.push(e.path());
                        }
                    }
                    dirs
                }
                Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(Error::io(context(), e)),
            };
        }
        for d in dirs {
            let rd = match fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("list {}", d.display()), e)),
            };
            for e in rd {
                let e = e.ctx(|| format!("list {}", d.display()))?;
                let name = e.file_name().to_string_lossy().into_owned();
                if t == FileType::Config {
                    if name != "config" {
                        continue;
                    }
                } else if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                    continue; // temporary files and strangers
                }
                let md = match e.metadata() {
                    Ok(md) => md,
                    // Deleted between the directory read and the stat (a
                    // running marker whose backup just ended): gone.
                    Err(err) if err.kind() == ErrorKind::NotFound => continue,
                    Err(err) => return Err(Error::io(format!("stat {}", e.path().display()), err)),
                };
                if md.is_file() {
                    out.push(FileInfo {
                        name,
                        size: md.len(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn read(&self, t: FileType, name: &str) -> Result<Vec<u8>> {
        let p = self.path(t, name)?;
        match fs::read(&p) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(missing(t, name)),
            Err(e) => Err(Error::io(format!("read {}", p.display()), e)),
        }
    }

    fn read_stream(&self, t: FileType, name: &str) -> Result<Box<dyn std::io::Read + Send>> {
        let p = self.path(t, name)?;
        match File::open(&p) {
            Ok(f) => Ok(Box::new(f)),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(missing(t, name)),
            Err(e) => Err(Error::io(format!("read {}", p.display()), e)),
        }
    }

    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
        let p = self.path(t, name)?;
        let cached = self.open_files.lock().expect("open files").get(&p).cloned();
        let f = match cached {
            Some(f) => f,
            None => {
                let f = match File::open(&p) {
                    Ok(f) => Arc::new(f),
                    Err(e) if e.kind() == ErrorKind::NotFound => return Err(missing(t, name)),
                    Err(e) => return Err(Error::io(format!("open {}", p.display()), e)),
                };
                let mut files = self.open_files.lock().expect("open files");
                if files.len() >= OPEN_FILES {
                    files.clear();
                }
                files.insert(p.clone(), f.clone());
                f
            }
        };
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, offset)
            .ctx(|| format!("read {} bytes at {offset} of {}", len, p.display()))?;
        Ok(buf)
    }

    fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<WriteOutcome> {
        self.write_from(t, name, &mut &data[..])
    }

    fn write_from_gathers(&self) -> bool {
        false
    }

    fn write_from(&self, t: FileType, name: &str, src: &mut dyn Read) -> Result<WriteOutcome> {
        let p = self.path(t, name)?;
        if p.exists() {
            return Ok(WriteOutcome::AlreadyExists);
        }
        let dir = p
            .parent()
            .expect("object paths have a parent")
            .to_path_buf();
        let mut rnd = [0u8; 8];
        crate::crypto::random_bytes(&mut rnd);
        let tmp = dir.join(format!(".{name}.tmp-{}", hex::encode(rnd)));
        let result = (|| {
            let mut f = match OpenOptions::new().write(true).create_new(true).open(&tmp) {
                Ok(f) => f,
                // A repository made before this file type existed lacks its
                // directory; make it (packs always have theirs).
                Err(e) if e.kind() == ErrorKind::NotFound && t != FileType::Pack => {
                    fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
                    OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&tmp)
                        .ctx(|| format!("create {}", tmp.display()))?
                }
                Err(e) => return Err(Error::io(format!("create {}", tmp.display()), e)),
            };
            std::io::copy(src, &mut f).ctx(|| format!("write {}", tmp.display()))?;
            f.sync_all().ctx(|| format!("fsync {}", tmp.display()))?;
            drop(f);
            publish(&tmp, &p)
        })();
        let _ = fs::remove_file(&tmp);
        result
    }

    fn stage(&self, t: FileType) -> Result<Option<Box<dyn super::Staged + '_>>> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = self.dir(t);
        // An unnamed file (O_TMPFILE) where the file system has them and
        // /proc can name it on commit: no sweep of stale temporaries can
        // take it from a backup that fills it slowly, and a crash leaves
        // nothing. Elsewhere a named temporary file.
        if self.unnamed && Path::new("/proc/self/fd").is_dir() {
            match OpenOptions::new()
                .write(true)
                .custom_flags(nix::libc::O_TMPFILE)
                .open(&dir)
            {
                Ok(file) => {
                    return Ok(Some(Box::new(LocalStaged {
                        backend: self,
                        t,
                        tmp: None,
                        file,
                    })))
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(nix::libc::EOPNOTSUPP | nix::libc::EISDIR | nix::libc::EINVAL)
                    ) => {}
                Err(e) => return Err(Error::io(format!("create a file in {}", dir.display()), e)),
            }
        }
        let mut rnd = [0u8; 8];
        crate::crypto::random_bytes(&mut rnd);
        let tmp = dir.join(format!(".staged.tmp-{}", hex::encode(rnd)));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .ctx(|| format!("create {}", tmp.display()))?;
        Ok(Some(Box::new(LocalStaged {
            backend: self,
            t,
            tmp: Some(tmp),
            file,
        })))
    }

    fn modified(&self, t: FileType, name: &str) -> Result<Option<std::time::SystemTime>> {
        let p = self.path(t, name)?;
        match fs::metadata(&p) {
            Ok(md) => Ok(md.modified().ok()),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(missing(t, name)),
            Err(e) => Err(Error::io(format!("stat {}", p.display()), e)),
        }
    }

    fn connections(&self) -> usize {
        // One writer keeps a local disk busy; more only hold more packs in memory.
        1
    }

    fn remove_stale_temporaries(&self, older_than: std::time::Duration) -> Result<u64> {
        let mut dirs: Vec<PathBuf> = FileType::ALL.iter().map(|t| self.dir(*t)).collect();
        if let Ok(rd) = fs::read_dir(self.dir(FileType::Pack)) {
            dirs.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
        dirs.sort();
        dirs.dedup();
        let mut removed = 0;
        for d in dirs {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if !(name.starts_with('.') && name.contains(".tmp-")) {
                    continue;
                }
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .is_some_and(|age| age >= older_than);
                if old && fs::remove_file(e.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    fn foreign_entries(&self) -> Result<Vec<String>> {
        let rd = match fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("list {}", self.root.display()), e)),
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e.ctx(|| format!("list {}", self.root.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = FileType::ALL.iter().any(|t| t.dir() == name)
                || name == "config"
                || name.starts_with('.') && name.contains(".tmp-");
            // What file systems keep at the top of a volume: a repository
            // at the root of a new disk is fine.
            let volume = matches!(
                name.as_str(),
                "lost+found"
                    | ".Trashes"
                    | ".Spotlight-V100"
                    | ".fseventsd"
                    | "System Volume Information"
            ) || name.starts_with(".Trash-");
            if !ours && !volume {
                out.push(name);
            }
        }
        out.sort();
        if out.len() > 5 {
            let more = out.len() - 4;
            out.truncate(4);
            out.push(format!("{more} more"));
        }
        Ok(out)
    }

    fn delete(&self, t: FileType, name: &str) -> Result<()> {
        let p = self.path(t, name)?;
        self.open_files.lock().expect("open files").remove(&p);
        match fs::remove_file(&p) {
            // Index and snapshot deletions must not come back after a power
            // loss once later steps rely on them; a pack that comes back is
            // only garbage for the next prune.
            Ok(()) if t != FileType::Pack => {
                sync_dir(p.parent().expect("object paths have a parent"))
            }
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("delete {}", p.display()), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_backend_conformance() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("repo"));
        crate::backend::conformance::run(&b);
    }

    /// The same where staged files are named temporaries (file systems
    /// without `O_TMPFILE`, or no `/proc`).
    #[test]
    fn local_backend_conformance_with_named_staged_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = LocalBackend::new(dir.path().join("repo"));
        b.unnamed = false;
        crate::backend::conformance::run(&b);
    }

    #[test]
    fn names_cannot_escape() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        assert!(b.read(FileType::Snapshot, "../config").is_err());
        assert!(b.write(FileType::Key, ".hidden", b"x").is_err());
    }
}
