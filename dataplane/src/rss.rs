//! RSS-aware local ports for active opens.
//!
//! With N queues the NIC picks the rx queue of every frame by its RSS hash: the Toeplitz
//! hash of the TCP 4-tuple under a secret key (40 bytes or more), reduced through the
//! indirection table (RETA) to a queue. A connection that worker q opens lives on worker
//! q, so its replies must hash to queue q, or they land on a worker that has no such
//! connection. [`RssPorts`] picks local ports for which they do, for IPv4 and IPv6.
//!
//! The hash input is the *received* reply's fields, in packet order: source address
//! (the remote), destination address (ours), source port (the remote's), destination
//! port (ours) — 12 bytes for IPv4, 36 for IPv6 (16-byte addresses), as in Microsoft's
//! "RSS hashing functions" specification, which every NIC driver follows for `tcp4` and
//! `tcp6` flows with hash fields `sdfn` (the usual default; `ethtool -n IFACE
//! rx-flow-hash tcp6` shows them).
//!
//! The key and RETA come from `ethtool -x IFACE` ([`Rss::read`]). A driver without RSS
//! (veth: a frame sent on the peer's tx queue i arrives on rx queue i) has neither; then
//! [`chooser`] falls back to the stack's [`SequentialPorts`] and logs that replies may
//! land on another queue.
//!
//! Toeplitz is linear over XOR, so the hash of n bytes is the XOR of one table entry per
//! byte: [`Toeplitz`] precomputes 36 × 256 words (36 KiB, once per interface) and hashes
//! in one lookup per byte; a port candidate costs two.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::Arc;

use c10m_stack::{PortChooser, SequentialPorts};

/// Bytes of hash input for IPv6 with TCP ports, the longest input.
const MAX_INPUT: usize = 36;

/// The Toeplitz hash over inputs of up to 36 bytes (IPv6 with TCP ports), with per-byte
/// tables.
#[derive(Clone)]
pub struct Toeplitz {
    table: Box<[[u32; 256]; MAX_INPUT]>,
}

impl std::fmt::Debug for Toeplitz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Toeplitz").finish_non_exhaustive()
    }
}

/// The 32 key bits starting at bit `bit` (the key's first bit is the MSB of byte 0).
fn window(key: &[u8], bit: usize) -> u32 {
    let byte = bit / 8;
    let mut w = 0u64;
    for i in 0..5 {
        w = (w << 8) | u64::from(key.get(byte + i).copied().unwrap_or(0));
    }
    (w >> (8 - bit % 8)) as u32
}

impl Toeplitz {
    /// Tables for `key`; `None` if the key is too short to hash 36 bytes (40 bytes, the
    /// size NICs use).
    pub fn new(key: &[u8]) -> Option<Toeplitz> {
        if key.len() < MAX_INPUT + 4 {
            return None;
        }
        let mut table = Box::new([[0u32; 256]; MAX_INPUT]);
        for (pos, row) in table.iter_mut().enumerate() {
            for (value, entry) in row.iter_mut().enumerate() {
                *entry = (0..8)
                    .filter(|b| value & (0x80 >> b) != 0)
                    .fold(0, |h, b| h ^ window(key, pos * 8 + b));
            }
        }
        Some(Toeplitz { table })
    }

    /// The hash of `input` (its first 36 bytes).
    pub fn hash(&self, input: &[u8]) -> u32 {
        input
            .iter()
            .zip(self.table.iter())
            .fold(0, |h, (&b, row)| h ^ row[usize::from(b)])
    }

    /// The hash a NIC computes for a received TCP segment from `src` to `dst`; `None`
    /// when the two are of different families.
    pub fn hash_tcp(&self, src: SocketAddr, dst: SocketAddr) -> Option<u32> {
        let (input, len) = input(src, dst)?;
        Some(self.hash(&input[..len]))
    }

    /// What the destination port's two bytes add to the hash of an input `len` bytes
    /// long (12 or 36), whose last two bytes they are.
    fn dst_port(&self, len: usize, port: u16) -> u32 {
        let [hi, lo] = port.to_be_bytes();
        self.table[len - 2][usize::from(hi)] ^ self.table[len - 1][usize::from(lo)]
    }
}

