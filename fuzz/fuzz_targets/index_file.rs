//! Index files (`index/<id>`): sealed, compressed postcard.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_core::crypto::Domain;
use rewind_core::format::index::IndexFile;
use rewind_core::format::RepoFile;
use rewind_fuzz::{crypto, name_of, stored};

fuzz_target!(|data: &[u8]| {
    let Some(sealed) = stored(Domain::Index, data) else {
        return;
    };
    if let Ok(f) = IndexFile::open(crypto(), &name_of(&sealed), &sealed) {
        assert_eq!(f.version, 1);
        let plain = postcard::to_stdvec(&f).unwrap();
        assert_eq!(postcard::from_bytes::<IndexFile>(&plain).unwrap(), f);
    }
});
