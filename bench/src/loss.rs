//! `c10m-bench loss`: one connection's bulk goodput and request latency under loss, the
//! dataplane against the kernel, in one table.
//!
//! Run it as root in the root namespace with the test bed up (one queue), under the bed's
//! lock: `flock /tmp/c10m-testbed.lock c10m-bench loss`. It starts both servers in
//! c10m-dut pinned to `--server-core` — the dataplane (`c10m run`, echo:7 on
//! 198.18.0.10, `--buf` bytes of receive and transmit buffer per connection, so the
//! window scales past 64 KiB) and the kernel (`c10m kernel`, echo:7 on 198.18.0.2) — and,
//! at each `--loss` rate put on gen0's egress (`c10m_ebpf::Impairment`: frames toward
//! the server are lost), measures from a kernel client in c10m-gen pinned to
//! `--gen-core`, alternating the servers `--runs` times:
//!
//! * `bulk`: one connection sends `--bulk-mib` MiB to echo and reads them back, every
//!   byte checked; goodput is the bytes back over the time from connect to the last
//!   byte (so it counts both directions: lost data segments on the way in, lost ACKs of
//!   the echo). A run stops at `--bulk-secs` and reports what came back by then.
//! * `latency`: one connection sends `--requests` requests of `--request-bytes` to echo,
//!   one at a time, each answer checked, for at most `--latency-secs`; p50, p99, max.
//!
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
use c10m_ebpf::{Impairment, LossRate};
use serde::Serialize;

use crate::compare::proc::{Ready, Server};
use crate::compare::{DP_ADDR, DUT_NS, KERNEL_ADDR};
use crate::measure::{Latency, Summary};
use crate::net::{GEN_NS, on_gen};

const PORT: u16 = 7;
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
    /// Loss rates toward the server, in order.
    #[arg(long, value_delimiter = ',', default_value = "0%,0.1%,1%,5%")]
    loss: Vec<LossRate>,
    /// The servers, alternated in this order within each run.
    #[arg(long, value_delimiter = ',', default_value = "dataplane,kernel")]
    servers: Vec<Which>,
    /// Runs per rate and server (the table has their medians).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// MiB one connection sends to echo and reads back.
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
    /// Bytes echoed back (all of them unless the run hit its time limit or failed).
    bytes: u64,
    secs: f64,
    mib_s: f64,
    complete: bool,
}

/// One latency run.
#[derive(Debug, Clone, Copy, Serialize)]
struct Requests {
    answered: u64,
    #[serde(flatten)]
    latency: Summary,
}

