//! IPv4 reassembly (RFC 791 §3.2), bounded in datagrams, bytes and time.
//!
//! RFC 791 identifies the datagram a fragment belongs to by "the source,
//! destination, protocol, and identification fields", and keeps "a fragment
//! block bit table" of which 8-octet blocks have arrived. So do we:
//!
//! - **Datagrams in progress**: at most [`StackConfig::ipv4_reassembly_max_datagrams`],
//!   found by key in a keyed hash table. A fragment of a new datagram when the
//!   table is full is dropped (`drop_ipv4_reasm_table_full`); nothing is
//!   evicted, so a flood cannot push out a datagram that is nearly complete.
//! - **Bytes held**: fragment data is copied into chunks of [`reassembly::CHUNK`] bytes
//!   taken from one arena of [`StackConfig::ipv4_reassembly_memory`] bytes. A
//!   datagram that needs a chunk when none is free is abandoned
//!   (`drop_ipv4_reasm_memory`), which returns its chunks to the others.
//! - **Size**: a fragment reaching past 65,535 bytes of datagram abandons it
//!   (`drop_ipv4_reasm_too_big`); the check comes before any index is taken.
//! - **Time**: a datagram lives [`StackConfig::ipv4_reassembly_timeout`] from
//!   its first fragment (a fixed lifetime, as Linux's `ipfrag_time`, rather
//!   than RFC 791's TTL-driven timer). When it expires with fragment zero in
//!   hand, the stack sends ICMP time exceeded, code 1 (RFC 792: "If fragment
//!   zero is not available then no time exceeded need be sent at all").
//! - **Overlap**: any overlap drops the whole datagram (`drop_ipv4_reasm_overlap`),
//!   in the spirit of RFC 5722 for IPv6 and of Linux for IPv4 since 4.19:
//!   overlapping fragments are how IDS evasion and "teardrop" work, and a
//!   correct sender never produces them. Fragments that disagree about where
//!   the datagram ends count the same way. The one exception is an exact
//!   duplicate — a fragment wholly inside data already held, byte for byte the
//!   same (a duplicated frame on the path) — which is dropped on its own
//!   (`drop_ipv4_frag_duplicate`) while the datagram carries on.
//!
//! Memory: the table, the arena and the buffer a complete datagram is
//! assembled in are allocated together when the first fragment arrives, never
//! grown afterwards and never freed; a stack that never sees a fragment pays
//! nothing, and the unfragmented receive path does not touch any of it.
//! Per fragment the work is a hash lookup, a copy of its data and a walk over
//! its bits; completing a datagram copies it once into the assembly buffer.
//!
//! The reassembled datagram carries fragment zero's header (options included)
//! with the total length set and the fragment fields cleared, and is handed to
//! ICMP, UDP and TCP exactly as an unfragmented one; its L4 checksum is always
//! verified in software, since a device's verdict was about single frames.

use super::reassembly::{self, Abandon, Table};
use super::{Iface, Input};
use crate::config::StackConfig;
use crate::counters::Counters;
use crate::phy::TxQueue;
use crate::time::{Duration, Instant};
use std::net::Ipv4Addr;
use ustack_wire::{
    ChecksumMode, Icmpv4Packet, Icmpv4Repr, Icmpv4TimeExceeded, IpProtocol, Ipv4Packet, Ipv4Repr,
    ICMPV4_ERROR_DATA_LEN, IPV4_HEADER_LEN,
};

/// The largest IPv4 datagram, header included (the total length field's range).
const MAX_DATAGRAM: usize = u16::MAX as usize;
/// The longest IPv4 header (IHL 15).
const MAX_HEADER: usize = 60;
/// RFC 791's fragment block bit table: one bit per 8-byte block of data.
const BLOCK: usize = 8;
const BITMAP_WORDS: usize = (MAX_DATAGRAM - IPV4_HEADER_LEN).div_ceil(BLOCK).div_ceil(64);

/// RFC 791's buffer identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    ident: u16,
}

impl Default for Key {
    fn default() -> Key {
        Key { src: Ipv4Addr::UNSPECIFIED, dst: Ipv4Addr::UNSPECIFIED, protocol: 0, ident: 0 }
    }
}

/// What IPv4 keeps of a datagram beside its data.
struct Meta {
    /// Fragment zero's header as parsed; `None` until it arrives.
    first: Option<Ipv4Repr>,
    /// Fragment zero's header bytes, options included.
    header: [u8; MAX_HEADER],
    header_len: usize,
    /// Which 8-byte blocks have arrived.
    blocks: [u64; BITMAP_WORDS],
}

impl Default for Meta {
    fn default() -> Meta {
        Meta { first: None, header: [0; MAX_HEADER], header_len: 0, blocks: [0; BITMAP_WORDS] }
    }
}

