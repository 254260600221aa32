//! Neighbour discovery messages (RFC 4861 §4): router solicitation and
//! advertisement, neighbour solicitation and advertisement, redirect, with
//! the options a host uses (source/target link-layer address, prefix
//! information, MTU, redirected header). They are ICMPv6 messages: parse and
//! emit them through [`crate::Icmpv6Repr`], which owns the checksum.
//!
//! Options are validated as RFC 4861 §4.6 says (a zero length invalidates the
//! message; every option must fit); unknown options are skipped (§6.1), and so
//! are known ones whose length is not the one the RFC gives.

use core::fmt;
use std::net::Ipv6Addr;

use crate::bytes::{get_ipv6, get_u16, get_u32, set_u16, set_u32};
use crate::icmpv6::{NEIGHBOR_ADVERT, NEIGHBOR_SOLICIT, REDIRECT, ROUTER_ADVERT, ROUTER_SOLICIT};
use crate::{Error, EthernetAddress, Result};

const OPT_SOURCE_LLADDR: u8 = 1;
const OPT_TARGET_LLADDR: u8 = 2;
const OPT_PREFIX_INFO: u8 = 3;
const OPT_REDIRECTED_HEADER: u8 = 4;
const OPT_MTU: u8 = 5;

const RA_MANAGED: u8 = 0x80;
const RA_OTHER: u8 = 0x40;
const NA_ROUTER: u8 = 0x80;
const NA_SOLICITED: u8 = 0x40;
const NA_OVERRIDE: u8 = 0x20;
const PREFIX_ON_LINK: u8 = 0x80;
const PREFIX_AUTONOMOUS: u8 = 0x40;

/// Length of a prefix information option (RFC 4861 §4.6.2).
const PREFIX_INFO_LEN: usize = 32;
/// Redirected header option data: at most 255 × 8 bytes less its 8-byte head.
const MAX_REDIRECTED_LEN: usize = 255 * 8 - 8;

/// Walks an option area: `(type, body)` with body the bytes after type and
/// length. `Err` on a zero length or an option past the end.
#[derive(Clone, Debug)]
struct RawOptions<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for RawOptions<'a> {
    type Item = Result<(u8, &'a [u8])>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let r = match self.rest {
            [t, len, ..] if *len != 0 && usize::from(*len) * 8 <= self.rest.len() => {
                let (opt, rest) = self.rest.split_at(usize::from(*len) * 8);
                self.rest = rest;
                Ok((*t, &opt[2..]))
            }
            _ => Err(Error::Malformed),
        };
        if r.is_err() {
            self.rest = &[];
        }
        Some(r)
    }
}

/// One prefix information option (RFC 4861 §4.6.2): what SLAAC (RFC 4862)
/// and the on-link determination read from a router advertisement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NdiscPrefixInfo {
    /// Prefix length in bits (0 to 128).
    pub prefix_len: u8,
    /// The L flag: the prefix is on-link.
    pub on_link: bool,
    /// The A flag: the prefix may be used for stateless address autoconfiguration.
    pub autonomous: bool,
    /// Valid lifetime in seconds (0xffffffff: infinity).
    pub valid_lifetime: u32,
    /// Preferred lifetime in seconds (0xffffffff: infinity).
    pub preferred_lifetime: u32,
    /// The prefix (bits past `prefix_len` are as sent).
    pub prefix: Ipv6Addr,
}

impl NdiscPrefixInfo {
    /// Reads the 30-byte body of a prefix option; `None` for a prefix length over 128.
    fn parse(body: &[u8]) -> Option<Self> {
        let prefix_len = body[0];
        (prefix_len <= 128).then(|| NdiscPrefixInfo {
            prefix_len,
            on_link: body[1] & PREFIX_ON_LINK != 0,
            autonomous: body[1] & PREFIX_AUTONOMOUS != 0,
            valid_lifetime: get_u32(body, 2),
            preferred_lifetime: get_u32(body, 6),
            prefix: get_ipv6(body, 14),
        })
    }
    fn emit(&self, b: &mut [u8]) {
        b[0] = OPT_PREFIX_INFO;
        b[1] = (PREFIX_INFO_LEN / 8) as u8;
        b[2] = self.prefix_len;
        b[3] = (u8::from(self.on_link) * PREFIX_ON_LINK) | (u8::from(self.autonomous) * PREFIX_AUTONOMOUS);
        set_u32(b, 4, self.valid_lifetime);
        set_u32(b, 8, self.preferred_lifetime);
        b[12..16].fill(0);
        b[16..32].copy_from_slice(&self.prefix.octets());
    }
}

