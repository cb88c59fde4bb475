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

use c10m_stack::{Event, Instant, ListenError, ListenOptions, ListenerId, Stack};

use crate::conn::{Io, Net};
use crate::core::{Core, Ev};
use crate::service::{Service, Stats};

/// A service running on one [`Stack`].
#[derive(Debug)]
pub struct Runtime<S: Service> {
    core: Core<S>,
    /// Port of each listener the runtime opened, by listener index.
    ports: Vec<Option<u16>>,
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
        }
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
    /// [`Stack::poll_at`] to sleep.
    pub fn poll_at(&self) -> Option<Instant> {
        self.core
            .next_timer()
            .map(|t| Instant::from_millis(t as i64))
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
