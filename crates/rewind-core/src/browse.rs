//! Looking into snapshots: ls, find, diff, dump.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind};
use crate::id::{BlobId, SnapshotId};
use crate::repository::Repository;

/// Calls `f` for every node below `tree` (depth-first, parents first), with
/// its path (`base` joined with the names).
pub fn walk(
    repo: &Repository,
    tree: &BlobId,
    base: &Path,
    recursive: bool,
    f: &mut dyn FnMut(&Path, &Node) -> Result<()>,
) -> Result<()> {
    let t = repo.read_tree(tree)?;
    for n in &t.nodes {
        let p = base.join(OsStr::from_bytes(&n.name));
        f(&p, n)?;
        if recursive {
            if let NodeKind::Dir { subtree } = &n.kind {
                walk(repo, subtree, &p, true, f)?;
            }
        }
    }
    Ok(())
}

/// Entries at `path` of a snapshot: a directory's children (all descendants
/// with `recursive`), or the node itself.
pub fn ls(
    repo: &Repository,
    root: &BlobId,
    path: &Path,
    recursive: bool,
) -> Result<Vec<(PathBuf, Node)>> {
    let mut out = Vec::new();
    let mut push = |p: &Path, n: &Node| {
        out.push((p.to_path_buf(), n.clone()));
        Ok(())
    };
    match crate::restorer::find_node(repo, root, path)? {
        None => walk(repo, root, Path::new("/"), recursive, &mut push)?,
        Some(n) => match &n.kind {
            NodeKind::Dir { subtree } => walk(
                repo,
                subtree,
                &Path::new("/").join(path.strip_prefix("/").unwrap_or(path)),
                recursive,
                &mut push,
            )?,
            _ => push(
                &Path::new("/").join(path.strip_prefix("/").unwrap_or(path)),
                &n,
            )?,
        },
    }
    Ok(out)
}

/// One hit of [`find`].
#[derive(Clone, Debug)]
pub struct FindMatch {
    /// Snapshot holding it.
    pub snapshot: SnapshotId,
    /// Snapshot time.
    pub time: jiff::Timestamp,
    /// Path in the snapshot.
    pub path: PathBuf,
    /// The node.
    pub node: Node,
}

/// Every path matching `pattern` (gitignore syntax: `*.pdf`, `report.docx`,
/// `/home/*/notes/**`) in each of `snapshots`.
pub fn find(
    repo: &Repository,
    snapshots: &[(SnapshotId, crate::format::snapshot::SnapshotFile)],
    pattern: &str,
) -> Result<Vec<FindMatch>> {
    let mut b = ignore::gitignore::GitignoreBuilder::new("/");
    b.add_line(None, pattern)
        .map_err(|e| Error::InvalidInput(format!("bad pattern {pattern:?}: {e}")))?;
    let m = b
        .build()
        .map_err(|e| Error::InvalidInput(format!("bad pattern {pattern:?}: {e}")))?;
    // Subtrees are shared between snapshots: remember the hits of each
    // (tree, path) once.
    let mut memo: HashMap<(BlobId, PathBuf), Vec<(PathBuf, Node)>> = HashMap::new();
    fn hits(
        repo: &Repository,
        m: &ignore::gitignore::Gitignore,
        tree: &BlobId,
        base: &Path,
        memo: &mut HashMap<(BlobId, PathBuf), Vec<(PathBuf, Node)>>,
    ) -> Result<Vec<(PathBuf, Node)>> {
        if let Some(h) = memo.get(&(*tree, base.to_path_buf())) {
            return Ok(h.clone());
        }
        let t = repo.read_tree(tree)?;
        let mut out = Vec::new();
        for n in &t.nodes {
            let p = base.join(OsStr::from_bytes(&n.name));
            if m.matched(&p, n.is_dir()).is_ignore() {
                out.push((p.clone(), n.clone()));
            }
            if let NodeKind::Dir { subtree } = &n.kind {
                out.extend(hits(repo, m, subtree, &p, memo)?);
            }
        }
        memo.insert((*tree, base.to_path_buf()), out.clone());
        Ok(out)
    }
    let mut out = Vec::new();
    for (id, s) in snapshots {
        for (path, node) in hits(repo, &m, &s.tree, Path::new("/"), &mut memo)? {
            out.push(FindMatch {
                snapshot: *id,
                time: s.time,
                path,
                node,
            });
        }
    }
    Ok(out)
}

/// A difference between two snapshots.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Change {
    /// Only in the second.
    Added,
    /// Only in the first.
    Removed,
    /// Content or type differs.
    Modified,
    /// Same content, other metadata (mode, owner, mtime, xattrs).
    Metadata,
}

