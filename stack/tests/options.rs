//! TCP options and congestion control between two stacks: window scaling for buffers
//! above 64 KiB (RFC 7323 §2), timestamps echoed (RFC 7323 §3), SACK-permitted answered
//! (RFC 2018), and the congestion controller chosen per connection limiting the first
//! flight (RFC 5681 §3.1) where `none` fills the peer's window.

mod common;

use std::net::SocketAddrV4;

use c10m_stack::wire::{Impairments, Pair, Side};
use c10m_stack::{Congestion, CongestionError, ConnId, Event, Instant, Stack};
use common::*;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{EthernetFrame, IpAddress, Ipv4Packet, TcpControl, TcpPacket, TcpRepr};

/// The TCP header fields a test looks at, of a captured Ethernet frame.
#[derive(Debug, Clone, Copy)]
struct Seg {
    from: Side,
    at: Instant,
    syn: bool,
    ack: bool,
    payload: usize,
    window_scale: Option<u8>,
    sack_permitted: bool,
    timestamp: Option<(u32, u32)>,
}

fn segments(pair: &Pair) -> Vec<Seg> {
    let mut out = Vec::new();
    for (at, from, frame) in pair.capture.as_deref().unwrap_or_default() {
        let Ok(eth) = EthernetFrame::new_checked(&frame[..]) else {
            continue;
        };
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
            continue;
        };
        let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else {
            continue;
        };
        let (src, dst) = (
            IpAddress::Ipv4(ip.src_addr()),
            IpAddress::Ipv4(ip.dst_addr()),
        );
        let repr = TcpRepr::parse(&tcp, &src, &dst, &ChecksumCapabilities::ignored())
            .expect("the stacks emit well-formed segments");
        out.push(Seg {
            from: *from,
            at: *at,
            syn: repr.control == TcpControl::Syn,
            ack: repr.ack_number.is_some(),
            payload: repr.payload.len(),
            window_scale: repr.window_scale,
            sack_permitted: repr.sack_permitted,
            timestamp: repr.timestamp.map(|t| (t.tsval, t.tsecr)),
        });
    }
    out
}

fn accept_one(stack: &mut Stack, server: &mut Option<ConnId>) {
    while let Some(ev) = stack.next_event() {
        if let Event::Acceptable(l) = ev {
            while let Some(c) = stack.accept(l) {
                *server = Some(c);
            }
        }
    }
}

#[test]
fn a_one_mib_window_is_scaled_and_timestamps_are_echoed() {
    const MIB: usize = 1 << 20;
    let mut pair = pair(4, Impairments::none());
    pair.capture = Some(Vec::new());
    pair.b.listen(9, server_opts(MIB)).unwrap();
    let c = pair
        .a
        .connect(SocketAddrV4::new(Pair::SERVER, 9), client_opts(MIB))
        .unwrap();
    // Not quite 1 MiB: with a shift of 5 the window is counted in 32-byte units, so the
    // last few bytes of a full buffer cannot be advertised.
    let data = pattern(1, MIB - 4096);
    let mut sent = 0;
    let mut server = None;
    // The server application accepts but does not read: everything the client gets
    // acknowledged sits in the server's receive buffer, which only a window above
    // 64 KiB (so, scaled) lets past 65,535 bytes.
    let acked = pair.run_until(60_000, |side, stack| match side {
        Side::A => {
            while let Some(_ev) = stack.next_event() {}
            if sent < data.len() {
                sent += stack.send(c, &data[sent..]).unwrap_or(0);
            }
            sent == data.len() && stack.send_room(c) == Ok(MIB)
        }
        Side::B => {
            accept_one(stack, &mut server);
            false
        }
    });
    assert!(
        acked,
        "1 MiB acknowledged without the server reading ({} of {sent} still queued)",
        MIB - pair.a.send_room(c).unwrap_or(0)
    );
    let server = server.expect("accepted");
    let mut got = vec![0u8; MIB];
    let n = pair.b.recv(server, &mut got).unwrap();
    assert_eq!(n, data.len(), "it all waited in one receive buffer");
    assert!(got[..n] == data[..], "byte-exact");

    let segs = segments(&pair);
    let syn = segs.iter().find(|s| s.syn && !s.ack).expect("SYN");
    let synack = segs.iter().find(|s| s.syn && s.ack).expect("SYN-ACK");
    // 1 MiB = 2^20: smoltcp's shift is log2(capacity) + 1 - 16 = 5 (RFC 7323 §2.3).
    assert_eq!(syn.window_scale, Some(5));
    assert_eq!(synack.window_scale, Some(5), "a listener answers the offer");
    assert!(syn.sack_permitted && synack.sack_permitted);
    let (syn_val, _) = syn.timestamp.expect("the SYN offers timestamps");
    let (_, synack_ecr) = synack.timestamp.expect("the SYN-ACK answers them");
    assert_eq!(synack_ecr, syn_val, "TSecr echoes the SYN's TSval");
    let data_segs: Vec<_> = segs
        .iter()
        .filter(|s| s.from == Side::A && s.payload > 0)
        .collect();
    assert!(data_segs.len() > 45, "{} data segments", data_segs.len());
    assert!(
        data_segs.iter().all(|s| s.timestamp.is_some()),
        "every segment carries the option"
    );
    // TSval follows the stack's clock: later segments carry later values.
    let (first, last) = (data_segs[0], data_segs[data_segs.len() - 1]);
    let ticks = last
        .timestamp
        .unwrap()
        .0
        .wrapping_sub(first.timestamp.unwrap().0);
    assert_eq!(
        i64::from(ticks),
        (last.at - first.at).total_millis() as i64,
        "one tick per millisecond"
    );
}

