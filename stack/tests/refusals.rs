//! What happens to segments and connections the stack will not take: RST for closed
//! ports and stray segments; backlog and slot exhaustion drop new SYNs silently (no
//! backscatter) while established ones keep working.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};

use c10m_stack::wire::{Impairments, Pair, Queue};
use c10m_stack::{Instant, ListenOptions, Refusal, SocketOptions, SynCookies};
use common::frames::{self, tcp_flags};
use common::*;
use smoltcp::wire::TcpControl;

const RST: u8 = 0x04;
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

#[test]
fn syn_to_a_closed_port_is_reset() {
    let mut pair = pair(16, Impairments::none());
    let mut client = EchoClient::default();
    let mut server = EchoServer::default();
    client.open(
        &mut pair.a,
        SocketAddrV4::new(Pair::SERVER, 81),
        client_opts(1024),
        vec![1],
    );
    assert!(run(&mut pair, &mut client, &mut server, 10_000, |c, _| c
        .closed
        == 1));
    assert_eq!(client.connected, 0);
    let b = pair.b.counters();
    assert_eq!(b.no_connection, 1);
    assert_eq!(b.resets_sent, 1);
    assert_eq!(pair.a.counters().resets_received, 1);
    assert_eq!(pair.b.connections(), 0);
}

#[test]
fn a_segment_for_no_connection_is_reset_and_counted() {
    let mut pair = pair(16, Impairments::none());
    pair.b.listen(80, ListenOptions::default()).unwrap();
    let mut tx = Queue::default();
    pair.b.ingress(
        Instant::from_millis(1),
        &frames::arp_request(Pair::SERVER),
        &mut tx,
    );
    let arp_reply = tx.pop().expect("the server answers ARP");
    assert_eq!(&arp_reply[12..14], &[0x08, 0x06]);
    // An ACK with data for a connection that does not exist (to a listening port, too).
    let frame = frames::tcp(
        (CLIENT, 40000),
        (Pair::SERVER, 80),
        TcpControl::None,
        1,
        Some(1),
        b"hi",
    );
    pair.b.ingress(Instant::from_millis(1), &frame, &mut tx);
    let reply = tx.pop().expect("a reply");
    assert_eq!(tcp_flags(&reply).unwrap() & RST, RST);
    assert!(tx.is_empty());
    // A RST for no connection is dropped silently (RFC 9293 §3.10.7.1).
    let rst = frames::tcp(
        (CLIENT, 40000),
        (Pair::SERVER, 80),
        TcpControl::Rst,
        1,
        None,
        b"",
    );
    pair.b.ingress(Instant::from_millis(2), &rst, &mut tx);
    assert!(tx.is_empty());
    let c = pair.b.counters();
    assert_eq!(
        (c.no_connection, c.resets_sent, c.resets_received),
        (2, 1, 1)
    );
    assert_eq!((c.rx_frames, c.tx_frames), (3, 2));
    assert_eq!(pair.b.connections(), 0, "no slot was taken");
}

/// Opens `n` echo connections from distinct ports and runs until `cond`.
fn open(pair: &mut Pair, client: &mut EchoClient, n: usize, first: usize) {
    for i in first..first + n {
        client.open(
            &mut pair.a,
            SocketAddrV4::new(Pair::SERVER, 80),
            client_opts(1024),
            pattern(i, 300),
        );
    }
}

#[test]
fn backlog_overflow_drops_syns_silently_and_keeps_the_queue() {
    let mut pair = pair(64, Impairments::none());
    let opts = ListenOptions {
        backlog: 4,
        // The refusal itself is under test: no SYN cookies for SYNs beyond the backlog.
        syn_cookies: SynCookies::Off,
        ..ListenOptions::default()
    };
    let l = pair.b.listen(80, opts).unwrap();
    let mut client = EchoClient::default();
    open(&mut pair, &mut client, 10, 0);
    // No accept: the server application is not run. The ten SYNs arrive together: each
    // beyond the fourth evicts the oldest half-open connection, then the four left
    // complete and fill the backlog, and the evicted clients' retransmitted SYNs find
    // nothing to evict.
    pair.run_until(2_000, |side, s| {
        if side == c10m_stack::wire::Side::A {
            client.handle(s);
        }
        false
    });
    let b = pair.b.counters();
    assert!(
        b.refusals(Refusal::Backlog) >= 6,
        "six SYNs (and their retransmissions) were refused: {b:?}"
    );
    assert_eq!(b.resets_sent, 0, "refused SYNs are not answered");
    assert_eq!(b.half_open_evicted, 6);
    assert_eq!(b.accepted, 4, "four wait in the accept queue");
    assert_eq!((client.connected, client.closed), (4, 0));
    // Accepting frees the backlog: the six clients' retransmitted SYNs get in, and all
    // ten connections echo.
    let mut server = EchoServer::default();
    while let Some(c) = pair.b.accept(l) {
        server.accepted.push(c);
    }
    assert_eq!(server.accepted.len(), 4);
    assert!(run(&mut pair, &mut client, &mut server, 30_000, |c, _| c
        .verified
        == 10));
    let b = pair.b.counters();
    assert_eq!(b.resets_sent, 0, "{b:?} {:?}", pair.a.counters());
}

