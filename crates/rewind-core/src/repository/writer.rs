//! Writing blobs: dedup, compress, seal, pack, upload, index.
//!
//! ```text
//! caller threads --add_blob--> [dedup: index + seen set] -> compress -> seal
//!     -> pack builder (data or tree) --full pack--> channel -> uploader threads
//!     -> backend.write(pack) -> pending index entries --every 16 packs--> index file
//! ```
//! Where the backend can stage a file before it is named (local
//! directories: [`crate::backend::Backend::stage`]), a pack goes to its
//! temporary file as it fills and the uploader only makes it durable and
//! names it: no pack is held whole in memory. Elsewhere a pack is built in
//! a 16 MiB buffer that the uploader sends and gives back for reuse.
//! Ordering (docs/DESIGN.md, "Write ordering"): a pack is listed in an index
//! file only after the backend reports it durable; the caller writes its
//! snapshot only after [`Repository::write_blobs`] returned, i.e. after the
//! last index file is durable.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};

use super::{Index, Repository};
use crate::backend::{FileType, Staged};
use crate::error::{Error, Result};
use crate::format::index::{IndexFile, IndexPack, VERSION};
use crate::format::pack::{BlobKind, PackBuilder, PackedBlob};
use crate::id::{BlobId, IdBuildHasher, IndexId, PackId};

/// Packs are closed once they reach this size.
pub const PACK_TARGET_SIZE: usize = 16 << 20;
/// Capacity of a pack buffer: the target plus room for the header.
const PACK_BUFFER_SIZE: usize = PACK_TARGET_SIZE + (256 << 10);
/// Buffer in front of a staged pack file (small blobs are not a write each).
const STAGE_BUFFER: usize = 256 << 10;
/// Staged packs that may wait for the uploaders.
const STAGED_WAITING: usize = 4;
/// An index file is written after this many packs (and at the end).
pub const PACKS_PER_INDEX: usize = 16;
/// ... or when the oldest unindexed pack has waited this long (slow links:
/// a crash then loses at most this much uploaded work).
pub const INDEX_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// zstd level of blobs by default ([`super::Repository::set_compression`]
/// chooses another).
pub const COMPRESSION_LEVEL: i32 = 3;

/// What a writer added.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// New data blobs.
    pub data_blobs: u64,
    /// New tree blobs.
    pub tree_blobs: u64,
    /// Plaintext bytes of new blobs.
    pub bytes_raw: u64,
    /// Stored bytes of new blobs.
    pub bytes_stored: u64,
    /// Packs written.
    pub packs: u64,
    /// Index files written.
    pub index_files: Vec<IndexId>,
}

/// Where a pack's bytes go while it fills.
enum Sink<'a> {
    Memory(Vec<u8>),
    Staged(std::io::BufWriter<Box<dyn Staged + 'a>>),
}

impl std::io::Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Memory(v) => v.write(buf),
            Sink::Staged(f) => f.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Memory(v) => v.write_all(buf),
            Sink::Staged(f) => f.write_all(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Memory(_) => Ok(()),
            Sink::Staged(f) => f.flush(),
        }
    }
}

impl<'a> Sink<'a> {
    fn staged(file: Box<dyn Staged + 'a>) -> Self {
        Sink::Staged(std::io::BufWriter::with_capacity(STAGE_BUFFER, file))
    }
}

/// A sealed pack on its way to the uploaders.
enum Body<'a> {
    Memory(Vec<u8>),
    /// Written, not yet durable nor named; its size.
    Staged(Box<dyn Staged + 'a>, u64),
}

type Finished<'a> = (PackId, Body<'a>, Vec<PackedBlob>);

#[derive(Default)]
struct Shared {
    failed: AtomicBool,
    error: Mutex<Option<Error>>,
    pending: Mutex<Vec<IndexPack>>,
    /// When the oldest entry of `pending` was added.
    pending_since: Mutex<Option<std::time::Instant>>,
    index_files: Mutex<Vec<IndexId>>,
    packs: AtomicU64,
}

