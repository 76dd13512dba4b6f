//! The storage conformance suite through a real `rewind serve` on loopback:
//! the rest: client backend against the server, files named by their hash.

use std::time::{Duration, Instant};

use rewind_backends::rest::{RestBackend, RestLocation};
use rewind_core::backend::{conformance, Backend, FileType};
use rewind_server::state::{Role, State};
use rewind_server::{Config, Limits};

fn serve(data: &std::path::Path, defaults: Limits) -> String {
    let port = rewind_backends::testsupport::loopback_port();
    let config = Config {
        data: Some(data.to_path_buf()),
        storage: None,
        storage_options: Default::default(),
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        tls: None,
        tls_self_signed: false,
        insecure_listen: false,
        defaults,
        max_object_size: rewind_server::DEFAULT_MAX_OBJECT_SIZE,
        max_upload_memory: rewind_server::DEFAULT_MAX_UPLOAD_MEMORY,
        upload_memory_wait: rewind_server::DEFAULT_UPLOAD_MEMORY_WAIT,
        inbox_schedule: Default::default(),
        compression: rewind_core::repository::COMPRESSION_LEVEL,
        max_uploads_per_token: rewind_server::DEFAULT_MAX_UPLOADS_PER_TOKEN,
    };
    std::thread::spawn(move || rewind_server::run(config).unwrap());
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    format!("http://127.0.0.1:{port}")
}

fn backend(dir: &std::path::Path, base: &str, repo: &str, role: Role) -> RestBackend {
    let mut st = State::load(&dir.join("data")).unwrap();
    let token = st.add_token(None, repo, role, None).unwrap();
    st.save(&dir.join("data")).unwrap();
    let tf = dir.join(format!("token-{repo}-{role}"));
    std::fs::write(&tf, token).unwrap();
    let loc = RestLocation::parse(&format!("{base}/{repo}")).unwrap();
    let opts = [("rest.token-file".to_string(), tf.display().to_string())].into();
    RestBackend::open(&loc, &opts).unwrap()
}

#[test]
fn rest_backend_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let base = serve(
        &dir.path().join("data"),
        Limits {
            min_delete_age_days: 0,
            history_days: 0,
            max_size: None,
        },
    );
    let b = backend(dir.path(), &base, "suite", Role::Admin);
    conformance::run(&b);
    assert_eq!(b.object_lock().unwrap(), None, "no minimum age: no lock");
}

#[test]
fn the_servers_retention_is_an_object_lock_to_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let base = serve(&dir.path().join("data"), Limits::default());
    let b = backend(dir.path(), &base, "kept", Role::Admin);
    b.create().unwrap();
    let lock = b.object_lock().unwrap().expect("a lock");
    assert_eq!(lock.days, 30);
    let data = b"a pack";
    let name = blake3::hash(data).to_hex().to_string();
    b.write(FileType::Pack, &name, data).unwrap();
    let until = b
        .retained_until(FileType::Pack, &name)
        .unwrap()
        .expect("retained");
    let days = until
        .duration_since(std::time::SystemTime::now())
        .unwrap()
        .as_secs_f64()
        / 86_400.0;
    assert!((29.9..=30.0).contains(&days), "{days}");
    match b.delete(FileType::Pack, &name) {
        Err(rewind_core::Error::Refused(why)) => assert!(why.contains("30 days"), "{why}"),
        other => panic!("delete of a young pack: {other:?}"),
    }
    assert_eq!(b.read(FileType::Pack, &name).unwrap(), data);
    // A running marker is not data: its writer may delete it.
    let marker = blake3::hash(b"marker").to_hex().to_string();
    let w = backend(dir.path(), &base, "kept", Role::Backup);
    w.write(FileType::Running, &marker, b"marker").unwrap();
    w.delete(FileType::Running, &marker).unwrap();
    assert!(w.list(FileType::Running).unwrap().is_empty());
}
