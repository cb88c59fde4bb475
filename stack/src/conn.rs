//! Connection slots: a preallocated slab of smoltcp `SocketStorage`s, one per connection,
//! beside a dense array of small per-slot records ([`Meta`]).
//!
//! A slot index is a connection's identity inside the stack: the demux table maps 4-tuples
//! to it, the timing wheel uses it as its key, and the application holds it as a
//! [`ConnId`] together with a generation number, so a handle to a closed connection can
//! never reach the connection that reuses its slot. Allocation and release are O(1): a bump
//! index over never-used slots, then a free list threaded through [`Meta::link`].

use std::fmt;

use smoltcp::iface::SocketStorage;

use crate::mem::{HugePages, Strided};
use crate::table::FourTuple;
use crate::wheel::{Node, Nodes};

/// A handle to one connection of a [`Stack`](crate::Stack).
///
/// Stale handles (the connection closed, the slot was reused) are detected and refused
/// with [`ConnError::Closed`](crate::ConnError::Closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

impl ConnId {
    /// The slot index (dense, below `max_connections`): usable as an index into per-
    /// connection arrays of the application.
    pub fn slot(self) -> usize {
        self.slot as usize
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}.{}", self.slot, self.generation)
    }
}

pub(crate) const NIL: u32 = u32::MAX;

/// Per-slot flags.
pub(crate) mod flag {
    /// The slot holds a connection.
    pub(crate) const LIVE: u8 = 1;
    /// Queued for `poll_egress` in the current round.
    pub(crate) const DIRTY: u8 = 2;
    /// A send came up short: report Writable when space frees up.
    pub(crate) const WANT_WRITE: u8 = 4;
    /// In its listener's accept queue.
    pub(crate) const QUEUED: u8 = 8;
    /// The application holds a handle (accepted, or opened with connect).
    pub(crate) const VISIBLE: u8 = 16;
    /// The application was told the connection closed.
    pub(crate) const CLOSED_SEEN: u8 = 32;
    /// Counted as half-open against its listener.
    pub(crate) const HALF_OPEN: u8 = 64;
    /// A Readable event is queued and not yet taken.
    pub(crate) const READ_PENDING: u8 = 128;
}

/// The small record kept beside each socket: 56 bytes, every one used.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    /// The connection's 4-tuple (the demux key).
    pub(crate) key: FourTuple,
    /// Bumped each time the slot is released.
    pub(crate) generation: u32,
    /// While live: the buffer chunk index. While free: the next free slot.
    pub(crate) link: u32,
    /// Last time a segment arrived, in ms (wrapping), for the idle timeout. For a
    /// half-open connection: when its SYN arrived, for the half-open expiry.
    pub(crate) last_rx: u32,
    /// Last time queued send data made progress (the application queued it into an empty
    /// ring, or the peer acknowledged some), in 256 ms ticks (wrapping), for the send
    /// timeout. 16 bits suffice: it is checked at least once per timeout while data waits,
    /// and the timeout is capped at 2^15 ticks.
    pub(crate) progress: u16,
    /// The low 16 bits of RCV.NXT, the next sequence number expected from the peer, once
    /// the connection is synchronized: for RFC 5961's exact-match test on RSTs (see the
    /// `stack` module docs). smoltcp keeps the full number but does not expose it; the
    /// stack follows it from what it sees: the handshake, bytes added to the receive
    /// queue, and the peer's FIN.
    pub(crate) rcv_nxt: u16,
    /// For a connection born from a SYN cookie: smoltcp's initial sequence number minus
    /// the cookie, by which segments are translated (see `cookie`). 0 for all others (and
    /// for the one cookie-born connection in 2^32 that needs no translation).
    pub(crate) seq_delta: u32,
    /// Index of the option profile it was opened with (its listener's, or a connect's).
    pub(crate) profile: u16,
    /// Where the next received byte lands in the receive ring, and where the next sent
    /// byte lands in the transmit ring (0 when it was last seen empty: smoltcp rewinds an
    /// empty ring on the next write), as offsets into the buffers. Mirrored from the queue
    /// lengths the stack sees, never read back from smoltcp: they are prefetch hints, so
    /// that a segment's arrival loads the one or two cache lines of its connection's
    /// buffers that it and the application's answer will touch instead of all of them.
    /// Kept modulo 2^16 (exact for buffers up to 64 KiB).
    pub(crate) rx_at: u16,
    pub(crate) tx_at: u16,
    /// [`flag`] bits.
    pub(crate) flags: u8,
    /// The TCP state last observed ([`state_index`](crate::counters::state_index)).
    pub(crate) state: u8,
    /// The slot's timer on the stack's wheel. Never reset when the slot is reused: a
    /// cancelled node may still be linked on a wheel list, which only the wheel unlinks.
    pub(crate) timer: Node,
}

