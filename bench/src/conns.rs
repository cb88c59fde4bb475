//! `c10m-bench conns`: a stateless connection-scale client over AF_XDP.
//!
//! Run it in the test bed's c10m-gen namespace on gen0. It opens `--count` TCP
//! connections to `--target` from source addresses of `--src` (198.19.0.0/16 by
//! default: 64,512 ports, 1024–65535, per address, addresses from the prefix's `.1`),
//! at most `--rate` SYNs per second, holds them for `--hold` seconds, then resets them.
//!
//! `--proto echo` (the default) talks to an echo service on sampled connections, as
//! below; `--proto push` makes every connection a live subscriber of the push service
//! (`SUB`, a `PING` every `--heartbeat-interval` seconds, `MSG`s counted), and with
//! `--publish-after` asks the server to publish and measures the fan-out ([`push`]).
//!
//! # Stateless
//!
//! Connection `i` is the 4-tuple (address `i / 64512`, port `1024 + i % 64512`) →
//! target. Its initial sequence number is a keyed hash (SipHash with a per-run random
//! key, `std`'s `RandomState`) of the 4-tuple, so a SYN-ACK is checked and answered
//! from the packet alone: its ACK must be ISN + 1, and the client's ACK is
//! (ISN + 1, server sequence + 1). The only per-connection memory is three bitmaps
//! (established, given up, echo checked): 3 bits a connection. Retransmission of SYNs
//! without an answer uses a queue of timeouts that holds only connections in flight
//! (about `rate × timeout` entries).
//!
//! Every `--request-sample`-th connection sends a 16-byte request with its ACK and
//! checks that the echo service returns it byte for byte; every
//! `--heartbeat-sample`-th one sends an 8-byte heartbeat each second of the hold and
//! checks its echo. Those sampled connections (and only they) keep a small record —
//! the server's next sequence number and the bytes sent and echoed — in a hash map,
//! since an ACK must acknowledge the server's sequence, which is not derivable.
//! Lost requests and heartbeats are retransmitted after the same timeout.
//!
//! Frames are built and parsed with `smoltcp::wire` in place in UMEM ([`wire`]).
//!
//! # Steering replies to the socket
//!
//! c10m-gen owns 198.19.0.0/16 (a local route on lo), so its kernel would answer the
//! server's SYN-ACKs with RSTs. The client attaches the project's XDP steering program
//! (`c10m_ebpf::Steering`) to gen0 and registers the whole `--src` prefix for TCP
//! (`Steering::add_prefix`): every TCP frame to the client range goes to the AF_XDP
//! socket of queue 0 before the kernel sees it. Everything else — ARP for 198.18.0.1,
//! which the dataplane needs to reach its gateway — still goes to the kernel. Use the
//! test bed with one queue (the socket is on queue 0 only).
//!
//! # The end
//!
//! After the hold the client asks the server for its counts (`--mgmt`: the daemon's
//! management socket, one JSON line each way), then sends an RST for every established
//! connection, with the sequence number the server expects (ISN + 1 + bytes sent),
//! and, with `--mgmt`, repeats the RST pass (at most twice more) while the server still
//! counts established connections. Any segment from the server for a connection after
//! that is answered with an RST carrying the segment's own ACK number. The server is
//! not left holding the slots.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use c10m_dataplane::{KICK_ROUNDS, Port, ZeroCopy};
use c10m_ebpf::{Proto, Steering, XdpMode};
use c10m_stack::TxQueue;
use serde::Serialize;

use crate::measure::Summary;
use crate::net::{Prefix, in_bench_range, mac_of, parse_mac, require_iface, resolve_mac};

mod fanout;
mod mgmt;
mod push;
mod wire;

use fanout::Fanout;
use mgmt::server_counts;
use wire::{Bits, Flags, PORTS, Plan, Segment};

/// UMEM frames of the socket.
const FRAMES: u32 = 16384;
/// Bytes of a request.
const REQ_LEN: u32 = 16;
/// Bytes of a heartbeat.
const HB_LEN: u32 = 8;
/// Retransmissions of a SYN (or of unechoed data) before giving up.
const RETRIES: u8 = 6;

/// What the connections say.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Talk {
    /// Sampled requests and heartbeats to an echo service.
    Echo,
    /// Every connection a subscriber of the push service.
    Push,
}

