//! `c10m-bench flood`: hostile traffic — a SYN, ACK or RST flood from spoofed sources,
//! over AF_XDP, bounded in time. Run it in the test bed's c10m-gen namespace on gen0.
//!
//! # What it sends
//!
//! - `syn`: SYNs with a random initial sequence number and an MSS option, the classic
//!   flood against a listener's half-open state (RFC 4987 §2–3). Each comes from a
//!   random source address and port, so no two share a 4-tuple and per-source limits
//!   cannot help the server.
//! - `ack`: bare ACKs with random sequence and acknowledgment numbers. To a server with
//!   SYN cookies each one looks like the third segment of a handshake whose state the
//!   server did not keep, so it probes the cookie check (RFC 4987 §3.6): every one must
//!   be refused, and refused silently.
//! - `rst`: RSTs with random sequence numbers, the blind reset attack (RFC 5961 §3);
//!   none should match a connection, and none deserves an answer (RFC 9293 §3.10.7.1).
//!
//! Sources (addresses and ports 1024–65535) are drawn at random from `--src`, which
//! must lie inside the benchmarking range 198.18.0.0/15 (RFC 2544): the generator
//! never sends from addresses someone else owns. The prefix's network and broadcast
//! addresses are skipped.
//!
//! # Stateless and bounded
//!
//! Nothing is kept per frame: a frame is a function of a 64-bit random state
//! (SplitMix64, seeded per run from `std`'s `RandomState`). Frames are built with
//! `smoltcp::wire` (representations emitted, IPv4 and TCP checksums computed), the
//! same code the stack parses with — about a hundred nanoseconds a frame, which the
//! veth copy path (about a microsecond a frame) hides. The run stops by itself after
//! `--secs` (at most 600), and at Ctrl-C.
//!
//! `--rate` paces with a token bucket (bursts of at most 100 µs worth: on veth a burst
//! waits in the receiver's queue as a whole, and every frame behind it, a legitimate
//! client's too, waits for all of it; real floods from many sources arrive smoother);
//! `max` (or 0) fills the tx ring as fast as the kernel completes frames.
//!
//! # The spoofed sources stay silent
//!
//! The test bed routes 198.19.0.0/16 back to c10m-gen, whose kernel owns it (a local
//! route on lo): it would answer every SYN-ACK with an RST and so free the server's
//! half-open state, which no real spoofed source does. The flood therefore attaches the
//! project's XDP steering program to the interface and has it tally `--src` for TCP
//! and UDP (`Steering::tally_prefix`): every reply to a spoofed source is counted by
//! its TCP flags (SYN-ACKs, RSTs, others) and dropped in XDP. Those counts are how a
//! test sees backscatter: a server that answers a flood SYN with an RST shows up in
//! `replies.rst`. Counting in XDP rather than copying each reply to an AF_XDP socket
//! keeps the bed's cost of watching replies small: on a 2-core bed the replies
//! arrive on the core the generator and the measuring clients share. Replies are
//! counted over the whole run plus a 100 ms grace.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use c10m_dataplane::{KICK_ROUNDS, Port, ZeroCopy};
use c10m_ebpf::{Counters, Proto, Steering, XdpMode};
use c10m_stack::TxQueue;
use serde::Serialize;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
    Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};

use crate::measure::{stop_flag, stopped};
use crate::net::{Prefix, in_bench_range, mac_of, parse_mac, require_iface, resolve_mac};

/// UMEM frames of the socket.
const FRAMES: u32 = 4096;
/// Frames built per round at most.
const BATCH: u32 = 64;
/// Lowest source port.
const PORT_LO: u16 = 1024;
/// The longest flood.
const MAX_SECS: f64 = 600.0;
/// The MSS a flood SYN announces (a common Ethernet value).
const MSS: u16 = 1460;

/// The kind of flood.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    /// SYNs with random ISNs.
    Syn,
    /// ACKs with random sequence and acknowledgment numbers.
    Ack,
    /// RSTs with random sequence numbers.
    Rst,
    /// Not an attack: SYN frames whose IPv4 header claims 16 bytes (IHL 4), which
    /// every receiver discards at its first look (the dataplane's XDP program, the
    /// kernel's `ip_rcv`). The same frames at the same rate as a SYN flood, costing
    /// the receiving host as little as a frame can: the baseline load a flood
    /// measurement compares with.
    Runt,
}

