//! `c10m`: the dataplane daemon and its management client.
//!
//! * `c10m run --iface dut0 --addr 198.18.0.10/24 --service echo:7` (or `--config FILE`):
//!   prints `ready` on stdout once every worker runs, and the final report as one JSON
//!   line on stdout when stopped with SIGINT or SIGTERM. Logs go to stderr (`RUST_LOG`,
//!   `--log-level`, `log_level`).
//! * `c10m ctl [--mgmt PATH] COMMAND [ARG] [--json]`: asks a running daemon.
//! * `c10m kernel --addr 127.0.0.1 --service http:8080 --workers 2`: the same built-in
//!   services on Linux sockets (the epoll baseline), until SIGINT or SIGTERM; prints
//!   `ready` once listening and a JSON line of counters when stopped.

//!
//! Exit status: 0 after a stop, 1 when it cannot start (one line on stderr that says
//! what to do), 2 for a bad command line, 3 when the interface went away while running
//! (deleted or set down: restart the daemon once it is back).

mod config_file;
mod ctl;
mod kernel;
mod log;
mod settings;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use c10m_dataplane::{
    DEFAULT_ON_STATE_TIMEOUT, DEFAULT_SOCKET, HookError, Hooks, Idle, OnState, Options, Reload,
    StartError, check_synack_retries, parse_any_cidr, parse_cores, parse_service, set_addrs,
};
use c10m_ebpf::XdpMode;
use clap::{Parser, Subcommand};

use crate::config_file::{
    FileConfig, RELOADABLE, max_send_timeout, parse_grace, parse_on_state_timeout, parse_timeout,
    parse_zero_copy,
};

#[derive(Parser)]
#[command(
    name = "c10m",
    version,
    about = "Kernel-bypass TCP dataplane (XDP + AF_XDP)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the dataplane on an interface until SIGINT or SIGTERM.
    Run(Box<RunArgs>),
    /// Ask a running daemon: stats, connections, services, log-level, drain, shutdown,
    /// publish.
    Ctl(ctl::Args),
    /// Run the built-in services on Linux sockets (epoll) until SIGINT or SIGTERM.
    Kernel(kernel::Args),
}

/// The exit status when the interface went away while running.
const EXIT_INTERFACE_GONE: u8 = 3;

