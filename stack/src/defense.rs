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

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, State};
use smoltcp::time::{Duration, Instant};

use crate::conn::{ConnId, flag};
use crate::cookie::SynCookies;
use crate::counters::{Refusal, state_index};
use crate::device::TxQueue;
use crate::mem;
use crate::parse::{self, Flags};
use crate::stack::{Stack, ms, seen};
use crate::table::FourTuple;
#[cfg(doc)]
use crate::{ListenOptions, SocketOptions};

/// Challenge ACKs per second per stack (RFC 5961 §7; Linux's historical
/// `tcp_challenge_ack_limit`), also the burst.
pub const CHALLENGE_ACK_RATE: u32 = 1000;

/// How far the keep-alive timer is wound when used to send a challenge ACK: the interval
/// it is left with until the next segment from the peer resets it.
const CHALLENGE_WINDUP: Duration = Duration::from_secs(24 * 3600);

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
fn synchronized(state: u8) -> bool {
    usize::from(state) > state_index(State::SynReceived)
}

/// Whether the peer's FIN has been received in `state`.
fn fin_received(state: State) -> bool {
    matches!(
        state,
        State::CloseWait | State::LastAck | State::Closing | State::TimeWait
    )
}

impl Stack {
    /// RFC 5961 for a segment that found `slot`: returns whether it was dealt with here
    /// and must not reach smoltcp.
    pub(crate) fn screen<T: TxQueue>(
        &mut self,
        now: Instant,
        slot: u32,
        frame: &[u8],
        flags: Flags,
        tx: &mut T,
    ) -> bool {
        let m = self.slab.slots[slot as usize].meta;
        if !synchronized(m.state) {
            return false;
        }
        if flags.rst {
            let Some(seq) = parse::tcp_seq(frame) else {
                return true;
            };
            let off = (seq as u16).wrapping_sub(m.rcv_nxt);
            if off == 0 {
                return false; // exact: smoltcp checks the full number and resets
            }
            self.counters.resets_ignored += 1;
            let set = mem::one_slot(&mut self.slab.slots[slot as usize].storage);
            let s = set.get::<tcp::Socket>(SocketHandle::default());
            let window = s.recv_capacity() - s.recv_queue();
            drop(set);
            if usize::from(off) < window {
                self.challenge(now, slot, tx);
            }
            return true;
        }
        if flags.syn {
            self.challenge(now, slot, tx);
            return true;
        }
        false
    }

    /// Sends a challenge ACK on `slot` (see the module docs), within the rate limit.
    fn challenge<T: TxQueue>(&mut self, now: Instant, slot: u32, tx: &mut T) {
        if !self.challenge_bucket.take(ms(now)) {
            self.counters.challenge_acks_limited += 1;
            return;
        }
        let keep_alive = self.profiles[usize::from(self.slab.slots[slot as usize].meta.profile)]
            .opts
            .keep_alive;
        let wind = |stack: &mut Stack, interval| {
            let mut set = mem::one_slot(&mut stack.slab.slots[slot as usize].storage);
            set.get_mut::<tcp::Socket>(SocketHandle::default())
                .set_keep_alive(interval);
        };
        if keep_alive.is_none() {
            wind(self, Some(CHALLENGE_WINDUP));
        }
        let sent = self.tally.frames;
        self.egress_slot(now, slot, tx);
        if keep_alive.is_none() && self.slab.slots[slot as usize].meta.has(flag::LIVE) {
            wind(self, None);
        }
        if self.tally.frames > sent {
            self.counters.challenge_acks += 1;
        } else {
            self.counters.challenge_acks_limited += 1;
        }
    }

    /// Follows RCV.NXT (low 16 bits) across one ingress poll of `slot`.
    pub(crate) fn track_rcv_nxt(
        &mut self,
        slot: u32,
        frame: &[u8],
        before: State,
        after: State,
        added: usize,
    ) {
        let m = &mut self.slab.slots[slot as usize].meta;
        if before != after && matches!(before, State::Listen | State::SynSent) {
            // The peer's SYN (or SYN-ACK): RCV.NXT = its sequence number + 1.
            if let Some(seq) = parse::tcp_seq(frame) {
                m.rcv_nxt = (seq as u16).wrapping_add(1);
            }
            return;
        }
        let fin = u16::from(!fin_received(before) && fin_received(after));
        m.rcv_nxt = m.rcv_nxt.wrapping_add(added as u16).wrapping_add(fin);
    }

    /// Counts a half-open connection of listener `l` in its eviction FIFO.
    pub(crate) fn remember_half_open(&mut self, l: usize, id: ConnId) {
        let slab = &self.slab;
        let lst = &mut self.listeners[l];
        lst.half_open_fifo.push_back(id);
        if lst.half_open_fifo.len() > 2 * lst.half_open as usize + 64 {
            // Amortized O(1): after the sweep the FIFO holds only live entries, and the
            // next sweep is at least `half_open + 64` pushes away.
            lst.half_open_fifo.retain(|&id| {
                slab.check(id)
                    .is_some_and(|s| slab.slots[s as usize].meta.has(flag::HALF_OPEN))
            });
        }
    }

