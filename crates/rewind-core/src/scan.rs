//! Ransomware detection: what a snapshot changed, scored against its parent.
//!
//! The backup engine already knows, for every file that changed, its old and
//! new content, and the index knows how well each chunk compressed. An attack
//! leaves marks no ordinary day of work leaves in bulk:
//!
//! - **content turned to noise**: a file that compressed well now does not
//!   compress at all (all of it, or its first chunk: encrypting only the
//!   start of each file is common), or compresses far worse (every other
//!   block encrypted);
//! - **signature lost**: a `.pdf` that no longer starts with `%PDF`, a
//!   `.docx` that is no longer a zip, a text file that is no longer text;
//! - **renamed with a new extension** and new content (`report.docx` gone,
//!   `report.docx.locked` there, not the same bytes);
//! - **ransom notes**: the same new small file in many folders, with a
//!   note-like name;
//! - content changed while the mtime stayed (supporting evidence only).
//!
//! Moves and renames that keep the content (same chunks) are not changes.
//! Adding new compressed files (photos, archives, video) is not suspicious
//! by itself: only files whose *own* earlier version was healthy count.
//! The scan reads the index for every changed file and the first chunk of
//! at most [`MAX_EXAMINED`] of them (a deterministic sample beyond that), so
//! it costs little next to the backup that read those files.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::crypto::SEAL_OVERHEAD;
use crate::error::Result;
use crate::format::tree::{Node, NodeKind};
use crate::id::BlobId;
use crate::repository::IndexEntry;
use crate::repository::Repository;

pub use crate::format::scan::{Overrule, Rule, ScanCounts, ScanResult, Verdict, VERSION};

/// Changed files whose first chunk is read (the rest are sampled out).
pub const MAX_EXAMINED: usize = 4000;

/// Stored and plaintext sizes of blobs, and their contents: the
/// repository's index, which includes what this handle's backup just wrote
/// (the writer keeps it current, `Repository::locate`).
pub struct Sizes<'a> {
    repo: &'a Repository,
}

impl<'a> Sizes<'a> {
    /// The sizes the repository knows.
    pub fn new(repo: &'a Repository) -> Result<Sizes<'a>> {
        repo.index()?;
        Ok(Sizes { repo })
    }

    fn get(&self, id: &BlobId) -> Option<(u32, u32)> {
        self.repo
            .locate(id)
            .ok()
            .flatten()
            .map(|(_, e): (_, IndexEntry)| (e.length, e.raw_length))
    }

    /// The plaintext of a blob.
    fn read(&self, repo: &Repository, id: &BlobId) -> Result<Vec<u8>> {
        repo.read_blob(id)
    }
}

/// A file on either side of the comparison.
struct FileAt {
    path: PathBuf,
    node: Node,
}

fn content(n: &Node) -> &[BlobId] {
    match &n.kind {
        NodeKind::File { content, .. } => content,
        _ => &[],
    }
}

/// The files that differ between two trees.
#[derive(Default)]
struct Changes {
    removed: Vec<FileAt>,
    added: Vec<FileAt>,
    modified: Vec<(FileAt, FileAt)>,
}

/// Collects the files that differ between two trees (identical subtrees are
/// skipped without reading them).
fn file(n: Option<&Node>) -> Option<&Node> {
    n.filter(|n| matches!(n.kind, NodeKind::File { .. }))
}

fn changed_files(repo: &Repository, sizes: &Sizes, old: &BlobId, new: &BlobId) -> Result<Changes> {
    let mut out = Changes::default();
    let at = |p: &Path, n: &Node| FileAt {
        path: p.to_path_buf(),
        node: n.clone(),
    };
    crate::browse::walk_pair(
        &|id| crate::format::tree::Tree::decode(id, &sizes.read(repo, id)?),
        Some(old),
        Some(new),
        Path::new("/"),
        &mut |p, x, y| match (file(x), file(y)) {
            (Some(x), Some(y)) if content(x) != content(y) => {
                out.modified.push((at(p, x), at(p, y)))
            }
            (Some(_), Some(_)) | (None, None) => {}
            (Some(x), None) => out.removed.push(at(p, x)),
            (None, Some(y)) => out.added.push(at(p, y)),
        },
    )?;
    Ok(out)
}

/// Stored bytes per plaintext byte of a run of blobs (1.0: did not
/// compress), or None if unknown or empty.
fn ratio(sizes: &Sizes, blobs: &[BlobId]) -> Option<f64> {
    let (mut stored, mut raw) = (0u64, 0u64);
    for b in blobs {
        let (length, raw_length) = sizes.get(b)?;
        stored += u64::from(length).saturating_sub(SEAL_OVERHEAD as u64 + 1);
        raw += u64::from(raw_length);
    }
    (raw >= 512).then(|| (stored as f64 / raw as f64).min(1.0))
}

/// Compressed well before.
const COMPRESSIBLE: f64 = 0.90;
/// Does not compress now (zstd stores such chunks as they are).
const NOISE: f64 = 0.97;
/// A jump in the stored share this large means part of it became noise.
const JUMP: f64 = 0.30;

/// The lowercase extension of a file name.
fn extension(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
}

/// What a healthy file of this extension starts with.
enum Expect {
    /// One of these byte strings at this offset.
    Magic(usize, &'static [&'static [u8]]),
    /// UTF-8 text.
    Text,
}

fn expectation(ext: &str) -> Option<Expect> {
    const ZIP: &[&[u8]] = &[b"PK\x03\x04", b"PK\x05\x06"];
    Some(match ext {
        "pdf" => Expect::Magic(0, &[b"%PDF"]),
        "docx" | "xlsx" | "pptx" | "odt" | "ods" | "odp" | "zip" | "jar" | "epub" | "apk" => {
            Expect::Magic(0, ZIP)
        }
        "png" => Expect::Magic(0, &[b"\x89PNG"]),
        "jpg" | "jpeg" => Expect::Magic(0, &[b"\xff\xd8\xff"]),
        "gif" => Expect::Magic(0, &[b"GIF8"]),
        "gz" | "tgz" => Expect::Magic(0, &[b"\x1f\x8b"]),
        "zst" => Expect::Magic(0, &[b"\x28\xb5\x2f\xfd"]),
        "xz" => Expect::Magic(0, &[b"\xfd7zXZ"]),
        "bz2" => Expect::Magic(0, &[b"BZh"]),
        "7z" => Expect::Magic(0, &[b"7z\xbc\xaf"]),
        "mp4" | "m4a" | "m4v" | "mov" => {
            Expect::Magic(4, &[b"ftyp", b"moov", b"mdat", b"free", b"wide"])
        }
        "sqlite" | "sqlite3" | "db" => Expect::Magic(0, &[b"SQLite format 3\0"]),
        "doc" | "xls" | "ppt" | "msg" => Expect::Magic(0, &[b"\xd0\xcf\x11\xe0"]),
        "so" | "o" => Expect::Magic(0, &[b"\x7fELF"]),
        "txt" | "md" | "rst" | "csv" | "tsv" | "json" | "yaml" | "yml" | "toml" | "ini" | "cfg"
        | "conf" | "log" | "xml" | "html" | "htm" | "css" | "js" | "ts" | "py" | "rs" | "go"
        | "c" | "h" | "cc" | "cpp" | "hpp" | "java" | "kt" | "rb" | "php" | "sh" | "sql"
        | "tex" | "svg" | "eml" => Expect::Text,
        _ => return None,
    })
}

