//! The S3 backend against a real SeaweedFS on loopback: the backend
//! conformance suite and its error messages. One test function, because the
//! credentials come from the process environment.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rewind_backends::testsupport::SeaweedFs;
use rewind_backends::{open, Location, Options};
use rewind_core::backend::{conformance, Backend, FileType};

fn backend(server: &SeaweedFs, bucket: &str, prefix: &str) -> Arc<dyn Backend> {
    let loc = Location::parse(&server.url(bucket, prefix)).unwrap();
    open(&loc, &Options::new()).unwrap()
}

#[test]
fn s3_backend_conformance_and_errors() {
    let server = SeaweedFs::start(&["conformance"]);
    server.set_env();
    // At the bucket root and under a prefix.
    conformance::run(&*backend(&server, "conformance", ""));
    conformance::run(&*backend(&server, "conformance", "some/prefix"));

    // A bucket that does not exist: named, and no endless retries.
    let t = Instant::now();
    let e = backend(&server, "no-such-bucket", "")
        .create()
        .unwrap_err()
        .to_string();
    assert!(e.contains("no-such-bucket"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());

    // Wrong credentials: refused at once, named.
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "wrong");
    let b = backend(&server, "conformance", "");
    let t = Instant::now();
    let e = b.list(FileType::Snapshot).unwrap_err().to_string();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "retried a permanent error: {e}"
    );
    assert!(e.contains("conformance"), "{e}");
    // No credentials at all: says which variables to set.
    std::env::remove_var("AWS_ACCESS_KEY_ID");
    std::env::remove_var("AWS_SECRET_ACCESS_KEY");
    let e = backend(&server, "conformance", "")
        .list(FileType::Snapshot)
        .unwrap_err()
        .to_string();
    assert!(e.contains("AWS_ACCESS_KEY_ID"), "{e}");
    server.set_env();

    // The server dies: a clear error after bounded retries, not a hang.
    let b = backend(&server, "conformance", "x");
    let mut server = server;
    server.kill();
    let t = Instant::now();
    let e = b.list(FileType::Index).unwrap_err().to_string();
    assert!(t.elapsed() < Duration::from_secs(90), "{:?}", t.elapsed());
    eprintln!("with the server down: {e} (after {:?})", t.elapsed());
    server.restart();
    assert!(b.list(FileType::Index).unwrap().is_empty());
}
