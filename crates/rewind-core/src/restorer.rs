//! The restore engine: snapshot -> files, never outside the target.
//!
//! ```text
//! plan:    walk the trees (names were validated on decode: no "..", no "/"),
//!          apply include/exclude, list dirs, files, links, specials
//! dirs:    create each directory; an existing symlink in the way is replaced
//!          (or the entry skipped with --overwrite never), never followed
//! files:   in parallel; skip files already identical (size and mtime equal,
//!          unless --overwrite always), write chunks at their offsets (holes
//!          stay holes), then owner, mode, xattrs, mtime
//! links:   hard links to the first restored path of each inode
//! finish:  directory metadata bottom-up; --delete removes what the snapshot
//!          lacks; --verify reads every restored file back and compares ids
//! ```
//! A missing or damaged blob fails only the files that need it; the rest go on.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use rayon::prelude::*;

use crate::archiver::{Progress, Warning};
use crate::error::{Error, Result};
use crate::format::tree::{skip_holes, Node, NodeKind, Tree};
use crate::id::BlobId;
use crate::repository::Repository;

/// What to do with files that already exist in the target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// Leave existing files alone.
    Never,
    /// Rewrite unless size and mtime already match (resumes an interrupted restore).
    #[default]
    IfChanged,
    /// Rewrite every file.
    Always,
}

/// Inputs of a restore.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Directory to restore into (created if missing).
    pub target: PathBuf,
    /// Existing-file policy.
    pub overwrite: Overwrite,
    /// Remove entries of the target that the snapshot lacks.
    pub delete: bool,
    /// Read every restored file back and compare it with the snapshot.
    pub verify: bool,
    /// Plan only.
    pub dry_run: bool,
    /// Restore only paths matching these (gitignore syntax, snapshot paths).
    pub includes: Vec<String>,
    /// Never restore paths matching these.
    pub excludes: Vec<String>,
}

/// What a restore did.
#[derive(Clone, Debug, Default)]
pub struct RestoreStats {
    /// Files written.
    pub files_restored: u64,
    /// Files left alone because they were already identical (or `never`).
    pub files_skipped: u64,
    /// Files not restored because something failed (named in `errors`).
    pub files_failed: u64,
    /// Directories restored.
    pub dirs: u64,
    /// Symlinks, hard links, fifos, devices.
    pub others: u64,
    /// Content bytes written.
    pub bytes_written: u64,
    /// Entries removed by `--delete`.
    pub deleted: u64,
    /// Files verified.
    pub verified: u64,
    /// Failures, by path.
    pub errors: Vec<Warning>,
}

/// What became of one planned file.
enum FileOutcome {
    /// Written, this many bytes.
    Written(u64),
    /// Left alone: already identical (or `--overwrite never`).
    Skipped,
    /// Not restored (the error is recorded).
    Failed,
}

struct PlanItem {
    rel: PathBuf,
    node: Node,
}

#[derive(Default)]
struct Plan {
    dirs: Vec<PlanItem>,
    files: Vec<PlanItem>,
    hardlinks: Vec<(PathBuf, PathBuf)>,
    others: Vec<PlanItem>,
    /// For --delete: every directory restored and the names the snapshot has there.
    listings: Vec<(PathBuf, BTreeSet<Vec<u8>>)>,
}

struct Filter {
    include: Option<ignore::gitignore::Gitignore>,
    exclude: ignore::gitignore::Gitignore,
}

fn matcher(patterns: &[String]) -> Result<ignore::gitignore::Gitignore> {
    let mut b = ignore::gitignore::GitignoreBuilder::new("/");
    for p in patterns {
        b.add_line(None, p)
            .map_err(|e| Error::InvalidInput(format!("bad pattern {p:?}: {e}")))?;
    }
    b.build()
        .map_err(|e| Error::InvalidInput(format!("bad patterns: {e}")))
}

impl Filter {
    fn excluded(&self, snap_path: &Path, is_dir: bool) -> bool {
        self.exclude.matched(snap_path, is_dir).is_ignore()
    }
    fn included(&self, snap_path: &Path, is_dir: bool) -> bool {
        match &self.include {
            None => true,
            Some(m) => m.matched_path_or_any_parents(snap_path, is_dir).is_ignore(),
        }
    }
}

struct Planner<'a> {
    repo: &'a Repository,
    filter: Filter,
    plan: Plan,
    seen_inodes: HashMap<(u64, u64), PathBuf>,
    errors: Vec<Warning>,
}

