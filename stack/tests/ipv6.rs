//! IPv6 beside IPv4 (the `ipv6` feature): the stack answers neighbour solicitations and
//! ICMPv6 echo for its IPv6 address, carries TCP over IPv6 beside IPv4, and drops and
//! counts IPv6 frames it must not take.
#![cfg(feature = "ipv6")]

mod common;

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use c10m_stack::wire::{Impairments, Pair, Queue, Side};
use c10m_stack::{Config, ConfigError, Drop, Instant, ListenOptions, Refusal, Stack, SynCookies};
use common::*;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv6Packet, Icmpv6Repr,
    IpAddress, IpProtocol, Ipv6Packet, Ipv6Repr, NdiscNeighborFlags, NdiscRepr, RawHardwareAddress,
    TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
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

/// An Ethernet/IPv6 frame from the peer to `dst` carrying `len` bytes of `next`, which
/// `fill` writes.
fn ipv6_frame(
    (dst_mac, dst): (EthernetAddress, Ipv6Addr),
    next_header: IpProtocol,
    payload_len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Vec<u8> {
    let ip = Ipv6Repr {
        src_addr: PEER,
        dst_addr: dst,
        next_header,
        payload_len,
        hop_limit: 255,
    };
    let eth = EthernetRepr {
        src_addr: PEER_MAC,
        dst_addr: dst_mac,
        ethertype: EthernetProtocol::Ipv6,
    };
    let mut frame = vec![0u8; 14 + 40 + payload_len];
    let mut e = EthernetFrame::new_unchecked(&mut frame[..]);
    eth.emit(&mut e);
    let mut p = Ipv6Packet::new_unchecked(e.payload_mut());
    ip.emit(&mut p);
    fill(p.payload_mut());
    frame
}

/// An Ethernet/IPv6 frame carrying `icmp`, checksums filled in.
fn icmp_frame(dst_mac: EthernetAddress, dst: Ipv6Addr, icmp: &Icmpv6Repr<'_>) -> Vec<u8> {
    ipv6_frame((dst_mac, dst), IpProtocol::Icmpv6, icmp.buffer_len(), |p| {
        let caps = ChecksumCapabilities::default();
        icmp.emit(&PEER, &dst, &mut Icmpv6Packet::new_unchecked(p), &caps);
    })
}

/// An Ethernet/IPv6/TCP SYN from the peer to port 80 of `dst`, with a 4-byte payload.
fn tcp_frame(dst_mac: EthernetAddress, dst: Ipv6Addr) -> Vec<u8> {
    let tcp = TcpRepr {
        src_port: 40_000,
        dst_port: 80,
        control: TcpControl::Syn,
        seq_number: TcpSeqNumber(1000),
        ack_number: None,
        window_len: 1024,
        window_scale: None,
        max_seg_size: Some(1440),
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: b"abcd",
    };
    ipv6_frame((dst_mac, dst), IpProtocol::Tcp, tcp.buffer_len(), |p| {
        let (s, d) = (IpAddress::Ipv6(PEER), IpAddress::Ipv6(dst));
        let caps = ChecksumCapabilities::default();
        tcp.emit(&mut TcpPacket::new_unchecked(p), &s, &d, &caps);
    })
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

/// A peer that needs no solicitation from us before its SYN (it knows our MAC already)
/// gets its SYN-ACK as soon as it answers our solicitation: in the same poll, not a second
/// later when smoltcp's silence after the miss ends.
#[test]
fn a_syn_ack_waiting_for_neighbour_discovery_leaves_with_the_advertisement() {
    let mut stack = server();
    stack.listen(80, server_opts(1024)).unwrap();
    let (dropped, out) = feed(&mut stack, &tcp_frame(server_mac(), SERVICE));
    assert_eq!(dropped, None);
    answer(&out, |_, ip, icmp| {
        assert_eq!(ip.src_addr, SERVICE);
        assert!(
            matches!(icmp, Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr, .. }) if *target_addr == PEER),
            "{icmp:?}"
        );
    });
    let advert = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
        flags: NdiscNeighborFlags::SOLICITED | NdiscNeighborFlags::OVERRIDE,
        target_addr: PEER,
        lladdr: Some(RawHardwareAddress::from(PEER_MAC)),
    });
    let (dropped, out) = feed(&mut stack, &icmp_frame(server_mac(), SERVICE, &advert));
    assert_eq!(dropped, None);
    assert_eq!(out.len(), 1, "the SYN-ACK alone");
    let e = EthernetFrame::new_checked(&out[0][..]).unwrap();
    assert_eq!(e.dst_addr(), PEER_MAC);
    let p = Ipv6Packet::new_checked(e.payload()).unwrap();
    let tcp = TcpPacket::new_checked(p.payload()).unwrap();
    assert!(tcp.syn() && tcp.ack() && tcp.ack_number() == TcpSeqNumber(1001));
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

    // TCP: a bad checksum, a header cut short, and TCP to our solicited-node group.
    let mut f = tcp_frame(server_mac(), SERVICE);
    let end = f.len() - 1;
    f[end] ^= 0xff;
    assert_eq!(feed(&mut stack, &f), (Some(Drop::TcpChecksum), vec![]));
    let mut f = tcp_frame(server_mac(), SERVICE);
    f[14 + 40 + 12] = 0x20; // data offset 8 words, past the end
    assert_eq!(feed(&mut stack, &f).0, Some(Drop::Malformed));
    let f = tcp_frame(SOLICITED_MAC, SOLICITED);
    assert_eq!(feed(&mut stack, &f), (Some(Drop::Protocol), vec![]));
    let f = tcp_frame(server_mac(), SERVICE);
    assert_eq!(feed(&mut stack, &f).0, None, "the good segment is taken");

    // TCP behind an extension header: counted as one, never answered (not even a RST).
    for (next, what) in [
        (0, "hop-by-hop"),
        (60, "destination options"),
        (43, "routing"),
        (51, "AH"),
        (50, "ESP"),
    ] {
        let f = behind_extension(next, &tcp_frame(server_mac(), SERVICE));
        assert_eq!(
            feed(&mut stack, &f),
            (Some(Drop::Extension), vec![]),
            "{what}"
        );
    }
    // An extension header cut short, or claiming more than there is.
    let f = behind_extension(0, &tcp_frame(server_mac(), SERVICE));
    assert_eq!(feed(&mut stack, &f[..14 + 40 + 4]).0, Some(Drop::Truncated));
    let mut f = behind_extension(60, &tcp_frame(server_mac(), SERVICE));
    f[14 + 40 + 1] = 0xff; // 2 KiB of options
    assert_eq!(feed(&mut stack, &f).0, Some(Drop::Extension));
    assert_eq!(Drop::Extension.name(), "extension_header");

    // The good frame still works after all that.
    feed(&mut stack, &solicitation());
    let (dropped, out) = feed(&mut stack, &good);
    assert_eq!((dropped, out.len()), (None, 1));
}

