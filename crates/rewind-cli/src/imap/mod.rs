//! Mail over IMAP as a backup source: `rewind backup imap://USER@HOST`.
//!
//! The protocol is the `imap` crate's (parsing, commands); the TLS is
//! rustls, the same as everywhere in rewind. A mailbox becomes a tree of
//! folders of `.eml` files ([`backup`], DESIGN §18).

pub mod backup;
pub mod restore;
pub mod utf7;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// How the connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (port 993).
    Tls,
    /// Plain, then `STARTTLS` before logging in (port 143); refused if
    /// the server does not offer it.
    StartTls,
    /// No TLS: only to a loopback address.
    None,
}

/// How to log in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// `LOGIN` with a password.
    Password,
    /// `AUTHENTICATE XOAUTH2` with an access token (Gmail, Microsoft 365).
    XOAuth2,
}

/// `imap://USER@HOST[:PORT][/FOLDER][?tls=starttls|none&auth=xoauth2&ca=FILE]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImapUrl {
    pub user: String,
    pub host: String,
    pub port: u16,
    /// One folder (and its subfolders) only.
    pub folder: Option<String>,
    pub tls: Security,
    pub auth: Auth,
    /// Extra trusted certificates (PEM), beside the system's.
    pub ca: Option<PathBuf>,
}

/// Whether a backup source names a mailbox.
pub fn is_imap(source: &str) -> bool {
    source.starts_with("imap://") || source.starts_with("imaps://")
}

fn decode(s: &str) -> Result<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| anyhow!("{s:?} is not UTF-8 once percent-decoded"))
}

impl ImapUrl {
    pub fn parse(s: &str) -> Result<ImapUrl> {
        // The address is not echoed: it may hold a password by mistake.
        let bad = |why: &str| {
            anyhow!("that is not a mailbox address ({why}): write imap://USER@HOST[:PORT][/FOLDER], e.g. imap://me%40example.com@imap.example.com")
        };
        let rest = s
            .strip_prefix("imaps://")
            .or_else(|| s.strip_prefix("imap://"))
            .ok_or_else(|| bad("it starts with neither imap:// nor imaps://"))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, folder) = rest.split_once('/').unwrap_or((rest, ""));
        let (user, hostport) = authority
            .rsplit_once('@')
            .ok_or_else(|| bad("no USER@ before the host"))?;
        if user.is_empty() {
            return Err(bad("the user is empty"));
        }
        if user.contains(':') {
            return Err(bad(
                "a password in the address is not accepted: give it in REWIND_IMAP_PASSWORD_FILE",
            ));
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            // [IPv6]:PORT
            let (h, rest) = v6
                .split_once(']')
                .ok_or_else(|| bad("an IPv6 address needs its closing ]"))?;
            let port = match rest.strip_prefix(':') {
                Some(p) => Some(p.parse().map_err(|_| bad("the port is not a number"))?),
                None if rest.is_empty() => None,
                None => return Err(bad("text after the IPv6 address")),
            };
            (h, port)
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => {
                    if p.contains(':') {
                        return Err(bad("write an IPv6 address in brackets: [::1]"));
                    }
                    (
                        h,
                        Some(p.parse().map_err(|_| bad("the port is not a number"))?),
                    )
                }
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        let mut tls = Security::Tls;
        let mut auth = Auth::Password;
        let mut ca = None;
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            match kv.split_once('=').unwrap_or((kv, "")) {
                ("tls", "implicit" | "yes") => tls = Security::Tls,
                ("tls", "starttls") => tls = Security::StartTls,
                ("tls", "none" | "no") => tls = Security::None,
                ("auth", "password") => auth = Auth::Password,
                ("auth", "xoauth2") => auth = Auth::XOAuth2,
                ("ca", f) if !f.is_empty() => ca = Some(PathBuf::from(decode(f)?)),
                _ => {
                    return Err(bad(&format!(
                        "unknown option {kv:?}; known: tls=implicit|starttls|none, auth=password|xoauth2, ca=FILE"
                    )))
                }
            }
        }
        let port = port.unwrap_or(if tls == Security::Tls { 993 } else { 143 });
        let host = host.to_string();
        if tls == Security::None && !is_loopback(&host) {
            bail!(
                "tls=none sends the password and the mail unencrypted: it is allowed only to this machine (127.0.0.1, ::1, localhost), not to {host}; use TLS (the default) or tls=starttls"
            );
        }
        let folder = decode(folder)?;
        Ok(ImapUrl {
            user: decode(user)?,
            host,
            port,
            folder: (!folder.trim_matches('/').is_empty())
                .then(|| folder.trim_matches('/').to_string()),
            tls,
            auth,
            ca,
        })
    }

    /// What the snapshot's `paths` say: no options, no secrets.
    pub fn location(&self) -> String {
        let user =
            percent_encoding::utf8_percent_encode(&self.user, percent_encoding::NON_ALPHANUMERIC);
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match &self.folder {
            Some(f) => format!("imap://{user}@{host}:{}/{f}", self.port),
            None => format!("imap://{user}@{host}:{}", self.port),
        }
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A byte stream to the server, TLS or not.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A logged-in IMAP session.
pub type Session = imap::Session<Box<dyn Stream>>;

/// The secret that logs in: from `REWIND_IMAP_PASSWORD_FILE`,
/// `REWIND_IMAP_PASSWORD_COMMAND`, `REWIND_IMAP_PASSWORD`, else a prompt
/// (for XOAUTH2: the token `REWIND_IMAP_TOKEN_COMMAND` prints).
pub fn secret(url: &ImapUrl) -> Result<String> {
    let first_line = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    };
    let run = |var: &str, cmd: &std::ffi::OsStr| -> Result<String> {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("cannot run {var} {cmd:?}"))?;
        if !out.status.success() {
            bail!("{var} {cmd:?} failed ({})", out.status);
        }
        Ok(first_line(&out.stdout))
    };
    if url.auth == Auth::XOAuth2 {
        let cmd = std::env::var_os("REWIND_IMAP_TOKEN_COMMAND").ok_or_else(|| {
            anyhow!("auth=xoauth2 needs REWIND_IMAP_TOKEN_COMMAND: a command that prints a current access token (e.g. from oauth2l or your provider's CLI)")
        })?;
        return run("REWIND_IMAP_TOKEN_COMMAND", &cmd);
    }
    if let Some(f) = std::env::var_os("REWIND_IMAP_PASSWORD_FILE") {
        let b = std::fs::read(&f).with_context(|| {
            format!(
                "cannot read the mail password file {} (REWIND_IMAP_PASSWORD_FILE)",
                PathBuf::from(&f).display()
            )
        })?;
        return Ok(first_line(&b));
    }
    if let Some(cmd) = std::env::var_os("REWIND_IMAP_PASSWORD_COMMAND") {
        return run("REWIND_IMAP_PASSWORD_COMMAND", &cmd);
    }
    if let Ok(p) = std::env::var("REWIND_IMAP_PASSWORD") {
        return Ok(p);
    }
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return rpassword::prompt_password(format!("Password of {}: ", url.location()))
            .context("cannot read the mail password");
    }
    bail!(
        "no password for {}: set REWIND_IMAP_PASSWORD_FILE (a file holding it), REWIND_IMAP_PASSWORD_COMMAND, or run on a terminal to be asked",
        url.location()
    )
}

