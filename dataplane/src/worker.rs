//! A worker: one thread per NIC queue, pinned to one core, owning one [`Stack`] and one
//! [`Port`] and nothing else on the hot path.
//!
//! The loop is the per-core [driver](crate::driver)'s, one clock read per iteration: rx
//! batches (≤ 16 × 64) into the stack, ARP frames from the other workers (multi-queue
//! only), the runtime handing the stack's events to the service (built-in or the
//! user's), the stack's poll, transmit, completions, and the idle policy.
//!
//! About once a millisecond the worker publishes its counters ([`crate::stats`]) with
//! relaxed stores, gives the XDP program its stack's SYN-cookie keys and pressure when
//! they changed (`control`), and takes the control thread's commands from its ring
//! (drain: stop accepting; sample: reply with some connections). It never waits on a ring: a full
//! reply ring drops the reply and counts it.
//!
//! When the stop flag is set the worker stops accepting, closes every connection with a
//! FIN (after the data already queued) and goes on serving until no connection is open
//! or closing, or the grace period ends: then it resets those left and leaves.
//!
//! # ARP across queues
//!
//! Each worker's stack has its own neighbour cache, but the NIC delivers an ARP reply on
//! whichever queue its hash picks — often not the queue of the worker that asked. So a
//! worker passes a copy of every ARP frame it receives to the others through bounded
//! channels (never blocking: full means dropped and counted), with the operation
//! rewritten to "reply" so that only the worker that received a request answers it and
//! the others just learn the sender's address.

use c10m_ebpf::Steering;
use c10m_stack::{Instant, ListenerId, Stack};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use crate::driver::{Driver, Handler, Idle};
use crate::port::{MAX_RX_BATCH, Port};
use crate::service::Apps;
use crate::stats::LoopStats;

mod control;

use control::Control;
pub(crate) use control::Link;

/// Most rx batches per iteration: a loop that also fans out (a push fan-out step sends
/// up to 256 messages, each answered by an ACK), runs timers and transmits must still
/// read frames faster than they come, or the rx ring fills.
const RX_ROUNDS: u32 = 16;
/// How often counters are published and commands taken.
const PUBLISH: c10m_stack::Duration = c10m_stack::Duration::from_millis(1);

/// Whether any connection is open or between a close and its end (TIME-WAIT excepted).
fn active(stack: &Stack) -> bool {
    use c10m_stack::State;
    let c = stack.counters();
    [
        State::SynReceived,
        State::Established,
        State::FinWait1,
        State::FinWait2,
        State::CloseWait,
        State::Closing,
        State::LastAck,
    ]
    .into_iter()
    .any(|s| c.in_state(s) > 0)
}

/// ARP frames that may wait for one worker.
pub(crate) const ARP_QUEUE: usize = 64;

/// The channels that carry ARP frames between workers.
#[derive(Debug)]
pub(crate) struct ArpMesh {
    pub(crate) inbox: Receiver<Box<[u8]>>,
    pub(crate) peers: Vec<SyncSender<Box<[u8]>>>,
}

/// Builds one mesh end per worker.
pub(crate) fn arp_mesh(workers: usize) -> Vec<ArpMesh> {
    let (senders, inboxes): (Vec<_>, Vec<_>) = (0..workers)
        .map(|_| std::sync::mpsc::sync_channel(ARP_QUEUE))
        .unzip();
    inboxes
        .into_iter()
        .enumerate()
        .map(|(i, inbox)| ArpMesh {
            inbox,
            peers: senders
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, s)| s.clone())
                .collect(),
        })
        .collect()
}

/// An Ethernet ARP frame? (No VLAN: the steering program sees tags the NIC left.)
fn is_arp(frame: &[u8]) -> bool {
    frame.get(12..14) == Some(&[0x08, 0x06]) && frame.len() >= 42
}

/// The monotonic clock, as the stack's `Instant`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock(std::time::Instant);

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock(std::time::Instant::now())
    }

    pub(crate) fn now(&self) -> Instant {
        Instant::from_micros(self.0.elapsed().as_micros() as i64)
    }
}

/// Runs the loop until `stop` is set.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run<S: c10m_apps::Service>(
    stack: &mut Stack,
    port: &mut Port,
    apps: &mut Apps<S>,
    mesh: &ArpMesh,
    clock: Clock,
    idle: Idle,
    stop: &AtomicBool,
    link: &mut Link,
    listeners: &[ListenerId],
    steering: &Steering,
) -> LoopStats {
    let mut stats = LoopStats::default();
    let mut driver = Driver::new(idle, RX_ROUNDS, MAX_RX_BATCH as u32);
    let mut control = Control::new(steering);
    loop {
        stats.loops += 1;
        let now = clock.now();
        if now >= control.next {
            control.next = now + PUBLISH;
            control.serve(stack, port, apps, link, listeners, &stats, now);
        }
        if stop.load(Ordering::Relaxed) {
            // The close is the drain's (`Control::stop`): paced FINs, then the grace from
            // the last one, then RSTs, run from `serve`. Done when nothing is left open.
            control.stop(stack, listeners, now);
            let overdue = control.stop_overdue(now);
            if overdue {
                tracing::warn!(
                    "stopping with {} connections whose reset could not be sent",
                    stack.connections()
                );
            }
            if overdue || !active(stack) {
                stack.poll(now, &mut port.tx());
                port.flush();
                control.serve(stack, port, apps, link, listeners, &stats, now);
                break;
            }
        }
        let mut serve = Serve {
            apps: &mut *apps,
            mesh,
            stats: &mut stats,
        };
        if driver.turn(port, stack, now, &mut serve).slept {
            stats.sleeps += 1;
        }
    }
    stats
}