/// The hash input of a segment from `src` to `dst` and its length: 12 bytes for IPv4,
/// 36 for IPv6; `None` for mixed families.
fn input(src: SocketAddr, dst: SocketAddr) -> Option<([u8; MAX_INPUT], usize)> {
    let mut b = [0u8; MAX_INPUT];
    let n = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            b[0..4].copy_from_slice(&s.octets());
            b[4..8].copy_from_slice(&d.octets());
            8
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            b[0..16].copy_from_slice(&s.octets());
            b[16..32].copy_from_slice(&d.octets());
            32
        }
        _ => return None,
    };
    b[n..n + 2].copy_from_slice(&src.port().to_be_bytes());
    b[n + 2..n + 4].copy_from_slice(&dst.port().to_be_bytes());
    Some((b, n + 4))
}

/// An interface's RSS configuration: the hash and the indirection table.
#[derive(Debug, Clone)]
pub struct Rss {
    hash: Toeplitz,
    reta: Vec<u32>,
}

/// Why an interface's RSS key and table are not known.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RssError {
    /// `ethtool` could not run.
    #[error("running `ethtool -x {iface}`: {source}")]
    Ethtool {
        /// The interface.
        iface: String,
        /// Why.
        source: std::io::Error,
    },
    /// `ethtool` refused (a driver without RSS, no such interface).
    #[error("`ethtool -x {iface}`: {message}")]
    Refused {
        /// The interface.
        iface: String,
        /// What it said.
        message: String,
    },
    /// A RETA entry that is no queue number.
    #[error("bad RETA entry {0:?}")]
    Entry(String),
    /// A key that is not hex bytes.
    #[error("no readable RSS key ({0:?})")]
    Key(String),
    /// A hash function other than Toeplitz.
    #[error("the RSS hash is {0}, not toeplitz")]
    Function(String),
    /// No key in the output.
    #[error("no RSS hash key")]
    NoKey,
    /// No table, or a key too short.
    #[error("no indirection table or key too short")]
    NoTable,
}

impl Rss {
    /// From a key and a non-empty RETA (entry i: the queue of hashes `h % len == i`).
    pub fn new(key: &[u8], reta: Vec<u32>) -> Option<Rss> {
        if reta.is_empty() {
            return None;
        }
        Some(Rss {
            hash: Toeplitz::new(key)?,
            reta,
        })
    }

    /// Reads the key and RETA of `iface` with `ethtool -x`. `Err` says why there is
    /// none (no ethtool, a driver without RSS, a hash function other than Toeplitz).
    pub fn read(iface: &str) -> Result<Rss, RssError> {
        let out = Command::new("ethtool")
            .args(["-x", iface])
            .output()
            .map_err(|source| RssError::Ethtool {
                iface: iface.to_owned(),
                source,
            })?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(RssError::Refused {
                iface: iface.to_owned(),
                message: err.trim().to_owned(),
            });
        }
        Rss::parse_ethtool(&String::from_utf8_lossy(&out.stdout))
    }

    /// Parses the output of `ethtool -x IFACE`.
    pub fn parse_ethtool(text: &str) -> Result<Rss, RssError> {
        let mut reta = Vec::new();
        let mut key = None;
        let mut lines = text.lines().map(str::trim);
        while let Some(line) = lines.next() {
            if let Some((index, entries)) = line.split_once(':')
                && !index.is_empty()
                && index.bytes().all(|b| b.is_ascii_digit())
            {
                for e in entries.split_whitespace() {
                    reta.push(e.parse().map_err(|_| RssError::Entry(e.to_owned()))?);
                }
            } else if line.starts_with("RSS hash key") {
                let hex = lines.next().unwrap_or_default();
                let bytes: Result<Vec<u8>, _> = hex
                    .split(':')
                    .map(|b| u8::from_str_radix(b.trim(), 16))
                    .collect();
                key = Some(bytes.map_err(|_| RssError::Key(hex.to_owned()))?);
            } else if let Some((func, state)) = line.split_once(':')
                && state.trim() == "on"
                && func != "toeplitz"
            {
                return Err(RssError::Function(func.to_owned()));
            }
        }
        let key = key.ok_or(RssError::NoKey)?;
        Rss::new(&key, reta).ok_or(RssError::NoTable)
    }

    /// The queue of a hash.
    pub fn queue(&self, hash: u32) -> u32 {
        self.reta[hash as usize % self.reta.len()]
    }

    /// The queue on which a reply from `remote` to `local` arrives; `None` when the two
    /// are of different families.
    pub fn reply_queue(&self, local: SocketAddr, remote: SocketAddr) -> Option<u32> {
        self.hash.hash_tcp(remote, local).map(|h| self.queue(h))
    }

    /// Whether some RETA entry points at `queue`.
    pub fn covers(&self, queue: u32) -> bool {
        self.reta.contains(&queue)
    }

    /// The highest queue in the RETA.
    pub fn max_queue(&self) -> u32 {
        self.reta.iter().copied().max().unwrap_or(0)
    }
}

