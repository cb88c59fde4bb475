//! The XDP steering program of the c10m dataplane and its loader.
//!
//! The dataplane owns one or more service addresses on a NIC that the kernel keeps
//! using for everything else (SSH, management). This crate decides, per frame and
//! before the kernel sees it, which of the two gets it.
//!
//! # The program (`src/bpf/steer.bpf.c`)
//!
//! Written in C, compiled by clang at build time and embedded in the crate as a
//! libbpf-cargo skeleton. It parses Ethernet (and at most one 802.1Q/802.1ad tag),
//! then:
//!
//! | frame | goes to |
//! |---|---|
//! | IPv4 TCP/UDP whose (destination address, protocol, destination port) is a registered service | the AF_XDP socket of its rx queue |
//! | a plain SYN to such a TCP service (IPv4 or IPv6), when its [`XdpCookies`] mode and the queue's worker say so | answered by the program: a SYN-cookie SYN-ACK back out of the interface (see below) |
//! | IPv4 TCP/UDP whose destination address is in a registered prefix for its protocol ([`Steering::add_prefix`]) | the socket |
//! | ARP whose target address is a registered address | the socket |
//! | ICMP to a registered address | the socket |
//! | IPv4 fragments (even to a service) | the kernel: only the first carries ports, and the dataplane does not reassemble |
//! | 802.1Q / 802.1ad tagged, whatever they carry | the kernel, untouched (counted in `vlan`): the stack has no VLANs, so the kernel's VLAN interfaces keep them |
//! | IPv6 TCP, ICMPv6, or a packet behind an extension or fragment header, to a registered IPv6 address; IPv6 UDP to a registered IPv6 service | the socket (the stack counts what it cannot take: `extension_header`, `fragment`) |
//! | a neighbour solicitation whose target is a registered IPv6 address | the socket |
//! | malformed IPv4 to a registered address | dropped |
//! | malformed frames for anyone else | the kernel (counted in `errors`) |
//! | everything else | the kernel, untouched (`XDP_PASS`) |
//!
//! "The socket" is `bpf_redirect_map(&xsks, rx_queue_index, XDP_PASS)`: with no socket
//! registered for the queue the frame goes to the kernel (counted as `no_xsk`), so the
//! program can be attached before the sockets exist. The IPv4 header length is read
//! from IHL (options are skipped). Tags that the NIC strips before XDP (rx VLAN
//! offload) are not seen: such a frame is steered by what it carries, and the stack's
//! untagged answer goes nowhere useful, so turn the offload off where VLANs and the
//! service address share a link (`ethtool -K IFACE rxvlan off`).
//! The program handles single-buffer frames only (no `xdp.frags`), so native mode
//! needs an MTU that fits in one page (about 3,500 bytes).
//!
//! # Maps
//!
//! | map | type | key → value |
//! |---|---|---|
//! | `xsks` | `XSKMAP`, [`MAX_QUEUES`] | rx queue → AF_XDP socket |
//! | `services` | `HASH`, [`MAX_SERVICES`] | (IPv4 address, protocol, port), wire order → (SYN-ACK window, [`XdpCookies`] mode) |
//! | `services6` | `HASH`, [`MAX_SERVICES`] | (IPv6 address, protocol, port), wire order → the same (TCP: its SYN cookies; UDP: steered) |
//! | `cookie_keys` | `ARRAY` with a spin lock, [`MAX_QUEUES`] | rx queue → [`QueueCookies`] (ready, SipHash keys, parity, pressure) |
//! | `addrs` | `HASH`, [`MAX_ADDRESSES`] | IPv4 address, wire order → 1 |
//! | `addrs6` | `HASH`, [`MAX_ADDRESSES`] | IPv6 address, wire order → 1 (TCP, ICMPv6 and neighbour solicitations for it are steered) |
//! | `prefixes` | `LPM_TRIE`, [`MAX_PREFIXES`] | (protocol, IPv4 destination prefix) → 1 |
//! | `counters` | `PERCPU_ARRAY`, 1 | 0 → [`Counters`] of this CPU |
//!
//! Every frame is counted once (a SYN answered with a cookie in `cookies`), on the CPU
//! that ran it, without atomics;
//! [`Steering::counters`] sums the CPUs.
//!
//! # SYN cookies in XDP
//!
//! A SYN flood at line rate costs the dataplane's worker one AF_XDP copy, a run of the
//! stack and one transmitted frame per SYN: on the veth test bed 6–7 µs, so a worker
//! answers 140,000–175,000 SYNs a second with userspace cookies and the flood (275,000+
//! a second from one generator core) fills its rings and drowns the real clients' frames.
//! So the program answers SYNs itself when the listener would answer them with a cookie
//! anyway: it computes the stack's cookie (`c10m_stack::CookieKeys` says how) from keys
//! the worker of the frame's rx queue publishes ([`Steering::publish_cookie_keys`]: the
//! keys change every 64 s, and each worker's stack has its own secret), writes the SYN-ACK
//! over the SYN, byte for byte the one the stack would send, and sends it back out with
//! `bpf_redirect` to the same interface. The client's ACK goes to the socket as usual and
//! the stack's cookie check makes the connection; the stack's own cookie path stays the
//! fallback (generic XDP without redirect support, in-memory tests, any SYN the program
//! passes on). [`XdpCookies::Auto`] answers only while the queue's worker says it is
//! under pressure (its backlog or half-open budget full, held 5 s after).
//!
//! The answer costs about 140 ns of XDP (260 ns with a full set of options) where the
//! program runs: on a NIC the rx queue's interrupt core, on veth the *sender's* CPU (its
//! NAPI context), so on the bed the flood generator pays for the answers. Measured with
//! `bench/tests/flood.rs`: with userspace cookies 247 sequential connections could be tried
//! during a 10 s flood at 276,000 SYNs/s and the echo connection kept 3% of its round trips;
//! with cookies in XDP (six runs) the flood ran at 449,000–665,000 SYNs/s, every connection
//! tried succeeded, 229–1,000 were tried and the echo connection kept 71–127%. The spread
//! is the generator's core, where veth drops up to a fifth of what gen0 sends before any
//! XDP runs.
//!
//! The redirect rather than `XDP_TX`: veth delivers `XDP_TX` frames to its peer only when
//! the peer has an XDP program (otherwise they wait in its queue until other traffic
//! wakes it), while a redirect is flushed whenever the peer has NAPI — GRO on, or an XDP
//! program. A veth peer with neither drops the answers: the test bed turns GRO on.
//!
//! # Modes
//!
//! [`XdpMode::Native`] runs in the driver before any `sk_buff` is allocated and is the
//! one to use on a real NIC (and on veth, where the peer must be up for frames to
//! flow). [`XdpMode::Generic`] works on any interface but runs after the kernel built
//! the `sk_buff`, so it saves little. [`XdpMode::Auto`] tries native and falls back to
//! generic with a warning. [`Steering::mode`] says which one is in force.
//!
//! # Why a bpf_link
//!
//! The program is attached with `bpf_link_create(BPF_XDP)`, not the older netlink
//! call. A netlink-attached program stays on the interface after its process dies,
//! still steering the service's frames into sockets that no longer exist: the service
//! address goes dark until someone runs `ip link set dev X xdp off`. A link is a file
//! descriptor: when the process exits — cleanly, by panic, or by `kill -9` — the kernel
//! closes it and the program leaves the interface. A link also refuses to replace a
//! program someone else attached ([`Error::AlreadyAttached`]).
//!
//! # Loss on the test bed ([`Impairment`])
//!
//! A second, unrelated program (`src/bpf/impair.bpf.c`): a tc filter that drops a
//! configured fraction ([`LossRate`]) of the IP frames leaving or arriving at an
//! interface ([`Hook`]), silently and counted, for emulating a lossy path where the
//! kernel has no netem. It is a test tool: `scripts/testbed impair --loss 1% [--toward
//! server|client|both]` puts it on the bed's generator side.
//!
//! # Example
//!
//! ```no_run
//! use std::net::Ipv4Addr;
//! use c10m_ebpf::{Proto, Steering, XdpMode};
//!
//! # fn main() -> Result<(), c10m_ebpf::Error> {
//! let steering = Steering::attach("dut0", XdpMode::Auto)?;
//! let service = Ipv4Addr::new(198, 18, 0, 10);
//! steering.add_address(service)?; // ARP and ping
//! steering.add_service(service, Proto::Tcp, 80)?;
//! // For each rx queue q, after creating its AF_XDP socket `xsk`:
//! // steering.register_xsk(q, xsk.as_fd())?;
//! println!("{:?}", steering.counters()?);
//! # Ok(())
//! # }
//! ```
//!
//! Loading and attaching need root, or `CAP_BPF` and `CAP_NET_ADMIN`. libbpf's own
//! messages, the verifier log among them, go to the `log` crate under target `libbpf`.
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod error;
mod impair;
mod maps;
mod steering;
mod sys;
#[cfg(test)]
mod tests;

pub use error::Error;
pub use impair::{Hook, ImpairStatus, Impairment, LossRate, LossRateError};
pub use maps::{
    Counters, MAX_ADDRESSES, MAX_PREFIXES, MAX_QUEUES, MAX_SERVICES, Proto, ProtoError,
    QueueCookies, XdpCookies,
};
pub use steering::{Steering, XdpMode, XdpModeError, xsk_zero_copy};
