//! The built-in services a worker runs on its stack: `echo`, `http` and `push` from the
//! `c10m-apps` crate, dispatched by port ([`c10m_apps::services::Builtin`]) and driven by
//! a [`c10m_apps::Runtime`] once per loop iteration.
//!
//! The runtime drains the stack's events after each receive batch and calls the
//! service's handlers, which read and write through the stack's buffers. Handlers do
//! bounded work per event and never block.

use std::fmt;
use std::str::FromStr;

use std::net::SocketAddrV4;

use c10m_apps::Runtime;
use c10m_apps::services::{Builtin, Kind, http, push};
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
/// of the report and the metrics).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct EchoStats {
    /// Connections accepted (every service).
    pub accepted: u64,
    /// Connections whose close completed (every service).
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

/// The built-in services of one worker, on its runtime.
#[derive(Debug)]
pub(crate) struct Apps {
    rt: Runtime<Builtin>,
}

impl Apps {
    /// The services on `ports`, for a stack of `capacity` connection slots.
    pub(crate) fn new(
        ports: &[(Service, u16)],
        http_body: usize,
        capacity: usize,
        now: Instant,
    ) -> Apps {
        let ports = ports.iter().map(|&(s, p)| (p, s.kind())).collect();
        let http = http::Config {
            body_size: http_body,
            ..http::Config::default()
        };
        let svc = Builtin::new(ports, http, push::Config::default());
        Apps {
            rt: Runtime::new(svc, capacity, now),
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

    /// Publishes to the push service's subscribers; returns how many got the message.
    pub(crate) fn publish(
        &mut self,
        stack: &mut Stack,
        now: Instant,
        topic: &str,
        payload: &[u8],
    ) -> u64 {
        let before = self.rt.service().push.stats.delivered;
        self.rt
            .command(stack, now, &push::Command::publish(topic, payload));
        self.rt.service().push.stats.delivered - before
    }

    /// The counters.
    pub(crate) fn stats(&self) -> EchoStats {
        let rt = self.rt.stats();
        let svc = self.rt.service();
        EchoStats {
            accepted: rt.accepted,
            closed: rt.closed,
            bytes: svc.echo.bytes,
            http_requests: svc.http.stats.requests,
            push_delivered: svc.push.stats.delivered,
            push_published: svc.push.stats.published,
        }
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
