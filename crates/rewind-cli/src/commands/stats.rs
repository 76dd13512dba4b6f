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
        outln!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(crate::exit::OK);
    }
    outln!("Snapshots:          {}", s.snapshots);
    outln!(
        "Restore size:       {} (all snapshots)",
        bytes(s.restore_size)
    );
    outln!("Unique data:        {}", bytes(s.unique_data));
    outln!(
        "Stored:             {} in {} packs",
        bytes(s.pack_bytes),
        s.packs
    );
    outln!("Dedup ratio:        {:.2}x", s.dedup_ratio);
    outln!("Compression ratio:  {:.2}x", s.compression_ratio);
    outln!(
        "Blobs:              {} data, {} tree",
        s.data_blobs,
        s.tree_blobs
    );
    Ok(crate::exit::OK)
}
