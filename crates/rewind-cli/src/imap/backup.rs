//! A mailbox as a snapshot: each folder a directory, each message a file
//! `UID.eml` (ten digits, so a re-run maps to the same file and `ls`
//! sorts by arrival) holding the message exactly as the server sends it,
//! its INTERNALDATE as the mtime and its flags in the extended attribute
//! `user.imap.flags`; each folder's UIDVALIDITY and name in
//! `.imap-folder.json`. Incremental: a message whose UID the parent
//! snapshot holds under the same UIDVALIDITY is not downloaded again.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use rewind_core::archiver::{source_node, TreeSource};
use rewind_core::browse::FileReader;
use rewind_core::chunker::chunk_stream;
use rewind_core::format::pack::BlobKind;
use rewind_core::format::snapshot::BackupSummary;
use rewind_core::format::tree::{Node, NodeKind, Time, Tree, Xattr};
use rewind_core::id::BlobId;
use rewind_core::progress::Progress;
use rewind_core::repository::{BlobWriter, Repository};
use rewind_core::{Error, Result};

use super::{connect, utf7, ImapUrl, Session};

/// The folder's own record in its directory.
pub const FOLDER_FILE: &str = ".imap-folder.json";

/// The extended attribute that holds a message's flags.
pub const FLAGS_XATTR: &str = "user.imap.flags";

/// Bytes of messages asked for in one FETCH.
const FETCH_BYTES: u64 = 32 << 20;

/// Messages asked for in one FETCH.
const FETCH_COUNT: usize = 500;

/// What `.imap-folder.json` holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderRecord {
    pub version: u32,
    /// The mailbox name as the server spells it (modified UTF-7).
    pub name: String,
    /// Its hierarchy delimiter.
    pub delimiter: Option<String>,
    pub uidvalidity: u32,
    pub uidnext: Option<u32>,
    /// Messages in it at the backup.
    pub messages: u64,
}

/// A folder as LIST names it.
struct Folder {
    /// As the server spells it.
    raw: String,
    delimiter: Option<String>,
    /// Its directory in the snapshot, one name per level.
    dirs: Vec<String>,
}

/// One message as the listing tells it.
struct Listed {
    uid: u32,
    flags: String,
    date: Time,
    size: u64,
}

/// The mail source of a backup.
pub struct MailSource {
    url: ImapUrl,
    secret: String,
    session: Option<Session>,
}

impl MailSource {
    /// Connects and logs in now, so that a wrong password or address is
    /// said before the backup begins.
    pub fn connect(url: ImapUrl, secret: String) -> anyhow::Result<MailSource> {
        let session = connect(&url, &secret)?;
        Ok(MailSource {
            url,
            secret,
            session: Some(session),
        })
    }

    fn session(&mut self) -> Result<&mut Session> {
        if self.session.is_none() {
            let s = connect(&self.url, &self.secret).map_err(|e| failed("reconnect", e))?;
            self.session = Some(s);
        }
        Ok(self.session.as_mut().expect("just set"))
    }

    /// The folders to back up, parents before children.
    fn folders(&mut self) -> Result<Vec<Folder>> {
        let wanted = self.url.folder.clone();
        let names = self
            .session()?
            .list(Some(""), Some("*"))
            .map_err(|e| failed("list the folders", e))?;
        let mut out = Vec::new();
        for n in names.iter() {
            // `\Noselect` names only hold others (imap re-exports no type
            // for the attribute).
            if n.attributes()
                .iter()
                .any(|a| format!("{a:?}") == "NoSelect")
            {
                continue;
            }
            let raw = n.name().to_string();
            let delimiter = n.delimiter().map(str::to_string);
            let text = utf7::decode(&raw).unwrap_or_else(|| raw.clone());
            let dirs: Vec<String> = match &delimiter {
                Some(d) if !d.is_empty() => text.split(d.as_str()).map(dir_name).collect(),
                _ => vec![dir_name(&text)],
            };
            if let Some(w) = &wanted {
                let inside = match &delimiter {
                    Some(d) => text == *w || text.starts_with(&format!("{w}{d}")),
                    None => text == *w,
                };
                if !inside {
                    continue;
                }
            }
            out.push(Folder {
                raw,
                delimiter,
                dirs,
            });
        }
        if out.is_empty() {
            return Err(Error::InvalidInput(match &wanted {
                Some(w) => format!("the mailbox {} has no folder {w:?}", self.url.location()),
                None => format!("the mailbox {} lists no folder", self.url.location()),
            }));
        }
        out.sort_by(|a, b| a.dirs.cmp(&b.dirs));
        // Two names that become one directory (a `/` replaced, modified
        // UTF-7 spelled two ways) each keep their own.
        let mut taken = std::collections::HashSet::new();
        for f in &mut out {
            let base = f.dirs.last().cloned().unwrap_or_default();
            let mut n = 1;
            while !taken.insert(f.dirs.clone()) {
                n += 1;
                if let Some(last) = f.dirs.last_mut() {
                    *last = format!("{base} ({n})");
                }
            }
        }
        Ok(out)
    }
}

