//! `c10m-bench compare`: the dataplane against the kernel on the same host, in one run.
//!
//! Run it as root in the root namespace with the test bed up (one queue). It starts the
//! servers itself in c10m-dut, pinned to `--server-core` — the dataplane
//! (`c10m run`, http:80 and echo:7 on 198.18.0.10) and the kernel baseline
//! (`c10m kernel`, the same services on 198.18.0.2, one epoll reactor) — and runs the same
//! generators, this binary's `conns`, `rps` and `cps` subcommands over AF_XDP in
//! c10m-gen pinned to `--gen-core`, against each in turn:
//!
//! * `held`: `conns` opens, holds and resets each of `--held` counts of connections
//!   (echo:7). The dataplane's figure is its own accounting of reserved bytes per
//!   connection slot (management socket); the kernel's is the growth of its TCP slab
//!   caches plus socket buffer pages (`/proc/net/sockstat` mem) per held connection.
//!   Both also get the growth of the server processes' RSS per held connection. The
//!   kernel holds at most 19,000 connections per process here (RLIMIT_NOFILE 20,000
//!   cannot be raised), so it runs ceil(N / 19,000) processes sharing the port through
//!   SO_REUSEPORT.
//! * `rps`: requests per second and latency percentiles at each `--rps-conns` level.
//! * `cps`: connections per second at each `--cps-concurrency`.
//! * `flood` (not in the default set): each server's echo service under a random-source
//!   SYN flood from this binary's `flood` subcommand, measured by kernel clients in
//!   c10m-gen — new connections that succeed, an established connection's round trips
//!   before, during and after, RSS, RSTs and SYN cookies (see the `flood` module). It
//!   runs last for each server, since a server may stay impaired after it.
//! * `push` (not in the default set): `--push-conns` live subscribers of each server's
//!   push service — every one subscribes, heartbeats with PING/PONG, and gets one
//!   publish — the kernel at the largest count it can hold here (several processes;
//!   see the `push` module), with the connections and memory sampled over the run.
//!
//! A scenario whose generator fails is recorded with its error; the run goes on. Every
//! child has a deadline; Ctrl-C stops the current child, the servers, restores the
//! sysctls and writes a partial report. Output: the side-by-side table on stdout (or the
//! report's JSON with `--json`), and `report.json`, `report.md` and SVG plots in
//! `results/<UTC timestamp>/` (`--out`).

mod cpu;
mod describe;
pub(crate) mod flood;
mod held;
mod host;
mod plot;
pub(crate) mod proc;
mod push;
mod report;
mod servers;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};

use host::KernelSample;
use report::{ConnsOut, Cps, CpsOut, Held, Report, Rps, RpsOut, Server, ServerRun, Sysctl};

use crate::net::GEN_NS;
pub(crate) const DUT_NS: &str = "c10m-dut";
pub(crate) const DP_ADDR: &str = "198.18.0.10";
pub(crate) const KERNEL_ADDR: &str = "198.18.0.2";
/// The start of every dataplane command line: `c10m run` on dut0 at [`DP_ADDR`], one queue.
const DP_RUN: [&str; 9] = [
    "run",
    "--iface",
    "dut0",
    "--addr",
    "198.18.0.10/24",
    "--gateway",
    "198.18.0.1",
    "--queues",
    "1",
];
/// nginx's port on 198.18.0.2 (the kernel server has 80).
const NGINX_PORT: u16 = 8080;
/// Connections per `c10m kernel` process: RLIMIT_NOFILE (20,000 here) less room for the
/// process's own descriptors.
const PER_PROCESS: u32 = 19_000;
/// Sysctls an operator sets for a kernel server holding many connections, and SYN
/// cookies on (the flood scenario's kernel defence; per network namespace).
const SYSCTLS: [(&str, &str); 3] = [
    ("net.core.somaxconn", "65535"),
    ("net.ipv4.tcp_max_syn_backlog", "65535"),
    ("net.ipv4.tcp_syncookies", "1"),
];