/// `frame` (Ethernet/IPv6/TCP) with an 8-byte extension header of type `next` between
/// the IPv6 header and TCP (PadN filling it, TCP named as its next header).
fn behind_extension(next: u8, frame: &[u8]) -> Vec<u8> {
    let mut f = frame[..14 + 40].to_vec();
    f.extend([6, 0, 1, 4, 0, 0, 0, 0]);
    f.extend(&frame[14 + 40..]);
    let len = u16::from_be_bytes([f[14 + 4], f[14 + 5]]) + 8;
    f[14 + 4..14 + 6].copy_from_slice(&len.to_be_bytes());
    f[14 + 6] = next;
    f
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// Random damage anywhere in IPv6 frames (TCP, TCP behind a hop-by-hop header, an echo
    /// request, a solicitation), cut anywhere: each is dropped under one reason or
    /// processed, never a panic.
    #[test]
    fn random_damage_to_ipv6_frames(
        which in 0..4usize,
        edits in proptest::collection::vec(
            (proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()),
            1..8,
        ),
        cut in proptest::prelude::any::<proptest::sample::Index>(),
    ) {
        let mut stack = server();
        let tcp = tcp_frame(server_mac(), SERVICE);
        let mut f = match which {
            0 => tcp,
            1 => behind_extension(0, &tcp),
            2 => echo_request(b"ping"),
            _ => solicitation(),
        };
        for (at, v) in edits {
            let i = at.index(f.len());
            f[i] = v;
        }
        let len = cut.index(f.len() + 1);
        let mut tx = Queue::default();
        stack.ingress(Instant::from_millis(1), &f[..len], &mut tx);
        stack.poll(Instant::from_millis(2), &mut tx);
        proptest::prop_assert_eq!(stack.counters().rx_frames, 1);
        proptest::prop_assert!(stack.connections() <= 1);
    }
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

/// The in-memory pair with the test bed's IPv6 addresses beside its IPv4 ones.
fn dual_pair() -> Pair {
    let client = Config {
        ipv6_addrs: vec![(PEER, 64)],
        any_ip: Vec::new(),
        ..Pair::client_config(64)
    };
    let server = Config {
        ipv6_addrs: vec![(SERVICE, 64)],
        ..Pair::server_config(64)
    };
    Pair::new(&client, &server, Impairments::none())
}

fn v6(port: u16) -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(SERVICE, port, 0, 0))
}

