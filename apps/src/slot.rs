//! A connection's slot: the [`Handle`] a service keeps for it, the errors of operations
//! through it, and the runtime's record ([`Meta`]) and timers ([`Timers`]) of the slot.
//! A leaf: the connection handle (`conn`), the kernel sockets (`sock`) and the dispatch
//! (`core`) all build on it.

use std::fmt;
use std::time::Duration;

use c10m_stack::ConnId;
use c10m_stack::wheel::Wheel;

/// How long a connection the runtime closed (idle, or [`Conn::close`](crate::Conn::close) on the kernel
/// backend) may take to finish before it is reset.
pub const LINGER: Duration = Duration::from_secs(5);

/// A connection's identity inside one runtime: its dense slot and a generation number, so
/// a handle kept after the connection closed never reaches the slot's next connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle {
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

impl Handle {
    /// The slot index: dense, below the runtime's connection capacity, usable as an index
    /// into the service's own per-connection arrays.
    pub fn slot(self) -> usize {
        self.slot as usize
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}.{}", self.slot, self.generation)
    }
}

/// Why an operation on a connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The connection no longer exists (closed, reset, or a stale handle).
    #[error("connection closed")]
    Closed,
    /// The peer closed its side and every byte it sent was read.
    #[error("peer closed its side")]
    Finished,
    /// Not possible in the connection's state (e.g. sending after `close`).
    #[error("not possible in this connection state")]
    InvalidState,
}

impl From<c10m_stack::ConnError> for Error {
    fn from(e: c10m_stack::ConnError) -> Self {
        match e {
            c10m_stack::ConnError::Closed => Error::Closed,
            c10m_stack::ConnError::Finished => Error::Finished,
            c10m_stack::ConnError::InvalidState => Error::InvalidState,
        }
    }
}

/// The runtime's record of one slot.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Meta {
    /// Bumped each time the slot is released.
    pub(crate) generation: u32,
    /// The stack's id for the connection (stack backend).
    pub(crate) conn: Option<ConnId>,
    /// Last time bytes arrived, ms.
    pub(crate) last_rx: u64,
    /// The local port it was accepted on.
    pub(crate) port: u16,
    /// Closed or aborted by the service or the runtime.
    pub(crate) closing: bool,
    /// Idle timeout, ms (0: none).
    pub(crate) idle: u64,
}

/// The timing wheel: two keys per slot, the application's timer and the idle timeout.
#[derive(Debug)]
pub(crate) struct Timers {
    wheel: Wheel,
    pub(crate) now_ms: u64,
    fired: Vec<u32>,
}

impl Timers {
    /// The timers of `slots` slots, the clock at `now_ms`.
    pub(crate) fn new(slots: usize, now_ms: u64) -> Timers {
        Timers {
            wheel: Wheel::new(slots * 2, now_ms),
            now_ms,
            fired: Vec::new(),
        }
    }

    pub(crate) fn wheel(&self) -> &Wheel {
        &self.wheel
    }

    /// Moves the clock to `now_ms` (never back).
    pub(crate) fn set_now(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    /// The earliest deadline, ms (a lower bound).
    pub(crate) fn next_expiry(&self) -> Option<u64> {
        self.wheel.next_expiry()
    }

    /// Moves the clock to `now_ms` and takes the keys that came due.
    pub(crate) fn take_fired(&mut self, now_ms: u64) -> Vec<u32> {
        self.set_now(now_ms);
        let mut fired = std::mem::take(&mut self.fired);
        self.wheel.expire(self.now_ms, &mut fired);
        fired
    }

    /// Gives the list [`take_fired`](Self::take_fired) returned back for reuse.
    pub(crate) fn put_fired(&mut self, mut fired: Vec<u32>) {
        fired.clear();
        self.fired = fired;
    }

    pub(crate) fn app_key(slot: u32) -> u32 {
        slot * 2
    }

    pub(crate) fn idle_key(slot: u32) -> u32 {
        slot * 2 + 1
    }

    pub(crate) fn schedule(&mut self, key: u32, after: Duration) {
        self.schedule_at(key, self.now_ms + after.as_millis() as u64);
    }

    /// Schedules `key` at `at_ms` on the runtime's clock.
    pub(crate) fn schedule_at(&mut self, key: u32, at_ms: u64) {
        self.wheel.schedule(key, at_ms);
    }

    pub(crate) fn cancel(&mut self, key: u32) {
        self.wheel.cancel(key);
    }
}
