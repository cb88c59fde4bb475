//! `c10m-bench reflect`: a stateless TCP reflector on AF_XDP, the ceiling a server on this
//! path can reach.
//!
//! It sits exactly where `c10m run` sits: the project's XDP steering program
//! ([`Steering`]) attached to IFACE, steering TCP to `--addr:--port` and ARP for the
//! address to one AF_XDP socket per queue ([`Port`], the dataplane's own), one thread per
//! queue pinned to the matching entry of `--cores`, and the workers' idle policy
//! ([`Idler`]: spin, then sleep in `poll(2)`). Each round: a receive batch, one answer
//! per frame built in place in a UMEM frame ([`segment`] says which), the fill ring
//! topped up, the tx ring flushed and kicked and completions reaped as the workers do
//! ([`Port::push`] with [`KICK_ROUNDS`]). Nothing else: no connection table, no timers,
//! no buffers — so the difference between this and the dataplane on the same generator
//! is what the dataplane's stack and services cost.
//!
//! The HTTP response is the `http` service's own keep-alive `200 OK`
//! ([`c10m_apps::services::http::ok_response`], `--response` body bytes, 13 =
//! `Hello, World!` as the service's default), so both sides put the same bytes on the
//! wire; anything that is not an HTTP request is echoed.
//!
//! It runs until `--secs` pass or SIGINT/SIGTERM, prints `ready` on stdout once every
//! queue's socket is in the XSKMAP (as `c10m run` does), and at exit its counters — as a
//! table, or one JSON object with `--json`.

mod segment;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use c10m_dataplane::{
    Idle, Idler, KICK_ROUNDS, MAX_RX_BATCH, Port, PortStats, ZeroCopy, parse_cores,
};
use c10m_ebpf::{Proto, Steering, XdpMode};
use c10m_stack::CookieKeys;
use serde::Serialize;

use crate::net::{mac_of, require_iface};
use segment::{Counters, Reflector};

/// UMEM frames per queue (the ring sizes are half of it), as the daemon's default.
const FRAMES: u32 = 8192;

/// Arguments of `c10m-bench reflect`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The interface (in this network namespace).
    #[arg(long)]
    iface: String,
    /// The address to answer for, A.B.C.D or A.B.C.D/PREFIX (the prefix is not used:
    /// answers go to the MAC each frame came from).
    #[arg(long, value_parser = parse_addr)]
    addr: Ipv4Addr,
    /// The TCP port to answer on.
    #[arg(long)]
    port: u16,
    /// Cores of the queues' threads, one queue each from queue 0 (e.g. 1 or 0,2-3).
    #[arg(long, default_value = "0", value_parser = parse_cores)]
    cores: std::vec::Vec<usize>, // spelt out: one value, the whole list

    /// Body bytes of the HTTP response (13 = `Hello, World!`, the http service's default).
    #[arg(long, default_value_t = 13)]
    response: usize,
    /// Seconds to run (default: until SIGINT or SIGTERM).
    #[arg(long)]
    secs: Option<f64>,
    /// What the threads do when idle: adaptive (spin, then sleep) or spin.
    #[arg(long, default_value = "adaptive")]
    idle: Idle,
    /// XDP attach mode: auto, native or generic.
    #[arg(long, default_value = "auto")]
    xdp_mode: XdpMode,
    /// Print the counters at exit as one JSON object.
    #[arg(long)]
    json: bool,
}

fn parse_addr(s: &str) -> Result<Ipv4Addr, String> {
    if s.contains('/') {
        return c10m_dataplane::parse_cidr(s)
            .map(|(a, _)| a)
            .map_err(|e| e.to_string());
    }
    s.parse()
        .map_err(|_| format!("bad address {s:?}: expected A.B.C.D or A.B.C.D/PREFIX"))
}

/// One queue's figures at exit.
#[derive(Serialize, Debug)]
struct QueueReport {
    queue: u32,
    core: usize,
    /// Loop rounds, and how many of them ended in a sleep.
    loops: u64,
    sleeps: u64,
    #[serde(flatten)]
    counters: Counters,
    port: PortStats,
}

