//! SYN cookies: connections born from a cookie carry byte-exact streams over a lossy wire,
//! `auto` switches to cookies only when the half-open budget is full, and forged, stale
//! and replayed cookies make no connection.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};

use c10m_stack::wire::{Impairments, Pair, Queue};
use c10m_stack::{Config, Event, Instant, ListenOptions, Refusal, Stack, State, SynCookies};
use common::frames::{self, CLIENT_MAC};
use common::*;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, IpAddress, Ipv4Packet, TcpControl, TcpPacket,
    TcpRepr,
};

/// A key period of the cookies: 64 s.
const PERIOD: i64 = 64_000;

fn opts(mode: SynCookies, buf: usize) -> ListenOptions {
    ListenOptions {
        syn_cookies: mode,
        ..server_opts(buf)
    }
}

#[test]
fn cookie_born_streams_are_byte_exact_over_a_lossy_wire() {
    let imp = Impairments {
        loss: 0.05,
        duplicate: 0.02,
        reorder: 0.05,
        jitter_ms: 8,
        delay_ms: 2,
        seed: 0xc00c1e,
    };
    let mut pair = pair(16, imp);
    // No window scaling on a cookie-born connection: the window is at most 64 KiB.
    pair.b
        .listen(9, opts(SynCookies::Always, 32 * 1024))
        .unwrap();
    let mut client = EchoClient {
        close_when_done: true,
        ..EchoClient::default()
    };
    let mut server = EchoServer::default();
    let to = SocketAddrV4::new(Pair::SERVER, 9);
    let n = 3;
    for i in 0..n {
        client.open(&mut pair.a, to, client_opts(32 * 1024), pattern(i, 2 << 20));
    }
    let mut max_half_open = 0;
    let done = pair.run_until(3_600_000, |side, stack| {
        match side {
            c10m_stack::wire::Side::A => client.handle(stack),
            c10m_stack::wire::Side::B => {
                server.handle(stack);
                max_half_open = max_half_open.max(stack.counters().in_state(State::SynReceived));
            }
        }
        client.verified == n && client.closed == n
    });
    assert!(
        done,
        "{} of {n} streams complete; server {:?}; client {:?}",
        client.verified,
        pair.b.counters(),
        pair.a.counters()
    );
    for f in client.flows.values() {
        assert!(f.received == f.payload, "stream arrived byte-exact");
    }
    assert_eq!(server.bytes, (n as u64) * (2 << 20), "2 MiB each way");
    assert!(
        pair.lost > 100,
        "the wire really lost frames ({})",
        pair.lost
    );
    let c = pair.b.counters();
    assert_eq!(
        c.cookies_accepted, n as u64,
        "every connection was cookie-born"
    );
    assert_eq!(c.accepted, n as u64);
    assert!(c.cookies_sent >= n as u64);
    assert_eq!(max_half_open, 0, "no half-open state, ever");
    assert_eq!(server.accepted.len(), n);
}

#[test]
fn auto_uses_cookies_once_the_half_open_budget_is_full() {
    let budget = 8;
    let server = Config {
        max_half_open: budget,
        ..Pair::server_config(64)
    };
    let mut pair = Pair::new(&Pair::client_config(64), &server, Impairments::none());
    pair.b.listen(80, opts(SynCookies::Auto, 4096)).unwrap();
    let mut client = EchoClient::default();
    let mut server = EchoServer::default();
    let to = SocketAddrV4::new(Pair::SERVER, 80);
    // With room in the budget: an ordinary handshake.
    client.open(&mut pair.a, to, client_opts(4096), pattern(0, 3000));
    assert!(run(&mut pair, &mut client, &mut server, 10_000, |c, _| c
        .verified
        == 1));
    let c = pair.b.counters();
    assert_eq!((c.accepted, c.cookies_sent, c.cookies_accepted), (1, 0, 0));

    // A flood from spoofed sources that never answer (routed away via the gateway, where
    // nobody owns them) fills the budget.
    assert!(!pair.b.cookie_pressure(), "room in the budget: no pressure");
    let mut sink = Queue::default();
    for i in 0..budget as u16 * 3 {
        let src = (Ipv4Addr::new(198, 18, 1, (i % 250) as u8 + 1), 1000 + i);
        let syn = frames::tcp(src, (Pair::SERVER, 80), TcpControl::Syn, 7, None, b"");
        pair.b.ingress(pair.now(), &syn, &mut sink);
    }
    pair.b.poll(pair.now(), &mut sink);
    let c = pair.b.counters();
    assert_eq!(
        c.in_state(State::SynReceived),
        budget as u64,
        "the budget is full"
    );
    assert!(
        pair.b.cookie_pressure(),
        "an auto listener answers with cookies now"
    );
    assert_eq!(c.cookies_sent, 2 * budget as u64, "the rest got cookies");
    assert_eq!(c.refusals(Refusal::HalfOpen), 0, "nothing was refused");

    // New clients still connect, through cookies, while the flood's slots sit there.
    for i in 1..=5 {
        client.open(&mut pair.a, to, client_opts(4096), pattern(i, 5000));
    }
    assert!(run(&mut pair, &mut client, &mut server, 10_000, |c, _| c
        .verified
        == 6));
    let c = pair.b.counters();
    assert_eq!(c.cookies_accepted, 5);
    assert_eq!(c.accepted, 6);
    assert_eq!(c.in_state(State::SynReceived), budget as u64);
    assert_eq!(c.in_state(State::Established), 6);
    assert_eq!(c.resets_sent, 0, "no SYN was answered with a RST");
    assert_eq!(c.cookies_invalid, 0);
}

