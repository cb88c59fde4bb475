//! Stack configuration and its validation.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::mem::HugePages;

/// Everything a [`Stack`](crate::Stack) is sized and addressed by.
#[derive(Debug, Clone)]
pub struct Config {
    /// The interface's MAC address (unicast).
    pub mac: [u8; 6],
    /// The stack's IPv4 addresses with their prefix lengths (at most 2: smoltcp's
    /// `IFACE_MAX_ADDR_COUNT`). The first is the source of active opens by default.
    pub addrs: Vec<(Ipv4Addr, u8)>,
    /// The stack's IPv6 addresses with their prefix lengths, beside `addrs` (together at
    /// most 2). Needs the crate's `ipv6` feature; without it a non-empty list is refused
    /// ([`ConfigError::Ipv6NotBuilt`]). The stack answers neighbour solicitations and
    /// ICMPv6 echo for them.
    pub ipv6_addrs: Vec<(Ipv6Addr, u8)>,
    /// Default gateway. Put clients behind it rather than on-link: smoltcp's neighbour
    /// cache is a short linear list, so one gateway entry serves millions of peers.
    pub gateway: Option<Ipv4Addr>,
    /// Extra prefixes the stack treats as its own addresses (smoltcp's any-IP mode): a load
    /// generator opening millions of connections from many source addresses.
    pub any_ip: Vec<(Ipv4Addr, u8)>,
    /// Connection slots, preallocated. Includes half-open and TIME-WAIT connections.
    pub max_connections: usize,
    /// Half-open (SYN received) connections across all listeners: the SYN-flood guard.
    /// When it is full, a new SYN evicts the oldest half-open connection (see
    /// [`ListenOptions::synack_retries`](crate::ListenOptions::synack_retries)).
    pub max_half_open: usize,
    /// RSTs per second the stack may send in answer to segments that match no connection
    /// (a closed port, a stray ACK); the excess is dropped and counted
    /// ([`Counters::resets_limited`](crate::Counters::resets_limited)). Spoofed segments
    /// would otherwise make the stack reflect one RST each at whoever they name.
    pub rst_rate: u32,
    /// How many such RSTs may go out at once before `rst_rate` paces them.
    pub rst_burst: u32,
    /// Secret seed for initial sequence numbers and the demux table's hash key. Take it
    /// from the OS's random source in production; tests fix it for determinism.
    pub seed: u64,
    /// Whether to try 2 MiB hugepages for the big allocations.
    pub hugepages: HugePages,
    /// Fault in the connection slab at start-up and the buffer pools when they are
    /// created (at `listen` or the first `connect` with new buffer sizes) rather than as
    /// connections first use them: the process then does not grow under load or a flood,
    /// and no page fault lands on the per-packet path, at the price of their full size in
    /// memory from the start, and of start-up time (the kernel zeroes about 0.4 GB a
    /// second here: ten million slots, 4.8 GB, take 14 s).
    pub prefault: bool,
    /// Bytes of socket buffer kept beside each connection's slot, for the connections
    /// whose options ask for exactly this many (`rx_buf + tx_buf`); others take theirs
    /// from a pool per size, as all do with 0 (the default). Beside the slot, a segment's
    /// buffer lines come from the same run of memory as its socket: at a million
    /// connections of 256 + 256 bytes, 10% less time per segment than from a pool
    /// (`bench/RESULTS.md`). Every slot carries these bytes whether its connection uses
    /// them or not, so set it to the buffer size most connections use.
    pub buffers_in_slot: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mac: [0x02, 0, 0, 0, 0, 0x01],
            addrs: Vec::new(),
            ipv6_addrs: Vec::new(),
            gateway: None,
            any_ip: Vec::new(),
            max_connections: 65536,
            max_half_open: 65536,
            rst_rate: 1000,
            rst_burst: 1000,
            seed: 0,
            hugepages: HugePages::Auto,
            prefault: false,
            buffers_in_slot: 0,
        }
    }
}

