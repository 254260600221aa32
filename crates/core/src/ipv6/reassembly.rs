//! IPv6 reassembly (RFC 8200 §4.5), bounded in datagrams, bytes, pieces and
//! time, with RFC 5722's rule: overlapping fragments drop the whole datagram.
//!
//! - **Key**: source, destination and identification (RFC 8200 §4.5).
//! - **Datagrams in progress**: at most [`Ipv6Config::reassembly_max_datagrams`];
//!   a fragment of a new datagram while the table is full is dropped
//!   (`drop_ipv6_reasm_table_full`). Nothing is evicted, so a flood cannot
//!   push out a datagram that is nearly complete.
//! - **Bytes held**: fragment data is copied into 512-byte chunks of one
//!   arena of [`Ipv6Config::reassembly_memory`] bytes (in the table both
//!   versions share, [`crate::ip::reassembly`]); a datagram that needs a
//!   chunk when none is free is abandoned (`drop_ipv6_reasm_memory`).
//! - **Pieces**: one datagram is held in at most [`MAX_PIECES`] fragments (a
//!   64 KiB datagram over a 1280-byte path takes 54); a tiny-fragment flood
//!   that needs more abandons its datagram (`drop_ipv6_reasm_memory`), so the
//!   overlap check is a bounded scan.
//! - **Size**: a fragment reaching past 65,535 bytes of payload abandons its
//!   datagram (`drop_ipv6_reasm_too_big`), checked before any index is taken.
//! - **Time**: a datagram lives [`Ipv6Config::reassembly_timeout`] (60 s, RFC
//!   8200) from its first fragment; then it is abandoned
//!   (`drop_ipv6_reasm_timeout`) and, when fragment zero came, the caller
//!   answers with ICMPv6 time exceeded code 1.
//! - **Overlap**: any overlap drops the datagram (`drop_ipv6_reasm_overlap`,
//!   RFC 5722), as do fragments disagreeing about the end. An exact duplicate
//!   (same place, same bytes: a duplicated frame) is dropped alone
//!   (`drop_ipv6_frag_duplicate`), which RFC 8200 §4.5 allows.
//!
//! Memory is allocated once, on the first fragment, and never grown: the
//! table, the arena and the 64 KiB buffer a datagram is assembled in.
//!
//! The assembled packet is the first fragment's unfragmentable part (IPv6
//! header and the extension headers before the fragment header) with the
//! Next Header field that named the fragment header set to the fragment's
//! next header and the payload length set, followed by the data: an ordinary
//! unfragmented packet, walked again from its start.

use super::Ipv6Config;
use crate::counters::Counters;
use crate::ip::reassembly::{self, Abandon, Table};
use crate::time::Instant;
use std::net::Ipv6Addr;
use ustack_wire::{Ipv6FragmentRepr, Ipv6Packet, IPV6_FRAGMENT_HEADER_LEN, IPV6_HEADER_LEN};

/// The most payload an IPv6 packet carries without a jumbogram.
const MAX_PAYLOAD: usize = u16::MAX as usize;
/// The longest unfragmentable part kept (IPv6 header included): longer ones
/// are dropped (`drop_ipv6_frag_malformed`). Hop-by-hop, a routing header
/// and destination options fit many times over.
pub(crate) const MAX_UNFRAGMENTABLE: usize = IPV6_HEADER_LEN + 256;
/// Fragments one datagram may be held in.
pub(crate) const MAX_PIECES: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    src: Ipv6Addr,
    dst: Ipv6Addr,
    ident: u32,
}

impl Default for Key {
    fn default() -> Key {
        Key { src: Ipv6Addr::UNSPECIFIED, dst: Ipv6Addr::UNSPECIFIED, ident: 0 }
    }
}

/// What IPv6 keeps of a datagram beside its data.
struct Meta {
    /// The pieces held, `[start, end)` of the data; unordered.
    pieces: [(u32, u32); MAX_PIECES],
    n_pieces: usize,
    /// Fragment zero's unfragmentable part, as received.
    first: [u8; MAX_UNFRAGMENTABLE],
    /// Length of `first`; 0 until fragment zero comes.
    first_len: usize,
    /// Where in `first` the Next Header field naming the fragment header
    /// is, and what the fragment header's own Next Header said.
    named_at: usize,
    next_header: u8,
}

impl Default for Meta {
    fn default() -> Meta {
        Meta {
            pieces: [(0, 0); MAX_PIECES],
            n_pieces: 0,
            first: [0; MAX_UNFRAGMENTABLE],
            first_len: 0,
            named_at: 0,
            next_header: 0,
        }
    }
}

impl reassembly::Meta for Meta {
    fn head(&self) -> &[u8] {
        &self.first[..self.first_len]
    }
}

