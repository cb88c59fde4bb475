//! Map keys and values as bytes, laid out exactly as `src/bpf/steer.bpf.c` declares them.
//!
//! Addresses and ports are in network byte order (as on the wire), so the program
//! compares them without swapping. Counter values are in host order.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Entries in the XSK map: rx queues 0 to `MAX_QUEUES - 1` can have a socket.
pub const MAX_QUEUES: u32 = 256;
/// Entries in the service map.
pub const MAX_SERVICES: u32 = 4096;
/// Entries in the address map.
pub const MAX_ADDRESSES: u32 = 64;

/// Entries in the prefix map.
pub const MAX_PREFIXES: u32 = 64;

/// `struct service_key`: addr (4, network order), port (2, network order), proto, pad.
pub(crate) const SERVICE_KEY_LEN: usize = 8;
/// `struct prefix_key`: prefixlen (4, host order), proto, pad (3), addr (4, network order).
pub(crate) const PREFIX_KEY_LEN: usize = 12;
/// `struct counters`: six `__u64`.
pub(crate) const COUNTERS_LEN: usize = 6 * 8;

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

impl FromStr for Proto {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            _ => Err(format!("unknown protocol {s:?}: expected tcp or udp")),
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
}

impl Counters {
    /// All frames the program has seen.
    pub fn total(&self) -> u64 {
        self.steered + self.passed + self.no_xsk + self.dropped + self.errors + self.vlan
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
        }
        total
    }
}

/// The service map's key for `(addr, proto, port)`.
pub(crate) fn service_key(addr: Ipv4Addr, proto: Proto, port: u16) -> [u8; SERVICE_KEY_LEN] {
    let mut key = [0; SERVICE_KEY_LEN];
    key[0..4].copy_from_slice(&addr.octets());
    key[4..6].copy_from_slice(&port.to_be_bytes());
    key[6] = proto.number();
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
        let key = service_key(Ipv4Addr::new(198, 18, 0, 10), Proto::Udp, 0x1f90);
        assert_eq!(key, [198, 18, 0, 10, 0x1f, 0x90, 17, 0]);
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
            |base: u64| -> Vec<u8> { (0..6).flat_map(|i| (base + i).to_ne_bytes()).collect() };
        let sum = Counters::sum(&[cpu(0), cpu(10)]);
        let want = Counters {
            steered: 10,
            passed: 12,
            no_xsk: 14,
            dropped: 16,
            errors: 18,
            vlan: 20,
        };
        assert_eq!(sum, want);
        assert_eq!(sum.total(), 90);
        assert_eq!(Counters::sum::<Vec<u8>>(&[]), Counters::default());
    }

    #[test]
    fn proto_parses_and_prints() {
        assert_eq!("TCP".parse::<Proto>(), Ok(Proto::Tcp));
        assert_eq!(Proto::Udp.to_string(), "udp");
        assert!("sctp".parse::<Proto>().is_err());
    }
}
