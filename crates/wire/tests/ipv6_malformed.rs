//! Hostile IPv6 input: random bytes and mutations of valid packets never
//! panic a parser or loop, and whatever parses emits back to the same value
//! (the checks the `ipv6_parse` fuzz target runs); and each malformed case
//! by name: truncated headers, lying lengths, too many or too long
//! extension headers, misplaced hop-by-hop, bad and unrecognised options,
//! routing type 0, NDP options of length zero, MLD counts that lie.

mod common;

use common::ipv6_check::check_ipv6_bytes;
use common::v6::*;
use proptest::prelude::*;
use std::net::Ipv6Addr;
use ustack_wire::*;

const SRC: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
const DST: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);

/// A whole IPv6 packet: header, `ext` as extension headers naming `first`, then `upper`.
fn packet(first: IpProtocol, ext: &[u8], upper: &[u8]) -> Vec<u8> {
    let repr = Ipv6Repr {
        src_addr: SRC,
        dst_addr: DST,
        next_header: first,
        payload_len: ext.len() + upper.len(),
        hop_limit: 64,
        traffic_class: 0,
        flow_label: 0,
    };
    let mut b = vec![0u8; repr.buffer_len()];
    repr.emit(&mut Ipv6Packet::new_unchecked(&mut b[..]));
    b[IPV6_HEADER_LEN..IPV6_HEADER_LEN + ext.len()].copy_from_slice(ext);
    b[IPV6_HEADER_LEN + ext.len()..].copy_from_slice(upper);
    b
}

fn walk(first: IpProtocol, ext: &[u8]) -> std::result::Result<Ipv6ExtChain<'_>, Ipv6ExtError> {
    Ipv6ExtChain::walk(first, ext, &Ipv6ExtLimits::default())
}

/// A valid packet to mutate: a chain, then an ICMPv6 echo or an NDP message.
fn valid_packet() -> impl Strategy<Value = Vec<u8>> {
    (ext_chain(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..32), ip6()).prop_map(
        |(chain, echo, data, target)| {
            let repr = if echo {
                Icmpv6Repr::EchoRequest { ident: 1, seq_no: 2, data: &data }
            } else {
                Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
                    target_addr: target,
                    lladdr: Some(EthernetAddress([2, 0, 0, 0, 0, 1])),
                })
            };
            let mut icmp = vec![0u8; repr.buffer_len()];
            repr.emit(&mut Icmpv6Packet::new_unchecked(&mut icmp[..]), SRC, DST, ChecksumMode::Verify);
            let (ext, first) = write_chain(&chain, IpProtocol::Icmpv6);
            packet(first, &ext, &icmp)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        check_ipv6_bytes(&data);
    }

    #[test]
    fn typed_random_messages_never_panic(t in prop_oneof![Just(1u8), Just(2), Just(3), Just(4), Just(128), Just(129),
                                                           Just(130), 133u8..=137, Just(143)],
                                         code in prop_oneof![Just(0u8), any::<u8>()],
                                         rest in proptest::collection::vec(any::<u8>(), 0..200)) {
        // Random bodies behind real type bytes reach the NDP and MLD parsers.
        let mut data = vec![t, code];
        data.extend_from_slice(&rest);
        check_ipv6_bytes(&data);
    }

    #[test]
    fn mutated_valid_packets_never_panic(p in valid_packet(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
                                         cut in any::<usize>()) {
        check_ipv6_bytes(&p);
        let mut m = p.clone();
        for (at, v) in flips {
            let n = m.len();
            m[at % n] = v;
        }
        check_ipv6_bytes(&m);
        check_ipv6_bytes(&m[..cut % (m.len() + 1)]);
        check_ipv6_bytes(&p[IPV6_HEADER_LEN..]);
    }
}