/// Whether a file's first bytes are what its extension promises.
fn healthy(expect: &Expect, head: &[u8]) -> bool {
    match expect {
        Expect::Magic(at, magics) => magics
            .iter()
            .any(|m| head.len() >= at + m.len() && &head[*at..at + m.len()] == *m),
        Expect::Text => {
            let head = &head[..head.len().min(4096)];
            let valid = match std::str::from_utf8(head) {
                Ok(_) => true,
                // A character cut at the end of the sample is fine.
                Err(e) => e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
            };
            valid && head.iter().filter(|b| **b == 0).count() == 0
        }
    }
}

/// Note-like names: what ransomware calls its instructions.
fn note_like(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "decrypt",
        "ransom",
        "recover",
        "restore",
        "readme",
        "read_me",
        "read-me",
        "how_to",
        "how-to",
        "instruction",
        "unlock",
        "your_files",
        "files_encrypted",
        "!!!",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// What one examined file pair shows.
#[derive(Default)]
struct Marks {
    noise: bool,
    signature: bool,
    text: bool,
    /// The file's format by its magic number is gone.
    magic: bool,
    /// The changed bytes of the first chunk turned from compressible to noise.
    region: bool,
    /// Content changed, modification time put back.
    mtime_kept: bool,
    /// Changed the way many files of many types changed ([`same_shape`]).
    shape: bool,
}

impl Marks {
    fn suspect(&self) -> bool {
        self.noise
            || self.signature
            || self.text
            || self.magic
            || self.region
            || self.mtime_kept
            || self.shape
    }
}

/// At most this many changed bytes of a first chunk are judged.
const REGION_MAX: usize = 64 << 10;
/// Fewer changed bytes than this say nothing about randomness.
const REGION_MIN: usize = 512;

/// The bytes that differ between two versions of a chunk at the same
/// offsets, old and new, as runs (differences less than 32 bytes apart
/// join one run), up to [`REGION_MAX`]. Partial encryption (the first
/// KiBs) and intermittent encryption (every other block) change bytes in
/// place; an edit that inserts text shifts the rest, which stays text.
fn changed_region(old: &[u8], new: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let len = old.len().min(new.len());
    let (mut o, mut n) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < len && n.len() < REGION_MAX {
        // Equal stretches go by 64 bytes at a time (a memcmp).
        if i + 64 <= len && old[i..i + 64] == new[i..i + 64] {
            i += 64;
            continue;
        }
        if old[i] == new[i] {
            i += 1;
            continue;
        }
        let (start, mut last, mut j) = (i, i, i + 1);
        while j < len && j - last <= 32 && j - start < REGION_MAX {
            if old[j] != new[j] {
                last = j;
            }
            j += 1;
        }
        o.extend_from_slice(&old[start..=last]);
        n.extend_from_slice(&new[start..=last]);
        i = last + 1;
    }
    (o, n)
}

/// Compressed bytes per byte (zstd level 1; above 1.0 for noise).
fn compressibility(data: &[u8]) -> f64 {
    let packed = zstd::bulk::compress(data, 1).map_or(data.len(), |c| c.len());
    packed as f64 / data.len().max(1) as f64
}

/// True when the bytes that changed in place were compressible and are
/// noise now.
fn region_turned_to_noise(old: &[u8], new: &[u8]) -> bool {
    let (o, n) = changed_region(old, new);
    n.len() >= REGION_MIN && compressibility(&o) < COMPRESSIBLE && compressibility(&n) >= NOISE
}

/// The format a file starts with: what the `infer` crate knows by its
/// magic number, else a zlib stream (git's loose objects, many caches),
/// which `infer` does not know.
fn format_of(data: &[u8]) -> Option<&'static str> {
    if let Some(kind) = infer::get(data) {
        return Some(kind.mime_type());
    }
    zlib_header(data).then_some("application/zlib")
}

