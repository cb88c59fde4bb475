//! Per-worker counters that the control thread reads while the workers run.
//!
//! A worker gathers its figures into a plain [`Sample`] about once a millisecond and
//! stores each into its own [`Published`] block with a relaxed store: one writer per
//! block, no read-modify-write, no fence. The block is [`CachePadded`] so that two
//! workers never share a line. The control thread loads the cells (relaxed) whenever a
//! client asks: a reading may mix two publications, which is fine for monotonic
//! counters and gauges that are only ever shown.
//!
//! [`visit`] is the one list of metrics: the publication order, the JSON names (of the
//! `stats` answer and of the final report's `stack`) and the Prometheus names and help
//! all come from it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use c10m_stack::{Counters, Drop, Refusal, STATE_NAMES};
use crossbeam_utils::CachePadded;
use serde_json::{Map, Value};

use crate::port::PortStats;

/// The loop's own counters.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct LoopStats {
    /// Iterations of the loop.
    pub loops: u64,
    /// Sleeps in `poll(2)`.
    pub sleeps: u64,
    /// ARP frames copied to other workers.
    pub arp_forwarded: u64,
    /// ARP copies dropped because a peer's queue was full.
    pub arp_dropped: u64,
    /// ARP copies received from other workers.
    pub arp_received: u64,
}

/// What the services counted (named after the first service, echo, for compatibility
/// of the report and the metrics). A service of the user's
/// ([`run_service`](crate::run_service)) has `accepted` and `closed`, counted by its
/// runtime; the other figures stay 0.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct EchoStats {
    /// Connections accepted (every service, built-in or not).
    pub accepted: u64,
    /// Connections whose close completed (every service, built-in or not).
    pub closed: u64,
    /// Bytes echoed (echo).
    pub bytes: u64,
    /// HTTP requests answered with 200 (http).
    pub http_requests: u64,
    /// Messages queued to subscribers (push).
    pub push_delivered: u64,
    /// Publish commands handled (push).
    pub push_published: u64,
}
use crate::xsk::KernelStats;

/// Counter (monotonic) or gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
}

/// One published figure.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Metric {
    /// Name without the `c10m_` prefix (and without `_total`).
    pub(crate) name: &'static str,
    /// Prometheus's `# HELP` and `# TYPE`.
    #[cfg_attr(
        not(feature = "management"),
        expect(dead_code, reason = "only /metrics shows them")
    )]
    pub(crate) help: &'static str,
    #[cfg_attr(
        not(feature = "management"),
        expect(dead_code, reason = "only /metrics shows them")
    )]
    pub(crate) kind: Kind,
    /// A label (key, value) for families such as drops by reason.
    pub(crate) label: Option<(&'static str, &'static str)>,
}

/// What a worker publishes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sample {
    pub(crate) stack: Counters,
    pub(crate) worker: LoopStats,
    pub(crate) echo: EchoStats,
    pub(crate) port: PortStats,
    /// The kernel's counters of the socket (frames it lost before we saw them).
    pub(crate) kernel: KernelStats,
    /// Bytes the stack reserved.
    pub(crate) memory: u64,
    /// Buffer bytes held by live connections.
    pub(crate) buffers_in_use: u64,
    /// Connection slots.
    pub(crate) capacity: u64,
    /// Commands taken from the command ring.
    pub(crate) commands: u64,
    /// Replies dropped because the reply ring was full.
    pub(crate) replies_dropped: u64,
    /// 1 while the worker accepts no new connections.
    pub(crate) draining: u64,
}