/// The prefix information options of a router advertisement, without
/// allocating: read in place from a parsed message, or a caller's list to emit.
#[derive(Clone, Copy)]
pub enum NdiscPrefixes<'a> {
    /// The option area of a parsed (validated) message; only prefix options
    /// of the right length and a prefix length ≤ 128 are yielded.
    Options(&'a [u8]),
    /// Prefixes to emit.
    List(&'a [NdiscPrefixInfo]),
}

impl<'a> NdiscPrefixes<'a> {
    /// No prefixes.
    pub const NONE: NdiscPrefixes<'static> = NdiscPrefixes::List(&[]);

    /// The prefixes, in order.
    pub fn iter(&self) -> impl Iterator<Item = NdiscPrefixInfo> + 'a {
        let (opts, list): (&'a [u8], &'a [NdiscPrefixInfo]) = match *self {
            NdiscPrefixes::Options(o) => (o, &[]),
            NdiscPrefixes::List(l) => (&[], l),
        };
        let from_options = RawOptions { rest: opts }.map_while(|r| r.ok()).filter_map(|(t, body)| {
            (t == OPT_PREFIX_INFO && body.len() == PREFIX_INFO_LEN - 2).then(|| NdiscPrefixInfo::parse(body)).flatten()
        });
        from_options.chain(list.iter().copied())
    }
}

impl PartialEq for NdiscPrefixes<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for NdiscPrefixes<'_> {}

impl fmt::Debug for NdiscPrefixes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Flags of a neighbour advertisement (RFC 4861 §4.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NdiscNeighborFlags {
    /// R: the sender is a router.
    pub router: bool,
    /// S: sent in response to a solicitation.
    pub solicited: bool,
    /// O: the advertisement should override a cached link-layer address.
    pub override_: bool,
}

/// A parsed neighbour discovery message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NdiscRepr<'a> {
    /// Router solicitation (type 133).
    RouterSolicit {
        /// Source link-layer address option.
        lladdr: Option<EthernetAddress>,
    },
    /// Router advertisement (type 134).
    RouterAdvert {
        /// Hop limit to use (0: unspecified).
        hop_limit: u8,
        /// M: addresses are available via DHCPv6.
        managed: bool,
        /// O: other configuration is available via DHCPv6.
        other_config: bool,
        /// Lifetime as a default router, in seconds (0: not a default router).
        router_lifetime: u16,
        /// Reachable time in milliseconds (0: unspecified).
        reachable_time: u32,
        /// Retransmission timer in milliseconds (0: unspecified).
        retrans_time: u32,
        /// Source link-layer address option.
        lladdr: Option<EthernetAddress>,
        /// MTU option.
        mtu: Option<u32>,
        /// Prefix information options.
        prefixes: NdiscPrefixes<'a>,
    },
    /// Neighbour solicitation (type 135).
    NeighborSolicit {
        /// The address being resolved (or checked for duplicates).
        target_addr: Ipv6Addr,
        /// Source link-layer address option (absent in DAD probes).
        lladdr: Option<EthernetAddress>,
    },
    /// Neighbour advertisement (type 136).
    NeighborAdvert {
        /// R, S and O.
        flags: NdiscNeighborFlags,
        /// The address advertised.
        target_addr: Ipv6Addr,
        /// Target link-layer address option.
        lladdr: Option<EthernetAddress>,
    },
    /// Redirect (type 137).
    Redirect {
        /// The better first hop.
        target_addr: Ipv6Addr,
        /// The destination redirected.
        dest_addr: Ipv6Addr,
        /// Target link-layer address option.
        lladdr: Option<EthernetAddress>,
        /// Data of the redirected header option: the start of the packet that
        /// caused the redirect (padding included, as on the wire; empty without one).
        redirected: &'a [u8],
    },
}

/// Where the options start, per message type.
fn options_at(msg_type: u8) -> usize {
    match msg_type {
        ROUTER_SOLICIT => 8,
        ROUTER_ADVERT => 16,
        NEIGHBOR_SOLICIT | NEIGHBOR_ADVERT => 24,
        _ => 40,
    }
}

