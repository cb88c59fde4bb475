//! What every backend shares: the per-connection slots (service state and a small record),
//! the timing wheel of application timers and idle timeouts, and the dispatch of events
//! to the service.

use std::time::Duration;

use c10m_stack::ConnId;

use crate::conn::{Conn, Conns, Io, Net};
use crate::service::{Service, Stats};
use crate::slot::{Handle, LINGER, Meta, Timers};

/// What happened to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ev {
    Readable,
    Writable,
}

/// Service, slots and timers of one runtime (one worker).
pub(crate) struct Core<S: Service> {
    pub(crate) service: S,
    pub(crate) states: Vec<Option<S::State>>,
    pub(crate) metas: Vec<Meta>,
    pub(crate) timers: Timers,
    idle: u64,
    pub(crate) stats: Stats,
}

impl<S: Service> std::fmt::Debug for Core<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("capacity", &self.states.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<S: Service> Core<S> {
    pub(crate) fn new(service: S, capacity: usize, now_ms: u64) -> Self {
        let idle = service
            .idle_timeout()
            .map_or(0, |d| d.as_millis().max(1) as u64);
        Core {
            service,
            states: (0..capacity).map(|_| None).collect(),
            metas: vec![Meta::default(); capacity],
            timers: Timers::new(capacity, now_ms),
            idle,
            stats: Stats::default(),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.states.len()
    }

    pub(crate) fn set_now(&mut self, now_ms: u64) {
        self.timers.set_now(now_ms);
    }

    /// The earliest timer deadline, ms (a lower bound).
    pub(crate) fn next_timer(&self) -> Option<u64> {
        self.timers.next_expiry()
    }

    /// A new connection in `slot`: runs `on_accept`.
    pub(crate) fn accept(&mut self, slot: u32, io: Io<'_>, port: u16, conn: Option<ConnId>) {
        let meta = &mut self.metas[slot as usize];
        debug_assert!(self.states[slot as usize].is_none(), "slot {slot} in use");
        *meta = Meta {
            generation: meta.generation,
            conn,
            last_rx: self.timers.now_ms,
            port,
            closing: false,
            idle: self.idle,
        };
        if self.idle > 0 {
            self.timers
                .schedule(Timers::idle_key(slot), Duration::from_millis(self.idle));
        }
        self.stats.accepted += 1;
        let mut c = Conn::new(slot, io, meta, &mut self.timers);
        let state = self.service.on_accept(&mut c);
        self.states[slot as usize] = Some(state);
    }

    /// Whether `slot` holds a connection (with this stack id, if given).
    pub(crate) fn owns(&self, slot: usize, conn: Option<ConnId>) -> bool {
        self.states.get(slot).is_some_and(Option::is_some)
            && (conn.is_none() || self.metas[slot].conn == conn)
    }

    pub(crate) fn event(&mut self, slot: u32, mut io: Io<'_>, ev: Ev) {
        let i = slot as usize;
        let Some(state) = self.states[i].as_mut() else {
            return;
        };
        let meta = &mut self.metas[i];
        if ev == Ev::Readable {
            meta.last_rx = self.timers.now_ms;
        }
        if meta.closing {
            // The service is done with it: discard what still arrives.
            while let Ok(n @ 1..) = io.recv_with(|b| (b.len(), b.len())) {
                let _ = n;
            }
            return;
        }
        let mut c = Conn::new(slot, io, meta, &mut self.timers);
        match ev {
            Ev::Readable => self.service.on_readable(&mut c, state),
            Ev::Writable => self.service.on_writable(&mut c, state),
        }
    }

    /// The connection in `slot` is gone: runs `on_closed` and frees the slot.
    pub(crate) fn closed(&mut self, slot: u32) {
        let i = slot as usize;
        let Some(state) = self.states[i].take() else {
            return;
        };
        let meta = &mut self.metas[i];
        let handle = Handle {
            slot,
            generation: meta.generation,
        };
        meta.generation = meta.generation.wrapping_add(1);
        meta.conn = None;
        meta.closing = true;
        self.timers.cancel(Timers::app_key(slot));
        self.timers.cancel(Timers::idle_key(slot));
        self.stats.closed += 1;
        self.service.on_closed(handle, state);
    }

    /// Moves the clock to `now_ms` and takes the timer keys that came due.
    pub(crate) fn take_fired(&mut self, now_ms: u64) -> Vec<u32> {
        self.timers.take_fired(now_ms)
    }

    /// Gives the list back for reuse.
    pub(crate) fn put_fired(&mut self, fired: Vec<u32>) {
        self.timers.put_fired(fired);
    }

    /// Timer `key` fired; `io` is its connection's.
    pub(crate) fn timer(&mut self, key: u32, mut io: Io<'_>) {
        let slot = key / 2;
        let i = slot as usize;
        let Some(state) = self.states[i].as_mut() else {
            return;
        };
        let meta = &mut self.metas[i];
        let now = self.timers.now_ms;
        if key == Timers::idle_key(slot) {
            if meta.closing {
                io.abort(); // the linger after a close ran out
                return;
            }
            if meta.idle == 0 {
                return;
            }
            let due = meta.last_rx + meta.idle;
            if now >= due {
                self.stats.idle_closed += 1;
                meta.closing = true;
                io.close();
                self.timers.schedule(key, LINGER);
            } else {
                self.timers.schedule_at(key, due);
            }
            return;
        }
        if meta.closing {
            return;
        }
        let mut c = Conn::new(slot, io, meta, &mut self.timers);
        self.service.on_timer(&mut c, state);
    }

    /// Lets the service take finished offloaded work.
    pub(crate) fn poll(&mut self, net: Net<'_>) {
        let mut conns = Conns {
            net,
            metas: &mut self.metas,
            states: &mut self.states,
            timers: &mut self.timers,
        };
        self.service.on_poll(&mut conns);
    }

    /// Delivers a control command to the service.
    pub(crate) fn command(&mut self, cmd: &S::Command, net: Net<'_>) {
        self.stats.commands += 1;
        let mut conns = Conns {
            net,
            metas: &mut self.metas,
            states: &mut self.states,
            timers: &mut self.timers,
        };
        self.service.on_command(cmd, &mut conns);
    }
}