/// One server at one rate in one run, and what the filter dropped meanwhile.
#[derive(Debug, Clone, Serialize)]
struct Sample {
    server: Which,
    loss: String,
    run: usize,
    bulk: Option<Bulk>,
    requests: Option<Requests>,
    /// IP frames toward the server the filter saw and dropped during these two runs.
    frames: u64,
    dropped: u64,
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
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    dropped_pct: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    command: String,
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
    // Removes the filter however this function ends.
    let _clean = Clean(args.gen_core);
    on_gen(args.gen_core, || Ok(Impairment::off("gen0")?))?;

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

/// Puts `loss` on gen0, then one bulk and one latency run against `which`.
fn measure(args: &Args, which: Which, loss: LossRate, run: usize) -> anyhow::Result<Sample> {
    let before = on_gen(args.gen_core, || Ok(Impairment::set("gen0", loss)?))?;
    let target = target(which);
    let (bulk, requests, error) = match on_gen(args.gen_core, || {
        let limit = Duration::from_secs(args.bulk_secs);
        let bulk = bulk(target, args.bulk_mib << 20, limit)?;
        let requests = requests(target, args, Duration::from_secs(args.latency_secs))?;
        Ok((bulk, requests))
    }) {
        Ok((b, r)) => (Some(b), Some(r), None),
        Err(e) => (None, None, Some(format!("{e:#}"))),
    };
    let after = on_gen(args.gen_core, || {
        Impairment::status("gen0")?.context("the impairment filter went away")
    })?;
    eprintln!(
        "loss:   {loss}: {}",
        bulk.map_or("failed".into(), |b| format!("{:.1} MiB/s", b.mib_s))
    );
    Ok(Sample {
        server: which,
        loss: loss.to_string(),
        run,
        bulk,
        requests,
        frames: after.seen - before.seen,
        dropped: after.dropped - before.dropped,
        error,
    })
}

/// Removes the impairment on drop.
struct Clean(usize);

impl Drop for Clean {
    fn drop(&mut self) {
        if let Err(e) = on_gen(self.0, || Ok(Impairment::off("gen0")?)) {
            eprintln!(
                "c10m-bench loss: removing the impairment: {e:#}; run scripts/testbed impair --off"
            );
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
    match which {
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
                .args(["--mgmt", "/run/c10m-bench-loss.sock"]);
            ("dataplane", cmd)
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
            ("kernel", cmd)
        }
    }
}

fn target(which: Which) -> SocketAddr {
    let addr = match which {
        Which::Dataplane => DP_ADDR,
        Which::Kernel => KERNEL_ADDR,
    };
    SocketAddr::new(addr.parse().expect("a literal address"), PORT)
}

/// The byte at stream offset `i`: a pattern that a shifted or repeated chunk breaks.
fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

/// Sends `total` bytes to echo on one connection and reads them back, for at most `limit`.
fn bulk(target: SocketAddr, total: u64, limit: Duration) -> anyhow::Result<Bulk> {
    let start = Instant::now();
    let deadline = start + limit;
    let stream = TcpStream::connect_timeout(&target, Duration::from_secs(5))
        .with_context(|| format!("connecting to {target}"))?;
    let mut writer = stream.try_clone()?;
    writer.set_write_timeout(Some(limit))?;
    let mut reader = stream;
    let (done, bytes) = std::thread::scope(|s| -> anyhow::Result<(bool, u64)> {
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
        let mut got = 0u64;
        let mut buf = vec![0u8; 64 << 10];
        let result = loop {
            if got == total {
                break Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Ok(false);
            }
            reader.set_read_timeout(Some(left.min(Duration::from_secs(1))))?;
            match reader.read(&mut buf) {
                Ok(0) => break Err(anyhow::anyhow!("echo closed after {got} of {total} bytes")),
                Ok(n) => {
                    if let Some(k) = (0..n).find(|&k| buf[k] != pattern(got + k as u64)) {
                        break Err(anyhow::anyhow!(
                            "echo returned a wrong byte at offset {}",
                            got + k as u64
                        ));
                    }
                    got += n as u64;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => break Err(anyhow::Error::new(e).context("reading the echo")),
            }
        };
        // Unblocks the writer if the run stopped early.
        let _ = reader.shutdown(Shutdown::Both);
        let _ = sending.join();
        result.map(|done| (done, got))
    })?;
    let secs = start.elapsed().as_secs_f64();
    Ok(Bulk {
        bytes,
        secs,
        mib_s: bytes as f64 / MIB / secs,
        complete: done,
    })
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

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
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
                .fold((0, 0), |(f, d), s| (f + s.frames, d + s.dropped));
            rows.push(Row {
                server,
                loss: loss.to_string(),
                loss_ppm: loss.ppm(),
                runs: of.len(),
                bulk_mib_s: median(bulk.iter().map(|b| b.mib_s).collect()),
                bulk_incomplete: bulk.iter().filter(|b| !b.complete).count()
                    + (of.len() - bulk.len()),
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
        "one connection: {} MiB echoed (goodput, MiB/s) and {} requests of {} B (p50 / p99 / max, µs)\n",
        report.bulk_mib, report.requests, report.request_bytes
    );
    for r in &report.rows {
        out += &format!(
            "  {:>6} {:<9}  {:>8.1} MiB/s{}  {:>7} / {:>7} / {:>8} µs  (dropped {:.2}% of frames toward it)\n",
            r.loss,
            format!("{:?}", r.server).to_lowercase(),
            r.bulk_mib_s,
            if r.bulk_incomplete > 0 {
                format!(" ({} incomplete)", r.bulk_incomplete)
            } else {
                String::new()
            },
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
            }),
            requests: mib_s.map(|_| Requests {
                answered: 10,
                latency: Summary {
                    p50_us: 10,
                    p99_us: p99,
                    ..Summary::default()
                },
            }),
            frames: 1000,
            dropped: 10,
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
            (dp.bulk_incomplete, dp.p99_us, dp.loss_ppm),
            (1, 200, 10_000)
        );
        assert!((dp.dropped_pct - 1.0).abs() < 1e-9);
        // The failed run counts as unfinished and adds no figures.
        assert_eq!(
            (k.runs, k.bulk_mib_s, k.bulk_incomplete, k.p99_us),
            (2, 5.0, 1, 50)
        );
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
    }
}
