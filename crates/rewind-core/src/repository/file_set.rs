//! Index files read one by one (check, prune): held in memory when they fit
//! the memory budget beside the merged index (docs/DESIGN.md §6b); else
//! read again for each pass over them, so that the command holds what it
//! knows of each pack rather than every entry.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;

use rayon::prelude::*;

use super::{Index, Repository};
use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::format::index::IndexFile;
use crate::id::IndexId;

/// Every index file, held or read again for each pass (see the module).
pub(crate) struct FileSet<'a> {
    pub(crate) repo: &'a Repository,
    /// In id (= name) order, the order the merged index loads them in.
    pub(crate) ids: Vec<IndexId>,
    /// The files, when held.
    pub(crate) held: Option<Vec<IndexFile>>,
    /// Files that cannot be read (name, why); read again, they are left out.
    pub(crate) damaged: RefCell<Vec<(String, String)>>,
    /// Files read no more: damaged, or vanished.
    pub(crate) out: RefCell<HashSet<IndexId>>,
    /// Files that vanished after the listing (a prune or repair replaced
    /// them): the check is incomplete.
    pub(crate) gone: RefCell<Vec<IndexId>>,
    /// Passes made so far.
    pub(crate) passes: Cell<usize>,
    /// The memory budget, when the files are read again for each pass.
    pub(crate) budget: Option<u64>,
}

/// Index files read at once when they are not held.
const FILE_BATCH: usize = 16;

impl<'a> FileSet<'a> {
    /// Lists (and, when they fit, reads) the index files.
    pub(crate) fn load(repo: &'a Repository) -> Result<FileSet<'a>> {
        let listed = match repo.memory_budget() {
            None => None,
            Some(budget) => {
                let listed = repo.backend().list(FileType::Index)?;
                let bytes: u64 = listed.iter().map(|f| f.size).sum();
                // An entry takes at least 32 bytes in a file (its id does
                // not compress); held, it is here twice (the file's entry
                // and the merged index's).
                (!Index::fits(bytes / 16, budget)).then_some((listed, budget))
            }
        };
        let mut files = FileSet {
            repo,
            ids: Vec::new(),
            held: None,
            damaged: Default::default(),
            out: Default::default(),
            gone: Default::default(),
            passes: Default::default(),
            budget: None,
        };
        match listed {
            None => {
                let (held, damaged) = repo.index_files()?;
                let (ids, held) = held.into_iter().unzip();
                files.ids = ids;
                files.held = Some(held);
                files.damaged = damaged.into();
            }
            Some((listed, budget)) => {
                let mut names: Vec<String> = listed.into_iter().map(|f| f.name).collect();
                names.sort();
                for name in names {
                    match name.parse::<IndexId>() {
                        // Read by the id's name: another spelling would not be found.
                        Ok(id) if id.to_hex() == name => files.ids.push(id),
                        Ok(_) => files.damaged.get_mut().push((
                            name,
                            "its name is not an index file's (lowercase hex)".into(),
                        )),
                        Err(e) => files.damaged.get_mut().push((name, e.to_string())),
                    }
                }
                files.budget = Some(budget);
            }
        }
        Ok(files)
    }

    /// Calls `f` with every readable index file (its position in `ids`) in
    /// order. Read again, a file that cannot be read on the first pass is
    /// damaged (reported, left out after); one that vanishes is noted in
    /// `gone`; one that reads on the first pass and not on a later one
    /// changed under the check, which stops.
    pub(crate) fn each(&self, mut f: impl FnMut(usize, &IndexFile)) -> Result<()> {
        if let Some(held) = &self.held {
            held.iter().enumerate().for_each(|(i, file)| f(i, file));
            return Ok(());
        }
        let first = self.passes.get() == 0;
        self.passes.set(self.passes.get() + 1);
        let repo = self.repo;
        let todo: Vec<(usize, IndexId)> = {
            let out = self.out.borrow();
            self.ids
                .iter()
                .copied()
                .enumerate()
                .filter(|(_, id)| !out.contains(id))
                .collect()
        };
        for chunk in todo.chunks(FILE_BATCH) {
            let read: Vec<(usize, IndexId, Result<IndexFile>)> = chunk
                .par_iter()
                .map(|&(i, id)| (i, id, repo.read_index_file(&id)))
                .collect();
            for (i, id, file) in read {
                match file {
                    Ok(file) => f(i, &file),
                    Err(Error::Missing { .. }) => {
                        self.gone.borrow_mut().push(id);
                        self.out.borrow_mut().insert(id);
                    }
                    Err(e @ Error::Corrupt { .. }) if first => {
                        self.damaged.borrow_mut().push((id.to_hex(), e.to_string()));
                        self.out.borrow_mut().insert(id);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// `items` in groups of at most a quarter of the budget, each item
    /// taking `size(item)` bytes (all in one group when the files are
    /// held): what a step gathers from the files for a group at a time.
    pub(crate) fn groups<T: Copy>(&self, items: &[T], size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
        let limit = self.budget.map_or(usize::MAX, |b| {
            usize::try_from(b / 4).unwrap_or(usize::MAX).max(1 << 16)
        });
        let mut out: Vec<Vec<T>> = Vec::new();
        let mut taken = 0;
        for item in items {
            let n = size(item);
            if out.is_empty() || (taken + n > limit && taken > 0) {
                out.push(Vec::new());
                taken = 0;
            }
            taken += n;
            out.last_mut().expect("pushed").push(*item);
        }
        out
    }

    /// An error when a file vanished or turned out damaged after the first
    /// pass: what the passes saw may disagree, so a command that writes
    /// from them (prune) stops, and runs again.
    pub(crate) fn unchanged(&self) -> Result<()> {
        match self.gone.borrow().first() {
            None => Ok(()),
            Some(id) => Err(Error::Refused(format!(
                "index file {id} vanished while the index files were being read (another prune \
                 or a repair replaced it meanwhile); stopped before deleting anything: run the \
                 command again"
            ))),
        }
    }

    /// The file ids, the files when held, and the budget (to keep them
    /// beyond the borrow of the repository).
    pub(crate) fn into_parts(self) -> (Vec<IndexId>, Option<Vec<IndexFile>>, Option<u64>) {
        (self.ids, self.held, self.budget)
    }

    /// The set again from [`FileSet::into_parts`], its first pass made: a
    /// file that cannot be read now is an error.
    pub(crate) fn from_parts(
        repo: &'a Repository,
        ids: Vec<IndexId>,
        held: Option<Vec<IndexFile>>,
        budget: Option<u64>,
    ) -> FileSet<'a> {
        FileSet {
            repo,
            ids,
            held,
            damaged: Default::default(),
            out: Default::default(),
            gone: Default::default(),
            // Not a first pass: a file that cannot be read now is an error.
            passes: Cell::new(1),
            budget,
        }
    }
}
