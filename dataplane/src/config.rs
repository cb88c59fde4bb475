//! What the daemon is told to do ([`Options`]), the parsers for its command-line values,
//! and the one-line errors it stops with ([`StartError`]).

use std::net::Ipv4Addr;

use c10m_ebpf::XdpMode;
use c10m_stack::SynCookies;

use crate::service::Service;
use crate::worker::Idle;
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
    /// Default gateway of the stack.
    pub gateway: Option<Ipv4Addr>,
    /// Built-in services and their TCP ports ([`run`](crate::run)).
    pub services: Vec<(Service, u16)>,
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
    /// Fault in the connection buffers at start-up (the stack's `Config::prefault`): the
    /// daemon's memory then stays flat under load and floods, and no page fault lands on
    /// the per-packet path.
    pub prefault: bool,
    /// UMEM frames per worker (a power of two, at least 64).
    pub frames: u32,
    /// UMEM frame size: 2048 or 4096.
    pub frame_size: u32,
    /// How long a stop lets open connections finish before resetting them.
    pub grace: std::time::Duration,
    /// Settings of the built-in services: the http body, and the timeouts that close
    /// slow and silent peers.
    pub settings: c10m_apps::services::Settings,
    /// The management socket and metrics listener.
    pub management: crate::control::Settings,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            iface: String::new(),
            addr: (Ipv4Addr::UNSPECIFIED, 32),
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
            prefault: true,
            frames: 4096,
            frame_size: 2048,
            grace: std::time::Duration::from_secs(5),
            settings: c10m_apps::services::Settings::default(),
            management: crate::control::Settings::default(),
        }
    }
}

/// Why the daemon could not start. Each message is one line that says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The interface does not exist here.
    #[error(
        "no interface named {0} in this network namespace: check `ip link` \
         (or `ip netns exec NS ip link`)"
    )]
    NoSuchInterface(String),
    /// Not root and without the capabilities.
    #[error("c10m needs root (or CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF): run it with sudo")]
    NotPrivileged,
    /// More queues than the interface has.
    #[error(
        "--queues {asked} but {iface} has {has} rx queue(s): lower --queues, or raise the \
         NIC's queues with `ethtool -L {iface} combined {asked}`"
    )]
    TooManyQueues {
        /// Interface.
        iface: String,
        /// Queues asked for.
        asked: u32,
        /// Queues it has.
        has: u32,
    },
    /// The service address is already one of the host's (the XDP program would take
    /// its ARP and the host's own traffic on it would stop).
    #[error(
        "{addr} is already an address of this host ({iface}): the dataplane needs an \
         address of its own — pick another in {net}/{prefix}, or remove it with \
         'ip addr del {addr}/{prefix} dev {iface}'",
        net = network(*.addr, *.prefix)
    )]
    AddressInUse {
        /// The service address.
        addr: Ipv4Addr,
        /// An interface that has it.
        iface: String,
        /// Its prefix length there.
        prefix: u8,
    },
    /// The interface was deleted or set down while the dataplane ran: the workers
    /// stopped (without a grace period). A supervisor should restart the daemon once the
    /// interface is back. `report` is what they did until then.
    #[error("interface {iface} went away (deleted or down): exiting; restart when it is back")]
    InterfaceGone {
        /// The interface.
        iface: String,
        /// The workers' report up to the loss.
        report: Box<crate::Report>,
    },
    /// A bad option value.
    #[error("{0}")]
    Invalid(String),
    /// Attaching or configuring the XDP program failed.
    #[error(transparent)]
    Steering(#[from] c10m_ebpf::Error),
    /// A worker could not set up its socket or stack.
    #[error("queue {queue}: {message}")]
    Worker {
        /// The worker's queue.
        queue: u32,
        /// What failed.
        message: String,
    },
}

/// Checks a SYN-ACK retry count against the stack's
/// [`MAX_SYNACK_RETRIES`](c10m_stack::MAX_SYNACK_RETRIES).
pub fn check_synack_retries(n: u8) -> Result<u8, String> {
    let max = c10m_stack::MAX_SYNACK_RETRIES;
    if n <= max {
        Ok(n)
    } else {
        Err(format!("synack retries {n}: expected 0 to {max}"))
    }
}

/// The network of `addr/prefix` (the address with its host bits cleared).
fn network(addr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0);
    Ipv4Addr::from(u32::from(addr) & mask)
}

/// Parses `A.B.C.D/PREFIX` (prefix 0..=32). The prefix is required: without one the
/// stack's subnet would be the address alone, and it answers only hosts in its subnet.
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let Some((a, p)) = s.split_once('/') else {
        return Err(match s.parse::<Ipv4Addr>() {
            Ok(_) => format!("{s} has no prefix length: write it as ADDR/PREFIX, e.g. {s}/24"),
            Err(_) => format!("bad address {s:?}: expected A.B.C.D/PREFIX, e.g. 198.18.0.10/24"),
        });
    };
    let addr: Ipv4Addr = a
        .parse()
        .map_err(|_| format!("bad address {s:?}: expected A.B.C.D/PREFIX, e.g. 198.18.0.10/24"))?;
    let prefix: u8 = p
        .parse()
        .ok()
        .filter(|&p| p <= 32)
        .ok_or_else(|| format!("bad prefix in {s:?}: expected 0 to 32"))?;
    if addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() {
        return Err(format!(
            "{addr} cannot be a service address: give a unicast address"
        ));
    }
    Ok((addr, prefix))
}

