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
//! - [`Fanout`]: messages to the service on every worker (a broadcast, a publish), the
//!   same on every backend and handed to the service factory; see
//!   [Writing to other connections](Service#writing-to-other-connections).
//! - [`stop_on_signal`]: SIGINT/SIGTERM → a stop flag, for binaries on any backend.
//!
//! # One service, two production backends: their defaults side by side
//!
//! | | kernel ([`kernel::Config`]) | dataplane (`c10m_dataplane::Options`) |
//! |---|---|---|
//! | workers | `workers: 1` (threads, one `SO_REUSEPORT` listener each) | `queues: 1` (one pinned worker per NIC queue) |
//! | connections per worker | `max_connections: 16384` | `max_conns: 16384` |
//! | transmit buffer per connection | `tx_buf: 64 KiB` in userspace, on top of the kernel's socket buffer (autotuned, up to `net.ipv4.tcp_wmem`) | `tx_buf: 2 KiB`, the only one: the stack's |
//! | receive buffer per connection | the kernel's socket buffer (autotuned) | `rx_buf: 2 KiB`, which is also the window advertised |
//! | listen backlog | `backlog: 4096` | `backlog: 4096` |
//! | cross-worker queue ([`Fanout`]) | [`fanout::QUEUE`] messages per worker; a worker is woken at once | [`fanout::QUEUE`] messages per worker; taken on the worker's next loop iteration (at most 10 ms away while it sleeps) |
//!
//! The dataplane's small buffers are what lets it hold millions of connections; a
//! service that sends more than 2 KiB at once sees a short [`Conn::send`] there where the
//! kernel backend took it all, and goes on in [`Service::on_writable`] — or set
//! `--tx-buf` (`Options::tx_buf`) to what it needs.
//!
//! # Not supported
//!
//! Active opens from a service, TLS, and IPv6 on the stack backends. Handlers must return
//! in microseconds: slow work goes to an [`offload::Offload`] pool.
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod conn;
mod core;
pub mod fanout;
pub mod kernel;
pub mod offload;
mod runtime;
mod service;
pub mod services;
pub mod sim;
mod slot;
mod sock;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use conn::{Conn, Conns};
pub use fanout::{Fanout, Inbox};
pub use runtime::{CLOSES_PER_MS, Runtime};
pub use service::{Service, Stats};
pub use slot::{Error, Handle, LINGER};

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
    kernel::Server::start(&opts.config, &addrs, move |_, bound, _| {
        let ports = bound.iter().zip(&specs).map(|(a, s)| (a.port(), s.kind));
        services::Builtin::new(ports.collect(), &settings)
    })
}

/// Runs `c10m kernel`: the built-in services on the kernel backend until `stop` is set
/// (or `opts.duration` passes). Returns the workers' summed counters.
pub fn run_kernel(opts: &KernelOptions, stop: Arc<AtomicBool>) -> Result<Stats, kernel::Error> {
    let server = start_kernel(opts)?;
    for (a, s) in server.local_addrs().iter().zip(&opts.services) {
        tracing::info!(
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

/// Sets `stop` when SIGINT or SIGTERM arrives, so that a binary can stop its server and
/// let its connections finish (a second SIGINT or SIGTERM, once `stop` is set, ends the
/// process at once with status 1). The handlers only store to the flag, through
/// `signal-hook`; other handlers of these signals keep running. For binaries on either
/// backend (`c10m_dataplane::stop_on_signal` is this function).
pub fn stop_on_signal(stop: Arc<AtomicBool>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for sig in [SIGINT, SIGTERM] {
        // Registered first, so it sees the flag as the previous signal left it.
        signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone())?;
        signal_hook::flag::register(sig, stop.clone())?;
    }
    Ok(())
}
