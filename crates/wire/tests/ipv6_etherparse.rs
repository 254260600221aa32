//! Cross-check of the IPv6 family against the `etherparse` crate: IPv6
//! headers, extension header chains, TCP/UDP over IPv6 and ICMPv6 that it
//! builds parse the same with us, and what we build parses the same with it,
//! checksums valid by both; neighbour discovery messages and their options
//! too. etherparse has no MLD types: for MLD it checks type, code, the first
//! four body bytes and the checksum. (etherparse before 0.20 put the
//! fragment header's M flag and offset bits in the wrong places, its issue
//! #150: these tests caught it, hence 0.21.)

mod common;

use common::v6::*;
use common::*;
use etherparse::icmpv6::{self, Icmpv6PayloadSlice, NdpOptionSlice, NdpOptionsIterator};
use etherparse::{
    IcmpEchoHeader, Icmpv6Slice, Icmpv6Type, IpFragOffset, IpHeaders, IpNumber, Ipv6Extensions, Ipv6FlowLabel,
    Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader, Ipv6RoutingExtensions, NetHeaders, PacketBuilder, PacketHeaders,
    TransportHeader,
};
use proptest::prelude::*;
use std::net::Ipv6Addr;
use ustack_wire::*;

fn ep_ipv6(r: &Ipv6Repr) -> Ipv6Header {
    Ipv6Header {
        traffic_class: r.traffic_class,
        flow_label: Ipv6FlowLabel::try_new(r.flow_label).unwrap(),
        payload_length: 0,
        next_header: IpNumber(u8::from(r.next_header)),
        hop_limit: r.hop_limit,
        source: r.src_addr.octets(),
        destination: r.dst_addr.octets(),
    }
}

fn assert_ip_agrees(ours: &Ipv6Repr, theirs: &Ipv6Header) {
    assert_eq!(ours.src_addr, Ipv6Addr::from(theirs.source));
    assert_eq!(ours.dst_addr, Ipv6Addr::from(theirs.destination));
    assert_eq!(u8::from(ours.next_header), theirs.next_header.0);
    assert_eq!(ours.payload_len, usize::from(theirs.payload_length));
    assert_eq!(ours.hop_limit, theirs.hop_limit);
    assert_eq!(ours.traffic_class, theirs.traffic_class);
    assert_eq!(ours.flow_label, theirs.flow_label.value());
}

/// Parses Ethernet + IPv6 with our views; returns the header, the walked
/// chain and the IPv6 payload.
fn our_l3(buf: &[u8], vlan: Option<u16>) -> (Ipv6Repr, Ipv6ExtChain<'_>, &[u8]) {
    let frame = EthernetFrame::new_checked(buf).unwrap();
    let eth = EthernetRepr::parse(&frame).unwrap();
    assert_eq!(eth.ethertype, EtherType::Ipv6);
    assert_eq!(eth.vlan_id, vlan);
    let ip = Ipv6Packet::new_checked(frame.into_payload()).unwrap();
    let repr = Ipv6Repr::parse(&ip).unwrap();
    let payload = ip.into_payload();
    let chain = Ipv6ExtChain::walk(repr.next_header, payload, &Ipv6ExtLimits::default()).unwrap();
    (repr, chain, payload)
}

/// An option area padded with Pad1 to an etherparse raw header payload
/// (6 + 8k bytes).
fn raw_options(area: &[u8]) -> Vec<u8> {
    let mut v = area.to_vec();
    v.resize((area.len() + 2).div_ceil(8).max(1) * 8 - 2, 0);
    v
}

/// The chains etherparse represents in full: at most one of each, in RFC 8200 order.
#[derive(Clone, Debug)]
struct OrderedChain {
    hbh: Option<Vec<u8>>,
    dest: Option<Vec<u8>>,
    routing: Option<(u8, u8, Vec<u8>)>,
    frag: Option<(u16, bool, u32)>,
}

