//! The backup engine: source -> chunks -> packs -> trees -> snapshot.
//!
//! ```text
//! scan:   walk the paths depth-first (lstat only), apply excludes, match each
//!         entry against the parent snapshot's tree; unchanged files (same
//!         size, mtime, ctime, inode) take the parent's content list as is
//! read:   the files left, in parallel (rayon): read -> FastCDC -> BlobWriter
//!         (dedup, compress, seal, pack, upload)
//! trees:  bottom-up, one tree blob per directory (unchanged ones dedup away)
//! commit: the writer makes packs and index durable, then the snapshot is saved
//! ```
//! Memory: the scan holds one boxed [`Node`] per entry of the directories
//! where something changed (a directory found as in the parent is dropped
//! as the scan goes), about 320 bytes an entry with its name, owner names
//! and content ids; file data is streamed (see [`crate::chunker`]). Past
//! its budget ([`BackupOptions::scan_memory`]) the scan hands each
//! directory it finishes to a thread that reads its files and writes its
//! trees while the scan goes on, and keeps only its node (DESIGN §9).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use rayon::prelude::*;

use crate::chunker::chunk_stream;
use crate::error::{Error, Result};
use crate::format::pack::BlobKind;
use crate::format::prune::RunningKind;
use crate::format::snapshot::{BackupSummary, SnapshotFile, VERSION};
use crate::format::tree::{Hole, Node, NodeKind, Time, Tree};
use crate::id::{BlobId, SnapshotId};
use crate::repository::{BlobWriter, Repository, Running};
use crate::source::{self, at, Owners};

/// How to pick the parent snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ParentChoice {
    /// The newest snapshot of the same host and paths.
    #[default]
    Auto,
    /// This snapshot.
    Snapshot(SnapshotId),
    /// None: read every file.
    None,
}

/// Inputs of a backup.
#[derive(Clone, Debug, Default)]
pub struct BackupOptions {
    /// Paths to back up.
    pub paths: Vec<PathBuf>,
    /// Host name recorded in the snapshot.
    pub hostname: String,
    /// User name recorded in the snapshot.
    pub username: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Exclude patterns, gitignore syntax, anchored at `/`.
    pub excludes: Vec<String>,
    /// Skip directories that contain a file of one of these names.
    pub exclude_if_present: Vec<String>,
    /// Skip directories holding a valid CACHEDIR.TAG.
    pub exclude_caches: bool,
    /// Absolute paths never backed up (the repository itself).
    pub exclude_paths: Vec<PathBuf>,
    /// Stay on the file system of each path.
    pub one_file_system: bool,
    /// Parent selection.
    pub parent: ParentChoice,
    /// Compute everything, store nothing.
    pub dry_run: bool,
    /// Time to record instead of now.
    pub time: Option<jiff::Timestamp>,
    /// Skip the ransomware scan against the parent (`crate::scan`).
    pub skip_scan: bool,
    /// Where the data came from, recorded as the snapshot's one path
    /// instead of the source's (a server's phone inbox: `dav:NAME`); the
    /// one source directory's entries are then the root tree's. Needs
    /// exactly one path, a directory.
    pub label: Option<String>,
    /// About how much memory the scan's entries may take before finished
    /// directories are stored as the scan goes (None:
    /// [`DEFAULT_SCAN_MEMORY`]). A tree within it is stored as before:
    /// scanned whole, then its files read, the largest first.
    pub scan_memory: Option<u64>,
}

/// The scan's budget when the options give none: about 200,000 entries.
pub const DEFAULT_SCAN_MEMORY: u64 = 64 << 20;

/// What one scanned entry takes in memory, about (docs/SCALE.md: its
/// boxed node, name, owner names, content ids and place in its list).
const ENTRY_BYTES: u64 = 320;

impl BackupOptions {
    /// Options for `paths` with the local host and user.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        BackupOptions {
            paths,
            hostname: local_hostname(),
            username: local_username(),
            ..Default::default()
        }
    }
}

pub use crate::source::{local_hostname, local_username};

pub use crate::progress::{Progress, Warning};

/// Result of a backup.
#[derive(Clone, Debug)]
pub struct BackupOutcome {
    /// The new snapshot (None for a dry run).
    pub snapshot_id: Option<SnapshotId>,
    /// The snapshot as written (or as it would have been).
    pub snapshot: SnapshotFile,
    /// Every warning, in order.
    pub warnings: Vec<Warning>,
    /// Why the ransomware scan could not run, if it failed (the snapshot
    /// is saved without a verdict).
    pub scan_error: Option<String>,
    /// Directories stored while the scan went on, as it held more than
    /// its budget ([`BackupOptions::scan_memory`]).
    pub stored_early: u64,
}

impl BackupOutcome {
    /// Summary shortcut.
    pub fn summary(&self) -> &BackupSummary {
        &self.snapshot.summary
    }
}

// ---------------------------------------------------------------- scan

struct FileJob {
    /// The directory it is in, shared by its siblings (a path per file
    /// was a fifth of a scanned entry's memory).
    dir: std::sync::Arc<Path>,
    node: Node,
    sparse: bool,
    /// Content reused from the parent (unchanged file).
    reused: bool,
    /// The parent had a file at this path (changed vs new).
    in_parent: bool,
    /// Set when the file could not be read: the node is dropped.
    failed: bool,
}

impl FileJob {
    fn path(&self) -> PathBuf {
        self.dir.join(std::ffi::OsStr::from_bytes(&self.node.name))
    }
}

/// Boxed, so that the scan's lists hold a pointer per entry: a `Node` inline
/// is about 230 bytes, and each directory's list is sorted and shrunk after
/// it is collected.
enum Entry {
    Dir(Box<ScanDir>),
    File(Box<FileJob>),
    Other(Box<Node>),
}

impl Entry {
    /// Its name (a scanned directory always has its node).
    fn name(&self) -> &[u8] {
        match self {
            Entry::Dir(d) => d.node.as_ref().map_or(&[], |n| n.name.as_slice()),
            Entry::File(job) => &job.node.name,
            Entry::Other(n) => &n.name,
        }
    }
}

struct ScanDir {
    node: Option<Node>,
    /// Sorted by name (no two alike): a list, not a map, whose names are
    /// the nodes' own rather than a copy in a key.
    children: Vec<Entry>,
    /// Set when the directory is exactly as in the parent snapshot: its
    /// tree is the parent's (`children` is then empty, dropped as the scan
    /// goes, so that a backup's memory grows with what changed, not with
    /// the number of files).
    same_tree: Option<BlobId>,
    /// Entries held below it, its own included ([`EarlyStores::held`]).
    held: usize,
    /// Set when its entries were handed to the early stores: its tree's
    /// id, once they have written it (`children` is then empty).
    stored: Option<Arc<OnceLock<BlobId>>>,
}

impl ScanDir {
    fn new(node: Node) -> ScanDir {
        ScanDir {
            node: Some(node),
            children: Vec::new(),
            same_tree: None,
            held: 0,
            stored: None,
        }
    }

    /// Where an entry of that name is in `children`, or would go.
    fn find(&self, name: &[u8]) -> std::result::Result<usize, usize> {
        self.children.binary_search_by(|e| e.name().cmp(name))
    }

    /// Puts `entry` in its place, replacing one of the same name.
    fn put(&mut self, entry: Entry) {
        match self.find(entry.name()) {
            Ok(i) => self.children[i] = entry,
            Err(i) => self.children.insert(i, entry),
        }
    }
}

