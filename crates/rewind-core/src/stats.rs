//! Repository statistics: sizes, deduplication and compression.

use serde::Serialize;

use crate::error::Result;
use crate::format::pack::BlobKind;
use crate::repository::Repository;

/// Parses a size such as `5GiB`, `500M` or `1024B` (binary units).
pub fn parse_size(s: &str) -> Option<u64> {
    let units = [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("T", 1 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
        ("B", 1),
    ];
    let s = s.trim();
    for (u, mult) in units {
        if let Some(num) = s.strip_suffix(u) {
            let v: f64 = num.trim().parse().ok()?;
            return (v >= 0.0 && v.is_finite()).then_some((v * mult as f64) as u64);
        }
    }
    None
}

/// Figures of a repository.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Snapshots.
    pub snapshots: u64,
    /// Sum of the logical size of every snapshot (what restoring them all would write).
    pub restore_size: u64,
    /// Plaintext bytes of the unique data blobs.
    pub unique_data: u64,
    /// Bytes stored for blobs (compressed and sealed).
    pub stored_blobs: u64,
    /// Bytes of all pack files.
    pub pack_bytes: u64,
    /// Data blobs.
    pub data_blobs: u64,
    /// Tree blobs.
    pub tree_blobs: u64,
    /// Pack files.
    pub packs: u64,
    /// restore_size / unique_data.
    pub dedup_ratio: f64,
    /// unique plaintext (data and trees) / stored_blobs.
    pub compression_ratio: f64,
}

/// A timestamp for people: this machine's time zone, to the second.
pub fn local_time(t: jiff::Timestamp) -> String {
    t.to_zoned(jiff::tz::TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// A node's modification time for people ([`local_time`]; the seconds
/// where it is out of range).
pub fn node_time(t: crate::format::tree::Time) -> String {
    jiff::Timestamp::new(t.secs, t.nanos as i32)
        .map(local_time)
        .unwrap_or_else(|_| t.secs.to_string())
}

/// `drwxr-xr-x` from a node.
pub fn mode_string(node: &crate::format::tree::Node) -> String {
    let mut s = String::with_capacity(10);
    s.push(node.type_char());
    for shift in [6u32, 3, 0] {
        let bits = (node.mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// A size for people: `1.50 GiB` (binary units), `512 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// Computes the statistics from the index and the snapshots.
pub fn stats(repo: &Repository) -> Result<Stats> {
    let index = repo.index()?;
    let snapshots = repo.snapshots()?;
    let mut s = Stats {
        snapshots: snapshots.len() as u64,
        ..Default::default()
    };
    s.restore_size = snapshots.iter().map(|(_, f)| f.summary.total_bytes).sum();
    let mut raw_all = 0u64;
    for (_, e) in index.blobs() {
        raw_all += u64::from(e.raw_length);
        s.stored_blobs += u64::from(e.length);
        match e.kind {
            BlobKind::Data => {
                s.data_blobs += 1;
                s.unique_data += u64::from(e.raw_length);
            }
            BlobKind::Tree => s.tree_blobs += 1,
        }
    }
    for (_, size) in index.packs() {
        s.packs += 1;
        s.pack_bytes += size;
    }
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    s.dedup_ratio = ratio(s.restore_size, s.unique_data);
    s.compression_ratio = ratio(raw_all, s.stored_blobs);
    Ok(s)
}
