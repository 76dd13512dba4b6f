//! Restore tests: proof that a snapshot can be brought back. The whole
//! tree's metadata is read (every tree blob decrypted and decoded), then a
//! random sample of its files is restored through the real restorer into a
//! scratch folder, read back and compared with the snapshot (each chunk
//! against its content hash), and where the live file still has the size
//! and modification time the snapshot recorded, with the live file too (a
//! mismatch there is damage on one side). The result is stored in the
//! repository (`proofs/`) so that every client can show it.

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::proof::{ProofFailure, ProofFile, VERSION};
use crate::format::snapshot::SnapshotFile;
use crate::format::tree::{Node, NodeKind};
use crate::id::SnapshotId;
use crate::progress::Progress;
use crate::repository::Repository;
use crate::restorer::{self, Overwrite, RestoreOptions, RestoreStart};

/// How many files to test.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sample {
    /// This many (all when fewer).
    Files(u64),
    /// This share of the files, in percent (at least one).
    Percent(f64),
}

impl std::str::FromStr for Sample {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Sample, String> {
        let bad = || format!("{s:?} is not a sample: give a number of files (100) or a share (5%)");
        match s.strip_suffix('%') {
            Some(p) => {
                let p: f64 = p.trim().parse().map_err(|_| bad())?;
                if !(p > 0.0 && p <= 100.0) {
                    return Err(format!("{s:?}: a share is more than 0% and at most 100%"));
                }
                Ok(Sample::Percent(p))
            }
            None => {
                let n: u64 = s.trim().parse().map_err(|_| bad())?;
                if n == 0 {
                    return Err(format!("{s:?}: test at least one file"));
                }
                Ok(Sample::Files(n))
            }
        }
    }
}

impl Sample {
    fn of(self, files: u64) -> u64 {
        match self {
            Sample::Files(n) => n.min(files),
            // No file (none could be listed): nothing to sample, and no
            // clamp(1, 0).
            Sample::Percent(_) if files == 0 => 0,
            Sample::Percent(p) => ((files as f64 * p / 100.0).ceil() as u64).clamp(1, files),
        }
    }
}

/// Runs a restore test of snapshot `id` with files restored under
/// `scratch` (created; emptied again as it goes). `seed` picks the sample.
pub fn restore_test(
    repo: &Repository,
    id: SnapshotId,
    snap: &SnapshotFile,
    sample: Sample,
    scratch: &Path,
    seed: u64,
) -> Result<ProofFile> {
    let mut files: Vec<(PathBuf, Node)> = Vec::new();
    let mut entries = 0u64;
    let mut failures = Vec::new();
    walk(
        repo,
        &snap.tree,
        Path::new("/"),
        &mut |p, n| {
            entries += 1;
            if matches!(n.kind, NodeKind::File { .. }) {
                files.push((p.to_path_buf(), n.clone()));
            }
        },
        &mut failures,
    );
    let total = files.len() as u64;
    let k = sample.of(total) as usize;
    let key = |p: &Path| {
        let mut h = blake3::Hasher::new();
        h.update(&seed.to_le_bytes());
        h.update(p.as_os_str().as_bytes());
        *h.finalize().as_bytes()
    };
    files.sort_by_cached_key(|(p, _)| key(p));
    files.truncate(k);
    std::fs::create_dir_all(scratch).map_err(|e| {
        Error::io(
            format!("create the scratch folder {}", scratch.display()),
            e,
        )
    })?;
    let mut proof = ProofFile {
        version: VERSION,
        snapshot: id,
        time: jiff::Timestamp::now(),
        hostname: crate::source::local_hostname(),
        entries,
        files: total,
        tested: 0,
        bytes: 0,
        live_compared: 0,
        failures,
    };
    for (i, (path, node)) in files.iter().enumerate() {
        let dir = scratch.join(i.to_string());
        let result = test_one(repo, path, node, &dir);
        let _ = std::fs::remove_dir_all(&dir);
        proof.tested += 1;
        match result {
            Ok(live) => {
                proof.bytes += node.size;
                proof.live_compared += u64::from(live);
            }
            Err(message) => proof.failures.push(ProofFailure {
                path: path.display().to_string(),
                message,
            }),
        }
    }
    proof.time = jiff::Timestamp::now();
    Ok(proof)
}