/// A folder name as one directory name: no `/`, not `.` or `..`.
fn dir_name(s: &str) -> String {
    let s = s.replace('/', "\u{2215}").replace('\0', "");
    match s.as_str() {
        "" => "(no name)".into(),
        "." | ".." => s.replace('.', "\u{2024}"),
        _ => s,
    }
}

/// The prefix of every error that comes from the mail server (not from
/// the repository): those a new connection may cure.
const IMAP_FAILURE: &str = "IMAP: ";

fn failed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::io(
        format!("{IMAP_FAILURE}{what}"),
        std::io::Error::other(e.to_string()),
    )
}

/// Whether an error is the mail server's (else the repository's: those
/// stop the backup).
fn from_server(e: &Error) -> bool {
    matches!(e, Error::Io { context, .. } if context.starts_with(IMAP_FAILURE))
}

/// Stores bytes as a file's chunks.
fn store_bytes(repo: &Repository, writer: &BlobWriter<'_>, data: &[u8]) -> Result<Vec<BlobId>> {
    let mut content = Vec::new();
    chunk_stream(
        &repo.crypto().chunker(),
        data,
        |chunk: &[u8]| -> Result<()> {
            content.push(writer.add_blob(BlobKind::Data, chunk)?.0);
            Ok(())
        },
    )?;
    Ok(content)
}

fn flags_xattr(flags: &str) -> Vec<Xattr> {
    if flags.is_empty() {
        return Vec::new();
    }
    vec![Xattr {
        name: FLAGS_XATTR.as_bytes().to_vec(),
        value: flags.as_bytes().to_vec(),
    }]
}

/// The messages of a folder in the parent snapshot, by file name, when it
/// is the same folder: the same name and UIDVALIDITY (RFC 3501: then a UID
/// names the same, unchanging message; else it may name another).
fn parent_messages(
    repo: &Repository,
    dir: Option<&Tree>,
    name: &str,
    validity: Option<u32>,
) -> HashMap<Vec<u8>, Node> {
    let (Some(t), Some(validity)) = (dir, validity) else {
        return HashMap::new();
    };
    let record = t.find(FOLDER_FILE.as_bytes()).and_then(|n| {
        let mut bytes = Vec::new();
        FileReader::new(repo, n)
            .ok()?
            .read_to_end(&mut bytes)
            .ok()?;
        serde_json::from_slice::<FolderRecord>(&bytes).ok()
    });
    if record.is_none_or(|r| r.uidvalidity != validity || r.name != name) {
        return HashMap::new();
    }
    t.nodes
        .iter()
        .filter(|n| n.is_file() && n.name.ends_with(b".eml"))
        .map(|n| (n.name.clone(), n.clone()))
        .collect()
}

/// The directory at `dirs` below `root` in the parent snapshot.
fn parent_dir(repo: &Repository, root: Option<&Tree>, dirs: &[String]) -> Option<Tree> {
    let mut t = root?.clone();
    for d in dirs {
        match &t.find(d.as_bytes())?.kind {
            NodeKind::Dir { subtree } => t = repo.read_tree(subtree).ok()?,
            _ => return None,
        }
    }
    Some(t)
}

/// A directory being built: its files and its subdirectories.
#[derive(Default)]
struct Dir {
    files: Vec<Node>,
    subdirs: BTreeMap<String, Dir>,
    newest: Time,
}

impl Dir {
    fn at(&mut self, dirs: &[String]) -> &mut Dir {
        dirs.iter()
            .fold(self, |d, name| d.subdirs.entry(name.clone()).or_default())
    }

