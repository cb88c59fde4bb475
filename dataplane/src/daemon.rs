//! Start-up, the workers' threads and shutdown: what `c10m run` does with the built-in
//! services ([`run`], [`run_with`]) and what [`run_service`] does with one of the user's.
//! Both are the same generic path: each worker builds its own service on its own thread
//! and drives it with a [`c10m_apps::Runtime`].
//!
//! Order: check the options and the host (interface, the address not already the
//! host's, privileges, queue count, MAC) →
//! attach the XDP program and register the address and services → one thread per queue
//! builds its UMEM, socket and stack, registers its socket in the XSKMAP and reports
//! ready → `on_ready` → wait for the stop flag (or a worker's death, or the interface
//! going away: deleted or set down, looked at every 200 ms with two ioctls, which is
//! cheaper than a netlink listener and needs no state; the run then ends in
//! [`StartError::InterfaceGone`]) → workers leave
//! their loops, unregister their sockets, finish transmission, close their sockets and
//! account for their frames → [`Report`]. The XDP program goes with the `Steering`
//! value (a bpf_link), even on `kill -9`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use c10m_apps::{Fanout, Inbox};
use c10m_ebpf::{Proto, Steering, XdpCookies};
use c10m_stack::{
    Config, HugePages, ListenOptions, PortChooser, SocketOptions, Stack, SynCookies, Warmer,
};

use crate::config::Options;
use crate::error::{OptionsError, StartError, WorkerError};
use crate::host;
use crate::link::{self, Hooks};
use crate::port::{Layout, Port};
use crate::report::{Report, WorkerReport};
use crate::service::{self, Apps, Extras};
use crate::umem::Memory;
use crate::worker::{self, ArpMesh, Clock};
use crate::xsk::Socket;

/// What the daemon tells `on_ready`.
#[derive(Debug, Clone)]
pub struct Ready {
    /// The XDP mode in force.
    pub xdp_mode: c10m_ebpf::XdpMode,
    /// Per worker: whether its socket is zero-copy.
    pub zero_copy: Vec<bool>,
    /// Per worker: whether its UMEM is on hugepages.
    pub hugepages: Vec<bool>,
}

/// Runs the dataplane until `stop` is set or SIGINT/SIGTERM arrives (when `signals` is
/// true the handlers are installed here). Calls `on_ready` once every worker runs.
///
/// Refuses to start on an address the host already has
/// ([`StartError::AddressInUse`]); ends in [`StartError::InterfaceGone`] (with the
/// report) when the interface is deleted or set down while it runs.
pub fn run(
    opts: &Options,
    stop: Arc<AtomicBool>,
    signals: bool,
    on_ready: impl FnOnce(&Ready),
) -> Result<Report, StartError> {
    let hooks = Hooks {
        signals,
        ..Hooks::default()
    };
    run_with(opts, stop, hooks, on_ready)
}

/// [`run`] with the binary's hooks: log level control and SIGHUP reloads.
pub fn run_with(
    opts: &Options,
    stop: Arc<AtomicBool>,
    hooks: Hooks,
    on_ready: impl FnOnce(&Ready),
) -> Result<Report, StartError> {
    if !opts.ports.is_empty() {
        return Err(OptionsError::PortsForRun.into());
    }
    let listen: Vec<(String, u16)> = opts
        .services
        .iter()
        .map(|&(s, port)| (s.name().to_owned(), port))
        .collect();
    let (services, settings) = (opts.services.clone(), opts.settings);
    let make =
        move |_: usize, _: &[SocketAddr], _: &Fanout<_>| service::builtin(&services, &settings);
    launch(opts, listen, stop, hooks, make, Extras::builtin(), on_ready)
}

