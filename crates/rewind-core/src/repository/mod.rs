//! A repository: a backend plus its keys, config and index.

mod file_set;
mod index;
mod running;
mod table;
mod writer;

pub(crate) use file_set::FileSet;
pub(crate) use index::radix_bits;
pub use index::{Index, IndexEntry};
pub use running::{pid_namespace, Running, RunningMarkers, CLOCK_SKEW, REFRESH_EVERY, STALE_AFTER};
pub(crate) use table::unlinked_file;
pub use writer::{BlobWriter, WriterStats, COMPRESSION_LEVEL, PACKS_PER_INDEX};

use std::sync::{Arc, OnceLock};

use rayon::prelude::*;

use crate::backend::{delete_unless_kept, Backend, FileType, WriteOutcome};
use crate::crypto::{Crypto, Domain, KdfParams, KeyFile};
use crate::error::{Error, Result};
use crate::format::config::Config;
use crate::format::index::{IndexFile, IndexPack};
use crate::format::pack::PackHeader;
use crate::format::policy::{CopyTarget, PolicyFile};
use crate::format::prune::PruneState;
use crate::format::snapshot::SnapshotFile;
use crate::format::tree::Tree;
use crate::format::RepoFile;
use crate::id::{BlobId, Hash, IndexId, KeyId, PackId, SnapshotId};

/// Who is adding a key (recorded in the key file, informational).
#[derive(Clone, Debug, Default)]
pub struct KeyOwner {
    /// Host name.
    pub hostname: String,
    /// User name.
    pub username: String,
}

/// One index file read: opened, or damaged (its name and why).
enum OpenedIndex {
    File(IndexId, IndexFile),
    Damaged(String, String),
}

/// Index files read at once while the index is loaded
/// ([`Repository::load_index_batched`]): enough to keep every connection
/// of a remote store busy, few enough that memory holds the merged index
/// and not every file besides.
const INDEX_BATCH: usize = 16;

/// An open repository.
#[derive(Debug)]
pub struct Repository {
    backend: Arc<dyn Backend>,
    crypto: Crypto,
    config: Config,
    key_id: KeyId,
    index: OnceLock<Arc<Index>>,
    /// What this handle's writers indexed after `index` was loaded: kept
    /// current by the writer, so a backup's scan and its copy find the new
    /// blobs without reading any index file again.
    written: std::sync::RwLock<Index>,
    /// When this handle was made: before it read anything that prune may
    /// change (a running marker's start, docs/DESIGN.md §8c).
    opened: jiff::Timestamp,
    /// The superseded snapshot copies the last listing set aside (copy,
    /// identity), so that forget need not read every snapshot again.
    superseded: std::sync::Mutex<Option<Vec<(SnapshotId, SnapshotId)>>>,
    /// Where the index may spill to an on-disk table, and the memory it may
    /// take before it does (docs/DESIGN.md §6b); None: always in memory.
    index_table: Option<(std::path::PathBuf, u64)>,
    /// The zstd level of the blobs this handle writes
    /// ([`crate::format::NO_COMPRESSION`]: stored raw).
    compression: i32,
}

/// Readable index files, and damaged ones as (name, error).
pub type IndexFiles = (Vec<(IndexId, IndexFile)>, Vec<(String, String)>);

/// Readable snapshots (oldest first) and unreadable snapshot files (name, error).
pub type SnapshotList = (Vec<(SnapshotId, SnapshotFile)>, Vec<(String, Error)>);

/// Files of a kind where the newest readable one is in force (settings,
/// prune states), as read by [`Repository::side_files`].
#[derive(Debug)]
pub struct SideFiles<T> {
    /// The newest readable file's contents.
    pub newest: Option<T>,
    /// Every file listed.
    pub files: Vec<crate::backend::FileInfo>,
    /// Files that could not be opened: (name, why).
    pub damaged: Vec<(String, Error)>,
}

/// A key as listed by [`Repository::keys`].
#[derive(Clone, Debug)]
pub struct KeyInfo {
    /// Key file name.
    pub id: KeyId,
    /// The key file (without secrets in clear).
    pub file: KeyFile,
    /// True for the key this repository was opened with.
    pub current: bool,
}

/// How [`Repository::init_with`] creates a repository.
#[derive(Clone, Debug, Default)]
pub struct InitOptions {
    /// Make the storage retain every file of the repository, config and
    /// keys included, for this long after it is written (S3 Object Lock,
    /// docs/DESIGN.md §2). Storage that cannot lock refuses, before
    /// anything is written.
    pub object_lock: Option<crate::backend::ObjectLock>,
}

impl Repository {
    /// Creates a repository protected by `password`, with the default
    /// [`InitOptions`].
    pub fn init(
        backend: Arc<dyn Backend>,
        password: &[u8],
        kdf: KdfParams,
        owner: &KeyOwner,
    ) -> Result<Self> {
        Self::init_with(backend, password, kdf, owner, &InitOptions::default())
    }

    /// Creates a repository protected by `password`: only where nothing is
    /// ([`crate::backend::check_vacant`]); then sets the storage's object
    /// lock, if asked, before the first file, so that every file is
    /// retained; then writes the key, and the config last.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty password, or object locking
    /// asked of storage that cannot lock; [`Error::AlreadyExists`] or
    /// [`Error::Refused`] for a location that is not vacant.
    pub fn init_with(
        backend: Arc<dyn Backend>,
        password: &[u8],
        kdf: KdfParams,
        owner: &KeyOwner,
        opts: &InitOptions,
    ) -> Result<Self> {
        if password.is_empty() {
            return Err(Error::InvalidInput(
                "an empty password is not allowed".into(),
            ));
        }
        // Never among other files, nor over another program's repository.
        crate::backend::check_vacant(&*backend)?;
        if let Some(lock) = opts.object_lock {
            // Before the first file: the config and keys are retained too.
            backend.set_object_lock(lock)?;
        }
        backend.create()?;
        let opened = jiff::Timestamp::now();
        let mut crypto = Crypto::generate();
        let config = Config::new();
        let bytes = serde_json::to_vec_pretty(&config).expect("config serializes");
        // The config is stored in clear: the master key holds its hash.
        crypto.bind_config(&bytes);
        // Keys first, config last: a repository without config is not yet one.
        let key_id = write_key(&*backend, &crypto, password, kdf, owner)?;
        if backend.write(FileType::Config, "config", &bytes)? == WriteOutcome::AlreadyExists {
            // Another init won the race: its config stays, our key (bound
            // to our config) goes, and this one did not create anything.
            let _ = backend.delete(FileType::Key, &key_id.to_hex());
            return Err(Error::AlreadyExists(backend.location()));
        }
        Ok(Repository::assemble(
            backend, crypto, config, key_id, opened,
        ))
    }

