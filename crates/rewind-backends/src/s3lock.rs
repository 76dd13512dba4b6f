//! The S3 Object Lock requests that opendal does not make: a bucket's lock
//! configuration (read and set), an object's retention date, and (for tests)
//! creating a bucket with Object Lock enabled. Requests are signed with
//! reqsign's AWS SigV4 signer, the one opendal itself uses, with the same
//! credential sources (environment, profile files).

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use md5::Digest as _;
use reqsign_aws_v4::{Credential, DefaultCredentialProvider, RequestSigner};
use reqsign_core::{Context, OsEnv, ProvideCredentialChain, Signer};
use reqsign_file_read_tokio::TokioFileRead;
use rewind_core::backend::retry::{Failure, Retry};
use rewind_core::backend::{LockMode, ObjectLock};

/// A bucket's Object Lock state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BucketLock {
    /// Created without Object Lock (it cannot be turned on later).
    Disabled,
    /// Enabled, but new objects get no retention unless they ask for one.
    NoDefault,
    /// Enabled, with this default retention for every new object.
    Default(ObjectLock),
}

/// Signed raw requests to one bucket.
pub(crate) struct Raw {
    signer: Signer<Credential>,
    http: reqwest::Client,
    endpoint: String,
    bucket: String,
}

/// How a request that failed in transport or got a 5xx answer is retried:
/// four attempts, 0.2 s, 0.8 and 3.2 apart.
const RETRY: Retry = Retry::new(4, Duration::from_millis(200), 4);

/// An attempt that brought no answer to return.
enum Unanswered {
    /// The request could not be made (not retried).
    Request(String),
    /// No answer.
    Transport(reqwest::Error),
    /// A 5xx answer.
    ServerError(Response),
}

/// A response: status, headers, body.
struct Response {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

impl Raw {
    pub(crate) fn new(endpoint: &str, bucket: &str, region: &str, profile: Option<&str>) -> Raw {
        let ctx = Context::new().with_file_read(TokioFileRead).with_env(OsEnv);
        let mut provider = DefaultCredentialProvider::builder().no_imds();
        if let Some(p) = profile {
            provider = provider.with_profile(p);
        }
        let chain = ProvideCredentialChain::new().push(provider.build());
        Raw {
            signer: Signer::new(ctx, chain, RequestSigner::new("s3", region)),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("an HTTP client"),
            endpoint: endpoint.trim_end_matches('/').to_string(),
            bucket: bucket.to_string(),
        }
    }

    /// A client with fixed credentials (tests).
    #[cfg(feature = "testsupport")]
    pub(crate) fn with_keys(endpoint: &str, bucket: &str, access: &str, secret: &str) -> Raw {
        let ctx = Context::new().with_file_read(TokioFileRead).with_env(OsEnv);
        let keys = reqsign_aws_v4::StaticCredentialProvider::new(access, secret);
        Raw {
            signer: Signer::new(ctx, keys, RequestSigner::new("s3", "us-east-1")),
            http: reqwest::Client::new(),
            endpoint: endpoint.trim_end_matches('/').to_string(),
            bucket: bucket.to_string(),
        }
    }

