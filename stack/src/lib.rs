//! A sans-IO userspace TCP/IP stack over smoltcp, at O(1) per packet for millions of
//! connections.
//!
//! One [`Stack`] runs per core. It owns one smoltcp `Interface` and, preallocated for
//! `max_connections`, a slab of connection slots (one smoltcp socket each), a demux table
//! from 4-tuples to slots, a hierarchical [timing wheel](wheel) and socket buffer pools. It
//! does no I/O, reads no clock and starts no thread: frames come in through
//! [`Stack::ingress`] with the current time, go out through a [`TxQueue`], and the
//! application sees [`Event`]s. The same code therefore runs on an AF_XDP queue (the
//! `dataplane` crate), in memory for tests and benchmarks ([`wire`]), and anywhere else
//! frames can be moved.
//!
//! # Why not just smoltcp
//!
//! smoltcp's `Interface::poll` walks every socket of the set it is given, per packet. Here
//! each poll gets a set of exactly one socket — the one the demux table found for the
//! segment, or the one whose timer fired — so a segment costs the same with ten
//! connections as with ten million. A frame that matches no connection goes to smoltcp
//! with an empty set: it answers ARP and ICMP echo and resets stray TCP segments.
//!
//! # The loop
//!
//! ```
//! use c10m_stack::{Config, Event, Instant, ListenOptions, Stack, wire::Queue};
//! use std::net::Ipv4Addr;
//!
//! let config = Config {
//!     addrs: vec![(Ipv4Addr::new(198, 18, 0, 10), 24)],
//!     max_connections: 1024,
//!     ..Config::default()
//! };
//! let mut stack = Stack::new(&config, Instant::ZERO).unwrap();
//! let echo = stack.listen(7, ListenOptions::default()).unwrap();
//! let mut tx = Queue::default(); // where frames go: an AF_XDP ring on the dataplane
//! let received: Vec<Vec<u8>> = Vec::new(); // frames from the NIC
//! let now = Instant::from_millis(1);
//! for frame in &received {
//!     stack.ingress(now, frame, &mut tx);
//! }
//! while let Some(event) = stack.next_event() {
//!     match event {
//!         Event::Acceptable(l) => while stack.accept(l).is_some() {},
//!         Event::Readable(conn) => {
//!             let mut buf = [0u8; 512];
//!             while let Ok(n @ 1..) = stack.recv(conn, &mut buf) {
//!                 let _ = stack.send(conn, &buf[..n]);
//!             }
//!         }
//!         _ => {}
//!     }
//! }
//! stack.poll(now, &mut tx); // transmit, run timers
//! # let _ = echo;
//! ```
//!
//! # Memory
//!
//! Per connection: smoltcp's `SocketStorage` (432 bytes in smoltcp 0.14), a 56-byte slot
//! record holding the timer node (488 bytes together, 8 or 9 cache lines), the rx and tx
//! buffers, and 16 to 32 bytes of demux table. With 256-byte buffers that is just under
//! 1 KiB. Big allocations come from 2 MiB
//! hugepages when reserved (see [`HugePages`]).
//!
//! # Not supported
//!
//! IPv6, IP fragments (dropped and counted), more than two local addresses or two routes
//! (smoltcp's build-time limits), TCP options beyond what smoltcp implements (window
//! scaling, SACK-permitted, timestamps), and those options on connections born from a
//! [SYN cookie](SynCookies) (the cookie carries only a quantised MSS).
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod api;
mod config;
mod conn;
mod cookie;
mod counters;
mod defense;
mod device;
mod listener;
#[allow(unsafe_code)]
mod mem;
mod parse;
mod ports;
mod stack;
mod table;
pub mod wheel;
pub mod wire;

pub use api::{ConnError, ConnectError, ConnectOptions, Memory};
pub use config::{Config, ConfigError};
pub use conn::ConnId;
pub use cookie::{SynCookies, SynCookiesError};
pub use counters::{Counters, Refusal, STATES, state_index};
pub use defense::CHALLENGE_ACK_RATE;
pub use device::{MAX_FRAME, TxQueue};
pub use listener::{
    ListenError, ListenOptions, ListenerId, MAX_SEND_TIMEOUT, MAX_SYNACK_RETRIES, SocketOptions,
};
pub use mem::{Backing, HugePages, Region};
pub use parse::Drop;
pub use ports::{PortChooser, SequentialPorts};
pub use smoltcp::socket::tcp::State;
pub use smoltcp::time::{Duration, Instant};
pub use stack::{BATCH, Event, Stack};
pub use table::FourTuple;

/// Internals exposed for the crate's criterion benchmarks only: not a stable API.
#[doc(hidden)]
pub mod bench_support {
    pub use crate::mem::BufferPool;
    pub use crate::table::Table;
}
