//! S3 Object Lock against a real SeaweedFS bucket made with Object Lock:
//! the backend's part (default retention, retained files, deletes that only
//! hide) and prune's (retained packs are not deleted; the store refuses to
//! destroy them even when prune's clock says their time is up).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jiff::{SignedDuration, Timestamp};
use rewind_backends::testsupport::SeaweedFs;
use rewind_backends::{open, Location, Options};
use rewind_core::archiver::{self, BackupOptions, Progress, StreamSource};
use rewind_core::backend::{conformance, Backend, FileType, LockMode, ObjectLock};
use rewind_core::check::{self, CheckOptions};
use rewind_core::crypto::KdfParams;
use rewind_core::prune::{self, PruneOptions};
use rewind_core::repository::{KeyOwner, Repository};

fn backend(server: &SeaweedFs, bucket: &str, prefix: &str) -> Arc<dyn Backend> {
    let loc = Location::parse(&server.url(bucket, prefix)).unwrap();
    open(&loc, &Options::new()).unwrap()
}

/// A blocking opendal client straight to the server, bypassing rewind.
fn raw_client(
    server: &SeaweedFs,
    bucket: &str,
) -> (opendal::blocking::Operator, tokio::runtime::Runtime) {
    let op = opendal::Operator::new(
        opendal::services::S3::default()
            .endpoint(&server.endpoint)
            .bucket(bucket)
            .region("us-east-1")
            .disable_ec2_metadata(),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let op = {
        let _g = rt.enter();
        opendal::blocking::Operator::new(op).unwrap()
    };
    (op, rt)
}

/// The data versions (not delete markers) stored under `path`.
fn data_versions(op: &opendal::blocking::Operator, path: &str) -> Vec<String> {
    let (dir, _) = path.rsplit_once('/').unwrap();
    op.list_options(
        &format!("{dir}/"),
        opendal::options::ListOptions {
            versions: true,
            deleted: true,
            ..Default::default()
        },
    )
    .unwrap()
    .into_iter()
    .filter(|e| e.path() == path && !e.metadata().is_deleted())
    .map(|e| e.metadata().version().unwrap().to_string())
    .collect()
}

/// Object Lock on a real bucket with Object Lock enabled: the default
/// retention is set and read back, every file written is retained, a delete
/// only hides a retained file, and the server itself refuses to destroy it.
#[test]
fn s3_object_lock() {
    let server = SeaweedFs::start(&["plain"]);
    server.create_locked_bucket("locked");
    server.set_env();
    let lock = ObjectLock {
        mode: LockMode::Compliance,
        days: 1,
    };

    // A bucket made without Object Lock cannot get it, and says why.
    let plain = backend(&server, "plain", "");
    assert_eq!(plain.object_lock().unwrap(), None);
    let e = plain.set_object_lock(lock).unwrap_err().to_string();
    assert!(e.contains("no Object Lock") && e.contains("plain"), "{e}");

    let b = backend(&server, "locked", "repo");
    assert_eq!(b.object_lock().unwrap(), None, "no default retention yet");
    b.set_object_lock(lock).unwrap();
    // A new client reads it from the bucket.
    let b = backend(&server, "locked", "repo");
    assert_eq!(b.object_lock().unwrap(), Some(lock));

    // The whole backend contract holds on a locked bucket (writes carry
    // Content-MD5; deleted files vanish from listings).
    conformance::run(&*backend(&server, "locked", "conformance"));

    let name = "ab".repeat(32);
    b.write(FileType::Pack, &name, b"precious").unwrap();
    let until = b
        .retained_until(FileType::Pack, &name)
        .unwrap()
        .expect("retained");
    let left = until.duration_since(SystemTime::now()).unwrap();
    assert!(
        left > Duration::from_secs(23 * 3600) && left <= Duration::from_secs(24 * 3600),
        "{left:?}"
    );
    // Deleting hides it; its data stays, and nothing expired is removed.
    b.delete(FileType::Pack, &name).unwrap();
    assert!(b.list(FileType::Pack).unwrap().is_empty());
    assert_eq!(b.remove_expired_versions().unwrap(), 0);

    // Straight to the server with the same credentials: the version is
    // there and deleting it is refused.
    let op = raw_client(&server, "locked");
    let path = format!("repo/data/ab/{name}");
    let versions = data_versions(&op.0, &path);
    assert_eq!(versions.len(), 1, "the data version survives the delete");
    let version = versions[0].clone();
    let e =
        op.0.delete_options(
            &path,
            opendal::options::DeleteOptions {
                version: Some(version.clone()),
                ..Default::default()
            },
        )
        .unwrap_err();
    eprintln!("deleting a retained version: {e}");
    assert_eq!(e.kind(), opendal::ErrorKind::PermissionDenied, "{e}");
    let data =
        op.0.read_options(
            &path,
            opendal::options::ReadOptions {
                version: Some(version),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(data.to_vec(), b"precious");
}

fn stream_backup(repo: &Repository, data: &[u8]) -> rewind_core::id::SnapshotId {
    let source = StreamSource {
        name: "x".into(),
        reader: Box::new(std::io::Cursor::new(data.to_vec())),
        finish: Box::new(|| Ok(())),
    };
    archiver::backup_stream(
        repo,
        &BackupOptions::new(vec![]),
        source,
        &Progress::default(),
    )
    .unwrap()
    .snapshot_id
    .unwrap()
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Prune on a locked bucket: packs that only a forgotten snapshot used are
/// retained, so prune keeps them marked and names them; the repository
/// stays whole. With a clock two days ahead prune believes their time is
/// up and deletes them: the store only hides them and refuses to destroy
/// their data.
#[test]
fn prune_leaves_retained_packs_and_the_store_refuses_to_destroy_them() {
    let server = SeaweedFs::start(&[]);
    server.create_locked_bucket("vault");
    server.set_env();
    let b = backend(&server, "vault", "repo");
    b.set_object_lock(ObjectLock {
        mode: LockMode::Governance,
        days: 1,
    })
    .unwrap();
    let kdf = KdfParams {
        m_cost_kib: 256,
        t_cost: 1,
        p_cost: 1,
    };
    let repo = Repository::init(b.clone(), b"pw", kdf, &KeyOwner::default()).unwrap();
    let old = stream_backup(&repo, &noise(3 << 20, 1));
    let _new = stream_backup(&repo, &noise(2 << 20, 2));
    b.delete(FileType::Snapshot, &old.to_hex()).unwrap();
    let packs_before = b.list(FileType::Pack).unwrap();

    let repo = Repository::open(b.clone(), b"pw").unwrap();
    let opts = PruneOptions {
        grace: SignedDuration::ZERO,
        delete_now: true,
        ..PruneOptions::default()
    };
    let r = prune::prune(&repo, &opts).unwrap();
    assert!(r.retained.count >= 1, "{r:?}");
    assert_eq!(r.deleted.count, 0, "{r:?}");
    assert_eq!(r.retained_until.len() as u64, r.retained.count);
    let in_a_day = Timestamp::now() + SignedDuration::from_hours(24);
    for (_, until) in &r.retained_until {
        assert!(*until <= in_a_day && *until > Timestamp::now(), "{until}");
    }
    assert_eq!(
        b.list(FileType::Pack).unwrap(),
        packs_before,
        "nothing deleted"
    );
    let report = check::check(
        &Repository::open(b.clone(), b"pw").unwrap(),
        &CheckOptions {
            read_data: true,
            ..CheckOptions::default()
        },
    )
    .unwrap();
    assert!(report.is_ok(), "{:?}", report.errors);
    // A second prune still waits, and says so again.
    let r = prune::prune(&Repository::open(b.clone(), b"pw").unwrap(), &opts).unwrap();
    assert!(r.retained.count >= 1 && r.deleted.count == 0, "{r:?}");

    // Prune's clock two days ahead: it deletes; the store hides the packs
    // but keeps every byte.
    let ahead = PruneOptions {
        now: Some(Timestamp::now() + SignedDuration::from_hours(48)),
        ..opts
    };
    let r = prune::prune(&Repository::open(b.clone(), b"pw").unwrap(), &ahead).unwrap();
    assert!(r.deleted.count >= 1 && r.retained.count == 0, "{r:?}");
    let op = raw_client(&server, "vault");
    let gone: Vec<_> = packs_before
        .iter()
        .filter(|p| !b.list(FileType::Pack).unwrap().contains(p))
        .collect();
    assert!(!gone.is_empty());
    for p in gone {
        let path = format!("repo/data/{}/{}", &p.name[..2], p.name);
        assert_eq!(data_versions(&op.0, &path).len(), 1, "{path} was destroyed");
    }
    assert_eq!(b.remove_expired_versions().unwrap(), 0);
    // What is left still checks clean.
    let report = check::check(
        &Repository::open(b.clone(), b"pw").unwrap(),
        &CheckOptions {
            read_data: true,
            ..CheckOptions::default()
        },
    )
    .unwrap();
    assert!(report.is_ok(), "{:?}", report.errors);
}
