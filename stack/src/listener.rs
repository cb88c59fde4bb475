//! Listeners and per-connection options.

use std::collections::{HashMap, VecDeque};
use std::fmt;

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
        }
    }
}

impl SocketOptions {
    pub(crate) fn apply(&self, socket: &mut tcp::Socket<'_>) {
        socket.set_nagle_enabled(self.nagle);
        socket.set_ack_delay(self.ack_delay);
        socket.set_keep_alive(self.keep_alive);
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

pub(crate) struct Listener {
    pub(crate) port: u16,
    pub(crate) opts: ListenOptions,
    pub(crate) profile: u16,
    /// Half-open connections (SynReceived).
    pub(crate) half_open: u32,
    /// Established connections waiting in `queue`.
    pub(crate) queued: u32,
    /// The accept queue. May hold stale ids of connections that died while queued; they
    /// are skipped (and no longer counted in `queued`).
    pub(crate) queue: VecDeque<ConnId>,
    /// Half-open connections, oldest first, for eviction. May hold stale ids (connections
    /// since established or freed); they are skipped, and swept out when they outnumber
    /// the live ones (see `Stack::remember_half_open`).
    pub(crate) half_open_fifo: VecDeque<ConnId>,
    /// Live connections per source address, when `opts.max_per_source` is set.
    pub(crate) per_source: Option<HashMap<u32, u32>>,
    pub(crate) open: bool,
}

impl Listener {
    pub(crate) fn waiting(&self) -> u32 {
        self.half_open + self.queued
    }
}
