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