/// Calls `f` with every metric and its value, in publication order: the stack's
/// ([`visit_stack`]), then the worker's, the services', the port's and the memory's.
pub(crate) fn visit(s: &Sample, f: &mut dyn FnMut(Metric, u64)) {
    use Kind::{Counter as C, Gauge as G};
    visit_stack(&s.stack, f);
    let mut m = |name, help, kind, label, v| {
        f(
            Metric {
                name,
                help,
                kind,
                label,
            },
            v,
        )
    };
    m("loops", "Worker loop iterations", C, None, s.worker.loops);
    m(
        "sleeps",
        "Worker sleeps in poll(2)",
        C,
        None,
        s.worker.sleeps,
    );
    m("echo_bytes", "Bytes echoed", C, None, s.echo.bytes);
    m(
        "echo_accepted",
        "Connections echo accepted",
        C,
        None,
        s.echo.accepted,
    );
    m(
        "echo_closed",
        "Connections echo saw closed",
        C,
        None,
        s.echo.closed,
    );
    m(
        "http_requests",
        "HTTP requests answered with 200",
        C,
        None,
        s.echo.http_requests,
    );
    m(
        "push_delivered",
        "Push messages queued to subscribers",
        C,
        None,
        s.echo.push_delivered,
    );
    let p = &s.port;
    m(
        "port_rx_frames",
        "Frames from the AF_XDP rx ring",
        C,
        None,
        p.rx_frames,
    );
    m(
        "port_tx_frames",
        "Frames to the AF_XDP tx ring",
        C,
        None,
        p.tx_frames,
    );
    m(
        "port_tx_completed",
        "Transmissions completed",
        C,
        None,
        p.tx_completed,
    );
    m(
        "port_tx_no_frame",
        "Transmissions without a free frame",
        C,
        None,
        p.tx_no_frame,
    );
    m(
        "port_tx_ring_full",
        "Transmissions refused by a full tx ring",
        C,
        None,
        p.tx_ring_full,
    );
    m("port_kicks", "sendto kicks", C, None, p.kicks);
    let k = &s.kernel;
    let help = "Frames the kernel dropped for this socket (fill ring empty included)";
    m("xsk_rx_dropped", help, C, None, k.rx_dropped);
    let help = "Frames the kernel dropped because the AF_XDP rx ring was full";
    m("xsk_rx_ring_full", help, C, None, k.rx_ring_full);
    let help = "Frames the kernel dropped because the AF_XDP fill ring was empty";
    m(
        "xsk_rx_fill_ring_empty",
        help,
        C,
        None,
        k.rx_fill_ring_empty,
    );
    m(
        "memory_bytes",
        "Bytes the stack reserved",
        G,
        None,
        s.memory,
    );
    let help = "Buffer bytes held by live connections";
    m("buffer_bytes_in_use", help, G, None, s.buffers_in_use);
    m(
        "connection_capacity",
        "Connection slots",
        G,
        None,
        s.capacity,
    );
    let per_conn = s.memory.checked_div(s.capacity).unwrap_or(0);
    let help = "Reserved bytes per connection slot";
    m("bytes_per_connection", help, G, None, per_conn);
    m("commands", "Control commands taken", C, None, s.commands);
    let help = "Replies dropped on a full reply ring";
    m("replies_dropped", help, C, None, s.replies_dropped);
    m("draining", "1 if not accepting", G, None, s.draining);
}

