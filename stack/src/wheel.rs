//! A hierarchical timing wheel with 1 ms ticks: the stack's timers for millions of keys.
//!
//! Every connection owns a dense key `0..capacity`; the wheel maps keys to deadlines in
//! milliseconds and hands back the keys whose deadline has passed, oldest first. It follows
//! the hierarchical wheels of Varghese & Lauck (1987), with the level chosen by XOR as in
//! tokio's timer.
//!
//! # Algorithm
//!
//! There are 6 levels of 64 slots. A slot of level `l` spans `64^l` ms, so level 0 resolves
//! single milliseconds and the whole wheel covers `64^6 = 2^36` ms. A deadline `d` later than
//! the current tick `now` goes to the level of the most significant bit in which `d` and `now`
//! differ: `level = msb(d ^ now) / 6` (capped at the top level), and within it to the slot
//! named by that level's 6 bits of `d`. All keys of a level-0 slot thus share one deadline,
//! while a slot of level `l > 0` holds the deadlines of one `64^l` ms span. Deadlines not
//! later than `now` go to a separate *due* list.
//!
//! Each slot is an intrusive doubly linked list threaded through a node array indexed by
//! key, so linking and unlinking a key are O(1) with no search. A 64-bit occupancy bitmap
//! per level records which slots are non-empty.
//!
//! A key's node records both the deadline the key *wants* (if it is scheduled at all) and
//! the list it is *linked* on, and the two may disagree: [`Wheel::cancel`] only clears the
//! wanted deadline, and [`Wheel::schedule`] leaves the node where it is when that list
//! comes due no later than the new deadline (a postponement, such as a retransmission
//! timer re-armed after each ACK), so in these common cases both touch the key's node
//! alone. A node moves, touching its neighbours, only when scheduled earlier than its list
//! comes due; a key on no list is pushed onto its list's head.
//!
//! [`Wheel::expire`] first empties the due list; then, as long as the next occupied slot
//! starts at or before the target time, it moves `now` to that slot's first tick and empties
//! the slot. Emptying a list fires the keys that want exactly `now`, relinks relative to
//! `now` the keys that want later (a *cascade*, which puts a key on a strictly lower level,
//! or a postponed key catching up) and drops the cancelled nodes. Every scheduled key is
//! linked on a list that comes due no later than it wants, so keys fire in deadline order,
//! once, and never early. The next occupied slot is the first set bit of the lowest
//! non-empty level (rotated to start at `now`'s slot), found with one `trailing_zeros`:
//! empty milliseconds are never walked. Every slot of a lower level starts before every
//! slot of a higher one, which is why the lowest level decides.
//!
//! # Complexity
//!
//! `schedule`, `cancel`, `deadline` and `next_expiry` are O(1). `expire` is O(levels) plus
//! O(1) per node on the lists that come due. Each node there fires, cascades (at most 5
//! times per deadline), catches up with a postponement or is dropped after a cancel, and
//! any number of postponements and cancels before its list comes due cost that list one
//! visit in all: amortized, O(1) per `schedule` or `cancel` call, never proportional to how
//! many keys wait or how much time passes.
//!
//! # Range and clamping
//!
//! Deadlines are clamped into `now ..= now + 63 × 2^30` ms (about 2.1 years): the top level's
//! slot for `now` itself is never used, which leaves 63 slots of `2^30` ms ahead. A deadline
//! at or before `now` is stored as `now` and fires at the next `expire`; [`Wheel::deadline`]
//! reports the clamped value. [`Wheel::next_expiry`] is a lower bound: `now` when the due
//! list holds a node, else the first tick of the next occupied slot. Cancelled and
//! postponed nodes still occupy their slots, so it may be early at any level; with none of
//! them, it is exact when the earliest deadline is due or on level 0 (in `now`'s 64 ms
//! block). The cascades and catch-ups of later `expire` calls sharpen it. It is `None`
//! exactly when no key is scheduled, even if cancelled nodes still wait on their lists.
//!
//! # Memory
//!
//! 16 bytes per key (a [`Node`]): the links `next`/`prev` as `u32`, and one `u64` packing
//! the wanted deadline modulo `2^36` (every deadline lies within `2^36` ms of `now`, which
//! restores it), a scheduled flag and the index of the list the node is linked on. The
//! nodes live where the caller wants them ([`Nodes`]): [`Wheel`] allocates an array of them
//! once, in [`Wheel::new`]; the stack keeps each in its connection's slot record, beside
//! the rest of what a segment touches. The wheel itself ([`Timers`]) adds about 1.6 KiB for
//! the list heads and bitmaps. Nothing is allocated afterwards except the growth of the
//! caller's output vector.
//!
//! # Example
//!
//! ```
//! use c10m_stack::wheel::Wheel;
//!
//! let mut wheel = Wheel::new(1024, 0);
//! wheel.schedule(7, 250); // say, a retransmission timeout
//! wheel.schedule(3, 40);
//! assert_eq!(wheel.next_expiry(), Some(40));
//!
//! let mut fired = Vec::new();
//! wheel.expire(100, &mut fired);
//! assert_eq!(fired, [3]);
//! assert_eq!(wheel.deadline(7), Some(250));
//!
//! wheel.schedule(7, 300); // postponed: only key 7's node changes
//! assert!(wheel.cancel(7));
//! fired.clear();
//! wheel.expire(1_000, &mut fired);
//! assert!(fired.is_empty() && wheel.is_empty());
//! ```

