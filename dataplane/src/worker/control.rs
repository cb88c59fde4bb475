//! The worker's end of the control path: its rings and published counters, and what it
//! does with the control thread's commands.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use c10m_ebpf::{QueueCookies, Steering};
use c10m_stack::{Instant, ListenerId, Stack};

use super::LoopStats;
use crate::msg::{Command, Fanout, Reply};
use crate::port::Port;
use crate::ring;
use crate::service::Apps;
use crate::stats::{Published, Sample};
use crate::xsk::KernelStats;

/// How often a worker gives its stack a new SYN-cookie secret.
const REKEY: c10m_stack::Duration = c10m_stack::Duration::from_secs(600);

/// How long the XDP program keeps answering `auto` SYNs after the stack last said it was
/// under pressure. While the program answers, the flood no longer reaches the stack and
/// its half-open connections expire, which ends the pressure it sees; without a hold the
/// flood would come back to the worker at each expiry, and fill its budget again.
const PRESSURE_HOLD: c10m_stack::Duration = c10m_stack::Duration::from_secs(5);

/// What connects a worker to the control thread.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) commands: ring::Consumer<Command>,
    pub(crate) replies: ring::Producer<Reply>,
    pub(crate) stats: Arc<Published>,
    /// The grace period (ms) a stop gives open connections.
    pub(crate) grace_ms: Arc<AtomicU64>,
    pub(crate) queue: usize,
}

/// How long a stopping worker waits for the resets that end its stop to leave: a
/// transmit ring the kernel no longer drains (the interface gone) holds them forever,
/// and the worker exits without them.
const RESET_WAIT: c10m_stack::Duration = c10m_stack::Duration::from_secs(1);

/// A drain's or a stop's close of the connections.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Close {
    /// None pending.
    None,
    /// Due at this instant.
    At(Instant),
    /// FINs going out, paced by the runtime.
    Closing,
    /// Every FIN sent at this instant; those still open are reset once the grace period
    /// in force (`Link::grace_ms`, which a reload or a vanished interface changes) has
    /// passed since.
    Grace(Instant),
    /// The stop's end: every connection left was reset at this instant.
    Reset(Instant),
}

/// The worker's side of the control path.
#[derive(Debug)]
pub(super) struct Control<'a> {
    pub(super) next: Instant,
    /// Where the stack's SYN-cookie keys are published for the XDP program.
    steering: &'a Steering,
    /// What the program has of this queue now.
    published: Option<QueueCookies>,
    /// Until when `auto` SYNs get their cookie from the program.
    pressure_until: Instant,
    /// Whether a failed publication was logged already.
    publish_failed: bool,
    /// When the stack's SYN-cookie secret is next replaced with fresh OS randomness.
    rekey: Instant,
    commands: u64,
    replies_dropped: u64,
    draining: bool,
    /// Stopping for good: no command may undo the drain or move the close.
    stopping: bool,
    /// Where a drain's or the stop's close stands.
    close: Close,
    /// Publishes whose fan-out is under way: (request id, the service's publish id).
    fanouts: VecDeque<(u64, u64)>,
    /// Frames the kernel lost for this socket, as last logged, and when.
    lost: u64,
    lost_logged: Instant,
}

