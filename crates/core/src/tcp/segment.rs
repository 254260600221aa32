//! The engine's view of a TCP segment: the wire crate's sequence-number and
//! flags types, the engine's own options and payload length.
//!
//! The stack parses the header with the wire crate into a [`Segment`] and
//! passes the payload alongside as `&[u8]`; on transmit it writes a
//! [`Segment`] back out and copies the payload once, straight from the send
//! buffer into the device frame (see `Connection::read_payload`). Ports and
//! checksums are the stack's business; the [`FourTuple`] names the connection.

use super::seq::SeqNumber;
use std::net::IpAddr;

/// Local and remote endpoint of one connection, of either IP version (both
/// addresses are of the same one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FourTuple {
    /// This stack's address.
    pub local_addr: IpAddr,
    /// This stack's port.
    pub local_port: u16,
    /// The peer's address.
    pub remote_addr: IpAddr,
    /// The peer's port.
    pub remote_port: u16,
}

impl FourTuple {
    /// The MSS to advertise on this connection: `mss` (sized for IPv4's
    /// 20-byte header) less the 20 more an IPv6 header takes (RFC 8200 §5:
    /// MTU minus 60), so a peer's segments fit the same MTU.
    pub fn advertised_mss(&self, mss: u16) -> u16 {
        match self.local_addr {
            IpAddr::V4(_) => mss,
            IpAddr::V6(_) => mss.saturating_sub(20),
        }
    }
}

/// Control bits, the wire crate's [`TcpFlags`](ustack_wire::TcpFlags): one
/// type for header and engine. A [`Segment`] never carries ACK (its `ack`
/// field being `Some` says it) nor URG (urgent data is not supported: RFC
/// 9293 keeps it only for legacy applications; RFC 6093 advises new ones not
/// to use it).
pub use ustack_wire::TcpFlags as Flags;

/// One SACK block: `[left, right)` in sequence space (RFC 2018 §3: "Left Edge
/// of Block ... the first sequence number of this block; Right Edge ... the
/// sequence number immediately following the last sequence number").
pub type SackBlock = (SeqNumber, SeqNumber);

/// The TCP options the engine understands. Unknown options are the parser's
/// to skip; they never reach the engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Maximum segment size (RFC 9293 §3.7.1); only meaningful on SYNs.
    pub mss: Option<u16>,
    /// Window scale shift (RFC 7323 §2); only meaningful on SYNs.
    pub window_scale: Option<u8>,
    /// SACK-permitted (RFC 2018 §2); only meaningful on SYNs.
    pub sack_permitted: bool,
    /// Up to 4 SACK blocks on receive; we send at most 3 alongside a
    /// timestamp (RFC 2018 §3), 4 without.
    pub sack_blocks: [Option<SackBlock>; 4],
    /// `(TSval, TSecr)` (RFC 7323 §3).
    pub timestamp: Option<(u32, u32)>,
}

impl Options {
    /// The SACK blocks present, in order.
    pub fn sack_blocks(&self) -> impl Iterator<Item = SackBlock> + '_ {
        self.sack_blocks.iter().flatten().copied()
    }

    /// Bytes these options take in the header, padded to a multiple of 4 with
    /// the usual NOP layout (what Linux emits: `NOP NOP TS`, `NOP WS`,
    /// `NOP NOP SACK`, `MSS`, and `SACKOK` folded in front of a timestamp).
    pub fn wire_len(&self) -> usize {
        let mut len = 0;
        if self.mss.is_some() {
            len += 4;
        }
        if self.window_scale.is_some() {
            len += 4;
        }
        // SACK-permitted (2 bytes) shares the timestamp's 2 bytes of padding.
        len += match (self.timestamp.is_some(), self.sack_permitted) {
            (true, _) => 12,
            (false, true) => 4,
            (false, false) => 0,
        };
        let blocks = self.sack_blocks().count();
        if blocks > 0 {
            len += 4 + 8 * blocks;
        }
        len
    }
}