    /// Writes the trees bottom up; returns the root's.
    fn write(self, writer: &BlobWriter<'_>, summary: &mut BackupSummary) -> Result<(BlobId, Time)> {
        let mut nodes = self.files;
        let mut newest = self.newest;
        let files: std::collections::HashSet<Vec<u8>> =
            nodes.iter().map(|n| n.name.clone()).collect();
        for (mut name, sub) in self.subdirs {
            // A subfolder named like a file of its folder (`.imap-folder.json`).
            while files.contains(name.as_bytes()) {
                name.push_str(" (folder)");
            }
            let (subtree, t) = sub.write(writer, summary)?;
            newest = newest.max(t);
            summary.dirs += 1;
            nodes.push(source_node(
                name.as_bytes(),
                NodeKind::Dir { subtree },
                0o040700,
                0,
                t,
            ));
        }
        let tree = Tree::new(nodes);
        Ok((writer.add_blob(BlobKind::Tree, &tree.encode())?.0, newest))
    }
}

impl MailSource {
    /// Backs up one folder: its message nodes and its record.
    fn folder(
        &mut self,
        repo: &Repository,
        writer: &BlobWriter<'_>,
        f: &Folder,
        parent: Option<&Tree>,
        summary: &mut BackupSummary,
        progress: &Progress,
    ) -> Result<(Vec<Node>, Time)> {
        let s = self.session()?;
        let mb = s
            .examine(&f.raw)
            .map_err(|e| failed(&format!("open folder {:?}", f.raw), e))?;
        let validity = mb.uid_validity.unwrap_or(0);
        let mut old = parent_messages(repo, parent, &f.raw, mb.uid_validity);
        let mut listed = Vec::new();
        if mb.exists > 0 {
            let fetched = s
                .uid_fetch("1:*", "(UID FLAGS INTERNALDATE RFC822.SIZE)")
                .map_err(|e| failed(&format!("list the messages of {:?}", f.raw), e))?;
            let mut seen = std::collections::HashSet::new();
            for m in fetched.iter() {
                // Unsolicited FETCH responses (another client changing
                // flags) come in the same list: only answers with the
                // asked-for items count, once per UID.
                let (Some(uid), Some(date)) = (m.uid, m.internal_date()) else {
                    continue;
                };
                if !seen.insert(uid) {
                    continue;
                }
                let flags: Vec<String> = m
                    .flags()
                    .iter()
                    .map(|f| f.to_string())
                    .filter(|f| f != "\\Recent")
                    .collect();
                listed.push(Listed {
                    uid,
                    flags: flags.join(" "),
                    date: Time {
                        secs: date.timestamp(),
                        nanos: 0,
                    },
                    // Unknown: fetched alone.
                    size: m.size.map_or(FETCH_BYTES, u64::from),
                });
            }
        }
        let mut nodes = Vec::with_capacity(listed.len() + 1);
        let mut newest = Time::default();
        let mut wanted: Vec<&Listed> = Vec::new();
        for m in &listed {
            newest = newest.max(m.date);
            let name = format!("{:010}.eml", m.uid);
            match old.remove(name.as_bytes()) {
                Some(mut n) => {
                    n.xattrs = flags_xattr(&m.flags);
                    n.mtime = m.date;
                    n.ctime = m.date;
                    summary.files_unchanged += 1;
                    summary.total_bytes += n.size;
                    nodes.push(n);
                }
                None => wanted.push(m),
            }
        }
        // New messages, in batches of bounded size.
        let mut by_uid: HashMap<u32, &Listed> = wanted.iter().map(|m| (m.uid, *m)).collect();
        let mut i = 0;
        while i < wanted.len() {
            progress.cancel.check()?;
            let (mut bytes, start) = (0u64, i);
            while i < wanted.len()
                && i - start < FETCH_COUNT
                && (i == start || bytes + wanted[i].size <= FETCH_BYTES)
            {
                bytes += wanted[i].size;
                i += 1;
            }
            let set: Vec<String> = wanted[start..i].iter().map(|m| m.uid.to_string()).collect();
            let fetched = self
                .session()?
                .uid_fetch(set.join(","), "(UID BODY.PEEK[])")
                .map_err(|e| failed(&format!("fetch messages of {:?}", f.raw), e))?;
            for m in fetched.iter() {
                // A message expunged since the listing is simply absent.
                let (Some(uid), Some(body)) = (m.uid, m.body()) else {
                    continue;
                };
                // Each wanted message once (an unsolicited FETCH has no
                // body, a repeated one is skipped).
                let Some(l) = by_uid.remove(&uid) else {
                    continue;
                };
                let content = store_bytes(repo, writer, body)?;
                let mut n = source_node(
                    format!("{uid:010}.eml").as_bytes(),
                    NodeKind::File {
                        content,
                        holes: Vec::new(),
                    },
                    0o100600,
                    body.len() as u64,
                    l.date,
                );
                n.xattrs = flags_xattr(&l.flags);
                summary.files_new += 1;
                summary.bytes_read += body.len() as u64;
                summary.total_bytes += body.len() as u64;
                progress.done_files.fetch_add(1, Ordering::Relaxed);
                progress
                    .done_bytes
                    .fetch_add(body.len() as u64, Ordering::Relaxed);
                nodes.push(n);
            }
        }
        if listed.is_empty() {
            // An empty folder's record is as old as this backup.
            let now = jiff::Timestamp::now();
            newest = Time {
                secs: now.as_second(),
                nanos: 0,
            };
        }
        let record = FolderRecord {
            version: 1,
            name: f.raw.clone(),
            delimiter: f.delimiter.clone(),
            uidvalidity: validity,
            uidnext: mb.uid_next,
            messages: listed.len() as u64,
        };
        let json = serde_json::to_vec_pretty(&record).expect("a record serializes");
        let content = store_bytes(repo, writer, &json)?;
        nodes.push(source_node(
            FOLDER_FILE.as_bytes(),
            NodeKind::File {
                content,
                holes: Vec::new(),
            },
            0o100600,
            json.len() as u64,
            newest,
        ));
        Ok((nodes, newest))
    }
}

