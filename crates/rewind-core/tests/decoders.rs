//! Every decoder of repository bytes, fed garbage: random bytes, and valid
//! encodings with bits flipped, bytes inserted or removed, or cut short.
//! None may panic; garbage must come back as an error.
//!
//! Two layers are attacked separately:
//! - the **sealed** bytes as stored (anyone with write access to the
//!   storage can put them there): every change must fail authentication
//!   (or, for the unauthenticated parts, parsing) with an error;
//! - the **plaintext** behind the seal (what a key holder could write):
//!   mutated plaintexts are sealed with the right key, so the decoders
//!   after authentication (decompression, postcard, JSON, validation) are
//!   reached; they may accept or refuse, but whatever they accept must
//!   satisfy the format's invariants.
//!
//! The fuzz targets in /fuzz attack the same functions for longer.

use std::sync::{Arc, OnceLock};

use proptest::prelude::*;

use rewind_core::backend::{Backend, FileType, LocalBackend};
use rewind_core::crypto::{ChunkerParams, Crypto, Domain, KdfParams, KeyFile, MasterKey};
use rewind_core::format::config::Config;
use rewind_core::format::index::{IndexFile, IndexPack};
use rewind_core::format::pack::{BlobKind, PackBuilder, PackHeader};
use rewind_core::format::policy::{CopyTarget, PolicyFile};
use rewind_core::format::prune::{Mark, PruneState, RunningKind, RunningMarker};
use rewind_core::format::snapshot::{BackupSummary, Protection, SnapshotFile};
use rewind_core::format::tree::{self, Hole, Node, NodeKind, Time, Tree, Xattr};
use rewind_core::format::{self as fmt, compress, RepoFile};
use rewind_core::id::{BlobId, Hash, IndexId, PackId, SnapshotId};
use rewind_core::repository::{KeyOwner, Repository};
use rewind_core::retention::Policy;
use rewind_core::scan::{Overrule, ScanResult, Verdict};

/// Small Argon2id parameters: unwrapping a key file costs microseconds.
const FAST: KdfParams = KdfParams {
    m_cost_kib: 64,
    t_cost: 1,
    p_cost: 1,
};

/// A fixed master key: the decoders behind authentication are reachable.
fn crypto() -> &'static Crypto {
    static C: OnceLock<Crypto> = OnceLock::new();
    C.get_or_init(|| {
        Crypto::new(MasterKey {
            encryption: [7; 32],
            id_key: [9; 32],
            chunker: ChunkerParams {
                seed: 1,
                min_size: 64 * 1024,
                avg_size: 256 * 1024,
                max_size: 1024 * 1024,
            },
            config: Some(Hash::of(b"config").to_hex()),
        })
        .unwrap()
    })
}

