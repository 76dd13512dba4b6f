//! The rewind server's parsing of a request path (`/REPO/`, `/REPO/TYPE/`,
//! `/REPO/TYPE/NAME`) and of a `Range` header. Whatever it accepts must
//! stay inside one repository.
//!
//! Input: `path || "\n" || range header`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_core::backend::FileType;

fuzz_target!(|data: &[u8]| {
    let (path, range) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(path) = std::str::from_utf8(path) else {
        return;
    };
    let (parsed, range) = rewind_server::fuzz_request(path, range);
    if let Ok((repo, t, name)) = parsed {
        assert!(path.starts_with('/'));
        assert!(!repo.is_empty() && repo.len() <= 64 && !repo.starts_with('.'));
        assert!(repo
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')));
        assert!(!path.split('/').any(|s| s == ".." || s == "."));
        if let Some(name) = &name {
            let t = t.expect("a file has a type");
            if t == FileType::Config {
                assert_eq!(name, "config");
            } else {
                assert_eq!(name.len(), 64);
                assert!(name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
            }
            assert_eq!(path, format!("/{repo}/{}/{name}", rewind_fuzz_type(t)));
        }
    }
    if let Some((start, len)) = range {
        assert!(len >= 1);
        assert!(start.checked_add(u64::from(len) - 1).is_some());
    }
});

fn rewind_fuzz_type(t: FileType) -> &'static str {
    match t {
        FileType::Config => "config",
        _ => t.dir(),
    }
}
