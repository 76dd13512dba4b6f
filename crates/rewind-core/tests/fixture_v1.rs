//! The v1 fixture repository (tests/fixtures/v1, DESIGN §13 rule 4): a
//! repository written by the v1 code, committed byte for byte, that today's
//! code must open, list, check and restore byte-exact.
//!
//! `reads_and_restores_the_v1_fixture` is the test. `generate_fixture_v1`
//! (ignored) is how the committed bytes were made; it never writes into the
//! fixture directory (it needs REWIND_FIXTURE_OUT, a directory that does not
//! exist yet), so running it cannot change what the test reads. See
//! tests/fixtures/v1/README.md.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use rewind_core::archiver::{self, BackupOptions, ParentChoice, Progress, StreamSource};
use rewind_core::backend::{Backend, FileType, LocalBackend};
use rewind_core::check::{self, CheckOptions};
use rewind_core::crypto::KdfParams;
use rewind_core::format::policy::CopyTarget;
use rewind_core::format::prune::RunningKind;
use rewind_core::format::snapshot::{Protection, SnapshotFile};
use rewind_core::format::tree::NodeKind;
use rewind_core::id::SnapshotId;
use rewind_core::repository::{KeyOwner, Repository};
use rewind_core::restorer::{self, RestoreOptions, RestoreStart};
use rewind_core::retention::Policy;
use rewind_core::scan::Verdict;
use rewind_core::Error;

/// Where the source tree of the fixture lived (recorded in its snapshots).
const BASE: &str = "/tmp/rewind-fixture-v1";
/// The fixture's host and user.
const HOST: &str = "fixture-host";
const USER: &str = "fixture";
/// Key files of the fixture use a small KDF so that opening is fast.
const KDF: KdfParams = KdfParams {
    m_cost_kib: 256,
    t_cost: 1,
    p_cost: 1,
};
const KDF_2: KdfParams = KdfParams {
    m_cost_kib: 512,
    t_cost: 2,
    p_cost: 1,
};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

// ---------------------------------------------------------------------------
// The manifest: what a directory tree holds, read with plain std::fs (not
// with rewind), so that it is an independent statement of what a restore
// must give back.

/// One entry of a directory tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    /// Path relative to the tree's root, for people (lossy UTF-8).
    path: String,
    /// The exact path bytes, hex.
    path_hex: String,
    /// file, dir, symlink, fifo, socket, char, block.
    kind: String,
    /// st_mode (type bits included).
    mode: u32,
    uid: u32,
    gid: u32,
    /// Files only (0 for others).
    size: u64,
    /// mtime seconds and nanoseconds.
    mtime: (i64, u32),
    /// Link count (files only; 0 for others).
    nlink: u64,
    /// BLAKE3 of the content (files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    blake3: Option<String>,
    /// Symlink target bytes, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target_hex: Option<String>,
    /// Device number (devices only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rdev: Option<u64>,
    /// Extended attributes in the user namespace: name hex -> value hex.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    xattrs: BTreeMap<String, String>,
    /// A file with holes (allocated blocks below its size).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    sparse: bool,
}

fn walk_into(root: &Path, rel: &Path, out: &mut Vec<Entry>) {
    let mut names: Vec<_> = fs::read_dir(root.join(rel))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let r = rel.join(&name);
        let p = root.join(&r);
        let md = fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        let kind = if ft.is_file() {
            "file"
        } else if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_socket() {
            "socket"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else {
            panic!("unknown file type at {}", p.display())
        };
        let mut xattrs = BTreeMap::new();
        if !ft.is_symlink() {
            for n in xattr::list(&p).unwrap() {
                if n.as_bytes().starts_with(b"user.") {
                    let v = xattr::get(&p, &n).unwrap().unwrap_or_default();
                    xattrs.insert(hex::encode(n.as_bytes()), hex::encode(v));
                }
            }
        }
        out.push(Entry {
            path: r.to_string_lossy().into_owned(),
            path_hex: hex::encode(r.as_os_str().as_bytes()),
            kind: kind.to_string(),
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            size: if ft.is_file() { md.len() } else { 0 },
            mtime: (md.mtime(), md.mtime_nsec() as u32),
            nlink: if ft.is_file() { md.nlink() } else { 0 },
            blake3: ft
                .is_file()
                .then(|| blake3::hash(&fs::read(&p).unwrap()).to_hex().to_string()),
            target_hex: ft
                .is_symlink()
                .then(|| hex::encode(fs::read_link(&p).unwrap().as_os_str().as_bytes())),
            rdev: (ft.is_char_device() || ft.is_block_device()).then(|| md.rdev()),
            xattrs,
            sparse: ft.is_file() && md.blocks() * 512 < md.len(),
        });
        if ft.is_dir() {
            walk_into(root, &r, out);
        }
    }
}

/// Every entry below `root` (not `root` itself), sorted by path bytes.
fn manifest(root: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    walk_into(root, Path::new(""), &mut out);
    out
}

/// What the generator recorded: `fixture.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Fixture {
    /// How it was made (program, date, as whom).
    made_by: String,
    /// Every password (one key file each); the first is the main one.
    passwords: Vec<String>,
    /// The snapshots as listed (superseded copies hidden).
    snapshots: Vec<FixtureSnapshot>,
    /// Snapshot files that are superseded copies (a protect whose delete
    /// did not happen), hidden from listings.
    superseded: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FixtureSnapshot {
    /// A name for the test (also a tag of the snapshot).
    label: String,
    /// Snapshot id.
    id: String,
    /// The backed-up path whose contents `manifest` lists.
    path: String,
    /// The tree that restoring `path` must give back.
    manifest: Vec<Entry>,
}

// ---------------------------------------------------------------------------
// The test.

