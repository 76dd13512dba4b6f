//! A snapshot's ransomware verdict as stored in its file (`scan`, §9b of
//! docs/DESIGN.md): the on-disk part of `crate::scan`. No I/O here.

use serde::{Deserialize, Serialize};

/// Version of [`ScanResult`] (stored in snapshots).
pub const VERSION: u32 = 1;

/// A snapshot's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Nothing like an attack.
    Clean,
    /// Looks like mass encryption: see the reasons.
    Suspicious,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Clean => "clean",
            Verdict::Suspicious => "suspicious",
        })
    }
}

/// A person's decision that overrules the scan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overrule {
    /// What they decided.
    pub verdict: Verdict,
    /// Who (user@host).
    pub by: String,
    /// When.
    pub time: jiff::Timestamp,
}

/// Counts behind a verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanCounts {
    /// Files in the parent snapshot.
    pub files_before: u64,
    /// Files whose content changed in place.
    pub modified: u64,
    /// New paths (moves excluded).
    pub added: u64,
    /// Removed paths (moves excluded).
    pub removed: u64,
    /// Files moved or renamed with their content unchanged.
    pub moved: u64,
    /// Changed files examined (first chunk read).
    pub examined: u64,
    /// Of those: content that compressed well and now looks random.
    pub turned_to_noise: u64,
    /// Of those: files that lost their format's signature.
    pub lost_signature: u64,
    /// Of those: text files that are no longer text.
    pub text_turned_binary: u64,
    /// Removed files that came back under their name plus a new extension,
    /// with other content.
    pub renamed_new_extension: u64,
    /// Files whose content changed while their mtime stayed.
    pub mtime_kept: u64,
    /// Folders that got the same new note-like file.
    pub note_folders: u64,
    /// Files that compressed well, removed, with as many random-looking new
    /// files in the same folders (renamed to random names).
    #[serde(default)]
    pub replaced: u64,
    /// Suspect files, extrapolated to all changed files when sampled.
    pub suspects: u64,
}

/// The outcome of a scan, stored in the snapshot (`scan`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScanResult {
    /// Format version (1).
    pub version: u32,
    /// What the scan concluded.
    pub verdict: Verdict,
    /// Suspect files as a share of the files before (0..1).
    pub score: f64,
    /// Why, in words, strongest first.
    pub reasons: Vec<String>,
    /// Some affected paths.
    pub top_paths: Vec<String>,
    /// The counts.
    pub counts: ScanCounts,
    /// A person's decision, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overruled: Option<Overrule>,
}

impl ScanResult {
    /// The verdict that counts: a person's, else the scan's.
    pub fn effective(&self) -> Verdict {
        self.overruled.as_ref().map_or(self.verdict, |o| o.verdict)
    }
}