impl reassembly::Meta for Meta {
    fn head(&self) -> &[u8] {
        &self.header[..self.header_len]
    }
}

/// What became of one fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Held, dropped or abandoned its datagram; counted either way.
    Pending,
    /// The datagram is complete: `len` bytes in [`Ipv4Reassembly::take_assembled`],
    /// described by `header` (fragment zero's, as a whole datagram).
    Complete { len: usize, header_len: usize, header: Ipv4Repr },
}

/// IPv4 datagrams in reassembly, with their bounded memory.
pub(crate) struct Ipv4Reassembly {
    table: Table<Key, Meta>,
}

impl Ipv4Reassembly {
    pub(crate) fn new(cfg: &StackConfig, hash_key: u64) -> Ipv4Reassembly {
        let (n, memory, timeout) =
            (cfg.ipv4_reassembly_max_datagrams, cfg.ipv4_reassembly_memory, cfg.ipv4_reassembly_timeout);
        Ipv4Reassembly { table: Table::new(n, memory, timeout, hash_key, MAX_DATAGRAM) }
    }

    /// A table holding nothing, standing in for this one while its expiry
    /// borrows the interface around it; allocates nothing.
    fn placeholder() -> Ipv4Reassembly {
        Ipv4Reassembly { table: Table::new(0, 0, Duration::ZERO, 0, 0) }
    }

    /// Datagrams in progress.
    pub(crate) fn datagrams(&self) -> usize {
        self.table.datagrams()
    }

    /// Arena bytes holding fragment data now (never above the memory limit).
    pub(crate) fn bytes_held(&self) -> usize {
        self.table.bytes_held()
    }

    /// When [`Ipv4Reassembly::expire`] next has work; `None` when no datagram waits.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.table.poll_timeout()
    }

    /// Take in one fragment: `ip` is its parsed header, `header` its header
    /// bytes and `data` what follows them (trimmed to the total length).
    pub(crate) fn insert(
        &mut self,
        now: Instant,
        ip: &Ipv4Repr,
        header: &[u8],
        data: &[u8],
        counters: &mut Counters,
    ) -> Outcome {
        counters.ipv4_frag_rx += 1;
        let offset = usize::from(ip.frag_offset);
        let end = offset + data.len();
        // RFC 791: every fragment but the last carries a multiple of 8 octets.
        if ip.more_frags && (data.is_empty() || !data.len().is_multiple_of(BLOCK)) {
            counters.drop_ipv4_frag_malformed += 1;
            return Outcome::Pending;
        }
        let key = Key { src: ip.src_addr, dst: ip.dst_addr, protocol: ip.protocol.into(), ident: ip.ident };
        if header.len() + end > MAX_DATAGRAM {
            if let Some(slot) = self.table.find(&key) {
                self.table.release(slot);
            }
            counters.drop_ipv4_reasm_too_big += 1;
            return Outcome::Pending;
        }
        let Some(slot) = self.table.find_or_create(now, key) else {
            counters.drop_ipv4_reasm_table_full += 1;
            return Outcome::Pending;
        };
        match self.add(slot, ip, header, data) {
            Ok(true) => {}
            Ok(false) => {
                counters.drop_ipv4_frag_duplicate += 1;
                return Outcome::Pending;
            }
            Err(why) => {
                self.table.release(slot);
                match why {
                    Abandon::Overlap => counters.drop_ipv4_reasm_overlap += 1,
                    Abandon::Memory => counters.drop_ipv4_reasm_memory += 1,
                }
                return Outcome::Pending;
            }
        }
        if !self.table.complete(slot) {
            counters.rx_consumed += 1; // held for reassembly
            return Outcome::Pending;
        }
        let d = self.table.datagram(slot);
        let (total, header_len) = (d.received, d.meta.header_len);
        let first = d.meta.first.expect("a head means fragment zero came");
        if header_len + total > MAX_DATAGRAM {
            // Fragment zero's options made the whole too long.
            self.table.release(slot);
            counters.drop_ipv4_reasm_too_big += 1;
            return Outcome::Pending;
        }
        let (assembled, len) = self.table.assemble(slot);
        let mut packet = Ipv4Packet::new_unchecked(assembled);
        packet.set_total_len(len as u16);
        packet.set_frag(false, false, 0);
        packet.fill_checksum();
        // The last fragment is used up in the datagram, which counts as a
        // frame of its own from here (`ipv4_reassembled`).
        counters.rx_consumed += 1;
        counters.ipv4_reassembled += 1;
        let header = Ipv4Repr { payload_len: total, dont_frag: false, more_frags: false, frag_offset: 0, ..first };
        Outcome::Complete { len, header_len, header }
    }

    /// The buffer a complete datagram was assembled in, lent out so the
    /// stack can be borrowed while the datagram is delivered; give it back
    /// with [`Ipv4Reassembly::restore_assembled`].
    pub(crate) fn take_assembled(&mut self) -> Vec<u8> {
        self.table.take_assembled()
    }

    pub(crate) fn restore_assembled(&mut self, buffer: Vec<u8>) {
        self.table.restore_assembled(buffer);
    }

    /// Add a fragment's data to its datagram: `Ok(true)` when it was new,
    /// `Ok(false)` for an exact duplicate, `Err` when the datagram must go.
    fn add(&mut self, slot: u32, ip: &Ipv4Repr, header: &[u8], data: &[u8]) -> Result<bool, Abandon> {
        let offset = usize::from(ip.frag_offset);
        let end = offset + data.len();
        self.table.check_end(slot, end, !ip.more_frags)?;
        let d = self.table.datagram(slot);
        let (first_block, end_block) = (offset / BLOCK, end.div_ceil(BLOCK));
        let present = count_blocks(&d.meta.blocks, first_block, end_block);
        if present == end_block - first_block && !data.is_empty() {
            return if d.same_bytes(self.table.arena(), offset, data) { Ok(false) } else { Err(Abandon::Overlap) };
        }
        if present != 0 {
            return Err(Abandon::Overlap);
        }
        self.table.store(slot, offset, data)?;
        let meta = &mut self.table.datagram_mut(slot).meta;
        set_blocks(&mut meta.blocks, first_block, end_block);
        if offset == 0 {
            meta.header[..header.len()].copy_from_slice(header);
            meta.header_len = header.len();
            meta.first = Some(*ip);
        }
        Ok(true)
    }

    /// Abandon every datagram whose time is up at `now`. `expired` hears of
    /// each: with fragment zero's header and up to 8 bytes of its data when
    /// fragment zero arrived (for ICMP time exceeded), `None` otherwise.
    pub(crate) fn expire(&mut self, now: Instant, mut expired: impl FnMut(Option<(&Ipv4Repr, &[u8])>)) {
        self.table.expire(now, |d, arena| match d.meta.first {
            Some(first) => {
                let mut quote = [0u8; ICMPV4_ERROR_DATA_LEN];
                let n = d.max_end.min(ICMPV4_ERROR_DATA_LEN);
                d.copy_data(arena, 0, &mut quote[..n]);
                expired(Some((&first, &quote[..n])));
            }
            None => expired(None),
        });
    }
}

