//! UMEM: the packet memory an AF_XDP socket shares with the kernel, and the book that
//! says where each of its frames is.
//!
//! The area is one [`Region`] (2 MiB hugepages when reserved, 4 KiB pages otherwise) cut
//! into `count` frames of `frame_size` bytes (2048 or 4096: a power of two, so the
//! frame of any address inside it is `addr & !(frame_size - 1)` — the kernel's "aligned"
//! UMEM mode, in which it may hand back addresses past the start of a frame, e.g. after
//! its 256-byte headroom in copy mode).
//!
//! # Where a frame is
//!
//! Every frame is in exactly one place, and the [`Book`] records which:
//!
//! ```text
//!            alloc                give_fill             take_rx
//!   Free ────────────► Held ───────────────► Fill ───────────────► Held (rx in hand)
//!    ▲                  │  ▲                                         │
//!    └──── free ────────┘  └────────── take_completion ◄── Tx ◄──────┘ give_tx
//! ```
//!
//! A `Held` frame is represented by a [`Frame`] token: not `Clone`, minted only by the
//! book, consumed when the frame goes back to the kernel or to the free list. Holding the
//! token is what makes it sound to look at the frame's bytes ([`Memory::bytes`],
//! [`Memory::bytes_mut`]): the kernel does not touch a frame that is in none of its rings.
//! Addresses the kernel returns are checked against the book, so a bad descriptor is
//! counted and ignored, never trusted (and never lets a frame be in two places).
//!
//! This module is the only one besides `xsk` with `unsafe` code: the raw view of the area.

use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

use c10m_stack::{HugePages, Region};

/// Packet memory shared with the kernel. See the [module docs](self).
pub(crate) struct Memory {
    // Owns the mapping, shared with each socket registered over it ([`Memory::share`]),
    // so the area lives as long as the last of them whatever the order they are dropped
    // in. Never accessed through `Deref` after construction, so the only way to the bytes
    // is `base`, which carries write provenance.
    region: Arc<Region<u8>>,
    base: NonNull<u8>,
    len: usize,
    frame_size: u32,
    hugepages: bool,
}

// SAFETY: `Memory` owns (a share of) its mapping, whose count is atomic and which is
// only ever dropped through it (munmap from any thread); the raw pointer is only
// dereferenced through methods that take a `Frame` token, which is itself owned by one
// thread at a time.
unsafe impl Send for Memory {}

impl fmt::Debug for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memory")
            .field("len", &self.len)
            .field("frame_size", &self.frame_size)
            .field("hugepages", &self.hugepages)
            .finish()
    }
}

impl Memory {
    /// Maps `count` frames of `frame_size` bytes, and the book that tracks them (all
    /// free). `None` if the memory cannot be had.
    pub(crate) fn new(count: u32, frame_size: u32, hugepages: HugePages) -> Option<(Memory, Book)> {
        assert!(frame_size.is_power_of_two() && frame_size >= 2048);
        let len = usize::try_from(count).ok()? * frame_size as usize;
        // Not written here: registering the area pins (and so faults in) every page, and
        // a byte-by-byte fill of 512 MiB (10M slots) took start-up from 1.3 s to 7.3 s.
        let mut region = Region::<u8>::new_zeroed(len, hugepages)?;
        let hugepages = matches!(region.backing(), c10m_stack::Backing::HugePages);
        let base = NonNull::new(region.as_mut_ptr())?;
        let memory = Memory {
            region: Arc::new(region),
            base,
            len,
            frame_size,
            hugepages,
        };
        Some((memory, Book::new(count, frame_size)))
    }

    /// The whole area, for registering it with the kernel.
    pub(crate) fn area(&self) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(self.base, self.len)
    }

    /// A share of the mapping, for a socket registered over the area: it keeps the area
    /// mapped while the kernel may still write into it, even if this `Memory` goes first.
    pub(crate) fn share(&self) -> Arc<Region<u8>> {
        self.region.clone()
    }

    /// Whether the area is on hugepages.
    pub(crate) fn on_hugepages(&self) -> bool {
        self.hugepages
    }

    /// The bytes of a held frame: its data range as the kernel delivered it, or as set by
    /// [`Frame::set_data`].
    pub(crate) fn bytes<'a>(&'a self, frame: &'a Frame) -> &'a [u8] {
        debug_assert!(frame.chunk + u64::from(frame.off + frame.len) <= self.len as u64);
        // SAFETY: `Book::take_rx`/`alloc` only mint a `Frame` for a frame that is in no
        // kernel ring, and checked `off + len <= frame_size` with the frame inside the
        // area; the token is unique, so nothing else writes these bytes while the
        // returned borrow (tied to the token's) lives.
        unsafe {
            let p = self
                .base
                .as_ptr()
                .add((frame.chunk + u64::from(frame.off)) as usize);
            std::slice::from_raw_parts(p, frame.len as usize)
        }
    }

    /// Writable bytes of a held frame, from its start (`len` bytes, at most the frame
    /// size); records `len` as the frame's data length.
    pub(crate) fn bytes_mut<'a>(&'a self, frame: &'a mut Frame, len: usize) -> &'a mut [u8] {
        let len = len.min(self.frame_size as usize);
        frame.off = 0;
        frame.len = len as u32;
        debug_assert!(frame.chunk + len as u64 <= self.len as u64);
        // SAFETY: as in `bytes`; the `&mut Frame` borrow makes this the only view of the
        // frame's bytes for the returned lifetime, and `len <= frame_size` keeps it inside
        // the frame.
        unsafe {
            let p = self.base.as_ptr().add(frame.chunk as usize);
            std::slice::from_raw_parts_mut(p, len)
        }
    }
}

