//! `c10m-bench conns`: a stateless connection-scale client over AF_XDP.
//!
//! Run it in the test bed's c10m-gen namespace on gen0. It opens `--count` TCP
//! connections to `--target` from source addresses of `--src` (198.19.0.0/16 by
//! default: 64,512 ports, 1024–65535, per address, addresses from the prefix's `.1`),
//! at most `--rate` SYNs per second, holds them for `--hold` seconds, then resets them.
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
use std::hash::BuildHasher;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use c10m_dataplane::{Port, ZeroCopy};
use c10m_ebpf::{Proto, Steering, XdpMode};
use c10m_stack::TxQueue;
use serde::Serialize;

use crate::net::{Prefix, in_bench_range, mac_of, parse_mac, require_iface, resolve_mac};

/// Lowest source port.
const PORT_LO: u16 = 1024;
/// Source ports per source address.
const PORTS: u32 = 65536 - PORT_LO as u32;
/// UMEM frames of the socket.
const FRAMES: u32 = 8192;
/// Bytes of a request.
const REQ_LEN: u32 = 16;
/// Bytes of a heartbeat.
const HB_LEN: u32 = 8;
/// Retransmissions of a SYN (or of unechoed data) before giving up.
const RETRIES: u8 = 6;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

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
    /// The server's management socket, to cross-check its counts.
    #[arg(long)]
    mgmt: Option<PathBuf>,
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
    heartbeats: u64,
    heartbeats_ok: u64,
    bad_echo: u64,
    bad_ack: u64,
    resets_received: u64,
    server_closed: u64,
    tx_dropped: u64,
    resets_sent: u64,
    server_established: Option<u64>,
    server_bytes_per_conn: Option<u64>,
    server_established_after: Option<u64>,
    xdp_mode: String,
    secs: f64,
}

/// The addresses, ports and keys of one run.
struct Plan {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    net: u32,
    target: Ipv4Addr,
    tport: u16,
    count: u32,
    hasher: RandomState,
}

impl Plan {
    fn tuple(&self, i: u32) -> (Ipv4Addr, u16) {
        let addr = Ipv4Addr::from(self.net + 1 + i / PORTS);
        (addr, PORT_LO + (i % PORTS) as u16)
    }

    fn index(&self, addr: Ipv4Addr, port: u16) -> Option<u32> {
        let a = u32::from(addr).checked_sub(self.net + 1)?;
        let p = u32::from(port.checked_sub(PORT_LO)?);
        let i = a.checked_mul(PORTS)?.checked_add(p)?;
        (i < self.count).then_some(i)
    }

    fn isn(&self, i: u32) -> u32 {
        let (a, p) = self.tuple(i);
        let t = (u32::from(a), p, u32::from(self.target), self.tport);
        self.hasher.hash_one(t) as u32
    }

    /// Builds and queues one segment of connection `i`; false if the queue was full.
    fn send(
        &self,
        tx: &mut impl TxQueue,
        i: u32,
        seq: u32,
        ack: u32,
        flags: u8,
        data: &[u8],
    ) -> bool {
        if !tx.has_room() {
            return false;
        }
        let (src, sport) = self.tuple(i);
        let len = 54 + data.len();
        tx.transmit(len, |f| {
            f[0..6].copy_from_slice(&self.dst_mac);
            f[6..12].copy_from_slice(&self.src_mac);
            f[12..14].copy_from_slice(&[0x08, 0x00]);
            let ip = &mut f[14..34];
            ip.fill(0);
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((len - 14) as u16).to_be_bytes());
            ip[6] = 0x40;
            ip[8] = 64;
            ip[9] = 6;
            ip[12..16].copy_from_slice(&src.octets());
            ip[16..20].copy_from_slice(&self.target.octets());
            let sum = fold(sum16(ip, 0));
            ip[10..12].copy_from_slice(&(!sum).to_be_bytes());
            let tcp = &mut f[34..len];
            tcp[..20].fill(0);
            tcp[0..2].copy_from_slice(&sport.to_be_bytes());
            tcp[2..4].copy_from_slice(&self.tport.to_be_bytes());
            tcp[4..8].copy_from_slice(&seq.to_be_bytes());
            tcp[8..12].copy_from_slice(&ack.to_be_bytes());
            tcp[12] = 5 << 4;
            tcp[13] = flags;
            tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
            tcp[20..].copy_from_slice(data);
            let mut pseudo = [0u8; 12];
            pseudo[0..4].copy_from_slice(&src.octets());
            pseudo[4..8].copy_from_slice(&self.target.octets());
            pseudo[9] = 6;
            pseudo[10..12].copy_from_slice(&((len - 34) as u16).to_be_bytes());
            let sum = fold(sum16(tcp, sum16(&pseudo, 0)));
            tcp[16..18].copy_from_slice(&(!sum).to_be_bytes());
        });
        true
    }
}

