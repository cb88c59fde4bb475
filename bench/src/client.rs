//! The project's own stack as a TCP *client* over AF_XDP: what `rps` and `cps` drive.
//!
//! The client owns one address (`--src`, 198.18.0.100/24 by default) that no kernel on
//! the bed has. It attaches the XDP steering program to the interface (gen0) and
//! registers that address for ARP and ICMP (`Steering::add_address`) and for TCP (a /32
//! `Steering::add_prefix`), so everything for it reaches the AF_XDP socket of queue 0
//! and gen0's kernel never sees it (it would answer the server's segments with RSTs).
//! The targets, 198.18.0.10 (the dataplane) and 198.18.0.2 (dut0's kernel), are on-link:
//! the stack ARPs for them itself.
//!
//! [`Client::turn`] is one turn of the dataplane workers' own loop ([`Driver`]) with the
//! roles turned around: rx batch → `stack.ingress` → the handler's events and its own work
//! (new connections, requests) → `stack.poll` → tx → completions → idle, by the workers'
//! policy: spin a while, then sleep in `poll(2)` on the socket until a frame comes, the
//! stack's next timer or a short limit, so a generator waiting on a slow server leaves the
//! machine's other core alone.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use c10m_dataplane::{Driver, Idle, Port, ZeroCopy, driver};
use c10m_ebpf::{Proto, Steering, XdpMode};
use c10m_stack::{Config, ConnectOptions, Event, Instant, SequentialPorts, Stack};

use crate::net::{in_bench_range, mac_of, require_iface, sys};

/// UMEM frames of the socket.
const FRAMES: u32 = 8192;
/// Frames read from the rx ring per turn.
const RX_BATCH: u32 = 64;

/// Where and how the client runs.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// The interface, in this network namespace.
    pub(crate) iface: String,
    /// The client's address and prefix length.
    pub(crate) src: (Ipv4Addr, u8),
    /// XDP attach mode.
    pub(crate) xdp_mode: XdpMode,
    /// What to do when there is no work.
    pub(crate) idle: Idle,
    /// Connection slots of the stack.
    pub(crate) max_connections: usize,
}

/// What the client's user does with the stack each turn.
pub(crate) trait Handler {
    /// One event of the stack.
    fn event(&mut self, stack: &mut Stack, event: Event, now: Instant);
    /// Its own work, once per turn after the events: open connections, send requests.
    fn work(&mut self, stack: &mut Stack, now: Instant);
}

/// What the `rps` and `cps` reports end with: where the client ran and how it went.
/// Flattened into both, so its fields are theirs in the JSON.
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Run {
    pub(crate) src: String,
    pub(crate) xdp_mode: String,
    pub(crate) interrupted: bool,
    /// Percent of the measured window in which the client's loop found nothing to do.
    pub(crate) idle_pct: f64,
    pub(crate) client: Stats,
}

/// The client side's own counts, in the reports: where frames were lost, if any.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub(crate) struct Stats {
    /// Frames the stack received and sent.
    pub(crate) rx_frames: u64,
    pub(crate) tx_frames: u64,
    /// Received frames the stack dropped (bad checksum, not for it, …).
    pub(crate) rx_dropped: u64,
    /// Frames the kernel dropped before the socket's rx ring (ring full, no fill frame).
    pub(crate) xsk_rx_dropped: u64,
    /// RSTs the stack received.
    pub(crate) resets_received: u64,
}

/// A client's handler on the dataplane's driver: the events to the handler, then its
/// work; while resolving, an eye on the ARP answers.
struct OnDriver<'a, H> {
    h: &'a mut H,
    arp_wait: &'a mut Option<(Ipv4Addr, bool)>,
}

