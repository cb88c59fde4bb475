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
//! key, so scheduling, moving and cancelling a key are O(1) with no search. A 64-bit
//! occupancy bitmap per level records which slots are non-empty.
//!
//! [`Wheel::expire`] first hands out the due list; then, as long as the next occupied slot
//! starts at or before the target time, it moves `now` to that slot's first tick and empties
//! the slot: keys whose deadline is exactly `now` fire, the others *cascade*, re-inserted
//! relative to the new `now`, which puts them on a strictly lower level. The next occupied
//! slot is the first set bit of the lowest non-empty level (rotated to start at `now`'s slot),
//! found with one `trailing_zeros`: empty milliseconds are never walked. Every slot of a lower
//! level starts before every slot of a higher one, which is why the lowest level decides.
//!
//! # Complexity
//!
//! `schedule`, `cancel`, `deadline` and `next_expiry` are O(1). `expire` is O(levels) plus
//! O(1) per fired key and per cascade, and a key cascades at most 5 times, so its cost is
//! proportional to what fires (and what moves closer to firing), never to how many keys wait.
//!
//! # Range and clamping
//!
//! Deadlines are clamped into `now ..= now + 63 × 2^30` ms (about 2.1 years): the top level's
//! slot for `now` itself is never used, which leaves 63 slots of `2^30` ms ahead. A deadline
//! at or before `now` is stored as `now` and fires at the next `expire`; [`Wheel::deadline`]
//! reports the clamped value. [`Wheel::next_expiry`] is exact when the earliest deadline lies
//! on level 0 (in `now`'s 64 ms block) or is due, and otherwise the first tick of its slot,
//! a lower bound that the cascades of later `expire` calls sharpen.
//!
//! # Memory
//!
//! 16 bytes per key (links `next`/`prev` as `u32`, the deadline as `u64`), allocated once
//! in [`Wheel::new`], plus about 1.6 KiB per wheel for the slot heads and bitmaps. Nothing is
//! allocated afterwards except the growth of the caller's output vector.
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
//! wheel.schedule(7, 300); // moved
//! assert!(wheel.cancel(7));
//! fired.clear();
//! wheel.expire(1_000, &mut fired);
//! assert!(fired.is_empty() && wheel.is_empty());
//! ```

use std::fmt;

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
/// The `prev` of a key that is not scheduled.
const IDLE: u32 = u32::MAX - 1;

/// One key's links and deadline.
#[derive(Clone, Copy)]
struct Node {
    next: u32,
    prev: u32,
    deadline: u64,
}

const _: () = assert!(size_of::<Node>() == 16);

/// Which list a key is on: `None` for the due list, else `(level, slot)`.
type Place = Option<(usize, usize)>;

/// Hierarchical timing wheel with 1 ms ticks. Keys are dense indices `0..capacity`.
///
/// See the [module documentation](self) for the algorithm, its range and its costs.
pub struct Wheel {
    nodes: Box<[Node]>,
    heads: [[u32; SLOTS]; LEVELS],
    occupied: [u64; LEVELS],
    /// Head of the keys whose deadline is `now`.
    due: u32,
    now: u64,
    len: usize,
}

impl Wheel {
    /// A wheel for keys `0..capacity` whose current tick is `now_ms`. All of the wheel's
    /// memory is allocated here.
    ///
    /// # Panics
    ///
    /// If `capacity` exceeds `u32::MAX - 1`.
    pub fn new(capacity: usize, now_ms: u64) -> Wheel {
        assert!(
            capacity <= IDLE as usize,
            "wheel capacity {capacity} exceeds u32 keys"
        );
        let idle = Node {
            next: NIL,
            prev: IDLE,
            deadline: 0,
        };
        Wheel {
            nodes: vec![idle; capacity].into_boxed_slice(),
            heads: [[NIL; SLOTS]; LEVELS],
            occupied: [0; LEVELS],
            due: NIL,
            now: now_ms,
            len: 0,
        }
    }

    /// The number of keys, valid ones being `0..capacity`.
    pub fn capacity(&self) -> usize {
        self.nodes.len()
    }

    /// The number of keys currently scheduled.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no key is scheduled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The wheel's current tick in ms: the latest time passed to [`expire`](Self::expire)
    /// (or to [`new`](Self::new)).
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Schedules `key` to fire at `deadline_ms`, moving it if it is already scheduled. O(1).
    ///
    /// A deadline at or before [`now`](Self::now) becomes `now` and fires at the next
    /// [`expire`](Self::expire); one more than `63 × 2^30` ms (about 2.1 years) ahead is
    /// clamped to `now + 63 × 2^30`, the farthest tick the wheel holds. A `key` outside
    /// `0..capacity` is ignored.
    pub fn schedule(&mut self, key: u32, deadline_ms: u64) {
        let Some(&node) = self.nodes.get(key as usize) else {
            return;
        };
        let deadline = deadline_ms.clamp(self.now, self.now.saturating_add(MAX_DELAY));
        if node.prev == IDLE {
            self.len += 1;
        } else if self.place(node.deadline) == self.place(deadline) {
            // Same list: only the deadline changes (a level-0 slot has a single deadline).
            self.nodes[key as usize].deadline = deadline;
            return;
        } else {
            self.unlink(key);
        }
        self.nodes[key as usize].deadline = deadline;
        self.link(key);
    }

