//! Software GSO and GRO for a device whose link has neither (AF_XDP): the
//! stack still builds one TCP/IPv4 super-segment and takes one coalesced
//! segment, and the device does the cutting and the gluing at its edge.
//!
//! * **GSO** ([`segment_count`], [`write_segment`]): a super-segment (the
//!   stack's headers once, then up to 64 KiB of payload, its TCP checksum
//!   left partial as [`TxMeta`] says) is cut into wire segments of
//!   `gso_size` payload bytes, each written straight into its transmit
//!   frame: the built headers copied, then IP total length, identification
//!   and header checksum, TCP sequence number and flags (FIN and PSH only on
//!   the last, CWR only on the first, as Linux's GSO does) and a full TCP
//!   checksum. [`complete_checksum`] finishes an ordinary frame whose
//!   checksum the stack left partial.
//! * **GRO** ([`parse`], [`Gro`]): within one receive burst, consecutive
//!   in-order segments of one flow are glued into one frame before TCP
//!   input, by Linux's rules (`tcp_gro_receive`): IPv4 without options or
//!   fragments, identical addresses, ports, ACK number, window, TOS, TTL and
//!   TCP options (timestamps included), only ACK (and PSH on the last) set,
//!   every segment but the last of the first one's size, and the checksums
//!   of every segment verified first. The glued frame carries a correct IP
//!   and TCP checksum and is marked verified, with the segment size in
//!   [`RxMeta::gso_size`], so the stack ACKs it as the segments it stands for.
//!
//! Nothing here allocates: the device owns one buffer per direction, made
//! when it opens.

use std::net::Ipv4Addr;
use ustack_core::phy::{GsoType, RxMeta, TxMeta};
use ustack_wire::checksum;

const ETH: usize = 14;
/// The largest IPv4 packet, and so the largest glued or cut super-segment.
pub(crate) const MAX_IP: usize = 65_535;
/// A buffer that holds any super-segment with its Ethernet header.
pub(crate) const MAX_FRAME: usize = ETH + MAX_IP;

const FIN: u8 = 0x01;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const CWR: u8 = 0x80;