/// Parses `NAME:PORT`, e.g. `echo:7`.
pub fn parse_service(s: &str) -> Result<(Service, u16), String> {
    let (name, port) = s
        .split_once(':')
        .ok_or_else(|| format!("bad service {s:?}: expected NAME:PORT, e.g. echo:7"))?;
    let service = name.parse()?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| format!("bad port in {s:?}: expected 1 to 65535"))?;
    Ok((service, port))
}

/// Parses a core list: `0,2,4-7`.
pub fn parse_cores(s: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("bad core list {s:?}: expected e.g. 0,2,4-7");
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

impl Options {
    /// Checks the values that need no system access.
    pub fn validate(&self) -> Result<(), StartError> {
        let invalid = |m: String| Err(StartError::Invalid(m));
        let (addr, prefix) = self.addr;
        if addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() {
            return invalid(format!(
                "{addr} cannot be a service address: give a unicast address with its prefix, \
                 e.g. 198.18.0.10/24"
            ));
        }
        if prefix >= 32 {
            return invalid(format!(
                "{addr}/{prefix} leaves the dataplane's subnet empty, so it answers no one: \
                 give the link's prefix, e.g. {addr}/24"
            ));
        }
        if self.services.is_empty() && self.ports.is_empty() {
            return invalid(
                "no service given: add e.g. --service echo:7 (or the `ports` of your own \
                 service)"
                    .into(),
            );
        }
        if !self.services.is_empty() && !self.ports.is_empty() {
            return invalid(
                "built-in `services` and the `ports` of a service of your own exclude each \
                 other: one service per dataplane"
                    .into(),
            );
        }
        if self.queues == 0 || self.queues > c10m_ebpf::MAX_QUEUES {
            return invalid(format!("--queues must be 1 to {}", c10m_ebpf::MAX_QUEUES));
        }
        if let Some(cores) = &self.cores
            && cores.len() < self.queues as usize
        {
            return invalid(format!(
                "--cores lists {} core(s) for {} queue(s): give one per queue",
                cores.len(),
                self.queues
            ));
        }
        if !matches!(self.frame_size, 2048 | 4096) {
            return invalid("the UMEM frame size must be 2048 or 4096".into());
        }
        if !self.frames.is_power_of_two() || self.frames < 64 {
            return invalid("UMEM frames must be a power of two, at least 64".into());
        }
        if self.rx_buf == 0 || self.tx_buf == 0 || self.max_conns == 0 || self.backlog == 0 {
            return invalid("--max-conns, --backlog, --rx-buf and --tx-buf must be above 0".into());
        }
        let mut ports: Vec<u16> = self.services.iter().map(|s| s.1).collect();
        ports.extend(&self.ports);
        if ports.contains(&0) {
            return invalid("port 0: services need a port from 1 to 65535".into());
        }
        ports.sort_unstable();
        if ports.windows(2).any(|w| w[0] == w[1]) {
            return invalid("two services on one port".into());
        }
        Ok(())
    }

    /// The core of worker `i`.
    pub(crate) fn core(&self, i: u32) -> usize {
        self.cores.as_ref().map_or(i as usize, |c| c[i as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values() {
        assert_eq!(
            parse_cidr("198.18.0.10/24"),
            Ok((Ipv4Addr::new(198, 18, 0, 10), 24))
        );
        let e = parse_cidr("198.18.0.10").unwrap_err();
        assert_eq!(
            e,
            "198.18.0.10 has no prefix length: write it as ADDR/PREFIX, e.g. 198.18.0.10/24"
        );
        assert!(parse_cidr("198.18.0.10/").is_err());
        assert_eq!(
            network([198, 18, 7, 9].into(), 16),
            Ipv4Addr::new(198, 18, 0, 0)
        );
        assert_eq!(network([198, 18, 7, 9].into(), 0), Ipv4Addr::UNSPECIFIED);
        assert!(parse_cidr("198.18.0.10/33").is_err());
        assert!(parse_cidr("0.0.0.0/8").is_err());
        assert!(parse_cidr("nonsense").is_err());
        assert_eq!(parse_service("echo:7"), Ok((Service::Echo, 7)));
        assert_eq!(parse_service("http:80"), Ok((Service::Http, 80)));
        assert_eq!(parse_service("push:5222"), Ok((Service::Push, 5222)));
        let err = parse_service("smtp:25").unwrap_err();
        assert!(err.contains("valid services are echo, http, push"), "{err}");
        assert!(parse_service("echo:0").is_err());
        assert_eq!(parse_cores("0,2,4-6"), Ok(vec![0, 2, 4, 5, 6]));
        assert!(parse_cores("3-1").is_err());
    }

    #[test]
    fn validates() {
        let mut o = Options {
            services: vec![(Service::Echo, 7)],
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
        o.services.push((Service::Echo, 7));
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
        o.services = vec![(Service::Echo, 7)];
        let e = o.validate().unwrap_err().to_string();
        assert!(e.contains("exclude each other"), "{e}");
        o.ports.clear();
        o.services.clear();
        let e = o.validate().unwrap_err().to_string();
        assert!(e.contains("no service given"), "{e}");
    }
}
