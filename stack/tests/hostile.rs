//! Hostile traffic (issue 12): SYN floods from spoofed sources, refused SYNs, stray
//! segments, zero-window peers, blind in-window RSTs and SYNs (RFC 5961). Every attack is
//! checked for what the stack must not do (answer a spoofed source, reset a connection on
//! a guess) as well as for what it must still do (serve legitimate clients byte-exact).

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};

use c10m_stack::wire::{Impairments, Pair, Queue, Side};
use c10m_stack::{
    ConnId, Duration, Event, Instant, ListenOptions, Refusal, SocketOptions, Stack, State,
    SynCookies,
};
use common::frames;
use common::*;
use smoltcp::wire::{EthernetFrame, Ipv4Packet, TcpControl, TcpPacket};

const RST: u8 = 0x04;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

/// The TCP header fields of a frame the server sent: (flags, seq, ack, payload).
fn tcp_of(frame: &[u8]) -> Option<(u8, u32, u32, Vec<u8>)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.next_header() != smoltcp::wire::IpProtocol::Tcp {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    Some((
        frames::tcp_flags(frame)?,
        tcp.seq_number().0 as u32,
        tcp.ack_number().0 as u32,
        tcp.payload().to_vec(),
    ))
}

/// A server stack alone, its gateway's MAC known, listening on port 80.
fn server(max: usize, opts: ListenOptions, tweak: impl FnOnce(&mut c10m_stack::Config)) -> Stack {
    let mut config = Pair::server_config(max);
    tweak(&mut config);
    let mut s = Stack::new(&config, Instant::ZERO).unwrap();
    s.listen(80, opts).unwrap();
    let mut tx = Queue::default();
    s.ingress(Instant::ZERO, &frames::arp_request(Pair::SERVER), &mut tx);
    s.poll(Instant::ZERO, &mut tx);
    s
}

/// A spoofed source: off-link (reached through the gateway, which is `Pair`'s client) and
/// owned by no one (198.18.128.0/17), so that nothing answers what the server sends it.
/// The IPv4 address of a socket address (every tuple here is IPv4).
fn v4(a: std::net::SocketAddr) -> Ipv4Addr {
    match a.ip() {
        std::net::IpAddr::V4(a) => a,
        std::net::IpAddr::V6(a) => panic!("{a} is not IPv4"),
    }
}

fn spoofed(i: u32) -> (Ipv4Addr, u16) {
    (Ipv4Addr::from(0xc612_8000 + i), 1024 + (i % 50_000) as u16)
}

fn syn(from: (Ipv4Addr, u16), seq: u32) -> Vec<u8> {
    frames::tcp(from, (Pair::SERVER, 80), TcpControl::Syn, seq, None, b"")
}

/// Everything `tx` holds, parsed; non-TCP frames (ARP) left out.
fn drain(tx: &mut Queue) -> Vec<(u8, u32, u32, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(f) = tx.pop() {
        if let Some(t) = tcp_of(&f) {
            out.push(t);
        }
    }
    out
}

