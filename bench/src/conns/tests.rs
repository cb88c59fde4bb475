use super::*;

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
    assert!(p.send(&mut w, 3, 100, 200, PSH | ACK, b"hello"));
    let f = &w.0[0];
    assert_eq!(f.len(), 54 + 5);
    assert_eq!(fold(sum16(&f[14..34], 0)), 0xffff, "IP checksum");
    let mut pseudo = [0u8; 12];
    pseudo[0..8].copy_from_slice(&f[26..34]);
    pseudo[9] = 6;
    pseudo[10..12].copy_from_slice(&((f.len() - 34) as u16).to_be_bytes());
    assert_eq!(
        fold(sum16(&f[34..], sum16(&pseudo, 0))),
        0xffff,
        "TCP checksum"
    );
    assert_eq!(&f[34 + 20..], b"hello");
}

/// A frame from the server to connection `i` (made by swapping a client frame).
fn from_server(p: &Plan, i: u32, seq: u32, ack: u32, flags: u8, data: &[u8]) -> Vec<u8> {
    let mut w = Wire::default();
    p.send(&mut w, i, seq, ack, flags, data);
    let mut f = w.0.remove(0);
    let (src, dst) = (f[26..30].to_vec(), f[30..34].to_vec());
    f[26..30].copy_from_slice(&dst);
    f[30..34].copy_from_slice(&src);
    let (sp, dp) = (f[34..36].to_vec(), f[36..38].to_vec());
    f[34..36].copy_from_slice(&dp);
    f[36..38].copy_from_slice(&sp);
    f
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
        timeouts: VecDeque::new(),
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
    assert_eq!(w.0[0][47], ACK);
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
    assert_eq!(rst[47], RST);
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
