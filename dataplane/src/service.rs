//! The built-in services a worker runs on its stack. Only `echo` exists for now; the
//! `apps` crate will bring the public service API.
//!
//! A service is driven by the worker's loop after each receive batch: it drains the
//! stack's events and reads and writes through the stack's buffers. Handlers do bounded
//! work per event and never block.

use std::fmt;
use std::str::FromStr;

use std::net::SocketAddrV4;

use c10m_stack::{ConnError, ConnId, Event, ListenerId, Stack};

use crate::control::ConnInfo;
use crate::report::STATE_NAMES;

/// A service a listener runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// RFC 862 echo: accept everything, send every byte back, close after the peer does.
    Echo,
}

impl Service {
    /// Every service, for help and error messages.
    pub const ALL: [Service; 1] = [Service::Echo];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Service::Echo => "echo",
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

/// What the echo service counted.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct EchoStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections whose Closed event arrived.
    pub closed: u64,
    /// Bytes echoed.
    pub bytes: u64,
}

/// The echo service of one worker.
#[derive(Debug, Default)]
pub(crate) struct Echo {
    buf: Vec<u8>,
    pub(crate) stats: EchoStats,
    /// Accepted connections by slot, and whether we closed them (shutdown).
    conns: Vec<Option<(ConnId, bool)>>,
}

/// Most bytes moved per connection per event: bounded work per handler call.
const CHUNK: usize = 16 * 1024;

impl Echo {
    /// Handles every pending event of `stack`.
    pub(crate) fn handle(&mut self, stack: &mut Stack) {
        while let Some(ev) = stack.next_event() {
            match ev {
                Event::Acceptable(l) => {
                    while let Some(c) = stack.accept(l) {
                        self.stats.accepted += 1;
                        self.track(c, false);
                    }
                }
                Event::Readable(c) | Event::Writable(c) => self.pump(stack, c),
                Event::Closed(c) => {
                    self.stats.closed += 1;
                    if let Some(slot) = self.conns.get_mut(c.slot())
                        && slot.is_some_and(|(id, _)| id == c)
                    {
                        *slot = None;
                    }
                }
                Event::Connected(_) => {}
            }
        }
    }

    fn track(&mut self, c: ConnId, closed: bool) {
        if self.conns.len() <= c.slot() {
            self.conns.resize(c.slot() + 1, None);
        }
        self.conns[c.slot()] = Some((c, closed));
    }

    /// Shutdown: accepts what `listeners` still queue, then closes every connection
    /// (FIN after the data already queued). Data arriving later is read and dropped.
    pub(crate) fn close_all(&mut self, stack: &mut Stack, listeners: &[ListenerId]) {
        for &l in listeners {
            while let Some(c) = stack.accept(l) {
                self.stats.accepted += 1;
                self.track(c, false);
            }
        }
        for entry in self.conns.iter_mut().flatten() {
            entry.1 = true;
            let _ = stack.close(entry.0);
        }
    }

    /// End of the grace period: resets every connection still open.
    pub(crate) fn abort_all(&mut self, stack: &mut Stack) {
        for (c, _) in self.conns.iter_mut().filter_map(Option::take) {
            let _ = stack.abort(c);
        }
    }

    /// Up to `limit` connections with their endpoints and states.
    pub(crate) fn sample(&self, stack: &mut Stack, limit: usize) -> Vec<ConnInfo> {
        let mut out = Vec::new();
        for &(c, _) in self.conns.iter().flatten() {
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

    /// Moves what fits from the receive buffer to the send buffer; closes on EOF once
    /// everything was echoed.
    fn pump(&mut self, stack: &mut Stack, c: ConnId) {
        if self.conns.get(c.slot()).copied().flatten() == Some((c, true)) {
            // Closed by us at shutdown: read and drop what still comes.
            while let Ok(n) = stack.recv(c, &mut [0u8; 2048]) {
                if n == 0 {
                    break;
                }
            }
            return;
        }
        loop {
            let Ok(room) = stack.send_room(c) else { return };
            if room == 0 {
                // Ask for a Writable event: a want of one byte arms it.
                let _ = stack.send_with(c, 1, |_| (0, ()));
                return;
            }
            self.buf.resize(room.min(CHUNK), 0);
            match stack.recv(c, &mut self.buf) {
                Ok(0) => return,
                Ok(n) => {
                    self.stats.bytes += n as u64;
                    // Sized to the room, so it all fits; if not, the rest is dropped and
                    // the connection is aborted rather than silently corrupted.
                    if stack.send(c, &self.buf[..n]) != Ok(n) {
                        let _ = stack.abort(c);
                        return;
                    }
                }
                Err(ConnError::Finished) => {
                    let _ = stack.close(c);
                    return;
                }
                Err(_) => return,
            }
        }
    }
}
