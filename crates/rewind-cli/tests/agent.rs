//! `rewind agent`, `run`, `status` and `config` end to end: the real binary,
//! a real repository, second-scale schedules, signals and kill -9.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// A world with a repository, a folder to back up and a password file.
struct World {
    env: Env,
    src: PathBuf,
    config: PathBuf,
    /// The repository's location.
    repo: String,
    /// Environment every command gets (S3 credentials).
    vars: Vec<(&'static str, &'static str)>,
}

impl World {
    fn new() -> World {
        let env = Env::with_repo();
        let repo = env.repo.display().to_string();
        World::with(env, repo, Vec::new())
    }

    /// A world whose repository is on this S3 server.
    fn s3(server: &rewind_backends::testsupport::SeaweedFs, bucket: &str) -> World {
        let env = Env::new();
        let w = World::with(env, server.url(bucket, "repo"), server.env());
        let mut c = w.env.bare_cmd();
        c.envs(w.vars.iter().copied())
            .env("REWIND_REPOSITORY", &w.repo)
            .env("REWIND_PASSWORD", &w.env.password)
            .arg("init");
        let r = run_cmd(c);
        assert_eq!(r.code, Some(0), "{r}");
        w
    }

    fn with(env: Env, repo: String, vars: Vec<(&'static str, &'static str)>) -> World {
        let src = env.path("src");
        random_tree(&src, 20, 3000);
        std::fs::write(env.path("password"), &env.password).unwrap();
        let config = env.path("rewind.toml");
        World {
            env,
            src,
            config,
            repo,
            vars,
        }
    }

    /// `snapshots --json` of the world's repository.
    fn snapshots(&self) -> Vec<serde_json::Value> {
        let mut c = self.env.bare_cmd();
        c.envs(self.vars.iter().copied())
            .env("REWIND_REPOSITORY", &self.repo)
            .env("REWIND_PASSWORD", &self.env.password)
            .args(["--json", "snapshots"]);
        let r = run_cmd(c);
        assert_eq!(r.code, Some(0), "{r}");
        serde_json::from_slice(&r.stdout).unwrap()
    }

    /// Writes the configuration: `[jobs.home]` with `extra` lines, and
    /// `top` before it.
    fn configure(&self, top: &str, extra: &str) {
        let text = format!(
            "{top}\n[agent]\nretries = 1\nretry_delay = \"1s\"\n\n[jobs.home]\nrepository = {:?}\npassword_file = {:?}\npaths = [{:?}]\n{extra}\n",
            self.repo,
            self.env.path("password"),
            self.src
        );
        std::fs::write(&self.config, text).unwrap();
    }

    fn cmd(&self) -> Command {
        let mut c = self.env.bare_cmd();
        c.envs(self.vars.iter().copied())
            .env("XDG_STATE_HOME", self.env.path("state"))
            .arg("--config")
            .arg(&self.config);
        c
    }

    fn rewind(&self, args: &[&str]) -> Run {
        let mut c = self.env.bare_cmd();
        c.envs(self.vars.iter().copied())
            .env("XDG_STATE_HOME", self.env.path("state"));
        c.args(args).arg("--config").arg(&self.config);
        run_cmd(c)
    }

    fn state(&self) -> serde_json::Value {
        std::fs::read(self.env.path("state/rewind/agent.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// Starts `rewind agent`; its stderr lines arrive on the channel.
    fn agent(&self) -> (Child, mpsc::Receiver<String>) {
        let mut c = self.cmd();
        c.arg("agent");
        let mut child = c.spawn().unwrap();
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        (child, rx)
    }
}

/// Waits for a log line containing `what`; all lines seen so far go in `seen`.
#[track_caller]
fn expect_line(
    rx: &mpsc::Receiver<String>,
    what: &str,
    secs: u64,
    seen: &mut Vec<String>,
) -> String {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(line.clone());
            if line.contains(what) {
                return line;
            }
        }
    }
    panic!(
        "no log line with {what:?} in {secs} s; the log:\n{}",
        seen.join("\n")
    );
}

#[track_caller]
fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not within {secs} s");
}