/// Arguments of `c10m-bench conns`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The server, ADDR:PORT (198.18.0.0/15 only).
    #[arg(long)]
    target: SocketAddrV4,
    /// Connections to open.
    #[arg(long)]
    count: u32,
    /// SYNs per second (retransmissions included).
    #[arg(long, default_value_t = 10_000)]
    rate: u32,
    /// Seconds to hold the connections once all are open.
    #[arg(long, default_value_t = 1.0)]
    hold: f64,
    /// The interface (in this network namespace).
    #[arg(long, default_value = "gen0")]
    iface: String,
    /// Source addresses, a prefix inside 198.18.0.0/15.
    #[arg(long, default_value = "198.19.0.0/16")]
    src: String,
    /// Send a request on every K-th connection and check its echo (0: none).
    #[arg(long, default_value_t = 100)]
    request_sample: u32,
    /// Send a heartbeat each second of the hold on every K-th connection (0: none).
    #[arg(long, default_value_t = 1000)]
    heartbeat_sample: u32,
    /// The server's management socket, to cross-check its counts (repeatable: a server
    /// of several processes, counts summed and a publish sent to each).
    #[arg(long)]
    mgmt: Vec<PathBuf>,
    /// Milliseconds before a SYN (or data) without an answer is sent again.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Upper bound on the whole run, seconds (0: count / rate + hold + 60).
    #[arg(long, default_value_t = 0.0)]
    max_secs: f64,
    /// The server's MAC (default: resolved by the kernel's ARP).
    #[arg(long)]
    dst_mac: Option<String>,
    /// XDP attach mode: auto, native or generic.
    #[arg(long, default_value = "auto")]
    xdp_mode: XdpMode,
    /// What the connections say: echo (sampled requests and heartbeats) or push (every
    /// connection subscribes and heartbeats).
    #[arg(long, value_enum, default_value = "echo")]
    proto: Talk,
    /// push: the topic to subscribe to (with --topics K: NAME0 … NAME{K-1}, connection
    /// i on topic i % K).
    #[arg(long, default_value = "news")]
    topic: String,
    /// push: spread the connections over this many topics.
    #[arg(long, default_value_t = 1)]
    topics: u32,
    /// push: seconds between a connection's PINGs.
    #[arg(long, default_value_t = 60.0)]
    heartbeat_interval: f64,
    /// push: once every connection is subscribed, wait this many seconds and ask the
    /// server (--mgmt) to publish --publish-message to the topics.
    #[arg(long)]
    publish_after: Option<f64>,
    /// push: the message to publish (one line, no spaces needed).
    #[arg(long, default_value = "hello")]
    publish_message: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize, Debug, Default)]
struct Report {
    attempted: u64,
    established: u64,
    failed: u64,
    syns_sent: u64,
    syn_retransmits: u64,
    cps_avg: f64,
    cps_per_sec: Vec<u64>,
    connect_secs: f64,
    requests: u64,
    requests_ok: u64,
    heartbeats_sent: u64,
    heartbeats_ok: u64,
    heartbeats_resent: u64,
    /// Push: PING → PONG round trips (see [`push`]), µs, and how many were measured.
    heartbeat_rtt: Summary,
    heartbeat_rtt_samples: u64,
    subscribed: u64,
    published_to: u64,
    delivered: u64,
    duplicates: u64,
    missed: u64,
    delivery_secs: f64,
    /// Deliveries per 100 ms since the publish.
    deliveries_per_100ms: Vec<u64>,
    bad_replies: u64,
    server_publish_queued: Option<u64>,
    server_publish_delivered: Option<u64>,
    server_publish_dropped: Option<u64>,
    client_bytes_per_conn: u64,
    /// Frames the client's own kernel dropped (its fill ring empty, its rx ring full).
    client_rx_dropped: u64,
    bad_echo: u64,
    bad_ack: u64,
    resets_received: u64,
    server_closed: u64,
    tx_dropped: u64,
    resets_sent: u64,
    server_established: Option<u64>,
    server_bytes_per_conn: Option<u64>,
    server_established_after: Option<u64>,
    /// The server's kernel-side rx drops over the run: fill ring empty (which the
    /// kernel counts in its `rx_dropped` too), rx ring full and the rest (0 is the goal).
    server_rx_dropped: Option<u64>,
    server_rx_fill_ring_empty: Option<u64>,
    xdp_mode: String,
    secs: f64,
}

/// The byte at `offset` of connection `i`'s client stream (requests then heartbeats).
fn stream_byte(i: u32, offset: u32) -> u8 {
    (i.wrapping_mul(0x9e37_79b9)
        .wrapping_add(offset.wrapping_mul(131))
        >> 13) as u8
}

fn stream(i: u32, from: u32, to: u32, out: &mut Vec<u8>) {
    out.clear();
    out.extend((from..to).map(|o| stream_byte(i, o)));
}