/// Runs a service of your own on the dataplane, listening on `opts.ports` of `opts.addr`,
/// until `stop` is set (or SIGINT/SIGTERM arrives, with `hooks.signals`). `opts.services`
/// must be empty: the built-in services run with [`run`]. The start-up checks and the
/// end when the interface goes away are [`run`]'s.
///
/// `make(worker, addrs, fanout)` builds worker `worker`'s service on that worker's
/// thread (so the service itself need not be `Send`), given the addresses listened on
/// and the [`Fanout`] whose [`publish`](Fanout::publish) reaches every worker's
/// [`on_command`](c10m_apps::Service::on_command) — the same factory that
/// [`c10m_apps::kernel::Server::start`] takes, so one closure serves both backends.
/// Every worker has its own service value: state shared between workers is the
/// service's business (messages through the fanout, or an `Arc` the factory clones).
///
/// What works as for the built-in services: the management socket (with the `management`
/// feature: `stats`, `connections`, `drain`, `shutdown`, metrics), the drain and grace
/// period at stop, and the [`Report`], whose per-worker `echo` counters carry the
/// runtime's `accepted` and `closed` (the echo, http and push figures stay 0). `c10m ctl
/// publish` reaches no one (0 delivered): a service's
/// [`Command`](c10m_apps::Service::Command)s come from its fanout, not from the control
/// path.
///
/// ```no_run
/// use std::sync::{Arc, atomic::AtomicBool};
/// use c10m_apps::services::Echo;
/// use c10m_dataplane::{Hooks, Options, parse_cidr, run_service};
///
/// let opts = Options {
///     iface: "dut0".into(),
///     addr: parse_cidr("198.18.0.10/24").unwrap(),
///     ports: vec![7000],
///     ..Options::default()
/// };
/// let hooks = Hooks { signals: true, ..Hooks::default() };
/// let stop = Arc::new(AtomicBool::new(false));
/// let report = run_service(&opts, stop, hooks, |_, _, _| Echo::default(), |_| {
///     println!("ready")
/// })?;
/// println!("{}", report.to_json());
/// # Ok::<(), c10m_dataplane::StartError>(())
/// ```
pub fn run_service<S, F>(
    opts: &Options,
    stop: Arc<AtomicBool>,
    hooks: Hooks,
    make: F,
    on_ready: impl FnOnce(&Ready),
) -> Result<Report, StartError>
where
    S: c10m_apps::Service + 'static,
    S::Command: Clone + Send,
    F: Fn(usize, &[SocketAddr], &Fanout<S::Command>) -> S + Send + Sync + 'static,
{
    if !opts.services.is_empty() {
        return Err(OptionsError::ServicesForRunService.into());
    }
    let name = type_name::<S>();
    let listen = opts
        .ports
        .iter()
        .map(|&port| (name.clone(), port))
        .collect();
    launch(opts, listen, stop, hooks, make, Extras::plain(), on_ready)
}

/// A service's name for `c10m ctl services`: its type's, without path and parameters.
fn type_name<S>() -> String {
    let full = std::any::type_name::<S>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::")
        .next()
        .unwrap_or(base)
        .to_ascii_lowercase()
}

