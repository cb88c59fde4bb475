//! The per-core [`Stack`]: one smoltcp `Interface`, the connection slab, the demux table,
//! the timing wheel and the buffer pools, driven by frames and time from outside.
//!
//! Every operation touches only the connection it concerns: a received segment is
//! demultiplexed by the table, then smoltcp polls a [`SocketSet`] built over that one slot
//! (`poll_ingress_single`, then later `poll_egress` and `poll_at`). Connections with nothing
//! to do are never visited, so the cost per segment does not depend on how many
//! connections exist. (Handing smoltcp one set with every socket would make each segment
//! O(n): it walks the whole set to find a socket and to dispatch.)

use std::collections::VecDeque;
use std::net::{Ipv4Addr, Ipv6Addr};

use smoltcp::iface::{Config as IfaceConfig, Interface, Route, SocketHandle, SocketSet};
use smoltcp::phy::DeviceCapabilities;
use smoltcp::socket::tcp::{self, State};
use smoltcp::time::Duration;
use smoltcp::time::Instant;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, HardwareAddress, IpAddress, IpCidr, Ipv4Cidr,
};

use crate::config::{Config, ConfigError};
use crate::conn::{ConnId, Slab, Slot, flag};
use crate::cookie::{Jar, SynCookies};
use crate::counters::{Counters, Refusal, state_index};
use crate::defense::{self, TokenBucket};
use crate::device::{self, Port, TxQueue, TxTally};
use crate::listener::{HalfOpenBudget, Listener, SocketOptions};
use crate::mem::{self, BufferPool, HugePages, Warmer};
use crate::neighbour::{self, Awaiting};
use crate::parse::{self, Class, Local};
use crate::ports::{PortChooser, SequentialPorts};
use crate::recovery::{Pins, Rewrite};
use crate::table::{self, FourTuple, Table};
use crate::wheel::Timers;

// The stack's implementation, split by concern. They are children of this module so that
// they, and only they, see `Stack`'s private fields.
pub(crate) mod api;
mod cookie_ack;
mod defend;
mod recover;

/// Most segments one connection may send in one [`Stack::poll`]; the rest waits for the
/// next round, so one bulk sender cannot starve the others.
const SEGMENTS_PER_ROUND: usize = 64;

/// Frames whose memory [`Stack::ingress_batch`] prefetches together.
pub const BATCH: usize = 16;

/// Bytes of the transmit ring to prefetch from its hinted position
/// ([`Meta::tx_at`](crate::conn::Meta)) for an answer: one line, or two when the position
/// is in the second half of a line.
const HINT_BYTES: usize = 32;

const NO_SLOT: u32 = u32::MAX;

/// How often the stack asks for its gateway's MAC address again. smoltcp forgets a
/// neighbour 60 s after it last heard from it *by IP source address*, and traffic from
/// clients behind the gateway carries theirs, never the gateway's: without the probe the
/// entry would lapse every minute, and the first segments to leave after that would wait
/// for a new ARP answer (see `neighbour`). The first probe goes out at the first poll, so
/// the entry is there before the first client arrives.
pub(crate) const GATEWAY_PROBE: Duration = Duration::from_secs(20);

/// One chunk of [`Stack::ingress_batch`]'s pipeline: each frame's class and demux hash,
/// and the slot its bucket names (a guess, confirmed when the frame is processed).
#[derive(Clone, Copy)]
struct Prepared {
    seen: [(Result<Class, parse::Drop>, u32); BATCH],
    slots: [u32; BATCH],
    len: usize,
}

impl Prepared {
    const EMPTY: Prepared = Prepared {
        seen: [(Err(parse::Drop::Truncated), 0); BATCH],
        slots: [NO_SLOT; BATCH],
        len: 0,
    };
}

/// Something the application should act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The listener's accept queue became non-empty: call [`Stack::accept`] until `None`.
    Acceptable(crate::ListenerId),
    /// An active open reached Established.
    Connected(ConnId),
    /// Data (or the peer's FIN) arrived: call [`Stack::recv`] until it returns 0 or EOF.
    Readable(ConnId),
    /// Space freed up in the transmit buffer after a short [`Stack::send`].
    Writable(ConnId),
    /// The connection is over (closed, reset or timed out); its id is dead from now on.
    Closed(ConnId),
}

/// A connection's option profile: a listener's, or one used by `connect`.
pub(crate) struct Profile {
    pub(crate) opts: SocketOptions,
    /// Index of its buffer pool, or [`IN_SLOT`].
    pub(crate) pool: u8,
    pub(crate) listener: Option<u16>,
}

/// [`Profile::pool`] of connections whose buffers are the bytes beside their slots
/// (`Config::buffers_in_slot`). Never a pool index: there are fewer than 255 pools.
pub(crate) const IN_SLOT: u8 = u8::MAX;

/// The pool a profile's `pool` names: `None` for [`IN_SLOT`].
fn pool_mut(pools: &mut [BufferPool], pool: u8) -> Option<&mut BufferPool> {
    (pool != IN_SLOT).then(|| &mut pools[usize::from(pool)])
}

/// What the stack sees of a socket before and after a poll.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) state: State,
    pub(crate) recv_queue: usize,
    pub(crate) may_recv: bool,
    pub(crate) send_room: usize,
}

pub(crate) fn seen(s: &tcp::Socket<'_>) -> Seen {
    Seen {
        state: s.state(),
        recv_queue: s.recv_queue(),
        may_recv: s.may_recv(),
        send_room: s.send_capacity() - s.send_queue(),
    }
}

pub(crate) fn ms(t: Instant) -> u64 {
    t.total_millis().max(0) as u64
}

