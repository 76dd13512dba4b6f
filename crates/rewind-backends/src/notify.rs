//! Webhook alerts: a JSON document POSTed to a URL the user configured
//! (reqwest, rustls; bounded in time).

use std::time::Duration;

use rewind_core::{Error, Result};

/// POSTs `body` as JSON to `url`; fails on a transport error or a non-2xx
/// answer, within 15 seconds.
pub fn post_json(url: &str, body: &serde_json::Value) -> Result<()> {
    let bad = |e: String| Error::io(format!("notify {url}"), std::io::Error::other(e));
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(Error::InvalidInput(format!(
            "notify URL {url:?}: give an http:// or https:// URL"
        )));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let body = serde_json::to_vec(body).map_err(|e| bad(e.to_string()))?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let r = client
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| bad(e.to_string()))?;
        if !r.status().is_success() {
            return Err(bad(format!("the server answered {}", r.status())));
        }
        Ok(())
    })
}