struct Scanner<'a> {
    repo: &'a Repository,
    early: &'a EarlyStores,
    /// Where finished directories go once the scan holds too much; closed
    /// (the scanner dropped) when the scan is over.
    handoff: crossbeam_channel::Sender<Handoff>,
    opts: &'a BackupOptions,
    excludes: ignore::gitignore::Gitignore,
    owners: Owners,
    progress: &'a Progress,
    dirs: AtomicU64,
    others: AtomicU64,
    errors: AtomicU64,
    /// Files (and their bytes) of the directories found unchanged: they
    /// are not file jobs.
    unchanged_files: AtomicU64,
    unchanged_bytes: AtomicU64,
}

const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

impl Scanner<'_> {
    fn excluded(&self, path: &Path, is_dir: bool) -> bool {
        self.opts.exclude_paths.iter().any(|p| p == path)
            || self.excludes.matched(path, is_dir).is_ignore()
    }

    fn dir_excluded_by_marker(&self, path: &Path) -> bool {
        if self
            .opts
            .exclude_if_present
            .iter()
            .any(|n| at::short(&path.join(n)).is_ok_and(|p| p.symlink_metadata().is_ok()))
        {
            return true;
        }
        if self.opts.exclude_caches {
            if let Ok(mut f) = at::short(&path.join("CACHEDIR.TAG")).and_then(File::open) {
                let mut head = [0u8; 43];
                if f.read_exact(&mut head).is_ok() && head == CACHEDIR_SIGNATURE {
                    return true;
                }
            }
        }
        false
    }

    /// The parent snapshot's listing of a directory. One that cannot be
    /// read is said (the directory is then read and stored again in full,
    /// which is correct but slow, and a damaged parent is worth knowing).
    fn parent_tree(&self, node: Option<&Node>, path: &Path) -> Option<Tree> {
        match node.map(|n| &n.kind) {
            Some(NodeKind::Dir { subtree }) => match self.repo.read_tree(subtree) {
                Ok(t) => Some(t),
                Err(e) => {
                    self.progress.warn(
                        path,
                        format!(
                            "the parent snapshot's listing of this directory cannot be read \
                             ({e}); everything below it is read again"
                        ),
                    );
                    None
                }
            },
            _ => None,
        }
    }

    /// Scans one entry that exists (lstat succeeded). `parent` is the
    /// parent snapshot's node at the same path.
    fn scan_entry(
        &self,
        dir: &std::sync::Arc<Path>,
        path: &Path,
        name: &[u8],
        md: &std::fs::Metadata,
        parent: Option<&Node>,
        root_dev: u64,
    ) -> Option<Entry> {
        self.progress.scanned.fetch_add(1, Ordering::Relaxed);
        let mut node = match source::node_from_metadata(name, path, md, &self.owners) {
            Ok((n, problems)) => {
                for p in problems {
                    self.progress.warn(path, p);
                    self.errors.fetch_add(1, Ordering::Relaxed);
                }
                n
            }
            Err(e) => {
                self.progress
                    .warn(path, format!("cannot read metadata: {e}"));
                self.errors.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        if md.is_dir() {
            self.dirs.fetch_add(1, Ordering::Relaxed);
            node.size = 0;
            let mut dir = ScanDir::new(node);
            let cross_fs = self.opts.one_file_system && md.dev() != root_dev;
            if !cross_fs && !self.dir_excluded_by_marker(path) {
                let ptree = self.parent_tree(parent, path);
                dir.children = self.scan_dir_contents(path, ptree.as_ref(), root_dev);
                dir.held = dir.children.len()
                    + dir
                        .children
                        .iter()
                        .map(|e| match e {
                            Entry::Dir(d) => d.held,
                            _ => 0,
                        })
                        .sum::<usize>();
                if let (Some(ptree), Some(NodeKind::Dir { subtree })) =
                    (ptree, parent.map(|p| &p.kind))
                {
                    self.collapse_if_unchanged(&mut dir, &ptree, subtree);
                }
                self.hand_off_if_over(&mut dir);
            }
            return Some(Entry::Dir(Box::new(dir)));
        }
        if md.is_file() {
            let mut job = FileJob {
                dir: dir.clone(),
                sparse: source::maybe_sparse(md),
                node,
                reused: false,
                in_parent: false,
                failed: false,
            };
            if let Some(p) = parent {
                job.in_parent = p.is_file();
                if unchanged(p, &job.node) && self.blobs_present(p) {
                    job.node.kind = p.kind.clone();
                    job.reused = true;
                }
            }
            if !job.reused {
                self.progress.total_files.fetch_add(1, Ordering::Relaxed);
                self.progress
                    .total_bytes
                    .fetch_add(job.node.size, Ordering::Relaxed);
            }
            return Some(Entry::File(Box::new(job)));
        }
        self.others.fetch_add(1, Ordering::Relaxed);
        Some(Entry::Other(Box::new(node)))
    }

    /// Replaces a scanned directory's entries by the parent snapshot's
    /// tree when they are exactly its nodes (every file reused, every
    /// subdirectory itself unchanged, nothing added or gone) and that tree
    /// is stored in a pack prune has not marked: the tree written would be
    /// the same blob.
    fn collapse_if_unchanged(&self, dir: &mut ScanDir, ptree: &Tree, subtree: &BlobId) {
        if dir.children.len() != ptree.nodes.len() {
            return;
        }
        let (mut files, mut bytes) = (0, 0);
        for (entry, old) in dir.children.iter().zip(&ptree.nodes) {
            if entry.name() != old.name {
                return;
            }
            let same = match entry {
                Entry::File(job) => {
                    files += 1;
                    bytes += job.node.size;
                    job.reused && job.node == *old
                }
                Entry::Dir(d) => d.same_tree.is_some() && d.node.as_ref() == Some(old),
                Entry::Other(n) => **n == *old,
            };
            if !same {
                return;
            }
        }
        if !self.repo.index().is_ok_and(|i| i.contains_live(subtree)) {
            return;
        }
        if let Some(node) = &mut dir.node {
            node.kind = NodeKind::Dir { subtree: *subtree };
        }
        dir.children = Vec::new();
        dir.same_tree = Some(*subtree);
        self.early.held.fetch_sub(dir.held, Ordering::Relaxed);
        dir.held = 0;
        self.unchanged_files.fetch_add(files, Ordering::Relaxed);
        self.unchanged_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Hands a finished directory's entries to the early stores when the
    /// scan holds half its budget or more; it keeps its node, and its
    /// tree's id comes when they are stored. It waits while the stores have
    /// the other half queued, which is what bounds the scan's memory.
    fn hand_off_if_over(&self, dir: &mut ScanDir) {
        let early = self.early;
        if dir.same_tree.is_some() || early.held.load(Ordering::Relaxed) < early.half() {
            return;
        }
        if !early.queue(dir.held) {
            return; // the stores failed: the backup stops
        }
        let id = Arc::new(OnceLock::new());
        early.held.fetch_sub(dir.held, Ordering::Relaxed);
        let sent = self.handoff.send(Handoff {
            children: std::mem::take(&mut dir.children),
            held: dir.held,
            id: id.clone(),
        });
        if sent.is_err() {
            early.fail(); // the stores are gone
        }
        dir.stored = Some(id);
        dir.held = 0;
    }

    fn blobs_present(&self, node: &Node) -> bool {
        let Ok(index) = self.repo.index() else {
            return false;
        };
        match &node.kind {
            NodeKind::File { content, .. } => content.iter().all(|id| index.contains_live(id)),
            _ => false,
        }
    }

    /// Lists a directory and scans its entries in parallel (the calls nest:
    /// subdirectories are scanned by whichever thread is free).
    fn scan_dir_contents(&self, path: &Path, parent: Option<&Tree>, root_dev: u64) -> Vec<Entry> {
        if self.progress.cancel.is_cancelled() || self.early.failed.load(Ordering::Relaxed) {
            return Vec::new(); // the backup stops after the scan
        }
        let rd = match at::short(path).and_then(std::fs::read_dir) {
            Ok(rd) => rd,
            Err(e) => {
                self.progress
                    .warn(path, format!("cannot list directory: {e}"));
                self.errors.fetch_add(1, Ordering::Relaxed);
                return Vec::new();
            }
        };
        let mut names: Vec<std::ffi::OsString> = Vec::new();
        for e in rd {
            match e {
                Ok(e) => names.push(e.file_name()),
                Err(e) => {
                    self.progress
                        .warn(path, format!("cannot list directory: {e}"));
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        let dir: std::sync::Arc<Path> = path.into();
        let mut entries: Vec<Entry> = names
            .into_par_iter()
            .filter_map(|name| {
                let child = path.join(&name);
                let md = match at::short(&child).and_then(|c| c.symlink_metadata()) {
                    Ok(md) => md,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None, // vanished: nothing to say
                    Err(e) => {
                        self.progress.warn(&child, format!("cannot stat: {e}"));
                        self.errors.fetch_add(1, Ordering::Relaxed);
                        return None;
                    }
                };
                if self.excluded(&child, md.is_dir()) {
                    return None;
                }
                let pnode = parent.and_then(|t| t.find(name.as_bytes()));
                self.scan_entry(&dir, &child, name.as_bytes(), &md, pnode, root_dev)
            })
            .collect();
        // A listing has each name once.
        entries.sort_unstable_by(|a, b| a.name().cmp(b.name()));
        entries.shrink_to_fit();
        self.early.held.fetch_add(entries.len(), Ordering::Relaxed);
        entries
    }
}

/// How far ahead of the readers the kernel is asked to read: files, and
/// bytes (at most [`PREFETCH_PER_FILE`] of each file; past that the
/// kernel's own read-ahead follows the reader).
const PREFETCH_FILES: usize = 256;
const PREFETCH_BYTES: u64 = 32 << 20;
const PREFETCH_PER_FILE: u64 = 1 << 20;

/// Hands out the files in their order (the readers take the next one when
/// free) and has the kernel asked to start reading the next ones
/// (`posix_fadvise(WILLNEED)`): a cold small file is otherwise one disk
/// round trip during which its reader's core waits. The asking is done by
/// a thread of its own ([`prefetcher`]), so that a slow `open` (a network
/// file system) never holds up the handing out, which readers wait for.
struct Prefetch<'b, 'a> {
    inner: std::slice::IterMut<'b, &'a mut FileJob>,
    ahead: std::collections::VecDeque<(&'b mut &'a mut FileJob, u64)>,
    bytes: u64,
    /// To the prefetcher; nothing is asked once the backup is cancelled.
    ask: std::sync::mpsc::SyncSender<(PathBuf, u64)>,
    cancel: &'b crate::cancel::Cancel,
}

impl<'b, 'a> Prefetch<'b, 'a> {
    fn new(
        inner: std::slice::IterMut<'b, &'a mut FileJob>,
        ask: std::sync::mpsc::SyncSender<(PathBuf, u64)>,
        cancel: &'b crate::cancel::Cancel,
    ) -> Self {
        Prefetch {
            inner,
            ahead: std::collections::VecDeque::new(),
            bytes: 0,
            ask,
            cancel,
        }
    }
}

/// Asks the kernel to read ahead for each (file, length) received, until
/// the sender is gone.
fn prefetcher(asked: std::sync::mpsc::Receiver<(PathBuf, u64)>) {
    for (path, len) in asked {
        will_need(&path, len);
    }
}

/// Asks the kernel to start reading the first `len` bytes of `path`,
/// without waiting; any failure is left to the reader to find.
fn will_need(path: &Path, len: u64) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let opened = at::short(path).and_then(|p| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
            .open(&*p)
    });
    if let Ok(f) = opened {
        let _ = nix::fcntl::posix_fadvise(
            f.as_raw_fd(),
            0,
            i64::try_from(len).unwrap_or(i64::MAX),
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
        );
    }
}

impl<'b, 'a> Iterator for Prefetch<'b, 'a> {
    type Item = &'b mut &'a mut FileJob;

    fn next(&mut self) -> Option<Self::Item> {
        while self.ahead.len() < PREFETCH_FILES
            && (self.bytes < PREFETCH_BYTES || self.ahead.is_empty())
        {
            let Some(job) = self.inner.next() else { break };
            let len = if job.reused || self.cancel.is_cancelled() {
                0
            } else {
                job.node.size.min(PREFETCH_PER_FILE)
            };
            // Full: the prefetcher is behind, and this file goes without.
            if len > 0 {
                let _ = self.ask.try_send((job.path(), len));
            }
            self.bytes += len;
            self.ahead.push_back((job, len));
        }
        let (job, len) = self.ahead.pop_front()?;
        self.bytes -= len;
        Some(job)
    }
}

/// Every file job of scanned entries, in tree order.
fn collect_jobs<'a>(entries: &'a mut [Entry], out: &mut Vec<&'a mut FileJob>) {
    for entry in entries {
        match entry {
            Entry::Dir(d) => collect_jobs(&mut d.children, out),
            Entry::File(job) => out.push(job),
            Entry::Other(_) => {}
        }
    }
}

fn unchanged(old: &Node, new: &Node) -> bool {
    old.is_file()
        && new.is_file()
        && old.size == new.size
        && old.mtime == new.mtime
        && old.ctime == new.ctime
        && old.inode == new.inode
}

/// Makes a path absolute and lexically clean, resolving symlinks in its
/// parent directories but not in its last component.
fn absolute(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path)
        .map_err(|e| Error::io(format!("resolve {}", path.display()), e))?;
    let mut clean = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => clean.push(n),
            Component::ParentDir => {
                clean.pop();
            }
            _ => {}
        }
    }
    match (clean.parent(), clean.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = parent
                .canonicalize()
                .map_err(|e| Error::io(format!("cannot back up {}", path.display()), e))?;
            Ok(parent.join(name))
        }
        _ => Ok(clean),
    }
}

