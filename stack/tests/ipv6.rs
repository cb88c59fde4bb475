//! IPv6 beside IPv4 (the `ipv6` feature): the stack answers neighbour solicitations and
//! ICMPv6 echo for its IPv6 address, and drops and counts IPv6 frames it must not take.
#![cfg(feature = "ipv6")]

use std::net::Ipv6Addr;

use c10m_stack::wire::{Pair, Queue};
use c10m_stack::{Config, ConfigError, Drop, Instant, Stack};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv6Packet, Icmpv6Repr,
    IpProtocol, Ipv6Packet, Ipv6Repr, NdiscNeighborFlags, NdiscRepr, RawHardwareAddress,
};

const SERVICE: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x10);
const PEER: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
const PEER_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x01]);
/// The solicited-node group of `SERVICE` (ff02::1:ff00:10) and its MAC.
const SOLICITED: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 0x10);
const SOLICITED_MAC: EthernetAddress = EthernetAddress([0x33, 0x33, 0xff, 0, 0, 0x10]);

fn server() -> Stack {
    let config = Config {
        ipv6_addrs: vec![(SERVICE, 64)],
        ..Pair::server_config(16)
    };
    Stack::new(&config, Instant::ZERO).unwrap()
}

fn server_mac() -> EthernetAddress {
    EthernetAddress(Pair::server_config(1).mac)
}

/// An Ethernet/IPv6 frame carrying `icmp`, checksums filled in.
fn icmp_frame(dst_mac: EthernetAddress, dst: Ipv6Addr, icmp: &Icmpv6Repr<'_>) -> Vec<u8> {
    let ip = Ipv6Repr {
        src_addr: PEER,
        dst_addr: dst,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp.buffer_len(),
        hop_limit: 255,
    };
    let eth = EthernetRepr {
        src_addr: PEER_MAC,
        dst_addr: dst_mac,
        ethertype: EthernetProtocol::Ipv6,
    };
    let mut frame = vec![0u8; 14 + 40 + icmp.buffer_len()];
    let mut e = EthernetFrame::new_unchecked(&mut frame[..]);
    eth.emit(&mut e);
    let mut p = Ipv6Packet::new_unchecked(e.payload_mut());
    ip.emit(&mut p);
    let mut i = Icmpv6Packet::new_unchecked(p.payload_mut());
    icmp.emit(&PEER, &dst, &mut i, &ChecksumCapabilities::default());
    frame
}

fn solicitation() -> Vec<u8> {
    let ns = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
        target_addr: SERVICE,
        lladdr: Some(RawHardwareAddress::from(PEER_MAC)),
    });
    icmp_frame(SOLICITED_MAC, SOLICITED, &ns)
}

fn echo_request(data: &[u8]) -> Vec<u8> {
    let req = Icmpv6Repr::EchoRequest {
        ident: 0x1234,
        seq_no: 7,
        data,
    };
    icmp_frame(server_mac(), SERVICE, &req)
}

/// Feeds one frame; returns the drop reason it was counted under (if any) and the IPv6
/// frames the stack sent in answer (not the ARP probe for its IPv4 gateway).
fn feed(stack: &mut Stack, frame: &[u8]) -> (Option<Drop>, Vec<Vec<u8>>) {
    let before = stack.counters();
    let mut tx = Queue::default();
    let now = Instant::from_millis(1);
    stack.ingress(now, frame, &mut tx);
    stack.poll(now, &mut tx);
    let after = stack.counters();
    let dropped = Drop::ALL
        .into_iter()
        .find(|&d| after.dropped(d) != before.dropped(d));
    let sent = std::iter::from_fn(|| tx.pop()).filter(|f| f.get(12..14) == Some(&[0x86, 0xdd]));
    (dropped, sent.collect())
}

