//! ICMPv6 messages (RFC 4443): echo, destination unreachable, packet too big,
//! time exceeded, parameter problem; neighbour discovery ([`NdiscRepr`], RFC
//! 4861) and multicast listener discovery ([`MldRepr`], RFC 3810) ride on it.
//! The checksum covers the IPv6 pseudo header (RFC 4443 §2.3).
//!
//! After [`Icmpv6Packet::new_checked`] returns `Ok`, no accessor panics.

use std::net::Ipv6Addr;

use crate::bytes::{get_u32, set_u32};
use crate::checksum;
use crate::icmp::{emit_echo, icmp_packet_view, ICMP_HEADER_LEN};
use crate::{ChecksumMode, Error, Ipv6Packet, Ipv6Repr, MldRepr, NdiscRepr, Result, IPV6_HEADER_LEN};

/// Length of the ICMPv6 header (type, code, checksum, 4 bytes of message body).
pub const ICMPV6_HEADER_LEN: usize = ICMP_HEADER_LEN;

const PROTO_ICMPV6: u8 = 58;

pub(crate) const DST_UNREACHABLE: u8 = 1;
pub(crate) const PACKET_TOO_BIG: u8 = 2;
pub(crate) const TIME_EXCEEDED: u8 = 3;
pub(crate) const PARAM_PROBLEM: u8 = 4;
pub(crate) const ECHO_REQUEST: u8 = 128;
pub(crate) const ECHO_REPLY: u8 = 129;
pub(crate) const MLD_QUERY: u8 = 130;
pub(crate) const ROUTER_SOLICIT: u8 = 133;
pub(crate) const ROUTER_ADVERT: u8 = 134;
pub(crate) const NEIGHBOR_SOLICIT: u8 = 135;
pub(crate) const NEIGHBOR_ADVERT: u8 = 136;
pub(crate) const REDIRECT: u8 = 137;
pub(crate) const MLDV2_REPORT: u8 = 143;

icmp_packet_view! {
    /// A zero-copy view of an ICMPv6 message (the whole upper-layer payload).
    Icmpv6Packet
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// MTU of a Packet Too Big message (bytes 4..8).
    pub fn mtu(&self) -> u32 {
        get_u32(self.buffer.as_ref(), 4)
    }
    /// Pointer of a Parameter Problem message (bytes 4..8).
    pub fn pointer(&self) -> u32 {
        get_u32(self.buffer.as_ref(), 4)
    }
    /// Whether the checksum over the pseudo header and the whole message verifies.
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        checksum::fold(message_sum(self.buffer.as_ref(), src, dst)) == 0xffff
    }
    /// Whether this is an error message (types 0–127, RFC 4443 §2.1): one is
    /// never answered with another (§2.4 (e)).
    pub fn is_error(&self) -> bool {
        self.msg_type() < 128
    }
}

fn message_sum(b: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> u32 {
    let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
    checksum::combine(checksum::pseudo_header_v6(src, dst, PROTO_ICMPV6, len), checksum::sum(b))
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    /// Computes and writes the checksum over the pseudo header and the whole buffer.
    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let c = checksum::finish(message_sum(self.buffer.as_ref(), src, dst));
        self.set_checksum(c);
    }
}

/// Reason of a destination-unreachable message (type 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Icmpv6DstUnreachable {
    /// Code 0: no route to destination.
    NoRoute,
    /// Code 1: communication administratively prohibited.
    AdminProhibited,
    /// Code 2: beyond the scope of the source address.
    BeyondScope,
    /// Code 3: address unreachable.
    AddrUnreachable,
    /// Code 4: port unreachable.
    PortUnreachable,
    /// Code 5: source address failed ingress/egress policy.
    FailedPolicy,
    /// Code 6: reject route to destination.
    RejectRoute,
    /// Any other code.
    Other(u8),
}

impl From<u8> for Icmpv6DstUnreachable {
    fn from(code: u8) -> Self {
        match code {
            0 => Self::NoRoute,
            1 => Self::AdminProhibited,
            2 => Self::BeyondScope,
            3 => Self::AddrUnreachable,
            4 => Self::PortUnreachable,
            5 => Self::FailedPolicy,
            6 => Self::RejectRoute,
            c => Self::Other(c),
        }
    }
}

