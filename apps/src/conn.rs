//! The connection handle given to a service's handlers, and the set of all connections
//! given to [`Service::on_command`](crate::Service::on_command).

use std::time::Duration;

use c10m_stack::{ConnId, Stack};

use crate::slot::{Error, Handle, LINGER, Meta, Timers};
use crate::sock::{KIo, Socks};

/// Where a connection's bytes go: the userspace stack or a kernel socket.
pub(crate) enum Io<'a> {
    Stack(&'a mut Stack, ConnId),
    Kernel(KIo<'a>),
}

impl Io<'_> {
    pub(crate) fn recv_with<R>(&mut self, f: impl FnOnce(&[u8]) -> (usize, R)) -> Result<R, Error> {
        match self {
            Io::Stack(s, id) => Ok(s.recv_with(*id, |b| f(b))?),
            Io::Kernel(k) => k.recv_with(f),
        }
    }

    pub(crate) fn send(&mut self, data: &[u8]) -> Result<usize, Error> {
        match self {
            Io::Stack(s, id) => Ok(s.send(*id, data)?),
            Io::Kernel(k) => k.send(data),
        }
    }

    fn send_with(
        &mut self,
        want: usize,
        f: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<usize, Error> {
        match self {
            Io::Stack(s, id) => Ok(s.send_with(*id, want, |b| {
                let n = f(b);
                (n, n)
            })?),
            Io::Kernel(k) => k.send_with(want, f),
        }
    }

    fn send_room(&mut self) -> Result<usize, Error> {
        match self {
            Io::Stack(s, id) => Ok(s.send_room(*id)?),
            Io::Kernel(k) => k.send_room(),
        }
    }

    pub(crate) fn close(&mut self) {
        match self {
            Io::Stack(s, id) => drop(s.close(*id)),
            Io::Kernel(k) => k.close(),
        }
    }

    pub(crate) fn abort(&mut self) {
        match self {
            Io::Stack(s, id) => drop(s.abort(*id)),
            Io::Kernel(k) => k.abort(),
        }
    }
}

/// One connection, as a handler sees it: read, write, close, and its timer.
///
/// Reads and writes go straight to the backend's buffers: on the userspace stack,
/// [`recv_with`](Self::recv_with) shows the socket's own receive buffer and
/// [`send_with`](Self::send_with) writes into its transmit buffer.
pub struct Conn<'a> {
    pub(crate) io: Io<'a>,
    pub(crate) meta: &'a mut Meta,
    pub(crate) timers: &'a mut Timers,
    pub(crate) handle: Handle,
}

impl<'a> Conn<'a> {
    /// The handle of slot `slot` as its record stands (its current generation).
    pub(crate) fn new(slot: u32, io: Io<'a>, meta: &'a mut Meta, timers: &'a mut Timers) -> Self {
        let handle = Handle {
            slot,
            generation: meta.generation,
        };
        Conn {
            io,
            meta,
            timers,
            handle,
        }
    }
}