/// RFC 1950: deflate (CM 8) with a window of at most 32 KiB (CINFO ≤ 7), and
/// the two header bytes a multiple of 31. Noise passes by chance once in
/// about 1,000 files.
fn zlib_header(data: &[u8]) -> bool {
    match data {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

/// Region noise and a lost magic number between the old and the new first
/// chunk of a file. The old chunk is read only where it can tell something
/// (ordinary edits are most changes, and with a cold cache each read waits
/// on the disk): when the new chunk has noise in its first 64 KiB, and then
/// for the region when the old one compressed well and the new one
/// compresses worse (noise in place of compressible bytes always costs
/// stored bytes; the sizes are the index's), for the magic number when the
/// new chunk has no known format and is not text.
fn first_chunks(repo: &Repository, sizes: &Sizes, old: &BlobId, new: &BlobId) -> (bool, bool) {
    let Ok(new_first) = sizes.read(repo, new) else {
        return (false, false);
    };
    let (old_ratio, new_ratio) = (
        ratio(sizes, std::slice::from_ref(old)),
        ratio(sizes, std::slice::from_ref(new)),
    );
    // Encryption from the start of the file (every mode in use: it must
    // break the header) leaves noise in the first 64 KiB. A chunk under
    // 4 KiB (a small file: a git object, a note) is too short to judge
    // that way, and cheap to compare.
    let head_noise = new_first.len() < 4096
        || new_first[..new_first.len().min(REGION_MAX)]
            .chunks(4096)
            .any(|b| b.len() >= REGION_MIN && compressibility(b) >= NOISE);
    let want_region = head_noise
        && matches!((old_ratio, new_ratio), (Some(o), Some(n)) if o < COMPRESSIBLE && n > o);
    let want_magic =
        head_noise && format_of(&new_first).is_none() && !healthy(&Expect::Text, &new_first);
    if !want_region && !want_magic {
        return (false, false);
    }
    let Ok(old_first) = sizes.read(repo, old) else {
        return (false, false);
    };
    (
        want_region && region_turned_to_noise(&old_first, &new_first),
        want_magic && magic_lost(&old_first, &new_first),
    )
}

/// True when `old` starts with a format's magic number that `new` lost.
fn magic_lost(old: &[u8], new: &[u8]) -> bool {
    match format_of(old) {
        Some(kind) => format_of(new) != Some(kind),
        None => false,
    }
}

/// How a file changed, from what the tree says (no reads): the size
/// difference and how many chunks stayed the same at each end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Outline {
    delta: i64,
    same_head: usize,
    same_tail: usize,
}

fn outline(old: &Node, new: &Node) -> Outline {
    let (a, b) = (content(old), content(new));
    let same = |x: &(&BlobId, &BlobId)| x.0 == x.1;
    Outline {
        delta: new.size as i64 - old.size as i64,
        same_head: a.iter().zip(b).take_while(same).count(),
        same_tail: a.iter().rev().zip(b.iter().rev()).take_while(same).count(),
    }
}

/// A shape counts when at least this many files changed that way...
const SHAPE_FILES: usize = 10;
/// ...of at least this many types (extensions; none is one).
const SHAPE_TYPES: usize = 3;
/// Fewer rewritten bytes than this are not judged for randomness.
const SHAPE_MIN_BYTES: usize = 64;

/// The keys shared by at least [`SHAPE_FILES`] items of at least
/// [`SHAPE_TYPES`] extensions.
fn common_shapes<K: std::hash::Hash + Eq + Copy>(items: &[(K, Option<String>)]) -> HashSet<K> {
    let mut by_key: HashMap<K, (usize, HashSet<&Option<String>>)> = HashMap::new();
    for (k, ext) in items {
        let e = by_key.entry(*k).or_default();
        e.0 += 1;
        e.1.insert(ext);
    }
    by_key
        .into_iter()
        .filter(|(_, (n, exts))| *n >= SHAPE_FILES && exts.len() >= SHAPE_TYPES)
        .map(|(k, _)| k)
        .collect()
}

/// The first and last offsets at which two versions of a chunk differ
/// (within the shorter one).
fn changed_range(old: &[u8], new: &[u8]) -> Option<(usize, usize)> {
    let len = old.len().min(new.len());
    let first = (0..len).find(|&i| old[i] != new[i])?;
    let last = (first..len).rev().find(|&i| old[i] != new[i])?;
    Some((first, last))
}

/// Whether a few bytes look random: as many distinct byte values as random
/// bytes of that length have (90 % of the expected count; text and
/// structured binary have far fewer), or for 512 bytes and more,
/// compressibility. Works from 64 bytes, where zstd says nothing.
fn looks_random(bytes: &[u8]) -> bool {
    if bytes.len() >= REGION_MIN {
        return compressibility(&bytes[..bytes.len().min(REGION_MAX)]) >= NOISE;
    }
    let mut seen = [false; 256];
    for b in bytes {
        seen[usize::from(*b)] = true;
    }
    let distinct = seen.iter().filter(|s| **s).count() as f64;
    let expected = 256.0 * (1.0 - (255.0f64 / 256.0).powi(bytes.len() as i32));
    distinct >= 0.9 * expected
}

/// The same change in many files of many types: ransomware appends a
/// footer of one size and encrypts one range of every file, whatever it
/// holds; people's work changes files each in its own way. Among the
/// changed pairs not already suspect, those whose outline (size
/// difference, chunks kept at each end, first chunk changed) is common are
/// read (both first chunks) and keyed by the exact range that changed; a
/// file is a suspect when its key is common too and the rewritten bytes
/// look random. Returns the marks and the largest shape found.
fn same_shape(
    repo: &Repository,
    sizes: &Sizes,
    candidates: &[(&FileAt, &FileAt)],
    marks: &[Marks],
) -> (Vec<bool>, Option<Shape>) {
    use rayon::prelude::*;
    let open: Vec<usize> = (0..candidates.len())
        .filter(|&i| !marks[i].suspect())
        .filter(|&i| outline(&candidates[i].0.node, &candidates[i].1.node).same_head == 0)
        .collect();
    let items: Vec<(Outline, Option<String>)> = open
        .iter()
        .map(|&i| {
            let (o, n) = candidates[i];
            (outline(&o.node, &n.node), extension(&o.path))
        })
        .collect();
    let common = common_shapes(&items);
    let mut out = vec![false; candidates.len()];
    if common.is_empty() {
        return (out, None);
    }
    let read: Vec<usize> = open
        .iter()
        .zip(&items)
        .filter(|(_, (k, _))| common.contains(k))
        .map(|(i, _)| *i)
        .collect();
    // (candidate, key, extension) of each read pair whose rewritten bytes
    // look random.
    let keyed: Vec<(usize, ShapeKey, Option<String>)> = read
        .par_iter()
        .filter_map(|&i| {
            let (o, n) = candidates[i];
            let (oc, nc) = (content(&o.node).first()?, content(&n.node).first()?);
            let (old, new) = (sizes.read(repo, oc).ok()?, sizes.read(repo, nc).ok()?);
            let (start, end) = changed_range(&old, &new)?;
            let bytes = &new[start..=end];
            (bytes.len() >= SHAPE_MIN_BYTES && looks_random(bytes)).then(|| {
                let key = (outline(&o.node, &n.node), start, end);
                (i, key, extension(&o.path))
            })
        })
        .collect();
    let exact: Vec<_> = keyed.iter().map(|(_, k, e)| (*k, e.clone())).collect();
    let common = common_shapes(&exact);
    let mut groups: HashMap<ShapeKey, (usize, HashSet<Option<String>>)> = HashMap::new();
    for (i, key, ext) in keyed {
        if common.contains(&key) {
            out[i] = true;
            let g = groups.entry(key).or_default();
            g.0 += 1;
            g.1.insert(ext);
        }
    }
    let largest = groups
        .into_iter()
        .max_by_key(|(k, (n, _))| (*n, k.1, k.2))
        .map(|((outline, start, end), (files, exts))| Shape {
            files,
            types: exts.len(),
            delta: outline.delta,
            start,
            end,
        });
    (out, largest)
}

/// An outline and the exact range of the first chunk that changed.
type ShapeKey = (Outline, usize, usize);

/// A change many files share ([`same_shape`]).
struct Shape {
    files: usize,
    types: usize,
    delta: i64,
    start: usize,
    end: usize,
}

fn head(repo: &Repository, sizes: &Sizes, n: &Node) -> Option<Vec<u8>> {
    let first = content(n).first()?;
    let mut data = sizes.read(repo, first).ok()?;
    data.truncate(4096);
    Some(data)
}

fn examine(repo: &Repository, sizes: &Sizes, old: &FileAt, new: &FileAt) -> Marks {
    let mut m = Marks {
        // Editors and builds move the mtime; putting it back is what an
        // attacker does to hide.
        mtime_kept: old.path == new.path && old.node.mtime == new.node.mtime,
        ..Marks::default()
    };
    // The new head is read at most once, the old one only when the new one
    // is not healthy: ordinary work costs one chunk read per file.
    let mut new_head: Option<Option<Vec<u8>>> = None;
    let mut new_head = || {
        new_head
            .get_or_insert_with(|| head(repo, sizes, &new.node))
            .clone()
    };
    // Renamed to a format it is a healthy example of (`x.log` -> `x.log.gz`
    // holding gzip): a conversion, not damage.
    if old.path != new.path {
        if let Some(expect) = extension(&new.path).and_then(|e| expectation(&e)) {
            if new_head().is_some_and(|h| healthy(&expect, &h)) {
                return m;
            }
        }
    }
    let (oc, nc) = (content(&old.node), content(&new.node));
    if let (Some(o), Some(n)) = (ratio(sizes, oc), ratio(sizes, nc)) {
        if o < COMPRESSIBLE && (n >= NOISE || n - o >= JUMP) {
            m.noise = true;
        }
    }
    if let (Some(o), Some(n)) = (
        ratio(sizes, &oc[..oc.len().min(1)]),
        ratio(sizes, &nc[..nc.len().min(1)]),
    ) {
        if o < COMPRESSIBLE && n >= NOISE {
            m.noise = true;
        }
    }
    // Where the first chunk changed, the bytes that changed (partial and
    // intermittent encryption leave the rest, and the chunk's ratio, alone)
    // and the format by its magic number, whatever the name says.
    if let (Some(o), Some(n)) = (oc.first(), nc.first()) {
        if o != n {
            let (m_region, m_magic) = first_chunks(repo, sizes, o, n);
            m.region = m_region;
            m.magic = m_magic;
        }
    }
    // The old name's promise, for both: a renamed file keeps its format.
    if let Some(expect) = extension(&old.path).and_then(|e| expectation(&e)) {
        let broken = new_head().is_some_and(|nh| !healthy(&expect, &nh));
        if broken && head(repo, sizes, &old.node).is_some_and(|oh| healthy(&expect, &oh)) {
            match expect {
                Expect::Text => m.text = true,
                Expect::Magic(..) => m.signature = true,
            }
        }
    }
    m
}

/// Moves: added files whose content equals a removed file's.
struct Moves<'a> {
    /// Indexes into `added` of files that are moves.
    added: HashSet<usize>,
    /// The moved contents.
    contents: HashSet<&'a [BlobId]>,
}

