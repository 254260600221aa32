//! TCP options (RFC 9293 §3.1, RFC 7323, RFC 2018).

use crate::bytes::{get_u16, get_u32, set_u16, set_u32};
use crate::{Error, Result, TcpSeqNumber};

const KIND_EOL: u8 = 0;
pub(super) const KIND_NOP: u8 = 1;
const KIND_MSS: u8 = 2;
const KIND_WS: u8 = 3;
pub(super) const KIND_SACK_PERMITTED: u8 = 4;
const KIND_SACK: u8 = 5;
pub(super) const KIND_TIMESTAMP: u8 = 8;

/// One TCP option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpOption<'a> {
    /// End of option list (kind 0).
    EndOfList,
    /// Padding (kind 1).
    NoOperation,
    /// Maximum segment size (kind 2), parsed faithfully (no clamping).
    MaxSegmentSize(u16),
    /// Window scale shift count (kind 3), as sent (not clamped here).
    WindowScale(u8),
    /// SACK permitted (kind 4).
    SackPermitted,
    /// SACK blocks (kind 5): up to 4 `(left, right)` edges, filled from the front.
    SackRange([Option<(TcpSeqNumber, TcpSeqNumber)>; 4]),
    /// Timestamps (kind 8).
    Timestamp {
        /// Sender's timestamp value.
        tsval: u32,
        /// Echoed timestamp.
        tsecr: u32,
    },
    /// An option this crate does not interpret.
    Unknown {
        /// Kind byte.
        kind: u8,
        /// Bytes after kind and length.
        data: &'a [u8],
    },
}

impl<'a> TcpOption<'a> {
    /// Parses the first option of `buffer`, returning the bytes after it.
    ///
    /// Every call consumes at least one byte, so a loop over the rest ends.
    /// An empty buffer is `Truncated`; a missing length byte, a length below 2,
    /// a length past the end, or a wrong length for MSS/WS/SACK-permitted/
    /// timestamps or SACK (not `2 + 8n`, n ≤ 4) is `Malformed`.
    pub fn parse(buffer: &'a [u8]) -> Result<(&'a [u8], TcpOption<'a>)> {
        let (&kind, after_kind) = buffer.split_first().ok_or(Error::Truncated)?;
        match kind {
            KIND_EOL => return Ok((after_kind, TcpOption::EndOfList)),
            KIND_NOP => return Ok((after_kind, TcpOption::NoOperation)),
            _ => {}
        }
        let len = usize::from(*after_kind.first().ok_or(Error::Malformed)?);
        if len < 2 || len > buffer.len() {
            return Err(Error::Malformed);
        }
        let (option, rest) = buffer.split_at(len);
        let data = &option[2..];
        let opt = match (kind, len) {
            (KIND_MSS, 4) => TcpOption::MaxSegmentSize(get_u16(data, 0)),
            (KIND_WS, 3) => TcpOption::WindowScale(data[0]),
            (KIND_SACK_PERMITTED, 2) => TcpOption::SackPermitted,
            (KIND_TIMESTAMP, 10) => TcpOption::Timestamp { tsval: get_u32(data, 0), tsecr: get_u32(data, 4) },
            (KIND_SACK, _) if data.len() % 8 == 0 && data.len() <= 32 => {
                let mut blocks = [None; 4];
                for (slot, edge) in blocks.iter_mut().zip(data.chunks_exact(8)) {
                    *slot = Some((TcpSeqNumber(get_u32(edge, 0)), TcpSeqNumber(get_u32(edge, 4))));
                }
                TcpOption::SackRange(blocks)
            }
            (KIND_MSS | KIND_WS | KIND_SACK_PERMITTED | KIND_TIMESTAMP | KIND_SACK, _) => return Err(Error::Malformed),
            (kind, _) => TcpOption::Unknown { kind, data },
        };
        Ok((rest, opt))
    }

    /// Length on the wire.
    pub fn buffer_len(&self) -> usize {
        match self {
            TcpOption::EndOfList | TcpOption::NoOperation => 1,
            TcpOption::MaxSegmentSize(_) => 4,
            TcpOption::WindowScale(_) => 3,
            TcpOption::SackPermitted => 2,
            TcpOption::SackRange(blocks) => 2 + 8 * blocks.iter().flatten().count(),
            TcpOption::Timestamp { .. } => 10,
            TcpOption::Unknown { data, .. } => 2 + data.len(),
        }
    }

