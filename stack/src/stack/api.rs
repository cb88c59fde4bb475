//! What the application calls: listen, accept, connect, read, write, close.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, State};
use smoltcp::time::Instant;

use crate::conn::{ConnId, flag};
use crate::counters::Refusal;
use crate::listener::{ListenError, ListenOptions, Listener, ListenerId, SocketOptions};
use crate::mem;
use crate::stack::{Event, Seen, Stack, seen};
use crate::table::{self, FourTuple};

/// Why an operation on a connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnError {
    /// The connection no longer exists (closed, reset, timed out, or a stale id).
    Closed,
    /// Not possible in the connection's TCP state (e.g. sending after `close`).
    InvalidState,
    /// The peer closed its side and every byte it sent was read.
    Finished,
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnError::Closed => "connection closed",
            ConnError::InvalidState => "not possible in this TCP state",
            ConnError::Finished => "peer closed its side",
        })
    }
}

impl std::error::Error for ConnError {}

/// Why [`Stack::connect`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectError {
    /// No free local port for this destination (or the given 4-tuple is taken).
    AddrInUse,
    /// Remote address or port unusable, or a local address the stack does not have.
    Unaddressable,
    /// A connection limit or an empty pool (see [`Refusal`]).
    Refused(Refusal),
    /// Zero-sized buffers, or too many distinct option sets.
    Invalid,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::AddrInUse => f.write_str("no free local port for this destination"),
            ConnectError::Unaddressable => f.write_str("unusable address or port"),
            ConnectError::Refused(r) => write!(f, "refused: no free {}", r.name()),
            ConnectError::Invalid => f.write_str("invalid connect options"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// Where to connect from. Defaults: the stack's first address, a port from its
/// [`PortChooser`](crate::PortChooser).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Options of the connection.
    pub socket: SocketOptions,
    /// Local address (one of the stack's, or inside an any-IP prefix).
    pub local_addr: Option<Ipv4Addr>,
    /// Local port.
    pub local_port: Option<u16>,
}

/// Bytes the stack reserved, by structure. `total` is what the benchmarks divide by the
/// connection count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Connection slots: smoltcp socket storage plus the stack's 56-byte record each
    /// (with the connection's timer node), and the socket buffers kept beside them
    /// ([`Config::buffers_in_slot`](crate::Config::buffers_in_slot)).
    pub slab: usize,
    /// The demux table.
    pub table: usize,
    /// The timing wheel's list heads and bitmaps (its per-connection nodes are in the
    /// slots, counted in `slab`).
    pub wheel: usize,
    /// Socket buffer pools (reserved, whether used or not), for the buffers not kept in
    /// the slots.
    pub buffers: usize,
    /// Buffer bytes held by live connections.
    pub buffers_in_use: usize,
    /// Listener queues, event and work queues, the port map.
    pub other: usize,
    /// Everything above but `buffers_in_use`.
    pub total: usize,
}

impl Stack {
    /// Listens on `port` on every address of the stack.
    pub fn listen(&mut self, port: u16, opts: ListenOptions) -> Result<ListenerId, ListenError> {
        let s = &opts.socket;
        if port == 0
            || opts.backlog == 0
            || opts.max_per_source == Some(0)
            || s.rx_buf == 0
            || s.tx_buf == 0
        {
            return Err(ListenError::Invalid);
        }
        if self.ports[usize::from(port)] != 0 {
            return Err(ListenError::PortInUse(port));
        }
        if self.listeners.len() >= usize::from(u16::MAX - 1) {
            return Err(ListenError::TooMany);
        }
        let l = self.listeners.len() as u16;
        let profile = self
            .new_profile(opts.socket, Some(l))
            .ok_or(ListenError::OutOfMemory)?;
        self.listeners.push(Listener::new(port, opts, profile));
        self.ports[usize::from(port)] = l + 1;
        Ok(ListenerId(l))
    }

