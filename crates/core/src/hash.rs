//! A fast keyed hasher for the stack's demultiplexing tables.
//!
//! std's SipHash is strong but slow for a lookup per packet; an unkeyed fast
//! hash lets a remote peer choose addresses that collide. This is a
//! multiply-rotate hash (in the spirit of FxHash) whose state starts from a
//! per-stack random key, so collisions cannot be precomputed offline.

use core::hash::{BuildHasher, Hasher};

#[derive(Clone, Copy, Debug)]
pub struct KeyedState {
    key: u64,
}

impl KeyedState {
    pub fn new(key: u64) -> KeyedState {
        KeyedState { key }
    }
}

impl BuildHasher for KeyedState {
    type Hasher = KeyedHasher;
    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher { hash: self.key }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct KeyedHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl KeyedHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for KeyedHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // A final avalanche so that the low bits (which hashbrown uses for
        // the bucket) depend on every input bit.
        let mut z = self.hash;
        z = (z ^ (z >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        z ^ (z >> 33)
    }
}

pub type KeyedMap<K, V> = std::collections::HashMap<K, V, KeyedState>;
