//! What the daemon is told to do ([`Options`]), the parsers for its command-line values,
//! checked before anything starts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use c10m_ebpf::XdpMode;
use c10m_stack::SynCookies;

use c10m_apps::services::Kind;

use crate::driver::Idle;
use crate::error::{OptionsError, ParseError};
use crate::xsk::ZeroCopy;

/// Everything [`run`](crate::run) and [`run_service`](crate::run_service) need. The
/// defaults suit a test bed; `iface`, `addr` and `services` (built-in services) or
/// `ports` (a service of your own) have to be set.
#[derive(Debug, Clone)]
pub struct Options {
    /// The interface (in the calling process's network namespace).
    pub iface: String,
    /// The service address and its prefix length (not configured in the kernel).
    pub addr: (Ipv4Addr, u8),
    /// An IPv6 service address beside it, with its prefix length (needs a build with
    /// the stack's `ipv6` feature).
    pub addr6: Option<(Ipv6Addr, u8)>,
    /// Default gateway of the stack.
    pub gateway: Option<Ipv4Addr>,
    /// Built-in services and their TCP ports ([`run`](crate::run)).
    pub services: Vec<(Kind, u16)>,
    /// The TCP ports of a service of your own ([`run_service`](crate::run_service)); it
    /// excludes `services`.
    pub ports: Vec<u16>,
    /// Queues, one worker each: queues 0..queues.
    pub queues: u32,
    /// Core of each worker (default: 0, 1, …).
    pub cores: Option<Vec<usize>>,
    /// How to attach the XDP program.
    pub xdp_mode: XdpMode,
    /// Copy or zero-copy AF_XDP.
    pub zero_copy: ZeroCopy,
    /// What workers do when idle.
    pub idle: Idle,
    /// Connection slots per worker.
    pub max_conns: usize,
    /// Connections that may wait on each listener (half-open plus not yet accepted). When
    /// it is full a SYN is answered with a SYN cookie (see `syn_cookies`); with cookies off
    /// it evicts the oldest half-open connection, or, with none half-open, is dropped
    /// silently and counted (`refused.backlog`).
    pub backlog: u32,
    /// When every listener answers SYNs with SYN cookies: `auto` (when the backlog or the
    /// half-open budget is full), `always` or `off`.
    pub syn_cookies: SynCookies,
    /// SYN-ACK retransmissions before an unanswered half-open connection is freed
    /// (0 to 15; 3 gives up 15 s after the SYN).
    pub synack_retries: u8,
    /// Abort a connection whose queued data went unacknowledged this long (`None`: never).
    pub send_timeout: Option<std::time::Duration>,
    /// Live connections one source address may hold per listener (`None`: no limit).
    pub max_conns_per_source: Option<u32>,
    /// RSTs per second (and per worker) for segments that match no connection; the excess
    /// is dropped and counted (`resets_limited`).
    pub rst_rate: u32,
    /// Receive buffer bytes per connection.
    pub rx_buf: usize,
    /// Transmit buffer bytes per connection.
    pub tx_buf: usize,
    /// Congestion controller of every connection (see `c10m_stack::Congestion`).
    pub congestion: c10m_stack::Congestion,
    /// TCP timestamps (RFC 7323) when the peer offers them (`c10m_stack::SocketOptions`).
    pub timestamps: bool,
    /// Fault in the connection slab and buffers at start-up (the stack's
    /// `Config::prefault`): the daemon's memory then stays flat under load and floods, and
    /// no page fault lands on the per-packet path, but start-up takes about 2.5 s per GiB
    /// (the slab is some 480 bytes a slot on top of the buffers). Without it a warmer
    /// thread faults pages in ahead of use, off the workers' cores. `None`
    /// (the default): on while a worker's buffers are at most [`PREFAULT_AUTO_BYTES`]
    /// (see [`Options::prefaults`]).
    pub prefault: Option<bool>,
    /// UMEM frames per worker (a power of two, at least 64). `None` (the default): sized
    /// from `max_conns` ([`Options::umem_frames`]).
    pub frames: Option<u32>,
    /// UMEM frame size: 2048 or 4096.
    pub frame_size: u32,
    /// How long a stop lets open connections finish before resetting them.
    pub grace: std::time::Duration,
    /// Settings of the built-in services: the http body, and the timeouts that close
    /// slow and silent peers.
    pub settings: c10m_apps::services::Settings,
    /// The management socket, metrics listener and `--on-state` hook (the `management`
    /// feature).
    #[cfg(feature = "management")]
    pub management: crate::control::Settings,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            iface: String::new(),
            addr: (Ipv4Addr::UNSPECIFIED, 32),
            addr6: None,
            gateway: None,
            services: Vec::new(),
            ports: Vec::new(),
            queues: 1,
            cores: None,
            xdp_mode: XdpMode::Auto,
            zero_copy: ZeroCopy::Auto,
            idle: Idle::Adaptive,
            max_conns: 16384,
            backlog: 4096,
            syn_cookies: SynCookies::Auto,
            synack_retries: 3,
            send_timeout: Some(std::time::Duration::from_secs(60)),
            max_conns_per_source: None,
            rst_rate: 1000,
            rx_buf: 2048,
            tx_buf: 2048,
            congestion: c10m_stack::Congestion::default(),
            timestamps: true,
            prefault: None,
            frames: None,
            frame_size: 2048,
            grace: std::time::Duration::from_secs(5),
            settings: c10m_apps::services::Settings::default(),
            #[cfg(feature = "management")]
            management: crate::control::Settings::default(),
        }
    }
}

