//! The index as a table on local disk, for repositories whose index is
//! larger than the memory budget (docs/DESIGN.md §6b).
//!
//! A table lists one entry per blob, sorted by id, in 4 KiB pages of 78
//! entries, each page authenticated by a keyed BLAKE3 MAC (a key derived
//! from the repository's master key, the page's number and the table's
//! random id), so that a damaged or planted page is refused, never trusted.
//! Memory holds the first 8 bytes of each page's first id (0.1 byte a
//! blob), the pack table and the alternates; a lookup is one search in
//! memory, one `pread` and one MAC.
//!
//! Tables are built by an external merge sort: the loader sorts what fits
//! in its budget and spills it as a run (an unlinked temporary file), then
//! merges the runs, and the table it extends if any, into a new table
//! written to a temporary name and renamed. Tables are never changed in
//! place, so processes share them safely.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use super::index::IndexEntry;
use crate::format::pack::BlobKind;
use crate::id::{BlobId, Hash, IndexId, PackId};

/// Size of a page.
pub const PAGE: usize = 4096;
/// Size of an entry: id, pack, offset, length, raw length, kind.
const ENTRY: usize = 52;
/// Entries in a page: 78 × 52 = 4056 bytes.
const PER_PAGE: usize = 78;
/// Where a page's entry count is.
const COUNT_AT: usize = PER_PAGE * ENTRY;
/// Where a page's MAC is (the last 32 bytes).
const MAC_AT: usize = PAGE - 32;
const MAGIC: &[u8; 16] = b"rewind-idxtable\0";
/// Version of the table's layout (a table of another version is rebuilt).
const VERSION: u32 = 1;

/// What a table lists besides its entries.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TableMeta {
    /// Every pack, in the order entries refer to them, with its size.
    pub packs: Vec<(PackId, u64)>,
    /// The index files it was made of.
    pub files: Vec<IndexId>,
    /// The other copies of blobs stored more than once.
    pub alternates: Vec<(BlobId, Vec<RawEntry>)>,
    /// Blob entries seen more than once.
    pub duplicates: u64,
    /// BLAKE3 of the marked packs it was made with (their choice of the
    /// first copy depends on them).
    pub marks: [u8; 32],
}

/// An [`IndexEntry`] as the table's metadata stores it.
pub type RawEntry = (u32, u32, u32, u32, BlobKind);

/// An entry to its stored form.
pub fn raw(e: &IndexEntry) -> RawEntry {
    (e.pack, e.offset, e.length, e.raw_length, e.kind)
}

/// A stored entry back.
pub fn unraw(r: &RawEntry) -> IndexEntry {
    IndexEntry {
        pack: r.0,
        offset: r.1,
        length: r.2,
        raw_length: r.3,
        kind: r.4,
    }
}

#[derive(Serialize, Deserialize)]
struct Sections {
    fences: Vec<u64>,
    meta: TableMeta,
}