/// The record of a sampled connection.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// The server's next sequence number (what we acknowledge).
    srv_nxt: u32,
    /// The server's ISN + 1 (offset 0 of its stream).
    srv_base: u32,
    /// Client stream bytes sent and echoed back (checked).
    sent: u32,
    echoed: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connect,
    Hold,
    Teardown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Syn,
    /// Echo: a sampled connection's unechoed bytes.
    Data,
    /// Push: PING number `n` (0: the SUB) without its answer.
    Push(u16),
}

struct Client {
    plan: Plan,
    phase: Phase,
    established: Bits,
    gone: Bits,
    checked: Bits,
    samples: HashMap<u32, Sample>,
    req_every: u32,
    hb_every: u32,
    /// `--proto push`: every connection's subscriber record.
    push: Option<push::Push>,
    timeouts: VecDeque<(Instant, u32, u8, Kind)>,
    /// Push retransmissions, one queue per attempt (each in deadline order): the wait
    /// doubles with each attempt, as TCP's retransmission timeout does, so that a server
    /// that fell behind is not buried under copies of what it has not read yet.
    backoff: [VecDeque<(Instant, u32, u16)>; RETRIES as usize],
    timeout: Duration,
    start: Instant,
    scratch: Vec<u8>,
    r: Report,
}

impl Client {
    fn sampled(&self, i: u32) -> bool {
        (self.req_every > 0 && i.is_multiple_of(self.req_every))
            || (self.hb_every > 0 && i.is_multiple_of(self.hb_every))
    }

    /// Our next sequence number on connection `i`.
    fn snd_nxt(&self, i: u32) -> u32 {
        if let Some(p) = &self.push {
            return p.snd_nxt(&self.plan, i);
        }
        let sent = self.samples.get(&i).map_or(0, |s| s.sent);
        self.plan.isn(i).wrapping_add(1).wrapping_add(sent)
    }

    fn on_frame(&mut self, f: &[u8], tx: &mut impl TxQueue, now: Instant) {
        let Some(s) = self.plan.parse(f) else {
            return;
        };
        let i = s.i;
        let isn = self.plan.isn(i);
        if s.rst {
            self.r.resets_received += 1;
            if !self.established.get(i) && self.gone.set(i) {
                self.r.failed += 1;
            }
            return;
        }
        if s.syn && s.ack_flag {
            if s.ack != isn.wrapping_add(1) {
                self.r.bad_ack += 1;
                return;
            }
            let ours = isn.wrapping_add(1);
            if self.phase == Phase::Teardown || (self.gone.get(i) && !self.established.get(i)) {
                self.send_counted(tx, i, ours, 0, Flags::Rst, &[]);
                return;
            }
            let srv = s.seq.wrapping_add(1);
            let first = self.established.set(i);
            if first {
                self.r.established += 1;
                let sec = (now - self.start).as_secs() as usize;
                if self.r.cps_per_sec.len() <= sec {
                    self.r.cps_per_sec.resize(sec + 1, 0);
                }
                self.r.cps_per_sec[sec] += 1;
            }
            if let Some(p) = &mut self.push {
                let ok = p.established(&self.plan, tx, i, srv, first);
                self.r.tx_dropped += u64::from(!ok);
                if first {
                    self.timeouts
                        .push_back((now + self.push_timeout(), i, 0, Kind::Push(0)));
                }
                return;
            }
            if first && self.sampled(i) {
                self.samples.insert(
                    i,
                    Sample {
                        srv_nxt: srv,
                        srv_base: srv,
                        sent: 0,
                        echoed: 0,
                    },
                );
            }
            self.send_counted(tx, i, ours, srv, Flags::Ack, &[]);
            if self.req_every > 0
                && i.is_multiple_of(self.req_every)
                && let Some(smp) = self.samples.get_mut(&i)
                && smp.sent == 0
            {
                smp.sent = REQ_LEN;
                self.r.requests += 1;
                stream(i, 0, REQ_LEN, &mut self.scratch);
                let ok = self.plan.send(tx, i, ours, srv, Flags::Ack, &self.scratch);
                self.r.tx_dropped += u64::from(!ok);
                self.timeouts
                    .push_back((now + self.timeout, i, 0, Kind::Data));
            }
            return;
        }
        if !s.ack_flag {
            return;
        }
        if self.phase == Phase::Teardown || !self.established.get(i) {
            self.send_counted(tx, i, s.ack, 0, Flags::Rst, &[]);
            return;
        }
        if s.fin {
            // The server closed a connection we hold: reset it.
            self.r.server_closed += 1;
            self.send_counted(tx, i, s.ack, 0, Flags::Rst, &[]);
            return;
        }
        if let Some(p) = &mut self.push {
            let ok = p.on_segment(&self.plan, tx, &s, now);
            self.r.tx_dropped += u64::from(!ok);
            return;
        }
        if !s.data.is_empty() {
            self.on_echo(tx, &s);
        }
    }

