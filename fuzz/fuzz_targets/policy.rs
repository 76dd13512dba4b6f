//! PolicyFile files: sealed, compressed JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_core::crypto::Domain;
use rewind_core::format::policy::PolicyFile;
use rewind_core::format::RepoFile;
use rewind_fuzz::{crypto, name_of, stored};

fuzz_target!(|data: &[u8]| {
    let Some(sealed) = stored(Domain::Policy, data) else {
        return;
    };
    if let Ok(v) = PolicyFile::open(crypto(), &name_of(&sealed), &sealed) {
        assert_eq!(v.version, 1);
        // What was accepted writes back and reads again as itself.
        let json = serde_json::to_vec(&v).unwrap();
        assert_eq!(serde_json::from_slice::<PolicyFile>(&json).unwrap(), v);
        check(&v);
    }
});

/// What readers do with settings: the retention policy's durations.
fn check(p: &PolicyFile) {
    let _ = p.policy.validate();
    let _ = p.policy.is_empty();
}
