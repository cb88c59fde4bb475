//! The [`Stack`]'s side of the recovery from smoltcp's stalls and slow repairs (see
//! [`crate::recovery`]).

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::time::Instant;

use crate::defense::synchronized;
use crate::device::TxQueue;
use crate::mem;
use crate::recovery::{FIRST_PROBE_MS, PROBE_WINDUP, reach, since_progress};
use crate::seqshift;

use super::{Stack, ms};

impl Stack {
    /// How far behind RCV.NXT the bare ACK `frame` for `slot` is, when that is a distance
    /// a rewound peer can be behind (see the module docs); 0 otherwise, and 0 for one
    /// behind: that is a keep-alive or a window probe (RFC 9293 §3.8.4, Linux's
    /// `tcp_xmit_probe_skb`), which smoltcp must see as it is to answer it.
    pub(crate) fn ack_behind(&self, slot: u32, frame: &[u8]) -> u16 {
        let m = &self.slab.slots[slot as usize].meta;
        if !synchronized(m.state) {
            return 0;
        }
        let Some(seq) = seqshift::seq(frame) else {
            return 0;
        };
        let behind = m.rcv_nxt.wrapping_sub(seq as u16);
        if behind > 1
            && usize::from(behind) <= reach(self.profiles[usize::from(m.profile)].opts.rx_buf)
        {
            behind
        } else {
            0
        }
    }

    /// What smoltcp must see of the bare ACK `frame` for `slot` so that it counts it as
    /// the duplicate it is, and resends a hole the peer's SACK blocks show lost (see the
    /// module docs): a window instead of the frame's, and copies of the frame after it.
    pub(crate) fn duplicate(&mut self, slot: u32, frame: &[u8]) -> (Option<u16>, u8) {
        let Some(sacked) = seqshift::sack_ack(frame) else {
            return (None, 0);
        };
        if !synchronized(self.slab.slots[slot as usize].meta.state) {
            return (None, 0);
        }
        self.pins.pin(slot, sacked)
    }

    /// At a wake-up of `slot`: if it has queued data that made no progress for at least
    /// [`FIRST_PROBE_MS`] and smoltcp has no timer running, has smoltcp send a keep-alive.
    pub(crate) fn unstall<T: TxQueue>(&mut self, now: Instant, slot: u32, tx: &mut T) {
        let m = &self.slab.slots[slot as usize].meta;
        if !synchronized(m.state) || since_progress(ms(now), m.progress) < FIRST_PROBE_MS {
            return;
        }
        let set = mem::one_slot(&mut self.slab.slots[slot as usize].storage);
        let queued = set.get::<tcp::Socket>(SocketHandle::default()).send_queue() > 0;
        // Stalled: data queued and smoltcp waits for nothing but a segment from the peer.
        let stalled = queued && self.iface.poll_at(now, &set).is_none();
        drop(set);
        if !stalled {
            return;
        }
        if self.keep_alive_now(now, slot, PROBE_WINDUP, tx) {
            self.counters.window_probes += 1;
        }
    }
}
