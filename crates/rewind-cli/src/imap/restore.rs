//! Mail back where it can be read: `rewind restore SNAP[:/FOLDER] --to
//! imap://USER@HOST[/PREFIX]` appends each message to the same folder on
//! any IMAP server (under PREFIX if given) with its flags and date, skipping
//! those the folder already holds; `--to maildir:DIR` writes a Maildir
//! (`DIR/FOLDER/{cur,new,tmp}`) that mail programs read.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use rewind_core::browse::FileReader;
use rewind_core::format::tree::{Node, NodeKind, Time, Tree};
use rewind_core::id::BlobId;
use rewind_core::repository::Repository;

use super::backup::{FolderRecord, FLAGS_XATTR, FOLDER_FILE};
use super::{connect, utf7, ImapUrl, Session};

/// A folder of a mail snapshot.
struct MailFolder {
    /// Its directories in the snapshot (decoded folder names).
    dirs: Vec<String>,
    record: FolderRecord,
    messages: Vec<Node>,
}

/// Where the messages go.
pub enum MailTarget {
    Imap(ImapUrl),
    Maildir(PathBuf),
}

impl MailTarget {
    /// `imap://…` or `maildir:DIR`.
    pub fn parse(s: &str) -> Result<MailTarget> {
        if super::is_imap(s) {
            return Ok(MailTarget::Imap(ImapUrl::parse(s)?));
        }
        if let Some(dir) = s.strip_prefix("maildir:") {
            if dir.is_empty() {
                bail!("maildir: needs a folder, e.g. --to maildir:/home/me/Maildir");
            }
            return Ok(MailTarget::Maildir(PathBuf::from(dir)));
        }
        bail!("--to {s:?}: restore mail to imap://USER@HOST[/FOLDER] or maildir:DIR")
    }
}

/// What a mail restore did.
#[derive(Default, Debug)]
pub struct MailRestored {
    pub folders: u64,
    pub messages: u64,
    pub already_there: u64,
    pub bytes: u64,
}

fn read_all(repo: &Repository, n: &Node) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(n.size as usize);
    FileReader::new(repo, n)?
        .read_to_end(&mut out)
        .with_context(|| format!("read {} from the repository", n.name_lossy()))?;
    Ok(out)
}

/// Every mail folder below `tree` (at `dirs`).
fn collect(
    repo: &Repository,
    tree: &Tree,
    dirs: Vec<String>,
    out: &mut Vec<MailFolder>,
) -> Result<()> {
    if let Some(rec) = tree.find(FOLDER_FILE.as_bytes()) {
        let record: FolderRecord = serde_json::from_slice(&read_all(repo, rec)?)
            .with_context(|| format!("{FOLDER_FILE} of {} is damaged", dirs.join("/")))?;
        let messages = tree
            .nodes
            .iter()
            .filter(|n| n.is_file() && n.name.ends_with(b".eml"))
            .cloned()
            .collect();
        out.push(MailFolder {
            dirs: dirs.clone(),
            record,
            messages,
        });
    }
    for n in &tree.nodes {
        if let NodeKind::Dir { subtree } = &n.kind {
            let mut d = dirs.clone();
            d.push(n.name_lossy());
            collect(repo, &repo.read_tree(subtree)?, d, out)?;
        }
    }
    Ok(())
}

