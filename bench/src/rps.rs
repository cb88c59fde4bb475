//! `c10m-bench rps`: request/response load over long-lived connections, with the
//! project's own stack as the client on AF_XDP ([`crate::client`]).
//!
//! Opens `--conns` connections to `--target` (at most [`HANDSHAKES`] handshakes at a
//! time), keeps `--pipeline` requests in flight on each — a new request goes out as soon
//! as a response completes — warms up for `--warmup` seconds once every connection is
//! open, then measures for `--secs`. A request's latency runs from the turn of the loop
//! that queued it to the turn that read the last byte of its response; requests and
//! latencies count when the response completes inside the measured window. At the end
//! every connection is reset (RST), so neither side keeps TIME-WAIT state.
//!
//! Errors: connections that could not be opened, connections the server closed or reset
//! during the run, non-2xx responses and responses that cannot be parsed.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::bail;
use c10m_stack::{ConnError, ConnId, ConnectOptions, Event, Instant, SocketOptions, Stack};
use serde::Serialize;

use crate::client::{Client, Common, Handler, Run};
use crate::measure::{
    Latency, PHASE_MEASURED, PHASE_MEASURING, Progress, Summary, idle_pct, stop_flag, stopped,
};
use crate::proto::{Proto, Responses, request};

/// Handshakes in flight at most while connecting: a burst of thousands of SYNs would
/// overflow the server's SYN queue and cost a one-second retransmission.
const HANDSHAKES: u32 = 256;

/// Arguments of `c10m-bench rps`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    common: Common,
    /// Connections.
    #[arg(long, default_value_t = 10)]
    conns: u32,
    /// Requests in flight on each connection.
    #[arg(long, default_value_t = 1)]
    pipeline: u32,
    /// Seconds of warm-up (load, not measured) after the connections are open.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds to wait for the connections to open.
    #[arg(long, default_value_t = 5.0)]
    connect_timeout: f64,
}

#[derive(Serialize, Debug, Default)]
struct Report {
    target: String,
    proto: String,
    conns: u32,
    pipeline: u32,
    /// Seconds measured (less than asked if interrupted).
    secs: f64,
    warmup: f64,
    connected: u64,
    requests: u64,
    rps: f64,
    errors: u64,
    #[serde(flatten)]
    latency: Summary,
    connect_failed: u64,
    closed_by_peer: u64,
    bad_responses: u64,
    #[serde(flatten)]
    run: Run,
}

/// One connection's requests in flight.
#[derive(Debug)]
struct Conn {
    id: ConnId,
    /// When each request in flight was queued, oldest first.
    sent: VecDeque<Instant>,
    resp: Responses,
    /// Past the handshake.
    connected: bool,
    /// Requests to send as soon as the transmit buffer has room.
    owed: u32,
}

#[derive(Debug)]
struct Load {
    target: std::net::SocketAddrV4,
    proto: Proto,
    req: Vec<u8>,
    opts: ConnectOptions,
    pipeline: u32,
    conns: HashMap<ConnId, Conn>,
    /// Connections with requests owed.
    ready: Vec<ConnId>,
    to_open: u32,
    opening: u32,
    /// The measured window, once known; requests complete inside it count.
    window: Option<(Instant, Instant)>,
    /// No more requests (the end).
    quiet: bool,
    /// Responses in all (warm-up included), for the progress bar.
    responses: u64,
    lat: Latency,
    r: Report,
}

