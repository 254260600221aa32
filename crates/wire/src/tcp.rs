//! TCP segments (RFC 9293) and their options.
//!
//! After [`TcpPacket::new_checked`] returns `Ok`, no accessor panics.

use core::fmt;
use core::ops;

use crate::bytes::{get_u16, get_u32, set_u16, set_u32};
use crate::checksum::{self, PseudoHeader};
use crate::{ChecksumMode, Error, Result};

mod option;
pub use option::TcpOption;

/// Length of a TCP header without options.
pub const TCP_HEADER_LEN: usize = 20;
/// Largest TCP header (data offset 15).
pub const TCP_MAX_HEADER_LEN: usize = 60;

const PROTO_TCP: u8 = 6;

/// A TCP sequence (or acknowledgement) number: the one type the wire format
/// and the TCP engine share.
///
/// RFC 9293 §3.4: "It is essential to remember that the actual sequence number
/// space is finite, though very large ... all arithmetic dealing with sequence
/// numbers must be performed modulo 2**32." Comparisons follow RFC 1982 serial
/// number arithmetic: `a < b` when `b - a`, taken as a signed 32-bit value, is
/// positive. Two numbers exactly 2^31 apart are "undefined" in RFC 1982; here
/// both `a.lt(b)` and `b.lt(a)` are then true. Nothing here panics.
///
/// It deliberately does not implement `PartialOrd`: the relation is not
/// transitive across the whole space, so the explicit `lt`/`le`/`gt`/`ge`
/// methods make every comparison visible as a modular one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpSeqNumber(pub u32);

impl TcpSeqNumber {
    /// `self - other` as a signed distance.
    #[inline]
    pub fn diff(self, other: TcpSeqNumber) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }
    /// The number of octets from `earlier` up to `self`, or 0 when `self` is
    /// not after `earlier`.
    #[inline]
    pub fn since(self, earlier: TcpSeqNumber) -> u32 {
        let d = self.diff(earlier);
        if d > 0 {
            d as u32
        } else {
            0
        }
    }
    /// `self < other` modulo 2^32 (RFC 1982).
    #[inline]
    pub fn lt(self, other: TcpSeqNumber) -> bool {
        self.diff(other) < 0
    }
    /// `self <= other` modulo 2^32.
    #[inline]
    pub fn le(self, other: TcpSeqNumber) -> bool {
        self.diff(other) <= 0
    }
    /// `self > other` modulo 2^32.
    #[inline]
    pub fn gt(self, other: TcpSeqNumber) -> bool {
        self.diff(other) > 0
    }
    /// `self >= other` modulo 2^32.
    #[inline]
    pub fn ge(self, other: TcpSeqNumber) -> bool {
        self.diff(other) >= 0
    }
    /// The later of the two.
    #[inline]
    pub fn max(self, other: TcpSeqNumber) -> TcpSeqNumber {
        if self.ge(other) {
            self
        } else {
            other
        }
    }
    /// The earlier of the two.
    #[inline]
    pub fn min(self, other: TcpSeqNumber) -> TcpSeqNumber {
        if self.le(other) {
            self
        } else {
            other
        }
    }
    /// `start =< self < end`, RFC 9293's notation for "in the window".
    #[inline]
    pub fn in_window(self, start: TcpSeqNumber, end: TcpSeqNumber) -> bool {
        self.ge(start) && self.lt(end)
    }
}

impl ops::Add<usize> for TcpSeqNumber {
    type Output = TcpSeqNumber;
    /// Wrapping addition; lengths above 2^32 wrap, which no window allows.
    #[inline]
    fn add(self, n: usize) -> TcpSeqNumber {
        TcpSeqNumber(self.0.wrapping_add(n as u32))
    }
}

impl ops::Sub<usize> for TcpSeqNumber {
    type Output = TcpSeqNumber;
    /// Wrapping subtraction.
    #[inline]
    fn sub(self, n: usize) -> TcpSeqNumber {
        TcpSeqNumber(self.0.wrapping_sub(n as u32))
    }
}

