//! `rewind mount`: the repository's history as a read-only FUSE file system.
//!
//! ```text
//! MOUNTPOINT/
//!   snapshots/TIME/...        every snapshot, the paths as backed up
//!   hosts/HOST/TIME/...       the same, by host
//!   tags/TAG/TIME/...         by tag
//!   ids/SHORTID/...           by id
//!   latest -> snapshots/TIME  the newest
//! ```
//!
//! Folders of snapshots are read when first looked at (one tree blob each);
//! a file's chunks are read when a read needs them, through a bounded cache
//! of decrypted chunks. The snapshot list is read again when the top folders
//! are looked at and it is older than a few seconds, so new snapshots appear
//! without remounting.

use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, LockOwner, OpenFlags,
    ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyXattr, Request,
};
use rewind_core::format::tree::{Node, NodeKind, Time};
use rewind_core::id::{BlobId, SnapshotId};
use rewind_core::repository::Repository;

/// How long the kernel may keep what we answer (the history does not change
/// under a snapshot; the top folders do, and get a short time).
const TTL: Duration = Duration::from_secs(60);
const TOP_TTL: Duration = Duration::from_secs(1);
/// How often the snapshot list is read again.
const REFRESH: Duration = Duration::from_secs(5);
/// Decrypted chunks kept for reads.
pub const CACHE_BYTES: usize = 64 << 20;

const ROOT: u64 = 1;

enum Kind {
    /// A folder of the layout (root, snapshots, hosts/HOST, ...).
    Virtual { children: Vec<(OsString, u64)> },
    /// The `latest` link.
    Link(Vec<u8>),
    /// An entry of a snapshot's tree; `tree` is the tree a folder lists.
    Node {
        node: Box<Node>,
        tree: Option<BlobId>,
    },
}

struct Inode {
    parent: u64,
    kind: Kind,
    /// Children of a snapshot folder once read.
    listed: Option<Vec<(OsString, u64)>>,
    /// Time shown for virtual folders.
    time: SystemTime,
}

/// One piece of a file: a chunk or a hole.
#[derive(Clone)]
struct Piece {
    start: u64,
    len: u64,
    blob: Option<BlobId>,
}

struct State {
    inodes: Vec<Inode>,
    /// The root inode of each snapshot, kept across refreshes.
    snapshot_roots: HashMap<SnapshotId, u64>,
    refreshed: Option<Instant>,
    /// Pieces of open files.
    layouts: HashMap<u64, Arc<Vec<Piece>>>,
    cache: HashMap<BlobId, Arc<Vec<u8>>>,
    order: VecDeque<BlobId>,
    cached: usize,
    uid: u32,
    gid: u32,
}

/// The file system.
pub struct HistoryFs {
    /// Written only to read the index again when new snapshots appear.
    repo: std::sync::RwLock<Repository>,
    state: Mutex<State>,
}

fn system_time(t: &Time) -> SystemTime {
    if t.secs >= 0 {
        UNIX_EPOCH + Duration::new(t.secs as u64, t.nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs())
            + Duration::from_nanos(t.nanos.into())
    }
}

fn file_type(n: &Node) -> FileType {
    match n.kind {
        NodeKind::Dir { .. } => FileType::Directory,
        NodeKind::File { .. } => FileType::RegularFile,
        NodeKind::Symlink { .. } => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::Socket => FileType::Socket,
        NodeKind::CharDevice { .. } => FileType::CharDevice,
        NodeKind::BlockDevice { .. } => FileType::BlockDevice,
    }
}