/// A configuration the stack cannot run with, or memory it could not get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// `addrs` is empty.
    NoAddress,
    /// More addresses than smoltcp holds.
    TooManyAddresses(usize),
    /// A prefix length above 32 (IPv4) or 128 (IPv6).
    BadPrefix(u8),
    /// IPv6 addresses given to a stack built without the `ipv6` feature.
    Ipv6NotBuilt,
    /// The MAC is not unicast.
    BadMac,
    /// The gateway plus any-IP prefixes exceed smoltcp's route table.
    TooManyRoutes,
    /// `max_connections` is 0 or above 2^31.
    BadMaxConnections(usize),
    /// A preallocation failed.
    OutOfMemory {
        /// What was being allocated.
        what: &'static str,
        /// Roughly how many bytes.
        bytes: usize,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::NoAddress => {
                f.write_str("no IPv4 address configured: give one (e.g. --addr 198.18.0.10/24)")
            }
            ConfigError::TooManyAddresses(n) => write!(
                f,
                "{n} addresses configured; the stack holds at most {MAX_ADDRS}"
            ),
            ConfigError::BadPrefix(p) => {
                write!(f, "prefix length /{p} is too long for its address family")
            }
            ConfigError::Ipv6NotBuilt => f.write_str(
                "an IPv6 address was given but this build has no IPv6: rebuild with the `ipv6` feature",
            ),
            ConfigError::BadMac => {
                f.write_str("the MAC address must be unicast (lowest bit of the first byte clear)")
            }
            ConfigError::TooManyRoutes => write!(
                f,
                "too many routes: gateway plus any-IP prefixes must be at most {MAX_ROUTES}"
            ),
            ConfigError::BadMaxConnections(n) => {
                write!(f, "max_connections {n} must be between 1 and 2^31")
            }
            ConfigError::OutOfMemory { what, bytes } => write!(
                f,
                "could not reserve {bytes} bytes for the {what}: lower max_connections or free memory"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// smoltcp's default `IFACE_MAX_ADDR_COUNT` and `IFACE_MAX_ROUTE_COUNT`.
const MAX_ADDRS: usize = 2;
const MAX_ROUTES: usize = 2;

impl Config {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.addrs.is_empty() {
            return Err(ConfigError::NoAddress);
        }
        if !self.ipv6_addrs.is_empty() && !crate::IPV6 {
            return Err(ConfigError::Ipv6NotBuilt);
        }
        let count = self.addrs.len() + self.ipv6_addrs.len();
        if count > MAX_ADDRS {
            return Err(ConfigError::TooManyAddresses(count));
        }
        if let Some(&(_, p)) = self.addrs.iter().chain(&self.any_ip).find(|a| a.1 > 32) {
            return Err(ConfigError::BadPrefix(p));
        }
        if let Some(&(_, p)) = self.ipv6_addrs.iter().find(|a| a.1 > 128) {
            return Err(ConfigError::BadPrefix(p));
        }
        if self.mac[0] & 1 != 0 || self.mac == [0; 6] {
            return Err(ConfigError::BadMac);
        }
        if usize::from(self.gateway.is_some()) + self.any_ip.len() > MAX_ROUTES {
            return Err(ConfigError::TooManyRoutes);
        }
        if self.max_connections == 0 || self.max_connections > 1 << 31 {
            return Err(ConfigError::BadMaxConnections(self.max_connections));
        }
        Ok(())
    }
}

/// SplitMix64 of `seed` and a stream number: independent keys from one seed.
pub(crate) fn mix(seed: u64, stream: u64) -> u64 {
    let mut z = seed.wrapping_add(stream.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_need_the_feature() {
        let config = Config {
            addrs: vec![(Ipv4Addr::new(198, 18, 0, 10), 24)],
            ipv6_addrs: vec![(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x10), 64)],
            ..Config::default()
        };
        let expected = if cfg!(feature = "ipv6") {
            Ok(())
        } else {
            Err(ConfigError::Ipv6NotBuilt)
        };
        assert_eq!(config.validate(), expected);
    }
}