/// Lists what changed from tree `a` to tree `b`.
pub fn diff(repo: &Repository, a: &BlobId, b: &BlobId) -> Result<Vec<(PathBuf, Change)>> {
    let mut out = Vec::new();
    walk_pair(
        &|id| repo.read_tree(id),
        Some(a),
        Some(b),
        Path::new("/"),
        &mut |p, x, y| {
            let change = match (x, y) {
                (Some(_), None) => Some(Change::Removed),
                (None, Some(_)) => Some(Change::Added),
                (Some(x), Some(y)) => match (&x.kind, &y.kind) {
                    (NodeKind::Dir { .. }, NodeKind::Dir { .. }) => {
                        meta_differs(x, y).then_some(Change::Metadata)
                    }
                    (ka, kb) if ka != kb || x.size != y.size => Some(Change::Modified),
                    _ => meta_differs(x, y).then_some(Change::Metadata),
                },
                (None, None) => None,
            };
            if let Some(c) = change {
                out.push((p.to_path_buf(), c));
            }
        },
    )?;
    Ok(out)
}

/// Walks two trees side by side in name order: `visit(path, old, new)` for
/// every entry present in either (None where it is absent), then into the
/// subtrees of directories on either side. Identical subtrees are skipped
/// without being read. `read` reads a tree (the repository's, or one that
/// also knows blobs a running backup just wrote).
pub fn walk_pair<V>(
    read: &dyn Fn(&BlobId) -> Result<crate::format::tree::Tree>,
    a: Option<&BlobId>,
    b: Option<&BlobId>,
    base: &Path,
    visit: &mut V,
) -> Result<()>
where
    V: FnMut(&Path, Option<&Node>, Option<&Node>),
{
    if a == b {
        return Ok(());
    }
    let ta = match a {
        Some(id) => read(id)?.nodes,
        None => Vec::new(),
    };
    let tb = match b {
        Some(id) => read(id)?.nodes,
        None => Vec::new(),
    };
    let sub = |n: Option<&Node>| match n.map(|n| &n.kind) {
        Some(NodeKind::Dir { subtree }) => Some(*subtree),
        _ => None,
    };
    let (mut i, mut j) = (0, 0);
    while i < ta.len() || j < tb.len() {
        let ord = match (ta.get(i), tb.get(j)) {
            (Some(x), Some(y)) => x.name.cmp(&y.name),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        let (x, y) = match ord {
            std::cmp::Ordering::Less => (ta.get(i), None),
            std::cmp::Ordering::Greater => (None, tb.get(j)),
            std::cmp::Ordering::Equal => (ta.get(i), tb.get(j)),
        };
        let name = &x.or(y).expect("one side").name;
        let p = base.join(OsStr::from_bytes(name));
        visit(&p, x, y);
        walk_pair(read, sub(x).as_ref(), sub(y).as_ref(), &p, visit)?;
        if ord != std::cmp::Ordering::Greater {
            i += 1;
        }
        if ord != std::cmp::Ordering::Less {
            j += 1;
        }
    }
    Ok(())
}

fn meta_differs(x: &Node, y: &Node) -> bool {
    x.mode != y.mode
        || x.uid != y.uid
        || x.gid != y.gid
        || x.mtime != y.mtime
        || x.xattrs != y.xattrs
}

/// Reads a file node's content, holes as zeros, blob by blob.
pub struct FileReader<'a> {
    repo: &'a Repository,
    content: std::slice::Iter<'a, BlobId>,
    holes: std::iter::Peekable<std::slice::Iter<'a, crate::format::tree::Hole>>,
    size: u64,
    pos: u64,
    buf: Vec<u8>,
    buf_pos: usize,
    zeros: u64,
}

impl<'a> FileReader<'a> {
    /// A reader of `node`, which must be a file.
    pub fn new(repo: &'a Repository, node: &'a Node) -> Result<Self> {
        let NodeKind::File { content, holes } = &node.kind else {
            return Err(Error::InvalidInput(format!(
                "{} is not a file",
                node.name_lossy()
            )));
        };
        Ok(FileReader {
            repo,
            content: content.iter(),
            holes: holes.iter().peekable(),
            size: node.size,
            pos: 0,
            buf: Vec::new(),
            buf_pos: 0,
            zeros: 0,
        })
    }
}

impl Read for FileReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.zeros > 0 {
                let n = (self.zeros.min(out.len() as u64)) as usize;
                out[..n].fill(0);
                self.zeros -= n as u64;
                self.pos += n as u64;
                return Ok(n);
            }
            if self.buf_pos < self.buf.len() {
                let n = (self.buf.len() - self.buf_pos).min(out.len());
                out[..n].copy_from_slice(&self.buf[self.buf_pos..self.buf_pos + n]);
                self.buf_pos += n;
                self.pos += n as u64;
                return Ok(n);
            }
            if let Some(h) = self.holes.peek() {
                if h.offset == self.pos {
                    self.zeros = h.length;
                    self.holes.next();
                    continue;
                }
            }
            match self.content.next() {
                Some(id) => {
                    self.buf = self.repo.read_blob(id).map_err(std::io::Error::other)?;
                    self.buf_pos = 0;
                }
                None if self.pos < self.size => self.zeros = self.size - self.pos,
                None => return Ok(0),
            }
        }
    }
}

