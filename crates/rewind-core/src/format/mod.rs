//! On-disk types, their encodings and limits. No I/O here.
//! docs/DESIGN.md, "File formats", describes every byte.

pub mod config;
pub mod index;
pub mod pack;
pub mod policy;
pub mod proof;
pub mod prune;
pub mod scan;
pub mod snapshot;
pub mod tree;

use crate::crypto::{Crypto, Domain};
use crate::error::{Error, Result};
use crate::id::Hash;

/// The kinds of files in a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    /// The repository config (one file, name "config").
    Config,
    /// Key files: the master key wrapped by a password.
    Key,
    /// Snapshot files.
    Snapshot,
    /// Index files.
    Index,
    /// Pack files.
    Pack,
    /// The stored retention policy (sealed; the newest file wins).
    Policy,
    /// Prune's state: packs out of the index, waiting for deletion.
    PruneState,
    /// Markers of running backups and prunes (not locks: nothing waits on them).
    Running,
    /// Restore tests' results (§3.11).
    Proof,
}

impl FileType {
    /// Every type, in the order `init` creates them.
    pub const ALL: [FileType; 9] = [
        FileType::Config,
        FileType::Key,
        FileType::Snapshot,
        FileType::Index,
        FileType::Pack,
        FileType::Policy,
        FileType::PruneState,
        FileType::Running,
        FileType::Proof,
    ];

    /// Its directory in the repository layout (DESIGN §2), `""` for the
    /// config at the root. Every backend uses this layout.
    pub fn dir(self) -> &'static str {
        match self {
            FileType::Config => "",
            FileType::Key => "keys",
            FileType::Snapshot => "snapshots",
            FileType::Index => "index",
            FileType::Pack => "data",
            FileType::Policy => "policy",
            FileType::PruneState => "prune",
            FileType::Running => "running",
            FileType::Proof => "proofs",
        }
    }

    /// Human name, for messages.
    pub fn what(self) -> &'static str {
        match self {
            FileType::Config => "config",
            FileType::Key => "key",
            FileType::Snapshot => "snapshot",
            FileType::Index => "index",
            FileType::Pack => "pack",
            FileType::Policy => "policy",
            FileType::PruneState => "prune state",
            FileType::Running => "running marker",
            FileType::Proof => "restore test",
        }
    }
}

/// A whole repository file sealed under the master key (snapshots, index
/// files, settings, prune states, running markers): its directory, its
/// encryption domain, its name and the checks every reader makes, in one
/// place. A file is named by the BLAKE3 of its sealed bytes (§2).
pub trait RepoFile: Sized {
    /// Where it lives.
    const TYPE: FileType;
    /// What it is sealed as (bound into the AEAD's associated data).
    const DOMAIN: Domain<'static>;
    /// The typed name of such a file.
    type Id: From<Hash>;

    /// The plaintext encoding.
    fn encode(&self) -> Vec<u8>;

    /// Decodes the plaintext of the file `name` and checks its version.
    fn decode(name: &str, plain: &[u8]) -> Result<Self>;

    /// Sealed bytes and the name they must be stored under.
    fn seal(&self, crypto: &Crypto) -> (Self::Id, Vec<u8>) {
        let sealed = seal_object(crypto, Self::DOMAIN, &self.encode());
        (Self::Id::from(Hash::of(&sealed)), sealed)
    }

    /// Checks that `sealed` is what `name` says, opens and decodes it.
    fn open(crypto: &Crypto, name: &str, sealed: &[u8]) -> Result<Self> {
        let what = Self::TYPE.what();
        if Hash::of(sealed).to_hex() != name {
            return Err(Error::corrupt(
                what,
                name,
                "content does not match its name",
            ));
        }
        let plain = open_object(crypto, Self::DOMAIN, what, name, sealed)?;
        Self::decode(name, &plain)
    }
}

/// Decodes JSON plaintext of a [`RepoFile`] and checks its version.
pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    name: &str,
    plain: &[u8],
    version: impl Fn(&T) -> u32,
    supported: u32,
) -> Result<T> {
    let v: T = serde_json::from_slice(plain).map_err(|e| Error::corrupt(what, name, e))?;
    check_version(what, name, version(&v), supported)?;
    Ok(v)
}

/// A version other than the one this build reads is corruption (§13).
pub(crate) fn check_version(
    what: &'static str,
    name: &str,
    found: u32,
    supported: u32,
) -> Result<()> {
    if found == supported {
        Ok(())
    } else {
        Err(Error::corrupt(
            what,
            name,
            format!("unknown {what} version {found}"),
        ))
    }
}

/// Largest object (index, snapshot, tree, pack header) we agree to decode.
pub const MAX_OBJECT_SIZE: usize = 1 << 30;

