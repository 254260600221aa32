//! emit → parse round trips for every header.

mod common;

use common::*;
use proptest::prelude::*;
use ustack_wire::*;

proptest! {
    #[test]
    fn ethernet_round_trip(repr in ethernet(EtherType::Ipv4), payload in proptest::collection::vec(any::<u8>(), 0..32),
                           et in any::<u16>().prop_filter("not a tag", |v| *v != 0x8100)) {
        let repr = EthernetRepr { ethertype: EtherType::from(et), ..repr };
        let mut buf = vec![0u8; repr.header_len() + payload.len()];
        let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
        repr.emit(&mut frame);
        frame.payload_mut().copy_from_slice(&payload);
        let frame = EthernetFrame::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(EthernetRepr::parse(&frame).unwrap(), repr);
        prop_assert_eq!(frame.header_len(), repr.header_len());
        prop_assert_eq!(frame.payload(), &payload[..]);
        prop_assert_eq!(u16::from(EtherType::from(et)), et);
    }

    #[test]
    fn arp_round_trip(op in any::<u16>(), sha in mac(), spa in ip(), tha in mac(), tpa in ip()) {
        let repr = ArpRepr {
            operation: ArpOperation::from(op),
            source_hardware_addr: sha,
            source_protocol_addr: spa,
            target_hardware_addr: tha,
            target_protocol_addr: tpa,
        };
        let mut buf = [0u8; 28];
        repr.emit(&mut ArpPacket::new_unchecked(&mut buf[..]));
        let p = ArpPacket::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(ArpRepr::parse(&p).unwrap(), repr);
        prop_assert_eq!(u16::from(repr.operation), op);
    }

    #[test]
    fn ipv4_round_trip(repr in (0usize..300).prop_flat_map(|n| ipv4(IpProtocol::from(17), n)),
                       proto in any::<u8>(), padding in 0usize..20) {
        let repr = Ipv4Repr { protocol: IpProtocol::from(proto), ..repr };
        let mut buf = vec![0u8; repr.buffer_len() + padding];
        repr.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]), ChecksumMode::Verify);
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        prop_assert!(p.verify_checksum());
        prop_assert_eq!(p.payload().len(), repr.payload_len);
        prop_assert_eq!(Ipv4Repr::parse(&p, ChecksumMode::Verify).unwrap(), repr);
        prop_assert_eq!(u8::from(IpProtocol::from(proto)), proto);
    }

    #[test]
    fn icmpv4_echo_round_trip(request in any::<bool>(), ident in any::<u16>(), seq_no in any::<u16>(),
                              data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let repr = if request {
            Icmpv4Repr::EchoRequest { ident, seq_no, data: &data }
        } else {
            Icmpv4Repr::EchoReply { ident, seq_no, data: &data }
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut Icmpv4Packet::new_unchecked(&mut buf[..]), ChecksumMode::Verify);
        let p = Icmpv4Packet::new_checked(&buf[..]).unwrap();
        prop_assert!(p.verify_checksum());
        prop_assert!(!p.is_error());
        prop_assert_eq!(Icmpv4Repr::parse(&p, ChecksumMode::Verify).unwrap(), repr);
    }

    #[test]
    fn icmpv4_error_round_trip(header in (0usize..2000).prop_flat_map(|n| ipv4(IpProtocol::Udp, n)),
                               code in any::<u8>(), mtu in any::<u16>(), unreachable in any::<bool>(),
                               data in proptest::collection::vec(any::<u8>(), 0..=8)) {
        let repr = if unreachable {
            let reason = match code % 6 {
                0 => Icmpv4DstUnreachable::NetUnreachable,
                1 => Icmpv4DstUnreachable::HostUnreachable,
                2 => Icmpv4DstUnreachable::ProtoUnreachable,
                3 => Icmpv4DstUnreachable::PortUnreachable,
                4 => Icmpv4DstUnreachable::FragRequired { next_hop_mtu: mtu },
                _ => Icmpv4DstUnreachable::Other(code.max(5)),
            };
            Icmpv4Repr::DstUnreachable { reason, header, data: &data }
        } else {
            let reason = match code % 3 {
                0 => Icmpv4TimeExceeded::TtlExpired,
                1 => Icmpv4TimeExceeded::FragReassembly,
                _ => Icmpv4TimeExceeded::Other(code.max(2)),
            };
            Icmpv4Repr::TimeExceeded { reason, header, data: &data }
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut Icmpv4Packet::new_unchecked(&mut buf[..]), ChecksumMode::Verify);
        let p = Icmpv4Packet::new_checked(&buf[..]).unwrap();
        prop_assert!(p.verify_checksum());
        prop_assert!(p.is_error());
        prop_assert_eq!(Icmpv4Repr::parse(&p, ChecksumMode::Verify).unwrap(), repr);
    }

    #[test]
    fn udp_round_trip(src in ip(), dst in ip(), sp in any::<u16>(), dp in any::<u16>(),
                      payload in proptest::collection::vec(any::<u8>(), 0..200), padding in 0usize..8) {
        let repr = UdpRepr { src_port: sp, dst_port: dp };
        let mut buf = vec![0u8; 8 + payload.len() + padding];
        repr.emit(&mut UdpPacket::new_unchecked(&mut buf[..]), src, dst, payload.len(),
                  |p| p.copy_from_slice(&payload), ChecksumMode::Verify);
        let p = UdpPacket::new_checked(&buf[..]).unwrap();
        prop_assert!(p.checksum() != 0);
        prop_assert!(p.verify_checksum(src, dst));
        prop_assert_eq!(p.payload(), &payload[..]);
        prop_assert_eq!(UdpRepr::parse(&p, src, dst, ChecksumMode::Verify).unwrap(), repr);
    }

    #[test]
    fn tcp_round_trip(case in tcp_case(14), src in ip(), dst in ip()) {
        let repr = case.repr();
        let hl = repr.header_len();
        prop_assert!(hl % 4 == 0 && (20..=60).contains(&hl));
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut TcpPacket::new_unchecked(&mut buf[..]), src, dst, ChecksumMode::Verify);
        let p = TcpPacket::new_checked(&buf[..]).unwrap();
        prop_assert!(p.verify_checksum(src, dst));
        let parsed = TcpRepr::parse(&p, src, dst, ChecksumMode::Verify).unwrap();
        let kept = case.sack_blocks_that_fit();
        let mut expected = repr;
        for (i, slot) in expected.sack_ranges.iter_mut().enumerate() {
            if i >= kept {
                *slot = None;
            }
        }
        prop_assert_eq!(parsed, expected);
    }

    #[test]
    fn tcp_window_scale_clamped(case in tcp_case(255), src in ip(), dst in ip()) {
        let repr = case.repr();
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut TcpPacket::new_unchecked(&mut buf[..]), src, dst, ChecksumMode::Verify);
        let p = TcpPacket::new_checked(&buf[..]).unwrap();
        let parsed = TcpRepr::parse(&p, src, dst, ChecksumMode::Verify).unwrap();
        prop_assert_eq!(parsed.window_scale, case.ws.map(|w| w.min(14)));
    }

    #[test]
    fn tcp_emit_header_in_place_equals_emit(case in tcp_case(14), src in ip(), dst in ip()) {
        let repr = case.repr();
        let mut a = vec![0u8; repr.buffer_len()];
        repr.emit(&mut TcpPacket::new_unchecked(&mut a[..]), src, dst, ChecksumMode::Verify);
        let mut b = vec![0xaau8; repr.buffer_len()];
        let mut p = TcpPacket::new_unchecked(&mut b[..]);
        repr.emit_header(&mut p, case.payload.len());
        p.payload_mut().copy_from_slice(&case.payload);
        p.fill_checksum(src, dst);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn tcp_option_round_trip(kind in 9u8..=255, data in proptest::collection::vec(any::<u8>(), 0..20),
                             mss in any::<u16>(), ws in any::<u8>(), ts in any::<(u32, u32)>(),
                             sack in proptest::collection::vec(any::<(u32, u32)>(), 0..=4)) {
        let mut ranges = [None; 4];
        for (s, r) in ranges.iter_mut().zip(&sack) {
            *s = Some((TcpSeqNumber(r.0), TcpSeqNumber(r.1)));
        }
        let opts = [
            TcpOption::MaxSegmentSize(mss),
            TcpOption::WindowScale(ws),
            TcpOption::Timestamp { tsval: ts.0, tsecr: ts.1 },
            TcpOption::SackRange(ranges),
            TcpOption::Unknown { kind, data: &data },
        ];
        let mut buf = [0u8; 64];
        for o in opts {
            let n = o.emit(&mut buf);
            prop_assert_eq!(n, o.buffer_len());
            let (rest, parsed) = TcpOption::parse(&buf[..n]).unwrap();
            prop_assert!(rest.is_empty());
            prop_assert_eq!(parsed, o);
        }
    }

    #[test]
    fn seq_number_order_is_antisymmetric(a in any::<u32>(), d in 1u32..(1 << 31)) {
        let x = TcpSeqNumber(a);
        let y = x + d as usize;
        prop_assert!(x.lt(y) && x.le(y) && !x.gt(y));
        prop_assert!(y.gt(x) && y.ge(x) && !y.lt(x));
        prop_assert_eq!(y.since(x), d);
        prop_assert_eq!(x.since(y), 0);
        prop_assert!(x.in_window(x, y) && !y.in_window(x, y));
        prop_assert_eq!(x.max(y), y);
        prop_assert_eq!(x.min(y), x);
    }
}
