//! IPv6 extension headers (RFC 8200 §4): hop-by-hop and destination options
//! with their TLV options and action bits, the routing header, the fragment
//! header, and [`Ipv6ExtChain`], which walks a chain of them with a bound on
//! their number and total length.
//!
//! Every `parse` here is total: any byte string yields a value or an error,
//! and the walker's work is bounded by [`Ipv6ExtLimits`] and the packet length.

use core::fmt;

use crate::bytes::{get_u16, get_u32, set_u16, set_u32};
use crate::{Error, IpProtocol, Result, IPV6_HEADER_LEN};

/// Length of the fragment header (RFC 8200 §4.5).
pub const IPV6_FRAGMENT_HEADER_LEN: usize = 8;
/// Routing type 0, deprecated by RFC 5095: a host treats it as an unknown type.
pub const IPV6_ROUTING_TYPE0: u8 = 0;
/// Router Alert value for MLD messages (RFC 2711 §2.1).
pub const IPV6_ROUTER_ALERT_MLD: u16 = 0;

const OPT_PAD1: u8 = 0;
const OPT_PADN: u8 = 1;
const OPT_ROUTER_ALERT: u8 = 5;
/// The longest extension header with a length field: (255 + 1) × 8 bytes.
const MAX_EXT_HEADER_LEN: usize = 2048;

/// What a node does with an option it does not recognise: the two high bits
/// of the option type (RFC 8200 §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ipv6OptionAction {
    /// `00`: skip the option and go on.
    Skip,
    /// `01`: discard the packet.
    Discard,
    /// `10`: discard and send an ICMPv6 Parameter Problem (code 2) pointing at the option.
    DiscardAndReport,
    /// `11`: as `DiscardAndReport`, but only when the destination is not multicast.
    DiscardAndReportUnlessMulticast,
}

impl Ipv6OptionAction {
    /// The action encoded in `option_type`.
    pub fn of(option_type: u8) -> Self {
        match option_type >> 6 {
            0 => Ipv6OptionAction::Skip,
            1 => Ipv6OptionAction::Discard,
            2 => Ipv6OptionAction::DiscardAndReport,
            _ => Ipv6OptionAction::DiscardAndReportUnlessMulticast,
        }
    }
}

/// One option of a hop-by-hop or destination options header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv6Option<'a> {
    /// One byte of padding (type 0, no length byte).
    Pad1,
    /// Padding of 2 + n bytes (type 1); the content is not kept and is emitted as zeros.
    PadN(u8),
    /// Router Alert (type 5, RFC 2711) with its value (0: MLD).
    RouterAlert(u16),
    /// Any other option (also a Router Alert whose length is not 2).
    Unknown {
        /// The option type (action bits, change bit, number).
        option_type: u8,
        /// The option data.
        data: &'a [u8],
    },
}

impl<'a> Ipv6Option<'a> {
    /// Parses the option at the start of `b`; returns it and the bytes after it.
    /// An option whose length byte is missing or runs past `b` is `Error::Malformed`.
    pub fn parse(b: &'a [u8]) -> Result<(Self, &'a [u8])> {
        let (&t, rest) = b.split_first().ok_or(Error::Truncated)?;
        if t == OPT_PAD1 {
            return Ok((Ipv6Option::Pad1, rest));
        }
        let (&len, rest) = rest.split_first().ok_or(Error::Malformed)?;
        let len = usize::from(len);
        if len > rest.len() {
            return Err(Error::Malformed);
        }
        let (data, rest) = rest.split_at(len);
        let opt = match t {
            OPT_PADN => Ipv6Option::PadN(len as u8),
            OPT_ROUTER_ALERT if len == 2 => Ipv6Option::RouterAlert(get_u16(data, 0)),
            _ => Ipv6Option::Unknown { option_type: t, data },
        };
        Ok((opt, rest))
    }

    /// Bytes on the wire.
    pub fn buffer_len(&self) -> usize {
        match self {
            Ipv6Option::Pad1 => 1,
            Ipv6Option::PadN(n) => 2 + usize::from(*n),
            Ipv6Option::RouterAlert(_) => 4,
            Ipv6Option::Unknown { data, .. } => 2 + data.len(),
        }
    }

