//! Map keys and values as bytes, laid out exactly as `src/bpf/steer.bpf.c` declares them.
//!
//! Addresses and ports are in network byte order (as on the wire), so the program
//! compares them without swapping. Counter values are in host order.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

/// Entries in the XSK map: rx queues 0 to `MAX_QUEUES - 1` can have a socket.
pub const MAX_QUEUES: u32 = 256;
/// Entries in each service map (IPv4 and IPv6).
pub const MAX_SERVICES: u32 = 4096;
/// Entries in the address map.
pub const MAX_ADDRESSES: u32 = 64;

/// Entries in the prefix map.
pub const MAX_PREFIXES: u32 = 64;

/// `struct service_key`: addr (4, network order), port (2, network order), proto, pad.
pub(crate) const SERVICE_KEY_LEN: usize = 8;
/// `struct service6_key`: addr (16, wire order), port (2, network order), proto, pad.
pub(crate) const SERVICE6_KEY_LEN: usize = 20;
/// `struct prefix_key`: prefixlen (4, host order), proto, pad (3), addr (4, network order).
pub(crate) const PREFIX_KEY_LEN: usize = 12;
/// `struct counters`: ten `__u64`.
pub(crate) const COUNTERS_LEN: usize = 10 * 8;
/// The prefix map's values: steer to the AF_XDP socket, or count by TCP flags and drop.
pub(crate) const PREFIX_STEER: u32 = 1;
pub(crate) const PREFIX_TALLY: u32 = 2;
/// `struct service_value`: window (2, host order), cookie mode, pad.
pub(crate) const SERVICE_VALUE_LEN: usize = 4;
/// `struct cookie_keys`: lock (4), flags (4), k0 (8), k1 (8), host order.
pub(crate) const COOKIE_KEYS_LEN: usize = 24;

/// A transport protocol the program can steer by destination port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// A protocol name that is not `tcp` or `udp`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol {0:?}: expected tcp or udp")]
pub struct ProtoError(pub String);

impl FromStr for Proto {
    type Err = ProtoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            _ => Err(ProtoError(s.to_owned())),
        }
    }
}

/// The program's per-CPU counters, summed over CPUs. Every frame the program sees is
/// counted in exactly one field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Redirected to the AF_XDP socket of the frame's rx queue. A socket whose RX or
    /// fill ring is full still drops such frames: see its `XDP_STATISTICS`.
    pub steered: u64,
    /// Not for the dataplane: given to the kernel (`XDP_PASS`), untouched. Includes
    /// IPv4 fragments, even to a service address.
    pub passed: u64,
    /// For the dataplane (a service, or ARP/ICMP for a registered address), but no
    /// socket is registered for the rx queue, so the kernel got it (`XDP_PASS`).
    pub no_xsk: u64,
    /// Malformed and addressed to a registered address (IPv4 header length below 20,
    /// ICMP or TCP/UDP header cut short): dropped (`XDP_DROP`).
    pub dropped: u64,
    /// Malformed and not known to be for the dataplane: headers cut short (Ethernet,
    /// ARP, IPv4, TCP/UDP) or an IPv4 header length below 20, to another address
    /// or before the address could be read. Passed to the kernel, which drops and
    /// counts them as it would without XDP.
    pub errors: u64,
    /// 802.1Q or 802.1ad tagged, whatever they carry: given to the kernel (`XDP_PASS`),
    /// untouched, as the stack does not handle VLANs. The kernel's VLAN interfaces
    /// keep working; a tagged frame for the service address gets no answer from it.
    pub vlan: u64,
    /// SYNs to a service answered by the program itself with a SYN-cookie SYN-ACK
    /// (sent back out of the interface, see [`XdpCookies`]): the stack never saw them.
    pub cookies: u64,
    /// To a tallied prefix (see `Steering::tally_prefix`): counted by TCP flags and
    /// dropped (`XDP_DROP`). SYN and ACK set, RST not set.
    pub tallied_syn_ack: u64,
    /// To a tallied prefix, RST set.
    pub tallied_rst: u64,
    /// To a tallied prefix, any other TCP segment or a UDP datagram.
    pub tallied_other: u64,
}

