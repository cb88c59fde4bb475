//! `c10m-bench stack`: establish N connections between two in-memory stacks, exchange a
//! request and response on each, hold them, and measure the cost per segment with N
//! connections present and with 1,000, side by side in one run.
//!
//! Both stacks run on this thread, so `handshakes_per_sec` and `ns_per_segment` include
//! the client's work as well as the server's: every segment is built by one stack and
//! parsed by the other. The server's own share is timed apart:
//! `server_ns_per_segment` is the time spent in the server's half of each round of the
//! wire ([`Pair::step_side`]: the ingress of the frames delivered to it, the echo
//! service's reads and writes, its poll and the frames that emits, and the in-memory
//! wire's bookkeeping of those frames) divided by the segments it received;
//! `client_ns_per_segment` likewise for the client (whose requests are written outside
//! its half, so its figure leaves out the `send` calls). `bytes_per_conn` is the server stack's own accounting of what it
//! reserved, divided by N; `rss_bytes_per_conn` is the process's RSS growth over both
//! stacks, divided by N.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant as Clock};

use anyhow::{Context, bail};
use c10m_stack::wire::{Impairments, Pair, Side};
use c10m_stack::{
    Config, Congestion, ConnError, ConnId, ConnectOptions, Event, ListenOptions, SocketOptions,
    Stack,
};
use serde::Serialize;

use crate::measure::{XorShift, median};

/// Arguments of `c10m-bench stack`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Connections to establish and hold.
    #[arg(long, default_value_t = 100_000)]
    conns: usize,
    /// Receive buffer bytes per connection (both sides).
    #[arg(long, default_value_t = 256)]
    rx_buf: usize,
    /// Transmit buffer bytes per connection (both sides).
    #[arg(long, default_value_t = 256)]
    tx_buf: usize,
    /// Request/response exchanges timed for the per-segment cost, at each size (in 15
    /// alternating rounds; medians reported).
    #[arg(long, default_value_t = 200_000)]
    exchanges: usize,
    /// Congestion controller of every connection: reno, none, or cubic (in a build with
    /// the `cubic` feature).
    #[arg(long, default_value = "reno")]
    congestion: Congestion,
    /// TCP timestamps (RFC 7323) on every connection, true or false.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    timestamps: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize, Debug)]
struct Report {
    conns: usize,
    established: usize,
    exchanged: usize,
    bytes_per_conn: f64,
    rss_bytes_per_conn: f64,
    ns_per_segment: f64,
    ns_per_segment_1k: f64,
    segment_ratio: f64,
    /// ns per segment at N with connections visited in slot order rather than at random:
    /// the same work with the cache misses mostly gone. Close to `ns_per_segment_1k`
    /// when the per-segment work itself does not grow with N.
    ns_per_segment_sequential: f64,
    /// The server stack's own ns per segment it received (ingress plus the emit it
    /// causes), at N connections and at 1,000, and their ratio.
    server_ns_per_segment: f64,
    server_ns_per_segment_1k: f64,
    server_segment_ratio: f64,
    /// The client stack's, likewise.
    client_ns_per_segment: f64,
    client_ns_per_segment_1k: f64,
    /// Frames each side received per request/response exchange in the timed rounds at
    /// N: 1 each when every ACK rides on a segment with data.
    server_rx_per_exchange: f64,
    client_rx_per_exchange: f64,
    handshakes_per_sec: f64,
    establish_secs: f64,
    rx_buf: usize,
    tx_buf: usize,
    congestion: &'static str,
    timestamps: bool,
    memory: MemoryReport,
    hugepages: bool,
}

#[derive(Serialize, Debug)]
struct MemoryReport {
    slab: usize,
    table: usize,
    wheel: usize,
    buffers: usize,
    other: usize,
    total: usize,
}

const PORT: u16 = 80;
const REQUEST: &[u8; 32] = b"GET /c10m HTTP/1.1\r\nX: 0123456\r\n";
/// Ports per source address, as Linux's default ephemeral range has.
const PORTS_PER_ADDR: usize = 28_000;
/// Timed rounds per size; the medians are reported.
const ROUNDS: usize = 15;