/// A frame from `src` to the server's port 80, with a 65535-byte window and the given MSS
/// option.
fn segment(
    src: (Ipv4Addr, u16),
    control: TcpControl,
    seq: u32,
    ack: Option<u32>,
    mss: Option<u16>,
    payload: &[u8],
) -> Vec<u8> {
    let dst = (Pair::SERVER, 80);
    frames::tcp_with(src, dst, control, seq, ack, (65535, mss), payload)
}

/// What the server sent in a TCP frame; panics on anything else or a bad checksum.
#[derive(Debug)]
struct Sent {
    control: TcpControl,
    seq: u32,
    ack: Option<u32>,
    window: u16,
    mss: Option<u16>,
    options: bool,
    payload: Vec<u8>,
    dst_mac: EthernetAddress,
}

fn sent(frame: &[u8]) -> Sent {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    assert_eq!(
        eth.ethertype(),
        EthernetProtocol::Ipv4,
        "a TCP frame: {frame:?}"
    );
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum());
    let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
    let (s, d) = (
        IpAddress::Ipv4(ip.src_addr()),
        IpAddress::Ipv4(ip.dst_addr()),
    );
    assert!(tcp.verify_checksum(&s, &d), "TCP checksum of {frame:?}");
    let r = TcpRepr::parse(&tcp, &s, &d, &ChecksumCapabilities::default()).unwrap();
    Sent {
        control: r.control,
        seq: r.seq_number.0 as u32,
        ack: r.ack_number.map(|a| a.0 as u32),
        window: r.window_len,
        mss: r.max_seg_size,
        options: r.window_scale.is_some() || r.sack_permitted || r.timestamp.is_some(),
        payload: r.payload.to_vec(),
        dst_mac: eth.dst_addr(),
    }
}

/// Teaches the server its gateway's MAC again (smoltcp forgets it after a minute when the
/// stack is not polled in between, as the dataplane does).
fn learn_gateway(s: &mut Stack, tx: &mut Queue, now: i64) {
    s.ingress(
        Instant::from_millis(now),
        &frames::arp_request(Pair::SERVER),
        tx,
    );
    while tx.pop().is_some() {}
}

/// A server that knows its gateway, listening on port 80 with `mode`.
fn server(mode: SynCookies) -> (Stack, Queue) {
    let mut s = Stack::new(&Pair::server_config(64), Instant::ZERO).unwrap();
    s.listen(80, opts(mode, 8192)).unwrap();
    let mut tx = Queue::default();
    learn_gateway(&mut s, &mut tx, 1);
    (s, tx)
}

/// Sends a SYN from `src` with `isn` at `now`; returns the SYN-ACK's sequence number (the
/// cookie, when the server answers with one).
fn syn_ack(s: &mut Stack, tx: &mut Queue, now: i64, src: (Ipv4Addr, u16), isn: u32) -> u32 {
    let now = Instant::from_millis(now);
    s.ingress(
        now,
        &segment(src, TcpControl::Syn, isn, None, Some(1400), b""),
        tx,
    );
    s.poll(now, tx);
    let synack = sent(&pop_tcp(tx).expect("a SYN-ACK"));
    assert!(pop_tcp(tx).is_none());
    assert_eq!(synack.control, TcpControl::Syn);
    assert_eq!(synack.ack, Some(isn.wrapping_add(1)));
    synack.seq
}

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 5);

