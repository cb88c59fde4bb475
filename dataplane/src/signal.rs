//! SIGINT and SIGTERM set a process-wide flag that the daemon turns into a stop of its
//! workers; SIGHUP sets another that it turns into a reload. The handlers only store to
//! atomics, which is async-signal-safe. (Binaries that only need a stop flag use
//! [`c10m_apps::stop_on_signal`], re-exported as `c10m_dataplane::stop_on_signal`.)

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

static RECEIVED: AtomicBool = AtomicBool::new(false);
static HANGUP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGHUP {
        HANGUP.store(true, Ordering::SeqCst);
    } else {
        RECEIVED.store(true, Ordering::SeqCst);
    }
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP.
pub(crate) fn install() -> io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; we set the
        // handler to a function that only does an atomic store (async-signal-safe), and
        // pass valid pointers to sigemptyset and sigaction for the duration of the calls.
        let r = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM arrived.
pub(crate) fn received() -> bool {
    RECEIVED.load(Ordering::SeqCst)
}

/// Whether SIGHUP arrived since the last call.
pub(crate) fn hangup() -> bool {
    HANGUP.swap(false, Ordering::SeqCst)
}
