//! The UI's pages: the timeline, a snapshot's folders, every version of a
//! file, search, the changes between two snapshots, the repository and the
//! agent's jobs. Each is rendered from the repository on a blocking thread.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;

use rewind_core::browse::{self, Change};
use rewind_core::format::scan::Verdict;
use rewind_core::format::snapshot::SnapshotFile;
use rewind_core::format::tree::{Node, NodeKind};
use rewind_core::id::{BlobId, SnapshotId};
use rewind_core::repository::Repository;
use rewind_core::{Error, Result};

use super::html::{self, enc, esc, esc_bytes, Page};
use super::{param, param_str, transfer, Session, Ui};

/// Entries on one page of a folder.
pub const FOLDER_PAGE: usize = 500;

/// Paths shown for a search.
const SEARCH_PATHS: usize = 300;

/// Changes shown for a diff.
const DIFF_ROWS: usize = 3000;

type Query = Vec<(String, Vec<u8>)>;

/// Snapshots with their ids.
type Snapshots = Vec<(SnapshotId, SnapshotFile)>;

/// The folders a search read, by (tree, path).
type SearchMemo = HashMap<(BlobId, PathBuf), Arc<Seen>>;

pub(crate) async fn get(ui: &Arc<Ui>, s: Arc<Session>, path: &str, q: Query) -> Response {
    if let Some(id) = path.strip_prefix("/file/") {
        return transfer::download_file(ui, s, id.to_string(), q).await;
    }
    if let Some(id) = path.strip_prefix("/archive/") {
        return transfer::download_archive(ui, s, id.to_string(), q).await;
    }
    if let Some(n) = path.strip_prefix("/jobs/") {
        return transfer::job_page(ui, s, n);
    }
    if let Some(id) = path.strip_prefix("/snapshot/") {
        let id = id.to_string();
        return render(ui, s, move |ui, s| folder(ui, s, &id, &q)).await;
    }
    match path {
        "/" => render(ui, s, timeline).await,
        "/versions" => render(ui, s, move |ui, s| versions(ui, s, &q)).await,
        "/search" => render(ui, s, move |ui, s| search(ui, s, &q)).await,
        "/diff" => render(ui, s, move |ui, s| diff(ui, s, &q)).await,
        "/stats" => render(ui, s, stats).await,
        "/agent" => render(ui, s, move |ui, _| agent(ui)).await,
        "/restore" => render(ui, s, move |ui, s| transfer::restore_form(ui, s, &q)).await,
        _ => ui.error(
            Some(&s),
            &Error::Missing {
                what: "page",
                id: path.to_string(),
            },
        ),
    }
}

/// Renders a page on a blocking thread (the repository's reads block).
async fn render(
    ui: &Arc<Ui>,
    s: Arc<Session>,
    f: impl FnOnce(&Ui, &Session) -> Result<Page> + Send + 'static,
) -> Response {
    let (ui2, s2) = (ui.clone(), s.clone());
    match tokio::task::spawn_blocking(move || f(&ui2, &s2)).await {
        Ok(Ok(p)) => ui.page(Some(&s), StatusCode::OK, &p),
        Ok(Err(e)) => ui.error(Some(&s), &e),
        Err(e) => ui.error(
            Some(&s),
            &Error::InvalidInput(format!("the page failed: {e}")),
        ),
    }
}

/// The `path` of a query: a path in a snapshot, `/` by default; `..` is
/// refused (nothing outside a snapshot is reachable, and nothing on this
/// machine: paths are only looked up in the snapshot's trees).
pub(crate) fn snap_path(q: &Query) -> Result<PathBuf> {
    let raw = param(q, "path").unwrap_or(b"/");
    let mut out = PathBuf::from("/");
    for c in Path::new(OsStr::from_bytes(raw)).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                return Err(Error::InvalidInput(
                    "a path in a snapshot cannot contain `..`".into(),
                ))
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The node at `path` of a snapshot: `None` for the root.
pub(crate) fn node_at(
    repo: &Repository,
    snap: &SnapshotFile,
    id: &SnapshotId,
    path: &Path,
) -> Result<Option<Node>> {
    if path == Path::new("/") {
        return Ok(None);
    }
    match lookup(repo, &snap.tree, path)? {
        Some(n) => Ok(Some(n)),
        None => Err(Error::Missing {
            what: "path",
            id: format!(
                "{} in snapshot {}",
                html::display_bytes(path.as_os_str().as_bytes()),
                id.short()
            ),
        }),
    }
}

/// The node at `path` (not the root) below `root`, `None` where the
/// snapshot has nothing there.
fn lookup(repo: &Repository, root: &BlobId, path: &Path) -> Result<Option<Node>> {
    let mut tree = repo.read_tree(root)?;
    let mut comps = path.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n),
        _ => None,
    });
    let mut next = comps.next();
    while let Some(c) = next {
        let Some(n) = tree.find(c.as_bytes()).cloned() else {
            return Ok(None);
        };
        next = comps.next();
        if next.is_none() {
            return Ok(Some(n));
        }
        match &n.kind {
            NodeKind::Dir { subtree } => tree = repo.read_tree(subtree)?,
            _ => return Ok(None),
        }
    }
    Ok(None)
}

fn group_key(s: &SnapshotFile) -> (String, Vec<String>) {
    (s.hostname.clone(), s.paths.clone())
}

