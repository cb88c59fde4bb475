//! A [`Port`]: one AF_XDP socket, its UMEM and frame book, seen as the stack's device.
//!
//! Receive hands the stack each frame in place in UMEM (no copy) together with a [`Tx`],
//! the stack's [`TxQueue`], which lends it a free UMEM frame to build each outgoing frame
//! in (no copy either). Built frames are staged and go to the tx ring in one batch per
//! [`Port::flush`]; a tx ring that is full leaves them staged (counted), and when the
//! stage or the free list is exhausted `has_room` says no, so the stack keeps its data
//! for a later round. Nothing blocks.
//!
//! Frame flow per loop: `receive` (rx ring → stack → free list) → `refill` (free list →
//! fill ring) → the stack builds frames (free list → stage) → `flush` (stage → tx ring,
//! kick) → `reap` (completion ring → free list).

use std::collections::VecDeque;
use std::io;
use std::os::fd::BorrowedFd;

use c10m_stack::{HugePages, MAX_FRAME, TxQueue};

use crate::umem::{Book, Frame, Memory, Place};
use crate::xsk::{KernelStats, Rings, Socket, ZeroCopy};

/// Most frames [`Port::receive_batch`] hands over at once.
pub const MAX_RX_BATCH: usize = 64;

/// How a UMEM's frames are shared between the rings.
///
/// A frame the kernel needs to receive into must be on the fill ring *before* the frame
/// arrives: when the fill ring runs empty, the kernel drops what comes
/// (`rx_fill_ring_empty`) and TCP peers retransmit, a second or more later. So:
/// - the kernel may hold up to `fill_target` frames, the fill ring's and the rx ring's
///   worth, so that frames waiting unread on the rx ring do not take the fill ring's
///   share (with one ring's worth, a loop that fell behind by one rx ring left the fill
///   ring empty);
/// - transmission never takes the frames that topping the fill ring up needs
///   ([`Tx`] keeps them in reserve), however much it has to send;
/// - the rings grow with the UMEM: a quarter of it each above 8,192 frames (at least
///   half of it, at most 4,096 entries, below).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    pub(crate) rings: Rings,
    pub(crate) fill_target: u32,
    pub(crate) stage_cap: usize,
}

impl Layout {
    /// The layout of a UMEM of `frames` frames (a power of two).
    pub(crate) fn for_frames(frames: u32) -> Layout {
        let ring = (frames / 2).min(4096).max(frames / 4);
        Layout {
            rings: Rings {
                fill: ring,
                completion: ring,
                rx: ring,
                tx: ring,
            },
            fill_target: (2 * ring).min(frames / 2).max(ring),
            stage_cap: ring as usize,
        }
    }
}

/// What one port counted.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct PortStats {
    /// Frames read from the rx ring.
    pub rx_frames: u64,
    /// Rx descriptors the frame book refused (out of range or a frame we did not give).
    pub rx_bad_desc: u64,
    /// Frames put on the tx ring.
    pub tx_frames: u64,
    /// Tx frames the kernel completed.
    pub tx_completed: u64,
    /// Completion addresses the frame book refused.
    pub tx_bad_completion: u64,
    /// Frames the stack built with no UMEM frame to put them in (dropped).
    pub tx_no_frame: u64,
    /// Flushes that left frames staged because the tx ring was full.
    pub tx_ring_full: u64,
    /// `sendto` kicks.
    pub kicks: u64,
    /// Kicks that failed with a non-transient error.
    pub kick_errors: u64,
    /// Fill ring wake-ups.
    pub fill_wakeups: u64,
}

/// Where every UMEM frame was at shutdown. `free == total` means no frame leaked.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct FrameReport {
    /// Frames in the UMEM.
    pub total: u32,
    /// Frames on the free list after the socket closed.
    pub free: u32,
    /// Frames the kernel still had in the fill/rx rings when the socket closed.
    pub in_fill_at_close: u32,
    /// Frames still in the tx/completion rings when the socket closed (tx not finished).
    pub in_tx_at_close: u32,
    /// Frames held by the process at close (should be 0).
    pub held_at_close: u32,
}