/// Copies the committed fixture into a fresh directory (nothing the test
/// does may touch the committed bytes) and adds the directories git does
/// not keep (empty `data/XX`, `running/` ...), which a writer needs.
fn fixture_copy(tmp: &Path) -> PathBuf {
    let to = tmp.join("repo");
    assert!(std::process::Command::new("cp")
        .arg("-R")
        .arg(fixture_dir().join("repo"))
        .arg(&to)
        .status()
        .unwrap()
        .success());
    for t in FileType::ALL {
        fs::create_dir_all(to.join(t.dir())).unwrap();
    }
    for i in 0..=255u8 {
        fs::create_dir_all(to.join("data").join(hex::encode([i]))).unwrap();
    }
    to
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// What of `expected` a restore can give back here: sockets are never
/// restored, device nodes (all in `dev/`, excluded otherwise) and owners
/// only as root.
fn restorable(expected: &[Entry]) -> Vec<Entry> {
    expected
        .iter()
        .filter(|e| e.kind != "socket")
        .filter(|e| is_root() || !(e.path == "dev" || e.path.starts_with("dev/")))
        .cloned()
        .map(|mut e| {
            if !is_root() {
                e.uid = 0;
                e.gid = 0;
            }
            e
        })
        .collect()
}

fn restored(target: &Path) -> Vec<Entry> {
    manifest(target)
        .into_iter()
        .map(|mut e| {
            if !is_root() {
                e.uid = 0;
                e.gid = 0;
            }
            if e.kind == "dir" {
                e.size = 0;
            }
            e
        })
        .collect()
}

fn by_tag<'a>(
    snaps: &'a [(SnapshotId, SnapshotFile)],
    tag: &str,
) -> &'a (SnapshotId, SnapshotFile) {
    let found: Vec<_> = snaps
        .iter()
        .filter(|(_, s)| s.tags.iter().any(|t| t == tag))
        .collect();
    assert_eq!(found.len(), 1, "snapshots tagged {tag}: {found:?}");
    found[0]
}