    /// Unschedules `key`. O(1). `false` if it was not scheduled (or is out of range).
    pub fn cancel(&mut self, key: u32) -> bool {
        if self.deadline(key).is_none() {
            return false;
        }
        self.unlink(key);
        self.len -= 1;
        true
    }

    /// The deadline of `key` as stored (that is, clamped), or `None` if not scheduled.
    pub fn deadline(&self, key: u32) -> Option<u64> {
        let node = self.nodes.get(key as usize)?;
        (node.prev != IDLE).then_some(node.deadline)
    }

    /// Advances the wheel to `now_ms` and appends to `out` every key whose deadline is at or
    /// before `now_ms`, in non-decreasing deadline order; those keys are no longer
    /// scheduled. Time never goes backwards: an earlier `now_ms` does nothing.
    ///
    /// The cost is proportional to the keys that fire plus the keys that cascade to a lower
    /// level, not to the time elapsed or the keys scheduled.
    pub fn expire(&mut self, now_ms: u64, out: &mut Vec<u32>) {
        if now_ms < self.now {
            return;
        }
        let mut key = std::mem::replace(&mut self.due, NIL);
        while key != NIL {
            let node = &mut self.nodes[key as usize];
            node.prev = IDLE;
            out.push(key);
            self.len -= 1;
            key = node.next;
        }
        while let Some((level, slot, start)) = self.next_slot() {
            if start > now_ms {
                break;
            }
            self.now = start;
            self.occupied[level] &= !(1 << slot);
            let mut key = std::mem::replace(&mut self.heads[level][slot], NIL);
            while key != NIL {
                let node = &mut self.nodes[key as usize];
                let next = node.next;
                if node.deadline == start {
                    node.prev = IDLE;
                    out.push(key);
                    self.len -= 1;
                } else {
                    self.link(key); // cascades to a lower level
                }
                key = next;
            }
        }
        self.now = now_ms;
    }

    /// A lower bound on the earliest deadline, exact when that deadline is due or within
    /// `now`'s 64 ms block (level 0); `None` when nothing is scheduled. A poller may sleep
    /// until then and call [`expire`](Self::expire), which also sharpens the next answer.
    pub fn next_expiry(&self) -> Option<u64> {
        if self.due != NIL {
            return Some(self.now);
        }
        self.next_slot().map(|(_, _, start)| start)
    }

    /// The bytes this wheel occupies: its node array (16 bytes per key) plus the wheel
    /// itself (slot heads and bitmaps).
    pub fn memory_bytes(&self) -> usize {
        size_of::<Self>() + size_of_val::<[Node]>(&self.nodes)
    }

    /// The list a key with this deadline belongs on, relative to the current tick.
    fn place(&self, deadline: u64) -> Place {
        if deadline <= self.now {
            return None;
        }
        let msb = 63 - (deadline ^ self.now).leading_zeros();
        let level = ((msb / BITS) as usize).min(LEVELS - 1);
        let slot = (deadline >> (BITS * level as u32)) as usize & (SLOTS - 1);
        Some((level, slot))
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

    fn head(&mut self, place: Place) -> &mut u32 {
        match place {
            None => &mut self.due,
            Some((level, slot)) => &mut self.heads[level][slot],
        }
    }

    /// Pushes `key` (scheduled, but on no list) onto the list of its deadline.
    fn link(&mut self, key: u32) {
        let place = self.place(self.nodes[key as usize].deadline);
        let next = std::mem::replace(self.head(place), key);
        if let Some((level, slot)) = place {
            self.occupied[level] |= 1 << slot;
        }
        if next != NIL {
            self.nodes[next as usize].prev = key;
        }
        let node = &mut self.nodes[key as usize];
        node.next = next;
        node.prev = NIL;
    }

    /// Takes `key` (scheduled) off its list and marks it idle.
    fn unlink(&mut self, key: u32) {
        let Node {
            next,
            prev,
            deadline,
        } = self.nodes[key as usize];
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        }
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        } else {
            let place = self.place(deadline);
            *self.head(place) = next;
            if let (NIL, Some((level, slot))) = (next, place) {
                self.occupied[level] &= !(1 << slot);
            }
        }
        self.nodes[key as usize].prev = IDLE;
    }
}

impl fmt::Debug for Wheel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wheel")
            .field("capacity", &self.capacity())
            .field("len", &self.len)
            .field("now", &self.now)
            .field("next_expiry", &self.next_expiry())
            .finish()
    }
}

#[cfg(test)]
mod tests;
