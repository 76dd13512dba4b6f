//! The web UI: find and restore a file without the command line.
//!
//! `rewind ui` serves one repository that it opened itself, on loopback,
//! to whoever holds the one-time login token it prints; `rewind serve`
//! serves the same pages under `/ui/` to its read and admin tokens, where
//! the login takes the token and the repository's password (the server
//! stores repositories it cannot read). Pages are rendered on the server
//! ([`pages`]); there is no script at all.
//!
//! Security (DESIGN §16b): every request but the login page and the style
//! sheet needs a session cookie (`HttpOnly`, `SameSite=Strict`); every
//! change (a POST) needs the session's CSRF token and, where the browser
//! sends one, an `Origin` of this server; a strict Content-Security-Policy
//! allows no script, no inline style and no frames; `rewind ui` answers
//! only to the host names of the address it printed (no DNS rebinding);
//! failed logins are limited to [`MAX_FAILED_LOGINS`] a minute; the
//! one-time token works once. Paths are looked up in a snapshot's trees,
//! never on this machine's file system; the only thing written here is a
//! restore, to the folder the person typed (`rewind ui` only).

mod html;
mod pages;
mod transfer;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State as AxState};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use http_body_util::BodyExt;

use rewind_core::format::snapshot::SnapshotFile;
use rewind_core::id::SnapshotId;
use rewind_core::repository::Repository;
use rewind_core::{Error, Result};

pub use html::display_bytes;

/// Failed logins allowed in a minute; more get 429.
pub const MAX_FAILED_LOGINS: usize = 5;

/// A session unused this long is forgotten.
const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);

/// How long a listing of the snapshots serves the pages of a session.
const SNAPSHOTS_FRESH: Duration = Duration::from_secs(5);

/// Largest form a POST may send.
const MAX_FORM: usize = 64 * 1024;

/// What a login to a server's UI opened.
pub struct Opened {
    /// The repository, opened with the password given.
    pub repo: Arc<Repository>,
    /// Its name, for the page header.
    pub label: String,
    /// Whether the login still holds (the token not revoked or expired):
    /// asked at most every [`RECHECK`], and the session ends when not.
    pub still_valid: Option<Validity>,
}

/// Tells whether a session's login still holds.
pub type Validity = Arc<dyn Fn() -> bool + Send + Sync>;

/// How often a session's login is checked again.
const RECHECK: Duration = Duration::from_secs(5);

/// Sessions kept at most; past it the least recently used goes.
const MAX_SESSIONS: usize = 32;

/// Logins checked at once (each opens a repository: a key derivation of
/// 64 MiB); more get 429.
const LOGINS_AT_ONCE: usize = 2;

/// Opens a server's repository for a token and a password, or says why not
/// (shown on the login page).
pub type ServedLogin =
    Arc<dyn Fn(&str, &[u8]) -> std::result::Result<Opened, String> + Send + Sync>;

/// The agent's status as `rewind agent status --json` prints it, or `None`
/// where no agent is configured.
pub type AgentStatus = Arc<dyn Fn() -> Option<serde_json::Value> + Send + Sync>;

/// Who may log in, and to what.
pub enum Access {
    /// `rewind ui`: one repository, entered once with the printed token.
    Local {
        /// The repository.
        repo: Arc<Repository>,
        /// Its location, for the page header.
        label: String,
        /// The one-time login token.
        token: String,
    },
    /// `rewind serve`: a token and the repository's password.
    Served(ServedLogin),
}

/// How the UI runs.
pub struct UiConfig {
    /// Who may log in.
    pub access: Access,
    /// Where the pages are mounted: "" (`rewind ui`) or "/ui".
    pub base: String,
    /// Host headers answered (`127.0.0.1:PORT`, `localhost:PORT`); empty:
    /// any.
    pub hosts: Vec<String>,
    /// Whether a restore may write to this machine (`rewind ui`).
    pub restore_here: bool,
    /// The agent's status, if an agent runs here.
    pub agent: Option<AgentStatus>,
    /// Whether the pages are served over TLS (the cookie is then `Secure`).
    pub secure_cookie: bool,
}

/// A listing of the snapshots, shared by the pages of a session.
type SnapshotList = Arc<Vec<(SnapshotId, SnapshotFile)>>;