/// One core's TCP/IP stack. See the [crate docs](crate) for the model.
pub struct Stack {
    iface: Interface,
    caps: DeviceCapabilities,
    mac: EthernetAddress,
    nets: Vec<(u32, u32)>,
    addrs: Vec<Ipv4Addr>,
    /// Our IPv6 addresses (empty without the `ipv6` feature).
    ipv6_addrs: Vec<Ipv6Addr>,
    // `slab` must stay declared before `pools`: its sockets borrow the pools' memory.
    slab: Slab,
    pools: Vec<BufferPool>,
    /// Live connections whose buffers are in their slots ([`IN_SLOT`]).
    in_slot_live: usize,
    table: Table,
    wheel: Timers,
    profiles: Vec<Profile>,
    listeners: Vec<Listener>,
    /// Port → listener index + 1 (0: none).
    ports: Box<[u16]>,
    events: VecDeque<Event>,
    dirty: Vec<u32>,
    spare: Vec<u32>,
    counters: Counters,
    tally: TxTally,
    half_open: HalfOpenBudget,
    /// Paces RSTs for segments that match no connection (`Config::rst_rate`).
    rst_bucket: TokenBucket,
    /// Paces challenge ACKs (RFC 5961 §7).
    challenge_bucket: TokenBucket,
    hugepages: HugePages,
    prefault: bool,
    /// The regions that grow as connections come, when not prefaulted.
    warmer: Warmer,
    chooser: Box<dyn PortChooser>,
    /// The gateway and the address to ask for it from; the next probe's time.
    gateway: Option<(Ipv4Addr, Ipv4Addr)>,
    next_probe: Instant,
    /// SYN-cookie secrets and scratch space.
    cookies: Jar,
    /// Random start of this stack's TCP timestamp clock (see `tsval`).
    ts_offset: u32,
    /// The windows pinned for connections receiving duplicate ACKs (`recovery`).
    pins: Pins,
    /// Connections whose segment waits for a neighbour's answer (`neighbour`).
    awaiting: Awaiting,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("mac", &self.mac)
            .field("addrs", &self.addrs)
            .field("connections", &self.slab.live())
            .field("capacity", &self.slab.capacity())
            .finish_non_exhaustive()
    }
}

struct NoFrames;
impl TxQueue for NoFrames {
    fn has_room(&self) -> bool {
        false
    }
    fn transmit<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        fill(&mut vec![0; len])
    }
}

impl Stack {
    /// Builds a stack, allocating everything `config` sizes up front.
    pub fn new(config: &Config, now: Instant) -> Result<Stack, ConfigError> {
        config.validate()?;
        let mac = EthernetAddress(config.mac);
        let mut ic = IfaceConfig::new(HardwareAddress::Ethernet(mac));
        ic.random_seed = crate::config::mix(config.seed, 0);
        let caps = device::capabilities();
        let mut dummy = Port {
            rx: None,
            tx: &mut NoFrames,
            tally: &mut TxTally::default(),
            caps: &caps,
            seq_delta: 0,
        };
        let mut iface = Interface::new(ic, &mut dummy, now);
        let mut nets = Vec::new();
        iface.update_ip_addrs(|ips| {
            for &(a, p) in &config.addrs {
                // `validate` checked the count against smoltcp's limit.
                let _ = ips.push(IpCidr::Ipv4(Ipv4Cidr::new(a, p)));
                nets.push((u32::from(a), u32::MAX));
            }
            #[cfg(feature = "ipv6")]
            for &(a, p) in &config.ipv6_addrs {
                let _ = ips.push(IpCidr::Ipv6(smoltcp::wire::Ipv6Cidr::new(a, p)));
            }
        });
        let first = config.addrs[0].0;
        let mut routes_ok = true;
        if let Some(gw) = config.gateway {
            routes_ok &= iface.routes_mut().add_default_ipv4_route(gw).is_ok();
        }
        for &(net, prefix) in &config.any_ip {
            let cidr = Ipv4Cidr::new(net, prefix);
            iface.routes_mut().update(|r| {
                routes_ok &= r
                    .push(Route {
                        cidr: IpCidr::Ipv4(cidr),
                        via_router: IpAddress::Ipv4(first),
                        preferred_until: None,
                        expires_at: None,
                    })
                    .is_ok();
            });
            let mask = cidr.netmask().to_bits();
            nets.push((u32::from(net) & mask, mask));
        }
        if !routes_ok {
            return Err(ConfigError::TooManyRoutes);
        }
        iface.set_any_ip(!config.any_ip.is_empty());

        let n = config.max_connections;
        let oom = |what: &'static str, bytes: usize| ConfigError::OutOfMemory { what, bytes };
        let slot_bytes = size_of::<Slot>() + config.buffers_in_slot;
        let mut slab = Slab::new(n, config.buffers_in_slot, config.hugepages)
            .ok_or(oom("connection slab", n.saturating_mul(slot_bytes)))?;
        let warmer = Warmer::default();
        if config.prefault {
            slab.fill();
        } else {
            warmer.add_strided(&slab.slots);
        }
        let keys = (
            crate::config::mix(config.seed, 1),
            crate::config::mix(config.seed, 2),
        );
        let table = Table::new(n, keys, config.hugepages).ok_or(oom("demux table", n * 32))?;
        if config.prefault {
            table.fault_in();
        } else {
            table.warm_with(&warmer);
        }
        let wheel = Timers::new(ms(now));
        Ok(Stack {
            iface,
            caps,
            mac,
            nets,
            addrs: config.addrs.iter().map(|a| a.0).collect(),
            ipv6_addrs: config.ipv6_addrs.iter().map(|a| a.0).collect(),
            slab,
            pools: Vec::new(),
            in_slot_live: 0,
            table,
            wheel,
            profiles: Vec::new(),
            listeners: Vec::new(),
            ports: vec![0u16; 65536].into_boxed_slice(),
            events: VecDeque::with_capacity(1024),
            dirty: Vec::with_capacity(1024),
            spare: Vec::with_capacity(1024),
            counters: Counters::default(),
            tally: TxTally::default(),
            half_open: HalfOpenBudget::new(config.max_half_open),
            rst_bucket: TokenBucket::new(config.rst_rate, config.rst_burst, ms(now)),
            challenge_bucket: TokenBucket::new(
                defense::CHALLENGE_ACK_RATE,
                defense::CHALLENGE_ACK_RATE,
                ms(now),
            ),
            hugepages: config.hugepages,
            prefault: config.prefault,
            warmer,
            chooser: Box::new(SequentialPorts::default()),
            gateway: config.gateway.map(|gw| {
                let on_link = config.addrs.iter().find(|&&(a, p)| {
                    let mask = u32::MAX.checked_shl(32 - u32::from(p)).unwrap_or(0);
                    u32::from(a) & mask == u32::from(gw) & mask
                });
                (gw, on_link.map_or(first, |&(a, _)| a))
            }),
            next_probe: now,
            cookies: Jar::new(crate::config::mix(config.seed, 3)),
            pins: Pins::default(),
            awaiting: Awaiting::default(),
            ts_offset: crate::config::mix(config.seed, 4) as u32,
        })
    }