fn find_moves<'a>(removed: &'a [FileAt], added: &'a [FileAt]) -> Moves<'a> {
    let mut by_content: HashMap<&[BlobId], usize> = HashMap::new();
    for f in removed {
        if !content(&f.node).is_empty() {
            *by_content.entry(content(&f.node)).or_default() += 1;
        }
    }
    let mut moved_in: HashSet<usize> = HashSet::new();
    for (i, f) in added.iter().enumerate() {
        if let Some(n) = by_content.get_mut(content(&f.node)) {
            if *n > 0 {
                *n -= 1;
                moved_in.insert(i);
            }
        }
    }
    let contents = moved_in.iter().map(|i| content(&added[*i].node)).collect();
    Moves {
        added: moved_in,
        contents,
    }
}

/// Files renamed with a new extension: `x.docx` removed, `x.docx.locked`
/// added. Returns (removed, added) index pairs and the count per new
/// extension.
fn find_renames(
    removed: &[FileAt],
    added: &[FileAt],
    moves: &Moves<'_>,
) -> (Vec<(usize, usize)>, BTreeMap<String, u64>) {
    let removed_at: HashMap<&Path, usize> = removed
        .iter()
        .enumerate()
        .map(|(i, f)| (f.path.as_path(), i))
        .collect();
    let mut pairs = Vec::new();
    let mut new_ext: BTreeMap<String, u64> = BTreeMap::new();
    for (i, f) in added.iter().enumerate() {
        if moves.added.contains(&i) {
            continue;
        }
        let stem = f.path.with_extension("");
        if let Some(&r) = removed_at.get(stem.as_path()) {
            pairs.push((r, i));
            *new_ext
                .entry(extension(&f.path).unwrap_or_default())
                .or_default() += 1;
        }
    }
    (pairs, new_ext)
}

/// Replaced under new names: in a folder, files that compressed well
/// disappeared and as many files of random-looking content appeared
/// (ransomware that renames to random names). Matched per folder; returns
/// the count and the new paths (sorted).
fn find_replaced(
    repo: &Repository,
    sizes: &Sizes,
    changes: &Changes,
    moves: &Moves<'_>,
    pairs: &[(usize, usize)],
) -> (u64, Vec<String>) {
    let paired_removed: HashSet<usize> = pairs.iter().map(|p| p.0).collect();
    let paired_added: HashSet<usize> = pairs.iter().map(|p| p.1).collect();
    let mut gone: HashMap<&Path, u64> = HashMap::new();
    for (i, f) in changes.removed.iter().enumerate() {
        let c = content(&f.node);
        if paired_removed.contains(&i) || moves.contents.contains(c) {
            continue;
        }
        if ratio(sizes, c).is_some_and(|r| r < COMPRESSIBLE) {
            *gone
                .entry(f.path.parent().unwrap_or(Path::new("/")))
                .or_default() += 1;
        }
    }
    if gone.is_empty() {
        return (0, Vec::new());
    }
    let mut noise_in: HashMap<&Path, Vec<&FileAt>> = HashMap::new();
    for (i, f) in changes.added.iter().enumerate() {
        if moves.added.contains(&i) || paired_added.contains(&i) {
            continue;
        }
        let dir = f.path.parent().unwrap_or(Path::new("/"));
        if !gone.contains_key(dir) || !ratio(sizes, content(&f.node)).is_some_and(|r| r >= NOISE) {
            continue;
        }
        // A healthy file of its own format (a photo, an archive) is not noise.
        let own = extension(&f.path).and_then(|e| expectation(&e));
        if let Some(expect) = own {
            if head(repo, sizes, &f.node).is_some_and(|h| healthy(&expect, &h)) {
                continue;
            }
        }
        noise_in.entry(dir).or_default().push(f);
    }
    let mut replaced = 0u64;
    let mut paths: Vec<String> = Vec::new();
    for (dir, files) in noise_in {
        let n = gone[dir].min(files.len() as u64);
        replaced += n;
        paths.extend(
            files
                .iter()
                .take(n as usize)
                .map(|f| f.path.display().to_string()),
        );
    }
    paths.sort();
    (replaced, paths)
}

