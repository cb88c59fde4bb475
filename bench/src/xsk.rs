//! `c10m-bench xsk`: raw AF_XDP packet rates, the ceiling the full stack is compared with.
//!
//! - `tx`: one socket on IFACE queue Q sends pre-built UDP frames (198.18.0.1:9 →
//!   198.18.0.10:9, benchmarking range only) as fast as it can for S seconds. The rate
//!   counts frames the kernel *completed* in that time; if IFACE's veth peer is in this
//!   namespace, its rx counter is read too.
//! - `rx-drop`: the XDP steering program sends UDP to 198.18.0.10:9 on IFACE to a socket
//!   on queue Q, which receives and recycles every frame. The rate is frames over the
//!   time from the first to the last frame received (traffic comes from elsewhere).
//! - `both`: `rx-drop` here, plus a `tx` child in the peer namespace
//!   (`ip netns exec c10m-gen c10m-bench xsk --mode tx --iface gen0 …`) sending to
//!   IFACE's MAC; both rates side by side. Run it in the test bed's c10m-dut namespace.
//!
//! `--frame-size` counts the frame as on the wire with its 4-byte FCS (64 = the minimum
//! Ethernet frame, 60 bytes in UMEM); bits/s are frame bits, without preamble and gap.

use std::fs;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use c10m_dataplane::{Port, ZeroCopy};
use c10m_ebpf::{Proto, Steering, XdpMode};
use c10m_stack::TxQueue;
use serde::Serialize;

use crate::net::{parse_mac, require_iface, sys};

const SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const DST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const PORT: u16 = 9;
/// The test bed's dut0 (scripts/testbed), the default destination MAC.
const TESTBED_DUT_MAC: [u8; 6] = [0x02, 0x00, 0xc6, 0x12, 0x00, 0x02];
/// UMEM frames of the socket.
const FRAMES: u32 = 4096;

/// Arguments of `c10m-bench xsk`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The interface (in this network namespace).
    #[arg(long)]
    iface: String,
    /// tx, rx-drop, or both (rx-drop here, tx from the peer namespace).
    #[arg(long, default_value = "tx", value_parser = ["tx", "rx-drop", "both"])]
    mode: String,
    /// Seconds of traffic (at most 600).
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Frame size on the wire, FCS included (64..=1518).
    #[arg(long, default_value_t = 64)]
    frame_size: usize,
    /// Frames per ring operation.
    #[arg(long, default_value_t = 64)]
    batch: u32,
    /// The queue to bind.
    #[arg(long, default_value_t = 0)]
    queue: u32,
    /// XDP attach mode for rx-drop: auto, native or generic.
    #[arg(long, default_value = "auto")]
    xdp_mode: XdpMode,
    /// AF_XDP zero-copy: auto, on or off.
    #[arg(long, default_value = "auto", value_parser = parse_zero_copy)]
    zero_copy: ZeroCopy,
    /// Destination MAC for tx (default: the veth peer's if visible, else the test bed's dut0).
    #[arg(long, value_parser = parse_mac)]
    dst_mac: Option<[u8; 6]>,
    /// `both`: the namespace of the tx side ("" = this one).
    #[arg(long, default_value = "c10m-gen")]
    peer_netns: String,
    /// `both`: the interface of the tx side.
    #[arg(long, default_value = "gen0")]
    peer_iface: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize, Debug, Default)]
struct Report {
    mode: String,
    iface: String,
    queue: u32,
    frame_size: usize,
    secs: f64,
    batch: u32,
    xdp_mode: Option<String>,
    zero_copy: bool,
    tx_zero_copy: Option<bool>,
    tx_packets: Option<u64>,
    tx_pps: Option<f64>,
    tx_bps: Option<f64>,
    rx_packets: Option<u64>,
    rx_pps: Option<f64>,
    rx_bps: Option<f64>,
    /// Frames the kernel dropped before the rx ring (fill ring empty, rx ring full).
    rx_kernel_dropped: Option<u64>,
    peer_rx_pps: Option<f64>,
}

fn parse_zero_copy(s: &str) -> Result<ZeroCopy, String> {
    match s {
        "auto" => Ok(ZeroCopy::Auto),
        "on" => Ok(ZeroCopy::On),
        "off" => Ok(ZeroCopy::Off),
        _ => Err(format!("expected auto, on or off, not {s:?}")),
    }
}

/// IFACE's veth peer, if it is in this namespace (its `iflink` points back at IFACE).
fn veth_peer(iface: &str) -> Option<String> {
    let (index, link) = (sys(iface, "ifindex")?, sys(iface, "iflink")?);
    if index == link {
        return None;
    }
    fs::read_dir("/sys/class/net").ok()?.find_map(|e| {
        let name = e.ok()?.file_name().into_string().ok()?;
        (name != iface && sys(&name, "ifindex")? == link && sys(&name, "iflink")? == index)
            .then_some(name)
    })
}

