//! `c10m`: the dataplane daemon. `c10m run --iface dut0 --addr 198.18.0.10/24 --service echo:7`
//!
//! Prints `ready` on stdout once every worker runs, and the final report as one JSON
//! line on stdout when stopped with SIGINT or SIGTERM. Logs go to stderr (`RUST_LOG`).

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use c10m_dataplane::{Idle, Options, ZeroCopy, parse_cidr, parse_cores, parse_service};
use c10m_ebpf::XdpMode;
use clap::{Parser, Subcommand};

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
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Interface to attach to.
    #[arg(long)]
    iface: String,
    /// Service address with prefix (not configured in the kernel), e.g. 198.18.0.10/24.
    #[arg(long, value_parser = parse_cidr)]
    addr: (Ipv4Addr, u8),
    /// Default gateway of the dataplane's stack.
    #[arg(long)]
    gateway: Option<Ipv4Addr>,
    /// Service and TCP port, e.g. echo:7 (repeatable). Services: echo.
    #[arg(long = "service", value_parser = parse_service, required = true)]
    services: Vec<(c10m_dataplane::Service, u16)>,
    /// Queues (one worker each): 0..N.
    #[arg(long, default_value_t = 1)]
    queues: u32,
    /// Cores for the workers, e.g. 0-3 or 2,4 (default 0..N).
    #[arg(long, value_parser = core_list)]
    cores: Option<CoreList>,
    /// XDP attach mode: auto, native or generic.
    #[arg(long, default_value = "auto")]
    xdp_mode: XdpMode,
    /// AF_XDP zero-copy: auto, on or off.
    #[arg(long, default_value = "auto", value_parser = parse_zero_copy)]
    zero_copy: ZeroCopy,
    /// Idle policy: adaptive (spin, then sleep) or spin.
    #[arg(long, default_value = "adaptive")]
    idle: Idle,
    /// Connection slots per worker.
    #[arg(long, default_value_t = 16384)]
    max_conns: usize,
    /// Receive buffer bytes per connection.
    #[arg(long, default_value_t = 2048)]
    rx_buf: usize,
    /// Transmit buffer bytes per connection.
    #[arg(long, default_value_t = 2048)]
    tx_buf: usize,
    /// UMEM frames per worker (power of two).
    #[arg(long, default_value_t = 4096)]
    umem_frames: u32,
    /// UMEM frame size: 2048 or 4096.
    #[arg(long, default_value_t = 2048)]
    frame_size: u32,
}

/// A core list as one value (clap would take a bare `Vec` as repeated values).
#[derive(Clone)]
struct CoreList(Vec<usize>);

fn core_list(s: &str) -> Result<CoreList, String> {
    parse_cores(s).map(CoreList)
}

fn parse_zero_copy(s: &str) -> Result<ZeroCopy, String> {
    match s {
        "auto" => Ok(ZeroCopy::Auto),
        "on" => Ok(ZeroCopy::On),
        "off" => Ok(ZeroCopy::Off),
        _ => Err(format!(
            "unknown zero-copy mode {s:?}: expected auto, on or off"
        )),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
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
    let Command::Run(a) = cli.command;
    let opts = Options {
        iface: a.iface,
        addr: a.addr,
        gateway: a.gateway,
        services: a.services,
        queues: a.queues,
        cores: a.cores.map(|c| c.0),
        xdp_mode: a.xdp_mode,
        zero_copy: a.zero_copy,
        idle: a.idle,
        max_conns: a.max_conns,
        rx_buf: a.rx_buf,
        tx_buf: a.tx_buf,
        frames: a.umem_frames,
        frame_size: a.frame_size,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let result = c10m_dataplane::run(&opts, stop, true, |ready| {
        let mode = |zc: &bool| if *zc { "zero-copy" } else { "copy" };
        let modes: Vec<_> = ready.zero_copy.iter().map(mode).collect();
        log::info!(
            "{} on {}: XDP {}, AF_XDP {}, UMEM on {}",
            opts.addr.0,
            opts.iface,
            ready.xdp_mode,
            modes.join("/"),
            if ready.hugepages.iter().all(|&h| h) {
                "hugepages"
            } else {
                "4 KiB pages"
            }
        );
        println!("ready");
    });
    match result {
        Ok(report) => {
            println!("{}", report.to_json());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("c10m: {e}");
            ExitCode::FAILURE
        }
    }
}