/// One queue's socket, memory and book: the stack's device (rx frames read in place, tx
/// frames built in place, no frame leaks; the `port` module's docs in the source say how).
///
/// Public for raw-rate tools (`c10m-bench xsk`): [`Port::open`], then `receive` and
/// `refill` to receive, `tx` (a [`TxQueue`]), `flush` and `reap` to transmit. Not `Send`:
/// open it on the thread that uses it.
pub struct Port {
    socket: Socket,
    mem: Memory,
    book: Book,
    staged: VecDeque<Frame>,
    stage_cap: usize,
    fill_target: u32,
    frame_size: usize,
    scratch: Vec<u8>,
    /// The frames of the batch [`Port::receive_batch`] is handing over.
    batch: Vec<Frame>,
    pub(crate) stats: PortStats,
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port")
            .field("socket", &self.socket)
            .field("mem", &self.mem)
            .finish_non_exhaustive()
    }
}

impl Port {
    /// Wraps an open socket over `mem`, whose rings follow `layout`.
    pub(crate) fn new(
        socket: Socket,
        mem: Memory,
        book: Book,
        frame_size: u32,
        layout: Layout,
    ) -> Port {
        let mut port = Port {
            socket,
            mem,
            book,
            staged: VecDeque::with_capacity(layout.stage_cap),
            stage_cap: layout.stage_cap,
            fill_target: layout.fill_target,
            frame_size: frame_size as usize,
            scratch: vec![0; MAX_FRAME.max(frame_size as usize) + 1],
            batch: Vec::with_capacity(MAX_RX_BATCH),
            stats: PortStats::default(),
        };
        port.refill();
        port
    }

