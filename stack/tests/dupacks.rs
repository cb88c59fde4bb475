//! Duplicate ACKs as Linux sends them while a hole waits: SACK blocks and a window that
//! grows with each (the `recovery` module). The stack pins their window so that smoltcp
//! counts them and resends the hole at once instead of after its 1 s timeout; ACKs
//! without SACK blocks are left as they are.

mod common;

use std::net::Ipv4Addr;

use c10m_stack::wire::{Pair, Queue, tcp_frame};
use c10m_stack::{Congestion, Event, Instant, Stack};
use common::frames::{self, CLIENT_MAC, SERVER_MAC};
use common::server_opts;
use smoltcp::wire::{EthernetFrame, Ipv4Packet, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber};

const PEER: (Ipv4Addr, u16) = (Ipv4Addr::new(198, 18, 0, 1), 40_001);
const MSS: u32 = 1460;

/// A segment from the peer to port 80: `window` unscaled, SACK-permitted on a SYN, and
/// one SACK block if given.
fn segment(
    control: TcpControl,
    seq: u32,
    ack: Option<u32>,
    window: u16,
    sack: Option<(u32, u32)>,
) -> Vec<u8> {
    let syn = control == TcpControl::Syn;
    let tcp = TcpRepr {
        src_port: PEER.1,
        dst_port: 80,
        control,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: window,
        window_scale: None,
        max_seg_size: syn.then_some(MSS as u16),
        sack_permitted: syn,
        sack_ranges: [sack, None, None],
        timestamp: None,
        payload: &[],
    };
    tcp_frame((CLIENT_MAC, PEER.0), (SERVER_MAC, Pair::SERVER), &tcp)
}

/// The data segments in `tx`: (sequence number, length).
fn data(tx: &mut Queue) -> Vec<(u32, usize)> {
    let mut out = Vec::new();
    while let Some(f) = tx.pop() {
        let Ok(eth) = EthernetFrame::new_checked(&f[..]) else {
            continue;
        };
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
            continue;
        };
        if let Ok(tcp) = TcpPacket::new_checked(ip.payload())
            && !tcp.payload().is_empty()
        {
            out.push((tcp.seq_number().0 as u32, tcp.payload().len()));
        }
    }
    out
}

/// A server that accepted one connection from [`PEER`] and sent it 8 full segments
/// (no congestion control, so all at once). Returns the stack and its first data
/// sequence number.
fn sent_eight_segments() -> (Stack, Queue, u32) {
    let mut s = Stack::new(&Pair::server_config(4), Instant::ZERO).unwrap();
    let mut opts = server_opts(64 * 1024);
    opts.socket.congestion = Congestion::None;
    s.listen(80, opts).unwrap();
    let mut tx = Queue::default();
    let t = Instant::from_millis(1);
    s.ingress(t, &frames::arp_request(Pair::SERVER), &mut tx);
    s.poll(t, &mut tx);
    while tx.pop().is_some() {} // the ARP reply
    s.ingress(
        t,
        &segment(TcpControl::Syn, 999, None, 65_535, None),
        &mut tx,
    );
    s.poll(t, &mut tx);
    let synack = tx.pop().expect("a SYN-ACK");
    let eth = EthernetFrame::new_checked(&synack[..]).unwrap();
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(tcp.syn() && tcp.ack(), "{synack:?}");
    let iss = tcp.seq_number().0 as u32;
    let first = iss.wrapping_add(1);
    let ack = segment(TcpControl::None, 1000, Some(first), 65_535, None);
    s.ingress(t, &ack, &mut tx);
    let mut conn = None;
    while let Some(ev) = s.next_event() {
        if let Event::Acceptable(l) = ev {
            conn = s.accept(l);
        }
    }
    let conn = conn.expect("accepted");
    assert_eq!(s.send(conn, &[7u8; 8 * MSS as usize]), Ok(8 * MSS as usize));
    s.poll(t, &mut tx);
    let sent = data(&mut tx);
    assert_eq!(sent.len(), 8, "{sent:?}");
    assert_eq!(sent[0], (first, MSS as usize));
    (s, tx, first)
}