impl<'a> Control<'a> {
    pub(super) fn new(steering: &'a Steering) -> Control<'a> {
        Control {
            next: Instant::ZERO,
            steering,
            published: None,
            pressure_until: Instant::ZERO,
            publish_failed: false,
            rekey: Instant::ZERO + REKEY,
            commands: 0,
            replies_dropped: 0,
            draining: false,
            stopping: false,
            close: Close::None,
            fanouts: VecDeque::new(),
            lost: 0,
            lost_logged: Instant::ZERO,
        }
    }

    /// Publishes the counters and takes the waiting commands.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn serve<S: c10m_apps::Service>(
        &mut self,
        stack: &mut Stack,
        port: &Port,
        apps: &mut Apps<S>,
        link: &mut Link,
        listeners: &[ListenerId],
        stats: &LoopStats,
        now: Instant,
    ) {
        while let Some(cmd) = link.commands.pop() {
            self.commands += 1;
            match cmd {
                Command::Drain { close_after } => {
                    self.drain(stack, listeners);
                    if let Some(after) = close_after
                        && !self.stopping
                    {
                        let after = c10m_stack::Duration::from_millis(after.as_millis() as u64);
                        self.close = Close::At(now + after);
                    }
                }
                Command::Undrain if self.stopping => {
                    tracing::info!("undrain refused: the worker is stopping");
                }
                Command::Undrain => self.undrain(stack, listeners),
                Command::Sample { id, limit } => {
                    let conns = apps.sample(stack, limit);
                    let reply = Reply::Sample {
                        id,
                        worker: link.queue,
                        conns,
                    };
                    if link.replies.push(reply).is_err() {
                        self.replies_dropped += 1;
                    }
                }
                Command::Publish { id, topic, payload } => {
                    match apps.publish(stack, now, &topic, &payload) {
                        Some(started) => self.fanouts.push_back((id, started)),
                        None => self.reply(link, id, Fanout::default()),
                    }
                }
            }
        }
        // A publish is answered when its fan-out (paced by the service) has ended.
        while let Some(o) = apps.finished() {
            while let Some(&(id, started)) = self.fanouts.front()
                && started <= o.id
            {
                self.fanouts.pop_front();
                if started == o.id {
                    let fanout = Fanout {
                        queued: o.queued,
                        delivered: o.delivered,
                        dropped: o.dropped,
                    };
                    self.reply(link, id, fanout);
                }
            }
        }
        self.close_due(stack, apps, link, now);
        if now >= self.rekey {
            // The stack keys each period's cookies from this secret (seeded from the OS
            // at start): renewing it bounds what a leaked secret is worth.
            self.rekey = now + REKEY;
            match getrandom::u64() {
                Ok(secret) => stack.set_cookie_secret(now, secret),
                Err(e) => tracing::warn!("no fresh SYN-cookie secret from the OS: {e}"),
            }
        }
        self.publish_cookies(stack, link.queue, now);
        let kernel = port.kernel_stats();
        self.warn_lost(&kernel, now);
        let memory = stack.memory();
        link.stats.publish(&Sample {
            stack: stack.counters(),
            worker: *stats,
            echo: apps.stats(),
            port: port.stats(),
            kernel,
            memory: memory.total as u64,
            buffers_in_use: memory.buffers_in_use as u64,
            capacity: stack.capacity() as u64,
            commands: self.commands,
            replies_dropped: self.replies_dropped,
            draining: u64::from(self.draining),
        });
    }

    /// Says loudly (once a second at most) that the kernel dropped frames of this socket:
    /// a TCP peer then retransmits, late, and no counter of the stack shows it.
    fn warn_lost(&mut self, k: &KernelStats, now: Instant) {
        // The kernel counts a drop for an empty fill ring in `rx_dropped` too.
        let lost = k.rx_dropped + k.rx_ring_full;
        if lost > self.lost && now >= self.lost_logged + c10m_stack::Duration::from_secs(1) {
            tracing::warn!(
                "the kernel dropped {} frame(s) of this queue since the last warning \
                 (fill ring empty: {} in all, rx ring full: {}, all drops: {}): raise \
                 --umem-frames, or give the worker a core of its own",
                lost - self.lost,
                k.rx_fill_ring_empty,
                k.rx_ring_full,
                k.rx_dropped
            );
            self.lost = lost;
            self.lost_logged = now;
        }
    }

    fn reply(&mut self, link: &mut Link, id: u64, fanout: Fanout) {
        let reply = Reply::Published {
            id,
            worker: link.queue,
            fanout,
        };
        if link.replies.push(reply).is_err() {
            self.replies_dropped += 1;
        }
    }