use std::{fmt, mem};

use crate::mem::{HugePages, Region};

/// Bits of the deadline that one level resolves.
const BITS: u32 = 6;
/// Slots per level.
const SLOTS: usize = 1 << BITS;
/// Number of levels.
const LEVELS: usize = 6;
/// The farthest a deadline may lie ahead of `now`: 63 slots of the top level.
const MAX_DELAY: u64 = (SLOTS as u64 - 1) << (BITS * (LEVELS as u32 - 1));
/// The null link.
const NIL: u32 = u32::MAX;
/// The list index of the due list; slot `s` of level `l` is list `l * SLOTS + s`.
const DUE: usize = LEVELS * SLOTS;
/// The list index of a node that is on no list.
const UNLINKED: usize = u16::MAX as usize;
/// Bits of a node's `state` holding its wanted deadline, modulo `2^WANT_BITS`.
const WANT_BITS: u32 = 36;
const WANT_MASK: u64 = (1 << WANT_BITS) - 1;
/// The bit of a node's `state` saying that the key is scheduled.
const SCHEDULED: u64 = 1 << WANT_BITS;
/// Where a node's `state` holds its list index.
const LIST_SHIFT: u32 = 48;
/// The `state` of a node that is neither scheduled nor linked.
const IDLE: u64 = (UNLINKED as u64) << LIST_SHIFT;

// Every wanted deadline lies in `now ..= now + MAX_DELAY`, a window narrower than the
// `2^WANT_BITS` residues, so `now` restores it; and the list indices fit in 16 bits.
const _: () = assert!(MAX_DELAY < WANT_MASK && DUE < UNLINKED);

/// One key's links and timer state: 16 bytes, kept by a [`Nodes`] store. Opaque: only the
/// wheel reads or changes it; a store starts every node as [`Node::IDLE`].
//
// `state` packs the deadline the key *wants* (modulo `2^36`, bits 0..36), whether it is
// scheduled (bit 36) and the list the node is *linked* on (bits 48..64): `DUE`, a slot, or
// `UNLINKED`. The two are independent: a cancelled or postponed key may stay on a list that
// comes due earlier than it wants.
#[derive(Clone, Copy, Debug)]
pub struct Node {
    next: u32,
    prev: u32,
    state: u64,
}

const _: () = assert!(size_of::<Node>() == 16);

impl Node {
    /// A node on no list, not scheduled: what every key's node starts as.
    pub const IDLE: Node = Node {
        next: NIL,
        prev: NIL,
        state: IDLE,
    };

    fn state(list: usize, scheduled: bool, wanted: u64) -> u64 {
        (list as u64) << LIST_SHIFT | u64::from(scheduled) << WANT_BITS | wanted & WANT_MASK
    }

    fn list(self) -> usize {
        (self.state >> LIST_SHIFT) as usize
    }

    fn scheduled(self) -> bool {
        self.state & SCHEDULED != 0
    }
}

/// Where [`Timers`] keep their nodes: one [`Node`] per key, starting as [`Node::IDLE`],
/// owned by the caller and changed by nobody else. The stack keeps each connection's node
/// in its slot record, so that a segment's timer work touches memory the segment touches
/// anyway; [`Wheel`] keeps them in an array of its own.
pub trait Nodes {
    /// The node of `key`; `None` outside the store's keys.
    fn node(&self, key: u32) -> Option<&Node>;
    /// The node of `key`, to change; `None` outside the store's keys.
    fn node_mut(&mut self, key: u32) -> Option<&mut Node>;
}

