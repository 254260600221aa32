//! Multicast listener discovery, version 2 (RFC 3810): the query a router
//! sends and the report with which a host joins groups, its solicited-node
//! multicast addresses first, so that snooping switches deliver neighbour
//! solicitations to it. ICMPv6 messages: parse and emit them through
//! [`crate::Icmpv6Repr`], which owns the checksum.

use core::fmt;
use std::net::Ipv6Addr;

use crate::bytes::{get_ipv6, get_u16, set_u16};
use crate::icmpv6::{MLDV2_REPORT, MLD_QUERY};
use crate::{Error, Result};

/// Length of an MLDv1 query (RFC 3810 §8.1).
const QUERY_V1_LEN: usize = 24;
/// Length of an MLDv2 query without sources.
const QUERY_V2_LEN: usize = 28;
/// Length of a report's fixed part.
const REPORT_LEN: usize = 8;
/// Length of an address record's fixed part.
const RECORD_LEN: usize = 20;

/// The addresses in a packed list of 16-byte addresses.
fn addrs(b: &[u8]) -> impl Iterator<Item = Ipv6Addr> + '_ {
    b.chunks_exact(16).map(|c| get_ipv6(c, 0))
}

/// The type of a multicast address record (RFC 3810 §5.2.12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MldRecordType {
    /// 1: current state, include the sources.
    ModeIsInclude,
    /// 2: current state, exclude the sources.
    ModeIsExclude,
    /// 3: filter changed to include the sources (with none: leave).
    ChangeToInclude,
    /// 4: filter changed to exclude the sources (with none: join).
    ChangeToExclude,
    /// 5: allow new sources.
    AllowNewSources,
    /// 6: block old sources.
    BlockOldSources,
    /// Any other value.
    Unknown(u8),
}

impl From<u8> for MldRecordType {
    fn from(v: u8) -> Self {
        match v {
            1 => Self::ModeIsInclude,
            2 => Self::ModeIsExclude,
            3 => Self::ChangeToInclude,
            4 => Self::ChangeToExclude,
            5 => Self::AllowNewSources,
            6 => Self::BlockOldSources,
            other => Self::Unknown(other),
        }
    }
}

impl From<MldRecordType> for u8 {
    fn from(t: MldRecordType) -> u8 {
        match t {
            MldRecordType::ModeIsInclude => 1,
            MldRecordType::ModeIsExclude => 2,
            MldRecordType::ChangeToInclude => 3,
            MldRecordType::ChangeToExclude => 4,
            MldRecordType::AllowNewSources => 5,
            MldRecordType::BlockOldSources => 6,
            MldRecordType::Unknown(v) => v,
        }
    }
}

/// One multicast address record of a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MldAddressRecordRepr<'a> {
    /// What the record says.
    pub record_type: MldRecordType,
    /// The group.
    pub mcast_addr: Ipv6Addr,
    /// Source addresses, packed 16 bytes each (a multiple of 16 long; see
    /// [`source_addrs`](Self::source_addrs)).
    pub sources: &'a [u8],
    /// Auxiliary data (a multiple of 4 bytes; RFC 3810 defines none).
    pub aux_data: &'a [u8],
}

impl<'a> MldAddressRecordRepr<'a> {
    /// Joining `group` with no source filter: CHANGE_TO_EXCLUDE_MODE with no
    /// sources (RFC 3810 §6.1), the record a host sends for its solicited-node
    /// multicast addresses.
    pub fn join(group: Ipv6Addr) -> Self {
        MldAddressRecordRepr {
            record_type: MldRecordType::ChangeToExclude,
            mcast_addr: group,
            sources: &[],
            aux_data: &[],
        }
    }
    /// Leaving `group`: CHANGE_TO_INCLUDE_MODE with no sources.
    pub fn leave(group: Ipv6Addr) -> Self {
        MldAddressRecordRepr {
            record_type: MldRecordType::ChangeToInclude,
            mcast_addr: group,
            sources: &[],
            aux_data: &[],
        }
    }
    /// The source addresses.
    pub fn source_addrs(&self) -> impl Iterator<Item = Ipv6Addr> + 'a {
        addrs(self.sources)
    }
    /// Bytes on the wire.
    pub fn buffer_len(&self) -> usize {
        RECORD_LEN + self.sources.len() + self.aux_data.len()
    }
    /// Reads the record at the start of `b`; returns it and its length.
    fn parse(b: &'a [u8]) -> Result<(Self, usize)> {
        if b.len() < RECORD_LEN {
            return Err(Error::Truncated);
        }
        let aux_len = usize::from(b[1]) * 4;
        let sources_len = usize::from(get_u16(b, 2)) * 16;
        let len = RECORD_LEN + sources_len + aux_len;
        if len > b.len() {
            return Err(Error::Truncated);
        }
        let repr = MldAddressRecordRepr {
            record_type: b[0].into(),
            mcast_addr: get_ipv6(b, 4),
            sources: &b[RECORD_LEN..RECORD_LEN + sources_len],
            aux_data: &b[RECORD_LEN + sources_len..len],
        };
        Ok((repr, len))
    }
    /// Writes the record; panics if `b` is short, or the sources or aux data
    /// are not whole addresses or words, or too many for their count fields.
    fn emit(&self, b: &mut [u8]) {
        assert!(
            self.sources.len().is_multiple_of(16) && self.aux_data.len().is_multiple_of(4),
            "whole addresses and words"
        );
        b[0] = self.record_type.into();
        b[1] = u8::try_from(self.aux_data.len() / 4).expect("at most 255 words of aux data");
        set_u16(b, 2, u16::try_from(self.sources.len() / 16).expect("at most 65535 sources"));
        b[4..20].copy_from_slice(&self.mcast_addr.octets());
        let s = RECORD_LEN + self.sources.len();
        b[RECORD_LEN..s].copy_from_slice(self.sources);
        b[s..s + self.aux_data.len()].copy_from_slice(self.aux_data);
    }
}