/// One's-complement sum of big-endian 16-bit words (odd tail padded with zero).
fn sum16(data: &[u8], init: u32) -> u32 {
    let mut s = init;
    let mut chunks = data.chunks_exact(2);
    for w in &mut chunks {
        s += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [b] = chunks.remainder() {
        s += u32::from(*b) << 8;
    }
    s
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
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

/// A bitmap of `n` bits.
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: u32) -> Bits {
        Bits(vec![0; (n as usize).div_ceil(64)])
    }
    fn get(&self, i: u32) -> bool {
        self.0[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
    /// Sets bit `i`; true if it was clear.
    fn set(&mut self, i: u32) -> bool {
        let w = &mut self.0[(i / 64) as usize];
        let was = *w & (1 << (i % 64)) != 0;
        *w |= 1 << (i % 64);
        !was
    }
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
    Data,
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
    timeouts: VecDeque<(Instant, u32, u8, Kind)>,
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
        let sent = self.samples.get(&i).map_or(0, |s| s.sent);
        self.plan.isn(i).wrapping_add(1).wrapping_add(sent)
    }

    fn on_frame(&mut self, f: &[u8], tx: &mut impl TxQueue, now: Instant) {
        if f.len() < 54 || f[12..14] != [0x08, 0x00] || f[23] != 6 {
            return;
        }
        let ihl = usize::from(f[14] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
        let l4 = 14 + ihl;
        if ihl < 20 || f.len() < l4 + 20 || total + 14 > f.len() || total < ihl + 20 {
            return;
        }
        let src = Ipv4Addr::new(f[26], f[27], f[28], f[29]);
        let dst = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
        let t = &f[l4..14 + total];
        let sport = u16::from_be_bytes([t[0], t[1]]);
        let dport = u16::from_be_bytes([t[2], t[3]]);
        if src != self.plan.target || sport != self.plan.tport {
            return;
        }
        let Some(i) = self.plan.index(dst, dport) else {
            return;
        };
        let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
        let ack = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
        let off = usize::from(t[12] >> 4) * 4;
        let flags = t[13];
        if off < 20 || off > t.len() {
            return;
        }
        let data = &t[off..];
        let isn = self.plan.isn(i);

        if flags & RST != 0 {
            self.r.resets_received += 1;
            if !self.established.get(i) && self.gone.set(i) {
                self.r.failed += 1;
            }
            return;
        }
        if flags & (SYN | ACK) == SYN | ACK {
            if ack != isn.wrapping_add(1) {
                self.r.bad_ack += 1;
                return;
            }
            let ours = isn.wrapping_add(1);
            if self.phase == Phase::Teardown || (self.gone.get(i) && !self.established.get(i)) {
                self.send_counted(tx, i, ours, 0, RST, &[]);
                return;
            }
            let srv = seq.wrapping_add(1);
            if self.established.set(i) {
                self.r.established += 1;
                let sec = (now - self.start).as_secs() as usize;
                if self.r.cps_per_sec.len() <= sec {
                    self.r.cps_per_sec.resize(sec + 1, 0);
                }
                self.r.cps_per_sec[sec] += 1;
                if self.sampled(i) {
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
            }
            self.send_counted(tx, i, ours, srv, ACK, &[]);
            if self.req_every > 0
                && i.is_multiple_of(self.req_every)
                && let Some(s) = self.samples.get_mut(&i)
                && s.sent == 0
            {
                s.sent = REQ_LEN;
                self.r.requests += 1;
                stream(i, 0, REQ_LEN, &mut self.scratch);
                let ok = self.plan.send(tx, i, ours, srv, PSH | ACK, &self.scratch);
                self.r.tx_dropped += u64::from(!ok);
                self.timeouts
                    .push_back((now + self.timeout, i, 0, Kind::Data));
            }
            return;
        }
        if flags & ACK == 0 {
            return;
        }
        if self.phase == Phase::Teardown || !self.established.get(i) {
            self.send_counted(tx, i, ack, 0, RST, &[]);
            return;
        }
        if flags & FIN != 0 {
            // The server closed a connection we hold: reset it.
            self.r.server_closed += 1;
            self.send_counted(tx, i, ack, 0, RST, &[]);
            return;
        }
        if data.is_empty() {
            return;
        }
        let Some(s) = self.samples.get_mut(&i) else {
            // Data on a connection that sent none: acknowledge it, count it as bad.
            self.r.bad_echo += 1;
            let ok = self
                .plan
                .send(tx, i, ack, seq.wrapping_add(data.len() as u32), ACK, &[]);
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
        let ok = self.plan.send(tx, i, ack, s.srv_nxt, ACK, &[]);
        self.r.tx_dropped += u64::from(!ok);
    }

    fn send_counted(
        &mut self,
        tx: &mut impl TxQueue,
        i: u32,
        seq: u32,
        ack: u32,
        flags: u8,
        data: &[u8],
    ) {
        let ok = self.plan.send(tx, i, seq, ack, flags, data);
        self.r.tx_dropped += u64::from(!ok);
        if ok && flags & RST != 0 {
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
            .send(tx, i, seq, s.srv_nxt, PSH | ACK, &self.scratch)
    }
}

/// The server's counts from its management socket.
#[derive(Debug, Clone, Copy)]
struct ServerCounts {
    established: u64,
    bytes_per_conn: u64,
}

fn server_counts(path: &PathBuf) -> anyhow::Result<ServerCounts> {
    let mut sock = UnixStream::connect(path)
        .with_context(|| format!("connecting to the management socket {}", path.display()))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    sock.write_all(b"{\"cmd\":\"stats\"}\n")?;
    let mut line = String::new();
    BufReader::new(&sock).read_line(&mut line)?;
    let v: serde_json::Value = serde_json::from_str(line.trim())
        .with_context(|| format!("the management answer {line:?}"))?;
    if v["ok"] != true {
        bail!("the server refused the stats request: {line}");
    }
    let t = &v["stats"]["totals"];
    Ok(ServerCounts {
        established: t["connections"]["established"]
            .as_u64()
            .ok_or_else(|| anyhow!("no connections.established in {line}"))?,
        bytes_per_conn: t["bytes_per_connection"].as_u64().unwrap_or(0),
    })
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
    let max_secs = if args.max_secs > 0.0 {
        args.max_secs
    } else {
        f64::from(args.count) / f64::from(args.rate) + args.hold + 60.0
    };

    let steering = Steering::attach(&args.iface, args.xdp_mode)?;
    steering.add_prefix(Ipv4Addr::from(net), len, Proto::Tcp)?;
    let mut port = Port::open(&args.iface, 0, FRAMES, ZeroCopy::Auto)
        .with_context(|| format!("opening an AF_XDP socket on {}", args.iface))?;
    steering.register_xsk(0, port.fd())?;

    let before = match &args.mgmt {
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
        req_every: args.request_sample,
        hb_every: args.heartbeat_sample,
        timeouts: VecDeque::new(),
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
        // Timeouts: SYNs and data without an answer.
        while let Some(&(at, i, attempt, kind)) = c.timeouts.front() {
            if at > now || c.phase == Phase::Teardown {
                if c.phase == Phase::Teardown {
                    c.timeouts.clear();
                }
                break;
            }
            let mut tx = port.tx();
            match kind {
                Kind::Syn if c.established.get(i) || c.gone.get(i) => {}
                Kind::Syn if attempt >= RETRIES => {
                    c.gone.set(i);
                    c.r.failed += 1;
                }
                Kind::Syn => {
                    if tokens < 1.0 || !tx.has_room() {
                        break;
                    }
                    tokens -= 1.0;
                    let isn = c.plan.isn(i);
                    c.plan.send(&mut tx, i, isn, 0, SYN, &[]);
                    c.r.syns_sent += 1;
                    c.r.syn_retransmits += 1;
                    c.timeouts
                        .push_back((now + c.timeout, i, attempt + 1, kind));
                }
                Kind::Data => {
                    let open = c.samples.get(&i).is_some_and(|s| s.echoed < s.sent);
                    if open && attempt < RETRIES {
                        if !c.resend_data(&mut tx, i) {
                            break;
                        }
                        c.timeouts
                            .push_back((now + c.timeout, i, attempt + 1, kind));
                    }
                }
            }
            c.timeouts.pop_front();
        }
        match c.phase {
            Phase::Connect => {
                let mut tx = port.tx();
                while next < args.count && tokens >= 1.0 && tx.has_room() {
                    tokens -= 1.0;
                    let isn = c.plan.isn(next);
                    c.plan.send(&mut tx, next, isn, 0, SYN, &[]);
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
                if hb_cursor >= hb_list.len()
                    && held >= f64::from(hb_round) + 1.0
                    && held + 0.5 < args.hold
                {
                    hb_round += 1;
                    hb_cursor = 0;
                }
                let mut tx = port.tx();
                while hb_cursor < hb_list.len() && tx.has_room() {
                    let i = hb_list[hb_cursor];
                    hb_cursor += 1;
                    let Some(s) = c.samples.get_mut(&i) else {
                        continue;
                    };
                    let (from, to) = (s.sent, s.sent + HB_LEN);
                    s.sent = to;
                    let srv = s.srv_nxt;
                    stream(i, from, to, &mut c.scratch);
                    let seq = c.plan.isn(i).wrapping_add(1).wrapping_add(from);
                    c.plan.send(&mut tx, i, seq, srv, PSH | ACK, &c.scratch);
                    c.r.heartbeats += 1;
                    c.timeouts.push_back((now + c.timeout, i, 0, Kind::Data));
                }
                if held >= args.hold {
                    // Let stragglers (ACKs of the last echoes) settle, then count.
                    if let Some(p) = &args.mgmt {
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
                        c.plan.send(&mut tx, i, seq, 0, RST, &[]);
                        c.r.resets_sent += 1;
                        sent += 1.0;
                    }
                }
                tokens = (tokens - sent / 2.0).max(0.0);
                if rst_cursor >= args.count && port.tx_in_flight() == 0 {
                    let wait = *rst_wait.get_or_insert(now + Duration::from_millis(300));
                    if now >= wait {
                        rst_passes += 1;
                        let after = match &args.mgmt {
                            Some(p) => server_counts(p).ok().map(|s| s.established),
                            None => None,
                        };
                        c.r.server_established_after = after;
                        let base = before.map_or(0, |b| b.established);
                        if after.is_some_and(|a| a > base) && rst_passes < 3 {
                            rst_cursor = 0;
                            rst_wait = None;
                        } else {
                            break;
                        }
                    }
                }
            }
        }
        port.flush();
        port.reap();
    }
    let end = Instant::now();
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
    if args.json {
        println!("{}", serde_json::to_string(&c.r)?);
    } else {
        print_table(&c.r);
    }
    Ok(())
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
        format!("{}/{}", r.heartbeats_ok, r.heartbeats)
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
