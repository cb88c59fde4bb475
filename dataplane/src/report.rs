//! The final report the daemon prints on exit, as one JSON object: per worker the
//! stack's counters, the service's, the port's and the kernel's socket counters and the
//! UMEM frame accounting; totals; and the XDP program's counters.

use c10m_ebpf::Steering;
use c10m_stack::Drop;
use serde::Serialize;
use serde_json::{Value, json};

use crate::port::{FrameReport, PortStats};
use crate::stats::{EchoStats, LoopStats};
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
            xdp: xdp.as_ref().map(xdp_json),
        }
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// The XDP program's counters as a JSON object (the report's and the `stats` answer's
/// `xdp`).
pub(crate) fn xdp_json(c: &c10m_ebpf::Counters) -> Value {
    json!({
        "steered": c.steered, "passed": c.passed, "no_xsk": c.no_xsk,
        "dropped": c.dropped, "errors": c.errors, "vlan": c.vlan,
        "cookies": c.cookies, "tallied_syn_ack": c.tallied_syn_ack,
        "tallied_rst": c.tallied_rst, "tallied_other": c.tallied_other,
    })
}
