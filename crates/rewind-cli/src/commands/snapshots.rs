//! `rewind snapshots`

use anyhow::Result;

use super::{Global, SelectArgs};
use crate::output::{bytes, local_time};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub select: SelectArgs,
}

pub fn run(args: &Args, global: &Global) -> Result<u8> {
    let repo = global.open()?;
    let snaps = args.select.matching(&repo)?;
    // Restore tests, by the snapshot's identity (a protected or marked
    // copy is the same snapshot).
    let (proofs, _) = rewind_core::proof::proofs(&repo)?;
    let proven = |id: &rewind_core::id::SnapshotId,
                  s: &rewind_core::format::snapshot::SnapshotFile| {
        // The newest test of the snapshot decides: one that failed after
        // one that passed means damage since.
        proofs
            .iter()
            .find(|p| p.snapshot == *id || Some(p.snapshot) == s.original)
            .filter(|p| p.passed())
    };
    if global.json {
        let list: Vec<_> = snaps
            .iter()
            .map(|(id, s)| {
                serde_json::json!({
                    "id": id.to_hex(), "short_id": id.short(), "time": s.time.to_string(), "hostname": s.hostname,
                    "username": s.username, "tags": s.tags, "paths": s.paths, "tree": s.tree.to_hex(),
                    "parent": s.parent.map(|p| p.to_hex()), "summary": s.summary,
                    "protected": s.is_protected(jiff::Timestamp::now()), "protected_until": s.protection.as_ref().and_then(|p| p.until).map(|u| u.to_string()),
                    "suspicious": s.scan.as_ref().is_some_and(|r| r.effective() == rewind_core::scan::Verdict::Suspicious),
                    "scan": s.scan,
                    "proven": proven(id, s).map(|p| serde_json::json!({"time": p.time.to_string(), "tested": p.tested, "files": p.files, "hostname": p.hostname})),
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(crate::exit::OK);
    }
    outln!(
        "{:<9}  {:<19}  {:<16}  {:<16}  {:>10}  {:>10}  Paths",
        "ID",
        "Time",
        "Host",
        "Tags",
        "Size",
        "Added"
    );
    let now = jiff::Timestamp::now();
    for (id, s) in &snaps {
        outln!(
            "{:<9}  {:<19}  {:<16}  {:<16}  {:>10}  {:>10}  {}",
            format!(
                "{}{}{}{}",
                id.short(),
                if s.is_protected(now) { "*" } else { "" },
                if proven(id, s).is_some() { "+" } else { "" },
                if s.scan
                    .as_ref()
                    .is_some_and(|r| r.effective() == rewind_core::scan::Verdict::Suspicious)
                {
                    "!"
                } else {
                    ""
                }
            ),
            local_time(s.time),
            s.hostname,
            s.tags.join(","),
            bytes(s.summary.total_bytes),
            bytes(s.summary.bytes_added_stored),
            s.paths.join(" ")
        );
    }
    outln!(
        "{} snapshots (* = protected from retention, + = proven restorable by a restore test, ! = looks like a ransomware attack: rewind scan ID)",
        snaps.len()
    );
    if let Some((id, s, p)) = snaps
        .iter()
        .filter_map(|(id, s)| proven(id, s).map(|p| (id, s, p)))
        .max_by_key(|(_, s, _)| s.time)
    {
        outln!(
            "newest proven restorable point: {} of {} ({} of {} files restored and compared on {})",
            id.short(),
            local_time(s.time),
            p.tested,
            p.files,
            local_time(p.time)
        );
    }
    Ok(crate::exit::OK)
}
