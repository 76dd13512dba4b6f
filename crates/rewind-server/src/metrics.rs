//! Counters served at `GET /metrics` in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Counters since the server started.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Counters>,
}

#[derive(Default)]
struct Counters {
    /// (repo, method, status) -> requests
    requests: BTreeMap<(String, String, u16), u64>,
    bytes_in: BTreeMap<String, u64>,
    bytes_out: BTreeMap<String, u64>,
    /// (repo, reason) -> refusals
    refusals: BTreeMap<(String, &'static str), u64>,
    errors: BTreeMap<String, u64>,
}

/// A repository's stored files, for the gauges.
pub struct Usage {
    /// Files by type.
    pub objects: BTreeMap<&'static str, u64>,
    /// Bytes in all.
    pub bytes: u64,
}

/// Quotes a label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Counters) -> T) -> T {
        f(&mut self.inner.lock().expect("metrics"))
    }

    /// One answered request.
    pub fn request(&self, repo: &str, method: &str, status: u16) {
        self.with(|c| {
            *c.requests
                .entry((repo.to_string(), method.to_string(), status))
                .or_default() += 1;
            if status >= 500 {
                *c.errors.entry(repo.to_string()).or_default() += 1;
            }
        });
    }

    /// Bytes received in request bodies that were stored.
    pub fn bytes_in(&self, repo: &str, n: u64) {
        self.with(|c| *c.bytes_in.entry(repo.to_string()).or_default() += n);
    }

    /// Bytes sent in response bodies.
    pub fn bytes_out(&self, repo: &str, n: u64) {
        self.with(|c| *c.bytes_out.entry(repo.to_string()).or_default() += n);
    }

    /// A refused request, by reason (`auth`, `role`, `retention`, `history`,
    /// `quota`, `name`, `hash`, `size`).
    pub fn refusal(&self, repo: &str, reason: &'static str) {
        self.with(|c| *c.refusals.entry((repo.to_string(), reason)).or_default() += 1);
    }

    /// The text exposition, with the usage gauges of the known repositories.
    pub fn render(&self, usage: &BTreeMap<String, Usage>) -> String {
        let mut o = String::new();
        self.with(|c| {
            o.push_str("# HELP rewind_requests_total Requests answered, by repository, method and status.\n# TYPE rewind_requests_total counter\n");
            for ((r, m, s), n) in &c.requests {
                let _ = writeln!(o, "rewind_requests_total{{repo=\"{}\",method=\"{m}\",status=\"{s}\"}} {n}", label(r));
            }
            o.push_str("# HELP rewind_received_bytes_total Bytes of files stored.\n# TYPE rewind_received_bytes_total counter\n");
            for (r, n) in &c.bytes_in {
                let _ = writeln!(o, "rewind_received_bytes_total{{repo=\"{}\"}} {n}", label(r));
            }
            o.push_str("# HELP rewind_sent_bytes_total Bytes of files sent.\n# TYPE rewind_sent_bytes_total counter\n");
            for (r, n) in &c.bytes_out {
                let _ = writeln!(o, "rewind_sent_bytes_total{{repo=\"{}\"}} {n}", label(r));
            }
            o.push_str("# HELP rewind_refusals_total Requests refused, by reason.\n# TYPE rewind_refusals_total counter\n");
            for ((r, why), n) in &c.refusals {
                let _ = writeln!(o, "rewind_refusals_total{{repo=\"{}\",reason=\"{why}\"}} {n}", label(r));
            }
            o.push_str("# HELP rewind_errors_total Requests that failed on the server's side (5xx).\n# TYPE rewind_errors_total counter\n");
            for (r, n) in &c.errors {
                let _ = writeln!(o, "rewind_errors_total{{repo=\"{}\"}} {n}", label(r));
            }
        });
        o.push_str("# HELP rewind_objects Files stored, by repository and type.\n# TYPE rewind_objects gauge\n");
        for (r, u) in usage {
            for (t, n) in &u.objects {
                let _ = writeln!(
                    o,
                    "rewind_objects{{repo=\"{}\",type=\"{t}\"}} {n}",
                    label(r)
                );
            }
        }
        o.push_str("# HELP rewind_stored_bytes Bytes stored, by repository.\n# TYPE rewind_stored_bytes gauge\n");
        for (r, u) in usage {
            let _ = writeln!(
                o,
                "rewind_stored_bytes{{repo=\"{}\"}} {}",
                label(r),
                u.bytes
            );
        }
        o
    }
}
