//! `forget::plan` and `forget::execute` on a local repository: the
//! one-year floor is enforced by execute itself, superseded copies go
//! before their snapshot, what the storage keeps stays, and a plan
//! serializes to JSON that says what will be deleted. Also `init_with`'s
//! Object Lock, set before the first file.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::FAST_KDF;
use rewind_core::backend::{
    Backend, FileInfo, FileType, LocalBackend, LockMode, ObjectLock, WriteOutcome,
};
use rewind_core::forget::{self, ForgetOptions, PolicySource};
use rewind_core::format::snapshot::{BackupSummary, SnapshotFile, VERSION};
use rewind_core::id::{BlobId, SnapshotId};
use rewind_core::repository::{InitOptions, KeyOwner, Repository};
use rewind_core::retention::Policy;
use rewind_core::{Error, Result};

/// A local backend that records every mutation in order, refuses deletes
/// of chosen names as the rewind server does for young files, and can
/// lock objects.
#[derive(Debug)]
struct Recorder {
    inner: LocalBackend,
    log: Mutex<Vec<String>>,
    keep: Mutex<HashSet<String>>,
    can_lock: bool,
}

impl Recorder {
    fn new(dir: &Path, can_lock: bool) -> Arc<Self> {
        Arc::new(Recorder {
            inner: LocalBackend::new(dir),
            log: Mutex::new(Vec::new()),
            keep: Mutex::new(HashSet::new()),
            can_lock,
        })
    }
    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
    fn clear(&self) {
        self.log.lock().unwrap().clear();
    }
    /// The snapshot deletes recorded, in order.
    fn deleted_snapshots(&self) -> Vec<String> {
        self.log()
            .into_iter()
            .filter_map(|e| e.strip_prefix("delete snapshot ").map(str::to_string))
            .collect()
    }
    fn keep(&self, id: &SnapshotId) {
        self.keep.lock().unwrap().insert(id.to_hex());
    }
    fn keep_nothing(&self) {
        self.keep.lock().unwrap().clear();
    }
}

impl Backend for Recorder {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> Result<()> {
        self.log.lock().unwrap().push("create".into());
        self.inner.create()
    }
    fn list(&self, t: FileType) -> Result<Vec<FileInfo>> {
        self.inner.list(t)
    }
    fn read(&self, t: FileType, name: &str) -> Result<Vec<u8>> {
        self.inner.read(t, name)
    }
    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
        self.inner.read_range(t, name, offset, len)
    }
    fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<WriteOutcome> {
        self.log
            .lock()
            .unwrap()
            .push(format!("write {} {name}", t.what()));
        self.inner.write(t, name, data)
    }
    fn delete(&self, t: FileType, name: &str) -> Result<()> {
        if self.keep.lock().unwrap().contains(name) {
            return Err(Error::Refused(format!("{name} is younger than a day")));
        }
        self.log
            .lock()
            .unwrap()
            .push(format!("delete {} {name}", t.what()));
        self.inner.delete(t, name)
    }
    fn set_object_lock(&self, lock: ObjectLock) -> Result<()> {
        if !self.can_lock {
            return Err(Error::InvalidInput("no Object Lock here".into()));
        }
        self.log
            .lock()
            .unwrap()
            .push(format!("lock {} {}", lock.mode, lock.days));
        Ok(())
    }
}

fn init(b: Arc<Recorder>) -> Repository {
    Repository::init(b, b"pw", FAST_KDF, &KeyOwner::default()).unwrap()
}

fn snapshot(repo: &Repository, time: &str) -> SnapshotId {
    repo.save_snapshot(&SnapshotFile {
        version: VERSION,
        time: time.parse().unwrap(),
        tree: BlobId::default(),
        paths: vec!["/data".into()],
        hostname: "h".into(),
        username: "u".into(),
        tags: vec![],
        parent: None,
        program: "test".into(),
        summary: BackupSummary::default(),
        protection: None,
        original: None,
        copied_from: None,
        rewritten: None,
        scan: None,
    })
    .unwrap()
}

fn keep_last(n: u32, allow_short_history: bool) -> ForgetOptions {
    ForgetOptions {
        policy: Some(Policy {
            keep_last: n,
            ..Default::default()
        }),
        allow_short_history,
        ..Default::default()
    }
}

fn plan(repo: &Repository, opts: &ForgetOptions) -> forget::ForgetPlan {
    forget::plan(
        repo,
        opts,
        &jiff::tz::TimeZone::UTC,
        "2026-06-01T00:00:00Z".parse().unwrap(),
    )
    .unwrap()
}