/// The next TCP frame the server sent, skipping its ARP probes for the gateway.
fn pop_tcp(tx: &mut Queue) -> Option<Vec<u8>> {
    std::iter::from_fn(|| tx.pop()).find(|f| f.get(12..14) != Some(&[0x08, 0x06]))
}

#[test]
fn a_cookie_syn_ack_keeps_no_state_and_offers_only_the_mss() {
    let (mut s, mut tx) = server(SynCookies::Always);
    let sent_before = s.counters().tx_frames;
    let now = Instant::from_millis(10);
    s.ingress(
        now,
        &segment(
            (CLIENT, 40000),
            TcpControl::Syn,
            1000,
            None,
            Some(1400),
            b"",
        ),
        &mut tx,
    );
    let synack = sent(&tx.pop().expect("answered at once"));
    assert_eq!(synack.control, TcpControl::Syn);
    assert_eq!(synack.ack, Some(1001));
    assert_eq!(synack.mss, Some(1460), "our MSS");
    assert!(
        !synack.options,
        "no window scaling, SACK or timestamps: {synack:?}"
    );
    assert_eq!(synack.window, 8192, "the listener's receive buffer");
    assert_eq!(
        synack.dst_mac,
        EthernetAddress(CLIENT_MAC),
        "back where the SYN came from"
    );
    assert_eq!(s.connections(), 0, "no state");
    let c = s.counters();
    assert_eq!(
        (c.syns, c.cookies_sent, c.tx_frames - sent_before),
        (1, 1, 1)
    );
    assert_eq!(c.in_state(State::SynReceived), 0);
}

#[test]
fn a_returned_cookie_makes_a_translated_connection() {
    let (mut s, mut tx) = server(SynCookies::Always);
    let src = (CLIENT, 40000);
    let cookie = syn_ack(&mut s, &mut tx, 10, src, 1000);
    // The final ACK carries data too.
    let now = Instant::from_millis(20);
    s.ingress(
        now,
        &segment(
            src,
            TcpControl::Psh,
            1001,
            Some(cookie.wrapping_add(1)),
            None,
            b"hello",
        ),
        &mut tx,
    );
    assert_eq!(s.connections(), 1);
    let c = s.counters();
    assert_eq!(
        (c.cookies_accepted, c.accepted, c.cookies_invalid),
        (1, 1, 0)
    );
    assert_eq!(c.in_state(State::Established), 1);
    assert_eq!(c.in_state(State::SynReceived), 0, "never half-open");
    let l = match s.next_event() {
        Some(Event::Acceptable(l)) => l,
        e => panic!("expected Acceptable, got {e:?}"),
    };
    let conn = s.accept(l).expect("queued for accept");
    let mut buf = [0u8; 64];
    assert_eq!(s.recv(conn, &mut buf), Ok(5));
    assert_eq!(&buf[..5], b"hello");
    s.poll(now, &mut tx);
    let ack = sent(&pop_tcp(&mut tx).expect("an ACK of hello"));
    assert_eq!(ack.control, TcpControl::None);
    assert_eq!((ack.seq, ack.ack), (cookie.wrapping_add(1), Some(1006)));
    // smoltcp's own SYN-ACK went nowhere, but it counts as sent and acknowledged: its
    // retransmission timer is off, nothing is sent again.
    let now = Instant::from_millis(20 + 5_000);
    s.poll(now, &mut tx);
    assert!(pop_tcp(&mut tx).is_none(), "no retransmission");
    // The answer is in the cookie's number space.
    assert_eq!(s.send(conn, &[7u8; 3000]), Ok(3000));
    s.poll(now, &mut tx);
    let first = sent(&pop_tcp(&mut tx).expect("data"));
    assert_eq!(first.seq, cookie.wrapping_add(1));
    assert_eq!(first.ack, Some(1006));
    assert_eq!(
        first.payload.len(),
        1220,
        "the MSS the cookie carried (client said 1400)"
    );
    let second = sent(&pop_tcp(&mut tx).expect("more data"));
    assert_eq!(second.seq, cookie.wrapping_add(1 + 1220));
    // The client's acknowledgement of all of it is understood.
    while tx.pop().is_some() {}
    let acked = cookie.wrapping_add(1 + 3000);
    s.ingress(
        now,
        &segment(src, TcpControl::None, 1006, Some(acked), None, b""),
        &mut tx,
    );
    assert_eq!(s.send_room(conn), Ok(8192), "every byte acknowledged");
    // A replay of the final ACK finds the connection: no second one.
    s.ingress(
        now,
        &segment(
            src,
            TcpControl::Psh,
            1001,
            Some(cookie.wrapping_add(1)),
            None,
            b"hello",
        ),
        &mut tx,
    );
    assert_eq!(s.connections(), 1);
    assert_eq!(s.counters().cookies_accepted, 1);
    // The peer closes; so do we. Our FIN is translated too.
    s.ingress(
        now,
        &segment(src, TcpControl::Fin, 1006, Some(acked), None, b""),
        &mut tx,
    );
    s.poll(now, &mut tx);
    while tx.pop().is_some() {}
    let _ = s.close(conn);
    s.poll(now, &mut tx);
    let fin = sent(&pop_tcp(&mut tx).expect("our FIN"));
    assert_eq!(fin.control, TcpControl::Fin);
    assert_eq!(fin.seq, acked);
    s.ingress(
        now,
        &segment(
            src,
            TcpControl::None,
            1007,
            Some(acked.wrapping_add(1)),
            None,
            b"",
        ),
        &mut tx,
    );
    s.poll(now, &mut tx);
    assert_eq!(
        s.state(conn),
        Err(c10m_stack::ConnError::Closed),
        "closed cleanly"
    );
    assert_eq!(s.connections(), 0);
    // Two periods later, the same final ACK is refused: no connection, counted.
    let later = Instant::from_millis(20 + 2 * PERIOD);
    s.ingress(
        later,
        &segment(
            src,
            TcpControl::Psh,
            1001,
            Some(cookie.wrapping_add(1)),
            None,
            b"hello",
        ),
        &mut tx,
    );
    assert_eq!(s.connections(), 0);
    let c = s.counters();
    assert_eq!((c.cookies_accepted, c.cookies_invalid), (1, 1));
}

