//! Tree blobs: postcard, the plaintext behind a blob's seal (a blob's id
//! authenticates it, so only a key holder chooses these bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_core::format::tree::{self, NodeKind, Tree};
use rewind_core::id::BlobId;

fuzz_target!(|data: &[u8]| {
    let id = BlobId::default();
    let Ok(t) = Tree::decode(&id, data) else {
        return;
    };
    assert_eq!(t.version, tree::VERSION);
    for w in t.nodes.windows(2) {
        assert!(w[0].name < w[1].name, "names sorted and unique");
    }
    for n in &t.nodes {
        assert!(tree::validate_name(&n.name).is_ok());
        assert!(t.find(&n.name).is_some());
        let _ = (n.name_lossy(), n.type_char(), n.is_dir(), n.is_file());
        if let NodeKind::File { holes, .. } = &n.kind {
            // How restore and dump lay chunks out: skip the holes that
            // start where the next chunk would go.
            for start in std::iter::once(0).chain(holes.iter().map(|h| h.offset)) {
                let mut pos = start;
                let mut it = holes.iter().peekable();
                while it.peek().is_some_and(|h| h.offset < pos) {
                    it.next();
                }
                tree::skip_holes(&mut pos, &mut it);
            }
        }
    }
    // What was accepted encodes back to something that decodes as itself.
    assert_eq!(Tree::decode(&id, &t.encode()).unwrap(), t);
});