fn t(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

fn node(name: &[u8], kind: NodeKind) -> Node {
    // A file is as long as its last hole reaches, at least (DESIGN §3.7).
    let size = match &kind {
        NodeKind::File { holes, .. } => holes
            .iter()
            .map(|h| h.offset.saturating_add(h.length))
            .max()
            .unwrap_or(0)
            .max(5),
        _ => 5,
    };
    Node {
        name: name.to_vec(),
        kind,
        mode: 0o100644,
        uid: 1000,
        gid: 1000,
        user: Some("alice".into()),
        group: None,
        size,
        mtime: Time {
            secs: -5,
            nanos: 999_999_999,
        },
        ctime: Time::default(),
        inode: 42,
        device: 7,
        links: 2,
        xattrs: vec![Xattr {
            name: b"user.x".to_vec(),
            value: vec![0, 255],
        }],
    }
}

/// A tree with every node kind and every optional part.
fn sample_tree() -> Tree {
    let id = crypto().blob_id(b"x");
    Tree::new(vec![
        node(
            b"file",
            NodeKind::File {
                content: vec![id, id],
                holes: vec![Hole {
                    offset: 5,
                    length: 4096,
                }],
            },
        ),
        node(b"dir", NodeKind::Dir { subtree: id }),
        node(
            b"link",
            NodeKind::Symlink {
                target: b"../t\xff".to_vec(),
            },
        ),
        node(b"fifo", NodeKind::Fifo),
        node(b"sock", NodeKind::Socket),
        node(b"chr", NodeKind::CharDevice { rdev: 259 }),
        node(b"blk", NodeKind::BlockDevice { rdev: u64::MAX }),
        node(b"caf\xe9", NodeKind::Fifo),
    ])
}

fn sample_snapshot() -> SnapshotFile {
    SnapshotFile {
        version: 1,
        time: t("2026-03-01T12:00:00.5Z"),
        tree: crypto().blob_id(b"root"),
        paths: vec!["/home/alice".into()],
        hostname: "h".into(),
        username: "alice".into(),
        tags: vec!["daily".into()],
        parent: Some(SnapshotId(Hash([1; 32]))),
        program: "rewind test".into(),
        summary: BackupSummary {
            files_new: 3,
            duration_secs: 1.5,
            ..Default::default()
        },
        protection: Some(Protection {
            until: Some(t("2027-01-01T00:00:00Z")),
        }),
        original: Some(SnapshotId(Hash([2; 32]))),
        copied_from: Some(SnapshotId(Hash([3; 32]))),
        rewritten: Some(t("2026-11-27T08:00:00Z")),
        scan: Some(ScanResult {
            version: 1,
            verdict: Verdict::Suspicious,
            score: 0.25,
            reasons: vec!["6 files turned to noise".into()],
            top_paths: vec!["/home/alice/a.txt".into()],
            counts: Default::default(),
            rules: vec![],
            suspect_keys: vec![7, 9],
            accumulated_from: vec![],
            overruled: Some(Overrule {
                verdict: Verdict::Clean,
                by: "root@h".into(),
                time: t("2026-03-02T00:00:00Z"),
            }),
        }),
    }
}

fn sample_index() -> IndexFile {
    let id = crypto().blob_id(b"x");
    IndexFile {
        version: 1,
        supersedes: vec![IndexId(Hash([4; 32]))],
        packs: vec![IndexPack {
            id: PackId(Hash([5; 32])),
            size: 1234,
            blobs: vec![rewind_core::format::pack::PackedBlob {
                kind: BlobKind::Tree,
                id,
                offset: 9,
                length: 100,
                raw_length: 60,
            }],
        }],
    }
}

fn sample_policy() -> PolicyFile {
    PolicyFile {
        version: 1,
        time: t("2026-01-01T00:00:00Z"),
        policy: Policy::recommended(),
        copy_to: Some(CopyTarget {
            location: "s3:http://host/bucket".into(),
            options: [("s3.region".to_string(), "eu".to_string())].into(),
            password_file: Some("/etc/pw".into()),
        }),
        notify_url: Some("https://alerts.example/hook".into()),
    }
}

fn sample_prune_state() -> PruneState {
    PruneState {
        version: 1,
        time: t("2026-11-26T16:00:00Z"),
        marks: vec![Mark {
            pack: PackId(Hash([6; 32])),
            since: t("2026-11-25T03:00:00Z"),
        }],
    }
}

fn sample_marker() -> RunningMarker {
    RunningMarker {
        version: 1,
        kind: RunningKind::Prune,
        hostname: "h".into(),
        pid: 4242,
        start: t("2026-11-26T16:00:00Z"),
        refreshed: t("2026-11-26T16:05:00Z"),
        pid_namespace: Some(4026531836),
    }
}

/// A pack of three blobs (one a tree) and the header it must parse to.
fn sample_pack() -> &'static (PackId, Vec<u8>, PackHeader) {
    static P: OnceLock<(PackId, Vec<u8>, PackHeader)> = OnceLock::new();
    P.get_or_init(|| {
        let c = crypto();
        let mut b = PackBuilder::new(4096);
        let tree = sample_tree().encode();
        for (kind, data) in [
            (BlobKind::Data, b"hello".to_vec()),
            (BlobKind::Data, vec![0u8; 3000]),
            (BlobKind::Tree, tree),
        ] {
            let id = c.blob_id(&data);
            b.add(
                kind,
                id,
                &fmt::seal_blob(c, &id, &data, 3),
                data.len() as u32,
            );
        }
        let (id, bytes, blobs) = b.finish(c);
        (id, bytes, PackHeader { blobs })
    })
}

