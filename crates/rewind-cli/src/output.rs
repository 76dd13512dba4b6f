//! Formatting helpers shared by the commands.

use std::io::IsTerminal;

/// `1.5 GiB` style sizes.
pub use rewind_core::stats::human_bytes as bytes;

/// Times and modes for people (shared with the web UI).
pub use rewind_core::stats::{local_time, mode_string, node_time};

/// True when stdout is a terminal (progress bars and colours only then).
pub fn stdout_is_tty() -> bool {
    std::io::stdout().is_terminal()
}

/// What a write to a closed stdout fails with (the reader went away, as
/// `rewind ls latest | head` does): the program then ends quietly with
/// exit code 0 (see `main`), not with an error about a broken pipe.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Standard output for what a command prints. A write to a closed pipe
/// fails with an `io::Error` carrying [`StdoutClosed`], which the caller
/// returns like any error (`?`).
pub struct Stdout(std::io::StdoutLock<'static>);

/// Locks stdout until the returned writer is dropped (never hold it where
/// another thread prints).
pub fn stdout() -> Stdout {
    Stdout(std::io::stdout().lock())
}

fn closed(e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::io::Error::new(std::io::ErrorKind::BrokenPipe, StdoutClosed)
    } else {
        e
    }
}

impl std::io::Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(closed)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(closed)
    }
}

/// True when `e` comes from a write to a closed stdout.
pub fn is_stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        let io = c
            .downcast_ref::<std::io::Error>()
            .or(match c.downcast_ref() {
                Some(rewind_core::Error::Io { error, .. }) => Some(error),
                _ => None,
            });
        io.and_then(|e| e.get_ref())
            .is_some_and(|inner| inner.is::<StdoutClosed>())
    })
}

/// `println!` for what a command prints: through [`stdout`], returning
/// the error from the enclosing function (`?`), so a closed stdout ends the
/// command quietly instead of panicking.
macro_rules! outln {
    () => {
        ::std::io::Write::write_all(&mut $crate::output::stdout(), b"\n")?
    };
    ($($arg:tt)*) => {
        ::std::io::Write::write_fmt(
            &mut $crate::output::stdout(),
            format_args!("{}\n", format_args!($($arg)*)),
        )?
    };
}

static PANICKED_ON_CLOSED_STDOUT: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// A `println!` that meets a closed stdout panics ("failed printing to
/// stdout: Broken pipe"). Command output goes through [`outln!`], which
/// returns that as an error instead; for any `println!` left, this panic
/// hook keeps quiet about that one panic, so that `main` (which catches it
/// once the stack has unwound and destructors have run) ends with exit 0.
/// Every other panic is reported as before.
pub fn quiet_on_closed_stdout() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info.payload_as_str().unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            PANICKED_ON_CLOSED_STDOUT.store(true, std::sync::atomic::Ordering::SeqCst);
            return;
        }
        report(info)
    }));
}

/// True once a `println!` panicked on a closed stdout.
pub fn stdout_closed_in_panic() -> bool {
    PANICKED_ON_CLOSED_STDOUT.load(std::sync::atomic::Ordering::SeqCst)
}

/// `r`, except that a closed stdout is no error: for output that must not
/// stop what follows it (a backup's summary before its copy and alert).
pub fn unless_closed(r: anyhow::Result<()>) -> anyhow::Result<()> {
    match r {
        Err(e) if is_stdout_closed(&e) => Ok(()),
        r => r,
    }
}