impl Counters {
    /// All frames the program has seen.
    pub fn total(&self) -> u64 {
        self.steered
            + self.passed
            + self.no_xsk
            + self.dropped
            + self.errors
            + self.vlan
            + self.cookies
            + self.tallied_syn_ack
            + self.tallied_rst
            + self.tallied_other
    }

    /// Sums the per-CPU values of the one-entry `counters` map.
    pub(crate) fn sum<V: AsRef<[u8]>>(per_cpu: &[V]) -> Counters {
        let mut total = Counters::default();
        for value in per_cpu {
            let value = value.as_ref();
            let field = |i: usize| {
                value
                    .get(i * 8..i * 8 + 8)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u64::from_ne_bytes)
            };
            total.steered += field(0);
            total.passed += field(1);
            total.no_xsk += field(2);
            total.dropped += field(3);
            total.errors += field(4);
            total.vlan += field(5);
            total.cookies += field(6);
            total.tallied_syn_ack += field(7);
            total.tallied_rst += field(8);
            total.tallied_other += field(9);
        }
        total
    }
}

/// Whether the program answers a TCP service's SYNs with a SYN cookie itself,
/// so that the SYN never costs the worker anything: the `c10m_stack::SynCookies` mode of
/// the service's listener, and the window its cookie SYN-ACK carries (`min(rx_buf,
/// 65535)`, as the stack's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum XdpCookies {
    /// Never: every SYN goes to the socket.
    #[default]
    Off,
    /// While the queue's worker says it is under pressure ([`QueueCookies::pressure`]).
    Auto {
        /// The SYN-ACK's window.
        window: u16,
    },
    /// Every SYN, whenever the queue's worker has published its keys.
    Always {
        /// The SYN-ACK's window.
        window: u16,
    },
}

/// What the worker of one rx queue publishes for the program's SYN cookies: its stack's
/// keys for the current period (see `c10m_stack::CookieKeys`) and whether it is under
/// pressure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueueCookies {
    /// The first SipHash-1-3 key.
    pub k0: u64,
    /// The second SipHash-1-3 key.
    pub k1: u64,
    /// The period's parity (bit 2 of the cookie).
    pub parity: bool,
    /// Whether services in [`XdpCookies::Auto`] get cookies from the program now.
    pub pressure: bool,
}

/// `struct service_value` for `cookies`.
pub(crate) fn service_value(cookies: XdpCookies) -> [u8; SERVICE_VALUE_LEN] {
    let (window, mode) = match cookies {
        XdpCookies::Off => (0u16, 0u8),
        XdpCookies::Auto { window } => (window, 1),
        XdpCookies::Always { window } => (window, 2),
    };
    let mut value = [0; SERVICE_VALUE_LEN];
    value[0..2].copy_from_slice(&window.to_ne_bytes());
    value[2] = mode;
    value
}

/// `struct cookie_keys` for `keys` (`None`: the queue answers no SYN); the lock word zero.
pub(crate) fn cookie_keys_value(keys: Option<&QueueCookies>) -> [u8; COOKIE_KEYS_LEN] {
    let mut value = [0; COOKIE_KEYS_LEN];
    if let Some(k) = keys {
        let flags = 1 | u32::from(k.parity) << 1 | u32::from(k.pressure) << 2;
        value[4..8].copy_from_slice(&flags.to_ne_bytes());
        value[8..16].copy_from_slice(&k.k0.to_ne_bytes());
        value[16..24].copy_from_slice(&k.k1.to_ne_bytes());
    }
    value
}

/// The service map's key for `(addr, proto, port)`: `struct service_key` for an IPv4
/// address (the `services` map), `struct service6_key` for an IPv6 one (`services6`).
pub(crate) fn service_key(addr: IpAddr, proto: Proto, port: u16) -> Vec<u8> {
    let mut key = match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    key.extend(port.to_be_bytes());
    key.extend([proto.number(), 0]);
    debug_assert!(matches!(key.len(), SERVICE_KEY_LEN | SERVICE6_KEY_LEN));
    key
}

