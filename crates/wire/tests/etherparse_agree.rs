//! Cross-check against the `etherparse` crate: packets it builds parse the same
//! with us, and packets we build parse the same with it, checksums valid by both.

mod common;

use common::*;
use etherparse::{
    IpDscp, IpEcn, IpHeaders, IpNumber, Ipv4Header, NetHeaders, PacketBuilder, PacketHeaders, TcpOptionElement,
    TransportHeader, VlanId,
};
use proptest::prelude::*;
use std::net::Ipv4Addr;
use ustack_wire::*;

fn ep_ipv4(r: &Ipv4Repr) -> Ipv4Header {
    Ipv4Header {
        dscp: IpDscp::try_new(r.dscp_ecn >> 2).unwrap(),
        ecn: IpEcn::try_new(r.dscp_ecn & 3).unwrap(),
        identification: r.ident,
        dont_fragment: r.dont_frag,
        more_fragments: false,
        time_to_live: r.ttl,
        source: r.src_addr.octets(),
        destination: r.dst_addr.octets(),
        ..Default::default()
    }
}

/// Parses an Ethernet + IPv4 frame with our views; returns the IPv4 repr and the IPv4 payload.
fn our_l3(buf: &[u8], vlan: Option<u16>) -> (Ipv4Repr, &[u8]) {
    let frame = EthernetFrame::new_checked(buf).unwrap();
    let eth = EthernetRepr::parse(&frame).unwrap();
    assert_eq!(eth.ethertype, EtherType::Ipv4);
    assert_eq!(eth.vlan_id, vlan);
    let ip = Ipv4Packet::new_checked(frame.into_payload()).unwrap();
    let repr = Ipv4Repr::parse(&ip, ChecksumMode::Verify).unwrap();
    let payload = ip.into_payload();
    (repr, payload)
}

fn assert_ip_agrees(ours: &Ipv4Repr, theirs: &Ipv4Header) {
    assert_eq!(ours.src_addr, Ipv4Addr::from(theirs.source));
    assert_eq!(ours.dst_addr, Ipv4Addr::from(theirs.destination));
    assert_eq!(u8::from(ours.protocol), theirs.protocol.0);
    assert_eq!(ours.payload_len + 20, usize::from(theirs.total_len));
    assert_eq!(ours.ttl, theirs.time_to_live);
    assert_eq!(ours.ident, theirs.identification);
    assert_eq!(ours.dont_frag, theirs.dont_fragment);
    assert_eq!(ours.more_frags, theirs.more_fragments);
    assert_eq!(ours.frag_offset, theirs.fragment_offset.value() * 8);
    assert_eq!(ours.dscp_ecn, (theirs.dscp.value() << 2) | theirs.ecn.value());
    assert_eq!(theirs.header_checksum, theirs.calc_header_checksum());
}

fn ep_tcp_options(c: &TcpCase) -> Vec<TcpOptionElement> {
    let mut v = Vec::new();
    if let Some(m) = c.mss {
        v.push(TcpOptionElement::MaximumSegmentSize(m));
    }
    if let Some(w) = c.ws {
        v.push(TcpOptionElement::WindowScale(w));
    }
    if c.sack_permitted {
        v.push(TcpOptionElement::SelectiveAcknowledgementPermitted);
    }
    if let Some((a, b)) = c.ts {
        v.push(TcpOptionElement::Timestamp(a, b));
    }
    if let Some((first, rest)) = c.sack.split_first() {
        let mut more = [None; 3];
        for (s, r) in more.iter_mut().zip(rest) {
            *s = Some(*r);
        }
        v.push(TcpOptionElement::SelectiveAcknowledgement(*first, more));
    }
    v
}