/// What `reflect` prints at exit.
#[derive(Serialize, Debug)]
struct Report {
    iface: String,
    addr: String,
    port: u16,
    secs: f64,
    xdp_mode: String,
    response_bytes: usize,
    /// Sums over the queues.
    #[serde(flatten)]
    total: Counters,
    tx_frames: u64,
    queues: Vec<QueueReport>,
}

/// Runs the reflector.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    if args.secs.is_some_and(|s| !(s > 0.0 && s <= 86_400.0)) {
        bail!("--secs must be more than 0 and at most 86400");
    }
    if args.cores.is_empty() {
        bail!("--cores needs at least one core");
    }
    require_iface(&args.iface)?;
    c10m_dataplane::check_addr_free(args.addr, &args.iface).map_err(|e| anyhow!("{e}"))?;
    crate::xsk::require_root("c10m-bench reflect")?;
    let queues = rx_queues(&args.iface);
    if args.cores.len() > queues {
        bail!(
            "{} has {queues} receive queue(s), --cores names {}: give one core per queue",
            args.iface,
            args.cores.len()
        );
    }
    let mac = mac_of(&args.iface)?;
    let http = c10m_apps::services::http::ok_response(args.response, false, false);
    if http.len() > usize::from(segment::MSS) {
        bail!("--response is too large: the response must fit one 1460-byte segment");
    }
    let stop = Arc::new(AtomicBool::new(false));
    c10m_dataplane::stop_on_signal(stop.clone()).context("installing the signal handlers")?;

    let steering = Arc::new(
        Steering::attach(&args.iface, args.xdp_mode)
            .map_err(|e| anyhow!("attaching the XDP program to {}: {e}", args.iface))?,
    );
    steering.add_address(args.addr)?;
    steering.add_service(args.addr, Proto::Tcp, args.port)?;

    let keys = CookieKeys {
        k0: random_u64()?,
        k1: random_u64()?,
        parity: false,
    };
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let mut handles = Vec::new();
    for (q, &core) in args.cores.iter().enumerate() {
        let (steering, stop, ready) = (steering.clone(), stop.clone(), ready_tx.clone());
        let (iface, idle, addr, port) = (args.iface.clone(), args.idle, args.addr, args.port);
        let http = http.clone();
        let handle = std::thread::Builder::new()
            .name(format!("reflect-q{q}"))
            .spawn(move || {
                let reflector = Reflector::new(mac, addr, port, keys, http);
                let w = Worker {
                    queue: q as u32,
                    core,
                    iface: &iface,
                    idle,
                    steering: &steering,
                    stop: &stop,
                };
                w.run(reflector, ready)
            })
            .context("starting a thread")?;
        handles.push(handle);
    }
    drop(ready_tx);
    let mut failure = None;
    for _ in 0..handles.len() {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(_) => break,
        }
    }
    let started = Instant::now();
    if failure.is_none() {
        println!("ready");
        let until = args.secs.map(|s| started + Duration::from_secs_f64(s));
        while !stop.load(Ordering::Relaxed)
            && until.is_none_or(|u| Instant::now() < u)
            && !handles.iter().any(|h| h.is_finished())
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut report = Report {
        iface: args.iface.clone(),
        addr: args.addr.to_string(),
        port: args.port,
        secs: started.elapsed().as_secs_f64(),
        xdp_mode: format!("{:?}", steering.mode()).to_lowercase(),
        response_bytes: args.response,
        total: Counters::default(),
        tx_frames: 0,
        queues: Vec::new(),
    };
    for h in handles {
        match h.join() {
            Ok(Some(q)) => report.queues.push(q),
            Ok(None) => {}
            Err(_) => {
                failure.get_or_insert_with(|| "a queue's thread panicked".into());
            }
        }
    }
    if let Some(e) = failure {
        bail!("{e}");
    }
    for q in &report.queues {
        report.total.add(&q.counters);
        report.tx_frames += q.port.tx_frames;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// One queue's thread.
struct Worker<'a> {
    queue: u32,
    core: usize,
    iface: &'a str,
    idle: Idle,
    steering: &'a Steering,
    stop: &'a AtomicBool,
}

impl Worker<'_> {
    /// Opens the queue's socket, registers it, says ready (or why not), then reflects
    /// until the stop flag is set.
    fn run(
        &self,
        mut refl: Reflector,
        ready: mpsc::Sender<Result<(), String>>,
    ) -> Option<QueueReport> {
        pin(self.core);
        let opened = Port::open(self.iface, self.queue, FRAMES, ZeroCopy::Auto)
            .map_err(|e| {
                format!(
                    "opening the AF_XDP socket on {} queue {}: {e}",
                    self.iface, self.queue
                )
            })
            .and_then(|port| {
                self.steering
                    .register_xsk(self.queue, port.fd())
                    .map_err(|e| format!("registering queue {}: {e}", self.queue))?;
                Ok(port)
            });
        let mut port = match opened {
            Ok(p) => p,
            Err(e) => {
                let _ = ready.send(Err(e));
                return None;
            }
        };
        let _ = ready.send(Ok(()));
        drop(ready);
        let mut idler = Idler::new(self.idle);
        let (mut loops, mut sleeps) = (0, 0);
        while !self.stop.load(Ordering::Relaxed) {
            loops += 1;
            let rx = port.receive_batch(MAX_RX_BATCH as u32, |frames, tx| {
                for frame in frames {
                    refl.answer(frame, tx);
                }
            });
            port.refill();
            let (sent, done) = port.push(KICK_ROUNDS);
            // No timers: the idle policy never needs the time.
            if idler.rest(rx > 0 || sent > 0 || done > 0, &port, || None) {
                sleeps += 1;
            }
        }
        let _ = self.steering.unregister_xsk(self.queue);
        let (stats, _) = port.close(Duration::from_millis(200));
        Some(QueueReport {
            queue: self.queue,
            core: self.core,
            loops,
            sleeps,
            counters: refl.counters,
            port: stats,
        })
    }
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        self.frames += o.frames;
        self.arp_replies += o.arp_replies;
        self.syn_acks += o.syn_acks;
        self.responses += o.responses;
        self.http_responses += o.http_responses;
        self.echoed_bytes += o.echoed_bytes;
        self.fin_acks += o.fin_acks;
        self.resets += o.resets;
        self.acks += o.acks;
        self.ignored += o.ignored;
        self.dropped += o.dropped;
        self.truncated += o.truncated;
        self.no_room += o.no_room;
    }
}