fn sample_key_file() -> &'static Vec<u8> {
    static K: OnceLock<Vec<u8>> = OnceLock::new();
    K.get_or_init(|| {
        let kf = KeyFile::wrap(crypto(), b"pw", FAST, "h", "u").unwrap();
        serde_json::to_vec_pretty(&kf).unwrap()
    })
}

/// The kinds of stored objects, each with its valid plaintext and stored
/// (sealed) bytes.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Index,
    Snapshot,
    Policy,
    PruneState,
    Running,
}

const KINDS: [Kind; 5] = [
    Kind::Index,
    Kind::Snapshot,
    Kind::Policy,
    Kind::PruneState,
    Kind::Running,
];

impl Kind {
    fn domain(self) -> Domain<'static> {
        match self {
            Kind::Index => Domain::Index,
            Kind::Snapshot => Domain::Snapshot,
            Kind::Policy => Domain::Policy,
            Kind::PruneState => Domain::PruneState,
            Kind::Running => Domain::Running,
        }
    }

    /// The uncompressed plaintext of a valid object.
    fn plaintext(self) -> Vec<u8> {
        match self {
            Kind::Index => postcard::to_stdvec(&sample_index()).unwrap(),
            Kind::Snapshot => serde_json::to_vec(&sample_snapshot()).unwrap(),
            Kind::Policy => serde_json::to_vec(&sample_policy()).unwrap(),
            Kind::PruneState => serde_json::to_vec(&sample_prune_state()).unwrap(),
            Kind::Running => serde_json::to_vec(&sample_marker()).unwrap(),
        }
    }

    /// Opens `sealed` with the reader of this kind; the file is named by
    /// its hash, as readers of every kind check or may check.
    fn open(self, sealed: &[u8]) -> Result<(), rewind_core::Error> {
        let c = crypto();
        let name = Hash::of(sealed).to_hex();
        match self {
            Kind::Index => IndexFile::open(c, &name, sealed).map(|f| {
                assert_eq!(f.version, 1);
            }),
            Kind::Snapshot => SnapshotFile::open(c, &name, sealed).map(|s| {
                assert_eq!(s.version, 1);
            }),
            Kind::Policy => PolicyFile::open(c, &name, sealed).map(|p| {
                assert_eq!(p.version, 1);
            }),
            Kind::PruneState => PruneState::open(c, &name, sealed).map(|s| {
                assert_eq!(s.version, 1);
            }),
            Kind::Running => RunningMarker::open(c, &name, sealed).map(|m| {
                assert_eq!(m.version, 1);
            }),
        }
    }
}

/// A change to a byte string.
#[derive(Clone, Debug)]
enum Mutation {
    FlipBit(prop::sample::Index, u8),
    SetByte(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
    Remove(prop::sample::Index, usize),
    Truncate(prop::sample::Index),
    Append(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<prop::sample::Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::SetByte(i, v)),
        (
            any::<prop::sample::Index>(),
            proptest::collection::vec(any::<u8>(), 1..8)
        )
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<prop::sample::Index>(), 1usize..16).prop_map(|(i, n)| Mutation::Remove(i, n)),
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        proptest::collection::vec(any::<u8>(), 1..8).prop_map(Mutation::Append),
    ]
}

