//! `c10m-bench cps`: short connections — connect, one request, the whole response, close
//! — with `--concurrency` attempts in flight, the project's own stack as the client on
//! AF_XDP ([`crate::client`]).
//!
//! # Closing with RST
//!
//! After the response the client *aborts* the connection (RST), as load generators
//! commonly do (`SO_LINGER` with a zero timeout). A normal close leaves one side in
//! TIME-WAIT for each connection: the client when it closes first, which at tens of
//! thousands of connections per second exhausts the 64K ports of one source address in
//! seconds (smoltcp holds TIME-WAIT 10 s); the server when it closes first, which costs
//! it a socket (kernel) or a slot (dataplane) per connection for as long. An RST frees
//! both ends at once, so a port can be reused as soon as the chooser comes back to it
//! (64K connections later), and the server's count of accepted connections equals the
//! client's count of completed ones. What is measured is the cost of accepting and
//! serving, not of the closing handshake.
//!
//! Latency is from `connect` to the last byte of the response. Attempts start only in
//! the measured `--secs`; the ones in flight at the end are given up to `--timeout` to
//! finish, and `cps` is completed connections over the time to the last completion.
//! `attempted == completed + failed` at the end.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::bail;
use c10m_stack::{ConnError, ConnId, ConnectError, ConnectOptions, Event, Instant, Stack};
use serde::Serialize;

use crate::client::{Client, Common, Handler, Run};
use crate::measure::{
    Latency, PHASE_MEASURED, PHASE_MEASURING, Progress, Summary, idle_pct, stop_flag, stopped,
};
use crate::proto::{Proto, Responses, request};

/// Arguments of `c10m-bench cps`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    common: Common,
    /// Connection attempts in flight.
    #[arg(long, default_value_t = 100)]
    concurrency: u32,
    /// Seconds an attempt may take before it is given up (reset and counted failed).
    #[arg(long, default_value_t = 3.0)]
    timeout: f64,
}

#[derive(Serialize, Debug, Default)]
struct Report {
    target: String,
    proto: String,
    concurrency: u32,
    /// Seconds from the start to the last completion.
    secs: f64,
    attempted: u64,
    completed: u64,
    failed: u64,
    cps: f64,
    #[serde(flatten)]
    latency: Summary,
    /// Failures by kind: refused or reset by the server, timed out, bad response.
    refused: u64,
    timed_out: u64,
    bad_responses: u64,
    /// Connects the client's own stack could not start (no free port or slot).
    local_busy: u64,
    #[serde(flatten)]
    run: Run,
}

#[derive(Debug)]
struct Attempt {
    started: Instant,
    resp: Responses,
}

#[derive(Debug)]
struct Churn {
    target: std::net::SocketAddrV4,
    proto: Proto,
    req: Vec<u8>,
    opts: ConnectOptions,
    concurrency: u32,
    inflight: HashMap<ConnId, Attempt>,
    /// Start no more attempts.
    closing: bool,
    last_done: Instant,
    lat: Latency,
    r: Report,
}

impl Churn {
    fn fail(&mut self, stack: &mut Stack, id: ConnId) {
        if self.inflight.remove(&id).is_some() {
            self.r.failed += 1;
            let _ = stack.abort(id);
        }
    }

    fn read(&mut self, stack: &mut Stack, id: ConnId, now: Instant) {
        let Some(a) = self.inflight.get_mut(&id) else {
            return;
        };
        let req = &self.req;
        let r = stack.recv_with(id, |buf| (buf.len(), a.resp.feed(buf, req)));
        match r {
            Ok(Ok(d)) if d.ok > 0 => {
                self.lat.record((now - a.started).total_micros());
                self.r.completed += 1;
                self.last_done = now;
                self.inflight.remove(&id);
                let _ = stack.abort(id);
            }
            Ok(Ok(d)) if d.bad > 0 => {
                self.r.bad_responses += 1;
                self.fail(stack, id);
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!("{id:?}: {e}");
                self.r.bad_responses += 1;
                self.fail(stack, id);
            }
            Err(ConnError::Finished | ConnError::Closed | ConnError::InvalidState) => {
                self.r.refused += 1;
                self.fail(stack, id);
            }
        }
    }
}

