//! The attacker who owns a client: the repository password and the
//! client's backup token, speaking the server's protocol with the key
//! (rewind's own library over the `rest:` backend), not only with curl.
//!
//! Every test builds a history with the real client, attacks it, and ends
//! the same way ([`World::recover`]): every snapshot that existed before
//! the attack restores byte-exact with the admin token, `check --read-data`
//! names what the attacker wrote, and `rewind serve quarantine` (dry run
//! first) brings the repository back to a clean check.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use common::server::*;
use common::*;
use rewind_core::backend::FileType;
use rewind_core::format::index::{IndexFile, IndexPack};
use rewind_core::format::pack::PackedBlob;
use rewind_core::format::prune::{RunningKind, RunningMarker};
use rewind_core::format::scan::Verdict;
use rewind_core::format::snapshot::SnapshotFile;
use rewind_core::format::RepoFile;
use rewind_core::id::{Hash, PackId, SnapshotId};
use rewind_core::repository::Repository;

/// A repository on a server with history made by a client, which the
/// attacker then owns.
struct World {
    env: Env,
    server: Server,
    /// The client, with its backup token (what the attacker holds).
    victim: RemoteRepo,
    /// The operator's client, with the admin token.
    admin: RemoteRepo,
    /// The client's backup token and its file.
    token: String,
    token_file: PathBuf,
    /// The backed-up folder.
    src: PathBuf,
    /// Each snapshot before the attack, with a copy of what it holds.
    before: Vec<(String, PathBuf)>,
    /// When the client was compromised.
    since: jiff::Timestamp,
}

const TOKEN_NAME: &str = "laptop-backup";

impl World {
    /// Two backups by the client, the first protected by the admin.
    fn new(server_args: &[&str]) -> World {
        let env = Env::new();
        let server = Server::start(&env, server_args);
        let token = server.token(&env, "laptop", "backup", &["--name", TOKEN_NAME]);
        let admin_token = server.token(&env, "laptop", "admin", &["--name", "laptop-admin"]);
        let victim = client(&env, &server, "laptop", &token);
        let admin = client(&env, &server, "laptop", &admin_token);
        let token_file = PathBuf::from(&victim.args[1]);
        let src = env.path("src");
        fs::create_dir_all(&src).unwrap();
        for i in 0..12 {
            write(
                &src.join(format!("note-{i}.txt")),
                format!("meeting notes {i}\n").repeat(300).as_bytes(),
            );
        }
        write_random(&src.join("photo.bin"), 200_000);
        let mut w = World {
            env,
            server,
            victim,
            admin,
            token,
            token_file,
            src,
            before: Vec::new(),
            since: jiff::Timestamp::now(),
        };
        w.victim.ok(["init"]);
        w.backup_and_remember("v1");
        write(&w.src.join("note-0.txt"), b"rewritten by hand\n");
        write_random(&w.src.join("new.bin"), 120_000);
        w.backup_and_remember("v2");
        let first = w.before[0].0.clone();
        w.admin.ok(["protect", &first]);
        // The protect gave the first snapshot a new id.
        w.before = w
            .snapshot_ids()
            .into_iter()
            .zip(w.before.iter().map(|(_, p)| p.clone()))
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(20));
        w.since = jiff::Timestamp::now();
        w
    }

    fn backup_and_remember(&mut self, name: &str) {
        self.victim.ok(["backup", self.src.to_str().unwrap()]);
        let copy = self.env.path(format!("copy-{name}"));
        sh(
            "cp",
            &["-a".as_ref(), self.src.as_os_str(), copy.as_os_str()],
        );
        let id = self.snapshot_ids().last().unwrap().clone();
        self.before.push((id, copy));
    }

    /// Snapshot ids as the admin sees them, oldest first.
    fn snapshot_ids(&self) -> Vec<String> {
        let r = self.admin.ok(["--json", "snapshots"]);
        let v: Vec<serde_json::Value> = serde_json::from_slice(&r.stdout).unwrap();
        v.iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }

    fn snapshots_json(&self) -> Vec<serde_json::Value> {
        let r = self.admin.ok(["--json", "snapshots"]);
        serde_json::from_slice(&r.stdout).unwrap()
    }

    /// The attacker's handle: the library over `rest:` with the client's
    /// backup token and the password.
    fn attacker(&self) -> Repository {
        let mut options = rewind_backends::Options::new();
        options.insert(
            "rest.token-file".into(),
            self.token_file.display().to_string(),
        );
        let loc = rewind_backends::Location::parse(&self.server.url("laptop")).unwrap();
        let b = rewind_backends::open(&loc, &options).unwrap();
        Repository::open(b, PASSWORD.as_bytes()).unwrap()
    }

    /// Every snapshot from before the attack restores byte-exact with the
    /// admin token.
    fn history_restores(&self, round: &str) {
        for (i, (id, copy)) in self.before.iter().enumerate() {
            let t = self.env.path(format!("restore-{round}-{i}"));
            self.admin
                .ok(["restore", id, "--target", t.to_str().unwrap()]);
            assert_trees_equal(copy, &restored(&t, &self.src), &[]);
        }
    }

    /// The end of every attack: history restores; check names each of
    /// `planted` (file names) and fails; the quarantine's dry run lists
    /// them and moves nothing, `--apply` moves them, and then the
    /// repository checks clean with the history it had.
    fn recover(&self, planted: &[String]) {
        self.history_restores("attacked");
        let check = self.admin.run(["check", "--read-data"]);
        assert_ne!(check.code, Some(0), "check found nothing: {check}");
        let said = format!("{}{}", check.out(), check.stderr);
        for name in planted {
            assert!(
                said.contains(&name[..16]),
                "check does not name {name}: {check}"
            );
        }

        let dir = self.server.repo_dir("laptop");
        let files_before: BTreeSet<String> = all_files(&dir);
        let q = |extra: &[&str]| {
            let mut args = vec![
                "quarantine",
                "--repo",
                "laptop",
                "--token",
                TOKEN_NAME,
                "--since",
            ];
            let since = self.since.to_string();
            args.push(&since);
            args.extend_from_slice(extra);
            self.server.admin(&self.env, &args)
        };
        let dry = q(&[]);
        assert_eq!(dry.code, Some(0), "{dry}");
        assert!(dry.stderr.contains("nothing was moved"), "{dry}");
        assert!(
            dry.stderr.contains("still works"),
            "the token is live: {dry}"
        );
        for name in planted {
            assert!(
                dry.out().contains(name.as_str()),
                "{name} not listed: {dry}"
            );
        }
        assert_eq!(all_files(&dir), files_before, "a dry run moved files");
        for (id, _) in &self.before {
            assert!(
                !dry.out().contains(id.as_str()),
                "a snapshot from before the compromise would go: {dry}"
            );
        }

        self.server
            .admin(&self.env, &["token", "revoke", TOKEN_NAME])
            .expect_code(0);
        let applied = q(&["--apply"]);
        assert_eq!(applied.code, Some(0), "{applied}");
        for name in planted {
            assert!(
                !all_files(&dir).iter().any(|f| f.ends_with(name.as_str())),
                "{name} is still in the repository"
            );
        }
        let check = self.admin.run(["check", "--read-data"]);
        assert_eq!(check.code, Some(0), "not clean after quarantine: {check}");
        let ids: BTreeSet<String> = self.snapshot_ids().into_iter().collect();
        let expected: BTreeSet<String> = self.before.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(ids, expected, "history is not as it was");
        self.history_restores("quarantined");
    }
}