#[test]
fn truncated_and_lying_lengths() {
    let p = packet(IpProtocol::Ipv6NoNxt, &[], &[0; 8]);
    for n in 0..IPV6_HEADER_LEN {
        assert_eq!(Ipv6Packet::new_checked(&p[..n]).unwrap_err(), Error::Truncated, "{n} bytes");
    }
    // Payload length says 8, only 7 are there.
    assert_eq!(Ipv6Packet::new_checked(&p[..p.len() - 1]).unwrap_err(), Error::Truncated);
    let mut lying = p.clone();
    lying[4..6].copy_from_slice(&9u16.to_be_bytes());
    assert_eq!(Ipv6Packet::new_checked(&lying[..]).unwrap_err(), Error::Truncated);
    lying[4..6].copy_from_slice(&0xffffu16.to_be_bytes());
    assert_eq!(Ipv6Packet::new_checked(&lying[..]).unwrap_err(), Error::Truncated);
    // An extension header whose length field runs past the payload.
    let hbh = [59u8, 1, 1, 4, 0, 0, 0, 0];
    assert_eq!(walk(IpProtocol::HopByHop, &hbh).unwrap_err(), Ipv6ExtError::Truncated);
    assert_eq!(Ipv6OptionsRepr::parse(&hbh).unwrap_err(), Error::Truncated);
    assert_eq!(walk(IpProtocol::Ipv6Frag, &[17, 0, 0, 0, 0, 0, 0]).unwrap_err(), Ipv6ExtError::Truncated);
    assert_eq!(walk(IpProtocol::Ipv6Route, &[17]).unwrap_err(), Ipv6ExtError::Truncated);
    assert_eq!(Error::from(Ipv6ExtError::Truncated), Error::Truncated);
    // The version is checked.
    let mut v4 = p.clone();
    v4[0] = 0x45;
    assert_eq!(Ipv6Packet::new_checked(&v4[..]).unwrap_err(), Error::Malformed);
}

