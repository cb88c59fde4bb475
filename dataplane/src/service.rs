//! The services a worker runs on its stack, driven by a [`c10m_apps::Runtime`] once per
//! loop iteration: the built-in `echo`, `http` and `push` from the `c10m-apps` crate,
//! dispatched by port ([`c10m_apps::services::Builtin`]), or any [`c10m_apps::Service`]
//! of the user's ([`run_service`](crate::run_service)).
//!
//! The runtime drains the stack's events after each receive batch and calls the
//! service's handlers, which read and write through the stack's buffers. Handlers do
//! bounded work per event and never block.
//!
//! What only the built-in services have — the push service's publish command and the
//! echo, http and push counters — reaches the worker through two plain function hooks
//! ([`Extras`]); a service of the user's gets hooks that publish to no one and count
//! what the runtime counts (accepted, closed).

use std::fmt;
use std::str::FromStr;

use std::net::SocketAddrV4;

use c10m_apps::Runtime;
use c10m_apps::services::{Builtin, Kind, Settings, push};
use c10m_stack::{Instant, ListenError, ListenOptions, ListenerId, Stack};

use crate::control::ConnInfo;
use crate::report::STATE_NAMES;

/// A service a listener runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// RFC 862 echo: accept everything, send every byte back, close after the peer does.
    Echo,
    /// HTTP/1.1 plaintext responder (keep-alive, pipelining, HEAD).
    Http,
    /// IM-style push gateway: `SUB topic`, `UNSUB topic`, `PING`, server-sent `MSG`.
    Push,
}

impl Service {
    /// Every service, for help and error messages.
    pub const ALL: [Service; 3] = [Service::Echo, Service::Http, Service::Push];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        self.kind().name()
    }

    fn kind(self) -> Kind {
        match self {
            Service::Echo => Kind::Echo,
            Service::Http => Kind::Http,
            Service::Push => Kind::Push,
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Service {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Service::ALL
            .into_iter()
            .find(|svc| svc.name() == s)
            .ok_or_else(|| {
                let valid: Vec<_> = Service::ALL.iter().map(|s| s.name()).collect();
                format!(
                    "unknown service {s:?}: valid services are {}",
                    valid.join(", ")
                )
            })
    }
}

/// What the services counted (named after the first service, echo, for compatibility
/// of the report and the metrics). A service of the user's
/// ([`run_service`](crate::run_service)) has `accepted` and `closed`, counted by its
/// runtime; the other figures stay 0.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct EchoStats {
    /// Connections accepted (every service, built-in or not).
    pub accepted: u64,
    /// Connections whose close completed (every service, built-in or not).
    pub closed: u64,
    /// Bytes echoed (echo).
    pub bytes: u64,
    /// HTTP requests answered with 200 (http).
    pub http_requests: u64,
    /// Messages queued to subscribers (push).
    pub push_delivered: u64,
    /// Publish commands handled (push).
    pub push_published: u64,
}

/// The hooks for what only some services have.
pub(crate) struct Extras<S: c10m_apps::Service> {
    /// A publish from the control path: how many subscribers got the message.
    publish: fn(&mut Runtime<S>, &mut Stack, Instant, &str, &[u8]) -> u64,
    /// The counters.
    stats: fn(&Runtime<S>) -> EchoStats,
}

impl<S: c10m_apps::Service> Clone for Extras<S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S: c10m_apps::Service> Copy for Extras<S> {}

impl<S: c10m_apps::Service> Extras<S> {
    /// A service with no publish command and the runtime's counters only.
    pub(crate) fn plain() -> Extras<S> {
        fn no_publish<S: c10m_apps::Service>(
            _: &mut Runtime<S>,
            _: &mut Stack,
            _: Instant,
            _: &str,
            _: &[u8],
        ) -> u64 {
            0
        }
        Extras {
            publish: no_publish::<S>,
            stats: runtime_stats::<S>,
        }
    }
}

impl Extras<Builtin> {
    /// The built-in services: publish to push, and every service's counters.
    pub(crate) fn builtin() -> Extras<Builtin> {
        Extras {
            publish: builtin_publish,
            stats: builtin_stats,
        }
    }
}

