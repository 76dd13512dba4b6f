//! The restore engine: snapshot -> files, never outside the target.
//!
//! [`plan`] decides without writing anything; [`execute`] writes:
//! ```text
//! plan:    walk the trees (names were validated on decode: no "..", no "/"),
//!          apply include/exclude, list dirs, files, links, specials; look at
//!          the target (never through a symlink) and decide each entry: write,
//!          already identical, kept (--overwrite never) or a conflict; with
//!          --delete, list what the snapshot lacks
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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::tree::{skip_holes, Node, NodeKind, Tree};
use crate::id::BlobId;
use crate::progress::{Progress, Warning};
use crate::repository::{Index, Repository};
use crate::source::at;

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
    /// About how much memory the plan may take (None:
    /// [`DEFAULT_PLAN_MEMORY`]): a larger restore is planned and written a
    /// window of the tree at a time (DESIGN §10). Not with `delete`,
    /// `includes` or `dry_run`, which plan the whole.
    pub plan_memory: Option<u64>,
}

/// The plan's budget when the options give none: about 130,000 entries.
pub const DEFAULT_PLAN_MEMORY: u64 = 64 << 20;

/// What one planned file takes in memory, about (its path, node and
/// decision; docs/SCALE.md).
const PLANNED_BYTES: u64 = 480;

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

/// The bytes written to a file, or why it failed.
type FileResult = std::result::Result<u64, String>;

/// What became of one planned file.
enum FileOutcome {
    /// Written, this many bytes.
    Written(u64),
    /// Left alone: already identical (or `--overwrite never`).
    Skipped,
    /// Not restored (the error is recorded).
    Failed,
}

/// What the snapshot has at one path.
#[derive(Debug)]
struct PlanItem {
    rel: PathBuf,
    node: Node,
}

/// What the walk selected, before the target is looked at.
#[derive(Default)]
struct Selection {
    dirs: Vec<PlanItem>,
    /// Decided in place ([`decide`]): a second list of every file was as
    /// much memory again as the first, at the restore's peak.
    files: Vec<Entry>,
    hardlinks: Vec<(PathBuf, PathBuf)>,
    others: Vec<PlanItem>,
    /// For --delete (empty without): every directory restored and the
    /// names the snapshot has there.
    listings: Vec<(PathBuf, BTreeSet<Vec<u8>>)>,
    /// Entries of the snapshot named like a restore's temporaries (rare:
    /// a backup of an interrupted restore): never removed as stale.
    own_temporaries: HashSet<PathBuf>,
}

/// What the plan decided for a file, hard link or other entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// Create or write it, replacing a file or symlink there (and, with
    /// `--delete`, a directory).
    Write,
    /// Leave it: already identical (a file of the same size and mtime, a
    /// hard link already in place).
    Identical,
    /// Leave it: something is there, and `--overwrite never`.
    Keep,
    /// Not restored: a directory is in the way (without `--delete`).
    Conflict,
    /// Not restored: below a directory that cannot be restored.
    Blocked,
}

/// What planning found where an entry goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Found {
    /// Nothing, or not looked at (below a directory still to be made).
    Nothing,
    /// A directory.
    Dir,
    /// A file, symlink or special file; `same` if it is what the snapshot has.
    NonDir { same: bool },
}

/// A planned file or other entry.
#[derive(Debug)]
struct Entry {
    rel: PathBuf,
    node: Node,
    action: Action,
    found: Found,
}

/// Whether a planned file stays as it is (its hard links then may too).
fn stays(f: &Entry) -> bool {
    matches!(f.action, Action::Identical | Action::Keep)
}

/// A planned hard link to `first`, the first restored path of its inode.
#[derive(Debug)]
struct Link {
    first: PathBuf,
    link: PathBuf,
    action: Action,
    found: Found,
}

/// What the message says about a directory in the way of an entry.
const DIRECTORY_IN_THE_WAY: &str =
    "not restored: a directory is in the way (move it away to restore this entry)";

/// What a restore will do, decided before anything is written: the lists
/// say it (relative paths, sorted), a dry run reports it, and [`execute`]
/// carries it out from the decisions kept inside.
#[derive(Debug, serde::Serialize)]
pub struct RestorePlan {
    /// The directory restored into.
    #[serde(serialize_with = "lossy::path")]
    pub target: PathBuf,
    /// Directories restored, parents first: created where missing (a file
    /// or symlink in the way is replaced), kept where they exist.
    #[serde(serialize_with = "lossy::paths")]
    pub dirs: Vec<PathBuf>,
    /// Files written: missing, different, or any with `--overwrite always`.
    #[serde(serialize_with = "lossy::paths")]
    pub write: Vec<PathBuf>,
    /// The content bytes of those files.
    pub write_bytes: u64,
    /// Files already identical (size and mtime) and hard links already in
    /// place: left alone.
    #[serde(serialize_with = "lossy::paths")]
    pub identical: Vec<PathBuf>,
    /// Files, links and special files present that `--overwrite never`
    /// leaves alone.
    #[serde(serialize_with = "lossy::paths")]
    pub kept: Vec<PathBuf>,
    /// Hard links made: (path, the first restored path of its inode).
    #[serde(serialize_with = "lossy::pairs")]
    pub hardlinks: Vec<(PathBuf, PathBuf)>,
    /// Symlinks, fifos and devices made (sockets are never restored).
    #[serde(serialize_with = "lossy::paths")]
    pub others: Vec<PathBuf>,
    /// Entries not restored because something is in the way: a directory
    /// where the snapshot has a file, link or special file (without
    /// `--delete`), or with `--overwrite never` a non-directory where it has
    /// a directory. Each is an error of the restore.
    #[serde(serialize_with = "lossy::paths")]
    pub conflicts: Vec<PathBuf>,
    /// Entries below such a directory: not restored either.
    #[serde(serialize_with = "lossy::paths")]
    pub blocked: Vec<PathBuf>,
    /// What `--delete` removes: entries of restored directories that the
    /// snapshot lacks, and directories in the way of files, links and
    /// special files.
    #[serde(serialize_with = "lossy::paths")]
    pub delete: Vec<PathBuf>,
    /// Parts of the snapshot that cannot be read (their contents are lost).
    #[serde(serialize_with = "lossy::warnings")]
    pub errors: Vec<Warning>,
    #[serde(skip)]
    work: Work,
    /// Whether the lists above are filled ([`plan`]) or left empty
    /// ([`restore`]: a path per entry, held for nothing).
    #[serde(skip)]
    lists: bool,
}

/// What [`execute`] follows.
#[derive(Debug, Default)]
struct Work {
    overwrite: Overwrite,
    delete: bool,
    /// Every selected directory, parents first.
    dirs: Vec<PlanItem>,
    /// In the order their data lies in the packs.
    files: Vec<Entry>,
    links: Vec<Link>,
    others: Vec<Entry>,
    /// Sockets selected (never restored; the figures count them).
    sockets: u64,
    /// Entries of restored directories that the snapshot lacks (--delete).
    extras: Vec<PathBuf>,
    /// [`Selection::own_temporaries`].
    own_temporaries: HashSet<PathBuf>,
}

/// Paths as text, whatever their bytes (serde refuses a non-UTF-8 path).
mod lossy {
    use std::path::{Path, PathBuf};

    use serde::Serializer;

    pub fn path<S: Serializer>(p: &Path, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&p.to_string_lossy())
    }

    pub fn paths<S: Serializer>(v: &[PathBuf], s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|p| p.to_string_lossy()))
    }

    pub fn pairs<S: Serializer>(
        v: &[(PathBuf, PathBuf)],
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(
            v.iter()
                .map(|(a, b)| (a.to_string_lossy(), b.to_string_lossy())),
        )
    }

    #[derive(serde::Serialize)]
    struct Warning<'a> {
        path: std::borrow::Cow<'a, str>,
        message: &'a str,
    }

    pub fn warnings<S: Serializer>(
        v: &[crate::progress::Warning],
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|w| Warning {
            path: w.path.to_string_lossy(),
            message: &w.message,
        }))
    }
}

impl RestorePlan {
    /// The figures of a dry run, as they always were: files to write and
    /// their bytes, files left alone (a directory in the way of a file
    /// counts as present), every selected directory, link and other entry.
    pub fn dry_run_stats(&self) -> RestoreStats {
        let w = &self.work;
        let mut stats = RestoreStats {
            dirs: w.dirs.len() as u64,
            others: (w.others.len() + w.links.len()) as u64 + w.sockets,
            errors: self.errors.clone(),
            ..Default::default()
        };
        for f in &w.files {
            let skip = match w.overwrite {
                Overwrite::Never => f.found != Found::Nothing,
                Overwrite::IfChanged => f.found == Found::NonDir { same: true },
                Overwrite::Always => false,
            };
            if skip {
                stats.files_skipped += 1;
            } else {
                stats.files_restored += 1;
                stats.bytes_written += f.node.size;
            }
        }
        stats
    }

