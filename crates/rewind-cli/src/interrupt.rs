//! Ctrl-C (SIGINT) and SIGTERM during a backup or prune: the first signal
//! asks the core to stop at its next safe point (it then removes its
//! running marker and leaves no snapshot; exit code 130); a second one
//! ends the program at once, as without a handler.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use rewind_core::cancel::Cancel;
use signal_hook::consts::{SIGINT, SIGTERM};

/// Installs the handlers and returns the flag they set. Only commands that
/// hand the flag to the core call this: elsewhere the signals end the
/// program at once, as by default.
pub fn install() -> Cancel {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // Registered first, so it sees the flag before this signal sets it:
        // only a second signal exits.
        let installed = signal_hook::flag::register_conditional_shutdown(
            sig,
            crate::exit::INTERRUPTED.into(),
            flag.clone(),
        )
        .and_then(|_| signal_hook::flag::register(sig, flag.clone()));
        if let Err(e) = installed {
            eprintln!("warning: cannot handle signal {sig} ({e}); it will stop rewind at once");
        }
    }
    Cancel::from_flag(flag)
}