fn check(iface: &str) -> anyhow::Result<()> {
    require_iface(iface)?;
    require_root("c10m-bench xsk")
}

/// Fails with what to do unless this process has CAP_NET_ADMIN and CAP_NET_RAW (for
/// `what`, the command named in the message).
pub(crate) fn require_root(what: &str) -> anyhow::Result<()> {
    let caps = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let v = s.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(v.trim(), 16).ok()
        })
        .unwrap_or(u64::MAX);
    if caps & (1 << 12) == 0 || caps & (1 << 13) == 0 {
        bail!("{what} needs root (CAP_NET_ADMIN and CAP_NET_RAW): run it with sudo");
    }
    Ok(())
}

/// An Ethernet + IPv4 + UDP frame of `len` bytes (FCS excluded), UDP checksum 0.
fn udp_frame(src_mac: [u8; 6], dst_mac: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((len - 14) as u16).to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&SRC.octets());
    ip[16..20].copy_from_slice(&DST.octets());
    let sum = ip
        .chunks(2)
        .fold(0u32, |s, w| s + u32::from(u16::from_be_bytes([w[0], w[1]])));
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f[34..36].copy_from_slice(&PORT.to_be_bytes());
    f[36..38].copy_from_slice(&PORT.to_be_bytes());
    f[38..40].copy_from_slice(&((len - 34) as u16).to_be_bytes());
    f
}

/// Runs the benchmark.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    if !(args.secs > 0.0 && args.secs <= 600.0) {
        bail!("--secs must be more than 0 and at most 600");
    }
    if !(64..=1518).contains(&args.frame_size) {
        bail!("--frame-size must be between 64 and 1518");
    }
    if args.batch == 0 || args.batch > FRAMES / 2 {
        bail!("--batch must be between 1 and {}", FRAMES / 2);
    }
    check(&args.iface)?;
    let mut report = Report {
        mode: args.mode.clone(),
        iface: args.iface.clone(),
        queue: args.queue,
        frame_size: args.frame_size,
        secs: args.secs,
        batch: args.batch,
        ..Report::default()
    };
    let bits = (args.frame_size * 8) as f64;
    match args.mode.as_str() {
        "tx" => transmit(args, &mut report)?,
        _ => receive(args, &mut report)?,
    }
    report.tx_bps = report.tx_pps.map(|p| p * bits);
    report.rx_bps = report.rx_pps.map(|p| p * bits);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn transmit(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    let src_mac = sys(&args.iface, "address").and_then(|m| parse_mac(&m).ok());
    let src_mac = src_mac.ok_or_else(|| anyhow!("{} has no Ethernet MAC address", args.iface))?;
    let peer = veth_peer(&args.iface);
    let dst_mac = args
        .dst_mac
        .or_else(|| parse_mac(&sys(peer.as_deref()?, "address")?).ok())
        .unwrap_or(TESTBED_DUT_MAC);
    let frame = udp_frame(src_mac, dst_mac, args.frame_size - 4);
    let mut port = Port::open(&args.iface, args.queue, FRAMES, args.zero_copy)
        .with_context(|| format!("opening an AF_XDP socket on {}", args.iface))?;
    report.zero_copy = port.zero_copy();
    let peer_rx = |p: &Option<String>| -> Option<u64> {
        sys(p.as_deref()?, "statistics/rx_packets")?.parse().ok()
    };
    let peer_before = peer_rx(&peer);

    let limit = Duration::from_secs_f64(args.secs);
    let start = Instant::now();
    let mut elapsed = Duration::ZERO;
    while elapsed < limit {
        let mut tx = port.tx();
        for _ in 0..args.batch {
            if !tx.has_room() {
                break;
            }
            tx.transmit(frame.len(), |buf| buf.copy_from_slice(&frame));
        }
        port.flush();
        port.reap();
        elapsed = start.elapsed();
    }
    let sent = port.stats().tx_completed;
    let peer_after = peer_rx(&peer);
    let (stats, _) = port.close(Duration::from_millis(200));
    if stats.kick_errors > 0 {
        eprintln!("c10m-bench xsk: {} tx kicks failed", stats.kick_errors);
    }
    let secs = elapsed.as_secs_f64();
    report.tx_packets = Some(sent);
    report.tx_pps = Some(sent as f64 / secs);
    report.tx_zero_copy = Some(report.zero_copy);
    if let (Some(a), Some(b)) = (peer_before, peer_after) {
        report.peer_rx_pps = Some(b.saturating_sub(a) as f64 / secs);
    }
    Ok(())
}

