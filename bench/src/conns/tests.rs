use super::*;
use crate::conns::wire::PORT_LO;
use smoltcp::wire::{EthernetFrame, IpAddress, Ipv4Packet, TcpPacket};

fn plan(count: u32) -> Plan {
    Plan {
        src_mac: [2, 0, 0xc6, 0x12, 0, 1],
        dst_mac: [2, 0, 0xc6, 0x12, 0, 2],
        net: u32::from(Ipv4Addr::new(198, 19, 0, 0)),
        target: Ipv4Addr::new(198, 18, 0, 10),
        tport: 7,
        count,
        hasher: RandomState::new(),
    }
}

/// A TxQueue that keeps every frame.
#[derive(Default)]
struct Wire(Vec<Vec<u8>>);

impl TxQueue for Wire {
    fn has_room(&self) -> bool {
        true
    }
    fn transmit<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        let mut f = vec![0u8; len];
        let r = fill(&mut f);
        self.0.push(f);
        r
    }
}

#[test]
fn tuples_and_indices_round_trip() {
    let p = plan(1_000_000);
    for i in [0, 1, PORTS - 1, PORTS, 999_999] {
        let (a, port) = p.tuple(i);
        assert_eq!(p.index(a, port), Some(i));
        assert!(port >= PORT_LO);
    }
    assert_eq!(p.tuple(0), (Ipv4Addr::new(198, 19, 0, 1), PORT_LO));
    assert_eq!(p.tuple(PORTS), (Ipv4Addr::new(198, 19, 0, 2), PORT_LO));
    assert_eq!(p.index(Ipv4Addr::new(198, 19, 0, 0), 2000), None);
    assert_eq!(p.index(Ipv4Addr::new(198, 19, 0, 1), 80), None);
    assert_eq!(p.index(Ipv4Addr::new(198, 19, 200, 1), 2000), None);
    assert_eq!(p.isn(5), p.isn(5));
    assert_ne!(p.isn(5), p.isn(6));
}

#[test]
fn segments_have_valid_checksums() {
    let p = plan(10);
    let mut w = Wire::default();
    assert!(p.send(&mut w, 3, 100, 200, Flags::Ack, b"hello"));
    let f = &w.0[0];
    assert_eq!(f.len(), 54 + 5);
    let eth = EthernetFrame::new_checked(&f[..]).unwrap();
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum(), "IP checksum");
    let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
    let (s, d) = (
        IpAddress::Ipv4(ip.src_addr()),
        IpAddress::Ipv4(ip.dst_addr()),
    );
    assert!(tcp.verify_checksum(&s, &d), "TCP checksum");
    assert!(tcp.psh() && tcp.ack() && !tcp.syn());
    assert_eq!((tcp.seq_number().0, tcp.ack_number().0), (100, 200));
    assert_eq!(tcp.payload(), b"hello");
    assert_eq!(ip.src_addr(), Ipv4Addr::new(198, 19, 0, 1));
    assert_eq!(tcp.src_port(), PORT_LO + 3);
}