    /// Opens a socket on `iface` queue `queue` over a fresh UMEM of `frames` frames of
    /// 2048 bytes (a power of two, at least 64), its rings sized from it (see `Layout` in
    /// the source), and fills the fill ring.
    pub fn open(iface: &str, queue: u32, frames: u32, zero_copy: ZeroCopy) -> io::Result<Port> {
        const FRAME: u32 = 2048;
        if !frames.is_power_of_two() || frames < 64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "UMEM frames must be a power of two, at least 64",
            ));
        }
        let (mem, book) = Memory::new(frames, FRAME, HugePages::Auto)
            .ok_or_else(|| io::Error::new(io::ErrorKind::OutOfMemory, "could not map the UMEM"))?;
        let layout = Layout::for_frames(frames);
        let socket = Socket::open(iface, queue, &mem, FRAME, layout.rings, zero_copy)?;
        Ok(Port::new(socket, mem, book, FRAME, layout))
    }

    /// The socket (for the XSKMAP, and the mode).
    pub(crate) fn socket(&self) -> &Socket {
        &self.socket
    }

    /// The socket's descriptor, for the XSKMAP.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.socket.fd()
    }

    /// Whether the kernel runs the socket in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        self.socket.zero_copy()
    }

    /// The port's counters so far.
    pub fn stats(&self) -> PortStats {
        self.stats
    }

    /// Whether the UMEM is on hugepages.
    pub(crate) fn on_hugepages(&self) -> bool {
        self.mem.on_hugepages()
    }

    /// Reads up to `max` frames and calls `f(frame, tx)` for each, then recycles them
    /// (in batches of at most [`MAX_RX_BATCH`]). Returns how many were read.
    pub fn receive(&mut self, max: u32, mut f: impl FnMut(&[u8], &mut Tx<'_>)) -> u32 {
        let mut n = 0;
        while n < max {
            let want = (max - n).min(MAX_RX_BATCH as u32);
            let got = self.receive_batch(want, |frames, tx| {
                for frame in frames {
                    f(frame, tx);
                }
            });
            n += got;
            if got < want {
                break;
            }
        }
        n
    }

    /// Reads up to `max` frames (at most [`MAX_RX_BATCH`]) and hands them to `f` all at
    /// once (for `Stack::ingress_batch`, which prefetches each frame's connection while it
    /// works on earlier ones), then recycles them. Returns how many were read.
    pub fn receive_batch(&mut self, max: u32, f: impl FnOnce(&[&[u8]], &mut Tx<'_>)) -> u32 {
        let Port {
            socket,
            mem,
            book,
            staged,
            stage_cap,
            fill_target,
            frame_size,
            scratch,
            stats,
            batch,
        } = self;
        let mem: &Memory = mem;
        batch.clear();
        let n = socket.receive(max.min(MAX_RX_BATCH as u32), |addr, len| {
            match book.take_rx(addr, len) {
                Ok(frame) => {
                    stats.rx_frames += 1;
                    batch.push(frame);
                }
                Err(why) => {
                    stats.rx_bad_desc += 1;
                    tracing::trace!("rx descriptor {addr:#x}+{len} refused: {why:?}");
                }
            }
        });
        if !batch.is_empty() {
            let mut views: [&[u8]; MAX_RX_BATCH] = [&[]; MAX_RX_BATCH];
            for (view, frame) in views.iter_mut().zip(batch.iter()) {
                *view = mem.bytes(frame);
            }
            let mut tx = Tx {
                mem,
                book,
                staged,
                stage_cap: *stage_cap,
                fill_target: *fill_target,
                frame_size: *frame_size,
                scratch,
                stats,
            };
            f(&views[..batch.len()], &mut tx);
        }
        for frame in batch.drain(..) {
            book.free(frame);
        }
        n
    }

    /// The stack's transmit queue, for `Stack::poll` and replayed frames.
    pub fn tx(&mut self) -> Tx<'_> {
        Tx {
            mem: &self.mem,
            book: &mut self.book,
            staged: &mut self.staged,
            stage_cap: self.stage_cap,
            fill_target: self.fill_target,
            frame_size: self.frame_size,
            scratch: &mut self.scratch,
            stats: &mut self.stats,
        }
    }

    /// Tops the fill ring up to its target from the free list; wakes the driver if it
    /// asks. Returns how many frames went in.
    pub fn refill(&mut self) -> u32 {
        let want = self
            .fill_target
            .saturating_sub(self.book.count(Place::Fill));
        let want = want.min(self.book.count(Place::Free));
        if want == 0 {
            return 0;
        }
        let book = &mut self.book;
        let n = self
            .socket
            .fill(want, || book.alloc().map(|f| book.give_fill(f)));
        if self.socket.fill_needs_wakeup() {
            self.stats.fill_wakeups += 1;
            self.socket.wake_fill();
        }
        n
    }

    /// Moves staged frames to the tx ring and kicks the kernel if it needs it. Returns
    /// how many frames went on the ring.
    pub fn flush(&mut self) -> u32 {
        let mut n = 0;
        if !self.staged.is_empty() {
            let (book, staged) = (&mut self.book, &mut self.staged);
            n = self.socket.transmit(staged.len() as u32, || {
                staged.pop_front().map(|f| book.give_tx(f))
            });
            self.stats.tx_frames += u64::from(n);
            if !self.staged.is_empty() {
                self.stats.tx_ring_full += 1;
            }
        }
        if (n > 0 || self.book.count(Place::Tx) > 0) && self.socket.tx_needs_wakeup() {
            self.stats.kicks += 1;
            if let Err(e) = self.socket.kick_tx() {
                self.stats.kick_errors += 1;
                tracing::debug!("tx kick failed: {e}");
            }
        }
        n
    }

    /// Takes completed tx frames back to the free list. Returns how many.
    pub fn reap(&mut self) -> u32 {
        if self.book.count(Place::Tx) == 0 {
            return 0;
        }
        let Port {
            socket,
            book,
            stats,
            ..
        } = self;
        let n = socket.complete(u32::MAX, |addr| match book.take_completion(addr) {
            Ok(frame) => book.free(frame),
            Err(_) => stats.tx_bad_completion += 1,
        });
        stats.tx_completed += u64::from(n);
        n
    }

    /// [`flush`](Self::flush) and [`reap`](Self::reap), then again up to `rounds` times
    /// while frames are still in flight and the last round moved some: copy mode
    /// transmits at most 32 frames per kick (the kernel's `TX_BATCH_SIZE`), so one kick
    /// per loop would cap a busy loop at one such batch per round; a zero-copy NIC
    /// completes later, and a round that moved nothing stops the spinning. Returns
    /// (frames put on the ring, frames completed).
    pub fn push(&mut self, rounds: u32) -> (u32, u32) {
        let mut sent = self.flush();
        let mut done = self.reap();
        for _ in 0..rounds {
            if self.tx_in_flight() == 0 {
                break;
            }
            let (s, d) = (self.flush(), self.reap());
            sent += s;
            done += d;
            if s == 0 && d == 0 {
                break;
            }
        }
        (sent, done)
    }

    /// Frames in flight to the kernel for transmission (staged, on the tx ring or not yet
    /// reaped).
    pub fn tx_in_flight(&self) -> u32 {
        self.staged.len() as u32 + self.book.count(Place::Tx)
    }

    /// Sleeps on the socket for at most `timeout_ms`.
    pub fn wait(&self, timeout_ms: i32) {
        self.socket.wait(timeout_ms);
    }

    /// The kernel's counters for the socket.
    pub fn kernel_stats(&self) -> KernelStats {
        self.socket.kernel_stats()
    }

    /// Finishes transmission (for at most `patience`), drops what is still received,
    /// closes the socket and accounts for every frame.
    pub fn close(mut self, patience: std::time::Duration) -> (PortStats, FrameReport) {
        let deadline = std::time::Instant::now() + patience;
        while self.tx_in_flight() > 0 && std::time::Instant::now() < deadline {
            self.flush();
            self.reap();
            if self.tx_in_flight() > 0 {
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
        }
        while self.receive(u32::MAX, |_, _| {}) > 0 {}
        for frame in std::mem::take(&mut self.staged) {
            self.book.free(frame);
        }
        let Port {
            socket,
            mem,
            mut book,
            stats,
            ..
        } = self;
        let held_at_close = book.count(Place::Held);
        drop(socket);
        let (in_fill_at_close, in_tx_at_close) = book.reclaim_after_close();
        let report = FrameReport {
            total: book.total(),
            free: book.count(Place::Free),
            in_fill_at_close,
            in_tx_at_close,
            held_at_close,
        };
        drop(mem);
        (stats, report)
    }
}

/// The stack's transmit queue over a port: builds frames in free UMEM frames.
pub struct Tx<'a> {
    mem: &'a Memory,
    book: &'a mut Book,
    staged: &'a mut VecDeque<Frame>,
    stage_cap: usize,
    fill_target: u32,
    frame_size: usize,
    scratch: &'a mut Vec<u8>,
    stats: &'a mut PortStats,
}