impl Handler for Churn {
    fn event(&mut self, stack: &mut Stack, event: Event, now: Instant) {
        match event {
            Event::Connected(id) => {
                if self.inflight.contains_key(&id)
                    && stack.send(id, &self.req) != Ok(self.req.len())
                {
                    // The buffer holds a whole request: only a dying connection refuses.
                    self.r.refused += 1;
                    self.fail(stack, id);
                }
            }
            // One read takes the first contiguous run; a response that wraps the buffer
            // takes a second.
            Event::Readable(id) => {
                self.read(stack, id, now);
                self.read(stack, id, now);
            }
            Event::Closed(id) => {
                if self.inflight.remove(&id).is_some() {
                    self.r.refused += 1;
                    self.r.failed += 1;
                }
            }
            Event::Writable(_) | Event::Acceptable(_) => {}
        }
    }

    fn work(&mut self, stack: &mut Stack, now: Instant) {
        while !self.closing && (self.inflight.len() as u32) < self.concurrency {
            match stack.connect(self.target, self.opts) {
                Ok(id) => {
                    self.r.attempted += 1;
                    self.inflight.insert(
                        id,
                        Attempt {
                            started: now,
                            resp: Responses::new(self.proto),
                        },
                    );
                }
                Err(ConnectError::AddrInUse | ConnectError::Refused(_)) => {
                    // Ports or slots still held locally: try again next turn.
                    self.r.local_busy += 1;
                    break;
                }
                Err(e) => {
                    tracing::debug!("connect: {e}");
                    self.r.local_busy += 1;
                    break;
                }
            }
        }
    }
}

/// Runs the benchmark.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let a = &args.common;
    if !(1..=30_000).contains(&args.concurrency) {
        bail!("--concurrency must be 1 to 30000");
    }
    if !(args.timeout > 0.0 && args.timeout <= 60.0) {
        bail!("--timeout must be above 0 and at most 60 seconds");
    }
    // Slots: the attempts plus the ones aborted this turn, whose RST is still queued.
    let opts = a.client(2 * args.concurrency as usize + 64)?;
    let stop = stop_flag()?;
    let mut client = Client::open(&opts)?;
    let mut churn = Churn {
        target: a.target,
        proto: a.proto,
        req: request(a.proto, a.target, a.req_size),
        opts: ConnectOptions::default(),
        concurrency: args.concurrency,
        inflight: HashMap::new(),
        closing: false,
        last_done: Instant::ZERO,
        lat: Latency::new(),
        r: Report {
            target: a.target.to_string(),
            proto: a.proto.to_string(),
            concurrency: args.concurrency,
            run: client.run(a),
            ..Report::default()
        },
    };
    client.resolve(a.target, Duration::from_secs(3))?;
    let start = client.now();
    churn.last_done = start;
    drive(args, &mut client, &mut churn, &stop, start);
    churn.closing = true;
    let left: Vec<ConnId> = churn.inflight.keys().copied().collect();
    for id in left {
        churn.r.timed_out += u64::from(!churn.r.run.interrupted);
        churn.fail(&mut client.stack, id);
    }
    churn.r.run.client = client.finish(&mut churn);

    let r = &mut churn.r;
    r.latency = churn.lat.summary();
    r.secs = (churn.last_done - start).total_micros() as f64 / 1e6;
    r.cps = if r.secs > 0.0 {
        (r.completed as f64 / r.secs).round()
    } else {
        0.0
    };
    if r.completed == 0 && !r.run.interrupted {
        bail!(
            "no connection to {} completed ({} attempted, {} refused, {} timed out): is the \
             server running and the test bed up? (c10m run … --service {}:{} in c10m-dut)",
            a.target,
            r.attempted,
            r.refused,
            r.timed_out,
            a.proto,
            a.target.port()
        );
    }
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print_summary(r);
    }
    Ok(())
}