/// Checks a SYN-ACK retry count against the stack's
/// [`MAX_SYNACK_RETRIES`](c10m_stack::MAX_SYNACK_RETRIES).
pub fn check_synack_retries(n: u8) -> Result<u8, ParseError> {
    if n <= c10m_stack::MAX_SYNACK_RETRIES {
        Ok(n)
    } else {
        Err(ParseError::SynackRetries(n))
    }
}

/// Parses `A.B.C.D/PREFIX` (prefix 0..=32). The prefix is required: without one the
/// stack's subnet would be the address alone, and it answers only hosts in its subnet.
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), ParseError> {
    let Some((a, p)) = s.split_once('/') else {
        return Err(match s.parse::<Ipv4Addr>() {
            Ok(a) => ParseError::NoPrefix(IpAddr::V4(a)),
            Err(_) => ParseError::Address(s.to_owned()),
        });
    };
    let addr: Ipv4Addr = a.parse().map_err(|_| ParseError::Address(s.to_owned()))?;
    let prefix = prefix_len(p, 32).ok_or_else(|| ParseError::Prefix(s.to_owned()))?;
    if addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() {
        return Err(ParseError::NotUnicast(IpAddr::V4(addr)));
    }
    Ok((addr, prefix))
}

/// Parses `A.B.C.D/PREFIX` ([`parse_cidr`]) or an IPv6 address with its prefix, e.g.
/// `2001:2::10/64` (prefix 0..=128).
pub fn parse_any_cidr(s: &str) -> Result<(IpAddr, u8), ParseError> {
    let (a, p) = s.split_once('/').unwrap_or((s, ""));
    if !a.contains(':') {
        return parse_cidr(s).map(|(a, p)| (IpAddr::V4(a), p));
    }
    let addr: Ipv6Addr = a.parse().map_err(|_| ParseError::Address6(s.to_owned()))?;
    if !s.contains('/') {
        return Err(ParseError::NoPrefix(IpAddr::V6(addr)));
    }
    let prefix = prefix_len(p, 128).ok_or_else(|| ParseError::Prefix6(s.to_owned()))?;
    if addr.is_unspecified() || addr.is_multicast() || addr.to_ipv4_mapped().is_some() {
        return Err(ParseError::NotUnicast(IpAddr::V6(addr)));
    }
    Ok((IpAddr::V6(addr), prefix))
}

