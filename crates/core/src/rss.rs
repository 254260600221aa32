//! Receive-side scaling: the Toeplitz hash that decides which shard (core,
//! device queue) a flow belongs to.
//!
//! Microsoft's RSS specification ("Verifying the RSS Hash Calculation")
//! defines the hash: "for each bit b of the input, from the most significant
//! bit of the first byte: if b is set, result ^= the left-most 32 bits of
//! K; then shift K left by one bit." The input is the source address, the
//! destination address, the source port and the destination port, in network
//! byte order (12 bytes for TCP or UDP over IPv4, 36 over IPv6).
//!
//! The hash is linear in its input, so it is computed here one input byte at
//! a time from a table per byte position: `table[i][b]` is the XOR of the key
//! windows that the set bits of byte value `b` select at position `i`. A
//! 4-tuple over IPv4 costs twelve table reads and XORs, and nothing is
//! allocated after [`Toeplitz::new`].
//!
//! **Symmetry.** With [`SYMMETRIC_KEY`] (the 16-bit pattern `0x6d5a`
//! repeated, Woo and Park, "Scalable TCP Session Monitoring with Symmetric
//! Receive-side Scaling", 2012), the key repeats every 16 bits, so moving an
//! input field by a multiple of 16 bits selects the same key windows: the
//! hash of (a, b, p, q) equals the hash of (b, a, q, p). Both directions of
//! a connection then land on the same shard, which is what lets each shard
//! own its connections whole. It is the default key.
//!
//! A hash becomes a queue through an indirection table, as NICs do: the low
//! seven bits pick one of 128 entries, entry `i` holding queue `i % n`
//! ([`queue_of`]).

use std::net::Ipv4Addr;

/// Bytes of key an RSS key has (Microsoft's and most NICs').
pub const KEY_LEN: usize = 40;

/// The longest input the hash takes: the IPv6 4-tuple (16 + 16 + 2 + 2).
pub const MAX_INPUT: usize = KEY_LEN - 4;

/// The symmetric key: `0x6d5a` repeated. The default, so that both
/// directions of a flow hash alike.
pub const SYMMETRIC_KEY: [u8; KEY_LEN] = {
    let mut k = [0u8; KEY_LEN];
    let mut i = 0;
    while i < KEY_LEN {
        k[i] = if i % 2 == 0 { 0x6d } else { 0x5a };
        i += 1;
    }
    k
};

/// The key of Microsoft's RSS verification suite (and of many NICs'
/// defaults); not symmetric.
pub const MICROSOFT_KEY: [u8; KEY_LEN] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0, 0xd0, 0xca, 0x2b,
    0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac,
    0x01, 0xfa,
];

/// Entries of the indirection table ([`queue_of`]): the hash's low 7 bits.
pub const INDIRECTION_ENTRIES: u32 = 128;

/// The queue (shard) of `queues` that a hash selects: entry `hash & 127` of
/// an indirection table whose entry `i` is `i % queues`. `queues` must be
/// at least 1.
#[inline]
pub fn queue_of(hash: u32, queues: usize) -> usize {
    ((hash & (INDIRECTION_ENTRIES - 1)) as usize) % queues.max(1)
}

/// A Toeplitz hash for one key, table-driven (see the module docs).
#[derive(Clone)]
pub struct Toeplitz {
    key: [u8; KEY_LEN],
    /// `table[i][b]`: the hash contribution of byte value `b` at input
    /// position `i`.
    table: Box<[[u32; 256]; MAX_INPUT]>,
}

impl std::fmt::Debug for Toeplitz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Toeplitz").field("key", &self.key).finish_non_exhaustive()
    }
}

impl Default for Toeplitz {
    /// The symmetric key.
    fn default() -> Self {
        Toeplitz::new(&SYMMETRIC_KEY)
    }
}

impl Toeplitz {
    /// The hash for `key`, with its tables built (36 KiB, once).
    pub fn new(key: &[u8; KEY_LEN]) -> Toeplitz {
        let mut table = Box::new([[0u32; 256]; MAX_INPUT]);
        for (i, row) in table.iter_mut().enumerate() {
            // The key window for each of this byte's eight bits, most
            // significant bit first.
            let mut windows = [0u32; 8];
            for (j, w) in windows.iter_mut().enumerate() {
                *w = key_window(key, i * 8 + j);
            }
            for (b, entry) in row.iter_mut().enumerate() {
                let mut h = 0;
                for (j, w) in windows.iter().enumerate() {
                    if b & (0x80 >> j) != 0 {
                        h ^= w;
                    }
                }
                *entry = h;
            }
        }
        Toeplitz { key: *key, table }
    }

