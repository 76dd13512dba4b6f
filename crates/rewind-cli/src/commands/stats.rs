//! `rewind stats`

use anyhow::Result;

use super::Global;
use crate::output::bytes;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: &Args, global: &Global) -> Result<u8> {
    let repo = global.open()?;
    let s = rewind_core::stats::stats(&repo)?;
    if global.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(crate::exit::OK);
    }
    println!("Snapshots:          {}", s.snapshots);
    println!(
        "Restore size:       {} (all snapshots)",
        bytes(s.restore_size)
    );
    println!("Unique data:        {}", bytes(s.unique_data));
    println!(
        "Stored:             {} in {} packs",
        bytes(s.pack_bytes),
        s.packs
    );
    println!("Dedup ratio:        {:.2}x", s.dedup_ratio);
    println!("Compression ratio:  {:.2}x", s.compression_ratio);
    println!(
        "Blobs:              {} data, {} tree",
        s.data_blobs, s.tree_blobs
    );
    Ok(crate::exit::OK)
}