    /// Writes the option at the start of `b`; returns its length. Panics if `b`
    /// is shorter than [`buffer_len`](Self::buffer_len) or unknown data is over 255 bytes.
    pub fn emit(&self, b: &mut [u8]) -> usize {
        match *self {
            Ipv6Option::Pad1 => b[0] = OPT_PAD1,
            Ipv6Option::PadN(n) => {
                b[0] = OPT_PADN;
                b[1] = n;
                b[2..2 + usize::from(n)].fill(0);
            }
            Ipv6Option::RouterAlert(v) => {
                b[..2].copy_from_slice(&[OPT_ROUTER_ALERT, 2]);
                set_u16(b, 2, v);
            }
            Ipv6Option::Unknown { option_type, data } => {
                b[0] = option_type;
                b[1] = u8::try_from(data.len()).expect("IPv6 option data is at most 255 bytes");
                b[2..2 + data.len()].copy_from_slice(data);
            }
        }
        self.buffer_len()
    }
}

/// The options of a hop-by-hop or destination options header, in order.
/// Stops at the first malformed option (a parsed header has none).
#[derive(Clone, Debug)]
pub struct Ipv6Options<'a> {
    rest: &'a [u8],
    at: usize,
}

impl<'a> Ipv6Options<'a> {
    /// The next option and its offset within the option area.
    fn next_at(&mut self) -> Option<core::result::Result<(usize, Ipv6Option<'a>), usize>> {
        if self.rest.is_empty() {
            return None;
        }
        let at = self.at;
        match Ipv6Option::parse(self.rest) {
            Ok((opt, rest)) => {
                self.at += self.rest.len() - rest.len();
                self.rest = rest;
                Some(Ok((at, opt)))
            }
            Err(_) => {
                self.rest = &[];
                Some(Err(at))
            }
        }
    }
}

impl<'a> Iterator for Ipv6Options<'a> {
    type Item = Ipv6Option<'a>;
    fn next(&mut self) -> Option<Ipv6Option<'a>> {
        self.next_at()?.ok().map(|(_, o)| o)
    }
}

/// A hop-by-hop (RFC 8200 §4.3) or destination options (§4.6) header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6OptionsRepr<'a> {
    /// The header after this one.
    pub next_header: IpProtocol,
    /// The option area (after next header and length), padding included.
    /// On emit it is padded with Pad1/PadN to a multiple of 8 bytes.
    pub options: &'a [u8],
}

impl<'a> Ipv6OptionsRepr<'a> {
    /// Parses the header at the start of `b` (bytes after it are not looked
    /// at); every option must fit in the header (`Error::Malformed`).
    pub fn parse(b: &'a [u8]) -> Result<Self> {
        let (repr, _) = options_header(b)?;
        match check_options(repr.options) {
            Ok(()) => Ok(repr),
            Err(_) => Err(Error::Malformed),
        }
    }

    /// The options, in order.
    pub fn iter(&self) -> Ipv6Options<'a> {
        Ipv6Options { rest: self.options, at: 0 }
    }

    /// Header length: `2 + options`, rounded up to 8.
    pub fn buffer_len(&self) -> usize {
        (2 + self.options.len()).div_ceil(8) * 8
    }

    /// Writes the header. Panics if `b` is shorter than `buffer_len()` or the
    /// header would exceed 2048 bytes.
    pub fn emit(&self, b: &mut [u8]) {
        let len = self.buffer_len();
        assert!(len <= MAX_EXT_HEADER_LEN, "an IPv6 options header is at most 2048 bytes");
        b[0] = self.next_header.into();
        b[1] = (len / 8 - 1) as u8;
        let end = 2 + self.options.len();
        b[2..end].copy_from_slice(self.options);
        match len - end {
            0 => {}
            1 => b[end] = OPT_PAD1,
            n => {
                Ipv6Option::PadN((n - 2) as u8).emit(&mut b[end..len]);
            }
        }
    }
}

/// Header with a length field: next header, length in 8-byte units past the
/// first 8. Returns the repr (options unchecked) and the header length.
fn options_header(b: &[u8]) -> Result<(Ipv6OptionsRepr<'_>, usize)> {
    let len = ext_len(b)?;
    Ok((Ipv6OptionsRepr { next_header: b[0].into(), options: &b[2..len] }, len))
}

fn ext_len(b: &[u8]) -> Result<usize> {
    let &l = b.get(1).ok_or(Error::Truncated)?;
    let len = (usize::from(l) + 1) * 8;
    if len > b.len() {
        return Err(Error::Truncated);
    }
    Ok(len)
}

/// `Err(offset)` of the first option that runs past the area.
fn check_options(opts: &[u8]) -> core::result::Result<(), usize> {
    let mut it = Ipv6Options { rest: opts, at: 0 };
    while let Some(r) = it.next_at() {
        r?;
    }
    Ok(())
}