#[test]
fn spoofed_syns_expire_silently_after_the_synack_retries() {
    // Cookies off: the SYNs take half-open slots, which must expire.
    let opts = ListenOptions {
        backlog: 10_000,
        synack_retries: 3,
        syn_cookies: SynCookies::Off,
        ..ListenOptions::default()
    };
    let mut s = server(4096, opts, |_| {});
    let mut tx = Queue::default();
    let n = 1000;
    let t0 = Instant::from_millis(1);
    for i in 0..n {
        s.ingress(t0, &syn(spoofed(i), i.wrapping_mul(7919)), &mut tx);
    }
    s.poll(t0, &mut tx);
    let mut synacks = 0;
    let mut others = 0;
    let mut count = |frames: Vec<(u8, u32, u32, Vec<u8>)>| {
        for (flags, ..) in frames {
            if flags & (SYN | ACK) == SYN | ACK {
                synacks += 1;
            } else {
                others += 1;
            }
        }
    };
    count(drain(&mut tx));
    assert_eq!(s.counters().in_state(State::SynReceived), u64::from(n));
    // 2^(3+1) - 1 = 15 s after the SYN: retransmissions at 1, 3 and 7 s, given up at 15.
    // The spoofer repeating its SYNs does not extend that.
    let mut t = 1;
    while t < 14_900 {
        t += 100;
        if t % 5_000 == 1 {
            for i in 0..n {
                s.ingress(
                    Instant::from_millis(t),
                    &syn(spoofed(i), i.wrapping_mul(7919)),
                    &mut tx,
                );
            }
        }
        s.poll(Instant::from_millis(t), &mut tx);
        count(drain(&mut tx));
    }
    assert_eq!(s.counters().in_state(State::SynReceived), u64::from(n));
    assert_eq!(s.counters().half_open_expired, 0);
    while t < 16_000 {
        t += 100;
        s.poll(Instant::from_millis(t), &mut tx);
        count(drain(&mut tx));
    }
    let c = s.counters();
    assert_eq!(c.in_state(State::SynReceived), 0, "{c:?}");
    assert_eq!(s.connections(), 0);
    assert_eq!(c.half_open_expired, u64::from(n));
    assert_eq!(
        c.syns,
        u64::from(n),
        "repeated SYNs found their connections"
    );
    assert_eq!(synacks, 4 * n, "one SYN-ACK and three retransmissions each");
    assert_eq!(
        others, 0,
        "nothing else, and no RST, went to the spoofed sources"
    );
    assert_eq!(c.resets_sent, 0);
}

#[test]
fn a_full_half_open_budget_evicts_the_oldest_for_a_real_client() {
    let mut pair = pair(64, Impairments::none());
    // Cookies off: with them, a full budget is answered with cookies instead.
    let opts = ListenOptions {
        backlog: 16,
        syn_cookies: SynCookies::Off,
        ..server_opts(1024)
    };
    pair.b.listen(80, opts).unwrap();
    let mut junk = Queue::default();
    pair.b
        .ingress(Instant::ZERO, &frames::arp_request(Pair::SERVER), &mut junk);
    for i in 0..16 {
        pair.b
            .ingress(Instant::ZERO, &syn(spoofed(i), 1000), &mut junk);
    }
    pair.b.poll(Instant::ZERO, &mut junk);
    assert_eq!(pair.b.counters().in_state(State::SynReceived), 16);
    let mut client = EchoClient::default();
    let mut server = EchoServer::default();
    client.open(
        &mut pair.a,
        SocketAddrV4::new(Pair::SERVER, 80),
        client_opts(1024),
        pattern(1, 500),
    );
    assert!(run(&mut pair, &mut client, &mut server, 5_000, |c, _| c
        .verified
        == 1));
    let c = pair.b.counters();
    assert_eq!(c.half_open_evicted, 1, "{c:?}");
    assert_eq!(c.refusals(Refusal::Backlog), 0);
    assert_eq!(c.resets_sent, 0, "the evicted source was not told");
    // The oldest spoofed SYN was the one evicted: an ACK on its tuple finds no
    // connection, one on the second's does.
    let stray = |i: u32| {
        frames::tcp(
            spoofed(i),
            (Pair::SERVER, 80),
            TcpControl::None,
            1001,
            Some(1),
            b"",
        )
    };
    let t = pair.now();
    let before = pair.b.counters().no_connection;
    pair.b.ingress(t, &stray(1), &mut junk);
    assert_eq!(pair.b.counters().no_connection, before);
    pair.b.ingress(t, &stray(0), &mut junk);
    assert_eq!(pair.b.counters().no_connection, before + 1);
}