impl<H: Handler> driver::Handler for OnDriver<'_, H> {
    fn frames(&mut self, frames: &[&[u8]]) {
        if let Some((addr, seen)) = self.arp_wait {
            *seen |= frames.iter().any(|f| arp_from(f) == Some(*addr));
        }
    }

    fn handle(&mut self, stack: &mut Stack, _: &mut Port, now: Instant, _: u32) -> bool {
        let mut events = 0u32;
        while let Some(ev) = stack.next_event() {
            events += 1;
            self.h.event(stack, ev, now);
        }
        self.h.work(stack, now);
        events > 0
    }
}

/// The handler of a client with nothing to do yet.
struct Nothing;

impl Handler for Nothing {
    fn event(&mut self, _: &mut Stack, _: Event, _: Instant) {}
    fn work(&mut self, _: &mut Stack, _: Instant) {}
}

/// The stack on an AF_XDP socket of the interface's queue 0. See the [module docs](self).
pub(crate) struct Client {
    // Declared before `steering`: the socket leaves the XSK map before the program goes.
    port: Port,
    steering: Steering,
    pub(crate) stack: Stack,
    clock: std::time::Instant,
    /// The workers' loop and idle policy (spin, then sleep on the socket).
    driver: Driver,
    /// Microseconds of turns that found nothing to do (spinning or asleep), closed runs.
    idle_us: u64,
    /// Since when the current run of empty turns lasts.
    idle_from: Option<Instant>,
    /// While resolving: the address whose ARP answer is awaited, and whether it came.
    arp_wait: Option<(Ipv4Addr, bool)>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("stack", &self.stack)
            .finish_non_exhaustive()
    }
}

/// The options `rps` and `cps` share.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Common {
    /// The server, ADDR:PORT: 198.18.0.10 (the dataplane) or 198.18.0.2 (dut0's kernel).
    #[arg(long)]
    pub(crate) target: SocketAddrV4,
    /// The service the target runs.
    #[arg(long, value_enum, default_value_t = crate::proto::Proto::Http)]
    pub(crate) proto: crate::proto::Proto,
    /// Seconds of measurement (at most 3600).
    #[arg(long, default_value_t = 5.0)]
    pub(crate) secs: f64,
    /// The interface (in this network namespace).
    #[arg(long, default_value = "gen0")]
    pub(crate) iface: String,
    /// The client's own address, ADDR/LEN, on-link with the target and owned by no kernel.
    #[arg(long, default_value = "198.18.0.100/24")]
    pub(crate) src: String,
    /// Bytes of an echo request.
    #[arg(long, default_value_t = 64)]
    pub(crate) req_size: usize,
    /// XDP attach mode: auto, native or generic.
    #[arg(long, default_value = "auto")]
    pub(crate) xdp_mode: XdpMode,
    /// Idle policy: adaptive (spin, then sleep on the socket) or spin.
    #[arg(long, default_value = "adaptive")]
    pub(crate) idle: Idle,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    pub(crate) json: bool,
}

impl Common {
    /// Checks the options and gives the client's options for `max_connections` slots.
    pub(crate) fn client(&self, max_connections: usize) -> anyhow::Result<Options> {
        let src = parse_src(&self.src)?;
        check_target(src, *self.target.ip())?;
        if self.target.port() == 0 {
            bail!("--target needs a port, e.g. 198.18.0.10:80");
        }
        if !(self.secs > 0.0 && self.secs <= 3600.0) {
            bail!("--secs must be more than 0 and at most 3600");
        }
        if !(1..=65536).contains(&self.req_size) {
            bail!("--req-size must be 1 to 65536 bytes");
        }
        Ok(Options {
            iface: self.iface.clone(),
            src,
            xdp_mode: self.xdp_mode,
            idle: self.idle,
            max_connections,
        })
    }
}

/// The sender of an ARP frame (request or reply).
fn arp_from(frame: &[u8]) -> Option<Ipv4Addr> {
    if frame.len() < 42 || frame[12..14] != [0x08, 0x06] {
        return None;
    }
    Some(Ipv4Addr::new(frame[28], frame[29], frame[30], frame[31]))
}