/// Call `f(word, mask)` for the bits `[from, to)` of a bitmap.
fn for_each_word(from: usize, to: usize, mut f: impl FnMut(usize, u64)) {
    let mut bit = from;
    while bit < to {
        let (word, lo) = (bit / 64, bit % 64);
        let hi = (to - word * 64).min(64);
        let upper = if hi == 64 { u64::MAX } else { (1u64 << hi) - 1 };
        f(word, upper & !((1u64 << lo) - 1));
        bit = word * 64 + hi;
    }
}

fn count_blocks(bits: &[u64], from: usize, to: usize) -> usize {
    let mut n = 0;
    for_each_word(from, to, |w, mask| n += (bits[w] & mask).count_ones() as usize);
    n
}

fn set_blocks(bits: &mut [u64], from: usize, to: usize) {
    for_each_word(from, to, |w, mask| bits[w] |= mask);
}

impl Iface {
    /// A fragment for us: hold it, and hand up the datagram it completes
    /// (in the buffer [`Iface::take_reassembled`] lends). `datagram` is the
    /// fragment trimmed to its total length.
    pub(crate) fn receive_ipv4_fragment<T: TxQueue>(
        &mut self,
        now: Instant,
        ip: &Ipv4Repr,
        datagram: &[u8],
        header_len: usize,
        broadcast: bool,
        tx: &mut T,
    ) -> Input<'static> {
        // A fragment that comes after its datagram's deadline must not revive it.
        self.expire_ipv4_fragments(now, tx);
        let (header, data) = datagram.split_at(header_len);
        match self.ipv4_reassembly.insert(now, ip, header, data, &mut self.counters) {
            Outcome::Complete { len, header_len, header: ip } => {
                Input::Ipv4Reassembled { ip, len, header_len, broadcast }
            }
            _ => Input::Done,
        }
    }

    /// Abandon the datagrams whose time is up, with ICMP time exceeded for
    /// those whose fragment zero came. Cheap when nothing is due.
    #[inline]
    pub(crate) fn expire_ipv4_fragments<T: TxQueue>(&mut self, now: Instant, tx: &mut T) {
        if self.ipv4_reassembly.poll_timeout().is_none_or(|t| t > now) {
            return;
        }
        let mut reassembly = core::mem::replace(&mut self.ipv4_reassembly, Ipv4Reassembly::placeholder());
        reassembly.expire(now, |first| {
            self.counters.drop_ipv4_reasm_timeout += 1;
            if let Some((header, data)) = first {
                self.send_reassembly_time_exceeded(now, header, data, tx);
            }
        });
        self.ipv4_reassembly = reassembly;
    }
}