/// The one frame answered, parsed down to its ICMPv6 message (checksums verified).
fn answer<R>(
    out: &[Vec<u8>],
    check: impl FnOnce(EthernetAddress, &Ipv6Repr, &Icmpv6Repr<'_>) -> R,
) -> R {
    assert_eq!(out.len(), 1, "one answer");
    let e = EthernetFrame::new_checked(&out[0][..]).unwrap();
    assert_eq!(e.ethertype(), EthernetProtocol::Ipv6);
    assert_eq!(e.src_addr(), server_mac());
    let p = Ipv6Packet::new_checked(e.payload()).unwrap();
    let ip = Ipv6Repr::parse(&p).unwrap();
    let i = Icmpv6Packet::new_checked(p.payload()).unwrap();
    assert!(
        i.verify_checksum(&ip.src_addr, &ip.dst_addr),
        "ICMPv6 checksum"
    );
    let icmp = Icmpv6Repr::parse(
        &ip.src_addr,
        &ip.dst_addr,
        &i,
        &ChecksumCapabilities::default(),
    )
    .unwrap();
    check(e.dst_addr(), &ip, &icmp)
}

#[test]
fn neighbour_solicitation_is_answered_with_our_mac() {
    let mut stack = server();
    let (dropped, out) = feed(&mut stack, &solicitation());
    assert_eq!(dropped, None);
    answer(&out, |mac, ip, icmp| {
        assert_eq!(mac, PEER_MAC);
        assert_eq!((ip.src_addr, ip.dst_addr), (SERVICE, PEER));
        assert_eq!(
            *icmp,
            Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
                flags: NdiscNeighborFlags::SOLICITED,
                target_addr: SERVICE,
                lladdr: Some(RawHardwareAddress::from(server_mac())),
            })
        );
    });
}

#[test]
fn echo_request_is_answered_byte_exact() {
    let mut stack = server();
    // Learn the peer's MAC first, as a real peer's solicitation would teach it.
    feed(&mut stack, &solicitation());
    let data: Vec<u8> = (0..56u8).collect();
    let (dropped, out) = feed(&mut stack, &echo_request(&data));
    assert_eq!(dropped, None);
    answer(&out, |mac, ip, icmp| {
        assert_eq!(mac, PEER_MAC);
        assert_eq!((ip.src_addr, ip.dst_addr), (SERVICE, PEER));
        assert_eq!(
            *icmp,
            Icmpv6Repr::EchoReply {
                ident: 0x1234,
                seq_no: 7,
                data: &data,
            }
        );
    });
}

#[test]
fn bad_ipv6_frames_are_dropped_and_counted() {
    let mut stack = server();
    let good = echo_request(b"ping");

    for len in 14..good.len() {
        let (dropped, out) = feed(&mut stack, &good[..len]);
        assert_eq!(dropped, Some(Drop::Truncated), "cut at {len}");
        assert!(out.is_empty());
    }

    let mut f = good.clone();
    f[14 + 40 + 5] ^= 0xff; // the ICMPv6 checksum
    assert_eq!(feed(&mut stack, &f), (Some(Drop::IpChecksum), vec![]));

    let mut f = good.clone();
    f[14] = 0x40; // version 4 in an IPv6 EtherType
    assert_eq!(feed(&mut stack, &f).0, Some(Drop::Malformed));

    let mut f = good.clone();
    f[14 + 4..14 + 6].copy_from_slice(&1000u16.to_be_bytes()); // payload length past the end
    assert_eq!(feed(&mut stack, &f).0, Some(Drop::Truncated));

    let mut f = good.clone();
    f[14 + 6] = 44; // a fragment header
    assert_eq!(feed(&mut stack, &f).0, Some(Drop::Fragment));

    let mut f = good.clone();
    f[14 + 6] = 17; // UDP
    assert_eq!(feed(&mut stack, &f).0, Some(Drop::Protocol));

    let other = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x11);
    let req = Icmpv6Repr::EchoRequest {
        ident: 1,
        seq_no: 1,
        data: b"ping",
    };
    let f = icmp_frame(server_mac(), other, &req);
    assert_eq!(feed(&mut stack, &f), (Some(Drop::NotForUs), vec![]));

    // Another node's solicited-node group, and our group on a unicast MAC not ours.
    let f = icmp_frame(
        SOLICITED_MAC,
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 0x11),
        &req,
    );
    assert_eq!(feed(&mut stack, &f).0, Some(Drop::NotForUs));
    let f = icmp_frame(EthernetAddress([0x02, 0, 0, 0, 0, 0x77]), SERVICE, &req);
    assert_eq!(feed(&mut stack, &f).0, Some(Drop::NotForUs));

    // The good frame still works after all that.
    feed(&mut stack, &solicitation());
    let (dropped, out) = feed(&mut stack, &good);
    assert_eq!((dropped, out.len()), (None, 1));
}

#[test]
fn addresses_are_checked() {
    let too_many = Config {
        ipv6_addrs: vec![(SERVICE, 64), (PEER, 64)],
        ..Pair::server_config(16)
    };
    assert_eq!(
        Stack::new(&too_many, Instant::ZERO).err(),
        Some(ConfigError::TooManyAddresses(3))
    );
    let long = Config {
        ipv6_addrs: vec![(SERVICE, 129)],
        ..Pair::server_config(16)
    };
    assert_eq!(
        Stack::new(&long, Instant::ZERO).err(),
        Some(ConfigError::BadPrefix(129))
    );
}
