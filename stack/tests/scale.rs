//! 100,000 concurrent connections on the in-memory wire: every one echoes byte-exact, all
//! exist at once, then all close, and the counters agree.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};

use c10m_stack::wire::{Impairments, Pair, Side};
use c10m_stack::{ConnectOptions, State};
use common::*;

const N: usize = 100_000;

#[test]
fn hundred_thousand_connections_echo_then_close() {
    let mut pair = pair(N, Impairments::none());
    pair.b.listen(80, server_opts(256)).unwrap();
    let mut client = EchoClient::default();
    let mut server = EchoServer::default();
    let to = SocketAddrV4::new(Pair::SERVER, 80);
    for i in 0..N {
        // 25,000 connections per source address (198.19.0.0/16 is the client's, any-IP).
        let opts = ConnectOptions {
            local_addr: Some(Ipv4Addr::new(198, 19, 0, (i / 25_000) as u8)),
            local_port: Some(30_000 + (i % 25_000) as u16),
            ..client_opts(256)
        };
        client.open(&mut pair.a, to, opts, pattern(i, 100));
    }
    assert!(
        run(&mut pair, &mut client, &mut server, 120_000, |c, _| c
            .verified
            == N),
        "only {} of {N} echoes verified",
        client.verified
    );
    assert_eq!(client.connected, N);
    assert_eq!(server.accepted.len(), N);
    assert_eq!(pair.b.connections(), N, "all connections exist at once");
    assert_eq!(pair.b.counters().in_state(State::Established), N as u64);
    assert_eq!(pair.a.counters().in_state(State::Established), N as u64);
    for f in client.flows.values() {
        assert_eq!(f.received, f.payload);
    }

    let ids: Vec<_> = client.flows.keys().copied().collect();
    for c in ids {
        pair.a.close(c).unwrap();
    }
    assert!(run(&mut pair, &mut client, &mut server, 60_000, |c, s| c
        .closed
        == N
        && s.closed == N));
    let (a, b) = (pair.a.counters(), pair.b.counters());
    assert_eq!(b.syns, N as u64);
    assert_eq!(b.accepted, N as u64);
    assert_eq!(a.connected, N as u64);
    assert_eq!(
        b.closed, N as u64,
        "the server closed second: its slots are free"
    );
    assert_eq!(pair.b.connections(), 0);
    assert_eq!(
        a.in_state(State::TimeWait),
        N as u64,
        "the client closed first"
    );
    assert_eq!(
        a.resets_sent + b.resets_sent + a.resets_received + b.resets_received,
        0
    );
    assert_eq!(b.drops.iter().sum::<u64>(), 0);
    assert_eq!(server.bytes, 100 * N as u64);
    // TIME-WAIT (10 s in smoltcp) runs out on the timing wheel.
    assert!(pair.run_until(15_000, |side, s| side == Side::A && s.connections() == 0));
    assert_eq!(pair.a.counters().closed, N as u64);
    assert_eq!(
        pair.a.memory().buffers_in_use + pair.b.memory().buffers_in_use,
        0
    );
}