    /// Writes the option at the start of `buffer` and returns its length. SACK
    /// writes its `Some` blocks in order. Panics if `buffer` is shorter than
    /// `buffer_len()` or an `Unknown` option's data exceeds 253 bytes.
    pub fn emit(&self, buffer: &mut [u8]) -> usize {
        let len = self.buffer_len();
        let (kind, data) = buffer[..len].split_at_mut(1);
        match *self {
            TcpOption::EndOfList => kind[0] = KIND_EOL,
            TcpOption::NoOperation => kind[0] = KIND_NOP,
            TcpOption::MaxSegmentSize(mss) => {
                kind[0] = KIND_MSS;
                set_u16(data, 1, mss);
            }
            TcpOption::WindowScale(shift) => {
                kind[0] = KIND_WS;
                data[1] = shift;
            }
            TcpOption::SackPermitted => kind[0] = KIND_SACK_PERMITTED,
            TcpOption::SackRange(blocks) => {
                kind[0] = KIND_SACK;
                for (i, (l, r)) in blocks.iter().flatten().enumerate() {
                    set_u32(data, 1 + 8 * i, l.0);
                    set_u32(data, 5 + 8 * i, r.0);
                }
            }
            TcpOption::Timestamp { tsval, tsecr } => {
                kind[0] = KIND_TIMESTAMP;
                set_u32(data, 1, tsval);
                set_u32(data, 5, tsecr);
            }
            TcpOption::Unknown { kind: k, data: d } => {
                assert!(d.len() <= 253, "TCP option data too long");
                kind[0] = k;
                data[1..].copy_from_slice(d);
            }
        }
        if len > 1 {
            data[0] = len as u8;
        }
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_lengths_are_enforced() {
        assert_eq!(TcpOption::parse(&[2, 4, 5, 0xb4]), Ok((&[][..], TcpOption::MaxSegmentSize(1460))));
        assert_eq!(TcpOption::parse(&[2, 3, 5]).unwrap_err(), Error::Malformed);
        assert_eq!(TcpOption::parse(&[3, 4, 5, 0]).unwrap_err(), Error::Malformed);
        assert_eq!(TcpOption::parse(&[5, 9, 0, 0, 0, 0, 0, 0, 0]).unwrap_err(), Error::Malformed);
        assert_eq!(TcpOption::parse(&[9, 0]).unwrap_err(), Error::Malformed);
        assert_eq!(TcpOption::parse(&[9, 1]).unwrap_err(), Error::Malformed);
        assert_eq!(TcpOption::parse(&[9]).unwrap_err(), Error::Malformed);
        assert_eq!(TcpOption::parse(&[9, 3]).unwrap_err(), Error::Malformed);
        assert_eq!(TcpOption::parse(&[]).unwrap_err(), Error::Truncated);
        assert_eq!(TcpOption::parse(&[99, 3, 7, 1]), Ok((&[1u8][..], TcpOption::Unknown { kind: 99, data: &[7] })));
    }

    #[test]
    fn emit_parse() {
        let opts = [
            TcpOption::NoOperation,
            TcpOption::MaxSegmentSize(536),
            TcpOption::WindowScale(7),
            TcpOption::SackPermitted,
            TcpOption::SackRange([
                Some((TcpSeqNumber(1), TcpSeqNumber(2))),
                Some((TcpSeqNumber(3), TcpSeqNumber(4))),
                None,
                None,
            ]),
            TcpOption::Timestamp { tsval: 5, tsecr: 6 },
            TcpOption::Unknown { kind: 30, data: &[1, 2, 3] },
            TcpOption::EndOfList,
        ];
        let mut b = [0u8; 64];
        for o in opts {
            let n = o.emit(&mut b);
            assert_eq!(n, o.buffer_len());
            assert_eq!(TcpOption::parse(&b[..n]), Ok((&[][..], o)));
        }
    }
}