impl TreeSource for MailSource {
    fn paths(&self) -> Vec<String> {
        vec![self.url.location()]
    }

    fn store(
        &mut self,
        repo: &Repository,
        writer: &BlobWriter<'_>,
        parent_root: Option<&Tree>,
        summary: &mut BackupSummary,
        progress: &Progress,
    ) -> Result<BlobId> {
        let folders = self.folders()?;
        let mut root = Dir::default();
        for f in &folders {
            progress.cancel.check()?;
            let parent = parent_dir(repo, parent_root, &f.dirs);
            // A dropped connection gets one new one for the folder. The
            // figures of a try count only if it worked.
            let mut tried = BackupSummary::default();
            let mut result = self.folder(repo, writer, f, parent.as_ref(), &mut tried, progress);
            if result.as_ref().is_err_and(from_server) {
                self.session = None;
                tried = BackupSummary::default();
                result = self.folder(repo, writer, f, parent.as_ref(), &mut tried, progress);
            }
            let dir = root.at(&f.dirs);
            match result {
                Ok((nodes, newest)) => {
                    dir.files = nodes;
                    dir.newest = newest;
                    summary.files_new += tried.files_new;
                    summary.files_unchanged += tried.files_unchanged;
                    summary.bytes_read += tried.bytes_read;
                    summary.total_bytes += tried.total_bytes;
                }
                // The repository's errors (and Ctrl-C) stop the backup.
                Err(e) if !from_server(&e) => return Err(e),
                Err(e) => {
                    // The folder as the last backup had it, said as such.
                    let kept = parent.is_some();
                    progress.warn(
                        Path::new(&f.dirs.join("/")),
                        format!(
                            "folder {:?} could not be backed up ({e}); {}",
                            f.raw,
                            if kept {
                                "the snapshot holds it as the previous backup had it"
                            } else {
                                "it is not in the snapshot"
                            }
                        ),
                    );
                    summary.errors += 1;
                    self.session = None;
                    if let Some(t) = parent {
                        dir.files = t.nodes.into_iter().filter(|n| !n.is_dir()).collect();
                        for n in dir.files.iter().filter(|n| n.name.ends_with(b".eml")) {
                            summary.files_unchanged += 1;
                            summary.total_bytes += n.size;
                        }
                    }
                }
            }
        }
        progress.scan_done.store(true, Ordering::SeqCst);
        if let Some(s) = self.session.as_mut() {
            let _ = s.logout();
        }
        Ok(root.write(writer, summary)?.0)
    }
}