/// Writes a tar archive of `node` (a directory with everything below it, or
/// one entry) to `out`, with paths relative to `name`. GNU tar reads it back
/// exactly: hard links stay links (the second and later paths of one inode
/// are link entries), and a PAX extended header carries what the tar header
/// cannot: the modification time to the nanosecond (before 1970 too) and the
/// extended attributes (`SCHILY.xattr.NAME`, `tar -x --xattrs`).
pub fn dump_tar(repo: &Repository, node: &Node, name: &Path, out: impl Write) -> Result<()> {
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Complete);
    let mut links = HashMap::new();
    append(repo, &mut tar, node, name, &mut links)?;
    if let NodeKind::Dir { subtree } = &node.kind {
        walk(repo, subtree, name, true, &mut |p, n| {
            append(repo, &mut tar, n, p, &mut links)
        })?;
    }
    tar.finish().map_err(|e| Error::io("write tar", e))
}

/// One PAX record: `LEN key=value\n`, where LEN counts the whole record,
/// its own digits included.
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut r = len.to_string().into_bytes();
    r.push(b' ');
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// A PAX time: seconds and nanoseconds as a decimal, negative before 1970.
fn pax_time(t: &crate::format::tree::Time) -> String {
    let total = i128::from(t.secs) * 1_000_000_000 + i128::from(t.nanos);
    let sign = if total < 0 { "-" } else { "" };
    let abs = total.unsigned_abs();
    format!("{sign}{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000)
}

/// The PAX extended header of an entry, if it needs one.
fn pax_header<W: Write>(tar: &mut tar::Builder<W>, n: &Node, path: &Path) -> std::io::Result<()> {
    let mut data = pax_record(b"mtime", pax_time(&n.mtime).as_bytes());
    for x in &n.xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(&x.name);
        data.extend(pax_record(&key, &x.value));
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    // The conventional name; tar never extracts it.
    let base = path.file_name().map(|f| f.as_bytes()).unwrap_or(b"root");
    let mut name = b"PaxHeaders/".to_vec();
    name.extend_from_slice(&base[..base.len().min(80)]);
    h.set_path(OsStr::from_bytes(&name))?;
    h.set_cksum();
    tar.append(&h, data.as_slice())
}

fn append<W: Write>(
    repo: &Repository,
    tar: &mut tar::Builder<W>,
    n: &Node,
    path: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_mode(n.mode & 0o7777);
    h.set_uid(u64::from(n.uid));
    h.set_gid(u64::from(n.gid));
    h.set_mtime(n.mtime.secs.max(0) as u64);
    if let Some(u) = &n.user {
        let _ = h.set_username(u);
    }
    if let Some(g) = &n.group {
        let _ = h.set_groupname(g);
    }
    let io = |e| Error::io(format!("write tar entry {}", path.display()), e);
    if matches!(n.kind, NodeKind::Socket) {
        return Ok(());
    }
    // The second and later paths of one inode: a link to the first.
    if n.is_file() && n.links > 1 {
        match links.entry((n.device, n.inode)) {
            std::collections::hash_map::Entry::Occupied(first) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                return tar.append_link(&mut h, path, first.get()).map_err(io);
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(path.to_path_buf());
            }
        }
    }
    pax_header(tar, n, path).map_err(io)?;
    match &n.kind {
        NodeKind::Dir { .. } => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            tar.append_data(&mut h, path, std::io::empty()).map_err(io)
        }
        NodeKind::File { .. } => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(n.size);
            tar.append_data(&mut h, path, FileReader::new(repo, n)?)
                .map_err(io)
        }
        NodeKind::Symlink { target } => {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            tar.append_link(&mut h, path, OsStr::from_bytes(target))
                .map_err(io)
        }
        NodeKind::Fifo => {
            h.set_entry_type(tar::EntryType::Fifo);
            h.set_size(0);
            tar.append_data(&mut h, path, std::io::empty()).map_err(io)
        }
        NodeKind::CharDevice { rdev } | NodeKind::BlockDevice { rdev } => {
            h.set_entry_type(if matches!(n.kind, NodeKind::CharDevice { .. }) {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            });
            h.set_size(0);
            let _ = h.set_device_major(nix::sys::stat::major(*rdev) as u32);
            let _ = h.set_device_minor(nix::sys::stat::minor(*rdev) as u32);
            tar.append_data(&mut h, path, std::io::empty()).map_err(io)
        }
        NodeKind::Socket => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_count_their_own_length() {
        assert_eq!(pax_record(b"mtime", b"1.5"), b"13 mtime=1.5\n");
        // Long enough that the length needs three digits.
        let r = pax_record(b"SCHILY.xattr.user.x", &[b'v'; 79]);
        assert_eq!(r.len(), 104);
        assert!(r.starts_with(b"104 SCHILY.xattr.user.x="));
        let t = |secs, nanos| pax_time(&crate::format::tree::Time { secs, nanos });
        assert_eq!(t(1, 5), "1.000000005");
        assert_eq!(t(-1001, 999_999_958), "-1000.000000042");
        assert_eq!(t(0, 0), "0.000000000");
    }
}
