//! `c10m-bench loss`: one connection's bulk goodput and request latency under loss, the
//! dataplane against the kernel, in one table.
//!
//! Run it as root in the root namespace with the test bed up (one queue), under the bed's
//! lock: `flock /tmp/c10m-testbed.lock c10m-bench loss [--toward server|client|both]`.
//! It starts both servers in c10m-dut pinned to `--server-core` — the dataplane (`c10m
//! run`, echo:7 on 198.18.0.10, `--buf` bytes of receive and transmit buffer per
//! connection, so the window scales past 64 KiB) and the kernel (`c10m kernel`, echo:7
//! on 198.18.0.2), each also serving http:80 with a `--bulk-mib` body when the server's
//! frames are lost — and, at each `--loss` rate put on gen0 (`c10m_ebpf::Impairment`:
//! its egress loses frames toward the server, its ingress those toward the client),
//! measures from a kernel client in c10m-gen pinned to `--gen-core`, alternating the
//! servers `--runs` times:
//!
//! * `bulk`, toward the server (the default): one connection sends `--bulk-mib` MiB to
//!   echo and reads them back, every byte checked; goodput is the bytes back over the
//!   time from connect to the last byte (so it counts both directions: lost data
//!   segments on the way in, lost ACKs of the echo).
//! * `bulk`, toward the client or both ways: a download, so that the server is the bulk
//!   sender whose frames are lost: one `GET /` to http:80 and its `--bulk-mib` MiB body,
//!   every byte checked; goodput is the body over the time from connect to its last byte.
//!
//!   Either stops at `--bulk-secs` and reports what came back by then, and counts the
//!   stalls: gaps between two reads of 100 ms or more and of 900 ms or more (a lost
//!   segment waiting for a retransmission timeout: Linux's is 200 ms at least, smoltcp's
//!   1 s), the longest gap, and the frames each filter saw and dropped meanwhile.
//! * `latency`: one connection sends `--requests` requests of `--request-bytes` to echo,
//!   one at a time, each answer checked, for at most `--latency-secs`; p50, p99, max.
//!
//! For the kernel server the run also records its namespace's TCP counters across the
//! bulk run (`nstat`: segments retransmitted, timeouts, loss probes, fast retransmits),
//! and for the dataplane its stack's (management socket: frames sent, and the stack's
//! repairs of smoltcp's loss recovery, `dup_acks_pinned` and `fast_retransmits_forced`).
//! Medians over the runs go in the table (stdout) or, with `--json`, one object with
//! every run. The impairment is removed on every way out (Ctrl-C stops after the current
//! measurement).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use c10m_ebpf::{Hook, Impairment, LossRate};
use serde::Serialize;

use crate::compare::flood::{mgmt_stats, nstat_value};
use crate::compare::proc::{Ready, Server};
use crate::compare::{DP_ADDR, DUT_NS, KERNEL_ADDR};
use crate::impair::Toward;
use crate::measure::{Latency, Summary, median};
use crate::net::{GEN_NS, on_gen};

const ECHO_PORT: u16 = 7;
/// The dataplane's management socket, for its stack's counters.
const MGMT: &str = "/run/c10m-bench-loss.sock";
const HTTP_PORT: u16 = 80;
const MIB: f64 = 1024.0 * 1024.0;

/// The server a measurement is of.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Which {
    Dataplane,
    Kernel,
}

