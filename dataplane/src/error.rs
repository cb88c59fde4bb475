//! The dataplane's errors, one enum per operation: a command-line value that does not
//! parse ([`ParseError`]), options that cannot run ([`OptionsError`]), and why
//! [`run`](crate::run) or [`run_service`](crate::run_service) could not start or had to
//! stop ([`StartError`], with [`WorkerError`] for one worker's set-up and
//! `ManagementError` for the management sockets, with the `management` feature). Each message is one line that says
//! what to do.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
#[cfg(feature = "management")]
use std::{net::SocketAddr, path::PathBuf};

/// A command-line value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// An address without `/PREFIX`; the example prefix is a common one of its family.
    #[error("{0} has no prefix length: write it as ADDR/PREFIX, e.g. {0}/{len}", len = if .0.is_ipv4() { 24 } else { 64 })]
    NoPrefix(IpAddr),
    /// Not `A.B.C.D/PREFIX`.
    #[error("bad address {0:?}: expected A.B.C.D/PREFIX, e.g. 198.18.0.10/24")]
    Address(String),
    /// A prefix length above 32.
    #[error("bad prefix in {0:?}: expected 0 to 32")]
    Prefix(String),
    /// Not an IPv6 address with its prefix.
    #[error("bad address {0:?}: expected an IPv6 address and prefix, e.g. 2001:2::10/64")]
    Address6(String),
    /// An IPv6 prefix length above 128.
    #[error("bad prefix in {0:?}: expected 0 to 128")]
    Prefix6(String),
    /// The unspecified, broadcast or a multicast address.
    #[error("{0} cannot be a service address: give a unicast address")]
    NotUnicast(IpAddr),
    /// Two service addresses of one family.
    #[error("a second {kind} service address {0}: give at most one IPv4 and one IPv6 address", kind = if .0.is_ipv4() { "IPv4" } else { "IPv6" })]
    TwoAddresses(IpAddr),
    /// Not `NAME:PORT`.
    #[error("bad service {0:?}: expected NAME:PORT, e.g. echo:7")]
    Service(String),
    /// A name that is no built-in service.
    #[error("unknown service {0:?}: valid services are echo, http, push")]
    UnknownService(String),
    /// A port that is not 1 to 65535.
    #[error("bad port in {0:?}: expected 1 to 65535")]
    Port(String),
    /// Not a core list.
    #[error("bad core list {0:?}: expected e.g. 0,2,4-7")]
    Cores(String),
    /// An idle policy other than `adaptive` or `spin`.
    #[error("unknown idle policy {0:?}: expected adaptive or spin")]
    Idle(String),
    /// More SYN-ACK retries than the stack allows.
    #[error("synack retries {0}: expected 0 to {max}", max = c10m_stack::MAX_SYNACK_RETRIES)]
    SynackRetries(u8),
}

/// [`Options`](crate::Options) that cannot run ([`Options::validate`](crate::Options::validate)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionsError {
    /// The unspecified, broadcast or a multicast address.
    #[error(
        "{0} cannot be a service address: give a unicast address with its prefix, \
         e.g. 198.18.0.10/24"
    )]
    NotUnicast(Ipv4Addr),
    /// A /32 (or longer) prefix: a subnet of the address alone.
    #[error(
        "{addr}/{prefix} leaves the dataplane's subnet empty, so it answers no one: \
         give the link's prefix, e.g. {addr}/{usual}",
        usual = if addr.is_ipv4() { 24 } else { 64 }
    )]
    EmptySubnet {
        /// The service address.
        addr: IpAddr,
        /// Its prefix length.
        prefix: u8,
    },
    /// An IPv6 address given to a build without IPv6.
    #[error(
        "this c10m was built without IPv6: rebuild with `--features ipv6` to serve an IPv6 address"
    )]
    Ipv6NotBuilt,
    /// Neither `services` nor `ports`.
    #[error("no service given: add e.g. --service echo:7 (or the `ports` of your own service)")]
    NoService,
    /// Both `services` and `ports`.
    #[error(
        "built-in `services` and the `ports` of a service of your own exclude each \
         other: one service per dataplane"
    )]
    BothServices,
    /// `ports` given to [`run`](crate::run).
    #[error(
        "`ports` are for a service of your own (run_service); built-in services are \
         given in `services`"
    )]
    PortsForRun,
    /// `services` given to [`run_service`](crate::run_service).
    #[error(
        "run_service runs one service of your own on `ports`; the built-in `services` \
         run with `run`"
    )]
    ServicesForRunService,
    /// No queue, or more than the XDP program's map holds.
    #[error("--queues must be 1 to {max}", max = c10m_ebpf::MAX_QUEUES)]
    Queues,
    /// Fewer cores than queues.
    #[error("--cores lists {cores} core(s) for {queues} queue(s): give one per queue")]
    Cores {
        /// Cores listed.
        cores: usize,
        /// Queues.
        queues: u32,
    },
    /// A frame size other than 2048 or 4096.
    #[error("the UMEM frame size must be 2048 or 4096")]
    FrameSize,
    /// A frame count that is no power of two or below 64.
    #[error("UMEM frames must be a power of two, at least 64")]
    Frames,
    /// A zero buffer, slot count or backlog.
    #[error("--max-conns, --backlog, --rx-buf and --tx-buf must be above 0")]
    Zero,
    /// A service on port 0.
    #[error("port 0: services need a port from 1 to 65535")]
    PortZero,
    /// Two services on one port.
    #[error("two services on one port")]
    SamePort,
}