/// A logged-in browser.
pub(crate) struct Session {
    pub repo: Arc<Repository>,
    pub label: String,
    pub csrf: String,
    last_seen: Mutex<Instant>,
    snapshots: Mutex<Option<(Instant, SnapshotList)>>,
    still_valid: Option<Validity>,
    checked: Mutex<Instant>,
}

impl Session {
    /// The repository's snapshots, oldest first (listed again after
    /// [`SNAPSHOTS_FRESH`], so that a new backup appears).
    pub fn snapshots(&self) -> Result<SnapshotList> {
        if let Some((at, list)) = &*self.snapshots.lock().expect("snapshots") {
            if at.elapsed() < SNAPSHOTS_FRESH {
                return Ok(list.clone());
            }
        }
        let list = Arc::new(self.repo.snapshots()?);
        *self.snapshots.lock().expect("snapshots") = Some((Instant::now(), list.clone()));
        Ok(list)
    }

    /// One snapshot by its full id.
    pub fn snapshot(&self, id: &str) -> Result<(SnapshotId, SnapshotFile)> {
        let list = self.snapshots()?;
        list.iter()
            .find(|(sid, _)| sid.to_hex() == id)
            .cloned()
            .ok_or_else(|| Error::SnapshotNotFound(id.to_string()))
    }
}

/// The UI's state.
pub struct Ui {
    config: UiConfig,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Failed logins of the last minute, by the address they came from.
    failed_logins: Mutex<HashMap<Option<std::net::IpAddr>, VecDeque<Instant>>>,
    token_used: Mutex<bool>,
    login_slots: Arc<tokio::sync::Semaphore>,
    pub(crate) jobs: transfer::Jobs,
}

impl Ui {
    /// A UI with no session yet.
    pub fn new(config: UiConfig) -> Arc<Ui> {
        Arc::new(Ui {
            config,
            sessions: Mutex::new(HashMap::new()),
            failed_logins: Mutex::new(HashMap::new()),
            token_used: Mutex::new(false),
            login_slots: Arc::new(tokio::sync::Semaphore::new(LOGINS_AT_ONCE)),
            jobs: transfer::Jobs::default(),
        })
    }

    /// The axum router of the pages, to serve alone or nest under `base`.
    pub fn router(self: &Arc<Ui>) -> axum::Router {
        axum::Router::new()
            .fallback(handle)
            .with_state(self.clone())
    }

    pub(crate) fn base(&self) -> &str {
        &self.config.base
    }

    pub(crate) fn restore_here(&self) -> bool {
        self.config.restore_here
    }

    pub(crate) fn agent(&self) -> Option<&AgentStatus> {
        self.config.agent.as_ref()
    }

    fn frame<'a>(&'a self, s: Option<&'a Session>) -> html::Frame<'a> {
        html::Frame {
            base: &self.config.base,
            label: s.map_or("", |s| s.label.as_str()),
            csrf: s.map(|s| s.csrf.as_str()),
            agent: self.config.agent.is_some(),
        }
    }

    /// A whole page as a response.
    pub(crate) fn page(&self, s: Option<&Session>, status: StatusCode, p: &html::Page) -> Response {
        let doc = html::render(p, &self.frame(s));
        let mut r = Response::new(Body::from(doc));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        r
    }

    /// An error as a page: what went wrong and what to do.
    pub(crate) fn error(&self, s: Option<&Session>, e: &Error) -> Response {
        let (status, title) = match e {
            Error::SnapshotNotFound(_) | Error::Missing { .. } => {
                (StatusCode::NOT_FOUND, "Not found")
            }
            Error::InvalidInput(_) => (StatusCode::BAD_REQUEST, "That did not work"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "Something failed"),
        };
        let mut p = html::Page::new(title);
        p.push(format!(
            r#"<div class="alert">{}</div><p><a href="{}/">Back to the timeline</a></p>"#,
            html::esc(&e.to_string()),
            self.config.base
        ));
        self.page(s, status, &p)
    }

    fn session(&self, req: &Request) -> Option<Arc<Session>> {
        let id = cookie(req, COOKIE)?;
        let s = {
            let mut sessions = self.sessions.lock().expect("sessions");
            sessions.retain(|_, s| s.last_seen.lock().expect("seen").elapsed() < SESSION_IDLE);
            sessions.get(id)?.clone()
        };
        // A revoked or expired token ends its sessions.
        if let Some(valid) = &s.still_valid {
            let due = s.checked.lock().expect("checked").elapsed() >= RECHECK;
            if due {
                if !valid() {
                    self.sessions.lock().expect("sessions").remove(id);
                    return None;
                }
                *s.checked.lock().expect("checked") = Instant::now();
            }
        }
        *s.last_seen.lock().expect("seen") = Instant::now();
        Some(s)
    }