/// One fragment as the receive path hands it over.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fragment<'a> {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub ident: u32,
    /// Data offset in bytes.
    pub offset: usize,
    pub more: bool,
    /// The IPv6 header and the extension headers before the fragment header.
    pub unfragmentable: &'a [u8],
    /// Offset in `unfragmentable` of the Next Header field that names the
    /// fragment header (6 when the fragment header comes first).
    pub named_at: usize,
    /// The fragment header's Next Header.
    pub next_header: u8,
    /// The fragment's data.
    pub data: &'a [u8],
}

/// What became of one fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Held, dropped, or abandoned its datagram; counted either way.
    Pending,
    /// Complete: `len` bytes of packet in [`Ipv6Reassembly::take_assembled`].
    Complete { len: usize },
}

/// IPv6 datagrams in reassembly, with their bounded memory.
pub(crate) struct Ipv6Reassembly {
    table: Table<Key, Meta>,
}

impl Ipv6Reassembly {
    pub(crate) fn new(cfg: &Ipv6Config, hash_key: u64) -> Ipv6Reassembly {
        let (n, memory, timeout) = (cfg.reassembly_max_datagrams, cfg.reassembly_memory, cfg.reassembly_timeout);
        Ipv6Reassembly { table: Table::new(n, memory, timeout, hash_key, MAX_UNFRAGMENTABLE + MAX_PAYLOAD) }
    }

    /// Datagrams in progress.
    pub(crate) fn datagrams(&self) -> usize {
        self.table.datagrams()
    }

    /// Arena bytes holding fragment data now (never above the memory limit).
    pub(crate) fn bytes_held(&self) -> usize {
        self.table.bytes_held()
    }