    /// Lists `rel` under its action; true for an entry to make, which the
    /// caller lists by its kind.
    fn note(&mut self, rel: &Path, action: Action, found: Found) -> bool {
        let list = match action {
            Action::Write => {
                if found == Found::Dir {
                    self.delete.push(rel.to_path_buf());
                }
                return true;
            }
            Action::Identical => &mut self.identical,
            Action::Keep => &mut self.kept,
            Action::Conflict => &mut self.conflicts,
            Action::Blocked => &mut self.blocked,
        };
        list.push(rel.to_path_buf());
        false
    }
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
    fn new(opts: &RestoreOptions) -> Result<Filter> {
        Ok(Filter {
            include: if opts.includes.is_empty() {
                None
            } else {
                Some(matcher(&opts.includes)?)
            },
            exclude: matcher(&opts.excludes)?,
        })
    }

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

/// Carries out a window of a restore (its selection), in [`Planner`].
type RestoreWindow<'a> = dyn FnMut(Selection) + 'a;

struct Planner<'a> {
    repo: &'a Repository,
    filter: Filter,
    sel: Selection,
    seen_inodes: HashMap<(u64, u64), PathBuf>,
    errors: Vec<Warning>,
    /// Keep each directory's names ([`Selection::listings`]).
    listings: bool,
    /// Restoring in windows: the files and other entries a window holds,
    /// and what restores one (it takes the selection so far; what fails
    /// in it is an error of the restore, which goes on).
    window: Option<(usize, &'a mut RestoreWindow<'a>)>,
}

