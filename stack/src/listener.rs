//! Listeners and per-connection options.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;

use smoltcp::socket::tcp;
use smoltcp::time::Duration;

use crate::conn::ConnId;
use crate::cookie::SynCookies;

/// Options of one connection, set when it opens.
///
/// The defaults suit request/response services: Nagle off and no delayed ACK (smoltcp
/// defaults to Nagle on and a 10 ms delayed ACK, which add latency to small exchanges; the
/// stack already piggybacks ACKs on responses because it transmits only after the
/// application has run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOptions {
    /// Receive buffer bytes (also the advertised window).
    pub rx_buf: usize,
    /// Transmit buffer bytes.
    pub tx_buf: usize,
    /// Nagle's algorithm (RFC 9293 §3.7.4).
    pub nagle: bool,
    /// Delayed ACK timeout; `None` acknowledges at once.
    pub ack_delay: Option<Duration>,
    /// TCP keep-alive interval; `None` for none.
    pub keep_alive: Option<Duration>,
    /// Abort the connection (RST) when nothing arrived from the peer for this long. Checked
    /// on the timing wheel; `None` for no idle limit.
    pub idle_timeout: Option<Duration>,
    /// Abort the connection (RST) when data waits to be sent and none of it was
    /// acknowledged for this long: RFC 9293 §3.8.3's "user timeout", Linux's
    /// `TCP_USER_TIMEOUT`. Catches a peer that never acknowledges, and one that keeps
    /// its window closed while answering window probes (which keeps it from being idle).
    /// Measured in quarter-second steps and capped at [`MAX_SEND_TIMEOUT`]; `None` for
    /// none.
    pub send_timeout: Option<Duration>,
    /// The congestion controller: [`Congestion::Reno`] by default.
    pub congestion: Congestion,
    /// TCP timestamps (RFC 7323): offered on active opens and answered when a SYN offers
    /// them (on by default, as Linux's `net.ipv4.tcp_timestamps`). smoltcp sends TSval on
    /// every segment and echoes TSecr but neither checks PAWS nor samples RTT from them
    /// (see `tsval`), so what they buy here is interoperability; parsing and emitting the
    /// 12-byte option on every segment costs about 11% of the per-segment time in the stack
    /// benchmark (`bench/RESULTS.md`).
    pub timestamps: bool,
}

/// A connection's congestion controller: how much it may have in flight beyond what the
/// peer's window allows, and how it backs off on loss.
///
/// smoltcp implements both: CUBIC (RFC 9438) and Reno (RFC 5681 slow start, congestion
/// avoidance, fast retransmit on three duplicate ACKs and a simplified fast recovery).
/// Either halves (Reno) or scales by 0.7 (CUBIC) its window on a loss and restarts from
/// one segment after a retransmission timeout.
///
/// What it costs: smoltcp keeps the state of the largest controller built in inside every
/// socket, whichever one the socket uses. Reno (40 bytes) is always built in and is the
/// default; CUBIC (104 bytes) only with the `cubic` cargo feature, which makes every
/// connection 64 bytes bigger (see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Congestion {
    /// CUBIC, RFC 9438 (Linux's default). Only with the `cubic` feature.
    #[cfg(feature = "cubic")]
    Cubic,
    /// Reno, RFC 5681.
    #[default]
    Reno,
    /// No congestion control: the sender fills the peer's window whatever the loss (the
    /// cheapest per segment, and what a lossless LAN needs).
    None,
}

impl Congestion {
    /// The name used by flags and config files: `cubic`, `reno`, `none`.
    pub fn name(self) -> &'static str {
        match self {
            #[cfg(feature = "cubic")]
            Congestion::Cubic => "cubic",
            Congestion::Reno => "reno",
            Congestion::None => "none",
        }
    }

    pub(crate) fn smoltcp(self) -> tcp::CongestionControl {
        match self {
            #[cfg(feature = "cubic")]
            Congestion::Cubic => tcp::CongestionControl::Cubic,
            Congestion::Reno => tcp::CongestionControl::Reno,
            Congestion::None => tcp::CongestionControl::None,
        }
    }
}

impl fmt::Display for Congestion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a congestion controller name did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CongestionError {
    /// Not `cubic`, `reno` or `none`.
    Unknown(String),
    /// `cubic` in a build without the `cubic` feature.
    NotBuilt,
}

impl fmt::Display for CongestionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CongestionError::Unknown(s) => {
                write!(
                    f,
                    "unknown congestion control {s:?}: use cubic, reno or none"
                )
            }
            CongestionError::NotBuilt => f.write_str(
                "congestion control cubic is not in this build: use reno, or rebuild with \
                 `--features cubic` (64 bytes more per connection)",
            ),
        }
    }
}

impl std::error::Error for CongestionError {}

impl FromStr for Congestion {
    type Err = CongestionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            #[cfg(feature = "cubic")]
            "cubic" => Ok(Congestion::Cubic),
            #[cfg(not(feature = "cubic"))]
            "cubic" => Err(CongestionError::NotBuilt),
            "reno" => Ok(Congestion::Reno),
            "none" => Ok(Congestion::None),
            _ => Err(CongestionError::Unknown(s.to_owned())),
        }
    }
}