/// A routing header (RFC 8200 §4.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6RoutingRepr<'a> {
    /// The header after this one.
    pub next_header: IpProtocol,
    /// Routing type; 0 is deprecated (RFC 5095), see [`is_type0`](Self::is_type0).
    pub routing_type: u8,
    /// Route segments still to visit; a host refuses a header where this is
    /// not 0 (it forwards nothing), and ignores one where it is.
    pub segments_left: u8,
    /// Type-specific data (after the first 4 bytes); emitted padded with zeros
    /// to a multiple of 8 bytes with the first 4.
    pub data: &'a [u8],
}

impl<'a> Ipv6RoutingRepr<'a> {
    /// Parses the header at the start of `b`.
    pub fn parse(b: &'a [u8]) -> Result<Self> {
        let len = ext_len(b)?;
        Ok(Ipv6RoutingRepr { next_header: b[0].into(), routing_type: b[2], segments_left: b[3], data: &b[4..len] })
    }
    /// Whether this is the deprecated type 0 (RFC 5095: refused like an unknown type).
    pub fn is_type0(&self) -> bool {
        self.routing_type == IPV6_ROUTING_TYPE0
    }
    /// Header length: `4 + data`, rounded up to 8.
    pub fn buffer_len(&self) -> usize {
        (4 + self.data.len()).div_ceil(8) * 8
    }
    /// Writes the header. Panics if `b` is shorter than `buffer_len()` or the
    /// header would exceed 2048 bytes.
    pub fn emit(&self, b: &mut [u8]) {
        let len = self.buffer_len();
        assert!(len <= MAX_EXT_HEADER_LEN, "an IPv6 routing header is at most 2048 bytes");
        b[0] = self.next_header.into();
        b[1] = (len / 8 - 1) as u8;
        b[2] = self.routing_type;
        b[3] = self.segments_left;
        let end = 4 + self.data.len();
        b[4..end].copy_from_slice(self.data);
        b[end..len].fill(0);
    }
}

/// A fragment header (RFC 8200 §4.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv6FragmentRepr {
    /// The header after this one (of the fragmentable part).
    pub next_header: IpProtocol,
    /// Offset of this fragment's data in bytes (a multiple of 8).
    pub frag_offset: u16,
    /// More fragments follow.
    pub more_frags: bool,
    /// Identification, shared by the datagram's fragments.
    pub ident: u32,
}

impl Ipv6FragmentRepr {
    /// Parses the 8-byte header at the start of `b`; the reserved fields are
    /// ignored, as RFC 8200 §4.5 says.
    pub fn parse(b: &[u8]) -> Result<Self> {
        if b.len() < IPV6_FRAGMENT_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let off = get_u16(b, 2);
        Ok(Ipv6FragmentRepr {
            next_header: b[0].into(),
            frag_offset: off & 0xfff8,
            more_frags: off & 1 != 0,
            ident: get_u32(b, 4),
        })
    }
    /// An atomic fragment: offset 0 and no more fragments, a whole datagram
    /// that RFC 6946 says to process without reassembly.
    pub fn is_atomic(&self) -> bool {
        self.frag_offset == 0 && !self.more_frags
    }
    /// Header length: 8.
    pub fn buffer_len(&self) -> usize {
        IPV6_FRAGMENT_HEADER_LEN
    }
    /// Writes the header (the offset's low 3 bits are dropped). Panics if `b`
    /// is shorter than 8 bytes.
    pub fn emit(&self, b: &mut [u8]) {
        b[0] = self.next_header.into();
        b[1] = 0;
        set_u16(b, 2, (self.frag_offset & 0xfff8) | u16::from(self.more_frags));
        set_u32(b, 4, self.ident);
    }
}

/// Bounds on the extension headers one packet may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6ExtLimits {
    /// Extension headers in one chain. Default 8 (more than any legitimate
    /// chain needs: RFC 8200 §4.1 orders six kinds).
    pub max_headers: usize,
    /// Bytes of extension headers in all. Default 1024.
    pub max_len: usize,
    /// Options other than padding in one options header. Default 8, Linux's
    /// `max_hbh_opts_number` and `max_dst_opts_number`.
    pub max_options: usize,
}

impl Default for Ipv6ExtLimits {
    fn default() -> Self {
        Ipv6ExtLimits { max_headers: 8, max_len: 1024, max_options: 8 }
    }
}

