//! Paths longer than the kernel's PATH_MAX (4,096 bytes with the final NUL
//! on Linux). Each component of such a path is at most 255 bytes and such
//! trees exist (deep `node_modules`, generated trees), but every system call
//! given the whole path fails with ENAMETOOLONG.
//!
//! [`short`] gives a name the kernel accepts for any path:
//!
//! - a path of at most [`MAX_PATH`] bytes is itself, with no system call:
//!   normal trees take exactly the calls they took before;
//! - a longer one becomes `/proc/self/fd/N/NAME`, where `N` is an open
//!   descriptor of the directory that holds `NAME`. The kernel resolves
//!   `/proc/self/fd/N` to that open directory (not to its path), so a call
//!   on the short name acts on `NAME` inside the open directory, like the
//!   `*at` call relative to `N` would, and the last component keeps its
//!   meaning (`lstat`, `O_NOFOLLOW`, `lchown`, `llistxattr`... do not follow
//!   it). The short name works with std's calls and types (`Metadata`,
//!   `File`, `read_dir`, `rename`) and the xattr crate's path calls: nix 0.29
//!   hands out raw descriptors, which safe code cannot make a `File` of (the
//!   workspace forbids unsafe code).
//!
//! The directory is opened relative to open directories: the longest prefix
//! of its path that the kernel accepts is opened as one path (so it means
//! what it means in a short path: the restore target may be a symlink to a
//! directory), then each further component with `openat(O_PATH |
//! O_DIRECTORY | O_NOFOLLOW)`, which never follows a symlink. The descriptor
//! lives as long as the [`Short`] and is closed with it.
//!
//! Long paths need `/proc`, as mounted on every ordinary Linux system;
//! without it they fail as they did before (with ENOENT).

use std::borrow::Cow;
use std::ffi::OsStr;
use std::io;
use std::ops::Deref;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// The longest path the kernel takes: PATH_MAX counts the final NUL.
pub const MAX_PATH: usize = nix::libc::PATH_MAX as usize - 1;

/// An open descriptor, closed on drop.
#[derive(Debug)]
struct Fd(RawFd);

impl Drop for Fd {
    fn drop(&mut self) {
        let _ = nix::unistd::close(self.0);
    }
}

/// A name of a path that the kernel accepts (see the module). Use it as a
/// `&Path` while it lives.
#[derive(Debug)]
pub struct Short<'a> {
    path: Cow<'a, Path>,
    /// The open directory that `path` names through /proc.
    _dir: Option<Fd>,
}

impl Short<'_> {
    /// The name to give the system call.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Deref for Short<'_> {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for Short<'_> {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

/// True when the kernel refuses `path` as a whole.
pub fn is_long(path: &Path) -> bool {
    path.as_os_str().len() > MAX_PATH
}

/// A name of `path` that the kernel accepts: `path` itself when it is short
/// enough (no system call), else the entry's name in its open parent
/// directory. Fails as opening the parent directories fails (ENOENT,
/// ENOTDIR, ELOOP for a symlink among the components past the first
/// [`MAX_PATH`] bytes).
pub fn short(path: &Path) -> io::Result<Short<'_>> {
    if !is_long(path) {
        return Ok(Short {
            path: Cow::Borrowed(path),
            _dir: None,
        });
    }
    let (parent, name) = match (path.parent(), path.components().next_back()) {
        (Some(parent), Some(Component::Normal(name))) => (parent, name),
        _ => {
            // Ends in `..` or `.`: the directory itself, opened whole.
            let dir = open_dir(path)?;
            return Ok(Short {
                path: Cow::Owned(proc_name(&dir, OsStr::new(""))),
                _dir: Some(dir),
            });
        }
    };
    let dir = open_dir(parent)?;
    Ok(Short {
        path: Cow::Owned(proc_name(&dir, name)),
        _dir: Some(dir),
    })
}

fn proc_name(dir: &Fd, name: &OsStr) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.0));
    if !name.is_empty() {
        p.push(name);
    }
    p
}

/// Opens the directory `path` (O_PATH): its longest prefix that fits in
/// [`MAX_PATH`] as one path, the rest one component at a time without
/// following symlinks.
fn open_dir(path: &Path) -> io::Result<Fd> {
    let bytes = path.as_os_str().as_bytes();
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let (head, rest): (&[u8], &[u8]) = if bytes.len() <= MAX_PATH {
        (bytes, b"")
    } else {
        // The last `/` that keeps the head short enough.
        match bytes[..=MAX_PATH].iter().rposition(|&b| b == b'/') {
            Some(0) => (b"/", &bytes[1..]),
            Some(i) => (&bytes[..i], &bytes[i + 1..]),
            // No `/` in the first MAX_PATH bytes: a component that long
            // cannot exist.
            None => return Err(nix::errno::Errno::ENAMETOOLONG.into()),
        }
    };
    let head: &Path = if head.is_empty() {
        Path::new(".")
    } else {
        Path::new(OsStr::from_bytes(head))
    };
    let mut dir = Fd(nix::fcntl::open(head, flags, Mode::empty())?);
    for c in rest.split(|&b| b == b'/') {
        if c.is_empty() || c == b"." {
            continue;
        }
        dir = Fd(nix::fcntl::openat(
            Some(dir.0),
            OsStr::from_bytes(c),
            flags | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )?);
    }
    Ok(dir)
}

// ------------------------------------------------------------ std::fs calls
//
// std's calls that restore and verify make, for any path: each call takes
// the short name of its path(s). A long path costs one walk per call, which
// is fine for the rare entries that deep.