/// Every flag is optional here: defaults come from the config file, then built-ins.
#[derive(clap::Args)]
struct RunArgs {
    /// A TOML file with any of these settings (flags override it).
    #[arg(long)]
    config: Option<String>,
    /// Interface to attach to.
    #[arg(long)]
    iface: Option<String>,
    /// Service address with the link's prefix, e.g. 198.18.0.10/24: an address of its
    /// own, not one the host already has. Repeatable: one IPv4 address and, in a build
    /// with `--features ipv6`, one IPv6 address beside it, e.g. 2001:2::10/64.
    #[arg(long = "addr", value_name = "ADDR", value_parser = parse_any_cidr)]
    addrs: Vec<(IpAddr, u8)>,
    /// Default gateway of the dataplane's stack.
    #[arg(long)]
    gateway: Option<Ipv4Addr>,
    /// Service and TCP port, e.g. echo:7 (repeatable). Services: echo, http, push.
    #[arg(long = "service", value_parser = parse_service)]
    services: Vec<(c10m_apps::services::Kind, u16)>,
    /// Queues (one worker each): 0..N. Default 1.
    #[arg(long)]
    queues: Option<u32>,
    /// Cores for the workers, e.g. 0-3 or 2,4 (default 0..N).
    #[arg(long, value_parser = core_list)]
    cores: Option<CoreList>,
    /// XDP attach mode: auto, native or generic.
    #[arg(long)]
    xdp_mode: Option<XdpMode>,
    /// AF_XDP zero-copy: auto, on or off.
    #[arg(long, value_parser = parse_zero_copy)]
    zero_copy: Option<c10m_dataplane::ZeroCopy>,
    /// Idle policy: adaptive (spin, then sleep) or spin.
    #[arg(long)]
    idle: Option<Idle>,
    /// Connection slots per worker (default 16384).
    #[arg(long)]
    max_conns: Option<usize>,
    /// Connections that may wait on each listener, half-open or not yet accepted (default
    /// 4096, as the kernel backend's listen backlog).
    #[arg(long)]
    backlog: Option<u32>,
    /// SYN cookies: auto (when a listener's backlog or the half-open budget is full),
    /// always, or off (default auto).
    #[arg(long)]
    syn_cookies: Option<c10m_stack::SynCookies>,
    /// SYN-ACK retransmissions before an unanswered half-open connection is freed, 0 to 15
    /// (default 3: given up 15 s after the SYN).
    #[arg(long, value_parser = |s: &str| s.parse::<u8>().map_err(|e| e.to_string()).and_then(|n| check_synack_retries(n).map_err(|e| e.to_string())))]
    synack_retries: Option<u8>,
    /// Seconds queued data may go unacknowledged before the connection is aborted; 0 for
    /// never (default 60).
    #[arg(long, value_parser = |s: &str| s.parse::<f64>().map_err(|e| e.to_string()).and_then(|v| parse_timeout(v, max_send_timeout()).map(|_| v)))]
    send_timeout: Option<f64>,
    /// Live connections one source address may hold per listener; 0 for no limit (default).
    #[arg(long)]
    max_conns_per_source: Option<u32>,
    /// RSTs per second per worker for segments that match no connection (default 1000).
    #[arg(long)]
    rst_rate: Option<u32>,
    /// Receive buffer bytes per connection (default 2048). Above 64 KiB the window is
    /// scaled (RFC 7323) when the client offers it.
    #[arg(long)]
    rx_buf: Option<usize>,
    /// Transmit buffer bytes per connection (default 2048).
    #[arg(long)]
    tx_buf: Option<usize>,
    /// Congestion control: reno (the default), none, or cubic (in a build with the `cubic`
    /// feature).
    #[arg(long)]
    congestion: Option<c10m_stack::Congestion>,
    /// TCP timestamps (RFC 7323) when the client offers them, true or false (default
    /// true, as Linux's net.ipv4.tcp_timestamps); off saves about a tenth of the
    /// per-segment work.
    #[arg(long)]
    timestamps: Option<bool>,
    /// Fault in the connection slab and buffers at start-up, true or false (default: true while a
    /// worker's buffers are at most 1 GiB): memory then stays flat under load and floods
    /// and no page fault hits the packet path, but start-up takes about 2.5 s per GiB.
    #[arg(long)]
    prefault: Option<bool>,
    /// UMEM frames per worker, a power of two (default: one per 16 --max-conns, 16384
    /// to 262144).
    #[arg(long)]
    umem_frames: Option<u32>,
    /// UMEM frame size: 2048 or 4096.
    #[arg(long)]
    frame_size: Option<u32>,
    /// Seconds a stop lets open connections finish after their FINs before resetting them
    /// (default 5; 0 resets them at once, without FINs).
    #[arg(long, value_parser = |s: &str| s.parse::<f64>().map_err(|e| e.to_string()).and_then(parse_grace))]
    grace: Option<std::time::Duration>,
    /// The management socket (default /run/c10m/c10m.sock; mode 0600).
    #[arg(long)]
    mgmt: Option<String>,
    /// Serve GET /metrics and GET /stats on this localhost address, e.g. 127.0.0.1:9100.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Log filter, e.g. info or c10m_dataplane=debug (default: RUST_LOG, else info).
    #[arg(long)]
    log_level: Option<String>,
    /// Run this shell command with the new state (serving, draining, stopping) as its
    /// argument on every change, e.g. to announce or withdraw a BGP route; off the
    /// dataplane cores, killed after --on-state-timeout.
    #[arg(long, value_name = "CMD")]
    on_state: Option<String>,
    /// Seconds an --on-state command may run before it is killed (default 10).
    #[arg(long, value_parser = |s: &str| s.parse::<f64>().map_err(|e| e.to_string()).and_then(parse_on_state_timeout))]
    on_state_timeout: Option<std::time::Duration>,
    #[command(flatten)]
    service: settings::ServiceArgs,
}

/// A core list as one value (clap would take a bare `Vec` as repeated values).
#[derive(Clone)]
struct CoreList(Vec<usize>);

fn core_list(s: &str) -> Result<CoreList, String> {
    parse_cores(s).map(CoreList).map_err(|e| e.to_string())
}

