//! A fast hasher for the scheduler's integer-keyed maps.
//!
//! The standard SipHash resists hash flooding, which costs tens of
//! nanoseconds per lookup; the maps keyed by numbers the scheduler hands
//! out itself (connections, `(job, queue)` slab pairs) or that the daemon
//! chooses (message ids) are looked up several times per delivery and
//! cannot be flooded from outside, so they use this multiply-rotate hash
//! (rustc's FxHash); so do the daemon's maps keyed by the same connection
//! and message ids. Maps keyed by names that arrive in mail (queue names)
//! keep SipHash.
//!
//! Invariant: the hash is a pure function of the key (no random seed), so
//! runs are reproducible; no code iterates these maps where order matters.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// FxHash's multiplier (the 64-bit golden-ratio constant's odd cousin).
const K: u64 = 0xf135_7aea_2e62_a9c5;

/// FxHash: one rotate, xor and multiply per word.
#[derive(Clone, Copy, Debug, Default)]
pub struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // Why rotate: a multiply mixes upwards only, and the table takes
        // its bucket from the low bits.
        self.hash.rotate_left(26)
    }
}

/// A `HashMap` with [`FxHasher`].
pub type FxHashMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_keys_spread_and_round_trip() {
        let mut m: FxHashMap<(u32, u32), u32> = FxHashMap::default();
        for i in 0..10_000u32 {
            m.insert((i / 100, i % 100), i);
        }
        for i in 0..10_000u32 {
            assert_eq!(m.get(&(i / 100, i % 100)), Some(&i));
        }
        let mut low = std::collections::HashSet::new();
        for i in 0..1024u64 {
            let mut h = FxHasher::default();
            h.write_u64(i);
            low.insert(h.finish() & 1023);
        }
        assert!(low.len() > 512, "low bits poorly spread: {}", low.len());
    }
}
