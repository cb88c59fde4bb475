//! An in-memory Ethernet wire between two [`Stack`]s on simulated time, with seeded loss,
//! duplication, reordering and delay. Used by the tests and the `c10m-bench stack`
//! scenario; deterministic for a given seed.
//!
//! ```
//! use c10m_stack::wire::{Impairments, Pair, Side};
//! use c10m_stack::{Config, ConnectOptions, Event, ListenOptions};
//! use std::net::{Ipv4Addr, SocketAddrV4};
//!
//! let mut pair = Pair::new(&Pair::client_config(1024), &Pair::server_config(1024), Impairments::none());
//! let l = pair.b.listen(80, ListenOptions::default()).unwrap();
//! let c = pair.a.connect(SocketAddrV4::new(Pair::SERVER, 80), ConnectOptions::default()).unwrap();
//! let mut accepted = None;
//! pair.run_until(5_000, |side, stack| {
//!     if side == Side::B {
//!         while let Some(ev) = stack.next_event() {
//!             if let Event::Acceptable(l) = ev { accepted = stack.accept(l); }
//!         }
//!     }
//!     accepted.is_some()
//! });
//! assert!(accepted.is_some());
//! # let _ = (l, c);
//! ```

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol, IpRepr,
    TcpPacket, TcpRepr,
};

use crate::config::Config;
use crate::device::TxQueue;
use crate::mem::HugePages;
use crate::stack::Stack;
use crate::{Instant, MAX_FRAME};

/// An Ethernet/IPv4 frame from `(mac, addr)` `src` to `dst` carrying `tcp`, both
/// checksums filled (TTL 64, no IP options): for tests and tools that hand-build
/// segments.
pub fn tcp_frame(src: ([u8; 6], Ipv4Addr), dst: ([u8; 6], Ipv4Addr), tcp: &TcpRepr) -> Vec<u8> {
    frame(
        (src.0, IpAddress::Ipv4(src.1)),
        (dst.0, IpAddress::Ipv4(dst.1)),
        tcp,
    )
}

/// [`tcp_frame`] over IPv6 (hop limit 64, no extension header).
#[cfg(feature = "ipv6")]
pub fn tcp6_frame(
    src: ([u8; 6], std::net::Ipv6Addr),
    dst: ([u8; 6], std::net::Ipv6Addr),
    tcp: &TcpRepr,
) -> Vec<u8> {
    frame(
        (src.0, IpAddress::Ipv6(src.1)),
        (dst.0, IpAddress::Ipv6(dst.1)),
        tcp,
    )
}

/// An Ethernet frame carrying `tcp` between two addresses of one family.
fn frame(src: ([u8; 6], IpAddress), dst: ([u8; 6], IpAddress), tcp: &TcpRepr) -> Vec<u8> {
    let ip = IpRepr::new(src.1, dst.1, IpProtocol::Tcp, tcp.buffer_len(), 64);
    let eth = EthernetRepr {
        src_addr: EthernetAddress(src.0),
        dst_addr: EthernetAddress(dst.0),
        ethertype: match ip {
            IpRepr::Ipv4(_) => EthernetProtocol::Ipv4,
            #[cfg(feature = "ipv6")]
            IpRepr::Ipv6(_) => EthernetProtocol::Ipv6,
        },
    };
    let mut buf = vec![0u8; 14 + ip.buffer_len()];
    let caps = ChecksumCapabilities::default();
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut f);
    ip.emit(f.payload_mut(), &caps);
    let t = &mut f.payload_mut()[ip.header_len()..];
    tcp.emit(&mut TcpPacket::new_unchecked(t), &src.1, &dst.1, &caps);
    buf
}

/// A transmit queue of owned frames, recycling their buffers.
#[derive(Debug)]
pub struct Queue {
    frames: VecDeque<Vec<u8>>,
    free: Vec<Vec<u8>>,
    limit: usize,
    /// Frames refused because the queue was full (should stay 0: the stack asks first).
    pub overflows: u64,
}

impl Default for Queue {
    fn default() -> Self {
        Queue::with_limit(usize::MAX)
    }
}

impl Queue {
    /// A queue that holds at most `limit` frames.
    pub fn with_limit(limit: usize) -> Self {
        Queue {
            frames: VecDeque::new(),
            free: Vec::new(),
            limit,
            overflows: 0,
        }
    }

    /// Takes the oldest frame.
    pub fn pop(&mut self) -> Option<Vec<u8>> {
        self.frames.pop_front()
    }