/// The prefix map's key for `proto` traffic to `addr/len` (`len` at most 32; the
/// address bits past `len` are cleared).
pub(crate) fn prefix_key(addr: Ipv4Addr, len: u8, proto: Proto) -> [u8; PREFIX_KEY_LEN] {
    let len = len.min(32);
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    let mut key = [0; PREFIX_KEY_LEN];
    key[0..4].copy_from_slice(&(32 + u32::from(len)).to_ne_bytes());
    key[4] = proto.number();
    key[8..12].copy_from_slice(&(u32::from(addr) & mask).to_be_bytes());
    key
}

/// The address map's key: the address in network order.
pub(crate) fn addr_key(addr: Ipv4Addr) -> [u8; 4] {
    addr.octets()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_key_is_wire_order() {
        let key = service_key(Ipv4Addr::new(198, 18, 0, 10).into(), Proto::Udp, 0x1f90);
        assert_eq!(key, [198, 18, 0, 10, 0x1f, 0x90, 17, 0]);
        let v6 = std::net::Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x10);
        let key = service_key(v6.into(), Proto::Tcp, 80);
        let mut want = v6.octets().to_vec();
        want.extend([0, 80, 6, 0]);
        assert_eq!(key, want);
        assert_eq!(key.len(), SERVICE6_KEY_LEN);
    }

    #[test]
    fn prefix_key_is_proto_then_masked_address() {
        let key = prefix_key(Ipv4Addr::new(198, 19, 7, 9), 16, Proto::Tcp);
        let mut want = 48u32.to_ne_bytes().to_vec();
        want.extend([6, 0, 0, 0, 198, 19, 0, 0]);
        assert_eq!(key.to_vec(), want);
        let all = prefix_key(Ipv4Addr::new(1, 2, 3, 4), 0, Proto::Udp);
        assert_eq!(all[..4], 32u32.to_ne_bytes());
        assert_eq!(all[4..], [17, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn counters_sum_over_cpus() {
        let cpu =
            |base: u64| -> Vec<u8> { (0..10).flat_map(|i| (base + i).to_ne_bytes()).collect() };
        let sum = Counters::sum(&[cpu(0), cpu(10)]);
        let want = Counters {
            steered: 10,
            passed: 12,
            no_xsk: 14,
            dropped: 16,
            errors: 18,
            vlan: 20,
            cookies: 22,
            tallied_syn_ack: 24,
            tallied_rst: 26,
            tallied_other: 28,
        };
        assert_eq!(sum, want);
        assert_eq!(sum.total(), 190);
        assert_eq!(Counters::sum::<Vec<u8>>(&[]), Counters::default());
    }

    #[test]
    fn cookie_values_are_the_c_layout() {
        let off = service_value(XdpCookies::Off);
        assert_eq!(off, [0; 4]);
        let auto = service_value(XdpCookies::Auto { window: 0x1234 });
        assert_eq!(auto[..2], 0x1234u16.to_ne_bytes());
        assert_eq!(auto[2..], [1, 0]);
        assert_eq!(service_value(XdpCookies::Always { window: 7 })[2], 2);
        assert_eq!(cookie_keys_value(None), [0; COOKIE_KEYS_LEN]);
        let keys = QueueCookies {
            k0: 1,
            k1: 2,
            parity: true,
            pressure: false,
        };
        let v = cookie_keys_value(Some(&keys));
        assert_eq!(v[..4], [0; 4], "the lock word");
        assert_eq!(v[4..8], 3u32.to_ne_bytes(), "ready | parity");
        assert_eq!(v[8..16], 1u64.to_ne_bytes());
        assert_eq!(v[16..], 2u64.to_ne_bytes());
    }

    #[test]
    fn proto_parses_and_prints() {
        assert_eq!("TCP".parse::<Proto>(), Ok(Proto::Tcp));
        assert_eq!(Proto::Udp.to_string(), "udp");
        assert_eq!(
            "sctp".parse::<Proto>().unwrap_err().to_string(),
            "unknown protocol \"sctp\": expected tcp or udp"
        );
    }
}