fn ts(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

#[test]
fn reads_and_restores_the_v1_fixture() {
    let fixture: Fixture =
        serde_json::from_slice(&fs::read(fixture_dir().join("fixture.json")).unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(tmp.path());
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(&dir));

    // Config, keys: every password opens it, a wrong one does not.
    let config = Repository::probe(&*backend).unwrap();
    assert_eq!((config.format.as_str(), config.version), ("rewind", 1));
    assert_eq!(fixture.passwords.len(), 3);
    for pw in &fixture.passwords {
        Repository::open(backend.clone(), pw.as_bytes()).unwrap();
    }
    assert!(matches!(
        Repository::open(backend.clone(), b"not the password"),
        Err(Error::WrongPassword { .. })
    ));
    let repo = Repository::open(backend.clone(), fixture.passwords[0].as_bytes()).unwrap();
    let keys = repo.keys().unwrap();
    assert_eq!(keys.len(), 3);
    assert_eq!(keys.iter().filter(|k| k.current).count(), 1);
    assert!(keys.iter().any(|k| k.file.params == KDF_2));

    // Snapshots and every optional field added since v1 began.
    let snaps = repo.snapshots().unwrap();
    let (_, damaged) = repo.snapshots_checked().unwrap();
    assert!(damaged.is_empty(), "{damaged:?}");
    let mut listed: Vec<String> = snaps.iter().map(|(id, _)| id.to_hex()).collect();
    let mut want: Vec<String> = fixture.snapshots.iter().map(|s| s.id.clone()).collect();
    listed.sort();
    want.sort();
    assert_eq!(listed, want, "listed snapshots");
    let superseded: Vec<String> = repo
        .superseded_snapshots()
        .unwrap()
        .iter()
        .map(|(id, _)| id.to_hex())
        .collect();
    assert_eq!(superseded, fixture.superseded);
    for s in &fixture.snapshots {
        let (id, snap) = by_tag(&snaps, &s.label);
        assert_eq!(id.to_hex(), s.id, "{}", s.label);
        assert_eq!(snap.version, 1);
        assert_eq!(
            snap.hostname,
            if s.label == "laptop" { "laptop" } else { HOST }
        );
    }
    let now = jiff::Timestamp::now();

    let (_, base) = by_tag(&snaps, "base");
    assert_eq!(base.time, ts("2026-01-01T10:00:00Z"));
    assert_eq!(base.paths, vec![format!("{BASE}/src")]);
    assert_eq!(base.parent, None);
    assert_eq!(
        base.protection,
        Some(Protection {
            until: Some(ts("2099-01-01T00:00:00Z"))
        })
    );
    assert!(base.is_protected(now));
    assert!(base.original.is_some() && base.rewritten.is_some());
    assert!(base.scan.is_none() && base.copied_from.is_none());
    assert!(base.summary.files_new > 10);

    // The trees hold every node kind and the optional parts of nodes.
    let node = |name: &str| {
        restorer::find_node(&repo, &base.tree, &Path::new(BASE).join("src").join(name))
            .unwrap()
            .unwrap_or_else(|| panic!("{name} in base"))
    };
    let NodeKind::File { content, holes } = node("big.dat").kind else {
        panic!("big.dat")
    };
    assert!(content.len() >= 2 && holes.is_empty());
    let NodeKind::File { holes, .. } = node("sparse.img").kind else {
        panic!("sparse.img")
    };
    assert_eq!(holes.len(), 2);
    assert_eq!(node("hardlink-b").links, 2);
    assert_eq!(node("xattr.txt").xattrs.len(), 2);
    assert!(node("old.txt").mtime.secs < 0);
    assert!(node("owned.txt").user.is_none() || node("owned.txt").uid == 1234);
    for (name, kind) in [
        ("link", 'l'),
        ("fifo", 'p'),
        ("socket", 's'),
        ("dev/null", 'c'),
        ("dev/loop7", 'b'),
        ("sub", 'd'),
        ("empty", '-'),
    ] {
        assert_eq!(node(name).type_char(), kind, "{name}");
    }

    let (_, daily) = by_tag(&snaps, "daily");
    assert_eq!(daily.protection, Some(Protection { until: None }));
    assert_eq!(
        daily.parent, base.original,
        "parent = the base before protect"
    );
    assert_eq!(daily.original.unwrap().to_hex(), fixture.superseded[0]);
    assert!(daily.rewritten.is_some());
    let scan = daily.scan.as_ref().expect("daily was scanned");
    assert_eq!(
        (scan.verdict, scan.effective()),
        (Verdict::Clean, Verdict::Clean)
    );
    assert!(scan.overruled.is_none());
    // The superseded copy is the same snapshot before protect.
    let (_, old) = repo
        .read_snapshot(&fixture.superseded[0].parse().unwrap())
        .unwrap();
    assert_eq!((old.tree, old.protection.clone()), (daily.tree, None));

    let (_, attack) = by_tag(&snaps, "attack");
    let scan = attack.scan.as_ref().expect("attack was scanned");
    assert_eq!(scan.verdict, Verdict::Suspicious);
    assert_eq!(scan.effective(), Verdict::Suspicious);
    assert!(
        scan.overruled.is_none() && scan.counts.suspects >= 5,
        "{scan:?}"
    );
    assert!(!scan.reasons.is_empty() && !scan.top_paths.is_empty());
    assert!(attack.original.is_none() && attack.protection.is_none());

    let (_, marked) = by_tag(&snaps, "attack-2");
    let scan = marked.scan.as_ref().expect("attack-2 was scanned");
    assert_eq!(scan.verdict, Verdict::Suspicious);
    let o = scan.overruled.as_ref().expect("overruled");
    assert_eq!(
        (o.verdict, o.by.as_str()),
        (Verdict::Clean, "admin@fixture-host")
    );
    assert_eq!(scan.effective(), Verdict::Clean);
    assert!(marked.original.is_some() && marked.rewritten.is_some());

    let (_, repaired) = by_tag(&snaps, "repaired");
    assert!(repaired.tags.iter().any(|t| t == "damaged"));
    let damaged_id = repaired.original.expect("repair records the original");
    assert!(matches!(
        repo.read_snapshot(&damaged_id),
        Err(Error::Missing { .. })
    ));
    assert!(repaired.rewritten.is_none() && repaired.protection.is_none());

    let (_, laptop) = by_tag(&snaps, "laptop");
    assert!(laptop.copied_from.is_some());
    assert_eq!(laptop.original, None);
    assert_eq!(laptop.protection, Some(Protection { until: None }));
    assert_eq!(laptop.paths, vec![format!("{BASE}/laptop")]);

    let (_, stdin) = by_tag(&snaps, "stdin");
    assert_eq!(stdin.paths, vec!["/dump.sql".to_string()]);

    // Settings: the policy, the copy target, the alert URL.
    let settings = repo.settings().unwrap().expect("stored settings");
    assert_eq!(settings.version, 1);
    assert_eq!(settings.policy, fixture_policy());
    assert_eq!(settings.copy_to, Some(fixture_copy_target()));
    assert_eq!(
        settings.notify_url.as_deref(),
        Some("https://alerts.example/rewind")
    );

    // Prune state: a marked pack, still indexed and readable.
    let (state, files) = repo.prune_state().unwrap();
    let state = state.expect("a prune state");
    assert_eq!((state.version, files.len()), (1, 1));
    assert!(!state.marks.is_empty());
    let index_files = repo.index_files().unwrap();
    assert!(index_files.1.is_empty(), "{:?}", index_files.1);
    let indexed: std::collections::HashSet<_> = index_files
        .0
        .iter()
        .flat_map(|(_, f)| f.packs.iter().map(|p| p.id))
        .collect();
    for m in &state.marks {
        assert!(indexed.contains(&m.pack), "marked pack {} indexed", m.pack);
    }
    // Index files written by repair carry `supersedes`.
    assert!(index_files.0.iter().any(|(_, f)| !f.supersedes.is_empty()));

    // A running marker (left by a backup that never ended).
    let markers = repo.running_markers().unwrap();
    assert_eq!(markers.len(), 1);
    assert_eq!(markers[0].1.kind, RunningKind::Backup);
    assert_eq!(markers[0].1.hostname, HOST);

    // Check, reading every pack.
    let report = check::check(
        &repo,
        &CheckOptions {
            read_data: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.affected.is_empty());
    assert_eq!(report.snapshots, fixture.snapshots.len());
    assert_eq!(report.packs_read, report.packs);

    // Restore every snapshot byte-exact (content, mode, owner as root,
    // mtime, symlink targets, xattrs, holes, hard links).
    for s in &fixture.snapshots {
        let (_, snap) = by_tag(&snaps, &s.label);
        let target = tmp.path().join(format!("restore-{}", s.label));
        let start = if s.path == "/" {
            RestoreStart::Tree {
                tree: snap.tree,
                snap_path: PathBuf::from("/"),
            }
        } else {
            let node = restorer::find_node(&repo, &snap.tree, Path::new(&s.path))
                .unwrap()
                .unwrap();
            let NodeKind::Dir { subtree } = node.kind else {
                panic!("{} is not a directory", s.path)
            };
            RestoreStart::Tree {
                tree: subtree,
                snap_path: PathBuf::from(&s.path),
            }
        };
        let excludes = if is_root() {
            vec![]
        } else {
            vec![format!("{}/dev", s.path)]
        };
        let stats = restorer::restore(
            &repo,
            start,
            &RestoreOptions {
                target: target.clone(),
                verify: true,
                excludes,
                ..Default::default()
            },
            &Progress::default(),
        )
        .unwrap();
        assert!(stats.errors.is_empty(), "{}: {:?}", s.label, stats.errors);
        let want = restorable(&s.manifest);
        let got = restored(&target);
        if got != want {
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g, w, "{}: first difference", s.label);
            }
            assert_eq!(got.len(), want.len(), "{}: entries", s.label);
        }
    }

    // Today's writers work on it too: a backup, then a prune plan.
    let src = tmp.path().join("new");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"written by today's code").unwrap();
    let mut opts = BackupOptions::new(vec![src.clone()]);
    opts.hostname = HOST.into();
    let out = archiver::backup(&repo, &opts, &Progress::default()).unwrap();
    assert!(out.warnings.is_empty());
    let repo = Repository::open(backend.clone(), fixture.passwords[1].as_bytes()).unwrap();
    let plan = rewind_core::prune::prune(
        &repo,
        &rewind_core::prune::PruneOptions {
            dry_run: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(plan.snapshots as usize, fixture.snapshots.len() + 1);
    assert!(check::check(&repo, &CheckOptions::default())
        .unwrap()
        .errors
        .is_empty());

    // Added 2026-11-30 (`extend_fixture_v1_proofs`): a restore test of the
    // `daily` snapshot, stored in `proofs/`.
    let (proofs, damaged) = rewind_core::proof::proofs(&repo).unwrap();
    assert_eq!((proofs.len(), damaged), (1, 0));
    let p = &proofs[0];
    assert!(p.passed(), "{p:?}");
    assert_eq!(p.snapshot, by_tag(&snaps, "daily").0);
    assert_eq!((p.tested, p.live_compared), (5, 0));
    assert!(p.files >= p.tested && p.entries > p.files);
}

/// Adds a restore test (`proofs/`, DESIGN §3.11) to a copy of the
/// committed fixture, written by today's code; the old files stay as they
/// are. `REWIND_FIXTURE_OUT=/tmp/fixture-out cargo test -p rewind-core
/// --test fixture_v1 -- --ignored extend_fixture_v1_proofs`, then copy
/// `/tmp/fixture-out/repo/proofs` into the fixture.
#[test]
#[ignore = "extends the fixture; run once for the proofs/ addition"]
fn extend_fixture_v1_proofs() {
    let out = PathBuf::from(std::env::var("REWIND_FIXTURE_OUT").expect("REWIND_FIXTURE_OUT"));
    assert!(!out.exists(), "{} exists", out.display());
    fs::create_dir_all(&out).unwrap();
    let fixture: Fixture =
        serde_json::from_slice(&fs::read(fixture_dir().join("fixture.json")).unwrap()).unwrap();
    let dir = fixture_copy(&out);
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(&dir));
    let repo = Repository::open(backend, fixture.passwords[0].as_bytes()).unwrap();
    let snaps = repo.snapshots().unwrap();
    let (id, snap) = by_tag(&snaps, "daily");
    let scratch = out.join("scratch");
    let p = rewind_core::proof::restore_test(
        &repo,
        *id,
        snap,
        rewind_core::proof::Sample::Files(5),
        &scratch,
        1,
    )
    .unwrap();
    assert!(p.passed(), "{p:?}");
    repo.write_file(&p).unwrap();
}