impl Nodes for [Node] {
    fn node(&self, key: u32) -> Option<&Node> {
        self.get(key as usize)
    }

    fn node_mut(&mut self, key: u32) -> Option<&mut Node> {
        self.get_mut(key as usize)
    }
}

/// The wheel without its nodes: list heads, bitmaps and the clock. Every call that
/// touches nodes takes the store, which must be the same one each time (see [`Nodes`]).
/// [`Wheel`] pairs the two for callers with no store of their own, and documents each
/// operation.
#[derive(Clone)]
pub struct Timers {
    /// The heads of the slot lists, level by level, then of the due list.
    heads: [u32; DUE + 1],
    occupied: [u64; LEVELS],
    now: u64,
    /// The number of scheduled keys (not of linked nodes).
    len: usize,
}

impl Timers {
    /// Timers whose current tick is `now_ms`, with no key scheduled.
    pub fn new(now_ms: u64) -> Timers {
        Timers {
            heads: [NIL; DUE + 1],
            occupied: [0; LEVELS],
            now: now_ms,
            len: 0,
        }
    }

    /// See [`Wheel::len`].
    pub fn len(&self) -> usize {
        self.len
    }

    /// See [`Wheel::is_empty`].
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// See [`Wheel::now`].
    pub fn now(&self) -> u64 {
        self.now
    }

    /// See [`Wheel::schedule`].
    pub fn schedule<N: Nodes + ?Sized>(&mut self, nodes: &mut N, key: u32, deadline_ms: u64) {
        let Some(&node) = nodes.node(key) else {
            return;
        };
        let deadline = deadline_ms.clamp(self.now, self.now.saturating_add(MAX_DELAY));
        if !node.scheduled() {
            self.len += 1;
        }
        let list = node.list();
        if list != UNLINKED {
            if self.visit(list) <= deadline {
                // Lazy: when its list comes due, the key fires or is relinked at `deadline`.
                if let Some(n) = nodes.node_mut(key) {
                    n.state = Node::state(list, true, deadline);
                }
                return;
            }
            self.unlink(nodes, node);
        }
        self.link(nodes, key, deadline);
    }

    /// See [`Wheel::cancel`].
    pub fn cancel<N: Nodes + ?Sized>(&mut self, nodes: &mut N, key: u32) -> bool {
        match nodes.node_mut(key) {
            Some(node) if node.scheduled() => {
                node.state &= !SCHEDULED;
                self.len -= 1;
                true
            }
            _ => false,
        }
    }

    /// See [`Wheel::deadline`].
    pub fn deadline<N: Nodes + ?Sized>(&self, nodes: &N, key: u32) -> Option<u64> {
        let &node = nodes.node(key)?;
        node.scheduled().then(|| self.wanted(node))
    }

    /// See [`Wheel::expire`].
    pub fn expire<N: Nodes + ?Sized>(&mut self, nodes: &mut N, now_ms: u64, out: &mut Vec<u32>) {
        if now_ms < self.now {
            return;
        }
        self.drain(nodes, DUE, out);
        while let Some((level, slot, start)) = self.next_slot() {
            if start > now_ms {
                break;
            }
            self.now = start;
            self.occupied[level] &= !(1 << slot);
            self.drain(nodes, level * SLOTS + slot, out);
        }
        self.now = now_ms;
    }