// ---------------------------------------------------------------- read

/// Files from this size on share their compression with the pool's other threads.
const SHARED_FILE_SIZE: u64 = 4 << 20;
/// Chunks of such a file that may wait, copied, for another thread.
const AHEAD: usize = 4;

fn read_file(
    writer: &BlobWriter<'_>,
    repo: &Repository,
    job: &mut FileJob,
    progress: &Progress,
) -> Result<u64> {
    let path = job.path();
    let mut file = match at::short(&path).and_then(File::open) {
        Ok(f) => f,
        Err(e) => {
            let msg = if e.kind() == std::io::ErrorKind::NotFound {
                "vanished before it could be read".to_string()
            } else {
                format!("cannot read: {e}")
            };
            progress.warn(&path, msg);
            job.failed = true;
            return Ok(0);
        }
    };
    let params = repo.crypto().chunker();
    let mut content: Vec<BlobId> = Vec::new();
    let mut holes = Vec::new();
    let mut read = 0u64;
    // A large file is read and cut by this thread, while its new chunks
    // are compressed and sealed by any thread of the pool that is free: a
    // file of gigabytes (a disk image) would otherwise keep one core busy
    // while the others, done with the small files, wait. At most
    // `AHEAD` chunks wait in copies; past that this thread stores them itself.
    let ahead = if job.node.size >= SHARED_FILE_SIZE && rayon::current_num_threads() > 1 {
        AHEAD
    } else {
        0
    };
    let waiting = AtomicUsize::new(0);
    let failed: Mutex<Option<Error>> = Mutex::new(None);
    let result: Result<()> = rayon::scope(|scope| {
        let mut add = |chunk: &[u8]| -> Result<()> {
            progress.cancel.check()?;
            let id = writer.blob_id(chunk);
            if writer.claim(&id)? {
                if waiting.load(Ordering::Acquire) < ahead {
                    waiting.fetch_add(1, Ordering::AcqRel);
                    let data = chunk.to_vec();
                    let (waiting, failed) = (&waiting, &failed);
                    scope.spawn(move |_| {
                        if let Err(e) = writer.store(BlobKind::Data, id, &data) {
                            failed.lock().expect("failed").get_or_insert(e);
                        }
                        waiting.fetch_sub(1, Ordering::AcqRel);
                    });
                } else {
                    writer.store(BlobKind::Data, id, chunk)?;
                }
            }
            content.push(id);
            progress
                .done_bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            Ok(())
        };
        (|| {
            if job.sparse {
                let size = job.node.size;
                let regions = source::data_regions(&file, size);
                let mut pos = 0u64;
                for (off, len) in regions {
                    if off > pos {
                        holes.push(Hole {
                            offset: pos,
                            length: off - pos,
                        });
                    }
                    file.seek(SeekFrom::Start(off))
                        .map_err(|e| Error::io("seek", e))?;
                    let n = chunk_stream(&params, (&mut file).take(len), &mut add)?;
                    read += n;
                    pos = off + n;
                    if n < len {
                        break; // shrank while being read
                    }
                }
                if pos < size {
                    holes.push(Hole {
                        offset: pos,
                        length: size - pos,
                    });
                }
            } else {
                read = chunk_stream(&params, &mut file, &mut add)?;
                job.node.size = read;
            }
            Ok(())
        })()
    });
    // A storage error of a chunk stored by another thread stops the run.
    let result = match failed.into_inner().expect("failed") {
        Some(e) => Err(e),
        None => result,
    };
    match result {
        Ok(()) => {}
        // Only the source returns I/O errors here (storage errors reach us
        // as other variants from the writer): the file is skipped.
        Err(Error::Io { error: source, .. }) => {
            progress.warn(&path, format!("cannot read: {source}"));
            job.failed = true;
            return Ok(0);
        }
        Err(e) => return Err(e),
    }
    if let Ok(after) = file.metadata() {
        let changed = after.size() != job.node.size && !job.sparse
            || Time {
                secs: after.mtime(),
                nanos: after.mtime_nsec() as u32,
            } != job.node.mtime
            || Time {
                secs: after.ctime(),
                nanos: after.ctime_nsec() as u32,
            } != job.node.ctime;
        if changed {
            progress.warn(
                &path,
                "changed while being read; the snapshot holds what was read",
            );
            job.node.mtime = Time {
                secs: after.mtime(),
                nanos: after.mtime_nsec() as u32,
            };
            job.node.ctime = Time::default(); // forces a re-read next time
        }
    }
    // Kept until the trees are written, one per file: a one-chunk file's
    // list would otherwise hold room for four ids.
    content.shrink_to_fit();
    holes.shrink_to_fit();
    job.node.kind = NodeKind::File { content, holes };
    Ok(read)
}