/// Offsets of a plain TCP/IPv4 Ethernet frame: (IP header length, TCP header
/// start, headers' end). `None` unless it is one.
fn tcp4_layout(frame: &[u8]) -> Option<(usize, usize, usize)> {
    if frame.len() < ETH + 20 + 20 || frame[12..14] != [0x08, 0x00] || frame[ETH] >> 4 != 4 || frame[ETH + 9] != 6 {
        return None;
    }
    let ihl = usize::from(frame[ETH] & 0x0f) * 4;
    let tcp = ETH + ihl;
    if ihl < 20 || frame.len() < tcp + 20 {
        return None;
    }
    let end = tcp + usize::from(frame[tcp + 12] >> 4) * 4;
    (end >= tcp + 20 && end <= frame.len()).then_some((ihl, tcp, end))
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn addrs(frame: &[u8]) -> (Ipv4Addr, Ipv4Addr) {
    let a = |at: usize| Ipv4Addr::new(frame[at], frame[at + 1], frame[at + 2], frame[at + 3]);
    (a(ETH + 12), a(ETH + 16))
}

/// Rewrite the IPv4 header checksum of `frame` (header of `ihl` bytes).
fn fill_ip_checksum(frame: &mut [u8], ihl: usize) {
    frame[ETH + 10..ETH + 12].fill(0);
    let c = checksum::finish(checksum::sum(&frame[ETH..ETH + ihl]));
    frame[ETH + 10..ETH + 12].copy_from_slice(&c.to_be_bytes());
}

/// Finish a checksum the stack left partial (`meta.csum_partial`): the
/// field holds the pseudo-header sum; sum from `csum_start` to the end and
/// store the result, as a NIC does. False (frame untouched) when the
/// offsets do not fit the frame.
pub(crate) fn complete_checksum(frame: &mut [u8], meta: &TxMeta) -> bool {
    let start = usize::from(meta.csum_start);
    let field = start + usize::from(meta.csum_offset);
    if !meta.csum_partial || field + 2 > frame.len() || start > frame.len() {
        return false;
    }
    let mut c = checksum::finish(checksum::sum(&frame[start..]));
    let udp4 = frame.len() > ETH + 9 && frame[12..14] == [0x08, 0x00] && frame[ETH + 9] == 17;
    if c == 0 && udp4 {
        c = 0xffff; // RFC 768: a computed zero is sent as all ones
    }
    frame[field..field + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// How many wire segments the super-segment `frame` (sent with `meta`)
/// is cut into; `None` when it is not one this module can cut (not
/// TCP/IPv4, headers other than `hdr_len` says, no segment size, or too big).
pub(crate) fn segment_count(frame: &[u8], meta: &TxMeta) -> Option<usize> {
    let (_, _, end) = tcp4_layout(frame)?;
    let mss = usize::from(meta.gso_size);
    if meta.gso_type != GsoType::TcpV4 || mss == 0 || usize::from(meta.hdr_len) != end || frame.len() > MAX_FRAME {
        return None;
    }
    Some((frame.len() - end).div_ceil(mss).max(1))
}

/// The length of segment `index` of `frame` (see [`segment_count`]).
pub(crate) fn segment_len(frame: &[u8], meta: &TxMeta, index: usize) -> usize {
    let (hdr, mss) = (usize::from(meta.hdr_len), usize::from(meta.gso_size));
    let payload = frame.len() - hdr;
    hdr + payload.saturating_sub(index * mss).min(mss)
}

/// Write segment `index` of the super-segment `frame` into `out`, which is
/// exactly [`segment_len`] bytes: the headers with this segment's length,
/// identification, sequence number and flags, its payload, and both
/// checksums complete. `frame` must have passed [`segment_count`].
pub(crate) fn write_segment(frame: &[u8], meta: &TxMeta, index: usize, out: &mut [u8]) {
    let (hdr, mss) = (usize::from(meta.hdr_len), usize::from(meta.gso_size));
    let ihl = usize::from(frame[ETH] & 0x0f) * 4;
    let tcp = ETH + ihl;
    let start = hdr + index * mss;
    let n = out.len() - hdr;
    let last = start + n >= frame.len();
    out[..hdr].copy_from_slice(&frame[..hdr]);
    out[hdr..].copy_from_slice(&frame[start..start + n]);
    let total = (out.len() - ETH) as u16;
    out[ETH + 2..ETH + 4].copy_from_slice(&total.to_be_bytes());
    let id = be16(frame, ETH + 4).wrapping_add(index as u16);
    out[ETH + 4..ETH + 6].copy_from_slice(&id.to_be_bytes());
    fill_ip_checksum(out, ihl);
    let seq = be32(frame, tcp + 4).wrapping_add((index * mss) as u32);
    out[tcp + 4..tcp + 8].copy_from_slice(&seq.to_be_bytes());
    let mut flags = frame[tcp + 13];
    if !last {
        flags &= !(FIN | PSH);
    }
    if index > 0 {
        flags &= !CWR;
    }
    out[tcp + 13] = flags;
    out[tcp + 16..tcp + 18].fill(0);
    let (src, dst) = addrs(frame);
    let l4 = out.len() - tcp;
    let sum = checksum::combine(checksum::pseudo_header_v4(src, dst, 6, l4 as u32), checksum::sum(&out[tcp..]));
    out[tcp + 16..tcp + 18].copy_from_slice(&checksum::finish(sum).to_be_bytes());
}

/// A received TCP/IPv4 segment that GRO may glue, its checksums verified.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seg {
    ihl: usize,
    tcp: usize,
    hdr: usize,
    /// The IP packet's end in the frame (Ethernet padding after it).
    end: usize,
    seq: u32,
    flags: u8,
    payload_sum: u32,
}

impl Seg {
    fn payload_len(&self) -> usize {
        self.end - self.hdr
    }
}

/// Parse `frame` as a segment GRO may glue, verifying its IP and TCP
/// checksums; `None` for anything else (the stack then sees it as it came).
pub(crate) fn parse(frame: &[u8]) -> Option<Seg> {
    let (ihl, tcp, hdr) = tcp4_layout(frame)?;
    let end = ETH + usize::from(be16(frame, ETH + 2));
    let frag = be16(frame, ETH + 6) & 0x3fff; // MF and the offset
    if ihl != 20 || frag != 0 || end <= hdr || end > frame.len() {
        return None;
    }
    let flags = frame[tcp + 13];
    if flags & !(ACK | PSH) != 0 || flags & ACK == 0 {
        return None;
    }
    if checksum::fold(checksum::sum(&frame[ETH..tcp])) != 0xffff {
        return None;
    }
    let (src, dst) = addrs(frame);
    let payload_sum = checksum::sum(&frame[hdr..end]);
    let header = checksum::combine(
        checksum::pseudo_header_v4(src, dst, 6, (end - tcp) as u32),
        checksum::sum(&frame[tcp..hdr]),
    );
    if checksum::fold(checksum::combine(header, payload_sum)) != 0xffff {
        return None;
    }
    Some(Seg { ihl, tcp, hdr, end, seq: be32(frame, tcp + 4), flags, payload_sum })
}

/// Glues segments into one frame; owns the buffer it glues in.
pub(crate) struct Gro {
    buf: Box<[u8]>,
    len: usize,
    first: Option<Seg>,
    next_seq: u32,
    sum: u32,
    segments: usize,
    closed: bool,
}

impl Gro {
    pub(crate) fn new() -> Gro {
        Gro {
            buf: vec![0; MAX_FRAME].into_boxed_slice(),
            len: 0,
            first: None,
            next_seq: 0,
            sum: 0,
            segments: 0,
            closed: false,
        }
    }

    /// Whether `seg` (in `frame`) can start a glued frame: a full, even
    /// segment with only ACK set (PSH ends a run).
    pub(crate) fn can_start(seg: &Seg) -> bool {
        seg.flags == ACK && seg.payload_len().is_multiple_of(2)
    }

    /// Start gluing with `frame`.
    pub(crate) fn start(&mut self, frame: &[u8], seg: &Seg) {
        self.buf[..seg.end].copy_from_slice(&frame[..seg.end]);
        self.len = seg.end;
        self.first = Some(*seg);
        self.next_seq = seg.seq.wrapping_add(seg.payload_len() as u32);
        self.sum = seg.payload_sum;
        self.segments = 1;
        self.closed = false;
    }

    /// Append `frame` if it continues the run; false (nothing changed) if not.
    pub(crate) fn push(&mut self, frame: &[u8], seg: &Seg) -> bool {
        let Some(first) = self.first else { return false };
        let n = seg.payload_len();
        let same_headers = seg.hdr == first.hdr
            // TOS (and the version and header length) equal; TTL and protocol equal; addresses equal.
            && frame[ETH..ETH + 2] == self.buf[ETH..ETH + 2]
            && frame[ETH + 8..ETH + 10] == self.buf[ETH + 8..ETH + 10]
            && frame[ETH + 12..ETH + 20] == self.buf[ETH + 12..ETH + 20]
            && frame[..12] == self.buf[..12]
            // Ports; ACK number; data offset; window; urgent pointer and options.
            && frame[first.tcp..first.tcp + 4] == self.buf[first.tcp..first.tcp + 4]
            && frame[first.tcp + 8..first.tcp + 13] == self.buf[first.tcp + 8..first.tcp + 13]
            && frame[first.tcp + 14..first.tcp + 16] == self.buf[first.tcp + 14..first.tcp + 16]
            && frame[first.tcp + 18..first.hdr] == self.buf[first.tcp + 18..first.hdr];
        if self.closed
            || !same_headers
            || seg.seq != self.next_seq
            || n > first.payload_len()
            || self.len + n > MAX_FRAME
        {
            return false;
        }
        self.buf[self.len..self.len + n].copy_from_slice(&frame[seg.hdr..seg.end]);
        self.len += n;
        self.next_seq = self.next_seq.wrapping_add(n as u32);
        self.sum = checksum::combine(self.sum, seg.payload_sum);
        self.segments += 1;
        // A short segment or a PSH ends the run, as in Linux.
        if n < first.payload_len() || seg.flags & PSH != 0 {
            self.buf[first.tcp + 13] |= seg.flags & PSH;
            self.closed = true;
        }
        true
    }

    /// Segments glued so far.
    pub(crate) fn segments(&self) -> usize {
        self.segments
    }

    /// The glued frame, its IP length and both checksums rewritten, and the
    /// metadata that says what it stands for.
    pub(crate) fn finish(&mut self) -> (&[u8], RxMeta) {
        let first = self.first.take().expect("finish after start");
        let total = (self.len - ETH) as u16;
        self.buf[ETH + 2..ETH + 4].copy_from_slice(&total.to_be_bytes());
        fill_ip_checksum(&mut self.buf, first.ihl);
        let tcp = first.tcp;
        self.buf[tcp + 16..tcp + 18].fill(0);
        let (src, dst) = addrs(&self.buf);
        let header = checksum::sum(&self.buf[tcp..first.hdr]);
        let pseudo = checksum::pseudo_header_v4(src, dst, 6, (self.len - tcp) as u32);
        let sum = checksum::combine(checksum::combine(pseudo, header), self.sum);
        self.buf[tcp + 16..tcp + 18].copy_from_slice(&checksum::finish(sum).to_be_bytes());
        let meta = RxMeta {
            csum_verified: true,
            gso_type: GsoType::TcpV4,
            gso_size: first.payload_len() as u16,
            hdr_len: first.hdr as u16,
            ..Default::default()
        };
        (&self.buf[..self.len], meta)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    /// Counts allocations on the thread that asks ([`allocations_during`]),
    /// for the tests that show GSO and GRO allocate nothing per segment.
    struct Counting;

    thread_local! {
        static COUNTING: Cell<bool> = const { Cell::new(false) };
        static ALLOCS: Cell<u64> = const { Cell::new(0) };
    }

    fn count() {
        if COUNTING.try_with(Cell::get).unwrap_or(false) {
            ALLOCS.with(|a| a.set(a.get() + 1));
        }
    }

    // SAFETY: forwards to the system allocator unchanged.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count();
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            count();
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    /// Allocations (and reallocations) `f` makes on this thread.
    pub(crate) fn allocations_during(f: impl FnOnce()) -> u64 {
        ALLOCS.with(|a| a.set(0));
        COUNTING.with(|c| c.set(true));
        f();
        COUNTING.with(|c| c.set(false));
        ALLOCS.with(Cell::get)
    }

    const SYN: u8 = 0x02;
    const RST: u8 = 0x04;

    pub(crate) const ACK_ONLY: u8 = ACK;
    const SRC: [u8; 4] = [10, 0, 0, 1];
    const DST: [u8; 4] = [10, 0, 0, 2];

    /// A TCP/IPv4 frame with the timestamp option, `payload` bytes of a
    /// pattern from `seq` on, its TCP checksum partial (the pseudo-header
    /// sum) as the stack leaves it for a device that offers the offload.
    pub(crate) fn super_segment(seq: u32, payload: usize, flags: u8) -> (Vec<u8>, TxMeta) {
        let hdr = ETH + 20 + 32;
        let mut f = vec![0u8; hdr + payload];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[ETH] = 0x45;
        f[ETH + 2..ETH + 4].copy_from_slice(&((20 + 32 + payload) as u16).to_be_bytes());
        f[ETH + 4..ETH + 6].copy_from_slice(&0x1234u16.to_be_bytes());
        f[ETH + 6] = 0x40; // DF
        f[ETH + 8] = 64;
        f[ETH + 9] = 6;
        f[ETH + 12..ETH + 16].copy_from_slice(&SRC);
        f[ETH + 16..ETH + 20].copy_from_slice(&DST);
        fill_ip_checksum(&mut f, 20);
        let t = ETH + 20;
        f[t..t + 4].copy_from_slice(&[0x1f, 0x90, 0xc0, 0x00]);
        f[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
        f[t + 8..t + 12].copy_from_slice(&7u32.to_be_bytes());
        f[t + 12] = 8 << 4;
        f[t + 13] = flags;
        f[t + 14..t + 16].copy_from_slice(&512u16.to_be_bytes());
        f[t + 20..t + 32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 3]);
        for (i, b) in f[hdr..].iter_mut().enumerate() {
            *b = (seq as usize + i).wrapping_mul(31) as u8;
        }
        let pseudo = checksum::pseudo_header_v4(SRC.into(), DST.into(), 6, (32 + payload) as u32);
        f[t + 16..t + 18].copy_from_slice(&checksum::fold(pseudo).to_be_bytes());
        let meta = TxMeta {
            csum_partial: true,
            csum_start: t as u16,
            csum_offset: 16,
            gso_type: GsoType::TcpV4,
            gso_size: 1448,
            hdr_len: hdr as u16,
        };
        (f, meta)
    }

    fn cut(frame: &[u8], meta: &TxMeta) -> Vec<Vec<u8>> {
        let n = segment_count(frame, meta).expect("a super-segment");
        (0..n)
            .map(|i| {
                let mut out = vec![0u8; segment_len(frame, meta, i)];
                write_segment(frame, meta, i, &mut out);
                out
            })
            .collect()
    }

    #[test]
    fn gso_cuts_wire_segments_with_their_own_headers_and_checksums() {
        let (sup, meta) = super_segment(1000, 4000, ACK | PSH | FIN | CWR);
        let segs = cut(&sup, &meta);
        assert_eq!(segs.iter().map(Vec::len).collect::<Vec<_>>(), [66 + 1448, 66 + 1448, 66 + 1104]);
        let mut payload = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let seg = parse_any(s);
            assert_eq!(seg.seq, 1000 + 1448 * i as u32, "segment {i}");
            assert_eq!(be16(s, ETH + 2) as usize, s.len() - ETH, "IP total length");
            assert_eq!(be16(s, ETH + 4), 0x1234 + i as u16, "IP identification");
            let want = if i == 2 { ACK | PSH | FIN } else if i == 0 { ACK | CWR } else { ACK };
            assert_eq!(s[ETH + 20 + 13], want, "flags of segment {i}");
            assert_eq!(s[ETH + 20 + 20..ETH + 20 + 32], sup[ETH + 20 + 20..ETH + 20 + 32], "options copied");
            payload.extend_from_slice(&s[66..]);
        }
        assert_eq!(payload, sup[66..], "payload cut in order");
        // A frame no larger than one segment still comes out whole.
        let (small, meta) = super_segment(5, 100, ACK);
        assert_eq!(cut(&small, &meta).len(), 1);
        // Not TCP/IPv4, or headers other than hdr_len says: refused.
        let mut arp = small.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(segment_count(&arp, &meta), None);
        assert_eq!(segment_count(&small, &TxMeta { hdr_len: 60, ..meta }), None);
        assert_eq!(segment_count(&small, &TxMeta { gso_size: 0, ..meta }), None);
    }

    /// Parse with checksums verified, whatever the flags.
    fn parse_any(frame: &[u8]) -> Seg {
        let mut f = frame.to_vec();
        let t = ETH + 20;
        let flags = f[t + 13];
        f[t + 13] = ACK;
        // Flags are in the checksum: adjust it for the test's parse.
        let old = u16::from_be_bytes([f[t + 12], flags]);
        let new = u16::from_be_bytes([f[t + 12], ACK]);
        let c = checksum::update(be16(&f, t + 16), old, new);
        f[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
        let mut seg = parse(&f).expect("checksums verify");
        seg.flags = flags;
        seg
    }

    #[test]
    fn gro_glues_what_gso_cut_back_into_the_super_segment() {
        let (sup, meta) = super_segment(77, 1448 * 30 + 500, ACK | PSH);
        let segs = cut(&sup, &meta);
        let mut gro = Gro::new();
        let first = parse(&segs[0]).unwrap();
        assert!(Gro::can_start(&first));
        gro.start(&segs[0], &first);
        for s in &segs[1..] {
            assert!(gro.push(s, &parse(s).unwrap()));
        }
        assert_eq!(gro.segments(), 31);
        let (glued, rx) = gro.finish();
        assert_eq!((rx.csum_verified, rx.gso_type, rx.gso_size, rx.hdr_len), (true, GsoType::TcpV4, 1448, 66));
        let mut want = sup.clone();
        complete_checksum(&mut want, &meta);
        // The IP identification is the first segment's, as is everything else.
        assert_eq!(glued, &want[..], "glued frame equals the super-segment with its checksum complete");
        assert!(parse(glued).is_some(), "and its checksums verify");
    }

    #[test]
    fn gro_glues_only_consecutive_segments_of_one_flow() {
        let seg = |seq: u32, len: usize, flags: u8| {
            let (mut f, meta) = super_segment(seq, len, flags);
            complete_checksum(&mut f, &meta);
            f
        };
        let a = seg(0, 1448, ACK);
        let mut gro = Gro::new();
        let pa = parse(&a).unwrap();
        gro.start(&a, &pa);
        // A gap, a longer segment, another flow, other options: refused.
        let gap = seg(2896, 1448, ACK);
        assert!(!gro.push(&gap, &parse(&gap).unwrap()));
        let long = seg(1448, 1460, ACK);
        assert!(!gro.push(&long, &parse(&long).unwrap()));
        let mut other_port = seg(1448, 1448, ACK);
        other_port[ETH + 20 + 1] ^= 1;
        refix(&mut other_port);
        assert!(!gro.push(&other_port, &parse(&other_port).unwrap()));
        let mut other_ts = seg(1448, 1448, ACK);
        other_ts[ETH + 20 + 27] ^= 1;
        refix(&mut other_ts);
        assert!(!gro.push(&other_ts, &parse(&other_ts).unwrap()));
        // The next one, then a short one with PSH: glued, and the run ends.
        let b = seg(1448, 1448, ACK);
        assert!(gro.push(&b, &parse(&b).unwrap()));
        let c = seg(2896, 100, ACK | PSH);
        assert!(gro.push(&c, &parse(&c).unwrap()));
        let d = seg(2996, 1448, ACK);
        assert!(!gro.push(&d, &parse(&d).unwrap()), "nothing after the end of a run");
        let (glued, _) = gro.finish();
        assert_eq!(glued.len(), 66 + 2996);
        assert_eq!(glued[ETH + 20 + 13], ACK | PSH);
        // Bad checksums, FIN, SYN, fragments, IP options: not GRO's.
        let mut bad = seg(0, 1448, ACK);
        bad[100] ^= 0xff;
        assert!(parse(&bad).is_none());
        assert!(parse(&seg(0, 1448, ACK | FIN)).is_none());
        assert!(parse(&seg(0, 1448, SYN | ACK)).is_none());
        assert!(parse(&seg(0, 1448, RST | ACK)).is_none());
        let mut frag = seg(0, 1448, ACK);
        frag[ETH + 6] = 0x20; // MF
        fill_ip_checksum(&mut frag, 20);
        assert!(parse(&frag).is_none());
        assert!(parse(&a[..40]).is_none(), "truncated");
    }

    /// Recompute the TCP checksum of a frame built by `super_segment`.
    fn refix(f: &mut [u8]) {
        let t = ETH + 20;
        let pseudo = checksum::pseudo_header_v4(SRC.into(), DST.into(), 6, (f.len() - t) as u32);
        f[t + 16..t + 18].copy_from_slice(&checksum::fold(pseudo).to_be_bytes());
        let meta = TxMeta { csum_partial: true, csum_start: t as u16, csum_offset: 16, ..Default::default() };
        assert!(complete_checksum(f, &meta));
    }

    /// A UDP checksum that computes to zero goes out as 0xffff (zero means
    /// "no checksum" in UDP); TCP has no such rule.
    #[test]
    fn a_udp_checksum_of_zero_is_sent_as_all_ones() {
        let (mut f, _) = super_segment(0, 100, ACK);
        f.truncate(ETH + 20 + 8 + 10);
        f[ETH + 9] = 17;
        let u = ETH + 20;
        f[u + 4..u + 6].copy_from_slice(&18u16.to_be_bytes());
        f[u + 8..u + 18].fill(0);
        let pseudo = checksum::pseudo_header_v4(SRC.into(), DST.into(), 17, 18);
        f[u + 6..u + 8].copy_from_slice(&checksum::fold(pseudo).to_be_bytes());
        // Two payload bytes chosen so that the sum folds to 0xffff.
        let w = !checksum::fold(checksum::sum(&f[u..]));
        f[u + 8..u + 10].copy_from_slice(&w.to_be_bytes());
        let meta = TxMeta { csum_partial: true, csum_start: u as u16, csum_offset: 6, ..Default::default() };
        assert!(complete_checksum(&mut f, &meta));
        assert_eq!(be16(&f, u + 6), 0xffff);
    }

    #[test]
    fn complete_checksum_matches_a_full_computation() {
        let (mut f, meta) = super_segment(9, 999, ACK);
        assert!(complete_checksum(&mut f, &meta));
        assert!(parse(&f).is_some());
        assert!(!complete_checksum(&mut f[..40], &meta), "offsets outside the frame");
    }
}