impl Iface {
    /// ICMP time exceeded, code 1, about a datagram given up on: never about
    /// a datagram sent to a broadcast address or one carrying an ICMP error
    /// (RFC 1122 §3.2.2), and rate-limited like every ICMP error.
    fn send_reassembly_time_exceeded<T: TxQueue>(&mut self, now: Instant, first: &Ipv4Repr, data: &[u8], tx: &mut T) {
        if first.dst_addr != self.cfg.ipv4.addr {
            return;
        }
        // Only queries may be answered with an error: echo, router, timestamp,
        // information and address-mask messages (types 0, 8–10, 13–18).
        let query = |t: u8| matches!(t, 0 | 8..=10 | 13..=18);
        if first.protocol == IpProtocol::Icmp && !data.first().is_some_and(|&t| query(t)) {
            return;
        }
        if !self.icmp_errors.take(now) {
            self.counters.icmp_errors_rate_limited += 1;
            return;
        }
        let message = Icmpv4Repr::TimeExceeded { reason: Icmpv4TimeExceeded::FragReassembly, header: *first, data };
        let sent = self.send_ipv4(now, tx, first.src_addr, IpProtocol::Icmp, message.buffer_len(), |b| {
            message.emit(&mut Icmpv4Packet::new_unchecked(b), ChecksumMode::Verify)
        });
        if sent.is_ok() {
            self.counters.icmp_errors_sent += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::reassembly::CHUNK;
    use super::*;
    use crate::config::Ipv4Cidr;
    use proptest::prelude::*;
    use ustack_wire::EthernetAddress;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const T0: Instant = Instant::from_secs(100);
    const TIMEOUT: Duration = Duration::from_secs(30);
    /// The most data a datagram can carry (with a header of 20 bytes).
    const MAX_DATA: usize = MAX_DATAGRAM - IPV4_HEADER_LEN;

    fn table_with(max_datagrams: usize, memory: usize) -> Ipv4Reassembly {
        let mut c = StackConfig::new(EthernetAddress([2, 0, 0, 0, 0, 2]), Ipv4Cidr::new(DST, 24).unwrap());
        c.ipv4_reassembly_max_datagrams = max_datagrams;
        c.ipv4_reassembly_memory = memory;
        Ipv4Reassembly::new(&c, 7)
    }

    fn table() -> Ipv4Reassembly {
        table_with(16, 256 * 1024)
    }

    /// The parsed and emitted header of a fragment of datagram `ident`.
    fn frag_header(ident: u16, offset: usize, len: usize, more: bool) -> (Ipv4Repr, [u8; IPV4_HEADER_LEN]) {
        let ip = Ipv4Repr {
            src_addr: SRC,
            dst_addr: DST,
            protocol: IpProtocol::Udp,
            payload_len: len,
            ttl: 64,
            ident,
            dont_frag: false,
            more_frags: more,
            frag_offset: offset as u16,
            dscp_ecn: 0,
        };
        let mut h = [0; IPV4_HEADER_LEN];
        ip.emit(&mut Ipv4Packet::new_unchecked(&mut h[..]), ChecksumMode::Verify);
        (ip, h)
    }

    /// Offer `data[offset..offset + len]` of datagram `ident`; MF is set
    /// unless the piece reaches the end of `data`.
    fn offer(r: &mut Ipv4Reassembly, c: &mut Counters, ident: u16, data: &[u8], offset: usize, len: usize) -> Outcome {
        let (ip, h) = frag_header(ident, offset, len, offset + len < data.len());
        r.insert(T0, &ip, &h, &data[offset..offset + len], c)
    }

    fn pattern(len: usize, seed: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251 + seed) as u8).collect()
    }

    /// Check that `o` completed datagram `ident` with exactly `data`.
    fn assert_whole(r: &Ipv4Reassembly, o: Outcome, ident: u16, data: &[u8]) {
        let Outcome::Complete { len, header_len, header } = o else { panic!("not complete: {o:?}") };
        assert_eq!((header_len, header.payload_len, header.ident, header.more_frags), (20, data.len(), ident, false));
        let p = Ipv4Packet::new_checked(&r.table.assembled()[..len]).expect("a valid datagram");
        assert!(p.verify_checksum());
        assert_eq!((p.ident(), p.more_frags(), p.frag_offset()), (ident, false, 0));
        assert_eq!(usize::from(p.total_len()), len);
        assert!(p.payload() == data, "reassembled data differs");
    }