#[test]
fn config_mistakes_name_the_file_line_and_key() {
    let w = World::new();
    w.configure(
        "",
        "schedule = \"every 2s\"\nkeep = { daily = 7 }\nshedule = \"x\"\n",
    );
    let line = std::fs::read_to_string(&w.config)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("shedule"))
        .unwrap()
        + 1;
    let r = w.rewind(&["config", "check"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains(w.config.to_str().unwrap())
            && r.stderr.contains("shedule")
            && r.stderr.contains(&format!("line {line}")),
        "{r}"
    );
    w.configure("", "schedule = \"daily 24:10\"\n");
    let r = w.rewind(&["config", "check"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains("jobs.home.schedule") && r.stderr.contains("time of day"),
        "{r}"
    );
    // A missing file says how to make one; init makes one that checks.
    std::fs::remove_file(&w.config).unwrap();
    let r = w.rewind(&["config", "check"]);
    assert!(
        r.code != Some(0) && r.stderr.contains("rewind config init"),
        "{r}"
    );
    let r = w.rewind(&["config", "init"]);
    assert_eq!(r.code, Some(0), "{r}");
    let r = w.rewind(&["config", "check"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(
        r.out().contains("job home") && r.out().contains("every 1h; next:"),
        "{r}"
    );
    let r = w.rewind(&["config", "init"]);
    assert!(r.code != Some(0) && r.stderr.contains("--force"), "{r}");
}

#[test]
fn the_agent_backs_up_on_schedule_reloads_and_stops_cleanly() {
    let w = World::new();
    w.configure(
        "",
        "schedule = \"every 2s\"\nkeep = { last = 2 }\ncheck = \"every 3s\"\n",
    );
    let r = w.rewind(&["config", "check"]);
    assert_eq!(r.code, Some(0), "{r}");
    let (mut agent, rx) = w.agent();
    let mut seen = Vec::new();
    expect_line(&rx, "agent started", 10, &mut seen);
    // The first backup at once, then every 2 s; retention keeps 2.
    for _ in 0..3 {
        expect_line(&rx, "backup: success, snapshot", 30, &mut seen);
    }
    expect_line(&rx, "check: success", 30, &mut seen);
    let snaps = w.snapshots();
    assert!(
        (2..=3).contains(&snaps.len()),
        "retention kept {} snapshots",
        snaps.len()
    );
    // A broken file on SIGHUP keeps the old one and says why.
    let good = std::fs::read_to_string(&w.config).unwrap();
    std::fs::write(&w.config, good.replace("every 2s", "every 2 s")).unwrap();
    signal(&agent, nix::sys::signal::Signal::SIGHUP);
    expect_line(&rx, "not valid, the old one stays", 10, &mut seen);
    expect_line(&rx, "backup: success", 30, &mut seen);
    std::fs::write(&w.config, good.replace("every 2s", "every 1h")).unwrap();
    signal(&agent, nix::sys::signal::Signal::SIGHUP);
    expect_line(&rx, "reloaded", 10, &mut seen);
    // SIGTERM: out within seconds, exit 0, the repository clean.
    let t = Instant::now();
    signal(&agent, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(wait_exit(&mut agent, 20), Some(0));
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    w.env.ok(["check"]);
    let st = w.state();
    assert_eq!(
        st["jobs"]["home"]["backup"]["last_success"]["outcome"], "success",
        "{st}"
    );
    // status: healthy, exit 0, with the last run and the next.
    let r = w.rewind(&["--json", "status"]);
    assert_eq!(r.code, Some(0), "{r}");
    let s: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(s["healthy"], true, "{s}");
    assert!(s["jobs"][0]["last_success"]["snapshot"].is_string(), "{s}");
}

#[test]
fn a_killed_agent_neither_loses_nor_repeats_a_run() {
    let w = World::new();
    let stamp = w.env.path("slept");
    // The first run's hook hangs (the agent is killed during it); later
    // runs pass at once.
    w.configure(
        "",
        &format!(
            "schedule = \"hourly\"\n[jobs.home.hooks]\nbefore = [\"test -f {0} || {{ touch {0}; sleep 30; }}\"]\ntimeout = \"60s\"\n",
            stamp.display()
        ),
    );
    let (mut agent, rx) = w.agent();
    let mut seen = Vec::new();
    expect_line(&rx, "backup: started", 10, &mut seen);
    wait_until(10, "the hook ran", || stamp.exists());
    let slot = w.state()["jobs"]["home"]["backup"]["running"]["slot"].clone();
    assert!(slot.is_string(), "{}", w.state());
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert!(w.snapshots().is_empty());
    // Started again: the interrupted run is named and runs once, for the
    // same slot; the next hourly slot is not run early.
    let (mut agent, rx) = w.agent();
    let mut seen = Vec::new();
    expect_line(&rx, "did not finish", 10, &mut seen);
    expect_line(&rx, "backup: success", 30, &mut seen);
    std::thread::sleep(Duration::from_secs(3));
    signal(&agent, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(wait_exit(&mut agent, 20), Some(0));
    assert_eq!(w.snapshots().len(), 1, "{}", seen.join("\n"));
    let st = w.state();
    assert_eq!(
        st["jobs"]["home"]["backup"]["last_success"]["slot"], slot,
        "{st}"
    );
    // And a third start runs nothing (the slot is done).
    let (mut agent, rx) = w.agent();
    let mut seen = Vec::new();
    expect_line(&rx, "agent started", 10, &mut seen);
    std::thread::sleep(Duration::from_secs(2));
    signal(&agent, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(wait_exit(&mut agent, 20), Some(0));
    while let Ok(l) = rx.try_recv() {
        seen.push(l);
    }
    assert!(
        !seen.iter().any(|l| l.contains("backup: started")),
        "{}",
        seen.join("\n")
    );
    assert_eq!(w.snapshots().len(), 1);
}

/// A loopback HTTP listener that answers 200 to every POST and hands each
/// body on.
fn webhook() -> (String, mpsc::Receiver<serde_json::Value>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 8192];
            loop {
                let n = s.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req);
                if let Some(i) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if req.len() >= i + 4 + len {
                        let body: serde_json::Value =
                            serde_json::from_slice(&req[i + 4..i + 4 + len]).unwrap();
                        let _ = s.write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        );
                        let _ = tx.send(body);
                        break;
                    }
                }
            }
        }
    });
    (url, rx)
}