    /// Stops taking new connections on `listener` (new SYNs get RST, within the RST rate
    /// limit); connections it
    /// already has, queued ones included, carry on.
    pub fn unlisten(&mut self, listener: ListenerId) {
        if let Some(l) = self.listeners.get_mut(listener.index()) {
            l.open = false;
            if self.ports[usize::from(l.port)] == listener.0 + 1 {
                self.ports[usize::from(l.port)] = 0;
            }
        }
    }

    /// Takes new connections on `listener` again after [`unlisten`](Self::unlisten),
    /// with the options it was opened with (an undrain). Fails with
    /// [`ListenError::PortInUse`] if another listener took its port meanwhile, and with
    /// [`ListenError::Invalid`] for a listener this stack never opened.
    pub fn relisten(&mut self, listener: ListenerId) -> Result<(), ListenError> {
        let l = self
            .listeners
            .get_mut(listener.index())
            .ok_or(ListenError::Invalid)?;
        let owner = &mut self.ports[usize::from(l.port)];
        if *owner != 0 && *owner != listener.0 + 1 {
            return Err(ListenError::PortInUse(l.port));
        }
        *owner = listener.0 + 1;
        l.open = true;
        Ok(())
    }

    /// Takes the next established connection from `listener`'s accept queue. Data that
    /// arrived before the accept is reported with a [`Event::Readable`].
    pub fn accept(&mut self, listener: ListenerId) -> Option<ConnId> {
        let li = listener.index();
        loop {
            let id = self.listeners.get_mut(li)?.next_queued()?;
            let Some(slot) = self.slab.check(id) else {
                continue;
            };
            if !self.slab.slots[slot as usize].meta.has(flag::QUEUED) {
                continue;
            }
            self.end_queued(slot);
            self.slab.slots[slot as usize].meta.flags |= flag::VISIBLE;
            let s = self.socket_seen(slot);
            if s.recv_queue > 0 || !s.may_recv {
                self.slab.slots[slot as usize].meta.flags |= flag::READ_PENDING;
                self.events.push_back(Event::Readable(id));
            }
            return Some(id);
        }
    }

    /// Opens a connection to `remote`, IPv4 or (with the `ipv6` feature) IPv6. The SYN
    /// leaves with the next [`poll`](Self::poll); [`Event::Connected`] or
    /// [`Event::Closed`] follows. An IPv6 connection leaves from the stack's first IPv6
    /// address ([`ConnectOptions::local_addr`] is IPv4's).
    pub fn connect(
        &mut self,
        remote: impl Into<SocketAddr>,
        opts: ConnectOptions,
    ) -> Result<ConnId, ConnectError> {
        let remote = remote.into();
        let ip = remote.ip();
        let broadcast = matches!(ip, IpAddr::V4(a) if a.is_broadcast());
        if remote.port() == 0 || ip.is_unspecified() || ip.is_multicast() || broadcast {
            return Err(ConnectError::Unaddressable);
        }
        if opts.socket.rx_buf == 0 || opts.socket.tx_buf == 0 {
            return Err(ConnectError::Invalid);
        }
        let local = match remote {
            SocketAddr::V4(_) => {
                let local = opts.local_addr.unwrap_or(self.addrs[0]);
                let a = u32::from(local);
                if !self.nets.iter().any(|&(net, mask)| a & mask == net) {
                    return Err(ConnectError::Unaddressable);
                }
                IpAddr::V4(local)
            }
            SocketAddr::V6(_) if opts.local_addr.is_some() => {
                return Err(ConnectError::Unaddressable);
            }
            SocketAddr::V6(_) => {
                let first = self.ipv6_addrs.first();
                IpAddr::V6(*first.ok_or(ConnectError::Unaddressable)?)
            }
        };
        let (Some(remote_addr), Some(local_addr)) = (table::addr(ip), table::addr(local)) else {
            return Err(ConnectError::Unaddressable);
        };
        let mut key = FourTuple {
            remote_addr,
            local_addr,
            remote_port: remote.port(),
            local_port: 0,
        };
        let (table, slab) = (&self.table, &self.slab);
        let mut taken = |port: u16| {
            let k = FourTuple {
                local_port: port,
                ..key
            };
            table.find(&k, |s| slab.key(s)).is_some()
        };
        key.local_port = match opts.local_port {
            Some(p) if p != 0 && !taken(p) => p,
            Some(_) => return Err(ConnectError::AddrInUse),
            None => self
                .chooser
                .choose(local, remote, &mut taken)
                .ok_or(ConnectError::AddrInUse)?,
        };
        let profile = self
            .new_profile(opts.socket, None)
            .ok_or(ConnectError::Invalid)?;
        let mut failed = None;
        let slot = self
            .open_slot(key, profile, |s, iface| {
                let local = (table::ip(key.local_addr), key.local_port);
                let remote = (table::ip(key.remote_addr), key.remote_port);
                failed = s.connect(iface.context(), remote, local).err();
            })
            .map_err(ConnectError::Refused)?;
        if failed.is_some() {
            self.free_slot(slot);
            return Err(ConnectError::Unaddressable);
        }
        self.counters.connects += 1;
        self.slab.slots[slot as usize].meta.flags |= flag::VISIBLE;
        self.mark_dirty(slot);
        Ok(self.slab.id(slot))
    }

