//! The inboxes at work in `rewind serve`: `/dav/NAME/` answered by
//! dav-server over `DATA/dav/NAME/files` behind the inbox's login, and the
//! snapshots, taken once uploads have settled and on a schedule.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use dav_server::DavHandler;
use rewind_core::archiver::{self, BackupOptions, Progress};
use rewind_core::Result;

use super::{files_dir, Inbox};
use crate::http::{log, App};

/// When the inboxes are snapshotted.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// Quiet time after the last change before a snapshot.
    pub settle: Duration,
    /// Longest time between two snapshots, changes or not.
    pub every: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            settle: Duration::from_secs(60),
            every: Duration::from_secs(24 * 3600),
        }
    }
}

/// The inboxes of a running server.
pub(crate) struct Inboxes {
    data: Option<PathBuf>,
    schedule: Schedule,
    live: Mutex<HashMap<String, Live>>,
}

/// What the server knows of one inbox while it runs.
struct Live {
    handler: DavHandler,
    /// A change not in a snapshot yet (the server's start counts as one:
    /// uploads may have come while it was down).
    changed: bool,
    /// The last change.
    last_change: Instant,
    /// Changes counted, to tell whether any came during a snapshot.
    generation: u64,
    last_snapshot: Option<Instant>,
    running: bool,
    /// After a failed snapshot: not again before this.
    not_before: Option<Instant>,
    /// Bytes its files take (counted when needed, dropped at each change).
    used: Option<u64>,
}

