//! The per-core driver: one run-to-completion loop over a [`Port`] and a [`Stack`], with a
//! handler for what runs on top. The `c10m` workers turn it, and so do the project's
//! own load generators (`c10m-bench rps` and `cps`), so a change to the loop or to the
//! idle policy reaches both.
//!
//! One [`Driver::turn`]:
//!
//! ```text
//! rx batches (up to `rx_rounds` × `rx_batch`) → handler.frames → stack.ingress → frame back
//! refill the fill ring
//! handler.handle: the stack's events, the handler's own work (and frames from elsewhere)
//! stack.poll(now, tx)  — transmits what the handler wrote, runs timers
//! flush: staged frames → tx ring, kick with sendto if the kernel needs it
//! reap completions → free list (flush and reap again while frames wait, up to twice
//!       a turn's rx in frames: every frame read may ask for a reply)
//! idle? spin, or after SPIN_ROUNDS empty turns sleep in poll(2) on the socket until a
//!       frame comes or the stack's or the handler's next timer (at most MAX_SLEEP);
//!       never while the stack holds an event the handler has not taken
//! ```

use std::time::Duration;

use c10m_stack::{Instant, Stack};

use crate::error::ParseError;
use crate::port::Port;

/// Empty turns before an adaptive loop sleeps.
const SPIN_ROUNDS: u32 = 256;
/// Longest sleep: bounds how late a worker notices its stop flag.
const MAX_SLEEP: Duration = Duration::from_millis(10);
/// Extra flush/kick/reap rounds per turn while transmissions are in flight
/// ([`Port::push`]; copy mode sends at most [`KICK_BATCH`] frames a kick): the least a
/// [`Driver`] allows itself, and what the flood generator uses.
pub const KICK_ROUNDS: u32 = 8;
/// Frames copy-mode AF_XDP transmits per kick (the kernel's `TX_BATCH_SIZE`).
pub const KICK_BATCH: u32 = 32;

/// What a worker does when there is no work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Idle {
    /// Spin a while, then sleep in `poll(2)` until a frame or a timer is due.
    #[default]
    Adaptive,
    /// Never sleep: lowest latency, one core at 100%.
    Spin,
}

impl std::str::FromStr for Idle {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "adaptive" => Ok(Idle::Adaptive),
            "spin" => Ok(Idle::Spin),
            _ => Err(ParseError::Idle(s.to_owned())),
        }
    }
}

/// The idle policy of a busy-polling loop over a [`Port`]: after each round, say whether
/// it did any work; after 256 empty rounds an [`Idle::Adaptive`] loop sleeps in `poll(2)`
/// on the socket (the kernel wakes it when a frame arrives, as with need_wakeup) until
/// the next deadline, at most 10 ms, or 100 µs while
/// transmissions are in flight (their completions do not wake `poll(2)`).
///
/// [`Driver`] uses it; so does any other loop over a port that must idle exactly as the
/// workers do (`c10m-bench reflect`, which has no stack).
#[derive(Debug, Clone, Copy)]
pub struct Idler {
    idle: Idle,
    empty: u32,
}

impl Idler {
    /// A policy with no empty rounds yet.
    pub fn new(idle: Idle) -> Idler {
        Idler { idle, empty: 0 }
    }

    /// Ends a round: `work` says whether it received, sent or completed anything;
    /// `due_in` tells (asked only before a sleep, so a loop with nothing to do reads no
    /// clock for it) how soon the loop next has something to do on its own (a timer).
    /// Spins, or sleeps on `port`; returns whether it slept.
    pub fn rest(
        &mut self,
        work: bool,
        port: &Port,
        due_in: impl FnOnce() -> Option<Duration>,
    ) -> bool {
        if work {
            self.empty = 0;
            return false;
        }
        self.empty = self.empty.saturating_add(1);
        if self.idle == Idle::Spin || self.empty < SPIN_ROUNDS {
            std::hint::spin_loop();
            return false;
        }
        let mut sleep = MAX_SLEEP;
        if port.tx_in_flight() > 0 {
            sleep = Duration::from_micros(100);
        }
        if let Some(until) = due_in() {
            sleep = sleep.min(until);
        }
        let ms = sleep.as_millis() as i32;
        if ms == 0 {
            return false;
        }
        port.wait(ms);
        true
    }
}

/// What runs on a [`Driver`]'s core between the frames' arrival and the stack's poll.
pub trait Handler {
    /// Each received batch, before the stack takes it (e.g. to copy ARP frames).
    fn frames(&mut self, _frames: &[&[u8]]) {}

    /// After ingress, before the poll: take the stack's events and do the handler's own
    /// work; `port` is there for frames from elsewhere to ingest, `rx` is how many frames
    /// this turn received. Returns whether it did anything.
    fn handle(&mut self, stack: &mut Stack, port: &mut Port, now: Instant, rx: u32) -> bool;

    /// The next instant the handler has something to do on its own (its timers).
    fn poll_at(&self) -> Option<Instant> {
        None
    }
}

/// What one [`Driver::turn`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Turn {
    /// Frames received.
    pub rx: u32,
    /// Whether it received, sent, completed or handled anything.
    pub work: bool,
    /// Whether it slept at the end.
    pub slept: bool,
}

/// One core's loop over a port and a stack; see the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct Driver {
    idler: Idler,
    rx_rounds: u32,
    rx_batch: u32,
    kick_rounds: u32,
}

impl Driver {
    /// A driver that reads up to `rx_rounds` batches of `rx_batch` frames a turn (fewer
    /// when a batch comes back short) and idles by `idle`.
    ///
    /// It kicks the transmitter until twice a full turn's rx has gone out, or nothing
    /// waits, or a kick moves nothing. With a fixed eight kicks (256 frames) a turn
    /// against 1,024 frames read, a loop that answered every frame (an ACK for each
    /// request) fell behind on transmission, its frames ran out, and the replies it
    /// built during ingress were dropped (a 100,000/s connection ramp lost 1.5 million).
    pub fn new(idle: Idle, rx_rounds: u32, rx_batch: u32) -> Driver {
        let (rx_rounds, rx_batch) = (rx_rounds.max(1), rx_batch.max(1));
        Driver {
            idler: Idler::new(idle),
            rx_rounds,
            rx_batch,
            kick_rounds: (2 * rx_rounds * rx_batch)
                .div_ceil(KICK_BATCH)
                .max(KICK_ROUNDS),
        }
    }

    /// One turn at `now`.
    pub fn turn(
        &mut self,
        port: &mut Port,
        stack: &mut Stack,
        now: Instant,
        h: &mut impl Handler,
    ) -> Turn {
        let mut rx = 0;
        for _ in 0..self.rx_rounds {
            let got = port.receive_batch(self.rx_batch, |frames, tx| {
                h.frames(frames);
                stack.ingress_batch(now, frames, tx);
            });
            rx += got;
            if got < self.rx_batch {
                break;
            }
        }
        port.refill();
        let handled = h.handle(stack, port, now, rx);
        stack.poll(now, &mut port.tx());
        let (sent, done) = port.push(self.kick_rounds);
        let work = handled || rx > 0 || sent > 0 || done > 0;
        let slept = self.idler.rest(work, port, || {
            // An event the poll raised (a timer's Closed, a Connected) is due now.
            if stack.has_events() {
                return Some(Duration::ZERO);
            }
            let at = match (stack.poll_at(), h.poll_at()) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b)?,
            };
            Some(Duration::from_micros((at - now.min(at)).total_micros()))
        });
        Turn { rx, work, slept }
    }
}
