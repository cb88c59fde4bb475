//! The runtime over a userspace [`Stack`]: what the dataplane's workers and the simulation
//! drive once per loop iteration.
//!
//! ```
//! use c10m_apps::services::Echo;
//! use c10m_apps::Runtime;
//! use c10m_stack::wire::Queue;
//! use c10m_stack::{Instant, ListenOptions, Stack, wire::Pair};
//!
//! let mut stack = Stack::new(&Pair::server_config(1024), Instant::ZERO).unwrap();
//! let mut rt = Runtime::new(Echo::default(), stack.capacity(), Instant::ZERO);
//! rt.listen(&mut stack, 7, ListenOptions::default()).unwrap();
//! let mut tx = Queue::default();
//! // One iteration of a worker's loop:
//! let now = Instant::from_millis(1);
//! // ... stack.ingress_batch(now, &frames, &mut tx) ...
//! rt.handle_events(&mut stack, now);
//! stack.poll(now, &mut tx);
//! ```

use c10m_stack::{ConnId, Event, Instant, ListenError, ListenOptions, ListenerId, Stack, Warmer};

use crate::conn::{Io, Net};
use crate::core::{Core, Ev};
use crate::service::{Service, Stats};

/// A service running on one [`Stack`].
#[derive(Debug)]
pub struct Runtime<S: Service> {
    core: Core<S>,
    /// Port of each listener the runtime opened, by listener index.
    ports: Vec<Option<u16>>,
    /// The listeners the runtime opened.
    listeners: Vec<ListenerId>,
    /// A paced shutdown under way ([`close_all`](Runtime::close_all)).
    closing: Option<Closing>,
}

/// Connections a shutdown closes per millisecond: 100,000 FINs a second, so a million
/// connections close in ten seconds. Every FIN at once overflows the queues on the way (a
/// Linux router's 1,000-frame backlog dropped a tenth of a 10,000-FIN burst on the test
/// bed), and the lost FINs' retransmissions would come due together as well.
pub const CLOSES_PER_MS: usize = 100;

/// Where a paced shutdown stands.
#[derive(Debug, Clone, Copy)]
struct Closing {
    /// The first slot not yet visited.
    next_slot: usize,
    /// The millisecond of the last batch.
    last_ms: u64,
}

fn ms(t: Instant) -> u64 {
    t.total_millis().max(0) as u64
}

impl<S: Service> Runtime<S> {
    /// A runtime for a stack of `capacity` connection slots ([`Stack::capacity`]).
    pub fn new(service: S, capacity: usize, now: Instant) -> Self {
        Runtime {
            core: Core::new(service, capacity, ms(now)),
            ports: Vec::new(),
            listeners: Vec::new(),
            closing: None,
        }
    }

    /// Has `warmer` (the stack's, [`Stack::warmer`]) fault the runtime's timer memory in
    /// ahead of use, as it does the stack's own: sized for every slot and written as
    /// connections come, it would otherwise be zeroed page by page on the worker.
    pub fn warm_with(&self, warmer: &Warmer) {
        self.core.timers.wheel().warm_with(warmer);
    }

    /// Faults the runtime's timer memory in now (for a stack whose memory is prefaulted).
    pub fn fault_in(&self) {
        self.core.timers.wheel().fault_in();
    }

    /// Opens a listener on `stack` whose connections go to the service.
    pub fn listen(
        &mut self,
        stack: &mut Stack,
        port: u16,
        opts: ListenOptions,
    ) -> Result<ListenerId, ListenError> {
        let l = stack.listen(port, opts)?;
        if self.ports.len() <= l.index() {
            self.ports.resize(l.index() + 1, None);
        }
        self.ports[l.index()] = Some(port);
        self.listeners.push(l);
        Ok(l)
    }

    /// Handles every pending event of `stack` and runs the timers due at `now`. Call it
    /// after ingress and before [`Stack::poll`], once per loop iteration. Events of
    /// listeners and connections the runtime does not own are dropped.
    pub fn handle_events(&mut self, stack: &mut Stack, now: Instant) {
        self.core.set_now(ms(now));
        while let Some(ev) = stack.next_event() {
            match ev {
                Event::Acceptable(l) => {
                    let Some(&Some(port)) = self.ports.get(l.index()) else {
                        continue;
                    };
                    while let Some(id) = stack.accept(l) {
                        let slot = id.slot() as u32;
                        self.core.accept(slot, Io::Stack(stack, id), port, Some(id));
                    }
                }
                Event::Readable(id) => self.event(stack, id, Ev::Readable),
                Event::Writable(id) => self.event(stack, id, Ev::Writable),
                Event::Closed(id) => {
                    if self.core.owns(id.slot(), Some(id)) {
                        self.core.closed(id.slot() as u32);
                    }
                }
                Event::Connected(_) => {}
            }
        }
        let fired = self.core.take_fired(ms(now));
        for &key in &fired {
            let slot = (key / 2) as usize;
            if let Some(id) = self.core.metas[slot].conn
                && self.core.owns(slot, Some(id))
            {
                self.core.timer(key, Io::Stack(stack, id));
            }
        }
        self.core.put_fired(fired);
        self.core.poll(Net::Stack(stack));
        self.close_paced(stack, ms(now));
    }