/// Picks local ports whose replies hash to one queue (the `rss` module's docs in the source
/// explain the Toeplitz hash and the veth fallback).
#[derive(Debug, Clone)]
pub struct RssPorts {
    rss: Arc<Rss>,
    queue: u32,
    ports: SequentialPorts,
}

impl RssPorts {
    /// For the worker of `queue`, over ports `first..=last` (`first` > 0).
    pub fn new(rss: Arc<Rss>, queue: u32, first: u16, last: u16) -> RssPorts {
        RssPorts {
            rss,
            queue,
            ports: SequentialPorts::new(first, last),
        }
    }

    /// Over Linux's default ephemeral range, 32768–60999.
    pub fn ephemeral(rss: Arc<Rss>, queue: u32) -> RssPorts {
        RssPorts::new(rss, queue, 32768, 60999)
    }
}

impl PortChooser for RssPorts {
    fn choose(
        &mut self,
        local: IpAddr,
        remote: SocketAddr,
        in_use: &mut dyn FnMut(u16) -> bool,
    ) -> Option<u16> {
        // The fixed part of the input once (the reply's destination port zero); then
        // two lookups per candidate port.
        let Some((input, len)) = input(remote, SocketAddr::new(local, 0)) else {
            // Mixed families cannot be connected: no port helps.
            return self.ports.scan(|port| !in_use(port));
        };
        let (rss, queue) = (&self.rss, self.queue);
        let base = rss.hash.hash(&input[..len]);
        self.ports.scan(|port| {
            let hash = base ^ rss.hash.dst_port(len, port);
            rss.queue(hash) == queue && !in_use(port)
        })
    }
}

/// The port chooser for the worker of `queue`: [`RssPorts`] when the
/// interface's RSS is known and covers the queue, else [`SequentialPorts`] with a log
/// line when replies may land on another queue.
pub(crate) fn chooser(rss: Option<&Arc<Rss>>, queue: u32) -> Box<dyn PortChooser> {
    match rss {
        Some(rss) if rss.covers(queue) => Box::new(RssPorts::ephemeral(rss.clone(), queue)),
        Some(_) => {
            tracing::warn!(
                "queue {queue} is not in the RSS indirection table: its active opens use \
                 sequential ports and their replies land on other queues"
            );
            Box::new(SequentialPorts::default())
        }
        None => Box::new(SequentialPorts::default()),
    }
}

/// Reads the RSS configuration of `iface` for `queues` workers, logging what follows.
pub(crate) fn for_workers(iface: &str, queues: u32) -> Option<Arc<Rss>> {
    match Rss::read(iface) {
        Ok(rss) => {
            if rss.max_queue() >= queues {
                tracing::warn!(
                    "{iface}: the RSS table spreads flows over {} queues but {queues} workers \
                     run: set `ethtool -L {iface} combined {queues}` or `ethtool -X {iface} \
                     equal {queues}`",
                    rss.max_queue() + 1
                );
            }
            Some(Arc::new(rss))
        }
        Err(why) => {
            if queues > 1 {
                tracing::warn!(
                    "{iface}: no RSS key and table ({why}): active opens use sequential \
                     local ports, so their replies may land on another queue's worker"
                );
            } else {
                tracing::debug!("{iface}: no RSS ({why}); one queue, so it does not matter");
            }
            None
        }
    }
}

#[cfg(test)]
#[path = "rss/tests.rs"]
mod tests;
