//! SnapshotFile files: sealed, compressed JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_core::crypto::Domain;
use rewind_core::format::snapshot::SnapshotFile;
use rewind_core::format::RepoFile;
use rewind_fuzz::{crypto, name_of, stored};

fuzz_target!(|data: &[u8]| {
    let Some(sealed) = stored(Domain::Snapshot, data) else {
        return;
    };
    if let Ok(v) = SnapshotFile::open(crypto(), &name_of(&sealed), &sealed) {
        assert_eq!(v.version, 1);
        // What was accepted writes back and reads again as itself.
        let json = serde_json::to_vec(&v).unwrap();
        assert_eq!(serde_json::from_slice::<SnapshotFile>(&json).unwrap(), v);
        check(&v);
    }
});

/// What readers do with a snapshot right after reading it.
fn check(s: &SnapshotFile) {
    let _ = s.is_protected(jiff::Timestamp::now());
    let _ = rewind_core::copy::identity(&rewind_core::id::SnapshotId::default(), s);
    if let Some(scan) = &s.scan {
        let _ = scan.effective();
    }
}