// ---------------------------------------------------------------------------
// The generator (how the committed bytes were made).

fn fixture_policy() -> Policy {
    Policy {
        keep_last: 3,
        keep_daily: 7,
        keep_within_weekly: Some("3m".into()),
        keep_tags: vec!["base".into()],
        ..Policy::default()
    }
}

fn fixture_copy_target() -> CopyTarget {
    CopyTarget {
        location: "sftp:backup@offsite.example:/srv/rewind/fixture".into(),
        options: [("sftp.command".to_string(), "ssh -p 2222".to_string())].into(),
        password_file: Some("/etc/rewind/offsite.password".into()),
    }
}

/// xorshift64: deterministic bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// Text from a small vocabulary: compresses well, like documents.
    fn text(&mut self, n: usize) -> Vec<u8> {
        const WORDS: [&str; 8] = [
            "invoice",
            "total",
            "customer",
            "shipment",
            "quarterly",
            "report",
            "the",
            "and",
        ];
        let mut out = String::new();
        while out.len() < n {
            let x = self.next();
            out.push_str(WORDS[(x >> 33) as usize % WORDS.len()]);
            out.push(if x.is_multiple_of(11) { '\n' } else { ' ' });
        }
        out.into_bytes()
    }
}

/// Sets a path's mtime (and atime) without following symlinks.
fn touch(p: &Path, secs: i64, nanos: u32) {
    let t = filetime::FileTime::from_unix_time(secs, nanos);
    filetime::set_symlink_file_times(p, t, t).unwrap();
}

fn write(p: &Path, data: &[u8], mode: u32, mtime: (i64, u32)) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    touch(p, mtime.0, mtime.1);
}

/// Gives every directory below (and including) `root` a fixed mtime,
/// deepest first: the state's directory times.
fn settle_dirs(root: &Path, secs: i64) {
    let mut dirs: Vec<PathBuf> = manifest(root)
        .iter()
        .filter(|e| e.kind == "dir")
        .map(|e| {
            root.join(std::ffi::OsStr::from_bytes(
                &hex::decode(&e.path_hex).unwrap(),
            ))
        })
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for (i, d) in dirs.iter().enumerate() {
        touch(d, secs + i as i64, 500_000_000);
    }
    touch(root, secs, 0);
}

/// In-place "encryption" (a keystream XOR), as ransomware does.
fn encrypt(p: &Path, mtime: i64) {
    let data = fs::read(p).unwrap();
    let mut r = Rng(0x9E37_79B9_7F4A_7C15 ^ data.len() as u64);
    let out: Vec<u8> = data.iter().map(|b| b ^ r.next() as u8).collect();
    fs::write(p, out).unwrap();
    touch(p, mtime, 0);
}