/// The parts of a run.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Held,
    Rps,
    Cps,
    Flood,
    Push,
}

/// The request protocol of `rps` and `cps`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Http,
    Echo,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Http => "http",
            Proto::Echo => "echo",
        }
    }
    fn port(self) -> u16 {
        match self {
            Proto::Http => 80,
            Proto::Echo => 7,
        }
    }
}

/// Arguments of `c10m-bench compare`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Scenarios to run, comma-separated: held, rps, cps, flood, push.
    #[arg(long, value_delimiter = ',', default_value = "held,rps,cps")]
    scenarios: Vec<Scenario>,
    /// Servers to run them against, comma-separated: dataplane, reflector (rps and cps
    /// only), kernel, nginx (http rps and cps only, where it is installed).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "dataplane,reflector,kernel,nginx"
    )]
    servers: Vec<Server>,
    /// Connection counts to hold, comma-separated (each against both servers).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    held: Vec<u32>,
    /// SYNs per second while opening held connections.
    #[arg(long, default_value_t = 25_000)]
    held_rate: u32,
    /// Seconds to hold them once open.
    #[arg(long, default_value_t = 2.0)]
    hold: f64,
    /// Protocol of rps and cps.
    #[arg(long, value_enum, default_value = "http")]
    proto: Proto,
    /// Concurrency levels of rps (connections), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    rps_conns: Vec<u32>,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: u32,
    /// Seconds measured per rps level.
    #[arg(long, default_value_t = 5.0)]
    rps_secs: f64,
    /// Seconds of warm-up before each rps measurement.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Concurrency levels of cps (connections in flight), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100")]
    cps_concurrency: Vec<u32>,
    /// Seconds measured per cps level.
    #[arg(long, default_value_t = 5.0)]
    cps_secs: f64,
    /// flood: SYNs per second, or max (as fast as the generator can).
    #[arg(long, default_value = "max")]
    flood_rate: String,
    /// flood: seconds of flood.
    #[arg(long, default_value_t = 10.0)]
    flood_secs: f64,
    /// flood: new connections opened one after another during the flood (fewer, if the
    /// flood ends first: noted in the report).
    #[arg(long, default_value_t = 200)]
    flood_conns: u32,
    /// push: subscribers on the dataplane.
    #[arg(long, default_value_t = 100_000)]
    push_conns: u32,
    /// push: subscribers on the kernel (default: --push-conns, or fewer: as many as half
    /// the memory available holds at 4 KiB each, and as many as 60 s of connecting at
    /// --push-kernel-rate opens).
    #[arg(long)]
    push_kernel_conns: Option<u32>,
    /// push: SYNs per second against the dataplane.
    #[arg(long, default_value_t = 100_000)]
    push_rate: u32,
    /// push: SYNs per second against the kernel.
    #[arg(long, default_value_t = 25_000)]
    push_kernel_rate: u32,
    /// push: seconds between a subscriber's PINGs.
    #[arg(long, default_value_t = 60.0)]
    push_heartbeat_interval: f64,
    /// push: seconds held once all are connected (default: a heartbeat interval + 1, so
    /// that every subscriber heartbeats at least once; the whole run stays within 6
    /// minutes at 10M with the other defaults).
    #[arg(long)]
    push_hold: Option<f64>,
    /// push: seconds after every subscriber is in before the publish.
    #[arg(long, default_value_t = 1.0)]
    push_publish_after: f64,
    /// push: the servers' idle timeout, seconds (default: 3 heartbeat intervals + 10;
    /// at least 2.5 intervals).
    #[arg(long)]
    push_idle_timeout: Option<f64>,
    /// The dataplane's receive buffer per connection, bytes.
    #[arg(long, default_value_t = 256)]
    rx_buf: usize,
    /// The dataplane's transmit buffer per connection, bytes.
    #[arg(long, default_value_t = 256)]
    tx_buf: usize,
    /// The dataplane's connection slots (default: the largest held count + 131,072).
    #[arg(long)]
    max_conns: Option<usize>,
    /// The core every server is pinned to.
    #[arg(long, default_value_t = 1)]
    server_core: usize,
    /// The core the generator is pinned to.
    #[arg(long, default_value_t = 0)]
    gen_core: usize,
    /// Directory for the report (default `results/<UTC timestamp>`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the report's JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// Runs the comparison; an operator's mistake is one line on stderr and exit status 1,
