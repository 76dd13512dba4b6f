//! Building the UI's pages: text escaped for HTML, paths in URLs, sizes and
//! times for people, and the page frame with its style sheet.
//!
//! Every name that comes from a snapshot is bytes (a file may be called
//! `<script>` or not be UTF-8): it reaches a page only through [`esc`] or
//! [`esc_bytes`], and a URL only through [`enc`], which percent-encodes the
//! raw bytes so that a name that is not UTF-8 stays reachable.

use std::fmt::Write as _;

use percent_encoding::{percent_decode, AsciiSet, NON_ALPHANUMERIC};

/// Characters left as they are in a query value: unreserved ones and `/`.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Text for an HTML element or a quoted attribute.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Bytes as text: valid UTF-8 as it is, anything else as `\xNN` escapes
/// (so two names that differ only in invalid bytes still look different),
/// then escaped for HTML.
pub fn esc_bytes(b: &[u8]) -> String {
    esc(&display_bytes(b))
}

/// Bytes as text for people: `\xNN` for bytes that are not UTF-8 and for
/// control characters, `\u{NNNN}` for invisible and reordering ones, `\\`
/// for a backslash (so that no two names look the same).
pub fn display_bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                // Invisible characters and ones that reorder text (a name
                // that reads as another): shown by their code.
                '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{061c}'
                | '\u{feff}' => {
                    let _ = write!(out, "\\u{{{:04x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

/// Raw bytes percent-encoded for a query value.
pub fn enc(b: &[u8]) -> String {
    percent_encoding::percent_encode(b, QUERY).to_string()
}

/// `key=value` pairs of a query string or a form body, values as raw
/// bytes (`+` is a space, `%NN` a byte).
pub fn parse_query(q: &[u8]) -> Vec<(String, Vec<u8>)> {
    q.split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = match p.iter().position(|&b| b == b'=') {
                Some(i) => (&p[..i], &p[i + 1..]),
                None => (p, &[][..]),
            };
            let plus = |s: &[u8]| -> Vec<u8> {
                s.iter()
                    .map(|&b| if b == b'+' { b' ' } else { b })
                    .collect()
            };
            let key: Vec<u8> = percent_decode(&plus(k)).collect();
            (
                String::from_utf8_lossy(&key).into_owned(),
                percent_decode(&plus(v)).collect(),
            )
        })
        .collect()
}

/// A size for people.
pub fn size(n: u64) -> String {
    rewind_core::stats::human_bytes(n)
}

/// Times for people, as the command line shows them.
pub use rewind_core::stats::{local_time as time, node_time};

/// A page under construction: its title, where it sits in the menu, and
/// the HTML of its body.
pub struct Page {
    /// The `<title>` and the heading.
    pub title: String,
    /// The body, already escaped.
    pub body: String,
}

impl Page {
    /// An empty page.
    pub fn new(title: impl Into<String>) -> Page {
        Page {
            title: title.into(),
            body: String::new(),
        }
    }

    /// Appends HTML.
    pub fn push(&mut self, html: impl AsRef<str>) {
        self.body.push_str(html.as_ref());
    }
}

/// What the frame around a page shows.
pub struct Frame<'a> {
    /// Where the UI is mounted ("" or "/ui").
    pub base: &'a str,
    /// The repository, as the login named it.
    pub label: &'a str,
    /// The session's CSRF token (the logout form); `None` on the login page.
    pub csrf: Option<&'a str>,
    /// Whether the agent's page exists.
    pub agent: bool,
}

/// The whole document.
pub fn render(page: &Page, frame: &Frame) -> String {
    let b = frame.base;
    let mut nav = String::new();
    if let Some(csrf) = frame.csrf {
        let _ = write!(
            nav,
            r#"<nav><a href="{b}/">Timeline</a><a href="{b}/search">Search</a><a href="{b}/stats">Repository</a>{agent}<span class="repo">{label}</span><form method="post" action="{b}/logout" class="inline"><input type="hidden" name="csrf" value="{csrf}"><button type="submit">Log out</button></form></nav>"#,
            agent = if frame.agent {
                format!(r#"<a href="{b}/agent">Scheduled jobs</a>"#)
            } else {
                String::new()
            },
            label = esc(frame.label),
        );
    }
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · rewind</title><link rel="stylesheet" href="{b}/static/style.css"></head>
<body><header><a class="brand" href="{b}/">rewind</a>{nav}</header>
<main><h1>{title}</h1>
{body}</main></body></html>
"#,
        title = esc(&page.title),
        body = page.body,
    )
}