    /// Data on an echo connection: checked against what the sample sent.
    fn on_echo(&mut self, tx: &mut impl TxQueue, seg: &Segment<'_>) {
        let (i, seq, ack, data) = (seg.i, seg.seq, seg.ack, seg.data);
        let Some(s) = self.samples.get_mut(&i) else {
            // Data on a connection that sent none: acknowledge it, count it as bad.
            self.r.bad_echo += 1;
            let next = seq.wrapping_add(data.len() as u32);
            let ok = self.plan.send(tx, i, ack, next, Flags::Ack, &[]);
            self.r.tx_dropped += u64::from(!ok);
            return;
        };
        if seq == s.srv_nxt {
            let at = seq.wrapping_sub(s.srv_base);
            let good = data
                .iter()
                .zip(at..)
                .all(|(&b, o)| o < s.sent && b == stream_byte(i, o));
            if good {
                let before = s.echoed;
                s.echoed += data.len() as u32;
                s.srv_nxt = seq.wrapping_add(data.len() as u32);
                if before < REQ_LEN && s.echoed >= REQ_LEN && self.checked.set(i) {
                    self.r.requests_ok += 1;
                }
                let base = if self.req_every > 0 && i.is_multiple_of(self.req_every) {
                    REQ_LEN
                } else {
                    0
                };
                let hb_now = s.echoed.saturating_sub(base) / HB_LEN;
                let hb_prev = before.saturating_sub(base) / HB_LEN;
                self.r.heartbeats_ok += u64::from(hb_now - hb_prev);
            } else {
                self.r.bad_echo += 1;
            }
        }
        let ok = self.plan.send(tx, i, ack, s.srv_nxt, Flags::Ack, &[]);
        self.r.tx_dropped += u64::from(!ok);
    }

    fn send_counted(
        &mut self,
        tx: &mut impl TxQueue,
        i: u32,
        seq: u32,
        ack: u32,
        flags: Flags,
        data: &[u8],
    ) {
        let ok = self.plan.send(tx, i, seq, ack, flags, data);
        self.r.tx_dropped += u64::from(!ok);
        if ok && flags == Flags::Rst {
            self.r.resets_sent += 1;
        }
    }

    /// Sends connection `i`'s unechoed stream bytes again.
    fn resend_data(&mut self, tx: &mut impl TxQueue, i: u32) -> bool {
        let Some(s) = self.samples.get(&i).copied() else {
            return true;
        };
        if s.echoed >= s.sent {
            return true;
        }
        stream(i, s.echoed, s.sent, &mut self.scratch);
        let seq = self.plan.isn(i).wrapping_add(1).wrapping_add(s.echoed);
        self.plan
            .send(tx, i, seq, s.srv_nxt, Flags::Ack, &self.scratch)
    }

    /// How long a PING (or SUB) waits for its answer before it is sent again the first
    /// time (then 6, 12 … s): at least 3 s, since the server's own retransmission timeout
    /// is at least 1 s, and resending a whole round early under load only adds to it.
    fn push_timeout(&self) -> Duration {
        self.timeout.max(Duration::from_secs(3))
    }

    /// Client bytes per connection: bitmaps, samples, subscriber records, timeouts.
    fn bytes_per_conn(&self) -> u64 {
        let bits = self.established.bytes() + self.gone.bytes() + self.checked.bytes();
        let samples = self.samples.capacity() * (4 + std::mem::size_of::<Sample>() + 1);
        let push = self.push.as_ref().map_or(0, push::Push::bytes);
        let queue = self.timeouts.capacity() * std::mem::size_of::<(Instant, u32, u8, Kind)>()
            + self.backoff.iter().map(VecDeque::capacity).sum::<usize>()
                * std::mem::size_of::<(Instant, u32, u16)>();
        ((bits + samples + push + queue) as u64).div_ceil(u64::from(self.plan.count.max(1)))
    }
}