impl fmt::Debug for TcpSeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for TcpSeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The TCP control bits as in byte 13 of the header: the one flags type the
/// wire format and the TCP engine share.
///
/// The engine keeps ACK out of its segments' flags (an acknowledgement number
/// being present says it); [`TcpRepr::emit_header`] sets the bit from
/// `ack_number`. URG is parsed but never sent: urgent data is not supported
/// (RFC 9293 keeps it only for legacy applications; RFC 6093 advises new ones
/// not to use it).
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct TcpFlags(u8);

impl TcpFlags {
    /// No flag set.
    pub const NONE: TcpFlags = TcpFlags(0);
    /// FIN: the sender has no more data.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// SYN: synchronize sequence numbers (opens a connection).
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// RST: reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// PSH: push the data to the application.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// ACK: the acknowledgement field is significant.
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// URG: the urgent pointer is significant.
    pub const URG: TcpFlags = TcpFlags(0x20);
    /// ECE: ECN echo (RFC 3168).
    pub const ECE: TcpFlags = TcpFlags(0x40);
    /// CWR: congestion window reduced (RFC 3168).
    pub const CWR: TcpFlags = TcpFlags(0x80);

    /// Decodes header byte 13.
    #[inline]
    pub const fn from_byte(b: u8) -> Self {
        TcpFlags(b)
    }
    /// Encodes header byte 13.
    #[inline]
    pub const fn to_byte(self) -> u8 {
        self.0
    }
    /// Whether every flag of `other` is set.
    #[inline]
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }
    /// These flags without those in `other`.
    #[inline]
    pub const fn without(self, other: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 & !other.0)
    }
    /// Whether FIN is set.
    #[inline]
    pub const fn fin(self) -> bool {
        self.contains(TcpFlags::FIN)
    }
    /// Whether SYN is set.
    #[inline]
    pub const fn syn(self) -> bool {
        self.contains(TcpFlags::SYN)
    }
    /// Whether RST is set.
    #[inline]
    pub const fn rst(self) -> bool {
        self.contains(TcpFlags::RST)
    }
    /// Whether PSH is set.
    #[inline]
    pub const fn psh(self) -> bool {
        self.contains(TcpFlags::PSH)
    }
    /// Whether ACK is set.
    #[inline]
    pub const fn ack(self) -> bool {
        self.contains(TcpFlags::ACK)
    }
    /// Whether URG is set.
    #[inline]
    pub const fn urg(self) -> bool {
        self.contains(TcpFlags::URG)
    }
    /// Whether ECE is set.
    #[inline]
    pub const fn ece(self) -> bool {
        self.contains(TcpFlags::ECE)
    }
    /// Whether CWR is set.
    #[inline]
    pub const fn cwr(self) -> bool {
        self.contains(TcpFlags::CWR)
    }
}