const RAW: u8 = 0;
const ZSTD: u8 = 1;

/// The level at which [`compress`] stores bytes raw, untried (zstd's own
/// level 0 would mean its default).
pub const NO_COMPRESSION: i32 = 0;

/// Compresses with zstd when that saves space: `[flag] || payload`.
/// The flag is 0 for raw bytes, 1 for a zstd frame.
pub fn compress(data: &[u8], level: i32) -> Vec<u8> {
    let mut out = Vec::new();
    compress_into(&mut out, data, level);
    out
}

/// Appends `[flag] || payload` (see [`compress`]) to `out`.
pub fn compress_into(out: &mut Vec<u8>, data: &[u8], level: i32) {
    thread_local! {
        static CTX: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> = const { std::cell::RefCell::new(None) };
    }
    let start = out.len();
    if level == NO_COMPRESSION {
        out.reserve(1 + data.len());
        out.push(RAW);
        out.extend_from_slice(data);
        return;
    }
    let bound = zstd::zstd_safe::compress_bound(data.len());
    out.reserve(1 + bound);
    out.push(ZSTD);
    // Compress into the spare capacity after the flag (no zeroing first).
    let mut cursor = std::io::Cursor::new(std::mem::take(out));
    cursor.set_position((start + 1) as u64);
    let n = CTX.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = zstd::bulk::Compressor::new(level).ok();
        }
        let comp = c.as_mut()?;
        comp.set_parameter(zstd::zstd_safe::CParameter::CompressionLevel(level))
            .ok()?;
        comp.compress_to_buffer(data, &mut cursor).ok()
    });
    *out = cursor.into_inner();
    match n {
        // Keep the compressed form only if it saves at least 1/32.
        Some(n) if n + 1 < data.len() - data.len() / 32 => out.truncate(start + 1 + n),
        _ => {
            out.truncate(start);
            out.push(RAW);
            out.extend_from_slice(data);
        }
    }
}

/// Compresses and seals a blob in one buffer: `nonce || seal(flag || payload) || tag`.
pub fn seal_blob(crypto: &Crypto, id: &crate::id::BlobId, data: &[u8], level: i32) -> Vec<u8> {
    let mut out = Vec::new();
    seal_blob_into(&mut out, crypto, id, data, level);
    out
}

/// [`seal_blob`] into `out` (cleared first), reusing its allocation.
pub fn seal_blob_into(
    out: &mut Vec<u8>,
    crypto: &Crypto,
    id: &crate::id::BlobId,
    data: &[u8],
    level: i32,
) {
    out.clear();
    out.reserve(crate::crypto::SEAL_OVERHEAD + 1 + zstd::zstd_safe::compress_bound(data.len()));
    out.resize(crate::crypto::NONCE_LEN, 0);
    compress_into(out, data, level);
    crypto.seal_in_place(Domain::Blob(id), out);
}

/// Decompresses a zstd frame of unknown size, growing the buffer up to
/// `max_len`.
fn decompress_stream(
    what: &'static str,
    id: &dyn std::fmt::Display,
    frame: &[u8],
    max_len: usize,
) -> Result<Vec<u8>> {
    use std::io::Read;
    let bad = |e: std::io::Error| Error::corrupt(what, id, format!("zstd: {e}"));
    let decoder = zstd::stream::read::Decoder::with_buffer(frame).map_err(bad)?;
    let mut out = Vec::new();
    decoder
        .take(max_len as u64 + 1)
        .read_to_end(&mut out)
        .map_err(bad)?;
    if out.len() > max_len {
        return Err(Error::corrupt(
            what,
            id,
            format!("decompresses to more than {max_len} bytes"),
        ));
    }
    Ok(out)
}

/// Inverse of [`compress`]; `max_len` bounds the output.
pub fn decompress(
    what: &'static str,
    id: &dyn std::fmt::Display,
    data: &[u8],
    max_len: usize,
) -> Result<Vec<u8>> {
    match data.split_first() {
        Some((&RAW, rest)) => Ok(rest.to_vec()),
        Some((&ZSTD, rest)) => {
            thread_local! {
                static CTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
            }
            CTX.with(|c| {
                let mut c = c.borrow_mut();
                if c.is_none() {
                    *c = Some(zstd::bulk::Decompressor::new().map_err(|e| Error::io("zstd", e))?);
                }
                let d = c.as_mut().expect("just set");
                // The buffer is sized from the frame's own content size (our
                // frames carry it), never `max_len` up front: a 1 GiB bound
                // must not mean 1 GiB allocated for every small file.
                let capacity = match zstd::zstd_safe::get_frame_content_size(rest) {
                    Ok(Some(n)) if n > max_len as u64 => {
                        return Err(Error::corrupt(
                            what,
                            id,
                            format!("zstd frame claims {n} bytes, more than the {max_len} allowed"),
                        ))
                    }
                    Ok(Some(n)) => n as usize,
                    // Unknown size (not written by rewind): grow as needed.
                    Ok(None) => return decompress_stream(what, id, rest, max_len),
                    Err(e) => return Err(Error::corrupt(what, id, format!("zstd: {e:?}"))),
                };
                d.decompress(rest, capacity)
                    .map_err(|e| Error::corrupt(what, id, format!("zstd: {e}")))
            })
        }
        Some((flag, _)) => Err(Error::corrupt(
            what,
            id,
            format!("unknown compression flag {flag}"),
        )),
        None => Err(Error::corrupt(what, id, "empty")),
    }
}

