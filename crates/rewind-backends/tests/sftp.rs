//! The SFTP backend against a real OpenSSH sshd on loopback: the backend
//! conformance suite, its error messages, and a server that dies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rewind_backends::testsupport::SshServer;
use rewind_backends::{open, Location, Options};
use rewind_core::backend::{conformance, Backend, FileType};

fn backend(server: &SshServer, path: &std::path::Path, options: &Options) -> Arc<dyn Backend> {
    open(&Location::parse(&server.url(path)).unwrap(), options).unwrap()
}

#[test]
fn sftp_backend_conformance() {
    let server = SshServer::start();
    let dir = tempfile::tempdir().unwrap();
    // Parents are created as needed.
    let root = dir.path().join("deep/down/repo");
    conformance::run(&*backend(&server, &root, &server.options()));
    // Files really are where the local layout puts them, and a local
    // backend on the same directory sees the same repository.
    assert!(root.join("config").is_file());
    assert!(root.join("data/ff").is_dir());
    let local = rewind_core::backend::LocalBackend::new(&root);
    assert_eq!(local.list(FileType::Config).unwrap().len(), 1);
}

#[test]
fn sftp_errors_are_clear_and_bounded() {
    let mut server = SshServer::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let b = backend(&server, &root, &server.options());
    b.create().unwrap();
    assert!(matches!(
        b.read(FileType::Snapshot, &"ab".repeat(32)),
        Err(rewind_core::Error::Missing { .. })
    ));

    // A key the server does not accept: refused at once, with ssh's words.
    let other = dir.path().join("other_key");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", ""])
        .arg("-f")
        .arg(&other)
        .status()
        .unwrap();
    assert!(st.success());
    let args = server.ssh_args();
    let client_key = args.split_whitespace().nth(3).unwrap();
    let wrong_key = args.replace(client_key, other.to_str().unwrap());
    let opts: Options = [("sftp.args".to_string(), wrong_key)].into();
    let t = Instant::now();
    let e = backend(&server, &root, &opts)
        .list(FileType::Snapshot)
        .unwrap_err()
        .to_string();
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    eprintln!("wrong key: {e}");
    assert!(e.contains("Permission denied"), "{e}");
    assert!(e.contains(&format!("127.0.0.1:{}", server.port)), "{e}");

    // A host key that does not match known_hosts: refused, not trusted.
    let kh = dir.path().join("bad_known_hosts");
    std::fs::write(
        &kh,
        format!(
            "[127.0.0.1]:{} {}",
            server.port,
            std::fs::read_to_string(other.with_extension("pub")).unwrap()
        ),
    )
    .unwrap();
    let bad_host = server
        .ssh_args()
        .split_whitespace()
        .map(|a| {
            if a.starts_with("UserKnownHostsFile=") {
                format!("UserKnownHostsFile={}", kh.display())
            } else {
                a.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let opts: Options = [("sftp.args".to_string(), bad_host)].into();
    let e = backend(&server, &root, &opts)
        .list(FileType::Snapshot)
        .unwrap_err()
        .to_string();
    eprintln!("wrong host key: {e}");
    assert!(e.to_lowercase().contains("host key"), "{e}");

    // No ssh program: says so.
    let opts: Options = [("sftp.command".to_string(), "/nonexistent/ssh".to_string())].into();
    let e = backend(&server, &root, &opts)
        .list(FileType::Snapshot)
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/ssh"), "{e}");

    // The server dies under an open session: a bounded, clear failure.
    let name = "cd".repeat(32);
    b.write(FileType::Index, &name, b"before").unwrap();
    server.kill();
    let t = Instant::now();
    let e = b.read(FileType::Index, &name).unwrap_err().to_string();
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    eprintln!("server killed: {e} after {:?}", t.elapsed());
    assert!(e.contains("127.0.0.1"), "{e}");
    // It comes back: the same backend reconnects by itself.
    server.restart();
    assert_eq!(b.read(FileType::Index, &name).unwrap(), b"before");
    // A session killed between requests is replaced transparently.
    server.restart();
    assert_eq!(b.read(FileType::Index, &name).unwrap(), b"before");
    b.write(FileType::Index, &"ef".repeat(32), b"after")
        .unwrap();
    assert_eq!(b.list(FileType::Index).unwrap().len(), 2);
}