/// Every file under `dir`, relative.
fn all_files(dir: &std::path::Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out
}

/// Writes a snapshot the way protect and mark do, with the attacker's
/// changes and a rewrite time far in the future; returns its name.
fn forge_rewrite(repo: &Repository, of: &str, change: impl FnOnce(&mut SnapshotFile)) -> String {
    let id: SnapshotId = repo
        .snapshots()
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .find(|id| id.to_hex().starts_with(of))
        .unwrap_or_else(|| panic!("no snapshot {of}"));
    let (_, mut s) = repo.read_snapshot(&id).unwrap();
    s.original = Some(s.original.unwrap_or(id));
    s.rewritten = Some("2999-01-01T00:00:00Z".parse().unwrap());
    change(&mut s);
    repo.save_snapshot(&s).unwrap().to_hex()
}

#[test]
fn a_backup_token_cannot_hide_unprotect_or_unmark_snapshots() {
    let w = World::new(&[]);
    // The attack: files encrypted, and the backup that runs at night
    // (the scan flags it).
    for e in fs::read_dir(&w.src).unwrap() {
        let p = e.unwrap().path();
        let n = fs::metadata(&p).unwrap().len() as usize;
        write(&p, &random_bytes(n.max(4096)));
    }
    let night = w.victim.run(["backup", w.src.to_str().unwrap()]);
    assert_eq!(night.code, Some(4), "the scan should flag it: {night}");
    // Through the CLI the backup token may not rewrite anything.
    for args in [
        vec!["unprotect", w.before[0].0.as_str()],
        vec!["mark", "clean", "latest"],
        vec!["protect", w.before[1].0.as_str()],
    ] {
        let r = w.victim.run(&args);
        assert_eq!(r.code, Some(1), "{args:?} through a backup token: {r}");
        assert!(r.stderr.contains("admin token"), "{r}");
    }

    // With the library it writes the rewrites itself: the protected
    // snapshot unprotected, the attack's own snapshot marked clean, and the
    // last good one "protected" with another tree (the attack's).
    let a = w.attacker();
    let attack_snap = w.snapshot_ids().last().unwrap().clone();
    let attack_tree = a
        .snapshots()
        .unwrap()
        .into_iter()
        .find(|(id, _)| id.to_hex() == attack_snap)
        .unwrap()
        .1
        .tree;
    let unprotect = forge_rewrite(&a, &w.before[0].0, |s| s.protection = None);
    let unmark = forge_rewrite(&a, &attack_snap, |s| {
        let scan = s.scan.as_mut().unwrap();
        scan.overruled = Some(rewind_core::format::scan::Overrule {
            verdict: Verdict::Clean,
            by: "admin".into(),
            time: jiff::Timestamp::now(),
        });
    });
    let shadow = forge_rewrite(&a, &w.before[1].0, |s| s.tree = attack_tree);

    // What everyone sees: the admin's listing is as before plus the
    // night's snapshot, the first still protected, the night still
    // suspicious, and --last-clean the day before.
    let list = w.snapshots_json();
    let ids: Vec<&str> = list.iter().map(|s| s["id"].as_str().unwrap()).collect();
    let mut expected: Vec<&str> = w.before.iter().map(|(id, _)| id.as_str()).collect();
    expected.push(&attack_snap);
    assert_eq!(ids, expected, "the listing changed: {list:?}");
    assert_eq!(list[0]["protected"], true, "{list:?}");
    let restore = w.env.path("last-clean");
    let r = w.admin.ok([
        "restore",
        "--last-clean",
        "--target",
        restore.to_str().unwrap(),
    ]);
    assert!(r.stderr.contains(&w.before[1].0[..8]), "{r}");
    assert_trees_equal(&w.before[1].1, &restored(&restore, &w.src), &[]);
    // The admin's later protect wins over the far-future claim.
    w.admin.ok(["protect", &w.before[1].0]);
    let list = w.snapshots_json();
    assert_eq!(list[1]["protected"], true, "{list:?}");
    // (its id changed again: what history means now)
    let mut w = w;
    w.before[1].0 = list[1]["id"].as_str().unwrap().to_string();

    w.recover(&[unprotect, unmark, shadow]);
}