    /// Replaces the local-port chooser used by [`connect`](Self::connect) (the dataplane
    /// plugs in one that picks ports whose RSS hash lands on this core's queue).
    pub fn set_port_chooser(&mut self, chooser: Box<dyn PortChooser>) {
        self.chooser = chooser;
    }

    /// Takes one received Ethernet frame. Replies that smoltcp makes at once (ARP, ICMP
    /// echo, RST) go to `tx`; everything else is sent by the next [`poll`](Self::poll).
    pub fn ingress<T: TxQueue>(&mut self, now: Instant, frame: &[u8], tx: &mut T) {
        crate::tsval::publish(ms(now), self.ts_offset);
        let class = self.classify(frame);
        let hash = match class {
            Ok(Class::Tcp { key, .. }) => self.table.hash(&key),
            _ => 0,
        };
        self.ingress_classified(now, frame, class, hash, tx);
    }

    /// Takes a batch of received frames: the same as [`ingress`](Self::ingress) for each
    /// in order, but the demux buckets and connection slots of up to [`BATCH`] frames are
    /// prefetched first, so that their cache misses overlap instead of following one
    /// another. With millions of connections most of a segment's cost is such misses.
    pub fn ingress_batch<F: AsRef<[u8]>, T: TxQueue>(
        &mut self,
        now: Instant,
        frames: &[F],
        tx: &mut T,
    ) {
        crate::tsval::publish(ms(now), self.ts_offset);
        // A software pipeline over chunks of BATCH frames, three stages ahead of the work:
        // while chunk i is processed, chunk i+1's slots and chunk i+2's demux buckets are
        // on their way from memory, so the misses overlap with useful work.
        // The frames first: on the AF_XDP path the kernel has just copied each frame in
        // on another core, so its first read is a miss too.
        // Up to 256 bytes each: the headers, and a request's worth of payload that the
        // checksum reads next.
        for frame in frames {
            let frame = frame.as_ref();
            let at = frame.as_ptr();
            for off in (0..frame.len().min(256)).step_by(64) {
                mem::prefetch(at.wrapping_add(off));
            }
            mem::prefetch(at.wrapping_add(frame.len().min(256).saturating_sub(1)));
        }
        let n = frames.len().div_ceil(BATCH);
        let chunk = |i: usize| &frames[i * BATCH..frames.len().min((i + 1) * BATCH)];
        let mut preps = [Prepared::EMPTY; 3];
        for (i, prep) in preps.iter_mut().enumerate().take(n.min(2)) {
            self.classify_chunk(chunk(i), prep);
        }
        if n > 0 {
            self.prefetch_chunk_slots(&mut preps[0]);
        }
        for i in 0..n {
            if i + 2 < n {
                self.classify_chunk(chunk(i + 2), &mut preps[(i + 2) % 3]);
            }
            if i + 1 < n {
                self.prefetch_chunk_slots(&mut preps[(i + 1) % 3]);
            }
            let prep = preps[i % 3];
            for (&slot, &(class, _)) in prep.slots[..prep.len].iter().zip(&prep.seen) {
                // Where the payload lands, and where an answer would go; for a bare ACK,
                // nothing.
                if let Ok(Class::Tcp { payload, .. }) = class
                    && slot != NO_SLOT
                {
                    let payload = usize::from(payload);
                    self.prefetch_buffers(slot, payload, payload > 0);
                }
            }
            for (frame, &(class, hash)) in chunk(i).iter().zip(&prep.seen) {
                self.ingress_classified(now, frame.as_ref(), class, hash, tx);
            }
        }
    }

    /// Pipeline stage 1: classify a chunk and prefetch its demux buckets.
    fn classify_chunk<F: AsRef<[u8]>>(&mut self, frames: &[F], prep: &mut Prepared) {
        prep.len = frames.len();
        for (frame, seen) in frames.iter().zip(&mut prep.seen) {
            let class = self.classify(frame.as_ref());
            let hash = match class {
                Ok(Class::Tcp { key, .. }) => self.table.hash(&key),
                _ => 0,
            };
            self.table.prefetch(hash);
            *seen = (class, hash);
        }
    }

