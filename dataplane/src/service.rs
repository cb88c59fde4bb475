//! The built-in services a worker runs on its stack. Only `echo` exists for now; the
//! `apps` crate will bring the public service API.
//!
//! A service is driven by the worker's loop after each receive batch: it drains the
//! stack's events and reads and writes through the stack's buffers. Handlers do bounded
//! work per event and never block.

use std::fmt;
use std::str::FromStr;

use c10m_stack::{ConnError, ConnId, Event, Stack};

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
}

/// Most bytes moved per connection per event: bounded work per handler call.
const CHUNK: usize = 16 * 1024;

impl Echo {
    /// Handles every pending event of `stack`.
    pub(crate) fn handle(&mut self, stack: &mut Stack) {
        while let Some(ev) = stack.next_event() {
            match ev {
                Event::Acceptable(l) => {
                    while stack.accept(l).is_some() {
                        self.stats.accepted += 1;
                    }
                }
                Event::Readable(c) | Event::Writable(c) => self.pump(stack, c),
                Event::Closed(_) => self.stats.closed += 1,
                Event::Connected(_) => {}
            }
        }
    }

    /// Moves what fits from the receive buffer to the send buffer; closes on EOF once
    /// everything was echoed.
    fn pump(&mut self, stack: &mut Stack, c: ConnId) {
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
