//! `rewind mount`: the history as a read-only FUSE file system, against the
//! real kernel module (as root, with /dev/fuse and Debian's fuse3, which
//! scripts/test.sh installs). Skips, saying why, where FUSE is not there.

mod common;

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// Unmounts (lazily) on the way out, so that a failed test leaves no
/// mount behind.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if self.0.join("snapshots").exists() {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(&self.0)
                .status();
        }
    }
}

fn fuse_missing() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing".into());
    }
    if !has_cmd("fusermount3") {
        return Some("fusermount3 is missing (apt install fuse3)".into());
    }
    if !is_root() {
        return Some("not root".into());
    }
    None
}

/// Starts `rewind mount`; its stderr lines arrive on the channel.
fn mount(env: &Env, at: &Path) -> (Child, mpsc::Receiver<String>) {
    let mut c = env.cmd();
    c.arg("mount").arg(at).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let until = Instant::now() + Duration::from_secs(20);
    while !at.join("snapshots").exists() {
        assert!(Instant::now() < until, "the mount did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, rx)
}

#[test]
fn the_mounted_history_is_the_backed_up_tree_read_only_and_current() {
    if let Some(why) = fuse_missing() {
        eprintln!("SKIPPED: FUSE is not available here ({why})");
        return;
    }
    let env = Env::with_repo();
    let src = env.path("src");
    random_tree(&src, 30, 5000);
    let big = write_random(&src.join("big.bin"), 5 << 20);
    write(&src.join("notes/a.txt"), b"a text\n");
    std::fs::hard_link(src.join("notes/a.txt"), src.join("notes/b.txt")).unwrap();
    std::os::unix::fs::symlink("../big.bin", src.join("notes/link")).unwrap();
    set_mtime(&src.join("notes/a.txt"), 1_700_000_000, 123_456_789);
    let xattrs = Command::new("setfattr")
        .args(["-n", "user.note", "-v", "kept"])
        .arg(src.join("big.bin"))
        .status()
        .is_ok_and(|s| s.success());
    env.backup([&src]);
    let mp = env.path("mnt");
    std::fs::create_dir_all(&mp).unwrap();
    // A folder that is not empty is refused.
    write(&env.path("full/x"), b"x");
    let r = env.run(["mount", env.path("full").to_str().unwrap()]);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("not empty"), "{r}");

    let (mut child, rx) = mount(&env, &mp);
    let _cleanup = Unmount(mp.clone());
    let inside = |root: &Path| root.join(src.strip_prefix("/").unwrap());
    let latest = inside(&mp.join("latest"));
    assert_trees_equal(&src, &latest, &[]);
    let (a, b) = (
        std::fs::metadata(latest.join("notes/a.txt")).unwrap(),
        std::fs::metadata(latest.join("notes/b.txt")).unwrap(),
    );
    assert_eq!((a.nlink(), b.nlink()), (2, 2));
    assert_eq!(a.mtime_nsec(), 123_456_789);
    if xattrs {
        let o = Command::new("getfattr")
            .args(["--only-values", "-n", "user.note"])
            .arg(latest.join("big.bin"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout), "kept");
    }
    // Random 4 KiB reads.
    let mut f = std::fs::File::open(latest.join("big.bin")).unwrap();
    for off in [0usize, 4096 * 7, (3 << 20) + 17, (5 << 20) - 4096] {
        let mut buf = vec![0u8; 4096];
        f.seek(SeekFrom::Start(off as u64)).unwrap();
        f.read_exact(&mut buf).unwrap();
        assert_eq!(buf, big[off..off + 4096], "at {off}");
    }
    drop(f);
    // The other views.
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    // (counted, not collected: a DirEntry keeps its folder open)
    let by_host = std::fs::read_dir(mp.join("hosts").join(&host))
        .unwrap()
        .count();
    assert_eq!(by_host, 1);
    let id = &env.snapshots()[0]["short_id"];
    assert!(mp.join("ids").join(id.as_str().unwrap()).is_dir());
    // Read-only.
    let w = std::fs::OpenOptions::new()
        .write(true)
        .open(latest.join("notes/a.txt"));
    assert!(w.is_err(), "a write was let through");
    assert!(std::fs::write(latest.join("new.txt"), b"x").is_err());
    // A new snapshot appears without remounting.
    write(&src.join("later.txt"), b"written after the mount\n");
    env.backup([&src]);
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if std::fs::read_dir(mp.join("snapshots")).unwrap().count() == 2 {
            break;
        }
        assert!(Instant::now() < until, "the new snapshot did not appear");
        std::thread::sleep(Duration::from_millis(500));
    }
    let latest = inside(&mp.join("latest"));
    assert_eq!(
        std::fs::read(latest.join("later.txt")).unwrap(),
        b"written after the mount\n"
    );
    // Busy: a file held open keeps it mounted, and it says so; once
    // closed, it unmounts and exits 0.
    let held = std::fs::File::open(latest.join("later.txt")).unwrap();
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let until = Instant::now() + Duration::from_secs(10);
    let mut said = Vec::new();
    while Instant::now() < until && !said.iter().any(|l: &String| l.contains("busy")) {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            said.push(l);
        }
    }
    assert!(said.iter().any(|l| l.contains("busy")), "{said:?}");
    drop(held);
    assert_eq!(wait_exit(&mut child, 20), Some(0));
    assert!(!mp.join("snapshots").exists(), "still mounted");
}

/// The same file system over a `rest:` repository (a rewind server with a
/// read token): every read goes through the server.
#[test]
fn a_server_repository_mounts_with_a_read_token() {
    if let Some(why) = fuse_missing() {
        eprintln!("SKIPPED: FUSE is not available here ({why})");
        return;
    }
    let env = Env::new();
    let server = common::server::Server::start(&env, &[]);
    let backup = server.token(&env, "laptop", "backup", &[]);
    let read = server.token(&env, "laptop", "read", &[]);
    let c = common::server::client(&env, &server, "laptop", &backup);
    let src = env.path("src");
    random_tree(&src, 12, 70_000);
    c.ok(["init"]);
    c.ok(["backup", src.to_str().unwrap()]);
    let reader = common::server::client(&env, &server, "laptop", &read);
    let mp = env.path("mnt");
    std::fs::create_dir_all(&mp).unwrap();
    let mut cmd = reader.cmd_at(&reader.url);
    cmd.arg("mount").arg(&mp).stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let _cleanup = Unmount(mp.clone());
    let until = Instant::now() + Duration::from_secs(20);
    while !mp.join("latest").exists() {
        assert!(Instant::now() < until, "the mount did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_trees_equal(
        &src,
        &mp.join("latest").join(src.strip_prefix("/").unwrap()),
        &[],
    );
    signal(&child, nix::sys::signal::Signal::SIGINT);
    assert_eq!(wait_exit(&mut child, 20), Some(0));
}
