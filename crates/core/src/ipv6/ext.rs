//! The extension header policy of a host (RFC 8200 §4): the chain is walked
//! by the wire crate's [`Ipv6ExtChain::walk`] within [`Ipv6ExtLimits`]; this
//! module decides what each refusal costs and what the sender hears.
//!
//! | what | counter | ICMPv6 answer |
//! |---|---|---|
//! | a header runs past the packet | `drop_ipv6_ext_malformed` | none |
//! | an option runs past its header | `drop_ipv6_ext_malformed` | parameter problem 0 at the option |
//! | hop-by-hop not first | `drop_ipv6_ext_malformed` | parameter problem 1 at the Next Header naming it |
//! | unknown option, action `01` | `drop_ipv6_ext_unknown_option` | none |
//! | unknown option, action `10` | `drop_ipv6_ext_unknown_option` | parameter problem 2 at the option, multicast destination too |
//! | unknown option, action `11` | `drop_ipv6_ext_unknown_option` | parameter problem 2, unless the destination is multicast |
//! | too many headers, bytes or options | `drop_ipv6_ext_limit` | none (Linux drops these silently too) |
//! | routing header with segments left (type 0 included, RFC 5095) | `drop_ipv6_routing_header` | parameter problem 0 at its type |
//!
//! Unknown options with action `00` are skipped; routing headers with no
//! segments left are ignored, as RFC 8200 §4.4 says.

use crate::counters::Counters;
use ustack_wire::{
    Icmpv6ParamProblem, IpProtocol, Ipv6ExtChain, Ipv6ExtError, Ipv6ExtLimits, Ipv6OptionAction, IPV6_HEADER_LEN,
};

/// A parameter problem to send back: the code and the pointer (from the
/// start of the offending packet's IPv6 header). `multicast_ok` says it may
/// answer a packet sent to a multicast address (RFC 4443 §2.4 (e.3)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Problem {
    pub code: Icmpv6ParamProblem,
    pub pointer: u32,
    pub multicast_ok: bool,
}

/// What the walk decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Walk<'a> {
    /// Acceptable: the chain, offsets relative to the walked bytes.
    Accept(Ipv6ExtChain<'a>),
    /// Dropped and counted; answer with the problem when there is one.
    Refuse(Option<Problem>),
}

/// Where a walk starts: the whole IPv6 payload (`Start::PAYLOAD`), or what
/// follows a fragment header, `base` bytes into it, after `headers` headers,
/// the fragment header's Next Header field at `named_at`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Start {
    pub base: usize,
    pub headers: usize,
    pub named_at: usize,
}

impl Start {
    pub(crate) const PAYLOAD: Start = Start { base: 0, headers: 0, named_at: 6 };
}

fn ptr(p: usize) -> u32 {
    u32::try_from(p).unwrap_or(u32::MAX)
}

