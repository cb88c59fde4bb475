//! Defences against hostile traffic that smoltcp's sockets do not provide on their own:
//! half-open expiry and eviction (the SYN flood), no backscatter, a RST rate limit, the
//! send timeout, a per-source connection limit, and RFC 5961's blind in-window attack
//! mitigations.
//!
//! # SYN floods
//!
//! A SYN takes a slot, buffers and a smoltcp socket in SYN-RECEIVED. Two things bound what
//! a flood of spoofed SYNs can hold:
//!
//! - *Expiry.* smoltcp retransmits the SYN-ACK after 1 s, then doubling (RFC 6298 §5.5),
//!   and never gives up. The stack frees a half-open connection
//!   `2^(n+1) - 1` seconds after its SYN (`n` = [`ListenOptions::synack_retries`], so after
//!   `n` retransmissions went unanswered), from the timing wheel, silently: the source is
//!   likely spoofed and a RST would hit a bystander.
//! - *Eviction.* When the listener's backlog or the stack's
//!   [`Config::max_half_open`](crate::Config::max_half_open) is full, a new SYN frees the
//!   oldest half-open connection, as FreeBSD's syncache drops its oldest entry: a flood
//!   then only shortens how long a half-open connection may wait, and a legitimate client
//!   whose ACK comes within a round trip still gets in. Each listener keeps a FIFO of its
//!   half-open connections (ids, 8 bytes each; stale ids are skipped and swept, so it stays
//!   within twice the live count plus a constant): O(1) per SYN.
//!
//! # No backscatter
//!
//! A SYN refused for any reason is dropped and counted, never answered (Linux does the same
//! when its queues overflow). Segments that match nothing (a closed port, a stray ACK) are
//! still answered with RST (RFC 9293 §3.10.7.1), but at most
//! [`Config::rst_rate`](crate::Config::rst_rate) per second from a token bucket; the rest
//! are counted in `resets_limited`.
//!
//! # Send timeout
//!
//! smoltcp's `set_timeout` measures time since the last *received* segment, so a peer that
//! keeps its window at zero and answers every window probe is never timed out, and holds
//! its connection's buffers forever. [`SocketOptions::send_timeout`] (RFC 9293 §3.8.3's
//! user timeout) measures instead how long queued data went without any of it being
//! acknowledged, kept in 16 bits of the slot record.
//!
//! # Blind in-window attacks (RFC 5961)
//!
//! What smoltcp 0.14 does on a synchronized connection, and what the stack adds:
//!
//! | segment | smoltcp | RFC 5961 | the stack |
//! |---|---|---|---|
//! | RST, seq outside the window | dropped silently | §3.2: drop | as smoltcp |
//! | RST, seq in the window but not RCV.NXT | **resets the connection** | §3.2: challenge ACK | dropped (`resets_ignored`), challenge ACK |
//! | RST, seq = RCV.NXT | resets | §3.2: reset | as smoltcp |
//! | SYN (no ACK) | dropped silently | §4.2: challenge ACK | challenge ACK, never a reset |
//! | SYN-ACK | challenge ACK if out of window, else dropped | §4.2: challenge ACK | challenge ACK |
//! | ACK of data never sent | challenge ACK (1/s per connection), segment dropped | §5.2: ACK, drop | as smoltcp |
//!
//! smoltcp keeps RCV.NXT privately, so the stack follows its low 16 bits itself
//! (`Meta::rcv_nxt`, from the handshake, the bytes each segment adds to the receive
//! queue and the peer's FIN). A RST whose low 16 bits match goes on to smoltcp, which
//! checks the full number against its window: for windows under 64 KiB that is exactly
//! RFC 5961's test. (With window scaling and a window of `w` bytes, `w / 2^16` numbers pass
//! instead of one: still a 2^-32-scale chance for a blind guess per KiB of window.)
//!
//! smoltcp cannot be asked to send an ACK either. The stack gets the challenge ACK out of
//! it through its keep-alive timer: winding it up makes the next transmission a keep-alive
//! segment, `<SEQ=SND.NXT-1><ACK=RCV.NXT>`. It serves RFC 5961's purpose: a peer that
//! really lost the connection answers it with a RST carrying exactly RCV.NXT. This works
//! when smoltcp's timer is idle (nothing in flight) and the connection has no keep-alive
//! of its own; otherwise the segment due next (a retransmission, the next keep-alive)
//! carries the same acknowledgment, and the challenge is counted as not sent. Challenge
//! ACKs are limited to [`CHALLENGE_ACK_RATE`] per second per stack (RFC 5961 §7).
//!
//! # Per-source limit
//!
//! [`ListenOptions::max_per_source`] counts live connections per source address in a hash
//! map (std's, keyed with a random SipHash key, so a flood cannot degrade it), allocated
//! only for listeners that set it.