impl From<Icmpv6DstUnreachable> for u8 {
    fn from(r: Icmpv6DstUnreachable) -> u8 {
        match r {
            Icmpv6DstUnreachable::NoRoute => 0,
            Icmpv6DstUnreachable::AdminProhibited => 1,
            Icmpv6DstUnreachable::BeyondScope => 2,
            Icmpv6DstUnreachable::AddrUnreachable => 3,
            Icmpv6DstUnreachable::PortUnreachable => 4,
            Icmpv6DstUnreachable::FailedPolicy => 5,
            Icmpv6DstUnreachable::RejectRoute => 6,
            Icmpv6DstUnreachable::Other(c) => c,
        }
    }
}

/// Reason of a time-exceeded message (type 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Icmpv6TimeExceeded {
    /// Code 0: hop limit exceeded in transit.
    HopLimitExceeded,
    /// Code 1: fragment reassembly time exceeded.
    FragReassembly,
    /// Any other code.
    Other(u8),
}

impl From<u8> for Icmpv6TimeExceeded {
    fn from(code: u8) -> Self {
        match code {
            0 => Self::HopLimitExceeded,
            1 => Self::FragReassembly,
            c => Self::Other(c),
        }
    }
}

impl From<Icmpv6TimeExceeded> for u8 {
    fn from(r: Icmpv6TimeExceeded) -> u8 {
        match r {
            Icmpv6TimeExceeded::HopLimitExceeded => 0,
            Icmpv6TimeExceeded::FragReassembly => 1,
            Icmpv6TimeExceeded::Other(c) => c,
        }
    }
}

/// Reason of a parameter-problem message (type 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Icmpv6ParamProblem {
    /// Code 0: erroneous header field.
    ErroneousHeaderField,
    /// Code 1: unrecognised Next Header type.
    UnrecognizedNextHeader,
    /// Code 2: unrecognised IPv6 option.
    UnrecognizedOption,
    /// Code 3: the first fragment has an incomplete header chain (RFC 7112).
    IncompleteHeaderChain,
    /// Any other code.
    Other(u8),
}

impl From<u8> for Icmpv6ParamProblem {
    fn from(code: u8) -> Self {
        match code {
            0 => Self::ErroneousHeaderField,
            1 => Self::UnrecognizedNextHeader,
            2 => Self::UnrecognizedOption,
            3 => Self::IncompleteHeaderChain,
            c => Self::Other(c),
        }
    }
}

impl From<Icmpv6ParamProblem> for u8 {
    fn from(r: Icmpv6ParamProblem) -> u8 {
        match r {
            Icmpv6ParamProblem::ErroneousHeaderField => 0,
            Icmpv6ParamProblem::UnrecognizedNextHeader => 1,
            Icmpv6ParamProblem::UnrecognizedOption => 2,
            Icmpv6ParamProblem::IncompleteHeaderChain => 3,
            Icmpv6ParamProblem::Other(c) => c,
        }
    }
}