    /// When [`Ipv6Reassembly::expire`] next has work.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.table.poll_timeout()
    }

    /// Take in one fragment (already checked: a non-last fragment's data is
    /// a non-empty multiple of 8 bytes).
    pub(crate) fn insert(&mut self, now: Instant, f: &Fragment<'_>, counters: &mut Counters) -> Outcome {
        let key = Key { src: f.src, dst: f.dst, ident: f.ident };
        let end = f.offset + f.data.len();
        if end > MAX_PAYLOAD {
            if let Some(slot) = self.table.find(&key) {
                self.table.release(slot);
            }
            counters.drop_ipv6_reasm_too_big += 1;
            return Outcome::Pending;
        }
        if f.offset == 0 && (f.unfragmentable.len() > MAX_UNFRAGMENTABLE || f.named_at >= f.unfragmentable.len()) {
            counters.drop_ipv6_frag_malformed += 1;
            return Outcome::Pending;
        }
        let Some(slot) = self.table.find_or_create(now, key) else {
            counters.drop_ipv6_reasm_table_full += 1;
            return Outcome::Pending;
        };
        match self.add(slot, f) {
            Ok(true) => {}
            Ok(false) => {
                counters.drop_ipv6_frag_duplicate += 1;
                return Outcome::Pending;
            }
            Err(why) => {
                self.table.release(slot);
                match why {
                    Abandon::Overlap => counters.drop_ipv6_reasm_overlap += 1,
                    Abandon::Memory => counters.drop_ipv6_reasm_memory += 1,
                }
                return Outcome::Pending;
            }
        }
        if !self.table.complete(slot) {
            counters.rx_consumed += 1; // held for reassembly
            return Outcome::Pending;
        }
        let d = self.table.datagram(slot);
        let payload_len = d.meta.first_len - IPV6_HEADER_LEN + d.received;
        if payload_len > MAX_PAYLOAD {
            // The unfragmentable part made the whole too long (RFC 8200 §4.5).
            self.table.release(slot);
            counters.drop_ipv6_reasm_too_big += 1;
            return Outcome::Pending;
        }
        let (named_at, next_header) = (d.meta.named_at, d.meta.next_header);
        let (assembled, len) = self.table.assemble(slot);
        assembled[named_at] = next_header;
        Ipv6Packet::new_unchecked(assembled).set_payload_len(payload_len as u16);
        // The last fragment is used up in the datagram, which counts as a
        // frame of its own from here (`ipv6_reassembled`).
        counters.rx_consumed += 1;
        counters.ipv6_reassembled += 1;
        Outcome::Complete { len }
    }

    /// The buffer a complete datagram was assembled in, lent out while it is
    /// delivered; give it back with [`Ipv6Reassembly::restore_assembled`].
    pub(crate) fn take_assembled(&mut self) -> Vec<u8> {
        self.table.take_assembled()
    }

    pub(crate) fn restore_assembled(&mut self, buffer: Vec<u8>) {
        self.table.restore_assembled(buffer);
    }

    /// `Ok(true)`: new data held; `Ok(false)`: an exact duplicate;
    /// `Err`: the datagram must go.
    fn add(&mut self, slot: u32, f: &Fragment<'_>) -> Result<bool, Abandon> {
        let (start, end) = (f.offset, f.offset + f.data.len());
        self.table.check_end(slot, end, !f.more)?;
        let d = self.table.datagram(slot);
        for &(s, e) in &d.meta.pieces[..d.meta.n_pieces] {
            let (s, e) = (s as usize, e as usize);
            if s < end && start < e {
                if (s, e) == (start, end) && d.same_bytes(self.table.arena(), start, f.data) {
                    return Ok(false);
                }
                return Err(Abandon::Overlap);
            }
        }
        if !f.data.is_empty() && d.meta.n_pieces == MAX_PIECES {
            return Err(Abandon::Memory);
        }
        self.table.store(slot, start, f.data)?;
        let meta = &mut self.table.datagram_mut(slot).meta;
        if !f.data.is_empty() {
            meta.pieces[meta.n_pieces] = (start as u32, end as u32);
            meta.n_pieces += 1;
        }
        if start == 0 {
            let n = f.unfragmentable.len();
            meta.first[..n].copy_from_slice(f.unfragmentable);
            meta.first_len = n;
            meta.named_at = f.named_at;
            meta.next_header = f.next_header;
        }
        Ok(true)
    }

    /// Abandon every datagram whose time is up at `now`; `expired` hears of
    /// each, with the first fragment as it came (its unfragmentable part,
    /// the fragment header and the data held from offset 0; at most
    /// `quote.len()` bytes written to `quote`) when it had come, for ICMPv6
    /// time exceeded.
    pub(crate) fn expire(&mut self, now: Instant, quote: &mut [u8], mut expired: impl FnMut(Option<&[u8]>)) {
        self.table.expire(now, |d, arena| {
            let m = &d.meta;
            if m.first_len == 0 || quote.len() < m.first_len + IPV6_FRAGMENT_HEADER_LEN {
                return expired(None);
            }
            let head = m.first_len;
            quote[..head].copy_from_slice(&m.first[..head]);
            let frag =
                Ipv6FragmentRepr { next_header: m.next_header.into(), frag_offset: 0, more_frags: true, ident: d.key.ident };
            frag.emit(&mut quote[head..]);
            let head = head + IPV6_FRAGMENT_HEADER_LEN;
            // The first fragment's data: the piece at offset 0.
            let first_piece = m.pieces[..m.n_pieces].iter().find(|&&(s, _)| s == 0).map_or(0, |&(_, e)| e as usize);
            let n = first_piece.min(quote.len() - head);
            d.copy_data(arena, 0, &mut quote[head..head + n]);
            expired(Some(&quote[..head + n]));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ip::reassembly::CHUNK;
    use crate::time::Instant;
    use ustack_wire::EthernetAddress;

    fn cfg() -> Ipv6Config {
        let mut c = Ipv6Config::new(EthernetAddress([2, 0, 0, 0, 0, 1]));
        c.reassembly_max_datagrams = 2;
        c.reassembly_memory = 8 * CHUNK;
        c
    }

    fn header() -> Vec<u8> {
        let mut h = vec![0u8; IPV6_HEADER_LEN];
        h[0] = 0x60;
        h[6] = 44;
        h
    }

    fn frag<'a>(h: &'a [u8], ident: u32, offset: usize, more: bool, data: &'a [u8]) -> Fragment<'a> {
        Fragment {
            src: "fe80::1".parse().unwrap(),
            dst: "fe80::2".parse().unwrap(),
            ident,
            offset,
            more,
            unfragmentable: h,
            named_at: 6,
            next_header: 17,
            data,
        }
    }

    fn data(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)).collect()
    }

    #[test]
    fn out_of_order_fragments_assemble_into_an_ordinary_packet() {
        let h = header();
        let d = data(1000, 3);
        let mut r = Ipv6Reassembly::new(&cfg(), 1);
        let mut c = Counters::default();
        let now = Instant::ZERO;
        assert_eq!(r.insert(now, &frag(&h, 9, 520, false, &d[520..]), &mut c), Outcome::Pending);
        assert_eq!(r.insert(now, &frag(&h, 9, 256, true, &d[256..520]), &mut c), Outcome::Pending);
        let Outcome::Complete { len } = r.insert(now, &frag(&h, 9, 0, true, &d[..256]), &mut c) else {
            panic!("not complete: {c:?}")
        };
        let buf = r.take_assembled();
        let p = Ipv6Packet::new_checked(&buf[..len]).unwrap();
        assert_eq!(p.payload_len(), 1000);
        assert_eq!(u8::from(p.next_header()), 17, "the fragment's next header replaces 44");
        assert_eq!(p.payload(), &d[..]);
        r.restore_assembled(buf);
        assert_eq!((c.rx_consumed, c.ipv6_reassembled, c.total_drops()), (3, 1, 0));
        assert_eq!((r.datagrams(), r.bytes_held()), (0, 0));
    }

    #[test]
    fn overlap_drops_the_whole_datagram_but_an_exact_duplicate_only_itself() {
        let h = header();
        let d = data(64, 1);
        let mut r = Ipv6Reassembly::new(&cfg(), 1);
        let mut c = Counters::default();
        let now = Instant::ZERO;
        r.insert(now, &frag(&h, 1, 0, true, &d[..32]), &mut c);
        r.insert(now, &frag(&h, 1, 0, true, &d[..32]), &mut c);
        assert_eq!((c.drop_ipv6_frag_duplicate, r.datagrams()), (1, 1));
        // Same place, other bytes: not a duplicate but an overlap.
        let other = data(32, 99);
        r.insert(now, &frag(&h, 1, 0, true, &other), &mut c);
        assert_eq!((c.drop_ipv6_reasm_overlap, r.datagrams(), r.bytes_held()), (1, 0, 0));
        // Partial overlap (teardrop shape).
        r.insert(now, &frag(&h, 2, 0, true, &d[..32]), &mut c);
        r.insert(now, &frag(&h, 2, 24, false, &d[24..]), &mut c);
        assert_eq!((c.drop_ipv6_reasm_overlap, r.datagrams()), (2, 0));
        // Two different ends.
        r.insert(now, &frag(&h, 3, 32, false, &d[32..]), &mut c);
        r.insert(now, &frag(&h, 3, 40, false, &d[40..]), &mut c);
        assert_eq!((c.drop_ipv6_reasm_overlap, r.datagrams()), (3, 0));
    }

    #[test]
    fn bounds_on_datagrams_memory_pieces_and_size() {
        let h = header();
        let d = data(4096, 5);
        let mut r = Ipv6Reassembly::new(&cfg(), 1);
        let mut c = Counters::default();
        let now = Instant::ZERO;
        r.insert(now, &frag(&h, 1, 0, true, &d[..8]), &mut c);
        r.insert(now, &frag(&h, 2, 0, true, &d[..8]), &mut c);
        r.insert(now, &frag(&h, 3, 0, true, &d[..8]), &mut c);
        assert_eq!((c.drop_ipv6_reasm_table_full, r.datagrams()), (1, 2));
        // Datagram 1 wants more than the 8 chunks of the arena.
        r.insert(now, &frag(&h, 1, 8, true, &d[..4088]), &mut c);
        assert_eq!((c.drop_ipv6_reasm_memory, r.datagrams()), (1, 1));
        // Tiny fragments: the 65th piece abandons the datagram.
        for i in 0..=MAX_PIECES {
            r.insert(now, &frag(&h, 4, 16 * i, true, &d[..8]), &mut c);
        }
        assert_eq!(c.drop_ipv6_reasm_memory, 2, "{c:?}");
        assert_eq!(r.datagrams(), 1);
        // Past 65,535 bytes.
        r.insert(now, &frag(&h, 5, 65528, true, &d[..16]), &mut c);
        assert_eq!(c.drop_ipv6_reasm_too_big, 1);
        assert!(r.bytes_held() <= 8 * CHUNK);
    }

    #[test]
    fn expiry_quotes_fragment_zero_and_frees_everything() {
        let h = header();
        let d = data(64, 5);
        let mut r = Ipv6Reassembly::new(&cfg(), 1);
        let mut c = Counters::default();
        r.insert(Instant::ZERO, &frag(&h, 1, 0, true, &d[..16]), &mut c);
        r.insert(Instant::from_secs(1), &frag(&h, 2, 16, true, &d[..16]), &mut c);
        assert_eq!(r.poll_timeout(), Some(Instant::ZERO + cfg().reassembly_timeout));
        let mut quote = [0u8; 100];
        let mut seen = Vec::new();
        r.expire(Instant::from_secs(59), &mut quote, |q| seen.push(q.map(<[u8]>::len)));
        assert!(seen.is_empty());
        r.expire(Instant::from_secs(61), &mut quote, |q| seen.push(q.map(<[u8]>::len)));
        assert_eq!(seen, vec![Some(IPV6_HEADER_LEN + 8 + 16), None]);
        assert_eq!((r.datagrams(), r.bytes_held(), r.poll_timeout()), (0, 0, None));
    }
}