// ---------------------------------------------------------------- trees

fn build_tree(dir: ScanDir, writer: &BlobWriter<'_>) -> Result<(Option<Node>, BlobId)> {
    if let Some(id) = dir.same_tree {
        return Ok((dir.node, id));
    }
    if let Some(stored) = &dir.stored {
        // The early stores have ended (successfully) before any tree is
        // built here; a directory they did not write would be a bug.
        let id = *stored.get().ok_or_else(|| {
            Error::InvalidInput("a directory handed to be stored early was not".into())
        })?;
        return Ok((dir.node, id));
    }
    Ok((dir.node, tree_of(dir.children, writer)?))
}

/// Writes the tree of a directory's entries (their subtrees first).
fn tree_of(children: Vec<Entry>, writer: &BlobWriter<'_>) -> Result<BlobId> {
    let mut nodes = Vec::with_capacity(children.len());
    for entry in children {
        match entry {
            Entry::Dir(d) => {
                let (node, subtree) = build_tree(*d, writer)?;
                let mut node = node.expect("scanned directories have a node");
                node.kind = NodeKind::Dir { subtree };
                nodes.push(node);
            }
            Entry::File(job) => {
                if !job.failed {
                    nodes.push(job.node);
                }
            }
            Entry::Other(n) => nodes.push(*n),
        }
    }
    let tree = Tree::new(nodes);
    let (id, _) = writer.add_blob(BlobKind::Tree, &tree.encode())?;
    Ok(id)
}

// ---------------------------------------------------------------- backup

fn find_parent(
    repo: &Repository,
    opts: &BackupOptions,
    paths: &[String],
) -> Result<Option<(SnapshotId, SnapshotFile)>> {
    match &opts.parent {
        ParentChoice::None => Ok(None),
        ParentChoice::Snapshot(id) => repo.read_snapshot(id).map(Some),
        ParentChoice::Auto => {
            let mut want = paths.to_vec();
            want.sort();
            Ok(repo.snapshots()?.into_iter().rev().find(|(_, s)| {
                let mut p = s.paths.clone();
                p.sort();
                s.hostname == opts.hostname && p == want
            }))
        }
    }
}

/// The sources as absolute paths. A source that cannot be reached (a typo,
/// a drive not mounted) is named like a file that cannot be read and the
/// others are backed up; only when none is left is it an error.
fn resolve_sources(opts: &BackupOptions, progress: &Progress) -> Result<Vec<PathBuf>> {
    if opts.paths.is_empty() {
        return Err(Error::InvalidInput(
            "nothing to back up: give at least one path".into(),
        ));
    }
    let mut abs: Vec<PathBuf> = Vec::new();
    let mut unreachable: Vec<(&Path, Error)> = Vec::new();
    for p in &opts.paths {
        let found = absolute(p).and_then(|a| {
            at::short(&a)
                .and_then(|s| s.symlink_metadata())
                .map(|_| a)
                .map_err(|e| Error::io(format!("cannot back up {}", p.display()), e))
        });
        match found {
            Ok(a) => abs.push(a),
            Err(e) => unreachable.push((p, e)),
        }
    }
    let not_found = |e: &Error| matches!(e, Error::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound);
    if abs.is_empty() {
        if unreachable.iter().all(|(_, e)| not_found(e)) {
            let names: Vec<String> = unreachable
                .iter()
                .map(|(p, _)| p.display().to_string())
                .collect();
            return Err(Error::InvalidInput(format!(
                "nothing to back up: {} {}",
                names.join(", "),
                if names.len() == 1 {
                    "does not exist"
                } else {
                    "do not exist"
                }
            )));
        }
        let (_, e) = unreachable
            .into_iter()
            .find(|(_, e)| !not_found(e))
            .expect("one that is not missing");
        return Err(e);
    }
    for (p, e) in &unreachable {
        let message = match e {
            Error::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound => {
                "does not exist; not backed up".to_string()
            }
            Error::Io { error, .. } => format!("cannot back up: {error}"),
            e => e.to_string(),
        };
        progress.warn(p, message);
    }
    abs.sort();
    abs.dedup();
    Ok(abs)
}