/// The TLS settings: the system's roots, plus the `ca=` file.
fn tls_config(url: &ImapUrl) -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    if let Some(ca) = &url.ca {
        let pem = std::fs::read(ca)
            .with_context(|| format!("cannot read the CA file {} (ca=)", ca.display()))?;
        let mut n = 0;
        for c in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
            let c: rustls_pki_types::CertificateDer =
                c.map_err(|e| anyhow!("ca={}: not a PEM certificate file: {e}", ca.display()))?;
            roots
                .add(c)
                .map_err(|e| anyhow!("ca={}: {e}", ca.display()))?;
            n += 1;
        }
        if n == 0 {
            bail!("ca={}: no certificate in it", ca.display());
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow!("set up TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn wrap_tls(url: &ImapUrl, tcp: TcpStream) -> Result<Box<dyn Stream>> {
    let name = rustls_pki_types::ServerName::try_from(url.host.clone())
        .map_err(|_| anyhow!("{} is not a host name TLS can check", url.host))?;
    let conn = rustls::ClientConnection::new(tls_config(url)?, name)
        .map_err(|e| anyhow!("set up TLS with {}: {e}", url.host))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    // The handshake now, so that a certificate problem is said as one.
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .with_context(|| format!("TLS with {}:{} failed", url.host, url.port))?;
    }
    Ok(Box::new(tls))
}