/// A parsed ICMPv6 message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icmpv6Repr<'a> {
    /// Echo request (type 128).
    EchoRequest {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Echo data.
        data: &'a [u8],
    },
    /// Echo reply (type 129).
    EchoReply {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Echo data.
        data: &'a [u8],
    },
    /// Destination unreachable (type 1).
    DstUnreachable {
        /// The code.
        reason: Icmpv6DstUnreachable,
        /// Header of the offending packet.
        header: Ipv6Repr,
        /// What follows that header in the quote (extension headers included):
        /// as much as fits in the minimum MTU, RFC 4443 §3.1.
        data: &'a [u8],
    },
    /// Packet too big (type 2): feeds path MTU discovery (RFC 8201).
    PacketTooBig {
        /// The next-hop MTU.
        mtu: u32,
        /// Header of the offending packet.
        header: Ipv6Repr,
        /// What follows that header in the quote.
        data: &'a [u8],
    },
    /// Time exceeded (type 3).
    TimeExceeded {
        /// The code.
        reason: Icmpv6TimeExceeded,
        /// Header of the offending packet.
        header: Ipv6Repr,
        /// What follows that header in the quote.
        data: &'a [u8],
    },
    /// Parameter problem (type 4).
    ParamProblem {
        /// The code.
        reason: Icmpv6ParamProblem,
        /// Offset of the offending byte in the offending packet.
        pointer: u32,
        /// Header of the offending packet.
        header: Ipv6Repr,
        /// What follows that header in the quote.
        data: &'a [u8],
    },
    /// A neighbour discovery message (types 133–137).
    Ndisc(NdiscRepr<'a>),
    /// A multicast listener query or MLDv2 report (types 130, 143).
    Mld(MldRepr<'a>),
    /// Any other message; only type and code are kept (emitted with a zero
    /// message body and no data).
    Other {
        /// Type.
        msg_type: u8,
        /// Code.
        code: u8,
    },
}

/// Parses the quote of an error message: a valid IPv6 header, possibly
/// followed by less than its payload length says.
fn parse_quoted(data: &[u8]) -> Result<(Ipv6Repr, &[u8])> {
    let inner = Ipv6Packet::new_checked_header(data)?;
    let header = Ipv6Repr::parse(&inner)?;
    Ok((header, data.get(IPV6_HEADER_LEN..).unwrap_or(&[])))
}

impl<'a> Icmpv6Repr<'a> {
    /// Parses a checked message sent from `src` to `dst`; with
    /// `ChecksumMode::Verify` a bad checksum is `Error::Checksum`. Error
    /// messages must quote a valid IPv6 header; neighbour discovery and MLD
    /// messages are validated as [`NdiscRepr::parse`] and [`MldRepr::parse`] say.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &Icmpv6Packet<&'a T>,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        checksum: ChecksumMode,
    ) -> Result<Self> {
        let b: &'a [u8] = packet.buffer.as_ref();
        if b.len() < ICMPV6_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if checksum == ChecksumMode::Verify && !packet.verify_checksum(src, dst) {
            return Err(Error::Checksum);
        }
        let data: &'a [u8] = b.get(ICMPV6_HEADER_LEN..).unwrap_or(&[]);
        let (t, code) = (packet.msg_type(), packet.msg_code());
        Ok(match t {
            ECHO_REQUEST if code == 0 => {
                Icmpv6Repr::EchoRequest { ident: packet.echo_ident(), seq_no: packet.echo_seq_no(), data }
            }
            ECHO_REPLY if code == 0 => {
                Icmpv6Repr::EchoReply { ident: packet.echo_ident(), seq_no: packet.echo_seq_no(), data }
            }
            DST_UNREACHABLE => {
                let (header, data) = parse_quoted(data)?;
                Icmpv6Repr::DstUnreachable { reason: code.into(), header, data }
            }
            // "Code: Set to 0 by the originator and ignored by the receiver"
            // (RFC 4443 §3.2): path MTU discovery must not miss a PTB.
            PACKET_TOO_BIG => {
                let (header, data) = parse_quoted(data)?;
                Icmpv6Repr::PacketTooBig { mtu: packet.mtu(), header, data }
            }
            TIME_EXCEEDED => {
                let (header, data) = parse_quoted(data)?;
                Icmpv6Repr::TimeExceeded { reason: code.into(), header, data }
            }
            PARAM_PROBLEM => {
                let (header, data) = parse_quoted(data)?;
                Icmpv6Repr::ParamProblem { reason: code.into(), pointer: packet.pointer(), header, data }
            }
            ROUTER_SOLICIT..=REDIRECT => Icmpv6Repr::Ndisc(NdiscRepr::parse(b)?),
            MLD_QUERY | MLDV2_REPORT => Icmpv6Repr::Mld(MldRepr::parse(b)?),
            _ => Icmpv6Repr::Other { msg_type: t, code },
        })
    }

    /// Length on the wire.
    pub fn buffer_len(&self) -> usize {
        match self {
            Icmpv6Repr::EchoRequest { data, .. } | Icmpv6Repr::EchoReply { data, .. } => ICMPV6_HEADER_LEN + data.len(),
            Icmpv6Repr::DstUnreachable { data, .. }
            | Icmpv6Repr::PacketTooBig { data, .. }
            | Icmpv6Repr::TimeExceeded { data, .. }
            | Icmpv6Repr::ParamProblem { data, .. } => ICMPV6_HEADER_LEN + IPV6_HEADER_LEN + data.len(),
            Icmpv6Repr::Ndisc(n) => n.buffer_len(),
            Icmpv6Repr::Mld(m) => m.buffer_len(),
            Icmpv6Repr::Other { .. } => ICMPV6_HEADER_LEN,
        }
    }

    /// Writes the message. With `ChecksumMode::Verify` the checksum is
    /// computed over the pseudo header (`src`, `dst`) and the whole buffer
    /// (which should be exactly `buffer_len()` long); with `Ignore` it is left
    /// zero. Panics if the buffer is shorter than `buffer_len()`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Icmpv6Packet<T>,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        checksum: ChecksumMode,
    ) {
        let b = packet.buffer.as_mut();
        b[2..ICMPV6_HEADER_LEN].fill(0);
        match *self {
            Icmpv6Repr::EchoRequest { ident, seq_no, data } => emit_echo(b, ECHO_REQUEST, ident, seq_no, data),
            Icmpv6Repr::EchoReply { ident, seq_no, data } => emit_echo(b, ECHO_REPLY, ident, seq_no, data),
            Icmpv6Repr::DstUnreachable { reason, header, data } => {
                b[0] = DST_UNREACHABLE;
                b[1] = reason.into();
                emit_quoted(b, &header, data);
            }
            Icmpv6Repr::PacketTooBig { mtu, header, data } => {
                b[0] = PACKET_TOO_BIG;
                b[1] = 0;
                set_u32(b, 4, mtu);
                emit_quoted(b, &header, data);
            }
            Icmpv6Repr::TimeExceeded { reason, header, data } => {
                b[0] = TIME_EXCEEDED;
                b[1] = reason.into();
                emit_quoted(b, &header, data);
            }
            Icmpv6Repr::ParamProblem { reason, pointer, header, data } => {
                b[0] = PARAM_PROBLEM;
                b[1] = reason.into();
                set_u32(b, 4, pointer);
                emit_quoted(b, &header, data);
            }
            Icmpv6Repr::Ndisc(n) => n.emit(b),
            Icmpv6Repr::Mld(m) => m.emit(b),
            Icmpv6Repr::Other { msg_type, code } => {
                b[0] = msg_type;
                b[1] = code;
            }
        }
        if checksum == ChecksumMode::Verify {
            packet.fill_checksum(src, dst);
        }
    }
}

