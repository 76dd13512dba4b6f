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
    /// Of those: files whose format (by its magic number, any type the
    /// `infer` crate knows: ELF, gzip, zip/Office, PDF, PNG, JPEG, SQLite,
    /// ...) is gone from the start of the file.
    #[serde(default)]
    pub lost_magic: u64,
    /// Of those: files whose changed bytes (at the same offsets of the
    /// first chunk) compressed well before and are noise now: partial and
    /// intermittent encryption, which leaves the rest of the file alone.
    #[serde(default)]
    pub region_noise: u64,
    /// Of those: files changed the same way as many files of many types
    /// (one size difference, one rewritten range, random-looking bytes),
    /// not suspect by any other sign.
    #[serde(default)]
    pub same_shape: u64,
    /// Suspect files, extrapolated to all changed files when sampled.
    pub suspects: u64,
    /// Distinct suspect files over this snapshot and the earlier ones of
    /// its group that count (a slow attack, [`crate::scan::accumulate`]).
    #[serde(default)]
    pub accumulated: u64,
}

/// One rule of the verdict: the figure it looked at, the line it was held
/// against, and whether it fired.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// `mass`, `concentrated`, `notes` or `slow`.
    pub name: String,
    /// The figure.
    pub value: f64,
    /// The line, in words.
    pub threshold: String,
    /// Whether it fired.
    pub fired: bool,
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
    /// The verdict's rules, each with its figure and threshold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Keys of the suspect files (the first 8 bytes of the BLAKE3 of the
    /// path, as a number; at most [`crate::scan::MAX_EXAMINED`]), so that a
    /// later scan can count distinct files over several snapshots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suspect_keys: Vec<u64>,
    /// The earlier snapshots whose suspects a slow-attack verdict counted
    /// (short ids, oldest first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accumulated_from: Vec<String>,
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