/// Arguments of `c10m-bench flood`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// syn, ack, rst, or runt (a baseline load, see above).
    #[arg(long, value_enum)]
    kind: Kind,
    /// The server under attack, ADDR:PORT (198.18.0.0/15 only).
    #[arg(long)]
    target: SocketAddrV4,
    /// Frames per second; `max` or 0: as fast as the interface takes them.
    #[arg(long, default_value = "max", value_parser = parse_rate)]
    rate: u64,
    /// Seconds of flood (at most 600).
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Spoofed source addresses, a prefix inside 198.18.0.0/15.
    #[arg(long, default_value = "198.19.0.0/16")]
    src: String,
    /// The interface (in this network namespace).
    #[arg(long, default_value = "gen0")]
    iface: String,
    /// The queue to send on.
    #[arg(long, default_value_t = 0)]
    queue: u32,
    /// The next hop's MAC: the target's, or the gateway's (default: the kernel's ARP
    /// answer for the target).
    #[arg(long)]
    dst_mac: Option<String>,
    /// XDP attach mode of the steering program that swallows replies: auto, native or
    /// generic.
    #[arg(long, default_value = "auto")]
    xdp_mode: XdpMode,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// `max` or 0: unpaced; else frames per second.
fn parse_rate(s: &str) -> Result<u64, String> {
    if s == "max" {
        return Ok(0);
    }
    s.parse()
        .map_err(|_| format!("expected frames per second or max, not {s:?}"))
}

/// Replies to the spoofed sources, by kind (the XDP program's `tallied_*` counters).
#[derive(Serialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Replies {
    /// SYN-ACKs (a server keeping or encoding half-open state).
    pub(crate) syn_ack: u64,
    /// RSTs (backscatter).
    pub(crate) rst: u64,
    /// Any other TCP segment, or UDP.
    pub(crate) other: u64,
}

impl Replies {
    /// What the XDP program tallied between `before` and `after`.
    fn between(before: &Counters, after: &Counters) -> Replies {
        Replies {
            syn_ack: after.tallied_syn_ack.saturating_sub(before.tallied_syn_ack),
            rst: after.tallied_rst.saturating_sub(before.tallied_rst),
            other: after.tallied_other.saturating_sub(before.tallied_other),
        }
    }
}

#[derive(Serialize, Debug)]
struct Report {
    kind: Kind,
    target: String,
    src: String,
    /// Requested frames per second, 0 for max.
    rate: u64,
    /// Seconds from the first frame to the end.
    secs: f64,
    /// Frames the kernel completed.
    sent: u64,
    /// `sent / secs`, frames per second.
    rate_achieved: f64,
    /// Kicks that failed and completions the frame book refused.
    tx_errors: u64,
    /// Frames built but not sent: no UMEM frame free, or still queued at the end.
    tx_dropped: u64,
    /// Replies the server sent to the spoofed sources during the run.
    replies: Replies,
    xdp_mode: String,
    interrupted: bool,
}

/// SplitMix64: a fast, well-mixed 64-bit sequence; not cryptographic, not needed.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Builds the flood's frames: one per call, each from a fresh random source.
#[derive(Debug, Clone)]
pub(crate) struct Forger {
    kind: Kind,
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    target: SocketAddrV4,
    src: Prefix,
    rng: Rng,
    caps: ChecksumCapabilities,
}

impl Forger {
    pub(crate) fn new(
        kind: Kind,
        macs: ([u8; 6], [u8; 6]),
        target: SocketAddrV4,
        src: Prefix,
        seed: u64,
    ) -> Forger {
        Forger {
            kind,
            src_mac: EthernetAddress(macs.0),
            dst_mac: EthernetAddress(macs.1),
            target,
            src,
            rng: Rng(seed),
            caps: ChecksumCapabilities::default(),
        }
    }