impl Planner<'_> {
    /// Plans the entries of `tree` into `rel`. Returns true if anything below was selected.
    fn walk(&mut self, tree: &Tree, rel: &Path, snap: &Path) -> bool {
        let mut any = false;
        let names: BTreeSet<Vec<u8>> = tree.nodes.iter().map(|n| n.name.clone()).collect();
        let listing_pos = self.plan.listings.len();
        self.plan.listings.push((rel.to_path_buf(), names));
        for node in &tree.nodes {
            let name = std::ffi::OsStr::from_bytes(&node.name);
            let child_rel = rel.join(name);
            let child_snap = snap.join(name);
            if self.filter.excluded(&child_snap, node.is_dir()) {
                continue;
            }
            match &node.kind {
                NodeKind::Dir { subtree } => {
                    let pos = self.plan.dirs.len();
                    self.plan.dirs.push(PlanItem {
                        rel: child_rel.clone(),
                        node: node.clone(),
                    });
                    let sub_any = match self.repo.read_tree(subtree) {
                        Ok(t) => self.walk(&t, &child_rel, &child_snap),
                        Err(e) => {
                            self.errors.push(Warning {
                                path: child_snap.clone(),
                                message: format!("directory contents lost: {e}"),
                            });
                            false
                        }
                    };
                    if sub_any || self.filter.included(&child_snap, true) {
                        any = true;
                    } else {
                        self.plan.dirs.truncate(pos);
                    }
                }
                _ if !self.filter.included(&child_snap, false) => {}
                NodeKind::File { .. } => {
                    any = true;
                    if node.links > 1 && node.inode != 0 {
                        let key = (node.device, node.inode);
                        if let Some(first) = self.seen_inodes.get(&key) {
                            self.plan.hardlinks.push((first.clone(), child_rel));
                            continue;
                        }
                        self.seen_inodes.insert(key, child_rel.clone());
                    }
                    self.plan.files.push(PlanItem {
                        rel: child_rel,
                        node: node.clone(),
                    });
                }
                _ => {
                    any = true;
                    self.plan.others.push(PlanItem {
                        rel: child_rel,
                        node: node.clone(),
                    });
                }
            }
        }
        // Without an include filter an empty directory is restored too, and
        // --delete must empty it.
        if !any && self.filter.include.is_some() && rel != Path::new("") {
            self.plan.listings.truncate(listing_pos);
        }
        any
    }
}

/// Finds the node at `path` (absolute, inside the snapshot) below `root`.
/// Returns `None` for the root itself.
pub fn find_node(repo: &Repository, root: &crate::id::BlobId, path: &Path) -> Result<Option<Node>> {
    let mut tree = repo.read_tree(root)?;
    let comps: Vec<&std::ffi::OsStr> = path
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let mut node = None;
    for (i, c) in comps.iter().enumerate() {
        let n = tree.find(c.as_bytes()).cloned().ok_or_else(|| {
            Error::InvalidInput(format!("{} is not in the snapshot", path.display()))
        })?;
        if i + 1 < comps.len() {
            match &n.kind {
                NodeKind::Dir { subtree } => tree = repo.read_tree(subtree)?,
                _ => {
                    return Err(Error::InvalidInput(format!(
                        "{} is not in the snapshot",
                        path.display()
                    )))
                }
            }
        }
        node = Some(n);
    }
    Ok(node)
}

fn ensure_dir(path: &Path, overwrite: Overwrite) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => Ok(()),
        Ok(_) if overwrite == Overwrite::Never => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "a non-directory is in the way",
        )),
        Ok(_) => {
            fs::remove_file(path)?; // a file or symlink: never followed
            fs::create_dir(path)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::create_dir(path),
        Err(e) => Err(e),
    }
}

fn to_filetime(t: crate::format::tree::Time) -> filetime::FileTime {
    filetime::FileTime::from_unix_time(t.secs, t.nanos)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Applies owner (as root), mode, xattrs and mtime; never follows symlinks.
fn apply_metadata(path: &Path, node: &Node) -> std::result::Result<(), String> {
    let mut problems = Vec::new();
    if is_root() {
        if let Err(e) = std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid)) {
            problems.push(format!("owner: {e}"));
        }
    }
    // xattrs before the mode: a read-only mode would forbid setting them.
    for x in &node.xattrs {
        if let Err(e) = xattr::set(path, std::ffi::OsStr::from_bytes(&x.name), &x.value) {
            problems.push(format!("xattr {}: {e}", String::from_utf8_lossy(&x.name)));
        }
    }
    if !matches!(node.kind, NodeKind::Symlink { .. }) {
        if let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(node.mode & 0o7777)) {
            problems.push(format!("mode: {e}"));
        }
    }
    let t = to_filetime(node.mtime);
    if let Err(e) = filetime::set_symlink_file_times(path, t, t) {
        problems.push(format!("mtime: {e}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "metadata not fully restored ({})",
            problems.join("; ")
        ))
    }
}