/// Seals a whole-file object (index, snapshot): compress, then seal.
pub fn seal_object(crypto: &Crypto, domain: Domain<'_>, plaintext: &[u8]) -> Vec<u8> {
    crypto.seal(domain, &compress(plaintext, 3))
}

/// Opens a whole-file object sealed by [`seal_object`].
pub fn open_object(
    crypto: &Crypto,
    domain: Domain<'_>,
    what: &'static str,
    name: &str,
    sealed: &[u8],
) -> Result<Vec<u8>> {
    let plain = crypto.open(domain, sealed).ok_or_else(|| {
        Error::corrupt(
            what,
            name,
            "authentication failed (wrong key, bit rot or tampering)",
        )
    })?;
    decompress(what, &name, &plain, MAX_OBJECT_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_frame_is_sized_by_its_content_not_by_the_bound() {
        let data = vec![7u8; 100_000];
        let packed = compress(&data, 3);
        assert_eq!(packed[0], ZSTD);
        // A bound far above the content: only the content is allocated.
        let out = decompress("index", &"x", &packed, MAX_OBJECT_SIZE).unwrap();
        assert_eq!(out, data);
        assert!(out.capacity() < 2 * data.len(), "{}", out.capacity());
        // A frame that claims more than the bound is refused before any
        // allocation.
        assert!(decompress("index", &"x", &packed, 1000).is_err());
        // A frame without a content size (another encoder) still decodes,
        // within the bound.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        std::io::Write::write_all(&mut enc, &data).unwrap();
        let mut unsized_frame = vec![ZSTD];
        unsized_frame.extend(enc.finish().unwrap());
        assert_eq!(
            decompress("index", &"x", &unsized_frame, MAX_OBJECT_SIZE).unwrap(),
            data
        );
        assert!(decompress("index", &"x", &unsized_frame, 1000).is_err());
    }

    /// Each level the user may choose, and none: what it writes reads back
    /// without the reader knowing the level.
    #[test]
    fn every_level_reads_back_and_none_stores_raw() {
        let text: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("line {} of a log\n", i % 977).into_bytes())
            .collect();
        let raw = compress(&text, NO_COMPRESSION);
        assert_eq!(raw[0], RAW);
        assert_eq!(&raw[1..], &text[..]);
        let mut sizes = Vec::new();
        for level in [1, 3, 9] {
            let c = compress(&text, level);
            assert_eq!(c[0], ZSTD, "level {level}");
            assert_eq!(decompress("blob", &"x", &c, text.len()).unwrap(), text);
            sizes.push(c.len());
        }
        assert!(sizes[2] <= sizes[0], "level 9 {sizes:?}");
        assert_eq!(
            decompress("blob", &"x", &raw, text.len()).unwrap(),
            text,
            "raw"
        );
    }

    proptest! {
        #[test]
        fn compress_round_trip(data in proptest::collection::vec(any::<u8>(), 0..5000), rep in 0usize..4) {
            let mut d = data.clone();
            for _ in 0..rep { d.extend_from_slice(&data); }
            let c = compress(&d, 3);
            prop_assert!(c.len() <= d.len() + 1);
            prop_assert_eq!(decompress("blob", &"x", &c, d.len()).unwrap(), d.clone());
            let crypto = Crypto::generate();
            let id = crypto.blob_id(&d);
            let sealed = seal_blob(&crypto, &id, &d, 3);
            let opened = crypto.open(Domain::Blob(&id), &sealed).unwrap();
            prop_assert_eq!(decompress("blob", &"x", &opened, d.len()).unwrap(), d);
        }
    }

    #[test]
    fn decompress_rejects_garbage_and_bombs() {
        assert!(decompress("blob", &"x", &[], 10).is_err());
        assert!(decompress("blob", &"x", &[9, 1, 2], 10).is_err());
        assert!(decompress("blob", &"x", &[1, 1, 2, 3], 10).is_err());
        let big = compress(&vec![0u8; 100_000], 3);
        assert!(decompress("blob", &"x", &big, 1000).is_err());
    }
}
