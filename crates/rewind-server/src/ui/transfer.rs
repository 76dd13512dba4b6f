//! What leaves the repository through the UI: a file's bytes, a folder as
//! a streamed `.tar.gz`, and (`rewind ui` only) a restore to a folder of
//! this machine, run as a job whose page shows its progress.

use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;

use rewind_core::format::tree::{Node, NodeKind, Time};
use rewind_core::progress::Progress;
use rewind_core::restorer::{self, Overwrite, RestoreOptions, RestoreStart, RestoreStats};
use rewind_core::{Error, Result};

use super::html::{self, enc, esc, Page};
use super::pages::{node_at, snap_path};
use super::{param_str, Session, Ui};

type Query = Vec<(String, Vec<u8>)>;

/// Bytes sent to the browser at a time.
const PIECE: usize = 256 * 1024;

/// A body fed by a blocking thread: pieces of bytes, or an error that cuts
/// the download (the browser then reports it failed, never a short file as
/// a whole one: the length was announced, or the gzip stream is cut).
fn channel_body() -> (tokio::sync::mpsc::Sender<std::io::Result<Bytes>>, Body) {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|piece| (piece, rx))
    });
    (tx, Body::from_stream(stream))
}

/// `attachment; filename=...` for any name: an ASCII fallback and the
/// UTF-8 name (RFC 6266).
fn disposition(name: &[u8]) -> HeaderValue {
    let ascii: String = String::from_utf8_lossy(name)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._- ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let v = format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        percent_encoding::percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
    );
    HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("attachment"))
}

fn download(body: Body, name: &[u8], mime: &'static str, len: Option<u64>) -> Response {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    h.insert(header::CONTENT_DISPOSITION, disposition(name));
    if let Some(n) = len {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    r
}

pub(crate) async fn download_file(ui: &Arc<Ui>, s: Arc<Session>, id: String, q: Query) -> Response {
    let s2 = s.clone();
    let found = tokio::task::spawn_blocking(move || -> Result<Node> {
        let (id, snap) = s2.snapshot(&id)?;
        let path = snap_path(&q)?;
        match node_at(&s2.repo, &snap, &id, &path)? {
            Some(n) if n.is_file() => Ok(n),
            _ => Err(Error::InvalidInput(format!(
                "{} is not a file: a folder downloads as .tar.gz",
                html::display_bytes(path.as_os_str().as_bytes())
            ))),
        }
    })
    .await;
    let node = match found {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return ui.error(Some(&s), &e),
        Err(e) => return ui.error(Some(&s), &Error::InvalidInput(e.to_string())),
    };
    let (tx, body) = channel_body();
    let (name, size) = (node.name.clone(), node.size);
    let repo = s.repo.clone();
    tokio::task::spawn_blocking(move || {
        let mut reader = match rewind_core::browse::FileReader::new(&repo, &node) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                return;
            }
        };
        loop {
            let mut buf = vec![0u8; PIECE];
            match reader.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    download(body, &name, "application/octet-stream", Some(size))
}

/// A `Write` into a [`channel_body`], in pieces.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PIECE {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = std::mem::take(&mut self.buf);
        self.tx
            .blocking_send(Ok(Bytes::from(piece)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "download cancelled"))
    }
}

/// A name from a snapshot (a host name) made safe as one path component:
/// no `/`, no NUL, not `.`-led, never empty.
fn safe_name(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    let cleaned = cleaned.trim_start_matches('.');
    if cleaned.is_empty() {
        "snapshot".into()
    } else {
        cleaned.to_string()
    }
}

/// A directory node for a snapshot's root (what `dump_tar` archives).
fn root_node(name: &[u8], tree: rewind_core::id::BlobId, time: jiff::Timestamp) -> Node {
    Node {
        name: name.to_vec(),
        kind: NodeKind::Dir { subtree: tree },
        mode: 0o040755,
        uid: 0,
        gid: 0,
        user: None,
        group: None,
        size: 0,
        mtime: Time {
            secs: time.as_second(),
            nanos: time.subsec_nanosecond().max(0) as u32,
        },
        ctime: Time::default(),
        inode: 0,
        device: 0,
        links: 1,
        xattrs: Vec::new(),
    }
}