impl Shared {
    fn fail(&self, e: Error) {
        let mut slot = self.error.lock().expect("error slot");
        if slot.is_none() {
            *slot = Some(e);
        }
        self.failed.store(true, Ordering::SeqCst);
    }
}

/// Adds blobs to a repository; see [`Repository::write_blobs`].
pub struct BlobWriter<'a> {
    repo: &'a Repository,
    index: Arc<Index>,
    seen: Mutex<HashSet<BlobId, IdBuildHasher>>,
    /// The data and the tree pack being filled, made at their first blob.
    builders: Mutex<[Option<PackBuilder<Sink<'a>>>; 2]>,
    /// Packs go to staged files ([`crate::backend::Backend::stage`]).
    staging: bool,
    tx: Sender<Finished<'a>>,
    /// Pack buffers the uploaders are done with, for reuse.
    recycled: Receiver<Vec<u8>>,
    shared: &'a Shared,
    dry_run: bool,
    data_blobs: AtomicU64,
    tree_blobs: AtomicU64,
    bytes_raw: AtomicU64,
    bytes_stored: AtomicU64,
}

impl<'a> BlobWriter<'a> {
    /// True if the repository already has the blob or this writer stored it.
    pub fn has_blob(&self, id: &BlobId) -> bool {
        self.index.contains_live(id) || self.seen.lock().expect("seen").contains(id)
    }

    /// Stores a blob unless it is already stored; returns its id and whether it was new.
    pub fn add_blob(&self, kind: BlobKind, data: &[u8]) -> Result<(BlobId, bool)> {
        let id = self.blob_id(data);
        let new = self.claim(&id)?;
        if new {
            self.store(kind, id, data)?;
        }
        Ok((id, new))
    }

    /// The id of a blob of these bytes.
    pub fn blob_id(&self, data: &[u8]) -> BlobId {
        self.repo.crypto().blob_id(data)
    }

    /// True when neither the repository nor this writer has the blob: the
    /// caller then owes a [`BlobWriter::store`] of it (before the function
    /// given to [`Repository::write_blobs`] returns), and later claims of
    /// it are false. An error once a storage error stopped the writer.
    pub fn claim(&self, id: &BlobId) -> Result<bool> {
        if self.shared.failed.load(Ordering::Relaxed) {
            return Err(stopped());
        }
        Ok(!self.index.contains_live(id) && self.seen.lock().expect("seen").insert(*id))
    }

