//! The S3 backend against a second S3 implementation, moto_server: the
//! conformance suite (exact listings, ranged reads, not-found,
//! write-if-absent) and a whole repository's life through the core.

use std::sync::Arc;

use rewind_backends::testsupport::{Moto, ACCESS_KEY, SECRET_KEY};
use rewind_backends::{open, Location, Options};
use rewind_core::archiver::{self, BackupOptions, Progress, StreamSource};
use rewind_core::backend::{conformance, Backend};
use rewind_core::check::{self, CheckOptions};
use rewind_core::crypto::KdfParams;
use rewind_core::repository::{KeyOwner, Repository};

fn backend(server: &Moto, bucket: &str, prefix: &str) -> Arc<dyn Backend> {
    let loc = Location::parse(&server.url(bucket, prefix)).unwrap();
    open(&loc, &Options::new()).unwrap()
}

#[test]
fn moto_passes_the_backend_conformance_suite_and_holds_a_repository() {
    let server = Moto::start(&["conformance", "repo"]);
    std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    std::env::set_var("AWS_REGION", "us-east-1");
    conformance::run(&*backend(&server, "conformance", ""));
    conformance::run(&*backend(&server, "conformance", "some/prefix"));
    // No Object Lock there: init with it is refused, without it works.
    let b = backend(&server, "repo", "r");
    assert_eq!(b.object_lock().unwrap(), None);

    let kdf = KdfParams {
        m_cost_kib: 256,
        t_cost: 1,
        p_cost: 1,
    };
    let repo = Repository::init(b.clone(), b"pw", kdf, &KeyOwner::default()).unwrap();
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
        .collect();
    let source = StreamSource {
        name: "x".into(),
        reader: Box::new(std::io::Cursor::new(data.clone())),
        finish: Box::new(|| Ok(())),
    };
    let id = archiver::backup_stream(
        &repo,
        &BackupOptions::new(vec![]),
        source,
        &Progress::default(),
    )
    .unwrap()
    .snapshot_id
    .unwrap();
    let repo = Repository::open(b, b"pw").unwrap();
    let report = check::check(
        &repo,
        &CheckOptions {
            read_data: true,
            ..CheckOptions::default()
        },
    )
    .unwrap();
    assert!(report.is_ok(), "{:?}", report.errors);
    let (_, snap) = repo.read_snapshot(&id).unwrap();
    let node = repo.read_tree(&snap.tree).unwrap().nodes.remove(0);
    let mut back = Vec::new();
    std::io::Read::read_to_end(
        &mut rewind_core::browse::FileReader::new(&repo, &node).unwrap(),
        &mut back,
    )
    .unwrap();
    assert!(back == data, "the stream read back differs");
}
