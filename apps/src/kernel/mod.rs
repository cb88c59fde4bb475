//! The kernel backend: Linux sockets through one mio (epoll, edge-triggered) reactor
//! thread per worker, each with its own `SO_REUSEPORT` listener per address so the kernel
//! spreads connections over the workers.
//!
//! `SO_REUSEPORT` would also let a second server of the same user join the port
//! without a word and take half the clients, so a port is first probed with a socket
//! that has `SO_REUSEADDR` only: its bind fails (→ [`Error::PortInUse`]) while anyone
//! listens there. [`Config::reuseport`] skips the probe to share the port on purpose
//! (several processes behind one port). The probe is closed before the workers bind:
//! two servers started in the same instant can both pass it. Needs no privileges; it is the baseline the
//! dataplane is measured against, so it is tuned as such a server should be: non-blocking
//! sockets, `TCP_NODELAY`, no thread per connection, a read budget per dispatch so one
//! fast sender cannot starve the others, and a bounded userspace transmit buffer.
//!
//! ```no_run
//! use c10m_apps::kernel::{Config, Server};
//! use c10m_apps::services::Echo;
//!
//! let addrs = ["127.0.0.1:7".parse().unwrap()];
//! let server = Server::start(&Config::default(), &addrs, |_worker, _addrs, _fanout| {
//!     Echo::default()
//! })
//! .unwrap();
//! println!("echo on {:?}", server.local_addrs());
//! server.join().unwrap();
//! ```

mod worker;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use mio::{Poll, Waker};
use socket2::{Domain, Socket, Type};

use crate::core::Core;
pub use crate::fanout::Fanout;
use crate::service::{Service, Stats};
use crate::sock::Socks;
use worker::{WAKER, Worker};

/// Sizing of the kernel backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Reactor threads.
    pub workers: usize,
    /// Connections per worker; more are accepted and closed at once.
    pub max_connections: usize,
    /// Userspace transmit buffer per connection, on top of the kernel's socket buffer.
    pub tx_buf: usize,
    /// `listen(2)` backlog.
    pub backlog: i32,
    /// Share the ports with other processes' `SO_REUSEPORT` listeners (the kernel then
    /// spreads connections over all of them). Off: a port someone listens on is
    /// refused with [`Error::PortInUse`].
    pub reuseport: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: 1,
            max_connections: 16384,
            tx_buf: 64 * 1024,
            backlog: 4096,
            reuseport: false,
        }
    }
}

/// Why the kernel backend could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be set up.
    #[error("cannot listen on {addr}: {source} (is the port taken, or the address not local?)")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The system's reason.
        source: io::Error,
    },
    /// Someone already listens on the address and sharing was not asked for.
    #[error(
        "{addr} is already in use (another server listens on it): stop that server or pick \
         another port, or share the port on purpose with `c10m kernel --reuseport` \
         (kernel::Config::reuseport)"
    )]
    PortInUse {
        /// The address.
        addr: SocketAddr,
    },
    /// The reactor failed.
    #[error("epoll reactor: {0}")]
    Reactor(#[from] io::Error),
    /// Zero workers, or nothing to listen on.
    #[error("invalid configuration: {0}")]
    Invalid(&'static str),
    /// A worker thread panicked.
    #[error("a worker thread panicked")]
    Panicked,
}

/// A running kernel-backend server.
#[derive(Debug)]
pub struct Server<C> {
    addrs: Vec<SocketAddr>,
    fanout: Fanout<C>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<io::Result<Stats>>>,
}

fn listener(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(backlog)?;
    Ok(s.into())
}

/// Fails with [`Error::PortInUse`] while a socket listens on `addr` (see the module
/// docs); a port in `TIME_WAIT` only passes, as it does for the listeners.
fn probe(addr: SocketAddr) -> Result<(), Error> {
    let listen = |source| Error::Listen { addr, source };
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(listen)?;
    s.set_reuse_address(true).map_err(listen)?;
    match s.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(Error::PortInUse { addr }),
        Err(e) => Err(listen(e)),
    }
}