/// Every entry under `tree`; a folder whose listing cannot be read is a
/// failure (named), and the walk goes on with the rest.
fn walk(
    repo: &Repository,
    tree: &crate::id::BlobId,
    base: &Path,
    f: &mut dyn FnMut(&Path, &Node),
    failures: &mut Vec<ProofFailure>,
) {
    let t = match repo.read_tree(tree) {
        Ok(t) => t,
        Err(e) => {
            failures.push(ProofFailure {
                path: base.display().to_string(),
                message: format!("the folder's listing cannot be read: {e}"),
            });
            return;
        }
    };
    for n in &t.nodes {
        let p = base.join(std::ffi::OsStr::from_bytes(&n.name));
        f(&p, n);
        if let NodeKind::Dir { subtree } = &n.kind {
            walk(repo, subtree, &p, f, failures);
        }
    }
}

/// Restores one file into `dir` and compares it; Ok(whether the live file
/// was compared too).
fn test_one(
    repo: &Repository,
    path: &Path,
    node: &Node,
    dir: &Path,
) -> std::result::Result<bool, String> {
    let opts = RestoreOptions {
        target: dir.to_path_buf(),
        overwrite: Overwrite::Always,
        delete: false,
        verify: true,
        dry_run: false,
        includes: Vec::new(),
        excludes: Vec::new(),
        plan_memory: None,
    };
    let start = RestoreStart::Node {
        node: node.clone(),
        snap_path: path.to_path_buf(),
    };
    let stats = restorer::restore(repo, start, &opts, &Progress::default())
        .map_err(|e| format!("restore failed: {e}"))?;
    if let Some(e) = stats.errors.first() {
        return Err(format!("restore failed: {}", e.message));
    }
    if stats.verified != 1 {
        return Err("the restored file could not be read back".into());
    }
    let restored = dir.join(std::ffi::OsStr::from_bytes(&node.name));
    let md =
        std::fs::metadata(&restored).map_err(|e| format!("the restored file is missing: {e}"))?;
    if md.len() != node.size {
        return Err(format!(
            "restored {} bytes, the snapshot says {}",
            md.len(),
            node.size
        ));
    }
    // The live file, where it still looks as it did at the backup.
    let Ok(live) = std::fs::symlink_metadata(path) else {
        return Ok(false);
    };
    let unchanged = live.is_file()
        && live.len() == node.size
        && live.mtime() == node.mtime.secs
        && live.mtime_nsec() == i64::from(node.mtime.nanos);
    if !unchanged {
        return Ok(false);
    }
    match same_content(&restored, path) {
        Ok(true) => Ok(true),
        Ok(false) => Err(format!(
            "differs from the live file {} although its size and modification time are as backed up: one of them is damaged",
            path.display()
        )),
        // An unreadable live file says nothing about the backup.
        Err(_) => Ok(false),
    }
}

fn same_content(a: &Path, b: &Path) -> std::io::Result<bool> {
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            m => n += m,
        }
    }
    Ok(n)
}

/// Every stored restore test, newest first; damaged files are skipped (and
/// counted).
pub fn proofs(repo: &Repository) -> Result<(Vec<ProofFile>, usize)> {
    use crate::format::FileType;
    let mut out = Vec::new();
    let mut damaged = 0;
    for f in repo.backend().list(FileType::Proof)? {
        match repo.read_file::<ProofFile>(&f.name) {
            Ok(p) => out.push(p),
            Err(Error::Missing { .. }) => {}
            Err(_) => damaged += 1,
        }
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.time));
    Ok((out, damaged))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples() {
        assert_eq!("5%".parse::<Sample>().unwrap().of(1000), 50);
        assert_eq!("5%".parse::<Sample>().unwrap().of(3), 1);
        assert_eq!("100".parse::<Sample>().unwrap().of(30), 30);
        for bad in ["0", "0%", "101%", "x", "-3"] {
            assert!(bad.parse::<Sample>().is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod sample_tests {
    use super::Sample;

    #[test]
    fn a_share_of_no_files_is_none() {
        assert_eq!(Sample::Percent(100.0).of(0), 0);
        assert_eq!(Sample::Percent(1.0).of(3), 1);
        assert_eq!(Sample::Files(5).of(0), 0);
    }
}