/// A frame from the server to connection `i`.
fn from_server(p: &Plan, i: u32, seq: u32, ack: u32, flags: u8, data: &[u8]) -> Vec<u8> {
    let (addr, port) = p.tuple(i);
    let mut tcp = smoltcp::wire::TcpRepr {
        src_port: p.tport,
        dst_port: port,
        control: smoltcp::wire::TcpControl::None,
        seq_number: smoltcp::wire::TcpSeqNumber(seq as i32),
        ack_number: (flags & ACK != 0).then_some(smoltcp::wire::TcpSeqNumber(ack as i32)),
        window_len: 1000,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: data,
    };
    tcp.control = match flags {
        f if f & SYN != 0 => smoltcp::wire::TcpControl::Syn,
        f if f & RST != 0 => smoltcp::wire::TcpControl::Rst,
        f if f & FIN != 0 => smoltcp::wire::TcpControl::Fin,
        f if f & PSH != 0 => smoltcp::wire::TcpControl::Psh,
        _ => smoltcp::wire::TcpControl::None,
    };
    c10m_stack::wire::tcp_frame((p.dst_mac, p.target), (p.src_mac, addr), &tcp)
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

/// The flags byte of a frame the client sent.
fn flags_of(f: &[u8]) -> u8 {
    f[47]
}

fn client(count: u32) -> Client {
    Client {
        plan: plan(count),
        phase: Phase::Connect,
        established: Bits::new(count),
        gone: Bits::new(count),
        checked: Bits::new(count),
        samples: HashMap::new(),
        req_every: 2,
        hb_every: 0,
        push: None,
        timeouts: VecDeque::new(),
        backoff: Default::default(),
        timeout: Duration::from_secs(1),
        start: Instant::now(),
        scratch: Vec::new(),
        r: Report::default(),
    }
}

#[test]
fn syn_ack_is_checked_answered_and_echo_verified() {
    let mut c = client(10);
    let now = Instant::now();
    let mut w = Wire::default();
    // Wrong ACK number: ignored.
    let bad = from_server(&c.plan, 1, 5000, c.plan.isn(1), SYN | ACK, &[]);
    c.on_frame(&bad, &mut w, now);
    assert_eq!((c.r.established, c.r.bad_ack, w.0.len()), (0, 1, 0));
    // Right one: established, ACKed.
    let good = from_server(
        &c.plan,
        1,
        5000,
        c.plan.isn(1).wrapping_add(1),
        SYN | ACK,
        &[],
    );
    c.on_frame(&good, &mut w, now);
    c.on_frame(&good, &mut w, now); // a duplicate is ACKed again, counted once
    assert_eq!(c.r.established, 1);
    assert_eq!(w.0.len(), 2);
    assert_eq!(flags_of(&w.0[0]), ACK);
    // Sampled connection 2: ACK plus the request, whose echo is checked.
    let isn2 = c.plan.isn(2).wrapping_add(1);
    let sa = from_server(&c.plan, 2, 7000, isn2, SYN | ACK, &[]);
    c.on_frame(&sa, &mut w, now);
    assert_eq!(c.r.requests, 1);
    let req = w.0.last().unwrap()[54..].to_vec();
    assert_eq!(req.len(), REQ_LEN as usize);
    let echo = from_server(
        &c.plan,
        2,
        7001,
        isn2.wrapping_add(REQ_LEN),
        PSH | ACK,
        &req,
    );
    c.on_frame(&echo, &mut w, now);
    assert_eq!((c.r.requests_ok, c.r.bad_echo), (1, 0));
    assert_eq!(c.snd_nxt(2), isn2.wrapping_add(REQ_LEN));
    // A wrong echo is counted.
    let wrong = from_server(
        &c.plan,
        2,
        7017,
        isn2.wrapping_add(REQ_LEN),
        PSH | ACK,
        b"zz",
    );
    c.on_frame(&wrong, &mut w, now);
    assert_eq!(c.r.bad_echo, 1);
    // In teardown any segment is answered with an RST at its ACK number.
    c.phase = Phase::Teardown;
    let late = from_server(&c.plan, 1, 5001, 4242, ACK, &[]);
    let n = w.0.len();
    c.on_frame(&late, &mut w, now);
    let rst = &w.0[n];
    assert_eq!(flags_of(rst), RST);
    assert_eq!(
        u32::from_be_bytes([rst[38], rst[39], rst[40], rst[41]]),
        4242
    );
}

#[test]
fn bitmap_sets_once() {
    let mut b = Bits::new(130);
    assert!(b.set(129));
    assert!(!b.set(129));
    assert!(b.get(129) && !b.get(128));
}

/// The payload of the last frame the client sent.
fn payload_of(f: &[u8]) -> &[u8] {
    let eth = EthernetFrame::new_checked(f).unwrap();
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    TcpPacket::new_checked(ip.payload()).unwrap().payload()
}

/// The (seq, ack) of a frame the client sent.
fn seq_ack(f: &[u8]) -> (u32, u32) {
    let eth = EthernetFrame::new_checked(f).unwrap();
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    let t = TcpPacket::new_checked(ip.payload()).unwrap();
    (t.seq_number().0 as u32, t.ack_number().0 as u32)
}

#[test]
fn a_push_subscriber_subscribes_pings_and_counts_each_message_once() {
    let start = Instant::now();
    let mut c = client(10);
    c.push = Some(push::Push::new(10, "news", 1, "hi", 1000, 1.0, start));
    let mut w = Wire::default();
    let isn = c.plan.isn(4).wrapping_add(1);
    let sa = from_server(&c.plan, 4, 9000, isn, SYN | ACK, &[]);
    c.on_frame(&sa, &mut w, start);
    assert_eq!(c.r.established, 1);
    let sub = w.0.last().unwrap();
    assert_eq!(payload_of(sub), b"SUB news\n");
    assert_eq!(seq_ack(sub), (isn, 9001));
    // The server acknowledges the SUB: subscribed.
    let ack = from_server(&c.plan, 4, 9001, isn.wrapping_add(9), ACK, &[]);
    c.on_frame(&ack, &mut w, start);
    assert_eq!(c.push.as_ref().unwrap().c.subscribed, 1);
    // Connection 4's first PING is due 4 ms + 1 s after the start.
    let mut pinged = Vec::new();
    let est = c.established.clone_bits();
    let p = c.push.as_mut().unwrap();
    p.heartbeat(
        &c.plan,
        &mut w,
        start + Duration::from_millis(1003),
        |i| est.get(i),
        &mut pinged,
    );
    assert!(pinged.is_empty(), "not due yet");
    p.heartbeat(
        &c.plan,
        &mut w,
        start + Duration::from_millis(1005),
        |i| est.get(i),
        &mut pinged,
    );
    assert_eq!(pinged, [(4, 1)]);
    let ping = w.0.last().unwrap();
    assert_eq!(payload_of(ping), b"PING\n");
    assert_eq!(seq_ack(ping), (isn.wrapping_add(9), 9001));
    assert!(p.waiting_for(4, 1) && !p.waiting_for(4, 0));
    // PONG and a MSG in one segment, then the MSG again as new data, then a partial line.
    let data = b"PONG\nMSG news hi\n";
    let seg = from_server(&c.plan, 4, 9001, isn.wrapping_add(14), PSH | ACK, data);
    c.on_frame(&seg, &mut w, start + Duration::from_micros(1_005_250));
    let again = from_server(
        &c.plan,
        4,
        9018,
        isn.wrapping_add(14),
        PSH | ACK,
        b"MSG news hi\nMSG",
    );
    c.on_frame(&again, &mut w, start);
    assert_eq!(
        seq_ack(w.0.last().unwrap()),
        (isn.wrapping_add(14), 9018 + 12),
        "up to the last whole line"
    );
    // A retransmission of what we had changes nothing.
    c.on_frame(&seg, &mut w, start);
    let p = c.push.as_ref().unwrap();
    assert!(!p.waiting_for(4, 1));
    assert_eq!(
        (
            p.c.heartbeats_sent,
            p.c.heartbeats_ok,
            p.c.delivered,
            p.c.duplicates,
            p.c.bad_replies
        ),
        (1, 1, 1, 1, 0)
    );
    assert_eq!(p.missed(), 0);
    assert_eq!(c.snd_nxt(4), isn.wrapping_add(14));
    // The PONG came 250 µs after its PING: one round trip measured.
    assert_eq!(p.c.rtt.count(), 1);
    assert_eq!(p.c.rtt.summary().p50_us, 250);
}