/// A frame held by this process (neither free nor in a kernel ring). See the module docs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    chunk: u64,
    off: u32,
    len: u32,
}

impl Frame {
    /// The descriptor address and length the kernel expects for this frame's data.
    pub(crate) fn desc(&self) -> (u64, u32) {
        (self.chunk + u64::from(self.off), self.len)
    }
}

/// Where a frame is. `Held` frames have a live [`Frame`] token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Place {
    /// On the free list.
    Free,
    /// Held by the process: rx in hand, being built for tx, or staged for the tx ring.
    Held,
    /// In the fill ring or the rx ring (the kernel's until it comes back on rx).
    Fill,
    /// In the tx ring or the completion ring (the kernel's until it completes).
    Tx,
}

/// Why an address from the kernel was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadAddr {
    /// Outside the area, or data running past the end of its frame.
    OutOfRange,
    /// The frame was not where this ring's frames should be (a duplicate or stray).
    WrongPlace(Place),
}

/// Per-frame bookkeeping and the free list. See the module docs.
#[derive(Debug)]
pub(crate) struct Book {
    place: Box<[Place]>,
    free: Vec<u32>,
    counts: [u32; 4],
    shift: u32,
    frame_size: u32,
}

impl Book {
    fn new(count: u32, frame_size: u32) -> Book {
        Book {
            place: vec![Place::Free; count as usize].into_boxed_slice(),
            // Pop from the end: hand out low frames first.
            free: (0..count).rev().collect(),
            counts: [count, 0, 0, 0],
            shift: frame_size.trailing_zeros(),
            frame_size,
        }
    }

    /// Frames in the area.
    pub(crate) fn total(&self) -> u32 {
        self.place.len() as u32
    }

    /// Frames now in `place`.
    pub(crate) fn count(&self, place: Place) -> u32 {
        self.counts[place as usize]
    }

    fn set(&mut self, index: u32, to: Place) {
        let from = std::mem::replace(&mut self.place[index as usize], to);
        self.counts[from as usize] -= 1;
        self.counts[to as usize] += 1;
    }

    /// Takes a frame off the free list.
    pub(crate) fn alloc(&mut self) -> Option<Frame> {
        let index = self.free.pop()?;
        debug_assert_eq!(self.place[index as usize], Place::Free);
        self.set(index, Place::Held);
        Some(Frame {
            chunk: u64::from(index) << self.shift,
            off: 0,
            len: 0,
        })
    }

    /// Returns a held frame to the free list.
    pub(crate) fn free(&mut self, frame: Frame) {
        let index = (frame.chunk >> self.shift) as u32;
        self.set(index, Place::Free);
        self.free.push(index);
    }

    /// A held frame goes to the fill ring: returns the address to write there.
    pub(crate) fn give_fill(&mut self, frame: Frame) -> u64 {
        self.set((frame.chunk >> self.shift) as u32, Place::Fill);
        frame.chunk
    }

    /// A held frame goes to the tx ring: returns its descriptor.
    pub(crate) fn give_tx(&mut self, frame: Frame) -> (u64, u32) {
        self.set((frame.chunk >> self.shift) as u32, Place::Tx);
        frame.desc()
    }

    /// A frame the kernel must have had: checks `addr` (and `len` bytes from it) lies in
    /// one frame that is in `expect`, and takes it.
    fn take(&mut self, addr: u64, len: u32, expect: Place) -> Result<Frame, BadAddr> {
        let index = addr >> self.shift;
        let off = (addr & u64::from(self.frame_size - 1)) as u32;
        if index >= self.place.len() as u64
            || u64::from(off) + u64::from(len) > u64::from(self.frame_size)
        {
            return Err(BadAddr::OutOfRange);
        }
        let index = index as u32;
        match self.place[index as usize] {
            p if p == expect => {}
            p => return Err(BadAddr::WrongPlace(p)),
        }
        self.set(index, Place::Held);
        Ok(Frame {
            chunk: u64::from(index) << self.shift,
            off,
            len,
        })
    }

    /// A descriptor read from the rx ring.
    pub(crate) fn take_rx(&mut self, addr: u64, len: u32) -> Result<Frame, BadAddr> {
        self.take(addr, len, Place::Fill)
    }

    /// An address read from the completion ring.
    pub(crate) fn take_completion(&mut self, addr: u64) -> Result<Frame, BadAddr> {
        self.take(addr, 0, Place::Tx)
    }

    /// After the socket is closed the kernel holds no frame: every frame it had (in the
    /// fill, rx, tx or completion rings) is free again. Returns how many were in fill and
    /// tx places.
    pub(crate) fn reclaim_after_close(&mut self) -> (u32, u32) {
        let taken = (self.count(Place::Fill), self.count(Place::Tx));
        for index in 0..self.total() {
            if matches!(self.place[index as usize], Place::Fill | Place::Tx) {
                self.set(index, Place::Free);
                self.free.push(index);
            }
        }
        taken
    }
}

#[cfg(test)]
#[path = "umem/tests.rs"]
mod tests;
