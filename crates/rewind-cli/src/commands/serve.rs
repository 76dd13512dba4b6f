//! `rewind serve`: host repositories for clients that may add backups but
//! never destroy them; `rewind serve token ...` and `rewind serve repo ...`
//! manage its tokens and per-repository settings on the server itself.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use rewind_server::state::{RepoSettings, Role, StateStore};
use rewind_server::{Config, Limits};

use super::{usage, Global};
use crate::exit;

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args, Debug)]
struct DataArg {
    /// The server's data directory: its tokens and settings (server.json)
    /// and, without --storage, the repositories (repos/NAME).
    #[arg(long, env = "REWIND_SERVE_DATA", value_name = "DIR")]
    data: Option<PathBuf>,
    /// The server's --storage: tokens and settings are kept there
    /// (LOCATION/.server) instead of in DATA.
    #[arg(long, env = "REWIND_SERVE_STORAGE", value_name = "LOCATION")]
    storage: Option<String>,
}

impl DataArg {
    /// Where the server keeps its tokens and settings.
    fn store(&self, g: &Global) -> Result<StateStore> {
        let options = storage_options(g)?;
        Ok(StateStore::open(
            self.data.as_deref(),
            self.storage.as_deref(),
            &options,
        )?)
    }
}

fn storage_options(g: &Global) -> Result<rewind_backends::Options> {
    let mut options = rewind_backends::Options::new();
    for o in &g.options {
        let (k, v) = rewind_backends::parse_option(o)?;
        options.insert(k, v);
    }
    Ok(options)
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The server's data directory: its tokens and settings (server.json)
    /// and, without --storage, the repositories (repos/NAME).
    #[arg(long, env = "REWIND_SERVE_DATA", value_name = "DIR")]
    data: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8420", value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// TLS certificate chain (PEM).
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// TLS without a CA: the server makes its own certificate at the first
    /// start and keeps it in DATA (tls-self-signed.crt and .key, mode 0600).
    /// It logs the certificate's SHA-256 fingerprint at every start
    /// (`rewind serve fingerprint` prints it too); clients pin it with
    /// -o rest.fingerprint=SHA256:HEX.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    tls_self_signed: bool,
    /// Serve plain HTTP on an address that is not loopback (behind a TLS proxy).
    #[arg(long)]
    insecure_listen: bool,
    /// Keep the repositories here instead of DATA/repos: any location, e.g.
    /// s3:https://endpoint/bucket/prefix (repository NAME at LOCATION/NAME,
    /// tokens and settings at LOCATION/.server; backend options with -o).
    /// Servers in front of one store then share everything.
    #[arg(long, env = "REWIND_SERVE_STORAGE", value_name = "LOCATION")]
    storage: Option<String>,
    /// Never delete a file younger than this many days, whoever asks
    /// (default of every repository; `serve repo set` per repository).
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    min_delete_age: u32,
    /// Refuse snapshot deletes that would leave less history than this.
    #[arg(long, default_value_t = 365, value_name = "DAYS")]
    history_days: u32,
    /// Quota of every repository (e.g. 500G; `serve repo set` per repository).
    #[arg(long, value_name = "SIZE")]
    max_size: Option<String>,
    /// Largest single file accepted.
    #[arg(long, default_value = "64M", value_name = "SIZE")]
    max_object_size: String,
    /// Memory for uploads in flight, server-wide, on storage that holds
    /// each upload in memory before storing it (S3, SFTP; local storage
    /// streams and is not counted). An upload reserves its size before its
    /// body is read; one that finds no room within 30 s gets 503 with
    /// Retry-After (clients retry).
    #[arg(long, default_value = "256M", value_name = "SIZE")]
    max_upload_memory: String,
    /// Uploads one token may run at once; more get 503 (clients retry).
    #[arg(long, default_value_t = rewind_server::DEFAULT_MAX_UPLOADS_PER_TOKEN, value_name = "N")]
    max_uploads_per_token: usize,
    /// Seconds an upload waits for upload memory before 503 (tests).
    #[arg(long, default_value_t = 30, value_name = "SECS", hide = true)]
    upload_memory_wait: u64,
    /// Phone inboxes (`serve dav add`): a snapshot once this many seconds
    /// have passed without an upload.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    inbox_settle: u64,
    /// Phone inboxes: a snapshot at least this often, uploads or not.
    #[arg(long, default_value_t = 24, value_name = "HOURS")]
    inbox_every: u64,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Make, list and revoke access tokens.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Per-repository settings: minimum delete age, history floor, quota.
    Repo {
        #[command(subcommand)]
        action: RepoAction,
    },
    /// After a client was compromised: move everything one token stored in
    /// a repository since a time out of it (into DATA/quarantine/REPO/, or
    /// STORAGE/.server/quarantine/REPO/), whatever the minimum delete age
    /// and history floor say, so history is as it was before. Lists what
    /// it would move unless --apply. Config and key files are never moved.
    Quarantine {
        #[command(flatten)]
        data: DataArg,
        // The repository is the global --repo NAME.
        /// The token's name (`rewind serve token list`).
        #[arg(long, value_name = "NAME")]
        token: String,
        /// From when: a date (2026-11-28, local midnight), a time
        /// (2026-11-28T09:00:00Z) or a duration ago (3d, 12h).
        #[arg(long, value_name = "TIME")]
        since: String,
        /// Move the files (without it, only list them).
        #[arg(long)]
        apply: bool,
    },
    /// Phone inboxes: WebDAV folders at /dav/NAME/ that phones upload to
    /// (photo and folder sync apps, the iOS Files app, DAVx5); the server
    /// snapshots each into its repository when uploads settle
    /// (--inbox-settle) and daily (--inbox-every), with the ransomware scan.
    Dav {
        #[command(subcommand)]
        action: DavAction,
    },
    /// Print the SHA-256 fingerprint of the server's TLS certificate, which
    /// clients pin with -o rest.fingerprint=SHA256:HEX: the self-signed one
    /// in --data DIR (made by `rewind serve --tls-self-signed`), or the
    /// first certificate of --tls-cert FILE.
    Fingerprint {
        /// The server's data directory.
        #[arg(long, env = "REWIND_SERVE_DATA", value_name = "DIR")]
        data: Option<PathBuf>,
        /// A PEM certificate file (the server's --tls-cert) instead.
        #[arg(long, value_name = "FILE", conflicts_with = "data")]
        tls_cert: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum TokenAction {
    /// Make a token; prints it alone on stdout (the only time it is shown).
    Add {
        #[command(flatten)]
        data: DataArg,
        // The repository it opens is the global --repo NAME.
        /// backup (add backups, never delete), read (restore only) or admin.
        #[arg(long)]
        role: String,
        /// Its name in logs and `token revoke` (default REPO-ROLE-N).
        #[arg(long)]
        name: Option<String>,
        /// When it stops working: a duration (90d, 1y) or a date (2027-06-30).
        #[arg(long, value_name = "WHEN")]
        expires: Option<String>,
    },
    /// List the tokens (never the tokens themselves).
    List {
        #[command(flatten)]
        data: DataArg,
    },
    /// Revoke a token by name; takes effect at the server's next request.
    Revoke {
        #[command(flatten)]
        data: DataArg,
        /// The token's name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum DavAction {
    /// Make an inbox for the repository --repo NAME: a key in the
    /// repository (its password is asked for, or read from
    /// REWIND_PASSWORD, REWIND_PASSWORD_COMMAND or --password-file, and is
    /// not kept), and a login; prints the URL, user and password (the only
    /// time the password is shown).
    Add {
        #[command(flatten)]
        data: DataArg,
        /// Its name: the login's user and the URL, /dav/NAME/ (default:
        /// the repository's name).
        name: Option<String>,
        /// Most bytes its files may take together (e.g. 50G); uploads past
        /// it get 507.
        #[arg(long, value_name = "SIZE")]
        max_size: Option<String>,
        /// The server's address as phones reach it, to print the whole URL
        /// (e.g. https://backup.example.com:8420).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
    /// List the inboxes.
    List {
        #[command(flatten)]
        data: DataArg,
    },
    /// Remove an inbox: its login, and its files unless --keep-files (they
    /// stay in the snapshots either way).
    Remove {
        #[command(flatten)]
        data: DataArg,
        /// The inbox.
        name: String,
        /// Keep DATA/dav/NAME/files.
        #[arg(long)]
        keep_files: bool,
    },
}

#[derive(Subcommand, Debug)]
enum RepoAction {
    /// Change a repository's settings (unset ones follow the server's flags).
    Set {
        #[command(flatten)]
        data: DataArg,
        /// The repository.
        name: String,
        /// Never delete a file younger than this many days.
        #[arg(long, value_name = "DAYS")]
        min_delete_age: Option<u32>,
        /// Refuse snapshot deletes that would leave less history than this.
        #[arg(long, value_name = "DAYS")]
        history_days: Option<u32>,
        /// Quota (e.g. 500G).
        #[arg(long, value_name = "SIZE")]
        max_size: Option<String>,
    },
    /// Show the per-repository settings.
    List {
        #[command(flatten)]
        data: DataArg,
    },
}

use super::parse_size;

/// Parses `--expires`: a duration from now, a time or a date; refuses a
/// time that has passed (the token would open nothing).
fn parse_expiry(s: &str) -> Result<jiff::Timestamp> {
    let at = parse_time(
        "--expires",
        s,
        Counted::FromNow,
        "a duration (90d, 6m, 1y) or a date (2027-06-30)",
    )?;
    if at <= jiff::Timestamp::now() {
        return Err(usage(format!(
            "--expires {s}: {} has passed, and a token that expired already would open nothing; give a later date or a duration (90d, 1y)",
            at.to_zoned(jiff::tz::TimeZone::system())
                .strftime("%Y-%m-%d %H:%M:%S %Z")
        )));
    }
    Ok(at)
}

/// Which way a duration given for a time counts from now.
#[derive(Clone, Copy)]
enum Counted {
    /// Into the future (`--expires 90d`).
    FromNow,
    /// Into the past (`--since 3d`).
    Ago,
}

/// Parses a time given as a duration (counted from now as `counted` says),
/// an RFC 3339 time or a date (local midnight). Errors name `flag` and say
/// what it accepts (`forms`).
fn parse_time(flag: &str, s: &str, counted: Counted, forms: &str) -> Result<jiff::Timestamp> {
    if let Ok(span) = rewind_core::retention::parse_duration(s) {
        let now = jiff::Zoned::now();
        let at = match counted {
            Counted::FromNow => now.checked_add(span),
            Counted::Ago => now.checked_sub(span),
        };
        return Ok(at
            .map_err(|e| usage(format!("{flag} {s}: {e}")))?
            .timestamp());
    }
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Ok(ts);
    }
    if let Ok(d) = s.parse::<jiff::civil::Date>() {
        return Ok(d
            .to_zoned(jiff::tz::TimeZone::system())
            .map_err(|e| usage(format!("{flag} {s}: {e}")))?
            .timestamp());
    }
    Err(usage(format!("{flag} {s:?}: give {forms}")))
}

pub fn run(a: &Args, g: &Global) -> Result<u8> {
    match &a.action {
        None => serve(&a.run, g),
        Some(Action::Token { action }) => token(action, g),
        Some(Action::Repo { action }) => repo(action, g),
        Some(Action::Dav { action }) => dav(action, g),
        Some(Action::Fingerprint { data, tls_cert }) => fingerprint(data, tls_cert),
        Some(Action::Quarantine {
            data,
            token,
            since,
            apply,
        }) => quarantine(data, token, since, *apply, g),
    }
}

/// Parses `--since`: a time, a date (local midnight) or a duration ago.
fn parse_since(s: &str) -> Result<jiff::Timestamp> {
    parse_time(
        "--since",
        s,
        Counted::Ago,
        "a time (2026-11-28T09:00:00Z), a date (2026-11-28) or a duration ago (3d, 12h)",
    )
}

fn quarantine(data: &DataArg, token: &str, since: &str, apply: bool, g: &Global) -> Result<u8> {
    let Some(repo) = g.repo.as_ref().map(|r| r.display().to_string()) else {
        return Err(usage(
            "serve quarantine needs --repo NAME: the repository the token wrote to",
        ));
    };
    if !rewind_backends::rest::valid_repo_name(&repo) {
        return Err(usage(format!("{repo:?} is not a repository name")));
    }
    if data.data.is_none() && data.storage.is_none() {
        return Err(usage(
            "serve quarantine needs the server's --data DIR or --storage LOCATION",
        ));
    }
    let since_at = parse_since(since)?;
    let st = data.store(g)?.load()?;
    let Some(t) = st.tokens.iter().find(|t| t.name == token) else {
        return Err(usage(format!(
            "the server has no token named {token:?}: `rewind serve token list` shows them"
        )));
    };
    if t.repo != repo {
        return Err(usage(format!(
            "token {token} is for repository {}, not {repo}",
            t.repo
        )));
    }
    let live = t.revoked.is_none() && t.expires.is_none_or(|e| e > jiff::Timestamp::now());
    let options = storage_options(g)?;
    let place = rewind_server::quarantine::Place {
        data: data.data.as_deref(),
        storage: data.storage.as_deref(),
        options: &options,
    };
    let plan = rewind_server::quarantine::plan(&place, &repo, token, since_at)?;
    if g.json && !apply {
        outln!("{}", serde_json::to_string_pretty(&plan.items)?);
    } else {
        for i in &plan.items {
            outln!(
                "{}  {}/{}  {}",
                i.time
                    .map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string())
                    .unwrap_or_else(|| "(time unknown)".into()),
                i.kind,
                i.name,
                rewind_core::stats::human_bytes(i.size)
            );
        }
    }
    for (t, name) in &plan.kept {
        let file = match t {
            rewind_core::backend::FileType::Config => "the config".to_string(),
            _ => format!("{} {name}", t.what()),
        };
        eprintln!(
            "{file}: stored by {token} since then, but config and key files are never moved (without them nothing reads); a key file of the attacker's is removed by hand on the server"
        );
    }
    for (name, why) in &plan.unreadable {
        eprintln!("warning: the write record of {name} cannot be read ({why}); that file stays");
    }
    let what = format!(
        "{} files ({}) that token {token} stored in {repo} since {since_at}",
        plan.items.len(),
        rewind_core::stats::human_bytes(plan.bytes())
    );
    if live {
        eprintln!(
            "warning: token {token} still works; revoke it first (`rewind serve token revoke {token}`), or it can store more"
        );
    }
    if !apply {
        eprintln!(
            "{what}; nothing was moved: run again with --apply to move them out of the repository"
        );
        return Ok(exit::OK);
    }
    let moved = rewind_server::quarantine::apply(&place, &repo, token, &plan)?;
    for (name, why) in &moved.failed {
        eprintln!("error: {name} stays in the repository: {why}");
    }
    eprintln!(
        "moved {} of {what} to {} (with a manifest in its policy directory). Next, with the repository's admin token: `rewind check --read-data`. Snapshots that other tokens stored since then may use data this token stored: check names them; a file moved by mistake goes back by copying it into the repository.",
        moved.files, moved.to
    );
    Ok(if moved.failed.is_empty() {
        exit::OK
    } else {
        exit::FATAL
    })
}

/// The first 8 characters of a key id (all of it if shorter or not ASCII).
fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

fn dav(action: &DavAction, g: &Global) -> Result<u8> {
    let options = storage_options(g)?;
    let need_data = |data: &DataArg| -> Result<PathBuf> {
        data.data.clone().ok_or_else(|| {
            usage("phone inboxes live in the server's data directory: give --data DIR (REWIND_SERVE_DATA)")
        })
    };
    match action {
        DavAction::Add {
            data,
            name,
            max_size,
            url,
        } => {
            let dir = need_data(data)?;
            let Some(repo) = g.repo.as_ref().map(|r| r.display().to_string()) else {
                return Err(usage(
                    "serve dav add needs --repo NAME: the repository the inbox's snapshots go to",
                ));
            };
            if !rewind_backends::rest::valid_repo_name(&repo) {
                return Err(usage(format!("{repo:?} is not a repository name")));
            }
            let name = name.clone().unwrap_or_else(|| repo.to_lowercase());
            if !rewind_server::inbox::valid_name(&name) {
                return Err(usage(format!(
                    "inbox name {name:?}: use lower-case letters, digits, '-', '_' and '.' (up to 64, not starting with '.')"
                )));
            }
            let max_size = max_size.as_deref().map(parse_size).transpose()?;
            let place = rewind_server::quarantine::Place {
                data: Some(&dir),
                storage: data.storage.as_deref(),
                options: &options,
            };
            let password = g.password()?;
            let added = rewind_server::inbox::add(&place, &repo, &name, &password, max_size)
                .map_err(|e| anyhow::anyhow!("cannot make inbox {name}: {e}"))?;
            let base = url
                .as_deref()
                .unwrap_or("https://SERVER:PORT")
                .trim_end_matches('/');
            outln!("url: {base}/dav/{name}/");
            outln!("user: {name}");
            outln!("password: {}", added.password);
            eprintln!(
                "inbox {name} made for repository {repo} (key {} added to it, for the server's snapshots); the password above is not shown again. Files uploaded there are snapshotted once uploads settle and daily, into snapshots whose path is dav:{name}.",
                short(&added.inbox.key_id)
            );
            Ok(exit::OK)
        }
        DavAction::List { data } => {
            let dir = need_data(data)?;
            let (inboxes, problems) = rewind_server::inbox::list(&dir)?;
            for p in &problems {
                eprintln!("warning: {p}");
            }
            if g.json {
                let rows: Vec<_> = inboxes
                    .iter()
                    .map(|i| {
                        serde_json::json!({
                            "name": i.name, "repo": i.repo, "key": i.key_id,
                            "created": i.created, "max_size": i.max_size,
                        })
                    })
                    .collect();
                outln!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for i in &inboxes {
                    outln!(
                        "{}  repo {}  key {}  {}  made {}",
                        i.name,
                        i.repo,
                        short(&i.key_id),
                        i.max_size
                            .map(|m| format!("max {}", rewind_core::stats::human_bytes(m)))
                            .unwrap_or_else(|| "no size limit".into()),
                        i.created.round(jiff::Unit::Second).unwrap_or(i.created)
                    );
                }
            }
            Ok(exit::OK)
        }
        DavAction::Remove {
            data,
            name,
            keep_files,
        } => {
            let dir = need_data(data)?;
            let inbox = rewind_server::inbox::remove(&dir, name, *keep_files)
                .map_err(|e| usage(e.to_string()))?;
            eprintln!(
                "inbox {name} removed{}; its snapshots stay in repository {}. Its key ({}) stays there too, useless without the password removed with the inbox: `rewind key remove {}` takes it out.",
                if *keep_files { " (its files stay in the data directory)" } else { "" },
                inbox.repo,
                short(&inbox.key_id),
                short(&inbox.key_id),
            );
            Ok(exit::OK)
        }
    }
}

fn fingerprint(data: &Option<PathBuf>, tls_cert: &Option<PathBuf>) -> Result<u8> {
    let cert = match (tls_cert, data) {
        (Some(f), _) => f.clone(),
        (None, Some(d)) => {
            let cert = rewind_server::tls::self_signed_cert_path(d);
            if !cert.exists() {
                return Err(usage(format!(
                    "{} holds no self-signed certificate yet: `rewind serve --tls-self-signed --data {}` makes one at its first start",
                    d.display(),
                    d.display()
                )));
            }
            cert
        }
        (None, None) => {
            return Err(usage(
                "serve fingerprint needs --data DIR (the server's, with its self-signed certificate) or --tls-cert FILE",
            ))
        }
    };
    outln!("{}", rewind_server::tls::fingerprint(&cert)?);
    Ok(exit::OK)
}

fn serve(a: &RunArgs, g: &Global) -> Result<u8> {
    if a.tls_self_signed && a.data.is_none() {
        return Err(usage(
            "--tls-self-signed keeps the server's certificate in --data DIR (or REWIND_SERVE_DATA): give one",
        ));
    }
    if a.data.is_none() && a.storage.is_none() {
        return Err(usage(
            "rewind serve needs --data DIR (or REWIND_SERVE_DATA): where its tokens, settings and repositories live; or --storage LOCATION to keep everything in a store",
        ));
    }
    let storage_options = storage_options(g)?;
    if let Some(s) = &a.storage {
        // Fail now, not at the first request.
        rewind_backends::Location::parse(&format!("{}/probe", s.trim_end_matches('/')))?;
    }
    let config = Config {
        data: a.data.clone(),
        storage: a.storage.clone(),
        storage_options,
        listen: a.listen,
        tls: a.tls_cert.clone().zip(a.tls_key.clone()),
        tls_self_signed: a.tls_self_signed,
        insecure_listen: a.insecure_listen,
        defaults: Limits {
            min_delete_age_days: a.min_delete_age,
            history_days: a.history_days,
            max_size: a.max_size.as_deref().map(parse_size).transpose()?,
        },
        max_object_size: parse_size(&a.max_object_size)?,
        max_upload_memory: parse_size(&a.max_upload_memory)?,
        max_uploads_per_token: a.max_uploads_per_token,
        upload_memory_wait: std::time::Duration::from_secs(a.upload_memory_wait),
        inbox_schedule: rewind_server::inbox::serve::Schedule {
            settle: std::time::Duration::from_secs(a.inbox_settle),
            every: std::time::Duration::from_secs(a.inbox_every.max(1) * 3600),
        },
        compression: g.compression_level()?,
    };
    tune_malloc();
    rewind_server::run(config)?;
    Ok(exit::OK)
}

/// glibc's malloc, once a large buffer is freed, raises its mmap threshold
/// (up to 32 MiB) and serves later upload buffers from per-thread arenas,
/// which keep freed memory: measured with 16 uploads of 16 MiB on S3
/// storage and a 64 MiB budget, 399 MiB peak and 377 MiB resident when
/// idle, against 161 and 31 with a fixed 1 MiB threshold. The crates forbid
/// `unsafe` (no `mallopt`), so the server runs itself again with glibc's
/// own setting, `MALLOC_MMAP_THRESHOLD_`, unless the environment has one;
/// the process stays the same (exec), and if that fails it runs as it is.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        const VAR: &str = "MALLOC_MMAP_THRESHOLD_";
        if std::env::var_os(VAR).is_some() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
        let err = std::process::Command::new(&exe)
            .arg0(arg0)
            .args(args)
            .env(VAR, "1048576")
            .exec();
        // Only reached when exec failed.
        let _ = err;
    }
}

