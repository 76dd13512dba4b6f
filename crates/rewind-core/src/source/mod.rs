//! Reading the source file system: node metadata, owners, xattrs, sparse
//! regions. Sources are not backends: this module only reads local files.
//! Paths longer than PATH_MAX are reached through [`at::short`].

pub mod at;

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Mutex;

use crate::format::tree::{Node, NodeKind, Time, Xattr};

/// Caches uid/gid -> name lookups.
#[derive(Debug, Default)]
pub struct Owners {
    users: Mutex<HashMap<u32, Option<String>>>,
    groups: Mutex<HashMap<u32, Option<String>>>,
}

impl Owners {
    /// The user name of a uid.
    pub fn user(&self, uid: u32) -> Option<String> {
        self.users
            .lock()
            .expect("owner cache")
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(uid.into())
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .clone()
    }

    /// The group name of a gid.
    pub fn group(&self, gid: u32) -> Option<String> {
        self.groups
            .lock()
            .expect("owner cache")
            .entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(gid.into())
                    .ok()
                    .flatten()
                    .map(|g| g.name)
            })
            .clone()
    }
}

/// Reads the extended attributes of `path` (not following symlinks): the
/// attributes read, and what could not be read. A file system without
/// xattrs has none (not a problem); an attribute removed meanwhile is gone.
/// A path longer than PATH_MAX is read through its short name ([`at`]).
pub fn read_xattrs(path: &Path) -> (Vec<Xattr>, Vec<String>) {
    let short = match at::short(path) {
        Ok(p) => p,
        Err(e) => {
            return (
                Vec::new(),
                vec![format!("cannot list extended attributes: {e}")],
            )
        }
    };
    let path = short.path();
    let unsupported = |e: &std::io::Error| {
        matches!(
            e.raw_os_error(),
            Some(nix::libc::ENOTSUP) | Some(nix::libc::ENOSYS)
        )
    };
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if unsupported(&e) => return (Vec::new(), Vec::new()),
        Err(e) => {
            return (
                Vec::new(),
                vec![format!("cannot list extended attributes: {e}")],
            )
        }
    };
    let mut problems = Vec::new();
    let mut out: Vec<Xattr> = names
        .filter_map(|n| match xattr::get(path, &n) {
            Ok(value) => value.map(|value| Xattr {
                name: n.as_bytes().to_vec(),
                value,
            }),
            // Gone meanwhile, or an attribute this file system will not
            // hand out although it lists it: nothing to keep.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(nix::libc::ENODATA) | Some(nix::libc::ENOTSUP)
                ) =>
            {
                None
            }
            Err(e) => {
                problems.push(format!(
                    "cannot read extended attribute {}: {e}",
                    n.to_string_lossy()
                ));
                None
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    (out, problems)
}

/// Builds a node from `lstat` metadata. File content and directory subtrees
/// are filled in later; symlink targets are read here. Also returns what
/// could not be read of the extended attributes (the node has the rest).
/// `path` may be longer than PATH_MAX.
pub fn node_from_metadata(
    name: &[u8],
    path: &Path,
    md: &Metadata,
    owners: &Owners,
) -> std::io::Result<(Node, Vec<String>)> {
    let ft = md.file_type();
    let kind = if ft.is_file() {
        NodeKind::File {
            content: Vec::new(),
            holes: Vec::new(),
        }
    } else if ft.is_dir() {
        NodeKind::Dir {
            subtree: Default::default(),
        }
    } else if ft.is_symlink() {
        NodeKind::Symlink {
            target: std::fs::read_link(at::short(path)?)?
                .as_os_str()
                .as_bytes()
                .to_vec(),
        }
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_socket() {
        NodeKind::Socket
    } else if ft.is_char_device() {
        NodeKind::CharDevice { rdev: md.rdev() }
    } else {
        NodeKind::BlockDevice { rdev: md.rdev() }
    };
    let (xattrs, problems) = read_xattrs(path);
    let node = Node {
        name: name.to_vec(),
        kind,
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
        user: owners.user(md.uid()),
        group: owners.group(md.gid()),
        size: if ft.is_file() { md.size() } else { 0 },
        mtime: Time {
            secs: md.mtime(),
            nanos: md.mtime_nsec().clamp(0, 999_999_999) as u32,
        },
        ctime: Time {
            secs: md.ctime(),
            nanos: md.ctime_nsec().clamp(0, 999_999_999) as u32,
        },
        inode: md.ino(),
        device: md.dev(),
        links: md.nlink(),
        xattrs,
    };
    Ok((node, problems))
}

/// True when a file may have holes (fewer blocks allocated than its size).
pub fn maybe_sparse(md: &Metadata) -> bool {
    md.is_file() && md.size() > 0 && md.blocks().saturating_mul(512) < md.size()
}

/// The data regions `(offset, length)` of a file, found with SEEK_DATA and
/// SEEK_HOLE. Falls back to one region when the file system cannot tell.
pub fn data_regions(file: &File, size: u64) -> Vec<(u64, u64)> {
    use nix::unistd::{lseek, Whence};
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    let end = i64::try_from(size).unwrap_or(i64::MAX);
    while pos < end {
        let start = match lseek(fd, pos, Whence::SeekData) {
            Ok(s) => s,
            Err(nix::errno::Errno::ENXIO) => break, // only a hole remains
            Err(_) => return vec![(0, size)],
        };
        if start >= end {
            break;
        }
        let stop = match lseek(fd, start, Whence::SeekHole) {
            Ok(h) => h.min(end),
            Err(_) => return vec![(0, size)],
        };
        out.push((start as u64, (stop - start) as u64));
        pos = stop;
    }
    out
}

/// This machine's host name.
pub fn local_hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// The user running us.
pub fn local_username() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| nix::unistd::getuid().to_string())
}

