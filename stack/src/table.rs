//! The demux table: 4-tuple → connection slot, in O(1) before smoltcp sees a frame.
//!
//! Open addressing with linear probing over a power-of-two array of `u32` slot indices,
//! at most half full (so a hit costs about 1.5 probes), with backward-shift deletion (no
//! tombstones, so long-running churn does not degrade it). Keys are not stored in the
//! table: each bucket holds only a slot index, and the caller supplies the slot's 4-tuple
//! for comparison, so the table costs 4 bytes per bucket — about 8 to 16 bytes per
//! connection.
//!
//! Remote peers choose the 4-tuples, so buckets are chosen by SipHash-1-3 under a secret
//! 128-bit key (from the stack's [`Config::seed`](crate::Config)): an attacker cannot make
//! the probe sequences collide on purpose.

use std::hash::Hasher;

use siphasher::sip::SipHasher13;

use crate::mem::{HugePages, Region};

/// A TCP connection's identity as seen from this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FourTuple {
    /// The peer's IPv4 address (host byte order).
    pub remote_addr: u32,
    /// Our IPv4 address (host byte order).
    pub local_addr: u32,
    /// The peer's port.
    pub remote_port: u16,
    /// Our port.
    pub local_port: u16,
}

const EMPTY: u32 = u32::MAX;

/// The 4-tuple → slot index map.
#[derive(Debug)]
pub struct Table {
    buckets: Region<u32>,
    mask: usize,
    len: usize,
    keys: (u64, u64),
}

impl Table {
    /// A table for up to `capacity` entries, hashed under the secret `keys`.
    pub fn new(capacity: usize, keys: (u64, u64), hugepages: HugePages) -> Option<Self> {
        let buckets = capacity
            .max(4)
            .checked_mul(2)?
            .checked_next_power_of_two()?;
        Some(Table {
            buckets: Region::new(buckets, hugepages, |_| EMPTY)?,
            mask: buckets - 1,
            len: 0,
            keys,
        })
    }

    /// The bucket where the probe for `key` starts.
    pub(crate) fn home(&self, key: &FourTuple) -> usize {
        let mut h = SipHasher13::new_with_keys(self.keys.0, self.keys.1);
        h.write_u64((u64::from(key.remote_addr) << 32) | u64::from(key.local_addr));
        h.write_u32((u32::from(key.remote_port) << 16) | u32::from(key.local_port));
        h.finish() as usize & self.mask
    }

    /// The slot holding `key`; `key_of(slot)` gives the 4-tuple of a stored slot.
    pub fn find(&self, key: &FourTuple, key_of: impl Fn(u32) -> FourTuple) -> Option<u32> {
        self.find_from(self.home(key), key, key_of)
    }

    /// [`find`](Self::find) with the home bucket already computed.
    pub(crate) fn find_from(
        &self,
        home: usize,
        key: &FourTuple,
        key_of: impl Fn(u32) -> FourTuple,
    ) -> Option<u32> {
        let mut i = home & self.mask;
        loop {
            let slot = self.buckets[i];
            if slot == EMPTY {
                return None;
            }
            if key_of(slot) == *key {
                return Some(slot);
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
        let mut i = self.home(key);
        while self.buckets[i] != EMPTY {
            i = (i + 1) & self.mask;
        }
        self.buckets[i] = slot;
        self.len += 1;
        true
    }

    /// Removes `key`; returns its slot. Later entries of the probe run shift back so that
    /// no tombstone is left.
    pub fn remove(&mut self, key: &FourTuple, key_of: impl Fn(u32) -> FourTuple) -> Option<u32> {
        let mut hole = self.home(key);
        loop {
            let slot = self.buckets[hole];
            if slot == EMPTY {
                return None;
            }
            if key_of(slot) == *key {
                break;
            }
            hole = (hole + 1) & self.mask;
        }
        let removed = self.buckets[hole];
        let mut j = hole;
        loop {
            j = (j + 1) & self.mask;
            let slot = self.buckets[j];
            if slot == EMPTY {
                break;
            }
            let home = self.home(&key_of(slot));
            // Move `slot` into the hole unless its home lies cyclically in (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.buckets[hole] = slot;
                hole = j;
            }
        }
        self.buckets[hole] = EMPTY;
        self.len -= 1;
        Some(removed)
    }

    /// Starts loading bucket `home` into the cache.
    pub(crate) fn prefetch(&self, home: usize) {
        crate::mem::prefetch(&self.buckets[home & self.mask]);
    }

    /// The slot in bucket `home` (the likely match), if any.
    pub(crate) fn first(&self, home: usize) -> Option<u32> {
        let slot = self.buckets[home & self.mask];
        (slot != EMPTY).then_some(slot)
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
            remote_addr: 0xc613_0000 | (n >> 16),
            local_addr: 0xc612_000a,
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
                }
            }
        }
    }
}
