//! What the stack counts. Plain integers, owned by the stack's core: the dataplane copies
//! them into per-worker atomics for the control thread.

use smoltcp::socket::tcp::State;

use crate::parse::Drop;

/// Refusals of new connections. A refused SYN is dropped silently, as Linux does when its
/// queues overflow: its source is likely spoofed, and a RST would be backscatter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Refusal {
    /// The listener's backlog (half-open plus not yet accepted) was full.
    Backlog,
    /// The stack-wide half-open limit was reached (SYN flood guard).
    HalfOpen,
    /// Every connection slot was in use.
    Slots,
    /// The buffer pool for the listener's buffer sizes was empty.
    Buffers,
    /// The source address already had
    /// [`max_per_source`](crate::ListenOptions::max_per_source) connections to the
    /// listener.
    PerSource,
}

impl Refusal {
    /// Every reason, in counter order.
    pub const ALL: [Refusal; 5] = [
        Refusal::Backlog,
        Refusal::HalfOpen,
        Refusal::Slots,
        Refusal::Buffers,
        Refusal::PerSource,
    ];

    /// A short lower-case name, for metrics labels and tables.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Backlog => "backlog",
            Refusal::HalfOpen => "half_open",
            Refusal::Slots => "slots",
            Refusal::Buffers => "buffers",
            Refusal::PerSource => "per_source",
        }
    }
}

/// Number of TCP states (`smoltcp::socket::tcp::State`), for [`Counters::states`].
pub const STATES: usize = 11;

/// The index of `state` in [`Counters::states`].
pub fn state_index(state: State) -> usize {
    match state {
        State::Closed => 0,
        State::Listen => 1,
        State::SynSent => 2,
        State::SynReceived => 3,
        State::Established => 4,
        State::FinWait1 => 5,
        State::FinWait2 => 6,
        State::CloseWait => 7,
        State::Closing => 8,
        State::LastAck => 9,
        State::TimeWait => 10,
    }
}

/// The names of the TCP states in [`state_index`] order (the `states` of the reports, the
/// `state` label of the metrics, the state of a listed connection).
pub const STATE_NAMES: [&str; STATES] = [
    "closed",
    "listen",
    "syn_sent",
    "syn_received",
    "established",
    "fin_wait1",
    "fin_wait2",
    "close_wait",
    "closing",
    "last_ack",
    "time_wait",
];

/// The name of `state` ([`STATE_NAMES`]).
pub fn state_name(state: State) -> &'static str {
    STATE_NAMES[state_index(state)]
}