    fn start_session(&self, o: Opened) -> String {
        let id = random_token();
        let s = Session {
            repo: o.repo,
            label: o.label,
            csrf: random_token(),
            last_seen: Mutex::new(Instant::now()),
            snapshots: Mutex::new(None),
            still_valid: o.still_valid,
            checked: Mutex::new(Instant::now()),
        };
        let mut sessions = self.sessions.lock().expect("sessions");
        while sessions.len() >= MAX_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| *s.last_seen.lock().expect("seen"))
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => sessions.remove(&k),
                None => break,
            };
        }
        sessions.insert(id.clone(), Arc::new(s));
        id
    }

    /// Whether another login may be tried now from `peer`.
    fn login_allowed(&self, peer: Option<std::net::IpAddr>) -> bool {
        let mut all = self.failed_logins.lock().expect("logins");
        all.retain(|_, f| {
            while f
                .front()
                .is_some_and(|t| t.elapsed() > Duration::from_secs(60))
            {
                f.pop_front();
            }
            !f.is_empty()
        });
        all.get(&peer).map_or(0, |f| f.len()) < MAX_FAILED_LOGINS
    }

    fn login_failed(&self, peer: Option<std::net::IpAddr>) {
        self.failed_logins
            .lock()
            .expect("logins")
            .entry(peer)
            .or_default()
            .push_back(Instant::now());
    }

    /// Takes back the attempt counted before a login that worked.
    fn login_worked(&self, peer: Option<std::net::IpAddr>) {
        if let Some(f) = self.failed_logins.lock().expect("logins").get_mut(&peer) {
            f.pop_back();
        }
    }

    /// `Path=...` of the session cookie, and `Secure` over TLS.
    fn cookie_attributes(&self) -> String {
        format!(
            "Path={}/; HttpOnly; SameSite=Strict{}",
            self.config.base,
            if self.config.secure_cookie {
                "; Secure"
            } else {
                ""
            }
        )
    }
}

/// The address a request came from (the servers put it in the request's
/// extensions).
fn peer(req: &Request) -> Option<std::net::IpAddr> {
    req.extensions().get::<SocketAddr>().map(|a| a.ip())
}

const COOKIE: &str = "rewind_session";

/// 32 random bytes as hex.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).expect("the system's random source");
    hex::encode(b)
}

/// Equal without telling how much of it was (BLAKE3 hashes compare in
/// constant time).
fn same_secret(a: &str, b: &str) -> bool {
    blake3::hash(a.as_bytes()) == blake3::hash(b.as_bytes())
}

fn cookie<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The query of a request as pairs.
pub(crate) fn query(req: &Request) -> Vec<(String, Vec<u8>)> {
    html::parse_query(req.uri().query().unwrap_or("").as_bytes())
}

/// A value of a query or form.
pub(crate) fn param<'a>(q: &'a [(String, Vec<u8>)], key: &str) -> Option<&'a [u8]> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_slice())
}

/// A value as text ("" where missing or not UTF-8).
pub(crate) fn param_str<'a>(q: &'a [(String, Vec<u8>)], key: &str) -> &'a str {
    param(q, key)
        .and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or("")
}

pub(crate) fn redirect(to: &str) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SEE_OTHER;
    r.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(to).unwrap_or(HeaderValue::from_static("/")),
    );
    r
}

