//! The [`Stack`]'s side of SYN cookies (see [`crate::cookie`] for the cookies themselves):
//! answering a SYN with one, and turning a returning cookie into a connection.

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, State};
use smoltcp::time::Instant;

use crate::cookie::{
    CookieKeys, MSS_TABLE, PERIOD_MS, SYN_FRAME, Segment, Syn, SynCookies, mss_index,
};
use crate::counters::{Refusal, state_index};
use crate::device::{Port, TxQueue, TxTally};
use crate::mem;
use crate::recovery::Rewrite;
use crate::seqshift::{ETH, read_u32, set_window, shift_ack, shift_rx_seq, tcp_at};
use crate::table::{self, FourTuple};

use super::{Stack, ms};

impl Stack {
    /// Replaces the secret SYN cookies are keyed with (at first derived from
    /// [`Config::seed`](crate::Config::seed)). Feed it fresh randomness from the OS now
    /// and then (every few minutes): a cookie made before the change stays valid for the
    /// rest of its life.
    pub fn set_cookie_secret(&mut self, now: Instant, secret: u64) {
        self.cookies.set_secret(ms(now), secret);
    }

    /// The keys of the cookie period `now` is in, for making the same cookies outside
    /// the stack (an XDP program answering SYNs before they reach it). Cookies made with
    /// them are valid here for as long as the stack's own: to the end of the next period.
    /// They change when the period does (every 64 s) and never otherwise:
    /// [`set_cookie_secret`](Self::set_cookie_secret) keys only the periods after the
    /// current one. So a caller that compares them each millisecond or so and republishes
    /// on a change is always in step; one that is late by a little makes cookies of the
    /// previous period, which are still accepted.
    pub fn cookie_keys(&self, now: Instant) -> CookieKeys {
        self.cookies.period_keys(ms(now) / PERIOD_MS)
    }

    /// Whether a SYN now would be answered with a cookie by a listener in
    /// [`SynCookies::Auto`]: the stack's half-open budget is full, or an open `auto`
    /// listener's backlog is full of half-open connections (and not of connections
    /// waiting for accept, which a cookie could not help). O(listeners).
    pub fn cookie_pressure(&self) -> bool {
        let auto =
            |lst: &&crate::listener::Listener| lst.open && lst.opts.syn_cookies == SynCookies::Auto;
        self.listeners.iter().filter(auto).any(|lst| {
            self.half_open.full()
                || (lst.waiting() >= lst.opts.backlog && lst.queued() < lst.opts.backlog)
        })
    }

    /// Whether a SYN for listener `l` that `admit` refused for `why` gets a cookie.
    pub(crate) fn cookie_instead(&self, l: usize, why: Refusal) -> bool {
        let lst = &self.listeners[l];
        lst.opts.syn_cookies == SynCookies::Auto
            && match why {
                Refusal::HalfOpen => true,
                // Full of half-open connections, not of ones the application has yet to
                // accept (a cookie's ACK would find no room either).
                Refusal::Backlog => lst.queued() < lst.opts.backlog,
                Refusal::Slots | Refusal::Buffers | Refusal::PerSource => false,
            }
    }

    /// Answers a SYN for listener `l` with a cookie SYN-ACK, keeping no state.
    pub(crate) fn send_cookie<T: TxQueue>(
        &mut self,
        now: Instant,
        l: usize,
        key: FourTuple,
        frame: &[u8],
        tx: &mut T,
    ) {
        let Some(syn) = Segment::read(frame) else {
            return;
        };
        if !tx.has_room() {
            return;
        }
        let local = table::ip(key.local_addr);
        // Over IPv6 a segment carries 20 bytes less in the same MTU.
        let mss = mss_index(syn.mss.map(|m| m.min(Syn::our_mss(local))));
        let cookie = self.cookies.make(ms(now), &key, syn.seq, mss);
        let window = self.listeners[l].opts.socket.rx_buf.min(65535) as u16;
        let answer = Syn {
            macs: (self.mac, syn.src_mac),
            src: (local, key.local_port),
            dst: (table::ip(key.remote_addr), key.remote_port),
            seq: cookie,
            ack: Some(syn.seq.wrapping_add(1)),
            window,
            mss: Syn::our_mss(local),
        };
        let tally = &mut self.tally;
        tx.transmit(answer.len(), |buf| {
            answer.write(buf);
            tally.count(buf);
        });
        self.counters.cookies_sent += 1;
    }

    /// An ACK that matched no connection, for a port that may have a listener: if it
    /// returns a valid cookie, the connection is born (see the module docs) and the frame
    /// is consumed. Returns false, for the ordinary no-connection path, otherwise.
    pub(crate) fn ingress_cookie_ack<T: TxQueue>(
        &mut self,
        now: Instant,
        key: FourTuple,
        frame: &[u8],
        tx: &mut T,
    ) -> bool {
        match self.returned_cookie(now, &key, frame) {
            Returned::Valid(seg, isn_mss) => {
                self.born(now, key, frame, seg, isn_mss, tx);
                true
            }
            Returned::Invalid => {
                self.counters.cookies_invalid += 1;
                false
            }
            Returned::NotACookie => false,
        }
    }