#[test]
fn the_per_source_limit_refuses_silently() {
    let opts = ListenOptions {
        max_per_source: Some(2),
        ..ListenOptions::default()
    };
    let mut s = server(64, opts, |_| {});
    let mut tx = Queue::default();
    let t = Instant::from_millis(1);
    let src = Ipv4Addr::new(198, 19, 1, 1);
    for port in 1..=3 {
        s.ingress(t, &syn((src, port), 5000), &mut tx);
    }
    s.ingress(t, &syn((Ipv4Addr::new(198, 19, 1, 2), 1), 5000), &mut tx);
    s.poll(t, &mut tx);
    let out = drain(&mut tx);
    assert_eq!(
        out.len(),
        3,
        "three SYN-ACKs and nothing for the refused SYN"
    );
    assert!(out.iter().all(|f| f.0 & (SYN | ACK) == SYN | ACK));
    assert_eq!(s.counters().refusals(Refusal::PerSource), 1);
    assert_eq!(s.connections(), 3);
    // A RST (exact: the SYN-ACK's ack) frees one of the source's two; its next SYN gets in.
    let rst = frames::tcp(
        (src, 1),
        (Pair::SERVER, 80),
        TcpControl::Rst,
        5001,
        None,
        b"",
    );
    s.ingress(t, &rst, &mut tx);
    assert_eq!(s.connections(), 2);
    s.ingress(t, &syn((src, 4), 5000), &mut tx);
    s.poll(t, &mut tx);
    assert_eq!(s.connections(), 3);
    assert_eq!(s.counters().refusals(Refusal::PerSource), 1);
    assert!(drain(&mut tx).iter().all(|f| f.0 & RST == 0));
}

#[test]
fn resets_for_stray_segments_are_rate_limited() {
    let mut s = server(16, ListenOptions::default(), |c| {
        c.rst_rate = 100;
        c.rst_burst = 5;
    });
    let mut tx = Queue::default();
    let stray = |i: u32, port: u16| {
        frames::tcp(
            spoofed(i),
            (Pair::SERVER, port),
            TcpControl::None,
            1,
            Some(1),
            b"x",
        )
    };
    let t = Instant::from_millis(1000);
    for i in 0..20 {
        // Alternately to the listening port and to a closed one; and a SYN to a closed port.
        s.ingress(t, &stray(i, if i % 2 == 0 { 80 } else { 81 }), &mut tx);
    }
    s.ingress(t, &syn(spoofed(99), 1), &mut tx); // port 80 is open: not stray
    let closed_syn = frames::tcp(
        spoofed(98),
        (Pair::SERVER, 81),
        TcpControl::Syn,
        1,
        None,
        b"",
    );
    s.ingress(t, &closed_syn, &mut tx);
    let rsts = |tx: &mut Queue| drain(tx).iter().filter(|f| f.0 & RST != 0).count();
    assert_eq!(rsts(&mut tx), 5, "the burst");
    let c = s.counters();
    assert_eq!(
        (c.resets_sent, c.resets_limited, c.no_connection),
        (5, 16, 21)
    );
    // 100 ms later: 10 more tokens, but the bucket holds 5.
    let t = Instant::from_millis(1100);
    for i in 0..20 {
        s.ingress(t, &stray(i, 81), &mut tx);
    }
    assert_eq!(rsts(&mut tx), 5);
    // 20 ms later: two tokens.
    let t = Instant::from_millis(1120);
    for i in 0..5 {
        s.ingress(t, &stray(i, 81), &mut tx);
    }
    assert_eq!(rsts(&mut tx), 2);
    assert_eq!(s.counters().resets_limited, 16 + 15 + 3);
}

/// A server that sends `total` bytes on each accepted connection, as fast as the window
/// allows.
#[derive(Default)]
struct Pusher {
    conns: Vec<ConnId>,
    sent: usize,
    closed: usize,
}

impl Pusher {
    fn handle(&mut self, s: &mut Stack, total: usize) {
        while let Some(ev) = s.next_event() {
            match ev {
                Event::Acceptable(l) => {
                    while let Some(c) = s.accept(l) {
                        self.conns.push(c);
                    }
                }
                Event::Closed(_) => self.closed += 1,
                _ => {}
            }
        }
        for &c in &self.conns {
            while self.sent < total {
                let chunk = [0x5a; 512];
                let n = (total - self.sent).min(chunk.len());
                match s.send(c, &chunk[..n]) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => self.sent += k,
                }
            }
        }
    }
}