/// [`std::fs::symlink_metadata`] of any path.
pub fn symlink_metadata<P: AsRef<Path>>(path: P) -> io::Result<std::fs::Metadata> {
    std::fs::symlink_metadata(short(path.as_ref())?)
}

/// [`std::fs::read_dir`] of any path. Use the entries' names, not
/// `DirEntry::path` (a name through a descriptor that is closed on return).
pub fn read_dir<P: AsRef<Path>>(path: P) -> io::Result<std::fs::ReadDir> {
    std::fs::read_dir(short(path.as_ref())?)
}

/// Opens any path with `opts`.
pub fn open<P: AsRef<Path>>(opts: &std::fs::OpenOptions, path: P) -> io::Result<std::fs::File> {
    opts.open(short(path.as_ref())?)
}

/// [`std::fs::create_dir`] of any path.
pub fn create_dir<P: AsRef<Path>>(path: P) -> io::Result<()> {
    std::fs::create_dir(short(path.as_ref())?)
}

/// [`std::fs::remove_file`] of any path (a symlink itself is removed).
pub fn remove_file<P: AsRef<Path>>(path: P) -> io::Result<()> {
    std::fs::remove_file(short(path.as_ref())?)
}

/// [`std::fs::remove_dir_all`] of any path: it never follows a symlink, and
/// below its top it works relative to open directories.
pub fn remove_dir_all<P: AsRef<Path>>(path: P) -> io::Result<()> {
    std::fs::remove_dir_all(short(path.as_ref())?)
}

/// [`std::fs::rename`] between any paths.
pub fn rename<P: AsRef<Path>, Q: AsRef<Path>>(from: P, to: Q) -> io::Result<()> {
    std::fs::rename(short(from.as_ref())?, short(to.as_ref())?)
}

/// [`std::fs::hard_link`] between any paths (`src` is not followed).
pub fn hard_link<P: AsRef<Path>, Q: AsRef<Path>>(src: P, dst: Q) -> io::Result<()> {
    std::fs::hard_link(short(src.as_ref())?, short(dst.as_ref())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    /// `top/aaa…/bbb…/…` of `depth` 200-byte components.
    fn deep(top: &Path, depth: usize) -> PathBuf {
        let mut p = top.to_path_buf();
        for i in 0..depth {
            p.push(std::iter::repeat_n((b'a' + i as u8) as char, 200).collect::<String>());
        }
        p
    }

    #[test]
    fn short_paths_are_themselves() {
        let p = Path::new("/tmp/x/y");
        let s = short(p).unwrap();
        assert!(matches!(s.path, Cow::Borrowed(_)));
        assert_eq!(s.path(), p);
        let p = PathBuf::from(format!("/{}", "a/".repeat(MAX_PATH / 2 - 1)));
        assert!(p.as_os_str().len() <= MAX_PATH);
        assert!(matches!(short(&p).unwrap().path, Cow::Borrowed(_)));
    }

    #[test]
    fn long_paths_work_like_short_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().canonicalize().unwrap();
        let d = deep(&top, 30);
        assert!(is_long(&d));
        // Every level made through its short name.
        let mut p = top.clone();
        for c in d.strip_prefix(&top).unwrap().components() {
            p.push(c);
            fs::create_dir(short(&p).unwrap()).unwrap();
        }
        assert_eq!(
            fs::create_dir(&d).unwrap_err().raw_os_error(),
            Some(nix::libc::ENAMETOOLONG),
            "the kernel takes this path: the test proves nothing"
        );
        let f = d.join("file");
        fs::write(short(&f).unwrap(), b"content").unwrap();
        assert_eq!(fs::read(short(&f).unwrap()).unwrap(), b"content");
        let md = fs::symlink_metadata(short(&f).unwrap()).unwrap();
        assert!(md.is_file() && md.len() == 7);
        let l = d.join("link");
        std::os::unix::fs::symlink("file", short(&l).unwrap()).unwrap();
        assert!(fs::symlink_metadata(short(&l).unwrap())
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            fs::read_link(short(&l).unwrap()).unwrap(),
            Path::new("file")
        );
        let names: Vec<_> = fs::read_dir(short(&d).unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2);
        // Rename and hard link between two short names of one directory.
        fs::rename(short(&f).unwrap(), short(&d.join("moved")).unwrap()).unwrap();
        fs::hard_link(
            short(&d.join("moved")).unwrap(),
            short(&d.join("linked")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            fs::metadata(short(&d.join("linked")).unwrap())
                .unwrap()
                .nlink(),
            2
        );
        // A symlink among the components past the first MAX_PATH bytes is
        // never followed (one in the head is, as in a short path).
        let mut head = d.clone();
        while head.as_os_str().len() > MAX_PATH {
            head.pop();
        }
        let past = d
            .ancestors()
            .find(|a| a.parent() == Some(head.as_path()))
            .unwrap()
            .to_path_buf();
        let real = past.with_file_name("real");
        fs::rename(short(&past).unwrap(), short(&real).unwrap()).unwrap();
        std::os::unix::fs::symlink("real", short(&past).unwrap()).unwrap();
        let e = short(&d.join("moved")).unwrap_err();
        assert!(
            matches!(
                e.raw_os_error(),
                Some(nix::libc::ELOOP | nix::libc::ENOTDIR)
            ),
            "{e}"
        );
        let via_real = real.join(d.strip_prefix(&past).unwrap()).join("moved");
        assert!(fs::symlink_metadata(short(&via_real).unwrap()).is_ok());
        // A missing directory is NotFound, like for a short path.
        let missing = via_real.with_file_name("nope").join("x");
        assert_eq!(short(&missing).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
