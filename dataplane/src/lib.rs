//! The AF_XDP dataplane: AF_XDP sockets over our own UMEM, one run-to-completion worker
//! per NIC queue, and the `c10m` daemon that wires them to the XDP steering program
//! (`c10m-ebpf`) and the userspace TCP/IP stack (`c10m-stack`).
//!
//! # Layers (bottom up)
//!
//! | module | what | unsafe |
//! |---|---|---|
//! | `umem` | the packet memory (a hugepage [`Region`](c10m_stack::Region)) and the book of where each frame is: free, held, fill/rx, tx/completion | yes: the raw view of the area |
//! | `xsk` | one AF_XDP socket bound to (interface, queue) with need_wakeup, copy or zero-copy; the only user of `xdpilone` | yes: the UMEM registration, `sendto`, `poll`, `getsockopt` |
//! | `port` | socket + UMEM as the stack's device: rx frames read in place, tx frames built in place, batched rings, no frame leaks | no |
//! | `worker` | the per-core loop: rx batch → stack → service → poll → tx → completions → idle policy | no |
//! | `rss` | Toeplitz hash and indirection table: local ports whose replies come back to the worker's own queue | no |
//! | `service` | a worker's service on its `c10m_apps::Runtime`: the built-in `echo`, `http`, `push`, or one of the user's | no |
//! | `ring` | bounded SPSC lock-free rings (control ↔ worker) | yes: the slots |
//! | `stats` | per-worker counters published with relaxed stores | no |
//! | `control` | the control thread: mio loop, Unix socket JSON protocol, HTTP metrics | no |
//! | `link` | the daemon's rings, hooks (log level, SIGHUP) and the control loop's view of the workers | no |
//! | `daemon`, `config`, `config_file`, `host`, `report` | start-up checks, threads, shutdown, TOML configuration, the final JSON report | no |
//! | `sys` | keeps the control thread off the workers' cores; the host's addresses; whether the interface is still there and up | yes: `sched_setaffinity`, `getifaddrs`, `ioctl` |
//! | `signal` | SIGINT/SIGTERM → stop flag, SIGHUP → reload | yes: `sigaction` |
//!
//! # Example
//!
//! ```no_run
//! use std::sync::{Arc, atomic::AtomicBool};
//! use c10m_dataplane::{Options, Service, parse_cidr, run};
//!
//! let opts = Options {
//!     iface: "dut0".into(),
//!     addr: parse_cidr("198.18.0.10/24").unwrap(),
//!     services: vec![(Service::Echo, 7)],
//!     ..Options::default()
//! };
//! let report = run(&opts, Arc::new(AtomicBool::new(false)), true, |_| println!("ready"))?;
//! println!("{}", report.to_json());
//! # Ok::<(), c10m_dataplane::StartError>(())
//! ```
//!
//! # Your own service
//!
//! Any [`c10m_apps::Service`] runs here unchanged, one instance per worker built on the
//! worker's thread: [`run_service`] with `Options::ports` (see its example, and
//! `apps/examples/kv.rs`, which runs one service on either backend).
//!
//! # Not supported yet
//!
//! Shared UMEM between queues, multi-buffer (jumbo) frames, VLANs in the stack (the XDP
//! program leaves tagged frames to the kernel); for a
//! service of the user's, control commands ([`c10m_apps::Service::Command`]) from the
//! management socket, and built-in and own services side by side in one daemon.
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod config;
mod config_file;
mod control;
mod daemon;
mod host;
mod link;
mod port;
mod report;
#[allow(unsafe_code)]
mod ring;
mod rss;
mod service;
#[allow(unsafe_code)]
mod signal;
mod stats;
#[allow(unsafe_code)]
mod sys;
#[allow(unsafe_code)]
mod umem;
mod worker;
#[allow(unsafe_code)]
mod xsk;

pub use config::{
    Options, StartError, check_synack_retries, parse_cidr, parse_cores, parse_service,
};
pub use config_file::{
    FileConfig, MAX_SERVICE_TIMEOUT, RELOADABLE, max_send_timeout, parse_grace, parse_timeout,
    parse_zero_copy,
};
pub use control::{DEFAULT_SOCKET, Settings as Management};
pub use daemon::{Ready, run, run_service, run_with};
pub use link::{Hooks, LogLevel, Reload};
pub use port::{FrameReport, MAX_RX_BATCH, Port, PortStats, Tx};
pub use report::{Report, Totals, WorkerReport};
pub use rss::{Rss, RssPorts, Toeplitz};
pub use service::{EchoStats, Service};
pub use signal::stop_on_signal;
pub use worker::{Idle, LoopStats};
pub use xsk::{KernelStats, ZeroCopy};
