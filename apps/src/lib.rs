//! The embeddable L4 service API of c10m: write a TCP service once as a set of
//! event handlers and run it on three backends.
//!
//! - [`Service`]: event-driven, run-to-completion, edge-triggered handlers (accept,
//!   readable, writable, timer, closed, command) with a per-connection state value the
//!   runtime keeps in a preallocated slot array, and a [`Conn`] handle to read and write
//!   through the backend's buffers, close, abort, and set timers.
//! - [`Runtime`]: the service over one userspace [`c10m_stack::Stack`]. A dataplane
//!   worker calls [`Runtime::handle_events`] once per loop iteration.
//! - [`sim`]: the stack's in-memory pair on simulated time, for deterministic tests.
//! - [`kernel`]: Linux sockets, one mio (epoll) reactor per worker with `SO_REUSEPORT`
//!   listeners: the unprivileged baseline; [`run_kernel`] is `c10m kernel`.
//! - [`services`]: the built-in `echo`, `http` and `push`.
//! - [`offload`]: a small thread pool for work that cannot finish in microseconds, its
//!   results polled back by the runtime (half-sync/half-async).
//!
//! # Not supported
//!
//! Active opens from a service, TLS, and IPv6 on the stack backends. Handlers must return
//! in microseconds: slow work goes to an [`offload::Offload`] pool.
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod conn;
mod core;
pub mod kernel;
pub mod offload;
mod runtime;
mod service;
pub mod services;
pub mod sim;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use conn::{Conn, Conns};
pub use runtime::Runtime;
pub use service::{Error, Handle, LINGER, Service, Stats};

/// Options of `c10m kernel --addr A --service NAME:PORT --workers N`.
#[derive(Debug, Clone)]
pub struct KernelOptions {
    /// The address to listen on.
    pub addr: IpAddr,
    /// The services and their ports.
    pub services: Vec<services::Spec>,
    /// Workers, connection limits and buffers.
    pub config: kernel::Config,
    /// Settings of the built-in services (timeouts, the http body).
    pub settings: services::Settings,
    /// Stop after this long (`None`: until the stop flag is set).
    pub duration: Option<Duration>,
}

/// Starts the built-in services on the kernel backend. The returned server's
/// [`fanout`](kernel::Server::fanout) publishes to the push service on every worker.
pub fn start_kernel(
    opts: &KernelOptions,
) -> Result<kernel::Server<services::push::Command>, kernel::Error> {
    let addrs: Vec<SocketAddr> = opts
        .services
        .iter()
        .map(|s| SocketAddr::new(opts.addr, s.port))
        .collect();
    let (settings, specs) = (opts.settings, opts.services.clone());
    kernel::Server::start(&opts.config, &addrs, move |_, bound| {
        let ports = bound.iter().zip(&specs).map(|(a, s)| (a.port(), s.kind));
        services::Builtin::new(ports.collect(), &settings)
    })
}

/// Runs `c10m kernel`: the built-in services on the kernel backend until `stop` is set
/// (or `opts.duration` passes). Returns the workers' summed counters.
pub fn run_kernel(opts: &KernelOptions, stop: Arc<AtomicBool>) -> Result<Stats, kernel::Error> {
    let server = start_kernel(opts)?;
    for (a, s) in server.local_addrs().iter().zip(&opts.services) {
        log::info!(
            "{} on {a} ({} workers, kernel backend)",
            s.kind,
            opts.config.workers
        );
    }
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) && opts.duration.is_none_or(|d| start.elapsed() < d) {
        std::thread::sleep(Duration::from_millis(50));
    }
    server.stop()
}
