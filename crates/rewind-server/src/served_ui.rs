//! The web UI inside `rewind serve` ([`crate::ui`] under `/ui/`): a read or
//! admin token and the repository's password open that token's repository
//! for one browser session.
//!
//! The repository is read straight from the server's storage, through a
//! read-only [`RepoView`], so the pages show the history an admin client
//! sees.

use std::sync::Arc;

use jiff::Timestamp;

use rewind_core::backend::Backend;
use rewind_core::repository::Repository;
use rewind_core::Error;

use crate::http::App;
use crate::state::Role;
use crate::ui::{Opened, ServedLogin};
use crate::view::RepoView;

/// The login of the server's UI.
pub(crate) fn login(app: Arc<App>) -> ServedLogin {
    Arc::new(move |token: &str, password: &[u8]| {
        let st = app
            .state()
            .map_err(|e| format!("the server cannot read its tokens: {e}"))?;
        let t = st
            .authenticate(token, Timestamp::now())
            .map_err(|_| "unknown, expired or revoked token".to_string())?
            .clone();
        if t.role == Role::Backup {
            return Err(format!(
                "token {} is a backup token: it may only add backups, and cannot open the web UI; log in with a read or admin token",
                t.name
            ));
        }
        let view: Arc<dyn Backend> =
            Arc::new(RepoView::read_only(&app, &t.repo).map_err(|e| e.to_string())?);
        let opened = Repository::open(view, password).map_err(|e| match e {
            Error::WrongPassword { .. } => {
                format!("wrong password for repository {}", t.repo)
            }
            e => format!("cannot open repository {}: {e}", t.repo),
        })?;
        crate::http::log(&format!(
            "web UI: token {} opened repository {}",
            t.name, t.repo
        ));
        // The session lasts while the token works (not revoked, not
        // expired, still not a backup token).
        let (app2, presented) = (app.clone(), token.to_string());
        let still_valid: crate::ui::Validity = Arc::new(move || {
            app2.state().is_ok_and(|st| {
                st.authenticate(&presented, Timestamp::now())
                    .is_ok_and(|t| t.role != Role::Backup)
            })
        });
        Ok(Opened {
            repo: Arc::new(opened),
            label: t.repo,
            still_valid: Some(still_valid),
        })
    })
}