/// Handshakes in flight at once while establishing.
const WINDOW: usize = 4096;

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    if args.conns == 0 || args.conns > PORTS_PER_ADDR * 65_000 {
        bail!("--conns must be between 1 and {}", PORTS_PER_ADDR * 65_000);
    }
    if args.rx_buf < REQUEST.len() || args.tx_buf < REQUEST.len() {
        bail!(
            "--rx-buf and --tx-buf must be at least {} bytes",
            REQUEST.len()
        );
    }
    let rss0 = rss_bytes();
    let mut big = Scenario::new(args.conns, args)?;
    let t = Clock::now();
    big.establish()?;
    let establish_secs = t.elapsed().as_secs_f64();
    big.exchange_all()?;
    let rss1 = rss_bytes();
    let mem = big.pair.b.memory();
    eprintln!(
        "established {} in {:.2}s; timing segments at {} and at 1,000 connections",
        big.established, establish_secs, args.conns
    );
    let mut small = Scenario::new(1000, args)?;
    small.establish()?;
    small.exchange_all()?;
    // Alternate short timed rounds of the two sizes and compare medians, so that noise
    // from the rest of the machine hits both alike.
    let (mut at_n, mut at_1k, mut at_seq) = (Vec::new(), Vec::new(), Vec::new());
    let per_round = (args.exchanges / ROUNDS).max(256);
    for _ in 0..ROUNDS {
        at_n.push(big.time_segments(per_round, false)?);
        at_1k.push(small.time_segments(per_round, false)?);
        at_seq.push(big.time_segments(per_round, true)?);
    }
    let of = |xs: &[Timing], f: fn(&Timing) -> f64| median(xs.iter().map(f).collect::<Vec<_>>());
    let (ns_big, ns_small) = (of(&at_n, |t| t.both), of(&at_1k, |t| t.both));
    let ns_seq = of(&at_seq, |t| t.both);
    let (server_big, server_small) = (of(&at_n, |t| t.server), of(&at_1k, |t| t.server));

    let report = Report {
        conns: args.conns,
        established: big.established,
        exchanged: big.exchanged,
        bytes_per_conn: mem.total as f64 / args.conns as f64,
        rss_bytes_per_conn: rss1.saturating_sub(rss0) as f64 / args.conns as f64,
        ns_per_segment: ns_big,
        ns_per_segment_1k: ns_small,
        segment_ratio: ns_big / ns_small,
        ns_per_segment_sequential: ns_seq,
        server_ns_per_segment: server_big,
        server_ns_per_segment_1k: server_small,
        server_segment_ratio: server_big / server_small,
        client_ns_per_segment: of(&at_n, |t| t.client),
        client_ns_per_segment_1k: of(&at_1k, |t| t.client),
        server_rx_per_exchange: of(&at_n, |t| t.per_exchange.1),
        client_rx_per_exchange: of(&at_n, |t| t.per_exchange.0),
        handshakes_per_sec: big.established as f64 / establish_secs,
        establish_secs,
        rx_buf: args.rx_buf,
        tx_buf: args.tx_buf,
        congestion: args.congestion.name(),
        timestamps: args.timestamps,
        memory: MemoryReport {
            slab: mem.slab,
            table: mem.table,
            wheel: mem.wheel,
            buffers: mem.buffers,
            other: mem.other,
            total: mem.total,
        },
        hugepages: hugepages_reserved(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

struct Scenario {
    pair: Pair,
    conns: Vec<ConnId>,
    target: usize,
    opts: SocketOptions,
    established: usize,
    exchanged: usize,
    /// Responses outstanding in the current exchange round.
    pending: usize,
    buf: Vec<u8>,
    /// Next connection for sequential timing rounds.
    cursor: usize,
    /// Time spent in each side's half of the wire's rounds: (client, server).
    spent: (Duration, Duration),
}

/// One timed round of exchanges: ns per segment of both stacks together (by the wall
/// clock, over the segments both received) and of each stack's own half.
#[derive(Debug, Clone, Copy)]
struct Timing {
    both: f64,
    server: f64,
    client: f64,
    /// Frames received per exchange: (client, server).
    per_exchange: (f64, f64),
}

impl Scenario {
    fn new(n: usize, args: &Args) -> anyhow::Result<Scenario> {
        let opts = SocketOptions {
            rx_buf: args.rx_buf,
            tx_buf: args.tx_buf,
            congestion: args.congestion,
            timestamps: args.timestamps,
            ..SocketOptions::default()
        };
        // Every connection has the same buffers, kept in its slot as the daemon does.
        let buffers_in_slot = args.rx_buf + args.tx_buf;
        let mut pair = Pair::new(
            &Config {
                buffers_in_slot,
                ..Pair::client_config(n)
            },
            &Config {
                buffers_in_slot,
                ..Pair::server_config(n)
            },
            Impairments::none(),
        );
        pair.b
            .listen(
                PORT,
                ListenOptions {
                    socket: opts,
                    backlog: u32::MAX,
                    ..ListenOptions::default()
                },
            )
            .context("listen")?;
        Ok(Scenario {
            pair,
            conns: Vec::with_capacity(n),
            target: n,
            opts,
            established: 0,
            exchanged: 0,
            pending: 0,
            buf: vec![0; 4096],
            cursor: 0,
            spent: (Duration::ZERO, Duration::ZERO),
        })
    }

    /// Opens `target` connections, at most [`WINDOW`] handshakes in flight.
    fn establish(&mut self) -> anyhow::Result<()> {
        let server = SocketAddrV4::new(Pair::SERVER, PORT);
        let mut stalled = 0;
        while self.established < self.target {
            while self.conns.len() < self.target && self.conns.len() - self.established < WINDOW {
                let i = self.conns.len();
                let a = (i / PORTS_PER_ADDR) as u32;
                let local = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + a);
                let opts = ConnectOptions {
                    socket: self.opts,
                    local_addr: Some(local),
                    local_port: Some(32768 + (i % PORTS_PER_ADDR) as u16),
                };
                let c = self
                    .pair
                    .a
                    .connect(server, opts)
                    .map_err(|e| anyhow::anyhow!("connect #{i}: {e}"))?;
                self.conns.push(c);
            }
            let before = self.established;
            self.round();
            stalled = if self.established == before {
                stalled + 1
            } else {
                0
            };
            if stalled > 100_000 {
                bail!("stalled at {} established", self.established);
            }
        }
        Ok(())
    }

    /// One step of both stacks at the current simulated time, then time moves on if
    /// nothing is due.
    fn round(&mut self) {
        let (mut established, mut exchanged, mut pending) = (0, 0, 0);
        let buf = &mut self.buf;
        let mut app = |side, stack: &mut Stack| match side {
            Side::A => client(stack, buf, &mut established, &mut exchanged, &mut pending),
            Side::B => server(stack, buf),
        };
        let t0 = Clock::now();
        self.pair.step_side(Side::A, &mut app);
        let t1 = Clock::now();
        self.pair.step_side(Side::B, &mut app);
        let t2 = Clock::now();
        self.spent.0 += t1 - t0;
        self.spent.1 += t2 - t1;
        self.established += established;
        self.exchanged += exchanged;
        self.pending -= pending;
        self.pair.advance();
    }

    /// One request and response on every connection.
    fn exchange_all(&mut self) -> anyhow::Result<()> {
        for chunk in 0..self.conns.len().div_ceil(WINDOW) {
            let ids: Vec<ConnId> = self.conns[chunk * WINDOW..]
                .iter()
                .take(WINDOW)
                .copied()
                .collect();
            self.exchange(&ids)?;
        }
        Ok(())
    }

    fn exchange(&mut self, ids: &[ConnId]) -> anyhow::Result<()> {
        self.pair.a.prefetch(ids);
        for &c in ids {
            let n = self
                .pair
                .a
                .send(c, REQUEST)
                .map_err(|e| anyhow::anyhow!("send: {e}"))?;
            if n != REQUEST.len() {
                bail!("request did not fit the transmit buffer");
            }
        }
        self.pending += ids.len();
        let mut rounds = 0;
        while self.pending > 0 {
            self.round();
            rounds += 1;
            if rounds > 1_000_000 {
                bail!("{} responses missing", self.pending);
            }
        }
        Ok(())
    }

    /// Times `count` exchanges on connections chosen at random; returns ns per segment
    /// (segments counted on both stacks' receive side).
    /// `sequential`: pick connections in slot order instead of at random, which keeps the
    /// memory hierarchy out of the measurement (see `ns_per_segment_sequential`).
    fn time_segments(&mut self, count: usize, sequential: bool) -> anyhow::Result<Timing> {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let batch = 256.min(self.conns.len());
        let frames = |p: &Pair| (p.a.counters().rx_frames, p.b.counters().rx_frames);
        let f0 = frames(&self.pair);
        let spent0 = self.spent;
        let t = Clock::now();
        let mut ids = Vec::with_capacity(batch);
        let mut done = 0;
        while done < count {
            ids.clear();
            while ids.len() < batch {
                let r = rng.next();
                let i = if sequential {
                    self.cursor = (self.cursor + 1) % self.conns.len();
                    self.cursor
                } else {
                    (r % self.conns.len() as u64) as usize
                };
                // Duplicates are harmless: two requests, two 32-byte responses.
                ids.push(self.conns[i]);
            }
            self.exchange(&ids)?;
            done += batch;
        }
        let ns = t.elapsed().as_nanos() as f64;
        let f1 = frames(&self.pair);
        let (client, server) = ((f1.0 - f0.0) as f64, (f1.1 - f0.1) as f64);
        Ok(Timing {
            both: ns / (client + server),
            server: (self.spent.1 - spent0.1).as_nanos() as f64 / server,
            client: (self.spent.0 - spent0.0).as_nanos() as f64 / client,
            per_exchange: (client / done as f64, server / done as f64),
        })
    }
}

fn client(stack: &mut Stack, buf: &mut [u8], est: &mut usize, exch: &mut usize, pend: &mut usize) {
    while let Some(ev) = stack.next_event() {
        match ev {
            Event::Connected(_) => *est += 1,
            Event::Readable(c) => loop {
                match stack.recv(c, &mut buf[..REQUEST.len()]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        assert_eq!(&buf[..n], &REQUEST[..n], "response differs");
                        *exch += 1;
                        *pend += 1;
                    }
                }
            },
            Event::Closed(c) => panic!("{c} closed during the benchmark"),
            _ => {}
        }
    }
}