impl Meta {
    const FREE: Meta = Meta {
        key: FourTuple::NONE,
        generation: 0,
        link: NIL,
        last_rx: 0,
        progress: 0,
        rcv_nxt: 0,
        seq_delta: 0,
        profile: 0,
        rx_at: 0,
        tx_at: 0,
        flags: 0,
        state: 0,
        timer: Node::IDLE,
    };

    pub(crate) fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

/// One connection slot: smoltcp's socket storage and the stack's record (with the
/// connection's timer node) side by side, so that reaching a connection touches one run of
/// memory (480 bytes, 8 cache lines; 544 with CUBIC built in) rather than three arrays:
/// with millions of connections each distinct line is a cache miss and each distinct page
/// a likely TLB miss. The slab may keep each slot's socket buffers right after it
/// (`Config::buffers_in_slot`), which extends that run to the lines a segment's payload
/// and its answer touch.
pub(crate) struct Slot {
    pub(crate) storage: SocketStorage<'static>,
    pub(crate) meta: Meta,
}

impl Slot {
    /// A slot no connection holds.
    const FREE: Slot = Slot {
        storage: SocketStorage::EMPTY,
        meta: Meta::FREE,
    };
}

/// The slab. It drops before the buffer pools that the stack declares after its `Slab`
/// (its sockets borrow the pools' memory, or the bytes beside their slots; see `mem`).
pub(crate) struct Slab {
    pub(crate) slots: Strided<Slot>,
    free_head: u32,
    /// Slots handed out at least once: the first `bumped`. The slots made (`fill`) but
    /// never handed out come after them.
    bumped: u32,
    live: u32,
}

impl Slab {
    /// A slab with room for `capacity` slots and none made yet: a slot's memory is first
    /// written when [`alloc`](Self::alloc) hands it out, so start-up touches none of it
    /// (ten million slots are 4.8 GB) and the process grows as connections come, unless
    /// [`fill`](Self::fill) makes them all at once.
    ///
    /// Each slot is followed by `buffers` bytes of its own, for its socket's buffers
    /// (`Config::buffers_in_slot`; 0 for none).
    pub(crate) fn new(capacity: usize, buffers: usize, hugepages: HugePages) -> Option<Self> {
        let capacity = u32::try_from(capacity).ok().filter(|&c| c < NIL)?;
        Some(Slab {
            slots: Strided::with_capacity(capacity as usize, buffers, hugepages)?,
            free_head: NIL,
            bumped: 0,
            live: 0,
        })
    }

    /// Makes every slot now, so that allocating one never faults memory in (the stack's
    /// `Config::prefault`).
    pub(crate) fn fill(&mut self) {
        // The buffers beside the slots as well (where the kernel will not, the slots'
        // writes below fault in all but the pages a tail fills alone).
        self.slots.fault_in();
        while self.slots.push(Slot::FREE).is_ok() {}
    }

    /// Takes a free slot, marked live, with `key`. `None` when all are in use.
    pub(crate) fn alloc(&mut self, key: FourTuple) -> Option<u32> {
        let slot = if self.free_head != NIL {
            let slot = self.free_head;
            self.free_head = self.slots[slot as usize].meta.link;
            slot
        } else if (self.bumped as usize) < self.slots.capacity() {
            if self.bumped as usize == self.slots.len() {
                // Cannot fail: there is room for `capacity` slots.
                let _ = self.slots.push(Slot::FREE);
            }
            self.bumped += 1;
            self.bumped - 1
        } else {
            return None;
        };
        let m = &mut self.slots[slot as usize].meta;
        m.key = key;
        m.link = NIL;
        m.seq_delta = 0;
        m.rcv_nxt = 0;
        m.progress = 0;
        m.profile = 0;
        m.flags = flag::LIVE;
        m.state = 0;
        self.live += 1;
        Some(slot)
    }

    /// Returns `slot` to the free list; its socket must already be uninstalled.
    pub(crate) fn release(&mut self, slot: u32) {
        let m = &mut self.slots[slot as usize].meta;
        debug_assert!(m.has(flag::LIVE));
        m.generation = m.generation.wrapping_add(1);
        m.flags = 0;
        m.link = self.free_head;
        self.free_head = slot;
        self.live -= 1;
    }

    /// The live connection `id` names, if it still exists.
    pub(crate) fn check(&self, id: ConnId) -> Option<u32> {
        let m = &self.slots.get(id.slot as usize)?.meta;
        (m.generation == id.generation && m.has(flag::LIVE)).then_some(id.slot)
    }