/// Sends the duplicate ACKs of a peer that lost the first segment and got the next
/// five, each with a window 300 bytes larger than the one before, with SACK blocks or not; returns
/// after which one (1-based) the first segment was sent again, if it was.
fn duplicates(s: &mut Stack, tx: &mut Queue, first: u32, sack: bool) -> Option<usize> {
    for k in 1..=5u32 {
        let t = Instant::from_millis(10 + i64::from(k));
        let block = sack.then_some((first + MSS, first + MSS * (k + 1)));
        let dup = segment(
            TcpControl::None,
            1000,
            Some(first),
            20_000 + 300 * k as u16,
            block,
        );
        s.ingress(t, &dup, tx);
        s.poll(t, tx);
        if data(tx).contains(&(first, MSS as usize)) {
            return Some(k as usize);
        }
    }
    None
}

#[test]
fn duplicate_acks_with_sack_blocks_and_growing_windows_bring_a_fast_retransmit() {
    let (mut s, mut tx, first) = sent_eight_segments();
    // The first duplicate sets the pin (a window change for smoltcp), the third brings
    // its fast retransmit, as RFC 5681 says.
    assert_eq!(duplicates(&mut s, &mut tx, first, true), Some(3));
    let c = s.counters();
    assert_eq!((c.dup_acks_pinned, c.fast_retransmits_forced), (2, 1));
}

#[test]
fn without_sack_blocks_the_hole_waits_for_the_timeout() {
    let (mut s, mut tx, first) = sent_eight_segments();
    assert_eq!(duplicates(&mut s, &mut tx, first, false), None);
    assert_eq!(s.counters().dup_acks_pinned, 0);
    // smoltcp's minimum retransmission timeout: nothing before 1 s after the send.
    s.poll(Instant::from_millis(900), &mut tx);
    assert!(data(&mut tx).is_empty());
    s.poll(Instant::from_millis(1_100), &mut tx);
    assert!(data(&mut tx).contains(&(first, MSS as usize)));
}

#[test]
fn a_partial_ack_with_a_hole_still_sacked_around_resends_the_next_hole_at_once() {
    // Segments 0 and 2 of 8 lost: the peer acknowledges nothing and SACKs 1, then 3–7.
    let (mut s, mut tx, first) = sent_eight_segments();
    let seg = |i: u32| first + MSS * i;
    let mut resent = Vec::new();
    for (k, block) in [(1, 2), (1, 2), (3, 4), (3, 5), (3, 6), (3, 7)]
        .iter()
        .enumerate()
    {
        let t = Instant::from_millis(10 + k as i64);
        let window = 20_000 + 300 * k as u16;
        let dup = segment(
            TcpControl::None,
            1000,
            Some(first),
            window,
            Some((seg(block.0), seg(block.1))),
        );
        s.ingress(t, &dup, &mut tx);
        s.poll(t, &mut tx);
        resent.extend(data(&mut tx));
    }
    assert_eq!(resent, [(seg(0), MSS as usize)], "the first hole, once");
    // The resent segment 0 arrives: the peer acknowledges up to the second hole and SACKs
    // five segments beyond it. smoltcp alone would wait its timeout for segment 2.
    let t = Instant::from_millis(20);
    let partial = segment(
        TcpControl::None,
        1000,
        Some(seg(2)),
        22_000,
        Some((seg(3), seg(8))),
    );
    s.ingress(t, &partial, &mut tx);
    s.poll(t, &mut tx);
    assert_eq!(data(&mut tx), [(seg(2), MSS as usize)]);
    // One for the first hole (its third duplicate), one for the second.
    assert_eq!(s.counters().fast_retransmits_forced, 2);
}
