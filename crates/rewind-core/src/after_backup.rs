//! What a backup does once its snapshot is saved, in this order: copy the
//! snapshot to the copy target, then, when the ransomware scan calls it
//! suspicious, send the alert. In the core, so that every front end (the
//! CLI, the agent, a server) runs the same steps and cannot skip one; the
//! core sends nothing over a network itself: the caller hands in how an
//! alert is delivered (`rewind_backends::notify::post_json`).

use crate::archiver::BackupOutcome;
use crate::copy::CopyReport;
use crate::error::Result;
use crate::format::scan::Verdict;
use crate::format::snapshot::SnapshotFile;
use crate::id::SnapshotId;
use crate::repository::Repository;

/// Delivers an alert (a JSON document) to a URL.
pub type Deliver<'a> = &'a dyn Fn(&str, &serde_json::Value) -> Result<()>;

/// The steps after a backup.
pub struct AfterBackup<'a> {
    /// The repository each new snapshot is copied to (the stored copy
    /// target, or one given for this backup), opened beforehand so that a
    /// wrong password is said before the backup, not after it.
    pub copy_to: Option<&'a Repository>,
    /// Where the alert goes (the one given for this backup, else the
    /// stored one).
    pub notify_url: Option<String>,
    /// How an alert is delivered.
    pub deliver: Deliver<'a>,
}

/// What the steps did.
#[derive(Debug, Default)]
pub struct AfterReport {
    /// The copy, when there is a target and a snapshot: what was copied,
    /// or why it failed (the snapshot is saved either way).
    pub copy: Option<Result<CopyReport>>,
    /// True when the snapshot's (effective) verdict is suspicious.
    pub suspicious: bool,
    /// The alert, when one was due and a URL is known: sent, or why not.
    pub alert: Option<Result<()>>,
}

/// Runs the steps for a saved snapshot (a dry run has none: nothing runs).
/// Each step's failure is reported, not returned, so one does not keep the
/// next from running.
pub fn run(repo: &Repository, outcome: &BackupOutcome, steps: &AfterBackup<'_>) -> AfterReport {
    let mut report = AfterReport::default();
    let Some(id) = outcome.snapshot_id else {
        return report;
    };
    if let Some(dst) = steps.copy_to {
        report.copy = Some(crate::copy::copy(
            repo,
            dst,
            &[(id, outcome.snapshot.clone())],
            false,
        ));
    }
    let Some(scan) = &outcome.snapshot.scan else {
        return report;
    };
    report.suspicious = scan.effective() == Verdict::Suspicious;
    if let (true, Some(url)) = (report.suspicious, &steps.notify_url) {
        let body = alert(repo, &id, &outcome.snapshot);
        report.alert = Some((steps.deliver)(url, &body));
    }
    report
}

/// The alert for a suspicious snapshot: what a person needs to act on it.
pub fn alert(repo: &Repository, id: &SnapshotId, snapshot: &SnapshotFile) -> serde_json::Value {
    let scan = snapshot.scan.as_ref();
    serde_json::json!({
        "message_type": "suspicious_snapshot",
        "repository": repo.backend().location(),
        "snapshot_id": id.to_hex(),
        "time": snapshot.time.to_string(),
        "hostname": snapshot.hostname,
        "paths": snapshot.paths,
        "score": scan.map(|s| s.score),
        "reasons": scan.map(|s| s.reasons.clone()),
        "top_paths": scan.map(|s| s.top_paths.clone()),
        "counts": scan.map(|s| s.counts.clone()),
    })
}