    /// Pipeline stage 2: read the buckets, prefetch the slots they name.
    fn prefetch_chunk_slots(&self, prep: &mut Prepared) {
        for (&(class, hash), slot) in prep.seen[..prep.len].iter().zip(&mut prep.slots) {
            *slot = NO_SLOT;
            if let (Ok(Class::Tcp { .. }), Some(s)) = (class, self.table.guess(hash)) {
                self.prefetch_slot(s);
                *slot = s;
            }
        }
    }

    /// Starts loading the connections' slots and buffers into the cache: call it for the
    /// connections an application is about to send on, as [`ingress_batch`] does for the
    /// ones frames arrived for. Stale ids are ignored.
    ///
    /// [`ingress_batch`]: Self::ingress_batch
    pub fn prefetch(&self, conns: &[ConnId]) {
        for c in conns {
            // Only slots made already: the memory past them is not touched yet.
            if (c.slot as usize) < self.slab.slots.len() {
                self.prefetch_slot(c.slot);
            }
        }
        for c in conns {
            if self.slab.check(*c).is_some() {
                self.prefetch_buffers(c.slot, 0, true);
            }
        }
    }

    fn prefetch_slot(&self, slot: u32) {
        let at: *const Slot = &self.slab.slots[slot as usize];
        mem::prefetch_bytes(at.cast(), 0, size_of::<Slot>(), size_of::<Slot>());
    }

    /// Reads the slot record (prefetched before) to find the buffer chunk, then prefetches
    /// the lines of it that are about to be touched: `rx` bytes where received bytes land
    /// in the receive ring, and (if `tx`) the line where the next send lands in the
    /// transmit ring. (A whole 512-byte chunk is 8 lines; among millions of connections
    /// every line is a miss, and the core can have only about ten in flight.)
    fn prefetch_buffers(&self, slot: u32, rx: usize, tx: bool) {
        let m = &self.slab.slots[slot as usize].meta;
        if !m.has(flag::LIVE) {
            return;
        }
        let Some(p) = self.profiles.get(usize::from(m.profile)) else {
            return;
        };
        let (rx_buf, chunk) = (p.opts.rx_buf, p.opts.rx_buf + p.opts.tx_buf);
        let fetch = |offset: usize, len: usize| {
            if p.pool == IN_SLOT {
                let base = self.slab.slots.tail_addr(slot as usize);
                mem::prefetch_bytes(base, offset, len, chunk);
            } else if let Some(pool) = self.pools.get(usize::from(p.pool)) {
                pool.prefetch(m.link, offset, len);
            }
        };
        if rx > 0 {
            fetch(usize::from(m.rx_at), rx.min(rx_buf));
        }
        if tx {
            fetch(rx_buf + usize::from(m.tx_at), HINT_BYTES);
        }
    }

    fn classify(&mut self, frame: &[u8]) -> Result<Class, parse::Drop> {
        self.counters.rx_frames += 1;
        self.counters.rx_bytes += frame.len() as u64;
        let local = Local {
            mac: self.mac,
            nets: &self.nets,
            ipv6: &self.ipv6_addrs,
        };
        parse::classify(frame, &local)
    }

    fn ingress_classified<T: TxQueue>(
        &mut self,
        now: Instant,
        frame: &[u8],
        class: Result<Class, parse::Drop>,
        hash: u32,
        tx: &mut T,
    ) {
        match class {
            Err(why) => {
                tracing::trace!("dropped frame: {}", why.name());
                self.counters.drop(why);
            }
            Ok(Class::Control) => self.ingress_unowned(now, frame, tx),
            Ok(Class::Tcp {
                key,
                flags,
                payload,
            }) => {
                if flags.rst {
                    self.counters.resets_received += 1;
                }
                let slab = &self.slab;
                if let Some(slot) = self.table.find_hashed(hash, &key, |s| slab.key(s)) {
                    if (flags.rst || flags.syn) && self.screen(now, slot, frame, flags, tx) {
                        return;
                    }
                    if flags.ack
                        && !(flags.syn || flags.rst)
                        && self.slab.slots[slot as usize].meta.state
                            == state_index(State::SynReceived) as u8
                        && self.cookie_over_half_open(now, slot, key, frame, tx)
                    {
                        return;
                    }
                    let bare_ack = payload == 0 && !(flags.syn || flags.fin || flags.rst);
                    let fix = if bare_ack {
                        let (window, copies) = self.duplicate(slot, frame);
                        Rewrite {
                            behind: self.ack_behind(slot, frame),
                            window,
                            copies,
                        }
                    } else {
                        Rewrite::NONE
                    };
                    self.ingress_slot(now, slot, frame, fix, tx);
                } else if flags.syn && !flags.ack && !flags.rst {
                    self.ingress_syn(now, key, frame, tx);
                } else if flags.ack
                    && !flags.syn
                    && !flags.rst
                    && self.ingress_cookie_ack(now, key, frame, tx)
                {
                    // It returned a valid SYN cookie: the connection exists now.
                } else {
                    self.counters.no_connection += 1;
                    self.ingress_stray(now, frame, flags.rst, tx);
                }
            }
        }
    }

    /// A TCP segment that matches no connection: smoltcp answers it with a RST (unless it
    /// is one), within the RST rate limit.
    fn ingress_stray<T: TxQueue>(&mut self, now: Instant, frame: &[u8], rst: bool, tx: &mut T) {
        if rst || self.rst_bucket.take(ms(now)) {
            self.ingress_unowned(now, frame, tx);
        } else {
            self.counters.resets_limited += 1;
        }
    }