/// Data segments the client sends before the first ACK for data can be back, with a
/// 10 ms one-way delay.
fn first_flight(congestion: Congestion) -> usize {
    let imp = Impairments {
        delay_ms: 10,
        ..Impairments::none()
    };
    let mut pair = pair(4, imp);
    pair.capture = Some(Vec::new());
    pair.b.listen(9, server_opts(64 * 1024)).unwrap();
    let mut opts = client_opts(64 * 1024);
    opts.socket.congestion = congestion;
    let c = pair
        .a
        .connect(SocketAddrV4::new(Pair::SERVER, 9), opts)
        .unwrap();
    let data = pattern(2, 64 * 1024);
    let mut sent = 0;
    let mut server = None;
    pair.run_until(2_000, |side, stack| match side {
        Side::A => {
            while let Some(_ev) = stack.next_event() {}
            if sent < data.len() {
                sent += stack.send(c, &data[sent..]).unwrap_or(0);
            }
            false
        }
        Side::B => {
            accept_one(stack, &mut server);
            if let Some(s) = server {
                let mut buf = [0u8; 4096];
                while let Ok(1..) = stack.recv(s, &mut buf) {}
            }
            false
        }
    });
    let segs = segments(&pair);
    let start = segs
        .iter()
        .find(|s| s.from == Side::A && s.payload > 0)
        .expect("data sent")
        .at;
    // An ACK for the first data segment is back 20 ms after it left.
    segs.iter()
        .filter(|s| s.from == Side::A && s.payload > 0 && (s.at - start).total_millis() < 20)
        .count()
}

/// The controllers in this build: CUBIC only with the `cubic` feature.
fn controllers() -> Vec<Congestion> {
    vec![
        Congestion::Reno,
        Congestion::None,
        #[cfg(feature = "cubic")]
        Congestion::Cubic,
    ]
}

#[test]
fn congestion_control_limits_the_first_flight() {
    for c in controllers() {
        let sent = first_flight(c);
        if c == Congestion::None {
            // Without a controller the client fills the 64 KiB window at once.
            assert!(
                sent >= 40,
                "none sent {sent} segments in the first round trip"
            );
        } else {
            // A controller starts from a small window (smoltcp: two 1,024-byte
            // "segments", then the connection's MSS).
            assert!(
                sent <= 4,
                "{c} sent {sent} segments in the first round trip"
            );
        }
    }
}

#[test]
fn congestion_names_parse() {
    for c in controllers() {
        assert_eq!(c.name().parse::<Congestion>(), Ok(c));
    }
    assert!(matches!(
        "bbr".parse::<Congestion>(),
        Err(CongestionError::Unknown(_))
    ));
    #[cfg(not(feature = "cubic"))]
    assert_eq!(
        "cubic".parse::<Congestion>(),
        Err(CongestionError::NotBuilt)
    );
    assert_eq!(
        c10m_stack::SocketOptions::default().congestion,
        Congestion::Reno,
        "Reno by default"
    );
}