/// Refuses a source inside the repository and drops sources inside others.
fn top_sources(abs: &[PathBuf], opts: &BackupOptions) -> Result<Vec<PathBuf>> {
    if opts.label.is_some() && !(abs.len() == 1 && abs[0].is_dir()) {
        return Err(Error::InvalidInput(
            "a labelled backup takes exactly one directory".into(),
        ));
    }
    for a in abs {
        if let Some(repo_path) = opts.exclude_paths.iter().find(|r| a.starts_with(r)) {
            return Err(Error::InvalidInput(format!(
                "{} is inside the repository {}; a repository cannot back itself up",
                a.display(),
                repo_path.display()
            )));
        }
    }
    Ok(abs
        .iter()
        .filter(|p| !abs.iter().any(|q| q != *p && p.starts_with(q)))
        .cloned()
        .collect())
}

fn build_excludes(opts: &BackupOptions) -> Result<ignore::gitignore::Gitignore> {
    let mut gi = ignore::gitignore::GitignoreBuilder::new("/");
    for pat in &opts.excludes {
        gi.add_line(None, pat)
            .map_err(|e| Error::InvalidInput(format!("bad exclude pattern {pat:?}: {e}")))?;
    }
    gi.build()
        .map_err(|e| Error::InvalidInput(format!("bad exclude patterns: {e}")))
}

/// A parent snapshot, and its root tree if it could be read.
type ParentWithRoot = (Option<(SnapshotId, SnapshotFile)>, Option<Tree>);

/// The parent snapshot and its root tree. A parent whose root tree cannot
/// be read only costs speed: every file is read again (and check will name
/// the damage).
fn parent_with_root(
    repo: &Repository,
    opts: &BackupOptions,
    paths: &[String],
    progress: &Progress,
) -> Result<ParentWithRoot> {
    Ok(match find_parent(repo, opts, paths)? {
        Some((id, s)) => match repo.read_tree(&s.tree) {
            Ok(t) => (Some((id, s)), Some(t)),
            Err(e) => {
                progress.warn(
                    Path::new("/"),
                    format!(
                        "parent snapshot {} cannot be read ({e}); reading every file",
                        id.short()
                    ),
                );
                (None, None)
            }
        },
        None => (None, None),
    })
}

impl Scanner<'_> {
    /// Scans every source into one tree: the intermediate directories of
    /// a source hold only the selected children.
    fn scan_sources(
        &self,
        sources: &[PathBuf],
        parent_root: Option<&Tree>,
        pool: &rayon::ThreadPool,
    ) -> Result<ScanDir> {
        let mut root = ScanDir {
            node: None,
            children: Vec::new(),
            same_tree: None,
            held: 0,
            stored: None,
        };
        for path in sources {
            let root_dev = at::short(path)
                .and_then(|p| p.symlink_metadata())
                .map(|m| m.dev())
                .unwrap_or(0);
            if self.opts.label.is_some()
                || path
                    .components()
                    .all(|c| !matches!(c, Component::Normal(_)))
            {
                // The path is `/` itself, or a labelled source: its
                // entries are the root tree's.
                root.children =
                    pool.install(|| self.scan_dir_contents(path, parent_root, root_dev));
                continue;
            }
            self.scan_source(&mut root, path, parent_root.cloned(), root_dev, pool)?;
        }
        Ok(root)
    }

    /// One source below `/`: its parent directories as nodes, then itself.
    fn scan_source(
        &self,
        root: &mut ScanDir,
        path: &Path,
        mut ptree: Option<Tree>,
        root_dev: u64,
        pool: &rayon::ThreadPool,
    ) -> Result<()> {
        let comps: Vec<&std::ffi::OsStr> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        let mut dir = root;
        let mut cur = PathBuf::from("/");
        for (i, name) in comps.iter().enumerate() {
            cur.push(name);
            let bytes = name.as_bytes().to_vec();
            let pnode = ptree.as_ref().and_then(|t| t.find(&bytes)).cloned();
            let md = at::short(&cur)
                .and_then(|c| c.symlink_metadata())
                .map_err(|e| Error::io(format!("cannot back up {}", cur.display()), e))?;
            if i + 1 == comps.len() {
                let parent_dir: std::sync::Arc<Path> =
                    cur.parent().unwrap_or(Path::new("/")).into();
                if let Some(entry) = pool.install(|| {
                    self.scan_entry(&parent_dir, &cur, &bytes, &md, pnode.as_ref(), root_dev)
                }) {
                    dir.put(entry);
                }
                break;
            }
            if dir.find(&bytes).is_err() {
                let (node, problems) = source::node_from_metadata(&bytes, &cur, &md, &self.owners)
                    .map_err(|e| Error::io(format!("cannot back up {}", cur.display()), e))?;
                for p in problems {
                    self.progress.warn(&cur, p);
                    self.errors.fetch_add(1, Ordering::Relaxed);
                }
                dir.put(Entry::Dir(Box::new(ScanDir::new(node))));
                self.dirs.fetch_add(1, Ordering::Relaxed);
            }
            ptree = self.parent_tree(pnode.as_ref(), &cur);
            dir = match dir.find(&bytes).ok().map(|i| &mut dir.children[i]) {
                Some(Entry::Dir(d)) => d,
                _ => {
                    return Err(Error::InvalidInput(format!(
                        "{} is not a directory",
                        cur.display()
                    )))
                }
            };
        }
        Ok(())
    }
}

/// Stores what the scan left in memory (a tree within the scan's budget:
/// all of it) and writes the trees; adds to the summary's file counts and
/// sizes. Returns the root tree's id.
fn store(
    writer: &BlobWriter<'_>,
    repo: &Repository,
    mut root: ScanDir,
    summary: &mut BackupSummary,
    progress: &Progress,
) -> Result<BlobId> {
    let mut files = Vec::new();
    collect_jobs(&mut root.children, &mut files);
    read_files(writer, repo, files, &reader_pool()?, summary, progress)?;
    let (_, id) = build_tree(root, writer)?;
    Ok(id)
}

/// The threads that read files: more than cores, so that one waiting for
/// the disk does not leave a core idle.
fn reader_pool() -> Result<rayon::ThreadPool> {
    let readers = std::thread::available_parallelism().map_or(2, |n| n.get()) + 1;
    rayon::ThreadPoolBuilder::new()
        .num_threads(readers)
        .build()
        .map_err(|e| Error::io("start reader threads", std::io::Error::other(e)))
}

/// Reads every file of `files` that changed and stores it; adds them to
/// the summary's file counts and sizes.
fn read_files(
    writer: &BlobWriter<'_>,
    repo: &Repository,
    mut files: Vec<&mut FileJob>,
    pool: &rayon::ThreadPool,
    summary: &mut BackupSummary,
    progress: &Progress,
) -> Result<()> {
    // The large files first, the largest first: a disk image met last
    // keeps one core busy while the others have nothing left to do.
    // The small ones keep the tree's order, which is the disk's.
    files.sort_by_key(|j| {
        let large = j.node.size >= SHARED_FILE_SIZE && !j.reused;
        std::cmp::Reverse(if large { j.node.size } else { 0 })
    });
    // The readers take the files in this order, each the next one when
    // free, while the kernel reads ahead of them.
    let (ask, asked) = std::sync::mpsc::sync_channel(PREFETCH_FILES);
    // Advice only: without the thread (it could not start), nothing is
    // asked; it ends when the files are handed out (not waited for: an
    // `open` on a hung mount would hold the backup).
    let _ = std::thread::Builder::new()
        .name("rewind-prefetch".into())
        .spawn(move || prefetcher(asked));
    // Summed as they come, not collected: a result per file is
    // memory that grows with the tree (88 bytes a file).
    let read: Result<u64> = pool.install(|| {
        Prefetch::new(files.iter_mut(), ask, &progress.cancel)
            .par_bridge()
            .map(|job| {
                if job.reused {
                    return Ok(0);
                }
                progress.cancel.check()?;
                let n = read_file(writer, repo, job, progress)?;
                progress.done_files.fetch_add(1, Ordering::Relaxed);
                Ok(n)
            })
            .try_reduce(|| 0, |a, b| Ok(a + b))
    });
    summary.bytes_read += read?;
    for job in &files {
        if job.failed {
            summary.errors += 1;
            continue;
        }
        // The size as stored: a file that grew or shrank while it was
        // read has the size of what was read.
        summary.total_bytes += job.node.size;
        if job.reused {
            summary.files_unchanged += 1;
        } else if job.in_parent {
            summary.files_changed += 1;
        } else {
            summary.files_new += 1;
        }
    }
    Ok(())
}