fn suspicious(s: &SnapshotFile) -> bool {
    s.scan
        .as_ref()
        .is_some_and(|r| r.effective() == Verdict::Suspicious)
}

/// Badges of a snapshot: suspicious, marked, protected, proven, tags.
fn badges(s: &SnapshotFile, proven: Option<&jiff::Timestamp>) -> String {
    let mut b = String::new();
    let now = jiff::Timestamp::now();
    if let Some(r) = &s.scan {
        match (r.effective(), &r.overruled) {
            (Verdict::Suspicious, _) => b.push_str(r#"<span class="badge bad">Suspicious</span>"#),
            (Verdict::Clean, None) => b.push_str(r#"<span class="badge ok">Scanned: clean</span>"#),
            (Verdict::Clean, Some(o)) if r.verdict == Verdict::Suspicious => {
                let _ = write!(
                    b,
                    r#"<span class="badge info">Marked clean by {}</span>"#,
                    esc(&o.by)
                );
            }
            _ => {}
        }
    }
    if let Some(p) = &s.protection {
        if s.is_protected(now) {
            let until = p
                .until
                .map(|u| format!(" until {}", html::time(u)))
                .unwrap_or_default();
            let _ = write!(b, r#"<span class="badge info">Protected{until}</span>"#);
        }
    }
    if let Some(t) = proven {
        let _ = write!(
            b,
            r#"<span class="badge ok">Restore tested {}</span>"#,
            esc(&html::time(*t))
        );
    }
    for t in &s.tags {
        let _ = write!(b, r#"<span class="badge info">{}</span>"#, esc(t));
    }
    b
}

fn reasons(s: &SnapshotFile) -> String {
    let Some(r) = s.scan.as_ref().filter(|_| suspicious(s)) else {
        return String::new();
    };
    let mut out = String::from(r#"<ul class="reasons">"#);
    for reason in r.reasons.iter().take(4) {
        let _ = write!(out, "<li>{}</li>", esc(reason));
    }
    out.push_str("</ul>");
    out
}

/// The snapshots that passed a restore test, and when.
fn proven(repo: &Repository) -> HashMap<SnapshotId, jiff::Timestamp> {
    let mut out = HashMap::new();
    if let Ok((proofs, _)) = rewind_core::proof::proofs(repo) {
        for p in proofs.into_iter().filter(|p| p.passed()) {
            let e = out.entry(p.snapshot).or_insert(p.time);
            if p.time > *e {
                *e = p.time;
            }
        }
    }
    out
}

fn timeline(ui: &Ui, s: &Session) -> Result<Page> {
    let b = ui.base();
    let snaps = s.snapshots()?;
    let proofs = proven(&s.repo);
    let mut p = Page::new("Timeline");
    if snaps.is_empty() {
        p.push(r#"<div class="note">This repository has no snapshot yet. Back up a folder with <code>rewind backup FOLDER</code> and it appears here.</div>"#);
        return Ok(p);
    }
    let mut groups: BTreeMap<(String, Vec<String>), Snapshots> = BTreeMap::new();
    for (id, snap) in snaps.iter() {
        groups
            .entry(group_key(snap))
            .or_default()
            .push((*id, snap.clone()));
    }
    p.push(format!(
        r#"<p class="muted">{} snapshots of {} backed-up folder set(s). Pick a day, open a snapshot to browse it, or <a href="{b}/search">search for a file</a>.</p>"#,
        snaps.len(),
        groups.len()
    ));
    for ((host, paths), group) in &groups {
        p.push(format!(
            "<h2>{} — {}</h2>",
            esc(host),
            esc(&paths.join(", "))
        ));
        timeline_alert(ui, &mut p, group);
        calendar(&mut p, group);
        compare_form(b, &mut p, group);
        p.push(r#"<table><thead><tr><th>Time</th><th>Snapshot</th><th>State</th><th class="num">Files</th><th class="num">Size</th><th></th></tr></thead><tbody>"#);
        for (i, (id, snap)) in group.iter().enumerate().rev() {
            let files =
                snap.summary.files_new + snap.summary.files_changed + snap.summary.files_unchanged;
            let changes = if i > 0 {
                format!(
                    r#" · <a href="{b}/diff?a={}&amp;b={}">Changes</a>"#,
                    group[i - 1].0.to_hex(),
                    id.to_hex()
                )
            } else {
                String::new()
            };
            let _ = write!(
                p.body,
                r#"<tr id="s-{short}" class="{cls}"><td>{time}</td><td><a href="{open}">{short}</a></td><td>{badges}{reasons}</td><td class="num">{files}</td><td class="num">{size}</td><td><a href="{open}">Browse</a>{changes}</td></tr>"#,
                open = href(b, "snapshot", id, &start_path(snap)),
                short = id.short(),
                cls = if suspicious(snap) { "suspicious" } else { "" },
                time = html::time(snap.time),
                badges = badges(snap, proofs.get(id)),
                reasons = reasons(snap),
                size = html::size(snap.summary.total_bytes),
            );
        }
        p.push("</tbody></table>");
    }
    Ok(p)
}

/// Above a group whose newest snapshots look like an attack: what, and the
/// way back to the last clean state.
fn timeline_alert(ui: &Ui, p: &mut Page, group: &[(SnapshotId, SnapshotFile)]) {
    let b = ui.base();
    let Some((bad_id, bad)) = group.iter().rev().find(|(_, s)| suspicious(s)) else {
        return;
    };
    let first = bad
        .scan
        .as_ref()
        .and_then(|r| r.reasons.first().cloned())
        .unwrap_or_else(|| "marked suspicious".into());
    let _ = write!(
        p.body,
        r#"<div class="alert"><strong>Snapshot {} of {} looks like a ransomware attack:</strong> {}."#,
        bad_id.short(),
        html::time(bad.time),
        esc(&first)
    );
    match rewind_core::scan::last_clean(group) {
        Some((clean, _)) => {
            let c = group.iter().find(|(id, _)| *id == clean).map(|(_, s)| s);
            let when = c.map(|s| html::time(s.time)).unwrap_or_default();
            let _ = write!(
                p.body,
                r#"<p>The last clean snapshot is <a href="{open}">{short} of {when}</a>.</p><div class="actions">"#,
                open = c.map(|s| href(b, "snapshot", &clean, &start_path(s))).unwrap_or_default(),
                short = clean.short()
            );
            if ui.restore_here() {
                let _ = write!(
                    p.body,
                    r#"<a class="button danger" href="{b}/restore?snap={}&amp;path={}&amp;last_clean=1">Restore the last clean state</a>"#,
                    clean.to_hex(),
                    enc(c.map(start_path).unwrap_or_default().as_os_str().as_bytes())
                );
            }
            let _ = write!(
                p.body,
                r#"<a class="button secondary" href="{b}/archive/{}">Download it (.tar.gz)</a></div>"#,
                clean.to_hex()
            );
        }
        None => p.push("<p>Every snapshot of this set looks suspicious: there is no clean one before the attack.</p>"),
    }
    p.push("</div>");
}

/// Two lists of a group's snapshots and a button: the changes between any
/// two of them.
fn compare_form(b: &str, p: &mut Page, group: &[(SnapshotId, SnapshotFile)]) {
    if group.len() < 2 {
        return;
    }
    let options = |selected: usize| {
        let mut o = String::new();
        for (i, (id, s)) in group.iter().enumerate().rev() {
            let _ = write!(
                o,
                r#"<option value="{}"{}>{} ({})</option>"#,
                id.to_hex(),
                if i == selected { " selected" } else { "" },
                html::time(s.time),
                id.short()
            );
        }
        o
    };
    let n = group.len();
    let _ = write!(
        p.body,
        r#"<form method="get" action="{b}/diff" class="actions"><span>Compare</span><select name="a" aria-label="older snapshot">{}</select><span>with</span><select name="b" aria-label="newer snapshot">{}</select><button type="submit">Show the changes</button></form>"#,
        options(n - 2),
        options(n - 1)
    );
}

/// Months with snapshots, newest first (at most 12), as day grids: a day
/// with snapshots links to its last one, red where one looks like an attack.
fn calendar(p: &mut Page, group: &[(SnapshotId, SnapshotFile)]) {
    let tz = jiff::tz::TimeZone::system();
    let mut days: BTreeMap<jiff::civil::Date, (SnapshotId, bool, usize)> = BTreeMap::new();
    for (id, s) in group {
        let d = s.time.to_zoned(tz.clone()).date();
        let e = days.entry(d).or_insert((*id, false, 0));
        e.0 = *id;
        e.1 |= suspicious(s);
        e.2 += 1;
    }
    let mut months: Vec<(i16, i8)> = days.keys().map(|d| (d.year(), d.month())).collect();
    months.dedup();
    p.push(r#"<div class="calendar">"#);
    for (y, m) in months.iter().rev().take(12) {
        let Ok(first) = jiff::civil::Date::new(*y, *m, 1) else {
            continue;
        };
        let _ = write!(
            p.body,
            r#"<div class="month"><div class="label">{}</div><div class="days">"#,
            first.strftime("%B %Y")
        );
        for _ in 0..first.weekday().to_monday_zero_offset() {
            p.push(r#"<span class="day"></span>"#);
        }
        for day in 1..=first.days_in_month() {
            let Ok(d) = jiff::civil::Date::new(*y, *m, day) else {
                continue;
            };
            match days.get(&d) {
                Some((id, bad, n)) => {
                    let _ = write!(
                        p.body,
                        r##"<a class="day{}" href="#s-{}" title="{} snapshot(s) on {}">{day}</a>"##,
                        if *bad { " bad" } else { "" },
                        id.short(),
                        n,
                        d
                    );
                }
                None => {
                    let _ = write!(p.body, r#"<span class="day">{day}</span>"#);
                }
            }
        }
        p.push("</div></div>");
    }
    p.push("</div>");
}

/// Where browsing a snapshot starts: the folder backed up, where it was
/// one, else the root.
fn start_path(s: &SnapshotFile) -> PathBuf {
    match s.paths.as_slice() {
        [one] if one.starts_with('/') => PathBuf::from(one),
        _ => PathBuf::from("/"),
    }
}

/// A link to a folder or file of a snapshot.
fn href(b: &str, page: &str, id: &SnapshotId, path: &Path) -> String {
    format!(
        "{b}/{page}{}path={}",
        if page == "versions" {
            format!("?snap={}&amp;", id.to_hex())
        } else {
            format!("/{}?", id.to_hex())
        },
        enc(path.as_os_str().as_bytes())
    )
}

/// `/ › home › me`, each a link to its folder.
fn crumbs(b: &str, id: &SnapshotId, path: &Path) -> String {
    let mut out = format!(
        r#"<div class="crumbs"><a href="{}">{}</a>"#,
        href(b, "snapshot", id, Path::new("/")),
        id.short()
    );
    let mut at = PathBuf::from("/");
    for c in path.components().skip(1) {
        at.push(c);
        let _ = write!(
            out,
            r#" / <a href="{}">{}</a>"#,
            href(b, "snapshot", id, &at),
            esc_bytes(c.as_os_str().as_bytes())
        );
    }
    out.push_str("</div>");
    out
}

fn folder(ui: &Ui, s: &Session, id: &str, q: &Query) -> Result<Page> {
    let b = ui.base();
    let (id, snap) = s.snapshot(id)?;
    let path = snap_path(q)?;
    let tree = match node_at(&s.repo, &snap, &id, &path)? {
        None => snap.tree,
        Some(Node {
            kind: NodeKind::Dir { subtree },
            ..
        }) => subtree,
        Some(_) => return versions_of(ui, s, &id.to_hex(), path),
    };
    let t = s.repo.read_tree(&tree)?;
    let mut nodes: Vec<&Node> = t.nodes.iter().collect();
    nodes.sort_by(|x, y| y.is_dir().cmp(&x.is_dir()).then(x.name.cmp(&y.name)));
    let pages = nodes.len().div_ceil(FOLDER_PAGE).max(1);
    let page = param_str(q, "page")
        .parse::<usize>()
        .unwrap_or(1)
        .clamp(1, pages);
    let title = if path == Path::new("/") {
        format!("Snapshot {} of {}", id.short(), html::time(snap.time))
    } else {
        html::display_bytes(path.as_os_str().as_bytes())
    };
    let mut p = Page::new(title);
    let _ = write!(
        p.body,
        r#"<p class="muted">Snapshot {} of {}, {} — {} {}</p>{}"#,
        id.short(),
        html::time(snap.time),
        esc(&snap.hostname),
        esc(&snap.paths.join(", ")),
        badges(&snap, None),
        crumbs(b, &id, &path)
    );
    if suspicious(&snap) {
        let _ = write!(
            p.body,
            r#"<div class="alert">This snapshot looks like a ransomware attack: its files may be encrypted. {}</div>"#,
            reasons(&snap)
        );
    }
    p.push(r#"<div class="actions">"#);
    let _ = write!(
        p.body,
        r#"<a class="button secondary" href="{}">Download this folder (.tar.gz)</a>"#,
        href(b, "archive", &id, &path)
    );
    if ui.restore_here() {
        let _ = write!(
            p.body,
            r#"<a class="button" href="{b}/restore?snap={}&amp;path={}">Restore this folder</a>"#,
            id.to_hex(),
            enc(path.as_os_str().as_bytes())
        );
    }
    let _ = write!(
        p.body,
        r#"<span class="muted">{} entries</span></div>"#,
        nodes.len()
    );
    pager(&mut p, &href(b, "snapshot", &id, &path), page, pages);
    p.push(r#"<table><thead><tr><th>Name</th><th class="num">Size</th><th>Modified</th><th>Mode</th><th></th></tr></thead><tbody>"#);
    for n in nodes
        .iter()
        .skip((page - 1) * FOLDER_PAGE)
        .take(FOLDER_PAGE)
    {
        let child = path.join(OsStr::from_bytes(&n.name));
        let name = esc_bytes(&n.name);
        let (cell, size, actions) = match &n.kind {
            NodeKind::Dir { .. } => (
                format!(
                    r#"<a href="{}">{name}/</a>"#,
                    href(b, "snapshot", &id, &child)
                ),
                String::new(),
                format!(
                    r#"<a href="{}">Download</a>"#,
                    href(b, "archive", &id, &child)
                ),
            ),
            NodeKind::File { .. } => (
                format!(
                    r#"<a href="{}">{name}</a>"#,
                    href(b, "versions", &id, &child)
                ),
                html::size(n.size),
                format!(
                    r#"<a href="{}">Download</a> · <a href="{}">Versions</a>"#,
                    href(b, "file", &id, &child),
                    href(b, "versions", &id, &child)
                ),
            ),
            NodeKind::Symlink { target } => (
                format!(
                    r#"{name} <span class="muted">→ {}</span>"#,
                    esc_bytes(target)
                ),
                String::new(),
                String::new(),
            ),
            _ => (name, String::new(), String::new()),
        };
        let _ = write!(
            p.body,
            r#"<tr><td class="name">{cell}</td><td class="num">{size}</td><td>{}</td><td><code>{}</code></td><td>{actions}</td></tr>"#,
            html::node_time(n.mtime),
            rewind_core::stats::mode_string(n)
        );
    }
    p.push("</tbody></table>");
    pager(&mut p, &href(b, "snapshot", &id, &path), page, pages);
    Ok(p)
}

fn pager(p: &mut Page, link: &str, page: usize, pages: usize) {
    if pages <= 1 {
        return;
    }
    p.push(r#"<div class="pager">"#);
    if page > 1 {
        let _ = write!(
            p.body,
            r#"<a href="{link}&amp;page={}">← Previous</a>"#,
            page - 1
        );
    }
    let _ = write!(p.body, "<span>Page {page} of {pages}</span>");
    if page < pages {
        let _ = write!(
            p.body,
            r#"<a href="{link}&amp;page={}" rel="next">Next →</a>"#,
            page + 1
        );
    }
    p.push("</div>");
}

/// What makes two versions of a file the same.
fn content_key(n: &Node) -> Option<(Vec<BlobId>, u64, rewind_core::format::tree::Time)> {
    match &n.kind {
        NodeKind::File { content, .. } => Some((content.clone(), n.size, n.mtime)),
        _ => None,
    }
}

fn versions(ui: &Ui, s: &Session, q: &Query) -> Result<Page> {
    versions_of(ui, s, param_str(q, "snap"), snap_path(q)?)
}

fn versions_of(ui: &Ui, s: &Session, id: &str, path: PathBuf) -> Result<Page> {
    let b = ui.base();
    let (id, snap) = s.snapshot(id)?;
    node_at(&s.repo, &snap, &id, &path)?;
    let key = group_key(&snap);
    let snaps = s.snapshots()?;
    // Each snapshot of this machine's backups of these paths, oldest first:
    // runs of snapshots holding the same content are one version.
    struct Version {
        first: (SnapshotId, jiff::Timestamp),
        last: jiff::Timestamp,
        node: Option<Node>,
        count: usize,
    }
    let mut runs: Vec<Version> = Vec::new();
    // The same folder is often the same tree in many snapshots: each is
    // looked into once.
    let mut seen: HashMap<BlobId, Option<Node>> = HashMap::new();
    for (sid, s2) in snaps.iter().filter(|(_, x)| group_key(x) == key) {
        let node = match seen.get(&s2.tree) {
            Some(n) => n.clone(),
            None => {
                let n = lookup(&s.repo, &s2.tree, &path)?;
                seen.insert(s2.tree, n.clone());
                n
            }
        };
        let k = node.as_ref().and_then(content_key);
        match runs.last_mut() {
            Some(v)
                if v.node.as_ref().and_then(content_key) == k
                    && (k.is_some() || v.node.is_none()) =>
            {
                v.last = s2.time;
                v.count += 1;
            }
            _ => runs.push(Version {
                first: (*sid, s2.time),
                last: s2.time,
                node,
                count: 1,
            }),
        }
    }
    let name = path
        .file_name()
        .map(|n| html::display_bytes(n.as_bytes()))
        .unwrap_or_else(|| "/".into());
    let mut p = Page::new(format!("Versions of {name}"));
    let parent = path.parent().unwrap_or(Path::new("/"));
    let _ = write!(
        p.body,
        r#"<p class="muted">{} on {} — every version kept, newest first.</p>{}"#,
        esc(&html::display_bytes(path.as_os_str().as_bytes())),
        esc(&snap.hostname),
        crumbs(b, &id, parent)
    );
    let kept = runs.iter().filter(|v| v.node.is_some()).count();
    let _ = write!(
        p.body,
        r#"<p>{kept} version(s) in {} snapshot(s).</p>"#,
        runs.iter().map(|v| v.count).sum::<usize>()
    );
    p.push(r#"<table><thead><tr><th>First backed up</th><th>Last backed up</th><th class="num">Size</th><th>Modified</th><th class="num">Snapshots</th><th></th></tr></thead><tbody>"#);
    for v in runs.iter().rev() {
        let (sid, from) = v.first;
        let cls = snaps
            .iter()
            .find(|(x, _)| *x == sid)
            .filter(|(_, x)| suspicious(x))
            .map_or("", |_| "suspicious");
        match &v.node {
            Some(n) if n.is_file() => {
                let _ = write!(
                    p.body,
                    r#"<tr class="{cls}"><td>{}</td><td>{}</td><td class="num">{}</td><td>{}</td><td class="num">{}</td><td><a class="download" href="{}">Download</a>{} · <a href="{}">Folder</a></td></tr>"#,
                    html::time(from),
                    html::time(v.last),
                    html::size(n.size),
                    html::node_time(n.mtime),
                    v.count,
                    href(b, "file", &sid, &path),
                    if ui.restore_here() {
                        format!(
                            r#" · <a href="{b}/restore?snap={}&amp;path={}">Restore</a>"#,
                            sid.to_hex(),
                            enc(path.as_os_str().as_bytes())
                        )
                    } else {
                        String::new()
                    },
                    href(b, "snapshot", &sid, parent)
                );
            }
            Some(n) => {
                let _ = write!(
                    p.body,
                    r#"<tr class="{cls}"><td>{}</td><td>{}</td><td colspan="2" class="muted">not a file here ({})</td><td class="num">{}</td><td><a href="{}">Open</a></td></tr>"#,
                    html::time(from),
                    html::time(v.last),
                    n.type_char(),
                    v.count,
                    href(b, "snapshot", &sid, &path)
                );
            }
            None => {
                let _ = write!(
                    p.body,
                    r#"<tr><td>{}</td><td>{}</td><td colspan="2" class="muted">absent (deleted or not yet made)</td><td class="num">{}</td><td></td></tr>"#,
                    html::time(from),
                    html::time(v.last),
                    v.count
                );
            }
        }
    }
    p.push("</tbody></table>");
    Ok(p)
}

/// Matches a name: `*` and `?` as in a shell where the text has them, else
/// the text anywhere in the name; case is ignored.
struct NameMatch {
    glob: Option<ignore::gitignore::Gitignore>,
    text: String,
}

impl NameMatch {
    fn new(q: &str) -> Result<NameMatch> {
        let text = q.to_lowercase();
        let glob = if q.contains(['*', '?', '[']) {
            let mut g = ignore::gitignore::GitignoreBuilder::new("/");
            g.case_insensitive(true)
                .map_err(|e| Error::InvalidInput(e.to_string()))?;
            g.add_line(None, q)
                .map_err(|e| Error::InvalidInput(format!("bad pattern {q:?}: {e}")))?;
            Some(g.build().map_err(|e| Error::InvalidInput(e.to_string()))?)
        } else {
            None
        };
        Ok(NameMatch { glob, text })
    }

    fn matches(&self, path: &Path, n: &Node) -> bool {
        match &self.glob {
            Some(g) => g.matched(path, n.is_dir()).is_ignore(),
            None => String::from_utf8_lossy(&n.name)
                .to_lowercase()
                .contains(&self.text),
        }
    }
}

/// What a search keeps of a hit.
#[derive(Clone)]
struct Hit {
    path: PathBuf,
    dir: bool,
    file: bool,
    size: u64,
    mtime: rewind_core::format::tree::Time,
}

/// One folder (a tree at a path) as a search saw it: its own hits and its
/// subfolders. Folders shared by snapshots are read once.
struct Seen {
    hits: Vec<Hit>,
    subfolders: Vec<(BlobId, PathBuf)>,
}

/// Hits one search keeps at most (beyond them it stops and says so).
const SEARCH_MAX_HITS: usize = 20_000;

/// How long one search may read trees.
const SEARCH_TIME: std::time::Duration = std::time::Duration::from_secs(10);

struct Search<'a> {
    repo: &'a Repository,
    m: NameMatch,
    seen: SearchMemo,
    kept: usize,
    started: std::time::Instant,
    /// Why it stopped early, if it did.
    cut: Option<String>,
}

impl Search<'_> {
    /// Reads the folders below `tree` that were not read yet.
    fn visit(&mut self, tree: BlobId, base: PathBuf) -> Result<()> {
        let mut stack = vec![(tree, base)];
        while let Some((tree, base)) = stack.pop() {
            if self.cut.is_some() || self.seen.contains_key(&(tree, base.clone())) {
                continue;
            }
            if self.started.elapsed() > SEARCH_TIME {
                self.cut = Some(format!(
                    "the search stopped after {} s",
                    SEARCH_TIME.as_secs()
                ));
                continue;
            }
            let t = self.repo.read_tree(&tree)?;
            let mut here = Seen {
                hits: Vec::new(),
                subfolders: Vec::new(),
            };
            for n in &t.nodes {
                let p = base.join(OsStr::from_bytes(&n.name));
                if self.kept < SEARCH_MAX_HITS && self.m.matches(&p, n) {
                    self.kept += 1;
                    here.hits.push(Hit {
                        path: p.clone(),
                        dir: n.is_dir(),
                        file: n.is_file(),
                        size: n.size,
                        mtime: n.mtime,
                    });
                }
                if let NodeKind::Dir { subtree } = &n.kind {
                    here.subfolders.push((*subtree, p.clone()));
                    stack.push((*subtree, p));
                }
            }
            if self.kept >= SEARCH_MAX_HITS {
                self.cut = Some(format!("over {SEARCH_MAX_HITS} matches"));
            }
            self.seen.insert((tree, base), Arc::new(here));
        }
        Ok(())
    }

    /// Every hit of one snapshot (after [`Search::visit`] of its root).
    fn hits_of(&self, root: BlobId, f: &mut dyn FnMut(&Hit)) {
        let mut stack = vec![(root, PathBuf::from("/"))];
        while let Some(key) = stack.pop() {
            if let Some(seen) = self.seen.get(&key) {
                seen.hits.iter().for_each(&mut *f);
                stack.extend(seen.subfolders.iter().cloned());
            }
        }
    }
}

fn search(ui: &Ui, s: &Session, q: &Query) -> Result<Page> {
    let b = ui.base();
    let text = param_str(q, "q").trim().to_string();
    let mut p = Page::new("Search");
    let _ = write!(
        p.body,
        r#"<form method="get" action="{b}/search"><label for="q">A file or folder name, or part of one (<code>*.xlsx</code> works too)</label><input type="search" id="q" name="q" value="{}" autofocus> <button type="submit">Search every snapshot</button></form>"#,
        esc(&text)
    );
    if text.is_empty() {
        return Ok(p);
    }
    let snaps = s.snapshots()?;
    let mut search = Search {
        repo: &s.repo,
        m: NameMatch::new(&text)?,
        seen: HashMap::new(),
        kept: 0,
        started: std::time::Instant::now(),
        cut: None,
    };
    // Path -> (newest snapshot holding it, its hit, snapshots holding it),
    // newest snapshots first, so that a search cut short has the recent.
    let mut hits: BTreeMap<PathBuf, (SnapshotId, jiff::Timestamp, Hit, usize)> = BTreeMap::new();
    for (id, snap) in snaps.iter().rev() {
        search.visit(snap.tree, PathBuf::from("/"))?;
        search.hits_of(snap.tree, &mut |h| {
            hits.entry(h.path.clone())
                .or_insert_with(|| (*id, snap.time, h.clone(), 0))
                .3 += 1;
        });
        if search.cut.is_some() {
            break;
        }
    }
    if let Some(why) = &search.cut {
        let _ = write!(
            p.body,
            r#"<div class="note">Not every snapshot was searched: {}. Give more of the name to narrow it.</div>"#,
            esc(why)
        );
    }
    let _ = write!(
        p.body,
        "<h2>{} path(s) match {}</h2>",
        hits.len(),
        esc(&format!("{text:?}"))
    );
    if hits.is_empty() {
        p.push(r#"<p class="muted">No snapshot holds a matching name. Try a shorter part of the name.</p>"#);
        return Ok(p);
    }
    p.push(r#"<table><thead><tr><th>Path</th><th class="num">Size</th><th>Modified</th><th>Newest snapshot</th><th class="num">In snapshots</th></tr></thead><tbody>"#);
    for (path, (id, t, n, count)) in hits.iter().take(SEARCH_PATHS) {
        let link = if n.dir {
            href(b, "snapshot", id, path)
        } else {
            href(b, "versions", id, path)
        };
        let _ = write!(
            p.body,
            r#"<tr><td class="name"><a href="{link}">{}</a></td><td class="num">{}</td><td>{}</td><td>{}</td><td class="num">{count}</td></tr>"#,
            esc_bytes(path.as_os_str().as_bytes()),
            if n.file {
                html::size(n.size)
            } else {
                String::new()
            },
            html::node_time(n.mtime),
            html::time(*t),
        );
    }
    p.push("</tbody></table>");
    if hits.len() > SEARCH_PATHS {
        let _ = write!(
            p.body,
            r#"<p class="muted">The first {SEARCH_PATHS} of {} paths; give more of the name to narrow it.</p>"#,
            hits.len()
        );
    }
    Ok(p)
}

fn diff(ui: &Ui, s: &Session, q: &Query) -> Result<Page> {
    let b = ui.base();
    let (a_id, a) = s.snapshot(param_str(q, "a"))?;
    let (b_id, bs) = s.snapshot(param_str(q, "b"))?;
    let changes = browse::diff(&s.repo, &a.tree, &bs.tree)?;
    let mut p = Page::new(format!(
        "Changes from {} to {}",
        html::time(a.time),
        html::time(bs.time)
    ));
    let count = |c: Change| changes.iter().filter(|(_, x)| *x == c).count();
    let _ = write!(
        p.body,
        r#"<p>From snapshot <a href="{b}/snapshot/{}">{}</a> to <a href="{b}/snapshot/{}">{}</a>: {} added, {} removed, {} modified, {} with other metadata only.</p>"#,
        a_id.to_hex(),
        a_id.short(),
        b_id.to_hex(),
        b_id.short(),
        count(Change::Added),
        count(Change::Removed),
        count(Change::Modified),
        count(Change::Metadata)
    );
    if suspicious(&bs) {
        let _ = write!(
            p.body,
            r#"<div class="alert">The newer snapshot looks like a ransomware attack. {}</div>"#,
            reasons(&bs)
        );
    }
    p.push(r#"<table><thead><tr><th>Change</th><th>Path</th></tr></thead><tbody>"#);
    for (path, c) in changes.iter().take(DIFF_ROWS) {
        let (what, id) = match c {
            Change::Added => ("added", &b_id),
            Change::Removed => ("removed", &a_id),
            Change::Modified => ("modified", &b_id),
            Change::Metadata => ("metadata", &b_id),
        };
        let _ = write!(
            p.body,
            r#"<tr><td>{what}</td><td class="name"><a href="{}">{}</a></td></tr>"#,
            href(b, "versions", id, path),
            esc_bytes(path.as_os_str().as_bytes())
        );
    }
    p.push("</tbody></table>");
    if changes.len() > DIFF_ROWS {
        let _ = write!(
            p.body,
            r#"<p class="muted">The first {DIFF_ROWS} of {} changes; <code>rewind diff {} {}</code> lists them all.</p>"#,
            changes.len(),
            a_id.short(),
            b_id.short()
        );
    }
    Ok(p)
}

fn stats(ui: &Ui, s: &Session) -> Result<Page> {
    let st = rewind_core::stats::stats(&s.repo)?;
    let mut p = Page::new("Repository");
    let _ = write!(
        p.body,
        r#"<table><tbody>
<tr><th>Location</th><td>{}</td></tr>
<tr><th>Snapshots</th><td>{}</td></tr>
<tr><th>Restoring them all would write</th><td>{}</td></tr>
<tr><th>Unique data</th><td>{}</td></tr>
<tr><th>Stored (compressed, encrypted)</th><td>{}</td></tr>
<tr><th>Deduplication</th><td>{:.1}×</td></tr>
<tr><th>Compression</th><td>{:.2}×</td></tr>
<tr><th>Packs</th><td>{}</td></tr>
</tbody></table>"#,
        esc(&s.label),
        st.snapshots,
        html::size(st.restore_size),
        html::size(st.unique_data),
        html::size(st.pack_bytes),
        st.dedup_ratio,
        st.compression_ratio,
        st.packs
    );
    p.push("<h2>Restore tests</h2>");
    match rewind_core::proof::proofs(&s.repo) {
        Ok((mut proofs, _)) if !proofs.is_empty() => {
            proofs.sort_by_key(|p| std::cmp::Reverse(p.time));
            p.push(r#"<table><thead><tr><th>When</th><th>Snapshot</th><th>Result</th><th class="num">Files tested</th><th class="num">Bytes</th></tr></thead><tbody>"#);
            for pr in proofs.iter().take(10) {
                let _ = write!(
                    p.body,
                    r#"<tr><td>{}</td><td>{}</td><td>{}</td><td class="num">{} of {}</td><td class="num">{}</td></tr>"#,
                    html::time(pr.time),
                    pr.snapshot.short(),
                    if pr.passed() {
                        r#"<span class="badge ok">passed</span>"#.to_string()
                    } else {
                        format!(
                            r#"<span class="badge bad">failed</span> {}"#,
                            esc(&pr
                                .failures
                                .first()
                                .map(|f| format!("{f:?}"))
                                .unwrap_or_default())
                        )
                    },
                    pr.tested,
                    pr.files,
                    html::size(pr.bytes)
                );
            }
            p.push("</tbody></table>");
        }
        _ => p.push(r#"<p class="muted">No restore test is recorded. <code>rewind verify-restore</code> runs one, and the agent runs them on a schedule.</p>"#),
    }
    p.push("<h2>Last check</h2>");
    let checks: Vec<(String, String)> = ui
        .agent()
        .and_then(|a| a())
        .and_then(|v| v.get("jobs").and_then(|j| j.as_array()).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|j| {
            let c = j.get("last_check")?;
            if c.is_null() {
                return None;
            }
            Some((j.get("job")?.as_str()?.to_string(), run_text(Some(c))))
        })
        .collect();
    if checks.is_empty() {
        p.push(r#"<p class="muted">No check is recorded here. <code>rewind check</code> checks the repository, and the agent runs checks on a schedule.</p>"#);
    } else {
        for (job, c) in checks {
            let _ = write!(p.body, "<p>Job {}: {}</p>", esc(&job), esc(&c));
        }
    }
    Ok(p)
}

/// A value of the agent's status for people: a time in this zone, a run
/// as its time, outcome and snapshot.
fn run_text(v: Option<&serde_json::Value>) -> String {
    use serde_json::Value;
    let when = |v: Option<&Value>| {
        v.and_then(|t| t.as_str())
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(html::time)
    };
    match v {
        None | Some(Value::Null) => "—".into(),
        Some(Value::String(s)) => when(v).unwrap_or_else(|| s.clone()),
        Some(Value::Object(o)) => {
            let at = when(o.get("end").or(o.get("start"))).unwrap_or_default();
            let outcome = match o.get("outcome") {
                Some(Value::String(s)) => s.to_lowercase(),
                Some(x) => x.to_string(),
                None => String::new(),
            };
            let snap = o
                .get("snapshot")
                .and_then(|s| s.as_str())
                .map(|s| format!(", snapshot {}", s.chars().take(8).collect::<String>()))
                .unwrap_or_default();
            format!("{at} ({outcome}{snap})")
        }
        Some(x) => x.to_string(),
    }
}

fn agent(ui: &Ui) -> Result<Page> {
    let mut p = Page::new("Scheduled jobs");
    let Some(v) = ui.agent().and_then(|a| a()) else {
        p.push(r#"<p class="muted">No agent is configured on this machine. <code>rewind agent config init</code> writes one.</p>"#);
        return Ok(p);
    };
    let healthy = v.get("healthy").and_then(|h| h.as_bool()).unwrap_or(false);
    p.push(if healthy {
        r#"<div class="good">Every job is healthy.</div>"#
    } else {
        r#"<div class="alert">Some jobs need attention: see below.</div>"#
    });
    p.push(r#"<table><thead><tr><th>Job</th><th>State</th><th>Last run</th><th>Last success</th><th>Next run</th><th>Last check</th><th>Last restore test</th></tr></thead><tbody>"#);
    let text = |j: &serde_json::Value, k: &str| -> String { run_text(j.get(k)) };
    for j in v
        .get("jobs")
        .and_then(|j| j.as_array())
        .into_iter()
        .flatten()
    {
        let problems: Vec<String> = j
            .get("problems")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(esc))
            .collect();
        let state = if problems.is_empty() {
            r#"<span class="badge ok">healthy</span>"#.to_string()
        } else {
            format!(
                r#"<span class="badge bad">needs attention</span><ul class="reasons"><li>{}</li></ul>"#,
                problems.join("</li><li>")
            )
        };
        let _ = write!(
            p.body,
            "<tr><td>{}</td><td>{state}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&text(j, "job")),
            esc(&text(j, "last_run")),
            esc(&text(j, "last_success")),
            esc(&text(j, "next_run")),
            esc(&text(j, "last_check")),
            esc(&text(j, "last_proven_restore")),
        );
    }
    p.push("</tbody></table>");
    Ok(p)
}
