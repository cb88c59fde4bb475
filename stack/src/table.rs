//! The demux table: 4-tuple → connection slot, in O(1) before smoltcp sees a frame.
//!
//! Open addressing with linear probing over a power-of-two array of buckets, at most half
//! full (so a hit costs about 1.5 probes), with backward-shift deletion (no tombstones, so
//! long-running churn does not degrade it). Keys are not stored in the table: the caller
//! supplies a slot's 4-tuple for comparison. Each 8-byte bucket holds the slot index and
//! the low 32 bits of the key's hash, so that
//! - a probe compares hashes first and reads a slot's 4-tuple (a cache miss among
//!   millions of connections) only for the one bucket that matches, not for the half a
//!   bucket a probe passes on average;
//! - [`guess`](Table::guess) can name the right slot to prefetch from the bucket line
//!   alone;
//! - backward-shift deletion finds a moved entry's home without reading its slot.
//!
//! That costs 16 to 32 bytes per connection.
//!
//! Remote peers choose the 4-tuples, so buckets are chosen by SipHash-1-3 under a secret
//! 128-bit key (from the stack's [`Config::seed`](crate::Config)): an attacker cannot make
//! the probe sequences collide on purpose.

use std::hash::Hasher;
#[cfg(feature = "ipv6")]
use std::net::Ipv6Addr;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use smoltcp::wire::IpAddress;

use siphasher::sip::SipHasher13;

use crate::mem::{HugePages, Region};

/// An address in a [`FourTuple`]: an IPv4 address in host byte order, 4 bytes a
/// connection.
#[cfg(not(feature = "ipv6"))]
pub type Addr = u32;

/// An address in a [`FourTuple`]: with the `ipv6` feature an IPv6 address, IPv4 ones
/// IPv4-mapped (`::ffff:a.b.c.d`), 16 bytes a connection.
#[cfg(feature = "ipv6")]
pub type Addr = Ipv6Addr;

/// The [`Addr`] of an IPv4 address.
pub fn addr_v4(a: Ipv4Addr) -> Addr {
    #[cfg(not(feature = "ipv6"))]
    return u32::from(a);
    #[cfg(feature = "ipv6")]
    return a.to_ipv6_mapped();
}

/// The [`Addr`] of an address: `None` for IPv6 without the `ipv6` feature, and for an
/// IPv4-mapped IPv6 address (IPv4 is spoken as IPv4).
pub(crate) fn addr(a: IpAddr) -> Option<Addr> {
    match a {
        IpAddr::V4(a) => Some(addr_v4(a)),
        #[cfg(feature = "ipv6")]
        IpAddr::V6(a) if a.to_ipv4_mapped().is_none() => Some(a),
        IpAddr::V6(_) => None,
    }
}

/// An [`Addr`] as smoltcp's address.
pub(crate) fn ip(a: Addr) -> IpAddress {
    #[cfg(not(feature = "ipv6"))]
    return IpAddress::Ipv4(Ipv4Addr::from(a));
    #[cfg(feature = "ipv6")]
    return match a.to_ipv4_mapped() {
        Some(v4) => IpAddress::Ipv4(v4),
        None => IpAddress::Ipv6(a),
    };
}

/// An [`Addr`] as the standard library's address.
pub(crate) fn std_ip(a: Addr) -> IpAddr {
    #[cfg(not(feature = "ipv6"))]
    return IpAddr::V4(Ipv4Addr::from(a));
    #[cfg(feature = "ipv6")]
    return a.to_canonical();
}

/// A TCP connection's identity as seen from this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FourTuple {
    /// The peer's address.
    pub remote_addr: Addr,
    /// Our address.
    pub local_addr: Addr,
    /// The peer's port.
    pub remote_port: u16,
    /// Our port.
    pub local_port: u16,
}

impl Default for FourTuple {
    fn default() -> Self {
        FourTuple::NONE
    }
}

impl FourTuple {
    /// Unspecified addresses and ports 0.
    pub(crate) const NONE: FourTuple = FourTuple {
        #[cfg(not(feature = "ipv6"))]
        remote_addr: 0,
        #[cfg(not(feature = "ipv6"))]
        local_addr: 0,
        #[cfg(feature = "ipv6")]
        remote_addr: Ipv4Addr::UNSPECIFIED.to_ipv6_mapped(),
        #[cfg(feature = "ipv6")]
        local_addr: Ipv4Addr::UNSPECIFIED.to_ipv6_mapped(),
        remote_port: 0,
        local_port: 0,
    };

    /// The peer's address and port.
    pub fn remote(&self) -> SocketAddr {
        SocketAddr::new(std_ip(self.remote_addr), self.remote_port)
    }

    /// Our address and port.
    pub fn local(&self) -> SocketAddr {
        SocketAddr::new(std_ip(self.local_addr), self.local_port)
    }