fn receive(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    let steering = Steering::attach(&args.iface, args.xdp_mode)?;
    steering.add_service(DST, Proto::Udp, PORT)?;
    report.xdp_mode = Some(steering.mode().to_string());
    let mut port = Port::open(&args.iface, args.queue, FRAMES, args.zero_copy)
        .with_context(|| format!("opening an AF_XDP socket on {}", args.iface))?;
    steering.register_xsk(args.queue, port.fd())?;
    report.zero_copy = port.zero_copy();

    let limit = Duration::from_secs_f64(args.secs);
    let mut child = None;
    if args.mode == "both" {
        let mac = sys(&args.iface, "address").unwrap_or_default();
        let mut cmd = if args.peer_netns.is_empty() {
            Command::new(std::env::current_exe()?)
        } else {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &args.peer_netns])
                .arg(std::env::current_exe()?);
            c
        };
        cmd.args(["xsk", "--mode", "tx", "--json", "--iface", &args.peer_iface])
            .args(["--dst-mac", &mac, "--secs", &args.secs.to_string()])
            .args(["--frame-size", &args.frame_size.to_string()])
            .args(["--batch", &args.batch.to_string()])
            .args(["--queue", &args.queue.to_string()])
            .args([
                "--zero-copy",
                &format!("{:?}", args.zero_copy).to_lowercase(),
            ])
            .stdout(Stdio::piped());
        child = Some(cmd.spawn().context("starting the tx side")?);
    }
    // Standalone: S seconds. Both: until the tx side exits, then a little to drain.
    let start = Instant::now();
    let mut stop_at = start
        + if child.is_some() {
            limit * 4 + Duration::from_secs(10)
        } else {
            limit
        };
    let (mut got, mut first, mut last) = (0u64, None, start);
    let mut rounds = 0u32;
    loop {
        let n = port.receive(args.batch, |_, _| {});
        port.refill();
        rounds = rounds.wrapping_add(1);
        if n > 0 {
            got += u64::from(n);
            last = Instant::now();
            first.get_or_insert(last);
        }
        if rounds.is_multiple_of(1024) || n == 0 {
            let now = Instant::now();
            if now >= stop_at {
                break;
            }
            if let Some(c) = child.as_mut()
                && rounds.is_multiple_of(1024)
                && c.try_wait()?.is_some()
            {
                stop_at = stop_at.min(now + Duration::from_millis(100));
            }
        }
    }
    let window = first.map_or(0.0, |f| (last - f).as_secs_f64());
    report.rx_packets = Some(got);
    report.rx_pps = Some(if window > 0.0 {
        got as f64 / window
    } else {
        0.0
    });
    let kernel = port.kernel_stats();
    let _ = steering.unregister_xsk(args.queue);
    port.close(Duration::from_millis(100));
    report.rx_kernel_dropped = Some(kernel.rx_ring_full + kernel.rx_dropped);
    if let Some(c) = child {
        let out = c.wait_with_output()?;
        if !out.status.success() {
            bail!("the tx side failed ({})", out.status);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let tx: serde_json::Value = serde_json::from_str(text.trim())
            .with_context(|| format!("the tx side's report: {text:?}"))?;
        report.tx_packets = tx["tx_packets"].as_u64();
        report.tx_pps = tx["tx_pps"].as_f64();
        report.tx_zero_copy = tx["zero_copy"].as_bool();
    }
    Ok(())
}

fn print_table(r: &Report) {
    let xdp = r.xdp_mode.as_deref().unwrap_or("-");
    println!(
        "xsk {}  iface {} queue {}  {}-byte frames  batch {}  xdp {xdp}  zero-copy {}",
        r.mode, r.iface, r.queue, r.frame_size, r.batch, r.zero_copy
    );
    println!(
        "{:<10} {:>12} {:>10} {:>10}",
        "", "packets", "Mpps", "Gbit/s"
    );
    let rows = [
        ("tx", r.tx_packets, r.tx_pps),
        ("rx", r.rx_packets, r.rx_pps),
        ("peer rx", None, r.peer_rx_pps),
    ];
    for (name, packets, pps) in rows {
        let Some(pps) = pps else { continue };
        let packets = packets.map_or("-".into(), |p| p.to_string());
        let gbps = pps * (r.frame_size * 8) as f64 / 1e9;
        println!("{name:<10} {packets:>12} {:>10.3} {gbps:>10.3}", pps / 1e6);
    }
}

#[cfg(test)]
#[path = "xsk/tests.rs"]
mod tests;
