//! One reactor thread: a mio (epoll, edge-triggered) loop over its own SO_REUSEPORT
//! listeners and the connections they accepted.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::conn::{Io, Net};
use crate::core::{Core, Ev};
use crate::fanout::Inbox;
use crate::service::{Service, Stats};
use crate::sock::{READ_BUDGET, Sock, Socks};

pub(crate) const WAKER: Token = Token(usize::MAX);
const LISTENER_BASE: usize = usize::MAX - 1024;

/// Longest sleep in `epoll_wait`, so a stop request is seen.
const MAX_WAIT: Duration = Duration::from_millis(50);

/// A worker's reactor.
pub(crate) struct Worker<S: Service> {
    pub(crate) poll: Poll,
    pub(crate) listeners: Vec<(TcpListener, u16)>,
    pub(crate) socks: Socks,
    pub(crate) core: Core<S>,
    pub(crate) commands: Inbox<S::Command>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) start: Instant,
    pub(crate) again: Vec<u32>,
}

impl<S: Service> Worker<S> {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub(crate) fn run(mut self) -> io::Result<Stats> {
        for (i, (l, _)) in self.listeners.iter_mut().enumerate() {
            self.poll
                .registry()
                .register(l, Token(LISTENER_BASE + i), Interest::READABLE)?;
        }
        let mut events = Events::with_capacity(1024);
        while !self.stop.load(Ordering::Relaxed) {
            let now = self.now_ms();
            let wait = if self.again.is_empty() {
                let t = self.core.next_timer().map(|t| t.saturating_sub(now));
                let wait = t.map_or(MAX_WAIT, Duration::from_millis).min(MAX_WAIT);
                if self.core.service.busy() {
                    wait.min(Duration::from_millis(1))
                } else {
                    wait
                }
            } else {
                Duration::ZERO
            };
            match self.poll.poll(&mut events, Some(wait)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            self.core.set_now(self.now_ms());
            for ev in events.iter() {
                match ev.token() {
                    WAKER => self.commands(),
                    Token(t) if t >= LISTENER_BASE => self.accept(t - LISTENER_BASE),
                    Token(slot) => {
                        let slot = slot as u32;
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.readable(slot);
                        }
                        if ev.is_writable() || ev.is_write_closed() {
                            self.writable(slot);
                        }
                    }
                }
            }
            for slot in std::mem::take(&mut self.again) {
                self.readable(slot);
            }
            let fired = self.core.take_fired(self.now_ms());
            for &key in &fired {
                if let Some(io) = self.socks.io(key / 2) {
                    self.core.timer(key, Io::Kernel(io));
                }
                self.settle_touched();
            }
            self.core.put_fired(fired);
            self.core.poll(Net::Kernel(&mut self.socks));
            self.settle_touched();
        }
        let live: Vec<u32> = self.socks.live().collect();
        for slot in live {
            self.drop_sock(slot);
        }
        Ok(self.core.stats)
    }

    fn commands(&mut self) {
        while let Some(cmd) = self.commands.try_recv() {
            self.core.command(&cmd, Net::Kernel(&mut self.socks));
            self.settle_touched();
        }
    }

    fn accept(&mut self, i: usize) {
        loop {
            let (l, port) = &self.listeners[i];
            let port = *port;
            let stream = match l.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and the like: leave the rest in the backlog for now.
                    tracing::warn!("accept: {e}");
                    return;
                }
            };
            self.admit(stream, port);
        }
    }

    fn admit(&mut self, mut stream: TcpStream, port: u16) {
        let _ = stream.set_nodelay(true);
        let Some(slot) = self.socks.peek_free() else {
            self.core.stats.refused += 1;
            return; // dropping the stream closes it
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(slot as usize), interest)
        {
            tracing::warn!("register: {e}");
            return;
        }
        let slot = match self.socks.insert(Sock::new(stream)) {
            Ok(s) => s,
            Err(_) => return,
        };
        if let Some(io) = self.socks.io(slot) {
            self.core.accept(slot, Io::Kernel(io), port, None);
        }
        self.settle_touched();
    }

    fn readable(&mut self, slot: u32) {
        let Some(s) = self.socks.get_mut(slot) else {
            return;
        };
        s.budget = READ_BUDGET;
        if let Some(io) = self.socks.io(slot) {
            self.core.event(slot, Io::Kernel(io), Ev::Readable);
        }
        if let Some(s) = self.socks.get_mut(slot)
            && std::mem::take(&mut s.again)
        {
            self.again.push(slot);
        }
        self.settle_touched();
    }

    fn writable(&mut self, slot: u32) {
        let Some(s) = self.socks.get_mut(slot) else {
            return;
        };
        if s.flush() && std::mem::take(&mut s.want_write) {
            if let Some(io) = self.socks.io(slot) {
                self.core.event(slot, Io::Kernel(io), Ev::Writable);
            }
        } else {
            self.socks.io(slot); // settle it: the flush may have failed
        }
        self.settle_touched();
    }

    /// Acts on what handlers asked of the connections they touched.
    fn settle_touched(&mut self) {
        for slot in self.socks.take_touched() {
            self.settle(slot);
        }
    }

    fn settle(&mut self, slot: u32) {
        let Some(s) = self.socks.get_mut(slot) else {
            return;
        };
        if s.abort || s.dead {
            if s.abort {
                let _ = socket2::SockRef::from(&s.stream).set_linger(Some(Duration::ZERO));
            }
            return self.drop_sock(slot);
        }
        if s.close_req && !s.shut && s.flush() {
            s.shut = true;
            if s.stream.shutdown(std::net::Shutdown::Write).is_err() {
                return self.drop_sock(slot);
            }
        }
        if s.shut && !s.eof {
            // Drain what the peer still sends, to see its FIN.
            if let Some(io) = self.socks.io(slot) {
                self.core.event(slot, Io::Kernel(io), Ev::Readable);
            }
            self.socks.take_touched();
        }
        if let Some(s) = self.socks.get_mut(slot)
            && s.shut
            && (s.eof || s.dead)
        {
            self.drop_sock(slot);
        }
    }

    fn drop_sock(&mut self, slot: u32) {
        if let Some(mut s) = self.socks.remove(slot) {
            let _ = self.poll.registry().deregister(&mut s.stream);
            drop(s);
            self.core.closed(slot);
        }
    }
}