    /// A random source: an address of the prefix other than its network and broadcast
    /// addresses (when it has more than two), and a port from 1024.
    fn source(&mut self) -> (Ipv4Addr, u16) {
        let r = self.rng.next();
        let hosts = self.src.hostmask();
        let host = if hosts >= 3 {
            1 + (r as u32) % (hosts - 1)
        } else {
            r as u32 & hosts
        };
        let ports = u64::from(u16::MAX - PORT_LO) + 1;
        let port = PORT_LO + ((r >> 32) % ports) as u16;
        (Ipv4Addr::from(self.src.net | host), port)
    }

    /// The TCP segment of this kind, with random numbers.
    fn segment(&mut self, sport: u16) -> TcpRepr<'static> {
        let r = self.rng.next();
        let (seq, ack) = (TcpSeqNumber(r as i32), TcpSeqNumber((r >> 32) as i32));
        let (control, ack_number, max_seg_size, window_len) = match self.kind {
            Kind::Syn | Kind::Runt => (TcpControl::Syn, None, Some(MSS), 64_240),
            Kind::Ack => (TcpControl::None, Some(ack), None, 64_240),
            Kind::Rst => (TcpControl::Rst, None, None, 0),
        };
        TcpRepr {
            src_port: sport,
            dst_port: self.target.port(),
            control,
            seq_number: seq,
            ack_number,
            window_len,
            window_scale: None,
            max_seg_size,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        }
    }

    /// Bytes of every frame of this kind (Ethernet, IPv4, TCP with its options).
    pub(crate) fn len(&self) -> usize {
        let tcp = match self.kind {
            Kind::Syn | Kind::Runt => 24,
            Kind::Ack | Kind::Rst => 20,
        };
        14 + 20 + tcp
    }

    /// Writes the next frame into `buf`, which is [`len`](Self::len) bytes.
    pub(crate) fn write(&mut self, buf: &mut [u8]) {
        let (src, sport) = self.source();
        let tcp = self.segment(sport);
        debug_assert_eq!(buf.len(), 34 + tcp.buffer_len());
        let mut eth = EthernetFrame::new_unchecked(&mut *buf);
        EthernetRepr {
            src_addr: self.src_mac,
            dst_addr: self.dst_mac,
            ethertype: EthernetProtocol::Ipv4,
        }
        .emit(&mut eth);
        let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
        Ipv4Repr {
            src_addr: src,
            dst_addr: *self.target.ip(),
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        }
        .emit(&mut ip, &self.caps);
        let (from, to) = (IpAddress::Ipv4(src), IpAddress::Ipv4(*self.target.ip()));
        tcp.emit(
            &mut TcpPacket::new_unchecked(ip.payload_mut()),
            &from,
            &to,
            &self.caps,
        );
        if self.kind == Kind::Runt {
            buf[14] = 0x44; // version 4, IHL 4: malformed
        }
    }
}

fn check(args: &Args) -> anyhow::Result<Prefix> {
    let src = Prefix::parse_src(&args.src)?;
    let target = *args.target.ip();
    if !in_bench_range(target) {
        bail!("--target must be inside the benchmarking range 198.18.0.0/15");
    }
    if src.contains(target) {
        bail!("--target must not be inside --src");
    }
    if args.target.port() == 0 {
        bail!("--target needs a port, e.g. 198.18.0.10:7");
    }
    if !(args.secs > 0.0 && args.secs <= MAX_SECS) {
        bail!("--secs must be more than 0 and at most {MAX_SECS}");
    }
    Ok(src)
}

