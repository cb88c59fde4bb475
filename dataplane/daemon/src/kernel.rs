//! `c10m kernel`: the built-in services of `c10m-apps` on the kernel backend (one epoll
//! reactor per worker, `SO_REUSEPORT` listeners), the baseline of every benchmark. A
//! port another process listens on is refused unless `--reuseport` asks to share it.
//!
//! Prints `listening NAME ADDR` per service (port 0 picks a free port), then `ready`;
//! when stopped, one JSON line of the workers' summed counters. `--mgmt PATH` opens a
//! management socket for benchmarks ([`mgmt`]: its connections, and the push service's
//! publish).

mod mgmt;

use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use c10m_apps::services::{Settings, Spec};
use c10m_apps::{KernelOptions, kernel};

/// `c10m kernel --addr A --service NAME:PORT... --workers N`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The address to listen on, e.g. 127.0.0.1 or 0.0.0.0.
    #[arg(long)]
    addr: IpAddr,
    /// Service and TCP port, e.g. http:8080 (repeatable). Services: echo, http, push.
    #[arg(long = "service", value_parser = parse_spec, required = true)]
    services: Vec<Spec>,
    /// Reactor threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Connections per worker.
    #[arg(long, default_value_t = 16384)]
    max_conns: usize,
    #[command(flatten)]
    service: crate::settings::ServiceArgs,
    /// Stop after this many seconds (default: until SIGINT or SIGTERM).
    #[arg(long)]
    duration: Option<f64>,
    /// Share the ports with other `c10m kernel` processes (SO_REUSEPORT: the kernel
    /// spreads the clients). Without it a port in use is refused.
    #[arg(long)]
    reuseport: bool,
    /// A management socket (line-delimited JSON: `stats`, `publish`), for benchmarks;
    /// none by default.
    #[arg(long)]
    mgmt: Option<std::path::PathBuf>,
}

fn parse_spec(s: &str) -> Result<Spec, String> {
    s.parse()
        .map_err(|e: c10m_apps::services::ParseError| e.to_string())
}

pub(crate) fn main(a: &Args) -> ExitCode {
    let fail = |e: String| {
        eprintln!("c10m: {e}");
        ExitCode::FAILURE
    };
    if a.workers == 0 {
        return fail("--workers must be at least 1".into());
    }
    let stop = Arc::new(AtomicBool::new(false));
    // SIGHUP is caught and ignored (the kernel backend has nothing to reload), as `c10m
    // run` catches it for its reload: a closed terminal does not end the server.
    let hangup = Arc::new(AtomicBool::new(false));
    let handlers = c10m_apps::stop_on_signal(stop.clone())
        .and_then(|()| signal_hook::flag::register(signal_hook::consts::SIGHUP, hangup).map(drop));
    if let Err(e) = handlers {
        return fail(format!("cannot install signal handlers: {e}"));
    }
    let mut settings = Settings::default();
    a.service.apply(&mut settings);
    let opts = KernelOptions {
        addr: a.addr,
        services: a.services.clone(),
        config: kernel::Config {
            workers: a.workers,
            max_connections: a.max_conns,
            reuseport: a.reuseport,
            ..kernel::Config::default()
        },
        settings,
        duration: None,
    };
    let server = match c10m_apps::start_kernel(&opts) {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    if let Some(path) = &a.mgmt {
        let listeners = a.services.len() * a.workers;
        if let Err(e) = mgmt::serve(path, server.fanout(), listeners) {
            let _ = server.stop();
            return fail(format!("--mgmt {}: {e}", path.display()));
        }
    }
    for (addr, s) in server.local_addrs().iter().zip(&opts.services) {
        println!("listening {} {addr}", s.kind);
    }
    println!("ready");
    let start = Instant::now();
    let limit = a.duration.map(Duration::from_secs_f64);
    while !stop.load(Ordering::Relaxed) && limit.is_none_or(|d| start.elapsed() < d) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(path) = &a.mgmt {
        let _ = std::fs::remove_file(path);
    }
    match server.stop() {
        Ok(s) => {
            println!(
                "{{\"accepted\":{},\"closed\":{},\"idle_closed\":{},\"refused\":{},\"commands\":{}}}",
                s.accepted, s.closed, s.idle_closed, s.refused, s.commands
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e.to_string()),
    }
}
