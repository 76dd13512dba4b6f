//! The HTTP side: the accept loop (TLS or plain, HTTP/1.1 and HTTP/2), the
//! routes and the rules of DESIGN §14.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::{Request, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use http_body_util::BodyExt;
use jiff::Timestamp;
use rewind_core::backend::{Backend, FileType, WriteOutcome};
use rewind_core::{Error, Result};
use tower::ServiceExt;

use crate::metrics::{Metrics, Usage};
use crate::state::{self, Role, State, Token, TokenProblem};
use crate::{Config, Limits};

/// The server: configuration, state, open repositories, counters.
pub(crate) struct App {
    config: Config,
    store: state::StateStore,
    state: Mutex<Loaded>,
    /// Signalled when a look at the store ends (`Loaded::refreshing` off).
    refreshed: Condvar,
    repos: Mutex<HashMap<String, Arc<Repo>>>,
    /// Which token stored each running marker, kept with the state
    /// ([`state::StateStore::marker_owners`]).
    marker_owners: Arc<dyn Backend>,
    metrics: Metrics,
    /// The upload memory ([`Config::max_upload_memory`]): one permit a byte.
    upload_memory: Arc<tokio::sync::Semaphore>,
    /// Uploads running, by token name ([`Config::max_uploads_per_token`]).
    uploads: Arc<Mutex<HashMap<String, usize>>>,
    /// The phone inboxes ([`crate::inbox`]).
    inboxes: crate::inbox::serve::Inboxes,
}

/// One running upload of a token: counted while it lives.
struct UploadSlot {
    uploads: Arc<Mutex<HashMap<String, usize>>>,
    token: String,
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut u = self.uploads.lock().expect("uploads");
        if let Some(n) = u.get_mut(&self.token) {
            *n -= 1;
            if *n == 0 {
                u.remove(&self.token);
            }
        }
    }
}

/// Seconds a client is told to wait (Retry-After) when the server is busy.
const RETRY_AFTER_SECS: u64 = 5;

/// How long a request with a token the state does not know waits for a
/// look at a store-kept state ([`App::fresh_state`]) before it is answered
/// from the state it has.
const FRESH_STATE_WAIT: Duration = Duration::from_secs(2);

/// The state as last read, the stamp it had and when the stamp was taken.
struct Loaded {
    stamp: Option<String>,
    checked: Option<Instant>,
    state: Arc<State>,
    /// Looks at the store begun so far, the one `state` comes from, and
    /// when the last began.
    looks: u64,
    state_from: u64,
    last_look: Option<Instant>,
    /// A request is looking at the store now.
    refreshing: bool,
}

/// Ends a look at the store however its request ends (a panic included):
/// otherwise requests waiting for it would wait for ever.
struct LookDone<'a> {
    app: &'a App,
    armed: bool,
}

impl Drop for LookDone<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Ok(mut l) = self.app.state.lock() {
                l.refreshing = false;
            }
            self.app.refreshed.notify_all();
        }
    }
}

/// One repository's storage and bookkeeping.
pub(crate) struct Repo {
    pub(crate) backend: Arc<dyn Backend>,
    /// Stored bytes and files, counted by listing; `None` until needed or
    /// after a delete (recounted at the next need).
    usage: Mutex<Option<(u64, BTreeMap<&'static str, u64>)>>,
    /// Snapshot deletes one at a time: each is judged against the others.
    snapshot_deletes: tokio::sync::Mutex<()>,
    /// Which token stored each running marker: what this process saw (the
    /// records in [`App::marker_owners`] outlive it).
    markers: Mutex<HashMap<String, String>>,
    /// The write log ([`crate::writes`]).
    writes: Arc<dyn Backend>,
    /// Records read from the write log (`None`: the file has none). A
    /// record never changes while its file exists.
    writers: Mutex<HashMap<(FileType, String), Option<crate::writes::Record>>>,
}

impl App {
    pub(crate) fn new(config: Config, store: state::StateStore) -> App {
        App {
            marker_owners: store.marker_owners(),
            store,
            state: Mutex::new(Loaded {
                stamp: None,
                checked: None,
                state: Arc::new(State::default()),
                refreshing: false,
                looks: 0,
                state_from: 0,
                last_look: None,
            }),
            refreshed: Condvar::new(),
            upload_memory: Arc::new(tokio::sync::Semaphore::new(
                usize::try_from(config.max_upload_memory)
                    .unwrap_or(usize::MAX)
                    .min(tokio::sync::Semaphore::MAX_PERMITS),
            )),
            uploads: Arc::new(Mutex::new(HashMap::new())),
            inboxes: crate::inbox::serve::Inboxes::new(config.data.clone(), config.inbox_schedule),
            config,
            repos: Mutex::new(HashMap::new()),
            metrics: Metrics::default(),
        }
    }

    pub(crate) fn inboxes(&self) -> &crate::inbox::serve::Inboxes {
        &self.inboxes
    }

    /// Takes the state read at start-up, with the stamp taken before it
    /// was read, as a first look: the first requests need not make one,
    /// nor wait in turn for one that fails.
    pub(crate) fn seed(&self, stamp: Option<String>, state: State) {
        let mut l = self.state.lock().expect("state");
        l.state = Arc::new(state);
        l.stamp = stamp;
        l.checked = Some(Instant::now());
    }

    /// The zstd level of what the server writes itself.
    pub(crate) fn compression(&self) -> i32 {
        self.config.compression
    }

    /// The state, re-read when it changed: a token added or revoked takes
    /// effect at the next request (a state kept in the store is looked at
    /// every 5 seconds at most).
    pub(crate) fn state(&self) -> Result<Arc<State>> {
        match self.store {
            state::StateStore::File(_) => self.state_in_file(),
            state::StateStore::Store(_) => self.state_in_store(Duration::from_secs(5), false),
        }
    }

    /// For a token the state does not know: a state at least as new as
    /// this call (a token made a moment ago is found). A file is looked at
    /// again (a stat); a store no more than five times a second whatever
    /// made-up tokens arrive, a look begun earlier waited for no more than
    /// [`FRESH_STATE_WAIT`].
    fn fresh_state(&self) -> Result<Arc<State>> {
        match self.store {
            state::StateStore::File(_) => self.state_in_file(),
            state::StateStore::Store(_) => self.state_in_store(Duration::from_millis(200), true),
        }
    }

    /// A state file: a stat per request (cheap), read again when its stamp
    /// changed. No request waits for another: each returns a state at
    /// least as new as the file was when it came.
    fn state_in_file(&self) -> Result<Arc<State>> {
        let stamp = self.store.stamp();
        let first = {
            let l = self.state.lock().expect("state");
            if l.checked.is_some() && l.stamp == stamp {
                return Ok(l.state.clone());
            }
            l.checked.is_none()
        };
        match self.store.load() {
            Ok(s) => {
                let s = Arc::new(s);
                let mut l = self.state.lock().expect("state");
                l.state = s.clone();
                l.stamp = stamp;
                l.checked = Some(Instant::now());
                self.forget_usage();
                Ok(s)
            }
            Err(e) if first => Err(e),
            Err(e) => {
                self.log_unreadable(&e);
                Ok(self.state.lock().expect("state").state.clone())
            }
        }
    }