/// Arguments of `c10m-bench loss`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Loss rates, in order.
    #[arg(long, value_delimiter = ',', default_value = "0%,0.1%,1%,5%")]
    loss: Vec<LossRate>,
    /// Which frames are lost: toward the server (bulk = echo), toward the client or
    /// both ways (bulk = a download from http:80, the server sending).
    #[arg(long, value_enum, default_value = "server")]
    toward: Toward,
    /// The servers, alternated in this order within each run.
    #[arg(long, value_delimiter = ',', default_value = "dataplane,kernel")]
    servers: Vec<Which>,
    /// Runs per rate and server (the table has their medians).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// MiB one connection sends to echo and reads back, or downloads.
    #[arg(long, default_value_t = 64)]
    bulk_mib: u64,
    /// Most seconds a bulk run may take.
    #[arg(long, default_value_t = 60)]
    bulk_secs: u64,
    /// Requests of the latency run.
    #[arg(long, default_value_t = 1000)]
    requests: u64,
    /// Bytes per request (and per answer).
    #[arg(long, default_value_t = 64)]
    request_bytes: usize,
    /// Most seconds a latency run may take.
    #[arg(long, default_value_t = 20)]
    latency_secs: u64,
    /// The dataplane's receive and transmit buffer per connection, bytes.
    #[arg(long, default_value_t = 1 << 20)]
    buf: usize,
    /// The core the servers are pinned to.
    #[arg(long, default_value_t = 1)]
    server_core: usize,
    /// The core the client is pinned to.
    #[arg(long, default_value_t = 0)]
    gen_core: usize,
    /// Where the servers' logs go.
    #[arg(long, default_value = "results/loss")]
    logs: PathBuf,
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// One bulk run.
#[derive(Debug, Clone, Copy, Serialize)]
struct Bulk {
    /// Bytes echoed back or downloaded (all of them unless the run hit its time limit
    /// or failed).
    bytes: u64,
    secs: f64,
    mib_s: f64,
    complete: bool,
    #[serde(flatten)]
    gaps: Gaps,
}

/// The pauses of a bulk run's receiving side: a lost segment shows as a gap between two
/// reads as long as the sender takes to resend it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
struct Gaps {
    /// Gaps of 100 ms or more (Linux's retransmission timeout is 200 ms at least).
    stalls_100ms: u32,
    /// Gaps of 900 ms or more (smoltcp's is 1 s at least).
    stalls_900ms: u32,
    /// The longest gap, ms.
    longest_ms: u64,
}

impl Gaps {
    fn add(&mut self, gap: Duration) {
        let ms = gap.as_millis() as u64;
        self.stalls_100ms += u32::from(ms >= 100);
        self.stalls_900ms += u32::from(ms >= 900);
        self.longest_ms = self.longest_ms.max(ms);
    }
}

/// One latency run.
#[derive(Debug, Clone, Copy, Serialize)]
struct Requests {
    answered: u64,
    #[serde(flatten)]
    latency: Summary,
}

/// What one filter saw and dropped during a measurement.
#[derive(Debug, Clone, Copy, Serialize)]
struct Frames {
    /// Which way these frames went.
    toward: Toward,
    seen: u64,
    dropped: u64,
}

/// The kernel server's TCP counters (its namespace's, `nstat`) across a bulk run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct KernelTcp {
    /// `TcpRetransSegs`: segments sent again.
    retrans_segs: u64,
    /// `TcpExtTCPTimeouts`: retransmission timeouts that fired.
    timeouts: u64,
    /// `TcpExtTCPLossProbes`: tail-loss probes sent.
    loss_probes: u64,
    /// `TcpExtTCPFastRetrans`: retransmissions before a timeout (dup ACKs, SACK, RACK).
    fast_retrans: u64,
}

/// The dataplane's stack counters (management socket) across a bulk run: its repairs of
/// smoltcp's loss recovery (the stack's `recovery` module), and the frames it sent.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct DataplaneTcp {
    tx_frames: u64,
    dup_acks_pinned: u64,
    fast_retransmits_forced: u64,
    acks_realigned: u64,
}

impl DataplaneTcp {
    fn read() -> Option<DataplaneTcp> {
        let stats = mgmt_stats(std::path::Path::new(MGMT)).ok()?;
        let get = |k: &str| stats["totals"][k].as_u64().unwrap_or(0);
        Some(DataplaneTcp {
            tx_frames: get("tx_frames"),
            dup_acks_pinned: get("dup_acks_pinned"),
            fast_retransmits_forced: get("fast_retransmits_forced"),
            acks_realigned: get("acks_realigned"),
        })
    }