/// The options: built-in defaults, then the file, then the flags.
fn options(a: &RunArgs, file: Option<&FileConfig>) -> Result<Options, String> {
    let mut o = Options::default();
    // The daemon has a management socket unless told otherwise (the library has none).
    o.management.socket = Some(DEFAULT_SOCKET.into());
    if let Some(f) = file {
        f.apply(&mut o)?;
    }
    macro_rules! flag {
        ($($field:ident <- $arg:expr),* $(,)?) => {$(
            if let Some(v) = $arg.clone() { o.$field = v; }
        )*};
    }
    set_addrs(&mut o, &a.addrs).map_err(|e| format!("--addr: {e}"))?;
    flag!(iface <- a.iface, queues <- a.queues, xdp_mode <- a.xdp_mode,
          zero_copy <- a.zero_copy, idle <- a.idle, max_conns <- a.max_conns, backlog <- a.backlog,
          syn_cookies <- a.syn_cookies,
          rx_buf <- a.rx_buf, tx_buf <- a.tx_buf, congestion <- a.congestion,
          timestamps <- a.timestamps,
          frame_size <- a.frame_size, grace <- a.grace,
          synack_retries <- a.synack_retries, rst_rate <- a.rst_rate);
    if a.prefault.is_some() {
        o.prefault = a.prefault;
    }
    if a.umem_frames.is_some() {
        o.frames = a.umem_frames;
    }
    a.service.apply(&mut o.settings);
    if let Some(s) = a.send_timeout {
        o.send_timeout = parse_timeout(s, max_send_timeout())?;
    }
    if let Some(n) = a.max_conns_per_source {
        o.max_conns_per_source = (n > 0).then_some(n);
    }
    if a.gateway.is_some() {
        o.gateway = a.gateway;
    }
    if !a.services.is_empty() {
        o.services = a.services.clone();
    }
    if let Some(c) = &a.cores {
        o.cores = Some(c.0.clone());
    }
    if let Some(m) = &a.mgmt {
        o.management.socket = (!m.is_empty()).then(|| m.into());
    }
    if a.metrics.is_some() {
        o.management.metrics = a.metrics;
    }
    if let Some(cmd) = &a.on_state {
        o.management.on_state = (!cmd.trim().is_empty()).then(|| OnState {
            command: cmd.clone(),
            timeout: DEFAULT_ON_STATE_TIMEOUT,
        });
    }
    if let Some(t) = a.on_state_timeout {
        match &mut o.management.on_state {
            Some(hook) => hook.timeout = t,
            None => return Err("--on-state-timeout: no --on-state command to time".into()),
        }
    }
    if o.iface.is_empty() {
        return Err("iface: no interface given: use --iface or `iface` in the config file".into());
    }
    if o.addr.0.is_unspecified() {
        return Err(
            "addr: no service address given: use --addr or `addr` in the config file".into(),
        );
    }
    Ok(o)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // One line, like every other start-up error.
            let text = e.to_string();
            let line: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more"))
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("c10m: {}", line.join(" ").trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Ctl(args) => ctl::main(&args),
        Command::Kernel(args) => kernel::main(&args),
        Command::Run(a) => run(&a),
    }
}

fn run(a: &RunArgs) -> ExitCode {
    let fail = |e: String| {
        eprintln!("c10m: {e}");
        ExitCode::FAILURE
    };
    let file = match a.config.as_deref().map(FileConfig::load).transpose() {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let level = a
        .log_level
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .or_else(|| file.as_ref().and_then(|f| f.log_level.clone()))
        .unwrap_or_else(|| "info".into());
    let log = match log::init(&level) {
        Ok(l) => l,
        Err(e) => return fail(format!("log_level: {e}")),
    };
    let opts = match options(a, file.as_ref()) {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    let mut hooks = Hooks {
        signals: true,
        log: Some(log),
        on_hangup: None,
    };
    if let (Some(path), Some(first)) = (a.config.clone(), file) {
        let last = Mutex::new(first);
        hooks.on_hangup = Some(Box::new(move || -> Result<Reload, HookError> {
            let new = FileConfig::load(&path)?;
            let mut last = last.lock().map_err(|_| "poisoned".to_owned())?;
            let changed = last.changed(&new);
            let grace = new.grace.map(parse_grace).transpose();
            let reload = Reload {
                log_level: new
                    .log_level
                    .clone()
                    .filter(|_| changed.iter().any(|k| k == "log_level")),
                grace: grace.map_err(|e| format!("grace: {e}"))?,
                restart: changed
                    .into_iter()
                    .filter(|k| !RELOADABLE.contains(&k.as_str()))
                    .collect(),
            };
            *last = new;
            Ok(reload)
        }));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let result = c10m_dataplane::run_with(&opts, stop, hooks, |ready| {
        let mode = |zc: &bool| if *zc { "zero-copy" } else { "copy" };
        let modes: Vec<_> = ready.zero_copy.iter().map(mode).collect();
        tracing::info!(
            addr = %opts.addr.0,
            iface = %opts.iface,
            xdp = %ready.xdp_mode,
            af_xdp = %modes.join("/"),
            hugepages = ready.hugepages.iter().all(|&h| h),
            "ready"
        );
        println!("ready");
    });
    match result {
        Ok(report) => {
            println!("{}", report.to_json());
            ExitCode::SUCCESS
        }
        Err(e @ StartError::InterfaceGone { .. }) => {
            if let StartError::InterfaceGone { report, .. } = &e {
                println!("{}", report.to_json());
            }
            eprintln!("c10m: {e}");
            ExitCode::from(EXIT_INTERFACE_GONE)
        }
        Err(e) => fail(e.to_string()),
    }
}