/// Removes a file, symlink or special file in the way of a restored entry;
/// a directory in the way is never removed (that is for `--delete` only).
fn remove_in_the_way(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "a directory is in the way (move it away to restore this entry)",
        )),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// A directory where the snapshot has a file, link or special file. With
/// `delete` it goes (the snapshot lacks it; counted in `cleared`), else the
/// entry is not restored and this is the conflict to report. Nothing in the
/// way, or a non-directory, is no conflict here.
fn clear_directory_in_the_way(
    path: &Path,
    delete: bool,
    cleared: &std::sync::atomic::AtomicU64,
) -> std::result::Result<(), String> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() && delete => match fs::remove_dir_all(path) {
            Ok(()) => {
                cleared.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(format!("cannot remove the directory in the way: {e}")),
        },
        Ok(md) if md.is_dir() => Err(
            "not restored: a directory is in the way (move it away to restore this entry)".into(),
        ),
        _ => Ok(()),
    }
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether the file at `path` already matches `node` (size and mtime).
fn already_there(path: &Path, node: &Node) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let md = fs::symlink_metadata(path).ok()?;
    Some(
        md.is_file()
            && md.size() == node.size
            && md.mtime() == node.mtime.secs
            && md.mtime_nsec() == i64::from(node.mtime.nanos),
    )
}