/// Ransom notes: one new small file, same name and content, in at least
/// three folders, with a note-like name. (name, folders), most first.
fn find_notes(added: &[FileAt], moves: &Moves<'_>) -> Vec<(String, u64)> {
    let mut notes: HashMap<(&[u8], &[BlobId]), HashSet<&Path>> = HashMap::new();
    for (i, f) in added.iter().enumerate() {
        if moves.added.contains(&i) || f.node.size > 256 << 10 {
            continue;
        }
        notes
            .entry((&f.node.name, content(&f.node)))
            .or_default()
            .insert(f.path.parent().unwrap_or(Path::new("/")));
    }
    let mut names: Vec<(String, u64)> = notes
        .iter()
        .map(|((name, _), dirs)| {
            (
                String::from_utf8_lossy(name).into_owned(),
                dirs.len() as u64,
            )
        })
        .filter(|(name, dirs)| *dirs >= 3 && note_like(name))
        .collect();
    names.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    names
}

/// What examining the changed files found.
struct Examined {
    /// Changed files (modified and renamed pairs), before sampling.
    total: usize,
    /// Suspect files, extrapolated from the sample.
    suspects: u64,
    /// Some suspect paths.
    top: Vec<String>,
    /// Extensions of files that lost their signature.
    signature_exts: BTreeMap<String, u64>,
    /// [`path_key`] of each suspect examined.
    keys: Vec<u64>,
    /// The largest change many files share.
    shape: Option<Shape>,
}