    /// Gives the XDP program this queue's SYN-cookie keys and pressure when they changed
    /// (a new period every 64 s, pressure coming or going, a drain): one comparison
    /// per call, a system call only on a change. A draining worker answers no SYN, so
    /// the program does not either.
    fn publish_cookies(&mut self, stack: &Stack, queue: usize, now: Instant) {
        if stack.cookie_pressure() {
            self.pressure_until = now + PRESSURE_HOLD;
        }
        let keys = stack.cookie_keys(now);
        let want = (!self.draining).then_some(QueueCookies {
            k0: keys.k0,
            k1: keys.k1,
            parity: keys.parity,
            pressure: now < self.pressure_until,
        });
        if want == self.published {
            return;
        }
        match self
            .steering
            .publish_cookie_keys(queue as u32, want.as_ref())
        {
            Ok(()) => {
                if want.map(|w| w.pressure) != self.published.map(|p| p.pressure) {
                    tracing::info!(
                        "SYN cookies from XDP for auto listeners: {}",
                        if want.is_some_and(|w| w.pressure) {
                            "on"
                        } else {
                            "off"
                        }
                    );
                }
                self.published = want;
            }
            Err(e) if !self.publish_failed => {
                self.publish_failed = true;
                tracing::warn!("the XDP program answers no SYN of this queue: {e}");
            }
            Err(_) => {}
        }
    }

    /// A drain's or the stop's close: FIN every connection when it is due (paced by the
    /// runtime), RST those left a grace period after the last FIN (the grace in force).
    fn close_due<S: c10m_apps::Service>(
        &mut self,
        stack: &mut Stack,
        apps: &mut Apps<S>,
        link: &Link,
        now: Instant,
    ) {
        match self.close {
            Close::At(at) if now >= at && self.stopping && grace_ms(link) == 0 => {
                // No grace (`--grace 0`, or the interface is gone): FINs would only delay
                // the exit.
                self.abort_all(stack, apps, now);
            }
            Close::At(at) if now >= at => {
                tracing::info!(
                    "{}: closing every connection, {} a millisecond",
                    if self.stopping { "stopping" } else { "drained" },
                    c10m_apps::CLOSES_PER_MS
                );
                apps.close_all(stack, now);
                self.close = Close::Closing;
            }
            Close::Closing if !apps.closing() => self.close = Close::Grace(now),
            Close::Grace(since)
                if now >= since + c10m_stack::Duration::from_millis(grace_ms(link)) =>
            {
                self.abort_all(stack, apps, now);
            }
            _ => {}
        }
    }

    /// Resets every connection the service holds: the end of a drain's grace, or of the
    /// stop's.
    fn abort_all<S: c10m_apps::Service>(
        &mut self,
        stack: &mut Stack,
        apps: &mut Apps<S>,
        now: Instant,
    ) {
        apps.abort_all(stack);
        self.close = if self.stopping {
            Close::Reset(now)
        } else {
            Close::None
        };
    }

    /// Whether a stopping worker has waited long enough for its last resets to leave
    /// ([`RESET_WAIT`]): it exits even if some connection could not be reset.
    pub(super) fn stop_overdue(&self, now: Instant) -> bool {
        matches!(self.close, Close::Reset(at) if now >= at + RESET_WAIT)
    }

    /// Accepts on every listener again and forgets a pending close.
    fn undrain(&mut self, stack: &mut Stack, listeners: &[ListenerId]) {
        if self.draining {
            tracing::info!("undrained: accepting again");
        }
        self.draining = false;
        self.close = Close::None;
        for &l in listeners {
            if let Err(e) = stack.relisten(l) {
                tracing::error!("undrain: listener {l:?}: {e:?}");
            }
        }
    }

    /// Stops for good (the stop flag: SIGTERM, or the interface gone): drains, and closes
    /// every connection now as a drain whose delay is up, unless a drain's close is under
    /// way already (its grace, the one in force, then ends it). No command undoes it.
    /// Called on every iteration once the flag is set; acts once.
    pub(super) fn stop(&mut self, stack: &mut Stack, listeners: &[ListenerId], now: Instant) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        self.drain(stack, listeners);
        if matches!(self.close, Close::None | Close::At(_)) {
            self.close = Close::At(now);
        }
    }

    /// Stops accepting on every listener.
    pub(super) fn drain(&mut self, stack: &mut Stack, listeners: &[ListenerId]) {
        if !self.draining {
            tracing::info!("draining: no new connections");
        }
        self.draining = true;
        for &l in listeners {
            stack.unlisten(l);
        }
    }
}

/// The grace period in force, ms.
fn grace_ms(link: &Link) -> u64 {
    link.grace_ms.load(std::sync::atomic::Ordering::Relaxed)
}