// ------------------------------------------------------- early stores

/// A finished directory's entries, handed to the early stores.
struct Handoff {
    children: Vec<Entry>,
    /// Entries held below it, its own included.
    held: usize,
    /// Its tree's id, set once written.
    id: Arc<OnceLock<BlobId>>,
}

/// The scan's budget, and what it holds (docs/DESIGN.md §9): half for the
/// scan's tree, half for the directories queued for the stores.
struct EarlyStores {
    /// Entries in the scan's tree: added as directories are listed, taken
    /// off as they are found unchanged or handed off.
    held: AtomicUsize,
    /// Entries handed off and not yet stored; `room` is told when it drops.
    queued: Mutex<usize>,
    room: std::sync::Condvar,
    /// The budget, in entries.
    limit: usize,
    /// Set when storing failed: the scan stops.
    failed: AtomicBool,
    /// Directories stored.
    stored: AtomicU64,
}

impl EarlyStores {
    fn new(budget: u64) -> EarlyStores {
        EarlyStores {
            held: AtomicUsize::new(0),
            queued: Mutex::new(0),
            room: std::sync::Condvar::new(),
            limit: (budget / ENTRY_BYTES).max(2) as usize,
            failed: AtomicBool::new(false),
            stored: AtomicU64::new(0),
        }
    }

    fn half(&self) -> usize {
        self.limit / 2
    }

    /// Waits until the queue has room, then counts `entries` in it; false
    /// (nothing counted) if the stores failed or ended.
    fn queue(&self, entries: usize) -> bool {
        let mut queued = self.queued.lock().expect("queued");
        while *queued >= self.half() && !self.failed.load(Ordering::Relaxed) {
            queued = self.room.wait(queued).expect("queued");
        }
        if self.failed.load(Ordering::Relaxed) {
            return false;
        }
        *queued += entries;
        true
    }

    /// `entries` left the queue (stored, or dropped after a failure).
    fn done(&self, entries: usize) {
        *self.queued.lock().expect("queued") -= entries;
        self.room.notify_all();
    }

    /// Storing failed: the scan stops, and nothing waits for room.
    fn fail(&self) {
        self.failed.store(true, Ordering::Relaxed);
        let _queued = self.queued.lock().expect("queued");
        self.room.notify_all();
    }
}

/// Ends the early stores however their thread ends (an error, a panic,
/// raised again when it is joined, or the channel closed after the scan),
/// so that no scan thread waits for room forever.
struct StopOnExit<'a>(&'a EarlyStores);

impl Drop for StopOnExit<'_> {
    fn drop(&mut self) {
        self.0.fail();
    }
}

/// The thread of the early stores: takes the directories handed off, up to
/// half the budget at a time, reads their files and writes their trees
/// while the scan goes on. After an error it drops what is handed off.
/// Returns what it read, counted.
fn store_early(
    handed: crossbeam_channel::Receiver<Handoff>,
    writer: &BlobWriter<'_>,
    repo: &Repository,
    early: &EarlyStores,
    progress: &Progress,
) -> Result<BackupSummary> {
    let _guard = StopOnExit(early);
    let pool = reader_pool()?;
    let mut summary = BackupSummary::default();
    let mut result = Ok(());
    while let Ok(first) = handed.recv() {
        if result.is_err() {
            early.done(first.held);
            continue;
        }
        let mut held = first.held;
        let mut batch = vec![first];
        while held < early.half() {
            match handed.try_recv() {
                Ok(h) => {
                    held += h.held;
                    batch.push(h);
                }
                Err(_) => break,
            }
        }
        let dirs = batch.len() as u64;
        result = store_batch(writer, repo, batch, &pool, &mut summary, progress);
        match result {
            Ok(()) => early.stored.fetch_add(dirs, Ordering::Relaxed),
            Err(_) => {
                early.fail();
                0
            }
        };
        early.done(held);
    }
    result.map(|()| summary)
}

/// Reads the files of a batch of handed-off directories, then writes their
/// trees in the order they were handed off: a directory is handed off after
/// those below it, so each subtree's id is known when its parent's tree is
/// written.
fn store_batch(
    writer: &BlobWriter<'_>,
    repo: &Repository,
    mut batch: Vec<Handoff>,
    pool: &rayon::ThreadPool,
    summary: &mut BackupSummary,
    progress: &Progress,
) -> Result<()> {
    let mut files = Vec::new();
    for h in &mut batch {
        collect_jobs(&mut h.children, &mut files);
    }
    read_files(writer, repo, files, pool, summary, progress)?;
    for h in batch {
        let id = tree_of(h.children, writer)?;
        let _ = h.id.set(id);
    }
    Ok(())
}

/// Adds the early stores' counts to the backup's.
fn add_counts(summary: &mut BackupSummary, early: &BackupSummary) {
    summary.files_new += early.files_new;
    summary.files_changed += early.files_changed;
    summary.files_unchanged += early.files_unchanged;
    summary.total_bytes += early.total_bytes;
    summary.bytes_read += early.bytes_read;
    summary.errors += early.errors;
}

/// Scores what changed against the parent: mass encryption shows here
/// (docs/DESIGN.md §9b). The new blobs are in this handle's index (the
/// writer keeps it current). A scan that fails is said, and the snapshot is
/// saved without a verdict.
/// A slow attack shows only over several backups: the earlier snapshots
/// of the same host and paths are looked at too ([`crate::scan::accumulate`]).
fn scan_against(
    repo: &Repository,
    parent: &SnapshotFile,
    root: &BlobId,
    opts: &BackupOptions,
    paths: &[String],
    files_now: u64,
) -> (Option<crate::scan::ScanResult>, Option<String>) {
    let files_before =
        parent.summary.files_new + parent.summary.files_changed + parent.summary.files_unchanged;
    let scanned = crate::scan::Sizes::new(repo)
        .and_then(|sizes| crate::scan::scan(repo, &sizes, &parent.tree, root, files_before))
        .and_then(|mut r| {
            // Without a suspect now, the earlier ones add up to what the
            // previous backup already held against the line (its window
            // only loses its oldest snapshot): no second listing.
            if r.suspect_keys.is_empty() {
                return Ok(r);
            }
            let mut want = paths.to_vec();
            want.sort();
            let group: Vec<(SnapshotId, SnapshotFile)> = repo
                .snapshots()?
                .into_iter()
                .filter(|(_, s)| {
                    let mut p = s.paths.clone();
                    p.sort();
                    s.hostname == opts.hostname && p == want
                })
                .collect();
            crate::scan::accumulate(&mut r, &group, files_now);
            Ok(r)
        });
    match scanned {
        Ok(r) => (Some(r), None),
        Err(e) => (None, Some(e.to_string())),
    }
}