/// Parses `--src ADDR/LEN` and checks it is a usable client address on the bed.
pub(crate) fn parse_src(s: &str) -> anyhow::Result<(Ipv4Addr, u8)> {
    let (addr, len) = c10m_dataplane::parse_cidr(s).map_err(|e| anyhow!("--src: {e}"))?;
    if !in_bench_range(addr) {
        bail!("--src must be inside the benchmarking range 198.18.0.0/15");
    }
    if !(8..=30).contains(&len) {
        bail!("--src needs a prefix length between 8 and 30 (the target must be on-link)");
    }
    Ok((addr, len))
}

/// Checks that `target` is on-link from `src` and in the benchmarking range.
pub(crate) fn check_target(src: (Ipv4Addr, u8), target: Ipv4Addr) -> anyhow::Result<()> {
    if !in_bench_range(target) {
        bail!("--target must be inside the benchmarking range 198.18.0.0/15");
    }
    let mask = u32::MAX << (32 - u32::from(src.1));
    if u32::from(target) & mask != u32::from(src.0) & mask {
        bail!(
            "--target {target} is not on-link from --src {}/{}: pick a source in its subnet",
            src.0,
            src.1
        );
    }
    if target == src.0 {
        bail!("--target and --src are the same address");
    }
    Ok(())
}

impl Client {
    /// Attaches steering, opens the socket and builds the stack.
    pub(crate) fn open(opts: &Options) -> anyhow::Result<Client> {
        let iface = &opts.iface;
        require_iface(iface)?;
        let queues = std::fs::read_dir(format!("/sys/class/net/{iface}/queues"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                    .count()
            })
            .unwrap_or(1);
        if queues > 1 {
            bail!(
                "{iface} has {queues} rx queues and the client listens on queue 0 only: \
                 use the test bed with one queue (scripts/testbed down; scripts/testbed up)"
            );
        }
        if sys(iface, "operstate").as_deref() == Some("down") {
            bail!("{iface} is down: bring the test bed up (scripts/testbed up)");
        }
        let mac = mac_of(iface)?;
        let steering = Steering::attach(iface, opts.xdp_mode).with_context(|| {
            format!(
                "attaching the XDP steering program to {iface} (is another generator using it?)"
            )
        })?;
        let src = opts.src.0;
        steering.add_address(src)?;
        steering.add_prefix(src, 32, Proto::Tcp)?;
        let port = Port::open(iface, 0, FRAMES, ZeroCopy::Auto)
            .with_context(|| format!("opening an AF_XDP socket on {iface} queue 0"))?;
        steering.register_xsk(0, port.fd())?;
        let config = Config {
            mac,
            addrs: vec![opts.src],
            max_connections: opts.max_connections,
            max_half_open: opts.max_connections,
            seed: RandomState::new().hash_one(0x6331_306d_u64),
            ..Config::default()
        };
        let mut stack = Stack::new(&config, Instant::ZERO).context("building the stack")?;
        // Every port above the well-known range: TIME-WAIT-free clients (cps aborts)
        // come back to a port only after 64K others.
        stack.set_port_chooser(Box::new(SequentialPorts::new(1024, 65535)));
        Ok(Client {
            port,
            steering,
            stack,
            clock: std::time::Instant::now(),
            driver: Driver::new(opts.idle, 1, RX_BATCH),
            idle_us: 0,
            idle_from: None,
            arp_wait: None,
        })
    }

    /// The XDP mode actually attached.
    pub(crate) fn xdp_mode(&self) -> XdpMode {
        self.steering.mode()
    }

    /// The clock, as the stack's `Instant` (µs since the client opened).
    pub(crate) fn now(&self) -> Instant {
        Instant::from_micros(self.clock.elapsed().as_micros() as i64)
    }