    fn since(self, before: DataplaneTcp) -> DataplaneTcp {
        DataplaneTcp {
            tx_frames: self.tx_frames.saturating_sub(before.tx_frames),
            dup_acks_pinned: self.dup_acks_pinned.saturating_sub(before.dup_acks_pinned),
            fast_retransmits_forced: self
                .fast_retransmits_forced
                .saturating_sub(before.fast_retransmits_forced),
            acks_realigned: self.acks_realigned.saturating_sub(before.acks_realigned),
        }
    }
}

/// One server at one rate in one run, and what the filters dropped meanwhile.
#[derive(Debug, Clone, Serialize)]
struct Sample {
    server: Which,
    loss: String,
    run: usize,
    bulk: Option<Bulk>,
    requests: Option<Requests>,
    /// What each filter saw and dropped during the bulk run and the latency run.
    bulk_frames: Vec<Frames>,
    request_frames: Vec<Frames>,
    /// The kernel server's retransmissions during the bulk run.
    kernel_tcp: Option<KernelTcp>,
    /// The dataplane's stack counters during the bulk run.
    dataplane_tcp: Option<DataplaneTcp>,
    error: Option<String>,
}

/// A row of the table: medians of a server's runs at a rate.
#[derive(Debug, Clone, Serialize)]
struct Row {
    server: Which,
    loss: String,
    loss_ppm: u32,
    runs: usize,
    bulk_mib_s: f64,
    /// Runs whose bulk transfer did not finish in `--bulk-secs`.
    bulk_incomplete: usize,
    /// Medians of the bulk runs' stalls (see [`Gaps`]).
    stalls_100ms: u32,
    stalls_900ms: u32,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    /// Of the frames the filters saw, the share they dropped (all runs, both runs kinds).
    dropped_pct: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    command: String,
    toward: Toward,
    /// `echo` (toward the server) or `download`.
    bulk: &'static str,
    bulk_mib: u64,
    requests: u64,
    request_bytes: usize,
    buf: usize,
    rows: Vec<Row>,
    samples: Vec<Sample>,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let c10m = check(args)?;
    let stop = Arc::new(AtomicBool::new(false));
    // Ctrl-C ends the run after the current measurement (each is time-bounded), so the
    // impairment is removed and the partial table printed.
    c10m_dataplane::stop_on_signal(stop.clone()).context("installing the SIGINT handler")?;
    std::fs::create_dir_all(&args.logs)
        .with_context(|| format!("creating {}", args.logs.display()))?;
    // Removes the filters however this function ends.
    let _clean = Clean(args.gen_core);
    off(args.gen_core)?;

    let mut samples = Vec::new();
    for run in 0..args.runs {
        for &which in &args.servers {
            let (name, mut cmd) = server_command(args, &c10m, which);
            cmd.env("RUST_LOG", "warn");
            let log = args.logs.join(format!("{name}.log"));
            eprintln!("loss: run {} of {}: {name}", run + 1, args.runs);
            let ready = Duration::from_secs(20);
            let server = Server::start(name, cmd, &log, Ready::Line, ready, &stop)?;
            for &loss in &args.loss {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                samples.push(measure(args, which, loss, run)?);
            }
            server.stop();
        }
    }

    let rows = rows(&args.loss, &args.servers, &samples);
    let report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        toward: args.toward,
        bulk: if downloads(args) { "download" } else { "echo" },
        bulk_mib: args.bulk_mib,
        requests: args.requests,
        request_bytes: args.request_bytes,
        buf: args.buf,
        rows,
        samples,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

/// Whether the bulk run is a download (the server's frames are lost) or an echo.
fn downloads(args: &Args) -> bool {
    args.toward != Toward::Server
}

/// What each of gen0's filters has seen and dropped so far (one entry per hook impaired).
fn counts(args: &Args) -> anyhow::Result<Vec<Frames>> {
    on_gen(args.gen_core, || {
        let mut all = Vec::new();
        for &hook in args.toward.hooks() {
            let s = Impairment::status("gen0", hook)?.context("the impairment filter went away")?;
            all.push(Frames {
                toward: Toward::of(hook),
                seen: s.seen,
                dropped: s.dropped,
            });
        }
        Ok(all)
    })
}

/// `after - before`, way by way.
fn delta(before: &[Frames], after: &[Frames]) -> Vec<Frames> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| Frames {
            toward: a.toward,
            seen: a.seen - b.seen,
            dropped: a.dropped - b.dropped,
        })
        .collect()
}