fn ordered_chain() -> impl Strategy<Value = OrderedChain> {
    (
        proptest::option::of(option_area(4)),
        proptest::option::of(option_area(4)),
        proptest::option::of((
            any::<u8>(),
            any::<u8>(),
            (0usize..4).prop_flat_map(|w| proptest::collection::vec(any::<u8>(), 4 + 8 * w)),
        )),
        proptest::option::of((0u16..8192, any::<bool>(), any::<u32>())),
    )
        .prop_map(|(hbh, dest, routing, frag)| OrderedChain { hbh, dest, routing, frag })
}

impl OrderedChain {
    fn cases(&self) -> Vec<ExtCase> {
        let mut v = Vec::new();
        if let Some(o) = &self.hbh {
            v.push(ExtCase::HopByHop(raw_options(o)));
        }
        if let Some(o) = &self.dest {
            v.push(ExtCase::DestOpts(raw_options(o)));
        }
        if let Some((routing_type, segments_left, data)) = &self.routing {
            v.push(ExtCase::Routing { routing_type: *routing_type, segments_left: *segments_left, data: data.clone() });
        }
        if let Some((offset, more, ident)) = self.frag {
            v.push(ExtCase::Fragment { offset, more, ident });
        }
        v
    }

    fn etherparse(&self) -> Ipv6Extensions {
        let raw = |o: &Vec<u8>| Ipv6RawExtHeader::new_raw(IpNumber(0), &raw_options(o)).unwrap();
        Ipv6Extensions {
            hop_by_hop_options: self.hbh.as_ref().map(raw),
            destination_options: self.dest.as_ref().map(raw),
            routing: self.routing.as_ref().map(|(t, s, d)| {
                let mut p = vec![*t, *s];
                p.extend_from_slice(d);
                Ipv6RoutingExtensions {
                    routing: Ipv6RawExtHeader::new_raw(IpNumber(0), &p).unwrap(),
                    final_destination_options: None,
                }
            }),
            fragment: self.frag.map(|(off, more, ident)| {
                Ipv6FragmentHeader::new(IpNumber(0), IpFragOffset::try_new(off).unwrap(), more, ident)
            }),
            auth: None,
        }
    }

    fn assert_walk_agrees(&self, chain: &Ipv6ExtChain<'_>, upper: IpProtocol, exts: &Ipv6Extensions) {
        assert_eq!(chain.upper_layer, upper);
        assert_eq!(chain.upper_offset, exts.header_len());
        assert_eq!(chain.hop_by_hop.map(|h| h.options.to_vec()), self.hbh.as_ref().map(|o| raw_options(o)));
        assert_eq!(
            chain.fragment.map(|f| (f.frag_offset / 8, f.more_frags, f.ident)),
            exts.fragment.as_ref().map(|f| (f.fragment_offset.value(), f.more_fragments, f.identification))
        );
        let reported = self.routing.as_ref().filter(|r| r.1 != 0).map(|(t, s, d)| (*t, *s, d.clone()));
        assert_eq!(chain.routing.map(|r| (r.routing_type, r.segments_left, r.data.to_vec())), reported);
        if let (Some(r), Some(theirs)) = (&chain.routing, &exts.routing) {
            assert_eq!(&theirs.routing.payload()[2..], r.data);
        }
    }
}

fn icmp_type(code: u8, value: u32, kind: u8, echo: (u16, u16)) -> Option<Icmpv6Type> {
    Some(match kind {
        0 => Icmpv6Type::DestinationUnreachable(icmpv6::DestUnreachableCode::from_u8(code % 7)?),
        1 => Icmpv6Type::PacketTooBig { mtu: value },
        2 => Icmpv6Type::TimeExceeded(icmpv6::TimeExceededCode::from_u8(code % 2)?),
        3 => Icmpv6Type::ParameterProblem(icmpv6::ParameterProblemHeader {
            code: icmpv6::ParameterProblemCode::from_u8(code % 3)?,
            pointer: value,
        }),
        4 => Icmpv6Type::EchoRequest(IcmpEchoHeader { id: echo.0, seq: echo.1 }),
        _ => Icmpv6Type::EchoReply(IcmpEchoHeader { id: echo.0, seq: echo.1 }),
    })
}