/// An open table.
pub struct Table {
    file: File,
    path: PathBuf,
    key: [u8; 32],
    table_id: [u8; 32],
    entries: u64,
    /// The first 8 bytes (big-endian) of the first id of each page.
    fences: Vec<u64>,
    /// Set when a page failed its MAC: the table was removed, and lookups
    /// answer "not found" from then on.
    damaged: AtomicBool,
    /// Its inode: only this file is removed when it is found damaged (the
    /// path may hold another process's table by then).
    ino: u64,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("path", &self.path)
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

fn page_mac(key: &[u8; 32], table_id: &[u8; 32], page_no: u64, body: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(b"page");
    h.update(table_id);
    h.update(&page_no.to_le_bytes());
    h.update(body);
    *h.finalize().as_bytes()
}

fn sections_mac(key: &[u8; 32], table_id: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(b"sections");
    h.update(table_id);
    h.update(body);
    *h.finalize().as_bytes()
}

fn header_mac(key: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(b"header");
    h.update(body);
    *h.finalize().as_bytes()
}

#[allow(clippy::big_endian_bytes, reason = "fences order as the id's bytes")]
fn fence(id: &BlobId) -> u64 {
    u64::from_be_bytes(id.0 .0[..8].try_into().expect("8 bytes"))
}

fn kind_byte(k: BlobKind) -> u8 {
    match k {
        BlobKind::Data => 0,
        BlobKind::Tree => 1,
    }
}

fn put_entry(out: &mut [u8], id: &BlobId, e: &IndexEntry) {
    out[..32].copy_from_slice(&id.0 .0);
    out[32..36].copy_from_slice(&e.pack.to_le_bytes());
    out[36..40].copy_from_slice(&e.offset.to_le_bytes());
    out[40..44].copy_from_slice(&e.length.to_le_bytes());
    out[44..48].copy_from_slice(&e.raw_length.to_le_bytes());
    out[48] = kind_byte(e.kind);
    out[49..52].fill(0);
}

fn get_entry(b: &[u8]) -> Option<(BlobId, IndexEntry)> {
    let u = |k: usize| u32::from_le_bytes(b[k..k + 4].try_into().expect("4 bytes"));
    let kind = match b[48] {
        0 => BlobKind::Data,
        1 => BlobKind::Tree,
        _ => return None,
    };
    let id = BlobId(Hash(b[..32].try_into().expect("32 bytes")));
    Some((
        id,
        IndexEntry {
            pack: u(32),
            offset: u(36),
            length: u(40),
            raw_length: u(44),
            kind,
        },
    ))
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

impl Table {
    /// Opens a table and checks its header and metadata; the pages are
    /// checked as they are read.
    pub fn open(path: &Path, key: &[u8; 32]) -> io::Result<(Table, TableMeta)> {
        Table::from_file(File::open(path)?, path, key)
    }

    /// [`Table::open`] of a file already open (one this process just wrote
    /// and renamed to `path`: another process may remove that path).
    pub fn from_file(file: File, path: &Path, key: &[u8; 32]) -> io::Result<(Table, TableMeta)> {
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata()?;
        let mut header = vec![0u8; PAGE];
        file.read_exact_at(&mut header, 0)?;
        if header[MAC_AT..] != header_mac(key, &header[..MAC_AT]) {
            return Err(bad("header fails authentication"));
        }
        if &header[..16] != MAGIC
            || u32::from_le_bytes(header[16..20].try_into().expect("4")) != VERSION
        {
            return Err(bad("another version"));
        }
        let u64_at = |k: usize| u64::from_le_bytes(header[k..k + 8].try_into().expect("8"));
        let table_id: [u8; 32] = header[20..52].try_into().expect("32");
        let entries = u64_at(52);
        let pages = u64_at(60);
        let sections_len = u64_at(68);
        let want: [u8; 32] = header[76..108].try_into().expect("32");
        let body_at = pages
            .checked_add(1)
            .and_then(|p| p.checked_mul(PAGE as u64))
            .filter(|&at| at.checked_add(sections_len) == Some(meta.len()));
        let Some(body_at) = body_at else {
            return Err(bad("its sizes do not match the file's"));
        };
        if pages.saturating_mul(PER_PAGE as u64) < entries {
            return Err(bad("impossible sizes"));
        }
        let mut body = vec![0u8; usize::try_from(sections_len).map_err(|_| bad("too large"))?];
        file.read_exact_at(&mut body, body_at)?;
        if sections_mac(key, &table_id, &body) != want {
            return Err(bad("metadata fails authentication"));
        }
        let s: Sections = postcard::from_bytes(&body).map_err(|e| bad(e.to_string()))?;
        if s.fences.len() as u64 != pages {
            return Err(bad("fences do not match the pages"));
        }
        Ok((
            Table {
                file,
                path: path.to_owned(),
                key: *key,
                table_id,
                entries,
                fences: s.fences,
                damaged: AtomicBool::new(false),
                ino: meta.ino(),
            },
            s.meta,
        ))
    }

    /// Number of entries (one per blob).
    pub fn len(&self) -> u64 {
        self.entries
    }

    /// True if a page failed authentication since the table was opened.
    pub fn is_damaged(&self) -> bool {
        self.damaged.load(Ordering::Relaxed)
    }

    /// Where the table is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and checks page `p` (0-based among the entry pages): its
    /// entries' bytes, or None (and the table is marked damaged and
    /// removed) if it cannot be read or fails its MAC.
    fn page(&self, p: usize, buf: &mut [u8; PAGE]) -> Option<usize> {
        if self.is_damaged() {
            return None;
        }
        let ok = self
            .file
            .read_exact_at(buf, (p as u64 + 1) * PAGE as u64)
            .is_ok()
            && buf[MAC_AT..] == page_mac(&self.key, &self.table_id, p as u64, &buf[..MAC_AT]);
        let n = u16::from_le_bytes([buf[COUNT_AT], buf[COUNT_AT + 1]]) as usize;
        if ok && n <= PER_PAGE && n > 0 {
            Some(n)
        } else {
            self.set_damaged();
            None
        }
    }

    /// Marks the table damaged and removes its file (if the path still
    /// names it).
    fn set_damaged(&self) {
        use std::os::unix::fs::MetadataExt;
        self.damaged.store(true, Ordering::Relaxed);
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// Looks a blob up.
    pub fn get(&self, id: &BlobId) -> Option<IndexEntry> {
        let mut buf = [0u8; PAGE];
        self.get_with(id, &mut buf, &mut None)
    }

    /// Looks a blob up, reusing the page in `buf` when `cached` says it is
    /// the one (lookups in id order read each page once).
    fn get_with(
        &self,
        id: &BlobId,
        buf: &mut [u8; PAGE],
        cached: &mut Option<(usize, usize)>,
    ) -> Option<IndexEntry> {
        let f = fence(id);
        // The last page whose first id's prefix is <= the id's; pages
        // before it too while their prefix is the same (ids that share 8
        // bytes may straddle pages).
        let mut p = self.fences.partition_point(|&x| x <= f);
        while p > 0 {
            p -= 1;
            let n = match *cached {
                Some((q, n)) if q == p => n,
                _ => {
                    // Forgotten first: after a failed read `buf` holds
                    // bytes no MAC vouched for.
                    *cached = None;
                    let n = self.page(p, buf)?;
                    *cached = Some((p, n));
                    n
                }
            };
            let slot = |k: usize| &buf[k * ENTRY..k * ENTRY + 32];
            let (mut lo, mut hi) = (0, n);
            while lo < hi {
                let mid = (lo + hi) / 2;
                if slot(mid) < &id.0 .0[..] {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            if lo < n && slot(lo) == &id.0 .0[..] {
                let Some((_, e)) = get_entry(&buf[lo * ENTRY..lo * ENTRY + ENTRY]) else {
                    self.set_damaged();
                    return None;
                };
                return Some(e);
            }
            if lo > 0 || self.fences[p] != f {
                return None;
            }
        }
        None
    }

    /// Every entry, in id order. Stops (and marks the table damaged) at a
    /// page that fails its MAC.
    pub fn iter(&self) -> impl Iterator<Item = (BlobId, IndexEntry)> + '_ {
        let mut buf = [0u8; PAGE];
        let mut p = 0;
        let mut k = 0;
        let mut n = 0;
        std::iter::from_fn(move || loop {
            if k < n {
                k += 1;
                let e = get_entry(&buf[(k - 1) * ENTRY..k * ENTRY]);
                if e.is_none() {
                    self.set_damaged();
                }
                return e;
            }
            if p >= self.fences.len() {
                return None;
            }
            n = self.page(p, &mut buf)?;
            p += 1;
            k = 0;
        })
    }

    /// Which of `ids` (sorted, unique) the table lists, and where: one
    /// read per page that holds any, so a large sorted batch walks the
    /// table once.
    pub fn get_sorted<'a>(
        &'a self,
        ids: impl Iterator<Item = &'a BlobId> + 'a,
    ) -> impl Iterator<Item = Option<IndexEntry>> + 'a {
        let mut buf = [0u8; PAGE];
        let mut cached = None;
        ids.map(move |id| self.get_with(id, &mut buf, &mut cached))
    }
}

/// Writes a table from entries given in strictly increasing id order.
pub struct TableWriter {
    tmp: PathBuf,
    out: BufWriter<File>,
    key: [u8; 32],
    table_id: [u8; 32],
    page: Box<[u8; PAGE]>,
    in_page: usize,
    pages: u64,
    entries: u64,
    fences: Vec<u64>,
    last: Option<BlobId>,
}

impl TableWriter {
    /// Starts a table in `dir` (under a temporary name).
    pub fn create(dir: &Path, key: &[u8; 32]) -> io::Result<TableWriter> {
        std::fs::create_dir_all(dir)?;
        let mut table_id = [0u8; 32];
        crate::crypto::random_bytes(&mut table_id);
        let tmp = dir.join(format!("tmp-{}", hex::encode(&table_id[..8])));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&[0u8; PAGE])?;
        Ok(TableWriter {
            tmp,
            out,
            key: *key,
            table_id,
            page: Box::new([0u8; PAGE]),
            in_page: 0,
            pages: 0,
            entries: 0,
            fences: Vec::new(),
            last: None,
        })
    }

    /// Adds the next entry.
    pub fn push(&mut self, id: &BlobId, e: &IndexEntry) -> io::Result<()> {
        if self.last.is_some_and(|l| l >= *id) {
            return Err(bad("table entries out of order"));
        }
        self.last = Some(*id);
        if self.in_page == 0 {
            self.fences.push(fence(id));
        }
        let k = self.in_page * ENTRY;
        put_entry(&mut self.page[k..k + ENTRY], id, e);
        self.in_page += 1;
        self.entries += 1;
        if self.in_page == PER_PAGE {
            self.flush_page()?;
        }
        Ok(())
    }

    fn flush_page(&mut self) -> io::Result<()> {
        if self.in_page == 0 {
            return Ok(());
        }
        self.page[self.in_page * ENTRY..COUNT_AT].fill(0);
        self.page[COUNT_AT..COUNT_AT + 2]
            .copy_from_slice(&u16::try_from(self.in_page).expect("78").to_le_bytes());
        self.page[COUNT_AT + 2..MAC_AT].fill(0);
        let mac = page_mac(&self.key, &self.table_id, self.pages, &self.page[..MAC_AT]);
        self.page[MAC_AT..].copy_from_slice(&mac);
        self.out.write_all(&self.page[..])?;
        self.pages += 1;
        self.in_page = 0;
        Ok(())
    }

    /// Writes the metadata and the header, makes the table durable and
    /// renames it to `name` in its directory.
    pub fn finish(mut self, meta: TableMeta, name: &str) -> io::Result<(PathBuf, File)> {
        self.flush_page()?;
        let body = postcard::to_stdvec(&Sections {
            fences: std::mem::take(&mut self.fences),
            meta,
        })
        .map_err(|e| bad(e.to_string()))?;
        self.out.write_all(&body)?;
        self.out.flush()?;
        let file = self.out.get_ref();
        let mut header = vec![0u8; PAGE];
        header[..16].copy_from_slice(MAGIC);
        header[16..20].copy_from_slice(&VERSION.to_le_bytes());
        header[20..52].copy_from_slice(&self.table_id);
        header[52..60].copy_from_slice(&self.entries.to_le_bytes());
        header[60..68].copy_from_slice(&self.pages.to_le_bytes());
        header[68..76].copy_from_slice(&(body.len() as u64).to_le_bytes());
        header[76..108].copy_from_slice(&sections_mac(&self.key, &self.table_id, &body));
        let mac = header_mac(&self.key, &header[..MAC_AT]);
        header[MAC_AT..].copy_from_slice(&mac);
        file.write_all_at(&header, 0)?;
        file.sync_all()?;
        let dest = self.tmp.with_file_name(name);
        let file = file.try_clone()?;
        std::fs::rename(&self.tmp, &dest)?;
        self.tmp = PathBuf::new();
        Ok((dest, file))
    }
}

impl Drop for TableWriter {
    fn drop(&mut self) {
        // Empty once renamed; otherwise an unfinished table.
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A sorted run spilled to disk while the index loads: an unlinked
/// temporary file of raw entries, read back once by the merge.
#[derive(Debug)]
pub struct Run {
    file: File,
    len: u64,
}

impl Run {
    /// Writes `v` (sorted) to a new unlinked file in `dir`.
    pub fn write(dir: &Path, v: &[(BlobId, IndexEntry)]) -> io::Result<Run> {
        let file = unlinked_file(dir, "run")?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut rec = [0u8; ENTRY];
        for (id, e) in v {
            put_entry(&mut rec, id, e);
            out.write_all(&rec)?;
        }
        let mut file = out.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        Ok(Run {
            file,
            len: v.len() as u64,
        })
    }

    /// Its entries, in order.
    pub fn into_iter(self) -> impl Iterator<Item = io::Result<(BlobId, IndexEntry)>> {
        let mut r = BufReader::with_capacity(1 << 18, self.file);
        let mut left = self.len;
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            let mut rec = [0u8; ENTRY];
            Some(
                r.read_exact(&mut rec)
                    .and_then(|()| get_entry(&rec).ok_or_else(|| bad("bad run entry"))),
            )
        })
    }
}

/// A new file in `dir` (made if missing), open for reading and writing
/// and already unlinked: it goes when it is closed, whatever happens.
pub(crate) fn unlinked_file(dir: &Path, prefix: &str) -> io::Result<File> {
    std::fs::create_dir_all(dir)?;
    let mut name = [0u8; 8];
    crate::crypto::random_bytes(&mut name);
    let path = dir.join(format!("{prefix}-{}", hex::encode(name)));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    let _ = std::fs::remove_file(&path);
    Ok(file)
}

/// Merges sorted streams of entries (each sorted by id, then pack, then
/// offset) into one, in that order.
pub fn merge<I>(streams: Vec<I>) -> impl Iterator<Item = io::Result<(BlobId, IndexEntry)>>
where
    I: Iterator<Item = io::Result<(BlobId, IndexEntry)>>,
{
    let mut streams = streams;
    let mut heap = BinaryHeap::new();
    let mut err: Option<io::Error> = None;
    let key = |id: &BlobId, e: &IndexEntry| (id.0 .0, e.pack, e.offset);
    for (k, s) in streams.iter_mut().enumerate() {
        match s.next() {
            Some(Ok((id, e))) => heap.push(Reverse((key(&id, &e), k, id, EntryOrd(e)))),
            Some(Err(e)) => err = Some(e),
            None => {}
        }
    }
    std::iter::from_fn(move || {
        if let Some(e) = err.take() {
            return Some(Err(e));
        }
        let Reverse((_, k, id, EntryOrd(e))) = heap.pop()?;
        match streams[k].next() {
            Some(Ok((nid, ne))) => heap.push(Reverse((key(&nid, &ne), k, nid, EntryOrd(ne)))),
            Some(Err(x)) => err = Some(x),
            None => {}
        }
        Some(Ok((id, e)))
    })
}

/// An entry in a heap (ordered by the key beside it, never by itself).
#[derive(Debug, Clone, Copy)]
struct EntryOrd(IndexEntry);

impl PartialEq for EntryOrd {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for EntryOrd {}
impl PartialOrd for EntryOrd {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for EntryOrd {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

/// BLAKE3 of a set of marked packs (sorted).
pub fn marks_hash(marks: &std::collections::HashSet<PackId, crate::id::IdBuildHasher>) -> [u8; 32] {
    let mut v: Vec<&PackId> = marks.iter().collect();
    v.sort();
    let mut h = blake3::Hasher::new();
    for m in v {
        h.update(&m.0 .0);
    }
    *h.finalize().as_bytes()
}

/// The tables in `dir`, newest first.
pub fn tables(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<(std::time::SystemTime, PathBuf)> = rd
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("table-"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    v.sort_by_key(|x| std::cmp::Reverse(x.0));
    v.into_iter().map(|(_, p)| p).collect()
}

/// Removes the tables in `dir` but `keep` (those older than a minute), and
/// temporary files and runs (the index's, check's ids) older than an hour
/// (a process that died before it unlinked one).
pub fn tidy(dir: &Path, keep: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let age = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .map_or(0, |d| d.as_secs());
        // Another process's table of the last minute may be about to be
        // opened: it stays until a later tidy.
        let stale_table = name.starts_with("table-") && e.path() != keep && age > 60;
        let temporary = ["tmp-", "run-", "ids-"].iter().any(|p| name.starts_with(p));
        if stale_table || (temporary && age > 3600) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