impl<'a> NdiscRepr<'a> {
    /// Parses a whole ICMPv6 message of types 133–137 (the checksum is
    /// [`crate::Icmpv6Repr::parse`]'s business). A code other than 0, a
    /// message shorter than its fixed part, or a malformed option is an
    /// error (RFC 4861 §6.1, §7.1, §8.1). Hop limit 255, which proves the
    /// sender is on-link, is checked by the stack, which sees the IPv6 header.
    pub fn parse(b: &'a [u8]) -> Result<Self> {
        let (&t, &code) = match b {
            [t, code, ..] => (t, code),
            _ => return Err(Error::Truncated),
        };
        if !(ROUTER_SOLICIT..=REDIRECT).contains(&t) {
            return Err(Error::Unsupported);
        }
        if code != 0 {
            return Err(Error::Malformed);
        }
        let at = options_at(t);
        let opts = b.get(at..).ok_or(Error::Truncated)?;
        let (mut source, mut target, mut mtu, mut redirected) = (None, None, None, &[][..]);
        for opt in (RawOptions { rest: opts }) {
            let (kind, body) = opt?;
            match (kind, body.len()) {
                (OPT_SOURCE_LLADDR, 6) => source = EthernetAddress::from_bytes(body),
                (OPT_TARGET_LLADDR, 6) => target = EthernetAddress::from_bytes(body),
                (OPT_MTU, 6) => mtu = Some(get_u32(body, 2)),
                (OPT_REDIRECTED_HEADER, _) => redirected = &body[6..],
                _ => {}
            }
        }
        Ok(match t {
            ROUTER_SOLICIT => NdiscRepr::RouterSolicit { lladdr: source },
            ROUTER_ADVERT => NdiscRepr::RouterAdvert {
                hop_limit: b[4],
                managed: b[5] & RA_MANAGED != 0,
                other_config: b[5] & RA_OTHER != 0,
                router_lifetime: get_u16(b, 6),
                reachable_time: get_u32(b, 8),
                retrans_time: get_u32(b, 12),
                lladdr: source,
                mtu,
                prefixes: NdiscPrefixes::Options(opts),
            },
            NEIGHBOR_SOLICIT => NdiscRepr::NeighborSolicit { target_addr: get_ipv6(b, 8), lladdr: source },
            NEIGHBOR_ADVERT => NdiscRepr::NeighborAdvert {
                flags: NdiscNeighborFlags {
                    router: b[4] & NA_ROUTER != 0,
                    solicited: b[4] & NA_SOLICITED != 0,
                    override_: b[4] & NA_OVERRIDE != 0,
                },
                target_addr: get_ipv6(b, 8),
                lladdr: target,
            },
            _ => NdiscRepr::Redirect {
                target_addr: get_ipv6(b, 8),
                dest_addr: get_ipv6(b, 24),
                lladdr: target,
                redirected,
            },
        })
    }

    fn msg_type(&self) -> u8 {
        match self {
            NdiscRepr::RouterSolicit { .. } => ROUTER_SOLICIT,
            NdiscRepr::RouterAdvert { .. } => ROUTER_ADVERT,
            NdiscRepr::NeighborSolicit { .. } => NEIGHBOR_SOLICIT,
            NdiscRepr::NeighborAdvert { .. } => NEIGHBOR_ADVERT,
            NdiscRepr::Redirect { .. } => REDIRECT,
        }
    }

    /// The whole ICMPv6 message's length.
    pub fn buffer_len(&self) -> usize {
        let ll = |l: &Option<EthernetAddress>| if l.is_some() { 8 } else { 0 };
        options_at(self.msg_type())
            + match self {
                NdiscRepr::RouterSolicit { lladdr }
                | NdiscRepr::NeighborSolicit { lladdr, .. }
                | NdiscRepr::NeighborAdvert { lladdr, .. } => ll(lladdr),
                NdiscRepr::RouterAdvert { lladdr, mtu, prefixes, .. } => {
                    ll(lladdr) + if mtu.is_some() { 8 } else { 0 } + PREFIX_INFO_LEN * prefixes.iter().count()
                }
                NdiscRepr::Redirect { lladdr, redirected, .. } => {
                    ll(lladdr) + if redirected.is_empty() { 0 } else { 8 + redirected.len().div_ceil(8) * 8 }
                }
            }
    }