/// The first state of the source tree: every kind of file.
fn make_source(src: &Path) {
    let t0 = 1_748_779_200; // 2025-06-01T12:00:00Z
    let mut rng = Rng(0x5EED_F1C5_0001);
    fs::create_dir_all(src).unwrap();
    write(
        &src.join("hello.txt"),
        b"Hello, rewind v1 fixture!\n",
        0o644,
        (t0, 123_456_789),
    );
    write(&src.join("empty"), b"", 0o644, (t0 + 1, 0));
    write(
        &src.join("binary.bin"),
        &rng.bytes(16 * 1024),
        0o600,
        (t0 + 2, 1),
    );
    // More than the chunker's maximum (1 MiB): several chunks. Mostly zeros
    // with a marker every 4 KiB, so that it compresses to almost nothing.
    let mut big = vec![0u8; 1_600_000];
    for (i, block) in big.chunks_mut(4096).enumerate() {
        let m = format!("block {i:06} of big.dat\n");
        block[..m.len()].copy_from_slice(m.as_bytes());
    }
    write(&src.join("big.dat"), &big, 0o644, (t0 + 3, 999_999_999));
    // A sparse file: data at 0 and at 1 MiB, holes between and after.
    {
        use std::io::{Seek, SeekFrom, Write};
        let p = src.join("sparse.img");
        let mut f = fs::File::create(&p).unwrap();
        f.write_all(&rng.text(4096)).unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(&rng.text(4096)).unwrap();
        f.set_len(3 << 20).unwrap();
        drop(f);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        touch(&p, t0 + 4, 0);
        let md = fs::metadata(&p).unwrap();
        assert!(
            md.blocks() * 512 < md.len(),
            "this file system made no holes"
        );
    }
    // Before 1970 (a negative time).
    write(
        &src.join("old.txt"),
        b"older than the epoch\n",
        0o444,
        (-86_400 * 400, 42),
    );
    write(
        &src.join("run.sh"),
        b"#!/bin/sh\necho fixture\n",
        0o4755,
        (t0 + 5, 0),
    );
    // Names are bytes: not UTF-8, a newline, spaces.
    write(
        &src.join(std::ffi::OsStr::from_bytes(b"caf\xe9 \xff.txt")),
        b"latin-1 name\n",
        0o644,
        (t0 + 6, 0),
    );
    write(
        &src.join("new\nline.txt"),
        b"a newline in the name\n",
        0o644,
        (t0 + 7, 0),
    );
    // Extended attributes.
    let xa = src.join("xattr.txt");
    write(&xa, b"has extended attributes\n", 0o644, (t0 + 8, 0));
    xattr::set(&xa, "user.fixture", b"v1").unwrap();
    xattr::set(&xa, "user.binary", &[0, 255, 1, 10]).unwrap();
    touch(&xa, t0 + 8, 0);
    // Hard links.
    write(
        &src.join("hardlink-a"),
        b"one inode, two names\n",
        0o640,
        (t0 + 9, 0),
    );
    fs::hard_link(src.join("hardlink-a"), src.join("hardlink-b")).unwrap();
    // Symlinks: relative, absolute and dangling.
    std::os::unix::fs::symlink("hello.txt", src.join("link")).unwrap();
    touch(&src.join("link"), t0 + 10, 5);
    std::os::unix::fs::symlink("/nonexistent/target", src.join("dangling")).unwrap();
    touch(&src.join("dangling"), t0 + 11, 0);
    // A fifo and a socket.
    nix::unistd::mkfifo(
        &src.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o620),
    )
    .unwrap();
    touch(&src.join("fifo"), t0 + 12, 0);
    drop(std::os::unix::net::UnixListener::bind(src.join("socket")).unwrap());
    touch(&src.join("socket"), t0 + 13, 0);
    // Device nodes and another owner (as root only).
    if is_root() {
        use nix::sys::stat::{makedev, mknod, Mode, SFlag};
        fs::create_dir_all(src.join("dev")).unwrap();
        mknod(
            &src.join("dev/null"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(1, 3),
        )
        .unwrap();
        mknod(
            &src.join("dev/loop7"),
            SFlag::S_IFBLK,
            Mode::from_bits_truncate(0o660),
            makedev(7, 7),
        )
        .unwrap();
        touch(&src.join("dev/null"), t0 + 14, 0);
        touch(&src.join("dev/loop7"), t0 + 15, 0);
        let owned = src.join("owned.txt");
        write(&owned, b"owned by someone else\n", 0o640, (t0 + 16, 0));
        std::os::unix::fs::lchown(&owned, Some(1234), Some(5678)).unwrap();
    }
    // Directories: nested, empty, sticky, restrictive.
    write(
        &src.join("sub/nested.txt"),
        b"nested\n",
        0o644,
        (t0 + 17, 0),
    );
    write(
        &src.join("sub/deeper/deep.txt"),
        &rng.text(3000),
        0o644,
        (t0 + 18, 0),
    );
    fs::create_dir_all(src.join("sub/emptydir")).unwrap();
    fs::create_dir_all(src.join("sub/sticky")).unwrap();
    fs::set_permissions(src.join("sub/sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::set_permissions(src.join("sub"), fs::Permissions::from_mode(0o750)).unwrap();
    // Documents (compressible): the scan's material.
    for i in 0..12 {
        let n = 2000 + i * 150;
        write(
            &src.join(format!("docs/doc{i:02}.txt")),
            &rng.text(n),
            0o644,
            (t0 + 100 + i as i64, 0),
        );
    }
    settle_dirs(src, t0 + 1000);
}

/// Opens the fixture being made (a fresh handle: a handle's index is
/// loaded once, so each step after a write takes a new one).
fn open_fixture(dir: &Path) -> Repository {
    Repository::open(Arc::new(LocalBackend::new(dir)), b"fixture-password-1").unwrap()
}

fn backup_at(dir: &Path, path: &Path, time: &str, tags: &[&str]) -> SnapshotId {
    let repo = &open_fixture(dir);
    let opts = BackupOptions {
        paths: vec![path.to_path_buf()],
        hostname: HOST.into(),
        username: USER.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        time: Some(ts(time)),
        parent: ParentChoice::Auto,
        ..Default::default()
    };
    let out = archiver::backup(repo, &opts, &Progress::default()).unwrap();
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    assert!(out.scan_error.is_none(), "{:?}", out.scan_error);
    out.snapshot_id.unwrap()
}

fn owner() -> KeyOwner {
    KeyOwner {
        hostname: HOST.into(),
        username: USER.into(),
    }
}

fn cp(from: &Path, to: &Path) {
    assert!(std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success());
}

/// Makes the fixture in $REWIND_FIXTURE_OUT (which must not exist):
/// `REWIND_FIXTURE_OUT=/tmp/v1 cargo test -p rewind-core --test fixture_v1
/// -- --ignored generate_fixture_v1`, then review and copy `repo/` and
/// `fixture.json` into tests/fixtures/v1/. Needs root for the device nodes
/// and the foreign owner, and uses /tmp/rewind-fixture-v1 as the source.
#[test]
#[ignore = "makes a new fixture; the committed one is frozen"]
fn generate_fixture_v1() {
    let out_dir = PathBuf::from(
        std::env::var_os("REWIND_FIXTURE_OUT").expect("set REWIND_FIXTURE_OUT to a new directory"),
    );
    assert!(
        !out_dir.exists(),
        "{} exists: the fixture is not regenerated in place",
        out_dir.display()
    );
    assert!(
        is_root(),
        "run as root: device nodes and foreign owners are part of the fixture"
    );
    let base = Path::new(BASE);
    let _ = fs::remove_dir_all(base);
    fs::create_dir_all(base).unwrap();
    let src = base.join("src");
    let repo_dir = base.join("repo");
    let passwords = [
        "fixture-password-1",
        "fixture-password-2",
        "fixture-password-3",
    ];
    let mut manifests: BTreeMap<&str, Vec<Entry>> = BTreeMap::new();

    let repo = Repository::init(
        Arc::new(LocalBackend::new(&repo_dir)),
        passwords[0].as_bytes(),
        KDF,
        &owner(),
    )
    .unwrap();
    repo.add_key(passwords[1].as_bytes(), KDF, &owner())
        .unwrap();
    repo.add_key(
        passwords[2].as_bytes(),
        KDF_2,
        &KeyOwner {
            hostname: "laptop".into(),
            username: "alice".into(),
        },
    )
    .unwrap();

    // base: every kind of file; later protected until 2099.
    make_source(&src);
    manifests.insert("base", manifest(&src));
    let s1 = backup_at(
        &repo_dir,
        &src,
        "2026-01-01T10:00:00Z",
        &["fixture", "base"],
    );

    // daily: ordinary work (clean scan); later protected for good, and the
    // file from before protect stays as a superseded copy.
    let t1 = 1_767_268_800; // 2026-01-01T12:00:00Z
    write(
        &src.join("hello.txt"),
        b"Hello, rewind v1 fixture!\nSecond line.\n",
        0o644,
        (t1, 1),
    );
    write(
        &src.join("added.txt"),
        b"added on day two\n",
        0o600,
        (t1 + 1, 0),
    );
    fs::remove_file(src.join("sub/nested.txt")).unwrap();
    settle_dirs(&src, t1 + 1000);
    manifests.insert("daily", manifest(&src));
    let s2 = backup_at(
        &repo_dir,
        &src,
        "2026-01-02T10:00:00Z",
        &["fixture", "daily"],
    );

    // attack: half the documents encrypted in place (suspicious).
    let t2 = t1 + 86_400;
    for i in 0..6 {
        encrypt(&src.join(format!("docs/doc{i:02}.txt")), t2 + i);
    }
    settle_dirs(&src, t2 + 1000);
    manifests.insert("attack", manifest(&src));
    let s3 = backup_at(
        &repo_dir,
        &src,
        "2026-01-03T10:00:00Z",
        &["fixture", "attack"],
    );

    // attack-2: the other half (suspicious), then marked clean by a person.
    let t3 = t2 + 86_400;
    for i in 6..12 {
        encrypt(&src.join(format!("docs/doc{i:02}.txt")), t3 + i);
    }
    settle_dirs(&src, t3 + 1000);
    manifests.insert("attack-2", manifest(&src));
    let s4 = backup_at(
        &repo_dir,
        &src,
        "2026-01-04T10:00:00Z",
        &["fixture", "attack-2"],
    );

    // damaged: a new file whose pack is then lost; repair writes
    // "repaired" without it, and the damaged snapshot is forgotten.
    let t4 = t3 + 86_400;
    let mut rng = Rng(0x1057);
    write(&src.join("lost.bin"), &rng.bytes(3000), 0o644, (t4, 0));
    fs::set_permissions(src.join("hello.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    settle_dirs(&src, t4 + 1000);
    let s5 = backup_at(
        &repo_dir,
        &src,
        "2026-01-05T10:00:00Z",
        &["fixture", "damaged"],
    );
    fs::remove_file(src.join("lost.bin")).unwrap();
    settle_dirs(&src, t4 + 1000);
    manifests.insert("repaired", manifest(&src));

    let repo = open_fixture(&repo_dir);
    for (id, s) in [(s3, "attack"), (s4, "attack-2"), (s2, "daily")] {
        let (_, snap) = repo.read_snapshot(&id).unwrap();
        let scan = snap.scan.unwrap_or_else(|| panic!("{s} not scanned"));
        let want = if s == "daily" {
            Verdict::Clean
        } else {
            Verdict::Suspicious
        };
        assert_eq!(scan.verdict, want, "{s}: {scan:?}");
    }

    // Protect base until 2099 and daily for good; keep daily's old file.
    repo.set_protection(
        &s1,
        Some(Protection {
            until: Some(ts("2099-01-01T00:00:00Z")),
        }),
    )
    .unwrap();
    let daily_bytes = repo
        .backend()
        .read(FileType::Snapshot, &s2.to_hex())
        .unwrap();
    repo.set_protection(&s2, Some(Protection { until: None }))
        .unwrap();
    repo.backend()
        .write(FileType::Snapshot, &s2.to_hex(), &daily_bytes)
        .unwrap();
    repo.set_verdict(&s4, Verdict::Clean, "admin@fixture-host")
        .unwrap();

    // Lose the pack of lost.bin (it holds nothing else), rebuild the index
    // from the pack headers, repair, forget the damaged snapshot.
    let (_, damaged) = repo.read_snapshot(&s5).unwrap();
    let node = restorer::find_node(&repo, &damaged.tree, &src.join("lost.bin"))
        .unwrap()
        .unwrap();
    let NodeKind::File { content, .. } = node.kind else {
        panic!("lost.bin is a file")
    };
    assert_eq!(content.len(), 1);
    let (files, _) = repo.index_files().unwrap();
    let pack = files
        .iter()
        .flat_map(|(_, f)| &f.packs)
        .find(|p| p.blobs.iter().any(|b| b.id == content[0]))
        .unwrap();
    assert_eq!(pack.blobs.len(), 1, "lost.bin's pack holds only lost.bin");
    repo.backend()
        .delete(FileType::Pack, &pack.id.to_hex())
        .unwrap();
    let stats = rewind_core::repair::repair_index(&repo, false).unwrap();
    assert!(stats.unreadable.is_empty() && stats.written > 0);
    let repo = open_fixture(&repo_dir);
    let fixed = rewind_core::repair::repair_snapshots(&repo, &[(s5, damaged)], false).unwrap();
    assert_eq!(fixed.len(), 1);
    assert_eq!(fixed[0].removed.len(), 1);
    repo.backend()
        .delete(FileType::Snapshot, &s5.to_hex())
        .unwrap();

    // laptop: a snapshot of another repository (protected there), copied.
    let laptop = base.join("laptop");
    write(
        &laptop.join("notes.md"),
        b"# Notes from the laptop\n",
        0o644,
        (t1, 7),
    );
    write(
        &laptop.join("photo.raw"),
        &Rng(77).bytes(5000),
        0o644,
        (t1 + 5, 0),
    );
    settle_dirs(&laptop, t1 + 9);
    manifests.insert("laptop", manifest(&laptop));
    let other = Repository::init(
        Arc::new(LocalBackend::new(base.join("laptop-repo"))),
        b"laptop-password",
        KDF,
        &owner(),
    )
    .unwrap();
    let out = archiver::backup(
        &other,
        &BackupOptions {
            paths: vec![laptop.clone()],
            hostname: "laptop".into(),
            username: "alice".into(),
            tags: vec!["laptop".into()],
            time: Some(ts("2026-01-06T10:00:00Z")),
            ..Default::default()
        },
        &Progress::default(),
    )
    .unwrap();
    other
        .set_protection(&out.snapshot_id.unwrap(), Some(Protection { until: None }))
        .unwrap();
    let other = Repository::open(
        Arc::new(LocalBackend::new(base.join("laptop-repo"))),
        b"laptop-password",
    )
    .unwrap();
    let repo = open_fixture(&repo_dir);
    let report =
        rewind_core::copy::copy(&other, &repo, &other.snapshots().unwrap(), false).unwrap();
    assert_eq!(report.copied.len(), 1);

    // stdin: one stream stored as /dump.sql.
    let dump = b"CREATE TABLE t (x int);\nINSERT INTO t VALUES (1);\n".repeat(50);
    let out = archiver::backup_stream(
        &repo,
        &BackupOptions {
            hostname: HOST.into(),
            username: USER.into(),
            tags: vec!["fixture".into(), "stdin".into()],
            time: Some(ts("2026-01-07T10:00:00Z")),
            ..Default::default()
        },
        StreamSource {
            name: "dump.sql".into(),
            reader: Box::new(&dump[..]),
            finish: Box::new(|| Ok(())),
        },
        &Progress::default(),
    )
    .unwrap();
    // Its node's times are the backup's: taken from the tree.
    let repo = open_fixture(&repo_dir);
    let (_, s) = repo.read_snapshot(&out.snapshot_id.unwrap()).unwrap();
    let node = restorer::find_node(&repo, &s.tree, Path::new("/dump.sql"))
        .unwrap()
        .unwrap();
    manifests.insert(
        "stdin",
        vec![Entry {
            path: "dump.sql".into(),
            path_hex: hex::encode("dump.sql"),
            kind: "file".into(),
            mode: 0o100600,
            uid: 0,
            gid: 0,
            size: dump.len() as u64,
            mtime: (node.mtime.secs, node.mtime.nanos),
            nlink: 1,
            blake3: Some(blake3::hash(&dump).to_hex().to_string()),
            target_hex: None,
            rdev: None,
            xattrs: BTreeMap::new(),
            sparse: false,
        }],
    );

    // Settings: a policy, a copy target, an alert URL.
    repo.set_policy(&fixture_policy()).unwrap();
    repo.set_copy_target(Some(fixture_copy_target())).unwrap();
    repo.set_notify_url(Some("https://alerts.example/rewind".into()))
        .unwrap();

    // A snapshot of other data, forgotten: its packs are unused now.
    let scratch = base.join("scratch");
    write(
        &scratch.join("tmp.bin"),
        &Rng(99).bytes(2000),
        0o644,
        (t1, 0),
    );
    let gone = backup_at(&repo_dir, &scratch, "2026-01-08T10:00:00Z", &["scratch"]);
    open_fixture(&repo_dir)
        .backend()
        .delete(FileType::Snapshot, &gone.to_hex())
        .unwrap();

    let repo = open_fixture(&repo_dir);
    // Prune: the forgotten snapshot's packs are marked (and stay until the
    // grace period has passed).
    let report = rewind_core::prune::prune(
        &repo,
        &rewind_core::prune::PruneOptions {
            hostname: HOST.into(),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(report.marked_unused.count, 2, "{report:?}");
    let (state, _) = repo.prune_state().unwrap();
    assert!(!state.unwrap().marks.is_empty());

    // A running marker of a backup that never ended.
    std::mem::forget(repo.announce(RunningKind::Backup, HOST).unwrap());

    // Record what the test expects.
    let repo = open_fixture(&repo_dir);
    let snaps = repo.snapshots().unwrap();
    let mut list = Vec::new();
    for (label, m) in manifests {
        let (id, s) = by_tag(&snaps, label);
        list.push(FixtureSnapshot {
            label: label.to_string(),
            id: id.to_hex(),
            path: if label == "stdin" {
                "/".into()
            } else {
                s.paths[0].clone()
            },
            manifest: m,
        });
    }
    assert_eq!(list.len(), snaps.len());
    let fixture = Fixture {
        made_by: format!(
            "rewind-core {} (tests/fixture_v1.rs generate_fixture_v1), {}, as root",
            env!("CARGO_PKG_VERSION"),
            jiff::Timestamp::now()
        ),
        passwords: passwords.iter().map(|p| p.to_string()).collect(),
        snapshots: list,
        superseded: vec![s2.to_hex()],
    };
    assert_eq!(
        repo.superseded_snapshots()
            .unwrap()
            .iter()
            .map(|(id, _)| id.to_hex())
            .collect::<Vec<_>>(),
        fixture.superseded
    );
    fs::create_dir_all(&out_dir).unwrap();
    cp(&repo_dir, &out_dir.join("repo"));
    // Git keeps no empty directories: leave them out here too, so that the
    // test sees what a checkout has.
    assert!(std::process::Command::new("find")
        .arg(out_dir.join("repo"))
        .args(["-type", "d", "-empty", "-delete"])
        .status()
        .unwrap()
        .success());
    let mut json = serde_json::to_vec_pretty(&fixture).unwrap();
    json.push(b'\n');
    fs::write(out_dir.join("fixture.json"), json).unwrap();
}

/// Writes seed inputs for the fuzz targets (fuzz/seeds/TARGET/) from the
/// fixture: its stored files, and the plaintexts behind their seals in the
/// form the targets take (fuzz/src/lib.rs).
/// `cargo test -p rewind-core --test fixture_v1 -- --ignored write_fuzz_seeds`
#[test]
#[ignore = "writes fuzz/seeds"]
fn write_fuzz_seeds() {
    use rewind_core::crypto::Domain;
    use rewind_core::format::open_object;

    let fixture: Fixture =
        serde_json::from_slice(&fs::read(fixture_dir().join("fixture.json")).unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(tmp.path());
    let repo = Repository::open(
        Arc::new(LocalBackend::new(&dir)),
        fixture.passwords[0].as_bytes(),
    )
    .unwrap();
    let c = repo.crypto();
    let b = repo.backend();
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds");
    let put = |target: &str, name: &str, parts: &[&[u8]]| {
        let d = seeds.join(target);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(name), parts.concat()).unwrap();
    };
    let stored = |t: FileType| -> Vec<(String, Vec<u8>)> {
        b.list(t)
            .unwrap()
            .into_iter()
            .map(|f| (f.name.clone(), b.read(t, &f.name).unwrap()))
            .collect()
    };

    put(
        "config",
        "fixture",
        &[&b.read(FileType::Config, "config").unwrap()],
    );
    let mk = serde_json::to_vec(c.master_key()).unwrap();
    for (name, bytes) in stored(FileType::Key) {
        put(
            "key_file",
            &format!("stored-{}", &name[..8]),
            &[&[0], &bytes],
        );
    }
    put("key_file", "master-key", &[&[1], &mk]);
    put("key_file", "sealed-master-key", &[&[2], &mk]);

    // Sealed JSON and postcard files: one as stored, every plaintext.
    for (target, t, domain) in [
        ("index_file", FileType::Index, Domain::Index),
        ("snapshot", FileType::Snapshot, Domain::Snapshot),
        ("policy", FileType::Policy, Domain::Policy),
        ("prune_state", FileType::PruneState, Domain::PruneState),
        ("running_marker", FileType::Running, Domain::Running),
    ] {
        for (i, (name, sealed)) in stored(t).into_iter().enumerate() {
            if i == 0 {
                put(target, "stored", &[&[0], &sealed]);
            }
            let plain = open_object(c, domain, "seed", &name, &sealed).unwrap();
            put(target, &format!("plain-{}", &name[..8]), &[&[1, 0], &plain]);
            if i == 0 {
                let z = rewind_core::format::compress(&plain, 3);
                put(target, "compressed", &[&[1], &z]);
            }
        }
    }

    // Trees: every tree of every snapshot (the plaintext of tree blobs).
    let mut todo: Vec<_> = repo
        .snapshots()
        .unwrap()
        .iter()
        .map(|(_, s)| s.tree)
        .collect();
    let mut seen = std::collections::HashSet::new();
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        let plain = repo.read_blob(&id).unwrap();
        for n in &repo.read_tree(&id).unwrap().nodes {
            if let NodeKind::Dir { subtree } = n.kind {
                todo.push(subtree);
            }
        }
        put("tree", &id.to_hex()[..16], &[&plain]);
    }

    // Packs: small ones whole; every header as plaintext with its filler.
    for (name, pack) in stored(FileType::Pack) {
        let n = pack.len();
        if n <= 4096 {
            put(
                "pack_header",
                &format!("stored-{}", &name[..8]),
                &[&[0], &pack],
            );
        }
        let hlen = u32::from_le_bytes(pack[n - 4..].try_into().unwrap()) as usize;
        let plain = c
            .open(Domain::PackHeader, &pack[n - 4 - hlen..n - 4])
            .unwrap();
        if let Ok(filler) = u16::try_from(n - 4 - hlen - 9) {
            put(
                "pack_header",
                &format!("plain-{}", &name[..8]),
                &[&[1], &filler.to_le_bytes(), &plain],
            );
        }
    }

    let h = "0123456789abcdef".repeat(4);
    for (i, req) in [
        "/laptop/".to_string(),
        "/laptop/snapshots/".into(),
        format!("/laptop/data/{h}\nbytes=0-1023"),
        format!("/r.1_x-y/index/{h}\nbytes=100-100"),
        "/r/config/config".into(),
        "/r/keys/\nbytes=5-".into(),
    ]
    .iter()
    .enumerate()
    {
        put("server_request_path", &format!("req{i}"), &[req.as_bytes()]);
    }
}