/// Our repr of what `icmp_type` built, with `quote` (an IPv6 header and data) as the error's payload.
fn our_icmp<'a>(t: &Icmpv6Type, quote: &'a [u8]) -> Icmpv6Repr<'a> {
    let q = || {
        let p = Ipv6Packet::new_checked_header(quote).unwrap();
        (Ipv6Repr::parse(&p).unwrap(), &quote[IPV6_HEADER_LEN..])
    };
    match *t {
        Icmpv6Type::DestinationUnreachable(c) => {
            let (header, data) = q();
            Icmpv6Repr::DstUnreachable { reason: c.code_u8().into(), header, data }
        }
        Icmpv6Type::PacketTooBig { mtu } => {
            let (header, data) = q();
            Icmpv6Repr::PacketTooBig { mtu, header, data }
        }
        Icmpv6Type::TimeExceeded(c) => {
            let (header, data) = q();
            Icmpv6Repr::TimeExceeded { reason: c.code_u8().into(), header, data }
        }
        Icmpv6Type::ParameterProblem(h) => {
            let (header, data) = q();
            Icmpv6Repr::ParamProblem { reason: h.code.code_u8().into(), pointer: h.pointer, header, data }
        }
        Icmpv6Type::EchoRequest(e) => Icmpv6Repr::EchoRequest { ident: e.id, seq_no: e.seq, data: quote },
        Icmpv6Type::EchoReply(e) => Icmpv6Repr::EchoReply { ident: e.id, seq_no: e.seq, data: quote },
        ref other => unreachable!("not built here: {other:?}"),
    }
}

/// What etherparse reads from an option area: link-layer addresses, MTU,
/// prefixes, redirected header.
#[derive(Debug, Default, PartialEq)]
struct NdpOptions {
    source: Option<EthernetAddress>,
    target: Option<EthernetAddress>,
    mtu: Option<u32>,
    prefixes: Vec<NdiscPrefixInfo>,
    redirected: Vec<u8>,
}

fn ep_ndp_options(it: NdpOptionsIterator<'_>) -> NdpOptions {
    let mut o = NdpOptions::default();
    for opt in it {
        match opt.expect("etherparse reads every option we write") {
            NdpOptionSlice::SourceLinkLayerAddress(a) => o.source = EthernetAddress::from_bytes(a.link_layer_address()),
            NdpOptionSlice::TargetLinkLayerAddress(a) => o.target = EthernetAddress::from_bytes(a.link_layer_address()),
            NdpOptionSlice::Mtu(m) => o.mtu = Some(m.mtu()),
            NdpOptionSlice::PrefixInformation(p) => o.prefixes.push(NdiscPrefixInfo {
                prefix_len: p.prefix_length(),
                on_link: p.on_link(),
                autonomous: p.autonomous_address_configuration(),
                valid_lifetime: p.valid_lifetime(),
                preferred_lifetime: p.preferred_lifetime(),
                prefix: Ipv6Addr::from(p.prefix()),
            }),
            NdpOptionSlice::RedirectedHeader(r) => o.redirected = r.redirected_packet().to_vec(),
            other => panic!("we wrote no such option: {other:?}"),
        }
    }
    o
}