    /// Frees the oldest half-open connection of listener `l`, silently. Returns whether
    /// there was one.
    fn evict_half_open(&mut self, l: usize) -> bool {
        while let Some(id) = self.listeners[l].half_open_fifo.pop_front() {
            if let Some(slot) = self.slab.check(id)
                && self.slab.slots[slot as usize].meta.has(flag::HALF_OPEN)
            {
                self.counters.half_open_evicted += 1;
                self.free_slot(slot);
                return true;
            }
        }
        false
    }

    /// Makes room for a SYN to listener `l` within its backlog and the stack's half-open
    /// budget, evicting half-open connections when needed; or says why not.
    /// With SYN cookies on (`auto`), nothing is evicted: the refusal it returns is
    /// answered with a cookie instead (see `cookie`).
    pub(crate) fn make_room(&mut self, l: usize, key: &FourTuple) -> Result<(), Refusal> {
        if self.over_source_limit(l, key.remote_addr) {
            return Err(Refusal::PerSource);
        }
        let lst = &self.listeners[l];
        let evict = lst.opts.syn_cookies == SynCookies::Off;
        if lst.waiting() >= lst.opts.backlog && !(evict && self.evict_half_open(l)) {
            return Err(Refusal::Backlog);
        }
        if self.half_open >= self.max_half_open {
            if !evict {
                return Err(Refusal::HalfOpen);
            }
            // This listener's oldest first; else the one holding the most.
            let fullest = (0..self.listeners.len()).max_by_key(|&i| self.listeners[i].half_open);
            if !self.evict_half_open(l) && !fullest.is_some_and(|f| self.evict_half_open(f)) {
                return Err(Refusal::HalfOpen);
            }
        }
        Ok(())
    }

    /// Whether `addr` already holds the most connections listener `l` allows one source.
    pub(crate) fn over_source_limit(&self, l: usize, addr: u32) -> bool {
        let lst = &self.listeners[l];
        matches!((lst.opts.max_per_source, &lst.per_source),
            (Some(max), Some(map)) if map.get(&addr).is_some_and(|&n| n >= max))
    }

    /// Counts (`delta` = 1) or uncounts (-1) a connection of listener `l` from `addr` for
    /// its per-source limit, if it has one.
    pub(crate) fn count_source(&mut self, l: usize, addr: u32, up: bool) {
        let Some(map) = self.listeners[l].per_source.as_mut() else {
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

    /// The half-open expiry and the send timeout of `slot`, when its timer fires. Returns
    /// whether one of them acted (freed the slot, or aborted the connection and queued it
    /// for the RST).
    pub(crate) fn defense_timers(&mut self, now: Instant, slot: u32) -> bool {
        let m = self.slab.slots[slot as usize].meta;
        let profile = &self.profiles[usize::from(m.profile)];
        let now_ms = ms(now);
        if m.has(flag::HALF_OPEN)
            && let Some(l) = profile.listener
        {
            let expiry = self.listeners[usize::from(l)].opts.half_open_expiry_ms();
            if u64::from((now_ms as u32).wrapping_sub(m.last_rx)) >= expiry {
                self.counters.half_open_expired += 1;
                self.free_slot(slot);
                return true;
            }
        }
        if let Some(timeout) = profile.opts.send_timeout {
            let mut set = mem::one_slot(&mut self.slab.slots[slot as usize].storage);
            let socket = set.get_mut::<tcp::Socket>(SocketHandle::default());
            let s = seen(socket);
            if s.send_room < socket.send_capacity()
                && now_ms >= send_deadline(now_ms, m.progress, timeout)
            {
                self.counters.send_timeouts += 1;
                socket.abort();
                drop(set);
                self.mark_dirty(slot);
                return true;
            }
        }
        false
    }

    /// The earliest of `slot`'s half-open expiry and send timeout, given whether it has
    /// data queued.
    pub(crate) fn defense_deadline(&self, now: Instant, slot: u32, queued: bool) -> Option<u64> {
        let m = &self.slab.slots[slot as usize].meta;
        let profile = &self.profiles[usize::from(m.profile)];
        let now_ms = ms(now);
        let mut at = None;
        if m.has(flag::HALF_OPEN)
            && let Some(l) = profile.listener
        {
            let expiry = self.listeners[usize::from(l)].opts.half_open_expiry_ms();
            let age = u64::from((now_ms as u32).wrapping_sub(m.last_rx));
            at = Some(now_ms + expiry.saturating_sub(age));
        }
        if queued && let Some(timeout) = profile.opts.send_timeout {
            let d = send_deadline(now_ms, m.progress, timeout);
            at = Some(at.map_or(d, |a: u64| a.min(d)));
        }
        at
    }
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
