//! The AF_XDP dataplane: AF_XDP sockets over our own UMEM, one run-to-completion worker
//! per NIC queue, wired to the XDP steering program (`c10m-ebpf`) and the userspace
//! TCP/IP stack (`c10m-stack`), running the built-in services ([`run`]) or one of yours
//! ([`run_service`]). The `c10m` binary (command line, TOML file, logging setup) is the
//! `c10m-daemon` crate over this one; a service developed on Linux sockets needs only
//! `c10m-apps`, and adds this crate (and its clang/libbpf build) for AF_XDP.
//!
//! # Logging
//!
//! Everything logs through `tracing` (smoltcp's `log` records too, through
//! `tracing-subscriber`'s bridge). The library installs no subscriber: an embedded service
//! that wants the dataplane's messages (start-up, a refused zero-copy, the RSS table)
//! installs one, e.g. `tracing_subscriber::fmt::init()` at the top of `main`.
//!
//! # Management (the `management` feature)
//!
//! The control thread (the `c10m ctl` socket, `/metrics`, `/health`, the `--on-state`
//! hook) is built only with the `management` cargo feature, off by default and on in
//! `c10m-daemon`: without it the crate links no mio or prometheus-client, and `Options`
//! has no `management` field, so asking for a socket does not compile rather than being
//! ignored. With it, the thread runs only when `Options::management` names a socket or a
//! metrics address: none by default, so two embedded services, or one and a `c10m run`,
//! never collide on a path.
//!
//! # Layers (bottom up)
//!
//! | module | what | unsafe |
//! |---|---|---|
//! | `umem` | the packet memory (a hugepage [`Region`](c10m_stack::Region)) and the book of where each frame is: free, held, fill/rx, tx/completion | yes: the raw view of the area |
//! | `xsk` | one AF_XDP socket bound to (interface, queue) with need_wakeup, copy or zero-copy; the only user of `xdpilone` | yes: the UMEM registration, `sendto`, `poll`, `getsockopt` |
//! | `port` | socket + UMEM as the stack's device: rx frames read in place, tx frames built in place, batched rings, no frame leaks | no |
//! | `driver` | the per-core loop over a port and a stack, with a handler on top: rx batch → stack → handler → poll → tx → completions → idle policy; the workers and the bench generators turn it | no |
//! | `worker` | a worker's thread on the driver: the ARP mesh, the service, counters and commands each millisecond, stop and grace | no |
//! | `rss` | Toeplitz hash and indirection table: local ports whose replies come back to the worker's own queue | no |
//! | `service` | a worker's service on its `c10m_apps::Runtime`: the built-in `echo`, `http`, `push`, or one of the user's | no |
//! | `ring` | bounded SPSC lock-free rings (control ↔ worker) | yes: the slots |
//! | `stats` | the one metric table (JSON stats, the report's `stack`, Prometheus) and the per-worker counters published with relaxed stores | no |
//! | `msg` | the commands and replies between the control thread and the workers | no |
//! | `control` | the control thread (the `management` feature): mio loop, Unix socket JSON protocol, HTTP metrics, the serving state and its hook | no |
//! | `link` | the daemon's rings, hooks (log level, SIGHUP) and the control loop's view of the workers | no |
//! | `daemon`, `config`, `error`, `host`, `report` | start-up checks, threads, shutdown, the options and their errors, the final JSON report | no |
//! | `sys` | keeps the control thread off the workers' cores; the host's addresses; whether the interface is still there and up | yes: `sched_setaffinity`, `getifaddrs`, `ioctl` |
//! | `signal` | SIGINT/SIGTERM → stop flag, SIGHUP → reload | yes: `sigaction` |
//!
//! # Example
//!
//! ```no_run
//! use std::sync::{Arc, atomic::AtomicBool};
//! use c10m_apps::services::Kind;
//! use c10m_dataplane::{Options, parse_cidr, run};
//!
//! let opts = Options {
//!     iface: "dut0".into(),
//!     addr: parse_cidr("198.18.0.10/24").unwrap(),
//!     services: vec![(Kind::Echo, 7)],
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
//! `apps/examples/kv.rs`, which runs one service on either backend). The workers' services
//! reach each other through the [`c10m_apps::Fanout`] the factory is given
//! (`apps/examples/chat.rs`).
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
#[cfg(feature = "management")]
mod control;
mod daemon;
pub mod driver;
mod error;
mod host;
mod link;
mod msg;
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
mod warm;
mod worker;
#[allow(unsafe_code)]
mod xsk;

pub use c10m_apps::stop_on_signal;
pub use config::{
    Options, PREFAULT_AUTO_BYTES, check_synack_retries, parse_any_cidr, parse_cidr, parse_cores,
    parse_service, set_addrs,
};
#[cfg(feature = "management")]
pub use control::{
    DEFAULT_ON_STATE_TIMEOUT, DEFAULT_SOCKET, OnState, Settings as Management, State,
};
pub use daemon::{Ready, run, run_service, run_with};
pub use driver::{Driver, Idle, Idler, KICK_ROUNDS};
#[cfg(feature = "management")]
pub use error::ManagementError;
pub use error::{OptionsError, ParseError, StartError, WorkerError};
pub use host::check_addr_free;
pub use link::{HookError, Hooks, LogLevel, Reload};
pub use port::{FrameReport, MAX_RX_BATCH, Port, PortStats, Tx};
pub use report::{Report, Totals, WorkerReport};
pub use rss::{Rss, RssError, RssPorts, Toeplitz};
pub use stats::{EchoStats, LoopStats};
pub use xsk::{KernelStats, ZeroCopy};