impl std::fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx")
            .field("staged", &self.staged.len())
            .finish_non_exhaustive()
    }
}

impl Tx<'_> {
    /// Free frames transmission may take: those the fill ring does not need to get back
    /// to its target.
    fn spare(&self) -> u32 {
        let want = self
            .fill_target
            .saturating_sub(self.book.count(Place::Fill));
        self.book.count(Place::Free).saturating_sub(want)
    }
}

impl TxQueue for Tx<'_> {
    fn has_room(&self) -> bool {
        self.staged.len() < self.stage_cap && self.spare() > 0
    }

    fn transmit<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        if len <= self.frame_size
            && self.staged.len() < self.stage_cap
            && self.spare() > 0
            && let Some(mut frame) = self.book.alloc()
        {
            let r = fill(self.mem.bytes_mut(&mut frame, len));
            self.staged.push_back(frame);
            return r;
        }
        // The stack committed to a frame we cannot carry: build it on scratch and drop it.
        self.stats.tx_no_frame += 1;
        if self.scratch.len() < len {
            self.scratch.resize(len, 0);
        }
        fill(&mut self.scratch[..len])
    }
}

#[cfg(test)]
mod tests {
    use super::Layout;

    #[test]
    fn the_kernel_may_hold_the_fill_and_the_rx_ring_worth() {
        for (frames, ring, target) in [
            (64, 32, 32),
            (4096, 2048, 2048),
            (16384, 4096, 8192),
            (32768, 8192, 16384),
            (65536, 16384, 32768),
        ] {
            let l = Layout::for_frames(frames);
            assert_eq!(
                (l.rings.fill, l.rings.rx, l.fill_target),
                (ring, ring, target)
            );
            assert_eq!((l.rings.tx, l.stage_cap), (ring, ring as usize));
            assert!(l.fill_target <= frames / 2, "{frames}: half is left for tx");
        }
    }
}