/// an interrupted run exits 130 after writing its partial report.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    match run_checked(args) {
        Ok(interrupted) => {
            if interrupted {
                std::process::exit(130);
            }
            Ok(())
        }
        Err(e) => {
            eprintln!("c10m-bench compare: {e:#}");
            std::process::exit(1);
        }
    }
}

fn check(args: &Args) -> anyhow::Result<(PathBuf, PathBuf)> {
    if !host::is_root() {
        bail!("needs root (network namespaces, XDP): run it as root or with sudo");
    }
    for ns in [GEN_NS, DUT_NS] {
        if !Path::new("/var/run/netns").join(ns).exists() {
            bail!("the test bed is down (no namespace {ns}): run scripts/testbed up");
        }
    }
    if args.held.contains(&0) || args.rps_conns.contains(&0) || args.cps_concurrency.contains(&0) {
        bail!("--held, --rps-conns and --cps-concurrency take counts above 0");
    }
    if args.flood_rate != "max" && args.flood_rate.parse::<u64>().is_err() {
        bail!("--flood-rate takes SYNs per second or max");
    }
    if !(3.0..=600.0).contains(&args.flood_secs) || args.flood_conns == 0 {
        bail!("--flood-secs must be 3 to 600 seconds and --flood-conns above 0");
    }
    if args.held_rate == 0 || args.pipeline == 0 {
        bail!("--held-rate and --pipeline must be above 0");
    }
    if args.push_conns == 0 || args.push_rate == 0 || args.push_kernel_rate == 0 {
        bail!("--push-conns, --push-rate and --push-kernel-rate must be above 0");
    }
    let beat = args.push_heartbeat_interval;
    if !(0.1..=3600.0).contains(&beat) {
        bail!("--push-heartbeat-interval must be 0.1 to 3600 seconds");
    }
    if args.push_idle_timeout.is_some_and(|t| t < 2.5 * beat) {
        bail!(
            "--push-idle-timeout must be at least 2.5 heartbeat intervals ({})",
            2.5 * beat
        );
    }
    if args.push_hold.is_some_and(|h| !(0.0..=3600.0).contains(&h))
        || !(0.0..=600.0).contains(&args.push_publish_after)
    {
        bail!("--push-hold must be 0 to 3600 seconds and --push-publish-after 0 to 600");
    }
    for (name, v) in [
        ("--hold", args.hold),
        ("--rps-secs", args.rps_secs),
        ("--warmup", args.warmup),
        ("--cps-secs", args.cps_secs),
    ] {
        if !(0.0..=3600.0).contains(&v) {
            bail!("{name} must be 0 to 3600 seconds");
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if args.server_core >= cores || args.gen_core >= cores {
        bail!("--server-core and --gen-core must be below {cores} (the cores online)");
    }
    let link = Command::new("ip")
        .args(["-n", DUT_NS, "-d", "link", "show", "dev", "dut0"])
        .output()
        .context("running ip (is iproute2 installed? run scripts/bootstrap)")?;
    let text = String::from_utf8_lossy(&link.stdout);
    let queues = text
        .split_whitespace()
        .skip_while(|w| *w != "numrxqueues")
        .nth(1);
    if !link.status.success() {
        bail!("the test bed is partly up (no dut0 in {DUT_NS}): run scripts/testbed down, then up");
    }
    if queues.is_some_and(|q| q != "1") {
        bail!(
            "the test bed has {} queues, the generators use one: run scripts/testbed down, then scripts/testbed up --queues 1",
            queues.unwrap_or("?")
        );
    }
    if host::which("taskset").is_none() {
        bail!("taskset is missing: run scripts/bootstrap (util-linux)");
    }
    binaries()
}

/// This binary and the `c10m` next to it (both come from one `cargo build --release`).
pub(crate) fn binaries() -> anyhow::Result<(PathBuf, PathBuf)> {
    let bench = std::env::current_exe().context("locating c10m-bench")?;
    let c10m = bench.with_file_name("c10m");
    if !c10m.is_file() {
        bail!(
            "no c10m binary next to {}: run cargo build --release -p c10m-daemon",
            bench.display()
        );
    }
    Ok((bench, c10m))
}

fn run_checked(args: &Args) -> anyhow::Result<bool> {
    let (bench, c10m) = check(args)?;
    let stop = Arc::new(AtomicBool::new(false));
    c10m_dataplane::stop_on_signal(stop.clone()).context("installing the SIGINT handler")?;
    let (stamp, iso) = host::now_stamp();
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new("results").join(&stamp));
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let sock_dir = std::env::temp_dir().join(format!("c10m-compare-{}", std::process::id()));
    std::fs::create_dir_all(&sock_dir)?;
    let mut run = Run {
        args,
        stop,
        bench,
        c10m,
        logs,
        sock: sock_dir.join("c10m.sock"),
        report: Report {
            tool: format!("c10m-bench {}", env!("CARGO_PKG_VERSION")),
            started_utc: iso,
            machine: host::machine(),
            ..Report::default()
        },
    };
    let start = Instant::now();
    run.describe();
    let restore = Sysctls::set(&mut run.report.sysctls);
    let push = run.has(Scenario::Push);
    if push && args.servers.contains(&Server::Dataplane) {
        run.push_dataplane();
    }
    if push && args.servers.contains(&Server::Kernel) {
        run.push_kernel();
    }
    if args.servers.contains(&Server::Dataplane) && run.classic() {
        run.dataplane();
    }
    if args.servers.contains(&Server::Reflector) {
        run.reflector();
    }
    if args.servers.contains(&Server::Kernel) && run.classic() {
        run.kernel();
    }
    if args.servers.contains(&Server::Nginx) {
        run.nginx();
    }
    drop(restore);
    let _ = std::fs::remove_dir_all(&sock_dir);

    let interrupted = run.stop.load(Ordering::Relaxed);
    let mut r = run.report;
    r.interrupted = interrupted;
    r.secs = start.elapsed().as_secs_f64();
    r.goals = report::goals(&r);
    let cpu_notes = report::cpu_notes(&r, args.server_core, args.gen_core);
    r.notes.extend(cpu_notes);
    match plot::write_all(&r, &dir) {
        Ok(names) => r.plots = names,
        Err(e) => r.notes.push(format!("plots not written: {e:#}")),
    }
    let json = serde_json::to_string_pretty(&r)?;
    std::fs::write(dir.join("report.json"), &json)?;
    std::fs::write(dir.join("report.md"), report::markdown(&r))?;
    if args.json {
        println!("{json}");
    } else {
        print!("{}", report::table(&r));
        let md = dir.join("report.md");
        let md = std::fs::canonicalize(&md).unwrap_or(md);
        println!("report: {} (with report.json and the plots)", md.display());
    }
    Ok(interrupted)
}

/// The sysctls set for the kernel baseline, restored when dropped.
struct Sysctls(Vec<Sysctl>);

impl Sysctls {
    fn set(record: &mut Vec<Sysctl>) -> Sysctls {
        let mut done = Vec::new();
        for (name, value) in SYSCTLS {
            let before = match host::sysctl_get(DUT_NS, name) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("c10m-bench compare: {e:#}");
                    continue;
                }
            };
            match host::sysctl_set(DUT_NS, name, value) {
                Ok(()) => done.push(Sysctl {
                    namespace: DUT_NS.into(),
                    name: name.into(),
                    before,
                    set: value.into(),
                }),
                Err(e) => eprintln!("c10m-bench compare: {e:#}"),
            }
        }
        record.extend(done.iter().cloned());
        Sysctls(done)
    }
}