impl<'a> Planner<'a> {
    fn new(
        repo: &'a Repository,
        filter: Filter,
        listings: bool,
        window: Option<(usize, &'a mut RestoreWindow<'a>)>,
    ) -> Planner<'a> {
        Planner {
            repo,
            filter,
            sel: Selection::default(),
            seen_inodes: HashMap::new(),
            errors: Vec::new(),
            listings,
            window,
        }
    }

    /// Restores the selection so far when it holds a window's entries
    /// (the directories selected so far go with it: they are above or
    /// beside what is in it).
    fn window_full(&mut self) {
        let Some((size, restore)) = &mut self.window else {
            return;
        };
        if self.sel.files.len() + self.sel.others.len() < *size {
            return;
        }
        restore(std::mem::take(&mut self.sel));
    }

    /// Selects the entries of `tree` into `rel`. Returns true if anything below was selected.
    fn walk(&mut self, tree: &Tree, rel: &Path, snap: &Path) -> bool {
        let mut any = false;
        let listing_pos = self.sel.listings.len();
        // All of them before any window is handed over: the directory's
        // stale temporaries may be removed with the first.
        for node in tree.nodes.iter().filter(|n| is_restore_temporary(&n.name)) {
            let name = std::ffi::OsStr::from_bytes(&node.name);
            self.sel.own_temporaries.insert(rel.join(name));
        }
        if self.listings {
            let names = tree.nodes.iter().map(|n| n.name.clone()).collect();
            self.sel.listings.push((rel.to_path_buf(), names));
        }
        for node in &tree.nodes {
            let name = std::ffi::OsStr::from_bytes(&node.name);
            let child_rel = rel.join(name);
            let child_snap = snap.join(name);
            if self.filter.excluded(&child_snap, node.is_dir()) {
                continue;
            }
            match &node.kind {
                NodeKind::Dir { subtree } => {
                    let pos = self.sel.dirs.len();
                    self.sel.dirs.push(PlanItem {
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
                        self.sel.dirs.truncate(pos);
                    }
                }
                _ if !self.filter.included(&child_snap, false) => {}
                NodeKind::File { .. } => {
                    any = true;
                    if node.links > 1 && node.inode != 0 {
                        let key = (node.device, node.inode);
                        if let Some(first) = self.seen_inodes.get(&key) {
                            self.sel.hardlinks.push((first.clone(), child_rel));
                            continue;
                        }
                        self.seen_inodes.insert(key, child_rel.clone());
                    }
                    self.sel.files.push(Entry {
                        rel: child_rel,
                        node: node.clone(),
                        action: Action::Write,
                        found: Found::Nothing,
                    });
                    self.window_full();
                }
                _ => {
                    any = true;
                    self.sel.others.push(PlanItem {
                        rel: child_rel,
                        node: node.clone(),
                    });
                    self.window_full();
                }
            }
        }
        // Without an include filter an empty directory is restored too, and
        // --delete must empty it.
        if !any && self.filter.include.is_some() && rel != Path::new("") {
            self.sel.listings.truncate(listing_pos);
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
    match at::symlink_metadata(path) {
        Ok(md) if md.is_dir() => Ok(()),
        Ok(_) if overwrite == Overwrite::Never => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "a non-directory is in the way",
        )),
        Ok(_) => {
            at::remove_file(path)?; // a file or symlink: never followed
            at::create_dir(path)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => at::create_dir(path),
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
    let short = at::short(path).map_err(|e| format!("metadata not restored: {e}"))?;
    let path = short.path();
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
    match at::symlink_metadata(path) {
        Ok(md) if md.is_dir() => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "a directory is in the way (move it away to restore this entry)",
        )),
        Ok(_) => at::remove_file(path),
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
    cleared: &AtomicU64,
) -> std::result::Result<(), String> {
    match at::symlink_metadata(path) {
        Ok(md) if md.is_dir() && delete => match at::remove_dir_all(path) {
            Ok(()) => {
                cleared.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(format!("cannot remove the directory in the way: {e}")),
        },
        Ok(md) if md.is_dir() => Err(DIRECTORY_IN_THE_WAY.into()),
        _ => Ok(()),
    }
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    match at::symlink_metadata(path) {
        Ok(md) if md.is_dir() => at::remove_dir_all(path),
        Ok(_) => at::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether the file at `path` already matches `node` (size and mtime).
fn already_there(path: &Path, node: &Node) -> Option<bool> {
    at::symlink_metadata(path)
        .ok()
        .map(|md| identical(&md, node))
}

/// Whether `md` (not followed) is a regular file of `node`'s size and mtime.
fn identical(md: &fs::Metadata, node: &Node) -> bool {
    md.is_file()
        && md.size() == node.size
        && md.mtime() == node.mtime.secs
        && md.mtime_nsec() == i64::from(node.mtime.nanos)
}

fn write_file(repo: &Repository, path: &Path, node: &Node, progress: &Progress) -> Result<u64> {
    let NodeKind::File { content, holes } = &node.kind else {
        unreachable!("only files are written")
    };
    // Written to a temporary file in the same directory, then renamed over
    // the target: a restore that fails halfway leaves the existing file as it
    // was, and the new file is a new inode, so nothing is ever written
    // through a hard link (to other restored paths, or out of the target).
    if at::symlink_metadata(path).is_ok_and(|md| md.is_dir()) {
        return Err(Error::Refused(format!("{} is a directory in the target; the snapshot has a file there (move the directory away)", path.display())));
    }
    let mut rnd = [0u8; 8];
    crate::crypto::random_bytes(&mut rnd);
    let tmp = path.with_file_name(format!(".rewind-tmp-{}", hex::encode(rnd)));
    let result = (|| {
        let f = at::open(
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW),
            &tmp,
        )
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
        // A blob whose data has another length than its index entry said
        // (an index file that lies, and a good copy read instead): the
        // parts' places are wrong, so the file is written again in order.
        let misplaced = AtomicBool::new(false);
        let in_parts = split(repo, node.size, content, holes)?.map(|parts| {
            parts
                .par_iter()
                .map(|part| write_part(repo, &f, path, content, part, &misplaced, progress))
                .try_reduce(|| 0, |a, b| Ok(a + b))
        });
        let written = match in_parts {
            Some(r) if !misplaced.load(Ordering::Relaxed) => r?,
            _ => {
                let mut pos = 0u64;
                let mut holes = holes.iter().peekable();
                let mut written = 0;
                repo.read_blobs(content, |_, data| {
                    skip_holes(&mut pos, &mut holes);
                    let n = put(&f, path, &data, pos, progress)?;
                    pos = pos.saturating_add(n);
                    written += n;
                    Ok(())
                })?;
                written
            }
        };
        f.set_len(node.size)
            .map_err(|e| Error::io(format!("resize {}", path.display()), e))?;
        if node.size >= WRITE_BACK_SIZE {
            write_back(&f, 0, node.size);
        }
        at::rename(&tmp, path)
            .map_err(|e| Error::io(format!("rename into {}", path.display()), e))?;
        Ok(written)
    })();
    if result.is_err() {
        let _ = at::remove_file(&tmp);
    }
    result
}

/// A file at least this large is restored by several threads at once, each
/// writing its own part: a disk image restored by one thread keeps one core
/// busy long after the small files are done.
const SPLIT_FILE_SIZE: u64 = 32 << 20;
/// About how much of a large file one thread restores at a time.
const SPLIT_PART: u64 = 8 << 20;

/// A run of a file's blobs, where in the file each of them starts and how
/// long the index says it is, and where the last one ends.
struct Part {
    blobs: std::ops::Range<usize>,
    at: Vec<(u64, u32)>,
    end: u64,
}

/// Cuts a large file into parts that can be written independently, placed
/// by the plaintext lengths of its blobs in the index (a blob's read checks
/// that length). None for a small file, or one whose blob is not in the
/// index: it is written in order, and a missing blob named as it is met.
fn split(
    repo: &Repository,
    size: u64,
    content: &[BlobId],
    holes: &[crate::format::tree::Hole],
) -> Result<Option<Vec<Part>>> {
    if size < SPLIT_FILE_SIZE || content.len() < 2 {
        return Ok(None);
    }
    let mut parts = Vec::new();
    let mut part = Part {
        blobs: 0..0,
        at: Vec::new(),
        end: 0,
    };
    let mut part_bytes = 0u64;
    let mut pos = 0u64;
    let mut holes = holes.iter().peekable();
    for (i, id) in content.iter().enumerate() {
        let Some((_, entry)) = repo.locate(id)? else {
            return Ok(None);
        };
        skip_holes(&mut pos, &mut holes);
        part.at.push((pos, entry.raw_length));
        part.blobs.end = i + 1;
        pos = pos.saturating_add(u64::from(entry.raw_length));
        part.end = pos;
        part_bytes += u64::from(entry.raw_length);
        if part_bytes >= SPLIT_PART {
            let next = Part {
                blobs: i + 1..i + 1,
                at: Vec::new(),
                end: pos,
            };
            parts.push(std::mem::replace(&mut part, next));
            part_bytes = 0;
        }
    }
    if !part.at.is_empty() {
        parts.push(part);
    }
    Ok(Some(parts))
}

/// Writes one part of a large file; returns the bytes written. A blob of
/// another length than planned sets `misplaced` and stops.
fn write_part(
    repo: &Repository,
    f: &File,
    path: &Path,
    content: &[BlobId],
    part: &Part,
    misplaced: &AtomicBool,
    progress: &Progress,
) -> Result<u64> {
    let mut at = part.at.iter();
    let mut written = 0;
    repo.read_blobs(&content[part.blobs.clone()], |id, data| {
        let (pos, len) = *at.next().expect("one place per blob");
        if data.len() != len as usize {
            misplaced.store(true, Ordering::Relaxed);
            return Err(Error::corrupt(
                "blob",
                id.to_string(),
                format!("{} bytes, the index said {len}", data.len()),
            ));
        }
        written += put(f, path, &data, pos, progress)?;
        Ok(())
    })?;
    if let Some((first, _)) = part.at.first() {
        write_back(f, *first, part.end - first);
    }
    Ok(written)
}

/// Writes one blob's `data` at `pos` of the file restored to `path`;
/// returns its length.
fn put(f: &File, path: &Path, data: &[u8], pos: u64, progress: &Progress) -> Result<u64> {
    f.write_all_at(data, pos)
        .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    let n = data.len() as u64;
    progress.done_bytes.fetch_add(n, Ordering::Relaxed);
    Ok(n)
}

/// Files smaller than this are left to the kernel's own write-back.
const WRITE_BACK_SIZE: u64 = 1 << 20;

/// Starts writing a restored range to the disk now, without waiting, and
/// lets its pages go from the cache once written (`POSIX_FADV_DONTNEED`
/// starts the write-back on Linux): the disk then writes while the restore
/// goes on, instead of all at the end, and a large restore does not push
/// everything else out of the page cache. Advice only: a failure is no error.
fn write_back(f: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let _ = nix::fcntl::posix_fadvise(
        f.as_raw_fd(),
        i64::try_from(offset).unwrap_or(i64::MAX),
        i64::try_from(len).unwrap_or(i64::MAX),
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
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
    remaining: AtomicUsize,
    state: Mutex<PackFileState>,
}

#[derive(Default)]
struct PackFileState {
    /// Shared, so that threads write to different places of one file at
    /// once (a disk image's blobs are in many packs).
    handle: Option<std::sync::Arc<File>>,
    created: bool,
    written: u64,
    failed: Option<String>,
    /// A blob came in another length than planned (an index file lies and
    /// another copy was read): the places are wrong, and the file is
    /// written again in order once the packs are done.
    misplaced: bool,
    result: Option<FileResult>,
}

/// A temporary name beside `path`.
fn temporary_for(path: &Path) -> PathBuf {
    let mut rnd = [0u8; 8];
    crate::crypto::random_bytes(&mut rnd);
    path.with_file_name(format!(".rewind-tmp-{}", hex::encode(rnd)))
}

impl PackFile {
    /// Writes `data` at `at` (creating the temporary file on first use);
    /// the file's lock is held to open it, not to write.
    fn write(&self, data: &[u8], at: u64, open: &AtomicUsize) {
        let handle = {
            let mut st = self.state.lock().expect("file state");
            if st.failed.is_some() {
                return;
            }
            match &st.handle {
                Some(h) => Ok(h.clone()),
                None => (|| -> std::io::Result<std::sync::Arc<File>> {
                    let mut o = OpenOptions::new();
                    o.write(true).custom_flags(nix::libc::O_NOFOLLOW);
                    if !st.created {
                        o.create_new(true).mode(0o600);
                    }
                    let f = std::sync::Arc::new(at::open(&o, &self.tmp)?);
                    st.created = true;
                    // Past the limit, opened for this write alone.
                    if open.fetch_add(1, Ordering::Relaxed) < MAX_OPEN_FILES {
                        st.handle = Some(f.clone());
                    } else {
                        open.fetch_sub(1, Ordering::Relaxed);
                    }
                    Ok(f)
                })(),
            }
        };
        let r = handle.and_then(|f| f.write_all_at(data, at));
        let mut st = self.state.lock().expect("file state");
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

    fn misplace(&self, why: &str) {
        let mut st = self.state.lock().expect("file state");
        st.misplaced = true;
        st.failed.get_or_insert_with(|| why.to_string());
    }

    /// Counts one placement done; the last one finishes the file: sized and
    /// renamed into place, or its temporary removed if anything failed.
    fn placed(&self, open: &AtomicUsize, progress: &Progress) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish(open, progress);
        }
    }

    fn finish(&self, open: &AtomicUsize, progress: &Progress) {
        let mut st = self.state.lock().expect("file state");
        if st.handle.take().is_some() {
            open.fetch_sub(1, Ordering::Relaxed);
        }
        let result = match st.failed.clone() {
            Some(e) => Err(e),
            None => (|| {
                if !st.created {
                    at::open(
                        OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(0o600)
                            .custom_flags(nix::libc::O_NOFOLLOW),
                        &self.tmp,
                    )?;
                    st.created = true;
                }
                let f = at::open(
                    OpenOptions::new()
                        .write(true)
                        .custom_flags(nix::libc::O_NOFOLLOW),
                    &self.tmp,
                )?;
                f.set_len(self.size)?;
                if self.size >= WRITE_BACK_SIZE {
                    write_back(&f, 0, self.size);
                }
                drop(f);
                at::rename(&self.tmp, &self.path)
            })()
            .map(|()| st.written)
            .map_err(|e| Error::io(format!("write {}", self.path.display()), e).to_string()),
        };
        if result.is_err() && st.created {
            let _ = at::remove_file(&self.tmp);
        }
        progress.done_files.fetch_add(1, Ordering::Relaxed);
        st.result = Some(result);
    }
}

/// At most how much of a pack one request of a pack-by-pack restore reads
/// (unless one blob is larger): each thread holds one span, and smaller
/// spans keep the threads evenly busy.
const MAX_SPAN: u64 = 4 << 20;

/// Cuts a pack's placements into runs, in pack order, of about equal
/// spans of the pack, at most [`MAX_SPAN`] each (plus the blob that
/// crosses it): equal, so that no run is a small remainder, which remote
/// backends would serve by fetching the whole pack into their cache. The
/// places of one blob stay in one run, so each blob is read and opened once.
fn spans(mut placements: Vec<Placement>) -> impl Iterator<Item = Vec<Placement>> {
    placements.sort_by_key(|p| (p.offset, p.file, p.at));
    let first = placements.first().map_or(0, |p| u64::from(p.offset));
    let last = placements
        .iter()
        .map(|p| u64::from(p.offset) + u64::from(p.length))
        .max()
        .unwrap_or(first);
    let total = last - first;
    let each = total.div_ceil(total.div_ceil(MAX_SPAN).max(1));
    let mut runs: Vec<Vec<Placement>> = Vec::new();
    let mut start = first;
    for p in placements {
        let same_blob = runs
            .last()
            .and_then(|r| r.last())
            .is_some_and(|q| q.offset == p.offset);
        match runs.last_mut() {
            Some(run) if same_blob || u64::from(p.offset) - start < each => run.push(p),
            _ => {
                start = u64::from(p.offset);
                runs.push(vec![p]);
            }
        }
    }
    runs.into_iter()
}

/// Files written pack by pack, and what their writers share.
struct ByPack<'a> {
    repo: &'a Repository,
    progress: &'a Progress,
    /// One per file, in the order of the files given.
    jobs: Vec<PackFile>,
    /// Files open now (at most [`MAX_OPEN_FILES`] are kept open).
    open: AtomicUsize,
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
) -> Vec<FileResult> {
    let index = match repo.index() {
        Ok(i) => i,
        Err(e) => return files.iter().map(|_| Err(e.to_string())).collect(),
    };
    let mut by = ByPack {
        repo,
        progress,
        jobs: Vec::with_capacity(files.len()),
        open: AtomicUsize::new(0),
    };
    let mut packs: Vec<(u32, Vec<Placement>)> = by.place(&index, files).into_iter().collect();
    packs.sort_by_key(|(p, _)| index.pack_id_at(*p));
    let spans: Vec<(u32, Vec<Placement>)> = packs
        .into_iter()
        .flat_map(|(pack, placements)| spans(placements).map(move |s| (pack, s)))
        .collect();
    let threads = repo.backend().connections().max(2);
    let run = |(pack, placements): (u32, Vec<Placement>)| by.write_pack(&index, pack, placements);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build();
    match &pool {
        // One span a job: rayon's default runs of jobs can leave one
        // thread with the last packs while the others idle.
        Ok(pool) => pool.install(|| spans.into_par_iter().with_max_len(1).for_each(run)),
        Err(_) => spans.into_iter().for_each(run),
    }
    let states: Vec<PackFileState> = by
        .jobs
        .into_iter()
        .map(|j| j.state.into_inner().expect("file state"))
        .collect();
    let result = |(st, (path, node)): (PackFileState, &(PathBuf, &Node))| {
        if st.misplaced {
            // Blob by blob, each at the end of the last: the lengths read
            // decide the places. Its temporary is already gone.
            return write_file(repo, path, node, progress).map_err(|e| e.to_string());
        }
        st.result
            .unwrap_or_else(|| Err("not restored (internal error: blobs left unwritten)".into()))
    };
    match &pool {
        // In parallel: an index file that lies may concern every file.
        Ok(pool) => pool.install(|| {
            states
                .into_par_iter()
                .zip(files)
                .with_max_len(1)
                .map(result)
                .collect()
        }),
        Err(_) => states.into_iter().zip(files).map(result).collect(),
    }
}

impl ByPack<'_> {
    /// Makes a job of each file and returns, per pack, where its blobs go.
    /// A file whose blob is not in the index fails; one without blobs (or
    /// with none left) is finished at once.
    fn place(&mut self, index: &Index, files: &[(PathBuf, &Node)]) -> HashMap<u32, Vec<Placement>> {
        let mut by_pack: HashMap<u32, Vec<Placement>> = HashMap::new();
        for (i, (path, node)) in files.iter().enumerate() {
            let NodeKind::File { content, holes } = &node.kind else {
                unreachable!("only files are written")
            };
            let job = PackFile {
                path: path.clone(),
                tmp: temporary_for(path),
                size: node.size,
                remaining: AtomicUsize::new(content.len()),
                state: Mutex::new(PackFileState::default()),
            };
            if at::symlink_metadata(path).is_ok_and(|md| md.is_dir()) {
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
                        at = at.saturating_add(u64::from(e.raw_length));
                    }
                    None => {
                        let missing = self.repo.read_blob(id).err().map_or_else(
                            || format!("blob {id} is not in the index"),
                            |e| e.to_string(),
                        );
                        job.fail(&missing);
                        job.remaining.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
            if job.remaining.load(Ordering::Relaxed) == 0 {
                job.finish(&self.open, self.progress);
            }
            self.jobs.push(job);
        }
        by_pack
    }

    /// Reads the span of one pack that `placements` need, in one request
    /// (an empty error: nothing to read, every file concerned failed).
    fn read_span(
        &self,
        pack_id: &str,
        placements: &[Placement],
        start: u64,
    ) -> std::result::Result<Vec<u8>, String> {
        let end = placements
            .iter()
            .map(|p| u64::from(p.offset) + u64::from(p.length))
            .max()
            .expect("a pack has placements");
        let all_failed = placements.iter().all(|p| {
            self.jobs[p.file]
                .state
                .lock()
                .expect("file state")
                .failed
                .is_some()
        });
        if all_failed {
            return Err(String::new());
        }
        u32::try_from(end - start)
            .map_err(|_| format!("pack {pack_id}: a read of {} bytes", end - start))
            .and_then(|len| {
                self.repo
                    .backend()
                    .read_range(crate::backend::FileType::Pack, pack_id, start, len)
                    .map_err(|e| e.to_string())
            })
    }

    /// Reads one pack's span, opens each blob once and writes it at every
    /// place that needs it; a blob that cannot be read fails those files.
    fn write_pack(&self, index: &Index, pack: u32, mut placements: Vec<Placement>) {
        placements.sort_by_key(|p| (p.offset, p.file, p.at));
        let pack_id = index.pack_id_at(pack).to_hex();
        let start = u64::from(placements[0].offset);
        let bytes = self.read_span(&pack_id, &placements, start);
        let mut i = 0;
        while i < placements.len() {
            let p = &placements[i];
            let same = placements[i..]
                .iter()
                .take_while(|q| q.offset == p.offset && q.blob == p.blob)
                .count();
            let mut other_length = false;
            let data = match &bytes {
                Ok(b) => {
                    let at = (u64::from(p.offset) - start) as usize;
                    crate::repository::sealed_at(b, at, p.length, &pack_id)
                        .and_then(|sealed| {
                            self.repo.open_blob(&p.blob, p.raw_length, sealed, &pack_id)
                        })
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(e.clone()),
            }
            // This copy is missing or damaged: another known copy, if any.
            .or_else(|first| self.repo.read_blob(&p.blob).map_err(|_| first))
            // The places were planned with this copy's length; another
            // copy of another length (an index file lies) cannot go there.
            .and_then(|d| {
                if d.len() == p.raw_length as usize {
                    Ok(d)
                } else {
                    other_length = true;
                    Err(format!(
                        "blob {} has {} bytes where the index said {}: an index file lies \
                         (run `rewind check`)",
                        p.blob,
                        d.len(),
                        p.raw_length
                    ))
                }
            });
            for q in &placements[i..i + same] {
                let job = &self.jobs[q.file];
                match &data {
                    Ok(d) => {
                        job.write(d, q.at, &self.open);
                        self.progress
                            .done_bytes
                            .fetch_add(d.len() as u64, Ordering::Relaxed);
                    }
                    Err(e) if e.is_empty() => {}
                    Err(e) if other_length => job.misplace(e),
                    Err(e) => job.fail(e),
                }
                job.placed(&self.open, self.progress);
            }
            i += same;
        }
    }
}

/// Name of the temporary file a restore writes before renaming it into place.
fn is_restore_temporary(name: &[u8]) -> bool {
    name.len() == 12 + 16
        && name.starts_with(b".rewind-tmp-")
        && name[12..].iter().all(u8::is_ascii_hexdigit)
}

/// Removes the temporaries an interrupted restore left in `dir` (the
/// target joined with `rel`: files that never got renamed into place), but
/// not `own`: entries of the snapshot named like them (one found identical
/// must stay).
fn remove_stale_temporaries(dir: &Path, rel: &Path, own: &HashSet<PathBuf>) {
    let Ok(rd) = at::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name();
        if is_restore_temporary(name.as_bytes())
            && e.file_type().is_ok_and(|t| t.is_file())
            && !own.contains(&rel.join(&name))
        {
            let _ = at::remove_file(dir.join(name));
        }
    }
}

/// Reads a restored file back and checks every chunk against its id.
fn verify_file(repo: &Repository, path: &Path, node: &Node) -> std::result::Result<(), String> {
    let NodeKind::File { content, holes } = &node.kind else {
        return Ok(());
    };
    let index = repo.index().map_err(|e| e.to_string())?;
    let mut f = at::open(OpenOptions::new().read(true), path)
        .map_err(|e| format!("cannot read back: {e}"))?;
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
        pos = pos.saturating_add(buf.len() as u64);
    }
    let _ = f.read(&mut []);
    Ok(())
}

/// Walks what `start` names: the selection, files in the order their data
/// lies in the packs, and the parts of the snapshot that cannot be read.
fn select(
    repo: &Repository,
    filter: Filter,
    start: &RestoreStart,
    listings: bool,
) -> Result<(Selection, Vec<Warning>)> {
    let (root, snap) = start_tree(repo, start)?;
    let mut planner = Planner::new(repo, filter, listings, None);
    planner.walk(&root, Path::new(""), snap);
    let Planner {
        mut sel, errors, ..
    } = planner;
    sort_by_pack(repo, &mut sel.files);
    Ok((sel, errors))
}

/// The tree a restore of `start` walks, and where it is in the snapshot (a
/// single node is walked as a tree of its own).
fn start_tree<'s>(repo: &Repository, start: &'s RestoreStart) -> Result<(Tree, &'s Path)> {
    Ok(match start {
        RestoreStart::Tree { tree, snap_path } => (repo.read_tree(tree)?, snap_path.as_path()),
        RestoreStart::Node { node, snap_path } => (
            Tree::new(vec![node.clone()]),
            snap_path.parent().unwrap_or(Path::new("/")),
        ),
    })
}