fn mutate(data: &[u8], m: &Mutation) -> Vec<u8> {
    let mut d = data.to_vec();
    if d.is_empty() {
        return match m {
            Mutation::Insert(_, v) | Mutation::Append(v) => v.clone(),
            _ => d,
        };
    }
    match m {
        Mutation::FlipBit(i, b) => {
            let i = i.index(d.len());
            d[i] ^= 1 << b;
        }
        Mutation::SetByte(i, v) => {
            let i = i.index(d.len());
            d[i] = *v;
        }
        Mutation::Insert(i, v) => {
            let i = i.index(d.len() + 1);
            d.splice(i..i, v.iter().copied());
        }
        Mutation::Remove(i, n) => {
            let i = i.index(d.len());
            let end = (i + n).min(d.len());
            d.drain(i..end);
        }
        Mutation::Truncate(i) => d.truncate(i.index(d.len())),
        Mutation::Append(v) => d.extend_from_slice(v),
    }
    d
}

/// Checks a decoded tree against the rules readers rely on.
fn assert_valid_tree(t: &Tree) {
    assert_eq!(t.version, tree::VERSION);
    for w in t.nodes.windows(2) {
        assert!(w[0].name < w[1].name, "names sorted and unique");
    }
    for n in &t.nodes {
        assert!(tree::validate_name(&n.name).is_ok(), "{:?}", n.name);
        if let NodeKind::File { holes, .. } = &n.kind {
            walk_holes(holes);
        }
    }
}

/// Lays holes out as restore and dump do (skip the holes that start where
/// the next chunk goes), from the start and from every hole's offset.
fn walk_holes(holes: &[Hole]) {
    for start in std::iter::once(0).chain(holes.iter().map(|h| h.offset)) {
        let mut pos = start;
        let mut it = holes.iter().peekable();
        while it.peek().is_some_and(|h| h.offset < pos) {
            it.next();
        }
        tree::skip_holes(&mut pos, &mut it);
    }
}

/// Unwraps a key file unless its KDF parameters would make the test slow
/// (values beyond the hard bounds are refused before any work, so they
/// are tried too).
fn try_unwrap(kf: &KeyFile, password: &[u8]) -> Option<Result<Option<Crypto>, rewind_core::Error>> {
    let p = kf.params;
    let cheap = p.m_cost_kib <= 1024 && p.t_cost <= 2 && p.p_cost <= 4;
    let refused_early = p.m_cost_kib > 4 * 1024 * 1024 || p.t_cost > 64 || p.p_cost > 64;
    (cheap || refused_early).then(|| kf.unwrap_key(password, "k"))
}

/// A fresh empty repository, on tmpfs where there is one (its fsyncs cost
/// nothing there; on a busy disk they make up most of this test's time).
fn scratch_repo() -> (tempfile::TempDir, Arc<LocalBackend>, Repository) {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let backend = Arc::new(LocalBackend::new(dir.path().join("repo")));
    let repo = Repository::init(backend.clone(), b"pw", FAST, &KeyOwner::default()).unwrap();
    (dir, backend, repo)
}