impl Drop for Sysctls {
    fn drop(&mut self) {
        for s in &self.0 {
            if let Err(e) = host::sysctl_set(&s.namespace, &s.name, &s.before) {
                eprintln!("c10m-bench compare: restoring {}: {e:#}", s.name);
            }
        }
    }
}

struct Run<'a> {
    args: &'a Args,
    stop: Arc<AtomicBool>,
    bench: PathBuf,
    c10m: PathBuf,
    logs: PathBuf,
    sock: PathBuf,
    report: Report,
}

fn bar(len: u64, msg: String, counting: bool) -> ProgressBar {
    let template = if counting {
        "{spinner} {msg:40} [{bar:30}] {human_pos}/{human_len} {elapsed}"
    } else {
        "{spinner} {msg:40} [{bar:30}] {elapsed}/{len}s"
    };
    let pb = ProgressBar::with_draw_target(Some(len), indicatif::ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(msg);
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

impl Run<'_> {
    fn interrupted(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn has(&self, s: Scenario) -> bool {
        self.args.scenarios.contains(&s)
    }

    /// Whether a scenario other than push runs (the servers of held, rps, cps, flood).
    fn classic(&self) -> bool {
        self.args.scenarios.iter().any(|&s| s != Scenario::Push)
    }

    fn max_held(&self) -> u32 {
        self.args.held.iter().copied().max().unwrap_or(0)
    }

    fn dp_slots(&self) -> usize {
        self.args
            .max_conns
            .unwrap_or(self.max_held() as usize + 131_072)
    }

    /// `ip netns exec c10m-gen taskset -c G c10m-bench SUB ARGS… --json`.
    fn gen_cmd(&self, sub: &str, args: &[String]) -> Command {
        self.gen_cmd_nice(sub, args, 0)
    }

    /// [`Run::gen_cmd`] under `nice -n NICE`.
    fn gen_cmd_nice(&self, sub: &str, args: &[String], nice: i32) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", GEN_NS, "nice", "-n"])
            .arg(nice.to_string())
            .args(["taskset", "-c"])
            .arg(self.args.gen_core.to_string())
            .arg(&self.bench)
            .arg(sub)
            .args(args)
            .arg("--json");
        c
    }

    /// `ip netns exec c10m-dut taskset -c S PROG ARGS…`.
    fn dut_cmd(&self, prog: &Path, args: &[String]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", DUT_NS, "taskset", "-c"])
            .arg(self.args.server_core.to_string())
            .arg(prog)
            .args(args)
            .env("RUST_LOG", "warn");
        c
    }

    fn start(
        &mut self,
        server: Server,
        name: &str,
        cmd: Command,
        ready: proc::Ready,
    ) -> anyhow::Result<proc::Server> {
        let line = proc::command_line(&cmd);
        if !self.report.servers.iter().any(|s| s.command == line) {
            self.report.servers.push(ServerRun {
                server: Some(server),
                address: match server {
                    Server::Dataplane | Server::Reflector => DP_ADDR.into(),
                    Server::Kernel => KERNEL_ADDR.into(),
                    Server::Nginx => format!("{KERNEL_ADDR}:{NGINX_PORT}"),
                },
                command: line,
            });
        }
        let pb = bar(1, format!("starting {name}"), true);
        let s = proc::Server::start(
            name,
            cmd,
            &self.logs.join(format!("{name}.log")),
            ready,
            Duration::from_secs(60),
            &self.stop,
        );
        pb.finish_and_clear();
        s
    }

    /// Stops a server with a spinner (a server holding many connections takes a while);
    /// returns what it printed after `ready`.
    fn stop_server(&self, server: proc::Server, name: &str) -> Vec<String> {
        let pb = bar(1, format!("stopping {name}"), true);
        let out = server.stop();
        pb.finish_and_clear();
        out
    }

    fn note_failure(&mut self, what: &str, e: &anyhow::Error) {
        eprintln!("c10m-bench compare: {what}: {e:#}");
        self.report.notes.push(format!("{what}: {e:#}"));
    }
}
