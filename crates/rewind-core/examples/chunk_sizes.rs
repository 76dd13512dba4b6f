//! Measures chunk-size choices on real trees: how many bytes a backup of
//! `AFTER` adds on top of `BEFORE` (dedup after an edit), and how many
//! chunks a GiB makes (index memory, requests per restore).
//!
//! ```sh
//! cargo run --release -p rewind-core --example chunk_sizes -- BEFORE AFTER
//! ```
//! docs/BENCHMARKS.md, "Chunk sizes", holds the figures.

use std::collections::HashSet;
use std::path::Path;

use rewind_core::chunker::chunk_stream;
use rewind_core::crypto::ChunkerParams;

/// Distinct chunk ids, bytes, chunk count, (size, id) of each chunk.
type ChunkStats = (HashSet<[u8; 32]>, u64, u64, Vec<(u64, [u8; 32])>);

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            walk(&e.path(), out);
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
}

fn chunks(params: &ChunkerParams, files: &[std::path::PathBuf]) -> ChunkStats {
    let mut set = HashSet::new();
    let mut list = Vec::new();
    let (mut bytes, mut count) = (0u64, 0u64);
    for f in files {
        let file = std::fs::File::open(f).unwrap();
        chunk_stream::<_, std::io::Error>(params, file, |c| {
            let h = *blake3::hash(c).as_bytes();
            bytes += c.len() as u64;
            count += 1;
            list.push((c.len() as u64, h));
            set.insert(h);
            Ok(())
        })
        .unwrap();
    }
    (set, bytes, count, list)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert!(args.len() == 3, "usage: chunk_sizes BEFORE AFTER");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    walk(Path::new(&args[1]), &mut a);
    walk(Path::new(&args[2]), &mut b);
    println!("| min / avg / max | chunks per GiB | unique bytes of BEFORE | bytes AFTER adds | chunking MiB/s |");
    println!("|---|---|---|---|---|");
    for (min, avg, max) in [
        (64u32 << 10, 256u32 << 10, 1u32 << 20),
        (128 << 10, 512 << 10, 2 << 20),
        (256 << 10, 1 << 20, 4 << 20),
        (512 << 10, 2 << 20, 8 << 20),
    ] {
        let p = ChunkerParams {
            seed: 0x5eed,
            min_size: min,
            avg_size: avg,
            max_size: max,
        };
        let t = std::time::Instant::now();
        let (set_a, bytes_a, count_a, list_a) = chunks(&p, &a);
        let secs = t.elapsed().as_secs_f64();
        let mut seen = HashSet::new();
        let unique_a: u64 = list_a
            .iter()
            .filter(|(_, h)| seen.insert(*h))
            .map(|(l, _)| l)
            .sum();
        let (_, _, _, list_b) = chunks(&p, &b);
        let mut seen_b = HashSet::new();
        let added: u64 = list_b
            .iter()
            .filter(|(_, h)| !set_a.contains(h) && seen_b.insert(*h))
            .map(|(l, _)| l)
            .sum();
        let per_gib = count_a as f64 / (bytes_a as f64 / (1u64 << 30) as f64);
        println!(
            "| {} / {} / {} KiB | {:.0} | {:.1} MiB | {:.1} MiB | {:.0} |",
            min >> 10,
            avg >> 10,
            max >> 10,
            per_gib,
            unique_a as f64 / 1048576.0,
            added as f64 / 1048576.0,
            bytes_a as f64 / 1048576.0 / secs
        );
    }
}