/// What a worker runs on its driver: the ARP mesh and the service.
struct Serve<'a, S: c10m_apps::Service> {
    apps: &'a mut Apps<S>,
    mesh: &'a ArpMesh,
    stats: &'a mut LoopStats,
}

impl<S: c10m_apps::Service> Handler for Serve<'_, S> {
    fn frames(&mut self, frames: &[&[u8]]) {
        if self.mesh.peers.is_empty() {
            return;
        }
        for frame in frames.iter().filter(|f| is_arp(f)) {
            forward_arp(frame, &self.mesh.peers, self.stats);
        }
    }

    fn handle(&mut self, stack: &mut Stack, port: &mut Port, now: Instant, rx: u32) -> bool {
        let mut replayed = 0;
        if !self.mesh.peers.is_empty() {
            while let Ok(frame) = self.mesh.inbox.try_recv() {
                replayed += 1;
                stack.ingress(now, &frame, &mut port.tx());
            }
            self.stats.arp_received += replayed;
        }
        // Read as much as one turn reads: more is waiting, so fan-outs slow down.
        self.apps.set_backlog(rx >= RX_ROUNDS * MAX_RX_BATCH as u32);
        self.apps.handle(stack, now);
        replayed > 0
    }

    fn poll_at(&self) -> Option<Instant> {
        self.apps.poll_at()
    }
}

/// Copies an ARP frame to every peer, as a reply (operation 2) so that peers only learn
/// from it.
fn forward_arp(frame: &[u8], peers: &[SyncSender<Box<[u8]>>], stats: &mut LoopStats) {
    let mut copy: Box<[u8]> = frame.into();
    copy[20..22].copy_from_slice(&[0, 2]);
    for peer in peers {
        match peer.try_send(copy.clone()) {
            Ok(()) => stats.arp_forwarded += 1,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => stats.arp_dropped += 1,
        }
    }
}

/// The worker cores of `cores` that are not among `allowed` (the cores the process was
/// started on). A worker pins itself to its core wherever that is: `taskset -c 1 c10m run`
/// without `--cores` still puts queue 0's worker on core 0, beside whatever the operator
/// meant to keep apart from it.
pub(crate) fn outside(cores: &[usize], allowed: &[usize]) -> Vec<usize> {
    if allowed.is_empty() {
        return Vec::new();
    }
    cores
        .iter()
        .copied()
        .filter(|c| !allowed.contains(c))
        .collect()
}

/// Pins the calling thread to `core`; logs (does not fail) if the core does not exist.
pub(crate) fn pin(core: usize) -> bool {
    let ok = core_affinity::set_for_current(core_affinity::CoreId { id: core });
    if !ok {
        tracing::warn!("could not pin a worker to core {core}; it runs unpinned");
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_outside_the_process_mask_are_named() {
        assert_eq!(outside(&[0], &[1]), vec![0], "taskset -c 1 without --cores");
        assert_eq!(outside(&[1], &[1]), Vec::<usize>::new());
        assert_eq!(outside(&[0, 1, 2], &[1, 2, 3]), vec![0]);
        assert_eq!(
            outside(&[5], &[]),
            Vec::<usize>::new(),
            "mask unknown: no claim"
        );
    }

    #[test]
    fn arp_is_recognised_and_forwarded_as_a_reply() {
        let mut frame = [0u8; 42];
        frame[12..14].copy_from_slice(&[0x08, 0x06]);
        frame[20..22].copy_from_slice(&[0, 1]);
        assert!(is_arp(&frame));
        assert!(!is_arp(&frame[..30]), "too short for ARP");
        let mut mesh = arp_mesh(3);
        let mut stats = LoopStats::default();
        let first = mesh.remove(0);
        forward_arp(&frame, &first.peers, &mut stats);
        assert_eq!(stats.arp_forwarded, 2);
        for other in &mesh {
            let got = other.inbox.try_recv().unwrap();
            assert_eq!(&got[20..22], &[0, 2]);
        }
        assert!(first.inbox.try_recv().is_err(), "no copy to itself");
    }

    #[test]
    fn a_full_peer_drops_and_counts() {
        let mesh = arp_mesh(2);
        let mut frame = [0u8; 42];
        frame[12..14].copy_from_slice(&[0x08, 0x06]);
        let mut stats = LoopStats::default();
        for _ in 0..ARP_QUEUE + 5 {
            forward_arp(&frame, &mesh[0].peers, &mut stats);
        }
        assert_eq!(stats.arp_forwarded, ARP_QUEUE as u64);
        assert_eq!(stats.arp_dropped, 5);
    }
}