/// Walk the extension headers of `bytes` (the IPv6 payload from
/// `start.base`), whose first header is `first`; count any refusal.
pub(crate) fn walk<'a>(
    first: IpProtocol,
    bytes: &'a [u8],
    start: Start,
    dst_multicast: bool,
    limits: &Ipv6ExtLimits,
    counters: &mut Counters,
) -> Walk<'a> {
    let problem = |code, pointer: u32, multicast_ok| Some(Problem { code, pointer, multicast_ok });
    if first == IpProtocol::HopByHop && start.headers != 0 {
        counters.drop_ipv6_ext_malformed += 1;
        return Walk::Refuse(problem(Icmpv6ParamProblem::UnrecognizedNextHeader, ptr(start.named_at), false));
    }
    let limits = Ipv6ExtLimits {
        max_headers: limits.max_headers.saturating_sub(start.headers),
        max_len: limits.max_len.saturating_sub(start.base),
        max_options: limits.max_options,
    };
    // Pointers from the walker count from the start of `bytes` as if it
    // followed the fixed header directly.
    let shift = |p: u32| p.saturating_add(ptr(start.base));
    let chain = match Ipv6ExtChain::walk(first, bytes, &limits) {
        Ok(chain) => chain,
        Err(e) => {
            return Walk::Refuse(match e {
                Ipv6ExtError::Truncated => {
                    counters.drop_ipv6_ext_malformed += 1;
                    None
                }
                Ipv6ExtError::BadOption { pointer } => {
                    counters.drop_ipv6_ext_malformed += 1;
                    problem(Icmpv6ParamProblem::ErroneousHeaderField, shift(pointer), false)
                }
                Ipv6ExtError::HopByHopNotFirst { pointer } => {
                    counters.drop_ipv6_ext_malformed += 1;
                    problem(Icmpv6ParamProblem::UnrecognizedNextHeader, shift(pointer), false)
                }
                Ipv6ExtError::UnrecognizedOption { action, pointer, .. } => {
                    counters.drop_ipv6_ext_unknown_option += 1;
                    let code = Icmpv6ParamProblem::UnrecognizedOption;
                    match action {
                        Ipv6OptionAction::DiscardAndReport => problem(code, shift(pointer), true),
                        Ipv6OptionAction::DiscardAndReportUnlessMulticast if !dst_multicast => {
                            problem(code, shift(pointer), false)
                        }
                        _ => None,
                    }
                }
                Ipv6ExtError::TooManyHeaders | Ipv6ExtError::TooLong | Ipv6ExtError::TooManyOptions => {
                    counters.drop_ipv6_ext_limit += 1;
                    None
                }
            });
        }
    };
    if chain.routing.is_some() {
        counters.drop_ipv6_routing_header += 1;
        // RFC 8200 §4.4: point at the Routing Type field.
        let at = ptr(chain.routing_at + 2);
        return Walk::Refuse(problem(Icmpv6ParamProblem::ErroneousHeaderField, shift(at), false));
    }
    Walk::Accept(chain)
}

/// In an IPv6 payload whose chain was accepted up to a fragment header at
/// `fragment_at`: the offset from the IPv6 header's start of the Next
/// Header field that names the fragment header (6 when it comes first).
pub(crate) fn field_naming(payload: &[u8], fragment_at: usize) -> usize {
    let (mut named_at, mut at) = (6usize, 0usize);
    while at < fragment_at {
        let Some(&len) = payload.get(at + 1) else { break };
        named_at = IPV6_HEADER_LEN + at;
        at += (usize::from(len) + 1) * 8;
    }
    named_at
}

#[cfg(test)]
mod tests {
    use super::*;
    use ustack_wire::{Ipv6Option, Ipv6OptionsRepr, Ipv6RoutingRepr};

    fn options_header(next: IpProtocol, options: &[u8]) -> Vec<u8> {
        let repr = Ipv6OptionsRepr { next_header: next, options };
        let mut b = vec![0u8; repr.buffer_len()];
        repr.emit(&mut b);
        b
    }

    fn unknown(option_type: u8) -> Vec<u8> {
        let mut b = vec![0u8; 4];
        Ipv6Option::Unknown { option_type, data: &[0, 0] }.emit(&mut b);
        b
    }

    fn run(first: IpProtocol, payload: &[u8], multicast: bool) -> (Walk<'_>, Counters) {
        let mut c = Counters::default();
        let w = walk(first, payload, Start::PAYLOAD, multicast, &Ipv6ExtLimits::default(), &mut c);
        (w, c)
    }

    #[test]
    fn hop_by_hop_with_router_alert_and_skippable_options_is_accepted() {
        let mut opts = vec![5, 2, 0, 0];
        opts.extend(unknown(0x1e)); // action 00: skip
        let mut p = options_header(IpProtocol::Udp, &opts);
        p.extend_from_slice(&[0; 8]);
        let (w, c) = run(IpProtocol::HopByHop, &p, false);
        let Walk::Accept(chain) = w else { panic!("{w:?}") };
        assert_eq!((chain.upper_layer, chain.upper_offset), (IpProtocol::Udp, 16));
        assert_eq!(c.total_drops(), 0);
    }