    /// Gives a frame's buffer back for reuse (up to a bound: buffers migrate between
    /// the two ends of a pair when one side sends more frames than the other).
    pub fn recycle(&mut self, frame: Vec<u8>) {
        if self.free.len() < 4096 {
            self.free.push(frame);
        }
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether no frame waits.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

impl TxQueue for Queue {
    fn has_room(&self) -> bool {
        self.frames.len() < self.limit
    }

    fn transmit<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        let mut buf = self
            .free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(MAX_FRAME));
        // Not zeroed first: the stack writes every byte of a frame, as it must on a NIC's
        // transmit ring, whose frames hold whatever they carried before.
        buf.resize(len, 0);
        let r = fill(&mut buf);
        if self.frames.len() < self.limit {
            self.frames.push_back(buf);
        } else {
            self.overflows += 1;
        }
        r
    }
}

/// What the wire does to frames. Probabilities are in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairments {
    /// Chance a frame is lost.
    pub loss: f64,
    /// Chance a frame is delivered twice.
    pub duplicate: f64,
    /// Chance a frame is held back by up to `jitter_ms` extra, so later ones overtake it.
    pub reorder: f64,
    /// Extra delay of reordered frames, at most.
    pub jitter_ms: u64,
    /// One-way delay of every frame.
    pub delay_ms: u64,
    /// Seed of the wire's random choices.
    pub seed: u64,
}

impl Impairments {
    /// A perfect wire with no delay.
    pub fn none() -> Self {
        Impairments {
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            jitter_ms: 0,
            delay_ms: 0,
            seed: 1,
        }
    }
}

/// Which end of the [`Pair`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client end (`Pair::a`).
    A,
    /// The server end (`Pair::b`).
    B,
}

/// Frames in flight one way, by delivery time (frames due at the same time in the order
/// they were sent).
///
/// Kept sorted in a deque rather than a heap: without reordering every frame is due no
/// earlier than the one sent before it, so a push is an append and a delivery takes the
/// front; only a frame the wire holds back is inserted further in. (A binary heap cost the
/// in-memory benchmark's sides about 5% of their time in sifting.)
#[derive(Debug, Default)]
struct Lane {
    frames: VecDeque<(u64, Vec<u8>)>,
}

impl Lane {
    fn push(&mut self, at: u64, frame: Vec<u8>) {
        if self.frames.back().is_none_or(|&(last, _)| last <= at) {
            self.frames.push_back((at, frame));
        } else {
            let k = self.frames.partition_point(|&(t, _)| t <= at);
            self.frames.insert(k, (at, frame));
        }
    }

    fn pop_due(&mut self, now: u64) -> Option<Vec<u8>> {
        if self.next()? > now {
            return None;
        }
        self.frames.pop_front().map(|(_, f)| f)
    }

    fn next(&self) -> Option<u64> {
        self.frames.front().map(|&(t, _)| t)
    }
}

/// Two stacks joined by a wire, on simulated time.
#[derive(Debug)]
pub struct Pair {
    /// The client end.
    pub a: Stack,
    /// The server end.
    pub b: Stack,
    tx: [Queue; 2],
    lanes: [Lane; 2],
    imp: Impairments,
    rng: u64,
    now: u64,
    /// Frames the wire dropped on purpose.
    pub lost: u64,
    /// When `Some`, every frame a side transmits is copied here (before the wire's
    /// impairments) with the time and the sender: for tests that look at segments.
    pub capture: Option<Vec<(Instant, Side, Vec<u8>)>>,
    batch: Vec<Vec<u8>>,
}

impl Pair {
    /// The server's address in [`server_config`](Self::server_config).
    pub const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
    /// The client's interface address in [`client_config`](Self::client_config); it also
    /// owns 198.19.0.0/16 (any-IP), as a connection-scale client does.
    pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

    /// The test bed's dataplane side: 198.18.0.10/24 behind gateway 198.18.0.1.
    pub fn server_config(max_connections: usize) -> Config {
        Config {
            mac: [0x02, 0, 0, 0, 0, 0x0a],
            addrs: vec![(Self::SERVER, 24)],
            gateway: Some(Self::CLIENT),
            max_connections,
            max_half_open: max_connections,
            seed: 0x5eed_000b,
            hugepages: HugePages::Auto,
            ..Config::default()
        }
    }

    /// The test bed's generator side: 198.18.0.1/24, plus 198.19.0.0/16 as any-IP sources.
    pub fn client_config(max_connections: usize) -> Config {
        Config {
            mac: [0x02, 0, 0, 0, 0, 0x01],
            addrs: vec![(Self::CLIENT, 24)],
            any_ip: vec![(Ipv4Addr::new(198, 19, 0, 0), 16)],
            max_connections,
            max_half_open: max_connections,
            seed: 0x5eed_000a,
            hugepages: HugePages::Auto,
            ..Config::default()
        }
    }

