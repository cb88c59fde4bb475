//! The [`Stack`]'s side of its defenses (see [`crate::defense`] for what they are and
//! why): RFC 5961 screening, half-open eviction and expiry, the send timeout.

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, State};
use smoltcp::time::{Duration, Instant};

use crate::conn::flag;
use crate::cookie::SynCookies;
use crate::counters::Refusal;
use crate::defense::{CHALLENGE_WINDUP, fin_received, send_deadline, synchronized};
use crate::device::TxQueue;
use crate::mem;
use crate::parse::Flags;
use crate::seqshift;
use crate::table::FourTuple;

use super::{Stack, ms, seen};

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
            let Some(seq) = seqshift::seq(frame) else {
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
        if self.keep_alive_now(now, slot, CHALLENGE_WINDUP, tx) {
            self.counters.challenge_acks += 1;
        } else {
            self.counters.challenge_acks_limited += 1;
        }
    }

    /// Makes smoltcp send `slot`'s keep-alive segment, `<SEQ=SND.NXT-1><ACK=RCV.NXT>`, now
    /// (see the module docs), which the peer answers with an ACK. Returns whether a frame
    /// went out.
    /// `windup` is the keep-alive interval set for the moment (for a connection without
    /// keep-alives of its own): smoltcp sends its next keep-alive that long after.
    pub(crate) fn keep_alive_now<T: TxQueue>(
        &mut self,
        now: Instant,
        slot: u32,
        windup: Duration,
        tx: &mut T,
    ) -> bool {
        let keep_alive = self.profiles[usize::from(self.slab.slots[slot as usize].meta.profile)]
            .opts
            .keep_alive;
        let wind = |stack: &mut Stack, interval| {
            let mut set = mem::one_slot(&mut stack.slab.slots[slot as usize].storage);
            set.get_mut::<tcp::Socket>(SocketHandle::default())
                .set_keep_alive(interval);
        };
        if keep_alive.is_none() {
            wind(self, Some(windup));
        }
        let sent = self.tally.frames;
        self.egress_slot(now, slot, tx);
        if keep_alive.is_none() && self.slab.slots[slot as usize].meta.has(flag::LIVE) {
            wind(self, None);
        }
        self.tally.frames > sent
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
            if let Some(seq) = seqshift::seq(frame) {
                m.rcv_nxt = (seq as u16).wrapping_add(1);
            }
            return;
        }
        let fin = u16::from(!fin_received(before) && fin_received(after));
        m.rcv_nxt = m.rcv_nxt.wrapping_add(added as u16).wrapping_add(fin);
    }

    /// Frees the oldest half-open connection of listener `l`, silently. Returns whether
    /// there was one.
    fn evict_half_open(&mut self, l: usize) -> bool {
        while let Some(id) = self.listeners[l].oldest_half_open() {
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
        if self.listeners[l].over_source_limit(key.source()) {
            return Err(Refusal::PerSource);
        }
        let lst = &self.listeners[l];
        let evict = lst.opts.syn_cookies == SynCookies::Off;
        if lst.waiting() >= lst.opts.backlog && !(evict && self.evict_half_open(l)) {
            return Err(Refusal::Backlog);
        }
        if self.half_open.full() {
            if !evict {
                return Err(Refusal::HalfOpen);
            }
            // This listener's oldest first; else the one holding the most.
            let fullest = (0..self.listeners.len()).max_by_key(|&i| self.listeners[i].half_open());
            if !self.evict_half_open(l) && !fullest.is_some_and(|f| self.evict_half_open(f)) {
                return Err(Refusal::HalfOpen);
            }
        }
        Ok(())
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
        if queued {
            let mut d = crate::recovery::stall_check_at(now_ms, m.progress);
            if let Some(timeout) = profile.opts.send_timeout {
                d = d.min(send_deadline(now_ms, m.progress, timeout));
            }
            at = Some(at.map_or(d, |a: u64| a.min(d)));
        }
        at
    }
}