    /// Opens the repository with a master key kept by the key agent
    /// (`rewind unlock`) instead of a password: only if the key file it was
    /// unlocked with is still there (a removed password stops opening it)
    /// and the key is bound to this repository's config. None when either
    /// fails: the caller asks for the password.
    pub fn open_with_key(
        backend: Arc<dyn Backend>,
        key: crate::crypto::MasterKey,
        key_file: &str,
    ) -> Result<Option<Self>> {
        let opened = jiff::Timestamp::now();
        let (config, config_bytes) = Self::read_config(&*backend)?;
        if key.config.as_deref() != Some(Hash::of(&config_bytes).to_hex().as_str()) {
            return Ok(None);
        }
        let Ok(key_id) = key_file.parse::<Hash>() else {
            return Ok(None);
        };
        match backend.read(FileType::Key, &key_id.to_hex()) {
            Ok(b) if Hash::of(&b) == key_id => {}
            Ok(_) | Err(Error::Missing { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
        let crypto = Crypto::new(key)?;
        Ok(Some(Repository::assemble(
            backend,
            crypto,
            config,
            KeyId(key_id),
            opened,
        )))
    }

    /// A handle on an opened repository (nothing loaded yet).
    fn assemble(
        backend: Arc<dyn Backend>,
        crypto: Crypto,
        config: Config,
        key_id: KeyId,
        opened: jiff::Timestamp,
    ) -> Self {
        Repository {
            backend,
            crypto,
            config,
            key_id,
            index: OnceLock::new(),
            written: Default::default(),
            opened,
            superseded: std::sync::Mutex::new(None),
            index_table: None,
            compression: writer::COMPRESSION_LEVEL,
        }
    }

    /// Reads and checks the config without any password: tells whether a
    /// repository of a supported version is there.
    ///
    /// # Errors
    /// [`Error::NoRepository`], [`Error::UnsupportedVersion`].
    pub fn probe(backend: &dyn Backend) -> Result<Config> {
        Self::read_config(backend).map(|(c, _)| c)
    }

    /// The config, checked, and its stored bytes.
    fn read_config(backend: &dyn Backend) -> Result<(Config, Vec<u8>)> {
        let location = backend.location();
        match backend.read(FileType::Config, "config") {
            Ok(b) => Config::parse(&b, &location).map(|c| (c, b)),
            Err(Error::Missing { .. }) => Err(Error::NoRepository {
                location,
                reason: "it has no config file".into(),
            }
            .with_remedy(crate::error::Remedy::Init)),
            Err(Error::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotADirectory => {
                Err(Error::NoRepository {
                    location,
                    reason: "it is not a directory".into(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Opens a repository with a password.
    ///
    /// # Errors
    /// [`Error::NoRepository`] when there is no config, [`Error::UnsupportedVersion`]
    /// for a newer format, [`Error::WrongPassword`] when no key opens.
    pub fn open(backend: Arc<dyn Backend>, password: &[u8]) -> Result<Self> {
        let opened = jiff::Timestamp::now();
        let location = backend.location();
        let (config, config_bytes) = Self::read_config(&*backend)?;
        let keys = backend.list(FileType::Key)?;
        if keys.is_empty() {
            return Err(Error::NoRepository {
                location,
                reason: "it has no key files".into(),
            });
        }
        // A damaged key file must not lock out the others, and must not
        // pass for a wrong password either: it is named.
        let mut damaged = Vec::new();
        for k in &keys {
            let bytes = match backend.read(FileType::Key, &k.name) {
                Ok(b) => b,
                Err(Error::Missing { .. }) => continue, // removed meanwhile
                Err(e) => return Err(e),
            };
            let tried = if Hash::of(&bytes).to_hex() != k.name {
                Err("its content does not match its name".to_string())
            } else {
                serde_json::from_slice::<KeyFile>(&bytes)
                    .map_err(|e| format!("not a key file ({e})"))
                    .and_then(|kf| kf.unwrap_key(password, &k.name).map_err(|e| e.to_string()))
            };
            let crypto = match tried {
                Ok(Some(crypto)) => crypto,
                Ok(None) => continue,
                Err(why) => {
                    damaged.push(format!("keys/{}: {why}", k.name));
                    continue;
                }
            };
            check_config_binding(&crypto, &config_bytes, &location)?;
            return Ok(Repository::assemble(
                backend,
                crypto,
                config,
                KeyId(k.name.parse()?),
                opened,
            ));
        }
        if !damaged.is_empty() && damaged.len() == keys.len() {
            return Err(Error::corrupt(
                "key",
                "files",
                format!(
                    "no key file of the repository can be read: {}; restore them from a copy",
                    damaged.join("; ")
                ),
            ));
        }
        Err(Error::WrongPassword { damaged })
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The keys in use.
    pub fn crypto(&self) -> &Crypto {
        &self.crypto
    }

    /// When this handle was opened (before it read the index).
    pub fn opened(&self) -> jiff::Timestamp {
        self.opened
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Lets the index take at most about `max_memory` bytes while it loads
    /// and use an on-disk table in `cache/index/<repository id>` beyond
    /// that (docs/DESIGN.md §6b). Without it the index is held in memory
    /// whatever its size.
    pub fn set_index_table(&mut self, cache: &std::path::Path, max_memory: u64) {
        self.index_table = Some((cache.join("index").join(&self.config.id), max_memory));
    }

    /// Sets the zstd level of the blobs written from now on (1 to 19, or
    /// [`crate::format::NO_COMPRESSION`]). Readers need not know it: each
    /// blob says whether it is compressed.
    pub fn set_compression(&mut self, level: i32) {
        self.compression = level;
    }

    /// The zstd level of the blobs written ([`Repository::set_compression`]).
    pub fn compression(&self) -> i32 {
        self.compression
    }

    /// The memory budget given to [`Repository::set_index_table`], if any:
    /// what commands that hold more than the index (check, prune) keep
    /// within by reading index files again instead of holding them.
    pub fn memory_budget(&self) -> Option<u64> {
        self.index_table.as_ref().map(|(_, b)| *b)
    }

    /// The index, loaded on first use.
    pub fn index(&self) -> Result<Arc<Index>> {
        if let Some(i) = self.index.get() {
            return Ok(i.clone());
        }
        let loaded = Arc::new(self.load_index_batched()?);
        Ok(self.index.get_or_init(|| loaded).clone())
    }

    /// Replaces the index files `old` by new ones listing `packs`
    /// (`per_file` packs each, `supersedes` = `old`): the new files are
    /// durable before any old one is deleted, so a crash in between leaves
    /// both (a harmless superset). An old file that the storage refuses to
    /// delete (the rewind server's minimum delete age) stays: it lists
    /// nothing the new files lack, and prune keeps the packs it lists
    /// (`prune::retained_packs`; prune also leaves every pack a kept file
    /// lists). Returns (written, removed, kept).
    pub fn replace_index(
        &self,
        packs: &[crate::format::index::IndexPack],
        old: &[IndexId],
        per_file: usize,
    ) -> Result<(u64, u64, Vec<IndexId>)> {
        let mut written = 0;
        for chunk in packs.chunks(per_file.max(1)) {
            self.write_index_file(chunk.to_vec(), old)?;
            written += 1;
        }
        let (removed, kept) = self.remove_index_files(old)?;
        Ok((written, removed, kept))
    }

    /// Stores an index file listing `packs` that replaces the files `old`
    /// (the first half of [`Repository::replace_index`], for a caller that
    /// writes the new files as it goes).
    pub fn write_index_file(
        &self,
        packs: Vec<crate::format::index::IndexPack>,
        old: &[IndexId],
    ) -> Result<()> {
        let file = IndexFile {
            version: crate::format::index::VERSION,
            supersedes: old.to_vec(),
            packs,
        };
        self.write_file(&file)?;
        Ok(())
    }

    /// Deletes the index files `old` once new ones list what they list (the
    /// second half of [`Repository::replace_index`]). Returns (removed,
    /// kept by the storage).
    pub fn remove_index_files(&self, old: &[IndexId]) -> Result<(u64, Vec<IndexId>)> {
        let mut removed = 0;
        let mut kept = Vec::new();
        for id in old {
            match delete_unless_kept(&*self.backend, FileType::Index, &id.to_hex())? {
                None => removed += 1,
                Some(_) => kept.push(*id),
            }
        }
        Ok((removed, kept))
    }

    /// Forgets the loaded index, so that the next use reads the index files
    /// again.
    pub fn refresh_index(&mut self) {
        self.index = OnceLock::new();
        self.written = Default::default();
    }

    /// The index and the index files it was made of, read in the one order
    /// that is safe beside a prune: the marks first (a pack marked after
    /// this read is one this process may reuse, and prune then waits for
    /// its running marker), then the index files.
    fn load_index(&self) -> Result<(Index, IndexFiles)> {
        let marks = self.prune_state()?.0.map(|s| s.marks).unwrap_or_default();
        let (files, damaged) = self.read_index_files()?;
        let mut index = Index::with_marked(marks.into_iter().map(|m| m.pack).collect());
        for (id, f) in &files {
            index.add_file(*id, f);
        }
        for (name, e) in &damaged {
            index.add_damaged(name.clone(), e.clone());
        }
        index.seal();
        Ok((index, (files, damaged)))
    }

    /// The index alone (no index file kept): the files are read and opened
    /// in parallel a batch at a time, merged in name order (the order of
    /// [`Repository::read_index_files`], so the same copy of a duplicate
    /// blob comes first) and dropped, so that memory holds the merged index
    /// and one batch rather than every file at once. Marks first, as in
    /// [`Repository::load_index`].
    ///
    /// With [`Repository::set_index_table`], an index over the budget goes
    /// to an on-disk table, and a later load starts from that table and
    /// reads only the index files written since; if the table cannot be
    /// written (a full disk, say), the index is loaded again in memory.
    fn load_index_batched(&self) -> Result<Index> {
        let marks = self.prune_state()?.0.map(|s| s.marks).unwrap_or_default();
        // With a table: twice (a table found damaged is removed by the first
        // try, and the second builds a new one within the budget), then in
        // memory if the table still cannot be used.
        let table_tries = if self.index_table.is_some() { 2 } else { 0 };
        let key = self.crypto.local_key("rewind 2026-11 index table");
        for attempt in 0..=table_tries {
            let mut index = Index::with_marked(marks.iter().map(|m| m.pack).collect());
            let (mut first, mut skip) = (None, Default::default());
            if let (true, Some((dir, budget))) = (attempt < table_tries, &self.index_table) {
                let listed = self.backend.list(FileType::Index)?;
                let names = listed.iter().map(|f| f.name.clone()).collect();
                skip = index.use_table(dir.clone(), key, *budget, &names);
                first = Some(listed);
            }
            self.each_index_file(INDEX_BATCH, first, skip, |opened| match opened {
                OpenedIndex::File(id, f) => index.add_file(id, &f),
                OpenedIndex::Damaged(name, e) => index.add_damaged(name, e),
            })?;
            index.seal();
            if attempt == table_tries || index.table_error().is_none() {
                return Ok(index);
            }
            // Dropped before the next try: it may hold much.
        }
        unreachable!("the last attempt returns")
    }

    /// Every index file, read and opened; the damaged ones as (name, error).
    /// Also sets the merged index if it was not loaded yet, so that a caller
    /// that needs both reads the files once. (Check and prune hold them
    /// only when they fit the memory budget: `FileSet`.)
    pub fn index_files(&self) -> Result<IndexFiles> {
        let (index, files) = self.load_index()?;
        let _ = self.index.set(Arc::new(index));
        Ok(files)
    }

    /// Records an index file this handle's writer stored: its blobs can be
    /// read at once, without loading the index again.
    pub(crate) fn note_indexed(&self, id: IndexId, file: &IndexFile) {
        if self.index.get().is_some() {
            self.written
                .write()
                .expect("written index")
                .add_file(id, file);
        }
    }

    /// Where a blob is: the loaded index, or what this handle wrote since.
    pub fn locate(&self, id: &BlobId) -> Result<Option<(PackId, IndexEntry)>> {
        // No Arc clone per blob (this runs for every blob read).
        let index = match self.index.get() {
            Some(i) => i,
            None => {
                self.index()?;
                self.index.get().expect("just loaded")
            }
        };
        if let Some(e) = index.get(id) {
            return Ok(Some((index.pack_id(&e), e)));
        }
        let written = self.written.read().expect("written index");
        if let Some(e) = written.get(id) {
            return Ok(Some((written.pack_id(&e), e)));
        }
        if let Some(path) = index.damaged_table() {
            return Err(Error::corrupt(
                "index table",
                path.display(),
                "failed authentication and was removed (the next command builds it again from \
                 the repository's index files): run the command again",
            ));
        }
        Ok(None)
    }

    /// The newest readable prune state (None if no prune ran) and every
    /// prune state file. Damaged files are skipped here (see
    /// [`Repository::side_files`] for them): losing a state only delays
    /// deletions, because prune marks the packs again.
    pub fn prune_state(&self) -> Result<(Option<PruneState>, Vec<crate::backend::FileInfo>)> {
        let r = self.side_files(|s: &PruneState| s.time)?;
        Ok((r.newest, r.files))
    }

    /// Reads the files of a kind of which the newest readable one is in
    /// force (settings, prune states); `time` tells a file's time. Damaged files never hide the others and never
    /// stop a reader (the caller decides whether to report them); a new
    /// file can always be written over them. A file that vanishes between
    /// the listing and its read was replaced meanwhile: list again, so the
    /// newest is never missed.
    pub fn side_files<T: RepoFile>(
        &self,
        time: impl Fn(&T) -> jiff::Timestamp,
    ) -> Result<SideFiles<T>> {
        let t = T::TYPE;
        for _ in 0..5 {
            let files = self.backend.list(t)?;
            let mut newest: Option<(jiff::Timestamp, T)> = None;
            let mut damaged = Vec::new();
            let mut raced = false;
            for f in &files {
                let bytes = match self.backend.read(t, &f.name) {
                    Ok(b) => b,
                    Err(Error::Missing { .. }) => {
                        raced = true;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                match T::open(&self.crypto, &f.name, &bytes) {
                    Ok(v) => {
                        let at = time(&v);
                        if newest.as_ref().is_none_or(|(n, _)| at > *n) {
                            newest = Some((at, v));
                        }
                    }
                    Err(e) => damaged.push((f.name.clone(), e)),
                }
            }
            if !raced {
                return Ok(SideFiles {
                    newest: newest.map(|(_, v)| v),
                    files,
                    damaged,
                });
            }
        }
        Err(Error::Refused(format!(
            "the {} files keep changing while they are read; try again",
            t.what()
        )))
    }

    /// Reads a pack's header with two ranged reads (its last 4 bytes, then
    /// the sealed header) and checks that it authenticates and that its
    /// blobs fill the pack: the pack's own index entry.
    pub fn read_pack_header(&self, name: &str, size: u64) -> Result<IndexPack> {
        let id: PackId = name.parse()?;
        if size < 4 {
            return Err(Error::corrupt("pack", name, "too short"));
        }
        let trailer = self
            .backend()
            .read_range(FileType::Pack, name, size - 4, 4)?;
        let short = || Error::corrupt("pack", name, "the storage returned a short read");
        let trailer: [u8; 4] = trailer
            .get(..4)
            .and_then(|t| t.try_into().ok())
            .ok_or_else(short)?;
        let hlen = PackHeader::header_len(trailer);
        if u64::from(hlen) + 4 > size {
            return Err(Error::corrupt("pack", name, "header length exceeds pack"));
        }
        let sealed =
            self.backend()
                .read_range(FileType::Pack, name, size - 4 - u64::from(hlen), hlen)?;
        let header = PackHeader::parse_header(self.crypto(), &id, size, &sealed)?;
        Ok(IndexPack {
            id,
            size,
            blobs: header.blobs,
        })
    }

    /// Reads one index file (its name checked against its content).
    pub fn read_index_file(&self, id: &IndexId) -> Result<IndexFile> {
        self.read_file(&id.to_hex())
    }

    /// Reads, checks and opens one repository file of type `T`.
    pub fn read_file<T: RepoFile>(&self, name: &str) -> Result<T> {
        let bytes = self.backend.read(T::TYPE, name)?;
        T::open(&self.crypto, name, &bytes)
    }

    /// Seals and stores a repository file (write-if-absent under the hash
    /// of its bytes); returns its name.
    pub fn write_file<T: RepoFile>(&self, file: &T) -> Result<T::Id> {
        let (id, bytes) = file.seal(&self.crypto);
        let name = Hash::of(&bytes).to_hex();
        self.backend.write(T::TYPE, &name, &bytes)?;
        Ok(id)
    }

    fn read_index_files(&self) -> Result<IndexFiles> {
        let mut ok = Vec::new();
        let mut damaged = Vec::new();
        self.each_index_file(
            usize::MAX,
            None,
            Default::default(),
            |opened| match opened {
                OpenedIndex::File(id, f) => ok.push((id, f)),
                OpenedIndex::Damaged(name, e) => damaged.push((name, e)),
            },
        )?;
        // One order whatever the listing's: which copy of a duplicate blob
        // readers try first does not depend on the storage.
        ok.sort_by_key(|(id, _)| *id);
        Ok((ok, damaged))
    }

    /// Reads and opens every index file, `batch` at a time in name order,
    /// handing each to `f`. A file removed between the listing and its read
    /// (a prune or repair replaced it) sends the listing round again for
    /// the files that replaced it (up to three rounds), so that a load
    /// beside a prune never misses their blobs.
    ///
    /// `first` is the first listing if the caller made it; the files named
    /// in `skip` are not read.
    fn each_index_file(
        &self,
        batch: usize,
        mut first: Option<Vec<crate::backend::FileInfo>>,
        skip: std::collections::HashSet<String>,
        mut f: impl FnMut(OpenedIndex),
    ) -> Result<()> {
        let mut seen = skip;
        for _ in 0..3 {
            let mut todo = match first.take() {
                Some(l) => l,
                None => self.backend.list(FileType::Index)?,
            };
            todo.retain(|x| seen.insert(x.name.clone()));
            if todo.is_empty() {
                break;
            }
            // Hex names sort as the ids they spell.
            todo.sort_by(|a, b| a.name.cmp(&b.name));
            let mut gone = false;
            for chunk in todo.chunks(batch.max(1)) {
                let (opened, missing) = self.open_index_files(chunk)?;
                gone |= missing;
                opened.into_iter().for_each(&mut f);
            }
            if !gone {
                break;
            }
        }
        Ok(())
    }

    /// Reads and opens index files in parallel. A damaged one hides only
    /// its packs' blobs: restores of other files go on, backups store those
    /// blobs again, and check reports it. One removed since the listing (by
    /// a prune or repair) is left out: its packs are in the files that
    /// replaced it. Other errors (storage) stop.
    fn open_index_files(
        &self,
        listed: &[crate::backend::FileInfo],
    ) -> Result<(Vec<OpenedIndex>, bool)> {
        let parsed: Vec<(String, Result<(IndexId, IndexFile)>)> = listed
            .par_iter()
            .map(|f| {
                let r = f
                    .name
                    .parse()
                    .and_then(|id: IndexId| Ok((id, self.read_file(&f.name)?)));
                (f.name.clone(), r)
            })
            .collect();
        let mut out = Vec::with_capacity(parsed.len());
        let mut missing = false;
        for (name, r) in parsed {
            match r {
                Ok((id, f)) => out.push(OpenedIndex::File(id, f)),
                Err(e @ Error::Corrupt { .. }) => {
                    out.push(OpenedIndex::Damaged(name, e.to_string()))
                }
                Err(Error::Missing { .. }) => missing = true,
                Err(e) => return Err(e),
            }
        }
        Ok((out, missing))
    }

    /// Reads, authenticates, decompresses and verifies one blob. When the
    /// copy the index points at is missing or fails authentication, every
    /// other known copy is tried (an index file that lies, or a damaged
    /// pack, cannot hide a good copy); the first error is returned if none
    /// reads.
    pub fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        let Some((pack, e)) = self.locate(id)? else {
            return Err(match self.index()?.damaged().first() {
                Some((name, _)) => Error::corrupt(
                    "index",
                    name,
                    format!("cannot be read, so blob {id} cannot be located"),
                )
                .with_remedy(crate::error::Remedy::Check),
                None => Error::Missing {
                    what: "blob",
                    id: id.to_hex(),
                },
            });
        };
        let first = match self.read_blob_at(id, &pack, &e) {
            Ok(data) => return Ok(data),
            Err(err) => err,
        };
        let index = self.index()?;
        for alt in index.alternates(id) {
            if let Ok(data) = self.read_blob_at(id, &index.pack_id(alt), alt) {
                return Ok(data);
            }
        }
        Err(first)
    }

    /// Reads one copy of a blob. A tree blob comes from the local cache of
    /// a remote repository where it is there and opens (else from its
    /// pack, and into the cache).
    fn read_blob_at(&self, id: &BlobId, pack: &PackId, e: &IndexEntry) -> Result<Vec<u8>> {
        let tree = e.kind == crate::format::pack::BlobKind::Tree;
        let hex = tree.then(|| id.to_hex());
        if let Some(hex) = &hex {
            if let Some(sealed) = self.backend.cached_tree(hex) {
                match self.open_blob(id, e.raw_length, &sealed, "the local cache") {
                    Ok(data) => return Ok(data),
                    Err(_) => self.backend.cache_tree(hex, None),
                }
            }
        }
        let sealed = self.backend.read_range(
            FileType::Pack,
            &pack.to_hex(),
            u64::from(e.offset),
            e.length,
        )?;
        let data = self.open_blob(id, e.raw_length, &sealed, &pack.to_hex())?;
        if let Some(hex) = &hex {
            self.backend.cache_tree(hex, Some(&sealed));
        }
        Ok(data)
    }

    /// Reads several blobs in order, calling `f` with each plaintext.
    /// Blobs that lie next to each other in one pack are fetched with one
    /// read (up to 4 MiB on a local disk, 16 MiB remote), so a file stored in
    /// order is read sequentially.
    pub fn read_blobs(
        &self,
        ids: &[BlobId],
        mut f: impl FnMut(&BlobId, Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        // A local disk reads 4 MiB as fast per byte as 16, and each thread
        // holds one read: 4 MiB keeps a restore's memory 20 MiB lower
        // (docs/BENCHMARKS.md). Remote storage pays per request: 16 MiB.
        let max_read: u64 = if self.backend.connections() <= 1 {
            4 << 20
        } else {
            16 << 20
        };
        let mut i = 0;
        while i < ids.len() {
            let Some((pack, first)) = self.locate(&ids[i])? else {
                // Let read_blob produce the precise error.
                self.read_blob(&ids[i])?;
                unreachable!("read_blob fails for a blob missing from the index");
            };
            let start = u64::from(first.offset);
            let mut end = start + u64::from(first.length);
            let mut run = vec![(ids[i], first)];
            let mut j = i + 1;
            while j < ids.len() {
                match self.locate(&ids[j])? {
                    Some((p, e))
                        if p == pack
                            && u64::from(e.offset) == end
                            && end + u64::from(e.length) - start <= max_read =>
                    {
                        end += u64::from(e.length);
                        run.push((ids[j], e));
                        j += 1;
                    }
                    _ => break,
                }
            }
            let len = u32::try_from(end - start).expect("reads are at most 16 MiB");
            let name = pack.to_hex();
            let bytes = match self.backend.read_range(FileType::Pack, &name, start, len) {
                Ok(b) => b,
                // The pack is gone, or shorter than the index says: each
                // blob on its own, from another copy if this one fails.
                Err(_) => {
                    for (id, _) in &run {
                        f(id, self.read_blob(id)?)?;
                    }
                    i = j;
                    continue;
                }
            };
            for (id, e) in &run {
                let at = (u64::from(e.offset) - start) as usize;
                let data = match sealed_at(&bytes, at, e.length, &name)
                    .and_then(|sealed| self.open_blob(id, e.raw_length, sealed, &name))
                {
                    Ok(data) => data,
                    // Another copy, if one reads.
                    Err(_) => self.read_blob(id)?,
                };
                f(id, data)?;
            }
            i = j;
        }
        Ok(())
    }

    /// Opens a sealed blob read from pack `pack`.
    pub fn open_blob(
        &self,
        id: &BlobId,
        raw_length: u32,
        sealed: &[u8],
        pack: &str,
    ) -> Result<Vec<u8>> {
        let plain = self.crypto.open(Domain::Blob(id), sealed).ok_or_else(|| {
            Error::corrupt("blob", id, format!("fails authentication in pack {pack}"))
        })?;
        let data = crate::format::decompress("blob", id, &plain, raw_length as usize)?;
        if data.len() != raw_length as usize || self.crypto.blob_id(&data) != *id {
            return Err(Error::corrupt(
                "blob",
                id,
                format!("content does not match its id (pack {pack})"),
            ));
        }
        Ok(data)
    }

    /// Reads a tree blob.
    pub fn read_tree(&self, id: &BlobId) -> Result<Tree> {
        let bytes = self.read_blob(id)?;
        Tree::decode(id, &bytes)
    }

    /// Every readable snapshot, oldest first; damaged snapshot files are
    /// left out (see [`Repository::snapshots_checked`]).
    pub fn snapshots(&self) -> Result<Vec<(SnapshotId, SnapshotFile)>> {
        Ok(self.snapshots_checked()?.0)
    }

    /// Every readable snapshot, oldest first, and the snapshot files that
    /// could not be read (name, error).
    pub fn snapshots_checked(&self) -> Result<SnapshotList> {
        let files = self.backend.list(FileType::Snapshot)?;
        let results: Vec<(String, Result<(SnapshotId, SnapshotFile)>)> = files
            .par_iter()
            .map(|f| {
                (
                    f.name.clone(),
                    f.name.parse().and_then(|id| self.read_snapshot(&id)),
                )
            })
            .collect();
        let mut ok = Vec::new();
        let mut damaged = Vec::new();
        for (name, r) in results {
            match r {
                Ok(s) => ok.push(s),
                // Listed, then forgotten by another process: it is gone.
                Err(Error::Missing { .. }) => {}
                Err(e @ Error::Corrupt { .. }) => damaged.push((name, e)),
                Err(e) => return Err(e),
            }
        }
        let adds_only = self.snapshots_of_adders()?;
        let (mut ok, superseded) = split_superseded(ok, &adds_only);
        *self.superseded.lock().expect("superseded") = Some(superseded);
        ok.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok((ok, damaged))
    }

    /// Snapshot files superseded by a later rewrite of the same snapshot
    /// (`protect`, `mark`), left behind because the storage kept them or a
    /// crash came between the write and the delete, with the identity
    /// (`original`, else id) of the snapshot they are copies of, as the
    /// last listing of this handle found them (else read now). `forget`
    /// removes them before the snapshot itself, which would otherwise
    /// come back as its older copy.
    pub fn superseded_snapshots(&self) -> Result<Vec<(SnapshotId, SnapshotId)>> {
        if let Some(known) = self.superseded.lock().expect("superseded").clone() {
            return Ok(known);
        }
        let mut all = Vec::new();
        for f in self.backend.list(FileType::Snapshot)? {
            match f.name.parse().and_then(|id| self.read_snapshot(&id)) {
                Ok(s) => all.push(s),
                Err(Error::Missing { .. } | Error::Corrupt { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(split_superseded(all, &self.snapshots_of_adders()?).1)
    }

    /// Snapshot files that the storage says a token that may only add
    /// stored (a backup token of the rewind server): their rewrite claims
    /// count for nothing (DESIGN §3.8).
    pub fn snapshots_of_adders(&self) -> Result<std::collections::HashSet<SnapshotId>> {
        Ok(self
            .backend
            .writers(FileType::Snapshot)?
            .into_iter()
            .filter(|(_, w)| w.adds_only)
            .filter_map(|(name, _)| name.parse().ok())
            .collect())
    }

    /// Reads one snapshot.
    pub fn read_snapshot(&self, id: &SnapshotId) -> Result<(SnapshotId, SnapshotFile)> {
        Ok((*id, self.read_file(&id.to_hex())?))
    }

    /// Stores a snapshot. Call only after its index is durable
    /// (docs/DESIGN.md, "Write ordering").
    pub fn save_snapshot(&self, s: &SnapshotFile) -> Result<SnapshotId> {
        self.write_file(s)
    }

    /// Rewrites a snapshot with another protection (or none). The new
    /// snapshot file is written first and records the old id in `original`;
    /// then the old file is deleted. A crash in between leaves both, which
    /// is harmless (same contents; the protected one keeps it).
    pub fn set_protection(
        &self,
        id: &SnapshotId,
        protection: Option<crate::format::snapshot::Protection>,
    ) -> Result<SnapshotId> {
        self.rewrite_snapshot(id, |snap| snap.protection = protection)
    }

    /// Records a person's verdict on a snapshot's ransomware scan (a
    /// snapshot never scanned gets a scan record holding only the
    /// decision). Like [`Repository::set_protection`], this writes the
    /// snapshot under a new id.
    pub fn set_verdict(
        &self,
        id: &SnapshotId,
        verdict: crate::format::scan::Verdict,
        by: &str,
    ) -> Result<SnapshotId> {
        let overrule = crate::format::scan::Overrule {
            verdict,
            by: by.to_string(),
            time: jiff::Timestamp::now(),
        };
        self.rewrite_snapshot(id, |snap| {
            let scan = snap
                .scan
                .get_or_insert_with(|| crate::format::scan::ScanResult {
                    version: crate::format::scan::VERSION,
                    verdict,
                    score: 0.0,
                    reasons: vec!["not scanned; verdict given by a person".into()],
                    top_paths: Vec::new(),
                    counts: Default::default(),
                    rules: Vec::new(),
                    suspect_keys: Vec::new(),
                    accumulated_from: Vec::new(),
                    overruled: None,
                });
            scan.overruled = Some(overrule);
        })
    }

    /// Writes a changed copy of a snapshot, then removes the old file;
    /// `original` keeps the first id. Returns the new id (the old one if
    /// nothing changed).
    fn rewrite_snapshot(
        &self,
        id: &SnapshotId,
        change: impl FnOnce(&mut SnapshotFile),
    ) -> Result<SnapshotId> {
        if self.backend.adds_only()? {
            // The rewrite would be stored and then count for nothing
            // (split_superseded): say so instead of exiting 0.
            return Err(Error::Refused(format!(
                "{} was opened with a token that may only add files (a backup token); protect, unprotect and mark rewrite a snapshot, which only counts when an admin token stores it: run this with the repository's admin token",
                self.backend.location()
            )));
        }
        let (_, mut snap) = self.read_snapshot(id)?;
        let before = snap.clone();
        change(&mut snap);
        if snap == before {
            return Ok(*id);
        }
        snap.original = Some(snap.original.unwrap_or(*id));
        snap.rewritten = Some(jiff::Timestamp::now());
        let new = self.save_snapshot(&snap)?;
        if new != *id {
            // Kept by the storage for now (the rewind server's minimum
            // delete age), or not ours to delete (its backup token):
            // listings hide it as superseded, and a later forget (with a
            // token that may delete) removes it.
            match delete_unless_kept(&*self.backend, FileType::Snapshot, &id.to_hex()) {
                Err(e) if !crate::backend::is_not_permitted(&e) => return Err(e),
                _ => {}
            }
        }
        Ok(new)
    }

    /// The newest readable settings file, if any. Of several (a crash while
    /// storing new settings), the newest wins; damaged ones are passed over
    /// (so a damaged file never stops a backup, and new settings can always
    /// be stored over it) and named by [`Repository::settings_files`].
    pub fn settings(&self) -> Result<Option<PolicyFile>> {
        Ok(self.settings_files()?.newest)
    }

    /// Every settings file: the newest readable one and the damaged ones.
    pub fn settings_files(&self) -> Result<SideFiles<PolicyFile>> {
        self.side_files(|p: &PolicyFile| p.time)
    }

    /// The stored retention policy, or [`Policy::recommended`] when none
    /// was set; and whether one was set.
    pub fn policy(&self) -> Result<(crate::format::policy::Policy, bool)> {
        Ok(match self.settings()? {
            Some(p) => (p.policy, true),
            None => (crate::format::policy::Policy::recommended(), false),
        })
    }

    /// The stored copy target, if any.
    pub fn copy_target(&self) -> Result<Option<CopyTarget>> {
        Ok(self.settings()?.and_then(|s| s.copy_to))
    }

    /// The stored alert URL, if any.
    pub fn notify_url(&self) -> Result<Option<String>> {
        Ok(self.settings()?.and_then(|s| s.notify_url))
    }

    /// Stores a retention policy (keeping the other settings).
    pub fn set_policy(&self, policy: &crate::format::policy::Policy) -> Result<()> {
        policy.validate()?;
        if policy.is_empty() {
            return Err(Error::InvalidInput(
                "a stored policy needs at least one rule".into(),
            ));
        }
        let policy = policy.clone();
        self.change_settings(|s| s.policy = policy)
    }

    /// Stores (or with `None` removes) the copy target, keeping the other
    /// settings (the recommended policy is stored if none was).
    pub fn set_copy_target(&self, target: Option<CopyTarget>) -> Result<()> {
        self.change_settings(|s| s.copy_to = target)
    }

    /// Stores (or with `None` removes) the alert URL.
    pub fn set_notify_url(&self, url: Option<String>) -> Result<()> {
        self.change_settings(|s| s.notify_url = url)
    }

    /// Writes a new settings file with `change` applied to the current
    /// ones, then removes the others.
    fn change_settings(&self, change: impl FnOnce(&mut PolicyFile)) -> Result<()> {
        let current = self.settings_files()?;
        let old = current.files;
        let mut file = current.newest.unwrap_or_else(|| PolicyFile {
            version: crate::format::policy::VERSION,
            time: jiff::Timestamp::now(),
            policy: crate::format::policy::Policy::recommended(),
            copy_to: None,
            notify_url: None,
        });
        change(&mut file);
        file.time = jiff::Timestamp::now();
        let name = self.write_file(&file)?;
        for f in old.into_iter().filter(|f| f.name != name.to_hex()) {
            // The newest file wins: one the storage keeps for now is only
            // an older copy.
            delete_unless_kept(&*self.backend, FileType::Policy, &f.name)?;
        }
        Ok(())
    }

    /// Lists the key files.
    pub fn keys(&self) -> Result<Vec<KeyInfo>> {
        let mut out = Vec::new();
        for k in self.backend.list(FileType::Key)? {
            let bytes = self.backend.read(FileType::Key, &k.name)?;
            let file: KeyFile =
                serde_json::from_slice(&bytes).map_err(|e| Error::corrupt("key", &k.name, e))?;
            let id = KeyId(k.name.parse()?);
            out.push(KeyInfo {
                id,
                current: id == self.key_id,
                file,
            });
        }
        Ok(out)
    }

    /// The key this repository was opened with.
    pub fn current_key(&self) -> KeyId {
        self.key_id
    }

    /// Adds a password (not an empty one).
    pub fn add_key(&self, password: &[u8], kdf: KdfParams, owner: &KeyOwner) -> Result<KeyId> {
        if password.is_empty() {
            return Err(Error::InvalidInput(
                "an empty password is not allowed".into(),
            ));
        }
        write_key(&*self.backend, &self.crypto, password, kdf, owner)
    }

    /// Removes a key by id or unique prefix. Refuses to remove the last key
    /// and the key in use (open with another password to remove it).
    pub fn remove_key(&self, prefix: &str) -> Result<KeyId> {
        let keys = self.keys()?;
        let matches: Vec<&KeyInfo> = keys
            .iter()
            .filter(|k| k.id.to_hex().starts_with(prefix))
            .collect();
        let k = match matches.as_slice() {
            [] => {
                return Err(Error::InvalidInput(format!("no key matches {prefix:?}"))
                    .with_remedy(crate::error::Remedy::ListKeys))
            }
            [k] => *k,
            _ => {
                return Err(Error::InvalidInput(format!(
                    "key prefix {prefix:?} matches several keys; give more characters"
                )))
            }
        };
        if keys.len() == 1 {
            return Err(Error::Refused(
                "refusing to remove the last key: the repository could never be opened again"
                    .into(),
            ));
        }
        if k.current {
            return Err(Error::Refused(
                "refusing to remove the key you opened the repository with; open it with \
                 another password to remove this one"
                    .into(),
            )
            .with_remedy(crate::error::Remedy::ChangePassword));
        }
        self.backend.delete(FileType::Key, &k.id.to_hex())?;
        Ok(k.id)
    }

    /// Replaces the current password: adds the new key, then removes the old.
    pub fn change_password(
        &mut self,
        password: &[u8],
        kdf: KdfParams,
        owner: &KeyOwner,
    ) -> Result<KeyId> {
        let new = self.add_key(password, kdf, owner)?;
        let old = self.key_id;
        self.key_id = new;
        self.backend.delete(FileType::Key, &old.to_hex())?;
        Ok(new)
    }
}

/// The sealed blob at `at` in bytes read from pack `name`; a read that came
/// back short is corruption, never a panic (the storage answers this).
pub(crate) fn sealed_at<'a>(
    bytes: &'a [u8],
    at: usize,
    length: u32,
    name: &str,
) -> Result<&'a [u8]> {
    at.checked_add(length as usize)
        .and_then(|end| bytes.get(at..end))
        .ok_or_else(|| Error::corrupt("pack", name, "the storage returned a short read"))
}

/// The master key holds the hash of the config it was made with (keys made
/// before that binding hold none): a config changed since is refused.
fn check_config_binding(crypto: &Crypto, config_bytes: &[u8], location: &str) -> Result<()> {
    match &crypto.master_key().config {
        Some(h) if *h != Hash::of(config_bytes).to_hex() => Err(Error::corrupt(
            "config",
            format!("of {location}"),
            "it differs from the one the repository was created with (its hash is bound to \
             the keys); restore the original config file from a copy",
        )),
        _ => Ok(()),
    }
}

fn write_key(
    backend: &dyn Backend,
    crypto: &Crypto,
    password: &[u8],
    kdf: KdfParams,
    owner: &KeyOwner,
) -> Result<KeyId> {
    let kf = KeyFile::wrap(crypto, password, kdf, &owner.hostname, &owner.username)?;
    let bytes = serde_json::to_vec_pretty(&kf).expect("key file serializes");
    let id = KeyId(Hash::of(&bytes));
    match backend.write(FileType::Key, &id.to_hex(), &bytes)? {
        WriteOutcome::Created | WriteOutcome::AlreadyExists => Ok(id),
    }
}

/// Snapshots with their files.
type SnapshotList0 = Vec<(SnapshotId, SnapshotFile)>;

/// Splits snapshots into the current ones and superseded copies. Only a
/// rewrite (`rewritten` set: protect, unprotect, mark) supersedes, and only
/// older files of its identity (`original`, else the id) with the same tree
/// and time: the copies it replaced. Anything else (a `repair snapshots`
/// copy, a crash pair from before `rewritten` existed) stays listed.
///
/// A rewrite among `adds_only` (stored by a token that may only add) claims
/// nothing: it supersedes nothing, and while any other file of its
/// identity is there it is itself a superseded copy (hidden), whatever its
/// `rewritten` says. So a stolen backup token cannot hide, unprotect or
/// re-mark a snapshot stored before.
fn split_superseded(
    all: Vec<(SnapshotId, SnapshotFile)>,
    adds_only: &std::collections::HashSet<SnapshotId>,
) -> (SnapshotList0, Vec<(SnapshotId, SnapshotId)>) {
    let claims = |id: &SnapshotId, s: &SnapshotFile| {
        (s.original.is_some() || s.rewritten.is_some()) && !adds_only.contains(id)
    };
    let void = |id: &SnapshotId, s: &SnapshotFile| {
        (s.original.is_some() || s.rewritten.is_some()) && adds_only.contains(id)
    };
    let mut newest: std::collections::HashMap<SnapshotId, (jiff::Timestamp, SnapshotId)> =
        std::collections::HashMap::new();
    for (id, s) in &all {
        if !claims(id, s) {
            continue;
        }
        if let Some(t) = s.rewritten {
            let e = newest.entry(s.original.unwrap_or(*id)).or_insert((t, *id));
            if (t, *id) > *e {
                *e = (t, *id);
            }
        }
    }
    let by_id: std::collections::HashMap<SnapshotId, &SnapshotFile> =
        all.iter().map(|(id, s)| (*id, s)).collect();
    // Identities that some file other than a void claim holds.
    let held: std::collections::HashMap<SnapshotId, usize> = all
        .iter()
        .filter(|(id, s)| !void(id, s))
        .fold(std::collections::HashMap::new(), |mut m, (id, s)| {
            *m.entry(s.original.unwrap_or(*id)).or_default() += 1;
            m
        });
    let replaced: Vec<(SnapshotId, SnapshotId)> = all
        .iter()
        .filter_map(|(id, s)| {
            let identity = s.original.unwrap_or(*id);
            if void(id, s) {
                return held.contains_key(&identity).then_some((*id, identity));
            }
            let (t, winner) = *newest.get(&identity)?;
            let w = by_id[&winner];
            let older = s.rewritten.is_none_or(|r| (r, *id) < (t, winner));
            (winner != *id && older && w.tree == s.tree && w.time == s.time)
                .then_some((*id, identity))
        })
        .collect();
    let gone: std::collections::HashSet<SnapshotId> = replaced.iter().map(|(id, _)| *id).collect();
    let current = all
        .into_iter()
        .filter(|(id, _)| !gone.contains(id))
        .collect();
    (current, replaced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::snapshot::{BackupSummary, VERSION};

    fn snap(
        n: u8,
        tree: u8,
        original: Option<u8>,
        rewritten: Option<&str>,
    ) -> (SnapshotId, SnapshotFile) {
        (
            SnapshotId(Hash([n; 32])),
            SnapshotFile {
                version: VERSION,
                time: "2026-11-01T10:00:00Z".parse().unwrap(),
                tree: BlobId(Hash([tree; 32])),
                paths: vec!["/data".into()],
                hostname: "h".into(),
                username: "u".into(),
                tags: vec![],
                parent: None,
                program: "t".into(),
                summary: BackupSummary::default(),
                protection: None,
                original: original.map(|o| SnapshotId(Hash([o; 32]))),
                copied_from: None,
                rewritten: rewritten.map(|t| t.parse().unwrap()),
                scan: None,
            },
        )
    }

    fn ids(v: &[(SnapshotId, SnapshotFile)]) -> Vec<u8> {
        let mut out: Vec<u8> = v.iter().map(|(id, _)| id.0 .0[0]).collect();
        out.sort();
        out
    }

    #[test]
    fn only_rewrites_supersede_the_copies_they_replaced() {
        // 1: the original; 2: protected (rewrite of 1); 3: marked later.
        let (cur, gone) = split_superseded_(vec![
            snap(1, 9, None, None),
            snap(2, 9, Some(1), Some("2026-11-02T00:00:00Z")),
            snap(3, 9, Some(1), Some("2026-11-03T00:00:00Z")),
        ]);
        assert_eq!(ids(&cur), vec![3]);
        let mut g: Vec<u8> = gone.iter().map(|(id, _)| id.0 .0[0]).collect();
        g.sort();
        assert_eq!(g, vec![1, 2]);
        assert!(gone.iter().all(|(_, identity)| identity.0 .0[0] == 1));
        // A repair copy (another tree, no `rewritten`) supersedes nothing,
        // and a rewrite does not hide a copy with another tree.
        let (cur, gone) =
            split_superseded_(vec![snap(1, 9, None, None), snap(4, 8, Some(1), None)]);
        assert_eq!(ids(&cur), vec![1, 4]);
        assert!(gone.is_empty());
        let (cur, _) = split_superseded_(vec![
            snap(1, 9, None, None),
            snap(4, 8, Some(1), None),
            snap(5, 9, Some(1), Some("2026-11-02T00:00:00Z")),
        ]);
        assert_eq!(ids(&cur), vec![4, 5]);
        // A crash pair from before `rewritten` existed: both stay listed.
        let (cur, _) = split_superseded_(vec![snap(1, 9, None, None), snap(6, 9, Some(1), None)]);
        assert_eq!(ids(&cur), vec![1, 6]);
    }

    fn split_superseded_(
        all: Vec<(SnapshotId, SnapshotFile)>,
    ) -> (SnapshotList0, Vec<(SnapshotId, SnapshotId)>) {
        split_superseded(all, &std::collections::HashSet::new())
    }

    #[test]
    fn a_rewrite_stored_by_a_token_that_only_adds_claims_nothing() {
        let adders: std::collections::HashSet<SnapshotId> =
            [7, 8].iter().map(|n| SnapshotId(Hash([*n; 32]))).collect();
        // 7: a far-future rewrite of 1 by a backup token; it loses to the
        // original and is hidden.
        let (cur, gone) = split_superseded(
            vec![
                snap(1, 9, None, None),
                snap(7, 9, Some(1), Some("2999-01-01T00:00:00Z")),
            ],
            &adders,
        );
        assert_eq!(ids(&cur), vec![1]);
        assert_eq!(
            gone,
            vec![(SnapshotId(Hash([7; 32])), SnapshotId(Hash([1; 32])))]
        );
        // An admin's protect (2) wins over the claim, whatever its date.
        let (cur, _) = split_superseded(
            vec![
                snap(1, 9, None, None),
                snap(2, 9, Some(1), Some("2026-11-02T00:00:00Z")),
                snap(7, 9, Some(1), Some("2999-01-01T00:00:00Z")),
            ],
            &adders,
        );
        assert_eq!(ids(&cur), vec![2]);
        // Alone (its original forgotten by an admin), it is a snapshot.
        let (cur, gone) = split_superseded(
            vec![snap(8, 9, Some(1), Some("2999-01-01T00:00:00Z"))],
            &adders,
        );
        assert_eq!(ids(&cur), vec![8]);
        assert!(gone.is_empty());
        // A backup token's own backups (no claim) are ordinary snapshots.
        let (cur, _) = split_superseded(
            vec![snap(1, 9, None, None), snap(7, 8, None, None)],
            &adders,
        );
        assert_eq!(ids(&cur), vec![1, 7]);
    }
}