    /// Sends a signed request for `path` under the bucket (`""` for the
    /// bucket itself) with `query`, retrying transport errors and 5xx
    /// answers with [`RETRY`].
    async fn send(
        &self,
        method: http::Method,
        path: &str,
        query: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<Response, String> {
        let mut url = format!("{}/{}", self.endpoint, self.bucket);
        if !path.is_empty() {
            url.push('/');
            url.push_str(path);
        }
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        let (url, method) = (&url, &method);
        let result = RETRY
            .run_async(
                |_| async move {
                    let req = self.signed(method, url, headers, body).await;
                    let req = req.map_err(|e| Failure::Permanent(Unanswered::Request(e)))?;
                    let r = match self.http.execute(req).await {
                        Ok(r) => r,
                        Err(e) => return Err(Failure::Transient(Unanswered::Transport(e))),
                    };
                    let r = Response {
                        status: r.status().as_u16(),
                        headers: r.headers().clone(),
                        body: r.text().await.unwrap_or_default(),
                    };
                    if (500..600).contains(&r.status) {
                        Err(Failure::Transient(Unanswered::ServerError(r)))
                    } else {
                        Ok(r)
                    }
                },
                tokio::time::sleep,
            )
            .await;
        let failed = match result {
            Ok(r) => return Ok(r),
            Err(f) => f,
        };
        match failed.error {
            // The caller reports the server's last answer.
            Unanswered::ServerError(r) => Ok(r),
            Unanswered::Transport(e) => {
                Err(format!("{url}: {e} (tried {} times)", failed.attempts))
            }
            Unanswered::Request(e) => Err(e),
        }
    }

    /// The request, signed.
    async fn signed(
        &self,
        method: &http::Method,
        url: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<reqwest::Request, String> {
        let mut req = http::Request::builder()
            .method(method.clone())
            .uri(url)
            .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD");
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        if !body.is_empty() {
            let md5 = md5::Md5::digest(body);
            req = req.header(
                "content-md5",
                base64::engine::general_purpose::STANDARD.encode(md5),
            );
        }
        let (mut parts, ()) = req
            .body(())
            .map_err(|e| format!("bad request {url}: {e}"))?
            .into_parts();
        self.signer
            .sign(&mut parts, None)
            .await
            .map_err(|e| format!("cannot sign the request (S3 credentials?): {e}"))?;
        let req = http::Request::from_parts(parts, body.to_vec());
        reqwest::Request::try_from(req).map_err(|e| e.to_string())
    }

    /// The bucket's Object Lock configuration.
    pub(crate) async fn bucket_lock(&self) -> Result<BucketLock, String> {
        let r = self
            .send(http::Method::GET, "", "object-lock", &[], &[])
            .await?;
        // No configuration (404), or a server without Object Lock at all
        // (400, 405, 501): nothing is retained. A missing bucket or bad
        // credentials show up in the request that follows.
        if matches!(r.status, 400 | 404 | 405 | 501) {
            return Ok(BucketLock::Disabled);
        }
        if r.status != 200 {
            return Err(s3_error("read the Object Lock configuration", &r));
        }
        if xml_value(&r.body, "ObjectLockEnabled") != Some("Enabled") {
            return Ok(BucketLock::Disabled);
        }
        let mode = match xml_value(&r.body, "Mode") {
            Some("COMPLIANCE") => LockMode::Compliance,
            Some("GOVERNANCE") => LockMode::Governance,
            _ => return Ok(BucketLock::NoDefault),
        };
        let days = match (xml_value(&r.body, "Days"), xml_value(&r.body, "Years")) {
            (Some(d), _) => d.parse::<u32>().ok(),
            (None, Some(y)) => y.parse::<u32>().ok().and_then(|y| y.checked_mul(365)),
            _ => None,
        };
        Ok(match days {
            Some(days) if days > 0 => BucketLock::Default(ObjectLock { mode, days }),
            _ => BucketLock::NoDefault,
        })
    }

    /// Sets the bucket's default retention.
    pub(crate) async fn set_default_retention(&self, lock: ObjectLock) -> Result<(), String> {
        let body = format!(
            "<ObjectLockConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention>\
             <Mode>{}</Mode><Days>{}</Days></DefaultRetention></Rule></ObjectLockConfiguration>",
            lock.mode.s3_name(),
            lock.days
        );
        let r = self
            .send(http::Method::PUT, "", "object-lock", &[], body.as_bytes())
            .await?;
        if r.status != 200 {
            return Err(s3_error("set the default retention", &r));
        }
        Ok(())
    }

    /// Until when the current version of `key` is retained, if it is.
    pub(crate) async fn retained_until(&self, key: &str) -> Result<Option<SystemTime>, String> {
        let r = self.send(http::Method::HEAD, key, "", &[], &[]).await?;
        if r.status == 404 {
            return Ok(None);
        }
        if r.status != 200 {
            return Err(s3_error(&format!("read the retention of {key}"), &r));
        }
        let Some(until) = r.headers.get("x-amz-object-lock-retain-until-date") else {
            return Ok(None);
        };
        let until = until.to_str().unwrap_or_default();
        let t: jiff::Timestamp = until
            .parse()
            .map_err(|e| format!("{key}: retention date {until:?}: {e}"))?;
        Ok(Some(SystemTime::from(t)))
    }

    /// Creates the bucket with Object Lock enabled (tests; owners make their
    /// buckets with their own tools).
    #[cfg(feature = "testsupport")]
    pub(crate) async fn create_locked_bucket(&self) -> Result<(), String> {
        self.create(&[("x-amz-bucket-object-lock-enabled", "true".into())])
            .await
    }

    /// Creates a plain bucket (tests).
    #[cfg(feature = "testsupport")]
    pub(crate) async fn create_bucket(&self) -> Result<(), String> {
        self.create(&[]).await
    }

    #[cfg(feature = "testsupport")]
    async fn create(&self, headers: &[(&str, String)]) -> Result<(), String> {
        let r = self.send(http::Method::PUT, "", "", headers, &[]).await?;
        if r.status != 200 {
            return Err(s3_error("create the bucket", &r));
        }
        Ok(())
    }
}

/// The text of the first `<tag>…</tag>` in an S3 XML answer (these answers
/// are small and flat).
fn xml_value<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].trim())
}

fn s3_error(what: &str, r: &Response) -> String {
    let code = xml_value(&r.body, "Code").unwrap_or("");
    let message = xml_value(&r.body, "Message").unwrap_or("");
    let hint = match r.status {
        403 => " (check the credentials and that they may manage Object Lock)",
        _ => "",
    };
    format!("cannot {what}: HTTP {} {code} {message}{hint}", r.status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_values() {
        let x = "<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled>\
                 <Rule><DefaultRetention><Mode>COMPLIANCE</Mode><Days>7</Days></DefaultRetention></Rule>\
                 </ObjectLockConfiguration>";
        assert_eq!(xml_value(x, "ObjectLockEnabled"), Some("Enabled"));
        assert_eq!(xml_value(x, "Days"), Some("7"));
        assert_eq!(xml_value(x, "Years"), None);
        assert_eq!(xml_value("<Days>", "Days"), None);
    }
}
