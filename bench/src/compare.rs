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
//!
//! A scenario whose generator fails is recorded with its error; the run goes on. Every
//! child has a deadline; Ctrl-C stops the current child, the servers, restores the
//! sysctls and writes a partial report. Output: the side-by-side table on stdout (or the
//! report's JSON with `--json`), and `report.json`, `report.md` and SVG plots in
//! `results/<UTC timestamp>/` (`--out`).

mod host;
mod plot;
mod proc;
mod report;

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

const GEN_NS: &str = "c10m-gen";
const DUT_NS: &str = "c10m-dut";
const DP_ADDR: &str = "198.18.0.10";
const KERNEL_ADDR: &str = "198.18.0.2";
/// Connections per `c10m kernel` process: RLIMIT_NOFILE (20,000 here) less room for the
/// process's own descriptors.
const PER_PROCESS: u32 = 19_000;
/// Sysctls an operator sets for a kernel server holding many connections.
const SYSCTLS: [(&str, &str); 2] = [
    ("net.core.somaxconn", "65535"),
    ("net.ipv4.tcp_max_syn_backlog", "65535"),
];

/// The parts of a run.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Held,
    Rps,
    Cps,
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
    /// Scenarios to run, comma-separated: held, rps, cps.
    #[arg(long, value_delimiter = ',', default_value = "held,rps,cps")]
    scenarios: Vec<Scenario>,
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
    /// Directory for the report (default results/<UTC timestamp>).
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
    if args.held_rate == 0 || args.pipeline == 0 {
        bail!("--held-rate and --pipeline must be above 0");
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
    if host::which("taskset").is_none() {
        bail!("taskset is missing: run scripts/bootstrap (util-linux)");
    }
    let bench = std::env::current_exe().context("locating c10m-bench")?;
    let c10m = bench.with_file_name("c10m");
    if !c10m.is_file() {
        bail!(
            "no c10m binary next to {}: run cargo build --release -p c10m-dataplane",
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
    run.dataplane();
    run.kernel();
    drop(restore);
    let _ = std::fs::remove_dir_all(&sock_dir);

    let interrupted = run.stop.load(Ordering::Relaxed);
    let mut r = run.report;
    r.interrupted = interrupted;
    r.secs = start.elapsed().as_secs_f64();
    r.goals = report::goals(&r);
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
        println!("report: {}", dir.join("report.md").display());
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

    fn max_held(&self) -> u32 {
        self.args.held.iter().copied().max().unwrap_or(0)
    }

    fn dp_slots(&self) -> usize {
        self.args
            .max_conns
            .unwrap_or(self.max_held() as usize + 131_072)
    }

    /// Settings and notes: everything a reader needs to repeat the run.
    fn describe(&mut self) {
        let a = self.args;
        let list = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
        let scen: Vec<&str> = a
            .scenarios
            .iter()
            .map(|s| match s {
                Scenario::Held => "held",
                Scenario::Rps => "rps",
                Scenario::Cps => "cps",
            })
            .collect();
        let nofile = host::nofile_limit();
        let nofile_text = nofile.map_or("unknown".into(), |n| n.to_string());
        let slots = self.dp_slots();
        let (bench, c10m) = (
            self.bench.display().to_string(),
            self.c10m.display().to_string(),
        );
        let s = &mut self.report.settings;
        let mut set = |k: &str, v: String| s.push((k.to_owned(), v));
        set("scenarios", scen.join(", "));
        set("held: connection counts", list(&a.held));
        set("held: SYNs per second", a.held_rate.to_string());
        set("held: seconds held", a.hold.to_string());
        set(
            "held: client",
            "c10m-bench conns, echo:7, a 16-byte echo request on every 100th connection, \
             an 8-byte heartbeat each second on every 1000th"
                .into(),
        );
        set("rps/cps protocol", a.proto.name().into());
        set("rps: concurrency (connections)", list(&a.rps_conns));
        set("rps: pipeline depth", a.pipeline.to_string());
        set("rps: seconds measured per level", a.rps_secs.to_string());
        set("rps: warm-up seconds per level", a.warmup.to_string());
        set("cps: concurrency", list(&a.cps_concurrency));
        set("cps: seconds measured", a.cps_secs.to_string());
        set(
            "server core (taskset; dataplane --cores)",
            a.server_core.to_string(),
        );
        set("generator core (taskset)", a.gen_core.to_string());
        set("generator", format!("{bench} (AF_XDP on gen0 in {GEN_NS})"));
        set("dataplane: binary", c10m);
        set("dataplane: queues / workers", "1 / 1".into());
        set(
            "dataplane: connection slots (--max-conns)",
            slots.to_string(),
        );
        set(
            "dataplane: --rx-buf / --tx-buf",
            format!("{} / {}", a.rx_buf, a.tx_buf),
        );
        set(
            "dataplane: XDP mode, zero-copy, idle policy",
            "auto, auto, adaptive (defaults)".into(),
        );
        set(
            "kernel: workers per process",
            "1 (one epoll reactor)".into(),
        );
        set(
            "kernel: connections per process (--max-conns)",
            PER_PROCESS.to_string(),
        );
        set(
            "kernel: listen backlog",
            "4096 (c10m kernel's, capped by somaxconn)".into(),
        );
        set("RLIMIT_NOFILE (soft, this process)", nofile_text.clone());

        let notes = &mut self.report.notes;
        notes.push(format!(
            "RLIMIT_NOFILE is {nofile_text} per process here and cannot be raised, so a kernel \
             run holding more than {PER_PROCESS} connections uses ceil(N / {PER_PROCESS}) \
             `c10m kernel` processes (one reactor each, all pinned to core {}) sharing the port \
             through SO_REUSEPORT. The dataplane needs no descriptor per connection.",
            a.server_core
        ));
        notes.push(format!(
            "Same cores: every server is pinned to core {} and the generator to core {}; the \
             same generator (this binary over AF_XDP) drives both servers. On veth the receive \
             path (the kernel's TCP input in softirq; the XDP program and the AF_XDP copy for \
             the dataplane) runs on the sending core, for both.",
            a.server_core, a.gen_core
        ));
        notes.push(
            "The kernel baseline is tuned as an operator would: non-blocking sockets, \
             edge-triggered epoll (mio), SO_REUSEPORT listeners, TCP_NODELAY, no thread per \
             connection, and the sysctls below."
                .into(),
        );
        notes.push(
            "Kernel memory per held connection = (growth of the slab caches TCP, \
             request_sock_TCP, tw_sock_TCP, sock_inode_cache, filp, eventpoll_epi in \
             /proc/slabinfo, active objects × object size) + (growth of socket buffer pages, \
             /proc/net/sockstat TCP mem × 4096) + (growth of the server processes' summed \
             RSS), divided by the growth of TCP inuse in c10m-dut, sampled at the peak. Slab and sockstat mem are system-wide; the generator uses no \
             kernel sockets. Dentries (192 B each) and other allocations are not counted, which \
             favours the kernel."
                .into(),
        );
        notes.push(
            "Dataplane memory per held connection = its stack's own accounting of reserved \
             bytes per connection slot (memory_bytes / connection_capacity from the management \
             socket): every slot is preallocated at start, so it does not grow with the count."
                .into(),
        );
        match host::which("nginx") {
            Some(p) => notes.push(format!(
                "nginx found at {}, but this version of compare does not run it: the http \
                 baseline is c10m kernel's http service.",
                p.display()
            )),
            None => notes.push(
                "nginx: not installed (not on PATH); the http baseline is c10m kernel's http \
                 service."
                    .into(),
            ),
        }
    }

    /// `ip netns exec c10m-gen taskset -c G c10m-bench SUB ARGS… --json`.
    fn gen_cmd(&self, sub: &str, args: &[String]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", GEN_NS, "taskset", "-c"])
            .arg(self.args.gen_core.to_string())
            .arg(&self.bench)
            .arg(sub)
            .args(args)
            .arg("--json");
        c
    }

    /// `ip netns exec c10m-dut taskset -c S c10m ARGS…`.
    fn dut_cmd(&self, args: &[String]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", DUT_NS, "taskset", "-c"])
            .arg(self.args.server_core.to_string())
            .arg(&self.c10m)
            .args(args)
            .env("RUST_LOG", "warn");
        c
    }

    fn start(
        &mut self,
        server: Server,
        name: &str,
        args: &[String],
    ) -> anyhow::Result<proc::Server> {
        let cmd = self.dut_cmd(args);
        let line = proc::command_line(&cmd);
        if !self.report.servers.iter().any(|s| s.command == line) {
            self.report.servers.push(ServerRun {
                server: Some(server),
                address: match server {
                    Server::Dataplane => DP_ADDR.into(),
                    _ => KERNEL_ADDR.into(),
                },
                command: line,
            });
        }
        let pb = bar(1, format!("starting {name}"), true);
        let s = proc::Server::start(
            name,
            cmd,
            &self.logs.join(format!("{name}.log")),
            Duration::from_secs(60),
            &self.stop,
        );
        pb.finish_and_clear();
        s
    }

    fn note_failure(&mut self, what: &str, e: &anyhow::Error) {
        eprintln!("c10m-bench compare: {what}: {e:#}");
        self.report.notes.push(format!("{what}: {e:#}"));
    }

    // ---- the dataplane -------------------------------------------------------------

    fn dataplane(&mut self) {
        if self.interrupted() {
            return;
        }
        let a = self.args;
        let args: Vec<String> = [
            "run",
            "--iface",
            "dut0",
            "--addr",
            "198.18.0.10/24",
            "--gateway",
            "198.18.0.1",
            "--service",
            "http:80",
            "--service",
            "echo:7",
            "--queues",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            "--cores".into(),
            a.server_core.to_string(),
            "--max-conns".into(),
            self.dp_slots().to_string(),
            "--rx-buf".into(),
            a.rx_buf.to_string(),
            "--tx-buf".into(),
            a.tx_buf.to_string(),
            "--grace".into(),
            "1".into(),
            "--mgmt".into(),
            self.sock.display().to_string(),
        ])
        .collect();
        let mut server = match self.start(Server::Dataplane, "dataplane", &args) {
            Ok(s) => s,
            Err(e) => {
                self.note_failure("the dataplane did not start", &e);
                self.fail_all(Server::Dataplane, &format!("{e:#}"));
                return;
            }
        };
        if self.has(Scenario::Held) {
            for &n in &a.held {
                if self.interrupted() {
                    break;
                }
                let h = self.held_dataplane(&mut server, n);
                self.report.held.push(h);
            }
        }
        self.load(Server::Dataplane, DP_ADDR, &mut server);
        let _ = server.stop();
    }

    /// Records every scenario of `server` as failed with `why`.
    fn fail_all(&mut self, server: Server, why: &str) {
        let a = self.args;
        if self.has(Scenario::Held) {
            for &n in &a.held {
                self.report.held.push(Held {
                    server: Some(server),
                    requested: u64::from(n),
                    error: Some(why.into()),
                    ..Held::default()
                });
            }
        }
        if self.has(Scenario::Rps) {
            for &c in &a.rps_conns {
                self.report.rps.push(Rps {
                    server: Some(server),
                    proto: a.proto.name().into(),
                    conns: u64::from(c),
                    pipeline: u64::from(a.pipeline),
                    out: None,
                    error: Some(why.into()),
                });
            }
        }
        if self.has(Scenario::Cps) {
            for &c in &a.cps_concurrency {
                self.report.cps.push(Cps {
                    server: Some(server),
                    proto: a.proto.name().into(),
                    concurrency: u64::from(c),
                    out: None,
                    error: Some(why.into()),
                });
            }
        }
    }

    fn held_dataplane(&mut self, server: &mut proc::Server, n: u32) -> Held {
        let mut h = Held {
            server: Some(Server::Dataplane),
            requested: u64::from(n),
            processes: 1,
            method: "bytes/conn: the stack's reserved bytes per connection slot \
                     (management socket); held: the server's established count; \
                     RSS/conn: growth of the daemon's RSS from before the client to the peak, \
                     divided by the peak count"
                .into(),
            ..Held::default()
        };
        if !server.alive() {
            h.error = Some("the dataplane exited before this scenario".into());
            return h;
        }
        let pid = server.pid();
        let rss0 = host::rss_bytes(pid).unwrap_or(0);
        let base = mgmt_stats(&self.sock).map(|s| s.0).unwrap_or(0);
        let args = self.conns_args(DP_ADDR, n, true);
        let pb = bar(u64::from(n), format!("dataplane: hold {n}"), true);
        let (mut peak, mut rss_peak, mut last_poll) = (0u64, rss0, Instant::now());
        let mut stats = None;
        let result = proc::run(
            self.gen_cmd("conns", &args),
            &self.logs.join(format!("conns-dataplane-{n}.log")),
            self.conns_limit(n),
            &self.stop,
            |_| {
                if last_poll.elapsed() < Duration::from_millis(200) {
                    return;
                }
                last_poll = Instant::now();
                if let Ok(s) = mgmt_stats(&self.sock) {
                    let est = s.0.saturating_sub(base);
                    pb.set_position(est);
                    if est >= peak {
                        peak = est;
                        rss_peak = rss_peak.max(host::rss_bytes(pid).unwrap_or(0));
                        stats = Some(s);
                    }
                }
            },
        );
        pb.finish_and_clear();
        match result.and_then(|out| proc::parse_json::<ConnsOut>(&out)) {
            Ok(c) => {
                let held = c.server_established.unwrap_or(peak).max(peak);
                h.held = Some(held);
                h.bytes_per_conn = c
                    .server_bytes_per_conn
                    .or(stats.map(|s| s.1))
                    .map(|b| b as f64);
                if held > 0 {
                    h.rss_bytes_per_conn = Some(rss_peak.saturating_sub(rss0) as f64 / held as f64);
                }
                h.note = shortfall(&c, n);
                h.client = Some(c);
            }
            Err(e) => h.error = Some(format!("{e:#}")),
        }
        eprintln!("{}", held_line(&h));
        h
    }

    fn conns_args(&self, addr: &str, n: u32, mgmt: bool) -> Vec<String> {
        let a = self.args;
        let mut v = vec![
            "--iface".into(),
            "gen0".into(),
            "--target".into(),
            format!("{addr}:7"),
            "--count".into(),
            n.to_string(),
            "--rate".into(),
            a.held_rate.to_string(),
            "--hold".into(),
            a.hold.to_string(),
            "--max-secs".into(),
            format!("{:.0}", self.conns_secs(n) + 20.0),
        ];
        if mgmt {
            v.push("--mgmt".into());
            v.push(self.sock.display().to_string());
        }
        v
    }

    fn conns_secs(&self, n: u32) -> f64 {
        f64::from(n) / f64::from(self.args.held_rate) + self.args.hold
    }

    fn conns_limit(&self, n: u32) -> Duration {
        Duration::from_secs_f64(self.conns_secs(n) + 60.0)
    }

    // ---- rps and cps, for either server ------------------------------------------------

    fn load(&mut self, server: Server, addr: &str, proc: &mut proc::Server) {
        let a = self.args;
        let target = format!("{addr}:{}", a.proto.port());
        if self.has(Scenario::Rps) {
            for &c in &a.rps_conns {
                if self.interrupted() {
                    break;
                }
                let mut x = Rps {
                    server: Some(server),
                    proto: a.proto.name().into(),
                    conns: u64::from(c),
                    pipeline: u64::from(a.pipeline),
                    out: None,
                    error: None,
                };
                if !proc.alive() {
                    x.error = Some(format!("the {} server exited", server.name()));
                } else {
                    let args: Vec<String> = vec![
                        "--iface".into(),
                        "gen0".into(),
                        "--target".into(),
                        target.clone(),
                        "--proto".into(),
                        a.proto.name().into(),
                        "--conns".into(),
                        c.to_string(),
                        "--pipeline".into(),
                        a.pipeline.to_string(),
                        "--secs".into(),
                        a.rps_secs.to_string(),
                        "--warmup".into(),
                        a.warmup.to_string(),
                    ];
                    let secs = a.rps_secs + a.warmup;
                    let name = format!("rps-{}-{c}", server.name());
                    match self.timed::<RpsOut>("rps", &name, &args, secs) {
                        Ok(o) => x.out = Some(o),
                        Err(e) => x.error = Some(format!("{e:#}")),
                    }
                }
                eprintln!(
                    "  {} rps c={c}: {}",
                    server.name(),
                    match (&x.out, &x.error) {
                        (Some(o), _) => format!(
                            "{} requests/s, p50 {:.1} µs, p99 {:.1} µs",
                            report::group(o.rps, 0),
                            o.p50_us,
                            o.p99_us
                        ),
                        (None, e) => format!("failed: {}", e.as_deref().unwrap_or("?")),
                    }
                );
                self.report.rps.push(x);
            }
        }
        if self.has(Scenario::Cps) {
            for &c in &a.cps_concurrency {
                if self.interrupted() {
                    break;
                }
                let mut x = Cps {
                    server: Some(server),
                    proto: a.proto.name().into(),
                    concurrency: u64::from(c),
                    out: None,
                    error: None,
                };
                if !proc.alive() {
                    x.error = Some(format!("the {} server exited", server.name()));
                } else {
                    let args: Vec<String> = vec![
                        "--iface".into(),
                        "gen0".into(),
                        "--target".into(),
                        target.clone(),
                        "--proto".into(),
                        a.proto.name().into(),
                        "--concurrency".into(),
                        c.to_string(),
                        "--secs".into(),
                        a.cps_secs.to_string(),
                    ];
                    let name = format!("cps-{}-{c}", server.name());
                    match self.timed::<CpsOut>("cps", &name, &args, a.cps_secs) {
                        Ok(o) => x.out = Some(o),
                        Err(e) => x.error = Some(format!("{e:#}")),
                    }
                }
                eprintln!(
                    "  {} cps c={c}: {}",
                    server.name(),
                    match (&x.out, &x.error) {
                        (Some(o), _) => format!(
                            "{} connections/s, p99 {:.1} µs",
                            report::group(o.cps, 0),
                            o.p99_us
                        ),
                        (None, e) => format!("failed: {}", e.as_deref().unwrap_or("?")),
                    }
                );
                self.report.cps.push(x);
            }
        }
    }

    /// Runs generator `sub` for about `secs` with a time bar; parses its JSON.
    fn timed<T: serde::de::DeserializeOwned>(
        &self,
        sub: &str,
        name: &str,
        args: &[String],
        secs: f64,
    ) -> anyhow::Result<T> {
        let pb = bar(secs.ceil() as u64, name.to_owned(), false);
        let out = proc::run(
            self.gen_cmd(sub, args),
            &self.logs.join(format!("{name}.log")),
            Duration::from_secs_f64(secs + 30.0),
            &self.stop,
            |t| pb.set_position(t.as_secs()),
        );
        pb.finish_and_clear();
        proc::parse_json(&out?)
    }

    // ---- the kernel ----------------------------------------------------------------

    fn kernel_args(&self) -> Vec<String> {
        [
            "kernel",
            "--addr",
            KERNEL_ADDR,
            "--service",
            "http:80",
            "--service",
            "echo:7",
            "--workers",
            "1",
            "--max-conns",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([PER_PROCESS.to_string()])
        .collect()
    }

    fn kernel(&mut self) {
        if self.interrupted() {
            return;
        }
        let args = self.kernel_args();
        let mut first = match self.start(Server::Kernel, "kernel-0", &args) {
            Ok(s) => s,
            Err(e) => {
                self.note_failure("the kernel server did not start", &e);
                self.fail_all(Server::Kernel, &format!("{e:#}"));
                return;
            }
        };
        if self.has(Scenario::Held) {
            for &n in &self.args.held.clone() {
                if self.interrupted() {
                    break;
                }
                let h = self.held_kernel(&mut first, n);
                self.report.held.push(h);
            }
        }
        self.load(Server::Kernel, KERNEL_ADDR, &mut first);
        let _ = first.stop();
    }

    fn held_kernel(&mut self, first: &mut proc::Server, n: u32) -> Held {
        let procs = n.div_ceil(PER_PROCESS).max(1);
        let mut h = Held {
            server: Some(Server::Kernel),
            requested: u64::from(n),
            processes: procs,
            method: format!(
                "bytes/conn: slab + socket buffer growth per held connection (see notes) + \
                 the server processes' RSS growth per held connection; \
                 held: growth of TCP inuse in {DUT_NS}; RSS/conn: growth of the {procs} \
                 server processes' summed RSS, divided by the peak count"
            ),
            ..Held::default()
        };
        let mut extra = Vec::new();
        let args = self.kernel_args();
        for i in 1..procs {
            match self.start(Server::Kernel, &format!("kernel-{i}"), &args) {
                Ok(s) => extra.push(s),
                Err(e) => {
                    h.error = Some(format!("starting kernel process {i}: {e:#}"));
                    return h;
                }
            }
        }
        let pids: Vec<u32> = std::iter::once(first.pid())
            .chain(extra.iter().map(proc::Server::pid))
            .collect();
        let base = match KernelSample::read(&pids) {
            Ok(s) => s,
            Err(e) => {
                h.error = Some(format!("{e:#}"));
                return h;
            }
        };
        let args = self.conns_args(KERNEL_ADDR, n, false);
        let pb = bar(
            u64::from(n),
            format!("kernel: hold {n} ({procs} processes)"),
            true,
        );
        let mut peak: Option<KernelSample> = None;
        let mut last_poll = Instant::now();
        let result = proc::run(
            self.gen_cmd("conns", &args),
            &self.logs.join(format!("conns-kernel-{n}.log")),
            self.conns_limit(n),
            &self.stop,
            |_| {
                if last_poll.elapsed() < Duration::from_millis(200) {
                    return;
                }
                last_poll = Instant::now();
                if let Ok(s) = KernelSample::read(&pids) {
                    pb.set_position(s.inuse.saturating_sub(base.inuse));
                    if peak.as_ref().is_none_or(|p| s.inuse >= p.inuse) {
                        peak = Some(s);
                    }
                }
            },
        );
        pb.finish_and_clear();
        for s in extra {
            let _ = s.stop();
        }
        match result.and_then(|out| proc::parse_json::<ConnsOut>(&out)) {
            Ok(c) => {
                h.note = shortfall(&c, n);
                h.client = Some(c);
            }
            Err(e) => h.error = Some(format!("{e:#}")),
        }
        let held = peak
            .as_ref()
            .map_or(0, |p| p.inuse.saturating_sub(base.inuse));
        if let Some(p) = peak.filter(|_| held > 0) {
            let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / held as f64;
            let slab = per(p.slab_total(), base.slab_total());
            let buffers = per(p.buffers, base.buffers);
            let rss = per(p.rss, base.rss);
            h.held = Some(held);
            h.slab_bytes_per_conn = Some(slab);
            h.buffer_bytes_per_conn = Some(buffers);
            h.rss_bytes_per_conn = Some(rss);
            h.bytes_per_conn = Some(slab + buffers + rss);
            h.slab_caches = host::SLAB_CACHES
                .iter()
                .zip(p.slab.iter().zip(&base.slab))
                .map(|(name, (&a, &b))| ((*name).to_owned(), per(a, b)))
                .collect();
        } else if h.error.is_none() {
            h.error = Some("no connection seen in the kernel's TCP inuse".into());
        }
        eprintln!("{}", held_line(&h));
        h
    }
}

/// The note for a held run where the client did not get every connection.
fn shortfall(c: &ConnsOut, n: u32) -> Option<String> {
    (c.established < u64::from(n)).then(|| {
        format!(
            "the client established {} of {n}: {} refused or unanswered after {} SYN \
             retransmits (see the server's counters in logs/)",
            c.established, c.failed, c.syn_retransmits
        )
    })
}

fn held_line(h: &Held) -> String {
    let name = h.server.map_or("?", Server::name);
    match &h.error {
        Some(e) => format!("  {name} held {}: failed: {e}", h.requested),
        None => format!(
            "  {name} held {}: {} held, {} bytes/conn, RSS {} bytes/conn{}",
            h.requested,
            h.held.unwrap_or(0),
            h.bytes_per_conn.map_or("-".into(), |b| report::group(b, 0)),
            h.rss_bytes_per_conn
                .map_or("-".into(), |b| report::group(b, 0)),
            h.note.as_ref().map_or(String::new(), |n| format!(" ({n})")),
        ),
    }
}

/// The dataplane's (established connections, reserved bytes per slot).
fn mgmt_stats(path: &Path) -> anyhow::Result<(u64, u64)> {
    let mut s =
        UnixStream::connect(path).with_context(|| format!("connecting to {}", path.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"{\"cmd\":\"stats\"}\n")?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line)?;
    let v: serde_json::Value = serde_json::from_str(line.trim())?;
    let t = &v["stats"]["totals"];
    let est = t["connections"]["established"]
        .as_u64()
        .ok_or_else(|| anyhow!("no established count in {line}"))?;
    Ok((est, t["bytes_per_connection"].as_u64().unwrap_or(0)))
}
