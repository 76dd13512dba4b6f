//! # rewind-server
//!
//! `rewind serve`: hosts repositories over HTTP/1.1 and HTTP/2 (rustls for
//! TLS) so that clients can add backups but never destroy them. Every
//! request carries a token of one repository with a role (`read`, `backup`,
//! `admin`, [`state`]); the server checks names against content hashes,
//! never overwrites, refuses deletes of files younger than the repository's
//! minimum delete age and snapshot deletes that would cut its history below
//! the floor, and enforces quotas. The protocol is DESIGN §14.
//!
//! The storage of the repositories is any [`Backend`]: directories under
//! `DATA/repos/` by default, or any location (`s3:…`) given as `--storage`,
//! so that several servers can stand in front of one object store.

mod http;
pub mod inbox;
pub mod metrics;
pub mod quarantine;
mod served_ui;
pub mod state;
pub mod text;
pub mod tls;
pub mod ui;
mod view;
pub mod writes;

#[doc(hidden)]
pub use http::fuzz_request;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rewind_core::{Error, Result};

/// Limits of a repository: the server's defaults, overridden per repository
/// by `rewind serve repo set`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Files younger than this many days are never deleted (0: no rule).
    pub min_delete_age_days: u32,
    /// Snapshot deletes may not cut the history below this many days (0: no rule).
    pub history_days: u32,
    /// Quota in bytes.
    pub max_size: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            min_delete_age_days: 30,
            history_days: 365,
            max_size: None,
        }
    }
}

/// How to run the server.
#[derive(Clone, Debug)]
pub struct Config {
    /// The data directory: `server.json` (tokens, settings) and the
    /// repositories under `repos/`; unused with `storage`.
    pub data: Option<PathBuf>,
    /// Where the repositories live instead (`s3:…/bucket/prefix`, a path):
    /// repository NAME is at `STORAGE/NAME`, tokens and settings at
    /// `STORAGE/.server`.
    pub storage: Option<String>,
    /// Backend options of the storage.
    pub storage_options: rewind_backends::Options,
    /// The address to listen on.
    pub listen: SocketAddr,
    /// TLS certificate chain and private key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// TLS with the server's own self-signed certificate, made at the
    /// first start and kept in `data` ([`tls::self_signed`]); clients pin
    /// its fingerprint.
    pub tls_self_signed: bool,
    /// Allow plain HTTP on an address that is not loopback.
    pub insecure_listen: bool,
    /// Default limits of every repository.
    pub defaults: Limits,
    /// Largest file accepted, in bytes.
    pub max_object_size: u64,
    /// Bytes of uploads held in memory at once, server-wide, on storage
    /// that gathers each upload before storing it (S3, SFTP); local storage
    /// streams to its files and is not counted. An upload takes its
    /// Content-Length (or `max_object_size` without one) before its body is
    /// read; one that cannot within `upload_memory_wait` gets 503.
    pub max_upload_memory: u64,
    /// How long an upload waits for its share of the upload memory
    /// ([`DEFAULT_UPLOAD_MEMORY_WAIT`]).
    pub upload_memory_wait: std::time::Duration,
    /// Uploads one token may have running at once (any storage); more get
    /// 503.
    pub max_uploads_per_token: usize,
    /// When the phone inboxes are snapshotted ([`inbox`]).
    pub inbox_schedule: inbox::serve::Schedule,
    /// The zstd level of what the server writes itself (the inboxes'
    /// snapshots): `rewind_core::repository::COMPRESSION_LEVEL` unless the
    /// operator chose (`--compression`).
    pub compression: i32,
}

impl Config {
    /// Where local repositories live (`DATA/repos`).
    pub fn repos_dir(&self) -> PathBuf {
        self.data.clone().unwrap_or_default().join("repos")
    }
}

/// Largest file accepted by default: a pack is 16 MiB plus at most one
/// blob of up to 16 MiB, compressed or not.
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 64 << 20;

/// Upload memory of the server by default (S3 and SFTP storage): four
/// largest files at once.
pub const DEFAULT_MAX_UPLOAD_MEMORY: u64 = 256 << 20;

/// Uploads one token may run at once by default (a client sends 4 at once
/// unless told otherwise with `rest.connections`).
pub const DEFAULT_MAX_UPLOADS_PER_TOKEN: usize = 8;

/// How long an upload waits for its share of the upload memory before it
/// is answered 503 (the client retries).
pub const DEFAULT_UPLOAD_MEMORY_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs the server until SIGINT or SIGTERM. Prints
/// `rewind serve: listening on URL` on stdout once it accepts connections.
pub fn run(config: Config) -> Result<()> {
    let files = match (&config.tls, config.tls_self_signed, &config.data) {
        (Some(_), true, _) => {
            return Err(Error::InvalidInput(
                "give --tls-cert and --tls-key, or --tls-self-signed, not both".into(),
            ))
        }
        (Some(files), false, _) => Some(files.clone()),
        (None, true, Some(data)) => Some(tls::self_signed(data)?),
        (None, true, None) => {
            return Err(Error::InvalidInput(
                "--tls-self-signed keeps its certificate in --data DIR: give one".into(),
            ))
        }
        (None, false, _) => None,
    };
    let tls = match &files {
        Some((cert, key)) => {
            let acceptor = http::tls_acceptor(cert, key)?;
            let fp = tls::fingerprint(cert)?;
            if config.tls_self_signed {
                http::log(&format!(
                    "TLS with the self-signed certificate {}; its fingerprint is {fp}: clients pin it with -o rest.fingerprint={fp} (`rewind serve fingerprint` prints it again)",
                    cert.display()
                ));
            } else {
                http::log(&format!("TLS certificate {} ({fp})", cert.display()));
            }
            Some(acceptor)
        }
        None => {
            if !config.listen.ip().is_loopback() && !config.insecure_listen {
                return Err(Error::InvalidInput(format!(
                    "refusing to serve plain HTTP on {}: tokens and backups would cross the network unencrypted; give --tls-cert and --tls-key (or --tls-self-signed), listen on 127.0.0.1, or pass --insecure-listen behind a TLS proxy",
                    config.listen
                )));
            }
            None
        }
    };
    let store = state::StateStore::open(
        config.data.as_deref(),
        config.storage.as_deref(),
        &config.storage_options,
    )?;
    if let (None, Some(data)) = (&config.storage, &config.data) {
        std::fs::create_dir_all(data)
            .map_err(|e| Error::io(format!("create the data directory {}", data.display()), e))?;
    }
    if config.max_upload_memory == 0 || config.max_uploads_per_token == 0 {
        return Err(Error::InvalidInput(
            "--max-upload-memory and --max-uploads-per-token must be more than 0".into(),
        ));
    }
    // The state must parse before we accept anyone.
    let stamp = store.stamp();
    let state = store.load()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("rewind-serve")
        .enable_all()
        .build()
        .map_err(|e| Error::io("start the server runtime", e))?;
    let app = Arc::new(http::App::new(config, store));
    app.seed(stamp, state);
    let result = runtime.block_on(http::serve(app.clone(), tls));
    // Backends with runtimes of their own (S3) must not be dropped inside
    // this one: the last reference goes here, outside it.
    drop(runtime);
    drop(app);
    result
}