/// Restore files in the order their data lies in the packs, so that
/// neighbouring reads hit the same pack (one request on remote storage,
/// whose backend keeps recently read packs).
fn sort_by_pack(repo: &Repository, files: &mut [Entry]) {
    if let Ok(index) = repo.index() {
        files.sort_by_cached_key(|f| match &f.node.kind {
            NodeKind::File { content, .. } => content
                .first()
                .and_then(|b| index.get(b))
                .map_or((0, 0), |e| (e.pack, e.offset)),
            _ => (0, 0),
        });
    }
}

/// A planned directory's path in the target, when planning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DirState {
    /// A directory already: what is in it is looked at.
    Exists,
    /// Missing, or a file or symlink that is replaced: everything below is
    /// new, and nothing below is looked at (never through a symlink).
    New,
    /// Not restored: a non-directory in the way with `--overwrite never`,
    /// or below one.
    Blocked,
}

/// The plan's look at the target, reading only. An entry is looked at only
/// where every directory above it in the target is a directory already.
struct Look<'a> {
    target: &'a Path,
    overwrite: Overwrite,
    delete: bool,
    root: DirState,
    dirs: HashMap<PathBuf, DirState>,
}

impl<'a> Look<'a> {
    fn new(opts: &'a RestoreOptions) -> Self {
        // The target itself may be a symlink to a directory, as always.
        let root = match fs::metadata(&opts.target) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => DirState::New,
            _ => DirState::Exists,
        };
        Look {
            target: &opts.target,
            overwrite: opts.overwrite,
            delete: opts.delete,
            root,
            dirs: HashMap::new(),
        }
    }

    /// The state of the planned directory `rel` ("" is the target).
    fn state(&self, rel: &Path) -> DirState {
        if rel.as_os_str().is_empty() {
            return self.root;
        }
        // Every planned entry's directory is planned: New is the fallback
        // that looks at nothing (the execution looks again as it writes).
        self.dirs.get(rel).copied().unwrap_or(DirState::New)
    }

    fn parent_state(&self, rel: &Path) -> DirState {
        self.state(rel.parent().unwrap_or(Path::new("")))
    }

    /// Decides a directory (parents first), as `ensure_dir` will find it.
    fn dir(&mut self, rel: &Path, plan: &mut RestorePlan) {
        let parent = self.parent_state(rel);
        let state = match parent {
            DirState::Exists => match at::symlink_metadata(self.target.join(rel)) {
                Ok(md) if md.is_dir() => DirState::Exists,
                Ok(_) if self.overwrite == Overwrite::Never => DirState::Blocked,
                _ => DirState::New,
            },
            other => other,
        };
        let list = match (parent, state) {
            (DirState::Blocked, _) => &mut plan.blocked,
            (_, DirState::Blocked) => &mut plan.conflicts,
            _ => &mut plan.dirs,
        };
        if plan.lists {
            list.push(rel.to_path_buf());
        }
        self.dirs.insert(rel.to_path_buf(), state);
    }

    /// Decides a file, hard link or other entry at `rel`: `same` says
    /// whether the non-directory there already is the snapshot's entry,
    /// `rewrite` whether to write it all the same (`--overwrite always`).
    fn entry(
        &self,
        rel: &Path,
        rewrite: bool,
        same: impl FnOnce(&fs::Metadata) -> bool,
    ) -> (Action, Found) {
        let found = match self.parent_state(rel) {
            DirState::Blocked => return (Action::Blocked, Found::Nothing),
            DirState::New => Found::Nothing,
            DirState::Exists => match at::symlink_metadata(self.target.join(rel)) {
                Ok(md) if md.is_dir() => Found::Dir,
                Ok(md) => Found::NonDir { same: same(&md) },
                Err(_) => Found::Nothing,
            },
        };
        let action = match found {
            Found::Nothing => Action::Write,
            Found::Dir if self.delete => Action::Write,
            Found::Dir => Action::Conflict,
            Found::NonDir { same: true } if !rewrite => Action::Identical,
            Found::NonDir { .. } if self.overwrite == Overwrite::Never => Action::Keep,
            Found::NonDir { .. } => Action::Write,
        };
        (action, found)
    }

    /// Hard links: one already in place (the same inode as its first path,
    /// which stays as it is) is identical.
    fn links(&self, hardlinks: Vec<(PathBuf, PathBuf)>, files: &[Entry]) -> Vec<Link> {
        let firsts: HashSet<&Path> = hardlinks.iter().map(|(f, _)| f.as_path()).collect();
        let staying: HashSet<PathBuf> = files
            .iter()
            .filter(|f| stays(f))
            .map(|f| f.rel.as_path())
            .filter(|rel| firsts.contains(rel))
            .map(Path::to_path_buf)
            .collect();
        drop(firsts);
        self.links_with(hardlinks, &staying)
    }

    /// [`Look::links`], given the first paths that stay as they are.
    fn links_with(
        &self,
        hardlinks: Vec<(PathBuf, PathBuf)>,
        staying: &HashSet<PathBuf>,
    ) -> Vec<Link> {
        hardlinks
            .into_iter()
            .map(|(first, link)| {
                let src = self.target.join(&first);
                let stays = staying.contains(first.as_path());
                let (action, found) = self.entry(&link, false, |md| {
                    stays
                        && at::symlink_metadata(&src)
                            .is_ok_and(|s| s.dev() == md.dev() && s.ino() == md.ino())
                });
                Link {
                    first,
                    link,
                    action,
                    found,
                }
            })
            .collect()
    }

    /// Symlinks, fifos and devices decided; sockets only counted (never
    /// restored).
    fn others(&self, others: Vec<PlanItem>) -> (Vec<Entry>, u64) {
        let (sockets, others): (Vec<PlanItem>, Vec<PlanItem>) = others
            .into_iter()
            .partition(|o| matches!(o.node.kind, NodeKind::Socket));
        let others = others
            .into_par_iter()
            .map(|o| {
                let (action, found) = self.entry(&o.rel, false, |_| false);
                Entry {
                    rel: o.rel,
                    node: o.node,
                    action,
                    found,
                }
            })
            .collect();
        (others, sockets.len() as u64)
    }

    /// Entries of restored directories that the snapshot lacks, sorted
    /// (temporaries of an interrupted restore are removed anyway, uncounted).
    fn extras(&self, listings: &[(PathBuf, BTreeSet<Vec<u8>>)]) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for (rel, names) in listings {
            if self.state(rel) != DirState::Exists {
                continue;
            }
            let Ok(rd) = at::read_dir(self.target.join(rel)) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name();
                let temporary = is_restore_temporary(name.as_bytes())
                    && e.file_type().is_ok_and(|t| t.is_file());
                if !names.contains(name.as_bytes()) && !temporary {
                    out.push(rel.join(name));
                }
            }
        }
        out.sort();
        out
    }
}