fn token(a: &TokenAction, g: &Global) -> Result<u8> {
    match a {
        TokenAction::Add {
            data,
            role,
            name,
            expires,
        } => {
            let Some(repo_name) = g.repo.as_ref().map(|r| r.display().to_string()) else {
                return Err(usage(
                    "token add needs --repo NAME: the repository the token opens",
                ));
            };
            let repo_name = &repo_name;
            let role = Role::parse(role)?;
            let expires = expires.as_deref().map(parse_expiry).transpose()?;
            let mut st = data.store(g)?.load()?;
            let token = st.add_token(name.as_deref(), repo_name, role, expires)?;
            data.store(g)?.save(&st)?;
            let made = st.tokens.last().expect("just added");
            eprintln!(
                "token {} made: role {role} on repository {repo_name}{}",
                made.name,
                made.expires
                    .map(|e| format!(", expires {e}"))
                    .unwrap_or_default()
            );
            outln!("{token}");
        }
        TokenAction::List { data } => {
            let st = data.store(g)?.load()?;
            let now = jiff::Timestamp::now();
            if g.json {
                outln!("{}", serde_json::to_string_pretty(&st.tokens)?);
                return Ok(exit::OK);
            }
            if st.tokens.is_empty() {
                outln!(
                    "no tokens; make one with `rewind serve token add --repo NAME --role backup`"
                );
            }
            for t in &st.tokens {
                let status = match (t.revoked, t.expires) {
                    (Some(r), _) => format!("revoked {r}"),
                    (None, Some(e)) if e <= now => format!("expired {e}"),
                    (None, Some(e)) => format!("expires {e}"),
                    (None, None) => "valid".into(),
                };
                outln!(
                    "{:<28} {:<20} {:<7} created {}  {status}",
                    t.name,
                    t.repo,
                    t.role.to_string(),
                    t.created.round(jiff::Unit::Second).unwrap_or(t.created)
                );
            }
        }
        TokenAction::Revoke { data, name } => {
            let mut st = data.store(g)?.load()?;
            st.revoke(name)?;
            data.store(g)?.save(&st)?;
            eprintln!("token {name} revoked");
        }
    }
    Ok(exit::OK)
}