/// The one start-up path: `listen` names the service of each port for the control
/// path; `make` builds each worker's service and `extras` its hooks.
fn launch<S, F>(
    opts: &Options,
    listen: Vec<(String, u16)>,
    stop: Arc<AtomicBool>,
    mut hooks: Hooks,
    make: F,
    extras: Extras<S>,
    on_ready: impl FnOnce(&Ready),
) -> Result<Report, StartError>
where
    S: c10m_apps::Service + 'static,
    S::Command: Clone + Send,
    F: Fn(usize, &[SocketAddr], &Fanout<S::Command>) -> S + Send + Sync + 'static,
{
    let signals = hooks.signals;
    opts.validate()?;
    host::check_iface(&opts.iface)?;
    for a in opts.service_addrs() {
        host::check_addr_free(a, &opts.iface)?;
    }
    let link_watch = crate::sys::LinkWatch::new(&opts.iface)
        .map_err(|_| StartError::NoSuchInterface(opts.iface.clone()))?;
    if !host::privileged() {
        return Err(StartError::NotPrivileged);
    }
    let has = host::rx_queues(&opts.iface);
    if opts.queues > has {
        return Err(StartError::TooManyQueues {
            iface: opts.iface.clone(),
            asked: opts.queues,
            has,
        });
    }
    let mac = host::mac(&opts.iface)?;
    let seed = getrandom::u64()
        .map_err(io::Error::from)
        .map_err(StartError::system("no random seed from the OS"))?;
    if signals {
        crate::signal::install().map_err(StartError::system("installing signal handlers"))?;
    }

    let cores = opts.worker_cores();
    #[cfg(feature = "management")]
    let mut management = crate::control::Run::bind(&opts.management, cores.clone())?;
    let grace_ms = Arc::new(AtomicU64::new(opts.grace.as_millis() as u64));
    let steering = Arc::new(Steering::attach(&opts.iface, opts.xdp_mode)?);
    for a in opts.service_addrs() {
        steering.add_address(a)?;
    }
    // The program answers SYNs with the stack's cookies itself when the listeners would.
    let window = opts.rx_buf.min(65535) as u16;
    let cookies = match opts.syn_cookies {
        SynCookies::Off => XdpCookies::Off,
        SynCookies::Auto => XdpCookies::Auto { window },
        SynCookies::Always => XdpCookies::Always { window },
    };
    for a in opts.service_addrs() {
        for &(_, port) in &listen {
            steering.add_service(a, Proto::Tcp, port)?;
            steering.set_syn_cookies(a, port, cookies)?;
        }
    }
    let addrs: Vec<SocketAddr> = listen
        .iter()
        .map(|&(_, port)| SocketAddr::from((opts.addr.0, port)))
        .collect();
    let (fanout, inboxes) = Fanout::new(opts.queues as usize);
    let service = Arc::new(Factory {
        listen,
        addrs,
        make,
        extras,
        fanout,
    });

    let allowed: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .iter()
        .map(|c| c.id)
        .collect();
    let outside = worker::outside(&cores, &allowed);
    if !outside.is_empty() {
        tracing::warn!(
            "workers pin themselves to cores {outside:?}, outside the cores this process was \
             started on {allowed:?} (taskset?): choose the workers' cores with --cores"
        );
    }
    // Active opens pick local ports whose replies hash back to their worker's queue.
    let rss = crate::rss::for_workers(&opts.iface, opts.queues);
    let clock = Clock::new();
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut handles = Vec::new();
    let mut links = Vec::new();
    if opts.prefault.is_none() && !opts.prefaults() {
        tracing::info!(
            "not faulting in {} MiB of buffers per worker at start-up (more than {} MiB): \
             a warmer thread faults pages in ahead of use; --prefault true does it all now",
            opts.max_conns.saturating_mul(opts.rx_buf + opts.tx_buf) >> 20,
            crate::config::PREFAULT_AUTO_BYTES >> 20
        );
    }
    let each = worker::arp_mesh(opts.queues as usize)
        .into_iter()
        .zip(inboxes);
    for (q, (mesh, inbox)) in (0..opts.queues).zip(each) {
        let config = Config {
            mac,
            addrs: vec![opts.addr],
            ipv6_addrs: opts.addr6.into_iter().collect(),
            gateway: opts.gateway,
            max_connections: opts.max_conns,
            max_half_open: opts.max_conns,
            rst_rate: opts.rst_rate,
            rst_burst: opts.rst_rate,
            seed: seed ^ u64::from(q).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            prefault: opts.prefaults(),
            // Every connection the daemon opens has these buffers: keep them in the slots.
            buffers_in_slot: opts.rx_buf + opts.tx_buf,
            ..Config::default()
        };
        let (link, ends) = link::pair(q as usize, grace_ms.clone());
        links.push(ends);
        let (opts, steering, stop, ready, rss, service) = (
            opts.clone(),
            steering.clone(),
            stop.clone(),
            ready_tx.clone(),
            rss.clone(),
            service.clone(),
        );
        let handle = std::thread::Builder::new()
            .name(format!("c10m-q{q}"))
            .spawn(move || {
                let ports = crate::rss::chooser(rss.as_ref(), q);
                worker_main(
                    q, &opts, &service, &config, ports, &steering, &stop, mesh, clock, ready, link,
                    inbox,
                )
            })
            .map_err(StartError::system("starting a worker thread"))?;
        handles.push(handle);
    }
    drop(ready_tx);

    let mut ready = Ready {
        xdp_mode: steering.mode(),
        zero_copy: vec![false; opts.queues as usize],
        hugepages: vec![false; opts.queues as usize],
    };
    let mut failure = None;
    let mut warmers = Vec::new();
    for _ in 0..opts.queues {
        match ready_rx.recv() {
            Ok((q, Ok((zc, huge, warmer)))) => {
                ready.zero_copy[q as usize] = zc;
                ready.hugepages[q as usize] = huge;
                warmers.push(warmer);
            }
            Ok((queue, Err(source))) => {
                failure.get_or_insert(StartError::Worker { queue, source });
            }
            Err(_) => break,
        }
    }
    if let Some(err) = failure {
        stop.store(true, Ordering::SeqCst);
        for h in handles {
            let _ = h.join();
        }
        return Err(err);
    }
    #[cfg(feature = "management")]
    management.serve(crate::control::Workers::new(
        links,
        crate::control::services_json(opts.addr.0, &service.listen),
        hooks.log.clone(),
        stop.clone(),
        grace_ms.clone(),
        management.lifecycle(),
        steering.clone(),
    ))?;
    on_ready(&ready);
    // After `ready`: the warmer faults the demux tables in whole (a second or two of a
    // core at ten million slots), which nothing before `ready` needs.
    // Without it, pages fault in on the workers as connections first touch them.
    let warm = if opts.prefaults() {
        None
    } else {
        crate::warm::spawn(warmers, cores, stop.clone())
            .inspect_err(|e| {
                tracing::warn!("no memory warmer ({e}): workers fault their memory in themselves")
            })
            .ok()
    };

    // The interface is watched while serving and while the workers drain: once it is
    // gone nothing can reach the connections any more, so the grace period ends at once.
    let mut gone = false;
    let mut next_look = Instant::now();
    let mut look = |gone: &mut bool| {
        if *gone || Instant::now() < next_look {
            return;
        }
        next_look = Instant::now() + LINK_LOOK;
        if !link_watch.alive() {
            tracing::error!("interface {} went away (deleted or down)", opts.iface);
            grace_ms.store(0, Ordering::Relaxed);
            *gone = true;
        }
    };
    while !gone && !stop.load(Ordering::SeqCst) && !handles.iter().any(|h| h.is_finished()) {
        if crate::signal::received() {
            tracing::info!("stopping: draining for up to {:?}", opts.grace);
            break;
        }
        if crate::signal::hangup() {
            link::reload(&mut hooks, &grace_ms);
        }
        look(&mut gone);
        std::thread::sleep(Duration::from_millis(20));
    }
    #[cfg(feature = "management")]
    management.stopping();
    stop.store(true, Ordering::SeqCst);
    while !handles.iter().all(|h| h.is_finished()) {
        look(&mut gone);
        std::thread::sleep(Duration::from_millis(20));
    }
    let workers: Vec<WorkerReport> = handles
        .into_iter()
        .filter_map(|h| h.join().ok().flatten())
        .collect();
    if let Some(warm) = warm {
        let _ = warm.join();
    }
    #[cfg(feature = "management")]
    management.finish();
    let steering_counters = steering.counters().ok();
    let report = Report::new(&steering, steering_counters, workers);
    if gone {
        return Err(StartError::InterfaceGone {
            iface: opts.iface.clone(),
            report: Box::new(report),
        });
    }
    Ok(report)
}