fn plain(status: StatusCode, msg: &str) -> Response {
    let mut r = Response::new(Body::from(format!("{msg}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Every answer carries these.
fn secure(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

async fn handle(AxState(ui): AxState<Arc<Ui>>, req: Request) -> Response {
    let mut r = route(&ui, req).await;
    secure(&mut r);
    r
}

async fn route(ui: &Arc<Ui>, req: Request) -> Response {
    if !ui.config.hosts.is_empty() {
        let host = host_of(&req);
        if !ui.config.hosts.iter().any(|h| h == host) {
            return plain(
                StatusCode::MISDIRECTED_REQUEST,
                "this rewind UI answers only at the address it printed",
            );
        }
    }
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/static/style.css") => {
            let mut r = Response::new(Body::from(html::CSS));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css"));
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=3600"),
            );
            return r;
        }
        (Method::GET, "/favicon.ico") => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            return r;
        }
        (Method::GET, "/login") => return login_get(ui, req).await,
        (Method::POST, "/login") => return login_post(ui, req).await,
        _ => {}
    }
    let Some(s) = ui.session(&req) else {
        if req.method() == Method::GET && !path.starts_with("/file/") {
            return redirect(&format!("{}/login", ui.config.base));
        }
        return plain(
            StatusCode::UNAUTHORIZED,
            "log in first: open the address that `rewind ui` printed",
        );
    };
    if req.method() == Method::POST {
        if let Some(r) = cross_site(&req) {
            return r;
        }
        let form = match read_form(req).await {
            Ok(f) => f,
            Err(r) => return r,
        };
        if !same_secret(param_str(&form, "csrf"), &s.csrf) {
            return plain(
                StatusCode::FORBIDDEN,
                "refused: the form's security token is missing or stale; reload the page and try again",
            );
        }
        return post(ui, s, &path, form).await;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and POST");
    }
    pages::get(ui, s, &path, query(&req)).await
}

/// The host a request was sent to: `Host`, or the authority of an HTTP/2
/// request.
fn host_of(req: &Request) -> &str {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("")
}

/// A refusal for a POST whose `Origin` is another site's.
fn cross_site(req: &Request) -> Option<Response> {
    let o = req.headers().get(header::ORIGIN)?.to_str().unwrap_or("");
    let origin_host = o
        .strip_prefix("http://")
        .or_else(|| o.strip_prefix("https://"))
        .unwrap_or("");
    (origin_host != host_of(req)).then(|| {
        plain(
            StatusCode::FORBIDDEN,
            "refused: the form was sent from another site",
        )
    })
}

async fn read_form(req: Request) -> std::result::Result<Vec<(String, Vec<u8>)>, Response> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_FORM);
    match limited.collect().await {
        Ok(b) => Ok(html::parse_query(&b.to_bytes())),
        Err(_) => Err(plain(StatusCode::PAYLOAD_TOO_LARGE, "form too large")),
    }
}

async fn post(ui: &Arc<Ui>, s: Arc<Session>, path: &str, form: Vec<(String, Vec<u8>)>) -> Response {
    match path {
        "/logout" => {
            ui.sessions
                .lock()
                .expect("sessions")
                .retain(|_, x| !Arc::ptr_eq(x, &s));
            let mut r = redirect(&format!("{}/login", ui.config.base));
            let gone = format!("{COOKIE}=; Max-Age=0; {}", ui.cookie_attributes());
            if let Ok(v) = HeaderValue::from_str(&gone) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        "/restore" => transfer::start_restore(ui, s, form).await,
        _ => plain(StatusCode::NOT_FOUND, "no such action"),
    }
}

fn logged_in(ui: &Ui, o: Opened) -> Response {
    let id = ui.start_session(o);
    let mut r = redirect(&format!("{}/", ui.config.base));
    let cookie = format!("{COOKIE}={id}; {}", ui.cookie_attributes());
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("hex cookie"),
    );
    r
}