/// Runs the flood.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let src = check(args)?;
    require_iface(&args.iface)?;
    let stop = stop_flag()?;
    let src_mac = mac_of(&args.iface)?;
    let dst_mac = match &args.dst_mac {
        Some(m) => parse_mac(m).map_err(|e| anyhow!("--dst-mac {m:?}: {e}"))?,
        None => resolve_mac(*args.target.ip())?,
    };
    let seed = RandomState::new().hash_one(0x0066_6c6f_6f64_u64);
    let mut forger = Forger::new(args.kind, (src_mac, dst_mac), args.target, src, seed);
    let len = forger.len();

    let steering = Steering::attach(&args.iface, args.xdp_mode).with_context(|| {
        format!(
            "attaching the XDP steering program to {} (is another generator using it?)",
            args.iface
        )
    })?;
    for proto in [Proto::Tcp, Proto::Udp] {
        steering.tally_prefix(Ipv4Addr::from(src.net), src.len, proto)?;
    }
    let mut port = Port::open(&args.iface, args.queue, FRAMES, ZeroCopy::Auto)
        .with_context(|| format!("opening an AF_XDP socket on {}", args.iface))?;
    let tallied_before = steering.counters()?;
    let limit = Duration::from_secs_f64(args.secs);
    let rate = args.rate as f64;
    let burst = (rate / 10_000.0).max(1.0);
    if args.rate > 0 {
        // The default slack (50 µs) would stretch every pacing sleep past a burst.
        let _ = nix::sys::prctl::set_timerslack(1_000);
    }
    let start = Instant::now();
    let (mut tokens, mut last_fill) = (0.0f64, start);
    let mut interrupted = false;
    let mut rounds = 0u32;
    loop {
        let now = Instant::now();
        if now - start >= limit {
            break;
        }
        rounds = rounds.wrapping_add(1);
        if rounds.is_multiple_of(1024) && stopped(&stop) {
            interrupted = true;
            break;
        }
        let mut budget = BATCH;
        if args.rate > 0 {
            tokens = (tokens + (now - last_fill).as_secs_f64() * rate).min(burst);
            last_fill = now;
            budget = budget.min(tokens as u32);
        }
        let mut tx = port.tx();
        let mut built = 0;
        while built < budget && tx.has_room() {
            tx.transmit(len, |buf| forger.write(buf));
            built += 1;
        }
        if args.rate > 0 {
            tokens -= f64::from(built);
        }
        let (_, done) = port.push(KICK_ROUNDS);
        if built == 0 && done == 0 && args.rate > 0 {
            // Paced and ahead of schedule: yield the core rather than spin on it (the
            // timer slack is 1 µs, so the sleep is close to what it asks for).
            std::thread::sleep(Duration::from_micros(20));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // Replies still in flight: a short grace to count them, then leave.
    let grace = Instant::now() + Duration::from_millis(100);
    while Instant::now() < grace {
        port.reap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let replies = Replies::between(&tallied_before, &steering.counters()?);
    let stats = port.stats();
    let (end, _) = port.close(Duration::from_millis(100));
    let sent = stats.tx_completed;
    let report = Report {
        kind: args.kind,
        target: args.target.to_string(),
        src: args.src.clone(),
        rate: args.rate,
        secs,
        sent,
        rate_achieved: sent as f64 / secs.max(1e-9),
        tx_errors: end.kick_errors + end.tx_bad_completion,
        tx_dropped: end.tx_no_frame + end.tx_frames.saturating_sub(end.tx_completed),
        replies,
        xdp_mode: steering.mode().to_string(),
        interrupted,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(r: &Report) {
    let rate = if r.rate == 0 {
        "max".to_owned()
    } else {
        r.rate.to_string()
    };
    println!(
        "flood {:?} → {} from {}  rate {rate}  {:.2} s  xdp {}{}",
        r.kind,
        r.target,
        r.src,
        r.secs,
        r.xdp_mode,
        if r.interrupted { "  (interrupted)" } else { "" }
    );
    println!("{:<32} {:>12}", "frames sent", r.sent);
    println!("{:<32} {:>12.0}", "frames/s achieved", r.rate_achieved);
    println!(
        "{:<32} {:>12}",
        "tx errors / dropped",
        format!("{}/{}", r.tx_errors, r.tx_dropped)
    );
    println!(
        "{:<32} {:>12}",
        "replies SYN-ACK / RST / other",
        format!(
            "{}/{}/{}",
            r.replies.syn_ack, r.replies.rst, r.replies.other
        )
    );
}

#[cfg(test)]
#[path = "flood/tests.rs"]
mod tests;
