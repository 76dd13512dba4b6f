//! The agent's alerts: a JSON POST to a webhook and an e-mail over SMTP.
//! An alert is queued in the state file before it is sent, one entry per
//! channel, and stays queued until the channel takes it: an alert that
//! cannot be sent now is retried, not dropped.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use jiff::Timestamp;
use serde_json::json;

use super::config::{Email, NotifyFile};
use super::state::{Pending, State};

/// What happened, for the alert.
pub struct Event<'a> {
    /// `failure`, `recovery`, `missed` or `suspicious`.
    pub kind: &'a str,
    pub job: &'a str,
    pub task: &'a str,
    /// One sentence for a person.
    pub text: String,
    pub snapshot: Option<&'a str>,
    pub message: Option<&'a str>,
}

/// Queues the event for each channel the job has.
pub fn queue(state: &mut State, notify: &NotifyFile, event: &Event<'_>) {
    let body = json!({
        "source": "rewind-agent",
        "event": event.kind,
        "job": event.job,
        "task": event.task,
        "host": super::run::hostname(),
        "time": Timestamp::now().to_string(),
        "text": event.text,
        "snapshot": event.snapshot,
        "message": event.message,
    });
    let mut channels = Vec::new();
    if let Some(url) = &notify.webhook {
        channels.push(json!({"webhook": url}));
    }
    if let Some(email) = &notify.email {
        channels.push(
            json!({"email": serde_json::to_value(EmailRef::from(email)).unwrap_or_default()}),
        );
    }
    for channel in channels {
        state.pending.push(Pending {
            job: event.job.to_string(),
            body: json!({"channel": channel, "alert": body}),
            queued: Timestamp::now(),
            tries: 0,
        });
    }
}

/// The SMTP settings as stored with a queued alert.
#[derive(serde::Serialize, serde::Deserialize)]
struct EmailRef {
    to: Vec<String>,
    from: String,
    server: String,
    security: String,
    user: Option<String>,
    password_file: Option<std::path::PathBuf>,
}

impl From<&Email> for EmailRef {
    fn from(e: &Email) -> EmailRef {
        EmailRef {
            to: e.to.clone(),
            from: e.from.clone(),
            server: e.server.clone(),
            security: e.security.clone(),
            user: e.user.clone(),
            password_file: e.password_file.clone(),
        }
    }
}

/// Sends one queued alert.
pub fn send(p: &Pending) -> Result<()> {
    let alert = &p.body["alert"];
    let channel = &p.body["channel"];
    if let Some(url) = channel["webhook"].as_str() {
        return rewind_backends::notify::post_json(url, alert)
            .with_context(|| format!("webhook {url}"));
    }
    if channel.get("email").is_some() {
        let e: EmailRef = serde_json::from_value(channel["email"].clone())
            .context("a queued e-mail alert is malformed")?;
        return send_email(&e, alert);
    }
    bail!("a queued alert names no channel")
}

fn send_email(e: &EmailRef, alert: &serde_json::Value) -> Result<()> {
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{Message, SmtpTransport, Transport};
    let subject = format!(
        "rewind on {}: {}",
        alert["host"].as_str().unwrap_or("?"),
        alert["text"].as_str().unwrap_or("an alert")
    );
    let mut body = format!("{}\n\n", alert["text"].as_str().unwrap_or(""));
    for k in ["job", "task", "event", "time", "snapshot", "message"] {
        if let Some(v) = alert[k].as_str() {
            body.push_str(&format!("{k}: {v}\n"));
        }
    }
    let mut m = Message::builder()
        .from(
            e.from
                .parse()
                .with_context(|| format!("from address {:?}", e.from))?,
        )
        .subject(subject);
    for to in &e.to {
        m = m.to(to.parse().with_context(|| format!("to address {to:?}"))?);
    }
    let message = m.body(body).context("building the e-mail")?;
    let (host, port) = match e.server.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), Some(p.parse::<u16>().context("SMTP port")?)),
        None => (e.server.clone(), None),
    };
    let mut t = match e.security.as_str() {
        "tls" => SmtpTransport::relay(&host)?,
        "starttls" => SmtpTransport::starttls_relay(&host)?,
        "none" => SmtpTransport::builder_dangerous(&host),
        other => bail!("security {other:?}: use starttls, tls or none"),
    };
    if let Some(p) = port {
        t = t.port(p);
    }
    if let Some(user) = &e.user {
        let password = match &e.password_file {
            Some(f) => std::fs::read_to_string(f)
                .with_context(|| format!("SMTP password file {}", f.display()))?
                .trim_end()
                .to_string(),
            None => String::new(),
        };
        t = t.credentials(Credentials::new(user.clone(), password));
    }
    t.timeout(Some(Duration::from_secs(30)))
        .build()
        .send(&message)
        .with_context(|| format!("SMTP server {}", e.server))?;
    Ok(())
}
