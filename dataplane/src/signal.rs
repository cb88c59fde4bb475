//! SIGINT and SIGTERM set a process-wide flag that the daemon turns into a stop of its
//! workers; SIGHUP sets another that it turns into a reload. The handlers only store to
//! atomics, which is async-signal-safe.

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

/// Sets `stop` once SIGINT or SIGTERM arrives: installs the handlers and starts a small
/// thread that watches for them (every 50 ms). For commands other than `c10m run`, such
/// as `c10m kernel`.
pub fn stop_on_signal(stop: std::sync::Arc<AtomicBool>) -> io::Result<()> {
    install()?;
    std::thread::Builder::new()
        .name("c10m-signals".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if received() {
                    stop.store(true, Ordering::SeqCst);
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        })?;
    Ok(())
}