    fn with_socket<R>(
        &mut self,
        id: ConnId,
        f: impl FnOnce(&mut tcp::Socket<'_>) -> R,
    ) -> Result<R, ConnError> {
        let slot = self.slab.check(id).ok_or(ConnError::Closed)?;
        let mut set = mem::one_slot(&mut self.slab.slots[slot as usize].storage);
        Ok(f(set.get_mut::<tcp::Socket>(SocketHandle::default())))
    }

    fn socket_seen(&mut self, slot: u32) -> Seen {
        let set = mem::one_slot(&mut self.slab.slots[slot as usize].storage);
        seen(set.get::<tcp::Socket>(SocketHandle::default()))
    }

    /// Copies received bytes into `buf`; `Ok(0)` when none are waiting,
    /// `Err(Finished)` once the peer's FIN was read.
    pub fn recv(&mut self, id: ConnId, buf: &mut [u8]) -> Result<usize, ConnError> {
        let r = self.with_socket(id, |s| s.recv_slice(buf))?;
        self.after_recv(id, r)
    }

    /// Zero-copy receive: `f` sees received bytes in the socket's own buffer (the first
    /// contiguous run: call again for the rest after a wrap) and returns how many it
    /// consumed.
    pub fn recv_with<R>(
        &mut self,
        id: ConnId,
        f: impl FnOnce(&mut [u8]) -> (usize, R),
    ) -> Result<R, ConnError> {
        let r = self.with_socket(id, |s| s.recv(f))?;
        self.after_recv(id, r)
    }

    fn after_recv<R>(&mut self, id: ConnId, r: Result<R, tcp::RecvError>) -> Result<R, ConnError> {
        self.mark_dirty(id.slot); // a window update may be due
        r.map_err(|e| match e {
            tcp::RecvError::Finished => ConnError::Finished,
            tcp::RecvError::InvalidState => ConnError::InvalidState,
        })
    }

    /// Queues `data` for sending; returns how much fit. A short count arms a
    /// [`Event::Writable`] for when space frees up.
    pub fn send(&mut self, id: ConnId, data: &[u8]) -> Result<usize, ConnError> {
        let (r, before, after) = self.with_socket(id, |s| {
            let before = seen(s);
            (s.send_slice(data), before, seen(s))
        })?;
        self.after_send(id, r.as_ref().is_ok_and(|&n| n < data.len()), before, after);
        r.map_err(|_| ConnError::InvalidState)
    }

    /// Zero-copy send: `f` writes into the socket's free transmit space (its first
    /// contiguous run; `want` is what the caller hopes to write, and a Writable event is
    /// armed if less room is free) and returns how many bytes it wrote.
    pub fn send_with<R>(
        &mut self,
        id: ConnId,
        want: usize,
        f: impl FnOnce(&mut [u8]) -> (usize, R),
    ) -> Result<R, ConnError> {
        let (r, before, after) = self.with_socket(id, |s| {
            let before = seen(s);
            (s.send(f), before, seen(s))
        })?;
        self.after_send(id, before.send_room < want, before, after);
        r.map_err(|_| ConnError::InvalidState)
    }

    /// `before`, `after`: the socket around the write.
    fn after_send(&mut self, id: ConnId, short: bool, before: Seen, after: Seen) {
        let m = &mut self.slab.slots[id.slot as usize].meta;
        if short {
            m.flags |= flag::WANT_WRITE;
        }
        if after.send_room < before.send_room
            && before.send_room == self.profiles[usize::from(m.profile)].opts.tx_buf
        {
            // Data queued into an empty ring: the send timeout counts from here.
            m.progress = crate::defense::tick(self.wheel.now());
        }
        self.track_rings(id.slot, before, after);
        self.mark_dirty(id.slot);
    }

    /// Bytes that can be queued with [`send`](Self::send) right now.
    pub fn send_room(&mut self, id: ConnId) -> Result<usize, ConnError> {
        self.with_socket(id, |s| s.send_capacity() - s.send_queue())
    }

    /// Closes the sending side (FIN after queued data). Receiving continues until the peer
    /// closes; [`Event::Closed`] follows.
    pub fn close(&mut self, id: ConnId) -> Result<(), ConnError> {
        self.with_socket(id, |s| s.close())?;
        self.mark_dirty(id.slot);
        Ok(())
    }

    /// Resets the connection (RST with the next poll) and drops its data.
    pub fn abort(&mut self, id: ConnId) -> Result<(), ConnError> {
        self.with_socket(id, |s| s.abort())?;
        self.mark_dirty(id.slot);
        Ok(())
    }

    /// The connection's TCP state.
    pub fn state(&mut self, id: ConnId) -> Result<State, ConnError> {
        self.with_socket(id, |s| s.state())
    }

    /// The connection's 4-tuple.
    pub fn tuple(&self, id: ConnId) -> Result<FourTuple, ConnError> {
        let slot = self.slab.check(id).ok_or(ConnError::Closed)?;
        Ok(self.slab.key(slot))
    }

    /// Connections holding a slot (any state, TIME-WAIT included).
    pub fn connections(&self) -> usize {
        self.slab.live()
    }

    /// The slot capacity (`max_connections`).
    pub fn capacity(&self) -> usize {
        self.slab.capacity()
    }

    /// The stack's growing regions (its connection slab and socket buffers, unless
    /// [`Config::prefault`](crate::Config::prefault) faulted them in at start-up), for a
    /// thread off the packet path to fault in ahead of their use with
    /// [`Warmer::warm`](crate::Warmer::warm). Buffer pools made by later listens join
    /// the same warmer.
    pub fn warmer(&self) -> crate::Warmer {
        self.warmer.clone()
    }

    /// The stack's own accounting of the memory it reserved.
    pub fn memory(&self) -> Memory {
        let slab = self.slab.bytes();
        let table = self.table.bytes();
        let wheel = size_of_val(&self.wheel);
        let buffers = self.pools.iter().map(|p| p.bytes()).sum();
        let buffers_in_use = self
            .pools
            .iter()
            .map(|p| p.in_use() * p.chunk_size())
            .sum::<usize>()
            + self.in_slot_live * self.slab.buffers();
        let queues: usize = self.listeners.iter().map(Listener::bytes).sum();
        let other = queues
            + self.ports.len() * 2
            + self.events.capacity() * size_of::<Event>()
            + (self.dirty.capacity() + self.spare.capacity()) * 4;
        Memory {
            slab,
            table,
            wheel,
            buffers,
            buffers_in_use,
            other,
            total: slab + table + wheel + buffers + other,
        }
    }

    /// The stack's clock as last seen (ms), as the timing wheel knows it.
    pub fn now(&self) -> Instant {
        Instant::from_millis(self.wheel.now() as i64)
    }
}