/// Why one worker could not set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The UMEM could not be mapped.
    #[error("could not map {bytes} bytes of UMEM: lower the UMEM frame count")]
    Umem {
        /// Bytes asked for.
        bytes: usize,
    },
    /// The AF_XDP socket could not be opened or bound.
    #[error("{0}")]
    Socket(#[source] io::Error),
    /// The stack refused its configuration or could not get its memory.
    #[error("{0}")]
    Stack(#[from] c10m_stack::ConfigError),
    /// A listener could not open.
    #[error("{service} on port {port}: {source}")]
    Listen {
        /// The service's name.
        service: String,
        /// Its port.
        port: u16,
        /// Why.
        source: c10m_stack::ListenError,
    },
    /// The socket could not be registered with the XDP program.
    #[error("{0}")]
    Register(#[from] c10m_ebpf::Error),
}

/// Why a management socket could not be bound.
#[cfg(feature = "management")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagementError {
    /// The socket's directory could not be made.
    #[error("--mgmt {}: cannot create {}: {source}", .path.display(), .dir.display())]
    Directory {
        /// The socket.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A live daemon answers on the socket.
    #[error(
        "--mgmt {}: another c10m daemon answers on this socket: stop it or give another \
         --mgmt path", .0.display()
    )]
    Taken(PathBuf),
    /// Removing a stale socket, binding it, or setting its mode failed.
    #[error("--mgmt {}: {what}{source}", .path.display())]
    Socket {
        /// The socket.
        path: PathBuf,
        /// What failed (empty, or ending in ": ").
        what: &'static str,
        /// Why.
        source: io::Error,
    },
    /// A metrics address that is not a loopback one.
    #[error("--metrics {0}: the metrics listener serves localhost only: use 127.0.0.1:PORT")]
    NotLoopback(SocketAddr),
    /// The metrics listener could not bind.
    #[error("--metrics {addr}: cannot listen: {source}")]
    Metrics {
        /// Its address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
}

/// Why the dataplane could not start, or stopped on its own. Each message is one line that
/// says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The interface does not exist here.
    #[error(
        "no interface named {0} in this network namespace: check `ip link` \
         (or `ip netns exec NS ip link`)"
    )]
    NoSuchInterface(String),
    /// The interface has no Ethernet MAC address.
    #[error("{iface} has no Ethernet MAC address ({found:?}): the dataplane needs an Ethernet NIC")]
    NoMac {
        /// The interface.
        iface: String,
        /// What its `address` says.
        found: String,
    },
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
        addr: IpAddr,
        /// An interface that has it.
        iface: String,
        /// Its prefix length there.
        prefix: u8,
    },
    /// The host's addresses could not be listed.
    #[error("cannot list this host's addresses (getifaddrs: {0}): check /proc and netlink")]
    HostAddresses(#[source] io::Error),
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
    /// Options that cannot run.
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// A management socket could not be bound.
    #[cfg(feature = "management")]
    #[error(transparent)]
    Management(#[from] ManagementError),
    /// The operating system refused something the start needs: a thread, the signal
    /// handlers, a random seed.
    #[error("{what}: {source}")]
    System {
        /// What failed, e.g. "starting a worker thread".
        what: &'static str,
        /// Why.
        source: io::Error,
    },
    /// Attaching or configuring the XDP program failed.
    #[error(transparent)]
    Steering(#[from] c10m_ebpf::Error),
    /// A worker could not set up its socket or stack.
    #[error("queue {queue}: {source}")]
    Worker {
        /// The worker's queue.
        queue: u32,
        /// What failed.
        source: WorkerError,
    },
}

impl StartError {
    /// A [`StartError::System`] for `what`.
    pub(crate) fn system(what: &'static str) -> impl FnOnce(io::Error) -> StartError {
        move |source| StartError::System { what, source }
    }
}

/// The network of `addr/prefix` (the address with its host bits cleared).
fn network(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            Ipv4Addr::from(u32::from(a) & mask).into()
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            Ipv6Addr::from(u128::from(a) & mask).into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_clears_the_host_bits() {
        assert_eq!(
            network([198, 18, 7, 9].into(), 16),
            Ipv4Addr::new(198, 18, 0, 0)
        );
        assert_eq!(network([198, 18, 7, 9].into(), 0), Ipv4Addr::UNSPECIFIED);
        let a6: Ipv6Addr = "2001:2::2".parse().unwrap();
        assert_eq!(
            network(a6.into(), 64),
            "2001:2::".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(network(a6.into(), 128), a6);
    }
}
