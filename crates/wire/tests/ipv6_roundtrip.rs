//! emit → parse round trips for IPv6, its extension headers, ICMPv6,
//! neighbour discovery, MLDv2, TCP/UDP over IPv6 and the address helpers.

mod common;

use common::v6::*;
use common::*;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv6Addr};
use ustack_wire::*;

fn icmpv6_round_trip(repr: &Icmpv6Repr<'_>, src: Ipv6Addr, dst: Ipv6Addr) -> std::result::Result<(), TestCaseError> {
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(&mut Icmpv6Packet::new_unchecked(&mut buf[..]), src, dst, ChecksumMode::Verify);
    let p = Icmpv6Packet::new_checked(&buf[..]).unwrap();
    prop_assert!(p.verify_checksum(src, dst));
    prop_assert_eq!(&Icmpv6Repr::parse(&p, src, dst, ChecksumMode::Verify).unwrap(), repr);
    // One flipped bit anywhere is caught by the checksum.
    let mut bad = buf.clone();
    let at = usize::from(p.checksum()) % bad.len();
    bad[at] ^= 0x10;
    let p = Icmpv6Packet::new_checked(&bad[..]).unwrap();
    prop_assert!(!p.verify_checksum(src, dst));
    Ok(())
}

fn lladdr() -> impl Strategy<Value = Option<EthernetAddress>> {
    proptest::option::of(mac())
}

