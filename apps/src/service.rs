//! The service API: the trait a service implements and the handles it is given.
//!
//! A [`Service`] is a set of event handlers. The runtime calls them, one at a time, on the
//! worker thread that owns the connection, and each must return in microseconds: it reads
//! what is there, writes what fits, and returns. Per-connection state is a value of the
//! service's [`Service::State`] type that the runtime stores in a preallocated slot array
//! indexed by the connection's slot: no thread, task, future or heap allocation per
//! connection is added by the runtime.
//!
//! Events are edge-triggered. [`Service::on_readable`] runs when new bytes (or the peer's
//! FIN) arrived: read until [`Conn::recv_with`] hands over an empty slice, or stop early
//! when the transmit side is full, after which [`Service::on_writable`] follows once room
//! frees up. No new readable event comes for bytes that were already there.
//!
//! # Writing to other connections
//!
//! A handler's [`Conn`] is its own connection. To write to others — a broadcast to a
//! room, a reply to a waiting connection, a message for a subscriber — keep their
//! [`Handle`]s in the service (a handle of a connection that closed reaches nothing) and
//! write through [`Conns::with`], which the runtime hands to two handlers:
//!
//! - [`on_command`](Service::on_command) runs for each message published on the
//!   service's [`Fanout`](crate::Fanout), on **every worker**. Each backend hands the
//!   fanout to the service factory, so any handler can publish: a message that arrives
//!   on one worker reaches the connections of all (the worker's own included). This is
//!   the portable way, on the kernel, dataplane and simulation backends alike;
//!   `examples/chat.rs` is built on it.
//! - [`on_poll`](Service::on_poll) runs once per loop iteration, after the events: the
//!   place to act on what handlers of this iteration noted for connections of the same
//!   worker (and to take offloaded results).
//!
//! Writes to another connection follow the same rules as to one's own: a full transmit
//! buffer takes nothing more ([`Conn::send_whole`] keeps a message whole or drops it),
//! and [`Conns::with`] returns `None` for a connection that is gone or closing.
//!
//! ```
//! use c10m_apps::{Conn, Conns, Handle, Service};
//!
//! /// Counts the bytes of each connection and answers every line with the running total.
//! struct Count;
//!
//! impl Service for Count {
//!     type State = u64;
//!     type Command = ();
//!
//!     fn on_accept(&mut self, _conn: &mut Conn<'_>) -> u64 {
//!         0
//!     }
//!
//!     fn on_readable(&mut self, conn: &mut Conn<'_>, total: &mut u64) {
//!         loop {
//!             let got = conn.recv_with(|b| (b.len(), (b.len(), b.contains(&b'\n'))));
//!             let (n, newline) = match got {
//!                 Ok(r) => r,
//!                 Err(_) => return conn.close(), // the peer is done
//!             };
//!             if n == 0 {
//!                 return;
//!             }
//!             *total += n as u64;
//!             if newline {
//!                 let _ = conn.send(format!("{total}\n").as_bytes());
//!             }
//!         }
//!     }
//! }
//! # let _ = Count;
//! ```

use std::time::Duration;

use crate::conn::{Conn, Conns};
use crate::slot::Handle;

/// A service: handlers for the events of its connections.
///
/// Only [`on_accept`](Self::on_accept) and [`on_readable`](Self::on_readable) are required.
pub trait Service {
    /// Per-connection state, created by `on_accept` and handed back by `on_closed`.
    type State;
    /// A message from the control path (e.g. a publish), delivered to the service on every
    /// worker through [`on_command`](Self::on_command). Use `()` when there is none.
    type Command;

    /// A connection was accepted. Returns its state; the handle may already be used to
    /// write, close or set a timer. Data that arrived with the handshake is reported by an
    /// `on_readable` right after.
    fn on_accept(&mut self, conn: &mut Conn<'_>) -> Self::State;

    /// New bytes, or the peer's FIN, arrived. See the module docs for the edge-triggered
    /// contract.
    fn on_readable(&mut self, conn: &mut Conn<'_>, state: &mut Self::State);

    /// Room freed up in the transmit buffer after a short [`Conn::send`].
    fn on_writable(&mut self, conn: &mut Conn<'_>, state: &mut Self::State) {
        let _ = (conn, state);
    }

    /// The connection's timer ([`Conn::set_timer`]) fired.
    fn on_timer(&mut self, conn: &mut Conn<'_>, state: &mut Self::State) {
        let _ = (conn, state);
    }

    /// The connection is gone (closed by either side, reset, or timed out): its handle is
    /// dead and its state is handed back.
    fn on_closed(&mut self, handle: Handle, state: Self::State) {
        let _ = (handle, state);
    }

    /// A control message: act on any connections through `conns`.
    fn on_command(&mut self, command: &Self::Command, conns: &mut Conns<'_, Self::State>) {
        let _ = (command, conns);
    }

    /// Called once per loop iteration of the backend, after the events: the place to
    /// take the results of work handed to an [`Offload`](crate::offload::Offload) pool
    /// and deliver them to their connections.
    fn on_poll(&mut self, conns: &mut Conns<'_, Self::State>) {
        let _ = conns;
    }

    /// Whether work is outstanding that [`on_poll`](Self::on_poll) will want to see
    /// (e.g. offloaded jobs): the kernel backend then wakes up every millisecond rather
    /// than sleeping until the next event.
    fn busy(&self) -> bool {
        false
    }

    /// Connections from which nothing arrived for this long are closed by the runtime
    /// (FIN, then a reset if the peer has not finished within [`LINGER`](crate::LINGER)). `None`: never.
    fn idle_timeout(&self) -> Option<Duration> {
        None
    }
}

/// What a runtime counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections handed to the service.
    pub accepted: u64,
    /// Connections whose `on_closed` ran.
    pub closed: u64,
    /// Connections the idle timeout closed.
    pub idle_closed: u64,
    /// Connections refused because every slot was taken (kernel backend).
    pub refused: u64,
    /// Control commands delivered.
    pub commands: u64,
}