/// A prefix length of at most `max` bits.
fn prefix_len(p: &str, max: u8) -> Option<u8> {
    p.parse().ok().filter(|&p| p <= max)
}

/// Sets the service addresses of `o` from `addrs` (each IPv4 or IPv6 with its prefix):
/// at most one of each family.
pub fn set_addrs(o: &mut Options, addrs: &[(IpAddr, u8)]) -> Result<(), ParseError> {
    let (mut v4, mut v6) = (None, None);
    for &(a, p) in addrs {
        let again = match a {
            IpAddr::V4(a) => v4.replace((a, p)).is_some(),
            IpAddr::V6(a) => v6.replace((a, p)).is_some(),
        };
        if again {
            return Err(ParseError::TwoAddresses(a));
        }
    }
    if let Some(a) = v4 {
        o.addr = a;
    }
    if v6.is_some() {
        o.addr6 = v6;
    }
    Ok(())
}

/// Parses `NAME:PORT`, e.g. `echo:7`.
pub fn parse_service(s: &str) -> Result<(Kind, u16), ParseError> {
    let (name, port) = s
        .split_once(':')
        .ok_or_else(|| ParseError::Service(s.to_owned()))?;
    let kind = name
        .parse()
        .map_err(|_| ParseError::UnknownService(name.to_owned()))?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| ParseError::Port(s.to_owned()))?;
    Ok((kind, port))
}

/// Parses a core list: `0,2,4-7`.
pub fn parse_cores(s: &str) -> Result<Vec<usize>, ParseError> {
    let bad = || ParseError::Cores(s.to_owned());
    let mut cores = Vec::new();
    for part in s.split(',').map(str::trim) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b || b - a > 4096 {
                    return Err(bad());
                }
                cores.extend(a..=b);
            }
            None => cores.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(cores)
}

/// The most buffer bytes per worker that the daemon faults in at start-up when
/// `--prefault` is not given: 1 GiB, about 2.5 s of start-up on the reference machine,
/// and as much again for the slab (10,000,000 connections at 256 + 256 bytes are 4.8 GiB
/// of buffers and 4.8 GB of slab: ready in 3.8 s without prefaulting).
pub const PREFAULT_AUTO_BYTES: usize = 1 << 30;

impl Options {
    /// Whether the workers fault in their buffers at start-up: `prefault` if given, else
    /// whether a worker's buffers (`max_conns` × (`rx_buf` + `tx_buf`)) fit in
    /// [`PREFAULT_AUTO_BYTES`].
    pub fn prefaults(&self) -> bool {
        self.prefault.unwrap_or_else(|| {
            let bytes = self.max_conns.saturating_mul(self.rx_buf + self.tx_buf);
            bytes <= PREFAULT_AUTO_BYTES
        })
    }

    /// UMEM frames per worker: `frames` if given, else one per 16 connection slots, a
    /// power of two from 16,384 (32 MiB) to 262,144 (512 MiB, above 2,097,152 slots).
    /// The frames buffer what arrives while the loop is busy or off its core: at 10M
    /// connections, 100K new ones a second and heartbeats, 4,096 frames left the fill ring
    /// empty 1.8 million times in a run, 65,536 dropped 770,482 frames in bursts, 131,072
    /// dropped 253,337 and 262,144 none; a fan-out to 1M subscribers during 50K
    /// heartbeats a second left it empty 1,056 times with 16,384 frames, never with
    /// 65,536 (bench/RESULTS.md, "Live subscribers"). The kernel pins the whole UMEM at
    /// start-up: 512 MiB took 1.2–2.6 s of it on the test machine.
    pub fn umem_frames(&self) -> u32 {
        self.frames.unwrap_or_else(|| {
            let per = u32::try_from(self.max_conns / 16).unwrap_or(u32::MAX);
            per.clamp(16384, 262_144).next_power_of_two()
        })
    }

