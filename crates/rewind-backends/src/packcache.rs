//! Whole packs kept in memory for small ranged reads on remote backends.
//!
//! On S3 or SFTP a request costs milliseconds whatever its size, and restore,
//! `dump` and tree walks read many small neighbouring blobs: one fetch of the
//! pack serves them all. Threads that want a pack being fetched wait for that
//! fetch instead of starting their own.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};

use rewind_core::{Error, Result};

/// Ranged pack reads up to this size go through the cache.
pub(crate) const SMALL_READ: u32 = 1 << 20;

/// The pack, or (whether it was missing, the error message).
type Slot = Arc<OnceLock<std::result::Result<Arc<Vec<u8>>, (bool, String)>>>;

/// The most recently requested packs (16 MiB each at most).
pub(crate) struct PackCache {
    packs: Mutex<VecDeque<(String, Slot)>>,
    capacity: usize,
}

impl PackCache {
    /// A cache of `capacity` packs: restore runs two reading threads per
    /// connection, each in its own stretch of packs, so two per connection
    /// and a spare or two.
    pub(crate) fn new(capacity: usize) -> PackCache {
        PackCache {
            packs: Mutex::new(VecDeque::new()),
            capacity,
        }
    }

    /// `len` bytes at `offset` of pack `name`, fetching the whole pack with
    /// `fetch` unless it is cached. `location` names the repository in errors.
    pub(crate) fn read_range(
        &self,
        location: &str,
        name: &str,
        offset: u64,
        len: u32,
        fetch: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let slot = self.slot(name);
        let pack = slot.get_or_init(|| {
            fetch()
                .map(Arc::new)
                .map_err(|e| (matches!(e, Error::Missing { .. }), e.to_string()))
        });
        let pack = match pack {
            Ok(p) => p.clone(),
            Err((missing, e)) => {
                // Not cached: the next read tries again.
                self.forget(name);
                return Err(if *missing {
                    Error::Missing {
                        what: "pack",
                        id: name.to_string(),
                    }
                } else {
                    Error::io(format!("read pack {name}"), io::Error::other(e.clone()))
                });
            }
        };
        match offset.checked_add(u64::from(len)) {
            Some(end) if end <= pack.len() as u64 => {
                Ok(pack[offset as usize..end as usize].to_vec())
            }
            _ => Err(Error::io(
                format!("read {location}/pack {name}"),
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{len} bytes at {offset} lie beyond its end ({} bytes)",
                        pack.len()
                    ),
                ),
            )),
        }
    }

    fn slot(&self, name: &str) -> Slot {
        let mut packs = self.packs.lock().expect("pack cache");
        if let Some((_, p)) = packs.iter().find(|(n, _)| n == name) {
            return p.clone();
        }
        let p: Slot = Arc::new(OnceLock::new());
        packs.push_back((name.to_string(), p.clone()));
        if packs.len() > self.capacity {
            packs.pop_front();
        }
        p
    }

    /// Drops a pack (deleted, or its fetch failed).
    pub(crate) fn forget(&self, name: &str) {
        self.packs
            .lock()
            .expect("pack cache")
            .retain(|(n, _)| n != name);
    }
}
