//! Formatting helpers shared by the commands.

use std::io::IsTerminal;

/// `1.5 GiB` style sizes.
pub use rewind_core::stats::human_bytes as bytes;

/// A timestamp in the local time zone, to the second.
pub fn local_time(t: jiff::Timestamp) -> String {
    t.to_zoned(jiff::tz::TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// A node mtime, local.
pub fn node_time(t: rewind_core::format::tree::Time) -> String {
    jiff::Timestamp::new(t.secs, t.nanos as i32)
        .map(local_time)
        .unwrap_or_else(|_| t.secs.to_string())
}

/// True when stdout is a terminal (progress bars and colours only then).
pub fn stdout_is_tty() -> bool {
    std::io::stdout().is_terminal()
}

/// `drwxr-xr-x` from a node.
pub fn mode_string(node: &rewind_core::format::tree::Node) -> String {
    let mut s = String::with_capacity(10);
    s.push(node.type_char());
    for shift in [6u32, 3, 0] {
        let bits = (node.mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}
