//! ICMPv4 messages (RFC 792): echo, destination unreachable, time exceeded.
//!
//! After [`Icmpv4Packet::new_checked`] returns `Ok`, no accessor panics.

use crate::bytes::{get_u16, set_u16};
use crate::checksum;
use crate::icmp::{emit_echo, icmp_packet_view, ICMP_HEADER_LEN};
use crate::{ChecksumMode, Error, Ipv4Packet, Ipv4Repr, Result, IPV4_HEADER_LEN};

/// Length of the ICMPv4 header (type, code, checksum, 4 bytes rest-of-header).
pub const ICMPV4_HEADER_LEN: usize = ICMP_HEADER_LEN;
/// How many bytes of the offending datagram's payload an error should quote
/// (RFC 792: "the first 64 bits").
pub const ICMPV4_ERROR_DATA_LEN: usize = 8;

const ECHO_REPLY: u8 = 0;
const DST_UNREACHABLE: u8 = 3;
const SOURCE_QUENCH: u8 = 4;
const REDIRECT: u8 = 5;
const ECHO_REQUEST: u8 = 8;
const TIME_EXCEEDED: u8 = 11;
const PARAM_PROBLEM: u8 = 12;

icmp_packet_view! {
    /// A zero-copy view of an ICMPv4 message (the whole IPv4 payload).
    Icmpv4Packet
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Next-hop MTU of a "fragmentation needed" message (bytes 6..8, RFC 1191).
    pub fn next_hop_mtu(&self) -> u16 {
        get_u16(self.buffer.as_ref(), 6)
    }
    /// Whether the checksum over the whole message verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.buffer.as_ref())) == 0xffff
    }
    /// Whether this is an error message (unreachable, source quench, redirect,
    /// time exceeded, parameter problem): RFC 1122 §3.2.2 forbids answering one
    /// with another error.
    pub fn is_error(&self) -> bool {
        matches!(self.msg_type(), DST_UNREACHABLE | SOURCE_QUENCH | REDIRECT | TIME_EXCEEDED | PARAM_PROBLEM)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    /// Computes and writes the checksum over the whole buffer.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::finish(checksum::sum(self.buffer.as_ref()));
        self.set_checksum(c);
    }
}

/// Reason of a destination-unreachable message (type 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Icmpv4DstUnreachable {
    /// Code 0.
    NetUnreachable,
    /// Code 1.
    HostUnreachable,
    /// Code 2.
    ProtoUnreachable,
    /// Code 3.
    PortUnreachable,
    /// Code 4, with the next-hop MTU of RFC 1191 (0 from old routers).
    FragRequired {
        /// Next-hop MTU.
        next_hop_mtu: u16,
    },
    /// Any other code.
    Other(u8),
}

impl Icmpv4DstUnreachable {
    fn from_code(code: u8, mtu: u16) -> Self {
        match code {
            0 => Self::NetUnreachable,
            1 => Self::HostUnreachable,
            2 => Self::ProtoUnreachable,
            3 => Self::PortUnreachable,
            4 => Self::FragRequired { next_hop_mtu: mtu },
            c => Self::Other(c),
        }
    }
    fn code_and_mtu(self) -> (u8, u16) {
        match self {
            Self::NetUnreachable => (0, 0),
            Self::HostUnreachable => (1, 0),
            Self::ProtoUnreachable => (2, 0),
            Self::PortUnreachable => (3, 0),
            Self::FragRequired { next_hop_mtu } => (4, next_hop_mtu),
            Self::Other(c) => (c, 0),
        }
    }
}

/// Reason of a time-exceeded message (type 11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Icmpv4TimeExceeded {
    /// Code 0: TTL reached zero in transit.
    TtlExpired,
    /// Code 1: fragment reassembly time exceeded.
    FragReassembly,
    /// Any other code.
    Other(u8),
}

impl Icmpv4TimeExceeded {
    fn from_code(code: u8) -> Self {
        match code {
            0 => Self::TtlExpired,
            1 => Self::FragReassembly,
            c => Self::Other(c),
        }
    }
    fn code(self) -> u8 {
        match self {
            Self::TtlExpired => 0,
            Self::FragReassembly => 1,
            Self::Other(c) => c,
        }
    }
}

/// A parsed ICMPv4 message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icmpv4Repr<'a> {
    /// Echo request (type 8).
    EchoRequest {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Echo data.
        data: &'a [u8],
    },
    /// Echo reply (type 0).
    EchoReply {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Echo data.
        data: &'a [u8],
    },
    /// Destination unreachable (type 3).
    DstUnreachable {
        /// The code.
        reason: Icmpv4DstUnreachable,
        /// Header of the offending datagram (its options are not kept).
        header: Ipv4Repr,
        /// Leading bytes of the offending datagram's payload: whatever was quoted
        /// on parse; emitted as given (pass [`ICMPV4_ERROR_DATA_LEN`] bytes).
        data: &'a [u8],
    },
    /// Time exceeded (type 11).
    TimeExceeded {
        /// The code.
        reason: Icmpv4TimeExceeded,
        /// Header of the offending datagram (its options are not kept).
        header: Ipv4Repr,
        /// Leading bytes of the offending datagram's payload.
        data: &'a [u8],
    },
    /// Any other message; only type and code are kept (emitted with a zero
    /// rest-of-header and no data).
    Other {
        /// Type.
        msg_type: u8,
        /// Code.
        code: u8,
    },
}

/// Parses the quoted datagram of an error message: a valid IPv4 header, possibly
/// followed by fewer payload bytes than its total length says.
fn parse_quoted(data: &[u8]) -> Result<(Ipv4Repr, &[u8])> {
    let inner = Ipv4Packet::new_checked_header(data)?;
    let header = Ipv4Repr::from_header(&inner);
    let quoted = data.get(inner.header_len()..).unwrap_or(&[]);
    Ok((header, quoted))
}