#[test]
fn a_failing_hook_fails_the_run_is_named_and_alerts_then_recovery_alerts() {
    let w = World::new();
    let (url, alerts) = webhook();
    let flag = w.env.path("fail");
    let seen_env = w.env.path("on-failure.env");
    std::fs::write(&flag, "").unwrap();
    w.configure(
        &format!("[notify]\nwebhook = {url:?}\n"),
        &format!(
            "schedule = \"daily 03:00\"\n[jobs.home.hooks]\nbefore = [\"test ! -f {} || exit 3\"]\non_failure = [\"env | grep ^REWIND_ > {}\"]\n",
            flag.display(),
            seen_env.display()
        ),
    );
    let r = w.rewind(&["run", "home"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains("before hook") && r.stderr.contains("exit code 3"),
        "{r}"
    );
    assert!(
        w.snapshots().is_empty(),
        "a failed hook must stop the backup"
    );
    let env = std::fs::read_to_string(&seen_env).unwrap();
    assert!(
        env.contains("REWIND_JOB=home")
            && env.contains("REWIND_OUTCOME=failed")
            && env.contains("REWIND_ERROR=before hook"),
        "{env}"
    );
    let a = alerts
        .recv_timeout(Duration::from_secs(10))
        .expect("a failure alert");
    assert_eq!(a["event"], "failure", "{a}");
    assert_eq!(a["job"], "home", "{a}");
    assert!(a["text"].as_str().unwrap().contains("exit code 3"), "{a}");
    let r = w.rewind(&["status"]);
    assert_eq!(r.code, Some(5), "{r}");
    assert!(
        r.out().contains("NEEDS ATTENTION") && r.out().contains("last run failed"),
        "{r}"
    );
    // Fixed: the next run works, and says so once.
    std::fs::remove_file(&flag).unwrap();
    let r = w.rewind(&["run", "home"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(w.snapshots().len(), 1);
    let a = alerts
        .recv_timeout(Duration::from_secs(10))
        .expect("a recovery alert");
    assert_eq!(a["event"], "recovery", "{a}");
    let r = w.rewind(&["run", "home"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(
        alerts.recv_timeout(Duration::from_secs(2)).is_err(),
        "a second success alerts nothing"
    );
    assert_eq!(w.rewind(&["status"]).code, Some(0));
    // An unknown job names the known ones.
    let r = w.rewind(&["run", "hom"]);
    assert!(
        r.code != Some(0) && r.stderr.contains("no job \"hom\"") && r.stderr.contains("home"),
        "{r}"
    );
}

#[test]
fn an_alert_that_cannot_be_sent_is_kept_and_sent_later() {
    let w = World::new();
    // Nothing listens on this port yet.
    let port = rewind_backends::testsupport::loopback_port();
    w.configure(
        &format!("[notify]\nwebhook = \"http://127.0.0.1:{port}/hook\"\n"),
        "schedule = \"daily 03:00\"\n[jobs.home.hooks]\nbefore = [\"exit 1\"]\n",
    );
    let r = w.rewind(&["run", "home"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("alert not sent, kept for later"), "{r}");
    assert_eq!(
        w.state()["pending"].as_array().map(Vec::len),
        Some(1),
        "{}",
        w.state()
    );
    // A listener comes up; the agent sends what was queued.
    let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = vec![0u8; 65536];
        let n = s.read(&mut buf).unwrap_or(0);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        tx.send(String::from_utf8_lossy(&buf[..n]).into_owned())
            .unwrap();
    });
    w.configure(
        &format!("[notify]\nwebhook = \"http://127.0.0.1:{port}/hook\"\n"),
        "schedule = \"daily 03:00\"\n",
    );
    let (mut agent, log) = w.agent();
    let req = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the queued alert");
    assert!(req.contains("\"failure\""), "{req}");
    let mut seen = Vec::new();
    expect_line(&log, "alert sent", 10, &mut seen);
    signal(&agent, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(wait_exit(&mut agent, 20), Some(0));
    assert_eq!(
        w.state()["pending"].as_array().map(Vec::len).unwrap_or(0),
        0
    );
}

/// A real SMTP server on loopback (Debian's aiosmtpd, which prints each
/// message it gets); its output arrives on the channel, line by line.
fn smtp() -> (u16, Child, mpsc::Receiver<String>) {
    let port = rewind_backends::testsupport::loopback_port();
    let mut child = Command::new("/usr/bin/python3")
        .args([
            "-m",
            "aiosmtpd",
            "-n",
            "-c",
            "aiosmtpd.handlers.Debugging",
            "-l",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .env("PYTHONUNBUFFERED", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3-aiosmtpd (scripts/test.sh installs it)");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    wait_until(20, "aiosmtpd listens", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (port, child, rx)
}

/// The text of the next message the SMTP server printed.
fn next_mail(rx: &mpsc::Receiver<String>) -> String {
    let mut text = String::new();
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if line.contains("END MESSAGE") {
                return text;
            }
            text.push_str(&line);
            text.push('\n');
        }
    }
    panic!("no e-mail in 60 s; got so far:\n{text}");
}

#[test]
fn an_s3_repository_that_goes_down_alerts_by_mail_and_webhook_then_recovers() {
    let mut server = rewind_backends::testsupport::SeaweedFs::start(&["agent"]);
    let w = World::s3(&server, "agent");
    let (url, hooks) = webhook();
    let (port, mut smtpd, mails) = smtp();
    w.configure(
        &format!(
            "[notify]\nwebhook = {url:?}\n[notify.email]\nto = [\"ops@example.com\"]\nfrom = \"rewind@example.com\"\nserver = \"127.0.0.1:{port}\"\nsecurity = \"none\"\n"
        ),
        "schedule = \"daily 03:00\"\n",
    );
    let r = w.rewind(&["run", "home"]);
    assert_eq!(r.code, Some(0), "{r}");
    server.kill();
    let r = w.rewind(&["run", "home"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains("attempt 1 failed"),
        "a retry was expected: {r}"
    );
    let a = hooks
        .recv_timeout(Duration::from_secs(10))
        .expect("a failure webhook");
    assert_eq!(a["event"], "failure", "{a}");
    let mail = next_mail(&mails);
    assert!(
        mail.contains("ops@example.com") && mail.contains("failed"),
        "{mail}"
    );
    assert_eq!(w.rewind(&["status"]).code, Some(5));
    server.restart();
    let r = w.rewind(&["run", "home"]);
    assert_eq!(r.code, Some(0), "{r}");
    let a = hooks
        .recv_timeout(Duration::from_secs(10))
        .expect("a recovery webhook");
    assert_eq!(a["event"], "recovery", "{a}");
    let mail = next_mail(&mails);
    assert!(mail.contains("works again"), "{mail}");
    assert_eq!(w.rewind(&["status"]).code, Some(0));
    // The recovery run's snapshot is in the repository (retention by the
    // repository's policy keeps one of the day's two).
    let saved = w.state()["jobs"]["home"]["backup"]["last_success"]["snapshot"].clone();
    assert!(
        w.snapshots().iter().any(|s| s["id"] == saved),
        "{saved} not in the repository"
    );
    let _ = smtpd.kill();
}

#[test]
fn agent_install_writes_a_unit_that_runs_this_config() {
    let w = World::new();
    w.configure("", "schedule = \"hourly\"\n");
    let r = w.rewind(&["agent", "install", "--user", "--no-enable"]);
    assert_eq!(r.code, Some(0), "{r}");
    let unit = w.env.path("config/systemd/user/rewind-agent.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        text.contains(&format!("agent --config {}", w.config.display()))
            && text.contains("KillMode=mixed")
            && text.contains("WantedBy=default.target"),
        "{text}"
    );
    assert!(r.out().contains(unit.to_str().unwrap()), "{r}");
    // A broken file is refused before a service depends on it.
    w.configure("", "schedule = \"often\"\n");
    let r = w.rewind(&["agent", "install", "--user", "--no-enable"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("not a schedule"), "{r}");
}

#[test]
fn a_restore_test_job_proves_the_newest_snapshot_and_status_shows_it() {
    let w = World::new();
    w.configure(
        "",
        "schedule = \"daily 03:00\"\nrestore_test = \"daily 06:00\"\nrestore_test_sample = \"25%\"\n",
    );
    assert_eq!(w.rewind(&["run", "home"]).code, Some(0));
    let r = w.rewind(&["run", "home", "--task", "restore-test"]);
    assert_eq!(r.code, Some(0), "{r}");
    let r = w.rewind(&["--json", "status"]);
    assert_eq!(r.code, Some(0), "{r}");
    let s: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let proof = &s["jobs"][0]["last_proven_restore"];
    assert_eq!(proof["outcome"], "success", "{s}");
    assert_eq!(proof["files"], 5, "25% of 20 files: {s}");
    let snap = w.snapshots()[0]["id"].clone();
    assert_eq!(proof["snapshot"], snap, "{s}");
    assert!(w
        .rewind(&["status"])
        .out()
        .contains("last proven restorable point"));
    // A bad sample is named with its line.
    w.configure(
        "",
        "schedule = \"daily 03:00\"\nrestore_test_sample = \"lots\"\n",
    );
    let r = w.rewind(&["config", "check"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("jobs.home.restore_test_sample"), "{r}");
}

/// A job's `compression` reaches its backups, and a wrong one is named
/// with its key before anything runs.
#[test]
fn a_jobs_compression_reaches_its_backups() {
    let w = World::new();
    // Numbers, one a line: about 2 MB raw, a third of it compressed, and
    // no chunk like another.
    let lines: String = (0..300_000u32).map(|i| format!("{i}\n")).collect();
    write(&w.src.join("numbers"), lines.as_bytes());
    w.configure("", "schedule = \"daily 03:00\"\ncompression = \"off\"\n");
    assert_eq!(w.rewind(&["run", "home"]).code, Some(0));
    let stored: u64 = packs(&w.env.repo)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(
        stored > lines.len() as u64,
        "stored {stored} bytes of {}: compressed all the same",
        lines.len()
    );
    w.configure("", "schedule = \"daily 03:00\"\ncompression = \"ultra\"\n");
    let r = w.rewind(&["config", "check"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("jobs.home.compression"), "{r}");
}

#[test]
fn a_watch_job_backs_up_once_changes_settle_and_not_without_changes() {
    let w = World::new();
    w.configure(
        "",
        "schedule = \"watch\"\nmin_interval = \"2s\"\nsettle = \"1s\"\nforget = false\n",
    );
    let (mut agent, rx) = w.agent();
    let mut seen = Vec::new();
    expect_line(&rx, "watching 1 path(s)", 10, &mut seen);
    // The first backup at once, then nothing while nothing changes.
    expect_line(&rx, "backup: success", 30, &mut seen);
    std::thread::sleep(Duration::from_secs(4));
    while let Ok(l) = rx.try_recv() {
        seen.push(l);
    }
    assert_eq!(
        seen.iter()
            .filter(|l| l.contains("backup: started"))
            .count(),
        1,
        "{}",
        seen.join("\n")
    );
    // A file saved: backed up within settle + min_interval (and the time
    // the backup takes).
    let saved = Instant::now();
    std::fs::write(w.src.join("d0/new.txt"), b"saved by a person").unwrap();
    expect_line(&rx, "have settled", 15, &mut seen);
    expect_line(&rx, "backup: success", 30, &mut seen);
    let latency = saved.elapsed();
    assert!(latency < Duration::from_secs(15), "{latency:?}");
    let snaps = w.snapshots();
    assert_eq!(snaps.len(), 2);
    let r = w.env.ok([
        "ls",
        snaps[1]["id"].as_str().unwrap(),
        w.src.join("d0").to_str().unwrap(),
    ]);
    assert!(r.out().contains("new.txt"), "{r}");
    signal(&agent, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(wait_exit(&mut agent, 20), Some(0));
}

#[test]
fn metrics_completions_and_man_pages() {
    let w = World::new();
    w.configure("", "schedule = \"every 1h\"\ncheck = \"daily 05:00\"\n");
    let port = rewind_backends::testsupport::loopback_port();
    let mut c = w.cmd();
    c.args(["agent", "--metrics-listen", &format!("127.0.0.1:{port}")]);
    let mut agent = c.spawn().unwrap();
    let (tx, rx) = mpsc::channel();
    let err = agent.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    expect_line(&rx, "metrics on http://", 10, &mut seen);
    expect_line(&rx, "backup: success", 30, &mut seen);
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let m = get("/metrics");
    assert!(m.starts_with("HTTP/1.1 200"), "{m}");
    assert!(
        m.contains("rewind_last_run_ok{job=\"home\",task=\"backup\"} 1")
            && m.contains("rewind_last_success_timestamp_seconds{job=\"home\",task=\"backup\"}")
            && m.contains("rewind_failures{job=\"home\",task=\"check\"} 0")
            && m.contains("rewind_repository_snapshots{job=\"home\",task=\"backup\"} 1")
            && m.contains("rewind_repository_bytes{job=\"home\",task=\"backup\"}")
            && m.contains("rewind_snapshots{job=\"home\",task=\"backup\"} 1")
            && m.contains("# TYPE rewind_agent_up gauge"),
        "{m}"
    );
    assert!(get("/other").starts_with("HTTP/1.1 404"));
    // The same address twice: the second agent says so (and another
    // agent on the same state is refused first).
    let r = w.rewind(&["agent"]);
    assert!(
        r.code != Some(0) && r.stderr.contains("another rewind agent"),
        "{r}"
    );
    signal(&agent, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(wait_exit(&mut agent, 20), Some(0));
    // Completions and man pages come from the CLI definition.
    let r = w.rewind(&["completions", "bash"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(
        r.out().contains("verify-restore") && r.out().contains("complete"),
        "bash completion"
    );
    let r = w.rewind(&["man"]);
    assert!(r.out().contains(".TH rewind"), "{r}");
    let dir = w.env.path("man");
    let r = w.rewind(&["man", "--dir", dir.to_str().unwrap()]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(dir.join("rewind-agent.1").is_file() && dir.join("rewind-verify-restore.1").is_file());
}

#[test]
fn a_dump_job_and_an_offsite_copy_run_through_the_agent_code() {
    let w = World::new();
    // A second repository as the offsite copy, with its own password.
    let offsite = w.env.path("offsite");
    std::fs::write(w.env.path("offsite-password"), "offsite secret").unwrap();
    let mut c = w.env.bare_cmd();
    c.env("REWIND_PASSWORD", "offsite secret")
        .args(["-r", offsite.to_str().unwrap(), "init"]);
    assert_eq!(run_cmd(c).code, Some(0));
    w.configure(
        "",
        &format!(
            "schedule = \"daily 03:00\"\ncopy_to = {{ repository = {:?}, password_file = {:?} }}\n\n[jobs.db]\nrepository = {:?}\npassword_file = {:?}\ncommand = [\"sh\", \"-c\", \"echo 'CREATE TABLE t;'\"]\ncommand_filename = \"app.sql\"\nschedule = \"daily 01:30\"\n",
            offsite,
            w.env.path("offsite-password"),
            w.repo,
            w.env.path("password")
        ),
    );
    assert_eq!(w.rewind(&["run", "home"]).code, Some(0));
    let mut c = w.env.bare_cmd();
    c.env("REWIND_PASSWORD", "offsite secret").args([
        "-r",
        offsite.to_str().unwrap(),
        "--json",
        "snapshots",
    ]);
    let r = run_cmd(c);
    let copied: Vec<serde_json::Value> = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(copied.len(), 1, "the offsite copy: {r}");
    let r = w.rewind(&["run", "db"]);
    assert_eq!(r.code, Some(0), "{r}");
    let r = w.env.ok(["dump", "latest", "/app.sql"]);
    assert_eq!(r.out(), "CREATE TABLE t;\n");
    // A dump command that fails saves no snapshot and fails the run.
    let text = std::fs::read_to_string(&w.config).unwrap();
    std::fs::write(&w.config, text.replace("echo 'CREATE TABLE t;'", "exit 7")).unwrap();
    let before = w.snapshots().len();
    let r = w.rewind(&["run", "db"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert_eq!(w.snapshots().len(), before);
}

#[test]
fn a_restore_test_job_detects_a_damaged_pack_and_alerts() {
    let w = World::new();
    let (url, alerts) = webhook();
    w.configure(
        &format!("[notify]\nwebhook = {url:?}\n"),
        "schedule = \"daily 03:00\"\nrestore_test = \"daily 06:00\"\nrestore_test_sample = \"100%\"\n",
    );
    assert_eq!(w.rewind(&["run", "home"]).code, Some(0));
    let big = packs(&w.env.repo)
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut b = std::fs::read(&big).unwrap();
    let mid = b.len() / 3;
    b[mid] ^= 0x40;
    std::fs::write(&big, b).unwrap();
    let r = w.rewind(&["run", "home", "--task", "restore-test"]);
    assert_eq!(r.code, Some(1), "{r}");
    let a = alerts
        .recv_timeout(Duration::from_secs(10))
        .expect("an alert");
    assert_eq!(
        (a["event"].as_str(), a["task"].as_str()),
        (Some("failure"), Some("restore-test")),
        "{a}"
    );
    let r = w.rewind(&["status"]);
    assert_eq!(r.code, Some(5), "{r}");
    assert!(r.out().contains("last restore test failed"), "{r}");
}

#[test]
fn a_suspicious_snapshot_stays_a_problem_until_a_person_marks_it() {
    let w = World::new();
    let docs = w.src.join("docs");
    for i in 0..40 {
        let text = format!("line {i} of a document that compresses well\n").repeat(200);
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join(format!("doc{i}.txt")), text).unwrap();
    }
    let (url, alerts) = webhook();
    w.configure(
        &format!("[notify]\nwebhook = {url:?}\n"),
        "schedule = \"daily 03:00\"\nforget = false\n",
    );
    assert_eq!(w.rewind(&["run", "home"]).code, Some(0));
    for i in 0..40 {
        write_random(&docs.join(format!("doc{i}.txt")), 8000);
    }
    let r = w.rewind(&["run", "home"]);
    assert_eq!(r.code, Some(4), "{r}");
    let a = alerts
        .recv_timeout(Duration::from_secs(10))
        .expect("an alert");
    assert_eq!(a["event"], "suspicious", "{a}");
    // Another backup, clean: the attack's snapshot is still unresolved.
    assert_eq!(w.rewind(&["run", "home"]).code, Some(0));
    let r = w.rewind(&["status"]);
    assert_eq!(r.code, Some(5), "{r}\n{}", w.state());
    assert!(r.out().contains("no one has marked it"), "{r}");
    let m = w.rewind(&["--json", "status"]);
    let s: serde_json::Value = serde_json::from_slice(&m.stdout).unwrap();
    assert_eq!(s["jobs"][0]["last_success"]["snapshots"], 3, "{s}");
    // A person looks and marks it; the next backup sees that.
    let id = s["jobs"][0]["last_success"]["unresolved"][0]
        .as_str()
        .unwrap()
        .to_string();
    w.env.ok(["mark", "clean", &id]);
    assert_eq!(w.rewind(&["run", "home"]).code, Some(0));
    let r = w.rewind(&["status"]);
    assert_eq!(r.code, Some(0), "{r}");
}