    /// See [`Wheel::next_expiry`].
    pub fn next_expiry(&self) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        if self.heads[DUE] != NIL {
            return Some(self.now);
        }
        self.next_slot().map(|(_, _, start)| start)
    }

    /// The wanted deadline of a scheduled node: the one value congruent to its stored bits
    /// in `now ..= now + MAX_DELAY`.
    fn wanted(&self, node: Node) -> u64 {
        self.now + (node.state.wrapping_sub(self.now) & WANT_MASK)
    }

    /// The list a key with this deadline belongs on, relative to the current tick.
    fn place(&self, deadline: u64) -> usize {
        if deadline <= self.now {
            return DUE;
        }
        let msb = 63 - (deadline ^ self.now).leading_zeros();
        let level = ((msb / BITS) as usize).min(LEVELS - 1);
        let slot = (deadline >> (BITS * level as u32)) as usize & (SLOTS - 1);
        level * SLOTS + slot
    }

    /// When a linked list will be emptied: `now` for the due list, else the slot's first
    /// tick, the next time it comes round after `now`'s own (never occupied) slot.
    fn visit(&self, list: usize) -> u64 {
        if list == DUE {
            return self.now;
        }
        let shift = BITS * (list / SLOTS) as u32;
        let ahead = (list as u64).wrapping_sub(self.now >> shift) & (SLOTS as u64 - 1);
        ((self.now >> shift) + ahead) << shift
    }

    /// The lowest non-empty level, its next occupied slot, and that slot's first tick.
    fn next_slot(&self) -> Option<(usize, usize, u64)> {
        let level = self.occupied.iter().position(|&bits| bits != 0)?;
        let shift = BITS * level as u32;
        let current = (self.now >> shift) as u32 & (SLOTS as u32 - 1);
        // Slots ahead of `now`'s own slot, which is never occupied: 1..=63.
        let ahead = self.occupied[level].rotate_right(current).trailing_zeros();
        debug_assert!(ahead > 0);
        let start = ((self.now >> shift) + u64::from(ahead)) << shift;
        Some((level, (current + ahead) as usize & (SLOTS - 1), start))
    }

    /// Empties a list that has come due at `now`, whose head the caller no longer counts
    /// as occupied: fires the keys that want `now`, relinks the ones that want later (a
    /// cascade or a postponement) and unlinks the cancelled ones.
    fn drain<N: Nodes + ?Sized>(&mut self, nodes: &mut N, list: usize, out: &mut Vec<u32>) {
        let mut key = mem::replace(&mut self.heads[list], NIL);
        while key != NIL {
            let Some(&node) = nodes.node(key) else {
                // Not a key of this store: the caller broke the one-store rule. Drop the
                // rest of the list rather than loop on garbage.
                debug_assert!(false, "wheel list names key {key} outside the store");
                return;
            };
            if !node.scheduled() {
                set_state(nodes, key, IDLE);
            } else if self.wanted(node) == self.now {
                set_state(nodes, key, IDLE);
                out.push(key);
                self.len -= 1;
            } else {
                self.link(nodes, key, self.wanted(node));
            }
            key = node.next;
        }
    }

    /// Pushes `key` (on no list) onto the list of `deadline`, scheduled to fire then.
    fn link<N: Nodes + ?Sized>(&mut self, nodes: &mut N, key: u32, deadline: u64) {
        let list = self.place(deadline);
        let next = mem::replace(&mut self.heads[list], key);
        if list != DUE {
            self.occupied[list / SLOTS] |= 1 << (list % SLOTS);
        }
        if let Some(n) = nodes.node_mut(next) {
            n.prev = key;
        }
        if let Some(n) = nodes.node_mut(key) {
            *n = Node {
                next,
                prev: NIL,
                state: Node::state(list, true, deadline),
            };
        }
    }

    /// Takes a linked node off its list, leaving the node itself stale for `link`.
    fn unlink<N: Nodes + ?Sized>(&mut self, nodes: &mut N, node: Node) {
        let Node { next, prev, .. } = node;
        if let Some(n) = nodes.node_mut(next) {
            n.prev = prev;
        }
        if let Some(n) = nodes.node_mut(prev) {
            n.next = next;
        } else {
            let list = node.list();
            self.heads[list] = next;
            if next == NIL && list != DUE {
                self.occupied[list / SLOTS] &= !(1 << (list % SLOTS));
            }
        }
    }
}

fn set_state<N: Nodes + ?Sized>(nodes: &mut N, key: u32, state: u64) {
    if let Some(n) = nodes.node_mut(key) {
        n.state = state;
    }
}

/// Hierarchical timing wheel with 1 ms ticks. Keys are dense indices `0..capacity`.
///
/// See the [module documentation](self) for the algorithm, its range and its costs.
pub struct Wheel {
    timers: Timers,
    nodes: Region<Node>,
}

impl Wheel {
    /// A wheel for keys `0..capacity` whose current tick is `now_ms`. All of the wheel's
    /// memory is mapped here (anonymous pages advised for transparent hugepages), and
    /// written as keys are first scheduled: the nodes up to the highest key scheduled so
    /// far, so that a wheel sized for millions of keys costs nothing at start-up when its
    /// keys are handed out from the bottom (as slots are).
    ///
    /// # Panics
    ///
    /// If `capacity` exceeds `u32::MAX` or the memory cannot be mapped.
    pub fn new(capacity: usize, now_ms: u64) -> Wheel {
        assert!(
            capacity <= NIL as usize,
            "wheel capacity {capacity} exceeds u32 keys"
        );
        let nodes = Region::with_capacity(capacity, HugePages::Off)
            .unwrap_or_else(|| panic!("cannot map a wheel for {capacity} keys"));
        Wheel {
            timers: Timers::new(now_ms),
            nodes,
        }
    }