/// Looks at the target and decides every selected entry; `lists`: fill
/// the plan's public lists too.
fn decide(sel: Selection, opts: &RestoreOptions, errors: Vec<Warning>, lists: bool) -> RestorePlan {
    let mut look = Look::new(opts);
    let mut plan = RestorePlan::new(opts, errors, lists);
    for d in &sel.dirs {
        look.dir(&d.rel, &mut plan);
    }
    let look = look;
    let always = opts.overwrite == Overwrite::Always;
    let mut files = sel.files;
    files.par_iter_mut().for_each(|f| {
        (f.action, f.found) = look.entry(&f.rel, always, |md| identical(md, &f.node));
    });
    let links = look.links(sel.hardlinks, &files);
    let (others, sockets) = look.others(sel.others);
    if opts.delete {
        plan.work.extras = look.extras(&sel.listings);
    }
    plan.work.own_temporaries = sel.own_temporaries;
    plan.list(files, links, others, sockets, sel.dirs);
    plan
}

impl RestorePlan {
    /// A plan with nothing decided yet.
    fn new(opts: &RestoreOptions, errors: Vec<Warning>, lists: bool) -> RestorePlan {
        RestorePlan {
            target: opts.target.clone(),
            dirs: Vec::new(),
            write: Vec::new(),
            write_bytes: 0,
            identical: Vec::new(),
            kept: Vec::new(),
            hardlinks: Vec::new(),
            others: Vec::new(),
            conflicts: Vec::new(),
            blocked: Vec::new(),
            delete: Vec::new(),
            errors,
            work: Work {
                overwrite: opts.overwrite,
                delete: opts.delete,
                ..Work::default()
            },
            lists,
        }
    }

