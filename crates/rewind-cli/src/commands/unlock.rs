//! `rewind unlock` and `rewind lock`: a key agent, as ssh-agent is for ssh
//! keys. `unlock` opens a repository with its password once and hands its
//! master key to a small process of the same user that keeps it in memory
//! for a while (`--for`, default 1h); until then, or until `rewind lock`,
//! commands on that repository get the key from it and skip the password's
//! key derivation (Argon2id, 64 MiB and ~0.1 s a command).
//!
//! The agent listens on a Unix socket in a directory only the user can
//! enter ($XDG_RUNTIME_DIR/rewind, else the cache's `run/`, mode 0700), and
//! answers only peers of its own uid (SO_PEERCRED). It keeps nothing on
//! disk and exits when its last key expires or is locked. A key is used
//! only while the key file it was unlocked with is still in the repository
//! and it is bound to the repository's config (docs/DESIGN.md §4).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args as ClapArgs;
use rewind_core::crypto::MasterKey;
use rewind_core::repository::Repository;
use serde::{Deserialize, Serialize};

use super::Global;

#[derive(ClapArgs, Debug)]
pub struct UnlockArgs {
    /// How long the agent keeps the key (30m, 8h, 1d).
    #[arg(long = "for", value_name = "DURATION", default_value = "1h")]
    pub for_: String,
    /// List the repositories the agent holds keys for, and until when
    /// (no password asked, nothing unlocked).
    #[arg(long)]
    pub list: bool,
}

#[derive(ClapArgs, Debug)]
pub struct LockArgs {
    /// Forget the keys of every repository (else only this one's).
    #[arg(long)]
    pub all: bool,
}

#[derive(ClapArgs, Debug)]
pub struct KeyAgentArgs {
    /// The socket to listen on.
    #[arg(long)]
    pub socket: PathBuf,
}

/// A request to the agent, one JSON line.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Request {
    Put {
        repo: String,
        /// Where the repository is, as the user named it (for `--list`).
        #[serde(default)]
        location: String,
        key_file: String,
        key: MasterKey,
        seconds: u64,
    },
    List,
    Get {
        repo: String,
    },
    Forget {
        repo: Option<String>,
    },
}

/// The agent's answer, one JSON line.
#[derive(Serialize, Deserialize, Default)]
struct Reply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<MasterKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    until: Option<String>,
    /// For `List`: every repository held.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    unlocked: Vec<Unlocked>,
}

/// One repository the agent holds a key for (no key in it).
#[derive(Serialize, Deserialize)]
struct Unlocked {
    repo: String,
    location: String,
    until: String,
}

/// Where the agent's socket is: $XDG_RUNTIME_DIR/rewind/keys.sock, else
/// the cache's run/keys.sock.
pub fn socket_path() -> Option<PathBuf> {
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .map(|p| p.join("rewind"))
        .or_else(|| super::cache_dir().map(|c| c.join("run")))?;
    Some(dir.join("keys.sock"))
}

/// True if `dir` is a folder of this user that no one else may enter.
fn private_dir(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(dir).is_ok_and(|m| {
        m.is_dir() && m.uid() == nix::unistd::getuid().as_raw() && m.mode() & 0o077 == 0
    })
}

/// Connects to the agent, only in a private folder of this user and only
/// to a listener of this user (SO_PEERCRED): never hands a key to, or takes
/// one from, anyone else.
fn connect(socket: &Path) -> std::io::Result<UnixStream> {
    let dir = socket.parent().unwrap_or(Path::new("/"));
    if std::fs::symlink_metadata(dir).is_err() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} does not exist", dir.display()),
        ));
    }
    if !private_dir(dir) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} must be a folder of this user that others cannot enter (mode 0700): fix it \
                 or set XDG_RUNTIME_DIR",
                dir.display()
            ),
        ));
    }
    let s = UnixStream::connect(socket)?;
    let peer = nix::sys::socket::getsockopt(&s, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(std::io::Error::from)?;
    if peer.uid() != nix::unistd::getuid().as_raw() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{} is another user's", socket.display()),
        ));
    }
    Ok(s)
}

fn ask(socket: &Path, req: &Request) -> std::io::Result<Reply> {
    let mut s = connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = serde_json::to_vec(req).map_err(std::io::Error::other)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer)?;
    serde_json::from_str(&answer).map_err(std::io::Error::other)
}

/// The repository opened with the agent's key, if the agent holds one for
/// it that still opens it (else None: the caller asks for the password).
pub fn open_from_agent(
    backend: Arc<dyn rewind_core::backend::Backend>,
    repo_id: &str,
) -> Result<Option<Repository>> {
    let Some(socket) = socket_path() else {
        return Ok(None);
    };
    if !socket.exists() {
        return Ok(None);
    }
    let Ok(reply) = ask(
        &socket,
        &Request::Get {
            repo: repo_id.to_string(),
        },
    ) else {
        return Ok(None);
    };
    let (Some(key), Some(key_file)) = (reply.key, reply.key_file) else {
        return Ok(None);
    };
    Ok(Repository::open_with_key(backend, key, &key_file)?)
}