    /// Two stacks at time 0.
    ///
    /// # Panics
    /// If either configuration is invalid (a test setup error).
    pub fn new(a: &Config, b: &Config, imp: Impairments) -> Pair {
        let a = Stack::new(a, Instant::ZERO).expect("client config");
        let b = Stack::new(b, Instant::ZERO).expect("server config");
        Pair {
            a,
            b,
            tx: [Queue::default(), Queue::default()],
            lanes: [Lane::default(), Lane::default()],
            imp,
            rng: imp.seed | 1,
            now: 0,
            lost: 0,
            capture: None,
            batch: Vec::new(),
        }
    }

    /// Simulated time, ms.
    pub fn now(&self) -> Instant {
        Instant::from_millis(self.now as i64)
    }

    fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        (x as f64) / ((1u64 << 53) as f64) < p
    }

    /// One round at the current time: deliver due frames to each side, let `app` handle
    /// that side's events, poll, and put what it sent on the wire. Returns whether any
    /// frame moved.
    pub fn step(&mut self, app: &mut impl FnMut(Side, &mut Stack)) -> bool {
        let a = self.step_side(Side::A, app);
        let b = self.step_side(Side::B, app);
        a || b
    }

    /// One side's half of [`step`](Self::step): deliver the frames due to `side` as one
    /// batch, let `app` handle its events, poll it, and put what it sent on the wire.
    /// Separate so that a benchmark can time each side's work on its own. Returns whether
    /// any frame moved.
    pub fn step_side(&mut self, side: Side, app: &mut impl FnMut(Side, &mut Stack)) -> bool {
        let now = Instant::from_millis(self.now as i64);
        let mut moved = false;
        let i = match side {
            Side::A => 0,
            Side::B => 1,
        };
        let stack = if i == 0 { &mut self.a } else { &mut self.b };
        // Lane i carries frames *to* side i; deliver what is due as one batch.
        let mut batch = std::mem::take(&mut self.batch);
        while let Some(frame) = self.lanes[i].pop_due(self.now) {
            batch.push(frame);
        }
        if !batch.is_empty() {
            moved = true;
            stack.ingress_batch(now, &batch, &mut self.tx[i]);
            // Buffers go back to the side that sent them, so neither side's free
            // list grows while the other allocates.
            for frame in batch.drain(..) {
                self.tx[1 - i].recycle(frame);
            }
        }
        self.batch = batch;
        app(side, stack);
        stack.poll(now, &mut self.tx[i]);
        while let Some(frame) = self.tx[i].pop() {
            moved = true;
            if let Some(c) = &mut self.capture {
                c.push((now, side, frame.clone()));
            }
            if self.chance(self.imp.loss) {
                self.lost += 1;
                self.tx[i].recycle(frame);
                continue;
            }
            let mut at = self.now + self.imp.delay_ms;
            if self.chance(self.imp.reorder) {
                at += 1 + self.rng % self.imp.jitter_ms.max(1);
            }
            if self.chance(self.imp.duplicate) {
                self.lanes[1 - i].push(at, frame.clone());
            }
            self.lanes[1 - i].push(at, frame);
        }
        moved
    }

    /// When the next frame is delivered or a stack timer is due (ms, simulated time; the
    /// current time when a frame is due now), `None` when nothing at all is pending.
    pub fn next_at(&self) -> Option<u64> {
        [
            self.lanes[0].next(),
            self.lanes[1].next(),
            self.a.poll_at().map(|t| t.total_millis() as u64),
            self.b.poll_at().map(|t| t.total_millis() as u64),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Advances simulated time to the next frame delivery or timer, if nothing is due now.
    /// Returns false when nothing at all is pending.
    pub fn advance(&mut self) -> bool {
        let due_now = self
            .lanes
            .iter()
            .any(|l| l.next().is_some_and(|t| t <= self.now));
        if due_now {
            return true;
        }
        match self.next_at() {
            Some(t) => {
                self.now = t.max(self.now + 1);
                true
            }
            None => false,
        }
    }

    /// Jumps simulated time forward by `ms` (nothing is delivered in between).
    pub fn sleep(&mut self, ms: u64) {
        self.now += ms;
    }

    /// Steps until `app` returns true after a round, or `limit_ms` of simulated time pass.
    /// Returns whether the condition was met.
    pub fn run_until(
        &mut self,
        limit_ms: u64,
        mut app: impl FnMut(Side, &mut Stack) -> bool,
    ) -> bool {
        let end = self.now + limit_ms;
        let mut done = false;
        while self.now <= end {
            self.step(&mut |side, stack| done |= app(side, stack));
            if done {
                return true;
            }
            if !self.advance() {
                self.now += 1;
            }
        }
        false
    }
}
