//! The warmer: one thread, off the workers' cores, that faults in the workers' growing
//! memory (connection slab, socket buffers) ahead of their use.
//!
//! Without `--prefault`, a worker's memory faults in as connections first use it, and
//! the kernel zeroes each fresh page on the worker's own core. On the reference VM that
//! zeroing runs at 0.2-0.4 GB/s: during a ramp of 100,000 new connections a second
//! (about 100 MB/s of slab and buffers) perf put 43% of the worker's core in
//! `clear_page_erms`, and its rx ring overflowed. The warmer keeps each region
//! [`LEAD`] ahead of what its stack has used ([`c10m_stack::Warmer`]), so the zeroing
//! lands on another core, and the daemon is still ready at once at ten million slots.
//! It is started only when the workers do not prefault.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use c10m_stack::Warmer;

/// How far ahead of its stack's use each region is kept: 64 MiB is 130,000 connections'
/// slots or 256-byte buffer pairs, over a second of a 100,000/s ramp.
pub(crate) const LEAD: usize = 64 << 20;
/// Most bytes faulted in between two looks at the stop flag.
const STEP: usize = 8 << 20;
/// Rest when every region is far enough ahead.
const REST: Duration = Duration::from_millis(2);

/// Starts the warmer over `warmers`, kept off the `workers`' cores when there is another
/// (else it shares one, and the zeroing with it). It ends when `stop` is set.
pub(crate) fn spawn(
    warmers: Vec<Warmer>,
    workers: Vec<usize>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("c10m-warm".into())
        .spawn(move || {
            crate::sys::avoid_cores(&workers, "the memory warmer");
            while !stop.load(Ordering::Relaxed) {
                let done: usize = warmers.iter().map(|w| w.warm(LEAD, STEP)).sum();
                if done == 0 {
                    std::thread::sleep(REST);
                }
            }
        })
}