pub fn unlock(args: &UnlockArgs, global: &Global) -> Result<u8> {
    if args.list {
        return list(global);
    }
    let secs = crate::agent::schedule::parse_duration(&args.for_)
        .map_err(|e| super::usage(format!("--for: {e}")))?
        .as_secs();
    if secs <= 0 {
        return Err(super::usage(
            "--for: give a duration longer than 0, e.g. 1h",
        ));
    }
    let Some(socket) = socket_path() else {
        bail!(
            "no place for the key agent's socket: set XDG_RUNTIME_DIR (or HOME) to an absolute directory"
        );
    };
    // The password, never the agent: unlocking proves it.
    let backend = global.backend()?;
    let location = backend.location();
    Repository::probe(&*backend).with_context(|| format!("cannot open repository {location}"))?;
    let password = global.password()?;
    let repo = Repository::open(backend, &password)
        .with_context(|| format!("cannot open repository {location}"))?;
    if repo.crypto().master_key().config.is_none() {
        bail!(
            "the key of {location} predates the binding of the config to the keys, so a kept key \
             could not be told from another repository's: change the password \
             (`rewind key passwd`) to get a bound key, then unlock"
        );
    }
    match ask(
        &socket,
        &Request::Get {
            repo: String::new(),
        },
    ) {
        Ok(_) => {}
        // Nobody listens there: start the agent.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            start_agent(&socket)?
        }
        Err(e) => bail!(
            "the key agent's socket {} cannot be used ({e}); nothing was unlocked",
            socket.display()
        ),
    }
    let reply = ask(
        &socket,
        &Request::Put {
            repo: repo.config().id.clone(),
            location: location.clone(),
            key_file: repo.current_key().to_hex(),
            key: repo.crypto().master_key().clone(),
            seconds: secs as u64,
        },
    )
    .with_context(|| format!("cannot reach the key agent at {}", socket.display()))?;
    if !global.quiet {
        println!(
            "unlocked {location} until {} (`rewind lock` forgets it sooner)",
            reply.until.unwrap_or_default()
        );
    }
    Ok(0)
}

/// `unlock --list`: what the agent holds (never a key), without a password.
fn list(global: &Global) -> Result<u8> {
    let socket = socket_path().filter(|s| s.exists());
    let reply = match socket.as_deref().map(|s| (s, ask(s, &Request::List))) {
        None => Reply::default(),
        Some((_, Ok(r))) => r,
        // A socket nobody answers on: a dead agent's.
        Some((_, Err(e))) if e.kind() == std::io::ErrorKind::ConnectionRefused => Reply::default(),
        Some((s, Err(e))) => bail!("cannot reach the key agent at {}: {e}", s.display()),
    };
    if global.json {
        println!("{}", serde_json::to_string_pretty(&reply.unlocked)?);
    } else if reply.unlocked.is_empty() {
        println!("nothing is unlocked");
    } else {
        for u in &reply.unlocked {
            let short: String = u.repo.chars().take(8).collect();
            println!(
                "unlocked until {}: {} (repository {short})",
                u.until, u.location
            );
        }
    }
    Ok(0)
}

