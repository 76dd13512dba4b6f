//! Ransomware detection end to end: ordinary changes pass, an attack is
//! flagged (exit 4, a loud warning, the mark in `snapshots`, a webhook
//! alert), `restore --last-clean` brings back the state before it byte for
//! byte, retention keeps that clean point, and a person can overrule.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use common::*;

/// Text-like files (they compress well), a few formats with signatures.
fn office_tree(dir: &Path) {
    let words = [
        "invoice",
        "total",
        "customer",
        "shipment",
        "quarterly",
        "report",
        "the",
        "and",
    ];
    for i in 0..120 {
        let mut text = String::new();
        let mut x = i as u64 * 7919 + 1;
        while text.len() < 3_000 + (i % 13) * 2_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            text.push_str(words[(x >> 33) as usize % words.len()]);
            text.push(if x.is_multiple_of(11) { '\n' } else { ' ' });
        }
        let (sub, ext) = match i % 4 {
            0 => ("docs", "txt"),
            1 => ("docs", "md"),
            2 => ("src", "rs"),
            _ => ("notes", "csv"),
        };
        let p = dir.join(sub).join(format!("file{i:03}.{ext}"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
    }
    let mut pdf = b"%PDF-1.7\n".to_vec();
    pdf.extend(
        std::iter::repeat_n(
            b"stream BT /F1 12 Tf (hello) Tj ET endstream\n".as_slice(),
            200,
        )
        .flatten(),
    );
    for i in 0..10 {
        std::fs::write(dir.join(format!("docs/scan{i}.pdf")), &pdf).unwrap();
    }
}

/// XORs a file with a keystream, in place or into NAME.locked.
fn encrypt(p: &Path, rename: bool) {
    let data = std::fs::read(p).unwrap();
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ data.len() as u64;
    let out: Vec<u8> = data
        .iter()
        .map(|b| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b ^ (x as u8)
        })
        .collect();
    if rename {
        let mut name = p.as_os_str().to_owned();
        name.push(".locked");
        std::fs::write(PathBuf::from(name), out).unwrap();
        std::fs::remove_file(p).unwrap();
    } else {
        std::fs::write(p, out).unwrap();
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// A one-shot HTTP listener on loopback that answers 200 and hands back the
/// request it got.
fn webhook() -> (String, std::thread::JoinHandle<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/alerts", l.local_addr().unwrap());
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = s.read(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            req.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&req);
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if req.len() >= end + 4 + len {
                    break;
                }
            }
        }
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .unwrap();
        String::from_utf8_lossy(&req).into_owned()
    });
    (url, h)
}

