//! Pack files: many sealed blobs and a sealed header.
//!
//! ```text
//! magic "RWNDPACK" (8) | version u8 = 1 | blob 0 | blob 1 | ... | sealed header | header length u32 LE
//! ```
//! Each blob is `seal(compress(plaintext))` bound to its id. The header is
//! `seal(postcard(PackHeader))` for the domain "pack-header".

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::crypto::{Crypto, Domain};
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId};

/// Magic bytes at the start of every pack.
pub const MAGIC: &[u8; 8] = b"RWNDPACK";
/// Pack format version.
pub const VERSION: u8 = 1;
/// Bytes before the first blob.
pub const PREFIX_LEN: u64 = 9;
/// Largest blob plaintext accepted: chunks are at most 16 MiB, but the
/// tree of a huge directory may be larger.
pub const MAX_BLOB_SIZE: u32 = 1 << 30;

/// What a blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlobKind {
    /// File content.
    Data,
    /// A directory listing.
    Tree,
}

/// One blob inside a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedBlob {
    /// Data or tree.
    pub kind: BlobKind,
    /// Keyed hash of the plaintext.
    pub id: BlobId,
    /// Offset of the sealed blob in the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub length: u32,
    /// Length of the plaintext (after decompression).
    pub raw_length: u32,
}

/// The header at the end of a pack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackHeader {
    /// Blobs in pack order.
    pub blobs: Vec<PackedBlob>,
}

impl PackHeader {
    /// Seals the header into the bytes that end a pack (header + length).
    pub fn seal(&self, crypto: &Crypto) -> Vec<u8> {
        let plain = postcard::to_stdvec(self).expect("pack header serializes");
        let mut out = crypto.seal(Domain::PackHeader, &plain);
        let len = u32::try_from(out.len()).expect("pack headers stay far below 4 GiB");
        out.extend_from_slice(&len.to_le_bytes());
        out
    }

    /// Parses a whole pack's trailer: checks the magic and the header, and
    /// that every blob lies inside the pack before the header.
    pub fn parse(crypto: &Crypto, pack: &PackId, bytes: &[u8]) -> Result<Self> {
        let name = pack.to_hex();
        Self::check_prefix(pack, bytes, bytes.len() as u64)?;
        let n = bytes.len();
        let hlen = u32::from_le_bytes(bytes[n - 4..].try_into().expect("4 bytes")) as usize;
        if hlen + 4 + PREFIX_LEN as usize > n {
            return Err(Error::corrupt("pack", &name, "header length exceeds pack"));
        }
        Self::parse_header(crypto, pack, n as u64, &bytes[n - 4 - hlen..n - 4])
    }

    /// Checks the magic and the version at the start of a pack of `size`
    /// bytes (`head`: at least its first [`PREFIX_LEN`] bytes, or all of
    /// a shorter pack).
    pub fn check_prefix(pack: &PackId, head: &[u8], size: u64) -> Result<()> {
        let name = pack.to_hex();
        if size < PREFIX_LEN + 4 || head.len() < PREFIX_LEN as usize || &head[..8] != MAGIC {
            return Err(Error::corrupt("pack", &name, "bad magic or too short"));
        }
        if head[8] != VERSION {
            return Err(Error::corrupt(
                "pack",
                &name,
                format!("unknown pack version {}", head[8]),
            ));
        }
        Ok(())
    }

    /// The length of the sealed header, from a pack's last 4 bytes.
    pub fn header_len(trailer: [u8; 4]) -> u32 {
        u32::from_le_bytes(trailer)
    }

    /// Parses a sealed header read from the end of a pack of `pack_size`
    /// bytes, and checks that its blobs fill the pack before the header.
    pub fn parse_header(
        crypto: &Crypto,
        pack: &PackId,
        pack_size: u64,
        sealed: &[u8],
    ) -> Result<Self> {
        let name = pack.to_hex();
        let header_start = pack_size
            .checked_sub(4 + sealed.len() as u64)
            .filter(|s| *s >= PREFIX_LEN)
            .ok_or_else(|| Error::corrupt("pack", &name, "header length exceeds pack"))?;
        let plain = crypto
            .open(Domain::PackHeader, sealed)
            .ok_or_else(|| Error::corrupt("pack", &name, "header fails authentication"))?;
        let h: PackHeader = postcard::from_bytes(&plain)
            .map_err(|e| Error::corrupt("pack", &name, format!("header: {e}")))?;
        let mut expect = PREFIX_LEN;
        for b in &h.blobs {
            if u64::from(b.offset) != expect || b.raw_length > MAX_BLOB_SIZE {
                return Err(Error::corrupt(
                    "pack",
                    &name,
                    format!("blob {} at a bad offset", b.id),
                ));
            }
            expect += u64::from(b.length);
        }
        if expect != header_start {
            return Err(Error::corrupt("pack", &name, "blobs do not fill the pack"));
        }
        Ok(h)
    }
}

