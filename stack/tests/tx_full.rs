//! A full transmit queue holds connections back without costing the loop per connection:
//! what they have to send waits, and goes out, byte-exact, once there is room.
//!
//! Why it matters: a dataplane worker whose transmit ring fills (a loop that fell behind,
//! copy-mode AF_XDP sending 32 frames a kick) used to put every connection that had
//! something to send back on the timing wheel "due now"; each tick fired them all, each
//! failed again, and on the bed a 100,000/s connection ramp spent its core on millions of
//! such firings a second instead of reading frames, and collapsed.

mod common;

use std::cell::Cell;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use c10m_stack::wire::{Impairments, Pair, Side};
use c10m_stack::{ConnId, ConnectOptions, Event, Instant, TxQueue};
use common::*;

const N: usize = 1_000;
const LEN: usize = 100;
/// Simulated milliseconds the transmit queue stays full.
const BLOCKED_MS: i64 = 50;

/// A transmit queue that never has room, and counts how often it was asked.
#[derive(Default)]
struct Full {
    asked: Cell<u64>,
    transmitted: u64,
}

impl TxQueue for Full {
    fn has_room(&self) -> bool {
        self.asked.set(self.asked.get() + 1);
        false
    }

    fn transmit<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        self.transmitted += 1;
        fill(&mut vec![0; len])
    }
}

#[test]
fn a_full_transmit_queue_costs_a_poll_little_and_loses_nothing() {
    let mut pair = pair(N, Impairments::none());
    pair.b.listen(80, server_opts(256)).unwrap();
    let mut client = EchoClient::default();
    let to = SocketAddrV4::new(Pair::SERVER, 80);
    for i in 0..N {
        let opts = ConnectOptions {
            local_addr: Some(Ipv4Addr::new(198, 19, 0, 1)),
            local_port: Some(20_000 + i as u16),
            ..client_opts(256)
        };
        client.open(&mut pair.a, to, opts, pattern(i, LEN));
    }

    // The server accepts and reads every request, and answers none yet.
    let mut requests: HashMap<ConnId, Vec<u8>> = HashMap::new();
    let mut read = 0;
    let arrived = pair.run_until(10_000, |side, stack| {
        match side {
            Side::A => client.handle(stack),
            Side::B => {
                while let Some(ev) = stack.next_event() {
                    match ev {
                        Event::Acceptable(l) => while stack.accept(l).is_some() {},
                        Event::Readable(c) => {
                            let mut buf = [0u8; LEN];
                            while let Ok(n) = stack.recv(c, &mut buf)
                                && n > 0
                            {
                                requests.entry(c).or_default().extend_from_slice(&buf[..n]);
                                read += n;
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        read == N * LEN
    });
    assert!(
        arrived,
        "{read} of {} request bytes reached the server",
        N * LEN
    );
    assert_eq!(requests.len(), N);

    // Every answer is queued while the transmit queue is full, for 50 ms of polls.
    for (&c, data) in &requests {
        assert_eq!(pair.b.send(c, data).unwrap(), LEN);
    }
    let mut full = Full::default();
    let start = pair.now().total_millis();
    for ms in 0..=BLOCKED_MS {
        pair.b.poll(Instant::from_millis(start + ms), &mut full);
    }
    assert_eq!(full.transmitted, 0, "nothing is built without room");
    assert!(
        full.asked.get() <= 3 * (BLOCKED_MS as u64 + 1),
        "{} questions to a full queue in {} polls: the polls' cost grew with the {N} \
         waiting connections",
        full.asked.get(),
        BLOCKED_MS + 1
    );
    assert!(
        pair.b.poll_at().is_some(),
        "the waiting connections keep the stack due"
    );

    // With room again, every answer arrives byte-exact.
    pair.sleep(BLOCKED_MS as u64);
    let mut server = EchoServer::default();
    assert!(
        run(&mut pair, &mut client, &mut server, 10_000, |c, _| c
            .verified
            == N),
        "{} of {N} answers arrived",
        client.verified
    );
    for f in client.flows.values() {
        assert_eq!(f.received, f.payload);
    }
    let b = pair.b.counters();
    assert_eq!(b.resets_sent + pair.a.counters().resets_sent, 0);
}
