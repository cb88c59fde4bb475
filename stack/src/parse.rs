//! Classifying a received frame before smoltcp sees it: validate, count what is bad, and
//! pull out the 4-tuple for the demux table.
//!
//! Every length is checked before it is used (smoltcp's `new_checked` views), so no input
//! can make this code panic; the property tests in `tests/malformed.rs` feed it frames
//! truncated at every offset and filled with garbage. Checksums are verified here (RFC 791
//! §3.1, RFC 9293 §3.1), which is why the stack's device tells smoltcp not to verify them
//! again.

use std::net::{Ipv4Addr, Ipv6Addr};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, TcpPacket,
    TcpRepr,
};

use crate::table::{Addr, FourTuple, addr_v4};

/// Why a received frame was dropped before reaching a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Drop {
    /// Shorter than the headers it claims.
    Truncated,
    /// A header field out of range: IP version, IPv4 header length, total or payload
    /// length, TCP data offset, TCP options, an ICMPv6 message smoltcp cannot parse.
    Malformed,
    /// IPv4 header checksum mismatch, or ICMPv6 checksum mismatch (IPv6 has no header
    /// checksum; its ICMP checksum covers the addresses).
    IpChecksum,
    /// TCP checksum mismatch.
    TcpChecksum,
    /// An EtherType the stack does not speak (VLAN, …; IPv6 without the `ipv6` feature or
    /// an IPv6 address).
    Ethertype,
    /// Not addressed to this stack (MAC or IP destination).
    NotForUs,
    /// An IPv4 fragment or an IPv6 fragment header: the stack does not reassemble.
    Fragment,
    /// An IP protocol other than TCP and ICMP (IPv4) or ICMPv6 (IPv6), TCP to an IPv6
    /// multicast group.
    Protocol,
    /// An IPv6 packet whose next header is an extension header (RFC 8200 §4: hop-by-hop,
    /// routing or destination options; the IPsec headers AH and ESP, mobility, HIP,
    /// shim6, the experimental 253 and 254) — TCP behind it or not: the stack parses
    /// no extension header, and a sender that adds them to TCP is rare enough to drop.
    /// A fragment header counts as [`Drop::Fragment`].
    Extension,
}

impl Drop {
    /// Every reason, in counter order.
    pub const ALL: [Drop; 9] = [
        Drop::Truncated,
        Drop::Malformed,
        Drop::IpChecksum,
        Drop::TcpChecksum,
        Drop::Ethertype,
        Drop::NotForUs,
        Drop::Fragment,
        Drop::Protocol,
        Drop::Extension,
    ];

    /// A short lower-case name, for metrics labels and tables.
    pub fn name(self) -> &'static str {
        match self {
            Drop::Truncated => "truncated",
            Drop::Malformed => "malformed",
            Drop::IpChecksum => "ip_checksum",
            Drop::TcpChecksum => "tcp_checksum",
            Drop::Ethertype => "ethertype",
            Drop::NotForUs => "not_for_us",
            Drop::Fragment => "fragment",
            Drop::Protocol => "protocol",
            Drop::Extension => "extension_header",
        }
    }
}

/// What a valid frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// A TCP segment, with its 4-tuple, flags and payload length.
    Tcp {
        key: FourTuple,
        flags: Flags,
        payload: u16,
    },
    /// ARP, ICMP or ICMPv6 (neighbour discovery, echo): for smoltcp's interface, with no
    /// socket.
    Control,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flags {
    pub(crate) syn: bool,
    pub(crate) ack: bool,
    pub(crate) rst: bool,
    pub(crate) fin: bool,
}

/// Who this stack is, for the "for us?" checks.
pub(crate) struct Local<'a> {
    pub(crate) mac: EthernetAddress,
    /// `(network, mask)` pairs, host byte order: our addresses as /32 and the prefixes we
    /// accept with smoltcp's any-IP mode.
    pub(crate) nets: &'a [(u32, u32)],
    /// Our IPv6 addresses (empty without the `ipv6` feature).
    #[cfg_attr(not(feature = "ipv6"), allow(dead_code))]
    pub(crate) ipv6: &'a [Ipv6Addr],
}

impl Local<'_> {
    fn owns(&self, addr: Ipv4Addr) -> bool {
        let a = u32::from(addr);
        self.nets.iter().any(|&(net, mask)| a & mask == net)
    }
}