    fn event(&mut self, stack: &mut Stack, id: c10m_stack::ConnId, ev: Ev) {
        if self.core.owns(id.slot(), Some(id)) {
            self.core.event(id.slot() as u32, Io::Stack(stack, id), ev);
        }
    }

    /// Delivers a control command (e.g. a publish) to the service, which acts on its
    /// connections through `stack`.
    pub fn command(&mut self, stack: &mut Stack, now: Instant, cmd: &S::Command) {
        self.core.set_now(ms(now));
        self.core.command(cmd, Net::Stack(stack));
    }

    /// The next instant a runtime timer is due (a lower bound); combine it with
    /// [`Stack::poll_at`] to sleep. While the service is [`busy`](Service::busy) or a
    /// shutdown is [`closing`](Self::closing), one millisecond from the last
    /// [`handle_events`](Self::handle_events).
    pub fn poll_at(&self) -> Option<Instant> {
        let busy = (self.core.service.busy() || self.closing.is_some())
            .then_some(self.core.timers.now_ms + 1);
        let t = match (self.core.next_timer(), busy) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        t.map(|t| Instant::from_millis(t as i64))
    }

    /// The listeners the runtime opened with [`listen`](Self::listen).
    pub fn listeners(&self) -> &[ListenerId] {
        &self.listeners
    }

    /// Shutdown: hands the connections still queued on the runtime's listeners to the
    /// service, then closes every connection (a FIN after the data already queued),
    /// [`CLOSES_PER_MS`] a millisecond: this call closes the first batch and
    /// [`handle_events`](Self::handle_events) the rest, in slot order, while
    /// [`closing`](Self::closing) says so. The service's handlers are not called for them
    /// again, except `on_closed`; bytes that still arrive are read and dropped. Unlisten
    /// first to refuse new connections.
    pub fn close_all(&mut self, stack: &mut Stack, now: Instant) {
        self.core.set_now(ms(now));
        for i in 0..self.listeners.len() {
            let l = self.listeners[i];
            let Some(&Some(port)) = self.ports.get(l.index()) else {
                continue;
            };
            while let Some(id) = stack.accept(l) {
                self.core
                    .accept(id.slot() as u32, Io::Stack(stack, id), port, Some(id));
            }
        }
        self.closing = Some(Closing {
            next_slot: 0,
            last_ms: ms(now).saturating_sub(1),
        });
        self.close_paced(stack, ms(now));
    }

    /// Is a shutdown still closing connections ([`close_all`](Self::close_all))?
    pub fn closing(&self) -> bool {
        self.closing.is_some()
    }

    /// The next batch of a paced shutdown: [`CLOSES_PER_MS`] for each millisecond since
    /// the last batch (ten at most, after a long sleep).
    fn close_paced(&mut self, stack: &mut Stack, now_ms: u64) {
        let Some(c) = &mut self.closing else {
            return;
        };
        let mut budget = (now_ms.saturating_sub(c.last_ms).min(10) as usize) * CLOSES_PER_MS;
        if budget == 0 {
            return;
        }
        c.last_ms = now_ms;
        while budget > 0 && c.next_slot < self.core.capacity() {
            let slot = c.next_slot;
            c.next_slot += 1;
            if !self.core.owns(slot, None) {
                continue;
            }
            let meta = &mut self.core.metas[slot];
            if let Some(id) = meta.conn
                && !meta.closing
            {
                meta.closing = true;
                let _ = stack.close(id);
                budget -= 1;
            }
        }
        if c.next_slot >= self.core.capacity() {
            self.closing = None;
        }
    }

    /// End of a grace period: resets every connection the runtime still holds (and ends
    /// a paced shutdown).
    pub fn abort_all(&mut self, stack: &mut Stack) {
        self.closing = None;
        for slot in 0..self.core.capacity() {
            if !self.core.owns(slot, None) {
                continue;
            }
            let meta = &mut self.core.metas[slot];
            if let Some(id) = meta.conn {
                meta.closing = true;
                let _ = stack.abort(id);
            }
        }
    }

    /// The stack ids of the connections the runtime holds (open, or closed by the
    /// service and not yet gone).
    pub fn connections(&self) -> impl Iterator<Item = ConnId> + '_ {
        (0..self.core.capacity())
            .filter(|&slot| self.core.owns(slot, None))
            .filter_map(|slot| self.core.metas[slot].conn)
    }

    /// The service.
    pub fn service(&self) -> &S {
        &self.core.service
    }

    /// The service, mutably.
    pub fn service_mut(&mut self) -> &mut S {
        &mut self.core.service
    }

    /// Connection slots.
    pub fn capacity(&self) -> usize {
        self.core.capacity()
    }

    /// What the runtime counted.
    pub fn stats(&self) -> Stats {
        self.core.stats
    }
}