/// Runs the benchmark.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let src = Prefix::parse_src(&args.src)?;
    let (net, len, last) = (src.net, src.len, src.last());
    if !in_bench_range(*args.target.ip()) {
        bail!("--target must be inside the benchmarking range 198.18.0.0/15");
    }
    if (net..=last).contains(&u32::from(*args.target.ip())) {
        bail!("--target must not be inside --src");
    }
    if args.count == 0 || args.rate == 0 {
        bail!("--count and --rate must be above 0");
    }
    let hosts = u64::from(last - net).saturating_sub(1);
    if u64::from(args.count).div_ceil(u64::from(PORTS)) > hosts {
        bail!(
            "--count {} needs more than the {hosts} addresses of --src ({PORTS} ports each)",
            args.count
        );
    }
    if !(0.0..=3600.0).contains(&args.hold) {
        bail!("--hold must be 0 to 3600 seconds");
    }
    require_iface(&args.iface)?;
    let src_mac = mac_of(&args.iface)?;
    let dst_mac = match &args.dst_mac {
        Some(m) => parse_mac(m).map_err(|e| anyhow!("--dst-mac {m:?}: {e}"))?,
        None => resolve_mac(*args.target.ip())?,
    };
    let push = args.proto == Talk::Push;
    if push {
        if !(0.1..=3600.0).contains(&args.heartbeat_interval) {
            bail!("--heartbeat-interval must be 0.1 to 3600 seconds");
        }
        if args.topics == 0 || args.topic.is_empty() || args.topic.contains(char::is_whitespace) {
            bail!("--topic must be one word and --topics at least 1");
        }
        if args.publish_message.contains('\n') {
            bail!("--publish-message must be one line");
        }
        if args.publish_after.is_some() && args.mgmt.is_empty() {
            bail!("--publish-after publishes through the server's management socket: give --mgmt");
        }
    } else if args.publish_after.is_some() {
        bail!("--publish-after needs --proto push");
    }
    let max_secs = if args.max_secs > 0.0 {
        args.max_secs
    } else {
        f64::from(args.count) / f64::from(args.rate)
            + args.hold
            + args.publish_after.map_or(0.0, |p| p + 300.0)
            + 60.0
    };

    let steering = Steering::attach(&args.iface, args.xdp_mode)?;
    steering.add_prefix(Ipv4Addr::from(net), len, Proto::Tcp)?;
    let mut port = Port::open(&args.iface, 0, FRAMES, ZeroCopy::Auto)
        .with_context(|| format!("opening an AF_XDP socket on {}", args.iface))?;
    steering.register_xsk(0, port.fd())?;

    let mgmt = (!args.mgmt.is_empty()).then_some(args.mgmt.as_slice());
    let before = match mgmt {
        Some(p) => Some(server_counts(p)?),
        None => None,
    };
    let start = Instant::now();
    let mut c = Client {
        plan: Plan {
            src_mac,
            dst_mac,
            net,
            target: *args.target.ip(),
            tport: args.target.port(),
            count: args.count,
            hasher: RandomState::new(),
        },
        phase: Phase::Connect,
        established: Bits::new(args.count),
        gone: Bits::new(args.count),
        checked: Bits::new(args.count),
        samples: HashMap::new(),
        req_every: if push { 0 } else { args.request_sample },
        hb_every: if push { 0 } else { args.heartbeat_sample },
        push: push.then(|| {
            push::Push::new(
                args.count,
                &args.topic,
                args.topics,
                &args.publish_message,
                args.rate,
                args.heartbeat_interval,
                start,
            )
        }),
        timeouts: VecDeque::new(),
        backoff: Default::default(),
        timeout: Duration::from_millis(args.timeout_ms.max(10)),
        start,
        scratch: Vec::with_capacity(256),
        r: Report {
            xdp_mode: steering.mode().to_string(),
            ..Report::default()
        },
    };
    let deadline = start + Duration::from_secs_f64(max_secs);
    let rate = f64::from(args.rate);
    let burst = (rate / 100.0).max(64.0);
    let (mut tokens, mut last_fill) = (0.0f64, start);
    let mut next = 0u32;
    let mut connected_at = None;
    let mut hold_start = start;
    let mut hb_round = 0u32;
    let mut hb_list: Vec<u32> = Vec::new();
    let mut hb_cursor = 0usize;
    let mut pinged: Vec<(u32, u16)> = Vec::new();
    let mut fanout = Fanout::new(args.publish_after.is_some(), &args.publish_message);
    // Push: when the heartbeats stopped, so that the last PONGs come before the RSTs.
    let mut quiet: Option<Instant> = None;
    let mut rst_cursor = 0u32;
    let mut rst_passes = 0u32;
    let mut rst_wait: Option<Instant> = None;

    loop {
        let now = Instant::now();
        port.receive(512, |f, tx| c.on_frame(f, tx, now));
        port.refill();
        tokens = (tokens + (now - last_fill).as_secs_f64() * rate).min(burst);
        last_fill = now;
        if now >= deadline && c.phase != Phase::Teardown {
            eprintln!("c10m-bench conns: --max-secs reached, tearing down");
            c.phase = Phase::Teardown;
        }
        c.expire(&mut port.tx(), now, &mut tokens);
        if c.phase != Phase::Teardown
            && quiet.is_none()
            && let Some(p) = &mut c.push
        {
            let (established, gone) = (&c.established, &c.gone);
            pinged.clear();
            p.heartbeat(
                &c.plan,
                &mut port.tx(),
                now,
                |i| established.get(i) && !gone.get(i),
                &mut pinged,
            );
            let at = now + c.push_timeout();
            c.timeouts
                .extend(pinged.iter().map(|&(i, n)| (at, i, 0, Kind::Push(n))));
        }
        match c.phase {
            Phase::Connect => {
                let mut tx = port.tx();
                while next < args.count && tokens >= 1.0 && tx.has_room() {
                    tokens -= 1.0;
                    let isn = c.plan.isn(next);
                    c.plan.send(&mut tx, next, isn, 0, Flags::Syn, &[]);
                    c.r.syns_sent += 1;
                    c.timeouts.push_back((now + c.timeout, next, 0, Kind::Syn));
                    next += 1;
                }
                c.r.attempted = u64::from(next);
                if next == args.count && c.r.established + c.r.failed >= u64::from(args.count) {
                    connected_at = Some(now);
                    c.phase = Phase::Hold;
                    hold_start = now;
                    hb_list = c
                        .samples
                        .keys()
                        .copied()
                        .filter(|&i| c.hb_every > 0 && i.is_multiple_of(c.hb_every))
                        .collect();
                    hb_list.sort_unstable();
                    hb_cursor = hb_list.len();
                }
            }
            Phase::Hold => {
                let held = (now - hold_start).as_secs_f64();
                if !push {
                    if hb_cursor >= hb_list.len()
                        && held >= f64::from(hb_round) + 1.0
                        && held + 0.5 < args.hold
                    {
                        hb_round += 1;
                        hb_cursor = 0;
                    }
                    c.echo_heartbeats(&mut port.tx(), &hb_list, &mut hb_cursor, now);
                }
                if let Some(after) = args.publish_after
                    && let Some(mgmt) = mgmt
                {
                    fanout.step(&mut c, mgmt, after, hold_start, now)?;
                }
                let settled = held >= args.hold && fanout.settled(&c, now);
                let quiet_for = c.push_timeout() + Duration::from_secs(1);
                if settled && push && *quiet.get_or_insert(now) + quiet_for > now {
                    // The last PINGs' answers (and retransmissions) are on their way.
                } else if settled {
                    // Let stragglers (ACKs of the last echoes) settle, then count.
                    if let Some(p) = mgmt {
                        match server_counts(p) {
                            Ok(s) => {
                                c.r.server_established = Some(
                                    s.established
                                        .saturating_sub(before.map_or(0, |b| b.established)),
                                );
                                c.r.server_bytes_per_conn = Some(s.bytes_per_conn);
                                let short = s.established < c.r.established;
                                if short
                                    && now < hold_start + Duration::from_secs_f64(args.hold + 3.0)
                                {
                                    // ACKs may still be in flight or retried by the server.
                                    for _ in 0..50 {
                                        port.receive(512, |f, tx| c.on_frame(f, tx, now));
                                        port.refill();
                                        port.flush();
                                        port.reap();
                                    }
                                    std::thread::sleep(Duration::from_millis(20));
                                    continue;
                                }
                            }
                            Err(e) => eprintln!("c10m-bench conns: server stats: {e:#}"),
                        }
                    }
                    c.phase = Phase::Teardown;
                }
            }
            Phase::Teardown => {
                let rst_rate_tokens = tokens * 2.0 + 64.0;
                let mut sent = 0.0;
                let mut tx = port.tx();
                while rst_cursor < args.count && sent < rst_rate_tokens && tx.has_room() {
                    let i = rst_cursor;
                    rst_cursor += 1;
                    if c.established.get(i) {
                        let seq = c.snd_nxt(i);
                        c.plan.send(&mut tx, i, seq, 0, Flags::Rst, &[]);
                        c.r.resets_sent += 1;
                        sent += 1.0;
                    }
                }
                tokens = (tokens - sent / 2.0).max(0.0);
                if rst_cursor >= args.count && port.tx_in_flight() == 0 {
                    let wait = *rst_wait.get_or_insert(now + Duration::from_millis(300));
                    if now >= wait {
                        rst_passes += 1;
                        let after = mgmt.and_then(|p| server_counts(p).ok());
                        c.r.server_established_after = after.map(|s| s.established);
                        if let (Some(b), Some(a)) = (before, after) {
                            c.r.server_rx_fill_ring_empty =
                                Some(a.fill_ring_empty.saturating_sub(b.fill_ring_empty));
                            c.r.server_rx_dropped = Some(a.rx_dropped.saturating_sub(b.rx_dropped));
                        }
                        let base = before.map_or(0, |b| b.established);
                        if after.is_some_and(|a| a.established > base) && rst_passes < 3 {
                            rst_cursor = 0;
                            rst_wait = None;
                        } else {
                            break;
                        }
                    }
                }
            }
        }
        // Copy mode sends at most 32 frames a kick: kick a few times while frames wait.
        port.push(KICK_ROUNDS);
    }
    let end = Instant::now();
    c.r.client_rx_dropped = {
        let k = port.kernel_stats();
        k.rx_dropped + k.rx_ring_full
    };
    let _ = steering.unregister_xsk(0);
    port.close(Duration::from_millis(200));

    let connect = connected_at.unwrap_or(end) - start;
    c.r.connect_secs = connect.as_secs_f64();
    c.r.cps_avg = if c.r.connect_secs > 0.0 {
        c.r.established as f64 / c.r.connect_secs
    } else {
        0.0
    };
    c.r.secs = (end - start).as_secs_f64();
    c.finish(&fanout);
    if c.r.server_rx_dropped.is_some_and(|d| d > 0) {
        eprintln!(
            "c10m-bench conns: THE SERVER'S KERNEL DROPPED {} FRAMES during the run ({} with \
             its AF_XDP fill ring empty): its TCP peers retransmitted",
            c.r.server_rx_dropped.unwrap_or(0),
            c.r.server_rx_fill_ring_empty.unwrap_or(0)
        );
    }
    if args.json {
        println!("{}", serde_json::to_string(&c.r)?);
    } else {
        print_table(&c.r);
    }
    Ok(())
}