    /// Feeds the two addresses to `h` (the demux table's bucket hash, SYN cookies' MAC):
    /// IPv4 ones as one `u64`, `remote << 32 | local`, in every build, IPv6 ones as two
    /// `u128`s — as the XDP program makes cookies ([`CookieKeys`](crate::CookieKeys)).
    pub(crate) fn write_addrs(&self, h: &mut impl Hasher) {
        #[cfg(not(feature = "ipv6"))]
        h.write_u64((u64::from(self.remote_addr) << 32) | u64::from(self.local_addr));
        #[cfg(feature = "ipv6")]
        match (
            self.remote_addr.to_ipv4_mapped(),
            self.local_addr.to_ipv4_mapped(),
        ) {
            (Some(r), Some(l)) => {
                h.write_u64((u64::from(r.to_bits()) << 32) | u64::from(l.to_bits()))
            }
            _ => {
                h.write_u128(self.remote_addr.to_bits());
                h.write_u128(self.local_addr.to_bits());
            }
        }
    }

    /// The key per-source limits count the peer under: its IPv4 address, or an IPv6
    /// peer's /64 folded to 32 bits (one host holds a whole /64; prefixes that fold alike
    /// share a limit).
    pub(crate) fn source(&self) -> u32 {
        #[cfg(not(feature = "ipv6"))]
        return self.remote_addr;
        #[cfg(feature = "ipv6")]
        return match self.remote_addr.to_ipv4_mapped() {
            Some(v4) => u32::from(v4),
            None => {
                let prefix = (self.remote_addr.to_bits() >> 64) as u64;
                (prefix >> 32) as u32 ^ prefix as u32
            }
        };
    }
}

/// A bucket: the key's hash (low 32 bits) above the slot index, stored inverted (`!slot`),
/// so that an empty bucket is all zeros and a fresh table needs no page written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket(u64);

/// The slot index no connection has: a bucket holding it is empty.
const EMPTY: u32 = u32::MAX;

impl Bucket {
    const EMPTY: Bucket = Bucket(0);

    fn new(hash: u32, slot: u32) -> Bucket {
        Bucket((u64::from(hash) << 32) | u64::from(!slot))
    }

    fn slot(self) -> Option<u32> {
        let slot = !(self.0 as u32);
        (slot != EMPTY).then_some(slot)
    }