fn ids(repo: &Repository) -> HashSet<SnapshotId> {
    repo.snapshots()
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

fn files(repo: &Repository) -> usize {
    repo.backend().list(FileType::Snapshot).unwrap().len()
}

#[test]
fn the_history_floor_is_enforced_by_execute() {
    let dir = tempfile::tempdir().unwrap();
    let b = Recorder::new(dir.path(), false);
    let repo = init(b.clone());
    // Fifteen months of monthly snapshots.
    for m in 0..15 {
        let (y, m) = (2025 + m / 12, m % 12 + 1);
        snapshot(&repo, &format!("{y}-{m:02}-15T10:00:00Z"));
    }
    b.clear();

    let p = plan(&repo, &keep_last(1, false));
    let floor = p.history_floor();
    assert!(!floor.respected() && !floor.allows() && !floor.overridden);
    assert_eq!(floor.short_groups.len(), 1);
    assert!(floor.short_groups[0].all_days > 365.0);
    assert_eq!(floor.short_groups[0].kept_days, 0.0);
    assert_eq!(p.removals().len(), 14);
    assert!(matches!(p.check_history_floor(), Err(Error::Refused(_))));
    // Whoever calls execute, the floor holds: nothing is deleted.
    let e = forget::execute(&repo, &p).unwrap_err();
    assert!(matches!(e, Error::Refused(_)), "{e}");
    assert!(e.to_string().contains("365 days"), "{e}");
    assert!(b.log().is_empty(), "{:?}", b.log());
    assert_eq!(files(&repo), 15);

    // A policy that keeps the year passes.
    let p = plan(
        &repo,
        &ForgetOptions {
            policy: Some(Policy {
                keep_monthly: 14,
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    assert!(p.history_floor().respected());
    let r = forget::execute(&repo, &p).unwrap();
    assert_eq!(r.removed.len(), 1);
    assert_eq!(files(&repo), 14);

    // The override, given in the plan's options.
    let p = plan(&repo, &keep_last(1, true));
    assert!(!p.history_floor().respected() && p.history_floor().allows());
    let r = forget::execute(&repo, &p).unwrap();
    assert_eq!(r.removed.len(), 13);
    assert!(r.kept_by_storage.is_empty());
    assert_eq!(files(&repo), 1);
}

#[test]
fn superseded_copies_go_before_their_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let b = Recorder::new(dir.path(), false);
    let repo = init(b.clone());
    let a0 = snapshot(&repo, "2026-05-01T10:00:00Z");
    let b0 = snapshot(&repo, "2026-05-02T10:00:00Z");
    let _c = snapshot(&repo, "2026-05-03T10:00:00Z");
    // The storage keeps the old files of two rewrites of A and one of B.
    b.keep(&a0);
    let a1 = repo.set_protection(&a0, None).unwrap();
    assert_eq!(a1, a0, "nothing changed, nothing written");
    let a1 = repo
        .set_protection(
            &a0,
            Some(rewind_core::format::snapshot::Protection { until: None }),
        )
        .unwrap();
    b.keep(&a1);
    let a2 = repo.set_protection(&a1, None).unwrap();
    b.keep(&b0);
    let b1 = repo
        .set_protection(
            &b0,
            Some(rewind_core::format::snapshot::Protection { until: None }),
        )
        .unwrap();
    b.keep_nothing();
    assert_eq!(files(&repo), 6);
    let listed = ids(&repo);
    assert_eq!(listed.len(), 3);
    assert!(listed.contains(&a2) && listed.contains(&b1));

    // keep-last 1 removes A (after its two copies); B is protected and
    // stays, its old copy is garbage that goes last.
    let p = plan(&repo, &keep_last(1, false));
    assert_eq!(p.policy_source(), PolicySource::Given);
    assert!(p.history_floor().respected());
    let removals = p.removals();
    assert_eq!(removals.len(), 1, "{removals:?}");
    assert_eq!(removals[0].id, a2);
    let mut copies = removals[0].superseded.clone();
    copies.sort();
    let mut want = vec![a0, a1];
    want.sort();
    assert_eq!(copies, want);
    assert_eq!(p.superseded_of_others(), &[b0]);

    // The plan as JSON lists what will be deleted, in order.
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["remove"][0]["id"], a2.to_hex());
    assert_eq!(json["remove"][0]["superseded"].as_array().unwrap().len(), 2);
    assert_eq!(json["remove_superseded"][0], b0.to_hex());
    assert_eq!(json["history_floor"]["min_days"], 365.0);
    assert_eq!(json["options"]["allow_short_history"], false);
    assert_eq!(json["policy_source"], "given");
    let decisions = json["groups"][0]["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 3);
    assert!(decisions
        .iter()
        .any(|d| d["keep"] == true && d["reasons"][0] == "protected"));

    // First: the storage keeps one of A's copies. A stays (else that copy
    // would come back as A), its other copy goes, and the report says so.
    b.clear();
    b.keep(&a1);
    let r = forget::execute(&repo, &p).unwrap();
    assert!(r.removed.is_empty());
    assert_eq!(r.kept_by_storage.len(), 1);
    assert_eq!(r.kept_by_storage[0].id, a2);
    assert!(r.kept_by_storage[0].reason.contains("younger"));
    assert_eq!(b.deleted_snapshots(), vec![a0.to_hex(), b0.to_hex()]);
    assert_eq!(r.superseded_removed, vec![b0]);
    assert!(ids(&repo).contains(&a2));

    // Then it lets go: the copies, then the snapshot.
    b.keep_nothing();
    b.clear();
    let p = plan(&repo, &keep_last(1, false));
    let r = forget::execute(&repo, &p).unwrap();
    assert_eq!(r.removed, vec![a2]);
    assert_eq!(b.deleted_snapshots(), vec![a1.to_hex(), a2.to_hex()]);
    let left = ids(&repo);
    assert_eq!(left.len(), 2);
    assert!(!left.contains(&a2) && left.contains(&b1));
    assert_eq!(files(&repo), 2);
}

#[test]
fn a_dry_run_is_a_plan_and_the_default_policy_applies() {
    let dir = tempfile::tempdir().unwrap();
    let b = Recorder::new(dir.path(), false);
    let repo = init(b.clone());
    for d in 1..=5 {
        snapshot(&repo, &format!("2026-05-{d:02}T10:00:00Z"));
    }
    b.clear();
    let p = plan(&repo, &ForgetOptions::default());
    assert_eq!(p.policy_source(), PolicySource::Default);
    assert_eq!(p.policy(), &Policy::recommended());
    assert!(p.removals().is_empty(), "daily for 30 days keeps all five");
    assert!(b.log().is_empty(), "a plan changes nothing");
    // A policy without rules would keep nothing: refused.
    let e = forget::plan(
        &repo,
        &ForgetOptions {
            policy: Some(Policy::default()),
            ..Default::default()
        },
        &jiff::tz::TimeZone::UTC,
        jiff::Timestamp::now(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e}");
    // The filter: snapshots of another host are not considered.
    let p = plan(
        &repo,
        &ForgetOptions {
            filter: rewind_core::select::SnapshotFilter {
                hosts: vec!["elsewhere".into()],
                ..Default::default()
            },
            ..keep_last(1, false)
        },
    );
    assert!(p.groups().is_empty() && p.removals().is_empty());
    // A plan of another repository is not carried out here.
    let other_dir = tempfile::tempdir().unwrap();
    let other = init(Recorder::new(other_dir.path(), false));
    let p = plan(&repo, &keep_last(1, false));
    assert_eq!(p.removals().len(), 4);
    assert!(matches!(
        forget::execute(&other, &p),
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(files(&repo), 5);
}

#[test]
fn init_sets_the_object_lock_before_the_first_file() {
    let lock = ObjectLock {
        mode: LockMode::Governance,
        days: 7,
    };
    let opts = InitOptions {
        object_lock: Some(lock),
    };
    // Storage that cannot lock: refused, and nothing is written.
    let dir = tempfile::tempdir().unwrap();
    let b = Recorder::new(&dir.path().join("repo"), false);
    let e =
        Repository::init_with(b.clone(), b"pw", FAST_KDF, &KeyOwner::default(), &opts).unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e}");
    assert!(b.log().is_empty(), "{:?}", b.log());
    assert!(!dir.path().join("repo").exists());

    let b = Recorder::new(&dir.path().join("repo"), true);
    Repository::init_with(b.clone(), b"pw", FAST_KDF, &KeyOwner::default(), &opts).unwrap();
    let log = b.log();
    assert_eq!(log[0], "lock governance 7", "{log:?}");
    assert!(
        log[1..].iter().any(|e| e.starts_with("write key")),
        "{log:?}"
    );
    assert_eq!(log.last().unwrap(), "write config config", "{log:?}");

    // Not over an existing repository (the lock is not touched either),
    // and never with an empty password.
    b.clear();
    assert!(
        Repository::init_with(b.clone(), b"pw", FAST_KDF, &KeyOwner::default(), &opts).is_err()
    );
    let empty = tempfile::tempdir().unwrap();
    let e = Repository::init(
        Arc::new(LocalBackend::new(empty.path())),
        b"",
        FAST_KDF,
        &KeyOwner::default(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e}");
    assert!(b.log().is_empty(), "{:?}", b.log());
}