    /// The key the tables were built from.
    pub fn key(&self) -> &[u8; KEY_LEN] {
        &self.key
    }

    /// The hash of `input` (at most [`MAX_INPUT`] bytes; bytes beyond are
    /// ignored).
    #[inline]
    pub fn hash(&self, input: &[u8]) -> u32 {
        let mut h = 0;
        for (row, &b) in self.table.iter().zip(input) {
            h ^= row[usize::from(b)];
        }
        h
    }

    /// The hash of a TCP or UDP flow over IPv4: source address, destination
    /// address, source port, destination port.
    #[inline]
    pub fn hash_v4(&self, src: Ipv4Addr, dst: Ipv4Addr, src_port: u16, dst_port: u16) -> u32 {
        let mut input = [0u8; 12];
        input[0..4].copy_from_slice(&src.octets());
        input[4..8].copy_from_slice(&dst.octets());
        input[8..10].copy_from_slice(&src_port.to_be_bytes());
        input[10..12].copy_from_slice(&dst_port.to_be_bytes());
        self.hash(&input)
    }

    /// The hash of an IPv4 address pair alone (RSS's "IPv4" hash type, for
    /// packets with no ports: fragments, ICMP).
    #[inline]
    pub fn hash_v4_addrs(&self, src: Ipv4Addr, dst: Ipv4Addr) -> u32 {
        let mut input = [0u8; 8];
        input[0..4].copy_from_slice(&src.octets());
        input[4..8].copy_from_slice(&dst.octets());
        self.hash(&input)
    }

    /// The RSS hash of an Ethernet frame: the 4-tuple of an unfragmented
    /// IPv4 TCP or UDP packet, else the address pair of any other IPv4
    /// packet; `None` for what is not IPv4 (ARP) or is too short to say.
    /// Reads at most the first 38 bytes past the IP header's start and never
    /// panics.
    #[inline]
    pub fn hash_frame(&self, frame: &[u8]) -> Option<u32> {
        let flow = FrameFlow::parse(frame)?;
        Some(match flow.ports {
            Some((sp, dp)) => self.hash_v4(flow.src, flow.dst, sp, dp),
            None => self.hash_v4_addrs(flow.src, flow.dst),
        })
    }
}

/// Which shard of several a stack is, and the hash that assigns flows to
/// shards: with it set ([`Stack::set_shard`]), `tcp_connect` picks only
/// ephemeral ports whose flow hashes back to this shard, so the replies to
/// an active open arrive on the shard that opened it (RFC 6056's port
/// choice, with one more test on each candidate port).
#[derive(Clone, Debug)]
pub struct ShardHome {
    toeplitz: Toeplitz,
    shard: usize,
    shards: usize,
}

impl ShardHome {
    /// Shard `shard` of `shards` (at least 1), steering by `toeplitz`.
    pub fn new(toeplitz: Toeplitz, shard: usize, shards: usize) -> ShardHome {
        let shards = shards.max(1);
        ShardHome { toeplitz, shard: shard % shards, shards }
    }

    /// This shard's index.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// How many shards there are.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The hash the shards steer by.
    pub fn toeplitz(&self) -> &Toeplitz {
        &self.toeplitz
    }

    /// The shard whose queue receives a frame from `remote` to `local`.
    #[inline]
    pub fn shard_of(&self, local: Ipv4Addr, local_port: u16, remote: Ipv4Addr, remote_port: u16) -> usize {
        queue_of(self.toeplitz.hash_v4(remote, local, remote_port, local_port), self.shards)
    }

    /// Whether the flow from `remote` to `local` is steered to this shard.
    #[inline]
    pub fn is_home(&self, local: Ipv4Addr, local_port: u16, remote: Ipv4Addr, remote_port: u16) -> bool {
        self.shard_of(local, local_port, remote, remote_port) == self.shard
    }
}

impl crate::Stack {
    /// Make this stack shard `home.shard()` of several sharing one address:
    /// its active opens then use only ports that the shards' hash steers
    /// back to it. `None` (the default) lets any free port be used.
    pub fn set_shard(&mut self, home: Option<ShardHome>) {
        self.shard = home;
    }

    /// The shard this stack is, if it is one.
    pub fn shard(&self) -> Option<&ShardHome> {
        self.shard.as_ref()
    }
}