fn assert_tcp_agrees(ours: &TcpRepr<'_>, theirs: &etherparse::TcpHeader) {
    assert_eq!(ours.src_port, theirs.source_port);
    assert_eq!(ours.dst_port, theirs.destination_port);
    assert_eq!(ours.seq_number.0, theirs.sequence_number);
    assert_eq!(ours.ack_number.map(|a| a.0), theirs.ack.then_some(theirs.acknowledgment_number));
    let f = ours.flags;
    assert_eq!(
        (f.fin(), f.syn(), f.rst(), f.psh(), f.ack(), f.urg(), f.ece(), f.cwr()),
        (theirs.fin, theirs.syn, theirs.rst, theirs.psh, theirs.ack, theirs.urg, theirs.ece, theirs.cwr)
    );
    assert_eq!(ours.window_len, theirs.window_size);
    let (mut mss, mut ws, mut sp, mut ts, mut sack) = (None, None, false, None, [None; 4]);
    for o in theirs.options_iterator() {
        match o.unwrap() {
            TcpOptionElement::Noop => {}
            TcpOptionElement::MaximumSegmentSize(m) => mss = Some(m),
            TcpOptionElement::WindowScale(w) => ws = Some(w.min(14)),
            TcpOptionElement::SelectiveAcknowledgementPermitted => sp = true,
            TcpOptionElement::Timestamp(a, b) => ts = Some((a, b)),
            TcpOptionElement::SelectiveAcknowledgement(first, rest) => {
                sack = [Some(first), rest[0], rest[1], rest[2]];
            }
        }
    }
    assert_eq!(ours.max_seg_size, mss);
    assert_eq!(ours.window_scale, ws);
    assert_eq!(ours.sack_permitted, sp);
    assert_eq!(ours.timestamp, ts);
    assert_eq!(ours.sack_ranges.map(|b| b.map(|(l, r)| (l.0, r.0))), sack);
}

/// Cases etherparse's own SACK type can hold (at most 4 blocks) and whose options fit in 40 bytes unaligned.
fn etherparse_tcp_case() -> impl Strategy<Value = TcpCase> {
    tcp_case(14).prop_filter("options fit", |c| {
        let len = 4 * usize::from(c.mss.is_some())
            + 3 * usize::from(c.ws.is_some())
            + 2 * usize::from(c.sack_permitted)
            + 10 * usize::from(c.ts.is_some())
            + if c.sack.is_empty() { 0 } else { 2 + 8 * c.sack.len() };
        len <= 40
    })
}