/// A repository to read blobs from (open_blob needs one).
fn repo() -> &'static Repository {
    static R: OnceLock<(tempfile::TempDir, Arc<LocalBackend>, Repository)> = OnceLock::new();
    &R.get_or_init(scratch_repo).2
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    /// Random bytes to every decoder: sealed objects fail authentication,
    /// the rest fail to parse or yield something valid.
    #[test]
    fn random_bytes_never_panic(data in bytes(600)) {
        let c = crypto();
        let name = Hash::of(&data).to_hex();
        for k in KINDS {
            prop_assert!(k.open(&data).is_err(), "{k:?}");
        }
        prop_assert!(fmt::open_object(c, Domain::Snapshot, "x", &name, &data).is_err());
        for d in [Domain::Index, Domain::PackHeader, Domain::KeyFile, Domain::Blob(&BlobId::default())] {
            prop_assert!(c.open(d, &data).is_none());
        }
        let pack = PackId(Hash::of(&data));
        prop_assert!(PackHeader::parse(c, &pack, &data).is_err());
        prop_assert!(PackHeader::parse_header(c, &pack, data.len() as u64 + 100, &data).is_err());
        if data.len() >= 4 {
            let _ = PackHeader::header_len(data[..4].try_into().unwrap());
        }
        prop_assert!(repo().open_blob(&BlobId::default(), data.len() as u32, &data, "p").is_err());
        // Not sealed: may parse, must then be valid.
        if let Ok(t) = Tree::decode(&BlobId::default(), &data) {
            assert_valid_tree(&t);
        }
        let _ = fmt::decompress("blob", &"x", &data, 1 << 20);
        if let Ok(cfg) = Config::parse(&data, "loc") {
            prop_assert!(cfg.format == "rewind" && cfg.version == 1);
        }
        if let Ok(kf) = serde_json::from_slice::<KeyFile>(&data) {
            let _ = try_unwrap(&kf, b"pw");
        }
        if let Ok(mk) = serde_json::from_slice::<MasterKey>(&data) {
            let _ = Crypto::new(mk);
        }
        let _ = postcard::from_bytes::<IndexFile>(&data);
        let _ = postcard::from_bytes::<PackHeader>(&data);
        let _ = serde_json::from_slice::<SnapshotFile>(&data);
    }

    /// Random text to the parsers of names, ids and options.
    #[test]
    fn random_text_never_panics(s in ".{0,40}", digits in "[0-9ymwdhKMGTiB%/. -]{0,24}") {
        for s in [s.as_str(), digits.as_str()] {
            let _ = s.parse::<Hash>();
            let _ = s.parse::<SnapshotId>();
            let _ = s.parse::<rewind_core::check::Subset>();
            let _ = s.parse::<rewind_core::prune::MaxUnused>();
            let _ = rewind_core::check::parse_size(s);
            let _ = rewind_core::retention::parse_duration(s);
            let _ = rewind_core::select::parse_time(s, &jiff::tz::TimeZone::UTC);
            let _ = tree::validate_name(s.as_bytes());
            let _ = Config::parse(s.as_bytes(), "loc");
        }
    }

    /// Stored objects, changed anywhere: every change is refused.
    #[test]
    fn mutated_sealed_objects_are_refused(k in 0..KINDS.len(), m in mutation()) {
        let k = KINDS[k];
        let sealed = fmt::seal_object(crypto(), k.domain(), &k.plaintext());
        prop_assert!(k.open(&sealed).is_ok());
        let bad = mutate(&sealed, &m);
        prop_assume!(bad != sealed);
        prop_assert!(k.open(&bad).is_err(), "{k:?} {m:?}");
    }

    /// Plaintexts changed, then sealed with the right key: the decoders
    /// behind authentication accept only valid objects, and never panic.
    #[test]
    fn mutated_plaintexts_never_panic(k in 0..KINDS.len(), m in mutation(), m2 in mutation(), zstd in any::<bool>()) {
        let k = KINDS[k];
        let c = crypto();
        let plain = mutate(&mutate(&k.plaintext(), &m), &m2);
        // Compressed or not, as the writer would; or the payload itself
        // mutated (flag byte and zstd frame).
        let payload = if zstd { mutate(&compress(&plain, 3), &m) } else { compress(&plain, 3) };
        let _ = k.open(&c.seal(k.domain(), &payload));
    }

    /// Tree blobs (the plaintext a key holder controls).
    #[test]
    fn mutated_trees_never_panic(m in mutation(), m2 in mutation(), m3 in mutation()) {
        let enc = sample_tree().encode();
        prop_assert_eq!(Tree::decode(&BlobId::default(), &enc).unwrap(), sample_tree());
        let bad = mutate(&mutate(&mutate(&enc, &m), &m2), &m3);
        if let Ok(t) = Tree::decode(&BlobId::default(), &bad) {
            assert_valid_tree(&t);
        }
    }

    /// Packs: the header is authenticated, the blobs are not (check reads
    /// them separately), so a parse that succeeds gives the header back
    /// exactly.
    #[test]
    fn mutated_packs_never_panic(m in mutation(), m2 in mutation()) {
        let (id, bytes, header) = sample_pack();
        let c = crypto();
        prop_assert_eq!(&PackHeader::parse(c, id, bytes).unwrap(), header);
        let bad = mutate(&mutate(bytes, &m), &m2);
        if let Ok(h) = PackHeader::parse(c, id, &bad) {
            prop_assert_eq!(&h, header);
        }
        // The header read alone, as repair and prune do (last 4 bytes, then
        // that many before them).
        if bad.len() >= 4 {
            let hlen = PackHeader::header_len(bad[bad.len() - 4..].try_into().unwrap()) as usize;
            if hlen + 4 <= bad.len() {
                let sealed = &bad[bad.len() - 4 - hlen..bad.len() - 4];
                if let Ok(h) = PackHeader::parse_header(c, id, bad.len() as u64, sealed) {
                    prop_assert_eq!(&h, header);
                }
            }
        }
        // A header plaintext changed and sealed with the right key.
        let plain = postcard::to_stdvec(header).unwrap();
        let sealed = c.seal(Domain::PackHeader, &mutate(&plain, &m));
        let size = 9 + header.blobs.iter().map(|b| u64::from(b.length)).sum::<u64>() + 4 + sealed.len() as u64;
        let _ = PackHeader::parse_header(c, id, size, &sealed);
    }

    /// Blobs: sealed bytes changed are refused; a wrong length or id too.
    #[test]
    fn mutated_blobs_are_refused(m in mutation(), raw in 0u32..8192, data in bytes(3000)) {
        let r = repo();
        let id = r.crypto().blob_id(&data);
        let sealed = fmt::seal_blob(r.crypto(), &id, &data, 3);
        prop_assert_eq!(r.open_blob(&id, data.len() as u32, &sealed, "p").unwrap(), data.clone());
        let bad = mutate(&sealed, &m);
        if bad != sealed {
            prop_assert!(r.open_blob(&id, data.len() as u32, &bad, "p").is_err());
        }
        if raw as usize != data.len() {
            prop_assert!(r.open_blob(&id, raw, &sealed, "p").is_err());
        }
        // A payload changed, then sealed with the right key.
        let payload = mutate(&compress(&data, 3), &m);
        let resealed = r.crypto().seal(Domain::Blob(&id), &payload);
        if let Ok(d) = r.open_blob(&id, raw, &resealed, "p") {
            prop_assert_eq!(d, data);
        }
    }

    /// Config and key files (plain JSON on the storage).
    #[test]
    fn mutated_config_and_keys_never_panic(m in mutation(), m2 in mutation()) {
        let cfg = serde_json::to_vec_pretty(&Config::new()).unwrap();
        prop_assert!(Config::parse(&cfg, "loc").is_ok());
        if let Ok(c) = Config::parse(&mutate(&mutate(&cfg, &m), &m2), "loc") {
            prop_assert!(c.format == "rewind" && c.version == 1);
        }
        let key = sample_key_file();
        let bad = mutate(&mutate(key, &m), &m2);
        if let Ok(kf) = serde_json::from_slice::<KeyFile>(&bad) {
            // The master key is authenticated: whatever opens is it.
            if let Some(Ok(Some(got))) = try_unwrap(&kf, b"pw") {
                prop_assert_eq!(got.master_key().encryption, [7; 32]);
            }
        }
        // The master key JSON behind the key file's seal.
        let mk = serde_json::to_vec(crypto().master_key()).unwrap();
        if let Ok(k) = serde_json::from_slice::<MasterKey>(&mutate(&mutate(&mk, &m), &m2)) {
            if let Ok(c) = Crypto::new(k) {
                prop_assert!(c.chunker().validate().is_ok());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Garbage in data/: repair and prune read pack headers through the
    /// backend (last 4 bytes, then the header); they report, never panic.
    #[test]
    fn garbage_packs_are_reported(data in bytes(300), m in mutation()) {
        static R: OnceLock<(tempfile::TempDir, Arc<LocalBackend>, Repository)> = OnceLock::new();
        let (_, backend, repo) = R.get_or_init(scratch_repo);
        let good = sample_pack();
        let mut names = Vec::new();
        for bytes in [data, mutate(&good.1, &m)] {
            let name = Hash::of(&bytes).to_hex();
            backend.write(FileType::Pack, &name, &bytes).unwrap();
            names.push(name);
        }
        let stats = rewind_core::repair::repair_index(repo, true).unwrap();
        // Sealed with another key: no header opens.
        prop_assert_eq!(stats.packs, 0);
        prop_assert_eq!(stats.unreadable.len(), backend.list(FileType::Pack).unwrap().len());
        for name in names {
            backend.delete(FileType::Pack, &name).unwrap();
        }
    }
}

/// Found by the `tree` fuzz target: a tree whose holes, laid out one after
/// the other, pass 2^64 bytes made `skip_holes` overflow (a panic in debug
/// builds, a wrapped offset in release). No file has such a hole: the
/// decoder refuses it.
#[test]
fn holes_past_two_to_the_64_are_refused() {
    let file = |holes: Vec<Hole>| {
        Tree::new(vec![node(
            b"f",
            NodeKind::File {
                content: vec![],
                holes,
            },
        )])
        .encode()
    };
    let hole = |offset, length| Hole { offset, length };
    let id = BlobId::default();
    for bad in [
        vec![hole(0, 1), hole(1, u64::MAX)],
        vec![hole(u64::MAX, 1)],
        vec![hole(5, u64::MAX - 4)],
    ] {
        assert!(Tree::decode(&id, &file(bad.clone())).is_err(), "{bad:?}");
    }
    // Up to the largest size is fine.
    let t = Tree::decode(&id, &file(vec![hole(0, 1), hole(1, u64::MAX - 1)])).unwrap();
    assert_valid_tree(&t);
    // The fuzzer's input (fuzz/seeds/tree/regression-hole-overflow).
    let crash = hex::decode(concat!(
        "01010864756d702e73716c000120e6dbb065732e6d64000120e18d904485a4596e6930d7",
        "a949a6d49e7e761ee96c5b975eba5e2db0c11b14443478740001209e2d00cd0900000000",
        "000000723611726577696e642d66697865b9a824ed830100000104726f6f740104726f6f",
        "7400e89332b0c30d86d5932f02e8e5b00ddd86dec30282ffffffffffffffff01000000c0",
        "e3048081f305716c000120e6dbb0c11b14447478740001209e2d00cd7236e58a450ddcc9",
        "9f9dc0acc245e181acf8d480c52de3fc01000940002e72000000faffffa888fffedf8100",
        "41030112f10b6c0036e58a450ddcc99f9dc0acc245e181acf8d480c5e3fc010009400000",
        "00000000002e725777000120810000808302847ef305d39872664ae728dcc99f9dc0acc2",
        "45e181acf8d480c5e3fc0100094000000000000000bf2e7257770001208100000081f305",
        "716c000120e6dbb0c11b14447478740001209e2d00cd72369f9dc0acc245e18100000000",
        "00000000000000000000000000000000080000000000d400c0ff87000100",
    ))
    .unwrap();
    assert!(Tree::decode(&id, &crash).is_err());
}

/// The fixed key really is what the samples are sealed with, and each
/// sample is accepted unchanged (else the mutation tests prove nothing).
#[test]
fn samples_are_valid() {
    let c = crypto();
    for k in KINDS {
        k.open(&fmt::seal_object(c, k.domain(), &k.plaintext()))
            .unwrap();
    }
    let kf: KeyFile = serde_json::from_slice(sample_key_file()).unwrap();
    let got = kf.unwrap_key(b"pw", "k").unwrap().unwrap();
    assert_eq!(got.master_key().id_key, [9; 32]);
    assert_valid_tree(&Tree::decode(&BlobId::default(), &sample_tree().encode()).unwrap());
}