impl Load {
    fn send_owed(&mut self, stack: &mut Stack, now: Instant) {
        let mut i = 0;
        while i < self.ready.len() {
            let id = self.ready[i];
            let Some(c) = self.conns.get_mut(&id) else {
                self.ready.swap_remove(i);
                continue;
            };
            while c.owed > 0 && !self.quiet {
                if stack.send_room(id).unwrap_or(0) < self.req.len() {
                    break;
                }
                match stack.send(id, &self.req) {
                    Ok(n) if n == self.req.len() => {
                        c.owed -= 1;
                        c.sent.push_back(now);
                    }
                    _ => break,
                }
            }
            if c.owed == 0 || self.quiet {
                self.ready.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    fn read(&mut self, stack: &mut Stack, id: ConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let req = &self.req;
        let mut garbled = false;
        let mut finished = false;
        let (mut ok, mut bad) = (0u32, 0u32);
        loop {
            let r = stack.recv_with(id, |buf| {
                if buf.is_empty() {
                    (0, None)
                } else {
                    (buf.len(), Some(c.resp.feed(buf, req)))
                }
            });
            match r {
                Ok(None) => break,
                Ok(Some(Ok(d))) => {
                    ok += d.ok;
                    bad += d.bad;
                }
                Ok(Some(Err(e))) => {
                    tracing::debug!("{id:?}: {e}");
                    garbled = true;
                    break;
                }
                Err(ConnError::Finished) => {
                    finished = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let counted = self
            .window
            .is_some_and(|(from, to)| now >= from && now < to);
        for _ in 0..ok + bad {
            let Some(at) = c.sent.pop_front() else {
                // A response to nothing we asked.
                garbled = true;
                break;
            };
            if counted {
                self.lat.record((now - at).total_micros());
            }
        }
        if counted {
            self.r.requests += u64::from(ok);
            self.r.bad_responses += u64::from(bad);
        }
        if !self.quiet && ok + bad > 0 {
            if c.owed == 0 {
                self.ready.push(id);
            }
            c.owed += ok + bad;
        }
        if garbled || finished {
            if garbled {
                self.r.bad_responses += 1;
            } else {
                self.r.closed_by_peer += 1;
            }
            self.conns.remove(&id);
            let _ = stack.abort(id);
        }
    }
}

impl Handler for Load {
    fn event(&mut self, stack: &mut Stack, event: Event, now: Instant) {
        match event {
            Event::Connected(id) => {
                self.opening = self.opening.saturating_sub(1);
                self.r.connected += 1;
                if let Some(c) = self.conns.get_mut(&id) {
                    c.connected = true;
                    c.owed = self.pipeline;
                    self.ready.push(id);
                }
            }
            Event::Readable(id) => self.read(stack, id, now),
            Event::Closed(id) => {
                if let Some(c) = self.conns.remove(&id) {
                    if !c.connected {
                        // Refused, or no answer.
                        self.opening -= 1;
                        self.r.connect_failed += 1;
                    } else {
                        self.r.closed_by_peer += 1;
                    }
                }
            }
            Event::Writable(_) | Event::Acceptable(_) => {}
        }
    }

    fn work(&mut self, stack: &mut Stack, now: Instant) {
        while self.to_open > 0 && self.opening < HANDSHAKES && !self.quiet {
            self.to_open -= 1;
            match stack.connect(self.target, self.opts) {
                Ok(id) => {
                    self.opening += 1;
                    self.conns.insert(
                        id,
                        Conn {
                            id,
                            sent: VecDeque::new(),
                            resp: Responses::new(self.proto),
                            connected: false,
                            owed: 0,
                        },
                    );
                }
                Err(e) => {
                    tracing::debug!("connect: {e}");
                    self.r.connect_failed += 1;
                }
            }
        }
        self.send_owed(stack, now);
    }
}

/// Runs the benchmark.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let a = &args.common;
    if !(1..=60_000).contains(&args.conns) {
        bail!("--conns must be 1 to 60000 (one source address, ports 1024-65535)");
    }
    if !(1..=4096).contains(&args.pipeline) {
        bail!("--pipeline must be 1 to 4096");
    }
    if !(0.0..=600.0).contains(&args.warmup) || !(0.001..=600.0).contains(&args.connect_timeout) {
        bail!("--warmup must be 0 to 600 seconds and --connect-timeout 0.001 to 600");
    }
    let opts = a.client(args.conns as usize + 64)?;
    let stop = stop_flag()?;
    let req = request(a.proto, a.target, a.req_size);
    // Room for the whole pipeline both ways (HTTP responses are ~100 bytes here).
    let per_req = req.len().max(256);
    let buf = (per_req * args.pipeline as usize)
        .next_power_of_two()
        .clamp(4096, 1 << 20);
    let mut client = Client::open(&opts)?;
    let mut load = Load {
        target: a.target,
        proto: a.proto,
        req,
        opts: ConnectOptions {
            socket: SocketOptions {
                rx_buf: buf,
                tx_buf: buf,
                ..SocketOptions::default()
            },
            ..ConnectOptions::default()
        },
        pipeline: args.pipeline,
        conns: HashMap::new(),
        ready: Vec::new(),
        to_open: args.conns,
        opening: 0,
        window: None,
        quiet: false,
        responses: 0,
        lat: Latency::new(),
        r: Report {
            target: a.target.to_string(),
            proto: a.proto.to_string(),
            conns: args.conns,
            pipeline: args.pipeline,
            warmup: args.warmup,
            run: client.run(a),
            ..Report::default()
        },
    };
    let result = drive(args, &mut client, &mut load, &stop);
    // The end, measured or not: reset every connection.
    load.quiet = true;
    for id in load.conns.keys() {
        let _ = client.stack.abort(*id);
    }
    load.conns.clear();
    load.r.run.client = client.finish(&mut load);
    result?;

    let r = &mut load.r;
    r.latency = load.lat.summary();
    r.rps = if r.secs > 0.0 {
        (r.requests as f64 / r.secs).round()
    } else {
        0.0
    };
    r.errors = r.connect_failed + r.closed_by_peer + r.bad_responses;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print_summary(r);
    }
    Ok(())
}

/// Connect, warm up, measure; fills the report's counts and `secs`.
fn drive(
    args: &Args,
    client: &mut Client,
    load: &mut Load,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let a = &args.common;
    client.resolve(a.target, Duration::from_secs(3))?;
    let start = client.now();
    let timeout = c10m_stack::Duration::from_micros((args.connect_timeout * 1e6) as u64);
    let bar = Progress::new(
        "connect",
        Duration::from_secs_f64(args.connect_timeout.min(f64::from(args.conns) / 1e4)),
    );
    while (load.to_open > 0 || load.opening > 0) && !stopped(stop) {
        client.turn(load);
        let now = client.now();
        if now - start >= timeout {
            // Give up on the handshakes still open.
            let late: Vec<ConnId> = load
                .conns
                .values()
                .filter(|c| !c.connected)
                .map(|c| c.id)
                .collect();
            for id in late {
                load.conns.remove(&id);
                let _ = client.stack.abort(id);
                load.r.connect_failed += 1;
            }
            load.r.connect_failed += u64::from(load.to_open);
            load.to_open = 0;
            load.opening = 0;
            break;
        }
        bar.set(Duration::from_micros((now - start).total_micros()), || {
            format!("{}/{} connected", load.r.connected, args.conns)
        });
    }
    bar.finish();
    if load.r.connected == 0 && !stopped(stop) {
        bail!(
            "no connection to {} opened within {} s: is the server running and the test bed \
             up? (c10m run … --service {}:{} in c10m-dut)",
            a.target,
            args.connect_timeout,
            a.proto,
            a.target.port()
        );
    }
    if load.r.connected < u64::from(args.conns) {
        eprintln!(
            "c10m-bench rps: {} of {} connections opened",
            load.r.connected, args.conns
        );
    }
    let warm = client.now() + c10m_stack::Duration::from_micros((args.warmup * 1e6) as u64);
    let end = warm + c10m_stack::Duration::from_micros((a.secs * 1e6) as u64);
    load.window = Some((warm, end));
    let total = Duration::from_secs_f64(args.warmup + a.secs);
    let bar = Progress::new("rps", total);
    let begin = client.now();
    let mut last = (begin, 0u64);
    let mut rate = 0.0;
    let mut measuring = None;
    loop {
        client.turn(load);
        let now = client.now();
        if measuring.is_none() && now >= warm {
            measuring = Some((now, client.idle_micros()));
            if a.json {
                bar.note(&format!("c10m-bench rps: {PHASE_MEASURING}"));
            }
        }
        if now >= end || stopped(stop) {
            if let Some((from, idle)) = measuring {
                load.r.run.idle_pct = idle_pct(client.idle_micros() - idle, now - from);
                if a.json {
                    bar.note(&format!("c10m-bench rps: {PHASE_MEASURED}"));
                }
            }
            load.r.run.interrupted = now < end;
            load.r.secs = if now > warm {
                (now.min(end) - warm).total_micros() as f64 / 1e6
            } else {
                0.0
            };
            break;
        }
        if (now - last.0).total_millis() >= 250 {
            let n = load.responses;
            rate = (n - last.1) as f64 / ((now - last.0).total_micros() as f64 / 1e6);
            last = (now, n);
        }
        bar.set(Duration::from_micros((now - begin).total_micros()), || {
            let phase = if now < warm { "warm-up" } else { "measuring" };
            format!("{phase}, {rate:.0} req/s, {} conns", load.conns.len())
        });
    }
    bar.finish();
    if load.r.run.interrupted {
        eprintln!("c10m-bench rps: interrupted; reporting what was measured");
    }
    Ok(())
}

fn print_summary(r: &Report) {
    println!(
        "rps  {} {}  {} conns x pipeline {}  {:.2} s measured (xdp {})",
        r.target, r.proto, r.conns, r.pipeline, r.secs, r.run.xdp_mode
    );
    println!("{:<24} {:>12}", "connected", r.connected);
    println!("{:<24} {:>12}", "requests", r.requests);
    println!("{:<24} {:>12.0}", "requests/s", r.rps);
    println!(
        "{:<24} {:>12}",
        "errors",
        format!(
            "{} ({}/{}/{})",
            r.errors, r.connect_failed, r.closed_by_peer, r.bad_responses
        )
    );
    println!(
        "{:<24} (connect failed / closed by server / bad responses)",
        ""
    );
    println!("{:<24} {}", "latency, us", r.latency.line());
    if r.run.interrupted {
        println!("(interrupted)");
    }
}

#[cfg(test)]
#[path = "rps/tests.rs"]
mod tests;