/// The 32 key bits starting at bit `bit` (bits past the key's end are zero).
fn key_window(key: &[u8; KEY_LEN], bit: usize) -> u32 {
    let mut w = 0u32;
    for k in 0..32 {
        let b = bit + k;
        let set = key.get(b / 8).is_some_and(|byte| byte & (0x80 >> (b % 8)) != 0);
        w = (w << 1) | u32::from(set);
    }
    w
}

/// The Toeplitz hash computed bit by bit, as the specification states it:
/// the reference the tables are tested and benchmarked against.
pub fn toeplitz_reference(key: &[u8; KEY_LEN], input: &[u8]) -> u32 {
    let mut h = 0;
    for (i, &byte) in input.iter().take(MAX_INPUT).enumerate() {
        for j in 0..8 {
            if byte & (0x80 >> j) != 0 {
                h ^= key_window(key, i * 8 + j);
            }
        }
    }
    h
}

/// What steering needs from a frame: IPv4 addresses and, for unfragmented
/// TCP and UDP, the ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameFlow {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, …).
    pub protocol: u8,
    /// Source and destination port of a TCP or UDP packet that is not a
    /// fragment.
    pub ports: Option<(u16, u16)>,
}

impl FrameFlow {
    /// The flow of an Ethernet II frame carrying IPv4; `None` otherwise.
    pub fn parse(frame: &[u8]) -> Option<FrameFlow> {
        const ETH: usize = 14;
        if frame.get(12..14)? != [0x08, 0x00] {
            return None;
        }
        let ip = frame.get(ETH..)?;
        let ihl = usize::from(*ip.first()? & 0x0f) * 4;
        if ip[0] >> 4 != 4 || ihl < 20 || ip.len() < ihl {
            return None;
        }
        let addr = |at: usize| Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
        let (src, dst, protocol) = (addr(12), addr(16), ip[9]);
        // More fragments, or a fragment offset: no ports to read.
        let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
        let ports = match protocol {
            6 | 17 if !fragment => {
                let l4 = ip.get(ihl..ihl + 4)?;
                Some((u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]])))
            }
            _ => None,
        };
        Some(FrameFlow { src, dst, protocol, ports })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    /// Microsoft's "Verifying the RSS Hash Calculation" (also the 82599
    /// datasheet's RSS verification suite): source, destination, source
    /// port, destination port, the address-only hash, the 4-tuple hash.
    const V4: [([u8; 4], [u8; 4], u16, u16, u32, u32); 5] = [
        ([66, 9, 149, 187], [161, 142, 100, 80], 2794, 1766, 0x323e8fc2, 0x51ccc178),
        ([199, 92, 111, 2], [65, 69, 140, 83], 14230, 4739, 0xd718262a, 0xc626b0ea),
        ([24, 19, 198, 95], [12, 22, 207, 184], 12898, 38024, 0xd2d0a5de, 0x5c2b394a),
        ([38, 27, 205, 30], [209, 142, 163, 6], 48228, 2217, 0x82989176, 0xafc7327f),
        ([153, 39, 163, 191], [202, 188, 127, 2], 44251, 1303, 0x5d1809c5, 0x10e828a2),
    ];

    #[test]
    fn microsoft_ipv4_vectors() {
        let t = Toeplitz::new(&MICROSOFT_KEY);
        for (src, dst, sp, dp, addrs, tuple) in V4 {
            let (src, dst) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
            assert_eq!(t.hash_v4_addrs(src, dst), addrs, "{src} -> {dst}");
            assert_eq!(t.hash_v4(src, dst, sp, dp), tuple, "{src}:{sp} -> {dst}:{dp}");
        }
    }

    #[test]
    fn microsoft_ipv6_vectors() {
        let t = Toeplitz::new(&MICROSOFT_KEY);
        let vectors = [
            ("3ffe:2501:200:1fff::7", "3ffe:2501:200:3::1", 2794u16, 1766u16, 0x40207d3du32),
            ("3ffe:501:8::260:97ff:fe40:efab", "ff02::1", 14230, 4739, 0xdde51bbf),
            ("3ffe:1900:4545:3:200:f8ff:fe21:67cf", "fe80::200:f8ff:fe21:67cf", 44251, 38024, 0x02d1feef),
        ];
        for (src, dst, sp, dp, expected) in vectors {
            let mut input = [0u8; 36];
            input[0..16].copy_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
            input[16..32].copy_from_slice(&dst.parse::<Ipv6Addr>().unwrap().octets());
            input[32..34].copy_from_slice(&sp.to_be_bytes());
            input[34..36].copy_from_slice(&dp.to_be_bytes());
            assert_eq!(t.hash(&input), expected, "{src} -> {dst}");
            assert_eq!(toeplitz_reference(&MICROSOFT_KEY, &input), expected);
        }
    }

    #[test]
    fn tables_agree_with_the_bitwise_definition() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for key in [SYMMETRIC_KEY, MICROSOFT_KEY] {
            let t = Toeplitz::new(&key);
            for len in 0..=MAX_INPUT {
                let input: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                assert_eq!(t.hash(&input), toeplitz_reference(&key, &input), "len {len}");
            }
        }
    }

    #[test]
    fn symmetric_key_hashes_both_directions_alike() {
        let t = Toeplitz::default();
        assert_eq!(t.key(), &SYMMETRIC_KEY);
        let mut x = 1u64;
        for _ in 0..10_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let (a, b) = (Ipv4Addr::from((x >> 32) as u32), Ipv4Addr::from(x as u32));
            let (p, q) = ((x >> 17) as u16, (x >> 41) as u16);
            assert_eq!(t.hash_v4(a, b, p, q), t.hash_v4(b, a, q, p));
            assert_eq!(t.hash_v4_addrs(a, b), t.hash_v4_addrs(b, a));
        }
        // The standard key is not symmetric: the property is the key's.
        let m = Toeplitz::new(&MICROSOFT_KEY);
        let (a, b) = (Ipv4Addr::new(66, 9, 149, 187), Ipv4Addr::new(161, 142, 100, 80));
        assert_ne!(m.hash_v4(a, b, 2794, 1766), m.hash_v4(b, a, 1766, 2794));
    }

    #[test]
    fn symmetric_hash_spreads_ports_over_queues() {
        // Ephemeral ports towards one server spread evenly over 2 and 4 queues.
        let t = Toeplitz::default();
        let (c, s) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        for queues in [2, 4] {
            let mut count = vec![0u32; queues];
            for port in 49152..=65535u16 {
                count[queue_of(t.hash_v4(c, s, port, 80), queues)] += 1;
            }
            let fair = 16384 / queues as u32;
            assert!(count.iter().all(|&n| n.abs_diff(fair) < fair / 10), "{queues} queues: {count:?}");
        }
        assert_eq!(queue_of(0x7f, 1), 0);
        assert_eq!(queue_of(0x81, 2), 1);
    }

    fn frame(protocol: u8, flags_frag: u16, sp: u16, dp: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[14 + 6..14 + 8].copy_from_slice(&flags_frag.to_be_bytes());
        f[14 + 9] = protocol;
        f[14 + 12..14 + 16].copy_from_slice(&[66, 9, 149, 187]);
        f[14 + 16..14 + 20].copy_from_slice(&[161, 142, 100, 80]);
        f[34..36].copy_from_slice(&sp.to_be_bytes());
        f[36..38].copy_from_slice(&dp.to_be_bytes());
        f
    }

    #[test]
    fn frames_hash_by_their_flow() {
        let t = Toeplitz::new(&MICROSOFT_KEY);
        assert_eq!(t.hash_frame(&frame(6, 0x4000, 2794, 1766)), Some(0x51ccc178));
        assert_eq!(t.hash_frame(&frame(17, 0, 2794, 1766)), Some(0x51ccc178));
        // ICMP and fragments: the addresses only.
        assert_eq!(t.hash_frame(&frame(1, 0, 2794, 1766)), Some(0x323e8fc2));
        assert_eq!(t.hash_frame(&frame(6, 0x2000, 2794, 1766)), Some(0x323e8fc2));
        assert_eq!(t.hash_frame(&frame(6, 0x0001, 2794, 1766)), Some(0x323e8fc2));
        // ARP, truncations, a bad header length: no hash, no panic.
        let mut arp = frame(6, 0, 1, 2);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(t.hash_frame(&arp), None);
        let full = frame(6, 0, 2794, 1766);
        for len in 0..full.len() {
            let _ = t.hash_frame(&full[..len]);
        }
        assert_eq!(t.hash_frame(&full[..37]), None);
        let mut bad = full.clone();
        bad[14] = 0x44;
        assert_eq!(t.hash_frame(&bad), None);
    }
}