impl Inboxes {
    pub(crate) fn new(data: Option<PathBuf>, schedule: Schedule) -> Inboxes {
        Inboxes {
            data,
            schedule,
            live: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `f` on inbox `name`'s live state, made at first use.
    fn with<T>(&self, data: &Path, name: &str, f: impl FnOnce(&mut Live) -> T) -> T {
        let mut live = self.live.lock().expect("inboxes");
        let l = live.entry(name.to_string()).or_insert_with(|| {
            let now = Instant::now();
            Live {
                handler: DavHandler::builder()
                    .filesystem(dav_server::localfs::LocalFs::new(
                        files_dir(data, name),
                        false,
                        false,
                        false,
                    ))
                    .locksystem(dav_server::memls::MemLs::new())
                    .strip_prefix(format!("/dav/{name}"))
                    .hide_symlinks(true)
                    .build_handler(),
                changed: true,
                last_change: now,
                generation: 0,
                last_snapshot: None,
                running: false,
                not_before: None,
                used: None,
            }
        });
        f(l)
    }
}

/// Methods that change what an inbox holds.
fn changes(m: &Method) -> bool {
    matches!(
        m.as_str(),
        "PUT" | "DELETE" | "MKCOL" | "COPY" | "MOVE" | "PROPPATCH"
    )
}

fn answer(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut r = (status, format!("{}\n", msg.into())).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The password of a Basic login for user `name`, if that is what was sent.
fn basic_password(headers: &HeaderMap, name: &str) -> Option<Vec<u8>> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let colon = raw.iter().position(|&b| b == b':')?;
    (&raw[..colon] == name.as_bytes()).then(|| raw[colon + 1..].to_vec())
}

/// Answers a request under `/dav/`.
pub(crate) async fn handle(app: Arc<App>, req: Request) -> Response {
    let Some(data) = app.inboxes().data.clone() else {
        return answer(
            StatusCode::NOT_FOUND,
            "this server keeps no phone inboxes: they need its --data DIR",
        );
    };
    // `/dav/NAME` or `/dav/NAME/…`: the name is the whole first segment.
    let name = req
        .uri()
        .path()
        .strip_prefix("/dav/")
        .unwrap_or("")
        .split('/')
        .next()
        .unwrap_or("")
        .to_string();
    if !has_no_dots(req.uri().path()) {
        return answer(
            StatusCode::BAD_REQUEST,
            "a path with a `.` or `..` segment: give the path itself",
        );
    }
    let inbox = {
        let (d, n) = (data.clone(), name.clone());
        match tokio::task::spawn_blocking(move || super::load(&d, &n)).await {
            Ok(Ok(Some(i))) => i,
            Ok(Ok(None)) => {
                return answer(
                    StatusCode::NOT_FOUND,
                    format!(
                        "no inbox {name:?} on this server (`rewind serve dav list` shows them)"
                    ),
                )
            }
            Ok(Err(e)) => {
                log(&format!("inbox {name}: {e}"));
                return answer(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("inbox {name}: {e}"),
                );
            }
            Err(e) => return answer(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    };
    let authorized =
        basic_password(req.headers(), &inbox.name).is_some_and(|p| inbox.password_matches(&p));
    if !authorized {
        let mut r = answer(
            StatusCode::UNAUTHORIZED,
            format!(
                "inbox {}: log in with user {} and the password `rewind serve dav add` printed",
                inbox.name, inbox.name
            ),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&format!(
                "Basic realm=\"rewind inbox {}\", charset=\"UTF-8\"",
                inbox.name
            ))
            .expect("a valid header"),
        );
        return r;
    }
    // COPY and MOVE name their target in a header: it must be in this
    // inbox too (dav-server checks only that it starts with the prefix).
    if let Some(dest) = req.headers().get("destination") {
        if !inside(dest, &inbox.name) {
            return answer(
                StatusCode::FORBIDDEN,
                format!(
                    "the Destination of a COPY or MOVE must be in this inbox, /dav/{}/",
                    inbox.name
                ),
            );
        }
    }
    let method = req.method().clone();
    let req = match admit(&app, &data, &inbox, req).await {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    let handler = app
        .inboxes()
        .with(&data, &inbox.name, |l| l.handler.clone());
    let resp = handler.handle(req).await;
    if changes(&method) && (resp.status().is_success() || method == Method::PUT) {
        // A failed PUT may have left part of a file: counted as a change.
        app.inboxes().with(&data, &inbox.name, |l| {
            let now = Instant::now();
            l.changed = true;
            l.last_change = now;
            l.generation += 1;
            l.used = None;
        });
    }
    resp.map(Body::new)
}

/// True when no segment of `path`, percent-decoded, is `.` or `..` (nor
/// holds a NUL or a backslash).
fn has_no_dots(path: &str) -> bool {
    path.split('/').all(|seg| {
        let seg: Vec<u8> = percent_encoding::percent_decode_str(seg).collect();
        seg != b".."
            && seg != b"."
            && !seg.contains(&0)
            && !seg.contains(&b'\\')
            && !seg.contains(&b'/')
    })
}

/// True when a Destination header (a URL or an absolute path) names a
/// place in inbox `name`: its path is `/dav/NAME` or below `/dav/NAME/`,
/// with no `.` or `..` segment.
fn inside(dest: &HeaderValue, name: &str) -> bool {
    let Ok(d) = dest.to_str() else {
        return false;
    };
    let path = match d.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => d,
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let root = format!("/dav/{name}");
    has_no_dots(path) && (path == root || path.starts_with(&format!("{root}/")))
}

/// An upload or a copy within the inbox's size limit: refused with 507
/// when what it adds (a PUT's announced length, the size of a COPY's
/// source) does not fit; a PUT's body is cut off where the room ends. What
/// is admitted is counted at once, so uploads side by side cannot each
/// take the whole room (the count is taken again from the files after
/// each change).
async fn admit(
    app: &Arc<App>,
    data: &Path,
    inbox: &Inbox,
    req: Request,
) -> std::result::Result<Request, Response> {
    let copy = req.method().as_str() == "COPY";
    let Some(max) = inbox
        .max_size
        .filter(|_| req.method() == Method::PUT || copy)
    else {
        return Ok(req);
    };
    let used = match app.inboxes().with(data, &inbox.name, |l| l.used) {
        Some(u) => u,
        None => {
            let dir = files_dir(data, &inbox.name);
            let u = tokio::task::spawn_blocking(move || size_of(&dir))
                .await
                .unwrap_or(0);
            app.inboxes().with(data, &inbox.name, |l| l.used = Some(u));
            u
        }
    };
    let adds: u64 = if copy {
        // The source, inside the inbox (the path has no `..`).
        let rel: Vec<u8> = percent_encoding::percent_decode_str(
            req.uri()
                .path()
                .strip_prefix(&format!("/dav/{}", inbox.name))
                .unwrap_or(""),
        )
        .collect();
        let rel = Path::new(std::ffi::OsStr::from_bytes(&rel));
        let src = files_dir(data, &inbox.name).join(rel.strip_prefix("/").unwrap_or(rel));
        tokio::task::spawn_blocking(move || match std::fs::symlink_metadata(&src) {
            Ok(m) if m.is_dir() => size_of(&src),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .await
        .unwrap_or(0)
    } else {
        req.headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let room = max.saturating_sub(used);
    if adds > room || room == 0 {
        return Err(answer(
            StatusCode::INSUFFICIENT_STORAGE,
            format!(
                "inbox {} is full: {} of {} used; its files are in the snapshots, so the phone may delete uploaded ones, or the operator raises the limit",
                inbox.name,
                rewind_core::stats::human_bytes(used),
                rewind_core::stats::human_bytes(max)
            ),
        ));
    }
    app.inboxes()
        .with(data, &inbox.name, |l| l.used = Some(used + adds));
    if copy {
        return Ok(req);
    }
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    Ok(req.map(|b| Body::new(http_body_util::Limited::new(b, room))))
}

/// Bytes the files under `dir` take (what cannot be read counts nothing).
fn size_of(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => size_of(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// Snapshots the inboxes as they come due, one at a time per inbox, until
/// the server stops.
pub(crate) async fn run(app: Arc<App>) {
    let Some(data) = app.inboxes().data.clone() else {
        return;
    };
    let schedule = app.inboxes().schedule;
    let every = (schedule.settle / 2).clamp(Duration::from_millis(200), Duration::from_secs(5));
    let mut tick = tokio::time::interval(every);
    let mut said: Vec<String> = Vec::new();
    loop {
        tick.tick().await;
        let d = data.clone();
        let (inboxes, problems) = match tokio::task::spawn_blocking(move || super::list(&d)).await {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                log(&format!("reading the inboxes: {e}"));
                continue;
            }
            Err(_) => continue,
        };
        // One bad entry stops no other inbox; it is said once, not at
        // every tick.
        if problems != said {
            for p in &problems {
                log(&format!("{p}; its snapshots wait until it is fixed"));
            }
            said = problems;
        }
        for inbox in inboxes {
            let due = app
                .inboxes()
                .with(&data, &inbox.name, |l| due(l, &schedule));
            let Some(generation) = due else { continue };
            let (app, data) = (app.clone(), data.clone());
            tokio::task::spawn_blocking(move || {
                // A panic is a failed snapshot, not an inbox stuck "running".
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    snapshot(&app, &data, &inbox)
                }))
                .unwrap_or_else(|_| {
                    Err(rewind_core::Error::io(
                        "snapshot",
                        std::io::Error::other("it panicked (a bug: please report it)"),
                    ))
                });
                if let Err(e) = &result {
                    log(&format!(
                        "inbox {}: the snapshot into repository {} failed: {e}; trying again in {} s",
                        inbox.name,
                        inbox.repo,
                        retry_after(&schedule).as_secs()
                    ));
                }
                app.inboxes().with(&data, &inbox.name, |l| {
                    done(l, generation, result.is_ok(), &schedule)
                });
            });
        }
    }
}

/// Whether a snapshot is due now; if so it is marked running, and the
/// generation it starts from is returned.
fn due(l: &mut Live, s: &Schedule) -> Option<u64> {
    let now = Instant::now();
    if l.running || l.not_before.is_some_and(|t| now < t) {
        return None;
    }
    let settled = l.changed && now.duration_since(l.last_change) >= s.settle;
    let scheduled = l
        .last_snapshot
        .is_some_and(|t| now.duration_since(t) >= s.every);
    if !(settled || scheduled) {
        return None;
    }
    l.running = true;
    Some(l.generation)
}

fn retry_after(s: &Schedule) -> Duration {
    s.settle.max(Duration::from_secs(30))
}

/// After a snapshot: changes that came during it wait for the next one.
fn done(l: &mut Live, generation: u64, ok: bool, s: &Schedule) {
    l.running = false;
    if ok {
        l.last_snapshot = Some(Instant::now());
        l.not_before = None;
        if l.generation == generation {
            l.changed = false;
        }
    } else {
        l.not_before = Some(Instant::now() + retry_after(s));
    }
}

/// One snapshot of `inbox` into its repository: the files' backup with
/// the ransomware scan against the last one, then the repository's alert
/// when the scan calls it suspicious.
fn snapshot(app: &Arc<App>, data: &Path, inbox: &Inbox) -> Result<()> {
    let repo = super::open(app, inbox)?;
    let mut opts = BackupOptions::new(vec![files_dir(data, &inbox.name)]);
    opts.label = Some(inbox.label());
    let settings = repo.settings()?;
    let progress = Progress::default();
    let outcome = archiver::backup(&repo, &opts, &progress)?;
    for w in &outcome.warnings {
        log(&format!(
            "inbox {}: {}: {}",
            inbox.name,
            w.path.display(),
            w.message
        ));
    }
    let after = rewind_core::after_backup::run(
        &repo,
        &outcome,
        &rewind_core::after_backup::AfterBackup {
            copy_to: None,
            notify_url: settings.and_then(|s| s.notify_url),
            deliver: &rewind_backends::notify::post_json,
        },
    );
    let s = outcome.summary();
    let verdict = match &outcome.snapshot.scan {
        Some(scan) if after.suspicious => format!("; SUSPICIOUS: {}", scan.reasons.join("; ")),
        _ => String::new(),
    };
    log(&format!(
        "inbox {}: snapshot {} in repository {}: {} new, {} changed, {} unchanged files{verdict}",
        inbox.name,
        outcome
            .snapshot_id
            .map(|i| i.short())
            .unwrap_or_else(|| "-".into()),
        inbox.repo,
        s.files_new,
        s.files_changed,
        s.files_unchanged
    ));
    if let Some(Err(e)) = &after.alert {
        log(&format!(
            "inbox {}: the alert could not be sent: {e}",
            inbox.name
        ));
    }
    Ok(())
}