impl<C: Clone + Send + 'static> Server<C> {
    /// Starts `cfg.workers` reactors listening on every address of `listen` (port 0
    /// picks one port, shared by all workers; a port another process listens on is
    /// refused unless `cfg.reuseport`); `make(i, addrs, fanout)` builds worker `i`'s
    /// service on its thread, given the bound addresses and the [`Fanout`] that
    /// reaches every worker's [`on_command`](Service::on_command) (the same one
    /// [`fanout`](Self::fanout) returns).
    pub fn start<S, F>(cfg: &Config, listen: &[SocketAddr], make: F) -> Result<Self, Error>
    where
        S: Service<Command = C> + 'static,
        F: Fn(usize, &[SocketAddr], &Fanout<C>) -> S + Send + Sync + 'static,
    {
        if cfg.workers == 0 || listen.is_empty() || cfg.max_connections == 0 {
            return Err(Error::Invalid(
                "workers, addresses and max_connections must be non-zero",
            ));
        }
        let mut addrs = Vec::new();
        let mut per_worker: Vec<Vec<(std::net::TcpListener, u16)>> =
            (0..cfg.workers).map(|_| Vec::new()).collect();
        for &want in listen {
            if !cfg.reuseport && want.port() != 0 {
                probe(want)?;
            }
            let mut addr = want;
            for w in per_worker.iter_mut() {
                let l =
                    listener(addr, cfg.backlog).map_err(|source| Error::Listen { addr, source })?;
                addr = l.local_addr()?;
                w.push((l, addr.port()));
            }
            addrs.push(addr);
        }
        let make = Arc::new(make);
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let mut polls = Vec::new();
        let mut wakers = Vec::new();
        for _ in 0..cfg.workers {
            let poll = Poll::new()?;
            wakers.push(Some(Arc::new(Waker::new(poll.registry(), WAKER)?)));
            polls.push(poll);
        }
        let (fanout, inboxes) = Fanout::with_wakers(wakers);
        let mut threads = Vec::new();
        let each = per_worker.into_iter().zip(polls).zip(inboxes);
        for (i, ((ls, poll), inbox)) in each.enumerate() {
            let (make, stop, cfg, bound) = (make.clone(), stop.clone(), *cfg, addrs.clone());
            let fanout = fanout.clone();
            let t = std::thread::Builder::new()
                .name(format!("c10m-kernel-{i}"))
                .spawn(move || {
                    let service = make(i, &bound, &fanout);
                    drop(fanout);
                    let listeners = ls
                        .into_iter()
                        .map(|(l, p)| (mio::net::TcpListener::from_std(l), p))
                        .collect();
                    let now = start.elapsed().as_millis() as u64;
                    Worker {
                        poll,
                        listeners,
                        socks: Socks::new(cfg.max_connections, cfg.tx_buf, 64 * 1024),
                        core: Core::new(service, cfg.max_connections, now),
                        commands: inbox,
                        stop,
                        start,
                        again: Vec::new(),
                    }
                    .run()
                })?;
            threads.push(t);
        }
        Ok(Server {
            addrs,
            fanout,
            stop,
            threads,
        })
    }

    /// The addresses listened on (ports resolved), in the order given.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The fan-out to every worker's service.
    pub fn fanout(&self) -> Fanout<C> {
        self.fanout.clone()
    }

    /// The flag that stops every worker when set.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Asks the workers to stop (their connections are closed) and waits for them;
    /// returns the sum of their counters.
    pub fn stop(self) -> Result<Stats, Error> {
        self.stop.store(true, Ordering::Relaxed);
        self.join()
    }

    /// Waits for the workers to stop (after the stop flag is set).
    pub fn join(self) -> Result<Stats, Error> {
        let mut total = Stats::default();
        for t in self.threads {
            let s = t.join().map_err(|_| Error::Panicked)??;
            total.accepted += s.accepted;
            total.closed += s.closed;
            total.idle_closed += s.idle_closed;
            total.refused += s.refused;
            total.commands += s.commands;
        }
        Ok(total)
    }
}
