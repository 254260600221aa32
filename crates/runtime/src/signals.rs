//! SIGINT/SIGTERM as a flag the event loop checks between turns.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Raised by SIGINT or SIGTERM once [`StopSignal::install`] has run.
#[derive(Debug)]
pub struct StopSignal(());

impl StopSignal {
    /// Install the handlers. Without `SA_RESTART`, a blocked poll(2) returns
    /// EINTR at once, so the loop notices promptly.
    pub fn install() -> StopSignal {
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: a zeroed sigaction with a handler that only stores to an
            // atomic is async-signal-safe.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
        StopSignal(())
    }

    /// A flag without handlers: for a loop that ends only when its apps
    /// finish, in a program where SIGINT and SIGTERM keep their default
    /// action of ending the process (`ustack bench --device`). Raised by a
    /// signal only if [`StopSignal::install`] has run elsewhere.
    pub fn unarmed() -> StopSignal {
        StopSignal(())
    }

    /// Whether SIGINT or SIGTERM has arrived since the handlers were installed.
    pub fn raised(&self) -> bool {
        STOP.load(Ordering::SeqCst)
    }
}