    #[test]
    fn in_order() {
        let (mut r, mut c, data) = (table(), Counters::default(), pattern(3000, 0));
        assert_eq!(r.poll_timeout(), None);
        assert_eq!(offer(&mut r, &mut c, 1, &data, 0, 1480), Outcome::Pending);
        assert_eq!(offer(&mut r, &mut c, 1, &data, 1480, 1480), Outcome::Pending);
        assert_eq!(r.poll_timeout(), Some(T0 + TIMEOUT));
        assert_eq!((r.datagrams(), r.bytes_held()), (1, 6 * CHUNK));
        let o = offer(&mut r, &mut c, 1, &data, 2960, 40);
        assert_whole(&r, o, 1, &data);
        assert_eq!((c.ipv4_frag_rx, c.ipv4_reassembled, c.total_drops()), (3, 1, 0));
        assert_eq!((r.datagrams(), r.bytes_held(), r.poll_timeout()), (0, 0, None));
    }

    #[test]
    fn out_of_order_and_interleaved() {
        let (mut r, mut c) = (table(), Counters::default());
        let (a, b) = (pattern(2000, 1), pattern(1001, 2));
        assert_eq!(offer(&mut r, &mut c, 1, &a, 1600, 400), Outcome::Pending);
        assert_eq!(offer(&mut r, &mut c, 2, &b, 1000, 1), Outcome::Pending);
        assert_eq!(offer(&mut r, &mut c, 1, &a, 800, 800), Outcome::Pending);
        let o = offer(&mut r, &mut c, 2, &b, 0, 1000);
        assert_whole(&r, o, 2, &b);
        let o = offer(&mut r, &mut c, 1, &a, 0, 800);
        assert_whole(&r, o, 1, &a);
        assert_eq!((c.ipv4_reassembled, c.total_drops(), r.datagrams()), (2, 0, 0));
    }

    #[test]
    fn same_ident_other_protocol_or_source_is_another_datagram() {
        let (mut r, mut c, data) = (table(), Counters::default(), pattern(100, 3));
        let (mut ip, h) = frag_header(1, 0, 48, true);
        ip.protocol = IpProtocol::Tcp;
        assert_eq!(r.insert(T0, &ip, &h, &data[..48], &mut c), Outcome::Pending);
        ip.protocol = IpProtocol::Udp;
        ip.src_addr = Ipv4Addr::new(10, 0, 0, 9);
        assert_eq!(r.insert(T0, &ip, &h, &data[..48], &mut c), Outcome::Pending);
        assert_eq!(offer(&mut r, &mut c, 1, &data, 48, 52), Outcome::Pending);
        assert_eq!(r.datagrams(), 3);
        let o = offer(&mut r, &mut c, 1, &data, 0, 48);
        assert_whole(&r, o, 1, &data);
        assert_eq!(c.total_drops(), 0);
    }

    #[test]
    fn exact_duplicates_are_dropped_alone() {
        let (mut r, mut c, data) = (table(), Counters::default(), pattern(1500, 4));
        assert_eq!(offer(&mut r, &mut c, 1, &data, 0, 1000), Outcome::Pending);
        assert_eq!(offer(&mut r, &mut c, 1, &data, 0, 1000), Outcome::Pending);
        // Wholly inside data already held, the same bytes: a duplicate too.
        assert_eq!(offer(&mut r, &mut c, 1, &data, 504, 496), Outcome::Pending);
        assert_eq!(c.drop_ipv4_frag_duplicate, 2);
        let o = offer(&mut r, &mut c, 1, &data, 1000, 500);
        assert_whole(&r, o, 1, &data);
        // A duplicate of a datagram already delivered starts a new one (which will time out).
        assert_eq!(offer(&mut r, &mut c, 1, &data, 1000, 500), Outcome::Pending);
        assert_eq!((c.ipv4_reassembled, c.drop_ipv4_frag_duplicate, r.datagrams()), (1, 2, 1));
    }

    #[test]
    fn overlap_drops_the_whole_datagram() {
        let (mut r, mut c, data) = (table(), Counters::default(), pattern(3000, 5));
        assert_eq!(offer(&mut r, &mut c, 1, &data, 0, 1480), Outcome::Pending);
        assert_eq!(offer(&mut r, &mut c, 1, &data, 800, 1480), Outcome::Pending);
        assert_eq!((c.drop_ipv4_reasm_overlap, r.datagrams(), r.bytes_held(), r.poll_timeout()), (1, 0, 0, None));
        // Same range, other bytes: an overlap, not a duplicate.
        let mut other = data.clone();
        assert_eq!(offer(&mut r, &mut c, 2, &data, 0, 1480), Outcome::Pending);
        other[7] ^= 1;
        assert_eq!(offer(&mut r, &mut c, 2, &other, 0, 1480), Outcome::Pending);
        // A fragment that straddles held data and a hole.
        assert_eq!(offer(&mut r, &mut c, 3, &data, 1480, 1480), Outcome::Pending);
        assert_eq!(offer(&mut r, &mut c, 3, &data, 1000, 1480), Outcome::Pending);
        assert_eq!((c.drop_ipv4_reasm_overlap, r.datagrams(), r.bytes_held()), (3, 0, 0));
        assert_eq!(c.ipv4_reassembled, 0);
    }

