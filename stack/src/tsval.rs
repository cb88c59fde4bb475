//! The clock behind TCP timestamps (RFC 7323).
//!
//! smoltcp takes a timestamp generator as a bare `fn() -> u32` per socket
//! (`set_tsval_generator`): no context, so it cannot read this stack's `now`. The stack
//! therefore publishes its clock in a thread-local before it hands smoltcp anything that
//! may emit a segment ([`Stack::ingress`](crate::Stack::ingress), `ingress_batch`,
//! `poll`), and the generator reads it back. That is sound because a stack is driven by
//! one thread at a time and smoltcp calls the generator only from inside those calls; two
//! stacks on one thread (a test, the in-memory benchmark) each publish their own clock
//! before each call. A thread that never published reads 0, a valid (if stale) value.
//!
//! The clock ticks in milliseconds (RFC 7323 §5.4 allows 1 ms to 1 s per tick) and starts
//! at a per-stack random offset (§7.1 / RFC 6528's concern: TSval must not leak the
//! host's uptime). RFC 7323 recommends a per-connection offset; a `fn()` has no
//! per-connection context, so all connections of one stack share one offset.
//!
//! What smoltcp does with it: it sends TSval on every segment and echoes the peer's
//! latest TSval as TSecr once the SYN negotiated the option (§3.2); it does **not**
//! implement PAWS (§5: a segment with an old TSval is not discarded) and does not take RTT
//! samples from TSecr (its RTT estimate comes from timing one segment per window).
//! Connections born from a SYN cookie never use timestamps (the cookie cannot carry the
//! option).

use std::cell::Cell;

thread_local! {
    static CLOCK: Cell<u32> = const { Cell::new(0) };
}

/// Publishes the stack's clock `now_ms` (plus its `offset`) for [`tsval`] on this thread.
#[inline]
pub(crate) fn publish(now_ms: u64, offset: u32) {
    CLOCK.with(|c| c.set((now_ms as u32).wrapping_add(offset)));
}

/// smoltcp's timestamp generator: the clock last published on this thread.
pub(crate) fn tsval() -> u32 {
    CLOCK.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsval_reads_what_this_thread_published() {
        publish(1_000, 5);
        assert_eq!(tsval(), 1_005);
        publish(1_001, u32::MAX);
        assert_eq!(tsval(), 1_000, "the offset wraps");
        std::thread::spawn(|| assert_eq!(tsval(), 0, "another thread has its own clock"))
            .join()
            .unwrap();
    }
}
