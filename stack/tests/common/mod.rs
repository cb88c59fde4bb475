//! Shared test applications: an echo server and an echo-checking client, driven by
//! `Pair::step` on the in-memory wire.
#![allow(dead_code, unreachable_pub)]

pub mod frames;

use std::collections::HashMap;
use std::net::SocketAddr;

use c10m_stack::wire::{Impairments, Pair, Side};
use c10m_stack::{ConnError, ConnId, ConnectOptions, Event, ListenOptions, SocketOptions, Stack};

/// Echoes every byte back, reading only as much as fits in the transmit buffer.
#[derive(Default)]
pub struct EchoServer {
    pub accepted: Vec<ConnId>,
    pub closed: usize,
    pub bytes: u64,
    buf: Vec<u8>,
}

impl EchoServer {
    pub fn handle(&mut self, stack: &mut Stack) {
        while let Some(ev) = stack.next_event() {
            match ev {
                Event::Acceptable(l) => {
                    while let Some(c) = stack.accept(l) {
                        self.accepted.push(c);
                    }
                }
                Event::Readable(c) | Event::Writable(c) => self.pump(stack, c),
                Event::Closed(_) => self.closed += 1,
                Event::Connected(_) => {}
            }
        }
    }

    fn pump(&mut self, stack: &mut Stack, c: ConnId) {
        loop {
            let room = match stack.send_room(c) {
                Ok(r) => r,
                Err(_) => return,
            };
            if room == 0 {
                // Arm Writable: a zero-length want is not short, so ask for one byte.
                let _ = stack.send_with(c, 1, |_| (0, ()));
                return;
            }
            self.buf.resize(room.min(64 * 1024), 0);
            match stack.recv(c, &mut self.buf) {
                Ok(0) => return,
                Ok(n) => {
                    self.bytes += n as u64;
                    let sent = stack
                        .send(c, &self.buf[..n])
                        .unwrap_or_else(|e| panic!("send on {c} in {:?}: {e}", stack.state(c)));
                    assert_eq!(sent, n, "reads are sized to the send room");
                }
                Err(ConnError::Finished) => {
                    let _ = stack.close(c);
                    return;
                }
                Err(_) => return,
            }
        }
    }
}

/// One client connection: sends `payload`, expects it back byte for byte, then closes.
pub struct Flow {
    pub payload: Vec<u8>,
    pub sent: usize,
    pub received: Vec<u8>,
    pub connected: bool,
    pub closed: bool,
    pub close_sent: bool,
}

#[derive(Default)]
pub struct EchoClient {
    pub flows: HashMap<ConnId, Flow>,
    pub connected: usize,
    pub verified: usize,
    pub closed: usize,
    /// Close each connection once its echo is complete.
    pub close_when_done: bool,
}

/// A deterministic payload for flow `n`.
pub fn pattern(n: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ n.wrapping_mul(7)) as u8)
        .collect()
}

impl EchoClient {
    pub fn open(
        &mut self,
        stack: &mut Stack,
        to: impl Into<SocketAddr>,
        opts: ConnectOptions,
        payload: Vec<u8>,
    ) -> ConnId {
        let c = stack.connect(to, opts).expect("connect");
        self.flows.insert(
            c,
            Flow {
                payload,
                sent: 0,
                received: Vec::new(),
                connected: false,
                closed: false,
                close_sent: false,
            },
        );
        c
    }

    pub fn handle(&mut self, stack: &mut Stack) {
        while let Some(ev) = stack.next_event() {
            match ev {
                Event::Connected(c) => {
                    if let Some(f) = self.flows.get_mut(&c) {
                        f.connected = true;
                        self.connected += 1;
                    }
                    self.pump(stack, c);
                }
                Event::Readable(c) | Event::Writable(c) => self.pump(stack, c),
                Event::Closed(c) => {
                    if let Some(f) = self.flows.get_mut(&c) {
                        f.closed = true;
                        self.closed += 1;
                    }
                }
                Event::Acceptable(_) => {}
            }
        }
    }

    fn pump(&mut self, stack: &mut Stack, c: ConnId) {
        let Some(f) = self.flows.get_mut(&c) else {
            return;
        };
        if f.sent < f.payload.len()
            && let Ok(n) = stack.send(c, &f.payload[f.sent..])
        {
            f.sent += n;
        }
        let mut buf = [0u8; 4096];
        loop {
            match stack.recv(c, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let at = f.received.len();
                    assert_eq!(
                        &buf[..n],
                        &f.payload[at..at + n],
                        "echo of {c} differs at byte {at}"
                    );
                    f.received.extend_from_slice(&buf[..n]);
                    if f.received.len() == f.payload.len() {
                        self.verified += 1;
                    }
                }
                Err(_) => break,
            }
        }
        if self.close_when_done && f.received.len() == f.payload.len() && !f.close_sent {
            f.close_sent = true;
            let _ = stack.close(c);
        }
    }
}

pub fn server_opts(buf: usize) -> ListenOptions {
    ListenOptions {
        socket: SocketOptions {
            rx_buf: buf,
            tx_buf: buf,
            ..SocketOptions::default()
        },
        backlog: u32::MAX,
        ..ListenOptions::default()
    }
}

pub fn client_opts(buf: usize) -> ConnectOptions {
    ConnectOptions {
        socket: SocketOptions {
            rx_buf: buf,
            tx_buf: buf,
            ..SocketOptions::default()
        },
        ..ConnectOptions::default()
    }
}

pub fn pair(max: usize, imp: Impairments) -> Pair {
    Pair::new(&Pair::client_config(max), &Pair::server_config(max), imp)
}

/// Runs client and server apps until `done` or the simulated time limit.
pub fn run(
    pair: &mut Pair,
    client: &mut EchoClient,
    server: &mut EchoServer,
    limit_ms: u64,
    mut done: impl FnMut(&EchoClient, &EchoServer) -> bool,
) -> bool {
    pair.run_until(limit_ms, |side, stack| {
        match side {
            Side::A => client.handle(stack),
            Side::B => server.handle(stack),
        }
        done(client, server)
    })
}
