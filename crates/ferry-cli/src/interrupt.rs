//! Ctrl-C (and SIGTERM): the first one asks the engine to stop starting new work and let the
//! provider calls in flight finish (so state records their results); the second exits at once
//! with status 130.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Install the handler; returns the flag the engine watches. Failing to install it (another
/// handler exists) leaves the default behaviour, which is safe: intents are recorded first.
pub fn install() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&flag);
    let installed = ctrlc::set_handler(move || {
        if seen.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupt: exiting now");
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: letting running calls finish… (press Ctrl-C again to exit now)");
    });
    if let Err(e) = installed {
        tracing::warn!("cannot install the Ctrl-C handler: {e}");
    }
    flag
}

/// For the built-in provider process: the terminal sends Ctrl-C to the whole process group,
/// but a provider must finish the calls in flight and exit when ferry closes its stdin.
pub fn ignore_in_provider() {
    // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
}