    #[test]
    fn fragments_disagreeing_on_the_end_drop_the_datagram() {
        let (mut r, mut c, data) = (table(), Counters::default(), pattern(3000, 6));
        assert_eq!(offer(&mut r, &mut c, 1, &data, 2960, 40), Outcome::Pending);
        assert_eq!(offer(&mut r, &mut c, 1, &data[..2990], 2960, 30), Outcome::Pending);
        assert_eq!(c.drop_ipv4_reasm_overlap, 1);
        // Data beyond a last fragment that comes later.
        assert_eq!(offer(&mut r, &mut c, 2, &data, 1480, 1480), Outcome::Pending);
        assert_eq!(offer(&mut r, &mut c, 2, &data[..1000], 800, 200), Outcome::Pending);
        // A non-last fragment past a known end.
        assert_eq!(offer(&mut r, &mut c, 3, &data[..1000], 800, 200), Outcome::Pending);
        let (ip, h) = frag_header(3, 960, 80, true);
        assert_eq!(r.insert(T0, &ip, &h, &data[960..1040], &mut c), Outcome::Pending);
        assert_eq!((c.drop_ipv4_reasm_overlap, r.datagrams()), (3, 0));
    }

    #[test]
    fn non_last_fragments_must_carry_whole_blocks() {
        let (mut r, mut c, data) = (table(), Counters::default(), pattern(3000, 7));
        assert_eq!(offer(&mut r, &mut c, 1, &data, 0, 1001), Outcome::Pending);
        assert_eq!(offer(&mut r, &mut c, 1, &data, 8, 0), Outcome::Pending);
        assert_eq!((c.drop_ipv4_frag_malformed, r.datagrams()), (2, 0));
    }

    #[test]
    fn timeout_with_fragment_zero_reports_its_header() {
        let (mut r, mut c, data) = (table(), Counters::default(), pattern(3000, 8));
        assert_eq!(offer(&mut r, &mut c, 5, &data, 0, 1480), Outcome::Pending);
        let mut heard = Vec::new();
        r.expire(T0 + TIMEOUT - Duration::from_micros(1), |f| heard.push(f.map(|(h, d)| (*h, d.to_vec()))));
        assert!(heard.is_empty());
        r.expire(T0 + TIMEOUT, |f| heard.push(f.map(|(h, d)| (*h, d.to_vec()))));
        let [Some((h, d))] = &heard[..] else { panic!("{heard:?}") };
        assert_eq!((h.ident, h.frag_offset, h.more_frags, h.payload_len), (5, 0, true, 1480));
        assert_eq!(d[..], data[..8]);
        assert_eq!((r.datagrams(), r.bytes_held(), r.poll_timeout()), (0, 0, None));
        // Twice is harmless.
        r.expire(T0 + TIMEOUT * 2, |_| panic!("nothing left to expire"));
    }

    #[test]
    fn timeout_without_fragment_zero_reports_none() {
        let (mut r, mut c, data) = (table(), Counters::default(), pattern(3000, 9));
        assert_eq!(offer(&mut r, &mut c, 5, &data, 1480, 1480), Outcome::Pending);
        assert_eq!(offer(&mut r, &mut c, 5, &data, 2960, 40), Outcome::Pending);
        let mut heard = 0;
        r.expire(T0 + TIMEOUT, |f| {
            assert!(f.is_none());
            heard += 1;
        });
        assert_eq!((heard, r.datagrams(), r.bytes_held()), (1, 0, 0));
    }

    #[test]
    fn poll_timeout_is_the_earliest_deadline() {
        let (mut r, mut c, data) = (table(), Counters::default(), pattern(100, 10));
        let (ip, h) = frag_header(1, 0, 48, true);
        assert_eq!(r.insert(T0, &ip, &h, &data[..48], &mut c), Outcome::Pending);
        let (ip, h) = frag_header(2, 0, 48, true);
        let later = T0 + Duration::from_secs(5);
        assert_eq!(r.insert(later, &ip, &h, &data[..48], &mut c), Outcome::Pending);
        assert_eq!(r.poll_timeout(), Some(T0 + TIMEOUT));
        let (ip, h) = frag_header(1, 48, 52, false);
        assert!(matches!(r.insert(later, &ip, &h, &data[48..], &mut c), Outcome::Complete { .. }));
        assert_eq!(r.poll_timeout(), Some(later + TIMEOUT));
        let mut n = 0;
        r.expire(later + TIMEOUT, |_| n += 1);
        assert_eq!((n, r.poll_timeout()), (1, None));
    }