pub(crate) fn classify(frame: &[u8], local: &Local<'_>) -> Result<Class, Drop> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| Drop::Truncated)?;
    let dst = eth.dst_addr();
    match eth.ethertype() {
        // Neighbour solicitations come to a multicast MAC; `ipv6` checks the address.
        #[cfg(feature = "ipv6")]
        EthernetProtocol::Ipv6 if !local.ipv6.is_empty() => {
            if dst != local.mac && !dst.is_multicast() {
                return Err(Drop::NotForUs);
            }
            return ipv6(eth.payload(), local);
        }
        _ if dst != local.mac && !dst.is_broadcast() => return Err(Drop::NotForUs),
        EthernetProtocol::Arp => return Ok(Class::Control),
        EthernetProtocol::Ipv4 => {}
        _ => return Err(Drop::Ethertype),
    }
    let payload = eth.payload();
    if payload.len() < 20 {
        return Err(Drop::Truncated);
    }
    let ip = Ipv4Packet::new_checked(payload).map_err(|_| {
        // `new_checked` fails for short buffers and for bad lengths alike; tell them apart.
        let ihl = usize::from(payload[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([payload[2], payload[3]]));
        if ihl >= 20 && total >= ihl && payload.len() < total {
            Drop::Truncated
        } else {
            Drop::Malformed
        }
    })?;
    if ip.version() != 4 {
        return Err(Drop::Malformed);
    }
    if !ip.verify_checksum() {
        return Err(Drop::IpChecksum);
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Err(Drop::Fragment);
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    if !local.owns(dst) {
        return Err(Drop::NotForUs);
    }
    match ip.next_header() {
        IpProtocol::Icmp => Ok(Class::Control),
        IpProtocol::Tcp => tcp(
            ip.payload(),
            (IpAddress::Ipv4(src), IpAddress::Ipv4(dst)),
            (addr_v4(src), addr_v4(dst)),
        ),
        _ => Err(Drop::Protocol),
    }
}

/// A TCP segment `payload` from `src` to `dst` (smoltcp's addresses for the checksum, ours
/// for the key).
fn tcp(
    payload: &[u8],
    (s, d): (IpAddress, IpAddress),
    (src, dst): (Addr, Addr),
) -> Result<Class, Drop> {
    let tcp = TcpPacket::new_checked(payload).map_err(|_| {
        if payload.len() < 20 {
            Drop::Truncated
        } else {
            Drop::Malformed
        }
    })?;
    if !tcp.verify_checksum(&s, &d) {
        return Err(Drop::TcpChecksum);
    }
    if !smoltcp_accepts(&tcp, (&s, &d)) {
        return Err(Drop::Malformed);
    }
    Ok(Class::Tcp {
        key: FourTuple {
            remote_addr: src,
            local_addr: dst,
            remote_port: tcp.src_port(),
            local_port: tcp.dst_port(),
        },
        flags: Flags {
            syn: tcp.syn(),
            ack: tcp.ack(),
            rst: tcp.rst(),
            fin: tcp.fin(),
        },
        payload: u16::try_from(tcp.payload().len()).unwrap_or(u16::MAX),
    })
}

/// Whether smoltcp will take `tcp` (ports, flag combination, options): what it would
/// refuse is refused and counted here instead. Its own `TcpRepr::parse` answers exactly
/// that, but it decodes every option into a representation only to drop it, and smoltcp
/// parses the segment again when it processes it; so the layouts of nearly every segment
/// of an established connection — no options, or the timestamp option alone, behind two
/// NOPs (RFC 7323 appendix A, as Linux sends it) or ended by End of Option List (as
/// smoltcp sends it) — are recognised here without it.
fn smoltcp_accepts(tcp: &TcpPacket<&[u8]>, (s, d): (&IpAddress, &IpAddress)) -> bool {
    const TS: [u8; 2] = [8, 10];
    const NOP_NOP_TS: [u8; 4] = [1, 1, 8, 10];
    let one_control = u8::from(tcp.syn()) + u8::from(tcp.fin()) + u8::from(tcp.rst()) <= 1;
    let options = tcp.options();
    if tcp.src_port() != 0
        && tcp.dst_port() != 0
        && one_control
        && (options.is_empty()
            || (options.len() == 12
                && (options[..4] == NOP_NOP_TS || options[..2] == TS && options[10] == 0)))
    {
        return true;
    }
    TcpRepr::parse(tcp, s, d, &ChecksumCapabilities::ignored()).is_ok()
}

/// An IPv6 packet: TCP to one of our addresses, or ICMPv6 (neighbour discovery and echo,
/// for smoltcp) to one of them or to the solicited-node group of one (RFC 4291 §2.7.1).
#[cfg(feature = "ipv6")]
fn ipv6(payload: &[u8], local: &Local<'_>) -> Result<Class, Drop> {
    use smoltcp::wire::{Icmpv6Packet, Icmpv6Repr, Ipv6Packet};

    if payload.len() < 40 {
        return Err(Drop::Truncated);
    }
    let ip = Ipv6Packet::new_checked(payload).map_err(|_| Drop::Truncated)?;
    if ip.version() != 6 {
        return Err(Drop::Malformed);
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let solicited = |a: &Ipv6Addr| {
        let d = dst.octets();
        d[..13] == [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff] && d[13..] == a.octets()[13..]
    };
    let ours = local.ipv6.contains(&dst);
    if !ours && !local.ipv6.iter().any(solicited) {
        return Err(Drop::NotForUs);
    }
    match ip.next_header() {
        IpProtocol::Icmpv6 => {}
        IpProtocol::Tcp if ours => {
            return tcp(
                ip.payload(),
                (IpAddress::Ipv6(src), IpAddress::Ipv6(dst)),
                (src, dst),
            );
        }
        IpProtocol::Ipv6Frag => return Err(Drop::Fragment),
        next if is_extension(next) => return Err(Drop::Extension),
        _ => return Err(Drop::Protocol),
    }
    let icmp = Icmpv6Packet::new_checked(ip.payload()).map_err(|_| Drop::Truncated)?;
    if !icmp.verify_checksum(&src, &dst) {
        return Err(Drop::IpChecksum);
    }
    let caps = ChecksumCapabilities::ignored();
    Icmpv6Repr::parse(&src, &dst, &icmp, &caps).map_err(|_| Drop::Malformed)?;
    Ok(Class::Control)
}

/// Whether `next` names an IPv6 extension header (RFC 8200 §4, IANA's "IPv6 Extension
/// Header Types") other than the fragment header.
#[cfg(feature = "ipv6")]
fn is_extension(next: IpProtocol) -> bool {
    matches!(
        u8::from(next),
        0 | 43 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A TCP header with 12 bytes of `options` (no payload; the checksum is not looked at).
    fn segment(ports: (u16, u16), flags: u8, options: &[u8; 12]) -> Vec<u8> {
        let mut b = vec![0u8; 32];
        b[0..2].copy_from_slice(&ports.0.to_be_bytes());
        b[2..4].copy_from_slice(&ports.1.to_be_bytes());
        b[12] = 8 << 4; // 32-byte header
        b[13] = flags;
        b[20..].copy_from_slice(options);
        b
    }

    /// Option areas of the shapes the fast path looks at, and of any shape.
    fn options() -> impl Strategy<Value = [u8; 12]> {
        let tail = any::<[u8; 8]>();
        prop_oneof![
            tail.prop_map(|t| [1, 1, 8, 10, t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]]),
            (tail, any::<u8>(), any::<bool>()).prop_map(|(t, x, end)| {
                let e = if end { 0 } else { x };
                [8, 10, t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], e, x]
            }),
            any::<[u8; 12]>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        /// The shortcut answers exactly what smoltcp's own parse answers.
        #[test]
        fn smoltcp_accepts_agrees_with_smoltcp(
            src in prop_oneof![Just(0u16), any::<u16>()],
            dst in prop_oneof![Just(0u16), any::<u16>()],
            flags in any::<u8>(),
            options in options(),
        ) {
            let bytes = segment((src, dst), flags, &options);
            let tcp = TcpPacket::new_checked(&bytes[..]).unwrap();
            let (s, d) = (IpAddress::v4(198, 18, 0, 1), IpAddress::v4(198, 18, 0, 10));
            let full = TcpRepr::parse(&tcp, &s, &d, &ChecksumCapabilities::ignored()).is_ok();
            prop_assert_eq!(smoltcp_accepts(&tcp, (&s, &d)), full);
        }
    }
}