#[test]
fn slot_exhaustion_refuses_new_connections_and_keeps_old_ones() {
    let mut pair = Pair::new(
        &Pair::client_config(64),
        &Pair::server_config(8),
        Impairments::none(),
    );
    let socket = SocketOptions {
        rx_buf: 1024,
        tx_buf: 1024,
        ..SocketOptions::default()
    };
    pair.b
        .listen(
            80,
            ListenOptions {
                socket,
                backlog: 64,
                ..ListenOptions::default()
            },
        )
        .unwrap();
    let mut client = EchoClient::default();
    let mut server = EchoServer::default();
    // Eight connections fill every slot; each echoes its first 300 bytes.
    open(&mut pair, &mut client, 8, 0);
    assert!(run(&mut pair, &mut client, &mut server, 10_000, |c, _| c
        .verified
        == 8));
    let old: Vec<_> = client.flows.keys().copied().collect();
    // Four more are refused, silently: their SYNs (and retransmissions) are dropped.
    open(&mut pair, &mut client, 4, 100);
    let a = pair.b.counters();
    run(&mut pair, &mut client, &mut server, 10_000, |_, _| false);
    let b = pair.b.counters();
    assert!(b.refusals(Refusal::Slots) >= 4, "{b:?}");
    assert_eq!(
        b.tx_frames - b.gateway_probes,
        a.tx_frames - a.gateway_probes,
        "not one frame answered the refused SYNs"
    );
    assert_eq!(b.resets_sent, 0);
    assert_eq!(client.closed, 0);
    assert_eq!(pair.b.connections(), 8);
    // The old connections still work: another 300 bytes each, echoed byte-exact.
    for &c in &old {
        let f = client.flows.get_mut(&c).unwrap();
        let more = pattern(1000 + c.slot(), 300);
        f.payload.extend_from_slice(&more);
        let n = pair.a.send(c, &more).unwrap();
        f.sent += n;
    }
    assert!(run(&mut pair, &mut client, &mut server, 10_000, |c, _| c
        .verified
        == 16));
    for c in &old {
        assert_eq!(client.flows[c].received.len(), 600);
    }
}

#[test]
fn an_unlistened_port_resets_and_a_relisten_accepts_again() {
    let mut pair = pair(16, Impairments::none());
    let mut client = EchoClient::default();
    let mut server = EchoServer::default();
    let l = pair.b.listen(80, server_opts(1024)).unwrap();
    pair.b.unlisten(l);
    let to = SocketAddrV4::new(Pair::SERVER, 80);
    client.open(&mut pair.a, to, client_opts(1024), vec![1]);
    assert!(run(&mut pair, &mut client, &mut server, 10_000, |c, _| c
        .closed
        == 1));
    assert_eq!((client.connected, server.accepted.len()), (0, 0));

    pair.b.relisten(l).unwrap();
    client.open(&mut pair.a, to, client_opts(1024), pattern(7, 100));
    assert!(run(&mut pair, &mut client, &mut server, 10_000, |c, _| c
        .connected
        == 1));
    assert_eq!(server.accepted.len(), 1);

    // A port another listener took in between stays that listener's.
    pair.b.unlisten(l);
    let other = pair.b.listen(80, server_opts(1024)).unwrap();
    assert_ne!(other, l);
    assert_eq!(
        pair.b.relisten(l),
        Err(c10m_stack::ListenError::PortInUse(80))
    );
}
