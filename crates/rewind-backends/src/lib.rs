//! # rewind-backends
//!
//! Storage backends that need a network stack, kept out of `rewind-core` so
//! that the core builds without tokio or HTTP. [`open`] turns a repository
//! location into a [`Backend`]:
//!
//! | location | backend |
//! |---|---|
//! | `/path`, `local:/path` | [`LocalBackend`] |
//! | `s3:http[s]://endpoint/bucket[/prefix]` | [`s3::S3Backend`] (credentials from the AWS environment variables or profile files) |
//! | `sftp:[user@]host[:port]/path`, `sftp:[user@]host:relative/path` | [`sftp::SftpBackend`] (through the system's `ssh`) |
//! | `rest:http[s]://host:port/REPO` | [`rest::RestBackend`] (a repository hosted by `rewind serve`; token from `REWIND_SERVER_TOKEN` or `rest.token-file`) |
//!
//! Options (`--option key=value`): `s3.region` (default `us-east-1`, or
//! `AWS_REGION`), `s3.connections` (parallel uploads, default 5),
//! `s3.profile` (AWS profile name); `sftp.command` (default `ssh`),
//! `sftp.args` (extra ssh arguments), `sftp.connections` (requests in
//! flight, default 4); `rest.token-file` (the server token), `rest.ca`
//! (PEM certificates to trust), `rest.connections` (default 4).

pub mod notify;
mod packcache;
pub mod rest;
pub mod s3;
mod s3lock;
pub mod sftp;
#[cfg(feature = "testsupport")]
pub mod testsupport;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use rewind_core::backend::{Backend, LocalBackend, Verified};
use rewind_core::{Error, Result};

/// A parsed repository location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A directory.
    Local(PathBuf),
    /// An S3-compatible bucket.
    S3(s3::S3Location),
    /// A directory on an SFTP server.
    Sftp(sftp::SftpLocation),
    /// A repository hosted by `rewind serve`.
    Rest(rest::RestLocation),
}

impl Location {
    /// Parses `PATH`, `local:PATH`, `s3:http[s]://endpoint/bucket[/prefix]`
    /// or `sftp:[user@]host[:port]/path`.
    pub fn parse(s: &str) -> Result<Location> {
        if let Some(rest) = s.strip_prefix("s3:") {
            return s3::S3Location::parse(rest).map(Location::S3);
        }
        if let Some(rest) = s.strip_prefix("sftp:") {
            return sftp::SftpLocation::parse(rest).map(Location::Sftp);
        }
        if let Some(rest) = s.strip_prefix("rest:") {
            return rest::RestLocation::parse(rest).map(Location::Rest);
        }
        if let Some(rest) = s.strip_prefix("local:") {
            return Ok(Location::Local(PathBuf::from(rest)));
        }
        for scheme in ["rclone:", "azure:", "gs:", "b2:", "swift:"] {
            if s.starts_with(scheme) {
                return Err(Error::InvalidInput(format!(
                    "repository {s:?}: {scheme} locations are not supported yet; use a path, sftp:[user@]host[:port]/path, s3:http[s]://endpoint/bucket[/prefix] or rest:https://host:port/REPO"
                )));
            }
        }
        Ok(Location::Local(PathBuf::from(s)))
    }

    /// The local directory, for a local repository.
    pub fn local_path(&self) -> Option<&std::path::Path> {
        match self {
            Location::Local(p) => Some(p),
            Location::S3(_) | Location::Sftp(_) | Location::Rest(_) => None,
        }
    }
}

/// Backend options given as `key=value` pairs.
pub type Options = BTreeMap<String, String>;

/// Parses one `key=value` option.
pub fn parse_option(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(Error::InvalidInput(format!(
            "option {s:?}: write key=value, e.g. s3.region=eu-west-1"
        ))),
    }
}

/// Opens the backend of a location, wrapped in [`Verified`].
pub fn open(location: &Location, options: &Options) -> Result<Arc<dyn Backend>> {
    open_cached(location, options, None)
}

/// [`open`], with the index and snapshot files of a remote repository
/// cached under `cache_root/meta/<hash of the location>/`
/// (rewind_core::backend::cache); a local repository is not cached.
pub fn open_cached(
    location: &Location,
    options: &Options,
    cache_root: Option<&std::path::Path>,
) -> Result<Arc<dyn Backend>> {
    let cache = |where_: String| {
        cache_root.map(|root| {
            let key = rewind_core::id::Hash::of(where_.as_bytes()).to_hex();
            rewind_core::backend::cache::MetaCache::new(
                root.join("meta").join(&key[..32]),
                rewind_core::backend::cache::DEFAULT_MAX_BYTES,
            )
        })
    };
    for k in options.keys() {
        let known = matches!(
            k.as_str(),
            "s3.region"
                | "s3.connections"
                | "s3.profile"
                | "sftp.command"
                | "sftp.args"
                | "sftp.connections"
                | "rest.token-file"
                | "rest.ca"
                | "rest.fingerprint"
                | "rest.connections"
        );
        if !known {
            return Err(Error::InvalidInput(format!(
                "unknown option {k:?}; known: s3.region, s3.connections, s3.profile, sftp.command, sftp.args, sftp.connections, rest.token-file, rest.ca, rest.fingerprint, rest.connections"
            )));
        }
    }
    // Every backend is wrapped once, here: ranged reads of the wrong length
    // are refused in one place.
    fn verified<B: Backend + 'static>(
        b: B,
        cache: Option<rewind_core::backend::cache::MetaCache>,
    ) -> Arc<dyn Backend> {
        match cache {
            Some(c) => Arc::new(Verified::with_cache(b, c)),
            None => Arc::new(Verified::new(b)),
        }
    }
    Ok(match location {
        Location::Local(p) => Arc::new(Verified::new(LocalBackend::new(p))),
        Location::S3(l) => {
            let b = s3::S3Backend::open(l, options)?;
            let c = cache(b.location());
            verified(b, c)
        }
        Location::Sftp(l) => {
            let b = sftp::SftpBackend::open(l, options)?;
            let c = cache(b.location());
            verified(b, c)
        }
        Location::Rest(l) => {
            let b = rest::RestBackend::open(l, options)?;
            let c = cache(b.location());
            verified(b, c)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            Location::parse("/srv/repo").unwrap(),
            Location::Local("/srv/repo".into())
        );
        assert_eq!(
            Location::parse("local:rel/repo").unwrap(),
            Location::Local("rel/repo".into())
        );
        let Location::S3(l) = Location::parse("s3:http://127.0.0.1:8333/bucket/a/b").unwrap()
        else {
            panic!("not s3")
        };
        assert_eq!(l.endpoint, "http://127.0.0.1:8333");
        assert_eq!(l.bucket, "bucket");
        assert_eq!(l.prefix, "a/b");
        assert!(matches!(
            Location::parse("sftp:me@host/x").unwrap(),
            Location::Sftp(_)
        ));
        assert!(Location::parse("rclone:x").is_err());
        assert!(matches!(
            Location::parse("rest:https://h:8420/r").unwrap(),
            Location::Rest(_)
        ));
        assert!(Location::parse("s3:http://host").is_err());
        assert!(Location::parse("s3:ftp://host/b").is_err());
        assert!(Location::parse("s3:http://host/Bad_Bucket").is_err());
        assert!(parse_option("s3.region").is_err());
        assert_eq!(
            parse_option("s3.region=eu").unwrap(),
            ("s3.region".into(), "eu".into())
        );
    }
}