/// How often the main thread looks at the interface (two ioctls): the daemon notices a
/// deleted or downed interface within this, and the workers then stop without a grace
/// period, so the process exits well inside 2 s.
const LINK_LOOK: Duration = Duration::from_millis(200);

/// A worker's start: zero-copy, on hugepages, and its stack's growing memory.
type ReadyMsg = (u32, Result<(bool, bool, Warmer), WorkerError>);

/// What every worker needs to build its service.
struct Factory<F, S: c10m_apps::Service> {
    /// Each listener's service name and port.
    listen: Vec<(String, u16)>,
    /// The addresses listened on, for the factory.
    addrs: Vec<SocketAddr>,
    make: F,
    extras: Extras<S>,
    /// Reaches every worker's service.
    fanout: Fanout<S::Command>,
}

/// One worker's thread: set up, report ready, loop, shut down.
#[allow(clippy::too_many_arguments)]
fn worker_main<S, F>(
    q: u32,
    opts: &Options,
    service: &Factory<F, S>,
    config: &Config,
    ports: Box<dyn PortChooser>,
    steering: &Steering,
    stop: &AtomicBool,
    mesh: ArpMesh,
    clock: Clock,
    ready: mpsc::Sender<ReadyMsg>,
    mut link: worker::Link,
    inbox: Inbox<S::Command>,
) -> Option<WorkerReport>
where
    S: c10m_apps::Service,
    F: Fn(usize, &[SocketAddr], &Fanout<S::Command>) -> S,
{
    let core = opts.core(q);
    worker::pin(core);
    let fail = |e: WorkerError| {
        let _ = ready.send((q, Err(e)));
        None
    };
    let frames = opts.umem_frames();
    let Some((mem, book)) = Memory::new(frames, opts.frame_size, HugePages::Auto) else {
        let bytes = frames as usize * opts.frame_size as usize;
        return fail(WorkerError::Umem { bytes });
    };
    let layout = Layout::for_frames(frames);
    let rings = layout.rings;
    let socket = match Socket::open(&opts.iface, q, &mem, opts.frame_size, rings, opts.zero_copy) {
        Ok(s) => s,
        Err(e) => return fail(WorkerError::Socket(e)),
    };
    let zero_copy = socket.zero_copy();
    let mut port = Port::new(socket, mem, book, opts.frame_size, layout);
    let mut stack = match Stack::new(config, clock.now()) {
        Ok(s) => s,
        Err(e) => return fail(e.into()),
    };
    stack.set_port_chooser(ports);
    let listen = ListenOptions {
        socket: SocketOptions {
            rx_buf: opts.rx_buf,
            tx_buf: opts.tx_buf,
            congestion: opts.congestion,
            timestamps: opts.timestamps,
            send_timeout: opts
                .send_timeout
                .map(|d| c10m_stack::Duration::from_millis(d.as_millis() as u64)),
            ..SocketOptions::default()
        },
        backlog: opts.backlog,
        syn_cookies: opts.syn_cookies,
        synack_retries: opts.synack_retries,
        max_per_source: opts.max_conns_per_source,
    };
    let svc = (service.make)(q as usize, &service.addrs, &service.fanout);
    let mut apps = Apps::new(svc, service.extras, inbox, stack.capacity(), clock.now());
    apps.settle_memory((!config.prefault).then(|| stack.warmer()).as_ref());
    let mut listeners = Vec::new();
    for (name, port_no) in &service.listen {
        match apps.listen(&mut stack, *port_no, listen) {
            Ok(l) => listeners.push(l),
            Err(source) => {
                let (service, port) = (name.clone(), *port_no);
                return fail(WorkerError::Listen {
                    service,
                    port,
                    source,
                });
            }
        }
    }
    if let Err(e) = steering.register_xsk(q, port.socket().fd()) {
        return fail(e.into());
    }
    let _ = ready.send((q, Ok((zero_copy, port.on_hugepages(), stack.warmer()))));
    drop(ready);

    let loop_stats = worker::run(
        &mut stack, &mut port, &mut apps, &mesh, clock, opts.idle, stop, &mut link, &listeners,
        steering,
    );

    // Frames for this queue go to the kernel from here on; then account for ours.
    let _ = steering.unregister_xsk(q);
    let kernel = port.kernel_stats();
    let (stats, frames) = port.close(Duration::from_millis(200));
    Some(WorkerReport {
        queue: q,
        core,
        zero_copy,
        connections_at_exit: stack.connections(),
        stack: crate::stats::stack_json(&stack.counters()),
        echo: apps.stats(),
        port: stats,
        kernel,
        worker: loop_stats,
        frames,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use c10m_apps::services::{Builtin, Echo};

    #[test]
    fn a_service_is_named_after_its_type() {
        assert_eq!(type_name::<Echo>(), "echo");
        assert_eq!(type_name::<Builtin>(), "builtin");
        assert_eq!(type_name::<Option<Echo>>(), "option");
    }

    #[test]
    fn each_entry_refuses_the_other_ones_services() {
        let stop = Arc::new(AtomicBool::new(false));
        let own = Options {
            ports: vec![7000],
            ..Options::default()
        };
        let e = run(&own, stop.clone(), false, |_| {}).unwrap_err();
        assert!(e.to_string().contains("run_service"), "{e}");
        let builtin = Options {
            services: vec![(c10m_apps::services::Kind::Echo, 7)],
            ..Options::default()
        };
        let make = |_: usize, _: &[SocketAddr], _: &Fanout<()>| Echo::default();
        let e = run_service(&builtin, stop, Hooks::default(), make, |_| {}).unwrap_err();
        assert!(e.to_string().contains("ports"), "{e}");
    }
}
