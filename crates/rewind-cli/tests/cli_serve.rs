//! `rewind serve`: the real server binary on loopback, driven by the real
//! client and by raw HTTP requests, the way an attacker holding a client's
//! token would.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::server::*;
use common::*;

/// Every file under `dir` (but running markers) with a hash of its bytes.
fn fingerprint(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.to_string_lossy().contains("/running/") {
                let bytes = fs::read(&p).unwrap();
                out.push((
                    p.strip_prefix(dir).unwrap().display().to_string(),
                    format!("{:x}", bytes.len()) + &hex_of(&bytes),
                ));
            }
        }
    }
    out.sort();
    out
}

fn hex_of(b: &[u8]) -> String {
    // A cheap content fingerprint (FNV-1a), enough to see a change.
    let mut h: u64 = 0xcbf29ce484222325;
    for x in b {
        h = (h ^ u64::from(*x)).wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

fn first_file(dir: &Path) -> String {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 64)
        .collect();
    names.sort();
    names
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no file in {}", dir.display()))
}

fn first_pack(repo_dir: &Path) -> String {
    let mut packs = packs(repo_dir);
    packs.sort();
    packs[0].file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn everything_works_through_the_server_and_tokens_are_managed_on_it() {
    let env = Env::new();
    let server = Server::start(&env, &[]);
    let backup_token = server.token(&env, "laptop", "backup", &[]);
    let read_token = server.token(&env, "laptop", "read", &["--name", "restorer"]);
    let listed = server.admin(&env, &["token", "list"]);
    assert!(
        listed.out().contains("laptop-backup-1") && listed.out().contains("restorer"),
        "{listed}"
    );
    assert!(
        !listed.out().contains(&backup_token[4..]),
        "token list shows a token"
    );
    let state = fs::read_to_string(server.data.join("server.json")).unwrap();
    assert!(
        !state.contains(&backup_token[4..]),
        "the state file holds a token in clear"
    );

    let c = client(&env, &server, "laptop", &backup_token);
    let src = env.path("src");
    random_tree(&src, 20, 40_000);
    write(&src.join("notes.txt"), b"a text file\n");
    c.ok(["init"]);
    c.ok(["backup", src.to_str().unwrap()]);
    write(&src.join("notes.txt"), b"a text file, changed\n");
    c.ok(["backup", src.to_str().unwrap()]);
    assert!(c.ok(["snapshots"]).out().contains("2 snapshots"));
    c.restore_matches(&src, "restored");
    c.ok(["check", "--read-data"]);
    let ids = snapshot_ids(&c);
    let diff = c.ok(["diff", &ids[0], &ids[1]]);
    assert!(diff.out().contains("notes.txt"), "{diff}");
    assert!(c.ok(["find", "notes.txt"]).out().contains("notes.txt"));
    // A restore test through the backup token is stored on the server
    // (adding a result claims nothing about other files) and shown.
    let t = c.ok(["verify-restore", "--sample", "5"]);
    assert!(t.out().contains("PASSED"), "{t}");
    assert!(
        !t.stderr.contains("could not be stored"),
        "a backup token must be able to store a restore test: {t}"
    );
    assert!(c
        .ok(["snapshots"])
        .out()
        .contains("newest proven restorable point"));
    assert_eq!(
        fs::read_dir(server.repo_dir("laptop").join("proofs"))
            .unwrap()
            .count(),
        1
    );

    // A read token restores and checks, but cannot back up.
    let r = client(&env, &server, "laptop", &read_token);
    r.restore_matches(&src, "restored-by-reader");
    let refused = r.run(["backup", src.to_str().unwrap()]);
    assert_eq!(refused.code, Some(1), "{refused}");
    assert!(
        refused.stderr.contains("read token cannot store"),
        "{refused}"
    );

    // No token at all: said before anything is sent.
    let bare = run_cmd({
        let mut c = env.cmd();
        c.env("REWIND_REPOSITORY", server.url("laptop"))
            .arg("snapshots");
        c
    });
    assert_eq!(bare.code, Some(2), "{bare}");
    assert!(bare.stderr.contains("REWIND_SERVER_TOKEN"), "{bare}");
    // REWIND_SERVER_TOKEN works as well as --token-file.
    let by_env = run_cmd({
        let mut c = env.cmd();
        c.env("REWIND_REPOSITORY", server.url("laptop"))
            .env("REWIND_SERVER_TOKEN", &read_token)
            .arg("snapshots");
        c
    });
    assert_eq!(by_env.code, Some(0), "{by_env}");

    // Revoked on the server: the next request is refused, and logged.
    server
        .admin(&env, &["token", "revoke", "restorer"])
        .expect_code(0);
    let after = r.run(["snapshots"]);
    assert_eq!(after.code, Some(1), "{after}");
    assert!(after.stderr.contains("revoked"), "{after}");
    assert!(server.log().contains("token=restorer"), "{}", server.log());
    server
        .admin(&env, &["token", "revoke", "nobody"])
        .expect_code(2);
    let bad_role = server.admin(
        &env,
        &["token", "add", "--repo", "laptop", "--role", "root"],
    );
    assert_eq!(bad_role.code, Some(2), "{bad_role}");
    assert!(bad_role.out().is_empty());
}

#[test]
fn an_attacker_with_the_backup_token_destroys_nothing() {
    let env = Env::new();
    let server = Server::start(&env, &["--max-object-size", "1M"]);
    let backup = server.token(&env, "laptop", "backup", &[]);
    let admin = server.token(&env, "laptop", "admin", &[]);
    let read = server.token(&env, "laptop", "read", &[]);
    let other = server.token(&env, "desktop", "admin", &[]);
    let fresh = server.token(&env, "fresh", "backup", &[]);
    let revoked = server.token(&env, "laptop", "backup", &["--name", "old-laptop"]);
    server
        .admin(&env, &["token", "revoke", "old-laptop"])
        .expect_code(0);
    // A token that expired: `token add` refuses a past date, so it is
    // made valid for a day and its expiry moved back in the state file.
    let expired = server.token(
        &env,
        "laptop",
        "backup",
        &["--name", "gone", "--expires", "1d"],
    );
    let state_file = server.data.join("server.json");
    let mut st: serde_json::Value =
        serde_json::from_slice(&fs::read(&state_file).unwrap()).unwrap();
    for t in st["tokens"].as_array_mut().unwrap() {
        if t["name"] == "gone" {
            t["expires"] = "2020-01-01T00:00:00Z".into();
        }
    }
    fs::write(&state_file, serde_json::to_vec_pretty(&st).unwrap()).unwrap();

    let c = client(&env, &server, "laptop", &backup);
    let src = env.path("src");
    random_tree(&src, 10, 30_000);
    c.ok(["init"]);
    c.ok(["backup", src.to_str().unwrap()]);
    let first = env.path("first");
    fs::create_dir_all(&first).unwrap();
    c.ok(["restore", "latest", "--target", first.to_str().unwrap()]);
    write(&src.join("more"), &random_bytes(50_000));
    c.ok(["backup", src.to_str().unwrap()]);

    let dir = server.repo_dir("laptop");
    let before = fingerprint(&dir);
    let state_before = fs::read_to_string(server.data.join("server.json")).unwrap();
    let snap = first_file(&dir.join("snapshots"));
    let index = first_file(&dir.join("index"));
    let key = first_file(&dir.join("keys"));
    let pack = first_pack(&dir);
    let a = server.addr.clone();
    let b = Some(backup.as_str());
    let p = |t: &str, n: &str| format!("/laptop/{t}/{n}");

    let attempts: Vec<(&str, u16, (u16, String))> = vec![
        (
            "delete a snapshot",
            403,
            http(&a, "DELETE", &p("snapshots", &snap), b, &[], b""),
        ),
        (
            "delete a pack",
            403,
            http(&a, "DELETE", &p("data", &pack), b, &[], b""),
        ),
        (
            "delete an index file",
            403,
            http(&a, "DELETE", &p("index", &index), b, &[], b""),
        ),
        (
            "delete the key",
            403,
            http(&a, "DELETE", &p("keys", &key), b, &[], b""),
        ),
        (
            "delete the config",
            403,
            http(&a, "DELETE", "/laptop/config/config", b, &[], b""),
        ),
        (
            "overwrite a snapshot",
            409,
            http(
                &a,
                "PUT",
                &p("snapshots", &snap),
                b,
                &[],
                b"encrypted by ransomware",
            ),
        ),
        (
            "overwrite a pack",
            409,
            http(
                &a,
                "PUT",
                &p("data", &pack),
                b,
                &[],
                b"encrypted by ransomware",
            ),
        ),
        (
            "overwrite the config",
            403,
            http(&a, "PUT", "/laptop/config/config", b, &[], b"{}"),
        ),
        (
            "store garbage under a made-up name",
            400,
            http(&a, "PUT", &p("data", &"0".repeat(64)), b, &[], b"garbage"),
        ),
        (
            "add a key of its own",
            403,
            http(&a, "PUT", &p("keys", &"1".repeat(64)), b, &[], b"{}"),
        ),
        (
            "store a retention policy",
            403,
            http(
                &a,
                "PUT",
                &p("policy", &"2".repeat(64)),
                b,
                &[],
                b"keep nothing",
            ),
        ),
        (
            "mark every pack for deletion",
            403,
            http(&a, "PUT", &p("prune", &"3".repeat(64)), b, &[], b"marks"),
        ),
        (
            "path traversal with ..",
            400,
            http(&a, "GET", "/laptop/../desktop/config/config", b, &[], b""),
        ),
        (
            "path traversal to the state file",
            400,
            http(&a, "GET", "/laptop/keys/../../server.json", b, &[], b""),
        ),
        (
            "percent-encoded traversal",
            400,
            http(&a, "GET", "/laptop/data/..%2f..%2fserver.json", b, &[], b""),
        ),
        (
            "encoded dot-dot as repository",
            400,
            http(&a, "DELETE", "/%2e%2e/server.json", b, &[], b""),
        ),
        (
            "a name with a NUL",
            400,
            http(&a, "PUT", "/laptop/snapshots/%00", b, &[], b"x"),
        ),
        (
            "an announced 1 GiB body",
            413,
            http(
                &a,
                "PUT",
                &p("data", &"4".repeat(64)),
                b,
                &[("Content-Length", "1073741824")],
                b"",
            ),
        ),
        ("a chunked body past the limit", 413, {
            let chunk = vec![b'x'; 256 << 10];
            let mut body = Vec::new();
            for _ in 0..6 {
                body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                body.extend_from_slice(&chunk);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\n");
            http(
                &a,
                "PUT",
                &p("data", &"5".repeat(64)),
                b,
                &[("Transfer-Encoding", "chunked")],
                &body,
            )
        }),
        (
            "no token",
            401,
            http(&a, "GET", "/laptop/snapshots/", None, &[], b""),
        ),
        (
            "a made-up token",
            401,
            http(
                &a,
                "GET",
                "/laptop/snapshots/",
                Some("rwt_00112233"),
                &[],
                b"",
            ),
        ),
        (
            "the token in the query string",
            401,
            http(
                &a,
                "GET",
                &format!("/laptop/snapshots/?token={backup}"),
                None,
                &[],
                b"",
            ),
        ),
        (
            "a revoked token",
            401,
            http(
                &a,
                "DELETE",
                &p("snapshots", &snap),
                Some(&revoked),
                &[],
                b"",
            ),
        ),
        (
            "an expired token",
            401,
            http(
                &a,
                "DELETE",
                &p("snapshots", &snap),
                Some(&expired),
                &[],
                b"",
            ),
        ),
        (
            "another repository's token",
            403,
            http(&a, "DELETE", &p("snapshots", &snap), Some(&other), &[], b""),
        ),
        (
            "this token on another repository",
            403,
            http(&a, "GET", "/desktop/snapshots/", b, &[], b""),
        ),
        (
            "a read token deleting",
            403,
            http(&a, "DELETE", &p("snapshots", &snap), Some(&read), &[], b""),
        ),
        (
            "a read token writing",
            403,
            http(
                &a,
                "PUT",
                &p("snapshots", &"6".repeat(64)),
                Some(&read),
                &[],
                b"x",
            ),
        ),
        (
            "a method outside the protocol",
            405,
            http(&a, "PATCH", &p("snapshots", &snap), b, &[], b"x"),
        ),
        (
            "even the admin token: a young snapshot",
            403,
            http(&a, "DELETE", &p("snapshots", &snap), Some(&admin), &[], b""),
        ),
        (
            "even the admin token: a young pack",
            403,
            http(&a, "DELETE", &p("data", &pack), Some(&admin), &[], b""),
        ),
    ];
    let mut attempts = attempts;
    attempts.push((
        "even the admin token: the key",
        403,
        http(&a, "DELETE", &p("keys", &key), Some(&admin), &[], b""),
    ));
    attempts.push((
        "even the admin token: the config",
        403,
        http(
            &a,
            "DELETE",
            "/laptop/config/config",
            Some(&admin),
            &[],
            b"",
        ),
    ));
    // Another client's running marker (a backup in progress) stays.
    let marker = b"a running marker";
    let (_, why) = http(
        &a,
        "PUT",
        &p("running", &"0".repeat(64)),
        Some(&admin),
        &[],
        marker,
    );
    let marker_name = why
        .split("hash is ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let (s, why) = http(
        &a,
        "PUT",
        &p("running", &marker_name),
        Some(&admin),
        &[],
        marker,
    );
    assert_eq!(s, 201, "{why}");
    attempts.push((
        "delete another client's running marker",
        403,
        http(&a, "DELETE", &p("running", &marker_name), b, &[], b""),
    ));
    // A body cut off before its announced end stores nothing, not even a
    // config (the one file not named by its hash).
    let cut = {
        let mut s = TcpStream::connect(&a).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let head = format!("PUT /fresh/config/config HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {fresh}\r\nContent-Length: 100\r\n\r\n{{\"version\":");
        s.write_all(head.as_bytes()).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp
    };
    assert!(
        !server.repo_dir("fresh").join("config").exists(),
        "a cut-off body was stored: {cut}"
    );
    let mut wrong = Vec::new();
    for (what, want, (got, body)) in &attempts {
        if got != want {
            wrong.push(format!("{what}: {got} (wanted {want}): {body}"));
        }
        assert!(
            !body.trim().is_empty() || *got == 409,
            "{what}: no reason given"
        );
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert!(attempts.len() >= 33);

    // Through the client: forget and prune with the backup token fail
    // (the role forbids every deletion: nothing is "kept for now").
    let forget = c.run(["forget", "--keep-last", "1", "--allow-short-history"]);
    assert_eq!(forget.code, Some(1), "{forget}");
    assert!(
        forget
            .stderr
            .contains("a backup token cannot delete snapshot"),
        "{forget}"
    );
    // (`--now` is refused before that: the garbage running marker planted
    // above is young, so it may be a live backup's.)
    let prune = c.run(["prune", "--now"]);
    assert_eq!(prune.code, Some(1), "{prune}");
    assert!(prune.stderr.contains(&marker_name), "{prune}");
    let prune = c.run(["prune"]);
    assert_eq!(prune.code, Some(1), "{prune}");
    assert!(prune.stderr.contains("backup token cannot"), "{prune}");

    // Nothing changed: not a byte of the repository, not the state file.
    assert_eq!(fingerprint(&dir), before, "the repository changed");
    assert!(fs::read_to_string(server.data.join("server.json")).unwrap() == state_before);
    assert!(!server.data.join("desktop").exists());
    // Check names the one file that is not what it claims (the garbage
    // running marker planted above), and nothing else.
    let r = c.run(["check", "--read-data"]);
    assert_eq!(r.code, Some(1), "{r}");
    let errors: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{r}");
    assert!(errors[0].contains(&marker_name), "{r}");
    assert!(c.ok(["snapshots"]).out().contains("2 snapshots"));
    let t = env.path("oldest");
    c.ok([
        "restore",
        &snapshot_ids(&c)[0],
        "--target",
        t.to_str().unwrap(),
    ]);
    assert_trees_equal(&restored(&first, &src), &restored(&t, &src), &[]);
    c.restore_matches(&src, "newest");

    // Every refusal is logged with the token's name, the address and the reason.
    let log = server.log();
    assert!(log.contains("refused DELETE /laptop/snapshots/"), "{log}");
    assert!(log.contains("token=laptop-backup-1 (role)"), "{log}");
    assert!(log.contains("token=old-laptop (auth)"), "{log}");
    assert!(log.contains("from 127.0.0.1:"), "{log}");
    assert!(log.contains("(retention)"), "{log}");

    // And counted.
    let (status, metrics) = http(&a, "GET", "/metrics", None, &[], b"");
    assert_eq!(status, 200);
    for needle in [
        "rewind_refusals_total{repo=\"laptop\",reason=\"role\"}",
        "rewind_refusals_total{repo=\"laptop\",reason=\"retention\"}",
        "rewind_refusals_total{repo=\"laptop\",reason=\"hash\"} 2",
        "rewind_requests_total{repo=\"laptop\",method=\"PUT\",status=\"201\"}",
        "rewind_received_bytes_total{repo=\"laptop\"}",
        "rewind_objects{repo=\"laptop\",type=\"snapshots\"} 2",
    ] {
        assert!(metrics.contains(needle), "{needle} not in\n{metrics}");
    }
}

/// Snapshot ids, oldest first.
fn snapshot_ids(c: &RemoteRepo) -> Vec<String> {
    let out = c.ok(["--json", "snapshots"]);
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    list.iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn dataset_tool() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/make_dataset.py")
}

#[test]
fn ransomware_drill_the_admin_restores_the_day_before() {
    let env = Env::new();
    let server = Server::start(&env, &[]);
    let backup = server.token(&env, "office", "backup", &[]);
    let admin = server.token(&env, "office", "admin", &[]);
    let src = env.path("office");
    let gen = Command::new("python3")
        .arg(dataset_tool())
        .args(["generate", src.to_str().unwrap(), "--profile", "tiny"])
        .output()
        .unwrap();
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    let pristine = env.path("pristine");
    sh(
        "cp",
        &["-a".as_ref(), src.as_os_str(), pristine.as_os_str()],
    );

    let c = client(&env, &server, "office", &backup);
    c.ok(["init"]);
    c.ok(["backup", src.to_str().unwrap()]);

    // The attack: files encrypted, then the backup that runs at night.
    let attack = Command::new("python3")
        .arg(dataset_tool())
        .args(["ransomware", src.to_str().unwrap(), "--fraction", "0.5"])
        .output()
        .unwrap();
    assert!(attack.status.success());
    let night = c.run(["backup", src.to_str().unwrap()]);
    assert_eq!(night.code, Some(4), "the scan should flag it: {night}");

    // The attacker, holding the client's token, tries to wipe the repository.
    let dir = server.repo_dir("office");
    let kept = fingerprint(&dir);
    let a = server.addr.clone();
    let mut refused = 0;
    for t in ["snapshots", "index", "keys"] {
        for e in fs::read_dir(dir.join(t)).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let (status, _) = http(
                &a,
                "DELETE",
                &format!("/office/{t}/{name}"),
                Some(&backup),
                &[],
                b"",
            );
            assert_eq!(status, 403, "{t}/{name}");
            refused += 1;
        }
    }
    for pack in packs(&dir) {
        let name = pack.file_name().unwrap().to_string_lossy().into_owned();
        let (status, _) = http(
            &a,
            "DELETE",
            &format!("/office/data/{name}"),
            Some(&backup),
            &[],
            b"",
        );
        assert_eq!(status, 403);
        refused += 1;
    }
    assert!(refused > 5);
    let wipe = c.run([
        "forget",
        "--keep-last",
        "1",
        "--prune",
        "--now",
        "--allow-short-history",
    ]);
    assert_ne!(wipe.code, Some(0), "{wipe}");
    assert_eq!(
        fingerprint(&dir),
        kept,
        "the attacker changed the repository"
    );

    // The admin, from a clean machine, restores the last clean state.
    let adm = client(&env, &server, "office", &admin);
    let snaps = adm.ok(["snapshots"]);
    assert!(snaps.out().contains('!'), "{snaps}");
    let t = env.path("recovered");
    let r = adm.ok(["restore", "--last-clean", "--target", t.to_str().unwrap()]);
    assert!(r.stderr.contains("looks like an attack"), "{r}");
    assert_trees_equal(&pristine, &restored(&t, &src), &[]);
    adm.ok(["check", "--read-data"]);
}

#[test]
fn eight_clients_back_up_at_once() {
    let env = Env::new();
    let server = Server::start(&env, &[]);
    let mut clients = Vec::new();
    for i in 0..8 {
        // Four repositories, two machines each.
        let repo = format!("team{}", i / 2);
        let token = server.token(&env, &repo, "backup", &[]);
        let c = client(&env, &server, &repo, &token);
        if i % 2 == 0 {
            c.ok(["init"]);
        }
        let src = env.path(format!("machine{i}"));
        random_tree(&src, 40, 50_000);
        clients.push((c, src));
    }
    let started = Instant::now();
    let children: Vec<_> = clients
        .iter()
        .map(|(c, src)| {
            let mut cmd = c.cmd_at(&c.url);
            cmd.args(["backup", "--host"])
                .arg(src.file_name().unwrap())
                .arg(src);
            cmd.spawn().unwrap()
        })
        .collect();
    for (i, ch) in children.into_iter().enumerate() {
        let out = ch.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "client {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(120),
        "8 backups of 2 MB took {took:?}"
    );
    for (i, (c, src)) in clients.iter().enumerate().step_by(2) {
        let snaps = c.ok(["snapshots"]);
        assert!(
            snaps.out().contains("2 snapshots"),
            "repo of client {i}: {snaps}"
        );
        c.ok(["check", "--read-data"]);
        let t = c.env.path(format!("r{i}"));
        c.ok([
            "restore",
            "latest",
            "--host",
            src.file_name().unwrap().to_str().unwrap(),
            "--target",
            t.to_str().unwrap(),
        ]);
        assert_trees_equal(src, &restored(&t, src), &[]);
    }
    let peak = server.peak_rss_kib();
    eprintln!(
        "8 concurrent backups: {took:?}; server peak RSS {} MiB",
        peak / 1024
    );
    assert!(peak < 1024 * 1024, "server peak RSS {peak} KiB");
}

#[test]
fn a_server_killed_mid_backup_loses_nothing() {
    let env = Env::new();
    let mut server = Server::start(&env, &[]);
    let token = server.token(&env, "laptop", "backup", &[]);
    let c = client(&env, &server, "laptop", &token);
    c.ok(["init"]);
    let src = env.path("src");
    random_tree(&src, 12, 6_000_000);
    let mut cmd = c.cmd_at(&c.url);
    cmd.args(["backup", src.to_str().unwrap()]);
    let child = cmd.spawn().unwrap();
    // Kill the server once the first packs have landed.
    let dir = server.repo_dir("laptop");
    let deadline = Instant::now() + Duration::from_secs(60);
    while packs(&dir).is_empty() {
        assert!(Instant::now() < deadline, "no pack arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill();
    let t0 = Instant::now();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&server.addr),
        "the error names the server: {stderr}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "gave up after {:?}",
        t0.elapsed()
    );
    assert_eq!(
        snapshot_files(&dir),
        0,
        "a snapshot was written by a failed backup"
    );

    // What a killed upload leaves, from long ago: the restarted server
    // sweeps it (a fresh one it leaves alone: it may be an upload).
    let old_tmp = dir
        .join("data/00")
        .join(format!(".{}.tmp-0123456789abcdef", "0".repeat(64)));
    let new_tmp = dir
        .join("data/00")
        .join(format!(".{}.tmp-fedcba9876543210", "0".repeat(64)));
    write(&old_tmp, b"partial");
    write(&new_tmp, b"partial");
    let two_hours_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 7200;
    set_mtime(&old_tmp, two_hours_ago, 0);
    server.spawn(&env);
    let deadline = Instant::now() + Duration::from_secs(10);
    while old_tmp.exists() {
        assert!(Instant::now() < deadline, "the stale temporary stayed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(new_tmp.exists());
    c.ok(["backup", src.to_str().unwrap()]);
    c.ok(["check", "--read-data"]);
    c.restore_matches(&src, "restored");
}

#[test]
fn quotas_are_enforced_and_said_clearly() {
    let env = Env::new();
    let server = Server::start(&env, &[]);
    let token = server.token(&env, "small", "backup", &[]);
    server
        .admin(&env, &["repo", "set", "small", "--max-size", "200K"])
        .expect_code(0);
    let c = client(&env, &server, "small", &token);
    c.ok(["init"]);
    let src = env.path("src");
    random_tree(&src, 10, 100_000);
    let r = c.run(["backup", src.to_str().unwrap()]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("quota"), "{r}");
    assert!(r.stderr.contains("--max-size"), "{r}");
    assert!(server.log().contains("(quota)"));
    // Raised on the server: the running server applies it.
    server
        .admin(&env, &["repo", "set", "small", "--max-size", "50M"])
        .expect_code(0);
    c.ok(["backup", src.to_str().unwrap()]);
    c.restore_matches(&src, "restored");
    let listed = server.admin(&env, &["repo", "list"]);
    assert!(listed.out().contains("small:"), "{listed}");
}

#[test]
fn the_history_floor_holds_even_against_the_admin_token() {
    let env = Env::new();
    // No minimum age here: the history rule alone.
    let server = Server::start(&env, &["--min-delete-age", "0"]);
    let admin = server.token(&env, "laptop", "admin", &[]);
    let c = client(&env, &server, "laptop", &admin);
    c.ok(["init"]);
    let src = env.path("src");
    random_tree(&src, 3, 1_000);
    for i in 0..6 {
        write(&src.join("n"), format!("{i}").as_bytes());
        c.ok(["backup", src.to_str().unwrap()]);
    }
    // As stored by the server: 400 and 200 days ago, twice in the month
    // of 100 days ago (its 2nd and 3rd), 40 days ago, and now.
    let dir = server.repo_dir("laptop");
    let ids = snapshot_ids(&c);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let day = 86_400;
    let month_start = jiff::Timestamp::from_second((now - 100 * day) as i64)
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .first_of_month()
        .unwrap()
        .start_of_day()
        .unwrap()
        .timestamp()
        .as_second() as u64;
    let times = [
        now - 400 * day,
        now - 200 * day,
        month_start + day,
        month_start + 2 * day,
        now - 40 * day,
    ];
    for (id, time) in ids.iter().zip(times) {
        set_mtime(&dir.join("snapshots").join(id), time, 0);
    }
    let del = |id: &str| {
        http(
            &server.addr,
            "DELETE",
            &format!("/laptop/snapshots/{id}"),
            Some(&admin),
            &[],
            b"",
        )
    };
    // The oldest: without it, 200 days of history. Refused.
    let (s, why) = del(&ids[0]);
    assert_eq!(s, 403, "{why}");
    assert!(why.contains("oldest"), "{why}");
    // The only one of its month, within the year. Refused.
    let (s, why) = del(&ids[1]);
    assert_eq!(s, 403, "{why}");
    assert!(why.contains("only one stored in"), "{why}");
    // Of two in the same month, the last stored stays (DESIGN §14) ...
    let (s, why) = del(&ids[3]);
    assert_eq!(s, 403, "{why}");
    assert!(why.contains("the last one stored in"), "{why}");
    // ... and the earlier may go; the last then stays, the only one.
    let (s, why) = del(&ids[2]);
    assert_eq!(s, 204, "{why}");
    let (s, why) = del(&ids[3]);
    assert_eq!(s, 403, "{why}");
    assert!(why.contains("only one stored in"), "{why}");
    // forget says what the server kept, and goes on.
    let forget = c.run(["forget", "--keep-last", "1", "--allow-short-history"]);
    assert_eq!(forget.code, Some(0), "{forget}");
    assert!(forget.stderr.contains("the storage kept"), "{forget}");
    let left = snapshot_files(&dir);
    assert!(left >= 4, "{left} snapshots left");
    // Fake snapshots injected now (named by their hash, which the server
    // tells in its refusal of a wrong name) do not buy the deletion of
    // real ones: they are new.
    for i in 0..5 {
        let fake = format!("fake snapshot {i}");
        let (s, why) = http(
            &server.addr,
            "PUT",
            &format!("/laptop/snapshots/{}", "0".repeat(64)),
            Some(&admin),
            &[],
            fake.as_bytes(),
        );
        assert_eq!(s, 400, "{why}");
        let hash = why
            .split("hash is ")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .to_string();
        let (s, why) = http(
            &server.addr,
            "PUT",
            &format!("/laptop/snapshots/{hash}"),
            Some(&admin),
            &[],
            fake.as_bytes(),
        );
        assert_eq!(s, 201, "{why}");
    }
    for id in [&ids[0], &ids[1], &ids[3]] {
        let (s, why) = del(id);
        assert_eq!(s, 403, "{why}");
    }
    assert!(dir.join("snapshots").join(&ids[0]).exists());
}

#[test]
fn tls_http2_and_plain_http_only_on_loopback() {
    let env = Env::new();
    let cert = env.path("cert.pem");
    let key = env.path("key.pem");
    let gen = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    let server = Server::start(
        &env,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let token = server.token(&env, "secure", "backup", &[]);
    let mut c = client(&env, &server, "secure", &token);
    c.url = format!("rest:https://{}/secure", server.addr);
    // Without trusting the certificate: refused, and said.
    let r = c.run(["init"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.to_lowercase().contains("certificate"), "{r}");
    c.args
        .extend(["-o".into(), format!("rest.ca={}", cert.display())]);
    c.ok(["init"]);
    let src = env.path("src");
    random_tree(&src, 5, 20_000);
    c.ok(["backup", src.to_str().unwrap()]);
    c.restore_matches(&src, "restored");
    // HTTP/2 is spoken (ALPN h2).
    let curl = Command::new("curl")
        .args([
            "-s",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            "--cacert",
        ])
        .arg(&cert)
        .arg(format!("https://{}/metrics", server.addr))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&curl.stdout), "2", "{curl:?}");

    // Plain HTTP on a non-loopback address is refused without --insecure-listen.
    let mut c2 = env.bare_cmd();
    c2.args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(env.path("d2"));
    let r = run_cmd(c2);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("--insecure-listen"), "{r}");
}

#[test]
fn two_servers_in_front_of_one_object_store() {
    let env = Env::new();
    let s3 = rewind_backends::testsupport::SeaweedFs::start(&["served"]);
    let storage = s3.url("served", "repos");
    let vars = s3.env();
    let one = Server::launch(&env, &["--storage", &storage], &vars, "one.log");
    // The second has a data directory of its own: tokens and settings are
    // in the store, shared.
    let two = Server::launch(&env, &["--storage", &storage], &vars, "two.log");
    let backup = one.token(&env, "fleet", "backup", &[]);
    let admin = one.token(&env, "fleet", "admin", &[]);
    let via_one = client(&env, &one, "fleet", &backup);
    let via_two = client(&env, &two, "fleet", &backup);
    via_one.ok(["init"]);
    let a = env.path("a");
    let b = env.path("b");
    random_tree(&a, 8, 30_000);
    random_tree(&b, 8, 30_000);
    via_one.ok(["backup", "--host", "a", a.to_str().unwrap()]);
    via_two.ok(["backup", "--host", "b", b.to_str().unwrap()]);
    // Each server sees what the other stored.
    assert!(via_one.ok(["snapshots"]).out().contains("2 snapshots"));
    let t = env.path("a-via-two");
    via_two.ok([
        "restore",
        "latest",
        "--host",
        "a",
        "--target",
        t.to_str().unwrap(),
    ]);
    assert_trees_equal(&a, &restored(&t, &a), &[]);
    via_two.ok(["check", "--read-data"]);
    // The rules hold on S3 storage too: the store's times say "young".
    let snap = snapshot_ids(&via_one)[0].clone();
    for (token, want) in [(&backup, 403), (&admin, 403)] {
        let (status, why) = http(
            &two.addr,
            "DELETE",
            &format!("/fleet/snapshots/{snap}"),
            Some(token),
            &[],
            b"",
        );
        assert_eq!(status, want, "{why}");
    }
    assert!(two.log().contains("(retention)"), "{}", two.log());
    assert!(via_one.ok(["snapshots"]).out().contains("2 snapshots"));
    assert!(!one.data.join("server.json").exists() && !two.data.join("server.json").exists());
    // A token revoked in the store is refused by both servers within seconds.
    one.admin(&env, &["token", "revoke", "fleet-backup-1"])
        .expect_code(0);
    let deadline = Instant::now() + Duration::from_secs(15);
    for server in [&one, &two] {
        loop {
            let (status, _) = http(
                &server.addr,
                "GET",
                "/fleet/snapshots/",
                Some(&backup),
                &[],
                b"",
            );
            if status == 401 {
                break;
            }
            assert!(Instant::now() < deadline, "revoked token still accepted");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

#[test]
fn prune_and_mark_through_the_server() {
    let env = Env::new();
    let server = Server::start(&env, &[]);
    let admin = server.token(&env, "laptop", "admin", &[]);
    let c = client(&env, &server, "laptop", &admin);
    c.ok(["init"]);
    let src = env.path("src");
    random_tree(&src, 10, 50_000);
    c.ok(["backup", src.to_str().unwrap()]);
    let mut entries: Vec<PathBuf> = fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries.iter().take(entries.len() / 2) {
        if p.is_dir() {
            fs::remove_dir_all(p).unwrap();
        } else {
            fs::remove_file(p).unwrap();
        }
    }
    write(&src.join("new"), &random_bytes(80_000));
    c.ok(["backup", src.to_str().unwrap()]);
    let dir = server.repo_dir("laptop");
    let before = fingerprint(&dir);

    // Everything is younger than the server's minimum delete age: forget
    // and prune run, say what the server kept, and remove nothing.
    let r = c.run([
        "forget",
        "--keep-last",
        "1",
        "--allow-short-history",
        "--prune",
        "--now",
    ]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stderr.contains("the storage kept 1 snapshots"), "{r}");
    let after: Vec<_> = fingerprint(&dir)
        .into_iter()
        .filter(|(p, _)| !p.starts_with("prune/"))
        .collect();
    let before: Vec<_> = before
        .into_iter()
        .filter(|(p, _)| !p.starts_with("prune/"))
        .collect();
    assert!(
        before.iter().all(|f| after.contains(f)),
        "a file was deleted"
    );
    c.ok(["check", "--read-data"]);
    assert!(c.ok(["snapshots"]).out().contains("2 snapshots"));

    // mark and protect rewrite a snapshot; the server keeps the old file,
    // and listings show the snapshot once, as rewritten.
    let ids = snapshot_ids(&c);
    c.ok(["protect", &ids[0]]);
    let listed = c.ok(["--json", "snapshots"]);
    let list: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(list.len(), 2, "{listed}");
    assert!(list.iter().any(|s| s["protected"] == true), "{listed}");
    assert_eq!(
        snapshot_files(&dir),
        3,
        "the old file is kept by the server"
    );
    c.ok(["check", "--read-data"]);

    // On a server without the minimum age (and without the history floor),
    // the same commands delete for real.
    drop(server);
    let server = Server::start(&env, &["--min-delete-age", "0", "--history-days", "0"]);
    let c = client(&env, &server, "laptop", &admin);
    c.ok(["unprotect", &snapshot_ids(&c)[0]]);
    let pack_bytes = |d: &Path| -> u64 {
        packs(d)
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum()
    };
    let bytes_before = pack_bytes(&dir);
    let r = c.ok([
        "forget",
        "--keep-last",
        "1",
        "--allow-short-history",
        "--prune",
        "--now",
        "--max-unused",
        "0%",
    ]);
    assert!(!r.stderr.contains("the storage kept"), "{r}");
    assert_eq!(snapshot_files(&dir), 1, "{r}");
    assert!(pack_bytes(&dir) < bytes_before, "prune freed nothing: {r}");
    c.ok(["check", "--read-data"]);
    c.restore_matches(&src, "restored");
}

#[test]
fn a_local_repository_copies_each_backup_to_the_server() {
    let env = Env::with_repo();
    let server = Server::start(&env, &[]);
    let backup = server.token(&env, "offsite", "backup", &[]);
    let read = server.token(&env, "offsite", "read", &[]);
    let offsite = client(&env, &server, "offsite", &backup);
    offsite.ok(["init"]);
    let token_file = offsite.args[1].clone();
    let src = env.path("src");
    random_tree(&src, 8, 40_000);
    // The local backup, then its copy through the server, in one command.
    let backup_and_copy = || {
        let mut c = env.cmd();
        c.env("REWIND_TO_PASSWORD", &env.password).args([
            "backup",
            "--copy-to",
            &server.url("offsite"),
            "--copy-to-option",
            &format!("rest.token-file={token_file}"),
            src.to_str().unwrap(),
        ]);
        let r = run_cmd(c);
        assert_eq!(r.code, Some(0), "{r}");
    };
    backup_and_copy();
    write(&src.join("later"), b"the next day");
    backup_and_copy();
    // The offsite copy restores with a read token alone.
    let reader = client(&env, &server, "offsite", &read);
    assert!(reader.ok(["snapshots"]).out().contains("2 snapshots"));
    reader.restore_matches(&src, "from-offsite");
    reader.ok(["check", "--read-data"]);
}

/// Stores `body` under its own hash name in `/REPO/TYPE/` (the server
/// tells the hash when refusing a wrong name); returns the name.
fn put_named(addr: &str, dir: &str, token: &str, body: &[u8]) -> String {
    let (s, why) = http(
        addr,
        "PUT",
        &format!("{dir}{}", "0".repeat(64)),
        Some(token),
        &[],
        body,
    );
    assert_eq!(s, 400, "{why}");
    let name = why
        .split("hash is ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let (s, why) = http(addr, "PUT", &format!("{dir}{name}"), Some(token), &[], body);
    assert_eq!(s, 201, "{why}");
    name
}

#[test]
fn a_self_signed_certificate_is_pinned_by_its_fingerprint() {
    let env = Env::new();
    let mut server = Server::start(&env, &["--tls-self-signed"]);
    let fp = server.admin(&env, &["fingerprint"]);
    assert_eq!(fp.code, Some(0), "{fp}");
    let fp = fp.out().trim().to_string();
    assert!(fp.starts_with("SHA256:") && fp.len() == 71, "{fp}");
    assert!(server.log().contains(&format!("rest.fingerprint={fp}")));
    for f in ["tls-self-signed.crt", "tls-self-signed.key"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(server.data.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let token = server.token(&env, "secure", "backup", &[]);
    let mut c = client(&env, &server, "secure", &token);
    c.url = format!("rest:https://{}/secure", server.addr);

    // No pin and no CA: refused, with the advice to pin.
    let r = c.run(["init"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("rest.fingerprint=SHA256:"), "{r}");

    // A wrong pin: refused, naming the expected and the presented one.
    let wrong = format!("SHA256:{}", "ab".repeat(32));
    let mut w = client(&env, &server, "secure", &token);
    w.url = c.url.clone();
    w.args
        .extend(["-o".into(), format!("rest.fingerprint={wrong}")]);
    let r = w.run(["init"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains(&format!("expected {wrong}")) && r.stderr.contains(&fp),
        "{r}"
    );
    assert!(!server.repo_dir("secure").join("config").exists());

    // The right pin, as OpenSSL prints it (capitals, colons), backs up and
    // restores.
    let hex = fp.trim_start_matches("SHA256:").to_uppercase();
    let colons: Vec<String> = hex
        .as_bytes()
        .chunks(2)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    c.args.extend([
        "-o".into(),
        format!("rest.fingerprint=sha256:{}", colons.join(":")),
    ]);
    c.ok(["init"]);
    let src = env.path("src");
    random_tree(&src, 4, 10_000);
    c.ok(["backup", src.to_str().unwrap()]);
    c.restore_matches(&src, "restored");

    // A restarted server keeps its certificate: the pin still holds.
    server.kill();
    server.spawn(&env);
    assert!(c.ok(["snapshots"]).out().contains("1 snapshots"));
}

#[test]
fn a_past_expiry_date_is_refused() {
    let env = Env::new();
    let add = |expires: &str| {
        let mut c = env.bare_cmd();
        c.args(["serve", "token", "add", "--repo", "r", "--role", "backup"])
            .args(["--expires", expires, "--data"])
            .arg(env.path("d"));
        run_cmd(c)
    };
    let r = add("2020-01-01");
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("--expires 2020-01-01"), "{r}");
    assert!(r.stderr.contains("has passed"), "{r}");
    assert!(!env.path("d/server.json").exists(), "{r}");
    let r = add("0d");
    assert_eq!(r.code, Some(2), "{r}");
    add("2999-01-01").expect_code(0);
}

#[test]
fn refusals_to_delete_the_config_or_a_key_name_where_they_are() {
    let env = Env::new();
    let server = Server::start(&env, &[]);
    let admin = server.token(&env, "laptop", "admin", &[]);
    let (s, why) = http(
        &server.addr,
        "DELETE",
        "/laptop/config/config",
        Some(&admin),
        &[],
        b"",
    );
    assert_eq!(s, 403, "{why}");
    let config = server.repo_dir("laptop").join("config");
    assert!(why.contains(&config.display().to_string()), "{why}");
    assert!(!why.contains("keys/"), "{why}");
    let key = "ab".repeat(32);
    let (s, why) = http(
        &server.addr,
        "DELETE",
        &format!("/laptop/keys/{key}"),
        Some(&admin),
        &[],
        b"",
    );
    assert_eq!(s, 403, "{why}");
    let path = server.repo_dir("laptop").join("keys").join(&key);
    assert!(why.contains(&path.display().to_string()), "{why}");
}

#[test]
fn a_refused_copy_target_says_it_is_an_admin_setting() {
    let env = Env::with_repo();
    let server = Server::start(&env, &[]);
    let backup = server.token(&env, "laptop", "backup", &[]);
    let c = client(&env, &server, "laptop", &backup);
    c.ok(["init"]);
    let pw = env.path("to-password");
    fs::write(&pw, &env.password).unwrap();
    let r = c.run([
        "copy-target",
        "set",
        env.repo.to_str().unwrap(),
        "--to-password-file",
        pw.to_str().unwrap(),
    ]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("copy target"), "{r}");
    assert!(r.stderr.contains("admin token"), "{r}");
    assert!(!r.stderr.contains("policy files"), "{r}");
}

#[test]
fn a_restarted_server_still_knows_whose_marker_it_is() {
    let env = Env::new();
    let mut server = Server::start(&env, &[]);
    let a = server.token(&env, "laptop", "backup", &["--name", "a"]);
    let b = server.token(&env, "laptop", "backup", &["--name", "b"]);
    let marker = put_named(
        &server.addr,
        "/laptop/running/",
        &a,
        b"a's backup is running",
    );
    server.kill();
    server.spawn(&env);
    let del = |token: &str| {
        http(
            &server.addr,
            "DELETE",
            &format!("/laptop/running/{marker}"),
            Some(token),
            &[],
            b"",
        )
    };
    // Another client's live marker stays ...
    let (s, why) = del(&b);
    assert_eq!(s, 403, "{why}");
    assert!(server
        .repo_dir("laptop")
        .join("running")
        .join(&marker)
        .exists());
    // ... and its own client removes it, after the restart too.
    let (s, why) = del(&a);
    assert_eq!(s, 204, "{why}");
    assert!(!server
        .repo_dir("laptop")
        .join("running")
        .join(&marker)
        .exists());
    // The record went with it.
    let owners = server.data.join("marker-owners/running");
    assert_eq!(fs::read_dir(&owners).map(|d| d.count()).unwrap_or(0), 0);
}

/// Sends a PUT's headers and the first `part` bytes of `body`, leaving the
/// rest for later; with `expect`, sends no body and asks for 100 Continue.
fn put_started(
    addr: &str,
    path: &str,
    token: &str,
    body: &[u8],
    part: usize,
    expect: bool,
) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if expect {
        req += "Expect: 100-continue\r\n";
    }
    req += "\r\n";
    s.write_all(req.as_bytes()).unwrap();
    if !expect {
        s.write_all(&body[..part]).unwrap();
    }
    s
}

#[test]
fn uploads_to_s3_storage_are_bounded_in_memory_and_per_token() {
    let env = Env::new();
    let s3 = rewind_backends::testsupport::SeaweedFs::start(&["bounded"]);
    let storage = s3.url("bounded", "repos");
    let vars = s3.env();
    let server = Server::launch(
        &env,
        &[
            "--storage",
            &storage,
            "--max-upload-memory",
            "2MiB",
            "--max-uploads-per-token",
            "2",
            "--upload-memory-wait",
            "2",
        ],
        &vars,
        "bounded.log",
    );
    let token = server.token(&env, "office", "backup", &[]);
    let addr = server.addr.clone();
    let bodies: Vec<Vec<u8>> = (0..5u8)
        .map(|i| (0..1_572_864u32).map(|j| (j % 251) as u8 ^ i).collect())
        .collect();
    let path = |b: &[u8]| format!("/office/data/{}", rewind_core::id::Hash::of(b).to_hex());
    // One upload of 1.5 MiB holds most of the 2 MiB, its body half sent.
    let mut a = put_started(&addr, &path(&bodies[0]), &token, &bodies[0], 700_000, false);
    std::thread::sleep(Duration::from_millis(500));
    // The token's second upload waits for memory; its third and fourth
    // are over the token's cap at once.
    let b = put_started(&addr, &path(&bodies[1]), &token, &bodies[1], 0, true);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    for body in &bodies[2..4] {
        let c = put_started(&addr, &path(body), &token, body, 0, true);
        let (status, text) = answer_of(c);
        assert_eq!(status, 503, "{text}");
        assert!(text.contains("2 uploads running"), "{text}");
        assert!(text.to_lowercase().contains("retry-after: 5"), "{text}");
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    // Another token is not held back by this one's cap, only by memory.
    let other = server.token(&env, "office", "backup", &[]);
    let d = put_started(&addr, &path(&bodies[3]), &other, &bodies[3], 0, true);
    for s in [b, d] {
        let (status, text) = answer_of(s);
        assert_eq!(status, 503, "{text}");
        assert!(text.contains("upload memory is in use"), "{text}");
        assert!(text.to_lowercase().contains("retry-after: 5"), "{text}");
    }
    // The first finishes; its memory and slot come back.
    a.write_all(&bodies[0][700_000..]).unwrap();
    let (status, text) = answer_of(a);
    assert_eq!(status, 201, "{text}");
    for body in &bodies[1..5] {
        let (s, why) = http(&addr, "PUT", &path(body), Some(&token), &[], body);
        assert_eq!(s, 201, "{why}");
    }
    let log = server.log();
    assert!(log.contains("(busy)"), "{log}");
}