    /// Microseconds so far in which the loop found nothing to do (spinning or asleep):
    /// the difference over a window, against its length, is how much of the generator's
    /// time the server left it waiting.
    pub(crate) fn idle_micros(&self) -> u64 {
        let now = self.now();
        self.idle_us
            + self
                .idle_from
                .map_or(0, |from| (now - from.min(now)).total_micros())
    }

    /// One round of the loop (see the [module docs](self)); idles when it found no work.
    pub(crate) fn turn(&mut self, h: &mut impl Handler) {
        let now = self.now();
        let mut on = OnDriver {
            h,
            arp_wait: &mut self.arp_wait,
        };
        let work = self
            .driver
            .turn(&mut self.port, &mut self.stack, now, &mut on)
            .work;
        if work {
            if let Some(from) = self.idle_from.take() {
                self.idle_us += (now - from.min(now)).total_micros();
            }
        } else {
            self.idle_from.get_or_insert(now);
        }
    }

    /// Learns the target's MAC before any measured connection opens: opens a probe
    /// connection, turns until the target's ARP answer arrives, and resets the probe
    /// (whose SYN never left: smoltcp sends the ARP request in its place).
    ///
    /// Without this every connection opened before the answer would wait a second:
    /// after a neighbour miss smoltcp keeps the socket silent for 1 s, and the stack
    /// polls a connection again only when a frame, a write or its timer concerns it.
    pub(crate) fn resolve(&mut self, target: SocketAddrV4, limit: Duration) -> anyhow::Result<()> {
        let probe = self
            .stack
            .connect(target, ConnectOptions::default())
            .map_err(|e| anyhow!("connecting to {target}: {e}"))?;
        self.arp_wait = Some((*target.ip(), false));
        let until = std::time::Instant::now() + limit;
        while self.arp_wait.is_some_and(|w| !w.1) && std::time::Instant::now() < until {
            self.turn(&mut Nothing);
        }
        let seen = self.arp_wait.take().is_some_and(|w| w.1);
        let _ = self.stack.abort(probe);
        if !seen {
            bail!(
                "no ARP answer from {} within {} s: is the test bed up and the server \
                 running? (scripts/testbed up; c10m run or c10m kernel in c10m-dut)",
                target.ip(),
                limit.as_secs_f64()
            );
        }
        Ok(())
    }

    /// Turns until `done` says so or `limit` passes (to let RSTs and last frames out).
    pub(crate) fn settle(
        &mut self,
        h: &mut impl Handler,
        limit: Duration,
        mut done: impl FnMut(&Stack) -> bool,
    ) {
        let until = std::time::Instant::now() + limit;
        while std::time::Instant::now() < until {
            self.turn(h);
            if done(&self.stack) && self.port.tx_in_flight() == 0 {
                break;
            }
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        let c = self.stack.counters();
        let k = self.port.kernel_stats();
        Stats {
            rx_frames: c.rx_frames,
            tx_frames: c.tx_frames,
            rx_dropped: c.drops.iter().sum(),
            xsk_rx_dropped: k.rx_dropped + k.rx_ring_full,
            resets_received: c.resets_received,
        }
    }

    /// A report's [`Run`] as it starts: the client's address and XDP mode.
    pub(crate) fn run(&self, common: &Common) -> Run {
        Run {
            src: common.src.clone(),
            xdp_mode: self.xdp_mode().to_string(),
            ..Run::default()
        }
    }

    /// Lets the last resets out (for half a second at most, until no connection is
    /// left), then closes the client; its counts.
    pub(crate) fn finish(mut self, h: &mut impl Handler) -> Stats {
        self.settle(h, Duration::from_millis(500), |s| s.connections() == 0);
        let stats = self.stats();
        self.close();
        stats
    }

    /// Leaves the XSK map and closes the socket (finishing transmissions briefly).
    pub(crate) fn close(self) {
        let _ = self.steering.unregister_xsk(0);
        self.port.close(Duration::from_millis(200));
    }
}