use smoltcp::socket::tcp::State;
use smoltcp::time::Duration;

use crate::counters::state_index;
#[cfg(doc)]
use crate::{ListenOptions, SocketOptions};

/// Challenge ACKs per second per stack (RFC 5961 §7; Linux's historical
/// `tcp_challenge_ack_limit`), also the burst.
pub const CHALLENGE_ACK_RATE: u32 = 1000;

/// How far the keep-alive timer is wound when used to send a challenge ACK: the interval
/// it is left with until the next segment from the peer resets it.
pub(crate) const CHALLENGE_WINDUP: Duration = Duration::from_secs(24 * 3600);

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    /// Milli-tokens added per ms (= tokens per second).
    rate: u64,
    /// Capacity in milli-tokens.
    cap: u64,
    level: u64,
    last_ms: u64,
}

impl TokenBucket {
    pub(crate) fn new(rate: u32, burst: u32, now_ms: u64) -> Self {
        let cap = u64::from(burst) * 1000;
        TokenBucket {
            rate: u64::from(rate),
            cap,
            level: cap,
            last_ms: now_ms,
        }
    }

    /// Takes one token if there is one.
    pub(crate) fn take(&mut self, now_ms: u64) -> bool {
        let dt = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        self.level = self
            .level
            .saturating_add(dt.saturating_mul(self.rate))
            .min(self.cap);
        if self.level >= 1000 {
            self.level -= 1000;
            true
        } else {
            false
        }
    }
}

/// The send timeout's clock: 256 ms ticks (see `Meta::progress`).
pub(crate) fn tick(now_ms: u64) -> u16 {
    (now_ms >> 8) as u16
}

/// When a connection whose last send progress was at tick `progress` times out, in ms, as
/// seen at `now_ms`.
pub(crate) fn send_deadline(now_ms: u64, progress: u16, timeout: Duration) -> u64 {
    let elapsed = u64::from(tick(now_ms).wrapping_sub(progress));
    let since = ((now_ms >> 8).saturating_sub(elapsed)) << 8;
    since
        + timeout
            .total_millis()
            .min(crate::listener::MAX_SEND_TIMEOUT.total_millis())
}

/// Whether a connection in `state` (an index) is synchronized (RFC 9293 §3.3.2): the
/// states after SYN-RECEIVED in [`state_index`]'s order.
pub(crate) fn synchronized(state: u8) -> bool {
    usize::from(state) > state_index(State::SynReceived)
}

/// Whether the peer's FIN has been received in `state`.
pub(crate) fn fin_received(state: State) -> bool {
    matches!(
        state,
        State::CloseWait | State::LastAck | State::Closing | State::TimeWait
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_paces_after_its_burst() {
        let mut b = TokenBucket::new(1000, 5, 0);
        assert_eq!((0..10).filter(|_| b.take(0)).count(), 5);
        assert!(!b.take(0));
        assert!(b.take(1), "one token per ms at 1000/s");
        assert!(!b.take(1));
        assert_eq!(
            (0..10).filter(|_| b.take(1_000_000)).count(),
            5,
            "capped at the burst"
        );
        let mut none = TokenBucket::new(0, 0, 0);
        assert!(!none.take(u64::MAX));
    }

    #[test]
    fn send_deadline_survives_tick_wrap() {
        let t = Duration::from_secs(60);
        let start = (u64::from(u16::MAX) << 8) - 1000; // just before the tick counter wraps
        let p = tick(start);
        let d = send_deadline(start + 10_000, p, t);
        assert!(d <= start + 60_000 && d > start + 59_000, "{d} vs {start}");
        assert_eq!(send_deadline(start + 70_000, p, t), d);
    }
}