proptest! {
    #[test]
    fn ipv6_header_round_trip(repr in (0usize..300).prop_flat_map(|n| ipv6(IpProtocol::Udp, n)),
                              nh in any::<u8>(), padding in 0usize..20) {
        let repr = Ipv6Repr { next_header: IpProtocol::from(nh), ..repr };
        let mut buf = vec![0xa5u8; repr.buffer_len() + padding];
        repr.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..]));
        let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(Ipv6Repr::parse(&p).unwrap(), repr);
        prop_assert_eq!(p.payload().len(), repr.payload_len);
        prop_assert_eq!(u8::from(IpProtocol::from(nh)), nh);
    }

    #[test]
    fn options_header_round_trip(area in option_area(12), nh in any::<u8>()) {
        let repr = Ipv6OptionsRepr { next_header: IpProtocol::from(nh), options: &area };
        let mut buf = vec![0u8; repr.buffer_len()];
        prop_assert_eq!(buf.len() % 8, 0);
        repr.emit(&mut buf);
        let parsed = Ipv6OptionsRepr::parse(&buf).unwrap();
        prop_assert_eq!(parsed.next_header, repr.next_header);
        prop_assert_eq!(&parsed.options[..area.len()], &area[..]);
        // What was added is padding only, and the options read back in order.
        let ours: Vec<_> = Ipv6OptionsRepr { next_header: repr.next_header, options: &area }.iter().collect();
        let theirs: Vec<_> = parsed.iter().collect();
        prop_assert_eq!(&theirs[..ours.len()], &ours[..]);
        prop_assert!(theirs[ours.len()..].iter().all(|o| matches!(o, Ipv6Option::Pad1 | Ipv6Option::PadN(_))));
    }

    #[test]
    fn routing_and_fragment_headers_round_trip(r in routing_case(), f in fragment_case(), nh in any::<u8>()) {
        for case in [r, f] {
            let mut buf = Vec::new();
            case.write(IpProtocol::from(nh), &mut buf);
            match case {
                ExtCase::Routing { routing_type, segments_left, ref data } => {
                    let p = Ipv6RoutingRepr::parse(&buf).unwrap();
                    prop_assert_eq!(p, Ipv6RoutingRepr { next_header: IpProtocol::from(nh), routing_type, segments_left, data });
                    prop_assert_eq!(p.is_type0(), routing_type == 0);
                }
                ExtCase::Fragment { offset, more, ident } => {
                    let p = Ipv6FragmentRepr::parse(&buf).unwrap();
                    prop_assert_eq!(p, Ipv6FragmentRepr { next_header: IpProtocol::from(nh), frag_offset: offset * 8, more_frags: more, ident });
                    prop_assert_eq!(p.is_atomic(), offset == 0 && !more);
                }
                _ => unreachable!(),
            }
        }
    }

    #[test]
    fn chain_walk_finds_the_upper_layer(chain in ext_chain(), upper in prop_oneof![Just(IpProtocol::Udp), Just(IpProtocol::Tcp), Just(IpProtocol::Icmpv6), Just(IpProtocol::Ipv6NoNxt)],
                                        tail in proptest::collection::vec(any::<u8>(), 0..16)) {
        let (mut bytes, first) = write_chain(&chain, upper);
        let headers_len = bytes.len();
        bytes.extend_from_slice(&tail);
        let walked = Ipv6ExtChain::walk(first, &bytes, &Ipv6ExtLimits::default()).unwrap();
        prop_assert_eq!(walked.header_count, chain.len());
        prop_assert_eq!(walked.upper_layer, upper);
        prop_assert_eq!(walked.upper_offset, headers_len);
        prop_assert_eq!(walked.hop_by_hop.is_some(), matches!(chain.first(), Some(ExtCase::HopByHop(_))));
        let expected_frag = chain.iter().find_map(|h| match h {
            ExtCase::Fragment { offset, more, ident } => Some((offset * 8, *more, *ident)),
            _ => None,
        });
        prop_assert_eq!(walked.fragment.map(|f| (f.frag_offset, f.more_frags, f.ident)), expected_frag);
        let expected_routing = chain.iter().find_map(|h| match h {
            ExtCase::Routing { routing_type, segments_left, .. } if *segments_left != 0 => Some((*routing_type, *segments_left)),
            _ => None,
        });
        prop_assert_eq!(walked.routing.map(|r| (r.routing_type, r.segments_left)), expected_routing);
        if walked.routing.is_some() {
            let r = Ipv6RoutingRepr::parse(&bytes[walked.routing_at - IPV6_HEADER_LEN..]).unwrap();
            prop_assert_eq!(Some(r), walked.routing);
        }
    }

    #[test]
    fn icmpv6_echo_round_trip(src in ip6(), dst in ip6(), ident in any::<u16>(), seq_no in any::<u16>(),
                              request in any::<bool>(), data in proptest::collection::vec(any::<u8>(), 0..100)) {
        let repr = if request {
            Icmpv6Repr::EchoRequest { ident, seq_no, data: &data }
        } else {
            Icmpv6Repr::EchoReply { ident, seq_no, data: &data }
        };
        icmpv6_round_trip(&repr, src, dst)?;
    }

    #[test]
    fn icmpv6_errors_round_trip(src in ip6(), dst in ip6(), header in (0usize..2000).prop_flat_map(|n| ipv6(IpProtocol::Udp, n)),
                                code in any::<u8>(), value in any::<u32>(), kind in 0u8..4,
                                data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let repr = match kind {
            0 => Icmpv6Repr::DstUnreachable { reason: code.into(), header, data: &data },
            1 => Icmpv6Repr::PacketTooBig { mtu: value, header, data: &data },
            2 => Icmpv6Repr::TimeExceeded { reason: code.into(), header, data: &data },
            _ => Icmpv6Repr::ParamProblem { reason: code.into(), pointer: value, header, data: &data },
        };
        icmpv6_round_trip(&repr, src, dst)?;
        prop_assert_eq!(u8::from(Icmpv6DstUnreachable::from(code)), code);
        prop_assert_eq!(u8::from(Icmpv6TimeExceeded::from(code)), code);
        prop_assert_eq!(u8::from(Icmpv6ParamProblem::from(code)), code);
    }

    #[test]
    fn ndisc_round_trip(src in ip6(), dst in ip6(), target in ip6(), dest in ip6(), l in lladdr(),
                        flags in any::<(bool, bool, bool)>(), ra in any::<(u8, bool, bool, u16, u32, u32)>(),
                        mtu in proptest::option::of(any::<u32>()),
                        prefixes in proptest::collection::vec(prefix_info(), 0..4),
                        redirected in (0usize..8).prop_flat_map(|w| proptest::collection::vec(any::<u8>(), 8 * w))) {
        let (router, solicited, override_) = flags;
        let (hop_limit, managed, other_config, router_lifetime, reachable_time, retrans_time) = ra;
        let all = [
            NdiscRepr::RouterSolicit { lladdr: l },
            NdiscRepr::RouterAdvert { hop_limit, managed, other_config, router_lifetime, reachable_time, retrans_time,
                                      lladdr: l, mtu, prefixes: NdiscPrefixes::List(&prefixes) },
            NdiscRepr::NeighborSolicit { target_addr: target, lladdr: l },
            NdiscRepr::NeighborAdvert { flags: NdiscNeighborFlags { router, solicited, override_ }, target_addr: target, lladdr: l },
            NdiscRepr::Redirect { target_addr: target, dest_addr: dest, lladdr: l, redirected: &redirected },
        ];
        for n in all {
            icmpv6_round_trip(&Icmpv6Repr::Ndisc(n), src, dst)?;
        }
    }

    #[test]
    fn mld_round_trip(src in ip6(), group in ip6(), q in any::<(u16, bool, u8, u8)>(),
                      sources in (0usize..4).prop_flat_map(|n| proptest::collection::vec(any::<u8>(), 16 * n)),
                      record_types in proptest::collection::vec(any::<u8>(), 0..4),
                      aux in (0usize..3).prop_flat_map(|n| proptest::collection::vec(any::<u8>(), 4 * n))) {
        let (max_resp_code, s_flag, qrv, qqic) = q;
        let query = MldRepr::Query { max_resp_code, mcast_addr: group, s_flag, qrv: qrv & 7, qqic, sources: &sources };
        icmpv6_round_trip(&Icmpv6Repr::Mld(query), src, IPV6_ALL_NODES)?;
        prop_assert_eq!(query.source_addrs().count(), sources.len() / 16);
        let records: Vec<_> = record_types
            .iter()
            .map(|t| MldAddressRecordRepr { record_type: (*t).into(), mcast_addr: group, sources: &sources, aux_data: &aux })
            .collect();
        let report = MldRepr::Report { records: MldRecords::List(&records) };
        icmpv6_round_trip(&Icmpv6Repr::Mld(report), src, IPV6_ALL_MLDV2_ROUTERS)?;
        prop_assert_eq!(report.buffer_len(), 8 + records.len() * (20 + sources.len() + aux.len()));
    }

    #[test]
    fn tcp_and_udp_over_ipv6_round_trip(src in ip6(), dst in ip6(), c in tcp_case(14),
                                        payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let t = c.repr();
        let mut buf = vec![0u8; t.buffer_len()];
        t.emit(&mut TcpPacket::new_unchecked(&mut buf[..]), src, dst, ChecksumMode::Verify);
        let p = TcpPacket::new_checked(&buf[..]).unwrap();
        prop_assert!(p.verify_checksum(src, dst));
        let parsed = TcpRepr::parse(&p, src, dst, ChecksumMode::Verify).unwrap();
        prop_assert_eq!(parsed.seq_number, t.seq_number);
        prop_assert_eq!(parsed.payload, t.payload);
        // The pseudo header covers the addresses: one bit off in the source fails.
        let other = Ipv6Addr::from(u128::from(src) ^ 1);
        prop_assert!(!p.verify_checksum(other, dst));
        prop_assert!(TcpRepr::parse(&p, other, dst, ChecksumMode::Verify).is_err());

        let u = UdpRepr { src_port: c.src_port, dst_port: c.dst_port };
        let mut buf = vec![0u8; 8 + payload.len()];
        u.emit(&mut UdpPacket::new_unchecked(&mut buf[..]), src, dst, payload.len(), |b| b.copy_from_slice(&payload), ChecksumMode::Verify);
        let p = UdpPacket::new_checked(&buf[..]).unwrap();
        prop_assert_ne!(p.checksum(), 0, "a zero UDP checksum is never sent over IPv6");
        prop_assert_eq!(UdpRepr::parse(&p, src, dst, ChecksumMode::Verify).unwrap(), u);
        prop_assert_eq!(p.payload(), &payload[..]);
    }

    #[test]
    fn cidrs_and_derived_addresses(a in ip6(), len in 0u8..=128, m in mac(), other in ip6()) {
        let c = Ipv6Cidr::new(a, len).unwrap();
        prop_assert_eq!(c.to_string().parse::<Ipv6Cidr>().unwrap(), c);
        prop_assert_eq!(c.to_string().parse::<IpCidr>().unwrap(), IpCidr::V6(c));
        prop_assert!(c.contains(a) && c.contains(c.network()));
        let shared = (u128::from(a) ^ u128::from(other)).leading_zeros() >= u32::from(len);
        prop_assert_eq!(c.contains(other), shared);
        prop_assert!(!IpCidr::V6(c).contains(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)));

        let sn = ipv6_solicited_node(a);
        prop_assert!(Ipv6Cidr::new("ff02::1:ff00:0".parse().unwrap(), 104).unwrap().contains(sn));
        prop_assert_eq!(&sn.octets()[13..], &a.octets()[13..]);
        let group_mac = EthernetAddress::from_ipv6_multicast(sn);
        prop_assert!(group_mac.is_multicast());
        prop_assert_eq!(&group_mac.0[2..], &sn.octets()[12..]);

        let ll = ipv6_link_local(m);
        prop_assert!(ll.is_unicast_link_local());
        let id = &ll.octets()[8..];
        prop_assert_eq!([id[0] ^ 2, id[1], id[2], id[5], id[6], id[7]], m.0);
        prop_assert_eq!(&id[3..5], &[0xff, 0xfe]);
        prop_assert_eq!(&ipv6_from_prefix_and_mac(a, m).octets()[..8], &a.octets()[..8]);
    }
}