/// A server pushing to a client that reads `per_second` bytes each second (0: never).
fn push_to_reader(per_second: usize) -> (Pair, Pusher, usize) {
    let mut pair = pair(16, Impairments::none());
    let opts = ListenOptions {
        socket: SocketOptions {
            rx_buf: 1024,
            tx_buf: 4096,
            send_timeout: Some(Duration::from_secs(5)),
            ..SocketOptions::default()
        },
        ..ListenOptions::default()
    };
    pair.b.listen(80, opts).unwrap();
    let c = pair
        .a
        .connect(SocketAddrV4::new(Pair::SERVER, 80), client_opts(1024))
        .unwrap();
    let mut pusher = Pusher::default();
    let mut read = 0;
    let mut next_read = 0;
    pair.run_until(30_000, |side, s| {
        match side {
            Side::B => pusher.handle(s, 1 << 20),
            Side::A => {
                while s.next_event().is_some() {}
                let now = s.now().total_millis() as u64;
                if per_second > 0 && now >= next_read {
                    next_read = now + 1000;
                    let mut buf = vec![0u8; per_second];
                    if let Ok(n) = s.recv(c, &mut buf) {
                        read += n;
                    }
                }
            }
        }
        false
    });
    (pair, pusher, read)
}

#[test]
fn the_send_timeout_aborts_a_zero_window_peer() {
    let (pair, pusher, read) = push_to_reader(0);
    assert_eq!(read, 0);
    let c = pair.b.counters();
    assert_eq!(c.send_timeouts, 1, "{c:?}");
    assert_eq!(c.idle_timeouts, 0);
    assert_eq!(pusher.closed, 1);
    assert_eq!(pair.b.connections(), 0);
    assert!(pusher.sent >= 1024, "the window filled before it closed");
}

#[test]
fn the_send_timeout_spares_a_slow_reader() {
    let (pair, pusher, read) = push_to_reader(300);
    let c = pair.b.counters();
    assert_eq!(c.send_timeouts, 0, "{c:?}");
    assert_eq!(pusher.closed, 0);
    assert_eq!(pair.b.connections(), 1);
    assert!(read >= 300 * 25, "the reader made progress: {read}");
}

