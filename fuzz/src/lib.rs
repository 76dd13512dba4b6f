//! Shared by the fuzz targets: a fixed master key, and how a target turns
//! its input into the stored bytes of a sealed file.
//!
//! A target whose reader opens a sealed file takes `MODE || rest`:
//! - `MODE` even: `rest` is the stored file as it is: what anyone with
//!   write access to the storage can put there. It must fail to
//!   authenticate (or to parse, for the parts that are not sealed).
//! - `MODE` odd: `rest` is the payload a key holder seals (`flag ||
//!   plaintext`, flag 0 raw, 1 one zstd frame); the target seals it with
//!   the fixed key, so the fuzzer reaches decompression, the decoder and
//!   the validation behind authentication.

use std::sync::OnceLock;

use rewind_core::crypto::{ChunkerParams, Crypto, Domain, MasterKey};
use rewind_core::id::Hash;

/// The fuzz targets' master key (fixed: inputs found once reproduce).
pub fn crypto() -> &'static Crypto {
    static C: OnceLock<Crypto> = OnceLock::new();
    C.get_or_init(|| {
        Crypto::new(MasterKey {
            encryption: [7; 32],
            id_key: [9; 32],
            chunker: ChunkerParams {
                seed: 1,
                min_size: 64 * 1024,
                avg_size: 256 * 1024,
                max_size: 1024 * 1024,
            },
            config: None,
        })
        .expect("fixed master key is valid")
    })
}

/// The stored bytes for `data` (see the module documentation); `None` for
/// an empty input.
pub fn stored(domain: Domain<'_>, data: &[u8]) -> Option<Vec<u8>> {
    let (&mode, rest) = data.split_first()?;
    Some(if mode & 1 == 0 {
        rest.to_vec()
    } else {
        crypto().seal(domain, rest)
    })
}

/// The name a file of these bytes has (BLAKE3, hex).
pub fn name_of(bytes: &[u8]) -> String {
    Hash::of(bytes).to_hex()
}