#[test]
fn forged_and_stale_cookies_are_refused_and_counted() {
    let (mut s, mut tx) = server(SynCookies::Always);
    let src = (CLIENT, 40000);
    let t = 5 * PERIOD + 100;
    let cookie = syn_ack(&mut s, &mut tx, t, src, 1000);
    let ack = |s: &mut Stack, tx: &mut Queue, at: i64, src, seq: u32, ack: u32| {
        s.ingress(
            Instant::from_millis(at),
            &segment(src, TcpControl::None, seq, Some(ack), None, b""),
            tx,
        );
    };
    let mut invalid = 0;
    // Random acknowledgement numbers.
    let mut x = 0x9e37_79b9u32;
    for _ in 0..100 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        if x == cookie.wrapping_add(1) {
            continue;
        }
        ack(&mut s, &mut tx, t, src, 1001, x);
        invalid += 1;
    }
    // The right cookie for another 4-tuple, and for another client ISN.
    ack(
        &mut s,
        &mut tx,
        t,
        (CLIENT, 40001),
        1001,
        cookie.wrapping_add(1),
    );
    ack(
        &mut s,
        &mut tx,
        t,
        (Ipv4Addr::new(198, 19, 0, 6), 40000),
        1001,
        cookie.wrapping_add(1),
    );
    ack(&mut s, &mut tx, t, src, 2001, cookie.wrapping_add(1));
    invalid += 3;
    // Two periods later it is stale.
    ack(
        &mut s,
        &mut tx,
        t + 2 * PERIOD,
        src,
        1001,
        cookie.wrapping_add(1),
    );
    invalid += 1;
    assert_eq!(s.connections(), 0);
    let c = s.counters();
    assert_eq!(c.cookies_invalid, invalid);
    assert_eq!(c.cookies_accepted, 0);
    // They took the ordinary no-connection path.
    assert_eq!(c.no_connection, invalid);
    // The right ACK in the next period (the key rotated once) still works.
    learn_gateway(&mut s, &mut tx, t + PERIOD);
    ack(
        &mut s,
        &mut tx,
        t + PERIOD,
        src,
        1001,
        cookie.wrapping_add(1),
    );
    assert_eq!(s.connections(), 1);
    assert_eq!(s.counters().cookies_accepted, 1);
}

