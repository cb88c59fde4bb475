//! ARP and ICMP echo, answered by smoltcp's interface with no socket.

mod common;

use c10m_stack::Instant;
use c10m_stack::wire::{Impairments, Pair, Queue};
use common::{frames, pair};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetFrame, Icmpv4Packet, Icmpv4Repr, Ipv4Packet,
};

#[test]
fn arp_and_ping_are_answered() {
    let mut p = pair(16, Impairments::none());
    let mut tx = Queue::default();
    let now = Instant::from_millis(1);
    p.b.ingress(now, &frames::arp_request(Pair::SERVER), &mut tx);
    let reply = tx.pop().expect("ARP reply");
    let eth = EthernetFrame::new_checked(&reply[..]).unwrap();
    match ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap() {
        ArpRepr::EthernetIpv4 {
            operation,
            source_protocol_addr,
            source_hardware_addr,
            ..
        } => {
            assert_eq!(operation, ArpOperation::Reply);
            assert_eq!(source_protocol_addr, Pair::SERVER);
            assert_eq!(source_hardware_addr.0, frames::SERVER_MAC);
        }
        other => panic!("not an IPv4 ARP reply: {other:?}"),
    }
    // A request for an address the stack does not have goes unanswered.
    p.b.ingress(
        now,
        &frames::arp_request(std::net::Ipv4Addr::new(198, 18, 0, 77)),
        &mut tx,
    );
    assert!(tx.is_empty());

    p.b.ingress(
        now,
        &frames::ping(Pair::SERVER, 0x1234, 7, b"c10m ping"),
        &mut tx,
    );
    let reply = tx.pop().expect("echo reply");
    let eth = EthernetFrame::new_checked(&reply[..]).unwrap();
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert_eq!(ip.dst_addr(), std::net::Ipv4Addr::new(198, 18, 0, 1));
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum());
    match Icmpv4Repr::parse(&icmp, &Default::default()).unwrap() {
        Icmpv4Repr::EchoReply {
            ident,
            seq_no,
            data,
        } => {
            assert_eq!((ident, seq_no, data), (0x1234, 7, &b"c10m ping"[..]));
        }
        other => panic!("not an echo reply: {other:?}"),
    }
    let c = p.b.counters();
    assert_eq!((c.rx_frames, c.tx_frames), (3, 2));
    assert_eq!(c.drops.iter().sum::<u64>(), 0);
}