impl<'a> Icmpv4Repr<'a> {
    /// Parses a checked message; with `ChecksumMode::Verify` a bad checksum is
    /// `Error::Checksum`. Error messages must quote a valid IPv4 header.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Icmpv4Packet<&'a T>, checksum: ChecksumMode) -> Result<Self> {
        let b: &'a [u8] = packet.buffer.as_ref();
        if b.len() < ICMPV4_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if checksum == ChecksumMode::Verify && !packet.verify_checksum() {
            return Err(Error::Checksum);
        }
        let data: &'a [u8] = b.get(ICMPV4_HEADER_LEN..).unwrap_or(&[]);
        let (t, code) = (packet.msg_type(), packet.msg_code());
        Ok(match t {
            ECHO_REQUEST if code == 0 => {
                Icmpv4Repr::EchoRequest { ident: packet.echo_ident(), seq_no: packet.echo_seq_no(), data }
            }
            ECHO_REPLY if code == 0 => {
                Icmpv4Repr::EchoReply { ident: packet.echo_ident(), seq_no: packet.echo_seq_no(), data }
            }
            DST_UNREACHABLE => {
                let (header, data) = parse_quoted(data)?;
                Icmpv4Repr::DstUnreachable {
                    reason: Icmpv4DstUnreachable::from_code(code, packet.next_hop_mtu()),
                    header,
                    data,
                }
            }
            TIME_EXCEEDED => {
                let (header, data) = parse_quoted(data)?;
                Icmpv4Repr::TimeExceeded { reason: Icmpv4TimeExceeded::from_code(code), header, data }
            }
            _ => Icmpv4Repr::Other { msg_type: t, code },
        })
    }

    /// Length on the wire.
    pub fn buffer_len(&self) -> usize {
        match self {
            Icmpv4Repr::EchoRequest { data, .. } | Icmpv4Repr::EchoReply { data, .. } => ICMPV4_HEADER_LEN + data.len(),
            Icmpv4Repr::DstUnreachable { data, .. } | Icmpv4Repr::TimeExceeded { data, .. } => {
                ICMPV4_HEADER_LEN + IPV4_HEADER_LEN + data.len()
            }
            Icmpv4Repr::Other { .. } => ICMPV4_HEADER_LEN,
        }
    }

    /// Writes the message. With `ChecksumMode::Verify` the checksum is computed
    /// over the whole buffer (which should be exactly `buffer_len()` long); with
    /// `Ignore` it is left zero. Panics if the buffer is shorter than `buffer_len()`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Icmpv4Packet<T>, checksum: ChecksumMode) {
        let b = packet.buffer.as_mut();
        b[2..ICMPV4_HEADER_LEN].fill(0);
        match *self {
            Icmpv4Repr::EchoRequest { ident, seq_no, data } => emit_echo(b, ECHO_REQUEST, ident, seq_no, data),
            Icmpv4Repr::EchoReply { ident, seq_no, data } => emit_echo(b, ECHO_REPLY, ident, seq_no, data),
            Icmpv4Repr::DstUnreachable { reason, header, data } => {
                let (code, mtu) = reason.code_and_mtu();
                b[0] = DST_UNREACHABLE;
                b[1] = code;
                set_u16(b, 6, mtu);
                emit_quoted(b, &header, data);
            }
            Icmpv4Repr::TimeExceeded { reason, header, data } => {
                b[0] = TIME_EXCEEDED;
                b[1] = reason.code();
                emit_quoted(b, &header, data);
            }
            Icmpv4Repr::Other { msg_type, code } => {
                b[0] = msg_type;
                b[1] = code;
            }
        }
        if checksum == ChecksumMode::Verify {
            packet.fill_checksum();
        }
    }
}

fn emit_quoted(b: &mut [u8], header: &Ipv4Repr, data: &[u8]) {
    let start = ICMPV4_HEADER_LEN;
    let mid = start + IPV4_HEADER_LEN;
    header.emit(&mut Ipv4Packet::new_unchecked(&mut b[start..mid]), ChecksumMode::Verify);
    b[mid..mid + data.len()].copy_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IpProtocol;
    use std::net::Ipv4Addr;

    #[test]
    fn port_unreachable_round_trip() {
        let header = Ipv4Repr {
            src_addr: Ipv4Addr::new(10, 0, 0, 1),
            dst_addr: Ipv4Addr::new(10, 0, 0, 2),
            protocol: IpProtocol::Udp,
            payload_len: 100,
            ttl: 64,
            ident: 1,
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
            dscp_ecn: 0,
        };
        let repr = Icmpv4Repr::DstUnreachable {
            reason: Icmpv4DstUnreachable::PortUnreachable,
            header,
            data: &[1, 2, 3, 4, 5, 6, 7, 8],
        };
        let mut b = [0u8; 36];
        assert_eq!(repr.buffer_len(), 36);
        repr.emit(&mut Icmpv4Packet::new_unchecked(&mut b[..]), ChecksumMode::Verify);
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.is_error());
        assert_eq!(Icmpv4Repr::parse(&p, ChecksumMode::Verify).unwrap(), repr);
    }

    #[test]
    fn error_with_garbage_quote_is_malformed() {
        let mut b = [0u8; 28];
        b[0] = DST_UNREACHABLE;
        let mut p = Icmpv4Packet::new_unchecked(&mut b[..]);
        p.fill_checksum();
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Icmpv4Repr::parse(&p, ChecksumMode::Verify).unwrap_err(), Error::Malformed);
    }
}
