//! The ring position hints ([`Meta::rx_at`](crate::conn::Meta)) against smoltcp's own ring
//! positions, read back through the socket.

use std::collections::BTreeSet;
use std::net::SocketAddrV4;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;

use super::{ConnId, Event, Stack};
use crate::ConnectOptions;
use crate::ListenOptions;
use crate::listener::SocketOptions;
use crate::mem;
use crate::wire::{Impairments, Pair, Side};

/// The hints of `id`, and where its rings really are: the next received byte's offset in
/// the receive ring, and the offset the next send will write at (smoltcp rewinds an empty
/// transmit ring first, which asking for the write window does too).
fn positions(stack: &mut Stack, id: ConnId) -> ((usize, usize), (usize, usize)) {
    let slot = stack.slab.check(id).expect("live connection");
    let m = stack.slab.slots[slot as usize].meta;
    let profile = &stack.profiles[usize::from(m.profile)];
    let rx_cap = profile.opts.rx_buf;
    let base = match stack.pools.get(usize::from(profile.pool)) {
        Some(pool) => pool.chunk_addr(m.link),
        None => stack.slab.slots.tail_addr(slot as usize) as usize,
    };
    let mut set = mem::one_slot(&mut stack.slab.slots[slot as usize].storage);
    let s = set.get_mut::<tcp::Socket>(SocketHandle::default());
    let read = s.peek(0).expect("receiving").as_ptr() as usize - base;
    let rx = (read + s.recv_queue()) % rx_cap;
    let write = s.send(|b| (0, b.as_ptr() as usize)).expect("sending");
    let tx = write - base - rx_cap;
    ((usize::from(m.rx_at), rx), (usize::from(m.tx_at), tx))
}

fn opts(rx_buf: usize, tx_buf: usize) -> SocketOptions {
    SocketOptions {
        rx_buf,
        tx_buf,
        ..SocketOptions::default()
    }
}

#[test]
fn ring_hints_follow_the_rings_through_wraps_and_short_writes() {
    // The server keeps its connection's buffers beside the slot, the client in a pool:
    // the hints must hold for both.
    let server = crate::Config {
        buffers_in_slot: 197 + 151,
        ..Pair::server_config(4)
    };
    let mut pair = Pair::new(&Pair::client_config(4), &server, Impairments::none());
    // Odd sizes, so that positions wrap at every place in a line.
    let backlog = 4;
    pair.b
        .listen(
            80,
            ListenOptions {
                socket: opts(197, 151),
                backlog,
                ..ListenOptions::default()
            },
        )
        .unwrap();
    let connect = ConnectOptions {
        socket: opts(163, 211),
        local_addr: None,
        local_port: None,
    };
    let c = pair
        .a
        .connect(SocketAddrV4::new(Pair::SERVER, 80), connect)
        .unwrap();
    let mut s = None;
    assert!(pair.run_until(5_000, |side, stack| {
        while let Some(ev) = stack.next_event() {
            if let (Side::B, Event::Acceptable(l)) = (side, ev) {
                s = stack.accept(l);
            }
        }
        s.is_some()
    }));
    let s = s.unwrap();
    assert!(
        pair.a.memory().buffers > 0,
        "the client's buffers are in a pool"
    );
    assert_eq!(pair.b.memory().buffers, 0, "the server's are in the slot");
    assert_eq!(pair.b.memory().buffers_in_use, 197 + 151);

    let mut seen = [BTreeSet::new(), BTreeSet::new()];
    let payload: Vec<u8> = (0..255u8).collect();
    let mut buf = [0u8; 256];
    for i in 0..400usize {
        // The client writes 1..=120 bytes (short when its ring is full); the server reads
        // in pieces of 7..=60 bytes and echoes what fits; the client reads it all.
        let len = 1 + i * 37 % 120;
        let _ = pair.a.send(c, &payload[..len]);
        let piece = 7 + i * 13 % 54;
        for _ in 0..3 {
            pair.step(&mut |side, stack| match side {
                Side::B => {
                    while stack.next_event().is_some() {}
                    while let Ok(n @ 1..) = stack.recv(s, &mut buf[..piece]) {
                        let _ = stack.send(s, &buf[..n]);
                    }
                }
                Side::A => {
                    while stack.next_event().is_some() {}
                    while let Ok(1..) = stack.recv(c, &mut buf) {}
                }
            });
            pair.advance();
            for (k, (stack, id)) in [(&mut pair.a, c), (&mut pair.b, s)].into_iter().enumerate() {
                let ((rx_hint, rx), (tx_hint, tx)) = positions(stack, id);
                assert_eq!(rx_hint, rx, "round {i}, side {k}: receive position");
                assert_eq!(tx_hint, tx, "round {i}, side {k}: transmit position");
                seen[k].insert((rx, tx));
            }
        }
    }
    // The rings really moved: the hints were checked at many positions, not at 0 alone.
    assert!(
        seen.iter().all(|s| s.len() > 100),
        "positions seen: {}, {}",
        seen[0].len(),
        seen[1].len()
    );
}

#[test]
fn has_events_says_whether_an_event_waits() {
    let mut pair = Pair::new(
        &Pair::client_config(4),
        &Pair::server_config(4),
        Impairments::none(),
    );
    pair.b.listen(80, ListenOptions::default()).unwrap();
    let connect = ConnectOptions {
        socket: opts(512, 512),
        local_addr: None,
        local_port: None,
    };
    pair.a
        .connect(SocketAddrV4::new(Pair::SERVER, 80), connect)
        .unwrap();
    assert!(!pair.b.has_events());
    // Leave the server's events where they are until its listener has one.
    assert!(pair.run_until(5_000, |side, stack| {
        if side == Side::A {
            while stack.next_event().is_some() {}
        }
        side == Side::B && stack.has_events()
    }));
    let mut taken = 0;
    while pair.b.has_events() {
        assert!(pair.b.next_event().is_some());
        taken += 1;
    }
    assert!(taken > 0);
    assert_eq!(pair.b.next_event(), None);
}