    /// Checks the values that need no system access.
    pub fn validate(&self) -> Result<(), OptionsError> {
        use OptionsError as E;
        let (addr, prefix) = self.addr;
        if addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() {
            return Err(E::NotUnicast(addr));
        }
        if prefix >= 32 {
            let addr = IpAddr::V4(addr);
            return Err(E::EmptySubnet { addr, prefix });
        }
        if self.addr6.is_some() && !c10m_stack::IPV6 {
            return Err(E::Ipv6NotBuilt);
        }
        if let Some((a, p)) = self.addr6
            && p >= 128
        {
            let addr = IpAddr::V6(a);
            return Err(E::EmptySubnet { addr, prefix: p });
        }
        if self.services.is_empty() && self.ports.is_empty() {
            return Err(E::NoService);
        }
        if !self.services.is_empty() && !self.ports.is_empty() {
            return Err(E::BothServices);
        }
        if self.queues == 0 || self.queues > c10m_ebpf::MAX_QUEUES {
            return Err(E::Queues);
        }
        if let Some(cores) = &self.cores
            && cores.len() < self.queues as usize
        {
            let (cores, queues) = (cores.len(), self.queues);
            return Err(E::Cores { cores, queues });
        }
        if !matches!(self.frame_size, 2048 | 4096) {
            return Err(E::FrameSize);
        }
        let frames = self.umem_frames();
        if !frames.is_power_of_two() || frames < 64 {
            return Err(E::Frames);
        }
        if self.rx_buf == 0 || self.tx_buf == 0 || self.max_conns == 0 || self.backlog == 0 {
            return Err(E::Zero);
        }
        let mut ports: Vec<u16> = self.services.iter().map(|s| s.1).collect();
        ports.extend(&self.ports);
        if ports.contains(&0) {
            return Err(E::PortZero);
        }
        ports.sort_unstable();
        if ports.windows(2).any(|w| w[0] == w[1]) {
            return Err(E::SamePort);
        }
        Ok(())
    }

    /// The core of worker `i`.
    pub(crate) fn core(&self, i: u32) -> usize {
        self.cores.as_ref().map_or(i as usize, |c| c[i as usize])
    }

    /// Every worker's core, by queue.
    pub(crate) fn worker_cores(&self) -> Vec<usize> {
        (0..self.queues).map(|q| self.core(q)).collect()
    }

