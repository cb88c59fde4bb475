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
//! Per connection: smoltcp's `SocketStorage` (424 bytes in smoltcp 0.14 as built here:
//! Reno's 40 bytes of congestion state, one out-of-order range of 16 bytes; 488 with the
//! `cubic` feature, CUBIC's state being 104 bytes), a 56-byte slot record holding the timer
//! node (480 bytes together, 544 with CUBIC), the rx and tx buffers, and 16 to 32 bytes of
//! demux table. With 256-byte buffers: 1,009 bytes measured at 1M connections (1,073 with
//! the `cubic` feature, 1,089 with the `ipv6` feature: smoltcp's `proto-ipv6` widens every
//! address inside every socket, a 480-byte `SocketStorage`, and the record's 4-tuple holds
//! 16-byte addresses, 80 bytes). The buffers of the connections whose sizes match
//! [`Config::buffers_in_slot`] sit right after their slot, the others' in a pool per size;
//! at a million connections a segment then finds its buffer lines in the same run of
//! memory as its socket. Big allocations come from 2 MiB hugepages when reserved (see
//! [`HugePages`]).
//!
//! # Not supported
//!
//! IPv6 without the `ipv6` feature; with it, the stack answers neighbour discovery and
//! ICMPv6 echo for [`Config::ipv6_addrs`] and carries TCP over IPv6 beside IPv4. IP
//! fragments (dropped and counted), more than two local addresses (IPv4 and IPv6 together) or two routes
//! (smoltcp's build-time limits), SACK-based recovery and PAWS (smoltcp does neither),
//! more than one out-of-order range per connection (a segment that would open a second gap
//! is dropped, and resent by the peer), and window scaling, SACK-permitted and timestamps on
//! connections born from a [SYN cookie](SynCookies) (the cookie carries only a quantised
//! MSS). Other connections use window scaling and timestamps whenever the peer offers them
//! (see `tsval`). Congestion control is Reno by default ([`Congestion`]).
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod config;
mod conn;
mod cookie;
mod counters;
mod defense;
mod device;
mod listener;
#[allow(unsafe_code)]
mod mem;
mod neighbour;
mod parse;
mod ports;
mod recovery;
mod seqshift;
mod stack;
mod table;
mod tsval;
pub mod wheel;
pub mod wire;

pub use config::{Config, ConfigError};

/// Whether this build speaks IPv6 (the `ipv6` feature).
pub const IPV6: bool = cfg!(feature = "ipv6");
pub use conn::ConnId;
pub use cookie::{CookieKeys, SynCookies, SynCookiesError};
pub use counters::{Counters, Refusal, STATE_NAMES, STATES, state_index, state_name};
pub use defense::CHALLENGE_ACK_RATE;
pub use device::{MAX_FRAME, TxQueue};
pub use listener::{
    Congestion, CongestionError, ListenError, ListenOptions, ListenerId, MAX_SEND_TIMEOUT,
    MAX_SYNACK_RETRIES, SocketOptions,
};
pub use mem::{Backing, HugePages, Region, Warmer, Zeroed};
pub use parse::Drop;
pub use ports::{PortChooser, SequentialPorts};
pub use smoltcp::socket::tcp::State;
pub use smoltcp::time::{Duration, Instant};
pub use stack::api::{ConnError, ConnectError, ConnectOptions, Memory};
pub use stack::{BATCH, Event, Stack};
pub use table::{Addr, FourTuple, addr_v4};

/// Internals exposed for the crate's criterion benchmarks only: not a stable API.
#[doc(hidden)]
pub mod bench_support {
    pub use crate::mem::BufferPool;
    pub use crate::table::Table;
}