/// A suspect file's key across snapshots: the first 8 bytes of the BLAKE3
/// of its path.
fn path_key(path: &Path) -> u64 {
    let h = blake3::hash(path.as_os_str().as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Examines modified files and renamed pairs (a deterministic sample of at
/// most [`MAX_EXAMINED`]); fills the counts it finds.
fn examine_changed(
    repo: &Repository,
    sizes: &Sizes,
    changes: &Changes,
    pairs: &[(usize, usize)],
    counts: &mut ScanCounts,
) -> Examined {
    use rayon::prelude::*;
    let mut candidates: Vec<(&FileAt, &FileAt)> =
        changes.modified.iter().map(|(a, b)| (a, b)).collect();
    candidates.extend(
        pairs
            .iter()
            .map(|(r, a)| (&changes.removed[*r], &changes.added[*a])),
    );
    for (o, n) in &candidates {
        if o.node.mtime == n.node.mtime && o.path == n.path {
            counts.mtime_kept += 1;
        }
    }
    let total = candidates.len();
    if total > MAX_EXAMINED {
        candidates.sort_by_key(|(_, n)| {
            blake3::hash(n.path.as_os_str().as_bytes()).as_bytes()[..8].to_vec()
        });
        candidates.truncate(MAX_EXAMINED);
    }
    // Reads of old chunks wait on the disk when the cache is cold: more
    // of them at once than there are cores.
    let run = || -> (Vec<Marks>, Option<Shape>) {
        let mut marks: Vec<Marks> = candidates
            .par_iter()
            .map(|(o, n)| examine(repo, sizes, o, n))
            .collect();
        let (shaped, shape) = same_shape(repo, sizes, &candidates, &marks);
        for (m, s) in marks.iter_mut().zip(shaped) {
            m.shape = s;
        }
        (marks, shape)
    };
    let (marks, shape) = match rayon::ThreadPoolBuilder::new().num_threads(8).build() {
        Ok(pool) => pool.install(run),
        Err(_) => run(),
    };
    let mut found = Examined {
        total,
        suspects: 0,
        top: Vec::new(),
        signature_exts: BTreeMap::new(),
        keys: Vec::new(),
        shape,
    };
    for ((o, n), m) in candidates.iter().zip(&marks) {
        counts.turned_to_noise += u64::from(m.noise);
        counts.lost_signature += u64::from(m.signature);
        counts.text_turned_binary += u64::from(m.text);
        counts.lost_magic += u64::from(m.magic);
        counts.region_noise += u64::from(m.region);
        counts.same_shape += u64::from(m.shape);
        if m.signature {
            *found
                .signature_exts
                .entry(extension(&o.path).unwrap_or_default())
                .or_default() += 1;
        }
        if m.suspect() {
            found.suspects += 1;
            found.keys.push(path_key(&n.path));
            if found.top.len() < 10 {
                found.top.push(n.path.display().to_string());
            }
        }
    }
    counts.examined = candidates.len() as u64;
    // Extrapolate a sample to all candidates.
    if total > candidates.len() && !candidates.is_empty() {
        found.suspects =
            (found.suspects as f64 * total as f64 / candidates.len() as f64).round() as u64;
    }
    found
}

/// Compares snapshot tree `new` with its parent's tree `old`.
/// `files_before` is the number of files in the parent.
pub fn scan(
    repo: &Repository,
    sizes: &Sizes,
    old: &BlobId,
    new: &BlobId,
    files_before: u64,
) -> Result<ScanResult> {
    let changes = changed_files(repo, sizes, old, new)?;
    let mut counts = ScanCounts {
        files_before,
        ..Default::default()
    };
    let moves = find_moves(&changes.removed, &changes.added);
    let (pairs, new_ext) = find_renames(&changes.removed, &changes.added, &moves);
    counts.moved = moves.added.len() as u64;
    counts.renamed_new_extension = pairs.len() as u64;
    counts.modified = changes.modified.len() as u64;
    counts.added = (changes.added.len() - moves.added.len()) as u64;
    counts.removed = changes
        .removed
        .iter()
        .filter(|f| !moves.contents.contains(content(&f.node)))
        .count() as u64;
    let (replaced, replaced_paths) = find_replaced(repo, sizes, &changes, &moves, &pairs);
    counts.replaced = replaced;
    let notes = find_notes(&changes.added, &moves);
    counts.note_folders = notes.iter().map(|n| n.1).sum();
    let mut found = examine_changed(repo, sizes, &changes, &pairs, &mut counts);
    let examined_suspects = found.suspects;
    counts.suspects = found.suspects + replaced;
    let mut keys = std::mem::take(&mut found.keys);
    keys.extend(replaced_paths.iter().map(|p| path_key(Path::new(p))));
    keys.sort_unstable();
    keys.dedup();
    keys.truncate(MAX_EXAMINED);
    let room = 10usize.saturating_sub(found.top.len());
    found.top.extend(replaced_paths.into_iter().take(room));

    // The verdict. Ordinary work turns few healthy files into noise; an
    // attack turns many (a share of the files, or a large number).
    let suspects = counts.suspects;
    let share = suspects as f64 / files_before.max(1) as f64;
    let mass = mass_rule(suspects, files_before);
    // One folder wiped: most of what changed was damaged.
    let changed = (found.total as u64 + replaced).max(1);
    let damaged_share = (examined_suspects + replaced) as f64 / changed as f64;
    let concentrated = Rule {
        name: "concentrated".into(),
        value: damaged_share,
        threshold: format!(
            "at least 10 suspects ({suspects}) and at least half of the {changed} changed files"
        ),
        fired: suspects >= 10 && examined_suspects + replaced >= changed / 2,
    };
    let notes_rule = Rule {
        name: "notes".into(),
        value: counts.note_folders as f64,
        threshold: format!(
            "a note-like file in at least 3 folders, with at least 1 suspect ({suspects})"
        ),
        fired: counts.note_folders >= 3 && suspects >= 1,
    };
    let rules = vec![mass, concentrated, notes_rule];
    let verdict = if rules.iter().any(|r| r.fired) {
        Verdict::Suspicious
    } else {
        Verdict::Clean
    };
    let reasons = reasons(&counts, verdict, &found, &new_ext, &notes);
    Ok(ScanResult {
        version: VERSION,
        verdict,
        score: share.min(1.0),
        reasons,
        top_paths: found.top,
        counts,
        rules,
        suspect_keys: keys,
        accumulated_from: Vec::new(),
        overruled: None,
    })
}

/// Suspects of 5 or more that are 2 % of the files, or 200 or more.
fn mass_rule(suspects: u64, files: u64) -> Rule {
    let share = suspects as f64 / files.max(1) as f64;
    Rule {
        name: "mass".into(),
        value: suspects as f64,
        threshold: format!(
            "at least 5 suspects and either 2% of the {files} files ({:.1}% now) or 200",
            100.0 * share
        ),
        fired: suspects >= 5 && (share >= 0.02 || suspects >= 200),
    }
}

/// How many earlier snapshots a slow attack is looked for in.
pub const SLOW_WINDOW: usize = 30;

/// A slow attack: few files a backup, each under the line. Counts the
/// distinct suspect files of `result` and of the earlier snapshots of its
/// group (`earlier`: same host and paths, any order), back to the newest
/// one a person marked clean, the newest one already suspicious (its alarm
/// stands), or [`SLOW_WINDOW`] snapshots; when they cross the line of the
/// mass rule (against `files` now), the verdict turns suspicious and says
/// which snapshots took part. A verdict already suspicious stays as it is.
pub fn accumulate(
    result: &mut ScanResult,
    earlier: &[(crate::id::SnapshotId, crate::format::snapshot::SnapshotFile)],
    files: u64,
) {
    if result.verdict == Verdict::Suspicious || result.suspect_keys.is_empty() {
        return;
    }
    let mut by_time: Vec<_> = earlier.iter().collect();
    by_time.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(b.0.cmp(&a.0)));
    let mut keys: HashSet<u64> = result.suspect_keys.iter().copied().collect();
    let mut from = Vec::new();
    for (id, s) in by_time.into_iter().take(SLOW_WINDOW) {
        let Some(scan) = &s.scan else { break };
        if scan.effective() == Verdict::Suspicious || scan.overruled.is_some() {
            break;
        }
        if !scan.suspect_keys.is_empty() {
            keys.extend(scan.suspect_keys.iter().copied());
            from.push(id.short());
        }
    }
    if from.is_empty() {
        return;
    }
    let total = keys.len() as u64;
    result.counts.accumulated = total;
    let mut rule = mass_rule(total, files);
    rule.name = "slow".into();
    rule.threshold = format!(
        "distinct suspects over this backup and {} earlier ones: {}",
        from.len(),
        rule.threshold
    );
    let fired = rule.fired;
    result.rules.push(rule);
    if fired {
        from.reverse();
        result.verdict = Verdict::Suspicious;
        result.reasons.insert(
            0,
            format!(
                "a slow attack: {total} distinct files look encrypted or replaced over this backup and the earlier ones {} (each under the line alone)",
                from.join(", ")
            ),
        );
        result.accumulated_from = from;
        result.score = (total as f64 / files.max(1) as f64).min(1.0);
    }
}

/// The verdict's reasons in words, strongest first.
fn reasons(
    counts: &ScanCounts,
    verdict: Verdict,
    found: &Examined,
    new_ext: &BTreeMap<String, u64>,
    notes: &[(String, u64)],
) -> Vec<String> {
    let mut reasons = Vec::new();
    if counts.turned_to_noise > 0 {
        reasons.push(format!(
            "{} changed file(s) that compressed well now look random (encrypted?)",
            counts.turned_to_noise
        ));
    }
    if counts.lost_signature > 0 {
        let exts: Vec<String> = found
            .signature_exts
            .keys()
            .map(|e| format!(".{e}"))
            .collect();
        reasons.push(format!(
            "{} file(s) no longer start with their format's signature ({})",
            counts.lost_signature,
            exts.join(", ")
        ));
    }
    if counts.region_noise > 0 {
        reasons.push(format!(
            "{} file(s) had bytes overwritten in place with random-looking data, the rest left alone (partial or intermittent encryption)",
            counts.region_noise
        ));
    }
    if let Some(s) = found.shape.as_ref().filter(|_| counts.same_shape > 0) {
        reasons.push(format!(
            "{} file(s) changed the same way: {} of {} types, size {:+} bytes, bytes {}..{} of each rewritten with random-looking data",
            counts.same_shape, s.files, s.types, s.delta, s.start, s.end + 1
        ));
    }
    if counts.lost_magic > 0 {
        reasons.push(format!(
            "{} file(s) lost the magic number of their format",
            counts.lost_magic
        ));
    }
    if counts.text_turned_binary > 0 {
        reasons.push(format!(
            "{} text file(s) are no longer text",
            counts.text_turned_binary
        ));
    }
    if let Some((top_ext, top_ext_n)) = new_ext.iter().max_by_key(|(_, n)| **n) {
        reasons.push(format!(
            "{top_ext_n} file(s) were replaced by a copy named with the new extension .{top_ext}"
        ));
    }
    if counts.replaced > 0 {
        reasons.push(format!(
            "{} file(s) were replaced by random-looking files under other names",
            counts.replaced
        ));
    }
    if let Some((name, dirs)) = notes.first() {
        reasons.push(format!(
            "a note-like file {name:?} appeared in {dirs} folders"
        ));
    }
    if counts.mtime_kept > 0 {
        reasons.push(format!(
            "{} file(s) changed content but kept their modification time",
            counts.mtime_kept
        ));
    }
    if found.total as u64 > counts.examined {
        reasons.push(format!(
            "{} of {} changed files examined; counts extrapolated",
            counts.examined, found.total
        ));
    }
    if verdict == Verdict::Suspicious {
        let base = counts.files_before.max(1) as f64;
        reasons.insert(
            0,
            format!(
                "{} of {} files ({:.1}%) look encrypted or replaced",
                counts.suspects,
                counts.files_before,
                100.0 * counts.suspects as f64 / base
            ),
        );
    }
    reasons
}

/// In one group of snapshots (same host and paths; any order): the newest
/// snapshot before the first suspicious one that no person marked clean,
/// and that suspicious one. Without one: the newest snapshot and None.
/// None when no snapshot qualifies (the first one is suspicious).
pub fn last_clean(
    group: &[(crate::id::SnapshotId, crate::format::snapshot::SnapshotFile)],
) -> Option<(crate::id::SnapshotId, Option<crate::id::SnapshotId>)> {
    let mut by_time: Vec<_> = group.iter().collect();
    by_time.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    let bad = |s: &crate::format::snapshot::SnapshotFile| {
        s.scan
            .as_ref()
            .is_some_and(|r| r.effective() == Verdict::Suspicious)
    };
    match by_time.iter().position(|(_, s)| bad(s)) {
        Some(0) => None,
        Some(i) => Some((by_time[i - 1].0, Some(by_time[i].0))),
        None => by_time.last().map(|(id, _)| (*id, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Vec<u8> {
        let mut v = Vec::new();
        let mut i = 0u64;
        while v.len() < n {
            v.extend_from_slice(
                format!("line {i} of an ordinary document, words repeat\n").as_bytes(),
            );
            i += 1;
        }
        v.truncate(n);
        v
    }

    /// The two header bytes of zlib's default level before some bytes
    /// (the header is what is judged).
    fn zlib_like(body: &[u8]) -> Vec<u8> {
        let mut v = vec![0x78, 0x9c];
        v.extend_from_slice(body);
        v
    }

    fn noise(n: usize, seed: u8) -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        let mut block = 0u64;
        while out.len() < n {
            out.extend_from_slice(
                blake3::hash(&[&[seed][..], &block.to_le_bytes()].concat()).as_bytes(),
            );
            block += 1;
        }
        out.truncate(n);
        out
    }

    #[test]
    fn partial_and_intermittent_encryption_show_in_the_changed_bytes() {
        let old = text(256 << 10);
        // The first 4 KiB encrypted, the rest left alone.
        let mut first = old.clone();
        first[..4096].copy_from_slice(&noise(4096, 1));
        assert!(region_turned_to_noise(&old, &first));
        // Every other 64 KiB block.
        let mut every_other = old.clone();
        for b in (0..every_other.len()).step_by(128 << 10) {
            let end = (b + (64 << 10)).min(every_other.len());
            every_other[b..end].copy_from_slice(&noise(end - b, 2));
        }
        assert!(region_turned_to_noise(&old, &every_other));
        // Ordinary edits: text inserted at the start (everything shifts),
        // a paragraph rewritten, a few bytes changed.
        let mut inserted = b"a new first line\n".to_vec();
        inserted.extend_from_slice(&old);
        assert!(!region_turned_to_noise(&old, &inserted));
        let mut rewritten = old.clone();
        rewritten[1000..9000]
            .copy_from_slice(&text(8000).iter().rev().copied().collect::<Vec<_>>());
        assert!(!region_turned_to_noise(&old, &rewritten));
        let mut typo = old.clone();
        typo[77] = b'X';
        assert!(!region_turned_to_noise(&old, &typo));
        // Noise that was noise before says nothing by itself.
        let jpeg_like = noise(64 << 10, 3);
        let mut enc = jpeg_like.clone();
        enc[..4096].copy_from_slice(&noise(4096, 4));
        assert!(!region_turned_to_noise(&jpeg_like, &enc));
    }

    #[test]
    fn a_lost_magic_number_is_seen_whatever_the_name() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend_from_slice(&noise(4000, 5));
        let mut enc = png.clone();
        enc[..1024].copy_from_slice(&noise(1024, 6));
        assert!(magic_lost(&png, &enc));
        assert!(!magic_lost(&png, &png));
        let mut elf = b"\x7fELF\x02\x01\x01\0".to_vec();
        elf.extend_from_slice(&[0u8; 4000]);
        let mut elf2 = elf.clone();
        elf2[100] = 1;
        assert!(!magic_lost(&elf, &elf2));
        assert!(magic_lost(&elf, &noise(4008, 7)));
        // Plain text has no magic number to lose.
        assert!(!magic_lost(&text(4000), &noise(4000, 8)));
        // A zlib stream (a git loose object), which infer does not know.
        let object = zlib_like(&text(3000));
        assert!(zlib_header(&object));
        assert!(!magic_lost(&object, &zlib_like(&text(2000))));
        let mut enc = object.clone();
        enc[..2].copy_from_slice(&[0x13, 0x37]);
        assert!(magic_lost(&object, &enc));
        // Noise rarely looks like a zlib header.
        let passing = (0..=u16::MAX)
            .filter(|i| zlib_header(&i.to_be_bytes()))
            .count();
        assert!(passing < 100, "{passing} of 65536 two-byte starts");
    }

    #[test]
    fn one_change_across_many_files_of_many_types_is_a_shape() {
        // 256 bytes encrypted: too few for zstd, enough to count bytes.
        assert!(looks_random(&noise(256, 9)));
        assert!(looks_random(&noise(64, 10)));
        assert!(!looks_random(&text(256)));
        assert!(!looks_random(
            &(0..=255u8).map(|b| b / 16).collect::<Vec<_>>()
        ));
        assert!(!looks_random(&1_700_000_000u64.to_le_bytes().repeat(32)));
        let old = text(8192);
        let mut new = old.clone();
        new[..256].copy_from_slice(&noise(256, 11));
        assert_eq!(changed_range(&old, &new), Some((0, 255)));
        assert_eq!(changed_range(&old, &old), None);
        // Ten files of three types share a shape; nine, or ten of two
        // types, do not.
        let exts = ["pdf", "docx", "jpg"];
        let items: Vec<(u8, Option<String>)> = (0..10)
            .map(|i| (1, Some(exts[i % 3].to_string())))
            .chain((0..9).map(|i| (2, Some(exts[i % 3].to_string()))))
            .chain((0..12).map(|i| (3, Some(exts[i % 2].to_string()))))
            .collect();
        assert_eq!(common_shapes(&items), HashSet::from([1]));
    }

    fn id(n: u8) -> crate::id::SnapshotId {
        crate::id::SnapshotId(crate::id::Hash([n; 32]))
    }

    fn scanned(
        t: i64,
        keys: &[u64],
        verdict: Verdict,
        overruled: bool,
    ) -> crate::format::snapshot::SnapshotFile {
        let mut s = snap(t, Some((verdict, overruled.then_some(Verdict::Clean))));
        s.scan.as_mut().unwrap().suspect_keys = keys.to_vec();
        s
    }

    #[test]
    fn a_slow_attack_is_flagged_once_its_files_add_up() {
        // 100 files; 2 suspects a backup is under the line, 6 distinct over
        // three backups is over it.
        let group = vec![
            (id(1), scanned(1, &[], Verdict::Clean, false)),
            (id(2), scanned(2, &[10, 11], Verdict::Clean, false)),
            (id(3), scanned(3, &[12, 13], Verdict::Clean, false)),
        ];
        let mut now = scanned(4, &[14, 15], Verdict::Clean, false).scan.unwrap();
        accumulate(&mut now, &group, 100);
        assert_eq!(now.verdict, Verdict::Suspicious);
        assert_eq!(now.counts.accumulated, 6);
        assert_eq!(now.accumulated_from, vec![id(2).short(), id(3).short()]);
        assert!(now.reasons[0].contains("slow attack"), "{:?}", now.reasons);
        assert!(now.rules.iter().any(|r| r.name == "slow" && r.fired));
        // The same files again and again (a database) add up to nothing.
        let same = vec![
            (id(2), scanned(2, &[10, 11], Verdict::Clean, false)),
            (id(3), scanned(3, &[10, 11], Verdict::Clean, false)),
        ];
        let mut now = scanned(4, &[10, 11], Verdict::Clean, false).scan.unwrap();
        accumulate(&mut now, &same, 100);
        assert_eq!(now.verdict, Verdict::Clean);
        // A person's mark ends the window: what they saw was fine.
        let marked = vec![
            (id(2), scanned(2, &[10, 11], Verdict::Clean, false)),
            (id(3), scanned(3, &[12, 13], Verdict::Suspicious, true)),
        ];
        let mut now = scanned(4, &[14, 15], Verdict::Clean, false).scan.unwrap();
        accumulate(&mut now, &marked, 100);
        assert_eq!(now.verdict, Verdict::Clean);
    }

    #[test]
    fn signatures() {
        let pdf = expectation("pdf").unwrap();
        assert!(healthy(&pdf, b"%PDF-1.7\n..."));
        assert!(!healthy(&pdf, b"\x13\x99%PDF"));
        let zip = expectation("docx").unwrap();
        assert!(healthy(&zip, b"PK\x03\x04rest"));
        assert!(!healthy(&zip, b"PK"));
        let mp4 = expectation("mp4").unwrap();
        assert!(healthy(&mp4, b"\0\0\0\x20ftypisom"));
        assert!(!healthy(&mp4, b"ftyp"));
        let txt = expectation("md").unwrap();
        assert!(healthy(&txt, "# Title\n\nsome text é".as_bytes()));
        // A multi-byte character cut by the sample is still text.
        let mut cut = "é".repeat(3000).into_bytes();
        cut.truncate(4095);
        assert!(healthy(&txt, &cut));
        assert!(!healthy(&txt, b"\x00\x01\x02binary\xff\xfe"));
        assert!(!healthy(&txt, b"text with a \0 NUL"));
        assert!(expectation("locked").is_none());
    }

    fn snap(
        t: i64,
        verdict: Option<(Verdict, Option<Verdict>)>,
    ) -> crate::format::snapshot::SnapshotFile {
        crate::format::snapshot::SnapshotFile {
            version: 1,
            time: jiff::Timestamp::from_second(t).unwrap(),
            tree: BlobId(crate::id::Hash([0; 32])),
            paths: vec!["/d".into()],
            hostname: "h".into(),
            username: "u".into(),
            tags: vec![],
            parent: None,
            program: String::new(),
            summary: Default::default(),
            protection: None,
            original: None,
            copied_from: None,
            rewritten: None,
            scan: verdict.map(|(v, o)| ScanResult {
                version: VERSION,
                verdict: v,
                score: 0.0,
                reasons: vec![],
                top_paths: vec![],
                counts: Default::default(),
                rules: vec![],
                suspect_keys: vec![],
                accumulated_from: vec![],
                overruled: o.map(|verdict| Overrule {
                    verdict,
                    by: "me".into(),
                    time: jiff::Timestamp::UNIX_EPOCH,
                }),
            }),
        }
    }

    #[test]
    fn last_clean_is_before_the_first_unresolved_suspicious_snapshot() {
        use crate::id::{Hash, SnapshotId};
        let id = |n: u8| SnapshotId(Hash([n; 32]));
        let clean = Some((Verdict::Clean, None));
        let bad = Some((Verdict::Suspicious, None));
        let forgiven = Some((Verdict::Suspicious, Some(Verdict::Clean)));
        // Given in any order.
        let g = vec![
            (id(4), snap(40, clean)),
            (id(1), snap(10, None)),
            (id(3), snap(30, bad)),
            (id(2), snap(20, clean)),
            (id(5), snap(50, bad)),
        ];
        assert_eq!(last_clean(&g), Some((id(2), Some(id(3)))));
        // The first alarm overruled: the next one counts.
        let mut g2 = g.clone();
        g2[2].1 = snap(30, forgiven);
        assert_eq!(last_clean(&g2), Some((id(4), Some(id(5)))));
        // No alarm: the newest.
        let g3: Vec<_> = g
            .iter()
            .filter(|(i, _)| *i != id(3) && *i != id(5))
            .cloned()
            .collect();
        assert_eq!(last_clean(&g3), Some((id(4), None)));
        // The oldest already suspicious: nothing clean before it.
        assert_eq!(last_clean(&[(id(9), snap(1, bad))]), None);
        assert_eq!(last_clean(&[]), None);
    }

    #[test]
    fn note_names() {
        for n in [
            "README_DECRYPT.txt",
            "HOW_TO_RECOVER_FILES.html",
            "!!!READ_ME!!!.txt",
            "restore-my-files.txt",
        ] {
            assert!(note_like(n), "{n}");
        }
        for n in ["main.rs", "index.html", "photo.jpg"] {
            assert!(!note_like(n), "{n}");
        }
    }
}