    #[test]
    fn unknown_options_follow_their_action_bits() {
        for (t, multicast, want) in [
            (0x5e, false, None),
            (0x9e, false, Some(true)),
            (0x9e, true, Some(true)),
            (0xde, false, Some(false)),
            (0xde, true, None),
        ] {
            let p = options_header(IpProtocol::Udp, &unknown(t));
            let (w, c) = run(IpProtocol::Ipv6Opts, &p, multicast);
            assert_eq!(c.drop_ipv6_ext_unknown_option, 1);
            let got = match w {
                Walk::Refuse(p) => p.map(|p| {
                    assert_eq!((p.code, p.pointer), (Icmpv6ParamProblem::UnrecognizedOption, 42));
                    p.multicast_ok
                }),
                Walk::Accept(_) => panic!("accepted option {t:#x}"),
            };
            assert_eq!(got, want, "option {t:#x}, multicast {multicast}");
        }
    }

    #[test]
    fn routing_header_type_0_with_segments_left_is_refused_pointing_at_its_type() {
        let mut p = options_header(IpProtocol::Ipv6Route, &[]);
        let rh = Ipv6RoutingRepr { next_header: IpProtocol::Tcp, routing_type: 0, segments_left: 1, data: &[0; 20] };
        let mut b = vec![0u8; rh.buffer_len()];
        rh.emit(&mut b);
        p.extend(b);
        let (w, c) = run(IpProtocol::Ipv6Opts, &p, false);
        let want = Problem { code: Icmpv6ParamProblem::ErroneousHeaderField, pointer: 40 + 8 + 2, multicast_ok: false };
        assert_eq!(w, Walk::Refuse(Some(want)));
        assert_eq!(c.drop_ipv6_routing_header, 1);
        // No segments left: ignored.
        let rh = Ipv6RoutingRepr { segments_left: 0, ..rh };
        let mut b = vec![0u8; rh.buffer_len()];
        rh.emit(&mut b);
        assert!(matches!(run(IpProtocol::Ipv6Route, &b, false).0, Walk::Accept(_)));
    }

    #[test]
    fn long_chains_are_bounded_and_hop_by_hop_must_come_first() {
        let mut p = Vec::new();
        for _ in 0..20 {
            p.extend(options_header(IpProtocol::Ipv6Opts, &[]));
        }
        let (w, c) = run(IpProtocol::Ipv6Opts, &p, false);
        assert_eq!((w, c.drop_ipv6_ext_limit), (Walk::Refuse(None), 1));
        let mut p = options_header(IpProtocol::HopByHop, &[]);
        p.extend(options_header(IpProtocol::Udp, &[]));
        let (w, c) = run(IpProtocol::Ipv6Opts, &p, false);
        let want = Problem { code: Icmpv6ParamProblem::UnrecognizedNextHeader, pointer: 40, multicast_ok: false };
        assert_eq!((w, c.drop_ipv6_ext_malformed), (Walk::Refuse(Some(want)), 1));
        // After a fragment header, too.
        let mut c = Counters::default();
        let start = Start { base: 8, headers: 1, named_at: 40 };
        let w = walk(IpProtocol::HopByHop, &p, start, false, &Ipv6ExtLimits::default(), &mut c);
        assert!(matches!(w, Walk::Refuse(Some(Problem { pointer: 40, .. }))));
        // Truncated: dropped without an answer.
        let (w, c) = run(IpProtocol::Ipv6Opts, &p[..4], false);
        assert_eq!((w, c.drop_ipv6_ext_malformed), (Walk::Refuse(None), 1));
    }

    #[test]
    fn the_field_naming_a_fragment_header() {
        let mut p = options_header(IpProtocol::Ipv6Opts, &[]);
        p.extend(options_header(IpProtocol::Ipv6Frag, &[0; 8]));
        assert_eq!(field_naming(&p, p.len()), 48);
        assert_eq!(field_naming(&p, 0), 6);
    }
}