/// Calls `f` with the stack's metrics ([`Counters`]) and their values: the head of
/// [`visit`], and the `stack` object of the final report ([`stack_json`]).
fn visit_stack(c: &Counters, f: &mut dyn FnMut(Metric, u64)) {
    use Kind::{Counter as C, Gauge as G};
    let mut m = |name, help, kind, label, v| {
        f(
            Metric {
                name,
                help,
                kind,
                label,
            },
            v,
        )
    };
    m("rx_frames", "Frames into the stack", C, None, c.rx_frames);
    m("rx_bytes", "Bytes into the stack", C, None, c.rx_bytes);
    m("tx_frames", "Frames out of the stack", C, None, c.tx_frames);
    m("tx_bytes", "Bytes out of the stack", C, None, c.tx_bytes);
    for d in Drop::ALL {
        let v = c.drops[d as usize];
        m(
            "drops",
            "Frames dropped, by reason",
            C,
            Some(("reason", d.name())),
            v,
        );
    }
    let help = "Segments for no connection and no listener";
    m("no_connection", help, C, None, c.no_connection);
    let help = "RSTs for segments matching no connection dropped by the RST rate limit";
    m("resets_limited", help, C, None, c.resets_limited);
    m("syns", "SYNs for listening ports", C, None, c.syns);
    for r in Refusal::ALL {
        let v = c.refused[r as usize];
        m(
            "refused",
            "Connections refused, by reason",
            C,
            Some(("reason", r.name())),
            v,
        );
    }
    m("accepted", "Passive opens established", C, None, c.accepted);
    m("cookies_sent", "SYN cookies sent", C, None, c.cookies_sent);
    let help = "Connections born from a SYN cookie";
    m("cookies_accepted", help, C, None, c.cookies_accepted);
    let help = "ACKs to a listening port with an invalid SYN cookie";
    m("cookies_invalid", help, C, None, c.cookies_invalid);
    m("connects", "Active opens started", C, None, c.connects);
    m(
        "connected",
        "Active opens established",
        C,
        None,
        c.connected,
    );
    m("closed", "Connection slots freed", C, None, c.closed);
    m(
        "idle_timeouts",
        "Connections aborted idle",
        C,
        None,
        c.idle_timeouts,
    );
    let help = "Connections aborted: queued data unacknowledged for the send timeout";
    m("send_timeouts", help, C, None, c.send_timeouts);
    let help = "Half-open connections freed after their SYN-ACK retries";
    m("half_open_expired", help, C, None, c.half_open_expired);
    let help = "Half-open connections evicted for a new SYN";
    m("half_open_evicted", help, C, None, c.half_open_evicted);
    let help = "Challenge ACKs sent (RFC 5961)";
    m("challenge_acks", help, C, None, c.challenge_acks);
    let help = "Challenge ACKs not sent (rate limit, or smoltcp's timer busy)";
    m(
        "challenge_acks_limited",
        help,
        C,
        None,
        c.challenge_acks_limited,
    );
    let help = "RSTs ignored: in the window but not exactly RCV.NXT (RFC 5961)";
    m("resets_ignored", help, C, None, c.resets_ignored);
    let help = "Bare ACKs from behind RCV.NXT (a peer rewound by its RTO) moved up to it";
    m("acks_realigned", help, C, None, c.acks_realigned);
    let help = "Keep-alives sent for connections whose queued data stalled with no timer";
    m("window_probes", help, C, None, c.window_probes);
    let help = "Duplicate ACKs whose grown window was pinned so smoltcp fast-retransmits";
    m("dup_acks_pinned", help, C, None, c.dup_acks_pinned);
    let help = "SACK-bearing ACKs given to smoltcp with copies so that it fast-retransmits";
    m(
        "fast_retransmits_forced",
        help,
        C,
        None,
        c.fast_retransmits_forced,
    );
    m("resets_sent", "RST segments sent", C, None, c.resets_sent);
    m(
        "resets_received",
        "RST segments received",
        C,
        None,
        c.resets_received,
    );
    m(
        "gateway_probes",
        "ARP requests keeping the gateway's entry fresh",
        C,
        None,
        c.gateway_probes,
    );
    let help = "Segments held back until a neighbour answered ARP or a solicitation";
    m("neighbour_waits", help, C, None, c.neighbour_waits);
    for (i, state) in STATE_NAMES.into_iter().enumerate() {
        let help = "Connection slots, by TCP state";
        m("connections", help, G, Some(("state", state)), c.states[i]);
    }
}

/// Number of published cells.
pub(crate) const CELLS: usize = 80;

/// One worker's published counters.
#[derive(Debug)]
pub(crate) struct Published {
    cells: CachePadded<[AtomicU64; CELLS]>,
}