/// `n` destination options headers of 8 bytes each (PadN), then no next header.
fn dest_opts_chain(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..n {
        let next = if i + 1 == n { 59 } else { 60 };
        v.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    v
}

#[test]
fn too_many_or_too_long_extension_headers() {
    let limits = Ipv6ExtLimits::default();
    let ok = dest_opts_chain(limits.max_headers);
    let chain = walk(IpProtocol::Ipv6Opts, &ok).unwrap();
    assert_eq!((chain.header_count, chain.upper_layer, chain.upper_offset), (8, IpProtocol::Ipv6NoNxt, 64));
    let too_many = dest_opts_chain(limits.max_headers + 1);
    assert_eq!(walk(IpProtocol::Ipv6Opts, &too_many).unwrap_err(), Ipv6ExtError::TooManyHeaders);
    // A long chain is refused after `max_headers` headers, however long the packet.
    let flood = dest_opts_chain(5000);
    assert_eq!(walk(IpProtocol::Ipv6Opts, &flood).unwrap_err(), Ipv6ExtError::TooManyHeaders);
    // Two 2048-byte headers pass the count but not the length.
    let mut long = vec![60u8, 255, 1, 255 - 1];
    long.resize(2048, 0);
    long.extend_from_slice(&[59, 255, 1, 254]);
    long.resize(4096, 0);
    assert_eq!(walk(IpProtocol::Ipv6Opts, &long).unwrap_err(), Ipv6ExtError::TooLong);
    let relaxed = Ipv6ExtLimits { max_len: 4096, ..limits };
    assert_eq!(Ipv6ExtChain::walk(IpProtocol::Ipv6Opts, &long, &relaxed).unwrap().upper_offset, 4096);
    // Nine router alerts in one header: more options than allowed.
    let mut many = vec![59u8, 4];
    for _ in 0..9 {
        many.extend_from_slice(&[5, 2, 0, 0]);
    }
    many.resize(40, 0);
    assert_eq!(walk(IpProtocol::HopByHop, &many).unwrap_err(), Ipv6ExtError::TooManyOptions);
    assert_eq!(Error::from(Ipv6ExtError::TooManyOptions), Error::Malformed);
}

#[test]
fn hop_by_hop_must_come_first() {
    // Destination options naming a hop-by-hop header: the pointer is that
    // header's Next Header field, byte 40.
    let mut chain = vec![0u8, 0, 1, 4, 0, 0, 0, 0];
    chain.extend_from_slice(&[59, 0, 1, 4, 0, 0, 0, 0]);
    assert_eq!(walk(IpProtocol::Ipv6Opts, &chain).unwrap_err(), Ipv6ExtError::HopByHopNotFirst { pointer: 40 });
    // Two hop-by-hop headers: the second is named at byte 40 too.
    chain[0] = 0;
    assert_eq!(walk(IpProtocol::HopByHop, &chain).unwrap_err(), Ipv6ExtError::HopByHopNotFirst { pointer: 40 });
}

#[test]
fn options_by_their_action_bits() {
    // Option at payload offset 2 = packet offset 42.
    let with = |t: u8| [59u8, 0, t, 2, 0, 0, 1, 0];
    assert_eq!(walk(IpProtocol::Ipv6Opts, &with(0x1e)).unwrap().upper_layer, IpProtocol::Ipv6NoNxt);
    for (t, action) in [
        (0x5e, Ipv6OptionAction::Discard),
        (0x9e, Ipv6OptionAction::DiscardAndReport),
        (0xde, Ipv6OptionAction::DiscardAndReportUnlessMulticast),
        (0xc2, Ipv6OptionAction::DiscardAndReportUnlessMulticast), // Jumbo Payload: not supported
    ] {
        assert_eq!(
            walk(IpProtocol::Ipv6Opts, &with(t)).unwrap_err(),
            Ipv6ExtError::UnrecognizedOption { action, option_type: t, pointer: 42 },
            "option {t:#04x}"
        );
        assert_eq!(Ipv6OptionAction::of(t), action);
    }
    // Router Alert is understood in a hop-by-hop header.
    let ra = [59u8, 0, 5, 2, 0, 0, 1, 0];
    let chain = walk(IpProtocol::HopByHop, &ra).unwrap();
    assert!(chain.hop_by_hop.unwrap().iter().any(|o| o == Ipv6Option::RouterAlert(IPV6_ROUTER_ALERT_MLD)));
    // An option whose length runs past its header: pointer at the option.
    let bad = [59u8, 0, 1, 0, 0x1e, 9, 0, 0];
    assert_eq!(walk(IpProtocol::Ipv6Opts, &bad).unwrap_err(), Ipv6ExtError::BadOption { pointer: 44 });
    assert_eq!(Ipv6OptionsRepr::parse(&bad).unwrap_err(), Error::Malformed);
    // A type byte with no room for its length.
    let cut = [59u8, 0, 0, 0, 0, 0, 0, 0x1e];
    assert_eq!(walk(IpProtocol::Ipv6Opts, &cut).unwrap_err(), Ipv6ExtError::BadOption { pointer: 47 });
}

#[test]
fn routing_type_0_is_reported_and_segments_left_0_ignored() {
    let rh0 = |segments_left: u8| {
        let mut v = vec![59u8, 2, 0, segments_left, 0, 0, 0, 0];
        v.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v
    };
    let mut chain = vec![43u8, 0, 1, 4, 0, 0, 0, 0]; // destination options first
    chain.extend_from_slice(&rh0(1));
    let walked = walk(IpProtocol::Ipv6Opts, &chain).unwrap();
    let r = walked.routing.expect("a routing header with segments left is reported");
    assert!(r.is_type0());
    assert_eq!(walked.routing_at, 48);
    assert_eq!(walked.upper_layer, IpProtocol::Ipv6NoNxt);
    // Its type field, the pointer of the Parameter Problem a host sends.
    assert_eq!(packet(IpProtocol::Ipv6Opts, &chain, &[])[walked.routing_at + 2], 0);
    let ignored = rh0(0);
    let walked = walk(IpProtocol::Ipv6Route, &ignored).unwrap();
    assert_eq!(walked.routing, None, "no segments left: ignored (RFC 8200 §4.4)");
}

#[test]
fn walk_stops_at_the_fragment_header_and_unknown_headers() {
    // A non-first fragment whose data looks like more headers: not walked.
    let frag = Ipv6FragmentRepr { next_header: IpProtocol::Ipv6Opts, frag_offset: 1232, more_frags: true, ident: 7 };
    let mut b = [0u8; 16];
    frag.emit(&mut b);
    b[8..].copy_from_slice(&[0, 255, 0, 0, 0, 0, 0, 0]);
    let walked = walk(IpProtocol::Ipv6Frag, &b).unwrap();
    assert_eq!(walked.fragment, Some(frag));
    assert_eq!((walked.upper_layer, walked.upper_offset, walked.fragment_at), (IpProtocol::Ipv6Opts, 8, 0));
    assert!(!frag.is_atomic());
    // ESP (50) ends the walk: the stack decides, pointing at the field that named it.
    let chain = [50u8, 0, 1, 4, 0, 0, 0, 0];
    let walked = walk(IpProtocol::Ipv6Opts, &chain).unwrap();
    assert_eq!((walked.upper_layer, walked.upper_offset, walked.upper_named_at), (IpProtocol::Unknown(50), 8, 40));
    let none = walk(IpProtocol::Tcp, &[]).unwrap();
    assert_eq!((none.header_count, none.upper_named_at), (0, 6));
}

#[test]
fn ndisc_and_mld_that_lie_are_refused() {
    // A router advertisement with a prefix option of length 0.
    let mut ra = vec![134u8, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    ra.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0]);
    Icmpv6Packet::new_unchecked(&mut ra[..]).fill_checksum(SRC, DST);
    let p = Icmpv6Packet::new_checked(&ra[..]).unwrap();
    assert_eq!(Icmpv6Repr::parse(&p, SRC, DST, ChecksumMode::Verify).unwrap_err(), Error::Malformed);
    // A prefix option that claims more bytes than the message has.
    ra[17] = 4;
    Icmpv6Packet::new_unchecked(&mut ra[..]).fill_checksum(SRC, DST);
    let p = Icmpv6Packet::new_checked(&ra[..]).unwrap();
    assert_eq!(Icmpv6Repr::parse(&p, SRC, DST, ChecksumMode::Verify).unwrap_err(), Error::Malformed);
    // A neighbour solicitation too short for its target.
    let ns = [135u8, 0, 0, 0, 0, 0, 0, 0, 0xfe, 0x80];
    assert_eq!(NdiscRepr::parse(&ns).unwrap_err(), Error::Truncated);
    // Unknown options are skipped, known ones of the wrong length ignored.
    let mut ns = vec![135u8, 0, 0, 0, 0, 0, 0, 0];
    ns.extend_from_slice(&DST.octets());
    ns.extend_from_slice(&[200, 1, 0, 0, 0, 0, 0, 0]);
    ns.extend_from_slice(&[1, 2, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(NdiscRepr::parse(&ns).unwrap(), NdiscRepr::NeighborSolicit { target_addr: DST, lladdr: None });
    // An MLDv2 report announcing more records than it holds.
    let mut report = vec![143u8, 0, 0, 0, 0, 0, 0xff, 0xff];
    report.extend_from_slice(&[4, 0, 0, 0]);
    report.extend_from_slice(&ipv6_solicited_node(DST).octets());
    assert_eq!(MldRepr::parse(&report).unwrap_err(), Error::Truncated);
    // An error message quoting garbage instead of an IPv6 header.
    let mut err = vec![1u8, 4, 0, 0, 0, 0, 0, 0];
    err.extend_from_slice(&[0x45; 40]);
    Icmpv6Packet::new_unchecked(&mut err[..]).fill_checksum(SRC, DST);
    let p = Icmpv6Packet::new_checked(&err[..]).unwrap();
    assert_eq!(Icmpv6Repr::parse(&p, SRC, DST, ChecksumMode::Verify).unwrap_err(), Error::Malformed);
}