fn repo(a: &RepoAction, g: &Global) -> Result<u8> {
    match a {
        RepoAction::Set {
            data,
            name,
            min_delete_age,
            history_days,
            max_size,
        } => {
            if !rewind_backends::rest::valid_repo_name(name) {
                return Err(usage(format!("{name:?} is not a repository name")));
            }
            let mut st = data.store(g)?.load()?;
            let s = st
                .repos
                .entry(name.clone())
                .or_insert_with(RepoSettings::default);
            if let Some(d) = min_delete_age {
                s.min_delete_age_days = Some(*d);
            }
            if let Some(d) = history_days {
                s.history_days = Some(*d);
            }
            if let Some(m) = max_size {
                s.max_size = Some(parse_size(m)?);
            }
            data.store(g)?.save(&st)?;
            eprintln!("repository {name}: settings stored; a running server applies them at its next request");
        }
        RepoAction::List { data } => {
            let st = data.store(g)?.load()?;
            if g.json {
                outln!("{}", serde_json::to_string_pretty(&st.repos)?);
                return Ok(exit::OK);
            }
            let show = |v: Option<String>| v.unwrap_or_else(|| "(server default)".into());
            for (name, s) in &st.repos {
                outln!(
                    "{name}: min-delete-age {}, history {}, max-size {}",
                    show(s.min_delete_age_days.map(|d| format!("{d} days"))),
                    show(s.history_days.map(|d| format!("{d} days"))),
                    show(s.max_size.map(|m| format!("{m} bytes")))
                );
            }
        }
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("1000B").unwrap(), 1000);
        assert!(parse_size("1000").is_err(), "a unit is required");
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert!(parse_size("x").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("5Q").is_err());
    }
}