fn write_file(repo: &Repository, path: &Path, node: &Node, progress: &Progress) -> Result<u64> {
    let NodeKind::File { content, holes } = &node.kind else {
        unreachable!("only files are written")
    };
    // Written to a temporary file in the same directory, then renamed over
    // the target: a restore that fails halfway leaves the existing file as it
    // was, and the new file is a new inode, so nothing is ever written
    // through a hard link (to other restored paths, or out of the target).
    if fs::symlink_metadata(path).is_ok_and(|md| md.is_dir()) {
        return Err(Error::Refused(format!("{} is a directory in the target; the snapshot has a file there (move the directory away)", path.display())));
    }
    let mut rnd = [0u8; 8];
    crate::crypto::random_bytes(&mut rnd);
    let tmp = path.with_file_name(format!(".rewind-tmp-{}", hex::encode(rnd)));
    let result = (|| {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
        let mut pos = 0u64;
        let mut holes = holes.iter().peekable();
        let mut written = 0;
        repo.read_blobs(content, |_, data| {
            skip_holes(&mut pos, &mut holes);
            f.write_all_at(&data, pos)
                .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
            pos += data.len() as u64;
            written += data.len() as u64;
            progress
                .done_bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            Ok(())
        })?;
        f.set_len(node.size)
            .map_err(|e| Error::io(format!("resize {}", path.display()), e))?;
        fs::rename(&tmp, path)
            .map_err(|e| Error::io(format!("rename into {}", path.display()), e))?;
        Ok(written)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// How many restored files a pack-by-pack restore keeps open at once; past
/// that, a file is opened for each write.
const MAX_OPEN_FILES: usize = 256;

/// Where one blob of a file goes.
struct Placement {
    blob: BlobId,
    offset: u32,
    length: u32,
    raw_length: u32,
    file: usize,
    at: u64,
}

/// A file being written pack by pack.
struct PackFile {
    path: PathBuf,
    tmp: PathBuf,
    size: u64,
    remaining: std::sync::atomic::AtomicUsize,
    state: Mutex<PackFileState>,
}

#[derive(Default)]
struct PackFileState {
    handle: Option<File>,
    created: bool,
    written: u64,
    failed: Option<String>,
    result: Option<std::result::Result<u64, String>>,
}

/// A temporary name beside `path`.
fn temporary_for(path: &Path) -> PathBuf {
    let mut rnd = [0u8; 8];
    crate::crypto::random_bytes(&mut rnd);
    path.with_file_name(format!(".rewind-tmp-{}", hex::encode(rnd)))
}

impl PackFile {
    /// Writes `data` at `at` (creating the temporary file on first use).
    fn write(&self, data: &[u8], at: u64, open: &std::sync::atomic::AtomicUsize) {
        let mut st = self.state.lock().expect("file state");
        if st.failed.is_some() {
            return;
        }
        let r = (|| -> std::io::Result<()> {
            if st.handle.is_none() {
                let mut o = OpenOptions::new();
                o.write(true).custom_flags(nix::libc::O_NOFOLLOW);
                if !st.created {
                    o.create_new(true).mode(0o600);
                }
                let f = o.open(&self.tmp)?;
                st.created = true;
                if open.fetch_add(1, Ordering::Relaxed) < MAX_OPEN_FILES {
                    st.handle = Some(f);
                } else {
                    open.fetch_sub(1, Ordering::Relaxed);
                    return f.write_all_at(data, at);
                }
            }
            st.handle.as_ref().expect("opened").write_all_at(data, at)
        })();
        match r {
            Ok(()) => st.written += data.len() as u64,
            Err(e) => {
                st.failed = Some(Error::io(format!("write {}", self.path.display()), e).to_string())
            }
        }
    }

    fn fail(&self, why: &str) {
        let mut st = self.state.lock().expect("file state");
        st.failed.get_or_insert_with(|| why.to_string());
    }

    /// Counts one placement done; the last one finishes the file: sized and
    /// renamed into place, or its temporary removed if anything failed.
    fn placed(&self, open: &std::sync::atomic::AtomicUsize, progress: &Progress) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish(open, progress);
        }
    }

    fn finish(&self, open: &std::sync::atomic::AtomicUsize, progress: &Progress) {
        let mut st = self.state.lock().expect("file state");
        if st.handle.take().is_some() {
            open.fetch_sub(1, Ordering::Relaxed);
        }
        let result = match st.failed.clone() {
            Some(e) => Err(e),
            None => (|| {
                if !st.created {
                    OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .custom_flags(nix::libc::O_NOFOLLOW)
                        .open(&self.tmp)?;
                    st.created = true;
                }
                let f = OpenOptions::new()
                    .write(true)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(&self.tmp)?;
                f.set_len(self.size)?;
                drop(f);
                fs::rename(&self.tmp, &self.path)
            })()
            .map(|()| st.written)
            .map_err(|e| Error::io(format!("write {}", self.path.display()), e).to_string()),
        };
        if result.is_err() && st.created {
            let _ = fs::remove_file(&self.tmp);
        }
        progress.done_files.fetch_add(1, Ordering::Relaxed);
        st.result = Some(result);
    }
}

/// Writes `files` (target paths and their nodes) reading each pack once:
/// the packs are read in parallel (as many as the backend has connections),
/// and each blob read is written to every file, and every place in it, that
/// needs it. Each file is written to a temporary name and renamed into place
/// when its last blob is in, as in [`write_file`]. Returns per file the bytes
/// written, or why it failed (a missing or damaged blob fails only the files
/// that need it).
fn write_files_by_pack(
    repo: &Repository,
    files: &[(PathBuf, &Node)],
    progress: &Progress,
) -> Vec<std::result::Result<u64, String>> {
    let index = match repo.index() {
        Ok(i) => i,
        Err(e) => return files.iter().map(|_| Err(e.to_string())).collect(),
    };
    let open = std::sync::atomic::AtomicUsize::new(0);
    let mut by_pack: HashMap<u32, Vec<Placement>> = HashMap::new();
    let mut jobs: Vec<PackFile> = Vec::with_capacity(files.len());
    for (i, (path, node)) in files.iter().enumerate() {
        let NodeKind::File { content, holes } = &node.kind else {
            unreachable!("only files are written")
        };
        let job = PackFile {
            path: path.clone(),
            tmp: temporary_for(path),
            size: node.size,
            remaining: std::sync::atomic::AtomicUsize::new(content.len()),
            state: Mutex::new(PackFileState::default()),
        };
        if fs::symlink_metadata(path).is_ok_and(|md| md.is_dir()) {
            job.fail(&Error::Refused(format!("{} is a directory in the target; the snapshot has a file there (move the directory away)", path.display())).to_string());
        }
        let mut at = 0u64;
        let mut holes = holes.iter().peekable();
        for id in content {
            skip_holes(&mut at, &mut holes);
            match index.get(id) {
                Some(e) => {
                    by_pack.entry(e.pack).or_default().push(Placement {
                        blob: *id,
                        offset: e.offset,
                        length: e.length,
                        raw_length: e.raw_length,
                        file: i,
                        at,
                    });
                    at += u64::from(e.raw_length);
                }
                None => {
                    let missing = repo.read_blob(id).err().map_or_else(
                        || format!("blob {id} is not in the index"),
                        |e| e.to_string(),
                    );
                    job.fail(&missing);
                    job.remaining.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        if job.remaining.load(Ordering::Relaxed) == 0 {
            job.finish(&open, progress);
        }
        jobs.push(job);
    }

    let mut packs: Vec<(u32, Vec<Placement>)> = by_pack.into_iter().collect();
    packs.sort_by_key(|(p, _)| index.pack_id_at(*p));
    let threads = repo.backend().connections().max(2);
    let run = |(pack, mut placements): (u32, Vec<Placement>)| {
        placements.sort_by_key(|p| (p.offset, p.file, p.at));
        let pack_id = index.pack_id_at(pack).to_hex();
        let start = u64::from(placements[0].offset);
        let end = placements
            .iter()
            .map(|p| u64::from(p.offset) + u64::from(p.length))
            .max()
            .expect("a pack has placements");
        let all_failed = placements.iter().all(|p| {
            jobs[p.file]
                .state
                .lock()
                .expect("file state")
                .failed
                .is_some()
        });
        let bytes = if all_failed {
            Err(String::new())
        } else {
            u32::try_from(end - start)
                .map_err(|_| format!("pack {pack_id}: a read of {} bytes", end - start))
                .and_then(|len| {
                    repo.backend()
                        .read_range(crate::backend::FileType::Pack, &pack_id, start, len)
                        .map_err(|e| e.to_string())
                })
        };
        let mut i = 0;
        while i < placements.len() {
            let p = &placements[i];
            let same = placements[i..]
                .iter()
                .take_while(|q| q.offset == p.offset && q.blob == p.blob)
                .count();
            let data = match &bytes {
                Ok(b) => {
                    let at = (u64::from(p.offset) - start) as usize;
                    repo.open_blob(
                        &p.blob,
                        p.raw_length,
                        &b[at..at + p.length as usize],
                        &pack_id,
                    )
                    .map_err(|e| e.to_string())
                }
                Err(e) => Err(e.clone()),
            };
            for q in &placements[i..i + same] {
                let job = &jobs[q.file];
                match &data {
                    Ok(d) => {
                        job.write(d, q.at, &open);
                        progress
                            .done_bytes
                            .fetch_add(d.len() as u64, Ordering::Relaxed);
                    }
                    Err(e) if e.is_empty() => {}
                    Err(e) => job.fail(e),
                }
                job.placed(&open, progress);
            }
            i += same;
        }
    };
    match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(pool) => pool.install(|| packs.into_par_iter().for_each(run)),
        Err(_) => packs.into_iter().for_each(run),
    }
    jobs.into_iter()
        .map(|j| {
            j.state
                .into_inner()
                .expect("file state")
                .result
                .unwrap_or_else(
                    || Err("not restored (internal error: blobs left unwritten)".into()),
                )
        })
        .collect()
}

/// Name of the temporary file a restore writes before renaming it into place.
fn is_restore_temporary(name: &[u8]) -> bool {
    name.len() == 12 + 16
        && name.starts_with(b".rewind-tmp-")
        && name[12..].iter().all(u8::is_ascii_hexdigit)
}

/// Removes what an interrupted restore left in `dir` (temporary files that
/// never got renamed into place).
fn remove_stale_temporaries(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if is_restore_temporary(e.file_name().as_bytes())
            && e.file_type().is_ok_and(|t| t.is_file())
        {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Reads a restored file back and checks every chunk against its id.
fn verify_file(repo: &Repository, path: &Path, node: &Node) -> std::result::Result<(), String> {
    let NodeKind::File { content, holes } = &node.kind else {
        return Ok(());
    };
    let index = repo.index().map_err(|e| e.to_string())?;
    let mut f = File::open(path).map_err(|e| format!("cannot read back: {e}"))?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    if len != node.size {
        return Err(format!("size is {len}, snapshot says {}", node.size));
    }
    let mut pos = 0u64;
    let mut holes = holes.iter().peekable();
    let mut buf = Vec::new();
    for id in content {
        skip_holes(&mut pos, &mut holes);
        let e = index
            .get(id)
            .ok_or_else(|| format!("blob {id} missing from the index"))?;
        buf.resize(e.raw_length as usize, 0);
        f.read_exact_at(&mut buf, pos)
            .map_err(|e| format!("cannot read back: {e}"))?;
        if repo.crypto().blob_id(&buf) != *id {
            return Err(format!("content at offset {pos} differs from the snapshot"));
        }
        pos += buf.len() as u64;
    }
    let _ = f.read(&mut []);
    Ok(())
}

/// Restores the tree `root` (or the single `node`) into `opts.target`.
///
/// `snap_base` is the path in the snapshot that `root` stands for (used for
/// include/exclude matching and messages).
pub fn restore(
    repo: &Repository,
    start: RestoreStart,
    opts: &RestoreOptions,
    progress: &Progress,
) -> Result<RestoreStats> {
    let filter = Filter {
        include: if opts.includes.is_empty() {
            None
        } else {
            Some(matcher(&opts.includes)?)
        },
        exclude: matcher(&opts.excludes)?,
    };
    if fs::metadata(&opts.target).is_ok_and(|md| !md.is_dir()) {
        return Err(Error::InvalidInput(format!(
            "the restore target {} is not a directory",
            opts.target.display()
        )));
    }
    if opts.delete && matches!(start, RestoreStart::Node { .. }) {
        return Err(Error::InvalidInput(
            "--delete needs a directory to restore, not a single file".into(),
        ));
    }
    let mut planner = Planner {
        repo,
        filter,
        plan: Plan::default(),
        seen_inodes: HashMap::new(),
        errors: Vec::new(),
    };
    match &start {
        RestoreStart::Tree { tree, snap_path } => {
            let t = repo.read_tree(tree)?;
            planner.walk(&t, Path::new(""), snap_path);
        }
        RestoreStart::Node { node, snap_path } => {
            let wrapper = Tree::new(vec![node.clone()]);
            planner.walk(
                &wrapper,
                Path::new(""),
                snap_path.parent().unwrap_or(Path::new("/")),
            );
        }
    }
    let Planner {
        mut plan, errors, ..
    } = planner;
    // Restore files in the order their data lies in the packs, so that
    // neighbouring reads hit the same pack (one request on remote storage,
    // whose backend keeps recently read packs).
    if let Ok(index) = repo.index() {
        plan.files.sort_by_cached_key(|f| match &f.node.kind {
            NodeKind::File { content, .. } => content
                .first()
                .and_then(|b| index.get(b))
                .map_or((0, 0), |e| (e.pack, e.offset)),
            _ => (0, 0),
        });
    }
    let mut stats = RestoreStats {
        errors,
        ..Default::default()
    };
    progress
        .total_files
        .store(plan.files.len() as u64, Ordering::Relaxed);
    progress.total_bytes.store(
        plan.files.iter().map(|f| f.node.size).sum(),
        Ordering::Relaxed,
    );
    progress.scan_done.store(true, Ordering::SeqCst);
    let target = &opts.target;

    if opts.dry_run {
        for f in &plan.files {
            let same = already_there(&target.join(&f.rel), &f.node);
            let skip = match opts.overwrite {
                Overwrite::Never => same.is_some(),
                Overwrite::IfChanged => same == Some(true),
                Overwrite::Always => false,
            };
            if skip {
                stats.files_skipped += 1;
            } else {
                stats.files_restored += 1;
                stats.bytes_written += f.node.size;
            }
        }
        stats.dirs = plan.dirs.len() as u64;
        stats.others = (plan.others.len() + plan.hardlinks.len()) as u64;
        return Ok(stats);
    }

    fs::create_dir_all(target)
        .map_err(|e| Error::io(format!("create target {}", target.display()), e))?;
    let errors = Mutex::new(Vec::new());
    let write_failed = Mutex::new(std::collections::HashSet::<PathBuf>::new());
    let fail = |rel: &Path, msg: String| {
        errors.lock().expect("errors").push(Warning {
            path: rel.to_path_buf(),
            message: msg,
        })
    };

    // Directories, parents first. A failed directory fails what is below it.
    let mut bad_dirs: Vec<PathBuf> = Vec::new();
    for d in &plan.dirs {
        if bad_dirs.iter().any(|b| d.rel.starts_with(b)) {
            continue;
        }
        if let Err(e) = ensure_dir(&target.join(&d.rel), opts.overwrite) {
            fail(&d.rel, format!("cannot create directory: {e}"));
            bad_dirs.push(d.rel.clone());
        } else {
            stats.dirs += 1;
            remove_stale_temporaries(&target.join(&d.rel));
        }
    }
    remove_stale_temporaries(target);
    let under_bad = |rel: &Path| bad_dirs.iter().any(|b| rel.starts_with(b));

    // Files, in parallel: twice the cores, or more for a remote backend,
    // whose requests wait on the network (two per connection).
    let threads = (std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2)
        * 2)
    .max(repo.backend().connections() * 2);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::io("start restore threads", std::io::Error::other(e)))?;
    // Directories in the way of files, links and special files that
    // --delete removed.
    let cleared = std::sync::atomic::AtomicU64::new(0);
    // Whether to write a file: None when it cannot be (its directory
    // failed, said once for the directory; or a directory is in its way).
    let to_write = |f: &PlanItem| -> Option<bool> {
        if under_bad(&f.rel) {
            return None;
        }
        if let Err(m) = clear_directory_in_the_way(&target.join(&f.rel), opts.delete, &cleared) {
            fail(&f.rel, m);
            write_failed
                .lock()
                .expect("failed set")
                .insert(f.rel.clone());
            return None;
        }
        let same = already_there(&target.join(&f.rel), &f.node);
        let skip = match opts.overwrite {
            Overwrite::Never => same.is_some(),
            Overwrite::IfChanged => same == Some(true),
            Overwrite::Always => false,
        };
        if skip {
            progress.done_files.fetch_add(1, Ordering::Relaxed);
            progress
                .done_bytes
                .fetch_add(f.node.size, Ordering::Relaxed);
        }
        Some(!skip)
    };
    // A file's content is in (metadata next), or it failed.
    let written = |f: &PlanItem, r: std::result::Result<u64, String>| match r {
        Ok(n) => {
            if let Err(m) = apply_metadata(&target.join(&f.rel), &f.node) {
                fail(&f.rel, m);
            }
            FileOutcome::Written(n)
        }
        Err(e) => {
            fail(&f.rel, e);
            write_failed
                .lock()
                .expect("failed set")
                .insert(f.rel.clone());
            FileOutcome::Failed
        }
    };
    let outcomes: Vec<FileOutcome> = if repo.backend().is_remote() {
        // Remote storage: each pack is read once, for every file.
        let wanted: Vec<Option<bool>> =
            pool.install(|| plan.files.par_iter().map(to_write).collect());
        let jobs: Vec<(PathBuf, &Node)> = plan
            .files
            .iter()
            .zip(&wanted)
            .filter(|(_, w)| **w == Some(true))
            .map(|(f, _)| (target.join(&f.rel), &f.node))
            .collect();
        let mut results = write_files_by_pack(repo, &jobs, progress).into_iter();
        let done: Vec<(
            &PlanItem,
            Option<bool>,
            Option<std::result::Result<u64, String>>,
        )> = plan
            .files
            .iter()
            .zip(&wanted)
            .map(|(f, w)| {
                let r = (*w == Some(true)).then(|| results.next().expect("one result per job"));
                (f, *w, r)
            })
            .collect();
        pool.install(|| {
            done.into_par_iter()
                .map(|(f, w, r)| match (w, r) {
                    (None, _) => FileOutcome::Failed,
                    (_, Some(r)) => written(f, r),
                    (_, None) => FileOutcome::Skipped,
                })
                .collect()
        })
    } else {
        pool.install(|| {
            plan.files
                .par_iter()
                .map(|f| match to_write(f) {
                    None => FileOutcome::Failed,
                    Some(false) => FileOutcome::Skipped,
                    Some(true) => {
                        let r = write_file(repo, &target.join(&f.rel), &f.node, progress);
                        progress.done_files.fetch_add(1, Ordering::Relaxed);
                        written(f, r.map_err(|e| e.to_string()))
                    }
                })
                .collect()
        })
    };
    for o in outcomes {
        match o {
            FileOutcome::Written(n) => {
                stats.files_restored += 1;
                stats.bytes_written += n;
            }
            FileOutcome::Skipped => stats.files_skipped += 1,
            FileOutcome::Failed => stats.files_failed += 1,
        }
    }

    let failed_files = write_failed.into_inner().expect("failed set");
    for (first, link) in &plan.hardlinks {
        if under_bad(link) {
            continue;
        }
        let (src, dst) = (target.join(first), target.join(link));
        if let Err(m) = clear_directory_in_the_way(&dst, opts.delete, &cleared) {
            fail(link, m);
            continue;
        }
        if fs::symlink_metadata(&dst).is_ok() {
            if opts.overwrite == Overwrite::Never {
                continue;
            }
            if same_inode(&src, &dst) {
                continue;
            }
            if let Err(e) = remove_in_the_way(&dst) {
                fail(link, format!("cannot replace: {e}"));
                continue;
            }
        }
        if failed_files.contains(first) {
            fail(
                link,
                format!(
                    "not restored: it is a hard link to {}, which failed",
                    first.display()
                ),
            );
            continue;
        }
        match fs::hard_link(&src, &dst) {
            Ok(()) => stats.others += 1,
            Err(e) => fail(
                link,
                format!("cannot create hard link to {}: {e}", first.display()),
            ),
        }
    }

    for o in &plan.others {
        if under_bad(&o.rel) {
            continue;
        }
        let path = target.join(&o.rel);
        if matches!(o.node.kind, NodeKind::Socket) {
            continue; // never restored, so nothing to clear for it
        }
        if let Err(m) = clear_directory_in_the_way(&path, opts.delete, &cleared) {
            fail(&o.rel, m);
            continue;
        }
        if fs::symlink_metadata(&path).is_ok() {
            if opts.overwrite == Overwrite::Never {
                continue;
            }
            if let Err(e) = remove_in_the_way(&path) {
                fail(&o.rel, format!("cannot replace: {e}"));
                continue;
            }
        }
        let made = match &o.node.kind {
            NodeKind::Symlink { target: t } => {
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(t), &path)
                    .map_err(|e| e.to_string())
            }
            NodeKind::Fifo => nix::unistd::mkfifo(
                &path,
                nix::sys::stat::Mode::from_bits_truncate(o.node.mode & 0o7777),
            )
            .map_err(|e| e.to_string()),
            NodeKind::CharDevice { rdev } | NodeKind::BlockDevice { rdev } => {
                let kind = if matches!(o.node.kind, NodeKind::CharDevice { .. }) {
                    nix::sys::stat::SFlag::S_IFCHR
                } else {
                    nix::sys::stat::SFlag::S_IFBLK
                };
                nix::sys::stat::mknod(
                    &path,
                    kind,
                    nix::sys::stat::Mode::from_bits_truncate(o.node.mode & 0o7777),
                    *rdev,
                )
                .map_err(|e| format!("cannot create device node (needs root): {e}"))
            }
            NodeKind::Socket => continue,
            NodeKind::File { .. } | NodeKind::Dir { .. } => {
                unreachable!("planned as files or dirs")
            }
        };
        match made {
            Ok(()) => {
                stats.others += 1;
                if let Err(m) = apply_metadata(&path, &o.node) {
                    fail(&o.rel, m);
                }
            }
            Err(m) => fail(&o.rel, m),
        }
    }

    stats.deleted += cleared.into_inner();
    if opts.delete {
        for (rel, names) in &plan.listings {
            if under_bad(rel) {
                continue;
            }
            let dir = target.join(rel);
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                if !names.contains(e.file_name().as_bytes()) {
                    match remove_any(&e.path()) {
                        Ok(()) => stats.deleted += 1,
                        Err(err) => fail(&rel.join(e.file_name()), format!("cannot delete: {err}")),
                    }
                }
            }
        }
    }

    if opts.verify {
        let results: Vec<Option<Warning>> = pool.install(|| {
            plan.files
                .par_iter()
                .filter(|f| !under_bad(&f.rel))
                .map(|f| {
                    verify_file(repo, &target.join(&f.rel), &f.node)
                        .err()
                        .map(|m| Warning {
                            path: f.rel.clone(),
                            message: format!("verify failed: {m}"),
                        })
                })
                .collect()
        });
        for r in results {
            match r {
                Some(w) => errors.lock().expect("errors").push(w),
                None => stats.verified += 1,
            }
        }
    }

    // Directory metadata last, deepest first, so that writing into them
    // does not change their mtime again.
    for d in plan.dirs.iter().rev() {
        if under_bad(&d.rel) {
            continue;
        }
        if let Err(m) = apply_metadata(&target.join(&d.rel), &d.node) {
            fail(&d.rel, m);
        }
    }
    stats.errors.extend(errors.into_inner().expect("errors"));
    Ok(stats)
}

fn same_inode(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::symlink_metadata(a), fs::symlink_metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// What to restore.
#[derive(Clone, Debug)]
pub enum RestoreStart {
    /// The entries of a tree (a snapshot root or a directory in it).
    Tree {
        /// The tree.
        tree: BlobId,
        /// Its path in the snapshot.
        snap_path: PathBuf,
    },
    /// One non-directory node, restored into the target under its name.
    Node {
        /// The node.
        node: Node,
        /// Its path in the snapshot.
        snap_path: PathBuf,
    },
}