fn too_many() -> Response {
    let mut r = plain(
        StatusCode::TOO_MANY_REQUESTS,
        "too many logins: wait a minute and try again",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    r
}

async fn login_get(ui: &Arc<Ui>, req: Request) -> Response {
    let q = query(&req);
    let given = param_str(&q, "token");
    let Access::Local { repo, label, token } = &ui.config.access else {
        return login_page(ui, StatusCode::OK, None);
    };
    if given.is_empty() {
        return login_page(ui, StatusCode::OK, None);
    }
    // The right token always works (once): failed guesses by others must
    // not lock its owner out. Guesses are limited.
    {
        let mut used = ui.token_used.lock().expect("used");
        if !*used && same_secret(given, token) {
            *used = true;
            drop(used);
            return logged_in(
                ui,
                Opened {
                    repo: repo.clone(),
                    label: label.clone(),
                    still_valid: None,
                },
            );
        }
    }
    let peer = peer(&req);
    if !ui.login_allowed(peer) {
        return too_many();
    }
    ui.login_failed(peer);
    login_page(
        ui,
        StatusCode::FORBIDDEN,
        Some("That login address is not valid, or it was used already: each one works once. Start `rewind ui` again for a new one."),
    )
}

async fn login_post(ui: &Arc<Ui>, req: Request) -> Response {
    let Access::Served(open) = &ui.config.access else {
        return login_page(
            ui,
            StatusCode::FORBIDDEN,
            Some("Open the address that `rewind ui` printed; it logs you in."),
        );
    };
    if let Some(r) = cross_site(&req) {
        return r;
    }
    let peer = peer(&req);
    if !ui.login_allowed(peer) {
        return too_many();
    }
    let Ok(_slot) = ui.login_slots.clone().try_acquire_owned() else {
        return too_many();
    };
    // Counted before the slow check, so that logins sent at once cannot
    // all pass the limit; taken back if it works.
    ui.login_failed(peer);
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let token = param_str(&form, "token").to_string();
    let password = param(&form, "password").unwrap_or_default().to_vec();
    let open = open.clone();
    let opened = tokio::task::spawn_blocking(move || open(&token, &password))
        .await
        .unwrap_or_else(|e| Err(format!("login failed: {e}")));
    match opened {
        Ok(o) => {
            ui.login_worked(peer);
            logged_in(ui, o)
        }
        Err(msg) => login_page(ui, StatusCode::FORBIDDEN, Some(&msg)),
    }
}

fn login_page(ui: &Ui, status: StatusCode, problem: Option<&str>) -> Response {
    let mut p = html::Page::new("Log in");
    p.push(r#"<div class="login">"#);
    if let Some(m) = problem {
        p.push(format!(r#"<div class="alert">{}</div>"#, html::esc(m)));
    }
    match &ui.config.access {
        Access::Local { .. } => p.push(
            "<p>Open the address that <code>rewind ui</code> printed in the terminal: it logs you in once. \
             For a new address, stop <code>rewind ui</code> (Ctrl-C) and start it again.</p>",
        ),
        Access::Served(_) => p.push(format!(
            r#"<p>Log in with a read or admin token of this server and the repository's password.
The server stores backups it cannot read: the password opens the repository for this session only.</p>
<form method="post" action="{}/login"><label for="token">Token</label><input type="password" id="token" name="token" autocomplete="off">
<label for="password">Repository password</label><input type="password" id="password" name="password" autocomplete="off">
<p><button type="submit">Log in</button></p></form>"#,
            ui.config.base
        )),
    }
    p.push("</div>");
    ui.page(None, status, &p)
}

/// Runs `rewind ui` on `listen` (loopback only) until Ctrl-C or SIGTERM;
/// `ready` gets the login address once the port is bound.
pub fn run_local(
    repo: Arc<Repository>,
    label: String,
    listen: SocketAddr,
    agent: Option<AgentStatus>,
    ready: impl FnOnce(&str),
) -> Result<()> {
    if !listen.ip().is_loopback() {
        return Err(Error::InvalidInput(format!(
            "rewind ui listens on this machine only (plain HTTP, and it can restore files here): {listen} is not a loopback address; use 127.0.0.1:PORT, or `rewind serve` for others"
        )));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("rewind-ui")
        .enable_all()
        .build()
        .map_err(|e| Error::io("start the UI's runtime", e))?;
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| Error::io(format!("listen on {listen}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("read the listening address", e))?;
        let token = random_token();
        let hosts = vec![addr.to_string(), format!("localhost:{}", addr.port())];
        let ui = Ui::new(UiConfig {
            access: Access::Local {
                repo,
                label,
                token: token.clone(),
            },
            base: String::new(),
            hosts,
            restore_here: true,
            agent,
            secure_cookie: false,
        });
        ready(&format!("http://{addr}/login?token={token}"));
        let router = ui.router();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Error::io("watch SIGTERM", e))?;
        axum_serve(listener, router, async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
        })
        .await
    });
    drop(runtime);
    result
}

/// Serves `router` on `listener` until `stop` completes (the server's
/// connection settings, [`crate::http::connection_builder`]).
async fn axum_serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => return Ok(()),
        };
        let svc = crate::http::router_service(router.clone(), peer);
        tokio::spawn(async move {
            let _ = crate::http::connection_builder()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                .await;
        });
    }
}
