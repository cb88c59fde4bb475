//! Bounded single-producer single-consumer lock-free rings: the control thread's commands
//! to a worker and the worker's replies back.
//!
//! # Algorithm
//!
//! Lamport's bounded SPSC queue (L. Lamport, "Specifying concurrent program modules",
//! TOPLAS 1983) with free-running indices and a cached copy of the other side's index
//! (as in crossbeam's `ArrayQueue` and s2n-quic's `spsc`):
//!
//! * `tail` is written only by the producer, `head` only by the consumer. Both count
//!   messages since the ring was made and wrap at `usize::MAX` (wrapping arithmetic);
//!   the slot of index `i` is `i & (capacity - 1)`, so the capacity is a power of two.
//! * `tail - head` (wrapping) is the number of messages in the ring, `0..=capacity`:
//!   equal indices mean empty, a difference of `capacity` means full. No slot is wasted.
//! * Push: if the ring looks full against the cached `head`, reload `head` (Acquire,
//!   pairing with the consumer's Release store, so the slot it read is free); still
//!   full → `Err(message)`, never a wait. Otherwise write the slot, then store
//!   `tail + 1` (Release: the slot's contents are visible before the index).
//! * Pop: symmetric, with the roles of `head` and `tail` exchanged.
//!
//! Each side keeps its own index in a plain field and the other's last seen value in a
//! cache, so an uncontended push or pop touches the shared cache lines only when the
//! cache says full (push) or empty (pop). `head` and `tail` live in separate
//! [`CachePadded`] lines so the two sides do not false-share.
//!
//! The index cells go through the small [`Index`] trait (the `sync` module of this
//! file): the rings use `AtomicUsize`; the exhaustive interleaving test in `tests.rs`
//! swaps in cells that yield to a deterministic scheduler at every access.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::Arc;

use crossbeam_utils::CachePadded;

pub(crate) use sync::Index;

/// The atomics of the ring, behind one trait so that a test can replace them.
pub(crate) mod sync {
    use std::sync::atomic::AtomicUsize;
    pub(crate) use std::sync::atomic::Ordering;

    /// An index cell shared by the two sides.
    pub(crate) trait Index: Send + Sync {
        /// A cell holding `v`.
        fn new(v: usize) -> Self;
        /// Atomic load.
        fn load(&self, order: Ordering) -> usize;
        /// Atomic store.
        fn store(&self, v: usize, order: Ordering);
        /// Called before each access to a slot; a scheduling point for tests.
        #[inline(always)]
        fn slot_access() {}
    }

    impl Index for AtomicUsize {
        #[inline(always)]
        fn new(v: usize) -> Self {
            AtomicUsize::new(v)
        }
        #[inline(always)]
        fn load(&self, order: Ordering) -> usize {
            AtomicUsize::load(self, order)
        }
        #[inline(always)]
        fn store(&self, v: usize, order: Ordering) {
            AtomicUsize::store(self, v, order)
        }
    }
}

use sync::Ordering::{Acquire, Relaxed, Release};

/// What the two handles share.
struct Shared<T, A: Index> {
    /// Next index to pop; written by the consumer.
    head: CachePadded<A>,
    /// Next index to push; written by the producer.
    tail: CachePadded<A>,
    /// `capacity - 1`.
    mask: usize,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
}

// SAFETY: a slot is accessed by one side at a time: the producer only writes slots in
// `tail..head + capacity`, the consumer only reads slots in `head..tail`, and each index
// is published with Release and read with Acquire. So sharing `Shared` between the two
// threads moves `T`s from one thread to the other, which needs `T: Send` only.
unsafe impl<T: Send, A: Index> Sync for Shared<T, A> {}
// SAFETY: as above; `Shared` owns `T`s, which may be dropped on either thread.
unsafe impl<T: Send, A: Index> Send for Shared<T, A> {}

impl<T, A: Index> Drop for Shared<T, A> {
    fn drop(&mut self) {
        let (mut head, tail) = (self.head.load(Relaxed), self.tail.load(Relaxed));
        while head != tail {
            let slot = &mut self.slots[head & self.mask];
            // SAFETY: slots in head..tail were written by a push and not yet popped; we
            // are the last owner (`&mut self`), so nobody else touches them.
            unsafe { slot.get_mut().assume_init_drop() };
            head = head.wrapping_add(1);
        }
    }
}