    pub(crate) fn id(&self, slot: u32) -> ConnId {
        ConnId {
            slot,
            generation: self.slots[slot as usize].meta.generation,
        }
    }

    pub(crate) fn key(&self, slot: u32) -> FourTuple {
        self.slots[slot as usize].meta.key
    }

    pub(crate) fn live(&self) -> usize {
        self.live as usize
    }

    pub(crate) fn capacity(&self) -> usize {
        self.slots.capacity()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.slots.bytes()
    }

    /// Bytes of socket buffer beside each slot (0: none).
    pub(crate) fn buffers(&self) -> usize {
        self.slots.tail_len()
    }
}

/// The stack's timer nodes live in the slots (see [`Meta::timer`]).
impl Nodes for Slab {
    fn node(&self, key: u32) -> Option<&Node> {
        self.slots.get(key as usize).map(|s| &s.meta.timer)
    }

    fn node_mut(&mut self, key: u32) -> Option<&mut Node> {
        self.slots.get_mut(key as usize).map(|s| &mut s.meta.timer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_size() {
        // 56 bytes, all used; the timer node makes it 8-aligned. The `ipv6` feature's
        // 16-byte addresses make the 4-tuple 36 bytes, 24 more.
        let ipv6_key = if cfg!(feature = "ipv6") { 24 } else { 0 };
        assert_eq!(size_of::<Meta>(), 56 + ipv6_key);
        // smoltcp's socket carries its congestion controller's state inline, sized for the
        // largest one compiled in: Reno 40 bytes, CUBIC 104 (the `cubic` feature), and one
        // out-of-order range (16 bytes; see the workspace's Cargo.toml).
        // 480 = 7.5 lines: a slot spans 8 lines, or 9 when it starts past offset 32;
        // 544 = 8.5 lines: 9, or 10 past offset 32.
        // The `ipv6` feature widens every address smoltcp keeps to 17 bytes: 56 more.
        let cubic = if cfg!(feature = "cubic") { 64 } else { 0 };
        let ipv6 = if cfg!(feature = "ipv6") {
            56 + ipv6_key
        } else {
            0
        };
        assert_eq!(size_of::<Slot>(), 480 + cubic + ipv6);
    }

    #[test]
    fn filling_a_slab_faults_in_the_buffers_beside_its_slots() {
        // Tails of two pages each: most of their pages hold no slot byte at all.
        let (n, buffers) = (64, 8192);
        let mut slab = Slab::new(n, buffers, HugePages::Off).unwrap();
        slab.fill();
        let at = std::ptr::from_ref(&slab.slots[0]).cast::<u8>();
        let bytes = slab.bytes();
        assert_eq!(
            crate::mem::tests::resident(at, bytes),
            bytes / 4096,
            "every page, the tails' too"
        );
    }

    #[test]
    fn stale_ids_are_refused_after_reuse() {
        let mut slab = Slab::new(2, 0, HugePages::Off).unwrap();
        let a = slab.alloc(FourTuple::default()).unwrap();
        let b = slab.alloc(FourTuple::default()).unwrap();
        assert!(slab.alloc(FourTuple::default()).is_none());
        let old = slab.id(a);
        slab.release(a);
        assert_eq!(slab.check(old), None);
        let again = slab.alloc(FourTuple::default()).unwrap();
        assert_eq!(again, a);
        assert_eq!(slab.check(old), None, "the old generation stays dead");
        assert_eq!(slab.check(slab.id(again)), Some(a));
        assert_eq!(slab.live(), 2);
        let _ = b;
    }

    #[test]
    fn slots_are_made_as_they_are_first_handed_out() {
        let mut slab = Slab::new(1_000_000, 0, HugePages::Off).unwrap();
        assert_eq!((slab.slots.len(), slab.capacity()), (0, 1_000_000));
        let never = ConnId {
            slot: 999_999,
            generation: 0,
        };
        assert_eq!(
            slab.check(never),
            None,
            "a slot not made yet is no connection"
        );
        let a = slab.alloc(FourTuple::default()).unwrap();
        let b = slab.alloc(FourTuple::default()).unwrap();
        assert_eq!((a, b, slab.slots.len()), (0, 1, 2));
        slab.release(a);
        assert_eq!(
            slab.alloc(FourTuple::default()),
            Some(a),
            "the free list first"
        );
        assert_eq!(slab.slots.len(), 2);
        slab.fill();
        assert_eq!(slab.slots.len(), 1_000_000);
        assert_eq!(slab.alloc(FourTuple::default()), Some(2));
        assert_eq!(slab.live(), 3);
    }
}