    /// What [`execute`] needs; the public lists (a path per entry) are
    /// dropped here, not held to the end of the restore.
    fn into_work(self) -> (PathBuf, Vec<Warning>, Work) {
        let RestorePlan {
            target,
            errors,
            work,
            ..
        } = self;
        (target, errors, work)
    }

    /// Fills the public lists from the decisions, and keeps these.
    fn list(
        &mut self,
        files: Vec<Entry>,
        links: Vec<Link>,
        others: Vec<Entry>,
        sockets: u64,
        dirs: Vec<PlanItem>,
    ) {
        if self.lists {
            self.fill_lists(&files, &links, &others);
        }
        self.work.dirs = dirs;
        self.work.files = files;
        self.work.links = links;
        self.work.others = others;
        self.work.sockets = sockets;
    }

    fn fill_lists(&mut self, files: &[Entry], links: &[Link], others: &[Entry]) {
        for f in files {
            if self.note(&f.rel, f.action, f.found) {
                self.write.push(f.rel.clone());
                self.write_bytes += f.node.size;
            }
        }
        for l in links {
            if self.note(&l.link, l.action, l.found) {
                self.hardlinks.push((l.link.clone(), l.first.clone()));
            }
        }
        for o in others {
            if self.note(&o.rel, o.action, o.found) {
                self.others.push(o.rel.clone());
            }
        }
        self.delete.extend(self.work.extras.iter().cloned());
        for list in [
            &mut self.write,
            &mut self.identical,
            &mut self.kept,
            &mut self.others,
            &mut self.conflicts,
            &mut self.blocked,
            &mut self.delete,
        ] {
            list.sort();
        }
        self.hardlinks.sort();
    }
}

/// Plans a restore of `start` into `opts.target` without writing anything:
/// walks the trees (include/exclude applied), looks at the target (never
/// through a symlink) and decides each directory, file, hard link and other
/// entry, and with `--delete` what goes. `opts.dry_run` and `opts.verify`
/// play no part. Sets the progress totals.
pub fn plan(
    repo: &Repository,
    start: RestoreStart,
    opts: &RestoreOptions,
    progress: &Progress,
) -> Result<RestorePlan> {
    plan_with(repo, start, opts, progress, true)
}

/// [`plan`], with its public lists filled or not.
fn plan_with(
    repo: &Repository,
    start: RestoreStart,
    opts: &RestoreOptions,
    progress: &Progress,
    lists: bool,
) -> Result<RestorePlan> {
    let filter = Filter::new(opts)?;
    check_start(&start, opts)?;
    let (sel, errors) = select(repo, filter, &start, opts.delete)?;
    progress
        .total_files
        .store(sel.files.len() as u64, Ordering::Relaxed);
    progress.total_bytes.store(
        sel.files.iter().map(|f| f.node.size).sum(),
        Ordering::Relaxed,
    );
    progress.scan_done.store(true, Ordering::SeqCst);
    Ok(decide(sel, opts, errors, lists))
}

/// Refuses a target that is not a directory, and `--delete` of one file.
fn check_start(start: &RestoreStart, opts: &RestoreOptions) -> Result<()> {
    if fs::metadata(&opts.target).is_ok_and(|md| !md.is_dir()) {
        return Err(Error::InvalidInput(format!(
            "the restore target {} is not a directory",
            opts.target.display()
        )));
    }
    if opts.delete && matches!(start, RestoreStart::Node { .. }) {
        return Err(Error::InvalidInput(
            "deleting what the snapshot lacks needs a directory to restore, not a single file"
                .into(),
        ));
    }
    Ok(())
}

/// Restores the tree (or the single node) `start` names into
/// `opts.target`. With `delete`, `includes` or `dry_run`: [`plan`], then
/// [`execute`], or the plan's figures ([`RestorePlan::dry_run_stats`]);
/// otherwise planned and written a window at a time
/// ([`RestoreOptions::plan_memory`]). The plan's lists of paths are not
/// made: only the decisions inside it are followed.
pub fn restore(
    repo: &Repository,
    start: RestoreStart,
    opts: &RestoreOptions,
    progress: &Progress,
) -> Result<RestoreStats> {
    if !opts.delete && opts.includes.is_empty() && !opts.dry_run {
        return restore_in_windows(repo, start, opts, progress);
    }
    let plan = plan_with(repo, start, opts, progress, false)?;
    if opts.dry_run {
        return Ok(plan.dry_run_stats());
    }
    execute(repo, plan, opts, progress)
}

/// Carries out a plan made by [`plan`] with the same options (the target,
/// the overwrite policy and `--delete` are the plan's; `opts.verify` is
/// read here): directories, files, hard links, other entries, deletions,
/// verification, directory metadata. What the plan leaves alone stays
/// alone; each entry it writes is looked at again as it is written, so a
/// directory or (with `--overwrite never`) anything that appeared since
/// planning is not overwritten.
pub fn execute(
    repo: &Repository,
    plan: RestorePlan,
    opts: &RestoreOptions,
    progress: &Progress,
) -> Result<RestoreStats> {
    let (target, errors, work) = plan.into_work();
    fs::create_dir_all(&target)
        .map_err(|e| Error::io(format!("create target {}", target.display()), e))?;
    let mut run = Run::new(repo, &target, work, progress)?;
    remove_stale_temporaries(&target, Path::new(""), &run.work.own_temporaries);
    let mut stats = RestoreStats {
        errors,
        ..Default::default()
    };
    stats.dirs = run.make_dirs();
    run.write_files(&mut stats);
    stats.others += run.make_hardlinks();
    stats.others += run.make_others();
    stats.deleted += run.delete_extras();
    stats.deleted += run.cleared.load(Ordering::Relaxed);
    if opts.verify {
        stats.verified = run.verify();
    }
    run.finish_dirs();
    stats
        .errors
        .extend(run.errors.into_inner().expect("errors"));
    Ok(stats)
}

/// [`restore`] a window of the tree at a time: the walk hands each window
/// (its files and other entries, up to the plan's budget, and the
/// directories selected since the last) to be decided against the target,
/// sorted by pack and written (directories, files, symlinks and the like,
/// `--verify`), then dropped. Hard links are made once every window is
/// written (their first path may be in any window), and the directories'
/// metadata last, as [`execute`] does. What a window decides is what the
/// whole plan would: the target is looked at below a directory only where
/// it existed before the restore, and every directory is decided before
/// what is in it (docs/DESIGN.md §10).
fn restore_in_windows(
    repo: &Repository,
    start: RestoreStart,
    opts: &RestoreOptions,
    progress: &Progress,
) -> Result<RestoreStats> {
    let filter = Filter::new(opts)?;
    check_start(&start, opts)?;
    let size = (opts.plan_memory.unwrap_or(DEFAULT_PLAN_MEMORY) / PLANNED_BYTES).max(1) as usize;
    let (root, snap) = start_tree(repo, &start)?;
    // Looked at before it is made: a new target has nothing to look at.
    let mut look = Look::new(opts);
    fs::create_dir_all(&opts.target)
        .map_err(|e| Error::io(format!("create target {}", opts.target.display()), e))?;
    let work = Work {
        overwrite: opts.overwrite,
        ..Work::default()
    };
    let mut run = Run::new(repo, &opts.target, work, progress)?;
    let root_own = root
        .nodes
        .iter()
        .filter(|n| is_restore_temporary(&n.name))
        .map(|n| PathBuf::from(std::ffi::OsStr::from_bytes(&n.name)))
        .collect();
    remove_stale_temporaries(&opts.target, Path::new(""), &root_own);
    // The totals first, as a whole plan has them (the trees are read twice).
    let (mut files, mut bytes) = (0, 0);
    count_files(
        repo,
        &root,
        snap,
        &filter,
        &mut HashSet::new(),
        &mut files,
        &mut bytes,
    );
    progress.total_files.store(files, Ordering::Relaxed);
    progress.total_bytes.store(bytes, Ordering::Relaxed);
    progress.scan_done.store(true, Ordering::SeqCst);
    let mut stats = RestoreStats::default();
    let mut dirs = Vec::new();
    let mut hardlinks = Vec::new();
    // Files with hard links that stay as they are: their links may too.
    let mut staying = HashSet::new();
    let mut decided = RestorePlan::new(opts, Vec::new(), false);
    let always = opts.overwrite == Overwrite::Always;
    let mut restore_window = |sel: Selection| {
        for d in &sel.dirs {
            look.dir(&d.rel, &mut decided);
        }
        let mut files = sel.files;
        files.par_iter_mut().for_each(|f| {
            (f.action, f.found) = look.entry(&f.rel, always, |md| identical(md, &f.node));
        });
        staying.extend(
            files
                .iter()
                .filter(|f| f.node.links > 1 && stays(f))
                .map(|f| f.rel.clone()),
        );
        sort_by_pack(repo, &mut files);
        let (others, _sockets) = look.others(sel.others);
        hardlinks.extend(sel.hardlinks);
        run.work.own_temporaries.extend(sel.own_temporaries);
        run.work.dirs = sel.dirs;
        run.work.files = files;
        run.work.others = others;
        stats.dirs += run.make_dirs();
        run.write_files(&mut stats);
        stats.others += run.make_others();
        if opts.verify {
            stats.verified += run.verify();
        }
        dirs.append(&mut run.work.dirs);
        run.work.files = Vec::new();
        run.work.others = Vec::new();
    };
    let mut planner = Planner::new(repo, filter, false, Some((size, &mut restore_window)));
    planner.walk(&root, Path::new(""), snap);
    let Planner {
        sel: rest, errors, ..
    } = planner;
    restore_window(rest);
    run.work.links = look.links_with(hardlinks, &staying);
    stats.others += run.make_hardlinks();
    stats.deleted += run.cleared.load(Ordering::Relaxed);
    run.work.dirs = dirs;
    run.finish_dirs();
    stats.errors = errors;
    stats
        .errors
        .extend(run.errors.into_inner().expect("errors"));
    Ok(stats)
}