pub(crate) async fn download_archive(
    ui: &Arc<Ui>,
    s: Arc<Session>,
    id: String,
    q: Query,
) -> Response {
    let s2 = s.clone();
    let found = tokio::task::spawn_blocking(move || -> Result<(Node, Vec<u8>)> {
        let (id, snap) = s2.snapshot(&id)?;
        let path = snap_path(&q)?;
        Ok(match node_at(&s2.repo, &snap, &id, &path)? {
            Some(n) => {
                let name = n.name.clone();
                (n, name)
            }
            None => {
                let name = format!(
                    "{}-{}",
                    safe_name(&snap.hostname),
                    snap.time
                        .to_zoned(jiff::tz::TimeZone::system())
                        .strftime("%Y-%m-%d-%H%M%S")
                )
                .into_bytes();
                (root_node(&name, snap.tree, snap.time), name)
            }
        })
    })
    .await;
    let (node, name) = match found {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return ui.error(Some(&s), &e),
        Err(e) => return ui.error(Some(&s), &Error::InvalidInput(e.to_string())),
    };
    let (tx, body) = channel_body();
    let repo = s.repo.clone();
    let tar_name = name.clone();
    tokio::task::spawn_blocking(move || {
        let out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::new(),
        };
        let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
        let r = rewind_core::browse::dump_tar(
            &repo,
            &node,
            Path::new(std::ffi::OsStr::from_bytes(&tar_name)),
            &mut gz,
        )
        .and_then(|()| {
            gz.finish()
                .and_then(|mut w| w.flush())
                .map_err(|e| Error::io("finish the archive", e))
        });
        if let Err(e) = r {
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let mut file = name;
    file.extend_from_slice(b".tar.gz");
    download(body, &file, "application/gzip", None)
}

/// A restore started from the UI.
pub(crate) struct Job {
    snapshot: String,
    path: PathBuf,
    target: PathBuf,
    progress: Progress,
    started: jiff::Timestamp,
    outcome: Mutex<Option<std::result::Result<RestoreStats, String>>>,
}

/// The restores of this UI, numbered from 1.
#[derive(Default)]
pub(crate) struct Jobs(Mutex<Vec<Arc<Job>>>);

fn overwrite_of(v: &str) -> Option<Overwrite> {
    match v {
        "never" => Some(Overwrite::Never),
        "if-changed" => Some(Overwrite::IfChanged),
        "always" => Some(Overwrite::Always),
        _ => None,
    }
}

/// Where a restore goes by default: a new folder under the home directory,
/// never over the live files unless the person types their path.
fn default_target(name: &str, time: jiff::Timestamp) -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join("rewind-restore").join(format!(
        "{}-{}",
        safe_name(name),
        time.to_zoned(jiff::tz::TimeZone::system())
            .strftime("%Y-%m-%d-%H%M%S")
    ))
}

pub(crate) fn restore_form(ui: &Ui, s: &Session, q: &Query) -> Result<Page> {
    let b = ui.base();
    if !ui.restore_here() {
        return Err(Error::InvalidInput(
            "restoring to a folder works in `rewind ui` on the machine itself; here, download the folder instead".into(),
        ));
    }
    let (id, snap) = s.snapshot(param_str(q, "snap"))?;
    let path = snap_path(q)?;
    let is_dir = node_at(&s.repo, &snap, &id, &path)?.is_none_or(|n| n.is_dir());
    let last_clean = param_str(q, "last_clean") == "1";
    let name = path
        .file_name()
        .map(|n| html::display_bytes(n.as_bytes()))
        .unwrap_or_else(|| safe_name(&snap.hostname));
    let mut p = Page::new(if last_clean {
        "Restore the last clean state".to_string()
    } else {
        format!("Restore {name}")
    });
    if last_clean {
        p.push(format!(
            r#"<div class="note">This brings back every file as it was in snapshot {} of {}, the last one before the attack. Restore into a new folder first and look at it; to put files back in place, type their original folder ({}) and choose what to do with the files there.</div>"#,
            id.short(),
            html::time(snap.time),
            esc(&snap.paths.join(", "))
        ));
    }
    let target = default_target(&name, snap.time);
    p.push(format!(
        r#"<p>From snapshot <strong>{short}</strong> of {time}: <code>{what}</code></p>
<form method="post" action="{b}/restore">
<input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="snap" value="{hex}"><input type="hidden" name="path" value="{path}">
<label for="target">Restore into this folder (created if missing)</label><input type="text" id="target" name="target" value="{target}">
<fieldset><legend>Where a file is already there</legend>
<label><input type="radio" name="overwrite" value="never"> Keep it (restore only what is missing)</label>
<label><input type="radio" name="overwrite" value="if-changed" checked> Replace it if it differs from the backup</label>
<label><input type="radio" name="overwrite" value="always"> Replace it always</label>
</fieldset>{delete}
<p><button type="submit">Start the restore</button> <a href="{b}/snapshot/{hex}">Cancel</a></p></form>"#,
        short = id.short(),
        time = html::time(snap.time),
        what = html::esc_bytes(path.as_os_str().as_bytes()),
        csrf = s.csrf,
        hex = id.to_hex(),
        path = esc(&enc(path.as_os_str().as_bytes())),
        target = esc(&target.to_string_lossy()),
        delete = if is_dir {
            r#"<fieldset><legend>Files the snapshot does not have</legend><label><input type="checkbox" name="delete" value="1"> Remove them from the folder (such as the encrypted copies an attack left). Without this, they stay.</label></fieldset>"#
        } else {
            ""
        },
    ));
    Ok(p)
}

pub(crate) async fn start_restore(ui: &Arc<Ui>, s: Arc<Session>, form: Query) -> Response {
    if !ui.restore_here() {
        return ui.error(
            Some(&s),
            &Error::InvalidInput("restoring to a folder works in `rewind ui` only".into()),
        );
    }
    let s2 = s.clone();
    let ui2 = ui.clone();
    let started = tokio::task::spawn_blocking(move || -> Result<usize> {
        let (id, snap) = s2.snapshot(param_str(&form, "snap"))?;
        // The path went through the form percent-encoded once more (so
        // that any bytes survive): decode that layer.
        let raw: Vec<u8> =
            percent_encoding::percent_decode(super::param(&form, "path").unwrap_or(b"/")).collect();
        let path = snap_path(&vec![("path".to_string(), raw)])?;
        let target = PathBuf::from(param_str(&form, "target").trim());
        if !target.is_absolute() {
            return Err(Error::InvalidInput(format!(
                "the folder to restore into must be a full path, like /home/me/restored (got {:?})",
                target.display().to_string()
            )));
        }
        let overwrite = overwrite_of(param_str(&form, "overwrite")).ok_or_else(|| {
            Error::InvalidInput("choose what to do with files that are already there".into())
        })?;
        let start = match node_at(&s2.repo, &snap, &id, &path)? {
            None => RestoreStart::Tree {
                tree: snap.tree,
                snap_path: PathBuf::from("/"),
            },
            Some(n) => match &n.kind {
                NodeKind::Dir { subtree } => RestoreStart::Tree {
                    tree: *subtree,
                    snap_path: path.clone(),
                },
                _ => RestoreStart::Node {
                    node: n.clone(),
                    snap_path: path.clone(),
                },
            },
        };
        let opts = RestoreOptions {
            target: target.clone(),
            overwrite,
            delete: param_str(&form, "delete") == "1" && matches!(start, RestoreStart::Tree { .. }),
            ..Default::default()
        };
        // Refuse what cannot work before starting (a file as the target).
        if std::fs::metadata(&target).is_ok_and(|m| !m.is_dir()) {
            return Err(Error::InvalidInput(format!(
                "{} exists and is not a folder: choose another folder",
                target.display()
            )));
        }
        let job = Arc::new(Job {
            snapshot: id.short(),
            path,
            target,
            progress: Progress::default(),
            started: jiff::Timestamp::now(),
            outcome: Mutex::new(None),
        });
        let n = {
            let mut jobs = ui2.jobs.0.lock().expect("jobs");
            jobs.push(job.clone());
            jobs.len()
        };
        let repo = s2.repo.clone();
        std::thread::spawn(move || {
            let r =
                restorer::restore(&repo, start, &opts, &job.progress).map_err(|e| e.to_string());
            *job.outcome.lock().expect("outcome") = Some(r);
        });
        Ok(n)
    })
    .await;
    match started {
        Ok(Ok(n)) => super::redirect(&format!("{}/jobs/{n}", ui.base())),
        Ok(Err(e)) => ui.error(Some(&s), &e),
        Err(e) => ui.error(Some(&s), &Error::InvalidInput(e.to_string())),
    }
}

pub(crate) fn job_page(ui: &Arc<Ui>, s: Arc<Session>, n: &str) -> Response {
    let job = n
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| ui.jobs.0.lock().expect("jobs").get(i).cloned());
    let Some(job) = job else {
        return ui.error(
            Some(&s),
            &Error::Missing {
                what: "restore job",
                id: n.to_string(),
            },
        );
    };
    let outcome = job.outcome.lock().expect("outcome").clone();
    let pr = &job.progress;
    let (files, total) = (
        pr.done_files.load(Ordering::Relaxed),
        pr.total_files.load(Ordering::Relaxed),
    );
    let (bytes, total_bytes) = (
        pr.done_bytes.load(Ordering::Relaxed),
        pr.total_bytes.load(Ordering::Relaxed),
    );
    let mut p = Page::new(match &outcome {
        None => "Restoring…",
        Some(Ok(st)) if st.errors.is_empty() => "Restore finished",
        Some(_) => "Restore finished with errors",
    });
    p.push(format!(
        r#"<p>Snapshot {} · <code>{}</code> → <code>{}</code> · started {}</p>"#,
        esc(&job.snapshot),
        html::esc_bytes(job.path.as_os_str().as_bytes()),
        html::esc_bytes(job.target.as_os_str().as_bytes()),
        html::time(job.started)
    ));
    match &outcome {
        None => {
            p.push(format!(
                r#"<progress max="{}" value="{}"></progress><p id="progress">{files} of {total} files, {} of {}</p><p class="muted">This page refreshes itself.</p>"#,
                total_bytes.max(1),
                bytes,
                html::size(bytes),
                html::size(total_bytes)
            ));
        }
        Some(Ok(st)) => {
            p.push(format!(
                r#"<div class="{}" id="outcome">Restored {} files ({}), {} folders and {} other entries; {} files were already there and left as they were{}.</div>"#,
                if st.errors.is_empty() { "good" } else { "alert" },
                st.files_restored,
                html::size(st.bytes_written),
                st.dirs,
                st.others,
                st.files_skipped,
                match (st.files_failed, st.deleted) {
                    (0, 0) => String::new(),
                    (0, d) => format!("; {d} entries the snapshot does not have were removed"),
                    (f, 0) => format!("; {f} files FAILED"),
                    (f, d) => format!(
                        "; {f} files FAILED; {d} entries the snapshot does not have were removed"
                    ),
                }
            ));
            if !st.errors.is_empty() {
                p.push("<ul>");
                for e in st.errors.iter().take(100) {
                    p.push(format!(
                        "<li><code>{}</code>: {}</li>",
                        html::esc_bytes(e.path.as_os_str().as_bytes()),
                        esc(&e.message)
                    ));
                }
                p.push("</ul>");
            }
        }
        Some(Err(e)) => p.push(format!(
            r#"<div class="alert" id="outcome">The restore failed: {}</div>"#,
            esc(e)
        )),
    }
    let mut r = ui.page(Some(&s), StatusCode::OK, &p);
    if outcome.is_none() {
        r.headers_mut().insert(
            axum::http::HeaderName::from_static("refresh"),
            HeaderValue::from_static("1"),
        );
    }
    r
}
