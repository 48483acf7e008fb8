//! A cheap hash for the tables a transport keys by endpoint, such as its routes,
//! which a send looks up once per frame.

use crate::Endpoint;
use std::hash::{BuildHasherDefault, Hasher};

/// A map keyed by endpoints, hashed with [`EndpointHasher`].
pub type EndpointMap<V> =
    std::collections::HashMap<Endpoint, V, BuildHasherDefault<EndpointHasher>>;

/// A set of endpoints, hashed with [`EndpointHasher`].
pub type EndpointSet = std::collections::HashSet<Endpoint, BuildHasherDefault<EndpointHasher>>;

/// A multiply-and-rotate hash of a few words (the scheme of rustc's `FxHasher`).
///
/// Meant for keys a transport admits itself: the endpoints it connected to, and those
/// that proved who they are when they connected, one endpoint per connection. Never
/// for keys a peer can pick freely and in numbers: it does not resist keys chosen to
/// collide, which std's keyed SipHash does at a cost larger than the rest of a send
/// of a small frame.
#[derive(Debug, Default, Clone, Copy)]
pub struct EndpointHasher(u64);

impl EndpointHasher {
    const K: u64 = 0xf135_7aea_2e62_a9c5;

    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(26) ^ word).wrapping_mul(Self::K);
    }
}

impl Hasher for EndpointHasher {
    #[inline]
    fn finish(&self) -> u64 {
        // The table takes its buckets from the low bits and its tags from the high
        // ones: fold the well-mixed high half down.
        self.0 ^ (self.0 >> 32)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.add(u64::from(byte));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u16(&mut self, n: u16) {
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
    fn write_isize(&mut self, n: isize) {
        self.add(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeId;
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    #[test]
    fn endpoints_hash_apart() {
        let build = BuildHasherDefault::<EndpointHasher>::default();
        let endpoints = (0..1000)
            .map(|n| Endpoint::Node(NodeId(n)))
            .chain((0..1000).map(Endpoint::Role));
        let hashes: HashSet<u64> = endpoints.map(|e| build.hash_one(e)).collect();
        assert_eq!(hashes.len(), 2000);
        let mut map = EndpointMap::default();
        for n in 0..100 {
            map.insert(Endpoint::Node(NodeId(n)), n);
        }
        assert!((0..100).all(|n| map[&Endpoint::Node(NodeId(n))] == n));
    }
}