/// Why an extension header chain is refused. Pointers are byte offsets from
/// the start of the IPv6 header, as an ICMPv6 Parameter Problem carries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ipv6ExtError {
    /// A header runs past the packet.
    Truncated,
    /// An option runs past its header: Parameter Problem code 0 at `pointer`.
    BadOption {
        /// Offset of the option.
        pointer: u32,
    },
    /// A hop-by-hop header anywhere but first (RFC 8200 §4.3): Parameter
    /// Problem code 1 at `pointer`, the Next Header field that names it.
    HopByHopNotFirst {
        /// Offset of the Next Header field.
        pointer: u32,
    },
    /// An option we do not recognise whose action bits say to discard;
    /// report with Parameter Problem code 2 at `pointer` when `action` says so.
    UnrecognizedOption {
        /// What RFC 8200 §4.2 says to do.
        action: Ipv6OptionAction,
        /// The option type.
        option_type: u8,
        /// Offset of the option.
        pointer: u32,
    },
    /// More headers than [`Ipv6ExtLimits::max_headers`].
    TooManyHeaders,
    /// More bytes of headers than [`Ipv6ExtLimits::max_len`].
    TooLong,
    /// More options in one header than [`Ipv6ExtLimits::max_options`].
    TooManyOptions,
}

impl fmt::Display for Ipv6ExtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ipv6ExtError::Truncated => f.write_str("IPv6 extension header runs past the packet"),
            Ipv6ExtError::BadOption { pointer } => write!(f, "IPv6 option at byte {pointer} runs past its header"),
            Ipv6ExtError::HopByHopNotFirst { pointer } => {
                write!(f, "IPv6 hop-by-hop header named at byte {pointer} is not the first")
            }
            Ipv6ExtError::UnrecognizedOption { option_type, pointer, .. } => {
                write!(f, "unrecognised IPv6 option {option_type:#04x} at byte {pointer} says discard")
            }
            Ipv6ExtError::TooManyHeaders => f.write_str("too many IPv6 extension headers"),
            Ipv6ExtError::TooLong => f.write_str("IPv6 extension headers too long"),
            Ipv6ExtError::TooManyOptions => f.write_str("too many options in one IPv6 options header"),
        }
    }
}

impl std::error::Error for Ipv6ExtError {}

impl From<Ipv6ExtError> for Error {
    fn from(e: Ipv6ExtError) -> Error {
        match e {
            Ipv6ExtError::Truncated => Error::Truncated,
            Ipv6ExtError::UnrecognizedOption { .. } => Error::Unsupported,
            _ => Error::Malformed,
        }
    }
}

/// A walked chain of extension headers: where the upper layer starts and
/// what the headers said that the stack must act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6ExtChain<'a> {
    /// The protocol after the last extension header walked: the upper layer,
    /// or the fragmentable part's first header when [`fragment`](Self::fragment)
    /// is set, or [`IpProtocol::Ipv6NoNxt`]. Headers this walker does not read
    /// (AH, ESP, mobility, ...) end the walk and show here.
    pub upper_layer: IpProtocol,
    /// Offset of the upper layer (or of the fragment data) in the IPv6 payload.
    pub upper_offset: usize,
    /// Offset, from the start of the IPv6 header, of the Next Header field
    /// that names `upper_layer`: the pointer of a Parameter Problem code 1
    /// (unrecognised next header, RFC 8200 §4) when the stack has no use for it.
    pub upper_named_at: usize,
    /// Extension headers walked.
    pub header_count: usize,
    /// The hop-by-hop header, if the chain starts with one.
    pub hop_by_hop: Option<Ipv6OptionsRepr<'a>>,
    /// The first routing header with segments left: a host, which forwards
    /// nothing, refuses the packet with Parameter Problem code 0 pointing at
    /// its type (RFC 8200 §4.4; RFC 5095 for type 0). Routing headers with no
    /// segments left are ignored, as the RFC says, and not reported.
    pub routing: Option<Ipv6RoutingRepr<'a>>,
    /// Offset of that routing header from the start of the IPv6 header (0 without one).
    pub routing_at: usize,
    /// The fragment header; the walk stops after it, since what follows is
    /// fragment data (the first fragment's further headers are walked again
    /// after reassembly).
    pub fragment: Option<Ipv6FragmentRepr>,
    /// Offset of the fragment header in the IPv6 payload (the unfragmentable
    /// part's length; 0 without one).
    pub fragment_at: usize,
}