/// Counts the files below `tree` that a restore without include rules
/// selects, and their bytes: what [`Planner::walk`] selects as files (a
/// hard link seen before is not one); an unreadable tree counts nothing.
fn count_files(
    repo: &Repository,
    tree: &Tree,
    snap: &Path,
    filter: &Filter,
    seen: &mut HashSet<(u64, u64)>,
    files: &mut u64,
    bytes: &mut u64,
) {
    for node in &tree.nodes {
        let child = snap.join(std::ffi::OsStr::from_bytes(&node.name));
        if filter.excluded(&child, node.is_dir()) {
            continue;
        }
        match &node.kind {
            NodeKind::Dir { subtree } => {
                if let Ok(t) = repo.read_tree(subtree) {
                    count_files(repo, &t, &child, filter, seen, files, bytes);
                }
            }
            NodeKind::File { .. } => {
                if node.links > 1 && node.inode != 0 && !seen.insert((node.device, node.inode)) {
                    continue;
                }
                *files += 1;
                *bytes += node.size;
            }
            _ => {}
        }
    }
}

/// What the steps of one execution share.
struct Run<'a> {
    repo: &'a Repository,
    target: &'a Path,
    /// What is being carried out: the whole plan, or one window of it.
    work: Work,
    progress: &'a Progress,
    pool: rayon::ThreadPool,
    errors: Mutex<Vec<Warning>>,
    /// Files that could not be written (their hard links are not made).
    write_failed: Mutex<HashSet<PathBuf>>,
    /// Directories in the way of files, links and special files that
    /// --delete removed.
    cleared: AtomicU64,
    /// Directories that could not be made: nothing below them is restored.
    bad_dirs: Vec<PathBuf>,
}

impl<'a> Run<'a> {
    fn new(
        repo: &'a Repository,
        target: &'a Path,
        work: Work,
        progress: &'a Progress,
    ) -> Result<Run<'a>> {
        // Files, in parallel: twice the cores, or more for a remote
        // backend, whose requests wait on the network (two per connection).
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
        Ok(Run {
            repo,
            target,
            work,
            progress,
            pool,
            errors: Mutex::new(Vec::new()),
            write_failed: Mutex::new(HashSet::new()),
            cleared: AtomicU64::new(0),
            bad_dirs: Vec::new(),
        })
    }

    fn fail(&self, rel: &Path, message: String) {
        self.errors.lock().expect("errors").push(Warning {
            path: rel.to_path_buf(),
            message,
        })
    }

    /// A file not written: its hard links are not made either.
    fn write_failed(&self, f: &Entry, message: String) {
        self.fail(&f.rel, message);
        self.not_written(f);
    }

    /// Notes a file not written if it has hard links (only those are
    /// looked up: a path per failed file would grow with a restore that
    /// fails everywhere, a full disk say).
    fn not_written(&self, f: &Entry) {
        if f.node.links > 1 {
            self.write_failed
                .lock()
                .expect("failed set")
                .insert(f.rel.clone());
        }
    }

    fn under_bad(&self, rel: &Path) -> bool {
        self.bad_dirs.iter().any(|b| rel.starts_with(b))
    }

    /// Directories, parents first. A failed directory fails what is below
    /// it. Returns how many there are.
    fn make_dirs(&mut self) -> u64 {
        let dirs = std::mem::take(&mut self.work.dirs);
        let mut made = 0;
        for d in &dirs {
            if self.under_bad(&d.rel) {
                continue;
            }
            let path = self.target.join(&d.rel);
            if let Err(e) = ensure_dir(&path, self.work.overwrite) {
                self.fail(&d.rel, format!("cannot create directory: {e}"));
                self.bad_dirs.push(d.rel.clone());
            } else {
                made += 1;
                remove_stale_temporaries(&path, &d.rel, &self.work.own_temporaries);
            }
        }
        self.work.dirs = dirs;
        made
    }

    /// Whether to write a file: None when it cannot be (its directory
    /// failed, said once for the directory; or a directory is in its way).
    fn to_write(&self, f: &Entry) -> Option<bool> {
        if f.action == Action::Blocked || self.under_bad(&f.rel) {
            // Not written (said once, for what is in the way): nor are its
            // hard links, which would otherwise be made to whatever is
            // there, through a symlink perhaps.
            self.not_written(f);
            return None;
        }
        let path = self.target.join(&f.rel);
        let skip = match f.action {
            Action::Identical | Action::Keep => true,
            Action::Conflict => {
                self.write_failed(f, DIRECTORY_IN_THE_WAY.into());
                return None;
            }
            Action::Write | Action::Blocked => {
                if let Err(m) = clear_directory_in_the_way(&path, self.work.delete, &self.cleared) {
                    self.write_failed(f, m);
                    return None;
                }
                let same = already_there(&path, &f.node);
                match self.work.overwrite {
                    Overwrite::Never => same.is_some(),
                    Overwrite::IfChanged => same == Some(true),
                    Overwrite::Always => false,
                }
            }
        };
        if skip {
            self.progress.done_files.fetch_add(1, Ordering::Relaxed);
            self.progress
                .done_bytes
                .fetch_add(f.node.size, Ordering::Relaxed);
        }
        Some(!skip)
    }

    /// A file's content is in (metadata next), or it failed.
    fn written(&self, f: &Entry, r: FileResult) -> FileOutcome {
        match r {
            Ok(n) => {
                if let Err(m) = apply_metadata(&self.target.join(&f.rel), &f.node) {
                    self.fail(&f.rel, m);
                }
                FileOutcome::Written(n)
            }
            Err(e) => {
                self.write_failed(f, e);
                FileOutcome::Failed
            }
        }
    }

    /// The files, in parallel; from remote storage pack by pack.
    fn write_files(&self, stats: &mut RestoreStats) {
        let outcomes = if self.repo.backend().is_remote() {
            self.write_by_pack()
        } else {
            self.write_each()
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
    }

    fn write_each(&self) -> Vec<FileOutcome> {
        self.pool.install(|| {
            // One file a job: a run of files left to one thread (rayon's
            // default) can hold the large ones while the others idle.
            self.work
                .files
                .par_iter()
                .with_max_len(1)
                .map(|f| match self.to_write(f) {
                    None => FileOutcome::Failed,
                    Some(false) => FileOutcome::Skipped,
                    Some(true) => {
                        let path = self.target.join(&f.rel);
                        let r = write_file(self.repo, &path, &f.node, self.progress);
                        self.progress.done_files.fetch_add(1, Ordering::Relaxed);
                        self.written(f, r.map_err(|e| e.to_string()))
                    }
                })
                .collect()
        })
    }

    /// Remote storage: each pack is read once, for every file.
    fn write_by_pack(&self) -> Vec<FileOutcome> {
        let files = &self.work.files;
        let wanted: Vec<Option<bool>> = self
            .pool
            .install(|| files.par_iter().map(|f| self.to_write(f)).collect());
        let jobs: Vec<(PathBuf, &Node)> = files
            .iter()
            .zip(&wanted)
            .filter(|(_, w)| **w == Some(true))
            .map(|(f, _)| (self.target.join(&f.rel), &f.node))
            .collect();
        let mut results = write_files_by_pack(self.repo, &jobs, self.progress).into_iter();
        let done: Vec<(&Entry, Option<bool>, Option<FileResult>)> = files
            .iter()
            .zip(&wanted)
            .map(|(f, w)| {
                let r = (*w == Some(true)).then(|| results.next().expect("one result per job"));
                (f, *w, r)
            })
            .collect();
        self.pool.install(|| {
            done.into_par_iter()
                .map(|(f, w, r)| match (w, r) {
                    (None, _) => FileOutcome::Failed,
                    (_, Some(r)) => self.written(f, r),
                    (_, None) => FileOutcome::Skipped,
                })
                .collect()
        })
    }

    /// Hard links to the first restored path of each inode. Returns how
    /// many were made.
    fn make_hardlinks(&self) -> u64 {
        let failed_files = std::mem::take(&mut *self.write_failed.lock().expect("failed set"));
        let mut made = 0;
        for l in &self.work.links {
            if self.under_bad(&l.link) {
                continue;
            }
            match l.action {
                Action::Write => made += u64::from(self.make_hardlink(l, &failed_files)),
                Action::Conflict => self.fail(&l.link, DIRECTORY_IN_THE_WAY.into()),
                Action::Identical | Action::Keep | Action::Blocked => {}
            }
        }
        made
    }

    /// Makes one hard link; true if it was made.
    fn make_hardlink(&self, l: &Link, failed_files: &HashSet<PathBuf>) -> bool {
        let (first, link) = (&l.first, &l.link);
        let (src, dst) = (self.target.join(first), self.target.join(link));
        // Before anything at the link's path is touched: a first path that
        // was not restored (failed, or blocked by what is in the way) has
        // nothing to link to.
        if failed_files.contains(first) || self.under_bad(first) {
            self.fail(
                link,
                format!(
                    "not restored: it is a hard link to {}, which was not restored",
                    first.display()
                ),
            );
            return false;
        }
        if let Err(m) = clear_directory_in_the_way(&dst, self.work.delete, &self.cleared) {
            self.fail(link, m);
            return false;
        }
        if at::symlink_metadata(&dst).is_ok() {
            if self.work.overwrite == Overwrite::Never || same_inode(&src, &dst) {
                return false;
            }
            if let Err(e) = remove_in_the_way(&dst) {
                self.fail(link, format!("cannot replace: {e}"));
                return false;
            }
        }
        match at::hard_link(&src, &dst) {
            Ok(()) => true,
            Err(e) => {
                self.fail(
                    link,
                    format!("cannot create hard link to {}: {e}", first.display()),
                );
                false
            }
        }
    }

    /// Symlinks, fifos and devices. Returns how many were made.
    fn make_others(&self) -> u64 {
        let mut made = 0;
        for o in &self.work.others {
            if self.under_bad(&o.rel) {
                continue;
            }
            match o.action {
                Action::Write => made += u64::from(self.make_other(o)),
                Action::Conflict => self.fail(&o.rel, DIRECTORY_IN_THE_WAY.into()),
                Action::Identical | Action::Keep | Action::Blocked => {}
            }
        }
        made
    }

    /// Makes one symlink, fifo or device, then its metadata; true if it
    /// was made.
    fn make_other(&self, o: &Entry) -> bool {
        let path = self.target.join(&o.rel);
        if let Err(m) = clear_directory_in_the_way(&path, self.work.delete, &self.cleared) {
            self.fail(&o.rel, m);
            return false;
        }
        if at::symlink_metadata(&path).is_ok() {
            if self.work.overwrite == Overwrite::Never {
                return false;
            }
            if let Err(e) = remove_in_the_way(&path) {
                self.fail(&o.rel, format!("cannot replace: {e}"));
                return false;
            }
        }
        match make_special(&path, &o.node) {
            Ok(()) => {
                if let Err(m) = apply_metadata(&path, &o.node) {
                    self.fail(&o.rel, m);
                }
                true
            }
            Err(m) => {
                self.fail(&o.rel, m);
                false
            }
        }
    }

    /// `--delete`: the entries of restored directories that the snapshot
    /// lacks, as planned. Returns how many went.
    fn delete_extras(&self) -> u64 {
        let mut deleted = 0;
        for rel in &self.work.extras {
            if rel.parent().is_some_and(|p| self.under_bad(p)) {
                continue;
            }
            let path = self.target.join(rel);
            if at::symlink_metadata(&path).is_err() {
                continue; // gone since planning
            }
            match remove_any(&path) {
                Ok(()) => deleted += 1,
                Err(e) => self.fail(rel, format!("cannot delete: {e}")),
            }
        }
        deleted
    }

    /// `--verify`: reads every restored file back. Returns how many match.
    fn verify(&self) -> u64 {
        let results: Vec<Option<Warning>> = self.pool.install(|| {
            self.work
                .files
                .par_iter()
                .filter(|f| !self.under_bad(&f.rel))
                .map(|f| {
                    verify_file(self.repo, &self.target.join(&f.rel), &f.node)
                        .err()
                        .map(|m| Warning {
                            path: f.rel.clone(),
                            message: format!("verify failed: {m}"),
                        })
                })
                .collect()
        });
        let mut verified = 0;
        for r in results {
            match r {
                Some(w) => self.errors.lock().expect("errors").push(w),
                None => verified += 1,
            }
        }
        verified
    }

    /// Directory metadata last, deepest first, so that writing into them
    /// does not change their mtime again.
    fn finish_dirs(&self) {
        for d in self.work.dirs.iter().rev() {
            if self.under_bad(&d.rel) {
                continue;
            }
            if let Err(m) = apply_metadata(&self.target.join(&d.rel), &d.node) {
                self.fail(&d.rel, m);
            }
        }
    }
}