/// Our neighbour discovery message against etherparse's reading of it.
fn assert_ndisc_agrees(n: &NdiscRepr<'_>, theirs: &Icmpv6Slice<'_>) {
    let payload = theirs.payload_slice().expect("etherparse reads the fixed part");
    let no = NdpOptions::default();
    match (n, theirs.icmp_type(), payload) {
        (
            NdiscRepr::RouterSolicit { lladdr },
            Icmpv6Type::RouterSolicitation,
            Icmpv6PayloadSlice::RouterSolicitation(p),
        ) => {
            assert_eq!(ep_ndp_options(p.options_iterator()), NdpOptions { source: *lladdr, ..no });
        }
        (
            NdiscRepr::RouterAdvert {
                hop_limit,
                managed,
                other_config,
                router_lifetime,
                reachable_time,
                retrans_time,
                lladdr,
                mtu,
                prefixes,
            },
            Icmpv6Type::RouterAdvertisement(h),
            Icmpv6PayloadSlice::RouterAdvertisement(p),
        ) => {
            assert_eq!(
                (*hop_limit, *managed, *other_config, *router_lifetime),
                (h.cur_hop_limit, h.managed_address_config, h.other_config, h.router_lifetime)
            );
            assert_eq!((*reachable_time, *retrans_time), (p.reachable_time(), p.retrans_timer()));
            let expected = NdpOptions { source: *lladdr, mtu: *mtu, prefixes: prefixes.iter().collect(), ..no };
            assert_eq!(ep_ndp_options(p.options_iterator()), expected);
        }
        (
            NdiscRepr::NeighborSolicit { target_addr, lladdr },
            Icmpv6Type::NeighborSolicitation,
            Icmpv6PayloadSlice::NeighborSolicitation(p),
        ) => {
            assert_eq!(p.target_address(), *target_addr);
            assert_eq!(ep_ndp_options(p.options_iterator()), NdpOptions { source: *lladdr, ..no });
        }
        (
            NdiscRepr::NeighborAdvert { flags, target_addr, lladdr },
            Icmpv6Type::NeighborAdvertisement(h),
            Icmpv6PayloadSlice::NeighborAdvertisement(p),
        ) => {
            assert_eq!((flags.router, flags.solicited, flags.override_), (h.router, h.solicited, h.r#override));
            assert_eq!(p.target_address(), *target_addr);
            assert_eq!(ep_ndp_options(p.options_iterator()), NdpOptions { target: *lladdr, ..no });
        }
        (
            NdiscRepr::Redirect { target_addr, dest_addr, lladdr, redirected },
            Icmpv6Type::Redirect,
            Icmpv6PayloadSlice::Redirect(p),
        ) => {
            assert_eq!((p.target_address(), p.destination_address()), (*target_addr, *dest_addr));
            assert_eq!(
                ep_ndp_options(p.options_iterator()),
                NdpOptions { target: *lladdr, redirected: redirected.to_vec(), ..no }
            );
        }
        (ours, theirs, _) => panic!("ours {ours:?} vs theirs {theirs:?}"),
    }
}

/// Checks a message we emitted with etherparse's reading of it.
fn assert_icmp_agrees(buf: &[u8], src: Ipv6Addr, dst: Ipv6Addr) {
    let theirs = Icmpv6Slice::from_slice(buf).unwrap();
    assert!(theirs.is_checksum_valid(src.octets(), dst.octets()), "etherparse verifies our checksum");
    assert_eq!((theirs.type_u8(), theirs.code_u8()), (buf[0], buf[1]));
    assert_eq!(theirs.bytes5to8(), buf[4..8]);
    let p = Icmpv6Packet::new_checked(buf).unwrap();
    match (Icmpv6Repr::parse(&p, src, dst, ChecksumMode::Verify).unwrap(), theirs.icmp_type()) {
        (Icmpv6Repr::EchoRequest { ident, seq_no, .. }, Icmpv6Type::EchoRequest(e))
        | (Icmpv6Repr::EchoReply { ident, seq_no, .. }, Icmpv6Type::EchoReply(e)) => {
            assert_eq!((ident, seq_no), (e.id, e.seq));
        }
        (Icmpv6Repr::PacketTooBig { mtu, .. }, Icmpv6Type::PacketTooBig { mtu: m }) => assert_eq!(mtu, m),
        (Icmpv6Repr::ParamProblem { pointer, reason, .. }, Icmpv6Type::ParameterProblem(h)) => {
            assert_eq!((pointer, u8::from(reason)), (h.pointer, h.code.code_u8()));
        }
        (Icmpv6Repr::DstUnreachable { reason, .. }, Icmpv6Type::DestinationUnreachable(c)) => {
            assert_eq!(u8::from(reason), c.code_u8());
        }
        (Icmpv6Repr::TimeExceeded { reason, .. }, Icmpv6Type::TimeExceeded(c)) => {
            assert_eq!(u8::from(reason), c.code_u8())
        }
        (Icmpv6Repr::Ndisc(n), _) => assert_ndisc_agrees(&n, &theirs),
        (Icmpv6Repr::Mld(_), Icmpv6Type::Unknown { type_u8, .. }) => assert!(type_u8 == 130 || type_u8 == 143),
        // etherparse knows codes we keep as `Other` variants of the known types.
        (ours, theirs) => {
            assert!(
                matches!(theirs, Icmpv6Type::Unknown { .. }) || matches!(ours, Icmpv6Repr::Other { .. }),
                "ours {ours:?} vs theirs {theirs:?}"
            )
        }
    }
}

proptest! {
    // etherparse builds, we parse.

    #[test]
    fn they_build_udp_we_parse(e in ethernet(EtherType::Ipv6), i in ipv6(IpProtocol::Udp, 0),
                               sp in any::<u16>(), dp in any::<u16>(),
                               payload in proptest::collection::vec(any::<u8>(), 0..100)) {
        let b = PacketBuilder::ethernet2(e.src_addr.0, e.dst_addr.0);
        let mut buf = Vec::new();
        match e.vlan_id {
            Some(v) => b.single_vlan(etherparse::VlanId::try_new(v).unwrap())
                .ip(IpHeaders::Ipv6(ep_ipv6(&i), Default::default())).udp(sp, dp).write(&mut buf, &payload).unwrap(),
            None => b.ip(IpHeaders::Ipv6(ep_ipv6(&i), Default::default())).udp(sp, dp).write(&mut buf, &payload).unwrap(),
        }
        let (ours, chain, l3) = our_l3(&buf, e.vlan_id);
        prop_assert_eq!(ours, Ipv6Repr { payload_len: 8 + payload.len(), ..i });
        prop_assert_eq!((chain.upper_layer, chain.upper_offset, chain.header_count), (IpProtocol::Udp, 0, 0));
        let udp = UdpPacket::new_checked(l3).unwrap();
        prop_assert_eq!(UdpRepr::parse(&udp, ours.src_addr, ours.dst_addr, ChecksumMode::Verify).unwrap(),
                        UdpRepr { src_port: sp, dst_port: dp });
        prop_assert_eq!(udp.payload(), &payload[..]);
    }

    #[test]
    fn they_build_tcp_we_parse(e in ethernet(EtherType::Ipv6), i in ipv6(IpProtocol::Tcp, 0),
                               ports in any::<(u16, u16)>(), seq in any::<u32>(), ack in proptest::option::of(any::<u32>()),
                               window in any::<u16>(), syn in any::<bool>(),
                               payload in proptest::collection::vec(any::<u8>(), 0..100)) {
        let mut b = PacketBuilder::ethernet2(e.src_addr.0, e.dst_addr.0)
            .ip(IpHeaders::Ipv6(ep_ipv6(&i), Default::default()))
            .tcp(ports.0, ports.1, seq, window);
        if syn { b = b.syn(); }
        if let Some(a) = ack { b = b.ack(a); }
        let mut buf = Vec::new();
        b.write(&mut buf, &payload).unwrap();
        let (ours, chain, l3) = our_l3(&buf, None);
        prop_assert_eq!(chain.upper_layer, IpProtocol::Tcp);
        let tcp = TcpPacket::new_checked(l3).unwrap();
        let r = TcpRepr::parse(&tcp, ours.src_addr, ours.dst_addr, ChecksumMode::Verify).unwrap();
        prop_assert_eq!((r.src_port, r.dst_port, r.seq_number.0, r.window_len), (ports.0, ports.1, seq, window));
        prop_assert_eq!(r.ack_number.map(|a| a.0), ack);
        prop_assert_eq!(r.flags.syn(), syn);
        prop_assert_eq!(r.payload, &payload[..]);
    }

    #[test]
    fn they_build_icmpv6_we_parse(e in ethernet(EtherType::Ipv6), i in ipv6(IpProtocol::Icmpv6, 0),
                                  quoted in (0usize..1200).prop_flat_map(|n| ipv6(IpProtocol::Tcp, n)),
                                  code in any::<u8>(), value in any::<u32>(), kind in 0u8..6, echo in any::<(u16, u16)>(),
                                  data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let t = icmp_type(code, value, kind, echo).unwrap();
        // The quote: an IPv6 header etherparse writes, then bytes.
        let mut quote = Vec::new();
        if kind < 4 {
            let mut h = ep_ipv6(&quoted);
            h.payload_length = u16::try_from(quoted.payload_len).unwrap();
            quote.extend_from_slice(&h.to_bytes());
        }
        quote.extend_from_slice(&data);
        let mut buf = Vec::new();
        PacketBuilder::ethernet2(e.src_addr.0, e.dst_addr.0)
            .ip(IpHeaders::Ipv6(ep_ipv6(&i), Default::default()))
            .icmpv6(t)
            .write(&mut buf, &quote)
            .unwrap();
        let (ours, chain, l3) = our_l3(&buf, None);
        prop_assert_eq!(chain.upper_layer, IpProtocol::Icmpv6);
        let p = Icmpv6Packet::new_checked(l3).unwrap();
        let r = Icmpv6Repr::parse(&p, ours.src_addr, ours.dst_addr, ChecksumMode::Verify).unwrap();
        prop_assert_eq!(r, our_icmp(&t, &quote));
        if kind < 4 {
            prop_assert!(p.is_error());
        }
    }

    #[test]
    fn they_build_extension_chains_we_walk(e in ethernet(EtherType::Ipv6), i in ipv6(IpProtocol::Udp, 0),
                                           c in ordered_chain(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let exts = c.etherparse();
        let mut buf = Vec::new();
        PacketBuilder::ethernet2(e.src_addr.0, e.dst_addr.0)
            .ip(IpHeaders::Ipv6(ep_ipv6(&i), exts.clone()))
            .udp(1, 2)
            .write(&mut buf, &payload)
            .unwrap();
        let (ours, chain, l3) = our_l3(&buf, None);
        prop_assert_eq!(ours.payload_len, exts.header_len() + 8 + payload.len());
        c.assert_walk_agrees(&chain, IpProtocol::Udp, &exts);
        let udp = UdpPacket::new_checked(&l3[chain.upper_offset..]).unwrap();
        prop_assert!(UdpRepr::parse(&udp, ours.src_addr, ours.dst_addr, ChecksumMode::Verify).is_ok());
        prop_assert_eq!(udp.payload(), &payload[..]);
    }

    #[test]
    fn they_build_ndisc_we_parse(src in ip6(), dst in ip6(), target in ip6(), dest in ip6(), m in mac(),
                                 ra in any::<(u8, bool, bool, u16, u32, u32)>(), na in any::<(bool, bool, bool)>(),
                                 prefixes in proptest::collection::vec(prefix_info(), 0..3),
                                 redirected in (1usize..4).prop_flat_map(|w| proptest::collection::vec(any::<u8>(), 8 * w))) {
        let (hop_limit, managed, other_config, router_lifetime, reachable_time, retrans_time) = ra;
        let sll = |kind: icmpv6::NdpOptionType| {
            let mut o = icmpv6::NdpOptionHeader { option_type: kind, length_units: 1 }.to_bytes().to_vec();
            o.extend_from_slice(&m.0);
            o
        };
        let source = sll(icmpv6::NdpOptionType::SOURCE_LINK_LAYER_ADDRESS);
        let target_ll = sll(icmpv6::NdpOptionType::TARGET_LINK_LAYER_ADDRESS);

        let mut ra_body = icmpv6::RouterAdvertisementPayload { reachable_time, retrans_timer: retrans_time }.to_bytes().to_vec();
        ra_body.extend_from_slice(&source);
        for p in &prefixes {
            ra_body.extend_from_slice(&icmpv6::PrefixInformation {
                prefix_length: p.prefix_len,
                on_link: p.on_link,
                autonomous_address_configuration: p.autonomous,
                valid_lifetime: p.valid_lifetime,
                preferred_lifetime: p.preferred_lifetime,
                prefix: p.prefix.octets(),
            }.to_bytes());
        }
        let mut ns_body = icmpv6::NeighborSolicitationPayload { target_address: target }.to_bytes().to_vec();
        ns_body.extend_from_slice(&source);
        let mut na_body = icmpv6::NeighborAdvertisementPayload { target_address: target }.to_bytes().to_vec();
        na_body.extend_from_slice(&target_ll);
        let mut redirect_body = icmpv6::RedirectPayload { target_address: target, destination_address: dest }.to_bytes().to_vec();
        redirect_body.extend_from_slice(&target_ll);
        redirect_body.extend_from_slice(&[4, (1 + redirected.len() / 8) as u8, 0, 0, 0, 0, 0, 0]);
        redirect_body.extend_from_slice(&redirected);

        let cases = [
            (Icmpv6Type::RouterSolicitation, source.clone(), NdiscRepr::RouterSolicit { lladdr: Some(m) }),
            (Icmpv6Type::RouterAdvertisement(icmpv6::RouterAdvertisementHeader {
                cur_hop_limit: hop_limit, managed_address_config: managed, other_config, router_lifetime }),
             ra_body,
             NdiscRepr::RouterAdvert { hop_limit, managed, other_config, router_lifetime, reachable_time, retrans_time,
                                       lladdr: Some(m), mtu: None, prefixes: NdiscPrefixes::List(&prefixes) }),
            (Icmpv6Type::NeighborSolicitation, ns_body, NdiscRepr::NeighborSolicit { target_addr: target, lladdr: Some(m) }),
            (Icmpv6Type::NeighborAdvertisement(icmpv6::NeighborAdvertisementHeader { router: na.0, solicited: na.1, r#override: na.2 }),
             na_body,
             NdiscRepr::NeighborAdvert { flags: NdiscNeighborFlags { router: na.0, solicited: na.1, override_: na.2 },
                                         target_addr: target, lladdr: Some(m) }),
            (Icmpv6Type::Redirect, redirect_body,
             NdiscRepr::Redirect { target_addr: target, dest_addr: dest, lladdr: Some(m), redirected: &redirected }),
        ];
        for (t, body, expected) in cases {
            let mut buf = Vec::new();
            PacketBuilder::ipv6(src.octets(), dst.octets(), 255).icmpv6(t).write(&mut buf, &body).unwrap();
            let ip = Ipv6Packet::new_checked(&buf[..]).unwrap();
            let p = Icmpv6Packet::new_checked(ip.into_payload()).unwrap();
            prop_assert_eq!(Icmpv6Repr::parse(&p, src, dst, ChecksumMode::Verify).unwrap(), Icmpv6Repr::Ndisc(expected));
        }
    }

    // We build, etherparse parses.

    #[test]
    fn we_build_udp_over_extension_chains_they_parse(e in ethernet(EtherType::Ipv6), i in ipv6(IpProtocol::Udp, 0),
                                                     c in ordered_chain(), ports in any::<(u16, u16)>(),
                                                     payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let (chain, first) = write_chain(&c.cases(), IpProtocol::Udp);
        let l4_len = 8 + payload.len();
        let i = Ipv6Repr { next_header: first, payload_len: chain.len() + l4_len, ..i };
        let mut buf = vec![0u8; e.header_len() + i.buffer_len()];
        e.emit(&mut EthernetFrame::new_unchecked(&mut buf[..]));
        let at = e.header_len();
        i.emit(&mut Ipv6Packet::new_unchecked(&mut buf[at..]));
        let at = at + IPV6_HEADER_LEN;
        buf[at..at + chain.len()].copy_from_slice(&chain);
        let at = at + chain.len();
        UdpRepr { src_port: ports.0, dst_port: ports.1 }.emit(
            &mut UdpPacket::new_unchecked(&mut buf[at..]), i.src_addr, i.dst_addr, payload.len(),
            |p| p.copy_from_slice(&payload), ChecksumMode::Verify);

        let h = PacketHeaders::from_ethernet_slice(&buf).unwrap();
        let Some(NetHeaders::Ipv6(ip, exts)) = &h.net else { panic!("no ipv6") };
        assert_ip_agrees(&i, ip);
        prop_assert_eq!(exts.header_len(), chain.len());
        c.assert_walk_agrees(&Ipv6ExtChain::walk(first, &buf[at - chain.len()..], &Ipv6ExtLimits::default()).unwrap(),
                             IpProtocol::Udp, exts);
        if let Some(TransportHeader::Udp(udp)) = &h.transport {
            prop_assert_eq!((udp.source_port, udp.destination_port), ports);
            prop_assert_eq!(udp.checksum, udp.calc_checksum_ipv6(ip, &payload).unwrap());
        } else {
            // etherparse reads no transport header only behind a fragment header.
            prop_assert!(c.frag.is_some_and(|(off, more, _)| off != 0 || more));
        }
    }

    #[test]
    fn we_build_tcp_they_parse(src in ip6(), dst in ip6(), c in tcp_case(14)) {
        let t = c.repr();
        let mut buf = vec![0u8; t.buffer_len()];
        t.emit(&mut TcpPacket::new_unchecked(&mut buf[..]), src, dst, ChecksumMode::Verify);
        let (theirs, rest) = etherparse::TcpHeader::from_slice(&buf).unwrap();
        let ip = Ipv6Header { source: src.octets(), destination: dst.octets(), ..Default::default() };
        prop_assert_eq!(theirs.checksum, theirs.calc_checksum_ipv6(&ip, rest).unwrap());
        prop_assert_eq!(theirs.sequence_number, t.seq_number.0);
    }

    #[test]
    fn we_build_icmpv6_they_parse(src in ip6(), dst in ip6(), header in (0usize..1200).prop_flat_map(|n| ipv6(IpProtocol::Udp, n)),
                                  code in any::<u8>(), value in any::<u32>(), echo in any::<(u16, u16)>(),
                                  target in ip6(), l in proptest::option::of(mac()), prefixes in proptest::collection::vec(prefix_info(), 0..3),
                                  redirected in (0usize..4).prop_flat_map(|w| proptest::collection::vec(any::<u8>(), 8 * w)),
                                  data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let records = [MldAddressRecordRepr::join(ipv6_solicited_node(target))];
        let all = [
            Icmpv6Repr::EchoRequest { ident: echo.0, seq_no: echo.1, data: &data },
            Icmpv6Repr::EchoReply { ident: echo.0, seq_no: echo.1, data: &data },
            Icmpv6Repr::DstUnreachable { reason: code.into(), header, data: &data },
            Icmpv6Repr::PacketTooBig { mtu: value, header, data: &data },
            Icmpv6Repr::TimeExceeded { reason: code.into(), header, data: &data },
            Icmpv6Repr::ParamProblem { reason: code.into(), pointer: value, header, data: &data },
            Icmpv6Repr::Ndisc(NdiscRepr::RouterSolicit { lladdr: l }),
            Icmpv6Repr::Ndisc(NdiscRepr::RouterAdvert { hop_limit: 64, managed: true, other_config: false,
                router_lifetime: echo.0, reachable_time: value, retrans_time: 1000, lladdr: l, mtu: Some(1500),
                prefixes: NdiscPrefixes::List(&prefixes) }),
            Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr: target, lladdr: l }),
            Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert { flags: NdiscNeighborFlags { router: false, solicited: true, override_: true },
                target_addr: target, lladdr: l }),
            Icmpv6Repr::Ndisc(NdiscRepr::Redirect { target_addr: target, dest_addr: header.dst_addr, lladdr: l, redirected: &redirected }),
            Icmpv6Repr::Mld(MldRepr::Report { records: MldRecords::List(&records) }),
        ];
        for r in all {
            let mut buf = vec![0u8; r.buffer_len()];
            r.emit(&mut Icmpv6Packet::new_unchecked(&mut buf[..]), src, dst, ChecksumMode::Verify);
            assert_icmp_agrees(&buf, src, dst);
        }
    }
}