    /// A state kept in the store, looked at by one request at a time
    /// without the lock held; if a look fails, the last state read stays
    /// in use. Others take the cached state, unless the last look is older
    /// than `every`, or no look has succeeded yet, or `fresh` asks for a
    /// look that began after this call (they then wait for it, or make it).
    fn state_in_store(&self, every: Duration, fresh: bool) -> Result<Arc<State>> {
        let give_up = Instant::now() + FRESH_STATE_WAIT;
        let mut l = self.state.lock().expect("state");
        let came_after = l.looks;
        loop {
            let first = l.checked.is_none();
            if !first && !fresh && (l.refreshing || l.checked.is_some_and(|c| c.elapsed() < every))
            {
                return Ok(l.state.clone());
            }
            if !first && fresh && l.state_from > came_after {
                return Ok(l.state.clone());
            }
            if l.refreshing {
                // A look that began after this request came is the one it
                // needs: waited for to its end. One that began before is
                // waited for a while only, then the next one.
                let needed = first || l.looks > came_after;
                let left = give_up.saturating_duration_since(Instant::now());
                if !needed && left.is_zero() {
                    return Ok(l.state.clone());
                }
                l = match needed {
                    true => self.refreshed.wait(l).expect("state"),
                    false => self.refreshed.wait_timeout(l, left).expect("state").0,
                };
                continue;
            }
            // At most one look per `every` for fresh states too.
            let since = l.last_look.map_or(every, |t| t.elapsed());
            if fresh && !first && since < every {
                drop(l);
                std::thread::sleep(every - since);
                l = self.state.lock().expect("state");
                continue;
            }
            break;
        }
        l.refreshing = true;
        l.looks += 1;
        l.last_look = Some(Instant::now());
        let (look, old_stamp, first) = (l.looks, l.stamp.clone(), l.checked.is_none());
        drop(l);
        let mut done = LookDone {
            app: self,
            armed: true,
        };
        let stamp = self.store.stamp();
        let loaded = (first || stamp != old_stamp).then(|| self.store.load());
        let mut l = self.state.lock().expect("state");
        done.armed = false;
        l.refreshing = false;
        self.refreshed.notify_all();
        match loaded {
            Some(Ok(s)) => {
                l.state = Arc::new(s);
                l.stamp = stamp;
                self.forget_usage();
            }
            Some(Err(e)) if first => return Err(e),
            Some(Err(e)) => self.log_unreadable(&e),
            None => {}
        }
        // A failed look counts too: those waiting for it take the state
        // they would have had, rather than look again and again.
        l.state_from = look;
        l.checked = Some(Instant::now());
        Ok(l.state.clone())
    }

    /// The operator changed something (a quarantine saves the state too):
    /// count the repositories again.
    fn forget_usage(&self) {
        for r in self.repos.lock().expect("repos").values() {
            *r.usage.lock().expect("usage") = None;
        }
    }

    fn log_unreadable(&self, e: &Error) {
        log(&format!(
            "reading tokens and settings from {} failed ({e}); the last ones read stay in use",
            self.store.describe()
        ));
    }

    fn limits(&self, st: &State, repo: &str) -> Limits {
        let d = self.config.defaults;
        match st.repos.get(repo) {
            Some(s) => Limits {
                min_delete_age_days: s.min_delete_age_days.unwrap_or(d.min_delete_age_days),
                history_days: s.history_days.unwrap_or(d.history_days),
                max_size: s.max_size.or(d.max_size),
            },
            None => d,
        }
    }

    /// Where a repository's file lives in the server's storage, for an
    /// operator's eyes: `DATA/repos/REPO/keys/NAME`, `STORAGE/REPO/config`.
    fn stored_path(&self, repo: &str, t: FileType, name: &str) -> String {
        let base = match &self.config.storage {
            None => self.config.repos_dir().join(repo).display().to_string(),
            Some(s) => format!("{}/{repo}", s.trim_end_matches('/')),
        };
        match t {
            FileType::Config => format!("{base}/config"),
            _ => format!("{base}/{}/{name}", t.dir()),
        }
    }

    pub(crate) fn repo(&self, name: &str) -> Result<Arc<Repo>> {
        if let Some(r) = self.repos.lock().expect("repos").get(name) {
            return Ok(r.clone());
        }
        let place = crate::quarantine::Place {
            data: self.config.data.as_deref(),
            storage: self.config.storage.as_deref(),
            options: &self.config.storage_options,
        };
        let backend = crate::quarantine::repository(&place, name)?;
        let writes = crate::writes::open(
            self.config.data.as_deref(),
            self.config.storage.as_deref(),
            &self.config.storage_options,
            name,
        )?;
        let repo = Arc::new(Repo {
            backend,
            usage: Mutex::new(None),
            snapshot_deletes: tokio::sync::Mutex::new(()),
            markers: Mutex::new(HashMap::new()),
            writes,
            writers: Mutex::new(HashMap::new()),
        });
        Ok(self
            .repos
            .lock()
            .expect("repos")
            .entry(name.to_string())
            .or_insert(repo)
            .clone())
    }
}

impl App {
    /// Stores a file in repository `repo_name` for a writer inside the
    /// server (a phone inbox's snapshots, [`crate::inbox`]), under the
    /// rules of a backup token named `who`: what a backup token may not
    /// store is refused, the quota binds, the write log records the file
    /// before it is stored, and a running marker is remembered as `who`'s.
    pub(crate) fn store_as(
        &self,
        repo_name: &str,
        who: &str,
        t: FileType,
        name: &str,
        data: &[u8],
    ) -> Result<WriteOutcome> {
        let repo = self.repo(repo_name)?;
        if let Some(why) = backup_refusal(&repo, t)? {
            return Err(Error::Refused(format!(
                "{who} writes with a backup token's rights: {why}"
            )));
        }
        let st = self.state()?;
        let limits = self.limits(&st, repo_name);
        if let (Some(max), false) = (limits.max_size, t == FileType::Running) {
            let used = repo.usage()?.0;
            if used.saturating_add(data.len() as u64) > max {
                return Err(Error::Refused(format!(
                    "repository {repo_name} is at its quota: {} of {} used; nothing was stored. Forget and prune old snapshots, or raise it (rewind serve repo set {repo_name} --max-size SIZE)",
                    rewind_core::stats::human_bytes(used),
                    rewind_core::stats::human_bytes(max),
                )));
            }
        }
        if t != FileType::Running {
            repo.record_write(who, Role::Backup, t, name, Some(data.len() as u64))?;
        }
        let outcome = repo.backend.write(t, name, data)?;
        if outcome == WriteOutcome::Created {
            if t == FileType::Running {
                self.note_marker(&repo, repo_name, who, name);
            }
            repo.added(t, data.len() as u64);
            self.metrics.bytes_in(repo_name, data.len() as u64);
        }
        Ok(outcome)
    }

    /// Remembers that `who` stored running marker `name` of `repo_name`, in
    /// this process and with the state (so that after a restart it can
    /// still remove it before it is stale).
    fn note_marker(&self, repo: &Repo, repo_name: &str, who: &str, name: &str) {
        repo.markers
            .lock()
            .expect("markers")
            .insert(name.to_string(), who.to_string());
        let key = state::marker_owner_key(repo_name, name);
        if let Err(e) = self
            .marker_owners
            .write(FileType::Running, &key, who.as_bytes())
        {
            log(&format!(
                "recording that {who} stored running marker {name} of {repo_name} failed ({e}); after a restart it can remove the marker only once stale"
            ));
        }
    }

    /// Deletes a file for a writer inside the server ([`App::store_as`]):
    /// only the running markers it stored itself.
    pub(crate) fn delete_as(
        &self,
        repo_name: &str,
        who: &str,
        t: FileType,
        name: &str,
    ) -> Result<()> {
        let repo = self.repo(repo_name)?;
        let owner = repo.markers.lock().expect("markers").get(name).cloned();
        if t != FileType::Running || owner.as_deref() != Some(who) {
            return Err(Error::Refused(format!(
                "{who} adds backups only, and cannot delete {} {name}",
                t.what()
            )));
        }
        repo.backend.delete(t, name)?;
        repo.markers.lock().expect("markers").remove(name);
        let key = state::marker_owner_key(repo_name, name);
        let _ = self.marker_owners.delete(FileType::Running, &key);
        *repo.usage.lock().expect("usage") = None;
        Ok(())
    }
}

impl Repo {
    /// Stored bytes and files by type (counted once, then kept up to date).
    fn usage(&self) -> Result<(u64, BTreeMap<&'static str, u64>)> {
        if let Some(u) = self.usage.lock().expect("usage").clone() {
            return Ok(u);
        }
        let mut bytes = 0;
        let mut objects = BTreeMap::new();
        for t in FileType::ALL {
            let files = self.backend.list(t)?;
            bytes += files.iter().map(|f| f.size).sum::<u64>();
            objects.insert(rewind_backends::rest::type_segment(t), files.len() as u64);
        }
        let u = (bytes, objects);
        *self.usage.lock().expect("usage") = Some(u.clone());
        Ok(u)
    }

    /// Who stored each of `files` (cached; records read as needed).
    pub(crate) fn writers(
        &self,
        t: FileType,
        files: &[rewind_core::backend::FileInfo],
    ) -> HashMap<String, crate::writes::Record> {
        let mut out = HashMap::new();
        for f in files {
            let key = (t, f.name.clone());
            let known = self.writers.lock().expect("writers").get(&key).cloned();
            let rec = match known {
                Some(r) => r,
                None => match crate::writes::read(self.writes.as_ref(), t, &f.name) {
                    Ok(r) => {
                        self.writers.lock().expect("writers").insert(key, r.clone());
                        r
                    }
                    Err(e) => {
                        log(&format!("reading who stored {} {}: {e}", t.what(), f.name));
                        None
                    }
                },
            };
            if let Some(r) = rec {
                out.insert(f.name.clone(), r);
            }
        }
        out
    }