/// Creates a symlink, fifo or device node at `path` (nothing is there).
fn make_special(path: &Path, node: &Node) -> std::result::Result<(), String> {
    let short = at::short(path).map_err(|e| e.to_string())?;
    let path = short.path();
    let mode = nix::sys::stat::Mode::from_bits_truncate(node.mode & 0o7777);
    match &node.kind {
        NodeKind::Symlink { target } => {
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), path)
                .map_err(|e| e.to_string())
        }
        NodeKind::Fifo => nix::unistd::mkfifo(path, mode).map_err(|e| e.to_string()),
        NodeKind::CharDevice { rdev } | NodeKind::BlockDevice { rdev } => {
            let kind = if matches!(node.kind, NodeKind::CharDevice { .. }) {
                nix::sys::stat::SFlag::S_IFCHR
            } else {
                nix::sys::stat::SFlag::S_IFBLK
            };
            nix::sys::stat::mknod(path, kind, mode, *rdev)
                .map_err(|e| format!("cannot create device node (needs root): {e}"))
        }
        NodeKind::Socket | NodeKind::File { .. } | NodeKind::Dir { .. } => {
            unreachable!("planned apart: files, dirs; sockets are never made")
        }
    }
}

fn same_inode(a: &Path, b: &Path) -> bool {
    match (at::symlink_metadata(a), at::symlink_metadata(b)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &[u8], kind: NodeKind) -> Node {
        Node {
            name: name.to_vec(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            user: None,
            group: None,
            size: 8,
            mtime: crate::format::tree::Time::default(),
            ctime: crate::format::tree::Time::default(),
            inode: 0,
            device: 0,
            links: 1,
            xattrs: Vec::new(),
        }
    }

    fn item(rel: &str, kind: NodeKind) -> PlanItem {
        let rel = PathBuf::from(rel);
        let name = rel.file_name().unwrap().as_bytes().to_vec();
        PlanItem {
            node: node(&name, kind),
            rel,
        }
    }

    fn file() -> NodeKind {
        NodeKind::File {
            content: Vec::new(),
            holes: Vec::new(),
        }
    }

    /// Planning looks neither through a symlink where a directory goes nor
    /// into what it points to (for --delete), and a name that is not UTF-8
    /// still serializes.
    #[test]
    fn the_plan_does_not_look_through_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let (target, outside) = (tmp.path().join("t"), tmp.path().join("outside"));
        fs::create_dir_all(&target).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("f"), b"12345678").unwrap();
        fs::write(outside.join("x"), b"not the target's").unwrap();
        std::os::unix::fs::symlink(&outside, target.join("d")).unwrap();
        let odd = std::ffi::OsStr::from_bytes(b"\xff");
        fs::write(target.join(odd), b"extra").unwrap();
        let sel = Selection {
            dirs: vec![item(
                "d",
                NodeKind::Dir {
                    subtree: BlobId::default(),
                },
            )],
            files: vec![{
                let PlanItem { rel, node } = item("d/f", file());
                Entry {
                    rel,
                    node,
                    action: Action::Write,
                    found: Found::Nothing,
                }
            }],
            listings: vec![
                (PathBuf::new(), [b"d".to_vec()].into()),
                (PathBuf::from("d"), [b"f".to_vec()].into()),
            ],
            ..Selection::default()
        };
        let opts = RestoreOptions {
            target: target.clone(),
            overwrite: Overwrite::Never,
            delete: true,
            ..Default::default()
        };
        let plan = decide(sel, &opts, Vec::new(), true);
        assert_eq!(plan.conflicts, [PathBuf::from("d")]);
        assert_eq!(plan.blocked, [PathBuf::from("d/f")]);
        assert_eq!(plan.delete, [PathBuf::from(odd)]);
        assert!(plan.kept.is_empty() && plan.identical.is_empty());
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["delete"], serde_json::json!(["\u{fffd}"]));
        assert!(fs::symlink_metadata(target.join("d"))
            .unwrap()
            .file_type()
            .is_symlink());
    }
}
