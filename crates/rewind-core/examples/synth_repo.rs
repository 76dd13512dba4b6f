//! Grows a repository to a given number of chunks without storing their
//! data, to measure what rewind costs at scale (docs/SCALE.md,
//! `bench/scale.sh`): index files listing `CHUNKS` synthetic data blobs in
//! packs of 256 blobs, the packs sparse files of their listed size (they
//! read as zeros, so only `check --read-data` and restores of these blobs
//! fail), and one snapshot whose trees use every blob, so that prune keeps
//! them and walks them. A local repository only; the password comes from
//! REWIND_PASSWORD.
//!
//! `cargo run --release -p rewind-core --example synth_repo -- REPO CHUNKS`

use std::path::PathBuf;
use std::sync::Arc;

use rewind_core::backend::{Backend, LocalBackend};
use rewind_core::format::index::{IndexFile, IndexPack, VERSION};
use rewind_core::format::pack::{BlobKind, PackedBlob};
use rewind_core::format::snapshot::{BackupSummary, SnapshotFile};
use rewind_core::format::tree::{Node, NodeKind, Time, Tree};
use rewind_core::id::{BlobId, Hash, PackId};
use rewind_core::repository::Repository;

const PER_PACK: u64 = 256;
const BLOB: u32 = 64 * 1024;
const PACKS_PER_INDEX: u64 = 16;
const BLOBS_PER_FILE: usize = 1000;
const FILES_PER_DIR: usize = 100;

fn id(kind: &str, n: u64) -> Hash {
    Hash(*blake3::hash(format!("synth {kind} {n}").as_bytes()).as_bytes())
}

fn node(name: String, kind: NodeKind, size: u64) -> Node {
    let t = Time {
        secs: 1_700_000_000,
        nanos: 0,
    };
    Node {
        name: name.into_bytes(),
        kind,
        mode: 0o100644,
        uid: 0,
        gid: 0,
        user: None,
        group: None,
        size,
        mtime: t,
        ctime: t,
        inode: 0,
        device: 0,
        links: 1,
        xattrs: Vec::new(),
    }
}

fn main() -> rewind_core::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (repo_path, chunks): (PathBuf, u64) = match args.as_slice() {
        [_, r, n] => (r.into(), n.parse().expect("CHUNKS is a number")),
        _ => {
            eprintln!("usage: synth_repo REPO CHUNKS");
            std::process::exit(2);
        }
    };
    let password = std::env::var("REWIND_PASSWORD").expect("REWIND_PASSWORD");
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(repo_path.clone()));
    let repo = Repository::open(backend, password.as_bytes())?;
    let packs = chunks.div_ceil(PER_PACK);
    let mut blob = 0u64;
    let mut ids = Vec::with_capacity(chunks as usize);
    let mut pending = Vec::new();
    for p in 0..packs {
        let pack = PackId(id("pack", p));
        let n = PER_PACK.min(chunks - blob);
        let blobs: Vec<PackedBlob> = (0..n)
            .map(|i| {
                let b = BlobId(id("blob", blob + i));
                ids.push(b);
                PackedBlob {
                    kind: BlobKind::Data,
                    id: b,
                    offset: i as u32 * BLOB,
                    length: BLOB,
                    raw_length: BLOB - 40,
                }
            })
            .collect();
        blob += n;
        let size = n * u64::from(BLOB) + 64;
        let hex = pack.0.to_hex();
        let dir = repo_path.join("data").join(&hex[..2]);
        std::fs::create_dir_all(&dir).expect("pack dir");
        std::fs::File::create(dir.join(&hex))
            .and_then(|f| f.set_len(size))
            .expect("sparse pack");
        pending.push(IndexPack {
            id: pack,
            size,
            blobs,
        });
        if pending.len() as u64 == PACKS_PER_INDEX || p + 1 == packs {
            repo.write_file(&IndexFile {
                version: VERSION,
                supersedes: Vec::new(),
                packs: std::mem::take(&mut pending),
            })?;
        }
    }
    eprintln!("{chunks} chunks in {packs} packs indexed; writing the trees");
    // Files of 1000 chunks, directories of 100 files, one root.
    let (snap, _) = repo.write_blobs(|w| {
        let mut dirs = Vec::new();
        for (d, group) in ids.chunks(BLOBS_PER_FILE * FILES_PER_DIR).enumerate() {
            let nodes: Vec<Node> = group
                .chunks(BLOBS_PER_FILE)
                .enumerate()
                .map(|(f, content)| {
                    let size = content.len() as u64 * u64::from(BLOB - 40);
                    node(
                        format!("f{f:04}"),
                        NodeKind::File {
                            content: content.to_vec(),
                            holes: Vec::new(),
                        },
                        size,
                    )
                })
                .collect();
            let (sub, _) = w.add_blob(BlobKind::Tree, &Tree::new(nodes).encode())?;
            let mut n = node(format!("d{d:05}"), NodeKind::Dir { subtree: sub }, 0);
            n.mode = 0o40755;
            dirs.push(n);
        }
        let (root, _) = w.add_blob(BlobKind::Tree, &Tree::new(dirs).encode())?;
        let snap = SnapshotFile {
            version: rewind_core::format::snapshot::VERSION,
            time: jiff::Timestamp::now(),
            tree: root,
            paths: vec!["/synthetic".into()],
            hostname: "synth".into(),
            username: "synth".into(),
            tags: vec!["synthetic".into()],
            parent: None,
            program: "synth_repo".into(),
            summary: BackupSummary::default(),
            protection: None,
            original: None,
            copied_from: None,
            rewritten: None,
            scan: None,
        };
        // Saved once the writer's last index file is written (W2).
        Ok(snap)
    })?;
    let id = repo.save_snapshot(&snap)?;
    eprintln!("snapshot {} uses them", id.short());
    Ok(())
}