fn emit_quoted(b: &mut [u8], header: &Ipv6Repr, data: &[u8]) {
    let start = ICMPV6_HEADER_LEN;
    let mid = start + IPV6_HEADER_LEN;
    header.emit(&mut Ipv6Packet::new_unchecked(&mut b[start..mid]));
    b[mid..mid + data.len()].copy_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IpProtocol;

    const SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const DST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

    #[test]
    fn packet_too_big_round_trip_and_checksum_covers_the_pseudo_header() {
        let header = Ipv6Repr {
            src_addr: DST,
            dst_addr: SRC,
            next_header: IpProtocol::Tcp,
            payload_len: 1460,
            hop_limit: 63,
            traffic_class: 0,
            flow_label: 7,
        };
        let repr = Icmpv6Repr::PacketTooBig { mtu: 1280, header, data: &[1, 2, 3, 4] };
        let mut b = vec![0u8; repr.buffer_len()];
        repr.emit(&mut Icmpv6Packet::new_unchecked(&mut b[..]), SRC, DST, ChecksumMode::Verify);
        let p = Icmpv6Packet::new_checked(&b[..]).unwrap();
        assert!(p.is_error());
        assert_eq!(Icmpv6Repr::parse(&p, SRC, DST, ChecksumMode::Verify).unwrap(), repr);
        // Another destination: the pseudo header differs, the checksum fails.
        assert_eq!(Icmpv6Repr::parse(&p, SRC, SRC, ChecksumMode::Verify).unwrap_err(), Error::Checksum);
        // A receiver ignores the code of a Packet Too Big.
        b[1] = 9;
        Icmpv6Packet::new_unchecked(&mut b[..]).fill_checksum(SRC, DST);
        let p = Icmpv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Icmpv6Repr::parse(&p, SRC, DST, ChecksumMode::Verify).unwrap(), repr);
    }

    #[test]
    fn error_with_garbage_quote_is_malformed() {
        let mut b = [0u8; 48];
        b[0] = DST_UNREACHABLE;
        Icmpv6Packet::new_unchecked(&mut b[..]).fill_checksum(SRC, DST);
        let p = Icmpv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Icmpv6Repr::parse(&p, SRC, DST, ChecksumMode::Verify).unwrap_err(), Error::Malformed);
        let p = Icmpv6Packet::new_checked(&b[..20]).unwrap();
        assert_eq!(Icmpv6Repr::parse(&p, SRC, DST, ChecksumMode::Ignore).unwrap_err(), Error::Truncated);
    }
}