/// A TCP segment as the engine sees it. The payload travels beside it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// The sequence number of the first octet (of the SYN, when set).
    pub seq: SeqNumber,
    /// The acknowledgement number; `Some` exactly when the ACK bit is set.
    pub ack: Option<SeqNumber>,
    /// The flags other than ACK (see `ack`).
    pub flags: Flags,
    /// The window field as on the wire, before scaling.
    pub window: u16,
    /// The options the engine reads and writes (MSS, window scale, SACK, timestamps).
    pub options: Options,
    /// Length of the payload that accompanies this segment.
    pub payload_len: usize,
}

impl Segment {
    /// Whether SYN is set.
    pub fn syn(&self) -> bool {
        self.flags.syn()
    }
    /// Whether FIN is set.
    pub fn fin(&self) -> bool {
        self.flags.fin()
    }
    /// Whether RST is set.
    pub fn rst(&self) -> bool {
        self.flags.rst()
    }
    /// SEG.LEN: "the number of octets occupied by the data in the segment
    /// (counting SYN and FIN)" (RFC 9293 §3.3.1).
    pub fn len(&self) -> usize {
        self.payload_len + usize::from(self.syn()) + usize::from(self.fin())
    }
    /// True when the segment occupies no sequence space.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The sequence number just past this segment.
    pub fn end(&self) -> SeqNumber {
        self.seq + self.len()
    }
}

/// The reset to send in reply to `seg` when no connection exists for it
/// (RFC 9293 §3.10.7.1, state CLOSED), or `None` when `seg` is itself a reset.
///
/// "An incoming segment containing a RST is discarded. An incoming segment not
/// containing a RST causes a RST to be sent in response. ... If the ACK bit is
/// off, sequence number zero is used, `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`.
/// If the ACK bit is on, `<SEQ=SEG.ACK><CTL=RST>`."
///
/// The same reply serves a LISTEN socket that receives an ACK (§3.10.7.2) and
/// a SYN-SENT connection whose ACK is unacceptable (§3.10.7.3).
pub fn reset_for(seg: &Segment) -> Option<Segment> {
    if seg.rst() {
        return None;
    }
    Some(match seg.ack {
        Some(ack) => Segment { seq: ack, flags: Flags::RST, ..Segment::default() },
        None => Segment { seq: SeqNumber(0), ack: Some(seg.end()), flags: Flags::RST, ..Segment::default() },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_replies() {
        let syn = Segment { seq: SeqNumber(100), flags: Flags::SYN, payload_len: 3, ..Default::default() };
        let rst = reset_for(&syn).unwrap();
        assert_eq!((rst.seq, rst.ack, rst.flags), (SeqNumber(0), Some(SeqNumber(104)), Flags::RST));
        let ack = Segment { seq: SeqNumber(7), ack: Some(SeqNumber(9)), ..Default::default() };
        let rst = reset_for(&ack).unwrap();
        assert_eq!((rst.seq, rst.ack, rst.flags), (SeqNumber(9), None, Flags::RST));
        assert!(reset_for(&Segment { flags: Flags::RST, ..Default::default() }).is_none());
    }

    #[test]
    fn option_lengths() {
        let syn = Options {
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            timestamp: Some((1, 0)),
            ..Default::default()
        };
        assert_eq!(syn.wire_len(), 20);
        let mut ack = Options { timestamp: Some((1, 2)), ..Default::default() };
        ack.sack_blocks[0] = Some((SeqNumber(1), SeqNumber(2)));
        ack.sack_blocks[1] = Some((SeqNumber(3), SeqNumber(4)));
        ack.sack_blocks[2] = Some((SeqNumber(5), SeqNumber(6)));
        assert_eq!(ack.wire_len(), 40);
        assert_eq!(format!("{:?}", Flags::SYN | Flags::FIN), "SYN|FIN");
    }
}
