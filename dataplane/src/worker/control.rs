//! The worker's end of the control path: its rings and published counters, and what it
//! does with the control thread's commands.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use c10m_stack::{Instant, ListenerId, Stack};

use super::LoopStats;
use crate::control::{Command, Reply};
use crate::port::Port;
use crate::ring;
use crate::service::Apps;
use crate::stats::{Published, Sample};

/// How often a worker gives its stack a new SYN-cookie secret.
const REKEY: c10m_stack::Duration = c10m_stack::Duration::from_secs(600);

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

/// The worker's side of the control path.
#[derive(Debug)]
pub(super) struct Control {
    pub(super) next: Instant,
    /// When the stack's SYN-cookie secret is next replaced with fresh OS randomness.
    rekey: Instant,
    commands: u64,
    replies_dropped: u64,
    draining: bool,
}

impl Control {
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
                Command::Drain => self.drain(stack, listeners),
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
                    let delivered = apps.publish(stack, now, &topic, &payload);
                    let reply = Reply::Published {
                        id,
                        worker: link.queue,
                        delivered,
                    };
                    if link.replies.push(reply).is_err() {
                        self.replies_dropped += 1;
                    }
                }
            }
        }
        if now >= self.rekey {
            // The stack keys each period's cookies from this secret (seeded from the OS
            // at start): renewing it bounds what a leaked secret is worth.
            self.rekey = now + REKEY;
            match getrandom::u64() {
                Ok(secret) => stack.set_cookie_secret(now, secret),
                Err(e) => tracing::warn!("no fresh SYN-cookie secret from the OS: {e}"),
            }
        }
        let memory = stack.memory();
        link.stats.publish(&Sample {
            stack: stack.counters(),
            worker: *stats,
            echo: apps.stats(),
            port: port.stats(),
            memory: memory.total as u64,
            buffers_in_use: memory.buffers_in_use as u64,
            capacity: stack.capacity() as u64,
            commands: self.commands,
            replies_dropped: self.replies_dropped,
            draining: u64::from(self.draining),
        });
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

impl Default for Control {
    fn default() -> Self {
        Control {
            next: Instant::ZERO,
            rekey: Instant::ZERO + REKEY,
            commands: 0,
            replies_dropped: 0,
            draining: false,
        }
    }
}
