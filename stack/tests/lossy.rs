//! Multi-megabyte streams over a wire that loses 5% of frames, reorders and duplicates:
//! every byte arrives, in order, through retransmissions driven by the timing wheel.

mod common;

use std::net::SocketAddrV4;

use c10m_stack::wire::{Impairments, Pair};
use common::*;

#[test]
fn streams_survive_loss_reordering_and_duplication() {
    let imp = Impairments {
        loss: 0.05,
        duplicate: 0.02,
        reorder: 0.05,
        jitter_ms: 8,
        delay_ms: 2,
        seed: 0xdecaf,
    };
    let mut pair = pair(16, imp);
    pair.b.listen(9, server_opts(32 * 1024)).unwrap();
    let mut client = EchoClient {
        close_when_done: true,
        ..EchoClient::default()
    };
    let mut server = EchoServer::default();
    let to = SocketAddrV4::new(Pair::SERVER, 9);
    let sizes = [3 << 20, 2 << 20, 1 << 20, 777_777];
    for (i, &len) in sizes.iter().enumerate() {
        client.open(&mut pair.a, to, client_opts(32 * 1024), pattern(i, len));
    }
    let done = run(&mut pair, &mut client, &mut server, 3_600_000, |c, _| {
        c.verified == sizes.len()
    });
    assert!(
        done,
        "{} of {} streams complete",
        client.verified,
        sizes.len()
    );
    for f in client.flows.values() {
        assert_eq!(f.received.len(), f.payload.len());
        assert!(f.received == f.payload, "stream arrived byte-exact");
    }
    assert!(
        pair.lost > 100,
        "the wire really lost frames ({})",
        pair.lost
    );
    let total: usize = sizes.iter().sum();
    assert_eq!(server.bytes, total as u64);
    // Retransmissions happened: more bytes went out than the payload alone needs.
    let sent = pair.a.counters().tx_bytes;
    assert!(
        sent > total as u64,
        "client sent {sent} bytes for {total} of payload"
    );
}