/// xorshift64*
fn rng(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// A connection from `peer` to port 80 of `s` built by hand at `at`, so that every
/// sequence number is known: the peer's ISN is 999, and "hello" is echoed by `app` and
/// acknowledged (the peer's SND.NXT is 1005). Returns the server's SND.NXT.
fn hand_built(
    s: &mut Stack,
    app: &mut EchoServer,
    peer: (Ipv4Addr, u16),
    at: Instant,
    tx: &mut Queue,
) -> u32 {
    let to = (Pair::SERVER, 80);
    s.ingress(at, &syn(peer, 999), tx);
    s.poll(at, tx);
    let (flags, iss, ack, _) = drain(tx)[0].clone();
    assert_eq!((flags & (SYN | ACK), ack), (SYN | ACK, 1000));
    let snd = iss.wrapping_add(1);
    let hello = frames::tcp(peer, to, TcpControl::Psh, 1000, Some(snd), b"hello");
    s.ingress(at, &hello, tx);
    app.handle(s);
    s.poll(at, tx);
    let echoed: Vec<u8> = drain(tx).into_iter().flat_map(|f| f.3).collect();
    assert_eq!(echoed, b"hello");
    let snd = snd.wrapping_add(5);
    s.ingress(
        at,
        &frames::tcp(peer, to, TcpControl::None, 1005, Some(snd), b""),
        tx,
    );
    snd
}

#[test]
fn blind_rsts_and_syns_do_not_break_connections() {
    let mut s = server(64, server_opts(4096), |_| {});
    let mut tx = Queue::default();
    let peer = (GATEWAY, 40_000);
    let to = (Pair::SERVER, 80);
    let mut t = 1;
    let at = |t: u64| Instant::from_millis(t as i64);
    let mut server_app = EchoServer::default();
    let (rcv_nxt, snd) = (
        1005u32,
        hand_built(&mut s, &mut server_app, peer, at(t), &mut tx),
    );
    let data =
        |seq: u32, ack: u32, p: &[u8]| frames::tcp(peer, to, TcpControl::Psh, seq, Some(ack), p);

    // Echo connections through the wire as well, to be attacked alongside.
    let mut pair = pair(64, Impairments::none());
    pair.b.listen(80, server_opts(4096)).unwrap();
    let mut client = EchoClient::default();
    let mut server = EchoServer::default();
    for i in 0..8 {
        client.open(
            &mut pair.a,
            SocketAddrV4::new(Pair::SERVER, 80),
            client_opts(4096),
            pattern(i, 1000),
        );
    }
    assert!(run(&mut pair, &mut client, &mut server, 5_000, |c, _| c
        .verified
        == 8));
    let tuples: Vec<_> = client
        .flows
        .keys()
        .map(|&c| pair.a.tuple(c).unwrap())
        .collect();

    // 100,000 RSTs with random sequence numbers, spread over all nine connections.
    let mut r = 0x1234_5678_9abc_def1u64;
    let pt = pair.now();
    let mut junk = Queue::default();
    for i in 0..100_000u32 {
        let seq = rng(&mut r) as u32;
        if i % 9 == 0 {
            t += 1;
            s.ingress(
                at(t),
                &frames::tcp(peer, to, TcpControl::Rst, seq, None, b""),
                &mut tx,
            );
        } else {
            let k = &tuples[i as usize % tuples.len()];
            let src = (v4(k.local()), k.local_port);
            let rst = frames::tcp(src, (Pair::SERVER, 80), TcpControl::Rst, seq, None, b"");
            pair.b.ingress(pt, &rst, &mut junk);
        }
    }
    // In-window RSTs that are not exactly RCV.NXT, and blind SYNs.
    let before = s.counters();
    for d in 1..2000u32 {
        s.ingress(
            at(t),
            &frames::tcp(
                peer,
                to,
                TcpControl::Rst,
                rcv_nxt.wrapping_add(d),
                None,
                b"",
            ),
            &mut tx,
        );
    }
    for i in 0..3000u32 {
        let seq = rng(&mut r) as u32;
        s.ingress(at(t), &syn(peer, seq), &mut tx);
        let k = &tuples[i as usize % tuples.len()];
        let src = (v4(k.local()), k.local_port);
        pair.b.ingress(pt, &syn(src, seq), &mut junk);
    }
    let c = s.counters();
    assert_eq!(s.connections(), 1, "{c:?}");
    assert_eq!(c.in_state(State::Established), 1);
    assert_eq!(c.resets_ignored - before.resets_ignored, 1999);
    assert_eq!(c.resets_sent, 0);
    // Challenge ACKs, rate-limited: each is a keep-alive carrying ACK = RCV.NXT.
    let out = drain(&mut tx);
    assert!(!out.is_empty());
    assert!(
        out.len() <= c10m_stack::CHALLENGE_ACK_RATE as usize + 200,
        "{}",
        out.len()
    );
    for (flags, seq, ack, _) in &out {
        assert_eq!((flags & (ACK | RST | SYN), *ack), (ACK, rcv_nxt));
        assert_eq!(*seq, snd.wrapping_sub(1));
    }
    assert!(
        c.challenge_acks > 0 && c.challenge_acks_limited > 0,
        "{c:?}"
    );
    assert_eq!(c.challenge_acks, out.len() as u64);
    let b = pair.b.counters();
    assert_eq!(b.resets_sent, 0);
    assert_eq!(pair.b.connections(), 8, "{b:?}");

    // Both still exchange byte-exact.
    s.ingress(at(t), &data(rcv_nxt, snd, b"world"), &mut tx);
    server_app.handle(&mut s);
    s.poll(at(t), &mut tx);
    let echoed: Vec<u8> = drain(&mut tx).into_iter().flat_map(|f| f.3).collect();
    assert_eq!(echoed, b"world");
    for (&conn, f) in client.flows.iter_mut() {
        let more = pattern(conn.slot() + 100, 1000);
        f.payload.extend_from_slice(&more);
        f.sent += pair.a.send(conn, &more).unwrap();
    }
    assert!(run(&mut pair, &mut client, &mut server, 5_000, |c, _| c
        .verified
        == 16));
    assert_eq!(client.closed, 0);

    // And a RST with exactly RCV.NXT still resets (RFC 5961 §3.2).
    let rcv_nxt = rcv_nxt.wrapping_add(5);
    s.ingress(
        at(t),
        &frames::tcp(peer, to, TcpControl::Rst, rcv_nxt, None, b""),
        &mut tx,
    );
    server_app.handle(&mut s);
    s.poll(at(t), &mut tx);
    assert_eq!(s.connections(), 0);
    assert_eq!(server_app.closed, 1);
}

#[test]
fn keep_alives_and_window_probes_are_answered() {
    // The peer probes a connection as Linux does, for a keep-alive
    // and for a zero window alike: an empty segment one below RCV.NXT (RFC 9293 §3.8.4),
    // which must draw an ACK of RCV.NXT. It is not a rewound peer's ACK to move forward
    // (the `recovery` module): moved, it went unanswered and Linux's keep-alive gave up.
    let mut s = server(64, server_opts(4096), |_| {});
    let mut tx = Queue::default();
    let peer = (GATEWAY, 40_001);
    let at = |t: u64| Instant::from_millis(t as i64);
    let snd = hand_built(&mut s, &mut EchoServer::default(), peer, at(1), &mut tx);
    let probe = frames::tcp(
        peer,
        (Pair::SERVER, 80),
        TcpControl::None,
        1004,
        Some(snd),
        b"",
    );
    // Seconds apart: smoltcp answers segments below its window once a second at most.
    for t in [1_000, 2_500, 4_000] {
        s.ingress(at(t), &probe, &mut tx);
        s.poll(at(t), &mut tx);
        let out = drain(&mut tx);
        assert_eq!(out, [(ACK, snd, 1005, vec![])], "at {t} ms");
    }
    assert_eq!(s.counters().acks_realigned, 0);
    assert_eq!(s.connections(), 1);
}

#[test]
fn rcv_nxt_is_followed_through_reordering_duplicates_and_fin() {
    let mut s = server(64, server_opts(4096), |_| {});
    let mut tx = Queue::default();
    let peer = (GATEWAY, 40_001);
    let to = (Pair::SERVER, 80);
    let t = Instant::from_millis(1);
    let isn = 0xffff_ff00u32; // the sequence numbers wrap through 0
    s.ingress(t, &syn(peer, isn), &mut tx);
    s.poll(t, &mut tx);
    let snd = drain(&mut tx)[0].1.wrapping_add(1);
    let base = isn.wrapping_add(1);
    let seg = |from: u32, to_: u32, ctl: TcpControl| {
        let payload: Vec<u8> = (from..to_).map(|i| i as u8).collect();
        frames::tcp(peer, to, ctl, base.wrapping_add(from), Some(snd), &payload)
    };
    s.ingress(t, &seg(0, 0, TcpControl::None), &mut tx); // the handshake's ACK
    // 0..1000 in segments delivered out of order, with a duplicate and an overlap; never
    // more than one range ahead of RCV.NXT, the most smoltcp keeps here (see the
    // workspace's Cargo.toml).
    for &(a, b) in &[
        (300, 400),
        (0, 100),
        (0, 100),
        (100, 300),
        (250, 450),
        (500, 1000),
        (400, 500),
    ] {
        s.ingress(t, &seg(a, b, TcpControl::Psh), &mut tx);
    }
    s.ingress(t, &seg(1000, 1000, TcpControl::Fin), &mut tx);
    let mut app = EchoServer::default();
    app.handle(&mut s);
    s.poll(t, &mut tx);
    let echoed: Vec<u8> = drain(&mut tx).into_iter().flat_map(|f| f.3).collect();
    assert_eq!(echoed, (0..1000u32).map(|i| i as u8).collect::<Vec<_>>());
    assert_eq!(s.connections(), 1);
    // RCV.NXT is base + 1000 + 1 (the FIN): RSTs one either side are ignored.
    let rcv_nxt = base.wrapping_add(1001);
    for seq in [
        rcv_nxt.wrapping_sub(1),
        rcv_nxt.wrapping_add(1),
        rcv_nxt.wrapping_add(1 << 16),
    ] {
        s.ingress(
            t,
            &frames::tcp(peer, to, TcpControl::Rst, seq, None, b""),
            &mut tx,
        );
        assert_eq!(
            s.connections(),
            1,
            "RST at {seq:#x} for RCV.NXT {rcv_nxt:#x}"
        );
    }
    // The first two by the stack's test of the low 16 bits; the third matches those, and
    // smoltcp dropped it as outside its window.
    assert_eq!(s.counters().resets_ignored, 2);
    s.ingress(
        t,
        &frames::tcp(peer, to, TcpControl::Rst, rcv_nxt, None, b""),
        &mut tx,
    );
    app.handle(&mut s);
    assert_eq!(s.connections(), 0, "the exact RST resets");
}