#[test]
fn ordinary_work_passes_and_an_attack_is_flagged_and_undone() {
    let env = Env::with_repo();
    let src = env.path("office");
    office_tree(&src);
    env.backup([&src]);
    let first = env.snapshots();
    assert!(
        first[0]["scan"].is_null(),
        "nothing to compare the first with"
    );

    // A day of work: edits, appends, new files, a renamed folder, a deletion.
    let all = files(&src);
    for p in all.iter().take(15) {
        let mut t = std::fs::read_to_string(p).unwrap_or_default();
        t.insert_str(t.len() / 2, "\nedited paragraph with new words\n");
        std::fs::write(p, t).unwrap();
    }
    std::fs::write(
        src.join("docs/new-notes.md"),
        "# New\n\nmore text here\n".repeat(50),
    )
    .unwrap();
    std::fs::rename(src.join("notes"), src.join("notes-2026")).unwrap();
    std::fs::remove_file(&all[20]).unwrap();
    let s = env.backup([&src]);
    assert_eq!(s["scan"]["verdict"], "clean", "{s}");
    assert!(
        s["scan"]["counts"]["modified"].as_u64().unwrap() >= 14,
        "{s}"
    );
    assert!(s["scan"]["counts"]["moved"].as_u64().unwrap() >= 25, "{s}");
    let before_attack = env.path("before-attack");
    copy_tree(&src, &before_attack);

    // The attack: 40% encrypted in place, 20% renamed to .locked, a note
    // in every folder; alerts go to a webhook.
    let all = files(&src);
    for (i, p) in all.iter().enumerate() {
        match i % 5 {
            0 | 1 => encrypt(p, false),
            2 => encrypt(p, true),
            _ => {}
        }
    }
    for d in ["docs", "src", "notes-2026"] {
        std::fs::write(src.join(d).join("HOW_TO_DECRYPT.txt"), "pay 1 BTC, id 42\n").unwrap();
    }
    let (url, hook) = webhook();
    let r = env.run([
        "--json".as_ref(),
        "backup".as_ref(),
        src.as_os_str(),
        "--notify-url".as_ref(),
        url.as_ref(),
    ]);
    assert_eq!(r.code, Some(4), "{r}");
    assert!(
        r.stderr.contains("WARNING") && r.stderr.contains("ransomware"),
        "{r}"
    );
    assert!(r.stderr.contains("--last-clean"), "{r}");
    let s = r.summary();
    assert_eq!(s["scan"]["verdict"], "suspicious", "{s}");
    let bad_id = s["snapshot_id"].as_str().unwrap().to_string();
    let request = hook.join().unwrap();
    assert!(request.starts_with("POST /alerts"), "{request}");
    assert!(
        request.contains("suspicious_snapshot") && request.contains(&bad_id),
        "{request}"
    );

    // `snapshots` shows it; the next backup (nothing new) is not flagged.
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 3);
    assert_eq!(snaps[2]["suspicious"], true);
    let text = env.ok(["snapshots"]).out();
    assert!(text.contains(&format!("{}!", &bad_id[..8])), "{text}");
    env.backup([&src]);

    // `scan` after the fact agrees (exit 4), and `diff` lists what it touched.
    let r = env.run(["scan", &bad_id[..8]]);
    assert_eq!(r.code, Some(4), "{r}");
    let clean_id = snaps[1]["id"].as_str().unwrap().to_string();
    let d = env.ok(["diff", &clean_id[..8], &bad_id[..8]]).out();
    assert!(d.contains(".locked") && d.contains("HOW_TO_DECRYPT"), "{d}");

    // The state before the attack, in one command, byte for byte.
    let t = env.path("recovered");
    let r = env.ok([
        "restore".as_ref(),
        "--last-clean".as_ref(),
        "--target".as_ref(),
        t.as_os_str(),
    ]);
    assert!(r.stderr.contains(&clean_id[..8]), "{r}");
    assert_trees_equal(&before_attack, &restored(&t, &src), &[]);

    // Retention keeps that clean point while the attack is unresolved...
    let r = env.ok(["forget", "--keep-last", "1", "--allow-short-history"]);
    assert!(r.out().contains("clean point before suspicious"), "{r}");
    let ids: Vec<String> = env
        .snapshots()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.contains(&clean_id), "{ids:?}");
    assert!(ids.contains(&bad_id), "the evidence stays too: {ids:?}");

    // ...and a person can overrule: marked clean, it no longer counts.
    let r = env.ok(["mark", "clean", &bad_id[..8]]);
    assert!(r.out().contains("marked clean"), "{r}");
    let snaps = env.snapshots();
    assert!(snaps.iter().all(|s| s["suspicious"] == false), "{snaps:?}");
    let marked = snaps
        .iter()
        .find(|s| s["scan"]["overruled"]["verdict"] == "clean")
        .expect("the overruled snapshot");
    let r = env.run(["scan", &marked["id"].as_str().unwrap()[..8]]);
    assert_eq!(r.code, Some(0), "{r}");
    env.ok(["forget", "--keep-last", "1", "--allow-short-history"]);
    assert_eq!(env.snapshots().len(), 1);
}