/// IFACE's receive queues (`/sys/class/net/IFACE/queues/rx-*`).
fn rx_queues(iface: &str) -> usize {
    std::fs::read_dir(format!("/sys/class/net/{iface}/queues"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count()
        })
        .unwrap_or(1)
        .max(1)
}

/// Pins the calling thread to `core` (a warning if it cannot).
fn pin(core: usize) {
    let mut set = nix::sched::CpuSet::new();
    let pinned = set
        .set(core)
        .and_then(|()| nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set));
    if pinned.is_err() {
        eprintln!("c10m-bench reflect: could not pin a thread to core {core}; it runs unpinned");
    }
}

/// 8 bytes from the OS's random source.
fn random_u64() -> anyhow::Result<u64> {
    use std::io::Read;
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom")?;
    Ok(u64::from_le_bytes(b))
}

fn print_table(r: &Report) {
    let t = &r.total;
    let rate = |n: u64| n as f64 / r.secs.max(1e-9);
    println!(
        "reflector {}:{} on {} ({} xdp), {:.1} s",
        r.addr, r.port, r.iface, r.xdp_mode, r.secs
    );
    let rows = [
        ("frames in", t.frames),
        ("frames out", r.tx_frames),
        ("SYN-ACKs", t.syn_acks),
        ("responses", t.responses),
        ("HTTP responses", t.http_responses),
        ("bytes echoed", t.echoed_bytes),
        ("FIN-ACKs", t.fin_acks),
        ("RSTs in", t.resets),
        ("pure ACKs in", t.acks),
        ("ARP replies", t.arp_replies),
        ("ignored", t.ignored),
        ("dropped (malformed)", t.dropped),
        ("not sent (tx full)", t.no_room),
    ];
    for (k, v) in rows {
        println!("  {k:<24}{v:>14}  {:>12.0}/s", rate(v));
    }
}