impl ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    #[inline]
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl ops::BitOrAssign for TcpFlags {
    #[inline]
    fn bitor_assign(&mut self, rhs: TcpFlags) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (TcpFlags::SYN, "SYN"),
            (TcpFlags::FIN, "FIN"),
            (TcpFlags::RST, "RST"),
            (TcpFlags::PSH, "PSH"),
            (TcpFlags::ACK, "ACK"),
            (TcpFlags::URG, "URG"),
            (TcpFlags::ECE, "ECE"),
            (TcpFlags::CWR, "CWR"),
        ];
        let mut first = true;
        for (flag, name) in names {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

/// A zero-copy view of a TCP segment (the whole IPv4 payload: the checksum covers
/// the buffer, so it must be exactly header + payload).
///
/// After [`new_checked`](Self::new_checked) returns `Ok`, no accessor panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps a buffer without validating it.
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }
    /// Wraps a buffer, checking `20 ≤ data offset × 4 ≤ buffer length`.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        let n = p.buffer.as_ref().len();
        if n < TCP_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if p.header_len() < TCP_HEADER_LEN {
            return Err(Error::Malformed);
        }
        if p.header_len() > n {
            return Err(Error::Truncated);
        }
        Ok(p)
    }
    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
    /// Source port.
    pub fn src_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), 0)
    }
    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), 2)
    }
    /// Sequence number.
    pub fn seq_number(&self) -> TcpSeqNumber {
        TcpSeqNumber(get_u32(self.buffer.as_ref(), 4))
    }
    /// Acknowledgment number (meaningful only with ACK set).
    pub fn ack_number(&self) -> TcpSeqNumber {
        TcpSeqNumber(get_u32(self.buffer.as_ref(), 8))
    }
    /// Header length in bytes (data offset × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[12] >> 4) * 4
    }
    /// All control bits.
    pub fn flags(&self) -> TcpFlags {
        TcpFlags::from_byte(self.buffer.as_ref()[13])
    }
    /// FIN bit.
    pub fn fin(&self) -> bool {
        self.flags().fin()
    }
    /// SYN bit.
    pub fn syn(&self) -> bool {
        self.flags().syn()
    }
    /// RST bit.
    pub fn rst(&self) -> bool {
        self.flags().rst()
    }
    /// PSH bit.
    pub fn psh(&self) -> bool {
        self.flags().psh()
    }
    /// ACK bit.
    pub fn ack(&self) -> bool {
        self.flags().ack()
    }
    /// URG bit.
    pub fn urg(&self) -> bool {
        self.flags().urg()
    }
    /// ECE bit.
    pub fn ece(&self) -> bool {
        self.flags().ece()
    }
    /// CWR bit.
    pub fn cwr(&self) -> bool {
        self.flags().cwr()
    }
    /// Window field (unscaled).
    pub fn window_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), 14)
    }
    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), 16)
    }
    /// Urgent pointer.
    pub fn urgent_at(&self) -> u16 {
        get_u16(self.buffer.as_ref(), 18)
    }
    /// Option bytes (between the fixed header and the data offset).
    pub fn options(&self) -> &[u8] {
        self.buffer.as_ref().get(TCP_HEADER_LEN..self.header_len()).unwrap_or(&[])
    }
    /// Payload (after the data offset).
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(self.header_len()..).unwrap_or(&[])
    }
    /// Whether the checksum over pseudo header and the whole buffer verifies.
    pub fn verify_checksum<A: PseudoHeader>(&self, src: A, dst: A) -> bool {
        checksum::fold(segment_sum(self.buffer.as_ref(), src, dst)) == 0xffff
    }
}

fn segment_sum<A: PseudoHeader>(b: &[u8], src: A, dst: A) -> u32 {
    let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
    checksum::combine(A::pseudo_header(src, dst, PROTO_TCP, len), checksum::sum(b))
}

impl<'a, T: AsRef<[u8]> + ?Sized> TcpPacket<&'a T> {
    /// The payload, borrowed for the buffer's lifetime.
    pub fn into_payload(self) -> &'a [u8] {
        self.buffer.as_ref().get(self.header_len()..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), 0, v);
    }
    /// Sets the destination port.
    pub fn set_dst_port(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), 2, v);
    }
    /// Sets the sequence number.
    pub fn set_seq_number(&mut self, v: TcpSeqNumber) {
        set_u32(self.buffer.as_mut(), 4, v.0);
    }
    /// Sets the acknowledgment number.
    pub fn set_ack_number(&mut self, v: TcpSeqNumber) {
        set_u32(self.buffer.as_mut(), 8, v.0);
    }
    /// Sets the header length in bytes (a multiple of 4, 20..=60); clears the
    /// reserved bits.
    pub fn set_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[12] = ((len / 4) as u8 & 0x0f) << 4;
    }
    /// Sets all control bits.
    pub fn set_flags(&mut self, f: TcpFlags) {
        self.buffer.as_mut()[13] = f.to_byte();
    }
    /// Sets the window field.
    pub fn set_window_len(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), 14, v);
    }
    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), 16, v);
    }
    /// Sets the urgent pointer.
    pub fn set_urgent_at(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), 18, v);
    }
    /// Option bytes, mutably.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        self.buffer.as_mut().get_mut(TCP_HEADER_LEN..hl).unwrap_or(&mut [])
    }
    /// Payload, mutably (copy a payload in here after `TcpRepr::emit_header`).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        self.buffer.as_mut().get_mut(hl..).unwrap_or(&mut [])
    }
    /// Computes and writes the checksum over pseudo header and the whole buffer.
    pub fn fill_checksum<A: PseudoHeader>(&mut self, src: A, dst: A) {
        self.set_checksum(0);
        let c = checksum::finish(segment_sum(self.buffer.as_ref(), src, dst));
        self.set_checksum(c);
    }
}