    /// Records in the write log that `who` stores `t`/`name`, before the
    /// file is written (see [`crate::writes::record`]), and drops what
    /// [`Repo::writers`] holds for it, which that record may replace.
    fn record_write(
        &self,
        who: &str,
        role: Role,
        t: FileType,
        name: &str,
        size: Option<u64>,
    ) -> Result<()> {
        let rec = crate::writes::Record {
            version: crate::writes::VERSION,
            time: Timestamp::now(),
            token: who.to_string(),
            role,
            size,
        };
        crate::writes::record(self.writes.as_ref(), self.backend.as_ref(), t, name, &rec)?;
        self.writers
            .lock()
            .expect("writers")
            .remove(&(t, name.to_string()));
        Ok(())
    }

    fn added(&self, t: FileType, size: u64) {
        if let Some((bytes, objects)) = self.usage.lock().expect("usage").as_mut() {
            *bytes += size;
            *objects
                .entry(rewind_backends::rest::type_segment(t))
                .or_default() += 1;
        }
    }
}

/// Builds the TLS acceptor of a PEM certificate chain and key.
pub(crate) fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<std::result::Result<_, _>>())
        .map_err(|e| {
            Error::InvalidInput(format!(
                "--tls-cert {}: not a PEM certificate file: {e}",
                cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(Error::InvalidInput(format!(
            "--tls-cert {}: no certificate in it",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        Error::InvalidInput(format!(
            "--tls-key {}: not a PEM private key file: {e}",
            key.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| Error::InvalidInput(format!("TLS certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 1024;

/// How long a TLS handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(15);

/// Accepts connections until SIGINT or SIGTERM.
pub(crate) async fn serve(app: Arc<App>, tls: Option<tokio_rustls::TlsAcceptor>) -> Result<()> {
    let listen = app.config.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::io(format!("listen on {listen}"), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("read the listening address", e))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // The web UI under /ui/ ("ui" is no repository name, see
    // state::add_token): a read or admin token and the password log in.
    let ui = crate::ui::Ui::new(crate::ui::UiConfig {
        access: crate::ui::Access::Served(crate::served_ui::login(app.clone())),
        base: "/ui".into(),
        hosts: Vec::new(),
        restore_here: false,
        agent: None,
        secure_cookie: tls.is_some(),
    });
    let router = Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .nest_service("/ui", ui.router())
        .fallback(handle)
        .with_state(app.clone());
    println!("rewind serve: listening on {scheme}://{addr}");
    log(&format!(
        "listening on {scheme}://{addr}; tokens and settings in {}; repositories in {}",
        app.store.describe(),
        app.config
            .storage
            .clone()
            .unwrap_or_else(|| app.config.repos_dir().display().to_string())
    ));
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(sweep_temporaries(app.clone()));
    tokio::spawn(crate::inbox::serve::run(app.clone()));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::io("watch SIGTERM", e))?;
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    log(&format!("accept: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        };
        let _ = tcp.set_nodelay(true);
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            log(&format!(
                "refused a connection from {peer}: {MAX_CONNECTIONS} are open"
            ));
            continue;
        };
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = router_service(router, peer);
            let builder = connection_builder();
            let result = match tls {
                Some(acceptor) => match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await
                {
                    Ok(Ok(stream)) => {
                        builder
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await
                    }
                    Ok(Err(e)) => {
                        log(&format!("TLS handshake with {peer} failed: {e}"));
                        return;
                    }
                    Err(_) => return,
                },
                None => {
                    builder
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await
                }
            };
            let _ = result;
        });
    }
    log("stopping (signal)");
    Ok(())
}

/// The server's HTTP/1.1 and HTTP/2 settings for one connection: a client
/// that opens a connection and sends nothing is let go after 30 s; HTTP/2
/// connections are kept alive with pings.
pub(crate) fn connection_builder(
) -> hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor> {
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// `router` as a hyper service for one connection, each request told the
/// address it came from (a `SocketAddr` extension).
pub(crate) fn router_service(
    router: Router,
    peer: std::net::SocketAddr,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<
        Output = std::result::Result<Response, std::convert::Infallible>,
    > + Send
                 + 'static,
> + Clone {
    hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(peer);
        router.clone().oneshot(req)
    })
}

/// Removes, at start and then hourly, the temporary files of uploads that a
/// killed server or a broken connection left (older than an hour: no live
/// upload is that slow, uploads idle for 120 s are dropped).
async fn sweep_temporaries(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let app = app.clone();
        let swept = tokio::task::spawn_blocking(move || {
            let names = app.state().map(|s| s.repo_names()).unwrap_or_default();
            let mut removed = 0;
            for name in names {
                if let Ok(repo) = app.repo(&name) {
                    removed += repo
                        .backend
                        .remove_stale_temporaries(Duration::from_secs(3600))
                        .unwrap_or(0);
                }
            }
            removed
        })
        .await
        .unwrap_or(0);
        if swept > 0 {
            log(&format!(
                "removed {swept} temporary files of interrupted uploads"
            ));
        }
    }
}

/// A line on stderr with the time.
pub(crate) fn log(msg: &str) {
    eprintln!(
        "{} rewind serve: {msg}",
        Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or(Timestamp::now())
    );
}

async fn metrics(AxState(app): AxState<Arc<App>>) -> Response {
    let app2 = app.clone();
    let usage = tokio::task::spawn_blocking(move || {
        let mut out = BTreeMap::new();
        let names = app2.state().map(|s| s.repo_names()).unwrap_or_default();
        for name in names {
            let Ok(repo) = app2.repo(&name) else { continue };
            if let Ok((bytes, objects)) = repo.usage() {
                out.insert(name, Usage { objects, bytes });
            }
        }
        out
    })
    .await
    .unwrap_or_default();
    let body = app.metrics.render(&usage);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// What a request's path names.
#[derive(Debug)]
enum Target {
    /// `/REPO/`: settings (GET), create (POST).
    Repo,
    /// `/REPO/TYPE/`: listing.
    List(FileType),
    /// `/REPO/TYPE/NAME`: one file.
    File(FileType, String),
}

fn file_type(seg: &str) -> Option<FileType> {
    FileType::ALL
        .into_iter()
        .find(|t| rewind_backends::rest::type_segment(*t) == seg)
}

fn valid_name(t: FileType, name: &str) -> bool {
    match t {
        FileType::Config => name == "config",
        _ => name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
    }
}

/// Parses `/REPO/`, `/REPO/TYPE/`, `/REPO/TYPE/NAME`. Nothing is decoded:
/// a name that needs percent-encoding is not a name.
fn parse_path(path: &str) -> std::result::Result<(String, Target), String> {
    let rest = path.strip_prefix('/').ok_or("the path must start with /")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let repo = parts[0];
    if !rewind_backends::rest::valid_repo_name(repo) {
        return Err(format!("{repo:?} is not a repository name"));
    }
    let target = match parts[1..] {
        [] | [""] => Target::Repo,
        [t, ""] => Target::List(file_type(t).ok_or(format!("{t:?} is not a file type"))?),
        [t, name] => {
            let t = file_type(t).ok_or(format!("{t:?} is not a file type"))?;
            if !valid_name(t, name) {
                return Err(format!(
                    "{name:?} is not a {} file name (64 lowercase hex characters{})",
                    t.what(),
                    if t == FileType::Config {
                        ", or config"
                    } else {
                        ""
                    }
                ));
            }
            Target::File(t, name.to_string())
        }
        _ => return Err("too many path segments".into()),
    };
    Ok((repo.to_string(), target))
}

/// A request in progress: who asks, for logging and counting.
struct Ctx {
    app: Arc<App>,
    peer: String,
    method: Method,
    path: String,
    repo: String,
    token: String,
}

impl Ctx {
    fn answer(&self, status: StatusCode, msg: impl Into<String>) -> Response {
        let mut msg = msg.into();
        msg.push('\n');
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            msg,
        )
            .into_response()
    }

    /// A refusal: logged with the token, the address and the reason, counted.
    fn refuse(&self, status: StatusCode, kind: &'static str, msg: impl Into<String>) -> Response {
        let msg = msg.into();
        let label = if self.repo.is_empty() {
            "-"
        } else {
            &self.repo
        };
        self.app.metrics.refusal(label, kind);
        log(&format!(
            "refused {} {} from {} token={} ({kind}): {msg}",
            self.method, self.path, self.peer, self.token
        ));
        let mut r = self.answer(status, msg);
        r.headers_mut().insert(
            rewind_backends::rest::REFUSAL_HEADER,
            HeaderValue::from_static(kind),
        );
        r
    }

    /// A refusal for now (503 with Retry-After): the client retries.
    fn busy(&self, kind: &'static str, msg: impl Into<String>) -> Response {
        let mut r = self.refuse(StatusCode::SERVICE_UNAVAILABLE, kind, msg);
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        r
    }

    /// Counts an upload of this token; `None` when it has as many running
    /// as it may.
    fn upload_slot(&self) -> Option<UploadSlot> {
        let mut u = self.app.uploads.lock().expect("uploads");
        let n = u.entry(self.token.clone()).or_default();
        if *n >= self.app.config.max_uploads_per_token {
            return None;
        }
        *n += 1;
        Some(UploadSlot {
            uploads: self.app.uploads.clone(),
            token: self.token.clone(),
        })
    }

    fn failed(&self, e: &Error) -> Response {
        log(&format!(
            "error {} {} from {} token={}: {e}",
            self.method, self.path, self.peer, self.token
        ));
        self.answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the server failed: {e}"),
        )
    }
}

async fn handle(AxState(app): AxState<Arc<App>>, req: Request) -> Response {
    let method = req.method().clone();
    let peer = req
        .extensions()
        .get::<SocketAddr>()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "?".into());
    let path = req.uri().path().to_string();
    if path == "/dav" || path.starts_with("/dav/") {
        let resp = crate::inbox::serve::handle(app.clone(), req).await;
        app.metrics
            .request("-", method.as_str(), resp.status().as_u16());
        return resp;
    }
    let mut ctx = Ctx {
        app: app.clone(),
        peer,
        method: method.clone(),
        path: path.clone(),
        repo: String::new(),
        token: "-".into(),
    };
    let resp = route(&mut ctx, req).await;
    let repo = if ctx.repo.is_empty() { "-" } else { &ctx.repo };
    app.metrics
        .request(repo, method.as_str(), resp.status().as_u16());
    resp
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Error::io("server task", io::Error::other(e.to_string()))))
}

async fn route(ctx: &mut Ctx, req: Request) -> Response {
    let (repo_name, target) = match parse_path(&ctx.path) {
        Ok(x) => x,
        Err(why) => return ctx.refuse(StatusCode::BAD_REQUEST, "name", why),
    };
    // Who is asking. (Metrics name the repository only once a token of it
    // is checked: made-up names must not grow them.)
    let st = match blocking({
        let app = ctx.app.clone();
        move || app.state()
    })
    .await
    {
        Ok(s) => s,
        Err(e) => return ctx.failed(&e),
    };
    let Some(presented) = bearer(req.headers()).map(str::to_string) else {
        return ctx.refuse(
            StatusCode::UNAUTHORIZED,
            "auth",
            "no token: send Authorization: Bearer TOKEN (REWIND_SERVER_TOKEN or --token-file on the client)",
        );
    };
    let mut st = st;
    let mut auth = st.authenticate(&presented, Timestamp::now()).cloned();
    if auth.as_ref().err() == Some(&TokenProblem::Unknown) {
        // Perhaps a token made a moment ago: a state at least as new as
        // this request ([`App::fresh_state`] says how).
        let app = ctx.app.clone();
        if let Ok(fresh) = blocking(move || app.fresh_state()).await {
            auth = fresh.authenticate(&presented, Timestamp::now()).cloned();
            st = fresh;
        }
    }
    let token: Token = match auth {
        Ok(t) => t,
        Err(problem) => {
            let why = match &problem {
                TokenProblem::Unknown => "unknown token".to_string(),
                TokenProblem::Expired(name, at) => {
                    format!("token {name} expired at {at}; ask the operator for a new one")
                }
                TokenProblem::Revoked(name, at) => format!("token {name} was revoked at {at}"),
            };
            if let TokenProblem::Expired(name, _) | TokenProblem::Revoked(name, _) = problem {
                ctx.token = name;
            }
            return ctx.refuse(StatusCode::UNAUTHORIZED, "auth", why);
        }
    };
    ctx.token = token.name.clone();
    if token.repo != repo_name {
        ctx.repo = token.repo.clone();
        return ctx.refuse(
            StatusCode::FORBIDDEN,
            "repo",
            format!(
                "token {} is for repository {}, not {repo_name}",
                token.name, token.repo
            ),
        );
    }
    ctx.repo = repo_name.clone();
    let limits = ctx.app.limits(&st, &repo_name);
    // Opening a storage may build a client runtime: not on this thread.
    let repo = match blocking({
        let app = ctx.app.clone();
        let name = repo_name.clone();
        move || app.repo(&name)
    })
    .await
    {
        Ok(r) => r,
        Err(e) => return ctx.failed(&e),
    };
    let role = token.role;
    match (&ctx.method, target) {
        (&Method::GET, Target::Repo) => info(ctx, &repo, &token, limits).await,
        (&Method::POST, Target::Repo) => {
            if role == Role::Read {
                return ctx.refuse(
                    StatusCode::FORBIDDEN,
                    "role",
                    "a read token cannot create a repository",
                );
            }
            let b = repo.backend.clone();
            match blocking(move || b.create()).await {
                Ok(()) => ctx.answer(StatusCode::CREATED, "created"),
                Err(Error::AlreadyExists(_)) => ctx.answer(
                    StatusCode::CONFLICT,
                    format!("repository {repo_name} exists already"),
                ),
                Err(e) => ctx.failed(&e),
            }
        }
        (&Method::GET, Target::List(t)) => {
            let r = repo.clone();
            // Who stored each file, for every type but packs (too many, and
            // nothing rests on who stored them) and running markers.
            let tell = !matches!(t, FileType::Pack | FileType::Running);
            match blocking(move || {
                let files = r.backend.list(t)?;
                let writers = if tell {
                    r.writers(t, &files)
                } else {
                    HashMap::new()
                };
                Ok((files, writers))
            })
            .await
            {
                Ok((files, writers)) => {
                    let v: Vec<_> = files
                        .iter()
                        .map(|f| match writers.get(&f.name) {
                            Some(w) => serde_json::json!({"name": f.name, "size": f.size, "writer": w.to_json()}),
                            None => serde_json::json!({"name": f.name, "size": f.size}),
                        })
                        .collect();
                    let body = serde_json::to_vec(&v).expect("json");
                    ctx.app.metrics.bytes_out(&repo_name, body.len() as u64);
                    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
                }
                Err(e) => ctx.failed(&e),
            }
        }
        (&Method::GET, Target::File(t, name)) => get_file(ctx, &repo, t, name, req.headers()).await,
        (&Method::HEAD, Target::File(t, name)) => head_file(ctx, &repo, t, name, limits).await,
        (&Method::PUT, Target::File(t, name)) => {
            put_file(ctx, &repo, role, t, name, limits, req).await
        }
        (&Method::DELETE, Target::File(t, name)) => {
            delete_file(ctx, &repo, role, t, name, limits).await
        }
        (m, _) => ctx.refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "method",
            format!("{m} is not part of the protocol here (DESIGN §14)"),
        ),
    }
}

async fn info(ctx: &Ctx, repo: &Arc<Repo>, token: &Token, limits: Limits) -> Response {
    let r = repo.clone();
    let used = blocking(move || r.usage()).await.ok().map(|u| u.0);
    let body = serde_json::json!({
        "version": 1,
        "repo": ctx.repo,
        "token": token.name,
        "role": token.role,
        "min_delete_age_days": limits.min_delete_age_days,
        "history_days": limits.history_days,
        "max_size": limits.max_size,
        "used_bytes": used,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn missing_or_failed(ctx: &Ctx, e: &Error) -> Response {
    match e {
        Error::Missing { what, id } => ctx.answer(StatusCode::NOT_FOUND, format!("no {what} {id}")),
        _ => ctx.failed(e),
    }
}

/// `Range: bytes=A-B` (one range, both ends given).
fn parse_range(v: &HeaderValue) -> Option<(u64, u32)> {
    let s = v.to_str().ok()?.strip_prefix("bytes=")?;
    let (a, b) = s.split_once('-')?;
    let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
    let len = u32::try_from(b.checked_sub(a)?.checked_add(1)?).ok()?;
    Some((a, len))
}

/// What a request's path names, as (repository, type, file name), or the
/// refusal; and what a `Range` header asks for. The fuzz targets' entry
/// into the server's parsing (fuzz/): not an API.
#[doc(hidden)]
#[allow(clippy::type_complexity)]
pub fn fuzz_request(
    path: &str,
    range: &[u8],
) -> (
    std::result::Result<(String, Option<FileType>, Option<String>), String>,
    Option<(u64, u32)>,
) {
    let parsed = parse_path(path).map(|(repo, t)| match t {
        Target::Repo => (repo, None, None),
        Target::List(t) => (repo, Some(t), None),
        Target::File(t, name) => (repo, Some(t), Some(name)),
    });
    let range = HeaderValue::from_bytes(range)
        .ok()
        .and_then(|v| parse_range(&v));
    (parsed, range)
}

async fn get_file(
    ctx: &Ctx,
    repo: &Arc<Repo>,
    t: FileType,
    name: String,
    headers: &HeaderMap,
) -> Response {
    let range = match headers.get(header::RANGE) {
        Some(v) => match parse_range(v) {
            Some(r) => Some(r),
            None => {
                return ctx.refuse(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "range",
                    "give one range, bytes=FIRST-LAST",
                )
            }
        },
        None => None,
    };
    if range.is_some_and(|(_, len)| u64::from(len) > ctx.app.config.max_object_size) {
        return ctx.refuse(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "range",
            "the range is longer than the largest file stored here",
        );
    }
    let b = repo.backend.clone();
    let result = blocking(move || match range {
        Some((off, len)) => b.read_range(t, &name, off, len),
        None => b.read(t, &name),
    })
    .await;
    match result {
        Ok(data) => {
            ctx.app.metrics.bytes_out(&ctx.repo, data.len() as u64);
            let status = if range.is_some() {
                StatusCode::PARTIAL_CONTENT
            } else {
                StatusCode::OK
            };
            (
                status,
                [(header::CONTENT_TYPE, "application/octet-stream")],
                data,
            )
                .into_response()
        }
        Err(Error::Io { error, .. }) if error.kind() == io::ErrorKind::UnexpectedEof => ctx.answer(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "the range lies beyond the end of the file",
        ),
        Err(e) => missing_or_failed(ctx, &e),
    }
}

/// Until when a file stored at `stored` is kept, if that is in the future.
fn retained_until(stored: Option<SystemTime>, limits: Limits) -> Option<Timestamp> {
    if limits.min_delete_age_days == 0 {
        return None;
    }
    let now = Timestamp::now();
    let age = jiff::SignedDuration::from_hours(24 * i64::from(limits.min_delete_age_days));
    let Some(stored) = stored.and_then(|s| Timestamp::try_from(s).ok()) else {
        // The storage does not say when: keep it.
        return Some(now.checked_add(age).unwrap_or(Timestamp::MAX));
    };
    let until = stored.checked_add(age).unwrap_or(Timestamp::MAX);
    (until > now).then_some(until)
}

async fn head_file(
    ctx: &Ctx,
    repo: &Arc<Repo>,
    t: FileType,
    name: String,
    limits: Limits,
) -> Response {
    let b = repo.backend.clone();
    match blocking(move || b.modified(t, &name)).await {
        Ok(stored) => {
            let mut r = StatusCode::OK.into_response();
            // When the storage got the file: clients judge the age of a
            // file they cannot read (a damaged running marker) by it.
            if let Some(at) = stored.and_then(|t| Timestamp::try_from(t).ok()) {
                r.headers_mut().insert(
                    "x-rewind-stored",
                    HeaderValue::from_str(&at.to_string()).expect("ascii"),
                );
            }
            if t != FileType::Running {
                if let Some(until) = retained_until(stored, limits) {
                    r.headers_mut().insert(
                        "x-rewind-retained-until",
                        HeaderValue::from_str(&until.to_string()).expect("ascii"),
                    );
                }
            }
            r
        }
        Err(e) => missing_or_failed(ctx, &e),
    }
}

/// A running marker not rewritten for this long is stale (DESIGN §3.10).
const MARKER_STALE: Duration = Duration::from_secs(30 * 60);

/// How long an upload may send nothing before it is dropped.
const BODY_IDLE: Duration = Duration::from_secs(120);

/// Why a streamed body was cut short.
#[derive(Clone, Debug)]
enum Cut {
    TooLarge(u64),
    OverQuota,
    HashMismatch(String),
    Client(String),
}

/// What the connection side hands the writer.
enum Piece {
    Data(Bytes),
    /// The body ended as it should.
    End,
    /// The body broke off (client error, timeout).
    Abort(String),
}

/// The request body as a blocking reader for the backend: counts and
/// hashes what passes, and fails the last read if the content's hash is
/// not its name, so that no file is ever linked under a wrong name.
struct BodyReader {
    rx: tokio::sync::mpsc::Receiver<Piece>,
    /// Content-Length, if the client gave one.
    length: Option<u64>,
    buf: Bytes,
    hasher: blake3::Hasher,
    expect: Option<String>,
    seen: u64,
    max_object: u64,
    room: Option<u64>,
    cut: Arc<Mutex<Option<Cut>>>,
}

impl BodyReader {
    fn fail(&self, cut: Cut) -> io::Error {
        let msg = format!("{cut:?}");
        *self.cut.lock().expect("cut") = Some(cut);
        io::Error::new(io::ErrorKind::InvalidData, msg)
    }
}

impl Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.buf.is_empty() {
            match self.rx.blocking_recv() {
                Some(Piece::Data(b)) => {
                    self.seen += b.len() as u64;
                    if self.seen > self.max_object {
                        return Err(self.fail(Cut::TooLarge(self.max_object)));
                    }
                    if self.room.is_some_and(|r| self.seen > r) {
                        return Err(self.fail(Cut::OverQuota));
                    }
                    self.hasher.update(&b);
                    self.buf = b;
                }
                Some(Piece::Abort(e)) => return Err(self.fail(Cut::Client(e))),
                // The request went away without its end: never a file.
                None => return Err(self.fail(Cut::Client("the request was cut off".into()))),
                Some(Piece::End) => {
                    if self.length.is_some_and(|l| l != self.seen) {
                        let msg = format!(
                            "{} bytes arrived of {}",
                            self.seen,
                            self.length.unwrap_or(0)
                        );
                        return Err(self.fail(Cut::Client(msg)));
                    }
                    if let Some(expect) = &self.expect {
                        let got = self.hasher.finalize().to_hex().to_string();
                        if &got != expect {
                            return Err(self.fail(Cut::HashMismatch(got)));
                        }
                    }
                    return Ok(0);
                }
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        let _ = self.buf.split_to(n);
        Ok(n)
    }
}

/// Why this role may not store a file of this type, if it may not.
async fn role_refusal(ctx: &Ctx, repo: &Arc<Repo>, role: Role, t: FileType) -> Option<Response> {
    match role {
        Role::Read => Some(ctx.refuse(
            StatusCode::FORBIDDEN,
            "role",
            "a read token cannot store files",
        )),
        Role::Backup => {
            let r = repo.clone();
            match blocking(move || backup_refusal(&r, t)).await {
                Ok(None) => None,
                Ok(Some(why)) => Some(ctx.refuse(StatusCode::FORBIDDEN, "role", why)),
                Err(e) => Some(ctx.failed(&e)),
            }
        }
        Role::Admin => None,
    }
}

/// Why a backup token (or a writer inside the server with its rules, such
/// as a phone inbox) may not store a `t` file, if it may not: settings and
/// prune states never, config and key files only while the repository is
/// being created.
fn backup_refusal(repo: &Repo, t: FileType) -> Result<Option<String>> {
    Ok(match t {
        // Policy files hold every setting of the repository; say which.
        FileType::Policy => Some("a backup token cannot change the repository's settings (its retention policy, copy target and alert URL): they are stored with an admin token".into()),
        FileType::PruneState => Some(format!(
            "a backup token cannot store {} files (admin only)",
            t.what()
        )),
        FileType::Config | FileType::Key if !repo.backend.list(FileType::Config)?.is_empty() => {
            Some(format!(
                "a backup token cannot add {} files to an existing repository (admin only)",
                t.what()
            ))
        }
        _ => None,
    })
}

/// Whether an upload may start: its announced size, the quota, the
/// token's number of uploads and (on storage that gathers uploads in
/// memory) the upload memory. Gives the room left under the quota and what
/// the upload holds until it ends.
async fn admit_upload(
    ctx: &Ctx,
    repo: &Arc<Repo>,
    role: Role,
    t: FileType,
    length: Option<u64>,
    limits: Limits,
) -> std::result::Result<
    (
        Option<u64>,
        UploadSlot,
        Option<tokio::sync::OwnedSemaphorePermit>,
    ),
    Response,
> {
    let max_object = ctx.app.config.max_object_size;
    if length.is_some_and(|l| l > max_object) {
        return Err(ctx.refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "size",
            format!(
                "{} bytes is larger than the largest file accepted ({})",
                length.unwrap_or(0),
                rewind_core::stats::human_bytes(max_object)
            ),
        ));
    }
    // The quota binds backups; admin writes (prune's index, state and
    // repacked packs: the way back under it) and liveness markers pass.
    let quota = limits
        .max_size
        .filter(|_| role != Role::Admin && t != FileType::Running);
    let room = match quota {
        None => None,
        Some(max) => {
            let r = repo.clone();
            let used = match blocking(move || r.usage()).await {
                Ok(u) => u.0,
                Err(e) => return Err(ctx.failed(&e)),
            };
            let room = max.saturating_sub(used);
            if length.unwrap_or(1) > room {
                return Err(over_quota(ctx, max, used));
            }
            Some(room)
        }
    };
    // One token may not hold every upload the server runs, nor (on storage
    // that gathers uploads in memory) all of its memory.
    let Some(slot) = ctx.upload_slot() else {
        return Err(ctx.busy(
            "busy",
            format!(
                "token {} has {} uploads running, as many as one token may (--max-uploads-per-token); retry in {RETRY_AFTER_SECS} s",
                ctx.token, ctx.app.config.max_uploads_per_token
            ),
        ));
    };
    let gathers = repo.backend.write_from_gathers();
    let memory = if gathers {
        let budget = ctx.app.config.max_upload_memory;
        // The announced size, else the largest allowed; never more than
        // the whole budget (or it could never be had).
        let need = length
            .unwrap_or(max_object)
            .clamp(1, budget.max(1))
            .min(u64::from(u32::MAX)) as u32;
        let sem = ctx.app.upload_memory.clone();
        let wait = ctx.app.config.upload_memory_wait;
        match tokio::time::timeout(wait, sem.acquire_many_owned(need)).await {
            Ok(Ok(permit)) => Some(permit),
            Ok(Err(_)) | Err(_) => {
                return Err(ctx.busy(
                    "busy",
                    format!(
                        "the server's upload memory is in use ({} held by uploads to storage that buffers them; --max-upload-memory {}): {} more did not fit within {} s; retry in {RETRY_AFTER_SECS} s",
                        rewind_core::stats::human_bytes(
                            budget.saturating_sub(ctx.app.upload_memory.available_permits() as u64)
                        ),
                        rewind_core::stats::human_bytes(budget),
                        rewind_core::stats::human_bytes(u64::from(need)),
                        wait.as_secs()
                    ),
                ))
            }
        }
    } else {
        None
    };
    Ok((room, slot, memory))
}

/// Stores one file from the request body: refuses what the token's role
/// may not store, admits the upload, records who stores it, streams the
/// body to the storage (which checks it against its name as it passes) and
/// answers with the outcome.
async fn put_file(
    ctx: &Ctx,
    repo: &Arc<Repo>,
    role: Role,
    t: FileType,
    name: String,
    limits: Limits,
    req: Request,
) -> Response {
    if let Some(refused) = role_refusal(ctx, repo, role, t).await {
        return refused;
    }
    let length: Option<u64> = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let (room, slot, memory) = match admit_upload(ctx, repo, role, t, length, limits).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    if t != FileType::Running {
        if let Err(failed) = record_writer(ctx, repo, role, t, &name, length).await {
            return failed;
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let cut = Arc::new(Mutex::new(None));
    let reader = BodyReader {
        rx,
        length,
        buf: Bytes::new(),
        hasher: blake3::Hasher::new(),
        expect: (t != FileType::Config).then(|| name.clone()),
        seen: 0,
        max_object: ctx.app.config.max_object_size,
        room,
        cut: cut.clone(),
    };
    let job = spawn_write(repo, role, t, name.clone(), reader);
    send_body(req, tx).await;
    let joined = job.await;
    // The write has ended: its memory and its slot go back.
    drop(memory);
    drop(slot);
    let written = match joined {
        Ok(x) => x,
        Err(e) => return ctx.failed(&Error::io("server task", io::Error::other(e.to_string()))),
    };
    let cut = cut.lock().expect("cut").clone();
    answer_put(ctx, repo, t, name, limits, written, cut).await
}

/// Records in the write log that this token stores `t`/`name`, before the
/// file is written (see [`crate::writes::record`]), and drops what
/// [`Repo::writers`] holds for it, which that record may replace. On
/// failure, the answer to give: nothing is stored without its record.
async fn record_writer(
    ctx: &Ctx,
    repo: &Arc<Repo>,
    role: Role,
    t: FileType,
    name: &str,
    size: Option<u64>,
) -> std::result::Result<(), Response> {
    let (r, who, n) = (repo.clone(), ctx.token.clone(), name.to_string());
    if let Err(e) = blocking(move || r.record_write(&who, role, t, &n, size)).await {
        log(&format!(
            "recording that token {} stores {} {name} of {} failed: {e}",
            ctx.token,
            t.what(),
            ctx.repo
        ));
        return Err(ctx.failed(&e));
    }
    Ok(())
}

/// Starts the write of `t`/`name` from `reader` on a blocking thread; it
/// ends with the storage's outcome and the bytes read. A backup token's
/// config or key file is refused if the repository got a config meanwhile.
fn spawn_write(
    repo: &Arc<Repo>,
    role: Role,
    t: FileType,
    name: String,
    mut reader: BodyReader,
) -> tokio::task::JoinHandle<(Result<WriteOutcome>, u64)> {
    let b = repo.backend.clone();
    let gathers = b.write_from_gathers();
    let length = reader.length;
    let only_at_init = role == Role::Backup && matches!(t, FileType::Config | FileType::Key);
    tokio::task::spawn_blocking(move || {
        // Again right before the write: `init` may have finished meanwhile.
        if only_at_init {
            match b.list(FileType::Config) {
                Ok(c) if c.is_empty() => {}
                Ok(_) => return (Err(Error::Refused("the repository has a config now, and a backup token adds config and key files only while a repository is created".into())), 0),
                Err(e) => return (Err(e), 0),
            }
        }
        let r = if gathers {
            // Gathered here in one buffer of the announced size (the
            // default write_from grows its own, up to twice that).
            let mut data = Vec::with_capacity(length.unwrap_or(0) as usize);
            match reader.read_to_end(&mut data) {
                Ok(_) => b.write(t, &name, &data),
                Err(e) => Err(Error::io(
                    format!("read the {} {name} to store", t.what()),
                    e,
                )),
            }
        } else {
            b.write_from(t, &name, &mut reader)
        };
        (r, reader.seen)
    })
}

/// Hands the request body to the writer piece by piece, then how it ended:
/// whole, broken off, or idle for longer than [`BODY_IDLE`]. Stops early
/// when the writer has stopped reading.
async fn send_body(req: Request, tx: tokio::sync::mpsc::Sender<Piece>) {
    let mut body = req.into_body();
    loop {
        let piece = match tokio::time::timeout(BODY_IDLE, body.frame()).await {
            Ok(Some(Ok(f))) => match f.into_data() {
                Ok(d) => Piece::Data(d),
                Err(_) => continue, // trailers
            },
            Ok(Some(Err(e))) => Piece::Abort(e.to_string()),
            Ok(None) => Piece::End,
            Err(_) => Piece::Abort(format!("no data for {} s", BODY_IDLE.as_secs())),
        };
        let last = !matches!(piece, Piece::Data(_));
        if tx.send(piece).await.is_err() || last {
            break;
        }
    }
}

/// The answer to an upload of `t`/`name`: the storage's outcome and the
/// bytes read (`written`, from [`spawn_write`]), or why the body was cut
/// short (`cut`). A file stored is counted, and a running marker is
/// remembered as its token's.
async fn answer_put(
    ctx: &Ctx,
    repo: &Arc<Repo>,
    t: FileType,
    name: String,
    limits: Limits,
    written: (Result<WriteOutcome>, u64),
    cut: Option<Cut>,
) -> Response {
    let (result, seen) = written;
    match (result, cut) {
        (Ok(WriteOutcome::Created), _) => {
            if t == FileType::Running {
                let (app, r, repo_name, who, n) = (
                    ctx.app.clone(),
                    repo.clone(),
                    ctx.repo.clone(),
                    ctx.token.clone(),
                    name.clone(),
                );
                let _ = blocking(move || {
                    app.note_marker(&r, &repo_name, &who, &n);
                    Ok(())
                })
                .await;
            }
            repo.added(t, seen);
            ctx.app.metrics.bytes_in(&ctx.repo, seen);
            ctx.answer(StatusCode::CREATED, "created")
        }
        (Ok(WriteOutcome::AlreadyExists), _) => ctx.refuse(
            StatusCode::CONFLICT,
            "exists",
            format!("{} {name} exists; files are never overwritten", t.what()),
        ),
        (Err(_), Some(Cut::HashMismatch(got))) => ctx.refuse(
            StatusCode::BAD_REQUEST,
            "hash",
            format!("the content's BLAKE3 hash is {got}, not its name {name}; nothing was stored"),
        ),
        (Err(_), Some(Cut::TooLarge(max))) => ctx.refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "size",
            format!(
                "the body is larger than the largest file accepted ({}); nothing was stored",
                rewind_core::stats::human_bytes(max)
            ),
        ),
        (Err(_), Some(Cut::OverQuota)) => {
            let r = repo.clone();
            let used = blocking(move || r.usage()).await.map(|u| u.0).unwrap_or(0);
            over_quota(ctx, limits.max_size.unwrap_or(0), used)
        }
        (Err(_), Some(Cut::Client(e))) => ctx.answer(
            StatusCode::BAD_REQUEST,
            format!("the request body broke off ({e}); nothing was stored"),
        ),
        (Err(Error::Refused(why)), None) => ctx.refuse(
            StatusCode::FORBIDDEN,
            "role",
            // Whoever asked: the refusal's own reason says why.
            format!("{} {name} was not stored: {why}", t.what()),
        ),
        (Err(e), None) if e.is_storage_full() => ctx.answer(
            StatusCode::INSUFFICIENT_STORAGE,
            format!("the server's storage is full: {e}"),
        ),
        (Err(e), None) => ctx.failed(&e),
    }
}

fn over_quota(ctx: &Ctx, max: u64, used: u64) -> Response {
    ctx.refuse(
        StatusCode::INSUFFICIENT_STORAGE,
        "quota",
        format!(
            "repository {} is at its quota: {} of {} used; nothing was stored. Forget and prune old snapshots, or ask the operator to raise it (rewind serve repo set {} --max-size SIZE); if a compromised client filled it, the operator moves what its token stored out (rewind serve quarantine --repo {} --token NAME --since TIME)",
            ctx.repo,
            rewind_core::stats::human_bytes(used),
            rewind_core::stats::human_bytes(max),
            ctx.repo,
            ctx.repo
        ),
    )
}

async fn delete_file(
    ctx: &Ctx,
    repo: &Arc<Repo>,
    role: Role,
    t: FileType,
    name: String,
    limits: Limits,
) -> Response {
    if matches!(t, FileType::Config | FileType::Key) {
        // Without them nothing can be read: no token may remove them. A
        // compromised password's key file is removed on the server itself.
        let path = ctx.app.stored_path(&ctx.repo, t, &name);
        return ctx.refuse(
            StatusCode::FORBIDDEN,
            "role",
            match t {
                FileType::Config => format!(
                    "the server never deletes a repository's config through its API: without it nothing in the repository can be read (it is {path} on the server)"
                ),
                _ => format!(
                    "the server never deletes key files through its API; remove {path} on the server itself"
                ),
            },
        );
    }
    let allowed = match t {
        // Liveness markers of running backups, not data.
        FileType::Running => role != Role::Read,
        _ => role == Role::Admin,
    };
    if !allowed {
        return ctx.refuse(
            StatusCode::FORBIDDEN,
            "role",
            format!(
                "a {role} token cannot delete {} files (admin only)",
                t.what()
            ),
        );
    }
    if t == FileType::Running && role == Role::Backup {
        // A backup token removes its own markers, or stale ones (a marker
        // of a live backup is refreshed every 5 minutes): another client's
        // live marker is what keeps a prune off that client's new data.
        let mut owner = repo.markers.lock().expect("markers").get(&name).cloned();
        if owner.is_none() {
            // Stored before this process started (or through another
            // server of the same store): the record says by whom.
            let owners = ctx.app.marker_owners.clone();
            let key = state::marker_owner_key(&ctx.repo, &name);
            owner = match blocking(move || owners.read(FileType::Running, &key)).await {
                Ok(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                Err(Error::Missing { .. }) => None,
                Err(e) => return ctx.failed(&e),
            };
        }
        if owner.as_deref() != Some(ctx.token.as_str()) {
            let b = repo.backend.clone();
            let n = name.clone();
            let stored = match blocking(move || b.modified(t, &n)).await {
                Ok(s) => s,
                Err(Error::Missing { .. }) => return ctx.answer(StatusCode::NO_CONTENT, ""),
                Err(e) => return ctx.failed(&e),
            };
            let live = stored
                .and_then(|s| s.elapsed().ok())
                .is_none_or(|age| age < MARKER_STALE);
            if live {
                return ctx.refuse(
                    StatusCode::FORBIDDEN,
                    "role",
                    format!("running marker {name} belongs to another client's backup in progress"),
                );
            }
        }
    }
    let _one_at_a_time = if t == FileType::Snapshot {
        Some(repo.snapshot_deletes.lock().await)
    } else {
        None
    };
    if t != FileType::Running {
        let b = repo.backend.clone();
        let n = name.clone();
        let stored = match blocking(move || b.modified(t, &n)).await {
            Ok(s) => s,
            Err(Error::Missing { .. }) => return ctx.answer(StatusCode::NO_CONTENT, ""),
            Err(e) => return ctx.failed(&e),
        };
        if let Some(until) = retained_until(stored, limits) {
            return ctx.refuse(
                StatusCode::FORBIDDEN,
                "retention",
                format!(
                    "{} {name} is kept until {until}: the server deletes nothing younger than {} days (--min-delete-age, set on the server)",
                    t.what(),
                    limits.min_delete_age_days
                ),
            );
        }
        if t == FileType::Snapshot && limits.history_days > 0 {
            let b = repo.backend.clone();
            let n = name.clone();
            match blocking(move || history_refusal(b.as_ref(), &n, limits.history_days)).await {
                Ok(None) => {}
                Ok(Some(why)) => return ctx.refuse(StatusCode::FORBIDDEN, "history", why),
                Err(e) => return ctx.failed(&e),
            }
        }
    }
    let b = repo.backend.clone();
    let n = name.clone();
    match blocking(move || b.delete(t, &n)).await {
        Ok(()) => {
            if t == FileType::Running {
                repo.markers.lock().expect("markers").remove(&name);
                let owners = ctx.app.marker_owners.clone();
                let key = state::marker_owner_key(&ctx.repo, &name);
                if let Err(e) = blocking(move || owners.delete(FileType::Running, &key)).await {
                    log(&format!(
                        "removing the record of running marker {name} of {} failed: {e}",
                        ctx.repo
                    ));
                }
            }
            *repo.usage.lock().expect("usage") = None;
            ctx.answer(StatusCode::NO_CONTENT, "")
        }
        Err(e) => ctx.failed(&e),
    }
}

/// Why deleting snapshot `name` would cut the history below `days`, judged
/// by when the server stored each snapshot (the only time it can trust:
/// snapshots are encrypted, and injected ones are new):
/// - the span from the oldest snapshot to now may not fall below the floor
///   (or below what it is, for a younger repository);
/// - within the floor, the last snapshot stored in a calendar month (UTC)
///   stays; the month's earlier ones may go.
fn history_refusal(b: &dyn Backend, name: &str, days: u32) -> Result<Option<String>> {
    let now = Timestamp::now();
    let mut stored = Vec::new();
    for f in b.list(FileType::Snapshot)? {
        match b.modified(FileType::Snapshot, &f.name) {
            Ok(Some(t)) => stored.push((f.name, Timestamp::try_from(t).unwrap_or(now))),
            Ok(None) => {
                return Ok(Some(
                    "the storage does not say when snapshots were stored, so the server keeps them"
                        .into(),
                ))
            }
            Err(Error::Missing { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    let Some(&(_, this)) = stored.iter().find(|(n, _)| n == name) else {
        return Ok(None);
    };
    let floor = jiff::SignedDuration::from_hours(24 * i64::from(days));
    let span = |oldest: Option<Timestamp>| {
        oldest.map_or(jiff::SignedDuration::ZERO, |t| now.duration_since(t))
    };
    let before = span(stored.iter().map(|s| s.1).min());
    let after = span(stored.iter().filter(|(n, _)| n != name).map(|s| s.1).min());
    if after < before.min(floor) {
        return Ok(Some(format!(
            "snapshot {name} is the oldest; without it the repository would hold {} days of history, and the server keeps {days} (set on the server)",
            after.as_secs() / 86_400
        )));
    }
    let month = |t: Timestamp| {
        let d = t.to_zoned(jiff::tz::TimeZone::UTC);
        (d.year(), d.month())
    };
    if now.duration_since(this) >= floor {
        return Ok(None);
    }
    // The month's others; the last stored is the one that stays (of two
    // stored at the same instant, the greater name).
    let others: Vec<&(String, Timestamp)> = stored
        .iter()
        .filter(|(n, t)| n != name && month(*t) == month(this))
        .collect();
    let later = |(n, t): &&(String, Timestamp)| *t > this || (*t == this && n.as_str() > name);
    if !others.iter().any(later) {
        let (y, m) = month(this);
        let which = if others.is_empty() {
            "the only one"
        } else {
            "the last one"
        };
        return Ok(Some(format!(
            "snapshot {name} is {which} stored in {y}-{m:02}; the server keeps the last of each month for the last {days} days (set on the server)"
        )));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let h = "ab".repeat(32);
        assert!(matches!(parse_path("/r/").unwrap().1, Target::Repo));
        assert!(matches!(parse_path("/r").unwrap().1, Target::Repo));
        assert!(matches!(
            parse_path("/r/data/").unwrap().1,
            Target::List(FileType::Pack)
        ));
        assert!(matches!(
            parse_path(&format!("/r/snapshots/{h}")).unwrap().1,
            Target::File(FileType::Snapshot, _)
        ));
        assert!(matches!(
            parse_path("/r/config/config").unwrap().1,
            Target::File(FileType::Config, _)
        ));
        for bad in [
            "/../etc/passwd".to_string(),
            "/r/../../etc/passwd".into(),
            "/r/data/..".into(),
            format!("/r/data/{}", "AB".repeat(32)),
            format!("/r/data/{h}/x"),
            "/r/data/%2e%2e".into(),
            "/r%2f../data/".into(),
            "/r/keys/config".into(),
            "/r/config/../config".into(),
            "/.r/".into(),
            "//".into(),
        ] {
            assert!(parse_path(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(
            parse_range(&HeaderValue::from_static("bytes=6-10")),
            Some((6, 5))
        );
        assert_eq!(parse_range(&HeaderValue::from_static("bytes=10-6")), None);
        assert_eq!(parse_range(&HeaderValue::from_static("bytes=6-")), None);
        assert_eq!(
            parse_range(&HeaderValue::from_static("bytes=0-99999999999")),
            None
        );
    }

    fn app_on(data: &std::path::Path, store: state::StateStore) -> Arc<App> {
        let config = Config {
            data: Some(data.to_path_buf()),
            storage: None,
            storage_options: Default::default(),
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: None,
            tls_self_signed: false,
            insecure_listen: false,
            defaults: Limits::default(),
            max_object_size: crate::DEFAULT_MAX_OBJECT_SIZE,
            max_upload_memory: crate::DEFAULT_MAX_UPLOAD_MEMORY,
            upload_memory_wait: crate::DEFAULT_UPLOAD_MEMORY_WAIT,
            max_uploads_per_token: crate::DEFAULT_MAX_UPLOADS_PER_TOKEN,
            inbox_schedule: Default::default(),
            compression: rewind_core::repository::COMPRESSION_LEVEL,
        };
        Arc::new(App::new(config, store))
    }

    fn add_token(store: &state::StateStore) -> String {
        let mut st = store.load().unwrap();
        let token = st
            .add_token(None, "team", state::Role::Backup, None)
            .unwrap();
        store.save(&st).unwrap();
        token
    }

    /// Eight clients starting at once (CI saw "unknown token"): a request
    /// that comes while another looks at the state file is not answered
    /// from the state as it was before the last token was added.
    #[test]
    fn a_token_added_while_another_request_looks_is_known() {
        let dir = tempfile::tempdir().unwrap();
        let store = state::StateStore::File(dir.path().to_path_buf());
        let app = app_on(dir.path(), store.clone());
        app.state().unwrap();
        let token = add_token(&store);
        // Another request is in the middle of its look.
        app.state.lock().unwrap().refreshing = true;
        let asking = {
            let app = app.clone();
            std::thread::spawn(move || app.state().unwrap())
        };
        let started = Instant::now();
        while !asking.is_finished() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "a request waits for another's look at a state file"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let seen = asking.join().unwrap();
        assert!(seen.authenticate(&token, Timestamp::now()).is_ok());
    }

    /// With the state in a store, a request whose token is unknown takes
    /// no look that began before it came: the look in flight may have
    /// read the store before the token was added.
    #[test]
    fn an_unknown_token_waits_for_a_look_that_began_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> = Arc::new(rewind_core::backend::LocalBackend::new(
            dir.path().join("store"),
        ));
        let store = state::StateStore::Store(backend);
        let app = app_on(dir.path(), store.clone());
        app.state().unwrap();
        // A look begins (it will read the store as it is now)...
        {
            let mut l = app.state.lock().unwrap();
            l.refreshing = true;
            l.looks += 1;
        }
        // ...then a token is made, and its client comes.
        let token = add_token(&store);
        let asking = {
            let app = app.clone();
            std::thread::spawn(move || app.fresh_state().unwrap())
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(!asking.is_finished(), "it did not wait for the look");
        // The look ends with what it read: the state before the token.
        {
            let mut l = app.state.lock().unwrap();
            l.refreshing = false;
            l.state_from = l.looks;
            l.checked = Some(Instant::now());
            l.last_look = Some(Instant::now());
        }
        app.refreshed.notify_all();
        let seen = asking.join().unwrap();
        assert!(
            seen.authenticate(&token, Timestamp::now()).is_ok(),
            "answered from a look that began before the request"
        );
    }

    /// A store whose listing panics, when told to.
    #[derive(Debug)]
    struct Panicky {
        inner: rewind_core::backend::LocalBackend,
        panic: std::sync::atomic::AtomicBool,
    }

    impl Backend for Panicky {
        fn location(&self) -> String {
            self.inner.location()
        }
        fn create(&self) -> Result<()> {
            self.inner.create()
        }
        fn list(&self, t: FileType) -> Result<Vec<rewind_core::backend::FileInfo>> {
            if self.panic.load(std::sync::atomic::Ordering::SeqCst) {
                panic!("a look fails in an unexpected way");
            }
            self.inner.list(t)
        }
        fn read(&self, t: FileType, name: &str) -> Result<Vec<u8>> {
            self.inner.read(t, name)
        }
        fn read_range(&self, t: FileType, name: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
            self.inner.read_range(t, name, offset, len)
        }
        fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<WriteOutcome> {
            self.inner.write(t, name, data)
        }
        fn delete(&self, t: FileType, name: &str) -> Result<()> {
            self.inner.delete(t, name)
        }
    }

    /// A look that ends in a panic does not leave the others waiting for
    /// ever: the next request makes its own.
    #[test]
    fn a_look_that_panics_lets_the_others_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(Panicky {
            inner: rewind_core::backend::LocalBackend::new(dir.path().join("store")),
            panic: false.into(),
        });
        let app = app_on(dir.path(), state::StateStore::Store(backend.clone()));
        app.state().unwrap();
        backend
            .panic
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let app2 = app.clone();
        assert!(std::thread::spawn(move || app2.fresh_state())
            .join()
            .is_err());
        assert!(!app.state.lock().unwrap().refreshing, "the look still runs");
        backend
            .panic
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let app2 = app.clone();
        let asking = std::thread::spawn(move || app2.fresh_state().unwrap());
        let started = Instant::now();
        while !asking.is_finished() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "waits for ever"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        asking.join().unwrap();
    }
}
