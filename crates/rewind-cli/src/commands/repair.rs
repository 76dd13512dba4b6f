//! `rewind repair index | packs | snapshots`

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
    /// Save what a damaged pack still holds: every blob that authenticates
    /// is stored again, then the damaged packs leave the index and are
    /// deleted (run `repair snapshots` after it for what is really lost).
    Packs {
        /// Only these packs (ids as `check` names them); default: read every pack.
        packs: Vec<String>,
        /// Show what would be saved and lost, write nothing.
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
                outln!(
                    "{}",
                    serde_json::json!({"packs": s.packs, "blobs": s.blobs, "unreadable": s.unreadable.len(), "written": s.written, "removed": s.removed, "dry_run": dry_run})
                );
            } else if !global.quiet {
                let verb = if *dry_run { "would index" } else { "indexed" };
                outln!(
                    "{verb} {} blobs in {} packs; {} index files written, {} old ones removed",
                    s.blobs,
                    s.packs,
                    s.written,
                    s.removed
                );
                if !s.unreadable.is_empty() {
                    outln!("{} packs could not be read: run `rewind check` to see which files are affected", s.unreadable.len());
                }
            }
            Ok(if s.unreadable.is_empty() {
                crate::exit::OK
            } else {
                crate::exit::FATAL
            })
        }
        What::Packs { packs, dry_run } => {
            let ids = packs
                .iter()
                .map(|p| {
                    p.parse::<rewind_core::id::Hash>()
                        .map(rewind_core::id::PackId)
                        .map_err(|_| super::usage(format!("{p:?} is not a pack id (64 hex characters, as `rewind check` names it)")))
                })
                .collect::<Result<Vec<_>>>()?;
            let r = rewind_core::repair::repair_packs(&repo, &ids, *dry_run)?;
            let lost: usize = r.damaged.iter().map(|d| d.lost).sum();
            if global.json {
                outln!(
                    "{}",
                    serde_json::json!({
                        "packs_read": r.packs_read, "dry_run": dry_run,
                        "damaged": r.damaged.iter().map(|d| serde_json::json!({
                            "pack": d.pack.to_hex(), "damage": d.damage, "salvaged": d.salvaged,
                            "lost": d.lost, "kept_by_storage": d.kept})).collect::<Vec<_>>(),
                        "new_packs": r.new_packs, "index_written": r.index_written, "index_removed": r.index_removed,
                    })
                );
            } else {
                for d in &r.damaged {
                    outln!(
                        "pack {}: {}; {} blobs {}, {} lost",
                        d.pack,
                        d.damage,
                        d.salvaged,
                        if *dry_run { "can be saved" } else { "saved" },
                        d.lost
                    );
                    if d.kept {
                        eprintln!("note: the storage keeps pack {} for now; it is no longer indexed, and a later prune deletes it", d.pack);
                    }
                }
                if !global.quiet {
                    outln!(
                        "read {} packs: {} damaged, {lost} blobs lost{}",
                        r.packs_read,
                        r.damaged.len(),
                        if *dry_run {
                            " (dry run: nothing written)"
                        } else {
                            ""
                        }
                    );
                    if lost > 0 && !*dry_run {
                        outln!("run `rewind repair snapshots` so that the files which need the lost blobs are left out and the rest restores");
                    }
                }
            }
            Ok(crate::exit::OK)
        }
        What::Snapshots { dry_run, select } => {
            let snaps = select.matching(&repo)?;
            let repaired = rewind_core::repair::repair_snapshots(&repo, &snaps, *dry_run)?;
            for r in &repaired {
                match r.repaired {
                    Some(new) => outln!(
                        "snapshot {} -> repaired copy {} (the original is kept):",
                        r.original.short(),
                        new.short()
                    ),
                    None => outln!("snapshot {} would be repaired:", r.original.short()),
                }
                for (p, why) in &r.removed {
                    outln!("  left out {}: {why}", p.display());
                }
            }
            if repaired.is_empty() && !global.quiet {
                outln!("no snapshot refers to lost data");
            }
            Ok(crate::exit::OK)
        }
    }
}