proptest! {
    // etherparse builds, we parse.

    #[test]
    fn they_build_udp_we_parse(e in ethernet(EtherType::Ipv4), i in ipv4(IpProtocol::Udp, 0),
                               sp in any::<u16>(), dp in any::<u16>(),
                               payload in proptest::collection::vec(any::<u8>(), 0..100)) {
        let mut buf = Vec::new();
        let ip = IpHeaders::Ipv4(ep_ipv4(&i), Default::default());
        match e.vlan_id {
            Some(v) => PacketBuilder::ethernet2(e.src_addr.0, e.dst_addr.0)
                .single_vlan(VlanId::try_new(v).unwrap())
                .ip(ip)
                .udp(sp, dp)
                .write(&mut buf, &payload)
                .unwrap(),
            None => PacketBuilder::ethernet2(e.src_addr.0, e.dst_addr.0)
                .ip(ip)
                .udp(sp, dp)
                .write(&mut buf, &payload)
                .unwrap(),
        }
        let (ours, l4) = our_l3(&buf, e.vlan_id);
        prop_assert_eq!(ours.src_addr, i.src_addr);
        prop_assert_eq!(ours.ident, i.ident);
        prop_assert_eq!(ours.ttl, i.ttl);
        prop_assert_eq!(ours.dscp_ecn, i.dscp_ecn);
        prop_assert_eq!(ours.protocol, IpProtocol::Udp);
        let udp = UdpPacket::new_checked(l4).unwrap();
        let repr = UdpRepr::parse(&udp, ours.src_addr, ours.dst_addr, ChecksumMode::Verify).unwrap();
        prop_assert_eq!(repr, UdpRepr { src_port: sp, dst_port: dp });
        prop_assert_eq!(udp.payload(), &payload[..]);
    }

    #[test]
    fn they_build_tcp_we_parse(e in ethernet(EtherType::Ipv4), i in ipv4(IpProtocol::Tcp, 0), c in etherparse_tcp_case()) {
        let mut b = PacketBuilder::ethernet2(e.src_addr.0, e.dst_addr.0)
            .ip(IpHeaders::Ipv4(ep_ipv4(&i), Default::default()))
            .tcp(c.src_port, c.dst_port, c.seq, c.window);
        let f = TcpFlags::from_byte(c.flags);
        if f.fin() { b = b.fin(); }
        if f.syn() { b = b.syn(); }
        if f.rst() { b = b.rst(); }
        if f.psh() { b = b.psh(); }
        if f.ece() { b = b.ece(); }
        if f.cwr() { b = b.cwr(); }
        if let Some(a) = c.ack { b = b.ack(a); }
        let b = b.options(&ep_tcp_options(&c)).unwrap();
        let mut buf = Vec::new();
        b.write(&mut buf, &c.payload).unwrap();
        let (ours, l4) = our_l3(&buf, None);
        let tcp = TcpPacket::new_checked(l4).unwrap();
        let repr = TcpRepr::parse(&tcp, ours.src_addr, ours.dst_addr, ChecksumMode::Verify).unwrap();
        let (theirs, _) = etherparse::TcpHeader::from_slice(l4).unwrap();
        assert_tcp_agrees(&repr, &theirs);
        prop_assert_eq!(repr.payload, &c.payload[..]);
        prop_assert_eq!(repr.seq_number.0, c.seq);
    }

    #[test]
    fn they_build_icmp_echo_we_parse(e in ethernet(EtherType::Ipv4), i in ipv4(IpProtocol::Icmp, 0),
                                     id in any::<u16>(), seq in any::<u16>(), request in any::<bool>(),
                                     data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let b = PacketBuilder::ethernet2(e.src_addr.0, e.dst_addr.0).ip(IpHeaders::Ipv4(ep_ipv4(&i), Default::default()));
        let b = if request { b.icmpv4_echo_request(id, seq) } else { b.icmpv4_echo_reply(id, seq) };
        let mut buf = Vec::new();
        b.write(&mut buf, &data).unwrap();
        let (_, l4) = our_l3(&buf, None);
        let p = Icmpv4Packet::new_checked(l4).unwrap();
        let repr = Icmpv4Repr::parse(&p, ChecksumMode::Verify).unwrap();
        let expected = if request {
            Icmpv4Repr::EchoRequest { ident: id, seq_no: seq, data: &data }
        } else {
            Icmpv4Repr::EchoReply { ident: id, seq_no: seq, data: &data }
        };
        prop_assert_eq!(repr, expected);
    }

    // We build, etherparse parses.

    #[test]
    fn we_build_udp_they_parse(e in ethernet(EtherType::Ipv4), i in ipv4(IpProtocol::Udp, 0),
                               sp in any::<u16>(), dp in any::<u16>(),
                               payload in proptest::collection::vec(any::<u8>(), 0..100)) {
        let i = Ipv4Repr { more_frags: false, frag_offset: 0, ..i };
        let u = UdpRepr { src_port: sp, dst_port: dp };
        let mut buf = vec![0u8; build::udp_frame_len(&e, payload.len())];
        build::udp_frame(&mut buf, &e, &i, &u, &payload).unwrap();
        let h = PacketHeaders::from_ethernet_slice(&buf).unwrap();
        let Some(NetHeaders::Ipv4(ip, _)) = &h.net else { panic!("no ipv4") };
        let i = Ipv4Repr { protocol: IpProtocol::Udp, payload_len: 8 + payload.len(), ..i };
        assert_ip_agrees(&i, ip);
        {
            let Some(TransportHeader::Udp(udp)) = &h.transport else { panic!("no udp") };
            prop_assert_eq!((udp.source_port, udp.destination_port), (sp, dp));
            prop_assert_eq!(usize::from(udp.length), 8 + payload.len());
            let want = udp.calc_checksum_ipv4(ip, h.payload.slice()).unwrap();
            prop_assert_eq!(udp.checksum, want);
            prop_assert_eq!(h.payload.slice(), &payload[..]);
        }
    }

    #[test]
    fn we_build_tcp_they_parse(e in ethernet(EtherType::Ipv4), i in ipv4(IpProtocol::Tcp, 0), c in tcp_case(14)) {
        let i = Ipv4Repr { more_frags: false, frag_offset: 0, ..i };
        let t = c.repr();
        let mut buf = vec![0u8; build::tcp_frame_len(&e, &t)];
        build::tcp_frame(&mut buf, &e, &i, &t).unwrap();
        let h = PacketHeaders::from_ethernet_slice(&buf).unwrap();
        let Some(NetHeaders::Ipv4(ip, _)) = &h.net else { panic!("no ipv4") };
        let i = Ipv4Repr { protocol: IpProtocol::Tcp, payload_len: t.buffer_len(), ..i };
        assert_ip_agrees(&i, ip);
        {
            let Some(TransportHeader::Tcp(tcp)) = &h.transport else { panic!("no tcp") };
            // What we emitted is what we meant, minus SACK blocks that did not fit.
            let mut expected = t;
            for (n, slot) in expected.sack_ranges.iter_mut().enumerate() {
                if n >= c.sack_blocks_that_fit() {
                    *slot = None;
                }
            }
            assert_tcp_agrees(&expected, tcp);
            let want = tcp.calc_checksum_ipv4(ip, h.payload.slice()).unwrap();
            prop_assert_eq!(tcp.checksum, want);
            prop_assert_eq!(h.payload.slice(), &c.payload[..]);
        }
    }

    #[test]
    fn we_build_icmp_they_parse(e in ethernet(EtherType::Ipv4), i in ipv4(IpProtocol::Icmp, 0),
                                id in any::<u16>(), seq in any::<u16>(),
                                data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let r = Icmpv4Repr::EchoRequest { ident: id, seq_no: seq, data: &data };
        let i = Ipv4Repr { more_frags: false, frag_offset: 0, ..i };
        let mut buf = vec![0u8; build::icmpv4_frame_len(&e, &r)];
        build::icmpv4_frame(&mut buf, &e, &i, &r).unwrap();
        let h = PacketHeaders::from_ethernet_slice(&buf).unwrap();
        let Some(NetHeaders::Ipv4(ip, _)) = &h.net else { panic!("no ipv4") };
        prop_assert_eq!(ip.protocol, IpNumber::ICMP);
        let Some(TransportHeader::Icmpv4(icmp)) = &h.transport else { panic!("no icmp") };
        match icmp.icmp_type {
            etherparse::Icmpv4Type::EchoRequest(echo) => {
                prop_assert_eq!((echo.id, echo.seq), (id, seq));
            }
            ref other => prop_assert!(false, "unexpected {:?}", other),
        }
        prop_assert_eq!(icmp.checksum, icmp.icmp_type.calc_checksum(h.payload.slice()));
    }

    #[test]
    fn we_build_fragments_they_parse_ipv4(e in ethernet(EtherType::Ipv4), i in ipv4(IpProtocol::Udp, 0),
                                          payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        // Fragment facts (MF, offset) must agree too; etherparse does not reassemble.
        let mut buf = vec![0u8; build::udp_frame_len(&e, payload.len())];
        build::udp_frame(&mut buf, &e, &i, &UdpRepr { src_port: 1, dst_port: 2 }, &payload).unwrap();
        let h = PacketHeaders::from_ethernet_slice(&buf).unwrap();
        let Some(NetHeaders::Ipv4(ip, _)) = &h.net else { panic!("no ipv4") };
        assert_ip_agrees(&Ipv4Repr { payload_len: 8 + payload.len(), ..i }, ip);
        let (ours, _) = our_l3(&buf, e.vlan_id);
        prop_assert_eq!(ours, Ipv4Repr { payload_len: 8 + payload.len(), ..i });
    }
}
