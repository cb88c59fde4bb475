//! ARP and ICMP echo, answered by smoltcp's interface with no socket.

mod common;

use c10m_stack::Instant;
use c10m_stack::wire::{Impairments, Pair, Queue, Side};
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

/// The ARP requests in `tx`: each must ask for the client's address (the gateway's, where
/// the server has one) from the server's, broadcast.
fn arp_requests_for_the_client(tx: &mut Queue) -> usize {
    let mut n = 0;
    while let Some(f) = tx.pop() {
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        assert!(eth.dst_addr().is_broadcast(), "{eth}");
        let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
        match arp {
            ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Request,
                source_protocol_addr,
                target_protocol_addr,
                ..
            } => {
                assert_eq!(source_protocol_addr, Pair::SERVER);
                assert_eq!(target_protocol_addr, Pair::CLIENT);
            }
            other => panic!("not an ARP request: {other:?}"),
        }
        n += 1;
    }
    n
}

/// The stack asks for its gateway at its first poll and every 20 s after: smoltcp
/// forgets a neighbour 60 s after hearing from its IP address, and clients behind the
/// gateway never send from the gateway's.
#[test]
fn the_gateway_is_probed_at_start_and_every_20_s() {
    let mut p = pair(16, Impairments::none());
    let mut tx = Queue::default();
    let probes_at = |p: &mut Pair, tx: &mut Queue, ms: i64| {
        p.b.poll(Instant::from_millis(ms), tx);
        arp_requests_for_the_client(tx)
    };
    assert_eq!(probes_at(&mut p, &mut tx, 0), 1);
    assert_eq!(probes_at(&mut p, &mut tx, 19_999), 0);
    assert_eq!(probes_at(&mut p, &mut tx, 20_000), 1);
    assert_eq!(probes_at(&mut p, &mut tx, 20_001), 0);
    assert_eq!(probes_at(&mut p, &mut tx, 45_000), 1);
    assert_eq!(p.b.counters().gateway_probes, 3);
    // The client has no gateway: it never probes.
    p.a.poll(Instant::from_millis(60_000), &mut tx);
    assert!(tx.is_empty());
}

/// A client behind the gateway (its source address is one the gateway routes) that
/// stays silent for 90 s gets its answer at once: the gateway's neighbour entry was kept
/// fresh, so the reply does not wait for an ARP answer.
#[test]
fn a_client_behind_the_gateway_is_answered_at_once_after_90_silent_seconds() {
    use c10m_stack::{ConnectOptions, Event};
    use std::net::{Ipv4Addr, SocketAddrV4};

    let mut p = pair(16, Impairments::none());
    p.b.listen(80, common::server_opts(1024)).unwrap();
    let opts = ConnectOptions {
        local_addr: Some(Ipv4Addr::new(198, 19, 0, 7)),
        ..common::client_opts(1024)
    };
    let c =
        p.a.connect(SocketAddrV4::new(Pair::SERVER, 80), opts)
            .unwrap();
    let mut echoed = Vec::new();
    let app = |side: Side, stack: &mut c10m_stack::Stack, echoed: &mut Vec<u8>| {
        while let Some(ev) = stack.next_event() {
            match (side, ev) {
                (Side::B, Event::Acceptable(l)) => while stack.accept(l).is_some() {},
                (Side::B, Event::Readable(s)) => {
                    let mut buf = [0u8; 64];
                    while let Ok(n @ 1..) = stack.recv(s, &mut buf) {
                        assert_eq!(stack.send(s, &buf[..n]), Ok(n));
                    }
                }
                (Side::A, Event::Readable(s)) => {
                    let mut buf = [0u8; 64];
                    while let Ok(n @ 1..) = stack.recv(s, &mut buf) {
                        echoed.extend_from_slice(&buf[..n]);
                    }
                }
                _ => {}
            }
        }
    };
    assert!(p.run_until(2_000, |side, stack| {
        app(side, stack, &mut echoed);
        stack.send(c, b"").is_ok()
    }));
    // Both stacks polled once a second, as a worker's loop polls them, nothing sent.
    for _ in 0..90 {
        p.sleep(1_000);
        p.step(&mut |side, stack| app(side, stack, &mut echoed));
    }
    assert!(p.b.counters().gateway_probes >= 4, "{:?}", p.b.counters());
    let t0 = p.now().total_millis();
    assert_eq!(p.a.send(c, b"still there?"), Ok(12));
    assert!(p.run_until(2_000, |side, stack| {
        app(side, stack, &mut echoed);
        echoed == b"still there?"
    }));
    let waited = p.now().total_millis() - t0;
    assert!(waited < 100, "the echo took {waited} ms of simulated time");
    assert_eq!(p.b.counters().neighbour_waits, 0, "the entry never lapsed");
}

/// A client on the link whose SYN comes before any ARP from it (its neighbour entry for
/// the server outlived a restart of the server, say) gets its SYN-ACK as soon as it
/// answers the server's ARP request: not a second later, when smoltcp's silence after
/// the miss ends (Linux would have sent its SYN again by then).
#[test]
fn a_syn_ack_waiting_for_arp_leaves_with_the_answer() {
    use c10m_stack::{Config, Stack};
    use smoltcp::wire::TcpControl;

    let config = Config {
        gateway: None,
        ..Pair::server_config(16)
    };
    let mut s = Stack::new(&config, Instant::ZERO).unwrap();
    s.listen(80, common::server_opts(1024)).unwrap();
    let mut tx = Queue::default();
    let t = Instant::from_millis(5);
    let syn = frames::tcp(
        (Pair::CLIENT, 40_000),
        (Pair::SERVER, 80),
        TcpControl::Syn,
        1000,
        None,
        b"",
    );
    s.ingress(t, &syn, &mut tx);
    s.poll(t, &mut tx);
    assert_eq!(arp_requests_for_the_client(&mut tx), 1, "no SYN-ACK yet");
    assert_eq!(s.counters().neighbour_waits, 1);
    s.ingress(t, &frames::arp_reply(), &mut tx);
    s.poll(t, &mut tx);
    let synack = tx.pop().expect("the SYN-ACK, in the poll after the answer");
    assert_eq!(frames::tcp_flags(&synack), Some(0x12), "SYN|ACK");
    assert_eq!(synack[..6], frames::CLIENT_MAC);
    assert!(tx.is_empty());
}