    /// Stores a blob this writer claimed ([`BlobWriter::claim`]): compresses
    /// and seals it in the calling thread and adds it to a pack.
    pub fn store(&self, kind: BlobKind, id: BlobId, data: &[u8]) -> Result<()> {
        if self.dry_run {
            let stored = crate::format::compress(data, self.repo.compression()).len()
                + crate::crypto::SEAL_OVERHEAD;
            match kind {
                BlobKind::Data => self.data_blobs.fetch_add(1, Ordering::Relaxed),
                BlobKind::Tree => self.tree_blobs.fetch_add(1, Ordering::Relaxed),
            };
            self.bytes_raw
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            self.bytes_stored
                .fetch_add(stored as u64, Ordering::Relaxed);
            return Ok(());
        }
        if data.len() > crate::format::pack::MAX_BLOB_SIZE as usize {
            return Err(Error::InvalidInput(format!(
                "a {kind:?} blob of {} bytes is larger than the format allows (1 GiB)",
                data.len()
            )));
        }
        let raw_length = u32::try_from(data.len()).expect("MAX_BLOB_SIZE fits in u32");
        // Seal into this thread's buffer: no allocation per blob.
        thread_local! {
            static SEALED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let mut sealed = SEALED.with(|b| std::mem::take(&mut *b.borrow_mut()));
        crate::format::seal_blob_into(
            &mut sealed,
            self.repo.crypto(),
            &id,
            data,
            self.repo.compression(),
        );
        let result = self.add_sealed(kind, id, &sealed, raw_length, data.len());
        SEALED.with(|b| *b.borrow_mut() = sealed);
        result
    }

    /// Stops the writer with a storage error: it is what the run returns,
    /// and the caller gets [`stopped`] (a storage error must not look like
    /// an error reading the source, which would only skip a file).
    fn stop(&self, e: Error) -> Error {
        self.shared.fail(e);
        stopped()
    }

    fn add_sealed(
        &self,
        kind: BlobKind,
        id: BlobId,
        sealed: &[u8],
        raw_length: u32,
        data_len: usize,
    ) -> Result<()> {
        match kind {
            BlobKind::Data => self.data_blobs.fetch_add(1, Ordering::Relaxed),
            BlobKind::Tree => self.tree_blobs.fetch_add(1, Ordering::Relaxed),
        };
        self.bytes_raw.fetch_add(data_len as u64, Ordering::Relaxed);
        self.bytes_stored
            .fetch_add(sealed.len() as u64, Ordering::Relaxed);
        self.add_to_pack(kind, id, sealed, raw_length)
            .map_err(|e| self.stop(e))
    }

    fn add_to_pack(
        &self,
        kind: BlobKind,
        id: BlobId,
        sealed: &[u8],
        raw_length: u32,
    ) -> Result<()> {
        let mut b = self.builders.lock().expect("builders");
        let slot = &mut b[kind as usize];
        // Close the pack before it would pass the target, so its buffer never
        // grows (and reallocates) beyond the size it was made with.
        if let Some(full) =
            slot.take_if(|p| !p.is_empty() && p.len() + sealed.len() > PACK_TARGET_SIZE)
        {
            // Hand it over while holding the lock: the channel has no buffer,
            // so when every uploader is busy the other workers wait here
            // instead of filling more packs. Memory stays at one pack being
            // filled plus one per uploader.
            self.send(full)?;
        }
        let pack = match slot {
            Some(p) => p,
            // Only now the next buffer: the uploader that took the last pack
            // gave back its buffer before it did (a buffer made before the
            // hand-over would be a third 16 MiB while it waits).
            None => slot.insert(self.start_pack(kind)?),
        };
        if let Err(e) = pack.write_blob(kind, id, sealed, raw_length) {
            // The pack is incomplete: it goes (a staged file is removed),
            // and the run stops with this error.
            *slot = None;
            return Err(pack_error(self.repo, e));
        }
        Ok(())
    }

    /// A pack for blobs of `kind`: staged in the storage where it can be,
    /// else in a recycled or new buffer.
    fn start_pack(&self, kind: BlobKind) -> Result<PackBuilder<Sink<'a>>> {
        let staged = match self.staging {
            true => self.repo.backend().stage(FileType::Pack)?,
            false => None,
        };
        let sink = match staged {
            Some(staged) => Sink::staged(staged),
            None => Sink::Memory(match self.recycled.try_recv() {
                Ok(mut buf) => {
                    buf.clear();
                    buf
                }
                Err(_) if kind == BlobKind::Tree => Vec::with_capacity(1 << 20),
                Err(_) => Vec::with_capacity(PACK_BUFFER_SIZE),
            }),
        };
        PackBuilder::start(sink).map_err(|e| pack_error(self.repo, e))
    }

    fn send(&self, pack: PackBuilder<Sink<'a>>) -> Result<()> {
        let p = pack
            .seal(self.repo.crypto())
            .map_err(|e| pack_error(self.repo, e))?;
        let body = match p.out {
            Sink::Memory(bytes) => Body::Memory(bytes),
            Sink::Staged(w) => Body::Staged(
                w.into_inner()
                    .map_err(|e| pack_error(self.repo, e.into_error()))?,
                p.size,
            ),
        };
        self.tx
            .send((p.id, body, p.blobs))
            .map_err(|_| Error::Refused("uploaders stopped".into()))
    }