impl Default for Published {
    fn default() -> Self {
        Published {
            cells: CachePadded::new(std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

impl Published {
    /// Stores `sample` (worker side).
    pub(crate) fn publish(&self, sample: &Sample) {
        let mut i = 0;
        visit(sample, &mut |_, v| {
            debug_assert!(i < CELLS, "more metrics than cells");
            if let Some(cell) = self.cells.get(i) {
                cell.store(v, Relaxed);
            }
            i += 1;
        });
    }

    /// Reads every cell (control side), in [`visit`] order.
    #[cfg(any(test, feature = "management"))]
    pub(crate) fn read(&self) -> Vec<u64> {
        self.cells.iter().map(|c| c.load(Relaxed)).collect()
    }
}

/// The metric list, in [`visit`] order.
#[cfg(any(test, feature = "management"))]
pub(crate) fn catalogue() -> Vec<Metric> {
    let mut list = Vec::new();
    visit(&Sample::default(), &mut |m, _| list.push(m));
    list
}

/// One worker's values as a JSON object: families become nested objects by label.
#[cfg(any(test, feature = "management"))]
pub(crate) fn to_json(values: &[u64]) -> Value {
    named(&catalogue(), values)
}

/// A stack's counters as a JSON object, as in [`to_json`] (the final report's `stack`).
pub(crate) fn stack_json(c: &Counters) -> Value {
    let (mut list, mut values) = (Vec::new(), Vec::new());
    visit_stack(c, &mut |m, v| {
        list.push(m);
        values.push(v);
    });
    named(&list, &values)
}

/// `values` under the names of `list`: families become nested objects by label.
fn named(list: &[Metric], values: &[u64]) -> Value {
    let mut out = Map::new();
    for (m, &v) in list.iter().zip(values) {
        match m.label {
            None => {
                out.insert(m.name.into(), v.into());
            }
            Some((_, label)) => {
                let family = out
                    .entry(m.name)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Some(obj) = family.as_object_mut() {
                    obj.insert(label.into(), v.into());
                }
            }
        }
    }
    Value::Object(out)
}

/// Element-wise sum of per-worker values (`bytes_per_connection` recomputed).
#[cfg(any(test, feature = "management"))]
pub(crate) fn totals(workers: &[Vec<u64>]) -> Vec<u64> {
    let list = catalogue();
    let mut sum = vec![0u64; list.len()];
    for w in workers {
        for (s, v) in sum.iter_mut().zip(w) {
            *s = s.saturating_add(*v);
        }
    }
    let at = |name: &str| list.iter().position(|m| m.name == name);
    if let (Some(mem), Some(cap), Some(per)) = (
        at("memory_bytes"),
        at("connection_capacity"),
        at("bytes_per_connection"),
    ) {
        sum[per] = sum[mem].checked_div(sum[cap]).unwrap_or(0);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_a_cell_and_round_trips() {
        let list = catalogue();
        assert!(list.len() <= CELLS, "{} metrics", list.len());
        let mut s = Sample::default();
        s.stack.accepted = 7;
        s.stack.cookies_accepted = 5;
        s.stack.drops[Drop::TcpChecksum as usize] = 2;
        s.stack.states[4] = 3;
        s.memory = 1000;
        s.kernel.rx_fill_ring_empty = 9;
        s.capacity = 10;
        let p = Published::default();
        p.publish(&s);
        let v = to_json(&p.read());
        assert_eq!(v["accepted"], 7);
        assert_eq!(v["cookies_accepted"], 5);
        assert_eq!(v["drops"]["tcp_checksum"], 2);
        assert_eq!(v["connections"]["established"], 3);
        assert_eq!(v["bytes_per_connection"], 100);
        assert_eq!(v["xsk_rx_fill_ring_empty"], 9);
        let t = totals(&[p.read(), p.read()]);
        assert_eq!(to_json(&t)["accepted"], 14);
        assert_eq!(to_json(&t)["bytes_per_connection"], 100);
    }

    #[test]
    fn stack_counters_become_named_json() {
        let mut c = Counters {
            accepted: 3,
            half_open_evicted: 5,
            ..Counters::default()
        };
        c.refused[Refusal::PerSource as usize] = 4;
        c.drops[Drop::TcpChecksum as usize] = 2;
        c.states[4] = 1;
        let v = stack_json(&c);
        assert_eq!(v["accepted"], 3);
        assert_eq!(v["drops"]["tcp_checksum"], 2, "{v}");
        assert_eq!(v["connections"]["established"], 1, "{v}");
        assert_eq!(v["half_open_evicted"], 5);
        assert_eq!(v["refused"]["per_source"], 4, "{v}");
        assert!(v.get("loops").is_none(), "only the stack's: {v}");
    }
}