/// Puts `loss` on gen0 (the hooks `--toward` says), then one bulk and one latency run
/// against `which`.
fn measure(args: &Args, which: Which, loss: LossRate, run: usize) -> anyhow::Result<Sample> {
    on_gen(args.gen_core, || {
        for &hook in args.toward.hooks() {
            Impairment::set("gen0", hook, loss)?;
        }
        Ok(())
    })?;
    let start = counts(args)?;
    let tcp_before = (which == Which::Kernel).then(kernel_tcp).transpose()?;
    let dp_before = (which == Which::Dataplane)
        .then(DataplaneTcp::read)
        .flatten();
    let limit = Duration::from_secs(args.bulk_secs);
    let bulk = on_gen(args.gen_core, || {
        let total = args.bulk_mib << 20;
        if downloads(args) {
            download(target(which, HTTP_PORT), total, limit)
        } else {
            echo_bulk(target(which, ECHO_PORT), total, limit)
        }
    });
    let kernel_tcp = match tcp_before {
        Some(before) => Some(kernel_tcp()?.since(before)),
        None => None,
    };
    let dataplane_tcp = dp_before.and_then(|b| Some(DataplaneTcp::read()?.since(b)));
    let middle = counts(args)?;
    let requests = on_gen(args.gen_core, || {
        requests(
            target(which, ECHO_PORT),
            args,
            Duration::from_secs(args.latency_secs),
        )
    });
    let end = counts(args)?;
    let error = [bulk.as_ref().err(), requests.as_ref().err()]
        .into_iter()
        .flatten()
        .map(|e| format!("{e:#}"))
        .collect::<Vec<_>>();
    eprintln!(
        "loss:   {loss}: {}",
        bulk.as_ref()
            .map_or("failed".into(), |b| format!("{:.1} MiB/s", b.mib_s))
    );
    Ok(Sample {
        server: which,
        loss: loss.to_string(),
        run,
        bulk: bulk.ok(),
        requests: requests.ok(),
        bulk_frames: delta(&start, &middle),
        request_frames: delta(&middle, &end),
        kernel_tcp,
        dataplane_tcp,
        error: (!error.is_empty()).then(|| error.join("; ")),
    })
}

/// Removes both filters from gen0.
fn off(gen_core: usize) -> anyhow::Result<()> {
    on_gen(gen_core, || {
        for hook in Hook::BOTH {
            Impairment::off("gen0", hook)?;
        }
        Ok(())
    })
}

/// Removes the impairment on drop.
struct Clean(usize);

impl Drop for Clean {
    fn drop(&mut self) {
        if let Err(e) = off(self.0) {
            eprintln!(
                "c10m-bench loss: removing the impairment: {e:#}; run scripts/testbed impair --off"
            );
        }
    }
}

