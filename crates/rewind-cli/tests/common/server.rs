//! A real `rewind serve` on loopback for the tests, its tokens, and raw
//! HTTP requests to it.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use super::*;

/// A running `rewind serve`.
pub struct Server {
    pub data: PathBuf,
    pub addr: String,
    pub args: Vec<String>,
    pub vars: Vec<(String, String)>,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Server {
    pub fn start(env: &Env, args: &[&str]) -> Server {
        Server::launch(env, args, &[], "server.log")
    }

    /// A server with extra environment (storage credentials), its own log
    /// and its own data directory (named after the log).
    pub fn launch(env: &Env, args: &[&str], vars: &[(&str, &str)], log: &str) -> Server {
        let mut s = Server {
            data: env.path(log.trim_end_matches(".log")),
            addr: "127.0.0.1:0".into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            log: env.path(log),
        };
        s.spawn(env);
        s
    }

    pub fn spawn(&mut self, env: &Env) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut c = env.bare_cmd();
        c.arg("serve")
            .arg("--data")
            .arg(&self.data)
            .arg("--listen")
            .arg(&self.addr)
            .args(&self.args)
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = c.spawn().expect("start rewind serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("rewind serve: listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}; log:\n{}", self.log()));
        self.addr = url.split("://").nth(1).unwrap().to_string();
        self.child = Some(child);
    }

    pub fn url(&self, repo: &str) -> String {
        format!("rest:http://{}/{repo}", self.addr)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Peak resident memory of the server process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().unwrap().id();
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// `rewind serve ARGS --data DATA` (token and repo management), with
    /// the server's --storage if it has one.
    pub fn admin(&self, env: &Env, args: &[&str]) -> Run {
        let mut c = env.bare_cmd();
        c.arg("serve").args(args).arg("--data").arg(&self.data);
        if let Some(i) = self.args.iter().position(|a| a == "--storage") {
            c.arg("--storage").arg(&self.args[i + 1]);
        }
        c.envs(self.vars.iter().map(|(k, v)| (k, v)));
        run_cmd(c)
    }

    /// Makes a token and returns it.
    pub fn token(&self, env: &Env, repo: &str, role: &str, extra: &[&str]) -> String {
        let mut args = vec!["token", "add", "--repo", repo, "--role", role];
        args.extend_from_slice(extra);
        let r = self.admin(env, &args);
        assert_eq!(r.code, Some(0), "{r}");
        let out = r.out();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "token add prints the token alone: {out:?}");
        assert!(
            lines[0].starts_with("rwt_") && lines[0].len() == 68,
            "{out:?}"
        );
        lines[0].to_string()
    }

    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.data.join("repos").join(repo)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A client of one repository on the server, with one token.
pub fn client(env: &Env, server: &Server, repo: &str, token: &str) -> RemoteRepo {
    let tf = env.path(format!("token-{}", &token[4..12]));
    fs::write(&tf, token).unwrap();
    RemoteRepo {
        env: Env {
            tmp: tempfile::tempdir().unwrap(),
            root: env.root.clone(),
            repo: env.repo.clone(),
            password: env.password.clone(),
        },
        url: server.url(repo),
        vars: vec![],
        args: vec!["--token-file".into(), tf.display().to_string()],
    }
}

/// A raw HTTP/1.1 request; returns (status, body).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req += &format!("Authorization: Bearer {t}\r\n");
    }
    let mut has_len = false;
    for (k, v) in headers {
        has_len |=
            k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding");
        req += &format!("{k}: {v}\r\n");
    }
    if !has_len {
        req += &format!("Content-Length: {}\r\n", body.len());
    }
    req += "\r\n";
    s.write_all(req.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let (status, text) = answer_of(s);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Reads an answer to its end: (status, headers and body).
pub fn answer_of(mut s: TcpStream) -> (u16, String) {
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    (status, text)
}