/// A parsed TCP segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpRepr<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq_number: TcpSeqNumber,
    /// Acknowledgment number; `Some` iff the ACK flag is set.
    pub ack_number: Option<TcpSeqNumber>,
    /// Control bits. On parse `flags.ack() == ack_number.is_some()`; on emit
    /// the ACK bit is ignored and `ack_number` decides.
    pub flags: TcpFlags,
    /// Window field as sent (unscaled).
    pub window_len: u16,
    /// MSS option.
    pub max_seg_size: Option<u16>,
    /// Window-scale option (shift count clamped to 14 on parse, RFC 7323 §2.3).
    pub window_scale: Option<u8>,
    /// SACK-permitted option.
    pub sack_permitted: bool,
    /// SACK blocks, filled from the front.
    pub sack_ranges: [Option<(TcpSeqNumber, TcpSeqNumber)>; 4],
    /// Timestamps option `(tsval, tsecr)`.
    pub timestamp: Option<(u32, u32)>,
    /// Payload.
    pub payload: &'a [u8],
}

/// Largest window-scale shift count (RFC 7323 §2.3).
const MAX_WINDOW_SCALE: u8 = 14;
/// Option space in a header.
const MAX_OPTIONS_LEN: usize = TCP_MAX_HEADER_LEN - TCP_HEADER_LEN;