/// Echo streams over a wire losing 5% of frames (and duplicating and reordering some), the
/// scenario of `cookies.rs`'s lossy stream test without cookies, complete byte-exact with
/// every controller, with 4 KiB and 32 KiB buffers (4 KiB only without a controller), over
/// 20 seeds each. With a controller
/// they used to stall until the send timeout (in 9 to 16 runs of 20) on two smoltcp
/// defects the stack works around (the `recovery` module): bare ACKs sent from behind the
/// peer's window after a retransmission timeout, and a zero window taken while the
/// retransmission timer ran, which leaves data queued and no timer.
#[test]
fn controlled_streams_survive_loss() {
    let (mut realigned, mut probes) = (0, 0);
    for congestion in controllers() {
        for buf in [4096, 32 * 1024] {
            if congestion == Congestion::None && buf > 4096 {
                // Without a controller smoltcp floods a 32 KiB window, and with one
                // out-of-order range per connection (see the workspace's Cargo.toml) most
                // of a lossy flight is dropped and waits for timeouts: such streams
                // complete, but about 25 times slower (and past the send timeout).
                continue;
            }
            for seed in 1..=20u64 {
                let imp = Impairments {
                    loss: 0.05,
                    duplicate: 0.02,
                    reorder: 0.05,
                    jitter_ms: 8,
                    delay_ms: 2,
                    seed: seed * 7919,
                };
                let mut pair = pair(16, imp);
                let mut lopts = server_opts(buf);
                lopts.socket.congestion = congestion;
                pair.b.listen(9, lopts).unwrap();
                let mut client = EchoClient {
                    close_when_done: true,
                    ..EchoClient::default()
                };
                let mut server = EchoServer::default();
                let to = SocketAddrV4::new(Pair::SERVER, 9);
                let mut copts = client_opts(buf);
                copts.socket.congestion = congestion;
                for i in 0..3 {
                    client.open(&mut pair.a, to, copts, pattern(i, 1 << 20));
                }
                let done = run(&mut pair, &mut client, &mut server, 3_600_000, |c, _| {
                    c.verified == 3 && c.closed == 3
                });
                let (a, b) = (pair.a.counters(), pair.b.counters());
                assert!(
                    done,
                    "{congestion}, {buf} B, seed {seed}: {} of 3 streams complete, send timeouts {} / {}",
                    client.verified, a.send_timeouts, b.send_timeouts
                );
                realigned += a.acks_realigned + b.acks_realigned;
                probes += a.window_probes + b.window_probes;
            }
        }
    }
    // Both workarounds were needed somewhere in these runs (seeds chosen so).
    assert!(realigned > 0, "no stranded ACK moved");
    assert!(probes > 0, "no stalled connection probed");
}

/// Connects with `client_ts` and a listener with `server_ts`, sends 10 bytes, and returns
/// the segments on the wire.
fn handshake_with_timestamps(client_ts: bool, server_ts: bool) -> Vec<Seg> {
    let mut pair = pair(4, Impairments::none());
    pair.capture = Some(Vec::new());
    let mut listen = server_opts(4096);
    listen.socket.timestamps = server_ts;
    pair.b.listen(9, listen).unwrap();
    let mut connect = client_opts(4096);
    connect.socket.timestamps = client_ts;
    let c = pair
        .a
        .connect(SocketAddrV4::new(Pair::SERVER, 9), connect)
        .unwrap();
    let mut server = None;
    let mut sent = false;
    assert!(pair.run_until(5_000, |side, stack| match side {
        Side::A => {
            while stack.next_event().is_some() {}
            if !sent {
                sent = stack.send(c, b"0123456789") == Ok(10);
            }
            false
        }
        Side::B => {
            accept_one(stack, &mut server);
            let mut buf = [0u8; 16];
            server.is_some_and(|s| stack.recv(s, &mut buf) == Ok(10))
        }
    }));
    segments(&pair)
}

#[test]
fn timestamps_can_be_turned_off_on_either_side() {
    let on = handshake_with_timestamps(true, true);
    assert!(on.iter().all(|s| s.timestamp.is_some()), "{on:?}");
    // The server does not answer the offer: no segment after the SYN carries them.
    let server_off = handshake_with_timestamps(true, false);
    let syn = server_off.iter().find(|s| s.syn && !s.ack).unwrap();
    assert!(syn.timestamp.is_some(), "the client still offers them");
    assert!(
        server_off
            .iter()
            .filter(|s| !s.syn || s.ack)
            .all(|s| s.timestamp.is_none()),
        "{server_off:?}"
    );
    // The client does not offer them: none at all.
    let client_off = handshake_with_timestamps(false, true);
    assert!(
        client_off.iter().all(|s| s.timestamp.is_none()),
        "{client_off:?}"
    );
    assert!(client_off.iter().any(|s| s.payload == 10), "the data went");
}
