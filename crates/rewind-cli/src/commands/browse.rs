//! `rewind ls`, `find`, `diff`, `dump`

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use rewind_core::browse::{self, Change};
use rewind_core::format::tree::{Node, NodeKind};

use super::{Global, SelectArgs};
use crate::output::{bytes, local_time, mode_string, node_time};

#[derive(clap::Args, Debug)]
pub struct LsArgs {
    /// Snapshot: id, `latest` or @TIME.
    pub snapshot: String,
    /// Path inside the snapshot (default: its root).
    pub path: Option<PathBuf>,
    /// Show mode, owner, size and mtime.
    #[arg(short, long)]
    pub long: bool,
    /// List everything below the path.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    #[command(flatten)]
    pub select: SelectArgs,
}

fn print_node(
    out: &mut impl Write,
    path: &Path,
    n: &Node,
    long: bool,
    json: bool,
) -> std::io::Result<()> {
    if json {
        return writeln!(
            out,
            "{}",
            serde_json::json!({"path": path.to_string_lossy(), "type": n.type_char().to_string(), "mode": n.mode, "uid": n.uid, "gid": n.gid, "user": n.user, "group": n.group, "size": n.size, "mtime": node_time(n.mtime)})
        );
    }
    if long {
        let owner = n.user.clone().unwrap_or_else(|| n.uid.to_string());
        let group = n.group.clone().unwrap_or_else(|| n.gid.to_string());
        let mut line = format!(
            "{} {:>8} {:>8} {:>12} {} {}",
            mode_string(n),
            owner,
            group,
            n.size,
            node_time(n.mtime),
            path.display()
        );
        if let NodeKind::Symlink { target } = &n.kind {
            line += &format!(" -> {}", String::from_utf8_lossy(target));
        }
        writeln!(out, "{line}")
    } else {
        writeln!(out, "{}", path.display())
    }
}

pub fn ls(args: &LsArgs, global: &Global) -> Result<u8> {
    let repo = global.open()?;
    let (_, snap) = args.select.resolve(&repo, &args.snapshot)?;
    let path = args.path.clone().unwrap_or_else(|| PathBuf::from("/"));
    let entries = browse::ls(&repo, &snap.tree, &path, args.recursive)?;
    let mut out = crate::output::stdout();
    for (p, n) in &entries {
        print_node(&mut out, p, n, args.long, global.json)?;
    }
    Ok(crate::exit::OK)
}

#[derive(clap::Args, Debug)]
pub struct FindArgs {
    /// Pattern (gitignore syntax): `report.docx`, `*.pdf`, `/home/*/notes/**`.
    pub pattern: String,
    #[command(flatten)]
    pub select: SelectArgs,
}

pub fn find(args: &FindArgs, global: &Global) -> Result<u8> {
    let repo = global.open()?;
    let snaps = args.select.matching(&repo)?;
    let hits = browse::find(&repo, &snaps, &args.pattern)?;
    let mut out = crate::output::stdout();
    for h in &hits {
        if global.json {
            writeln!(
                out,
                "{}",
                serde_json::json!({"snapshot": h.snapshot.to_hex(), "time": h.time.to_string(), "path": h.path.to_string_lossy(), "type": h.node.type_char().to_string(), "size": h.node.size, "mtime": node_time(h.node.mtime)})
            )?;
        } else {
            writeln!(
                out,
                "{}  {}  {:>10}  mtime {}  {}",
                h.snapshot.short(),
                local_time(h.time),
                bytes(h.node.size),
                node_time(h.node.mtime),
                h.path.display()
            )?;
        }
    }
    if hits.is_empty() && !global.json {
        eprintln!("no snapshot holds a path matching {:?}", args.pattern);
    }
    Ok(crate::exit::OK)
}

#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// Older snapshot.
    pub first: String,
    /// Newer snapshot.
    pub second: String,
    #[command(flatten)]
    pub select: SelectArgs,
}

pub fn diff(args: &DiffArgs, global: &Global) -> Result<u8> {
    let repo = global.open()?;
    let (_, a) = args.select.resolve(&repo, &args.first)?;
    let (_, b) = args.select.resolve(&repo, &args.second)?;
    let changes = browse::diff(&repo, &a.tree, &b.tree)?;
    let mut out = crate::output::stdout();
    let (mut add, mut rem, mut modi, mut meta) = (0, 0, 0, 0);
    for (p, c) in &changes {
        let sym = match c {
            Change::Added => {
                add += 1;
                "+"
            }
            Change::Removed => {
                rem += 1;
                "-"
            }
            Change::Modified => {
                modi += 1;
                "M"
            }
            Change::Metadata => {
                meta += 1;
                "U"
            }
        };
        if global.json {
            writeln!(
                out,
                "{}",
                serde_json::json!({"path": p.to_string_lossy(), "change": c})
            )?;
        } else {
            writeln!(out, "{sym}    {}", p.display())?;
        }
    }
    if !global.json && !global.quiet {
        writeln!(
            out,
            "\n{add} added, {rem} removed, {modi} modified, {meta} with metadata changes only"
        )?;
    }
    Ok(crate::exit::OK)
}

#[derive(clap::Args, Debug)]
pub struct DumpArgs {
    /// Snapshot: id, `latest` or @TIME.
    pub snapshot: String,
    /// Path of a file (written as is) or directory (written as tar).
    pub path: PathBuf,
    #[command(flatten)]
    pub select: SelectArgs,
}

pub fn dump(args: &DumpArgs, global: &Global) -> Result<u8> {
    let repo = global.open()?;
    let (_, snap) = args.select.resolve(&repo, &args.snapshot)?;
    let out = crate::output::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
    match rewind_core::restorer::find_node(&repo, &snap.tree, &args.path)? {
        None => {
            // The root: a tar of everything.
            let root = Node {
                name: b"root".to_vec(),
                kind: NodeKind::Dir { subtree: snap.tree },
                mode: 0o40755,
                uid: 0,
                gid: 0,
                user: None,
                group: None,
                size: 0,
                mtime: Default::default(),
                ctime: Default::default(),
                inode: 0,
                device: 0,
                links: 1,
                xattrs: Vec::new(),
            };
            browse::dump_tar(&repo, &root, Path::new("."), &mut out)?;
        }
        Some(n) => match &n.kind {
            NodeKind::File { .. } => {
                std::io::copy(&mut browse::FileReader::new(&repo, &n)?, &mut out)?;
            }
            NodeKind::Dir { .. } => browse::dump_tar(
                &repo,
                &n,
                Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&n.name)),
                &mut out,
            )?,
            _ => bail!("{} is neither a file nor a directory", args.path.display()),
        },
    }
    out.flush()?;
    Ok(crate::exit::OK)
}