    /// An ACK for the half-open connection in `slot` that returns a valid cookie instead
    /// of the connection's own SYN-ACK: the client's SYN-ACK was lost, and its
    /// retransmitted SYN met the XDP program answering with cookies (the stack under
    /// pressure), which cannot know of half-open connections. smoltcp would reset the
    /// client (an unacceptable ACK in SYN-RECEIVED); the half-open gives way to the
    /// cookie's connection instead. Returns whether the frame was consumed. An invalid
    /// cookie is not counted: the ACK is most likely for the half-open's own SYN-ACK.
    pub(crate) fn cookie_over_half_open<T: TxQueue>(
        &mut self,
        now: Instant,
        slot: u32,
        key: FourTuple,
        frame: &[u8],
        tx: &mut T,
    ) -> bool {
        let Returned::Valid(seg, isn_mss) = self.returned_cookie(now, &key, frame) else {
            return false;
        };
        self.free_slot(slot);
        self.born(now, key, frame, seg, isn_mss, tx);
        true
    }

    /// What an ACK for `key` returns: nothing to check unless the port has an open
    /// listener that takes cookies, else a valid cookie (the client's ISN and MSS index)
    /// or not.
    fn returned_cookie(&self, now: Instant, key: &FourTuple, frame: &[u8]) -> Returned {
        let l = usize::from(self.ports[usize::from(key.local_port)]);
        let takes = l
            .checked_sub(1)
            .and_then(|l| self.listeners.get(l))
            .is_some_and(|lst| lst.open && lst.opts.syn_cookies != SynCookies::Off);
        if !takes {
            return Returned::NotACookie;
        }
        let Some(seg) = Segment::read(frame) else {
            return Returned::NotACookie;
        };
        match self
            .cookies
            .recover(ms(now), key, &seg, seg.ack.wrapping_sub(1))
        {
            Some(isn_mss) => Returned::Valid(seg, isn_mss),
            None => Returned::Invalid,
        }
    }

    /// The connection a valid cookie (`returned_cookie`) makes, unless the listener's
    /// backlog, its per-source limit or the pools refuse it (counted). The frame is
    /// consumed either way: the client is real and gets no RST.
    fn born<T: TxQueue>(
        &mut self,
        now: Instant,
        key: FourTuple,
        frame: &[u8],
        seg: Segment,
        (isn, mss): (u32, u8),
        tx: &mut T,
    ) {
        let cookie = seg.ack.wrapping_sub(1);
        // The port's listener (`returned_cookie`: there is one).
        let l = usize::from(self.ports[usize::from(key.local_port)]) - 1;
        let lst = &self.listeners[l];
        // Past this point the client is real: whatever happens, it gets no RST.
        if lst.queued() >= lst.opts.backlog {
            self.counters.refuse(Refusal::Backlog);
            return;
        }
        if self.listeners[l].over_source_limit(key.source()) {
            self.counters.refuse(Refusal::PerSource);
            return;
        }
        let profile = self.listeners[l].profile;
        let slot = match self.open_slot(key, profile, |s, _| {
            // A non-zero port (checked by `listen`) cannot fail to listen.
            let _ = s.listen((table::ip(key.local_addr), key.local_port));
        }) {
            Ok(slot) => slot,
            Err(why) => {
                self.counters.refuse(why);
                return;
            }
        };
        // Counted like a passive open's, since `free_slot` uncounts every listener slot.
        self.listeners[l].count_source(key.source(), true);
        let Some(isn_ours) = self.bridge(now, slot, &key, &seg, (isn, mss), tx) else {
            tracing::debug!("SYN cookie of {key:?}: smoltcp sent no SYN-ACK (neighbour unknown?)");
            self.free_slot(slot);
            return;
        };
        let id = self.slab.id(slot);
        self.slab.slots[slot as usize].meta.seq_delta = isn_ours.wrapping_sub(cookie);
        self.ingress_slot(now, slot, frame, Rewrite::NONE, tx);
        if let Some(slot) = self.slab.check(id) {
            if self.slab.slots[slot as usize].meta.state == state_index(State::SynReceived) as u8 {
                // smoltcp did not take the ACK (it should always): do not leave a
                // half-open connection that no budget counts.
                self.free_slot(slot);
                return;
            }
            self.counters.cookies_accepted += 1;
        }
    }