/// The folders of a mail snapshot at `start` (its root, or a folder in it).
fn folders(repo: &Repository, root: &BlobId, start: Option<&Path>) -> Result<Vec<MailFolder>> {
    let (tree, dirs) = match start {
        None => (repo.read_tree(root)?, Vec::new()),
        Some(p) => match rewind_core::restorer::find_node(repo, root, p)? {
            Some(Node {
                kind: NodeKind::Dir { subtree },
                ..
            }) => (
                repo.read_tree(&subtree)?,
                p.components()
                    .filter_map(|c| match c {
                        std::path::Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => bail!("{} is not a mail folder of the snapshot", p.display()),
        },
    };
    let mut out = Vec::new();
    collect(repo, &tree, dirs, &mut out)?;
    if out.is_empty() {
        bail!("the snapshot holds no mail folder there (no {FOLDER_FILE}): is it a mail backup?");
    }
    Ok(out)
}

fn flags_of(n: &Node) -> Vec<String> {
    n.xattrs
        .iter()
        .find(|x| x.name == FLAGS_XATTR.as_bytes())
        .map(|x| {
            String::from_utf8_lossy(&x.value)
                .split_whitespace()
                .filter(|f| *f != "\\Recent")
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The Message-ID of a message, from its header.
fn message_id(msg: &[u8]) -> Option<String> {
    let end = msg
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| msg.windows(2).position(|w| w == b"\n\n"))
        .unwrap_or(msg.len());
    let header = String::from_utf8_lossy(&msg[..end]);
    let mut lines = header.lines().peekable();
    while let Some(l) = lines.next() {
        if l.as_bytes()
            .get(..11)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"message-id:"))
        {
            let mut v = l[11..].trim().to_string();
            while lines.peek().is_some_and(|n| n.starts_with([' ', '\t'])) {
                v.push_str(lines.next().unwrap_or("").trim());
            }
            return (!v.is_empty()).then_some(v);
        }
    }
    None
}

fn date_of(t: Time) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::from_timestamp(t.secs, 0).map(|d| d.fixed_offset())
}

/// Restores the mail of a snapshot.
pub fn restore(
    repo: &Repository,
    root: &BlobId,
    start: Option<&Path>,
    target: &MailTarget,
    secret: Option<&str>,
) -> Result<MailRestored> {
    let folders = folders(repo, root, start)?;
    match target {
        MailTarget::Imap(url) => to_imap(repo, &folders, url, secret.unwrap_or("")),
        MailTarget::Maildir(dir) => to_maildir(repo, &folders, dir),
    }
}

/// The target folder's name: the snapshot's folder names joined with the
/// server's delimiter, under the URL's folder if it names one.
fn target_name(url: &ImapUrl, delimiter: &str, dirs: &[String]) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(prefix) = &url.folder {
        parts.push(prefix.clone());
    }
    parts.extend(dirs.iter().cloned());
    utf7::encode(&parts.join(delimiter))
}

/// Message-IDs (and, for messages without one, sizes and dates) in a
/// folder of the target server.
/// What a target folder holds: Message-IDs, and (size, date) of messages
/// without one.
type Present = (HashSet<String>, HashSet<(u32, i64)>);

fn present(s: &mut Session, name: &str) -> Result<Present> {
    let mb = s
        .select(name)
        .map_err(|e| anyhow!("cannot open folder {name:?} on the target: {e}"))?;
    let mut ids = HashSet::new();
    let mut plain = HashSet::new();
    if mb.exists == 0 {
        return Ok((ids, plain));
    }
    let fetched = s
        .fetch(
            "1:*",
            "(RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])",
        )
        .map_err(|e| anyhow!("cannot list folder {name:?} on the target: {e}"))?;
    for m in fetched.iter() {
        match m.header().and_then(message_id) {
            Some(id) => {
                ids.insert(id);
            }
            None => {
                plain.insert((
                    m.size.unwrap_or(0),
                    m.internal_date().map_or(0, |d| d.timestamp()),
                ));
            }
        }
    }
    Ok((ids, plain))
}

fn to_imap(
    repo: &Repository,
    folders: &[MailFolder],
    url: &ImapUrl,
    secret: &str,
) -> Result<MailRestored> {
    let mut s = connect(url, secret)?;
    let delimiter = s
        .list(Some(""), Some("\"\""))
        .ok()
        .and_then(|n| {
            n.iter()
                .next()
                .and_then(|n| n.delimiter().map(str::to_string))
        })
        .unwrap_or_else(|| "/".to_string());
    let existing: HashSet<String> = s
        .list(Some(""), Some("*"))
        .map_err(|e| anyhow!("cannot list the target's folders: {e}"))?
        .iter()
        .map(|n| n.name().to_string())
        .collect();
    let mut done = MailRestored::default();
    for f in folders {
        let name =
            if url.folder.is_none() && f.record.delimiter.as_deref() == Some(delimiter.as_str()) {
                // Same hierarchy: the name exactly as it was.
                f.record.name.clone()
            } else {
                target_name(url, &delimiter, &f.dirs)
            };
        if !existing.contains(&name) {
            s.create(&name)
                .map_err(|e| anyhow!("cannot create folder {name:?} on the target: {e}"))?;
        }
        let (ids, plain) = present(&mut s, &name)?;
        done.folders += 1;
        for n in &f.messages {
            let msg = read_all(repo, n)?;
            let there = match message_id(&msg) {
                Some(id) => ids.contains(&id),
                None => plain.contains(&(msg.len() as u32, n.mtime.secs)),
            };
            if there {
                done.already_there += 1;
                continue;
            }
            let flags = flags_of(n);
            // The crate quotes APPEND's folder without escaping it.
            let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
            let mut cmd = s.append(&quoted, &msg);
            cmd.flags(flags.iter().map(|f| imap::types::Flag::from(f.clone())));
            if let Some(d) = date_of(n.mtime) {
                cmd.internal_date(d);
            }
            cmd.finish()
                .map_err(|e| anyhow!("cannot append {} to {name:?}: {e}", n.name_lossy()))?;
            done.messages += 1;
            done.bytes += msg.len() as u64;
        }
    }
    let _ = s.logout();
    Ok(done)
}

/// Maildir's info letters for IMAP flags (sorted, as Maildir wants).
fn maildir_info(flags: &[String]) -> String {
    let mut letters: Vec<char> = flags
        .iter()
        .filter_map(|f| match f.as_str() {
            "\\Draft" => Some('D'),
            "\\Flagged" => Some('F'),
            "\\Answered" => Some('R'),
            "\\Seen" => Some('S'),
            "\\Deleted" => Some('T'),
            _ => None,
        })
        .collect();
    letters.sort_unstable();
    letters.into_iter().collect()
}

fn to_maildir(repo: &Repository, folders: &[MailFolder], dir: &Path) -> Result<MailRestored> {
    let mut done = MailRestored::default();
    for f in folders {
        let mut at = dir.to_path_buf();
        for d in &f.dirs {
            at.push(OsStr::from_bytes(d.as_bytes()));
        }
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(at.join(sub))
                .with_context(|| format!("cannot create {}", at.join(sub).display()))?;
        }
        done.folders += 1;
        for n in &f.messages {
            let uid = n.name_lossy().trim_end_matches(".eml").to_string();
            let name = format!(
                "{}.rewind-{}-{uid}:2,{}",
                n.mtime.secs,
                f.record.uidvalidity,
                maildir_info(&flags_of(n))
            );
            let path = at.join("cur").join(&name);
            if path.exists() {
                done.already_there += 1;
                continue;
            }
            let msg = read_all(repo, n)?;
            let tmp = at.join("tmp").join(&name);
            std::fs::write(&tmp, &msg)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            let t =
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(n.mtime.secs.max(0) as u64);
            let _ = std::fs::File::options()
                .write(true)
                .open(&tmp)
                .and_then(|f| f.set_modified(t));
            std::fs::rename(&tmp, &path)
                .with_context(|| format!("cannot move {} into cur/", tmp.display()))?;
            done.messages += 1;
            done.bytes += msg.len() as u64;
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_and_maildir_flags() {
        assert_eq!(
            message_id(b"Subject: x\r\nMessage-Id:\r\n <a@b>\r\n\r\nbody Message-ID: <no>")
                .as_deref(),
            Some("<a@b>")
        );
        assert_eq!(message_id(b"Subject: x\n\nMessage-ID: <body@x>"), None);
        // A multibyte character across byte 11 of a header line.
        assert_eq!(message_id("From: aaaaaü\r\n\r\n".as_bytes()), None);
        let f = |v: &[&str]| maildir_info(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(f(&["\\Seen", "\\Answered", "$Label"]), "RS");
        assert_eq!(f(&[]), "");
    }
}