    fn hash(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// The 4-tuple → slot index map.
#[derive(Debug)]
pub struct Table {
    /// [`Bucket`]s, as their `u64`s: zeros when mapped.
    buckets: Region<u64>,
    mask: usize,
    len: usize,
    keys: (u64, u64),
}

/// Probes [`Table::guess`] looks at before giving up (a hint may be wrong, never slow).
const GUESS_PROBES: usize = 8;

impl Table {
    /// A table for up to `capacity` entries, hashed under the secret `keys`. `None` when
    /// the memory cannot be had or `capacity` exceeds 2^31.
    pub fn new(capacity: usize, keys: (u64, u64), hugepages: HugePages) -> Option<Self> {
        let buckets = capacity
            .max(4)
            .checked_mul(2)?
            .checked_next_power_of_two()?;
        // A bucket keeps 32 bits of the hash, from which removal recovers the home.
        if buckets > 1 << 32 {
            return None;
        }
        Some(Table {
            buckets: Region::new_zeroed(buckets, hugepages)?,
            mask: buckets - 1,
            len: 0,
            keys,
        })
    }

    /// The hash of `key` under the table's secret keys (the 32 bits a bucket keeps).
    pub(crate) fn hash(&self, key: &FourTuple) -> u32 {
        let mut h = SipHasher13::new_with_keys(self.keys.0, self.keys.1);
        key.write_addrs(&mut h);
        h.write_u32((u32::from(key.remote_port) << 16) | u32::from(key.local_port));
        h.finish() as u32
    }

    fn home(&self, hash: u32) -> usize {
        hash as usize & self.mask
    }

    /// The slot holding `key`; `key_of(slot)` gives the 4-tuple of a stored slot.
    pub fn find(&self, key: &FourTuple, key_of: impl Fn(u32) -> FourTuple) -> Option<u32> {
        self.find_hashed(self.hash(key), key, key_of)
    }

    /// [`find`](Self::find) with the hash already computed.
    pub(crate) fn find_hashed(
        &self,
        hash: u32,
        key: &FourTuple,
        key_of: impl Fn(u32) -> FourTuple,
    ) -> Option<u32> {
        self.position(hash, key, key_of)
            .and_then(|i| self.bucket(i).slot())
    }

    /// The bucket index holding `key`.
    fn position(
        &self,
        hash: u32,
        key: &FourTuple,
        key_of: impl Fn(u32) -> FourTuple,
    ) -> Option<usize> {
        let mut i = self.home(hash);
        loop {
            let b = self.bucket(i);
            let slot = b.slot()?;
            if b.hash() == hash && key_of(slot) == *key {
                return Some(i);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Adds `slot` under `key`, which must not be present. `false` when the table is at
    /// capacity (half its buckets), so probing always terminates.
    pub fn insert(&mut self, key: &FourTuple, slot: u32) -> bool {
        debug_assert_ne!(slot, EMPTY);
        if self.len >= self.buckets.len() / 2 {
            return false;
        }
        let hash = self.hash(key);
        let mut i = self.home(hash);
        while self.bucket(i).slot().is_some() {
            i = (i + 1) & self.mask;
        }
        self.buckets[i] = Bucket::new(hash, slot).0;
        self.len += 1;
        true
    }

    /// Removes `key`; returns its slot. Later entries of the probe run shift back so that
    /// no tombstone is left.
    pub fn remove(&mut self, key: &FourTuple, key_of: impl Fn(u32) -> FourTuple) -> Option<u32> {
        let mut hole = self.position(self.hash(key), key, key_of)?;
        let removed = self.bucket(hole).slot();
        let mut j = hole;
        loop {
            j = (j + 1) & self.mask;
            let b = self.bucket(j);
            if b.slot().is_none() {
                break;
            }
            let home = self.home(b.hash());
            // Move the entry into the hole unless its home lies cyclically in (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.buckets[hole] = b.0;
                hole = j;
            }
        }
        self.buckets[hole] = Bucket::EMPTY.0;
        self.len -= 1;
        removed
    }

    fn bucket(&self, i: usize) -> Bucket {
        Bucket(self.buckets[i])
    }

    /// Faults every bucket's page in now (a stack that prefaults its memory).
    pub(crate) fn fault_in(&self) {
        self.buckets.fault_in();
    }

    /// Has `warmer` fault the buckets in, off the packet path: they are used at random
    /// from the first connection, and each first touch of a page would otherwise zero
    /// it on the worker.
    pub(crate) fn warm_with(&self, warmer: &crate::Warmer) {
        warmer.add_whole(&self.buckets);
    }

    /// Starts loading the home bucket of `hash` into the cache.
    pub(crate) fn prefetch(&self, hash: u32) {
        crate::mem::prefetch(&self.buckets[self.home(hash)]);
    }

    /// The slot of the first bucket in `hash`'s probe run whose hash matches: the slot
    /// that [`find_hashed`](Self::find_hashed) will most likely return, named without
    /// reading any slot (so that the caller can prefetch it).
    pub(crate) fn guess(&self, hash: u32) -> Option<u32> {
        let mut i = self.home(hash);
        for _ in 0..GUESS_PROBES {
            let b = self.bucket(i);
            let slot = b.slot()?;
            if b.hash() == hash {
                return Some(slot);
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// Entries stored.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes of memory the table holds.
    pub(crate) fn bytes(&self) -> usize {
        self.buckets.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn tuple(n: u32) -> FourTuple {
        FourTuple {
            remote_addr: addr_v4(Ipv4Addr::from(0xc613_0000 | (n >> 16))),
            local_addr: addr_v4(Ipv4Addr::new(198, 18, 0, 10)),
            remote_port: n as u16,
            local_port: 80,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Random inserts and removes against a HashMap model, in a table small enough to
        /// wrap around and to form long probe runs.
        #[test]
        fn matches_a_hashmap(ops in proptest::collection::vec((any::<bool>(), 0u32..48), 1..400)) {
            let mut keys: Vec<FourTuple> = Vec::new();
            let mut table = Table::new(32, (1, 2), HugePages::Off).unwrap();
            let mut model: HashMap<FourTuple, u32> = HashMap::new();
            for (add, n) in ops {
                let key = tuple(n);
                let key_of = |s: u32| keys[s as usize];
                if add && !model.contains_key(&key) {
                    let slot = keys.len() as u32;
                    let ok = table.insert(&key, slot);
                    prop_assert_eq!(ok, model.len() < 32);
                    if ok {
                        keys.push(key);
                        model.insert(key, slot);
                    }
                } else if !add {
                    prop_assert_eq!(table.remove(&key, key_of), model.remove(&key));
                }
                let key_of = |s: u32| keys[s as usize];
                prop_assert_eq!(table.len(), model.len());
                for n in 0..48 {
                    let k = tuple(n);
                    prop_assert_eq!(table.find(&k, key_of), model.get(&k).copied());
                    // A guess names a slot whose key hashes alike, and is right for keys
                    // near their home bucket.
                    let h = table.hash(&k);
                    if let Some(g) = table.guess(h) {
                        prop_assert_eq!(table.hash(&key_of(g)), h);
                    }
                    if let Some(&slot) = model.get(&k)
                        && table.bucket(table.home(h)).slot() == Some(slot)
                    {
                        prop_assert_eq!(table.guess(h), Some(slot));
                    }
                }
            }
        }
    }
}