    /// Brings the fresh listening socket in `slot` to SYN-RECEIVED with a SYN like the
    /// client's, and returns the initial sequence number smoltcp chose (read from the
    /// SYN-ACK it sends, which goes nowhere). The slot stays out of the half-open count.
    fn bridge<T: TxQueue>(
        &mut self,
        now: Instant,
        slot: u32,
        key: &FourTuple,
        seg: &Segment,
        (isn, mss): (u32, u8),
        tx: &mut T,
    ) -> Option<u32> {
        let i = slot as usize;
        let mut frame = [0u8; SYN_FRAME];
        let synth = Syn {
            macs: (seg.src_mac, self.mac),
            src: (table::ip(key.remote_addr), key.remote_port),
            dst: (table::ip(key.local_addr), key.local_port),
            seq: isn,
            ack: None,
            window: seg.window,
            mss: MSS_TABLE[usize::from(mss & 3)],
        };
        synth.write(&mut frame[..synth.len()]);
        let syn = &frame[..synth.len()];
        let mut captured = std::mem::take(&mut self.cookies.scratch);
        captured.clear();
        let mut set = mem::one_slot(&mut self.slab.slots[i].storage);
        let mut tally = TxTally::default();
        let mut capture = Capture {
            frame: &mut captured,
        };
        let mut port = Port {
            rx: Some(syn),
            tx: &mut capture,
            tally: &mut tally,
            caps: &self.caps,
            seq_delta: 0,
        };
        self.iface.poll_ingress_single(now, &mut port, &mut set);
        let state = set.get::<tcp::Socket>(SocketHandle::default()).state();
        if state == State::SynReceived {
            self.iface.poll_egress(now, &mut port, &mut set);
        }
        drop(set);
        let answer = tcp_at(&captured).and_then(|at| {
            // SYN|ACK from our port: smoltcp's answer to the SYN.
            let ok = captured[at + 13] & 0x12 == 0x12
                && captured[at..at + 2] == key.local_port.to_be_bytes();
            ok.then(|| read_u32(&captured, at + 4))
        });
        let resolving = match captured.get(12..14) {
            Some([0x08, 0x06]) => true,
            Some([0x86, 0xdd]) => captured.get(ETH + 6) == Some(&58),
            _ => false,
        };
        if answer.is_none() && resolving {
            // An ARP request or a neighbour solicitation for the next hop: the
            // connection's frames need it.
            let frame = &captured;
            let tally = &mut self.tally;
            if tx.has_room() {
                tx.transmit(frame.len(), |buf| {
                    buf.copy_from_slice(frame);
                    tally.count(buf);
                });
            }
        }
        self.cookies.scratch = captured;
        let ours = answer?;
        let m = &mut self.slab.slots[i].meta;
        // RCV.NXT after the client's SYN, for RFC 5961's RST test (`defense`): the SYN
        // went to smoltcp here, not through the stack's ingress that follows it.
        m.rcv_nxt = (isn as u16).wrapping_add(1);
        self.counters.states[usize::from(m.state)] -= 1;
        m.state = state_index(State::SynReceived) as u8;
        self.counters.states[usize::from(m.state)] += 1;
        Some(ours)
    }

    /// A segment whose numbers smoltcp must see changed, on a copy of the frame: for a
    /// cookie-born connection its acknowledgement number moves into smoltcp's space, a
    /// stranded bare ACK's sequence number moves `fix.behind` bytes forward, a duplicate
    /// ACK's window is set back to `fix.window`, and `fix.copies` copies follow it
    /// (`recovery`).
    pub(crate) fn ingress_translated<T: TxQueue>(
        &mut self,
        now: Instant,
        slot: u32,
        frame: &[u8],
        fix: Rewrite,
        tx: &mut T,
    ) {
        let delta = self.slab.slots[slot as usize].meta.seq_delta;
        let mut scratch = std::mem::take(&mut self.cookies.scratch);
        scratch.clear();
        scratch.extend_from_slice(frame);
        if delta != 0 {
            shift_ack(&mut scratch, delta);
        }
        if fix.behind != 0 {
            self.counters.acks_realigned += 1;
            shift_rx_seq(&mut scratch, u32::from(fix.behind));
        }
        if let Some(window) = fix.window {
            self.counters.dup_acks_pinned += 1;
            set_window(&mut scratch, window);
        }
        let id = self.slab.id(slot);
        self.ingress_polled(now, slot, &scratch, tx);
        if fix.copies > 0 {
            self.counters.fast_retransmits_forced += 1;
        }
        for _ in 0..fix.copies {
            // The segment may have ended the connection.
            if self.slab.check(id).is_none() {
                break;
            }
            self.ingress_polled(now, slot, &scratch, tx);
        }
        self.cookies.scratch = scratch;
    }
}

/// Keeps the first frame transmitted into it: smoltcp's SYN-ACK during the bridge.
struct Capture<'a> {
    frame: &'a mut Vec<u8>,
}

impl TxQueue for Capture<'_> {
    fn has_room(&self) -> bool {
        true
    }

    fn transmit<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        if self.frame.is_empty() {
            self.frame.resize(len, 0);
            fill(self.frame)
        } else {
            fill(&mut vec![0; len])
        }
    }
}

/// What an ACK returns to the cookie check ([`Stack::returned_cookie`]).
enum Returned {
    /// No listener that takes cookies on its port (or no segment to read).
    NotACookie,
    /// A cookie that fails the check (forged, stale, or not a cookie at all).
    Invalid,
    /// A valid cookie: the segment, and the client's ISN and MSS index it carries.
    Valid(Segment, (u32, u8)),
}