/// Backs up `opts.paths`: scan the sources against the parent snapshot,
/// read and store what changed, write the trees, scan the changes for
/// ransomware, and write the snapshot last (W3). Files that cannot be read
/// are warnings; storage errors stop it and no snapshot is written.
pub fn backup(
    repo: &Repository,
    opts: &BackupOptions,
    progress: &Progress,
) -> Result<BackupOutcome> {
    let start = Instant::now();
    let abs = resolve_sources(opts, progress)?;
    let marker = announce(repo, opts)?;
    let abs = top_sources(&abs, opts)?;
    let path_strings: Vec<String> = match &opts.label {
        Some(label) => vec![label.clone()],
        None => abs
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
    };
    let excludes = build_excludes(opts)?;
    // The index now (after the marker, docs/DESIGN.md §8c): a damaged index
    // file costs dedup and may hide damage, so it is said.
    let location = PathBuf::from(repo.backend().location());
    for (name, e) in repo.index()?.damaged() {
        progress.warn(
            &location,
            format!(
                "index file {name} cannot be read ({e}); the blobs it lists are stored again, \
                 and snapshots that need them may be damaged: rebuild the index from the packs"
            ),
        );
    }
    let (parent, parent_root) = parent_with_root(repo, opts, &path_strings, progress)?;

    let early = EarlyStores::new(opts.scan_memory.unwrap_or(DEFAULT_SCAN_MEMORY));
    let ((root_id, summary), stats) = repo.write_blobs_with(opts.dry_run, |writer| {
        std::thread::scope(|s| {
            // Unbounded: what waits in it is bounded by `early`'s queue.
            let (handoff, handed) = crossbeam_channel::unbounded();
            let stores = std::thread::Builder::new()
                .name("rewind-early-store".into())
                .spawn_scoped(s, || store_early(handed, writer, repo, &early, progress))
                .map_err(|e| Error::io("start the early stores' thread", e))?;
            let scanner = Scanner {
                repo,
                early: &early,
                handoff,
                opts,
                excludes,
                owners: Owners::default(),
                progress,
                dirs: AtomicU64::new(0),
                others: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                unchanged_files: AtomicU64::new(0),
                unchanged_bytes: AtomicU64::new(0),
            };
            // Scanning is mostly waiting for inodes: many threads keep the disk busy.
            let root = rayon::ThreadPoolBuilder::new()
                .num_threads(8)
                .build()
                .map_err(|e| Error::io("start scanner threads", std::io::Error::other(e)))
                .and_then(|pool| scanner.scan_sources(&abs, parent_root.as_ref(), &pool));
            progress.scan_done.store(true, Ordering::SeqCst);
            let mut summary = BackupSummary {
                dirs: scanner.dirs.load(Ordering::Relaxed),
                others: scanner.others.load(Ordering::Relaxed),
                errors: scanner.errors.load(Ordering::Relaxed),
                files_unchanged: scanner.unchanged_files.load(Ordering::Relaxed),
                total_bytes: scanner.unchanged_bytes.load(Ordering::Relaxed),
                ..Default::default()
            };
            drop(scanner); // closes the channel: the early stores end
            let stored = match stores.join() {
                Ok(stored) => stored,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            let root = root?;
            add_counts(&mut summary, &stored?);
            progress.cancel.check()?;
            let id = store(writer, repo, root, &mut summary, progress)?;
            Ok((id, summary))
        })
    })?;
    let written = Written {
        marker,
        parent,
        paths: path_strings,
        root: root_id,
        stats,
        start,
    };
    let mut outcome = finish(repo, opts, written, summary, progress)?;
    outcome.stored_early = early.stored.load(Ordering::Relaxed);
    Ok(outcome)
}

/// What a backup wrote, before its snapshot.
struct Written {
    marker: Option<Running>,
    parent: Option<(SnapshotId, SnapshotFile)>,
    paths: Vec<String>,
    root: BlobId,
    stats: crate::repository::WriterStats,
    start: Instant,
}

/// Ends a backup whose blobs and trees are written: the figures, the
/// ransomware scan against the parent, and the snapshot, last (W3).
fn finish(
    repo: &Repository,
    opts: &BackupOptions,
    w: Written,
    mut summary: BackupSummary,
    progress: &Progress,
) -> Result<BackupOutcome> {
    summary.blobs_added = w.stats.data_blobs + w.stats.tree_blobs;
    summary.bytes_added_raw = w.stats.bytes_raw;
    summary.bytes_added_stored = w.stats.bytes_stored;
    let warnings = progress.all_warnings();
    summary.errors = summary.errors.max(warnings.len() as u64);
    let (scan, scan_error) = match &w.parent {
        Some((_, ps)) if !opts.skip_scan && !opts.dry_run => {
            let files_now = summary.files_new + summary.files_changed + summary.files_unchanged;
            scan_against(repo, ps, &w.root, opts, &w.paths, files_now)
        }
        _ => (None, None),
    };
    summary.duration_secs = w.start.elapsed().as_secs_f64();
    let snapshot = SnapshotFile {
        version: VERSION,
        time: opts.time.unwrap_or_else(jiff::Timestamp::now),
        tree: w.root,
        paths: w.paths,
        hostname: opts.hostname.clone(),
        username: opts.username.clone(),
        tags: opts.tags.clone(),
        parent: w.parent.map(|(id, _)| id),
        program: format!("rewind {}", env!("CARGO_PKG_VERSION")),
        summary,
        protection: None,
        original: None,
        copied_from: None,
        rewritten: None,
        scan,
    };
    let snapshot_id = if opts.dry_run {
        None
    } else {
        still_safe(repo, w.marker.as_ref())?;
        Some(repo.save_snapshot(&snapshot)?)
    };
    Ok(BackupOutcome {
        snapshot_id,
        snapshot,
        warnings,
        scan_error,
        stored_early: 0,
    })
}

/// Announces a backup to prune (docs/DESIGN.md §8c); nothing for a dry run.
fn announce(repo: &Repository, opts: &BackupOptions) -> Result<Option<Running>> {
    if opts.dry_run {
        return Ok(None);
    }
    // The real host (not --host): prune on this host checks the pid.
    repo.announce(RunningKind::Backup, &local_hostname())
        .map(Some)
}

/// Before the snapshot is written: if this backup was stopped or suspended
/// long enough for prune to take it for dead, and a prune ran meanwhile,
/// data it reused may be gone, so no snapshot is written.
fn still_safe(repo: &Repository, marker: Option<&Running>) -> Result<()> {
    let Some(m) = marker else { return Ok(()) };
    if !m.went_stale() {
        return Ok(());
    }
    let since = m
        .start()
        .saturating_sub(crate::repository::CLOCK_SKEW)
        .expect("in range");
    if let (Some(state), _) = repo.prune_state()? {
        if state.time >= since {
            return Err(Error::Refused(format!(
                "this backup was paused for a long time (a suspended machine?) while a prune                  ran at {}; data it relied on may have been removed, so no snapshot was                  written. Run the backup again",
                state.time
            )));
        }
    }
    Ok(())
}

/// A stream to back up as a single file (stdin, a command's output).
pub struct StreamSource<'a> {
    /// File name inside the snapshot.
    pub name: String,
    /// The data.
    pub reader: Box<dyn Read + Send + 'a>,
    /// Called after the stream ended and before the snapshot is saved; an
    /// error (the command failed) aborts the backup: no snapshot is saved.
    pub finish: Box<dyn FnOnce() -> Result<()> + 'a>,
}