/// Attempts for `--secs`, then the stragglers for up to `--timeout`.
fn drive(args: &Args, client: &mut Client, churn: &mut Churn, stop: &AtomicBool, start: Instant) {
    let a = &args.common;
    let us = |s: f64| c10m_stack::Duration::from_micros((s * 1e6) as u64);
    let end = start + us(a.secs);
    let timeout = us(args.timeout);
    let mut next_scan = start;
    let bar = Progress::new("cps", Duration::from_secs_f64(a.secs));
    let mut drain_until = None;
    let idle_from = client.idle_micros();
    if a.json {
        bar.note(&format!("c10m-bench cps: {PHASE_MEASURING}"));
    }
    loop {
        client.turn(churn);
        let now = client.now();
        if stopped(stop) {
            churn.r.run.interrupted = true;
            break;
        }
        if now >= end && drain_until.is_none() {
            churn.r.run.idle_pct = idle_pct(client.idle_micros() - idle_from, now - start);
            if a.json {
                bar.note(&format!("c10m-bench cps: {PHASE_MEASURED}"));
            }
            churn.closing = true;
            drain_until = Some(now + timeout);
        }
        if let Some(until) = drain_until
            && (churn.inflight.is_empty() || now >= until)
        {
            break;
        }
        if now >= next_scan {
            // Attempts past their time: a scan every 100 ms is cheap at any concurrency.
            next_scan = now + c10m_stack::Duration::from_millis(100);
            let late: Vec<ConnId> = churn
                .inflight
                .iter()
                .filter(|(_, at)| now - at.started >= timeout)
                .map(|(id, _)| *id)
                .collect();
            for id in late {
                churn.r.timed_out += 1;
                churn.fail(&mut client.stack, id);
            }
            bar.set(Duration::from_micros((now - start).total_micros()), || {
                let secs = (now - start).total_micros() as f64 / 1e6;
                format!("{:.0} conn/s", churn.r.completed as f64 / secs.max(1e-3))
            });
        }
    }
    bar.finish();
    if churn.r.run.interrupted {
        eprintln!("c10m-bench cps: interrupted; reporting what was measured");
    }
}

fn print_summary(r: &Report) {
    println!(
        "cps  {} {}  concurrency {}  {:.2} s (xdp {})",
        r.target, r.proto, r.concurrency, r.secs, r.run.xdp_mode
    );
    println!("{:<24} {:>12}", "attempted", r.attempted);
    println!("{:<24} {:>12}", "completed", r.completed);
    println!(
        "{:<24} {:>12}",
        "failed",
        format!(
            "{} ({}/{}/{})",
            r.failed, r.refused, r.timed_out, r.bad_responses
        )
    );
    println!("{:<24} (refused or reset / timed out / bad responses)", "");
    println!("{:<24} {:>12.0}", "connections/s", r.cps);
    println!("connect to response, us {}", r.latency.line());
    if r.run.interrupted {
        println!("(interrupted)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `compare` and the tests read these names, in this order.
    #[test]
    fn the_json_report_keeps_its_fields_in_order() {
        let mut r = Report::default();
        r.run.interrupted = true;
        r.run.src = "198.18.0.100/24".into();
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"target":"","proto":"","concurrency":0,"secs":0.0,"attempted":0,"completed":0,"failed":0,"cps":0.0,"p50_us":0,"p90_us":0,"p99_us":0,"p999_us":0,"max_us":0,"mean_us":0.0,"refused":0,"timed_out":0,"bad_responses":0,"local_busy":0,"src":"198.18.0.100/24","xdp_mode":"","interrupted":true,"idle_pct":0.0,"client":{"rx_frames":0,"tx_frames":0,"rx_dropped":0,"xsk_rx_dropped":0,"resets_received":0}}"#
        );
    }
}