#[test]
fn the_secret_rotates_per_period_and_on_demand() {
    let (mut s, mut tx) = server(SynCookies::Always);
    let (mut twin, mut twin_tx) = server(SynCookies::Always);
    let src = (CLIENT, 40000);
    let a = syn_ack(&mut s, &mut tx, 100, src, 1000);
    let b = syn_ack(&mut s, &mut tx, PERIOD + 100, src, 1000);
    assert_ne!(a >> 3, b >> 3, "a new period, a new key");
    let c = syn_ack(&mut s, &mut tx, PERIOD + 200, src, 1000);
    assert_eq!(b, c, "the same SYN in the same period gets the same cookie");
    s.set_cookie_secret(Instant::from_millis(PERIOD + 300), 0x0123_4567_89ab_cdef);
    let d = syn_ack(&mut s, &mut tx, PERIOD + 400, src, 1000);
    assert_eq!(b, d, "a new secret takes over in the next period");
    let e = syn_ack(&mut s, &mut tx, 2 * PERIOD + 100, src, 1000);
    let e_twin = syn_ack(&mut twin, &mut twin_tx, 2 * PERIOD + 100, src, 1000);
    assert_ne!(e, e_twin, "the new secret keys it");
    // Both stay valid: b was made before the change, e after it.
    for cookie in [b, e] {
        let at = 2 * PERIOD + 200;
        let now = Instant::from_millis(at);
        learn_gateway(&mut s, &mut tx, at);
        let seg = segment(
            src,
            TcpControl::None,
            1001,
            Some(cookie.wrapping_add(1)),
            None,
            b"",
        );
        let before = s.counters().cookies_accepted;
        s.ingress(now, &seg, &mut tx);
        assert_eq!(
            s.counters().cookies_accepted,
            before + 1,
            "cookie {cookie:#x}"
        );
        // Free the 4-tuple for the next one.
        while let Some(ev) = s.next_event() {
            if let Event::Acceptable(l) = ev {
                let conn = s.accept(l).unwrap();
                s.abort(conn).unwrap();
            }
        }
        s.poll(now, &mut tx);
        assert_eq!(s.connections(), 0);
    }
    // The twin, which kept the old secret, does not take the new secret's cookie.
    learn_gateway(&mut twin, &mut twin_tx, 2 * PERIOD + 200);
    let seg = segment(
        src,
        TcpControl::None,
        1001,
        Some(e.wrapping_add(1)),
        None,
        b"",
    );
    twin.ingress(Instant::from_millis(2 * PERIOD + 200), &seg, &mut twin_tx);
    assert_eq!(twin.counters().cookies_invalid, 1);
    assert_eq!(twin.connections(), 0);
}

#[test]
fn a_cookie_comes_back_on_a_later_segment_when_the_first_ones_are_lost() {
    let (mut s, mut tx) = server(SynCookies::Always);
    let src = (CLIENT, 40000);
    let cookie = syn_ack(&mut s, &mut tx, 10, src, 1000);
    let ack = Some(cookie.wrapping_add(1));
    let now = Instant::from_millis(20);
    // The ACK and the first two 536-byte segments were lost: the third arrives first.
    let seg = |k: u32| {
        segment(
            src,
            TcpControl::None,
            1001 + k * 536,
            ack,
            None,
            &pattern(k as usize, 536),
        )
    };
    s.ingress(now, &seg(2), &mut tx);
    assert_eq!(s.counters().cookies_accepted, 1);
    s.poll(now, &mut tx);
    let dup = sent(&pop_tcp(&mut tx).expect("an ACK for the hole"));
    assert_eq!(dup.ack, Some(1001), "still waiting for the first byte");
    for k in [0, 1] {
        s.ingress(now, &seg(k), &mut tx);
    }
    let l = match s.next_event() {
        Some(Event::Acceptable(l)) => l,
        e => panic!("expected Acceptable, got {e:?}"),
    };
    let conn = s.accept(l).unwrap();
    let mut buf = vec![0u8; 4096];
    assert_eq!(s.recv(conn, &mut buf), Ok(3 * 536));
    let want: Vec<u8> = (0..3).flat_map(|k| pattern(k, 536)).collect();
    assert!(buf[..3 * 536] == want[..], "in order, byte-exact");
    // Four segments on is too far: that one is reset like any stray segment.
    let far = segment(
        (CLIENT, 40001),
        TcpControl::None,
        1001 + 4 * 536,
        ack,
        None,
        &[0; 536],
    );
    s.ingress(now, &far, &mut tx);
    assert_eq!(s.counters().cookies_invalid, 1);
}