    #[test]
    fn table_full_refuses_new_datagrams_only() {
        let (mut r, mut c, data) = (table_with(2, 256 * 1024), Counters::default(), pattern(100, 11));
        for ident in 1..=3 {
            assert_eq!(offer(&mut r, &mut c, ident, &data, 0, 48), Outcome::Pending);
        }
        assert_eq!((c.drop_ipv4_reasm_table_full, r.datagrams()), (1, 2));
        let o = offer(&mut r, &mut c, 1, &data, 48, 52);
        assert_whole(&r, o, 1, &data);
        assert_eq!(offer(&mut r, &mut c, 3, &data, 0, 48), Outcome::Pending);
        assert_eq!((c.drop_ipv4_reasm_table_full, r.datagrams()), (1, 2));
        // No table at all: reassembly is off.
        let mut off = table_with(0, 256 * 1024);
        assert_eq!(offer(&mut off, &mut c, 1, &data, 0, 48), Outcome::Pending);
        assert_eq!((c.drop_ipv4_reasm_table_full, off.datagrams(), off.bytes_held()), (2, 0, 0));
    }

    #[test]
    fn datagrams_past_65535_bytes_are_dropped() {
        let (mut r, mut c, data) = (table(), Counters::default(), pattern(65_600, 12));
        // The last block an offset can name, with more than 7 bytes of data.
        assert_eq!(offer(&mut r, &mut c, 1, &data[..65_544], 65_528, 16), Outcome::Pending);
        assert_eq!((c.drop_ipv4_reasm_too_big, r.datagrams()), (1, 0));
        // A datagram in progress is abandoned by a fragment that reaches too far.
        assert_eq!(offer(&mut r, &mut c, 2, &data, 0, 1480), Outcome::Pending);
        assert_eq!(offer(&mut r, &mut c, 2, &data[..65_520], 65_000, 520), Outcome::Pending);
        assert_eq!((c.drop_ipv4_reasm_too_big, r.datagrams(), r.bytes_held()), (2, 0, 0));
        // Exactly 65,535 bytes is fine.
        let max = &data[..MAX_DATA];
        for offset in (0..MAX_DATA).step_by(1480) {
            let o = offer(&mut r, &mut c, 3, max, offset, 1480.min(MAX_DATA - offset));
            if offset + 1480 >= MAX_DATA {
                assert_whole(&r, o, 3, max);
            }
        }
        assert_eq!(c.ipv4_reassembled, 1);
    }

    #[test]
    fn options_of_fragment_zero_are_kept_and_count_toward_the_size() {
        let (mut r, mut c, data) = (table(), Counters::default(), pattern(MAX_DATA, 13));
        // Fragment zero with 40 bytes of options (NOPs, then end of list).
        let (mut ip, h20) = frag_header(1, 0, 1480, true);
        let mut h = [1u8; 60];
        h[..20].copy_from_slice(&h20);
        h[59] = 0;
        Ipv4Packet::new_unchecked(&mut h[..]).set_version_and_header_len(4, 60);
        assert_eq!(r.insert(T0, &ip, &h, &data[..1480], &mut c), Outcome::Pending);
        let o = offer(&mut r, &mut c, 1, &data[..2000], 1480, 520);
        let Outcome::Complete { len, header_len, .. } = o else { panic!("{o:?}") };
        assert_eq!((len, header_len), (2060, 60));
        let p = Ipv4Packet::new_checked(&r.table.assembled()[..len]).unwrap();
        assert_eq!((p.header_len(), p.options()[0], p.payload() == &data[..2000]), (60, 1, true));
        // 60 + 65,515 bytes is too long, though every fragment fitted.
        ip.ident = 2;
        assert_eq!(r.insert(T0, &ip, &h, &data[..1480], &mut c), Outcome::Pending);
        for offset in (1480..MAX_DATA).step_by(1480) {
            assert_eq!(offer(&mut r, &mut c, 2, &data, offset, 1480.min(MAX_DATA - offset)), Outcome::Pending);
        }
        assert_eq!((c.drop_ipv4_reasm_too_big, r.datagrams(), r.bytes_held()), (1, 0, 0));
    }