#[test]
fn tcp_over_ipv6_beside_ipv4_is_byte_exact() {
    let mut pair = dual_pair();
    pair.b.listen(7, server_opts(4096)).unwrap();
    let mut client = EchoClient {
        close_when_done: true,
        ..EchoClient::default()
    };
    let mut server = EchoServer::default();
    let six = client.open(&mut pair.a, v6(7), client_opts(4096), pattern(1, 200_000));
    let four = client.open(
        &mut pair.a,
        SocketAddrV4::new(Pair::SERVER, 7),
        client_opts(4096),
        pattern(2, 100_000),
    );
    let tuple = pair.a.tuple(six).unwrap();
    assert_eq!((tuple.local().ip(), tuple.remote()), (PEER.into(), v6(7)));
    let tuple = pair.a.tuple(four).unwrap();
    assert_eq!(tuple.local().ip(), Pair::CLIENT);
    // Both ends see the IPv6 peer by the 4-tuple it is, byte-exact in each direction.
    let mut seen = (false, false);
    pair.run_until(2_000, |side, stack| {
        if side == Side::B {
            server.handle(stack);
            for &c in &server.accepted {
                match stack.tuple(c).map(|t| t.remote().ip()) {
                    Ok(ip) if ip == PEER => seen.0 = true,
                    Ok(ip) if ip == Pair::CLIENT => seen.1 = true,
                    _ => {}
                }
            }
        } else {
            client.handle(stack);
        }
        seen == (true, true)
    });
    assert_eq!(
        seen,
        (true, true),
        "the server holds one connection of each family"
    );
    assert!(run(&mut pair, &mut client, &mut server, 60_000, |c, s| c
        .closed
        == 2
        && s.closed == 2));
    for c in [six, four] {
        let flow = &client.flows[&c];
        assert_eq!(flow.received, flow.payload, "echo is byte-exact");
    }
    assert_eq!(server.bytes, 300_000);
    let (a, b) = (pair.a.counters(), pair.b.counters());
    assert_eq!((a.connected, b.accepted), (2, 2));
    assert_eq!(
        b.resets_sent + a.resets_sent,
        0,
        "an orderly close sends no RST"
    );
    assert_eq!(
        Drop::ALL.map(|d| a.dropped(d) + b.dropped(d)),
        [0; Drop::ALL.len()],
        "nothing dropped"
    );
}

#[test]
fn ipv6_tcp_to_a_closed_port_is_reset() {
    let mut pair = dual_pair();
    let mut client = EchoClient::default();
    let mut server = EchoServer::default();
    let c = client.open(&mut pair.a, v6(9), client_opts(4096), b"x".to_vec());
    assert!(run(&mut pair, &mut client, &mut server, 5_000, |c, _| c
        .closed
        == 1));
    assert!(!client.flows[&c].connected);
    assert_eq!(pair.b.counters().resets_sent, 1);
    assert_eq!(pair.a.counters().resets_received, 1);
}

#[test]
fn ipv6_connections_are_born_from_syn_cookies() {
    let mut pair = dual_pair();
    let opts = ListenOptions {
        syn_cookies: SynCookies::Always,
        ..server_opts(4096)
    };
    pair.b.listen(7, opts).unwrap();
    let mut client = EchoClient {
        close_when_done: true,
        ..EchoClient::default()
    };
    let mut server = EchoServer::default();
    let c = client.open(&mut pair.a, v6(7), client_opts(4096), pattern(3, 50_000));
    assert!(run(&mut pair, &mut client, &mut server, 60_000, |c, s| c
        .closed
        == 1
        && s.closed == 1));
    let flow = &client.flows[&c];
    assert_eq!(flow.received, flow.payload, "echo is byte-exact");
    let b = pair.b.counters();
    assert_eq!((b.cookies_sent, b.cookies_accepted, b.accepted), (1, 1, 1));
    assert_eq!(b.cookies_invalid, 0);
}

#[test]
fn the_per_source_limit_counts_ipv6_peers() {
    let mut pair = dual_pair();
    let opts = ListenOptions {
        max_per_source: Some(1),
        ..server_opts(4096)
    };
    pair.b.listen(7, opts).unwrap();
    let mut client = EchoClient::default();
    let mut server = EchoServer::default();
    let first = client.open(&mut pair.a, v6(7), client_opts(4096), pattern(4, 100));
    let second = client.open(&mut pair.a, v6(7), client_opts(4096), pattern(5, 100));
    run(&mut pair, &mut client, &mut server, 3_000, |_, _| false);
    assert!(client.flows[&first].connected);
    assert!(!client.flows[&second].connected);
    let b = pair.b.counters();
    assert_eq!(b.accepted, 1);
    assert!(b.refusals(Refusal::PerSource) >= 1, "{b:?}");
}
