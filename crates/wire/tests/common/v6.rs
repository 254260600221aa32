//! Strategies for the IPv6-family tests.

use proptest::prelude::*;
use std::net::Ipv6Addr;
use ustack_wire::*;

pub fn ip6() -> impl Strategy<Value = Ipv6Addr> {
    any::<[u8; 16]>().prop_map(Ipv6Addr::from)
}

pub fn ipv6(next_header: IpProtocol, payload_len: usize) -> impl Strategy<Value = Ipv6Repr> {
    (ip6(), ip6(), any::<u8>(), any::<u8>(), 0u32..(1 << 20)).prop_map(
        move |(src_addr, dst_addr, hop_limit, traffic_class, flow_label)| Ipv6Repr {
            src_addr,
            dst_addr,
            next_header,
            payload_len,
            hop_limit,
            traffic_class,
            flow_label,
        },
    )
}

/// An option with owned data; `option()` borrows it.
#[derive(Clone, Debug)]
pub enum OptionCase {
    Pad1,
    PadN(u8),
    RouterAlert(u16),
    /// A type that is neither padding nor a 2-byte router alert, with the
    /// action bits "skip" so that a chain carrying it walks.
    Unknown(u8, Vec<u8>),
}

impl OptionCase {
    pub fn option(&self) -> Ipv6Option<'_> {
        match self {
            OptionCase::Pad1 => Ipv6Option::Pad1,
            OptionCase::PadN(n) => Ipv6Option::PadN(*n),
            OptionCase::RouterAlert(v) => Ipv6Option::RouterAlert(*v),
            OptionCase::Unknown(t, d) => Ipv6Option::Unknown { option_type: *t, data: d },
        }
    }
}

pub fn option_case() -> impl Strategy<Value = OptionCase> {
    prop_oneof![
        Just(OptionCase::Pad1),
        (0u8..8).prop_map(OptionCase::PadN),
        any::<u16>().prop_map(OptionCase::RouterAlert),
        ((2u8..0x40).prop_filter("not router alert", |t| *t != 5), proptest::collection::vec(any::<u8>(), 0..12))
            .prop_map(|(t, d)| OptionCase::Unknown(t, d)),
    ]
}

/// An option area: at most `max` options other than padding, so a chain of
/// them stays within the default limits.
pub fn option_area(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(option_case(), 0..=max).prop_map(|opts| {
        let mut area = Vec::new();
        for o in &opts {
            let o = o.option();
            let at = area.len();
            area.resize(at + o.buffer_len(), 0);
            o.emit(&mut area[at..]);
        }
        area
    })
}

/// One extension header of a generated chain (its next header is filled in
/// when the chain is written).
#[derive(Clone, Debug)]
pub enum ExtCase {
    HopByHop(Vec<u8>),
    DestOpts(Vec<u8>),
    Routing { routing_type: u8, segments_left: u8, data: Vec<u8> },
    Fragment { offset: u16, more: bool, ident: u32 },
}

impl ExtCase {
    pub fn protocol(&self) -> IpProtocol {
        match self {
            ExtCase::HopByHop(_) => IpProtocol::HopByHop,
            ExtCase::DestOpts(_) => IpProtocol::Ipv6Opts,
            ExtCase::Routing { .. } => IpProtocol::Ipv6Route,
            ExtCase::Fragment { .. } => IpProtocol::Ipv6Frag,
        }
    }

    /// Appends the header, naming `next` as the one after it.
    pub fn write(&self, next: IpProtocol, out: &mut Vec<u8>) {
        let at = out.len();
        match self {
            ExtCase::HopByHop(o) | ExtCase::DestOpts(o) => {
                let r = Ipv6OptionsRepr { next_header: next, options: o };
                out.resize(at + r.buffer_len(), 0);
                r.emit(&mut out[at..]);
            }
            ExtCase::Routing { routing_type, segments_left, data } => {
                let r = Ipv6RoutingRepr {
                    next_header: next,
                    routing_type: *routing_type,
                    segments_left: *segments_left,
                    data,
                };
                out.resize(at + r.buffer_len(), 0);
                r.emit(&mut out[at..]);
            }
            ExtCase::Fragment { offset, more, ident } => {
                let r =
                    Ipv6FragmentRepr { next_header: next, frag_offset: offset * 8, more_frags: *more, ident: *ident };
                out.resize(at + r.buffer_len(), 0);
                r.emit(&mut out[at..]);
            }
        }
    }
}

pub fn routing_case() -> impl Strategy<Value = ExtCase> {
    (any::<u8>(), any::<u8>(), (0usize..5).prop_flat_map(|words| proptest::collection::vec(any::<u8>(), 4 + 8 * words)))
        .prop_map(|(routing_type, segments_left, data)| ExtCase::Routing { routing_type, segments_left, data })
}

pub fn fragment_case() -> impl Strategy<Value = ExtCase> {
    (0u16..8192, any::<bool>(), any::<u32>()).prop_map(|(offset, more, ident)| ExtCase::Fragment {
        offset,
        more,
        ident,
    })
}

/// A chain: hop-by-hop first or not, then destination options and routing
/// headers in any order, then a fragment header or not. Written, it stays
/// within the default limits (at most 6 headers, under 1024 bytes).
pub fn ext_chain() -> impl Strategy<Value = Vec<ExtCase>> {
    (
        proptest::option::of(option_area(4).prop_map(ExtCase::HopByHop)),
        proptest::collection::vec(prop_oneof![option_area(4).prop_map(ExtCase::DestOpts), routing_case()], 0..4),
        proptest::option::of(fragment_case()),
    )
        .prop_map(|(hbh, middle, frag)| hbh.into_iter().chain(middle).chain(frag).collect())
}

/// Writes a chain followed by `upper`; returns the bytes and the first next header.
pub fn write_chain(chain: &[ExtCase], upper: IpProtocol) -> (Vec<u8>, IpProtocol) {
    let mut out = Vec::new();
    for (i, h) in chain.iter().enumerate() {
        let next = chain.get(i + 1).map_or(upper, |n| n.protocol());
        h.write(next, &mut out);
    }
    (out, chain.first().map_or(upper, |h| h.protocol()))
}

pub fn prefix_info() -> impl Strategy<Value = NdiscPrefixInfo> {
    (0u8..=128, any::<bool>(), any::<bool>(), any::<u32>(), any::<u32>(), ip6()).prop_map(
        |(prefix_len, on_link, autonomous, valid_lifetime, preferred_lifetime, prefix)| NdiscPrefixInfo {
            prefix_len,
            on_link,
            autonomous,
            valid_lifetime,
            preferred_lifetime,
            prefix,
        },
    )
}