/// The records of a report, without allocating: read in place from a parsed
/// message, or a caller's list to emit.
#[derive(Clone, Copy)]
pub enum MldRecords<'a> {
    /// The records of a parsed (validated) report: `count` of them from the
    /// start of `bytes`.
    Wire {
        /// How many records.
        count: u16,
        /// The record area.
        bytes: &'a [u8],
    },
    /// Records to emit.
    List(&'a [MldAddressRecordRepr<'a>]),
}

impl<'a> MldRecords<'a> {
    /// The records, in order.
    pub fn iter(&self) -> impl Iterator<Item = MldAddressRecordRepr<'a>> + 'a {
        let (count, mut bytes, list): (u16, &'a [u8], &'a [MldAddressRecordRepr<'a>]) = match *self {
            MldRecords::Wire { count, bytes } => (count, bytes, &[]),
            MldRecords::List(l) => (0, &[], l),
        };
        let wire = (0..count).map_while(move |_| {
            let (r, len) = MldAddressRecordRepr::parse(bytes).ok()?;
            bytes = &bytes[len..];
            Some(r)
        });
        wire.chain(list.iter().copied())
    }
    /// How many records.
    pub fn len(&self) -> usize {
        match self {
            MldRecords::Wire { count, .. } => usize::from(*count),
            MldRecords::List(l) => l.len(),
        }
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PartialEq for MldRecords<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for MldRecords<'_> {}

impl fmt::Debug for MldRecords<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A parsed MLD message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MldRepr<'a> {
    /// Multicast listener query (type 130). An MLDv1 query (24 bytes) parses
    /// with the MLDv2 fields zero and no sources; queries are emitted in the
    /// MLDv2 format.
    Query {
        /// Maximum response code (RFC 3810 §5.1.3).
        max_resp_code: u16,
        /// The group queried (unspecified: a general query).
        mcast_addr: Ipv6Addr,
        /// S: suppress router-side processing.
        s_flag: bool,
        /// Querier's robustness variable (3 bits).
        qrv: u8,
        /// Querier's query interval code.
        qqic: u8,
        /// Source addresses, packed 16 bytes each.
        sources: &'a [u8],
    },
    /// MLDv2 listener report (type 143).
    Report {
        /// The multicast address records.
        records: MldRecords<'a>,
    },
}

impl<'a> MldRepr<'a> {
    /// Parses a whole ICMPv6 message of type 130 or 143 (the checksum is
    /// [`crate::Icmpv6Repr::parse`]'s business). A query of any length other
    /// than 24 or 28 + 16 × sources is `Error::Malformed` (RFC 3810 §8.1 says
    /// to ignore it); a report must hold every record its count announces.
    pub fn parse(b: &'a [u8]) -> Result<Self> {
        match b.first() {
            Some(&MLD_QUERY) => {
                if b.len() == QUERY_V1_LEN {
                    return Ok(MldRepr::Query {
                        max_resp_code: get_u16(b, 4),
                        mcast_addr: get_ipv6(b, 8),
                        s_flag: false,
                        qrv: 0,
                        qqic: 0,
                        sources: &[],
                    });
                }
                if b.len() < QUERY_V2_LEN {
                    return Err(Error::Malformed);
                }
                let n = usize::from(get_u16(b, 26)) * 16;
                if b.len() != QUERY_V2_LEN + n {
                    return Err(Error::Malformed);
                }
                Ok(MldRepr::Query {
                    max_resp_code: get_u16(b, 4),
                    mcast_addr: get_ipv6(b, 8),
                    s_flag: b[24] & 0x08 != 0,
                    qrv: b[24] & 0x07,
                    qqic: b[25],
                    sources: &b[QUERY_V2_LEN..],
                })
            }
            Some(&MLDV2_REPORT) => {
                if b.len() < REPORT_LEN {
                    return Err(Error::Truncated);
                }
                let count = get_u16(b, 6);
                let bytes = &b[REPORT_LEN..];
                let mut rest = bytes;
                for _ in 0..count {
                    let (_, len) = MldAddressRecordRepr::parse(rest)?;
                    rest = &rest[len..];
                }
                Ok(MldRepr::Report { records: MldRecords::Wire { count, bytes } })
            }
            Some(_) => Err(Error::Unsupported),
            None => Err(Error::Truncated),
        }
    }

    /// The whole ICMPv6 message's length.
    pub fn buffer_len(&self) -> usize {
        match self {
            MldRepr::Query { sources, .. } => QUERY_V2_LEN + sources.len(),
            MldRepr::Report { records } => REPORT_LEN + records.iter().map(|r| r.buffer_len()).sum::<usize>(),
        }
    }

    /// Writes the whole ICMPv6 message but its checksum. Panics if `b` is
    /// shorter than `buffer_len()`, or sources are not whole addresses.
    pub fn emit(&self, b: &mut [u8]) {
        b[1..4].fill(0);
        match *self {
            MldRepr::Query { max_resp_code, mcast_addr, s_flag, qrv, qqic, sources } => {
                assert!(sources.len() % 16 == 0, "whole source addresses");
                b[0] = MLD_QUERY;
                set_u16(b, 4, max_resp_code);
                b[6..8].fill(0);
                b[8..24].copy_from_slice(&mcast_addr.octets());
                b[24] = u8::from(s_flag) << 3 | (qrv & 0x07);
                b[25] = qqic;
                set_u16(b, 26, u16::try_from(sources.len() / 16).expect("at most 65535 sources"));
                b[QUERY_V2_LEN..QUERY_V2_LEN + sources.len()].copy_from_slice(sources);
            }
            MldRepr::Report { records } => {
                b[0] = MLDV2_REPORT;
                b[4..6].fill(0);
                set_u16(b, 6, u16::try_from(records.len()).expect("at most 65535 records"));
                let mut at = REPORT_LEN;
                for r in records.iter() {
                    r.emit(&mut b[at..]);
                    at += r.buffer_len();
                }
            }
        }
    }
}

impl<'a> MldRepr<'a> {
    /// The source addresses of a query (none for a report).
    pub fn source_addrs(&self) -> impl Iterator<Item = Ipv6Addr> + 'a {
        let sources: &'a [u8] = match *self {
            MldRepr::Query { sources, .. } => sources,
            MldRepr::Report { .. } => &[],
        };
        addrs(sources)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipv6_solicited_node;

    #[test]
    fn solicited_node_join_is_change_to_exclude_with_no_sources() {
        let group = ipv6_solicited_node("fe80::3656:78ff:fe9a:bcde".parse().unwrap());
        let records = [MldAddressRecordRepr::join(group)];
        let repr = MldRepr::Report { records: MldRecords::List(&records) };
        let mut b = vec![0u8; repr.buffer_len()];
        repr.emit(&mut b);
        let mut expected = vec![143, 0, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0];
        expected.extend_from_slice(&group.octets());
        assert_eq!(b, expected);
        assert_eq!(MldRepr::parse(&b).unwrap(), repr);
    }

    #[test]
    fn report_whose_count_lies_is_truncated_and_queries_of_odd_length_malformed() {
        let mut b = vec![143, 0, 0, 0, 0, 0, 0, 2, 4, 0, 0, 0];
        b.extend_from_slice(&[0xff; 16]);
        assert_eq!(MldRepr::parse(&b).unwrap_err(), Error::Truncated);
        b[7] = 1;
        b[10..12].copy_from_slice(&[0xff, 0xff]); // 65535 sources announced
        assert_eq!(MldRepr::parse(&b).unwrap_err(), Error::Truncated);
        let q = [130u8; 26];
        assert_eq!(MldRepr::parse(&q).unwrap_err(), Error::Malformed);
        let mut q = [0u8; 24];
        q[0] = 130;
        assert!(matches!(MldRepr::parse(&q).unwrap(), MldRepr::Query { qrv: 0, .. }));
    }
}