/// The longest [`SocketOptions::send_timeout`] (about 2.3 hours; longer values are
/// capped): the stack keeps the time of a connection's last send progress in 16 bits of
/// quarter seconds.
pub const MAX_SEND_TIMEOUT: Duration = Duration::from_millis((1 << 15) * 256);

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions {
            rx_buf: 4096,
            tx_buf: 4096,
            nagle: false,
            ack_delay: None,
            keep_alive: None,
            idle_timeout: None,
            send_timeout: Some(Duration::from_secs(60)),
            congestion: Congestion::Reno,
            timestamps: true,
        }
    }
}

impl SocketOptions {
    pub(crate) fn apply(&self, socket: &mut tcp::Socket<'_>) {
        socket.set_nagle_enabled(self.nagle);
        socket.set_ack_delay(self.ack_delay);
        socket.set_keep_alive(self.keep_alive);
        socket.set_congestion_control(self.congestion.smoltcp());
        // Offered on active opens, answered when a SYN offers it (smoltcp drops it for
        // the connection otherwise); see `tsval`.
        socket.set_tsval_generator(
            self.timestamps
                .then_some(crate::tsval::tsval as fn() -> u32),
        );
    }
}

/// Options of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenOptions {
    /// Options given to every connection it accepts.
    pub socket: SocketOptions,
    /// Connections that may wait on this listener: half-open ones plus established ones not
    /// yet taken with [`Stack::accept`](crate::Stack::accept). When it (or the stack's
    /// half-open budget) is full, a new SYN is answered with a SYN cookie (see
    /// `syn_cookies`); with cookies off it evicts the listener's oldest half-open
    /// connection, or, if none is half-open, is dropped silently and counted
    /// ([`Refusal::Backlog`](crate::Refusal::Backlog)). A returning cookie beyond it (too
    /// many not yet accepted) is dropped and counted.
    pub backlog: u32,
    /// When SYNs are answered with SYN cookies rather than half-open connections.
    pub syn_cookies: SynCookies,
    /// SYN-ACK retransmissions before a half-open connection whose peer never answers is
    /// freed, silently (its SYN was likely spoofed). smoltcp retransmits the SYN-ACK after
    /// 1 s, then doubling, so `n` retries give up `2^(n+1) - 1` seconds after the SYN
    /// arrived (3: 15 s; a repeated SYN does not extend it). At most
    /// [`MAX_SYNACK_RETRIES`].
    pub synack_retries: u8,
    /// Live connections (half-open, queued or accepted) one source address may hold on
    /// this listener; the next SYN from it is dropped silently and counted
    /// ([`Refusal::PerSource`](crate::Refusal::PerSource)). `None` (the default): no
    /// limit, and no memory spent on counting.
    pub max_per_source: Option<u32>,
}

/// The largest [`ListenOptions::synack_retries`]: 2^16 - 1 s (18 hours) of waiting.
pub const MAX_SYNACK_RETRIES: u8 = 15;

impl ListenOptions {
    /// How long after its SYN a half-open connection is given up, in ms.
    pub(crate) fn half_open_expiry_ms(&self) -> u64 {
        let n = u32::from(self.synack_retries.min(MAX_SYNACK_RETRIES));
        ((1u64 << (n + 1)) - 1) * 1000
    }
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            socket: SocketOptions::default(),
            backlog: 1024,
            synack_retries: 3,
            max_per_source: None,
            syn_cookies: SynCookies::Auto,
        }
    }
}

/// A handle to a listener of a [`Stack`](crate::Stack).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerId(pub(crate) u16);

impl ListenerId {
    /// The listener's index, dense from 0.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// Why [`Stack::listen`](crate::Stack::listen) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenError {
    /// Port 0, a zero backlog, a zero `max_per_source` or a buffer size of zero.
    Invalid,
    /// Another listener has the port.
    PortInUse(u16),
    /// The buffer pool for these sizes could not be reserved.
    OutOfMemory,
    /// Too many listeners or distinct buffer sizes.
    TooMany,
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenError::Invalid => f.write_str(
                "invalid listen options: port, backlog, max_per_source and buffer sizes must be non-zero",
            ),
            ListenError::PortInUse(p) => write!(f, "port {p} already has a listener"),
            ListenError::OutOfMemory => f.write_str(
                "could not reserve the buffer pool: lower max_connections or the buffer sizes",
            ),
            ListenError::TooMany => f.write_str("too many listeners or distinct buffer sizes"),
        }
    }
}

impl std::error::Error for ListenError {}