#[test]
fn scanning_can_be_skipped_and_bad_alert_urls_are_refused() {
    let env = Env::with_repo();
    let src = env.path("office");
    office_tree(&src);
    env.backup([&src]);
    for p in files(&src) {
        encrypt(&p, false);
    }
    let s = env.backup(["--no-scan".as_ref(), src.as_os_str()]);
    assert!(s["scan"].is_null(), "{s}");
    // An alert URL that does not answer is not stored.
    let r = env.run(["notify", "set", "http://127.0.0.1:9/nothing-here"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(env.ok(["notify", "show"]).out().contains("no alert URL"));
    let r = env.run(["notify", "set", "ftp://example"]);
    assert_eq!(r.code, Some(2), "{r}");
    // One that answers is stored after a test alert, and backups use it.
    let (url, hook) = webhook();
    env.ok(["notify", "set", &url]);
    assert!(hook.join().unwrap().contains("\"test\""));
    assert!(env.ok(["notify", "show"]).out().contains(&url));
    // --last-clean without a suspicious snapshot: the newest one.
    let t = env.path("t");
    let r = env.ok([
        "restore".as_ref(),
        "--last-clean".as_ref(),
        "--target".as_ref(),
        t.as_os_str(),
    ]);
    assert!(
        r.stderr
            .contains("no snapshot of this group looks like an attack"),
        "{r}"
    );
    // No snapshot in the group: said once, clearly.
    let r = env.run([
        "restore",
        "--last-clean",
        "--host",
        "nope",
        "--target",
        "/tmp/x",
    ]);
    assert_eq!(r.code, Some(2), "{r}");
    assert_eq!(r.stderr.matches("no snapshot matches").count(), 1, "{r}");
    // --last-clean with a snapshot is a usage error.
    let r = env.run(["restore", "latest", "--last-clean", "--target", "/tmp/x"]);
    assert_eq!(r.code, Some(2), "{r}");
}

fn copy_tree(from: &Path, to: &Path) {
    assert!(std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success());
}

/// Up to `n` regular files of a real tree (`/usr/share/doc`, whatever this
/// Debian machine holds: changelogs in gzip, copyright texts, READMEs),
/// copied with their mtimes into `to`. Deterministic for one machine.
fn real_tree(to: &Path, n: usize, keep: impl Fn(&Path, u64) -> bool) -> Vec<PathBuf> {
    real_tree_from(Path::new("/usr/share/doc"), to, n, keep)
}

/// Copies up to `n` regular files of this machine's `root` (600 bytes to
/// 1 MiB, `keep` saying yes) into `to`, with their times.
fn real_tree_from(
    root: &Path,
    to: &Path,
    n: usize,
    keep: impl Fn(&Path, u64) -> bool,
) -> Vec<PathBuf> {
    let mut picked = Vec::new();
    let mut all = files(root);
    all.retain(|p| {
        std::fs::symlink_metadata(p)
            .is_ok_and(|m| m.is_file() && m.len() >= 600 && m.len() < 1 << 20 && keep(p, m.len()))
    });
    for p in all.into_iter().take(n) {
        let rel = p.strip_prefix(root).unwrap();
        let dest = to.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        assert!(std::process::Command::new("cp")
            .arg("-p")
            .arg(&p)
            .arg(&dest)
            .status()
            .unwrap()
            .success());
        picked.push(dest);
    }
    picked
}

/// What current ransomware does (LockBit 3, BlackCat, Play): only the first
/// 4 KiB of each file encrypted, and the modification time put back.
fn encrypt_head_keep_mtime(p: &Path) {
    let md = std::fs::metadata(p).unwrap();
    let mut data = std::fs::read(p).unwrap();
    let n = data.len().min(4096);
    let mut x = 0xD1B5_4A32_D192_ED03u64 ^ data.len() as u64;
    for b in &mut data[..n] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b ^= x as u8;
    }
    std::fs::write(p, data).unwrap();
    set_mtime(
        p,
        md.modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        0,
    );
}

#[test]
fn partial_encryption_with_mtimes_put_back_is_flagged_on_a_real_tree() {
    let env = Env::with_repo();
    let src = env.path("doc");
    // Changelogs in gzip, HTML and READMEs; and the texts without a name
    // that says what they are (copyright files), which are attacked: no
    // extension promises a format, and 4 KiB of noise in 16 KiB or more of
    // text leaves the whole file's compressibility near what it was.
    real_tree(&src, 250, |p, _| !p.ends_with("copyright"));
    let plain = real_tree(&src, 150, |p, len| {
        len >= 16 << 10 && !p.file_name().unwrap().to_string_lossy().contains('.')
    });
    let n = files(&src).len();
    assert!(
        plain.len() >= 60,
        "only {} such files under /usr/share/doc",
        plain.len()
    );
    // Put every mtime on a whole second, so that putting it back is exact.
    for p in files(&src) {
        let s = std::fs::metadata(&p)
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        set_mtime(&p, s, 0);
    }
    env.backup([&src]);
    // Ordinary work first: notes appended to a few files.
    for p in files(&src).iter().step_by(40) {
        let mut f = std::fs::OpenOptions::new().append(true).open(p).unwrap();
        f.write_all(b"\nappended by a person\n").unwrap();
    }
    let r = env.run(["backup", src.to_str().unwrap()]);
    assert_eq!(r.code, Some(0), "ordinary work was flagged: {r}");
    // The attack: a third of the plain texts (over 5 % of the files),
    // first 4 KiB, mtimes put back.
    let attacked: Vec<&PathBuf> = plain.iter().step_by(3).collect();
    assert!(
        attacked.len() * 20 >= n,
        "the attack is under 5 % of {n} files"
    );
    for p in &attacked {
        encrypt_head_keep_mtime(p);
    }
    let r = env.run(["--json", "backup", src.to_str().unwrap()]);
    assert_eq!(r.code, Some(4), "the partial attack was not flagged: {r}");
    let snaps = env.snapshots();
    let scan = &snaps.last().unwrap()["scan"];
    assert_eq!(scan["verdict"], "suspicious", "{scan}");
    let c = &scan["counts"];
    // (the files appended to above have a new mtime with nanoseconds,
    // which the attack puts back to the second)
    assert!(
        c["mtime_kept"].as_u64().unwrap() >= attacked.len() as u64 / 2,
        "{c}"
    );
    assert!(
        c["region_noise"].as_u64().unwrap() >= attacked.len() as u64 * 9 / 10,
        "{c}"
    );
    // Each rule is there with its figure and threshold.
    let rules = scan["rules"].as_array().unwrap();
    assert!(
        rules
            .iter()
            .any(|r| r["name"] == "mass" && r["fired"] == true),
        "{scan}"
    );
    assert!(
        rules.iter().all(|r| r["threshold"].as_str().is_some()),
        "{scan}"
    );
}

/// A quieter attack than any one file shows: the first 256 bytes of each
/// file encrypted (too few for a compressor to call noise) and a 512-byte
/// footer appended (the file's key), mtimes moved as any write moves them.
/// One file says little; the same change across files of three types is
/// what ransomware does and people's work does not.
#[test]
fn the_same_small_change_across_many_types_is_flagged_on_a_real_tree() {
    let env = Env::with_repo();
    let src = env.path("tree");
    let big = |_: &Path, len: u64| len >= 4 << 10;
    let ext = |e: &'static str| {
        move |p: &Path, len: u64| big(p, len) && p.extension().is_some_and(|x| x == e)
    };
    let plain = real_tree(&src.join("doc"), 60, |p, len| {
        big(p, len) && !p.file_name().unwrap().to_string_lossy().contains('.')
    });
    let perl = real_tree_from(
        Path::new("/usr/lib/x86_64-linux-gnu/perl-base"),
        &src.join("perl"),
        60,
        ext("pm"),
    );
    let python = std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("python3.")
        })
        .map(|root| real_tree_from(&root, &src.join("python"), 60, ext("pyc")))
        .unwrap_or_default();
    for (what, got) in [
        ("extensionless docs", &plain),
        ("perl modules", &perl),
        ("python .pyc", &python),
    ] {
        assert!(
            got.len() >= 20,
            "only {} {what} of 4 KiB or more on this machine",
            got.len()
        );
    }
    env.backup([&src]);
    let mut attacked = Vec::new();
    for set in [&plain, &perl, &python] {
        for p in set.iter().take(15) {
            let mut data = std::fs::read(p).unwrap();
            // A key stream of its own for each file.
            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (data.len() as u64) << 8 ^ attacked.len() as u64;
            let pad: Vec<u8> = (0..256 + 512)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 32) as u8
                })
                .collect();
            for (b, k) in data[..256].iter_mut().zip(&pad[..256]) {
                *b ^= k;
            }
            data.extend_from_slice(&pad[256..]);
            std::fs::write(p, data).unwrap();
            attacked.push(p.clone());
        }
    }
    let r = env.run(["--json", "backup", src.to_str().unwrap()]);
    assert_eq!(r.code, Some(4), "the attack was not flagged: {r}");
    let snaps = env.snapshots();
    let scan = &snaps.last().unwrap()["scan"];
    assert_eq!(scan["verdict"], "suspicious", "{scan}");
    let c = &scan["counts"];
    assert_eq!(c["mtime_kept"], 0, "{c}");
    assert!(c["same_shape"].as_u64().unwrap() >= 30, "{c}");
    assert!(
        c["suspects"].as_u64().unwrap() >= attacked.len() as u64 * 9 / 10,
        "{c}"
    );
    let reasons = scan["reasons"].to_string();
    assert!(
        reasons.contains("changed the same way") && reasons.contains("+512 bytes"),
        "{reasons}"
    );
    assert!(reasons.contains("bytes 0..256"), "{reasons}");
}
