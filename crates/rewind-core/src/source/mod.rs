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