/// Seals `file` until its name sorts after every index file there (the
/// copy readers meet first), writes it, and returns its name.
fn plant_index(repo: &Repository, file: &IndexFile) -> String {
    let last = repo
        .backend()
        .list(FileType::Index)
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .max()
        .unwrap_or_default();
    // Each seal is a new random name: 1 - (share of names after the last)
    // to succeed, so an unlucky high last name needs thousands of tries
    // (500 failed once in a full run).
    for _ in 0..2_000_000 {
        let (id, bytes) = file.seal(repo.crypto());
        if id.to_hex() > last {
            repo.backend()
                .write(FileType::Index, &id.to_hex(), &bytes)
                .unwrap();
            return id.to_hex();
        }
    }
    panic!("no name sorted last");
}

#[test]
fn a_poisoned_index_does_not_stop_restores_and_is_named() {
    let w = World::new(&[]);
    let a = w.attacker();
    // The blobs of the index as the attacker sees them (pack, blob).
    let real: Vec<(PackId, PackedBlob)> = a.index().unwrap().entries().collect();
    // Lie 1: every blob in a pack that does not exist.
    let missing = plant_index(
        &a,
        &IndexFile {
            version: rewind_core::format::index::VERSION,
            supersedes: vec![],
            packs: vec![IndexPack {
                id: PackId(Hash([0x5a; 32])),
                size: 1 << 20,
                blobs: real.iter().map(|(_, b)| *b).collect(),
            }],
        },
    );
    // Lie 2: every blob at the wrong place of a real pack (a tampered copy).
    let (pack, _) = real[0];
    let pack_size = a
        .backend()
        .list(FileType::Pack)
        .unwrap()
        .into_iter()
        .find(|f| f.name == pack.to_hex())
        .unwrap()
        .size;
    let tampered = plant_index(
        &a,
        &IndexFile {
            version: rewind_core::format::index::VERSION,
            supersedes: vec![],
            packs: vec![IndexPack {
                id: pack,
                size: pack_size,
                blobs: real
                    .iter()
                    .map(|(_, b)| PackedBlob {
                        offset: 0,
                        length: b.length.min(pack_size as u32),
                        ..*b
                    })
                    .collect(),
            }],
        },
    );
    // A backup after the poisoning dedups against it: it restores too
    // (before the quarantine, which takes it away with the rest).
    write_random(&w.src.join("after.bin"), 50_000);
    w.victim.ok(["backup", w.src.to_str().unwrap()]);
    let t = w.env.path("after");
    w.admin
        .ok(["restore", "latest", "--target", t.to_str().unwrap()]);
    assert_trees_equal(&w.src, &restored(&t, &w.src), &[]);
    // check's verdict names both lies.
    let check = w.admin.run(["check"]);
    assert!(
        check.stderr.contains(&missing[..16]) || check.out().contains(&missing[..16]),
        "{check}"
    );
    w.recover(&[missing, tampered]);
}