/// Connects and logs in.
pub fn connect(url: &ImapUrl, secret: &str) -> Result<Session> {
    let at = format!("{}:{}", url.host, url.port);
    let addrs: Vec<std::net::SocketAddr> =
        std::net::ToSocketAddrs::to_socket_addrs(&(url.host.as_str(), url.port))
            .with_context(|| format!("cannot resolve the mail server {}", url.host))?
            .collect();
    // tls=none: every address the name resolves to must be this machine.
    if url.tls == Security::None && !addrs.iter().all(|a| a.ip().is_loopback()) {
        bail!(
            "tls=none is allowed only to this machine, and {} resolves elsewhere",
            url.host
        );
    }
    let tcp = addrs
        .iter()
        .find_map(|a| TcpStream::connect_timeout(a, Duration::from_secs(20)).ok())
        .ok_or_else(|| anyhow!("cannot connect to the mail server {at}"))?;
    // A server that stops answering is a failure, not a hang.
    tcp.set_read_timeout(Some(Duration::from_secs(120)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(120)))?;
    let client = match url.tls {
        Security::Tls => {
            let mut c = imap::Client::new(wrap_tls(url, tcp)?);
            c.read_greeting()
                .with_context(|| format!("no IMAP greeting from {at}"))?;
            c
        }
        Security::None => {
            let mut c = imap::Client::new(Box::new(tcp) as Box<dyn Stream>);
            c.read_greeting()
                .with_context(|| format!("no IMAP greeting from {at}"))?;
            c
        }
        Security::StartTls => {
            let mut tcp = tcp;
            starttls(&mut tcp, &at)?;
            imap::Client::new(wrap_tls(url, tcp)?)
        }
    };
    let session = match url.auth {
        Auth::Password => client.login(&url.user, secret).map_err(|(e, _)| e),
        Auth::XOAuth2 => client
            .authenticate(
                "XOAUTH2",
                &XOAuth2 {
                    user: url.user.clone(),
                    token: secret.to_string(),
                },
            )
            .map_err(|(e, _)| e),
    };
    session.map_err(|e| match e {
        imap::Error::No(_) | imap::Error::Bad(_) => anyhow!(
            "the mail server {at} refused the login of {}: {e} (wrong password or token?)",
            url.user
        ),
        e => anyhow!("logging in to {at} failed: {e}"),
    })
}

/// One line from the server, read a byte at a time (nothing past it is
/// taken: after STARTTLS the next bytes are the TLS handshake's).
fn read_line(tcp: &mut TcpStream, at: &str) -> Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if tcp
            .read(&mut b)
            .with_context(|| format!("read from {at}"))?
            == 0
        {
            bail!("the mail server {at} closed the connection");
        }
        line.push(b[0]);
        if line.len() > 64 * 1024 {
            bail!("the mail server {at} sent a line too long for a greeting");
        }
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_string())
}

/// Reads the greeting and asks for STARTTLS, in plain text.
fn starttls(tcp: &mut TcpStream, at: &str) -> Result<()> {
    let greeting = read_line(tcp, at)?;
    if !greeting.starts_with("* OK") {
        bail!("{at} does not greet like an IMAP server: {greeting:?}");
    }
    tcp.write_all(b"a0 STARTTLS\r\n")
        .with_context(|| format!("write to {at}"))?;
    loop {
        let line = read_line(tcp, at)?;
        if let Some(answer) = line.strip_prefix("a0 ") {
            if answer.starts_with("OK") {
                return Ok(());
            }
            bail!("the mail server {at} does not offer STARTTLS ({answer}); use TLS (port 993, the default)");
        }
    }
}

struct XOAuth2 {
    user: String,
    token: String,
}

impl imap::Authenticator for XOAuth2 {
    type Response = String;
    fn process(&self, _: &[u8]) -> String {
        format!("user={}\x01auth=Bearer {}\x01\x01", self.user, self.token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let u = ImapUrl::parse("imap://me%40example.com@imap.example.com/INBOX").unwrap();
        assert_eq!(
            (u.user.as_str(), u.host.as_str(), u.port),
            ("me@example.com", "imap.example.com", 993)
        );
        assert_eq!(u.folder.as_deref(), Some("INBOX"));
        assert_eq!(
            u.location(),
            "imap://me%40example%2Ecom@imap.example.com:993/INBOX"
        );
        let u = ImapUrl::parse("imap://a@[::1]:1143?tls=none").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.tls),
            ("::1", 1143, Security::None)
        );
        assert_eq!(u.location(), "imap://a@[::1]:1143");
        let u = ImapUrl::parse("imap://a@host?tls=starttls&auth=xoauth2").unwrap();
        assert_eq!(
            (u.port, u.tls, u.auth),
            (143, Security::StartTls, Auth::XOAuth2)
        );
        for bad in [
            "imap://host",
            "imap://a:pw@host",
            "imap://a@::1",
            "imap://a@[::1",
            "imap://a@host:x",
            "imap://a@host?tls=maybe",
            "imap://a@example.com?tls=none",
            "http://a@host",
        ] {
            let e = ImapUrl::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("pw"), "{bad}: {e}");
        }
    }
}