    /// Writes the whole ICMPv6 message but its checksum. Panics if `b` is
    /// shorter than `buffer_len()`, or a redirected header's data is over
    /// 2032 bytes.
    pub fn emit(&self, b: &mut [u8]) {
        let t = self.msg_type();
        b[0] = t;
        b[1] = 0;
        b[2..options_at(t)].fill(0);
        let mut at = options_at(t);
        let lladdr = |b: &mut [u8], at: &mut usize, kind: u8, l: Option<EthernetAddress>| {
            if let Some(l) = l {
                b[*at] = kind;
                b[*at + 1] = 1;
                b[*at + 2..*at + 8].copy_from_slice(&l.0);
                *at += 8;
            }
        };
        match *self {
            NdiscRepr::RouterSolicit { lladdr: l } => lladdr(b, &mut at, OPT_SOURCE_LLADDR, l),
            NdiscRepr::RouterAdvert {
                hop_limit,
                managed,
                other_config,
                router_lifetime,
                reachable_time,
                retrans_time,
                lladdr: l,
                mtu,
                prefixes,
            } => {
                b[4] = hop_limit;
                b[5] = (u8::from(managed) * RA_MANAGED) | (u8::from(other_config) * RA_OTHER);
                set_u16(b, 6, router_lifetime);
                set_u32(b, 8, reachable_time);
                set_u32(b, 12, retrans_time);
                lladdr(b, &mut at, OPT_SOURCE_LLADDR, l);
                if let Some(mtu) = mtu {
                    b[at..at + 4].copy_from_slice(&[OPT_MTU, 1, 0, 0]);
                    set_u32(b, at + 4, mtu);
                    at += 8;
                }
                for p in prefixes.iter() {
                    p.emit(&mut b[at..at + PREFIX_INFO_LEN]);
                    at += PREFIX_INFO_LEN;
                }
            }
            NdiscRepr::NeighborSolicit { target_addr, lladdr: l } => {
                b[8..24].copy_from_slice(&target_addr.octets());
                lladdr(b, &mut at, OPT_SOURCE_LLADDR, l);
            }
            NdiscRepr::NeighborAdvert { flags, target_addr, lladdr: l } => {
                b[4] = (u8::from(flags.router) * NA_ROUTER)
                    | (u8::from(flags.solicited) * NA_SOLICITED)
                    | (u8::from(flags.override_) * NA_OVERRIDE);
                b[8..24].copy_from_slice(&target_addr.octets());
                lladdr(b, &mut at, OPT_TARGET_LLADDR, l);
            }
            NdiscRepr::Redirect { target_addr, dest_addr, lladdr: l, redirected } => {
                b[8..24].copy_from_slice(&target_addr.octets());
                b[24..40].copy_from_slice(&dest_addr.octets());
                lladdr(b, &mut at, OPT_TARGET_LLADDR, l);
                if !redirected.is_empty() {
                    assert!(
                        redirected.len() <= MAX_REDIRECTED_LEN,
                        "a redirected header option holds at most 2032 bytes"
                    );
                    let len = 8 + redirected.len().div_ceil(8) * 8;
                    b[at..at + 8].copy_from_slice(&[OPT_REDIRECTED_HEADER, (len / 8) as u8, 0, 0, 0, 0, 0, 0]);
                    b[at + 8..at + 8 + redirected.len()].copy_from_slice(redirected);
                    b[at + 8 + redirected.len()..at + len].fill(0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_with_zero_length_or_past_the_end_invalidate_the_message() {
        // A neighbour solicitation with a source link-layer option.
        let mut b = [0u8; 32];
        b[0] = NEIGHBOR_SOLICIT;
        b[24..32].copy_from_slice(&[1, 1, 2, 0, 0, 0, 0, 1]);
        assert!(matches!(NdiscRepr::parse(&b).unwrap(), NdiscRepr::NeighborSolicit { lladdr: Some(_), .. }));
        b[25] = 0;
        assert_eq!(NdiscRepr::parse(&b).unwrap_err(), Error::Malformed);
        b[25] = 2;
        assert_eq!(NdiscRepr::parse(&b).unwrap_err(), Error::Malformed);
        b[1] = 1;
        b[25] = 1;
        assert_eq!(NdiscRepr::parse(&b).unwrap_err(), Error::Malformed, "code must be 0");
        b[1] = 0;
        assert_eq!(NdiscRepr::parse(&b[..23]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn router_advert_reads_every_prefix_in_place() {
        let prefixes = [
            NdiscPrefixInfo {
                prefix_len: 64,
                on_link: true,
                autonomous: true,
                valid_lifetime: 86400,
                preferred_lifetime: 14400,
                prefix: "2001:db8:1::".parse().unwrap(),
            },
            NdiscPrefixInfo {
                prefix_len: 48,
                on_link: false,
                autonomous: true,
                valid_lifetime: u32::MAX,
                preferred_lifetime: 0,
                prefix: "2001:db8:2::".parse().unwrap(),
            },
        ];
        let repr = NdiscRepr::RouterAdvert {
            hop_limit: 64,
            managed: false,
            other_config: true,
            router_lifetime: 1800,
            reachable_time: 0,
            retrans_time: 0,
            lladdr: Some(EthernetAddress([2, 0, 0, 0, 0, 1])),
            mtu: Some(1500),
            prefixes: NdiscPrefixes::List(&prefixes),
        };
        let mut b = vec![0u8; repr.buffer_len()];
        assert_eq!(b.len(), 16 + 8 + 8 + 64);
        repr.emit(&mut b);
        let parsed = NdiscRepr::parse(&b).unwrap();
        assert_eq!(parsed, repr);
        let NdiscRepr::RouterAdvert { prefixes: p, .. } = parsed else { unreachable!() };
        assert!(matches!(p, NdiscPrefixes::Options(_)));
        assert_eq!(p.iter().collect::<Vec<_>>(), prefixes);
    }
}