impl HistoryFs {
    pub fn new(repo: Repository) -> rewind_core::Result<HistoryFs> {
        let fs = HistoryFs {
            repo: std::sync::RwLock::new(repo),
            state: Mutex::new(State {
                inodes: Vec::new(),
                snapshot_roots: HashMap::new(),
                refreshed: None,
                layouts: HashMap::new(),
                cache: HashMap::new(),
                order: VecDeque::new(),
                cached: 0,
                uid: nix::unistd::getuid().as_raw(),
                gid: nix::unistd::getgid().as_raw(),
            }),
        };
        {
            let mut st = fs.lock();
            // Inode 0 is unused; 1 is the root.
            for _ in 0..2 {
                st.inodes.push(Inode {
                    parent: ROOT,
                    kind: Kind::Virtual {
                        children: Vec::new(),
                    },
                    listed: None,
                    time: SystemTime::now(),
                });
            }
            fs.refresh(&mut st)?;
        }
        Ok(fs)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The repository (taken after the state's lock, never before it).
    fn repo(&self) -> std::sync::RwLockReadGuard<'_, Repository> {
        self.repo.read().unwrap_or_else(|e| e.into_inner())
    }

    fn add(st: &mut State, parent: u64, kind: Kind, time: SystemTime) -> u64 {
        st.inodes.push(Inode {
            parent,
            kind,
            listed: None,
            time,
        });
        (st.inodes.len() - 1) as u64
    }

    /// Reads the snapshot list and rebuilds the layout's folders; the
    /// snapshots' own inodes stay (open files keep working).
    fn refresh(&self, st: &mut State) -> rewind_core::Result<()> {
        let mut snaps = self.repo().snapshots()?;
        // New snapshots bring chunks this process has not seen: read the
        // index again.
        if snaps
            .iter()
            .any(|(id, _)| !st.snapshot_roots.contains_key(id))
            && st.refreshed.is_some()
        {
            self.repo
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .refresh_index();
        }
        snaps.sort_by_key(|s| s.1.time);
        let now = SystemTime::now();
        let tz = jiff::tz::TimeZone::system();
        // A name per snapshot: its local time, with the short id where two
        // share a second.
        let mut names: Vec<(String, SnapshotId)> = Vec::new();
        for (id, s) in &snaps {
            let t = s
                .time
                .to_zoned(tz.clone())
                .strftime("%Y-%m-%dT%H:%M:%S")
                .to_string();
            names.push((t, *id));
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (n, _) in &names {
            *seen.entry(n.clone()).or_default() += 1;
        }
        for (n, id) in names.iter_mut() {
            if seen[n.as_str()] > 1 {
                n.push('_');
                n.push_str(&id.short());
            }
        }
        let mut roots = Vec::new();
        for ((id, s), (name, _)) in snaps.iter().zip(&names) {
            let time = system_time(&Time {
                secs: s.time.as_second(),
                nanos: s.time.subsec_nanosecond() as u32,
            });
            let ino = match st.snapshot_roots.get(id) {
                Some(i) => *i,
                None => {
                    let node = Node {
                        name: name.as_bytes().to_vec(),
                        kind: NodeKind::Dir { subtree: s.tree },
                        mode: 0o40555,
                        uid: st.uid,
                        gid: st.gid,
                        user: None,
                        group: None,
                        size: 0,
                        mtime: Time {
                            secs: s.time.as_second(),
                            nanos: s.time.subsec_nanosecond() as u32,
                        },
                        ctime: Time::default(),
                        inode: 0,
                        device: 0,
                        links: 2,
                        xattrs: Vec::new(),
                    };
                    let i = Self::add(
                        st,
                        ROOT,
                        Kind::Node {
                            node: Box::new(node),
                            tree: Some(s.tree),
                        },
                        time,
                    );
                    st.snapshot_roots.insert(*id, i);
                    i
                }
            };
            roots.push((ino, id, s, name.clone()));
        }
        let folder = |st: &mut State, parent: u64, children: Vec<(OsString, u64)>| {
            Self::add(st, parent, Kind::Virtual { children }, now)
        };
        let by_time: Vec<(OsString, u64)> = roots
            .iter()
            .map(|(ino, _, _, name)| (OsString::from(name), *ino))
            .collect();
        let snapshots = folder(st, ROOT, by_time);
        let mut hosts: std::collections::BTreeMap<String, Vec<(OsString, u64)>> =
            Default::default();
        let mut tags: std::collections::BTreeMap<String, Vec<(OsString, u64)>> = Default::default();
        let mut ids = Vec::new();
        for (ino, id, s, name) in &roots {
            hosts
                .entry(s.hostname.clone())
                .or_default()
                .push((OsString::from(name), *ino));
            for t in &s.tags {
                tags.entry(t.clone())
                    .or_default()
                    .push((OsString::from(name), *ino));
            }
            ids.push((OsString::from(id.short()), *ino));
        }
        let host_dirs: Vec<(OsString, u64)> = hosts
            .into_iter()
            .map(|(h, c)| (OsString::from(safe_name(&h)), folder(st, 0, c)))
            .collect();
        let tag_dirs: Vec<(OsString, u64)> = tags
            .into_iter()
            .map(|(t, c)| (OsString::from(safe_name(&t)), folder(st, 0, c)))
            .collect();
        let hosts = folder(st, ROOT, host_dirs);
        let tags = folder(st, ROOT, tag_dirs);
        let ids = folder(st, ROOT, ids);
        let mut top = vec![
            (OsString::from("snapshots"), snapshots),
            (OsString::from("hosts"), hosts),
            (OsString::from("tags"), tags),
            (OsString::from("ids"), ids),
        ];
        if let Some((_, _, _, name)) = roots.last() {
            let link = Self::add(
                st,
                ROOT,
                Kind::Link(format!("snapshots/{name}").into_bytes()),
                now,
            );
            top.push((OsString::from("latest"), link));
        }
        st.inodes[ROOT as usize].kind = Kind::Virtual { children: top };
        st.refreshed = Some(Instant::now());
        Ok(())
    }

    fn maybe_refresh(&self, st: &mut State, ino: u64) {
        let top = ino == ROOT
            || st
                .inodes
                .get(ino as usize)
                .is_some_and(|i| i.parent == ROOT);
        if top && st.refreshed.is_none_or(|r| r.elapsed() > REFRESH) {
            // A failed refresh keeps the old list.
            let _ = self.refresh(st);
        }
    }

    /// The children of a folder inode, reading its tree the first time.
    fn children(&self, st: &mut State, ino: u64) -> Result<Vec<(OsString, u64)>, Errno> {
        let inode = st.inodes.get(ino as usize).ok_or(Errno::ENOENT)?;
        if let Some(l) = &inode.listed {
            return Ok(l.clone());
        }
        let tree = match &inode.kind {
            Kind::Virtual { children } => return Ok(children.clone()),
            Kind::Link(_) => return Err(Errno::ENOTDIR),
            Kind::Node { tree: Some(t), .. } => *t,
            Kind::Node { .. } => return Err(Errno::ENOTDIR),
        };
        let t = self.repo().read_tree(&tree).map_err(|_| Errno::EIO)?;
        let mut out = Vec::with_capacity(t.nodes.len());
        for n in t.nodes {
            let name = OsString::from(OsStr::from_bytes(&n.name));
            let sub = match &n.kind {
                NodeKind::Dir { subtree } => Some(*subtree),
                _ => None,
            };
            let time = system_time(&n.mtime);
            let child = Self::add(
                st,
                ino,
                Kind::Node {
                    node: Box::new(n),
                    tree: sub,
                },
                time,
            );
            out.push((name, child));
        }
        st.inodes[ino as usize].listed = Some(out.clone());
        Ok(out)
    }

    fn attr(st: &State, ino: u64) -> Option<FileAttr> {
        let i = st.inodes.get(ino as usize)?;
        let mut a = FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: i.time,
            mtime: i.time,
            ctime: i.time,
            crtime: i.time,
            kind: FileType::Directory,
            perm: 0o555,
            nlink: 2,
            uid: st.uid,
            gid: st.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        };
        match &i.kind {
            Kind::Virtual { .. } => {}
            Kind::Link(target) => {
                a.kind = FileType::Symlink;
                a.perm = 0o777;
                a.nlink = 1;
                a.size = target.len() as u64;
            }
            Kind::Node { node, .. } => {
                a.kind = file_type(node);
                a.perm = (node.mode & 0o7777) as u16;
                a.uid = node.uid;
                a.gid = node.gid;
                a.mtime = system_time(&node.mtime);
                a.atime = a.mtime;
                a.ctime = system_time(&node.ctime);
                a.nlink = if node.is_dir() {
                    2
                } else {
                    node.links.max(1) as u32
                };
                a.size = match &node.kind {
                    NodeKind::Symlink { target } => target.len() as u64,
                    _ => node.size,
                };
                a.blocks = a.size.div_ceil(512);
                if let NodeKind::CharDevice { rdev } | NodeKind::BlockDevice { rdev } = node.kind {
                    a.rdev = rdev as u32;
                }
            }
        }
        Some(a)
    }

    /// The pieces of a file, in order, holes included.
    fn layout(&self, node: &Node) -> Result<Vec<Piece>, Errno> {
        let NodeKind::File { content, holes } = &node.kind else {
            return Err(Errno::EISDIR);
        };
        let mut out = Vec::with_capacity(content.len() + holes.len());
        let mut pos = 0u64;
        let mut holes = holes.iter().peekable();
        let mut blobs = content.iter();
        loop {
            if let Some(h) = holes.peek() {
                if h.offset == pos {
                    out.push(Piece {
                        start: pos,
                        len: h.length,
                        blob: None,
                    });
                    pos += h.length;
                    holes.next();
                    continue;
                }
            }
            let Some(id) = blobs.next() else { break };
            let (_, e) = self
                .repo()
                .locate(id)
                .map_err(|_| Errno::EIO)?
                .ok_or(Errno::EIO)?;
            let len = u64::from(e.raw_length);
            out.push(Piece {
                start: pos,
                len,
                blob: Some(*id),
            });
            pos += len;
        }
        if pos < node.size {
            out.push(Piece {
                start: pos,
                len: node.size - pos,
                blob: None,
            });
        }
        Ok(out)
    }

    fn blob(&self, id: &BlobId) -> Result<Arc<Vec<u8>>, Errno> {
        if let Some(b) = self.lock().cache.get(id) {
            return Ok(b.clone());
        }
        let data = Arc::new(self.repo().read_blob(id).map_err(|_| Errno::EIO)?);
        let mut st = self.lock();
        st.cached += data.len();
        st.order.push_back(*id);
        st.cache.insert(*id, data.clone());
        while st.cached > CACHE_BYTES {
            let Some(old) = st.order.pop_front() else {
                break;
            };
            if let Some(b) = st.cache.remove(&old) {
                st.cached -= b.len();
            }
        }
        Ok(data)
    }

    fn node(&self, ino: u64) -> Result<Node, Errno> {
        let st = self.lock();
        match st.inodes.get(ino as usize).map(|i| &i.kind) {
            Some(Kind::Node { node, .. }) => Ok((**node).clone()),
            Some(_) => Err(Errno::ENODATA),
            None => Err(Errno::ENOENT),
        }
    }
}

/// A host or tag as a folder name ('/' cannot be in one).
fn safe_name(s: &str) -> String {
    let s = s.replace('/', "_");
    match s.as_str() {
        "" | "." | ".." => format!("_{s}"),
        _ => s,
    }
}

impl Filesystem for HistoryFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut st = self.lock();
        self.maybe_refresh(&mut st, parent.0);
        let children = match self.children(&mut st, parent.0) {
            Ok(c) => c,
            Err(e) => return reply.error(e),
        };
        match children.iter().find(|(n, _)| n == name) {
            Some((_, ino)) => match Self::attr(&st, *ino) {
                Some(a) => {
                    let ttl = if parent.0 == ROOT { TOP_TTL } else { TTL };
                    reply.entry(&ttl, &a, Generation(0))
                }
                None => reply.error(Errno::ENOENT),
            },
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let st = self.lock();
        match Self::attr(&st, ino.0) {
            Some(a) => reply.attr(if ino.0 == ROOT { &TOP_TTL } else { &TTL }, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let st = self.lock();
        match st.inodes.get(ino.0 as usize).map(|i| &i.kind) {
            Some(Kind::Link(t)) => reply.data(t),
            Some(Kind::Node { node, .. }) => match &node.kind {
                NodeKind::Symlink { target } => reply.data(target),
                _ => reply.error(Errno::EINVAL),
            },
            _ => reply.error(Errno::EINVAL),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: fuser::ReplyOpen) {
        if flags.0 & (libc_flags::O_WRONLY | libc_flags::O_RDWR) != 0 {
            return reply.error(Errno::EROFS);
        }
        let node = match self.node(ino.0) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.layout(&node) {
            Ok(l) => {
                self.lock().layouts.insert(ino.0, Arc::new(l));
                reply.opened(FileHandle(0), fuser::FopenFlags::FOPEN_KEEP_CACHE);
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let layout = match self.lock().layouts.get(&ino.0).cloned() {
            Some(l) => l,
            None => match self.node(ino.0).and_then(|n| self.layout(&n)) {
                Ok(l) => Arc::new(l),
                Err(e) => return reply.error(e),
            },
        };
        let end = layout.last().map_or(0, |p| p.start + p.len);
        let want_end = (offset + u64::from(size)).min(end);
        let mut out = Vec::with_capacity(want_end.saturating_sub(offset) as usize);
        let mut pos = offset;
        let first = layout.partition_point(|p| p.start + p.len <= offset);
        for p in &layout[first..] {
            if pos >= want_end {
                break;
            }
            let from = (pos - p.start) as usize;
            let to = ((want_end - p.start).min(p.len)) as usize;
            match &p.blob {
                None => out.resize(out.len() + (to - from), 0),
                Some(id) => match self.blob(id) {
                    Ok(b) => out.extend_from_slice(&b[from.min(b.len())..to.min(b.len())]),
                    Err(e) => return reply.error(e),
                },
            }
            pos = p.start + to as u64;
        }
        reply.data(&out);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: fuser::ReplyEmpty,
    ) {
        self.lock().layouts.remove(&ino.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut st = self.lock();
        if offset == 0 {
            self.maybe_refresh(&mut st, ino.0);
        }
        let children = match self.children(&mut st, ino.0) {
            Ok(c) => c,
            Err(e) => return reply.error(e),
        };
        let parent = st
            .inodes
            .get(ino.0 as usize)
            .map_or(ROOT, |i| i.parent.max(ROOT));
        let mut all: Vec<(u64, FileType, OsString)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (parent, FileType::Directory, "..".into()),
        ];
        for (name, child) in children {
            let kind = Self::attr(&st, child).map_or(FileType::RegularFile, |a| a.kind);
            all.push((child, kind, name));
        }
        for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let node = match self.node(ino.0) {
            Ok(n) => n,
            Err(_) => return reply.error(Errno::ENODATA),
        };
        match node.xattrs.iter().find(|x| x.name == name.as_bytes()) {
            None => reply.error(Errno::ENODATA),
            Some(x) if size == 0 => reply.size(x.value.len() as u32),
            Some(x) if x.value.len() > size as usize => reply.error(Errno::ERANGE),
            Some(x) => reply.data(&x.value),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let mut list = Vec::new();
        if let Ok(node) = self.node(ino.0) {
            for x in &node.xattrs {
                list.extend_from_slice(&x.name);
                list.push(0);
            }
        }
        if size == 0 {
            reply.size(list.len() as u32)
        } else if list.len() > size as usize {
            reply.error(Errno::ERANGE)
        } else {
            reply.data(&list)
        }
    }
}

/// The open flags that ask for writing.
mod libc_flags {
    pub const O_WRONLY: i32 = 0o1;
    pub const O_RDWR: i32 = 0o2;
}