    fn flush(&self) -> Result<()> {
        let packs: Vec<PackBuilder<Sink<'a>>> = {
            let mut b = self.builders.lock().expect("builders");
            b.iter_mut().filter_map(Option::take).collect()
        };
        for p in packs.into_iter().filter(|p| !p.is_empty()) {
            self.send(p).map_err(|e| self.stop(e))?;
        }
        Ok(())
    }
}

fn stopped() -> Error {
    Error::Refused("stopped after a storage error".into())
}

/// A pack buffer lent to a request ([`Backend::write_owned`]): given back
/// for reuse when the request drops it, so that uploads do not allocate
/// and free 16 MiB each (glibc's arenas then keep the freed ones).
///
/// [`Backend::write_owned`]: crate::backend::Backend::write_owned
struct Lent {
    buf: Vec<u8>,
    back: Sender<Vec<u8>>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let _ = self.back.try_send(std::mem::take(&mut self.buf));
    }
}

fn pack_error(repo: &Repository, e: std::io::Error) -> Error {
    Error::io(format!("write a pack to {}", repo.backend().location()), e)
}

fn write_index(repo: &Repository, packs: Vec<IndexPack>, shared: &Shared) -> Result<()> {
    if packs.is_empty() {
        return Ok(());
    }
    let file = IndexFile {
        version: VERSION,
        supersedes: Vec::new(),
        packs,
    };
    let id = repo.write_file(&file)?;
    repo.note_indexed(id, &file);
    shared.index_files.lock().expect("index files").push(id);
    Ok(())
}

fn uploader(
    repo: &Repository,
    rx: Receiver<Finished<'_>>,
    recycle: Sender<Vec<u8>>,
    shared: &Shared,
) {
    for (id, body, blobs) in rx {
        if shared.failed.load(Ordering::Relaxed) {
            continue; // drain, so that senders never block forever (a staged file goes)
        }
        let (size, written) = match body {
            // Lent to the backend: one that sends it as it is (S3, the
            // server) takes it without a copy, and it comes back for the
            // next pack once dropped.
            Body::Memory(bytes) => {
                let size = bytes.len() as u64;
                let owned = bytes::Bytes::from_owner(Lent {
                    buf: bytes,
                    back: recycle.clone(),
                });
                (
                    size,
                    repo.backend()
                        .write_owned(FileType::Pack, &id.to_hex(), owned),
                )
            }
            Body::Staged(staged, size) => (size, staged.commit(&id.to_hex())),
        };
        if let Err(e) = written {
            shared.fail(e);
            continue;
        }
        shared.packs.fetch_add(1, Ordering::Relaxed);
        let batch = {
            let mut p = shared.pending.lock().expect("pending");
            let mut since = shared.pending_since.lock().expect("pending since");
            p.push(IndexPack { id, size, blobs });
            let oldest = *since.get_or_insert_with(std::time::Instant::now);
            if p.len() >= PACKS_PER_INDEX || oldest.elapsed() >= INDEX_INTERVAL {
                *since = None;
                std::mem::take(&mut *p)
            } else {
                Vec::new()
            }
        };
        if let Err(e) = write_index(repo, batch, shared) {
            shared.fail(e);
        }
    }
}

