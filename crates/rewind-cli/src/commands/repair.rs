//! `rewind repair index`

use anyhow::Result;

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(clap::Subcommand, Debug)]
pub enum What {
    /// Rebuild the index from the packs' own headers (after a lost or damaged index file).
    Index {
        /// Show what would be indexed, write nothing.
        #[arg(short = 'n', long)]
        dry_run: bool,
    },
    /// Write new snapshots (tagged `repaired`) that leave out files whose
    /// data is lost, so the rest stays restorable; the originals are kept.
    Snapshots {
        /// Show what would be left out, write nothing.
        #[arg(short = 'n', long)]
        dry_run: bool,
        #[command(flatten)]
        select: super::SelectArgs,
    },
}

pub fn run(args: &Args, global: &Global) -> Result<u8> {
    let repo = global.open()?;
    match &args.what {
        What::Index { dry_run } => {
            let s = rewind_core::repair::repair_index(&repo, *dry_run)?;
            for (name, e) in &s.unreadable {
                eprintln!("warning: pack {name} cannot be indexed: {e}");
            }
            if global.json {
                println!(
                    "{}",
                    serde_json::json!({"packs": s.packs, "blobs": s.blobs, "unreadable": s.unreadable.len(), "written": s.written, "removed": s.removed, "dry_run": dry_run})
                );
            } else if !global.quiet {
                let verb = if *dry_run { "would index" } else { "indexed" };
                println!(
                    "{verb} {} blobs in {} packs; {} index files written, {} old ones removed",
                    s.blobs, s.packs, s.written, s.removed
                );
                if !s.unreadable.is_empty() {
                    println!("{} packs could not be read: run `rewind check` to see which files are affected", s.unreadable.len());
                }
            }
            Ok(if s.unreadable.is_empty() {
                crate::exit::OK
            } else {
                crate::exit::FATAL
            })
        }
        What::Snapshots { dry_run, select } => {
            let snaps = select.matching(&repo)?;
            let repaired = rewind_core::repair::repair_snapshots(&repo, &snaps, *dry_run)?;
            for r in &repaired {
                match r.repaired {
                    Some(new) => println!(
                        "snapshot {} -> repaired copy {} (the original is kept):",
                        r.original.short(),
                        new.short()
                    ),
                    None => println!("snapshot {} would be repaired:", r.original.short()),
                }
                for (p, why) in &r.removed {
                    println!("  left out {}: {why}", p.display());
                }
            }
            if repaired.is_empty() && !global.quiet {
                println!("no snapshot refers to lost data");
            }
            Ok(crate::exit::OK)
        }
    }
}
