//! The reflector's answers, each parsed back with smoltcp with checksums verified.

use super::*;
use c10m_stack::wire::Queue;

const US: [u8; 6] = [0x02, 0, 0xc6, 0x12, 0, 0x02];
const PEER: [u8; 6] = [0x02, 0, 0xc6, 0x12, 0, 0x01];
const ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const KEYS: CookieKeys = CookieKeys {
    k0: 1,
    k1: 2,
    parity: false,
};

fn reflector() -> Reflector {
    let http = c10m_apps::services::http::ok_response(13, false, false);
    Reflector::new(US, ADDR, 80, KEYS, http)
}

/// An Ethernet/IPv4/TCP frame from the client's port 40000 to port 80.
fn segment(control: TcpControl, seq: u32, ack: Option<u32>, payload: &[u8]) -> Vec<u8> {
    frame_to(ADDR, 80, control, seq, ack, payload)
}

fn frame_to(
    dst: Ipv4Addr,
    port: u16,
    control: TcpControl,
    seq: u32,
    ack: Option<u32>,
    payload: &[u8],
) -> Vec<u8> {
    let tcp = TcpRepr {
        src_port: 40000,
        dst_port: port,
        control,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: 1000,
        window_scale: (control == TcpControl::Syn).then_some(7),
        max_seg_size: (control == TcpControl::Syn).then_some(1460),
        sack_permitted: control == TcpControl::Syn,
        sack_ranges: [None; 3],
        timestamp: None,
        payload,
    };
    let ip = Ipv4Repr {
        src_addr: CLIENT,
        dst_addr: dst,
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    let mut buf = vec![0u8; ETH + ip.buffer_len() + tcp.buffer_len()];
    let caps = ChecksumCapabilities::default();
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    EthernetRepr {
        src_addr: EthernetAddress(PEER),
        dst_addr: EthernetAddress(US),
        ethertype: EthernetProtocol::Ipv4,
    }
    .emit(&mut f);
    let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
    ip.emit(&mut p, &caps);
    let mut t = TcpPacket::new_unchecked(p.payload_mut());
    tcp.emit(
        &mut t,
        &IpAddress::Ipv4(CLIENT),
        &IpAddress::Ipv4(dst),
        &caps,
    );
    buf
}

/// What came back, parsed with every checksum verified.
struct Out {
    control: TcpControl,
    seq: u32,
    ack: Option<u32>,
    mss: Option<u16>,
    window_scale: Option<u8>,
    sack: bool,
    payload: Vec<u8>,
}

fn parse(frame: &[u8]) -> Out {
    let caps = ChecksumCapabilities::default();
    let eth = EthernetFrame::new_checked(frame).expect("ethernet");
    assert_eq!(eth.src_addr(), EthernetAddress(US));
    assert_eq!(eth.dst_addr(), EthernetAddress(PEER));
    let p = Ipv4Packet::new_checked(eth.payload()).expect("ipv4");
    let ip = Ipv4Repr::parse(&p, &caps).expect("ipv4 header and checksum");
    assert_eq!((ip.src_addr, ip.dst_addr), (ADDR, CLIENT));
    assert_eq!(
        frame.len(),
        ETH + p.total_len() as usize,
        "no padding, no slack"
    );
    let t = TcpPacket::new_checked(p.payload()).expect("tcp");
    let (s, d) = (IpAddress::Ipv4(ADDR), IpAddress::Ipv4(CLIENT));
    let tcp = TcpRepr::parse(&t, &s, &d, &caps).expect("tcp header and checksum");
    assert_eq!((tcp.src_port, tcp.dst_port), (80, 40000));
    assert!(t.ack(), "every answer acknowledges");
    Out {
        control: tcp.control,
        seq: tcp.seq_number.0 as u32,
        ack: tcp.ack_number.map(|a| a.0 as u32),
        mss: tcp.max_seg_size,
        window_scale: tcp.window_scale,
        sack: tcp.sack_permitted,
        payload: tcp.payload.to_vec(),
    }
}

/// Answers `frame`; returns the one frame sent, if any.
fn answer(r: &mut Reflector, frame: &[u8]) -> Option<Vec<u8>> {
    let mut q = Queue::default();
    r.answer(frame, &mut q);
    let out = q.pop();
    assert!(q.pop().is_none(), "at most one frame per frame");
    out
}

#[test]
fn a_syn_gets_a_syn_ack_keyed_by_the_cookie_hash() {
    let mut r = reflector();
    let syn = segment(TcpControl::Syn, 1000, None, b"");
    let out = parse(&answer(&mut r, &syn).expect("a SYN-ACK"));
    assert_eq!(out.control, TcpControl::Syn);
    assert_eq!(out.ack, Some(1001));
    let t = FourTuple {
        remote_addr: c10m_stack::addr_v4(CLIENT),
        local_addr: c10m_stack::addr_v4(ADDR),
        remote_port: 40000,
        local_port: 80,
    };
    assert_eq!(out.seq, KEYS.cookie(&t, 1000, 3));
    assert_eq!(out.mss, Some(1460));
    assert_eq!((out.window_scale, out.sack), (None, false), "MSS only");
    // Stateless and deterministic: the same SYN, the same ISN; another key, another.
    let again = parse(&answer(&mut r, &syn).unwrap());
    assert_eq!(again.seq, out.seq);
    let other = CookieKeys { k0: 3, ..KEYS };
    let mut r2 = Reflector::new(US, ADDR, 80, other, Vec::from(&b"x"[..]));
    assert_ne!(parse(&answer(&mut r2, &syn).unwrap()).seq, out.seq);
    assert_eq!(r.counters.syn_acks, 2);
}

#[test]
fn an_http_request_gets_the_http_services_response_in_one_segment() {
    let mut r = reflector();
    let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let out = parse(&answer(&mut r, &segment(TcpControl::Psh, 5000, Some(777), req)).unwrap());
    assert_eq!(out.control, TcpControl::Psh);
    assert_eq!(
        out.seq, 777,
        "our sequence number is what the peer acknowledged"
    );
    assert_eq!(
        out.ack,
        Some(5000 + req.len() as u32),
        "the ACK is piggybacked"
    );
    let want = c10m_apps::services::http::ok_response(13, false, false);
    assert_eq!(out.payload, want);
    assert!(out.payload.ends_with(b"\r\n\r\nHello, World!"));
    // Two pipelined requests in one segment: two responses in one segment.
    let two = [&req[..], &req[..]].concat();
    let out = parse(&answer(&mut r, &segment(TcpControl::None, 9, Some(1), &two)).unwrap());
    assert_eq!(out.payload, [&want[..], &want[..]].concat());
    assert_eq!((r.counters.responses, r.counters.http_responses), (2, 3));
    assert_eq!(r.counters.echoed_bytes, 0);
}

#[test]
fn anything_else_is_echoed_byte_for_byte() {
    let mut r = reflector();
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
    let out = parse(
        &answer(
            &mut r,
            &segment(TcpControl::Psh, u32::MAX - 10, Some(3), &data),
        )
        .unwrap(),
    );
    assert_eq!(out.payload, data);
    assert_eq!(out.ack, Some((u32::MAX - 10).wrapping_add(1000)), "wraps");
    // Lower-case "get" and a request line without the version are not HTTP.
    for not_http in [
        &b"get / HTTP/1.1\r\n\r\n"[..],
        b"GET /\r\n\r\n",
        b" HTTP/1.1",
    ] {
        let out = parse(&answer(&mut r, &segment(TcpControl::Psh, 1, Some(1), not_http)).unwrap());
        assert_eq!(out.payload, not_http);
    }
    assert_eq!(r.counters.http_responses, 0);
}

#[test]
fn a_fin_gets_a_fin_ack_and_rst_and_pure_acks_get_nothing() {
    let mut r = reflector();
    let out = parse(&answer(&mut r, &segment(TcpControl::Fin, 100, Some(200), b"")).unwrap());
    assert_eq!(out.control, TcpControl::Fin);
    assert_eq!(
        (out.seq, out.ack),
        (200, Some(101)),
        "the FIN takes one number"
    );
    assert!(out.payload.is_empty());
    // A FIN with an echo request on it: the echo and our FIN together.
    let out = parse(&answer(&mut r, &segment(TcpControl::Fin, 100, Some(200), b"bye")).unwrap());
    assert_eq!((out.control, out.ack), (TcpControl::Fin, Some(104)));
    assert_eq!(out.payload, b"bye");
    assert!(answer(&mut r, &segment(TcpControl::Rst, 1, None, b"")).is_none());
    assert!(answer(&mut r, &segment(TcpControl::Rst, 1, Some(2), b"")).is_none());
    assert!(answer(&mut r, &segment(TcpControl::None, 1, Some(2), b"")).is_none());
    // Data without ACK is not a segment of a synchronized connection.
    assert!(answer(&mut r, &segment(TcpControl::None, 1, None, b"x")).is_none());
    let c = r.counters;
    assert_eq!((c.fin_acks, c.resets, c.acks, c.ignored), (2, 2, 1, 1));
    assert_eq!(c.frames, 6);
}

#[test]
fn malformed_foreign_and_corrupted_frames_are_dropped_or_ignored() {
    let mut r = reflector();
    let mut bad = segment(TcpControl::Psh, 1, Some(1), b"hello");
    let last = bad.len() - 1;
    bad[last] ^= 0xff; // payload changed, checksum not
    assert!(answer(&mut r, &bad).is_none());
    let mut bad_ip = segment(TcpControl::Psh, 1, Some(1), b"hello");
    bad_ip[ETH + 8] = 3; // TTL changed, header checksum not
    assert!(answer(&mut r, &bad_ip).is_none());
    assert!(answer(&mut r, &bad[..30]).is_none(), "truncated");
    assert!(answer(&mut r, &[]).is_none());
    assert_eq!(r.counters.dropped, 4);
    let other_port = frame_to(ADDR, 81, TcpControl::Syn, 1, None, b"");
    let other_addr = frame_to(
        Ipv4Addr::new(198, 18, 0, 11),
        80,
        TcpControl::Syn,
        1,
        None,
        b"",
    );
    assert!(answer(&mut r, &other_port).is_none());
    assert!(answer(&mut r, &other_addr).is_none());
    assert_eq!(r.counters.ignored, 2);
    assert_eq!(r.counters.syn_acks, 0);
}

fn arp(op: ArpOperation, target: Ipv4Addr) -> Vec<u8> {
    let repr = ArpRepr::EthernetIpv4 {
        operation: op,
        source_hardware_addr: EthernetAddress(PEER),
        source_protocol_addr: CLIENT,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    let mut buf = vec![0u8; ETH + repr.buffer_len()];
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    EthernetRepr {
        src_addr: EthernetAddress(PEER),
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    }
    .emit(&mut f);
    repr.emit(&mut ArpPacket::new_unchecked(f.payload_mut()));
    buf
}

#[test]
fn arp_requests_for_our_address_are_answered() {
    let mut r = reflector();
    let reply = answer(&mut r, &arp(ArpOperation::Request, ADDR)).expect("an ARP reply");
    let eth = EthernetFrame::new_checked(&reply[..]).unwrap();
    assert_eq!(eth.dst_addr(), EthernetAddress(PEER));
    let repr = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
    assert_eq!(
        repr,
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: EthernetAddress(US),
            source_protocol_addr: ADDR,
            target_hardware_addr: EthernetAddress(PEER),
            target_protocol_addr: CLIENT,
        }
    );
    assert!(answer(&mut r, &arp(ArpOperation::Request, CLIENT)).is_none());
    assert!(answer(&mut r, &arp(ArpOperation::Reply, ADDR)).is_none());
    assert_eq!((r.counters.arp_replies, r.counters.ignored), (1, 2));
}

#[test]
fn a_full_transmit_queue_is_counted_not_overrun() {
    let mut r = reflector();
    let mut q = Queue::with_limit(0);
    r.answer(&segment(TcpControl::Syn, 1, None, b""), &mut q);
    assert!(q.pop().is_none());
    assert_eq!(q.overflows, 0, "has_room was asked first");
    assert_eq!(r.counters.no_room, 1);
}

#[test]
fn http_requests_are_counted_by_their_heads() {
    assert_eq!(http_requests(b"GET / HTTP/1.1\r\n\r\n"), Some(1));
    assert_eq!(
        http_requests(b"HEAD /x HTTP/1.0\r\nA: b\r\n\r\nGET / HTTP/1.1\r\n\r\n"),
        Some(2)
    );
    assert_eq!(
        http_requests(b"GET / HTTP/1.1\r\nHost: x\r\n"),
        Some(1),
        "a head in pieces"
    );
    assert_eq!(http_requests(b"abc"), None);
    assert_eq!(http_requests(b""), None);
}