#[test]
fn a_cookie_needs_the_next_hop_first() {
    let mut s = Stack::new(&Pair::server_config(64), Instant::ZERO).unwrap();
    s.listen(80, opts(SynCookies::Always, 8192)).unwrap();
    let mut tx = Queue::default();
    let src = (CLIENT, 40000);
    let cookie = syn_ack(&mut s, &mut tx, 10, src, 1000);
    // The gateway's MAC is unknown: the ACK cannot be answered yet. No connection, no
    // RST; the server asks for the gateway.
    let ack = segment(
        src,
        TcpControl::Psh,
        1001,
        Some(cookie.wrapping_add(1)),
        None,
        b"x",
    );
    s.ingress(Instant::from_millis(20), &ack, &mut tx);
    assert_eq!(s.connections(), 0);
    let arp = tx.pop().expect("an ARP request");
    assert_eq!(&arp[12..14], &[0x08, 0x06]);
    assert!(tx.is_empty());
    assert_eq!(s.counters().resets_sent, 0);
    // Once it knows, the client's retransmission makes the connection.
    s.ingress(
        Instant::from_millis(30),
        &frames::arp_request(Pair::SERVER),
        &mut tx,
    );
    while tx.pop().is_some() {}
    s.ingress(Instant::from_millis(1000), &ack, &mut tx);
    assert_eq!(s.connections(), 1);
    assert_eq!(s.counters().cookies_accepted, 1);
}

#[test]
fn off_never_sends_cookies_and_ignores_them() {
    let server_cfg = Config {
        max_half_open: 1,
        ..Pair::server_config(64)
    };
    let mut s = Stack::new(&server_cfg, Instant::ZERO).unwrap();
    s.listen(80, opts(SynCookies::Off, 8192)).unwrap();
    let mut tx = Queue::default();
    let now = Instant::from_millis(5);
    for port in [40000, 40001] {
        s.ingress(
            now,
            &segment((CLIENT, port), TcpControl::Syn, 1000, None, None, b""),
            &mut tx,
        );
    }
    let c = s.counters();
    assert_eq!(c.cookies_sent, 0);
    assert_eq!(
        (c.half_open_evicted, c.refusals(Refusal::HalfOpen)),
        (1, 0),
        "beyond the budget with cookies off: the oldest half-open is evicted"
    );
    s.ingress(
        now,
        &segment((CLIENT, 40002), TcpControl::None, 1001, Some(5), None, b""),
        &mut tx,
    );
    assert_eq!(s.counters().cookies_invalid, 0, "not even checked");
}

#[test]
fn a_cookie_born_connection_takes_an_exact_rst_and_screens_a_blind_one() {
    // RFC 5961's exact-match RST test needs RCV.NXT, which the stack follows itself: for
    // a cookie-born connection it starts at the bridged SYN, not at the stack's ingress.
    let (mut s, mut tx) = server(SynCookies::Always);
    let src = (CLIENT, 40100);
    let isn = 0x00ff_fff0; // the low 16 bits wrap as data arrives
    let cookie = syn_ack(&mut s, &mut tx, 10, src, isn);
    let now = Instant::from_millis(20);
    let ack = Some(cookie.wrapping_add(1));
    s.ingress(
        now,
        &segment(src, TcpControl::Psh, isn + 1, ack, None, &[1u8; 40]),
        &mut tx,
    );
    assert_eq!(s.connections(), 1);
    // In the window but not RCV.NXT: a blind guess, ignored.
    s.ingress(
        now,
        &segment(src, TcpControl::Rst, isn + 1 + 40 + 7, ack, None, b""),
        &mut tx,
    );
    assert_eq!(s.connections(), 1, "a near-miss RST must not reset");
    assert_eq!(s.counters().resets_ignored, 1);
    // Exactly RCV.NXT: the peer really resets.
    s.ingress(
        now,
        &segment(src, TcpControl::Rst, isn + 1 + 40, ack, None, b""),
        &mut tx,
    );
    s.poll(now, &mut tx);
    assert_eq!(s.connections(), 0, "the exact RST resets the connection");
}