    /// The service addresses: the IPv4 one, then the IPv6 one if there is one.
    pub(crate) fn service_addrs(&self) -> impl Iterator<Item = IpAddr> {
        std::iter::once(IpAddr::V4(self.addr.0)).chain(self.addr6.map(|(a, _)| a.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umem_frames_follow_max_conns_unless_told() {
        let at = |max_conns| Options {
            max_conns,
            ..Options::default()
        };
        assert_eq!(at(16_384).umem_frames(), 16384);
        assert_eq!(at(300_000).umem_frames(), 32768);
        assert_eq!(at(1_000_000).umem_frames(), 65536);
        assert_eq!(at(3_000_000).umem_frames(), 262_144);
        assert_eq!(at(100_000_000).umem_frames(), 262_144);
        let told = Options {
            frames: Some(1024),
            ..at(10_000_000)
        };
        assert_eq!(told.umem_frames(), 1024);
    }

    #[test]
    fn prefault_is_on_for_small_pools_unless_told() {
        let small = Options::default();
        assert!(small.prefaults(), "16,384 × 4 KiB is 64 MiB");
        let big = Options {
            max_conns: 10_000_000,
            rx_buf: 256,
            tx_buf: 256,
            ..Options::default()
        };
        assert!(!big.prefaults(), "4.8 GiB would take half a minute");
        let just = Options {
            max_conns: PREFAULT_AUTO_BYTES / 512,
            ..big.clone()
        };
        assert!(just.prefaults(), "the limit itself is prefaulted");
        assert!(
            !Options {
                prefault: Some(false),
                ..small
            }
            .prefaults()
        );
        assert!(
            Options {
                prefault: Some(true),
                ..big
            }
            .prefaults()
        );
    }

    #[test]
    fn parses_values() {
        assert_eq!(
            parse_cidr("198.18.0.10/24"),
            Ok((Ipv4Addr::new(198, 18, 0, 10), 24))
        );
        let e = parse_cidr("198.18.0.10").unwrap_err().to_string();
        assert_eq!(
            e,
            "198.18.0.10 has no prefix length: write it as ADDR/PREFIX, e.g. 198.18.0.10/24"
        );
        assert!(parse_cidr("198.18.0.10/").is_err());
        assert!(parse_cidr("198.18.0.10/33").is_err());
        assert!(parse_cidr("0.0.0.0/8").is_err());
        assert!(parse_cidr("nonsense").is_err());
        // An IPv6 address without its prefix gets the IPv6 form, not the IPv4 one.
        let e = parse_any_cidr("2001:2::10").unwrap_err().to_string();
        assert_eq!(
            e,
            "2001:2::10 has no prefix length: write it as ADDR/PREFIX, e.g. 2001:2::10/64"
        );
        let e = parse_any_cidr("2001:2::zz").unwrap_err().to_string();
        assert!(e.contains("expected an IPv6 address and prefix"), "{e}");
        let e = parse_any_cidr("198.18.0.10").unwrap_err().to_string();
        assert!(e.ends_with("e.g. 198.18.0.10/24"), "{e}");
        assert_eq!(
            parse_any_cidr("2001:2::10/64"),
            Ok(("2001:2::10".parse().unwrap(), 64))
        );
        assert_eq!(parse_service("echo:7"), Ok((Kind::Echo, 7)));
        assert_eq!(parse_service("http:80"), Ok((Kind::Http, 80)));
        assert_eq!(parse_service("push:5222"), Ok((Kind::Push, 5222)));
        let err = parse_service("smtp:25").unwrap_err().to_string();
        assert!(err.contains("valid services are echo, http, push"), "{err}");
        assert!(parse_service("echo:0").is_err());
        assert_eq!(parse_cores("0,2,4-6"), Ok(vec![0, 2, 4, 5, 6]));
        assert!(parse_cores("3-1").is_err());
    }

    #[test]
    fn validates() {
        let mut o = Options {
            services: vec![(Kind::Echo, 7)],
            ..Options::default()
        };
        let e = o.validate().unwrap_err().to_string();
        assert!(e.contains("0.0.0.0 cannot be a service address"), "{e}");
        o.addr = (Ipv4Addr::new(198, 18, 0, 10), 32);
        let e = o.validate().unwrap_err().to_string();
        assert!(
            e.contains("198.18.0.10/32") && e.contains("198.18.0.10/24"),
            "{e}"
        );
        o.addr.1 = 24;
        assert!(o.validate().is_ok());
        o.queues = 2;
        o.cores = Some(vec![1]);
        assert!(
            o.validate()
                .unwrap_err()
                .to_string()
                .contains("one per queue")
        );
        o.cores = None;
        o.services.push((Kind::Echo, 7));
        assert!(o.validate().is_err());
    }

    #[test]
    fn a_custom_service_takes_ports_not_services() {
        let mut o = Options {
            ports: vec![7000, 7001],
            addr: (Ipv4Addr::new(198, 18, 0, 10), 24),
            ..Options::default()
        };
        assert!(o.validate().is_ok());
        o.ports.push(7000);
        assert!(o.validate().is_err(), "two listeners on one port");
        o.ports = vec![0];
        assert!(o.validate().unwrap_err().to_string().contains("port 0"));
        o.ports = vec![7000];
        o.services = vec![(Kind::Echo, 7)];
        let e = o.validate().unwrap_err().to_string();
        assert!(e.contains("exclude each other"), "{e}");
        o.ports.clear();
        o.services.clear();
        let e = o.validate().unwrap_err().to_string();
        assert!(e.contains("no service given"), "{e}");
    }
}