impl<'a> TcpRepr<'a> {
    /// Parses a checked segment: with `ChecksumMode::Verify` a bad checksum is
    /// `Error::Checksum`; a header length under 20 is `Error::Malformed`.
    /// Options are read as Linux reads them: unknown options and known ones
    /// with a wrong length are skipped, an option length below 2 or past the
    /// end ends the list; a later occurrence of an option replaces an earlier one.
    pub fn parse<T: AsRef<[u8]> + ?Sized, A: PseudoHeader>(
        packet: &TcpPacket<&'a T>,
        src: A,
        dst: A,
        checksum: ChecksumMode,
    ) -> Result<Self> {
        let b: &'a [u8] = packet.buffer.as_ref();
        if b.len() < TCP_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let hl = packet.header_len();
        if hl > b.len() {
            return Err(Error::Truncated);
        }
        if hl < TCP_HEADER_LEN {
            return Err(Error::Malformed);
        }
        if checksum == ChecksumMode::Verify && !packet.verify_checksum(src, dst) {
            return Err(Error::Checksum);
        }
        let flags = packet.flags();
        let mut repr = TcpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            seq_number: packet.seq_number(),
            ack_number: flags.ack().then(|| packet.ack_number()),
            flags,
            window_len: packet.window_len(),
            max_seg_size: None,
            window_scale: None,
            sack_permitted: false,
            sack_ranges: [None; 4],
            timestamp: None,
            payload: b.get(hl..).unwrap_or(&[]),
        };
        let mut opts: &'a [u8] = b.get(TCP_HEADER_LEN..hl).unwrap_or(&[]);
        // Nearly every segment of an established connection carries exactly
        // `NOP NOP TS` (RFC 7323 Appendix A): read it in place, with the
        // result the loop below would give.
        if opts.len() == 12 && opts[..4] == [option::KIND_NOP, option::KIND_NOP, option::KIND_TIMESTAMP, 10] {
            repr.timestamp = Some((get_u32(opts, 4), get_u32(opts, 8)));
            return Ok(repr);
        }
        // As Linux's tcp_parse_options: a known option with the wrong length
        // is skipped, and a length below 2 or past the end stops the parse;
        // the segment itself is still good (RFC 9293 §3.1: a receiver must be
        // prepared for any option; dropping would only make us deaf to a
        // peer whose options are odd).
        while !opts.is_empty() {
            let (rest, opt) = match TcpOption::parse(opts) {
                Ok(parsed) => parsed,
                Err(_) => match opts.get(1).map(|&l| usize::from(l)) {
                    Some(len) if len >= 2 && len <= opts.len() => (&opts[len..], TcpOption::NoOperation),
                    _ => break,
                },
            };
            match opt {
                TcpOption::EndOfList => break,
                TcpOption::NoOperation | TcpOption::Unknown { .. } => {}
                TcpOption::MaxSegmentSize(mss) => repr.max_seg_size = Some(mss),
                TcpOption::WindowScale(s) => repr.window_scale = Some(s.min(MAX_WINDOW_SCALE)),
                TcpOption::SackPermitted => repr.sack_permitted = true,
                TcpOption::SackRange(r) => repr.sack_ranges = r,
                TcpOption::Timestamp { tsval, tsecr } => repr.timestamp = Some((tsval, tsecr)),
            }
            opts = rest;
        }
        Ok(repr)
    }

    /// Bytes of options on emit and how many SACK blocks fit.
    ///
    /// Layout (every piece 4-byte aligned, as common stacks send it):
    /// `MSS`, `NOP WS`, `SACKOK TS` | `NOP NOP SACKOK` | `NOP NOP TS`,
    /// `NOP NOP SACK`. SACK blocks that do not fit in 40 bytes are dropped from
    /// the end.
    fn options_layout(&self) -> (usize, usize) {
        let mut len = 0;
        if self.max_seg_size.is_some() {
            len += 4;
        }
        if self.window_scale.is_some() {
            len += 4;
        }
        len += match (self.sack_permitted, self.timestamp.is_some()) {
            (_, true) => 12,
            (true, false) => 4,
            (false, false) => 0,
        };
        let mut blocks = self.sack_ranges.iter().flatten().count();
        while blocks > 0 && len + 4 + 8 * blocks > MAX_OPTIONS_LEN {
            blocks -= 1;
        }
        if blocks > 0 {
            len += 4 + 8 * blocks;
        }
        (len, blocks)
    }

    /// Header length on emit: 20 + options (a multiple of 4, at most 60).
    pub fn header_len(&self) -> usize {
        TCP_HEADER_LEN + self.options_layout().0
    }

    /// Header plus payload length.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload.len()
    }

    /// Sequence space the segment occupies: payload plus one each for SYN and FIN.
    pub fn segment_len(&self) -> usize {
        self.payload.len() + usize::from(self.flags.syn()) + usize::from(self.flags.fin())
    }

    /// Writes the header (with options, checksum zero) for a payload of
    /// `payload_len` bytes that the caller then copies into
    /// [`TcpPacket::payload_mut`] before calling [`TcpPacket::fill_checksum`].
    /// `self.payload` is ignored. The packet's buffer must be exactly
    /// `header_len() + payload_len` long (debug builds assert); panics if shorter
    /// than `header_len()`.
    pub fn emit_header<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut TcpPacket<T>, payload_len: usize) {
        let (opts_len, blocks) = self.options_layout();
        let header_len = TCP_HEADER_LEN + opts_len;
        debug_assert_eq!(packet.buffer.as_ref().len(), header_len + payload_len);
        // The fixed header is built in a local array and copied once: the
        // field setters would each check the buffer's length again.
        let flags = match self.ack_number {
            Some(_) => self.flags | TcpFlags::ACK,
            None => self.flags.without(TcpFlags::ACK),
        };
        let mut h = [0u8; TCP_HEADER_LEN];
        set_u16(&mut h, 0, self.src_port);
        set_u16(&mut h, 2, self.dst_port);
        set_u32(&mut h, 4, self.seq_number.0);
        set_u32(&mut h, 8, self.ack_number.unwrap_or_default().0);
        h[12] = ((header_len / 4) as u8 & 0x0f) << 4;
        h[13] = flags.to_byte();
        set_u16(&mut h, 14, self.window_len);
        // Checksum (16..18) and urgent pointer (18..20) stay zero.
        let buf = packet.buffer.as_mut();
        buf[..TCP_HEADER_LEN].copy_from_slice(&h);

        let b = &mut buf[TCP_HEADER_LEN..header_len];
        let mut at = 0;
        let put = |opt: TcpOption<'_>, b: &mut [u8], at: &mut usize| *at += opt.emit(&mut b[*at..]);
        const NOP: TcpOption<'static> = TcpOption::NoOperation;
        if let Some(mss) = self.max_seg_size {
            put(TcpOption::MaxSegmentSize(mss), b, &mut at);
        }
        if let Some(ws) = self.window_scale {
            put(NOP, b, &mut at);
            put(TcpOption::WindowScale(ws), b, &mut at);
        }
        match (self.sack_permitted, self.timestamp) {
            (sack_ok, Some((tsval, tsecr))) => {
                // `SACKOK TS` or `NOP NOP TS`, the 12 bytes written at once
                // (every segment once timestamps are negotiated).
                let o = &mut b[at..at + 12];
                o[..2].copy_from_slice(&if sack_ok { [option::KIND_SACK_PERMITTED, 2] } else { [option::KIND_NOP; 2] });
                o[2..4].copy_from_slice(&[option::KIND_TIMESTAMP, 10]);
                set_u32(o, 4, tsval);
                set_u32(o, 8, tsecr);
                at += 12;
            }
            (true, None) => {
                put(NOP, b, &mut at);
                put(NOP, b, &mut at);
                put(TcpOption::SackPermitted, b, &mut at);
            }
            (false, None) => {}
        }
        if blocks > 0 {
            let mut ranges = [None; 4];
            for (slot, r) in ranges.iter_mut().zip(self.sack_ranges.iter().flatten()).take(blocks) {
                *slot = Some(*r);
            }
            put(NOP, b, &mut at);
            put(NOP, b, &mut at);
            put(TcpOption::SackRange(ranges), b, &mut at);
        }
    }

    /// Writes header and payload; with `ChecksumMode::Verify` computes the
    /// checksum, with `Ignore` leaves it zero. The buffer must be exactly
    /// `buffer_len()` long (debug builds assert; panics if shorter).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>, A: PseudoHeader>(
        &self,
        packet: &mut TcpPacket<T>,
        src: A,
        dst: A,
        checksum: ChecksumMode,
    ) {
        self.emit_header(packet, self.payload.len());
        let hl = self.header_len();
        packet.buffer.as_mut()[hl..hl + self.payload.len()].copy_from_slice(self.payload);
        if checksum == ChecksumMode::Verify {
            packet.fill_checksum(src, dst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);

    fn syn() -> TcpRepr<'static> {
        TcpRepr {
            src_port: 1234,
            dst_port: 80,
            seq_number: TcpSeqNumber(0xffff_fff0),
            ack_number: None,
            flags: TcpFlags::SYN,
            window_len: 65535,
            max_seg_size: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            sack_ranges: [None; 4],
            timestamp: Some((1, 0)),
            payload: &[],
        }
    }

    #[test]
    fn seq_arithmetic() {
        use TcpSeqNumber as S;
        let a = S(u32::MAX - 1);
        let b = a + 4;
        assert_eq!(b, S(2));
        assert!(a.lt(b) && b.gt(a) && a.le(a) && a.ge(a));
        assert_eq!(b.since(a), 4);
        assert_eq!(a.since(b), 0);
        assert_eq!(b - 4, a);
        assert_eq!(a.max(b), b);
        assert_eq!(a.min(b), a);
        assert!(S(5).in_window(S(u32::MAX - 1), S(6)));
        assert!(!S(6).in_window(S(u32::MAX - 1), S(6)));
        // Exactly 2^31 apart: each is "less" than the other, and nothing panics.
        let (x, y) = (S(0), S(1 << 31));
        assert!(x.lt(y) && y.lt(x));
        let _ = (x.since(y), y.since(x), x.max(y), x.min(y));
    }

    #[test]
    fn syn_round_trip() {
        let repr = syn();
        assert_eq!(repr.header_len(), 40);
        let mut b = [0u8; 40];
        repr.emit(&mut TcpPacket::new_unchecked(&mut b[..]), SRC, DST, ChecksumMode::Verify);
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum(SRC, DST));
        assert_eq!(TcpRepr::parse(&p, SRC, DST, ChecksumMode::Verify).unwrap(), repr);
    }

    #[test]
    fn too_many_sack_blocks_are_dropped() {
        let mut repr = syn();
        let block = |l: u32| Some((TcpSeqNumber(l), TcpSeqNumber(l + 1)));
        repr.sack_ranges = [block(1), block(3), block(5), block(7)];
        // 4 + 4 + 12 = 20 bytes before SACK; 20 + 4 + 8n ≤ 40 → n = 2.
        assert_eq!(repr.header_len(), 60);
        let mut b = [0u8; 60];
        repr.emit(&mut TcpPacket::new_unchecked(&mut b[..]), SRC, DST, ChecksumMode::Verify);
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        let parsed = TcpRepr::parse(&p, SRC, DST, ChecksumMode::Verify).unwrap();
        assert_eq!(parsed.sack_ranges, [block(1), block(3), None, None]);
    }

    #[test]
    fn window_scale_is_clamped() {
        let mut repr = syn();
        repr.window_scale = Some(20);
        let mut b = [0u8; 40];
        repr.emit(&mut TcpPacket::new_unchecked(&mut b[..]), SRC, DST, ChecksumMode::Verify);
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        let parsed = TcpRepr::parse(&p, SRC, DST, ChecksumMode::Verify).unwrap();
        assert_eq!(parsed.window_scale, Some(14));
    }

    #[test]
    fn emit_header_then_payload_in_place() {
        let mut repr = syn();
        repr.flags = TcpFlags::PSH;
        repr.ack_number = Some(TcpSeqNumber(9));
        repr.max_seg_size = None;
        repr.window_scale = None;
        let data = b"hello";
        let mut b = [0u8; 37];
        let mut p = TcpPacket::new_unchecked(&mut b[..]);
        repr.emit_header(&mut p, data.len());
        p.payload_mut().copy_from_slice(data);
        p.fill_checksum(SRC, DST);
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        let parsed = TcpRepr::parse(&p, SRC, DST, ChecksumMode::Verify).unwrap();
        assert_eq!(parsed.payload, data);
        assert!(parsed.flags.ack() && parsed.flags.psh());
        assert_eq!(parsed.ack_number, Some(TcpSeqNumber(9)));
    }

    #[test]
    fn bad_option_list_ends_parsing_like_linux() {
        let parse = |opts: &[u8]| {
            let mut b = vec![0u8; 20 + opts.len()];
            b[12] = ((5 + opts.len() / 4) as u8) << 4;
            b[20..].copy_from_slice(opts);
            let p = TcpPacket::new_checked(&b[..]).unwrap();
            let r = TcpRepr::parse(&p, SRC, DST, ChecksumMode::Ignore).unwrap();
            (r.max_seg_size, r.window_scale, r.sack_permitted)
        };
        // A silly length (0 or 1) or one past the end stops the parse, keeping what came before.
        assert_eq!(parse(&[2, 0, 0, 0]), (None, None, false));
        assert_eq!(parse(&[4, 2, 2, 1]), (None, None, true));
        assert_eq!(parse(&[4, 2, 3, 9, 1, 1, 1, 1]), (None, None, true));
        // A known option with the wrong length is skipped; parsing goes on.
        assert_eq!(parse(&[2, 3, 5, 3, 3, 7, 1, 1]), (None, Some(7), false));
        assert_eq!(parse(&[3, 4, 5, 0, 2, 4, 5, 0xb4]), (Some(1460), None, false));
        let mut b = [0u8; 24];
        b[12] = 4 << 4;
        assert_eq!(TcpPacket::new_checked(&b[..]).unwrap_err(), Error::Malformed);
    }
}
