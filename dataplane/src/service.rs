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

use c10m_apps::services::{Builtin, Kind, Settings, push};
use c10m_apps::{Inbox, Runtime};
use c10m_stack::{Instant, Stack, Warmer};

use crate::msg::ConnInfo;
use crate::stats::EchoStats;

/// Starts a publish (topic, payload); returns its id, `None` without a publish command.
type PublishFn<S> = fn(&mut Runtime<S>, &mut Stack, Instant, &str, &[u8]) -> Option<u64>;

/// The hooks for what only some services have.
pub(crate) struct Extras<S: c10m_apps::Service> {
    /// A publish from the control path: starts its fan-out, returns its id (`None`: the
    /// service has no publish command).
    publish: PublishFn<S>,
    /// The outcome of the oldest publish whose fan-out ended, not taken yet.
    finished: fn(&mut Runtime<S>) -> Option<push::Outcome>,
    /// Whether the loop has frames waiting to be read (fan-outs slow down).
    backlog: fn(&mut Runtime<S>, bool),
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
        ) -> Option<u64> {
            None
        }
        Extras {
            publish: no_publish::<S>,
            finished: |_| None,
            backlog: |_, _| {},
            stats: runtime_stats::<S>,
        }
    }
}

impl Extras<Builtin> {
    /// The built-in services: publish to push, and every service's counters.
    pub(crate) fn builtin() -> Extras<Builtin> {
        Extras {
            publish: builtin_publish,
            finished: |rt| rt.service_mut().push.take_finished(),
            backlog: |rt, b| rt.service_mut().push.set_backlog(b),
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
) -> Option<u64> {
    rt.command(stack, now, &push::Command::publish(topic, payload));
    Some(rt.service().push.stats.published)
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
pub(crate) fn builtin(ports: &[(Kind, u16)], settings: &Settings) -> Builtin {
    let ports = ports.iter().map(|&(kind, port)| (port, kind)).collect();
    Builtin::new(ports, settings)
}

/// One worker's service, on its runtime, its end of the service's fanout, and the hooks
/// of what only some services have. The runtime's own calls (`listen`, `poll_at`,
/// `close_all`, `abort_all`) go to it directly (`Deref`); events go through
/// [`Apps::handle`], which also takes the fanout's commands.
pub(crate) struct Apps<S: c10m_apps::Service> {
    rt: Runtime<S>,
    extras: Extras<S>,
    inbox: Inbox<S::Command>,
}

impl<S: c10m_apps::Service> fmt::Debug for Apps<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Apps")
            .field("capacity", &self.rt.capacity())
            .finish_non_exhaustive()
    }
}

impl<S: c10m_apps::Service> std::ops::Deref for Apps<S> {
    type Target = Runtime<S>;

    fn deref(&self) -> &Runtime<S> {
        &self.rt
    }
}

impl<S: c10m_apps::Service> std::ops::DerefMut for Apps<S> {
    fn deref_mut(&mut self) -> &mut Runtime<S> {
        &mut self.rt
    }
}

impl<S: c10m_apps::Service> Apps<S> {
    /// `service` for a stack of `capacity` connection slots, with the commands of
    /// `inbox`.
    pub(crate) fn new(
        service: S,
        extras: Extras<S>,
        inbox: Inbox<S::Command>,
        capacity: usize,
        now: Instant,
    ) -> Apps<S> {
        Apps {
            rt: Runtime::new(service, capacity, now),
            extras,
            inbox,
        }
    }

    /// Has `warmer` fault the runtime's timer memory in ahead of use, or, without one (a
    /// prefaulted stack), faults it in now.
    pub(crate) fn settle_memory(&self, warmer: Option<&Warmer>) {
        match warmer {
            Some(w) => self.rt.warm_with(w),
            None => self.rt.fault_in(),
        }
    }

    /// Handles every pending event of `stack` and the timers due, then the commands
    /// waiting in the fanout's queue (at most its bound: [`c10m_apps::fanout::QUEUE`]).
    pub(crate) fn handle(&mut self, stack: &mut Stack, now: Instant) {
        self.rt.handle_events(stack, now);
        while let Some(cmd) = self.inbox.try_recv() {
            self.rt.command(stack, now, &cmd);
        }
    }

    /// Starts a publish to the push service's subscribers (its fan-out goes on in the
    /// next loop iterations); returns its id, `None` for a service without a publish
    /// command.
    pub(crate) fn publish(
        &mut self,
        stack: &mut Stack,
        now: Instant,
        topic: &str,
        payload: &[u8],
    ) -> Option<u64> {
        (self.extras.publish)(&mut self.rt, stack, now, topic, payload)
    }

    /// The outcome of the oldest publish whose fan-out ended, not taken yet.
    pub(crate) fn finished(&mut self) -> Option<push::Outcome> {
        (self.extras.finished)(&mut self.rt)
    }

    /// Says whether the loop has frames waiting to be read, before [`handle`](Self::handle).
    pub(crate) fn set_backlog(&mut self, backlog: bool) {
        (self.extras.backlog)(&mut self.rt, backlog);
    }

    /// The counters.
    pub(crate) fn stats(&self) -> EchoStats {
        (self.extras.stats)(&self.rt)
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
                remote: t.remote(),
                local: t.local(),
                state: c10m_stack::state_name(state),
            });
        }
        out
    }
}