/// A listener and its accounting: the connections waiting on it, half-open or queued for
/// accept, and its live connections per source address. Each count changes only through
/// its methods, called from the stack's state transitions.
pub(crate) struct Listener {
    pub(crate) port: u16,
    pub(crate) opts: ListenOptions,
    pub(crate) profile: u16,
    pub(crate) open: bool,
    /// Half-open connections (SynReceived).
    half_open: u32,
    /// Established connections waiting in `queue`.
    queued: u32,
    /// The accept queue. May hold stale ids of connections that died while queued; they
    /// are skipped (and no longer counted in `queued`).
    queue: VecDeque<ConnId>,
    /// Half-open connections, oldest first, for eviction. May hold stale ids (connections
    /// since established or freed); they are skipped, and swept out when they outnumber
    /// the live ones (see [`Listener::syn_received`]).
    half_open_fifo: VecDeque<ConnId>,
    /// Live connections per source address, when `opts.max_per_source` is set.
    per_source: Option<HashMap<u32, u32>>,
}

impl Listener {
    pub(crate) fn new(port: u16, opts: ListenOptions, profile: u16) -> Listener {
        Listener {
            port,
            opts,
            profile,
            open: true,
            half_open: 0,
            queued: 0,
            queue: VecDeque::new(),
            half_open_fifo: VecDeque::new(),
            per_source: opts.max_per_source.map(|_| HashMap::new()),
        }
    }

    /// Half-open connections.
    pub(crate) fn half_open(&self) -> u32 {
        self.half_open
    }

    /// Established connections not yet accepted.
    pub(crate) fn queued(&self) -> u32 {
        self.queued
    }

    /// Connections that count against the backlog: half-open plus queued.
    pub(crate) fn waiting(&self) -> u32 {
        self.half_open + self.queued
    }

    /// Connection `id` reached SynReceived: counted half-open and remembered, oldest first,
    /// for eviction. `live` tells whether a remembered id is still half-open; stale ones
    /// are swept out when they outnumber the live ones.
    pub(crate) fn syn_received(&mut self, id: ConnId, live: impl Fn(ConnId) -> bool) {
        self.half_open += 1;
        self.half_open_fifo.push_back(id);
        if self.half_open_fifo.len() > 2 * self.half_open as usize + 64 {
            // Amortized O(1): after the sweep the FIFO holds only live entries, and the
            // next sweep is at least `half_open + 64` pushes away.
            self.half_open_fifo.retain(|&id| live(id));
        }
    }

    /// A half-open connection left SynReceived: established, closed or freed.
    pub(crate) fn half_open_ended(&mut self) {
        self.half_open -= 1;
    }

    /// The oldest remembered half-open connection (possibly stale: check it).
    pub(crate) fn oldest_half_open(&mut self) -> Option<ConnId> {
        self.half_open_fifo.pop_front()
    }

    /// Connection `id` was established from SynReceived: queued for accept. Returns
    /// whether the queue was empty before (the application is to be told).
    pub(crate) fn established(&mut self, id: ConnId) -> bool {
        self.queued += 1;
        self.queue.push_back(id);
        self.queued == 1
    }

    /// The next id in the accept queue (possibly stale: check it).
    pub(crate) fn next_queued(&mut self) -> Option<ConnId> {
        self.queue.pop_front()
    }

    /// A queued connection left the queue: accepted, or over before it was.
    pub(crate) fn dequeued(&mut self) {
        self.queued -= 1;
    }

    /// Whether `addr` already holds the most connections this listener allows one source.
    pub(crate) fn over_source_limit(&self, addr: u32) -> bool {
        matches!((self.opts.max_per_source, &self.per_source),
            (Some(max), Some(map)) if map.get(&addr).is_some_and(|&n| n >= max))
    }

    /// Counts (`up`) or uncounts a connection from `addr` for the per-source limit, if
    /// there is one.
    pub(crate) fn count_source(&mut self, addr: u32, up: bool) {
        let Some(map) = self.per_source.as_mut() else {
            return;
        };
        if up {
            *map.entry(addr).or_insert(0) += 1;
        } else if let Some(n) = map.get_mut(&addr) {
            *n -= 1;
            if *n == 0 {
                map.remove(&addr);
            }
        }
    }

    /// Bytes reserved by the queues and the per-source map.
    pub(crate) fn bytes(&self) -> usize {
        (self.queue.capacity() + self.half_open_fifo.capacity()) * size_of::<ConnId>()
            + self
                .per_source
                .as_ref()
                .map_or(0, |m| m.capacity() * (size_of::<(u32, u32)>() + 1))
    }
}

/// The stack-wide half-open budget ([`Config::max_half_open`](crate::Config::max_half_open)).
pub(crate) struct HalfOpenBudget {
    count: u32,
    max: u32,
}

impl HalfOpenBudget {
    pub(crate) fn new(max: usize) -> HalfOpenBudget {
        HalfOpenBudget {
            count: 0,
            max: max.min(u32::MAX as usize) as u32,
        }
    }

    /// Whether a new half-open connection would exceed the budget.
    pub(crate) fn full(&self) -> bool {
        self.count >= self.max
    }

    /// A connection entered SynReceived.
    pub(crate) fn syn_received(&mut self) {
        self.count += 1;
    }

    /// A half-open connection left SynReceived: established, closed or freed.
    pub(crate) fn half_open_ended(&mut self) {
        self.count -= 1;
    }
}