impl Client {
    /// Sends what timed out again: SYNs, unechoed data, unanswered PINGs.
    fn expire(&mut self, tx: &mut impl TxQueue, now: Instant, tokens: &mut f64) {
        while let Some(&(at, i, attempt, kind)) = self.timeouts.front() {
            if self.phase == Phase::Teardown {
                self.timeouts.clear();
                self.backoff.iter_mut().for_each(VecDeque::clear);
                break;
            }
            if at > now {
                break;
            }
            match kind {
                Kind::Syn if self.established.get(i) || self.gone.get(i) => {}
                Kind::Syn if attempt >= RETRIES => {
                    self.gone.set(i);
                    self.r.failed += 1;
                }
                Kind::Syn => {
                    if *tokens < 1.0 || !tx.has_room() {
                        break;
                    }
                    *tokens -= 1.0;
                    let isn = self.plan.isn(i);
                    self.plan.send(tx, i, isn, 0, Flags::Syn, &[]);
                    self.r.syns_sent += 1;
                    self.r.syn_retransmits += 1;
                    self.timeouts
                        .push_back((now + self.timeout, i, attempt + 1, kind));
                }
                Kind::Data => {
                    let open = self.samples.get(&i).is_some_and(|s| s.echoed < s.sent);
                    if open && attempt < RETRIES {
                        if !self.resend_data(tx, i) {
                            break;
                        }
                        self.timeouts
                            .push_back((now + self.timeout, i, attempt + 1, kind));
                    }
                }
                Kind::Push(n) => {
                    if !self.resend_push(tx, now, i, 0, n) {
                        break;
                    }
                }
            }
            self.timeouts.pop_front();
        }
        for k in 0..self.backoff.len() {
            while let Some(&(at, i, n)) = self.backoff[k].front() {
                if at > now || !self.resend_push(tx, now, i, k as u8 + 1, n) {
                    break;
                }
                self.backoff[k].pop_front();
            }
        }
    }