impl std::fmt::Debug for Conn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl Conn<'_> {
    /// This connection's handle (keep it to reach the connection from `on_command`).
    pub fn handle(&self) -> Handle {
        self.handle
    }

    /// The local port it was accepted on.
    pub fn local_port(&self) -> u16 {
        self.meta.port
    }

    /// Milliseconds since the runtime started, on its clock (simulated or real).
    pub fn now_ms(&self) -> u64 {
        self.timers.now_ms
    }

    /// Zero-copy receive: `f` sees the received bytes that are contiguous in the buffer
    /// (an empty slice when none wait) and returns how many it consumed, plus a value.
    /// Unconsumed bytes stay for the next call. `Err(Finished)` once the peer's FIN was
    /// read.
    pub fn recv_with<R>(&mut self, f: impl FnOnce(&[u8]) -> (usize, R)) -> Result<R, Error> {
        self.io.recv_with(f)
    }

    /// Copies received bytes into `buf`: `Ok(0)` when none wait.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        self.io.recv_with(|b| {
            let n = b.len().min(buf.len());
            buf[..n].copy_from_slice(&b[..n]);
            (n, n)
        })
    }

    /// Queues `data`; returns how much was taken. A short count means the transmit buffer
    /// is full: [`on_writable`](crate::Service::on_writable) follows when room frees up.
    pub fn send(&mut self, data: &[u8]) -> Result<usize, Error> {
        if self.meta.closing {
            return Err(Error::InvalidState);
        }
        self.io.send(data)
    }

    /// Queues all of `data` if the transmit buffer has room for it, else nothing; returns
    /// whether it did. For protocols of messages (lines, frames) that must never be cut,
    /// e.g. a broadcast to a member that does not read: the caller decides what a
    /// message that does not fit costs (dropped, or the connection closed).
    pub fn send_whole(&mut self, data: &[u8]) -> bool {
        self.send_room().is_ok_and(|room| room >= data.len()) && self.send(data) == Ok(data.len())
    }

    /// Zero-copy send: `f` writes into free transmit space (up to `want` bytes hoped for)
    /// and returns how many bytes it wrote. `on_writable` is armed if less than `want`
    /// was free.
    pub fn send_with(
        &mut self,
        want: usize,
        f: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<usize, Error> {
        if self.meta.closing {
            return Err(Error::InvalidState);
        }
        self.io.send_with(want, f)
    }

    /// Bytes [`send`](Self::send) would take right now.
    pub fn send_room(&mut self) -> Result<usize, Error> {
        self.io.send_room()
    }

    /// Closes the sending side after queued data (FIN). Bytes still arriving are
    /// discarded by the runtime; a peer that has not finished within [`LINGER`] is reset.
    pub fn close(&mut self) {
        if !self.meta.closing {
            self.meta.closing = true;
            self.io.close();
            let key = Timers::idle_key(self.handle.slot);
            self.timers.schedule(key, LINGER);
        }
    }

    /// Resets the connection (RST) and drops its buffered data.
    pub fn abort(&mut self) {
        self.meta.closing = true;
        self.io.abort();
    }

    /// Whether `close` or `abort` was called (or the runtime closed it).
    pub fn is_closing(&self) -> bool {
        self.meta.closing
    }

    /// Arms the connection's timer to fire `after` from now (replacing an armed one);
    /// [`on_timer`](crate::Service::on_timer) runs then. Millisecond resolution.
    pub fn set_timer(&mut self, after: Duration) {
        let key = Timers::app_key(self.handle.slot);
        self.timers.schedule(key, after);
    }

    /// Sets this connection's idle timeout (replacing the service's
    /// [`idle_timeout`](crate::Service::idle_timeout)); `None` disables it.
    pub fn set_idle_timeout(&mut self, idle: Option<Duration>) {
        let key = Timers::idle_key(self.handle.slot);
        self.meta.idle = idle.map_or(0, |d| d.as_millis().max(1) as u64);
        if self.meta.closing {
            return;
        }
        match idle {
            Some(d) => self.timers.schedule(key, d),
            None => self.timers.cancel(key),
        }
    }

    /// Disarms the connection's timer.
    pub fn cancel_timer(&mut self) {
        self.timers.cancel(Timers::app_key(self.handle.slot));
    }
}

/// The backend's connections, for [`Conns`].
pub(crate) enum Net<'a> {
    Stack(&'a mut Stack),
    Kernel(&'a mut Socks),
}

/// Every connection of one runtime, reachable by [`Handle`]: what
/// [`Service::on_command`](crate::Service::on_command) acts on.
pub struct Conns<'a, T> {
    pub(crate) net: Net<'a>,
    pub(crate) metas: &'a mut [Meta],
    pub(crate) states: &'a mut [Option<T>],
    pub(crate) timers: &'a mut Timers,
}

impl<T> std::fmt::Debug for Conns<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conns").finish_non_exhaustive()
    }
}

impl<T> Conns<'_, T> {
    /// Runs `f` on the connection `handle` names and its state; `None` if it is gone or
    /// closing.
    pub fn with<R>(
        &mut self,
        handle: Handle,
        f: impl FnOnce(&mut Conn<'_>, &mut T) -> R,
    ) -> Option<R> {
        let slot = handle.slot as usize;
        let meta = self.metas.get_mut(slot)?;
        let state = self.states.get_mut(slot)?.as_mut()?;
        if meta.generation != handle.generation || meta.closing {
            return None;
        }
        let io = match &mut self.net {
            Net::Stack(stack) => Io::Stack(stack, meta.conn?),
            Net::Kernel(socks) => Io::Kernel(socks.io(handle.slot)?),
        };
        let mut conn = Conn::new(handle.slot, io, meta, self.timers);
        Some(f(&mut conn, state))
    }
}
