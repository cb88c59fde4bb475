//! The final report the daemon prints on exit, as one JSON object: per worker the
//! stack's counters, the service's, the port's and the kernel's socket counters and the
//! UMEM frame accounting; totals; and the XDP program's counters.

use c10m_ebpf::Steering;
use c10m_stack::{Counters, Drop, Refusal};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::port::{FrameReport, PortStats};
use crate::service::EchoStats;
use crate::worker::LoopStats;
use crate::xsk::KernelStats;

/// One worker's final counters.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerReport {
    /// The queue it served.
    pub queue: u32,
    /// The core it was pinned to.
    pub core: usize,
    /// Whether its socket ran zero-copy.
    pub zero_copy: bool,
    /// Connection slots still held at exit.
    pub connections_at_exit: usize,
    /// The stack's counters (see `c10m_stack::Counters`).
    pub stack: Value,
    /// The service's counters: `accepted` and `closed` for any service, the others for
    /// the built-in ones (named after echo, the first, for compatibility).
    pub echo: EchoStats,
    /// The port's counters.
    pub port: PortStats,
    /// The kernel's counters of the socket.
    pub kernel: KernelStats,
    /// The loop's counters.
    pub worker: LoopStats,
    /// Where the UMEM frames were at exit.
    pub frames: FrameReport,
}

/// Totals over workers, the figures most tests and operators look at.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Totals {
    /// Connections accepted (stack).
    pub accepted: u64,
    /// Frames into the stacks.
    pub rx_frames: u64,
    /// Frames out of the stacks.
    pub tx_frames: u64,
    /// Frames dropped for bad IP or TCP checksums.
    pub bad_checksums: u64,
    /// UMEM frames, all workers.
    pub frames_total: u64,
    /// UMEM frames free after the sockets closed (equal to `frames_total`: no leak).
    pub frames_free: u64,
}

/// The daemon's final report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The interface.
    pub iface: String,
    /// XDP mode in force.
    pub xdp_mode: String,
    /// Totals over workers.
    pub totals: Totals,
    /// Per worker, by queue.
    pub workers: Vec<WorkerReport>,
    /// The XDP program's counters (`None` if they could not be read).
    pub xdp: Option<Value>,
}

impl Report {
    pub(crate) fn new(
        steering: &Steering,
        xdp: Option<c10m_ebpf::Counters>,
        mut workers: Vec<WorkerReport>,
    ) -> Report {
        workers.sort_by_key(|w| w.queue);
        let mut t = Totals::default();
        for w in &workers {
            let get = |k: &str| w.stack.get(k).and_then(Value::as_u64).unwrap_or(0);
            let drop = |k: &str| w.stack["drops"].get(k).and_then(Value::as_u64).unwrap_or(0);
            t.accepted += get("accepted");
            t.rx_frames += get("rx_frames");
            t.tx_frames += get("tx_frames");
            t.bad_checksums += drop(Drop::IpChecksum.name()) + drop(Drop::TcpChecksum.name());
            t.frames_total += u64::from(w.frames.total);
            t.frames_free += u64::from(w.frames.free);
        }
        Report {
            iface: steering.ifname().to_owned(),
            xdp_mode: steering.mode().to_string(),
            totals: t,
            workers,
            xdp: xdp.map(|c| {
                json!({
                    "steered": c.steered, "passed": c.passed, "no_xsk": c.no_xsk,
                    "dropped": c.dropped, "errors": c.errors, "vlan": c.vlan,
                })
            }),
        }
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// Names of the TCP states in `Counters::states` order.
pub(crate) const STATE_NAMES: [&str; c10m_stack::STATES] = [
    "closed",
    "listen",
    "syn_sent",
    "syn_received",
    "established",
    "fin_wait1",
    "fin_wait2",
    "close_wait",
    "closing",
    "last_ack",
    "time_wait",
];

/// The stack's counters as a JSON object, arrays turned into maps by name.
pub(crate) fn counters_json(c: &Counters) -> Value {
    let named = |names: &mut dyn Iterator<Item = &'static str>, values: &[u64]| {
        names
            .zip(values)
            .map(|(n, &v)| (n.to_owned(), Value::from(v)))
            .collect::<Map<_, _>>()
    };
    json!({
        "rx_frames": c.rx_frames,
        "rx_bytes": c.rx_bytes,
        "tx_frames": c.tx_frames,
        "tx_bytes": c.tx_bytes,
        "drops": named(&mut Drop::ALL.iter().map(|d| d.name()), &c.drops),
        "no_connection": c.no_connection,
        "resets_limited": c.resets_limited,
        "syns": c.syns,
        "refused": named(&mut Refusal::ALL.iter().map(|r| r.name()), &c.refused),
        "accepted": c.accepted,
        "cookies_sent": c.cookies_sent,
        "cookies_accepted": c.cookies_accepted,
        "cookies_invalid": c.cookies_invalid,
        "connects": c.connects,
        "connected": c.connected,
        "closed": c.closed,
        "idle_timeouts": c.idle_timeouts,
        "send_timeouts": c.send_timeouts,
        "half_open_expired": c.half_open_expired,
        "half_open_evicted": c.half_open_evicted,
        "challenge_acks": c.challenge_acks,
        "challenge_acks_limited": c.challenge_acks_limited,
        "resets_ignored": c.resets_ignored,
        "resets_sent": c.resets_sent,
        "resets_received": c.resets_received,
        "gateway_probes": c.gateway_probes,
        "states": named(&mut STATE_NAMES.into_iter(), &c.states),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_become_named_json() {
        let mut c = Counters {
            accepted: 3,
            half_open_evicted: 5,
            ..Counters::default()
        };
        c.refused[Refusal::PerSource as usize] = 4;
        c.drops[Drop::TcpChecksum as usize] = 2;
        c.states[4] = 1;
        let v = counters_json(&c);
        assert_eq!(v["accepted"], 3);
        assert_eq!(v["drops"]["tcp_checksum"], 2, "{v}");
        assert_eq!(v["states"]["established"], 1);
        assert_eq!(v["half_open_evicted"], 5);
        assert_eq!(v["refused"]["per_source"], 4, "{v}");
    }
}