fn runtime_stats<S: c10m_apps::Service>(rt: &Runtime<S>) -> EchoStats {
    let s = rt.stats();
    EchoStats {
        accepted: s.accepted,
        closed: s.closed,
        ..EchoStats::default()
    }
}

fn builtin_publish(
    rt: &mut Runtime<Builtin>,
    stack: &mut Stack,
    now: Instant,
    topic: &str,
    payload: &[u8],
) -> u64 {
    let before = rt.service().push.stats.delivered;
    rt.command(stack, now, &push::Command::publish(topic, payload));
    rt.service().push.stats.delivered.saturating_sub(before)
}

fn builtin_stats(rt: &Runtime<Builtin>) -> EchoStats {
    let svc = rt.service();
    EchoStats {
        bytes: svc.echo.bytes,
        http_requests: svc.http.stats.requests,
        push_delivered: svc.push.stats.delivered,
        push_published: svc.push.stats.published,
        ..runtime_stats(rt)
    }
}

/// The built-in services of `ports`, with these settings.
pub(crate) fn builtin(ports: &[(Service, u16)], settings: &Settings) -> Builtin {
    let ports = ports.iter().map(|&(s, p)| (p, s.kind())).collect();
    Builtin::new(ports, settings)
}

/// One worker's service, on its runtime.
pub(crate) struct Apps<S: c10m_apps::Service> {
    rt: Runtime<S>,
    extras: Extras<S>,
}

impl<S: c10m_apps::Service> fmt::Debug for Apps<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Apps")
            .field("capacity", &self.rt.capacity())
            .finish_non_exhaustive()
    }
}

impl<S: c10m_apps::Service> Apps<S> {
    /// `service` for a stack of `capacity` connection slots.
    pub(crate) fn new(service: S, extras: Extras<S>, capacity: usize, now: Instant) -> Apps<S> {
        Apps {
            rt: Runtime::new(service, capacity, now),
            extras,
        }
    }

    /// Opens the listener of a service.
    pub(crate) fn listen(
        &mut self,
        stack: &mut Stack,
        port: u16,
        opts: ListenOptions,
    ) -> Result<ListenerId, ListenError> {
        self.rt.listen(stack, port, opts)
    }

    /// Handles every pending event of `stack` and the timers due.
    pub(crate) fn handle(&mut self, stack: &mut Stack, now: Instant) {
        self.rt.handle_events(stack, now);
    }

    /// The next instant a service timer (idle timeout, connection timer) is due.
    pub(crate) fn poll_at(&self) -> Option<Instant> {
        self.rt.poll_at()
    }

    /// Publishes to the push service's subscribers; returns how many got the message
    /// (0 for a service without a publish command).
    pub(crate) fn publish(
        &mut self,
        stack: &mut Stack,
        now: Instant,
        topic: &str,
        payload: &[u8],
    ) -> u64 {
        (self.extras.publish)(&mut self.rt, stack, now, topic, payload)
    }

    /// The counters.
    pub(crate) fn stats(&self) -> EchoStats {
        (self.extras.stats)(&self.rt)
    }

    /// Shutdown: accepts what the listeners still queue, then closes every connection
    /// (FIN after the data already queued). Data arriving later is read and dropped.
    pub(crate) fn close_all(&mut self, stack: &mut Stack, now: Instant) {
        self.rt.close_all(stack, now);
    }

    /// End of the grace period: resets every connection still open.
    pub(crate) fn abort_all(&mut self, stack: &mut Stack) {
        self.rt.abort_all(stack);
    }

    /// Up to `limit` connections with their endpoints and states.
    pub(crate) fn sample(&self, stack: &mut Stack, limit: usize) -> Vec<ConnInfo> {
        let mut out = Vec::new();
        for c in self.rt.connections() {
            if out.len() >= limit {
                break;
            }
            let (Ok(t), Ok(state)) = (stack.tuple(c), stack.state(c)) else {
                continue;
            };
            out.push(ConnInfo {
                remote: SocketAddrV4::new(t.remote_addr.into(), t.remote_port),
                local: SocketAddrV4::new(t.local_addr.into(), t.local_port),
                state: STATE_NAMES[c10m_stack::state_index(state)],
            });
        }
        out
    }
}
