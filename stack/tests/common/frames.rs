//! Hand-built frames for the server of `Pair` (198.18.0.10, MAC 02:00:00:00:00:0a).

use std::net::Ipv4Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
    Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};

pub const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// An Ethernet/IPv4/TCP frame from `src` to `dst`, checksums filled: a 1024-byte window,
/// and an MSS option of 1460 on a SYN.
pub fn tcp(
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    control: TcpControl,
    seq: u32,
    ack: Option<u32>,
    payload: &[u8],
) -> Vec<u8> {
    let mss = (control == TcpControl::Syn).then_some(1460);
    tcp_with(src, dst, control, seq, ack, (1024, mss), payload)
}

/// [`tcp`] with the window and MSS option given: `(window, mss)`.
pub fn tcp_with(
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    control: TcpControl,
    seq: u32,
    ack: Option<u32>,
    (window, mss): (u16, Option<u16>),
    payload: &[u8],
) -> Vec<u8> {
    let tcp = TcpRepr {
        src_port: src.1,
        dst_port: dst.1,
        control,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: window,
        window_scale: None,
        max_seg_size: mss,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload,
    };
    c10m_stack::wire::tcp_frame((CLIENT_MAC, src.0), (SERVER_MAC, dst.0), &tcp)
}

/// Recomputes the IPv4 header checksum and the TCP checksum of `frame` in place (after a
/// deliberate edit), as far as the frame's lengths allow.
pub fn fix_checksums(frame: &mut [u8]) {
    let Ok(mut eth) = EthernetFrame::new_checked(&mut frame[..]) else {
        return;
    };
    let Ok(mut ip) = Ipv4Packet::new_checked(eth.payload_mut()) else {
        return;
    };
    ip.fill_checksum();
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    if let Ok(mut tcp) = TcpPacket::new_checked(ip.payload_mut()) {
        tcp.fill_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst));
    }
}

/// The TCP flags byte of an Ethernet/IPv4/TCP frame (no IP options).
pub fn tcp_flags(frame: &[u8]) -> Option<u8> {
    frame.get(14 + 20 + 13).copied()
}

/// An ARP request from the client (198.18.0.1) for `target`: answering it teaches the
/// server the client's MAC.
pub fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    arp(smoltcp::wire::ArpOperation::Request, target)
}

/// The client's (198.18.0.1) answer to the server's ARP request for it.
pub fn arp_reply() -> Vec<u8> {
    arp(
        smoltcp::wire::ArpOperation::Reply,
        Ipv4Addr::new(198, 18, 0, 10),
    )
}

fn arp(operation: smoltcp::wire::ArpOperation, target: Ipv4Addr) -> Vec<u8> {
    use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr};
    let reply = operation == ArpOperation::Reply;
    let arp = ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr: EthernetAddress(CLIENT_MAC),
        source_protocol_addr: Ipv4Addr::new(198, 18, 0, 1),
        target_hardware_addr: EthernetAddress(if reply { SERVER_MAC } else { [0; 6] }),
        target_protocol_addr: target,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(CLIENT_MAC),
        dst_addr: if reply {
            EthernetAddress(SERVER_MAC)
        } else {
            EthernetAddress::BROADCAST
        },
        ethertype: EthernetProtocol::Arp,
    };
    let mut buf = vec![0u8; 14 + arp.buffer_len()];
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut f);
    arp.emit(&mut ArpPacket::new_unchecked(f.payload_mut()));
    buf
}

/// An ICMP echo request from the client (198.18.0.1) to `dst`.
pub fn ping(dst: Ipv4Addr, ident: u16, seq_no: u16, data: &[u8]) -> Vec<u8> {
    use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr};
    let icmp = Icmpv4Repr::EchoRequest {
        ident,
        seq_no,
        data,
    };
    let ip = Ipv4Repr {
        src_addr: Ipv4Addr::new(198, 18, 0, 1),
        dst_addr: dst,
        next_header: IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        hop_limit: 64,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(CLIENT_MAC),
        dst_addr: EthernetAddress(SERVER_MAC),
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut buf = vec![0u8; 14 + ip.buffer_len() + icmp.buffer_len()];
    let caps = ChecksumCapabilities::default();
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut f);
    let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
    ip.emit(&mut p, &caps);
    icmp.emit(&mut Icmpv4Packet::new_unchecked(p.payload_mut()), &caps);
    buf
}