/// c10m-dut's TCP counters now (`nstat -asz`: absolute, without touching its history).
fn kernel_tcp() -> anyhow::Result<KernelTcp> {
    let out = Command::new("ip")
        .args(["netns", "exec", DUT_NS, "nstat", "-asz"])
        .args([
            "TcpRetransSegs",
            "TcpExtTCPTimeouts",
            "TcpExtTCPLossProbes",
            "TcpExtTCPFastRetrans",
        ])
        .output()
        .context("running nstat in c10m-dut")?;
    if !out.status.success() {
        bail!("nstat: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(KernelTcp::parse(&String::from_utf8_lossy(&out.stdout)))
}

impl KernelTcp {
    /// From `nstat`'s lines: `NAME  VALUE  RATE`.
    fn parse(text: &str) -> KernelTcp {
        let get = |name| nstat_value(text, name).unwrap_or(0);
        KernelTcp {
            retrans_segs: get("TcpRetransSegs"),
            timeouts: get("TcpExtTCPTimeouts"),
            loss_probes: get("TcpExtTCPLossProbes"),
            fast_retrans: get("TcpExtTCPFastRetrans"),
        }
    }

    fn since(self, before: KernelTcp) -> KernelTcp {
        KernelTcp {
            retrans_segs: self.retrans_segs.saturating_sub(before.retrans_segs),
            timeouts: self.timeouts.saturating_sub(before.timeouts),
            loss_probes: self.loss_probes.saturating_sub(before.loss_probes),
            fast_retrans: self.fast_retrans.saturating_sub(before.fast_retrans),
        }
    }
}

/// The bed up, `c10m` next to this binary.
fn check(args: &Args) -> anyhow::Result<PathBuf> {
    for ns in [GEN_NS, DUT_NS] {
        if !std::path::Path::new("/var/run/netns").join(ns).exists() {
            bail!("the test bed is down: run scripts/testbed up");
        }
    }
    if args.loss.is_empty() || args.servers.is_empty() || args.runs == 0 {
        bail!("--loss, --servers and --runs need at least one each");
    }
    if args.request_bytes == 0 || args.bulk_mib == 0 {
        bail!("--request-bytes and --bulk-mib must be positive");
    }
    Ok(crate::compare::binaries()?.1)
}

fn server_command(args: &Args, c10m: &std::path::Path, which: Which) -> (&'static str, Command) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", DUT_NS, "taskset", "-c"])
        .arg(args.server_core.to_string())
        .arg(c10m);
    let name = match which {
        Which::Dataplane => {
            let buf = args.buf.to_string();
            cmd.args(["run", "--iface", "dut0", "--addr", "198.18.0.10/24"])
                .args([
                    "--gateway",
                    "198.18.0.1",
                    "--service",
                    "echo:7",
                    "--queues",
                    "1",
                ])
                .args([
                    "--cores",
                    &args.server_core.to_string(),
                    "--max-conns",
                    "64",
                ])
                .args(["--rx-buf", &buf, "--tx-buf", &buf, "--grace", "1"])
                .args(["--mgmt", MGMT]);
            if downloads(args) {
                cmd.args(["--service", "http:80"]);
            }
            "dataplane"
        }
        Which::Kernel => {
            cmd.args([
                "kernel",
                "--addr",
                KERNEL_ADDR,
                "--service",
                "echo:7",
                "--workers",
                "1",
            ]);
            if downloads(args) {
                cmd.args(["--service", "http:80"]);
            }
            "kernel"
        }
    };
    if downloads(args) {
        cmd.arg("--http-body")
            .arg((args.bulk_mib << 20).to_string());
    }
    (name, cmd)
}

fn target(which: Which, port: u16) -> SocketAddr {
    let addr = match which {
        Which::Dataplane => DP_ADDR,
        Which::Kernel => KERNEL_ADDR,
    };
    SocketAddr::new(addr.parse().expect("a literal address"), port)
}

/// The byte at stream offset `i` of what bulk echo sends: a pattern that a shifted or
/// repeated chunk breaks.
fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

/// The byte at offset `i` of the http service's body (`ok_response`: `abc…`).
fn http_body(i: u64) -> u8 {
    b'a' + (i % 26) as u8
}

/// Sends `total` bytes to echo on one connection and reads them back, for at most `limit`.
fn echo_bulk(target: SocketAddr, total: u64, limit: Duration) -> anyhow::Result<Bulk> {
    let start = Instant::now();
    let deadline = start + limit;
    let stream = TcpStream::connect_timeout(&target, Duration::from_secs(5))
        .with_context(|| format!("connecting to {target}"))?;
    let mut writer = stream.try_clone()?;
    writer.set_write_timeout(Some(limit))?;
    let mut reader = stream;
    let (done, bytes, gaps) = std::thread::scope(|s| {
        let sending = s.spawn(move || -> std::io::Result<()> {
            let mut sent = 0u64;
            let mut chunk = vec![0u8; 64 << 10];
            while sent < total {
                let n = (total - sent).min(chunk.len() as u64) as usize;
                for (k, b) in chunk[..n].iter_mut().enumerate() {
                    *b = pattern(sent + k as u64);
                }
                writer.write_all(&chunk[..n])?;
                sent += n as u64;
            }
            Ok(())
        });
        let result = receive(&mut reader, &[], total, deadline, pattern, "the echo");
        // Unblocks the writer if the run stopped early.
        let _ = reader.shutdown(Shutdown::Both);
        let _ = sending.join();
        result
    })?;
    Ok(Bulk::of(bytes, done, gaps, start))
}

/// Asks http:80 at `target` for its body (`total` bytes) and reads it, for at most
/// `limit`: the server is the bulk sender.
fn download(target: SocketAddr, total: u64, limit: Duration) -> anyhow::Result<Bulk> {
    let start = Instant::now();
    let deadline = start + limit;
    let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(5))
        .with_context(|| format!("connecting to {target}"))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: c10m-bench\r\n\r\n")
        .context("sending the request")?;
    // The head, and whatever of the body came with it.
    let mut head = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let end = loop {
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if head.len() > 4096 {
            bail!("no end of the response head in 4 KiB");
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Bulk::of(0, false, Gaps::default(), start));
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut buf) {
            Ok(0) => bail!("http closed before the response head ended"),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(anyhow::Error::new(e).context("reading the response head")),
        }
    };
    let text = String::from_utf8_lossy(&head[..end]);
    let length = text
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    if !text.starts_with("HTTP/1.1 200 ") || length != Some(total) {
        bail!(
            "http answered {:?} with Content-Length {length:?}, not a {total}-byte body: \
             was the server started with --http-body {total}?",
            text.lines().next().unwrap_or("")
        );
    }
    let (done, bytes, gaps) =
        receive(&mut s, &head[end..], total, deadline, http_body, "the body")?;
    Ok(Bulk::of(bytes, done, gaps, start))
}