impl<'a> Ipv6ExtChain<'a> {
    /// Walks the extension headers at the start of `payload` (an IPv6
    /// payload whose first header is `first`, the IPv6 Next Header) within
    /// `limits`. Options: Pad1, PadN and (in a hop-by-hop header) Router
    /// Alert are recognised; any other option is handled by its action bits.
    pub fn walk(
        first: IpProtocol,
        payload: &'a [u8],
        limits: &Ipv6ExtLimits,
    ) -> core::result::Result<Self, Ipv6ExtError> {
        let mut chain = Ipv6ExtChain {
            upper_layer: first,
            upper_offset: 0,
            upper_named_at: 6,
            header_count: 0,
            hop_by_hop: None,
            routing: None,
            routing_at: 0,
            fragment: None,
            fragment_at: 0,
        };
        // Where the Next Header field naming the current header sits (from
        // the IPv6 header's start): byte 6 of the fixed header at first.
        let mut named_at = 6usize;
        let mut at = 0usize;
        let ptr = |payload_offset: usize| u32::try_from(IPV6_HEADER_LEN + payload_offset).unwrap_or(u32::MAX);
        loop {
            let nh = chain.upper_layer;
            if !matches!(nh, IpProtocol::HopByHop | IpProtocol::Ipv6Opts | IpProtocol::Ipv6Route | IpProtocol::Ipv6Frag)
            {
                break;
            }
            if nh == IpProtocol::HopByHop && chain.header_count != 0 {
                return Err(Ipv6ExtError::HopByHopNotFirst { pointer: u32::try_from(named_at).unwrap_or(u32::MAX) });
            }
            if chain.header_count == limits.max_headers {
                return Err(Ipv6ExtError::TooManyHeaders);
            }
            chain.header_count += 1;
            let b = payload.get(at..).unwrap_or(&[]);
            let len = match nh {
                IpProtocol::HopByHop | IpProtocol::Ipv6Opts => {
                    let (repr, len) = options_header(b).map_err(|_| Ipv6ExtError::Truncated)?;
                    let hbh = nh == IpProtocol::HopByHop;
                    let mut options = 0usize;
                    let mut it = repr.iter();
                    while let Some(r) = it.next_at() {
                        let (off, opt) = r.map_err(|off| Ipv6ExtError::BadOption { pointer: ptr(at + 2 + off) })?;
                        let option_type = match opt {
                            Ipv6Option::Pad1 | Ipv6Option::PadN(_) => continue,
                            Ipv6Option::RouterAlert(_) if hbh => None,
                            Ipv6Option::RouterAlert(_) => Some(OPT_ROUTER_ALERT),
                            Ipv6Option::Unknown { option_type, .. } => Some(option_type),
                        };
                        options += 1;
                        if options > limits.max_options {
                            return Err(Ipv6ExtError::TooManyOptions);
                        }
                        if let Some(option_type) = option_type {
                            let action = Ipv6OptionAction::of(option_type);
                            if action != Ipv6OptionAction::Skip {
                                return Err(Ipv6ExtError::UnrecognizedOption {
                                    action,
                                    option_type,
                                    pointer: ptr(at + 2 + off),
                                });
                            }
                        }
                    }
                    if hbh {
                        chain.hop_by_hop = Some(repr);
                    }
                    chain.upper_layer = repr.next_header;
                    len
                }
                IpProtocol::Ipv6Route => {
                    let repr = Ipv6RoutingRepr::parse(b).map_err(|_| Ipv6ExtError::Truncated)?;
                    if repr.segments_left != 0 && chain.routing.is_none() {
                        chain.routing = Some(repr);
                        chain.routing_at = IPV6_HEADER_LEN + at;
                    }
                    chain.upper_layer = repr.next_header;
                    repr.buffer_len()
                }
                _ => {
                    let repr = Ipv6FragmentRepr::parse(b).map_err(|_| Ipv6ExtError::Truncated)?;
                    chain.fragment = Some(repr);
                    chain.fragment_at = at;
                    chain.upper_layer = repr.next_header;
                    IPV6_FRAGMENT_HEADER_LEN
                }
            };
            named_at = IPV6_HEADER_LEN + at;
            at += len;
            if at > limits.max_len {
                return Err(Ipv6ExtError::TooLong);
            }
            if chain.fragment.is_some() {
                break;
            }
        }
        chain.upper_offset = at;
        chain.upper_named_at = named_at;
        Ok(chain)
    }
}
