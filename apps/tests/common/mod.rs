//! A client for simulation tests: many connections on the client stack, collecting what
//! each receives.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::net::SocketAddrV4;

use c10m_apps::Service;
use c10m_apps::sim::Simulation;
use c10m_stack::{ConnError, ConnId, ConnectOptions, Event, SocketOptions, Stack};

pub fn opts(buf: usize) -> ConnectOptions {
    ConnectOptions {
        socket: SocketOptions {
            rx_buf: buf,
            tx_buf: buf,
            ..SocketOptions::default()
        },
        ..ConnectOptions::default()
    }
}

#[derive(Default)]
pub struct Peer {
    pub connected: bool,
    pub out: Vec<u8>,
    pub sent: usize,
    pub rx: Vec<u8>,
    pub eof: bool,
    pub closed: bool,
    /// Does not read (a stuck subscriber).
    pub deaf: bool,
}

#[derive(Default)]
pub struct Clients {
    pub conns: Vec<ConnId>,
    pub peers: BTreeMap<ConnId, Peer>,
}

impl Clients {
    pub fn open<S: Service>(&mut self, sim: &mut Simulation<S>, port: u16, buf: usize) -> ConnId {
        let to = SocketAddrV4::new(Simulation::<S>::SERVER, port);
        let c = sim.client().connect(to, opts(buf)).expect("connect");
        self.conns.push(c);
        self.peers.insert(c, Peer::default());
        c
    }

    pub fn queue(&mut self, c: ConnId, bytes: &[u8]) {
        self.peers.get_mut(&c).unwrap().out.extend_from_slice(bytes);
    }

    pub fn handle(&mut self, stack: &mut Stack) {
        while let Some(ev) = stack.next_event() {
            match ev {
                Event::Connected(c) | Event::Readable(c) | Event::Writable(c) => {
                    if let Some(p) = self.peers.get_mut(&c) {
                        p.connected = true;
                    }
                }
                Event::Closed(c) => {
                    if let Some(p) = self.peers.get_mut(&c) {
                        p.closed = true;
                    }
                }
                Event::Acceptable(_) => {}
            }
        }
        let mut buf = [0u8; 4096];
        for (&c, p) in self.peers.iter_mut() {
            if !p.connected || p.closed {
                continue;
            }
            if p.sent < p.out.len()
                && let Ok(n) = stack.send(c, &p.out[p.sent..])
            {
                p.sent += n;
            }
            while !p.deaf {
                match stack.recv(c, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => p.rx.extend_from_slice(&buf[..n]),
                    Err(ConnError::Finished) => {
                        if !p.eof {
                            p.eof = true;
                            let _ = stack.close(c);
                        }
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
    }

    pub fn peer(&self, c: ConnId) -> &Peer {
        &self.peers[&c]
    }

    pub fn all(&self, f: impl Fn(&Peer) -> bool) -> bool {
        self.peers.values().all(f)
    }
}

/// Runs the simulation until `done` or `limit_ms` of simulated time.
pub fn run<S: Service>(
    sim: &mut Simulation<S>,
    clients: &mut Clients,
    limit_ms: u64,
    done: impl Fn(&Clients) -> bool,
) -> bool {
    sim.run_until(limit_ms, |stack| {
        clients.handle(stack);
        done(clients)
    })
}
