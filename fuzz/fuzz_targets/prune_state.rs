//! PruneState files: sealed, compressed JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_core::crypto::Domain;
use rewind_core::format::prune::PruneState;
use rewind_core::format::RepoFile;
use rewind_fuzz::{crypto, name_of, stored};

fuzz_target!(|data: &[u8]| {
    let Some(sealed) = stored(Domain::PruneState, data) else {
        return;
    };
    if let Ok(v) = PruneState::open(crypto(), &name_of(&sealed), &sealed) {
        assert_eq!(v.version, 1);
        // What was accepted writes back and reads again as itself.
        let json = serde_json::to_vec(&v).unwrap();
        assert_eq!(serde_json::from_slice::<PruneState>(&json).unwrap(), v);
        check(&v);
    }
});

fn check<T>(_: &T) {}