impl Bulk {
    /// `bytes` received by now, of a run that started at `start`.
    fn of(bytes: u64, complete: bool, gaps: Gaps, start: Instant) -> Bulk {
        let secs = start.elapsed().as_secs_f64();
        Bulk {
            bytes,
            secs,
            mib_s: bytes as f64 / MIB / secs,
            complete,
            gaps,
        }
    }
}

/// Reads `total` bytes of `what` from `reader` (`first` of them already read) until
/// `deadline`, each checked against `expect` (the byte at a stream offset), and times the
/// gaps between reads. Returns whether all came, how many did, and the gaps.
fn receive(
    reader: &mut TcpStream,
    first: &[u8],
    total: u64,
    deadline: Instant,
    expect: fn(u64) -> u8,
    what: &str,
) -> anyhow::Result<(bool, u64, Gaps)> {
    let mut got = 0u64;
    let mut gaps = Gaps::default();
    let mut last = Instant::now();
    let mut buf = vec![0u8; 64 << 10];
    let check = |data: &[u8], got: &mut u64| -> anyhow::Result<()> {
        if let Some(k) = (0..data.len()).find(|&k| data[k] != expect(*got + k as u64)) {
            bail!("{what} has a wrong byte at offset {}", *got + k as u64);
        }
        *got += data.len() as u64;
        Ok(())
    };
    check(&first[..first.len().min(total as usize)], &mut got)?;
    loop {
        if got == total {
            return Ok((true, got, gaps));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok((false, got, gaps));
        }
        reader.set_read_timeout(Some(left.min(Duration::from_secs(1))))?;
        let want = buf.len().min((total - got) as usize);
        match reader.read(&mut buf[..want]) {
            Ok(0) => bail!("{what} ended after {got} of {total} bytes"),
            Ok(n) => {
                gaps.add(last.elapsed());
                last = Instant::now();
                check(&buf[..n], &mut got)?;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {what}"))),
        }
    }
}

/// One request at a time on one connection, for at most `limit`.
fn requests(target: SocketAddr, args: &Args, limit: Duration) -> anyhow::Result<Requests> {
    let deadline = Instant::now() + limit;
    let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(5))
        .with_context(|| format!("connecting to {target}"))?;
    s.set_nodelay(true)?;
    let mut latency = Latency::new();
    let (mut request, mut answer) = (vec![0u8; args.request_bytes], vec![0u8; args.request_bytes]);
    let mut answered = 0;
    while answered < args.requests {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        request.fill((answered % 251) as u8);
        let t = Instant::now();
        s.set_read_timeout(Some(left))?;
        s.write_all(&request).context("sending a request")?;
        match s.read_exact(&mut answer) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => return Err(anyhow::Error::new(e).context("reading an answer")),
        }
        if answer != request {
            bail!("echo answered request {answered} with other bytes");
        }
        latency.record(t.elapsed().as_micros() as u64);
        answered += 1;
    }
    Ok(Requests {
        answered,
        latency: latency.summary(),
    })
}