    /// A frame no connection owns: smoltcp with an empty socket set answers ARP and ICMP
    /// echo, and resets TCP segments.
    /// A neighbour's answer puts the connections waiting for it back on the dirty list.
    fn ingress_unowned<T: TxQueue>(&mut self, now: Instant, frame: &[u8], tx: &mut T) {
        let mut set = SocketSet::new(&mut [][..]);
        let mut port = Port {
            rx: Some(frame),
            tx,
            tally: &mut self.tally,
            caps: &self.caps,
            seq_delta: 0,
        };
        self.iface.poll_ingress_single(now, &mut port, &mut set);
        if !self.awaiting.is_empty()
            && let Some(addr) = neighbour::heard_from(frame)
        {
            let mut awaiting = std::mem::take(&mut self.awaiting);
            awaiting.answered(addr, |slot| {
                if self.slab.slots[slot as usize].meta.has(flag::LIVE) {
                    self.mark_dirty(slot);
                }
            });
            self.awaiting = awaiting;
        }
    }

    fn ingress_syn<T: TxQueue>(&mut self, now: Instant, key: FourTuple, frame: &[u8], tx: &mut T) {
        let l = usize::from(self.ports[usize::from(key.local_port)]);
        if l == 0 || !self.listeners[l - 1].open {
            self.counters.no_connection += 1;
            return self.ingress_stray(now, frame, false, tx);
        }
        let l = l - 1;
        self.counters.syns += 1;
        let refusal = if self.listeners[l].opts.syn_cookies == SynCookies::Always {
            if !self.listeners[l].over_source_limit(key.source()) {
                return self.send_cookie(now, l, key, frame, tx);
            }
            Refusal::PerSource
        } else {
            match self.admit(l, key) {
                Ok(slot) => {
                    self.ingress_slot(now, slot, frame, Rewrite::NONE, tx);
                    return;
                }
                Err(why) => why,
            }
        };
        if self.cookie_instead(l, refusal) {
            return self.send_cookie(now, l, key, frame, tx);
        }
        // Dropped silently: the source is likely spoofed, and a RST would be backscatter.
        tracing::debug!("refused SYN from {:?}: {}", key, refusal.name());
        self.counters.refuse(refusal);
    }

    /// Gives a SYN for listener `l` a fresh slot with a listening socket, within limits
    /// (evicting the oldest half-open connection when a half-open budget is full).
    fn admit(&mut self, l: usize, key: FourTuple) -> Result<u32, Refusal> {
        self.make_room(l, &key)?;
        let profile = self.listeners[l].profile;
        let slot = self.open_slot(key, profile, |s, _| {
            // A non-zero port (checked by `listen`) cannot fail to listen.
            let _ = s.listen((table::ip(key.local_addr), key.local_port));
        })?;
        self.listeners[l].count_source(key.source(), true);
        Ok(slot)
    }