/// The cookie as `CookieKeys` documents it, computed outside the stack.
fn cookie_from_keys(k: c10m_stack::CookieKeys, src: (Ipv4Addr, u16), isn: u32, m: u8) -> u32 {
    use std::hash::Hasher;
    let mut h = siphasher::sip::SipHasher13::new_with_keys(k.k0, k.k1);
    h.write_u64(u64::from(u32::from(src.0)) << 32 | u64::from(u32::from(Pair::SERVER)));
    h.write_u64(u64::from(src.1) << 48 | 80 << 32 | u64::from(isn));
    h.write_u8(m);
    (h.finish() as u32 & !7) | u32::from(k.parity) << 2 | u32::from(m)
}

#[test]
fn cookie_keys_make_the_stacks_cookies_and_change_only_with_the_period() {
    let (mut s, mut tx) = server(SynCookies::Always);
    let src = (CLIENT, 41000);
    let at = 5 * PERIOD + 10;
    let keys = s.cookie_keys(Instant::from_millis(at));
    assert!(keys.parity, "period 5 is odd");
    let cookie = syn_ack(&mut s, &mut tx, at, src, 4242);
    // The SYN announced 1400: index 1 (1220).
    assert_eq!(cookie_from_keys(keys, src, 4242, 1), cookie);

    // A new secret keys the next period, not this one.
    s.set_cookie_secret(Instant::from_millis(at + 1), 99);
    assert_eq!(s.cookie_keys(Instant::from_millis(at + 2)), keys);
    let next = s.cookie_keys(Instant::from_millis(6 * PERIOD));
    assert_ne!((next.k0, next.k1), (keys.k0, keys.k1));
    assert!(!next.parity);
    let cookie = syn_ack(&mut s, &mut tx, 6 * PERIOD + 5, src, 4243);
    assert_eq!(cookie_from_keys(next, src, 4243, 1), cookie);
}

/// A client whose SYN-ACK was lost retransmits its SYN; by then the stack is under
/// pressure and the XDP program answers the retransmission with a cookie, which the
/// client takes. Its ACK reaches the half-open connection, which never sent that number:
/// smoltcp would reset a real client. The half-open gives way to the cookie's connection.
#[test]
fn a_cookie_taken_while_a_half_open_waits_makes_the_connection() {
    let (mut s, mut tx) = server(SynCookies::Auto);
    let src = (CLIENT, 42000);
    // The half-open's SYN-ACK is lost.
    let isn = half_open(&mut s, &mut tx, 10, src, 5000);

    // The program's cookie for the retransmitted SYN (MSS 1400: index 1).
    let now = Instant::from_millis(1_010);
    let cookie = cookie_from_keys(s.cookie_keys(now), src, 5000, 1);
    assert_ne!(cookie, isn);
    s.ingress(
        now,
        &segment(
            src,
            TcpControl::Psh,
            5001,
            Some(cookie.wrapping_add(1)),
            None,
            b"hi",
        ),
        &mut tx,
    );
    s.poll(now, &mut tx);
    let c = s.counters();
    assert_eq!(c.resets_sent, 0, "a real client is not reset");
    assert_eq!((c.cookies_accepted, c.accepted), (1, 1));
    assert_eq!(c.in_state(State::SynReceived), 0, "the half-open is gone");
    assert_eq!(c.in_state(State::Established), 1);
    let ack = sent(&pop_tcp(&mut tx).expect("an ACK of hi"));
    assert_eq!((ack.seq, ack.ack), (cookie.wrapping_add(1), Some(5003)));

    // An ACK for the half-open's own SYN-ACK is its handshake, not a cookie.
    let src = (CLIENT, 42001);
    let isn = half_open(&mut s, &mut tx, 2_000, src, 7000);
    s.ingress(
        Instant::from_millis(2_010),
        &segment(
            src,
            TcpControl::None,
            7001,
            Some(isn.wrapping_add(1)),
            None,
            b"",
        ),
        &mut tx,
    );
    let c = s.counters();
    assert_eq!(
        (c.cookies_accepted, c.accepted, c.cookies_invalid),
        (1, 2, 0)
    );
    assert_eq!(c.in_state(State::Established), 2);
}

/// Sends a SYN from `src` that makes a half-open connection; returns its SYN-ACK's ISN.
fn half_open(s: &mut Stack, tx: &mut Queue, now: i64, src: (Ipv4Addr, u16), isn: u32) -> u32 {
    let before = s.counters().in_state(State::SynReceived);
    let ours = syn_ack(s, tx, now, src, isn);
    assert_eq!(s.counters().in_state(State::SynReceived), before + 1);
    ours
}