/// Counters of one stack. Monotonic unless noted as a gauge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames handed to [`Stack::ingress`](crate::Stack::ingress).
    pub rx_frames: u64,
    /// Bytes in those frames.
    pub rx_bytes: u64,
    /// Frames transmitted.
    pub tx_frames: u64,
    /// Bytes in those frames.
    pub tx_bytes: u64,
    /// Received frames dropped before any connection saw them, by [`Drop`] reason.
    pub drops: [u64; Drop::ALL.len()],
    /// TCP segments that matched no connection and no listener (answered with RST, within
    /// [`Config::rst_rate`](crate::Config::rst_rate)).
    pub no_connection: u64,
    /// RSTs not sent for such segments because the RST rate limit was exhausted.
    pub resets_limited: u64,
    /// SYNs received for listening ports.
    pub syns: u64,
    /// Connections refused, by [`Refusal`] reason.
    pub refused: [u64; Refusal::ALL.len()],
    /// Passive opens that reached Established.
    pub accepted: u64,
    /// Active opens started with [`Stack::connect`](crate::Stack::connect).
    pub connects: u64,
    /// Active opens that reached Established.
    pub connected: u64,
    /// Connections whose slot was freed (all causes).
    pub closed: u64,
    /// Connections aborted by the idle timeout.
    pub idle_timeouts: u64,
    /// Connections aborted by the send timeout: queued data made no progress for
    /// [`SocketOptions::send_timeout`](crate::SocketOptions::send_timeout).
    pub send_timeouts: u64,
    /// Half-open connections freed (silently) after their SYN-ACK went unanswered
    /// [`ListenOptions::synack_retries`](crate::ListenOptions::synack_retries) times.
    pub half_open_expired: u64,
    /// Half-open connections freed (silently) to make room for a new SYN when the
    /// half-open budget was full.
    pub half_open_evicted: u64,
    /// Challenge ACKs sent (RFC 5961 §3.2, §4.2) for an in-window RST whose sequence
    /// number was not exactly the next expected one, or a SYN on a synchronized
    /// connection.
    pub challenge_acks: u64,
    /// Challenge ACKs not sent because their rate limit (RFC 5961 §7) was exhausted, or
    /// because smoltcp's timer was busy (see the `stack` module docs).
    pub challenge_acks_limited: u64,
    /// RSTs ignored because their sequence number was not exactly the next expected one
    /// (RFC 5961 §3.2).
    pub resets_ignored: u64,
    /// Bare ACKs whose sequence number was behind RCV.NXT, from a peer that rewound after
    /// a retransmission timeout, moved up to it so that smoltcp takes them (see the
    /// `recovery` module of the stack's source).
    pub acks_realigned: u64,
    /// Keep-alive segments sent to draw the peer's window out for a connection whose
    /// queued data made no progress while smoltcp had no timer running (see the `recovery`
    /// module of the stack's source).
    pub window_probes: u64,
    /// Duplicate ACKs (bare, with SACK blocks) whose grown window was set back to the
    /// first one's, so that smoltcp counts them toward its fast retransmit (see the
    /// `recovery` module of the stack's source).
    pub dup_acks_pinned: u64,
    /// Bare ACKs with SACK blocks handed to smoltcp with copies after them, so that its
    /// count of duplicates reaches three and it resends the hole: the third duplicate for
    /// a hole, or an ACK of new data whose SACK blocks show the next hole lost (see the
    /// `recovery` module of the stack's source).
    pub fast_retransmits_forced: u64,
    /// RST segments sent (smoltcp's and ours).
    pub resets_sent: u64,
    /// RST segments received.
    pub resets_received: u64,
    /// ARP requests sent to keep the gateway's neighbour entry fresh (one per
    /// 20 s while the stack is polled).
    pub gateway_probes: u64,
    /// Times a connection's segment was held back while the stack asked for the peer's
    /// (or gateway's) link-layer address with ARP or a neighbour solicitation; it leaves
    /// with the answer. Steady growth means neighbour entries lapse: clients on the link
    /// that never speak first, or a gateway not set with `gateway`.
    pub neighbour_waits: u64,
    /// SYN-ACKs sent with a SYN cookie instead of a half-open connection (see
    /// [`SynCookies`](crate::SynCookies)).
    pub cookies_sent: u64,
    /// Connections born from a returned SYN cookie (also counted in `accepted`).
    pub cookies_accepted: u64,
    /// ACKs to a listening port, for no connection, whose cookie was not valid (forged,
    /// expired, or a stray segment): they then take the `no_connection` path.
    pub cookies_invalid: u64,
    /// Gauge: connection slots by TCP state, indexed by [`state_index`].
    pub states: [u64; STATES],
}

impl Counters {
    /// Counts a dropped frame.
    pub(crate) fn drop(&mut self, why: Drop) {
        self.drops[why as usize] += 1;
    }

    /// Counts a refused connection.
    pub(crate) fn refuse(&mut self, why: Refusal) {
        self.refused[why as usize] += 1;
    }

    /// Frames dropped for `why`.
    pub fn dropped(&self, why: Drop) -> u64 {
        self.drops[why as usize]
    }

    /// Connections refused for `why`.
    pub fn refusals(&self, why: Refusal) -> u64 {
        self.refused[why as usize]
    }

    /// Gauge: connection slots now in `state`.
    pub fn in_state(&self, state: State) -> u64 {
        self.states[state_index(state)]
    }

    /// Gauge: connections holding a slot, in any state.
    pub fn connections(&self) -> u64 {
        self.states.iter().sum()
    }
}