    /// Allocates a slot and buffers for `key`, installs a socket set up by `setup`, and
    /// registers it in the table. The socket's state is counted.
    pub(crate) fn open_slot(
        &mut self,
        key: FourTuple,
        profile: u16,
        setup: impl FnOnce(&mut tcp::Socket<'static>, &mut Interface),
    ) -> Result<u32, Refusal> {
        let p = &self.profiles[usize::from(profile)];
        let (opts, pool) = (p.opts, p.pool);
        let slot = self.slab.alloc(key).ok_or(Refusal::Slots)?;
        let mut state = State::Closed;
        let iface = &mut self.iface;
        let installed = mem::install_new(
            &mut self.slab.slots,
            slot as usize,
            |s| &mut s.storage,
            pool_mut(&mut self.pools, pool),
            opts.rx_buf,
            |socket| {
                opts.apply(socket);
                setup(socket, iface);
                state = socket.state();
            },
        );
        let Some(chunk) = installed else {
            self.slab.release(slot);
            return Err(Refusal::Buffers);
        };
        if pool == IN_SLOT {
            self.in_slot_live += 1;
        }
        let m = &mut self.slab.slots[slot as usize].meta;
        m.link = chunk;
        m.rx_at = 0;
        m.tx_at = 0;
        m.profile = profile;
        m.state = state_index(state) as u8;
        m.last_rx = self.wheel.now() as u32;
        self.counters.states[state_index(state)] += 1;
        if !self.table.insert(&key, slot) {
            // The table holds twice the slab's capacity, so this is unreachable; stay safe.
            self.free_slot(slot);
            return Err(Refusal::Slots);
        }
        Ok(slot)
    }

    /// Hands `frame` to `slot`'s socket, its sequence number first moved `behind` bytes
    /// forward (a bare ACK from a rewound peer, see `recovery`; 0 for none).
    pub(crate) fn ingress_slot<T: TxQueue>(
        &mut self,
        now: Instant,
        slot: u32,
        frame: &[u8],
        fix: Rewrite,
        tx: &mut T,
    ) {
        if self.slab.slots[slot as usize].meta.seq_delta != 0 || fix != Rewrite::NONE {
            // Born from a SYN cookie (the peer acknowledges in the cookie's number space),
            // or a stranded ACK or a duplicate ACK's window (`recovery`): translated on
            // a copy.
            return self.ingress_translated(now, slot, frame, fix, tx);
        }
        self.ingress_polled(now, slot, frame, tx);
    }

    /// Hands `frame` to `slot`'s socket and does the bookkeeping after.
    pub(crate) fn ingress_polled<T: TxQueue>(
        &mut self,
        now: Instant,
        slot: u32,
        frame: &[u8],
        tx: &mut T,
    ) {
        let i = slot as usize;
        let seq_delta = self.slab.slots[i].meta.seq_delta;
        let mut set = mem::one_slot(&mut self.slab.slots[i].storage);
        let before = seen(set.get::<tcp::Socket>(SocketHandle::default()));
        let mut port = Port {
            rx: Some(frame),
            tx,
            tally: &mut self.tally,
            caps: &self.caps,
            seq_delta,
        };
        self.iface.poll_ingress_single(now, &mut port, &mut set);
        let after = seen(set.get::<tcp::Socket>(SocketHandle::default()));
        drop(set);
        let m = &mut self.slab.slots[i].meta;
        let (half_open, arrived) = (m.has(flag::HALF_OPEN), m.last_rx);
        m.last_rx = ms(now) as u32;
        if after.send_room > before.send_room {
            m.progress = defense::tick(ms(now)); // the peer acknowledged data
        }
        let added = after.recv_queue.saturating_sub(before.recv_queue);
        self.track_rcv_nxt(slot, frame, before.state, after.state, added);
        if self.observe(slot, before, after) {
            let m = &mut self.slab.slots[i].meta;
            if half_open && m.has(flag::HALF_OPEN) {
                // Still half-open (a repeated SYN, say): its expiry counts from the first.
                m.last_rx = arrived;
            }
            self.mark_dirty(slot);
        }
    }

    pub(crate) fn mark_dirty(&mut self, slot: u32) {
        let m = &mut self.slab.slots[slot as usize].meta;
        if !m.has(flag::DIRTY) {
            m.flags |= flag::DIRTY;
            self.dirty.push(slot);
        }
    }

    /// Sends what every touched connection has to send and runs expired timers. Call it
    /// once per batch, after the application has handled the batch's events.
    pub fn poll<T: TxQueue>(&mut self, now: Instant, tx: &mut T) {
        crate::tsval::publish(ms(now), self.ts_offset);
        if let Some((gw, src)) = self.gateway
            && now >= self.next_probe
            && tx.has_room()
        {
            self.next_probe = now + GATEWAY_PROBE;
            self.counters.gateway_probes += 1;
            let mut frame = [0u8; 42];
            arp_request(self.mac, src, gw, &mut frame);
            tx.transmit(frame.len(), |buf| buf.copy_from_slice(&frame));
            self.tally.count(&frame);
        }
        let mut due = std::mem::take(&mut self.spare);
        self.wheel.expire(&mut self.slab, ms(now), &mut due);
        for &slot in &due {
            self.timer_fired(now, slot, tx);
        }
        due.clear();
        // Egress may dirty further slots (a freed slot's successor, application writes
        // from events of this round are already in): loop until none is left, or until
        // the transmit queue is full. Slots not reached stay dirty for the next poll.
        while !self.dirty.is_empty() && tx.has_room() {
            std::mem::swap(&mut due, &mut self.dirty);
            for (k, &slot) in due.iter().enumerate() {
                if !tx.has_room() {
                    self.dirty.extend_from_slice(&due[k..]);
                    break;
                }
                let m = &mut self.slab.slots[slot as usize].meta;
                if m.flags & (flag::LIVE | flag::DIRTY) != flag::LIVE | flag::DIRTY {
                    continue;
                }
                m.flags &= !flag::DIRTY;
                self.egress_slot(now, slot, tx);
            }
            due.clear();
        }
        self.spare = due;
    }

    fn timer_fired<T: TxQueue>(&mut self, now: Instant, slot: u32, tx: &mut T) {
        let m = self.slab.slots[slot as usize].meta;
        if !m.has(flag::LIVE) || self.defense_timers(now, slot) {
            return;
        }
        self.unstall(now, slot, tx);
        let idle = self.profiles[usize::from(m.profile)].opts.idle_timeout;
        if let Some(idle) = idle {
            let silent = (ms(now) as u32).wrapping_sub(m.last_rx);
            if u64::from(silent) >= idle.total_millis() {
                self.counters.idle_timeouts += 1;
                let mut set = mem::one_slot(&mut self.slab.slots[slot as usize].storage);
                set.get_mut::<tcp::Socket>(SocketHandle::default()).abort();
            }
        }
        self.mark_dirty(slot);
    }

    pub(crate) fn egress_slot<T: TxQueue>(&mut self, now: Instant, slot: u32, tx: &mut T) {
        let i = slot as usize;
        let seq_delta = self.slab.slots[i].meta.seq_delta;
        let mut set = mem::one_slot(&mut self.slab.slots[i].storage);
        let before = seen(set.get::<tcp::Socket>(SocketHandle::default()));
        let mut port = Port {
            rx: None,
            tx,
            tally: &mut self.tally,
            caps: &self.caps,
            seq_delta,
        };
        // smoltcp's `poll_at` mirrors the start of its dispatch: once it says nothing is
        // due now, another `poll_egress` would only find that out again, at about the cost
        // of a segment's dispatch. An answer is one segment, so that check is made after
        // every segment sent (a bulk sender pays a `poll_at` a segment for it).
        let mut next = None;
        port.tally.asked = None;
        for _ in 0..SEGMENTS_PER_ROUND {
            let sent = self.iface.poll_egress(now, &mut port, &mut set);
            next = self.iface.poll_at(now, &set);
            if sent == smoltcp::iface::PollResult::None || next.is_none_or(|t| t > now) {
                break;
            }
        }
        let after = seen(set.get::<tcp::Socket>(SocketHandle::default()));
        let blocked = !port.tx.has_room();
        drop(set);
        if let Some(addr) = self.tally.asked.take() {
            // smoltcp asked who `addr` is instead of sending: see `neighbour`.
            self.counters.neighbour_waits += 1;
            self.awaiting.note(slot, addr, ms(now));
        }
        if !self.observe(slot, before, after) {
            return;
        }
        if blocked && next.is_some_and(|t| t <= now) {
            // It has more to send and the transmit queue is full: it waits on the dirty
            // list, which the next poll with room takes first. On the wheel it would fire
            // every tick and fail again each time; when a loop falls behind, thousands of
            // such slots took the core from reading frames, and a 100,000/s connection ramp
            // collapsed.
            self.mark_dirty(slot);
            return;
        }
        let m = self.slab.slots[i].meta;
        let mut deadline = next.map(|t| (t.total_micros().max(0) as u64).div_ceil(1000));
        if let Some(idle) = self.profiles[usize::from(m.profile)].opts.idle_timeout {
            let silent = u64::from((ms(now) as u32).wrapping_sub(m.last_rx));
            let idle_at = ms(now) + idle.total_millis().saturating_sub(silent);
            deadline = Some(deadline.map_or(idle_at, |d| d.min(idle_at)));
        }
        let queued = after.send_room < self.profiles[usize::from(m.profile)].opts.tx_buf;
        if let Some(at) = self.defense_deadline(now, slot, queued) {
            deadline = Some(deadline.map_or(at, |d| d.min(at)));
        }
        match deadline {
            Some(d) => self.wheel.schedule(&mut self.slab, slot, d),
            None => {
                self.wheel.cancel(&mut self.slab, slot);
            }
        }
    }

    /// Bookkeeping after a poll of `slot`: state gauges, listener queues, events. Frees the
    /// slot when its connection is over; returns whether it still lives.
    fn observe(&mut self, slot: u32, before: Seen, after: Seen) -> bool {
        let i = slot as usize;
        let to = state_index(after.state);
        if before == after
            && usize::from(self.slab.slots[i].meta.state) == to
            && after.state != State::Listen
        {
            // Nothing moved (an answer sent, say: sending frees no room): nothing to do.
            return true;
        }
        self.track_rings(slot, before, after);
        let from = self.slab.slots[i].meta.state as usize;
        if from != to {
            self.counters.states[from] -= 1;
            self.counters.states[to] += 1;
            self.slab.slots[i].meta.state = to as u8;
            if !self.transition(slot, from, after.state) {
                return false;
            }
        } else if to == state_index(State::Listen) {
            // A fresh passive slot whose SYN smoltcp did not take.
            self.free_slot(slot);
            return false;
        }
        let m = self.slab.slots[i].meta;
        if m.has(flag::VISIBLE) && !m.has(flag::CLOSED_SEEN) {
            let fin = before.may_recv && !after.may_recv;
            if (after.recv_queue > before.recv_queue || fin) && !m.has(flag::READ_PENDING) {
                self.slab.slots[i].meta.flags |= flag::READ_PENDING;
                self.events.push_back(Event::Readable(self.slab.id(slot)));
            }
            if m.has(flag::WANT_WRITE) && after.send_room > before.send_room {
                self.slab.slots[i].meta.flags &= !flag::WANT_WRITE;
                self.events.push_back(Event::Writable(self.slab.id(slot)));
            }
        }
        true
    }

    /// Moves `slot`'s ring position hints (`Meta::rx_at`, `tx_at`) past what a poll or a
    /// send did between `before` and `after`: received bytes advance the receive
    /// position, written bytes the transmit position. A transmit ring left empty by a poll
    /// (acknowledged, the only way it empties) is written from its start next, as smoltcp
    /// rewinds an empty ring before writing, so the hint goes to 0 then.
    pub(crate) fn track_rings(&mut self, slot: u32, before: Seen, after: Seen) {
        let m = &mut self.slab.slots[slot as usize].meta;
        let opts = &self.profiles[usize::from(m.profile)].opts;
        if after.recv_queue > before.recv_queue {
            m.rx_at = ring_add(m.rx_at, after.recv_queue - before.recv_queue, opts.rx_buf);
        }
        if after.send_room < before.send_room {
            m.tx_at = ring_add(m.tx_at, before.send_room - after.send_room, opts.tx_buf);
        }
        if after.send_room == opts.tx_buf {
            m.tx_at = 0;
        }
    }

    /// A state change of `slot` from state index `from`. Returns false if the slot was
    /// freed.
    fn transition(&mut self, slot: u32, from: usize, to: State) -> bool {
        let i = slot as usize;
        let m = self.slab.slots[i].meta;
        let listener = self.profiles[usize::from(m.profile)]
            .listener
            .map(usize::from);
        self.end_half_open(slot);
        match to {
            State::SynReceived => {
                if let Some(l) = listener {
                    self.slab.slots[i].meta.flags |= flag::HALF_OPEN;
                    self.half_open.syn_received();
                    let slab = &self.slab;
                    self.listeners[l].syn_received(slab.id(slot), |id| {
                        slab.check(id)
                            .is_some_and(|s| slab.slots[s as usize].meta.has(flag::HALF_OPEN))
                    });
                }
            }
            State::Established if from == state_index(State::SynReceived) => {
                if let Some(l) = listener {
                    self.counters.accepted += 1;
                    self.slab.slots[i].meta.flags |= flag::QUEUED;
                    if self.listeners[l].established(self.slab.id(slot)) {
                        self.events
                            .push_back(Event::Acceptable(crate::ListenerId(l as u16)));
                    }
                }
            }
            State::Established if from == state_index(State::SynSent) => {
                self.counters.connected += 1;
                self.events.push_back(Event::Connected(self.slab.id(slot)));
            }
            State::TimeWait => self.end_visible(slot),
            State::Closed | State::Listen => {
                self.free_slot(slot);
                return false;
            }
            _ => {}
        }
        true
    }

    /// Uncounts `slot` as half-open, if it was: it was established, closed or freed.
    fn end_half_open(&mut self, slot: u32) {
        let m = &mut self.slab.slots[slot as usize].meta;
        if m.has(flag::HALF_OPEN) {
            m.flags &= !flag::HALF_OPEN;
            self.half_open.half_open_ended();
            if let Some(l) = self.profiles[usize::from(m.profile)].listener {
                self.listeners[usize::from(l)].half_open_ended();
            }
        }
    }

    /// Takes `slot` off its listener's accept queue count, if it was queued: it was
    /// accepted, or is over.
    pub(crate) fn end_queued(&mut self, slot: u32) {
        let m = &mut self.slab.slots[slot as usize].meta;
        if m.has(flag::QUEUED) {
            m.flags &= !flag::QUEUED;
            if let Some(l) = self.profiles[usize::from(m.profile)].listener {
                self.listeners[usize::from(l)].dequeued();
            }
        }
    }

    /// Tells the application (once) that the connection is over, and takes it off its
    /// listener's queue count.
    fn end_visible(&mut self, slot: u32) {
        let i = slot as usize;
        self.end_queued(slot);
        let m = self.slab.slots[i].meta;
        if m.has(flag::VISIBLE) && !m.has(flag::CLOSED_SEEN) {
            self.slab.slots[i].meta.flags |= flag::CLOSED_SEEN;
            self.events.push_back(Event::Closed(self.slab.id(slot)));
        }
    }

    /// Releases everything `slot` holds: table entry, timer, socket, buffers, slot.
    pub(crate) fn free_slot(&mut self, slot: u32) {
        let i = slot as usize;
        self.end_visible(slot);
        self.end_half_open(slot);
        let m = self.slab.slots[i].meta;
        if let Some(l) = self.profiles[usize::from(m.profile)].listener {
            self.listeners[usize::from(l)].count_source(m.key.source(), false);
        }
        let slab = &self.slab;
        self.table.remove(&m.key, |s| slab.key(s));
        self.wheel.cancel(&mut self.slab, slot);
        let pool = self.profiles[usize::from(m.profile)].pool;
        if pool == IN_SLOT {
            self.in_slot_live -= 1;
        }
        mem::uninstall(
            &mut self.slab.slots[i].storage,
            pool_mut(&mut self.pools, pool),
            m.link,
        );
        self.counters.states[usize::from(m.state)] -= 1;
        self.counters.closed += 1;
        if !self.pins.is_empty() {
            self.pins.remove(&slot);
        }
        self.slab.release(slot);
    }

    /// The next instant [`poll`](Self::poll) has work: now if connections wait to send,
    /// else the earliest timer (a lower bound). `None` when nothing is scheduled.
    pub fn poll_at(&self) -> Option<Instant> {
        if !self.dirty.is_empty() {
            return Some(Instant::from_millis(self.wheel.now() as i64));
        }
        self.wheel
            .next_expiry()
            .map(|t| Instant::from_millis(t as i64))
    }

    /// Whether an event waits for the application ([`next_event`](Self::next_event)): a
    /// loop must not sleep on one.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Takes the next event for the application.
    pub fn next_event(&mut self) -> Option<Event> {
        let ev = self.events.pop_front()?;
        if let Event::Readable(id) = ev
            && let Some(slot) = self.slab.check(id)
        {
            self.slab.slots[slot as usize].meta.flags &= !flag::READ_PENDING;
        }
        Some(ev)
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        let mut c = self.counters.clone();
        c.tx_frames = self.tally.frames;
        c.tx_bytes = self.tally.bytes;
        c.resets_sent = self.tally.resets;
        c
    }

    pub(crate) fn new_profile(
        &mut self,
        opts: SocketOptions,
        listener: Option<u16>,
    ) -> Option<u16> {
        if let Some(i) = self
            .profiles
            .iter()
            .position(|p| p.opts == opts && p.listener == listener)
        {
            return Some(i as u16);
        }
        let chunk = opts.rx_buf + opts.tx_buf;
        let pool = if chunk > 0 && chunk == self.slab.buffers() {
            usize::from(IN_SLOT)
        } else if let Some(p) = self.pools.iter().position(|p| p.chunk_size() == chunk) {
            p
        } else {
            if self.pools.len() >= usize::from(u8::MAX) {
                return None;
            }
            let mut pool = BufferPool::new(chunk, self.slab.capacity(), self.hugepages)?;
            if self.prefault {
                pool.prefault();
            } else {
                self.warmer.add_pool(&pool);
            }
            self.pools.push(pool);
            self.pools.len() - 1
        };
        if self.profiles.len() >= usize::from(u16::MAX) {
            return None;
        }
        self.profiles.push(Profile {
            opts,
            pool: pool as u8,
            listener,
        });
        Some((self.profiles.len() - 1) as u16)
    }
}

/// `at + n` in a ring of `cap` bytes, kept modulo 2^16 (see `Meta::rx_at`).
fn ring_add(at: u16, n: usize, cap: usize) -> u16 {
    if cap == 0 {
        return 0;
    }
    ((usize::from(at) + n) % cap) as u16
}

/// Builds a broadcast ARP request "who has `target`? tell `src`" from `mac`.
fn arp_request(mac: EthernetAddress, src: Ipv4Addr, target: Ipv4Addr, frame: &mut [u8; 42]) {
    let eth = EthernetRepr {
        src_addr: mac,
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    };
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: mac,
        source_protocol_addr: src,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    let mut f = EthernetFrame::new_unchecked(&mut frame[..]);
    eth.emit(&mut f);
    arp.emit(&mut ArpPacket::new_unchecked(f.payload_mut()));
}

#[cfg(test)]
mod tests;