pub fn lock(args: &LockArgs, global: &Global) -> Result<u8> {
    let Some(socket) = socket_path().filter(|s| s.exists()) else {
        if !global.quiet {
            println!("no key agent is running: nothing was unlocked");
        }
        return Ok(0);
    };
    let repo = if args.all {
        None
    } else {
        let backend = global.backend()?;
        Some(Repository::probe(&*backend)?.id)
    };
    match ask(&socket, &Request::Forget { repo }) {
        Ok(_) => {
            if !global.quiet {
                println!(
                    "locked: {}",
                    if args.all {
                        "every repository"
                    } else {
                        "this repository"
                    }
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            // A socket nobody answers on: a dead agent's.
            let _ = std::fs::remove_file(&socket);
        }
        Err(e) => bail!("cannot reach the key agent at {}: {e}", socket.display()),
    }
    Ok(0)
}

/// Starts the agent in its own process group (a Ctrl-C in the terminal
/// does not stop it) and waits until it listens.
fn start_agent(socket: &Path) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let dir = socket.parent().expect("the socket is in a directory");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    if !private_dir(dir) {
        bail!(
            "{} must be a folder of this user that others cannot enter (mode 0700) to hold the \
             key agent's socket: fix it or set XDG_RUNTIME_DIR",
            dir.display()
        );
    }
    // A socket nobody listens on (a dead agent's).
    let _ = std::fs::remove_file(socket);
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("key-agent")
        .arg("--socket")
        .arg(socket)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .context("cannot start the key agent")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    if line.trim() != "ready" {
        bail!("the key agent did not start (socket {})", socket.display());
    }
    Ok(())
}

struct Held {
    location: String,
    key_file: String,
    key: MasterKey,
    /// Wall-clock time (it goes on through a suspend, as the "until"
    /// shown does).
    until: std::time::SystemTime,
    until_shown: String,
}

/// Longest unlock: 30 days.
const MAX_SECONDS: u64 = 30 * 86_400;

type Keys = Arc<Mutex<std::collections::HashMap<String, Held>>>;

/// Removes the socket if it is still the one this agent made.
fn remove_own(socket: &Path, ino: u64) {
    use std::os::unix::fs::MetadataExt;
    if std::fs::symlink_metadata(socket).is_ok_and(|m| m.ino() == ino) {
        let _ = std::fs::remove_file(socket);
    }
}

/// The agent itself (`rewind key-agent`, started by `unlock`).
pub fn key_agent(args: &KeyAgentArgs) -> Result<u8> {
    use std::os::unix::fs::MetadataExt;
    let listener = UnixListener::bind(&args.socket)
        .with_context(|| format!("cannot listen on {}", args.socket.display()))?;
    std::fs::set_permissions(&args.socket, std::fs::Permissions::from_mode(0o600))?;
    let ino = std::fs::symlink_metadata(&args.socket)?.ino();
    let held: Keys = Arc::default();
    println!("ready");
    std::io::stdout().flush()?;
    // Expiry: the last key gone ends the agent (and its socket).
    {
        let held = held.clone();
        let socket = args.socket.clone();
        std::thread::spawn(move || {
            let mut ever = false;
            let started = std::time::Instant::now();
            loop {
                std::thread::sleep(Duration::from_millis(250));
                let mut h = held.lock().expect("keys");
                let now = std::time::SystemTime::now();
                h.retain(|_, k| k.until > now);
                ever |= !h.is_empty();
                let idle = !ever && started.elapsed() > Duration::from_secs(60);
                let ours = std::fs::symlink_metadata(&socket).is_ok_and(|m| m.ino() == ino);
                if (ever && h.is_empty()) || idle || !ours {
                    h.clear();
                    remove_own(&socket, ino);
                    std::process::exit(0);
                }
            }
        });
    }
    let me = nix::unistd::getuid();
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let peer = nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials);
        if !peer.is_ok_and(|c| c.uid() == me.as_raw()) {
            continue;
        }
        // Each client in its own thread: a slow one holds up no other.
        let held = held.clone();
        let socket = args.socket.clone();
        std::thread::spawn(move || serve_one(&conn, &held, &socket, ino));
    }
    Ok(0)
}

/// Answers one request (one line of at most 64 KiB, within 5 s).
fn serve_one(conn: &UnixStream, held: &Keys, socket: &Path, ino: u64) {
    use std::io::Read;
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut line = Vec::new();
    let mut reader = conn.take(64 << 10);
    let mut buf = [0u8; 4096];
    while !line.contains(&b'\n') {
        if std::time::Instant::now() > deadline {
            return;
        }
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => line.extend_from_slice(&buf[..n]),
        }
    }
    let reply = match serde_json::from_slice::<Request>(&line) {
        Ok(Request::Put {
            repo,
            location,
            key_file,
            key,
            seconds,
        }) => {
            let seconds = seconds.min(MAX_SECONDS);
            let until = std::time::SystemTime::now() + Duration::from_secs(seconds);
            let until_shown = jiff::Zoned::now()
                .checked_add(jiff::SignedDuration::from_secs(seconds as i64))
                .map(|z| z.strftime("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default();
            held.lock().expect("keys").insert(
                repo,
                Held {
                    location,
                    key_file,
                    key,
                    until,
                    until_shown: until_shown.clone(),
                },
            );
            Reply {
                until: Some(until_shown),
                ..Reply::default()
            }
        }
        Ok(Request::Get { repo }) => {
            let h = held.lock().expect("keys");
            match h
                .get(&repo)
                .filter(|k| k.until > std::time::SystemTime::now())
            {
                Some(k) => Reply {
                    key_file: Some(k.key_file.clone()),
                    key: Some(k.key.clone()),
                    until: Some(k.until_shown.clone()),
                    ..Reply::default()
                },
                None => Reply::default(),
            }
        }
        Ok(Request::List) => {
            let now = std::time::SystemTime::now();
            let h = held.lock().expect("keys");
            let mut unlocked: Vec<Unlocked> = h
                .iter()
                .filter(|(_, k)| k.until > now)
                .map(|(repo, k)| Unlocked {
                    repo: repo.clone(),
                    location: k.location.clone(),
                    until: k.until_shown.clone(),
                })
                .collect();
            unlocked.sort_by(|a, b| a.location.cmp(&b.location));
            Reply {
                unlocked,
                ..Reply::default()
            }
        }
        Ok(Request::Forget { repo }) => {
            let mut h = held.lock().expect("keys");
            match repo {
                Some(r) => {
                    h.remove(&r);
                }
                None => h.clear(),
            }
            if h.is_empty() {
                let _ = (&*conn).write_all(b"{}\n");
                remove_own(socket, ino);
                std::process::exit(0);
            }
            Reply::default()
        }
        Err(_) => Reply::default(),
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    let _ = (&*conn).write_all(&out);
}