    /// Push: the `attempt`-th timeout of PING `n` of connection `i` expired: sends again
    /// what is unanswered and waits twice as long. False if the queue was full.
    fn resend_push(
        &mut self,
        tx: &mut impl TxQueue,
        now: Instant,
        i: u32,
        attempt: u8,
        n: u16,
    ) -> bool {
        let wait = self.push_timeout() * (2u32 << attempt);
        let Some(p) = &mut self.push else {
            return true;
        };
        if !p.waiting_for(i, n) || self.gone.get(i) || usize::from(attempt) >= self.backoff.len() {
            return true;
        }
        if !p.resend(&self.plan, tx, i) {
            return false;
        }
        p.c.heartbeats_resent += 1;
        self.backoff[usize::from(attempt)].push_back((now + wait, i, n));
        true
    }

    /// Echo: the sampled heartbeats of this round.
    fn echo_heartbeats(
        &mut self,
        tx: &mut impl TxQueue,
        list: &[u32],
        cursor: &mut usize,
        now: Instant,
    ) {
        while *cursor < list.len() && tx.has_room() {
            let i = list[*cursor];
            *cursor += 1;
            let Some(s) = self.samples.get_mut(&i) else {
                continue;
            };
            let (from, to) = (s.sent, s.sent + HB_LEN);
            s.sent = to;
            let srv = s.srv_nxt;
            stream(i, from, to, &mut self.scratch);
            let seq = self.plan.isn(i).wrapping_add(1).wrapping_add(from);
            self.plan.send(tx, i, seq, srv, Flags::Ack, &self.scratch);
            self.r.heartbeats_sent += 1;
            self.timeouts
                .push_back((now + self.timeout, i, 0, Kind::Data));
        }
    }

