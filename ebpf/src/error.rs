//! The loader's errors: each `Display` is one line that tells an operator what to do.
//!
//! Messages are complete on their own, including the kernel's reason where there is
//! one; that reason is kept in a `cause` field rather than as [`std::error::Error::source`],
//! so a printer that walks the chain does not show it twice.

use std::io;
use std::net::IpAddr;

use crate::{Proto, XdpMode};

/// Why attaching the steering program or changing its maps failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The interface does not exist in this network namespace.
    #[error("no interface named {ifname}: check `ip link`")]
    NoSuchInterface {
        /// The name that was asked for.
        ifname: String,
    },
    /// The process lacks the capabilities to load or attach XDP programs.
    #[error("loading XDP needs root or CAP_BPF+CAP_NET_ADMIN")]
    PermissionDenied,
    /// Native mode was asked for and the driver has no XDP support.
    #[error("driver of {ifname} does not support native XDP: use --xdp-mode generic or auto")]
    NativeUnsupported {
        /// The interface.
        ifname: String,
    },
    /// Another XDP program (or another mode's program) is on the interface.
    #[error(
        "{ifname} already has an XDP program: see it with `bpftool net show dev {ifname}`, \
         remove it with `ip link set dev {ifname} xdp off` (or `xdpgeneric off`) \
         or stop the process that holds it"
    )]
    AlreadyAttached {
        /// The interface.
        ifname: String,
    },
    /// The kernel refused the program: usually the verifier, or a kernel without
    /// XSKMAP/bpf_link support (Linux 5.9 or later is needed).
    #[error(
        "the kernel refused the XDP program ({cause}): needs Linux 5.9+; \
         libbpf's verifier log is logged at debug level"
    )]
    Load {
        /// libbpf's error.
        cause: libbpf_rs::Error,
    },
    /// The kernel refused the attachment for a reason not covered above.
    #[error("attaching XDP to {ifname} in {mode} mode failed: {cause}")]
    Attach {
        /// The interface.
        ifname: String,
        /// The mode that was tried.
        mode: XdpMode,
        /// The kernel's reason.
        cause: io::Error,
    },
    /// Attaching, finding or removing the test bed's impairment filter failed.
    #[error("{what} on {ifname} failed: {cause}")]
    Tc {
        /// The interface.
        ifname: String,
        /// What was being done, e.g. "attaching the impairment filter".
        what: String,
        /// The kernel's reason.
        cause: io::Error,
    },
    /// A map update or lookup failed.
    #[error("{what} failed: {cause}")]
    Map {
        /// What was being done, e.g. "adding service 198.18.0.10 tcp/80".
        what: String,
        /// libbpf's error (`E2BIG`: the map is full).
        cause: libbpf_rs::Error,
    },
    /// The rx queue number is beyond the XSK map.
    #[error("rx queue {queue} is out of range: the XSK map holds queues 0 to {}", max - 1)]
    QueueOutOfRange {
        /// The queue asked for.
        queue: u32,
        /// The XSK map's size ([`crate::MAX_QUEUES`]).
        max: u32,
    },
    /// `remove_service` for a service that is not registered.
    #[error("service {addr} {proto}/{port} is not registered")]
    NoSuchService {
        /// Destination address.
        addr: IpAddr,
        /// Protocol.
        proto: Proto,
        /// Destination port.
        port: u16,
    },
    /// `remove_address` for an address that is not registered.
    #[error("address {addr} is not registered")]
    NoSuchAddress {
        /// The address.
        addr: IpAddr,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_and_say_what_to_do() {
        let cases = [
            (
                Error::NoSuchInterface {
                    ifname: "eth9".into(),
                },
                "no interface named eth9: check `ip link`",
            ),
            (
                Error::PermissionDenied,
                "loading XDP needs root or CAP_BPF+CAP_NET_ADMIN",
            ),
            (
                Error::NativeUnsupported {
                    ifname: "lo".into(),
                },
                "driver of lo does not support native XDP: use --xdp-mode generic or auto",
            ),
            (
                Error::QueueOutOfRange {
                    queue: 300,
                    max: 256,
                },
                "rx queue 300 is out of range: the XSK map holds queues 0 to 255",
            ),
            (
                Error::NoSuchService {
                    addr: std::net::Ipv4Addr::new(198, 18, 0, 10).into(),
                    proto: Proto::Tcp,
                    port: 80,
                },
                "service 198.18.0.10 tcp/80 is not registered",
            ),
        ];
        for (error, want) in cases {
            assert_eq!(error.to_string(), want);
        }
        let busy = Error::AlreadyAttached {
            ifname: "dut0".into(),
        }
        .to_string();
        assert!(busy.contains("ip link set dev dut0 xdp off"), "{busy}");
        assert!(busy.contains("bpftool net show dev dut0"), "{busy}");
        let attach = Error::Attach {
            ifname: "dut0".into(),
            mode: XdpMode::Native,
            cause: io::Error::from_raw_os_error(libc::ERANGE),
        }
        .to_string();
        assert!(
            attach.starts_with("attaching XDP to dut0 in native mode failed: "),
            "{attach}"
        );
        for message in [busy, attach] {
            assert!(!message.contains('\n'), "{message}");
        }
    }

    #[test]
    fn error_is_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Error>();
    }
}