/// Backs up one stream as a file `/NAME` of a new snapshot.
pub fn backup_stream(
    repo: &Repository,
    opts: &BackupOptions,
    source: StreamSource<'_>,
    progress: &Progress,
) -> Result<BackupOutcome> {
    let start = Instant::now();
    tree_name_ok(&source.name)?;
    let StreamSource {
        name,
        mut reader,
        finish,
    } = source;
    progress.scan_done.store(true, Ordering::SeqCst);
    let marker = announce(repo, opts)?;
    let now = jiff::Timestamp::now();
    let time = Time {
        secs: now.as_second(),
        nanos: now.subsec_nanosecond().max(0) as u32,
    };
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let owners = Owners::default();
    let ((root_id, size), stats) = repo.write_blobs_with(opts.dry_run, |writer| {
        let mut content = Vec::new();
        let size = chunk_stream(
            &repo.crypto().chunker(),
            &mut reader,
            |chunk: &[u8]| -> Result<()> {
                progress.cancel.check()?;
                let (id, _) = writer.add_blob(BlobKind::Data, chunk)?;
                content.push(id);
                progress
                    .done_bytes
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                Ok(())
            },
        )
        .map_err(|e| match e {
            Error::Io { error: source, .. } => Error::io(format!("read {name}"), source),
            e => e,
        })?;
        // Interrupted while the stream was read: a command that was stopped
        // with us (Ctrl-C reaches it too) has not failed on its own.
        progress.cancel.check()?;
        finish()?;
        let node = Node {
            name: name.as_bytes().to_vec(),
            kind: NodeKind::File {
                content,
                holes: Vec::new(),
            },
            mode: 0o100600,
            uid,
            gid,
            user: owners.user(uid),
            group: owners.group(gid),
            size,
            mtime: time,
            ctime: time,
            inode: 0,
            device: 0,
            links: 1,
            xattrs: Vec::new(),
        };
        let (id, _) = writer.add_blob(BlobKind::Tree, &Tree::new(vec![node]).encode())?;
        Ok((id, size))
    })?;
    let summary = BackupSummary {
        files_new: 1,
        bytes_read: size,
        total_bytes: size,
        blobs_added: stats.data_blobs + stats.tree_blobs,
        bytes_added_raw: stats.bytes_raw,
        bytes_added_stored: stats.bytes_stored,
        duration_secs: start.elapsed().as_secs_f64(),
        ..Default::default()
    };
    let snapshot = SnapshotFile {
        version: VERSION,
        time: opts.time.unwrap_or(now),
        tree: root_id,
        paths: vec![format!("/{name}")],
        hostname: opts.hostname.clone(),
        username: opts.username.clone(),
        tags: opts.tags.clone(),
        parent: None,
        program: format!("rewind {}", env!("CARGO_PKG_VERSION")),
        summary,
        protection: None,
        original: None,
        copied_from: None,
        rewritten: None,
        scan: None,
    };
    let snapshot_id = if opts.dry_run {
        None
    } else {
        still_safe(repo, marker.as_ref())?;
        Some(repo.save_snapshot(&snapshot)?)
    };
    Ok(BackupOutcome {
        snapshot_id,
        snapshot,
        warnings: Vec::new(),
        scan_error: None,
        stored_early: 0,
    })
}

/// A source that is not this machine's file system (a mailbox, a cloud
/// drive): it writes its own blobs and trees, given the parent snapshot's
/// root tree to reuse what did not change.
pub trait TreeSource {
    /// What the snapshot's `paths` say (where the data came from, e.g.
    /// `imap://me@host`); the parent is the last snapshot of this host with
    /// the same paths.
    fn paths(&self) -> Vec<String>;

    /// Stores everything and returns the root tree. `summary` gets the
    /// file counts (`files_new`, `files_changed`, `files_unchanged`,
    /// `dirs`, `bytes_read`, `total_bytes`). An error stops the backup: no
    /// snapshot is written.
    fn store(
        &mut self,
        repo: &Repository,
        writer: &BlobWriter<'_>,
        parent_root: Option<&Tree>,
        summary: &mut BackupSummary,
        progress: &Progress,
    ) -> Result<BlobId>;
}

/// A node made by a [`TreeSource`] (a message, a cloud file, a folder of
/// them): owned by the user running the backup, no inode, one link.
pub fn source_node(name: &[u8], kind: NodeKind, mode: u32, size: u64, mtime: Time) -> Node {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    Node {
        name: name.to_vec(),
        kind,
        mode,
        uid,
        gid,
        user: None,
        group: None,
        size,
        mtime,
        ctime: mtime,
        inode: 0,
        device: 0,
        links: 1,
        xattrs: Vec::new(),
    }
}

/// Backs up a [`TreeSource`]: the same marker, parent, ransomware scan and
/// write ordering as a backup of files (the snapshot is written last).
pub fn backup_source(
    repo: &Repository,
    opts: &BackupOptions,
    source: &mut dyn TreeSource,
    progress: &Progress,
) -> Result<BackupOutcome> {
    let start = Instant::now();
    let marker = announce(repo, opts)?;
    let paths = source.paths();
    let (parent, parent_root) = parent_with_root(repo, opts, &paths, progress)?;
    let mut summary = BackupSummary::default();
    let (root, stats) = repo.write_blobs_with(opts.dry_run, |writer| {
        source.store(repo, writer, parent_root.as_ref(), &mut summary, progress)
    })?;
    progress.scan_done.store(true, Ordering::SeqCst);
    let written = Written {
        marker,
        parent,
        paths,
        root,
        stats,
        start,
    };
    finish(repo, opts, written, summary, progress)
}

fn tree_name_ok(name: &str) -> Result<()> {
    crate::format::tree::validate_name(name.as_bytes()).map_err(|why| {
        Error::InvalidInput(format!(
            "{name:?} is not a valid name for the file that holds the stream: {why}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Whether `queue(entries)` on another thread is still waiting after
    /// a moment; returns its thread to join.
    fn queue_elsewhere(
        early: &Arc<EarlyStores>,
        entries: usize,
    ) -> (std::thread::JoinHandle<bool>, Arc<AtomicBool>) {
        let returned = Arc::new(AtomicBool::new(false));
        let (e, r) = (early.clone(), returned.clone());
        let t = std::thread::spawn(move || {
            let queued = e.queue(entries);
            r.store(true, Ordering::SeqCst);
            queued
        });
        std::thread::sleep(Duration::from_millis(200));
        (t, returned)
    }

    #[test]
    fn a_full_queue_holds_the_scan_until_the_stores_take_from_it() {
        // 20 entries: half is 10.
        let early = Arc::new(EarlyStores::new(20 * ENTRY_BYTES));
        assert!(early.queue(6));
        assert!(early.queue(6), "below half: no wait");
        let (waiting, returned) = queue_elsewhere(&early, 3);
        assert!(
            !returned.load(Ordering::SeqCst),
            "12 queued of 10: it waits"
        );
        early.done(6);
        assert!(waiting.join().unwrap(), "room again: it goes on");
        assert_eq!(*early.queued.lock().unwrap(), 9);
    }

    #[test]
    fn stores_that_end_or_fail_free_a_waiting_scan() {
        let early = Arc::new(EarlyStores::new(20 * ENTRY_BYTES));
        assert!(early.queue(10));
        let (waiting, returned) = queue_elsewhere(&early, 1);
        assert!(!returned.load(Ordering::SeqCst));
        drop(StopOnExit(&early));
        assert!(!waiting.join().unwrap(), "nothing is handed off any more");
        assert!(!early.queue(1));
    }
}
