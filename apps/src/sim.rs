//! The simulation backend: a service on the server end of the stack's in-memory
//! [`Pair`], on simulated time, deterministic. The client end is a plain [`Stack`] that
//! tests drive with the stack's own API.
//!
//! ```
//! use c10m_apps::services::Echo;
//! use c10m_apps::sim::Simulation;
//! use c10m_stack::{ConnectOptions, ListenOptions};
//! use std::net::SocketAddrV4;
//!
//! let mut sim = Simulation::new(Echo::default(), 64);
//! sim.listen(7, ListenOptions::default()).unwrap();
//! let c = sim.client().connect(SocketAddrV4::new(Simulation::<Echo>::SERVER, 7),
//!                              ConnectOptions::default()).unwrap();
//! let mut sent = false;
//! let mut echoed = Vec::new();
//! sim.run_until(1_000, |client| {
//!     if !sent && client.send(c, b"hi").is_ok_and(|n| n == 2) { sent = true; }
//!     let mut buf = [0u8; 16];
//!     while let Ok(n @ 1..) = client.recv(c, &mut buf) { echoed.extend_from_slice(&buf[..n]); }
//!     while client.next_event().is_some() {}
//!     echoed == b"hi"
//! });
//! assert_eq!(echoed, b"hi");
//! ```

use std::net::{Ipv4Addr, SocketAddr};

use c10m_stack::wire::{Impairments, Pair, Side};
use c10m_stack::{Instant, ListenError, ListenOptions, ListenerId, Stack};

use crate::fanout::{Fanout, Inbox};
use crate::runtime::Runtime;
use crate::service::Service;

/// A service on simulated time, with a client stack to talk to it.
#[derive(Debug)]
pub struct Simulation<S: Service> {
    pair: Pair,
    rt: Runtime<S>,
    /// The one worker's end of the service's fanout ([`from_factory`](Self::from_factory)).
    inbox: Option<Inbox<S::Command>>,
}

impl<S: Service> Simulation<S> {
    /// The service's address, as the client sees it.
    pub const SERVER: Ipv4Addr = Pair::SERVER;

    /// A perfect wire; both ends have `max_connections` slots.
    pub fn new(service: S, max_connections: usize) -> Self {
        Self::with_impairments(service, max_connections, Impairments::none())
    }

    /// A wire with loss, duplication, reordering or delay.
    pub fn with_impairments(service: S, max_connections: usize, imp: Impairments) -> Self {
        let pair = Pair::new(
            &Pair::client_config(max_connections),
            &Pair::server_config(max_connections),
            imp,
        );
        let rt = Runtime::new(service, pair.b.capacity(), Instant::ZERO);
        Simulation {
            pair,
            rt,
            inbox: None,
        }
    }

    /// A perfect wire, and the service that `make(0, &[], fanout)` builds: the factory
    /// the kernel and dataplane backends take, for one worker (no address is bound yet).
    /// What the service publishes on `fanout` reaches its
    /// [`on_command`](Service::on_command) in the same round.
    pub fn from_factory(
        max_connections: usize,
        make: impl FnOnce(usize, &[SocketAddr], &Fanout<S::Command>) -> S,
    ) -> Self
    where
        S::Command: Clone,
    {
        let (fanout, mut inboxes) = Fanout::new(1);
        let mut sim = Self::new(make(0, &[], &fanout), max_connections);
        sim.inbox = inboxes.pop();
        sim
    }

    /// Opens a listener for the service.
    pub fn listen(&mut self, port: u16, opts: ListenOptions) -> Result<ListenerId, ListenError> {
        self.rt.listen(&mut self.pair.b, port, opts)
    }

    /// The client end.
    pub fn client(&mut self) -> &mut Stack {
        &mut self.pair.a
    }

    /// The server end: the stack the service runs on (its connections, counters, memory).
    pub fn server(&mut self) -> &mut Stack {
        &mut self.pair.b
    }

    /// The runtime (service and stats).
    pub fn runtime(&mut self) -> &mut Runtime<S> {
        &mut self.rt
    }

    /// Simulated time.
    pub fn now(&self) -> Instant {
        self.pair.now()
    }

    /// Delivers a control command to the service now.
    pub fn command(&mut self, cmd: &S::Command) {
        let now = self.pair.now();
        self.rt.command(&mut self.pair.b, now, cmd);
    }

    /// Shuts the service down as a worker does: every connection closed (FIN), paced
    /// ([`Runtime::close_all`]); the rest of the close happens as time moves on.
    pub fn close_all(&mut self) {
        let now = self.pair.now();
        self.rt.close_all(&mut self.pair.b, now);
    }

    /// Ends a grace period as a worker does: every connection the service holds is reset
    /// ([`Runtime::abort_all`]).
    pub fn abort_all(&mut self) {
        self.rt.abort_all(&mut self.pair.b);
    }

    /// One round at the current time: frames are delivered, `client` runs on the client
    /// end (it must take that stack's events), the service on the other.
    pub fn step(&mut self, client: &mut impl FnMut(&mut Stack)) {
        let now = self.pair.now();
        let (rt, inbox) = (&mut self.rt, &self.inbox);
        self.pair.step(&mut |side, stack| match side {
            Side::A => client(stack),
            Side::B => {
                rt.handle_events(stack, now);
                while let Some(cmd) = inbox.as_ref().and_then(Inbox::try_recv) {
                    rt.command(stack, now, &cmd);
                }
            }
        });
    }

    /// Moves simulated time to the next frame, stack timer or runtime timer. Returns
    /// false when nothing at all is pending.
    pub fn advance(&mut self) -> bool {
        self.advance_until(u64::MAX)
    }

    /// [`advance`](Self::advance), but an idle wait for a runtime timer stops at
    /// `limit_ms` (absolute).
    fn advance_until(&mut self, limit_ms: u64) -> bool {
        let now = self.pair.now().total_millis() as u64;
        let timer = self.rt.poll_at().map(|t| t.total_millis() as u64);
        // The runtime's timer when it comes before anything on the wire or in the stacks.
        if let Some(t) = timer
            && self.pair.next_at().is_none_or(|next| t < next)
        {
            self.pair.sleep(t.min(limit_ms).saturating_sub(now).max(1));
            return true;
        }
        self.pair.advance()
    }

    /// Steps until `client` returns true after a round, or `limit_ms` of simulated time
    /// pass. Returns whether the condition was met. Runtime timers fire at the first
    /// round at or after their deadline.
    pub fn run_until(&mut self, limit_ms: u64, mut client: impl FnMut(&mut Stack) -> bool) -> bool {
        let end = self.pair.now().total_millis() as u64 + limit_ms;
        let mut done = false;
        while self.pair.now().total_millis() as u64 <= end {
            self.step(&mut |stack| done |= client(stack));
            if done {
                return true;
            }
            if !self.advance_until(end + 1) {
                self.pair.sleep(1);
            }
        }
        false
    }

    /// Jumps simulated time forward by `ms`, then runs the rounds that are due.
    pub fn sleep(&mut self, ms: u64) {
        self.pair.sleep(ms);
    }
}