    #[test]
    fn memory_limit_abandons_the_datagram_that_needs_more() {
        let (mut r, mut c) = (table_with(16, 8 * CHUNK), Counters::default());
        let (a, b) = (pattern(3000, 14), pattern(3000, 15));
        assert_eq!(offer(&mut r, &mut c, 1, &a, 0, 1480), Outcome::Pending);
        assert_eq!(offer(&mut r, &mut c, 1, &a, 1480, 1480), Outcome::Pending);
        assert_eq!(r.bytes_held(), 6 * CHUNK);
        assert_eq!(offer(&mut r, &mut c, 2, &b, 0, 1480), Outcome::Pending);
        assert_eq!((c.drop_ipv4_reasm_memory, r.datagrams(), r.bytes_held()), (1, 1, 6 * CHUNK));
        let o = offer(&mut r, &mut c, 1, &a, 2960, 40);
        assert_whole(&r, o, 1, &a);
        assert_eq!(r.bytes_held(), 0);
    }

    /// A datagram's data cut at 8-byte boundaries, in any order, with duplicates.
    fn splittings() -> impl Strategy<Value = (Vec<u8>, Vec<(usize, usize)>)> {
        (1usize..=9000, proptest::collection::vec(1usize..=1125, 1..40), any::<u8>()).prop_flat_map(
            |(len, cuts, seed)| {
                let data = pattern(len, usize::from(seed));
                let mut bounds: Vec<usize> = cuts.iter().map(|b| b * 8).filter(|&b| b < len).collect();
                bounds.push(0);
                bounds.push(len);
                bounds.sort_unstable();
                bounds.dedup();
                let pieces: Vec<(usize, usize)> = bounds.windows(2).map(|w| (w[0], w[1] - w[0])).collect();
                let n = pieces.len();
                (Just(data), Just(pieces).prop_shuffle(), proptest::collection::vec(0..n, 0..3)).prop_map(
                    |(data, mut pieces, dups)| {
                        for d in dups {
                            let p = pieces[d];
                            pieces.insert(d, p);
                        }
                        (data, pieces)
                    },
                )
            },
        )
    }

    proptest! {
        #[test]
        fn any_splitting_and_order_reassembles_the_original((data, pieces) in splittings()) {
            let needed: usize = {
                let mut seen = std::collections::BTreeSet::new();
                pieces.iter().filter(|p| seen.insert(**p)).count()
            };
            // One piece would be a whole datagram, which never comes here.
            prop_assume!(needed > 1);
            let (mut r, mut c) = (table(), Counters::default());
            let mut completions = 0u64;
            for &(offset, len) in &pieces {
                let o = offer(&mut r, &mut c, 77, &data, offset, len);
                if let Outcome::Complete { .. } = o {
                    assert_whole(&r, o, 77, &data);
                    completions += 1;
                }
            }
            // Duplicates that come after the datagram was delivered start
            // another (which completes too if they cover it all, or times out).
            prop_assert!(completions >= 1);
            prop_assert_eq!(c.ipv4_reassembled, completions);
            prop_assert_eq!(c.drop_ipv4_reasm_overlap, 0);
            prop_assert_eq!(c.ipv4_frag_rx as usize, pieces.len());
            prop_assert!(c.drop_ipv4_frag_duplicate as usize <= pieces.len() - needed);
        }

        #[test]
        fn fragment_garbage_never_panics_or_exceeds_its_bounds(
            ops in proptest::collection::vec(
                (0u16..4, 0usize..8192, 0usize..3000, any::<bool>(), any::<u8>(), 0u64..20_000),
                1..200,
            )
        ) {
            let memory = 24 * CHUNK;
            let (mut r, mut c) = (table_with(3, memory), Counters::default());
            let mut now = T0;
            let mut expired = 0u64;
            for (ident, block, len, more, fill, advance_ms) in ops {
                now += Duration::from_millis(advance_ms);
                r.expire(now, |_| expired += 1);
                let offset = block * 8;
                let data = vec![fill; len];
                let (ip, h) = frag_header(ident, offset, len, more);
                if let Outcome::Complete { len, .. } = r.insert(now, &ip, &h, &data, &mut c) {
                    let p = Ipv4Packet::new_checked(&r.table.assembled()[..len]).unwrap();
                    prop_assert_eq!(usize::from(p.total_len()), len);
                    prop_assert!(p.verify_checksum());
                }
                prop_assert!(r.bytes_held() <= memory);
                prop_assert!(r.datagrams() <= 3);
                let live = r.datagrams();
                prop_assert_eq!(live, r.datagrams());
                prop_assert_eq!(r.poll_timeout(), r.table.earliest_live_deadline());
            }
            let left = r.datagrams() as u64;
            r.expire(Instant::NEVER, |_| expired += 1);
            prop_assert_eq!((r.datagrams(), r.bytes_held(), r.poll_timeout()), (0, 0, None));
            // Every datagram opened ended one way or another.
            let ended = c.ipv4_reassembled + c.drop_ipv4_reasm_overlap + c.drop_ipv4_reasm_memory + expired;
            prop_assert!(left <= expired && ended <= c.ipv4_frag_rx);
        }
    }
}