fn server(stack: &mut Stack, buf: &mut [u8]) {
    while let Some(ev) = stack.next_event() {
        match ev {
            Event::Acceptable(l) => while stack.accept(l).is_some() {},
            Event::Readable(c) => loop {
                match stack.recv(c, buf) {
                    Ok(0) | Err(ConnError::Finished) => break,
                    Ok(n) => {
                        let _ = stack.send(c, &buf[..n]);
                    }
                    Err(_) => break,
                }
            },
            _ => {}
        }
    }
}

fn print_table(r: &Report) {
    let rows = [
        (
            "connections established",
            format!("{} of {}", r.established, r.conns),
        ),
        (
            "server memory per connection",
            format!("{:.0} B (stack accounting)", r.bytes_per_conn),
        ),
        (
            "process RSS per connection",
            format!("{:.0} B (client + server)", r.rss_bytes_per_conn),
        ),
        (
            "handshakes per second",
            format!("{:.0} (both ends on one core)", r.handshakes_per_sec),
        ),
        (
            "ns per segment, N connections",
            format!("{:.0}", r.ns_per_segment),
        ),
        (
            "ns per segment, 1,000 connections",
            format!("{:.0}", r.ns_per_segment_1k),
        ),
        ("ratio", format!("{:.2}", r.segment_ratio)),
        (
            "server's own ns per segment, N",
            format!(
                "{:.0} (ingress + the emit it causes)",
                r.server_ns_per_segment
            ),
        ),
        (
            "server's own ns per segment, 1,000",
            format!("{:.0}", r.server_ns_per_segment_1k),
        ),
        ("server ratio", format!("{:.2}", r.server_segment_ratio)),
        (
            "frames in per exchange, srv / cli",
            format!(
                "{:.2} / {:.2}",
                r.server_rx_per_exchange, r.client_rx_per_exchange
            ),
        ),
        (
            "client's own ns/segment, N / 1,000",
            format!(
                "{:.0} / {:.0}",
                r.client_ns_per_segment, r.client_ns_per_segment_1k
            ),
        ),
        (
            "ns per segment, N, slot order",
            format!(
                "{:.0} (memory hierarchy out of the way)",
                r.ns_per_segment_sequential
            ),
        ),
        ("buffers", format!("{} B rx + {} B tx", r.rx_buf, r.tx_buf)),
        ("congestion control", r.congestion.to_owned()),
        (
            "TCP timestamps",
            if r.timestamps { "on" } else { "off" }.to_owned(),
        ),
    ];
    for (k, v) in rows {
        println!("  {k:<36}{v}");
    }
}

/// Resident memory of this process, counting 2 MiB hugetlb pages in use (which RSS
/// leaves out) as well.
fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096 + hugetlb_in_use()
}

/// Bytes of reserved hugepages in use system-wide (Total - Free), from /proc/meminfo.
fn hugetlb_in_use() -> usize {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> usize {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let size_kb = field("Hugepagesize:");
    (field("HugePages_Total:") - field("HugePages_Free:").min(field("HugePages_Total:")))
        * size_kb
        * 1024
}

fn hugepages_reserved() -> bool {
    std::fs::read_to_string("/proc/sys/vm/nr_hugepages")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0)
}