#[test]
fn planted_snapshots_and_markers_do_not_block_maintenance() {
    let w = World::new(&[]);
    let a = w.attacker();
    // Garbage under a valid name, and a sealed file that is no snapshot.
    let garbage = random_bytes(3000);
    let garbage_name = Hash::of(&garbage).to_hex();
    a.backend()
        .write(FileType::Snapshot, &garbage_name, &garbage)
        .unwrap();
    let bogus = rewind_core::format::seal_object(
        a.crypto(),
        rewind_core::crypto::Domain::Snapshot,
        b"\x00{\"version\": 1, \"this\": \"is not a snapshot\"}",
    );
    let bogus_name = Hash::of(&bogus).to_hex();
    a.backend()
        .write(FileType::Snapshot, &bogus_name, &bogus)
        .unwrap();
    // A running marker that claims to be refreshed for centuries.
    let marker = RunningMarker {
        version: 1,
        kind: RunningKind::Backup,
        hostname: "elsewhere".into(),
        pid: 1,
        start: jiff::Timestamp::now(),
        refreshed: "2999-01-01T00:00:00Z".parse().unwrap(),
        pid_namespace: None,
    };
    a.write_file(&marker).unwrap();
    // The backup token may not store settings that would break backups.
    let policy = http(
        &w.server.addr,
        "PUT",
        &format!("/laptop/policy/{garbage_name}"),
        Some(&w.token),
        &[],
        &garbage,
    );
    assert_eq!(policy.0, 403, "{policy:?}");

    // Backups go on; prune names the damaged snapshots and says how to go
    // past them.
    w.victim.ok(["backup", w.src.to_str().unwrap()]);
    let prune = w.admin.run(["prune"]);
    assert_ne!(prune.code, Some(0), "{prune}");
    assert!(
        prune.stderr.contains(&garbage_name[..16]) || prune.stderr.contains(&bogus_name[..16]),
        "{prune}"
    );
    assert!(
        prune.stderr.contains("--ignore-damaged-snapshots"),
        "{prune}"
    );
    // The night's backup is the attacker's token's too: quarantined.
    w.recover(&[garbage_name, bogus_name]);
    // Afterwards maintenance runs: the marker went with the rest.
    let prune = w.admin.run(["prune", "--now"]);
    assert_eq!(prune.code, Some(0), "{prune}");
}

#[test]
fn garbage_that_fills_the_quota_is_quarantined() {
    let env_probe = World::new(&[]);
    let used: u64 = all_files(&env_probe.server.repo_dir("laptop"))
        .iter()
        .map(|f| {
            fs::metadata(env_probe.server.repo_dir("laptop").join(f))
                .unwrap()
                .len()
        })
        .sum();
    drop(env_probe);
    let quota = format!("{}K", (used + 3_000_000) / 1024);
    let w = World::new(&["--max-size", &quota]);
    // Packs of random bytes under their hash names until the server says no.
    let mut planted = Vec::new();
    for _ in 0..10 {
        let junk = random_bytes(1_000_000);
        let name = Hash::of(&junk).to_hex();
        let (status, body) = http(
            &w.server.addr,
            "PUT",
            &format!("/laptop/data/{name}"),
            Some(&w.token),
            &[],
            &junk,
        );
        if status == 507 {
            assert!(body.contains("quarantine"), "{body}");
            break;
        }
        assert_eq!(status, 201, "{body}");
        planted.push(name);
    }
    assert!(planted.len() >= 2, "the quota took no garbage");
    // The next real backup (the operator's own token would not be held to
    // the quota, but the client is): refused, and the advice names the way out.
    write_random(&w.src.join("big.bin"), 2_000_000);
    let r = w.victim.run(["backup", w.src.to_str().unwrap()]);
    assert_ne!(r.code, Some(0), "{r}");
    assert!(r.stderr.contains("quota"), "{r}");
    fs::remove_file(w.src.join("big.bin")).unwrap();
    w.recover(&planted);
    // The server counted the repository again: a new client's backup fits.
    let fresh = w
        .server
        .token(&w.env, "laptop", "backup", &["--name", "new-laptop"]);
    let c = client(&w.env, &w.server, "laptop", &fresh);
    write_random(&w.src.join("big.bin"), 1_000_000);
    c.ok(["backup", w.src.to_str().unwrap()]);
}