    /// Fills the report's push figures and the client's memory.
    fn finish(&mut self, fanout: &Fanout) {
        self.r.client_bytes_per_conn = self.bytes_per_conn();
        let Some(p) = &self.push else { return };
        let r = &mut self.r;
        r.subscribed = p.c.subscribed;
        r.heartbeats_sent = p.c.heartbeats_sent;
        r.heartbeats_ok = p.c.heartbeats_ok;
        r.heartbeats_resent = p.c.heartbeats_resent;
        r.heartbeat_rtt = p.c.rtt.summary();
        r.heartbeat_rtt_samples = p.c.rtt.count();
        r.bad_replies = p.c.bad_replies;
        if p.published_at.is_some() {
            r.published_to = fanout.published_to;
            r.delivered = p.c.delivered;
            r.duplicates = p.c.duplicates;
            r.missed = p.missed();
            r.delivery_secs = p.delivery_secs();
            r.deliveries_per_100ms = p.c.curve.clone();
        }
        if let Some(s) = fanout.server {
            r.server_publish_queued = Some(s.queued);
            r.server_publish_delivered = Some(s.delivered);
            r.server_publish_dropped = Some(s.dropped);
        }
    }
}

fn print_table(r: &Report) {
    let opt = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    println!("conns  xdp {}  {:.2} s in all", r.xdp_mode, r.secs);
    println!("{:<28} {:>12}", "attempted", r.attempted);
    println!("{:<28} {:>12}", "established", r.established);
    println!("{:<28} {:>12}", "failed", r.failed);
    println!(
        "{:<28} {:>12}",
        "SYNs sent (retransmitted)",
        format!("{} ({})", r.syns_sent, r.syn_retransmits)
    );
    println!("{:<28} {:>12.0}", "connections/s (average)", r.cps_avg);
    println!("{:<28} {:>12.2}", "connect phase, s", r.connect_secs);
    println!(
        "{:<28} {:>12}",
        "requests ok / sent",
        format!("{}/{}", r.requests_ok, r.requests)
    );
    println!(
        "{:<28} {:>12}",
        "heartbeats ok / sent",
        format!("{}/{}", r.heartbeats_ok, r.heartbeats_sent)
    );
    if r.subscribed > 0 || r.published_to > 0 {
        println!("{:<28} {:>12}", "subscribed", r.subscribed);
        println!(
            "heartbeat round trip, µs ({} measured): {}",
            r.heartbeat_rtt_samples,
            r.heartbeat_rtt.line()
        );
        println!(
            "{:<28} {:>12}",
            "delivered / published to",
            format!("{}/{}", r.delivered, r.published_to)
        );
        println!(
            "{:<28} {:>12}",
            "duplicates / missed",
            format!("{}/{}", r.duplicates, r.missed)
        );
        println!("{:<28} {:>12.3}", "publish → last MSG, s", r.delivery_secs);
        println!(
            "{:<28} {:>12}",
            "server queued/deliv./dropped",
            format!(
                "{}/{}/{}",
                opt(r.server_publish_queued),
                opt(r.server_publish_delivered),
                opt(r.server_publish_dropped)
            )
        );
    }
    println!(
        "{:<28} {:>12}",
        "server rx dropped (fill empty)",
        format!(
            "{} ({})",
            opt(r.server_rx_dropped),
            opt(r.server_rx_fill_ring_empty)
        )
    );
    println!(
        "{:<28} {:>12}",
        "client bytes/conn", r.client_bytes_per_conn
    );
    println!(
        "{:<28} {:>12}",
        "bad echoes / bad ACKs",
        format!("{}/{}", r.bad_echo, r.bad_ack)
    );
    println!(
        "{:<28} {:>12}",
        "server established",
        opt(r.server_established)
    );
    println!(
        "{:<28} {:>12}",
        "server bytes/conn",
        opt(r.server_bytes_per_conn)
    );
    println!(
        "{:<28} {:>12}",
        "server established after RST",
        opt(r.server_established_after)
    );
    println!(
        "{:<28} {:>12}",
        "RSTs sent / received",
        format!("{}/{}", r.resets_sent, r.resets_received)
    );
    let cps: Vec<String> = r.cps_per_sec.iter().map(u64::to_string).collect();
    println!("connections per second: {}", cps.join(" "));
}

#[cfg(test)]
#[path = "conns/tests.rs"]
mod tests;