/// The style sheet, served at `/static/style.css` (no inline style: the
/// Content-Security-Policy allows none).
pub const CSS: &str = r#"
:root { --fg:#1d2430; --muted:#5d6b7e; --line:#d9dee6; --bg:#f6f7f9; --accent:#1f5fbf; --bad:#b3261e; --badbg:#fdecea; --ok:#1e7b34; --okbg:#e7f5ea; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:var(--bg); }
header { display:flex; align-items:center; gap:1.5rem; padding:.6rem 1.5rem; background:#fff; border-bottom:1px solid var(--line); }
header .brand { font-weight:700; font-size:1.2rem; color:var(--accent); text-decoration:none; }
nav { display:flex; align-items:center; gap:1rem; flex:1; }
nav a { color:var(--fg); text-decoration:none; }
nav a:hover { color:var(--accent); }
nav .repo { margin-left:auto; color:var(--muted); font-size:.9rem; }
main { max-width:1200px; margin:0 auto; padding:1rem 1.5rem 3rem; }
h1 { font-size:1.45rem; margin:.6rem 0 1rem; overflow-wrap:anywhere; }
h2 { font-size:1.15rem; margin:1.6rem 0 .6rem; overflow-wrap:anywhere; }
a { color:var(--accent); }
table { border-collapse:collapse; width:100%; background:#fff; border:1px solid var(--line); }
th, td { text-align:left; padding:.35rem .6rem; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:#eef1f5; font-weight:600; font-size:.9rem; }
td.num, th.num { text-align:right; white-space:nowrap; }
td.name { overflow-wrap:anywhere; }
.muted { color:var(--muted); }
.badge { display:inline-block; padding:0 .45rem; border-radius:.6rem; font-size:.8rem; font-weight:600; margin-right:.3rem; white-space:nowrap; }
.badge.bad { background:var(--bad); color:#fff; }
.badge.ok { background:var(--okbg); color:var(--ok); }
.badge.info { background:#e8eefb; color:var(--accent); }
tr.suspicious td { background:var(--badbg); }
.alert { border:1px solid var(--bad); background:var(--badbg); padding:.8rem 1rem; border-radius:.4rem; margin:1rem 0; }
.note { border:1px solid var(--line); background:#fff; padding:.8rem 1rem; border-radius:.4rem; margin:1rem 0; }
.good { border:1px solid var(--ok); background:var(--okbg); padding:.8rem 1rem; border-radius:.4rem; margin:1rem 0; }
ul.reasons { margin:.3rem 0 0 1.2rem; padding:0; }
.calendar { display:flex; flex-wrap:wrap; gap:1rem; margin:.5rem 0 1rem; }
.month { background:#fff; border:1px solid var(--line); border-radius:.4rem; padding:.4rem .6rem; }
.month .label { font-size:.85rem; font-weight:600; margin-bottom:.2rem; }
.days { display:grid; grid-template-columns:repeat(7, 1.6rem); gap:2px; }
.day { width:1.6rem; height:1.6rem; font-size:.75rem; display:flex; align-items:center; justify-content:center; border-radius:.25rem; color:var(--muted); text-decoration:none; }
a.day { background:var(--okbg); color:var(--ok); font-weight:600; }
a.day.bad { background:var(--bad); color:#fff; }
.crumbs { margin:.3rem 0 1rem; overflow-wrap:anywhere; }
.actions { display:flex; flex-wrap:wrap; gap:.6rem; margin:.6rem 0 1rem; align-items:center; }
.button, button { display:inline-block; padding:.35rem .8rem; border:1px solid var(--accent); border-radius:.3rem; background:var(--accent); color:#fff; text-decoration:none; font:inherit; cursor:pointer; }
.button.secondary { background:#fff; color:var(--accent); }
.button.danger { background:var(--bad); border-color:var(--bad); }
form.inline { display:inline; margin:0; }
nav form.inline button { background:#fff; color:var(--fg); border-color:var(--line); padding:.2rem .6rem; }
label { display:block; margin:.6rem 0 .2rem; font-weight:600; }
form.actions select { width:auto; }
input[type=text], input[type=password], input[type=search], select { font:inherit; padding:.35rem .5rem; border:1px solid var(--line); border-radius:.3rem; width:100%; max-width:40rem; }
fieldset { border:1px solid var(--line); border-radius:.4rem; margin:.8rem 0; background:#fff; max-width:40rem; }
fieldset label { font-weight:normal; display:block; }
.pager { display:flex; gap:1rem; margin:.8rem 0; align-items:center; }
progress { width:100%; max-width:40rem; height:1.2rem; }
.login { max-width:28rem; margin:3rem auto; background:#fff; border:1px solid var(--line); border-radius:.5rem; padding:1rem 1.5rem 1.5rem; }
code { background:#eef1f5; padding:0 .25rem; border-radius:.2rem; overflow-wrap:anywhere; }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_text() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
        assert_eq!(esc_bytes(b"a\xffb\n"), "a\\xffb\\x0a");
        // A name spelling an escape differs from the byte it spells.
        assert_eq!(display_bytes(b"a\\xff"), "a\\\\xff");
        assert_eq!(
            display_bytes("x\u{202e}txt.exe".as_bytes()),
            "x\\u{202e}txt.exe"
        );
    }

    #[test]
    fn paths_survive_a_round_trip_through_a_query() {
        let name = b"/dir/a b&c=d+e%\xff\xfe<x>".to_vec();
        let q = format!("path={}&page=2", enc(&name));
        let parsed = parse_query(q.as_bytes());
        assert_eq!(parsed[0], ("path".to_string(), name));
        assert_eq!(parsed[1], ("page".to_string(), b"2".to_vec()));
        // A browser's form sends spaces as `+`.
        assert_eq!(parse_query(b"q=a+b%2B")[0].1, b"a b+".to_vec());
    }
}
