//! Handshake, byte-exact echo and orderly close on a perfect in-memory wire.

mod common;

use std::net::SocketAddrV4;

use c10m_stack::State;
use c10m_stack::wire::{Impairments, Pair, Side};
use common::*;

#[test]
fn handshake_echo_and_orderly_close() {
    let mut pair = pair(64, Impairments::none());
    pair.b.listen(7, server_opts(4096)).unwrap();
    let mut client = EchoClient {
        close_when_done: true,
        ..EchoClient::default()
    };
    let mut server = EchoServer::default();
    let payload = pattern(1, 200_000);
    let c = client.open(
        &mut pair.a,
        SocketAddrV4::new(Pair::SERVER, 7),
        client_opts(4096),
        payload,
    );

    assert!(run(&mut pair, &mut client, &mut server, 60_000, |c, s| c
        .closed
        == 1
        && s.closed == 1));
    let flow = &client.flows[&c];
    assert_eq!(flow.received, flow.payload, "echo is byte-exact");
    assert_eq!(server.bytes, 200_000);
    assert_eq!(server.accepted.len(), 1);

    let (a, b) = (pair.a.counters(), pair.b.counters());
    assert_eq!(a.connects, 1);
    assert_eq!(a.connected, 1);
    assert_eq!(b.syns, 1);
    assert_eq!(b.accepted, 1);
    assert_eq!(
        b.resets_sent + a.resets_sent,
        0,
        "an orderly close sends no RST"
    );
    // The client closed first, so it holds TIME-WAIT; the server's slot is free already.
    assert_eq!(pair.b.connections(), 0);
    assert_eq!(a.in_state(State::TimeWait), 1);
    assert_eq!(pair.a.state(c), Ok(State::TimeWait));
    // TIME-WAIT ends on the timing wheel.
    let done = pair.run_until(20_000, |side, s| side == Side::A && s.connections() == 0);
    assert!(done, "TIME-WAIT ended");
    assert_eq!(pair.a.connections(), 0);
    assert_eq!(pair.a.counters().closed, 1);
    assert_eq!(
        pair.a.memory().buffers_in_use,
        0,
        "buffers went back to the pool"
    );
}

/// With `buffers_in_slot`, connections whose buffers are that size use the bytes beside
/// their slots and others take pools; both echo byte-exact, and a slot's bytes serve the
/// connection that reuses it.
#[test]
fn buffers_in_slots_and_in_pools_side_by_side() {
    let config = |c: c10m_stack::Config| c10m_stack::Config {
        buffers_in_slot: 2 * 512,
        ..c
    };
    let mut pair = Pair::new(
        &config(Pair::client_config(64)),
        &config(Pair::server_config(64)),
        Impairments::none(),
    );
    pair.b.listen(7, server_opts(512)).unwrap();
    pair.b.listen(8, server_opts(2048)).unwrap();
    for round in 0..2 {
        let mut client = EchoClient::default();
        let mut server = EchoServer::default();
        let mut ids = Vec::new();
        for i in 0..20 {
            let (port, buf) = if i % 2 == 0 { (7, 512) } else { (8, 2048) };
            let payload = pattern(100 * round + i, 3_000 + 97 * i);
            ids.push(client.open(
                &mut pair.a,
                SocketAddrV4::new(Pair::SERVER, port),
                client_opts(buf),
                payload,
            ));
        }
        // Every echo complete and every connection still open: ten in slots and ten in
        // 4 KiB pool chunks, on each side.
        assert!(run(&mut pair, &mut client, &mut server, 60_000, |c, _| c
            .verified
            == 20));
        for c in &ids {
            let flow = &client.flows[c];
            assert_eq!(flow.received, flow.payload, "round {round}: byte-exact");
        }
        for (side, stack) in [("client", &pair.a), ("server", &pair.b)] {
            let m = stack.memory();
            assert_eq!(
                m.buffers_in_use,
                10 * 1024 + 10 * 4096,
                "round {round}, {side}"
            );
            assert!(
                m.buffers >= 64 * 4096 && m.buffers < 2 * 64 * 4096,
                "{side}: one pool, of 4 KiB chunks: {} bytes",
                m.buffers
            );
            assert!(m.slab >= 64 * 1024, "{side}: the slots carry 1 KiB each");
        }
        for &c in &ids {
            pair.a.close(c).unwrap();
        }
        assert!(run(&mut pair, &mut client, &mut server, 120_000, |c, s| c
            .closed
            == 20
            && s.closed == 20));
        assert!(pair.run_until(30_000, |side, s| side == Side::A && s.connections() == 0));
        assert_eq!(pair.a.memory().buffers_in_use, 0);
        assert_eq!(pair.b.memory().buffers_in_use, 0);
    }
}