    /// The number of keys, valid ones being `0..capacity`.
    pub fn capacity(&self) -> usize {
        self.nodes.capacity()
    }

    /// Has `warmer` fault the node array in ahead of the keys scheduled (see
    /// [`Warmer`](crate::Warmer)), so that a growing wheel's first touch of a page does
    /// not zero it on the thread that schedules.
    pub fn warm_with(&self, warmer: &crate::Warmer) {
        warmer.add_region(&self.nodes);
    }

    /// Faults the whole node array in now, for a process that wants its memory settled
    /// before it serves (the pages, not the nodes: those are still written as keys are
    /// first scheduled).
    pub fn fault_in(&self) {
        self.nodes.fault_in();
    }

    /// The number of keys currently scheduled.
    pub fn len(&self) -> usize {
        self.timers.len()
    }

    /// Whether no key is scheduled.
    pub fn is_empty(&self) -> bool {
        self.timers.is_empty()
    }

    /// The wheel's current tick in ms: the latest time passed to [`expire`](Self::expire)
    /// (or to [`new`](Self::new)).
    pub fn now(&self) -> u64 {
        self.timers.now()
    }

    /// Schedules `key` to fire at `deadline_ms`, moving it if it is already scheduled. O(1).
    ///
    /// A deadline at or before [`now`](Self::now) becomes `now` and fires at the next
    /// [`expire`](Self::expire); one more than `63 × 2^30` ms (about 2.1 years) ahead is
    /// clamped to `now + 63 × 2^30`, the farthest tick the wheel holds. A `key` outside
    /// `0..capacity` is ignored.
    ///
    /// If the key's node is still on a list that comes due no later than `deadline_ms`
    /// (a postponement, or a key cancelled and scheduled again), only the node changes.
    pub fn schedule(&mut self, key: u32, deadline_ms: u64) {
        // Nodes past the written ones are idle (never scheduled): the other calls treat
        // them as out of range, which is the same answer.
        while self.nodes.len() <= key as usize && self.nodes.push(Node::IDLE).is_ok() {}
        self.timers.schedule(&mut *self.nodes, key, deadline_ms);
    }

    /// Unschedules `key`. O(1), touching only the key's node: it stays on its list until
    /// that comes due. `false` if it was not scheduled (or is out of range).
    pub fn cancel(&mut self, key: u32) -> bool {
        self.timers.cancel(&mut *self.nodes, key)
    }

    /// The deadline of `key` as stored (that is, clamped), or `None` if not scheduled.
    pub fn deadline(&self, key: u32) -> Option<u64> {
        self.timers.deadline(&*self.nodes, key)
    }

    /// Advances the wheel to `now_ms` and appends to `out` every key whose deadline is at or
    /// before `now_ms`, in non-decreasing deadline order; those keys are no longer
    /// scheduled. Time never goes backwards: an earlier `now_ms` does nothing.
    ///
    /// The cost is proportional to the nodes on the lists that come due (keys that fire,
    /// cascade or were postponed, and cancelled nodes), not to the time elapsed or the keys
    /// scheduled.
    pub fn expire(&mut self, now_ms: u64, out: &mut Vec<u32>) {
        self.timers.expire(&mut *self.nodes, now_ms, out);
    }

    /// A lower bound on the earliest deadline, `None` when nothing is scheduled: `now` if
    /// the due list holds a node, else the first tick of the next occupied slot. It is early
    /// when that slot holds only cascading, postponed or cancelled nodes. A poller may sleep
    /// until then and call [`expire`](Self::expire), which also sharpens the next answer.
    pub fn next_expiry(&self) -> Option<u64> {
        self.timers.next_expiry()
    }

    /// The bytes this wheel occupies: its node array (16 bytes per key) plus the wheel
    /// itself (slot heads and bitmaps).
    pub fn memory_bytes(&self) -> usize {
        size_of::<Self>() + self.nodes.bytes()
    }
}

impl fmt::Debug for Wheel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wheel")
            .field("capacity", &self.capacity())
            .field("timers", &self.timers)
            .finish()
    }
}

impl fmt::Debug for Timers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timers")
            .field("len", &self.len)
            .field("now", &self.now)
            .field("next_expiry", &self.next_expiry())
            .finish()
    }
}

#[cfg(test)]
mod tests;
