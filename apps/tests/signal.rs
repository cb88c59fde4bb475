//! `stop_on_signal`: SIGINT and SIGTERM set the stop flag and do not end the process
//! (a test binary of its own: the handlers are process-wide).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::low_level::raise;

#[test]
fn sigint_and_sigterm_set_the_stop_flag() {
    let stop = Arc::new(AtomicBool::new(false));
    c10m_apps::stop_on_signal(stop.clone()).unwrap();
    for sig in [SIGINT, SIGTERM] {
        raise(sig).unwrap();
        assert!(
            stop.swap(false, Ordering::SeqCst),
            "signal {sig} set the flag"
        );
    }
}