/// Reads the metadata of the trees at `paths` into the kernel's caches on a
/// few threads of its own, until the handle is dropped: a backup starts it
/// before the key derivation (a core busy for 0.1-0.2 s), so that its scan
/// then finds the inodes in memory instead of waiting for the disk. Advice
/// only: errors are passed over, no file system is crossed, and at most
/// [`WARM_UP_ENTRIES`] entries are looked at.
pub fn warm_up(paths: &[std::path::PathBuf]) -> WarmUp {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicUsize::new(0));
    let dirs = Arc::new(Mutex::new(ToList {
        dirs: paths
            .iter()
            .filter_map(|p| {
                let md = p.symlink_metadata().ok()?;
                md.is_dir().then(|| (p.clone(), md.dev()))
            })
            .collect(),
        listing: 0,
    }));
    for _ in 0..WARM_UP_THREADS {
        let (stop, seen, dirs) = (stop.clone(), seen.clone(), dirs.clone());
        let work = move || {
            while !stop.load(Ordering::Relaxed) && seen.load(Ordering::Relaxed) < WARM_UP_ENTRIES {
                let next = {
                    let mut state = dirs.lock().expect("warm-up");
                    match state.dirs.pop() {
                        Some(dir) => {
                            state.listing += 1;
                            Some(dir)
                        }
                        None if state.listing == 0 => return,
                        None => None,
                    }
                };
                let Some((dir, dev)) = next else {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    continue;
                };
                let mut below = Vec::new();
                for entry in std::fs::read_dir(&dir)
                    .into_iter()
                    .flatten()
                    .map_while(Result::ok)
                {
                    if stop.load(Ordering::Relaxed)
                        || seen.load(Ordering::Relaxed) >= WARM_UP_ENTRIES
                    {
                        break;
                    }
                    seen.fetch_add(1, Ordering::Relaxed);
                    let path = entry.path();
                    if let Ok(md) = path.symlink_metadata() {
                        if md.is_dir() && md.dev() == dev {
                            below.push((path, dev));
                        }
                    }
                }
                let mut state = dirs.lock().expect("warm-up");
                state.dirs.extend(below);
                state.listing -= 1;
            }
        };
        // Without the thread (it could not start) nothing is warmed.
        let _ = std::thread::Builder::new()
            .name("rewind-warm-up".into())
            .spawn(work);
    }
    WarmUp { stop, seen }
}

/// What [`warm_up`]'s threads share: the directories still to list (with
/// their file system), and how many threads are listing one (a thread that
/// finds nothing to list ends only when none is).
struct ToList {
    dirs: Vec<(std::path::PathBuf, u64)>,
    listing: usize,
}

/// Threads of [`warm_up`]: waiting for the disk, not computing.
const WARM_UP_THREADS: usize = 4;
/// Entries [`warm_up`] looks at, at most.
pub const WARM_UP_ENTRIES: usize = 1 << 20;

/// Stops [`warm_up`]'s threads when dropped (they are not waited for).
pub struct WarmUp {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    seen: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl WarmUp {
    /// Entries looked at so far.
    pub fn seen(&self) -> usize {
        self.seen.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for WarmUp {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits until `warm` has seen `n` entries (or 10 s), then a little
    /// more, and returns what it saw.
    fn settle(warm: &WarmUp, n: usize) -> usize {
        let start = std::time::Instant::now();
        while warm.seen() < n && start.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        warm.seen()
    }

    #[test]
    fn the_warm_up_looks_at_every_entry_once_and_follows_no_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        for d in ["a", "a/b", "c"] {
            std::fs::create_dir_all(tmp.path().join(d)).unwrap();
            for f in 0..5 {
                std::fs::write(tmp.path().join(d).join(format!("f{f}")), b"x").unwrap();
            }
        }
        // A link to a directory is an entry; what it points to is not walked.
        std::os::unix::fs::symlink(tmp.path().join("a"), tmp.path().join("c/to-a")).unwrap();
        let warm = warm_up(&[tmp.path().to_path_buf(), tmp.path().join("missing")]);
        // 15 files, a, a/b, c, the link.
        assert_eq!(settle(&warm, 19), 19);
    }
}