/// Builds one pack: in memory (`Vec<u8>`, [`PackBuilder::new`]), or
/// written out as it fills to any [`Write`] (a staged file of the local
/// backend, [`PackBuilder::start`]), so that a pack being filled need not
/// be held whole. The pack's name (the BLAKE3 of its bytes) is hashed as
/// the bytes go out.
#[derive(Debug)]
pub struct PackBuilder<W = Vec<u8>> {
    out: W,
    len: usize,
    hash: blake3::Hasher,
    blobs: Vec<PackedBlob>,
}

impl<W: Write> PackBuilder<W> {
    /// A pack written to `out`; its prefix goes out at once.
    pub fn start(out: W) -> std::io::Result<Self> {
        let mut b = PackBuilder {
            out,
            len: 0,
            hash: blake3::Hasher::new(),
            blobs: Vec::new(),
        };
        b.put(MAGIC)?;
        b.put(&[VERSION])?;
        Ok(b)
    }

    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.out.write_all(bytes)?;
        self.hash.update(bytes);
        self.len += bytes.len();
        Ok(())
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no blob was added.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Appends a sealed blob. After an error the pack is incomplete and
    /// must be dropped.
    pub fn write_blob(
        &mut self,
        kind: BlobKind,
        id: BlobId,
        sealed: &[u8],
        raw_length: u32,
    ) -> std::io::Result<()> {
        let offset = u32::try_from(self.len).expect("packs stay below 4 GiB");
        self.put(sealed)?;
        self.blobs.push(PackedBlob {
            kind,
            id,
            offset,
            length: u32::try_from(sealed.len()).expect("blobs stay below 4 GiB"),
            raw_length,
        });
        Ok(())
    }

    /// Writes the sealed header; returns the pack's name, its output, its
    /// size and its blobs.
    pub fn seal(mut self, crypto: &Crypto) -> std::io::Result<SealedPack<W>> {
        let header = PackHeader {
            blobs: std::mem::take(&mut self.blobs),
        };
        self.put(&header.seal(crypto))?;
        Ok(SealedPack {
            id: PackId(crate::id::Hash(*self.hash.finalize().as_bytes())),
            out: self.out,
            size: self.len as u64,
            blobs: header.blobs,
        })
    }
}

/// A pack [`PackBuilder::seal`] completed.
#[derive(Debug)]
pub struct SealedPack<W> {
    /// Its name: the BLAKE3 of its bytes.
    pub id: PackId,
    /// Where its bytes went.
    pub out: W,
    /// Its length in bytes.
    pub size: u64,
    /// Its blobs, in order.
    pub blobs: Vec<PackedBlob>,
}

impl PackBuilder<Vec<u8>> {
    /// An empty pack in memory with room for `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self::reuse(Vec::with_capacity(capacity))
    }

    /// An empty pack in a recycled buffer (keeps its capacity).
    pub fn reuse(mut buf: Vec<u8>) -> Self {
        buf.clear();
        Self::start(buf).expect("writing to a Vec does not fail")
    }

    /// Appends a sealed blob.
    pub fn add(&mut self, kind: BlobKind, id: BlobId, sealed: &[u8], raw_length: u32) {
        self.write_blob(kind, id, sealed, raw_length)
            .expect("writing to a Vec does not fail");
    }

    /// Seals the header; returns the pack's name, bytes and blobs.
    pub fn finish(self, crypto: &Crypto) -> (PackId, Vec<u8>, Vec<PackedBlob>) {
        let p = self.seal(crypto).expect("writing to a Vec does not fail");
        (p.id, p.out, p.blobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn pack_round_trip_and_truncation(blobs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8), cut in 1usize..40) {
            let c = Crypto::generate();
            let mut b = PackBuilder::new(1024);
            for data in &blobs {
                let id = c.blob_id(data);
                let sealed = c.seal(Domain::Blob(&id), data);
                b.add(BlobKind::Data, id, &sealed, data.len() as u32);
            }
            let (id, bytes, entries) = b.finish(&c);
            prop_assert_eq!(id, PackId(crate::id::Hash::of(&bytes)), "named by its bytes, hashed as they went out");
            let h = PackHeader::parse(&c, &id, &bytes).unwrap();
            prop_assert_eq!(&h.blobs, &entries);
            for (e, data) in entries.iter().zip(&blobs) {
                let s = &bytes[e.offset as usize..(e.offset + e.length) as usize];
                prop_assert_eq!(&c.open(Domain::Blob(&e.id), s).unwrap(), data);
            }
            let cut = cut.min(bytes.len());
            prop_assert!(PackHeader::parse(&c, &id, &bytes[..bytes.len() - cut]).is_err());
        }
    }
}