fn rows(levels: &[LossRate], servers: &[Which], samples: &[Sample]) -> Vec<Row> {
    let mut rows = Vec::new();
    for &loss in levels {
        for &server in servers {
            let of: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.server == server && s.loss == loss.to_string())
                .collect();
            let bulk: Vec<Bulk> = of.iter().filter_map(|s| s.bulk).collect();
            let req: Vec<Requests> = of.iter().filter_map(|s| s.requests).collect();
            let pick =
                |f: fn(&Requests) -> u64| median(req.iter().map(|r| f(r) as f64).collect()) as u64;
            let (frames, dropped) = of
                .iter()
                .flat_map(|s| s.bulk_frames.iter().chain(&s.request_frames))
                .fold((0, 0), |(f, d), w| (f + w.seen, d + w.dropped));
            let stalls = |f: fn(&Gaps) -> u32| {
                median(bulk.iter().map(|b| f(&b.gaps) as f64).collect()) as u32
            };
            rows.push(Row {
                server,
                loss: loss.to_string(),
                loss_ppm: loss.ppm(),
                runs: of.len(),
                bulk_mib_s: median(bulk.iter().map(|b| b.mib_s).collect()),
                bulk_incomplete: bulk.iter().filter(|b| !b.complete).count()
                    + (of.len() - bulk.len()),
                stalls_100ms: stalls(|g| g.stalls_100ms),
                stalls_900ms: stalls(|g| g.stalls_900ms),
                p50_us: pick(|r| r.latency.p50_us),
                p99_us: pick(|r| r.latency.p99_us),
                max_us: pick(|r| r.latency.max_us),
                dropped_pct: if frames == 0 {
                    0.0
                } else {
                    100.0 * dropped as f64 / frames as f64
                },
            });
        }
    }
    rows
}