impl Repository {
    /// Runs `f` with a [`BlobWriter`]; when `f` returns, every blob it added
    /// is in a durable pack listed in a durable index file, so the caller may
    /// then write a snapshot that refers to them.
    ///
    /// On error, packs already written are still indexed (so a retry reuses
    /// them) and the error is returned; the caller must not write a snapshot.
    pub fn write_blobs<R>(
        &self,
        f: impl FnOnce(&BlobWriter<'_>) -> Result<R>,
    ) -> Result<(R, WriterStats)> {
        self.write_blobs_with(false, f)
    }

    /// [`Repository::write_blobs`], or with `dry_run` a writer that only
    /// counts what it would store.
    pub fn write_blobs_with<R>(
        &self,
        dry_run: bool,
        f: impl FnOnce(&BlobWriter<'_>) -> Result<R>,
    ) -> Result<(R, WriterStats)> {
        self.write_blobs_inner(dry_run, self.index()?, f)
    }

    /// [`Repository::write_blobs`] for prune's repacking: blobs are stored
    /// again even though the index has them (in packs about to go).
    pub fn rewrite_blobs<R>(
        &self,
        f: impl FnOnce(&BlobWriter<'_>) -> Result<R>,
    ) -> Result<(R, WriterStats)> {
        self.write_blobs_inner(false, Arc::new(Index::default()), f)
    }

    fn write_blobs_inner<R>(
        &self,
        dry_run: bool,
        index: Arc<Index>,
        f: impl FnOnce(&BlobWriter<'_>) -> Result<R>,
    ) -> Result<(R, WriterStats)> {
        let shared = Shared::default();
        // Whether packs are staged decides how many may wait for the
        // uploaders: in memory none (the sender waits, so memory stays at
        // one pack per uploader), staged a few, so that the readers go on
        // while the uploader fsyncs the last pack. The staged file of this
        // question is the first data pack's.
        // A storage that cannot stage now is written to from memory (its
        // error, if it is one, comes with the first pack written).
        let first = match dry_run {
            true => None,
            false => self.backend().stage(FileType::Pack).ok().flatten(),
        };
        let staging = first.is_some();
        let first = first
            .map(|f| PackBuilder::start(Sink::staged(f)))
            .transpose()
            .map_err(|e| pack_error(self, e))?;
        let waiting = if staging { STAGED_WAITING } else { 0 };
        let (tx, rx) = crossbeam_channel::bounded::<Finished>(waiting);
        let (recycle, recycled) = crossbeam_channel::bounded::<Vec<u8>>(1);
        let (result, stats) = std::thread::scope(|s| {
            for _ in 0..self.backend().connections().max(1) {
                let rx = rx.clone();
                let shared = &shared;
                let recycle = recycle.clone();
                s.spawn(move || uploader(self, rx, recycle, shared));
            }
            drop(rx);
            let writer = BlobWriter {
                repo: self,
                index,
                seen: Mutex::new(HashSet::default()),
                builders: Mutex::new([first, None]),
                staging,
                tx,
                recycled,
                shared: &shared,
                dry_run,
                data_blobs: AtomicU64::new(0),
                tree_blobs: AtomicU64::new(0),
                bytes_raw: AtomicU64::new(0),
                bytes_stored: AtomicU64::new(0),
            };
            let result = f(&writer).and_then(|r| writer.flush().map(|()| r));
            let stats = WriterStats {
                data_blobs: writer.data_blobs.load(Ordering::Relaxed),
                tree_blobs: writer.tree_blobs.load(Ordering::Relaxed),
                bytes_raw: writer.bytes_raw.load(Ordering::Relaxed),
                bytes_stored: writer.bytes_stored.load(Ordering::Relaxed),
                packs: 0,
                index_files: Vec::new(),
            };
            drop(writer); // closes the channel; the scope joins the uploaders
            (result, stats)
        });
        // Index what was written, even after an error, so that the next run reuses it.
        let rest = std::mem::take(&mut *shared.pending.lock().expect("pending"));
        let index_result = write_index(self, rest, &shared);
        if let Some(e) = shared.error.lock().expect("error").take() {
            return Err(e);
        }
        let r = result?;
        index_result?;
        let stats = WriterStats {
            packs: shared.packs.load(Ordering::Relaxed),
            index_files: shared.index_files.lock().expect("index files").clone(),
            ..stats
        };
        Ok((r, stats))
    }
}