/// The sending side of a ring.
pub(crate) struct Producer<T, A: Index = std::sync::atomic::AtomicUsize> {
    shared: Arc<Shared<T, A>>,
    tail: usize,
    head_seen: usize,
}

/// The receiving side of a ring.
pub(crate) struct Consumer<T, A: Index = std::sync::atomic::AtomicUsize> {
    shared: Arc<Shared<T, A>>,
    head: usize,
    tail_seen: usize,
}

impl<T, A: Index> std::fmt::Debug for Producer<T, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ring::Producer(capacity {})", self.capacity())
    }
}

impl<T, A: Index> std::fmt::Debug for Consumer<T, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ring::Consumer(capacity {})", self.shared.mask + 1)
    }
}

/// A ring of `capacity` messages (rounded up to a power of two, at least 1).
pub(crate) fn new<T>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    with_start(capacity, 0)
}

/// A ring whose indices start at `start`: tests use a start near `usize::MAX` to cross
/// the wrap of the indices.
pub(crate) fn with_start<T, A: Index>(
    capacity: usize,
    start: usize,
) -> (Producer<T, A>, Consumer<T, A>) {
    let capacity = capacity.max(1).next_power_of_two();
    let slots = (0..capacity)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect();
    let shared = Arc::new(Shared {
        head: CachePadded::new(A::new(start)),
        tail: CachePadded::new(A::new(start)),
        mask: capacity - 1,
        slots,
    });
    let producer = Producer {
        shared: shared.clone(),
        tail: start,
        head_seen: start,
    };
    let consumer = Consumer {
        shared,
        head: start,
        tail_seen: start,
    };
    (producer, consumer)
}

impl<T, A: Index> Producer<T, A> {
    /// Appends `msg`, or gives it back if the ring is full. Never blocks.
    #[inline]
    pub(crate) fn push(&mut self, msg: T) -> Result<(), T> {
        let s = &*self.shared;
        let capacity = s.mask + 1;
        if self.tail.wrapping_sub(self.head_seen) == capacity {
            self.head_seen = s.head.load(Acquire);
            if self.tail.wrapping_sub(self.head_seen) == capacity {
                return Err(msg);
            }
        }
        let i = self.tail & s.mask;
        debug_assert!(i < s.slots.len());
        debug_assert!(self.tail.wrapping_sub(self.head_seen) < capacity);
        A::slot_access();
        // SAFETY: `i` is in bounds (masked); the slot is free: the consumer has moved
        // `head` past it (Acquire above or earlier), and it reads only below `tail`,
        // which we publish after this write.
        unsafe { (*s.slots.get_unchecked(i).get()).write(msg) };
        self.tail = self.tail.wrapping_add(1);
        s.tail.store(self.tail, Release);
        Ok(())
    }

    /// Messages in the ring now (a snapshot).
    #[cfg(any(test, feature = "management"))]
    pub(crate) fn len(&self) -> usize {
        self.tail.wrapping_sub(self.shared.head.load(Relaxed))
    }

    /// The ring's capacity.
    pub(crate) fn capacity(&self) -> usize {
        self.shared.mask + 1
    }
}

impl<T, A: Index> Consumer<T, A> {
    /// Takes the oldest message, if any. Never blocks.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<T> {
        let s = &*self.shared;
        if self.head == self.tail_seen {
            self.tail_seen = s.tail.load(Acquire);
            if self.head == self.tail_seen {
                return None;
            }
        }
        let i = self.head & s.mask;
        debug_assert!(i < s.slots.len());
        debug_assert!(self.tail_seen.wrapping_sub(self.head) <= s.mask + 1);
        A::slot_access();
        // SAFETY: `i` is in bounds (masked); the slot holds a message: the producer
        // published `tail` past it with Release after writing it, and we loaded `tail`
        // with Acquire. We move the message out and then free the slot.
        let msg = unsafe { (*s.slots.get_unchecked(i).get()).assume_init_read() };
        self.head = self.head.wrapping_add(1);
        s.head.store(self.head, Release);
        Some(msg)
    }

    /// Messages in the ring now (a snapshot).
    #[cfg(any(test, feature = "management"))]
    pub(crate) fn len(&self) -> usize {
        self.shared.tail.load(Relaxed).wrapping_sub(self.head)
    }
}

#[cfg(test)]
mod tests;