/// The side-by-side table: a line per rate, the servers' goodput and latency.
fn table(report: &Report) -> String {
    let mut out = format!(
        "loss {}; one connection: {} MiB {} (goodput, MiB/s; stalls of 100 ms+ / 900 ms+) \
         and {} requests of {} B to echo (p50 / p99 / max, µs)\n",
        report.toward.describe(),
        report.bulk_mib,
        if report.bulk == "echo" {
            "echoed"
        } else {
            "downloaded"
        },
        report.requests,
        report.request_bytes
    );
    for r in &report.rows {
        out += &format!(
            "  {:>6} {:<9}  {:>8.1} MiB/s{}  stalls {:>3} / {:>3}  {:>7} / {:>7} / {:>8} µs  (dropped {:.2}% of the frames filtered)\n",
            r.loss,
            format!("{:?}", r.server).to_lowercase(),
            r.bulk_mib_s,
            if r.bulk_incomplete > 0 {
                format!(" ({} incomplete)", r.bulk_incomplete)
            } else {
                String::new()
            },
            r.stalls_100ms,
            r.stalls_900ms,
            r.p50_us,
            r.p99_us,
            r.max_us,
            r.dropped_pct
        );
    }
    for s in report.samples.iter().filter(|s| s.error.is_some()) {
        out += &format!(
            "  error: {:?} at {}: {}\n",
            s.server,
            s.loss,
            s.error.as_deref().unwrap_or("")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(server: Which, loss: &str, mib_s: Option<f64>, complete: bool, p99: u64) -> Sample {
        Sample {
            server,
            loss: loss.to_owned(),
            run: 0,
            bulk: mib_s.map(|mib_s| Bulk {
                bytes: 1,
                secs: 1.0,
                mib_s,
                complete,
                gaps: Gaps {
                    stalls_100ms: p99 as u32 / 100,
                    stalls_900ms: 0,
                    longest_ms: 0,
                },
            }),
            requests: mib_s.map(|_| Requests {
                answered: 10,
                latency: Summary {
                    p50_us: 10,
                    p99_us: p99,
                    ..Summary::default()
                },
            }),
            bulk_frames: vec![Frames {
                toward: Toward::Server,
                seen: 600,
                dropped: 6,
            }],
            request_frames: vec![Frames {
                toward: Toward::Server,
                seen: 400,
                dropped: 4,
            }],
            kernel_tcp: None,
            dataplane_tcp: None,
            error: mib_s.is_none().then(|| "refused".to_owned()),
        }
    }

    #[test]
    fn rows_take_medians_and_count_unfinished_runs() {
        let one: LossRate = "1%".parse().unwrap();
        let samples = [
            sample(Which::Dataplane, "1%", Some(3.0), true, 300),
            sample(Which::Dataplane, "1%", Some(1.0), false, 100),
            sample(Which::Dataplane, "1%", Some(2.0), true, 200),
            sample(Which::Kernel, "1%", Some(5.0), true, 50),
            sample(Which::Kernel, "1%", None, false, 0),
            sample(Which::Kernel, "0%", Some(9.0), true, 1),
        ];
        let rows = rows(&[one], &[Which::Dataplane, Which::Kernel], &samples);
        assert_eq!(rows.len(), 2);
        let (dp, k) = (&rows[0], &rows[1]);
        assert_eq!(
            (dp.server, dp.runs, dp.bulk_mib_s),
            (Which::Dataplane, 3, 2.0)
        );
        assert_eq!(
            (dp.bulk_incomplete, dp.p99_us, dp.loss_ppm, dp.stalls_100ms),
            (1, 200, 10_000, 2)
        );
        assert!((dp.dropped_pct - 1.0).abs() < 1e-9);
        // The failed run counts as unfinished and adds no figures.
        assert_eq!(
            (k.runs, k.bulk_mib_s, k.bulk_incomplete, k.p99_us),
            (2, 5.0, 1, 50)
        );
    }

    #[test]
    fn gaps_count_stalls_and_kernel_counters_parse() {
        let mut g = Gaps::default();
        for ms in [5, 150, 950, 1200, 99] {
            g.add(Duration::from_millis(ms));
        }
        assert_eq!(
            g,
            Gaps {
                stalls_100ms: 3,
                stalls_900ms: 2,
                longest_ms: 1200
            }
        );
        let text = "#kernel\nTcpRetransSegs 120 0.0\nTcpExtTCPTimeouts 3 0.0\n\
                    TcpExtTCPLossProbes 7 0.0\nTcpExtTCPFastRetrans 100 0.0\n";
        let k = KernelTcp::parse(text).since(KernelTcp {
            retrans_segs: 20,
            ..KernelTcp::default()
        });
        assert_eq!(
            (k.retrans_segs, k.timeouts, k.loss_probes, k.fast_retrans),
            (100, 3, 7, 100)
        );
        assert_eq!(http_body(0), b'a');
        assert_eq!(http_body(27), b'b');
    }
}
